"""The `syn-flood` fault: a bounded flood of SYNs from spoofed documentation addresses, sent from a host
in a background thread. The flood itself (packets, pacing, bounds, the router's side) is
`verifier.faults.flood`, which tests and conformance checks also drive directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults import flood
from verifier.faults.base import Fault, FaultError, Option, one_address

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host, Testbed

__all__ = ["SynFlood"]


class SynFlood(Fault, kind="syn-flood"):
    """A bounded flood of SYNs from spoofed documentation addresses (`verifier.faults.flood`), sent from the
    host it is applied to, in a background thread, for the duration of the `inject` block (whose end
    waits for the flood, which always ends by its own count or time limit).

        with inject(bed.client, SynFlood(bed.server.addr(4), 5000, count=300, rate_pps=3000)) as f:
            f.wait()

    `sources`: a documentation network, foreign to the testbed (default `flood.DEFAULT_SOURCES`).
    `dst` must be an address of a host of the same testbed (`verifier.faults.base.check_addressed`).
    Report: `sent`, `requested`, `duration_s`, `stopped_by`, ...; `status()` while it runs: `sent` so
    far and `running`.
    """

    default_host = "client"
    options = (
        Option("dst", one_address, "target address or host name (default: the server's)", address="one"),
        Option("dport", int, "target port", low=1, high=65535, required=True),
        Option("count", int, "how many SYNs", low=1, high=flood.MAX_COUNT),
        Option("rate_pps", float, "SYNs per second", low=0, low_open=True, high=flood.MAX_RATE_PPS),
        Option("sources", str, "spoofed source network (a documentation range)"),
        Option("time_limit_s", float, "stop after this long whatever is left (default: the schedule's length "
                                      "and half again, plus 0.5 s)", low=0, low_open=True, high=flood.MAX_SECONDS),
        Option("seed", int, "seed of the random sources, ports and ISNs", low=0, high=2**64 - 1),
    )

    def __init__(self, dst: str, dport: int, *, count: int = 100, rate_pps: float = 1000, sources: str | None = None,
                 time_limit_s: float | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.dst = self._checked("dst", dst)
        self.dport = self._checked("dport", dport)
        self.count = self._checked("count", count)
        self.rate_pps = self._checked("rate_pps", rate_pps)
        self.sources = sources
        self.seed = self._checked("seed", seed)
        try:  # refuse what is out of bounds now, not in the flood's thread
            self.time_limit_s = flood._check_bounds(self.count, self.rate_pps,
                                                    self._checked("time_limit_s", time_limit_s))
            flood._documentation_network(self.dst, "destination")
            if sources:
                flood._documentation_network(sources, "source range")
        except flood.FloodError as exc:
            raise FaultError(str(exc)) from None
        self._flood: flood.BackgroundFlood | None = None
        self._host: "Host | None" = None

    def addressed(self) -> dict[str, tuple[str, ...]]:
        return {"to": (self.dst,), "from": (self.sources,) if self.sources else ()}

    def fire_limit_s(self) -> float | None:
        return self.time_limit_s

    @classmethod
    def on_testbed(cls, bed: "Testbed", options: dict, host: str | None) -> str:
        """By default the flood goes to the server's first address (IPv4 if the testbed has it)."""
        if not options.get("dst"):
            options["dst"] = bed["server"].addr(4 if 4 in bed.families else 6)
        return super().on_testbed(bed, options, host)

    def describe(self) -> str:
        return (f"SYN flood of {self.count} to {self.dst} port {self.dport} at {self.rate_pps:g}/s from "
                f"{self.sources or 'a spoofed documentation range'} (at most {self.time_limit_s:g} s)")

    def apply(self, host: "Host") -> None:
        self._host = host
        self._flood = flood.BackgroundFlood(host, self.dst, self.dport, count=self.count, rate_pps=self.rate_pps,
                                            sources=self.sources, time_limit=self.time_limit_s,
                                            seed=self.seed).start()

    def status(self) -> dict:
        """While applied: how many SYNs are sent so far, and whether the flood still runs (the full
        report once it has ended)."""
        if self._flood is None or self._host is None:
            raise FaultError("the SYN flood was not started")
        if not self._flood.running and self._flood.report is not None:
            return {**self._report(self._host, self._flood.report), "running": False}
        return {"fault": self.kind, "host": self._host.name, "dst": self.dst, "dport": self.dport,
                "requested": self.count, "rate_pps": self.rate_pps, "time_limit_s": self.time_limit_s,
                "sent": self._flood.progress["sent"], "running": self._flood.running}

    def wait(self, timeout: float | None = None) -> flood.FloodReport:
        """Wait for the flood to end (it always does, by its count or time limit); its FloodReport."""
        if self._flood is None:
            raise FaultError("the SYN flood was not started")
        try:
            return self._flood.wait(self.time_limit_s + 1 if timeout is None else timeout)
        except flood.FloodError as exc:
            raise FaultError(str(exc)) from None
        except OSError as exc:  # the kernel refused the flood's socket or route
            raise FaultError(f"the SYN flood to {self.dst} failed: {exc.strerror or exc}") from None

    fire = wait

    def remove(self, host: "Host") -> dict:
        if self._flood is None:
            return self.report
        self.report = self._report(host, self.wait())
        self._host = None
        return self.report

    def _report(self, host: "Host", r: flood.FloodReport) -> dict:
        return {"fault": self.kind, "host": host.name, "family": r.family, "dst": r.dst, "dport": r.dport,
                "sources": r.sources, "requested": r.requested, "rate_pps": r.rate_pps,
                "time_limit_s": r.time_limit_s, "sent": r.sent, "send_errors": r.send_errors,
                "stopped_by": r.stopped_by, "started_ns": r.started_ns, "ended_ns": r.ended_ns,
                "first_ns": r.first_ns, "last_ns": r.last_ns, "duration_s": r.duration_s}
