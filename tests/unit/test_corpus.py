"""Corpus mode: `verifier replay DIR/` (verifier.replay.corpus), on a process pool and on dask.

The corpus is the Zeek oracle's real traces, spread over sub-directories, with a file that is no
capture (skipped: it has no pcap magic) and a truncated capture (read as far as it goes: exit 3).
Whatever runs it (one process, a pool of two, a local two-worker dask cluster), the output must be
the same bytes as replaying each file alone and tagging its lines with the file: the merge is in the
order of the sorted paths, never in the order workers finish.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from verifier.replay.corpus import find_captures, run_corpus

from .crafted import ZEEK

VERIFIER = Path(sys.executable).with_name("verifier")

try:
    import dask.distributed  # noqa: F401
    HAVE_DASK = True
except ImportError:  # pragma: no cover
    HAVE_DASK = False
# the optional dependency is installed by `make setup`; in CI its absence fails instead of skipping
needs_dask = pytest.mark.skipif(not HAVE_DASK and os.environ.get("VERIFIER_REQUIRE_ROOT") != "1",
                                reason="dask.distributed is not installed (pip install 'tcp-verifier[dask]')")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    traces = sorted((ZEEK / "traces").glob("*.pcap*"))
    for k, t in enumerate(traces):
        sub = root / ("a" if k % 3 == 0 else "b/c" if k % 3 == 1 else "")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(t, sub / t.name)
    (root / "README.txt").write_text("not a capture\n")
    data = traces[0].read_bytes()
    (root / "b" / "cut.pcap").write_bytes(data[: len(data) // 2 + 7])
    return root


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(VERIFIER), "replay", *map(str, args)], capture_output=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def _one_by_one(root: Path, *options) -> bytes:
    """What replaying each capture alone gives, each JSON line tagged with its file."""
    out = []
    for p in find_captures(str(root)):
        res = _cli(p, "--json", *options)
        assert res.returncode in (0, 3), res.stderr.decode()
        rel = os.path.relpath(p, root)
        for line in res.stdout.splitlines():
            out.append(msgspec.json.encode({"file": rel, **msgspec.json.decode(line)}))  # msgspec's float format
    return b"\n".join(out) + b"\n"


def test_captures_are_found_by_magic_sorted(corpus):
    found = [os.path.relpath(p, corpus) for p in find_captures(str(corpus))]
    assert "README.txt" not in found and "b/cut.pcap" in found
    assert found == sorted(found) and len(found) == len(list((ZEEK / "traces").glob("*.pcap*"))) + 1


def test_pool_output_is_each_file_alone_in_path_order(corpus):
    alone = _one_by_one(corpus)
    for jobs in ("1", "2"):
        res = _cli(corpus, "--json", "--jobs", jobs)
        assert res.returncode == 3, res.stderr.decode()  # the cut capture
        assert res.stdout == alone, f"--jobs {jobs}"
        err = res.stderr.decode()
        assert "warning: b/cut.pcap:" in err and "capture truncated" in err
        n = len(alone.splitlines())
        assert f"{n} TCP connection attempt(s)" in err.splitlines()[0]


def test_zeek_log_of_a_corpus_is_one_conn_log(corpus):
    res = _cli(corpus, "--zeek-log", "tsv", "--jobs", "2")
    lines = res.stdout.decode().splitlines()
    assert sum(ln.startswith("#fields") for ln in lines) == 1 and lines[-1].startswith("#close")
    rows = [ln for ln in lines if not ln.startswith("#")]
    single = 0
    for p in find_captures(str(corpus)):
        single += sum(1 for ln in _cli(p, "--zeek-log", "tsv").stdout.decode().splitlines() if not ln.startswith("#"))
    assert len(rows) == single > 80


def test_both_engines_give_the_same_corpus_output(corpus):
    a = _cli(corpus, "--json", "--jobs", "2")
    b = _cli(corpus, "--json", "--jobs", "2", env={"VERIFIER_PURE": "1"})
    assert a.stdout == b.stdout and b"[python engine" in b.stderr and b"[compiled engine" in a.stderr


@needs_dask
def test_dask_local_cluster_gives_what_the_pool_gives(corpus, tmp_path):
    from dask.distributed import Client, LocalCluster

    options = {"output": "json"}
    pool_out, pool_err = io.StringIO(), io.StringIO()
    pool_status = run_corpus(str(corpus), options, jobs=2, out=pool_out, err=pool_err)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", host="127.0.0.1",
                      local_directory=str(tmp_path)) as cluster, Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        dask_out, dask_err = io.StringIO(), io.StringIO()
        dask_status = run_corpus(str(corpus), options, dask=client, out=dask_out, err=dask_err)
        # and through the command line, given the scheduler's address
        res = _cli(corpus, "--json", "--dask", cluster.scheduler_address)
    assert (dask_status, dask_out.getvalue()) == (pool_status, pool_out.getvalue()) == (3, _one_by_one(corpus).decode())
    assert dask_err.getvalue().replace("a dask cluster", "2 process(es)") == pool_err.getvalue()
    assert res.returncode == 3 and res.stdout.decode() == pool_out.getvalue()


@pytest.mark.parametrize("args,words", [
    (["--expect", "all established"], "--expect reads one capture"),
    (["--show", "1"], "--show reads one capture"),
    (["--dask", "nohost"], "not a scheduler address"),
    (["--jobs", "0"], "--jobs"),
])
def test_corpus_bad_options_are_one_line(tmp_path, args, words):
    (tmp_path / "x.pcap").write_bytes((ZEEK / "traces" / "ftp__ipv4.pcap").read_bytes()
                                      if (ZEEK / "traces").is_dir() else b"\xd4\xc3\xb2\xa1" + b"\0" * 20)
    res = _cli(tmp_path, *args)
    err = res.stderr.decode()
    assert res.returncode == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_directory_without_captures_and_jobs_on_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    res = _cli(tmp_path)
    assert res.returncode == 2 and b"no pcap or pcapng files" in res.stderr and len(res.stderr.splitlines()) == 1
    res = _cli(tmp_path / "notes.txt", "--jobs", "2")
    assert res.returncode == 2 and b"for a directory" in res.stderr


@needs_dask
def test_an_unreachable_scheduler_is_one_line(tmp_path):
    (tmp_path / "x.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + b"\0" * 8 + b"\xff\xff\0\0\x01\0\0\0")
    res = _cli(tmp_path, "--dask", "tcp://127.0.0.1:9")  # the discard port: nothing listens there
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
