"""The one reader of capture files: classic pcap and pcapng, streamed front to back.

`Reader(source).next()` steps from packet record to packet record; after it returns 1 the record's
bytes are `buf[rec_off:rec_off + rec_caplen]` and its context is in the `rec_*` fields. Nothing is
copied per packet: the decoder (`verifier.wire.decoder`) reads the frame where it lies in the read
buffer. Python code iterates `verifier.pcap.CaptureFile` instead, which yields `RawPacket`s.

This module is the readable reference and, compiled by Cython when the package is installed
(`reader.pxd` gives the C types), the fast engine: the same source either way. It is written by
hand, not with Scapy's readers, because the replay benchmark needs well over a million packets per
second end to end and Scapy reads a few tens of thousands.

Hostile input is a tested property (tests/unit/test_pcap.py, the fuzz corpus in
tests/data/fuzz): every length is checked before it is used, work per record is linear in its
size (a record larger than the read buffer is read in one piece), and damage never raises past
the file header. A record whose framing is intact but whose content is wrong (an undefined
interface, a captured length larger than its block, a timestamp out of range) is skipped with a
`Damage` note; broken framing (a bad block length or trailer, a bad byte-order magic) stops the
stream there with a note; a file that ends inside a record is `truncated`. Each note is also
emitted as a warning (`CaptureDamagedWarning`, `CaptureTruncatedWarning`) naming the byte offset.

Formats: pcap (both byte orders, micro- and nanosecond magics, Kuznetzov's modified pcap) and
pcapng (several sections of either byte order, EPB/PB/SPB packets, IDB options if_name,
if_description, if_tsresol and if_tsoffset, ISB counters). References: draft-ietf-opsawg-pcap,
draft-ietf-opsawg-pcapng.
"""

from __future__ import annotations

import os
import warnings

import cython

from verifier.pcap.records import (MAX_RECORD_LEN, CaptureDamagedWarning, CaptureFormatError,
                                   CaptureTruncatedWarning, Damage, InterfaceInfo, InterfaceStats)

CHUNK = 1 << 20
MAX_WARNINGS = 10  # damage notes emitted as warnings; the rest are counted
# Packets lost on an interface, as the engine holds them: pcapng's counters are any 64-bit value, and
# isb_ifdrop + isb_osdrop can be more; the sum is held saturated at the largest 64-bit count.
LOST_MAX = (1 << 64) - 1
INT64_MAX = 0x7FFFFFFFFFFFFFFF

# pcapng block types
SHB = 0x0A0D0D0A
IDB = 0x00000001
PB = 0x00000002  # obsolete Packet Block
SPB = 0x00000003
ISB = 0x00000005
EPB = 0x00000006

# directions, as epb_flags bits 0-1 say
DIR_NONE = 0
DIR_IN = 1
DIR_OUT = 2
DIRECTIONS = (None, "in", "out", None)

# how an interface's timestamp units become ns
TS_MUL = 0  # ns = units * mul
TS_DIV = 1  # ns = units // div
TS_SHIFT = 2  # ns = units * 10^9 / 2^shift


class Iface:
    """An interface of the current pcapng section (or the one pcap interface)."""

    def __init__(self, id_: int, name, description, linktype: int, snaplen: int) -> None:
        self.id = id_
        self.name = name
        self.description = description
        self.linktype = linktype
        self.snaplen = snaplen
        self.kind = TS_MUL
        self.mul = 1000  # default resolution: microseconds
        self.div = 1
        self.shift = 0
        self.limit = INT64_MAX // 1000
        self.offset_ns = 0
        self.lost = 0  # from ISBs: packets the capture lost on this interface

    def info(self) -> InterfaceInfo:
        return InterfaceInfo(self.id, self.name, self.description, self.linktype, self.snaplen)


def _u16(p: cython.p_const_uchar, i: cython.Py_ssize_t, be: cython.bint) -> cython.uint:
    if be:
        return (cython.cast(cython.uint, p[i]) << 8) | p[i + 1]
    return (cython.cast(cython.uint, p[i + 1]) << 8) | p[i]


def _u32(p: cython.p_const_uchar, i: cython.Py_ssize_t, be: cython.bint) -> cython.uint:
    if be:
        return ((cython.cast(cython.uint, p[i]) << 24) | (cython.cast(cython.uint, p[i + 1]) << 16)
                | (cython.cast(cython.uint, p[i + 2]) << 8) | p[i + 3])
    return ((cython.cast(cython.uint, p[i + 3]) << 24) | (cython.cast(cython.uint, p[i + 2]) << 16)
            | (cython.cast(cython.uint, p[i + 1]) << 8) | p[i])


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


class Reader:
    """One pass over a pcap or pcapng file (a path, or a binary file object read from where it stands).

    `next()` returns 1 with a packet record in `rec_*`, 0 at the end. `format`, `interfaces`,
    `stats`, `damage`, `truncated` and `packets_read` describe what has been read so far.
    Raises CaptureFormatError only when the file is not a capture at all (or cannot be opened).
    """

    def __init__(self, source, chunk: int = CHUNK) -> None:
        self.owns = False
        if isinstance(source, (str, bytes, os.PathLike)):
            self.name = os.fsdecode(source)
            try:
                self.f = open(source, "rb")
            except OSError as e:
                raise CaptureFormatError(f"{self.name}: cannot open ({e.strerror})") from None
            self.owns = True
        else:
            name = getattr(source, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
            self.f = source
        self.chunk = chunk
        self.buf = bytearray()
        self.pos = 0
        self.end = 0
        self.base = 0
        self.eof = False
        self.fmt = 0
        self.be = False
        self.nano = False
        self.extra = 0
        self.started = False
        self.finished = False
        self.sections = 0
        self.ifaces = []  # Iface of the current section
        self.all_ifaces = []  # every Iface of the file, by file-wide id
        self.stats = []
        self.damage = []
        self.damage_count = 0
        self.truncated = False
        self.packets_read = 0
        self.last_ts = 0
        self.rec_off = 0
        self.rec_caplen = 0
        self.rec_orig_len = 0
        self.rec_ts = 0
        self.rec_iface = 0
        self.rec_linktype = 0
        self.rec_dir = DIR_NONE
        self.rec_index = 0

    # ---- the read buffer

    def _fill(self, n: cython.Py_ssize_t) -> cython.bint:
        """Make `n` bytes available at `pos`; False if the file ends first. The buffer is one
        bytearray, refilled in place with readinto (no new allocation, so no new pages, per chunk).
        A record larger than the buffer grows it only as its bytes arrive, four times over at most
        per step (the last step straight to the record's end), so the work stays linear in the
        record's size and a record that claims more than the file holds costs no more memory than
        a few times what the file delivered. After a huge record the buffer is given back."""
        have: cython.Py_ssize_t = self.end - self.pos
        if have >= n:
            return True
        if self.eof:
            return False
        buf = self.buf
        if self.pos:
            buf[0:have] = buf[self.pos:self.end]
            self.base += self.pos
            self.pos = 0
            self.end = have
        want: cython.Py_ssize_t = n if n > self.chunk else self.chunk
        size: cython.Py_ssize_t = len(buf)
        if size > 4 * want:  # a huge record has gone by: give its memory back
            del buf[want:]
            size = want
        elif size < self.chunk:
            buf.extend(bytes(self.chunk - size))
            size = self.chunk
        reader = getattr(self.f, "readinto", None)
        while self.end < n:
            if self.end * 2 >= size and size < want:  # mostly full, and the record goes on: grow
                grow: cython.Py_ssize_t = want if want <= 8 * size else 4 * size
                buf.extend(bytes(grow - size))
                size = grow
            lim: cython.Py_ssize_t = size if size < want else want  # no more is asked than is needed
            if reader is not None:
                got = reader(memoryview(buf)[self.end:lim])
            else:  # a file object without readinto
                chunk = self.f.read(lim - self.end)
                got = len(chunk) if chunk else 0
                buf[self.end:self.end + got] = chunk
            if not got:
                self.eof = True
                break
            self.end += got
        return self.end >= n

    def offset(self) -> cython.longlong:
        """The file offset of the next byte to parse."""
        return self.base + self.pos

    # ---- damage

    def _note(self, offset: cython.longlong, what: str, skipped: cython.bint) -> None:
        self.damage_count += 1
        if len(self.damage) < 1000:
            self.damage.append(Damage(offset, what, skipped))
        if self.damage_count <= MAX_WARNINGS:
            warnings.warn(CaptureDamagedWarning(Damage(offset, what, skipped).text(self.name)), stacklevel=2)

    def _truncated(self, offset: cython.longlong) -> None:
        self.truncated = True
        warnings.warn(CaptureTruncatedWarning(
            f"{self.name}: capture is truncated in the middle of a record at byte {offset}; read "
            f"{self.packets_read} packets before it"), stacklevel=2)

    # ---- the stream

    def next(self) -> cython.int:
        """Step to the next packet record: 1 if there is one (see `rec_*`), 0 at the end."""
        if self.finished:
            return 0
        if not self.started:
            self.started = True
            self._header()
        if self.fmt == 1:
            r = self._next_pcap()
        else:
            r = self._next_pcapng()
        if r:
            self.rec_index = self.packets_read
            self.packets_read += 1
        else:
            self.finished = True
            if self.damage_count > MAX_WARNINGS:
                warnings.warn(CaptureDamagedWarning(
                    f"{self.name}: {self.damage_count - MAX_WARNINGS} more damaged records"), stacklevel=2)
        return r

    def _header(self) -> None:
        if not self._fill(4):
            raise CaptureFormatError(f"{self.name}: not a pcap or pcapng file (empty or shorter than 4 bytes)")
        p: cython.p_const_uchar = self.buf
        i: cython.Py_ssize_t = self.pos
        magic = _u32(p, i, False)
        if magic == SHB:
            self.fmt = 2
            if not self._fill(12):
                raise CaptureFormatError(f"{self.name}: capture is too short to hold its file header")
            return
        be: cython.bint
        if magic == 0xA1B2C3D4 or magic == 0xA1B23C4D or magic == 0xA1B2CD34:
            be = False
        elif magic == 0xD4C3B2A1 or magic == 0x4D3CB2A1 or magic == 0x34CDB2A1:
            be = True
        else:
            raise CaptureFormatError(f"{self.name}: not a pcap or pcapng file (magic 0x{_u32(p, i, True):08x})")
        if not self._fill(24):
            raise CaptureFormatError(f"{self.name}: capture is too short to hold its file header")
        p = self.buf
        i = self.pos
        m = _u32(p, i, be)
        self.fmt = 1
        self.be = be
        self.nano = m == 0xA1B23C4D
        self.extra = 8 if m == 0xA1B2CD34 else 0  # ifindex, protocol, pkt_type, padding
        major = _u16(p, i + 4, be)
        if major != 2:
            raise CaptureFormatError(f"{self.name}: unsupported pcap version {major}")
        snaplen = _u32(p, i + 16, be)
        linktype = _u32(p, i + 20, be) & 0xFFFF  # the upper bits say whether frames carry an FCS
        ifc = Iface(0, None, None, linktype, snaplen)
        self.ifaces = [ifc]
        self.all_ifaces = [ifc]
        self.sections = 1
        self.pos = i + 24

    def _next_pcap(self) -> cython.int:
        hdr: cython.Py_ssize_t = 16 + self.extra
        if not self._fill(hdr):
            if self.end > self.pos:
                self._truncated(self.base + self.pos)
            return 0
        p: cython.p_const_uchar = self.buf
        i: cython.Py_ssize_t = self.pos
        be: cython.bint = self.be
        sec: cython.longlong = _u32(p, i, be)
        frac: cython.longlong = _u32(p, i + 4, be)
        caplen: cython.Py_ssize_t = _u32(p, i + 8, be)
        orig: cython.Py_ssize_t = _u32(p, i + 12, be)
        if caplen > MAX_RECORD_LEN:
            self._note(self.base + i, f"packet record {self.packets_read} claims a captured length of {caplen} "
                                      f"bytes (more than {MAX_RECORD_LEN})", False)
            return 0
        if not self._fill(hdr + caplen):
            self._truncated(self.base + self.pos)
            return 0
        i = self.pos
        ifc: Iface = self.ifaces[0]
        self.rec_off = i + hdr
        self.rec_caplen = caplen
        self.rec_orig_len = orig
        self.rec_ts = sec * 1000000000 + (frac if self.nano else frac * 1000)
        self.rec_iface = 0
        self.rec_linktype = ifc.linktype
        self.rec_dir = DIR_NONE
        self.pos = i + hdr + caplen
        self.last_ts = self.rec_ts
        return 1

    def _next_pcapng(self) -> cython.int:
        p: cython.p_const_uchar
        i: cython.Py_ssize_t
        total: cython.Py_ssize_t
        body: cython.Py_ssize_t
        bend: cython.Py_ssize_t
        btype: cython.uint
        start: cython.longlong
        while True:
            if not self._fill(12):
                if self.end > self.pos:
                    self._truncated(self.base + self.pos)
                return 0
            p = self.buf
            i = self.pos
            start = self.base + i
            if _u32(p, i, False) == SHB:
                bom = _u32(p, i + 8, False)
                if bom == 0x1A2B3C4D:
                    self.be = False
                elif bom == 0x4D3C2B1A:
                    self.be = True
                else:
                    if self.sections == 0:
                        raise CaptureFormatError(f"{self.name}: not a pcapng file (section header with byte-order "
                                                 f"magic 0x{_u32(p, i + 8, True):08x})")
                    self._note(start, f"section header with a bad byte-order magic 0x{_u32(p, i + 8, True):08x}", False)
                    return 0
            be: cython.bint = self.be
            btype = _u32(p, i, be)
            total = _u32(p, i + 4, be)
            if total < 12 or total > MAX_RECORD_LEN or total % 4:
                if self.sections == 0:
                    raise CaptureFormatError(f"{self.name}: not a pcapng file (section header length {total})")
                self._note(start, f"block of type 0x{btype:08x} claims a length of {total} bytes"
                                  + (" (not a multiple of 4)" if 12 <= total <= MAX_RECORD_LEN else ""), False)
                return 0
            if not self._fill(total):
                if self.sections == 0:
                    raise CaptureFormatError(f"{self.name}: capture is too short to hold its file header "
                                             f"(a section header block of {total} bytes, {self.end - self.pos} "
                                             f"in the file)")
                self._truncated(start)
                return 0
            p = self.buf
            i = self.pos
            if _u32(p, i + total - 4, be) != total:
                if self.sections == 0:
                    raise CaptureFormatError(f"{self.name}: not a pcapng file (section header length {total} "
                                             f"but trailing length {_u32(p, i + total - 4, be)})")
                self._note(start, f"block of type 0x{btype:08x} has length {total} but trailing length "
                                  f"{_u32(p, i + total - 4, be)}", False)
                return 0
            self.pos = i + total
            body = i + 8
            bend = i + total - 4
            if btype == EPB or btype == PB:
                if self._packet(p, btype, body, bend, start):
                    return 1
            elif btype == SPB:
                if self._simple_packet(p, body, bend, start):
                    return 1
            elif btype == IDB:
                self._interface(body, bend, start)
            elif btype == ISB:
                self._statistics(body, bend, start)
            elif btype == SHB:
                if bend - body < 16:
                    if self.sections == 0:
                        raise CaptureFormatError(f"{self.name}: not a pcapng file (section header too short)")
                    self._note(start, "section header block too short", False)
                    return 0
                major = _u16(p, body + 4, be)
                if major != 1:
                    if self.sections == 0:
                        raise CaptureFormatError(f"{self.name}: unsupported pcapng version {major}")
                    self._note(start, f"section of unsupported pcapng version {major}", False)
                    return 0
                self.sections += 1
                self.ifaces = []
            elif self.sections == 0:
                raise CaptureFormatError(f"{self.name}: not a pcapng file (no section header first)")
            # other block types (name resolution, decryption secrets, custom...) are skipped

    def _packet(self, p: cython.p_const_uchar, btype: cython.uint, body: cython.Py_ssize_t,
                bend: cython.Py_ssize_t, start: cython.longlong) -> cython.bint:
        be: cython.bint = self.be
        if bend - body < 20:
            self._note(start, f"packet block {self.packets_read} too short ({bend - body} bytes)", True)
            return False
        iid: cython.uint
        hi: cython.ulonglong
        lo: cython.ulonglong
        if btype == EPB:
            iid = _u32(p, body, be)
        else:
            iid = _u16(p, body, be)
        hi = _u32(p, body + 4, be)
        lo = _u32(p, body + 8, be)
        caplen: cython.Py_ssize_t = _u32(p, body + 12, be)
        orig: cython.Py_ssize_t = _u32(p, body + 16, be)
        data: cython.Py_ssize_t = body + 20
        if iid >= len(self.ifaces):
            self._note(start, f"packet {self.packets_read} refers to interface {iid} but only {len(self.ifaces)} "
                              f"are defined in this section", True)
            return False
        if caplen > bend - data:
            self._note(start, f"packet {self.packets_read} claims {caplen} captured bytes in a "
                              f"{bend - body + 12}-byte block", True)
            return False
        ifc: Iface = self.ifaces[iid]
        ts: cython.longlong = self._ns(ifc, (hi << 32) | lo)
        if ts < 0:
            self._note(start, f"packet {self.packets_read} has a timestamp out of range", True)
            return False
        direction: cython.int = DIR_NONE
        if btype == EPB:
            o: cython.Py_ssize_t = data + caplen + ((4 - caplen % 4) % 4)
            while o + 4 <= bend:
                code = _u16(p, o, be)
                olen: cython.Py_ssize_t = _u16(p, o + 2, be)
                if code == 0 or o + 4 + olen > bend:
                    break
                if code == 2 and olen >= 4:  # epb_flags: bits 0-1 inbound/outbound
                    direction = _u32(p, o + 4, be) & 3
                    if direction == 3:
                        direction = DIR_NONE
                    break
                o += 4 + olen + ((4 - olen % 4) % 4)
        self.rec_off = data
        self.rec_caplen = caplen
        self.rec_orig_len = orig
        self.rec_ts = ts
        self.rec_iface = ifc.id
        self.rec_linktype = ifc.linktype
        self.rec_dir = direction
        self.last_ts = ts
        return True

    def _simple_packet(self, p: cython.p_const_uchar, body: cython.Py_ssize_t, bend: cython.Py_ssize_t,
                       start: cython.longlong) -> cython.bint:
        if bend - body < 4:
            self._note(start, f"simple packet block {self.packets_read} too short", True)
            return False
        if not self.ifaces:
            self._note(start, f"packet {self.packets_read} (simple packet block) but no interface is defined", True)
            return False
        ifc: Iface = self.ifaces[0]
        orig: cython.Py_ssize_t = _u32(p, body, self.be)
        caplen: cython.Py_ssize_t = bend - body - 4
        if orig < caplen:
            caplen = orig
        snap: cython.Py_ssize_t = ifc.snaplen
        if snap and snap < caplen:
            caplen = snap
        self.rec_off = body + 4
        self.rec_caplen = caplen
        self.rec_orig_len = orig
        # An SPB has no timestamp: the previous packet's keeps time-sorted analyses stable.
        self.rec_ts = self.last_ts
        self.rec_iface = ifc.id
        self.rec_linktype = ifc.linktype
        self.rec_dir = DIR_NONE
        return True

    def _ns(self, ifc: Iface, units: cython.ulonglong) -> cython.longlong:
        """Timestamp units of `ifc` in ns since the epoch; -1 when out of range."""
        ns: cython.longlong
        if ifc.kind == TS_MUL:
            if units > ifc.limit:
                return -1
            ns = units * ifc.mul
        elif ifc.kind == TS_DIV:
            ns = units // ifc.div
        else:
            whole: cython.ulonglong = units >> ifc.shift
            if whole > 9000000000:
                return -1
            frac: cython.ulonglong = units & ((cython.cast(cython.ulonglong, 1) << ifc.shift) - 1)
            ns = whole * 1000000000 + ((frac * 1000000000) >> ifc.shift)
        off: cython.longlong = ifc.offset_ns
        if (off > 0 and ns > INT64_MAX - off) or ns + off < 0:
            return -1
        return ns + off

    def _options(self, pos: cython.Py_ssize_t, end: cython.Py_ssize_t) -> dict:
        """The options of an IDB/ISB as {code: [values]}; tolerant of a sloppy end."""
        opts: dict = {}
        p: cython.p_const_uchar = self.buf
        be: cython.bint = self.be
        while pos + 4 <= end:
            code = _u16(p, pos, be)
            length: cython.Py_ssize_t = _u16(p, pos + 2, be)
            pos += 4
            if code == 0 or pos + length > end:
                break
            opts.setdefault(code, []).append(bytes(self.buf[pos:pos + length]))
            pos += length + ((4 - length % 4) % 4)
        return opts

    def _int(self, value: bytes, signed: bool = False):
        return int.from_bytes(value[:8], "big" if self.be else "little", signed=signed)

    def _interface(self, body: cython.Py_ssize_t, bend: cython.Py_ssize_t, start: cython.longlong) -> None:
        if bend - body < 8:
            self._note(start, "interface description block too short", True)
            # keep the numbering of the interfaces that follow
            self._add_iface(Iface(len(self.all_ifaces), None, None, -1, 0))
            return
        p: cython.p_const_uchar = self.buf
        linktype = _u16(p, body, self.be)
        snaplen = _u32(p, body + 4, self.be)
        opts = self._options(body + 8, bend)
        name = _text(opts[2][0]) if 2 in opts else None
        desc = _text(opts[3][0]) if 3 in opts else None
        ifc = Iface(len(self.all_ifaces), name, desc, linktype, snaplen)
        if 9 in opts and opts[9][0]:
            r = opts[9][0][0]
            exp = r & 0x7F
            if r & 0x80:
                if exp > 32:
                    self._note(start, f"interface {ifc.id} has an unsupported time resolution 2^-{exp} s "
                                      f"(microseconds assumed)", True)
                else:
                    ifc.kind, ifc.shift = TS_SHIFT, exp
            elif exp <= 9:
                ifc.kind, ifc.mul = TS_MUL, 10 ** (9 - exp)
                ifc.limit = INT64_MAX // ifc.mul
            elif exp <= 18:
                ifc.kind, ifc.div = TS_DIV, 10 ** (exp - 9)
            else:
                self._note(start, f"interface {ifc.id} has an unsupported time resolution 10^-{exp} s "
                                  f"(microseconds assumed)", True)
        if 14 in opts and len(opts[14][0]) >= 8:
            off = self._int(opts[14][0], signed=True)
            if -9000000000 <= off <= 9000000000:
                ifc.offset_ns = off * 1000000000
            else:
                self._note(start, f"interface {ifc.id} has a time offset of {off} s (ignored)", True)
        self._add_iface(ifc)

    def _add_iface(self, ifc: Iface) -> None:
        self.ifaces.append(ifc)
        self.all_ifaces.append(ifc)

    def _statistics(self, body: cython.Py_ssize_t, bend: cython.Py_ssize_t, start: cython.longlong) -> None:
        if bend - body < 12:
            self._note(start, "interface statistics block too short", True)
            return
        p: cython.p_const_uchar = self.buf
        iid = _u32(p, body, self.be)
        if iid >= len(self.ifaces):
            self._note(start, f"statistics refer to interface {iid} but only {len(self.ifaces)} are defined in "
                              f"this section", True)
            return
        ifc = self.ifaces[iid]
        hi: cython.ulonglong = _u32(p, body + 4, self.be)
        lo: cython.ulonglong = _u32(p, body + 8, self.be)
        opts = self._options(body + 12, bend)

        def counter(code):
            v = opts.get(code)
            return self._int(v[0]) if v and len(v[0]) >= 8 else None

        st = InterfaceStats(iface=ifc.id, iface_name=ifc.name, ts_ns=max(self._ns(ifc, (hi << 32) | lo), 0),
                            received=counter(4), dropped=counter(5), filter_accepted=counter(6),
                            os_dropped=counter(7), delivered=counter(8),
                            comments=tuple(_text(v) for v in opts.get(1, ())))
        self.stats.append(st)
        lost = st.lost if st.lost < LOST_MAX else LOST_MAX
        if lost > ifc.lost:  # the counters are cumulative
            ifc.lost = lost

    # ---- what was read

    @property
    def format(self):
        return {1: "pcap", 2: "pcapng"}.get(self.fmt)

    @property
    def interfaces(self) -> list:
        return [i.info() for i in self.all_ifaces]

    def iface_name(self, iface: int):
        return self.all_ifaces[iface].name if 0 <= iface < len(self.all_ifaces) else None

    def iface_lost(self, iface: cython.int) -> cython.ulonglong:
        """Packets lost on file-wide interface `iface` according to the statistics read so far."""
        return self.all_ifaces[iface].lost if 0 <= iface < len(self.all_ifaces) else 0

    def record(self) -> bytes:
        """The current record's captured bytes (a copy)."""
        return bytes(self.buf[self.rec_off:self.rec_off + self.rec_caplen])

    def direction(self):
        return DIRECTIONS[self.rec_dir]

    def close(self) -> None:
        if self.owns and self.f is not None:
            self.f.close()
        self.f = None
        self.buf = bytearray()
        self.pos = self.end = 0

    def trailing_lost(self) -> dict:
        """{interface id of the last section: packets lost} from the statistics blocks at the end
        of a seekable pcapng file, read backwards before the stream starts (pcapng blocks end with
        their length), so that an early-finished connection already knows its interface was lossy.
        Empty when the file is not seekable, not pcapng, or has no such blocks; the file position
        is restored."""
        lost: dict = {}
        order, found = self._trailing_statistics()
        for iid, opts in found:
            n = 0
            for code in (5, 7):  # isb_ifdrop, isb_osdrop
                for v in opts.get(code, ()):
                    if len(v) >= 8:
                        n += int.from_bytes(v[:8], order)
            lost[iid] = max(lost.get(iid, 0), n if n < LOST_MAX else LOST_MAX)
        return {k: v for k, v in lost.items() if v}

    def trailing_comments(self) -> dict:
        """{interface id of the last section: [opt_comment texts]} of the statistics blocks at the
        end of a seekable pcapng file, read the same way as `trailing_lost` (before the stream
        starts). The capture agent records there what a reading of the file needs and only the end
        of the capture knows, such as the client namespace's SYN sysctls."""
        found: dict = {}
        for iid, opts in self._trailing_statistics()[1]:
            texts = [_text(v) for v in opts.get(1, ())]
            if texts:
                found[iid] = texts + found.get(iid, [])  # read backwards: keep the file's order
        return found

    def _trailing_statistics(self) -> tuple:
        """(the byte order, [(interface id, {option code: [values]})]) of the Interface Statistics
        Blocks at the end of a seekable pcapng file, last first; the file position is restored."""
        f = self.f
        found: list = []
        order = "little"
        try:
            if not f.seekable():
                return order, found
            here = f.tell()
        except (OSError, ValueError, AttributeError):
            return order, found
        try:
            f.seek(0)
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"\x0a\x0d\x0d\x0a":
                return order, found
            order = "little" if head[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
            size = f.seek(0, 2)
            pos = size
            for _ in range(4096):  # one statistics block per interface, a few other blocks at most
                if pos < 24:
                    break
                f.seek(pos - 4)
                total = int.from_bytes(f.read(4), order)
                if total < 12 or total > pos or total % 4:
                    break
                f.seek(pos - total)
                block = f.read(total)
                btype = int.from_bytes(block[:4], order)
                if len(block) != total or int.from_bytes(block[4:8], order) != total or btype in (EPB, PB, SPB, SHB, IDB):
                    break
                if btype == ISB and total >= 24:
                    iid = int.from_bytes(block[8:12], order)
                    opts: dict = {}
                    pos_o, end_o = 20, total - 4
                    while pos_o + 4 <= end_o:
                        code = int.from_bytes(block[pos_o:pos_o + 2], order)
                        length = int.from_bytes(block[pos_o + 2:pos_o + 4], order)
                        if code == 0 or pos_o + 4 + length > end_o:
                            break
                        opts.setdefault(code, []).append(block[pos_o + 4:pos_o + 4 + length])
                        pos_o += 4 + length + (-length % 4)
                    found.append((iid, opts))
                pos -= total
        except (OSError, ValueError):
            pass
        finally:
            try:
                f.seek(here)
            except (OSError, ValueError):
                pass
        return order, found
