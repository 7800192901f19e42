"""What the verifier's C programs did: their socket-call reports, and one timeline of those calls and
the captured packets.

Each line written by ``client`` / ``server`` / ``handler`` (``verifier/programs``) is one socket call::

    {"pid": 4707, "call": "connect", "args": {"fd": 3, "addr": "127.0.0.1", "port": 5000},
     "ret": -1, "errno": "ECONNREFUSED", "t_enter_ns": ..., "t_return_ns": ...}

plus call-specific result fields (``addr``/``port`` for getsockname, getpeername and accept,
``conn_fd`` for accept, ``child`` for fork, ``data`` for read/write), which land in
:attr:`SyscallEvent.extra`. `parse_report` reads a whole report; `find` and `calls` pick calls out.

`timeline` merges packets and calls into one list, so that a check can read "the ACK left before
connect() returned" and a failure can show both side by side. Packet times are the kernel's capture
timestamps and call times are the programs' CLOCK_REALTIME readings: the same clock, so they order
correctly.

Pure: no I/O besides parsing the given text, no Scapy, nothing spawned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from verifier.analysis.trace import Event, format_events

__all__ = [
    "CORE_FIELDS",
    "Entry",
    "SyscallEvent",
    "by_pid",
    "calls",
    "find",
    "format_timeline",
    "merge",
    "parse_line",
    "parse_report",
    "pids",
    "timeline",
]

#: Fields every report line has; anything else goes to ``extra``.
CORE_FIELDS = ("pid", "call", "args", "ret", "errno", "t_enter_ns", "t_return_ns")


@dataclass(frozen=True)
class SyscallEvent:
    """One reported socket call."""

    call: str
    args: Mapping[str, Any] = field(hash=False)
    ret: int
    errno: str | None
    t_enter_ns: int
    t_return_ns: int
    pid: int
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        """The call succeeded (``ret >= 0``)."""
        return self.ret >= 0

    @property
    def duration_ns(self) -> int:
        return self.t_return_ns - self.t_enter_ns

    @property
    def addr(self) -> str | None:
        """Result address (getsockname/getpeername/accept), else None."""
        return self.extra.get("addr")

    @property
    def port(self) -> int | None:
        """Result port (getsockname/getpeername/accept), else None."""
        return self.extra.get("port")

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """``(addr, port)`` of the result, if the call returned one."""
        if self.addr is None or self.port is None:
            return None
        return (self.addr, self.port)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        err = f" {self.errno}" if self.errno else ""
        return f"[{self.pid}] {self.call}({args}) = {self.ret}{err}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_line(line: str, lineno: int = 1) -> SyscallEvent:
    """Parse one report line; ``ValueError`` naming ``lineno`` if it is bad."""
    where = f"report line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg} at column {e.colno}): {line[:120]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in CORE_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}: {line[:120]!r}")
    if not isinstance(obj["call"], str) or not obj["call"]:
        raise ValueError(f"{where}: 'call' must be a non-empty string")
    if not isinstance(obj["args"], dict):
        raise ValueError(f"{where}: 'args' must be an object")
    for k in ("pid", "ret", "t_enter_ns", "t_return_ns"):
        if not _is_int(obj[k]):
            raise ValueError(f"{where}: {k!r} must be an integer, got {obj[k]!r}")
    if obj["errno"] is not None and not isinstance(obj["errno"], str):
        raise ValueError(f"{where}: 'errno' must be a string or null, got {obj['errno']!r}")
    return SyscallEvent(
        call=obj["call"],
        args=obj["args"],
        ret=obj["ret"],
        errno=obj["errno"],
        t_enter_ns=obj["t_enter_ns"],
        t_return_ns=obj["t_return_ns"],
        pid=obj["pid"],
        extra={k: v for k, v in obj.items() if k not in CORE_FIELDS},
    )


def parse_report(text: str | bytes) -> list[SyscallEvent]:
    """Parse a whole report (one JSON object per line; blank lines skipped)."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as e:
            raise ValueError(f"report is not UTF-8: {e}") from None
    return [
        parse_line(line, n)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def calls(events: Iterable[SyscallEvent], call: str, pid: int | None = None) -> list[SyscallEvent]:
    """All events of the given call (optionally of one process), in order."""
    return [e for e in events if e.call == call and (pid is None or e.pid == pid)]


def find(events: Iterable[SyscallEvent], call: str, n: int = 0, pid: int | None = None) -> SyscallEvent:
    """The ``n``-th (0-based; negative counts from the end) ``call`` event.

    Raises ``LookupError`` listing the calls that were reported if there is
    no such event.
    """
    events = list(events)
    found = calls(events, call, pid)
    try:
        return found[n]
    except IndexError:
        seen = " ".join(e.call for e in events if pid is None or e.pid == pid) or "nothing"
        who = f" by pid {pid}" if pid is not None else ""
        raise LookupError(
            f"no {call} #{n}{who}: {len(found)} {call} call(s) reported; calls: {seen}"
        ) from None


def pids(events: Iterable[SyscallEvent]) -> list[int]:
    """Distinct pids in order of first appearance."""
    return list(dict.fromkeys(e.pid for e in events))


def by_pid(events: Iterable[SyscallEvent]) -> dict[int, list[SyscallEvent]]:
    """Events grouped by pid (each list in report order)."""
    out: dict[int, list[SyscallEvent]] = {}
    for e in events:
        out.setdefault(e.pid, []).append(e)
    return out


# --------------------------------------------------------------------------------------------------
# The timeline of packets and calls


@dataclass(frozen=True)
class Entry:
    """A line of the timeline: a packet, or a socket call entering or returning."""

    ts_ns: int
    text: str


def _call_text(who: str, ev: SyscallEvent, phase: str) -> str:
    args = ", ".join(f"{k}={v}" for k, v in ev.args.items() if k != "fd")
    if phase == "enter":
        return f"{who}[{ev.pid}] {ev.call}({args}) ..."
    result = f"{ev.ret}" + (f" {ev.errno}" if ev.errno else "")
    extra = ""
    if ev.addr is not None and ev.call in ("getsockname", "getpeername", "accept"):
        extra = f"  -> {ev.addr} port {ev.port}"
    return f"{who}[{ev.pid}] {ev.call}(...) = {result}{extra}"


def merge(packets: Sequence[Event], calls: dict[str, Iterable[SyscallEvent]]) -> list[Entry]:
    """Packets (already formatted one per line) and calls of each named program, in time order."""
    entries = []
    lines = format_events(list(packets)).splitlines() if packets else []
    for ev, line in zip(packets, lines):
        # Drop the ladder's own time column: the timeline prints one time for everything.
        entries.append(Entry(ev.ts_ns, "packet " + line.strip().split(None, 1)[1]))
    for who, evs in calls.items():
        for ev in evs:
            entries.append(Entry(ev.t_enter_ns, _call_text(who, ev, "enter")))
            entries.append(Entry(ev.t_return_ns, _call_text(who, ev, "return")))
    entries.sort(key=lambda e: e.ts_ns)
    return entries


def format_timeline(entries: Sequence[Entry], t0_ns: int | None = None) -> str:
    """Fixed-width lines: seconds since `t0_ns` (the first entry by default), then the text."""
    if not entries:
        return "  (empty timeline)"
    t0 = entries[0].ts_ns if t0_ns is None else t0_ns
    return "\n".join(f"  {(e.ts_ns - t0) / 1e9:+11.6f}  {e.text}" for e in entries)


def timeline(packets: Sequence[Event], calls: dict[str, Iterable[SyscallEvent]], t0_ns: int | None = None) -> str:
    """The merged timeline as text, ready for a failure message."""
    return format_timeline(merge(packets, calls), t0_ns)
