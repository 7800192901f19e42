"""The ICMP fault agent: answers chosen TCP segments in a testbed namespace with forged ICMP errors.

One long-lived agent process serves a whole Python process (each pytest-xdist worker has its own):
importing Scapy costs about a second, so it is paid once, in the agent, and never in the caller.
`agent()` starts it lazily on first use; it is stopped at exit (atexit), dies with its parent
(PR_SET_PDEATHSIG) and also ends when its stdin closes.

Protocol: one JSON object per line on the agent's stdin, one JSON answer per line on its stdout, in
request order, each answer echoing the request's `seq`. First, unasked, the agent prints
``{"event": "hello", "pid": ..., "scapy": "2.8.0", "import_ms": ...}`` once Scapy is loaded.

``{"op": "arm", "id": "f1", "netns": NS, "ifname": IF, "match": {"flags": "syn", "dport": 5000, ...},
   "reply": {"4": {"type": 3, "code": 1, "mtu": null, "src": "192.0.2.1"}, "6": {...}},
   "nth": null, "delay_ms": 0, "max_answers": 64, "lifetime_s": 60}``
    Opens an AF_PACKET socket inside namespace NS, bound to interface IF, and answers ``{"ok": true,
    "armed_ns": ...}`` only once it is bound: every frame after that answer is seen. Each received
    frame that matches (the `verifier.faults.Match` fields) counts as a match; the `nth` match (1-based,
    or every match when null), up to `max_answers`, is answered `delay_ms` after its kernel receive
    timestamp with an ICMP error of the packet's family, built at layer 2: MACs swapped, source
    `reply[family].src`, destination the packet's source, quoting the packet as received (IPv4: as much
    as fits in a 576-byte datagram, RFC 1812; ICMPv6: as much as fits in 1280 bytes, RFC 4443). A family
    missing from `reply` is counted but never answered. After `lifetime_s` the socket is closed.
``{"op": "status", "id": "f1"}`` / ``{"op": "disarm", "id": "f1"}``
    The report so far / the final report (disarm closes the socket and forgets the arm; pending
    answers are cancelled): ``{"matched": n, "sent": m, "matches": [{"t_ns", "family", "src", "sport",
    "dst", "dport", "seq", "flags", "answer": bool}], "sends": [{"t_ns", "due_ns", "match", "type",
    "code", "src", "dst", "quoted_len", "frame_len"}], "cancelled": k, "expired": bool, "errors": []}``.
``{"op": "ping"}``: ``{"pid", "armed": [ids], "open_sockets": n, "started_ns", "import_ms"}``.
``{"op": "quit"}``: closes every socket and exits.
A failed request answers ``{"ok": false, "error": "..."}``.

Scapy's interface and route tables are process-wide and were read in the root namespace (scapy issue
3467), so Scapy never chooses an interface or a route here: the agent opens and binds each socket
itself, inside the target namespace, and uses Scapy only to parse frames and to build the replies.
"""

from __future__ import annotations

import atexit
import heapq
import ipaddress
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

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
ANC = socket.CMSG_SPACE(16)
BUFSIZE = 65536 + 64
IPV4_ERROR_MAX = 576  # RFC 1812 4.3.2.3: quote as much as fits in 576 bytes
IPV6_ERROR_MAX = 1280  # RFC 4443 2.4(c): as much as fits in the minimum IPv6 MTU
DEFAULT_MAX_ANSWERS = 64
DEFAULT_LIFETIME_S = 60.0

START_TIMEOUT = 30.0  # Scapy's import on a loaded 2-core machine
REQUEST_TIMEOUT = 10.0

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


# ---------------------------------------------------------------------------------------------------
# The agent process
# ---------------------------------------------------------------------------------------------------

def _flags_match(want: str | None, flags: int) -> bool:
    """The same flag classes as `verifier.faults.Match` (and its nftables expressions)."""
    if want is None:
        return True
    if want == "syn":
        return flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    if want == "syn-ack":
        return flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    if want == "rst":
        return bool(flags & TCP_RST)
    if want == "fin":
        return bool(flags & TCP_FIN)
    if want == "ack":
        return flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_ACK
    raise ValueError(f"unknown TCP flags match {want!r}")


def _same_addr(a: str | None, b: str) -> bool:
    return a is None or ipaddress.ip_address(a) == ipaddress.ip_address(b)


class _Arm:
    """One armed injector: a bound packet socket and what it has seen and sent."""

    def __init__(self, req: dict) -> None:
        self.id = str(req["id"])
        self.netns = req["netns"]
        self.ifname = req["ifname"]
        self.match = dict(req.get("match") or {})
        _flags_match(self.match.get("flags"), 0)  # refuse an unknown class now, not per frame
        self.reply = {int(f): r for f, r in (req.get("reply") or {}).items()}
        self.nth = req.get("nth")
        self.delay_ns = int(float(req.get("delay_ms") or 0) * 1_000_000)
        self.max_answers = int(req.get("max_answers") or DEFAULT_MAX_ANSWERS)
        self.expires = time.monotonic() + float(req.get("lifetime_s") or DEFAULT_LIFETIME_S)
        self.matches: list[dict] = []
        self.sends: list[dict] = []
        self.answers = 0  # scheduled, whether sent yet or not
        self.cancelled = 0
        self.expired = False
        self.errors: list[str] = []
        self.sock = self._open()

    def _open(self) -> socket.socket:
        from netns import namespace

        with namespace.inside(self.netns):
            # Protocol 0 first, so nothing from other interfaces is queued before bind() narrows it.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.bind((self.ifname, ETH_P_ALL))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def report(self) -> dict:
        return {"id": self.id, "matched": len(self.matches), "sent": len(self.sends), "matches": self.matches,
                "sends": self.sends, "cancelled": self.cancelled, "expired": self.expired, "errors": self.errors}


class Agent:
    """The agent's state: armed injectors, answers waiting for their time, and the request loop."""

    def __init__(self) -> None:
        t0 = time.monotonic()
        # Scapy is imported here and nowhere else: this is the cost the long-lived agent pays once.
        from scapy.layers.inet import ICMP, IP, TCP
        from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw
        import scapy

        self.scapy = {"Ether": Ether, "IP": IP, "TCP": TCP, "ICMP": ICMP, "IPv6": IPv6, "Unreach6": ICMPv6DestUnreach,
                      "TooBig6": ICMPv6PacketTooBig, "Raw": Raw}
        self.scapy_version = scapy.__version__
        self.import_ms = round((time.monotonic() - t0) * 1000, 1)
        self.started_ns = time.time_ns()
        self.arms: dict[str, _Arm] = {}
        self.pending: list[tuple[int, int, str, bytes, dict]] = []  # (due_ns, n, arm id, frame, send record)
        self._n = 0

    # -- frames ------------------------------------------------------------------------------------
    def on_readable(self, arm: _Arm) -> None:
        while arm.sock is not None:
            try:
                data, anc, _flags, addr = arm.sock.recvmsg(BUFSIZE, ANC)
            except BlockingIOError:
                return
            except OSError as exc:  # the interface went away under us
                arm.errors.append(f"receive failed: {exc}")
                arm.close()
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            ts = next((_ts(p) for lvl, kind, p in anc if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS),
                      None) or time.time_ns()
            self.on_frame(arm, data, ts)

    def on_frame(self, arm: _Arm, data: bytes, ts_ns: int) -> None:
        if len(data) < 14 or struct.unpack_from("!H", data, 12)[0] not in (ETH_P_IP, ETH_P_IPV6):
            return  # ARP, neighbour discovery at layer 2 etc.: not ours, and not worth a Scapy parse
        sc = self.scapy
        frame = sc["Ether"](data)
        ip = frame.getlayer(sc["IP"]) or frame.getlayer(sc["IPv6"])
        if ip is None:
            return
        family = 4 if ip.version == 4 else 6
        if family == 4:
            if ip.proto != 6 or ip.frag != 0 or ip.flags.MF:
                return
        elif ip.nh != 6:  # a TCP segment right after the fixed header (no extension headers here)
            return
        tcp = ip.payload
        if not isinstance(tcp, sc["TCP"]):
            return
        raw_ip = bytes(data[14:])
        ip_len = ip.len if family == 4 else 40 + ip.plen
        raw_ip = raw_ip[:ip_len]  # Ethernet padding is not part of the packet
        m = arm.match
        if not (_flags_match(m.get("flags"), int(tcp.flags))
                and m.get("sport") in (None, tcp.sport) and m.get("dport") in (None, tcp.dport)
                and _same_addr(m.get("src"), ip.src) and _same_addr(m.get("dst"), ip.dst)):
            return
        index = len(arm.matches)
        answer = (family in arm.reply and arm.answers < arm.max_answers
                  and (arm.nth is None or index + 1 == int(arm.nth)))
        arm.matches.append({"t_ns": ts_ns, "family": family, "src": ip.src, "sport": tcp.sport, "dst": ip.dst,
                            "dport": tcp.dport, "seq": tcp.seq, "flags": str(tcp.flags), "answer": answer})
        if not answer:
            return
        arm.answers += 1
        spec = arm.reply[family]
        reply = self.build(family, spec, frame, ip, raw_ip)
        record = {"due_ns": ts_ns + arm.delay_ns, "match": index, "type": spec["type"], "code": spec["code"],
                  "src": spec["src"], "dst": ip.src, "quoted_len": len(reply[1]), "frame_len": len(reply[0])}
        self._n += 1
        # Built now, sent at its time: the delay is not stretched by Scapy's building.
        heapq.heappush(self.pending, (record["due_ns"], self._n, arm.id, reply[0], record))

    def build(self, family: int, spec: dict, frame: Any, ip: Any, raw_ip: bytes) -> tuple[bytes, bytes]:
        sc = self.scapy
        eth = sc["Ether"](src=frame.dst, dst=frame.src)
        if family == 4:
            quoted = raw_ip[:IPV4_ERROR_MAX - 20 - 8]
            icmp = sc["ICMP"](type=spec["type"], code=spec["code"])
            if spec["type"] == 3 and spec["code"] == 4:
                icmp.nexthopmtu = int(spec.get("mtu") or 0)
            # TOS: internetwork control, as routers send their errors (RFC 1812 4.3.2.5).
            pkt = eth / sc["IP"](src=spec["src"], dst=ip.src, ttl=64, tos=0xC0) / icmp / sc["Raw"](quoted)
        else:
            quoted = raw_ip[:IPV6_ERROR_MAX - 40 - 8]
            if spec["type"] == 2:
                icmp = sc["TooBig6"](mtu=int(spec.get("mtu") or 1280))
            else:
                icmp = sc["Unreach6"](type=spec["type"], code=spec["code"])
            pkt = eth / sc["IPv6"](src=spec["src"], dst=ip.src, hlim=64) / icmp / sc["Raw"](quoted)
        return bytes(pkt), quoted

    def send_due(self) -> None:
        now = time.time_ns()
        while self.pending and self.pending[0][0] <= now:
            _, _, arm_id, frame, record = heapq.heappop(self.pending)
            arm = self.arms.get(arm_id)
            if arm is None:
                continue
            if arm.sock is None:
                arm.cancelled += 1
                continue
            try:
                arm.sock.send(frame)
            except OSError as exc:
                arm.errors.append(f"send failed: {exc}")
                continue
            record["t_ns"] = time.time_ns()
            arm.sends.append(record)
            now = record["t_ns"]

    def expire(self) -> None:
        now = time.monotonic()
        for arm in self.arms.values():
            if arm.sock is not None and now >= arm.expires:
                arm.expired = True
                arm.close()  # a forgotten arm must not pin the testbed's namespace

    def next_timeout(self) -> float:
        waits = [1.0]
        if self.pending:
            waits.append((self.pending[0][0] - time.time_ns()) / 1e9)
        waits += [a.expires - time.monotonic() for a in self.arms.values() if a.sock is not None]
        return max(0.0, min(waits))

    # -- requests ----------------------------------------------------------------------------------
    def handle(self, req: dict) -> dict | None:
        op = req.get("op")
        if op == "arm":
            arm_id = str(req.get("id"))
            if arm_id in self.arms:
                raise ValueError(f"arm id {arm_id} is already in use")
            arm = _Arm(req)
            self.arms[arm.id] = arm
            return {"armed": arm.id, "armed_ns": time.time_ns()}
        if op in ("status", "disarm"):
            arm = self.arms.get(str(req.get("id")))
            if arm is None:
                raise ValueError(f"no arm with id {req.get('id')!r}")
            if arm.sock is not None:
                self.on_readable(arm)  # frames that arrived before this request count
            self.send_due()
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
                    "open_sockets": sum(a.sock is not None for a in self.arms.values()),
                    "started_ns": self.started_ns, "import_ms": self.import_ms}
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


def _write(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def main() -> int:
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_w, b"x"))
    signal.signal(signal.SIGINT, lambda *_: os.write(stop_w, b"x"))
    agent = Agent()
    _write({"event": "hello", "pid": os.getpid(), "scapy": agent.scapy_version, "import_ms": agent.import_ms})
    buf = b""
    try:
        while True:
            socks = {a.sock.fileno(): a for a in agent.arms.values() if a.sock is not None}
            ready, _, _ = select.select([0, stop_r, *socks], [], [], agent.next_timeout())
            if stop_r in ready:
                return 0
            for fd in ready:
                if fd in socks:
                    agent.on_readable(socks[fd])
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
            from netns import namespace

            self._proc = subprocess.Popen(
                [sys.executable, "-m", "verifier.fault_agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0, close_fds=True,
                # PR_SET_PDEATHSIG fires when the *thread* that forked it ends; the stdin EOF check in
                # the agent covers a caller that started it from a short-lived thread and lives on.
                preexec_fn=lambda: namespace._libc.prctl(1, signal.SIGKILL),
            )
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
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._kill()
                raise AgentError(f"the fault agent did not answer {what} within {timeout} s{self._stderr_tail()}")
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
