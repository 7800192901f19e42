"""C1, C3/C4a, C7/C13a: what connect() does on the wire, on the routed testbed, IPv4 and IPv6.

Each test runs the real client program against the real kernel, captures every interface, and checks
the claim against the packets and the socket calls' results and times.
"""

from __future__ import annotations

import random

import pytest

from verifier.analysis.expect import expect

from .conftest import PORT, at_once_ns, initial_rto_ns, run_client, story


@pytest.mark.claim("C1")
def test_c1_connect_returns_only_after_the_handshake(testbed, capture, family, programs, listener, evidence):
    server = listener(testbed, family)
    client = run_client(testbed, programs, family)
    server.done()
    connect = client.call("connect")
    trace = capture.trace()
    checked = expect(trace).connection(dport=PORT).handshake()
    if server.command is None:
        checked.no_rst()  # how a user's server ends the connection is its own business
    conn = checked.connection
    syn, synack = conn.first("SYN"), conn.first("SYN-ACK")
    ack = conn.first("ACK", "c>s")
    tale = story(conn, capture, client=client.calls)
    assert (connect.ret, connect.errno) == (0, None), tale
    # connect() sent the SYN, and did not return before the handshake was complete.
    assert connect.t_enter_ns <= syn.ts_ns, "the SYN left before connect() was called" + tale
    assert synack.ts_ns <= connect.t_return_ns, "connect() returned before the SYN-ACK arrived" + tale
    assert ack.ts_ns <= connect.t_return_ns, "connect() returned before the client's ACK left" + tale
    assert syn.ts_ns < synack.ts_ns < ack.ts_ns
    evidence.record(f"SYN, SYN-ACK, ACK, then connect() = 0 {(connect.t_return_ns - ack.ts_ns) / 1e3:.0f} us "
                    f"after the ACK left{server.label()}", stevens=True)


@pytest.mark.claim("C3")
def test_c3_c4a_no_listener_means_rst_and_econnrefused(testbed, capture, family, programs, evidence):
    rto_ns = initial_rto_ns(testbed.client, family, testbed.server.addr(family))
    client = run_client(testbed, programs, family, port=PORT + 1)
    connect = client.call("connect")
    trace = capture.trace()
    conn = expect(trace).connection(dport=PORT + 1).refused().syn_count(1).connection
    syn, rst = conn.first("SYN"), conn.first("RST")
    tale = story(conn, capture, client=client.calls)
    # The RST answers the SYN: it acknowledges exactly the SYN (ack = ISN + 1), from the server.
    assert rst.direction == "s>c" and rst.flags == "RA" and rst.ack == 1, tale
    assert rst.ack_abs == (conn.isn_client + 1) % 2**32, tale
    # A hard error: connect() fails with ECONNREFUSED on that RST, at once, not on a timer.
    assert (connect.ret, connect.errno) == (-1, "ECONNREFUSED"), tale
    assert connect.t_enter_ns <= syn.ts_ns < rst.ts_ns <= connect.t_return_ns, tale
    assert connect.t_return_ns - rst.ts_ns < at_once_ns(rto_ns), tale
    assert client.returncode == 1
    evidence.record(f"one SYN, RST/ACK ack=ISN+1 after {(rst.ts_ns - syn.ts_ns) / 1e3:.0f} us, ECONNREFUSED "
                    f"{(connect.t_return_ns - rst.ts_ns) / 1e3:.0f} us later", stevens=True)


def _unusual_range(host_range: tuple[int, int]) -> tuple[int, int]:
    """A narrow range far from the usual defaults, and different from the host's own setting."""
    while True:
        lo = random.randrange(20000, 30000)
        rng = (lo, lo + 7)
        if rng != host_range:
            return rng


@pytest.mark.claim("C7")
def test_c7_c13a_ephemeral_port_from_the_namespace_range(testbed, capture, family, programs, listener, evidence):
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        host_range = tuple(int(x) for x in f.read().split())
    lo, hi = _unusual_range(host_range)
    # The range is the namespace's own: set it there, and read it back from there.
    testbed.client.sysctl("net.ipv4.ip_local_port_range", (lo, hi))
    ns_range = tuple(int(x) for x in testbed.client.sysctl("net.ipv4.ip_local_port_range").split())
    assert ns_range == (lo, hi) and ns_range != host_range
    server = listener(testbed, family)
    client = run_client(testbed, programs, family)
    served = server.done()
    name = client.call("getsockname")
    trace = capture.trace()
    conn = expect(trace).connection(dport=PORT).handshake().connection
    tale = story(conn, capture, client=client.calls)
    # The client never called bind(): the kernel chose the port at connect().
    assert not [c for c in client.calls if c.call == "bind"]
    assert client.call("connect").ret == 0
    # getsockname() after connect() is exactly the SYN's source, and the port is in the range.
    assert (name.addr, name.port) == conn.client, tale
    assert lo <= conn.client[1] <= hi, f"source port {conn.client[1]} outside {lo}-{hi}" + tale
    assert conn.client[0] == testbed.client.addr(family)
    # And our server's accept() saw the same peer (a user's server does not report its calls).
    if served is not None:
        accepted = served.call("accept")
        assert (accepted.addr, accepted.port) == conn.client
    evidence.record(f"source port {conn.client[1]} in the namespace's range {lo}-{hi}; getsockname() "
                    f"{'and accept() agree' if served else 'agrees'} with the SYN{server.label()}", stevens=True)


@pytest.mark.claim("C6")
def test_c6_connect_again_on_a_failed_socket(testbed, capture, family, programs, evidence):
    client = run_client(testbed, programs, family, "--connect-twice", port=PORT + 3)
    first, second = client.call("connect", 0), client.call("connect", 1)
    sockets = [c for c in client.calls if c.call == "socket"]
    trace = capture.trace()
    attempts = trace.find(dport=PORT + 3)
    tale = "\n" + "\n".join(c.ladder() for c in attempts) + f"\npcap: {capture.path}"
    assert len(sockets) == 1 and first.args["fd"] == second.args["fd"], "the program did not reuse its socket"
    assert (first.ret, first.errno) == (-1, "ECONNREFUSED"), tale
    # Linux returns a failed socket to CLOSED, so a second connect() is a whole new attempt: a new SYN
    # (its own ISN) that is refused like the first, rather than an immediate error on the dead socket.
    assert len(attempts) == 2, f"expected a second attempt on the wire{tale}"
    for i in range(2):
        expect(trace).connection(dport=PORT + 3, index=i).refused().syn_count(1)
    second_syn = attempts[1].first("SYN")
    assert second.t_enter_ns <= second_syn.ts_ns <= second.t_return_ns, tale
    assert (second.ret, second.errno) == (-1, "ECONNREFUSED"), tale
    same_port = attempts[0].client[1] == attempts[1].client[1]
    evidence.record(f"second connect() on the failed socket sent a new SYN ({'same' if same_port else 'new'} "
                    f"source port, new ISN), refused again: -1 ECONNREFUSED", stevens=False,
                    why="the book says a socket whose connect() failed cannot be used again and must be closed; "
                        "Linux resets it to CLOSED and lets connect() start over (close-and-reopen stays the "
                        "portable rule)")
