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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    env = {**os.environ, SLACK_ENV: f"{figures['max_ms'] / 1e3:.6f}", PACE_ENV: f"{figures['pace']:g}"}
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    sys.exit(main())
