"""The link types the decoder reads beyond Ethernet, cooked, raw and loopback, and tshark as the peer.

Each link type gets a frame built the way its registry entry (tcpdump.org's link-layer header types,
and the header layouts tshark's dissectors read) describes, around one IPv4 TCP segment; the
compiled and pure decoders must agree and find that segment. Then all of them are written to one
pcapng file (an interface per link type) and tshark, the peer tool, must find the same TCP segment
in every frame: so the frames are what tshark reads, and we read every one of them like tshark.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from scapy.all import IP, LLC, SNAP, TCP, Dot3, Dot11, Dot11QoS, RadioTap, Raw
from scapy.layers.dot11 import PrismHeader

from verifier.pcap import PcapngWriter
from verifier.wire import TCP as TCP_KIND, UNSUPPORTED, decode_frame
from verifier.wire import decoder as compiled_decoder

from .crafted import C, S
from .test_decoder import LINKTYPES as BASIC_LINKTYPES
from .test_decoder import Decoders, pure_decoder  # noqa: F401 (the fixture)

MPLS_LABEL = struct.pack(">I", 16 << 12 | 1 << 8 | 64)  # label 16, bottom of stack, TTL 64
INNER = bytes(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=77) / Raw(b"hello"))
SNAP_IP = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def _pflog() -> bytes:
    # struct pfloghdr: length (61, PFLOG_REAL_HDRLEN), af, action, reason, ifname[16], ruleset[16],
    # rulenr, subrulenr, uid, pid, rule_uid, rule_pid, dir, pad[3]: 64 bytes
    return bytes([61, 2, 0, 0]) + b"em0".ljust(16, b"\0") + b"\0" * 16 + struct.pack(">IIIiIiB3x", 1, 0, 0, 0, 0, 0, 1)


def _nflog() -> bytes:
    # nfgenmsg (family AF_INET, version 0, resource id), then TLVs (host order: little-endian) padded
    # to 4 bytes: the prefix (type 10) and the packet (NFULA_PAYLOAD, type 9)
    prefix = b"drop\0"
    tlv = struct.pack("<HH", 4 + len(prefix), 10) + prefix + b"\0" * (-(4 + len(prefix)) % 4)
    return bytes([2, 0, 0, 1]) + tlv + struct.pack("<HH", 4 + len(INNER), 9) + INNER


def _dot11() -> bytes:
    return bytes(Dot11(type=2, subtype=0, FCfield="to_DS", addr1="02:00:00:00:00:01", addr2="02:00:00:00:00:02",
                       addr3="02:00:00:00:00:03") / LLC() / SNAP(code=0x0800)) + INNER


def _dot11_qos() -> bytes:
    return bytes(Dot11(type=2, subtype=8, FCfield="from_DS", addr1="02:00:00:00:00:01", addr2="02:00:00:00:00:02",
                       addr3="02:00:00:00:00:03") / Dot11QoS() / LLC() / SNAP(code=0x0800)) + INNER


def _avs() -> bytes:
    # AVS WLAN header v1: magic/version 0x80211001, its length (64), then 56 bytes of radio fields
    return struct.pack(">II", 0x80211001, 64) + b"\0" * 56 + _dot11()


def _ppi() -> bytes:
    # PPI: version, flags, header length (8, little-endian), the inner link type (105, little-endian)
    return struct.pack("<BBHI", 0, 0, 8, 105) + _dot11()


FRAMES = {
    # name: (link type, frame)
    "ppp": (9, b"\xff\x03\x00\x21" + INNER),
    "ppp-compressed": (9, b"\x21" + INNER),
    "ppp-hdlc": (50, b"\xff\x03\x00\x21" + INNER),
    "ppp-hdlc-cisco": (50, b"\x0f\x00\x08\x00" + INNER),
    "ppp-ether": (51, b"\x11\x00\x00\x01" + struct.pack(">H", len(INNER) + 2) + b"\x00\x21" + INNER),
    "ppp-with-dir": (204, b"\x01\xff\x03\x00\x21" + INNER),
    # PPP protocol 0x0281 / 0x0283: MPLS unicast / multicast (RFC 3032 4.3), one label (16, bottom of stack)
    "ppp-mpls": (9, b"\xff\x03\x02\x81" + MPLS_LABEL + INNER),
    "ppp-mpls-multicast": (9, b"\xff\x03\x02\x83" + MPLS_LABEL + INNER),
    "ppp-ether-mpls": (51, b"\x11\x00\x00\x01" + struct.pack(">H", len(INNER) + 6) + b"\x02\x81" + MPLS_LABEL + INNER),
    "ipoib": (242, b"\x00" * 16 + b"\x2f\xa3\x00\x0a" + b"\x80\x00\x05\x50" + b"\xfe\x80" + b"\x00" * 14
              + b"\x08\x00\x00\x00" + INNER),
    "c-hdlc": (104, b"\x0f\x00\x08\x00" + INNER),
    "fddi": (10, b"\x50" + MAC1 + MAC2 + SNAP_IP + INNER),
    "token-ring": (6, b"\x10\x40" + MAC1 + MAC2 + SNAP_IP + INNER),
    "frame-relay": (107, b"\x18\x41\x03\xcc" + INNER),
    "enc": (109, struct.pack("<I", 2) + b"\0" * 8 + INNER),
    "pflog": (117, _pflog() + INNER),
    "ipnet": (226, struct.pack(">BBHIIIII", 1, 2, 0, len(INNER), 1, 0, 0, 0) + INNER),
    "ip-over-1394": (138, b"\x01" * 8 + b"\x02" * 8 + b"\x08\x00" + INNER),
    "nflog": (239, _nflog()),
    "802.11": (105, _dot11()),
    "802.11-qos": (105, _dot11_qos()),
    "radiotap": (127, bytes(RadioTap()) + _dot11()),
    "prism": (119, bytes(PrismHeader()) + _dot11()),
    "avs": (163, _avs()),
    "ppi": (192, _ppi()),
    "ethernet-802.3-snap": (1, bytes(Dot3(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / LLC() /
                                     SNAP(code=0x0800) / Raw(INNER))),
}


@pytest.fixture(scope="module")
def decoders(pure_decoder) -> Decoders:  # noqa: F811
    return Decoders(pure_decoder)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_each_link_type_gives_the_tcp_segment(decoders, name):
    lt, frame = FRAMES[name]
    p = decoders.one(lt, frame)
    assert (p.kind, p.error, p.sport, p.dport, p.seq, p.ack, p.payload_len, p.src, p.dst) == (
        TCP_KIND, None, 40000, 80, 1000, 77, 5, C, S), name
    assert p.ip_len == len(INNER)


def test_every_link_type_read_is_tested():
    assert {lt for lt, _ in FRAMES.values()} | {v[0] for v in BASIC_LINKTYPES.values()} == set(
        compiled_decoder.LINKTYPES)


def test_cut_headers_are_no_crash_and_no_tcp(decoders):
    # every prefix of every frame: the two engines agree, and a frame cut inside its link header
    # holds no TCP segment (a cut inside the IP packet may be malformed, never a wrong segment)
    for name, (lt, frame) in FRAMES.items():
        for k in range(0, len(frame) - len(INNER)):
            for p in decoders.frame(lt, frame[:k]):
                assert p.kind != TCP_KIND, (name, k)


def test_a_link_type_still_unread_is_counted_with_its_number(decoders):
    (p,) = decoders.frame(147, INNER)  # LINKTYPE_USER0: private, nobody can know what it holds
    assert (p.kind, p.error) == (UNSUPPORTED, "link type 147")
    (p,) = decoders.frame(192, struct.pack("<BBHI", 0, 0, 8, 147) + INNER)
    assert (p.kind, p.error) == (UNSUPPORTED, "link type 147 inside PPI")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make setup installs it)")
def test_tshark_reads_the_same_segment_in_every_frame(tmp_path):
    path = tmp_path / "linktypes.pcapng"
    names = sorted(FRAMES)
    with path.open("wb") as f:
        w = PcapngWriter(f)
        for k, name in enumerate(names):
            lt, frame = FRAMES[name]
            iface = w.add_interface(name, linktype=lt)
            w.write_packet(iface, 1_700_000_000_000_000_000 + k * 1000, frame)
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "tcp.srcport",
                          "-e", "tcp.seq_raw", "-e", "tcp.len"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = {int(n): (sp, seq, ln) for n, sp, seq, ln in (line.split("\t") for line in res.stdout.splitlines())}
    assert {names[n - 1]: v for n, v in got.items()} == {name: ("40000", "1000", "5") for name in names}
    for name in names:  # and ours, from the same file's frames
        lt, frame = FRAMES[name]
        assert decode_frame(lt, frame)[0].seq == 1000
