"""The ICMP fault (`verifier.faults.icmp`: `IcmpUnreachable`, and `IcmpArm` in the fault agent), proved on
the wire: every code in both families, from the router's address, quoting the SYN byte for byte; the
nth match and the delay honoured; one agent process per Python process, reused; nothing left behind.

The client's SYNs come from plain non-blocking sockets opened inside the client's namespace, so each
test costs one testbed and no retransmission timer.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest

from netns import Testbed, namespace
from verifier.analysis.expect import expect
from verifier.faults.agent import AgentError, agent
from verifier.faults import FaultError, IcmpUnreachable, Syn, icmp_unreach_code, inject
from verifier.wire import encode

from .wire import (AGENT_TOLERANCE, agent_children, assert_on_time, frames, icmp_message, ip_packet,
                   packet_socket_inodes, socket_inodes_of, syn_from)

PORT = 5000

# (family, name as a user writes it, ICMP type, code): the numbers from RFC 792/1812 and RFC 4443,
# written out here rather than taken from the table under test.
CODES = [
    (4, "net", 3, 0), (4, "host", 3, 1), (4, "protocol", 3, 2), (4, "port", 3, 3), (4, "frag-needed", 3, 4),
    (4, "admin", 3, 13),
    (6, "no-route", 1, 0), (6, "admin-prohibited", 1, 1), (6, "address-unreachable", 1, 3),
    (6, "port-unreachable", 1, 4), (6, "too-big", 2, 0),
]
MTU = {4: 1000, 6: 1280}
# The largest ICMP error datagram: RFC 1812 4.3.2.3 (IPv4), RFC 4443 2.4(c) (IPv6, the minimum MTU).
ERROR_MAX = {4: 576, 6: 1280}


def three_syns(testbed, family: int, fault: IcmpUnreachable, answered: int) -> None:
    """Start three SYNs from the client while `fault` is armed, wait until `answered` answers were sent
    and the agent saw all three SYNs (an unanswered one was passed over, not still on its way), close."""
    socks = [syn_from(testbed.client, family, testbed.server.addr(family), PORT) for _ in range(3)]
    try:
        fault.wait_sent(answered)
        deadline = time.monotonic() + 5
        while fault.status()["matched"] < 3:
            assert time.monotonic() < deadline, fault.status()
            time.sleep(0.002)
    finally:
        for s in socks:
            s.close()


def nft_tables(host) -> str:
    res = host.run(["nft", "list", "tables"], check=True)
    return res.stdout.strip()


def answer_one_syn(bed, family, fault) -> None:
    """Arm `fault` at the router, send one SYN from the client, and wait (bounded) for the ICMP."""
    with inject(bed.router, fault):
        s = syn_from(bed.client, family, bed.server.addr(family), PORT)
        try:
            fault.wait_sent(1)
        finally:
            s.close()


# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam,name,icmp_type,icmp_code", CODES, ids=[f"ipv{f}-{n}" for f, n, _, _ in CODES])
def test_every_code_on_the_wire(testbed, capture, fam, name, icmp_type, icmp_code):
    family = fam  # not `family`: that name is the plugin's own parametrisation, and this list pairs codes
    router_addr = testbed.router.interface("client").addresses[family]
    fault = IcmpUnreachable(name, Syn(dport=PORT), mtu=MTU[family], family=family)
    answer_one_syn(testbed, family, fault)
    assert (fault.report["matched"], fault.report["sent"]) == (1, 1), fault.report
    assert fault.report["dropped"] == 1, "the SYN was not dropped at the router while the fault was armed"
    trace = capture.trace()
    conn = expect(trace).connection(dport=PORT).syn_count(1).icmp(type=icmp_type, code=icmp_code).connection
    story = "\n" + conn.ladder(all_interfaces=True) + f"\npcap: {capture.path}"
    # One ICMP, seen leaving the router and reaching the client, from the router's address on that
    # link, quoting the SYN (relative seq 0 = the client's ISN).
    icmps = conn.icmp_events()
    assert sorted(e.iface for e in icmps) == ["client:c0", "router:r0"], story
    for e in icmps:
        assert (e.icmp_type, e.icmp_code, e.icmp_from, e.direction) == (icmp_type, icmp_code, router_addr, "s>c"), story
        assert e.quoted_seq == 0, story
        if (family, icmp_type, icmp_code) in ((4, 3, 4), (6, 2, 0)):
            assert e.mtu == MTU[family], story
    # The SYN went no further than the router.
    assert not conn.at("router:r1") and not conn.at("server:s0"), story

    # Byte level: MACs swapped from the SYN's frame, a valid checksum, and the SYN quoted exactly as
    # it arrived (it is far shorter than the quoting limit, so all of it).
    raw = frames(capture.path)
    syn_in = raw[conn.select("SYN", iface="router:r0")[0].packet_index]
    icmp_out = raw[next(e for e in icmps if e.iface == "router:r0").packet_index]
    assert (icmp_out[0:6], icmp_out[6:12]) == (syn_in[6:12], syn_in[0:6]), "MAC addresses not swapped" + story
    ip = ip_packet(icmp_out)
    assert len(ip) <= ERROR_MAX[family]
    got_type, got_code, msg, quoted = icmp_message(ip)
    assert (got_type, got_code) == (icmp_type, icmp_code)
    assert quoted == ip_packet(syn_in), "the ICMP does not quote the SYN as received" + story


def test_quote_is_cut_to_the_error_size_limit(testbed, capture):
    """A SYN larger than the limit (SYN with data is legal, TCP Fast Open style) is quoted only up to
    576 bytes of ICMP datagram (IPv4) / 1280 (IPv6). Sent through a raw socket in the client's namespace."""
    for family in (4, 6):
        fault = IcmpUnreachable("port", Syn(dport=PORT + family), family=family)
        with inject(testbed.router, fault):
            dst = testbed.server.addr(family)
            payload = bytes(range(200)) * 7  # 1400 bytes: past both limits, within the 1500-byte MTU
            tcp = encode.tcp(testbed.client.addr(family), dst, 40000, PORT + family, seq=12345, flags="S",
                             window=64240, payload=payload)
            with namespace.inside(testbed.client.netns):
                if family == 4:
                    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
                else:
                    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
            with raw:
                # The kernel adds the IP header (from the client's address: the checksum's pseudo-header).
                raw.sendto(tcp, (dst, 0))
            fault.wait_sent(1)
    trace = capture.trace()
    raw_frames = frames(capture.path)
    for family in (4, 6):
        (conn,) = trace.find(dport=PORT + family)
        out = next(e for e in conn.icmp_events() if e.iface == "router:r0")
        ip = ip_packet(raw_frames[out.packet_index])
        syn = ip_packet(raw_frames[conn.select("SYN", iface="router:r0")[0].packet_index])
        _, _, _, quoted = icmp_message(ip)
        assert len(ip) == ERROR_MAX[family], f"IPv{family}: error datagram of {len(ip)} bytes"
        assert len(quoted) < len(syn) and quoted == syn[:len(quoted)], f"IPv{family}: quote is not the SYN's start"


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_only_the_nth_match_is_answered(testbed, capture, family, nth):
    fault = IcmpUnreachable("host", Syn(dport=PORT), nth=nth)
    with inject(testbed.router, fault):
        # All three SYNs seen, so that "only one answer" is about all of them.
        three_syns(testbed, family, fault, answered=1)
    assert (fault.report["matched"], fault.report["sent"], fault.report["dropped"]) == (3, 1, 3), fault.report
    trace = capture.trace()
    conns = sorted(trace.find(dport=PORT), key=lambda c: c.select("SYN", iface="router:r0")[0].ts_ns)
    assert len(conns) == 3
    answered = [i + 1 for i, c in enumerate(conns) if c.icmp_events()]
    assert answered == [nth], "\n\n".join(c.ladder(all_interfaces=True) for c in conns)
    assert [m["answer"] for m in fault.report["matches"]] == [i + 1 == nth for i in range(3)]


def test_max_answers_and_lifetime_bound_the_injector(testbed, family):
    # max_answers: of three SYNs, only the first two are answered.
    fault = IcmpUnreachable("host", Syn(dport=PORT), max_answers=2)
    with inject(testbed.router, fault):
        three_syns(testbed, family, fault, answered=2)
    assert (fault.report["matched"], fault.report["sent"]) == (3, 2)
    # An arm the agent cannot bind is refused, and nothing stays armed.
    with pytest.raises(AgentError, match="refused arm"):
        agent().request("arm", id="bad", netns=testbed.router.netns, ifname="nosuchif0", match={}, reply={})
    assert agent().request("ping")["armed"] == []
    # lifetime: the agent closes its socket in the router's namespace by itself, unasked.
    fault = IcmpUnreachable("host", Syn(dport=PORT), lifetime_s=0.2)
    pid = agent().pid
    with inject(testbed.router, fault):
        pid = agent().pid
        assert packet_socket_inodes(testbed.router) & socket_inodes_of(pid), "agent socket not in the router"
        deadline = time.monotonic() + 5
        while packet_socket_inodes(testbed.router) & socket_inodes_of(pid):
            assert time.monotonic() < deadline, "the agent kept its socket past the lifetime"
            time.sleep(0.01)
        s = syn_from(testbed.client, family, testbed.server.addr(family), PORT)
        s.close()
    assert fault.report["expired"] and fault.report["sent"] == 0


@pytest.mark.parametrize("delay_ms", [0, 5, 40])
def test_delay_is_honoured(testbed, capture, family, delay_ms):
    fault = IcmpUnreachable("host", Syn(dport=PORT), delay_ms=delay_ms)
    answer_one_syn(testbed, family, fault)
    trace = capture.trace()
    (conn,) = trace.find(dport=PORT)
    syn = conn.select("SYN", iface="router:r0")[0]
    icmp = next(e for e in conn.icmp_events() if e.iface == "router:r0")
    # Never early: the wait starts at the SYN's own kernel timestamp (the same the capture records).
    assert_on_time(icmp.ts_ns - syn.ts_ns, delay_ms * 1_000_000, AGENT_TOLERANCE, "the ICMP after the SYN",
                   never_early=True, story="\n" + conn.ladder(all_interfaces=True))
    # The agent's own record says the same.
    send = fault.report["sends"][0]
    assert send["t_ns"] - fault.report["matches"][0]["t_ns"] >= delay_ms * 1_000_000


def test_one_agent_reused_and_nothing_left_behind(root):
    before_modules = {m for m in sys.modules if m.split(".")[0] == "scapy"}
    pids, starts, inodes_armed = [], [], []
    bed = Testbed("routed", "dual")
    bed.up()
    try:
        for family in (4, 6):
            fault = IcmpUnreachable("host", Syn(dport=PORT), family=family)
            t0_ns = time.time_ns()
            with inject(bed.router, fault):
                pids.append(agent().pid)
                starts.append(agent().starts)
                inodes_armed.append(packet_socket_inodes(bed.router) & socket_inodes_of(agent().pid))
                s = syn_from(bed.client, family, bed.server.addr(family), PORT)
                fault.wait_sent(1)
                s.close()
            # Right after the fault: no nft table, no agent socket in the router's namespace.
            assert nft_tables(bed.router) == "", nft_tables(bed.router)
            assert not packet_socket_inodes(bed.router) & socket_inodes_of(agent().pid)
            ping = agent().request("ping")
            assert (ping["armed"], ping["open_sockets"]) == ([], 0)
            if family == 6:
                # The second injection found the agent running: the process that served it had
                # started before the injection began (a restarted agent would have started after).
                assert ping["started_ns"] < t0_ns, (ping, t0_ns)
    finally:
        bed.down()
    # The same agent both times, its socket was really in the router's namespace while armed, and
    # this process never imported Scapy for it.
    assert pids[0] == pids[1] and starts[0] == starts[1], (pids, starts)
    assert all(inodes_armed), "the agent's socket was not found in the router's namespace while armed"
    assert {m for m in sys.modules if m.split(".")[0] == "scapy"} == before_modules
    # After teardown: the namespaces are gone (nothing held them), the agent lives on, alone.
    assert not set(bed.namespaces) & set(namespace.list_names())
    assert not namespace.pids_in(bed.namespaces)
    assert agent_children() == [agent().pid]
    assert agent().request("ping")["pid"] == pids[0]


def test_codes_by_name_and_refusals():
    assert icmp_unreach_code("net", 4) == (3, 0) and icmp_unreach_code("net", 6) == (1, 0)
    assert icmp_unreach_code("host", 6) == (1, 3) and icmp_unreach_code("no-route", 6) == (1, 0)
    assert icmp_unreach_code("protocol", 6) is None
    assert icmp_unreach_code(9, 4) == (3, 9)
    with pytest.raises(FaultError, match="unknown ICMP unreachable code"):
        IcmpUnreachable("nowhere")
    with pytest.raises(FaultError, match="does not exist in IPv6"):
        IcmpUnreachable("protocol", family=6)
    with pytest.raises(FaultError, match="nth"):
        IcmpUnreachable("host", nth=0)
    # "protocol" on a dual-stack fault acts on IPv4 only (IPv6 has no such code).
    assert set(IcmpUnreachable("protocol").types) == {4}
