"""The bounded SYN flood (verifier.faults.flood): its packets, its bounds, and what it does on a real testbed.

Unit part (no root): the hand-built SYNs against Scapy's dissection, checksums included, and the
refusals. Testbed part: the flood sends exactly `count` SYNs, from the requested range, never ahead of
its rate, stops at its time limit, and the SYN-ACKs to the spoofed sources never get past the router.
"""

from __future__ import annotations

import ipaddress
import random
from types import SimpleNamespace

import pytest

from netns import Testbed
from verifier.faults import flood
from verifier.capture import Capture
from verifier.faults.flood import FloodError, SynBuilder, background_syn_flood, blackhole, relax_rp_filter, syn_flood
from verifier.wire import internet_checksum
from verifier.analysis.trace import load_trace

PORT = 5000
FAMILY_NAME = {4: "ipv4", 6: "ipv6"}
DST = {4: "203.0.113.2", 6: "2001:db8:2::2"}


# -- the packets ---------------------------------------------------------------------------------
def _scapy_layers(family):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    return (IP if family == 4 else IPv6), TCP


def test_hand_built_syn_matches_scapy(family):
    ip_cls, tcp_cls = _scapy_layers(family)
    rng = random.Random(family)
    net = ipaddress.ip_network(flood.DEFAULT_SOURCES[family])
    builder = SynBuilder(family, DST[family], PORT)
    for _ in range(50):
        src = net.network_address + rng.randrange(1, net.num_addresses - 1)
        sport, seq, ip_id = rng.randrange(1024, 65536), rng.getrandbits(32), rng.getrandbits(16)
        raw = builder.build(src.packed, sport, seq, ip_id)
        assert len(raw) == (40 if family == 4 else 60)
        pkt = ip_cls(raw)
        tcp = pkt[tcp_cls]
        assert (pkt.src, pkt.dst) == (str(src), DST[family])
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, str(tcp.flags), tcp.dataofs) == (sport, PORT, seq, 0, "S", 5)
        assert bytes(tcp.payload) == b""
        if family == 4:
            assert (pkt.version, pkt.ihl, pkt.len, pkt.proto, pkt.ttl, pkt.id) == (4, 5, 40, 6, flood.TTL, ip_id)
        else:
            assert (pkt.version, pkt.plen, pkt.nh, pkt.hlim) == (6, 20, 6, flood.TTL)
        # Scapy recomputes a checksum that is deleted: it must equal ours, for TCP and the IPv4 header.
        fresh = pkt.copy()
        del fresh[tcp_cls].chksum
        if family == 4:
            del fresh.chksum
        rebuilt = ip_cls(bytes(fresh))
        assert rebuilt[tcp_cls].chksum == tcp.chksum
        if family == 4:
            assert rebuilt.chksum == pkt.chksum


def test_checksum_of_a_valid_header_is_zero():
    builder = SynBuilder(4, DST[4], PORT)
    raw = builder.build(ipaddress.ip_address("198.51.100.7").packed, 40000, 0xDEADBEEF, 7)
    assert internet_checksum(raw[:20]) == 0
    pseudo = raw[12:20] + bytes([0, 6, 0, 20])
    assert internet_checksum(pseudo + raw[20:]) == 0


# -- the refusals --------------------------------------------------------------------------------
def _not_a_testbed_host():
    return SimpleNamespace(name="x", netns="not-a-testbed", interfaces=[])


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=0, rate_pps=10), "count"),
    (dict(count=flood.MAX_COUNT + 1, rate_pps=10), "count"),
    (dict(count=10, rate_pps=flood.MAX_RATE_PPS + 1), "rate"),
    (dict(count=10, rate_pps=0), "rate"),
    (dict(count=10, rate_pps=10, time_limit=flood.MAX_SECONDS + 1), "time limit"),
    (dict(count=10, rate_pps=10, sources="10.0.0.0/24"), "documentation"),
    (dict(count=10, rate_pps=10, sources="2001:db8:64::/64"), "not IPv4"),
    (dict(count=10, rate_pps=10), "not a host of a live testbed"),
])
def test_flood_refuses_what_is_out_of_bounds(kwargs, message):
    with pytest.raises(FloodError, match=message):
        syn_flood(_not_a_testbed_host(), DST[4], PORT, **kwargs)


def test_flood_refuses_a_destination_outside_the_documentation_ranges():
    with pytest.raises(FloodError, match="documentation"):
        syn_flood(_not_a_testbed_host(), "10.1.2.3", PORT, count=1, rate_pps=1)


def test_flood_refuses_sources_on_the_senders_own_link(root):
    with Testbed.routed("ipv4") as bed:
        with pytest.raises(FloodError, match="overlaps"):
            syn_flood(bed.client, bed.server.addr(4), PORT, count=1, rate_pps=1, sources="192.0.2.0/25")


# -- on a testbed --------------------------------------------------------------------------------
def _server_syns(path, family, dport=PORT):
    """The SYNs that reached the server's interface, from the trace of a server-side capture."""
    trace = load_trace(path)
    return sorted(((e, c) for c in trace.find(dport=dport, family=family)
                   for e in c.at("server:s0") if e.kind == "SYN" and e.direction == "c>s"), key=lambda ec: ec[0].ts_ns)


# Pacing model: packet i is due i / rate after the flood started. It may be late (scheduling on a busy
# 2-core machine), never early: it reaches the server after it was sent, and it is sent no earlier
# than due. JITTER_S only covers the two clocks involved (the flood's start is read with time.time_ns,
# the capture's timestamps are the kernel's CLOCK_REALTIME too).
JITTER_S = 0.001
# How late the whole flood may finish: 25 % of the nominal span plus 100 ms of scheduling noise (a
# busy 2-core machine running the suite with -n 2 can stall a thread for tens of milliseconds).
LATE_FRACTION, LATE_S = 0.25, 0.1


def test_flood_sends_exactly_count_from_the_range_at_the_rate(root, tmp_path, family):
    count, rate = 120, 800.0
    with Testbed.routed(FAMILY_NAME[family]) as bed:
        with Capture(bed, tmp_path / "f.pcapng", hosts=["server"]) as cap:
            report = syn_flood(bed.client, bed.server.addr(family), PORT, count=count, rate_pps=rate, seed=family)
        assert not cap.lost
    assert (report.sent, report.stopped_by, report.send_errors) == (count, "count", 0), report.describe()
    assert report.path_primed
    syns = _server_syns(cap.path, family)
    # Exactly `count` arrived: one per sent packet, each its own connection attempt (random ISNs).
    assert len(syns) == count, report.describe()
    net = ipaddress.ip_network(report.sources)
    assert all(ipaddress.ip_address(c.client[0]) in net for _, c in syns)
    assert sorted(c.client[1] for _, c in syns) == sorted(report.source_ports)
    assert len({c.client[0] for _, c in syns}) > count // 2, "sources are not spread over the range"
    # Never ahead of the schedule, and done within the stated lateness.
    times = [e.ts_ns for e, _ in syns]
    t0 = report.started_ns
    ahead = [(i, (t - t0) / 1e9, i / rate) for i, t in enumerate(times) if (t - t0) / 1e9 < i / rate - JITTER_S]
    assert not ahead, f"SYNs ahead of the {rate:g}/s schedule (index, at, due): {ahead[:5]}"
    nominal = (count - 1) / rate
    span = (times[-1] - times[0]) / 1e9
    assert span <= nominal * (1 + LATE_FRACTION) + LATE_S, f"{count} SYNs took {span:.3f} s, model {nominal:.3f} s"


def test_every_syn_of_a_flood_is_its_own_connection_even_from_a_small_range(root, tmp_path):
    """2,000 SYNs from the two addresses of a /30: drawn at random, some 15 (address, port) pairs
    would come twice; none may, so a test can count connections as SYNs."""
    count = 2000
    with Testbed.routed("ipv4") as bed:
        with Capture(bed, tmp_path / "f.pcapng", hosts=["server"]) as cap:
            report = syn_flood(bed.client, bed.server.addr(4), PORT, count=count, rate_pps=20_000,
                               sources="198.51.100.0/30", seed=1)
        assert not cap.lost
    assert report.sent == count, report.describe()
    syns = _server_syns(cap.path, 4)
    assert len(syns) == count and len({c.client for _, c in syns}) == count


def test_flood_stops_at_its_time_limit(root, tmp_path):
    rate, limit = 2000.0, 0.3
    with Testbed.routed("ipv4") as bed:
        with Capture(bed, tmp_path / "t.pcapng", hosts=["server"]) as cap:
            report = syn_flood(bed.client, bed.server.addr(4), PORT, count=flood.MAX_COUNT, rate_pps=rate,
                               time_limit=limit)
    assert report.stopped_by == "time limit", report.describe()
    # It ran for its limit, plus at most one pacing step and the socket's close.
    assert limit <= report.duration_s <= limit + LATE_S, report.describe()
    # About rate x limit packets: never more than the schedule allows, a little less if it ran late.
    assert rate * limit * (1 - LATE_FRACTION) <= report.sent <= rate * limit + 1, report.describe()
    syns = _server_syns(cap.path, 4)
    assert len(syns) == report.sent
    assert max(e.ts_ns for e, _ in syns) <= report.ended_ns


def test_syn_acks_to_spoofed_sources_die_at_the_router(root, tmp_path, family):
    from verifier.programs import build

    server = str(build("server"))
    wildcard = "::" if family == 6 else "0.0.0.0"
    with Testbed.routed(FAMILY_NAME[family]) as bed:
        relax_rp_filter(bed.router, "client")  # a no-op where fresh namespaces start with rp_filter 0
        proc = bed.server.start([server, "--family", str(family), "--listen", wildcard, str(PORT), "--accept", "0",
                                 "--backlog", "64"])
        bed.server.wait_listen(PORT, process=proc)
        with Capture(bed, tmp_path / "a.pcapng") as cap:
            report = syn_flood(bed.client, bed.server.addr(family), PORT, count=40, rate_pps=4000)
        with Capture(bed, tmp_path / "b.pcapng") as quiet:
            blackhole(bed.router, report.sources)
            syn_flood(bed.client, bed.server.addr(family), PORT + 1, count=40, rate_pps=4000)
    assert report.sent == 40 and report.path_primed
    net = ipaddress.ip_network(report.sources)
    trace = load_trace(cap.path)
    conns = [c for c in trace.find(dport=PORT, family=family) if ipaddress.ip_address(c.client[0]) in net]
    assert len(conns) == 40
    answered = [c for c in conns if any(e.kind == "SYN-ACK" for e in c.at("server:s0"))]
    assert len(answered) == 40, "the listener answers every SYN (queue or cookie)"
    for c in conns:
        # The SYN-ACK reaches the router and goes no further: not on its client side, not at the client.
        assert [e.kind for e in c.at("router:r1") if e.direction == "s>c"] == ["SYN-ACK"]
        assert not [e for e in c.at("router:r0") + c.at("client:c0") if e.direction == "s>c"]
    # Instead the router tells the server it has no route (ICMP net unreachable / ICMPv6 no route),
    # rate-limited by the kernel, so fewer errors than SYN-ACKs.
    errors = [e for c in conns for e in c.icmp_events() if e.iface == "router:r1"]
    no_route = (3, 0) if family == 4 else (1, 0)
    assert errors and all((e.icmp_type, e.icmp_code) == no_route for e in errors)
    assert all(e.icmp_from == bed.router.interface("server").addresses[family] for e in errors)
    assert len(errors) < len(answered)
    # With a blackhole route the router discards them silently.
    silent = load_trace(quiet.path)
    # (The only other ICMP is the server's port-unreachable to the flood's priming datagram.)
    assert all(p.quoted.proto == "udp" and p.quoted.dport == flood.PRIME_PORT for p in silent.unmatched_icmp)
    assert not [c for c in silent.connections if c.icmp_events()]


def test_rp_filter_on_the_router_drops_the_flood_until_relaxed(root, tmp_path):
    with Testbed.routed("ipv4") as bed:
        bed.router.sysctl("net.ipv4.conf.all.rp_filter", 1)
        with Capture(bed, tmp_path / "r.pcapng", hosts=["server"]) as cap:
            syn_flood(bed.client, bed.server.addr(4), PORT, count=10, rate_pps=5000)
            changed = relax_rp_filter(bed.router, "client")
            syn_flood(bed.client, bed.server.addr(4), PORT + 1, count=10, rate_pps=5000)
        assert bed.router.sysctl("net.ipv4.conf.all.rp_filter") == "0"
    assert changed == {"net.ipv4.conf.all.rp_filter": "1"}
    assert len(_server_syns(cap.path, 4, PORT)) == 0, "strict rp_filter should drop spoofed sources"
    assert len(_server_syns(cap.path, 4, PORT + 1)) == 10


def test_background_flood_runs_beside_the_test_and_ends_by_itself(root):
    with Testbed.routed("ipv6") as bed:
        with background_syn_flood(bed.client, bed.server.addr(6), PORT, count=50, rate_pps=500) as running:
            assert running.running
        assert not running.running
    assert running.report.sent == 50 and running.report.stopped_by == "count"
