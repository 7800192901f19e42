"""The fast path: classify every TCP connection attempt of a capture in one streaming pass.

`scan(path)` reads a pcap or pcapng file once, front to back, and yields a
`verifier.analysis.classify.ConnectionRecord` per TCP connection attempt. Memory stays bounded as the file
grows: a connection that has been idle for `linger_s` of capture time (or that Zeek would have
removed, in Zeek grouping) is emitted and forgotten, and only one read buffer of the file is held.

Two engines do exactly the same work, packet for packet:

* **C** (`engine="c"`, the default when a C compiler is present): the decoder, the connection table,
  the attempt machine and the Zeek machine written in C (`_C_SOURCE` below), compiled at run time
  with the system's `cc` like the test programs (cached by source hash) and driven through ctypes:
  Python hands it 1 MiB buffers of the file and receives finished connections as fixed-size
  records. No Python runs per packet: about 1.5 million packets per second on the 2-core
  development machine (bench/replay.py), 12-15 times tshark; about 0.7 million with a Python
  ConnectionRecord built per connection, which then costs more than the classification itself.
* **Python** (`engine="python"`): the reference, written for clarity (about 60 000 packets per
  second), used where there is no compiler. Both engines use the attempt table of
  `verifier.analysis.classify` (the C engine receives it as an array at run time) and build their records
  with the same `classify._record`.

In "attempt" grouping, packets wait `reorder_s` (0.1 s of capture time) in a small heap and are
taken in time order, as `verifier.analysis.trace.Trace` sorts them: a pcapng file written from several
interfaces is not in time order. "zeek" grouping keeps file order, as Zeek does.

Why by hand and not Scapy or `verifier.wire.decode`: Scapy dissects a few thousand packets per
second, and `decode` builds a frozen `Packet` per frame (about 2 µs each) and knows neither
tunnels nor MPLS/PPPoE/FabricPath. Here a frame becomes a few integers, with no object per packet.
`tests/unit/test_replay.py` cross-checks both engines against each other, against the detailed
path (`load_trace` + `classify_trace`) and against Scapy's dissection, on crafted and real traces.

Link layers: Ethernet (VLAN/QinQ, MPLS, PPPoE, PBB, VN-Tag, Cisco FabricPath), Linux cooked v1/v2,
raw IPv4/IPv6, BSD loopback. Tunnels decapsulated like Zeek: IP-in-IP, GRE (incl. ERSPAN and Aruba
802.11 with A-MSDU), VXLAN, Geneve, GTP-U, Teredo, AYIYA. IPv4 fragments are not reassembled
(counted). Segments whose TCP header is broken are counted as malformed, never fatal.

Pure analysis: reads a file, never captures, spawns nothing but the compiler, touches no namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import heapq
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from verifier.analysis import classify
from verifier.analysis.classify import (ACK, DEFAULT_LIKELY_SERVER_PORTS, MAX_SYN_TIMES, RST, SYN, TRANSITION_ARRAY, E,
                               AttemptMachine, ConnectionRecord, ZeekConn, event_of)
from verifier.wire import address_text, internet_checksum
from verifier.pcap import CaptureFile, CaptureFormatError, CaptureTruncatedWarning

__all__ = ["CEngine", "ScanStats", "Scanner", "build_engine", "decode_frame", "engine_available", "scan", "scan_raw"]

_S = 1_000_000_000
DEFAULT_LINGER_S = 300.0  # Zeek's tcp_inactivity_timeout: an attempt idle this long is finished
# A pcapng file written from several interfaces is not in time order (our capture agent writes each
# socket's packets in batches; 0.12 ms out of order at worst in the conformance captures). Packets
# wait this long (capture time) in a small heap and are processed in time order, as Trace sorts
# them. Zeek grouping uses file order, as Zeek does.
DEFAULT_REORDER_S = 0.1
SWEEP_EVERY_NS = 10 * _S  # how often (capture time) idle connections are looked for


@dataclass
class ScanStats:
    """What a scan read: counts of frames by fate, and file-level notes."""

    packets: int = 0  # frames in the file
    tcp: int = 0  # TCP segments decoded (inner ones for tunnels)
    icmp: int = 0  # ICMP/ICMPv6 errors quoting a TCP packet
    icmp_unmatched: int = 0  # ... that quote no connection seen
    other: int = 0  # frames that are neither (ARP, UDP, ...)
    malformed: int = 0  # broken IPv4/IPv6/TCP headers, truncated before the TCP header
    fragments: int = 0  # IPv4/IPv6 fragments (not reassembled)
    bad_checksum: int = 0  # only counted when checksums are checked
    other_interface: int = 0  # copies of a connection's packets on other interfaces (not its primary)
    connections: int = 0
    truncated: bool = False
    format: str | None = None
    engine: str = ""
    end_ns: int = 0
    interfaces: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return dict(self.__dict__)


# ==================================================================================================
# The Python decoder
# ==================================================================================================

_VLAN = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_AF6 = frozenset((10, 24, 28, 30))
_IPV6_EXT = frozenset((0, 43, 60))
_TUNNEL_PORTS = {4789: "vxlan", 6081: "geneve", 2152: "gtp", 3544: "teredo", 5072: "ayiya"}
_MAX_DEPTH = 6
_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_tcp_hdr = struct.Struct("!HHIIHH").unpack_from

# Item kinds yielded by decode_frame
TCP_ITEM, ICMP_ITEM, MALFORMED, FRAGMENT, OTHER, BADSUM = range(6)


def decode_frame(linktype: int, data: bytes, orig_len: int, *, checksums: bool = False) -> list[tuple]:
    """Decode one captured frame into items, innermost packets of tunnels included.

    Items: (TCP_ITEM, family, src, dst, sport, dport, seq, ack, flags, window, payload_len, complete),
    (ICMP_ITEM, family, icmp_src, type, code, q_src, q_dst, q_sport, q_dport, q_seq or -1),
    (MALFORMED,), (FRAGMENT,), (OTHER,), (BADSUM, ...same as TCP_ITEM...).
    Addresses are bytes (4 or 16). `complete`: the whole payload was captured.
    """
    out: list[tuple] = []
    _link(linktype, data, 0, len(data), orig_len, out, checksums, 0)
    return out or [(OTHER,)]


def _link(lt: int, d: bytes, off: int, end: int, orig_len: int, out: list, ck: bool, depth: int) -> None:
    n = end
    if lt == 1:
        if n - off < 14:
            return
        _ether(d, off + 12, n, out, ck, depth)
    elif lt == 113:  # Linux cooked v1
        if n - off < 16:
            return
        _ether(d, off + 14, n, out, ck, depth)
    elif lt == 276:  # Linux cooked v2
        if n - off < 20:
            return
        _ethertype((d[off] << 8) | d[off + 1], d, off + 20, n, out, ck, depth)
    elif lt in (101, 12, 14):
        _ip_any(d, off, n, out, ck, depth)
    elif lt == 228:
        _ip4(d, off, n, out, ck, depth)
    elif lt == 229:
        _ip6(d, off, n, out, ck, depth)
    elif lt in (0, 108):
        if n - off < 4:
            return
        le = d[off] | (d[off + 1] << 8) | (d[off + 2] << 16) | (d[off + 3] << 24)
        be = (d[off] << 24) | (d[off + 1] << 16) | (d[off + 2] << 8) | d[off + 3]
        if le == 2 or be == 2:
            _ip4(d, off + 4, n, out, ck, depth)
        elif le in _AF6 or be in _AF6:
            _ip6(d, off + 4, n, out, ck, depth)


def _ether(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    """`pos` points at an Ethernet type field (after the MAC addresses)."""
    if n - pos < 2:
        return
    _ethertype((d[pos] << 8) | d[pos + 1], d, pos + 2, n, out, ck, depth)


def _ethertype(et: int, d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    while True:
        if et in _VLAN:
            if n - pos < 4:
                return
            et = (d[pos + 2] << 8) | d[pos + 3]
            pos += 4
        elif et == 0x8903:  # Cisco FabricPath: FTag/TTL, then the original frame's MACs
            if n - pos < 16:
                return
            et = (d[pos + 14] << 8) | d[pos + 15]
            pos += 16
        elif et == 0x88E7:  # 802.1ah PBB: I-TAG, then the customer MACs
            if n - pos < 18:
                return
            et = (d[pos + 16] << 8) | d[pos + 17]
            pos += 18
        elif et == 0x8926:  # VN-Tag
            if n - pos < 6:
                return
            et = (d[pos + 4] << 8) | d[pos + 5]
            pos += 6
        else:
            break
    if et == 0x0800:
        _ip4(d, pos, n, out, ck, depth)
    elif et == 0x86DD:
        _ip6(d, pos, n, out, ck, depth)
    elif et in (0x8847, 0x8848):  # MPLS: labels until bottom of stack, then IP by its version
        while True:
            if n - pos < 4:
                return
            bos = d[pos + 2] & 1
            pos += 4
            if bos:
                break
        _ip_any(d, pos, n, out, ck, depth)
    elif et == 0x8864:  # PPPoE session
        if n - pos < 8:
            return
        proto = (d[pos + 6] << 8) | d[pos + 7]
        if proto == 0x0021:
            _ip4(d, pos + 8, n, out, ck, depth)
        elif proto == 0x0057:
            _ip6(d, pos + 8, n, out, ck, depth)


def _ip_any(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    if n - pos < 1:
        return
    v = d[pos] >> 4
    if v == 4:
        _ip4(d, pos, n, out, ck, depth)
    elif v == 6:
        _ip6(d, pos, n, out, ck, depth)


def _ip4(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    if n - pos < 20:
        out.append((MALFORMED,))
        return
    vihl = d[pos]
    ihl = (vihl & 15) * 4
    if vihl >> 4 != 4 or ihl < 20 or n - pos < ihl:
        out.append((MALFORMED,))
        return
    total = _u16(d, pos + 2)[0]
    if total == 0:  # TSO: the kernel captured the super-packet with length 0
        total = n - pos
    if total < ihl:
        out.append((MALFORMED,))
        return
    if ck and internet_checksum(d[pos:pos + ihl]) != 0:
        out.append((BADSUM,))
        return
    frag = _u16(d, pos + 6)[0]
    if frag & 0x3FFF:  # MF or an offset: not reassembled
        out.append((FRAGMENT,))
        return
    end = min(n, pos + total)
    _l4(d[pos + 9], 4, d[pos + 12:pos + 16], d[pos + 16:pos + 20], d, pos + ihl, end, pos + total, out, ck, depth)


def _ip6(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    if n - pos < 40:
        out.append((MALFORMED,))
        return
    if d[pos] >> 4 != 6:
        out.append((MALFORMED,))
        return
    plen = _u16(d, pos + 4)[0]
    if plen == 0:
        plen = n - pos - 40  # jumbogram / BIG TCP
    nh = d[pos + 6]
    src, dst = d[pos + 8:pos + 24], d[pos + 24:pos + 40]
    l4 = pos + 40
    limit = pos + 40 + plen
    while True:
        if nh in _IPV6_EXT:
            if n - l4 < 2:
                out.append((MALFORMED,))
                return
            nh, l4 = d[l4], l4 + (d[l4 + 1] + 1) * 8
        elif nh == 44:
            if n - l4 < 8:
                out.append((MALFORMED,))
                return
            out.append((FRAGMENT,))
            return
        elif nh == 51:
            if n - l4 < 2:
                out.append((MALFORMED,))
                return
            nh, l4 = d[l4], l4 + (d[l4 + 1] + 2) * 4
        else:
            break
    if l4 > limit:
        out.append((MALFORMED,))
        return
    _l4(nh, 6, src, dst, d, l4, min(n, limit), limit, out, ck, depth)


def _l4(proto: int, fam: int, src: bytes, dst: bytes, d: bytes, pos: int, end: int, wire_end: int, out: list,
        ck: bool, depth: int) -> None:
    """A transport header at d[pos:end] (captured bytes); the IP payload really ends at wire_end."""
    if proto == 6:
        if end - pos < 20:
            out.append((MALFORMED,))
            return
        sport, dport, seq, ack, offflags, win = _tcp_hdr(d, pos)
        doff = (offflags >> 12) * 4
        seg_len = wire_end - pos
        if doff < 20 or doff > seg_len or end - pos < doff:
            out.append((MALFORMED,))
            return
        plen = seg_len - doff
        complete = end >= wire_end
        kind = TCP_ITEM
        if ck and complete:
            pseudo = src + dst + (struct.pack("!HH", 6, seg_len) if fam == 4 else struct.pack("!IxxxB", seg_len, 6))
            if internet_checksum(pseudo + d[pos:wire_end]) != 0:
                kind = BADSUM
        out.append((kind, fam, src, dst, sport, dport, seq, ack, offflags & 0x1FF, win, plen, complete))
        return
    if depth >= _MAX_DEPTH:
        out.append((OTHER,))
        return
    if proto in (1, 58):
        if end - pos < 8:
            out.append((MALFORMED,))
            return
        t, c = d[pos], d[pos + 1]
        if (fam == 4 and t in (3, 11, 12)) or (fam == 6 and t in (1, 2, 3, 4)):
            q = _quoted(d, pos + 8, end)
            if q is not None:
                out.append((ICMP_ITEM, fam, src, t, c) + q)
                return
        out.append((OTHER,))
        return
    if proto == 4:
        _ip4(d, pos, end, out, ck, depth + 1)
    elif proto == 41:
        _ip6(d, pos, end, out, ck, depth + 1)
    elif proto == 47:
        _gre(d, pos, end, out, ck, depth + 1)
    elif proto == 17 and end - pos >= 8:
        sport, dport = _u16(d, pos)[0], _u16(d, pos + 2)[0]
        kind = _TUNNEL_PORTS.get(dport) or _TUNNEL_PORTS.get(sport)
        if kind is None:
            # Teredo relays use any port; Zeek's DPD finds them by content: IPv6 inside UDP, to or
            # from a Teredo address (2001:0::/32).
            q = pos + 8
            if (end - q >= 40 and d[q] >> 4 == 6 and _u16(d, q + 4)[0] + 40 <= end - q
                    and (d[q + 8:q + 12] == b"\x20\x01\x00\x00" or d[q + 24:q + 28] == b"\x20\x01\x00\x00")):
                kind = "teredo"
            else:
                out.append((OTHER,))
                return
        _udp_tunnel(kind, d, pos + 8, end, out, ck, depth + 1)
    else:
        out.append((OTHER,))


def _quoted(d: bytes, pos: int, n: int) -> tuple | None:
    """(q_src, q_dst, q_sport, q_dport, q_seq) of a TCP packet quoted by an ICMP error."""
    if n - pos < 1:
        return None
    v = d[pos] >> 4
    if v == 4:
        if n - pos < 20:
            return None
        ihl = (d[pos] & 15) * 4
        if ihl < 20 or d[pos + 9] != 6 or _u16(d, pos + 6)[0] & 0x1FFF:
            return None
        src, dst, l4 = d[pos + 12:pos + 16], d[pos + 16:pos + 20], pos + ihl
    elif v == 6:
        if n - pos < 40:
            return None
        nh, l4 = d[pos + 6], pos + 40
        while nh in _IPV6_EXT or nh == 51:
            if n - l4 < 2:
                return None
            nh, l4 = d[l4], l4 + ((d[l4 + 1] + 1) * 8 if nh != 51 else (d[l4 + 1] + 2) * 4)
        if nh != 6:
            return None
        src, dst = d[pos + 8:pos + 24], d[pos + 24:pos + 40]
    else:
        return None
    if n - l4 < 4:
        return None
    sport, dport = _u16(d, l4)[0], _u16(d, l4 + 2)[0]
    seq = _u32(d, l4 + 4)[0] if n - l4 >= 8 else -1
    return (src, dst, sport, dport, seq)


def _gre(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    if n - pos < 4:
        out.append((OTHER,))
        return
    fv = _u16(d, pos)[0]
    ver = fv & 7
    proto = _u16(d, pos + 2)[0]
    off = pos + 4
    if ver == 0:
        if fv & 0xC000:
            off += 4
        if fv & 0x2000:
            off += 4
        if fv & 0x1000:
            off += 4
    elif ver == 1:
        off += 4  # key (payload length + call id)
        if fv & 0x1000:
            off += 4
        if fv & 0x0080:
            off += 4
    else:
        out.append((OTHER,))
        return
    if off > n:
        out.append((OTHER,))
        return
    if proto == 0x0800:
        _ip4(d, off, n, out, ck, depth)
    elif proto == 0x86DD:
        _ip6(d, off, n, out, ck, depth)
    elif proto == 0x6558:
        _ether(d, off + 12, n, out, ck, depth)
    elif proto == 0x88BE:  # ERSPAN type II
        _ether(d, off + 8 + 12, n, out, ck, depth)
    elif proto == 0x22EB:  # ERSPAN type III (+ optional platform subheader)
        if n - off < 12:
            return
        extra = 8 if d[off + 11] & 1 else 0
        _ether(d, off + 12 + extra + 12, n, out, ck, depth)
    elif proto == 0x880B:  # PPP
        if n - off >= 2 and d[off] == 0xFF and d[off + 1] == 0x03:
            off += 2
        if n - off < 1:
            return
        if d[off] & 1:  # one-byte protocol field
            p, off = d[off], off + 1
        else:
            if n - off < 2:
                return
            p, off = _u16(d, off)[0], off + 2
        if p == 0x21:
            _ip4(d, off, n, out, ck, depth)
        elif p == 0x57:
            _ip6(d, off, n, out, ck, depth)
    elif 0x8200 <= proto <= 0x8FFF:  # Aruba: an 802.11 frame
        _wlan(d, off, n, out, ck, depth)
    else:
        out.append((OTHER,))


def _wlan(d: bytes, pos: int, n: int, out: list, ck: bool, depth: int) -> None:
    """An 802.11 data frame (as Aruba tunnels them): LLC/SNAP, or A-MSDU subframes."""
    if n - pos < 24:
        return
    fc, fl = d[pos], d[pos + 1]
    if (fc >> 2) & 3 != 2 or fl & 0x40:  # not data, or protected
        return
    subtype = fc >> 4
    if subtype & 0x4:  # null data: no payload
        return
    hdr = 24 + (6 if fl & 3 == 3 else 0)
    amsdu = False
    if subtype & 0x8:  # QoS data
        if n - pos < hdr + 2:
            return
        amsdu = bool(d[pos + hdr] & 0x80)
        hdr += 2
        if fl & 0x80:  # +HTC
            hdr += 4
    p = pos + hdr
    if not amsdu:
        _snap(d, p, n, out, ck, depth)
        return
    while n - p >= 14:
        length = _u16(d, p + 12)[0]
        _snap(d, p + 14, min(n, p + 14 + length), out, ck, depth)
        p += 14 + length
        p += -(p - (pos + hdr)) % 4


def _snap(d: bytes, p: int, n: int, out: list, ck: bool, depth: int) -> None:
    if n - p >= 8 and d[p] == 0xAA and d[p + 1] == 0xAA and d[p + 2] == 0x03:
        _ethertype((d[p + 6] << 8) | d[p + 7], d, p + 8, n, out, ck, depth)


def _udp_tunnel(kind: str, d: bytes, p: int, n: int, out: list, ck: bool, depth: int) -> None:
    if kind == "vxlan":
        if n - p >= 8 and d[p] & 0x08:
            _ether(d, p + 8 + 12, n, out, ck, depth)
    elif kind == "geneve":
        if n - p >= 8 and d[p] >> 6 == 0:
            optlen = (d[p] & 0x3F) * 4
            proto = _u16(d, p + 2)[0]
            q = p + 8 + optlen
            if proto == 0x6558:
                _ether(d, q + 12, n, out, ck, depth)
            else:
                _ethertype(proto, d, q, n, out, ck, depth)
    elif kind == "gtp":
        if n - p < 8:
            return
        fl = d[p]
        if fl >> 5 != 1 or not fl & 0x10 or d[p + 1] != 0xFF:
            return
        q = p + 8
        if fl & 0x07:
            if n - q < 4:
                return
            next_ext = d[q + 3]
            q += 4
            while fl & 0x04 and next_ext:
                if n - q < 1 or d[q] == 0:
                    return
                ln = d[q] * 4
                if n - q < ln:
                    return
                next_ext = d[q + ln - 1]
                q += ln
        _ip_any(d, q, n, out, ck, depth)
    elif kind == "teredo":
        q = p
        if n - q >= 2 and d[q] == 0 and d[q + 1] == 1:  # authentication indicator
            if n - q < 4:
                return
            q += 4 + d[q + 2] + d[q + 3] + 9
        if n - q >= 2 and d[q] == 0 and d[q + 1] == 0:  # origin indication
            q += 8
        if n - q >= 40 and d[q] >> 4 == 6 and _u16(d, q + 4)[0] + 40 <= n - q:
            _ip6(d, q, n, out, ck, depth)
    elif kind == "ayiya":
        if n - p < 8:
            return
        idlen = 1 << (d[p] >> 4)
        siglen = (d[p + 1] >> 4) * 4
        if d[p + 2] & 0x0F != 1:  # opcode "forward"
            return
        q = p + 8 + idlen + siglen
        if d[p + 3] == 4:
            _ip4(d, q, n, out, ck, depth)
        elif d[p + 3] == 41:
            _ip6(d, q, n, out, ck, depth)


# ==================================================================================================
# The Python engine
# ==================================================================================================

def _ntop(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


class _Att:
    """One connection being tracked by the Python engine."""

    __slots__ = ("id", "family", "client", "server", "iface", "machine", "zeek", "syn_times", "icmp", "rtt",
                 "start", "last", "packets", "partial", "isn", "last_syn", "closed", "fins", "isn_server", "key", "nsyn")

    def __init__(self, id_: int, family: int, client: tuple, server: tuple, iface: int, partial: bool, t: int,
                 key: tuple) -> None:
        self.id = id_
        self.family = family
        self.client, self.server = client, server
        self.iface = iface
        self.machine = AttemptMachine()
        self.zeek: ZeekConn | None = None
        self.syn_times: list[int] = []
        self.nsyn = 0
        self.icmp: dict | None = None
        self.rtt: float | None = None
        self.start = self.last = t
        self.packets = 0
        self.partial = partial
        self.isn: int | None = None
        self.last_syn: int | None = None
        self.closed = False
        self.fins = 0
        self.isn_server: int | None = None
        self.key = key


class Scanner:
    """Streaming classification of a capture, one packet at a time (the Python engine).

    grouping "attempt": one record per connection attempt (4-tuple + client ISN, on the interface
    where it was first seen), like `verifier.analysis.trace.Trace`; "zeek": one record per Zeek conn.log row
    (Zeek's connection reuse and timers decide the splits, every interface counts).
    """

    def __init__(self, *, grouping: str = "attempt", checksums: bool = False,
                 likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS,
                 linger_s: float = DEFAULT_LINGER_S, reorder_s: float = DEFAULT_REORDER_S) -> None:
        if grouping not in ("attempt", "zeek"):
            raise ValueError(f"grouping must be 'attempt' or 'zeek', not {grouping!r}")
        self.grouping = grouping
        self.window = int(reorder_s * _S) if grouping == "attempt" else 0
        self._heap: list[tuple] = []
        self._seq = 0
        self._newest = 0
        self.checksums = checksums
        self.likely = frozenset(likely_server_ports)
        self.linger = int(linger_s * _S)
        self.stats = ScanStats(engine="python")
        self._current: dict[tuple, _Att] = {}
        self._by_isn: dict[tuple, _Att] = {}
        self._live: dict[int, _Att] = {}
        self._next_id = 0
        self._next_sweep: int | None = None
        self._now = 0
        self._iface_names: dict[int, str] = {}
        self.end_ns = 0

    # ---- input

    def feed(self, linktype: int, data: bytes, orig_len: int, ts: int, iface: int) -> list[ConnectionRecord]:
        """One frame; returns the records finished by it (usually none)."""
        st = self.stats
        st.packets += 1
        self._now = ts
        if ts > self.end_ns:
            self.end_ns = ts
        done: list[ConnectionRecord] = []
        for item in decode_frame(linktype, data, orig_len, checksums=self.checksums):
            kind = item[0]
            if kind == TCP_ITEM:
                st.tcp += 1
                self._process(item, ts, iface, True, done)
            elif kind == BADSUM:
                st.bad_checksum += 1
                if len(item) > 1:  # a TCP segment: Zeek still counts it against the connection
                    st.tcp += 1
                    self._process(item, ts, iface, False, done)
            elif kind == ICMP_ITEM:
                st.icmp += 1
                self._process(item, ts, iface, True, done)
            elif kind == MALFORMED:
                st.malformed += 1
            elif kind == FRAGMENT:
                st.fragments += 1
            else:
                st.other += 1
        # Idle connections are looked for every SWEEP_EVERY_NS, up to the time through which packets
        # have been handed on (packets still in the reorder heap are newer than that).
        if self._next_sweep is None:
            self._next_sweep = ts + SWEEP_EVERY_NS
        elif ts >= self._next_sweep:
            done += self._sweep(ts - self.window)
            self._next_sweep = ts + SWEEP_EVERY_NS
        return done

    def _process(self, item: tuple, ts: int, iface: int, csum_ok: bool, done: list) -> None:
        """Hand a decoded item on now, or after the reorder window (in (time, arrival) order)."""
        if not self.window:
            self._dispatch(item, ts, iface, csum_ok, done)
            return
        heapq.heappush(self._heap, (ts, self._seq, item, iface, csum_ok))
        self._seq += 1
        if ts > self._newest:
            self._newest = ts
        limit = self._newest - self.window
        heap = self._heap
        while heap and heap[0][0] < limit:
            t, _, it, ifc, ok = heapq.heappop(heap)
            self._dispatch(it, t, ifc, ok, done)

    def _dispatch(self, item: tuple, ts: int, iface: int, csum_ok: bool, done: list) -> None:
        if item[0] == ICMP_ITEM:
            self._icmp(item, ts, iface)
        else:
            self._tcp(item, ts, iface, csum_ok, done)

    def _flush(self, done: list) -> None:
        while self._heap:
            t, _, it, ifc, ok = heapq.heappop(self._heap)
            self._dispatch(it, t, ifc, ok, done)

    def _tcp(self, it: tuple, t: int, iface: int, csum_ok: bool, done: list) -> None:
        _, fam, src, dst, sport, dport, seq, ack, flags, win, plen, complete = it
        a, b = (src, sport), (dst, dport)
        key = (fam, a, b) if a <= b else (fam, b, a)
        if self.grouping == "zeek":
            att = self._current.get(key)
            if att is not None and (att.zeek.expired_by(t) or att.zeek.is_reuse(flags, seq)):
                done.append(self._finish(att))
                att = None
            if att is None:
                z = ZeekConn.create(a, b, flags, t, self.likely)
                att = self._new(fam, z.orig_key, z.resp_key, iface, not (flags & SYN and not flags & ACK), t, key)
                att.zeek = z
        else:
            att = self._current.get(key)
            if flags & (SYN | ACK) == SYN:
                found = self._by_isn.get((key, a, seq))
                if found is not None:
                    att = found
                elif att is not None and (not att.closed and not att.partial and a == att.server
                                          and att.isn_server is None):
                    pass  # simultaneous open: the server side's SYN belongs to the attempt
                else:
                    att = self._new(fam, a, b, iface, False, t, key)
                    self._by_isn[(key, a, seq)] = att
                    att.isn = seq
            elif att is None:
                if flags & (SYN | ACK) == SYN | ACK:
                    att = self._new(fam, b, a, iface, True, t, key)
                else:
                    att = self._new(fam, a, b, iface, True, t, key)
            if att.iface != iface:
                self.stats.other_interface += 1
                return
        self._segment(att, a, t, flags, seq, ack, win, plen, complete, csum_ok)

    def _new(self, fam: int, client: tuple, server: tuple, iface: int, partial: bool, t: int, key: tuple) -> _Att:
        att = _Att(self._next_id, fam, client, server, iface, partial, t, key)
        self._next_id += 1
        self._current[key] = att
        self._live[att.id] = att
        return att

    def _segment(self, att: _Att, src: tuple, t: int, flags: int, seq: int, ack: int, win: int, plen: int,
                 complete: bool, csum_ok: bool) -> None:
        from_client = src == att.client
        att.packets += 1
        att.last = t
        if csum_ok:
            att.machine.feed(event_of(flags, from_client))
            syn_only = flags & (SYN | ACK | RST) == SYN
            if from_client and syn_only:
                if len(att.syn_times) < MAX_SYN_TIMES:
                    att.syn_times.append(t)
                att.nsyn += 1
                att.last_syn = t
            elif not from_client and flags & (SYN | ACK | RST) == SYN | ACK and att.rtt is None \
                    and att.last_syn is not None:
                att.rtt = (t - att.last_syn) / 1e9
            if flags & SYN and not from_client and att.isn_server is None:
                att.isn_server = seq
            if flags & RST:
                att.closed = True
            if flags & 1:
                att.fins |= 1 if from_client else 2
                if att.fins == 3:
                    att.closed = True
        z = att.zeek
        if z is None:
            z = att.zeek = ZeekConn.create(src, att.server if from_client else att.client, flags, t, self.likely)
        z.process(src == z.orig_key, t, flags, seq, ack, plen, win, complete, csum_ok)

    def _icmp(self, it: tuple, t: int, iface: int) -> None:
        _, fam, isrc, itype, icode, qsrc, qdst, qsport, qdport, qseq = it
        a, b = (qsrc, qsport), (qdst, qdport)
        key = (fam, a, b) if a <= b else (fam, b, a)
        att = self._by_isn.get((key, a, qseq)) if qseq >= 0 else None
        if att is None:
            att = self._current.get(key)
        if att is None or (self.grouping == "attempt" and att.iface != iface):
            self.stats.icmp_unmatched += 1
            return
        att.machine.feed(E["ICMP"])
        att.last = t
        att.packets += 1
        if att.icmp is None:
            att.icmp = {"family": fam, "type": itype, "code": icode, "from": _ntop(isrc), "count": 0}
        att.icmp["count"] += 1

    # ---- output

    def _sweep(self, now: int) -> list[ConnectionRecord]:
        out = []
        for att in list(self._live.values()):
            if self.grouping == "zeek":
                if att.zeek is not None and att.zeek.expired_by(now):
                    out.append(self._finish(att))
            elif att.last + self.linger <= now:
                out.append(self._finish(att))
        return out

    def _finish(self, att: _Att, end_ns: int | None = None) -> ConnectionRecord:
        del self._live[att.id]
        if self._current.get(att.key) is att:
            del self._current[att.key]
        if att.isn is not None and self._by_isn.get((att.key, att.client, att.isn)) is att:
            del self._by_isn[(att.key, att.client, att.isn)]
        self.stats.connections += 1
        end = end_ns if end_ns is not None else self._now
        z = att.zeek
        return classify._record(
            number=att.id, family=att.family, client=(_ntop(att.client[0]), att.client[1]),
            server=(_ntop(att.server[0]), att.server[1]), state=att.machine.state, visited=att.machine.visited,
            conn_state=z.conn_state() if z is not None else "OTH", history=z.history if z is not None else "",
            zeek_orig=(_ntop(z.orig_key[0]), z.orig_key[1]) if z is not None and z.orig_key != att.client else None,
            syn_times=att.syn_times, syn_count=att.nsyn, end_ns=end, icmp=att.icmp, start_ns=att.start,
            last_ns=att.last, packets=att.packets, iface=self._iface_names.get(att.iface, str(att.iface)),
            partial=att.partial, isn=att.isn, rtt=att.rtt)

    def finish(self, end_ns: int | None = None) -> list[ConnectionRecord]:
        """The records still open at the end of the capture, in the order they started."""
        done: list[ConnectionRecord] = []
        self._flush(done)
        end = max(end_ns or 0, self.end_ns)
        self.stats.end_ns = end
        return done + [self._finish(att, end) for att in sorted(self._live.values(), key=lambda a: a.id)]


# ==================================================================================================
# scan(): the entry point, with either engine
# ==================================================================================================

def scan(source: str | os.PathLike | BinaryIO, *, engine: str = "auto", grouping: str = "attempt", checksums: bool = False,
         likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS, linger_s: float = DEFAULT_LINGER_S,
         reorder_s: float = DEFAULT_REORDER_S, stats: ScanStats | None = None) -> Iterator[ConnectionRecord]:
    """Classify every TCP connection attempt of a pcap/pcapng file (path or binary file), streaming.

    Yields records as connections finish (idle for `linger_s`, or removed by Zeek's timers in
    "zeek" grouping), then the rest at the end in start order. In "attempt" grouping, packets are
    taken in time order within `reorder_s` (multi-interface files interleave slightly). `stats` (a ScanStats) is filled in.
    engine: "c", "python" or "auto" (C when a compiler is available). Raises CaptureFormatError
    for a file that is not a capture; a truncated file warns (CaptureTruncatedWarning) and yields
    what was read.
    """
    if engine == "auto":
        engine = "c" if engine_available() else "python"
    if engine == "c":
        yield from _scan_c(source, grouping=grouping, checksums=checksums, likely=likely_server_ports,
                           linger_s=linger_s, reorder_s=reorder_s, stats=stats)
        return
    if engine != "python":
        raise ValueError(f"engine must be 'c', 'python' or 'auto', not {engine!r}")
    sc = Scanner(grouping=grouping, checksums=checksums, likely_server_ports=likely_server_ports,
                 linger_s=linger_s, reorder_s=reorder_s)
    if stats is not None:
        sc.stats = stats
        stats.engine = "python"
    cap = CaptureFile(source)
    names = sc._iface_names
    for raw in cap:
        if raw.iface not in names:
            names[raw.iface] = raw.iface_name if raw.iface_name is not None else str(raw.iface)
        yield from sc.feed(raw.linktype, raw.data, raw.orig_len, raw.ts_ns, raw.iface)
    end = max((s.ts_ns for s in cap.stats), default=0)
    yield from sc.finish(end)
    sc.stats.truncated = cap.truncated
    sc.stats.format = cap.format
    sc.stats.interfaces = [i.name or str(i.id) for i in cap.interfaces]


# The C engine is added below (see _C_SOURCE).



# ==================================================================================================
# The C engine
# ==================================================================================================

CFLAGS = ("-O2", "-shared", "-fPIC", "-Wall")
CHUNK = 1 << 20

# rec_t of the C source, field for field (native order, no implicit padding: asserted at load).
_REC = struct.Struct("=6q8iI8i2H16s16s16s32q8s128s")
_NSTATS = 12


class _Lib:
    """The compiled engine and its function signatures."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.fp_new.restype = vp
        lib.fp_new.argtypes = [i32, i32, i64, i64, ctypes.c_char_p, i32, i32, ctypes.POINTER(ctypes.c_uint16), i32]
        lib.fp_free.argtypes = [vp]
        lib.fp_feed.restype = ctypes.c_long
        lib.fp_feed.argtypes = [vp, ctypes.c_char_p, ctypes.c_long]
        lib.fp_finish.argtypes = [vp]
        lib.fp_out_count.restype = i32
        lib.fp_out_count.argtypes = [vp]
        lib.fp_out.restype = vp
        lib.fp_out.argtypes = [vp]
        lib.fp_out_clear.argtypes = [vp]
        lib.fp_error.restype = ctypes.c_char_p
        lib.fp_error.argtypes = [vp]
        lib.fp_stats.argtypes = [vp, ctypes.POINTER(ctypes.c_int64)]
        lib.fp_nifaces.restype = i32
        lib.fp_nifaces.argtypes = [vp]
        lib.fp_iface_name.restype = ctypes.c_char_p
        lib.fp_iface_name.argtypes = [vp, i32]
        lib.fp_rec_size.restype = i32
        lib.fp_live.restype = i64
        lib.fp_live.argtypes = [vp]
        if lib.fp_rec_size() != _REC.size:
            raise RuntimeError(f"fast path record layout mismatch: C {lib.fp_rec_size()} bytes, Python {_REC.size}")
        self.lib = lib


_lib: _Lib | None = None
_lib_error: str | None = None


def _cache_dir() -> Path:
    env = os.environ.get("VERIFIER_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "tcp-verifier" / "fastpath"
    base.mkdir(parents=True, exist_ok=True)
    return base


def build_engine() -> Path:
    """Compile the C engine (cached by the SHA-256 of source, flags and compiler) and return its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH; `make test` installs gcc")
    st = os.stat(cc)
    h = hashlib.sha256()
    h.update(_C_SOURCE.encode() + b"\0" + " ".join(CFLAGS).encode() + b"\0")
    h.update(f"{os.path.realpath(cc)}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = _cache_dir() / f"libfastpath-{h.hexdigest()[:16]}.so"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "fastpath.c"
        src.write_text(_C_SOURCE)
        so = Path(tmp) / "out.so"
        res = subprocess.run([cc, *CFLAGS, "-o", str(so), str(src)], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"building the fast path failed: {res.stderr.strip()[-2000:]}")
        os.replace(so, out)  # atomic: concurrent builders each rename a complete file
    return out


def _load() -> _Lib:
    global _lib, _lib_error
    if _lib is None:
        if _lib_error is not None:
            raise RuntimeError(_lib_error)
        try:
            _lib = _Lib(build_engine())
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _lib_error = str(exc)
            raise RuntimeError(_lib_error) from None
    return _lib


def engine_available() -> bool:
    """True when the C engine is (or can be) built and loaded."""
    try:
        _load()
    except RuntimeError:
        return False
    return True


class CEngine:
    """One C engine instance: feed it file bytes, take finished records as tuples."""

    def __init__(self, *, grouping: str = "attempt", checksums: bool = False,
                 likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS,
                 linger_s: float = DEFAULT_LINGER_S, reorder_s: float = DEFAULT_REORDER_S) -> None:
        if grouping not in ("attempt", "zeek"):
            raise ValueError(f"grouping must be 'attempt' or 'zeek', not {grouping!r}")
        self._l = _load().lib
        table = bytes(TRANSITION_ARRAY)
        ports = sorted(p for p in likely_server_ports if 0 <= p < 65536)
        arr = (ctypes.c_uint16 * max(len(ports), 1))(*ports)
        window = int(reorder_s * _S) if grouping == "attempt" else 0
        self._e = self._l.fp_new(1 if grouping == "zeek" else 0, 1 if checksums else 0, int(linger_s * _S), window,
                                 table, len(classify.STATES), len(classify.EVENTS), arr, len(ports))
        if not self._e:
            raise MemoryError("the fast path engine could not allocate its tables")

    def feed(self, data: bytes) -> int:
        """Parse as many complete records of `data` as there are; bytes consumed (CaptureFormatError
        for garbage)."""
        n = self._l.fp_feed(self._e, data, len(data))
        if n < 0:
            raise CaptureFormatError(self._l.fp_error(self._e).decode(errors="replace"))
        return n

    def finish(self) -> None:
        self._l.fp_finish(self._e)

    def take(self) -> list[tuple]:
        """The records finished so far (raw tuples of _REC), and forget them."""
        n = self._l.fp_out_count(self._e)
        if not n:
            return []
        raw = ctypes.string_at(self._l.fp_out(self._e), n * _REC.size)
        self._l.fp_out_clear(self._e)
        return list(_REC.iter_unpack(raw))

    def stats(self) -> list[int]:
        out = (ctypes.c_int64 * _NSTATS)()
        self._l.fp_stats(self._e, out)
        return list(out)

    def iface_names(self) -> list[str]:
        return [self._l.fp_iface_name(self._e, i).decode(errors="replace") or str(i)
                for i in range(self._l.fp_nifaces(self._e))]

    def live(self) -> int:
        return self._l.fp_live(self._e)

    def close(self) -> None:
        if self._e:
            self._l.fp_free(self._e)
            self._e = None

    def __del__(self) -> None:
        self.close()


_text_cache: dict[bytes, str] = {}


def _text(b: bytes) -> str:
    s = _text_cache.get(b)
    if s is None:
        if len(_text_cache) > 65536:
            _text_cache.clear()
        s = _text_cache[b] = b.split(b"\0", 1)[0].decode(errors="replace")
    return s


def _from_c(t: tuple, names: list[str]) -> ConnectionRecord:
    """A ConnectionRecord from one raw C record (same `_record` as the Python engine)."""
    family = t[6]
    alen = 4 if family == 4 else 16
    nsyn = t[12]
    srv = (address_text(t[26][:alen]), t[24])
    icmp = None
    if t[16]:
        ifam = t[20]
        icmp = {"family": ifam, "type": t[17], "code": t[18], "from": address_text(t[27][:4 if ifam == 4 else 16]),
                "count": t[19]}
    iface = t[7]
    rtt = t[3]
    return classify._record(
        number=t[0], family=family, client=(address_text(t[25][:alen]), t[23]), server=srv, state=t[9], visited=t[10],
        conn_state=_text(t[60]), history=_text(t[61][:t[21]]), zeek_orig=srv if t[15] else None,
        syn_times=list(t[28:28 + nsyn]), syn_count=t[22], end_ns=t[5], icmp=icmp, start_ns=t[1], last_ns=t[2],
        packets=t[11], iface=names[iface] if iface < len(names) else str(iface), partial=bool(t[8]),
        isn=t[14] if t[13] else None, rtt=rtt / 1e9 if rtt >= 0 else None)


def _open(source: str | os.PathLike):
    try:
        return open(source, "rb")
    except OSError as e:
        raise CaptureFormatError(f"{os.fspath(source)}: cannot open ({e.strerror})") from None


def _scan_c(source, *, grouping: str, checksums: bool, likely: frozenset[int], linger_s: float,
            stats: ScanStats | None, raw: bool = False, reorder_s: float = DEFAULT_REORDER_S) -> Iterator:
    if hasattr(source, "read"):  # an open binary file (or BytesIO): read from where it stands
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else "<stream>"
        opened = contextlib.nullcontext(source)
    else:
        name = os.fspath(source)
        opened = _open(source)
    eng = CEngine(grouping=grouping, checksums=checksums, likely_server_ports=likely, linger_s=linger_s,
                  reorder_s=reorder_s)
    names: list[str] = []
    try:
        with opened as f:
            pending = b""
            total = 0
            while True:
                chunk = f.read(CHUNK)
                data = pending + chunk if pending else chunk
                if not data:
                    break
                try:
                    used = eng.feed(data)
                except CaptureFormatError as exc:
                    raise CaptureFormatError(f"{name}: {exc}") from None
                total += used
                pending = data[used:]
                recs = eng.take()
                if recs:
                    if raw:
                        yield from recs
                    else:
                        if len(names) != eng._l.fp_nifaces(eng._e):
                            names = eng.iface_names()
                        for t in recs:
                            yield _from_c(t, names)
                if not chunk:
                    break
            st = eng.stats()
            if st[11] == 0:  # the format was never recognised
                raise CaptureFormatError(f"{name}: not a pcap or pcapng file (empty or shorter than 4 bytes)"
                                         if total + len(pending) < 4 else
                                         f"{name}: capture is too short to hold its file header")
            truncated = bool(pending)
            if truncated:
                warnings.warn(CaptureTruncatedWarning(
                    f"{name}: capture is truncated in the middle of a record at byte {total}; read {st[0]} "
                    f"packets before it"), stacklevel=3)
        eng.finish()
        names = eng.iface_names()
        recs = eng.take()
        st = eng.stats()
        if stats is not None:
            (stats.packets, stats.tcp, stats.icmp, stats.icmp_unmatched, stats.other, stats.malformed,
             stats.fragments, stats.bad_checksum, stats.other_interface, stats.connections) = st[:10]
            stats.end_ns = st[10]
            stats.format = {1: "pcap", 2: "pcapng"}.get(st[11])
            stats.truncated = truncated
            stats.engine = "c"
            stats.interfaces = names
        if raw:
            yield from recs
        else:
            for t in recs:
                yield _from_c(t, names)
    finally:
        eng.close()


def scan_raw(source: str | os.PathLike, *, grouping: str = "attempt", checksums: bool = False,
             likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS, linger_s: float = DEFAULT_LINGER_S,
             stats: ScanStats | None = None) -> dict[str, int]:
    """Count the connection attempts of a file per outcome with the C engine, without building a
    ConnectionRecord per connection (the classification alone: what the benchmark times first)."""
    counts: dict[str, int] = {}
    name = classify.outcome_name
    for t in _scan_c(source, grouping=grouping, checksums=checksums, likely=likely_server_ports,
                     linger_s=linger_s, stats=stats, raw=True):
        nsyn, total = t[12], t[22]
        age = (t[5] - t[27 + nsyn]) / 1e9 if nsyn and total == nsyn else None
        o = name(t[9], t[10], age)
        counts[o] = counts.get(o, 0) + 1
    return counts


# The engine's source: compiled at run time (see build_engine), a port of the Python engine above.
_C_SOURCE = r'''/* tcp-verifier fast path: pcap/pcapng framing, decoder, connection table, attempt and Zeek
 * machines. A line-for-line port of the Python engine in verifier/fastpath.py and the machines of
 * verifier/classify.py; the attempt transition table is passed in at run time (fp_new) so that it
 * exists in one place only. Built at run time, loaded with ctypes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stddef.h>

#define MAXIF 4096
#define NSYN 32
#define HISTMAX 127
#define NBLK 8
#define NTIMER 8
#define SWEEP_NS 10000000000LL
#define MAX_RECORD_LEN (256LL * 1024 * 1024)

/* Zeek endpoint states */
enum { INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET };
enum { T_ATTEMPT = 1, T_EXPIRE = 2, T_DELETE = 3 };
#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_ACK 0x10

#define S1 1000000000LL
#define TCP_ATTEMPT_DELAY (5 * S1)
#define TCP_SYN_TIMEOUT (5 * S1)
#define TCP_SESSION_TIMER (6 * S1)
#define TCP_CONNECTION_LINGER (5 * S1)
#define TCP_CLOSE_DELAY (5 * S1)
#define TCP_INACTIVITY_TIMEOUT (300 * S1)
#define LONG_INACTIVITY_TIMEOUT (3600 * S1)
#define TOO_LARGE_SEQ_DELTA 1048576
#define TCP_MAX_INITIAL_WINDOW 16384

typedef struct {
    int state, prev_state, is_orig, did_close, fin_cnt, rst_cnt, nblocks;
    uint32_t start_seq, last_seq, ack_seq;
    int64_t fin_seq, hist_last_syn, hist_last_fin, hist_last_rst, reassem, trim;
    uint32_t chk_cnt, chk_thresh, rxmt_cnt, rxmt_thresh, win0_cnt, win0_thresh, gap_cnt, gap_thresh;
    int64_t blocks[NBLK][2];
} zep_t;

typedef struct {
    zep_t ep[2];
    int o;              /* index of the originator in ep[] */
    int zorig_is_client; /* Zeek's originator is our attempt's client */
    int has;             /* the Zeek machine has been created */
    int is_partial, first_packet_seen, is_active, ntimers, hlen;
    uint32_t hist_seen;
    int64_t last_time, start_time, inactivity, removed_at;
    int64_t tt[NTIMER];
    int tk[NTIMER];
    char hist[HISTMAX + 1];
} zconn_t;

typedef struct {
    int64_t id, start, last, last_syn, rtt, first_syn;
    int family, iface, partial, state, closed, fins, has_isn, has_isn_server, nsyn, in_cur, in_isn, live;
    uint32_t visited, packets, isn, isn_server;
    uint8_t client[16], server[16];
    uint16_t cport, sport;
    int cur_next, isn_next, free_next;
    uint32_t hkey, hisn;
    int64_t syn[NSYN];
    int has_icmp, icmp_type, icmp_code, icmp_count, icmp_family;
    uint8_t icmp_from[16];
    zconn_t z;
} att_t;

/* the record handed to Python: fixed layout, see _REC in fastpath.py */
typedef struct {
    int64_t id, start, last, rtt, first_syn, end;
    int32_t family, iface, partial, state, visited, packets, nsyn, has_isn;
    uint32_t isn;
    int32_t zflip, has_icmp, icmp_type, icmp_code, icmp_count, icmp_family, hlen, syn_total;
    uint16_t cport, sport;
    uint8_t client[16], server[16], icmp_from[16];
    int64_t syn[NSYN];
    char cs[8];
    char hist[HISTMAX + 1];
} rec_t;

typedef struct {
    int linktype;
    uint32_t snaplen;
    int64_t mul, div, off;
    char name[64];
} iface_t;

typedef struct {
    /* configuration */
    int grouping_zeek, checksums;
    int64_t linger, window;
    uint8_t next[64 * 64];
    int nev;
    uint8_t likely[65536];
    /* framing */
    int fmt, swap, pcap_nano, pcap_extra, pcap_linktype, sec_base, nifaces;
    iface_t ifaces[MAXIF];
    int64_t last_ts, isb_max_ts, offset, index;
    char err[512];
    /* tables */
    att_t *pool;
    int pool_cap, pool_used, free_head, live;
    int *cur_b, *isn_b;
    uint32_t nb; /* bucket count, power of two */
    int64_t next_id, next_sweep, now, end_ns;
    int started;
    /* reorder heap */
    struct qitem *heap;
    int heap_n, heap_cap;
    int64_t heap_seq, newest;
    /* output */
    rec_t *out;
    int out_n, out_cap;
    /* stats */
    int64_t st[12];
} eng_t;

enum { ST_PACKETS, ST_TCP, ST_ICMP, ST_ICMP_UNMATCHED, ST_OTHER, ST_MALFORMED, ST_FRAGMENTS, ST_BADSUM,
       ST_OTHER_IFACE, ST_CONNECTIONS };

/* ------------------------------------------------------------------------------------------------ */
/* items produced by the decoder                                                                     */

enum { IT_TCP, IT_ICMP, IT_MALFORMED, IT_FRAGMENT, IT_OTHER, IT_BADSUM, IT_BADIP };

typedef struct {
    int kind, family;
    const uint8_t *src, *dst;
    int sport, dport;
    uint32_t seq, ack;
    int flags, win, plen, complete;
    /* icmp */
    const uint8_t *isrc;
    int itype, icode;
    const uint8_t *qsrc, *qdst;
    int qsport, qdport;
    int64_t qseq;
} item_t;

static void handle_item(eng_t *e, item_t *it, int64_t ts, int iface);

/* an item waiting in the reorder heap, with its own copies of the addresses */
typedef struct qitem {
    item_t it;
    int64_t ts, seq;
    int iface, csum_ok;
    uint8_t src[16], dst[16], isrc[16], qsrc[16], qdst[16];
} qitem_t;

typedef struct {
    eng_t *e;
    int64_t ts;
    int iface, ck, count;
} dctx;

static inline uint16_t u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void emit_simple(dctx *c, int kind) {
    item_t it;
    it.kind = kind;
    c->count++;
    handle_item(c->e, &it, c->ts, c->iface);
}

static uint32_t csum_add(uint32_t s, const uint8_t *p, long n) {
    long i;
    for (i = 0; i + 1 < n; i += 2) s += (uint32_t)((p[i] << 8) | p[i + 1]);
    if (n & 1) s += (uint32_t)(p[n - 1] << 8);
    return s;
}
static uint32_t csum_fold(uint32_t s) {
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    return s;
}

static void d_ip4(dctx *c, const uint8_t *d, long pos, long n, int depth);
static void d_ip6(dctx *c, const uint8_t *d, long pos, long n, int depth);
static void d_ethertype(dctx *c, int et, const uint8_t *d, long pos, long n, int depth);

static void d_ether(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 2) return;
    d_ethertype(c, u16(d + pos), d, pos + 2, n, depth);
}

static void d_ip_any(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 1) return;
    int v = d[pos] >> 4;
    if (v == 4) d_ip4(c, d, pos, n, depth);
    else if (v == 6) d_ip6(c, d, pos, n, depth);
}

static void d_ethertype(dctx *c, int et, const uint8_t *d, long pos, long n, int depth) {
    for (;;) {
        if (et == 0x8100 || et == 0x88A8 || et == 0x9100 || et == 0x9200) {
            if (n - pos < 4) return;
            et = u16(d + pos + 2);
            pos += 4;
        } else if (et == 0x8903) {
            if (n - pos < 16) return;
            et = u16(d + pos + 14);
            pos += 16;
        } else if (et == 0x88E7) {
            if (n - pos < 18) return;
            et = u16(d + pos + 16);
            pos += 18;
        } else if (et == 0x8926) {
            if (n - pos < 6) return;
            et = u16(d + pos + 4);
            pos += 6;
        } else break;
    }
    if (et == 0x0800) d_ip4(c, d, pos, n, depth);
    else if (et == 0x86DD) d_ip6(c, d, pos, n, depth);
    else if (et == 0x8847 || et == 0x8848) {
        for (;;) {
            if (n - pos < 4) return;
            int bos = d[pos + 2] & 1;
            pos += 4;
            if (bos) break;
        }
        d_ip_any(c, d, pos, n, depth);
    } else if (et == 0x8864) {
        if (n - pos < 8) return;
        int proto = u16(d + pos + 6);
        if (proto == 0x0021) d_ip4(c, d, pos + 8, n, depth);
        else if (proto == 0x0057) d_ip6(c, d, pos + 8, n, depth);
    }
}

static void d_l4(dctx *c, int proto, int fam, const uint8_t *src, const uint8_t *dst, const uint8_t *d,
                 long pos, long end, long wire_end, int depth);

static void d_ip4(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 20) { emit_simple(c, IT_MALFORMED); return; }
    int vihl = d[pos];
    int ihl = (vihl & 15) * 4;
    if ((vihl >> 4) != 4 || ihl < 20 || n - pos < ihl) { emit_simple(c, IT_MALFORMED); return; }
    long total = u16(d + pos + 2);
    if (total == 0) total = n - pos;
    if (total < ihl) { emit_simple(c, IT_MALFORMED); return; }
    if (c->ck && csum_fold(csum_add(0, d + pos, ihl)) != 0xFFFF) { emit_simple(c, IT_BADIP); return; }
    int frag = u16(d + pos + 6);
    if (frag & 0x3FFF) { emit_simple(c, IT_FRAGMENT); return; }
    long end = pos + total < n ? pos + total : n;
    d_l4(c, d[pos + 9], 4, d + pos + 12, d + pos + 16, d, pos + ihl, end, pos + total, depth);
}

static void d_ip6(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 40 || (d[pos] >> 4) != 6) { emit_simple(c, IT_MALFORMED); return; }
    long plen = u16(d + pos + 4);
    if (plen == 0) plen = n - pos - 40;
    int nh = d[pos + 6];
    long l4 = pos + 40, limit = pos + 40 + plen;
    for (;;) {
        if (nh == 0 || nh == 43 || nh == 60) {
            if (n - l4 < 2) { emit_simple(c, IT_MALFORMED); return; }
            int nn = d[l4];
            l4 += (d[l4 + 1] + 1) * 8;
            nh = nn;
        } else if (nh == 44) {
            if (n - l4 < 8) { emit_simple(c, IT_MALFORMED); return; }
            emit_simple(c, IT_FRAGMENT);
            return;
        } else if (nh == 51) {
            if (n - l4 < 2) { emit_simple(c, IT_MALFORMED); return; }
            int nn = d[l4];
            l4 += (d[l4 + 1] + 2) * 4;
            nh = nn;
        } else break;
    }
    if (l4 > limit) { emit_simple(c, IT_MALFORMED); return; }
    d_l4(c, nh, 6, d + pos + 8, d + pos + 24, d, l4, limit < n ? limit : n, limit, depth);
}

static int d_quoted(const uint8_t *d, long pos, long n, item_t *it) {
    if (n - pos < 1) return 0;
    int v = d[pos] >> 4;
    long l4;
    if (v == 4) {
        if (n - pos < 20) return 0;
        int ihl = (d[pos] & 15) * 4;
        if (ihl < 20 || d[pos + 9] != 6 || (u16(d + pos + 6) & 0x1FFF)) return 0;
        it->qsrc = d + pos + 12;
        it->qdst = d + pos + 16;
        l4 = pos + ihl;
    } else if (v == 6) {
        if (n - pos < 40) return 0;
        int nh = d[pos + 6];
        l4 = pos + 40;
        while (nh == 0 || nh == 43 || nh == 60 || nh == 51) {
            if (n - l4 < 2) return 0;
            int nn = d[l4];
            l4 += nh != 51 ? (d[l4 + 1] + 1) * 8 : (d[l4 + 1] + 2) * 4;
            nh = nn;
        }
        if (nh != 6) return 0;
        it->qsrc = d + pos + 8;
        it->qdst = d + pos + 24;
    } else return 0;
    if (n - l4 < 4) return 0;
    it->qsport = u16(d + l4);
    it->qdport = u16(d + l4 + 2);
    it->qseq = n - l4 >= 8 ? (int64_t)u32(d + l4 + 4) : -1;
    return 1;
}

static void d_snap(dctx *c, const uint8_t *d, long p, long n, int depth) {
    if (n - p >= 8 && d[p] == 0xAA && d[p + 1] == 0xAA && d[p + 2] == 0x03)
        d_ethertype(c, u16(d + p + 6), d, p + 8, n, depth);
}

static void d_wlan(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 24) return;
    int fc = d[pos], fl = d[pos + 1];
    if (((fc >> 2) & 3) != 2 || (fl & 0x40)) return;
    int subtype = fc >> 4;
    if (subtype & 0x4) return;
    long hdr = 24 + ((fl & 3) == 3 ? 6 : 0);
    int amsdu = 0;
    if (subtype & 0x8) {
        if (n - pos < hdr + 2) return;
        amsdu = (d[pos + hdr] & 0x80) != 0;
        hdr += 2;
        if (fl & 0x80) hdr += 4;
    }
    long p = pos + hdr;
    if (!amsdu) { d_snap(c, d, p, n, depth); return; }
    while (n - p >= 14) {
        long length = u16(d + p + 12);
        long sub_end = p + 14 + length < n ? p + 14 + length : n;
        d_snap(c, d, p + 14, sub_end, depth);
        p += 14 + length;
        long rel = p - (pos + hdr);
        p += (4 - (rel % 4)) % 4;
    }
}

static void d_gre(dctx *c, const uint8_t *d, long pos, long n, int depth) {
    if (n - pos < 4) { emit_simple(c, IT_OTHER); return; }
    int fv = u16(d + pos), ver = fv & 7, proto = u16(d + pos + 2);
    long off = pos + 4;
    if (ver == 0) {
        if (fv & 0xC000) off += 4;
        if (fv & 0x2000) off += 4;
        if (fv & 0x1000) off += 4;
    } else if (ver == 1) {
        off += 4;
        if (fv & 0x1000) off += 4;
        if (fv & 0x0080) off += 4;
    } else { emit_simple(c, IT_OTHER); return; }
    if (off > n) { emit_simple(c, IT_OTHER); return; }
    if (proto == 0x0800) d_ip4(c, d, off, n, depth);
    else if (proto == 0x86DD) d_ip6(c, d, off, n, depth);
    else if (proto == 0x6558) d_ether(c, d, off + 12, n, depth);
    else if (proto == 0x88BE) d_ether(c, d, off + 8 + 12, n, depth);
    else if (proto == 0x22EB) {
        if (n - off < 12) return;
        int extra = (d[off + 11] & 1) ? 8 : 0;
        d_ether(c, d, off + 12 + extra + 12, n, depth);
    } else if (proto == 0x880B) {
        if (n - off >= 2 && d[off] == 0xFF && d[off + 1] == 0x03) off += 2;
        if (n - off < 1) return;
        int p;
        if (d[off] & 1) { p = d[off]; off += 1; }
        else {
            if (n - off < 2) return;
            p = u16(d + off);
            off += 2;
        }
        if (p == 0x21) d_ip4(c, d, off, n, depth);
        else if (p == 0x57) d_ip6(c, d, off, n, depth);
    } else if (proto >= 0x8200 && proto <= 0x8FFF) d_wlan(c, d, off, n, depth);
    else emit_simple(c, IT_OTHER);
}

static void d_udp_tunnel(dctx *c, int kind, const uint8_t *d, long p, long n, int depth) {
    if (kind == 1) { /* vxlan */
        if (n - p >= 8 && (d[p] & 0x08)) d_ether(c, d, p + 8 + 12, n, depth);
    } else if (kind == 2) { /* geneve */
        if (n - p >= 8 && (d[p] >> 6) == 0) {
            long optlen = (d[p] & 0x3F) * 4;
            int proto = u16(d + p + 2);
            long q = p + 8 + optlen;
            if (proto == 0x6558) d_ether(c, d, q + 12, n, depth);
            else d_ethertype(c, proto, d, q, n, depth);
        }
    } else if (kind == 3) { /* gtp */
        if (n - p < 8) return;
        int fl = d[p];
        if ((fl >> 5) != 1 || !(fl & 0x10) || d[p + 1] != 0xFF) return;
        long q = p + 8;
        if (fl & 0x07) {
            if (n - q < 4) return;
            int next_ext = d[q + 3];
            q += 4;
            while ((fl & 0x04) && next_ext) {
                if (n - q < 1 || d[q] == 0) return;
                long ln = d[q] * 4;
                if (n - q < ln) return;
                next_ext = d[q + ln - 1];
                q += ln;
            }
        }
        d_ip_any(c, d, q, n, depth);
    } else if (kind == 4) { /* teredo */
        long q = p;
        if (n - q >= 2 && d[q] == 0 && d[q + 1] == 1) {
            if (n - q < 4) return;
            q += 4 + d[q + 2] + d[q + 3] + 9;
        }
        if (n - q >= 2 && d[q] == 0 && d[q + 1] == 0) q += 8;
        if (n - q >= 40 && (d[q] >> 4) == 6 && u16(d + q + 4) + 40 <= n - q) d_ip6(c, d, q, n, depth);
    } else if (kind == 5) { /* ayiya */
        if (n - p < 8) return;
        long idlen = 1L << (d[p] >> 4);
        long siglen = (d[p + 1] >> 4) * 4;
        if ((d[p + 2] & 0x0F) != 1) return;
        long q = p + 8 + idlen + siglen;
        if (d[p + 3] == 4) d_ip4(c, d, q, n, depth);
        else if (d[p + 3] == 41) d_ip6(c, d, q, n, depth);
    }
}

static int tunnel_port(int port) {
    switch (port) {
    case 4789: return 1;
    case 6081: return 2;
    case 2152: return 3;
    case 3544: return 4;
    case 5072: return 5;
    }
    return 0;
}

static void d_l4(dctx *c, int proto, int fam, const uint8_t *src, const uint8_t *dst, const uint8_t *d,
                 long pos, long end, long wire_end, int depth) {
    if (proto == 6) {
        if (end - pos < 20) { emit_simple(c, IT_MALFORMED); return; }
        long doff = (d[pos + 12] >> 4) * 4;
        long seg_len = wire_end - pos;
        if (doff < 20 || doff > seg_len || end - pos < doff) { emit_simple(c, IT_MALFORMED); return; }
        item_t it;
        it.kind = IT_TCP;
        it.family = fam;
        it.src = src;
        it.dst = dst;
        it.sport = u16(d + pos);
        it.dport = u16(d + pos + 2);
        it.seq = u32(d + pos + 4);
        it.ack = u32(d + pos + 8);
        it.flags = u16(d + pos + 12) & 0x1FF;
        it.win = u16(d + pos + 14);
        it.plen = (int)(seg_len - doff);
        it.complete = end >= wire_end;
        if (c->ck && it.complete) {
            int alen = fam == 4 ? 4 : 16;
            uint32_t s = csum_add(0, src, alen);
            s = csum_add(s, dst, alen);
            s += 6;
            s += (uint32_t)(seg_len & 0xFFFF) + (uint32_t)(seg_len >> 16);
            s = csum_add(s, d + pos, seg_len);
            if (csum_fold(s) != 0xFFFF) it.kind = IT_BADSUM;
        }
        c->count++;
        handle_item(c->e, &it, c->ts, c->iface);
        return;
    }
    if (depth >= 6) { emit_simple(c, IT_OTHER); return; }
    if (proto == 1 || proto == 58) {
        if (end - pos < 8) { emit_simple(c, IT_MALFORMED); return; }
        int t = d[pos], cd = d[pos + 1];
        if ((fam == 4 && (t == 3 || t == 11 || t == 12)) || (fam == 6 && t >= 1 && t <= 4)) {
            item_t it;
            if (d_quoted(d, pos + 8, end, &it)) {
                it.kind = IT_ICMP;
                it.family = fam;
                it.isrc = src;
                it.itype = t;
                it.icode = cd;
                c->count++;
                handle_item(c->e, &it, c->ts, c->iface);
                return;
            }
        }
        emit_simple(c, IT_OTHER);
        return;
    }
    if (proto == 4) d_ip4(c, d, pos, end, depth + 1);
    else if (proto == 41) d_ip6(c, d, pos, end, depth + 1);
    else if (proto == 47) d_gre(c, d, pos, end, depth + 1);
    else if (proto == 17 && end - pos >= 8) {
        int sport = u16(d + pos), dport = u16(d + pos + 2);
        int kind = tunnel_port(dport);
        if (!kind) kind = tunnel_port(sport);
        if (!kind) {
            long q = pos + 8;
            static const uint8_t teredo_pfx[4] = {0x20, 0x01, 0x00, 0x00};
            if (end - q >= 40 && (d[q] >> 4) == 6 && u16(d + q + 4) + 40 <= end - q &&
                (memcmp(d + q + 8, teredo_pfx, 4) == 0 || memcmp(d + q + 24, teredo_pfx, 4) == 0))
                kind = 4;
            else { emit_simple(c, IT_OTHER); return; }
        }
        d_udp_tunnel(c, kind, d, pos + 8, end, depth + 1);
    } else emit_simple(c, IT_OTHER);
}

static void decode_frame(eng_t *e, int lt, const uint8_t *d, long n, int64_t ts, int iface) {
    dctx c = {e, ts, iface, e->checksums, 0};
    if (lt == 1) {
        if (n >= 14) d_ether(&c, d, 12, n, 0);
    } else if (lt == 113) {
        if (n >= 16) d_ether(&c, d, 14, n, 0);
    } else if (lt == 276) {
        if (n >= 20) d_ethertype(&c, u16(d), d, 20, n, 0);
    } else if (lt == 101 || lt == 12 || lt == 14) d_ip_any(&c, d, 0, n, 0);
    else if (lt == 228) d_ip4(&c, d, 0, n, 0);
    else if (lt == 229) d_ip6(&c, d, 0, n, 0);
    else if (lt == 0 || lt == 108) {
        if (n >= 4) {
            uint32_t le = d[0] | (d[1] << 8) | (d[2] << 16) | ((uint32_t)d[3] << 24);
            uint32_t be = ((uint32_t)d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3];
            if (le == 2 || be == 2) d_ip4(&c, d, 4, n, 0);
            else if (le == 10 || le == 24 || le == 28 || le == 30 || be == 10 || be == 24 || be == 28 || be == 30)
                d_ip6(&c, d, 4, n, 0);
        }
    }
    if (!c.count) e->st[ST_OTHER]++;
}

/* ------------------------------------------------------------------------------------------------ */
/* the Zeek machine (see ZeekConn in verifier/classify.py)                                           */

static inline int32_t seq_delta(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

static void z_hist_add(zconn_t *z, char ch) {
    if (z->hlen < HISTMAX) {
        z->hist[z->hlen++] = ch;
        z->hist[z->hlen] = 0;
    }
}
static int z_check(zconn_t *z, zep_t *ep, uint32_t mask, char code) {
    if (!ep->is_orig) {
        mask <<= 16;
        code = (char)(code | 0x20);
    }
    if (!(z->hist_seen & mask)) {
        z->hist_seen |= mask;
        z_hist_add(z, code);
        return 0;
    }
    return 1;
}
static void z_add(zconn_t *z, zep_t *ep, char code) { z_hist_add(z, ep->is_orig ? code : (char)(code | 0x20)); }
static void z_scaled(zconn_t *z, zep_t *ep, char code, uint32_t *cnt, uint32_t *thresh) {
    uint32_t n = ++*cnt;
    if (n == *thresh) {
        z_add(z, ep, code);
        *thresh *= 10;
    }
}
static void ep_set(zep_t *ep, int st) {
    if (st != ep->state) {
        ep->prev_state = ep->state;
        ep->state = st;
    }
}
static int ep_no_data_acked(zep_t *ep) {
    int32_t d = seq_delta(ep->ack_seq, ep->start_seq);
    return d == 0 || d == 1;
}
static int64_t ep_size(zep_t *ep, zep_t *peer) {
    if (ep->prev_state == SYN_SENT && ep->state == RESET && peer->state == INACTIVE && !ep_no_data_acked(ep)) return 0;
    int64_t last = seq_delta(ep->last_seq, ep->start_seq), ack = seq_delta(ep->ack_seq, ep->start_seq);
    int64_t size = last > ack ? last : ack;
    if (size != 0) size--;
    if (ep->fin_cnt > 0 && size != 0) size--;
    return size < 0 ? 0 : size;
}

static void z_init(zconn_t *z, int64_t t, int flipped, int resp_port) {
    memset(z, 0, sizeof(*z));
    z->has = 1;
    z->o = 0;
    z->ep[0].is_orig = 1;
    for (int i = 0; i < 2; i++) {
        zep_t *ep = &z->ep[i];
        ep->chk_thresh = ep->rxmt_thresh = ep->win0_thresh = ep->gap_thresh = 1;
        ep->reassem = ep->trim = 1;
    }
    if (flipped) z_hist_add(z, '^');
    z->is_active = 1;
    z->last_time = z->start_time = t;
    z->tt[0] = t + TCP_SYN_TIMEOUT;
    z->tk[0] = T_EXPIRE;
    z->ntimers = 1;
    z->inactivity = (resp_port == 21 || resp_port == 22 || resp_port == 23 || resp_port == 513)
                        ? LONG_INACTIVITY_TIMEOUT : TCP_INACTIVITY_TIMEOUT;
    z->removed_at = -1;
}

static void z_add_timer(zconn_t *z, int64_t t, int kind) {
    if (z->ntimers < NTIMER) {
        z->tt[z->ntimers] = t;
        z->tk[z->ntimers] = kind;
        z->ntimers++;
    }
}

static int wants_flip(int flags, int sport, int dport, const uint8_t *likely) {
    if ((flags & F_SYN) && !(flags & F_ACK)) return 0;
    if (!likely[sport]) return 0;
    if (likely[dport]) return (flags & F_SYN) || sport < dport;
    return 1;
}

static void z_deliver(zep_t *ep) {
    while (ep->nblocks && ep->blocks[0][0] <= ep->reassem) {
        int64_t up = ep->blocks[0][1];
        memmove(ep->blocks[0], ep->blocks[1], sizeof(ep->blocks[0]) * (ep->nblocks - 1));
        ep->nblocks--;
        if (up > ep->reassem) ep->reassem = up;
    }
}

static int ep_clean(zep_t *a) { return a->state == ESTABLISHED || (a->state == CLOSED && a->prev_state == ESTABLISHED); }

static void z_gap(zconn_t *z, zep_t *ep, zep_t *peer) {
    if (ep_clean(ep) && ep_clean(peer)) z_scaled(z, ep, 'G', &ep->gap_cnt, &ep->gap_thresh);
}

static void z_undelivered(zconn_t *z, zep_t *ep, zep_t *peer, int64_t up_to) {
    if (up_to <= 2 && z->is_partial) return;
    while (ep->nblocks && ep->blocks[0][0] < up_to) {
        if (ep->blocks[0][0] > ep->reassem) {
            z_gap(z, ep, peer);
            ep->reassem = ep->blocks[0][0];
        }
        z_deliver(ep);
    }
    if (up_to > ep->reassem) {
        z_gap(z, ep, peer);
        ep->reassem = up_to;
    }
}

static void z_trim(zconn_t *z, zep_t *ep, zep_t *peer, int64_t seq) {
    if (seq > ep->reassem) z_undelivered(z, ep, peer, seq);
    int j = 0;
    for (int i = 0; i < ep->nblocks; i++) {
        if (ep->blocks[i][1] > seq) {
            ep->blocks[j][0] = ep->blocks[i][0] < seq ? seq : ep->blocks[i][0];
            ep->blocks[j][1] = ep->blocks[i][1];
            j++;
        }
    }
    ep->nblocks = j;
    if (seq > ep->trim) ep->trim = seq;
}

static void z_insert_block(zep_t *ep, int64_t seq, int64_t upper) {
    if (ep->nblocks == NBLK) {
        /* full: widen the last block (parity with the Python engine's cap) */
        if (upper > ep->blocks[NBLK - 1][1]) ep->blocks[NBLK - 1][1] = upper;
        if (seq < ep->blocks[NBLK - 1][0]) ep->blocks[NBLK - 1][0] = seq;
    } else {
        ep->blocks[ep->nblocks][0] = seq;
        ep->blocks[ep->nblocks][1] = upper;
        ep->nblocks++;
    }
    /* keep sorted by (seq, upper) */
    for (int i = ep->nblocks - 1; i > 0; i--) {
        int64_t *a = ep->blocks[i - 1], *b = ep->blocks[i];
        if (a[0] > b[0] || (a[0] == b[0] && a[1] > b[1])) {
            int64_t t0 = a[0], t1 = a[1];
            a[0] = b[0]; a[1] = b[1]; b[0] = t0; b[1] = t1;
        } else break;
    }
}

static void z_data_sent(zconn_t *z, zep_t *ep, zep_t *peer, int64_t seq, int64_t plen) {
    int64_t acked = seq_delta(ep->ack_seq, ep->start_seq);
    int64_t upper = seq + plen;
    if (seq < acked) {
        if (upper <= acked) return;
        seq = acked;
    }
    if (upper <= ep->trim) return;
    if (seq < ep->trim) seq = ep->trim;
    if (upper <= ep->reassem) return;
    if (seq <= ep->reassem) {
        ep->reassem = upper;
        z_deliver(ep);
    } else z_insert_block(ep, seq, upper);
    if (ep_no_data_acked(ep) && ep_size(ep, peer) > TCP_MAX_INITIAL_WINDOW) z_trim(z, ep, peer, ep->reassem);
}

static void z_ack_received(zconn_t *z, zep_t *ep, zep_t *peer, int64_t seq) {
    if (ep->fin_cnt > 0 && seq >= ep->fin_seq) seq = ep->fin_seq - 1;
    if (seq <= ep->trim) return;
    z_trim(z, ep, peer, seq);
}

static void z_flip(zconn_t *z) {
    z->o = 1 - z->o;
    z->ep[z->o].is_orig = 1;
    z->ep[1 - z->o].is_orig = 0;
    z->zorig_is_client = !z->zorig_is_client;
    int fps = z->first_packet_seen;
    z->first_packet_seen = ((fps & 1) << 1) | ((fps & 2) >> 1);
    z->is_partial = 0;
    z_hist_add(z, '^');
}

static void z_closed(zconn_t *z, zep_t *ep, zep_t *peer, int gen_event) {
    if (ep->did_close) return;
    ep->did_close = 1;
    int complete = ep->state == RESET || peer->did_close || peer->state == INACTIVE;
    if (complete) {
        if ((ep->prev_state != INACTIVE || peer->state != INACTIVE) && gen_event) z->is_active = 0;
        z->tt[0] = z->last_time + TCP_CLOSE_DELAY;
        z->tk[0] = T_DELETE;
        z->ntimers = 1;
    } else if (ep->prev_state != INACTIVE) z_add_timer(z, z->last_time + TCP_SESSION_TIMER, T_EXPIRE);
}

static void z_state_machine(zconn_t *z, int64_t t, zep_t *ep, zep_t *peer, uint32_t seq, int plen, int is_orig,
                            int flags, int *do_close, int *gen_event) {
    *do_close = *gen_event = 0;
    int st = ep->state;
    if (st == INACTIVE) {
        if (flags & F_SYN) {
            if (is_orig) {
                ep_set(ep, (flags & F_ACK) ? SYN_ACK_SENT : SYN_SENT);
                z_add_timer(z, t + TCP_ATTEMPT_DELAY, T_ATTEMPT);
            } else {
                if (!(flags & F_ACK) && peer->state == SYN_ACK_SENT && seq == ep->start_seq) {
                    z->is_partial = 0;
                    z_flip(z);
                    ep_set(peer, ESTABLISHED);
                    z->first_packet_seen |= 1;
                }
                if (peer->state == SYN_SENT) ep_set(peer, ESTABLISHED);
                ep_set(ep, ESTABLISHED);
            }
        }
        if (flags & F_FIN) {
            ep_set(ep, CLOSED);
            *do_close = *gen_event = 1;
        }
        if (flags & F_RST) {
            ep_set(ep, RESET);
            int is_reject = is_orig ? peer->state == ESTABLISHED
                                    : (peer->state == SYN_SENT || peer->state == SYN_ACK_SENT);
            *do_close = 1;
            *gen_event = !is_reject;
        }
        if (ep->state == INACTIVE) {
            zep_t *orig = &z->ep[z->o];
            if (!is_orig && plen == 0 && orig->state == SYN_SENT) {
            } else if ((flags & F_ACK) && peer->state == ESTABLISHED) {
                ep_set(ep, ESTABLISHED);
                z->is_partial = 0;
                z->first_packet_seen |= ep->is_orig ? 1 : 2;
            } else ep_set(ep, PARTIAL);
        }
    } else if (st == SYN_SENT || st == SYN_ACK_SENT) {
        if (flags & F_FIN) {
            ep_set(ep, CLOSED);
            *do_close = *gen_event = 1;
        }
        if (flags & F_RST) {
            ep_set(ep, RESET);
            z->is_active = 0;
            *do_close = 1;
        }
    } else if (st == ESTABLISHED || st == PARTIAL) {
        if ((flags & F_SYN) && st == PARTIAL && peer->state == INACTIVE && !(flags & F_ACK)) ep_set(ep, SYN_SENT);
        if ((flags & F_FIN) && !(flags & F_RST)) {
            ep_set(ep, CLOSED);
            if (peer->state == RESET && peer->prev_state == CLOSED) ep_set(peer, CLOSED);
            *do_close = *gen_event = 1;
        }
        if (flags & F_RST) {
            ep_set(ep, RESET);
            *do_close = 1;
            if (peer->state != RESET || peer->prev_state != ESTABLISHED) z->is_active = 0;
        }
    } else if (st == CLOSED) {
        if ((flags & F_RST) && peer->state != CLOSED) {
            ep_set(ep, RESET);
            if (!ep->did_close) *do_close = 1;
        }
    }
}

/* one segment; is_orig relative to Zeek's originator */
static void z_process(zconn_t *z, int is_orig, int64_t t, int flags, uint32_t seq, uint32_t ack, int plen, int win,
                      int complete, int csum_ok) {
    zep_t *ep = is_orig ? &z->ep[z->o] : &z->ep[1 - z->o];
    zep_t *peer = is_orig ? &z->ep[1 - z->o] : &z->ep[z->o];
    if (!csum_ok) {
        z_scaled(z, ep, 'C', &ep->chk_cnt, &ep->chk_thresh);
        return;
    }
    if (is_orig) {
        if (!(z->first_packet_seen & 1)) z->is_partial = !(flags & F_SYN) || (flags & F_ACK);
    } else if (!(z->first_packet_seen & 2) && !z->is_partial) z->is_partial = !(flags & F_SYN);

    int seg_len = plen + ((flags & F_SYN) ? 1 : 0) + ((flags & F_FIN) ? 1 : 0);
    if (flags & F_RST) seg_len -= plen;
    uint32_t one_past = seq + (uint32_t)seg_len;

    int st = ep->state;
    if (st == INACTIVE) {
        if (flags & F_SYN) {
            ep->ack_seq = ep->start_seq = seq;
            ep->last_seq = one_past;
        } else {
            ep->ack_seq = ep->start_seq = seq - 1;
            ep->last_seq = seq;
        }
    } else if (st == SYN_SENT || st == SYN_ACK_SENT) {
        if ((flags & F_SYN) && seq != ep->start_seq) {
            ep->start_seq = ep->ack_seq = seq;
            ep->last_seq = one_past;
        }
    } else if (st == ESTABLISHED || st == PARTIAL) {
        if (flags & F_SYN) {
            ep->start_seq = ep->ack_seq = seq;
            ep->last_seq = one_past;
        }
    } else if (st == RESET) {
        if ((flags & F_SYN) && ep->prev_state == INACTIVE) {
            ep->start_seq = ep->ack_seq = seq;
            ep->last_seq = one_past;
        }
    }

    int64_t rel_seq = seq_delta(seq, ep->start_seq);
    int underflow = rel_seq < 0;

    int bits = ((flags & F_SYN) ? 1 : 0) + ((flags & F_FIN) ? 1 : 0) + ((flags & F_RST) ? 1 : 0);
    if (bits > 1) {
        if ((flags & F_FIN) && (flags & F_RST)) z_check(z, ep, 0x8, 'I');
        else z_check(z, ep, 0x40, 'Q');
    } else if (bits == 1) {
        if (flags & F_SYN) {
            char code = (flags & F_ACK) ? 'H' : 'S';
            if (z_check(z, ep, 0x1, code) && rel_seq != ep->hist_last_syn) z_add(z, ep, code);
            ep->hist_last_syn = rel_seq;
        }
        if (flags & F_FIN) {
            if (z_check(z, ep, 0x2, 'F') && rel_seq + plen != ep->hist_last_fin) z_add(z, ep, 'F');
            ep->hist_last_fin = rel_seq + plen;
        }
        if (flags & F_RST) {
            if (z_check(z, ep, 0x4, 'R') && rel_seq != ep->hist_last_rst) z_add(z, ep, 'R');
            ep->hist_last_rst = rel_seq;
        }
    } else if (plen) z_check(z, ep, 0x10, 'D');
    else if (flags & F_ACK) z_check(z, ep, 0x20, 'A');

    if (win == 0 && !(flags & F_RST) && peer->state != CLOSED && ep->state != RESET)
        z_scaled(z, ep, 'W', &ep->win0_cnt, &ep->win0_thresh);

    if (!(z->ep[0].did_close && z->ep[1].did_close)) z->last_time = t;

    if (flags & F_FIN) {
        ep->fin_cnt++;
        ep->fin_seq = rel_seq + seg_len;
    }
    if (flags & F_RST) ep->rst_cnt++;

    int64_t rel_ack = 0;
    if (flags & F_ACK) {
        if (peer->state == INACTIVE) {
            rel_ack = 1;
            peer->start_seq = peer->ack_seq = peer->last_seq = ack - 1;
        } else {
            rel_ack = seq_delta(ack, peer->start_seq);
            if (rel_ack < 0) rel_ack = 0;
            else if (!(flags & F_RST)) {
                int32_t dd = seq_delta(ack, peer->ack_seq);
                if (!(ack == 0 && dd > TOO_LARGE_SEQ_DELTA) && dd > 0) peer->ack_seq = ack;
            }
        }
    }

    int32_t delta_last = seq_delta(one_past, ep->last_seq);
    if ((flags & (F_SYN | F_RST)) && (delta_last > TOO_LARGE_SEQ_DELTA || delta_last < -TOO_LARGE_SEQ_DELTA)) {
    } else if ((flags & F_FIN) && ep->last_seq == ep->start_seq + 1) ep->last_seq = one_past;
    else if (ep->state == RESET) {
    } else if (delta_last > 0) ep->last_seq = one_past;
    else if (plen > 0) z_scaled(z, ep, 'T', &ep->rxmt_cnt, &ep->rxmt_thresh);

    int do_close, gen_event;
    z_state_machine(z, t, ep, peer, seq, plen, is_orig, flags, &do_close, &gen_event);

    if (flags & F_ACK) z_ack_received(z, peer, ep, rel_ack);

    if (plen > 0 && complete && !(flags & F_RST) && !underflow)
        z_data_sent(z, ep, peer, (flags & F_SYN) ? rel_seq + 1 : rel_seq, plen);

    z->first_packet_seen |= is_orig ? 1 : 2;

    if (do_close) z_closed(z, ep, peer, gen_event);
}

static int z_is_reuse(zconn_t *z, int flags, uint32_t seq) {
    if (!(flags & F_SYN)) return 0;
    zep_t *orig = &z->ep[z->o], *resp = &z->ep[1 - z->o];
    zep_t *conn_orig = orig;
    if (flags & F_ACK) {
        if (orig->state != INACTIVE) return 0;
        conn_orig = resp;
    }
    if (!(orig->did_close || resp->did_close)) {
        if (seq == conn_orig->start_seq) return 0;
        if (!(flags & F_ACK) && conn_orig->state == SYN_ACK_SENT && resp->state == INACTIVE && seq == resp->start_seq)
            return 0;
    }
    return 1;
}

static int z_fire(zconn_t *z, int64_t when, int kind) {
    zep_t *o = &z->ep[z->o], *r = &z->ep[1 - z->o];
    if (kind == T_DELETE) return 1;
    if (kind == T_ATTEMPT) return z->is_active && (o->state == SYN_SENT || o->state == SYN_ACK_SENT) && r->state == INACTIVE;
    if (!z->is_active) return 0;
    if (z->last_time + TCP_CONNECTION_LINGER < when) {
        if (o->did_close || r->did_close) {
            if ((o->did_close && r->did_close) || o->state == RESET || r->state == RESET || o->state == INACTIVE ||
                r->state == INACTIVE)
                return 1;
        }
        if (r->state == INACTIVE && o->state == INACTIVE) return 1;
    }
    z_add_timer(z, when + TCP_SESSION_TIMER, T_EXPIRE);
    return 0;
}

static int z_expired_by(zconn_t *z, int64_t t) {
    if (z->removed_at >= 0) return 1;
    int64_t inactive_at = z->last_time + z->inactivity;
    while (z->ntimers) {
        /* the earliest timer (ties: by kind, as Python sorts (time, name): attempt < delete < expire) */
        int best = 0;
        for (int i = 1; i < z->ntimers; i++) {
            static const int rank[4] = {0, 0, 2, 1};
            if (z->tt[i] < z->tt[best] || (z->tt[i] == z->tt[best] && rank[z->tk[i]] < rank[z->tk[best]])) best = i;
        }
        int64_t when = z->tt[best];
        int kind = z->tk[best];
        if (when > t || when >= inactive_at) break;
        z->tt[best] = z->tt[z->ntimers - 1];
        z->tk[best] = z->tk[z->ntimers - 1];
        z->ntimers--;
        if (z_fire(z, when, kind)) {
            z->removed_at = when;
            return 1;
        }
    }
    if (inactive_at <= t) {
        z->removed_at = inactive_at;
        return 1;
    }
    return 0;
}

static const char *z_conn_state(zconn_t *z) {
    zep_t *o = &z->ep[z->o], *r = &z->ep[1 - z->o];
    int os = o->state, rs = r->state;
    int oi = os == INACTIVE || os == PARTIAL, ri = rs == INACTIVE || rs == PARTIAL;
    if (rs == RESET) {
        if (os == SYN_SENT || os == SYN_ACK_SENT || (os == RESET && ep_size(o, r) == 0 && ep_size(r, o) == 0))
            return "REJ";
        return oi ? "RSTRH" : "RSTR";
    }
    if (os == RESET) {
        if (ri) {
            /* /^\^?S[^HAFGIQ]*R.*$/ */
            const char *h = z->hist;
            if (*h == '^') h++;
            if (*h == 'S') {
                for (h++; *h; h++) {
                    if (*h == 'R') return "RSTOS0";
                    if (strchr("HAFGIQ", *h)) break;
                }
            }
            return "OTH";
        }
        return "RSTO";
    }
    if (rs == CLOSED && os == CLOSED) return "SF";
    if (os == CLOSED) return ri ? "SH" : "S2";
    if (rs == CLOSED) return oi ? "SHR" : "S3";
    if (os == SYN_SENT && rs == INACTIVE) return "S0";
    if (os == ESTABLISHED && rs == ESTABLISHED) return "S1";
    return "OTH";
}

/* ------------------------------------------------------------------------------------------------ */
/* the connection table                                                                               */

static inline int alen(int fam) { return fam == 4 ? 4 : 16; }

static uint32_t hash_key(int fam, const uint8_t *a, int pa, const uint8_t *b, int pb) {
    /* order-independent: hash both endpoints and combine symmetrically */
    uint32_t ha = 2166136261u, hb = 2166136261u;
    int n = alen(fam);
    for (int i = 0; i < n; i++) { ha = (ha ^ a[i]) * 16777619u; hb = (hb ^ b[i]) * 16777619u; }
    ha = (ha ^ (uint32_t)pa) * 16777619u;
    hb = (hb ^ (uint32_t)pb) * 16777619u;
    uint32_t h = (ha ^ hb) + (ha * hb) + (uint32_t)fam;
    h ^= h >> 15;
    h *= 0x2c1b3c6dU;
    h ^= h >> 12;
    return h;
}

static int same_key(att_t *x, int fam, const uint8_t *a, int pa, const uint8_t *b, int pb) {
    int n = alen(fam);
    if (x->family != fam) return 0;
    if (x->cport == pa && x->sport == pb && !memcmp(x->client, a, n) && !memcmp(x->server, b, n)) return 1;
    if (x->cport == pb && x->sport == pa && !memcmp(x->client, b, n) && !memcmp(x->server, a, n)) return 1;
    return 0;
}

static void tables_grow(eng_t *e);

static void cur_remove(eng_t *e, int idx) {
    att_t *x = &e->pool[idx];
    if (!x->in_cur) return;
    int *pp = &e->cur_b[x->hkey & (e->nb - 1)];
    while (*pp != -1) {
        if (*pp == idx) { *pp = x->cur_next; break; }
        pp = &e->pool[*pp].cur_next;
    }
    x->in_cur = 0;
}
static void isn_remove(eng_t *e, int idx) {
    att_t *x = &e->pool[idx];
    if (!x->in_isn) return;
    int *pp = &e->isn_b[x->hisn & (e->nb - 1)];
    while (*pp != -1) {
        if (*pp == idx) { *pp = x->isn_next; break; }
        pp = &e->pool[*pp].isn_next;
    }
    x->in_isn = 0;
}
static int cur_find(eng_t *e, uint32_t h, int fam, const uint8_t *a, int pa, const uint8_t *b, int pb) {
    for (int i = e->cur_b[h & (e->nb - 1)]; i != -1; i = e->pool[i].cur_next)
        if (e->pool[i].hkey == h && same_key(&e->pool[i], fam, a, pa, b, pb)) return i;
    return -1;
}
static uint32_t isn_hash(uint32_t h, uint32_t seq, const uint8_t *a, int pa, int fam) {
    uint32_t x = h ^ (seq * 0x9E3779B1u) ^ ((uint32_t)pa << 7);
    for (int i = 0; i < alen(fam); i++) x = (x ^ a[i]) * 16777619u;
    x ^= x >> 16;
    return x;
}
static int isn_find(eng_t *e, uint32_t h, int fam, const uint8_t *a, int pa, const uint8_t *b, int pb, uint32_t seq) {
    uint32_t hi = isn_hash(h, seq, a, pa, fam);
    int n = alen(fam);
    for (int i = e->isn_b[hi & (e->nb - 1)]; i != -1; i = e->pool[i].isn_next) {
        att_t *x = &e->pool[i];
        if (x->hisn == hi && x->isn == seq && x->family == fam && x->cport == pa && x->sport == pb &&
            !memcmp(x->client, a, n) && !memcmp(x->server, b, n))
            return i;
    }
    return -1;
}
static void cur_insert(eng_t *e, int idx) {
    att_t *x = &e->pool[idx];
    int *b = &e->cur_b[x->hkey & (e->nb - 1)];
    x->cur_next = *b;
    *b = idx;
    x->in_cur = 1;
}
static void isn_insert(eng_t *e, int idx) {
    att_t *x = &e->pool[idx];
    int *b = &e->isn_b[x->hisn & (e->nb - 1)];
    x->isn_next = *b;
    *b = idx;
    x->in_isn = 1;
}

static void tables_grow(eng_t *e) {
    uint32_t nb = e->nb * 2;
    int *cb = malloc(sizeof(int) * nb), *ib = malloc(sizeof(int) * nb);
    if (!cb || !ib) { free(cb); free(ib); return; }
    free(e->cur_b);
    free(e->isn_b);
    e->cur_b = cb;
    e->isn_b = ib;
    e->nb = nb;
    memset(cb, 0xFF, sizeof(int) * nb);
    memset(ib, 0xFF, sizeof(int) * nb);
    for (int i = 0; i < e->pool_used; i++) {
        att_t *x = &e->pool[i];
        if (!x->live) continue;
        if (x->in_cur) cur_insert(e, i);
        if (x->in_isn) isn_insert(e, i);
    }
}

static int att_alloc(eng_t *e) {
    if (e->free_head != -1) {
        int i = e->free_head;
        e->free_head = e->pool[i].free_next;
        return i;
    }
    if (e->pool_used == e->pool_cap) {
        int cap = e->pool_cap * 2;
        att_t *p = realloc(e->pool, sizeof(att_t) * (size_t)cap);
        if (!p) return -1;
        e->pool = p;
        e->pool_cap = cap;
    }
    return e->pool_used++;
}

static int att_new(eng_t *e, int fam, const uint8_t *c, int cp, const uint8_t *s, int sp, int iface, int partial,
                   int64_t t, uint32_t h) {
    if ((uint32_t)e->live + 1 > e->nb) tables_grow(e);
    int idx = att_alloc(e);
    if (idx < 0) return -1;
    att_t *x = &e->pool[idx];
    memset(x, 0, offsetof(att_t, z));
    x->z.has = 0;
    x->id = e->next_id++;
    x->family = fam;
    memcpy(x->client, c, alen(fam));
    memcpy(x->server, s, alen(fam));
    x->cport = (uint16_t)cp;
    x->sport = (uint16_t)sp;
    x->iface = iface;
    x->partial = partial;
    x->start = x->last = t;
    x->last_syn = -1;
    x->rtt = -1;
    x->visited = 1;
    x->hkey = h;
    x->live = 1;
    /* replace the newest attempt of this 4-tuple */
    int old = cur_find(e, h, fam, c, cp, s, sp);
    if (old >= 0) cur_remove(e, old);
    cur_insert(e, idx);
    e->live++;
    return idx;
}

static void att_finish(eng_t *e, int idx, int64_t end) {
    att_t *x = &e->pool[idx];
    cur_remove(e, idx);
    isn_remove(e, idx);
    if (e->out_n == e->out_cap) {
        int cap = e->out_cap ? e->out_cap * 2 : 1024;
        rec_t *o = realloc(e->out, sizeof(rec_t) * (size_t)cap);
        if (!o) return;
        e->out = o;
        e->out_cap = cap;
    }
    rec_t *r = &e->out[e->out_n++];
    r->id = x->id;
    r->start = x->start;
    r->last = x->last;
    r->rtt = x->rtt;
    r->first_syn = x->nsyn ? x->syn[0] : -1;
    r->end = end;
    r->family = x->family;
    r->iface = x->iface;
    r->partial = x->partial;
    r->state = x->state;
    r->visited = (int32_t)x->visited;
    r->packets = (int32_t)x->packets;
    r->syn_total = x->nsyn;
    r->nsyn = x->nsyn < NSYN ? x->nsyn : NSYN;
    memcpy(r->syn, x->syn, sizeof(int64_t) * (size_t)r->nsyn);
    r->has_isn = x->has_isn;
    r->isn = x->isn;
    r->cport = x->cport;
    r->sport = x->sport;
    memcpy(r->client, x->client, 16);
    memcpy(r->server, x->server, 16);
    r->has_icmp = x->has_icmp;
    r->icmp_type = x->icmp_type;
    r->icmp_code = x->icmp_code;
    r->icmp_count = x->icmp_count;
    r->icmp_family = x->icmp_family;
    memcpy(r->icmp_from, x->icmp_from, 16);
    memset(r->cs, 0, sizeof r->cs + sizeof r->hist);
    if (x->z.has) {
        r->zflip = !x->z.zorig_is_client;
        strcpy(r->cs, z_conn_state(&x->z));
        memcpy(r->hist, x->z.hist, (size_t)x->z.hlen + 1);
        r->hlen = x->z.hlen;
    } else {
        r->zflip = 0;
        strcpy(r->cs, "OTH");
        r->hist[0] = 0;
        r->hlen = 0;
    }
    x->live = 0;
    x->free_next = e->free_head;
    e->free_head = idx;
    e->live--;
    e->st[ST_CONNECTIONS]++;
}

static int cmp_rec_id(const void *a, const void *b) {
    int64_t x = ((const rec_t *)a)->id, y = ((const rec_t *)b)->id;
    return x < y ? -1 : x > y;
}

static void sweep(eng_t *e, int64_t now) {
    int first = e->out_n;
    for (int i = 0; i < e->pool_used; i++) {
        att_t *x = &e->pool[i];
        if (!x->live) continue;
        if (e->grouping_zeek) {
            if (x->z.has && z_expired_by(&x->z, now)) att_finish(e, i, e->now);
        } else if (x->last + e->linger <= now) att_finish(e, i, e->now);
    }
    if (e->out_n - first > 1) qsort(e->out + first, (size_t)(e->out_n - first), sizeof(rec_t), cmp_rec_id);
}

static void segment(eng_t *e, att_t *x, int from_client, int64_t t, item_t *it, int csum_ok) {
    int flags = it->flags;
    x->packets++;
    x->last = t;
    if (csum_ok) {
        int ev;
        if (flags & F_RST) ev = from_client ? 8 : 9;
        else if (flags & F_SYN) ev = (flags & F_ACK) ? (from_client ? 3 : 2) : (from_client ? 0 : 1);
        else if (flags & F_FIN) ev = from_client ? 6 : 7;
        else ev = from_client ? 4 : 5;
        x->state = e->next[x->state * e->nev + ev];
        x->visited |= 1u << x->state;
        int m = flags & (F_SYN | F_ACK | F_RST);
        if (from_client && m == F_SYN) {
            if (x->nsyn < NSYN) x->syn[x->nsyn] = t;
            x->nsyn++;
            x->last_syn = t;
        } else if (!from_client && m == (F_SYN | F_ACK) && x->rtt < 0 && x->last_syn >= 0) x->rtt = t - x->last_syn;
        if ((flags & F_SYN) && !from_client && !x->has_isn_server) {
            x->has_isn_server = 1;
            x->isn_server = it->seq;
        }
        if (flags & F_RST) x->closed = 1;
        if (flags & F_FIN) {
            x->fins |= from_client ? 1 : 2;
            if (x->fins == 3) x->closed = 1;
        }
    }
    zconn_t *z = &x->z;
    if (!z->has) {
        int sp = from_client ? x->cport : x->sport, dp = from_client ? x->sport : x->cport;
        int flip = wants_flip(flags, sp, dp, e->likely);
        z_init(z, t, flip, flip ? sp : dp);
        /* Zeek's originator: the sender of this first packet, unless flipped */
        z->zorig_is_client = flip ? !from_client : from_client;
    }
    z_process(z, from_client == z->zorig_is_client, t, flags, it->seq, it->ack, it->plen, it->win, it->complete,
              csum_ok);
}

static void on_tcp(eng_t *e, item_t *it, int64_t ts, int iface, int csum_ok) {
    int fam = it->family;
    const uint8_t *a = it->src, *b = it->dst;
    int pa = it->sport, pb = it->dport, flags = it->flags;
    uint32_t h = hash_key(fam, a, pa, b, pb);
    int idx;
    if (e->grouping_zeek) {
        idx = cur_find(e, h, fam, a, pa, b, pb);
        if (idx >= 0 && (z_expired_by(&e->pool[idx].z, ts) || z_is_reuse(&e->pool[idx].z, flags, it->seq))) {
            att_finish(e, idx, ts);
            idx = -1;
        }
        if (idx < 0) {
            int flip = wants_flip(flags, pa, pb, e->likely);
            if (flip) idx = att_new(e, fam, b, pb, a, pa, iface, !((flags & F_SYN) && !(flags & F_ACK)), ts, h);
            else idx = att_new(e, fam, a, pa, b, pb, iface, !((flags & F_SYN) && !(flags & F_ACK)), ts, h);
            if (idx < 0) return;
            att_t *x = &e->pool[idx];
            z_init(&x->z, ts, flip, x->sport);
            x->z.zorig_is_client = 1;
        }
    } else {
        idx = cur_find(e, h, fam, a, pa, b, pb);
        if ((flags & (F_SYN | F_ACK)) == F_SYN) {
            int found = isn_find(e, h, fam, a, pa, b, pb, it->seq);
            if (found >= 0) idx = found;
            else if (idx >= 0 && !e->pool[idx].closed && !e->pool[idx].partial &&
                     e->pool[idx].sport == pa && !memcmp(e->pool[idx].server, a, alen(fam)) &&
                     !e->pool[idx].has_isn_server) {
                /* simultaneous open */
            } else {
                idx = att_new(e, fam, a, pa, b, pb, iface, 0, ts, h);
                if (idx < 0) return;
                att_t *x = &e->pool[idx];
                x->has_isn = 1;
                x->isn = it->seq;
                x->hisn = isn_hash(h, it->seq, a, pa, fam);
                isn_insert(e, idx);
            }
        } else if (idx < 0) {
            if ((flags & (F_SYN | F_ACK)) == (F_SYN | F_ACK)) idx = att_new(e, fam, b, pb, a, pa, iface, 1, ts, h);
            else idx = att_new(e, fam, a, pa, b, pb, iface, 1, ts, h);
            if (idx < 0) return;
        }
        if (e->pool[idx].iface != iface) {
            e->st[ST_OTHER_IFACE]++;
            return;
        }
    }
    att_t *x = &e->pool[idx];
    int from_client = x->cport == pa && !memcmp(x->client, a, alen(fam));
    segment(e, x, from_client, ts, it, csum_ok);
}

static void on_icmp(eng_t *e, item_t *it, int64_t ts, int iface) {
    int fam = it->family;
    const uint8_t *a = it->qsrc, *b = it->qdst;
    int pa = it->qsport, pb = it->qdport;
    uint32_t h = hash_key(fam, a, pa, b, pb);
    int idx = -1;
    if (it->qseq >= 0 && !e->grouping_zeek) idx = isn_find(e, h, fam, a, pa, b, pb, (uint32_t)it->qseq);
    if (idx < 0) idx = cur_find(e, h, fam, a, pa, b, pb);
    if (idx < 0 || (!e->grouping_zeek && e->pool[idx].iface != iface)) {
        e->st[ST_ICMP_UNMATCHED]++;
        return;
    }
    att_t *x = &e->pool[idx];
    x->state = e->next[x->state * e->nev + 10];
    x->visited |= 1u << x->state;
    x->last = ts;
    x->packets++;
    if (!x->has_icmp) {
        x->has_icmp = 1;
        x->icmp_family = fam;
        x->icmp_type = it->itype;
        x->icmp_code = it->icode;
        memset(x->icmp_from, 0, 16);
        memcpy(x->icmp_from, it->isrc, alen(fam));
    }
    x->icmp_count++;
}

static void dispatch(eng_t *e, item_t *it, int64_t ts, int iface, int csum_ok) {
    if (it->kind == IT_ICMP) on_icmp(e, it, ts, iface);
    else on_tcp(e, it, ts, iface, csum_ok);
}

static int q_less(const qitem_t *a, const qitem_t *b) { return a->ts < b->ts || (a->ts == b->ts && a->seq < b->seq); }

static void q_pop(eng_t *e, qitem_t *out) {
    qitem_t *h = e->heap;
    *out = h[0];
    e->heap_n--;
    if (!e->heap_n) return;
    qitem_t last = h[e->heap_n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const qitem_t *best = &last;
        if (l < e->heap_n && q_less(&h[l], best)) { m = l; best = &h[l]; }
        if (r < e->heap_n && q_less(&h[r], best)) { m = r; best = &h[r]; }
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = last;
}

static void q_fix(qitem_t *q) {
    int n = q->it.family == 4 ? 4 : 16;
    (void)n;
    if (q->it.kind == IT_ICMP) {
        q->it.isrc = q->isrc;
        q->it.qsrc = q->qsrc;
        q->it.qdst = q->qdst;
    } else {
        q->it.src = q->src;
        q->it.dst = q->dst;
    }
}

static void q_release(eng_t *e) {
    int64_t limit = e->newest - e->window;
    while (e->heap_n && e->heap[0].ts < limit) {
        qitem_t q;
        q_pop(e, &q);
        q_fix(&q);
        dispatch(e, &q.it, q.ts, q.iface, q.csum_ok);
    }
}

static void q_flush(eng_t *e) {
    while (e->heap_n) {
        qitem_t q;
        q_pop(e, &q);
        q_fix(&q);
        dispatch(e, &q.it, q.ts, q.iface, q.csum_ok);
    }
}

static void process(eng_t *e, item_t *it, int64_t ts, int iface, int csum_ok) {
    if (!e->window) {
        dispatch(e, it, ts, iface, csum_ok);
        return;
    }
    if (e->heap_n == e->heap_cap) {
        int cap = e->heap_cap ? e->heap_cap * 2 : 1024;
        qitem_t *h = realloc(e->heap, sizeof(qitem_t) * (size_t)cap);
        if (!h) { dispatch(e, it, ts, iface, csum_ok); return; }
        e->heap = h;
        e->heap_cap = cap;
    }
    qitem_t q;
    q.it = *it;
    q.ts = ts;
    q.seq = e->heap_seq++;
    q.iface = iface;
    q.csum_ok = csum_ok;
    int n = it->family == 4 ? 4 : 16;
    if (it->kind == IT_ICMP) {
        memcpy(q.isrc, it->isrc, (size_t)n);
        memcpy(q.qsrc, it->qsrc, (size_t)n);
        memcpy(q.qdst, it->qdst, (size_t)n);
    } else {
        memcpy(q.src, it->src, (size_t)n);
        memcpy(q.dst, it->dst, (size_t)n);
    }
    /* sift up */
    qitem_t *h = e->heap;
    int i = e->heap_n++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!q_less(&q, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = q;
    if (ts > e->newest) e->newest = ts;
    q_release(e);
}

static void handle_item(eng_t *e, item_t *it, int64_t ts, int iface) {
    switch (it->kind) {
    case IT_TCP:
        e->st[ST_TCP]++;
        process(e, it, ts, iface, 1);
        break;
    case IT_BADSUM:
        e->st[ST_BADSUM]++;
        e->st[ST_TCP]++;
        process(e, it, ts, iface, 0);
        break;
    case IT_BADIP: e->st[ST_BADSUM]++; break;
    case IT_ICMP:
        e->st[ST_ICMP]++;
        process(e, it, ts, iface, 1);
        break;
    case IT_MALFORMED: e->st[ST_MALFORMED]++; break;
    case IT_FRAGMENT: e->st[ST_FRAGMENTS]++; break;
    default: e->st[ST_OTHER]++;
    }
}

static void on_frame(eng_t *e, int lt, const uint8_t *d, long caplen, int64_t ts, int iface) {
    e->st[ST_PACKETS]++;
    e->now = ts;
    if (ts > e->end_ns) e->end_ns = ts;
    decode_frame(e, lt, d, caplen, ts, iface);
    /* idle connections, up to the time through which packets have left the reorder heap */
    if (!e->started) {
        e->started = 1;
        e->next_sweep = ts + SWEEP_NS;
    } else if (ts >= e->next_sweep) {
        sweep(e, ts - e->window);
        e->next_sweep = ts + SWEEP_NS;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* pcap / pcapng framing                                                                              */

static inline uint32_t rd32(const uint8_t *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}
static inline uint16_t rd16(const uint8_t *p, int swap) {
    uint16_t v;
    memcpy(&v, p, 2);
    return swap ? __builtin_bswap16(v) : v;
}
static inline uint64_t rd64(const uint8_t *p, int swap) {
    uint64_t v;
    memcpy(&v, p, 8);
    return swap ? __builtin_bswap64(v) : v;
}

static int host_is_le(void) {
    uint16_t x = 1;
    return *(uint8_t *)&x == 1;
}

static int64_t conv_ts(iface_t *f, uint64_t ts) {
    __int128 v = (__int128)ts * f->mul;
    return (int64_t)(v / f->div) + f->off;
}

/* returns bytes consumed; -1 on a format error (message in e->err) */
long fp_feed(eng_t *e, const uint8_t *buf, long len) {
    long pos = 0;
    if (e->fmt == 0) {
        if (len < 4) return 0;
        if (buf[0] == 0x0A && buf[1] == 0x0D && buf[2] == 0x0D && buf[3] == 0x0A) e->fmt = 2;
        else {
            uint32_t m = (uint32_t)buf[0] | (buf[1] << 8) | (buf[2] << 16) | ((uint32_t)buf[3] << 24);
            int le = host_is_le();
            int file_le;
            if (m == 0xa1b2c3d4u) { file_le = 1; e->pcap_nano = 0; e->pcap_extra = 0; }
            else if (m == 0xd4c3b2a1u) { file_le = 0; e->pcap_nano = 0; e->pcap_extra = 0; }
            else if (m == 0xa1b23c4du) { file_le = 1; e->pcap_nano = 1; e->pcap_extra = 0; }
            else if (m == 0x4d3cb2a1u) { file_le = 0; e->pcap_nano = 1; e->pcap_extra = 0; }
            else if (m == 0xa1b2cd34u) { file_le = 1; e->pcap_nano = 0; e->pcap_extra = 8; }
            else if (m == 0x34cdb2a1u) { file_le = 0; e->pcap_nano = 0; e->pcap_extra = 8; }
            else {
                snprintf(e->err, sizeof e->err, "not a pcap or pcapng file (magic 0x%02x%02x%02x%02x)", buf[0], buf[1],
                         buf[2], buf[3]);
                return -1;
            }
            e->swap = file_le != le;
            if (len < 24) return 0;
            int major = rd16(buf + 4, e->swap);
            if (major != 2) {
                snprintf(e->err, sizeof e->err, "unsupported pcap version %d at byte 0", major);
                return -1;
            }
            e->pcap_linktype = (int)(rd32(buf + 20, e->swap) & 0xFFFF);
            e->fmt = 1;
            e->nifaces = 1;
            e->ifaces[0].linktype = e->pcap_linktype;
            e->ifaces[0].name[0] = 0;
            pos = 24;
        }
    }
    if (e->fmt == 1) {
        long hdr = 16 + e->pcap_extra;
        int64_t fmul = e->pcap_nano ? 1 : 1000;
        for (;;) {
            if (len - pos < hdr) break;
            uint32_t sec = rd32(buf + pos, e->swap), frac = rd32(buf + pos + 4, e->swap);
            uint32_t caplen = rd32(buf + pos + 8, e->swap);
            if (caplen > MAX_RECORD_LEN) {
                snprintf(e->err, sizeof e->err, "packet record %lld claims an absurd length of %u bytes at byte %lld",
                         (long long)e->index, caplen, (long long)(e->offset + pos));
                return -1;
            }
            if (len - pos < hdr + (long)caplen) break;
            int64_t ts = (int64_t)sec * 1000000000LL + (int64_t)frac * fmul;
            on_frame(e, e->pcap_linktype, buf + pos + hdr, caplen, ts, 0);
            e->index++;
            pos += hdr + caplen;
        }
        e->offset += pos;
        return pos;
    }
    /* pcapng */
    for (;;) {
        if (len - pos < 12) break;
        const uint8_t *b = buf + pos;
        if (b[0] == 0x0A && b[1] == 0x0D && b[2] == 0x0D && b[3] == 0x0A) {
            if (b[8] == 0x4D && b[9] == 0x3C && b[10] == 0x2B && b[11] == 0x1A) e->swap = !host_is_le();
            else if (b[8] == 0x1A && b[9] == 0x2B && b[10] == 0x3C && b[11] == 0x4D) e->swap = host_is_le();
            else {
                snprintf(e->err, sizeof e->err, "section header block has a bad byte-order magic 0x%02x%02x%02x%02x at byte %lld",
                         b[8], b[9], b[10], b[11], (long long)(e->offset + pos));
                return -1;
            }
            e->sec_base = e->nifaces;
        }
        uint32_t btype = rd32(b, e->swap), total = rd32(b + 4, e->swap);
        if (total < 12 || total > MAX_RECORD_LEN) {
            snprintf(e->err, sizeof e->err, "block of type 0x%08x claims an absurd length of %u bytes at byte %lld", btype,
                     total, (long long)(e->offset + pos));
            return -1;
        }
        if (len - pos < (long)total) break;
        uint32_t trailer = rd32(b + total - 4, e->swap);
        if (trailer != total) {
            snprintf(e->err, sizeof e->err, "block of type 0x%08x has length %u but trailing length %u at byte %lld", btype,
                     total, trailer, (long long)(e->offset + pos + total));
            return -1;
        }
        long body = 8, end = (long)total - 4;
        if (btype == 6 || btype == 2) {
            if (end - body < 20) {
                snprintf(e->err, sizeof e->err, "%s too short at byte %lld", btype == 6 ? "enhanced packet block" : "packet block",
                         (long long)(e->offset + pos));
                return -1;
            }
            uint32_t ifid, hi, lo, caplen;
            if (btype == 6) {
                ifid = rd32(b + body, e->swap);
                hi = rd32(b + body + 4, e->swap);
                lo = rd32(b + body + 8, e->swap);
                caplen = rd32(b + body + 12, e->swap);
            } else {
                ifid = rd16(b + body, e->swap);
                hi = rd32(b + body + 4, e->swap);
                lo = rd32(b + body + 8, e->swap);
                caplen = rd32(b + body + 12, e->swap);
            }
            if ((long)caplen > end - (body + 20)) {
                snprintf(e->err, sizeof e->err, "packet %lld claims %u captured bytes in a %u-byte block at byte %lld",
                         (long long)e->index, caplen, total, (long long)(e->offset + pos));
                return -1;
            }
            int gi = e->sec_base + (int)ifid;
            if ((int)ifid >= e->nifaces - e->sec_base || gi >= MAXIF) {
                snprintf(e->err, sizeof e->err,
                         "packet %lld refers to interface %u but only %d are defined in this section at byte %lld",
                         (long long)e->index, ifid, e->nifaces - e->sec_base, (long long)(e->offset + pos));
                return -1;
            }
            iface_t *f = &e->ifaces[gi];
            e->last_ts = conv_ts(f, ((uint64_t)hi << 32) | lo);
            on_frame(e, f->linktype, b + body + 20, caplen, e->last_ts, gi);
            e->index++;
        } else if (btype == 3) {
            if (end - body < 4) {
                snprintf(e->err, sizeof e->err, "simple packet block too short at byte %lld", (long long)(e->offset + pos));
                return -1;
            }
            if (e->nifaces - e->sec_base < 1) {
                snprintf(e->err, sizeof e->err, "packet %lld (simple packet block) but no interface is defined at byte %lld",
                         (long long)e->index, (long long)(e->offset + pos));
                return -1;
            }
            uint32_t orig = rd32(b + body, e->swap);
            long caplen = (long)orig < end - body - 4 ? (long)orig : end - body - 4;
            iface_t *f = &e->ifaces[e->sec_base];
            if (f->snaplen && caplen > (long)f->snaplen) caplen = (long)f->snaplen;
            on_frame(e, f->linktype, b + body + 4, caplen, e->last_ts, e->sec_base);
            e->index++;
        } else if (btype == 1) {
            if (end - body < 8) {
                snprintf(e->err, sizeof e->err, "interface description block too short at byte %lld", (long long)(e->offset + pos));
                return -1;
            }
            if (e->nifaces < MAXIF) {
                iface_t *f = &e->ifaces[e->nifaces];
                f->linktype = rd16(b + body, e->swap);
                f->snaplen = rd32(b + body + 4, e->swap);
                f->mul = 1000;
                f->div = 1;
                f->off = 0;
                f->name[0] = 0;
                long p = body + 8;
                while (p + 4 <= end) {
                    int code = rd16(b + p, e->swap), olen = rd16(b + p + 2, e->swap);
                    p += 4;
                    if (code == 0) break;
                    if (p + olen > end) break;
                    if (code == 2) {
                        int n = olen < 63 ? olen : 63;
                        memcpy(f->name, b + p, (size_t)n);
                        f->name[n] = 0;
                    } else if (code == 9 && olen >= 1) {
                        int v = b[p], ex = v & 0x7F;
                        if (v & 0x80) { f->mul = 1000000000LL; f->div = 1LL << (ex > 62 ? 62 : ex); }
                        else if (ex <= 9) {
                            int64_t m = 1;
                            for (int i = 0; i < 9 - ex; i++) m *= 10;
                            f->mul = m;
                            f->div = 1;
                        } else {
                            int64_t dv = 1;
                            for (int i = 0; i < ex - 9 && i < 18; i++) dv *= 10;
                            f->mul = 1;
                            f->div = dv;
                        }
                    } else if (code == 14 && olen >= 8) {
                        f->off = (int64_t)rd64(b + p, e->swap) * 1000000000LL;
                    }
                    p += olen + ((4 - (olen % 4)) % 4);
                }
            }
            e->nifaces++;
        } else if (btype == 5) {
            if (end - body < 12) {
                snprintf(e->err, sizeof e->err, "interface statistics block too short at byte %lld", (long long)(e->offset + pos));
                return -1;
            }
            uint32_t ifid = rd32(b + body, e->swap);
            int gi = e->sec_base + (int)ifid;
            if ((int)ifid >= e->nifaces - e->sec_base || gi >= MAXIF) {
                snprintf(e->err, sizeof e->err, "statistics refer to interface %u but only %d are defined in this section at byte %lld",
                         ifid, e->nifaces - e->sec_base, (long long)(e->offset + pos));
                return -1;
            }
            uint32_t hi = rd32(b + body + 4, e->swap), lo = rd32(b + body + 8, e->swap);
            int64_t t = conv_ts(&e->ifaces[gi], ((uint64_t)hi << 32) | lo);
            if (t > e->isb_max_ts) e->isb_max_ts = t;
        }
        pos += total;
    }
    e->offset += pos;
    return pos;
}

/* ------------------------------------------------------------------------------------------------ */
/* API                                                                                                */

eng_t *fp_new(int grouping_zeek, int checksums, int64_t linger_ns, int64_t window_ns, const uint8_t *next,
              int nstates, int nev, const uint16_t *likely, int nlikely) {
    if (nstates > 64 || nev > 64) return NULL;
    eng_t *e = calloc(1, sizeof(eng_t));
    if (!e) return NULL;
    e->grouping_zeek = grouping_zeek;
    e->checksums = checksums;
    e->linger = linger_ns;
    e->window = window_ns;
    e->nev = nev;
    memcpy(e->next, next, (size_t)(nstates * nev));
    for (int i = 0; i < nlikely; i++) e->likely[likely[i]] = 1;
    e->pool_cap = 1024;
    e->pool = malloc(sizeof(att_t) * (size_t)e->pool_cap);
    e->nb = 1024;
    e->cur_b = malloc(sizeof(int) * e->nb);
    e->isn_b = malloc(sizeof(int) * e->nb);
    if (!e->pool || !e->cur_b || !e->isn_b) {
        free(e->pool); free(e->cur_b); free(e->isn_b); free(e);
        return NULL;
    }
    memset(e->cur_b, 0xFF, sizeof(int) * e->nb);
    memset(e->isn_b, 0xFF, sizeof(int) * e->nb);
    e->free_head = -1;
    return e;
}

void fp_free(eng_t *e) {
    if (!e) return;
    free(e->pool);
    free(e->cur_b);
    free(e->isn_b);
    free(e->out);
    free(e->heap);
    free(e);
}

/* finish every live connection, in id order */
void fp_finish(eng_t *e) {
    q_flush(e);
    int first = e->out_n;
    int64_t end = e->end_ns > e->isb_max_ts ? e->end_ns : e->isb_max_ts;
    for (int i = 0; i < e->pool_used; i++)
        if (e->pool[i].live) att_finish(e, i, end);
    if (e->out_n - first > 1) qsort(e->out + first, (size_t)(e->out_n - first), sizeof(rec_t), cmp_rec_id);
}

int fp_out_count(eng_t *e) { return e->out_n; }
rec_t *fp_out(eng_t *e) { return e->out; }
void fp_out_clear(eng_t *e) { e->out_n = 0; }
const char *fp_error(eng_t *e) { return e->err; }
void fp_stats(eng_t *e, int64_t *out) {
    memcpy(out, e->st, sizeof(e->st));
    out[10] = e->end_ns > e->isb_max_ts ? e->end_ns : e->isb_max_ts;
    out[11] = e->fmt;
}
int fp_nifaces(eng_t *e) { return e->nifaces; }
const char *fp_iface_name(eng_t *e, int i) { return (i >= 0 && i < e->nifaces && i < MAXIF) ? e->ifaces[i].name : ""; }
int fp_rec_size(void) { return (int)sizeof(rec_t); }
int64_t fp_live(eng_t *e) { return e->live; }
'''
