"""The attempt machine: how one TCP connection attempt went, read from its packets.

One table, `TRANSITIONS`, maps (state, event) to the next state, h11-style. Every pair the machine
can meet on a real exchange is written out, self-loops included (a retransmitted SYN, the last ACK
of a close); a pair that is not in the table is *reported* (`Machine.misses`, the first one in
`Machine.miss`), never silently kept. Every verdict on a capture comes from this one machine:
`expect(trace)...refused()`, `Connection.outcome`, `verifier replay`'s table and JSON, and the
`--expect` language.

Events follow RFC 9293 segment processing as seen by an observer of both directions:

* A SYN-ACK is acceptable when it acknowledges the client's ISN + 1 (3.10.7.3, SYN-SENT: "If
  SEG.ACK =< ISS or SEG.ACK > SND.NXT ... send a reset"); otherwise it is SYNACK_S_BAD and the
  attempt goes on.
* A RST answering a SYN (the client in SYN-SENT) is acceptable only with the ACK bit and an ACK of
  the client's ISN + 1 ("If the ACK bit is off ... drop the segment"; a RST whose ACK is not
  acceptable is dropped too). Otherwise it is RST_S_IGNORED and changes nothing. A RST *from* the
  client in SYN-SENT with another sequence number than its ISN + 1 is its answer to an unacceptable
  SYN-ACK or ACK (`<SEQ=SEG.ACK><CTL=RST>`): it resets the peer's stale state, and the attempt goes
  on (RST_C_ANSWER).
* In every other state a RST is checked by its sequence number (3.10.7.4, RFC 5961 section 3):
  exactly the next expected sequence number resets; inside the receive window but not exact draws
  a challenge ACK and changes nothing (RST_*_CHALLENGE); outside the window it is dropped silently
  (RST_*_IGNORED). The receiver's next expected number is estimated from what the sender has sent
  and what the receiver has acknowledged; as Linux (tcp_reset_check), one below it is accepted
  after the sender's FIN. With nothing to check against (a capture joined mid-stream), a RST is
  taken as acceptable.
* An ICMP error counts only when it quotes a sequence number the quoted side has sent and not yet
  had acknowledged (Linux's tcp_v4_err/tcp_v6_err check); otherwise it is ICMP_IGNORED.

Zeek's `conn_state` and `history` are a second, separate reading of the same packets
(`verifier.analysis.zeek`); where the two disagree, both are reported with their own meaning (Zeek
calls an ignored bare RST to a SYN "REJ"; for TCP the attempt goes on).

This module is the readable reference and, compiled by Cython (attempt.pxd), the engine.
"""

from __future__ import annotations

import cython

from verifier.wire.names import ACK, FIN, RST, SYN

__all__ = [
    "EVENTS", "EVENT_NOTES", "MIN_RTO_S", "Machine", "NEXT", "OUTCOMES", "OUTCOME_OF_STATE", "STATES",
    "TRANSITIONS", "outcome_of",
]

M32 = 0xFFFFFFFF

#: Attempt states (the index is the integer the engine uses).
STATES = (
    "NEW",            # nothing seen yet
    "SYN_SENT",       # the client's SYN(s), no answer yet
    "UNREACHABLE",    # SYN_SENT, and an ICMP error quoting the attempt came back
    "REFUSED",        # the server answered the SYN with an acceptable RST
    "SYN_RCVD",       # an acceptable SYN-ACK seen, the client has not acknowledged it yet
    "ESTABLISHED",    # three-way handshake complete
    "MIDSTREAM",      # joined an exchange already under way (no SYN, no SYN-ACK seen)
    "FIN_CLIENT",     # the client sent FIN, the server has not
    "FIN_SERVER",     # the server sent FIN, the client has not
    "CLOSED",         # FINs from both sides
    "RESET_CLIENT",   # the client sent an acceptable RST (not a refusal)
    "RESET_SERVER",   # the server sent an acceptable RST after answering (or mid-stream)
)

#: Events: one per packet, from its flags, its direction (C = from the client) and its acceptability.
EVENTS = (
    "SYN_C",            # SYN without ACK from the client (first or retransmitted: same ISN)
    "SYN_S",            # SYN without ACK from the server side (simultaneous open)
    "SYNACK_S",         # SYN-ACK from the server acknowledging the client's ISN + 1
    "SYNACK_S_BAD",     # SYN-ACK from the server with any other ACK (the client answers it with RST)
    "SYNACK_C",         # SYN-ACK from the client side (simultaneous open)
    "ACK_C",            # ACK or data from the client (no SYN/FIN/RST)
    "ACK_S",            # ACK or data from the server
    "FIN_C",            # FIN from the client (with or without data)
    "FIN_S",            # FIN from the server
    "RST_C",            # an acceptable RST from the client (RST wins over any other flag)
    "RST_S",            # an acceptable RST from the server
    "RST_C_IGNORED",    # a RST from the client the server's stack drops
    "RST_S_IGNORED",    # a RST from the server the client's stack drops
    "RST_C_CHALLENGE",  # an in-window but inexact RST from the client: a challenge ACK, no change
    "RST_S_CHALLENGE",  # the same from the server
    "ICMP",             # an ICMP/ICMPv6 error quoting an outstanding packet of the attempt
    "ICMP_IGNORED",     # an ICMP error quoting a sequence number outside the sender's window
    "RST_C_ANSWER",     # the client in SYN-SENT answering an unacceptable SYN-ACK or ACK with <SEQ=SEG.ACK><RST>
)

S = {name: i for i, name in enumerate(STATES)}
E = {name: i for i, name in enumerate(EVENTS)}
NSTATES = len(STATES)
NEVENTS = len(EVENTS)

# every RST variant that changes nothing, and the events that can follow any answered state
_NO_CHANGE_RSTS = ("RST_C_IGNORED", "RST_S_IGNORED", "RST_C_CHALLENGE", "RST_S_CHALLENGE")


def _table(*rows: tuple) -> dict:
    table: dict = {}
    for row in rows:
        state, events, new = row
        for event in (events,) if isinstance(events, str) else events:
            assert state in S and event in E and new in S, (state, event, new)
            assert (state, event) not in table, (state, event)
            table[(state, event)] = new
    return table


#: THE table: (state, event) -> next state. A pair missing here is reported when it happens.
TRANSITIONS: dict = _table(
    # the first packet decides how the attempt starts
    ("NEW", "SYN_C", "SYN_SENT"),
    ("NEW", "SYNACK_S", "SYN_RCVD"),            # the SYN was not captured
    ("NEW", ("ACK_C", "ACK_S"), "MIDSTREAM"),
    ("NEW", "FIN_C", "FIN_CLIENT"),
    ("NEW", "FIN_S", "FIN_SERVER"),
    ("NEW", "RST_C", "RESET_CLIENT"),
    ("NEW", "RST_S", "RESET_SERVER"),
    # waiting for an answer to the SYN
    ("SYN_SENT", "SYN_C", "SYN_SENT"),          # retransmission
    ("SYN_SENT", ("SYNACK_S", "SYN_S"), "SYN_RCVD"),  # SYN_S: simultaneous open, the peer's SYN answers ours
    ("SYN_SENT", "SYNACK_S_BAD", "SYN_SENT"),   # RFC 9293: reset it and keep waiting
    ("SYN_SENT", "ACK_S", "SYN_SENT"),          # e.g. a server in TIME-WAIT acking its old connection
    ("SYN_SENT", "ACK_C", "ESTABLISHED"),       # the SYN-ACK was not captured (asymmetric capture)
    ("SYN_SENT", "RST_S", "REFUSED"),           # C3: RST/ACK answering the SYN
    ("SYN_SENT", _NO_CHANGE_RSTS, "SYN_SENT"),  # a bare RST, or one with a wrong ACK: dropped
    ("SYN_SENT", "RST_C", "RESET_CLIENT"),      # the SYN-ACK it answers was not captured
    ("SYN_SENT", "RST_C_ANSWER", "SYN_SENT"),   # it resets the peer's stale state; the attempt goes on
    ("SYN_SENT", "ICMP", "UNREACHABLE"),        # C5: the error quotes our SYN
    ("SYN_SENT", "ICMP_IGNORED", "SYN_SENT"),
    ("SYN_SENT", "FIN_C", "FIN_CLIENT"),
    # an ICMP error is soft (C5): the SYN is retransmitted and a later answer still wins
    ("UNREACHABLE", ("SYN_C", "ICMP", "ICMP_IGNORED", "SYNACK_S_BAD", "ACK_S", "RST_C_ANSWER") + _NO_CHANGE_RSTS,
     "UNREACHABLE"),
    ("UNREACHABLE", ("SYNACK_S", "SYN_S"), "SYN_RCVD"),
    ("UNREACHABLE", "ACK_C", "ESTABLISHED"),
    ("UNREACHABLE", "RST_S", "REFUSED"),
    ("UNREACHABLE", "RST_C", "RESET_CLIENT"),
    ("UNREACHABLE", "FIN_C", "FIN_CLIENT"),
    # refused; a same-ISN SYN after it means the RST never reached the client (captured elsewhere)
    ("REFUSED", ("RST_S", "ICMP", "ICMP_IGNORED") + _NO_CHANGE_RSTS, "REFUSED"),
    ("REFUSED", "SYN_C", "SYN_SENT"),
    ("REFUSED", "SYNACK_S", "SYN_RCVD"),        # the same SYN answered later: the listener came up
    # the handshake's last step
    ("SYN_RCVD", ("SYN_C", "SYN_S", "SYNACK_S", "SYNACK_S_BAD", "ACK_S", "ICMP", "ICMP_IGNORED") + _NO_CHANGE_RSTS,
     "SYN_RCVD"),
    ("SYN_RCVD", ("ACK_C", "SYNACK_C"), "ESTABLISHED"),  # SYNACK_C: simultaneous open, each side SYN-ACKs
    ("SYN_RCVD", "FIN_C", "FIN_CLIENT"),
    ("SYN_RCVD", "FIN_S", "FIN_SERVER"),
    ("SYN_RCVD", "RST_C", "RESET_CLIENT"),      # e.g. a scanner, or a SYN-ACK nobody asked for
    ("SYN_RCVD", "RST_S", "RESET_SERVER"),
    # established: late copies of the handshake are answered and ignored
    ("ESTABLISHED", ("ACK_C", "ACK_S", "SYN_C", "SYN_S", "SYNACK_S", "SYNACK_S_BAD", "SYNACK_C", "ICMP",
                     "ICMP_IGNORED") + _NO_CHANGE_RSTS, "ESTABLISHED"),
    ("ESTABLISHED", "FIN_C", "FIN_CLIENT"),
    ("ESTABLISHED", "FIN_S", "FIN_SERVER"),
    ("ESTABLISHED", "RST_C", "RESET_CLIENT"),   # C4b: SO_LINGER {1,0}, close with unread data
    ("ESTABLISHED", "RST_S", "RESET_SERVER"),
    # joined mid-stream
    ("MIDSTREAM", ("ACK_C", "ACK_S", "ICMP", "ICMP_IGNORED") + _NO_CHANGE_RSTS, "MIDSTREAM"),
    ("MIDSTREAM", "FIN_C", "FIN_CLIENT"),
    ("MIDSTREAM", "FIN_S", "FIN_SERVER"),
    ("MIDSTREAM", "RST_C", "RESET_CLIENT"),
    ("MIDSTREAM", "RST_S", "RESET_SERVER"),
    # closing (C12: the four-segment close); data may still flow the other way
    ("FIN_CLIENT", ("ACK_C", "ACK_S", "FIN_C", "SYN_C", "SYNACK_S", "SYNACK_S_BAD", "ICMP", "ICMP_IGNORED")
     + _NO_CHANGE_RSTS, "FIN_CLIENT"),
    ("FIN_CLIENT", "FIN_S", "CLOSED"),
    ("FIN_CLIENT", "RST_C", "RESET_CLIENT"),
    ("FIN_CLIENT", "RST_S", "RESET_SERVER"),
    ("FIN_SERVER", ("ACK_C", "ACK_S", "FIN_S", "SYN_C", "SYNACK_S", "SYNACK_S_BAD", "ICMP", "ICMP_IGNORED")
     + _NO_CHANGE_RSTS, "FIN_SERVER"),
    ("FIN_SERVER", "FIN_C", "CLOSED"),
    ("FIN_SERVER", "RST_C", "RESET_CLIENT"),
    ("FIN_SERVER", "RST_S", "RESET_SERVER"),
    # closed: the last ACK, retransmitted FINs, a RST from a side already gone
    ("CLOSED", ("ACK_C", "ACK_S", "FIN_C", "FIN_S", "RST_C", "RST_S", "ICMP", "ICMP_IGNORED") + _NO_CHANGE_RSTS,
     "CLOSED"),
    # reset: what was in flight, and the RSTs the peer sends to it
    ("RESET_CLIENT", ("ACK_C", "ACK_S", "FIN_C", "FIN_S", "RST_C", "RST_S", "ICMP", "ICMP_IGNORED")
     + _NO_CHANGE_RSTS, "RESET_CLIENT"),
    ("RESET_SERVER", ("ACK_C", "ACK_S", "FIN_C", "FIN_S", "RST_C", "RST_S", "ICMP", "ICMP_IGNORED")
     + _NO_CHANGE_RSTS, "RESET_SERVER"),
)

#: The table as a flat tuple for the engine: NEXT[state * NEVENTS + event], -1 for a missing pair.
NEXT: tuple = tuple(S[TRANSITIONS[(s, e)]] if (s, e) in TRANSITIONS else -1 for s in STATES for e in EVENTS)
_NEXT = NEXT  # typed for the engine (attempt.pxd)

OUTCOMES = ("established", "refused", "timed-out", "unreachable", "reset", "closed", "incomplete", "uncertain")

#: Within this long after the last unanswered SYN, the capture cannot tell "timed out" from "still
#: trying": the smallest retransmission timeout is 1 s (RFC 6298 2.4, TCP_TIMEOUT_INIT on Linux).
MIN_RTO_S = 1.0

#: The outcome of each final state (SYN_SENT: timed-out, unless the capture ended too soon or was
#: lossy; half-closed: established if the handshake completed, else incomplete).
OUTCOME_OF_STATE = {
    "NEW": "incomplete", "SYN_SENT": "timed-out", "UNREACHABLE": "unreachable", "REFUSED": "refused",
    "SYN_RCVD": "incomplete", "ESTABLISHED": "established", "MIDSTREAM": "incomplete",
    "FIN_CLIENT": "established", "FIN_SERVER": "established", "CLOSED": "closed", "RESET_CLIENT": "reset",
    "RESET_SERVER": "reset",
}

#: What each event that changes nothing means, for ladders and failure reports.
EVENT_NOTES = {
    "SYNACK_S_BAD": "SYN-ACK with an unacceptable ACK: the client answers with RST and keeps waiting",
    "RST_C_IGNORED": "RST dropped by the server's stack (out of window)",
    "RST_S_IGNORED": "RST dropped by the client's stack",
    "RST_C_CHALLENGE": "in-window RST, not at the expected sequence number: a challenge ACK, no reset",
    "RST_S_CHALLENGE": "in-window RST, not at the expected sequence number: a challenge ACK, no reset",
    "ICMP_IGNORED": "ICMP error quoting a sequence number outside the sender's window: ignored",
    "RST_C_ANSWER": "the client's RST answering an unacceptable segment (RFC 9293 3.10.7.3): its attempt goes on",
}

_SYN_SENT_STATES = (1 << S["NEW"]) | (1 << S["SYN_SENT"]) | (1 << S["UNREACHABLE"]) | (1 << S["REFUSED"])
_ESTABLISHED_BIT = 1 << S["ESTABLISHED"]
_ANSWERED_BITS = (1 << S["SYN_RCVD"]) | (1 << S["ESTABLISHED"])


def _seq_diff(a: cython.longlong, b: cython.longlong) -> cython.longlong:
    """a - b in 32-bit sequence space, signed."""
    d: cython.longlong = (a - b) & M32
    return d - (M32 + 1) if d > (M32 >> 1) else d  # (M32, not 2**32 literals: C arithmetic, compiled)


@cython.no_gc  # (no reference cycles: `miss` is a tuple of names)
@cython.cclass
class Machine:
    """The attempt machine of one connection: feed it the segments and ICMP errors of one
    interface (`segment`, `icmp_error`), in time order; read `state`, `visited`, `misses`.

    It also tracks what each side has sent and acknowledged, to judge RSTs and ICMP errors."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.cur = 0
        self.visited = 1
        self.misses = 0
        self.miss = None  # (state, event, packet index) of the first missing pair
        self.last_event = -1
        self.ignored_rsts = 0
        self.challenged_rsts = 0
        self.bad_synacks = 0
        self.ignored_icmp = 0
        # per side (c = client, s = server); -1: not known
        self.c_isn = self.s_isn = -1
        self.c_nxt = self.s_nxt = -1  # one past the highest sequence number sent
        self.c_acked = self.s_acked = -1  # the last ACK this side sent (of the other's data)
        self.c_win = self.s_win = -1  # the last window this side advertised (unscaled)
        self.c_wscale = self.s_wscale = -1  # window scale offered on its SYN
        self.c_fin = self.s_fin = False

    # ---- the two inputs

    def segment(self, from_client: cython.bint, flags: cython.int, seq: cython.longlong, ack: cython.longlong,
                window: cython.int, payload_len: cython.longlong, wscale, index: cython.longlong) -> cython.int:
        """One TCP segment; returns its event number (see EVENTS)."""
        ev: cython.int
        if flags & RST:
            ev = self._rst(from_client, flags, seq, ack)
        elif flags & SYN:
            if flags & ACK:
                if from_client:
                    ev = 4  # SYNACK_C
                elif self.c_isn < 0 or ack == ((self.c_isn + 1) & M32):
                    ev = 2  # SYNACK_S
                else:
                    ev = 3  # SYNACK_S_BAD
                    self.bad_synacks += 1
            else:
                ev = 0 if from_client else 1
        elif flags & FIN:
            ev = 7 if from_client else 8
        else:
            ev = 5 if from_client else 6
        self._step(ev, index)
        if not flags & RST:
            end: cython.longlong = (seq + payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) & M32
            if from_client:
                if flags & SYN:
                    self.c_isn = seq
                    self.c_wscale = -1 if wscale is None else wscale
                if self.c_nxt < 0 or _seq_diff(end, self.c_nxt) > 0:
                    self.c_nxt = end
                if flags & ACK:
                    self.c_acked = ack
                self.c_win = window
                if flags & FIN:
                    self.c_fin = True
            else:
                if flags & SYN:
                    self.s_isn = seq
                    self.s_wscale = -1 if wscale is None else wscale
                if self.s_nxt < 0 or _seq_diff(end, self.s_nxt) > 0:
                    self.s_nxt = end
                if flags & ACK:
                    self.s_acked = ack
                self.s_win = window
                if flags & FIN:
                    self.s_fin = True
        return ev

    def icmp_error(self, quotes_client: cython.bint, quoted_seq, index: cython.longlong) -> cython.int:
        """An ICMP error quoting a packet of the client (`quotes_client`) or of the server."""
        ev: cython.int = 15  # ICMP
        if quoted_seq is not None:
            q: cython.longlong = quoted_seq
            nxt: cython.longlong = self.c_nxt if quotes_client else self.s_nxt
            una: cython.longlong = self.s_acked if quotes_client else self.c_acked
            if una < 0:
                una = self.c_isn if quotes_client else self.s_isn
            if nxt >= 0 and una >= 0 and ((q - una) & M32) > ((nxt - una) & M32):
                ev = 16  # ICMP_IGNORED
                self.ignored_icmp += 1
        self._step(ev, index)
        return ev

    # ---- the rules

    def _rst(self, from_client: cython.bint, flags: cython.int, seq: cython.longlong,
             ack: cython.longlong) -> cython.int:
        if not from_client and (1 << self.cur) & _SYN_SENT_STATES:
            # the client is in SYN-SENT: only an ACK of its ISN + 1 makes a RST acceptable
            if self.cur == 0 or self.c_isn < 0 or (flags & ACK and ack == ((self.c_isn + 1) & M32)):
                return 10  # RST_S
            self.ignored_rsts += 1
            return 12  # RST_S_IGNORED
        if from_client and self.c_isn >= 0 and (self.cur == 1 or self.cur == 2) and seq != self.c_nxt:
            return 17  # RST_C_ANSWER: the client (in SYN-SENT) answering an unacceptable segment
        nxt: cython.longlong = self.c_nxt if from_client else self.s_nxt
        acked: cython.longlong = self.s_acked if from_client else self.c_acked
        fin: cython.bint = self.c_fin if from_client else self.s_fin
        base: cython.longlong = acked if acked >= 0 else nxt
        if base < 0:
            return 9 if from_client else 10  # nothing to check against
        if seq == nxt or seq == acked or (fin and nxt >= 0 and seq == ((nxt - 1) & M32)):
            return 9 if from_client else 10
        wnd: cython.longlong = self._window(not from_client)
        d: cython.longlong = (seq - base) & M32
        if 0 < d < wnd:
            self.challenged_rsts += 1
            return 13 if from_client else 14  # RST_*_CHALLENGE
        self.ignored_rsts += 1
        return 11 if from_client else 12  # RST_*_IGNORED

    def _window(self, of_client: cython.bint) -> cython.longlong:
        """The receive window a side last advertised, scaled (RFC 7323: when both SYNs offered a
        scale); 65535 when it has advertised none."""
        win: cython.longlong = self.c_win if of_client else self.s_win
        if win < 0:
            return 65535
        shift: cython.int = self.c_wscale if of_client else self.s_wscale
        if shift >= 0 and self.c_wscale >= 0 and self.s_wscale >= 0:
            return win << (shift if shift <= 14 else 14)
        return win

    def _step(self, ev: cython.int, index: cython.longlong) -> None:
        self.last_event = ev
        nxt: cython.int = _NEXT[self.cur * NEVENTS + ev]
        if nxt < 0:
            self.misses += 1
            if self.miss is None:
                self.miss = (STATES[self.cur], EVENTS[ev], index)
            return
        self.cur = nxt
        self.visited |= 1 << nxt

    # ---- reading the result

    @property
    def state_name(self) -> str:
        """The name of the current state (`cur` is its index in STATES)."""
        return STATES[self.cur]

    @property
    def established(self) -> bool:
        return bool(self.visited & _ESTABLISHED_BIT)


def outcome_of(state: int, visited: int, *, syn_count: int, last_syn_age_s, reset_side=None,
               lost: int = 0, iface=None) -> tuple:
    """(outcome, detail) for a final attempt state.

    `last_syn_age_s`: how long the capture went on after the last SYN (None: not known). `lost`:
    packets the capture lost on the attempt's interface (an unanswered attempt is then uncertain)."""
    age = -1 if last_syn_age_s is None else int(round(last_syn_age_s * 1e9))
    return judge(state, visited, syn_count, age, lost, iface)


_FIXED = {
    "UNREACHABLE": ("unreachable", "ICMP error quoting the SYN, no answer from the server"),
    "REFUSED": ("refused", "RST answering the SYN"),
    "SYN_RCVD": ("incomplete", "SYN-ACK not acknowledged by the end of the capture"),
    "ESTABLISHED": ("established", "still open at the end of the capture"),
    "MIDSTREAM": ("incomplete", "mid-stream: no SYN or SYN-ACK captured, still open at the end"),
    "NEW": ("incomplete", "no TCP segment"),  # only an ICMP error was seen
}
_BY_STATE = tuple(_FIXED.get(name) for name in STATES)
_SIDES = ("client", "server")
_HALF_CLOSED = tuple((("established", f"half-closed: FIN from the {side} only"),
                      ("incomplete", f"FIN from the {side} only, the handshake was not completed")) for side in _SIDES)
_CLOSED = (("closed", "FIN from both sides"), ("closed", "FIN from both sides (mid-stream: no handshake captured)"))
_RESET = tuple((("reset", f"RST from the {side} after the handshake"),
                ("reset", f"RST from the {side} before the handshake completed"),
                ("reset", f"RST from the {side} before any answer to the SYN"),
                ("reset", f"RST from the {side} (mid-stream: no handshake captured)")) for side in _SIDES)
_MIN_RTO_NS = int(MIN_RTO_S * 1e9)


def judge(state: cython.int, visited: cython.int, syn_count: cython.longlong, last_syn_age_ns: cython.longlong,
            lost: cython.ulonglong, iface) -> tuple:
    """`outcome_of` with the age of the last SYN in ns (-1: not known): the engine's entry."""
    fixed = _BY_STATE[state]
    if fixed is not None:
        return fixed
    if state == 1:  # SYN_SENT
        syns = f"{syn_count} SYN{'s' if syn_count != 1 else ''}"
        if 0 <= last_syn_age_ns < _MIN_RTO_NS:
            return "incomplete", (f"the capture ends {last_syn_age_ns / 1e9:.3f} s after the last SYN, less than the "
                                  f"minimum retransmission timeout ({MIN_RTO_S:g} s): still trying")
        if lost:
            return "uncertain", (f"{syns} and no answer captured, but the capture lost {lost} packets on "
                                 f"{iface if iface is not None else 'its interface'}: the answer may have been lost")
        return "timed-out", syns + ", no answer"
    if state == 7 or state == 8:  # FIN_CLIENT, FIN_SERVER
        return _HALF_CLOSED[state - 7][0 if visited & _ESTABLISHED_BIT else 1]
    if state == 9:  # CLOSED
        return _CLOSED[0 if visited & _ANSWERED_BITS else 1]
    # RESET_CLIENT, RESET_SERVER
    k: cython.int
    if visited & _ESTABLISHED_BIT:
        k = 0
    elif visited & _ANSWERED_BITS:
        k = 1
    elif visited & 6:  # SYN_SENT or UNREACHABLE
        k = 2
    else:
        k = 3
    return _RESET[state - 10][k]
