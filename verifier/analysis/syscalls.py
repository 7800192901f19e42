"""Parse the JSON-line syscall reports of the verifier's C programs.

Each line written by ``client`` / ``server`` (``verifier/programs``) is one
socket call::

    {"pid": 4707, "call": "connect", "args": {"fd": 3, "addr": "127.0.0.1", "port": 5000},
     "ret": -1, "errno": "ECONNREFUSED", "t_enter_ns": ..., "t_return_ns": ...}

plus call-specific result fields (``addr``/``port`` for getsockname,
getpeername and accept, ``conn_fd`` for accept, ``child`` for fork, ``data``
for read/write), which land in :attr:`SyscallEvent.extra`.

Pure: no I/O besides parsing the given string, no scapy, nothing spawned.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "CORE_FIELDS",
    "SyscallEvent",
    "by_pid",
    "calls",
    "find",
    "parse_line",
    "parse_report",
    "pids",
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
