"""Scripted peers: Scapy plays one side of a TCP connection exactly, packet by packet, while the real
kernel on the other host is observed, as packetdrill does with a real stack and a scripted remote.

    with ScriptedPeer(testbed, side="server", family=family, capture=capture) as peer:
        sock = peer.socket()                        # a real socket on the other host (the client)
        call = sock.connect()                       # connect() runs in the background
        syn = peer.expect("S", seq=0, within=(0, 0.5))
        peer.send("SA", seq=0, ack=1, options=[("MSS", 536)])
        peer.expect("A", seq=1, ack=1, within=(0, 0.2))
        assert call.result() == (0, None)

Sequence numbers in a script are relative, as in packetdrill and in the verifier's ladders: in what
the real kernel sends, `seq` counts from its ISN and `ack` from the peer's; in what the peer sends,
`seq` counts from the peer's ISN and `ack` from the kernel's. By default the peer sends at its
SND.NXT and acknowledges the kernel's RCV.NXT as seen so far.

Timing: `expect(..., within=(lo, hi))` is a window in seconds after the previous step (a packet, a wait, or a call of
the real socket such as send() or close()); a segment the peer sent is timed by the kernel's stamp of
it leaving the peer's host, not by when the send was asked for; `after=GAP`
is a predicted gap checked with a `Tolerance` (the timer model of `verifier.analysis.schedules`).
A failing step raises `ScriptError` (an AssertionError) whose message holds the expected and the
observed packet, the ladder so far and the capture file (kept by the pytest plugin with the failed
test). The peer's host does not answer for the connection itself: `KernelRstDrop` holds back its
kernel's RSTs while the peer lives (the peer's own RSTs pass).
"""

from __future__ import annotations

import errno as errno_mod
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from netns import namespace, packets
from verifier.analysis.schedules import Tolerance
from verifier.faults import KernelRstDrop, inject

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host, Testbed

__all__ = ["ANY", "RealSocket", "ScriptError", "ScriptedPeer"]

MOD = 1 << 32
class _Any:
    """In an `options` pattern: the option must be there, with any value."""

    def __repr__(self) -> str:
        return "ANY"


#: In an `options` pattern: the option must be there, with any value.
ANY = _Any()
DEFAULT_WITHIN = (0.0, 1.0)
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


class ScriptError(AssertionError):
    """A step of a peer's script did not hold: the message says what was expected and what was seen."""


#: Why a kernel packet stamped before the peer's previous step fails the script: it cannot answer it.
BEHIND = ("the peer fell behind the kernel (the packet cannot be an answer to that step, and the script's order "
          "did not hold: this machine ran the peer too slowly for it)")


@dataclass
class Step:
    n: int
    ts_ns: int
    who: str  # "<" kernel to peer, ">" peer to kernel, "real" a socket call, "peer" a wait or note
    text: str


def _rel(value: int, base: int | None) -> int | None:
    return None if base is None else (value - base) % MOD


def _net(pkt):
    """The IP or IPv6 layer of a packet (or frame)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    return pkt.getlayer(IP) or pkt.getlayer(IPv6)


def _opts_text(opts: Sequence) -> str:
    parts = []
    for name, value in opts:
        if name in ("NOP", "EOL"):
            continue
        if name == "Timestamp":
            parts.append(f"TS val {value[0]} ecr {value[1]}")
        elif value in (b"", None, True):
            parts.append(str(name))
        else:
            parts.append(f"{name} {value}")
    return f" <{', '.join(parts)}>" if parts else ""


class ScriptedPeer:
    """One side of a TCP connection played by Scapy from `bed`'s `side` host ("server" or "client"),
    against the real kernel of the other host, over IPv`family`.

    As the server, the peer "listens" on `port` (nothing listens there in the kernel) and learns the
    client's port from its SYN; as the client, it sends from `peer_port` (default: a random port
    from 40000-59999) to the real server's `port`. `isn`: the peer's initial sequence number
    (random by default). `capture`: the capture of the testbed, named in failure reports.
    `within`: the time window of an `expect` that names none (default: up to 1 s after the previous
    step); `tolerance`: the timer model of `expect(after=...)`.
    """

    def __init__(self, bed: "Testbed", *, side: str = "server", family: int = 4, port: int = 5000,
                 peer_port: int | None = None, isn: int | None = None, capture=None,
                 tolerance: Tolerance | None = None, window: int = 64240,
                 within: tuple[float, float] = DEFAULT_WITHIN) -> None:
        if side not in ("server", "client"):
            raise ValueError(f"side is 'server' or 'client', not {side!r}")
        self.bed = bed
        self.side = side
        self.family = family
        self.host: Host = bed.server if side == "server" else bed.client
        self.real_host: Host = bed.client if side == "server" else bed.server
        self.addr = self.host.addr(family)
        self.remote_addr = self.real_host.addr(family)
        if side == "server":
            self.port, self.remote_port = port, None
        else:
            self.port, self.remote_port = peer_port or random.randint(40000, 59999), port
        self.isn = random.getrandbits(32) if isn is None else isn % MOD
        self.remote_isn: int | None = None
        self.snd_nxt = self.isn
        self.rcv_nxt: int | None = None
        self.window = window
        self.capture = capture
        self.tolerance = tolerance or Tolerance()
        self.within = within
        self.steps: list[Step] = []
        self.seen: list = []  # every packet of the connection the kernel sent, in order
        self.t0_ns = 0
        self.last_ns = 0
        self._pending: list = []
        self._own = None  # (sport, dport, seq, flags, step) of the last segment sent, until its copy is seen
        self._listener = None
        self._quiet = None  # the KernelRstDrop's context, while the peer lives
        self._sockets: list[RealSocket] = []
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "ScriptedPeer":
        # Scapy is imported now, before the clock of the script starts, not in the middle of a step.
        import scapy.layers.inet  # noqa: F401
        import scapy.layers.inet6  # noqa: F401
        import scapy.layers.l2  # noqa: F401

        packets.warm()  # the agent's own start-up done too, before the clock of the script starts
        self._quiet = inject(self.host, KernelRstDrop(sport=self.port, src=self.addr))
        self._quiet.__enter__()  # refuses a host that is not part of a live testbed
        try:
            self._listener = self.host.listen(filter=None)
        except BaseException:
            self._quiet.__exit__(None, None, None)
            self._quiet = None
            raise
        self.t0_ns = self.last_ns = self._listener.since_ns
        return self

    def close(self) -> None:
        for s in self._sockets:
            s.close(log=False)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._quiet is not None:
            quiet, self._quiet = self._quiet, None
            quiet.__exit__(None, None, None)

    def __enter__(self) -> "ScriptedPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the ladder ----------------------------------------------------------------------------
    def note(self, who: str, text: str, ts_ns: int | None = None) -> Step:
        with self._lock:
            step = Step(len(self.steps) + 1, ts_ns or time.time_ns(), who, text)
            self.steps.append(step)
        return step

    def ladder(self, mark: int | None = None) -> str:
        head = (f"ladder (peer = {self.side} {self._ep(self.addr, self.port)}, real kernel = {self.real_host.name} "
                f"{self._ep(self.remote_addr, self.remote_port)}; '<' kernel to peer, '>' peer to kernel; seq/ack "
                f"relative to each side's ISN):")
        lines = [head]
        for s in sorted(self.steps, key=lambda s: s.ts_ns):
            arrow = ">>" if s.n == mark else "  "
            lines.append(f"{arrow}{s.n:3d}  +{(s.ts_ns - self.t0_ns) / 1e9:9.6f}  {s.who:<5} {s.text}")
        return "\n".join(lines)

    def _ep(self, addr: str, port: int | None) -> str:
        a = f"[{addr}]" if ":" in addr else addr
        return f"{a}:{port if port is not None else '?'}"

    def describe(self, pkt) -> str:
        """A packet of this connection in the ladder's words (relative seq/ack, options)."""
        from scapy.layers.inet import TCP

        if pkt is None or not pkt.haslayer(TCP):
            return pkt.summary() if pkt is not None else "(nothing)"
        t = pkt[TCP]
        from_kernel = _net(pkt).src == self.remote_addr
        seq = _rel(t.seq, self.remote_isn if from_kernel else self.isn)
        ack = _rel(t.ack, self.isn if from_kernel else self.remote_isn) if "A" in str(t.flags) else None
        n = len(bytes(t.payload))
        return (f"{str(t.flags):<4} seq={seq if seq is not None else t.seq} ack={ack if ack is not None else '-'} "
                f"win={t.window} len={n}{_opts_text(t.options)}")

    def fail(self, what: str, expected: str, observed=None, mark: int | None = None, extra: str = "") -> None:
        lines = [f"scripted peer: {what}", f"  expected: {expected}"]
        if observed is not None:
            lines.append(f"  observed: {observed if isinstance(observed, str) else self.describe(observed)}")
            if not isinstance(observed, str):
                lines.append(f"            {observed.summary()}")
        if extra:
            lines.append(extra)
        lines.append(self.ladder(mark))
        if self.capture is not None:
            lines.append(f"pcap: {self.capture.path}")
        raise ScriptError("\n".join(lines))

    # -- what the kernel sends -------------------------------------------------------------------
    def _ours(self, pkt) -> bool:
        from scapy.layers.inet import TCP

        if pkt.direction != "in" or not pkt.haslayer(TCP):
            return False
        t = pkt[TCP]
        if _net(pkt).src != self.remote_addr or t.dport != self.port:
            return False
        return self.remote_port is None or t.sport == self.remote_port

    def _sent_copy(self, pkt) -> bool:
        """Is `pkt` the copy of the peer's last sent segment, seen leaving the peer's host? Then its
        kernel timestamp, when it really left, replaces the time taken just before the send call
        (the sending process may be held up between the two: a loaded or emulated machine), for the
        step and as the reference of what comes next."""
        from scapy.layers.inet import TCP

        own = self._own
        if own is None or pkt.direction != "out" or not pkt.haslayer(TCP):
            return False
        t = pkt[TCP]
        if (t.sport, t.dport, t.seq, str(t.flags)) != own[:4]:
            return False
        step = own[4]
        self._own = None
        if self.last_ns == step.ts_ns and pkt.ts_ns > step.ts_ns:
            step.ts_ns = self.last_ns = pkt.ts_ns
        return True

    def _next(self, deadline_ns: int | None, window_s: float = 0.0):
        """The next packet of the connection from the kernel (the caller judges its timestamp), or None
        if none had come by the deadline (`deadline_ns`, or None: `window_s` after the previous step,
        which the copy of the peer's own last segment may move; see `_sent_copy`). What arrived is
        read even when this process comes late to read it (a slow import, a loaded machine): the
        kernel's timestamps decide, not when we look."""
        looked_late = False
        while True:
            while self._pending:
                pkt = self._pending.pop(0)
                if self._sent_copy(pkt):
                    continue
                if self._ours(pkt):
                    return pkt
            end = deadline_ns if deadline_ns is not None else self.last_ns + int(window_s * 1e9)
            left = (end - time.time_ns()) / 1e9
            if left <= 0:
                if looked_late:
                    return None
                looked_late, left = True, 0.0
            self._pending = self._listener.next(timeout=left)

    def _push_back(self, pkt) -> None:
        self._pending.insert(0, pkt)

    def _learn(self, pkt) -> None:
        from scapy.layers.inet import TCP

        t = pkt[TCP]
        flags = str(t.flags)
        if "S" in flags and self.remote_isn is None:
            self.remote_isn = t.seq
            self.remote_port = t.sport
        end = (t.seq + len(bytes(t.payload)) + ("S" in flags) + ("F" in flags)) % MOD
        if self.rcv_nxt is None or (end - self.rcv_nxt) % MOD < MOD // 2:
            self.rcv_nxt = end
        self.seen.append(pkt)

    def _window(self, within, after, tolerance) -> tuple[float, float, str]:
        if after is not None:
            lo, hi = (tolerance or self.tolerance).window(after)
            return lo, hi, f"{after:g} s after the previous step (allowed {lo:.3f}-{hi:.3f} s)"
        lo, hi = within if within is not None else self.within
        return lo, hi, f"within {lo:g}-{hi:g} s of the previous step"

    def expect(self, flags: str, *, seq: int | None = None, ack: int | None = None, win: int | None = None,
               options: dict | None = None, payload: bytes | int | None = None,
               within: tuple[float, float] | None = None, after: float | None = None,
               tolerance: Tolerance | None = None, since=None):
        """The kernel's next packet of the connection must have exactly these TCP `flags` (letters, as
        Scapy writes them: "S", "SA", "A", "PA", "R", "RA", "FA"; alternatives as "A|PA"), and the given relative `seq`/`ack`,
        `win`dow, `options` ({name: value}, Scapy's option names: "MSS", "WScale", "SAckOK",
        "Timestamp", "SAck"; value `ANY`: present, None: absent) and `payload` (bytes, or a length),
        arriving in the time window (`within`/`after`; default within 1 s), counted from the previous
        step or from `since` (an earlier packet, with its `ts_ns`). Returns the packet."""
        from scapy.layers.inet import TCP

        lo, hi, when = self._window(within, after, tolerance)
        if since is not None:
            self.last_ns = since.ts_ns if hasattr(since, "ts_ns") else int(since.sent_time * 1e9)
            when = when.replace("the previous step", "the packet given")
        want = self._pattern(flags, seq, ack, win, options, payload)
        step_n = len(self.steps) + 1
        pkt = self._next(None, hi)
        if pkt is None:
            self.fail(f"step {step_n}: nothing came {when}", f"<  {want}", "(nothing)")
        gap = (pkt.ts_ns - self.last_ns) / 1e9
        self._learn(pkt)
        step = self.note("<", self.describe(pkt) + f"   (+{gap:.6f} s)", pkt.ts_ns)
        if gap > hi:
            self.fail(f"step {step.n}: the packet came {gap:.6f} s after the previous step, too late", f"<  {want} "
                      f"{when}", pkt, step.n)
        if gap < 0:
            self.fail(f"step {step.n}: the packet came {-gap:.6f} s before the previous step: {BEHIND}", f"<  {want} "
                      f"{when}", pkt, step.n)
        if gap < lo:
            self.fail(f"step {step.n}: the packet came {gap:.6f} s after the previous step, too early", f"<  {want} "
                      f"{when}", pkt, step.n)
        wrong = self._mismatch(pkt[TCP], flags, seq, ack, win, options, payload)
        if wrong:
            self.fail(f"step {step.n}: the packet differs ({wrong})", f"<  {want} {when}", pkt, step.n)
        self.last_ns = pkt.ts_ns
        return pkt

    def expect_nothing(self, for_s: float) -> None:
        """No packet of the connection may come from the kernel for `for_s` seconds from now (0 if
        `for_s` is negative: only what has come already is looked at)."""
        for_s = max(0.0, for_s)
        start = time.time_ns()
        end = start + int(for_s * 1e9)
        pkt = self._next(end)
        if pkt is not None and pkt.ts_ns > end:
            self._push_back(pkt)  # it belongs to the next step
            pkt = None
        if pkt is not None:
            self._learn(pkt)
            step = self.note("<", self.describe(pkt), pkt.ts_ns)
            if pkt.ts_ns < self.last_ns:
                self.fail(f"step {step.n}: a packet came {(self.last_ns - pkt.ts_ns) / 1e9:.6f} s before the previous "
                          f"step: {BEHIND}", f"nothing for {for_s:g} s", pkt, step.n)
            self.fail(f"step {step.n}: a packet came where none should", f"nothing for {for_s:g} s", pkt, step.n)
        self.last_ns = start + int(for_s * 1e9)
        self.note("peer", f"nothing came for {for_s:g} s", self.last_ns)

    @staticmethod
    def _pattern(flags, seq, ack, win, options, payload) -> str:
        bits = [f"{flags:<4}"]
        for name, v in (("seq", seq), ("ack", ack), ("win", win)):
            if v is not None:
                bits.append(f"{name}={v}")
        if payload is not None:
            bits.append(f"len={payload if isinstance(payload, int) else len(payload)}")
        if options:
            bits.append("<" + ", ".join(f"{k} {'any' if v is ANY else 'absent' if v is None else v}"
                                         for k, v in options.items()) + ">")
        return " ".join(bits)

    def _mismatch(self, t, flags, seq, ack, win, options, payload) -> str:
        wrong = []
        if not any(set(str(t.flags)) == set(alt) for alt in flags.split("|")):
            wrong.append(f"flags {t.flags}, not {' or '.join(flags.split('|'))}")
        if seq is not None and _rel(t.seq, self.remote_isn) != seq % MOD:
            wrong.append(f"seq {_rel(t.seq, self.remote_isn)}, not {seq}")
        if ack is not None and ("A" not in str(t.flags) or _rel(t.ack, self.isn) != ack % MOD):
            wrong.append(f"ack {_rel(t.ack, self.isn)}, not {ack}")
        if win is not None and t.window != win:
            wrong.append(f"window {t.window}, not {win}")
        if options:
            have = {name: value for name, value in t.options}
            for name, value in options.items():
                if value is None and name in have:
                    wrong.append(f"option {name} present")
                elif value is ANY and name not in have:
                    wrong.append(f"option {name} absent")
                elif value not in (None, ANY) and have.get(name) != value:
                    wrong.append(f"option {name} {have.get(name, 'absent')}, not {value}")
        data = bytes(t.payload)
        if payload is not None:
            if isinstance(payload, int) and len(data) != payload:
                wrong.append(f"{len(data)} bytes of payload, not {payload}")
            elif isinstance(payload, bytes) and data != payload:
                wrong.append(f"payload {data[:40]!r}, not {payload[:40]!r}")
        return "; ".join(wrong)

    # -- what the peer sends -------------------------------------------------------------------
    def packet(self, flags: str, *, seq: int | None = None, ack: int | None = None, win: int | None = None,
               options: Sequence = (), payload: bytes = b""):
        """The Scapy packet `send` would send (relative `seq`/`ack`, defaults SND.NXT / RCV.NXT)."""
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6

        if self.remote_port is None:
            raise ValueError("the peer has not seen the client's SYN yet: it does not know its port")
        seq_abs = self.snd_nxt if seq is None else (self.isn + seq) % MOD
        if "A" in flags:
            if ack is None and self.rcv_nxt is None:
                raise ValueError("nothing received yet to acknowledge: give ack=")
            ack_abs = self.rcv_nxt if ack is None else (self.remote_isn + ack) % MOD if self.remote_isn is not None \
                else ack % MOD
        else:
            ack_abs = 0 if ack is None else ((self.remote_isn or 0) + ack) % MOD
        net = (IPv6 if self.family == 6 else IP)(src=self.addr, dst=self.remote_addr)
        return net / TCP(sport=self.port, dport=self.remote_port, flags=flags, seq=seq_abs, ack=ack_abs,
                         window=self.window if win is None else win, options=list(options)) / payload

    def send(self, flags: str, *, seq: int | None = None, ack: int | None = None, win: int | None = None,
             options: Sequence = (), payload: bytes = b""):
        """Send one segment to the kernel (see `packet`); returns it, as sent."""
        return self.send_packet(self.packet(flags, seq=seq, ack=ack, win=win, options=options, payload=payload))

    def send_packet(self, pkt, text: str | None = None):
        """Send any Scapy packet from the peer's host (an ICMP error, a crafted segment); it goes in the ladder."""
        from scapy.layers.inet import TCP

        (sent,) = self.host.send(pkt)
        ts = int(sent.sent_time * 1e9)
        step = self.note(">", text or self.describe(pkt), ts)
        self.last_ns = ts
        if pkt.haslayer(TCP) and pkt[TCP].sport == self.port:
            t = pkt[TCP]
            end = (t.seq + len(bytes(t.payload)) + ("S" in str(t.flags)) + ("F" in str(t.flags))) % MOD
            if (end - self.snd_nxt) % MOD < MOD // 2:
                self.snd_nxt = end
            self._own = (t.sport, t.dport, t.seq, str(t.flags), step)  # until its copy is seen leaving
        return sent

    def icmp_unreachable(self, quoting, code: str = "host", text: str | None = None):
        """Send an ICMP (ICMPv6) destination unreachable from the peer's address to the kernel, quoting
        packet `quoting` (one the kernel sent). `code`: "net", "host", "port" (ICMPv6: no-route,
        address, port)."""
        from scapy.layers.inet import ICMP, IP
        from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

        quoted = bytes(quoting.getlayer(IPv6 if self.family == 6 else IP))
        if self.family == 6:
            c = {"net": 0, "host": 3, "port": 4}[code]
            pkt = IPv6(src=self.addr, dst=self.remote_addr) / ICMPv6DestUnreach(code=c) / quoted[:1232]
        else:
            c = {"net": 0, "host": 1, "port": 3}[code]
            pkt = IP(src=self.addr, dst=self.remote_addr) / ICMP(type=3, code=c) / quoted[:28 + 8]
        return self.send_packet(pkt, text or f"ICMP unreachable ({code}) quoting {self.describe(quoting)}")

    def wait(self, seconds: float) -> None:
        """Let time pass (the next step's window counts from the end of the wait)."""
        time.sleep(seconds)
        self.last_ns = time.time_ns()
        self.note("peer", f"waited {seconds:g} s", self.last_ns)

    # -- the real program on the other host ----------------------------------------------------
    def socket(self) -> "RealSocket":
        """A socket of the real kernel on the other host (in its namespace), whose calls go in the ladder."""
        s = RealSocket(self)
        self._sockets.append(s)
        return s


class Call:
    """A socket call running in the background; `result(timeout)` waits for (return value, errno name)."""

    def __init__(self, sock: "RealSocket", text: str, fn) -> None:
        self.sock, self.text = sock, text
        self.t_enter_ns = time.time_ns()
        self.t_return_ns: int | None = None
        self.value: Any = None
        self.errno: str | None = None
        self._done = threading.Event()
        sock.peer.note("real", f"{text} ...", self.t_enter_ns)
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self.value = fn()
        except OSError as exc:
            self.value = -1
            self.errno = errno_mod.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__
        self.t_return_ns = time.time_ns()
        shown = self.value if not isinstance(self.value, bytes) else f"{len(self.value)} bytes"
        self.sock.peer.note("real", f"{self.text} = {shown}{' ' + self.errno if self.errno else ''}",
                            self.t_return_ns)
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float = 5.0) -> tuple[Any, str | None]:
        if not self._done.wait(timeout):
            self.sock.peer.fail(f"{self.text} did not return within {timeout:g} s", f"{self.text} returns",
                                "(still blocked)")
        return self.value, self.errno


class RealSocket:
    """A TCP socket of the real kernel in the peer's other host. Each call is recorded in the peer's
    ladder with its time; blocking calls (`connect`, `accept`, `recv`) run in the background and
    return a `Call`, the others return (value, errno name)."""

    def __init__(self, peer: ScriptedPeer, sock: socket.socket | None = None) -> None:
        self.peer = peer
        if sock is None:
            with namespace.inside(peer.real_host.netns):
                sock = socket.socket(socket.AF_INET6 if peer.family == 6 else socket.AF_INET, socket.SOCK_STREAM)
        self.sock = sock
        self.closed = False

    def _now(self, text: str, fn) -> tuple[Any, str | None]:
        t = time.time_ns()
        try:
            value, err = fn(), None
        except OSError as exc:
            value, err = -1, errno_mod.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__
        self.peer.note("real", f"{text} = {value if not isinstance(value, bytes) else f'{len(value)} bytes'}"
                               f"{' ' + err if err else ''}", t)
        # The call is a step: what the kernel sends because of it (the data of a send(), the FIN of a
        # close()) is timed from when it was made, not from the step before it.
        self.peer.last_ns = max(self.peer.last_ns, t)
        return value, err

    def connect(self, addr: str | None = None, port: int | None = None) -> Call:
        addr = addr or self.peer.addr
        port = port or self.peer.port
        return Call(self, f"connect({addr}, {port})", lambda: self.sock.connect((addr, port)) or 0)

    def bind(self, port: int, addr: str = "") -> tuple[Any, str | None]:
        return self._now(f"bind({addr or '*'}, {port})", lambda: self.sock.bind((addr, port)) or 0)

    def listen(self, backlog: int = 8) -> tuple[Any, str | None]:
        return self._now(f"listen({backlog})", lambda: self.sock.listen(backlog) or 0)

    def accept(self) -> Call:
        def run():
            conn, _addr = self.sock.accept()
            s = RealSocket(self.peer, conn)
            self.peer._sockets.append(s)
            return s

        return Call(self, "accept()", run)

    def send(self, data: bytes) -> tuple[Any, str | None]:
        return self._now(f"send({len(data)} bytes)", lambda: self.sock.send(data))

    def recv(self, n: int = 65536) -> Call:
        return Call(self, f"recv({n})", lambda: self.sock.recv(n))

    def setsockopt(self, level: int, name: int, value) -> tuple[Any, str | None]:
        return self._now(f"setsockopt({level}, {name}, {value!r})", lambda: self.sock.setsockopt(level, name, value) or 0)

    def error(self) -> str | None:
        """SO_ERROR (read and cleared), as an errno name, or None."""
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        name = errno_mod.errorcode.get(code) if code else None
        self.peer.note("real", f"getsockopt(SO_ERROR) = {name or 0}")
        return name

    def state(self) -> str:
        """The TCP state of the socket (tcp_info), e.g. "SYN_SENT", "ESTABLISHED", "CLOSE"."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        name = TCP_STATES.get(info[0], str(info[0]))
        self.peer.note("real", f"state: {name}")
        return name

    def info(self) -> dict:
        """A few fields of tcp_info: state, retransmits, rto_us, snd_mss, rcv_mss, snd_wscale, rcv_wscale."""
        raw = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        state, _ca, retransmits, _probes, _backoff, _options, wscale = raw[:7]
        rto, _ato, snd_mss, rcv_mss = struct.unpack_from("IIII", raw, 8)
        return {"state": TCP_STATES.get(state, str(state)), "retransmits": retransmits, "rto_us": rto,
                "snd_mss": snd_mss, "rcv_mss": rcv_mss, "snd_wscale": wscale & 0x0F, "rcv_wscale": wscale >> 4}

    def close(self, log: bool = True) -> None:
        """close(). When the peer ends (`log=False`), a call still blocked in the background is ended
        first (shutdown() wakes a connect(), accept() or recv()), so that no thread goes on holding a
        socket of a namespace that is about to go."""
        if not self.closed:
            self.closed = True
            if log:
                self._now("close()", lambda: self.sock.close() or 0)
                return
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected: nothing to wake
            self.sock.close()
