"""The agent side of a fault kind: `Arm`, one armed fault inside the fault agent (packet sockets bound
to interfaces of a testbed namespace, what it saw and what it sent), and what arms share: the frame
parser `Frame`, the match predicate, and the registry `ARM_KINDS` the agent finds arms in. Frames are read by the
one decoder of the project (`verifier.wire.decoder`).

A kind that needs the agent puts its arm in its own module, next to the caller's side:

    class IcmpArm(Arm, kind="icmp"):        # registered: the agent serves {"op": "arm", "kind": "icmp"}
        def __init__(self, req, agent): ...; self.open([req["ifname"]])
        def on_frame(self, agent, ifname, data, ts_ns, pkttype): ...   # each frame received
        def report(self): ...

An arm may answer requests of its own besides the agent's (`status`, `stop`, `disarm`): it names
them in `ops` and implements `op_NAME(agent, req) -> dict` (the watch arm's "rst").

The agent process imports every kind module when it starts, so this module (and each kind's) uses
the standard library and verifier.wire only: no Scapy, no pyroute2. Frames are read by
`verifier.wire.decoder` and built with `verifier.wire.encode`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, ClassVar

from verifier.wire.decoder import TCP, decode_frame
from verifier.wire.names import ACK as TCP_ACK, FIN as TCP_FIN, PSH as TCP_PSH, RST as TCP_RST, SYN as TCP_SYN, flag_str

if TYPE_CHECKING:  # pragma: no cover
    from verifier.faults.agent import Agent

__all__ = ["ARM_KINDS", "Arm", "Frame", "flag_text", "flags_match", "mac_text", "matches", "same_addr", "seq_after"]

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_HOST = 0
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
DEFAULT_LIFETIME_S = 60.0
MAX_RECORDS = 1000  # per-packet records an arm keeps for its report; counters go on beyond

#: The arm kinds by the name of the agent's "arm" request, filled in by `Arm.__init_subclass__`.
ARM_KINDS: dict[str, type["Arm"]] = {}


def flags_match(want: str | None, flags: int) -> bool:
    """The same flag classes as `verifier.faults.Match` (and its nftables expressions)."""
    if want is None:
        return True
    if want == "syn":
        return flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    if want == "syn-ack":
        return flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    if want == "rst":
        return bool(flags & TCP_RST)
    if want == "fin":
        return bool(flags & TCP_FIN)
    if want == "ack":
        return flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_ACK
    raise ValueError(f"unknown TCP flags match {want!r}")


def same_addr(want: str | list | None, addr: str) -> bool:
    """Does `addr` equal the wanted address, or one of a list of them (None: any)?"""
    if want is None:
        return True
    wanted = want if isinstance(want, (list, tuple)) else [want]
    a = ipaddress.ip_address(addr)
    return any(ipaddress.ip_address(w) == a for w in wanted)


def matches(m: dict, flags: int, src: str, sport: int, dst: str, dport: int) -> bool:
    """Does a segment fit the match `m` (`verifier.faults.Match.agent()`)?"""
    return (flags_match(m.get("flags"), flags) and m.get("sport") in (None, sport)
            and m.get("dport") in (None, dport) and same_addr(m.get("src"), src) and same_addr(m.get("dst"), dst))


def seq_after(a: int, b: int) -> bool:
    """a comes after b in 32-bit sequence space (RFC 1982 style, as the kernel's after())."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


flag_text = flag_str  # the letters of verifier.wire.names


class Frame:
    """The fields of one TCP/IP frame the arms look at, read by the one decoder (verifier.wire)."""

    __slots__ = ("family", "eth_dst", "eth_src", "ip", "ip_hl", "src", "dst", "ttl", "sport", "dport", "seq",
                 "ack", "flags", "window", "tcp_hl", "payload_len", "packet")

    @classmethod
    def parse(cls, data: bytes) -> "Frame | None":
        """The frame's TCP segment, or None if it carries none (ARP, a fragment, a tunnel...): an
        arm forges answers at layer 2 on the interface it listens on, so only a segment right inside
        the Ethernet frame is one it can answer."""
        for p in decode_frame(1, data, len(data)):
            if p.kind == TCP and p.tunnel is None:
                break
        else:
            return None
        t = cls()
        ip = data[p.l3_off:]
        if p.family == 4:
            total = struct.unpack_from("!H", data, p.l3_off + 2)[0] or len(ip)
        else:
            total = 40 + struct.unpack_from("!H", data, p.l3_off + 4)[0]
        t.packet = p
        t.ip = ip[:total]
        t.family, t.ttl = p.family, p.ttl
        t.ip_hl = p.l4_off - p.l3_off
        t.src, t.dst = p.src, p.dst
        t.sport, t.dport, t.seq, t.ack, t.flags, t.window = p.sport, p.dport, p.seq, p.ack, p.flags, p.window
        t.tcp_hl = (data[p.l4_off + 12] >> 4) * 4
        t.payload_len = p.payload_len
        t.eth_dst, t.eth_src = data[0:6], data[6:12]
        return t

    def wscale(self) -> int | None:
        """The window scale option's shift, if the segment carries one (only SYNs do)."""
        w = self.packet.wscale
        return None if w is None else min(w, 14)

    def seq_end(self) -> int:
        """The sequence number after this segment: SYN and FIN count one each."""
        return (self.seq + self.payload_len + bool(self.flags & TCP_SYN) + bool(self.flags & TCP_FIN)) & 0xFFFFFFFF


class Arm:
    """An armed fault in the agent: bound packet sockets, what it saw and what it sent.

    A subclass is registered by `class XArm(Arm, kind="x")`. Its constructor takes the arm request
    and the agent, and opens its sockets (`open`) before it returns: the agent answers the request
    only then, so every frame after the answer is seen.
    """

    kind: ClassVar[str] = "arm"
    #: Requests besides status/stop/disarm that this arm answers, each by a method `op_<name>(agent, req)`.
    ops: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, kind: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if kind is None:
            return
        if kind in ARM_KINDS:
            raise TypeError(f"arm kind {kind!r} is taken by {ARM_KINDS[kind].__qualname__}")
        for op in cls.ops:
            if not callable(getattr(cls, "op_" + op.replace("-", "_"), None)):
                raise TypeError(f"{cls.__qualname__} names the op {op!r} but has no op_{op.replace('-', '_')}()")
        cls.kind = kind
        ARM_KINDS[kind] = cls

    def __init__(self, req: dict, agent: "Agent") -> None:
        self.id = str(req["id"])
        self.netns = req["netns"]
        self.expires = time.monotonic() + float(req.get("lifetime_s") or DEFAULT_LIFETIME_S)
        self.sends: list[dict] = []
        self.cancelled = 0
        self.expired = False
        self.errors: list[str] = []
        self.socks: dict[str, socket.socket] = {}

    def open(self, ifnames: list[str]) -> None:
        """Bind one packet socket to each interface, inside the arm's namespace."""
        from netns import namespace

        try:
            with namespace.inside(self.netns):
                for ifname in ifnames:
                    # Protocol 0 first, so nothing from other interfaces is queued before bind() narrows it.
                    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                    self.socks[ifname] = sock
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    sock.bind((ifname, ETH_P_ALL))
                    sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    @property
    def open_sockets(self) -> int:
        return len(self.socks)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()

    def mac(self, ifname: str) -> bytes:
        """The hardware address of one of this arm's interfaces (AF_PACKET getsockname says it)."""
        return self.socks[ifname].getsockname()[4]

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        raise NotImplementedError  # pragma: no cover

    def stop_intake(self) -> None:
        """Take no new packets from now on; what is scheduled is still sent (only the delay line has any)."""

    def on_sent(self, record: dict, sent_ns: int) -> None:
        record["t_ns"] = sent_ns
        if len(self.sends) < MAX_RECORDS:
            self.sends.append(record)

    def report(self) -> dict:
        return {"id": self.id, "kind": self.kind, "sent": len(self.sends), "sends": self.sends,
                "cancelled": self.cancelled, "expired": self.expired, "errors": self.errors}
