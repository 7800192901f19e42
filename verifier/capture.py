"""Capture: record every packet on chosen testbed interfaces to one pcapng file.

    with Capture(bed, "run.pcapng") as cap:      # live before the body runs
        bed.client.run([...])
    trace = cap.trace()                          # analysis of what was recorded
    assert not cap.lost

The recording is done by a separate process (`verifier.capture_agent`) that opens a packet socket
inside each interface's namespace; `Capture` starts it, waits for its confirmation that every socket
is bound, and on stop collects the kernel's receive and drop counters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from netns import namespace

if TYPE_CHECKING:  # pragma: no cover
    from netns import Testbed
    from verifier.trace import Trace

AGENT_START_TIMEOUT = 10.0
AGENT_STOP_TIMEOUT = 10.0


class CaptureError(RuntimeError):
    """The capture could not start, or ended badly."""


@dataclass(frozen=True)
class InterfaceStats:
    """What the kernel and the agent counted on one interface."""

    label: str
    written: int
    received: int
    dropped: int


class Capture:
    """Records the interfaces of some or all hosts of a testbed into one pcapng file.

    Each interface is named ``host:ifname`` in the file (Wireshark shows it in the interface column),
    timestamps are the kernel's, in nanoseconds, and every packet carries its direction.
    """

    def __init__(self, bed: "Testbed", path: str | Path, *, hosts: Iterable[str] | None = None,
                 interfaces: Iterable[str] | None = None, settle_ms: int = 20):
        self.bed = bed
        self.path = Path(path)
        wanted_hosts = list(hosts) if hosts is not None else list(bed.hosts)
        wanted_ifs = set(interfaces) if interfaces is not None else None
        self.targets = []
        for hname in wanted_hosts:
            host = bed[hname]
            for itf in host.interfaces:
                if wanted_ifs is None or itf.name in wanted_ifs or f"{hname}:{itf.name}" in wanted_ifs:
                    self.targets.append({"netns": host.netns, "ifname": itf.name,
                                         "label": f"{hname}:{itf.name.split('-', 1)[-1]}"})
        if not self.targets:
            raise CaptureError("nothing to capture: no interface matches the chosen hosts/interfaces")
        self.settle_ms = settle_ms
        self.stats: list[InterfaceStats] = []
        self._proc: subprocess.Popen | None = None
        self._trace: Trace | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Capture":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "verifier.capture_agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
        )
        config = {"path": str(self.path), "settle_ms": self.settle_ms, "interfaces": self.targets}
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(config) + "\n")
        self._proc.stdin.flush()
        line = _readline_within(self._proc, AGENT_START_TIMEOUT)
        if line.strip() != "ready":
            err = self._abort()
            detail = line.strip()
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise CaptureError(f"capture did not start: {detail or err or 'no answer from the capture process'}")
        return self

    def stop(self) -> list[InterfaceStats]:
        """Stop recording; returns the per-interface counts. Safe to call more than once."""
        if self._proc is None:
            return self.stats
        proc, self._proc = self._proc, None
        try:
            out, err = proc.communicate(input="stop\n", timeout=AGENT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CaptureError(f"the capture process did not stop within {AGENT_STOP_TIMEOUT} s") from None
        report = None
        for line in out.splitlines():
            if line.startswith("{"):
                report = json.loads(line)
        if proc.returncode != 0 or report is None:
            raise CaptureError(f"the capture process failed (status {proc.returncode}): {err.strip()[-500:]}")
        self.stats = [InterfaceStats(**i) for i in report["interfaces"]]
        return self.stats

    def _abort(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        proc.kill()
        _, err = proc.communicate()
        return err.strip()[-500:]

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results -------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.stats)

    @property
    def lost(self) -> bool:
        """Did the kernel drop packets before the capture could read them?"""
        return self.dropped > 0

    def summary(self) -> str:
        parts = [f"{s.label}: {s.written} packets" + (f", {s.dropped} DROPPED" if s.dropped else "")
                 for s in self.stats]
        return f"{self.path}: " + "; ".join(parts)

    def trace(self, *, allow_loss: bool = False) -> "Trace":
        """Stop the capture if it still runs, and return the analysed recording.

        Raises CaptureError if the kernel dropped packets, since the evidence would be incomplete,
        unless `allow_loss` is set.
        """
        self.stop()
        if self.lost and not allow_loss:
            raise CaptureError(f"the capture lost {self.dropped} packets, so its evidence is incomplete: "
                               f"{self.summary()}")
        if self._trace is None:
            from verifier.tracefile import load_trace

            self._trace = load_trace(self.path)
        return self._trace


def _die_with_parent() -> None:
    namespace._libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _readline_within(proc: subprocess.Popen, timeout: float) -> str:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return ""
    return proc.stdout.readline()
