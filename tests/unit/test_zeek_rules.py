"""Zeek's connection semantics, rule by rule, on crafted captures (issue 12).

Each test crafts the packets one rule of Zeek's TCP analysis is about and checks the conn.log rows
our Zeek reading (`verifier.analysis.zeek`, grouped as Zeek does: `grouping="zeek"`) gives. The
expected rows are worked out by hand from Zeek's source, cited in each docstring (zeek/zeek:
src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc, TCP.cc, src/analyzer/protocol/tcp/
TCP_Endpoint.cc, TCP_Reassembler.cc, src/Conn.cc, scripts/base/init-bare.zeek and
scripts/base/protocols/conn/{main,inactivity}.zeek); none is copied from our own output. Every
capture is read by the compiled engine and by the pure-Python reference in a subprocess, which must
agree record for record (`records` of test_attempt).

Zeek's default timers (init-bare.zeek): tcp_SYN_timeout 5 s, tcp_session_timer 6 s,
tcp_connection_linger 5 s, tcp_attempt_delay 5 s, tcp_close_delay 5 s, tcp_inactivity_timeout 5 min,
udp_inactivity_timeout 1 min (a new TCP connection's until its handshake is over).
"""

from __future__ import annotations

from scapy.all import TCP

from verifier.analysis import zeeklog

from .crafted import C, S, handshake, tcp
from .test_attempt import IC, IS, SP, full_exchange, pad, records

DP = 8080  # a likely server port (HTTP alternate); SP (40000) is not one
MIN = 60_000_000  # a minute in the capture's microseconds


def rows(frames, **kw) -> list[tuple]:
    """(conn_state, history) of each conn.log row Zeek would write, in the order they started."""
    return [(r.conn_state, r.history) for r in records(frames, grouping="zeek", **kw)]


def established(t: int = 0, sport: int = SP, dport: int = DP):
    """A handshake and one data segment from the client: Zeek's history ShAD, both ESTABLISHED."""
    return handshake("eth0", t, sport, dport, IC, IS) + [
        ("eth0", t + 300, tcp(C, S, sport, dport, "PA", IC + 1, IS + 1, b"0123456789"))]


# ---------------------------------------------------------------------------------------------------
# connection lifetime


def test_tcp_inactivity_timeout_ends_a_silent_connection():
    """Connection::InactivityTimer removes a connection idle for its inactivity timeout, which
    TCP_Endpoint::SetState made tcp_inactivity_timeout (5 min) when the handshake ended. The next
    packet of the 4-tuple makes a new connection (session::Manager finds none): here the server's
    data, from a likely server port to a port that is not one, so TCPAnalyzer::WantConnection flips
    it ('^', the server is the responder again) and the server, in PARTIAL, is lower case: OTH ^d."""
    later = lambda gap: established() + [  # noqa: E731
        ("eth0", 300 + gap, tcp(S, C, DP, SP, "PA", IS + 1, IC + 11, b"late"))]
    assert rows(later(5 * MIN - 1000)) == [("S1", "ShADd")]
    assert rows(later(5 * MIN + 1000)) == [("S1", "ShAD"), ("OTH", "^d")]


def test_interactive_ports_get_an_hour_of_inactivity():
    """base/protocols/conn/inactivity.zeek: on connection_established (raised by
    UpdateInactiveState for the responder's SYN-ACK) a responder port in
    Conn::port_inactivity_timeouts (21, 22, 23, 513) sets the inactivity timeout to 1 h."""
    def later(gap):
        return established(dport=22) + [("eth0", 300 + gap, tcp(S, C, 22, SP, "PA", IS + 1, IC + 11, b"$ "))]
    assert rows(later(20 * MIN)) == [("S1", "ShADd")]
    assert len(rows(later(61 * MIN))) == 2
    # without a SYN-ACK there is no connection_established: the 5 min of any TCP connection
    mid = [("eth0", 0, tcp(C, S, SP, 22, "PA", IC, IS, b"ls\n")), ("eth0", 20 * MIN, tcp(C, S, SP, 22, "PA", IC + 3, IS, b"x"))]
    assert len(rows(mid)) == 2


def test_attempt_delay_ends_an_unanswered_syn():
    """UpdateInactiveState sets the AttemptTimer tcp_attempt_delay (5 s) after the originator's SYN;
    AttemptTimer removes the connection if the responder is still INACTIVE (conn_state S0). A SYN-ACK
    after that starts a new connection: it comes from a likely server port, so WantConnection flips
    it, and the responder's SYN-ACK leaves the originator INACTIVE: OTH ^h."""
    def answered(at_us):
        return [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", at_us, tcp(S, C, DP, SP, "SA", IS, IC + 1)),
                pad(at_us + 1_000_000)]
    assert rows(answered(4_900_000)) == [("S1", "Sh")]
    assert rows(answered(5_100_000)) == [("S0", "S"), ("OTH", "^h")]


def test_close_delay_after_a_full_close_counts_from_the_last_activity():
    """ConnectionClosed: once both sides closed (close_complete) the timers are cancelled and the
    connection deleted tcp_close_delay (5 s) after Conn()->LastTime(), which Process() stops
    updating once both endpoints did_close. So a client RST 4 s after the last FIN still belongs
    to it (R in the history; UpdateClosedState keeps both CLOSED: SF), and a packet 4 s after that
    RST (8 s after the close) is a new connection (a lone RST: OTH R)."""
    base = full_exchange()  # ends at 900 us with the client's last ACK: SF ShADadFf
    rst = ("eth0", 900 + 4_000_000, tcp(C, S, SP, DP, "R", IC + 12, 0))
    assert rows(base + [rst]) == [("SF", "ShADadFfR")]
    rst2 = ("eth0", 900 + 8_000_000, tcp(C, S, SP, DP, "R", IC + 12, 0))
    assert rows(base + [rst, rst2]) == [("SF", "ShADadFfR"), ("OTH", "R")]
    assert rows(base + [("eth0", 900 + 6_000_000, rst[2])]) == [("SF", "ShADadFf"), ("OTH", "R")]


def test_a_reset_is_a_complete_close():
    """ConnectionClosed: an endpoint in RESET makes close_complete, so the connection is deleted
    tcp_close_delay (5 s) after its last packet; the server's ACK 3 s later still joins it, 6 s
    later it opens a new one (a lone ACK from the likely port: flipped, OTH ^a)."""
    base = established() + [("eth0", 400, tcp(C, S, SP, DP, "R", IC + 11, 0))]
    ack = lambda t: ("eth0", 400 + t, tcp(S, C, DP, SP, "A", IS + 1, IC + 11))  # noqa: E731
    assert rows(base + [ack(3_000_000)]) == [("RSTO", "ShADRa")]
    assert rows(base + [ack(6_000_000)]) == [("RSTO", "ShADR"), ("OTH", "^a")]


def test_a_half_close_waits_for_the_inactivity_timeout():
    """A FIN from one side of an established connection is no complete close: ConnectionClosed
    sets an ExpireTimer (tcp_session_timer, 6 s), and ExpireTimer only removes a connection idle
    for tcp_connection_linger whose sides both closed, or one reset, or one is INACTIVE; else it
    re-arms. So the server may answer after 4 minutes (S2 becomes SF), and after 6 minutes the
    inactivity timer has ended it."""
    base = established() + [("eth0", 400, tcp(C, S, SP, DP, "FA", IC + 11, IS + 1))]
    fin = lambda t: ("eth0", 400 + t, tcp(S, C, DP, SP, "FA", IS + 1, IC + 12))  # noqa: E731
    assert rows(base + [pad(400 + 30_000_000)]) == [("S2", "ShADF")]
    assert rows(base + [fin(4 * MIN)]) == [("SF", "ShADFf")]
    assert rows(base + [fin(6 * MIN)]) == [("S2", "ShADF"), ("SHR", "^f")]  # a lone FIN of the responder


def test_a_syn_then_fin_with_no_answer_closes_at_once():
    """ConnectionClosed: a FIN while the peer is INACTIVE is a complete close (SH), deleted
    tcp_close_delay (5 s) later: a SYN with the same ISN 6 s later is a new connection."""
    frames = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(C, S, SP, DP, "FA", IC + 1, 0)),
              ("eth0", 6_000_000, tcp(C, S, SP, DP, "S", IC)), pad(7_000_000)]
    assert rows(frames) == [("SH", "SF"), ("S0", "S")]


def test_a_syn_with_a_new_isn_reuses_the_4_tuple():
    """TCPSessionAdapter::IsReuse: an initial SYN whose sequence number is not the originator's
    StartSeq ends the connection (active_connection_reuse) and starts a new one; the same ISN
    (a retransmission) does not."""
    first = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 1_000_000, tcp(C, S, SP, DP, "S", IC))]
    assert rows(first + [pad(2_000_000)]) == [("S0", "S")]
    assert rows(first + [("eth0", 2_000_000, tcp(C, S, SP, DP, "S", IC + 7)), pad(3_000_000)]) == [
        ("S0", "S"), ("S0", "S")]


# ---------------------------------------------------------------------------------------------------
# direction


def _orig(frames, **kw) -> list[tuple]:
    """(Zeek's originator port, history) per row."""
    out = []
    for r in records(frames, grouping="zeek", **kw):
        zo = r.zeek_orig
        out.append((zo[1] if zo is not None else r.orig_p, r.history))
    return out


def test_the_sender_of_a_first_syn_is_the_originator_whatever_its_port():
    """TCPAnalyzer::WantConnection only considers flipping a connection whose first packet is not
    a plain SYN: a SYN from port 80 to 40000 is originated by port 80."""
    assert _orig([("eth0", 0, tcp(C, S, 80, SP, "S", IC)), pad(1_000_000)]) == [(80, "S")]


def test_a_first_packet_without_syn_is_flipped_from_a_likely_server_port():
    """WantConnection: a first packet without SYN (or a SYN-ACK) from a likely server port to a port
    that is not one is flipped: its receiver is the originator and the history starts with '^'
    (Connection::FlipRoles). From the other side it is not; in bare mode (no likely server ports,
    zeek -b) it never is."""
    data = lambda sp, dp: [("eth0", 0, tcp(C, S, sp, dp, "PA", IC, IS, b"x"))]  # noqa: E731
    assert _orig(data(443, SP)) == [(SP, "^d")]
    assert _orig(data(SP, 443)) == [(SP, "D")]
    assert _orig(data(443, SP), likely_server_ports=frozenset()) == [(443, "D")]


def test_both_ports_likely_the_lower_one_is_the_server():
    """WantConnection with both ports likely server ports: a packet without SYN is flipped when its
    source port is the lower one (80 -> 8080 flips, 8080 -> 80 does not). For a SYN-ACK Zeek's
    source says never, yet Zeek's own flip-without-syn trace (SYN-ACK 80 -> 6669, both likely) is
    logged flipped, and we follow the logged behaviour (a difference the README lists)."""
    data = lambda sp, dp: [("eth0", 0, tcp(C, S, sp, dp, "PA", IC, IS, b"x"))]  # noqa: E731
    assert _orig(data(80, 8080)) == [(8080, "^d")]
    assert _orig(data(8080, 80)) == [(8080, "D")]
    assert _orig([("eth0", 0, tcp(S, C, 80, 6669, "SA", IS, IC + 1)), pad(1_000_000)]) == [(6669, "^h")]


def test_a_syn_ack_seen_before_its_syn_flips_and_establishes():
    """UpdateInactiveState: a SYN without ACK from the responder while the originator is in
    SYN_ACK_SENT, with the sequence number the SYN-ACK acknowledged, is the SYN/SYN-ACK pair seen
    in reverse order (two interfaces, interrupt coalescence): FlipRoles, both ESTABLISHED. The
    history keeps its letters as they were written (H by the then originator, s by the then
    responder) and gains the '^'; the client's ACK is then the originator's A."""
    sa = tcp(S, C, 9999, SP, "SA", IS, IC + 1)  # 9999 is no likely server port: no flip at creation
    frames = [("eth0", 0, sa), ("eth0", 10, tcp(C, S, SP, 9999, "S", IC)),
              ("eth0", 20, tcp(C, S, SP, 9999, "A", IC + 1, IS + 1))]
    assert _orig(frames) == [(SP, "Hs^A")]
    assert [r.conn_state for r in records(frames, grouping="zeek")] == ["S1"]


def test_both_endpoints_on_one_address():
    """Zeek's connection key (IPBasedAnalyzer / ConnKey) orders the endpoints by address and then
    port, so two sockets of one host are two endpoints like any others: the SYN's sender is the
    originator whether its port is the higher or the lower one."""
    for cport, sport in ((SP, DP), (DP, SP)):
        frames = handshake("eth0", 0, cport, sport, IC, IS, client=C, server=C)
        frames += [("eth0", 300, tcp(C, C, cport, sport, "FA", IC + 1, IS + 1)),
                   ("eth0", 400, tcp(C, C, sport, cport, "FA", IS + 1, IC + 2)),
                   ("eth0", 500, tcp(C, C, cport, sport, "A", IC + 2, IS + 2))]
        (r,) = records(frames, grouping="zeek")
        assert (r.orig_p, r.resp_p, r.zeek_orig, r.conn_state, r.history) == (cport, sport, None, "SF", "ShAFf")


# ---------------------------------------------------------------------------------------------------
# the history letters (main.zeek's table) and their repetition


def test_retransmitted_payload_is_t_on_a_log_scale():
    """update_last_seq: payload that does not advance last_seq is a retransmission (DidRxmit), and
    TCP_Endpoint::DidRxmit adds 'T'/'t' through Connection::ScaledHistoryEntry: at the 1st, 10th,
    100th... occurrence (the threshold times 10 each time)."""
    frames = established()
    frames += [("eth0", 400 + 10 * k, tcp(C, S, SP, DP, "PA", IC + 1, IS + 1, b"0123456789")) for k in range(100)]
    assert rows(frames) == [("S1", "ShADTTT")]
    frames = established() + [("eth0", 400, tcp(S, C, DP, SP, "PA", IS + 1, IC + 11, b"ok"))]
    frames += [("eth0", 500 + k, tcp(S, C, DP, SP, "PA", IS + 1, IC + 11, b"ok")) for k in range(9)]
    assert rows(frames) == [("S1", "ShADdt")]  # 9 retransmissions: one t (the next would be the 10th)


def test_a_content_gap_is_g_for_the_side_whose_data_is_missing():
    """TCP_Reassembler::Undelivered reports a gap when the peer acknowledges data that was never
    seen, and only for an established or cleanly closing connection (Gap -> TCP_Endpoint::Gap:
    ScaledHistoryEntry 'G'/'g'). Here the server's bytes 3-10 are missing: a 'g'."""
    frames = established() + [
        ("eth0", 400, tcp(S, C, DP, SP, "PA", IS + 1, IC + 11, b"ab")),
        ("eth0", 500, tcp(S, C, DP, SP, "PA", IS + 11, IC + 11, b"cd")),
        ("eth0", 600, tcp(C, S, SP, DP, "A", IC + 11, IS + 13))]
    assert rows(frames) == [("S1", "ShADdg")]
    # the ACK is taken after the state machine (Process: "if the ack reveals a content gap, we can
    # tell whether it came at the very end of the connection"): a SYN-ACK acknowledging a hole has
    # just made both sides ESTABLISHED, a gap; a RST-ACK has made its sender RESET, no gap
    early = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(C, S, SP, DP, "PA", IC + 5, 0, b"zz"))]
    assert rows(early + [("eth0", 200, tcp(S, C, DP, SP, "SA", IS, IC + 7)), pad(1_000_000)]) == [("S1", "SDhG")]
    assert rows(early + [("eth0", 200, tcp(S, C, DP, SP, "RA", 0, IC + 7)), pad(1_000_000)]) == [("REJ", "SDr")]


def test_zero_window_is_w_on_a_log_scale_and_not_after_the_peers_fin():
    """update_window: a zero window without RST, from an endpoint not RESET whose peer is not
    CLOSED, is TCP_Endpoint::ZeroWindow: ScaledHistoryEntry 'W'/'w' (1st, 10th, ...)."""
    def zero(src, dst, sp, dp, seq, ack, t):
        p = tcp(src, dst, sp, dp, "A", seq, ack)
        p[TCP].window = 0
        return ("eth0", t, p)
    frames = established() + [zero(C, S, SP, DP, IC + 11, IS + 1, 400 + k) for k in range(10)]
    assert rows(frames) == [("S1", "ShADWW")]  # the pure ACKs add no A: the handshake's was the one
    after_fin = established() + [("eth0", 400, tcp(S, C, DP, SP, "FA", IS + 1, IC + 11)),
                                 zero(C, S, SP, DP, IC + 11, IS + 2, 500)]
    assert rows(after_fin) == [("S3", "ShADf")]  # no W: the peer (the server) is CLOSED


def test_bad_checksums_are_c_on_a_log_scale():
    """TCPAnalyzer::DeliverPacket drops a segment whose checksum is wrong (unless -C) after
    ScaledHistoryEntry 'C'/'c' (TCPSessionAdapter's chk_cnt/chk_thresh): 1st, 10th, 100th..."""
    frames = established()
    for k in range(10):
        bad = tcp(S, C, DP, SP, "A", IS + 1, IC + 11)
        bad[TCP].chksum = 0x1234
        frames.append(("eth0", 400 + k, bad))
    assert rows(frames, checksums=True) == [("S1", "ShADcc")]
    assert rows(frames) == [("S1", "ShADa")]  # checksums not checked: one pure ACK (a, once)


def test_fin_and_rst_together_is_i_and_other_multi_flag_packets_are_q():
    """update_history: a packet with more than one of SYN, FIN, RST is 'I'/'i' (CheckHistory
    HIST_FIN_RST_PKT) for FIN+RST and 'Q'/'q' (HIST_MULTI_FLAG_PKT) otherwise, each once per side.
    FIN+RST takes the established originator to RESET (UpdateEstablishedState: the FIN is ignored
    with the RST): RSTO. A first SYN+FIN is SYN_SENT, then CLOSED with the peer INACTIVE: SH."""
    fr = established() + [("eth0", 400, tcp(C, S, SP, DP, "FR", IC + 11, 0)),
                          ("eth0", 500, tcp(C, S, SP, DP, "FR", IC + 11, 0))]
    assert rows(fr) == [("RSTO", "ShADI")]
    assert rows([("eth0", 0, tcp(C, S, SP, DP, "SF", IC)), pad(1_000_000)]) == [("SH", "Q")]
    # the responder's SYN+RST+ACK: q, then RESET after the SYN-ACK part established the originator
    sra = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(S, C, DP, SP, "SRA", IS, IC + 1))]
    assert rows(sra + [pad(1_000_000)]) == [("RSTR", "Sq")]
    # without the ACK it is a SYN with another sequence number: IsReuse ends the first connection
    sr = [("eth0", 0, tcp(C, S, SP, DP, "S", IC)), ("eth0", 100, tcp(S, C, DP, SP, "SR", IS, 0))]
    assert rows(sr + [pad(1_000_000)]) == [("S0", "S"), ("OTH", "Q")]


def test_no_x_letter_without_protocol_analyzers():
    """'X' is Connection::CheckHistory(HIST_UNKNOWN_PKT, 'X') where an analyzer hits a configurable
    limit (Tunnel::max_depth, DNS, MIME, FTP... limits, Analyzer::LimitReachedWeird). The tool runs
    no protocol analyzer, so it never writes an X (nor a service): its conn.log rows say so in
    `verifier_differences` ("service", the code README's list explains)."""
    frames = established() + [("eth0", 400 + k, tcp(C, S, SP, DP, "PA", IC + 11 + k, IS + 1, b"y")) for k in range(5)]
    (r,) = records(frames, grouping="zeek")
    assert "x" not in r.history.lower()
    assert "service" in zeeklog.row(r)["verifier_differences"] and "service" in zeeklog.DIFFERENCES


def test_where_the_reading_hits_its_bounds_the_records_say_so():
    """Zeek's history is unbounded (a std::string) and its reassembler holds any number of holes;
    ours keep HISTORY_MAX (127) letters and MAX_BLOCKS (8) holes per direction. Past either bound
    the reading may differ from Zeek's, and the JSON record names the bound (`zeek_differences`),
    as the conn.log row does (`verifier_differences`). Here 140 FINs with new sequence numbers (each
    an F: update_history repeats F when the FIN's sequence number moves), and 10 data segments
    with a hole before each."""
    fins = handshake("eth0", 0, SP, DP, IC, IS)[:2]
    fins += [("eth0", 300 + k, tcp(C, S, SP, DP, "FA", IC + 1 + k, IS + 1)) for k in range(140)]
    (r,) = records(fins, grouping="zeek")
    assert len(r.history) == 127 and r.history.startswith("ShF") and r.as_json()["zeek_differences"] == ["history_limit"]
    assert "history_limit" in zeeklog.row(r)["verifier_differences"]
    holes = handshake("eth0", 0, SP, DP, IC, IS) + [
        ("eth0", 300 + k, tcp(C, S, SP, DP, "PA", IC + 1 + 20 * k + 10, IS + 1, b"z" * 10)) for k in range(10)]
    (r,) = records(holes, grouping="zeek")
    assert r.as_json()["zeek_differences"] == ["reassembly_limit"]
    (plain,) = records(established(), grouping="zeek")
    assert "zeek_differences" not in plain.as_json()
