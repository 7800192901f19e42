"""Benchmark: the wall time of `make kernels` end to end, as a process: the conformance suite on the
host kernel, on 6.1 and on 6.12 (QEMU guests, pure emulation), two at a time on the 2 cores, and the
side-by-side report. Target: at most 5 minutes on 2 cores.

Runs ``make kernels`` itself (setup included: idempotent, well under a second when nothing changed;
the Debian kernels are fetched into .cache/kernels on the first run only, and that run's figure
includes the download and unpacking). Prints the wall time, each kernel's own wall time, guest boot times and timer
lateness from the report, or JSON with --json. Needs root.

    sudo .venv/bin/python bench/kernels.py [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--out", default="captures/kernels", help="make kernels' output folder (default captures/kernels)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/kernels.py: needs root (make kernels builds namespaces): run with sudo", file=sys.stderr)
        return 1
    out = ROOT / args.out
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say("running sudo make kernels (host + 6.1 + 6.12) ...")
    t = time.perf_counter()
    res = subprocess.run(["make", "--no-print-directory", "kernels", "KERNELS=host 6.1 6.12"], cwd=ROOT,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    kernels = report.get("kernels", {})
    figures = {
        "make_kernels_wall_s": round(wall, 1), "target_s": TARGET_S, "exit_status": res.returncode,
        "cpus": os.cpu_count(), "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "checks": len(report.get("rows", [])), "claims": len(report.get("claims", [])),
        "differ": sum(r["differs"] for r in report.get("rows", [])),
        "kernels": {label: {"release": f.get("kernel"), "wall_s": f.get("wall_s"), "boot_s": f.get("boot_s"),
                            "timer_lateness_max_ms": (f.get("probe") or {}).get("max_ms"),
                            "holds": sum(r["kernels"][label]["verdict"] == "holds" for r in report.get("rows", []))}
                    for label, f in kernels.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"make kernels: {wall:.0f} s wall time end to end (target <= {TARGET_S} s) on {os.cpu_count()} CPUs, "
          f"exit status {res.returncode}; {figures['checks']} checks over {figures['claims']} claims, "
          f"{figures['differ']} differ between kernels")
    for label, k in figures["kernels"].items():
        boot = f", boot {k['boot_s']:.1f} s" if k["boot_s"] else ""
        late = f", timer lateness max {k['timer_lateness_max_ms']:.1f} ms" if k["timer_lateness_max_ms"] is not None else ""
        print(f"  {label:>6} ({k['release']}): {k['wall_s']:.0f} s{boot}{late}; {k['holds']} of {figures['checks']} hold")
    if res.returncode not in (0, 1):
        print(res.stdout[-2000:] + res.stderr[-2000:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
