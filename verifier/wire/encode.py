"""Building packets over bytes: the Internet checksum, pseudo-headers, and Ethernet, IPv4, IPv6, TCP
and ICMP/ICMPv6-error builders. The one place this project writes a header by hand.

    seg = tcp("192.0.2.2", "203.0.113.2", 40000, 5000, seq=1, flags="S", options=[("MSS", 1460)])
    pkt = ipv4("192.0.2.2", "203.0.113.2", IPPROTO_TCP, seg)         # header + payload, checksummed
    frame = ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", pkt)   # EtherType from the IP version
    err = icmp_error("192.0.2.1", "192.0.2.2", 3, 1, pkt)             # quotes as much of pkt as fits

Addresses are text or packed bytes (4 or 16 of them: the family follows), MAC addresses text or 6
bytes. Every builder returns `bytes` with its checksums filled in; fields it does not take as
arguments are zero, as on the wire by default (no IP options, no flow label). The field names and
TCP flag letters are Scapy's, and `tests/unit/test_encode.py` checks each builder byte for byte
against Scapy building the same packet; this module itself imports nothing but the standard library,
so the fault agent and the SYN flood build packets in microseconds without importing Scapy.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from verifier.wire.names import FLAG_LETTERS, flag_bits

__all__ = [
    "ETH_P_IP", "ETH_P_IPV6", "IPPROTO_ICMP", "IPPROTO_ICMPV6", "IPPROTO_TCP", "IPPROTO_UDP",
    "IPV4_ERROR_MAX", "IPV6_ERROR_MAX", "TCP_FLAG_LETTERS",
    "checksum_of_sum", "ethernet", "icmp_error", "internet_checksum", "ip", "ipv4", "ipv6", "mac_bytes",
    "packed_address", "pseudo_header", "refresh_ipv4_checksum", "refresh_tcp_checksum", "tcp", "tcp_flags",
    "tcp_options", "transport_checksum", "word_sum",
]

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPV4_ERROR_MAX = 576  # RFC 1812 4.3.2.3: an ICMP error quotes as much as fits in 576 bytes
IPV6_ERROR_MAX = 1280  # RFC 4443 2.4(c): as much as fits in the minimum IPv6 MTU

TCP_FLAG_LETTERS = FLAG_LETTERS  # the one definition is in verifier.wire.names

# Scapy's option names: kind and struct format of the value (None: no value).
_TCP_OPTIONS = {"EOL": (0, None), "NOP": (1, None), "MSS": (2, "!H"), "WScale": (3, "!B"), "SAckOK": (4, None),
                "SAck": (5, None), "Timestamp": (8, "!II"), "UTO": (28, "!H")}


# -- checksums --------------------------------------------------------------------------------------

def word_sum(data: bytes) -> int:
    """The plain sum of `data` as 16-bit big-endian words (zero-padded to an even length), not folded:
    partial sums add up, and `checksum_of_sum` finishes them (used for incremental checksums)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def checksum_of_sum(total: int) -> int:
    """The Internet checksum from a plain sum of 16-bit words: folded to 16 bits, then complemented.
    Lets a caller precompute the constant part of a sum (see `verifier.faults.flood`)."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`, padded with a zero byte to an even length.

    Of data that already holds its checksum (a header, or a pseudo-header + segment) it is 0 when
    that checksum is right."""
    return checksum_of_sum(word_sum(data))


def packed_address(addr: str | bytes) -> bytes:
    """An IPv4 or IPv6 address as 4 or 16 bytes (text is parsed; bytes are checked and kept)."""
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) not in (4, 16):
            raise ValueError(f"a packed address has 4 or 16 bytes, not {len(addr)}")
        return bytes(addr)
    import socket  # (here: the module costs `verifier replay`, which never packs an address, 3 ms to start)

    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def mac_bytes(mac: str | bytes) -> bytes:
    """A MAC address as 6 bytes, from "02:00:00:00:00:01" or bytes."""
    raw = bytes(mac) if isinstance(mac, (bytes, bytearray)) else bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(raw)}: {mac!r}")
    return raw


def pseudo_header(src: str | bytes, dst: str | bytes, proto: int, length: int) -> bytes:
    """The pseudo-header of a transport checksum: RFC 793 (IPv4, 12 bytes) or RFC 8200 8.1 (IPv6, 40)."""
    s, d = packed_address(src), packed_address(dst)
    if len(s) != len(d):
        raise ValueError("source and destination addresses are of different families")
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!I3xB", length, proto)


def transport_checksum(src: str | bytes, dst: str | bytes, proto: int, segment: bytes) -> int:
    """The checksum of a TCP/UDP segment or ICMPv6 message (whose own checksum field holds zero, or
    its checksum: then the result is 0 when it is right)."""
    return internet_checksum(pseudo_header(src, dst, proto, len(segment)) + bytes(segment))


def refresh_tcp_checksum(src: str | bytes, dst: str | bytes, segment: bytearray) -> bytearray:
    """Compute `segment`'s TCP checksum afresh, in place, and return it. A segment handed over by a
    veth may carry only a partial checksum (the sender's NIC was to finish it), so a re-sent segment
    always gets a full one."""
    segment[16:18] = b"\0\0"
    struct.pack_into("!H", segment, 16, transport_checksum(src, dst, IPPROTO_TCP, segment))
    return segment


def refresh_ipv4_checksum(header: bytearray) -> bytearray:
    """Compute an IPv4 header's checksum afresh, in place (`header`: exactly the IHL * 4 bytes)."""
    header[10:12] = b"\0\0"
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return header


# -- link and network layers ------------------------------------------------------------------------

def ethernet(dst: str | bytes, src: str | bytes, payload: bytes, ethertype: int | None = None) -> bytes:
    """An Ethernet II frame (no FCS, no padding); `ethertype` by default from the IP version of `payload`."""
    if ethertype is None:
        version = payload[0] >> 4 if payload else 0
        if version not in (4, 6):
            raise ValueError("give the EtherType: the payload is not an IPv4 or IPv6 packet")
        ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + bytes(payload)


def ipv4(src: str | bytes, dst: str | bytes, proto: int, payload: bytes, *, ttl: int = 64, tos: int = 0,
         ident: int = 0, df: bool = False) -> bytes:
    """An IPv4 packet: a 20-byte header (no options, not a fragment) with its checksum, and `payload`."""
    s, d = packed_address(src), packed_address(dst)
    if len(s) != 4 or len(d) != 4:
        raise ValueError("an IPv4 header takes IPv4 addresses")
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident & 0xFFFF,
                                   0x4000 if df else 0, ttl, proto, 0, s, d))
    return bytes(refresh_ipv4_checksum(header)) + bytes(payload)


def ipv6(src: str | bytes, dst: str | bytes, nh: int, payload: bytes, *, hlim: int = 64, tclass: int = 0,
         flow: int = 0) -> bytes:
    """An IPv6 packet: the 40-byte fixed header (no extension headers) and `payload`."""
    s, d = packed_address(src), packed_address(dst)
    if len(s) != 16 or len(d) != 16:
        raise ValueError("an IPv6 header takes IPv6 addresses")
    first = (6 << 28) | ((tclass & 0xFF) << 20) | (flow & 0xFFFFF)
    return struct.pack("!IHBB16s16s", first, len(payload), nh, hlim, s, d) + bytes(payload)


def ip(src: str | bytes, dst: str | bytes, proto: int, payload: bytes, *, ttl: int = 64) -> bytes:
    """`ipv4` or `ipv6`, after the family of the addresses (TTL or hop limit `ttl`)."""
    if len(packed_address(src)) == 4:
        return ipv4(src, dst, proto, payload, ttl=ttl)
    return ipv6(src, dst, proto, payload, hlim=ttl)


# -- TCP --------------------------------------------------------------------------------------------

def tcp_flags(flags: str | int) -> int:
    """TCP flag bits from Scapy letters ("S", "SA", "RA", "FPA", ...) or an int (kept)."""
    if isinstance(flags, int):
        return flags
    return flag_bits(flags)


def tcp_options(options: bytes | Iterable[tuple[str | int, object]]) -> bytes:
    """TCP options, padded with zeros (EOL) to a multiple of 4 bytes, from raw bytes or Scapy's list
    form: ("MSS", 1460), ("WScale", 7), ("SAckOK", b""), ("SAck", (left, right, ...)),
    ("Timestamp", (tsval, tsecr)), ("UTO", seconds), ("NOP", None), ("EOL", None), or (kind, bytes)."""
    if isinstance(options, (bytes, bytearray)):
        raw = bytes(options)
    else:
        raw = b""
        for name, value in options:
            if isinstance(name, int):
                if name in (0, 1):
                    raw += bytes([name])
                    continue
                body = bytes(value or b"")  # type: ignore[arg-type]
                kind = name
            else:
                if name not in _TCP_OPTIONS:
                    raise ValueError(f"unknown TCP option {name!r}; use one of {', '.join(_TCP_OPTIONS)} or a kind")
                kind, fmt = _TCP_OPTIONS[name]
                if kind in (0, 1):
                    raw += bytes([kind])
                    continue
                if name == "SAck":
                    blocks = tuple(value)  # type: ignore[arg-type]
                    body = struct.pack(f"!{len(blocks)}I", *blocks)
                elif fmt is None:
                    body = bytes(value or b"")  # type: ignore[arg-type]
                else:
                    body = struct.pack(fmt, *(value if isinstance(value, tuple) else (value,)))
            raw += bytes([kind, 2 + len(body)]) + body
    if len(raw) > 40:
        raise ValueError(f"TCP options of {len(raw)} bytes do not fit in the 40 a header has room for")
    return raw + b"\0" * (-len(raw) % 4)


def tcp(src: str | bytes, dst: str | bytes, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
        flags: str | int = "S", window: int = 65535, options: bytes | Sequence[tuple] = (), payload: bytes = b"",
        urgent: int = 0) -> bytes:
    """A TCP segment (header, options, payload) with its checksum over the pseudo-header of `src` and
    `dst`, which only enter the checksum. `seq` and `ack` are taken modulo 2**32."""
    opts = tcp_options(options)
    offset_flags = ((20 + len(opts)) // 4) << 12 | (tcp_flags(flags) & 0x1FF)
    seg = bytearray(struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset_flags,
                                window, 0, urgent) + opts + bytes(payload))
    return bytes(refresh_tcp_checksum(src, dst, seg))


# -- ICMP errors ------------------------------------------------------------------------------------

def icmp_error(src: str | bytes, dst: str | bytes, icmp_type: int, code: int, offending: bytes, *,
               mtu: int | None = None, ttl: int = 64, tos: int = 0xC0, ident: int = 0) -> bytes:
    """The IP packet of an ICMP (IPv4) or ICMPv6 error from `src` to `dst`, quoting the packet
    `offending` (its IP header on) as received, as much of it as fits: the whole error datagram is at
    most 576 bytes for IPv4 (RFC 1812 4.3.2.3), 1280 for IPv6 (RFC 4443 2.4(c)).

    `mtu` goes where the message carries one: the next-hop MTU of a "fragmentation needed" (type 3
    code 4, RFC 1191) and the MTU of a "packet too big" (ICMPv6 type 2). IPv4 errors get `tos`
    0xC0, internetwork control, as routers send them (RFC 1812 4.3.2.5); `ttl` is the TTL or hop limit.
    """
    if len(packed_address(src)) == 4:
        quoted = bytes(offending[:IPV4_ERROR_MAX - 20 - 8])
        rest = struct.pack("!HH", 0, mtu or 0) if (icmp_type, code) == (3, 4) else b"\0\0\0\0"
        msg = bytearray(struct.pack("!BBH", icmp_type, code, 0) + rest + quoted)
        struct.pack_into("!H", msg, 2, internet_checksum(msg))
        return ipv4(src, dst, IPPROTO_ICMP, msg, ttl=ttl, tos=tos, ident=ident)
    quoted = bytes(offending[:IPV6_ERROR_MAX - 40 - 8])
    rest = struct.pack("!I", mtu or 0) if icmp_type == 2 else b"\0\0\0\0"
    msg = bytearray(struct.pack("!BBH", icmp_type, code, 0) + rest + quoted)
    struct.pack_into("!H", msg, 2, transport_checksum(src, dst, IPPROTO_ICMPV6, msg))
    return ipv6(src, dst, IPPROTO_ICMPV6, msg, hlim=ttl)
