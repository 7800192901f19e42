"""Expectations that say what a test means, on crafted packets: who closed first, ICMP errors by
name in either family, and the linux SYN schedule of the client namespace's own sysctls."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.all import ICMP, IP, ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6

from verifier.analysis.conditions import check, parse_condition
from verifier.analysis.expect import ExpectationFailed, expect
from verifier.analysis.schedules import LINUX_DEFAULTS, LinuxProfile
from verifier.analysis.trace import load_trace
from verifier.wire.names import ICMP_ALIASES, ICMP_KINDS, icmp_canonical, icmp_code

from .crafted import C, C6, R, S, S6, handshake, tcp, write

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"
R6 = "2001:db8::fe"


def failure(fn) -> str:
    with pytest.raises(ExpectationFailed) as exc:
        fn()
    return str(exc.value)


def closing(first: str, *, answer_acks_first: bool = True, iface: str = "client:c0", t: int = 300):
    """A handshake, then FINs: `first` ("client"/"server") sends its FIN at t; the other's FIN
    follows 100 us later, acknowledging the first FIN or (a simultaneous close) not."""
    frames = handshake(iface)  # client ISN 1000, server ISN 5000
    c_fin = tcp(C, S, 40000, 8080, "FA", 1001, 5001 + (1 if first == "server" and answer_acks_first else 0))
    s_fin = tcp(S, C, 8080, 40000, "FA", 5001, 1001 + (1 if first == "client" and answer_acks_first else 0))
    fins = [c_fin, s_fin] if first == "client" else [s_fin, c_fin]
    frames += [(iface, t, fins[0]), (iface, t + 100, fins[1])]
    last_c, last_s = 1002, 5002
    frames.append((iface, t + 200, tcp(C, S, 40000, 8080, "A", last_c, last_s) if first == "client" else
                   tcp(S, C, 8080, 40000, "A", last_s, last_c)))
    return frames


# --------------------------------------------------------------------------------------------------
# who closed first

@pytest.mark.parametrize("first, other", [("client", "server"), ("server", "client")])
def test_closed_first_by_the_side_whose_fin_the_other_acknowledges(tmp_path, first, other):
    trace = load_trace(write(closing(first), tmp_path / "close.pcapng"))
    conn = expect(trace).connection(dport=8080)
    assert conn.closed_first_by(first) is conn
    conn.fin_from("client").fin_from("server")  # fin_from holds for both sides, whatever the order
    msg = failure(lambda: conn.closed_first_by(other))
    head = msg.splitlines()[0]
    assert head.startswith(f"closed_first_by({other!r}) failed: the {first} closed first: the {other}'s FIN")
    assert f"acknowledges the {first}'s FIN (ack=2)" in head
    assert ">>" in msg and "captured on all interfaces:" in msg


def test_a_simultaneous_close_is_judged_by_the_copy_nearest_each_sender(tmp_path):
    # The server's FIN leaves server:s0 at 250 us and reaches client:c0 at 400 us; the client's FIN
    # leaves client:c0 at 300 us. On the client's interface the client's FIN is first, yet the server
    # sent its FIN first; neither acknowledges the other.
    c_fin = tcp(C, S, 40000, 8080, "FA", 1001, 5001)
    s_fin = tcp(S, C, 8080, 40000, "FA", 5001, 1001)
    frames = handshake("client:c0") + handshake("server:s0", t=30) + [
        ("server:s0", 250, s_fin), ("client:c0", 300, c_fin), ("server:s0", 350, c_fin), ("client:c0", 400, s_fin),
    ]
    conn = expect(load_trace(write(frames, tmp_path / "simultaneous.pcapng"))).connection(dport=8080)
    assert conn.connection.primary_interface == "client:c0"
    conn.closed_first_by("server")
    msg = failure(lambda: conn.closed_first_by("client"))
    assert "a simultaneous close (neither FIN acknowledges the other), and the server's FIN" in msg.splitlines()[0]
    assert "on server:s0" in msg.splitlines()[0]


def test_causality_beats_the_clocks_of_a_merged_capture(tmp_path):
    # Captured on two machines whose clocks differ: the server's FIN carries an earlier timestamp,
    # but it acknowledges the client's FIN, so it was sent after that FIN arrived.
    c_fin = tcp(C, S, 40000, 8080, "FA", 1001, 5001)
    s_fin = tcp(S, C, 8080, 40000, "FA", 5001, 1002)
    frames = handshake("client:c0") + [("client:c0", 300, c_fin), ("server:s0", 200, s_fin)]
    conn = expect(load_trace(write(frames, tmp_path / "skewed.pcapng"))).connection(dport=8080)
    conn.closed_first_by("client")
    assert "the client closed first: the server's FIN" in failure(lambda: conn.closed_first_by("server"))


def test_closed_first_by_with_one_fin_or_a_reset(tmp_path):
    frames = handshake("eth0") + [("eth0", 300, tcp(C, S, 40000, 8080, "FA", 1001, 5001)),
                                  ("eth0", 400, tcp(S, C, 8080, 40000, "A", 5001, 1002))]
    conn = expect(load_trace(write(frames, tmp_path / "half.pcapng"))).connection()
    conn.closed_first_by("client")  # the server never closed
    assert "no FIN from the server; the client sent FIN at t=0.000300 on eth0" in failure(
        lambda: conn.closed_first_by("server"))

    frames = handshake("eth0") + [("eth0", 300, tcp(S, C, 8080, 40000, "R", 5001)),
                                  ("eth0", 400, tcp(C, S, 40000, 8080, "FA", 1001, 5001))]
    conn = expect(load_trace(write(frames, tmp_path / "reset.pcapng"))).connection()
    assert "the server reset the connection (R at t=0.000300) before the client's FIN at t=0.000400" in failure(
        lambda: conn.closed_first_by("client"))
    assert "no FIN from the server; the client sent FIN" in failure(lambda: conn.closed_first_by("server"))
    with pytest.raises(ValueError, match="side must be"):
        conn.closed_first_by("router")


def test_closed_first_by_agrees_with_zeek_on_the_golden_captures():
    # Zeek's history writes F (client) and f (server) in the order the FINs were seen: a second
    # reading, by another rule, of who closed first.
    judged = 0
    for path in sorted(GOLDEN.glob("*.pcapng")):
        for c in load_trace(path).connections:
            h = c.history or ""
            if "F" in h and "f" in h:
                first = "client" if h.index("F") < h.index("f") else "server"
                other = "server" if first == "client" else "client"
                conn = expect(load_trace(path)).connection(sport=c.c_port, dport=c.s_port, index=c.attempt)
                conn.closed_first_by(first)
                with pytest.raises(ExpectationFailed):
                    conn.closed_first_by(other)
                judged += 1
    assert judged >= 10  # C1, C9-C12, C14: both directions occur

# --------------------------------------------------------------------------------------------------
# ICMP errors by name

# RFC 792 / RFC 4443 (not read from the table under test)
RFC = {
    "net": {4: (3, 0), 6: (1, 0)},
    "host": {4: (3, 1), 6: (1, 3)},
    "port": {4: (3, 3), 6: (1, 4)},
    "admin": {4: (3, 13), 6: (1, 1)},
    "frag-needed": {4: (3, 4), 6: (2, 0)},
    "protocol": {4: (3, 2)},
}


def icmp_trace(tmp_path, family: int, icmp_type: int, icmp_code_: int):
    if family == 4:
        syn = tcp(C, S, 40000, 5000, "S", 7)
        err = IP(src=R, dst=C) / ICMP(type=icmp_type, code=icmp_code_) / syn
    else:
        syn = tcp(C6, S6, 40000, 5000, "S", 7)
        err = IPv6(src=R6, dst=C6) / (ICMPv6PacketTooBig(mtu=1280) if icmp_type == 2 else
                                      ICMPv6DestUnreach(type=icmp_type, code=icmp_code_)) / syn
    return load_trace(write([("eth0", 0, syn), ("eth0", 40, err)], tmp_path / f"icmp{family}.pcapng"))


@pytest.mark.parametrize("name, fam", [(n, f) for n, by in RFC.items() for f in by], ids=lambda v: str(v))
def test_icmp_by_name_in_both_families(tmp_path, name, fam):
    family = fam  # (the plugin parametrizes an argument called `family` itself)
    t, c = RFC[name][family]
    assert icmp_code(name, family) == (t, c)
    conn = expect(icmp_trace(tmp_path, family, t, c)).connection(dport=5000)
    conn.icmp(name).icmp(type=t, code=c).icmp()
    for alias, canonical in ICMP_ALIASES.items():
        if canonical == name and family in ICMP_KINDS[name]:
            conn.icmp(alias)
    others = [n for n in RFC if n != name and family in RFC[n]]
    for other in others:
        msg = failure(lambda: conn.icmp(other))
        ot, oc = RFC[other][family]
        assert f"icmp({other!r}) failed: no ICMP{'v6' if family == 6 else ''} error {other!r} (type={ot} code={oc}" \
               in msg.splitlines()[0]
        assert f"attached: type={t} code={c}" in msg


def test_a_name_means_different_numbers_per_family(tmp_path):
    # the same numbers mean different errors: ICMP 3/1 is "host", but ICMPv6 type 3 is time exceeded
    v6 = expect(icmp_trace(tmp_path, 6, 1, 3)).connection(dport=5000)
    v6.icmp("host")
    with pytest.raises(ExpectationFailed):
        v6.icmp(type=3, code=1)
    v4 = expect(icmp_trace(tmp_path, 4, 3, 1)).connection(dport=5000)
    with pytest.raises(ExpectationFailed):
        v4.icmp(type=1, code=3)


def test_icmp_names_that_do_not_fit(tmp_path):
    v6 = expect(icmp_trace(tmp_path, 6, 1, 0)).connection(dport=5000)
    with pytest.raises(ValueError, match="'protocol' has no ICMPv6 equivalent"):
        v6.icmp("protocol")
    with pytest.raises(ValueError, match="unknown ICMP error 'bogus'; known: net, host"):
        v6.icmp("bogus")
    with pytest.raises(TypeError, match="takes an error name such as 'host'"):
        v6.icmp(1)
    with pytest.raises(TypeError, match="not both"):
        v6.icmp("net", code=0)
    assert icmp_canonical("address") == "host" and icmp_canonical("no-route") == "net"


@pytest.mark.parametrize("fam, t, c", [(4, 3, 1), (6, 1, 3)])
def test_the_expect_language_takes_icmp_names(tmp_path, fam, t, c):
    trace = icmp_trace(tmp_path, fam, t, c)
    ok = check(trace, "every attempt to port 5000 is unreachable host", "port 5000 unreachable by address",
               "no attempt is unreachable port", "port 5000 is not unreachable net")
    assert [v.ok for v in ok] == [True, True, True, True], [v.text() for v in ok]
    bad = check(trace, "port 5000 is unreachable port")
    assert not bad[0].ok
    assert parse_condition("port 5000 is unreachable admin-prohibited").icmp_name == "admin"
    with pytest.raises(ValueError, match="unknown ICMP error 'bogus'"):
        parse_condition("port 5000 is unreachable bogus")


# --------------------------------------------------------------------------------------------------
# the linux SYN schedule of the client namespace

SYSCTLS = {"net.ipv4.tcp_syn_retries": "1", "net.ipv4.tcp_syn_linear_timeouts": "1",
           "net.ipv4.tcp_rto_max_ms": "120000"}


def timed_out(tmp_path, syn_times_s):
    """SYNs at the given times with no answer, and the capture going on 5 s past the last one."""
    frames = [("client:c0", round(t * 1e6), tcp(C, S, 40000, 5000, "S", 1000)) for t in syn_times_s]
    frames.append(("client:c0", round((syn_times_s[-1] + 5) * 1e6), tcp(C, S, 41000, 6000, "S", 9)))
    return load_trace(write(frames, tmp_path / "timeout.pcapng"))


def test_the_schedule_uses_the_client_sysctls_the_trace_carries(tmp_path):
    # tcp_syn_retries=1 and tcp_syn_linear_timeouts=1: SYNs at 0, 1, 2 s (LinuxProfile's rule)
    predicted = LinuxProfile(syn_retries=1, linear_timeouts=1).schedule().syn_times
    trace = timed_out(tmp_path, [t + 0.004 * i for i, t in enumerate(predicted)])
    assert trace.client_sysctls is None and trace.find(dport=5000)[0].outcome == "timed-out"
    # unknown sysctls: the kernel's defaults (6, 4) predict 11 SYNs, so the 3 seen do not fit
    msg = failure(lambda: expect(trace).connection(dport=5000).syn_schedule("linux"))
    assert "the client's sysctls are unknown" in msg and "tcp_syn_retries=6, tcp_syn_linear_timeouts=4" in msg
    assert not check(trace, "port 5000 follows linux")[0].ok
    # as Capture.trace() hands it over: the namespace's own values
    trace.client_sysctls = dict(SYSCTLS)
    expect(trace).connection(dport=5000).syn_count(3).syn_schedule("linux")
    verdict = check(trace, "the SYNs to port 5000 follow the linux schedule")[0]
    assert verdict.ok, verdict.text()
    assert "tcp_syn_retries=1, tcp_syn_linear_timeouts=1" in verdict.text()
    assert "settings read in the client's namespace" in verdict.text()
    # a setting given in the condition overrides the namespace's
    over = check(trace, "port 5000 follows linux with tcp_syn_retries=2")[0]
    assert not over.ok and "overriding the namespace's value of syn_retries" in over.text()
    with pytest.raises(ExpectationFailed):
        expect(trace).connection(dport=5000).syn_schedule("linux", syn_retries=2)
    # the book's model fails, whatever the sysctls
    with pytest.raises(ExpectationFailed):
        expect(trace).connection(dport=5000).syn_schedule("stevens")


def test_the_schedule_of_a_saved_capture_needs_its_settings():
    trace = load_trace(GOLDEN / "c2_syn_timeout_linear1_retries2_ipv4.pcapng")
    conn = expect(trace).connection(dport=5000)
    conn.syn_schedule("linux", syn_retries=2, linear_timeouts=1)
    conn.syn_schedule(LinuxProfile(syn_retries=2, linear_timeouts=1))
    with pytest.raises(ExpectationFailed):
        conn.syn_schedule("linux")  # the defaults
    trace.client_sysctls = {"net.ipv4.tcp_syn_retries": "2", "net.ipv4.tcp_syn_linear_timeouts": "1",
                            "net.ipv4.tcp_rto_max_ms": None}
    conn.syn_schedule("linux")
    with pytest.raises(ValueError, match="model must be"):
        conn.syn_schedule("bsd")
    with pytest.raises(TypeError, match="unknown linux setting"):
        conn.syn_schedule("linux", retries=2)
    with pytest.raises(TypeError, match="settings are for the 'linux' model only"):
        conn.syn_schedule("stevens", syn_retries=2)


def test_for_capture_defaults_are_the_kernel_defaults():
    assert LINUX_DEFAULTS == {"net.ipv4.tcp_syn_retries": 6, "net.ipv4.tcp_syn_linear_timeouts": 4,
                              "net.ipv4.tcp_rto_max_ms": 120_000}
    p = LinuxProfile.for_capture(None)
    assert (p.syn_retries, p.linear_timeouts, p.rto_max_ms) == (6, 4, 120_000)
    p = LinuxProfile.for_capture(SYSCTLS, syncnt=3)
    assert (p.syn_retries, p.linear_timeouts, p.syncnt, p.retries) == (1, 1, 3, 3)
