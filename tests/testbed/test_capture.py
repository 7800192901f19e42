"""Capture on the real kernel: live before traffic, every interface, ns timestamps, drop counters."""

import struct
import sys
import time

import pytest

from netns import Testbed
from verifier.capture import Capture, CaptureError
from verifier.pcap import read_interface_stats, read_packets

SERVER = ("import socket, sys; fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET; "
          "s = socket.socket(fam); s.bind(('', 5000)); s.listen(); c, a = s.accept(); "
          "c.sendall(b'hello'); c.close()")
CLIENT = ("import socket, sys; fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET; "
          "s = socket.socket(fam); s.connect((sys.argv[1], 5000)); "
          "import time; print(time.time_ns()); assert s.recv(10) == b'hello'; s.close()")


def exchange(bed, family):
    srv = bed.server.start([sys.executable, "-c", SERVER, str(family)])
    bed.server.wait_listen(5000, process=srv)
    res = bed.client.run([sys.executable, "-c", CLIENT, bed.server.addr(family)]).check()
    srv.wait(5).check()
    return int(res.stdout)


def test_capture_sees_the_connection_on_every_interface(root, tmp_path, family):
    with Testbed.routed({4: "ipv4", 6: "ipv6"}[family]) as bed:
        before_ns = time.time_ns()
        with Capture(bed, tmp_path / "x.pcapng") as cap:
            connected_ns = exchange(bed, family)
        after_ns = time.time_ns()
    assert not cap.lost
    labels = [s.label for s in cap.stats]
    assert labels == ["client:c0", "router:r0", "router:r1", "server:s0"]
    trace = cap.trace()
    conns = trace.find(dport=5000)
    assert len(conns) == 1, trace.summary()
    conn = conns[0]
    # Seen on all four interfaces, reported from the client's, with no event counted twice.
    assert conn.interfaces == labels
    assert {e.iface for e in conn.events} == {"client:c0"}
    kinds = [e.kind for e in conn.events]
    assert kinds[:3] == ["SYN", "SYN-ACK", "ACK"]
    assert kinds.count("SYN") == 1 and "FIN" in kinds
    # Timestamps are the kernel's, in ns, on the same clock as the program's CLOCK_REALTIME.
    syn = conn.first("SYN")
    assert before_ns < syn.ts_ns < connected_ns < after_ns
    assert syn.ts_ns % 1000 != 0 or conn.events[1].ts_ns % 1000 != 0  # not truncated to microseconds
    # Each interface's packets carry a direction: the client sends its SYN out, the server gets it in.
    raw = {(p.iface_name, p.direction) for p in read_packets(cap.path)}
    assert ("client:c0", "out") in raw and ("server:s0", "in") in raw
    # The file records the kernel's counters for each interface.
    stats = read_interface_stats(cap.path)
    assert [s.dropped for s in stats] == [0, 0, 0, 0]
    # Every packet the kernel counted for the capture is in the file, or counted as dropped.
    assert [s.received for s in stats] == [s.written + s.dropped for s in cap.stats]


def test_capture_is_live_before_start_returns(root, tmp_path):
    """A packet sent right after start() returns is in the file: readiness is confirmed, not assumed."""
    with Testbed.pair("ipv4") as bed:
        cap = Capture(bed, tmp_path / "x.pcapng", hosts=["server"]).start()
        # A SYN to a closed port, sent the instant start() returned.
        bed.client.run([sys.executable, "-c",
                        f"import socket; s = socket.socket(); s.settimeout(2);\n"
                        f"try: s.connect(({bed.server.addr(4)!r}, 9))\nexcept OSError: pass"])
        cap.stop()
    trace = cap.trace()
    conn = trace.find(dport=9)[0]
    assert [e.kind for e in conn.events] == ["SYN", "RST"]


def test_capture_of_selected_hosts_and_bad_selection(root, tmp_path):
    with Testbed.routed("ipv4") as bed:
        cap = Capture(bed, tmp_path / "r.pcapng", hosts=["router"])
        assert [t["label"] for t in cap.targets] == ["router:r0", "router:r1"]
        with pytest.raises(CaptureError, match="nothing to capture"):
            Capture(bed, tmp_path / "n.pcapng", interfaces=["nope"])


def test_capture_opens_in_scapy(root, tmp_path):
    """The file is standard pcapng: another reader (Scapy's) reads the same packets and names."""
    from scapy.utils import PcapNgReader

    with Testbed.pair("dual") as bed:
        with Capture(bed, tmp_path / "x.pcapng") as cap:
            exchange(bed, 6)
    ours = list(read_packets(cap.path))
    with PcapNgReader(str(cap.path)) as r:
        theirs = list(r)
    assert len(ours) == len(theirs) > 0
    assert [bytes(p) for p in theirs] == [p.data for p in ours]


def test_a_live_capture_opens_in_wireshark(root, tmp_path):
    """tshark (Wireshark's dissector) reads the file: interface names, directions, ns timestamps."""
    import subprocess

    from verifier.pytest_plugin import require_tool

    tshark = require_tool("tshark")
    with Testbed.routed("ipv4") as bed:
        with Capture(bed, tmp_path / "x.pcapng") as cap:
            exchange(bed, 4)
    fields = ["frame.interface_name", "frame.time_epoch", "frame.packet_flags_direction", "tcp.flags.str"]
    out = subprocess.run([tshark, "-r", str(cap.path), "-Y", "tcp.port == 5000", "-T", "fields",
                          *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    # The same selection as tshark's: IPv4 (the EtherType, so that no ARP frame whose sender MAC has
    # a 6 in that byte counts), protocol TCP, port 5000 either way.
    ours = [p for p in read_packets(cap.path) if p.data[12:14] == b"\x08\x00" and p.data[23:24] == b"\x06"
            and 5000 in struct.unpack_from("!HH", p.data, 14 + (p.data[14] & 0xF) * 4)]
    assert len(rows) == len(ours) > 0
    for row, p in zip(rows, ours):
        assert row[0] == p.iface_name
        assert row[1] == f"{p.ts_ns // 10**9}.{p.ts_ns % 10**9:09d}"
        assert row[2] == {"in": "0x00000001", "out": "0x00000002"}[p.direction]
    # The first TCP packet on the wire is the client's SYN leaving the client.
    assert rows[0][0] == "client:c0" and rows[0][2] == "0x00000002" and "S" in rows[0][3]


def test_one_capture_process_serves_concurrent_captures_and_is_replaced_if_it_dies(root, tmp_path):
    import os
    import signal

    from netns import namespace
    from netns.waiting import wait_until
    from verifier.capture import _service

    with Testbed.pair("ipv4") as bed:
        a = Capture(bed, tmp_path / "a.pcapng").start()
        pid = _service.pid
        b = Capture(bed, tmp_path / "b.pcapng", hosts=["server"]).start()
        assert _service.pid == pid, "a second capture started a second process"
        exchange(bed, 4)
        a.stop()
        b.stop()
        assert [e.kind for e in a.trace().find(dport=5000)[0].events][:3] == ["SYN", "SYN-ACK", "ACK"]
        assert b.trace().find(dport=5000)[0].interfaces == ["server:s0"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not namespace.pid_alive(pid), 5.0,
               lambda: AssertionError(f"the capture process {pid} outlived SIGKILL by 5 s"))
    with Testbed.pair("ipv4") as bed:
        c = Capture(bed, tmp_path / "c.pcapng").start()
        assert _service.pid not in (None, pid)
        exchange(bed, 4)
        c.stop()
        assert c.trace().find(dport=5000)
