"""Streaming a capture file through the one core: reader, decoder, grouper.

    s = Scan("big.pcapng")
    for attempt in s:              # Attempts, as they finish (idle, evicted, or at the end)
        print(attempt.json_line())
    s.stats                        # ScanStats: what was read, lost, damaged, evicted

Only the live attempts and one read buffer are held: memory stays flat as the file grows (the
table's cap, `max_connections`, bounds it on floods of distinct 4-tuples).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

from verifier.analysis.grouper import (DEFAULT_LINGER_S, DEFAULT_MAX_CONNECTIONS, DEFAULT_REORDER_S, Attempt,
                                       Grouper, ScanStats)
from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS
from verifier.pcap import Reader
from verifier.wire import Decoder

__all__ = ["Scan", "scan"]

CHUNK_FRAMES = 65536  # frames between two hand-overs of finished attempts


class Scan:
    """One streaming pass over a pcap/pcapng file (a path or a binary file object); iterate it for
    the attempts, then read `stats`. Raises CaptureFormatError (when iterated) for a file that is not
    a capture; damage and truncation are warnings and notes in `stats`."""

    def __init__(self, source: str | os.PathLike | io.BufferedIOBase, *, grouping: str = "attempt", checksums: bool = False,
                 likely_server_ports=DEFAULT_LIKELY_SERVER_PORTS, linger_s: float = DEFAULT_LINGER_S,
                 reorder_s: float = DEFAULT_REORDER_S, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.source = source
        self.checksums = checksums
        # built now, so that bad options fail before the file is opened
        self.grouper = Grouper(grouping=grouping, reorder_s=reorder_s, linger_s=linger_s,
                               max_connections=max_connections, likely_server_ports=likely_server_ports)
        self.stats: ScanStats = self.grouper.stats
        self.name = None
        #: The client namespace's SYN sysctls the capture recorded (`verifier.capture` writes them in
        #: the client interface's statistics block), known once iteration has begun; None if none.
        self.client_sysctls: dict | None = None

    def __iter__(self) -> Iterator[Attempt]:
        for chunk in self.chunks():
            yield from chunk

    def chunks(self) -> Iterator[list]:
        """The attempts in lists, as they finish (one list per stretch of the file)."""
        g = self.grouper
        reader = Reader(self.source)
        self.name = reader.name
        comments = [c for texts in reader.trailing_comments().values() for c in texts]
        if comments:  # (the schedules module, and its dataclasses, only for a capture that has any)
            from verifier.analysis.schedules import sysctls_from_comments

            self.client_sysctls = sysctls_from_comments(comments)
        try:
            dec = Decoder(self.checksums)
            while g.run(reader, dec, CHUNK_FRAMES):
                done = g.take()
                if done:
                    yield done
            g.finish()
            done = g.take()
            if done:
                yield done
        finally:
            reader.close()


def scan(source: str | os.PathLike | io.BufferedIOBase, **options) -> Scan:
    """`Scan(source, **options)`: iterate it for the attempts of a capture, streaming."""
    return Scan(source, **options)
