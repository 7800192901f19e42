"""The one decoder of captured frames: every link type and encapsulation is read here, once.

`decode_frame(linktype, data, orig_len)` turns one captured frame into a list of `Packet` records
(usually one): the TCP segment or ICMP/ICMPv6 error it carries, innermost first-class packet of any
tunnel included, or a record saying why there is none (`kind` OTHER, FRAGMENT, MALFORMED, BADSUM,
UNSUPPORTED). `decode(raw)` does the same for a `verifier.pcap.RawPacket` and returns its first TCP
or ICMP-error packet with the capture context set. Live traces, `verifier show`, `verifier replay`,
the fault agent and re-driving all read frames through this module.

Link layers: Ethernet (VLAN/QinQ 802.1Q/ad and the 0x9100/0x9200 tags, MPLS, PPPoE, 802.1ah PBB,
VN-Tag, Cisco FabricPath, 802.3 with LLC/SNAP), Linux cooked v1 and v2, raw IPv4/IPv6 (101, 12, 14,
228, 229), BSD loopback (0, 108), PPP (9, 50, 51, 204), IP over InfiniBand (242), Cisco HDLC (104), FDDI (10),
Token Ring (6), Frame Relay (107), OpenBSD enc (109) and pflog (117), Solaris ipnet (226), IP over
IEEE 1394 (138), Linux NFLOG (239), 802.11 data frames bare (105) or under
radiotap (127), Prism (119), AVS (163) or PPI (192): the link types of `LINKTYPES`. Tunnels are decapsulated as Zeek does: IP-in-IP (4, 41), GRE (with ERSPAN II/III,
transparent Ethernet, PPP, Aruba 802.11 with A-MSDU), GRE over UDP (RFC 8086, port 4754), VXLAN,
Geneve, GTP-U, Teredo (by port or by content) and AYIYA, at most `MAX_DEPTH` deep. IPv4/IPv6
fragments are not reassembled (kind FRAGMENT). TCP options are parsed on SYN segments (MSS, window
scale, SACK permitted, timestamps).

Every length is checked against the captured bytes before it is read: `tests/unit/test_decoder.py`
and the fuzz targets (tests/fuzz) feed it hostile frames, and the compiled and the pure-Python
versions of this very file must agree on every one.

This module is the readable reference and, compiled by Cython when the package is installed
(`decoder.pxd` gives the C types), the fast engine. It is written by hand rather than with Scapy's
dissectors because replay must decode well over a million frames per second; Scapy stays the
user's tool for looking at single packets (`verifier.replay` shows them through Scapy).
"""

from __future__ import annotations

import struct

import cython

from verifier.wire.names import ACK, FIN, RST, SYN, flag_str

__all__ = [
    "BADSUM", "FRAGMENT", "ICMP", "MALFORMED", "OTHER", "TCP", "UNSUPPORTED", "Decoder", "MalformedPacket",
    "Packet", "QuotedPacket", "address_text", "decode", "decode_frame",
]

if not cython.compiled:  # compiled, these are a cpdef enum of decoder.pxd, with the same values
    # Packet kinds
    OTHER = 0  # readable, but neither TCP nor an ICMP error (ARP, UDP, echo, ...)
    TCP = 1
    ICMP = 2  # an ICMP or ICMPv6 error quoting an IP packet
    FRAGMENT = 3  # an IPv4/IPv6 fragment (not reassembled)
    MALFORMED = 4  # claims to be IP/TCP/ICMP but its headers are broken or cut short; see `error`
    BADSUM = 5  # an IPv4 header with a bad checksum (only when checksums are checked)
    UNSUPPORTED = 6  # a link type this decoder does not read
KIND_NAMES = ("other", "tcp", "icmp", "fragment", "malformed", "bad-checksum", "unsupported-link-type")

MAX_DEPTH = 6  # nested encapsulations
#: The link types read (LINKTYPE_* numbers of the pcap/pcapng link-layer header registry): the
#: ones that carry IP and that tshark reads too. Frames of any other are counted (UNSUPPORTED).
LINKTYPES = frozenset((0, 1, 6, 9, 10, 12, 14, 50, 51, 101, 104, 105, 107, 108, 109, 113, 117, 119, 127, 138,
                       163, 192, 204, 226, 228, 229, 239, 242, 276))

_TUNNEL_PORTS = {4789: "vxlan", 6081: "geneve", 2152: "gtp", 3544: "teredo", 5072: "ayiya", 4754: "gre"}

# The same few addresses repeat in every packet: a dict hit is much cheaper than formatting.
_addr_cache: dict = {}


def address_text(b: bytes) -> str:
    """The text form of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address, from a cache: what
    socket.inet_ntop returns (tests/unit/test_decoder.py compares the two)."""
    s = _addr_cache.get(b)
    if s is None:
        n: cython.Py_ssize_t = len(b)
        if n != 4 and n != 16:
            raise ValueError(f"an address is 4 or 16 bytes, not {n}")
        if len(_addr_cache) > 65536:
            _addr_cache.clear()
        if cython.compiled:
            text = cython.declare(cython.char[48])
            a: cython.p_const_uchar = cython.cast(cython.p_const_uchar, PyBytes_AS_STRING(b))  # noqa: F821 - decoder.pxd
            s = PyUnicode_DecodeASCII(text, format_address(a, n, text), cython.NULL)  # noqa: F821
        else:
            text = bytearray(48)
            s = text[:format_address(b, n, text)].decode("ascii")
        _addr_cache[b] = s
    return s


def _decimal(v: cython.int, out, k: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """One byte's value in decimal at out[k]; the index after it."""
    if v >= 100:
        out[k] = 48 + v // 100
        k += 1
        v %= 100
        out[k] = 48 + v // 10
        k += 1
    elif v >= 10:
        out[k] = 48 + v // 10
        k += 1
    out[k] = 48 + v % 10
    return k + 1


def _dotted(a, i: cython.Py_ssize_t, out, k: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """The four bytes a[i:i+4] as a dotted quad at out[k]; the index after it."""
    j: cython.Py_ssize_t
    for j in range(4):
        if j:
            out[k] = 46
            k += 1
        k = _decimal(a[i + j], out, k)
    return k


def format_address(a, n: cython.Py_ssize_t, out) -> cython.Py_ssize_t:
    """Write the text of the packed address a[:n] (n is 4 or 16) at out[0] (room for 46 bytes) and
    return its length: the text inet_ntop(3) gives, byte for byte. IPv6 as glibc writes it: the
    first of the longest runs of two or more zero groups is "::", groups in lowercase hex without
    leading zeros, and ::a.b.c.d or ::ffff:a.b.c.d for an IPv4-compatible or -mapped address.

    Written by hand for speed: glibc's inet_ntop formats with sprintf, which was 5% of a
    `verifier replay --json` (two addresses a line); this is a few comparisons per byte.
    Compiled, `a` and `out` are C pointers; run as Python, a bytes and a bytearray."""
    if n == 4:
        return _dotted(a, 0, out, 0)
    best: cython.int = -1
    best_len: cython.int = 0
    cur: cython.int = -1
    cur_len: cython.int = 0
    i: cython.int
    for i in range(8):
        if a[2 * i] == 0 and a[2 * i + 1] == 0:
            if cur < 0:
                cur = i
                cur_len = 0
            cur_len += 1
            if cur_len > best_len:  # strictly: of equal runs, the first
                best = cur
                best_len = cur_len
        else:
            cur = -1
    if best_len < 2:
        best = -1
    k: cython.Py_ssize_t = 0
    w: cython.uint
    shift: cython.int
    digit: cython.uint
    started: cython.bint
    i = 0
    while i < 8:
        if best >= 0 and best <= i < best + best_len:
            if i == best:
                out[k] = 58
                k += 1
            i += 1
            continue
        if i:
            out[k] = 58
            k += 1
        if i == 6 and best == 0 and (best_len == 6 or (best_len == 5 and a[10] == 255 and a[11] == 255)):
            return _dotted(a, 12, out, k)
        w = (a[2 * i] << 8) | a[2 * i + 1]
        started = False
        shift = 12
        while shift >= 0:
            digit = (w >> shift) & 15
            if digit or started or shift == 0:
                out[k] = (48 + digit) if digit < 10 else (87 + digit)
                k += 1
                started = True
            shift -= 4
        i += 1
    if best >= 0 and best + best_len == 8:
        out[k] = 58
        k += 1
    return k


class MalformedPacket(ValueError):
    """A frame that claims to carry IPv4/IPv6 TCP or ICMP but cannot be decoded."""


_IP_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class QuotedPacket:
    """The offending packet's headers as quoted inside an ICMP error.

    `sport`/`dport` are None when the quote is too short to hold them (or the protocol has no
    ports); `seq` is None unless it is TCP with 8 quoted bytes.
    """

    def __init__(self, family: int, ip_proto: int, src_raw: bytes, dst_raw: bytes, sport, dport, seq) -> None:
        self.family = family
        self.ip_proto = ip_proto
        self.src_raw = src_raw
        self.dst_raw = dst_raw
        self.sport = sport
        self.dport = dport
        self.seq = seq

    @property
    def src(self) -> str:
        return address_text(self.src_raw)

    @property
    def dst(self) -> str:
        return address_text(self.dst_raw)

    @property
    def proto(self) -> str:
        """"tcp", "udp", "icmp", "icmpv6", "sctp" or "ip-<number>"."""
        return _IP_PROTOS.get(self.ip_proto) or f"ip-{self.ip_proto}"

    def __eq__(self, other) -> bool:
        return isinstance(other, QuotedPacket) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.family, self.ip_proto, self.src_raw, self.dst_raw, self.sport, self.dport, self.seq)

    def __repr__(self) -> str:
        return (f"QuotedPacket(family={self.family}, src={self.src!r}, dst={self.dst!r}, proto={self.proto!r}, "
                f"sport={self.sport}, dport={self.dport}, seq={self.seq})")


@cython.final
@cython.no_gc
@cython.freelist(1024)
@cython.cclass
class Packet:
    """One decoded packet of a captured frame: a TCP segment, an ICMP/ICMPv6 error, or why neither.

    Capture context (set from the file): `index` (0-based frame number; Wireshark frame = index + 1),
    `ts_ns`, `iface` (file-wide interface number), `iface_name`, `direction` ("in"/"out"/None).
    For TCP: `src`/`dst` (text; `src_raw`/`dst_raw` packed), ports, `key` (the flow's two endpoints,
    each the packed address followed by the 2-byte port, the lower one first: what connections are
    grouped by; `src_low` says whether the source is the lower),  `seq`, `ack`, `flags`, `window`,
    `payload_len` from the IP length fields (right even when the snaplen cut the payload, see
    `complete`), and on SYN segments `mss`, `wscale`, `sack_ok`, `tsval`/`tsecr` (None if absent).
    For ICMP: `src` is the error's sender, `icmp_type`, `icmp_code`, `quoted` (a QuotedPacket) and
    `mtu` for "fragmentation needed" / "packet too big". `l3_off`/`l4_off` are the offsets of the
    (innermost) IP and TCP/ICMP headers in the frame, `ttl` the IP TTL or hop limit. `tunnel` names the outermost encapsulation
    the packet was found in (None if none). MALFORMED packets say what is wrong in `error`.
    """

    def __init__(self) -> None:
        # C fields (see decoder.pxd); a compiled Packet starts with these zeroed by __new__
        self.index = 0
        self.ts_ns = 0
        self.iface = 0
        self.linktype = 0
        self.kind = 0
        self.family = 0
        self.sport = 0
        self.dport = 0
        self.seq = 0
        self.ack = 0
        self.flags = 0
        self.window = 0
        self.payload_len = 0
        self.l4_off = 0
        self.l3_off = 0
        self.ttl = 0
        self.captured = 0
        self.ip_len = 0  # the IP packet's length as its headers give it (Zeek's IP total length)
        self.checksum = 0
        # object fields: None unless set
        self.iface_name = None
        self.direction = None
        self.key = None
        self.src_low = False
        self.mss = None
        self.wscale = None
        self.sack_ok = None
        self.tsval = None
        self.tsecr = None
        self.icmp_type = None
        self.icmp_code = None
        self.mtu = None
        self.quoted = None
        self.tunnel = None
        self.error = None

    # ---- views

    @property
    def src_ep(self):
        """The source endpoint, packed: address, then the 2-byte port for TCP (one half of `key`)."""
        if self.key is None:
            return None
        n = len(self.key) // 2
        return self.key[:n] if self.src_low else self.key[n:]

    @property
    def dst_ep(self):
        if self.key is None:
            return None
        n = len(self.key) // 2
        return self.key[n:] if self.src_low else self.key[:n]

    @property
    def src_raw(self):
        """The packed source address."""
        ep = self.src_ep
        return None if ep is None else ep[:4 if self.family == 4 else 16]

    @property
    def dst_raw(self):
        """The packed destination address."""
        ep = self.dst_ep
        return None if ep is None else ep[:4 if self.family == 4 else 16]

    @property
    def src(self):
        raw = self.src_raw
        return None if raw is None else address_text(raw)

    @property
    def dst(self):
        raw = self.dst_raw
        return None if raw is None else address_text(raw)

    @property
    def proto(self) -> str:
        """"tcp", "icmp" (ICMPv6 errors too), or the kind's name for the others."""
        return KIND_NAMES[self.kind]

    @property
    def is_tcp(self) -> bool:
        return self.kind == TCP

    @property
    def flag_str(self) -> str:
        return flag_str(self.flags)

    @property
    def options_mss(self):
        return self.mss

    @property
    def complete(self) -> bool:
        """The whole TCP payload was captured."""
        return self.captured >= self.payload_len

    @property
    def checksum_ok(self):
        """True/False when checksums were checked, None otherwise."""
        return None if self.checksum == 0 else self.checksum > 0

    def __repr__(self) -> str:
        if self.kind == TCP:
            return (f"<Packet #{self.index} tcp {self.src}:{self.sport} > {self.dst}:{self.dport} {self.flag_str} "
                    f"seq={self.seq} ack={self.ack} len={self.payload_len}>")
        if self.kind == ICMP:
            return f"<Packet #{self.index} icmp type={self.icmp_type} code={self.icmp_code} from {self.src}>"
        return f"<Packet #{self.index} {KIND_NAMES[self.kind]}{': ' + self.error if self.error else ''}>"


def _new_packet() -> Packet:
    if cython.compiled:
        return Packet.__new__(Packet)
    return Packet()


def _u16(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    return (cython.cast(cython.uint, p[i]) << 8) | p[i + 1]


def _u32le(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    return p[i] | (p[i + 1] << 8) | (p[i + 2] << 16) | (cython.cast(cython.uint, p[i + 3]) << 24)


def _u32(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    return ((cython.cast(cython.uint, p[i]) << 24) | (cython.cast(cython.uint, p[i + 1]) << 16)
            | (cython.cast(cython.uint, p[i + 2]) << 8) | p[i + 3])


class Decoder:
    """Decodes frames into `out`, a list of Packets reused from frame to frame (the hot path).

    `checksums`: verify IPv4 header and TCP checksums (off by default: captures taken on the
    sending host carry offloaded, unfinished checksums)."""

    def __init__(self, checksums: bool = False) -> None:
        self.checksums = checksums
        self.out = []
        self.d = b""
        self.p = b""
        self.wire_len = 0
        self.start = 0
        self.l3 = 0
        self.ttl = 0
        self.tunnel = None
        self.sll_dir = None

    def frame(self, d, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t, orig_len: cython.Py_ssize_t,
              linktype: cython.int) -> cython.int:
        """Decode the frame d[off:off + caplen] (orig_len bytes on the wire) into `out`; the number of
        packets. Always at least one (kind OTHER when the frame holds nothing of interest)."""
        if cython.compiled:  # emptied, its item array kept for the next frame
            verifier_list_truncate(self.out)  # noqa: F821 - decoder.pxd
        else:
            del self.out[:]
        if caplen < 0 or off < 0 or off + caplen > len(d):
            raise ValueError("frame outside its buffer")
        self.d = d  # bytes or bytearray; kept alive while `p` points into it
        self.p = d
        self.tunnel = None
        self.wire_len = orig_len if orig_len > caplen else caplen
        self._link(linktype, off, off + caplen)
        if not self.out:
            self._simple(OTHER, None)
        return len(self.out)

    # ---- results

    def _simple(self, kind: cython.int, error) -> None:
        pk = _new_packet()
        pk.kind = kind
        pk.error = error
        pk.tunnel = self.tunnel
        self.out.append(pk)

    def _malformed(self, what: str, pos: cython.Py_ssize_t) -> None:
        self._simple(MALFORMED, f"{what} at frame offset {pos - self.start}")

    # ---- link layers

    def _link(self, lt: cython.int, off: cython.Py_ssize_t, n: cython.Py_ssize_t) -> None:
        self.start = off
        self.sll_dir = None
        self._l2(lt, off, n, True)

    def _l2(self, lt: cython.int, off: cython.Py_ssize_t, n: cython.Py_ssize_t, outer: cython.bint) -> None:
        """The link-layer header of type `lt` at `off` (`outer`: not inside a PPI header)."""
        d: cython.p_const_uchar = self.p
        hl: cython.Py_ssize_t
        if lt == 1:
            if n - off >= 14:
                self._ethertype(_u16(d, off + 12), off + 14, n, 0)
        elif lt == 113:  # Linux cooked v1: packet type, ARPHRD, address length, address(8), protocol
            if n - off >= 16:
                self.sll_dir = _sll_direction(_u16(d, off))
                self._ethertype(_u16(d, off + 14), off + 16, n, 0)
        elif lt == 276:  # Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, ...
            if n - off >= 20:
                self.sll_dir = _sll_direction(d[off + 10])
                self._ethertype(_u16(d, off), off + 20, n, 0)
        elif lt == 101 or lt == 12 or lt == 14:
            self._ip_any(off, n, 0)
        elif lt == 228:
            self._ip4(off, n, 0)
        elif lt == 229:
            self._ip6(off, n, 0)
        elif lt == 0 or lt == 108:  # BSD loopback: the address family, host or network order
            if n - off >= 4:
                le: cython.uint = d[off] | (d[off + 1] << 8) | (d[off + 2] << 16) | (cython.cast(cython.uint, d[off + 3]) << 24)
                be: cython.uint = _u32(d, off)
                if le == 2 or be == 2:
                    self._ip4(off + 4, n, 0)
                elif _is_af_inet6(le) or _is_af_inet6(be):
                    self._ip6(off + 4, n, 0)
        elif lt == 9 or lt == 50 or lt == 204:
            # PPP (9), PPP in HDLC framing (50, which also holds Cisco HDLC frames), PPP with a
            # direction byte first (204)
            if lt == 204:
                off += 1
            if lt == 50 and n - off >= 4 and (d[off] == 0x0F or d[off] == 0x8F):
                self._ethertype(_u16(d, off + 2), off + 4, n, 0)
            else:
                self._ppp(off, n, 0)
        elif lt == 104:  # Cisco HDLC: address, control, an ethertype
            if n - off >= 4:
                self._ethertype(_u16(d, off + 2), off + 4, n, 0)
        elif lt == 242:  # IP over InfiniBand (RFC 4391): a 40-byte address header, the ethertype, 2 reserved
            if n - off >= 44:
                self._ethertype(_u16(d, off + 40), off + 44, n, 0)
        elif lt == 51:  # PPPoE (session header, then PPP's protocol)
            if n - off >= 6:
                self._ppp(off + 6, n, 0)
        elif lt == 10:  # FDDI: frame control and two MAC addresses, then LLC/SNAP
            if n - off >= 13:
                self._snap(off + 13, n, 0)
        elif lt == 6:  # Token Ring: access and frame control, two MACs, a source route if flagged
            if n - off >= 14:
                hl = 14
                if d[off + 8] & 0x80 and n - off >= 15:
                    hl += d[off + 14] & 0x1F
                self._snap(off + hl, n, 0)
        elif lt == 107:  # Frame Relay: Q.922 address, then RFC 2427 (control 3, NLPID)
            if n - off >= 4 and d[off + 2] == 0x03:
                q: cython.Py_ssize_t = off + 3
                if d[q] == 0x00 and n - q >= 2:  # padding
                    q += 1
                if d[q] == 0xCC:
                    self._ip4(q + 1, n, 0)
                elif d[q] == 0x8E:
                    self._ip6(q + 1, n, 0)
                elif d[q] == 0x80 and n - q >= 6:  # SNAP: OUI, then an ethertype
                    self._ethertype(_u16(d, q + 4), q + 6, n, 0)
        elif lt == 109:  # OpenBSD enc: address family, SPI, flags (12 bytes)
            if n - off >= 12:
                self._ip_any(off + 12, n, 0)
        elif lt == 117:  # OpenBSD/FreeBSD pflog: its header's length (padded to 4 bytes) first
            if n - off >= 4:
                self._ip_any(off + ((d[off] + 3) & ~3), n, 0)
        elif lt == 226:  # Solaris ipnet: a 24-byte header
            if n - off >= 24:
                self._ip_any(off + 24, n, 0)
        elif lt == 138:  # Apple IP over IEEE 1394: two 8-byte addresses and an ethertype
            if n - off >= 18:
                self._ethertype(_u16(d, off + 16), off + 18, n, 0)
        elif lt == 239:  # Linux NFLOG: family, version, resource id, then TLVs; the packet is type 9
            if n - off >= 4:
                q = off + 4
                while n - q >= 4:
                    tlv_len: cython.Py_ssize_t = d[q] | (d[q + 1] << 8)
                    tlv_type: cython.uint = (d[q + 2] | (d[q + 3] << 8)) & 0x7FFF
                    if tlv_len < 4:
                        break
                    if tlv_type == 9:
                        end: cython.Py_ssize_t = q + tlv_len
                        self._ip_any(q + 4, end if end < n else n, 0)
                        break
                    q += (tlv_len + 3) & ~3
        elif lt == 105:  # IEEE 802.11
            self._wlan(off, n, 0)
        elif lt == 127:  # radiotap (little-endian length of its header), then 802.11
            if n - off >= 4:
                self._wlan(off + (d[off + 2] | (d[off + 3] << 8)), n, 0)
        elif lt == 119:  # Prism monitor header (its length at offset 4, host order: little-endian)
            if n - off >= 8:
                self._wlan(off + _u32le(d, off + 4), n, 0)
        elif lt == 163:  # AVS monitor header (its length at offset 4, big-endian)
            if n - off >= 8:
                self._wlan(off + _u32(d, off + 4), n, 0)
        elif lt == 192 and outer:  # PPI: its length and the link type of what follows (little-endian)
            if n - off >= 8:
                inner: cython.int = cython.cast(cython.int, _u32le(d, off + 4) & 0x7FFFFFFF)
                hl = d[off + 2] | (d[off + 3] << 8)
                if inner in LINKTYPES and inner != 192:
                    self._l2(inner, off + hl, n, False)
                else:
                    self._simple(UNSUPPORTED, f"link type {inner} inside PPI")
        else:
            self._simple(UNSUPPORTED, f"link type {lt}")

    def _ppp(self, off: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        """A PPP frame: the optional HDLC address and control bytes (FF 03), a one- or two-byte
        protocol, then what it carries (`_ppp_protocol`)."""
        d: cython.p_const_uchar = self.p
        if n - off >= 2 and d[off] == 0xFF and d[off + 1] == 0x03:
            off += 2
        if n - off < 1:
            return
        p: cython.uint
        if d[off] & 1:  # a one-byte protocol field
            p = d[off]
            off += 1
        else:
            if n - off < 2:
                return
            p = _u16(d, off)
            off += 2
        self._ppp_protocol(p, off, n, depth)

    def _ppp_protocol(self, p: cython.uint, off: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        """What a PPP protocol number (RFC 1661; PPP and PPPoE sessions) carries: IPv4 (0x21),
        IPv6 (0x57), or MPLS (0x281 unicast, 0x283 multicast; RFC 3032 section 4.3), read as
        the ethertype 0x8847 is."""
        if p == 0x21:
            self._ip4(off, n, depth)
        elif p == 0x57:
            self._ip6(off, n, depth)
        elif p == 0x281 or p == 0x283:
            self._ethertype(0x8847, off, n, depth)

    def _ethertype(self, et: cython.uint, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        while True:
            if et == 0x8100 or et == 0x88A8 or et == 0x9100 or et == 0x9200:  # VLAN tags
                if n - pos < 4:
                    return
                et = _u16(d, pos + 2)
                pos += 4
            elif et == 0x8903:  # Cisco FabricPath: FTag/TTL, then the original frame's MACs
                if n - pos < 16:
                    return
                et = _u16(d, pos + 14)
                pos += 16
            elif et == 0x88E7:  # 802.1ah PBB: I-TAG, then the customer MACs
                if n - pos < 18:
                    return
                et = _u16(d, pos + 16)
                pos += 18
            elif et == 0x8926:  # VN-Tag
                if n - pos < 6:
                    return
                et = _u16(d, pos + 4)
                pos += 6
            else:
                break
        if et == 0x0800:
            self._ip4(pos, n, depth)
        elif et == 0x86DD:
            self._ip6(pos, n, depth)
        elif et <= 1500 or et == 0x0004:  # an 802.3 length (or Linux cooked's 802.2): LLC/SNAP
            self._snap(pos, n, depth)
        elif et == 0x8847 or et == 0x8848:  # MPLS: labels to the bottom of the stack, then IP by version
            while True:
                if n - pos < 4:
                    return
                bos = d[pos + 2] & 1
                pos += 4
                if bos:
                    break
            self._ip_any(pos, n, depth)
        elif et == 0x8864:  # PPPoE session
            if n - pos < 8:
                return
            self._ppp_protocol(_u16(d, pos + 6), pos + 8, n, depth)

    def _ether(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        """An Ethernet frame starting at `pos` (inside a tunnel)."""
        if n - pos < 14:
            return
        self._ethertype(_u16(self.p, pos + 12), pos + 14, n, depth)

    # ---- IP

    def _ip_any(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        if n - pos < 1:
            return
        d: cython.p_const_uchar = self.p
        v = d[pos] >> 4
        if v == 4:
            self._ip4(pos, n, depth)
        elif v == 6:
            self._ip6(pos, n, depth)

    def _ip4(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        if n - pos < 20:
            self._malformed(f"truncated IPv4 header ({n - pos} bytes)", pos)
            return
        vihl: cython.int = d[pos]
        ihl: cython.Py_ssize_t = (vihl & 15) * 4
        if vihl >> 4 != 4:
            self._malformed(f"IPv4 frame carries IP version {vihl >> 4}", pos)
            return
        if ihl < 20 or n - pos < ihl:
            self._malformed(f"IPv4 header length {ihl}", pos)
            return
        total: cython.Py_ssize_t = _u16(d, pos + 2)
        if total == 0:  # TSO/GSO super-packets are captured with total length 0
            total = self.wire_len - (pos - self.start)
        if total < ihl:
            self._malformed(f"IPv4 total length {total} < header length {ihl}", pos)
            return
        if self.checksums and _checksum(bytes(d[pos:pos + ihl])) != 0:
            self._simple(BADSUM, None)
            return
        if _u16(d, pos + 6) & 0x3FFF:  # more fragments, or an offset: not reassembled
            self._simple(FRAGMENT, None)
            return
        end: cython.Py_ssize_t = pos + total
        cap: cython.Py_ssize_t = end if end < n else n
        self.l3 = pos
        self.ttl = d[pos + 8]
        self._l4(d[pos + 9], 4, pos + 12, pos + 16, pos + ihl, cap, end, depth)

    def _ip6(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        if n - pos < 40:
            self._malformed(f"truncated IPv6 header ({n - pos} bytes)", pos)
            return
        if d[pos] >> 4 != 6:
            self._malformed(f"IPv6 frame carries IP version {d[pos] >> 4}", pos)
            return
        plen: cython.Py_ssize_t = _u16(d, pos + 4)
        if plen == 0:  # jumbogram / BIG TCP: the length is the frame's
            plen = self.wire_len - (pos - self.start) - 40
        nh = d[pos + 6]
        l4: cython.Py_ssize_t = pos + 40
        limit: cython.Py_ssize_t = pos + 40 + plen
        while True:
            if nh == 0 or nh == 43 or nh == 60:  # hop-by-hop, routing, destination options
                if n - l4 < 2:
                    self._malformed("truncated IPv6 extension header", l4)
                    return
                nh, l4 = d[l4], l4 + (d[l4 + 1] + 1) * 8
            elif nh == 44:  # fragment
                if n - l4 < 8:
                    self._malformed("truncated IPv6 fragment header", l4)
                    return
                if _u16(d, l4 + 2) & 0xFFF9:  # an offset, or more fragments: not reassembled
                    self._simple(FRAGMENT, None)
                    return
                # an atomic fragment (offset 0, M=0) holds the whole packet (RFC 6946, RFC 8200 4.5)
                nh, l4 = d[l4], l4 + 8
            elif nh == 51:  # authentication header
                if n - l4 < 2:
                    self._malformed("truncated IPv6 authentication header", l4)
                    return
                nh, l4 = d[l4], l4 + (d[l4 + 1] + 2) * 4
            else:
                break
        if l4 > limit:
            self._malformed(f"IPv6 extension headers exceed payload length {plen}", pos)
            return
        cap: cython.Py_ssize_t = limit if limit < n else n
        self.l3 = pos
        self.ttl = d[pos + 7]
        self._l4(nh, 6, pos + 8, pos + 24, l4, cap, limit, depth)

    # ---- transport

    def _l4(self, proto: cython.int, fam: cython.int, src: cython.Py_ssize_t, dst: cython.Py_ssize_t,
            pos: cython.Py_ssize_t, end: cython.Py_ssize_t, wire_end: cython.Py_ssize_t, depth: cython.int) -> None:
        """A transport header at d[pos:end] (the captured bytes); the IP payload really ends at
        wire_end. `src`/`dst` are the offsets of the IP addresses."""
        d: cython.p_const_uchar = self.p
        alen: cython.Py_ssize_t = 4 if fam == 4 else 16
        if proto == 6:
            if end - pos < 20:
                if end == wire_end:  # all of the IP payload was captured: it is too short, not cut
                    self._malformed(f"TCP header (20 bytes) longer than the IP payload ({wire_end - pos})", pos)
                else:
                    self._malformed(f"truncated TCP header ({end - pos if end > pos else 0} bytes captured)", pos)
                return
            doff: cython.Py_ssize_t = (d[pos + 12] >> 4) * 4
            seg_len: cython.Py_ssize_t = wire_end - pos
            if doff < 20:
                self._malformed(f"TCP data offset {doff} < 20", pos)
                return
            if doff > seg_len:
                self._malformed(f"TCP header ({doff} bytes) longer than the IP payload ({seg_len})", pos)
                return
            if end - pos < doff:
                self._malformed(f"truncated TCP options ({end - pos} of {doff} bytes captured)", pos)
                return
            pk = _new_packet()
            pk.kind = TCP
            pk.family = fam
            pk.src_low = _flow_key(pk, d, src, dst, alen, pos)
            pk.sport = _u16(d, pos)
            pk.dport = _u16(d, pos + 2)
            pk.seq = _u32(d, pos + 4)
            pk.ack = _u32(d, pos + 8)
            flags: cython.int = _u16(d, pos + 12) & 0x1FF
            pk.flags = flags
            pk.window = _u16(d, pos + 14)
            pk.payload_len = seg_len - doff
            pk.l4_off = pos - self.start
            pk.l3_off = self.l3 - self.start
            pk.ttl = self.ttl
            pk.captured = end - pos - doff
            pk.ip_len = wire_end - self.l3
            pk.tunnel = self.tunnel
            if self.sll_dir is not None:
                pk.direction = self.sll_dir
            if flags & SYN and doff > 20:
                _syn_options(pk, d, pos + 20, pos + doff)
            if self.checksums and end >= wire_end:
                pseudo = bytes(d[src:src + alen]) + bytes(d[dst:dst + alen]) + (
                    struct.pack("!HH", 6, seg_len) if fam == 4 else struct.pack("!IHH", seg_len, 0, 6))
                pk.checksum = -1 if _checksum(pseudo + bytes(d[pos:wire_end])) != 0 else 1
            self.out.append(pk)
            return
        if depth >= MAX_DEPTH:
            self._simple(OTHER, None)
            return
        if proto == 1 or proto == 58:
            self._icmp(fam, src, alen, pos, end)
            return
        if proto == 4:
            self._enter("ip-in-ip")
            self._ip4(pos, end, depth + 1)
        elif proto == 41:
            self._enter("ip-in-ip")
            self._ip6(pos, end, depth + 1)
        elif proto == 47:
            self._enter("gre")
            self._gre(pos, end, depth + 1)
        elif proto == 17 and end - pos >= 8:
            sport = _u16(d, pos)
            dport = _u16(d, pos + 2)
            kind = _TUNNEL_PORTS.get(dport) or _TUNNEL_PORTS.get(sport)
            q: cython.Py_ssize_t = pos + 8
            if kind is None:
                # Teredo relays use any port; Zeek's DPD finds them by content: IPv6 inside UDP, to
                # or from a Teredo address (2001:0::/32).
                if (end - q >= 40 and d[q] >> 4 == 6 and _u16(d, q + 4) + 40 <= end - q
                        and (bytes(d[q + 8:q + 12]) == b"\x20\x01\x00\x00" or bytes(d[q + 24:q + 28]) == b"\x20\x01\x00\x00")):
                    kind = "teredo"
                else:
                    self._simple(OTHER, None)
                    return
            self._enter(kind)
            self._udp_tunnel(kind, q, end, depth + 1)
        else:
            self._simple(OTHER, None)

    def _enter(self, name: str) -> None:
        if self.tunnel is None:
            self.tunnel = name

    def _icmp(self, fam: cython.int, src: cython.Py_ssize_t, alen: cython.Py_ssize_t, pos: cython.Py_ssize_t,
              end: cython.Py_ssize_t) -> None:
        d: cython.p_const_uchar = self.p
        if end - pos < 8:
            self._malformed(f"truncated ICMP header ({end - pos if end > pos else 0} bytes captured)", pos)
            return
        t = d[pos]
        c = d[pos + 1]
        mtu = None
        if fam == 4:
            if t != 3 and t != 11 and t != 12:
                self._simple(OTHER, None)
                return
            if t == 3 and c == 4:
                mtu = _u16(d, pos + 6)
        else:
            if t < 1 or t > 4:
                self._simple(OTHER, None)
                return
            if t == 2:
                mtu = _u32(d, pos + 4)
        q = self._quoted(pos + 8, end)
        if q is None:
            return
        pk = _new_packet()
        pk.kind = ICMP
        pk.family = fam
        pk.key = bytes(d[src:src + 2 * alen])  # the error's own addresses (no ports), source first
        pk.src_low = True
        pk.icmp_type = t
        pk.icmp_code = c
        pk.mtu = mtu
        pk.quoted = q
        pk.l4_off = pos - self.start
        pk.l3_off = self.l3 - self.start
        pk.ttl = self.ttl
        pk.tunnel = self.tunnel
        if self.sll_dir is not None:
            pk.direction = self.sll_dir
        self.out.append(pk)

    def _quoted(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t):
        """The IP packet quoted by an ICMP error at `pos` (None, with a MALFORMED record, if broken)."""
        d: cython.p_const_uchar = self.p
        if pos >= n:
            self._malformed("ICMP error quotes no packet", pos)
            return None
        v = d[pos] >> 4
        first: cython.bint
        l4: cython.Py_ssize_t
        if v == 4:
            if n - pos < 20:
                self._malformed("ICMP error quotes a truncated IPv4 header", pos)
                return None
            ihl: cython.Py_ssize_t = (d[pos] & 15) * 4
            if ihl < 20:
                self._malformed(f"ICMP error quotes an IPv4 header with IHL {ihl // 4}", pos)
                return None
            proto = d[pos + 9]
            fam = 4
            src = bytes(d[pos + 12:pos + 16])
            dst = bytes(d[pos + 16:pos + 20])
            l4 = pos + ihl
            first = (_u16(d, pos + 6) & 0x1FFF) == 0
        elif v == 6:
            if n - pos < 40:
                self._malformed("ICMPv6 error quotes a truncated IPv6 header", pos)
                return None
            fam = 6
            src = bytes(d[pos + 8:pos + 24])
            dst = bytes(d[pos + 24:pos + 40])
            proto = d[pos + 6]
            l4 = pos + 40
            first = True
            while True:
                if proto == 0 or proto == 43 or proto == 60:
                    if n - l4 < 2:
                        first = False
                        break
                    proto, l4 = d[l4], l4 + (d[l4 + 1] + 1) * 8
                elif proto == 44:
                    if n - l4 < 8 or _u16(d, l4 + 2) & 0xFFF8:
                        first = False
                        break
                    proto, l4 = d[l4], l4 + 8
                elif proto == 51:
                    if n - l4 < 2:
                        first = False
                        break
                    proto, l4 = d[l4], l4 + (d[l4 + 1] + 2) * 4
                else:
                    break
        else:
            self._malformed(f"ICMP error quotes a packet with IP version {v}", pos)
            return None
        sport = dport = seq = None
        if first and (proto == 6 or proto == 17 or proto == 33 or proto == 132) and n - l4 >= 4:
            sport = _u16(d, l4)
            dport = _u16(d, l4 + 2)
            if proto == 6 and n - l4 >= 8:
                seq = _u32(d, l4 + 4)
        return QuotedPacket(fam, proto, src, dst, sport, dport, seq)

    # ---- tunnels

    def _gre(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        if n - pos < 4:
            self._simple(OTHER, None)
            return
        fv = _u16(d, pos)
        ver = fv & 7
        proto = _u16(d, pos + 2)
        off: cython.Py_ssize_t = pos + 4
        if ver == 0:
            if fv & 0xC000:  # checksum (and routing) present
                off += 4
            if fv & 0x2000:  # key
                off += 4
            if fv & 0x1000:  # sequence number
                off += 4
        elif ver == 1:  # enhanced GRE (PPTP): key = payload length + call id
            off += 4
            if fv & 0x1000:
                off += 4
            if fv & 0x0080:  # acknowledgement number
                off += 4
        else:
            self._simple(OTHER, None)
            return
        if off > n:
            self._simple(OTHER, None)
            return
        if proto == 0x0800:
            self._ip4(off, n, depth)
        elif proto == 0x86DD:
            self._ip6(off, n, depth)
        elif proto == 0x6558:  # transparent Ethernet bridging
            self._ether(off, n, depth)
        elif proto == 0x88BE:  # ERSPAN type II (GRE sequence number present): an 8-byte header,
            # then the frame; type I (no sequence number) carries the frame directly, as Zeek and
            # Wireshark read it
            q: cython.Py_ssize_t = off + 8 if fv & 0x1000 else off
            if q > n:
                self._simple(OTHER, None)
                return
            self._ether(q, n, depth)
        elif proto == 0x22EB:  # ERSPAN type III (+ the optional platform subheader)
            if n - off < 12:
                return
            extra = 8 if d[off + 11] & 1 else 0
            if off + 12 + extra > n:
                self._simple(OTHER, None)
                return
            self._ether(off + 12 + extra, n, depth)
        elif proto == 0x880B:  # PPP
            self._ppp(off, n, depth)
        elif 0x8200 <= proto <= 0x8FFF:  # Aruba: an 802.11 frame
            self._wlan(off, n, depth)
        else:
            self._simple(OTHER, None)

    def _wlan(self, pos: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        """An 802.11 data frame (as Aruba tunnels them): LLC/SNAP, or A-MSDU subframes."""
        d: cython.p_const_uchar = self.p
        if n - pos < 24:
            return
        fc = d[pos]
        fl = d[pos + 1]
        if (fc >> 2) & 3 != 2 or fl & 0x40:  # not data, or protected
            return
        subtype = fc >> 4
        if subtype & 0x4:  # null data: no payload
            return
        hdr: cython.Py_ssize_t = 24 + (6 if fl & 3 == 3 else 0)
        amsdu: cython.bint = False
        if subtype & 0x8:  # QoS data
            if n - pos < hdr + 2:
                return
            amsdu = (d[pos + hdr] & 0x80) != 0
            hdr += 2
            if fl & 0x80:  # +HTC
                hdr += 4
        p: cython.Py_ssize_t = pos + hdr
        if not amsdu:
            self._snap(p, n, depth)
            return
        while n - p >= 14:
            length: cython.Py_ssize_t = _u16(d, p + 12)
            sub_end: cython.Py_ssize_t = p + 14 + length
            self._snap(p + 14, sub_end if sub_end < n else n, depth)
            p = sub_end
            p += (4 - (p - (pos + hdr)) % 4) % 4

    def _snap(self, p: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        if n - p >= 8 and d[p] == 0xAA and d[p + 1] == 0xAA and d[p + 2] == 0x03:
            self._ethertype(_u16(d, p + 6), p + 8, n, depth)

    def _udp_tunnel(self, kind: str, p: cython.Py_ssize_t, n: cython.Py_ssize_t, depth: cython.int) -> None:
        d: cython.p_const_uchar = self.p
        q: cython.Py_ssize_t
        if kind == "vxlan":
            if n - p >= 8 and d[p] & 0x08:
                self._ether(p + 8, n, depth)
        elif kind == "geneve":
            if n - p >= 8 and d[p] >> 6 == 0:
                optlen: cython.Py_ssize_t = (d[p] & 0x3F) * 4
                proto = _u16(d, p + 2)
                q = p + 8 + optlen
                if q > n:  # options longer than the frame: not a Geneve packet we can read
                    self._simple(OTHER, None)
                    return
                if proto == 0x6558:
                    self._ether(q, n, depth)
                else:
                    self._ethertype(proto, q, n, depth)
        elif kind == "gre":  # GRE-in-UDP, RFC 8086
            self._gre(p, n, depth)
        elif kind == "gtp":
            if n - p < 8:
                return
            fl = d[p]
            if fl >> 5 != 1 or not fl & 0x10 or d[p + 1] != 0xFF:  # GTPv1, T-PDU
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
                    ln: cython.Py_ssize_t = d[q] * 4
                    if n - q < ln:
                        return
                    next_ext = d[q + ln - 1]
                    q += ln
            self._ip_any(q, n, depth)
        elif kind == "teredo":
            q = p
            if n - q >= 4 and d[q] == 0 and d[q + 1] == 1:  # authentication indicator
                q += 4 + d[q + 2] + d[q + 3] + 9
            if n - q >= 2 and d[q] == 0 and d[q + 1] == 0:  # origin indication
                q += 8
            if n - q >= 40 and d[q] >> 4 == 6 and _u16(d, q + 4) + 40 <= n - q:
                self._ip6(q, n, depth)
        elif kind == "ayiya":
            if n - p < 8:
                return
            idlen: cython.Py_ssize_t = 1 << (d[p] >> 4)
            siglen: cython.Py_ssize_t = (d[p + 1] >> 4) * 4
            if d[p + 2] & 0x0F != 1:  # opcode "forward"
                return
            q = p + 8 + idlen + siglen
            if q > n:  # identity and signature longer than the frame
                self._simple(OTHER, None)
                return
            if d[p + 3] == 4:
                self._ip4(q, n, depth)
            elif d[p + 3] == 41:
                self._ip6(q, n, depth)


_last_key = b""  # the key of the latest flow_key (compiled)


def _flow_key(pk: Packet, d: cython.p_const_uchar, src: cython.Py_ssize_t, dst: cython.Py_ssize_t,
              alen: cython.Py_ssize_t, ports: cython.Py_ssize_t) -> cython.bint:
    """Set `pk.key` to the two endpoints (address + port each), the lower first, as one bytes
    object; True when the source is the lower. Compiled, it is built with one allocation (or is the
    previous packet's, when equal); uncompiled, by slicing: the same bytes either way."""
    global _last_key
    c: cython.int = 0
    i: cython.Py_ssize_t
    for i in range(alen):
        if d[src + i] != d[dst + i]:
            c = -1 if d[src + i] < d[dst + i] else 1
            break
    if c == 0:
        c = (-1 if _u16(d, ports) < _u16(d, ports + 2) else 1) if _u16(d, ports) != _u16(d, ports + 2) else 0
    low: cython.bint = c <= 0
    lo: cython.Py_ssize_t = src if low else dst
    hi: cython.Py_ssize_t = dst if low else src
    lop: cython.Py_ssize_t = ports if low else ports + 2
    hip: cython.Py_ssize_t = ports + 2 if low else ports
    if cython.compiled:
        # Consecutive packets are mostly of one flow: then the previous key object is reused (no
        # allocation, and its hash is already known to the grouper's table).
        last: bytes = _last_key
        if PyBytes_GET_SIZE(last) == 2 * alen + 4:
            p: cython.p_const_char = PyBytes_AS_STRING(last)
            if (memcmp(p, d + lo, alen) == 0 and memcmp(p + alen, d + lop, 2) == 0
                    and memcmp(p + alen + 2, d + hi, alen) == 0 and memcmp(p + 2 * alen + 2, d + hip, 2) == 0):
                pk.key = last
                return low
        b = PyBytes_FromStringAndSize(cython.NULL, 2 * alen + 4)
        out: cython.p_char = PyBytes_AS_STRING(b)
        memcpy(out, d + lo, alen)
        memcpy(out + alen, d + lop, 2)
        memcpy(out + alen + 2, d + hi, alen)
        memcpy(out + 2 * alen + 2, d + hip, 2)
        pk.key = b
        _last_key = b
    else:
        pk.key = bytes(d[lo:lo + alen] + d[lop:lop + 2] + d[hi:hi + alen] + d[hip:hip + 2])
    return low


def _checksum(data: bytes) -> int:
    from verifier.wire.encode import internet_checksum  # the one Internet checksum (packet building's home)

    return internet_checksum(data)


def _is_af_inet6(v: cython.uint) -> cython.bint:
    return v == 10 or v == 24 or v == 28 or v == 30  # Linux, Net/OpenBSD, FreeBSD, Darwin


_SLL_DIRECTIONS = ("in", "in", "in", "in", "out")  # Linux packet types: host, broadcast, multicast, otherhost, outgoing


def _sll_direction(packet_type: cython.uint):
    if packet_type < 5:
        return _SLL_DIRECTIONS[packet_type]
    return None


def _syn_options(pk: Packet, d: cython.p_const_uchar, pos: cython.Py_ssize_t, end: cython.Py_ssize_t) -> cython.void:
    """MSS, window scale, SACK permitted and timestamps from the options of a SYN in d[pos:end]."""
    while pos < end:
        kind = d[pos]
        if kind == 0:
            return
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end:
            return
        length: cython.Py_ssize_t = d[pos + 1]
        if length < 2 or pos + length > end:
            return
        if kind == 2 and length == 4:
            pk.mss = _u16(d, pos + 2)
        elif kind == 3 and length == 3:
            pk.wscale = d[pos + 2]
        elif kind == 4 and length == 2:
            pk.sack_ok = True
        elif kind == 8 and length == 10:
            pk.tsval = _u32(d, pos + 2)
            pk.tsecr = _u32(d, pos + 6)
        pos += length


def decode_frame(linktype: int, data: bytes, orig_len: int | None = None, *, checksums: bool = False) -> list:
    """Decode one captured frame into its Packets (at least one; see the kinds above)."""
    dec = Decoder(checksums)
    data = bytes(data)
    dec.frame(data, 0, len(data), len(data) if orig_len is None else orig_len, linktype)
    return list(dec.out)


_DEFAULT = Decoder()


def decode(raw) -> "Packet | None":
    """The first TCP segment or ICMP error of a `RawPacket`, with its capture context; None if the
    frame holds neither. Raises MalformedPacket when the frame claims IP/TCP/ICMP but is broken."""
    dec = _DEFAULT
    dec.frame(raw.data, 0, len(raw.data), raw.orig_len, raw.linktype)
    bad = None
    for pk in dec.out:
        if pk.kind == TCP or pk.kind == ICMP:
            pk.index = raw.index
            pk.ts_ns = raw.ts_ns
            pk.iface = raw.iface
            pk.iface_name = raw.iface_name
            pk.linktype = raw.linktype
            if raw.direction is not None:
                pk.direction = raw.direction
            return pk
        if pk.kind == MALFORMED and bad is None:
            bad = pk.error
    if bad is not None:
        raise MalformedPacket(bad)
    return None
