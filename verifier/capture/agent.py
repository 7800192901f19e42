"""The capture service: a process that records testbed interfaces to pcapng files, several at once.

`verifier.capture.Capture` starts one per Python process (``python -m verifier.capture.agent``),
the first time it is needed, and talks to it with JSON lines on stdin/stdout::

    > {"op": "start", "id": 1, "path": "out.pcapng", "settle_ms": 10,
       "interfaces": [{"netns": "tv00abc0-client", "ifname": "tv00abc0-c0", "label": "client:c0"}]}
    < {"id": 1, "ready": true}
    > {"op": "stop", "id": 1}
    < {"id": 1, "interfaces": [{"label": "client:c0", "written": 7, "received": 7, "dropped": 0}]}

For each capture it opens one AF_PACKET socket per interface from inside that interface's namespace
(the socket stays bound to the namespace; this process stays where it is) and answers ``ready`` only
once every socket is bound, so the capture is live before the caller sends any traffic. On stop it
drains what the sockets still hold until they have been quiet for ``settle_ms``, closes each socket's
gate (a drop-all BPF program), drains once more, and writes an Interface Statistics Block per
interface with the kernel's counters: ``received`` is what the kernel counted for the socket,
including the ``dropped`` packets it could not queue, so ``received == written + dropped``.

Keeping one service per process makes a capture cost a pipe round trip instead of an interpreter
start (about 60 ms). It ends when its stdin closes (its parent is done or died), on SIGTERM, and with
its parent (PR_SET_PDEATHSIG). It deliberately avoids Scapy, whose import costs about a second:
timestamps and frames come straight from the kernel (SO_TIMESTAMPNS, nanoseconds, CLOCK_REALTIME).
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
from verifier.pcap import PcapngWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
LINKTYPE_ETHERNET = 1
BUFSIZE = 262144  # veth hands GSO super-frames of up to 64 KiB to packet sockets
ANC = socket.CMSG_SPACE(16)


def open_socket(netns: str, ifname: str) -> socket.socket:
    with namespace.inside(netns):
        # Protocol 0 first, so nothing is queued from other interfaces before bind() narrows it.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def close_gate(sock: socket.socket) -> None:
    """Attach a classic BPF program that accepts nothing ("ret #0").

    From then on the kernel neither queues nor counts packets for this socket, so once the queue is
    drained, the kernel's counters and the packets written agree exactly.
    """
    insns = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    prog = _SockFprog(1, insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))


def read_stats(sock: socket.socket) -> tuple[int, int]:
    # Reading PACKET_STATISTICS resets the kernel's counters, so callers add up the readings.
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def drain(sock: socket.socket, iface_id: int, batch: list) -> int:
    n = 0
    while True:
        try:
            data, anc, flags, addr = sock.recvmsg(BUFSIZE, ANC, socket.MSG_TRUNC)
        except BlockingIOError:
            return n
        ts = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", payload[:16])
                ts = sec * 1_000_000_000 + nsec
        if ts is None:
            ts = time.time_ns()
        direction = "out" if addr[2] == PACKET_OUTGOING else "in"
        orig_len = len(data)
        if flags & socket.MSG_TRUNC:  # pragma: no cover - BUFSIZE exceeds any veth frame
            orig_len = BUFSIZE
        batch.append((ts, iface_id, data, orig_len, direction))
        n += 1


class Recording:
    """One capture: its sockets, its pcapng writer and its counters."""

    def __init__(self, path: str, interfaces: list[dict], settle_ms: float):
        self.settle = settle_ms / 1000
        self.labels = [itf["label"] for itf in interfaces]
        self.socks: list[socket.socket] = []
        try:
            for itf in interfaces:
                self.socks.append(open_socket(itf["netns"], itf["ifname"]))
        except OSError as exc:
            self.close()
            raise OSError(f"cannot capture on {itf['label']}: {exc.strerror or exc}") from None
        self.out = open(path, "wb")
        self.writer = PcapngWriter(self.out)
        for itf in interfaces:
            self.writer.add_interface(itf["label"], linktype=LINKTYPE_ETHERNET,
                                      description=f"{itf['ifname']} in netns {itf['netns']}")
        self.writer.flush()
        self.written = [0] * len(self.socks)

    def pump(self) -> int:
        """Move what the sockets hold into the file, in time order; returns the packet count."""
        batch: list = []
        for i, s in enumerate(self.socks):
            self.written[i] += drain(s, i, batch)
        # Interfaces are read one after another; sort each batch so the file is in time order.
        batch.sort(key=lambda rec: rec[0])
        for ts, i, data, orig_len, direction in batch:
            self.writer.write_packet(i, ts, data, orig_len=orig_len, direction=direction)
        if batch:
            self.out.flush()
        return len(batch)

    def finish(self) -> dict:
        # Frames sent just before the stop may still be on their way through a veth's backlog:
        # keep draining until every socket has been quiet for the settle time.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < self.settle:
            ready, _, _ = select.select(self.socks, [], [], self.settle)
            if ready and self.pump():
                quiet_since = time.monotonic()
        for s in self.socks:
            close_gate(s)
        self.pump()
        now = time.time_ns()
        report = []
        for i, s in enumerate(self.socks):
            packets, drops = read_stats(s)
            self.writer.write_stats(i, now, received=packets, dropped=drops)
            report.append({"label": self.labels[i], "written": self.written[i], "received": packets,
                           "dropped": drops})
        self.writer.flush()
        self.out.close()
        return {"interfaces": report}

    def close(self) -> None:
        """Close the sockets. Each close of a packet socket waits for an RCU grace period (about
        10 ms, in synchronize_net), so callers do this off the request path."""
        socks, self.socks = self.socks, []
        for s in socks:
            s.close()
        if getattr(self, "out", None) is not None and not self.out.closed:
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
    owner: dict[int, Recording] = {}  # socket fd -> recording
    closers: list[threading.Thread] = []
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin, stop_r, *owner], [], [], 0.5)
        if stop_r in ready:
            break
        busy = {owner[fd] for fd in ready if fd in owner}
        for rec in busy:
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
                rec = Recording(req["path"], req["interfaces"], req.get("settle_ms", 10))
                recordings[rid] = rec
                owner.update({s.fileno(): rec for s in rec.socks})
                reply({"id": rid, "ready": True})
            elif req["op"] == "status":
                rec = recordings[rid]
                rec.pump()
                reply({"id": rid, "written": sum(rec.written)})
            elif req["op"] == "stop":
                rec = recordings.pop(rid)
                for s in rec.socks:
                    owner.pop(s.fileno(), None)
                reply({"id": rid, **rec.finish()})
                closer = threading.Thread(target=rec.close, daemon=True)
                closer.start()
                closers = [c for c in closers if c.is_alive()] + [closer]
            else:
                reply({"id": rid, "error": f"unknown op {req['op']!r}"})
        except Exception as exc:  # one bad request must not end the other captures
            reply({"id": rid, "error": str(exc)})
    for rec in recordings.values():
        rec.finish()
        rec.close()
    for closer in closers:
        closer.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
