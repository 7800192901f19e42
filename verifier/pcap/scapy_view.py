"""Captured frames as Scapy packets: a `PacketList` whose packets are dissected by Scapy only when
they are looked at.

    pkts = scapy_packets("run.pcapng")          # reads the file with the one reader (verifier.pcap)
    pkts[3].show()                              # dissected now, and kept
    syn_acks = pkts.filter(lambda p: p.haslayer("TCP") and p["TCP"].flags == "SA")

Each packet carries what the capture said of it: `time` (Scapy's, seconds) and `ts_ns` (the same
instant in integer nanoseconds), `sniffed_on` (the interface, ``client:c0``), `direction` ("in",
"out" or None) and `index` (its place in the file: Wireshark frame `index + 1`). The verdicts never
go through Scapy: they are the fast engine's (`verifier.analysis`); this view is for reading and
for crafting answers from what was seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from verifier.pcap import CaptureFile, RawPacket

__all__ = ["LazyPackets", "dissect", "scapy_packets"]


def dissect(raw: RawPacket) -> Any:
    """One captured frame as a Scapy packet, by its link type, with its capture context attached."""
    import scapy.layers.inet  # noqa: F401 - the layers register themselves (link types, IP protocols)
    import scapy.layers.inet6  # noqa: F401
    import scapy.layers.l2  # noqa: F401
    from scapy.config import conf
    from scapy.packet import Raw
    from scapy.utils import EDecimal

    cls = conf.l2types.get(raw.linktype, Raw)
    try:
        pkt = cls(raw.data)
    except Exception:  # noqa: BLE001 - Scapy could not dissect it: keep the bytes
        pkt = Raw(raw.data)
    pkt.time = EDecimal(raw.ts_ns) / 1_000_000_000
    pkt.wirelen = raw.orig_len
    pkt.ts_ns = raw.ts_ns
    pkt.sniffed_on = raw.iface_name
    pkt.direction = raw.direction
    pkt.index = raw.index
    return pkt


class LazyPackets(Sequence):
    """The frames of a capture, dissected by Scapy on first access (and then kept)."""

    def __init__(self, raws: list[RawPacket]) -> None:
        self.raws = raws
        self._done: list[Any] = [None] * len(raws)

    def __len__(self) -> int:
        return len(self.raws)

    def __getitem__(self, i):
        if isinstance(i, slice):
            sub = LazyPackets(self.raws[i])
            sub._done = self._done[i]
            return sub
        pkt = self._done[i]
        if pkt is None:
            pkt = self._done[i] = dissect(self.raws[i])
        return pkt

    def __iter__(self):
        for i in range(len(self.raws)):
            yield self[i]

    def __add__(self, other: Iterable) -> list:
        return list(self) + list(other)

    def __radd__(self, other: Iterable) -> list:
        return list(other) + list(self)

    @property
    def dissected(self) -> int:
        """How many have been dissected so far."""
        return sum(p is not None for p in self._done)


def scapy_packets(source: str | os.PathLike, indices: Iterable[int] | None = None, *,
                  iface: str | None = None, name: str | None = None):
    """A Scapy `PacketList` of the capture's frames (those at `indices`, and/or on interface `iface`),
    in file order, dissected lazily (`LazyPackets`)."""
    from scapy.plist import PacketList

    wanted = None if indices is None else set(indices)
    raws = [r for r in CaptureFile(source)
            if (wanted is None or r.index in wanted) and (iface is None or r.iface_name == iface)]
    return PacketList(LazyPackets(raws), name or os.path.basename(os.fspath(source)))
