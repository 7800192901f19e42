"""Scapy from a testbed host (`Host.send`, `sr`, `sr1`, `sniff`, `listen`), on the real kernel: packets
routed by the host's own namespace, answers matched and stamped, the same packets found in the
capture as Scapy packets (`Capture.packets()`, `Connection.scapy_packets()`), and the kernel's own
RSTs held back by `KernelRstDrop` while Scapy's own pass."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from netns.waiting import wait_until
from tests.testbed.wire import packet_socket_inodes
from verifier.faults import Drop, KernelRstDrop, Match, Syn

PORT = 5000
LISTEN = ("import socket, sys, time\nfam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET\n"
          "s = socket.socket(fam); s.bind(('', int(sys.argv[2]))); s.listen(8); time.sleep(60)")


def IPf(family, **kw):  # noqa: N802 - a packet layer
    return IPv6(**kw) if family == 6 else IP(**kw)


def listen(bed, family, port=PORT):
    proc = bed.server.start([sys.executable, "-c", LISTEN, str(family), str(port)])
    bed.server.wait_listen(port, process=proc)
    return proc


def test_readme_probe_is_answered_and_found_in_the_capture(testbed, capture, family):
    listen(testbed, family)
    before = time.time_ns()
    ans = testbed.client.sr1(IPf(family, dst=testbed.server.addr(family))
                             / TCP(sport=40123, dport=PORT, flags="S", seq=4242), timeout=3)
    after = time.time_ns()
    assert ans is not None, "no answer to the SYN"
    assert ans[TCP].flags == "SA" and ans[TCP].ack == 4243
    # Routed and addressed by the client's own namespace: from its address, answered to it.
    assert ans.dst == testbed.client.addr(family) and ans.src == testbed.server.addr(family)
    assert isinstance(ans, IPv6 if family == 6 else IP)  # a layer-3 probe's answer, from its IP layer
    assert (ans.sniffed_on, ans.direction) == ("c0", "in") and before <= ans.ts_ns <= after
    assert abs(float(ans.time) - ans.ts_ns / 1e9) < 1e-6
    # The same SYN-ACK, as the capture recorded it on the client's interface, as a Scapy packet.
    pkts = capture.packets("client:c0")
    synacks = [p for p in pkts if p.haslayer(TCP) and p[TCP].sport == PORT and p[TCP].flags == "SA"]
    assert len(synacks) == 1 and synacks[0][TCP].seq == ans[TCP].seq and synacks[0][TCP].ack == 4243
    assert synacks[0].direction == "in" and synacks[0].sniffed_on == "client:c0"
    assert abs(synacks[0].ts_ns - ans.ts_ns) < 1_000_000  # the same packet, stamped by two sockets
    # And through the analysis: the connection's packets behind its events.
    (conn,) = capture.trace().find(sport=40123)
    sa = conn.first("SYN-ACK")
    assert conn.scapy_packet(sa)[TCP].seq == ans[TCP].seq
    every = conn.scapy_packets()
    assert {p.sniffed_on for p in every} == {"client:c0", "router:r0", "router:r1", "server:s0"}
    assert [p.index for p in every] == sorted(p.index for p in conn.packets)


def test_capture_packets_are_dissected_lazily(testbed, capture, family):
    listen(testbed, family)
    testbed.client.sr1(IPf(family, dst=testbed.server.addr(family)) / TCP(sport=40124, dport=PORT, flags="S"),
                       timeout=3)
    pkts = capture.packets()
    assert len(pkts) >= 8  # SYN, SYN-ACK and the client kernel's RST on each of 4 interfaces, at least
    assert pkts.res.dissected == 0
    first = pkts[0]
    assert pkts.res.dissected == 1 and pkts[0] is first and first.index == 0
    assert [p.index for p in pkts] == list(range(len(pkts)))


def test_kernel_rst_is_held_back_and_scapy_rst_passes(testbed, capture, fault, family):
    listen(testbed, family)
    dst = testbed.server.addr(family)
    # Without the rule, the client's kernel resets the connection it knows nothing of.
    testbed.client.sr1(IPf(family, dst=dst) / TCP(sport=40125, dport=PORT, flags="S", seq=100), timeout=3)
    drop = fault(testbed.client, KernelRstDrop(sport=40126))
    with testbed.client.listen(filter=f"tcp port 40126") as seen:
        ans = testbed.client.sr1(IPf(family, dst=dst) / TCP(sport=40126, dport=PORT, flags="S", seq=200), timeout=3)
        assert ans is not None and ans[TCP].flags == "SA"
        # Scapy's own RST (marked by the agent) passes the rule, and ends the server's half-open connection.
        testbed.client.send(IPf(family, dst=dst) / TCP(sport=40126, dport=PORT, flags="R", seq=201))
        frames: list = []
        deadline = time.monotonic() + 5
        while not any(_out_rst(p) for p in frames) and time.monotonic() < deadline:
            frames += seen.next(timeout=0.5)  # returns as soon as a frame is there
    status = drop.status()
    trace = capture.trace()
    (plain,) = trace.find(sport=40125)
    assert [e.flags for e in plain.select("RST", "c>s")] == ["R"], plain.ladder()
    (held,) = trace.find(sport=40126)
    rsts = held.select("RST", "c>s")
    assert [(e.flags, e.seq) for e in rsts] == [("R", 1)], held.ladder()  # only Scapy's (seq 201 = ISN + 1)
    assert status["matched"] == status["dropped"] == 1, status  # the kernel's, answering the SYN-ACK
    assert any(_out_rst(p) for p in frames)


def _out_rst(p) -> bool:
    return p.haslayer(TCP) and p[TCP].flags == "R" and p.direction == "out"


def test_layer2_frames_get_the_namespace_addresses(testbed, family, caplog, monkeypatch):
    listen(testbed, family)
    # Nothing is looked up in this process's own namespace: Scapy's resolver is never asked.
    from scapy.config import conf

    def refuse(*args, **kw):
        raise AssertionError("Scapy's neighbour resolution ran in the caller's namespace")

    monkeypatch.setattr(conf.neighbor, "resolve", refuse)
    ans = testbed.client.sr1(Ether() / IPf(family, dst=testbed.server.addr(family))
                             / TCP(sport=40127, dport=PORT, flags="S"), timeout=3)
    assert "MAC address" not in caplog.text
    assert ans is not None and isinstance(ans, Ether) and ans[TCP].flags == "SA"
    router = testbed.router.interface("client")
    from verifier.faults.base import link_of

    assert ans.src == link_of(testbed.router, router.name)["address"]
    assert ans.dst == link_of(testbed.client, "c0")["address"]


def test_sr_several_packets_answered_and_not(testbed, fault, family):
    listen(testbed, family)
    fault(testbed.router, Drop(Syn(dport=PORT + 1)))
    ans, unans = testbed.client.sr(IPf(family, dst=testbed.server.addr(family))
                                   / TCP(sport=40128, dport=[PORT, PORT + 1, PORT + 2], flags="S"), timeout=0.5)
    got = {s[TCP].dport: r[TCP].flags for s, r in ans}
    assert got == {PORT: "SA", PORT + 2: "RA"}
    assert [p[TCP].dport for p in unans] == [PORT + 1]
    assert all(s.sent_time and r.time >= s.sent_time for s, r in ans)


def test_sniff_with_a_filter_and_a_count(testbed, family):
    listen(testbed, family)
    before = packet_socket_inodes(testbed.server)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("p", testbed.server.sniff(count=2, timeout=5,
                                                                                  filter=f"tcp port {PORT + 3}")))
    t.start()
    # The sniff has begun once the agent's packet socket for it is open in the server's namespace.
    wait_until(lambda: packet_socket_inodes(testbed.server) - before, 10.0,
               lambda: AssertionError("the sniff's packet socket did not open within 10 s"))
    testbed.client.sr1(IPf(family, dst=testbed.server.addr(family)) / TCP(sport=40129, dport=PORT + 3, flags="S"),
                       timeout=2)
    t.join(10)
    pkts = got["p"]
    assert [(p[TCP].flags, p.direction, p.sniffed_on) for p in pkts] == [("S", "in", "s0"), ("RA", "out", "s0")]
    with pytest.raises(ValueError, match="count= or timeout="):
        testbed.server.sniff()


def test_icmp_echo_through_the_router(testbed):
    # Not TCP: any Scapy packet, matched as Scapy matches it.
    ans = testbed.client.sr1(IP(dst=testbed.server.addr(4)) / ICMP(id=7, seq=1), timeout=2)
    assert ans is not None and ans[ICMP].type == 0 and ans[ICMP].id == 7 and ans.ttl == 63  # one hop: the router


def test_no_route_is_one_clear_error(testbed, family):
    from netns.packets import PacketAgentError

    testbed.client.run(["ip", "route", "flush", "default"] if family == 4 else ["ip", "-6", "route", "flush",
                                                                                "default"]).check()
    with pytest.raises(PacketAgentError, match="no route"):
        testbed.client.send(IPf(family, dst=testbed.server.addr(family)) / TCP(dport=PORT))


def test_a_listener_left_open_is_closed_with_its_testbed(root):
    from netns import Testbed, namespace
    from netns.packets import PacketAgentError

    with Testbed("pair", "ipv4") as bed:
        seen = bed.server.listen()  # never closed by the test
        netns = bed.server.netns
    assert not namespace.exists(netns)
    with pytest.raises(PacketAgentError, match="no listening session"):
        seen.next(0)


def test_sr_multi_keeps_every_answer(testbed, fault, family):
    # The listener retransmits its SYN-ACK (no final ACK comes): with multi=True both answers are kept.
    from tests.conformance.conftest import initial_rto_ns
    from tests.kernel import TOLERANCE

    listen(testbed, family)
    fault(testbed.client, KernelRstDrop(sport=40130))
    # A listener's first SYN-ACK retransmission waits its initial RTO (tcp_timeout_init), read from the kernel.
    rto = initial_rto_ns(testbed.server, family, testbed.client.addr(family)) / 1e9
    ans, unans = testbed.client.sr(IPf(family, dst=testbed.server.addr(family))
                                   / TCP(sport=40130, dport=PORT, flags="S", seq=7), multi=True,
                                   timeout=TOLERANCE.window(rto)[1])
    assert [(r[TCP].flags, r[TCP].ack) for _, r in ans] == [("SA", 8), ("SA", 8)] and not unans
    gap = float(ans[1][1].time - ans[0][1].time)
    assert TOLERANCE.fits(gap, rto), gap



def test_warm_returns_once_the_agent_has_imported_scapy(root):
    """A fresh agent imports Scapy in the background (hundreds of ms); `warm` returns only once that
    is done, so a timed script's first send is not held up by it."""
    code = ("from netns import packets\npackets.warm()\n"
            "print(packets.agent().request('ping')['scapy'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"
