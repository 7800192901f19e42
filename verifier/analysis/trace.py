"""A capture as TCP connections and per-interface events, for tests and reports.

A `Trace` is what the one connection model (`verifier.analysis.grouper`) finds in a capture, with
every packet kept: each `Connection` is an `Attempt` (the same attempt machine and Zeek reading
that `verifier replay` reports) that also holds its packets, and shows them per capture interface
as `Event`s with sequence numbers relative to each side's initial sequence number, so that tests
and reports can talk about "SYN, SYN-ACK ack=1, RST" the way a network engineer reads a tcpdump.

    trace = load_trace("run.pcapng")          # or capture.trace() in a test
    conn = trace.find(dport=5000)[0]
    conn.outcome, conn.detail                 # the attempt machine's verdict
    print(conn.ladder())                      # the exchange on its primary interface

Nothing here captures traffic; `load_trace` reads a file through `verifier.pcap`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import BinaryIO

from verifier.analysis.attempt import EVENT_NOTES, EVENTS
from verifier.analysis.grouper import Attempt, Grouper
from verifier.analysis.schedules import sysctls_from_comments
from verifier.pcap import InterfaceStats, Reader
from verifier.wire import ACK, FIN, ICMP, RST, SYN, TCP, Decoder, Packet, icmp_description

__all__ = ["Connection", "ConnectionStream", "Event", "Trace", "format_endpoint", "format_events", "icmp_description",
           "load_trace", "stream_connections"]

EVENT_KINDS = ("SYN", "SYN-ACK", "ACK", "DATA", "FIN", "RST", "ICMP", "OTHER")

Endpoint = tuple[str, int]

#: A Trace holds every packet in memory; it never evicts attempts (use `verifier replay` for
#: captures too big for that).
_NO_CAP = 1 << 62


@dataclass(frozen=True, slots=True)
class Event:
    """One packet of a connection as seen on one interface.

    `seq`/`ack` are relative to the sending / receiving side's initial sequence number (signed, so a
    segment just below the ISN shows as -1); `ack` is None when the ACK flag is clear. `kind` is one
    of SYN, SYN-ACK, ACK, DATA, FIN (also with data), RST (also with ACK), ICMP, or OTHER for a
    segment with none of SYN/FIN/RST/ACK and no payload. ICMP events describe an ICMP error quoting
    a packet of this connection: `direction` is the way the error travels (back towards the sender
    of the quoted packet) and `quoted_seq` is relative to that sender's ISN. `event` is what the
    attempt machine made of the packet (an EVENTS name, e.g. "RST_S_IGNORED"; None for a copy on
    another interface than the primary), and `note` says why when the packet changed nothing.
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
    event: str | None = None
    note: str | None = None

    @property
    def from_client(self) -> bool:
        return self.direction == "c>s"


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

    `mark` (an event of the list) gets a `>>` in the margin; a packet the attempt machine ignored
    gets its reason at the end of the line.
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
        else:
            ack = "-" if e.ack is None else str(e.ack)
            text = f"{e.flags:<{fw}} seq={e.seq!s:<{sw}} ack={ack:<{aw}}  len={e.payload_len}"
            if e.mss is not None:
                text += f"  mss={e.mss}"
        if e.note:
            text += f"   [{e.note}]"
        lines.append(head + text)
    return "\n".join(lines)


class Connection(Attempt):
    """One TCP connection attempt of a Trace: an `Attempt` (identity, the attempt machine's
    `outcome`/`detail`, Zeek's `conn_state`/`history`) that also holds its packets.

    The client is the sender of the SYN (without ACK). A connection whose first packet is not such a
    SYN is `partial`; it is then oriented from its first packet: the receiver of a SYN-ACK is the
    client, otherwise the sender of the first packet is. Events are kept per capture interface;
    `events` are those of the primary interface, where the connection was seen first (normally the
    client's own interface): the attempt machine judged those.
    """

    def _setup(self, t0_ns: int) -> None:
        """Build the per-interface events (called once the trace is complete)."""
        self._t0 = t0_ns
        self._events: dict[str, list[Event]] = {}
        self.interfaces: list[str] = []
        self.packets: list[Packet] = list(self.pkts or ())
        evs = list(self.evs or ())
        self.isn_client = self.isn0 if self.isn0 >= 0 else None
        m = self.machine
        self.isn_server = m.s_isn if m.s_isn >= 0 else None
        client_base = self.isn_client
        server_base = self.isn_server
        client_ack = server_ack = None  # first ACK value each side sent
        for p in self.packets:
            if p.kind != TCP:
                continue
            if p.src_low == self.c_low:
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
        for p, ev in zip(self.packets, evs):
            name = _iface_name(p)
            if name not in self._events:
                self._events[name] = []
                self.interfaces.append(name)
            event = EVENTS[ev] if ev >= 0 else None
            note = EVENT_NOTES.get(event) if event is not None else None
            if event is not None and m.miss is not None and m.miss[2] == p.index and m.miss[1] == event:
                note = f"no transition for {event} in {m.miss[0]}: reported"
            if p.kind == TCP:
                from_client = p.src_low == self.c_low
                own, peer = (client_base, server_base) if from_client else (server_base, client_base)
                has_ack = p.flags & ACK
                e = Event(
                    t=(p.ts_ns - t0_ns) / 1e9, ts_ns=p.ts_ns, iface=name, direction="c>s" if from_client else "s>c",
                    kind=_kind(p.flags, p.payload_len), flags=p.flag_str, seq=_rel(p.seq, own),
                    ack=_rel(p.ack, peer) if has_ack else None, seq_abs=p.seq, ack_abs=p.ack if has_ack else None,
                    payload_len=p.payload_len, packet_index=p.index, window=p.window, mss=p.mss, event=event,
                    note=note)
            else:
                q = p.quoted
                quoted_from_client = q.src_raw == self.c_addr and q.sport == self.c_port
                e = Event(
                    t=(p.ts_ns - t0_ns) / 1e9, ts_ns=p.ts_ns, iface=name,
                    direction="s>c" if quoted_from_client else "c>s", kind="ICMP", flags="", seq=None, ack=None,
                    seq_abs=None, ack_abs=None, payload_len=0, packet_index=p.index, icmp_type=p.icmp_type,
                    icmp_code=p.icmp_code, icmp_from=p.src,
                    quoted_seq=_rel(q.seq, client_base if quoted_from_client else server_base), mtu=p.mtu,
                    event=event, note=note)
            self._events[name].append(e)

    # ---- queries

    @property
    def attempt(self) -> int:
        """0 for the first attempt on this 4-tuple, then 1, ..."""
        return self.attempt_no

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
        return [e for e in events if (kind is None or e.kind == kind) and (direction is None or e.direction == direction)]

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

    def describe(self) -> str:
        """One line: number, endpoints, family, outcome, SYN count, interfaces."""
        syns = self.syn_count
        extra = " partial" if self.partial else ""
        attempt = f" attempt {self.attempt_no + 1}" if self.attempt_no else ""
        outcome, detail = self.outcome, self.detail
        by = f" by the {self.reset_by}" if self.reset_by else ""
        return (
            f"#{self.id} {format_endpoint(self.client)} > {format_endpoint(self.server)} "
            f"IPv{self.family}{attempt}{extra}: {outcome}{by} ({detail}), {syns} SYN{'s' if syns != 1 else ''}, "
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

    # ---- the packets behind the events, as Scapy packets (read from the capture file)

    def scapy_packets(self, iface: str | None = None):
        """This connection's packets (every interface, or `iface`'s) as a Scapy `PacketList`, read
        back from the capture file and dissected lazily (`verifier.pcap.scapy_view`): each with
        `time`, `ts_ns`, `sniffed_on`, `direction` and `index` (its event's `packet_index`)."""
        from verifier.pcap.scapy_view import scapy_packets

        source = getattr(self, "source", None)
        if source is None:
            raise ValueError("this connection was not read from a file: there are no frames to dissect")
        return scapy_packets(source, (p.index for p in self.packets), iface=iface, name=f"connection #{self.id}")

    def scapy_packet(self, event: Event):
        """The Scapy packet behind one of this connection's events."""
        got = [p for p in self.scapy_packets() if p.index == event.packet_index]
        if not got:
            raise LookupError(f"event at packet index {event.packet_index} is not one of connection #{self.id}'s")
        return got[0]

    def __repr__(self) -> str:
        return f"<Connection {self.describe()}>"


def _iface_name(p: Packet) -> str:
    return p.iface_name if p.iface_name is not None else str(p.iface)


def _canon_addr(addr: object) -> str:
    return str(ipaddress.ip_address(str(addr)))


class Trace:
    """The TCP connections (and unmatched ICMP errors) found in a capture.

    Build one with `load_trace(path)` or `Trace.from_packets(decoded packets)`. `malformed` /
    `skipped` count frames that could not be decoded / that are neither TCP nor ICMP errors;
    `stats` has the grouper's full counts, `damage` the file's damage notes.
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
        self.damage: list = []
        self.capture_stats: list[InterfaceStats] = []  # from the capture file's ISBs
        self.stats = None
        #: The client namespace's SYN sysctls (schedules.LINUX_SYSCTLS -> value, None where the kernel
        #: lacks one) when the capture came from a testbed (`Capture.trace()` reads them, and the
        #: capture file records them, so `load_trace` of a saved capture has them too); None when
        #: unknown. A `linux` SYN-schedule check models them instead of the kernel's defaults.
        self.client_sysctls: dict[str, str | None] | None = None

    @classmethod
    def _from_grouper(cls, g: Grouper, source: str | None) -> Trace:
        g.finish()
        trace = cls(source)
        conns = sorted(g.take(), key=attrgetter("id"))
        firsts = [c.pkts[0].ts_ns for c in conns if c.pkts] + [p.ts_ns for p in g.unmatched]
        trace.t0_ns = min(firsts, default=0)
        for c in conns:
            c._setup(trace.t0_ns)
            c.source = source
        trace.connections = conns
        trace.unmatched_icmp = list(g.unmatched)
        seen: dict[str, None] = {}
        for c in conns:
            for i in c.interfaces:
                seen.setdefault(i)
        for p in g.unmatched:
            seen.setdefault(_iface_name(p))
        trace.interfaces = list(seen)
        st = g.stats
        trace.stats = st
        trace.packet_count = st.tcp + st.icmp
        trace.malformed = st.malformed
        trace.skipped = st.other + st.fragments + sum(st.unsupported.values()) + st.icmp_other
        trace.truncated = st.truncated
        trace.damage = st.damage
        return trace

    @classmethod
    def from_packets(cls, packets: Iterable[Packet | None], *, source: str | None = None) -> Trace:
        """Group decoded packets (`verifier.wire.decode` results, with their capture context) into
        connections, in the order given, through the same model as `load_trace`. None items
        (frames `decode` skipped) are ignored."""
        g = Grouper(keep=True, factory=Connection, max_connections=_NO_CAP)
        for p in packets:
            if p is not None and (p.kind == TCP or p.kind == ICMP):
                g.feed(p)
        return cls._from_grouper(g, source)

    def find(self, *, sport: int | None = None, dport: int | None = None, src: str | None = None,
             dst: str | None = None, family: int | None = None) -> list[Connection]:
        """Connections matching all given fields; sport/src are the client's, dport/dst the server's."""
        src_c = _canon_addr(src) if src is not None else None
        dst_c = _canon_addr(dst) if dst is not None else None
        return [
            c for c in self.connections
            if (sport is None or c.c_port == sport) and (dport is None or c.s_port == dport)
            and (src_c is None or c.orig_h == src_c) and (dst_c is None or c.resp_h == dst_c)
            and (family is None or c.family == family)
        ]

    def summary(self) -> str:
        """A few lines: what was read, then one line per connection."""
        head = f"trace {self.source or '(in memory)'}: {len(self.connections)} connection(s)"
        notes = []
        if self.unmatched_icmp:
            notes.append(f"{len(self.unmatched_icmp)} unmatched ICMP error(s)")
        if self.stats is not None:
            notes += [n for n in self.stats.notes() if "ICMP error(s) quoting no connection" not in n]
        elif self.malformed:
            notes.append(f"{self.malformed} malformed packet(s)")
        if notes:
            head += ", " + ", ".join(notes)
        lines = [head]
        lines += [f"  {c.describe()}" for c in self.connections]
        return "\n".join(lines)

    def scapy_packets(self, iface: str | None = None):
        """Every frame of the capture file (or those on `iface`) as a Scapy `PacketList`, dissected
        lazily; see `Connection.scapy_packets`."""
        from verifier.pcap.scapy_view import scapy_packets

        if self.source is None:
            raise ValueError("this trace was not read from a file: there are no frames to dissect")
        return scapy_packets(self.source, iface=iface)

    def __repr__(self) -> str:
        return f"<Trace {self.source or '(in memory)'}: {len(self.connections)} connections>"


def load_trace(source: str | os.PathLike | BinaryIO, *, checksums: bool = False) -> Trace:
    """Read a pcap/pcapng file and build its Trace, through the same reader, decoder and grouper as
    `verifier replay`. A damaged or truncated file gives the connections before the damage, the
    notes in `trace.damage` (`trace.truncated`) and a warning; a file that is not a capture raises
    CaptureFormatError."""
    return _from_file(source, checksums=checksums)


def _from_file(source, *, checksums: bool = False, keep_ids=None, max_packets: int = 0, grouping=None) -> Trace:
    """A Trace of a file; `keep_ids`: only those attempts keep their packets; `grouping`: a Grouper
    whose options to use (the same ids as the pass that grouper made)."""
    reader = Reader(source)
    try:
        opts = dict(grouping.options) if grouping is not None else {}
        opts.setdefault("max_connections", _NO_CAP)
        g = Grouper(keep=True, factory=Connection, keep_ids=keep_ids, max_packets=max_packets, **opts)
        g.run(reader, Decoder(checksums))
        trace = Trace._from_grouper(g, reader.name)
        trace.capture_stats = list(reader.stats)
        trace.client_sysctls = sysctls_from_comments(c for st in trace.capture_stats for c in st.comments)
        return trace
    finally:
        reader.close()


class ConnectionStream:
    """The Connections of a file with their packets, streamed: each is yielded (with its events
    built) when it finishes, so that `verifier show` holds only the live ones. At most
    `max_packets` packets are kept per connection (0: all). `stats` after iterating."""

    def __init__(self, source, *, max_packets: int = 0, checksums: bool = False, **grouper_options) -> None:
        self.source = source
        self.checksums = checksums
        self.grouper = Grouper(keep=True, factory=Connection, max_packets=max_packets, **grouper_options)
        self.stats = self.grouper.stats

    def __iter__(self):
        g = self.grouper
        reader = Reader(self.source)
        try:
            dec = Decoder(self.checksums)
            more = True
            while more:
                more = g.run(reader, dec, 65536)
                if not more:
                    g.finish()
                done = sorted(g.take(), key=attrgetter("id"))
                for c in done:
                    c._setup(g.first_ns)
                    c.source = self.source if isinstance(self.source, (str, os.PathLike)) else None
                    yield c
        finally:
            reader.close()


def stream_connections(source, **options) -> ConnectionStream:
    """`ConnectionStream(source, **options)`."""
    return ConnectionStream(source, **options)
