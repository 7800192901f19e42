"""Grouping decoded packets into TCP connections and per-interface events.

A `Trace` is built from `Packet`s (see `verifier.wire`) and holds the
`Connection`s found in them. Each connection keeps, per capture interface, the
list of `Event`s seen there, with sequence numbers relative to each side's
initial sequence number, so that tests and reports can talk about "SYN,
SYN-ACK ack=1, RST" the way a network engineer reads a tcpdump.

Nothing here reads files or captures traffic; `verifier.analysis.tracefile.load_trace`
glues the reader, the decoder and `Trace.from_packets` together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from verifier.wire import ACK, FIN, RST, SYN, Packet
from verifier.pcap import InterfaceStats

__all__ = ["Connection", "Event", "Trace", "format_endpoint", "format_events", "icmp_description"]

EVENT_KINDS = ("SYN", "SYN-ACK", "ACK", "DATA", "FIN", "RST", "ICMP", "OTHER")

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Event:
    """One packet of a connection as seen on one interface.

    `seq`/`ack` are relative to the sending / receiving side's initial
    sequence number (signed, so a segment just below the ISN shows as -1);
    `ack` is None when the ACK flag is clear. `kind` is one of SYN, SYN-ACK,
    ACK, DATA, FIN (also with data), RST (also with ACK), ICMP, or OTHER for a
    segment with none of SYN/FIN/RST/ACK and no payload. ICMP events describe
    an ICMP error quoting a packet of this connection: `direction` is the way
    the error travels (back towards the sender of the quoted packet) and
    `quoted_seq` is relative to that sender's ISN.
    """

    t: float  # seconds since the trace's first packet
    ts_ns: int  # absolute capture time, ns since the epoch (CLOCK_REALTIME)
    iface: str
    direction: str  # "c>s" or "s>c"
    kind: str
    flags: str  # TCP flag letters, "" for ICMP
    seq: int | None
    ack: int | None
    seq_abs: int | None
    ack_abs: int | None
    payload_len: int
    packet_index: int  # index in the capture file (Wireshark frame number - 1)
    window: int | None = None
    mss: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_from: str | None = None
    quoted_seq: int | None = None
    mtu: int | None = None

    @property
    def from_client(self) -> bool:
        return self.direction == "c>s"


_ICMP4_NAMES = {
    (3, 0): "net unreachable",
    (3, 1): "host unreachable",
    (3, 2): "protocol unreachable",
    (3, 3): "port unreachable",
    (3, 4): "fragmentation needed",
    (3, 9): "net administratively prohibited",
    (3, 10): "host administratively prohibited",
    (3, 13): "communication administratively prohibited",
    (11, 0): "TTL exceeded in transit",
    (11, 1): "fragment reassembly time exceeded",
}
_ICMP6_NAMES = {
    (1, 0): "no route to destination",
    (1, 1): "administratively prohibited",
    (1, 3): "address unreachable",
    (1, 4): "port unreachable",
    (1, 5): "source address failed policy",
    (1, 6): "reject route",
    (3, 0): "hop limit exceeded",
}
_ICMP4_TYPES = {3: "destination unreachable", 11: "time exceeded", 12: "parameter problem"}
_ICMP6_TYPES = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem"}


def icmp_description(family: int, icmp_type: int | None, icmp_code: int | None) -> str:
    """A short human name for an ICMP/ICMPv6 error type and code."""
    names, types = (_ICMP4_NAMES, _ICMP4_TYPES) if family == 4 else (_ICMP6_NAMES, _ICMP6_TYPES)
    return names.get((icmp_type, icmp_code)) or types.get(icmp_type, "error")  # type: ignore[arg-type]


def format_endpoint(ep: Endpoint) -> str:
    """"addr:port", with IPv6 addresses in brackets."""
    addr, port = ep
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _rel(value: int | None, base: int | None) -> int | None:
    if value is None or base is None:
        return value
    d = (value - base) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def _kind(flags: int, payload_len: int) -> str:
    if flags & RST:
        return "RST"
    if flags & SYN:
        return "SYN-ACK" if flags & ACK else "SYN"
    if flags & FIN:
        return "FIN"
    if payload_len:
        return "DATA"
    if flags & ACK:
        return "ACK"
    return "OTHER"


def format_events(events: Sequence[Event], *, mark: Event | None = None, family: int | None = None) -> str:
    """A fixed-width ladder, one line per event, e.g.

    `  0.000000  client:eth0  c>s  S    seq=0 ack=-  len=0`

    `mark` (an event of the list) gets a `>>` in the margin.
    """
    if not events:
        return "  (no packets)"
    iw = max(len(e.iface) for e in events)
    fw = max([4] + [len(e.flags) for e in events if e.kind != "ICMP"])
    sw = max((len(str(e.seq)) for e in events if e.seq is not None), default=1)
    aw = max((len(str(e.ack)) for e in events if e.ack is not None), default=1)
    lines = []
    for e in events:
        margin = ">>" if mark is not None and e == mark else "  "
        head = f"{margin}{e.t:10.6f}  {e.iface:<{iw}}  {e.direction}  "
        if e.kind == "ICMP":
            fam = family if family is not None else (6 if e.icmp_from and ":" in e.icmp_from else 4)
            quoted = "s>c" if e.direction == "c>s" else "c>s"
            text = (
                f"ICMP{'v6' if fam == 6 else ''} type={e.icmp_type} code={e.icmp_code} "
                f"({icmp_description(fam, e.icmp_type, e.icmp_code)}) from {e.icmp_from}, "
                f"quoting {quoted} seq={'-' if e.quoted_seq is None else e.quoted_seq}"
            )
            if e.mtu is not None:
                text += f" mtu={e.mtu}"
            lines.append(head + text)
            continue
        ack = "-" if e.ack is None else str(e.ack)
        line = f"{head}{e.flags:<{fw}} seq={e.seq!s:<{sw}} ack={ack:<{aw}}  len={e.payload_len}"
        if e.mss is not None:
            line += f"  mss={e.mss}"
        lines.append(line)
    return "\n".join(lines)


class Connection:
    """One TCP connection attempt: a 4-tuple plus one client ISN.

    The client is the sender of the SYN (without ACK). A connection whose
    first packet is not such a SYN is `partial`; it is then oriented from its
    first packet: the receiver of a SYN-ACK is the client, otherwise the
    sender of the first packet is. Events are kept per capture interface;
    `events` are those of the primary interface, where the connection was
    seen first (normally the client's own interface).
    """

    def __init__(
        self, number: int, attempt: int, family: int, client: Endpoint, server: Endpoint, partial: bool
    ) -> None:
        self.number = number  # position in trace.connections
        self.attempt = attempt  # 0 for the first connection on this 4-tuple, then 1, ...
        self.family = family
        self.client = client
        self.server = server
        self.partial = partial
        self.isn_client: int | None = None
        self.isn_server: int | None = None
        self.interfaces: list[str] = []
        self.packets: list[Packet] = []  # TCP and ICMP, all interfaces, in time order
        self._events: dict[str, list[Event]] = {}
        self._closed = False  # RST seen, or FINs from both sides
        self._fins: set[bool] = set()

    # ---- building (used by Trace.from_packets)

    def _add(self, p: Packet) -> None:
        if p.iface not in self._events:
            self._events[p.iface] = []
            self.interfaces.append(p.iface)
        self.packets.append(p)
        if p.proto != "tcp":
            return
        from_client = p.src == self.client[0] and p.sport == self.client[1]
        flags = p.flags
        if flags & SYN:
            if from_client and not flags & ACK:
                if self.isn_client is None:
                    self.isn_client = p.seq
            elif not from_client and self.isn_server is None:
                self.isn_server = p.seq
        if flags & RST:
            self._closed = True
        if flags & FIN:
            self._fins.add(from_client)
            if len(self._fins) == 2:
                self._closed = True

    def _finish(self, t0_ns: int) -> None:
        client_base = self.isn_client
        server_base = self.isn_server
        client_ack = server_ack = None  # first ACK value each side sent
        for p in self.packets:
            if p.proto != "tcp":
                continue
            if (p.src, p.sport) == self.client:
                if client_base is None:
                    client_base = p.seq
                if client_ack is None and p.flags & ACK:
                    client_ack = p.ack
            else:
                if server_base is None:
                    server_base = p.seq
                if server_ack is None and p.flags & ACK:
                    server_ack = p.ack
        # A side never seen sending: number the peer's first ACK of it as 1.
        if client_base is None and server_ack is not None:
            client_base = (server_ack - 1) & 0xFFFFFFFF
        if server_base is None and client_ack is not None:
            server_base = (client_ack - 1) & 0xFFFFFFFF

        for p in self.packets:
            t = (p.ts_ns - t0_ns) / 1e9
            if p.proto == "tcp":
                from_client = (p.src, p.sport) == self.client
                own, peer = (client_base, server_base) if from_client else (server_base, client_base)
                has_ack = p.flags & ACK
                ev = Event(
                    t=t,
                    ts_ns=p.ts_ns,
                    iface=p.iface,
                    direction="c>s" if from_client else "s>c",
                    kind=_kind(p.flags, p.payload_len),
                    flags=p.flag_str,
                    seq=_rel(p.seq, own),
                    ack=_rel(p.ack, peer) if has_ack else None,
                    seq_abs=p.seq,
                    ack_abs=p.ack if has_ack else None,
                    payload_len=p.payload_len,
                    packet_index=p.index,
                    window=p.window,
                    mss=p.options_mss,
                )
            else:
                q = p.quoted
                assert q is not None
                quoted_from_client = (q.src, q.sport) == self.client
                ev = Event(
                    t=t,
                    ts_ns=p.ts_ns,
                    iface=p.iface,
                    direction="s>c" if quoted_from_client else "c>s",
                    kind="ICMP",
                    flags="",
                    seq=None,
                    ack=None,
                    seq_abs=None,
                    ack_abs=None,
                    payload_len=0,
                    packet_index=p.index,
                    icmp_type=p.icmp_type,
                    icmp_code=p.icmp_code,
                    icmp_from=p.src,
                    quoted_seq=_rel(q.seq, client_base if quoted_from_client else server_base),
                    mtu=p.mtu,
                )
            self._events[p.iface].append(ev)

    # ---- queries

    @property
    def primary_interface(self) -> str:
        return self.interfaces[0]

    @property
    def events(self) -> list[Event]:
        """Events on the primary interface, in time order."""
        return self._events[self.interfaces[0]]

    def at(self, iface: str) -> list[Event]:
        """Events seen on `iface` (empty if the connection never showed up there)."""
        return self._events.get(iface, [])

    def select(self, kind: str | None = None, direction: str | None = None, *, iface: str | None = None) -> list[Event]:
        """Events of a kind and/or direction ("c>s"/"s>c"), primary interface by default."""
        if kind is not None and kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
        events = self.events if iface is None else self.at(iface)
        return [
            e for e in events if (kind is None or e.kind == kind) and (direction is None or e.direction == direction)
        ]

    def first(self, kind: str, direction: str | None = None) -> Event | None:
        """The first event of that kind (and direction) on the primary interface."""
        found = self.select(kind, direction)
        return found[0] if found else None

    def syns(self) -> list[Event]:
        """The client's SYNs on the primary interface: the first plus retransmissions."""
        return self.select("SYN", "c>s")

    def icmp_events(self) -> list[Event]:
        """Attached ICMP errors on every interface (one per copy captured)."""
        return [e for iface in self.interfaces for e in self._events[iface] if e.kind == "ICMP"]

    @property
    def start_ns(self) -> int:
        return self.packets[0].ts_ns

    @property
    def outcome(self) -> str:
        """A few words on how the exchange went, from the primary interface."""
        kinds = {(e.kind, e.direction) for e in self.events}
        if ("RST", "s>c") in kinds and ("SYN-ACK", "s>c") not in kinds and ("SYN", "c>s") in kinds:
            return "refused"
        if ("RST", "c>s") in kinds:
            return "reset by client"
        if ("RST", "s>c") in kinds:
            return "reset by server"
        fins = {d for k, d in kinds if k == "FIN"}
        if len(fins) == 2:
            return "closed"
        if fins:
            return "half-closed by " + ("client" if "c>s" in fins else "server")
        if ("SYN-ACK", "s>c") in kinds:
            return "established" if ("ACK", "c>s") in kinds or ("DATA", "c>s") in kinds else "syn-received"
        if self.icmp_events():
            return "icmp error"
        if ("SYN", "c>s") in kinds:
            return "no answer"
        return "mid-stream"

    def describe(self) -> str:
        """One line: number, endpoints, family, outcome, SYN count, interfaces."""
        syns = len(self.syns())
        extra = " partial" if self.partial else ""
        attempt = f" attempt {self.attempt + 1}" if self.attempt else ""
        return (
            f"#{self.number} {format_endpoint(self.client)} > {format_endpoint(self.server)} "
            f"IPv{self.family}{attempt}{extra}: {self.outcome}, {syns} SYN{'s' if syns != 1 else ''}, "
            f"{len(self.events)} packets on {self.primary_interface}"
            + (f" (also seen on {', '.join(self.interfaces[1:])})" if len(self.interfaces) > 1 else "")
        )

    def all_events(self) -> list[Event]:
        """Events of every interface merged in time order (copies of a packet included)."""
        return sorted((e for i in self.interfaces for e in self._events[i]), key=attrgetter("ts_ns"))

    def ladder(self, iface: str | None = None, *, all_interfaces: bool = False, mark: Event | None = None) -> str:
        """Header line plus the event ladder of one interface (default: primary) or all."""
        if all_interfaces:
            events = self.all_events()
            where = "all interfaces"
        else:
            where = iface or self.primary_interface
            events = self.at(where)
        header = f"{format_endpoint(self.client)} > {format_endpoint(self.server)} on {where}:"
        return header + "\n" + format_events(events, mark=mark, family=self.family)

    def __repr__(self) -> str:
        return f"<Connection {self.describe()}>"


def _canon_addr(addr: object) -> str:
    return str(ipaddress.ip_address(str(addr)))


class Trace:
    """The TCP connections (and unmatched ICMP errors) found in a capture.

    Build one with `Trace.from_packets` or `verifier.analysis.tracefile.load_trace`.
    `malformed` / `skipped` count packets the loader could not decode / that
    were not TCP or ICMP errors; `from_packets` leaves them at 0.
    """

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.t0_ns = 0
        self.connections: list[Connection] = []
        self.unmatched_icmp: list[Packet] = []
        self.interfaces: list[str] = []
        self.packet_count = 0
        self.malformed = 0
        self.skipped = 0
        self.truncated = False
        self.capture_stats: list[InterfaceStats] = []  # from the capture file's ISBs

    @classmethod
    def from_packets(cls, packets: Iterable[Packet | None], *, source: str | None = None) -> Trace:
        """Group packets into connections; they are first sorted (stably) by time.

        None items (frames `decode` skipped) are ignored, so decoder output
        can be passed straight in.
        """
        trace = cls(source)
        # Captures from several interfaces interleave slightly out of order.
        pkts = sorted((p for p in packets if p is not None), key=attrgetter("ts_ns"))
        trace.packet_count = len(pkts)
        if not pkts:
            return trace
        trace.t0_ns = pkts[0].ts_ns
        current: dict[tuple, Connection] = {}  # newest attempt per 4-tuple
        by_isn: dict[tuple, Connection] = {}  # (4-tuple, client endpoint, ISN) -> attempt
        attempts: dict[tuple, int] = {}
        seen_ifaces: dict[str, None] = {}

        def new_connection(key: tuple, family: int, client: Endpoint, server: Endpoint, partial: bool) -> Connection:
            n = attempts.get(key, 0)
            attempts[key] = n + 1
            conn = Connection(len(trace.connections), n, family, client, server, partial)
            trace.connections.append(conn)
            current[key] = conn
            return conn

        for p in pkts:
            seen_ifaces.setdefault(p.iface)
            if p.proto == "tcp":
                a, b = (p.src, p.sport), (p.dst, p.dport)
                key = (p.family, a, b) if a <= b else (p.family, b, a)
                conn = current.get(key)
                flags = p.flags
                if flags & (SYN | ACK) == SYN:
                    same_isn = by_isn.get((key, a, p.seq))
                    if same_isn is not None:
                        conn = same_isn  # retransmission, or the same SYN on another interface
                    elif conn is not None and _simultaneous_open(conn, a):
                        pass
                    else:
                        conn = new_connection(key, p.family, a, b, False)
                        by_isn[(key, a, p.seq)] = conn
                elif conn is None:
                    if flags & (SYN | ACK) == SYN | ACK:
                        conn = new_connection(key, p.family, b, a, True)
                    else:
                        conn = new_connection(key, p.family, a, b, True)
                conn._add(p)
            else:
                conn = _icmp_owner(p, current, by_isn)
                if conn is None:
                    trace.unmatched_icmp.append(p)
                else:
                    conn._add(p)
        for conn in trace.connections:
            conn._finish(trace.t0_ns)
        trace.interfaces = list(seen_ifaces)
        return trace

    def find(
        self,
        *,
        sport: int | None = None,
        dport: int | None = None,
        src: str | None = None,
        dst: str | None = None,
        family: int | None = None,
    ) -> list[Connection]:
        """Connections matching all given fields; sport/src are the client's, dport/dst the server's."""
        src_c = _canon_addr(src) if src is not None else None
        dst_c = _canon_addr(dst) if dst is not None else None
        return [
            c
            for c in self.connections
            if (sport is None or c.client[1] == sport)
            and (dport is None or c.server[1] == dport)
            and (src_c is None or c.client[0] == src_c)
            and (dst_c is None or c.server[0] == dst_c)
            and (family is None or c.family == family)
        ]

    def summary(self) -> str:
        """A few lines: what was read, then one line per connection."""
        head = f"trace {self.source or '(in memory)'}: {len(self.connections)} connection(s)"
        notes = []
        if self.unmatched_icmp:
            notes.append(f"{len(self.unmatched_icmp)} unmatched ICMP error(s)")
        if self.malformed:
            notes.append(f"{self.malformed} malformed packet(s)")
        if self.truncated:
            notes.append("capture truncated")
        if notes:
            head += ", " + ", ".join(notes)
        lines = [head]
        lines += [f"  {c.describe()}" for c in self.connections]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Trace {self.source or '(in memory)'}: {len(self.connections)} connections>"


def _simultaneous_open(conn: Connection, sender: Endpoint) -> bool:
    """A SYN from the server side of a still-open attempt that has no server ISN yet."""
    return not conn._closed and not conn.partial and sender == conn.server and conn.isn_server is None


def _icmp_owner(p: Packet, current: dict[tuple, Connection], by_isn: dict[tuple, Connection]) -> Connection | None:
    q = p.quoted
    if q is None or q.proto != "tcp" or q.sport is None or q.dport is None:
        return None
    a, b = (q.src, q.sport), (q.dst, q.dport)
    key = (q.family, a, b) if a <= b else (q.family, b, a)
    # A quoted SYN names its attempt exactly; otherwise the newest attempt.
    if q.seq is not None and (key, a, q.seq) in by_isn:
        return by_isn[(key, a, q.seq)]
    return current.get(key)
