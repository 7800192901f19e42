"""The attempt machine (`verifier.analysis.attempt`) and Zeek's reading (`verifier.analysis.zeek`),
on crafted exchanges.

Every exchange is written to a pcapng file and read by the compiled engine (`Scan`, what `verifier
replay` prints) and by the plain-Python reference in a subprocess (`VERIFIER_PURE=1`), which must
agree record for record, and by `load_trace` (what `expect()` judges), whose connections are the
same attempts. The expected outcomes follow RFC 9293's segment processing (cited per test); the
expected Zeek histories are worked out by hand from Zeek's rules (TCPSessionAdapter.cc and
TCP_Endpoint.cc: the letters and their repeat rules), not taken from our output.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from scapy.all import ICMP, IP, TCP, ICMPv6DestUnreach, IPv6

from verifier.analysis.attempt import (EVENT_NOTES, EVENTS, NEXT, OUTCOMES, STATES, TRANSITIONS, Machine,
                                       outcome_of)
from verifier.analysis.trace import load_trace
from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS, ZeekConn
from verifier.replay.scan import Scan

from .crafted import C, C6, R, S, S6, handshake, tcp, write

SP, DP = 40000, 8080  # DP is one of Zeek's likely server ports (HTTP alternate)
IC, IS = 1000, 5000  # ISNs
VERIFIER = os.path.join(os.path.dirname(sys.executable), "verifier")


def records(frames, *, pure: bool = True, **kw):
    """Attempts of crafted frames from the compiled engine; the pure-Python reference (a subprocess)
    and `load_trace` must say the same."""
    data = write(frames).getvalue()
    recs = sorted(Scan(io.BytesIO(data), **kw), key=lambda r: r.id)
    if not kw:
        conns = load_trace(io.BytesIO(data)).connections
        assert [c.as_json() for c in conns] == [r.as_json() for r in recs], "load_trace and the scan disagree"
    if pure:
        assert _pure(data, **kw) == [json.loads(r.json_line()) for r in recs], "compiled and pure engines disagree"
    return recs


def _pure(data: bytes, grouping: str = "attempt", checksums: bool = False, likely_server_ports=None) -> list:
    args = [VERIFIER, "replay", "/dev/stdin", "--json"]
    if grouping == "zeek":
        args.append("--zeek-sessions")
    if checksums:
        args.append("--checksums")
    if likely_server_ports is not None:
        assert not likely_server_ports
        args.append("--zeek-bare")
    res = subprocess.run(args, input=data, capture_output=True, env=dict(os.environ, VERIFIER_PURE="1"), timeout=60)
    assert res.returncode in (0, 3), res.stderr.decode()
    assert b"[python engine]" in res.stderr, res.stderr.decode()
    return [json.loads(line) for line in res.stdout.splitlines()]


def one(frames, **kw):
    (rec,) = records(frames, **kw)
    return rec


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


def events(rec) -> list[str]:
    """The attempt machine's event for each packet (through the Trace view of the same capture)."""
    return [e.event for e in rec.events]


# ---------------------------------------------------------------------------------------------------
# the table itself


def test_the_table_is_one_table_over_known_states_and_events():
    assert len(set(STATES)) == len(STATES) and len(set(EVENTS)) == len(EVENTS)
    for (state, event), new in TRANSITIONS.items():
        assert state in STATES and event in EVENTS and new in STATES
    # the flat tuple the engine indexes is the same table; a missing pair is -1 (reported, not kept)
    for si, s in enumerate(STATES):
        for ei, e in enumerate(EVENTS):
            assert NEXT[si * len(EVENTS) + ei] == (STATES.index(TRANSITIONS[(s, e)]) if (s, e) in TRANSITIONS else -1)
    # every event that changes nothing has its meaning written out for the ladders
    assert set(EVENT_NOTES) == {"SYNACK_S_BAD", "RST_C_IGNORED", "RST_S_IGNORED", "RST_C_CHALLENGE",
                                "RST_S_CHALLENGE", "ICMP_IGNORED", "RST_C_ANSWER"}


def test_final_states_only_loop_and_every_outcome_is_reachable():
    for final in ("CLOSED", "RESET_CLIENT", "RESET_SERVER"):
        assert {new for (s, _), new in TRANSITIONS.items() if s == final} == {final}, final
    # a refusal is left only by a same-ISN SYN (the RST never reached the client) or a late SYN-ACK
    assert {e for (s, e), new in TRANSITIONS.items() if s == "REFUSED" and new != "REFUSED"} == {"SYN_C", "SYNACK_S"}
    # an ignored RST, a challenged one and an ignored ICMP error never change the state
    for (s, e), new in TRANSITIONS.items():
        if e in ("RST_C_IGNORED", "RST_S_IGNORED", "RST_C_CHALLENGE", "RST_S_CHALLENGE", "ICMP_IGNORED",
                 "SYNACK_S_BAD", "RST_C_ANSWER"):
            assert new == s, (s, e)
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
    outcomes.add(outcome_of(STATES.index("SYN_SENT"), 3, syn_count=1, last_syn_age_s=5.0, lost=7)[0])
    assert outcomes == set(OUTCOMES)


def test_a_pair_missing_from_the_table_is_reported_not_kept():
    # after both FINs, a retransmitted copy of the client's SYN (same ISN, so the same attempt):
    # (CLOSED, SYN_C) is not in the table on purpose: the machine cannot explain it
    frames = full_exchange() + [("eth0", 1000, tcp(C, S, SP, DP, "S", IC))]
    r = one(frames)
    assert (r.state, r.outcome) == ("CLOSED", "closed")
    assert r.machine.misses == 1 and r.unexpected == ("CLOSED", "SYN_C", 10)
    assert r.as_json()["unexpected"] == 1
    (c,) = load_trace(write(frames)).connections
    assert "no transition for SYN_C in CLOSED" in c.events[-1].note
    st = Scan(write(frames))
    list(st)
    assert st.stats.unexpected == 1 and "1 packets the attempt table has no transition for" in st.stats.notes()


def test_the_machine_directly():
    m = Machine()
    assert m.segment(True, 0x02, IC, 0, 64240, 0, 7, 0) == EVENTS.index("SYN_C")
    # a SYN-ACK for another ISN: the client resets it and keeps waiting (RFC 9293 3.10.7.3)
    assert m.segment(False, 0x12, IS, IC + 7, 65535, 0, 7, 1) == EVENTS.index("SYNACK_S_BAD")
    assert m.state_name == "SYN_SENT" and m.bad_synacks == 1
    assert m.segment(False, 0x12, IS, IC + 1, 65535, 0, 7, 2) == EVENTS.index("SYNACK_S")
    assert m.segment(True, 0x10, IC + 1, IS + 1, 502, 0, None, 3) == EVENTS.index("ACK_C")
    assert m.state_name == "ESTABLISHED" and m.established and m.misses == 0


# ---------------------------------------------------------------------------------------------------
# RFC 9293: which RSTs, SYN-ACKs and ICMP errors count


def _syn_then(answer, *more):
    return [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 50, answer), *more, pad(3_000_000)]


def test_rst_ack_of_isn_plus_one_refuses():
    # 3.10.7.3 SYN-SENT: "If the RST bit is set, If the ACK was acceptable then signal to the user
    # 'error: connection reset', drop the segment, enter CLOSED state"
    r = one(_syn_then(tcp(S, C, DP, SP, "RA", 0, IC + 1)))
    assert (r.outcome, r.state, r.conn_state) == ("refused", "REFUSED", "REJ")
    assert r.readings_differ() is None


@pytest.mark.parametrize("flags, ack, why", [("R", 0, "no ACK bit"), ("RA", IC + 2, "an ACK of ISN + 2"),
                                             ("RA", IC, "an ACK of the ISN itself")])
def test_rst_without_an_acceptable_ack_in_syn_sent_is_dropped(flags, ack, why):
    # 3.10.7.3 SYN-SENT: "If the ACK bit is set: If SEG.ACK =< ISS, or SEG.ACK > SND.NXT ... (unless
    # the RST bit is set, if so drop the segment and return)"; "If the ACK bit is off ... drop the
    # segment and return". The client keeps retransmitting: the attempt times out.
    r = one(_syn_then(tcp(S, C, DP, SP, flags, 0, ack)))
    assert (r.outcome, r.state) == ("timed-out", "SYN_SENT"), why
    assert r.machine.ignored_rsts == 1
    (c,) = load_trace(write(_syn_then(tcp(S, C, DP, SP, flags, 0, ack)))).connections
    assert events(c)[1] == "RST_S_IGNORED" and "dropped by the client's stack" in c.events[1].note
    # Zeek's reading is its own: it calls this REJ; both are reported, each with its meaning
    assert r.conn_state == "REJ" and "REJ" in r.readings_differ() and "timed-out" in r.readings_differ()
    assert r.as_json()["readings_differ"] == r.readings_differ()


def _established(*more):
    return handshake("eth0", 0, SP, DP, IC, IS) + list(more)


def test_exact_rst_resets_an_established_connection():
    # 3.10.7.4 (RFC 5961 3.2): "If the RST bit is set and the sequence number exactly matches the next
    # expected sequence number (RCV.NXT), then TCP endpoints MUST reset the connection"
    r = one(_established(("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1))))
    assert (r.outcome, r.reset_by, r.machine.challenged_rsts, r.machine.ignored_rsts) == ("reset", "server", 0, 0)


def test_in_window_rst_draws_a_challenge_ack_and_changes_nothing():
    # 3.10.7.4: "If the RST bit is set and the sequence number does not exactly match the next
    # expected sequence value, yet is within the current receive window, TCP endpoints MUST send an
    # acknowledgment (challenge ACK)": the connection goes on and closes normally
    c2, s2 = IC + 1, IS + 1
    frames = _established(
        ("eth0", 300, tcp(S, C, DP, SP, "R", s2 + 1000)),          # inside the client's window (64k)
        ("eth0", 310, tcp(C, S, SP, DP, "A", c2, s2)),             # the challenge ACK
        ("eth0", 400, tcp(C, S, SP, DP, "FA", c2, s2)), ("eth0", 500, tcp(S, C, DP, SP, "FA", s2, c2 + 1)),
        ("eth0", 600, tcp(C, S, SP, DP, "A", c2 + 1, s2 + 1)))
    r = one(frames)
    assert (r.outcome, r.reset_by, r.machine.challenged_rsts) == ("closed", None, 1)
    (c,) = load_trace(write(frames)).connections
    assert events(c)[3] == "RST_S_CHALLENGE" and "challenge ACK" in c.events[3].note


def test_out_of_window_rst_is_ignored():
    # 3.10.7.4: "If the RST bit is set and the sequence number is outside the current receive window,
    # silently drop the segment"
    r = one(_established(("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1 + 200_000))))
    assert (r.outcome, r.state, r.machine.ignored_rsts) == ("established", "ESTABLISHED", 1)


def test_the_receive_window_is_scaled_when_both_syns_offer_a_scale():
    # RFC 7323 2.2: the window of a segment without SYN is shifted by the sender's scale, when both
    # SYNs carried the option. 200000 bytes beyond RCV.NXT: out of a 64k window, in a 64k << 7 one.
    syn = tcp(C, S, SP, DP, "S", IC)
    syn[TCP].options = [("WScale", 7)]
    synack = tcp(S, C, DP, SP, "SA", IS, IC + 1)
    synack[TCP].options = [("WScale", 7)]
    frames = [("eth0", 0, syn), ("eth0", 100, synack), ("eth0", 200, tcp(C, S, SP, DP, "A", IC + 1, IS + 1)),
              ("eth0", 300, tcp(S, C, DP, SP, "R", IS + 1 + 200_000))]
    r = one(frames)
    assert (r.outcome, r.machine.challenged_rsts, r.machine.ignored_rsts) == ("established", 1, 0)
    syn[TCP].options = []  # only one side offers a scale: no scaling, the RST is out of the window
    r = one(frames)
    assert (r.outcome, r.machine.challenged_rsts, r.machine.ignored_rsts) == ("established", 0, 1)


def test_rst_one_below_rcv_nxt_after_the_senders_fin_resets():
    # Linux accepts it (tcp_reset_check: seq == rcv_nxt - 1 in CLOSE-WAIT/LAST-ACK/CLOSING)
    frames = _established(("eth0", 300, tcp(S, C, DP, SP, "FA", IS + 1, IC + 1)),
                          ("eth0", 400, tcp(S, C, DP, SP, "R", IS + 1)))
    r = one(frames)
    assert (r.outcome, r.reset_by) == ("reset", "server")


def test_syn_ack_with_a_bad_ack_then_a_good_one():
    # 3.10.7.3 SYN-SENT: an unacceptable SYN-ACK gets a RST <SEQ=SEG.ACK> and the client waits on
    frames = _syn_then(tcp(S, C, DP, SP, "SA", IS, IC + 77),
                       ("eth0", 60, tcp(C, S, SP, DP, "R", IC + 77)),
                       ("eth0", 1_000_000, tcp(C, S, SP, DP, "S", IC)),
                       ("eth0", 1_000_050, tcp(S, C, DP, SP, "SA", IS, IC + 1)),
                       ("eth0", 1_000_100, tcp(C, S, SP, DP, "A", IC + 1, IS + 1)))
    r = one(frames)
    assert (r.outcome, r.state, r.machine.bad_synacks) == ("established", "ESTABLISHED", 1)
    (c,) = load_trace(write(frames)).connections
    assert events(c)[:3] == ["SYN_C", "SYNACK_S_BAD", "RST_C_ANSWER"]


def test_simultaneous_open():
    # 3.5 figure 8: both sides send SYN, each answers with SYN-ACK; one connection
    frames = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 10, tcp(S, C, DP, SP, "S", IS)),
              ("eth0", 100, tcp(S, C, DP, SP, "SA", IS, IC + 1)), ("eth0", 110, tcp(C, S, SP, DP, "SA", IC, IS + 1)),
              ("eth0", 200, tcp(C, S, SP, DP, "A", IC + 1, IS + 1))]
    r = one(frames)
    assert (r.outcome, r.state, r.machine.misses) == ("established", "ESTABLISHED", 0)


def test_a_retransmitted_syn_answered_late():
    # SYN, its retransmission, the SYN-ACK to the first, the ACK, then the SYN-ACK to the second:
    # established, and the late SYN-ACK is answered and ignored (no miss)
    frames = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 1_000_000, tcp(C, S, SP, DP, "S", IC)),
              ("eth0", 1_000_100, tcp(S, C, DP, SP, "SA", IS, IC + 1)),
              ("eth0", 1_000_200, tcp(C, S, SP, DP, "A", IC + 1, IS + 1)),
              ("eth0", 1_000_300, tcp(S, C, DP, SP, "SA", IS, IC + 1))]
    r = one(frames)
    assert (r.outcome, r.syn_count, r.machine.misses) == ("established", 2, 0)


def test_icmp_quoting_a_sequence_number_never_sent_is_ignored():
    # Linux's tcp_v4_err: an error whose quoted seq is not between SND.UNA and SND.NXT is ignored
    syn = tcp(C, S, SP, DP, "S", IC)
    forged = tcp(C, S, SP, DP, "S", IC + 123456)
    err = IP(src=R, dst=C) / ICMP(type=3, code=1) / bytes(forged)[:28]
    r = one([("eth0", 0, syn), ("eth0", 40, err), pad(3_000_000)])
    assert (r.outcome, r.machine.ignored_icmp, r.icmp["count"]) == ("timed-out", 1, 1)


# ---------------------------------------------------------------------------------------------------
# outcomes, SYN schedules, ICMP, and Zeek's conn_state/history for each


def test_full_exchange_is_closed_and_zeek_says_sf():
    r = one(full_exchange())
    assert (r.outcome, r.reset_by, r.syn_count, r.npackets) == ("closed", None, 1, 10)
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p, r.family) == (C, SP, S, DP, 4)
    assert (r.conn_state, r.history) == ("SF", "ShADadFf")
    assert r.isn == IC and r.rtt_s == pytest.approx(100e-6)



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
    assert (r.outcome, r.syn_count, r.npackets) == ("unreachable", 2, 4)
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
    assert (bare.history, bare.conn_state, bare.as_json()["zeek_orig"]) == ("HF", "SH", f"{S}:80")


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
    assert (r.iface_name, r.npackets, r.history) == ("client:eth0", 10, "ShADadFf")
    assert r.copies == 10


def test_zeek_machine_directly_a_syn_with_a_new_isn_restarts_the_numbering():
    z = ZeekConn.create(bytes([192, 0, 2, 1, 0, 1]), bytes([198, 51, 100, 2, 0, 2]), 0x02, 0)
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



def test_record_json_has_the_fields_scripts_rely_on():
    r = one(full_exchange())
    d = r.as_json()
    for k in ("orig_h", "orig_p", "resp_h", "resp_p", "outcome", "detail", "syn_count", "conn_state", "history",
              "state", "lost", "evicted", "ignored_rsts", "challenged_rsts", "unexpected"):
        assert k in d
    assert json.loads(r.json_line()) == d
