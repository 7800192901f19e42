"""Shared pieces of the conformance suite: the compiled programs and how to run them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pytest

from verifier.analysis.syscalls import SyscallEvent, parse_report

PORT = 5000
# Checks whose length is set by kernel timers go first, so that under pytest-xdist they start at once
# and every other check runs beside them: the suite's wall time is then close to the longest timer.
LONG_FIRST = ("test_c2_", "test_c8_syn_flood", "test_c8_accept_queue_overflow", "test_c5_")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.name
        return next((i for i, prefix in enumerate(LONG_FIRST) if name.startswith(prefix)), len(LONG_FIRST))

    items.sort(key=rank)


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
        from verifier.analysis.syscalls import find

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


def run_client(bed, programs, family, *extra, port=PORT, timeout=15) -> Run:
    res = bed.client.run(client_argv(bed, programs, family, *extra, port=port), timeout=timeout)
    return Run(res.returncode, parse_report(res.stdout), res.stderr)


SERVER_IF = "server:s0"


def sent_by_server(conn, kind: str):
    """The server's first packet of `kind`, as it left the server (its own interface): compare server-side
    call times with this, not with the client's view, which adds the trip through the router."""
    return next((e for e in conn.at(SERVER_IF) if e.kind == kind and e.direction == "s>c"), None)


def arrived_at_server(conn, kind: str):
    """The client's first packet of `kind`, as it reached the server."""
    return next((e for e in conn.at(SERVER_IF) if e.kind == kind and e.direction == "c>s"), None)


def story(conn, capture, **calls) -> str:
    """Packets and socket calls as one timeline, plus the pcap: the tail of a failure message."""
    from verifier.analysis.timeline import timeline

    return "\n" + timeline(conn.events, calls) + f"\npcap: {capture.path}"


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
    res = proc.wait(10)
    return Run(res.returncode, parse_report(res.stdout), res.stderr)
