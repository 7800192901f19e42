"""Every fault kind of `verifier.faults`, proved on the wire and in the client's errno, leaving nothing
behind: no nft table, no qdisc, no agent socket, no process but the one fault agent.

Each test applies one fault to a live testbed, runs the C client (or plain sockets opened inside the
client's namespace when a test needs several attempts at once), captures every interface, and checks
the fault's effect in the packets, in the socket calls' results and in the fault's own report.
Timings are checked against a model built from the kernel's own settings, read in the namespace,
with the project's one tolerance model (`verifier.analysis.schedules.Tolerance`): the kernel's
timers with `tests.kernel.TOLERANCE`, the fault agent's with `wire.AGENT_TOLERANCE`. Every wait is
bounded, and "nothing came" is proved by an event that must come after it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import re
import select
import socket
import struct
import time

import pytest

from netns import namespace
from netns.waiting import wait_until
from verifier.faults import flood
from verifier.faults.agent import agent
from verifier.faults import (FAULT_KINDS, Blackhole, Delay, Drop, FaultError, IcmpUnreachable, Match, Rst, Segment,
                             Syn, SynFlood, from_cli, inject, qdisc_available)
from verifier.wire import internet_checksum
from verifier.pcap import read_packets
from verifier.analysis.calls import find, parse_report

from ..kernel import TOLERANCE
from .wire import AGENT_TOLERANCE, agent_children, assert_on_time, frames, ip_packet, syn_from, tcp_checksum_ok

PORT = 5000
WILDCARD = {4: "0.0.0.0", 6: "::"}
# A hard error is delivered by the packet that carries it, not by a timer: "at once" is well inside
# the shortest timer a connect() could be waiting on, the initial RTO (1 s, RFC 6298).
AT_ONCE_NS = 100_000_000


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def programs():
    from verifier.programs import build

    return {name: str(build(name)) for name in ("client", "server")}


def start_server(bed, programs, family, *extra, port=PORT):
    proc = bed.server.start([programs["server"], "--family", str(family), "--listen", WILDCARD[family], str(port),
                             *extra])
    bed.server.wait_listen(port, process=proc)
    return proc


def run_client(bed, programs, family, *extra, port=PORT, timeout=20):
    res = bed.client.run([programs["client"], "--family", str(family), *extra, bed.server.addr(family), str(port)],
                         timeout=timeout)
    return parse_report(res.stdout)


class NothingLeft:
    """What a fault could leave behind, in every namespace of the testbed: `check()` after the fault."""

    def __init__(self, bed) -> None:
        self.bed = bed
        self.qdiscs = self._qdiscs()

    def _qdiscs(self) -> dict[str, str]:
        return {h.name: h.run(["tc", "qdisc", "show"], check=True).stdout for h in self.bed.hosts.values()}

    def check(self) -> None:
        for h in self.bed.hosts.values():
            ruleset = h.run(["nft", "list", "ruleset"], check=True).stdout.strip()
            assert ruleset == "", f"nft rules left on {h.name}:\n{ruleset}"
        assert self._qdiscs() == self.qdiscs, "a qdisc was left behind"
        if agent().running:
            ping = agent().request("ping")
            assert (ping["armed"], ping["open_sockets"]) == ([], 0), ping
            assert agent_children() == [agent().pid]
        else:
            assert agent_children() == []


@pytest.fixture
def nothing_left(testbed):
    return NothingLeft(testbed)


def netstat(host, *names: str) -> dict[str, int]:
    """TcpExt counters of the host's namespace (/proc/net/netstat read inside it)."""
    with namespace.inside(host.netns):
        with open("/proc/thread-self/net/netstat") as f:
            lines = f.read().splitlines()
    values = {}
    for head, data in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            values = dict(zip(head.split()[1:], map(int, data.split()[1:])))
    return {n: values[n] for n in names}


def story(conn, capture) -> str:
    return "\n" + conn.ladder(all_interfaces=True) + f"\npcap: {capture.path}"


# -- drop ---------------------------------------------------------------------------------------

def test_drop_the_first_two_syns(testbed, capture, family, programs, nothing_left):
    server = start_server(testbed, programs, family)
    fault = Drop(Match.between(testbed.client, testbed.server, family, flags="syn", dport=PORT), first=2)
    with inject(testbed.router, fault):
        calls = run_client(testbed, programs, family)
        server.wait(5)
    nothing_left.check()
    assert json.loads(json.dumps(fault.report)) == fault.report
    assert (fault.report["fault"], fault.report["matched"], fault.report["dropped"]) == ("drop", 3, 2), fault.report
    connect = find(calls, "connect")
    conn = capture.trace().find(dport=PORT)[0]
    s = story(conn, capture)
    # Three SYNs of one attempt (one ISN) left the client; only the third got past the router.
    assert len(conn.select("SYN", "c>s", iface="client:c0")) == 3, s
    assert len(conn.select("SYN", "c>s", iface="router:r0")) == 3, s
    (through,) = conn.select("SYN", "c>s", iface="router:r1")
    assert through.ts_ns > conn.select("SYN", "c>s", iface="router:r0")[1].ts_ns, s
    # connect() succeeded on the SYN-ACK to the third SYN.
    synack = conn.first("SYN-ACK", "s>c")
    assert (connect.ret, connect.errno) == (0, None), s
    assert synack.ts_ns <= connect.t_return_ns < synack.ts_ns + AT_ONCE_NS, s


@pytest.mark.families(4)
def test_drop_every_syn_ack_from_server_to_client(testbed, capture, family, programs, nothing_left):
    server = start_server(testbed, programs, family, "--accept", "0")
    fault = Drop(Match.between(testbed.server, testbed.client, flags="syn-ack"))
    with inject(testbed.router, fault):
        calls = run_client(testbed, programs, family, "--syncnt", "1")
    server.stop()
    nothing_left.check()
    connect = find(calls, "connect")
    conn = capture.trace().find(dport=PORT)[0]
    s = story(conn, capture)
    assert (connect.ret, connect.errno) == (-1, "ETIMEDOUT"), s
    arrived = conn.select("SYN-ACK", "s>c", iface="router:r1")
    # The server answered (and retransmitted); every SYN-ACK reached the router and died there.
    assert len(arrived) >= 2, s
    assert not conn.select("SYN-ACK", iface="router:r0") and not conn.select("SYN-ACK", iface="client:c0"), s
    assert fault.report["dropped"] == fault.report["matched"] == len(arrived), (fault.report, s)
    # The direction holds: the client's SYNs (the other way) all went through.
    assert len(conn.select("SYN", iface="server:s0")) == len(conn.select("SYN", iface="client:c0")) >= 2, s


def _wait_connect_results(socks, timeout=5.0) -> list[int | None]:
    """SO_ERROR of each non-blocking connect() once it has finished, None if it has not within `timeout`."""
    results: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(socks) and time.monotonic() < deadline:
        pending = [s for i, s in enumerate(socks) if i not in results]
        _, ready, _ = select.select([], pending, [], deadline - time.monotonic())
        for s in ready:
            results[socks.index(s)] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if len(socks) > 1 and len(results) == len(socks) - 1:
            break  # the one left is the dropped SYN's: its retransmission timer has 1 s to go
    return [results.get(i) for i in range(len(socks))]


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_drop_only_the_nth_syn(testbed, capture, family, nth, nothing_left):
    # Nothing listens: each SYN that reaches the server is refused with a RST at once.
    fault = Drop(Syn(dport=PORT), nth=nth)
    with inject(testbed.router, fault):
        socks = []
        for _ in range(3):
            socks.append(syn_from(testbed.client, family, testbed.server.addr(family), PORT))
            # One SYN at a time through the router, so that "the nth" is well defined.
            fault.wait_matched(testbed.router, len(socks), timeout=5)
        results = _wait_connect_results(socks)
        for s in socks:
            s.close()
    nothing_left.check()
    assert (fault.report["matched"], fault.report["dropped"]) == (3, 1), fault.report
    expected = [None if i + 1 == nth else errno.ECONNREFUSED for i in range(3)]
    assert results == expected, [os.strerror(r) if r else r for r in results]
    conns = sorted(capture.trace().find(dport=PORT), key=lambda c: c.select("SYN", iface="client:c0")[0].ts_ns)
    assert [bool(c.select("SYN", iface="server:s0")) for c in conns] == [i + 1 != nth for i in range(3)]
    assert [bool(c.select("RST", "s>c", iface="client:c0")) for c in conns] == [i + 1 != nth for i in range(3)]


@pytest.mark.families(4)
def test_drop_ends_by_itself_after_its_duration(testbed, capture, family, nothing_left):
    # Nothing listens: a SYN that gets through is refused with a RST at once.
    fault = Drop(Syn(dport=PORT), duration_s=1)
    with inject(testbed.router, fault):
        early = syn_from(testbed.client, family, testbed.server.addr(family), PORT)
        early_dropped = fault.wait_matched(testbed.router, 1, timeout=5)["acted"]
        early.close()  # no retransmission: the next SYN is the one after the deadline
        # The rule's own clock (nft `meta time`, whole seconds): wait until the deadline has passed,
        # at most 1 s (the duration) rounded up to the next whole second, and a second for slack.
        wait_until(lambda: time.time_ns() > fault.deadline_ns, 3.0,
                   lambda: AssertionError(f"the clock did not pass the deadline {fault.deadline_ns}"))
        late = syn_from(testbed.client, family, testbed.server.addr(family), PORT)
        results = _wait_connect_results([late])
        late.close()
    nothing_left.check()
    assert early_dropped == 1 and results == [errno.ECONNREFUSED], (early_dropped, results)
    assert (fault.report["matched"], fault.report["dropped"]) == (2, 1), fault.report
    assert fault.report["until_ns"] == fault.deadline_ns


def _binomial_pmf(n: int, p: float) -> list[float]:
    return [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
                     + (n - k) * math.log1p(-p)) for k in range(n + 1)]


def _binomial_interval(n: int, p: float, alpha: float) -> tuple[int, int]:
    """The narrowest [lo, hi] with at most alpha / 2 of Binomial(n, p) below lo and at most alpha / 2 above hi."""
    pmf = _binomial_pmf(n, p)
    lo, below = 0, 0.0
    while below + pmf[lo] <= alpha / 2:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while above + pmf[hi] <= alpha / 2:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def test_drop_with_a_probability(testbed, capture, nothing_left):
    # The count of drops is Binomial(count, p). The test accepts the central interval of that
    # distribution holding all but 1e-6 of it (a correct rule fails once in a million runs), and with
    # 5000 matches that interval is narrow enough to reject a wrong probability: a rule dropping with
    # p = 0.20 or 0.30 would land in it less than 0.2 % of the time (checked below, exactly).
    count, p, alpha = 5000, 0.25, 1e-6
    lo, hi = _binomial_interval(count, p, alpha)
    for wrong in (p - 0.05, p + 0.05):
        assert sum(_binomial_pmf(count, wrong)[lo:hi + 1]) < 0.002, f"[{lo}, {hi}] does not reject p = {wrong}"
    flood.relax_rp_filter(testbed.router, "client")
    fault = Drop(Syn(dport=PORT), probability=p)
    with inject(testbed.router, fault):
        report = flood.syn_flood(testbed.client, testbed.server.addr(4), PORT, count=count, rate_pps=4000, seed=7)
    nothing_left.check()
    assert report.sent == count
    dropped = fault.report["dropped"]
    assert fault.report["matched"] == count, fault.report
    assert lo <= dropped <= hi, f"{dropped} of {count} dropped; with p = {p} expected within [{lo}, {hi}]"
    # Exactly the ones not dropped reached the server.
    trace = capture.trace()
    at_server = sum(len(c.select("SYN", iface="server:s0")) for c in trace.find(dport=PORT))
    at_router = sum(len(c.select("SYN", iface="router:r0")) for c in trace.find(dport=PORT))
    assert (at_router, at_server) == (count, count - dropped)


# -- ICMP unreachable ---------------------------------------------------------------------------

def test_icmp_unreachable_answers_the_second_syn_after_a_delay(testbed, capture, family, programs, nothing_left):
    delay_ms = 30
    fault = IcmpUnreachable("host", Syn(dport=PORT), nth=2, delay_ms=delay_ms)
    with inject(testbed.router, fault):
        calls = run_client(testbed, programs, family, "--syncnt", "2")
    nothing_left.check()
    connect = find(calls, "connect")
    conn = capture.trace().find(dport=PORT)[0]
    s = story(conn, capture)
    syns = conn.select("SYN", iface="router:r0")
    (icmp,) = [e for e in conn.icmp_events() if e.iface == "router:r0"]
    # The first SYN died silently at the router; the second was answered, not before the delay.
    assert len(syns) == 2 and not conn.select("SYN", iface="router:r1"), s
    assert_on_time(icmp.ts_ns - syns[1].ts_ns, delay_ms * 1_000_000, AGENT_TOLERANCE, "ICMP after the second SYN",
                   never_early=True, story=s)
    expect_type = (3, 1) if family == 4 else (1, 3)
    assert (icmp.icmp_type, icmp.icmp_code) == expect_type, s
    assert icmp.icmp_from == testbed.router.interface("client").addresses[family] and icmp.quoted_seq == 0, s
    # The ICMP found connect() asleep: a hard error at once.
    assert (connect.ret, connect.errno) == (-1, "EHOSTUNREACH"), s
    arrived = next(e for e in conn.icmp_events() if e.iface == "client:c0")
    assert arrived.ts_ns <= connect.t_return_ns < arrived.ts_ns + AT_ONCE_NS, s
    assert (fault.report["matched"], fault.report["sent"], fault.report["dropped"]) == (2, 1, 2), fault.report


# -- RST into a live connection, RFC 5961 --------------------------------------------------------

def socket_drops(host, dport: int) -> int:
    """The drop count of the host's one established TCP socket to port `dport` (`ss -m`, skmem's `d`:
    the socket's sk_drops). TCP counts there each segment it discards after looking at it, an
    out-of-window RST among them (tcp_validate_incoming -> tcp_drop_reason)."""
    out = host.run(["ss", "-Htnm", "state", "established", "dport", "=", f":{dport}"], check=True).stdout
    found = re.findall(r"skmem:\([^)]*\bd(\d+)\)", out)
    assert len(found) == 1, f"not one established socket to port {dport} on {host.name}:\n{out}"
    return int(found[0])


def _packets_from(conn, iface, direction, after_ns, before_ns=None):
    return [e for e in conn.at(iface) if e.direction == direction and e.ts_ns > after_ns
            and (before_ns is None or e.ts_ns < before_ns)]


def client_segments(fault: Rst, addr: str) -> int:
    """How many segments from `addr` the RST fault's agent has seen on the connection so far."""
    sides = fault.status()["sides"].values()
    return sum(side["segments"] for side in sides if ipaddress.ip_address(side["addr"]) == ipaddress.ip_address(addr))


def test_rst_out_of_window_in_window_and_exact(testbed, capture, family, programs, nothing_left):
    limit = int(testbed.client.sysctl("net.ipv4.tcp_challenge_ack_limit"))
    assert limit > 0, "challenge ACKs are disabled in this namespace (tcp_challenge_ack_limit = 0)"
    server = start_server(testbed, programs, family, "--send", "hello", "--hold-ms", "3000")
    fault = Rst(Match(dport=PORT), to=testbed.client.addr(family))
    with inject(testbed.router, fault):
        client = testbed.client.start([programs["client"], "--family", str(family), "--read",
                                       testbed.server.addr(family), str(PORT)])
        client.wait_output(lambda out: '"data":"hello"' in out, timeout=5, what="the server's greeting")
        # The agent has seen the greeting and the client's ACK of it.
        deadline = time.monotonic() + 5
        while not (st := fault.status())["sides"] or len(st["sides"]) < 2 or st["segments"] < 5:
            assert time.monotonic() < deadline, st
            time.sleep(0.002)
        before = netstat(testbed.client, "TCPChallengeACK")["TCPChallengeACK"]
        drops = socket_drops(testbed.client, PORT)
        outside = fault.fire("out-of-window")
        # Proof that the client's TCP has processed the out-of-window RST: it counted it as discarded.
        # Any answer to it would have left (and been captured) before that count moved, so the
        # capture between this RST and the next one holds every answer it drew.
        wait_until(lambda: socket_drops(testbed.client, PORT) == drops + 1, 5.0,
                   lambda: AssertionError("the client's socket never discarded the out-of-window RST"))
        sent_by_client = client_segments(fault, testbed.client.addr(family))
        inside = fault.fire("in-window")
        deadline = time.monotonic() + 5  # the challenge ACK crosses the router: the agent counts it
        while client_segments(fault, testbed.client.addr(family)) == sent_by_client:
            assert time.monotonic() < deadline, "no answer to the in-window RST"
            time.sleep(0.002)
        after_challenge = netstat(testbed.client, "TCPChallengeACK")["TCPChallengeACK"]
        exact = fault.fire("exact")
        res = client.wait(5)
    server.stop()  # it waits for an EOF that the reset connection will never bring
    nothing_left.check()
    calls = parse_report(res.stdout)
    conn = capture.trace().find(dport=PORT)[0]
    s = story(conn, capture)
    rsts = conn.select("RST", "s>c", iface="client:c0")
    assert [r.seq_abs for r in rsts] == [outside["seq"], inside["seq"], exact["seq"]], s
    rcv_nxt = exact["rcv_nxt"]
    assert outside["rcv_nxt"] == inside["rcv_nxt"] == rcv_nxt and exact["seq"] == rcv_nxt, fault.report
    assert 0 < inside["offset"] < inside["window"], inside
    # (c) Out of window: ignored, not even a duplicate ACK (RFC 5961 3.2: "silently drop").
    assert not _packets_from(conn, "client:c0", "c>s", rsts[0].ts_ns, rsts[1].ts_ns), s
    # (b) In window but not exact: a challenge ACK, <SEQ=SND.NXT><ACK=RCV.NXT>, and no reset.
    (challenge,) = _packets_from(conn, "client:c0", "c>s", rsts[1].ts_ns, rsts[2].ts_ns)
    assert challenge.kind == "ACK" and challenge.ack_abs == rcv_nxt, s
    assert after_challenge - before == 1, "TcpExt TCPChallengeACK did not count exactly one challenge ACK"
    # (a) Exact: the connection is reset; the client's blocked read() fails with ECONNRESET.
    reads = [c for c in calls if c.call == "read"]
    assert (reads[0].ret, reads[-1].ret, reads[-1].errno) == (5, -1, "ECONNRESET"), calls
    assert rsts[2].ts_ns <= reads[-1].t_return_ns < rsts[2].ts_ns + AT_ONCE_NS, s
    assert fault.report["sent"] == 3 and fault.report["fault"] == "rst"
    assert json.loads(json.dumps(fault.report)) == fault.report


# -- a segment for a connection that does not exist ------------------------------------------------

@pytest.mark.parametrize("listening", [True, False], ids=["listener", "closed-port"])
def test_segment_for_no_connection_draws_a_rst_with_its_ack(testbed, capture, family, programs, listening,
                                                           nothing_left):
    if listening:
        server = start_server(testbed, programs, family, "--accept", "0")
    fault = Segment(testbed.server.addr(family), PORT, flags="A", seq=1000, ack=0xDEADBEEF)
    with inject(testbed.client, fault):
        answer = fault.wait_answer(5)
    if listening:
        server.stop()
    nothing_left.check()
    assert answer is not None, fault.report
    # RFC 793: a reset for a segment with ACK takes its sequence number from the segment's ack field.
    assert (answer["flags"], answer["seq"]) == ("R", 0xDEADBEEF), answer
    assert fault.report["answer"] == answer and fault.report["sent"]["ack"] == 0xDEADBEEF
    (conn,) = capture.trace().find(dport=PORT)
    s = story(conn, capture)
    ack = conn.select("ACK", "c>s", iface="server:s0")
    rst = conn.select("RST", "s>c", iface="server:s0")
    assert len(ack) == 1 and len(rst) == 1 and rst[0].ts_ns > ack[0].ts_ns, s
    assert (ack[0].ack_abs, ack[0].seq_abs, rst[0].seq_abs, rst[0].flags) == (0xDEADBEEF, 1000, 0xDEADBEEF, "R"), s
    # The RST went back to the segment's source, the client, which ignores it (no connection there).
    assert rst[0].seq_abs in [e.seq_abs for e in conn.select("RST", iface="client:c0")], s


# -- blackhole ----------------------------------------------------------------------------------

# Neighbour resolution timing: the kernel sends the first probe at once and arms a timer (a
# timer-wheel timer, checked with the kernel's one `TOLERANCE`), retrans_time later the next probe,
# and at the timer after the last probe it gives up (net/core/neighbour.c): each step is checked
# against the one before it. Fast settings, so the test is short; set in the testbed namespace.
NEIGH = {"retrans_time_ms": 200, "mcast_solicit": 2}


def _tune_neighbours(host, ifname, family):
    for key, value in NEIGH.items():
        host.sysctl(f"net.ipv{family}.neigh.{ifname}.{key}", value)


def _check_resolution(neigh: dict, start_ns: int, asks: list[int], end_ns: int, end: str, *, woken: bool,
                      story: str = "") -> None:
    """The neighbour resolution against its model: from `start_ns` (what set it off) the first probe at
    once, the others `retrans_time_ms` apart, and `end` (the ICMP error, or connect() failing, a
    woken process) `retrans_time_ms` after the last; `resolution_ms` in the report is their sum."""
    retrans_ns = neigh["retrans_time_ms"] * 1_000_000
    steps = [("the first probe", start_ns, asks[0], 0)]
    steps += [(f"probe {i + 2}", asks[i], asks[i + 1], retrans_ns) for i in range(len(asks) - 1)]
    steps.append((end, asks[-1], end_ns, retrans_ns))
    assert sum(predicted for *_, predicted in steps) == neigh["resolution_ms"] * 1_000_000, (neigh, steps)
    table = "".join(f"\n  {what:<40} {(b - a) / 1e6:9.3f} ms, predicted {p / 1e6:7.1f} ms" for what, a, b, p in steps)
    for what, a, b, predicted in steps:
        deviation_s, is_end = (b - a - predicted) / 1e9, what == end
        assert TOLERANCE.accepts(deviation_s, predicted / 1e9, woken=woken and is_end), \
            f"neighbour resolution: {what} off by {deviation_s * 1e3:+.3f} ms ({TOLERANCE.describe()}){table}{story}"


def _solicitations(path, iface: str, target: str) -> tuple[list[int], list[int]]:
    """Times of ARP requests / neighbour solicitations for `target` leaving `iface`, and of answers
    (ARP replies / neighbour advertisements) for it anywhere in the capture."""
    ip = ipaddress.ip_address(target)
    asks, answers = [], []
    for raw in read_packets(path):
        d = raw.data
        ethertype = struct.unpack_from("!H", d, 12)[0]
        if ethertype == 0x0806 and ip.version == 4:
            op = struct.unpack_from("!H", d, 20)[0]
            if op == 1 and d[38:42] == ip.packed and raw.iface_name == iface and raw.direction == "out":
                asks.append(raw.ts_ns)
            if op == 2 and d[28:32] == ip.packed:
                answers.append(raw.ts_ns)
        elif ethertype == 0x86DD and ip.version == 6 and d[20] == 58:
            icmp_type = d[54]
            if icmp_type == 135 and d[62:78] == ip.packed and raw.iface_name == iface and raw.direction == "out":
                asks.append(raw.ts_ns)
            if icmp_type == 136 and d[62:78] == ip.packed:
                answers.append(raw.ts_ns)
    return asks, answers


def test_blackhole_through_the_router(testbed, capture, family, programs, nothing_left):
    resolver_if = testbed.router.interface("server").name
    _tune_neighbours(testbed.router, resolver_if, family)
    target = testbed.server.addr(family)
    fault = Blackhole(target)
    with inject(testbed.server, fault):
        calls = run_client(testbed, programs, family)
    nothing_left.check()
    (neigh,) = fault.report["neighbours"]
    assert (neigh["host"], neigh["dev"], neigh["family"]) == ("router", resolver_if, family)
    assert (neigh["retrans_time_ms"], neigh["mcast_solicit"]) == (NEIGH["retrans_time_ms"], NEIGH["mcast_solicit"])
    connect = find(calls, "connect")
    conn = capture.trace().find(dport=PORT)[0]
    s = story(conn, capture)
    # The SYN never reached the server; the router answered with host unreachable, from its address
    # on the client's link, quoting the SYN.
    assert not conn.at("server:s0") and not conn.select("SYN", iface="router:r1"), s
    (icmp,) = [e for e in conn.icmp_events() if e.iface == "router:r0"][:1]
    assert (icmp.icmp_type, icmp.icmp_code) == ((3, 1) if family == 4 else (1, 3)), s
    assert icmp.icmp_from == testbed.router.interface("client").addresses[family] and icmp.quoted_seq == 0, s
    # The router asked mcast_solicit times, retrans_time apart; nobody answered.
    asks, answers = _solicitations(capture.path, "router:r1", target)
    assert len(asks) == neigh["mcast_solicit"] + neigh["app_solicit"] * 0 and not answers, (asks, answers)
    key = "arp_dropped" if family == 4 else "nd_dropped"
    assert fault.report[key] >= len(asks), fault.report
    # Timing: from the first SYN at the router, probe by probe, to the ICMP: the model's resolution time.
    first_syn = conn.select("SYN", iface="router:r0")[0]
    _check_resolution(neigh, first_syn.ts_ns, asks, icmp.ts_ns, "the ICMP error at the router", woken=False, story=s)
    # The client: EHOSTUNREACH, on that ICMP.
    assert (connect.ret, connect.errno) == (-1, "EHOSTUNREACH"), s
    arrived = next(e for e in conn.icmp_events() if e.iface == "client:c0")
    assert arrived.ts_ns <= connect.t_return_ns < arrived.ts_ns + AT_ONCE_NS, s


@pytest.mark.topology("pair")
def test_blackhole_on_the_same_link(testbed, capture, family, programs, nothing_left):
    resolver_if = testbed.client.interface("server").name
    _tune_neighbours(testbed.client, resolver_if, family)
    target = testbed.server.addr(family)
    fault = Blackhole()
    with inject(testbed.server, fault):
        calls = run_client(testbed, programs, family)
    nothing_left.check()
    neigh = next(n for n in fault.report["neighbours"] if n["family"] == family)
    assert neigh["host"] == "client"
    connect = find(calls, "connect")
    trace = capture.trace()
    # The SYN never left the client: it waited for a link-layer address that never came.
    assert not [c for c in trace.find(dport=PORT) if c.at("client:c0")], trace.summary()
    asks, answers = _solicitations(capture.path, "client:c0", target)
    assert len(asks) == neigh["mcast_solicit"] and not answers, (asks, answers)
    assert (connect.ret, connect.errno) == (-1, "EHOSTUNREACH"), calls
    # The first probe left when the client's connect() sent its SYN into the neighbour queue.
    _check_resolution(neigh, connect.t_enter_ns, asks, connect.t_return_ns, "connect() failing",
                      woken=True)


def test_blackhole_refuses_an_address_of_another_host(testbed):
    with pytest.raises(FaultError, match="not an address of server"):
        with inject(testbed.server, Blackhole(testbed.client.addr(4))):
            pass


# -- delay --------------------------------------------------------------------------------------

def _handshake_rtt(conn) -> int:
    return conn.first("SYN-ACK", "s>c").ts_ns - conn.first("SYN", "c>s").ts_ns


def test_delay_line_at_the_router_adds_its_delay_to_the_handshake(testbed, capture, family, programs,
                                                                   nothing_left):
    delay_ms = 100
    server = start_server(testbed, programs, family, "--accept", "2")
    baseline = run_client(testbed, programs, family, port=PORT)
    fault = Delay(delay_ms, Match(dport=PORT), method="agent")
    with inject(testbed.router, fault):
        delayed = run_client(testbed, programs, family, port=PORT)
        server.wait(5)  # the client's last segments (ACK, FIN) are through the delay line too
    nothing_left.check()
    conns = sorted(capture.trace().find(dport=PORT), key=lambda c: c.first("SYN").ts_ns)
    assert len(conns) == 2
    base, slow = conns
    s = story(slow, capture)
    # The handshake's RTT grew by the delay: never less, and late by at most the agent's wake-up.
    assert_on_time(_handshake_rtt(slow) - _handshake_rtt(base), delay_ms * 1_000_000, AGENT_TOLERANCE,
                   "growth of the handshake's RTT", never_early=True, story=s)
    # Each client->server segment left the router delay_ms after it arrived, and only those.
    for e_in in slow.select(direction="c>s", iface="router:r0"):
        (e_out,) = [e for e in slow.select(direction="c>s", iface="router:r1") if e.seq_abs == e_in.seq_abs
                    and e.kind == e_in.kind]
        assert_on_time(e_out.ts_ns - e_in.ts_ns, delay_ms * 1_000_000, AGENT_TOLERANCE,
                       f"{e_in.kind} through the delay line", never_early=True, story=s)
    for e_in in slow.select(direction="s>c", iface="router:r1"):
        (e_out,) = [e for e in slow.select(direction="s>c", iface="router:r0") if e.seq_abs == e_in.seq_abs
                    and e.kind == e_in.kind]
        assert_on_time(e_out.ts_ns - e_in.ts_ns, 0, AGENT_TOLERANCE, f"{e_in.kind} the other way (not delayed)",
                       story=s)
    # The delayed SYN is the frame the kernel would have forwarded: the same MACs and TTL as the
    # baseline's kernel-forwarded SYN, TTL / hop limit one less than it arrived with, valid checksums.
    raw = frames(capture.path)
    for_slow = raw[slow.select("SYN", iface="router:r1")[0].packet_index]
    for_base = raw[base.select("SYN", iface="router:r1")[0].packet_index]
    arrived = raw[slow.select("SYN", iface="router:r0")[0].packet_index]
    assert for_slow[:12] == for_base[:12], "MAC addresses differ from kernel forwarding"
    ttl = 8 if family == 4 else 7
    assert ip_packet(for_slow)[ttl] == ip_packet(for_base)[ttl] == ip_packet(arrived)[ttl] - 1
    if family == 4:
        assert internet_checksum(ip_packet(for_slow)[:20]) == 0
    assert tcp_checksum_ok(ip_packet(for_slow))
    # The client saw a slower connect(), and a successful one.
    connect = find(delayed, "connect")
    assert (connect.ret, connect.errno, find(baseline, "connect").ret) == (0, None, 0)
    assert connect.t_return_ns - connect.t_enter_ns >= delay_ms * 1_000_000
    r = fault.report
    n = len(slow.select(direction="c>s", iface="router:r0"))
    assert (r["method"], r["matched"], r["dropped"], r["delayed"], r["sent"]) == ("agent", n, n, n, n), r
    assert json.loads(json.dumps(r)) == r


@pytest.mark.families(6)
def test_delay_line_is_bounded_by_its_packet_count(testbed, capture, family, programs, nothing_left):
    delay_ms = 50
    server = start_server(testbed, programs, family, "--accept", "1")
    fault = Delay(delay_ms, Match(dport=PORT), method="agent", max_packets=1)
    with inject(testbed.router, fault):
        calls = run_client(testbed, programs, family)
        server.wait(5)
    nothing_left.check()
    (conn,) = capture.trace().find(dport=PORT)
    s = story(conn, capture)
    lateness = []
    for e_in in conn.select(direction="c>s", iface="router:r0"):
        (e_out,) = [e for e in conn.select(direction="c>s", iface="router:r1") if e.seq_abs == e_in.seq_abs
                    and e.kind == e_in.kind]
        lateness.append(e_out.ts_ns - e_in.ts_ns)
    # The first match (the SYN) waited; every later one went through the kernel at once.
    assert_on_time(lateness[0], delay_ms * 1_000_000, AGENT_TOLERANCE, "the SYN through the delay line",
                   never_early=True, story=s)
    assert len(lateness) >= 3, s
    for late in lateness[1:]:
        assert_on_time(late, 0, AGENT_TOLERANCE, "a match past max_packets (not delayed)", story=s)
    r = fault.report
    assert (r["matched"], r["dropped"], r["delayed"], r["seen"]) == (len(lateness), 1, 1, 1), r
    assert find(calls, "connect").ret == 0


def test_delay_with_netem_or_a_clear_error(testbed, family, programs, nothing_left):
    has_netem, message = qdisc_available(testbed.router, "netem", "delay", "1ms")
    if has_netem:  # pragma: no cover - this machine's kernel has no netem
        server = start_server(testbed, programs, family, "--accept", "1")
        with inject(testbed.router, Delay(50, Match(dport=PORT), method="netem")) as fault:
            calls = run_client(testbed, programs, family)
        server.wait(5)
        connect = find(calls, "connect")
        assert connect.ret == 0 and connect.t_return_ns - connect.t_enter_ns >= 50_000_000
        assert fault.report["method"] == "netem"
    else:
        assert "unknown" in message, message
        with pytest.raises(FaultError, match="no netem") as err:
            with inject(testbed.router, Delay(50, Match(dport=PORT), method="netem")):
                pass
        assert message in str(err.value)
    # The delay line forwards: it cannot serve an end host.
    with pytest.raises(FaultError, match="does not forward"):
        with inject(testbed.client, Delay(50, method="agent")):
            pass
    nothing_left.check()


# -- SYN flood ----------------------------------------------------------------------------------

BACKLOG = 4


@pytest.mark.parametrize("fam,cookies", [(4, 1), (4, 0), (6, 1)], ids=["ipv4-cookies", "ipv4-no-cookies",
                                                                      "ipv6-cookies"])
def test_syn_flood_fills_the_syn_queue(testbed, capture, fam, cookies, programs, nothing_left):
    family = fam
    testbed.server.sysctl("net.ipv4.tcp_syncookies", cookies)
    server = start_server(testbed, programs, family, "--accept", "1", "--backlog", str(BACKLOG))
    count = 60
    fault = SynFlood(testbed.server.addr(family), PORT, count=count, rate_pps=3000, seed=family)
    # SYN-ACKs to the spoofed sources die silently at the router: the half-open entries stay.
    flood.blackhole(testbed.router, fault.sources or flood.DEFAULT_SOURCES[family])
    with inject(testbed.client, fault):
        fault.wait()
    before = netstat(testbed.server, "SyncookiesSent", "SyncookiesRecv")
    calls = run_client(testbed, programs, family, "--syncnt", "1")
    after = netstat(testbed.server, "SyncookiesSent", "SyncookiesRecv")
    if cookies:
        server.wait(5)
    else:
        server.stop()
    nothing_left.check()
    r = fault.report
    assert (r["fault"], r["sent"], r["requested"], r["stopped_by"]) == ("syn-flood", count, count, "count"), r
    trace = capture.trace()
    spoofed = ipaddress.ip_network(r["sources"])
    flood_conns = [c for c in trace.find(dport=PORT) if ipaddress.ip_address(c.client[0]) in spoofed]
    assert len(flood_conns) == count and all(c.select("SYN", iface="server:s0") for c in flood_conns)
    (conn,) = [c for c in trace.find(dport=PORT) if c.client[0] == testbed.client.addr(family)]
    connect = find(calls, "connect")
    s = story(conn, capture)
    if cookies:
        # The SYN queue is full, so the client's SYN-ACK is a cookie, and the cookie brings it in.
        assert (connect.ret, connect.errno) == (0, None), s
        assert (after["SyncookiesSent"] - before["SyncookiesSent"],
                after["SyncookiesRecv"] - before["SyncookiesRecv"]) == (1, 1), (before, after)
    else:
        # No cookies: the client's SYNs are dropped at the full queue, unanswered, until ETIMEDOUT.
        assert (connect.ret, connect.errno) == (-1, "ETIMEDOUT"), s
        assert conn.select("SYN", iface="server:s0") and not conn.select("SYN-ACK"), s


# -- every kind: the command line's constructors, and the refusals --------------------------------

CLI_EXAMPLES = {
    "drop": dict(flags="syn", dport="5000", first="2"),
    "reject": dict(dport="5000", code="port-unreachable"),
    "icmp-unreachable": dict(code="frag-needed", dport="5000", nth="2", delay_ms="50", mtu="1280"),
    "rst": dict(to="192.0.2.2", dport="5000", at="in-window"),
    "segment": dict(dst="203.0.113.2", dport="5000", flags="A", ack="12345"),
    "blackhole": dict(address="203.0.113.2"),
    "delay": dict(delay_ms="100", dport="5000", src="192.0.2.2,2001:db8:1::2"),
    "syn-flood": dict(dst="203.0.113.2", dport="5000", count="100", rate_pps="1000"),
    "kernel-rst-drop": dict(sport="40123", duration_s="30"),
}


def test_every_kind_builds_from_command_line_options():
    assert set(CLI_EXAMPLES) == set(FAULT_KINDS)
    for kind, options in CLI_EXAMPLES.items():
        fault = from_cli(kind, **options)
        assert isinstance(fault, FAULT_KINDS[kind]) and fault.kind == kind
        line = fault.describe()
        assert line and "\n" not in line, (kind, line)
        assert FAULT_KINDS[kind].__doc__ and "from_cli" in FAULT_KINDS[kind].__doc__
    assert "first 2" in from_cli("drop", **CLI_EXAMPLES["drop"]).describe()
    with pytest.raises(FaultError, match="unknown fault"):
        from_cli("meteor")
    with pytest.raises(FaultError, match="at most one"):
        from_cli("drop", first="1", nth="2")
    with pytest.raises(FaultError, match="probability"):
        from_cli("drop", probability="1.5")
    with pytest.raises(FaultError, match="unknown RST position"):
        from_cli("rst", to="192.0.2.2", at="sideways")
    with pytest.raises(FaultError, match="documentation"):
        from_cli("syn-flood", dst="10.0.0.1", dport="80")
    with pytest.raises(FaultError, match="not an IP address"):
        from_cli("drop", src="client")


def _sample(option) -> str:
    """A value the option takes: its host name for an address, else the first candidate it accepts."""
    if option.address:
        return "server"
    low = [] if option.low is None else [str(option.low + 1 if option.low_open else option.low)]
    for text in [str(c) for c in option.choices or ()] + ["7", "1", "host", "A", "0.5"] + low:
        try:
            option.check(text)
            return text
        except FaultError:
            continue
    raise AssertionError(f"no sample value for {option.name}")


def test_every_declared_option_is_a_command_line_flag():
    """Each option is a flag whose value argparse converts and checks as the kind's Option does (one
    option of each exclusive group at a time)."""
    from verifier.cli import build_parser

    parser = build_parser()
    for kind, cls in FAULT_KINDS.items():
        flags = [o for o in cls.options if o.flag]
        grouped = {name for group in cls.exclusive for name in group}
        for round_ in range(max((len(g) for g in cls.exclusive), default=1)):
            chosen = {group[min(round_, len(group) - 1)] for group in cls.exclusive}
            given = [o for o in flags if o.name not in grouped or o.name in chosen]
            argv = ["inject", kind, "bed"] + [a for o in given for a in ([o.flag_name] if o.type is bool
                                                                         else [o.flag_name, _sample(o)])]
            args = parser.parse_args(argv)
            assert args.kind == kind and args.func.__name__ == "cmd_inject"
            assert {o.name: getattr(args, o.name) for o in given} == {
                o.name: True if o.type is bool else _sample(o) if o.address else o.check(_sample(o))
                for o in given}, kind


def test_a_new_kind_is_one_class_that_the_registries_and_the_command_line_find():
    from verifier.cli import build_parser
    from verifier.faults import Fault, Option
    from verifier.faults.arm import ARM_KINDS, Arm

    class Nop(Fault, kind="test-nop"):
        """Does nothing: a kind defined here to see what its declaration alone gives it."""

        options = (Option("level", int, "how much", low=1, high=3, required=True),
                   Option("to", str, "whom", address="one"))

        def __init__(self, level: int, *, to: str | None = None) -> None:
            super().__init__()
            self.level = self._checked("level", level)
            self.to = to

    class NopArm(Arm, kind="test-nop"):
        ops = ("poke",)

        def op_poke(self, agent, req):
            return {}

    try:
        assert FAULT_KINDS["test-nop"] is Nop and ARM_KINDS["test-nop"] is NopArm
        assert "level --level: how much (in [1, 3]; required)" in Nop.__doc__
        args = build_parser().parse_args(["inject", "test-nop", "bed", "--level", "2", "--to", "server"])
        assert (args.kind, args.level, args.to) == ("test-nop", 2, "server")  # converted while parsing
        assert from_cli("test-nop", level="2", to="x").level == 2 and not Nop.acts_once()
        with pytest.raises(FaultError, match=r"level must lie in \[1, 3\], got 4"):
            from_cli("test-nop", level="4")
        with pytest.raises(FaultError, match=r"level must lie in \[1, 3\], got 0"):
            Nop(0)  # the constructor checks the same declared limits
        with pytest.raises(FaultError, match="test-nop needs --level"):
            from_cli("test-nop")
        with pytest.raises(TypeError, match="taken"):
            type("Again", (Fault,), {"__init__": Nop.__init__}, kind="test-nop")
        with pytest.raises(TypeError, match="not arguments of its constructor"):
            type("Stray", (Fault,), {"options": (Option("nowhere", int),)}, kind="test-stray")
    finally:
        FAULT_KINDS.pop("test-nop", None)
        ARM_KINDS.pop("test-nop", None)
    assert "test-stray" not in FAULT_KINDS


def test_match_between_hosts_covers_both_families(root):
    from netns import Testbed

    with Testbed("routed", "dual") as bed:
        m = Match.between(bed.client, bed.server, flags="syn")
        variants = m.nft_variants()
        assert len(variants) == 2
        assert "ip saddr 192.0.2.2 ip daddr 203.0.113.2" in variants[0]
        assert "ip6 saddr 2001:db8:1::2 ip6 daddr 2001:db8:2::2" in variants[1]
        assert Match.between(bed.client, bed.server, 6).families() == [6]


def test_a_host_outside_a_testbed_is_refused():
    from types import SimpleNamespace

    outsider = SimpleNamespace(name="laptop", netns="not-a-testbed", interfaces=[])
    for fault in (Drop(Syn()), Blackhole(), Delay(10), Segment("203.0.113.2", 5000),
                  Rst(Match(dport=5000), to="192.0.2.2"), SynFlood("203.0.113.2", 5000, count=1, rate_pps=1)):
        with pytest.raises(FaultError, match="not a host of a live testbed"):
            with inject(outsider, fault):
                pass
