"""Benchmark: the conformance suite's wall time, and the end-to-end cost of one check.

1. The whole conformance suite (every claim, IPv4 and IPv6) under pytest-xdist with 4 workers (the
   checks mostly wait on kernel timers, so 4 workers share 2 cores well), each test on its own
   testbed: the wall time of the pytest run. Budget: under 30 s on 2 cores.
2. The C3 check (connect refused: no kernel timer in it) run alone, repeatedly, in one pytest
   process: each test's setup + call + teardown, i.e. testbed up, capture live, program run, packets
   analysed, capture stopped, testbed down.

Prints the figures (or JSON with --json). Needs root. Timing figures live here, never in tests, and
only figures measured in this run: a peer tool's time is measured beside ours or not shown.

    sudo .venv/bin/python bench/suite.py [--repeat 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET  # noqa: N817
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4


def junit_times(path: Path) -> dict[str, float]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        out[f"{case.get('classname')}::{case.get('name')}"] = float(case.get("time", 0))
    return out


def run_pytest(args: list[str], junit: Path) -> tuple[float, int]:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          "-o", "junit_duration_report=total", *args], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t, res.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20, help="how many times to run the C3 check (default 20)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/suite.py: needs root (network namespaces): run with sudo", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="verifier-bench-"))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))

    say(f"running the conformance suite with {WORKERS} workers ...")
    wall, suite_rc = run_pytest(["tests/conformance", "-n", str(WORKERS), f"--verifier-captures={tmp / 'caps'}"],
                                tmp / "suite.xml")
    suite = junit_times(tmp / "suite.xml")
    slowest = sorted(suite.items(), key=lambda kv: -kv[1])[:3]

    say(f"running the C3 check {args.repeat} times ...")
    ids = [f"tests/conformance/test_connect.py::test_c3_c4a_no_listener_means_rst_and_econnrefused[ipv{f}]"
           for f in (4, 6)]
    c3: list[float] = []
    rc3 = 0
    for i in range(args.repeat):  # one pytest run each: pytest runs a node id once per session
        _, rc = run_pytest(["-p", "no:xdist", f"--verifier-captures={tmp / 'caps'}", *ids], tmp / f"c3-{i}.xml")
        rc3 |= rc
        c3 += list(junit_times(tmp / f"c3-{i}.xml").values())

    figures = {
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "suite": {"wall_s": round(wall, 2), "tests": len(suite), "passed": suite_rc == 0, "workers": WORKERS,
                  "slowest": [{"test": k.split("::")[-1], "s": round(v, 2)} for k, v in slowest]},
        "c3_check": {"runs": len(c3), "median_s": round(statistics.median(c3), 4) if c3 else None,
                     "p90_s": round(sorted(c3)[int(len(c3) * 0.9)], 4) if c3 else None, "passed": rc3 == 0},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    s, c = figures["suite"], figures["c3_check"]
    print(f"conformance suite, kernel {figures['kernel']}, {figures['cpus']} CPUs, pytest-xdist -n {WORKERS}")
    print(f"  wall time        {s['wall_s']:6.2f} s for {s['tests']} tests ({'all passed' if s['passed'] else 'FAILURES'});"
          f" budget 30 s")
    print("  slowest tests    " + ", ".join(f"{x['test']} {x['s']} s" for x in s["slowest"]))
    print(f"C3 check end to end (testbed up, capture, program, analysis, teardown), {c['runs']} runs")
    print(f"  median {c['median_s'] * 1000:6.1f} ms   p90 {c['p90_s'] * 1000:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
