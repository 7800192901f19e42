"""What the capture-file reader hands out: frames, interfaces, their statistics, and the errors,
warnings and damage notes of a file."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CaptureDamagedWarning", "CaptureFormatError", "CaptureTruncatedWarning", "Damage", "InterfaceInfo",
    "InterfaceStats", "MAX_RECORD_LEN", "RawPacket",
]

#: Anything longer than this in a single record is garbage, not a packet (also libpcap's limit for
#: the largest link types is 256 KiB; pcapng blocks of other kinds may be larger).
MAX_RECORD_LEN = 256 * 1024 * 1024


class CaptureFormatError(ValueError):
    """The file is not a readable pcap/pcapng capture; the message is one line."""


class CaptureTruncatedWarning(UserWarning):
    """The capture ends in the middle of a record; packets before it were read."""


class CaptureDamagedWarning(UserWarning):
    """A record of the capture is damaged: it was skipped, or reading stopped there."""


@dataclass(frozen=True, slots=True)
class Damage:
    """One damaged place of a file: its byte offset, what was wrong, and whether reading went on."""

    offset: int
    what: str
    skipped: bool  # True: the record was skipped and reading went on; False: reading stopped here

    def text(self, name: str) -> str:
        tail = "record skipped" if self.skipped else "reading stopped there"
        return f"{name}: damaged at byte {self.offset}: {self.what}; {tail}"


@dataclass(frozen=True, slots=True)
class RawPacket:
    """One captured frame, before any protocol decoding.

    `iface` numbers interfaces across the whole file: in a pcapng file with several sections the
    interfaces of later sections continue after those of earlier ones (so it equals the pcapng
    interface id for one-section files).
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
    comments: tuple[str, ...] = ()  # opt_comment texts

    @property
    def lost(self) -> int:
        """Packets the capture lost on this interface (dropped by the interface or the OS)."""
        return (self.dropped or 0) + (self.os_dropped or 0)
