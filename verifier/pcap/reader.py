"""Reading and writing capture files (pcapng and classic pcap).

This module does file-format I/O only: it never captures, decodes protocols or
looks at namespaces. `PcapngWriter` produces files that Wireshark/tshark open;
`read_packets` / `CaptureFile` stream packets back out of pcap or pcapng files
written by us or by any other tool.

The reader is written by hand over raw bytes with `struct` (no Scapy), because
the packet decoder built on top of it has to sustain more than a million
packets per second in a later benchmark, and importing Scapy alone costs about
a second.

Format references: the pcapng IETF draft (draft-ietf-opsawg-pcapng) and the
pcap draft (draft-ietf-opsawg-pcap).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "CaptureFile",
    "CaptureFormatError",
    "CaptureTruncatedWarning",
    "InterfaceInfo",
    "InterfaceStats",
    "PcapngWriter",
    "RawPacket",
    "read_interface_stats",
    "read_packets",
]

# Anything longer than this in a single record is garbage, not a packet.
MAX_RECORD_LEN = 256 * 1024 * 1024

# pcapng block types
_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_PB = 0x00000002  # obsolete Packet Block
_SPB = 0x00000003
_ISB = 0x00000005
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

# option codes
_OPT_ENDOFOPT = 0
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_IF_TSOFFSET = 14
_EPB_FLAGS = 2
_ISB_STARTTIME = 2
_ISB_ENDTIME = 3
_ISB_IFRECV = 4
_ISB_IFDROP = 5
_ISB_FILTERACCEPT = 6
_ISB_OSDROP = 7
_ISB_USRDELIV = 8

# classic pcap magics as read little-endian from the first 4 bytes
_PCAP_MAGICS = {
    # magic: (byte order, ns resolution, extra per-record header bytes)
    b"\xd4\xc3\xb2\xa1": ("<", False, 0),
    b"\xa1\xb2\xc3\xd4": (">", False, 0),
    b"\x4d\x3c\xb2\xa1": ("<", True, 0),
    b"\xa1\xb2\x3c\x4d": (">", True, 0),
    # Kuznetzov's modified pcap: 8 more bytes (ifindex, proto, pkt_type, pad)
    b"\x34\xcd\xb2\xa1": ("<", False, 8),
    b"\xa1\xb2\xcd\x34": (">", False, 8),
}
_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"

_DIRECTIONS = (None, "in", "out", None)  # epb_flags bits 0-1


class CaptureFormatError(ValueError):
    """The file is not a readable pcap/pcapng capture; the message is one line."""


class CaptureTruncatedWarning(UserWarning):
    """The capture ends in the middle of a record; packets before it were read."""


@dataclass(frozen=True, slots=True)
class RawPacket:
    """One captured frame, before any protocol decoding.

    `iface` numbers interfaces across the whole file: in a pcapng file with
    several sections the interfaces of later sections continue after those of
    earlier ones (so it equals the pcapng interface id for one-section files).
    """

    index: int  # 0-based packet number in the file (Wireshark frame = index + 1)
    ts_ns: int  # absolute, nanoseconds since the epoch
    iface: int
    iface_name: str | None
    linktype: int
    data: bytes  # captured bytes (may be shorter than orig_len)
    orig_len: int
    direction: str | None  # "in", "out" or None when the capture did not say


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """An interface described by a pcapng IDB (or the single pcap 'interface')."""

    id: int  # file-wide interface number, as in RawPacket.iface
    name: str | None
    description: str | None
    linktype: int
    snaplen: int


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    """Counters from a pcapng Interface Statistics Block; None = not recorded."""

    iface: int
    iface_name: str | None
    ts_ns: int
    received: int | None = None
    dropped: int | None = None
    filter_accepted: int | None = None
    os_dropped: int | None = None
    delivered: int | None = None


# A frozen dataclass's __init__ goes through object.__setattr__ for every
# field, which costs more than parsing the record. The reader builds its
# RawPackets by setting the slots directly: same resulting object, a third of
# the cost. (Keep in step with the fields above; a unit test compares both.)
_new = object.__new__
_set_index = RawPacket.index.__set__  # type: ignore[attr-defined]
_set_ts_ns = RawPacket.ts_ns.__set__  # type: ignore[attr-defined]
_set_iface = RawPacket.iface.__set__  # type: ignore[attr-defined]
_set_iface_name = RawPacket.iface_name.__set__  # type: ignore[attr-defined]
_set_linktype = RawPacket.linktype.__set__  # type: ignore[attr-defined]
_set_data = RawPacket.data.__set__  # type: ignore[attr-defined]
_set_orig_len = RawPacket.orig_len.__set__  # type: ignore[attr-defined]
_set_direction = RawPacket.direction.__set__  # type: ignore[attr-defined]


def _raw_packet(index, ts_ns, iface, iface_name, linktype, data, orig_len, direction):  # noqa: ANN001, ANN202
    p = _new(RawPacket)
    _set_index(p, index)
    _set_ts_ns(p, ts_ns)
    _set_iface(p, iface)
    _set_iface_name(p, iface_name)
    _set_linktype(p, linktype)
    _set_data(p, data)
    _set_orig_len(p, orig_len)
    _set_direction(p, direction)
    return p


# --------------------------------------------------------------------------
# writing


def _option(code: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _options(opts: list[bytes]) -> bytes:
    if not opts:
        return b""
    return b"".join(opts) + struct.pack("<HH", _OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """Writes a little-endian pcapng file: one section, nanosecond timestamps.

    The caller owns `fileobj` (nothing is closed here); call `flush()` to make
    everything written so far visible to readers.
    """

    def __init__(self, fileobj: BinaryIO, *, application: str = "tcp-verifier") -> None:
        self._f = fileobj
        self._ifaces = 0
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)  # section length unknown
        body += _options([_option(_SHB_USERAPPL, application.encode())])
        self._f.write(_block(_SHB, body))

    def add_interface(
        self,
        name: str,
        linktype: int = 1,
        snaplen: int = 0,
        description: str | None = None,
    ) -> int:
        """Write an Interface Description Block and return its interface id."""
        opts = [_option(_IF_NAME, name.encode())]
        if description is not None:
            opts.append(_option(_IF_DESCRIPTION, description.encode()))
        opts.append(_option(_IF_TSRESOL, bytes([9])))
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(opts)
        self._f.write(_block(_IDB, body))
        self._ifaces += 1
        return self._ifaces - 1

    def _check_iface(self, iface_id: int) -> None:
        if not 0 <= iface_id < self._ifaces:
            raise ValueError(f"interface id {iface_id} was not added (have {self._ifaces})")

    def write_packet(
        self,
        iface_id: int,
        ts_ns: int,
        data: bytes,
        *,
        orig_len: int | None = None,
        direction: str | None = None,
    ) -> None:
        """Write an Enhanced Packet Block; `direction` is "in", "out" or None."""
        self._check_iface(iface_id)
        opts = []
        if direction is not None:
            if direction not in ("in", "out"):
                raise ValueError(f"direction must be 'in', 'out' or None, not {direction!r}")
            opts.append(_option(_EPB_FLAGS, struct.pack("<I", 1 if direction == "in" else 2)))
        caplen = len(data)
        body = struct.pack(
            "<IIIII",
            iface_id,
            (ts_ns >> 32) & 0xFFFFFFFF,
            ts_ns & 0xFFFFFFFF,
            caplen,
            caplen if orig_len is None else orig_len,
        )
        body += bytes(data) + b"\0" * (-caplen % 4) + _options(opts)
        self._f.write(_block(_EPB, body))

    def write_stats(
        self,
        iface_id: int,
        ts_ns: int,
        *,
        received: int | None,
        dropped: int | None,
    ) -> None:
        """Write an Interface Statistics Block with isb_ifrecv / isb_ifdrop."""
        self._check_iface(iface_id)
        opts = []
        if received is not None:
            opts.append(_option(_ISB_IFRECV, struct.pack("<Q", received)))
        if dropped is not None:
            opts.append(_option(_ISB_IFDROP, struct.pack("<Q", dropped)))
        body = struct.pack("<III", iface_id, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF)
        self._f.write(_block(_ISB, body + _options(opts)))

    def flush(self) -> None:
        self._f.flush()


# --------------------------------------------------------------------------
# reading


def _source_name(src: str | os.PathLike | BinaryIO) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    name = getattr(src, "name", None)
    return name if isinstance(name, str) else "<stream>"


class _Truncated(Exception):
    """Internal: the file ended inside a record."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


@dataclass(slots=True)
class _Iface:
    info: InterfaceInfo
    # timestamp units -> ns:  ns = ts * mul // div + offset_ns
    mul: int
    div: int
    offset_ns: int


def _parse_options(buf: bytes, pos: int, end: int, bo: str) -> dict[int, list[bytes]]:
    """Options as {code: [values]}; tolerant of sloppy padding at the end."""
    opts: dict[int, list[bytes]] = {}
    hdr = struct.Struct(bo + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(buf, pos)
        pos += 4
        if code == _OPT_ENDOFOPT:
            break
        if pos + length > end:
            break  # a broken option list is not worth rejecting the packet for
        opts.setdefault(code, []).append(buf[pos : pos + length])
        pos += length + (-length % 4)
    return opts


def _u64(opts: dict[int, list[bytes]], code: int, bo: str) -> int | None:
    v = opts.get(code)
    return struct.unpack(bo + "Q", v[0][:8])[0] if v and len(v[0]) >= 8 else None


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _tsresol(value: int) -> tuple[int, int]:
    """(mul, div) converting timestamp units to ns for an if_tsresol byte."""
    exp = value & 0x7F
    if value & 0x80:
        return 10**9, 1 << exp
    if exp <= 9:
        return 10 ** (9 - exp), 1
    return 1, 10 ** (exp - 9)


class CaptureFile:
    """A pcap or pcapng file read as a stream of `RawPacket`s.

    Iterating reads the file once, front to back, holding one record at a
    time. While (and after) iterating, `format`, `interfaces` and `stats`
    describe what has been read so far; `truncated` tells whether the file
    ended inside a record (a `CaptureTruncatedWarning` is also emitted).
    """

    CHUNK = 1 << 20

    def __init__(self, source: str | os.PathLike | BinaryIO) -> None:
        self.source = source
        self.name = _source_name(source)
        self.format: str | None = None  # "pcap" or "pcapng" once known
        self.interfaces: list[InterfaceInfo] = []
        self.stats: list[InterfaceStats] = []
        self.packets_read = 0
        self.truncated = False

    def __iter__(self) -> Iterator[RawPacket]:
        if isinstance(self.source, (str, os.PathLike)):
            try:
                f = open(self.source, "rb")
            except OSError as e:
                raise CaptureFormatError(f"{self.name}: cannot open ({e.strerror})") from None
            with f:
                yield from self._read(f)
        else:
            yield from self._read(self.source)

    # A small read-ahead buffer: one f.read() per megabyte instead of two per
    # record keeps the per-packet cost down to a few struct unpacks.
    def _read(self, f: BinaryIO) -> Iterator[RawPacket]:
        self.format = None
        self.interfaces = []
        self.stats = []
        self.packets_read = 0
        self.truncated = False
        self._f = f
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of _buf[0]
        try:
            head = self._peek(4)
            if head is None:
                raise CaptureFormatError(
                    f"{self.name}: not a pcap or pcapng file (empty or shorter than 4 bytes)"
                )
            if head == _SHB_MAGIC:
                self.format = "pcapng"
                yield from self._read_pcapng()
            elif head in _PCAP_MAGICS:
                self.format = "pcap"
                yield from self._read_pcap(*_PCAP_MAGICS[head])
            else:
                raise CaptureFormatError(
                    f"{self.name}: not a pcap or pcapng file "
                    f"(magic 0x{int.from_bytes(head, 'big'):08x})"
                )
        except _Truncated as t:
            self.truncated = True
            warnings.warn(
                CaptureTruncatedWarning(
                    f"{self.name}: capture is truncated in the middle of a record at byte "
                    f"{t.offset}; read {self.packets_read} packets before it"
                ),
                stacklevel=3,
            )
        finally:
            self._buf = b""

    def _peek(self, n: int) -> bytes | None:
        """The next n bytes without consuming them, or None at a short end."""
        if len(self._buf) - self._pos < n:
            self._fill(n)
            if len(self._buf) - self._pos < n:
                return None
        return self._buf[self._pos : self._pos + n]

    def _fill(self, n: int) -> None:
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        while have < n:
            chunk = self._f.read(max(self.CHUNK, n - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self._base += self._pos
        self._buf = b"".join(parts)
        self._pos = 0

    def _offset(self) -> int:
        return self._base + self._pos

    def _error(self, what: str, offset: int | None = None) -> CaptureFormatError:
        where = self._offset() if offset is None else offset
        return CaptureFormatError(f"{self.name}: {what} at byte {where}")

    # ---- classic pcap

    def _read_pcap(self, bo: str, nano: bool, extra: int) -> Iterator[RawPacket]:
        if self._peek(24) is None:
            raise _Truncated(self._offset())
        # thiszone is 0 in every real-world writer: timestamps are taken as UTC
        _magic, major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(
            bo + "IHHiIII", self._buf, self._pos
        )
        if major != 2:
            raise self._error(f"unsupported pcap version {major}", 0)
        linktype = network & 0xFFFF  # upper bits carry FCS information
        self.interfaces.append(InterfaceInfo(0, None, None, linktype, snaplen))
        self._pos += 24
        rec = struct.Struct(bo + "IIII")
        hdr_len = 16 + extra
        frac_mul = 1 if nano else 1000
        index = 0
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos < hdr_len:
                if self._peek(1) is None:
                    break  # clean end of file
                if self._peek(hdr_len) is None:
                    raise _Truncated(self._offset())
                buf, pos = self._buf, self._pos
            sec, frac, caplen, orig_len = rec.unpack_from(buf, pos)
            if caplen > MAX_RECORD_LEN:
                raise self._error(
                    f"packet record {index} claims an absurd length of {caplen} bytes"
                )
            end = pos + hdr_len + caplen
            if end > len(buf):
                if self._peek(hdr_len + caplen) is None:
                    raise _Truncated(self._offset())
                buf, pos = self._buf, self._pos
                end = pos + hdr_len + caplen
            data = buf[pos + hdr_len : end]
            self._pos = end
            yield _raw_packet(index, sec * 1_000_000_000 + frac * frac_mul, 0, None, linktype, data, orig_len, None)
            index += 1
            self.packets_read = index

    # ---- pcapng

    def _read_pcapng(self) -> Iterator[RawPacket]:
        bo = "<"
        ifaces: list[_Iface] = []  # interfaces of the current section
        index = 0
        last_ts = 0
        # replaced by each section header, whose byte order they follow
        hdr = struct.Struct("<II")
        unpack_epb = struct.Struct("<IIIII").unpack_from
        unpack_opt = struct.Struct("<HHI").unpack_from
        unpack_u32 = struct.Struct("<I").unpack_from
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos < 12:
                if self._peek(1) is None:
                    break  # clean end of file
                # 8 bytes give type and length; a section header needs 12
                # because its byte order is only known from the 3rd word.
                head = self._peek(8)
                if head is None or (head[:4] == _SHB_MAGIC and self._peek(12) is None):
                    raise _Truncated(self._offset())
                buf, pos = self._buf, self._pos
            block_start = self._offset()
            if buf[pos : pos + 4] == _SHB_MAGIC:
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    bo = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    bo = ">"
                else:
                    raise self._error(
                        f"section header block has a bad byte-order magic 0x{bom.hex()}"
                    )
                hdr = struct.Struct(bo + "II")
                unpack_epb = struct.Struct(bo + "IIIII").unpack_from
                unpack_opt = struct.Struct(bo + "HHI").unpack_from
                unpack_u32 = struct.Struct(bo + "I").unpack_from
                ifaces = []
            btype, total = hdr.unpack_from(buf, pos)
            if total < 12 or total > MAX_RECORD_LEN:
                raise self._error(f"block of type 0x{btype:08x} claims an absurd length of {total} bytes")
            if len(buf) - pos < total:
                if self._peek(total) is None:
                    raise _Truncated(block_start)
                buf, pos = self._buf, self._pos
            (trailer,) = unpack_u32(buf, pos + total - 4)
            if trailer != total:
                raise self._error(
                    f"block of type 0x{btype:08x} has length {total} but trailing length {trailer}"
                )
            self._pos = pos + total
            body, end = pos + 8, pos + total - 4

            if btype == _EPB or btype == _PB:
                if btype == _EPB:
                    if end - body < 20:
                        raise self._error("enhanced packet block too short", block_start)
                    iface_id, ts_hi, ts_lo, caplen, orig_len = unpack_epb(buf, body)
                else:
                    if end - body < 20:
                        raise self._error("packet block too short", block_start)
                    iface_id, _drops, ts_hi, ts_lo, caplen, orig_len = struct.unpack_from(
                        bo + "HHIIII", buf, body
                    )
                data_start = body + 20
                if caplen > end - data_start:
                    raise self._error(
                        f"packet {index} claims {caplen} captured bytes in a {total}-byte block",
                        block_start,
                    )
                if iface_id >= len(ifaces):
                    raise self._error(
                        f"packet {index} refers to interface {iface_id} but only "
                        f"{len(ifaces)} are defined in this section",
                        block_start,
                    )
                ifc = ifaces[iface_id]
                direction = None
                opt_start = data_start + caplen + (-caplen % 4)
                if opt_start + 8 <= end:
                    code, olen, oval = unpack_opt(buf, opt_start)
                    if code == _EPB_FLAGS and olen == 4:  # the usual (and our) layout
                        direction = _DIRECTIONS[oval & 3]
                    else:
                        flags = _parse_options(buf, opt_start, end, bo).get(_EPB_FLAGS)
                        if flags and len(flags[0]) >= 4:
                            direction = _DIRECTIONS[struct.unpack(bo + "I", flags[0][:4])[0] & 3]
                last_ts = ((ts_hi << 32) | ts_lo) * ifc.mul // ifc.div + ifc.offset_ns
                info = ifc.info
                yield _raw_packet(
                    index, last_ts, info.id, info.name, info.linktype,
                    buf[data_start : data_start + caplen], orig_len, direction,
                )
                index += 1
                self.packets_read = index
            elif btype == _SPB:
                if end - body < 4:
                    raise self._error("simple packet block too short", block_start)
                if not ifaces:
                    raise self._error(
                        f"packet {index} (simple packet block) but no interface is defined",
                        block_start,
                    )
                (orig_len,) = struct.unpack_from(bo + "I", buf, body)
                info = ifaces[0].info
                caplen = min(orig_len, end - body - 4)
                if info.snaplen:
                    caplen = min(caplen, info.snaplen)
                # An SPB has no timestamp; reusing the previous packet's keeps
                # time-sorted analyses stable instead of jumping to 1970.
                yield _raw_packet(
                    index, last_ts, info.id, info.name, info.linktype,
                    buf[body + 4 : body + 4 + caplen], orig_len, None,
                )
                index += 1
                self.packets_read = index
            elif btype == _IDB:
                if end - body < 8:
                    raise self._error("interface description block too short", block_start)
                linktype, _res, snaplen = struct.unpack_from(bo + "HHI", buf, body)
                opts = _parse_options(buf, body + 8, end, bo)
                name = _text(opts[_IF_NAME][0]) if _IF_NAME in opts else None
                desc = _text(opts[_IF_DESCRIPTION][0]) if _IF_DESCRIPTION in opts else None
                mul, div = 1000, 1  # default resolution: microseconds
                if _IF_TSRESOL in opts and opts[_IF_TSRESOL][0]:
                    mul, div = _tsresol(opts[_IF_TSRESOL][0][0])
                offset_ns = 0
                if _IF_TSOFFSET in opts and len(opts[_IF_TSOFFSET][0]) >= 8:
                    offset_ns = struct.unpack(bo + "q", opts[_IF_TSOFFSET][0][:8])[0] * 10**9
                info = InterfaceInfo(len(self.interfaces), name, desc, linktype, snaplen)
                self.interfaces.append(info)
                ifaces.append(_Iface(info, mul, div, offset_ns))
            elif btype == _ISB:
                if end - body < 12:
                    raise self._error("interface statistics block too short", block_start)
                iface_id, ts_hi, ts_lo = struct.unpack_from(bo + "III", buf, body)
                if iface_id >= len(ifaces):
                    raise self._error(
                        f"statistics refer to interface {iface_id} but only "
                        f"{len(ifaces)} are defined in this section",
                        block_start,
                    )
                ifc = ifaces[iface_id]
                opts = _parse_options(buf, body + 12, end, bo)
                self.stats.append(
                    InterfaceStats(
                        iface=ifc.info.id,
                        iface_name=ifc.info.name,
                        ts_ns=((ts_hi << 32) | ts_lo) * ifc.mul // ifc.div + ifc.offset_ns,
                        received=_u64(opts, _ISB_IFRECV, bo),
                        dropped=_u64(opts, _ISB_IFDROP, bo),
                        filter_accepted=_u64(opts, _ISB_FILTERACCEPT, bo),
                        os_dropped=_u64(opts, _ISB_OSDROP, bo),
                        delivered=_u64(opts, _ISB_USRDELIV, bo),
                    )
                )
            # SHB bodies need no further parsing; other block types
            # (name resolution, decryption secrets, custom...) are skipped.


def read_packets(source: str | os.PathLike | BinaryIO) -> Iterator[RawPacket]:
    """Stream the packets of a pcap or pcapng file (path or binary file object)."""
    return iter(CaptureFile(source))


def read_interface_stats(source: str | os.PathLike | BinaryIO) -> list[InterfaceStats]:
    """All Interface Statistics Blocks of a pcapng file (empty for pcap)."""
    cap = CaptureFile(source)
    for _ in cap:
        pass
    return cap.stats

