"""Capture: record every packet on chosen testbed interfaces to one pcapng file.

    with Capture(bed, "run.pcapng") as cap:      # live before the body runs
        bed.client.run([...])
    trace = cap.trace()                          # analysis of what was recorded
    assert not cap.lost

The recording is done by a separate process (`verifier.capture.agent`, one per Python process,
serving every capture of that process) that opens a packet socket with a memory-mapped receive ring
inside each interface's namespace; `Capture.start` returns once it confirms that every socket is
bound, and `stop` collects the kernel's receive and drop counters.

The file holds every interface, so a packet that crossed four interfaces is in it four times: that
is the evidence (where each copy was, when, in which direction), but Wireshark's TCP analysis takes
the copies for retransmissions. `write_views()` writes, next to it, one file per host with only
that host's interface (``run.client.pcapng``), which Wireshark analyses as that host saw it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import select
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from netns.waiting import scaled
from verifier.capture import views

if TYPE_CHECKING:  # pragma: no cover
    from netns import Testbed
    from verifier.analysis.trace import Trace

AGENT_TIMEOUT = 10.0
# Each interface's receive ring (verifier.capture.agent): at 100 k packets/s of small frames, 8 MiB
# hold about half a second.
DEFAULT_RING_MIB = 8
MAX_RING_MIB = 1024
DEFAULT_VIEWS = ("client",)


class CaptureError(RuntimeError):
    """The capture could not start, or ended badly."""


@dataclass(frozen=True)
class InterfaceStats:
    """What the kernel and the agent counted on one interface."""

    label: str
    written: int
    received: int
    dropped: int
    discarded: int = 0  # taken out after the packet limit (`count`) was reached, not written
    missing: int = 0  # counted by the kernel but never out of the ring (never seen; lost all the same)

    @property
    def lost(self) -> int:
        return self.dropped + self.missing


class Capture:
    """Records the interfaces of some or all hosts of a testbed into one pcapng file.

    Each interface is named ``host:ifname`` in the file (Wireshark shows it in the interface column),
    timestamps are the kernel's, in nanoseconds, and every packet carries its direction.

    `ring_mib`: the receive ring of each interface, in MiB (the kernel drops what arrives while it
    is full; `stats` and the file count those drops). `count`: write exactly that many packets (the
    first, in time order), then stop recording, as ``tcpdump -c`` does (`done` tells).
    """

    def __init__(self, bed: "Testbed", path: str | Path, *, hosts: Iterable[str] | None = None,
                 interfaces: Iterable[str] | None = None, settle_ms: int = 20,
                 ring_mib: int = DEFAULT_RING_MIB, count: int | None = None):
        if count is not None and count < 1:
            raise CaptureError(f"a packet count is 1 or more, not {count}")
        self.bed = bed
        self.path = Path(path)
        self.ring_mib = ring_mib
        self.count = count
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
        self.engine: str | None = None  # the agent's ring reader once started: "compiled" or "python"
        self.stats: list[InterfaceStats] = []
        # Packets the kernel put in a ring a little out of stamp order, written in time order all the
        # same (`reordered`), and those stamped too far out of order to be, left where they were (`late`).
        self.reordered = 0
        self.late = 0
        self.client_sysctls: dict[str, str | None] | None = None  # read at stop(), recorded in the file
        self._id: int | None = None
        self._trace: Trace | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Capture":
        """Start recording; returns once every interface's socket is bound (the capture is live)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        answer = _service.request({"op": "start", "path": str(self.path), "settle_ms": self.settle_ms,
                                   "ring_mib": self.ring_mib, "count": self.count or 0,
                                   "interfaces": self.targets})
        if not answer.get("ready"):
            raise CaptureError(f"capture did not start: {answer.get('error', answer)}")
        self._id = answer["id"]
        self.engine = answer.get("engine")
        return self

    def status(self) -> dict:
        """While running: {"written": packets in the file, "dropped": lost so far, "done": whether
        `count` packets have been written (or the capture process was told to end)}."""
        if self._id is None:
            return {"written": sum(s.written for s in self.stats), "dropped": self.dropped, "done": True}
        answer = _service.request({"op": "status", "id": self._id})
        if "written" not in answer:
            raise CaptureError(f"the capture of {self.path} ended badly: {answer.get('error', answer)}")
        return answer

    def written(self) -> int:
        """Packets recorded so far (while running)."""
        return self.status()["written"]

    def stop(self) -> list[InterfaceStats]:
        """Stop recording; returns the per-interface counts. Safe to call more than once."""
        if self._id is None:
            return self.stats
        rid, self._id = self._id, None
        # The client's SYN sysctls as they are at the end (a test may set them after the start),
        # recorded in the file, so that a later reading of it models them too (load_trace).
        self.client_sysctls = _client_sysctls(self.bed)
        comments = {}
        if self.client_sysctls is not None:
            from verifier.analysis.schedules import sysctls_comment

            text = sysctls_comment(self.client_sysctls)
            comments = {t["label"]: text for t in self.targets if t["label"].split(":", 1)[0] == "client"}
        answer = _service.request({"op": "stop", "id": rid, "comments": comments})
        if "interfaces" not in answer:
            raise CaptureError(f"the capture of {self.path} ended badly: {answer.get('error', answer)}")
        self.stats = [InterfaceStats(**i) for i in answer["interfaces"]]
        self.reordered = answer.get("reordered", 0)
        self.late = answer.get("late", 0)
        return self.stats

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results -------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Packets lost on all interfaces (the kernel dropped them: the ring was full)."""
        return sum(s.lost for s in self.stats)

    @property
    def lost(self) -> bool:
        """Did the kernel drop packets before the capture could read them?"""
        return self.dropped > 0

    def summary(self) -> str:
        parts = []
        for s in self.stats:
            part = f"{s.label}: {s.written} packets"
            if s.lost:
                part += f", {s.lost} DROPPED"
            if s.discarded:
                part += f" ({s.discarded} more after the count)"
            parts.append(part)
        if self.late:
            parts.append(f"{self.late} packets stamped too far out of order to be sorted (left in the kernel's order)")
        return f"{self.path}: " + "; ".join(parts)

    def write_views(self, hosts: Iterable[str] | None = None) -> list[Path]:
        """Write, next to the capture, one file per host with only that host's interface, which
        Wireshark's TCP analysis reads as that host saw the exchange (no copies from the other
        interfaces). Default: the client's (``run.client.pcapng``). A host with several interfaces
        (the router) gets one file per interface (``run.router-r0.pcapng``). Returns the paths."""
        self.stop()
        wanted = list(DEFAULT_VIEWS if hosts is None else hosts)
        labels = [t["label"] for t in self.targets]
        chosen = []
        for host in wanted:
            mine = [lab for lab in labels if lab.split(":", 1)[0] == host or lab == host]
            if not mine:
                if hosts is None:
                    continue  # the default view of a capture without a client: nothing to write
                raise CaptureError(f"no view of {host!r}: this capture has {', '.join(labels)}")
            by_host = len(mine) == 1 and ":" not in host
            chosen += [(lab, views.view_path(self.path, host if by_host else lab)) for lab in mine]
        return [views.write_view(self.path, lab, dst) for lab, dst in chosen]

    def packets(self, iface: str | None = None):
        """Stop the capture if it still runs, and return its frames (every interface, or `iface`, such
        as ``"client:c0"``) as a Scapy `PacketList`, dissected lazily: each packet has `time`, `ts_ns`
        (the kernel's timestamp), `sniffed_on` (``host:ifname``), `direction` ("in"/"out") and `index`
        (Wireshark frame `index + 1`). Verdicts come from `trace()`, not from these."""
        self.stop()
        from verifier.pcap.scapy_view import scapy_packets

        return scapy_packets(self.path, iface=iface)

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
            from verifier.analysis.trace import load_trace

            self._trace = load_trace(self.path)
            self._trace.client_sysctls = self.client_sysctls
        return self._trace


def _client_sysctls(bed: "Testbed") -> dict[str, str | None] | None:
    """The SYN sysctls of the testbed's client namespace, read now (None if the testbed has no client
    or is gone): a `linux` SYN-schedule check on the trace models them, not the kernel's defaults."""
    from verifier.analysis.schedules import LINUX_SYSCTLS

    try:
        client = bed["client"]
    except (KeyError, LookupError):
        return None
    values: dict[str, str | None] = {}
    for key in LINUX_SYSCTLS:
        try:
            values[key] = client.sysctl(key)
        except KeyError:  # not on this kernel
            values[key] = None
        except OSError:  # the namespace is gone
            return None
    return values


class _Service:
    """The capture process of this Python process (see `verifier.capture.agent`), started on first
    use and restarted if it died. Requests are serialised: each is one line out, one line back."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def request(self, req: dict) -> dict:
        answer = self._request(req)
        if answer.get("retiring"):  # it was told to end (SIGTERM) and is handing over its last results
            with self._lock:
                self._proc = None  # it exits once they are collected; a fresh one serves from now on
            answer = self._request(req)
        elif answer.get("gone") and req["op"] == "start":
            answer = self._request(req)  # it died between captures: a fresh one takes the request
        return answer

    def _request(self, req: dict) -> dict:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._spawn()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            req.setdefault("id", next(self._ids))
            try:
                proc.stdin.write(json.dumps(req) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                return {"error": f"the capture process is gone: {self._reap()}", "gone": True}
            limit = scaled(AGENT_TIMEOUT)
            ready, _, _ = select.select([proc.stdout], [], [], limit)
            line = proc.stdout.readline() if ready else ""
            if not line:
                late = "" if ready else f" within {limit:g} s"
                return {"error": f"no answer from the capture process{late}: {self._reap()}", "gone": True}
            answer = json.loads(line)
            answer.setdefault("id", req["id"])
            return answer

    def _spawn(self) -> None:
        from netns.process import start_agent

        self._proc = start_agent("verifier.capture.agent", stderr=subprocess.PIPE, text=True)

    def _reap(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        proc.kill()
        _, err = proc.communicate()
        return (err or "").strip()[-500:] or f"exit status {proc.returncode}"

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.communicate(timeout=scaled(AGENT_TIMEOUT))  # EOF on stdin ends it
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None


_service = _Service()
atexit.register(_service.close)
