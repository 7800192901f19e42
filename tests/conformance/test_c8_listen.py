"""C8: listen() and its two queues, on the routed testbed, IPv4 and IPv6.

The notes (after Stevens, 4.4BSD): listen() makes the socket passive; the kernel keeps an incomplete
queue (SYN received, handshake pending) and a completed queue (waiting for accept()); `backlog`
bounds the two together (4.4BSD: 1.5 x backlog); a SYN flood fills the incomplete queue.

What Linux does instead, as these tests measure it, with the limits derived from the namespace's
sysctls and the kernel source:

* The accept (completed) queue is bounded alone, by min(backlog, net.core.somaxconn) + 1.
  include/net/sock.h: `sk_acceptq_is_full(sk)` is `sk_ack_backlog > sk_max_ack_backlog` (a
  deliberate ">", commit 64a146513f8f), so one more than the backlog fits. A SYN that arrives while
  it is full is dropped (net/ipv4/tcp_input.c `tcp_conn_request`: ListenOverflows, no answer). An
  ACK that completes a handshake while it is full (`tcp_v4_syn_recv_sock` -> `listen_overflow` in
  tcp_check_req) is dropped and the request stays, so the SYN-ACK is retransmitted, unless
  net.ipv4.tcp_abort_on_overflow=1, which answers that ACK with RST.
* The SYN (incomplete) queue is counted per listener: `inet_csk_reqsk_queue_is_full` compares the
  number of requests with the same max_ack_backlog (">" since Linux 6.14, ">=" before: 6.18 keeps 9
  requests for backlog 8). When it is
  full, a SYN is answered with a SYN cookie if net.ipv4.tcp_syncookies is on, else dropped
  (TCPReqQFullDoCookies / TCPReqQFullDrop). Without cookies, net.ipv4.tcp_max_syn_backlog adds a
  second limit: a SYN is dropped when fewer than a quarter of tcp_max_syn_backlog slots are left
  (`max_syn_backlog - qlen < max_syn_backlog >> 2`), unless the peer is "proven" (tcp_metrics).
"""

from __future__ import annotations

import platform
import random
import re
import signal
import time
from dataclasses import dataclass

import pytest

from netns import namespace, waiting
from verifier.analysis.calls import parse_report
from verifier.faults import Drop, Match, inject
from verifier.faults.flood import background_syn_flood, blackhole, relax_rp_filter

from ..kernel import TOLERANCE, kernel_version
from .conftest import (PORT, Run, at_once_ns, finish, initial_rto_ns, kernel_counters, run_client, start_client,
                       start_server, stop, story, wait_stopped)

# A request sock's first SYN-ACK retransmission comes one initial RTO after the SYN-ACK (tcp_conn_request
# arms its timer with tcp_timeout_init(), the value a fresh connection's tcpi_rto shows: measured on the
# server with `initial_rto_ns`), and each later one twice the previous gap (reqsk_timeout). Gaps are
# checked with the suite's one timer tolerance (TOLERANCE).
HOLD_MS = "15000"  # connected clients keep their sockets open; teardown ends them


# -- reading the server's kernel state -----------------------------------------------------------
def delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after[f"TcpExt.{name}"] - before[f"TcpExt.{name}"]


@dataclass
class Queues:
    """A listener's queues as /proc/net/tcp{,6} shows them inside the namespace."""

    accept: int  # rx_queue of the LISTEN socket: sk_ack_backlog, connections waiting for accept()
    requests: dict[int, int]  # SYN-RECV request socks: client port -> SYN-ACK retransmissions so far


def queues(host, port: int) -> Queues:
    accept, requests = -1, {}
    with namespace.inside(host.netns):
        for table in ("tcp", "tcp6"):
            with open(f"/proc/thread-self/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) != port:
                        continue
                    if parts[3] == "0A":  # LISTEN
                        accept = int(parts[4].split(":")[1], 16)
                    elif parts[3] == "03":  # SYN_RECV: a request sock; column 7 is its num_timeout
                        requests[int(parts[2].rsplit(":", 1)[1], 16)] = int(parts[6], 16)
    return Queues(accept, requests)


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` (bounded) until it returns something true; fail with `what` on timeout."""
    return waiting.wait_until(predicate, timeout,
                              lambda: AssertionError(f"timed out after {timeout} s waiting for {what}"))


# "tcp/dccp: allow a connection when sk_max_ack_backlog is zero" changed the SYN queue's full test
# from ">=" to ">": in mainline from 6.13, and in these stable series from the sublevel given (the first
# stable update listing it in Debian's changelogs of 6.1.192 and 6.12.117). A series older than 6.13
# that is not listed here is not known either way.
SYN_QUEUE_GT_SINCE = (6, 13)
SYN_QUEUE_GT_BACKPORTS = {(6, 12): 10, (6, 1): 125}


def syn_queue_full_is_gt(version: tuple[int, int, int]) -> bool | None:
    """Whether this kernel's inet_csk_reqsk_queue_is_full() compares with ">" (True), ">=" (False), or
    None: not known for this version."""
    if version[:2] >= SYN_QUEUE_GT_SINCE:
        return True
    since = SYN_QUEUE_GT_BACKPORTS.get(version[:2])
    return None if since is None else version[2] >= since


def accept_queue_limit(backlog: int, somaxconn: int) -> int:
    """Completed connections a listener holds: listen() clamps backlog to somaxconn, and
    sk_acceptq_is_full() is `sk_ack_backlog > sk_max_ack_backlog`, so one more fits."""
    return min(backlog, somaxconn) + 1


def syn_queue_limit(backlog: int, somaxconn: int, max_syn_backlog: int, syncookies: int) -> int:
    """Half-open requests a listener keeps before it answers with cookies or drops SYNs.

    inet_csk_reqsk_queue_is_full() compares the request count with max_ack_backlog = min(backlog,
    somaxconn): with ">" since the 2025 commit "tcp/dccp: allow a connection when
    sk_max_ack_backlog is zero" (see `syn_queue_full_is_gt`), so one more fits; with ">=" before. Without cookies,
    tcp_conn_request() also drops a SYN from an unproven peer when `max_syn_backlog - qlen <
    max_syn_backlog >> 2`, i.e. admits one only while qlen <= max_syn_backlog - max_syn_backlog // 4.
    """
    max_ack_backlog = min(backlog, somaxconn)
    gt = syn_queue_full_is_gt(kernel_version())
    if gt is None:
        pytest.skip(f"whether Linux {'.'.join(map(str, kernel_version()))} has the SYN queue's '>' test is not "
                    f"known: add its stable series to SYN_QUEUE_GT_BACKPORTS")
    by_backlog = max_ack_backlog + 1 if gt else max_ack_backlog
    if syncookies:
        return by_backlog
    return min(by_backlog, max_syn_backlog - (max_syn_backlog >> 2) + 1)


# -- programs ------------------------------------------------------------------------------------
def connected(proc) -> Run:
    """Wait (bounded) until the client connected and reported its names; it then holds the socket open."""
    text = proc.wait_output(lambda t: '"getpeername"' in t, timeout=5, what="connect() and getpeername()")
    return Run(0, parse_report(text), "")


def port_outside_ephemeral_range(host) -> int:
    """A client port the kernel would never pick for another connect() in this namespace."""
    lo, hi = (int(x) for x in host.sysctl("net.ipv4.ip_local_port_range").split())
    return random.randrange(max(1024, lo - 2000), lo) if lo > 1100 else random.randrange(hi + 1, 65536)


def bind_arg(host, family, port) -> str:
    addr = host.addr(family)
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


# -- the handshake needs no accept() -------------------------------------------------------------
@pytest.mark.claim("C8")
def test_c8_kernel_completes_the_handshake_without_accept(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "0")
    client = run_client(testbed, programs, family, "--hold-ms", "0", timeout=10)
    # connect() returned once the ACK left; poll (bounded) until the server's kernel has queued it.
    waiting = wait_until(lambda: (q := queues(testbed.server, PORT)).accept >= 1 and q, 1.0, "a queued connection")
    stopped_ns = time.time_ns()
    served = stop(server)
    conn_call = client.call("connect")
    trace = capture.trace()
    conns = trace.find(dport=PORT, family=family)
    assert len(conns) == 1, trace.summary()
    conn = conns[0]
    why = story(conn, capture, ladders=conns, client=client.calls)
    # The server process listened and never called accept() ...
    assert served.call("listen").ret == 0 and not [c for c in served.calls if c.call == "accept"], why
    # ... yet its kernel answered the SYN and completed the handshake, and connect() returned 0.
    assert [e.kind for e in conn.at("server:s0")][:3] == ["SYN", "SYN-ACK", "ACK"], why
    syn, synack, ack = conn.first("SYN", "c>s"), conn.first("SYN-ACK", "s>c"), conn.first("ACK", "c>s")
    assert (conn_call.ret, conn_call.errno) == (0, None), why
    assert syn.ts_ns < synack.ts_ns < ack.ts_ns <= conn_call.t_return_ns, why
    # No reset while the server ran. (Closing the listener later resets what it never accepted.)
    assert not [e for e in conn.all_events() if e.kind == "RST" and e.ts_ns < stopped_ns], why
    # The completed connection sat in the accept queue: the listener's Recv-Q counted it.
    assert waiting.accept == 1, waiting
    evidence.record(
        f"no accept() call; SYN, SYN-ACK {(synack.ts_ns - syn.ts_ns) / 1e3:.0f} us later, ACK; connect() = 0; "
        f"the connection waited in the accept queue (listener Recv-Q {waiting.accept})",
        stevens=True, why="the kernel, not accept(), completes the handshake and queues the connection")


# -- the accept queue overflows ------------------------------------------------------------------
@pytest.mark.claim("C8")
@pytest.mark.parametrize("abort_on_overflow", [0, 1], ids=["abort0", "abort1"])
def test_c8_accept_queue_overflow(testbed, capture, family, programs, evidence, abort_on_overflow):
    srv = testbed.server
    srv.sysctl("net.ipv4.tcp_abort_on_overflow", abort_on_overflow)
    backlog = 2
    somaxconn = int(srv.sysctl("net.core.somaxconn"))
    limit = accept_queue_limit(backlog, somaxconn)
    synack_retries = int(srv.sysctl("net.ipv4.tcp_synack_retries"))
    assert synack_retries >= 2, "this check needs two SYN-ACK retransmissions"
    rto_ns = initial_rto_ns(srv, family, testbed.client.addr(family))  # times the request's SYN-ACKs too
    rto_s = rto_ns / 1e9
    server = start_server(testbed, programs, family, "--accept", "0", "--backlog", str(backlog))
    before, client_before = kernel_counters(srv), kernel_counters(testbed.client)

    # 1. limit - 1 clients connect; the never-accepting server queues them. The filler of step 3 is
    #    started now and stops itself before its connect(): it must complete within the late client's
    #    first SYN-ACK retransmission (one initial RTO), and a program start can take longer than that
    #    on a slow machine (an emulated guest).
    first = [connected(start_client(testbed, programs, family, "--hold-ms", HOLD_MS)) for _ in range(limit - 1)]
    filler_proc = start_client(testbed, programs, family, "--hold-ms", HOLD_MS, "--stop-before-connect")
    wait_stopped(filler_proc)
    # 2. The late client: its SYN fits (the queue is not full yet), but its handshake ACK is lost on
    #    the way (dropped at the router), so the server keeps it as a request in SYN-RECV. Only that
    #    first ACK: its answers to the retransmitted SYN-ACKs pass, however long the block lasts.
    late_port = port_outside_ephemeral_range(testbed.client)
    with inject(testbed.router, Drop(Match(flags="ack", sport=late_port, dport=PORT), first=1)) as lost:
        late_proc = start_client(testbed, programs, family, "--bind", bind_arg(testbed.client, family, late_port),
                                 "--hold-ms", HOLD_MS)
        late = connected(late_proc)
        # 3. One more client completes and fills the accept queue (looked at before the late client's
        #    ACK to the retransmitted SYN-ACK can come, one RTO after its SYN).
        filler_proc.signal(signal.SIGCONT)
        filler = connected(filler_proc)
        full = wait_until(lambda: (q := queues(srv, PORT)).accept >= limit and q, 1.0, f"{limit} queued connections")
    evidence.attach("accept_queue", {"backlog": backlog, "somaxconn": somaxconn, "held": full.accept,
                                     "model": limit})  # for the report's plot of the queue limit
    # 4. A client that comes while the queue is full (TCP_SYNCNT 1 keeps its wait to ~3 s).
    extra_proc = start_client(testbed, programs, family, "--syncnt", "1")

    def extra_syns():  # the extra client's SYNs so far: the first plus its retransmissions
        return 1 + delta(client_before, kernel_counters(testbed.client), "TCPSynRetrans")

    if abort_on_overflow:
        # The late client's ACK to the retransmitted SYN-ACK meets the full queue: RST, request gone.
        wait_until(lambda: late_port not in queues(srv, PORT).requests, 3 * rto_s, "the late request to go")
        wait_until(lambda: extra_syns() >= 2, 3 * rto_s, "the extra client's retransmitted SYN")
        extra = stop(extra_proc)
    else:
        extra = finish(extra_proc)
        # Wait for the second SYN-ACK retransmission and the late client's ACK to it to be dropped.
        wait_until(lambda: queues(srv, PORT).requests.get(late_port, 0) >= 2, 5 * rto_s,
                   "the second SYN-ACK retransmission")
        wait_until(lambda: delta(before, kernel_counters(srv), "ListenOverflows") >= extra_syns() + 2,
                   2 * rto_s, "the server to drop the late client's second ACK")
    end = queues(srv, PORT)
    after = kernel_counters(srv)
    stopped_ns = time.time_ns()
    stop(server)  # closing the listener resets the connections it never accepted: look before that
    trace = capture.trace()

    def running(events):
        return [e for e in events if e.ts_ns < stopped_ns]

    conns = {c.client[1]: c for c in trace.find(dport=PORT, family=family)}
    assert len(conns) == limit + 2, trace.summary()
    late_conn = conns[late_port]
    queued = [conns[r.call("getsockname", -1).port] for r in first + [filler]]
    extra_conn = next(c for c in conns.values() if c is not late_conn and c not in queued)
    why = story(late_conn, capture, ladders=[late_conn, extra_conn], **{"late client": late.calls})

    # The queue holds exactly min(backlog, somaxconn) + 1 completed connections, plus the request.
    assert full.accept == limit and list(full.requests) == [late_port], (full, why)
    for c, run in zip(queued, first + [filler]):
        assert run.call("connect").ret == 0
        assert [e.kind for e in running(c.at("server:s0"))] == ["SYN", "SYN-ACK", "ACK"], c.ladder("server:s0")
    assert lost.report["dropped"] == 1

    # The late client: connect() returned 0 on the SYN-ACK, though the server never completed it.
    assert (late.call("connect").ret, late.call("connect").errno) == (0, None), why
    server_side = running(late_conn.at("server:s0"))
    kinds = [(e.kind, e.direction) for e in server_side]
    assert kinds[:2] == [("SYN", "c>s"), ("SYN-ACK", "s>c")], why
    synacks = [e for e in server_side if e.kind == "SYN-ACK"]
    acks = [e for e in server_side if e.kind == "ACK" and e.direction == "c>s"]
    # Each SYN-ACK is the same segment again (seq 0), answered by the client with the same ACK.
    assert all(e.seq == 0 and e.ack == 1 for e in synacks) and all(e.seq == 1 and e.ack == 1 for e in acks), why
    gap1 = (synacks[1].ts_ns - synacks[0].ts_ns) / 1e9
    assert TOLERANCE.fits(gap1, rto_s), (f"first SYN-ACK retransmission after {gap1:.3f} s, initial RTO {rto_s:.3f} s "
                                         f"({TOLERANCE.describe()})" + why)
    overflows = delta(before, after, "ListenOverflows")
    extra_at_server = [e for e in running(extra_conn.at("server:s0")) if e.kind == "SYN"]

    if abort_on_overflow:
        assert len(synacks) == 2 and len(acks) == 1, why
        rst = [e for e in server_side if e.kind == "RST"]
        assert len(rst) == 1 and rst[0].direction == "s>c", why
        # The RST answers that ACK at once, with seq = the ACK's ack (RFC 793 reset generation).
        assert 0 <= rst[0].ts_ns - acks[0].ts_ns < at_once_ns(rto_ns), why
        assert rst[0].seq_abs == acks[0].ack_abs, why
        assert delta(before, after, "EmbryonicRsts") == 1 and late_port not in end.requests
        observed_late = (f"late client's ACK (handshake ACK lost, SYN-ACK retransmitted after {gap1:.2f} s) "
                         f"met the full queue: RST after {(rst[0].ts_ns - acks[0].ts_ns) / 1e3:.0f} us")
    else:
        assert len(synacks) == 3 and len(acks) == 2, why
        assert not [e for e in running(late_conn.all_events()) if e.kind == "RST"], why
        gap2 = (synacks[2].ts_ns - synacks[1].ts_ns) / 1e9
        # The request timer backs off: the second retransmission comes twice the initial RTO later.
        assert TOLERANCE.fits(gap2, 2 * rto_s), (f"second SYN-ACK retransmission after {gap2:.3f} s, twice the "
                                                 f"initial RTO is {2 * rto_s:.3f} s ({TOLERANCE.describe()})" + why)
        assert all(s.ts_ns < a.ts_ns for s, a in zip(synacks[1:], acks)), why
        assert end.requests.get(late_port, 0) >= 2 and end.accept == limit, end
        observed_late = (f"late client's ACKs dropped by the server (no RST): SYN-ACK retransmitted after "
                         f"{gap1:.2f} s and {gap2:.2f} s more, the client still ESTABLISHED with connect() = 0")

    # The client that came while the queue was full: its SYNs reached the server and were ignored.
    assert len(extra_at_server) >= 2, why
    answers = [e for e in running(extra_conn.all_events()) if e.direction == "s>c"]
    assert not answers, extra_conn.ladder(all_interfaces=True)
    if not abort_on_overflow:
        call = extra.call("connect")
        assert (call.ret, call.errno) == (-1, "ETIMEDOUT"), extra.calls
    # The kernel counted every one of those drops as a listen-queue overflow: the extra client's
    # SYNs and the late client's ACKs that reached the server.
    assert overflows == len(extra_at_server) + len(acks), (overflows, len(extra_at_server), len(acks))

    evidence.record(
        f"tcp_abort_on_overflow={abort_on_overflow}, backlog {backlog}: the accept queue held {full.accept} "
        f"(min(backlog, somaxconn {somaxconn}) + 1); a SYN arriving when full was ignored "
        f"({len(extra_at_server)} SYNs, no answer"
        + (", connect() ETIMEDOUT" if not abort_on_overflow else "") + f"); {observed_late}; "
        f"ListenOverflows +{overflows}",
        stevens=False,
        why="4.4BSD drops the SYN too when its queues are full, but bounds both queues together by 1.5 x backlog "
            "and never drops a handshake's ACK; Linux bounds the accept queue alone (backlog + 1), so an ACK can "
            "overflow it: dropped with SYN-ACK retransmissions, or RST with tcp_abort_on_overflow=1")


# -- a SYN flood ---------------------------------------------------------------------------------
FLOOD_RATE = 400.0
# The flood goes on until the real client's connect() has returned (it is stopped then), and the
# count only bounds it: 10 s at the rate, the flood's own limit (verifier.faults.flood.MAX_SECONDS).
FLOOD_MAX = 4000


@pytest.mark.claim("C8")
@pytest.mark.parametrize("syncookies", [1, 0], ids=["cookies", "no-cookies"])
def test_c8_syn_flood(testbed, capture, family, programs, evidence, syncookies):
    srv = testbed.server
    backlog, max_syn_backlog = 8, 8
    srv.sysctl("net.ipv4.tcp_syncookies", syncookies)
    srv.sysctl("net.ipv4.tcp_max_syn_backlog", max_syn_backlog)
    somaxconn = int(srv.sysctl("net.core.somaxconn"))
    requests_limit = syn_queue_limit(backlog, somaxconn, int(srv.sysctl("net.ipv4.tcp_max_syn_backlog")),
                                     int(srv.sysctl("net.ipv4.tcp_syncookies")))
    # The SYN-ACKs to the spoofed sources die silently at the router (see verifier.faults.flood.blackhole):
    # otherwise its ICMP "no route" would make an IPv4 server drop some requests and free slots.
    sources = {4: "198.51.100.0/24", 6: "2001:db8:64::/64"}[family]
    blackhole(testbed.router, sources)
    relax_rp_filter(testbed.router, "client")
    server = start_server(testbed, programs, family, "--accept", "0", "--backlog", str(backlog))
    before = kernel_counters(srv)
    with background_syn_flood(testbed.client, srv.addr(family), PORT, count=FLOOD_MAX, rate_pps=FLOOD_RATE,
                              sources=sources) as flood:
        # The flood fills the SYN queue within a few packets; the real client comes after that, and
        # the flood stops once its connect() has returned, however long the client took to start.
        wait_until(lambda: len(queues(srv, PORT).requests) >= requests_limit, 2.0, "the SYN queue to fill")
        client = run_client(testbed, programs, family, "--syncnt", "1", "--hold-ms", "0", timeout=10)
        during = queues(srv, PORT)
        flood.stop_event.set()
    report = flood.report
    flood_count = report.sent
    after = kernel_counters(srv)
    stop(server)
    trace = capture.trace()

    call = client.call("connect")
    net_conns = trace.find(dport=PORT, family=family)
    real = [c for c in net_conns if c.client[0] == testbed.client.addr(family)]
    spoofed = [c for c in net_conns if c not in real]
    assert len(real) == 1, trace.summary()
    real_conn = real[0]
    why = story(real_conn, capture, ladders=real, client=client.calls)
    assert report.stopped_by == "stop" and report.send_errors == 0, report.describe()
    # The flood primed the path first (verifier.faults.flood.prime_path): the router knows the real client's
    # address, so its SYN-ACKs are not held up by neighbour discovery.
    assert report.path_primed, report.describe()
    # The flood was on while connect() ran.
    assert report.first_ns < call.t_enter_ns < report.last_ns, report.describe()
    flood_syns = sum(1 for c in spoofed for e in c.at("server:s0") if e.kind == "SYN")
    assert flood_syns == flood_count, f"{flood_syns} of {flood_count} flood SYNs reached the server"
    # Requests kept: exactly the derived limit, all from the flood.
    assert len(during.requests) == requests_limit, (during, requests_limit)
    answered = [c for c in spoofed if any(e.kind == "SYN-ACK" for e in c.at("server:s0"))]
    real_syns = [e for e in real_conn.at("server:s0") if e.kind == "SYN"]

    if syncookies:
        # Every spoofed SYN was answered: the first requests_limit from the queue, the rest with cookies.
        assert len(answered) == flood_count
        assert (call.ret, call.errno) == (0, None), why
        assert [e.kind for e in real_conn.at("server:s0")][:3] == ["SYN", "SYN-ACK", "ACK"], why
        cookies_sent = delta(before, after, "SyncookiesSent")
        # The real client's SYN-ACK was a cookie: no request was kept for it (the queue stayed full),
        # and its ACK was the one cookie the server validated.
        assert cookies_sent == flood_count - requests_limit + 1, (cookies_sent, requests_limit)
        assert delta(before, after, "TCPReqQFullDoCookies") == cookies_sent
        assert delta(before, after, "SyncookiesRecv") == 1 and delta(before, after, "SyncookiesFailed") == 0
        assert real_conn.client[1] not in during.requests and during.accept == 1, during
        assert delta(before, after, "ListenDrops") == 0
        observed = (f"flood of {flood_count} spoofed SYNs at {FLOOD_RATE:g}/s, backlog {backlog}: {requests_limit} "
                    f"kept as requests, {cookies_sent - 1} answered with cookies; the real client's "
                    f"connect() = 0 during the flood through a cookie (SyncookiesRecv +1), its connection "
                    f"waiting in the accept queue")
        stevens, because = False, ("4.4BSD has no SYN cookies: a full incomplete queue ignores every SYN; "
                                   "Linux answers statelessly and the real client gets through")
    else:
        dropped = flood_count - requests_limit + len(real_syns)
        assert len(answered) == requests_limit
        assert (call.ret, call.errno) == (-1, "ETIMEDOUT"), why
        assert len(real_syns) >= 2 and not [e for e in real_conn.all_events() if e.direction == "s>c"], why
        assert delta(before, after, "ListenDrops") == dropped
        # Which limit dropped them, derived: the listen backlog's (counted as TCPReqQFullDrop) or the
        # tcp_max_syn_backlog rule's (only ListenDrops).
        by_backlog = syn_queue_limit(backlog, somaxconn, max_syn_backlog, 1)
        full_drops = dropped if requests_limit == by_backlog else 0
        assert delta(before, after, "TCPReqQFullDrop") == full_drops
        assert delta(before, after, "SyncookiesSent") == 0
        binding = (f"the listen backlog {backlog}" if full_drops
                   else f"tcp_max_syn_backlog {max_syn_backlog} with its last quarter kept for proven peers")
        observed = (f"flood of {flood_count} spoofed SYNs at {FLOOD_RATE:g}/s, no cookies: {requests_limit} kept "
                    f"as requests (bound by {binding}), every other SYN dropped, the real client's "
                    f"{len(real_syns)} SYNs "
                    f"too: connect() ETIMEDOUT (ListenDrops +{dropped})")
        stevens, because = True, ("as in the book, the flood fills the incomplete queue and a real SYN is ignored; "
                                  "the limit differs (Linux: per-listener backlog + 1 and tcp_max_syn_backlog's "
                                  "last quarter kept for proven peers, not 1.5 x backlog)")
    evidence.record(observed, stevens=stevens, why=because)
