"""The capture service: a process that records testbed interfaces to pcapng files, several at once.

`verifier.capture.Capture` starts one per Python process (``python -m verifier.capture.agent``),
the first time it is needed, and talks to it with JSON lines on stdin/stdout::

    > {"op": "start", "id": 1, "path": "out.pcapng", "settle_ms": 10, "ring_mib": 8, "count": 0,
       "interfaces": [{"netns": "tv00abc0-client", "ifname": "c0", "label": "client:c0"}]}
    < {"id": 1, "ready": true}
    > {"op": "status", "id": 1}
    < {"id": 1, "written": 7, "dropped": 0, "done": false}
    > {"op": "stop", "id": 1, "comments": {"client:c0": "tcp-verifier client sysctls: ..."}}
    < {"id": 1, "interfaces": [{"label": "client:c0", "written": 7, "received": 7, "dropped": 0,
                                "discarded": 0}], "reordered": 0, "late": 0}

("comments": optional, an opt_comment for an interface's statistics block.)

For each capture it opens one AF_PACKET socket per interface from inside that interface's namespace
(the socket stays bound to the namespace; this process stays where it is), gives it a memory-mapped
TPACKET_V3 receive ring of ``ring_mib`` MiB (as libpcap does: the kernel writes packets into blocks
this process reads in place, with no system call per packet), and answers ``ready`` only once every
socket is bound, so the capture is live before the caller sends any traffic. The rings are read and
written to the file, in timestamp order across interfaces, by compiled code (`verifier.capture.ring`).

With ``count`` > 0, exactly that many packets are written (the first ones, in time order), then the
sockets are closed to traffic; what the rings still held is counted as ``discarded``.

On stop it drains what the rings still hold until they have been quiet for ``settle_ms``, closes each
socket's gate (a drop-all BPF program: from then on the kernel neither queues nor counts a packet for
it), reads the kernel's counters, and keeps taking packets out until every packet the kernel counted
as received and not dropped is out. It writes an Interface Statistics Block per interface with those
counters, so ``received == written + dropped + discarded`` exactly, in the file and in the answer.

Keeping one service per process makes a capture cost a pipe round trip instead of an interpreter
start (about 60 ms). It ends when its stdin closes (its parent is done or died), and with its parent
(PR_SET_PDEATHSIG). On SIGTERM it finishes every capture at once (each file complete, with its
statistics), answers the stops still to come with their results, and then exits. It avoids Scapy,
whose import costs about a second.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

from netns import namespace
from verifier.capture import DEFAULT_RING_MIB, MAX_RING_MIB
from verifier.capture import ring
from verifier.capture.ring import TPACKET_V3, Merger, Ring, ring_request
from verifier.pcap import PcapngWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
LINKTYPE_ETHERNET = 1

# A block holds a veth GSO super-frame (up to 64 KiB) whole; at 100 k packets/s of small frames one
# fills in about its timeout, so an 8 MiB ring (64 blocks) buffers about half a second of them.
BLOCK_SIZE = 1 << 17
BLOCK_TIMEOUT_MS = 8
# A packet is stamped a little before it reaches its ring (in a veth's backlog): an interface with
# nothing in flight vouches only for packets older than this (see verifier.capture.ring).
ORDER_SLACK_NS = 10_000_000
# The settle time waits for frames sent before the stop; under traffic that never pauses it would
# never end, so the gates close after this long whatever comes.
SETTLE_LIMIT_S = 2.0
# After the gates close, how long the last blocks may take to come over (a few block timeouts; far
# more under load). Past it the capture reports the disagreement instead of waiting forever.
DRAIN_DEADLINE_S = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
# Which ring engine this process runs: the compiled module, or its Python source (VERIFIER_PURE=1).
ENGINE = "python" if (ring.__spec__.origin or "").endswith(".py") else "compiled"


def open_socket(netns: str) -> socket.socket:
    """A packet socket of the namespace, not yet bound: protocol 0, so nothing is queued before its
    ring is set and bind() names the interface."""
    with namespace.inside(netns):
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)


def set_ring(sock: socket.socket, ring_bytes: int) -> int:
    """Give the socket a TPACKET_V3 receive ring of `ring_bytes`; returns the number of blocks.

    Through ctypes, so that the GIL is released: setting a ring waits for an RCU grace period (about
    8 ms, in synchronize_net), and the interfaces of a capture set theirs side by side."""
    blocks = max(2, ring_bytes // BLOCK_SIZE)
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    req = ring_request(BLOCK_SIZE, blocks, BLOCK_TIMEOUT_MS)
    if _libc.setsockopt(sock.fileno(), SOL_PACKET, PACKET_RX_RING, req, len(req)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"a receive ring of {blocks * BLOCK_SIZE >> 20} MiB: {os.strerror(err)}")
    return blocks


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def close_gate(sock: socket.socket) -> None:
    """Attach a classic BPF program that accepts nothing ("ret #0").

    From then on the kernel neither queues nor counts packets for this socket, so once the ring is
    drained, the kernel's counters and the packets taken out agree exactly.
    """
    insns = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    prog = _SockFprog(1, insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))


def read_stats(sock: socket.socket) -> tuple[int, int]:
    """(received, dropped) since the last reading: reading PACKET_STATISTICS resets the kernel's
    counters, so callers add up the readings. For a ring (struct tpacket_stats_v3) the kernel counts
    the packets it dropped for want of a free block in both figures."""
    packets, drops, _freezes = struct.unpack("III", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
    return packets, drops


def _labelled(label: str, fn, *args):
    """fn(*args), with the interface named in an OSError it raises."""
    try:
        return fn(*args)
    except OSError as exc:
        raise OSError(exc.errno, f"on {label}: {exc.strerror or exc}") from None


def _parallel(fn, items: list) -> list:
    """fn(item) for each item in a thread of its own (each waits in the kernel with the GIL released);
    the results in order; the first error is raised once all are done."""
    results: list = [None] * len(items)
    errors: list = [None] * len(items)

    def run(i: int) -> None:
        try:
            results[i] = fn(items[i])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, exc in enumerate(errors):
        if exc is not None:
            raise exc
    return results


class Recording:
    """One capture: its sockets and rings, its pcapng writer and its counters."""

    def __init__(self, path: str, interfaces: list[dict], settle_ms: float, *,
                 ring_mib: int = DEFAULT_RING_MIB, count: int = 0):
        if not 1 <= ring_mib <= MAX_RING_MIB:
            raise ValueError(f"a ring size is 1 to {MAX_RING_MIB} MiB, not {ring_mib}")
        self.settle = settle_ms / 1000
        self.labels = [itf["label"] for itf in interfaces]
        self.socks: list[socket.socket] = []
        self.rings: list[Ring] = []
        self.out = None
        self.gated = False
        self.received = [0] * len(interfaces)
        self.dropped = [0] * len(interfaces)
        label = interfaces[0]["label"]
        try:
            for itf in interfaces:
                label = itf["label"]
                self.socks.append(open_socket(itf["netns"]))
            label = None
            blocks = _parallel(lambda i: _labelled(self.labels[i], set_ring, self.socks[i], ring_mib << 20),
                               list(range(len(self.socks))))
            for i, s in enumerate(self.socks):
                self.rings.append(Ring(s.fileno(), BLOCK_SIZE, blocks[i], i))
                # Stamp packets as they arrive (in netif_rx), not as they reach the ring.
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.out = open(path, "wb")
            self.writer = PcapngWriter(self.out)
            for itf in interfaces:
                self.writer.add_interface(itf["label"], linktype=LINKTYPE_ETHERNET,
                                          description=f"{itf['ifname']} in netns {itf['netns']}")
            self.writer.flush()
            self.merger = Merger(self.rings, self.out, limit=count, slack_ns=ORDER_SLACK_NS)
            # Last: from each bind() on, that interface's packets go to its ring.
            for s, itf in zip(self.socks, interfaces):
                label = itf["label"]
                s.bind((itf["ifname"], ETH_P_ALL))
        except OSError as exc:
            opened = self.out is not None
            self.close()
            if opened:
                os.unlink(path)  # a capture that never started leaves no file behind
            what = exc.strerror or str(exc)
            if label and not what.startswith("on "):
                what = f"on {label}: {what}"
            raise OSError(f"cannot capture {what}") from None

    def fds(self) -> list[int]:
        """The sockets worth waiting on: a ring with blocks held back (for another ring to catch up)
        stays readable, so it is left to the timeout instead."""
        return [] if self.merger.holding() else [s.fileno() for s in self.socks]

    def holding(self) -> bool:
        return self.merger.holding()

    def pump(self, final: bool = False) -> int:
        """Move what the rings hold into the file; returns the packets taken out."""
        n = self.merger.pump(time.time_ns(), final)
        if self.merger.full() and not self.gated:
            self._gate()  # --count reached: the kernel stops counting and queueing for us now
        return n

    def _gate(self) -> None:
        for s in self.socks:
            close_gate(s)
        self.gated = True

    def _read_stats(self) -> int:
        new = 0
        for i, s in enumerate(self.socks):
            packets, drops = read_stats(s)
            self.received[i] += packets
            self.dropped[i] += drops
            new += packets
        return new

    def status(self) -> dict:
        self.pump()
        self._read_stats()
        return {"written": self.merger.total, "dropped": sum(self.dropped), "done": self.merger.full()}

    def _blocks(self) -> int:
        return sum(r.blocks for r in self.rings)

    def _outstanding(self) -> int:
        """Packets the kernel counted as queued for us that have not been taken out yet."""
        return sum(rcv - drop - r.consumed for rcv, drop, r in zip(self.received, self.dropped, self.rings))

    def finish(self, comments: dict | None = None) -> dict:
        """Stop: the last packets, then each interface's statistics block (with the comment given
        for its label in `comments`, if any) and the answer."""
        # Frames sent just before the stop may still be on their way through a veth's backlog:
        # keep reading until nothing new has come for the settle time.
        quiet_since = started = time.monotonic()
        seen = self._blocks()
        while (not self.gated and time.monotonic() - quiet_since < self.settle
               and time.monotonic() - started < SETTLE_LIMIT_S):  # traffic that never stops: stop anyway
            select.select(self.fds(), [], [], min(self.settle, ORDER_SLACK_NS / 2e9))
            self.pump()
            if self._blocks() != seen or self.merger.filling():
                seen = self._blocks()
                quiet_since = time.monotonic()
        if not self.gated:
            self._gate()
        # Every packet counted from here on is in a block the kernel fills or has handed over: take
        # them all out, then read the counters again, until a reading adds nothing.
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        self._read_stats()
        while True:
            while self._outstanding() > 0 and time.monotonic() < deadline:
                select.select(self.fds(), [], [], BLOCK_TIMEOUT_MS / 1000)
                self.pump(final=True)
            if self._read_stats() == 0 or time.monotonic() >= deadline:
                break
        self.pump(final=True)
        now = time.time_ns()
        report = []
        for i, r in enumerate(self.rings):
            # Counted by the kernel but never out of the ring (it should not happen): lost all the
            # same, and the file says so (isb_osdrop), so that no reader takes it for complete.
            missing = max(0, self.received[i] - self.dropped[i] - r.consumed)
            self.writer.write_stats(i, now, received=self.received[i], dropped=self.dropped[i],
                                    os_dropped=missing or None, delivered=r.written,
                                    comment=(comments or {}).get(self.labels[i]))
            report.append({"label": self.labels[i], "written": r.written, "received": self.received[i],
                           "dropped": self.dropped[i], "discarded": r.discarded, "missing": missing})
        self.writer.flush()
        self.out.close()
        return {"interfaces": report, "reordered": self.merger.reordered, "late": self.merger.late}

    def close(self) -> None:
        """Unmap the rings and close the sockets. Each close of a packet socket with a ring waits for
        RCU grace periods (about 25 ms, in synchronize_net), so the sockets are closed side by side
        and callers do this off the request path."""
        rings, self.rings = self.rings, []
        socks, self.socks = self.socks, []
        for r in rings:
            r.close()
        if socks:
            _parallel(lambda s: s.close(), socks)
        if self.out is not None and not self.out.closed:
            self.out.close()


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_w, b"x"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the caller, which stops us in order
    recordings: dict[int, Recording] = {}
    finished: dict[int, dict] = {}  # after SIGTERM: the results of the captures it ended, until asked for
    closers: list[threading.Thread] = []
    stopping = False
    stdin = sys.stdin.buffer

    def end(rid: int, comments: dict | None = None) -> dict:
        rec = recordings.pop(rid)
        try:
            return rec.finish(comments)
        finally:
            closer = threading.Thread(target=rec.close, daemon=True)
            closer.start()
            closers[:] = [c for c in closers if c.is_alive()] + [closer]

    while True:
        fds = [fd for rec in recordings.values() for fd in rec.fds()]
        waiting = any(rec.holding() for rec in recordings.values())
        ready, _, _ = select.select([stdin, stop_r, *fds], [], [], ORDER_SLACK_NS / 2e9 if waiting else 0.5)
        if stop_r in ready:
            os.read(stop_r, 64)
        if stop_r in ready and not stopping:
            stopping = True
            for rid in list(recordings):
                try:
                    finished[rid] = end(rid)
                except Exception as exc:  # noqa: BLE001 - reported to whoever asks for it
                    finished[rid] = {"error": str(exc)}
            if not finished:
                break
        for rec in list(recordings.values()):
            rec.pump()
        if stdin not in ready:
            continue
        line = stdin.readline()
        if not line:
            break  # the caller is gone
        req = json.loads(line)
        rid = req.get("id")
        try:
            if req["op"] == "start":
                if stopping:
                    reply({"id": rid, "error": "the capture process is stopping (SIGTERM)", "retiring": True})
                    continue
                rec = Recording(req["path"], req["interfaces"], req.get("settle_ms", 10),
                                ring_mib=req.get("ring_mib", DEFAULT_RING_MIB), count=req.get("count") or 0)
                recordings[rid] = rec
                reply({"id": rid, "ready": True, "engine": ENGINE})
            elif req["op"] == "status":
                if rid in finished:
                    reply({"id": rid, "written": sum(i["written"] for i in finished[rid].get("interfaces", [])),
                           "dropped": sum(i["dropped"] for i in finished[rid].get("interfaces", [])),
                           "done": True, "ended": "SIGTERM"})
                else:
                    reply({"id": rid, **recordings[rid].status()})
            elif req["op"] == "stop":
                if rid in finished:
                    reply({"id": rid, **finished.pop(rid), "ended": "SIGTERM"})
                else:
                    reply({"id": rid, **end(rid, req.get("comments"))})
            else:
                reply({"id": rid, "error": f"unknown op {req['op']!r}"})
        except Exception as exc:  # one bad request must not end the other captures
            reply({"id": rid, "error": str(exc)})
        if stopping and not finished:
            break  # every capture SIGTERM ended has been collected
    for rid in list(recordings):
        try:
            end(rid)
        except Exception:  # noqa: BLE001 - the caller is gone; end the others all the same
            pass
    for closer in closers:
        closer.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
