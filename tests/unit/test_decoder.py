"""The one decoder (`verifier.wire.decoder`): every link type and encapsulation it reads, against
Scapy's dissection of the same frames, and the compiled engine against its plain-Python source.

Every frame decoded here goes through `Decoders` (the `decoders` fixture): the compiled module, as
the package imports it, and the pure-Python reference, loaded in-process from decoder.py, decode
the same bytes and must give the same packets field for field; the tests then check the compiled
result. Frames are built with Scapy where Scapy has the layer; the few headers Scapy lacks (VN-Tag,
FabricPath, Teredo's origin and authentication indicators, AYIYA, 802.11 A-MSDU subframes, a
one-byte PPP protocol field, broken TCP options) are written by hand and say so, and the frame
is then compared with Scapy's dissection of what follows the hand-made header.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import warnings
from pathlib import Path

import pytest
from scapy.all import (
    ARP,
    DNS,
    GRE,
    GRE_PPTP,
    HDLC,
    ICMP,
    IP,
    LLC,
    SNAP,
    TCP,
    UDP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1AH,
    Dot1Q,
    Dot11,
    Dot11QoS,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
    Loopback,
    NoPayload,
    Raw,
    rdpcap,
)
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_I, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.ppp import PPP, PPPoE, PPPoED
from scapy.layers.vxlan import VXLAN

from verifier.pcap import RawPacket, read_packets
from verifier.wire import (ACK, BADSUM, FIN, FRAGMENT, ICMP as ICMP_KIND, MALFORMED, OTHER, PSH, RST, SYN,
                           TCP as TCP_KIND, UNSUPPORTED, MalformedPacket, QuotedPacket, decode, decode_frame,
                           flag_str, internet_checksum)
from verifier.wire import decoder as compiled_decoder

from .crafted import C, C6, R, S, S6, ZEEK, assert_compiled_beside_pure, eth, pure_module, zeek_traces

# --------------------------------------------------------------------------
# the two engines


@pytest.fixture(scope="module")
def pure_decoder():
    """decoder.py as plain Python (crafted.pure_module)."""
    return pure_module("verifier.wire.decoder")


# Every public field of a Packet (properties included): what must be the same in both engines.
FIELDS = ("kind", "proto", "is_tcp", "family", "src", "dst", "src_raw", "dst_raw", "src_ep", "dst_ep", "key",
          "src_low", "sport", "dport", "seq", "ack", "flags", "flag_str", "window", "payload_len", "captured",
          "complete", "mss", "options_mss", "wscale", "sack_ok", "tsval", "tsecr", "icmp_type", "icmp_code", "mtu",
          "tunnel", "error", "checksum_ok", "l4_off", "index", "ts_ns", "iface", "iface_name", "direction", "linktype")
QUOTED_FIELDS = ("family", "ip_proto", "proto", "src", "dst", "src_raw", "dst_raw", "sport", "dport", "seq")


def fields(pk, extra=()) -> dict:
    d = {f: getattr(pk, f) for f in FIELDS + tuple(extra)}
    q = pk.quoted
    d["quoted"] = None if q is None else {f: getattr(q, f) for f in QUOTED_FIELDS}
    d["repr"] = repr(pk)
    return d


def _extra(ours, ref) -> tuple:
    """Attributes the pure Packet has beyond FIELDS that the compiled one has too (fields added to
    the decoder later are compared as soon as both engines have them)."""
    return tuple(sorted(a for a in vars(ref) if a not in FIELDS and a != "quoted" and hasattr(ours, a)))


class Decoders:
    """The compiled decoder and the pure-Python reference on the same input: each call asserts that
    they agree and returns the compiled result."""

    def __init__(self, pure) -> None:
        self.pure = pure

    def frame(self, linktype: int, data: bytes, orig_len: int | None = None, *, checksums: bool = False) -> list:
        ours = decode_frame(linktype, data, orig_len, checksums=checksums)
        ref = self.pure.decode_frame(linktype, data, orig_len, checksums=checksums)
        assert len(ours) == len(ref) >= 1
        for a, b in zip(ours, ref):
            extra = _extra(a, b)
            assert fields(a, extra) == fields(b, extra), "compiled and pure decoders disagree"
        return ours

    def one(self, linktype: int, data: bytes, orig_len: int | None = None, **kw):
        (pk,) = self.frame(linktype, data, orig_len, **kw)
        return pk

    def packet(self, raw: RawPacket):
        """decode(raw) in both engines: the same packet, or the same MalformedPacket message."""
        results = []
        for fn, exc in ((decode, MalformedPacket), (self.pure.decode, self.pure.MalformedPacket)):
            try:
                results.append(("packet", fn(raw)))
            except exc as e:
                results.append(("malformed", str(e)))
        (k1, v1), (k2, v2) = results
        assert k1 == k2, "compiled and pure decoders disagree"
        if k1 == "malformed":
            assert v1 == v2
            raise MalformedPacket(v1)
        if v1 is None or v2 is None:
            assert v1 is v2 is None
        else:
            extra = _extra(v1, v2)
            assert fields(v1, extra) == fields(v2, extra), "compiled and pure decoders disagree"
        return v1


@pytest.fixture
def decoders(pure_decoder) -> Decoders:
    return Decoders(pure_decoder)


def test_the_imported_decoder_is_compiled(pure_decoder):
    assert_compiled_beside_pure("verifier.wire.decoder", pure_decoder)


# --------------------------------------------------------------------------
# helpers: capture context, Scapy's view


def raw(data: bytes, linktype: int = 1, *, direction: str | None = None, orig_len: int | None = None,
        iface_name: str | None = "eth0") -> RawPacket:
    return RawPacket(7, 1_700_000_000_000_000_123, 2, iface_name, linktype, data,
                     len(data) if orig_len is None else orig_len, direction)


def innermost(s, cls):
    """The last layer of exactly `cls` in a dissected Scapy packet (IPerror/TCPerror, the quoted
    headers of ICMP errors, are subclasses and do not count)."""
    found, layer = None, s
    while layer is not None and not isinstance(layer, NoPayload):
        if type(layer) is cls:
            found = layer
        layer = layer.payload
    return found


def enclosing_ip(layer):
    while layer is not None and type(layer) not in (IP, IPv6):
        layer = layer.underlayer
    return layer


def addr(text: str) -> str:
    return ipaddress.ip_address(text).compressed


def packed(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def scapy_payload_len(ip, tcp) -> int:
    if type(ip) is IP:
        return ip.len - ip.ihl * 4 - tcp.dataofs * 4
    ext = len(bytes(ip.payload)) - len(bytes(tcp))  # extension headers between IPv6 and TCP
    return ip.plen - ext - tcp.dataofs * 4


def scapy_syn_options(tcp) -> dict:
    out = {"mss": None, "wscale": None, "sack_ok": None, "tsval": None, "tsecr": None}
    for name, value in tcp.options:
        if name == "MSS" and out["mss"] is None:
            out["mss"] = value
        elif name == "WScale" and out["wscale"] is None:
            out["wscale"] = value
        elif name == "SAckOK":
            out["sack_ok"] = True
        elif name == "Timestamp" and out["tsval"] is None:
            out["tsval"], out["tsecr"] = value
    return out


def assert_tcp_as_scapy(pk, s, data: bytes | None = None):
    """The TCP packet `pk` has the fields Scapy's dissection `s` gives its innermost TCP segment."""
    tcp = innermost(s, TCP)
    assert tcp is not None, "Scapy found no TCP segment"
    ip = enclosing_ip(tcp)
    assert pk.kind == TCP_KIND and pk.proto == "tcp" and pk.error is None
    assert pk.family == (4 if type(ip) is IP else 6)
    assert (pk.src, pk.dst) == (addr(ip.src), addr(ip.dst))
    assert (pk.src_raw, pk.dst_raw) == (packed(ip.src), packed(ip.dst))
    assert (pk.sport, pk.dport, pk.seq, pk.ack, pk.window) == (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.window)
    assert pk.flags == int(tcp.flags) and pk.flag_str == str(tcp.flags)
    assert pk.payload_len == scapy_payload_len(ip, tcp)
    opts = scapy_syn_options(tcp) if tcp.flags & SYN else dict.fromkeys(("mss", "wscale", "sack_ok", "tsval", "tsecr"))
    assert {k: getattr(pk, k) for k in opts} == opts
    if data is not None:  # where the TCP header lies in the frame
        assert pk.l4_off == len(data) - len(bytes(tcp))
    return tcp


# --------------------------------------------------------------------------
# flags


def test_flag_constants_and_letters():
    assert (FIN, SYN, RST, PSH, ACK) == (1, 2, 4, 8, 16)
    assert flag_str(SYN) == "S"
    assert flag_str(SYN | ACK) == "SA"
    assert flag_str(RST | ACK) == "RA"
    assert flag_str(FIN | ACK) == "FA"
    assert flag_str(PSH | ACK) == "PA"
    assert flag_str(0x1FF) == "FSRPAUECN"
    assert flag_str(0) == ""


@pytest.mark.parametrize("flags", ["S", "SA", "A", "PA", "FA", "R", "RA", "SEC", "FSRPAUECN", ""])
def test_tcp_fields_match_scapy(decoders, flags):
    frame = bytes(eth() / IP(src="192.0.2.3", dst="198.51.100.9") / TCP(
        sport=43210, dport=8080, seq=0xFFFFFFF0, ack=12345, flags=flags, window=29200) / Raw(b"hello"))
    p = decoders.packet(raw(frame))
    assert_tcp_as_scapy(p, Ether(frame), frame)
    assert p.payload_len == 5 and p.captured == 5 and p.complete
    assert p.tunnel is None and p.checksum_ok is None


def test_capture_context_comes_from_the_raw_packet(decoders):
    frame = bytes(eth() / IP() / TCP())
    p = decoders.packet(raw(frame))
    assert (p.index, p.ts_ns, p.iface, p.iface_name, p.linktype, p.direction) == (
        7, 1_700_000_000_000_000_123, 2, "eth0", 1, None)
    # the interface is the file-wide number; its name is separate (None when the file has none)
    q = decoders.packet(raw(frame, iface_name=None, direction="out"))
    assert (q.iface, q.iface_name, q.direction) == (2, None, "out")
    # decode_frame has no capture context
    (f,) = decoders.frame(1, frame)
    assert (f.index, f.ts_ns, f.iface, f.iface_name, f.direction) == (0, 0, 0, None, None)


# --------------------------------------------------------------------------
# TCP options on SYNs


SYN_OPTIONS = {
    "linux": [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (0xDEADBEEF, 0)), ("NOP", None), ("WScale", 7)],
    "windows": [("MSS", 1440), ("NOP", None), ("WScale", 8), ("NOP", None), ("NOP", None), ("SAckOK", b"")],
    "mss-only": [("MSS", 536)],
    "none": [],
    "unknown-kinds-between": [(30, b"\x00\x81\x02\x03"), ("MSS", 1380), (34, b"cookie!!"), ("WScale", 14)],
    "end-of-list-stops": [("MSS", 1400), ("EOL", None), ("NOP", None), ("NOP", None)],
}


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("name", sorted(SYN_OPTIONS))
@pytest.mark.parametrize("flags", ["S", "SA"])
def test_syn_options_match_scapy(decoders, name, flags, version):
    l3 = IP(src=C, dst=S) if version == 4 else IPv6(src=C6, dst=S6)
    frame = bytes(eth() / l3 / TCP(sport=1, dport=2, flags=flags, options=SYN_OPTIONS[name]))
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, Ether(frame), frame)


def test_options_after_end_of_list_are_not_read(decoders):
    # Hand-made: an End of Option List, then bytes that would read as a window scale
    opts = bytes([2, 4, 0x05, 0x78, 0, 3, 3, 9])
    p = decoders.one(1, bytes(eth() / IP() / TCP(flags="S", dataofs=7) / Raw(opts)))
    assert (p.mss, p.wscale, p.payload_len) == (1400, None, 0)


def test_options_are_parsed_on_syns_only(decoders):
    opts = [("NOP", None), ("WScale", 7), ("MSS", 1400), ("SAckOK", b""), ("Timestamp", (5, 6))]
    syn = decoders.one(1, bytes(eth() / IP() / TCP(flags="S", options=opts)))
    assert (syn.mss, syn.options_mss, syn.wscale, syn.sack_ok, syn.tsval, syn.tsecr, syn.payload_len) == (
        1400, 1400, 7, True, 5, 6, 0)
    for flags in ("A", "PA", "R", "F"):
        other = decoders.one(1, bytes(eth() / IP() / TCP(flags=flags, options=opts)))
        assert (other.mss, other.wscale, other.sack_ok, other.tsval, other.tsecr) == (None,) * 5


@pytest.mark.parametrize(
    "opts,expect",
    [
        # Hand-made option bytes (Scapy will not build broken options):
        (bytes([2, 4, 0x05, 0xB4, 3, 0, 7, 0]), {"mss": 1460, "wscale": None}),  # length 0: parsing stops
        (bytes([2, 4, 0x05, 0xB4, 8, 1, 0, 0]), {"mss": 1460, "tsval": None}),  # length 1: parsing stops
        (bytes([1, 1, 1, 1, 1, 1, 2, 4]), {"mss": None}),  # MSS cut by the end of the header
        (bytes([2, 5, 0x05, 0xB4, 0, 0, 0, 0]), {"mss": None}),  # MSS with a wrong length: ignored
        (bytes([3, 4, 7, 0, 4, 3, 0, 0]), {"wscale": None, "sack_ok": None}),  # wrong lengths, skipped by length
        (bytes([1, 1, 1, 1, 1, 1, 1, 3]), {"wscale": None}),  # kind in the last byte, no length
    ],
    ids=["len0", "len1", "cut", "mss-len5", "wrong-lengths", "kind-at-end"],
)
def test_broken_syn_options_are_not_trusted(decoders, opts, expect):
    p = decoders.one(1, bytes(eth() / IP() / TCP(flags="S", dataofs=5 + len(opts) // 4) / Raw(opts)))
    assert p.kind == TCP_KIND and p.payload_len == 0
    assert {k: getattr(p, k) for k in expect} == expect


# --------------------------------------------------------------------------
# flow keys


@pytest.mark.parametrize("version", [4, 6])
def test_flow_key_is_the_same_both_ways_lower_endpoint_first(decoders, version):
    lo, hi = ("192.0.2.9", "192.0.2.10") if version == 4 else ("2001:db8::9", "2001:db8::a")  # text order differs
    ip = IP if version == 4 else IPv6
    a = decoders.one(1, bytes(eth() / ip(src=hi, dst=lo) / TCP(sport=1000, dport=80, flags="S")))
    b = decoders.one(1, bytes(eth() / ip(src=lo, dst=hi) / TCP(sport=80, dport=1000, flags="SA")))
    expected = packed(lo) + struct.pack("!H", 80) + packed(hi) + struct.pack("!H", 1000)
    assert a.key == b.key == expected
    assert (a.src_low, b.src_low) == (False, True)
    assert a.src_ep == packed(hi) + struct.pack("!H", 1000) and a.dst_ep == packed(lo) + struct.pack("!H", 80)
    assert (a.src_raw, a.dst_raw, b.src_raw, b.dst_raw) == (packed(hi), packed(lo), packed(lo), packed(hi))
    assert (a.src, a.dst) == (addr(hi), addr(lo))


def test_flow_key_orders_by_port_when_the_addresses_are_equal(decoders):
    p = decoders.one(1, bytes(eth() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=5000, dport=80)))
    q = decoders.one(1, bytes(eth() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=80, dport=5000)))
    assert p.key == q.key == packed("127.0.0.1") + struct.pack("!H", 80) + packed("127.0.0.1") + struct.pack("!H", 5000)
    assert (p.src_low, q.src_low) == (False, True)
    same = decoders.one(1, bytes(eth() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=7, dport=7)))
    assert same.src_low is True and same.src_ep == same.dst_ep


# --------------------------------------------------------------------------
# link types


INNER4 = IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=512, options=[("MSS", 1460)])
INNER6 = IPv6(src=C6, dst=S6) / TCP(sport=40001, dport=443, flags="PA", seq=7, ack=8) / Raw(b"xyz")


def _ip_view(b: bytes):
    return IP(b) if b[0] >> 4 == 4 else IPv6(b)


LINKTYPES = {
    # name: (linktype, frame, Scapy's dissection)
    "null-ipv4-host-order": (0, struct.pack("<I", 2) + bytes(INNER4), lambda f: Loopback(f)),
    "null-ipv6-host-order": (0, struct.pack("<I", 30) + bytes(INNER6), lambda f: _ip_view(f[4:])),
    "ethernet-ipv4": (1, bytes(eth() / INNER4), Ether),
    "ethernet-ipv6": (1, bytes(eth() / INNER6), Ether),
    "raw-12": (12, bytes(INNER4), _ip_view),
    "raw-14": (14, bytes(INNER6), _ip_view),
    "raw-101-ipv4": (101, bytes(INNER4), _ip_view),
    "raw-101-ipv6": (101, bytes(INNER6), _ip_view),
    "loop-ipv4-network-order": (108, struct.pack(">I", 2) + bytes(INNER4), lambda f: _ip_view(f[4:])),
    "loop-ipv6-network-order": (108, struct.pack(">I", 24) + bytes(INNER6), lambda f: _ip_view(f[4:])),
    "sll": (113, bytes(CookedLinux(pkttype=0, proto=0x0800) / INNER4), CookedLinux),
    "sll-ipv6": (113, bytes(CookedLinux(pkttype=4, proto=0x86DD) / INNER6), CookedLinux),
    "ipv4": (228, bytes(INNER4), IP),
    "ipv6": (229, bytes(INNER6), IPv6),
    "sll2": (276, bytes(CookedLinuxV2(pkttype=0, proto=0x0800) / INNER4), CookedLinuxV2),
    "sll2-ipv6": (276, bytes(CookedLinuxV2(pkttype=4, proto=0x86DD) / INNER6), CookedLinuxV2),
}


@pytest.mark.parametrize("name", sorted(LINKTYPES))
def test_every_link_type(decoders, name):
    lt, frame, view = LINKTYPES[name]
    p = decoders.one(lt, frame)
    assert_tcp_as_scapy(p, view(frame), frame)
    assert p.tunnel is None
    assert decoders.packet(raw(frame, lt)).linktype == lt


def test_every_link_type_the_decoder_claims_is_tested():
    assert {v[0] for v in LINKTYPES.values()} <= set(compiled_decoder.LINKTYPES)  # the others: test_linktypes.py
    assert {v[0] for v in LINKTYPES.values()} == {0, 1, 12, 14, 101, 108, 113,
                                                                                     228, 229, 276}


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("af", [2, 10, 24, 28, 30])
def test_bsd_loopback_both_byte_orders(decoders, order, af):
    l3 = IP(src="127.0.0.2") if af == 2 else IPv6(src="::1")
    data = struct.pack(order + "I", af) + bytes(l3 / TCP(sport=3))
    for linktype in (0, 108):
        p = decoders.packet(raw(data, linktype))
        assert p is not None and p.sport == 3 and p.family == (4 if af == 2 else 6)


def test_scapy_loopback_layer(decoders):
    frame = bytes(Loopback(type=2) / IP() / TCP(dport=4444))
    assert_tcp_as_scapy(decoders.one(0, frame), Loopback(frame), frame)


@pytest.mark.parametrize("linktype", [2, 3, 147, 162, 220, 0xFFFF])
def test_unsupported_link_types_give_one_packet_naming_the_link_type(decoders, linktype):
    frame = bytes(eth() / IP() / TCP())
    (p,) = decoders.frame(linktype, frame)
    assert (p.kind, p.proto, p.error) == (UNSUPPORTED, "unsupported-link-type", f"link type {linktype}")
    assert decoders.packet(raw(frame, linktype)) is None  # not a malformed packet: nothing to raise


def test_raw_ip_link_types_of_one_version_reject_the_other(decoders):
    (p,) = decoders.frame(229, bytes(IP() / TCP()))
    assert (p.kind, p.error) == (MALFORMED, "IPv6 frame carries IP version 4 at frame offset 0")
    with pytest.raises(MalformedPacket, match="version 4"):
        decoders.packet(raw(bytes(IP() / TCP()), 229))
    (q,) = decoders.frame(228, bytes(IPv6() / TCP()))
    assert (q.kind, q.error) == (MALFORMED, "IPv4 frame carries IP version 6 at frame offset 0")


@pytest.mark.parametrize(
    "frame,linktype",
    [
        (bytes(eth() / ARP()), 1),
        (bytes(eth() / IP() / UDP(sport=5353, dport=53) / DNS()), 1),
        (bytes(eth() / IP() / ICMP(type=8)), 1),
        (bytes(eth() / IP() / ICMP(type=5) / IP() / TCP()), 1),  # redirect: not an error the machine reads
        (bytes(eth() / IPv6() / ICMPv6EchoRequest()), 1),
        (bytes(eth() / IPv6() / ICMPv6ND_NS()), 1),
        (bytes(eth() / IPv6(nh=59)), 1),
        (bytes(eth() / PPPoED()), 1),
        (bytes(eth() / PPPoE() / PPP(proto=0xC021) / Raw(b"lcp!")), 1),
        (b"\x00" * 10, 1),  # shorter than an Ethernet header
        (bytes(eth(type=0x8100)) + b"\x00\x01", 1),  # a VLAN tag cut short
        (b"\x00" * 12, 113),  # shorter than a cooked header
        (b"\x50" + b"\x00" * 39, 101),  # IP version 5
        (struct.pack("<I", 7) + bytes(IP() / TCP()), 0),  # an address family that is not IP
    ],
    ids=["arp", "udp", "echo", "redirect", "echo6", "neighbour", "no-next-header", "pppoe-discovery", "pppoe-lcp",
         "short-ethernet", "short-vlan", "short-sll", "ip-version-5", "null-other-family"],
)
def test_frames_without_tcp_or_icmp_errors_are_other(decoders, frame, linktype):
    (p,) = decoders.frame(linktype, frame)
    assert (p.kind, p.proto, p.error, p.key) == (OTHER, "other", None, None)
    assert decoders.packet(raw(frame, linktype)) is None


@pytest.mark.parametrize("pkttype,direction", [(0, "in"), (1, "in"), (2, "in"), (3, "in"), (4, "out"), (5, None),
                                               (7, None)])
def test_linux_cooked_packet_type_gives_the_direction(decoders, pkttype, direction):
    v1 = bytes(CookedLinux(pkttype=pkttype, proto=0x0800) / INNER4)
    v2 = bytes(CookedLinuxV2(pkttype=pkttype, proto=0x0800) / INNER4)
    assert decoders.one(113, v1).direction == direction
    assert decoders.one(276, v2).direction == direction
    assert decoders.packet(raw(v1, 113)).direction == direction
    # a direction recorded by the capture (pcapng epb_flags) wins over the cooked header's
    assert decoders.packet(raw(v1, 113, direction="in")).direction == "in"
    assert decoders.packet(raw(v2, 276, direction="out")).direction == "out"


def test_vlan_tags_under_linux_cooked_v1(decoders):
    frame = bytes(CookedLinux(pkttype=0, proto=0x8100) / Dot1Q(vlan=10) / IP() / TCP(sport=7, dport=9))
    p = decoders.one(113, frame)
    assert_tcp_as_scapy(p, CookedLinux(frame), frame)
    assert p.direction == "in"


# --------------------------------------------------------------------------
# Ethernet encapsulations


def _vntag(inner) -> bytes:
    # Hand-made (Scapy has no VN-Tag): EtherType 0x8926, 4 bytes of tag, then the EtherType
    b = bytes(eth() / inner)
    return b[:12] + b"\x89\x26" + b"\x80\x05\x00\x07" + b[12:]


def _fabricpath(inner) -> bytes:
    # Hand-made (Scapy has no FabricPath): outer MACs, EtherType 0x8903, FTag/TTL, then the
    # original frame (its MACs and EtherType)
    original = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / inner
    return bytes(eth(type=0x8903)) + b"\x00\x3f" + bytes(original)


ETHERNET = {
    # name: (frame, Scapy's dissection of it, or of what follows the hand-made header)
    "vlan": (bytes(eth() / Dot1Q(vlan=5) / INNER4), Ether),
    "vlan-ipv6": (bytes(eth() / Dot1Q(vlan=5) / INNER6), Ether),
    "qinq-88a8": (bytes(eth() / Dot1AD(vlan=7) / Dot1Q(vlan=9) / INNER6), Ether),
    "qinq-8100-8100": (bytes(eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / INNER4), Ether),
    "tag-9100": (bytes(eth(type=0x9100) / Dot1Q(vlan=3) / INNER4), lambda f: Ether(f[:12] + f[16:])),
    "tag-9200": (bytes(eth(type=0x9200) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / INNER4), lambda f: Ether(f[:12] + f[16:])),
    "mpls": (bytes(eth() / MPLS(label=16, s=1) / INNER4), Ether),
    "mpls-stack-ipv6": (bytes(eth() / MPLS(label=16, s=0) / MPLS(label=17, s=0) / MPLS(label=18, s=1) / INNER6),
                        Ether),
    "mpls-multicast-8848": (bytes(eth(type=0x8848) / MPLS(label=20, s=1) / INNER4),
                            lambda f: Ether(f[:12] + b"\x08\x00" + f[18:])),
    "vlan-mpls": (bytes(eth() / Dot1Q(vlan=8) / MPLS(label=16, s=1) / INNER4), Ether),
    "pppoe": (bytes(eth() / PPPoE(sessionid=3) / PPP(proto=0x0021) / INNER4), Ether),
    "pppoe-ipv6": (bytes(eth() / PPPoE(sessionid=3) / PPP(proto=0x0057) / INNER6), Ether),
    "qinq-pppoe": (bytes(eth() / Dot1AD(vlan=7) / Dot1Q(vlan=9) / PPPoE(sessionid=3) / PPP(proto=0x0021) / INNER4),
                   Ether),
    "pbb": (bytes(eth() / Dot1AD(vlan=100) / Dot1AH(isid=0x1234) / eth() / INNER4), Ether),
    "pbb-without-b-tag": (bytes(eth(type=0x88E7) / Dot1AH(isid=5) / eth() / INNER6), Ether),
    "pbb-customer-vlan": (bytes(eth() / Dot1AD(vlan=100) / Dot1AH(isid=9) / eth() / Dot1Q(vlan=5) / INNER4), Ether),
    "vn-tag": (_vntag(INNER4), lambda f: Ether(f[:12] + f[18:])),
    "vn-tag-vlan": (_vntag(Dot1Q(vlan=4) / INNER6), lambda f: Ether(f[:12] + f[18:])),
    "fabricpath": (_fabricpath(INNER4), lambda f: Ether(f[16:])),
    "fabricpath-ipv6": (_fabricpath(INNER6), lambda f: Ether(f[16:])),
}


@pytest.mark.parametrize("name", sorted(ETHERNET))
def test_ethernet_encapsulations(decoders, name):
    frame, view = ETHERNET[name]
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, view(frame), frame)
    assert p.tunnel is None  # link-layer encapsulations are not tunnels


# --------------------------------------------------------------------------
# tunnels


OUTER = IP(src="192.0.2.100", dst="198.51.100.100")
OUTER6 = IPv6(src="2001:db8:ff::1", dst="2001:db8:ff::2")
TEREDO = IPv6(src="2001:0:4136:e378:8000:63bf:3fff:fdd2", dst="2001:db8::2") / TCP(sport=40002, dport=80, flags="S")


def _ayiya(inner, nh: int) -> bytes:
    # Hand-made (Scapy has no AYIYA): identity length 2^4 = 16, signature 5 * 4 = 20 bytes,
    # authentication method 1 and opcode 1 (forward), next header, epoch time
    return bytes([0x41, 0x52, 0x11, nh]) + b"\0\0\0\1" + b"i" * 16 + b"s" * 20 + bytes(inner)


def _teredo_origin(inner) -> bytes:
    # Hand-made (Scapy has no Teredo layer): origin indication (type 0, port, address, obfuscated)
    return b"\x00\x00\xcf\xfe\x3f\xff\xfd\xd2" + bytes(inner)


def _teredo_auth(inner) -> bytes:
    # Hand-made: authentication indicator (type 1, ID length 2, auth length 3, id, auth, nonce,
    # confirmation), then an origin indication
    return b"\x00\x01\x02\x03" + b"id" + b"au!" + b"N" * 8 + b"\x00" + _teredo_origin(inner)


def _pptp_short_protocol(inner) -> bytes:
    # Hand-made: enhanced GRE (version 1) then PPP with a one-byte protocol field and no
    # address/control bytes (both compressed)
    return bytes(GRE_PPTP(key_present=1, payload_len=len(bytes(inner)) + 1)) + b"\x21" + bytes(inner)


def _wlan_snap(inner, qos: bool = False) -> bytes:
    w = Dot11(type=2, subtype=8 if qos else 0, FCfield="to_DS", addr1="02:00:00:00:00:03",
              addr2="02:00:00:00:00:04", addr3="02:00:00:00:00:05")
    if qos:
        w = w / Dot11QoS(TID=3)
    return bytes(w / LLC() / SNAP() / inner)


TUNNELS = {
    # name: (frame, tunnel, Scapy's dissection of the frame or of what follows a hand-made header)
    "ipip-4in4": (bytes(eth() / OUTER / INNER4), "ip-in-ip", Ether),
    "ipip-6in4": (bytes(eth() / IP(src="192.0.2.100", dst="198.51.100.100", proto=41) / INNER6), "ip-in-ip", Ether),
    "ipip-4in6": (bytes(eth() / IPv6(src="2001:db8:ff::1", dst="2001:db8:ff::2", nh=4) / INNER4), "ip-in-ip", Ether),
    "ipip-6in6": (bytes(eth() / OUTER6 / INNER6), "ip-in-ip", Ether),
    "gre": (bytes(eth() / OUTER / GRE() / INNER4), "gre", Ether),
    "gre-ipv6": (bytes(eth() / OUTER / GRE(proto=0x86DD) / INNER6), "gre", Ether),
    "gre-over-ipv6": (bytes(eth() / OUTER6 / GRE() / INNER4), "gre", Ether),
    "gre-checksum-key-seq": (bytes(eth() / OUTER / GRE(chksum_present=1, key_present=1, key=5, seqnum_present=1,
                                                       sequence_number=9) / INNER6), "gre", Ether),
    "gre-transparent-ethernet": (bytes(eth() / OUTER / GRE(proto=0x6558) / eth() / INNER4), "gre", Ether),
    "gre-transparent-ethernet-vlan": (bytes(eth() / OUTER / GRE(proto=0x6558) / eth() / Dot1Q(vlan=3) / INNER6), "gre",
                                      Ether),
    "erspan-ii": (bytes(eth() / OUTER / GRE(seqnum_present=1, sequence_number=3) / ERSPAN_II(session_id=5) / eth()
                        / INNER4), "gre", Ether),
    "erspan-iii": (bytes(eth() / OUTER / GRE() / ERSPAN_III(session_id=6, o=0) / eth() / INNER6), "gre", Ether),
    "erspan-iii-platform-subheader": (bytes(eth() / OUTER / GRE() / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific(platf_id=3)
                                            / eth() / INNER4), "gre", Ether),
    "gre-pptp-ppp": (bytes(eth() / OUTER / GRE_PPTP(seqnum_present=1, sequence_number=5) / HDLC() / PPP(proto=0x21)
                           / INNER4), "gre", Ether),
    "gre-pptp-ppp-ack-ipv6": (bytes(eth() / OUTER / GRE_PPTP(acknum_present=1, ack_number=2) / PPP(proto=0x57)
                                    / INNER6), "gre", Ether),
    "gre-pptp-ppp-one-byte-protocol": (bytes(eth() / IP(src="192.0.2.100", dst="198.51.100.100", proto=47)
                                             / Raw(_pptp_short_protocol(INNER4))), "gre",
                                       lambda f: IP(f[-len(bytes(INNER4)):])),
    "gre-aruba-wlan": (bytes(eth() / OUTER / GRE(proto=0x8210) / Raw(_wlan_snap(INNER4))), "gre",
                       lambda f: Dot11(f[14 + 20 + 4:])),
    "gre-aruba-wlan-qos": (bytes(eth() / OUTER / GRE(proto=0x8400) / Raw(_wlan_snap(INNER6, qos=True))), "gre",
                           lambda f: Dot11(f[14 + 20 + 4:])),
    "gre-in-udp-4754": (bytes(eth() / OUTER / UDP(sport=50000, dport=4754) / GRE() / INNER4), "gre", Ether),
    "vxlan": (bytes(eth() / OUTER / UDP(sport=5555, dport=4789) / VXLAN(vni=42) / eth() / INNER4), "vxlan", Ether),
    "vxlan-rfc7348-flags": (bytes(eth() / OUTER / UDP(sport=5555, dport=4789) / VXLAN(flags=0x08, vni=7) / eth()
                                  / INNER6), "vxlan", Ether),  # only the I flag (Scapy sets 0x0c by default)
    "vxlan-vlan-ipv6": (bytes(eth() / OUTER6 / UDP(sport=5555, dport=4789) / VXLAN(vni=42) / eth() / Dot1Q(vlan=2)
                              / INNER6), "vxlan", Ether),
    "geneve-ethernet": (bytes(eth() / OUTER / UDP(sport=5555, dport=6081) / GENEVE(proto=0x6558, vni=3) / eth()
                              / INNER6), "geneve", Ether),
    "geneve-ipv4-with-options": (bytes(eth() / OUTER / UDP(sport=5555, dport=6081) / GENEVE(
        proto=0x0800, options=[GeneveOptions(classid=0x0102, type=0x80, length=2, data=b"optdata!")]) / INNER4),
        "geneve", Ether),
    "gtp-u": (bytes(eth() / OUTER / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=1, gtp_type=255) / INNER4), "gtp",
              Ether),
    "gtp-u-sequence-ipv6": (bytes(eth() / OUTER / UDP(sport=40000, dport=2152) / GTP_U_Header(
        teid=2, gtp_type=255, S=1, seq=77) / INNER6), "gtp", Ether),
    "gtp-u-pdu-session-extension": (bytes(eth() / OUTER / UDP(sport=2152, dport=2152) / GTP_U_Header(
        teid=3, gtp_type=255, E=1, next_ex=0x85) / GTPPDUSessionContainer(type=0, QFI=9) / INNER4), "gtp", Ether),
    "gtp-u-over-ipv6": (bytes(eth() / OUTER6 / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=4, gtp_type=255)
                              / INNER6), "gtp", Ether),
    "teredo-by-source-port": (bytes(eth() / OUTER / UDP(sport=3544, dport=40000) / TEREDO), "teredo",
                              lambda f: IPv6(f[14 + 20 + 8:])),
    "teredo-by-destination-port": (bytes(eth() / OUTER / UDP(sport=40000, dport=3544) / INNER6), "teredo",
                                   lambda f: IPv6(f[14 + 20 + 8:])),
    "teredo-origin-indication": (bytes(eth() / OUTER / UDP(sport=3544, dport=40000) / Raw(_teredo_origin(TEREDO))),
                                 "teredo", lambda f: IPv6(f[14 + 20 + 8 + 8:])),
    "teredo-authentication": (bytes(eth() / OUTER / UDP(sport=40000, dport=3544) / Raw(_teredo_auth(TEREDO))),
                              "teredo", lambda f: IPv6(f[-len(bytes(TEREDO)):])),
    "teredo-by-content-source": (bytes(eth() / OUTER / UDP(sport=61000, dport=62000) / TEREDO), "teredo",
                                 lambda f: IPv6(f[14 + 20 + 8:])),
    "teredo-by-content-destination": (bytes(eth() / OUTER / UDP(sport=61000, dport=62000) / IPv6(
        src="2001:db8::2", dst="2001:0:4136:e378:8000:63bf:3fff:fdd2") / TCP(sport=80, dport=40002, flags="SA")),
        "teredo", lambda f: IPv6(f[14 + 20 + 8:])),
    "ayiya-ipv6": (bytes(eth() / OUTER / UDP(sport=5072, dport=5072) / Raw(_ayiya(INNER6, 41))), "ayiya",
                   lambda f: IPv6(f[-len(bytes(INNER6)):])),
    "ayiya-ipv4": (bytes(eth() / OUTER / UDP(sport=40000, dport=5072) / Raw(_ayiya(INNER4, 4))), "ayiya",
                   lambda f: IP(f[-len(bytes(INNER4)):])),
    "vxlan-in-gre": (bytes(eth() / OUTER / GRE() / IP(src="203.0.113.1", dst="203.0.113.2") / UDP(sport=1, dport=4789)
                           / VXLAN(vni=1) / eth() / INNER4), "gre", Ether),
    "gtp-in-vlan": (bytes(eth() / Dot1Q(vlan=30) / OUTER / UDP(sport=2152, dport=2152)
                          / GTP_U_Header(teid=1, gtp_type=255) / INNER6), "gtp", Ether),
}


@pytest.mark.parametrize("name", sorted(TUNNELS))
def test_tunnels_are_decapsulated(decoders, name):
    frame, tunnel, view = TUNNELS[name]
    (p,) = decoders.frame(1, frame)
    s = view(frame)
    tcp = assert_tcp_as_scapy(p, s)
    assert p.tunnel == tunnel
    assert p.l4_off == frame.rindex(bytes(tcp)[:20])  # the inner TCP header's offset in the frame
    assert p.captured == p.payload_len  # the outer headers are not payload
    # and decode() picks it as the frame's packet
    assert decoders.packet(raw(frame)).key == p.key


def test_each_tunnel_kind_the_decoder_names_is_tested():
    assert {t for _f, t, _v in TUNNELS.values()} == {"ip-in-ip", "gre", "vxlan", "geneve", "gtp", "teredo", "ayiya"}
    assert set(compiled_decoder._TUNNEL_PORTS) == {4789, 6081, 2152, 3544, 5072, 4754}


def test_aruba_gre_amsdu_gives_every_subframe(decoders):
    # Hand-made A-MSDU (Scapy does not build subframes): QoS data with the A-MSDU bit, then
    # subframes of DA, SA, length and an LLC/SNAP packet, each padded to 4 bytes
    def sub(pkt) -> bytes:
        body = b"\xaa\xaa\x03\x00\x00\x00" + (b"\x08\x00" if pkt.version == 4 else b"\x86\xdd") + bytes(pkt)
        one = b"\x02" * 12 + struct.pack("!H", len(body)) + body
        return one + b"\0" * (-len(one) % 4)

    wlan = bytes([0x88, 0x01]) + b"\0\0" + b"\x01" * 18 + b"\0\0" + bytes([0x80, 0x00])
    frame = bytes(eth() / OUTER / GRE(proto=0x8240) / Raw(wlan + sub(INNER4) + sub(INNER6)))
    a, b = decoders.frame(1, frame)
    assert_tcp_as_scapy(a, IP(bytes(INNER4)))
    assert_tcp_as_scapy(b, IPv6(bytes(INNER6)))
    assert a.tunnel == b.tunnel == "gre"
    assert decoders.packet(raw(frame)).key == a.key  # decode() gives the first


def test_protected_and_non_data_wlan_frames_are_not_read(decoders):
    for fc, flags in ((0x08, 0x41), (0x80, 0x01), (0x48, 0x01)):  # protected data, beacon, null data
        w = bytes([fc, flags]) + b"\0\0" + b"\x01" * 18 + b"\0\0" + b"\xaa\xaa\x03\0\0\0\x08\x00" + bytes(INNER4)
        (p,) = decoders.frame(1, bytes(eth() / OUTER / GRE(proto=0x8200) / Raw(w)))
        assert (p.kind, p.tunnel) == (OTHER, "gre")


def test_icmp_error_inside_a_tunnel(decoders):
    err = IP(src=R, dst=C) / ICMP(type=3, code=1) / IP(src=C, dst=S) / TCP(sport=40000, dport=80, seq=5)
    p = decoders.one(1, bytes(eth() / OUTER / GRE() / err))
    assert (p.kind, p.tunnel, p.src, p.quoted.sport, p.quoted.seq) == (ICMP_KIND, "gre", R, 40000, 5)


def test_tunnels_nest_at_most_max_depth(decoders):
    assert decoders.pure.MAX_DEPTH == 6  # (a C constant in the compiled module)
    for depth, kind in ((6, TCP_KIND), (7, OTHER)):
        pkt = eth() / OUTER
        for i in range(depth - 1):
            pkt = pkt / IP(src=f"203.0.113.{i}", dst="203.0.113.200")
        (p,) = decoders.frame(1, bytes(pkt / INNER4))
        assert (p.kind, p.tunnel) == (kind, "ip-in-ip"), depth


def test_udp_on_a_tunnel_port_that_is_no_tunnel(decoders):
    # a VXLAN port without the VXLAN flag, a GTP port with a GTP echo, a Teredo port without IPv6
    for frame in (bytes(eth() / OUTER / UDP(sport=4789, dport=5000) / Raw(b"\0" * 16)),
                  bytes(eth() / OUTER / UDP(sport=2152, dport=2152) / GTP_U_Header(gtp_type=1) / Raw(b"\0" * 4)),
                  bytes(eth() / OUTER / UDP(sport=3544, dport=5000) / Raw(b"\0" * 48))):
        (p,) = decoders.frame(1, frame)
        assert p.kind == OTHER and p.error is None


def test_erspan_type_i_carries_the_frame_directly(decoders):
    frame = bytes(eth() / OUTER / GRE() / ERSPAN_I() / eth() / INNER4)
    assert Ether(frame)[GRE].seqnum_present == 0 and ERSPAN_I in Ether(frame)
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, Ether(frame), frame)


# --------------------------------------------------------------------------
# lengths: snaplen, padding, offload, IPv4 options, IPv6 extension headers


def test_payload_length_from_ip_header_when_snaplen_cut_the_payload(decoders):
    data = bytes(eth() / IP() / TCP(options=[("MSS", 1460)], flags="S") / Raw(b"z" * 1000))
    p = decoders.packet(raw(data[:64], orig_len=len(data)))  # header fits, most payload does not
    assert p.payload_len == 1000 and p.options_mss == 1460
    assert p.captured == 64 - 14 - 20 - 24 and not p.complete


def test_ethernet_padding_is_not_payload(decoders):
    data = bytes(eth() / IP() / TCP(flags="R")) + b"\0" * 6  # padded to 60 bytes
    p = decoders.packet(raw(data))
    assert p.payload_len == 0 and p.captured == 0 and p.complete


def test_tso_frame_with_ip_total_length_zero(decoders):
    data = bytearray(bytes(eth() / IP() / TCP() / Raw(b"q" * 100)))
    data[16:18] = b"\0\0"  # what the capture sees of a TSO/GSO super-packet
    p = decoders.packet(raw(bytes(data), orig_len=14 + 20 + 20 + 60000))
    assert p.payload_len == 60000 and p.captured == 100 and not p.complete
    # inside a VLAN tag the length is counted from the IP header, wherever it is
    tagged = bytearray(bytes(eth() / Dot1Q(vlan=1) / IP() / TCP() / Raw(b"q" * 100)))
    tagged[20:22] = b"\0\0"
    assert decoders.one(1, bytes(tagged), 18 + 20 + 20 + 60000).payload_len == 60000
    # without orig_len the captured frame is the whole packet
    assert decoders.one(1, bytes(data)).payload_len == 100


def test_ipv6_jumbogram(decoders):
    # RFC 2675: payload length 0 and a hop-by-hop Jumbo Payload option; captured by the snaplen
    jumbo = 70000  # everything after the IPv6 header: hop-by-hop (8) + TCP (20) + payload
    pkt = eth() / IPv6(src=C6, dst=S6, plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=jumbo)]) / TCP(
        sport=1, dport=2, flags="A") / Raw(b"j" * 200)
    data = bytes(pkt)
    assert IPv6(data[14:])[Jumbo].jumboplen == jumbo
    p = decoders.packet(raw(data, orig_len=14 + 40 + jumbo))
    assert (p.kind, p.family, p.sport, p.payload_len, p.captured) == (TCP_KIND, 6, 1, jumbo - 8 - 20, 200)
    # Linux BIG TCP: payload length 0 and no hop-by-hop header at all
    big = bytes(eth() / IPv6(src=C6, dst=S6, plen=0) / TCP(sport=1, dport=2, flags="A") / Raw(b"b" * 200))
    q = decoders.packet(raw(big, orig_len=14 + 40 + 20 + 150000))
    assert (q.payload_len, q.captured) == (150000, 200)


def test_ipv4_options_shift_the_tcp_header(decoders):
    pkt = eth() / IP(options=[IPOption_RR(routers=["203.0.113.1", "203.0.113.2"])]) / TCP(sport=1, dport=2) / Raw(b"abc")
    frame = bytes(pkt)
    assert IP(frame[14:]).ihl > 5
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, Ether(frame), frame)
    assert (p.sport, p.dport, p.payload_len) == (1, 2, 3)


@pytest.mark.parametrize(
    "exts",
    [
        [],
        [IPv6ExtHdrHopByHop()],
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::99"]), IPv6ExtHdrDestOpt()],
        [IPv6ExtHdrDestOpt(), IPv6ExtHdrDestOpt()],
    ],
    ids=["plain", "hop-by-hop", "hbh-routing-destopts", "two-destopts"],
)
def test_ipv6_extension_headers(decoders, exts):
    l3 = IPv6(src="2001:0db8:0000::1", dst=S6)
    for e in exts:
        l3 = l3 / e
    frame = bytes(eth() / l3 / TCP(sport=5000, dport=443, flags="S", seq=77) / Raw(b"12345678"))
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, Ether(frame), frame)
    assert p.src == C6  # canonical form
    assert p.payload_len == 8 and p.seq == 77


def test_ipv6_authentication_header_is_skipped(decoders):
    # Hand-made AH (next header TCP, length 4 = 24 bytes: SPI, sequence, 12-byte ICV)
    ah = bytes([6, 4, 0, 0]) + struct.pack("!II", 0x100, 1) + b"\xaa" * 12
    tcp = bytes(TCP(sport=9, dport=10, flags="S"))
    frame = bytes(eth() / IPv6(src=C6, dst=S6, nh=51, plen=len(ah) + len(tcp))) + ah + tcp
    p = decoders.one(1, frame)
    assert (p.kind, p.sport, p.dport, p.l4_off, p.payload_len) == (TCP_KIND, 9, 10, 14 + 40 + 24, 0)


# --------------------------------------------------------------------------
# fragments


@pytest.mark.parametrize(
    "frame",
    [
        bytes(eth() / IP(flags="MF", proto=6) / Raw(bytes(TCP()) + b"x" * 20)),  # first fragment
        bytes(eth() / IP(frag=10, proto=6) / Raw(b"x" * 20)),  # a later one
        bytes(eth() / IP(flags="MF", frag=3, proto=1) / Raw(b"x" * 20)),
        bytes(eth() / IPv6() / IPv6ExtHdrFragment(offset=0, m=1, id=5) / TCP() / Raw(b"x" * 16)),
        bytes(eth() / IPv6() / IPv6ExtHdrFragment(offset=100, nh=6) / Raw(b"x" * 16)),
        bytes(eth() / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=1, m=1, nh=6) / Raw(b"x" * 16)),
        bytes(eth() / OUTER / GRE() / IP(frag=2, proto=6) / Raw(b"x" * 20)),
    ],
    ids=["ipv4-first", "ipv4-later", "ipv4-middle", "ipv6-first", "ipv6-later", "ipv6-after-hop-by-hop",
         "inside-gre"],
)
def test_fragments_are_not_reassembled(decoders, frame):
    (p,) = decoders.frame(1, frame)
    assert (p.kind, p.proto, p.error) == (FRAGMENT, "fragment", None)
    assert decoders.packet(raw(frame)) is None


def test_dont_fragment_alone_is_no_fragment(decoders):
    p = decoders.one(1, bytes(eth() / IP(flags="DF") / TCP(sport=3)))
    assert (p.kind, p.sport) == (TCP_KIND, 3)


def test_ipv6_atomic_fragment_is_a_whole_packet(decoders):
    frame = bytes(eth() / IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=0, m=0, id=9) / TCP(sport=5, dport=6,
                                                                                                  flags="S"))
    p = decoders.one(1, frame)
    assert_tcp_as_scapy(p, Ether(frame), frame)


# --------------------------------------------------------------------------
# malformed frames: what is wrong, and where in the frame


def _icmp_raw(*quote: bytes) -> bytes:
    return bytes(eth() / IP(src=R, dst=C) / ICMP(type=3, code=1) / Raw(b"".join(quote)))


SYN_WITH_OPTIONS = bytes(eth() / IP() / TCP(flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7),
                                                                  ("NOP", None)]))

MALFORMED_FRAMES = {
    # name: (linktype, frame, error)
    "truncated-tcp": (1, bytes(eth() / IP() / TCP())[:40], "truncated TCP header (6 bytes captured) at frame offset 34"),
    "ihl-4": (1, bytes(eth() / IP(ihl=4) / TCP()), "IPv4 header length 16 at frame offset 14"),
    "ihl-beyond-capture": (1, bytes(eth() / IP(ihl=15) / TCP())[:14 + 40], "IPv4 header length 60 at frame offset 14"),
    "data-offset-3": (1, bytes(eth() / IP() / TCP(dataofs=3)), "TCP data offset 12 < 20 at frame offset 34"),
    "tcp-longer-than-ip": (1, bytes(eth() / IP(len=20 + 24) / TCP(options=[("MSS", 1), ("SAckOK", b""),
                                                                         ("WScale", 1)])),
                           "TCP header (32 bytes) longer than the IP payload (24) at frame offset 34"),
    "truncated-options": (1, SYN_WITH_OPTIONS[:14 + 20 + 24],
                          "truncated TCP options (24 of 32 bytes captured) at frame offset 34"),
    "ipv4-carries-6": (1, bytes(eth(type=0x0800) / IPv6() / TCP()), "IPv4 frame carries IP version 6 at frame offset 14"),
    "ipv6-carries-4": (1, bytes(eth(type=0x86DD) / IP() / TCP()), "IPv6 frame carries IP version 4 at frame offset 14"),
    "truncated-ipv4": (1, bytes(eth() / IP())[:25], "truncated IPv4 header (11 bytes) at frame offset 14"),
    "total-below-ihl": (1, bytes(eth() / IP(len=10) / TCP()), "IPv4 total length 10 < header length 20 at frame offset 14"),
    "truncated-ipv6": (1, bytes(eth() / IPv6() / TCP())[:40], "truncated IPv6 header (26 bytes) at frame offset 14"),
    "truncated-ipv6-extension": (1, bytes(eth() / IPv6(nh=0))[:14 + 40 + 1],
                                 "truncated IPv6 extension header at frame offset 54"),
    "truncated-ipv6-fragment": (1, bytes(eth() / IPv6(nh=44))[:14 + 40] + b"\x06\0\0", "truncated IPv6 fragment header "
                                "at frame offset 54"),
    "truncated-ipv6-ah": (1, bytes(eth() / IPv6(nh=51))[:14 + 40] + b"\x06",
                          "truncated IPv6 authentication header at frame offset 54"),
    "extensions-beyond-payload": (1, bytes(eth() / IPv6(plen=4) / IPv6ExtHdrHopByHop() / TCP()),
                                  "IPv6 extension headers exceed payload length 4 at frame offset 14"),
    "truncated-ipv6-tcp": (1, bytes(eth() / IPv6() / TCP())[:14 + 40 + 19],
                           "truncated TCP header (19 bytes captured) at frame offset 54"),
    "truncated-icmp": (1, bytes(eth() / IP() / ICMP(type=3, code=1))[:38],
                       "truncated ICMP header (4 bytes captured) at frame offset 34"),
    "truncated-icmpv6": (1, bytes(eth() / IPv6() / ICMPv6DestUnreach())[:14 + 40 + 5],
                         "truncated ICMP header (5 bytes captured) at frame offset 54"),
    "icmp-quotes-nothing": (1, _icmp_raw(), "ICMP error quotes no packet at frame offset 42"),
    "icmp-quotes-truncated-ipv4": (1, _icmp_raw(b"\x45\0\0"), "ICMP error quotes a truncated IPv4 header at frame offset 42"),
    "icmp-quotes-ihl-3": (1, _icmp_raw(b"\x43" + b"\0" * 19), "ICMP error quotes an IPv4 header with IHL 3 at frame offset 42"),
    "icmp-quotes-version-5": (1, _icmp_raw(b"\x55" + b"\0" * 19),
                              "ICMP error quotes a packet with IP version 5 at frame offset 42"),
    "icmpv6-quotes-truncated-ipv6": (1, bytes(eth() / IPv6() / ICMPv6DestUnreach() / Raw(bytes(IPv6())[:30])),
                                     "ICMPv6 error quotes a truncated IPv6 header at frame offset 62"),
    # the offset counts from the start of the frame, whatever comes before the broken header
    "vlan-truncated-tcp": (1, bytes(eth() / Dot1Q(vlan=2) / IP() / TCP())[:44],
                           "truncated TCP header (6 bytes captured) at frame offset 38"),
    "sll-truncated-tcp": (113, bytes(CookedLinux(proto=0x0800) / IP() / TCP())[:42],
                          "truncated TCP header (6 bytes captured) at frame offset 36"),
    "sll2-ihl-4": (276, bytes(CookedLinuxV2(proto=0x0800) / IP(ihl=4) / TCP()), "IPv4 header length 16 at frame offset 20"),
    "raw-data-offset-3": (101, bytes(IP() / TCP(dataofs=3)), "TCP data offset 12 < 20 at frame offset 20"),
    "null-truncated-ipv6": (0, struct.pack("<I", 30) + bytes(IPv6())[:20], "truncated IPv6 header (20 bytes) at frame "
                            "offset 4"),
    "gre-inner-truncated-tcp": (1, bytes(eth() / OUTER / GRE() / IP() / TCP())[:14 + 20 + 4 + 20 + 10],
                                "truncated TCP header (10 bytes captured) at frame offset 58"),
    "vxlan-inner-ihl-4": (1, bytes(eth() / OUTER / UDP(sport=1, dport=4789) / VXLAN() / eth() / IP(ihl=4) / TCP()),
                          "IPv4 header length 16 at frame offset 64"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_FRAMES))
def test_malformed_frames_say_what_and_where(decoders, name):
    linktype, frame, error = MALFORMED_FRAMES[name]
    (p,) = decoders.frame(linktype, frame)
    assert (p.kind, p.proto, p.error) == (MALFORMED, "malformed", error)
    assert p.key is None and error in repr(p)
    # decode() raises, with the same message
    with pytest.raises(MalformedPacket) as exc:
        decoders.packet(raw(frame, linktype))
    assert str(exc.value) == error
    assert isinstance(exc.value, ValueError)


def test_a_malformed_subframe_does_not_hide_a_good_one(decoders):
    # Hand-made A-MSDU of a broken IPv4 header and a good TCP segment: decode() gives the segment
    def sub(body: bytes) -> bytes:
        one = b"\x02" * 12 + struct.pack("!H", len(body) + 8) + b"\xaa\xaa\x03\0\0\0\x08\x00" + body
        return one + b"\0" * (-len(one) % 4)

    wlan = bytes([0x88, 0x01]) + b"\0\0" + b"\x01" * 18 + b"\0\0" + bytes([0x80, 0x00])
    frame = bytes(eth() / OUTER / GRE(proto=0x8240) / Raw(wlan + sub(b"\x44" + b"\0" * 19) + sub(bytes(INNER4))))
    bad, good = decoders.frame(1, frame)
    assert bad.kind == MALFORMED and good.kind == TCP_KIND
    assert decoders.packet(raw(frame)).key == good.key


def test_an_ip_length_too_short_for_the_tcp_header_is_not_a_truncated_capture(decoders):
    frame = bytes(eth() / IP(len=30) / TCP())
    assert len(frame) == 14 + 20 + 20
    (p,) = decoders.frame(1, frame)
    assert (p.kind, p.error) == (MALFORMED, "TCP header (20 bytes) longer than the IP payload (10) at frame offset 34")


@pytest.mark.parametrize("tunnel", ["geneve", "ayiya"])
def test_a_tunnel_header_cut_short_names_no_offset_beyond_the_frame(decoders, tunnel):
    if tunnel == "geneve":  # option length 63 words, then the frame ends
        frame = bytes(eth() / OUTER / UDP(sport=1, dport=6081) / GENEVE(proto=0x0800, optionlen=63) / Raw(b"\0" * 10))
    else:  # identity and signature announced, not captured
        frame = bytes(eth() / OUTER / UDP(sport=1, dport=5072) / Raw(bytes([0x41, 0x52, 0x11, 4]) + b"\0" * 20))
    for p in decoders.frame(1, frame):
        if p.error is not None:
            assert "(-" not in p.error
            assert int(p.error.rsplit(" ", 1)[1]) <= len(frame)


# --------------------------------------------------------------------------
# ICMP errors


def test_icmpv4_port_unreachable_quoting_tcp(decoders):
    quoted = IP(src=C, dst=S) / TCP(sport=40000, dport=8080, seq=123456, flags="S")
    frame = bytes(eth() / IP(src=R, dst=C) / ICMP(type=3, code=1) / quoted)
    p = decoders.packet(raw(frame))
    assert (p.kind, p.proto, p.family, p.src, p.dst, p.icmp_type, p.icmp_code, p.mtu) == (
        ICMP_KIND, "icmp", 4, R, C, 3, 1, None)
    assert p.quoted == QuotedPacket(4, 6, packed(C), packed(S), 40000, 8080, 123456)
    assert (p.quoted.proto, p.quoted.src, p.quoted.dst) == ("tcp", C, S)
    assert p.flags == 0 and p.flag_str == "" and p.sport == 0 and p.payload_len == 0
    assert p.key == packed(R) + packed(C) and p.src_low  # the error's own addresses, its sender first
    assert p.l4_off == 34
    s = Ether(frame)  # Scapy's view of the quote
    assert (s["IPerror"].src, s["IPerror"].dst) == (p.quoted.src, p.quoted.dst)
    assert (s["TCPerror"].sport, s["TCPerror"].dport, s["TCPerror"].seq) == (p.quoted.sport, p.quoted.dport,
                                                                             p.quoted.seq)


@pytest.mark.parametrize("itype,code", [(3, 0), (3, 3), (3, 13), (11, 0), (11, 1), (12, 0)])
def test_icmpv4_error_types(decoders, itype, code):
    frame = bytes(eth() / IP(src=R, dst=C) / ICMP(type=itype, code=code) / IP(src=C, dst=S) / TCP(sport=1, dport=2))
    p = decoders.one(1, frame)
    assert (p.kind, p.icmp_type, p.icmp_code, p.mtu, p.quoted.dport) == (ICMP_KIND, itype, code, None, 2)
    s = Ether(frame)
    assert (s[ICMP].type, s[ICMP].code) == (itype, code)


def test_icmpv4_frag_needed_and_short_quotes(decoders):
    inner = bytes(IP(src=C, dst=S) / TCP(sport=1, dport=2, seq=99))
    p = decoders.one(1, bytes(eth() / IP(src=R, dst=C) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(inner[:28])))
    assert (p.mtu, p.quoted.sport, p.quoted.dport, p.quoted.seq) == (1400, 1, 2, 99)  # IP + 8 bytes: seq
    q = decoders.one(1, bytes(eth() / IP() / ICMP(type=11, code=0) / Raw(inner[:24]))).quoted
    assert (q.sport, q.dport, q.seq) == (1, 2, None)  # IP + 4 bytes: ports only
    u = decoders.one(1, bytes(eth() / IP() / ICMP(type=11, code=0) / Raw(inner[:27]))).quoted
    assert (u.sport, u.dport, u.seq) == (1, 2, None)  # IP + 7 bytes: the sequence number is cut
    r = decoders.one(1, bytes(eth() / IP() / ICMP(type=11, code=0) / Raw(inner[:22]))).quoted
    assert (r.src, r.dst, r.proto, r.sport, r.dport, r.seq) == (C, S, "tcp", None, None, None)  # IP + 2 bytes
    t = decoders.one(1, bytes(eth() / IP() / ICMP(type=3, code=1) / Raw(inner[:20]))).quoted
    assert (t.ip_proto, t.sport, t.seq) == (6, None, None)  # the IP header alone


@pytest.mark.parametrize(
    "inner,proto,ports",
    [
        (IP(src=C, dst=S) / UDP(sport=5353, dport=53), "udp", (5353, 53)),
        (IP(src=C, dst=S) / ICMP(type=8), "icmp", (None, None)),
        (IP(src=C, dst=S, proto=132) / Raw(struct.pack("!HHI", 7, 9, 0)), "sctp", (7, 9)),
        (IP(src=C, dst=S, proto=99) / Raw(b"\0" * 8), "ip-99", (None, None)),
        (IP(src=C, dst=S, frag=5, proto=6) / Raw(b"\0" * 8), "tcp", (None, None)),  # not the first fragment
        (IP(src=C, dst=S, options=[IPOption_RR(routers=["203.0.113.1"])]) / TCP(sport=3, dport=4, seq=5), "tcp",
         (3, 4)),
    ],
    ids=["udp", "icmp", "sctp", "other-protocol", "later-fragment", "ip-options"],
)
def test_icmpv4_quotes_of_other_packets(decoders, inner, proto, ports):
    p = decoders.one(1, bytes(eth() / IP(src=R, dst=C) / ICMP(type=3, code=3) / inner))
    q = p.quoted
    seq = 5 if TCP in inner else None  # the sequence number of TCP quotes only
    assert (q.proto, q.src, q.dst, (q.sport, q.dport), q.seq) == (proto, C, S, ports, seq)


@pytest.mark.parametrize(
    "layer,itype,code,mtu",
    [
        (ICMPv6DestUnreach(code=4), 1, 4, None),
        (ICMPv6PacketTooBig(mtu=1280), 2, 0, 1280),
        (ICMPv6TimeExceeded(code=1), 3, 1, None),
        (ICMPv6ParamProblem(code=1, ptr=6), 4, 1, None),
    ],
)
def test_icmpv6_errors_quoting_tcp(decoders, layer, itype, code, mtu):
    quoted = IPv6(src=C6, dst=S6) / IPv6ExtHdrDestOpt() / TCP(sport=40000, dport=8080, seq=42)
    frame = bytes(eth() / IPv6(src="2001:db8::fe", dst=C6) / layer / quoted)
    p = decoders.packet(raw(frame))
    assert (p.proto, p.family, p.icmp_type, p.icmp_code, p.mtu, p.src, p.dst) == (
        "icmp", 6, itype, code, mtu, "2001:db8::fe", C6)
    assert p.quoted == QuotedPacket(6, 6, packed(C6), packed(S6), 40000, 8080, 42)
    assert p.key == packed("2001:db8::fe") + packed(C6)
    s = Ether(frame)
    assert s["TCPerror"].seq == p.quoted.seq and addr(s["IPerror6"].dst) == p.quoted.dst


def test_icmpv6_short_quotes(decoders):
    inner = bytes(IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, seq=3))
    for n, expect in ((48, (1, 2, 3)), (47, (1, 2, None)), (44, (1, 2, None)), (43, (None, None, None)),
                      (40, (None, None, None))):
        q = decoders.one(1, bytes(eth() / IPv6() / ICMPv6DestUnreach() / Raw(inner[:n]))).quoted
        assert (q.sport, q.dport, q.seq) == expect, n
    # a quoted extension header cut short leaves the ports unknown
    cut = bytes(IPv6(src=C6, dst=S6) / IPv6ExtHdrDestOpt() / TCP())[:41]
    q = decoders.one(1, bytes(eth() / IPv6() / ICMPv6DestUnreach() / Raw(cut))).quoted
    assert (q.src, q.sport, q.dport) == (C6, None, None)
    # a quoted later fragment has no ports either
    frag = bytes(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=8, nh=6) / Raw(b"\0" * 8))
    assert decoders.one(1, bytes(eth() / IPv6() / ICMPv6TimeExceeded() / Raw(frag))).quoted.sport is None


def test_quoted_packet_value_semantics():
    a = QuotedPacket(4, 17, packed(C), packed(S), 1, 2, None)
    assert a == QuotedPacket(4, 17, packed(C), packed(S), 1, 2, None) and hash(a) == hash(
        QuotedPacket(4, 17, packed(C), packed(S), 1, 2, None))
    assert a != QuotedPacket(4, 17, packed(C), packed(S), 1, 3, None)
    assert a.proto == "udp" and QuotedPacket(6, 58, packed(C6), packed(S6), None, None, None).proto == "icmpv6"
    assert repr(a) == ("QuotedPacket(family=4, src='192.0.2.1', dst='198.51.100.2', proto='udp', sport=1, dport=2, "
                       "seq=None)")


# --------------------------------------------------------------------------
# checksums


def test_checksums_are_checked_only_when_asked(decoders):
    good = IP(src=C, dst=S) / TCP(sport=1, dport=2, flags="S")
    frame = bytes(eth() / good)
    assert decoders.one(1, frame).checksum_ok is None
    assert decoders.one(1, frame, checksums=True).checksum_ok is True
    bad_tcp = bytearray(frame)
    bad_tcp[14 + 20 + 16] ^= 0xFF
    assert decoders.one(1, bytes(bad_tcp), checksums=True).checksum_ok is False
    assert decoders.one(1, bytes(bad_tcp)).kind == TCP_KIND  # offloaded checksums are the norm
    bad_ip = bytearray(frame)
    bad_ip[14 + 10] ^= 0xFF
    (p,) = decoders.frame(1, bytes(bad_ip), checksums=True)
    assert (p.kind, p.proto) == (BADSUM, "bad-checksum")
    assert decoders.one(1, bytes(bad_ip)).kind == TCP_KIND
    six = bytes(eth() / IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2) / Raw(b"abc"))
    assert decoders.one(1, six, checksums=True).checksum_ok is True
    # a payload cut by the snaplen cannot be checked
    long = bytes(eth() / good / Raw(b"x" * 100))
    assert decoders.one(1, long[:60], len(long), checksums=True).checksum_ok is None


def test_internet_checksum():
    # RFC 1071 section 3's example: the words sum to 0x2ddf0, folded 0xddf2, complemented 0x220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"") == 0xFFFF
    # An odd length is padded with a zero byte; a message holding its own checksum sums to 0.
    assert internet_checksum(b"\x12\x34\x56") == internet_checksum(b"\x12\x34\x56\x00") == ~0x6834 & 0xFFFF
    header = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP())[:20]
    assert internet_checksum(header) == 0


# --------------------------------------------------------------------------
# the Decoder object: frames where they lie in a buffer


def test_decoder_reads_frames_where_they_lie_in_a_buffer(pure_decoder):
    frames = [(1, bytes(eth() / INNER4)), (113, LINKTYPES["sll-ipv6"][1]),
              (1, MALFORMED_FRAMES["vlan-truncated-tcp"][1]), (1, TUNNELS["vxlan"][0]), (147, b"x")]
    buf = bytearray(b"junk")
    spans = []
    for lt, f in frames:
        spans.append((lt, len(buf), len(f)))
        buf += f + b"\xee" * 3
    for mod in (compiled_decoder, pure_decoder):
        dec = mod.Decoder()
        for (lt, off, n), (_lt, f) in zip(spans, frames):
            count = dec.frame(buf, off, n, n, lt)
            assert count == len(dec.out) >= 1
            got = [fields(p) for p in dec.out]
            assert got == [fields(p) for p in mod.decode_frame(lt, f)]  # offsets relative to the frame
        assert dec.frame(buf, 0, 4, 4, 1) == 1 and dec.out[0].kind == OTHER  # the list is reused, cleared
        for off, n in ((-1, 4), (0, len(buf) + 1), (len(buf) - 2, 3), (0, -1)):
            with pytest.raises(ValueError, match="outside its buffer"):
                dec.frame(buf, off, n, n, 1)


def test_flow_keys_are_right_when_flows_are_alike():
    """The compiled decoder hands consecutive packets of one flow the same key object: with 20,000
    flows that differ in one address or in one port only (IPv4 and IPv6), one after the other and
    repeated, every key is still its own flow's, in any order."""
    rnd = random.Random(7)
    pool = [bytes([192, 0, 2, i]) for i in (1, 2, 130)] + [bytes.fromhex("20010db8" + "00" * 11) + bytes([i]) for i in (1, 2, 3)]
    few = [80, 443, 256, 1]
    flows = set()  # three families of siblings: flows that differ only in the server port, only in
    # the client port, or only in one byte of an address
    while len(flows) < 20_000:
        a, b = rnd.sample(pool[:3] if rnd.random() < 0.5 else pool[3:], 2)
        family = len(flows) % 3
        if family == 0:
            flows.add((a, b, rnd.choice(few), rnd.randrange(1, 65536)))
        elif family == 1:
            flows.add((a, b, rnd.randrange(1, 65536), rnd.choice(few)))
        else:
            c = bytearray(b)
            c[rnd.randrange(len(c))] = rnd.randrange(256)
            flows.add((a, bytes(c), rnd.choice(few), rnd.choice(few)))
    # one Scapy frame per family, its addresses and ports patched (checksums are not checked)
    t4, t6 = bytes(eth() / IP(src=C, dst=S) / TCP()), bytes(eth() / IPv6(src=C6, dst=S6) / TCP())
    frames = []
    for a, b, sp, dp in flows:
        f = bytearray(t6 if len(a) == 16 else t4)
        at, tcp = (22, 54) if len(a) == 16 else (26, 34)
        f[at:at + 2 * len(a)] = a + b
        f[tcp:tcp + 4] = struct.pack("!HH", sp, dp)
        lo, hi = sorted([(a, sp), (b, dp)])
        frames.append((bytes(f), lo[0] + lo[1].to_bytes(2, "big") + hi[0] + hi[1].to_bytes(2, "big")))
    dec = compiled_decoder.Decoder()
    twice = [f for f in frames for _ in range(2)]  # (each flow's key is reused by its second packet)
    for order in (frames, frames[::-1], rnd.sample(frames, len(frames)), twice):
        for f, key in order:
            dec.frame(f, 0, len(f), len(f), 1)
            assert dec.out[0].key == key


def test_one_decoder_carries_nothing_from_frame_to_frame(pure_decoder):
    """A Decoder keeps state between frames (its packet list, the last flow key): every
    frame of a varied sequence (SYNs with every option set, ICMP errors, tunnels, VLANs, link
    types, broken frames), decoded by one Decoder in both orders, gives the fields a fresh decode
    gives; a packet held elsewhere keeps its own."""
    frames = [(1, bytes(eth() / IP(src=C, dst=S) / TCP(flags="S", options=o))) for o in SYN_OPTIONS.values()]
    frames += [(1, f) for f, *_ in ETHERNET.values()] + [(1, f) for f, *_ in TUNNELS.values()]
    frames += [(lt, f) for lt, f, _ in LINKTYPES.values()] + [(lt, f) for lt, f, _ in MALFORMED_FRAMES.values()]
    frames += [(1, bytes(eth() / IP(src=R, dst=C) / ICMP(type=3, code=4, nexthopmtu=1400) / IP(src=C, dst=S)
                         / TCP(sport=1, dport=2, seq=77))), (147, b"")]
    fresh = {i: [fields(p) for p in compiled_decoder.decode_frame(lt, f)] for i, (lt, f) in enumerate(frames)}
    for mod in (compiled_decoder, pure_decoder):
        dec = mod.Decoder()
        for order in (range(len(frames)), reversed(range(len(frames)))):
            for i in order:
                lt, f = frames[i]
                dec.frame(f, 0, len(f), len(f), lt)
                assert [fields(p) for p in dec.out] == fresh[i], (mod.__name__, i)
    held = compiled_decoder.Decoder()
    f = frames[0][1]
    held.frame(f, 0, len(f), len(f), 1)
    kept = held.out[0]  # held elsewhere: not refilled
    held.frame(frames[1][1], 0, len(frames[1][1]), len(frames[1][1]), 1)
    assert held.out[0] is not kept and fields(kept) == fresh[0][0]


def test_address_cache_stays_correct_when_cleared(decoders, monkeypatch):
    monkeypatch.setattr(compiled_decoder, "_addr_cache", {})
    monkeypatch.setattr(decoders.pure, "_addr_cache", {})
    for i in range(3):
        p = decoders.packet(raw(bytes(eth() / IP(src=f"192.0.2.{i}") / TCP())))
        assert p.src == f"192.0.2.{i}"
    assert compiled_decoder.address_text(packed(C6)) == C6


def _address_samples():
    """Packed IPv6 addresses rich in zero groups (runs of every length and place, ties, the
    IPv4-compatible and -mapped forms, groups of 1-4 hex digits) and random IPv4 ones."""
    rnd = random.Random(5952)
    fixed = [bytes(16), bytes(15) + b"\1", b"\1" + bytes(15), bytes(10) + b"\xff\xff" + bytes(4),
             bytes(12) + b"\1\2\3\4", bytes(10) + b"\xff\xff\xc0\x00\x02\x01", bytes(10) + b"\xff\xfe\1\2\3\4",
             bytes(12) + b"\1\0\0\0", bytes(14) + b"\0\2", packed(C6), bytes(4), b"\xff" * 4, b"\xff" * 16]
    six = [b"".join(rnd.choice([0, 0, 0, 1, 0xf, 0xab, 0xfff, 0xffff, rnd.randrange(65536)]).to_bytes(2, "big")
                    for _ in range(8)) for _ in range(30000)]
    four = [bytes(rnd.choice([0, 1, 9, 10, 99, 100, 255, rnd.randrange(256)]) for _ in range(4)) for _ in range(5000)]
    return fixed + six + four


def test_address_text_is_what_inet_ntop_writes(pure_decoder, monkeypatch):
    """address_text (and the JSON writer, through format_address) formats addresses by hand for
    speed; it must give glibc's inet_ntop text for every address, in both engines."""
    samples = _address_samples()
    for mod in (compiled_decoder, pure_decoder):
        monkeypatch.setattr(mod, "_addr_cache", {})
        for b in samples:
            want = socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)
            assert mod.address_text(b) == want, (mod.__name__, b.hex())
        with pytest.raises(ValueError, match="4 or 16 bytes"):
            mod.address_text(b"\1\2\3")


def test_packet_repr(decoders):
    p = decoders.packet(raw(bytes(eth() / IP(src=C, dst=S) / TCP(sport=1, dport=2, flags="SA", seq=5, ack=6))))
    assert repr(p) == f"<Packet #7 tcp {C}:1 > {S}:2 SA seq=5 ack=6 len=0>"
    (u,) = decoders.frame(147, b"")
    assert repr(u) == "<Packet #0 unsupported-link-type: link type 147>"


# --------------------------------------------------------------------------
# real captures (Zeek's test traces)


TUNNELLED = {
    "tunnels__ayiya3.pcap": "ayiya",
    "tunnels__gre-aruba-amsdu.pcap": "gre",
    "tunnels__gre-sample.pcap": "gre",
    "tunnels__gtp__gtp6_gtp_0x32.pcap": "gtp",
    "tunnels__teredo_bubble_with_payload.pcap": "teredo",
    "tunnels__vxlan-encapsulated-http.pcap": "vxlan",
}


def _zeek_connections() -> dict:
    out: dict = {}
    path = ZEEK / "expected.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        e = json.loads(line)
        ends = sorted([(addr(e["orig_h"]), e["orig_p"]), (addr(e["resp_h"]), e["resp_p"])])
        out.setdefault(e["trace"], set()).add(tuple(ends))
    return out


def test_zeek_traces_decode_to_zeeks_connections(decoders):
    """Every frame of every trace, in both engines: nothing malformed, the TCP flows are exactly the
    connections Zeek reports, and the tunnelled ones (which the old decoder skipped) are found
    inside their tunnels."""
    expected = _zeek_connections()
    traces = zeek_traces()
    assert {Path(t["trace"]).name for t in traces} >= set(TUNNELLED)
    for t in traces:
        name = Path(t["trace"]).name
        flows, tunnels = set(), set()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for r in read_packets(ZEEK / t["trace"]):
                for p in decoders.frame(r.linktype, r.data, r.orig_len):
                    assert p.kind not in (MALFORMED, UNSUPPORTED), (name, r.index, p.error)
                    if p.kind == TCP_KIND:
                        flows.add(tuple(sorted([(p.src, p.sport), (p.dst, p.dport)])))
                        tunnels.add(p.tunnel)
        assert flows == expected[t["trace"]], name
        assert tunnels == {TUNNELLED.get(name)}, name


@pytest.mark.parametrize("name", ["ftp__ipv6.pcap", "tls__irc-starttls.pcap", "pop3__pop3.pcap", "irc-dcc-send.pcapng",
                                  "pppoe-over-qinq.pcap", "tunnels__vxlan-encapsulated-http.pcap",
                                  "tunnels__gre-sample.pcap", "tunnels__gtp__gtp6_gtp_0x32.pcap"])
def test_zeek_trace_fields_match_scapy(decoders, name):
    path = ZEEK / "traces" / name
    ours = [decoders.packet(r) for r in read_packets(path)]
    theirs = rdpcap(str(path))
    assert len(ours) == len(theirs)
    checked = 0
    for p, s in zip(ours, theirs):
        tcp = innermost(s, TCP)
        if tcp is None:
            assert p is None or p.kind == ICMP_KIND
            continue
        assert p is not None and p.kind == TCP_KIND
        assert_tcp_as_scapy(p, s)
        checked += 1
    assert checked > 10
