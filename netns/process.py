"""Programs running inside a testbed host: started, waited for, and always ended.

A process is forked, moved into the host's namespace before exec (`preexec_fn`), made to die with
its parent (PR_SET_PDEATHSIG), and put in its own process group so teardown can end it together
with any children it forked. Its stdout and stderr go to files, so a chatty program never blocks on
a full pipe, and they are read back when it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


class ProcessError(RuntimeError):
    """A program could not be started, or did not do what was awaited of it in time."""


@dataclass(frozen=True)
class Result:
    """What a finished program left: exit status, output and how long it ran."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    started_ns: int
    ended_ns: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> "Result":
        if self.returncode != 0:
            raise ProcessError(
                f"{' '.join(self.argv)} exited with status {self.returncode}: {self.stderr.strip()[-500:]}"
            )
        return self


class Process:
    """A program started in the background inside a host."""

    def __init__(self, host_name: str, argv: Sequence[str], preexec: Callable[[], None], workdir: Path,
                 env: dict | None = None, input: str | bytes | None = None):
        self.host_name = host_name
        self.argv = tuple(str(a) for a in argv)
        fd, out = tempfile.mkstemp(prefix="out-", dir=workdir)
        os.close(fd)
        fd, err = tempfile.mkstemp(prefix="err-", dir=workdir)
        os.close(fd)
        self._out_path, self._err_path = Path(out), Path(err)
        self.started_ns = time.time_ns()
        self.ended_ns: int | None = None
        stdin = subprocess.DEVNULL
        if input is not None:
            # Standard input from a file, like stdout: the program reads it at its own pace.
            fd, inp = tempfile.mkstemp(prefix="in-", dir=workdir)
            os.write(fd, input.encode() if isinstance(input, str) else input)
            os.lseek(fd, 0, os.SEEK_SET)
            stdin = fd
        try:
            with open(out, "wb") as o, open(err, "wb") as e:
                self._popen = subprocess.Popen(
                    self.argv, stdin=stdin, stdout=o, stderr=e,
                    preexec_fn=preexec, start_new_session=True, close_fds=True, env=env,
                )
        except FileNotFoundError:
            raise ProcessError(f"{self.argv[0]}: program not found (on host {host_name})") from None
        except subprocess.SubprocessError as exc:  # preexec failed: setns refused
            raise ProcessError(f"could not start {self.argv[0]} in host {host_name}: {exc}") from None
        finally:
            if input is not None:
                os.close(stdin)
        self._result: Result | None = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def output(self) -> str:
        """Standard output so far (the program may still be writing)."""
        return self._out_path.read_text(errors="replace")

    def wait_for(self, check: Callable[[], object], what: str, timeout: float = 5.0) -> object:
        """Poll `check()` (bounded) until it returns something true, and return that; fail clearly if the
        program exits first ("exited (1) before <what>") or time runs out."""
        from .waiting import scaled, wait_until

        def check_alive():
            got = check()
            if not got and not self.running:
                res = self.wait()
                raise ProcessError(f"{self.argv[0]} on {self.host_name} exited ({res.returncode}) before {what}: "
                                   f"{res.stderr.strip()[-300:]}")
            return got

        return wait_until(check_alive, timeout, lambda: ProcessError(
            f"{self.argv[0]} on {self.host_name}: no {what} within {scaled(timeout):g} s"))

    def wait_output(self, predicate: Callable[[str], bool], timeout: float = 5.0, what: str = "output") -> str:
        """Poll the program's stdout until `predicate` holds; fail clearly if it exits or time runs out."""
        def ready():
            text = self.output()
            return (text,) if predicate(text) else None  # a tuple: true even when the text is empty

        return self.wait_for(ready, what, timeout)[0]  # type: ignore[index]

    def wchan(self) -> str:
        """The kernel function the program sleeps in ("" when running), e.g. "inet_csk_accept"."""
        try:
            with open(f"/proc/{self.pid}/wchan") as f:
                return f.read().strip()
        except OSError:
            return ""

    def wait_blocked(self, wchan: str, timeout: float = 5.0) -> None:
        """Poll until the program sleeps in the kernel function `wchan` (e.g. blocked in accept())."""
        self.wait_for(lambda: self.wchan() == wchan, f"blocking in {wchan}", timeout)

    def wait(self, timeout: float | None = None) -> Result:
        """Wait for the program to end and collect its result (`timeout`: stretched by `waiting.pace()`)."""
        if self._result is None:
            from .waiting import scaled

            limit = None if timeout is None else scaled(timeout)
            try:
                rc = self._popen.wait(limit)
            except subprocess.TimeoutExpired:
                raise ProcessError(f"{' '.join(self.argv)} on {self.host_name} still running after {limit:g} s") from None
            self.ended_ns = time.time_ns()
            self._result = Result(self.argv, rc, self._out_path.read_text(errors="replace"),
                                  self._err_path.read_text(errors="replace"), self.started_ns, self.ended_ns)
        return self._result

    def signal(self, sig: int) -> None:
        if self.running:
            try:
                os.killpg(self._popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 0.5) -> Result:
        """SIGTERM the program's process group, SIGKILL it if it lingers, and collect the result."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()

    def kill(self) -> None:
        if self._popen.poll() is None:
            try:
                os.killpg(self._popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._popen.wait()
        else:
            # The leader is gone, but children it forked may still hold the group.
            try:
                os.killpg(self._popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __repr__(self) -> str:
        state = "running" if self.running else f"exit {self._popen.returncode}"
        return f"<Process {self.argv[0]} on {self.host_name} pid={self.pid} {state}>"


def start_agent(module: str, *, stderr, text: bool = False) -> subprocess.Popen:
    """One of the project's long-lived helper processes (``python -m MODULE``: the capture, fault and
    packet agents), talking on its stdin and stdout (unbuffered bytes, or text), and made to die with
    the thread that started it (`namespace.die_with_parent`; each agent also ends when its stdin
    closes, which covers a caller that started it from a short-lived thread)."""
    from netns import namespace

    return subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, text=text, bufsize=-1 if text else 0, close_fds=True,
                            preexec_fn=namespace.die_with_parent)
