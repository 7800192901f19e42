"""One model behind every verdict: the same crafted edge cases through every way a user can ask.

For each case, the outcome of each attempt must be the same from: a `Trace` (`load_trace`, what a
live test's `capture.trace()` is), `expect()` on it (`refused()`, `reset_by()`, `handshake()`),
`verifier show --json`, `verifier replay --json`, `verifier replay --expect`, `check()` on the Trace,
and the plain-Python reference engine (`VERIFIER_PURE=1 verifier replay --json`). Each case's outcome
is stated from RFC 9293 (the test names say which rule), not taken from our output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from scapy.all import ICMP, IP, ICMPv6DestUnreach, IPv6

from verifier.analysis.conditions import check
from verifier.analysis.expect import ExpectationFailed, expect
from verifier.analysis.trace import load_trace

from .crafted import C, C6, R, S, S6, handshake, tcp, write

SP, DP = 40000, 5000
IC, IS = 1000, 5000
VERIFIER = os.path.join(os.path.dirname(sys.executable), "verifier")


def _end(t_us: int):
    return ("eth0", t_us, b"\x02" * 12 + b"\x88\xb5" + b"\x00" * 46)  # makes the capture last until t_us


def _syn(t: int = 0, c: str = C, s: str = S):
    return ("eth0", t, tcp(c, s, SP, DP, "S", IC))


CASES = {
    # a RST answering the SYN without the ACK bit: SYN-SENT drops it (3.10.7.3), the attempt times out
    "bare RST to a SYN": ([_syn(), ("eth0", 50, tcp(S, C, DP, SP, "R", 0)), _end(3_000_000)], ["timed-out"]),
    # ... with an ACK that is not ISN + 1: dropped too
    "RST/ACK with a wrong ack": ([_syn(), ("eth0", 50, tcp(S, C, DP, SP, "RA", 0, IC + 5)), _end(3_000_000)],
                                 ["timed-out"]),
    # ... with the right ACK: refused
    "RST/ACK of ISN + 1": ([_syn(), ("eth0", 50, tcp(S, C, DP, SP, "RA", 0, IC + 1))], ["refused"]),
    # established, then a RST in the window but not at RCV.NXT: a challenge ACK, no reset (3.10.7.4)
    "in-window RST": (handshake("eth0", 0, SP, DP, IC, IS) + [("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1 + 999))],
                      ["established"]),
    # ... outside the window: dropped silently (3.10.7.4)
    "out-of-window RST": (handshake("eth0", 0, SP, DP, IC, IS)
                          + [("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1 + 500_000))], ["established"]),
    # ... exactly at RCV.NXT: reset (3.10.7.4)
    "exact RST": (handshake("eth0", 0, SP, DP, IC, IS) + [("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1))], ["reset"]),
    # both sides send SYN and SYN-ACK (3.5, figure 8): one connection, established
    "simultaneous open": ([_syn(), ("eth0", 10, tcp(S, C, DP, SP, "S", IS)),
                           ("eth0", 100, tcp(S, C, DP, SP, "SA", IS, IC + 1)),
                           ("eth0", 110, tcp(C, S, SP, DP, "SA", IC, IS + 1)),
                           ("eth0", 200, tcp(C, S, SP, DP, "A", IC + 1, IS + 1))], ["established"]),
    # a retransmitted SYN answered late: the second SYN-ACK comes after the handshake and is ignored
    "retransmitted SYN answered late": ([_syn(), _syn(1_000_000), ("eth0", 1_000_100, tcp(S, C, DP, SP, "SA", IS, IC + 1)),
                                         ("eth0", 1_000_200, tcp(C, S, SP, DP, "A", IC + 1, IS + 1)),
                                         ("eth0", 1_000_300, tcp(S, C, DP, SP, "SA", IS, IC + 1))], ["established"]),
    # ICMP host unreachable quoting the SYN, twice (the soft error, then the retransmission's)
    "ICMP quoting the SYN": ([_syn(), ("eth0", 40, IP(src=R, dst=C) / ICMP(type=3, code=1)
                                       / bytes(tcp(C, S, SP, DP, "S", IC))[:28]), _end(3_000_000)], ["unreachable"]),
    "ICMPv6 quoting the SYN": ([_syn(c=C6, s=S6), ("eth0", 40, IPv6(src="2001:db8::fe", dst=C6) / ICMPv6DestUnreach(code=3)
                                                   / bytes(tcp(C6, S6, SP, DP, "S", IC))[:48]), _end(3_000_000)],
                               ["unreachable"]),
    # two attempts on one 4-tuple: a refused one, then (new ISN) an established one
    "refused then established": ([_syn(), ("eth0", 50, tcp(S, C, DP, SP, "RA", 0, IC + 1))]
                                 + handshake("eth0", 2_000_000, SP, DP, IC + 777, IS), ["refused", "established"]),
}


def _run(*args: str, pure: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, VERIFIER_PURE="1") if pure else None
    return subprocess.run([VERIFIER, *args], capture_output=True, text=True, env=env, timeout=60)


def _expect_says(conn, outcome: str) -> str:
    """What expect() concludes about a connection, in the outcome vocabulary."""
    ce = expect_conn(conn)

    def passes(check_) -> bool:
        try:
            check_()
        except ExpectationFailed:
            return False
        return True

    if passes(ce.refused):
        return "refused"
    if passes(lambda: ce.reset_by("server")) or passes(lambda: ce.reset_by("client")):
        return "reset"
    if passes(ce.handshake):
        return "established"
    return outcome if outcome in ("timed-out", "unreachable", "incomplete") else "none of them"


_trace_of = {}


def expect_conn(conn):
    return expect(_trace_of[id(conn)]).connection(sport=conn.c_port, dport=conn.s_port, index=conn.attempt)


@pytest.mark.parametrize("case", list(CASES))
def test_every_reading_agrees(case, tmp_path):
    frames, want = CASES[case]
    path = write(frames, tmp_path / "case.pcapng")
    trace = load_trace(path)
    for c in trace.connections:
        _trace_of[id(c)] = trace
    assert [c.outcome for c in trace.connections] == want, trace.summary()
    assert [_expect_says(c, c.outcome) for c in trace.connections] == want
    for i, (c, outcome) in enumerate(zip(trace.connections, want)):
        (v,) = check(trace, f"id {i} is {outcome}")
        assert v.ok, v.text()
        res = _run("replay", str(path), "--expect", f"id {i} is {outcome}")
        assert res.returncode == 0, res.stdout + res.stderr
        other = "refused" if outcome != "refused" else "established"
        res = _run("replay", str(path), "--expect", f"id {i} is {other}")
        assert res.returncode == 1, res.stdout + res.stderr
    for pure in (False, True):
        res = _run("replay", str(path), "--json", pure=pure)
        assert res.returncode == 0, res.stderr
        assert [json.loads(line)["outcome"] for line in res.stdout.splitlines()] == want, (pure, res.stdout)
        assert ("[python engine]" if pure else "[compiled engine]") in res.stderr
    res = _run("show", str(path), "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["outcome"] for line in res.stdout.splitlines()] == want


def test_the_readings_of_an_ignored_rst_are_both_reported(tmp_path):
    # Zeek calls the bare RST a rejection (REJ), TCP drops it: the JSON keeps both, each with its meaning
    frames, _ = CASES["bare RST to a SYN"]
    res = _run("replay", str(write(frames, tmp_path / "bare.pcapng")), "--json")
    (rec,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert (rec["outcome"], rec["conn_state"], rec["ignored_rsts"]) == ("timed-out", "REJ", 1)
    assert "REJ" in rec["readings_differ"] and "RFC 9293" in rec["readings_differ"]
