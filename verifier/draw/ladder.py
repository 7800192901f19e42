"""The ladder diagram of one TCP connection, as SVG: the geometry, in one place.

`ladder(conn, calls)` turns a `Connection` (its events on every capture interface) and, if known,
the socket calls of the programs into a `Ladder`: plain data, one `Arrow` per packet and one
`CallMark` per call. `render_svg(ladder)` draws it:

* columns: the client, the router and the server for a testbed capture (interfaces named
  ``host:ifname``; the router when its interfaces were captured or an ICMP error came from it), or
  the two endpoints (and, for ICMP errors from elsewhere, the network between them) for any other
  capture;
* each packet is one arrow with its flags and relative seq/ack, from the column where it started to
  the farthest column where it was seen (copies of one packet on several interfaces are one arrow,
  bending at each interface's capture time); a packet that never reached a captured column it was
  heading for ends in a cross ("dropped after here"); ICMP errors start at the router;
* time runs down the page. Every moment that matters (a packet leaving, a call entering or
  returning) gets at least one row, and the gap to the next one adds height growing with the log of
  its length, so a 50 us gap and a 3 s gap both show, and their order is exact; a packet's capture
  on a later interface lies between the rows, in proportion to its time (so arrows slant as far as
  the next moment allows); gaps over `BREAK_S` are marked as compressed, with their length;
* a socket call is a bar on its host's line from its entry to its return, named at the entry and
  with its result at the return;
* more than `max_arrows` packets: the first ones and the last ones are drawn, and the packets in
  between are summarised in one band (how many, of which kinds, over what time).

Pure: no I/O. The unit tests check the geometry on crafted packets and on the golden captures.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from verifier.analysis.calls import SyscallEvent
from verifier.analysis.trace import Event, format_endpoint
from verifier.wire import icmp_description

__all__ = ["Arrow", "BREAK_S", "CallMark", "KIND_COLOURS", "Ladder", "Omitted", "calls_for", "ladder", "render_svg",
           "testbed_host"]

#: The hosts of a testbed capture, in column order (interfaces are named "client:c0", "router:r1", ...).
TESTBED_HOSTS = ("client", "router", "server")
#: Arrow colour per event kind (the legend shows them).
KIND_COLOURS = {"SYN": "#1f5fbf", "SYN-ACK": "#1a8a3a", "ACK": "#666666", "DATA": "#111111", "FIN": "#7b3fb0",
                "RST": "#c62828", "ICMP": "#e07000", "OTHER": "#999999"}
#: A gap longer than this between two moments of the ladder is drawn as a compressed break.
BREAK_S = 0.2
DEFAULT_MAX_ARROWS = 120
_TAIL = 20  # packets drawn after the summarised middle of a long connection

# geometry, in px
ROW = 26  # the least height between two moments
_GAP_K = 10.0  # extra height per decade of a gap (in units of _GAP_UNIT_S)
_GAP_UNIT_S = 100e-6
_GAP_CAP = 60.0
_TOP = 58  # column headers
_BOTTOM = 24
_TIME_W = 86  # the time axis on the left
_CALL_W = 150  # room for call labels beside the outer columns
_SPAN_2 = 380  # client to server, two columns
_SPAN_3 = 460  # client to server, three columns
_STUB = 34  # a dropped packet's arrow beyond its last column
_BAND = 44  # the summary band of a long connection


@dataclass(frozen=True)
class Arrow:
    """One packet: `hops` are its segments (from_column, from_ns, to_column, to_ns), in path order.

    `dropped`: it was not seen at a captured column it was heading for (the last hop ends in a
    cross). `index`: its order in the ladder (0, 1, ...), by the time it was first seen."""

    index: int
    kind: str
    direction: str
    label: str
    title: str
    hops: tuple[tuple[int, int, int, int], ...]
    dropped: bool = False
    packet_index: int = -1
    frames: tuple[int, ...] = ()  # the capture indexes of all its copies

    @property
    def t_ns(self) -> int:
        return self.hops[0][1]


@dataclass(frozen=True)
class CallMark:
    """A socket call on a host's column, from its entry to its return."""

    column: int
    t_enter_ns: int
    t_return_ns: int
    enter_text: str
    return_text: str
    failed: bool = False


@dataclass(frozen=True)
class Omitted:
    """The packets of a long connection that are summarised instead of drawn."""

    count: int
    from_ns: int
    to_ns: int
    kinds: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Ladder:
    """What a ladder diagram shows, as plain data (`render_svg` draws it)."""

    columns: tuple[str, ...]
    subtitles: tuple[str, ...]
    arrows: tuple[Arrow, ...]
    calls: tuple[CallMark, ...] = ()
    title: str = ""
    t0_ns: int = 0
    omitted: Omitted | None = None
    notes: tuple[str, ...] = field(default=())


# ---- from a connection to plain data ---------------------------------------------------------------

def testbed_host(iface: str) -> str | None:
    """"client" for "client:c0" (a testbed capture's interface name), None for any other name."""
    host, sep, _ = iface.partition(":")
    return host if sep and host in TESTBED_HOSTS else None


def _label(e: Event, family: int) -> str:
    if e.kind == "ICMP":
        v6 = "v6" if family == 6 else ""
        return f"ICMP{v6} {e.icmp_type}/{e.icmp_code} {icmp_description(family, e.icmp_type, e.icmp_code)}"
    text = f"{e.flags or '.'} seq={e.seq}" + ("" if e.ack is None else f" ack={e.ack}")
    if e.payload_len:
        text += f" len={e.payload_len}"
    return text


def _title(e: Event, family: int, seen: Sequence[Event]) -> str:
    where = "; ".join(f"{o.iface} at +{o.t:.6f} s" for o in seen)
    text = f"{e.direction} {_label(e, family)}"
    if e.kind == "ICMP":
        text += f" from {e.icmp_from}, quoting seq={e.quoted_seq}"
    if e.mss is not None:
        text += f" mss={e.mss}"
    if e.window is not None and e.kind != "ICMP":
        text += f" win={e.window}"
    text += f"; frame {e.packet_index + 1}; seen on {where}"
    if e.note:
        text += f"; {e.note}"
    return text


def _signature(e: Event) -> tuple:
    return (e.direction, e.kind, e.flags, e.seq_abs, e.ack_abs, e.payload_len, e.icmp_type, e.icmp_code, e.quoted_seq)


_COPY_WINDOW = 16  # the packets with the same fields that a copy may belong to (the most recent ones)


def _copies(events: Sequence[Event], column_of) -> list[list[Event]]:
    """The events of every interface grouped into packets: a copy on a further column of the path of a
    packet seen just before joins that packet (the most recent one with the same fields not yet seen
    there), so a retransmission, seen again on the first column, starts a packet of its own."""
    groups: list[list[Event]] = []
    open_by_sig: dict[tuple, list[list[Event]]] = {}
    for e in events:
        col = column_of(e)
        sig = _signature(e)
        forward = 1 if e.direction == "c>s" else -1
        target = None
        for g in reversed(open_by_sig.get(sig, ())[-_COPY_WINDOW:]):  # copies are close: look back a little
            last = column_of(g[-1])
            if (col - last) * forward >= 0 and all(o.iface != e.iface for o in g):
                target = g
                break
        if target is None:
            target = [e]
            groups.append(target)
            open_by_sig.setdefault(sig, []).append(target)
        else:
            target.append(e)
    return groups


def ladder(conn, calls: Mapping[str, Iterable[SyscallEvent]] | None = None, *, interfaces: Iterable[str] = (),
           max_arrows: int = DEFAULT_MAX_ARROWS, title: str | None = None) -> Ladder:
    """The `Ladder` of a `Connection`: its packets on every interface, and the socket calls of
    `calls` (host name -> that host's calls; see `calls_for` to pick a connection's own).
    `interfaces`: every interface of the capture (`trace.interfaces`), so that a packet that never
    reached a host whose interface was captured is drawn as dropped; by default, the connection's own."""
    events = conn.all_events()
    hosts = {testbed_host(e.iface) for e in events}
    testbed = bool(events) and None not in hosts
    all_hosts = hosts | {testbed_host(i) for i in interfaces} - {None}
    client_ep, server_ep = format_endpoint(conn.client), format_endpoint(conn.server)
    endpoints = {conn.client[0]: 0, conn.server[0]: None}
    if testbed:
        # The router's column when the capture has its interfaces or an ICMP error came from between
        # the endpoints (not for a pair testbed, nor a capture of the client's side alone).
        icmp_between = any(e.kind == "ICMP" and e.icmp_from not in endpoints for e in events)
        names = list(TESTBED_HOSTS) if "router" in all_hosts or icmp_between else ["client", "server"]
        col_of = {h: i for i, h in enumerate(names)}
        captured = {col_of[h] for h in all_hosts if h in col_of}

        def column_of(e: Event) -> int:
            return col_of[testbed_host(e.iface)]
    else:
        # Any other capture: the packets as one interface (the primary) saw them, endpoint to endpoint.
        events = list(conn.events)
        icmp_elsewhere = any(e.kind == "ICMP" and e.icmp_from not in endpoints for e in events)
        names = ["client", "network", "server"] if icmp_elsewhere else ["client", "server"]
        captured = set()

        def column_of(e: Event) -> int:
            return 0
    last_col = len(names) - 1
    endpoints[conn.server[0]] = last_col
    subtitles = {0: client_ep, last_col: server_ep}
    for i, n in enumerate(names):
        if testbed:
            ifs = [x for x in dict.fromkeys([*conn.interfaces, *interfaces]) if testbed_host(x) == n]
            extra = ", ".join(x.split(":", 1)[1] for x in ifs) if ifs else "not captured"
            subtitles[i] = f"{subtitles.get(i, '')}  ({extra})".strip() if i in subtitles else f"({extra})"
        elif i not in subtitles:
            icmp_from = sorted({e.icmp_from for e in events if e.kind == "ICMP" and e.icmp_from not in endpoints})
            subtitles[i] = "ICMP from " + ", ".join(icmp_from)
    arrows: list[Arrow] = []
    groups = _copies(events, column_of) if testbed else [[e] for e in events]
    for g in groups:
        e = g[0]
        forward = 1 if e.direction == "c>s" else -1
        dest = last_col if forward == 1 else 0
        if e.kind == "ICMP":
            origin = endpoints.get(e.icmp_from, 1 if last_col == 2 else (0 if forward == 1 else last_col))
        else:
            origin = 0 if forward == 1 else last_col
        if testbed:
            # (column, first time, last time) along the path
            seen: list[list[int]] = []
            for o in g:
                c = column_of(o)
                if seen and seen[-1][0] == c:
                    seen[-1][2] = o.ts_ns
                else:
                    seen.append([c, o.ts_ns, o.ts_ns])
            if seen[0][0] != origin:
                seen.insert(0, [origin, seen[0][1], seen[0][1]])
            hops = [(a[0], a[2], b[0], b[1]) for a, b in zip(seen, seen[1:])]
            end_col, end_t = seen[-1][0], seen[-1][2]
            dropped = False
            if end_col != dest:
                if any((c - end_col) * forward > 0 for c in captured):
                    dropped = True  # a captured column further on never saw it: a stub with a cross
                    hops.append((end_col, end_t, end_col, end_t))
                else:  # not captured beyond: drawn on to its destination
                    hops.append((end_col, end_t, dest, end_t))
            elif not hops:
                hops.append((end_col, end_t, dest, end_t))
        else:
            hops = [(origin, e.ts_ns, dest, e.ts_ns)]
            dropped = False
        arrows.append(Arrow(index=len(arrows), kind=e.kind, direction=e.direction, label=_label(e, conn.family),
                            title=_title(e, conn.family, g), hops=tuple(hops), dropped=dropped,
                            packet_index=e.packet_index, frames=tuple(o.packet_index for o in g)))
    arrows.sort(key=lambda a: (a.t_ns, a.index))
    arrows = [Arrow(i, a.kind, a.direction, a.label, a.title, a.hops, a.dropped, a.packet_index, a.frames)
              for i, a in enumerate(arrows)]
    omitted = None
    if max_arrows and len(arrows) > max_arrows:
        tail = min(_TAIL, max_arrows // 4)
        head = max_arrows - tail
        middle = arrows[head:len(arrows) - tail]
        kinds = Counter(a.kind for a in middle)
        omitted = Omitted(len(middle), middle[0].t_ns, middle[-1].hops[-1][3], tuple(kinds.most_common()))
        arrows = arrows[:head] + arrows[len(arrows) - tail:]
    marks: list[CallMark] = []
    for host, evs in (calls or {}).items():
        if host not in names:
            continue
        col = names.index(host)
        for c in evs:
            if omitted and omitted.from_ns < c.t_enter_ns < omitted.to_ns:
                continue
            marks.append(_call_mark(col, c))
    marks.sort(key=lambda m: m.t_enter_ns)
    t0 = min([a.t_ns for a in arrows] + [m.t_enter_ns for m in marks], default=0)
    head = title if title is not None else (
        f"#{conn.id} {client_ep} > {server_ep} IPv{conn.family}: {conn.outcome}"
        + (f" by the {conn.reset_by}" if conn.reset_by else "") + f" ({conn.detail})")
    notes = []
    if not testbed and conn.interfaces:
        notes.append(f"as seen on {conn.primary_interface}")
    return Ladder(columns=tuple(names), subtitles=tuple(subtitles[i] for i in range(len(names))),
                  arrows=tuple(arrows), calls=tuple(marks), title=head, t0_ns=t0, omitted=omitted, notes=tuple(notes))


def _call_mark(col: int, c: SyscallEvent) -> CallMark:
    args = ", ".join(f"{k}={v}" for k, v in c.args.items() if k != "fd")
    result = f"= {c.ret}" + (f" {c.errno}" if c.errno else "")
    if c.addr is not None and c.call in ("getsockname", "getpeername", "accept"):
        result += f" ({c.addr} port {c.port})"
    return CallMark(col, c.t_enter_ns, max(c.t_return_ns, c.t_enter_ns), f"{c.call}({args})", result,
                    failed=c.ret < 0)


def calls_for(conn, host_calls: Mapping[str, Iterable[SyscallEvent]]) -> dict[str, list[SyscallEvent]]:
    """The calls of `host_calls` (host name -> calls) that belong to `conn`.

    On the client: the process whose getsockname() returned the connection's client port, else the
    processes whose connect() was under way when its first packet left, else the only process
    there; their calls under way from the first packet to 0.1 s after the last, and the four before
    (socket, bind, setsockopt, connect). On the server: the accept() that returned this client's
    endpoint, then the acceptor's calls on the descriptor it returned (up to an accept() that
    returns the same number again) and the first fork() after it, and the forked child's calls while
    the connection lasts; with no such accept(), the only process there, while the connection lasts."""
    events = conn.all_events()
    if not events:
        return {}
    first, last = events[0].ts_ns, events[-1].ts_ns
    client_addr, client_port = conn.client
    out: dict[str, list[SyscallEvent]] = {}
    for host, evs in host_calls.items():
        evs = sorted(evs, key=lambda c: c.t_enter_ns)
        pids = {c.pid for c in evs}
        chosen: list[SyscallEvent] = []
        if host == "client":
            keep = {c.pid for c in evs if c.call == "getsockname" and c.port == client_port}
            if not keep:
                keep = {c.pid for c in evs if c.call == "connect" and c.t_enter_ns <= first <= c.t_return_ns + 1}
            if not keep and len(pids) == 1:
                keep = set(pids)
            lead = [c for c in evs if c.pid in keep and c.t_return_ns < first - 1]
            chosen = lead[-4:] + _during(evs, keep, first, last)
        elif host == "server":
            acc = next((c for c in evs if c.call == "accept" and c.port == client_port and c.addr is not None
                        and _same_addr(c.addr, client_addr)), None)
            if acc is None:
                chosen = _during(evs, set(pids) if len(pids) == 1 else set(), first, last)
            else:
                fd, t = acc.ret, acc.t_return_ns
                again = next((c.t_return_ns for c in evs if c.pid == acc.pid and c.call == "accept" and c.ret == fd
                              and c.t_return_ns > t), None)
                mine = [c for c in evs if c.pid == acc.pid and c.t_enter_ns >= t and (again is None or
                        c.t_enter_ns < again) and c.args.get("fd") == fd and c.call != "accept"]
                fork = next((c for c in evs if c.pid == acc.pid and c.call == "fork" and c.t_enter_ns >= t), None)
                child = fork.extra.get("child") if fork is not None else None
                if fork is not None and (again is None or fork.t_enter_ns < again):
                    mine.append(fork)
                else:
                    child = None
                chosen = [acc] + mine + (_during(evs, {child}, first, last) if child else [])
                chosen.sort(key=lambda c: c.t_enter_ns)
        if chosen:
            out[host] = chosen
    return out


def _during(evs: Sequence[SyscallEvent], pids: set, first: int, last: int) -> list[SyscallEvent]:
    """The calls of `pids` under way from `first` to `_AFTER_NS` after `last`."""
    return [c for c in evs if c.pid in pids and c.t_return_ns >= first - 1 and c.t_enter_ns <= last + _AFTER_NS]


_AFTER_NS = 100_000_000


def _same_addr(a: str, b: str) -> bool:
    a = a.removeprefix("::ffff:")
    b = b.removeprefix("::ffff:")
    return a == b or a.rstrip("0:") == b.rstrip("0:")


# ---- the vertical axis -------------------------------------------------------------------------

def gap_height(gap_s: float) -> float:
    """The height between two consecutive moments `gap_s` apart: one row, plus `_GAP_K` px per decade
    of the gap over 100 us, at most `_GAP_CAP` px more."""
    return ROW + min(_GAP_CAP, _GAP_K * math.log10(1 + max(gap_s, 0.0) / _GAP_UNIT_S))


class TimeAxis:
    """Capture time (ns) to y (px): monotonic, one row or more between consecutive moments, linear
    in between them (so a packet's arrival between two moments lies between their rows)."""

    def __init__(self, moments: Iterable[int], top: float, breaks: Sequence[tuple[int, int, float]] = ()) -> None:
        self.points = sorted(set(moments))
        extra = {a: h for a, _, h in breaks}  # a summary band after moment a
        self.ys = []
        y = top
        for i, t in enumerate(self.points):
            if i:
                y += gap_height((t - self.points[i - 1]) / 1e9) + extra.get(self.points[i - 1], 0.0)
            self.ys.append(y)

    @property
    def bottom(self) -> float:
        return self.ys[-1] if self.ys else 0.0

    def y(self, t_ns: int) -> float:
        pts, ys = self.points, self.ys
        if not pts:
            return 0.0
        if t_ns <= pts[0]:
            return ys[0]
        if t_ns >= pts[-1]:
            return ys[-1]
        lo, hi = 0, len(pts) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pts[mid] <= t_ns:
                lo = mid
            else:
                hi = mid
        f = (t_ns - pts[lo]) / (pts[hi] - pts[lo])
        return ys[lo] + f * (ys[hi] - ys[lo])

    def gaps(self) -> list[tuple[int, int]]:
        """Consecutive moments more than BREAK_S apart."""
        return [(a, b) for a, b in zip(self.points, self.points[1:]) if (b - a) / 1e9 > BREAK_S]


def _seconds(ns: float) -> str:
    """A duration for a label: "3.02 s" or "12.34 s", "1.000 s", "12.5 ms", "40 us"."""
    s = ns / 1e9
    if s >= 9.995:
        return f"{s:.2f} s"
    if s >= 0.9995:
        return f"{s:.3f} s"
    if s >= 0.00095:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


# ---- drawing -------------------------------------------------------------------------------------

def column_xs(n: int) -> list[float]:
    """x of each column's line."""
    left = _TIME_W + _CALL_W
    span = _SPAN_3 if n == 3 else _SPAN_2
    return [left + span * i / (n - 1) for i in range(n)]


def render_svg(lad: Ladder, *, colours: Mapping[int, str] | None = None, crisp: bool = False,
               mark_frame: int | None = None) -> str:
    """The SVG text of a ladder. `colours`: arrow index -> colour, overriding the colour of its kind
    (the browser test gives each arrow its own); `crisp`: no anti-aliasing (exact colours in a
    screenshot); `mark_frame`: the packet with a copy of that capture index (`Event.packet_index`)
    is highlighted as the offending one. Every arrow is a ``<g class="pkt" data-index=...>`` with a
    ``<title>`` (shown on hover: the packet in full, with each interface's capture time)."""
    xs = column_xs(len(lad.columns))
    width = xs[-1] + _CALL_W + 20
    # A row for each packet's departure and each call's entry and return; a packet's later hops (its
    # capture times on the other interfaces) fall between rows, where their times put them.
    moments = [a.t_ns for a in lad.arrows] + [t for m in lad.calls for t in (m.t_enter_ns, m.t_return_ns)]
    ends = [h[3] for a in lad.arrows for h in a.hops]
    if ends and (not moments or max(ends) > max(moments)):
        moments.append(max(ends))
    breaks = []
    if lad.omitted is not None:
        before = [a.hops[-1][3] for a in lad.arrows if a.t_ns <= lad.omitted.from_ns]
        if before:
            breaks.append((max(before), 0, float(_BAND)))
    axis = TimeAxis(moments, _TOP + 20, breaks)
    height = axis.bottom + _BOTTOM + 20 + (14 * len(lad.notes))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans Mono, monospace" font-size="11"'
           + (' shape-rendering="crispEdges"' if crisp else '') + '>']
    out.append(f'<title>{escape(lad.title)}</title>')
    out.append(f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>')
    # column headers and lines
    for i, (name, sub) in enumerate(zip(lad.columns, lad.subtitles)):
        x = xs[i]
        out.append(f'<text x="{x:.1f}" y="18" text-anchor="middle" font-weight="bold" font-size="13">{escape(name)}'
                   f'</text>')
        out.append(f'<text x="{x:.1f}" y="34" text-anchor="middle" fill="#555">{escape(sub)}</text>')
        out.append(f'<line class="col" x1="{x:.1f}" y1="{_TOP:.0f}" x2="{x:.1f}" y2="{axis.bottom + 14:.1f}" '
                   f'stroke="#bbbbbb" stroke-width="1"/>')
    out.append(f'<text x="{_TIME_W - 6}" y="{_TOP + 6}" text-anchor="end" fill="#888">seconds</text>')
    # compressed gaps
    for a, b in axis.gaps():
        y = (axis.y(a) + axis.y(b)) / 2
        if lad.omitted is not None and a < lad.omitted.to_ns and b > lad.omitted.from_ns:
            continue
        out.append(f'<g class="gap"><title>{escape(_seconds(b - a))} without a packet or a call, drawn '
                   f'compressed</title><line x1="{_TIME_W - 8}" y1="{y:.1f}" x2="{xs[-1] + 24:.1f}" y2="{y:.1f}" '
                   f'stroke="#dddddd" stroke-dasharray="3 4"/>'
                   f'<text x="4" y="{y + 4:.1f}" fill="#888">&#8942; {escape(_seconds(b - a))}</text></g>')
    # the summary band
    if lad.omitted is not None:
        om = lad.omitted
        y0 = (axis.y(breaks[0][0]) if breaks else _TOP) + 8
        kinds = ", ".join(f"{n} {k}" for k, n in om.kinds)
        out.append(f'<g class="omitted"><rect x="{xs[0]:.1f}" y="{y0:.1f}" width="{xs[-1] - xs[0]:.1f}" '
                   f'height="{_BAND - 16}" fill="#f3f3f3" stroke="#cccccc"/>'
                   f'<text x="{(xs[0] + xs[-1]) / 2:.1f}" y="{y0 + 17:.1f}" text-anchor="middle">'
                   f'{om.count} packets not drawn ({escape(kinds)}) over '
                   f'{escape(_seconds(om.to_ns - om.from_ns))}</text></g>')
    # socket calls
    for m in lad.calls:
        x = xs[m.column]
        y1, y2 = axis.y(m.t_enter_ns), axis.y(m.t_return_ns)
        left = m.column == 0 or (m.column != len(xs) - 1 and m.column * 2 < len(xs) - 1)
        tx = x - 8 if left else x + 8
        anchor = "end" if left else "start"
        fill = "#b00020" if m.failed else "#0b5394"
        out.append(f'<g class="call"><title>{escape(m.enter_text)} {escape(m.return_text)}</title>'
                   f'<rect x="{x - 3:.1f}" y="{y1:.1f}" width="6" height="{max(y2 - y1, 2):.1f}" fill="{fill}" '
                   f'fill-opacity="0.35" stroke="{fill}"/>'
                   + _call_texts(m, tx, y1, y2, anchor, fill)
                   + '</g>')
    # packets
    for a in lad.arrows:
        colour = (colours or {}).get(a.index) or KIND_COLOURS.get(a.kind, "#333333")
        dropped_attr = ' data-dropped="1"' if a.dropped else ""
        parts = [f'<g class="pkt" data-index="{a.index}" data-kind="{a.kind}" data-frame="{a.packet_index + 1}"'
                 f'{dropped_attr}><title>{escape(a.title)}</title>']
        pts = []
        for c1, t1, c2, t2 in a.hops:
            pts.append((xs[c1], axis.y(t1)))
            pts.append((xs[c2], axis.y(t2)))
        sx, sy = pts[0]
        ex, ey = pts[-1]
        if mark_frame is not None and (a.packet_index == mark_frame or mark_frame in a.frames):
            parts.insert(1, f'<rect class="mark" x="{_TIME_W - 4}" y="{min(sy, ey) - 16:.1f}" '
                            f'width="{xs[-1] - _TIME_W + _CALL_W:.1f}" height="{abs(ey - sy) + 22:.1f}" '
                            f'fill="#fff3b0"/><text x="{xs[-1] + 12:.1f}" y="{(sy + ey) / 2 + 4:.1f}" '
                            f'font-weight="bold">&#9664; offending packet</text>')
        direction = 1 if a.direction == "c>s" else -1
        if a.dropped:
            ex = ex + direction * _STUB
            pts[-1] = (ex, ey)
        path = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y) in enumerate(pts))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"'
                     + (' stroke-dasharray="5 3"' if a.dropped else '') + '/>')
        if a.dropped:
            parts.append(f'<path d="M{ex - 5:.1f},{ey - 5:.1f} L{ex + 5:.1f},{ey + 5:.1f} M{ex - 5:.1f},{ey + 5:.1f} '
                         f'L{ex + 5:.1f},{ey - 5:.1f}" stroke="{colour}" stroke-width="2"/>')
        else:
            # the arrowhead, along the last segment
            px, py = pts[-2]
            ang = math.atan2(ey - py, ex - px) if (ex, ey) != (px, py) else (0 if direction == 1 else math.pi)
            w1 = (ex - 9 * math.cos(ang - 0.4), ey - 9 * math.sin(ang - 0.4))
            w2 = (ex - 9 * math.cos(ang + 0.4), ey - 9 * math.sin(ang + 0.4))
            parts.append(f'<polygon points="{ex:.1f},{ey:.1f} {w1[0]:.1f},{w1[1]:.1f} {w2[0]:.1f},{w2[1]:.1f}" '
                         f'fill="{colour}"/>')
        mx = (sx + ex) / 2
        my = axis.y(a.t_ns) + (ey - sy) / 2
        parts.append(f'<text x="{mx:.1f}" y="{my - 5:.1f}" text-anchor="middle" fill="{colour}" '
                     f'stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(a.label)}</text>')
        parts.append(f'<text class="t" x="{_TIME_W - 6}" y="{axis.y(a.t_ns) + 4:.1f}" text-anchor="end" '
                     f'fill="#555">{(a.t_ns - lad.t0_ns) / 1e9:.6f}</text>')
        parts.append('</g>')
        out.append("".join(parts))
    for k, note in enumerate(lad.notes):
        out.append(f'<text x="4" y="{axis.bottom + _BOTTOM + 14 * (k + 1):.1f}" fill="#777">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _call_texts(m: CallMark, x: float, y1: float, y2: float, anchor: str, fill: str) -> str:
    head = f'<text x="{x:.1f}" y="{{:.1f}}" text-anchor="{anchor}" fill="{fill}">{{}}</text>'
    if y2 - y1 < 12:  # a quick call: one line
        return head.format(y1 + 4, escape(_clip(f"{m.enter_text} {m.return_text}", 40)))
    return head.format(y1 + 4, escape(_clip(m.enter_text, 24))) + head.format(y2 + 4, escape(_clip(m.return_text, 24)))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def legend_svg() -> str:
    """A one-line legend of the arrow colours."""
    items = []
    x = 4
    for kind, colour in KIND_COLOURS.items():
        items.append(f'<line x1="{x}" y1="10" x2="{x + 22}" y2="10" stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{x + 26}" y="14">{kind}</text>')
        x += 30 + 8 * len(kind) + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="legend" width="{x}" height="20" '
            f'font-family="DejaVu Sans Mono, monospace" font-size="11">' + "".join(items) + "</svg>")
