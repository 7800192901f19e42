"""What the capture-file reader hands out: frames, interfaces, their statistics, and the errors,
warnings and damage notes of a file."""

from __future__ import annotations

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


class _Record:
    """What the records below share: read-only fields (their `__slots__`, set once by __init__),
    equality, hash, repr and pickling from the fields in order.

    Written out rather than made by @dataclass(frozen=True, slots=True), which generated the same:
    importing dataclasses (and inspect, ast and dis with it) and building four classes was 12 ms of
    every `verifier replay`'s start-up, 2 % of the 1 M-packet benchmark (bench/replay.py), and no
    other module of a replay needs it. tests/unit/test_pcap.py checks the behaviour."""

    __slots__ = ()

    def _values(self) -> tuple:
        return tuple([getattr(self, f) for f in self.__slots__])

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self.__slots__)})"

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name!r}")

    def __reduce__(self):
        return type(self), self._values()


_set = object.__setattr__


class Damage(_Record):
    """One damaged place of a file: its byte offset, what was wrong, and whether reading went on."""

    __slots__ = ("offset", "what", "skipped")
    offset: int
    what: str
    skipped: bool  # True: the record was skipped and reading went on; False: reading stopped here

    def __init__(self, offset: int, what: str, skipped: bool) -> None:
        _set(self, "offset", offset)
        _set(self, "what", what)
        _set(self, "skipped", skipped)

    def text(self, name: str) -> str:
        tail = "record skipped" if self.skipped else "reading stopped there"
        return f"{name}: damaged at byte {self.offset}: {self.what}; {tail}"


class RawPacket(_Record):
    """One captured frame, before any protocol decoding.

    `iface` numbers interfaces across the whole file: in a pcapng file with several sections the
    interfaces of later sections continue after those of earlier ones (so it equals the pcapng
    interface id for one-section files).
    """

    __slots__ = ("index", "ts_ns", "iface", "iface_name", "linktype", "data", "orig_len", "direction")
    index: int  # 0-based packet number in the file (Wireshark frame = index + 1)
    ts_ns: int  # absolute, nanoseconds since the epoch
    iface: int
    iface_name: str | None
    linktype: int
    data: bytes  # captured bytes (may be shorter than orig_len)
    orig_len: int
    direction: str | None  # "in", "out" or None when the capture did not say

    def __init__(self, index: int, ts_ns: int, iface: int, iface_name: str | None, linktype: int, data: bytes,
                 orig_len: int, direction: str | None) -> None:
        _set(self, "index", index)
        _set(self, "ts_ns", ts_ns)
        _set(self, "iface", iface)
        _set(self, "iface_name", iface_name)
        _set(self, "linktype", linktype)
        _set(self, "data", data)
        _set(self, "orig_len", orig_len)
        _set(self, "direction", direction)


class InterfaceInfo(_Record):
    """An interface described by a pcapng IDB (or the single pcap 'interface')."""

    __slots__ = ("id", "name", "description", "linktype", "snaplen")
    id: int  # file-wide interface number, as in RawPacket.iface
    name: str | None
    description: str | None
    linktype: int
    snaplen: int

    def __init__(self, id: int, name: str | None, description: str | None, linktype: int, snaplen: int) -> None:  # noqa: A002
        _set(self, "id", id)
        _set(self, "name", name)
        _set(self, "description", description)
        _set(self, "linktype", linktype)
        _set(self, "snaplen", snaplen)


class InterfaceStats(_Record):
    """Counters from a pcapng Interface Statistics Block; None = not recorded."""

    __slots__ = ("iface", "iface_name", "ts_ns", "received", "dropped", "filter_accepted", "os_dropped", "delivered",
                 "comments")
    iface: int
    iface_name: str | None
    ts_ns: int
    received: int | None
    dropped: int | None
    filter_accepted: int | None
    os_dropped: int | None
    delivered: int | None
    comments: tuple[str, ...]  # opt_comment texts

    def __init__(self, iface: int, iface_name: str | None, ts_ns: int, received: int | None = None,
                 dropped: int | None = None, filter_accepted: int | None = None, os_dropped: int | None = None,
                 delivered: int | None = None, comments: tuple[str, ...] = ()) -> None:
        _set(self, "iface", iface)
        _set(self, "iface_name", iface_name)
        _set(self, "ts_ns", ts_ns)
        _set(self, "received", received)
        _set(self, "dropped", dropped)
        _set(self, "filter_accepted", filter_accepted)
        _set(self, "os_dropped", os_dropped)
        _set(self, "delivered", delivered)
        _set(self, "comments", comments)

    @property
    def lost(self) -> int:
        """Packets the capture lost on this interface (dropped by the interface or the OS)."""
        return (self.dropped or 0) + (self.os_dropped or 0)
