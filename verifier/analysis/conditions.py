"""The `--expect` language: checks on the attempts of a capture, written as short sentences.

    check("run.pcapng", "every attempt to port 5000 is refused")        # -> [Verdict]
    check(trace, "the SYNs to 203.0.113.2:81 follow the linux schedule with tcp_syn_retries=2")
    assert_expectations(capture.trace(), "port 5000 refused", "no attempt is reset")

The attempts are the one connection model's (`verifier.analysis.grouper`), judged by the one attempt
machine: on a file they come from the streaming scan (`verifier replay`), on a `Trace` they are its
connections, so `expect(trace)...refused()` and `check(trace, "... refused")` agree by
construction. `Evaluation` checks a condition attempt by attempt, keeping counts and the first few
explanations only, so a capture of any size is checked in bounded memory.

The grammar is `EXPECT_HELP` (verifier.analysis.expect_help).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Iterable

from verifier.analysis.attempt import OUTCOMES
from verifier.analysis.expect_help import EXPECT_HELP
from verifier.analysis.schedules import DEFAULT_TOLERANCE, LinuxProfile, StevensProfile, SynSchedule
from verifier.wire.names import icmp_canonical, icmp_kind, icmp_label

__all__ = [
    "EXPECT_HELP", "Condition", "Evaluation", "ExpectSyntaxError", "Verdict", "assert_expectations", "check",
    "describe_attempt", "endpoint_text", "evaluate", "judge_syns", "parse_condition",
]


class ExpectSyntaxError(ValueError):
    """An --expect condition that does not parse; the message says where and what was expected."""


_OUTCOME_WORDS = {
    "established": "established", "refused": "refused", "timed-out": "timed-out", "timedout": "timed-out",
    "timeout": "timed-out", "unreachable": "unreachable", "reset": "reset", "closed": "closed",
    "incomplete": "incomplete", "open": "incomplete", "uncertain": "uncertain",
}
_FILLERS = {"the", "a", "an", "attempt", "attempts", "connection", "connections", "syn", "syns", "syn's", "of"}
_SETTING_KEYS = {
    "tcp_syn_retries": "syn_retries", "syn_retries": "syn_retries", "retries": "syn_retries",
    "tcp_syn_linear_timeouts": "linear_timeouts", "linear_timeouts": "linear_timeouts", "linear": "linear_timeouts",
    "syncnt": "syncnt", "tcp_syncnt": "syncnt", "rto_init_ms": "rto_init_ms", "rto_ms": "rto_init_ms",
    "initial_rto_ms": "rto_init_ms", "rto_max_ms": "rto_max_ms", "tcp_rto_max_ms": "rto_max_ms",
}


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
    icmp_name: str | None = None  # an ICMP_KINDS name: the same error in either family
    model: str | None = None
    settings: dict = field(default_factory=dict)
    value: object = None

    def selects(self, r) -> bool:
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
            parts.append("to " + endpoint_text(self.server))
        if self.client != (None, None):
            parts.append("from " + endpoint_text(self.client))
        if self.family:
            parts.append(f"over IPv{self.family}")
        if self.id is not None:
            parts.append(f"with id {self.id}")
        return " ".join(parts)

    def schedule(self, sysctls: dict | None = None) -> SynSchedule:
        """The model's schedule; for linux, `sysctls` are the client namespace's (None: unknown, the
        kernel's defaults), under the condition's own settings (`LinuxProfile.for_capture`)."""
        if self.model == "stevens":
            return StevensProfile().schedule()
        return LinuxProfile.for_capture(sysctls, **self.settings).schedule()


def endpoint_text(ep: tuple[str | None, int | None]) -> str:
    """A (host, port) selector as text: "port 80", "192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:80"."""
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
        if cond.outcome == "unreachable" and i < n and low[i] not in ("type", "code"):
            if low[i] in ("by", "with", "from") and i + 1 < n:
                i += 1
            try:
                cond.icmp_name = icmp_canonical(low[i])
            except ValueError as exc:
                raise fail(str(exc)) from None
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


def describe_attempt(r) -> str:
    """One line on an attempt: id, endpoints, outcome and detail, SYNs, ICMP, Zeek's reading."""
    extra = f" by the {r.reset_by}" if r.reset_by else ""
    icmp = r.icmp
    icmp = f", {icmp_label(icmp['family'], icmp['type'], icmp['code'])} from {icmp['from']}" if icmp else ""
    return (f"#{r.id} {endpoint_text((r.orig_h, r.orig_p))} > {endpoint_text((r.resp_h, r.resp_p))}: "
            f"{r.outcome}{extra} ({r.detail}), {r.syn_count} SYN(s){icmp}, zeek {r.conn_state} {r.history or '-'}")


def _holds(cond: Condition, r, schedule: SynSchedule | None = None) -> tuple[bool, list[str]]:
    """Does one record satisfy the predicate? (ok, explanation lines for a failure)"""
    p = cond.predicate
    if p == "outcome":
        ok = r.outcome == cond.outcome
        if ok and cond.reset_by:
            ok = r.reset_by == cond.reset_by
        if ok and (cond.icmp_type is not None or cond.icmp_code is not None):
            ok = r.icmp is not None and cond.icmp_type in (None, r.icmp["type"]) and cond.icmp_code in (
                None, r.icmp["code"])
        if ok and cond.icmp_name is not None:
            ok = r.icmp is not None and icmp_kind(r.icmp["family"], r.icmp["type"], r.icmp["code"]) == cond.icmp_name
        return ok != cond.negate, []
    if p == "syns":
        return (r.syn_count == cond.value) != cond.negate, []
    if p == "conn_state":
        return (r.conn_state == cond.value) != cond.negate, []
    if p == "history":
        return (r.history == cond.value) != cond.negate, []
    if p == "schedule":
        ok, report = judge_syns(schedule or cond.schedule(), r)
        return ok != cond.negate, report
    raise AssertionError(p)


def judge_syns(sched: SynSchedule, r) -> tuple[bool, list[str]]:
    """Do the SYNs of attempt `r` (an Attempt or Connection) follow `sched`? (ok, report lines)

    A timed-out attempt must show every predicted SYN, each within `DEFAULT_TOLERANCE` of the model
    (measured from the previous observed SYN); an answered one (or one the capture cut short) only its
    SYNs up to the answer, which must be the model's first ones. The ETIMEDOUT of connect() is not
    in a capture, so it is not checked. The same judgment for `--expect "... follows linux"` and
    `expect(trace).connection(...).syn_schedule()`."""
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


_KEEP = 20  # explanations kept per verdict


class Evaluation:
    """One condition checked attempt by attempt (`add`), in bounded memory; `verdict()` at the end.

    `sysctls`: the client namespace's SYN sysctls for a `follows linux` condition (see
    `Condition.schedule`); None when the capture does not carry them."""

    def __init__(self, cond: Condition, sysctls: dict | None = None) -> None:
        self.cond = cond
        self.schedule = cond.schedule(sysctls) if cond.predicate == "schedule" else None
        self.selected = 0
        self.good = 0
        self.bad = 0
        self.good_lines: list[str] = []
        self.bad_lines: list[str] = []
        self.first_schedule: list[str] | None = None

    def add(self, r) -> None:
        cond = self.cond
        if not cond.selects(r):
            return
        self.selected += 1
        if cond.predicate == "count":
            if len(self.good_lines) < _KEEP:
                self.good_lines.append(describe_attempt(r))
            return
        ok, lines = _holds(cond, r, self.schedule)
        if self.schedule is not None and self.first_schedule is None:
            self.first_schedule = judge_syns(self.schedule, r)[1][:2]
        if ok:
            self.good += 1
            if len(self.good_lines) < _KEEP:
                self.good_lines.append(describe_attempt(r))
        else:
            self.bad += 1
            if len(self.bad_lines) < 3 * _KEEP:
                if self.bad <= _KEEP:
                    self.bad_lines.append(describe_attempt(r))
                    self.bad_lines += ["  " + ln for ln in lines]

    def verdict(self) -> Verdict:
        cond = self.cond
        n = self.selected
        where = cond.describe_selection()
        none = "no attempt" + (f" {where}" if where else "") + " in the capture"
        if cond.predicate == "count":
            ok = (n == cond.value) != cond.negate
            return Verdict(cond, ok, _attempts(n, where) + ("" if ok else f", expected {cond.value}"),
                           [] if ok else list(self.good_lines))
        more = [f"... and {self.bad - _KEEP} more"] if self.bad > _KEEP else []
        if cond.quantifier == "every":
            if not n:
                return Verdict(cond, False, none)
            if self.bad:
                verb = "does" if self.bad == 1 else "do"
                return Verdict(cond, False, f"{self.bad} of {_attempts(n, where)} {verb} not hold",
                               self.bad_lines + more)
            summary = f"{'the only one of ' if n == 1 else 'all '}{_attempts(n, where)} hold" + ("s" if n == 1 else "")
            return Verdict(cond, True, summary, self.first_schedule or [])
        if cond.quantifier == "any":
            if self.good:
                return Verdict(cond, True, f"{self.good} of {_attempts(n, where)} hold" + ("s" if self.good == 1 else ""))
            return Verdict(cond, False, f"none of {_attempts(n, where)} holds" if n else none, self.bad_lines + more)
        # no
        if self.good:
            verb = "holds" if self.good == 1 else "hold"
            return Verdict(cond, False, f"{self.good} of {_attempts(n, where)} {verb}", list(self.good_lines))
        return Verdict(cond, True, f"none of {_attempts(n, where)} holds" if n else none)


def evaluate(cond: Condition, records: Iterable, sysctls: dict | None = None) -> Verdict:
    """Evaluate one parsed condition on attempts (`sysctls`: see `Evaluation`)."""
    e = Evaluation(cond, sysctls)
    for r in records:
        e.add(r)
    return e.verdict()


def _attempts_of(source) -> Iterable:
    """The attempts of a capture path (streamed), a `Trace` (its connections), or attempts."""
    if isinstance(source, (str, os.PathLike)):
        from verifier.analysis.trace import load_trace  # a path: read it through the one model

        return load_trace(source).connections
    connections = getattr(source, "connections", None)
    return connections if connections is not None else source


def check(source, *conditions: str) -> list[Verdict]:
    """Evaluate expectations on a capture file, a `verifier.analysis.trace.Trace` or attempts;
    one `Verdict` per condition, in order.

    The same conditions as `verifier replay --expect` (grammar: `EXPECT_HELP`); a syntax error
    raises ExpectSyntaxError. On a Trace from a testbed (`capture.trace()`), `follows linux` models
    the client namespace's own sysctls (`Trace.client_sysctls`).
    """
    conds = [parse_condition(c) for c in conditions]
    sysctls = getattr(source, "client_sysctls", None)
    evals = [Evaluation(c, sysctls) for c in conds]
    for r in _attempts_of(source):
        for e in evals:
            e.add(r)
    return [e.verdict() for e in evals]


def assert_expectations(source, *conditions: str) -> None:
    """`check()`, raising AssertionError with every verdict (PASS/FAIL lines and the failures'
    details) if any condition fails: the form for tests."""
    verdicts = check(source, *conditions)
    if any(not v.ok for v in verdicts):
        raise AssertionError("\n".join(v.text() for v in verdicts))
