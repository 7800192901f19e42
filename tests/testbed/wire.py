"""Helpers shared by the fault tests (test_faults.py, test_icmp_fault.py) to look at what a fault did
on the wire and what it left running: the raw frames of a capture, the IP packet in a frame, checksum
and ICMP error checks (with `verifier.wire.encode`), a SYN started from inside a host, timings
against the project's tolerance model, the fault agent's processes and packet sockets, and the
children and output pipes of the processes a test starts.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

from netns import namespace
from verifier.analysis.schedules import Tolerance
from verifier.pcap import read_packets
from verifier.wire import encode


# -- packets ------------------------------------------------------------------------------------

def frames(path) -> dict[int, bytes]:
    """The captured frames of a capture file, by packet index."""
    return {raw.index: raw.data for raw in read_packets(path)}


def ip_packet(frame: bytes) -> bytes:
    """The IP packet inside an Ethernet frame, without link-layer padding."""
    ip = frame[14:]
    length = struct.unpack_from("!H", ip, 2)[0] if ip[0] >> 4 == 4 else 40 + struct.unpack_from("!H", ip, 4)[0]
    return ip[:length]


def _addresses(ip: bytes) -> tuple[bytes, bytes, bytes]:
    """(source, destination, payload) of an IPv4/IPv6 packet (no IPv6 extension headers)."""
    if ip[0] >> 4 == 4:
        return ip[12:16], ip[16:20], ip[(ip[0] & 0xF) * 4:]
    return ip[8:24], ip[24:40], ip[40:]


def tcp_checksum_ok(ip: bytes) -> bool:
    """The TCP checksum of an IPv4/IPv6 packet carrying TCP (no extension headers) is right."""
    src, dst, seg = _addresses(ip)
    return encode.transport_checksum(src, dst, encode.IPPROTO_TCP, seg) == 0


def icmp_message(ip: bytes) -> tuple[int, int, bytes, bytes]:
    """(type, code, whole ICMP message, quoted packet) of an ICMP/ICMPv6 error; checksum verified."""
    src, dst, msg = _addresses(ip)
    if ip[0] >> 4 == 4:
        assert encode.internet_checksum(msg) == 0, "bad ICMP checksum"
    else:
        assert encode.transport_checksum(src, dst, encode.IPPROTO_ICMPV6, msg) == 0, "bad ICMPv6 checksum"
    return msg[0], msg[1], msg, msg[8:]


# -- timing -------------------------------------------------------------------------------------

#: How late the fault agent may act beyond its schedule (an ICMP error after its delay, a delayed
#: packet after its delay). It builds what it sends when the packet arrives and then only waits in
#: select() for the due time (an hrtimer, 50 µs of slack), so what is left is the wake-up latency of a
#: process on a busy 2-core machine (pytest-xdist, captures): a constant, not a share of the delay.
#: The agent is never early (it waits from the packet's own kernel timestamp, the one the capture
#: records): the tests check that separately, with `never_early`.
AGENT_TOLERANCE = Tolerance(absolute_s=0.020, fraction=0.0)


def assert_on_time(gap_ns: int, predicted_ns: int, tolerance: Tolerance, what: str, *, never_early: bool = False,
                   story: str = "") -> None:
    """An observed interval against the predicted one, within `tolerance` (the project's model, as for
    SYN schedules: late by at most max(absolute, fraction of the prediction), early by at most
    absolute); `never_early`: not early at all."""
    deviation_s = (gap_ns - predicted_ns) / 1e9
    ok = tolerance.accepts(deviation_s, predicted_ns / 1e9) and not (never_early and deviation_s < 0)
    allowed = f"up to {tolerance.allowed(predicted_ns / 1e9) * 1e3:.1f} ms late, " + \
        ("never early" if never_early else f"as the model says early ({tolerance.describe()})")
    assert ok, (f"{what}: {gap_ns / 1e6:.3f} ms, predicted {predicted_ns / 1e6:.3f} ms, deviation "
                f"{deviation_s * 1e3:+.3f} ms; allowed: {allowed}" + story)


def syn_from(host, family: int, dst: str, port: int) -> socket.socket:
    """Start a connect() from inside `host` without waiting for it: one SYN leaves at once."""
    with namespace.inside(host.netns):
        s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((dst, port))
    assert err == errno.EINPROGRESS, os.strerror(err)
    return s


# -- what the fault agent holds -----------------------------------------------------------------

def agent_children() -> list[int]:
    """Processes running the fault agent whose parent is this process (other xdist workers have theirs)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and b"verifier.faults.agent" in cmd:
            found.append(int(entry.name))
    return found


def packet_socket_inodes(host) -> set[int]:
    """Inodes of the packet sockets open in the host's namespace (/proc/net/packet of that namespace)."""
    with namespace.inside(host.netns):
        with open("/proc/thread-self/net/packet") as f:
            next(f)
            return {int(line.split()[-1]) for line in f if line.strip()}


def socket_inodes_of(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` has open."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


# -- processes the tests start ------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The child processes of `pid` (every thread's), from /proc."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def read_until(stream, text: str, timeout: float = 30) -> str:
    """Read an unbuffered pipe until `text` appears (bounded by `timeout`); returns what was read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 65536) if ready else b""
        assert chunk, f"no {text!r} in time; got {seen!r}"
        seen += chunk
    return seen.decode()
