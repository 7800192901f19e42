"""Helpers shared by the fault tests (test_faults.py, test_icmp_fault.py) to look at what a fault did
on the wire and what it left running: the raw frames of a capture, the IP packet in a frame, checksum
and ICMP error checks (with `verifier.wire.internet_checksum`), a SYN started from inside a host,
and the fault agent's processes and packet sockets.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from netns import namespace
from verifier.wire import internet_checksum
from verifier.pcap import read_packets


# -- packets ------------------------------------------------------------------------------------

def frames(path) -> dict[int, bytes]:
    """The captured frames of a capture file, by packet index."""
    return {raw.index: raw.data for raw in read_packets(path)}


def ip_packet(frame: bytes) -> bytes:
    """The IP packet inside an Ethernet frame, without link-layer padding."""
    ip = frame[14:]
    length = struct.unpack_from("!H", ip, 2)[0] if ip[0] >> 4 == 4 else 40 + struct.unpack_from("!H", ip, 4)[0]
    return ip[:length]


def tcp_checksum_ok(ip: bytes) -> bool:
    """The TCP checksum of an IPv4/IPv6 packet carrying TCP (no extension headers) is right."""
    if ip[0] >> 4 == 4:
        hl = (ip[0] & 0xF) * 4
        seg = ip[hl:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    else:
        seg = ip[40:]
        pseudo = ip[8:40] + struct.pack("!I3xB", len(seg), 6)
    return internet_checksum(pseudo + seg) == 0


def icmp_message(ip: bytes) -> tuple[int, int, bytes, bytes]:
    """(type, code, whole ICMP message, quoted packet) of an ICMP/ICMPv6 error; checksum verified."""
    if ip[0] >> 4 == 4:
        msg = ip[(ip[0] & 0xF) * 4:]
        assert internet_checksum(msg) == 0, "bad ICMP checksum"
    else:
        msg = ip[40:]
        pseudo = ip[8:40] + struct.pack("!I3xB", len(msg), 58)
        assert internet_checksum(pseudo + msg) == 0, "bad ICMPv6 checksum"
    return msg[0], msg[1], msg, msg[8:]


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
