"""The pcapng writer: little-endian, one section, nanosecond timestamps; files Wireshark opens.

Pure Python (`struct`): the capture agent writes at most a few hundred thousand packets per second per
process, and the per-packet cost here is a single pack and a write.
"""

from __future__ import annotations

import io
import struct

__all__ = ["PcapngWriter"]

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_ISB = 0x00000005
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_EPB_FLAGS = 2
_ISB_IFRECV = 4
_ISB_IFDROP = 5
_ISB_OSDROP = 7
_ISB_USRDELIV = 8


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

    def __init__(self, fileobj: io.BufferedIOBase, *, application: str = "tcp-verifier") -> None:
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
        os_dropped: int | None = None,
        delivered: int | None = None,
        comment: str | None = None,
    ) -> None:
        """Write an Interface Statistics Block with isb_ifrecv / isb_ifdrop, and isb_osdrop /
        isb_usrdeliv and an opt_comment when given."""
        self._check_iface(iface_id)
        opts = [] if comment is None else [_option(_OPT_COMMENT, comment.encode())]
        for code, value in ((_ISB_IFRECV, received), (_ISB_IFDROP, dropped), (_ISB_OSDROP, os_dropped),
                            (_ISB_USRDELIV, delivered)):
            if value is not None:
                opts.append(_option(code, struct.pack("<Q", value)))
        body = struct.pack("<III", iface_id, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF)
        self._f.write(_block(_ISB, body + _options(opts)))

    def flush(self) -> None:
        self._f.flush()
