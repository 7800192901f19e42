"""Expectations on traces and the failure reports they produce."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, ICMPv6DestUnreach, IPv6

from verifier.analysis.expect import ExpectationFailed, expect
from verifier.wire import decode
from verifier.pcap import read_packets
from verifier.analysis.trace import Trace
from verifier.analysis.trace import load_trace

from .crafted import C, R, S, handshake, tcp, write


def pcap(tmp_path, frames, name="run.pcapng"):
    """Write (interface, microseconds, IP packet) frames to tmp_path/name; return the path."""
    return write(frames, tmp_path / name)


def good(iface="client:eth0", **kw):
    """A completed handshake, on the client's interface unless told otherwise."""
    return handshake(iface, **kw)


def refused(iface="client:eth0", t=0, sport=40000, dport=9, isn_c=1000, syns=1):
    frames = [(iface, t + i * 1_000_000, tcp(C, S, sport, dport, "S", isn_c)) for i in range(syns)]
    return frames + [(iface, t + (syns - 1) * 1_000_000 + 80, tcp(S, C, dport, sport, "RA", 0, isn_c + 1))]


def failure(fn) -> str:
    with pytest.raises(ExpectationFailed) as exc:
        fn()
    assert isinstance(exc.value, AssertionError)
    return str(exc.value)


# --------------------------------------------------------------------------
# passing expectations chain


def test_handshake_passes_and_chains(tmp_path):
    trace = load_trace(pcap(tmp_path, good() + [
        ("client:eth0", 300, tcp(C, S, 40000, 8080, "FA", 1001, 5001)),
        ("client:eth0", 400, tcp(S, C, 8080, 40000, "FA", 5001, 1002)),
    ]))
    exp = expect(trace).connection(dport=8080)
    assert exp.handshake().syn_count(1).no_rst().fin_from("client").fin_from("server") is exp
    assert exp.events == exp.connection.events and len(exp.events) == 5


def test_refused_passes_with_retransmitted_syns(tmp_path):
    trace = load_trace(pcap(tmp_path, refused(syns=3)))
    expect(trace).connection(dport=9).refused().syn_count(3).reset_by("server")


def test_icmp_passes_for_v4_and_v6(tmp_path):
    v6c, v6s = "2001:db8::1", "2001:db8::2"
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 8080, "S", 7)),
        ("eth0", 10, IP(src=R, dst=C) / ICMP(type=3, code=1) / tcp(C, S, 40000, 8080, "S", 7)),
        ("eth0", 20, tcp(v6c, v6s, 41000, 443, "S", 9)),
        ("eth0", 30, IPv6(src="2001:db8::fe", dst=v6c) / ICMPv6DestUnreach(code=0) / tcp(v6c, v6s, 41000, 443, "S", 9)),
    ]
    trace = load_trace(pcap(tmp_path, frames))
    expect(trace).connection(dport=8080).icmp(type=3, code=1).icmp().no_rst()
    expect(trace).connection(family=6).icmp(type=1, code=0)


def test_index_selects_among_attempts(tmp_path):
    trace = load_trace(pcap(tmp_path, refused(isn_c=1) + good(t=5000, sport=40000, dport=9, isn_c=2)))
    expect(trace).connection(dport=9).refused()
    expect(trace).connection(dport=9, index=1).handshake()
    expect(trace).connection_count(2, dport=9).connection_count(0, dport=10)


# --------------------------------------------------------------------------
# failure reports


def test_handshake_failure_report_on_refused_connection(tmp_path):
    path = pcap(tmp_path, refused(iface="client:eth0") + refused(iface="server:eth0", t=40))
    trace = load_trace(path)
    msg = failure(lambda: expect(trace).connection(dport=9).handshake())
    lines = msg.splitlines()
    assert lines[0] == "handshake() failed: the server answered with RA (connection refused) instead of SYN-ACK"
    assert lines[1].startswith("connection #0 192.0.2.1:40000 > 198.51.100.2:9 IPv4: refused")
    expected = msg[msg.index("expected"): msg.index("captured")]
    assert "c>s  S    seq=0" in expected and "s>c  SA   seq=0 ack=1" in expected and "c>s  A    seq=1 ack=1" in expected
    assert "captured on client:eth0 (primary interface; also seen on server:eth0):" in msg
    assert "    0.000000  client:eth0  c>s  S    seq=0 ack=-  len=0" in lines
    assert ">>  0.000080  client:eth0  s>c  RA   seq=0 ack=1  len=0" in lines
    assert "server:eth0  c>s" not in msg  # only the primary interface's ladder
    # The frame number names the file it counts in: the evidence file, not a one-host view.
    assert f"offending packet: index 1 in the capture (Wireshark frame 2 of {path.name}) on client:eth0" in lines
    assert lines[-1] == f"pcap: {path}"


def test_failure_carries_the_connection_and_offending_event(tmp_path):
    trace = load_trace(pcap(tmp_path, refused()))
    with pytest.raises(ExpectationFailed) as exc:
        expect(trace).connection().handshake()
    assert exc.value.connection is trace.connections[0]
    assert exc.value.event is not None and exc.value.event.kind == "RST"


def test_handshake_failure_when_synack_acks_the_wrong_number(tmp_path):
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 8080, "S", 1000)),
        ("eth0", 100, tcp(S, C, 8080, 40000, "SA", 5000, 1005)),
    ]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, frames))).connection().handshake())
    assert msg.splitlines()[0] == (
        "handshake() failed: the SYN-ACK acknowledges 5 (relative; absolute 1005), expected 1 = client ISN 1000 + 1: "
        "the client's stack answers it with RST (RFC 9293 3.10.7.3)"
    )
    assert ">>  0.000100  eth0  s>c  SA   seq=0 ack=5  len=0" in msg


def test_handshake_failure_without_answer_and_without_final_ack(tmp_path):
    syn_only = [("eth0", 0, tcp(C, S, 40000, 8080, "S", 1))]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, syn_only, "a.pcapng"))).connection().handshake())
    assert "the server never answered the SYN (sent at t=0.000000)" in msg
    no_ack = good()[:2] + [("client:eth0", 300, tcp(C, S, 40000, 8080, "R", 1001))]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, no_ack, "b.pcapng"))).connection().handshake())
    assert "the client answered the SYN-ACK with R seq=1 ack=-, expected an ACK with seq=1 ack=1" in msg


def test_handshake_failure_reports_icmp_instead_of_synack(tmp_path):
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 8080, "S", 1)),
        ("eth0", 10, IP(src=R, dst=C) / ICMP(type=3, code=13) / tcp(C, S, 40000, 8080, "S", 1)),
    ]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, frames))).connection().handshake())
    assert "ICMP error came back instead of a SYN-ACK: type=3 code=13 (communication administratively prohibited) from 192.0.2.254" in msg
    assert ">>  0.000010  eth0  s>c  ICMP type=3 code=13" in msg


def test_refused_failure_on_accepted_connection(tmp_path):
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, good()))).connection(dport=8080).refused())
    assert msg.splitlines()[0] == "refused() failed: the server answered with SYN-ACK: the port accepted the connection"
    assert "s>c  RA   seq=0 ack=1" in msg  # the expected exchange
    assert ">>  0.000100  client:eth0  s>c  SA" in msg


def test_refused_failure_on_wrong_rst(tmp_path):
    bare_rst = [("eth0", 0, tcp(C, S, 40000, 9, "S", 1000)), ("eth0", 50, tcp(S, C, 9, 40000, "R", 0))]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, bare_rst, "a.pcapng"))).connection().refused())
    assert "the server's RST has no ACK flag (R)" in msg
    wrong_ack = [("eth0", 0, tcp(C, S, 40000, 9, "S", 1000)), ("eth0", 50, tcp(S, C, 9, 40000, "RA", 0, 1000))]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, wrong_ack, "b.pcapng"))).connection().refused())
    assert "the server's RST acknowledges 0 (relative; absolute 1000), expected 1" in msg


def test_syn_count_failure_lists_syn_times_and_marks_the_extra_one(tmp_path):
    trace = load_trace(pcap(tmp_path, refused(syns=3)))
    msg = failure(lambda: expect(trace).connection().syn_count(2))
    assert msg.splitlines()[0] == (
        "syn_count(2) failed: saw 3 SYN(s), expected 2; SYNs at t=0.000000, 1.000000, 2.000000 (gaps 1.000, 1.000 s)"
    )
    assert ">>  2.000000  client:eth0  c>s  S" in msg
    assert "x 2 (1 SYN + 1 retransmission(s), same ISN)" in msg


def test_rst_and_fin_failures(tmp_path):
    trace = load_trace(pcap(tmp_path, refused()))
    exp = expect(trace).connection()
    assert "no_rst() failed: the server sent RA at t=0.000080" in failure(exp.no_rst)
    assert "no RST from the client; the server sent RA at t=0.000080" in failure(lambda: exp.reset_by("client"))
    assert "no FIN from the server; it sent RA at t=0.000080 instead" in failure(lambda: exp.fin_from("server"))
    with pytest.raises(ValueError, match="side must be"):
        exp.fin_from("router")


def test_icmp_failure_mentions_unmatched_errors(tmp_path):
    frames = good("eth0") + [
        ("eth0", 300, IP(src=R, dst=C) / ICMP(type=3, code=3) / tcp(C, "203.0.113.7", 40000, 8080, "S", 1)),
    ]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, frames))).connection().icmp(type=3, code=1))
    first = msg.splitlines()[0]
    assert first.startswith("icmp(type=3, code=1) failed: no ICMP error type=3 code=1 (host unreachable) attached")
    assert "1 ICMP error(s) in the trace quote other flows: type=3 code=3 from 192.0.2.254 quoting 192.0.2.1:40000 > 203.0.113.7:8080" in first
    assert "captured on all interfaces:" in msg


def test_missing_connection_lists_what_was_seen(tmp_path):
    path = pcap(tmp_path, good() + refused(t=1000, sport=40001))
    trace = load_trace(path)
    msg = failure(lambda: expect(trace).connection(dport=443))
    lines = msg.splitlines()
    assert lines[0] == "expect.connection(dport=443) failed: no such connection in the trace"
    assert ("  #0 192.0.2.1:40000 > 198.51.100.2:8080 IPv4: established (still open at the end of the capture), "
            "1 SYN, 3 packets on client:eth0") in lines
    assert "  #1 192.0.2.1:40001 > 198.51.100.2:9 IPv4: refused (RST answering the SYN), 1 SYN, 2 packets on client:eth0" in lines
    assert lines[-1] == f"pcap: {path}"
    msg = failure(lambda: expect(trace).connection(dport=9, index=1))
    assert "only 1 connection(s) match, so there is no index 1" in msg
    assert "connection_count(3, no filter) failed: 2 connection(s) match" in failure(lambda: expect(trace).connection_count(3))


def test_other_attempts_on_the_same_four_tuple_are_pointed_out(tmp_path):
    trace = load_trace(pcap(tmp_path, refused(isn_c=1) + refused(t=5000, isn_c=99)))
    msg = failure(lambda: expect(trace).connection(dport=9, index=1).handshake())
    assert "note: 1 other attempt(s) on this 4-tuple (#0); choose with index=" in msg


def test_long_ladders_are_cut_around_the_offending_packet(tmp_path):
    frames = good("eth0", isn_c=1000, isn_s=5000)
    frames += [("eth0", 1000 + i, tcp(C, S, 40000, 8080, "A", 1001, 5001)) for i in range(100)]
    frames += [("eth0", 2000, tcp(C, S, 40000, 8080, "RA", 1001, 5001))]
    frames += [("eth0", 3000 + i, tcp(S, C, 8080, 40000, "A", 5001, 1001)) for i in range(50)]
    msg = failure(lambda: expect(load_trace(pcap(tmp_path, frames))).connection().no_rst())
    ladder = [line for line in msg.splitlines() if "  eth0  " in line]
    assert len(ladder) == 30 + 11
    assert ">>  0.002000  eth0  c>s  RA   seq=1 ack=1  len=0" in ladder
    assert "  ... 68 more packet(s) ..." in msg and "  ... 45 more packet(s) ..." in msg
    assert "ISNs (absolute): client 1000, server 5000" in msg


def test_report_without_a_file():
    raws = [decode(r) for r in read_packets(write(refused()))]
    trace = Trace.from_packets(raws)
    msg = failure(lambda: expect(trace).connection().handshake())
    assert msg.splitlines()[-1] == "pcap: (trace not loaded from a file)"
