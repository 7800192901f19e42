"""Capture files: the one reader of pcap and pcapng (`verifier.pcap.reader`), and the pcapng writer.

    for raw in CaptureFile("run.pcapng"):      # RawPacket: index, ts_ns, iface, linktype, data, ...
        ...

Damage in a file never raises past its header: it becomes a `Damage` note in `CaptureFile.damage`
and a warning naming the byte offset (see `verifier.pcap.reader`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

from verifier.pcap.reader import DIRECTIONS, Reader
from verifier.pcap.records import (MAX_RECORD_LEN, CaptureDamagedWarning, CaptureFormatError,
                                   CaptureTruncatedWarning, Damage, InterfaceInfo, InterfaceStats, RawPacket)
from verifier.pcap.writer import PcapngWriter

__all__ = [
    "MAX_RECORD_LEN", "CaptureDamagedWarning", "CaptureFile", "CaptureFormatError", "CaptureTruncatedWarning",
    "Damage", "InterfaceInfo", "InterfaceStats", "PcapngWriter", "RawPacket", "Reader", "read_interface_stats",
    "read_packets",
]


class CaptureFile:
    """A pcap or pcapng file read as a stream of `RawPacket`s, front to back, one record at a time.

    While and after iterating, `format`, `interfaces`, `stats`, `damage`, `truncated` and
    `packets_read` describe what has been read. Iterating again reads the file again (a path) or
    goes on from where the stream stands (a file object).
    """

    def __init__(self, source: str | os.PathLike | io.BufferedIOBase) -> None:
        self.source = source
        self._reader: Reader | None = None
        if isinstance(source, (str, bytes, os.PathLike)):
            self.name = os.fsdecode(source)
        else:
            name = getattr(source, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"

    def __iter__(self) -> Iterator[RawPacket]:
        r = self._reader = Reader(self.source)
        try:
            names = {}
            while r.next():
                iface = r.rec_iface
                name = names.get(iface)
                if name is None and iface not in names:
                    name = names[iface] = r.iface_name(iface)
                yield RawPacket(r.rec_index, r.rec_ts, iface, name, r.rec_linktype, r.record(), r.rec_orig_len,
                                DIRECTIONS[r.rec_dir])
        finally:
            r.close()

    def _get(self, attr: str, default):
        return getattr(self._reader, attr) if self._reader is not None else default

    @property
    def format(self) -> str | None:
        return self._get("format", None)

    @property
    def interfaces(self) -> list[InterfaceInfo]:
        return self._get("interfaces", [])

    @property
    def stats(self) -> list[InterfaceStats]:
        return self._get("stats", [])

    @property
    def damage(self) -> list[Damage]:
        return self._get("damage", [])

    @property
    def truncated(self) -> bool:
        return self._get("truncated", False)

    @property
    def packets_read(self) -> int:
        return self._get("packets_read", 0)


def read_packets(source: str | os.PathLike | io.BufferedIOBase) -> Iterator[RawPacket]:
    """Stream the packets of a pcap or pcapng file (path or binary file object)."""
    return iter(CaptureFile(source))


def read_interface_stats(source: str | os.PathLike | io.BufferedIOBase) -> list[InterfaceStats]:
    """All Interface Statistics Blocks of a pcapng file (empty for pcap)."""
    cap = CaptureFile(source)
    for _ in cap:
        pass
    return cap.stats
