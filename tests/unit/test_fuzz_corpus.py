"""Hostile input, as a tested property: every file of the fuzz corpus through both engines.

Every capture of tests/data/fuzz/ (made by tests/fuzz/make_corpus.py; see its README) and every input
the fuzzers kept in tests/data/fuzz/crashers/ goes through `verifier replay FILE --json` and
`verifier show FILE --json`, once with the compiled engine and once with the pure-Python one
(VERIFIER_PURE=1), each in a subprocess. For every file and command:

- neither engine crashes: no signal (a SIGSEGV or SIGFPE, as the old C parser died of, is a negative
  return code), no Python traceback, and the exit status is 0 (read), 2 (not a capture) or 3 (damaged
  or truncated); a hang is caught by a timeout;
- the two engines agree: the same exit status, the same JSON Lines on stdout, the same warnings on
  stderr (apart from the engine's name in the summary).

A process per file and command would cost about 70 ms each (over 200 s for the corpus), so by default
each worker process runs the command-line entry point (`verifier.cli.main`, what `.venv/bin/verifier`
calls) on a batch of files, one after the other, and reports each result as soon as it has it. A
worker that dies (a signal) or stops making progress is replaced, and the file it was on is run again
alone as `.venv/bin/verifier CMD FILE --json`, whose return code is what the test reports.
`test_real_command_agrees_with_batch` checks on a sample (the interface-id inputs that killed the old
parser, every crasher) that the real command gives exactly what the batch gave. With
FUZZ_CORPUS_FULL=1 every file runs as its own `.venv/bin/verifier` process instead (slow: minutes).

Known bugs of the engine are listed in KNOWN_BUGS: their tests are strict xfails, so a fix shows up
as an XPASS failure until the entry is removed.

    .venv/bin/python -m pytest tests/unit/test_fuzz_corpus.py -q -p no:cacheprovider
"""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "fuzz"
CRASHERS = CORPUS / "crashers"
MAKE_CORPUS = ROOT / "tests" / "fuzz" / "make_corpus.py"
COMMANDS = ("replay", "show")
ENGINES = ("compiled", "pure")
OK_STATUS = (0, 2, 3)  # read, not a capture, damaged or truncated
FILE_TIMEOUT_S = 30.0  # no single corpus file may take longer (a hang)
BATCH = 60  # files per worker process
FULL = os.environ.get("FUZZ_CORPUS_FULL") == "1"
IN_CI = os.environ.get("VERIFIER_REQUIRE_ROOT") == "1"


def corpus_files() -> list[Path]:
    files = sorted(p for p in CORPUS.glob("*.pcap*") if p.is_file())
    if CRASHERS.is_dir():
        files += sorted(p for p in CRASHERS.iterdir() if p.is_file() and p.suffix != ".md")
    return files


def _id(p: Path) -> str:
    return str(p.relative_to(CORPUS))


# Known bugs: file (relative to tests/data/fuzz) -> (the checks that fail: "compiled", "pure", "agree"; why).
# Their tests are strict xfails. Empty now: the two bugs this corpus found first (the compiled engine's
# OverflowError on 64-bit ISB counters, 512 MiB allocated for a 268-byte file) were fixed in the reader
# and the grouper; the tests at the end of this file keep them fixed. Example:
#   "crashers/fuzz_capture-crash-<sha1>": (("compiled", "agree"), "what goes wrong, where"),
KNOWN_BUGS: dict[str, tuple[tuple[str, ...], str]] = {}


# ---------------------------------------------------------------- the worker (a subprocess)

def engine_kind() -> str:
    """"compiled", "pure" or "mixed": where this process's engine modules were imported from (by their
    spec's origin, which needs no __file__)."""
    import importlib

    from verifier import engine

    pure = [importlib.import_module(m).__spec__.origin.endswith(".py") for m in engine.MODULES]
    return "pure" if all(pure) else "compiled" if not any(pure) else "mixed"


def _worker(argv: list[str]) -> int:
    """`python test_fuzz_corpus.py --worker CMD...`: for each file path read from stdin, run the command
    line entry point once per command, and print one JSON line per result (flushed at once)."""
    commands = argv
    import gc

    from verifier.cli import main

    kind = engine_kind()
    real_out, real_err = sys.stdout, sys.stderr
    print(json.dumps({"engine": kind}), file=real_out, flush=True)
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            continue
        for cmd in commands:
            print(json.dumps({"start": path, "cmd": cmd}), file=real_out, flush=True)
            out, err = io.StringIO(), io.StringIO()
            sys.stdout, sys.stderr = out, err
            try:
                rc = main([cmd, path, "--json"])
            except SystemExit as exc:  # argparse, or sys.exit inside
                rc = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # what the interpreter would print and exit with
                import traceback

                traceback.print_exc(file=err)
                rc = 1
            finally:
                sys.stdout, sys.stderr = real_out, real_err
                gc.enable()  # the command disables the cyclic collector for its one pass
            print(json.dumps({"file": path, "cmd": cmd, "rc": rc, "stdout": out.getvalue(),
                              "stderr": err.getvalue()}), file=real_out, flush=True)
    return 0


# ---------------------------------------------------------------- running the corpus

def _env(engine_name: str) -> dict:
    env = dict(os.environ)
    env.pop("VERIFIER_PURE", None)
    if engine_name == "pure":
        env["VERIFIER_PURE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


def verifier_command() -> list[str]:
    """`.venv/bin/verifier`: the console script next to this interpreter."""
    exe = shutil.which("verifier", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "verifier.cli"]


def run_real(engine_name: str, cmd: str, path: Path) -> dict:
    """One file through `.venv/bin/verifier CMD FILE --json` in its own process."""
    try:
        p = subprocess.run(verifier_command() + [cmd, str(path), "--json"], capture_output=True, text=True,
                           errors="replace", env=_env(engine_name), timeout=FILE_TIMEOUT_S, cwd=ROOT)
        return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    except subprocess.TimeoutExpired as exc:
        return {"rc": "timeout", "stdout": exc.stdout or "", "stderr": f"no result after {FILE_TIMEOUT_S} s"}


def _run_batch(engine_name: str, files: list[Path], results: dict) -> None:
    """Files through one worker process after another; a crash or hang is pinned on its file."""
    todo = list(files)
    while todo:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", *COMMANDS], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                env=_env(engine_name), cwd=ROOT)
        lines: queue.Queue = queue.Queue()

        def pump(stream=proc.stdout):
            for ln in stream:
                lines.put(ln)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        err_chunks: list[str] = []
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True).start()
        proc.stdin.write("".join(f"{p}\n" for p in todo))
        proc.stdin.close()
        current = None
        done_files = set()
        hung = False
        engine_seen = None
        while True:
            try:
                ln = lines.get(timeout=FILE_TIMEOUT_S)
            except queue.Empty:
                hung = True
                proc.kill()
                break
            if ln is None:
                break
            msg = json.loads(ln)
            if "engine" in msg:
                engine_seen = msg["engine"]
                if engine_seen != engine_name:
                    proc.kill()
                    raise AssertionError(f"the {engine_name} worker imported the {engine_seen} engine")
            elif "start" in msg:
                current = (msg["start"], msg["cmd"])
            else:
                results[(engine_name, msg["cmd"], msg["file"])] = msg
                if msg["cmd"] == COMMANDS[-1]:
                    done_files.add(msg["file"])
                current = None
        proc.wait()
        if current is None and not hung and proc.returncode == 0:
            return
        if engine_seen is None:
            raise AssertionError(f"the {engine_name} worker failed to start: {''.join(err_chunks)[-2000:]}")
        # the worker died or hung on `current`: run that file alone, as the real command
        if current is None:
            raise AssertionError(f"the {engine_name} worker exited with {proc.returncode} between files: "
                                 f"{''.join(err_chunks)[-2000:]}")
        bad = Path(current[0])
        for cmd in COMMANDS:
            if (engine_name, cmd, str(bad)) not in results:
                results[(engine_name, cmd, str(bad))] = run_real(engine_name, cmd, bad)
        todo = [p for p in todo if str(p) not in done_files and p != bad]


def _run_corpus() -> dict:
    files = corpus_files()
    out: dict = {}
    t0 = time.monotonic()
    workers = max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(workers) as pool:
        if FULL:
            futs = {pool.submit(run_real, e, c, p): (e, c, str(p)) for e in ENGINES for c in COMMANDS for p in files}
            for f, key in futs.items():
                out[key] = f.result()
        else:
            # the pure engine is the slower: smaller batches for it, so both finish together
            jobs = [("compiled", files[i:i + BATCH * 2]) for i in range(0, len(files), BATCH * 2)]
            jobs += [("pure", files[i:i + BATCH]) for i in range(0, len(files), BATCH)]
            for f in [pool.submit(_run_batch, e, fs, out) for e, fs in sorted(jobs, key=lambda j: j[0] != "pure")]:
                f.result()
    out["_seconds"] = time.monotonic() - t0
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """{(engine, command, file path): {"rc", "stdout", "stderr"}} for every corpus file.

    Under pytest-xdist (`make test` runs -n 4) every worker that gets one of these tests needs the
    results: the first computes them, the others wait for its file (in the run's own temporary
    directory, which pytest shares among the workers and removes with its old runs)."""
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID"):
        return _run_corpus()
    import fcntl

    cache = tmp_path_factory.getbasetemp().parent / "fuzz-corpus-results.json"
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cache.exists():
            rows = json.loads(cache.read_text())
            return {tuple(k) if isinstance(k, list) else k: v for k, v in rows}
        out = _run_corpus()
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps([[list(k) if isinstance(k, tuple) else k, v] for k, v in out.items()]))
        tmp.replace(cache)
        return out


FILES = corpus_files()


def _params(check: str):
    out = []
    for p in FILES:
        known = KNOWN_BUGS.get(_id(p))
        marks = [pytest.mark.xfail(strict=True, reason=known[1])] if known and check in known[0] else []
        out.append(pytest.param(p, id=_id(p), marks=marks))
    return out


def _verdict(r: dict) -> str | None:
    """What is wrong with one result, or None."""
    rc = r["rc"]
    if rc == "timeout":
        return f"hung (no result after {FILE_TIMEOUT_S} s)"
    if rc < 0:
        import signal

        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name} (return code {rc})"
    if "Traceback" in r["stderr"]:
        return f"a Python traceback (exit {rc}):\n{r['stderr'][-3000:]}"
    if rc not in OK_STATUS:
        return f"exit status {rc}, not one of {OK_STATUS}:\n{r['stderr'][-2000:]}"
    return None


# ---------------------------------------------------------------- the tests

def test_corpus_is_small_and_current():
    """The corpus is what make_corpus.py writes (deterministic), small, and holds the inputs that
    killed the old C parser."""
    files = sorted(CORPUS.glob("*.pcap*"))
    assert len(files) >= 300, "tests/data/fuzz is missing: run .venv/bin/python tests/fuzz/make_corpus.py"
    sizes = {p.name: p.stat().st_size for p in files}
    frames = sum(p.stat().st_size for p in (CORPUS / "frames").glob("*.bin"))
    assert sum(sizes.values()) + frames <= 2_200_000, "the corpus should stay at about 2 MB at most"
    assert max(sizes.values()) <= 65536, max(sizes, key=sizes.get)
    for iid in ("0x80000000", "0xfffffffe", "0xffffffff"):
        assert any(n.startswith(f"iface-epb-{iid}-") for n in sizes), iid
    p = subprocess.run([sys.executable, str(MAKE_CORPUS), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr + p.stdout


@pytest.mark.parametrize("path", _params("compiled"))
def test_compiled_engine_survives(results, path):
    bad = [f"verifier {cmd} {_id(path)} --json (compiled engine): {v}" for cmd in COMMANDS
           if (v := _verdict(results[("compiled", cmd, str(path))]))]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _params("pure"))
def test_pure_engine_survives(results, path):
    bad = [f"VERIFIER_PURE=1 verifier {cmd} {_id(path)} --json: {v}" for cmd in COMMANDS
           if (v := _verdict(results[("pure", cmd, str(path))]))]
    assert not bad, "\n".join(bad)


def _engine_stale() -> list[str]:
    from verifier import engine

    return engine.stale()


def _normal(stderr: str) -> str:
    return stderr.replace("[compiled engine]", "[ENGINE engine]").replace("[python engine]", "[ENGINE engine]")


@pytest.mark.parametrize("path", _params("agree"))
def test_engines_agree(results, path):
    stale = _engine_stale()
    if stale and not IN_CI:
        pytest.skip(f"the compiled engine is older than its sources ({', '.join(stale)}): run make setup")
    for cmd in COMMANDS:
        c, p = results[("compiled", cmd, str(path))], results[("pure", cmd, str(path))]
        where = f"verifier {cmd} {_id(path)} --json"
        assert c["rc"] == p["rc"], (f"{where}: exit {c['rc']} compiled, {p['rc']} pure\n{c['stderr'][-1500:]}\n"
                                    f"---\n{p['stderr'][-1500:]}")
        assert c["stdout"] == p["stdout"], f"{where}: the JSON output differs between the engines"
        assert _normal(c["stderr"]) == _normal(p["stderr"]), f"{where}: the warnings differ"


def _sample() -> list[Path]:
    """The inputs that killed the old C parser (interface ids 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF), a
    known bug, a few readable files, and every crasher."""
    old_killers = [f"iface-{b}-{i}-{s}.pcapng" for b in ("epb", "isb") for i in ("0x80000000", "0xfffffffe", "0xffffffff")
                   for s in ("c3_refused_ipv4", "be-c1")]
    return [p for p in FILES if p.parent == CRASHERS or p.name in old_killers or p.name in (
        "seed-c1_handshake_ipv4.pcapng", "syn-machine-tour.pcapng", "nest-mixed.pcapng",
        "isb-end-ifdrop-2^64-1-c3_refused_ipv4.pcapng")]


@pytest.mark.skipif(FULL, reason="FUZZ_CORPUS_FULL=1 runs every file as the real command already")
def test_real_command_agrees_with_batch(results):
    """The batch worker gives exactly what `.venv/bin/verifier CMD FILE --json` gives."""
    sample = _sample()
    jobs = [(e, c, p) for e in ENGINES for c in COMMANDS for p in sample]
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        real = list(pool.map(lambda j: run_real(*j), jobs))
    diffs = [f"{e} {c} {_id(p)}: real {_comparable(r)!r}\n  batch {_comparable(results[(e, c, str(p))])!r}"
             for (e, c, p), r in zip(jobs, real) if _comparable(r) != _comparable(results[(e, c, str(p))])]
    assert not diffs, "\n".join(diffs)


def _comparable(r: dict) -> tuple:
    """A result with any traceback reduced to its exception line (the frames above the command's own
    differ between the console script and the batch worker)."""
    err = r["stderr"]
    head, tb, _ = err.partition("Traceback (most recent call last):")
    if tb:
        err = head + tb + " ... " + err.rstrip().rsplit("\n", 1)[-1]
    return r["rc"], r["stdout"], err


# ---------------------------------------------------------------- frames the frame fuzzer kept

FRAME_CRASHERS = sorted(p for p in (CRASHERS / "frames").glob("*") if p.is_file()) if (CRASHERS / "frames").is_dir() else []
# decode each file as tests/fuzz/fuzz_frame.py does (its first byte selects the link type and options)
_DECODE_FRAMES = """
import json, sys
from verifier.wire.decoder import LINKTYPES, decode_frame
links = sorted(LINKTYPES)
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    if not data:
        print(json.dumps([path, "empty"])); continue
    sel, frame = data[0], data[1:]
    try:
        pks = decode_frame(links[(sel & 0x3F) % len(links)], frame, 65535 if sel & 0x40 and len(frame) < 65535
                           else None, checksums=bool(sel & 0x80))
        out = [[p.kind, p.error, p.key.hex() if p.key else None, p.seq, p.payload_len, p.captured] for p in pks]
    except Exception as exc:
        out = f"raised {type(exc).__name__}: {exc}"
    print(json.dumps([path, out]), flush=True)
"""


@pytest.mark.skipif(not FRAME_CRASHERS, reason="no frame crashers in tests/data/fuzz/crashers/frames")
@pytest.mark.parametrize("engine_name", ENGINES)
def test_frame_crashers_decode(engine_name):
    """Every frame the frame fuzzer kept decodes without an exception, and alike in both engines."""
    got = {}
    for e in ENGINES:
        p = subprocess.run([sys.executable, "-c", _DECODE_FRAMES, *map(str, FRAME_CRASHERS)], capture_output=True,
                           text=True, env=_env(e), cwd=ROOT, timeout=120)
        assert p.returncode == 0, f"{e} engine: exit {p.returncode}\n{p.stderr[-3000:]}"
        got[e] = dict(json.loads(ln) for ln in p.stdout.splitlines())
    bad = [f"{_id(Path(f))}: {r}" for f, r in got[engine_name].items() if isinstance(r, str)]
    assert not bad, "\n".join(bad)
    differ = [_id(Path(f)) for f in got["compiled"] if got["compiled"][f] != got["pure"].get(f)]
    assert not differ, f"the engines decode these differently: {differ}"


# ---------------------------------------------------------------- the bugs found so far, kept fixed

def _isb_file(counters: dict) -> bytes:
    """SHB, IDB, then an ISB with the given 64-bit counters (option code: value), little-endian."""
    import struct

    def blk(t, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", t, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    opts = b"".join(struct.pack("<HHQ", code, 8, v) for code, v in counters.items()) + b"\0" * 4
    return (blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + blk(1, struct.pack("<HHI", 1, 0, 0))
            + blk(5, struct.pack("<III", 0, 0, 0) + opts))


@pytest.mark.parametrize("counters", [{5: 2**64 - 1}, {5: 2**63}, {5: 2**62, 7: 2**62}, {5: 2**64 - 1, 7: 2**64 - 1}],
                         ids=["ifdrop-2^64-1", "ifdrop-2^63", "sum-2^63", "sum-2^65-2"])
def test_huge_isb_counters_are_read(counters):
    """A statistics block may hold any 64-bit counter, and isb_ifdrop + isb_osdrop may pass 2^64: the
    reader must not raise on them (the file is a capture). The compiled reader once raised
    OverflowError here: Reader._statistics stored the sum in Iface.lost, a C long long (the corpus
    files isb-*-2^63* and isb-*-2^64-1* found it). In-process, with this process's engine."""
    from verifier.pcap import read_interface_stats

    stats = read_interface_stats(io.BytesIO(_isb_file(counters)))
    assert stats[0].lost == sum(v for k, v in counters.items() if k in (5, 7))


def test_huge_trailing_isb_counters_reach_the_attempts():
    """The grouper's copy of the counters read ahead: a golden capture whose last ISB says 2^62 + 2^62
    packets were lost and whose SYN was moved two years back by a bit flip, so that the idle sweep
    finishes an attempt (Grouper._finish copies the lost count into it) before the reader reaches the
    ISB. Found by the capture fuzzer's corpus run through the compiled engine, which raised
    OverflowError (Attempt.lost was a C long long). Streamed in-process, with this process's engine."""
    import warnings

    from verifier.replay.scan import Scan

    path = CRASHERS / "compiled-overflow-grouper-finish-trailing-isb.pcapng"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attempts = list(Scan(str(path)))
    assert attempts and [a.lost for a in attempts] == [2**63] * len(attempts)


@pytest.mark.parametrize("name", ["len-epb-total-maxrecord-c3_refused_ipv4.pcapng",
                                  "len-pcap-caplen-0x10000000-c5.pcap"])
def test_a_tiny_file_claiming_a_huge_record_stays_small(name):
    """Hostile input must not cost far more memory than the file's size: at most 64 MiB for these. The
    reader once grew its buffer to the claimed length before reading (twice the claim, up to
    MAX_RECORD_LEN = 256 MiB): this 268-byte pcapng file (and the pcap one) made it allocate 512 MiB."""
    import tracemalloc
    import warnings

    from verifier.pcap import CaptureFile

    data = (CORPUS / name).read_bytes()
    assert len(data) < 2048
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cap = CaptureFile(io.BytesIO(data))
            list(cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cap.truncated
    assert peak < 64 << 20, f"reading {len(data)} bytes allocated {peak >> 20} MiB"


def test_engine_status_reports_the_pure_engine():
    """verifier.engine.status() under VERIFIER_PURE=1 says the modules are not compiled (it once said
    they were: the pure finder's spec had no location, so the modules had no __file__)."""
    code = ("import json; from verifier import engine; "
            "print(json.dumps({m: s['compiled'] for m, s in engine.status().items()}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env("pure"), cwd=ROOT,
                       check=True)
    assert not any(json.loads(p.stdout).values()), p.stdout


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.exit(_worker(sys.argv[2:]))
