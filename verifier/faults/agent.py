"""The fault agent: forges, re-times and injects packets inside testbed namespaces, for `verifier.faults`.

One long-lived agent process serves a whole Python process (each pytest-xdist worker has its own),
so packet sockets are opened in a namespace and served by one select loop, whatever the number of
faults. `agent()` starts it lazily on first use; it is stopped at exit (atexit), dies with its parent
(PR_SET_PDEATHSIG) and also ends when its stdin closes. It imports the kind modules of
`verifier.faults` (standard library only: packets are parsed with struct and built with
`verifier.wire.encode`, never with Scapy), so it is ready within a fraction of a second.

Protocol: one JSON object per line on the agent's stdin, one JSON answer per line on its stdout, in
request order, each answer echoing the request's `seq`. First, unasked, the agent prints
``{"event": "hello", "pid": ..., "kinds": [...], "ready_ms": ...}`` once it can serve requests
(`kinds`: the arm kinds it serves; `ready_ms`: since the process started, to a clock tick).

``{"op": "arm", "kind": KIND, "id": "f1", "netns": NS, ...}`` creates an arm of one of the registered
kinds (`verifier.faults.arm.ARM_KINDS`; each kind's module documents its fields: `icmp`, `watch`,
`segment`, `delay`). An arm opens AF_PACKET sockets inside namespace NS, bound to its interfaces,
and the agent answers ``{"ok": true, "armed_ns": ...}`` only once they are bound: every frame after
that answer is seen. An arm closes its sockets by itself after `lifetime_s`.

``{"op": "status", "id": "f1"}`` / ``{"op": "disarm", "id": "f1"}``: the report so far / the final report
(disarm closes the sockets and forgets the arm; pending sends are cancelled). ``{"op": "stop", "id"}``:
the arm takes no new packets but still sends those it holds; the report so far. An arm kind may
answer requests of its own (its `ops`, e.g. the watch arm's ``{"op": "rst", "id", ...}``).
``{"op": "ping"}``: ``{"pid", "armed": [ids], "open_sockets": n, "started_ns", "kinds"}``.
``{"op": "quit"}``: closes every socket and exits.
A failed request answers ``{"ok": false, "error": "..."}``.

The agent never uses a process-wide interface or route table (such as Scapy's, read in the root
namespace; scapy issue 3467): each arm opens and binds its sockets itself, inside the target
namespace, and frames are addressed by the arm from what it saw or was told.
"""

from __future__ import annotations

import atexit
import heapq
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from netns.waiting import scaled
from verifier.faults.arm import ARM_KINDS, Arm

ANC = socket.CMSG_SPACE(16)
BUFSIZE = 65536 + 64
SO_TIMESTAMPNS = 35

START_TIMEOUT = 30.0  # a cold start on a loaded 2-core machine
REQUEST_TIMEOUT = 10.0
_GENERIC_OPS = ("status", "disarm", "stop")


# ---------------------------------------------------------------------------------------------------
# The agent process
# ---------------------------------------------------------------------------------------------------

class Agent:
    """The agent's state: armed faults, frames waiting for their time, and the request loop."""

    def __init__(self) -> None:
        import verifier.faults  # noqa: F401 - every kind module, so that every arm kind is registered

        self.started_ns = time.time_ns()
        self.arms: dict[str, Arm] = {}
        self.pending: list[tuple[int, int, str, str, bytes, dict]] = []  # (due_ns, n, arm id, ifname, frame, record)
        self._n = 0

    # -- frames ------------------------------------------------------------------------------------
    def on_readable(self, arm: Arm, ifname: str) -> None:
        while True:
            sock = arm.socks.get(ifname)
            if sock is None:
                return
            try:
                data, anc, _flags, addr = sock.recvmsg(BUFSIZE, ANC)
            except BlockingIOError:
                return
            except OSError as exc:  # the interface went away under us
                arm.errors.append(f"receive on {ifname} failed: {exc}")
                arm.close()
                return
            ts = next((_ts(p) for lvl, kind, p in anc if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS),
                      None) or time.time_ns()
            try:
                arm.on_frame(self, ifname, data, ts, addr[2])
            except Exception as exc:  # noqa: BLE001 - one odd frame must not kill the agent
                if len(arm.errors) < 20:
                    arm.errors.append(f"{type(exc).__name__}: {exc}")

    def drain(self, arm: Arm) -> None:
        for ifname in list(arm.socks):
            self.on_readable(arm, ifname)

    def schedule(self, due_ns: int, arm: Arm, ifname: str, frame: bytes, record: dict) -> None:
        """Send `frame` on the arm's socket `ifname` at `due_ns` (CLOCK_REALTIME); `arm.on_sent(record)` then."""
        self._n += 1
        heapq.heappush(self.pending, (due_ns, self._n, arm.id, ifname, frame, record))

    def send_due(self) -> None:
        now = time.time_ns()
        while self.pending and self.pending[0][0] <= now:
            _, _, arm_id, ifname, frame, record = heapq.heappop(self.pending)
            arm = self.arms.get(arm_id)
            if arm is None:
                continue
            sock = arm.socks.get(ifname)
            if sock is None:
                arm.cancelled += 1
                continue
            try:
                sock.send(frame)
            except OSError as exc:
                arm.errors.append(f"send on {ifname} failed: {exc}")
                arm.cancelled += 1
                continue
            now = time.time_ns()
            arm.on_sent(record, now)

    def expire(self) -> None:
        now = time.monotonic()
        for arm in self.arms.values():
            if arm.socks and now >= arm.expires:
                arm.expired = True
                arm.close()  # a forgotten arm must not pin the testbed's namespace

    def next_timeout(self) -> float:
        waits = [1.0]
        if self.pending:
            waits.append((self.pending[0][0] - time.time_ns()) / 1e9)
        waits += [a.expires - time.monotonic() for a in self.arms.values() if a.socks]
        return max(0.0, min(waits))

    def fds(self) -> dict[int, tuple[Arm, str]]:
        return {sock.fileno(): (arm, ifname) for arm in self.arms.values() for ifname, sock in arm.socks.items()}

    # -- requests ----------------------------------------------------------------------------------
    def handle(self, req: dict) -> dict | None:
        op = req.get("op")
        if op == "arm":
            arm_id = str(req.get("id"))
            if arm_id in self.arms:
                raise ValueError(f"arm id {arm_id} is already in use")
            kind = req.get("kind") or "icmp"
            if kind not in ARM_KINDS:
                raise ValueError(f"unknown arm kind {kind!r}; use one of {', '.join(sorted(ARM_KINDS))}")
            arm = ARM_KINDS[kind](req, self)
            self.arms[arm.id] = arm
            return {"armed": arm.id, "armed_ns": time.time_ns()}
        if op in _GENERIC_OPS or any(op in cls.ops for cls in ARM_KINDS.values()):
            arm = self.arms.get(str(req.get("id")))
            if arm is None:
                raise ValueError(f"no arm with id {req.get('id')!r}")
            self.drain(arm)  # frames that arrived before this request count
            self.send_due()
            if op not in _GENERIC_OPS:
                if op not in arm.ops:
                    raise ValueError(f"arm {arm.id} is a {arm.kind} arm, which has no {op!r} request")
                if not arm.socks:
                    raise ValueError(f"arm {arm.id} has expired")
                return getattr(arm, "op_" + op.replace("-", "_"))(self, req)
            if op == "stop":
                arm.stop_intake()
            if op == "disarm":
                arm.close()
                del self.arms[arm.id]
                kept = [p for p in self.pending if p[2] != arm.id]
                arm.cancelled += len(self.pending) - len(kept)
                heapq.heapify(kept)
                self.pending = kept
            return {"report": arm.report()}
        if op == "ping":
            return {"pid": os.getpid(), "armed": sorted(self.arms),
                    "open_sockets": sum(a.open_sockets for a in self.arms.values()),
                    "started_ns": self.started_ns, "kinds": sorted(ARM_KINDS)}
        if op == "quit":
            return None
        raise ValueError(f"unknown op {op!r}")

    def close(self) -> None:
        for arm in self.arms.values():
            arm.close()
        self.arms.clear()


def _ts(payload: bytes) -> int:
    sec, nsec = struct.unpack("qq", payload[:16])
    return sec * 1_000_000_000 + nsec


def _ready_ms() -> float | None:
    """Milliseconds from this process's start to now (its start time in /proc, in clock ticks)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return round((time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000, 1)
    except (OSError, ValueError, IndexError):
        return None


def _write(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def main() -> int:
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_w, b"x"))
    signal.signal(signal.SIGINT, lambda *_: os.write(stop_w, b"x"))
    agent = Agent()
    _write({"event": "hello", "pid": os.getpid(), "kinds": sorted(ARM_KINDS), "ready_ms": _ready_ms()})
    buf = b""
    try:
        while True:
            socks = agent.fds()
            ready, _, _ = select.select([0, stop_r, *socks], [], [], agent.next_timeout())
            if stop_r in ready:
                return 0
            for fd in ready:
                if fd in socks:
                    agent.on_readable(*socks[fd])
            agent.send_due()
            agent.expire()
            if 0 in ready:
                chunk = os.read(0, 65536)
                if not chunk:
                    return 0  # the caller is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req: dict = {}
                    try:
                        req = json.loads(line)
                        answer = agent.handle(req)
                    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
                        _write({"seq": req.get("seq"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
                        continue
                    if answer is None:
                        _write({"seq": req.get("seq"), "ok": True})
                        return 0
                    _write({"seq": req.get("seq"), "ok": True, **answer})
    finally:
        agent.close()


# ---------------------------------------------------------------------------------------------------
# The caller's side
# ---------------------------------------------------------------------------------------------------

class AgentError(RuntimeError):
    """The fault agent could not be started, or refused or failed a request."""


class FaultAgent:
    """The caller's handle on one agent process: start it, send requests, stop it. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0
        self._buf = b""
        self._seq = 0
        self._stderr = None
        self.hello: dict = {}
        self.starts = 0  # how many agent processes this handle has started

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._owner == os.getpid()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if self._owner != os.getpid():
                # A forked child inherited the parent's pipes: it must not talk to the parent's agent.
                self._proc = None
            self._drop()
            self._stderr = tempfile.TemporaryFile()
            from netns.process import start_agent

            self._proc = start_agent("verifier.faults.agent", stderr=self._stderr)
            self._owner = os.getpid()
            self._buf = b""
            self.starts += 1
            _register_atexit()
            hello = self._read_line(START_TIMEOUT, "start")
            if hello.get("event") != "hello":
                raise AgentError(f"the fault agent said {hello!r} instead of hello{self._stderr_tail()}")
            self.hello = hello

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict:
        """Send one request (starting the agent if needed) and return its answer; AgentError if refused."""
        with self._lock:
            self.start()
            self._seq += 1
            seq = self._seq
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps({"op": op, "seq": seq, **fields}) + "\n").encode())
            except BrokenPipeError:
                raise AgentError(f"the fault agent died{self._stderr_tail()}") from None
            while True:
                answer = self._read_line(timeout, op)
                if answer.get("seq") == seq:
                    break  # earlier answers belong to requests that timed out: skip them
            if not answer.get("ok"):
                raise AgentError(f"fault agent refused {op}: {answer.get('error')}")
            return answer

    def _read_line(self, timeout: float, what: str) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._kill()
                raise AgentError(f"the fault agent did not answer {what} within {timeout:g} s{self._stderr_tail()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self._proc.wait()
                raise AgentError(f"the fault agent exited ({self._proc.returncode}) during {what}"
                                 f"{self._stderr_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip()[-500:]
        return f": {tail}" if tail else ""

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _drop(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the agent to quit (it closes every socket) and wait; kill it if it does not."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or self._owner != os.getpid():
                return
            try:
                if proc.poll() is None:
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"op": "quit"}\n')
                    proc.stdin.close()
                    proc.wait(timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
                self._drop()


_agent: FaultAgent | None = None
_agent_lock = threading.Lock()


def agent() -> FaultAgent:
    """This process's fault agent handle; the process itself starts on the first request."""
    global _agent
    with _agent_lock:
        if _agent is None:
            _agent = FaultAgent()
        return _agent


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_at_exit)
        _atexit_registered = True


def _stop_at_exit() -> None:
    if _agent is not None:
        _agent.stop()


if __name__ == "__main__":
    sys.exit(main())
