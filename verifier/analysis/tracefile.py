"""Loading a capture file into a `Trace`: read, decode, group.

Kept apart from `verifier.pcap` (file format only) and `verifier.analysis.trace`
(pure analysis) so that each of those stays usable on its own.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from verifier.wire import MalformedPacket, decode
from verifier.pcap import CaptureFile
from verifier.analysis.trace import Trace

__all__ = ["load_trace"]


def load_trace(source: str | os.PathLike | BinaryIO) -> Trace:
    """Read a pcap/pcapng file and build its Trace.

    Frames that are not TCP or ICMP errors are counted in `trace.skipped`,
    undecodable ones in `trace.malformed`. A truncated file yields the packets
    before the cut, sets `trace.truncated` and emits a CaptureTruncatedWarning;
    a file that is not a capture raises CaptureFormatError.
    """
    cap = CaptureFile(source)
    packets = []
    malformed = skipped = 0
    for raw in cap:
        try:
            pkt = decode(raw)
        except MalformedPacket:
            malformed += 1
            continue
        if pkt is None:
            skipped += 1
        else:
            packets.append(pkt)
    trace = Trace.from_packets(packets, source=cap.name)
    trace.malformed = malformed
    trace.skipped = skipped
    trace.truncated = cap.truncated
    trace.capture_stats = cap.stats
    return trace
