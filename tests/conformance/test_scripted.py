"""P1-P6: rules of the RFCs that need a peer sending exactly what a script says (`verifier.peer`), with the
real kernel on the other host: RSTs in SYN-SENT and on an established connection, SYN-ACK
retransmission, ICMP unreachable on an established connection, simultaneous open, unusual SYN-ACK
options. Each step's packet is checked with relative seq/ack, and every timing against a model
(the initial RTO read from the kernel, `TOLERANCE`); the capture is the evidence."""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import time

import pytest

from netns import namespace
from tests.kernel import TOLERANCE, kernel_hz
from verifier.peer import ANY, ScriptedPeer

from .conftest import PORT, at_once_ns, initial_rto_ns, kernel_counters

SYNACK_RETRIES = 2


def peer_for(testbed, capture, family, side="server", **kw) -> ScriptedPeer:
    """A peer whose every expect that names no window wants its packet "at once": within a tenth of
    the real host's initial RTO (conftest.at_once_ns: an answer the segment itself carries needs no
    timer, and the shortest timer is the initial RTO); `peer.at_once` is that bound, in seconds, and
    `peer.rto_s` the initial RTO."""
    real = testbed.client if side == "server" else testbed.server
    mine = testbed.server if side == "server" else testbed.client
    rto_ns = initial_rto_ns(real, family, mine.addr(family))
    at_once = at_once_ns(rto_ns) / 1e9
    peer = ScriptedPeer(testbed, side=side, family=family, capture=capture, tolerance=TOLERANCE,
                        within=(0, at_once), **kw)
    peer.at_once, peer.rto_s = at_once, rto_ns / 1e9
    return peer


def quiet_until_timer(peer, since, timer_s: float) -> None:
    """Nothing from the kernel "at once" (`peer.at_once`), but only up to where its own timer may fire:
    `timer_s` after the packet `since`, less what the tolerance lets a timer be early (a slow peer, or
    "at once" stretched by a guest's lateness, can come close to it)."""
    peer.expect_nothing(min(peer.at_once, since.ts_ns / 1e9 + timer_s - TOLERANCE.early - time.time()))


def handshake(peer, sock):
    """The real client connects; the peer answers as a plain server. The connect() Call."""
    call = sock.connect()
    peer.expect("S", seq=0)
    peer.send("SA", seq=0, ack=1)
    peer.expect("A", seq=1, ack=1)
    assert call.result() == (0, None), peer.ladder()
    return call


@pytest.mark.claim("P1")
def test_p1_rst_in_syn_sent_needs_an_acceptable_ack(testbed, capture, family, evidence):
    with peer_for(testbed, capture, family) as peer:
        at_once = peer.at_once
        sock = peer.socket()
        call = sock.connect()
        syn = peer.expect("S", seq=0)
        # A RST without ACK: dropped in SYN-SENT. Nothing answers it, connect() goes on.
        peer.send("R", seq=0)
        quiet_until_timer(peer, syn, peer.rto_s)
        assert not call.done and sock.state() == "SYN_SENT", peer.ladder()
        # A RST/ACK whose ACK is not ISS+1: dropped too. Linux then retransmits its SYN at once
        # (tcp_rcv_synsent_state_process: the retransmit timer is set to TCP_TIMEOUT_MIN, two ticks;
        # only while the SYN has not been retransmitted yet, so all of this must happen within one RTO).
        wrong = peer.send("RA", seq=0, ack=2)
        hz = kernel_hz() or 100
        quick = peer.expect("S", seq=0, within=(0, 2 / hz + TOLERANCE.allowed(2 / hz)))
        assert not call.done and sock.state() == "SYN_SENT", peer.ladder()
        # The acceptable RST/ACK (ACK = ISS+1) aborts the connection at once.
        sent = peer.send("RA", seq=0, ack=1)
        value, err = call.result(at_once + TOLERANCE.allowed(at_once, woken=True))
        assert (value, err) == (-1, "ECONNREFUSED"), peer.ladder()
        assert (call.t_return_ns - sent.sent_time * 1e9) / 1e9 < at_once + TOLERANCE.allowed(at_once, woken=True), \
            peer.ladder()
        peer.expect_nothing(at_once)
    gap_ms = (quick.ts_ns - wrong.sent_time * 1e9) / 1e6
    evidence.record(f"bare RST: ignored; RST/ACK ack=ISS+2: ignored, SYN resent "
                    f"{gap_ms:.0f} ms after it (TCP_TIMEOUT_MIN); RST/ACK ack=ISS+1: connect() = ECONNREFUSED at once", stevens=True,
                    why="4.4BSD drops a RST in SYN-SENT unless its ACK is acceptable, as RFC 793 says")


@pytest.mark.claim("P2")
def test_p2_only_an_exact_rst_resets_an_established_connection(testbed, capture, family, evidence):
    with peer_for(testbed, capture, family) as peer:
        sock = peer.socket()
        handshake(peer, sock)
        before = kernel_counters(testbed.client)
        # Out of the window (the client's RCV.WND is about 64 KB): dropped without an answer.
        peer.send("R", seq=1 + (1 << 30))
        peer.expect_nothing(peer.at_once)
        assert sock.state() == "ESTABLISHED", peer.ladder()
        # In the window but not at RCV.NXT: a challenge ACK (seq = SND.NXT, ack = RCV.NXT), nothing else.
        peer.send("R", seq=1 + 1000)
        peer.expect("A", seq=1, ack=1)
        assert sock.state() == "ESTABLISHED", peer.ladder()
        after = kernel_counters(testbed.client)
        # Exactly at RCV.NXT: the connection is reset; the next read gives ECONNRESET.
        peer.send("R", seq=1)
        read = sock.recv(100)
        assert read.result(peer.at_once + TOLERANCE.allowed(peer.at_once, woken=True)) == (-1, "ECONNRESET"), \
            peer.ladder()
        assert sock.state() == "CLOSE", peer.ladder()
        peer.expect_nothing(peer.at_once)
    assert after["TcpExt.TCPChallengeACK"] - before["TcpExt.TCPChallengeACK"] == 1, (before, after)
    evidence.record("RST out of window: dropped; in window (+1000): challenge ACK seq=1 ack=1, still established; "
                    "at RCV.NXT: reset, read() = ECONNRESET", stevens=False,
                    why="4.4BSD (RFC 793) accepts any RST in the window: the in-window one would have reset it")


@pytest.mark.claim("P3")
def test_p3_synack_retransmission_follows_the_model(testbed, capture, family, evidence):
    testbed.server.sysctl("net.ipv4.tcp_synack_retries", SYNACK_RETRIES)
    # The first SYN-ACK retransmission waits the listener's initial RTO (tcp_timeout_init), doubled after each.
    rto_s = initial_rto_ns(testbed.server, family, testbed.client.addr(family)) / 1e9
    with peer_for(testbed, capture, family, side="client") as peer:
        listener = peer.socket()
        listener.bind(PORT)
        listener.listen(8)
        peer.send("S", seq=0, options=[("MSS", 1460)])
        first = peer.expect("SA", seq=0, ack=1)  # at once
        times = [first.ts_ns]
        for k in range(SYNACK_RETRIES):
            again = peer.expect("SA", seq=0, ack=1, after=rto_s * 2 ** k)  # the final ACK is withheld
            times.append(again.ts_ns)
        # After the last one the request is dropped when its timer fires again: no further SYN-ACK.
        wait = TOLERANCE.window(rto_s * 2 ** SYNACK_RETRIES)[1]
        peer.expect_nothing(wait)
    gaps = [round((b - a) / 1e9, 3) for a, b in zip(times, times[1:])]
    evidence.record(f"tcp_synack_retries={SYNACK_RETRIES}: {len(times)} SYN-ACKs, gaps {gaps} s (initial RTO "
                    f"{rto_s:g} s, doubling), then none for {wait:.2f} s", stevens=False,
                    why="4.4BSD's first retransmission waits 6 s (its initial RTO), not 1 s")


def _no_offload(host, ifname: str) -> None:
    """TSO and GSO off on an interface (legacy ethtool ioctls), so that the capture shows the segments
    as TCP cut them, not one large buffer per write."""
    siocethtool, ethtool_stso, ethtool_sgso = 0x8946, 0x1F, 0x24
    with namespace.inside(host.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        for cmd in (ethtool_stso, ethtool_sgso):
            value = ctypes.create_string_buffer(struct.pack("II", cmd, 0), 8)
            fcntl.ioctl(s, siocethtool, struct.pack("16sP", ifname.encode(), ctypes.addressof(value)))


@pytest.mark.claim("P4")
def test_p4_icmp_unreachable_is_a_soft_error_when_established(testbed, capture, family, evidence):
    with peer_for(testbed, capture, family) as peer:
        sock = peer.socket()
        handshake(peer, sock)
        rto_s = sock.info()["rto_us"] / 1e6
        sock.send(b"y" * 100)
        data = peer.expect("PA", seq=1, ack=1, payload=100)
        # The data is not acknowledged: an ICMP host unreachable quoting it comes back instead.
        peer.icmp_unreachable(data, "host")
        quiet_until_timer(peer, data, rto_s)
        state, soft = sock.state(), sock.error()
        # Soft: the connection stays, SO_ERROR reports the error once, and the data is retransmitted on
        # its RTO as if the ICMP had not come (counted from the data segment).
        assert state == "ESTABLISHED" and soft == "EHOSTUNREACH", peer.ladder()
        peer.expect("PA", seq=1, ack=1, payload=100, after=rto_s, since=data)
        peer.send("A", seq=1, ack=101)
        assert sock.send(b"z" * 10) == (10, None)
        peer.expect("PA", seq=101, ack=1, payload=10)
        assert sock.state() == "ESTABLISHED" and sock.error() is None, peer.ladder()
    evidence.record(f"ICMP host unreachable for an unacknowledged segment: still ESTABLISHED, SO_ERROR = "
                    f"EHOSTUNREACH once, the segment retransmitted after its RTO ({rto_s:g} s), then the "
                    f"connection goes on", stevens=True,
                    why="4.4BSD's tcp_notify records EHOSTUNREACH as a soft error on an established connection")


@pytest.mark.claim("P5")
def test_p5_simultaneous_open(testbed, capture, family, evidence):
    with peer_for(testbed, capture, family) as peer:
        sock = peer.socket()
        call = sock.connect()
        peer.expect("S", seq=0)
        # Instead of answering, the peer opens too: a SYN of its own, without ACK.
        peer.send("S", seq=0, options=[("MSS", 1400)])
        # SYN-RECEIVED: the client answers with a SYN-ACK carrying its same ISN.
        synack = peer.expect("SA", seq=0, ack=1, options={"MSS": ANY})
        assert not call.done and sock.state() == "SYN_RECV", peer.ladder()
        peer.send("SA", seq=0, ack=1, options=[("MSS", 1400)])
        assert call.result(peer.at_once + TOLERANCE.allowed(peer.at_once, woken=True)) == (0, None), peer.ladder()
        # Linux acknowledges the peer's SYN-ACK (RFC 9293 leaves it to the ACK of the next segment).
        peer.expect("A", seq=1, ack=1)
        peer.expect_nothing(peer.at_once)
        assert sock.state() == "ESTABLISHED"
    evidence.record(f"SYN crossed by the peer's SYN: the client, in SYN_RECV, sent SYN-ACK seq=0 ack=1 (its own ISN "
                    f"again, mss {synack['TCP'].options[0][1]}), connect() = 0 on the peer's SYN-ACK, then one ACK",
                    stevens=True, why="4.4BSD implements the simultaneous open of RFC 793")


@pytest.mark.claim("P6")
def test_p6_unusual_synack_options_bind_the_client(testbed, capture, family, evidence):
    _no_offload(testbed.client, "c0")
    with peer_for(testbed, capture, family) as peer:
        sock = peer.socket()
        call = sock.connect()
        peer.expect("S", seq=0, options={"SAckOK": ANY, "Timestamp": ANY, "WScale": ANY})
        # MSS 536, window scale 14 (the largest RFC 7323 allows), no SACK, no timestamps.
        peer.send("SA", seq=0, ack=1, win=65535, options=[("MSS", 536), ("WScale", 14)])
        peer.expect("A", seq=1, ack=1, options={"Timestamp": None, "SAckOK": None})
        assert call.result() == (0, None)
        info = sock.info()
        # A window of 1 scaled by 2^14: 16384 bytes. Unscaled, the client could send 1 byte.
        peer.send("A", seq=1, ack=1, win=1)
        assert sock.send(b"x" * 3000) == (3000, None)
        lengths = []
        while sum(lengths) < 3000:
            seg = peer.expect("A|PA", seq=1 + sum(lengths), ack=1,
                              options={"Timestamp": None, "SAck": None})
            lengths.append(len(bytes(seg["TCP"].payload)))
        peer.send("A", seq=1, ack=3001)
        peer.expect_nothing(peer.at_once)
    assert (info["snd_mss"], info["snd_wscale"]) == (536, 14), info
    assert lengths == [536] * 5 + [320], lengths
    evidence.record(f"MSS 536, wscale 14, no SACK/TS in the SYN-ACK: the client's mss {info['snd_mss']}, "
                    f"its send shift {info['snd_wscale']}; 3000 bytes into a window of 1<<14 as segments "
                    f"{lengths}, no SACK, no timestamps", stevens=True,
                    why="4.4BSD honours the MSS option and RFC 1323 window scaling (it has no SACK)")
