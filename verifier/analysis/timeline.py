"""One timeline of packets and socket calls, so that a check can read "the ACK left before connect()
returned" and a failure can show both side by side.

Packet times are the kernel's capture timestamps and call times are the programs' CLOCK_REALTIME
readings: the same clock, so they order correctly. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from verifier.analysis.syscalls import SyscallEvent
from verifier.analysis.trace import Event, format_events


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
