"""The capture agent's ring reader (verifier.capture.ring) on rings laid out by hand, no root.

The packet blocks it writes are byte for byte those of the pcapng writer (verifier.pcap.PcapngWriter)
and are read back by our reader; several rings are merged in timestamp order, a ring whose current
block is still filling holds the others back, a packet limit writes exactly that many, and every
block goes back to the kernel (status 0) once its packets are out. Each case runs on the compiled
module and on its Python source.
"""

from __future__ import annotations

import io
import struct
import sys

import pytest

from tests.unit.crafted import pure_module
from verifier.capture import ring as compiled_ring
from verifier.pcap import CaptureFile, PcapngWriter

ENGINES = {"compiled": compiled_ring, "python": pure_module("verifier.capture.ring")}
BSIZE = 4096
BIG = sys.byteorder == "big"
MAC = 80  # tp_mac: after the packet header (48) and the sockaddr_ll (20), aligned to 16


@pytest.fixture(params=sorted(ENGINES))
def ring(request):
    mod = ENGINES[request.param]
    if request.param == "compiled":
        assert not (mod.__spec__.origin or "").endswith(".py"), "the compiled ring module is not built (make setup)"
    return mod


def frame(n: int, tag: int) -> bytes:
    return bytes([tag]) * 12 + b"\x08\x00" + bytes((tag + i) & 0xFF for i in range(n - 14))


def lay_out(blocks: list[list[tuple[int, bytes, bool]]], *, open_block: list | None = None,
            seq0: int = 1) -> bytearray:
    """A TPACKET_V3 ring as the kernel leaves it: `blocks` handed over (status USER), each a list of
    (ts_ns, frame, outgoing); then, if `open_block` is given, one block the kernel is still filling
    (status KERNEL, the next sequence number). Host byte order, as the kernel writes it."""
    mem = bytearray(BSIZE * (len(blocks) + 1))
    e = ">" if BIG else "<"
    for b, pkts in enumerate([*blocks, open_block or []]):
        base = b * BSIZE
        status = 1 if b < len(blocks) else 0
        off = 48
        for k, (ts, data, out) in enumerate(pkts):
            size = (MAC + len(data) + 15) // 16 * 16
            nxt = size if k < len(pkts) - 1 else 0
            struct.pack_into(e + "IIIIIIHH", mem, base + off, nxt, ts // 10**9, ts % 10**9, len(data), len(data),
                             1, MAC, MAC + 14)
            mem[base + off + 48 + 10] = 4 if out else 0
            mem[base + off + MAC:base + off + MAC + len(data)] = data
            off += size
        last = pkts[-1][0] if pkts else 0
        struct.pack_into(e + "IIIIIIQIIII", mem, base, 3, 0, status, len(pkts), 48, off, seq0 + b,
                         0, 0, last // 10**9, last % 10**9)
        if b == len(blocks) and open_block is None:
            struct.pack_into(e + "I", mem, base + 12, 0)  # an empty, unopened block
            struct.pack_into(e + "Q", mem, base + 24, 0)
    return mem


def rings_of(mod, mems):
    return [mod.Ring(-1, BSIZE, len(m) // BSIZE, i, memory=m) for i, m in enumerate(mems)]


def read(data: bytes, names=("a", "b", "c")) -> list:
    head = io.BytesIO()
    w = PcapngWriter(head)
    for n in names:
        w.add_interface(n)
    return list(CaptureFile(io.BytesIO(head.getvalue() + data)))


@pytest.mark.parametrize("n", [14, 15, 16, 17, 60, 61, 62, 63, 1514])
@pytest.mark.parametrize("outgoing", [False, True])
def test_packet_block_is_the_writers_byte_for_byte(ring, n, outgoing):
    data = frame(n, 7)
    mine = ring.encode_epb(2, 1_700_000_000_123_456_789, data, outgoing=outgoing)
    ref = io.BytesIO()
    w = PcapngWriter(ref)
    for name in ("a", "b", "c"):
        w.add_interface(name)
    start = len(ref.getvalue())
    w.write_packet(2, 1_700_000_000_123_456_789, data, direction="out" if outgoing else "in")
    assert mine == ref.getvalue()[start:]


def test_a_cut_frame_keeps_its_wire_length(ring):
    data = frame(100, 3)
    mine = ring.encode_epb(0, 5, data, orig_len=65000)
    (pkt,) = read(mine)
    assert (pkt.data, pkt.orig_len, pkt.ts_ns, pkt.direction) == (data, 65000, 5, "in")


@pytest.mark.parametrize("tpid", [0x8100, 0x88A8])
def test_a_vlan_tag_the_kernel_took_out_is_put_back(ring, tpid):
    data = frame(60, 9)
    (pkt,) = read(ring.encode_epb(0, 1, data, vlan=(tpid, 0x2007), outgoing=True))
    assert pkt.data == data[:12] + struct.pack("!HH", tpid, 0x2007) + data[12:]
    assert pkt.orig_len == len(data) + 4 and pkt.direction == "out"


def test_rings_are_merged_in_time_order_and_blocks_go_back(ring):
    a = lay_out([[(10, frame(60, 1), True), (40, frame(61, 2), False)], [(70, frame(62, 3), True)]])
    b = lay_out([[(20, frame(63, 4), False), (30, frame(64, 5), False), (80, frame(65, 6), True)]])
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out)
    assert m.pump(10**9, True) == 6
    pkts = read(out.getvalue())
    assert [(p.ts_ns, p.iface_name, p.direction) for p in pkts] == [
        (10, "a", "out"), (20, "b", "in"), (30, "b", "in"), (40, "a", "in"), (70, "a", "out"), (80, "b", "out")]
    assert [p.data[0] for p in pkts] == [1, 4, 5, 2, 3, 6]
    assert (ra.written, rb.written, ra.consumed, rb.consumed) == (3, 3, 3, 3)
    # Each handed-over block is back with the kernel (status 0); nothing is held.
    e = ">I" if BIG else "<I"
    assert [struct.unpack_from(e, a, k * BSIZE + 8)[0] for k in range(2)] == [0, 0]
    assert struct.unpack_from(e, b, 8)[0] == 0
    assert not m.holding() and (ra.held, rb.held) == (0, 0)


def test_a_ring_still_filling_holds_the_others_back(ring):
    # Ring b's current block already holds a packet the kernel has not handed over: nothing of a
    # may be written past b's last handed-over packet (25), whatever the time.
    a = lay_out([[(10, frame(60, 1), True), (30, frame(60, 2), True), (50, frame(60, 3), True)]])
    b = lay_out([[(25, frame(60, 4), False)]], open_block=[(40, frame(60, 5), False)])
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out, slack_ns=0)
    assert m.pump(10**12, False) == 2
    assert m.filling()
    assert [p.ts_ns for p in read(out.getvalue())] == [10, 25]
    assert m.holding()  # a's block waits, with 30 and 50 in it
    # The kernel hands b's block over: now all of it goes out, in order.
    e = ">I" if BIG else "<I"
    struct.pack_into(e, b, BSIZE + 8, 1)
    assert m.pump(10**12, False) == 3
    assert [p.ts_ns for p in read(out.getvalue())] == [10, 25, 30, 40, 50]
    assert not m.holding()


def test_an_idle_ring_vouches_only_for_packets_older_than_the_slack(ring):
    a = lay_out([[(1000, frame(60, 1), True), (5000, frame(60, 2), True)]])
    b = lay_out([])  # nothing handed over, nothing filling
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out, slack_ns=2000)
    assert not m.filling()
    assert m.pump(4000, False) == 1  # 4000 - 2000: only the packet at 1000 is safe
    assert m.pump(7000, False) == 1
    assert [p.ts_ns for p in read(out.getvalue())] == [1000]  # 5000 waits a slack more (for reordering)
    m.pump(7000, True)
    assert [p.ts_ns for p in read(out.getvalue())] == [1000, 5000]


def test_packets_a_ring_holds_out_of_stamp_order_are_written_in_time_order(ring):
    """Two CPUs may stamp packets a little out of the order they reach the ring: the file is in
    time order all the same, within one pump..."""
    a = lay_out([[(10, frame(60, 1), True), (35, frame(61, 2), False), (30, frame(62, 3), True),
                  (50, frame(63, 4), True)]])
    b = lay_out([[(20, frame(64, 5), False), (40, frame(65, 6), False)]])
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out)
    assert m.pump(10**9, True) == 6
    pkts = read(out.getvalue())
    assert [(p.ts_ns, p.data[0]) for p in pkts] == [(10, 1), (20, 5), (30, 3), (35, 2), (40, 6), (50, 4)]
    assert m.reordered == 1 and m.late == 0


def test_an_inversion_across_two_pumps_is_put_in_order(ring):
    """...and across pumps: a packet stamped just before one already taken out, but handed over
    later, still goes before it, since packets within the slack of the bound stay in the buffer."""
    a = lay_out([[(100, frame(60, 1), True), (1000, frame(60, 2), True)]],
                open_block=[(990, frame(60, 3), True)])
    ra, = rings_of(ring, [a])
    out = io.BytesIO()
    m = ring.Merger([ra], out, slack_ns=50)
    assert m.pump(10**6, False) == 2  # a is filling: safe up to its last handed-over packet, 1000
    assert [p.ts_ns for p in read(out.getvalue())] == [100]  # 1000 is within the slack: it waits
    e = ">I" if BIG else "<I"
    struct.pack_into(e, a, BSIZE + 8, 1)  # the kernel hands over the block holding 990
    assert m.pump(10**6, False) == 1
    m.pump(10**6, True)
    assert [p.ts_ns for p in read(out.getvalue())] == [100, 990, 1000]
    assert m.reordered == 1 and m.late == 0


def test_a_packet_stamped_before_what_is_written_is_counted_late(ring):
    a = lay_out([[(100, frame(60, 1), True), (1000, frame(60, 2), True)]], open_block=[(10, frame(60, 3), True)])
    ra, = rings_of(ring, [a])
    out = io.BytesIO()
    m = ring.Merger([ra], out, slack_ns=50)
    m.pump(10**6, False)
    m.pump(10**6, True)  # 100 and 1000 are out
    e = ">I" if BIG else "<I"
    struct.pack_into(e, a, BSIZE + 8, 1)
    m.pump(10**6, True)
    assert [p.ts_ns for p in read(out.getvalue())] == [100, 1000, 10]
    assert m.late == 1


def test_a_block_given_back_is_not_taken_for_a_filling_one(ring):
    """A block we gave back keeps its old count until the kernel opens it again: its sequence number
    says it is not the current one, so it holds nothing back."""
    a = lay_out([[(10, frame(60, 1), True)]])
    b = lay_out([[(20, frame(60, 2), False)]], open_block=[(30, frame(60, 3), False)], seq0=1)
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out, slack_ns=0)
    m.pump(100, True)
    e = ">" if BIG else "<"
    # b's second block: handed over, read, given back; its header still says 1 packet, seq 2.
    struct.pack_into(e + "I", b, BSIZE + 8, 1)
    m.pump(100, True)
    assert rb.consumed == 2 and rb.rel == 0  # wrapped round to block 0, which the kernel has not reopened
    assert not rb.filling()
    struct.pack_into(e + "I", b, 12, 0)  # the kernel opens block 0 again, as block 3...
    struct.pack_into(e + "Q", b, 24, 3)
    assert not rb.filling()
    struct.pack_into(e + "I", b, 12, 1)  # ...and puts a packet in it
    assert rb.filling()


def test_a_packet_limit_writes_exactly_that_many_in_time_order(ring):
    a = lay_out([[(10, frame(60, 1), True), (30, frame(60, 2), True), (50, frame(60, 3), True)]])
    b = lay_out([[(20, frame(60, 4), False), (40, frame(60, 5), False)]])
    ra, rb = rings_of(ring, [a, b])
    out = io.BytesIO()
    m = ring.Merger([ra, rb], out, limit=3)
    assert not m.full()
    assert m.pump(10**9, True) == 5
    assert m.full() and m.total == 3
    assert [p.ts_ns for p in read(out.getvalue())] == [10, 20, 30]
    assert (ra.written, ra.discarded, rb.written, rb.discarded) == (2, 1, 1, 1)
