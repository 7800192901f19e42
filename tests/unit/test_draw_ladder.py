"""The ladder geometry (verifier.draw.ladder) on crafted packets and on the golden captures.

What a reader relies on: one arrow per packet (copies on several interfaces are one arrow), in the
order the packets were sent, from the host that sent it to the farthest host it reached; a packet
that a captured host never saw is drawn as dropped; ICMP errors start at the router; time runs down,
monotonic, with long gaps marked; long connections summarised; socket calls on their host's line.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, IPerror, TCPerror

from tests.unit.crafted import C, S, T0, handshake, tcp, write
from verifier.analysis.calls import SyscallEvent
from verifier.analysis.trace import Trace, load_trace
from verifier.draw.ladder import (BREAK_S, KIND_COLOURS, ROW, TimeAxis, calls_for, column_xs, gap_height, ladder,
                                  render_svg)

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"
NS = "{http://www.w3.org/2000/svg}"
R = "192.0.2.254"


def routed(frames_by_hop, path):
    """Frames of a routed testbed: each (t_us, packet, hops) is written once per interface of `hops`
    ("c0", "r0", "r1", "s0"), 10 us later at each."""
    names = {"c0": "client:c0", "r0": "router:r0", "r1": "router:r1", "s0": "server:s0"}
    frames = []
    for t, pkt, hops in frames_by_hop:
        for k, h in enumerate(hops):
            frames.append((names[h], t + 10 * k, pkt))
    frames.sort(key=lambda f: f[1])
    return load_trace(write(frames, path))


def pkts(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "pkt"]


def path_points(g: ET.Element) -> list[tuple[float, float]]:
    d = next(p for p in g.iter(f"{NS}path")).get("d")
    return [tuple(float(v) for v in part[1:].split(",")) for part in d.split()]


C2S, S2C = ["c0", "r0", "r1", "s0"], ["s0", "r1", "r0", "c0"]


def test_routed_handshake_is_three_arrows_across_three_columns(tmp_path):
    trace = routed([(0, tcp(C, S, 40000, 80, "S", 1000), C2S),
                    (100, tcp(S, C, 80, 40000, "SA", 5000, 1001), S2C),
                    (200, tcp(C, S, 40000, 80, "A", 1001, 5001), C2S)], tmp_path / "h.pcapng")
    conn = trace.connections[0]
    lad = ladder(conn, interfaces=trace.interfaces)
    assert lad.columns == ("client", "router", "server")
    assert [a.label for a in lad.arrows] == ["S seq=0", "SA seq=0 ack=1", "A seq=1 ack=1"]
    syn, synack, ack = lad.arrows
    # each packet is one arrow of two hops: client -> router (c0 to r0), router -> server (r1 to s0)
    assert [(h[0], h[2]) for h in syn.hops] == [(0, 1), (1, 2)]
    assert [(h[1] - T0, h[3] - T0) for h in syn.hops] == [(0, 10_000), (20_000, 30_000)]
    assert [(h[0], h[2]) for h in synack.hops] == [(2, 1), (1, 0)]
    assert not any(a.dropped for a in lad.arrows)
    svg = render_svg(lad)
    groups = pkts(svg)
    assert [g.get("data-kind") for g in groups] == ["SYN", "SYN-ACK", "ACK"]
    xs = column_xs(3)
    first = path_points(groups[0])
    assert first[0][0] == pytest.approx(xs[0]) and first[-1][0] == pytest.approx(xs[2])
    back = path_points(groups[1])
    assert back[0][0] == pytest.approx(xs[2]) and back[-1][0] == pytest.approx(xs[0])
    # time runs down: each arrow starts below the one before, and ends below where it starts
    starts = [path_points(g)[0][1] for g in groups]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert all(path_points(g)[-1][1] > path_points(g)[0][1] for g in groups)
    # the offending packet is named by its copy on the primary interface (the client's): its arrow
    # (which starts at the server's copy) is the one highlighted
    sa_on_client = next(e for e in conn.at("client:c0") if e.kind == "SYN-ACK").packet_index
    assert synack.packet_index != sa_on_client
    marked = [g.get("data-kind") for g in pkts(render_svg(lad, mark_frame=sa_on_client))
              if any(r.get("class") == "mark" for r in g.iter(f"{NS}rect"))]
    assert marked == ["SYN-ACK"]


def test_syn_dropped_at_the_router_ends_in_a_cross_and_its_retransmission_is_its_own_arrow(tmp_path):
    # the router drops the first SYN (seen on r0 only); the retransmission 1 s later goes through
    trace = routed([(0, tcp(C, S, 40000, 80, "S", 1000), ["c0", "r0"]),
                    (1_000_000, tcp(C, S, 40000, 80, "S", 1000), C2S),
                    (1_000_100, tcp(S, C, 80, 40000, "SA", 5000, 1001), S2C)], tmp_path / "d.pcapng")
    lad = ladder(trace.connections[0], interfaces=trace.interfaces)
    assert [a.kind for a in lad.arrows] == ["SYN", "SYN", "SYN-ACK"]
    first, second, _ = lad.arrows
    assert first.dropped and not second.dropped
    assert [(h[0], h[2]) for h in first.hops] == [(0, 1), (1, 1)]
    assert [h[3] - T0 for h in second.hops] == [1_000_010_000, 1_000_030_000]
    svg = render_svg(lad)
    assert [g.get("data-dropped") for g in pkts(svg)] == ["1", None, None]
    # the 1 s gap is marked as compressed, with its length
    gaps = [g for g in ET.fromstring(svg).iter(f"{NS}g") if g.get("class") == "gap"]
    assert len(gaps) == 1 and "1.000 s" in "".join(gaps[0].itertext())


def test_without_the_routers_capture_a_packet_is_drawn_to_its_destination(tmp_path):
    # only the client's interface: nothing says the SYNs were lost, so they are not drawn as dropped
    trace = load_trace(GOLDEN / "c2_syn_timeout_linear1_retries2_ipv4.pcapng")
    lad = ladder(trace.connections[0], interfaces=trace.interfaces)
    assert lad.columns == ("client", "server")  # the router was not captured
    assert [a.kind for a in lad.arrows] == ["SYN"] * 4
    assert all(not a.dropped and a.hops[-1][2] == 1 for a in lad.arrows)
    times = [a.t_ns for a in lad.arrows]
    assert times == [e.ts_ns for e in trace.connections[0].syns()]


def test_icmp_error_starts_at_the_router(tmp_path):
    syn = tcp(C, S, 40000, 80, "S", 1000)
    err = IP(src=R, dst=C) / ICMP(type=3, code=1) / IPerror(bytes(syn)[:28])
    trace = routed([(0, syn, ["c0", "r0"]), (50, err, ["r0", "c0"])], tmp_path / "i.pcapng")
    lad = ladder(trace.connections[0], interfaces=trace.interfaces)
    assert [a.kind for a in lad.arrows] == ["SYN", "ICMP"]
    icmp = lad.arrows[1]
    assert icmp.hops[0][0] == 1 and icmp.hops[-1][2] == 0 and not icmp.dropped
    assert icmp.label == "ICMP 3/1 host unreachable"


def test_golden_icmp_capture_client_side_only(tmp_path):
    trace = load_trace(GOLDEN / "c5_icmp_host_reject_ipv4.pcapng")
    lad = ladder(trace.connections[0], interfaces=trace.interfaces)
    assert lad.columns == ("client", "router", "server") and lad.subtitles[1] == "(not captured)"
    assert [(a.kind, a.hops[0][0], a.hops[-1][2]) for a in lad.arrows] == [
        ("SYN", 0, 2), ("ICMP", 1, 0), ("SYN", 0, 2), ("ICMP", 1, 0)]


def test_any_other_capture_is_drawn_endpoint_to_endpoint(tmp_path):
    frames = [("eth0", t, p) for t, p in [(0, tcp(C, S, 40000, 80, "S", 1000))]]
    syn = tcp(C, S, 40001, 80, "S", 7)
    frames += [("eth0", 10, syn), ("eth0", 20, IP(src=R, dst=C) / ICMP(type=3, code=0) / IPerror(bytes(syn)[:28]))]
    trace = load_trace(write(frames, tmp_path / "o.pcapng"))
    plain, with_icmp = sorted(trace.connections, key=lambda c: c.c_port)
    lad = ladder(plain)
    assert lad.columns == ("client", "server") and lad.notes == ("as seen on eth0",)
    assert lad.arrows[0].hops == ((0, T0, 1, T0),)
    lad = ladder(with_icmp)
    assert lad.columns == ("client", "network", "server") and lad.subtitles[1] == f"ICMP from {R}"
    assert [(a.hops[0][0], a.hops[0][2]) for a in lad.arrows] == [(0, 2), (1, 0)]


def test_time_axis_is_monotonic_and_shows_gaps():
    assert gap_height(0) == ROW
    heights = [gap_height(g) for g in (50e-6, 1e-3, 0.1, 1.0, 3.0, 1e4)]
    assert heights == sorted(heights) and len(set(heights[:5])) == 5
    assert heights[-1] == gap_height(1e6)  # capped: an hour is not drawn a mile long
    moments = [0, 50_000, 1_050_000, 3_001_050_000]
    axis = TimeAxis(moments, 0)
    ys = [axis.y(t) for t in moments]
    assert ys == sorted(ys) and ys[1] - ys[0] < ys[2] - ys[1] < ys[3] - ys[2]
    assert axis.y(25_000) == pytest.approx((ys[0] + ys[1]) / 2)
    assert axis.gaps() == [(1_050_000, 3_001_050_000)] and 3.0 > BREAK_S


def test_a_long_connection_is_summarised(tmp_path):
    frames = handshake("eth0", sport=40000, dport=80, isn_c=1000, isn_s=5000, client=C, server=S)
    seq = 1001
    for k in range(300):  # 300 data segments, 1 ms apart
        frames.append(("eth0", 1000 + 1000 * k, tcp(C, S, 40000, 80, "PA", seq, 5001, b"x" * 10)))
        seq += 10
    trace = load_trace(write(frames, tmp_path / "long.pcapng"))
    lad = ladder(trace.connections[0], max_arrows=100)
    assert len(lad.arrows) == 100
    assert lad.omitted is not None and lad.omitted.count == 303 - 100
    assert dict(lad.omitted.kinds) == {"DATA": 203}
    assert [a.index for a in lad.arrows] == list(range(80)) + list(range(283, 303))  # each keeps its number
    svg = render_svg(lad)
    assert len(pkts(svg)) == 100 and "203 packets not drawn" in svg
    assert float(ET.fromstring(svg).get("height")) < 100 * 60  # readable: no metre-long page
    # a short one is drawn whole
    lad = ladder(load_trace(GOLDEN / "c3_refused_ipv4.pcapng").connections[0])
    assert lad.omitted is None and len(pkts(render_svg(lad))) == 2


def call(name, pid, t0_us, t1_us, ret=0, errno=None, fd=3, **extra):
    return SyscallEvent(call=name, args={"fd": fd}, ret=ret, errno=errno, t_enter_ns=T0 + t0_us * 1000,
                        t_return_ns=T0 + t1_us * 1000, pid=pid, extra=extra)


def test_socket_calls_are_marks_on_their_hosts_line(tmp_path):
    trace = load_trace(write(handshake("client:c0", t=100, sport=40000, dport=80), tmp_path / "c.pcapng"))
    conn = trace.connections[0]
    client = [call("socket", 7, 10, 20), call("connect", 7, 50, 400), call("close", 7, 500, 510),
              call("connect", 8, 150_000, 150_100)]  # another process, later: not this connection's
    server = [call("accept", 9, 0, 350, ret=4, addr=C, port=40000), call("accept", 10, 0, 350, ret=4, addr=C, port=1)]
    chosen = calls_for(conn, {"client": client, "server": server})
    assert [(c.call, c.pid) for c in chosen["client"]] == [("socket", 7), ("connect", 7), ("close", 7)]
    assert [(c.call, c.pid) for c in chosen["server"]] == [("accept", 9)]
    lad = ladder(conn, chosen)
    marks = {(m.column, m.enter_text.split("(")[0]) for m in lad.calls}
    assert marks == {(0, "socket"), (0, "connect"), (0, "close"), (1, "accept")}  # client, server
    connect = next(m for m in lad.calls if m.enter_text.startswith("connect"))
    svg = render_svg(lad)
    root = ET.fromstring(svg)
    bars = [g for g in root.iter(f"{NS}g") if g.get("class") == "call"]
    assert len(bars) == 4
    axis_rows = [path_points(g)[0][1] for g in pkts(svg)]
    bar = next(b for b in bars if "connect" in "".join(b.itertext()))
    rect = next(bar.iter(f"{NS}rect"))
    top, bottom = float(rect.get("y")), float(rect.get("y")) + float(rect.get("height"))
    # connect() spans the whole handshake: it enters before the SYN and returns after the ACK left
    assert top < axis_rows[0] and bottom > axis_rows[2]
    assert connect.return_text == "= 0"


def test_every_golden_capture_draws_one_arrow_per_packet_on_its_interface():
    for f in sorted(GOLDEN.glob("*.pcapng")):
        trace = load_trace(f)
        for conn in trace.connections:
            lad = ladder(conn, interfaces=trace.interfaces)
            groups = pkts(render_svg(lad))
            assert len(groups) == len(conn.events), f.name
            assert [g.get("data-frame") for g in groups] == [str(e.packet_index + 1) for e in conn.events], f.name
            colours = {next(g.iter(f"{NS}path")).get("stroke") for g in groups}
            assert colours <= set(KIND_COLOURS.values())


def test_empty_trace_draws_nothing():
    assert Trace.from_packets([]).connections == []


def test_calls_of_concurrent_clients_and_a_fork_server_go_to_their_own_connection(tmp_path):
    frames = handshake("client:c0", t=100, sport=40000, dport=80) + handshake("client:c0", t=150, sport=40001,
                                                                              dport=80)
    trace = load_trace(write(sorted(frames, key=lambda f: f[1]), tmp_path / "two.pcapng"))
    a, b = sorted(trace.connections, key=lambda c: c.c_port)
    client = [call("connect", 7, 50, 400), call("connect", 8, 60, 420),  # both under way at both SYNs
              call("getsockname", 7, 410, 411, addr=C, port=40000), call("getsockname", 8, 430, 431, addr=C, port=40001)]
    server = [call("accept", 1, 0, 350, ret=4, addr=C, port=40000), call("fork", 1, 360, 370, ret=2, child=2),
              call("close", 1, 380, 381, fd=4), call("accept", 1, 390, 450, ret=4, addr=C, port=40001),
              call("fork", 1, 460, 470, ret=3, child=3), call("close", 1, 480, 481, fd=4),
              call("read", 2, 372, 700, ret=5), call("read", 3, 472, 800, ret=5)]
    mine = calls_for(a, {"client": client, "server": server})
    assert [(c.call, c.pid) for c in mine["client"]] == [("connect", 7), ("getsockname", 7)]
    assert [(c.call, c.pid, c.t_enter_ns - T0) for c in mine["server"]] == [
        ("accept", 1, 0), ("fork", 1, 360_000), ("read", 2, 372_000), ("close", 1, 380_000)]
    theirs = calls_for(b, {"client": client, "server": server})
    assert [c.pid for c in theirs["client"]] == [8, 8]
    assert [(c.call, c.pid) for c in theirs["server"]] == [("accept", 1), ("fork", 1), ("read", 3), ("close", 1)]


def test_a_pair_testbed_has_no_router_column(tmp_path):
    frames = [(h, t + 10 * k, p) for t, p, hops in [
        (0, tcp(C, S, 40000, 80, "S", 1000), ["client:c0", "server:s0"]),
        (100, tcp(S, C, 80, 40000, "RA", 0, 1001), ["server:s0", "client:c0"])] for k, h in enumerate(hops)]
    trace = load_trace(write(sorted(frames, key=lambda f: f[1]), tmp_path / "pair.pcapng"))
    lad = ladder(trace.connections[0], interfaces=trace.interfaces)
    assert lad.columns == ("client", "server")
    assert [a.hops for a in lad.arrows] == [((0, T0, 1, T0 + 10_000),), ((1, T0 + 100_000, 0, T0 + 110_000),)]
