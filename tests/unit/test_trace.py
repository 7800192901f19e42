"""Grouping packets into connections and events: orientation, interfaces, ISNs, ICMP."""

from __future__ import annotations

import warnings

import pytest
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6DestUnreach, IPv6

from verifier.pcap import CaptureTruncatedWarning
from verifier.analysis.trace import Trace, format_events
from verifier.analysis.trace import load_trace

from .crafted import C, C6, R, S, S6, T0, eth, handshake, tcp, write


def trace_of(frames) -> Trace:
    return load_trace(write(frames))


def summary(events):
    return [(e.direction, e.kind, e.flags, e.seq, e.ack, e.payload_len) for e in events]


def test_relative_numbers_across_a_full_exchange_with_wraparound():
    isn_c, isn_s = 0xFFFFFFF8, 77
    frames = handshake("eth0", 0, isn_c=isn_c, isn_s=isn_s) + [
        ("eth0", 300, tcp(C, S, 40000, 8080, "PA", isn_c + 1, isn_s + 1, b"0123456789")),
        ("eth0", 400, tcp(S, C, 8080, 40000, "A", isn_s + 1, (isn_c + 11) & 0xFFFFFFFF)),
        ("eth0", 500, tcp(C, S, 40000, 8080, "FA", (isn_c + 11) & 0xFFFFFFFF, isn_s + 1)),
        ("eth0", 600, tcp(S, C, 8080, 40000, "FA", isn_s + 1, (isn_c + 12) & 0xFFFFFFFF)),
        ("eth0", 700, tcp(C, S, 40000, 8080, "A", (isn_c + 12) & 0xFFFFFFFF, isn_s + 2)),
    ]
    trace = trace_of(frames)
    (conn,) = trace.connections
    assert summary(conn.events) == [
        ("c>s", "SYN", "S", 0, None, 0),
        ("s>c", "SYN-ACK", "SA", 0, 1, 0),
        ("c>s", "ACK", "A", 1, 1, 0),
        ("c>s", "DATA", "PA", 1, 1, 10),
        ("s>c", "ACK", "A", 1, 11, 0),
        ("c>s", "FIN", "FA", 11, 1, 0),
        ("s>c", "FIN", "FA", 1, 12, 0),
        ("c>s", "ACK", "A", 12, 2, 0),
    ]
    assert (conn.isn_client, conn.isn_server) == (isn_c, isn_s)
    assert (conn.client, conn.server, conn.family, conn.partial) == ((C, 40000), (S, 8080), 4, False)
    syn_ack = conn.events[1]
    assert (syn_ack.seq_abs, syn_ack.ack_abs) == (isn_s, (isn_c + 1) & 0xFFFFFFFF)
    assert conn.events[0].seq_abs == isn_c and conn.events[0].ack_abs is None
    assert [e.packet_index for e in conn.events] == list(range(8))
    assert conn.events[3].t == pytest.approx(300e-6)
    assert conn.events[3].ts_ns == T0 + 300_000
    assert trace.t0_ns == T0
    assert conn.outcome == "closed"


def test_same_connection_on_several_interfaces():
    path = ["client:eth0", "router:eth1", "router:eth2", "server:eth0"]
    frames = []
    for hop, iface in enumerate(path):
        frames += handshake(iface, hop * 10)
    frames.reverse()  # the server's packets first in the file: time order must win
    trace = trace_of(frames)
    (conn,) = trace.connections
    assert conn.interfaces == path
    assert conn.primary_interface == "client:eth0"
    assert len(conn.events) == 3  # not 12: no double counting across interfaces
    assert len(conn.syns()) == 1
    assert [e.iface for e in conn.events] == ["client:eth0"] * 3
    assert [e.t for e in conn.at("server:eth0")] == pytest.approx([30e-6, 130e-6, 230e-6])
    assert summary(conn.at("router:eth2")) == summary(conn.events)
    assert conn.at("elsewhere") == []
    assert trace.interfaces == path
    assert conn.describe().endswith("3 packets on client:eth0 (also seen on router:eth1, router:eth2, server:eth0)")
    assert [e.iface for e in conn.all_events()[:4]] == path


def test_primary_interface_is_where_the_connection_was_seen_first():
    frames = handshake("server:eth0", 50) + handshake("router:eth1", 20)
    (conn,) = trace_of(frames).connections
    assert conn.primary_interface == "router:eth1"
    assert conn.interfaces == ["router:eth1", "server:eth0"]


def test_retransmitted_syns_are_one_attempt():
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 8080, "S", 1000)),
        ("eth0", 1_000_000, tcp(C, S, 40000, 8080, "S", 1000)),
        ("eth0", 3_000_000, tcp(C, S, 40000, 8080, "S", 1000)),
        ("eth0", 3_000_100, tcp(S, C, 8080, 40000, "SA", 5000, 1001)),
        ("eth0", 3_000_200, tcp(C, S, 40000, 8080, "A", 1001, 5001)),
    ]
    (conn,) = trace_of(frames).connections
    assert [e.t for e in conn.syns()] == pytest.approx([0.0, 1.0, 3.0])
    assert conn.first("SYN-ACK").ack == 1
    assert conn.first("ACK", "c>s").t == pytest.approx(3.0002)
    assert conn.outcome == "established"


def test_refused_connection_rst_ack():
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 9, "S", 123456)),
        ("eth0", 50, tcp(S, C, 9, 40000, "RA", 0, 123457)),
    ]
    (conn,) = trace_of(frames).connections
    rst = conn.first("RST", "s>c")
    assert (rst.kind, rst.flags, rst.seq, rst.ack, rst.ack_abs) == ("RST", "RA", 0, 1, 123457)
    assert conn.isn_server is None
    assert conn.outcome == "refused"


def test_port_reuse_starts_a_new_connection():
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 9, "S", 1000)),
        ("eth0", 50, tcp(S, C, 9, 40000, "RA", 0, 1001)),
        ("eth0", 1000, tcp(C, S, 40000, 9, "S", 900000)),
        ("eth0", 1050, tcp(S, C, 9, 40000, "RA", 0, 900001)),
        *handshake("eth0", 5000, isn_c=777, dport=9),
    ]
    trace = trace_of(frames)
    conns = trace.find(dport=9)
    assert len(conns) == 3 and conns == trace.connections
    assert [c.attempt for c in conns] == [0, 1, 2]
    assert [c.isn_client for c in conns] == [1000, 900000, 777]
    assert [len(c.syns()) for c in conns] == [1, 1, 1]
    assert [c.outcome for c in conns] == ["refused", "refused", "established"]
    assert [e.ack for e in conns[1].select("RST")] == [1]


def test_late_copy_of_an_old_syn_goes_to_its_own_attempt():
    frames = [
        ("a", 0, tcp(C, S, 40000, 9, "S", 1000)),
        ("a", 50, tcp(S, C, 9, 40000, "RA", 0, 1001)),
        ("a", 1000, tcp(C, S, 40000, 9, "S", 2000)),
        ("b", 1010, tcp(C, S, 40000, 9, "S", 1000)),  # the first SYN seen late on "b"
    ]
    first, second = trace_of(frames).connections
    assert [e.seq_abs for e in first.at("b")] == [1000]
    assert second.at("b") == []


def test_icmp_error_attaches_to_the_quoted_connection():
    frames = [
        *handshake("eth0", 0, sport=40000),
        ("eth0", 300, tcp(C, S, 40001, 8080, "S", 42)),
        ("eth0", 400, IP(src=R, dst=C) / ICMP(type=3, code=1) / tcp(C, S, 40001, 8080, "S", 42)),
        ("eth0", 500, IP(src=R, dst=C) / ICMP(type=3, code=1) / tcp(C, "203.0.113.9", 40002, 80, "S", 1)),
    ]
    trace = trace_of(frames)
    first, second = trace.connections
    assert first.icmp_events() == []
    (ev,) = second.icmp_events()
    assert (ev.kind, ev.direction, ev.icmp_type, ev.icmp_code, ev.icmp_from, ev.quoted_seq, ev.flags) == (
        "ICMP", "s>c", 3, 1, R, 0, "",
    )
    assert ev in second.events and ev.packet_index == 4
    assert second.outcome == "unreachable"
    (stray,) = trace.unmatched_icmp
    assert stray.quoted.dst == "203.0.113.9"


def test_icmpv6_error_prefers_the_attempt_whose_syn_it_quotes():
    def unreach(isn):
        return IPv6(src="2001:db8::fe", dst=C6) / ICMPv6DestUnreach(code=3) / tcp(C6, S6, 5000, 80, "S", isn)

    frames = [
        ("eth0", 0, tcp(C6, S6, 5000, 80, "S", 1000)),
        ("eth0", 1000, tcp(C6, S6, 5000, 80, "R", 1001)),
        ("eth0", 2000, tcp(C6, S6, 5000, 80, "S", 2000)),
        ("eth0", 2100, unreach(2000)),
        ("eth0", 2200, unreach(1000)),  # quotes the first attempt's SYN
    ]
    first, second = trace_of(frames).connections
    assert first.family == second.family == 6
    assert [(e.icmp_type, e.icmp_code, e.quoted_seq) for e in second.icmp_events()] == [(1, 3, 0)]
    assert [e.t for e in first.icmp_events()] == pytest.approx([2200e-6])


def test_icmp_about_a_server_packet_travels_towards_the_server():
    frames = handshake("eth0", 0) + [
        ("eth0", 300, IP(src=R, dst=S) / ICMP(type=11, code=0) / tcp(S, C, 8080, 40000, "A", 5001, 1001)),
    ]
    (conn,) = trace_of(frames).connections
    (ev,) = conn.icmp_events()
    assert (ev.direction, ev.quoted_seq) == ("c>s", 1)


def test_partial_connections_are_oriented_from_their_first_packet():
    frames = [
        ("eth0", 0, tcp(S, C, 8080, 40000, "PA", 9000, 3000, b"late")),
        ("eth0", 10, tcp(C, S, 40000, 8080, "A", 3000, 9004)),
        ("eth0", 100, tcp(S6, C6, 443, 6000, "SA", 10, 21)),  # SYN-ACK first: its receiver is the client
    ]
    mid, synack_first = trace_of(frames).connections
    assert mid.partial and mid.client == (S, 8080)
    assert summary(mid.events) == [("c>s", "DATA", "PA", 0, 0, 4), ("s>c", "ACK", "A", 0, 4, 0)]
    assert synack_first.partial and synack_first.client == (C6, 6000)
    assert synack_first.events[0].direction == "s>c"
    assert synack_first.events[0].ack == 1  # client never seen: its first acked byte counts as 1


def test_new_syn_after_a_mid_stream_connection_is_a_new_attempt():
    frames = [
        ("eth0", 0, tcp(C, S, 40000, 8080, "A", 3000, 9000)),
        *handshake("eth0", 100),
    ]
    mid, fresh = trace_of(frames).connections
    assert mid.partial and not fresh.partial and fresh.attempt == 1


def test_simultaneous_open_stays_one_connection():
    frames = [
        ("eth0", 0, tcp(C, S, 7000, 7001, "S", 100)),
        ("eth0", 1, tcp(S, C, 7001, 7000, "S", 500)),
        ("eth0", 2, tcp(C, S, 7000, 7001, "SA", 100, 501)),
        ("eth0", 3, tcp(S, C, 7001, 7000, "SA", 500, 101)),
    ]
    (conn,) = trace_of(frames).connections
    assert (conn.isn_client, conn.isn_server) == (100, 500)
    assert [(e.direction, e.seq, e.ack) for e in conn.events] == [
        ("c>s", 0, None), ("s>c", 0, None), ("c>s", 0, 1), ("s>c", 0, 1),
    ]


def test_find_filters_on_client_and_server_sides():
    frames = handshake("eth0", 0) + handshake("eth0", 1000, sport=6000, client=C6, server=S6, dport=443)
    trace = trace_of(frames)
    v4, v6 = trace.connections
    assert trace.find(dport=8080) == [v4]
    assert trace.find(sport=8080) == []  # 8080 is the server's port
    assert trace.find(src=C) == [v4] and trace.find(dst=C) == []
    assert trace.find(dst="2001:0db8:0001:0000::2") == [v6]  # compared canonically
    assert trace.find(family=6, dport=443, sport=6000) == [v6]
    assert trace.find() == [v4, v6]


def test_ladder_lines():
    frames = [
        ("client:eth0", 0, IP(src=C, dst=S) / TCP(sport=40000, dport=8080, flags="S", seq=10, options=[("MSS", 1460)])),
        ("client:eth0", 1500, tcp(S, C, 8080, 40000, "RA", 0, 11)),
        ("client:eth0", 2500, IP(src=R, dst=C) / ICMP(type=3, code=4, nexthopmtu=1400) / tcp(C, S, 40000, 8080, "S", 10)),
    ]
    conn = trace_of(frames).connections[0]
    assert format_events(conn.events).splitlines() == [
        "    0.000000  client:eth0  c>s  S    seq=0 ack=-  len=0  mss=1460",
        "    0.001500  client:eth0  s>c  RA   seq=0 ack=1  len=0",
        "    0.002500  client:eth0  s>c  ICMP type=3 code=4 (fragmentation needed) from 192.0.2.254, "
        "quoting c>s seq=0 mtu=1400",
    ]
    assert conn.ladder().splitlines()[0] == "192.0.2.1:40000 > 198.51.100.2:8080 on client:eth0:"
    marked = format_events(conn.events, mark=conn.events[1]).splitlines()
    assert marked[1].startswith(">>") and not marked[0].startswith(">>")


def test_ladder_of_all_interfaces_is_time_ordered():
    frames = handshake("a", 0) + handshake("b", 50)
    conn = trace_of(frames).connections[0]
    lines = conn.ladder(all_interfaces=True).splitlines()[1:]
    assert [line.split()[1] for line in lines] == ["a", "b", "a", "b", "a", "b"]


def test_load_trace_counts_and_summary(tmp_path):
    good = handshake("eth0", 0)
    udp = ("eth0", 300, IP(src=C, dst=S) / UDP(sport=53, dport=53))
    broken = ("eth0", 400, bytes(eth() / IP(src=C, dst=S) / TCP())[:40])
    path = write(good + [udp, broken], tmp_path / "run.pcapng")
    trace = load_trace(path)
    assert (trace.malformed, trace.skipped, trace.packet_count) == (1, 1, 3)
    assert trace.source == str(path)
    text = trace.summary()
    assert text.splitlines()[0] == f"trace {path}: 1 connection(s), 1 malformed packet(s)"
    assert "#0 192.0.2.1:40000 > 198.51.100.2:8080 IPv4: established (still open at the end of the capture), 1 SYN" in text


def test_load_trace_of_a_truncated_file(tmp_path):
    path = write(handshake("eth0", 0), tmp_path / "cut.pcapng")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.warns(CaptureTruncatedWarning, match="read 2 packets"):
        trace = load_trace(path)
    assert trace.truncated and len(trace.connections[0].events) == 2
    assert "capture truncated" in trace.summary()


def test_empty_trace():
    trace = Trace.from_packets([])
    assert trace.connections == [] and trace.t0_ns == 0 and trace.find() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "0 connection(s)" in trace.summary()


def test_from_packets_accepts_decoder_output_directly():
    from verifier.wire import decode
    from verifier.pcap import read_packets

    frames = handshake("eth0", 0) + [("eth0", 300, IP(src=C, dst=S) / UDP())]
    trace = Trace.from_packets((decode(r) for r in read_packets(write(frames))), source="mem")
    assert len(trace.connections) == 1 and trace.packet_count == 3 and trace.source == "mem"


def test_select_rejects_unknown_kinds():
    conn = trace_of(handshake("eth0", 0)).connections[0]
    with pytest.raises(ValueError, match="unknown event kind 'SYNACK'"):
        conn.select("SYNACK")


def test_segment_below_the_isn_is_negative_not_huge():
    frames = handshake("eth0", 0, isn_c=5, isn_s=0xFFFFFFFF) + [
        ("eth0", 300, tcp(C, S, 40000, 8080, "A", 3, 0)),  # two below the client ISN; acks server ISN+1 (wrapped)
    ]
    conn = trace_of(frames).connections[0]
    assert (conn.events[-1].seq, conn.events[-1].ack) == (-2, 1)
    assert conn.events[1].ack == 1 and conn.events[2].ack == 1
