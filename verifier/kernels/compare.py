"""``make kernels``: the conformance suite on several kernels, and the side-by-side report.

`run_all` runs ``pytest tests/conformance`` once per kernel: on the host kernel directly, on each
other kernel through ``--verifier-kernel`` (a QEMU guest), at most `jobs` at a time, each into its
own folder of captures and claim report (``OUT/LABEL/``). `write_comparison` then reads those
reports and writes ``OUT/report.md`` and ``OUT/report.json``: one row per claim check, one column
per kernel with its verdict, the kernel's behaviour in a phrase and the capture; the rows where the
kernels differ are marked, with the mechanism where the evidence names it (a sysctl one kernel lacks,
a different SYN count).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from verifier.claims import CLAIMS

from .image import DEBIAN, resolve
from .inguest import process_start_ms, sysctls_present

__all__ = ["KernelRun", "behaviour_signature", "label_of", "run_all", "syn_counts", "write_comparison"]

#: What each SYN sysctl changes, for the report's explanation when one kernel lacks it.
SYSCTL_EFFECT = {
    "net.ipv4.tcp_syn_linear_timeouts": "the first N SYN retransmissions keep the initial RTO (Linux 6.5+); without "
                                        "it every gap doubles from the first (SYNs at 0, 1, 3, 7 s)",
    "net.ipv4.tcp_rto_max_ms": "the RTO cap can be lowered (Linux 6.15+); without it it is TCP_RTO_MAX, 120 s",
    "net.ipv4.tcp_rto_min_us": "the minimum RTO can be set per namespace (Linux 6.11+)",
}


#: The sysctls whose absence changes the SYN schedule of the suite's C2 cases (the RTO cap and floor
#: do not, at their defaults).
SYN_COUNT_SYSCTLS = ("net.ipv4.tcp_syn_linear_timeouts",)


def label_of(spec: str) -> str:
    """The column name (and folder) of a kernel: host, 6.1, 6.12, or a path's file name."""
    return spec if spec == "host" or spec in DEBIAN else Path(spec).name


@dataclass
class KernelRun:
    """One kernel's run of the suite: its folder, exit status and wall time."""

    spec: str
    folder: Path
    status: int | None = None
    wall_s: float = 0.0
    facts: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label_of(self.spec)


def suite_command(spec: str, folder: Path, workers: int, extra: list[str] = (), guest_cpus: int = 1) -> list[str]:
    """The pytest command line that runs the conformance suite on `spec` into `folder`."""
    cmd = [sys.executable, "-m", "pytest", "tests/conformance", "-p", "no:cacheprovider", "-q", "-n", str(workers),
           "--keep-captures", "--verifier-captures", str(folder), "--verifier-report", str(folder / "report.md"),
           *extra]
    if spec == "host":
        # The host's run goes beside the guests, which load its cores: it measures its own timer
        # lateness while it runs, as a guest does (verifier.kernels.inguest), for its tolerance.
        return [sys.executable, "-m", "verifier.kernels.inguest", "--", *cmd]
    return cmd + ["--verifier-kernel", spec, "--verifier-kernel-cpus", str(guest_cpus)]


def run_all(specs: list[str], out: Path, *, jobs: int = 2, workers: int = 2, guest_cpus: int = 1,
            cwd: Path | None = None, progress=print) -> list[KernelRun]:
    """Run the suite on every kernel of `specs` ("host", "6.1", "6.12" or paths): at most `jobs`
    guests at a time (each emulates its CPUs on a host core), the host's own run beside them."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    for spec in specs:  # fetch (once) before the runs start, one at a time: apt-get is not run in parallel
        if spec != "host":
            resolve(spec, progress=progress)
    runs = [KernelRun(spec, out / label_of(spec)) for spec in specs]
    running: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    guests = threading.Semaphore(max(1, jobs))

    def one(run: KernelRun) -> KernelRun:
        run.folder.mkdir(parents=True, exist_ok=True)
        if run.spec != "host":
            guests.acquire()
        try:
            return _one(run)
        finally:
            if run.spec != "host":
                guests.release()

    def _one(run: KernelRun) -> KernelRun:
        with lock:
            running[run.label] = time.monotonic()
        progress(f"kernels: {run.label}: the conformance suite started (log: {run.folder / 'log.txt'})")
        started = time.monotonic()
        with open(run.folder / "log.txt", "w") as log:
            cmd = suite_command(run.spec, run.folder, workers, guest_cpus=guest_cpus)
            run.status = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL).returncode
        run.wall_s = time.monotonic() - started
        with lock:
            running.pop(run.label, None)
        progress(f"kernels: {run.label}: done in {run.wall_s:.0f} s (pytest exit status {run.status})")
        return run

    def ticker() -> None:
        while not done.wait(30):
            with lock:
                now = time.monotonic()
                busy = ", ".join(f"{k} {now - t:.0f} s" for k, t in running.items())
            if busy:
                progress(f"kernels: still running: {busy}")

    tick = threading.Thread(target=ticker, daemon=True)
    tick.start()
    try:
        # the guests first: they take longest, and the host's run goes beside them
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            list(pool.map(one, sorted(runs, key=lambda r: r.spec == "host")))
    finally:
        done.set()
    for run in runs:
        if run.spec == "host":
            run.facts = {"kernel": os.uname().release, "source": "the running kernel", "sysctls": sysctls_present(),
                         "process_start_ms": process_start_ms()}
        else:
            gj = run.folder / "report.guest.json"
            run.facts = json.loads(gj.read_text()) if gj.exists() else {}
            run.facts["sysctls"] = (run.facts.get("probe") or {}).get("sysctls", {})
        run.facts["wall_s"] = round(run.wall_s, 1)
        run.facts["status"] = run.status
    return runs


# -- the comparison --------------------------------------------------------------------------------
_TIME = re.compile(r"[-+]?\d+(?:\.\d+)?\s*(?:us|ms|s)\b")
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+\.\d+|\d{4,}")


def behaviour_signature(phrase: str) -> str:
    """A phrase with what varies from run to run taken out (times, ports, pids, addresses' hex), so that
    two kernels' phrases are equal when they did the same thing: counts and words stay."""
    return _NUMBER.sub("#", _TIME.sub("#", phrase or ""))


_SYNS = re.compile(r"([\w.+-]+): SYNs at ([\d., ]+?) s, ETIMEDOUT at ([\d.]+) s")


def syn_counts(phrase: str) -> dict[str, tuple[list[float], float | None]]:
    """For C2's phrase: each case's SYN times and its ETIMEDOUT time."""
    return {m[1]: ([float(x) for x in m[2].split(",")], float(m[3])) for m in _SYNS.finditer(phrase or "")}


def capture_syns(paths: list[str]) -> dict[str, tuple[list[float], float | None]]:
    """Each case's SYN times (s after the first) read from the kept captures of a check that names its
    cases in the file name (``TEST.CASE.pcapng``, as C2's sweep keeps them): the schedule is shown
    from the packets even when the check failed and recorded no phrase. No ETIMEDOUT time (that is a
    call's return, not a packet)."""
    from verifier.analysis.trace import load_trace

    out = {}
    for path in paths:
        parts = Path(path).name.split(".")
        if len(parts) < 4 or not Path(path).is_file():
            continue
        try:
            conns = [c for c in load_trace(path).connections if c.syns()]
        except Exception:  # a capture that cannot be read shows no schedule; the cell still links it
            continue
        if len(conns) == 1:
            syns = conns[0].syns()
            out[parts[-2]] = ([round((e.ts_ns - syns[0].ts_ns) / 1e9, 2) for e in syns], None)
    return out


def _fell_behind(r: dict | None) -> bool:
    """A scripted peer's failure that says the machine ran it too slowly (verifier.peer.BEHIND): the
    kernel's packet came before the script's step it would answer, so the check says nothing of the
    kernel."""
    from verifier.peer import BEHIND

    return bool(r) and r["outcome"] == "failed" and BEHIND in (r.get("message") or "")


def _verdict(r: dict | None, ended: str) -> str:
    if r is None:
        return f"not run ({ended})" if ended else "not run"
    if _fell_behind(r):
        return "too slow here"
    return {"passed": "holds", "failed": "FAILS", "skipped": "cannot run"}.get(r["outcome"], r["outcome"])


def _explain(row: dict[str, dict | None], facts: dict[str, dict]) -> list[str]:
    """Why the kernels' cells of a row differ, by mechanism where the evidence says it."""
    why = []
    missing = {label: [s for s, there in f.get("sysctls", {}).items() if not there] for label, f in facts.items()}
    counts = {label: syn_counts((r or {}).get("observed") or "") or capture_syns((r or {}).get("captures", []))
              for label, r in row.items()}
    cases = sorted({c for per in counts.values() for c in per})
    diffs = []
    for case in cases:
        seen = {label: len(per[case][0]) for label, per in counts.items() if case in per}
        if len(set(seen.values())) > 1:
            times = "; ".join(f"{label}: {seen[label]} SYNs at {', '.join(f'{t:g}' for t in counts[label][case][0])} s"
                              + (f", ETIMEDOUT {counts[label][case][1]:g} s" if counts[label][case][1] is not None
                                 else " (from the capture)") for label in seen)
            diffs.append(f"{case}: {times}")
    if diffs:
        why.append("SYN count differs: " + " | ".join(diffs[:4]) + (f" (and {len(diffs) - 4} more cases)"
                                                                   if len(diffs) > 4 else ""))
    if diffs:  # a different SYN schedule: the sysctl of the SYN rule that some kernels lack and others have
        for label, names in missing.items():
            for name in names:
                if name in SYN_COUNT_SYSCTLS and any(name not in m for m in missing.values()):
                    why.append(f"{label} has no {name}: {SYSCTL_EFFECT[name]}")
    for label, r in row.items():
        if _fell_behind(r):
            why.append(f"too slow on {label}: the scripted peer fell behind the kernel there (the machine ran the "
                       f"script too slowly; it says nothing of the kernel): {r.get('message', '')[:160]}")
        elif r and r["outcome"] == "failed":
            why.append(f"fails on {label}: {r.get('message', '')[:200]}")
        elif r and r["outcome"] == "skipped":
            why.append(f"cannot run on {label}: {r.get('message', '')[:200]}")
    return why


def write_comparison(runs: list[KernelRun], out: Path) -> dict:
    """Write OUT/report.md and OUT/report.json from each run's claim report; the JSON, as a dict."""
    labels = [r.label for r in runs]
    facts = {r.label: r.facts for r in runs}
    results: dict[str, dict[str, dict]] = {}
    for run in runs:
        rj = run.folder / "report.json"
        data = json.loads(rj.read_text()) if rj.exists() else {"results": []}
        facts[run.label].setdefault("kernel", data.get("kernel"))
        for r in data["results"]:
            if r.get("claim"):
                results.setdefault(r["nodeid"], {})[run.label] = r

    def order(nodeid: str):
        claim = next(iter(results[nodeid].values()))["claim"]
        return int(re.sub(r"\D", "", claim) or 99), nodeid

    rows = []
    for nodeid in sorted(results, key=order):
        cells = {label: results[nodeid].get(label) for label in labels}
        claim = next(c for c in cells.values() if c)["claim"]
        sigs = {(c["outcome"], behaviour_signature(c.get("observed") or "")) if c else None for c in cells.values()}
        differs = len(sigs) > 1
        rows.append({"nodeid": nodeid, "claim": claim, "differs": differs,
                     "why": _explain(cells, facts) if differs else [],
                     "kernels": {label: {"verdict": _verdict(c, facts[label].get("ended", "")),
                                         "observed": (c or {}).get("observed") or "",
                                         "message": (c or {}).get("message") or "",
                                         "captures": [os.path.relpath(p, out) for p in (c or {}).get("captures", [])]}
                                 for label, c in cells.items()}})
    claims = sorted({r["claim"] for r in rows}, key=lambda c: int(re.sub(r"\D", "", c) or 99))
    report = {"kernels": facts, "labels": labels, "claims": claims, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


def _cell(text: str, limit: int = 220) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(report: dict) -> str:
    labels, facts = report["labels"], report["kernels"]
    lines = ["# The conformance suite on several kernels", "",
             "Each column is one kernel: the host's own, and Debian's kernels booted in a QEMU guest (pure "
             "emulation) on the same testbeds, programs and checks. A cell gives the `linux` verdict (the kernel "
             "matches the model derived from its own sysctls), what the kernel did, and the capture. "
             "**Rows in bold differ between kernels**; below the table each says why.", "",
             "Under emulation every instruction is slower than on the host (the *boot* column gives the time "
             "a process start takes in each guest, measured at boot): a check that needs two programs to overlap "
             "in time, or a flood to be sent in a given time, can fail there for that reason alone; its cell "
             "says what was measured.", "",
             "| kernel | release | from | boot | timer lateness (at boot: median / max) | SYN sysctls missing | "
             "checks (pass / fail / other) | wall |", "|---|---|---|---|---|---|---|---|"]
    for label in labels:
        f = facts[label]
        probe = f.get("probe") or {}
        lat = (f"{probe['median_ms']:.1f} / {probe['max_ms']:.1f} ms ({probe['samples']} sleeps of "
               f"{probe['interval_ms']:g} ms, {probe['load']})") if probe else "– (host)"
        run = probe.get("run")
        if run:
            lat += (f"; while the suite ran, max {run['max_ms']:.1f} ms ({run['samples']} sleeps); each check's "
                    f"tolerance adds the largest of the {run['window_s']:g} s before it")
        elif probe:
            lat += ", added to the timer tolerance"
        if probe.get("pace"):
            lat += f"; deadlines x{probe['pace']:g} (the pace)"
        missing = ", ".join(s.split(".")[-1] for s, there in f.get("sysctls", {}).items() if not there) or "none"
        cells = [r["kernels"][label]["verdict"] for r in report["rows"]]
        counts = f"{cells.count('holds')} / {cells.count('FAILS')} / {len(cells) - cells.count('holds') - cells.count('FAILS')}"
        boot = f"{f['boot_s']:.1f} s" if f.get("boot_s") else "–"
        if probe.get("process_start_ms") is not None:
            boot += f"; a process start {probe['process_start_ms']:.1f} ms"
        if label == "host":
            boot = f"– (a process start {f['process_start_ms']:.1f} ms)" if f.get("process_start_ms") else "–"
        lines.append(f"| {label} | {f.get('kernel') or '?'} | {_cell(str(f.get('source', '')), 60)} | {boot} | {lat} | "
                     f"{missing} | {counts} | {f.get('wall_s', 0):.0f} s |")
    lines += ["", "| claim | check | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for i, row in enumerate(report["rows"]):
        test = row["nodeid"].split("::", 1)[-1]
        name = f"**`{test}`** ([why](#d{i}))" if row["differs"] else f"`{test}`"
        cells = []
        for label in labels:
            k = row["kernels"][label]
            caps = ", ".join(f"[pcap]({c})" for c in k["captures"][:1])
            verdict = f"**{k['verdict']}**" if k["verdict"] != "holds" else k["verdict"]
            cells.append(f"{verdict}: {_cell(k['observed'] or k['message'])} {caps}".strip())
        lines.append(f"| {row['claim']} | {name} | " + " | ".join(cells) + " |")
    differing = [(i, r) for i, r in enumerate(report["rows"]) if r["differs"]]
    lines += ["", "## Where the kernels differ", ""]
    if not differing:
        lines.append("Nowhere: every check gave the same verdict and the same behaviour on every kernel.")
    for i, row in differing:
        lines += [f"<a id=\"d{i}\"></a>", f"- `{row['nodeid'].split('::', 1)[-1]}` ({row['claim']}: "
                  f"{CLAIMS[row['claim']].title if row['claim'] in CLAIMS else ''}): "
                  + ("; ".join(_cell(w, 1500) for w in row["why"]) or "the phrases differ (see the cells)")]
    lines += ["", f"{len(report['rows'])} claim checks over {len(report['claims'])} claims on {len(labels)} kernels; "
                  f"{len(differing)} differ between kernels."]
    return "\n".join(lines) + "\n"
