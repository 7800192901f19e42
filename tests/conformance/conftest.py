"""Shared pieces of the conformance suite: the compiled programs and how to run them, what the kernel
under test says of its timers and counters, and the story a failure tells.

Every timing check uses `TOLERANCE` (tests/kernel.py: the one timer-slack model, at this kernel's HZ)
and the initial RTO measured by `initial_rto_ns`, never a typed-in 1 s.
"""

from __future__ import annotations

import errno as errno_mod
import shlex
import socket
import struct
from dataclasses import dataclass

import pytest

from netns import namespace, waiting
from verifier.analysis.calls import SyscallEvent, find, parse_report, timeline
from verifier.faults import Drop, Syn, inject
from verifier.pytest_plugin import record_calls

from ..kernel import guest_slack_s

PORT = 5000
PROBE_PORT = PORT + 7  # the initial-RTO probe's destination port: nothing listens there, nothing reaches it
TCP_SYN_SENT = 2  # include/net/tcp_states.h
# Checks whose length is set by kernel timers go first, so that under pytest-xdist they start at once
# and every other check runs beside them: the suite's wall time is then close to the longest timer.
LONG_FIRST = ("test_c2_", "test_p3_", "test_c8_syn_flood", "test_c8_accept_queue_overflow", "test_c5_")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.name
        return next((i for i, prefix in enumerate(LONG_FIRST) if name.startswith(prefix)), len(LONG_FIRST))

    items.sort(key=rank)


_current: list = []  # the running test's node: the programs' socket calls are noted on it (record_calls)


@pytest.fixture(autouse=True)
def _note_calls(request):
    _current[:] = [request.node]
    yield
    _current.clear()


def _noted(host: str, run: "Run") -> "Run":
    if _current:
        record_calls(_current[0], host, run.calls)
    return run


@pytest.fixture(scope="session")
def programs():
    """The C test programs, compiled once (cached by source hash)."""
    from verifier.programs import build

    return {name: str(build(name)) for name in ("client", "server", "handler")}


@dataclass
class Run:
    """A finished program and the socket calls it reported."""

    returncode: int
    calls: list[SyscallEvent]
    stderr: str

    def call(self, name: str, n: int = 0) -> SyscallEvent:
        return find(self.calls, name, n)

    def close_of(self, fd: int, pid: int | None = None) -> SyscallEvent:
        """The close() of descriptor `fd` (in process `pid`, if given)."""
        for c in self.calls:
            if c.call == "close" and c.args.get("fd") == fd and pid in (None, c.pid):
                return c
        raise LookupError(f"no close({fd}) reported" + (f" by pid {pid}" if pid else ""))

    @property
    def conn_fd(self) -> int:
        """The connected socket of the (first) accept()."""
        return self.call("accept").ret


def wildcard(family: int) -> str:
    return "::" if family == 6 else "0.0.0.0"


def start_server(bed, programs, family, *extra, port=PORT):
    proc = bed.server.start([programs["server"], "--family", str(family), "--listen", wildcard(family), str(port),
                             *extra])
    bed.server.wait_listen(port, process=proc)
    return proc


def client_argv(bed, programs, family, *extra, port=PORT) -> list[str]:
    return [programs["client"], "--family", str(family), *extra, bed.server.addr(family), str(port)]


def start_client(bed, programs, family, *extra, port=PORT):
    """Start our client on the testbed's client host (it goes on; `finish` or `stop` it)."""
    return bed.client.start(client_argv(bed, programs, family, *extra, port=port))


def run_client(bed, programs, family, *extra, port=PORT, timeout=15) -> Run:
    res = bed.client.run(client_argv(bed, programs, family, *extra, port=port), timeout=timeout)
    return _noted("client", Run(res.returncode, parse_report(res.stdout), res.stderr))


SERVER_IF = "server:s0"


def sent_by_server(conn, kind: str):
    """The server's first packet of `kind`, as it left the server (its own interface): compare server-side
    call times with this, not with the client's view, which adds the trip through the router."""
    return next((e for e in conn.at(SERVER_IF) if e.kind == kind and e.direction == "s>c"), None)


def arrived_at_server(conn, kind: str):
    """The client's first packet of `kind`, as it reached the server."""
    return next((e for e in conn.at(SERVER_IF) if e.kind == kind and e.direction == "c>s"), None)


def story(conn, capture, *, ladders=(), **calls) -> str:
    """The tail of a failure message: the ladders (on every interface) of the connections `ladders`,
    then `conn`'s packets and the socket calls of each named program as one timeline, then the pcap."""
    parts = [c.ladder(all_interfaces=True) for c in ladders] + [timeline(conn.events, calls)]
    return "\n" + "\n".join(parts) + f"\npcap: {capture.path}"


# -- the kernel under test -------------------------------------------------------------------------
def initial_rto_ns(host, family: int, dst: str) -> int:
    """The retransmission timeout the kernel gives a fresh connection in this host's namespace
    (tcp_info.tcpi_rto of a socket in SYN_SENT): tcp_timeout_init(), which also times a listener's
    first SYN-ACK retransmission. The probe's SYN is dropped in the host's own output hook: it never
    reaches the wire, so the capture stays clean."""
    with inject(host, Drop(Syn(dport=PROBE_PORT))):
        with namespace.inside(host.netns):
            s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.setblocking(False)
            assert s.connect_ex((dst, PROBE_PORT)) == errno_mod.EINPROGRESS
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    state, rto_us = info[0], struct.unpack_from("I", info, 8)[0]
    assert state == TCP_SYN_SENT, f"the RTO probe is in state {state}, not SYN_SENT"
    return rto_us * 1000


def at_once_ns(rto_ns: int) -> int:
    """The bound for "at once": an answer that the segment itself carries (a RST, an ICMP error) acts
    without a timer, and the shortest timer a connection could be waiting on is the initial RTO. So
    "at once" is well inside one initial RTO: a tenth of it; in an emulated guest, plus the lateness
    measured there (tests/kernel.py: the kernel itself may be kept from running that long)."""
    return rto_ns // 10 + int(guest_slack_s() * 1e9)


def kernel_counters(host) -> dict[str, int]:
    """The host namespace's TCP counters, as "TcpExt.Name" (/proc/net/netstat is per network namespace)."""
    with namespace.inside(host.netns):
        with open("/proc/thread-self/net/netstat") as f:
            lines = f.read().splitlines()
    counters = {}
    for names, values in zip(lines[::2], lines[1::2]):
        prefix, keys = names.split(":", 1)
        for key, value in zip(keys.split(), values.split(":", 1)[1].split()):
            counters[f"{prefix}.{key}"] = int(value)
    return counters


@pytest.fixture
def listener(request, programs):
    """Start a server that accepts connections on the testbed's server host: ours (which reports its
    socket calls), or the user's own command given with --verifier-server. Returns `start(bed, family)`
    giving the process and a `done()` that ends it and returns our server's report (None for theirs)."""
    user = request.config.getoption("verifier_server")

    def start(bed, family, port=PORT):
        if user:
            argv = shlex.split(user.format(port=port, family=family, addr=wildcard(family)))
            proc = bed.server.start(argv)
            bed.server.wait_listen(port, process=proc)
            return Listener(proc, " ".join(argv))
        return Listener(start_server(bed, programs, family, "--accept", "1", port=port), None)

    return start


@dataclass
class Listener:
    """A running server; `command` is the user's command line, or None for our own server."""

    proc: object
    command: str | None

    def done(self) -> Run | None:
        if self.command is None:
            return finish(self.proc)
        self.proc.stop()
        return None

    def label(self) -> str:
        return f" (server: {self.command})" if self.command else ""


def finish(proc) -> Run:
    """Wait (bounded) for a program to end by itself; its report."""
    res = proc.wait(10)
    return _noted(proc.host_name, Run(res.returncode, parse_report(res.stdout), res.stderr))


def stop(proc) -> Run:
    """End a program that would go on (SIGTERM); its report so far."""
    res = proc.stop()
    return _noted(proc.host_name, Run(res.returncode, parse_report(res.stdout), res.stderr))


def wait_stopped(proc, timeout: float = 10.0) -> None:
    """Until the process is in the stopped state (T), polled with a deadline: a program that stops
    itself (server --stop-after-listen, client --stop-before-connect) and waits for the test's SIGCONT."""
    def stopped() -> bool:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"

    waiting.wait_until(stopped, timeout, lambda: AssertionError(f"{proc} did not stop within {timeout} s"))

