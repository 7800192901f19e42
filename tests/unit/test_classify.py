"""The connection-attempt table and the Zeek machine (`verifier.analysis.classify`), on crafted exchanges.

Every exchange is written to a pcapng file and read back by both fast-path engines (C and the
Python reference, which must agree record for record) and by the detailed path (`load_trace` +
`classify_trace`). The expected Zeek histories are worked out by hand from Zeek's rules (the oracle
README and TCPSessionAdapter.cc), not taken from our output.
"""

from __future__ import annotations

import io
import os

import pytest
from scapy.all import ICMP, IP, TCP, ICMPv6DestUnreach, IPv6

from verifier.analysis import classify
from verifier.analysis.classify import (DEFAULT_LIKELY_SERVER_PORTS, EVENTS, OUTCOMES, STATES, TRANSITION_ARRAY, TRANSITIONS,
                               ZeekConn, classify_trace, outcome_name, outcome_of)
from verifier.replay.fastpath import engine_available, scan
from verifier.analysis.tracefile import load_trace

from .crafted import C, C6, R, S, S6, handshake, tcp, write

ENGINES = ("python", "c")
SP, DP = 40000, 8080  # DP is one of Zeek's likely server ports (HTTP alternate)
IC, IS = 1000, 5000  # ISNs


@pytest.fixture(scope="module", autouse=True)
def _c_engine():
    if not engine_available():
        if os.environ.get("VERIFIER_REQUIRE_ROOT") == "1":  # CI: the compiler is part of the setup
            pytest.fail("the C fast path cannot be built (no cc?)")
        pytest.skip("no C compiler: the C fast path cannot be built")


def records(frames, **kw):
    """Records of crafted frames from both engines (which must agree) — the C engine's list."""
    data = write(frames).getvalue()
    out = {}
    for engine in ENGINES:
        out[engine] = sorted(scan(io.BytesIO(data), engine=engine, **kw), key=lambda r: r.id)
    a, b = ([r.as_json() | {"zo": r.extra.get("zeek_orig")} for r in out[e]] for e in ENGINES)
    assert a == b, f"the engines disagree:\n python {a}\n c      {b}"
    return out["c"]


def one(frames, **kw):
    (rec,) = records(frames, **kw)
    return rec


def detailed(frames):
    return classify_trace(load_trace(write(frames)))


def pad(t_us: int):
    """A non-IP frame at t_us: makes the capture go on until then."""
    return ("eth0", t_us, b"\x02" * 12 + b"\x88\xb5" + b"\x00" * 46)


def full_exchange(t: int = 0, sport: int = SP):
    c2, s2 = IC + 1, IS + 1
    return handshake("eth0", t, sport, DP, IC, IS) + [
        ("eth0", t + 300, tcp(C, S, sport, DP, "PA", c2, s2, b"0123456789")),
        ("eth0", t + 400, tcp(S, C, DP, sport, "A", s2, c2 + 10)),
        ("eth0", t + 500, tcp(S, C, DP, sport, "PA", s2, c2 + 10, b"hello")),
        ("eth0", t + 600, tcp(C, S, sport, DP, "A", c2 + 10, s2 + 5)),
        ("eth0", t + 700, tcp(C, S, sport, DP, "FA", c2 + 10, s2 + 5)),
        ("eth0", t + 800, tcp(S, C, DP, sport, "FA", s2 + 5, c2 + 11)),
        ("eth0", t + 900, tcp(C, S, sport, DP, "A", c2 + 11, s2 + 6)),
    ]


# ---------------------------------------------------------------------------------------------------
# the table itself


def test_the_table_is_one_table_over_known_states_and_events():
    assert len(set(STATES)) == len(STATES) and len(set(EVENTS)) == len(EVENTS)
    for (state, event), new in TRANSITIONS.items():
        assert state in STATES and event in EVENTS and new in STATES
    # the array the C engine receives is the same table, missing pairs staying put
    for si, s in enumerate(STATES):
        for ei, e in enumerate(EVENTS):
            assert STATES[TRANSITION_ARRAY[si * len(EVENTS) + ei]] == TRANSITIONS.get((s, e), s)


def test_final_states_have_no_way_out_and_every_outcome_is_reachable():
    for final in ("CLOSED", "RESET_CLIENT", "RESET_SERVER"):
        assert not [k for k in TRANSITIONS if k[0] == final], final
    # REFUSED leaves only for a late SYN-ACK
    assert [k for k in TRANSITIONS if k[0] == "REFUSED"] == [("REFUSED", "SYNACK_S")]
    reachable, todo = {"NEW"}, ["NEW"]
    while todo:
        s = todo.pop()
        for (a, _), b in TRANSITIONS.items():
            if a == s and b not in reachable:
                reachable.add(b)
                todo.append(b)
    assert reachable == set(STATES)
    outcomes = {outcome_of(STATES.index(s), 0xFFF, syn_count=1, last_syn_age_s=5.0)[0] for s in STATES}
    outcomes.add(outcome_of(STATES.index("SYN_SENT"), 3, syn_count=1, last_syn_age_s=0.1)[0])
    assert outcomes == set(OUTCOMES)


def test_outcome_name_is_outcome_of_without_the_words():
    for si in range(len(STATES)):
        for visited in (1, 1 | 1 << si, 0xFFF):
            for age in (None, 0.2, 3.0):
                assert outcome_name(si, visited, age) == outcome_of(si, visited, syn_count=2, last_syn_age_s=age)[0]


# ---------------------------------------------------------------------------------------------------
# outcomes, SYN schedules, ICMP, and Zeek's conn_state/history for each


def test_full_exchange_is_closed_and_zeek_says_sf():
    r = one(full_exchange())
    assert (r.outcome, r.reset_by, r.syn_count, r.packets) == ("closed", None, 1, 10)
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p, r.family) == (C, SP, S, DP, 4)
    assert (r.conn_state, r.history) == ("SF", "ShADadFf")
    assert r.isn == IC and r.rtt_s == pytest.approx(100e-6)
    (d,) = detailed(full_exchange())
    assert (d.outcome, d.conn_state, d.history, d.syn_count) == ("closed", "SF", "ShADadFf", 1)


def test_rst_answering_the_syn_is_refused_rej():
    r = one([("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 50, tcp(S, C, DP, SP, "RA", 0, IC + 1))])
    assert (r.outcome, r.state, r.syn_count, r.conn_state, r.history) == ("refused", "REFUSED", 1, "REJ", "Sr")


def test_unanswered_syns_time_out_with_their_schedule():
    frames = [("eth0", k * 1_020_000, tcp(C, S, SP, DP, "S", IC)) for k in range(3)] + [pad(5_000_000)]
    r = one(frames)
    assert (r.outcome, r.syn_count, r.conn_state, r.history) == ("timed-out", 3, "S0", "S")
    assert r.syn_times_s == pytest.approx([0, 1.02, 2.04])
    assert r.rtt_s is None


def test_syns_at_the_very_end_of_the_capture_are_still_trying():
    r = one([("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 300_000, tcp(C, S, SP, DP, "S", IC)), pad(700_000)])
    assert (r.outcome, r.syn_count) == ("incomplete", 2) and "0.400 s after the last SYN" in r.detail


@pytest.mark.parametrize("fam", [4, 6])
def test_icmp_quoting_the_syn_makes_it_unreachable_with_type_and_code(fam):
    family = fam
    c, s = (C, S) if family == 4 else (C6, S6)
    router = R if family == 4 else "2001:db8::fe"
    syn = tcp(c, s, SP, DP, "S", IC)
    err = (IP(src=router, dst=c) / ICMP(type=3, code=1) / bytes(syn)[:28] if family == 4
           else IPv6(src=router, dst=c) / ICMPv6DestUnreach(code=3) / bytes(syn)[:48])
    r = one([("eth0", 0, syn), ("eth0", 40, err), ("eth0", 1_000_000, syn), ("eth0", 1_000_040, err),
             pad(3_000_000)])
    want = (3, 1) if family == 4 else (1, 3)
    assert (r.outcome, r.syn_count, r.packets) == ("unreachable", 2, 4)
    assert r.icmp == {"family": family, "type": want[0], "code": want[1], "from": router, "count": 2}
    assert (r.conn_state, r.history) == ("S0", "S")  # Zeek keeps ICMP out of the TCP history


def test_icmp_then_a_syn_ack_is_established_icmp_is_soft():
    syn = tcp(C, S, SP, DP, "S", IC)
    err = IP(src=R, dst=C) / ICMP(type=3, code=1) / bytes(syn)[:28]
    r = one([("eth0", 0, syn), ("eth0", 40, err)] + handshake("eth0", 1_000_000, SP, DP, IC, IS))
    assert (r.outcome, r.syn_count) == ("established", 2)
    assert r.icmp["count"] == 1


@pytest.mark.parametrize("side, history, state", [("client", "ShAR", "RSTO"), ("server", "ShADr", "RSTR")])
def test_reset_after_the_handshake_by_either_side(side, history, state):
    frames = handshake("eth0", 0, SP, DP, IC, IS)
    if side == "client":
        frames.append(("eth0", 300, tcp(C, S, SP, DP, "R", IC + 1)))
    else:
        frames += [("eth0", 300, tcp(C, S, SP, DP, "PA", IC + 1, IS + 1, b"x" * 20)),
                   ("eth0", 400, tcp(S, C, DP, SP, "RA", IS + 1, IC + 21))]
    r = one(frames)
    assert (r.outcome, r.reset_by, r.conn_state, r.history) == ("reset", side, state, history)
    assert "after the handshake" in r.detail


def test_client_rst_before_any_answer_is_rstos0():
    r = one([("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(C, S, SP, DP, "R", IC + 1))])
    assert (r.outcome, r.reset_by, r.conn_state, r.history) == ("reset", "client", "RSTOS0", "SR")
    assert "before any answer" in r.detail


@pytest.mark.parametrize("who, history, state, outcome", [
    ("client", "ShAF", "S2", "established"), ("server", "ShAf", "S3", "established")])
def test_half_closed(who, history, state, outcome):
    frames = handshake("eth0", 0, SP, DP, IC, IS)
    frames.append(("eth0", 300, tcp(C, S, SP, DP, "FA", IC + 1, IS + 1) if who == "client"
                   else tcp(S, C, DP, SP, "FA", IS + 1, IC + 1)))
    r = one(frames)
    assert (r.outcome, r.conn_state, r.history) == (outcome, state, history)
    assert f"FIN from the {who} only" in r.detail


def test_syn_then_fin_without_answer_is_sh_and_incomplete():
    r = one([("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(C, S, SP, DP, "F", IC + 1))])
    assert (r.outcome, r.conn_state, r.history) == ("incomplete", "SH", "SF")


def test_unacknowledged_syn_ack_is_incomplete_and_s1_for_zeek():
    r = one(handshake("eth0", 0, SP, DP, IC, IS)[:2])
    assert (r.outcome, r.state, r.conn_state, r.history) == ("incomplete", "SYN_RCVD", "S1", "Sh")


def test_mid_stream_exchange():
    frames = [("eth0", 0, tcp(C, S, SP, DP, "PA", IC, IS, b"abc")), ("eth0", 100, tcp(S, C, DP, SP, "PA", IS, IC + 3, b"de"))]
    r = one(frames)
    assert (r.outcome, r.partial, r.syn_count, r.conn_state, r.history) == ("incomplete", True, 0, "OTH", "Dd")
    assert (r.orig_p, r.resp_p) == (SP, DP)  # the sender of the first packet


def test_syn_ack_first_is_flipped_by_zeek_from_a_likely_server_port_only():
    frames = [("eth0", 0, tcp(S, C, 80, SP, "SA", IS, IC + 1)), ("eth0", 100, tcp(S, C, 80, SP, "FA", IS + 1, IC + 1))]
    r = one(frames)
    # we orient by the SYN-ACK (its receiver is the client); Zeek flips too, as 80 is a likely port
    assert (r.orig_h, r.orig_p, r.history, r.conn_state, r.zeek_orig_h) == (C, SP, "^hf", "SHR", None)
    bare = one(frames, likely_server_ports=frozenset())
    assert (bare.history, bare.conn_state, bare.extra["zeek_orig"]) == ("HF", "SH", f"{S}:80")


def test_retransmitted_data_is_scaled_t_letters():
    frames = handshake("eth0", 0, SP, DP, IC, IS)
    frames += [("eth0", 300 + 10 * k, tcp(C, S, SP, DP, "PA", IC + 1, IS + 1, b"x" * 10)) for k in range(11)]
    r = one(frames)
    # the first copy is data; retransmissions 1 and 10 each add a T (Zeek's log scale: 1, 10, 100...)
    assert r.history == "ShADTT"


def test_zero_window_and_content_gap():
    frames = handshake("eth0", 0, SP, DP, IC, IS) + [
        ("eth0", 300, tcp(C, S, SP, DP, "PA", IC + 1, IS + 1, b"a" * 10)),
        ("eth0", 400, tcp(C, S, SP, DP, "PA", IC + 21, IS + 1, b"b" * 10)),  # bytes 11-20 never captured
        ("eth0", 500, tcp(S, C, DP, SP, "A", IS + 1, IC + 31)),  # ... but acknowledged: a gap
    ]
    assert one(frames).history == "ShADaG"
    win0 = handshake("eth0", 0, SP, DP, IC, IS)
    zero = tcp(S, C, DP, SP, "A", IS + 1, IC + 1)
    zero[TCP].window = 0
    win0.append(("eth0", 300, zero))
    assert one(win0).history == "ShAaw"


def test_bad_checksum_is_a_c_letter_only_when_checked():
    bad = tcp(C, S, SP, DP, "S", IC)
    bad[TCP].chksum = 0x1234
    frames = [("eth0", 0, bad), pad(2_000_000)]
    assert (one(frames).history, one(frames).outcome) == ("S", "timed-out")
    checked = one(frames, checksums=True)
    assert (checked.history, checked.conn_state) == ("C", "OTH")
    good = one([("eth0", 0, tcp(C, S, SP, DP, "S", IC)), pad(2_000_000)], checksums=True)
    assert good.history == "S"


def test_zeek_grouping_splits_where_zeek_does():
    # a refused SYN sent again (Windows does): one attempt for us, two conn.log rows for Zeek (reuse)
    rej = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 50, tcp(S, C, DP, SP, "RA", 0, IC + 1)),
           ("eth0", 500_000, tcp(C, S, SP, DP, "S", IC)), ("eth0", 500_050, tcp(S, C, DP, SP, "RA", 0, IC + 1))]
    r = one(rej)
    assert (r.outcome, r.syn_count, r.history) == ("refused", 2, "Sr")
    assert [(z.conn_state, z.history) for z in records(rej, grouping="zeek")] == [("REJ", "Sr"), ("REJ", "Sr")]
    # a SYN retried after Zeek's 5 s attempt timer: a new row for Zeek
    late = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 6_000_000, tcp(C, S, SP, DP, "S", IC)), pad(9_000_000)]
    assert one(late).syn_count == 2
    assert [(z.conn_state, z.history, z.syn_count) for z in records(late, grouping="zeek")] == [
        ("S0", "S", 1), ("S0", "S", 1)]
    # a new SYN (new ISN) after a close: a new attempt for both
    again = full_exchange(0) + [("eth0", 2000, tcp(C, S, SP, DP, "S", IC + 99999))]
    assert [x.outcome for x in records(again)] == ["closed", "incomplete"]
    assert len(records(again, grouping="zeek")) == 2


def test_several_interfaces_count_once_on_the_first():
    path = ["client:eth0", "router:eth1"]
    frames = []
    for k, iface in enumerate(path):
        frames += [(iface, t + 2 * k, pkt) for _, t, pkt in full_exchange()]
    r = one(frames)
    assert (r.iface, r.packets, r.history) == ("client:eth0", 10, "ShADadFf")
    (d,) = detailed(frames)
    assert (d.iface, d.packets, d.history) == ("client:eth0", 10, "ShADadFf")


def test_zeek_machine_directly_a_syn_with_a_new_isn_restarts_the_numbering():
    z = ZeekConn.create(("a", 1), ("b", 2), 0x02, 0)
    for seq in (100, 100, 200):
        z.process(True, 0, 0x02, seq, 0, 0, 1000)
    # init_endpoint re-bases the endpoint on a SYN_seq_jump, so the new SYN is at relative 0 again:
    # the same relative sequence number as the first, hence no second 'S'
    assert z.history == "S" and z.conn_state() == "S0"
    z.process(False, 0, 0x12, 7000, 201, 0, 1000)
    z.process(False, 0, 0x12, 7000, 201, 0, 1000)  # a retransmitted SYN-ACK
    assert z.history == "Sh" and z.conn_state() == "S1"
    assert ZeekConn.wants_flip(0x12, 80, 40000, DEFAULT_LIKELY_SERVER_PORTS)
    assert not ZeekConn.wants_flip(0x02, 80, 40000, DEFAULT_LIKELY_SERVER_PORTS)
    assert ZeekConn.wants_flip(0x10, 80, 443, DEFAULT_LIKELY_SERVER_PORTS)  # both likely: the lower flips
    assert not ZeekConn.wants_flip(0x10, 443, 80, DEFAULT_LIKELY_SERVER_PORTS)


def test_classify_trace_is_the_same_check_on_a_live_style_trace():
    from verifier.replay import check

    trace = load_trace(write([("eth0", 0, tcp(C, S, SP, 5000, "S", IC)),
                              ("eth0", 50, tcp(S, C, 5000, SP, "RA", 0, IC + 1))]))
    (v,) = check(trace, "every attempt to port 5000 is refused")
    assert v.ok, v.text()
    (v,) = check(trace, "port 5000 established")
    assert not v.ok and "refused" in v.text()


def test_record_json_has_the_fields_scripts_rely_on():
    r = one(full_exchange())
    d = r.as_json()
    for k in ("orig_h", "orig_p", "resp_h", "resp_p", "outcome", "syn_count", "conn_state", "history"):
        assert k in d
    assert classify.MAX_SYN_TIMES >= 16
