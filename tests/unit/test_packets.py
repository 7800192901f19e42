"""Decoding frames into Packets, cross-checked against Scapy's dissection."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
import warnings
from pathlib import Path

import pytest
from scapy.all import (
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Loopback,
    Raw,
    rdpcap,
)

from verifier.wire import decoder as packets
from verifier.wire import (ACK, FIN, PSH, RST, SYN, MalformedPacket, Packet, QuotedPacket, decode, flag_str,
                              internet_checksum)
from verifier.pcap import RawPacket, read_packets

from .crafted import C6, S6, ZEEK, eth, needs_zeek, zeek_traces


def raw(data: bytes, linktype: int = 1, *, direction: str | None = None, orig_len: int | None = None,
        iface_name: str | None = "eth0") -> RawPacket:
    return RawPacket(7, 1_700_000_000_000_000_123, 2, iface_name, linktype, data,
                     len(data) if orig_len is None else orig_len, direction)


def cross_check(pkt, linktype: int = 1) -> Packet:
    """Decode `pkt` and compare every TCP field with Scapy's view of the same bytes."""
    data = bytes(pkt)
    p = decode(raw(data, linktype))
    assert p is not None and p.proto == "tcp"
    s = pkt.__class__(data)
    ip = s[IP] if IP in s else s[IPv6]
    tcp = s[TCP]
    assert p.family == (4 if IP in s else 6)
    assert p.src == str(ipaddress.ip_address(ip.src))
    assert p.dst == str(ipaddress.ip_address(ip.dst))
    assert (p.sport, p.dport, p.seq, p.ack, p.window) == (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.window)
    assert p.flags == int(tcp.flags)
    assert p.flag_str == str(tcp.flags)
    assert p.payload_len == len(bytes(tcp.payload)) - (len(bytes(s[Raw].payload)) if Raw in s else 0)
    return p


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
def test_tcp_fields_match_scapy(flags):
    pkt = eth() / IP(src="192.0.2.3", dst="198.51.100.9") / TCP(
        sport=43210, dport=8080, seq=0xFFFFFFF0, ack=12345, flags=flags, window=29200
    ) / Raw(b"hello")
    p = cross_check(pkt)
    assert p.payload_len == 5
    assert (p.index, p.ts_ns, p.iface, p.direction) == (7, 1_700_000_000_000_000_123, "eth0", None)


def test_mss_only_parsed_on_syn():
    opts = [("NOP", None), ("WScale", 7), ("MSS", 1400), ("SAckOK", b"")]
    syn = decode(raw(bytes(eth() / IP() / TCP(flags="S", options=opts))))
    assert syn.options_mss == 1400 and syn.payload_len == 0
    ack = decode(raw(bytes(eth() / IP() / TCP(flags="A", options=opts))))
    assert ack.options_mss is None


def test_decoder_builds_the_same_object_as_the_constructor():
    p = decode(raw(bytes(eth() / IP(src="192.0.2.4", dst="198.51.100.8") / TCP(flags="PA") / Raw(b"xy"))))
    kw = {f.name: getattr(p, f.name) for f in dataclasses.fields(Packet)}
    assert p == Packet(**kw)
    assert repr(p) == repr(Packet(**kw))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seq = 1  # type: ignore[misc]


# --------------------------------------------------------------------------
# link layers and IP variants


def test_ipv4_options_shift_the_tcp_header():
    pkt = eth() / IP(options=[IPOption_RR(routers=["203.0.113.1", "203.0.113.2"])]) / TCP(sport=1, dport=2) / Raw(b"abc")
    assert IP(bytes(pkt)[14:]).ihl > 5
    p = cross_check(pkt)
    assert (p.sport, p.dport, p.payload_len) == (1, 2, 3)


@pytest.mark.parametrize(
    "exts",
    [
        [],
        [IPv6ExtHdrHopByHop()],
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::99"]), IPv6ExtHdrDestOpt()],
        [IPv6ExtHdrFragment(offset=0, m=1, id=5)],
    ],
    ids=["plain", "hop-by-hop", "hbh-routing-destopts", "first-fragment"],
)
def test_ipv6_extension_headers(exts):
    l3 = IPv6(src="2001:0db8:0000::1", dst=S6)
    for e in exts:
        l3 = l3 / e
    pkt = eth() / l3 / TCP(sport=5000, dport=443, flags="S", seq=77) / Raw(b"12345678")
    p = cross_check(pkt)
    assert p.src == C6  # canonical form
    assert p.payload_len == 8 and p.seq == 77


def test_ipv6_later_fragment_is_not_tcp():
    pkt = eth() / IPv6() / IPv6ExtHdrFragment(offset=100, nh=6) / Raw(b"x" * 16)
    assert decode(raw(bytes(pkt))) is None


def test_ipv4_later_fragment_is_not_tcp():
    pkt = eth() / IP(frag=10, proto=6) / Raw(b"x" * 20)
    assert decode(raw(bytes(pkt))) is None


@pytest.mark.parametrize("tags", [[Dot1Q(vlan=10)], [Dot1AD(vlan=100), Dot1Q(vlan=10)], [Dot1Q(vlan=1), Dot1Q(vlan=2)]])
def test_vlan_tags(tags):
    pkt = eth()
    for t in tags:
        pkt = pkt / t
    cross_check(pkt / IP() / TCP(sport=7, dport=9))


def test_vlan_tags_under_linux_cooked_v1():
    p = cross_check(CookedLinux(pkttype=0, proto=0x8100) / Dot1Q(vlan=10) / IP() / TCP(sport=7, dport=9), 113)
    assert p.direction == "in"


def test_linux_cooked_v1_and_v2_give_direction():
    out = decode(raw(bytes(CookedLinux(pkttype=4) / IP() / TCP()), 113))
    assert out.direction == "out"
    inbound = decode(raw(bytes(CookedLinux(pkttype=0) / IPv6() / TCP()), 113))
    assert inbound.direction == "in" and inbound.family == 6
    v2 = CookedLinuxV2(pkttype=4, proto=0x0800) / IP(src="203.0.113.9") / TCP(sport=99)
    p = decode(raw(bytes(v2), 276))
    assert (p.src, p.sport, p.direction) == ("203.0.113.9", 99, "out")
    # a direction recorded by the capture (pcapng epb_flags) wins
    assert decode(raw(bytes(CookedLinux(pkttype=4) / IP() / TCP()), 113, direction="in")).direction == "in"


@pytest.mark.parametrize("linktype", [101, 12, 14, 228])
def test_raw_ipv4(linktype):
    p = cross_check(IP(src="192.0.2.1") / TCP(sport=10), linktype)
    assert p.src == "192.0.2.1"


@pytest.mark.parametrize("linktype", [101, 229])
def test_raw_ipv6(linktype):
    p = cross_check(IPv6(src=C6) / TCP(sport=11), linktype)
    assert p.family == 6


def test_raw_ipv6_linktype_with_ipv4_inside_is_malformed():
    with pytest.raises(MalformedPacket, match="version 4"):
        decode(raw(bytes(IP() / TCP()), 229))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("af", [2, 10, 24, 28, 30])
def test_bsd_loopback_both_byte_orders(order, af):
    l3 = IP(src="127.0.0.2") if af == 2 else IPv6(src="::1")
    data = struct.pack(order + "I", af) + bytes(l3 / TCP(sport=3))
    for linktype in (0, 108):
        p = decode(raw(data, linktype))
        assert p is not None and p.sport == 3 and p.family == (4 if af == 2 else 6)


def test_scapy_loopback_layer():
    cross_check(Loopback(type=2) / IP() / TCP(dport=4444), 0)


def test_unknown_linktype_and_non_ip_are_skipped():
    assert decode(raw(bytes(eth() / IP() / TCP()), 147)) is None
    assert decode(raw(bytes(eth() / ARP()))) is None
    assert decode(raw(bytes(eth() / IP() / UDP(dport=53)))) is None
    assert decode(raw(bytes(eth() / IP() / ICMP(type=8)))) is None
    assert decode(raw(bytes(eth() / IPv6() / ICMPv6EchoRequest()))) is None
    assert decode(raw(b"\x00" * 10)) is None


def test_interface_id_used_when_no_name():
    p = decode(raw(bytes(eth() / IP() / TCP()), iface_name=None))
    assert p.iface == "2"


# --------------------------------------------------------------------------
# lengths: snaplen, padding, offload


def test_payload_length_from_ip_header_when_snaplen_cut_the_payload():
    data = bytes(eth() / IP() / TCP(options=[("MSS", 1460)], flags="S") / Raw(b"z" * 1000))
    p = decode(raw(data[:64], orig_len=len(data)))  # header fits, most payload does not
    assert p.payload_len == 1000 and p.options_mss == 1460


def test_ethernet_padding_is_not_payload():
    data = bytes(eth() / IP() / TCP(flags="R")) + b"\0" * 6  # padded to 60 bytes
    assert decode(raw(data)).payload_len == 0


def test_gso_packet_with_zero_total_length():
    data = bytearray(bytes(eth() / IP() / TCP() / Raw(b"q" * 100)))
    data[16:18] = b"\0\0"
    p = decode(raw(bytes(data), orig_len=14 + 20 + 20 + 60000))
    assert p.payload_len == 60000


# --------------------------------------------------------------------------
# malformed


@pytest.mark.parametrize(
    "data,reason",
    [
        (bytes(eth() / IP() / TCP())[:40], "truncated TCP header"),
        (bytes(eth() / IP(ihl=4) / TCP()), "IPv4 header length 16"),
        (bytes(eth() / IP() / TCP(dataofs=3)), "data offset 12"),
        (bytes(eth() / IP(len=30) / TCP()), "longer than the IP payload"),
        (bytes(eth(type=0x0800) / IPv6() / TCP()), "IP version 6"),
        (bytes(eth() / IP())[:25], "truncated IPv4 header"),
        (bytes(eth() / IPv6() / TCP())[:40], "truncated IPv6 header"),
        (bytes(eth() / IP() / ICMP(type=3, code=1))[:38], "truncated ICMP header"),
        (bytes(eth() / IP() / ICMP(type=3, code=1) / Raw(b"\x45\0\0")), "truncated IPv4 header"),
    ],
)
def test_malformed_packets_raise(data, reason):
    with pytest.raises(MalformedPacket, match=reason):
        decode(raw(data))


# --------------------------------------------------------------------------
# ICMP errors


def test_icmpv4_port_unreachable_quoting_tcp():
    quoted = IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=40000, dport=8080, seq=123456, flags="S")
    pkt = eth() / IP(src="192.0.2.254", dst="192.0.2.1") / ICMP(type=3, code=1) / quoted
    p = decode(raw(bytes(pkt)))
    assert (p.proto, p.family, p.src, p.dst, p.icmp_type, p.icmp_code, p.mtu) == (
        "icmp", 4, "192.0.2.254", "192.0.2.1", 3, 1, None,
    )
    assert p.quoted == QuotedPacket(4, "192.0.2.1", "198.51.100.2", "tcp", 40000, 8080, 123456)
    assert p.flags == 0 and p.flag_str == "" and p.sport is None
    s = Ether(bytes(pkt))
    assert (s["TCPerror"].sport, s["TCPerror"].seq) == (p.quoted.sport, p.quoted.seq)


def test_icmpv4_frag_needed_and_short_quote():
    inner = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=1, dport=2, seq=99))
    pkt = eth() / IP() / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(inner[:28])  # IP + 8 bytes
    p = decode(raw(bytes(pkt)))
    assert p.mtu == 1400 and p.quoted.seq == 99
    short = eth() / IP() / ICMP(type=11, code=0) / Raw(inner[:24])  # IP + 4 bytes
    q = decode(raw(bytes(short))).quoted
    assert (q.sport, q.dport, q.seq) == (1, 2, None)


def test_icmpv4_quoting_udp():
    pkt = eth() / IP() / ICMP(type=3, code=3) / IP(src="192.0.2.1") / UDP(sport=5353, dport=53)
    q = decode(raw(bytes(pkt))).quoted
    assert (q.proto, q.sport, q.dport, q.seq) == ("udp", 5353, 53, None)


@pytest.mark.parametrize(
    "layer,itype,mtu",
    [(ICMPv6DestUnreach(code=4), 1, None), (ICMPv6PacketTooBig(mtu=1280), 2, 1280), (ICMPv6TimeExceeded(), 3, None)],
)
def test_icmpv6_errors_quoting_tcp(layer, itype, mtu):
    quoted = IPv6(src=C6, dst=S6) / IPv6ExtHdrDestOpt() / TCP(sport=40000, dport=8080, seq=42)
    pkt = eth() / IPv6(src="2001:db8::fe", dst=C6) / layer / quoted
    p = decode(raw(bytes(pkt)))
    assert (p.proto, p.family, p.icmp_type, p.mtu, p.src) == ("icmp", 6, itype, mtu, "2001:db8::fe")
    assert p.quoted == QuotedPacket(6, C6, S6, "tcp", 40000, 8080, 42)


def test_address_cache_stays_correct_when_cleared(monkeypatch):
    monkeypatch.setattr(packets, "_addr_cache", {})
    for i in range(3):
        p = decode(raw(bytes(eth() / IP(src=f"192.0.2.{i}") / TCP())))
        assert p.src == f"192.0.2.{i}"


def test_internet_checksum():
    # RFC 1071 section 3's example: the words sum to 0x2ddf0, folded 0xddf2, complemented 0x220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"") == 0xFFFF
    # An odd length is padded with a zero byte; a message holding its own checksum sums to 0.
    assert internet_checksum(b"\x12\x34\x56") == internet_checksum(b"\x12\x34\x56\x00") == ~0x6834 & 0xFFFF
    header = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP())[:20]
    assert internet_checksum(header) == 0


# --------------------------------------------------------------------------
# real captures


# TCP in these is wrapped in something the decoder deliberately does not
# unwrap (tunnels, FabricPath, PPPoE): no TCP is expected at the top level.
NOT_DIRECT_TCP = {
    "pppoe-over-qinq.pcap": "TCP inside PPPoE",
    "tunnels__ayiya3.pcap": "tunnel",
    "tunnels__gre-aruba-amsdu.pcap": "tunnel",
    "tunnels__gre-sample.pcap": "tunnel",
    "tunnels__gtp__gtp6_gtp_0x32.pcap": "tunnel",
    "tunnels__teredo_bubble_with_payload.pcap": "tunnel",
    "tunnels__vxlan-encapsulated-http.pcap": "tunnel",
}


@needs_zeek
def test_zeek_traces_decode_tcp():
    for t in zeek_traces():
        name = Path(t["trace"]).name
        tcp = malformed = 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for r in read_packets(ZEEK / t["trace"]):
                try:
                    p = decode(r)
                except MalformedPacket:
                    malformed += 1
                    continue
                tcp += p is not None and p.proto == "tcp"
        assert malformed == 0, name
        if name in NOT_DIRECT_TCP:
            assert tcp == 0, name
        else:
            assert tcp > 0, name


@needs_zeek
@pytest.mark.parametrize("name", ["ftp__ipv6.pcap", "tls__irc-starttls.pcap", "pop3__pop3.pcap", "irc-dcc-send.pcapng"])
def test_zeek_trace_fields_match_scapy(name):
    path = ZEEK / "traces" / name
    ours = [decode(r) for r in read_packets(path)]
    theirs = rdpcap(str(path))
    assert len(ours) == len(theirs)
    checked = 0
    for p, s in zip(ours, theirs):
        has_tcp = TCP in s and "IPerror" not in s and "IPerror6" not in s
        assert (p is not None and p.proto == "tcp") == has_tcp
        if has_tcp:
            ip = s[IP] if IP in s else s[IPv6]
            assert (p.src, p.dst) == (str(ipaddress.ip_address(ip.src)), str(ipaddress.ip_address(ip.dst)))
            assert (p.sport, p.dport, p.seq, p.ack, p.flags) == (
                s[TCP].sport, s[TCP].dport, s[TCP].seq, s[TCP].ack, int(s[TCP].flags),
            )
            checked += 1
    assert checked > 10
