"""What runs first inside a guest: measure how late this guest's timers fire, then become the command.

    python -m verifier.kernels.inguest -- COMMAND...

Under emulation (QEMU TCG) a timer fires when the emulated CPU gets to run its interrupt, later than
on the host, and later still when the guest is busy, as it is during the suite (parallel testbeds,
many processes). The probe sleeps `SAMPLES` times for `INTERVAL_S` (clock_nanosleep, an hrtimer)
while every CPU of the guest is kept busy starting processes (one shell loop per CPU), and takes
the largest lateness seen. It writes the figures to ``$VERIFIER_GUEST_DIR/probe.json`` (the run's shared
folder, read back by the host and shown in the kernels report) and hands the command the lateness
as ``VERIFIER_TIMER_SLACK_S``, which tests/kernel.py adds to the timer tolerance. On the host
nothing sets it, and the tolerance is the host's.

It also measures how much slower the guest runs programs than the host: the time to start and reap
a process here, against the same figure measured on the host just before the boot (handed in as
``VERIFIER_HOST_PROCESS_START_MS``). The ratio goes to the command as ``VERIFIER_PACE``, by which
`netns.waiting` stretches every deadline (how long to wait for a program, an agent, a socket).

The lateness goes on being measured while the command runs: a monitor process (`monitor`) keeps
sleeping `INTERVAL_S` and writes the largest lateness of the last `WINDOW_S` seconds to a file
named in ``VERIFIER_LATENESS_FILE``; tests/kernel.py reads it each time a timing check asks for its
tolerance, so a check is allowed what the guest was measured to be late by while it ran, and the
run's worst figure is left in ``lateness.json`` in the shared folder for the kernels report.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = 100
INTERVAL_S = 0.02
SLACK_ENV = "VERIFIER_TIMER_SLACK_S"
HOST_START_ENV = "VERIFIER_HOST_PROCESS_START_MS"
PACE_ENV = "VERIFIER_PACE"  # read by netns.waiting.pace (this module imports no netns: the contract)


def process_start_ms(n: int = 10) -> float:
    """The median time to start and reap a process (/bin/true), in ms: how fast this machine runs
    what the tests do most; under emulation many times the host's figure."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["/bin/true"])
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2)


def measure(samples: int = SAMPLES, interval_s: float = INTERVAL_S, load: bool = True) -> dict:
    """The lateness of `samples` sleeps of `interval_s` (ms: median, p90, max), with every CPU busy
    starting processes when `load` (a test's testbed setup does that)."""
    cpus = os.cpu_count() or 1
    start_ms = process_start_ms()
    loaders = [subprocess.Popen(["/bin/sh", "-c", "while :; do /bin/true; done"]) for _ in range(cpus if load else 0)]
    late = []
    try:
        for _ in range(samples):
            t0 = time.monotonic_ns()
            time.sleep(interval_s)
            late.append((time.monotonic_ns() - t0) / 1e6 - interval_s * 1e3)
    finally:
        for p in loaders:
            p.kill()
            p.wait()
    late.sort()
    return {"samples": samples, "interval_ms": interval_s * 1e3,
            "load": f"{cpus} CPU(s) busy starting processes" if load else "idle",
            "median_ms": round(statistics.median(late), 3), "p90_ms": round(late[int(0.9 * (len(late) - 1))], 3),
            "max_ms": round(late[-1], 3), "kernel": os.uname().release, "sysctls": sysctls_present(),
            "process_start_ms": start_ms}


#: The SYN-related sysctls whose presence tells kernels apart (verifier.analysis.schedules models each).
SYSCTLS = ("net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts", "net.ipv4.tcp_rto_max_ms",
           "net.ipv4.tcp_rto_min_us", "net.ipv4.tcp_syncookies", "net.ipv4.tcp_abort_on_overflow")


def sysctls_present() -> dict[str, bool]:
    """Which of `SYSCTLS` this kernel has (in the initial namespace; the testbeds' are the same set)."""
    return {name: Path("/proc/sys", *name.split(".")).exists() for name in SYSCTLS}


def pace_of(guest_ms: float, host_ms: str | None) -> float:
    """How many times slower the guest starts a process than the host (>= 1, one decimal); 1 when
    the host's figure is missing or not a positive number."""
    try:
        host = float(host_ms) if host_ms is not None else 0.0
    except ValueError:
        host = 0.0
    return round(max(1.0, guest_ms / host), 1) if host > 0 else 1.0


LATENESS_ENV = "VERIFIER_LATENESS_FILE"
WINDOW_S = 30.0  # the live figure covers this much of the past: longer than a check takes


class Lateness:
    """How late sleeps of `interval_s` have come back over the last `window_s` seconds: the live
    figure, for the timing checks running now (`add` a sample, `max_ms` over the window), and
    the largest and the count over the whole run."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        from collections import deque

        self.window_ns = int(window_s * 1e9)
        self._recent: deque = deque()  # (t_ns, late_ms), late_ms decreasing from the left: a max-queue
        self.samples = 0
        self.worst_ms = 0.0

    def add(self, t_ns: int, late_ms: float) -> None:
        while self._recent and self._recent[-1][1] <= late_ms:
            self._recent.pop()
        self._recent.append((t_ns, late_ms))
        while self._recent[0][0] < t_ns - self.window_ns:
            self._recent.popleft()
        self.samples += 1
        self.worst_ms = max(self.worst_ms, late_ms)

    @property
    def max_ms(self) -> float:
        return self._recent[0][1] if self._recent else 0.0


def monitor(path: Path, summary: Path | None, interval_s: float = INTERVAL_S, stop=None) -> None:
    """Sleep `interval_s` over and over, until `stop()` is true (by default: until the process that
    started this one has ended, so that nothing is left running on a host),
    and keep the largest lateness of the last `WINDOW_S` in `path` (ms, a number; replaced whole,
    so a reader never sees half of it), and the run's figures in `summary` (JSON) every 5 s."""
    lat = Lateness()
    written = None
    next_summary = time.monotonic()
    tmp = path.with_suffix(".tmp")
    parent = os.getppid()
    if stop is None:  # as a process: until the command it measures for has ended (we are reparented)
        def stop():
            return os.getppid() != parent
    while not stop():
        t0 = time.monotonic_ns()
        time.sleep(interval_s)
        t1 = time.monotonic_ns()
        lat.add(t1, max(0.0, (t1 - t0) / 1e6 - interval_s * 1e3))
        value = f"{lat.max_ms:.3f}"
        if value != written:
            tmp.write_text(value)
            os.replace(tmp, path)
            written = value
        if summary is not None and time.monotonic() >= next_summary:
            summary.write_text(json.dumps({"samples": lat.samples, "interval_ms": interval_s * 1e3,
                                           "max_ms": round(lat.worst_ms, 3), "window_s": WINDOW_S}))
            next_summary = time.monotonic() + 5.0


def live_lateness_s(path: str | None) -> float:
    """The monitor's figure now (seconds): the largest lateness of its last window; 0 without one."""
    if not path:
        return 0.0
    try:
        return max(0.0, float(Path(path).read_text()) / 1e3)
    except (OSError, ValueError):
        return 0.0


def start_monitor(guest_dir: str | None) -> str:
    """Start `monitor` as a process of its own (it ends with the guest); the live file's path."""
    import tempfile

    path = Path(tempfile.gettempdir()) / f"verifier-lateness-{os.getpid()}"
    path.write_text("0")
    argv = [sys.executable, "-m", "verifier.kernels.inguest", "--monitor", str(path)]
    if guest_dir:
        argv.append(str(Path(guest_dir) / "lateness.json"))
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--monitor"]:
        try:
            monitor(Path(argv[1]), Path(argv[2]) if len(argv) > 2 else None)
        finally:
            for leftover in (Path(argv[1]), Path(argv[1]).with_suffix(".tmp")):
                leftover.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m verifier.kernels.inguest -- COMMAND...", file=sys.stderr)
        return 2
    figures = measure()
    figures["pace"] = pace_of(figures["process_start_ms"], os.environ.get(HOST_START_ENV))
    out = os.environ.get("VERIFIER_GUEST_DIR")
    if out:
        (Path(out) / "probe.json").write_text(json.dumps(figures))
    print(f"verifier-guest: timer lateness at boot: median {figures['median_ms']:.2f} ms, max {figures['max_ms']:.2f} ms "
          f"over {figures['samples']} sleeps of {figures['interval_ms']:g} ms; a process starts in "
          f"{figures['process_start_ms']:g} ms, {figures['pace']:g} times the host's", flush=True)
    env = {**os.environ, SLACK_ENV: f"{figures['max_ms'] / 1e3:.6f}", PACE_ENV: f"{figures['pace']:g}",
           LATENESS_ENV: start_monitor(out)}
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    sys.exit(main())
