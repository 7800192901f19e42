"""`verifier.wire.encode` against Scapy: every builder gives the same bytes as Scapy building the same
packet (checksums included), over random field values; and the checksum helpers' own properties.
No root, no namespaces; `family` is the plugin's parametrisation (once over 4, once over 6)."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from verifier.wire import encode

ADDRS = {4: ("192.0.2.2", "203.0.113.2"), 6: ("2001:db8:1::2", "2001:db8:2::2")}
ROUNDS = 200


def _random_flags(rng: random.Random) -> str:
    return "".join(c for c in encode.TCP_FLAG_LETTERS if rng.random() < 0.4) or "A"


def _random_options(rng: random.Random) -> list[tuple]:
    pool = [("MSS", rng.randrange(536, 65536)), ("WScale", rng.randrange(15)), ("SAckOK", b""),
            ("Timestamp", (rng.getrandbits(32), rng.getrandbits(32))), ("NOP", None),
            ("SAck", (rng.getrandbits(32), rng.getrandbits(32))), ("UTO", rng.randrange(65536)), ("EOL", None)]
    chosen = rng.sample(pool, rng.randrange(len(pool) + 1))
    while len(encode.tcp_options(chosen)) > 40:
        chosen.pop()
    return chosen


def test_tcp_segments_equal_scapys(family):
    rng = random.Random(family)
    src, dst = ADDRS[family]
    l3 = IP if family == 4 else IPv6
    for _ in range(ROUNDS):
        f = dict(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536), seq=rng.getrandbits(32),
                 ack=rng.getrandbits(32), flags=_random_flags(rng), window=rng.randrange(65536),
                 urgent=rng.randrange(65536))
        options = _random_options(rng)
        payload = rng.randbytes(rng.randrange(0, 300))
        ours = encode.tcp(src, dst, options=options, payload=payload, **f)
        theirs = TCP(sport=f["sport"], dport=f["dport"], seq=f["seq"], ack=f["ack"], flags=f["flags"],
                     window=f["window"], urgptr=f["urgent"], options=options) / Raw(payload)
        # Scapy computes the TCP checksum only inside an IP packet (it needs the pseudo-header).
        whole = bytes(l3(src=src, dst=dst) / theirs)
        assert ours == whole[20 if family == 4 else 40:], (f, options)
        assert encode.transport_checksum(src, dst, encode.IPPROTO_TCP, ours) == 0


def test_ip_packets_and_frames_equal_scapys(family):
    rng = random.Random(10 + family)
    src, dst = ADDRS[family]
    for _ in range(ROUNDS):
        seg = encode.tcp(src, dst, rng.randrange(1, 65536), 5000, seq=rng.getrandbits(32), flags="S")
        ttl = rng.randrange(1, 256)
        if family == 4:
            tos, ident, df = rng.randrange(256), rng.getrandbits(16), rng.random() < 0.5
            ours = encode.ipv4(src, dst, encode.IPPROTO_TCP, seg, ttl=ttl, tos=tos, ident=ident, df=df)
            theirs = IP(src=src, dst=dst, ttl=ttl, tos=tos, id=ident, flags="DF" if df else 0, proto=6) / Raw(seg)
            assert encode.internet_checksum(ours[:20]) == 0
        else:
            tclass, flow = rng.randrange(256), rng.getrandbits(20)
            ours = encode.ipv6(src, dst, encode.IPPROTO_TCP, seg, hlim=ttl, tclass=tclass, flow=flow)
            theirs = IPv6(src=src, dst=dst, hlim=ttl, tc=tclass, fl=flow, nh=6) / Raw(seg)
        assert ours == bytes(theirs)
        smac, dmac = "02:00:00:00:00:%02x" % rng.randrange(256), "02:00:00:00:01:%02x" % rng.randrange(256)
        assert encode.ethernet(dmac, smac, ours) == bytes(Ether(src=smac, dst=dmac) / theirs)
    # The generic `ip` picks the family from the addresses.
    seg = encode.tcp(src, dst, 1, 2)
    expected = encode.ipv4(src, dst, 6, seg, ttl=9) if family == 4 else encode.ipv6(src, dst, 6, seg, hlim=9)
    assert encode.ip(src, dst, 6, seg, ttl=9) == expected


ICMP4 = [(3, 0), (3, 1), (3, 3), (3, 4), (3, 13), (11, 0)]
ICMP6 = [(1, 0), (1, 1), (1, 3), (1, 4), (2, 0), (3, 0)]


def test_icmp_errors_equal_scapys_and_quote_at_most_the_limit(family):
    rng = random.Random(20 + family)
    client, server = ADDRS[family]
    router = "192.0.2.1" if family == 4 else "2001:db8:1::1"
    limit = encode.IPV4_ERROR_MAX if family == 4 else encode.IPV6_ERROR_MAX
    for icmp_type, code in ICMP4 if family == 4 else ICMP6:
        for size in (0, 100, 1400):  # the last one is cut to the limit
            seg = encode.tcp(client, server, 40000, 5000, flags="S", seq=rng.getrandbits(32),
                             payload=rng.randbytes(size))
            offending = encode.ip(client, server, encode.IPPROTO_TCP, seg)
            mtu = rng.randrange(576, 1500)
            ours = encode.icmp_error(router, client, icmp_type, code, offending, mtu=mtu)
            if family == 4:
                quoted = offending[:limit - 28]
                icmp = ICMP(type=icmp_type, code=code)
                if (icmp_type, code) == (3, 4):
                    icmp.nexthopmtu = mtu
                theirs = IP(src=router, dst=client, ttl=64, tos=0xC0, id=0) / icmp / Raw(quoted)
            else:
                quoted = offending[:limit - 48]
                if icmp_type == 2:
                    icmp6 = ICMPv6PacketTooBig(mtu=mtu)
                else:
                    icmp6 = ICMPv6DestUnreach(type=icmp_type, code=code)
                theirs = IPv6(src=router, dst=client, hlim=64) / icmp6 / Raw(quoted)
            assert ours == bytes(theirs), (icmp_type, code, size)
            assert len(ours) == min(limit, len(offending) + (28 if family == 4 else 48))
            assert ours.endswith(quoted)


def test_flag_letters_and_refusals():
    assert encode.tcp_flags("S") == 0x02 and encode.tcp_flags("SA") == 0x12 and encode.tcp_flags("RA") == 0x14
    assert encode.tcp_flags("FSRPAUECN") == 0x1FF and encode.tcp_flags(0x11) == 0x11
    with pytest.raises(ValueError, match="unknown TCP flag letter"):
        encode.tcp_flags("SX")
    with pytest.raises(ValueError, match="do not fit"):
        encode.tcp_options([("Timestamp", (1, 2))] * 5)
    with pytest.raises(ValueError, match="unknown TCP option"):
        encode.tcp_options([("Mood", b":)")])
    with pytest.raises(ValueError, match="IPv4 addresses"):
        encode.ipv4("2001:db8::1", "192.0.2.1", 6, b"")
    with pytest.raises(ValueError, match="different families"):
        encode.pseudo_header("192.0.2.1", "2001:db8::1", 6, 0)
    with pytest.raises(ValueError, match="EtherType"):
        encode.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", b"\x00")
    with pytest.raises(ValueError, match="6 bytes"):
        encode.mac_bytes("02:00:00:00:01")


def test_checksums():
    rng = random.Random(5)
    for _ in range(ROUNDS):
        data = rng.randbytes(rng.randrange(1, 200))
        c = encode.internet_checksum(data)
        # RFC 1071: the data followed by its checksum (at an even offset) sums to zero.
        padded = data + b"\0" * (len(data) % 2)
        assert encode.internet_checksum(padded + c.to_bytes(2, "big")) == 0
        # Partial sums add up (what the flood's incremental checksums rely on).
        cut = rng.randrange(0, len(padded) // 2 + 1) * 2
        assert encode.checksum_of_sum(encode.word_sum(padded[:cut]) + encode.word_sum(padded[cut:])) == c
    # A re-checksummed segment is right whatever its checksum field held before.
    seg = bytearray(encode.tcp(*ADDRS[6], 1, 2, payload=b"x" * 33))
    seg[16:18] = b"\xab\xcd"
    assert encode.transport_checksum(*ADDRS[6], 6, encode.refresh_tcp_checksum(*ADDRS[6], seg)) == 0
    header = bytearray(encode.ipv4(*ADDRS[4], 6, b"")[:20])
    header[10:12] = b"\xff\xff"
    assert encode.internet_checksum(encode.refresh_ipv4_checksum(header)) == 0
    assert encode.packed_address(b"\xc0\x00\x02\x01") == encode.packed_address("192.0.2.1")
