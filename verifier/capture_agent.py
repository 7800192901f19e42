"""The capture process: records chosen testbed interfaces to one pcapng file.

Run by `verifier.capture.Capture` as ``python -m verifier.capture_agent``, with a JSON
configuration on stdin's first line::

    {"path": "out.pcapng", "settle_ms": 20,
     "interfaces": [{"netns": "tv00abc0-client", "ifname": "tv00abc0-c0", "label": "client:c0"}]}

It opens one AF_PACKET socket per interface from inside that interface's namespace (the socket stays
bound to the namespace; this process itself stays where it is), binds it, and only then prints
``ready`` — so the capture is live before the caller sends any traffic. It stops when stdin says
``stop``, when stdin closes (the caller died), or on SIGTERM/SIGINT. It then drains what the sockets
still hold, writes an Interface Statistics Block per interface with the kernel's drop counters,
and prints one JSON line with the counts: `received` is what the kernel counted for the socket,
including the `dropped` packets it could not queue, so `received == written + dropped`.

This process deliberately avoids Scapy: importing Scapy costs about a second, and timestamps and
frames come straight from the kernel (SO_TIMESTAMPNS, nanoseconds, CLOCK_REALTIME).
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
import time

from netns import namespace
from verifier.pcapng import PcapngWriter

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


def main() -> int:
    config = json.loads(sys.stdin.buffer.readline())
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)

    def on_signal(signum, frame):
        os.write(stop_w, b"x")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    socks = []
    try:
        for itf in config["interfaces"]:
            socks.append(open_socket(itf["netns"], itf["ifname"]))
    except OSError as exc:
        print(json.dumps({"error": f"cannot capture on {itf['label']}: {exc}"}), flush=True)
        return 2

    out = open(config["path"], "wb")
    writer = PcapngWriter(out)
    for itf in config["interfaces"]:
        writer.add_interface(itf["label"], linktype=LINKTYPE_ETHERNET,
                             description=f"{itf['ifname']} in netns {itf['netns']}")
    writer.flush()
    totals = [[0, 0] for _ in socks]  # kernel-counted packets, drops
    written = [0 for _ in socks]
    print("ready", flush=True)

    stdin_fd = sys.stdin.fileno()
    watch = [s.fileno() for s in socks] + [stdin_fd, stop_r]
    stopping = False
    while not stopping:
        ready, _, _ = select.select(watch, [], [], 0.5)
        if stop_r in ready:
            stopping = True
        if stdin_fd in ready:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                stopping = True
        batch: list = []
        for i, s in enumerate(socks):
            written[i] += drain(s, i, batch)
        # Interfaces are read one after another; sort each batch so the file is in time order.
        batch.sort(key=lambda rec: rec[0])
        for ts, i, data, orig_len, direction in batch:
            writer.write_packet(i, ts, data, orig_len=orig_len, direction=direction)
        if batch:
            out.flush()

    # Frames sent just before the stop may still be on their way through a veth's backlog:
    # keep draining until every socket has been quiet for settle_ms.
    settle = config.get("settle_ms", 20) / 1000
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        ready, _, _ = select.select([s.fileno() for s in socks], [], [], settle)
        if ready:
            batch = []
            for i, s in enumerate(socks):
                written[i] += drain(s, i, batch)
            batch.sort(key=lambda rec: rec[0])
            for ts, i, data, orig_len, direction in batch:
                writer.write_packet(i, ts, data, orig_len=orig_len, direction=direction)
            quiet_since = time.monotonic()

    batch = []
    for i, s in enumerate(socks):
        close_gate(s)
        written[i] += drain(s, i, batch)
    batch.sort(key=lambda rec: rec[0])
    for ts, i, data, orig_len, direction in batch:
        writer.write_packet(i, ts, data, orig_len=orig_len, direction=direction)

    now = time.time_ns()
    report = {"interfaces": []}
    for i, (s, itf) in enumerate(zip(socks, config["interfaces"])):
        packets, drops = read_stats(s)
        totals[i][0] += packets
        totals[i][1] += drops
        writer.write_stats(i, now, received=totals[i][0], dropped=totals[i][1])
        report["interfaces"].append({"label": itf["label"], "written": written[i], "received": totals[i][0],
                                     "dropped": totals[i][1]})
        s.close()
    writer.flush()
    out.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
