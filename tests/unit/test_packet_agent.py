"""The packet agent's source-address fill (no root): a packet built with the zero source and patched
with the host's one, checksums updated in place, is byte for byte what Scapy builds with that source."""

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from netns.packet_agent import _patch_src

CASES = [
    (4, lambda s, r: IP(src=s, dst="203.0.113.2") / TCP(sport=r.randint(1, 65535), seq=r.getrandbits(32),
                                                        flags="S", options=[("MSS", 1460)]) / (b"x" * r.randint(0, 9))),
    (4, lambda s, r: IP(src=s, dst="203.0.113.2", ttl=r.randint(1, 255)) / UDP(sport=r.randint(1, 65535))
     / (b"y" * r.randint(0, 9))),
    (6, lambda s, r: IPv6(src=s, dst="2001:db8:2::2") / TCP(sport=r.randint(1, 65535), flags="SA")
     / (b"z" * r.randint(0, 9))),
    (6, lambda s, r: IPv6(src=s, dst="2001:db8:2::2") / UDP(sport=r.randint(1, 65535))),
    (6, lambda s, r: IPv6(src=s, dst="2001:db8:2::2") / ICMPv6EchoRequest(id=r.randint(0, 65535))),
]


@pytest.mark.parametrize("fam,make", CASES)
def test_patched_source_equals_scapys_build(fam, make):
    for i in range(200):
        src = f"192.0.2.{i % 254 + 1}" if fam == 4 else f"2001:db8:1::{i * 257 + 1:x}"
        zero = bytes(make("0.0.0.0" if fam == 4 else "::", random.Random(i)))
        assert _patch_src(zero, fam, src) == bytes(make(src, random.Random(i))), i


def test_what_it_does_not_know_is_left_to_scapy():
    assert _patch_src(bytes(IP(src="0.0.0.0", dst="203.0.113.2") / ICMP()), 4, "192.0.2.2") is None
    frag = bytes(IP(src="0.0.0.0", dst="203.0.113.2", flags="MF") / UDP())
    assert _patch_src(frag, 4, "192.0.2.2") is None
