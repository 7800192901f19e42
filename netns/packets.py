"""Scapy packets sent and received from a testbed host, inside its namespace: `Host.send`, `Host.sr`,
`Host.sr1`, `Host.sniff` and `Host.listen` are these functions.

    ans = bed.client.sr1(IP(dst=bed.server.addr(4)) / TCP(dport=5000, flags="S"), timeout=3)

Layer-3 packets (`IP()/...`, `IPv6()/...`) are routed by the host's own kernel (its route table and
neighbours); layer-2 frames (`Ether()/...`) go out of the interface toward their IP destination
(or `iface=`). What Scapy would fill in from its process-wide tables, read in the caller's namespace
(scapy issue 3467) — the IP source address, Ether's source and destination — is filled in from the
host's kernel before the packet is built, so a packet never takes an address of the machine the
test runs on. The work is done by one agent process per Python process (`netns.packet_agent`),
started on first use, which keeps each call to a round trip of a fraction of a millisecond plus
the network's own time.

Answers and sniffed packets carry Scapy's `time` (seconds, the kernel's receive timestamp) and
`sniffed_on` (the interface), plus `ts_ns` (the same timestamp in integer nanoseconds) and
`direction` ("in" or "out" of that interface). Sent packets get `sent_time`.

A packet sent without a source address gets the one the host's kernel chooses for its destination,
and its checksums are computed again for it: to send a deliberately wrong checksum, give `src` too.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import select
import subprocess
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Iterable

from netns.packet_agent import MARK, frame, read_frame
from netns.process import start_agent
from netns.waiting import scaled

if TYPE_CHECKING:  # pragma: no cover
    from netns.host import Host

__all__ = ["MARK", "PacketAgentError", "Listener", "send", "sr", "sr1", "sniff", "listen", "agent", "warm"]

START_TIMEOUT = 30.0
REQUEST_SLACK_S = 10.0  # beyond a request's own timeout


class PacketAgentError(RuntimeError):
    """The packet agent could not be started, or failed a request (its message says why)."""


class PacketAgent:
    """The caller's handle on the agent process. Thread-safe; requests may run concurrently."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0
        self._seq = itertools.count(1)
        self._waiting: dict[int, list] = {}  # seq -> [event, answer]
        self._reader: threading.Thread | None = None
        self._stderr = None
        self._dead: str | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._owner == os.getpid():
            return
        self._stderr = tempfile.TemporaryFile()
        self._proc = start_agent("netns.packet_agent", stderr=self._stderr)
        self._owner = os.getpid()
        self._dead = None
        self.starts += 1
        _register_atexit()
        fd = self._proc.stdout.fileno()
        if not select.select([fd], [], [], scaled(START_TIMEOUT))[0]:
            self._proc.kill()
            raise PacketAgentError(f"the packet agent did not start within {scaled(START_TIMEOUT):g} s{self._tail()}")
        hello = read_frame(fd)
        if not hello or hello.get("event") != "hello":
            raise PacketAgentError(f"the packet agent said {hello!r} instead of hello{self._tail()}")
        self._reader = threading.Thread(target=self._read_answers, args=(self._proc, fd), daemon=True,
                                        name="packet-agent-reader")
        self._reader.start()

    def _read_answers(self, proc: subprocess.Popen, fd: int) -> None:
        while True:
            try:
                answer = read_frame(fd)
            except (OSError, pickle.UnpicklingError, EOFError):
                answer = None
            if answer is None:
                break
            slot = self._waiting.pop(answer.get("seq"), None)
            if slot is not None:
                slot[1] = answer
                slot[0].set()
        self._dead = f"the packet agent exited ({proc.poll()}){self._tail()}"
        for slot in list(self._waiting.values()):
            slot[0].set()

    def _tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip()[-500:]
        except (OSError, ValueError):
            return ""
        return f": {tail}" if tail else ""

    def request(self, op: str, *, wait: float | None = 0.0, **fields: Any) -> dict:
        """One request; its answer's fields. `wait`: how long the request itself may take (None: no
        bound, for a sniff that waits for a count)."""
        with self._lock:
            self._start()
            proc = self._proc
        seq = next(self._seq)
        slot = [threading.Event(), None]
        self._waiting[seq] = slot
        data = frame({"op": op, "seq": seq, **fields})
        try:
            with self._write_lock:
                assert proc is not None and proc.stdin is not None
                proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._waiting.pop(seq, None)
            raise PacketAgentError(f"the packet agent is gone{self._tail()}") from None
        if not slot[0].wait(None if wait is None else wait + scaled(REQUEST_SLACK_S)):
            self._waiting.pop(seq, None)
            raise PacketAgentError(f"the packet agent did not answer {op} within {wait + scaled(REQUEST_SLACK_S):g} s")
        answer = slot[1]
        if answer is None:
            raise PacketAgentError(self._dead or "the packet agent is gone")
        if not answer.get("ok"):
            raise PacketAgentError(f"{op}: {answer.get('error')}")
        return answer

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        try:
            if proc.poll() is None:
                proc.stdin.write(frame({"op": "quit"}))
                proc.stdin.close()
                proc.wait(5)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_agent: PacketAgent | None = None
_agent_lock = threading.Lock()
_atexit_done = False


def agent() -> PacketAgent:
    """This process's packet agent (started on the first request)."""
    global _agent
    with _agent_lock:
        if _agent is None:
            _agent = PacketAgent()
        return _agent


def warm() -> None:
    """Have this process's packet agent finish its start-up (Scapy's import) now. A timed script (a
    scripted peer) calls it before its clock starts: a request the agent serves while that import
    still runs waits for it, tens of milliseconds here and about a second in an emulated guest."""
    agent().request("warm", wait=scaled(START_TIMEOUT))


def forget(netns_names: list[str]) -> None:
    """Close what the agent still holds in these namespaces (listening sessions), so that nothing
    keeps them alive once their testbed is down. Does nothing if the agent never started."""
    if _agent is None or _agent.pid is None or _agent._owner != os.getpid():
        return
    try:
        _agent.request("forget", netns=list(netns_names))
    except PacketAgentError:
        pass


def _register_atexit() -> None:
    global _atexit_done
    if not _atexit_done:
        atexit.register(lambda: _agent is not None and _agent.stop())
        _atexit_done = True


# ---------------------------------------------------------------------------------------------------
# Packets: what Scapy would fill in from the wrong namespace, filled in from the host's
# ---------------------------------------------------------------------------------------------------

def _layers():
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    return IP, IPv6, Ether


def _expand(pkts) -> list:
    from scapy.packet import Packet

    if isinstance(pkts, Packet):
        pkts = [pkts]
    out = []
    for p in pkts:
        if not isinstance(p, Packet):
            raise TypeError(f"not a Scapy packet: {p!r}")
        # A packet with lists or ranges of values stands for several, as in Scapy. Iterated, never
        # measured: len() would build it here, and Scapy would look its missing addresses up in this
        # process's namespace (and could send an ARP request there to do so).
        for one in p:
            out.append(one)
    return out


def _prepare(host: "Host", pkt, iface: str | None) -> tuple[tuple, Any]:
    """(the frame as the agent takes it, the packet as sent) for one concrete packet."""
    IP, IPv6, Ether = _layers()
    if isinstance(pkt, Ether):
        net = pkt.payload if isinstance(pkt.payload, (IP, IPv6)) else None
        if "dst" not in pkt.fields or "src" not in pkt.fields or (net is not None and "src" not in net.fields):
            if net is None:
                raise ValueError("an Ether frame without IP/IPv6 inside needs its src and dst MACs set (and "
                                 "iface= for a host with several interfaces)")
            pkt = pkt.copy()
            net = pkt.payload
            info = agent().request("l2", netns=host.netns, dst=net.dst, family=6 if isinstance(net, IPv6) else 4,
                                   iface=iface, wait=1.0)
            pkt.fields.setdefault("src", info["src_mac"])
            pkt.fields.setdefault("dst", info["dst_mac"])
            if "src" not in net.fields:
                net.src = info["src"] or _src(host, net)
            iface = iface or info["iface"]
        if iface is None:
            if len(host.interfaces) != 1:
                raise ValueError(f"host {host.name} has several interfaces: say which with iface=")
            iface = host.interfaces[0].name
        return ("l2", bytes(pkt), iface, None, False), pkt
    if isinstance(pkt, (IP, IPv6)):
        fill = "src" not in pkt.fields
        if fill:
            # A placeholder, so that Scapy does not look the source up in this process's tables; the
            # agent puts in the one the host's kernel chooses and computes the checksums again.
            pkt = pkt.copy()
            pkt.src = "::" if isinstance(pkt, IPv6) else "0.0.0.0"
        kind = "l3v6" if isinstance(pkt, IPv6) else "l3v4"
        return (kind, bytes(pkt), None, pkt.dst, fill), pkt
    raise ValueError(f"{pkt.summary()}: send IP()/..., IPv6()/... or Ether()/... packets")


def _src(host: "Host", net) -> str:
    _, IPv6, _ = _layers()
    return agent().request("src", netns=host.netns, dst=net.dst, family=6 if isinstance(net, IPv6) else 4)["src"]


def _frames(host: "Host", pkts, iface: str | None) -> tuple[list, list, list]:
    """(frames as the agent takes them, the packets, indices of those whose source the agent fills in)."""
    frames, sent, fill = [], [], []
    for i, p in enumerate(_expand(pkts)):
        (*frame, fill_src), ready = _prepare(host, p, iface)
        frames.append(tuple(frame))
        sent.append(ready)
        if fill_src:
            fill.append(i)
    return frames, sent, fill


def _sent(sent: list, answer: dict) -> None:
    """Stamp the packets as the agent sent them: `sent_time`, and the source it filled in."""
    for i, src in answer.get("srcs", {}).items():
        sent[i].src = src
        for layer in (sent[i], *sent[i].iterpayloads()):
            for name in ("chksum", "cksum"):
                if name in layer.fields:
                    delattr(layer, name)
    for p, t in zip(sent, answer["sent_ns"]):
        p.sent_time = t / 1e9


def _received(frame: tuple, layer3: bool):
    """A Scapy packet from the agent's (bytes, ts_ns, ifname, direction), stamped."""
    from scapy.layers.l2 import Ether

    data, ts_ns, ifname, direction = frame
    pkt = Ether(data)
    if layer3:
        pkt = pkt.payload
        pkt.underlayer = None
    _stamp(pkt, ts_ns, ifname, direction)
    return pkt


def _stamp(pkt, ts_ns: int, ifname: str | None, direction: str | None) -> None:
    from scapy.utils import EDecimal

    pkt.time = EDecimal(ts_ns) / 1_000_000_000
    pkt.ts_ns = ts_ns
    pkt.sniffed_on = ifname
    pkt.direction = direction


def send(host: "Host", pkts, *, inter: float = 0.0, iface: str | None = None) -> list:
    """Send one packet or several from `host`; returns them as sent (with `sent_time`)."""
    frames, sent, fill = _frames(host, pkts, iface)
    answer = agent().request("send", netns=host.netns, frames=frames, fill_src=fill, inter=inter,
                             wait=inter * len(frames))
    _sent(sent, answer)
    return sent


def sr(host: "Host", pkts, *, timeout: float = 2.0, inter: float = 0.0, multi: bool = False,
       iface: str | None = None):
    """Send packets from `host` and collect their answers, as Scapy's `sr`/`srp`: returns
    `(answered, unanswered)`, a `SndRcvList` of (sent, answer) pairs and a `PacketList`. An answer to
    a layer-3 packet is given from its IP layer, to a frame from its Ether layer. It returns once
    every packet is answered (`multi=True`: waits the whole `timeout` and keeps every answer)."""
    from scapy.plist import PacketList, QueryAnswer, SndRcvList

    frames, sent, fill = _frames(host, pkts, iface)
    answer = agent().request("sr", netns=host.netns, frames=frames, fill_src=fill, timeout=timeout, inter=inter,
                             multi=multi,
                             iface=iface if any(f[0] == "l2" for f in frames) else None,
                             wait=timeout + inter * len(frames))
    _sent(sent, answer)
    pairs, got = [], set()
    for i, frame in answer["answers"]:
        pairs.append(QueryAnswer(sent[i], _received(frame, frames[i][0] != "l2")))
        got.add(i)
    return SndRcvList(pairs), PacketList([p for i, p in enumerate(sent) if i not in got], "Unanswered")


def sr1(host: "Host", pkt, *, timeout: float = 2.0, iface: str | None = None):
    """Send one packet from `host`; its first answer (a Scapy packet), or None after `timeout`."""
    ans, _ = sr(host, pkt, timeout=timeout, iface=iface)
    return ans[0][1] if ans else None


def _bpf(filter: str | None, linktype: int = 1) -> bytes | None:
    """The instructions of a BPF program compiled by libpcap (the agent attaches them)."""
    if filter is None:
        return None
    import ctypes

    from scapy.arch.common import compile_filter

    prog = compile_filter(filter, linktype=linktype)
    insns = ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
    return insns


def sniff(host: "Host", *, count: int = 0, timeout: float | None = None, filter: str | None = None,
          iface: str | None = None):
    """Packets seen on `host`'s interfaces (or `iface`), in both directions, as a Scapy `PacketList`:
    until `count` packets or `timeout` seconds (one of them is needed); `filter` is a tcpdump/BPF
    expression (libpcap). Sniffing starts when the call does: to sniff while sending, use `listen`."""
    from scapy.plist import PacketList

    if not count and timeout is None:
        raise ValueError("sniff needs count= or timeout= (or both), or it would never return")
    answer = agent().request("sniff", netns=host.netns, count=count, timeout=timeout or 0.0, iface=iface,
                             bpf=_bpf(filter), sniff_timeout=timeout, wait=timeout)
    return PacketList([_received(f, False) for f in answer["frames"]], "Sniffed")


class Listener:
    """Packets arriving at (and leaving) a host from the moment `listen()` returns, taken out as they
    come: `next(timeout)` gives the frames received since the last call (waiting up to `timeout` for
    the first). A socket in the host's namespace, held by the agent until `close()` (or its lifetime)."""

    def __init__(self, host: "Host", iface: str | None, filter: str | None, lifetime_s: float) -> None:
        self.host = host
        answer = agent().request("listen", netns=host.netns, iface=iface, bpf=_bpf(filter), lifetime_s=lifetime_s)
        self.id = answer["id"]
        self.since_ns = answer["listening_ns"]
        self.closed = False

    def next(self, timeout: float = 0.0) -> list:
        answer = agent().request("next", id=self.id, timeout=timeout, wait=timeout)
        return [_received(f, False) for f in answer["frames"]]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                agent().request("unlisten", id=self.id)
            except PacketAgentError:
                pass

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def listen(host: "Host", *, iface: str | None = None, filter: str | None = None,
           lifetime_s: float = 300.0) -> Listener:
    """Start receiving `host`'s packets now (see `Listener`)."""
    return Listener(host, iface, filter, lifetime_s)
