"""Corpus mode: `verifier replay DIR/` over many captures at once, one summary.

    verifier replay DIR/ [--json | --zeek-log tsv|json] [--jobs N | --dask SCHEDULER] [--zeek-sessions] ...

Every file under DIR whose first bytes are a pcap or pcapng magic number is replayed whole by one
worker through the one core (`verifier.replay.scan.Scan`, as for a single file), and the results are
merged in the order of the sorted paths: so the output does not depend on how many workers ran or
which finished first. The workers are a process pool on this machine (`--jobs`, default: every
core), or the workers of a dask.distributed cluster (`--dask tcp://host:8786`; the optional
dependency `pip install 'tcp-verifier[dask]'`; the files must be readable at the same path on the
workers). Output: with --json, each attempt's JSON line gains the capture's path relative to DIR
(`file`); with --zeek-log, one conn.log for all captures; else one line per capture. The summary and
the captures that could not be read fully go to stderr; the exit status is the worst of the files'
(0 all read, 3 some not read in full: damaged, truncated, unread link types, or not captures).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

__all__ = ["FileResult", "find_captures", "replay_file", "run_corpus"]

_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


def find_captures(root: str) -> list[str]:
    """The capture files under `root` (by their magic number, not their name), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    if f.read(4) in _MAGICS:
                        out.append(path)
            except OSError:
                continue
    return sorted(out)


@dataclass
class FileResult:
    """What one worker sends back for one capture: its output bytes and its counts."""

    path: str
    rel: str
    output: bytes = b""
    error: str | None = None  # the capture could not be read at all
    stats: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    conn_states: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    damaged: bool = False
    spool: str | None = None  # a pool worker's output, in this file instead of `output` (see _pool_map)

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())


def replay_file(path: str, rel: str, options: dict) -> FileResult:
    """Replay one capture (in a worker): `options` are Scan's, plus `output` ("json", "zeek-tsv",
    "zeek-json" or "lines") and `port` (a filter, or None)."""
    import gc
    import warnings

    from verifier.pcap import CaptureFormatError
    from verifier.replay.scan import Scan

    res = FileResult(path, rel)
    out = options.get("output", "lines")
    port = options.get("port")
    scan_opts = {k: v for k, v in options.items() if k not in ("output", "port")}
    gc_was = gc.isenabled()
    gc.disable()
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sc = Scan(path, **scan_opts)
            res.output = _scan(sc, res, out, port)
    except CaptureFormatError as exc:
        res.error = str(exc)
        return res
    except OSError as exc:
        res.error = f"{path}: {exc.strerror or exc}"
        return res
    finally:
        if gc_was:
            gc.enable()
    st = sc.stats
    res.stats = {"packets": st.packets, "tcp": st.tcp, "connections": st.connections, "format": st.format,
                 "engine": st.engine}
    res.notes = [str(w.message) for w in caught] + st.notes()
    res.damaged = bool(st.truncated or st.damage_count or st.unsupported)
    return res


def _scan(sc, res: FileResult, out: str, port) -> bytes:
    """The attempts of the scan `sc`, counted into `res`; the output bytes of the kind `out`."""
    from verifier.analysis import zeeklog
    from verifier.analysis.grouper import json_lines

    parts = []
    prefix = b'{"file":' + _json_str(res.rel) + b","  # the line of each attempt starts with its file
    for chunk in sc.chunks():
        for a in chunk:
            res.outcomes[a.outcome] = res.outcomes.get(a.outcome, 0) + 1
            res.conn_states[a.conn_state] = res.conn_states.get(a.conn_state, 0) + 1
        if out == "json":
            lines = json_lines(chunk, -1 if port is None else port)
            if lines:  # JSON Lines of objects: no raw newline inside one, each starts with "{"
                parts.append(prefix + lines[1:].replace(b"\n{", b"\n" + prefix))
        elif out in ("zeek-tsv", "zeek-json"):
            for a in chunk:
                if port is None or port in (a.c_port, a.s_port):
                    d = zeeklog.row(a)
                    if d:
                        parts.append(zeeklog.tsv_row(d).encode() if out == "zeek-tsv" else zeeklog.json_row(d))
    return b"".join(parts)


def _json_str(s: str) -> bytes:
    import json

    return json.dumps(s).encode()


def _replay_to_spool(path: str, rel: str, options: dict, spool: str) -> FileResult:
    """replay_file, with the output written to the file `spool` rather than sent back: the parent
    copies it out with sendfile(), so a worker's output never goes through the pool's pipe (pickled,
    copied in and out of the kernel twice: measured, that was the cost of a second worker)."""
    res = replay_file(path, rel, options)
    if res.output:
        with open(spool, "wb") as f:
            f.write(res.output)
        res.output, res.spool = b"", spool
    return res


def _pool_map(jobs: list, workers: int):
    """replay_file over `jobs` in a process pool; results in the order of `jobs`, as they come."""
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            yield replay_file(*j)
        return
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers start as copies of this process, the engine already imported (this
    # command runs no thread that a fork could break)
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    import collections

    ahead = 2 * workers  # files handed out ahead of the one written next: bounds what waits on disk
    spools = tempfile.mkdtemp(prefix="verifier-corpus-")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as ex:
            pending: collections.deque = collections.deque()
            numbered = ((*j, os.path.join(spools, str(i))) for i, j in enumerate(jobs))
            for j in numbered:
                pending.append(ex.submit(_replay_to_spool, *j))
                if len(pending) >= ahead:
                    break
            while pending:
                r = pending.popleft().result()
                nxt = next(numbered, None)
                if nxt is not None:
                    pending.append(ex.submit(_replay_to_spool, *nxt))
                yield r
    finally:
        shutil.rmtree(spools, ignore_errors=True)


def _dask_map(jobs: list, scheduler):
    """replay_file over `jobs` on a dask.distributed cluster (a scheduler address or a Client)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise RuntimeError("--dask needs the optional dependency dask.distributed: "
                           "pip install 'tcp-verifier[dask]'") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler, timeout="10s")
    try:
        futures = client.map(replay_file, *zip(*jobs), pure=False)
        for fut in futures:  # in the order of the files, each as soon as it and those before it are done
            yield fut.result()
    finally:
        if client is not scheduler:
            client.close()


def _copy_out(spool: str, raw, emit) -> None:
    """A worker's spooled output to ours (sendfile() where ours is a file descriptor), then gone."""
    with open(spool, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fd = None
        try:
            fd = raw.fileno() if raw is not None else None
        except (AttributeError, OSError, ValueError):  # io.BytesIO and the like
            fd = None
        if fd is not None:
            raw.flush()
            offset = 0
            try:
                while offset < size:
                    sent = os.sendfile(fd, f.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            except OSError as exc:
                if isinstance(exc, BrokenPipeError):
                    raise
                f.seek(offset)
                emit(f.read())
        else:
            emit(f.read())
    os.unlink(spool)


def run_corpus(root: str, options: dict, *, jobs: int | None = None, dask=None, out=None, err=None) -> int:
    """Replay every capture under `root`; write the merged output to `out` (bytes are written to its
    buffer) and the summary to `err`; returns the exit status (`verifier.exits`)."""
    from verifier import exits
    from verifier.analysis import zeeklog

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    raw = getattr(out, "buffer", None)
    emit = raw.write if raw is not None else (lambda b: out.write(b.decode()))
    paths = find_captures(root)
    if not paths:
        print(f"verifier: {root}: no pcap or pcapng files in this directory", file=err)
        return exits.BAD_INPUT
    work = [(p, os.path.relpath(p, root), options) for p in paths]
    n_workers = jobs if jobs else (os.cpu_count() or 1)
    results = _dask_map(work, dask) if dask is not None else _pool_map(work, n_workers)
    kind = options.get("output", "lines")
    if kind == "zeek-tsv":
        import time

        emit(zeeklog.header(time.strftime("%Y-%m-%d-%H-%M-%S")).encode())
    totals = {"captures": 0, "unreadable": 0, "packets": 0, "tcp": 0, "connections": 0}
    outcomes: dict = {}
    states: dict = {}
    status = exits.OK
    engine = None
    problems = []
    for r in results:
        totals["captures"] += 1
        if r.error is not None:
            totals["unreadable"] += 1
            problems.append(f"{r.rel}: {r.error}")
            status = exits.DAMAGED
            continue
        for k in ("packets", "tcp", "connections"):
            totals[k] += r.stats[k]
        engine = r.stats["engine"]
        for k, v in r.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in r.conn_states.items():
            states[k] = states.get(k, 0) + v
        if r.damaged:
            status = exits.DAMAGED
            problems.append(f"{r.rel}: " + "; ".join(r.notes))
        if kind == "lines":
            line = (f"  {r.rel}: {r.stats['format']}, {r.stats['packets']} packets, {r.attempts} TCP connection "
                    f"attempt(s)" + (": " + ", ".join(f"{v} {k}" for k, v in sorted(r.outcomes.items()))
                                     if r.outcomes else "") + "\n")
            emit(line.encode())
        elif r.spool:
            _copy_out(r.spool, raw, emit)
        elif r.output:
            emit(r.output)
    if kind == "zeek-tsv":
        import time

        emit(zeeklog.close_line(time.strftime("%Y-%m-%d-%H-%M-%S")).encode())
    try:
        out.flush()
    except BrokenPipeError:
        pass
    where = "a dask cluster" if dask is not None else f"{min(n_workers, len(paths))} process(es)"
    print(f"corpus {root}: {totals['captures']} capture(s), {totals['packets']} packets, {totals['tcp']} TCP "
          f"segments, {totals['connections']} TCP connection attempt(s) [{engine or 'no'} engine, {where}]",
          file=err)
    if outcomes:
        print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())), file=err)
        print("  Zeek conn_state: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())), file=err)
    for p in problems:
        print(f"  warning: {p}", file=err)
    return status
