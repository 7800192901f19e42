"""Packet sockets' TPACKET_V3 receive rings, merged in time order into pcapng packet blocks.

The capture agent (`verifier.capture.agent`) gives each interface's packet socket a receive ring
(``PACKET_RX_RING``, version 3, as libpcap does): the kernel writes packets straight into memory this
process has mapped, in blocks, and hands a block over when it is full or when its timeout expires.
`Ring` walks one socket's blocks; `Merger` takes the packets of several rings in timestamp order and
writes each as a pcapng Enhanced Packet Block (nanosecond timestamp, direction in ``epb_flags``),
then gives the blocks back to the kernel. No Python object is made per packet.

This module is plain Python and, compiled by Cython when the package is installed (`ring.pxd` gives
the C types), the engine that keeps up with a SYN flood: the same source either way
(``VERIFIER_PURE=1`` runs it as Python, for the tests' comparison).

Time order across rings: a ring's last block may still be filling. `Merger.pump` takes a packet out
only once no other ring can still produce an earlier one: each ring says up to when it is complete
(`Ring.frontier`): the time of its last handed-over packet if the kernel's current block already
holds packets, else "now" less a small slack (packets are stamped a little before they reach the
ring). Blocks wait for that, at most one block timeout, then go back.

Time order within a ring: the kernel puts packets in a ring in the order it takes them, and two CPUs
may stamp two packets a little out of that order (seen here: 169 ns, once in 160,000 packets of a
SYN flood on a forwarding interface). So the packets taken out are not written at once: they wait,
encoded, in the output buffer, each put back before any with a later stamp (`Merger._place`, rare
and cheap), and only those older than the bound less the slack go to the file (`Merger._flush_upto`).
A packet stamped more than the slack out of order would stay where the kernel put it, counted in
`late`. `reordered` counts the packets put back in order.

The ring layout is the kernel's (include/uapi/linux/if_packet.h), in the machine's byte order:
``tpacket_block_desc`` (version, offset_to_priv, then ``tpacket_hdr_v1``: block_status, num_pkts,
offset_to_first_pkt, blk_len, seq_num, ts_first_pkt, ts_last_pkt) at the start of each block, and per
packet a ``tpacket3_hdr`` followed, at TPACKET_ALIGN(48), by a ``sockaddr_ll``.
"""

from __future__ import annotations

import mmap
import struct
import sys

import cython

TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4
ETH_P_8021Q = 0x8100
BIG_ENDIAN = sys.byteorder == "big"

# tpacket_block_desc
BLK_STATUS = 8
BLK_NUM_PKTS = 12
BLK_FIRST = 16
BLK_SEQ = 24
BLK_LAST_SEC = 40
BLK_LAST_NSEC = 44
# tpacket3_hdr, then the sockaddr_ll at TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) = 48
PKT_NEXT = 0
PKT_SEC = 4
PKT_NSEC = 8
PKT_SNAPLEN = 12
PKT_LEN = 16
PKT_STATUS = 20
PKT_MAC = 24
PKT_VLAN_TCI = 32
PKT_VLAN_TPID = 36
PKT_SLL_PKTTYPE = 48 + 10

# pcapng Enhanced Packet Block: type, length, interface, ts high, ts low, captured, original (28 bytes),
# the data padded to 4, then the epb_flags option (8 bytes), opt_endofopt (4) and the length again (4).
EPB = 0x00000006
EPB_FIXED = 28 + 8 + 4 + 4
EPB_FLAGS = 2
EPB_INBOUND = 1
EPB_OUTBOUND = 2

TS_MIN = -0x7FFFFFFFFFFFFFFF  # "before any packet" (one more than INT64_MIN: a literal C takes)
TS_MAX = 0x7FFFFFFFFFFFFFFF


def ring_request(block_size: int, block_count: int, timeout_ms: int) -> bytes:
    """The ``struct tpacket_req3`` for PACKET_RX_RING: one frame per block (TPACKET_V3 packs frames
    into blocks itself), the block timeout, no private area, no features."""
    return struct.pack("=7I", block_size, block_count, block_size, block_count, timeout_ms, 0, 0)


def _h32(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    """A 32-bit field of the ring, in the machine's byte order."""
    if BIG_ENDIAN:
        return ((cython.cast(cython.uint, p[i]) << 24) | (cython.cast(cython.uint, p[i + 1]) << 16)
                | (cython.cast(cython.uint, p[i + 2]) << 8) | p[i + 3])
    return ((cython.cast(cython.uint, p[i + 3]) << 24) | (cython.cast(cython.uint, p[i + 2]) << 16)
            | (cython.cast(cython.uint, p[i + 1]) << 8) | p[i])


def _h16(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    if BIG_ENDIAN:
        return (cython.cast(cython.uint, p[i]) << 8) | p[i + 1]
    return (cython.cast(cython.uint, p[i + 1]) << 8) | p[i]


def _h64(p: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.ulonglong:
    if BIG_ENDIAN:
        return (cython.cast(cython.ulonglong, _h32(p, i)) << 32) | _h32(p, i + 4)
    return (cython.cast(cython.ulonglong, _h32(p, i + 4)) << 32) | _h32(p, i)


def _rd32(o: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.uint:
    """A 32-bit pcapng field read back from the output buffer (little-endian)."""
    return ((cython.cast(cython.uint, o[i + 3]) << 24) | (cython.cast(cython.uint, o[i + 2]) << 16)
            | (cython.cast(cython.uint, o[i + 1]) << 8) | o[i])


def _epb_ts(o: cython.p_const_uchar, i: cython.Py_ssize_t) -> cython.longlong:
    """The timestamp of the Enhanced Packet Block at `i` of the output buffer."""
    return cython.cast(cython.longlong, (cython.cast(cython.ulonglong, _rd32(o, i + 12)) << 32) | _rd32(o, i + 16))


def _le32(o: cython.p_uchar, i: cython.Py_ssize_t, v: cython.uint) -> cython.void:
    """A 32-bit pcapng field: the files are little-endian whatever the machine."""
    o[i] = v & 0xFF
    o[i + 1] = (v >> 8) & 0xFF
    o[i + 2] = (v >> 16) & 0xFF
    o[i + 3] = (v >> 24) & 0xFF


def _fence() -> cython.void:
    """A full memory barrier: the block's status is read before its packets, and its packets are
    read before the block is given back (libpcap does the same with atomic loads and stores)."""
    if cython.compiled:
        verifier_ring_fence()  # noqa: F821 - declared in ring.pxd


class Ring:
    """One packet socket's mapped TPACKET_V3 receive ring, read block by block in the kernel's order.

    The blocks the kernel has handed over and that are not yet given back are `held`, starting at
    block `rel`; the packet cursor (`poff`, `pleft`, `head_ts`) walks them. `consumed` counts the
    packets taken out (written or, past a packet limit, discarded)."""

    def __init__(self, fd: int, block_size: int, block_count: int, iface: int, *, memory=None) -> None:
        if memory is None:
            self.mm = mmap.mmap(fd, block_size * block_count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.mem = self.mm
        else:  # memory laid out by hand (encode_epb), not a socket's mapping
            self.mm = None
            self.mem = memory
        self.bsize = block_size
        self.nblocks = block_count
        self.iface = iface
        self.rel = 0
        self.held = 0
        self.cursor = False
        self.poff = 0
        self.pleft = 0
        self.head_ts = 0
        self.next_seq = 1  # the kernel numbers blocks from 1 as it opens them
        self.last_ts = TS_MIN
        self.blocks = 0
        self.consumed = 0
        self.written = 0
        self.discarded = 0

    def collect(self) -> cython.int:
        """Take over the blocks the kernel has handed over since the last call; returns how many."""
        p: cython.p_uchar
        if cython.compiled:
            p = cython.address(self.mem[0])
        else:
            p = self.mem
        n: cython.int = 0
        o: cython.Py_ssize_t
        while self.held < self.nblocks:
            o = ((self.rel + self.held) % self.nblocks) * self.bsize
            if not (_h32(p, o + BLK_STATUS) & TP_STATUS_USER):
                break
            _fence()
            self.held += 1
            n += 1
            self.next_seq = _h64(p, o + BLK_SEQ) + 1
            if _h32(p, o + BLK_NUM_PKTS):
                self.last_ts = (cython.cast(cython.longlong, _h32(p, o + BLK_LAST_SEC)) * 1000000000
                                + _h32(p, o + BLK_LAST_NSEC))
        self.blocks += n
        return n

    def filling(self) -> cython.bint:
        """Does the block the kernel is filling now already hold packets (not yet handed over)?"""
        p: cython.p_uchar
        if cython.compiled:
            p = cython.address(self.mem[0])
        else:
            p = self.mem
        if self.held >= self.nblocks:
            return False  # every block is ours: the kernel holds nothing (it drops until one comes back)
        o: cython.Py_ssize_t = ((self.rel + self.held) % self.nblocks) * self.bsize
        if _h32(p, o + BLK_STATUS) & TP_STATUS_USER:
            return False  # handed over already (the next collect() takes it)
        # A block we gave back keeps its old number and count until the kernel opens it again.
        return _h64(p, o + BLK_SEQ) == self.next_seq and _h32(p, o + BLK_NUM_PKTS) != 0

    def frontier(self, now_ns: cython.longlong, slack_ns: cython.longlong) -> cython.longlong:
        """Up to which time every packet of this ring has been handed over."""
        if self.filling():
            return self.last_ts
        return now_ns - slack_ns

    def head(self) -> cython.bint:
        """Point the cursor at the next packet of the held blocks; False if there is none."""
        p: cython.p_uchar
        if cython.compiled:
            p = cython.address(self.mem[0])
        else:
            p = self.mem
        o: cython.Py_ssize_t
        n: cython.uint
        while not self.cursor:
            if self.held == 0:
                return False
            o = self.rel * self.bsize
            n = _h32(p, o + BLK_NUM_PKTS)
            if n == 0:
                self._release(p)
                continue
            self.pleft = n
            self.poff = o + _h32(p, o + BLK_FIRST)
            self.cursor = True
            self.head_ts = (cython.cast(cython.longlong, _h32(p, self.poff + PKT_SEC)) * 1000000000
                            + _h32(p, self.poff + PKT_NSEC))
        return True

    def advance(self) -> None:
        """Step past the head packet; a block whose packets are all out goes back to the kernel."""
        p: cython.p_uchar
        if cython.compiled:
            p = cython.address(self.mem[0])
        else:
            p = self.mem
        self.consumed += 1
        self.pleft -= 1
        if self.pleft == 0:
            self.cursor = False
            self._release(p)
            return
        self.poff += _h32(p, self.poff + PKT_NEXT)
        self.head_ts = (cython.cast(cython.longlong, _h32(p, self.poff + PKT_SEC)) * 1000000000
                        + _h32(p, self.poff + PKT_NSEC))

    def _release(self, p: cython.p_uchar) -> None:
        _fence()
        o: cython.Py_ssize_t = self.rel * self.bsize + BLK_STATUS
        p[o] = 0
        p[o + 1] = 0
        p[o + 2] = 0
        p[o + 3] = 0  # TP_STATUS_KERNEL
        self.rel = (self.rel + 1) % self.nblocks
        self.held -= 1

    def close(self) -> None:
        """Unmap the ring (the socket is the caller's)."""
        self.mem = None  # the typed view holds a buffer export, which mmap.close() refuses
        if self.mm is not None:
            self.mm.close()
            self.mm = None


class Merger:
    """Writes the packets of several rings to one pcapng stream, in timestamp order.

    `out` is the file the Section Header and Interface Description Blocks were written to (by
    `verifier.pcap.PcapngWriter`); each ring's `iface` is its interface id there. With `limit` > 0,
    at most that many packets are written in all; the rest are taken out and counted as discarded."""

    def __init__(self, rings: list, out, *, limit: int = 0, slack_ns: int = 2_000_000,
                 buffer_size: int = 1 << 22) -> None:
        self.rings = list(rings)
        self.out = out
        self.limit = limit
        self.slack_ns = slack_ns
        self.total = 0
        self.buf = bytearray(buffer_size)
        self.fill = 0
        self.reordered = 0
        self.late = 0
        self.flushed_ts = TS_MIN

    def full(self) -> cython.bint:
        """Has the packet limit been reached?"""
        return self.limit > 0 and self.total >= self.limit

    def holding(self) -> cython.bint:
        """Are packets waiting in held blocks (for a slower ring's frontier)?"""
        r: Ring
        for r in self.rings:
            if r.held:
                return True
        return False

    def filling(self) -> cython.bint:
        """Does any ring's current block hold packets the kernel has not handed over yet?"""
        r: Ring
        for r in self.rings:
            if r.filling():
                return True
        return False

    def pump(self, now_ns: cython.longlong, final: cython.bint) -> cython.longlong:
        """Take over handed-over blocks and write every packet that is safe to write in time order
        (with `final`, every packet held); returns the packets taken out. Each call ends with the
        packets in the file (one write)."""
        r: Ring
        best: Ring
        for r in self.rings:
            r.collect()
        bound: cython.longlong = TS_MAX
        f: cython.longlong
        if not final:
            for r in self.rings:
                f = r.frontier(now_ns, self.slack_ns)
                if f < bound:
                    bound = f
        n: cython.Py_ssize_t = 0
        best_ts: cython.longlong
        while True:
            best = None
            best_ts = TS_MAX
            for r in self.rings:
                if r.head() and r.head_ts <= bound and (best is None or r.head_ts < best_ts):
                    best = r
                    best_ts = r.head_ts
            if best is None:
                break
            if self.limit > 0 and self.total >= self.limit:
                best.discarded += 1
            else:
                self._write(best)
                best.written += 1
                self.total += 1
            best.advance()
            n += 1
        if final:
            self.flush()
        elif bound > TS_MIN + self.slack_ns:  # (a ring that has seen nothing says TS_MIN)
            self._flush_upto(bound - self.slack_ns)
        return n

    def _place(self, start: cython.Py_ssize_t, ts: cython.longlong) -> None:
        """Put the block just encoded at `start` back before the unwritten ones stamped later."""
        o: cython.p_uchar = self.buf
        q: cython.Py_ssize_t = start
        while q > 0 and _epb_ts(o, q - _rd32(o, q - 4)) > ts:
            q -= _rd32(o, q - 4)
        if q == start:
            return
        self.buf[q:self.fill] = self.buf[start:self.fill] + self.buf[q:start]  # same length: no move of buf
        self.reordered += 1

    def _flush_upto(self, limit: cython.longlong) -> None:
        """Write the buffered blocks stamped at or before `limit`; the later ones stay, moved to the
        start of the buffer, to be put in order with packets still to come."""
        o: cython.p_uchar = self.buf
        q: cython.Py_ssize_t = self.fill
        while q > 0 and _epb_ts(o, q - _rd32(o, q - 4)) > limit:
            q -= _rd32(o, q - 4)
        if q == 0:
            return
        self.flushed_ts = _epb_ts(o, q - _rd32(o, q - 4))
        self.out.write(memoryview(self.buf)[:q])
        rest: cython.Py_ssize_t = self.fill - q
        if rest:
            self.buf[0:rest] = self.buf[q:self.fill]
        self.fill = rest

    def _write(self, r: Ring) -> None:
        """The head packet of `r` as an Enhanced Packet Block, into the output buffer."""
        p: cython.p_uchar
        if cython.compiled:
            p = cython.address(r.mem[0])
        else:
            p = r.mem
        tci: cython.uint
        h: cython.Py_ssize_t = r.poff
        snap: cython.Py_ssize_t = _h32(p, h + PKT_SNAPLEN)
        wire: cython.Py_ssize_t = _h32(p, h + PKT_LEN)
        mac: cython.Py_ssize_t = h + _h16(p, h + PKT_MAC)
        status: cython.uint = _h32(p, h + PKT_STATUS)
        # The kernel takes a VLAN tag out of the frame into the header; put it back where it was
        # on the wire, as libpcap does (TPID from the header if it says it has one, else 802.1Q).
        vlan: cython.bint = (status & TP_STATUS_VLAN_VALID) != 0 and snap >= 12
        tpid: cython.uint = ETH_P_8021Q
        if vlan and (status & TP_STATUS_VLAN_TPID_VALID):
            tpid = _h16(p, h + PKT_VLAN_TPID)
        caplen: cython.Py_ssize_t = snap + 4 if vlan else snap
        origlen: cython.Py_ssize_t = wire + 4 if vlan else wire
        pad: cython.Py_ssize_t = (4 - (caplen & 3)) & 3
        total: cython.Py_ssize_t = EPB_FIXED + caplen + pad
        if self.fill + total > len(self.buf):
            # Packets still to come in this pump are stamped at least this one's time less the slack.
            self._flush_upto(r.head_ts - self.slack_ns)
            if self.fill + total > len(self.buf):
                self.flush()
            if total > len(self.buf):
                self.buf = bytearray(total)
        o: cython.p_uchar = self.buf
        i: cython.Py_ssize_t = self.fill
        ts: cython.ulonglong = cython.cast(cython.ulonglong, r.head_ts)
        _le32(o, i, EPB)
        _le32(o, i + 4, total)
        _le32(o, i + 8, r.iface)
        _le32(o, i + 12, (ts >> 32) & 0xFFFFFFFF)
        _le32(o, i + 16, ts & 0xFFFFFFFF)
        _le32(o, i + 20, caplen)
        _le32(o, i + 24, origlen)
        i += 28
        if vlan:
            _copy(o, i, p, mac, 12)
            o[i + 12] = (tpid >> 8) & 0xFF
            o[i + 13] = tpid & 0xFF
            tci = _h32(p, h + PKT_VLAN_TCI)
            o[i + 14] = (tci >> 8) & 0xFF
            o[i + 15] = tci & 0xFF
            _copy(o, i + 16, p, mac + 12, snap - 12)
        else:
            _copy(o, i, p, mac, snap)
        i += caplen
        for _ in range(pad):
            o[i] = 0
            i += 1
        direction: cython.uint = EPB_OUTBOUND if p[h + PKT_SLL_PKTTYPE] == PACKET_OUTGOING else EPB_INBOUND
        _le32(o, i, EPB_FLAGS | (4 << 16))
        _le32(o, i + 4, direction)
        _le32(o, i + 8, 0)  # opt_endofopt
        _le32(o, i + 12, total)
        start: cython.Py_ssize_t = self.fill
        self.fill = i + 16
        if r.head_ts < self.flushed_ts:
            self.late += 1
        elif start > 0 and _epb_ts(o, start - _rd32(o, start - 4)) > r.head_ts:
            self._place(start, r.head_ts)

    def flush(self) -> None:
        """Write every buffered block."""
        if self.fill:
            self.flushed_ts = _epb_ts(self.buf, self.fill - _rd32(self.buf, self.fill - 4))
            self.out.write(memoryview(self.buf)[:self.fill])
            self.fill = 0


def _copy(o: cython.p_uchar, i: cython.Py_ssize_t, p: cython.p_uchar, j: cython.Py_ssize_t,
          n: cython.Py_ssize_t) -> cython.void:
    if n <= 0:
        return
    if cython.compiled:
        memcpy(o + i, p + j, n)  # noqa: F821 - cimported in ring.pxd
    else:
        o[i:i + n] = p[j:j + n]


def encode_epb(iface: int, ts_ns: int, frame: bytes, *, orig_len: int | None = None,
               outgoing: bool = False, vlan: tuple[int, int] | None = None) -> bytes:
    """The Enhanced Packet Block `Merger` writes for one packet, from a ring laid out by hand (the
    unit tests compare it with `verifier.pcap.PcapngWriter`'s). `vlan` = (TPID, TCI) as the kernel
    reports a tag it took out of the frame."""
    bsize = 4096
    while bsize < 48 + 96 + len(frame):
        bsize *= 2
    ring = bytearray(bsize)
    first = 48  # after the block header
    mac = first + 80  # after the packet header (48) and the sockaddr_ll (20), aligned to 16
    status = TP_STATUS_USER
    tci = tpid = 0
    if vlan is not None:
        status |= TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID
        tpid, tci = vlan
    e = ">" if BIG_ENDIAN else "<"
    struct.pack_into(e + "IIIIIIQIIII", ring, 0, 3, 0, TP_STATUS_USER, 1, first, bsize, 1,
                     ts_ns // 10**9, ts_ns % 10**9, ts_ns // 10**9, ts_ns % 10**9)
    struct.pack_into(e + "IIIIIIHHIIH", ring, first, 0, ts_ns // 10**9, ts_ns % 10**9, len(frame),
                     len(frame) if orig_len is None else orig_len, status, mac - first, mac - first + 14,
                     0, tci, tpid)
    ring[first + PKT_SLL_PKTTYPE] = PACKET_OUTGOING if outgoing else 0
    ring[mac:mac + len(frame)] = frame
    out = _Sink()
    merger = Merger([Ring(-1, bsize, 1, iface, memory=ring)], out)
    merger.pump(0, True)
    return bytes(out.data)


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b) -> int:
        self.data += b
        return len(b)
