"""The one capture reader (`verifier.pcap.reader`) and the pcapng writer: our writer, Scapy's
writers, tshark, hand-made files of every format feature, damaged files, and real traces.

Every capture read here goes through `Readers` (the `readers` fixture): `CaptureFile` over the
compiled reader, as the package imports it, and over the pure-Python reference, loaded in-process
from reader.py, must give the same packets, interfaces, statistics, damage notes, warnings and
errors; the tests then check the compiled result. Hand-made blocks and records are built with
`struct` here (Scapy writes only well-formed files); Scapy and tshark read what our writer writes.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import threading
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from scapy.all import IP, TCP, CookedLinux, Ether, Raw
from scapy.utils import PcapNgReader, PcapNgWriter, PcapWriter, RawPcapReader

import verifier
import verifier.pcap
from verifier.pcap import (
    MAX_RECORD_LEN,
    CaptureDamagedWarning,
    CaptureFile,
    CaptureFormatError,
    CaptureTruncatedWarning,
    Damage,
    InterfaceStats,
    PcapngWriter,
    RawPacket,
    read_interface_stats,
    read_packets,
)
from verifier.pcap import reader as compiled_reader

from .crafted import C, S, ZEEK, assert_compiled_beside_pure, eth, pure_module, zeek_traces

T0 = 1_700_000_000_123_456_789  # not crafted.T0: the nanosecond digits show whether readers keep them

# --------------------------------------------------------------------------
# the two engines


@pytest.fixture(scope="module")
def pure_reader():
    """reader.py as plain Python (crafted.pure_module)."""
    return pure_module("verifier.pcap.reader")


@pytest.fixture(params=["compiled", "pure"])
def reader_module(request, pure_reader):
    """For tests of the Reader engine itself: each runs once per engine."""
    return compiled_reader if request.param == "compiled" else pure_reader


@dataclass
class Read:
    """Everything a CaptureFile said about one capture."""

    packets: list = field(default_factory=list)
    format: str | None = None
    interfaces: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    damage: list = field(default_factory=list)
    truncated: bool = False
    packets_read: int = 0
    warnings: list = field(default_factory=list)  # (category, message) of the capture warnings
    error: str | None = None  # CaptureFormatError's message


class Readers:
    """CaptureFile over the compiled reader and over the pure reference, on the same capture: each
    call asserts that they agree in every respect and returns the compiled reading (re-raising its
    CaptureFormatError, if any)."""

    def __init__(self, pure) -> None:
        self.pure = pure

    def _one(self, reader_cls, source) -> Read:
        out = Read()
        with mock.patch.object(verifier.pcap, "Reader", reader_cls), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cap = CaptureFile(io.BytesIO(source) if isinstance(source, bytes) else source)
            try:
                for p in cap:
                    out.packets.append(p)
            except CaptureFormatError as e:
                out.error = str(e)
        out.format, out.interfaces, out.stats = cap.format, cap.interfaces, cap.stats
        out.damage, out.truncated, out.packets_read = cap.damage, cap.truncated, cap.packets_read
        out.warnings = [(w.category, str(w.message)) for w in caught
                        if issubclass(w.category, (CaptureDamagedWarning, CaptureTruncatedWarning))]
        return out

    def read(self, source: bytes | Path) -> Read:
        ours = self._one(compiled_reader.Reader, source)
        ref = self._one(self.pure.Reader, source)
        assert ours == ref, "compiled and pure readers disagree"
        if ours.error is not None:
            raise CaptureFormatError(ours.error)
        return ours


@pytest.fixture
def readers(pure_reader) -> Readers:
    return Readers(pure_reader)


def test_the_imported_reader_is_compiled(pure_reader):
    assert_compiled_beside_pure("verifier.pcap.reader", pure_reader)
    assert verifier.pcap.Reader is compiled_reader.Reader
    assert pure_reader.Reader is not compiled_reader.Reader


# --------------------------------------------------------------------------
# hand-made files


def block(bo: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(bo + "II", btype, len(body) + 12) + body + struct.pack(bo + "I", len(body) + 12)


def opt(bo: str, code: int, value: bytes) -> bytes:
    return struct.pack(bo + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(bo: str = "<") -> bytes:
    return block(bo, 0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(bo: str = "<", name: str | None = None, *extra: bytes, linktype: int = 1, snaplen: int = 0) -> bytes:
    opts = (opt(bo, 2, name.encode()) if name is not None else b"") + b"".join(extra)
    return block(bo, 1, struct.pack(bo + "HHI", linktype, 0, snaplen) + (opts + opt(bo, 0, b"") if opts else b""))


def epb(bo: str, iface: int, ts: int, data: bytes, flags: int | None = None, caplen: int | None = None,
        orig_len: int | None = None) -> bytes:
    body = struct.pack(bo + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data) if caplen is None else caplen,
                       len(data) if orig_len is None else orig_len) + data
    body += b"\0" * (-len(data) % 4)
    if flags is not None:
        body += opt(bo, 1, b"a comment") + opt(bo, 2, struct.pack(bo + "I", flags)) + opt(bo, 0, b"")
    return block(bo, 6, body)


def isb(bo: str, iface: int, ts: int, **counters: int) -> bytes:
    codes = {"received": 4, "dropped": 5, "filter_accepted": 6, "os_dropped": 7, "delivered": 8}
    opts = b"".join(opt(bo, codes[k], struct.pack(bo + "Q", v)) for k, v in counters.items())
    return block(bo, 5, struct.pack(bo + "III", iface, ts >> 32, ts & 0xFFFFFFFF) + (opts + opt(bo, 0, b"") if opts
                                                                                      else b""))


def pcap_header(bo: str = "<", magic: int = 0xA1B2C3D4, linktype: int = 1, major: int = 2) -> bytes:
    return struct.pack(bo + "IHHiIII", magic, major, 4, 0, 0, 65535, linktype)


def pcap_record(bo: str, sec: int, frac: int, data: bytes, caplen: int | None = None) -> bytes:
    return struct.pack(bo + "IIII", sec, frac, len(data) if caplen is None else caplen, len(data)) + data


def frame(seq: int = 1, payload: bytes = b"") -> bytes:
    return bytes(eth() / IP(src=C, dst=S) / TCP(sport=40000, dport=80, seq=seq) / Raw(payload))


def write_sample(f) -> None:
    w = PcapngWriter(f, application="unit-test")
    a = w.add_interface("client:eth0", description="veth to router")
    b = w.add_interface("server:eth0", linktype=113, snaplen=96)
    w.write_packet(a, T0, frame(1), direction="out")
    w.write_packet(b, T0 + (5 << 32) + 7, frame(2, b"x" * 3), direction="in", orig_len=500)
    w.write_packet(a, T0 + 2, frame(3, b"abcde"))
    w.write_stats(a, T0 + 10, received=3, dropped=1)
    w.write_stats(b, T0 + 11, received=None, dropped=42)
    w.flush()


def sample() -> bytes:
    buf = io.BytesIO()
    write_sample(buf)
    return buf.getvalue()


def walk_blocks(data: bytes) -> list[tuple[int, bytes]]:
    """An independent little-endian pcapng block walker, strict about the spec."""
    blocks, pos = [], 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", data, pos + total - 4)[0] == total
        blocks.append((btype, data[pos + 8: pos + total - 4]))
        pos += total
    assert pos == len(data)
    return blocks


def options(body: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos < len(body):
        code, length = struct.unpack_from("<HH", body, pos)
        if code == 0:
            assert length == 0 and pos + 4 == len(body)
            return out
        out[code] = body[pos + 4: pos + 4 + length]
        pos += 4 + length + (-length % 4)
    raise AssertionError("options not terminated by opt_endofopt")


# --------------------------------------------------------------------------
# our writer


def test_writer_blocks_follow_the_spec():
    blocks = walk_blocks(sample())
    assert [b[0] for b in blocks] == [0x0A0D0D0A, 1, 1, 6, 6, 6, 5, 5]
    shb_body = blocks[0][1]
    assert struct.unpack_from("<IHHq", shb_body) == (0x1A2B3C4D, 1, 0, -1)
    assert options(shb_body[16:])[4] == b"unit-test"
    idb_opts = options(blocks[1][1][8:])
    assert idb_opts[2] == b"client:eth0" and idb_opts[3] == b"veth to router" and idb_opts[9] == b"\x09"
    assert struct.unpack_from("<HHI", blocks[2][1]) == (113, 0, 96)
    assert 3 not in options(blocks[2][1][8:])
    epb_body = blocks[3][1]
    caplen = struct.unpack_from("<I", epb_body, 12)[0]
    assert options(epb_body[20 + caplen + (-caplen % 4):])[2] == struct.pack("<I", 2)
    # a packet without direction carries no options at all
    epb3 = blocks[5][1]
    assert len(epb3) == 20 + len(frame(3, b"abcde")) + (-len(frame(3, b"abcde")) % 4)


def test_round_trip_names_directions_timestamps_and_lengths(readers):
    got = readers.read(sample())
    assert got.format == "pcapng" and not got.truncated and got.damage == [] and got.warnings == []
    assert got.packets == [
        RawPacket(0, T0, 0, "client:eth0", 1, frame(1), len(frame(1)), "out"),
        RawPacket(1, T0 + (5 << 32) + 7, 1, "server:eth0", 113, frame(2, b"xxx"), 500, "in"),
        RawPacket(2, T0 + 2, 0, "client:eth0", 1, frame(3, b"abcde"), len(frame(3, b"abcde")), None),
    ]
    assert got.packets_read == 3
    assert [(i.id, i.name, i.description, i.linktype, i.snaplen) for i in got.interfaces] == [
        (0, "client:eth0", "veth to router", 1, 0),
        (1, "server:eth0", None, 113, 96),
    ]


def test_interface_statistics_round_trip(tmp_path, readers):
    path = tmp_path / "stats.pcapng"
    path.write_bytes(sample())
    stats = read_interface_stats(path)
    assert [(s.iface, s.iface_name, s.ts_ns, s.received, s.dropped, s.lost) for s in stats] == [
        (0, "client:eth0", T0 + 10, 3, 1, 1),
        (1, "server:eth0", T0 + 11, None, 42, 42),
    ]
    assert readers.read(path).stats == stats


def test_writer_rejects_unknown_interface_and_direction():
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="interface id 0"):
        w.write_packet(0, T0, b"x")
    with pytest.raises(ValueError, match="interface id 0"):
        w.write_stats(0, T0, received=1, dropped=0)
    w.add_interface("eth0")
    with pytest.raises(ValueError, match="direction"):
        w.write_packet(0, T0, b"x", direction="sideways")


def test_scapy_reads_our_pcapng(tmp_path):
    path = tmp_path / "ours.pcapng"
    path.write_bytes(sample())
    with PcapNgReader(str(path)) as scapy_reader:
        got = [(bytes(p), p.time, p.sniffed_on, p.direction, p.wirelen) for p in scapy_reader]
    assert [g[0] for g in got] == [frame(1), frame(2, b"xxx"), frame(3, b"abcde")]
    assert int(got[0][1] * 10**9) == T0  # Scapy keeps Decimal timestamps: exact ns survive
    assert [(g[2], g[3], g[4]) for g in got] == [
        ("client:eth0", 2, len(frame(1))),
        ("server:eth0", 1, 500),
        ("client:eth0", None, len(frame(3, b"abcde"))),
    ]


def test_tshark_reads_our_pcapng(tmp_path):
    from verifier.pytest_plugin import require_tool

    tshark = require_tool("tshark")
    path = tmp_path / "ours.pcapng"
    path.write_bytes(sample())
    fields = ["frame.interface_name", "frame.time_epoch", "frame.len", "frame.cap_len", "frame.packet_flags_direction",
              "tcp.seq_raw"]
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    t1 = T0 + (5 << 32) + 7
    assert rows == [
        ["client:eth0", "1700000000.123456789", "54", "54", "0x00000002", "1"],
        # interface 1 says Linux cooked: tshark reads the Ethernet bytes as a cooked header, no TCP
        ["server:eth0", f"{t1 // 10**9}.{t1 % 10**9:09d}", "500", "57", "0x00000001", ""],
        ["client:eth0", "1700000000.123456791", "59", "59", "", "3"],
    ]


def test_writer_round_trip_of_many_packets_through_our_reader_and_tshark(tmp_path, readers):
    from verifier.pytest_plugin import require_tool

    tshark = require_tool("tshark")
    path = tmp_path / "many.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        ids = [w.add_interface(f"if{i}", linktype=1) for i in range(3)]
        for n in range(300):
            w.write_packet(ids[n % 3], T0 + n * 1001, frame(n, b"p" * (n % 7)), direction=(None, "in", "out")[n % 3])
        for i in ids:
            w.write_stats(i, T0 + 10**9, received=100, dropped=i)
    got = readers.read(path)
    assert [(p.index, p.iface, p.ts_ns, p.data, p.direction) for p in got.packets] == [
        (n, n % 3, T0 + n * 1001, frame(n, b"p" * (n % 7)), (None, "in", "out")[n % 3]) for n in range(300)]
    assert [s.lost for s in got.stats] == [0, 1, 2]
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.interface_id", "-e", "tcp.seq_raw"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert [line.split("\t") for line in out.splitlines()] == [[str(n % 3), str(n)] for n in range(300)]


# --------------------------------------------------------------------------
# Scapy's writers


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("endianness", ["<", ">"])
def test_reads_scapy_pcap(tmp_path, readers, nano, endianness):
    path = tmp_path / "scapy.pcap"
    pkts = []
    for i in range(3):
        p = CookedLinux(pkttype=4) / IP() / TCP(seq=i)
        p.time = Decimal(f"{1_700_000_000 + i}.123456{789 if nano else 0}")
        pkts.append(p)
    w = PcapWriter(str(path), linktype=113, nano=nano, endianness=endianness)
    w.write(pkts)
    w.close()
    got = readers.read(path)
    assert got.format == "pcap"
    assert [g.data for g in got.packets] == [bytes(p) for p in pkts]
    assert {g.linktype for g in got.packets} == {113}
    assert [g.index for g in got.packets] == [0, 1, 2]
    assert got.packets[2].ts_ns == 1_700_000_002_123_456_000 + (789 if nano else 0)
    first = got.packets[0]
    assert first.iface == 0 and first.iface_name is None and first.direction is None
    assert [(i.id, i.name, i.linktype, i.snaplen) for i in got.interfaces] == [(0, None, 113, 65535)]


def test_reads_scapy_pcapng_with_interface_names(tmp_path, readers):
    path = tmp_path / "scapy.pcapng"
    w = PcapNgWriter(str(path))
    for i, iface in enumerate(["veth0", "veth1", "veth0"]):
        p = eth() / IP() / TCP(seq=i)
        p.time = 1_700_000_000.5 + i
        p.sniffed_on = iface
        w.write(p)
    w.close()
    got = readers.read(path).packets
    assert [g.iface_name for g in got] == ["veth0", "veth1", "veth0"]
    assert [g.ts_ns for g in got] == [1_700_000_000_500_000_000 + i * 10**9 for i in range(3)]
    assert [TCP in Ether(g.data) and Ether(g.data)[TCP].seq for g in got] == [0, 1, 2]


# --------------------------------------------------------------------------
# pcap: byte orders, resolutions, Kuznetzov


@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("magic,scale", [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)], ids=["usec", "nsec"])
def test_pcap_both_byte_orders_and_both_resolutions(readers, bo, magic, scale):
    data = pcap_header(bo, magic, linktype=101) + pcap_record(bo, 1_700_000_000, 999_999, b"\x45abc") + pcap_record(
        bo, 1_700_000_001, 1, b"")
    got = readers.read(data)
    assert [(p.ts_ns, p.data, p.linktype, p.orig_len) for p in got.packets] == [
        (1_700_000_000 * 10**9 + 999_999 * scale, b"\x45abc", 101, 4),
        (1_700_000_001 * 10**9 + scale, b"", 101, 0),
    ]
    assert got.damage == [] and not got.truncated


def test_pcap_link_type_ignores_the_fcs_bits(readers):
    data = pcap_header(linktype=0x10000001 | (1 << 26)) + pcap_record("<", 1, 0, b"ok")
    assert readers.read(data).packets[0].linktype == 1


@pytest.mark.parametrize("bo", ["<", ">"])
def test_kuznetzov_modified_pcap_records(readers, bo):
    header = pcap_header(bo, 0xA1B2CD34)
    rec = struct.pack(bo + "IIII", 10, 5, 3, 3) + struct.pack(bo + "IHBx", 2, 0x0800, 0) + b"abc"
    rec2 = struct.pack(bo + "IIII", 11, 6, 2, 9) + struct.pack(bo + "IHBx", 2, 0x0800, 4) + b"de"
    got = readers.read(header + rec + rec2)
    assert [(p.ts_ns, p.data, p.orig_len) for p in got.packets] == [(10_000_005_000, b"abc", 3),
                                                                     (11_000_006_000, b"de", 9)]


def test_pcap_version_other_than_2_is_not_read(readers):
    with pytest.raises(CaptureFormatError, match="unsupported pcap version 1"):
        readers.read(pcap_header(major=1))


# --------------------------------------------------------------------------
# pcapng: sections, byte orders, blocks, options


def test_sections_byte_orders_resolutions_and_old_block_types(readers):
    data = b"".join(
        [
            # section 1: big endian, 2^-20 s resolution with a 100 s offset
            shb(">"),
            idb(">", "be0", opt(">", 9, bytes([0x80 | 20])), opt(">", 14, struct.pack(">q", 100))),
            epb(">", 0, 3 << 20, b"AAAA", flags=1),  # 3 s after the offset
            block(">", 0x0BAD, b"unknown block to skip"),
            block(">", 4, b"\0\0\0\0"),  # name resolution block, skipped
            # section 2: little endian, microseconds by default, two interfaces
            shb("<"),
            idb("<", "le0"),
            idb("<", "le1", opt("<", 9, bytes([3]))),  # milliseconds
            block("<", 3, struct.pack("<I", 6) + b"SIMPLE"),  # SPB: interface 0, no time
            block("<", 2, struct.pack("<HHIIII", 1, 0, 0, 1500, 2, 2) + b"PB" + b"\0\0"),  # obsolete PB
            epb("<", 0, 1_700_000_000_000_001, b"CC", flags=2),
            # section 3: big endian again; interface ids restart, file-wide numbers go on
            shb(">"),
            idb(">", "be1"),
            epb(">", 0, 7, b"D", flags=0),
        ]
    )
    got = readers.read(data)
    assert [(p.index, p.iface, p.iface_name, p.data, p.direction) for p in got.packets] == [
        (0, 0, "be0", b"AAAA", "in"),
        (1, 1, "le0", b"SIMPLE", None),
        (2, 2, "le1", b"PB", None),
        (3, 1, "le0", b"CC", "out"),
        (4, 3, "be1", b"D", None),
    ]
    ts = [p.ts_ns for p in got.packets]
    assert ts[0] == 103 * 10**9
    assert ts[1] == ts[0]  # SPB has no timestamp: keeps the last one
    assert ts[2] == 1500 * 10**6
    assert ts[3] == 1_700_000_000_000_001_000
    assert ts[4] == 7000
    assert [(i.id, i.name) for i in got.interfaces] == [(0, "be0"), (1, "le0"), (2, "le1"), (3, "be1")]
    assert got.damage == [] and got.warnings == []


@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("flags,direction", [(0, None), (1, "in"), (2, "out"), (3, None), (0xFF00 | 1, "in"),
                                             (None, None)])
def test_epb_flags_give_the_direction(readers, bo, flags, direction):
    data = shb(bo) + idb(bo, "x") + epb(bo, 0, 1, b"abc", flags=flags)
    assert readers.read(data).packets[0].direction == direction


@pytest.mark.parametrize("bo", ["<", ">"])
def test_simple_and_obsolete_packet_blocks(readers, bo):
    data = (shb(bo) + idb(bo, "a", snaplen=4) + idb(bo, "b")
            + block(bo, 3, struct.pack(bo + "I", 10) + b"0123456789")  # cut to the snaplen
            + block(bo, 3, struct.pack(bo + "I", 2) + b"xy\0\0")  # padding is not data
            + block(bo, 2, struct.pack(bo + "HHIIII", 1, 3, 0, 2000, 3, 8) + b"pb!"))
    got = readers.read(data)
    assert [(p.iface, p.data, p.orig_len, p.ts_ns) for p in got.packets] == [
        (0, b"0123", 10, 0), (0, b"xy", 2, 0), (1, b"pb!", 8, 2_000_000)]


@pytest.mark.parametrize(
    "resolution,units,ns",
    [
        (None, 1_700_000_000_123_456, 1_700_000_000_123_456_000),  # default: microseconds
        (0, 1_700_000_000, 1_700_000_000 * 10**9),  # seconds
        (3, 1_700_000_000_123, 1_700_000_000_123_000_000),
        (6, 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (9, T0, T0),
        (12, 12_345_678_901_234_567, 12_345_678_901_234),  # picoseconds: truncated to ns
        (0x80 | 0, 12, 12 * 10**9),  # 2^0: seconds
        (0x80 | 10, (5 << 10) + 512, 5_500_000_000),
        (0x80 | 30, (1_700_000_000 << 30) + (1 << 29), 1_700_000_000_500_000_000),  # exact
        (0x80 | 32, (3 << 32) + (1 << 30), 3_250_000_000),
    ],
)
def test_if_tsresol_base_10_and_base_2(readers, resolution, units, ns):
    extra = [] if resolution is None else [opt("<", 9, bytes([resolution]))]
    got = readers.read(shb() + idb("<", "x", *extra) + epb("<", 0, units, b"z"))
    assert got.packets[0].ts_ns == ns and got.damage == []


@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("offset_s", [1_600_000_000, -5, 0])
def test_if_tsoffset(readers, bo, offset_s):
    data = shb(bo) + idb(bo, "x", opt(bo, 9, bytes([9])), opt(bo, 14, struct.pack(bo + "q", offset_s))) + epb(
        bo, 0, 10 * 10**9 + 7, b"z")
    assert readers.read(data).packets[0].ts_ns == (10 + offset_s) * 10**9 + 7


@pytest.mark.parametrize("bo", ["<", ">"])
def test_isb_counters_and_lost(readers, bo):
    data = (shb(bo) + idb(bo, "a") + idb(bo, "b") + epb(bo, 0, 1, b"x")
            + isb(bo, 0, 5, received=10, dropped=2, filter_accepted=9, os_dropped=3, delivered=8)
            + isb(bo, 1, 6, received=4)
            + isb(bo, 0, 7, received=20, dropped=4, os_dropped=3))  # counters are cumulative
    got = readers.read(data)
    assert got.stats == [
        InterfaceStats(0, "a", 5000, received=10, dropped=2, filter_accepted=9, os_dropped=3, delivered=8),
        InterfaceStats(1, "b", 6000, received=4),
        InterfaceStats(0, "a", 7000, received=20, dropped=4, os_dropped=3),
    ]
    assert [s.lost for s in got.stats] == [5, 0, 7]
    assert InterfaceStats(0, None, 0).lost == 0
    for mod in (compiled_reader, readers.pure):  # what an interface lost: the last count, not a sum
        r = mod.Reader(io.BytesIO(data))
        while r.next():
            pass
        assert (r.iface_lost(0), r.iface_lost(1)) == (7, 0)


def test_capture_file_can_be_iterated_twice(tmp_path):
    path = tmp_path / "twice.pcapng"
    path.write_bytes(sample())
    cap = CaptureFile(path)
    assert list(cap) == list(cap)
    assert len(cap.interfaces) == 2 and len(cap.stats) == 2 and cap.packets_read == 3


def test_capture_file_before_reading():
    cap = CaptureFile(io.BytesIO(sample()))
    assert (cap.format, cap.interfaces, cap.stats, cap.damage, cap.truncated, cap.packets_read) == (
        None, [], [], [], False, 0)
    assert cap.name == "<stream>"


def test_raw_packet_is_frozen():
    p = next(read_packets(io.BytesIO(sample())))
    with pytest.raises(AttributeError):
        p.index = 5  # type: ignore[misc]


def test_reader_steps_through_records_in_its_buffer(reader_module):
    r = reader_module.Reader(io.BytesIO(sample()))
    buf = r.buf
    seen = []
    while r.next():
        assert r.buf is buf  # refilled in place
        assert bytes(r.buf[r.rec_off:r.rec_off + r.rec_caplen]) == r.record()
        seen.append((r.rec_index, r.rec_iface, r.rec_linktype, r.rec_ts, r.rec_orig_len, r.direction()))
    assert seen == [(0, 0, 1, T0, 54, "out"), (1, 1, 113, T0 + (5 << 32) + 7, 500, "in"), (2, 0, 1, T0 + 2, 59, None)]
    assert r.next() == 0 and r.format == "pcapng" and r.iface_name(1) == "server:eth0" and r.iface_name(9) is None
    assert (r.iface_lost(0), r.iface_lost(1), r.iface_lost(5)) == (1, 42, 0)


@pytest.mark.parametrize("chunk", [1, 3, 12, 13, 64, 1000])
def test_records_across_buffer_refills(reader_module, chunk):
    """Tiny read buffers put every record boundary across a refill: the records stay the same."""
    data = (shb() + idb("<", "a") + b"".join(epb("<", 0, i, bytes([i]) * (i * 7 % 300)) for i in range(40))
            + shb(">") + idb(">", "b") + b"".join(epb(">", 0, i, bytes([i]) * i) for i in range(10)))
    pcap = pcap_header(">") + b"".join(pcap_record(">", i, i, bytes([i]) * (i * 13 % 200)) for i in range(40))
    for src in (data, pcap):
        ref = compiled_reader.Reader(io.BytesIO(src))
        want = []
        while ref.next():
            want.append((ref.rec_index, ref.rec_iface, ref.rec_ts, ref.record()))
        r = reader_module.Reader(io.BytesIO(src), chunk=chunk)
        got = []
        while r.next():
            got.append((r.rec_index, r.rec_iface, r.rec_ts, r.record()))
        assert got == want and len(want) in (40, 50)


# --------------------------------------------------------------------------
# trailing statistics: what a capture lost, known before its packets are read


def lossy(bo: str = "<") -> bytes:
    return (shb(bo) + idb(bo, "a") + idb(bo, "b") + idb(bo, "c") + epb(bo, 0, 1, b"x") + epb(bo, 1, 2, b"y")
            + isb(bo, 0, 9, received=5, dropped=2) + block(bo, 4, b"\0\0\0\0")  # a block between: still read
            + isb(bo, 1, 9, received=5, dropped=0) + isb(bo, 2, 9, received=1, os_dropped=4, dropped=1))


@pytest.mark.parametrize("bo", ["<", ">"])
def test_trailing_lost_reads_the_statistics_at_the_end(tmp_path, reader_module, bo):
    path = tmp_path / "lossy.pcapng"
    path.write_bytes(lossy(bo))
    with open(path, "rb") as f:
        r = reader_module.Reader(f)
        assert r.trailing_lost() == {0: 2, 2: 5}  # interfaces that lost nothing are left out
        assert f.tell() == 0  # the position is restored: reading starts at the beginning
        assert r.next() == 1 and r.record() == b"x"
        assert r.trailing_lost() == {0: 2, 2: 5}  # also in the middle of the stream
        assert r.next() == 1 and r.record() == b"y" and r.next() == 0
        assert [s.lost for s in r.stats] == [2, 0, 5]


def test_trailing_lost_only_reads_statistics_at_the_very_end(tmp_path, reader_module):
    cases = {
        "packet-after": shb() + idb("<", "a") + isb("<", 0, 1, dropped=3) + epb("<", 0, 2, b"x"),
        "no-statistics": shb() + idb("<", "a") + epb("<", 0, 2, b"x"),
        "pcap": pcap_header() + pcap_record("<", 1, 0, b"x"),
        "no-loss": shb() + idb("<", "a") + epb("<", 0, 2, b"x") + isb("<", 0, 3, received=1, dropped=0),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        r = reader_module.Reader(path)
        assert r.trailing_lost() == {}, name
        assert r.next() == 1, name
        r.close()


def test_trailing_lost_is_empty_for_a_stream_that_cannot_seek(reader_module):
    rfd, wfd = os.pipe()
    data = lossy()

    def feed():
        with open(wfd, "wb") as w:
            w.write(data)

    t = threading.Thread(target=feed)
    t.start()
    try:
        with open(rfd, "rb", buffering=0) as f:
            assert not f.seekable()
            r = reader_module.Reader(f)
            assert r.trailing_lost() == {}
            n = 0
            while r.next():
                n += 1
            assert n == 2 and [s.lost for s in r.stats] == [2, 0, 5]
    finally:
        t.join(10)


# --------------------------------------------------------------------------
# damage: skipped records, stopped streams, truncation, files that are no captures


def assert_notes(got: Read, expected: list[tuple[int, str, bool]], name: str = "<stream>"):
    """The damage notes, and one CaptureDamagedWarning per note naming the file and the byte offset."""
    assert [(d.offset, d.skipped) for d in got.damage] == [(o, s) for o, _w, s in expected]
    for d, (_o, what, _s) in zip(got.damage, expected):
        assert what in d.what, (d.what, what)
    damaged = [m for c, m in got.warnings if c is CaptureDamagedWarning]
    assert damaged == [d.text(name) for d in got.damage]
    assert got.packets_read == len(got.packets) and not got.truncated
    for d, msg in zip(got.damage, damaged):
        assert msg.startswith(f"{name}: damaged at byte {d.offset}: ")
        assert msg.endswith("record skipped" if d.skipped else "reading stopped there")


GOOD = shb() + idb("<", "eth0")  # 28 + 32 bytes
AFTER = len(GOOD)


@pytest.mark.parametrize("iface", [0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 1, 0x10000])
def test_undefined_interface_is_skipped_and_reading_goes_on(readers, iface):
    data = GOOD + epb("<", iface, 1, b"bad!") + epb("<", 0, 2, b"good") + epb("<", iface, 3, b"bad2") + epb(
        "<", 0, 4, b"last")
    got = readers.read(data)
    assert [(p.index, p.data, p.ts_ns) for p in got.packets] == [(0, b"good", 2000), (1, b"last", 4000)]
    second = AFTER + 2 * len(epb("<", 0, 1, b"bad!"))
    assert_notes(got, [(AFTER, f"refers to interface {iface} but only 1 are defined", True),
                       (second, f"refers to interface {iface}", True)])
    assert not got.truncated and got.packets_read == 2


def test_undefined_interface_of_an_obsolete_packet_block_and_of_statistics(readers):
    pb = block("<", 2, struct.pack("<HHIIII", 0xFFFF, 0, 0, 1, 1, 1) + b"x")
    stats = isb("<", 0xFFFFFFFF, 1, dropped=3)
    got = readers.read(GOOD + pb + stats + epb("<", 0, 2, b"ok"))
    assert [p.data for p in got.packets] == [b"ok"] and got.stats == []
    assert_notes(got, [(AFTER, "refers to interface 65535", True),
                       (AFTER + len(pb), "statistics refer to interface 4294967295", True)])


@pytest.mark.parametrize("caplen", [5, 100, 0xFFFFFFFF])
def test_captured_length_larger_than_its_block_is_skipped(readers, caplen):
    data = GOOD + epb("<", 0, 1, b"abcd", caplen=caplen) + epb("<", 0, 2, b"ok")
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"ok"]
    assert_notes(got, [(AFTER, f"claims {caplen} captured bytes in a 36-byte block", True)])


def test_short_blocks_are_skipped(readers):
    short_idb = block("<", 1, b"\1\0")
    short_epb = block("<", 6, b"\0" * 8)
    short_isb = block("<", 5, b"\0" * 8)
    short_spb = block("<", 3, b"")
    data = shb() + short_idb + idb("<", "b") + short_epb + short_isb + short_spb + epb("<", 1, 1, b"ok")
    got = readers.read(data)
    # the short IDB still takes its number: the next interface is 1, as the file meant
    assert [(p.iface, p.iface_name, p.data) for p in got.packets] == [(1, "b", b"ok")]
    o = [28 + sum(map(len, (short_idb, idb("<", "b"), short_epb, short_isb)[:i])) for i in (0, 2, 3, 4)]
    assert_notes(got, [(o[0], "interface description block too short", True),
                       (o[1], "packet block 0 too short (8 bytes)", True),
                       (o[2], "interface statistics block too short", True),
                       (o[3], "simple packet block 0 too short", True)])


def test_timestamp_out_of_range_is_skipped(readers):
    data = (shb() + idb("<", "us") + idb("<", "s2", opt("<", 9, bytes([0x80 | 0])))
            + idb("<", "neg", opt("<", 14, struct.pack("<q", -10)))
            + epb("<", 0, 0xFFFFFFFFFFFFFFFF, b"a") + epb("<", 1, 0xFFFFFFFFFFFFFFFF, b"b")
            + epb("<", 2, 1, b"c") + epb("<", 0, 1, b"ok"))
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"ok"]
    assert [d.what for d in got.damage] == ["packet 0 has a timestamp out of range"] * 3
    assert all(d.skipped for d in got.damage)


def test_unsupported_time_resolutions_and_offsets_are_noted(readers):
    data = (shb() + idb("<", "a", opt("<", 9, bytes([19]))) + idb("<", "b", opt("<", 9, bytes([0x80 | 33])))
            + idb("<", "c", opt("<", 14, struct.pack("<q", 2**62))) + epb("<", 0, 5, b"x") + epb("<", 1, 5, b"y")
            + epb("<", 2, 5, b"z"))
    got = readers.read(data)
    assert [p.ts_ns for p in got.packets] == [5000, 5000, 5000]  # microseconds assumed, no offset
    assert [d.what for d in got.damage] == [
        "interface 0 has an unsupported time resolution 10^-19 s (microseconds assumed)",
        "interface 1 has an unsupported time resolution 2^-33 s (microseconds assumed)",
        f"interface 2 has a time offset of {2**62} s (ignored)",
    ]


def test_bad_trailer_stops_and_keeps_earlier_packets(readers):
    bad = bytearray(epb("<", 0, 2, b"data"))
    bad[-1] = 0x7F
    data = GOOD + epb("<", 0, 1, b"keep") + bytes(bad) + epb("<", 0, 3, b"never")
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"keep"]
    assert_notes(got, [(AFTER + 36, "block of type 0x00000006 has length 36 but trailing length 2130706468", False)])
    assert not got.truncated


@pytest.mark.parametrize("length", [0, 8, 11, MAX_RECORD_LEN + 4, 0xFFFFFFF0])
def test_absurd_block_length_stops(readers, length):
    data = GOOD + epb("<", 0, 1, b"keep") + struct.pack("<II", 6, length) + b"\0" * 64
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"keep"]
    assert_notes(got, [(AFTER + 36, f"block of type 0x00000006 claims a length of {length} bytes", False)])


def test_later_section_with_a_bad_byte_order_magic_stops(readers):
    bad_shb = block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1))
    got = readers.read(GOOD + epb("<", 0, 1, b"keep") + bad_shb + idb() + epb("<", 0, 2, b"never"))
    assert [p.data for p in got.packets] == [b"keep"]
    assert_notes(got, [(AFTER + 36, "section header with a bad byte-order magic 0x44332211", False)])
    later_v2 = block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1))
    got = readers.read(GOOD + later_v2 + idb() + epb("<", 0, 2, b"never"))
    assert_notes(got, [(AFTER, "section of unsupported pcapng version 2", False)])


@pytest.mark.parametrize("caplen", [MAX_RECORD_LEN + 1, 0xFFFFFFFF])
def test_pcap_record_with_an_absurd_captured_length_stops(readers, caplen):
    data = pcap_header() + pcap_record("<", 1, 0, b"ok") + pcap_record("<", 2, 0, b"", caplen=caplen) + b"\0" * 64
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"ok"]
    assert_notes(got, [(24 + 18, f"packet record 1 claims a captured length of {caplen} bytes (more than "
                                 f"{MAX_RECORD_LEN})", False)])


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("where", ["in-header", "in-data"])
def test_truncated_file_warns_and_keeps_earlier_packets(tmp_path, readers, fmt, where):
    path = tmp_path / f"cut.{fmt}"
    if fmt == "pcap":
        w = PcapWriter(str(path), linktype=1)
        w.write([Ether(frame(i)) for i in range(3)])
        w.close()
    else:
        path.write_bytes(sample())
    whole = path.read_bytes()
    last = whole.rfind(frame(3, b"abcde") if fmt == "pcapng" else frame(2))  # the third packet's data
    record = last - (28 if fmt == "pcapng" else 16)  # where its record starts
    cut = last + 10 if where == "in-data" else record + 6
    path.write_bytes(whole[:cut])
    got = readers.read(path)
    assert len(got.packets) == 2 and got.truncated and got.damage == []
    assert got.warnings == [(CaptureTruncatedWarning, f"{path}: capture is truncated in the middle of a record at "
                                                      f"byte {record}; read 2 packets before it")]


@pytest.mark.parametrize("cut", [4, 6, 23])
def test_pcap_header_cut_is_no_capture(readers, cut):
    with pytest.raises(CaptureFormatError, match="too short to hold its file header"):
        readers.read(pcap_header()[:cut])


@pytest.mark.parametrize("cut", [4, 8, 11])
def test_pcapng_header_cut_before_its_length_is_no_capture(readers, cut):
    with pytest.raises(CaptureFormatError, match="too short to hold its file header"):
        readers.read(shb()[:cut])


@pytest.mark.parametrize("cut", [12, 20, 27])
def test_pcapng_header_cut_inside_the_section_header_is_no_capture(readers, cut):
    try:
        got = readers.read(shb()[:cut])
    except CaptureFormatError as e:
        assert "too short" in str(e)
    else:
        raise AssertionError(f"read as a capture: truncated={got.truncated}, warnings={got.warnings}")


def test_first_section_header_broken_is_no_capture(readers):
    bad_bom = block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1))
    with pytest.raises(CaptureFormatError, match="byte-order magic 0x44332211"):
        readers.read(bad_bom)
    bad_trailer = bytearray(shb())
    bad_trailer[-4] ^= 1
    with pytest.raises(CaptureFormatError, match="trailing length"):
        readers.read(bytes(bad_trailer) + idb())
    with pytest.raises(CaptureFormatError, match="section header length 4294967280"):
        readers.read(b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 0xFFFFFFF0) + struct.pack("<I", 0x1A2B3C4D))
    with pytest.raises(CaptureFormatError, match="unsupported pcapng version 2"):
        readers.read(block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)))
    with pytest.raises(CaptureFormatError, match="section header too short"):
        readers.read(block("<", 0x0A0D0D0A, struct.pack("<I", 0x1A2B3C4D)))


def test_not_a_capture(tmp_path, readers):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"<html><body>not found</body></html>")
    with pytest.raises(CaptureFormatError) as exc:
        readers.read(path)
    assert str(exc.value) == f"{path}: not a pcap or pcapng file (magic 0x3c68746d)"
    assert isinstance(exc.value, ValueError)
    with pytest.raises(CaptureFormatError, match=r"<stream>: not a pcap or pcapng file \(magic 0xd4c3b2a2\)"):
        readers.read(b"\xd4\xc3\xb2\xa2" + b"\0" * 20)


def test_empty_and_missing_files(tmp_path, readers):
    empty = tmp_path / "empty.pcapng"
    empty.write_bytes(b"")
    with pytest.raises(CaptureFormatError) as exc:
        readers.read(empty)
    assert str(exc.value) == f"{empty}: not a pcap or pcapng file (empty or shorter than 4 bytes)"
    with pytest.raises(CaptureFormatError, match="cannot open"):
        list(read_packets(tmp_path / "missing.pcapng"))
    # a file holding only its header is an empty capture, not damage
    for data in (pcap_header(), shb(), GOOD):
        got = readers.read(data)
        assert (got.packets, got.damage, got.truncated, got.warnings) == ([], [], False, [])


def test_ten_damage_warnings_then_a_summary(readers):
    data = GOOD + b"".join(epb("<", 5, i, b"bad") for i in range(25)) + epb("<", 0, 1, b"ok")
    got = readers.read(data)
    assert [p.data for p in got.packets] == [b"ok"]
    assert len(got.damage) == 25 and all(d.skipped for d in got.damage)
    assert [d.offset for d in got.damage] == [AFTER + 36 * i for i in range(25)]
    msgs = [m for c, m in got.warnings if c is CaptureDamagedWarning]
    assert msgs[:10] == [d.text("<stream>") for d in got.damage[:10]]
    assert msgs[10:] == ["<stream>: 15 more damaged records"]


def test_damage_note_text():
    assert Damage(12, "what", True).text("f") == "f: damaged at byte 12: what; record skipped"
    assert Damage(13, "what", False).text("f") == "f: damaged at byte 13: what; reading stopped there"


def test_block_length_not_a_multiple_of_four_stops(readers):
    odd = struct.pack("<II", 6, 33) + struct.pack("<IIIII", 0, 0, 1, 1, 1) + b"x" + struct.pack("<I", 33)
    got = readers.read(GOOD + odd + epb("<", 0, 1, b"ok"))
    assert got.packets == []
    assert [(d.offset, d.skipped) for d in got.damage] == [(AFTER, False)]


# --------------------------------------------------------------------------
# linear work: one huge record is read in one piece


class CountingFile(io.RawIOBase):
    """A binary file that counts the read calls made on it and the bytes they asked for."""

    def __init__(self, f) -> None:
        self.f = f
        self.calls = 0
        self.asked = 0
        self.delivered = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.calls += 1
        self.asked += len(b)
        n = self.f.readinto(b)
        self.delivered += n or 0
        return n

    def read(self, n=-1):
        assert n is not None and n >= 0, "the reader asked for the whole file"
        self.calls += 1
        self.asked += n
        data = self.f.read(n)
        self.delivered += len(data)
        return data


class ReadOnlyFile:
    """The same without readinto: the reader must fall back to read()."""

    def __init__(self, f) -> None:
        self.counting = CountingFile(f)

    def read(self, n=-1):
        return self.counting.read(n)


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
@pytest.mark.parametrize("api", ["readinto", "read"])
def test_a_64_mib_record_is_read_in_one_piece(tmp_path, reader_module, fmt, api):
    size = 64 << 20
    payload = b"\xab" * size
    path = tmp_path / f"big.{fmt}"
    if fmt == "pcapng":
        _big_capture(path)
    else:
        path.write_bytes(pcap_header() + pcap_record("<", 1, 0, payload) + pcap_record("<", 2, 0, b"after"))
    total = path.stat().st_size
    with open(path, "rb", buffering=0) as raw_file:
        wrapped = CountingFile(raw_file) if api == "readinto" else ReadOnlyFile(raw_file)
        counter = wrapped if api == "readinto" else wrapped.counting
        r = reader_module.Reader(wrapped)
        assert r.next() == 1 and r.rec_caplen == size
        assert r.buf[r.rec_off:r.rec_off + 16] == payload[:16] and r.buf[r.rec_off + size - 1] == 0xAB
        assert r.next() == 1 and r.record() == b"after" and r.next() == 0
    assert counter.delivered == total
    # Linear: a first chunk, then the rest of the record in one request, then the rest of the file.
    # Growing the buffer chunk by chunk would take some 64 requests; re-reading the record as it
    # grows would ask for gigabytes.
    assert counter.calls <= 6, counter.calls
    assert counter.asked <= 4 * total, counter.asked


def _big_capture(path: Path) -> int:
    with open(path, "wb") as f:
        f.write(GOOD + epb("<", 0, 1, b"\xab" * (64 << 20)) + epb("<", 0, 2, b"after"))
    return path.stat().st_size


def test_requests_after_a_huge_record_stay_near_the_file_size(tmp_path, reader_module):
    path = tmp_path / "big.pcapng"
    total = _big_capture(path)
    with open(path, "rb", buffering=0) as raw_file:
        counter = CountingFile(raw_file)
        r = reader_module.Reader(counter)
        while r.next():
            pass
    assert counter.asked <= total + 2 * compiled_reader.CHUNK, counter.asked


def test_reader_streams_instead_of_loading_everything(reader_module):
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("eth0")
    big = frame(1, b"y" * 1400)
    for i in range(2000):  # about 3 MB
        w.write_packet(0, T0 + i, big)
    size = buf.tell()
    src = CountingFile(io.BytesIO(buf.getvalue()))
    r = reader_module.Reader(src)
    assert r.next() == 1 and r.record() == big
    assert src.delivered <= compiled_reader.CHUNK < size / 2


# --------------------------------------------------------------------------
# real captures from Zeek's test suite


def test_reads_every_zeek_trace_without_damage(readers):
    traces = zeek_traces()
    assert len(traces) >= 30
    for t in traces:
        got = readers.read(ZEEK / t["trace"])
        assert got.format == t["format"], t["trace"]
        assert got.packets and got.packets_read == len(got.packets), t["trace"]
        assert (got.damage, got.truncated, got.warnings) == ([], False, []), t["trace"]
        assert {i.linktype for i in got.interfaces} == set(t["linktypes"]), t["trace"]


@pytest.mark.parametrize(
    "name",
    ["tls__irc-starttls.pcap", "irc-dcc-send.pcapng", "ldap__missing_ldap_logs.pcapng", "ftp__ipv6.pcap"],
)
def test_zeek_trace_matches_scapy_reader(readers, name):
    path = ZEEK / "traces" / name
    ours = readers.read(path).packets
    with RawPcapReader(str(path)) as scapy_reader:  # picks the pcap or pcapng reader by magic
        theirs = list(scapy_reader)
    assert len(ours) == len(theirs)
    assert [p.data for p in ours] == [data for data, _meta in theirs]
    for p, (_data, meta) in zip(ours, theirs):
        assert p.orig_len == meta.wirelen
        if hasattr(meta, "sec"):  # pcap metadata
            assert p.ts_ns // 1000 == meta.sec * 10**6 + meta.usec
        else:  # pcapng metadata
            assert p.ts_ns == ((meta.tshigh << 32) | meta.tslow) * 10**9 // meta.tsresol


def test_records_are_read_only_values():
    """The reader's records (written out, not made by dataclasses: see verifier.pcap.records) behave
    as frozen dataclasses did: equal and hashed by their fields in order, shown with them, read-only,
    and they survive pickling and copying (corpus mode sends them between processes)."""
    import copy
    import pickle

    from verifier.pcap.records import Damage, InterfaceInfo

    made = [Damage(12, "what", True), RawPacket(1, T0, 0, "eth0", 1, b"\x00\x01", 60, "in"),
            InterfaceInfo(0, "eth0", None, 1, 262144), InterfaceStats(0, "a", 5000, received=10, comments=("c",))]
    for r in made:
        assert pickle.loads(pickle.dumps(r)) == r == copy.copy(r) == copy.deepcopy(r)
        assert hash(pickle.loads(pickle.dumps(r))) == hash(r)
        first = r.__slots__[0]
        with pytest.raises(AttributeError, match="read-only"):
            setattr(r, first, 99)
        with pytest.raises(AttributeError, match="read-only"):
            delattr(r, first)
        assert not hasattr(r, "__dict__")
    assert repr(made[0]) == "Damage(offset=12, what='what', skipped=True)"
    assert InterfaceStats(0, "a", 5000) != InterfaceStats(0, "a", 5001) and InterfaceStats(0, None, 0) != (0, None, 0)
    assert len({InterfaceStats(0, "a", 1), InterfaceStats(0, "a", 1), InterfaceStats(1, "a", 1)}) == 2
    assert InterfaceStats(0, "a", 1).comments == () and InterfaceStats(0, "a", 1, dropped=2, os_dropped=3).lost == 5
