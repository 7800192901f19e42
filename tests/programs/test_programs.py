"""Tests of the C test programs (verifier/programs) and of verifier.analysis.calls (the report parser).

Every program run happens inside a private, anonymous network namespace: a
holder process made with ``unshare --net`` brings ``lo`` up and then waits on
its stdin; the programs enter its namespace with ``nsenter --net``.  When the
holder's stdin is closed it exits and the namespace vanishes with its last
process.  Nothing touches the root namespace.

Readiness is never slept for: the server's ``listen`` report line is awaited
on its pipe (and /proc/<holder>/net/tcp* then shows the LISTEN socket).
Every wait is bounded; every process is killed on teardown.
"""
from __future__ import annotations

import json
import os
import platform
import select
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import verifier.programs as programs
from verifier.analysis.calls import (
    SyscallEvent,
    by_pid,
    calls,
    find,
    parse_line,
    parse_report,
    pids,
)
from verifier.analysis.schedules import LINUX_SYSCTLS, LinuxProfile
from verifier.programs import BuildError, CompilerNotFoundError, build

from ..kernel import TOLERANCE

LO = {4: "127.0.0.1", 6: "::1"}
WILDCARD = {4: "0.0.0.0", 6: "::"}
PORT = 5000
TIMEOUT = 20.0          # bound on any single wait
FAST_NS = 500_000_000   # "immediate" syscalls (refused connect) return within this

# Own parameter name (not ``family``, which the verifier pytest plugin
# parametrises for testbed tests): these tests need no testbed.
FAMILIES = pytest.mark.parametrize("fam", [4, 6], ids=["ipv4", "ipv6"])


# --------------------------------------------------------------------- build


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    return {name: build(name) for name in ("client", "server")}


def test_build_returns_cached_binary_without_recompiling(binaries):
    for name, path in binaries.items():
        assert path.is_file() and os.access(path, os.X_OK)
        before = path.stat()
        again = build(name)
        assert again == path
        after = again.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_build_compiles_once_into_fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "nested" / "cache"
    monkeypatch.setenv("VERIFIER_CACHE", str(cache))
    first = build("client")
    assert first.parent == cache and first.name.startswith("client-")
    mtime = first.stat().st_mtime_ns

    def no_compile(*a, **kw):
        raise AssertionError(f"recompiled although cached: {a}")

    monkeypatch.setattr(programs.subprocess, "run", no_compile)
    assert build("client") == first
    assert first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in cache.iterdir()) == [first.name]


def test_build_is_safe_when_concurrent(tmp_path, monkeypatch):
    monkeypatch.setenv("VERIFIER_CACHE", str(tmp_path))
    with ThreadPoolExecutor(max_workers=6) as pool:
        paths = list(pool.map(lambda _: build("server"), range(6)))
    assert len(set(paths)) == 1
    # No temporary file is left behind, only the binary.
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]
    out = subprocess.run([paths[0], "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0 and out.stdout.startswith("usage: server")


def test_build_key_changes_with_source(tmp_path, monkeypatch):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    monkeypatch.setattr(programs, "SOURCE_DIR", src_dir)
    monkeypatch.setenv("VERIFIER_CACHE", str(tmp_path / "cache"))
    (src_dir / "tiny.c").write_text("int main(void) { return 3; }\n")
    a = build("tiny")
    assert subprocess.run([a], timeout=TIMEOUT).returncode == 3
    (src_dir / "tiny.c").write_text("int main(void) { return 4; }\n")
    b = build("tiny")
    assert b != a
    assert subprocess.run([b], timeout=TIMEOUT).returncode == 4


def test_build_error_reports_compiler_output(tmp_path, monkeypatch):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "broken.c").write_text("int main(void) { int unused; return 0; }\n")
    monkeypatch.setattr(programs, "SOURCE_DIR", src_dir)
    monkeypatch.setenv("VERIFIER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BuildError, match="unused"):   # -Wall -Werror
        build("broken")
    assert list((tmp_path / "cache").iterdir()) == []   # temp file removed


def test_build_without_compiler_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no cc
    monkeypatch.setenv("VERIFIER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CompilerNotFoundError) as info:
        build("client")
    msg = str(info.value)
    assert "\n" not in msg
    assert "gcc" in msg and "cc" in msg and "make test" in msg


def test_build_unknown_program():
    with pytest.raises(FileNotFoundError, match="no program 'nosuch'"):
        build("nosuch")
    with pytest.raises(ValueError):
        build("../client")


# ------------------------------------------------------------ calls.py: reports


GOOD = (
    '{"pid":7,"call":"accept","args":{"fd":3},"ret":4,"errno":null,'
    '"t_enter_ns":10,"t_return_ns":20,"addr":"127.0.0.1","port":40000,"conn_fd":4}\n'
    "\n"
    '{"pid":7,"call":"close","args":{"fd":4},"ret":-1,"errno":"EBADF",'
    '"t_enter_ns":30,"t_return_ns":31}\n'
)


def test_parse_report_good():
    ev = parse_report(GOOD)
    assert [e.call for e in ev] == ["accept", "close"]
    acc = ev[0]
    assert acc == SyscallEvent("accept", {"fd": 3}, 4, None, 10, 20, 7,
                               {"addr": "127.0.0.1", "port": 40000, "conn_fd": 4})
    assert acc.ok and acc.duration_ns == 10 and acc.endpoint == ("127.0.0.1", 40000)
    assert not ev[1].ok and ev[1].errno == "EBADF" and ev[1].endpoint is None
    hash(acc)  # frozen and hashable despite the dict fields
    with pytest.raises(AttributeError):
        acc.ret = 5  # type: ignore[misc]
    assert parse_report(GOOD.encode()) == ev
    assert find(ev, "close") is ev[1]
    assert find(ev, "accept", -1) is ev[0]
    assert calls(ev, "close", pid=8) == []
    assert pids(ev) == [7] and by_pid(ev) == {7: ev}
    with pytest.raises(LookupError, match="no connect #0.*calls: accept close"):
        find(ev, "connect")


@pytest.mark.parametrize(
    "line, msg",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"pid":1,"call":"read","args":{},"ret":0,"errno":null,"t_enter_ns":1}', "missing field.*t_return_ns"),
        ('{"pid":1,"call":"read","args":{},"ret":true,"errno":null,"t_enter_ns":1,"t_return_ns":2}', "'ret' must be an integer"),
        ('{"pid":1,"call":"read","args":[],"ret":0,"errno":null,"t_enter_ns":1,"t_return_ns":2}', "'args' must be an object"),
        ('{"pid":1,"call":"read","args":{},"ret":0,"errno":5,"t_enter_ns":1,"t_return_ns":2}', "'errno' must be a string"),
        ('{"pid":1,"call":"","args":{},"ret":0,"errno":null,"t_enter_ns":1,"t_return_ns":2}', "'call' must be"),
    ],
)
def test_parse_report_bad_line_names_line_number(line, msg):
    text = GOOD + line + "\n"
    with pytest.raises(ValueError, match=rf"report line 4: .*{msg}|report line 4: {msg}"):
        parse_report(text)
    with pytest.raises(ValueError, match="report line 9"):
        parse_line(line, 9)


# ------------------------------------------------------- namespace harness


def _read_until(fd: int, buf: bytearray, done, deadline: float, what: str) -> None:
    """Read from fd into buf until done(buf) or EOF/deadline (then fail)."""
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}; got {bytes(buf)!r}")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError(f"EOF while waiting for {what}; got {bytes(buf)!r}")
        buf += chunk


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    started_ns: int
    ended_ns: int

    @property
    def events(self) -> list[SyscallEvent]:
        return parse_report(self.stdout)


class Netns:
    """A private network namespace held open by an ``unshare --net`` process."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo ready && exec cat >/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        buf = bytearray()
        try:
            _read_until(self.holder.stdout.fileno(), buf, lambda b: b"\n" in b,
                        time.monotonic() + TIMEOUT, "the namespace holder")
        except (TimeoutError, EOFError) as e:
            self.close()
            raise RuntimeError(f"could not create a network namespace: {e}; "
                               f"stderr: {self.holder.stderr.read()!r}") from None
        assert bytes(buf).strip() == b"ready"
        self.nspath = f"/proc/{self.holder.pid}/ns/net"
        # Paranoia: the programs must never run in the root namespace.
        assert os.readlink(self.nspath) != os.readlink("/proc/self/ns/net")

    def popen(self, argv: list, **kw) -> subprocess.Popen:
        argv = [str(a) for a in argv]
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.nspath}", "--", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
        )
        proc.argv = argv  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def run(self, argv: list, timeout: float = TIMEOUT) -> Result:
        started = time.time_ns()
        proc = self.popen(argv)
        out, err = finish(proc, timeout)
        return Result(proc.argv, proc.returncode, out, err, started, time.time_ns())

    def sh(self, script: str) -> str:
        res = self.run(["sh", "-c", script])
        assert res.rc == 0, res
        return res.stdout

    def port_range(self) -> tuple[int, int]:
        lo, hi = self.sh("cat /proc/sys/net/ipv4/ip_local_port_range").split()
        return int(lo), int(hi)

    def listening_ports(self) -> set[int]:
        """Ports in LISTEN state in this namespace, from /proc/<holder>/net/tcp*."""
        ports = set()
        for name in ("tcp", "tcp6"):
            for line in Path(f"/proc/{self.holder.pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    def tcp_mib(self, table: str = "snmp", prefix: str = "Tcp:") -> dict[str, int]:
        """The namespace's Tcp counters from /proc/<holder>/net/snmp (TcpExt: table "netstat", prefix "TcpExt:")."""
        rows = [l.split()[1:] for l in Path(f"/proc/{self.holder.pid}/net/{table}").read_text()
                .splitlines() if l.startswith(prefix)]
        return dict(zip(rows[0], map(int, rows[1])))

    def sysctl(self, key: str) -> str | None:
        """A sysctl as this namespace has it; None where this kernel has no such sysctl."""
        return self.sh(f"cat /proc/sys/{key.replace('.', '/')} 2>/dev/null || true").strip() or None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=TIMEOUT)
            except Exception:
                pass
        try:
            self.holder.stdin.close()
            self.holder.wait(timeout=TIMEOUT)
        except Exception:
            self.holder.kill()
            self.holder.wait(timeout=TIMEOUT)
        for f in (self.holder.stdout, self.holder.stderr):
            f.close()


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT, prefix: bytes = b"") -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
        raise AssertionError(f"{proc.argv} did not finish within {timeout}s; "  # type: ignore[attr-defined]
                             f"stdout {prefix + out!r} stderr {err!r}")
    return (prefix + out).decode(), err.decode()


class Server:
    """A server process whose report is read incrementally."""

    def __init__(self, ns: Netns, binary: Path, *args) -> None:
        self.ns = ns
        self.started_ns = time.time_ns()
        self.proc = ns.popen([binary, *args])
        self.buf = bytearray()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = TIMEOUT) -> SyscallEvent:
        def listened(buf: bytearray) -> bool:
            complete = bytes(buf).split(b"\n")[:-1]
            return any(json.loads(line).get("call") == "listen" for line in complete if line)
        try:
            _read_until(self.proc.stdout.fileno(), self.buf, listened,
                        time.monotonic() + timeout, "the server's listen report")
        except (TimeoutError, EOFError) as e:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"server not listening: {e}; stderr {err!r}") from None
        ev = find(parse_report(bytes(self.buf).decode()), "listen")
        assert ev.ret == 0, ev
        return ev

    def finish(self, timeout: float = TIMEOUT) -> Result:
        out, err = finish(self.proc, timeout, bytes(self.buf))
        return Result(self.proc.argv, self.proc.returncode, out, err,
                      self.started_ns, time.time_ns())


@pytest.fixture
def ns():
    missing = [t for t in ("unshare", "nsenter", "ip") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        reason = (f"needs root and {', '.join(missing) or 'unshare/nsenter'} for a private "
                  "network namespace")
        if os.environ.get("VERIFIER_REQUIRE_ROOT") == "1":
            pytest.fail(f"{reason} [VERIFIER_REQUIRE_ROOT=1 forbids skipping]", pytrace=False)
        pytest.skip(reason)
    netns = Netns()
    try:
        yield netns
    finally:
        netns.close()


def check_timestamps(res: Result) -> None:
    """CLOCK_REALTIME stamps: ordered, and within the process's lifetime."""
    evs = res.events
    assert evs, res
    for e in evs:
        assert e.t_enter_ns <= e.t_return_ns, e
        assert res.started_ns <= e.t_enter_ns, (e, res.started_ns)
        assert e.t_return_ns <= res.ended_ns, (e, res.ended_ns)
    for e in evs:
        assert e.pid > 0


def listening_server(ns, binaries, fam, *args, addr=None, port=PORT) -> Server:
    srv = Server(ns, binaries["server"], "--family", fam,
                 "--listen", addr or LO[fam], port, *args)
    srv.wait_listening()
    assert port in ns.listening_ports()
    return srv


def endpoint(ev: SyscallEvent) -> tuple[str, int]:
    assert ev.ret >= 0, ev
    return ev.endpoint


# ---------------------------------------------------------- program runs


@FAMILIES
def test_successful_connect(ns, binaries, fam):
    lo, hi = ns.port_range()
    srv = listening_server(ns, binaries, fam, "--accept", 1, "--reuseaddr")
    cli = ns.run([binaries["client"], "--family", fam, LO[fam], PORT])
    assert cli.rc == 0, cli
    check_timestamps(cli)
    ev = cli.events
    assert [e.call for e in ev] == ["socket", "connect", "getsockname", "getpeername", "close"]
    assert {e.pid for e in ev} == {ns.procs[-1].pid}
    sock = find(ev, "socket")
    assert sock.args == {"domain": f"AF_INET{'6' if fam == 6 else ''}",
                         "type": "SOCK_STREAM", "protocol": 0}
    conn = find(ev, "connect")
    assert conn.ret == 0 and conn.errno is None
    assert conn.args == {"fd": sock.ret, "addr": LO[fam], "port": PORT}
    local = endpoint(find(ev, "getsockname"))
    assert local[0] == LO[fam]
    assert lo <= local[1] <= hi, (local, (lo, hi))
    assert endpoint(find(ev, "getpeername")) == (LO[fam], PORT)

    res = srv.finish()
    assert res.rc == 0, res
    check_timestamps(res)
    sev = res.events
    assert [e.call for e in sev] == ["socket", "setsockopt", "bind", "getsockname", "listen",
                                     "accept", "getsockname", "getpeername", "read", "close",
                                     "close"]
    assert find(sev, "setsockopt").args == {"fd": 3, "level": "SOL_SOCKET",
                                            "name": "SO_REUSEADDR", "value": 1}
    acc = find(sev, "accept")
    assert endpoint(acc) == local           # the peer accept() returns is the client
    assert acc.extra["conn_fd"] == acc.ret and acc.ret != acc.args["fd"]
    assert endpoint(find(sev, "getpeername")) == local
    assert endpoint(find(sev, "getsockname", 1)) == (LO[fam], PORT)
    assert find(sev, "read").ret == 0       # EOF: the client closed
    assert [c.args["fd"] for c in calls(sev, "close")] == [acc.ret, acc.args["fd"]]
    # The handshake completed before connect() returned, and accept returned
    # after connect() was entered.
    assert acc.t_return_ns >= conn.t_enter_ns


@FAMILIES
def test_refused_connect(ns, binaries, fam):
    cli = ns.run([binaries["client"], "-f", fam, "--connect", LO[fam], PORT])
    assert cli.rc == 1, cli
    check_timestamps(cli)
    ev = cli.events
    assert [e.call for e in ev] == ["socket", "connect", "close"]
    conn = find(ev, "connect")
    assert (conn.ret, conn.errno) == (-1, "ECONNREFUSED")
    assert 0 <= conn.duration_ns < FAST_NS, conn
    assert "getsockname" not in [e.call for e in ev]


@FAMILIES
def test_connect_twice_after_failure(ns, binaries, fam):
    mib0 = ns.tcp_mib()
    cli = ns.run([binaries["client"], "-f", fam, "--connect-twice", LO[fam], PORT])
    assert cli.rc == 1, cli
    check_timestamps(cli)
    first, second = calls(cli.events, "connect")
    assert (first.ret, first.errno) == (-1, "ECONNREFUSED")
    assert second.args == first.args
    assert second.ret == -1 and second.errno, second
    assert second.t_enter_ns >= first.t_return_ns
    mib1 = ns.tcp_mib()
    syns = mib1["ActiveOpens"] - mib0["ActiveOpens"]
    print(f"IPv{fam}: connect() again on the same socket after ECONNREFUSED -> "
          f"ret {second.ret} errno {second.errno} in {second.duration_ns} ns; "
          f"active opens (SYNs sent by connect) {syns}, attempt fails "
          f"{mib1['AttemptFails'] - mib0['AttemptFails']}")
    # Linux resets the failed socket to CLOSED, so the second connect() is a
    # whole new attempt (a new SYN, refused again), not an immediate error.
    assert syns == 2
    assert [e.call for e in cli.events][-1] == "close"


@FAMILIES
def test_bind_port_zero_then_connect(ns, binaries, fam):
    lo, hi = ns.port_range()
    srv = listening_server(ns, binaries, fam, "--accept", 1)
    spec = f"{LO[fam]}:0" if fam == 4 else f"[{LO[fam]}]:0"
    cli = ns.run([binaries["client"], "-f", fam, "--bind", spec, LO[fam], PORT])
    assert cli.rc == 0, cli
    check_timestamps(cli)
    ev = cli.events
    assert [e.call for e in ev] == ["socket", "bind", "getsockname", "connect",
                                    "getsockname", "getpeername", "close"]
    bind = find(ev, "bind")
    assert bind.ret == 0 and bind.args["port"] == 0 and bind.args["addr"] == LO[fam]
    bound = endpoint(find(ev, "getsockname", 0))
    assert bound[1] != 0 and lo <= bound[1] <= hi
    assert endpoint(find(ev, "getsockname", 1)) == bound    # the connect's source
    res = srv.finish()
    assert res.rc == 0, res
    assert endpoint(find(res.events, "accept")) == bound


@FAMILIES
def test_port_range_is_the_namespaces_own(ns, binaries, fam):
    ns.sh("echo '40000 40009' > /proc/sys/net/ipv4/ip_local_port_range")
    assert ns.port_range() == (40000, 40009)
    srv = listening_server(ns, binaries, fam, "--accept", 1)
    cli = ns.run([binaries["client"], "-f", fam, LO[fam], PORT])
    assert cli.rc == 0, cli
    assert 40000 <= find(cli.events, "getsockname").port <= 40009
    assert srv.finish().rc == 0


@FAMILIES
def test_fork_server_serves_clients_in_children(ns, binaries, fam):
    n = 3
    srv = listening_server(ns, binaries, fam, "--mode", "fork", "--accept", n + 1,
                           "--echo", addr=WILDCARD[fam])
    clients = [ns.popen([binaries["client"], "-f", fam, "--send", f"msg{i}",
                         "--shutdown-wr", "--read", LO[fam], PORT])
               for i in range(n)]
    outs = [finish(p) for p in clients]
    assert [p.returncode for p in clients] == [0] * n, outs
    cevs = [parse_report(out) for out, _ in outs]
    for i, ev in enumerate(cevs):
        got = "".join(e.extra.get("data", "") for e in calls(ev, "read"))
        assert got == f"msg{i}"
        assert find(ev, "read", -1).ret == 0
    client_ends = {endpoint(find(ev, "getsockname")) for ev in cevs}
    assert len(client_ends) == n and len({p for _, p in client_ends}) == n

    # The children exit once their client is done, and the parent reaps them
    # while it still waits in accept(): no zombies (bounded poll).
    deadline = time.monotonic() + TIMEOUT
    while (kids := children_of(srv.pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kids == {}, f"children (state) still there: {kids}"

    last = ns.run([binaries["client"], "-f", fam, LO[fam], PORT])
    assert last.rc == 0, last
    res = srv.finish()
    assert res.rc == 0, res
    check_timestamps(res)
    ev = res.events
    parent = srv.pid
    per_pid = by_pid(ev)
    pev = per_pid[parent]
    forks = calls(pev, "fork")
    accepts = calls(pev, "accept")
    assert len(forks) == len(accepts) == n + 1
    kids_pids = [f.ret for f in forks]
    assert len(set(kids_pids)) == n + 1 and parent not in kids_pids
    assert all(f.extra["child"] == f.ret for f in forks)
    assert set(per_pid) == {parent, *kids_pids}
    lfd = find(pev, "listen").args["fd"]
    peer_ports = set()
    for acc, fork in zip(accepts, forks):
        # The parent closes its copy of the connected socket right after fork.
        after = pev[pev.index(fork) + 1]
        assert (after.call, after.args["fd"], after.ret) == ("close", acc.ret, 0)
        kid = per_pid[fork.ret]
        assert kid[0].call == "close" and kid[0].args["fd"] == lfd   # listening copy
        assert endpoint(find(kid, "getpeername")) == endpoint(acc)
        assert find(kid, "close", -1).args["fd"] == acc.ret
        peer_ports.add(acc.port)
    assert len(peer_ports) == n + 1
    assert client_ends <= {endpoint(a) for a in accepts}
    for i, ev_c in enumerate(cevs):
        port = find(ev_c, "getsockname").port
        kid = next(per_pid[f.ret] for a, f in zip(accepts, forks) if a.port == port)
        assert find(kid, "read").extra["data"] == f"msg{i}"
        assert find(kid, "write").ret == len(f"msg{i}")
    assert calls(pev, "close")[-1].args["fd"] == lfd


def children_of(pid: int) -> dict[int, str]:
    """Child processes of pid (zombies included) with their state letter."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out[int(d.name)] = fields[0]
    return out


@FAMILIES
def test_server_sigterm_while_never_accepting(ns, binaries, fam):
    srv = listening_server(ns, binaries, fam, "--accept", 0, "--backlog", 4)
    # The kernel completes the handshake although accept() is never called.
    cli = ns.run([binaries["client"], "-f", fam, LO[fam], PORT])
    assert cli.rc == 0, cli
    srv.proc.send_signal(signal.SIGTERM)
    res = srv.finish()
    assert res.rc == 0, res
    check_timestamps(res)
    assert [e.call for e in res.events] == ["socket", "bind", "getsockname", "listen", "close"]
    assert find(res.events, "listen").args["backlog"] == 4


READ_NR = {"x86_64": 0, "aarch64": 63, "riscv64": 63, "i686": 3, "armv7l": 3}.get(platform.machine())


def wait_wchan(pid: int, function: str) -> None:
    """Bounded poll until pid sleeps in the kernel function `function` (e.g. accept's)."""
    deadline = time.monotonic() + TIMEOUT
    while Path(f"/proc/{pid}/wchan").read_text().strip() != function:
        assert time.monotonic() < deadline, f"pid {pid} never slept in {function}"
        time.sleep(0.001)


def wait_in_syscall(pid: int, nr: int) -> None:
    """Bounded poll until pid is blocked in system call nr."""
    deadline = time.monotonic() + TIMEOUT
    path = Path(f"/proc/{pid}/syscall")
    while time.monotonic() < deadline:
        if path.read_text().split()[0] == str(nr):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never blocked in syscall {nr}")


@pytest.mark.skipif(READ_NR is None, reason="read(2) syscall number unknown on this machine")
def test_server_sigterm_interrupts_blocked_read(ns, binaries):
    srv = listening_server(ns, binaries, 4, "--accept", 1)
    cli = ns.popen([binaries["client"], "--hold-ms", 60000, LO[4], PORT])
    buf = bytearray()
    _read_until(srv.proc.stdout.fileno(), buf, lambda b: b'"call":"getpeername"' in b,
                time.monotonic() + TIMEOUT, "the server's accepted connection")
    srv.buf += buf
    wait_in_syscall(srv.pid, READ_NR)
    srv.proc.send_signal(signal.SIGTERM)
    res = srv.finish()
    assert res.rc == 0, res
    ev = res.events
    read = find(ev, "read")
    assert (read.ret, read.errno) == (-1, "EINTR")
    assert [e.call for e in ev][-2:] == ["close", "close"]
    cli.kill()


@pytest.mark.skipif(READ_NR is None, reason="read(2) syscall number unknown on this machine")
def test_fork_server_sigterm_stops_children(ns, binaries):
    srv = listening_server(ns, binaries, 4, "--mode", "fork", "--accept", 2)
    cli = ns.popen([binaries["client"], "--hold-ms", 60000, LO[4], PORT])
    buf = bytearray()
    _read_until(srv.proc.stdout.fileno(), buf, lambda b: b'"call":"fork"' in b,
                time.monotonic() + TIMEOUT, "the server's fork")
    srv.buf += buf
    child = find(parse_report(bytes(buf).decode().rsplit("\n", 1)[0]), "fork").ret
    wait_in_syscall(child, READ_NR)          # the child serves: blocked in read
    wait_wchan(srv.pid, "inet_csk_accept")   # and the parent is back in accept()
    srv.proc.send_signal(signal.SIGTERM)
    res = srv.finish()
    assert res.rc == 0, res
    per_pid = by_pid(res.events)
    assert set(per_pid) == {srv.pid, child}
    acc = calls(per_pid[srv.pid], "accept")
    assert (acc[-1].ret, acc[-1].errno) == (-1, "EINTR")
    kid = per_pid[child]
    assert (find(kid, "read").ret, find(kid, "read").errno) == (-1, "EINTR")
    assert kid[-1].call == "close" and kid[-1].ret == 0
    assert not Path(f"/proc/{child}").exists()   # the parent waited for it
    cli.kill()


@FAMILIES
def test_send_echo_and_escaping(ns, binaries, fam):
    payload = 'a"b\\c\n\t\x01é'
    srv = listening_server(ns, binaries, fam, "--accept", 1, "--send", "hello", "--echo")
    cli = ns.run([binaries["client"], "-f", fam, "--send", payload, "--shutdown-wr",
                  "--read", LO[fam], PORT])
    assert cli.rc == 0, cli
    ev = cli.events
    wr = find(ev, "write")
    raw = payload.encode()
    assert wr.ret == wr.args["count"] == len(raw)
    assert wr.extra["data"].encode("latin-1") == raw         # bytes >= 0x80 as \u00XX
    assert find(ev, "shutdown").args["how"] == "SHUT_WR"
    got = "".join(e.extra.get("data", "") for e in calls(ev, "read")).encode("latin-1")
    assert got == b"hello" + raw
    res = srv.finish()
    assert res.rc == 0, res
    sev = res.events
    assert find(sev, "write", 0).extra["data"] == "hello"
    assert find(sev, "read", 0).extra["data"].encode("latin-1") == raw


@FAMILIES
def test_linger_abort_resets_the_peer(ns, binaries, fam):
    srv = listening_server(ns, binaries, fam, "--accept", 1, "--close-unread",
                           "--linger-abort")
    cli = ns.run([binaries["client"], "-f", fam, "--read", LO[fam], PORT])
    assert cli.rc == 1, cli                     # a call (the read) failed
    read = find(cli.events, "read")
    assert (read.ret, read.errno) == (-1, "ECONNRESET")
    res = srv.finish()
    assert res.rc == 0, res
    sev = res.events
    opt = find(sev, "setsockopt")
    assert opt.args["name"] == "SO_LINGER" and opt.args["value"] == {"l_onoff": 1, "l_linger": 0}
    assert "read" not in [e.call for e in sev]


def test_syncnt_limits_syn_retransmissions(ns, binaries):
    # backlog 0: the accept queue holds one connection, and a full queue makes
    # the listener drop further SYNs, so the second client's SYNs go unanswered.
    srv = listening_server(ns, binaries, 4, "--accept", 0, "--backlog", 0)
    first = ns.run([binaries["client"], LO[4], PORT])
    assert first.rc == 0, first
    # The SYN schedule this namespace's settings give with TCP_SYNCNT 1 (the linux profile).
    predicted = LinuxProfile.from_sysctls({k: ns.sysctl(k) for k in LINUX_SYSCTLS}, syncnt=1).schedule()
    lo, hi = predicted.fail_window(TOLERANCE)
    retransmitted = ns.tcp_mib("netstat", "TcpExt:")["TCPSynRetrans"]
    cli = ns.run([binaries["client"], "--syncnt", 1, LO[4], PORT], timeout=hi + 10)
    assert cli.rc == 1, cli
    opt = find(cli.events, "setsockopt")
    assert opt.args == {"fd": 3, "level": "IPPROTO_TCP", "name": "TCP_SYNCNT", "value": 1}
    conn = find(cli.events, "connect")
    assert (conn.ret, conn.errno) == (-1, "ETIMEDOUT")
    # The SYN was retransmitted as often as the model says, and connect() gave up when it says, within
    # the timer tolerance of every gap (the SYN times are not seen here: their slack adds up).
    assert ns.tcp_mib("netstat", "TcpExt:")["TCPSynRetrans"] - retransmitted == predicted.retransmissions, \
        predicted.describe()
    assert lo <= conn.duration_ns / 1e9 <= hi, (
        f"ETIMEDOUT after {conn.duration_ns / 1e9:.3f} s; {predicted.describe()}: {lo:.3f}-{hi:.3f} s "
        f"({TOLERANCE.describe()})")
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.finish().rc == 0


@pytest.mark.parametrize(
    "prog, args, msg",
    [
        ("client", [], "expected ADDR PORT"),
        ("client", ["127.0.0.1"], "expected ADDR PORT"),
        ("client", ["--family", "5", "127.0.0.1", "1"], "bad --family"),
        ("client", ["127.0.0.1", "70000"], "bad port"),
        ("client", ["-f", "6", "127.0.0.1", "1"], "bad IPv6 address"),
        ("client", ["--bind", "nocolon", "127.0.0.1", "1"], "bad ADDR:PORT"),
        ("client", ["--syncnt"], "needs an argument"),
        ("client", ["--syncnt", "x", "127.0.0.1", "1"], "bad --syncnt"),
        ("client", ["--bogus", "127.0.0.1", "1"], "unknown or ambiguous option"),
        ("client", ["--read=1", "127.0.0.1", "1"], "takes no argument"),
        ("client", ["--connect", "127.0.0.1"], "expected PORT after --connect"),
        ("client", ["--report-fd", "99", "127.0.0.1", "1"], "not an open descriptor"),
        ("server", [], "expected ADDR PORT"),
        ("server", ["--mode", "threads", "0.0.0.0", "1"], "bad --mode"),
        ("server", ["--accept", "-1", "0.0.0.0", "1"], "bad --accept"),
        ("server", ["--echo", "--close-unread", "0.0.0.0", "1"], "exclude each other"),
        ("server", ["--listen", "::", "1"], "bad IPv4 address"),
        ("server", ["-x", "0.0.0.0", "1"], "unknown option '-x'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(ns, binaries, prog, args, msg):
    res = ns.run([binaries[prog], *args])
    assert res.rc == 2, res
    assert res.stdout == ""                 # no socket call was made
    assert res.stderr.endswith("\n") and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"{prog}: ") and msg in res.stderr, res.stderr


@pytest.mark.parametrize("prog", ["client", "server"])
def test_help(ns, binaries, prog):
    res = ns.run([binaries[prog], "--help"])
    assert res.rc == 0 and res.stderr == ""
    assert res.stdout.startswith(f"usage: {prog} ")
    for flag in ("--family", "--report-fd", "--hold-ms", "--linger-abort"):
        assert flag in res.stdout


def test_report_fd(ns, binaries):
    res = ns.run(["sh", "-c", f'exec {binaries["client"]} --report-fd 7 127.0.0.1 {PORT} 7>&2 >/dev/null'])
    assert res.rc == 1 and res.stdout == ""
    assert find(parse_report(res.stderr), "connect").errno == "ECONNREFUSED"
