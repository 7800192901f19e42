"""The scripted peer's clock: a call of the real socket is a step, and what the kernel sends because of
it is timed from the call, whatever came before."""

import time

from verifier.peer import ScriptedPeer


def test_data_is_timed_from_the_send_call_not_from_the_handshake(root, testbed, capture):
    with ScriptedPeer(testbed, side="server", family=4, capture=capture, within=(0, 0.1)) as peer:
        sock = peer.socket()
        call = sock.connect()
        peer.expect("S", seq=0)
        peer.send("SA", seq=0, ack=1)
        peer.expect("A", seq=1, ack=1)
        assert call.result() == (0, None), peer.ladder()
        time.sleep(0.3)  # the program thinks before it writes: longer than the window
        sock.send(b"x" * 10)
        data = peer.expect("PA", seq=1, ack=1, payload=10)  # within 0.1 s of the send()
        assert data.ts_ns - peer.steps[-2].ts_ns < 0.1e9, peer.ladder()


def test_a_peer_that_falls_behind_the_kernel_says_so(root, testbed, capture):
    """The kernel retransmits its SYN (initial RTO: 1 s) while the script still sleeps; that SYN cannot
    answer the RST sent afterwards, and the failure says the peer was too slow, not that the kernel
    sent something where it should not have."""
    import pytest

    from verifier.peer import ScriptError

    with ScriptedPeer(testbed, side="server", family=4, capture=capture, within=(0, 0.1)) as peer:
        sock = peer.socket()
        sock.connect()
        peer.expect("S", seq=0)
        time.sleep(1.5)
        peer.send("R", seq=0)
        with pytest.raises(ScriptError, match=r"s before the previous step: the peer fell behind the kernel"):
            peer.expect_nothing(0.1)


def test_the_peers_segment_is_timed_when_it_left_by_the_kernels_stamp(root, testbed, capture):
    """The time taken just before the send call is replaced by the kernel's stamp of the segment as it
    left the peer's host: the capture, another socket on that interface, shows the very same time."""
    with ScriptedPeer(testbed, side="server", family=4, capture=capture, within=(0, 0.5)) as peer:
        sock = peer.socket()
        call = sock.connect()
        peer.expect("S", seq=0)
        sa = peer.send("SA", seq=0, ack=1)
        ack = peer.expect("A", seq=1, ack=1)
        assert call.result() == (0, None), peer.ladder()
    step = next(s for s in peer.steps if s.who == ">")
    conn = capture.trace().find(dport=5000, family=4)[0]
    left = next(e for e in conn.at("server:s0") if e.kind == "SYN-ACK")
    assert step.ts_ns == left.ts_ns > int(sa.sent_time * 1e9), peer.ladder()
    assert ack.ts_ns > step.ts_ns
