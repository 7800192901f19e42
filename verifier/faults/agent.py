"""The fault agent: forges, re-times and injects packets inside testbed namespaces, for `verifier.faults`.

One long-lived agent process serves a whole Python process (each pytest-xdist worker has its own):
importing Scapy costs about a second, so it is paid once, in the agent, and never in the caller.
`agent()` starts it lazily on first use; it is stopped at exit (atexit), dies with its parent
(PR_SET_PDEATHSIG) and also ends when its stdin closes.

Protocol: one JSON object per line on the agent's stdin, one JSON answer per line on its stdout, in
request order, each answer echoing the request's `seq`. First, unasked, the agent prints
``{"event": "hello", "pid": ..., "scapy": "2.8.0", "import_ms": ...}`` once Scapy is loaded.

Every "arm" opens AF_PACKET sockets inside namespace NS, bound to the named interfaces, and answers
``{"ok": true, "armed_ns": ...}`` only once they are bound: every frame after that answer is seen.
An arm closes its sockets by itself after `lifetime_s`. The kinds (`"kind"`, default "icmp"):

``{"op": "arm", "kind": "icmp", "id": "f1", "netns": NS, "ifname": IF, "match": {"flags": "syn", "dport": 5000, ...},
   "reply": {"4": {"type": 3, "code": 1, "mtu": null, "src": "192.0.2.1"}, "6": {...}},
   "nth": null, "delay_ms": 0, "max_answers": 64, "lifetime_s": 60}``
    Each received frame that matches (the `verifier.faults.Match` fields; `src`/`dst` may be lists)
    counts as a match; the `nth` match (1-based, or every match when null), up to `max_answers`, is
    answered `delay_ms` after its kernel receive timestamp with an ICMP error of the packet's family,
    built at layer 2: MACs swapped, source `reply[family].src`, destination the packet's source,
    quoting the packet as received (IPv4: as much as fits in a 576-byte datagram, RFC 1812; ICMPv6: as
    much as fits in 1280 bytes, RFC 4443). A family missing from `reply` is counted but never answered.
    Report: ``{"matched": n, "sent": m, "matches": [{"t_ns", "family", "src", "sport", "dst", "dport",
    "seq", "flags", "answer": bool}], "sends": [{"t_ns", "due_ns", "match", "type", "code", "src", "dst",
    "quoted_len", "frame_len"}], "cancelled": k, "expired": bool, "errors": []}``.
``{"op": "arm", "kind": "watch", "id", "netns", "ifname", "match", "lifetime_s"}``
    Follows the first TCP connection one of whose segments matches the match (in either direction),
    as seen on the interface, both directions: each side's highest sequence number sent, last
    acknowledgment, window (scaled once both SYNs were seen), MAC addresses and TTL. Then
    ``{"op": "rst", "id", "to": ADDR, "at": "exact"|"in-window"|"out-of-window", "offset": null}``
    sends a RST to the side whose address is ADDR, as if from its peer, with sequence number the
    receiver's RCV.NXT (the peer's highest sequence number seen, or the receiver's own last
    acknowledgment if later) plus `offset` (default: 0, half the receiver's window, -2**30).
    Report: ``{"conn": {...}, "segments": n, "sides": {...}, "sends": [...]}``.
``{"op": "arm", "kind": "segment", "id", "netns", "ifname", "segment": {"family", "src", "dst",
   "sport", "dport", "flags", "seq", "ack", "window", "payload_hex", "src_mac", "dst_mac", "ttl"}}``
    Sends that TCP segment once, right after binding, and records every TCP segment that comes back on
    the same 4-tuple (the answer). Report: ``{"sends": [...], "answers": [{"t_ns", "flags", "seq", "ack",
    "window", "len"}]}``.
``{"op": "arm", "kind": "delay", "id", "netns", "ifnames": [...], "match", "delay_ms", "max_packets",
   "deadline_ns", "routes": [{"prefix", "ifname", "gateway", "src_mac", "mtu"}], "neighbours": {ADDR: MAC},
   "local": [ADDR...]}``
    A delay line: every matching TCP packet received for forwarding (not to a `local` address) is
    re-sent `delay_ms` after its kernel receive timestamp on the egress interface of the longest
    matching route, with the egress MAC as source, the next hop's MAC (gateway or destination, from
    `neighbours`) as destination, TTL / hop limit decremented and checksums recomputed; a segment
    larger than the egress MTU (a GSO frame handed over whole by a veth) is cut into MTU-sized
    segments. The caller drops the originals in nftables (taps see a frame before netfilter). At most
    `max_packets` matches, and nothing after `deadline_ns` (CLOCK_REALTIME). Report: ``{"matched",
    "delayed", "sent", "ttl_expired", "unroutable", "packets": [{"t_ns", "due_ns", "sent_ns", ...}]}``.

``{"op": "status", "id": "f1"}`` / ``{"op": "disarm", "id": "f1"}``: the report so far / the final report
(disarm closes the sockets and forgets the arm; pending sends are cancelled). ``{"op": "stop", "id"}``:
a delay line takes no new packets but still sends those it holds; the report so far.
``{"op": "ping"}``: ``{"pid", "armed": [ids], "open_sockets": n, "started_ns", "import_ms"}``.
``{"op": "quit"}``: closes every socket and exits.
A failed request answers ``{"ok": false, "error": "..."}``.

Scapy's interface and route tables are process-wide and were read in the root namespace (scapy issue
3467), so Scapy never chooses an interface or a route here: the agent opens and binds each socket
itself, inside the target namespace, and uses Scapy only to parse frames and to build packets.
"""

from __future__ import annotations

import atexit
import heapq
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from verifier.wire import internet_checksum

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_HOST = 0
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
ANC = socket.CMSG_SPACE(16)
BUFSIZE = 65536 + 64
IPV4_ERROR_MAX = 576  # RFC 1812 4.3.2.3: quote as much as fits in 576 bytes
IPV6_ERROR_MAX = 1280  # RFC 4443 2.4(c): as much as fits in the minimum IPv6 MTU
DEFAULT_MAX_ANSWERS = 64
DEFAULT_LIFETIME_S = 60.0
MAX_RECORDS = 1000  # per-packet records an arm keeps for its report; counters go on beyond
# Out of window for any receiver: behind RCV.NXT by more than the largest possible window (65535 << 14
# < 2**30), yet "before" it in sequence space (less than 2**31 away), so never mistaken for ahead.
OUT_OF_WINDOW_OFFSET = -(2 ** 30)

START_TIMEOUT = 30.0  # Scapy's import on a loaded 2-core machine
REQUEST_TIMEOUT = 10.0

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# ---------------------------------------------------------------------------------------------------
# The agent process
# ---------------------------------------------------------------------------------------------------

def _flags_match(want: str | None, flags: int) -> bool:
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


def _same_addr(want: str | list | None, addr: str) -> bool:
    """Does `addr` equal the wanted address, or one of a list of them (None: any)?"""
    if want is None:
        return True
    wanted = want if isinstance(want, (list, tuple)) else [want]
    a = ipaddress.ip_address(addr)
    return any(ipaddress.ip_address(w) == a for w in wanted)


def _matches(m: dict, flags: int, src: str, sport: int, dst: str, dport: int) -> bool:
    return (_flags_match(m.get("flags"), flags) and m.get("sport") in (None, sport)
            and m.get("dport") in (None, dport) and _same_addr(m.get("src"), src) and _same_addr(m.get("dst"), dst))


def _seq_after(a: int, b: int) -> bool:
    """a comes after b in 32-bit sequence space (RFC 1982 style, as the kernel's after())."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def _tcp_checksummed(family: int, src: bytes, dst: bytes, tcp: bytearray) -> bytearray:
    """`tcp` with its checksum computed afresh. A segment handed over by a veth may carry only a
    partial checksum (the sender's NIC was to finish it), so a re-sent segment always gets a full one."""
    tcp[16:18] = b"\0\0"
    if family == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
    tcp[16:18] = struct.pack("!H", internet_checksum(pseudo + bytes(tcp)))
    return tcp


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class _Tcp:
    """The fields of one TCP/IP frame the arms look at, parsed with struct (fast) rather than Scapy."""

    __slots__ = ("family", "eth_dst", "eth_src", "ip", "ip_hl", "src", "dst", "ttl", "sport", "dport", "seq",
                 "ack", "flags", "window", "tcp_hl", "payload_len", "options")

    @classmethod
    def parse(cls, data: bytes) -> "_Tcp | None":
        if len(data) < 14:
            return None
        ethertype = struct.unpack_from("!H", data, 12)[0]
        t = cls()
        if ethertype == ETH_P_IP:
            if len(data) < 34 or data[14] >> 4 != 4:
                return None
            ihl = (data[14] & 0xF) * 4
            total, frag, ttl, proto = struct.unpack_from("!2xH2xHBB", data, 14)
            if proto != 6 or frag & 0x3FFF:  # not TCP, or a fragment (MF set or offset non-zero)
                return None
            t.family, t.ip_hl, t.ttl = 4, ihl, ttl
            t.ip = data[14:14 + total]
            t.src = socket.inet_ntop(socket.AF_INET, data[26:30])
            t.dst = socket.inet_ntop(socket.AF_INET, data[30:34])
        elif ethertype == ETH_P_IPV6:
            if len(data) < 54:
                return None
            plen, nh, hlim = struct.unpack_from("!HBB", data, 18)
            if nh != 6:  # a TCP segment right after the fixed header (no extension headers here)
                return None
            t.family, t.ip_hl, t.ttl = 6, 40, hlim
            t.ip = data[14:14 + 40 + plen]
            t.src = socket.inet_ntop(socket.AF_INET6, data[22:38])
            t.dst = socket.inet_ntop(socket.AF_INET6, data[38:54])
        else:
            return None  # ARP, neighbour discovery at layer 2 etc.: not ours
        tcp = t.ip[t.ip_hl:]
        if len(tcp) < 20:
            return None
        t.sport, t.dport, t.seq, t.ack, off, t.flags, t.window = struct.unpack_from("!HHIIBBH", tcp)
        t.tcp_hl = (off >> 4) * 4
        t.payload_len = len(tcp) - t.tcp_hl
        t.options = tcp[20:t.tcp_hl]
        t.eth_dst, t.eth_src = data[0:6], data[6:12]
        return t

    def wscale(self) -> int | None:
        """The window scale option's shift, if the segment carries one (only SYNs do)."""
        opts, i = self.options, 0
        while i < len(opts):
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2:
                break
            if kind == 3 and opts[i + 1] == 3 and i + 2 < len(opts):
                return min(opts[i + 2], 14)
            i += opts[i + 1]
        return None

    def seq_end(self) -> int:
        """The sequence number after this segment: SYN and FIN count one each."""
        return (self.seq + self.payload_len + bool(self.flags & TCP_SYN) + bool(self.flags & TCP_FIN)) & 0xFFFFFFFF


def _flag_text(flags: int) -> str:
    return "".join(c for bit, c in ((TCP_FIN, "F"), (TCP_SYN, "S"), (TCP_RST, "R"), (TCP_PSH, "P"),
                                    (TCP_ACK, "A"), (0x20, "U"), (0x40, "E"), (0x80, "C")) if flags & bit)


class _Arm:
    """An armed fault in the agent: bound packet sockets, what it saw and what it sent."""

    kind = "arm"

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


class _IcmpArm(_Arm):
    """Answers matching segments with a forged ICMP error (see the module docstring)."""

    kind = "icmp"

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        self.match = dict(req.get("match") or {})
        _flags_match(self.match.get("flags"), 0)  # refuse an unknown class now, not per frame
        self.reply = {int(f): r for f, r in (req.get("reply") or {}).items()}
        self.nth = req.get("nth")
        self.delay_ns = int(float(req.get("delay_ms") or 0) * 1_000_000)
        self.max_answers = int(req.get("max_answers") or DEFAULT_MAX_ANSWERS)
        self.matches: list[dict] = []
        self.answers = 0  # scheduled, whether sent yet or not
        self.open([self.ifname])

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype == PACKET_OUTGOING:
            return
        t = _Tcp.parse(data)
        if t is None or not _matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport):
            return
        index = len(self.matches)
        answer = (t.family in self.reply and self.answers < self.max_answers
                  and (self.nth is None or index + 1 == int(self.nth)))
        self.matches.append({"t_ns": ts_ns, "family": t.family, "src": t.src, "sport": t.sport, "dst": t.dst,
                             "dport": t.dport, "seq": t.seq, "flags": _flag_text(t.flags), "answer": answer})
        if not answer:
            return
        self.answers += 1
        spec = self.reply[t.family]
        frame, quoted = agent.build_icmp(t.family, spec, data, t)
        record = {"due_ns": ts_ns + self.delay_ns, "match": index, "type": spec["type"], "code": spec["code"],
                  "src": spec["src"], "dst": t.src, "quoted_len": len(quoted), "frame_len": len(frame)}
        # Built now, sent at its time: the delay is not stretched by Scapy's building.
        agent.schedule(record["due_ns"], self, ifname, frame, record)

    def report(self) -> dict:
        return {**super().report(), "matched": len(self.matches), "matches": self.matches}


class _WatchArm(_Arm):
    """Follows one TCP connection on an interface, to send RSTs with the right sequence numbers."""

    kind = "watch"

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        self.match = dict(req.get("match") or {})
        _flags_match(self.match.get("flags"), 0)
        self.conn: dict | None = None  # {"family", "a": [addr, port], "b": [addr, port]}
        self.segments = 0
        self.sides: dict[str, dict] = {}  # "addr|port" -> what that side last sent
        self.open([self.ifname])

    @staticmethod
    def _key(addr: str, port: int) -> str:
        return f"{ipaddress.ip_address(addr)}|{port}"

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        t = _Tcp.parse(data)
        if t is None:
            return
        src, dst = self._key(t.src, t.sport), self._key(t.dst, t.dport)
        if self.conn is None:
            if not (_matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport)
                    or _matches(self.match, t.flags, t.dst, t.dport, t.src, t.sport)):
                return
            self.conn = {"family": t.family, "a": [t.src, t.sport], "b": [t.dst, t.dport], "first_ns": ts_ns}
        elif {src, dst} != {self._key(*self.conn["a"]), self._key(*self.conn["b"])}:
            return
        self.segments += 1
        side = self.sides.setdefault(src, {"addr": t.src, "port": t.sport, "nxt": None, "isn": None, "wscale": None,
                                           "segments": 0})
        side["segments"] += 1
        if t.flags & TCP_SYN:
            side["isn"] = t.seq
            side["wscale"] = t.wscale()
        end = t.seq_end()
        if side["nxt"] is None or _seq_after(end, side["nxt"]):
            side["nxt"] = end
        if t.flags & TCP_ACK:
            side["ack"] = t.ack
        side.update(seq=t.seq, flags=_flag_text(t.flags), len=t.payload_len, window=t.window,
                    syn_window=bool(t.flags & TCP_SYN), ttl=t.ttl, t_ns=ts_ns,
                    outgoing=pkttype == PACKET_OUTGOING, eth_src=_mac_text(t.eth_src), eth_dst=_mac_text(t.eth_dst))

    def rst(self, agent: "Agent", req: dict) -> dict:
        """Send one RST to side `to` (see the module docstring) and return what was sent."""
        if self.conn is None:
            raise ValueError("no segment of the connection seen yet: nothing to learn its sequence numbers from")
        to = ipaddress.ip_address(req["to"])
        keys = [self._key(*self.conn["a"]), self._key(*self.conn["b"])]
        mine = [k for k in keys if ipaddress.ip_address(k.split("|")[0]) == to]
        if len(mine) != 1:
            raise ValueError(f"{to} is not one end of the watched connection {self.conn['a']} <-> {self.conn['b']}")
        rkey = mine[0]
        pkey = keys[1 - keys.index(rkey)]
        r, p = self.sides.get(rkey), self.sides.get(pkey)
        # RCV.NXT of the receiver: what its peer has sent so far, or what it last acknowledged if later.
        candidates = [v for v in ((p or {}).get("nxt"), (r or {}).get("ack")) if v is not None]
        if not candidates:
            raise ValueError("neither a segment from the peer nor an acknowledgment from the receiver seen yet")
        rcv_nxt = candidates[0]
        for v in candidates[1:]:
            if _seq_after(v, rcv_nxt):
                rcv_nxt = v
        window, scaled = None, False
        if r is not None and "window" in r:
            window = r["window"]
            both = r.get("wscale") is not None and p is not None and p.get("wscale") is not None
            if both and not r["syn_window"]:  # the window field of a SYN is never scaled (RFC 7323)
                window <<= r["wscale"]
                scaled = True
        at = req.get("at") or "exact"
        offset = req.get("offset")
        if offset is None:
            if at == "exact":
                offset = 0
            elif at == "in-window":
                if not window or window < 2:
                    raise ValueError(f"the receiver's window is unknown or below 2 ({window}): no in-window "
                                     f"sequence number other than RCV.NXT exists")
                offset = max(1, window // 2)
            elif at == "out-of-window":
                offset = OUT_OF_WINDOW_OFFSET
            else:
                raise ValueError(f"unknown RST position {at!r}: use exact, in-window or out-of-window")
        seq = (rcv_nxt + int(offset)) & 0xFFFFFFFF
        if r is not None and r["outgoing"]:
            raise ValueError(f"the receiver {to} is this host itself: a RST sent from here would leave it; "
                             f"apply the fault to its peer or to a router on the path")
        # Layer 2: as frames towards the receiver leave this interface, or else mirrored from its own.
        toward = r is not None and not r["outgoing"]
        if p is not None and p["outgoing"]:
            src_mac, dst_mac = p["eth_src"], p["eth_dst"]
        elif toward:
            src_mac, dst_mac = r["eth_dst"], r["eth_src"]
        else:
            raise ValueError("no frame to or from the receiver seen on this interface: cannot address the RST")
        ttl = p["ttl"] if p is not None and p["outgoing"] else 64
        paddr, pport = pkey.split("|")
        raddr, rport = rkey.split("|")
        flags = "RA" if req.get("ack") else "R"
        ack = ((r or {}).get("nxt") or 0) if req.get("ack") else 0
        frame = agent.build_tcp(self.conn["family"], src_mac, dst_mac, paddr, raddr, int(pport), int(rport),
                                         flags, seq, ack, 0, b"", ttl)
        self.socks[self.ifname].send(frame)
        record = {"at": at, "offset": int(offset), "seq": seq, "rcv_nxt": rcv_nxt,
                  "ack": ack, "flags": flags, "window": window, "window_scaled": scaled, "from": [paddr, int(pport)],
                  "to": [raddr, int(rport)], "ttl": ttl, "src_mac": src_mac, "dst_mac": dst_mac}
        self.on_sent(record, time.time_ns())
        return record

    def report(self) -> dict:
        return {**super().report(), "conn": self.conn, "segments": self.segments, "sides": self.sides}


class _SegmentArm(_Arm):
    """Sends one crafted TCP segment and records what comes back on its 4-tuple."""

    kind = "segment"

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        s = self.spec = dict(req["segment"])
        self.answers: list[dict] = []
        self.open([self.ifname])
        frame = agent.build_tcp(int(s["family"]), s["src_mac"], s["dst_mac"], s["src"], s["dst"],
                                         int(s["sport"]), int(s["dport"]), s.get("flags") or "A", int(s["seq"]),
                                         int(s.get("ack") or 0), int(s.get("window", 64240)),
                                         bytes.fromhex(s.get("payload_hex") or ""), int(s.get("ttl") or 64))
        self.socks[self.ifname].send(frame)
        self.on_sent({"frame_len": len(frame), **{k: s.get(k) for k in (
            "family", "src", "sport", "dst", "dport", "flags", "seq", "ack")}}, time.time_ns())

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype == PACKET_OUTGOING:
            return
        t = _Tcp.parse(data)
        s = self.spec
        if t is None or (t.sport, t.dport) != (int(s["dport"]), int(s["sport"])):
            return
        if not (_same_addr(s["dst"], t.src) and _same_addr(s["src"], t.dst)):
            return
        if len(self.answers) < MAX_RECORDS:
            self.answers.append({"t_ns": ts_ns, "flags": _flag_text(t.flags), "seq": t.seq, "ack": t.ack,
                                 "window": t.window, "len": t.payload_len, "src": t.src, "sport": t.sport,
                                 "dst": t.dst, "dport": t.dport})

    def report(self) -> dict:
        return {**super().report(), "answers": self.answers}


class _DelayArm(_Arm):
    """A user-space delay line for a router without netem (see the module docstring)."""

    kind = "delay"

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.match = dict(req.get("match") or {})
        _flags_match(self.match.get("flags"), 0)
        self.delay_ns = int(float(req["delay_ms"]) * 1_000_000)
        self.max_packets = int(req["max_packets"])
        self.deadline_ns = int(req["deadline_ns"])
        self.routes = []
        for r in req.get("routes") or []:
            net = ipaddress.ip_network(r["prefix"], strict=False)
            self.routes.append((net, r["ifname"], r.get("gateway"), _mac(r["src_mac"]), int(r.get("mtu") or 1500)))
        self.routes.sort(key=lambda route: route[0].prefixlen, reverse=True)
        self.neighbours = {ipaddress.ip_address(a): _mac(m) for a, m in (req.get("neighbours") or {}).items()}
        self.local = {ipaddress.ip_address(a) for a in req.get("local") or []}
        self.matched = self.delayed = self.sent = self.ttl_expired = self.unroutable = 0
        self.packets: list[dict] = []
        self.open(list(req["ifnames"]))

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype != PACKET_HOST:  # to be forwarded, a frame is addressed to this host's MAC
            return
        t = _Tcp.parse(data)
        if t is None or not _matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport):
            return
        dst = ipaddress.ip_address(t.dst)
        if dst in self.local:
            return  # for this host itself: not forwarded, not delayed (the nft rule skips it too)
        if self.matched >= self.max_packets or time.time_ns() >= self.deadline_ns:
            return  # past its bounds the nft rule no longer drops either: the packet goes through as usual
        self.matched += 1
        record = {"t_ns": ts_ns, "due_ns": ts_ns + self.delay_ns, "in": ifname, "family": t.family, "src": t.src,
                  "sport": t.sport, "dst": t.dst, "dport": t.dport, "seq": t.seq, "flags": _flag_text(t.flags),
                  "len": t.payload_len}
        if len(self.packets) < MAX_RECORDS:
            self.packets.append(record)
        if t.ttl <= 1:
            self.ttl_expired += 1  # a router would send "time exceeded"; the delay line only counts it
            record["error"] = "ttl expired"
            return
        route = next((r for r in self.routes if r[0].version == dst.version and dst in r[0]), None)
        if route is None or route[1] not in self.socks:
            self.unroutable += 1
            record["error"] = "no route"
            return
        net, out, gateway, src_mac, mtu = route
        hop = ipaddress.ip_address(gateway) if gateway else dst
        dst_mac = self.neighbours.get(hop)
        if dst_mac is None:
            self.unroutable += 1
            record["error"] = f"no link-layer address for next hop {hop}"
            return
        record["out"] = out
        frames = _forwarded(t, src_mac, dst_mac, mtu)
        self.delayed += 1
        for frame in frames:
            agent.schedule(record["due_ns"], self, out, frame, record)

    def stop_intake(self) -> None:
        self.deadline_ns = 0

    def on_sent(self, record: dict, sent_ns: int) -> None:
        if "sent_ns" not in record:  # a cut GSO frame counts once, at its first piece's time
            record["sent_ns"] = sent_ns
            self.sent += 1
        record["pieces"] = record.get("pieces", 0) + 1

    def report(self) -> dict:
        return {**super().report(), "matched": self.matched, "delayed": self.delayed, "sent": self.sent,
                "ttl_expired": self.ttl_expired, "unroutable": self.unroutable, "packets": self.packets}


def _forwarded(t: _Tcp, src_mac: bytes, dst_mac: bytes, mtu: int) -> list[bytes]:
    """The frames a router sends for packet `t`: new MACs, TTL / hop limit less one, fresh checksums,
    and, for a segment larger than the egress MTU, cut into MTU-sized segments (as GSO would)."""
    ip = bytearray(t.ip)
    hl = t.ip_hl
    tcp_hl = t.tcp_hl
    header, tcp_header, payload = ip[:hl], bytearray(ip[hl:hl + tcp_hl]), bytes(ip[hl + tcp_hl:])
    if t.family == 4:
        header[8] -= 1
        src, dst = bytes(ip[12:16]), bytes(ip[16:20])
    else:
        header[7] -= 1
        src, dst = bytes(ip[8:24]), bytes(ip[24:40])
    mss = max(1, mtu - hl - tcp_hl)
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
    frames = []
    ip_id = struct.unpack_from("!H", header, 4)[0] if t.family == 4 else 0
    for n, chunk in enumerate(chunks):
        th = bytearray(tcp_header)
        struct.pack_into("!I", th, 4, (t.seq + n * mss) & 0xFFFFFFFF)
        if n < len(chunks) - 1:
            th[13] &= ~(TCP_FIN | TCP_PSH) & 0xFF  # FIN and PSH belong to the last piece only
        seg = _tcp_checksummed(t.family, src, dst, th + chunk)
        h = bytearray(header)
        if t.family == 4:
            struct.pack_into("!HH", h, 2, hl + len(seg), (ip_id + n) & 0xFFFF)
            h[10:12] = b"\0\0"
            h[10:12] = struct.pack("!H", internet_checksum(bytes(h)))
        else:
            struct.pack_into("!H", h, 4, len(seg))
        frames.append(dst_mac + src_mac + struct.pack("!H", ETH_P_IP if t.family == 4 else ETH_P_IPV6) + h + seg)
    return frames


ARM_KINDS = {"icmp": _IcmpArm, "watch": _WatchArm, "segment": _SegmentArm, "delay": _DelayArm}


class Agent:
    """The agent's state: armed faults, frames waiting for their time, and the request loop."""

    def __init__(self) -> None:
        t0 = time.monotonic()
        # Scapy is imported here and nowhere else: this is the cost the long-lived agent pays once.
        from scapy.layers.inet import ICMP, IP, TCP
        from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw
        import scapy

        self.scapy = {"Ether": Ether, "IP": IP, "TCP": TCP, "ICMP": ICMP, "IPv6": IPv6, "Unreach6": ICMPv6DestUnreach,
                      "TooBig6": ICMPv6PacketTooBig, "Raw": Raw}
        self.scapy_version = scapy.__version__
        self.import_ms = round((time.monotonic() - t0) * 1000, 1)
        self.started_ns = time.time_ns()
        self.arms: dict[str, _Arm] = {}
        self.pending: list[tuple[int, int, str, str, bytes, dict]] = []  # (due_ns, n, arm id, ifname, frame, record)
        self._n = 0

    # -- frames ------------------------------------------------------------------------------------
    def on_readable(self, arm: _Arm, ifname: str) -> None:
        while True:
            sock = arm.socks.get(ifname)
            if sock is None:
                return
            try:
                data, anc, _flags, addr = sock.recvmsg(BUFSIZE, ANC)
            except BlockingIOError:
                return
            except OSError as exc:  # the interface went away under us
                arm.errors.append(f"receive on {ifname} failed: {exc}")
                arm.close()
                return
            ts = next((_ts(p) for lvl, kind, p in anc if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS),
                      None) or time.time_ns()
            try:
                arm.on_frame(self, ifname, data, ts, addr[2])
            except Exception as exc:  # noqa: BLE001 - one odd frame must not kill the agent
                if len(arm.errors) < 20:
                    arm.errors.append(f"{type(exc).__name__}: {exc}")

    def drain(self, arm: _Arm) -> None:
        for ifname in list(arm.socks):
            self.on_readable(arm, ifname)

    def schedule(self, due_ns: int, arm: _Arm, ifname: str, frame: bytes, record: dict) -> None:
        self._n += 1
        heapq.heappush(self.pending, (due_ns, self._n, arm.id, ifname, frame, record))

    def build_icmp(self, family: int, spec: dict, data: bytes, t: _Tcp) -> tuple[bytes, bytes]:
        sc = self.scapy
        eth = sc["Ether"](src=_mac_text(t.eth_dst), dst=_mac_text(t.eth_src))
        raw_ip = bytes(t.ip)  # as received, without Ethernet padding
        if family == 4:
            quoted = raw_ip[:IPV4_ERROR_MAX - 20 - 8]
            icmp = sc["ICMP"](type=spec["type"], code=spec["code"])
            if spec["type"] == 3 and spec["code"] == 4:
                icmp.nexthopmtu = int(spec.get("mtu") or 0)
            # TOS: internetwork control, as routers send their errors (RFC 1812 4.3.2.5).
            pkt = eth / sc["IP"](src=spec["src"], dst=t.src, ttl=64, tos=0xC0) / icmp / sc["Raw"](quoted)
        else:
            quoted = raw_ip[:IPV6_ERROR_MAX - 40 - 8]
            if spec["type"] == 2:
                icmp = sc["TooBig6"](mtu=int(spec.get("mtu") or 1280))
            else:
                icmp = sc["Unreach6"](type=spec["type"], code=spec["code"])
            pkt = eth / sc["IPv6"](src=spec["src"], dst=t.src, hlim=64) / icmp / sc["Raw"](quoted)
        return bytes(pkt), quoted

    def build_tcp(self, family: int, src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
                  flags: str, seq: int, ack: int, window: int, payload: bytes, ttl: int) -> bytes:
        sc = self.scapy
        ip = sc["IP"](src=src, dst=dst, ttl=ttl) if family == 4 else sc["IPv6"](src=src, dst=dst, hlim=ttl)
        tcp = sc["TCP"](sport=sport, dport=dport, flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                        window=window)
        pkt = sc["Ether"](src=src_mac, dst=dst_mac) / ip / tcp
        if payload:
            pkt = pkt / sc["Raw"](payload)
        return bytes(pkt)

    def send_due(self) -> None:
        now = time.time_ns()
        while self.pending and self.pending[0][0] <= now:
            _, _, arm_id, ifname, frame, record = heapq.heappop(self.pending)
            arm = self.arms.get(arm_id)
            if arm is None:
                continue
            sock = arm.socks.get(ifname)
            if sock is None:
                arm.cancelled += 1
                continue
            try:
                sock.send(frame)
            except OSError as exc:
                arm.errors.append(f"send on {ifname} failed: {exc}")
                arm.cancelled += 1
                continue
            now = time.time_ns()
            arm.on_sent(record, now)

    def expire(self) -> None:
        now = time.monotonic()
        for arm in self.arms.values():
            if arm.socks and now >= arm.expires:
                arm.expired = True
                arm.close()  # a forgotten arm must not pin the testbed's namespace

    def next_timeout(self) -> float:
        waits = [1.0]
        if self.pending:
            waits.append((self.pending[0][0] - time.time_ns()) / 1e9)
        waits += [a.expires - time.monotonic() for a in self.arms.values() if a.socks]
        return max(0.0, min(waits))

    def fds(self) -> dict[int, tuple[_Arm, str]]:
        return {sock.fileno(): (arm, ifname) for arm in self.arms.values() for ifname, sock in arm.socks.items()}

    # -- requests ----------------------------------------------------------------------------------
    def handle(self, req: dict) -> dict | None:
        op = req.get("op")
        if op == "arm":
            arm_id = str(req.get("id"))
            if arm_id in self.arms:
                raise ValueError(f"arm id {arm_id} is already in use")
            kind = req.get("kind") or "icmp"
            if kind not in ARM_KINDS:
                raise ValueError(f"unknown arm kind {kind!r}; use one of {', '.join(ARM_KINDS)}")
            arm = ARM_KINDS[kind](req, self)
            self.arms[arm.id] = arm
            return {"armed": arm.id, "armed_ns": time.time_ns()}
        if op in ("status", "disarm", "rst", "stop"):
            arm = self.arms.get(str(req.get("id")))
            if arm is None:
                raise ValueError(f"no arm with id {req.get('id')!r}")
            self.drain(arm)  # frames that arrived before this request count
            self.send_due()
            if op == "rst":
                if not isinstance(arm, _WatchArm):
                    raise ValueError(f"arm {arm.id} is a {arm.kind} arm, not a connection watch")
                if not arm.socks:
                    raise ValueError(f"arm {arm.id} has expired")
                return {"sent": arm.rst(self, req)}
            if op == "stop":
                arm.stop_intake()
            if op == "disarm":
                arm.close()
                del self.arms[arm.id]
                kept = [p for p in self.pending if p[2] != arm.id]
                arm.cancelled += len(self.pending) - len(kept)
                heapq.heapify(kept)
                self.pending = kept
            return {"report": arm.report()}
        if op == "ping":
            return {"pid": os.getpid(), "armed": sorted(self.arms),
                    "open_sockets": sum(a.open_sockets for a in self.arms.values()),
                    "started_ns": self.started_ns, "import_ms": self.import_ms}
        if op == "quit":
            return None
        raise ValueError(f"unknown op {op!r}")

    def close(self) -> None:
        for arm in self.arms.values():
            arm.close()
        self.arms.clear()


def _ts(payload: bytes) -> int:
    sec, nsec = struct.unpack("qq", payload[:16])
    return sec * 1_000_000_000 + nsec


def _write(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def main() -> int:
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_w, b"x"))
    signal.signal(signal.SIGINT, lambda *_: os.write(stop_w, b"x"))
    agent = Agent()
    _write({"event": "hello", "pid": os.getpid(), "scapy": agent.scapy_version, "import_ms": agent.import_ms})
    buf = b""
    try:
        while True:
            socks = agent.fds()
            ready, _, _ = select.select([0, stop_r, *socks], [], [], agent.next_timeout())
            if stop_r in ready:
                return 0
            for fd in ready:
                if fd in socks:
                    agent.on_readable(*socks[fd])
            agent.send_due()
            agent.expire()
            if 0 in ready:
                chunk = os.read(0, 65536)
                if not chunk:
                    return 0  # the caller is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req: dict = {}
                    try:
                        req = json.loads(line)
                        answer = agent.handle(req)
                    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
                        _write({"seq": req.get("seq"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
                        continue
                    if answer is None:
                        _write({"seq": req.get("seq"), "ok": True})
                        return 0
                    _write({"seq": req.get("seq"), "ok": True, **answer})
    finally:
        agent.close()


# ---------------------------------------------------------------------------------------------------
# The caller's side
# ---------------------------------------------------------------------------------------------------

class AgentError(RuntimeError):
    """The fault agent could not be started, or refused or failed a request."""


class FaultAgent:
    """The caller's handle on one agent process: start it, send requests, stop it. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0
        self._buf = b""
        self._seq = 0
        self._stderr = None
        self.hello: dict = {}
        self.starts = 0  # how many agent processes this handle has started

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._owner == os.getpid()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if self._owner != os.getpid():
                # A forked child inherited the parent's pipes: it must not talk to the parent's agent.
                self._proc = None
            self._drop()
            self._stderr = tempfile.TemporaryFile()
            from netns import namespace

            self._proc = subprocess.Popen(
                [sys.executable, "-m", "verifier.faults.agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0, close_fds=True,
                # PR_SET_PDEATHSIG fires when the *thread* that forked it ends; the stdin EOF check in
                # the agent covers a caller that started it from a short-lived thread and lives on.
                preexec_fn=lambda: namespace._libc.prctl(1, signal.SIGKILL),
            )
            self._owner = os.getpid()
            self._buf = b""
            self.starts += 1
            _register_atexit()
            hello = self._read_line(START_TIMEOUT, "start")
            if hello.get("event") != "hello":
                raise AgentError(f"the fault agent said {hello!r} instead of hello{self._stderr_tail()}")
            self.hello = hello

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict:
        """Send one request (starting the agent if needed) and return its answer; AgentError if refused."""
        with self._lock:
            self.start()
            self._seq += 1
            seq = self._seq
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps({"op": op, "seq": seq, **fields}) + "\n").encode())
            except BrokenPipeError:
                raise AgentError(f"the fault agent died{self._stderr_tail()}") from None
            while True:
                answer = self._read_line(timeout, op)
                if answer.get("seq") == seq:
                    break  # earlier answers belong to requests that timed out: skip them
            if not answer.get("ok"):
                raise AgentError(f"fault agent refused {op}: {answer.get('error')}")
            return answer

    def _read_line(self, timeout: float, what: str) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._kill()
                raise AgentError(f"the fault agent did not answer {what} within {timeout} s{self._stderr_tail()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self._proc.wait()
                raise AgentError(f"the fault agent exited ({self._proc.returncode}) during {what}"
                                 f"{self._stderr_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip()[-500:]
        return f": {tail}" if tail else ""

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _drop(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the agent to quit (it closes every socket) and wait; kill it if it does not."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or self._owner != os.getpid():
                return
            try:
                if proc.poll() is None:
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"op": "quit"}\n')
                    proc.stdin.close()
                    proc.wait(timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
                self._drop()


_agent: FaultAgent | None = None
_agent_lock = threading.Lock()


def agent() -> FaultAgent:
    """This process's fault agent handle; the process itself starts on the first request."""
    global _agent
    with _agent_lock:
        if _agent is None:
            _agent = FaultAgent()
        return _agent


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_at_exit)
        _atexit_registered = True


def _stop_at_exit() -> None:
    if _agent is not None:
        _agent.stop()


if __name__ == "__main__":
    sys.exit(main())
