"""Reading and writing captures: our writer, Scapy's writers, hand-made and real files."""

from __future__ import annotations

import io
import struct
import subprocess
import warnings
from decimal import Decimal

import pytest
from scapy.all import IP, TCP, CookedLinux, Ether, Raw
from scapy.utils import PcapNgReader, PcapNgWriter, PcapWriter, RawPcapReader

from verifier.pcap import (
    MAX_RECORD_LEN,
    CaptureFile,
    CaptureFormatError,
    CaptureTruncatedWarning,
    PcapngWriter,
    RawPacket,
    read_interface_stats,
    read_packets,
)

from .crafted import C, S, ZEEK, eth, needs_zeek, zeek_traces

T0 = 1_700_000_000_123_456_789  # not crafted.T0: the nanosecond digits show whether readers keep them


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


def walk_blocks(data: bytes) -> list[tuple[int, bytes]]:
    """An independent little-endian pcapng block walker, strict about the spec."""
    blocks, pos = [], 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", data, pos + total - 4)[0] == total
        blocks.append((btype, data[pos + 8 : pos + total - 4]))
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
        out[code] = body[pos + 4 : pos + 4 + length]
        pos += 4 + length + (-length % 4)
    raise AssertionError("options not terminated by opt_endofopt")


# --------------------------------------------------------------------------
# our writer


def test_writer_blocks_follow_the_spec():
    buf = io.BytesIO()
    write_sample(buf)
    blocks = walk_blocks(buf.getvalue())
    assert [b[0] for b in blocks] == [0x0A0D0D0A, 1, 1, 6, 6, 6, 5, 5]
    shb = blocks[0][1]
    assert struct.unpack_from("<IHHq", shb) == (0x1A2B3C4D, 1, 0, -1)
    assert options(shb[16:])[4] == b"unit-test"
    idb_opts = options(blocks[1][1][8:])
    assert idb_opts[2] == b"client:eth0" and idb_opts[3] == b"veth to router" and idb_opts[9] == b"\x09"
    assert struct.unpack_from("<HHI", blocks[2][1]) == (113, 0, 96)
    assert 3 not in options(blocks[2][1][8:])
    epb = blocks[3][1]
    caplen = struct.unpack_from("<I", epb, 12)[0]
    assert options(epb[20 + caplen + (-caplen % 4) :])[2] == struct.pack("<I", 2)
    # a packet without direction carries no options at all
    epb3 = blocks[5][1]
    assert len(epb3) == 20 + len(frame(3, b"abcde")) + (-len(frame(3, b"abcde")) % 4)


def test_round_trip_names_directions_timestamps_and_lengths():
    buf = io.BytesIO()
    write_sample(buf)
    buf.seek(0)
    cap = CaptureFile(buf)
    pkts = list(cap)
    assert cap.format == "pcapng" and not cap.truncated
    assert pkts == [
        RawPacket(0, T0, 0, "client:eth0", 1, frame(1), len(frame(1)), "out"),
        RawPacket(1, T0 + (5 << 32) + 7, 1, "server:eth0", 113, frame(2, b"xxx"), 500, "in"),
        RawPacket(2, T0 + 2, 0, "client:eth0", 1, frame(3, b"abcde"), len(frame(3, b"abcde")), None),
    ]
    assert [(i.name, i.description, i.linktype, i.snaplen) for i in cap.interfaces] == [
        ("client:eth0", "veth to router", 1, 0),
        ("server:eth0", None, 113, 96),
    ]


def test_interface_statistics_round_trip(tmp_path):
    path = tmp_path / "stats.pcapng"
    with open(path, "wb") as f:
        write_sample(f)
    stats = read_interface_stats(path)
    assert [(s.iface_name, s.ts_ns, s.received, s.dropped) for s in stats] == [
        ("client:eth0", T0 + 10, 3, 1),
        ("server:eth0", T0 + 11, None, 42),
    ]


def test_writer_rejects_unknown_interface_and_direction():
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="interface id 0"):
        w.write_packet(0, T0, b"x")
    w.add_interface("eth0")
    with pytest.raises(ValueError, match="direction"):
        w.write_packet(0, T0, b"x", direction="sideways")


def test_scapy_reads_our_pcapng(tmp_path):
    path = tmp_path / "ours.pcapng"
    with open(path, "wb") as f:
        write_sample(f)
    got = [(bytes(p), p.time, p.sniffed_on, p.direction, p.wirelen) for p in PcapNgReader(str(path))]
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
    with open(path, "wb") as f:
        write_sample(f)
    fields = ["frame.interface_name", "frame.time_epoch", "frame.len", "frame.cap_len", "frame.packet_flags_direction"]
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["client:eth0", "1700000000.123456789", "54", "54", "0x00000002"],
        ["server:eth0", f"{(T0 + (5 << 32) + 7) // 10**9}.{(T0 + (5 << 32) + 7) % 10**9:09d}", "500", "57", "0x00000001"],
        ["client:eth0", "1700000000.123456791", "59", "59", ""],
    ]


# --------------------------------------------------------------------------
# Scapy's writers


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("endianness", ["<", ">"])
def test_reads_scapy_pcap(tmp_path, nano, endianness):
    path = tmp_path / "scapy.pcap"
    pkts = []
    for i in range(3):
        p = CookedLinux(pkttype=4) / IP() / TCP(seq=i)
        p.time = Decimal(f"{1_700_000_000 + i}.123456{789 if nano else 0}")
        pkts.append(p)
    w = PcapWriter(str(path), linktype=113, nano=nano, endianness=endianness)
    w.write(pkts)
    w.close()
    got = list(read_packets(path))
    assert [g.data for g in got] == [bytes(p) for p in pkts]
    assert {g.linktype for g in got} == {113}
    assert [g.index for g in got] == [0, 1, 2]
    assert got[2].ts_ns == 1_700_000_002_123_456_000 + (789 if nano else 0)
    assert got[0].iface == 0 and got[0].iface_name is None and got[0].direction is None


def test_reads_scapy_pcapng_with_interface_names(tmp_path):
    path = tmp_path / "scapy.pcapng"
    w = PcapNgWriter(str(path))
    for i, iface in enumerate(["veth0", "veth1", "veth0"]):
        p = eth() / IP() / TCP(seq=i)
        p.time = 1_700_000_000.5 + i
        p.sniffed_on = iface
        w.write(p)
    w.close()
    got = list(read_packets(path))
    assert [g.iface_name for g in got] == ["veth0", "veth1", "veth0"]
    assert [g.ts_ns for g in got] == [1_700_000_000_500_000_000 + i * 10**9 for i in range(3)]
    assert [TCP in Ether(g.data) and Ether(g.data)[TCP].seq for g in got] == [0, 1, 2]


# --------------------------------------------------------------------------
# hand-made pcapng features our writer does not produce


def block(bo: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(bo + "II", btype, len(body) + 12) + body + struct.pack(bo + "I", len(body) + 12)


def opt(bo: str, code: int, value: bytes) -> bytes:
    return struct.pack(bo + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(bo: str) -> bytes:
    return block(bo, 0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(bo: str, name: str, *extra: bytes) -> bytes:
    opts = opt(bo, 2, name.encode()) + b"".join(extra) + opt(bo, 0, b"")
    return block(bo, 1, struct.pack(bo + "HHI", 1, 0, 0) + opts)


def epb(bo: str, iface: int, ts: int, data: bytes, flags: int | None = None) -> bytes:
    body = struct.pack(bo + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
    body += b"\0" * (-len(data) % 4)
    if flags is not None:
        body += opt(bo, 1, b"a comment") + opt(bo, 2, struct.pack(bo + "I", flags)) + opt(bo, 0, b"")
    return block(bo, 6, body)


def test_sections_byte_orders_resolutions_and_old_block_types():
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
        ]
    )
    cap = CaptureFile(io.BytesIO(data))
    got = list(cap)
    assert [(p.index, p.iface, p.iface_name, p.data, p.direction) for p in got] == [
        (0, 0, "be0", b"AAAA", "in"),
        (1, 1, "le0", b"SIMPLE", None),
        (2, 2, "le1", b"PB", None),
        (3, 1, "le0", b"CC", "out"),
    ]
    assert got[0].ts_ns == 103 * 10**9
    assert got[1].ts_ns == got[0].ts_ns  # SPB has no timestamp: keeps the last one
    assert got[2].ts_ns == 1500 * 10**6
    assert got[3].ts_ns == 1_700_000_000_000_001_000
    assert [i.name for i in cap.interfaces] == ["be0", "le0", "le1"]


def test_kuznetzov_modified_pcap_records():
    header = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 10, 5, 3, 3) + struct.pack("<IHBx", 2, 0x0800, 0) + b"abc"
    (p,) = read_packets(io.BytesIO(header + rec))
    assert (p.ts_ns, p.data) == (10_000_005_000, b"abc")


def test_capture_file_can_be_iterated_twice(tmp_path):
    path = tmp_path / "twice.pcapng"
    with open(path, "wb") as f:
        write_sample(f)
    cap = CaptureFile(path)
    assert list(cap) == list(cap)
    assert len(cap.interfaces) == 2 and len(cap.stats) == 2


def test_power_of_two_resolution_is_exact():
    ts = (1_700_000_000 << 30) + (1 << 29)  # .5 s at 2^-30 resolution
    data = shb("<") + idb("<", "x", opt("<", 9, bytes([0x80 | 30]))) + epb("<", 0, ts, b"z")
    (p,) = read_packets(io.BytesIO(data))
    assert p.ts_ns == 1_700_000_000_500_000_000


# --------------------------------------------------------------------------
# errors


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_not_a_capture(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"<html><body>not found</body></html>")
    with pytest.raises(CaptureFormatError) as exc:
        list(read_packets(path))
    assert one_line(exc) == f"{path}: not a pcap or pcapng file (magic 0x3c68746d)"
    assert isinstance(exc.value, ValueError)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.pcapng"
    empty.write_bytes(b"")
    with pytest.raises(CaptureFormatError, match="empty"):
        list(read_packets(empty))
    with pytest.raises(CaptureFormatError, match="cannot open"):
        list(read_packets(tmp_path / "missing.pcapng"))


def test_absurd_lengths():
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    pcap += struct.pack("<IIII", 1, 0, MAX_RECORD_LEN + 1, 60)
    with pytest.raises(CaptureFormatError) as exc:
        list(read_packets(io.BytesIO(pcap)))
    assert "absurd length" in one_line(exc) and "at byte 24" in str(exc.value)

    ng = shb("<") + struct.pack("<II", 6, 0xFFFFFFF0) + b"\0" * 64
    with pytest.raises(CaptureFormatError, match="absurd length"):
        list(read_packets(io.BytesIO(ng)))


def test_inconsistent_pcapng_blocks():
    bad_trailer = bytearray(shb("<") + idb("<", "x") + epb("<", 0, 1, b"data"))
    bad_trailer[-1] = 0x7F
    with pytest.raises(CaptureFormatError, match="trailing length"):
        list(read_packets(io.BytesIO(bytes(bad_trailer))))
    no_iface = shb("<") + epb("<", 3, 1, b"data")
    with pytest.raises(CaptureFormatError, match="interface 3 but only 0"):
        list(read_packets(io.BytesIO(no_iface)))


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_file_warns_and_keeps_earlier_packets(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt}"
    if fmt == "pcap":
        w = PcapWriter(str(path), linktype=1)
        w.write([Ether(frame(i)) for i in range(3)])
        w.close()
    else:
        with open(path, "wb") as f:
            write_sample(f)
    whole = path.read_bytes()
    # cut inside the third packet record
    cut = whole.rfind(frame(3, b"abcde") if fmt == "pcapng" else frame(2)) + 10
    path.write_bytes(whole[:cut])
    cap = CaptureFile(path)
    with pytest.warns(CaptureTruncatedWarning) as rec:
        got = list(cap)
    assert len(got) == 2 and cap.truncated
    msg = str(rec[0].message)
    assert str(path) in msg and "read 2 packets" in msg


def test_truncated_header_only_warns(tmp_path):
    path = tmp_path / "tiny.pcap"
    path.write_bytes(struct.pack("<I", 0xA1B2C3D4) + b"\x02\x00")
    with pytest.warns(CaptureTruncatedWarning, match="read 0 packets"):
        assert list(read_packets(path)) == []


def test_reader_streams_instead_of_loading_everything():
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("eth0")
    big = frame(1, b"y" * 1400)
    for i in range(2000):  # about 3 MB
        w.write_packet(0, T0 + i, big)
    size = buf.tell()

    class CountingReader(io.BytesIO):
        consumed = 0

        def read(self, n=-1):
            assert n is not None and n >= 0, "reader asked for the whole file"
            chunk = super().read(n)
            CountingReader.consumed += len(chunk)
            return chunk

    src = CountingReader(buf.getvalue())
    first = next(read_packets(src))
    assert first.data == big
    assert CountingReader.consumed < size / 2


def test_raw_packet_is_frozen():
    buf = io.BytesIO()
    write_sample(buf)
    buf.seek(0)
    p = next(read_packets(buf))
    with pytest.raises(AttributeError):
        p.index = 5  # type: ignore[misc]


# --------------------------------------------------------------------------
# real captures from Zeek's test suite


@needs_zeek
def test_reads_every_zeek_trace_without_error():
    traces = zeek_traces()
    assert len(traces) >= 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a truncation warning would fail the test
        for t in traces:
            cap = CaptureFile(ZEEK / t["trace"])
            n = sum(1 for _ in cap)
            assert cap.format == t["format"], t["trace"]
            assert n > 0, t["trace"]
            assert {i.linktype for i in cap.interfaces} == set(t["linktypes"]), t["trace"]


@needs_zeek
@pytest.mark.parametrize(
    "name",
    ["tls__irc-starttls.pcap", "irc-dcc-send.pcapng", "ldap__missing_ldap_logs.pcapng", "ftp__ipv6.pcap"],
)
def test_zeek_trace_matches_scapy_reader(name):
    path = ZEEK / "traces" / name
    ours = list(read_packets(path))
    theirs = list(RawPcapReader(str(path)))  # picks the pcap or pcapng reader by magic
    assert len(ours) == len(theirs)
    assert [p.data for p in ours] == [data for data, _meta in theirs]
    first_meta = theirs[0][1]
    if hasattr(first_meta, "sec"):  # pcap metadata
        assert ours[0].ts_ns // 1000 == first_meta.sec * 10**6 + first_meta.usec
    else:  # pcapng metadata
        ts = (first_meta.tshigh << 32) | first_meta.tslow
        assert ours[0].ts_ns == ts * 10**9 // first_meta.tsresol
