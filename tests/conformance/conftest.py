"""Shared pieces of the conformance suite: the compiled programs and how to run them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from verifier.syscalls import SyscallEvent, parse_report

PORT = 5000


@pytest.fixture(scope="session")
def programs():
    """The C test programs, compiled once (cached by source hash)."""
    from verifier.programs import build

    return {name: str(build(name)) for name in ("client", "server")}


@dataclass
class Run:
    """A finished program and the socket calls it reported."""

    returncode: int
    calls: list[SyscallEvent]
    stderr: str

    def call(self, name: str, n: int = 0) -> SyscallEvent:
        from verifier.syscalls import find

        return find(self.calls, name, n)


def wildcard(family: int) -> str:
    return "::" if family == 6 else "0.0.0.0"


def start_server(bed, programs, family, *extra, port=PORT):
    proc = bed.server.start([programs["server"], "--family", str(family), "--listen", wildcard(family), str(port),
                             *extra])
    bed.server.wait_listen(port, process=proc)
    return proc


def run_client(bed, programs, family, *extra, port=PORT, timeout=60) -> Run:
    res = bed.client.run([programs["client"], "--family", str(family), *extra, bed.server.addr(family), str(port)],
                         timeout=timeout)
    return Run(res.returncode, parse_report(res.stdout), res.stderr)


def finish(proc) -> Run:
    res = proc.wait(10)
    return Run(res.returncode, parse_report(res.stdout), res.stderr)
