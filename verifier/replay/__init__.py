"""`verifier replay`: classify every TCP connection attempt of a capture, check expectations, re-drive.

    verifier replay FILE [--json] [--expect COND]... [--port N] [--show ID]
    verifier replay FILE --against TESTBED --connection ID [--port P]

Offline (no root): `scan()` of `verifier.replay.fastpath` classifies each attempt (established, refused,
timed-out, unreachable, reset, closed, incomplete) with its SYN count and times and Zeek's
conn_state/history; the result is a table, or JSON Lines with `--json`.

Expectations (`--expect`, or `check()` from Python on a file, a `Trace` or records) use a small
language, documented in `EXPECT_HELP` below, e.g. "every attempt to port 5000 is refused" or
"the SYNs to 203.0.113.2:81 follow the linux schedule with tcp_syn_retries=2".

Re-driving (`redrive()`, root): the client side of one captured connection is sent again, through
Scapy-built frames on an AF_PACKET socket opened inside a testbed's client namespace, to the live
server; addresses and ports are rewritten and acknowledgement numbers mapped onto the live server's
ISN as tcpliveplay does, while an nftables rule drops the client kernel's own RSTs (it has no socket
for the replayed port and would reset the live connection). The server's live answers are compared
with the recorded ones.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import select
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from verifier.analysis.classify import OUTCOMES, ConnectionRecord, classify_trace, icmp_name
from verifier.analysis.schedules import DEFAULT_TOLERANCE, LinuxProfile, StevensProfile, SynSchedule

__all__ = [
    "EXPECT_HELP",
    "Condition",
    "ExpectSyntaxError",
    "RedriveError",
    "RedriveReport",
    "Verdict",
    "add_parser",
    "check",
    "format_table",
    "parse_condition",
    "records_of",
    "redrive",
    "resolve_testbed",
    "run",
]

EXPECT_HELP = """\
expectations (--expect, repeatable; exit status 1 if one fails):
  [QUANTIFIER] [SELECTOR...] PREDICATE
  QUANTIFIER  every (default: all selected attempts, and at least one) | any (at least one) | no (none)
  SELECTOR    [to] HOST | HOST:PORT | [V6ADDR]:PORT | port N     the server side (to is optional)
              from HOST | HOST:PORT                              the client side
              ipv4 | ipv6 | id N
  PREDICATE   [is|are] [not] OUTCOME        established refused timed-out unreachable reset closed
                                            incomplete; "reset by client|server"; "unreachable
                                            type T code C"
              follow(s) [the] linux|stevens [schedule] [with] KEY=VALUE...
                     linux keys: tcp_syn_retries (default 6), tcp_syn_linear_timeouts (default 4),
                     syncnt, rto_init_ms (1000), rto_max_ms (120000); the SYN times are compared
                     with the model (tolerance of verifier.analysis.schedules); a capture has no ETIMEDOUT,
                     so only SYNs are checked, and an answered attempt only up to its answer
              syns N | syn_count N             the number of SYNs (first + retransmissions)
              conn_state S | history H         Zeek's fields
              count N                          the number of selected attempts
  Words like "the", "attempt(s)", "connection(s)", "SYNs", "to" around the selector are optional.
  examples:  "port 5000 refused"     "every attempt to port 5000 is refused"
             "any attempt to 203.0.113.2:5000 is established"    "no attempt to port 22 is reset"
             "the SYNs to 203.0.113.2:81 follow the linux schedule with tcp_syn_retries=2"
             "203.0.113.2:81 follows stevens"    "port 5000 count 2"    "from 192.0.2.2 syns 1"
"""


class ExpectSyntaxError(ValueError):
    """An --expect condition that does not parse; the message says where and what was expected."""


class RedriveError(RuntimeError):
    """A re-drive could not be done (no root, no such connection, no such testbed...)."""


# ==================================================================================================
# Records from anything: a file, a Trace, or records
# ==================================================================================================

def records_of(source, **scan_kw) -> list[ConnectionRecord]:
    """ConnectionRecords of a capture path (fast path), a `verifier.analysis.trace.Trace`, or records."""
    from verifier.analysis.trace import Trace

    if isinstance(source, Trace):
        return classify_trace(source)
    if isinstance(source, (str, os.PathLike)):
        from verifier.replay.fastpath import scan

        return sorted(scan(source, **scan_kw), key=lambda r: r.id)
    return list(source)


# ==================================================================================================
# The expectation language
# ==================================================================================================

_OUTCOME_WORDS = {
    "established": "established", "refused": "refused", "timed-out": "timed-out", "timedout": "timed-out",
    "timeout": "timed-out", "unreachable": "unreachable", "reset": "reset", "closed": "closed",
    "incomplete": "incomplete", "open": "incomplete",
}
_FILLERS = {"the", "a", "an", "attempt", "attempts", "connection", "connections", "syn", "syns", "syn's", "of"}
_SETTING_KEYS = {
    "tcp_syn_retries": "syn_retries", "syn_retries": "syn_retries", "retries": "syn_retries",
    "tcp_syn_linear_timeouts": "linear_timeouts", "linear_timeouts": "linear_timeouts", "linear": "linear_timeouts",
    "syncnt": "syncnt", "tcp_syncnt": "syncnt", "rto_init_ms": "rto_init_ms", "rto_ms": "rto_init_ms",
    "initial_rto_ms": "rto_init_ms", "rto_max_ms": "rto_max_ms", "tcp_rto_max_ms": "rto_max_ms",
}
_LINUX_DEFAULTS = {"syn_retries": 6, "linear_timeouts": 4}  # the kernel's defaults since 6.5


def _endpoint(word: str) -> tuple[str | None, int | None] | None:
    """(host, port) of "192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:80", "2001:db8::1"; None if not one."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", word)
    if m:
        host, port = m.group(1), m.group(2)
    elif word.count(":") == 1:
        host, _, port = word.partition(":")
    else:
        host, port = word, None
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    if port is not None:
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            return None
        return host, int(port)
    return host, None


@dataclass
class Condition:
    """One parsed expectation: which attempts, how many must satisfy, and what."""

    text: str
    quantifier: str = "every"  # every | any | no
    server: tuple[str | None, int | None] = (None, None)
    client: tuple[str | None, int | None] = (None, None)
    family: int | None = None
    id: int | None = None
    predicate: str = ""  # outcome | schedule | syns | conn_state | history | count
    negate: bool = False
    outcome: str | None = None
    reset_by: str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    model: str | None = None
    settings: dict = field(default_factory=dict)
    value: object = None

    def selects(self, r: ConnectionRecord) -> bool:
        host, port = self.server
        if host is not None and r.resp_h != host:
            return False
        if port is not None and r.resp_p != port:
            return False
        host, port = self.client
        if host is not None and r.orig_h != host:
            return False
        if port is not None and r.orig_p != port:
            return False
        if self.family is not None and r.family != self.family:
            return False
        return self.id is None or r.id == self.id

    def describe_selection(self) -> str:
        """Where the selected attempts go, e.g. "to port 5000 from 192.0.2.2" ("" for all)."""
        parts = []
        if self.server != (None, None):
            parts.append("to " + _ep_text(self.server))
        if self.client != (None, None):
            parts.append("from " + _ep_text(self.client))
        if self.family:
            parts.append(f"over IPv{self.family}")
        if self.id is not None:
            parts.append(f"with id {self.id}")
        return " ".join(parts)

    def schedule(self) -> SynSchedule:
        if self.model == "stevens":
            return StevensProfile().schedule()
        kw = dict(_LINUX_DEFAULTS)
        kw.update(self.settings)
        return LinuxProfile(**kw).schedule()


def _ep_text(ep: tuple[str | None, int | None]) -> str:
    host, port = ep
    if host is None:
        return f"port {port}"
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_condition(text: str) -> Condition:
    """Parse one expectation (see EXPECT_HELP); ExpectSyntaxError with a one-line reason if not."""
    cond = Condition(text=text.strip())
    words = text.replace(",", " ").split()
    low = [w.lower() for w in words]
    n = len(words)
    i = 0

    def fail(why: str) -> ExpectSyntaxError:
        where = " ".join(words[:i]) + " >>" + (" " + " ".join(words[i:]) if i < n else " (end)")
        return ExpectSyntaxError(f"cannot parse expectation {text.strip()!r}: {why} at: {where}")

    def number(what: str) -> int:
        nonlocal i
        if i < n and low[i] in ("=", "==", "is"):
            i += 1
        if i >= n or not words[i].isdigit():
            raise fail(f"expected a number for {what}")
        i += 1
        return int(words[i - 1])

    if not words:
        raise ExpectSyntaxError("an empty expectation")
    # quantifier
    if low[0] in ("every", "all", "each"):
        i = 1
    elif low[0] in ("any", "some"):
        cond.quantifier, i = "any", 1
    elif low[:3] == ["at", "least", "one"]:
        cond.quantifier, i = "any", 3
    elif low[0] in ("no", "none"):
        cond.quantifier, i = "no", 1
    # selectors (with fillers)
    while i < n:
        w = low[i]
        if w in _FILLERS and not (w in ("syn", "syns") and i + 1 < n and (words[i + 1].isdigit() or
                                                                         low[i + 1] in ("=", "=="))):
            i += 1
        elif w == "port":
            i += 1
            cond.server = (cond.server[0], number("port"))
        elif w in ("to", "from"):
            i += 1
            if i < n and low[i] == "port":
                i += 1
                p = number("port")
                if w == "to":
                    cond.server = (cond.server[0], p)
                else:
                    cond.client = (cond.client[0], p)
                continue
            ep = _endpoint(words[i]) if i < n else None
            if ep is None:
                raise fail(f"expected an address or address:port after {w!r}")
            i += 1
            if w == "to":
                cond.server = ep
            else:
                cond.client = ep
        elif w in ("ipv4", "ipv6"):
            cond.family = 4 if w == "ipv4" else 6
            i += 1
        elif w == "id":
            i += 1
            cond.id = number("id")
        elif _endpoint(words[i]) is not None and not words[i].isdigit():
            cond.server = _endpoint(words[i])
            i += 1
        else:
            break
    # predicate
    while i < n and low[i] in ("is", "are", "was", "were", "be", "should", "must"):
        i += 1
    if i < n and low[i] == "not":
        cond.negate = True
        i += 1
    if i >= n:
        raise fail("expected what to check (an outcome, follows ..., syns N, count N, conn_state, history)")
    w = low[i]
    if w == "timed" and i + 1 < n and low[i + 1] == "out":
        w = "timed-out"
        i += 1
    if w in _OUTCOME_WORDS:
        cond.predicate, cond.outcome = "outcome", _OUTCOME_WORDS[w]
        i += 1
        if cond.outcome == "reset" and i < n and low[i] == "by":
            i += 1
            if i >= n or low[i] not in ("client", "server"):
                raise fail("expected client or server after 'reset by'")
            cond.reset_by = low[i]
            i += 1
        while cond.outcome == "unreachable" and i < n and low[i] in ("type", "code"):
            key = low[i]
            i += 1
            v = number(key)
            if key == "type":
                cond.icmp_type = v
            else:
                cond.icmp_code = v
    elif w in ("follow", "follows", "followed"):
        cond.predicate = "schedule"
        i += 1
        while i < n and low[i] in ("the", "a"):
            i += 1
        if i >= n or low[i] not in ("linux", "stevens"):
            raise fail("expected the model: linux or stevens")
        cond.model = low[i]
        i += 1
        while i < n:
            if low[i] in ("schedule", "model", "with", "and", "profile"):
                i += 1
                continue
            key, eq, val = low[i].partition("=")
            if not eq or key not in _SETTING_KEYS or not val.lstrip("-").isdigit():
                raise fail(f"expected KEY=VALUE with KEY one of {', '.join(sorted(set(_SETTING_KEYS)))}")
            if cond.model == "stevens":
                raise fail("the stevens model has no settings")
            cond.settings[_SETTING_KEYS[key]] = int(val)
            i += 1
        try:
            cond.schedule()
        except (TypeError, ValueError) as exc:
            raise ExpectSyntaxError(f"cannot use expectation {text.strip()!r}: {exc}") from None
    elif w in ("syns", "syn_count", "syn-count"):
        i += 1
        cond.predicate, cond.value = "syns", number("syns")
    elif w in ("conn_state", "history"):
        i += 1
        if i < n and low[i] in ("=", "=="):
            i += 1
        if i >= n:
            raise fail(f"expected a value for {w}")
        cond.predicate, cond.value = w, words[i]
        i += 1
    elif w == "count":
        i += 1
        cond.predicate, cond.value = "count", number("count")
        if cond.quantifier != "every":
            raise fail("'count' takes no quantifier")
    else:
        raise fail("expected an outcome (" + ", ".join(OUTCOMES) + "), follows ..., syns N, count N, "
                   "conn_state or history")
    if i < n:
        raise fail("unexpected words")
    return cond


@dataclass
class Verdict:
    """The result of one condition: `ok`, a one-line `summary`, and `details` for a failure."""

    condition: Condition
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    def text(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.condition.text}: {self.summary}"
        return "\n".join([head] + [f"      {d}" for d in self.details])

    def as_json(self) -> dict:
        return {"expect": self.condition.text, "ok": self.ok, "summary": self.summary, "details": self.details}


def _describe(r: ConnectionRecord) -> str:
    extra = f" by the {r.reset_by}" if r.reset_by else ""
    icmp = f", {icmp_name(r.icmp)} from {r.icmp['from']}" if r.icmp else ""
    return (f"#{r.id} {_ep_text((r.orig_h, r.orig_p))} > {_ep_text((r.resp_h, r.resp_p))}: "
            f"{r.outcome}{extra} ({r.detail}), {r.syn_count} SYN(s){icmp}, zeek {r.conn_state} {r.history or '-'}")


def _holds(cond: Condition, r: ConnectionRecord) -> tuple[bool, list[str]]:
    """Does one record satisfy the predicate? (ok, explanation lines for a failure)"""
    p = cond.predicate
    if p == "outcome":
        ok = r.outcome == cond.outcome
        if ok and cond.reset_by:
            ok = r.reset_by == cond.reset_by
        if ok and (cond.icmp_type is not None or cond.icmp_code is not None):
            ok = r.icmp is not None and cond.icmp_type in (None, r.icmp["type"]) and cond.icmp_code in (
                None, r.icmp["code"])
        return ok != cond.negate, []
    if p == "syns":
        return (r.syn_count == cond.value) != cond.negate, []
    if p == "conn_state":
        return (r.conn_state == cond.value) != cond.negate, []
    if p == "history":
        return (r.history == cond.value) != cond.negate, []
    if p == "schedule":
        ok, report = _schedule_check(cond, r)
        return ok != cond.negate, report
    raise AssertionError(p)


def _schedule_check(cond: Condition, r: ConnectionRecord) -> tuple[bool, list[str]]:
    sched = cond.schedule()
    if not r.syn_times_s:
        return False, ["no SYN from the client in this attempt"]
    cmp = sched.compare(r.syn_times_s, None, DEFAULT_TOLERANCE)
    items = [it for it in cmp.items if it.name.startswith("SYN")]
    if r.outcome == "timed-out":
        ok = all(it.ok for it in items)
        scope = "every predicted SYN must be seen (the attempt got no answer)"
    else:
        # answered (or still trying at the end of the capture): the SYNs seen must be the model's first ones
        ok = all(it.ok for it in items if it.observed_s is not None)
        scope = f"the attempt ended {r.outcome}: its {r.syn_count} SYN(s) must be the model's first ones"
    lines = [f"model: {sched.source}", f"predicted: {', '.join(f'{t:g}' for t in sched.syn_times)} s (SYNs); "
                                         f"observed: {', '.join(f'{t:.3f}' for t in r.syn_times_s)} s",
             f"tolerance: {cmp.tolerance.describe()}; {scope}; a capture shows no ETIMEDOUT, so it is not checked"]
    lines += [it.line() for it in items]
    return ok, lines


def _attempts(n: int, where: str) -> str:
    """"3 attempts to port 80", "1 attempt to port 80"."""
    return f"{n} attempt{'' if n == 1 else 's'}" + (f" {where}" if where else "")


def evaluate(cond: Condition, records: Sequence[ConnectionRecord]) -> Verdict:
    """Evaluate one parsed condition on records."""
    sel = [r for r in records if cond.selects(r)]
    where = cond.describe_selection()
    none = "no attempt" + (f" {where}" if where else "") + " in the capture"
    if cond.predicate == "count":
        ok = (len(sel) == cond.value) != cond.negate
        return Verdict(cond, ok, _attempts(len(sel), where) + ("" if ok else f", expected {cond.value}"),
                       [] if ok else [_describe(r) for r in sel[:20]])
    results = [(r, *_holds(cond, r)) for r in sel]
    good = [r for r, ok, _ in results if ok]
    bad = [(r, lines) for r, ok, lines in results if not ok]

    def explain(items) -> list[str]:
        out = []
        for r, lines in items[:20]:
            out.append(_describe(r))
            out += ["  " + ln for ln in lines]
        if len(items) > 20:
            out.append(f"... and {len(items) - 20} more")
        return out

    if cond.quantifier == "every":
        if not sel:
            return Verdict(cond, False, none)
        if bad:
            verb = "does" if len(bad) == 1 else "do"
            return Verdict(cond, False, f"{len(bad)} of {_attempts(len(sel), where)} {verb} not hold", explain(bad))
        summary = f"{'the only one of ' if len(sel) == 1 else 'all '}{_attempts(len(sel), where)} hold" + (
            "s" if len(sel) == 1 else "")
        details = _schedule_check(cond, sel[0])[1][:2] if cond.predicate == "schedule" else []
        return Verdict(cond, True, summary, details)
    if cond.quantifier == "any":
        if good:
            return Verdict(cond, True, f"{len(good)} of {_attempts(len(sel), where)} hold" + ("s" if len(good) == 1
                                                                                             else ""))
        return Verdict(cond, False, f"none of {_attempts(len(sel), where)} holds" if sel else none, explain(bad))
    # no
    if good:
        verb = "holds" if len(good) == 1 else "hold"
        return Verdict(cond, False, f"{len(good)} of {_attempts(len(sel), where)} {verb}",
                       [_describe(r) for r in good[:20]])
    return Verdict(cond, True, f"none of {_attempts(len(sel), where)} holds" if sel else none)


def check(source, *conditions: str, **scan_kw) -> list[Verdict]:
    """Evaluate expectations on a capture file, a `verifier.analysis.trace.Trace` or ConnectionRecords.

    >>> [v.ok for v in check("run.pcapng", "port 5000 refused")]
    The same conditions as `verifier replay --expect`; a syntax error raises ExpectSyntaxError.
    """
    conds = [parse_condition(c) for c in conditions]
    records = records_of(source, **scan_kw)
    return [evaluate(c, records) for c in conds]


def assert_expectations(source, *conditions: str, **scan_kw) -> None:
    """`check()`, raising AssertionError with the report if any condition fails (for tests)."""
    verdicts = check(source, *conditions, **scan_kw)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        raise AssertionError("\n".join(v.text() for v in verdicts))


# ==================================================================================================
# The table
# ==================================================================================================

def format_table(records: Sequence[ConnectionRecord], *, t0_ns: int | None = None) -> str:
    """One line per connection: id, endpoints, outcome, SYNs, start and duration, Zeek state."""
    if not records:
        return "  (no TCP connections)"
    t0 = min(r.start_ns for r in records) if t0_ns is None else t0_ns
    rows = []
    for r in records:
        outcome = r.outcome + (f" by {r.reset_by}" if r.reset_by else "")
        if r.icmp and r.outcome == "unreachable":
            outcome += f" ({r.icmp['type']}/{r.icmp['code']})"
        rows.append((str(r.id), _ep_text((r.orig_h, r.orig_p)), _ep_text((r.resp_h, r.resp_p)), outcome,
                     str(r.syn_count), f"{(r.start_ns - t0) / 1e9:.6f}", f"{r.duration_s:.6f}",
                     f"{r.conn_state} {r.history or '-'}", r.detail))
    head = ("id", "client", "server", "outcome", "SYNs", "start s", "duration s", "zeek", "detail")
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(head)]
    right = {0, 4, 5, 6}

    def line(cells) -> str:
        out = []
        for k, c in enumerate(cells):
            if k == len(cells) - 1:
                out.append(c)
            else:
                out.append(c.rjust(widths[k]) if k in right else c.ljust(widths[k]))
        return "  " + "  ".join(out)

    return "\n".join([line(head)] + [line(row) for row in rows])


# ==================================================================================================
# The command
# ==================================================================================================

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `verifier replay` on the `verifier` command's subparsers."""
    p = subparsers.add_parser(
        "replay", help="classify every TCP connection attempt of a capture; check expectations; re-drive",
        description="Read a pcap/pcapng file in one streaming pass and classify every TCP connection attempt "
                    "(established, refused, timed-out, unreachable, reset, closed, incomplete) with its SYN "
                    "count and times and Zeek's conn_state and history. No root needed. With --against, re-send "
                    "one connection's client side to a live testbed (root) and compare the answers.",
        epilog=EXPECT_HELP + "\nexit status: 0 all good, 1 an expectation failed or the re-drive differed, "
                             "2 bad input (file, expectation syntax, options)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="pcap or pcapng file (Ethernet, Linux cooked, raw IP, loopback; VLAN, tunnels)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per TCP connection (orig_h, orig_p, resp_h, resp_p, outcome, "
                        "syn_count, conn_state, history, ...); verdicts go to stderr")
    p.add_argument("--expect", action="append", default=[], metavar="COND", help="an expectation (see below)")
    p.add_argument("--port", type=int, help="only list connections with this port on either side")
    p.add_argument("--show", type=int, metavar="ID", help="also print connection ID packet by packet (Scapy "
                                                           "dissects just its packets)")
    p.add_argument("--engine", choices=["auto", "c", "python"], default="auto",
                   help="the C fast path (built at run time) or the Python reference (default: C if cc exists)")
    p.add_argument("--zeek-sessions", action="store_true",
                   help="group packets as Zeek does (its connection reuse and timers split rows; every interface "
                        "counts) instead of one row per attempt")
    p.add_argument("--checksums", action="store_true",
                   help="drop segments with bad checksums like Zeek without -C (off by default: captures taken on "
                        "the sending host carry offloaded, unfinished checksums)")
    p.add_argument("--zeek-bare", action="store_true", help="Zeek's orientation heuristic as in bare mode (zeek -b): "
                                                            "no likely server ports")
    p.add_argument("--linger", type=float, default=300.0, metavar="S",
                   help="a connection idle this long (capture time) is finished and forgotten (default 300)")
    p.add_argument("--against", metavar="TESTBED", help="re-drive against this named testbed (verifier testbed up)")
    p.add_argument("--connection", type=int, metavar="ID", help="the connection to re-drive (its id in the table)")
    p.add_argument("--to-port", type=int, metavar="P", help="re-drive to this server port (default: the captured one)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="how long to wait for each expected answer while re-driving (default 5)")
    p.set_defaults(func=run)
    return p


def _err(msg: str) -> None:
    print(f"verifier: {msg}", file=sys.stderr)


def run(args) -> int:
    """Run `verifier replay` with parsed arguments; returns the exit status."""
    from verifier.pcap import CaptureFormatError

    if not os.path.exists(args.file):
        _err(f"{args.file}: no such file")
        return 2
    if os.path.isdir(args.file):
        _err(f"{args.file}: is a directory, not a capture file")
        return 2
    try:
        conds = [parse_condition(c) for c in args.expect]
    except ExpectSyntaxError as exc:
        _err(str(exc))
        return 2
    if args.against is not None or args.connection is not None:
        if args.against is None or args.connection is None:
            _err("re-driving needs both --against TESTBED and --connection ID")
            return 2
        return _run_redrive(args)
    if args.linger <= 0:
        _err("--linger must be positive")
        return 2
    from verifier.analysis.classify import DEFAULT_LIKELY_SERVER_PORTS
    from verifier.replay.fastpath import ScanStats, scan

    stats = ScanStats()
    kw = dict(engine=args.engine, grouping="zeek" if args.zeek_sessions else "attempt", checksums=args.checksums,
              likely_server_ports=frozenset() if args.zeek_bare else DEFAULT_LIKELY_SERVER_PORTS,
              linger_s=args.linger, stats=stats)
    records: list[ConnectionRecord] = []
    # JSON Lines stream out as connections finish; the table (sorted) and the checks need them all.
    keep = bool(conds) or not args.json or args.show is not None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for r in scan(args.file, **kw):
                if args.json and (args.port is None or args.port in (r.orig_p, r.resp_p)):
                    print(json.dumps(r.as_json()))
                if keep:
                    records.append(r)
    except CaptureFormatError as exc:
        _err(str(exc))
        return 2
    except RuntimeError as exc:  # the C engine could not be built
        _err(f"{exc} (use --engine python)")
        return 2
    except BrokenPipeError:  # pragma: no cover - `| head`
        return 0
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror or exc}")
        return 2
    for w in caught:
        _err(f"warning: {w.message}")
    records.sort(key=lambda r: r.id)
    shown = [r for r in records if args.port is None or args.port in (r.orig_p, r.resp_p)]
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        notes = []
        if stats.malformed:
            notes.append(f"{stats.malformed} malformed")
        if stats.fragments:
            notes.append(f"{stats.fragments} fragments (not reassembled)")
        if stats.icmp_unmatched:
            notes.append(f"{stats.icmp_unmatched} ICMP error(s) quoting no connection")
        if stats.truncated:
            notes.append("file truncated")
        print(f"capture {args.file}: {stats.format}, {stats.packets} packets, {stats.tcp} TCP segments, "
              f"{stats.connections} TCP connection(s) [{stats.engine} engine]" + (f"; {', '.join(notes)}" if notes else ""))
        print(format_table(shown, t0_ns=min((r.start_ns for r in records), default=0)))
        if args.show is not None:
            print()
            print(show_connection(args.file, records, args.show))
    elif args.show is not None:
        print(show_connection(args.file, records, args.show), file=sys.stderr)
    status = 0
    if conds:
        if not args.json:
            print()
        for c in conds:
            v = evaluate(c, records)
            print(v.text(), file=out)
            if not v.ok:
                status = 1
    return status


def show_connection(path: str, records: Sequence[ConnectionRecord], conn_id: int) -> str:
    """Connection `conn_id` packet by packet: our ladder, and Scapy's one-line dissection of each of
    its frames (only those frames are dissected)."""
    from verifier.wire import MalformedPacket, decode
    from verifier.pcap import CaptureFile
    from verifier.analysis.trace import Trace

    rec = next((r for r in records if r.id == conn_id), None)
    if rec is None:
        return f"no connection {conn_id} (ids 0-{len(records) - 1})" if records else "no connections"
    ends = {(rec.orig_h, rec.orig_p), (rec.resp_h, rec.resp_p)}
    picked, raws = [], []
    for raw in CaptureFile(path):
        if raw.ts_ns < rec.start_ns:
            continue
        if raw.ts_ns > rec.end_ns:
            break
        try:
            p = decode(raw)
        except MalformedPacket:
            continue
        if p is None or (rec.iface is not None and p.iface != rec.iface):
            continue
        if p.proto == "tcp":
            ok = {(p.src, p.sport), (p.dst, p.dport)} == ends
        else:
            q = p.quoted
            ok = q is not None and {(q.src, q.sport), (q.dst, q.dport)} == ends
        if ok:
            picked.append(p)
            raws.append(raw)
            if len(picked) >= 500:
                break
    if not picked:
        return f"connection {conn_id}: its packets cannot be shown in detail (inside a tunnel or an encapsulation)"
    trace = Trace.from_packets(picked, source=path)
    lines = [f"connection {conn_id}: " + _describe(rec), ""]
    lines += [c.ladder() for c in trace.connections[:1]]
    try:
        from scapy.all import Ether  # Scapy only for the shown packets
        from scapy.layers.l2 import CookedLinux
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6
        from scapy.packet import Raw
    except ImportError:  # pragma: no cover
        return "\n".join(lines)
    lines += ["", "Scapy's dissection:"]
    for raw in raws:
        if raw.linktype == 1:
            pkt = Ether(raw.data)
        elif raw.linktype == 113:
            pkt = CookedLinux(raw.data)
        elif raw.linktype in (101, 12, 14, 228, 229):
            pkt = IP(raw.data) if raw.data[:1] and raw.data[0] >> 4 == 4 else IPv6(raw.data)
        else:
            pkt = Raw(raw.data)
        lines.append(f"  frame {raw.index + 1}: {pkt.summary()}")
    return "\n".join(lines)


# ==================================================================================================
# Re-driving a captured connection against a live testbed
# ==================================================================================================

@dataclass
class Segment:
    """A TCP segment as compared: seq/ack relative to each side's ISN (ack None without ACK)."""

    t: float
    flags: str
    seq: int
    ack: int | None
    length: int

    def text(self) -> str:
        ack = "-" if self.ack is None else str(self.ack)
        return f"{self.t:9.6f}  {self.flags:<4} seq={self.seq} ack={ack} len={self.length}"

    def key(self) -> tuple:
        return (self.flags, self.seq, self.ack, self.length)


@dataclass
class RedriveReport:
    """What a re-drive sent, what came back, and how that differs from the capture."""

    connection_id: int
    recorded_client: tuple[str, int]
    recorded_server: tuple[str, int]
    live_client: tuple[str, int]
    live_server: tuple[str, int]
    sent: list[Segment]
    recorded_answers: list[Segment]
    live_answers: list[Segment]
    differences: list[str]
    live_server_isn: int | None = None
    client_rsts_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def text(self) -> str:
        lines = [f"re-drive of connection #{self.connection_id}: {_ep_text(self.recorded_client)} > "
                 f"{_ep_text(self.recorded_server)} recorded, sent as {_ep_text(self.live_client)} > "
                 f"{_ep_text(self.live_server)}",
                 f"sent {len(self.sent)} client segment(s); the client kernel's RSTs dropped: "
                 f"{self.client_rsts_dropped}"]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("server answers (seq relative to the server's ISN, ack to the client's):")
        lines.append(f"  {'recorded':<44} live")
        for k in range(max(len(self.recorded_answers), len(self.live_answers))):
            a = self.recorded_answers[k].text() if k < len(self.recorded_answers) else "(none)"
            b = self.live_answers[k].text() if k < len(self.live_answers) else "(none)"
            mark = "  " if k < len(self.recorded_answers) and k < len(self.live_answers) and \
                self.recorded_answers[k].key() == self.live_answers[k].key() else "!="
            lines.append(f"{mark}{a:<44} {b}")
        if self.differences:
            lines.append("differences:")
            lines += [f"  {d}" for d in self.differences]
        else:
            lines.append("the live server answered exactly as recorded")
        return "\n".join(lines)


def resolve_testbed(bed_or_name):
    """A `netns.Testbed` from a Testbed (returned as is) or the name of a long-lived testbed
    (`verifier testbed up --name N`). RedriveError if there is no such testbed."""
    if hasattr(bed_or_name, "client") and hasattr(bed_or_name, "hosts"):
        return bed_or_name
    from netns import Testbed, TestbedError
    from netns.namespace import NamespaceError

    try:
        return Testbed.attach(str(bed_or_name))
    except (TestbedError, NamespaceError, ValueError) as exc:
        raise RedriveError(str(exc)) from None


def _run_redrive(args) -> int:
    if os.geteuid() != 0:
        _err("re-driving needs root (it sends from a testbed's network namespace): run it with sudo")
        return 2
    from verifier.pcap import CaptureFormatError
    from verifier.analysis.tracefile import load_trace

    try:
        trace = load_trace(args.file)
        bed = resolve_testbed(args.against)
        report = redrive(trace, args.connection, bed, port=args.to_port, answer_timeout=args.timeout)
    except (RedriveError, CaptureFormatError) as exc:
        _err(str(exc))
        return 2
    if args.json:
        print(json.dumps({"connection": report.connection_id, "ok": report.ok, "differences": report.differences,
                          "sent": len(report.sent), "recorded": [s.__dict__ for s in report.recorded_answers],
                          "live": [s.__dict__ for s in report.live_answers]}))
    else:
        print(report.text())
    return 0 if report.ok else 1


def _rel(v: int, base: int) -> int:
    d = (v - base) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def _mac_of(netns_name: str, ifname: str) -> bytes:
    from netns import namespace

    with namespace.inside(netns_name):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((ifname, 0))
            return s.getsockname()[4][:6]
        finally:
            s.close()


def redrive(trace, connection_id: int, bed, *, port: int | None = None, answer_timeout: float = 5.0,
            total_timeout: float = 60.0, client_port: int | None = None) -> RedriveReport:
    """Send the client side of `trace.connections[connection_id]` again from `bed`'s client host to
    its server host, and compare the live server's answers with the recorded ones.

    `trace` is a `verifier.analysis.trace.Trace` loaded from a file (`trace.source`: the frames' payloads are
    read from it again); `bed` a `netns.Testbed` or the name of a long-lived testbed. Each client
    segment leaves at its recorded time after the previous one, or once the answers recorded
    before it have arrived (at most `answer_timeout` s each), as tcpliveplay paces. The client's
    sequence numbers are kept; its acknowledgements are moved from the recorded server ISN onto the
    live one. Needs root.
    """
    if os.geteuid() != 0:
        raise RedriveError("re-driving needs root (it sends from a testbed's network namespace): run it with sudo")
    bed = resolve_testbed(bed)
    if not 0 <= connection_id < len(trace.connections):
        raise RedriveError(f"no connection {connection_id} in {trace.source} "
                           f"(it has {len(trace.connections)}: ids 0-{len(trace.connections) - 1})")
    conn = trace.connections[connection_id]
    if conn.partial or conn.isn_client is None:
        raise RedriveError(f"connection {connection_id} has no SYN from its client in the capture: "
                           f"it cannot be re-driven (the live server needs the handshake)")
    if trace.source is None or not os.path.exists(trace.source):
        raise RedriveError("the trace was not loaded from a file: its payloads cannot be re-sent")
    fam = conn.family
    try:
        client_ip, server_ip = bed.client.addr(fam), bed.server.addr(fam)
    except LookupError as exc:
        raise RedriveError(f"the testbed has no IPv{fam} addresses for this IPv{fam} connection: {exc}") from None
    sport = client_port or random.randint(20000, 59999)
    dport = port or conn.server[1]

    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from netns import namespace
    from verifier.faults import Drop, Match, inject
    from verifier.pcap import CaptureFile

    events = conn.events
    client_events = [e for e in events if e.direction == "c>s" and e.kind != "ICMP"]
    recorded_answers_ev = [e for e in events if e.direction == "s>c" and e.kind != "ICMP"]
    isn_s_rec = conn.isn_server
    wanted = {e.packet_index for e in client_events}
    frames: dict[int, bytes] = {}
    for raw in CaptureFile(trace.source):
        if raw.index in wanted:
            frames[raw.index] = raw.data
            if len(frames) == len(wanted):
                break
    payloads: dict[int, bytes] = {}
    for e in client_events:
        data = frames.get(e.packet_index, b"")
        pkt = Ether(data) if data else None
        tcp = pkt.getlayer(TCP) if pkt is not None else None
        body = bytes(tcp.payload) if tcp is not None else b""
        if len(body) < e.payload_len:  # snaplen cut it: pad to the recorded length
            body += b"\0" * (e.payload_len - len(body))
        payloads[e.packet_index] = body[:e.payload_len]

    itf = bed.client.interfaces[0]
    peer = bed[itf.peer_host]
    src_mac = _mac_of(bed.client.netns, itf.name)
    dst_mac = _mac_of(peer.netns, itf.peer_name)
    t_conn0 = events[0].t

    # How many server answers come before each client segment, in the recording.
    answers_before = []
    for e in client_events:
        answers_before.append(sum(1 for a in recorded_answers_ev if a.ts_ns < e.ts_ns))

    live: list[tuple[float, int, int, int, int, int]] = []  # (t, flags, seq, ack, len, has_ack)
    sent: list[Segment] = []
    live_isn_s: int | None = None
    notes: list[str] = []

    with namespace.inside(bed.client.netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        sock.bind((itf.name, 0))
        sock.setblocking(False)
        drop = Drop(Match(flags="rst", sport=sport, dst=server_ip))
        with inject(bed.client, drop):
            start = time.monotonic()
            deadline = start + total_timeout

            def pump(until: float, need: int | None = None) -> None:
                """Receive the server's frames until `until`, or until `need` answers have come."""
                nonlocal live_isn_s
                while True:
                    now = time.monotonic()
                    if now >= until or now >= deadline or (need is not None and len(live) >= need):
                        return
                    ready, _, _ = select.select([sock], [], [], min(until, deadline) - now)
                    if not ready:
                        continue
                    while True:
                        try:
                            data, addr = sock.recvfrom(65536)
                        except BlockingIOError:
                            break
                        if addr[2] == socket.PACKET_OUTGOING:
                            continue
                        seg = _parse_answer(data, fam, server_ip, dport, client_ip, sport)
                        if seg is None:
                            continue
                        flags, seq, ack, length = seg
                        if flags & 0x02 and live_isn_s is None:
                            live_isn_s = seq
                        live.append((time.monotonic() - start, flags, seq, ack, length, flags & 0x10))

            prev_t = None
            for k, e in enumerate(client_events):
                # pace: the recorded gap since the previous client segment, and the answers before it
                if prev_t is not None:
                    pump(time.monotonic() + max(e.t - prev_t, 0.0), None)
                need = answers_before[k]
                if len(live) < need:
                    pump(time.monotonic() + answer_timeout, need)
                prev_t = e.t
                flags = e.flags
                ack_val = 0
                if e.ack_abs is not None:
                    if live_isn_s is not None and isn_s_rec is not None:
                        ack_val = (e.ack_abs - isn_s_rec + live_isn_s) & 0xFFFFFFFF
                    else:
                        ack_val = e.ack_abs
                        if isn_s_rec is not None:
                            notes.append(f"client segment {k + 1} acknowledges the server, but no live SYN-ACK "
                                         f"came: its ack is sent unmapped")
                ip = (IP(src=client_ip, dst=server_ip) if fam == 4 else IPv6(src=client_ip, dst=server_ip))
                seg = TCP(sport=sport, dport=dport, seq=e.seq_abs, ack=ack_val, flags=flags,
                          window=e.window or 64240)
                if "S" in flags and e.mss:
                    seg.options = [("MSS", e.mss)]
                frame = Ether(src=src_mac, dst=dst_mac) / ip / seg
                if payloads.get(e.packet_index):
                    frame = frame / Raw(payloads[e.packet_index])
                sock.send(bytes(frame))
                sent.append(Segment(round(time.monotonic() - start, 6), flags, e.seq, e.ack, e.payload_len))
            # the answers recorded after the last client segment
            pump(time.monotonic() + answer_timeout, len(recorded_answers_ev))
            pump(time.monotonic() + 0.2, None)  # and anything unexpected right behind them
        dropped = drop.report.get("matched", 0)
    finally:
        sock.close()

    isn_c = conn.isn_client
    rec_answers = [Segment(round(a.t - t_conn0, 6), a.flags, a.seq or 0, a.ack, a.payload_len)
                   for a in recorded_answers_ev]
    from verifier.wire import flag_str

    live_answers = []
    for t, flags, seq, ack, length, has_ack in live:
        # without a live SYN-ACK there is no server ISN: such a RST is numbered 0, as the Trace does
        rel_seq = _rel(seq, live_isn_s) if live_isn_s is not None else 0
        live_answers.append(Segment(round(t, 6), flag_str(flags), rel_seq,
                                    _rel(ack, isn_c) if has_ack else None, length))
    diffs = []
    for k in range(max(len(rec_answers), len(live_answers))):
        a = rec_answers[k] if k < len(rec_answers) else None
        b = live_answers[k] if k < len(live_answers) else None
        if a is None:
            diffs.append(f"answer {k + 1}: not recorded, live {b.flags} seq={b.seq} ack={b.ack} len={b.length}")
        elif b is None:
            diffs.append(f"answer {k + 1}: recorded {a.flags} seq={a.seq} ack={a.ack} len={a.length}, no live answer "
                         f"(waited {answer_timeout:g} s)")
        elif a.key() != b.key():
            diffs.append(f"answer {k + 1}: recorded {a.flags} seq={a.seq} ack={a.ack} len={a.length}, "
                         f"live {b.flags} seq={b.seq} ack={b.ack} len={b.length}")
    return RedriveReport(connection_id, conn.client, conn.server, (client_ip, sport), (server_ip, dport), sent,
                         rec_answers, live_answers, diffs, live_isn_s, dropped, sorted(set(notes)))


def _parse_answer(data: bytes, fam: int, server_ip: str, sport: int, client_ip: str, cport: int):
    """(flags, seq, ack, payload length) of a frame from the server to our replayed port, else None."""
    if len(data) < 14:
        return None
    et = int.from_bytes(data[12:14], "big")
    off = 14
    if fam == 4:
        if et != 0x0800 or len(data) < off + 20 or data[off + 9] != 6:
            return None
        ihl = (data[off] & 15) * 4
        total = int.from_bytes(data[off + 2:off + 4], "big")
        src = socket.inet_ntop(socket.AF_INET, data[off + 12:off + 16])
        dst = socket.inet_ntop(socket.AF_INET, data[off + 16:off + 20])
        l4, end = off + ihl, off + total
    else:
        if et != 0x86DD or len(data) < off + 40 or data[off + 6] != 6:
            return None
        plen = int.from_bytes(data[off + 4:off + 6], "big")
        src = socket.inet_ntop(socket.AF_INET6, data[off + 8:off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, data[off + 24:off + 40])
        l4, end = off + 40, off + 40 + plen
    if len(data) < l4 + 20:
        return None
    if ipaddress.ip_address(src) != ipaddress.ip_address(server_ip) or \
            ipaddress.ip_address(dst) != ipaddress.ip_address(client_ip):
        return None
    p_src = int.from_bytes(data[l4:l4 + 2], "big")
    p_dst = int.from_bytes(data[l4 + 2:l4 + 4], "big")
    if p_src != sport or p_dst != cport:
        return None
    seq = int.from_bytes(data[l4 + 4:l4 + 8], "big")
    ack = int.from_bytes(data[l4 + 8:l4 + 12], "big")
    doff = (data[l4 + 12] >> 4) * 4
    flags = int.from_bytes(data[l4 + 12:l4 + 14], "big") & 0x1FF
    return flags, seq, ack, max(end - l4 - doff, 0)


def main(argv: list[str] | None = None) -> int:
    """Run `replay` on its own (the `verifier` command registers it with add_parser)."""
    parser = argparse.ArgumentParser(prog="verifier")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
