"""Benchmark: corpus mode (`verifier replay DIR/`) on 1 and 2 cores, process pool and local dask.

    .venv/bin/python bench/corpus.py [--files N] [--packets N] [--runs N] [--keep DIR] [--json]

Writes a corpus of --files captures (default 8) of --packets frames each (default 200,000; the mixed
traffic of bench/replay.py: full exchanges, refusals, timeouts, ICMP errors, resets), then times,
each command as its own process, end to end as the user runs it, best of --runs (default 3):

* one capture alone: `verifier replay FILE --json > /dev/null` (the per-core baseline)
* the corpus on one core: `verifier replay DIR/ --json --jobs 1`
* the corpus on two cores: `verifier replay DIR/ --json --jobs 2`
* the same on a local dask.distributed cluster (started here, once, before the timed runs: its
  start-up time is given apart) of one and of two worker processes, one thread each:
  `verifier replay DIR/ --json --dask tcp://127.0.0.1:PORT`

and prints packets per second, the speed-up over one core, and the per-core throughput against the
single capture (the issue's "as fast per core as a single file"). Before the timed runs, one run of
each kind is checked: all give the same JSON Lines, byte for byte. The machine's core count and load
average are printed with the figures: on a shared machine the 2-core figures are only as good as
the second core was free; so the CPU time of the pool runs (the process and its workers, user +
system) is given too: packets per CPU-second shows what corpus mode costs per core, free or not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from replay import Measure, _verifier_cmd, generate  # noqa: E402  (bench/replay.py)


def cpu_seconds(argv: list[str]) -> tuple[float, float]:
    """(user, system) CPU of `argv` and of the processes it waited for (a pool's workers; not a dask
    cluster's, which are not its children), stdout to /dev/null."""
    with open(os.devnull, "wb") as devnull:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=devnull, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)}: exit status {os.waitstatus_to_exitcode(status)}")
    return ru.ru_utime, ru.ru_stime


def _corpus(root: Path, files: int, packets: int, say) -> int:
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for k in range(files):
        path = root / f"mix-{k:02d}.pcapng"
        marker = path.with_suffix(".json")
        if path.exists() and marker.exists() and json.loads(marker.read_text()).get("packets_asked") == packets:
            total += json.loads(marker.read_text())["packets"]
            continue
        say(f"writing {path.name} ({packets} packets)")
        info = generate(path, packets, seed=100 + k)
        marker.write_text(json.dumps({"packets_asked": packets, "packets": info["packets"]}))
        total += info["packets"]
    return total


def _stdout_hash(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit status {res.returncode}\n{res.stderr.decode()[-2000:]}")
    return hashlib.sha256(res.stdout).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--packets", type=int, default=200_000, help="frames per capture (default 200000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="write the corpus here and keep it; reuse it when present")
    ap.add_argument("--no-dask", action="store_true", help="skip the dask rows")
    ap.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    a = ap.parse_args()
    load_before = os.getloadavg()
    say = (lambda m: print(m, file=sys.stderr)) if a.json else print
    verifier = str(_verifier_cmd())
    tmp = tempfile.TemporaryDirectory(prefix="bench-corpus-")
    root = Path(a.keep) if a.keep else Path(tmp.name) / "corpus"
    packets = _corpus(root, a.files, a.packets, say)
    one = str(sorted(root.glob("*.pcapng"))[0])
    d = str(root) + "/"
    rows = [Measure("one capture alone", [verifier, "replay", one, "--json"]),
            Measure("corpus, pool, 1 core (--jobs 1)", [verifier, "replay", d, "--json", "--jobs", "1"]),
            Measure("corpus, pool, 2 cores (--jobs 2)", [verifier, "replay", d, "--json", "--jobs", "2"])]
    clusters = []
    startup = {}
    if not a.no_dask:
        import logging
        import time

        logging.getLogger("distributed").setLevel(logging.ERROR)

        from dask.distributed import LocalCluster

        for n in (1, 2):
            t = time.perf_counter()
            c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                             host="127.0.0.1", local_directory=tmp.name, silence_logs=logging.ERROR)
            c.wait_for_workers(n)
            startup[n] = time.perf_counter() - t
            clusters.append(c)
            rows.append(Measure(f"corpus, dask, {n} worker(s)", [verifier, "replay", d, "--json", "--dask",
                                                                  c.scheduler_address]))
    try:
        hashes = {m.label: _stdout_hash(m.argv) for m in rows[1:]}
        if len(set(hashes.values())) != 1:
            raise SystemExit(f"the corpus runs differ: {hashes}")
        for _ in range(a.runs):
            for m in rows:
                m.run()
        split = {m.label: min((cpu_seconds(m.argv) for _ in range(2)), key=sum) for m in rows[:3]}
        lines_cpu = {j: min((cpu_seconds([verifier, "replay", d, "--jobs", j]) for _ in range(2)), key=sum)
                     for j in ("1", "2")}
        cpu = {k: sum(v) for k, v in split.items()}
    finally:
        for c in clusters:
            c.close()
    single_pps = (packets / a.files) / rows[0].best_s
    base = rows[1].best_s
    out = {"cores": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "files": a.files, "packets": packets,
           "dask_startup_s": startup, "cpu_user_sys_s": split, "cpu_without_json_user_sys_s": lines_cpu, "rows": []}
    for k, m in enumerate(rows):
        n_pk = packets / a.files if k == 0 else packets
        cores = 2 if "2 " in m.label else 1
        pps = n_pk / m.best_s
        out["rows"].append({**m.as_json(), "packets": n_pk, "packets_per_s": pps, "cores": cores,
                            "speedup_vs_1_core": None if k == 0 else base / m.best_s,
                            "per_core_vs_single_file": pps / cores / single_pps,
                            "cpu_s": cpu.get(m.label), "packets_per_cpu_s": n_pk / cpu[m.label] if m.label in cpu else None})
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    say(f"\n{a.files} captures, {packets} packets in all; {os.cpu_count()} cores, load average "
        f"{out['loadavg_before'][0]:.2f} before, {out['loadavg_after'][0]:.2f} after (1 min)")
    say(f"{'':38} {'best s':>8} {'packets/s':>11} {'vs 1 core':>9} {'per core vs one file':>21} {'peak RSS MB':>11} "
        f"{'packets/CPU-s':>13}")
    for r, m in zip(out["rows"], rows):
        sp = "" if r["speedup_vs_1_core"] is None else f"{r['speedup_vs_1_core']:.2f}x"
        say(f"{m.label:38} {m.best_s:8.2f} {r['packets_per_s']:11,.0f} {sp:>9} {r['per_core_vs_single_file']:21.2f} "
            f"{m.peak_rss_mb:11.0f} " + (f"{r['packets_per_cpu_s']:13,.0f}" if r["packets_per_cpu_s"] else ""))
    say("CPU, user + system: " + ", ".join(f"{k} {u:.2f} + {y:.2f} s" for k, (u, y) in split.items()))
    say("CPU without --json (one line per capture): " + ", ".join(f"--jobs {j} {u:.2f} + {y:.2f} s"
                                                                   for j, (u, y) in lines_cpu.items()))
    if startup:
        say("dask cluster start-up (not in the times): " + ", ".join(f"{n} worker(s) {s:.1f} s" for n, s in startup.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
