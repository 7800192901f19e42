"""Faults while they act, on a real testbed: their counters read live (`status()`), what "only the
Kth match" does to the others, and the expiry every nft rule carries (so a table left behind by a
killed process stops acting by itself)."""

from __future__ import annotations

import calendar
import json
import os
import sys
import time

import pytest

from netns.waiting import wait_until
from verifier.faults import (Blackhole, Delay, Drop, FaultError, IcmpUnreachable, Match, Reject, Syn, SynFlood,
                             inject)
from verifier.faults.base import tag

PORT = 5010  # nothing listens there: a SYN that gets through is answered with RST at once

CONNECT = ("import socket, sys\ns = socket.socket()\ns.settimeout(float(sys.argv[2]))\n"
           "try:\n    s.connect((sys.argv[1], int(sys.argv[3]))); print('connected')\n"
           "except OSError as e:\n    print(type(e).__name__ if not e.errno or isinstance(e, TimeoutError) "
           "else __import__('errno').errorcode[e.errno])")


def attempt(bed, port: int = PORT, timeout: float = 0.5) -> str:
    """One connect() from the client to the server's IPv4 address, given up after `timeout` (0.5 s:
    inside the first retransmission timeout, 1 s, so it is one SYN): how it ended."""
    argv = [sys.executable, "-c", CONNECT, bed.server.addr(4), str(timeout), str(port)]
    return bed.client.run(argv).check().stdout.strip()


def poll(check, timeout: float, what: str):
    """`check()`'s first true value, polled (netns.waiting.wait_until); AssertionError(what) after `timeout`."""
    return wait_until(check, timeout, lambda: AssertionError(f"{what} within {timeout} s"))


# -- counters while the fault acts ----------------------------------------------------------------

def test_a_drop_counts_live_and_nth_drops_exactly_the_kth(testbed):
    fault = Drop(Syn(dport=PORT), nth=2)
    seen = []
    with inject(testbed.router, fault):
        for _ in range(4):
            result = attempt(testbed)
            st = fault.status()
            seen.append((result, st["matched"], st["dropped"]))
    assert seen == [("ECONNREFUSED", 1, 0), ("TimeoutError", 2, 1), ("ECONNREFUSED", 3, 1), ("ECONNREFUSED", 4, 1)]
    assert (fault.report["matched"], fault.report["dropped"]) == (4, 1)
    with pytest.raises(FaultError, match="not applied"):
        fault.status()  # removed: the final counts are in report


def test_icmp_nth_answers_only_the_kth_and_drops_every_match(testbed, capture):
    """Only the Kth match is answered; the others are dropped at the router, silently: none of the
    SYNs reaches the server, and only the Kth attempt ends early, with the ICMP's errno."""
    fault = IcmpUnreachable("host", Syn(dport=PORT), nth=2)
    seen = []
    with inject(testbed.router, fault):
        for i in range(3):
            result = attempt(testbed)
            if i == 1:
                fault.wait_sent(1)
            st = fault.status()
            seen.append((result, st["matched"], st["sent"], st["dropped"]))
    assert seen == [("TimeoutError", 1, 0, 1), ("EHOSTUNREACH", 2, 1, 2), ("TimeoutError", 3, 1, 3)], seen
    trace = capture.trace()
    conns = trace.find(dport=PORT)
    assert len(conns) == 3 and not any(c.select("SYN", iface="server:s0") for c in conns)
    assert [bool(c.icmp_events()) for c in sorted(conns, key=lambda c: c.start_ns)] == [False, True, False]


def test_a_blackhole_counts_live(testbed):
    fault = Blackhole(testbed.server.addr(4))
    with inject(testbed.server, fault):
        assert fault.status()["arp_dropped"] == 0
        attempt(testbed, timeout=0.3)  # the router asks for the server's MAC: ARP requests, dropped
        st = poll(lambda: (s := fault.status())["arp_dropped"] and s, 5, "no ARP request dropped")
    assert st["addresses"] == [testbed.server.addr(4)] and fault.report["arp_dropped"] >= st["arp_dropped"]


def test_a_syn_flood_counts_live(testbed):
    fault = SynFlood(testbed.server.addr(4), PORT, count=200, rate_pps=400)
    with inject(testbed.client, fault):
        running = poll(lambda: (s := fault.status())["running"] and s["sent"] > 0 and s, 5, "no SYN sent")
        assert 0 < running["sent"] < 200  # half a second of flood: caught in the middle
        fault.wait()
        done = fault.status()
    assert (done["running"], done["sent"]) == (False, 200) and fault.report["sent"] == 200


def test_a_delay_counts_live(testbed):
    fault = Delay(20, Match(dport=PORT), method="agent")
    with inject(testbed.router, fault):
        assert attempt(testbed) == "ECONNREFUSED"
        st = fault.status()
    assert st["matched"] >= 1 and st["delayed"] >= 1 and st["method"] == "agent", st


# -- every nft rule that acts carries its expiry -------------------------------------------------

def _our_rules(host) -> list[dict]:
    """The rules of this testbed's tables in the host's namespace (times listed in UTC)."""
    res = host.run(["nft", "-j", "list", "ruleset"], env={**os.environ, "TZ": "UTC"}).check()
    items = json.loads(res.stdout)["nftables"]
    return [i["rule"] for i in items if "rule" in i and i["rule"]["table"].startswith(tag(host) + "_")]


ACTING = {"drop", "reject", "accept", "mangle"}  # verdicts, and `meta priority set` (netem's band)


def _expiry_ns(rule: dict) -> int | None:
    for e in rule["expr"]:
        m = e.get("match")
        if m and m.get("op") == "<" and m.get("left") == {"meta": {"key": "time"}}:
            return calendar.timegm(time.strptime(m["right"], "%Y-%m-%d %H:%M:%S")) * 1_000_000_000
    return None


def _faults(bed):
    return [
        ("router", Drop(Syn(dport=PORT))), ("router", Drop(Syn(dport=PORT), first=2)),
        ("router", Drop(Syn(dport=PORT), nth=3)), ("router", Drop(Syn(dport=PORT), nth=1)),
        ("router", Drop(Match(dport=PORT), probability=0.5, duration_s=7)),
        ("router", Drop(Match.between(bed.client, bed.server, flags="syn"))),  # both families
        ("router", Reject(Syn(dport=PORT), duration_s=3)),
        ("server", Blackhole()), ("server", Blackhole(bed.server.addr(6), duration_s=9)),
        ("router", Delay(10, Match(dport=PORT), method="agent", lifetime_s=5)),
        ("router", IcmpUnreachable("host", Syn(dport=PORT), lifetime_s=4)),
    ]


def test_every_acting_nft_rule_of_every_kind_carries_its_expiry(testbed):
    for where, fault in _faults(testbed):
        host = testbed[where]
        lives = getattr(fault, "duration_s", None) or fault.lifetime_s
        start = time.time_ns()
        with inject(host, fault):
            rules = _our_rules(host)
            acting = [r for r in rules if ACTING & {k for e in r["expr"] for k in e}]
            assert acting, (fault.describe(), rules)
            for r in acting:
                until = _expiry_ns(r)
                assert until is not None, f"{fault.describe()}: a rule without expiry: {r['expr']}"
                # the deadline: its duration from now, rounded up to nft's whole seconds
                assert start + lives * 1e9 <= until <= time.time_ns() + (lives + 1) * 1e9, (fault.describe(), r)
        assert not _our_rules(host), fault.describe()


def test_a_drop_stops_acting_by_its_own_expiry_while_its_table_stays(testbed):
    """What the expiry is for: a table nobody removed (its process was killed) stops dropping."""
    fault = Drop(Syn(dport=PORT), duration_s=1)
    with inject(testbed.router, fault):
        assert attempt(testbed) == "TimeoutError"
        poll(lambda: time.time_ns() > fault.deadline_ns, 5, "the fault's deadline did not pass")
        assert _our_rules(testbed.router), "the table is still there"
        assert attempt(testbed) == "ECONNREFUSED"  # the SYN passed: the server's RST came back
        st = fault.status()
    assert (st["matched"], st["dropped"]) == (2, 1)
