#!/usr/bin/env python3
"""Regenerate the hostile-input corpus in tests/data/fuzz/ (see its README.md).

    .venv/bin/python tests/fuzz/make_corpus.py            # rewrite tests/data/fuzz/ (crashers/ kept)
    .venv/bin/python tests/fuzz/make_corpus.py --check    # exit 1 if the checked-in corpus differs

The corpus is made from the small real captures (captures/golden/*.pcapng and a few small Zeek
traces of tests/data/zeek/traces) and from synthetic captures built here, then damaged on purpose:
bit and byte flips, truncations at every block boundary and inside records, huge and zero lengths,
interface ids out of range, broken option lists, unknown link types, odd time resolutions, huge
statistics counters, deep tunnel nesting. Everything is deterministic (fixed seeds, no clock), so a
rerun writes the same bytes. Only the standard library is used: the damage must not depend on the
code under test (verifier.pcap, verifier.wire).

Output: tests/data/fuzz/*.pcap[ng] (whole capture files, the seeds of tests/fuzz/fuzz_capture.py
and the input of tests/unit/test_fuzz_corpus.py) and tests/data/fuzz/frames/*.bin (single frames,
first byte = link type selector, the seeds of tests/fuzz/fuzz_frame.py). tests/data/fuzz/crashers/
(inputs that crashed or hung a fuzz target, kept as regression inputs) is never touched.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "fuzz"
GOLDEN = ROOT / "captures" / "golden"
ZEEK = ROOT / "tests" / "data" / "zeek" / "traces"
SEED = 0x5EED_F022  # the one seed; each file's generator is seeded from it and the file's name

# Small Zeek traces (bytes <= 16 KiB): every link layer and tunnel the decoder reads that the golden
# captures lack (cooked v1, FabricPath, PPPoE over QinQ, GRE, Aruba, GTP, Teredo, VXLAN, AYIYA, bad
# checksums, snaplen-cut frames).
ZEEK_SEEDS = [
    "chksums__localhost-bad-chksum.pcap", "cisco-fabric-path.pcap", "ldap__ldap-who-am-i.pcap",
    "modbus__modbus-eit.pcap", "tcp-http-with-padding.pcap", "tcp__retransmit-fast009.pcap",
    "tcp__http-on-irc-port-missing-syn.pcapng", "tls__irc-starttls.pcap", "tunnels__ayiya3.pcap",
    "tunnels__gre-aruba-amsdu.pcap", "tunnels__gre-sample.pcap", "tunnels__gtp__gtp6_gtp_0x32.pcap",
    "tunnels__teredo_bubble_with_payload.pcap", "tunnels__vxlan-encapsulated-http.pcap",
]
# The link types decoder.LINKTYPES reads, sorted: the frame target's first byte indexes this list.
LINKTYPES = [0, 1, 6, 9, 10, 12, 14, 50, 51, 101, 104, 105, 107, 108, 109, 113, 117, 119, 127, 138, 163, 192, 204, 226, 228,
             229, 239, 276]
MAX_RECORD_LEN = 256 * 1024 * 1024  # verifier.pcap.records.MAX_RECORD_LEN

SHB, IDB, PB, SPB, NRB, ISB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0x0A
T0 = 1_764_000_000_000_000_000  # ns


# ---------------------------------------------------------------- pcapng model

# option value formats, by (block kind, code): how a value is byte-swapped between sections
OPT_FMT = {("idb", 8): "Q", ("idb", 9): "B", ("idb", 10): "B", ("idb", 13): "B", ("idb", 14): "q",
           ("epb", 2): "I", ("epb", 4): "Q", ("epb", 5): "Q", ("epb", 6): "I",
           ("isb", 2): "ts", ("isb", 3): "ts", ("isb", 4): "Q", ("isb", 5): "Q", ("isb", 6): "Q",
           ("isb", 7): "Q", ("isb", 8): "Q"}


@dataclass
class Opt:
    code: int
    value: object  # bytes, or an int for the numeric options of OPT_FMT


@dataclass
class Block:
    kind: str  # shb idb epb isb spb pb raw
    type: int = 0  # raw blocks only
    body: bytes = b""  # raw blocks only
    linktype: int = 1
    snaplen: int = 0
    reserved: int = 0
    major: int = 1
    minor: int = 0
    seclen: int = -1
    iid: int = 0
    ts: int = 0  # timestamp units
    data: bytes = b""
    orig: int | None = None
    drops: int = 0  # PB
    opts: list = field(default_factory=list)
    end_opt: bool = True  # write opt_endofopt when there are options
    # damage: override what the emitter would write
    total: int | None = None
    trailer: int | None = None
    caplen: int | None = None
    opts_raw: bytes | None = None


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def enc_opts(kind: str, opts: list, be: bool, end_opt: bool = True) -> bytes:
    e = ">" if be else "<"
    out = b""
    for o in opts:
        fmt = OPT_FMT.get((kind, o.code))
        if isinstance(o.value, int):
            if fmt == "ts":
                v = struct.pack(e + "II", (o.value >> 32) & 0xFFFFFFFF, o.value & 0xFFFFFFFF)
            else:
                v = struct.pack(e + (fmt or "I"), o.value)
        else:
            v = o.value
        out += struct.pack(e + "HH", o.code, len(v)) + _pad(v)
    if opts and end_opt:
        out += struct.pack(e + "HH", 0, 0)
    return out


def enc_block(b: Block, be: bool) -> bytes:
    e = ">" if be else "<"
    opts = b.opts_raw if b.opts_raw is not None else enc_opts(b.kind, b.opts, be, b.end_opt)
    if b.kind == "shb":
        btype = SHB
        body = struct.pack(e + "IHHq", 0x1A2B3C4D, b.major, b.minor, b.seclen) + opts
    elif b.kind == "idb":
        btype = IDB
        body = struct.pack(e + "HHI", b.linktype, b.reserved, b.snaplen) + opts
    elif b.kind in ("epb", "pb"):
        cap = len(b.data) if b.caplen is None else b.caplen
        orig = len(b.data) if b.orig is None else b.orig
        hi, lo = (b.ts >> 32) & 0xFFFFFFFF, b.ts & 0xFFFFFFFF
        if b.kind == "epb":
            btype = EPB
            head = struct.pack(e + "IIIII", b.iid, hi, lo, cap, orig)
        else:
            btype = PB
            head = struct.pack(e + "HHIIII", b.iid, b.drops, hi, lo, cap, orig)
        body = head + _pad(b.data) + opts
    elif b.kind == "isb":
        btype = ISB
        body = struct.pack(e + "III", b.iid, (b.ts >> 32) & 0xFFFFFFFF, b.ts & 0xFFFFFFFF) + opts
    elif b.kind == "spb":
        btype = SPB
        body = struct.pack(e + "I", len(b.data) if b.orig is None else b.orig) + _pad(b.data)
    else:
        btype = b.type
        body = b.body
    n = len(body) + 12
    return (struct.pack(e + "II", btype, n if b.total is None else b.total) + body
            + struct.pack(e + "I", n if b.trailer is None else b.trailer))


def emit(blocks: list, be: bool = False) -> bytes:
    """Blocks to bytes; a section header switches the byte order only if it says so (see Section)."""
    return b"".join(enc_block(b, be) for b in blocks)


def emit_sections(sections: list) -> bytes:
    """[(big_endian, [blocks])...]: a file of several sections, each in its own byte order."""
    return b"".join(emit(blocks, be) for be, blocks in sections)


def parse_opts(kind: str, raw: bytes, be: bool) -> list:
    e = ">" if be else "<"
    out, pos = [], 0
    while pos + 4 <= len(raw):
        code, n = struct.unpack_from(e + "HH", raw, pos)
        pos += 4
        if code == 0:
            break
        v = raw[pos:pos + n]
        fmt = OPT_FMT.get((kind, code))
        if fmt == "ts" and n == 8:
            hi, lo = struct.unpack(e + "II", v)
            v = (hi << 32) | lo
        elif fmt and n == struct.calcsize(fmt):
            v = struct.unpack(e + fmt, v)[0]
        out.append(Opt(code, v))
        pos += n + (-n % 4)
    return out


def parse_pcapng(data: bytes) -> list:
    """A well-formed pcapng file as [(big_endian, [Block])] sections."""
    sections, pos, be = [], 0, False
    while pos + 12 <= len(data):
        if struct.unpack_from("<I", data, pos)[0] == SHB:
            be = data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d"
            sections.append((be, []))
        e = ">" if be else "<"
        btype, total = struct.unpack_from(e + "II", data, pos)
        body = data[pos + 8:pos + total - 4]
        blocks = sections[-1][1]
        if btype == SHB:
            _, major, minor, seclen = struct.unpack_from(e + "IHHq", body)
            blocks.append(Block("shb", major=major, minor=minor, seclen=seclen, opts=parse_opts("shb", body[16:], be)))
        elif btype == IDB:
            lt, res, snap = struct.unpack_from(e + "HHI", body)
            blocks.append(Block("idb", linktype=lt, reserved=res, snaplen=snap, opts=parse_opts("idb", body[8:], be)))
        elif btype == EPB:
            iid, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", body)
            o = 20 + cap + (-cap % 4)
            blocks.append(Block("epb", iid=iid, ts=(hi << 32) | lo, data=body[20:20 + cap], orig=orig,
                                opts=parse_opts("epb", body[o:], be)))
        elif btype == ISB:
            iid, hi, lo = struct.unpack_from(e + "III", body)
            blocks.append(Block("isb", iid=iid, ts=(hi << 32) | lo, opts=parse_opts("isb", body[12:], be)))
        else:
            blocks.append(Block("raw", type=btype, body=body))
        pos += total
    return sections


@dataclass
class Pcap:
    records: list  # (ts_ns, data, orig)
    linktype: int = 1
    snaplen: int = 65535
    be: bool = False
    nano: bool = False
    modified: bool = False  # Kuznetzov's patched pcap: 8 more bytes per record header


def parse_pcap(data: bytes) -> Pcap:
    magic = data[:4]
    be = magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d", b"\xa1\xb2\xcd\x34")
    e = ">" if be else "<"
    m = struct.unpack_from(e + "I", data)[0]
    nano, modified = m == 0xA1B23C4D, m == 0xA1B2CD34
    snap, lt = struct.unpack_from(e + "II", data, 16)
    hdr = 24 if modified else 16
    pos, recs = 24, []
    while pos + hdr <= len(data):
        sec, frac, cap, orig = struct.unpack_from(e + "IIII", data, pos)
        ts = sec * 10**9 + (frac if nano else frac * 1000)
        recs.append((ts, data[pos + hdr:pos + hdr + cap], orig))
        pos += hdr + cap
    return Pcap(recs, lt, snap, be, nano, modified)


def emit_pcap(p: Pcap, rec_override=None, header_override=None) -> bytes:
    """`rec_override(i, (sec, frac, caplen, orig, data)) -> tuple` damages record i."""
    e = ">" if p.be else "<"
    magic = 0xA1B2CD34 if p.modified else (0xA1B23C4D if p.nano else 0xA1B2C3D4)
    head = [magic, 2, 4, 0, 0, p.snaplen, p.linktype]
    if header_override:
        head = header_override(head)
    out = [struct.pack(e + "IHHiIII", *head)]
    for i, (ts, data, orig) in enumerate(p.records):
        sec, rest = divmod(ts, 10**9)
        frac = rest if p.nano else rest // 1000
        rec = (sec & 0xFFFFFFFF, frac, len(data), orig, data)
        if rec_override:
            rec = rec_override(i, rec)
        out.append(struct.pack(e + "IIII", *rec[:4]))
        if p.modified:
            out.append(struct.pack(e + "iHBx", 3, 0x0800, 0))
        out.append(rec[4])
    return b"".join(out)


def pcap_to_blocks(p: Pcap, tsresol: int | None = None) -> list:
    """A pcap file as one pcapng section (microsecond, or `tsresol`, timestamps)."""
    idb_opts = [Opt(2, b"eth0")]
    div = 1000
    if tsresol is not None:
        idb_opts.append(Opt(9, tsresol))
        div = 1 if tsresol == 9 else 10 ** (9 - tsresol) if tsresol < 9 else 1
    blocks = [Block("shb", opts=[Opt(4, b"tests/fuzz/make_corpus.py")]),
              Block("idb", linktype=p.linktype, snaplen=p.snaplen, opts=idb_opts)]
    for ts, data, orig in p.records:
        blocks.append(Block("epb", ts=ts // div, data=data, orig=orig))
    return blocks


def blocks_to_pcap(blocks: list, **kw) -> Pcap:
    lt = next(b.linktype for b in blocks if b.kind == "idb")
    recs = [(b.ts * 1 if _ns_resol(blocks) else b.ts * 1000, b.data, b.orig if b.orig is not None else len(b.data))
            for b in blocks if b.kind == "epb"]
    return Pcap(recs, lt, 262144, **kw)


def _ns_resol(blocks: list) -> bool:
    idb = next(b for b in blocks if b.kind == "idb")
    return any(o.code == 9 and o.value == 9 for o in idb.opts)


# ---------------------------------------------------------------- packets (stdlib only)

def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def a4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def a6(s: str) -> bytes:
    head, _, tail = s.partition("::")
    h = [int(x, 16) for x in head.split(":") if x]
    t = [int(x, 16) for x in tail.split(":") if x]
    return struct.pack("!8H", *(h + [0] * (8 - len(h) - len(t)) + t))


C4, S4, R4 = a4("192.0.2.2"), a4("203.0.113.2"), a4("192.0.2.1")
C6, S6, R6 = a6("2001:db8:1::2"), a6("2001:db8:2::2"), a6("2001:db8:1::1")
T4A, T4B = a4("198.51.100.1"), a4("198.51.100.2")  # tunnel endpoints
T6A, T6B = a6("2001:db8:ff::1"), a6("2001:db8:ff::2")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = 64, frag: int = 0x4000,
         options: bytes = b"", total: int | None = None, ident: int = 1) -> bytes:
    ihl = 5 + len(options) // 4
    n = 4 * ihl + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, n, ident, frag, ttl, proto, 0, src, dst) + options
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def ipv6(src: bytes, dst: bytes, nh: int, payload: bytes, *, hlim: int = 64, plen: int | None = None) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload) if plen is None else plen, nh, hlim, src, dst) + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: str, seq: int = 0, ack: int = 0, *,
        data: bytes = b"", options: bytes = b"", window: int = 65535, doff: int | None = None) -> bytes:
    bits = sum(1 << "FSRPAUEC".index(c) for c in flags)
    off = (20 + len(options)) // 4 if doff is None else doff
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, bits, window, 0, 0)
    seg += options + data
    pseudo = (src + dst + struct.pack("!HH", 6, len(seg)) if len(src) == 4
              else src + dst + struct.pack("!IHBB", len(seg), 0, 0, 6))
    c = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ip_tcp(src: bytes, dst: bytes, *a, **kw) -> bytes:
    seg = tcp(src, dst, *a, **kw)
    return ipv4(src, dst, 6, seg) if len(src) == 4 else ipv6(src, dst, 6, seg)


def eth(payload: bytes, et: int | None = None) -> bytes:
    if et is None:
        et = 0x0800 if payload[0] >> 4 == 4 else 0x86DD
    return MAC_B + MAC_A + struct.pack("!H", et) + payload


SYN_OPTS = bytes.fromhex("020405b4") + bytes.fromhex("0402") + bytes.fromhex("080a0000000100000000") + b"\x01" \
    + bytes.fromhex("030307")


def handshake(c: bytes, s: bytes, sport: int, dport: int, isn_c: int = 1000, isn_s: int = 5000, close: bool = True):
    """IP packets of a handshake (and a four-segment close): (direction, packet), c>s = 'out'."""
    p = [("out", ip_tcp(c, s, sport, dport, "S", isn_c, options=SYN_OPTS)),
         ("in", ip_tcp(s, c, dport, sport, "SA", isn_s, isn_c + 1, options=SYN_OPTS)),
         ("out", ip_tcp(c, s, sport, dport, "A", isn_c + 1, isn_s + 1)),
         ("out", ip_tcp(c, s, sport, dport, "PA", isn_c + 1, isn_s + 1, data=b"hello\n"))]
    if close:
        p += [("in", ip_tcp(s, c, dport, sport, "FA", isn_s + 1, isn_c + 7)),
              ("out", ip_tcp(c, s, sport, dport, "FA", isn_c + 7, isn_s + 2)),
              ("in", ip_tcp(s, c, dport, sport, "A", isn_s + 2, isn_c + 8))]
    return p


def capture(frames: list, linktype: int = 1, *, name: bytes = b"fuzz0", tsresol: int = 9, snaplen: int = 0,
            stats: bool = True, step_ns: int = 1_000_000) -> list:
    """Blocks of a one-interface pcapng capture of `frames` ((direction or None, frame bytes))."""
    blocks = [Block("shb", opts=[Opt(4, b"tests/fuzz/make_corpus.py")]),
              Block("idb", linktype=linktype, snaplen=snaplen, opts=[Opt(2, name), Opt(9, tsresol)])]
    div = 10 ** (9 - tsresol)
    t = T0
    for d, fr in frames:
        opts = [Opt(2, {"in": 1, "out": 2}[d])] if d else []
        blocks.append(Block("epb", ts=t // div, data=fr, opts=opts))
        t += step_ns
    if stats:
        blocks.append(Block("isb", ts=t // div, opts=[Opt(4, len(frames)), Opt(5, 0)]))
    return blocks


# ---------------------------------------------------------------- encapsulations

def gre(proto: int, payload: bytes, flags: int = 0, ver: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack("!HH", flags | ver, proto) + extra + payload


def in4(proto: int, payload: bytes) -> bytes:
    return ipv4(T4A, T4B, proto, payload)


def in6(nh: int, payload: bytes) -> bytes:
    return ipv6(T6A, T6B, nh, payload)


def wlan(payload_llc: bytes, *, qos: bool = False, amsdu: bool = False, four: bool = False, htc: bool = False) -> bytes:
    fc = 0x88 if qos else 0x08
    fl = (0x03 if four else 0x01) | (0x80 if htc else 0)
    h = struct.pack("!BBH", fc, fl, 0) + MAC_A + MAC_B + MAC_A + b"\0\0"
    if four:
        h += MAC_B
    if qos:
        h += struct.pack("!BB", 0x80 if amsdu else 0, 0)
        if htc:
            h += b"\0" * 4
    return h + payload_llc


def snap(ip: bytes) -> bytes:
    return b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip


def amsdu(ips: list) -> bytes:
    out = b""
    for ip in ips:
        sub = snap(ip)
        out += MAC_B + MAC_A + struct.pack("!H", len(sub)) + sub
        out += b"\0" * (-len(out) % 4)
    return out


def _et(ip: bytes) -> int:
    return 0x0800 if ip[0] >> 4 == 4 else 0x86DD


def ppp(ip: bytes, *, acfc: bool = False, pfc: bool = False) -> bytes:
    proto = 0x21 if ip[0] >> 4 == 4 else 0x57
    head = b"" if acfc else b"\xff\x03"
    return head + (bytes([proto]) if pfc else struct.pack("!H", proto)) + ip


def teredo(ip6: bytes, auth: bool = False, origin: bool = False) -> bytes:
    head = b""
    if auth:
        head += b"\x00\x01\x02\x03" + b"id" + b"key" + b"\0" * 9
    if origin:
        head += b"\x00\x00" + b"\0" * 6
    return head + ip6


def ayiya(ip: bytes) -> bytes:
    nh = 4 if ip[0] >> 4 == 4 else 41
    return bytes([0x41, 0x52, 0x11, nh]) + struct.pack("!I", 0) + b"\0" * 16 + b"\0" * 20 + ip


def gtp(ip: bytes, ext: bool = False) -> bytes:
    if not ext:
        return struct.pack("!BBHI", 0x30, 0xFF, len(ip), 1) + ip
    exth = b"\x01\x00\x00\x00"  # one 4-byte extension, then none
    return struct.pack("!BBHI", 0x34, 0xFF, len(ip) + 4 + len(exth), 1) + b"\0\0\0\x85" + exth + ip


def geneve(inner: bytes, proto: int, opts: bytes = b"") -> bytes:
    return struct.pack("!BBH", len(opts) // 4, 0, proto) + b"\0\0\x01\0" + opts + inner


def vxlan(inner_eth: bytes) -> bytes:
    return b"\x08\0\0\0\0\0\x01\0" + inner_eth


def mpls(ip: bytes, labels: int = 2) -> bytes:
    out = b""
    for i in range(labels):
        out += struct.pack("!I", (16 + i) << 12 | (1 << 8 if i == labels - 1 else 0) | 64)
    return out + ip


# Each encapsulation: name -> (link type, function from an inner IP packet to the frame)
ENCAPS = {
    "raw101": (101, lambda ip: ip),
    "raw12": (12, lambda ip: ip),
    "raw14": (14, lambda ip: ip),
    "ipv4-228": (228, lambda ip: ip),
    "ipv6-229": (229, lambda ip: ip),
    "loop0-host": (0, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 30) + ip),
    "loop108-net": (108, lambda ip: struct.pack("!I", 2 if ip[0] >> 4 == 4 else 24) + ip),
    "loop0-af28": (0, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 28) + ip),
    "sll1": (113, lambda ip: struct.pack("!HHH8sH", 4, 1, 6, MAC_A + b"\0\0", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip),
    "sll2": (276, lambda ip: struct.pack("!HHIHBB8s", 0x0800 if ip[0] >> 4 == 4 else 0x86DD, 0, 2, 1, 0, 6, MAC_A + b"\0\0") + ip),
    "vlan": (1, lambda ip: eth(struct.pack("!H", 100) + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip, 0x8100)),
    "qinq": (1, lambda ip: eth(struct.pack("!HHH", 10, 0x8100, 20) + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip, 0x88A8)),
    "vlan9100": (1, lambda ip: eth(struct.pack("!HHH", 10, 0x9200, 20) + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip, 0x9100)),
    "mpls": (1, lambda ip: eth(mpls(ip), 0x8847)),
    "pppoe": (1, lambda ip: eth(struct.pack("!BBHH", 0x11, 0, 1, len(ip) + 2) + struct.pack("!H", 0x21 if ip[0] >> 4 == 4 else 0x57) + ip, 0x8864)),
    "pbb": (1, lambda ip: eth(b"\0\0\0\x01" + MAC_B + MAC_A + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip, 0x88E7)),
    "vntag": (1, lambda ip: eth(b"\0\0\0\x01" + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip, 0x8926)),
    "fabricpath": (1, lambda ip: MAC_B + MAC_A + b"\x89\x03" + b"\0\0" + MAC_B + MAC_A + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip),
    "ipip4": (1, lambda ip: eth(in4(4 if ip[0] >> 4 == 4 else 41, ip))),
    "ipip6": (1, lambda ip: eth(in6(4 if ip[0] >> 4 == 4 else 41, ip))),
    "gre": (1, lambda ip: eth(in4(47, gre(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip)))),
    "gre-cks-key-seq": (1, lambda ip: eth(in4(47, gre(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip, 0xB000, 0, b"\0" * 12)))),
    "gre-pptp": (1, lambda ip: eth(in4(47, gre(0x880B, ppp(ip), 0x3080, 1, b"\0" * 12)))),
    "gre-ppp-acfc-pfc": (1, lambda ip: eth(in4(47, gre(0x880B, ppp(ip, acfc=True, pfc=True))))),
    "gre-teb": (1, lambda ip: eth(in4(47, gre(0x6558, eth(ip))))),
    "erspan2": (1, lambda ip: eth(in4(47, gre(0x88BE, b"\x10\x01\0\x00\0\0\0\0" + eth(ip), 0x1000, 0, b"\0" * 4)))),
    "erspan3": (1, lambda ip: eth(in4(47, gre(0x22EB, b"\x20\x01\0\0" + b"\0" * 8 + eth(ip), 0x1000, 0, b"\0" * 4)))),
    "erspan3-sub": (1, lambda ip: eth(in4(47, gre(0x22EB, b"\x20\x01\0\0" + b"\0" * 7 + b"\x01" + b"\0" * 8 + eth(ip))))),
    "aruba": (1, lambda ip: eth(in4(47, gre(0x8200, wlan(snap(ip)))))),
    "aruba-amsdu": (1, lambda ip: eth(in4(47, gre(0x8210, wlan(amsdu([ip, ip]), qos=True, amsdu=True))))),
    "aruba-4addr-htc": (1, lambda ip: eth(in4(47, gre(0x8210, wlan(snap(ip), qos=True, four=True, htc=True))))),
    "gre-udp": (1, lambda ip: eth(in4(17, udp(50000, 4754, gre(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip))))),
    "vxlan": (1, lambda ip: eth(in4(17, udp(50000, 4789, vxlan(eth(ip)))))),
    "geneve-teb": (1, lambda ip: eth(in4(17, udp(50000, 6081, geneve(eth(ip), 0x6558, b"\0\x01\x02\x01" + b"\0" * 4))))),
    "geneve-ip": (1, lambda ip: eth(in6(17, udp(50000, 6081, geneve(ip, 0x0800 if ip[0] >> 4 == 4 else 0x86DD))))),
    "gtp": (1, lambda ip: eth(in4(17, udp(2152, 2152, gtp(ip))))),
    "gtp-ext": (1, lambda ip: eth(in4(17, udp(2152, 2152, gtp(ip, ext=True))))),
    "ayiya": (1, lambda ip: eth(in4(17, udp(5072, 5072, ayiya(ip))))),
    # the other link types that carry IP (tests/unit/test_linktypes.py has each header's layout)
    "dot3-snap": (1, lambda ip: MAC_B + MAC_A + struct.pack("!H", len(snap(ip))) + snap(ip)),
    "ppp9": (9, lambda ip: ppp(ip)),
    "ppp9-acfc-pfc": (9, lambda ip: ppp(ip, acfc=True, pfc=True)),
    "ppp-hdlc50": (50, lambda ip: ppp(ip)),
    "chdlc50": (50, lambda ip: b"\x0f\x00" + struct.pack("!H", _et(ip)) + ip),
    "pppoe51": (51, lambda ip: struct.pack("!BBHH", 0x11, 0, 1, len(ip) + 2) + ppp(ip, acfc=True)),
    "ppp-dir204": (204, lambda ip: b"\x01" + ppp(ip)),
    "chdlc104": (104, lambda ip: b"\x8f\x00" + struct.pack("!H", _et(ip)) + ip),
    "fddi10": (10, lambda ip: b"\x50" + MAC_B + MAC_A + snap(ip)),
    "tokenring6": (6, lambda ip: b"\x10\x40" + MAC_B + MAC_A + snap(ip)),
    "tokenring6-rif": (6, lambda ip: b"\x10\x40" + MAC_B + bytes([MAC_A[0] | 0x80]) + MAC_A[1:] + b"\x02\x00" + snap(ip)),
    "fr107": (107, lambda ip: b"\x18\x41\x03" + (b"\xcc" if ip[0] >> 4 == 4 else b"\x8e") + ip),
    "fr107-snap": (107, lambda ip: b"\x18\x41\x03\x00\x80\x00\x00\x00" + struct.pack("!H", _et(ip)) + ip),
    "enc109": (109, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 24) + b"\0" * 8 + ip),
    "pflog117": (117, lambda ip: bytes([61, 2 if ip[0] >> 4 == 4 else 24, 0, 0]) + b"\0" * 60 + ip),
    "ipnet226": (226, lambda ip: struct.pack(">BBHIIIII", 1, 2 if ip[0] >> 4 == 4 else 26, 0, len(ip), 1, 0, 0, 0) + ip),
    "ip1394-138": (138, lambda ip: b"\x01" * 8 + b"\x02" * 8 + struct.pack("!H", _et(ip)) + ip),
    "nflog239": (239, lambda ip: bytes([2 if ip[0] >> 4 == 4 else 10, 0, 0, 1]) + struct.pack("<HH", 8, 10) + b"ab\0\0"
                 + struct.pack("<HH", 4 + len(ip), 9) + ip),
    "wlan105": (105, lambda ip: wlan(snap(ip))),
    "radiotap127": (127, lambda ip: struct.pack("<BBHI", 0, 0, 8, 0) + wlan(snap(ip), qos=True)),
    "prism119": (119, lambda ip: struct.pack("<II", 0x41, 144) + b"\0" * 136 + wlan(snap(ip))),
    "avs163": (163, lambda ip: struct.pack(">II", 0x80211001, 64) + b"\0" * 56 + wlan(snap(ip))),
    "ppi192": (192, lambda ip: struct.pack("<BBHI", 0, 0, 8, 105) + wlan(snap(ip))),
}
# Teredo carries IPv6 only
TEREDO = {
    "teredo": (1, lambda ip: eth(in4(17, udp(3544, 40000, teredo(ip))))),
    "teredo-auth-origin": (1, lambda ip: eth(in4(17, udp(40000, 3544, teredo(ip, auth=True, origin=True))))),
    "teredo-content": (1, lambda ip: eth(in4(17, udp(40001, 40002, ip)))),
}
TER_C, TER_S = a6("2001:0:4136:e378:8000:63bf:3fff:fdd2"), a6("2001:db8:2::2")


# ---------------------------------------------------------------- the synthetic captures

def synthetic() -> dict:
    """name -> bytes: captures whose frames cover every link layer, tunnel and packet kind."""
    out = {}
    for name, (lt, wrap) in ENCAPS.items():
        frames = [(d, wrap(ip)) for d, ip in handshake(C4, S4, 40000, 5000)]
        frames += [(d, wrap(ip)) for d, ip in handshake(C6, S6, 40001, 5001, close=False)]
        out[f"syn-encap-{name}.pcapng"] = emit(capture(frames, lt))
    for name, (lt, wrap) in TEREDO.items():
        frames = [(d, wrap(ip)) for d, ip in handshake(TER_C, TER_S, 40000, 80)]
        out[f"syn-encap-{name}.pcapng"] = emit(capture(frames, lt))

    # ICMP errors quoting SYNs, every kind the decoder reads (and echo, which is OTHER)
    syn4 = ip_tcp(C4, S4, 40010, 5000, "S", 777)
    syn6 = ip_tcp(C6, S6, 40011, 5000, "S", 888)
    ext6 = ipv6(C6, S6, 0, b"\x3c\x00" + b"\0" * 6 + b"\x33\x00" + b"\0" * 6 + b"\x06\x01" + b"\0" * 10
                + tcp(C6, S6, 40012, 5000, "S", 999))
    frag6q = ipv6(C6, S6, 44, b"\x06\x00\x00\x01\0\0\0\x01" + tcp(C6, S6, 40013, 5000, "S", 5))

    def icmp4(t, c, rest, q):
        return eth(ipv4(R4, C4, 1, struct.pack("!BBH", t, c, 0) + rest + q))

    def icmp6(t, c, rest, q):
        return eth(ipv6(R6, C6, 58, struct.pack("!BBH", t, c, 0) + rest + q))

    frames = [("out", eth(syn4)), ("in", icmp4(3, 3, b"\0" * 4, syn4)), ("in", icmp4(3, 4, b"\0\0\x05\xdc", syn4[:28])),
              ("in", icmp4(11, 0, b"\0" * 4, syn4[:24])), ("in", icmp4(12, 0, b"\x14\0\0\0", syn4[:20])),
              ("in", icmp4(3, 1, b"\0" * 4, b"")), ("in", icmp4(3, 1, b"\0" * 4, b"\x45" + b"\0" * 10)),
              ("in", icmp4(3, 1, b"\0" * 4, b"\x41" + syn4[1:])), ("in", icmp4(3, 1, b"\0" * 4, b"\x75" + syn4[1:])),
              ("in", icmp4(8, 0, b"\0" * 4, b"ping")), ("in", icmp4(3, 13, b"\0" * 4, ipv4(C4, S4, 17, udp(1, 2, b"")))),
              ("out", eth(syn6)), ("in", icmp6(1, 4, b"\0" * 4, syn6)), ("in", icmp6(2, 0, b"\0\0\x05\x00", syn6)),
              ("in", icmp6(3, 0, b"\0" * 4, syn6[:48])), ("in", icmp6(4, 1, b"\0\0\0\x28", ext6)),
              ("in", icmp6(1, 0, b"\0" * 4, frag6q)), ("in", icmp6(1, 3, b"\0" * 4, syn6[:30])),
              ("in", icmp6(128, 0, b"\0" * 4, b"ping")), ("in", icmp6(1, 4, b"\0" * 4, b"\x60" + b"\0" * 10))]
    out["syn-icmp-errors.pcapng"] = emit(capture(frames))

    # IP and TCP corner cases: options, fragments, TSO/jumbo lengths, extension headers, odd TCP options
    seg = tcp(C4, S4, 40020, 5000, "S", 1, options=SYN_OPTS)
    frames = [
        (None, eth(ipv4(C4, S4, 6, seg, options=b"\x94\x04\0\0" + b"\x01" * 4))),  # IPv4 options
        (None, eth(ipv4(C4, S4, 6, seg, frag=0x2000))),  # first fragment (MF)
        (None, eth(ipv4(C4, S4, 6, seg[:8], frag=0x0003))),  # later fragment
        (None, eth(ipv4(C4, S4, 6, tcp(C4, S4, 40021, 5000, "A", 2, 3, data=b"x" * 100), total=0))),  # TSO
        (None, eth(ipv6(C6, S6, 6, tcp(C6, S6, 40022, 5000, "A", 2, 3, data=b"y" * 50), plen=0))),  # jumbo/BIG TCP
        (None, eth(ipv6(C6, S6, 0, b"\x2b\x00" + b"\0" * 6 + b"\x3c\x00" + b"\0" * 6 + b"\x33\x00" + b"\0" * 6
                        + b"\x06\x01" + b"\0" * 10 + tcp(C6, S6, 40023, 5000, "S", 4, options=SYN_OPTS)))),
        (None, eth(ipv6(C6, S6, 44, b"\x06\x00\x00\x01\0\0\0\x07" + seg))),  # IPv6 fragment
        (None, eth(ip_tcp(C4, S4, 40024, 5000, "S", 5, options=b"\x02\x04\x05\xb4\x03\x03\x0e\x04\x02\x08\x0a"
                          + b"\0" * 8 + b"\x01\x01\x00\x00"))),
        (None, eth(ip_tcp(C4, S4, 40025, 5000, "S", 6, options=b"\x02\x00\x00\x00"))),  # option length 0
        (None, eth(ip_tcp(C4, S4, 40026, 5000, "S", 7, options=b"\x02\x01\x00\x00"))),  # option length 1
        (None, eth(ip_tcp(C4, S4, 40027, 5000, "S", 8, options=b"\x01\x01\x01\x08"))),  # length past the end
        (None, eth(ip_tcp(C4, S4, 40028, 5000, "S", 9, options=b"\x08\x0a" + b"\xff" * 8 + b"\x02\x04\xff\xff"
                          + b"\x03\x03\xff\x04\x02\x00\x00" + b"\x01" * 16 + b"\x00" * 5))),  # doff 15
        (None, eth(ipv4(C4, S4, 6, tcp(C4, S4, 40029, 5000, "SA", 1, 2)[:19]))),  # truncated TCP header
        (None, eth(ipv4(C4, S4, 132, b"\0" * 16))), (None, eth(ipv4(C4, S4, 17, udp(53, 53, b"dns")))),
        (None, MAC_B + MAC_A + b"\x08\x06" + b"\0" * 28),  # ARP
        (None, eth(ipv4(C4, S4, 6, tcp(C4, S4, 40030, 5000, "S", 10, data=b"z" * 1400))[:80])),  # snaplen cut
    ]
    out["syn-ip-tcp-corners.pcapng"] = emit(capture(frames, snaplen=96))

    # The attempt machine and the Zeek reading: every event, on two interfaces, out of order, idle gaps
    ex = []
    t = T0

    def add(iface, d, ip, dt=1_000_000):
        nonlocal t
        t += dt
        ex.append((iface, t, d, eth(ip)))

    add(0, "out", ip_tcp(C4, S4, 41000, 5001, "S", 100))  # refused
    add(0, "in", ip_tcp(S4, C4, 5001, 41000, "RA", 0, 101))
    add(0, "out", ip_tcp(C4, S4, 41001, 5001, "S", 200))  # RST with a wrong ack: ignored, then timeout
    add(0, "in", ip_tcp(S4, C4, 5001, 41001, "RA", 0, 999))
    add(0, "out", ip_tcp(C4, S4, 41002, 5000, "S", 300))  # bad SYN-ACK, then a good one
    add(0, "in", ip_tcp(S4, C4, 5000, 41002, "SA", 7000, 12345))
    add(0, "in", ip_tcp(S4, C4, 5000, 41002, "SA", 7000, 301))
    add(1, "out", ip_tcp(C4, S4, 41002, 5000, "A", 301, 7001))  # a copy on the second interface
    add(0, "out", ip_tcp(C4, S4, 41002, 5000, "A", 301, 7001))
    add(0, "in", ip_tcp(S4, C4, 5000, 41002, "R", 7001 + 100))  # in-window RST: challenge ACK
    add(0, "out", ip_tcp(C4, S4, 41002, 5000, "A", 301, 7001))
    add(0, "in", ip_tcp(S4, C4, 5000, 41002, "R", 7001 + 10**8))  # outside: ignored
    add(0, "in", ip_tcp(S4, C4, 5000, 41002, "R", 7001))  # exact: reset
    add(0, "out", ip_tcp(C4, S4, 41003, 5000, "S", 400))  # simultaneous open
    add(0, "in", ip_tcp(S4, C4, 5000, 41003, "S", 8000))
    add(0, "out", ip_tcp(C4, S4, 41003, 5000, "SA", 400, 8001))
    add(0, "in", ip_tcp(S4, C4, 5000, 41003, "SA", 8000, 401))
    add(0, "out", ip_tcp(C4, S4, 41003, 5000, "FA", 401, 8001))
    add(0, "in", ip_tcp(S4, C4, 5000, 41003, "RA", 8001, 402))
    add(0, "in", ip_tcp(S4, C4, 5000, 41004, "PA", 9000, 500, data=b"mid-stream"))  # no SYN seen
    add(0, "out", ip_tcp(C4, S4, 41004, 5000, "FA", 500, 9010))
    add(0, "out", ip_tcp(C4, S4, 41005, 5000, "S", 600))  # ICMP with a wrong seq (ignored), then a right one
    add(0, "in", ipv4(R4, C4, 1, b"\x03\x01\0\0\0\0\0\0" + ip_tcp(C4, S4, 41005, 5000, "S", 601)[:28]))
    add(0, "in", ipv4(R4, C4, 1, b"\x03\x01\0\0\0\0\0\0" + ip_tcp(C4, S4, 41005, 5000, "S", 600)[:28]))
    add(0, "in", ipv4(R4, C4, 1, b"\x03\x03\0\0\0\0\0\0" + ip_tcp(C4, S4, 49999, 5000, "S", 1)[:28]))  # unmatched
    add(0, "out", ip_tcp(C4, S4, 41006, 5000, "S", 700), dt=-5_000_000)  # out of order (reorder window)
    add(0, "out", ip_tcp(C4, S4, 41006, 5000, "S", 700), dt=6_000_000)  # retransmitted
    add(0, "out", ip_tcp(C4, S4, 41006, 5000, "S", 700), dt=400 * 10**9)  # after the linger time
    add(0, "out", ip_tcp(C4, S4, 41006, 5000, "S", 90000))  # the port reused: a new attempt
    add(0, "in", ip_tcp(S4, C4, 5000, 41006, "SA", 1, 90001))
    add(0, "out", ip_tcp(C4, S4, 41006, 5000, "R", 90001))
    add(0, "out", ip_tcp(C6, S6, 41007, 443, "S", 1))  # IPv6, likely server port
    add(0, "in", ip_tcp(S6, C6, 443, 41007, "SA", 2, 2))
    add(0, "out", ip_tcp(C6, S6, 41007, 443, "A", 2, 3))
    add(0, "in", ip_tcp(S6, C6, 443, 41007, "FA", 3, 2))
    add(0, "out", ip_tcp(C6, S6, 41007, 443, "RA", 2, 4))
    add(0, "out", ip_tcp(C4, S4, 80, 41008, "SA", 1, 2))  # only a SYN-ACK
    add(0, "out", ip_tcp(C4, S4, 41009, 41010, "A", 5, 5))  # an ACK for nothing, no known server port
    add(0, "out", ip_tcp(C4, C4, 41011, 41011, "S", 5))  # land: same endpoint on both sides
    add(0, "out", ip_tcp(C4, S4, 41012, 5000, "FSRPAUEC", 5, 6))  # every flag
    blocks = [Block("shb", opts=[Opt(4, b"tests/fuzz/make_corpus.py")]),
              Block("idb", linktype=1, opts=[Opt(2, b"client:c0"), Opt(9, 9)]),
              Block("idb", linktype=1, opts=[Opt(2, b"router:r0"), Opt(9, 9)])]
    for iface, ts, d, fr in ex:
        blocks.append(Block("epb", iid=iface, ts=ts, data=fr, opts=[Opt(2, {"in": 1, "out": 2}[d])]))
    blocks += [Block("isb", iid=0, ts=t + 10**9, opts=[Opt(4, len(ex)), Opt(5, 2), Opt(7, 1)]),
               Block("isb", iid=1, ts=t + 10**9, opts=[Opt(4, 1), Opt(5, 0)])]
    out["syn-machine-tour.pcapng"] = emit(blocks)
    return out


def nesting() -> dict:
    """Deeply nested encapsulations (deeper than the decoder's MAX_DEPTH) with a SYN at the bottom."""
    out = {}
    syn = ip_tcp(C4, S4, 42000, 5000, "S", 1)

    def deep(wrap, n, inner=syn):
        p = inner
        for _ in range(n):
            p = wrap(p)
        return p

    ipip = lambda p: in4(4 if p[0] >> 4 == 4 else 41, p)
    gre4 = lambda p: in4(47, gre(0x0800 if p[0] >> 4 == 4 else 0x86DD, p))
    vx = lambda p: in4(17, udp(50000, 4789, vxlan(eth(p))))
    gen = lambda p: in6(17, udp(50000, 6081, geneve(p, 0x0800 if p[0] >> 4 == 4 else 0x86DD)))
    gt = lambda p: in4(17, udp(2152, 2152, gtp(p)))
    ay = lambda p: in4(17, udp(5072, 5072, ayiya(p)))

    def mix(p):
        for w in (ipip, gre4, vx, gen, gt, ay):
            p = w(p)
        return p

    for name, wrap in (("ipip", ipip), ("gre", gre4), ("vxlan", vx), ("geneve", gen), ("gtp", gt), ("ayiya", ay)):
        frames = [(None, eth(deep(wrap, n))) for n in (5, 6, 7, 12, 40)]
        out[f"nest-{name}.pcapng"] = emit(capture(frames))
    frames = [(None, eth(mix(syn))), (None, eth(mix(mix(syn)))), (None, eth(deep(mix, 6)))]
    out["nest-mixed.pcapng"] = emit(capture(frames))
    # the link layer's own loops: long VLAN and MPLS stacks, long IPv6 extension header chains
    vlans = b"".join(struct.pack("!HH", i, 0x8100) for i in range(1000))
    frames = [(None, eth(vlans + struct.pack("!H", 0) + b"\x08\x00" + syn, 0x8100)),
              (None, eth(vlans[:-2] + b"\x08\x00" + syn, 0x8100)),
              (None, eth(mpls(syn, 1500), 0x8847)), (None, eth(b"\0\0\0\0" * 1500, 0x8847)),
              (None, eth(ipv6(C6, S6, 60, b"".join(b"\x3c\x00" + b"\0" * 6 for _ in range(700)) + b"\x06\x00"
                              + b"\0" * 6 + tcp(C6, S6, 42001, 5000, "S", 1)))),
              (None, eth(ipv6(C6, S6, 51, b"".join(b"\x33\x00" + b"\0" * 6 for _ in range(700))))),
              (None, eth(ipv6(C6, S6, 0, b"\x00\xff" + b"\0" * 2046)))]
    out["nest-link-stacks.pcapng"] = emit(capture(frames))
    return out


# ---------------------------------------------------------------- damage

def flips(data: bytes, rng: random.Random, n: int, *, bits: bool, keep: int = 0) -> bytes:
    """`n` random bit flips (or random byte values) after the first `keep` bytes."""
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(keep, len(b))
        if bits:
            b[i] ^= 1 << rng.randrange(8)
        else:
            b[i] = rng.randrange(256)
    return bytes(b)


def boundaries_pcapng(data: bytes) -> list:
    """[(offset, block type, total length, big endian)] of a well-formed pcapng file."""
    out, pos, be = [], 0, False
    while pos + 12 <= len(data):
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            be = data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d"
        btype, total = struct.unpack_from(">II" if be else "<II", data, pos)
        out.append((pos, btype, total, be))
        pos += total
    return out


def boundaries_pcap(data: bytes) -> list:
    p = parse_pcap(data)
    hdr = 24 if p.modified else 16
    out, pos = [], 24
    for _, d, _ in p.records:
        out.append((pos, hdr + len(d)))
        pos += hdr + len(d)
    return out


def truncations(name: str, data: bytes, every_boundary: bool) -> dict:
    """The file cut at every block (record) boundary, and inside the first block (record) of each
    type: in its header, its fixed fields, its data, its options and its trailer."""
    out = {}
    stem, ext = name.rsplit(".", 1)
    cuts = {}
    if ext == "pcapng":
        seen = set()
        for k, (o, btype, total, _) in enumerate(boundaries_pcapng(data)):
            if every_boundary and o:
                cuts[f"at-block{k}"] = o
            if btype in seen:
                continue
            seen.add(btype)
            for where in (4, 11, 20, total // 2, total - 4, total - 1):
                if 0 < where < total:
                    cuts[f"in-block{k}-type{btype:x}-at{where}"] = o + where
    else:
        cuts = {f"header-at{n}": n for n in (4, 20, 23)}
        for k, (o, size) in enumerate(boundaries_pcap(data)):
            if every_boundary:
                cuts[f"at-record{k}"] = o
            if k < 2:
                for where in (1, 15, 16, size // 2, size - 1):
                    if 0 < where < size:
                        cuts[f"in-record{k}-at{where}"] = o + where
    for label, n in cuts.items():
        out[f"trunc-{stem}-{label}.{ext}"] = data[:n]
    return out


def pcapng_damage(stem: str, sections: list, full: bool = True) -> dict:
    """Structured damage to a one-section pcapng file (lengths, interface ids, options, resolutions);
    `full=False`: the most telling cases only (for a second byte order)."""
    out = {}

    def pick(every, few):
        return every if full else [x for x in every if x in few]

    be, blocks = sections[0]
    epb_i = [i for i, b in enumerate(blocks) if b.kind == "epb"]
    idb_i = [i for i, b in enumerate(blocks) if b.kind == "idb"]
    isb_i = [i for i, b in enumerate(blocks) if b.kind == "isb"]
    first, idb = epb_i[0], idb_i[0]
    nif = len(idb_i)

    def put(label, bl, sec_be=be):
        out[f"{label}-{stem}.pcapng"] = emit(bl, sec_be)

    def at(i, **changes):
        bl = list(blocks)
        bl[i] = replace(bl[i], **changes)
        return bl

    # block total lengths: zero, tiny, odd, huge, just past the file, trailer mismatches
    for label, i in pick((("shb", 0), ("idb", idb), ("epb", first), ("isb", isb_i[-1] if isb_i else first)),
                         (("epb", first),)):
        size = len(enc_block(blocks[i], be))
        for tot in pick((0, 11, 12, 13, size - 4, size + 1, size + 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                         MAX_RECORD_LEN + 1), (0, 12, 0x80000000, 0xFFFFFFFF)):
            put(f"len-{label}-total-{tot:#x}", at(i, total=tot))
        put(f"len-{label}-trailer-mismatch", at(i, trailer=size + 8))
    if full:
        # one huge (but allowed) claimed length in a tiny file: the reader must not read past its end
        put("len-epb-total-maxrecord", blocks[:first] + [replace(blocks[first], total=MAX_RECORD_LEN)])
    # captured lengths
    b = blocks[first]
    for cap in pick((0, 1, len(b.data) - 1, len(b.data) + 1, len(b.data) + 4, len(b.data) + 5, 0x7FFFFFFF,
                     0x80000000, 0xFFFFFFFF, MAX_RECORD_LEN), (len(b.data) + 1, 0xFFFFFFFF)):
        put(f"len-epb-caplen-{cap:#x}", at(first, caplen=cap))
    for orig in pick((0, 1, 0xFFFFFFFF), (0xFFFFFFFF,)):
        put(f"len-epb-origlen-{orig:#x}", at(first, orig=orig))
    # blocks too short for their fixed fields (framing intact)
    for label, body in (("idb-body0", b""), ("idb-body4", b"\x01\0\0\0"), ("epb-body0", b""),
                        ("epb-body8", b"\0" * 8), ("epb-body16", b"\0" * 16), ("isb-body8", b"\0" * 8),
                        ("spb-body0", b""), ("pb-body12", b"\0" * 12))[:8 if full else 0]:
        btype = {"idb": IDB, "epb": EPB, "isb": ISB, "spb": SPB, "pb": PB}[label.split("-")[0]]
        bl = list(blocks)
        bl.insert(first, Block("raw", type=btype, body=body))
        put(f"len-short-{label}", bl)
    # interface ids out of range (the old C parser: SIGSEGV at >= 0x80000000, SIGFPE at 0xFFFFFFFF/E)
    for iid in (nif, nif + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF):
        put(f"iface-epb-{iid:#x}", at(first, iid=iid))
        if not full:
            continue
        bl = list(blocks)
        bl[first:first] = [Block("isb", iid=iid, ts=b.ts, opts=[Opt(4, 1), Opt(5, 1)])]
        put(f"iface-isb-{iid:#x}", bl)
        bl = list(blocks)
        bl[first] = Block("pb", iid=iid & 0xFFFF, ts=b.ts, data=b.data)
        put(f"iface-pb-{iid & 0xFFFF:#x}", bl)
    # every packet on a bad interface; packets before any interface; SPBs without an interface
    put("iface-all-epb-0xffffffff", [replace(x, iid=0xFFFFFFFF) if x.kind == "epb" else x for x in blocks])
    put("iface-epb-before-idb", [blocks[0], blocks[first], blocks[idb]] + blocks[first + 1:])
    put("iface-spb-no-idb", [blocks[0], Block("spb", data=b.data)] + blocks[1:])
    put("iface-spb-snaplen", [blocks[0], replace(blocks[idb], snaplen=20)]
        + [Block("spb", data=x.data) if x.kind == "epb" else x for x in blocks[idb + 1:]])
    put("iface-spb-orig-short", blocks[:first] + [Block("spb", data=b.data, orig=3)] + blocks[first + 1:])
    # broken option lists
    e = ">" if be else "<"
    broken = {
        "past-block": struct.pack(e + "HH", 2, 200) + b"eth0",
        "len-ffff": struct.pack(e + "HH", 2, 0xFFFF),
        "no-end": struct.pack(e + "HH", 2, 4) + b"eth0",
        "cut-header": struct.pack(e + "H", 2),
        "odd-len": struct.pack(e + "HH", 2, 5) + b"eth0x\0\0\0" + struct.pack(e + "HHB", 9, 1, 9) + b"\0\0\0",
        "tsresol-empty": struct.pack(e + "HH", 9, 0) + struct.pack(e + "HH", 0, 0),
        "tsoffset-short": struct.pack(e + "HH", 14, 4) + b"\xff\xff\xff\x7f",
        "many": b"".join(struct.pack(e + "HH", 1, 4) + b"abcd" for _ in range(300)),
        "name-not-utf8": struct.pack(e + "HH", 2, 4) + b"\xff\xfe\x80\0" + struct.pack(e + "HH", 3, 2) + b"\xc3\0\0\0",
        "after-end": struct.pack(e + "HH", 0, 0) + struct.pack(e + "HH", 9, 1) + b"\xff\0\0\0",
    }
    for label, raw in pick(list(broken.items()), [(k, broken[k]) for k in ("past-block", "no-end", "len-ffff")]):
        put(f"opt-idb-{label}", at(idb, opts_raw=raw))
        put(f"opt-epb-{label}", at(first, opts_raw=raw.replace(struct.pack(e + "H", 9), struct.pack(e + "H", 2))))
        put(f"opt-shb-{label}", at(0, opts_raw=raw))
        if isb_i:
            put(f"opt-isb-{label}", at(isb_i[-1], opts_raw=raw.replace(struct.pack(e + "H", 2), struct.pack(e + "H", 5))))
    for flags in pick((0, 1, 2, 3, 0xFFFFFFFF), (3,)):
        put(f"opt-epb-flags-{flags:#x}", at(first, opts=[Opt(2, flags)]))
    put("opt-epb-flags-short", at(first, opts=[Opt(2, b"\x01\x00")]))
    # unknown and odd link types
    for lt in pick((0xFFFF, 2, 147, 105, 127, 0, 113, 276, 228, 229), (0xFFFF, 276)):
        put(f"link-idb-{lt}", at(idb, linktype=lt))
    # time resolutions and offsets
    for r in pick((0, 3, 6, 9, 10, 12, 18, 19, 0x7F, 0x80, 0x80 | 10, 0x80 | 20, 0x80 | 32, 0x80 | 33, 0x80 | 63,
                   0xFF), (19, 0x80 | 32, 0x80 | 63, 0xFF)):
        put(f"tsres-{r:#04x}", at(idb, opts=[o for o in blocks[idb].opts if o.code != 9] + [Opt(9, r)]))
    big_ts = [replace(x, ts=(1 << 64) - 1) if x.kind == "epb" else x for x in blocks]
    for r in pick((0, 9, 18, 0x80, 0x80 | 32), (0, 0x80)):
        bl = list(big_ts)
        bl[idb] = replace(bl[idb], opts=[Opt(9, r)])
        put(f"tsres-{r:#04x}-max-timestamps", bl)
    for off in pick((1, -1, 9_000_000_000, 9_000_000_001, -9_000_000_001, (1 << 63) - 1, -(1 << 63)),
                    ((1 << 63) - 1, -(1 << 63))):
        put(f"tsoff-{off}", at(idb, opts=blocks[idb].opts + [Opt(14, off)]))
        bl = list(big_ts)
        bl[idb] = replace(bl[idb], opts=[Opt(9, 0), Opt(14, off)])
        put(f"tsoff-{off}-max-timestamps", bl)
    # statistics counters near and past the 64-bit limits; every counter; start/end times
    counters = (("ifdrop-2^64-1", [Opt(5, (1 << 64) - 1)]), ("ifdrop-2^63", [Opt(5, 1 << 63)]),
                ("ifdrop-2^63-1", [Opt(5, (1 << 63) - 1)]), ("osdrop-2^64-1", [Opt(7, (1 << 64) - 1)]),
                ("sum-2^63", [Opt(5, 1 << 62), Opt(7, 1 << 62)]),
                ("all-counters", [Opt(2, 1), Opt(3, (1 << 64) - 1)] + [Opt(c, 10 + c) for c in (4, 5, 6, 7, 8)]),
                ("recv-2^64-1", [Opt(4, (1 << 64) - 1)]), ("short-counter", [Opt(5, b"\x01\x02\x03")]))
    for label, opts in counters if full else counters[:1] + counters[4:5]:
        bl = list(blocks)
        bl.insert(first + 1, Block("isb", iid=0, ts=b.ts, opts=opts))  # between packets
        put(f"isb-mid-{label}", bl)
        put(f"isb-end-{label}", blocks + [Block("isb", iid=0, ts=blocks[-1].ts, opts=opts)])
    # several sections: a second one of the other byte order, of a bad version, with a bad byte-order magic
    other = [replace(x) for x in blocks]
    two = emit(blocks, be) + emit(other, not be)
    out[f"sect-two-orders-{stem}.pcapng"] = two
    bad_ver = emit(blocks, be) + emit([replace(other[0], major=2)] + other[1:], be)
    out[f"sect-version2-{stem}.pcapng"] = bad_ver
    bom = bytearray(emit(blocks, be) + emit(other, be))
    second = len(emit(blocks, be))
    bom[second + 8:second + 12] = b"\x12\x34\x56\x78"
    out[f"sect-bad-bom-{stem}.pcapng"] = bytes(bom)
    short_shb = emit(blocks, be) + emit([Block("raw", type=SHB, body=struct.pack(e + "I", 0x1A2B3C4D) + b"\x01\0")], be)
    out[f"sect-short-shb-{stem}.pcapng"] = short_shb
    out[f"sect-first-not-shb-{stem}.pcapng"] = emit(blocks[1:], be)
    out[f"sect-first-shb-version2-{stem}.pcapng"] = emit([replace(blocks[0], major=2)] + blocks[1:], be)
    # unknown, name-resolution, decryption-secrets and custom blocks between the packets
    extra = [Block("raw", type=NRB, body=struct.pack(e + "HH", 1, 8) + a4("192.0.2.2") + b"cli\0" + b"\0" * 4),
             Block("raw", type=DSB, body=struct.pack(e + "II", 0x544c534b, 4) + b"keys"),
             Block("raw", type=0x00000BAD, body=b"\0" * 4 + b"custom"), Block("raw", type=0x40000BAD, body=b""),
             Block("raw", type=0x80000001, body=b"\xff" * 8)]
    put("blocks-unknown-between", blocks[:first] + extra + blocks[first:])
    return out


def pcap_damage(stem: str, p: Pcap, huge: bool = False) -> dict:
    out = {}
    ext = "pcap"
    for cap in (0, 1, 0xFFFF, 0x40000, MAX_RECORD_LEN + 1, 0x7FFFFFFF, 0xFFFFFFFF) + ((MAX_RECORD_LEN,) if huge else ()):
        out[f"len-pcap-caplen-{cap:#x}-{stem}.{ext}"] = emit_pcap(
            p, lambda i, r, cap=cap: (r[0], r[1], cap, r[3], r[4]) if i == 1 else r)
    for orig in (0, 0xFFFFFFFF):
        out[f"len-pcap-origlen-{orig:#x}-{stem}.{ext}"] = emit_pcap(
            p, lambda i, r, orig=orig: (r[0], r[1], r[2], orig, r[4]) if i == 0 else r)
    out[f"len-pcap-frac-1e9-{stem}.{ext}"] = emit_pcap(p, lambda i, r: (0xFFFFFFFF, 0xFFFFFFFF, *r[2:]))
    for lt in (0xFFFF, 0xFFFFFFFF, 0x10000001, 2, 147, 0, 113, 276):
        out[f"link-pcap-{lt:#x}-{stem}.{ext}"] = emit_pcap(p, header_override=lambda h, lt=lt: h[:6] + [lt])
    for label, f in (("version1", lambda h: [h[0], 1] + h[2:]), ("version3", lambda h: [h[0], 3] + h[2:]),
                     ("snaplen0", lambda h: h[:5] + [0, h[6]]), ("snaplen-max", lambda h: h[:5] + [0xFFFFFFFF, h[6]])):
        out[f"hdr-pcap-{label}-{stem}.{ext}"] = emit_pcap(p, header_override=f)
    return out


def ip_damage(stem: str, sections: list) -> dict:
    """Damage to the IP and TCP headers of the first TCP frames of an Ethernet capture."""
    out = {}
    be, blocks = sections[0]
    targets = []
    for i, b in enumerate(blocks):
        if b.kind == "epb" and len(b.data) > 34 and b.data[12:14] in (b"\x08\x00", b"\x86\xdd"):
            v6 = b.data[12:14] == b"\x86\xdd"
            nh = b.data[14 + 6] if v6 else b.data[14 + 9]
            if nh == 6:
                targets.append((i, v6))
    for i, v6 in targets[:1]:
        d = blocks[i].data
        l3, l4 = 14, 14 + (40 if v6 else (d[14] & 15) * 4)
        muts = {}
        if not v6:
            for ihl in (0, 1, 4, 6, 15):
                muts[f"ihl{ihl}"] = (l3, bytes([0x40 | ihl]))
            muts["version6-in-v4"] = (l3, bytes([0x65]))
            for tot in (0, 1, 19, 20, l4 - l3 + 19, len(d) - l3 + 1, 0xFFFF):
                muts[f"total{tot}"] = (l3 + 2, struct.pack("!H", tot))
            muts["frag-offset"] = (l3 + 6, b"\x1f\xff")
            muts["proto-icmp"] = (l3 + 9, b"\x01")
            muts["proto-gre"] = (l3 + 9, b"\x2f")
            muts["proto-ipip"] = (l3 + 9, b"\x04")
            muts["proto-udp"] = (l3 + 9, b"\x11")
        else:
            for plen in (0, 1, 19, 0xFFFF):
                muts[f"plen{plen}"] = (l3 + 4, struct.pack("!H", plen))
            for nh in (0, 43, 44, 51, 60, 41, 4, 47, 58, 17):
                muts[f"nh{nh}"] = (l3 + 6, bytes([nh]))
            muts["version4-in-v6"] = (l3, b"\x45")
        for doff in (0, 1, 4, 5, 6, 15):
            muts[f"tcp-doff{doff}"] = (l4 + 12, bytes([doff << 4]))
        muts["tcp-flags-all"] = (l4 + 13, b"\xff")
        for label, (off, val) in muts.items():
            nd = d[:off] + val + d[off + len(val):]
            bl = list(blocks)
            bl[i] = replace(bl[i], data=nd)
            out[f"ip-{label}-pkt{i}-{stem}.pcapng"] = emit(bl, be)
        # the same frame cut in the middle of each header
        for cut in (l3 + 1, l3 + 19, l4 - 1, l4 + 1, l4 + 12, l4 + 19):
            if cut < len(d):
                bl = list(blocks)
                bl[i] = replace(bl[i], data=d[:cut], orig=len(d))
                out[f"ip-cut{cut}-pkt{i}-{stem}.pcapng"] = emit(bl, be)
    return out


# ---------------------------------------------------------------- frames for fuzz_frame.py

def frame_seeds(files: dict) -> dict:
    """Frames of the seeds, synthetic and nested captures, at most 4 per file: first byte = index into
    LINKTYPES (bit 7: check checksums, bit 6: orig_len 65535, as tests/fuzz/fuzz_frame.py reads it),
    then the frame (at most 20000 bytes)."""
    out = {}
    for name, data in sorted(files.items()):
        if not name.startswith(("syn-", "nest-", "seed-")):
            continue
        if name.endswith(".pcapng"):
            frames = []
            for _, blocks in parse_pcapng(data):
                lts = [b.linktype for b in blocks if b.kind == "idb"]
                frames += [(lts[b.iid], b.data) for b in blocks if b.kind == "epb" and b.iid < len(lts)]
        else:
            p = parse_pcap(data)
            frames = [(p.linktype & 0xFFFF, d) for _, d, _ in p.records]
        frames = [(lt, d) for lt, d in frames if lt in LINKTYPES]
        step = max(1, len(frames) // 4)
        for n, (lt, d) in enumerate(frames[::step][:4]):
            sel = LINKTYPES.index(lt) | (0x80 if n == 1 else 0) | (0x40 if n == 2 else 0)
            out[f"{name.rsplit('.', 1)[0]}-{n}.bin"] = bytes([sel]) + d[:20000]
    return out


# ---------------------------------------------------------------- the corpus

def build() -> dict:
    files: dict = {}
    golden = sorted(GOLDEN.glob("*.pcapng"))
    for p in golden:
        files[f"seed-{p.name}"] = p.read_bytes()
    for n in ZEEK_SEEDS:
        p = ZEEK / n
        if p.exists():
            files[f"seed-zeek-{n}"] = p.read_bytes()
    # format variants of the seeds
    c1 = parse_pcapng((GOLDEN / "c1_handshake_ipv4.pcapng").read_bytes())
    c3 = parse_pcapng((GOLDEN / "c3_refused_ipv6.pcapng").read_bytes())
    c5 = parse_pcapng((GOLDEN / "c5_icmp_host_reject_ipv4.pcapng").read_bytes())
    files["fmt-be-c1_handshake_ipv4.pcapng"] = emit(c1[0][1], True)
    files["fmt-be-c3_refused_ipv6.pcapng"] = emit(c3[0][1], True)
    files["fmt-two-sections-le-be.pcapng"] = emit(c1[0][1], False) + emit(c3[0][1], True)
    files["fmt-three-sections.pcapng"] = emit(c1[0][1], True) + emit(c3[0][1], False) + emit(c5[0][1], True)
    p5 = blocks_to_pcap(c5[0][1])
    for label, kw in (("le-us", {}), ("be-us", {"be": True}), ("le-ns", {"nano": True}),
                      ("be-ns", {"be": True, "nano": True}), ("le-modified", {"modified": True}),
                      ("be-modified", {"be": True, "modified": True})):
        files[f"fmt-pcap-{label}-c5_icmp_host_reject_ipv4.pcap"] = emit_pcap(replace(p5, **kw))
    files["fmt-spb-c1_handshake_ipv4.pcapng"] = emit(
        [Block("spb", data=b.data) if b.kind == "epb" else b for b in c1[0][1]])
    files["fmt-pb-c1_handshake_ipv4.pcapng"] = emit(
        [Block("pb", iid=b.iid, ts=b.ts, data=b.data) if b.kind == "epb" else b for b in c1[0][1]])
    gre = parse_pcap((ZEEK / "tunnels__gre-sample.pcap").read_bytes())
    for r in (None, 3, 9):
        files[f"fmt-pcapng-tsresol{r}-gre-sample.pcapng"] = emit(pcap_to_blocks(gre, r), r == 3)
    files.update(synthetic())
    files.update(nesting())

    # truncations: every block boundary of three small files, inside records of a few more
    for n, every in (("seed-c3_refused_ipv4.pcapng", True), ("seed-c5_icmp_net_50ms_ipv6.pcapng", False),
                     ("fmt-pcap-be-ns-c5_icmp_host_reject_ipv4.pcap", True),
                     ("seed-zeek-tunnels__gre-aruba-amsdu.pcap", False), ("fmt-be-c1_handshake_ipv4.pcapng", False),
                     ("syn-icmp-errors.pcapng", False)):
        files.update(truncations(n[5:] if n.startswith("seed-") else n, files[n], every))
    # structured damage
    files.update(pcapng_damage("c3_refused_ipv4", parse_pcapng(files["seed-c3_refused_ipv4.pcapng"])))
    files.update(pcapng_damage("be-c1", parse_pcapng(files["fmt-be-c1_handshake_ipv4.pcapng"]), full=False))
    files.update(pcap_damage("c5", p5, huge=True))
    files.update(pcap_damage("be-ns-c5", replace(p5, be=True, nano=True)))
    files.update(ip_damage("c1_handshake_ipv4", parse_pcapng(files["seed-c1_handshake_ipv4.pcapng"])))
    files.update(ip_damage("c1_handshake_ipv6", parse_pcapng(files["seed-c1_handshake_ipv6.pcapng"])))
    # random bit flips of every seed, format variant and synthetic capture (1 to 8, the file header kept
    # intact), random bytes in every second one (anywhere, the header included)
    for k, name in enumerate(sorted(n for n in files if n.startswith(("seed-", "syn-", "fmt-")))):
        data = files[name]
        if len(data) > 16384:
            continue
        rng = random.Random(f"{SEED}:{name}")
        stem, ext = name.split("-", 1)[1].rsplit(".", 1)
        keep = 28 if ext == "pcapng" else 24
        files[f"flip-bits-{stem}.{ext}"] = flips(data, rng, rng.randint(1, 8), bits=True, keep=keep)
        if k % 2 == 0:
            files[f"flip-bytes-{stem}.{ext}"] = flips(data, rng, 3, bits=False)
    return files


def write(files: dict, frames: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "frames").mkdir(exist_ok=True)
    keep = {"README.md"}
    for p in OUT.iterdir():
        if p.is_file() and p.name not in keep and p.name not in files:
            p.unlink()
    for p in (OUT / "frames").iterdir():
        if p.name not in frames:
            p.unlink()
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    for name, data in frames.items():
        (OUT / "frames" / name).write_bytes(data)


def digest(files: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the checked-in corpus, write nothing")
    args = ap.parse_args(argv)
    files = build()
    frames = frame_seeds(files)
    too_big = [n for n, d in files.items() if len(d) > 65536]
    if too_big:
        print(f"make_corpus: files over 64 KiB: {too_big}", file=sys.stderr)
        return 1
    total = sum(map(len, files.values())) + sum(map(len, frames.values()))
    if args.check:
        have = {p.name: p.read_bytes() for p in OUT.glob("*.pcap*")}
        have_frames = {p.name: p.read_bytes() for p in (OUT / "frames").glob("*.bin")}
        if have != files or have_frames != frames:
            missing = sorted(set(files) - set(have)) + sorted(set(frames) - set(have_frames))
            extra = sorted(set(have) - set(files)) + sorted(set(have_frames) - set(frames))
            changed = sorted(n for n in set(files) & set(have) if files[n] != have[n])
            print(f"make_corpus: tests/data/fuzz differs from its generator: missing {missing[:5]}, extra "
                  f"{extra[:5]}, changed {changed[:5]}", file=sys.stderr)
            return 1
        print(f"make_corpus: tests/data/fuzz is current ({len(files)} captures, {len(frames)} frames, "
              f"{total} bytes, sha256 {digest({**files, **frames})[:16]})")
        return 0
    write(files, frames)
    print(f"make_corpus: wrote {len(files)} captures and {len(frames)} frames ({total} bytes) to "
          f"{OUT.relative_to(ROOT)}; sha256 {digest({**files, **frames})[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
