"""C4b, C4c, C12: how connections end — RST for aborts and strays, FIN for an orderly close."""

from __future__ import annotations

import socket
import time

import pytest

from netns import namespace
from verifier.analysis.expect import expect

from .conftest import PORT, arrived_at_server, finish, run_client, sent_by_server, start_server, story


@pytest.mark.claim("C12")
def test_c12_close_starts_the_four_segment_termination(testbed, capture, family, programs, evidence):
    # The client closes first; the server reads EOF, waits a little (its own behaviour), then closes.
    server = start_server(testbed, programs, family, "--accept", "1", "--hold-ms", "50")
    client = run_client(testbed, programs, family)
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().no_rst().fin_from("client") \
        .fin_from("server").connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    close_c, close_s = client.call("close"), served.close_of(served.conn_fd)
    ending = [e for e in conn.events if e.kind in ("FIN", "ACK") and e.t >= conn.first("FIN").t]
    got = [(e.direction, e.flags, e.seq, e.ack) for e in ending]
    # FIN from the closer, its ACK, FIN from the other side, its ACK: seq/ack relative to each ISN.
    assert got == [("c>s", "FA", 1, 1), ("s>c", "A", 1, 2), ("s>c", "FA", 1, 2), ("c>s", "A", 2, 2)], tale
    fin_c, fin_s = ending[0], sent_by_server(conn, "FIN")
    # Each FIN leaves during the close() that dropped the last reference (each seen on its sender's side).
    assert close_c.t_enter_ns <= fin_c.ts_ns <= close_c.t_return_ns, tale
    assert close_s.t_enter_ns <= fin_s.ts_ns <= close_s.t_return_ns, tale
    evidence.record("client close(): FIN; server ACK; server close() 50 ms later: FIN; client ACK", stevens=True)


@pytest.mark.claim("C4")
def test_c4b_abortive_close_sends_rst_not_fin(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "1")
    client = run_client(testbed, programs, family, "--linger-abort")
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().reset_by("client").connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    assert not conn.select("FIN", "c>s"), "an abortive close sent a FIN" + tale
    linger = client.call("setsockopt")
    assert linger.args["name"] == "SO_LINGER" and linger.args["value"] == {"l_onoff": 1, "l_linger": 0}
    close, rst = client.call("close"), conn.first("RST", "c>s")
    assert close.t_enter_ns <= rst.ts_ns <= close.t_return_ns, "the RST did not leave during close()" + tale
    assert rst.seq == 1, tale  # the next sequence number: nothing was sent after the SYN
    # The peer learns of the abort as an error, not as end of file.
    read = served.call("read")
    assert (read.ret, read.errno) == (-1, "ECONNRESET"), tale
    evidence.record("SO_LINGER {1,0} then close(): RST seq=1, no FIN; the server's read() fails with ECONNRESET",
                    stevens=True)


@pytest.mark.claim("C4")
def test_c4b_close_with_unread_data_sends_rst_not_fin(testbed, capture, family, programs, evidence):
    # The server holds the connection (its own behaviour) and closes without reading what arrived.
    server = start_server(testbed, programs, family, "--accept", "1", "--close-unread", "--hold-ms", "100")
    client = run_client(testbed, programs, family, "--send", "unread bytes", "--read")
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().reset_by("server").connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    data = arrived_at_server(conn, "DATA")
    close = served.close_of(served.conn_fd)
    # Precondition of the claim: the data had arrived when the server called close().
    assert data is not None and data.ts_ns < close.t_enter_ns, "the data came after close(): no claim to check" + tale
    assert not conn.select("FIN", "s>c"), "closing with unread data sent a FIN" + tale
    rst = sent_by_server(conn, "RST")
    assert close.t_enter_ns <= rst.ts_ns <= close.t_return_ns, tale
    assert client.call("read").errno == "ECONNRESET", tale
    evidence.record(f"{data.payload_len} bytes unread at close(): RST, no FIN; the client's read() fails with "
                    f"ECONNRESET", stevens=True)


def _craft_ack(src: str, dst: str, sport: int, dport: int, seq: int, ack: int) -> bytes:
    """A bare TCP ACK segment (header only) with the checksum for these addresses, built by Scapy."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    ip = IPv6 if ":" in src else IP
    pkt = ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=seq, ack=ack, window=1024)
    return bytes(pkt)[40 if ip is IPv6 else 20:]


def _await_rst(raw: socket.socket, family: int, sport: int, dport: int, timeout: float = 5.0) -> None:
    """Read the raw TCP socket (bounded) until the RST from sport to dport has reached the client."""
    deadline = time.monotonic() + timeout
    while True:
        raw.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = raw.recv(65535)
        except socket.timeout:
            raise AssertionError(f"no RST from port {sport} within {timeout} s") from None
        tcp = data if family == 6 else data[(data[0] & 0x0F) * 4:]  # IPv4 raw sockets include the header
        if len(tcp) >= 14 and int.from_bytes(tcp[0:2], "big") == sport and \
                int.from_bytes(tcp[2:4], "big") == dport and tcp[13] & 0x04:
            return


@pytest.mark.claim("C4")
def test_c4c_segment_for_no_connection_gets_rst_with_seq_from_its_ack(testbed, capture, family, evidence):
    src, dst = testbed.client.addr(family), testbed.server.addr(family)
    sport, seq, ack = 40404, 0x11223344, 0xA1B2C3D4
    segment = _craft_ack(src, dst, sport, PORT + 2, seq, ack)
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    with namespace.inside(testbed.client.netns):
        raw = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    with raw:
        raw.sendto(segment, (dst, 0))
        _await_rst(raw, family, PORT + 2, sport)  # the answer is in before the capture stops
    trace = capture.trace()
    conns = trace.find(sport=sport, dport=PORT + 2)
    assert len(conns) == 1, trace.summary()
    conn = conns[0]
    events = [(e.direction, e.flags, e.seq_abs, e.ack_abs) for e in conn.events]
    # RFC 793: a segment with ACK for no connection is answered <SEQ=SEG.ACK><CTL=RST>, no ACK of its own.
    assert events == [("c>s", "A", seq, ack), ("s>c", "R", ack, None)], conn.ladder()
    evidence.record(f"ACK seq={seq:#x} ack={ack:#x} to a port with no connection: RST seq={ack:#x}, no ACK flag",
                    stevens=True)
