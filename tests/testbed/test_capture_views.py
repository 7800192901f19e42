"""Per-host views of a capture, as Wireshark reads them (tshark is Wireshark's dissector).

The capture holds each packet once per interface it crossed, which Wireshark's TCP analysis (run over
every frame of a file, whatever the display filter) takes for retransmissions and duplicate ACKs. The
views beside it hold one interface each: on a clean exchange Wireshark flags nothing there.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from netns import Testbed
from verifier.capture import Capture, CaptureError, views
from verifier.pcap import read_interface_stats, read_packets
from verifier.pytest_plugin import require_tool

# The TCP analysis flags that copies of one packet raise: none of them belongs to a clean exchange.
COPY_FLAGS = ("tcp.analysis.retransmission || tcp.analysis.fast_retransmission || "
              "tcp.analysis.spurious_retransmission || tcp.analysis.duplicate_ack || tcp.analysis.out_of_order || "
              "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment")

SERVER = ("import socket, sys; fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET; "
          "s = socket.socket(fam); s.bind(('', 5000)); s.listen(); c, a = s.accept(); "
          "c.sendall(c.recv(100)); c.close()")
CLIENT = ("import socket, sys; fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET; "
          "s = socket.socket(fam); s.connect((sys.argv[1], 5000)); s.sendall(b'ping'); "
          "assert s.recv(10) == b'ping'; s.close()")


def tshark(*args: str) -> str:
    return subprocess.run([require_tool("tshark"), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def flagged(path) -> list[str]:
    """Frames Wireshark's TCP analysis flags as copies (retransmissions, duplicate ACKs...)."""
    return tshark("-r", str(path), "-Y", COPY_FLAGS, "-T", "fields", "-e", "frame.number").split()


def conv_frames(path, port: int = 5000) -> list[int]:
    """The frame count of each TCP conversation with `port` in Wireshark's conv,tcp statistics (the
    columns: A <-> B, frames and bytes B to A, A to B, and in all)."""
    rows = [line.split() for line in tshark("-r", str(path), "-q", "-z", "conv,tcp").splitlines() if "<->" in line]
    return [int(r[9]) for r in rows if r[0].endswith(f":{port}") or r[2].endswith(f":{port}")]


def test_the_views_of_a_clean_exchange_raise_no_tcp_analysis_flags(root, tmp_path, family):
    with Testbed.routed({4: "ipv4", 6: "ipv6"}[family]) as bed:
        srv = bed.server.start([sys.executable, "-c", SERVER, str(family)])
        bed.server.wait_listen(5000, process=srv)
        with Capture(bed, tmp_path / "run.pcapng") as cap:
            bed.client.run([sys.executable, "-c", CLIENT, bed.server.addr(family)]).check()
            srv.wait(5).check()
    paths = cap.write_views(["client", "server", "router"])
    assert [p.name for p in paths] == ["run.client.pcapng", "run.server.pcapng", "run.router-r0.pcapng",
                                       "run.router-r1.pcapng"]
    conn = cap.trace().find(dport=5000)[0]
    # The evidence file: every packet four times, so Wireshark sees "retransmissions" and "dup ACKs",
    # and its conversation has four times the connection's packets.
    assert len(flagged(cap.path)) > 0
    assert conv_frames(cap.path) == [4 * len(conn.events)]
    # Each view: one interface, and Wireshark counts the connection's packets once, and flags none.
    for path, label in zip(paths, ["client:c0", "server:s0", "router:r0", "router:r1"]):
        assert {p.iface_name for p in read_packets(path)} == {label}
        assert flagged(path) == [], f"{path.name}: Wireshark flags copies"
        assert conv_frames(path) == [len(conn.at(label))], path.name
    # The client's view is the evidence file's client:c0 frames, exactly: what the README's display
    # filter selects in the evidence file, whose TCP analysis still sees the other copies.
    view = [(p.ts_ns, p.direction, p.data) for p in read_packets(paths[0])]
    assert view == [(p.ts_ns, p.direction, p.data) for p in read_packets(cap.path) if p.iface_name == "client:c0"]
    shown = tshark("-r", str(cap.path), "-Y", 'frame.interface_name == "client:c0"', "-T", "fields",
                   "-e", "frame.number").split()
    assert len(shown) == len(view)


def test_a_view_keeps_the_interface_statistics_and_names_a_missing_host(root, tmp_path):
    with Testbed.pair("ipv4") as bed:
        with Capture(bed, tmp_path / "p.pcapng", hosts=["server"]) as cap:
            bed.client.run([sys.executable, "-c", "import socket\ntry: socket.create_connection("
                            f"({bed.server.addr(4)!r}, 9), timeout=2)\nexcept OSError: pass"])
        assert cap.write_views() == []  # the default view is the client's: not in this capture
        (path,) = cap.write_views(["server"])
        with pytest.raises(CaptureError, match="no view of 'client'"):
            cap.write_views(["client"])
    (isb,) = read_interface_stats(path)
    (orig,) = read_interface_stats(cap.path)
    assert (isb.iface_name, isb.received, isb.dropped, isb.delivered) == \
        ("server:s0", orig.received, orig.dropped, orig.delivered) and isb.received > 0
    with pytest.raises(ValueError, match="no interface 'client:c0'"):
        views.write_view(cap.path, "client:c0", tmp_path / "x.pcapng")
    assert not (tmp_path / "x.pcapng").exists() and not (tmp_path / "x.pcapng.part").exists()
