"""Classifying TCP connection attempts: our outcome table, and Zeek's conn_state and history.

Two machines read the same stream of segments of one connection, each packet once:

* The **attempt machine** answers "how did this connection attempt go?" with one of the
  `OUTCOMES`: established, refused, timed-out, unreachable, reset (by which side), closed,
  incomplete. Its transitions are the single table `TRANSITIONS` below, h11-style: a dict from
  (state, event) to the next state; a pair that is not in the table leaves the state alone (a
  retransmitted SYN in SYN_SENT, an ACK in ESTABLISHED...). `outcome_of` maps the final state to
  the outcome, with the measured SYN schedule for timed-out attempts and the ICMP type/code for
  unreachable ones. The C fast path (`verifier.replay.fastpath`) is handed this very table as an array,
  so there is one table in one place.
* The **Zeek machine** (`ZeekConn`) computes Zeek's `conn_state` and `history` with our own code,
  following Zeek's TCP analyzer (src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc, TCP.cc,
  src/analyzer/protocol/tcp/TCP_Endpoint.cc, TCP_Reassembler.cc and conn_state() in
  scripts/base/protocols/conn/main.zeek) as ../shared/oracle/zeek/README.md summarises it:
  per-endpoint states, the history letters with their repeat rules, retransmission and gap
  detection, and the session rules (connection reuse, the attempt/close/expire/inactivity timers)
  that decide when Zeek starts a new conn.log row for the same 4-tuple.

`classify_trace(trace)` runs both machines over a `verifier.analysis.trace.Trace` (a live capture or a saved
one), so the checks of `verifier replay --expect` work on a Trace from Python exactly as on a file.

Pure: no I/O, no namespaces, no Scapy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_LIKELY_SERVER_PORTS",
    "EVENTS",
    "OUTCOMES",
    "OUTCOME_OF_STATE",
    "STATES",
    "TRANSITIONS",
    "TRANSITION_ARRAY",
    "AttemptMachine",
    "ConnectionRecord",
    "ZeekConn",
    "classify_connection",
    "classify_trace",
    "event_of",
    "icmp_name",
    "outcome_name",
    "outcome_of",
]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF

# ==================================================================================================
# The attempt machine
# ==================================================================================================

#: Attempt states (index = the integer the C fast path uses).
STATES = (
    "NEW",            # nothing seen yet
    "SYN_SENT",       # the client's SYN(s), no answer yet
    "UNREACHABLE",    # SYN_SENT, and an ICMP error quoting the attempt came back
    "REFUSED",        # the server answered the SYN with RST
    "SYN_RCVD",       # SYN-ACK seen, the client has not acknowledged it yet
    "ESTABLISHED",    # three-way handshake complete
    "MIDSTREAM",      # joined an exchange already under way (no SYN, no SYN-ACK seen)
    "FIN_CLIENT",     # the client sent FIN, the server has not
    "FIN_SERVER",     # the server sent FIN, the client has not
    "CLOSED",         # FINs from both sides
    "RESET_CLIENT",   # the client sent RST (and it was not a refusal)
    "RESET_SERVER",   # the server sent RST after answering (or mid-stream)
)

#: Events: one per packet, from its flags, direction (c = from the client) and kind.
EVENTS = (
    "SYN_C",     # SYN without ACK from the client (first or retransmitted)
    "SYN_S",     # SYN without ACK from the server side (simultaneous open)
    "SYNACK_S",  # SYN-ACK from the server
    "SYNACK_C",  # SYN-ACK from the client side (simultaneous open)
    "ACK_C",     # ACK or data from the client (no SYN/FIN/RST)
    "ACK_S",     # ACK or data from the server
    "FIN_C",     # FIN from the client (with or without data)
    "FIN_S",     # FIN from the server
    "RST_C",     # RST from the client (RST wins over any other flag)
    "RST_S",     # RST from the server
    "ICMP",      # an ICMP/ICMPv6 error quoting a packet of the attempt
)

S = {name: i for i, name in enumerate(STATES)}
E = {name: i for i, name in enumerate(EVENTS)}


def _t(*rows: tuple[str, str, str]) -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for state, event, new in rows:
        assert state in S and event in E and new in S, (state, event, new)
        assert (state, event) not in table, (state, event)
        table[(state, event)] = new
    return table


#: THE table. (state, event) -> next state; missing pairs keep the state.
TRANSITIONS: dict[tuple[str, str], str] = _t(
    # the first packet decides how the attempt starts
    ("NEW", "SYN_C", "SYN_SENT"),
    ("NEW", "SYNACK_S", "SYN_RCVD"),       # the SYN was not captured
    ("NEW", "ACK_C", "MIDSTREAM"),
    ("NEW", "ACK_S", "MIDSTREAM"),
    ("NEW", "FIN_C", "FIN_CLIENT"),
    ("NEW", "FIN_S", "FIN_SERVER"),
    ("NEW", "RST_C", "RESET_CLIENT"),
    ("NEW", "RST_S", "RESET_SERVER"),
    # waiting for an answer to the SYN
    ("SYN_SENT", "SYNACK_S", "SYN_RCVD"),
    ("SYN_SENT", "SYN_S", "SYN_RCVD"),     # simultaneous open: the peer's SYN answers ours
    ("SYN_SENT", "RST_S", "REFUSED"),      # C3: RST/ACK answering the SYN
    ("SYN_SENT", "ICMP", "UNREACHABLE"),   # C5: the error quotes our SYN
    ("SYN_SENT", "RST_C", "RESET_CLIENT"),  # the client gave up before any answer
    ("SYN_SENT", "FIN_C", "FIN_CLIENT"),
    # an ICMP error is soft (C5): a later answer still wins
    ("UNREACHABLE", "SYNACK_S", "SYN_RCVD"),
    ("UNREACHABLE", "SYN_S", "SYN_RCVD"),
    ("UNREACHABLE", "RST_S", "REFUSED"),
    ("UNREACHABLE", "RST_C", "RESET_CLIENT"),
    # refused, but the same SYN answered later (the listener came up meanwhile)
    ("REFUSED", "SYNACK_S", "SYN_RCVD"),
    # the handshake's last step
    ("SYN_RCVD", "ACK_C", "ESTABLISHED"),
    ("SYN_RCVD", "SYNACK_C", "ESTABLISHED"),  # simultaneous open: each side SYN-ACKs
    ("SYN_RCVD", "FIN_C", "FIN_CLIENT"),
    ("SYN_RCVD", "FIN_S", "FIN_SERVER"),
    ("SYN_RCVD", "RST_C", "RESET_CLIENT"),    # e.g. a scanner, or a SYN-ACK nobody asked for
    ("SYN_RCVD", "RST_S", "RESET_SERVER"),
    # established, or joined mid-stream
    ("ESTABLISHED", "FIN_C", "FIN_CLIENT"),
    ("ESTABLISHED", "FIN_S", "FIN_SERVER"),
    ("ESTABLISHED", "RST_C", "RESET_CLIENT"),  # C4b: SO_LINGER {1,0}, close with unread data
    ("ESTABLISHED", "RST_S", "RESET_SERVER"),
    ("MIDSTREAM", "FIN_C", "FIN_CLIENT"),
    ("MIDSTREAM", "FIN_S", "FIN_SERVER"),
    ("MIDSTREAM", "RST_C", "RESET_CLIENT"),
    ("MIDSTREAM", "RST_S", "RESET_SERVER"),
    # closing (C12: the four-segment close)
    ("FIN_CLIENT", "FIN_S", "CLOSED"),
    ("FIN_CLIENT", "RST_C", "RESET_CLIENT"),
    ("FIN_CLIENT", "RST_S", "RESET_SERVER"),
    ("FIN_SERVER", "FIN_C", "CLOSED"),
    ("FIN_SERVER", "RST_C", "RESET_CLIENT"),
    ("FIN_SERVER", "RST_S", "RESET_SERVER"),
    # CLOSED, REFUSED (but for a late SYN-ACK), RESET_*: final
)

#: The table as a flat array for the C fast path: NEXT[state * len(EVENTS) + event].
TRANSITION_ARRAY: tuple[int, ...] = tuple(
    S[TRANSITIONS.get((s, e), s)] for s in STATES for e in EVENTS
)

OUTCOMES = ("established", "refused", "timed-out", "unreachable", "reset", "closed", "incomplete")

#: Within this long after the last unanswered SYN, the capture cannot tell "timed out" from "still
#: trying": the smallest retransmission timeout is 1 s (RFC 6298 2.4, TCP_TIMEOUT_INIT on Linux).
MIN_RTO_S = 1.0


def event_of(flags: int, from_client: bool) -> int:
    """The event number of a TCP segment (RST wins, then SYN, then FIN)."""
    if flags & RST:
        return E["RST_C"] if from_client else E["RST_S"]
    if flags & SYN:
        if flags & ACK:
            return E["SYNACK_C"] if from_client else E["SYNACK_S"]
        return E["SYN_C"] if from_client else E["SYN_S"]
    if flags & FIN:
        return E["FIN_C"] if from_client else E["FIN_S"]
    return E["ACK_C"] if from_client else E["ACK_S"]


_NEXT = TRANSITION_ARRAY
_NEV = len(EVENTS)


class AttemptMachine:
    """The attempt machine for one connection: feed events, read `state` and `visited`."""

    __slots__ = ("state", "visited")

    def __init__(self) -> None:
        self.state = 0
        self.visited = 1  # bit i: state i was reached at some point

    def feed(self, event: int) -> int:
        self.state = s = _NEXT[self.state * _NEV + event]
        self.visited |= 1 << s
        return s


#: The outcome of each final state (SYN_SENT: see `outcome_name`; half-closed: established if the
#: handshake completed, else incomplete).
OUTCOME_OF_STATE = {
    "NEW": "incomplete", "SYN_SENT": "timed-out", "UNREACHABLE": "unreachable", "REFUSED": "refused",
    "SYN_RCVD": "incomplete", "ESTABLISHED": "established", "MIDSTREAM": "incomplete", "FIN_CLIENT": "established",
    "FIN_SERVER": "established", "CLOSED": "closed", "RESET_CLIENT": "reset", "RESET_SERVER": "reset",
}
_OUTCOME_BY_INDEX = tuple(OUTCOME_OF_STATE[name] for name in STATES)
_ESTABLISHED_BIT = 1 << 5


def outcome_name(state: int, visited: int, last_syn_age_s: float | None) -> str:
    """Just the outcome of `outcome_of`, cheaply (for counting millions of connections)."""
    if state == 1 and last_syn_age_s is not None and last_syn_age_s < MIN_RTO_S:
        return "incomplete"
    if state in (7, 8) and not visited & _ESTABLISHED_BIT:  # FIN_CLIENT, FIN_SERVER
        return "incomplete"
    return _OUTCOME_BY_INDEX[state]


def outcome_of(state: int, visited: int, *, syn_count: int, last_syn_age_s: float | None,
               reset_side: str | None = None) -> tuple[str, str]:
    """(outcome, detail) for a final attempt state.

    `last_syn_age_s`: how long the capture went on after the last SYN (None: no SYN).
    """
    name = STATES[state]
    established = bool(visited & (1 << S["ESTABLISHED"]))
    answered = bool(visited & ((1 << S["SYN_RCVD"]) | (1 << S["ESTABLISHED"])))
    if name == "SYN_SENT":
        if last_syn_age_s is not None and last_syn_age_s < MIN_RTO_S:
            return "incomplete", (f"the capture ends {last_syn_age_s:.3f} s after the last SYN, less than the "
                                  f"minimum retransmission timeout ({MIN_RTO_S:g} s): still trying")
        return "timed-out", f"{syn_count} SYN{'s' if syn_count != 1 else ''}, no answer"
    if name == "UNREACHABLE":
        return "unreachable", "ICMP error quoting the SYN, no answer from the server"
    if name == "REFUSED":
        return "refused", "RST answering the SYN"
    if name == "SYN_RCVD":
        return "incomplete", "SYN-ACK not acknowledged by the end of the capture"
    if name == "ESTABLISHED":
        return "established", "still open at the end of the capture"
    if name == "MIDSTREAM":
        return "incomplete", "mid-stream: no SYN or SYN-ACK captured, still open at the end"
    if name in ("FIN_CLIENT", "FIN_SERVER"):
        side = "client" if name == "FIN_CLIENT" else "server"
        if established:
            return "established", f"half-closed: FIN from the {side} only"
        return "incomplete", f"FIN from the {side} only, the handshake was not completed"
    if name == "CLOSED":
        return "closed", "FIN from both sides" + ("" if answered else " (mid-stream: no handshake captured)")
    if name in ("RESET_CLIENT", "RESET_SERVER"):
        side = "client" if name == "RESET_CLIENT" else "server"
        if established:
            return "reset", f"RST from the {side} after the handshake"
        if answered:
            return "reset", f"RST from the {side} before the handshake completed"
        if visited & ((1 << S["SYN_SENT"]) | (1 << S["UNREACHABLE"])):
            return "reset", f"RST from the {side} before any answer to the SYN"
        return "reset", f"RST from the {side} (mid-stream: no handshake captured)"
    return "incomplete", "no TCP segment"  # NEW: only possible for an ICMP-only record


# ==================================================================================================
# The result record
# ==================================================================================================

@dataclass
class ConnectionRecord:
    """What the classifier says about one TCP connection attempt (one row of `verifier replay`).

    Endpoints are oriented client (orig) to server (resp): the sender of the first SYN, or of the
    first packet when no SYN was captured (the receiver of a SYN-ACK then). Times are ns since the
    epoch; `syn_times_s` are seconds after the first SYN (first + retransmissions, same ISN).
    `conn_state`/`history` are Zeek's, for this attempt's packets. `icmp` is the first ICMP error
    quoting the attempt: {"family", "type", "code", "from", "count"}.
    """

    id: int
    family: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    outcome: str
    detail: str
    state: str
    syn_count: int
    syn_times_s: list[float]
    start_ns: int
    end_ns: int
    packets: int
    conn_state: str
    history: str
    reset_by: str | None = None
    icmp: dict | None = None
    iface: str | None = None
    partial: bool = False
    isn: int | None = None
    rtt_s: float | None = None  # SYN (the last one before the answer) to SYN-ACK
    zeek_orig_h: str | None = None  # Zeek's originator, when it differs from ours
    extra: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def as_json(self) -> dict:
        d = {
            "id": self.id, "family": self.family, "orig_h": self.orig_h, "orig_p": self.orig_p,
            "resp_h": self.resp_h, "resp_p": self.resp_p, "outcome": self.outcome, "detail": self.detail,
            "reset_by": self.reset_by, "syn_count": self.syn_count,
            "syn_times_s": [round(t, 6) for t in self.syn_times_s], "start_ns": self.start_ns,
            "end_ns": self.end_ns, "duration_s": round(self.duration_s, 9), "packets": self.packets,
            "conn_state": self.conn_state, "history": self.history, "icmp": self.icmp, "iface": self.iface,
            "partial": self.partial, "rtt_s": None if self.rtt_s is None else round(self.rtt_s, 9),
        }
        d.update(self.extra)
        return d


# ==================================================================================================
# The Zeek machine
# ==================================================================================================

# Zeek's endpoint states (TCP_ENDPOINT_*), in Zeek's order.
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# History bits (TCP_Endpoint::HIST_*); the responder's are shifted 16 bits up.
HIST_SYN_PKT, HIST_FIN_PKT, HIST_RST_PKT, HIST_FIN_RST_PKT = 0x1, 0x2, 0x4, 0x8
HIST_DATA_PKT, HIST_ACK_PKT, HIST_MULTI_FLAG_PKT = 0x10, 0x20, 0x40

TOO_LARGE_SEQ_DELTA = 1048576

# Zeek's default timers (scripts/base/init-bare.zeek), in ns.
_S = 1_000_000_000
TCP_ATTEMPT_DELAY = 5 * _S
TCP_SYN_TIMEOUT = 5 * _S
TCP_SESSION_TIMER = 6 * _S
TCP_CONNECTION_LINGER = 5 * _S
TCP_CLOSE_DELAY = 5 * _S
TCP_INACTIVITY_TIMEOUT = 300 * _S
LONG_INACTIVITY_PORTS = frozenset((21, 22, 23, 513))  # ftp, ssh, telnet, rlogin: 1 h
LONG_INACTIVITY_TIMEOUT = 3600 * _S
TCP_MAX_INITIAL_WINDOW = 16384

# Bounds that keep a tracked connection's memory fixed (the C fast path uses fixed arrays): the
# history keeps its first HISTORY_MAX letters, the reassembler at most MAX_BLOCKS holes (a further
# one widens the last), and a record at most MAX_SYN_TIMES SYN times (the count stays exact).
HISTORY_MAX = 127
MAX_BLOCKS = 8
MAX_SYN_TIMES = 32

#: `likely_server_ports` of a default (non-bare) Zeek run: the TCP ports its base protocol
#: scripts register (DNS, FTP, HTTP, IRC, Kerberos, LDAP, Modbus, MySQL, POP3, RDP, Redis, SMB, SMTP,
#: SOCKS, SSH, SSL/TLS, XMPP, DNP3, MQTT, ...). A bare run (zeek -b) loads none of them.
DEFAULT_LIKELY_SERVER_PORTS = frozenset((
    21, 22, 23, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585, 587, 614, 631, 636,
    989, 990, 992, 993, 995, 1080, 1883, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432, 6379, 6666,
    6667, 6668, 6669, 8000, 8080, 8888, 20000,
))


def seq_delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number (Zeek's seq_delta)."""
    d = (a - b) & M32
    return d - 0x100000000 if d >= 0x80000000 else d


class ZeekEndpoint:
    """One side of a Zeek TCP connection (TCP_Endpoint plus its TCP_Reassembler's bookkeeping)."""

    __slots__ = ("is_orig", "state", "prev_state", "start_seq", "last_seq", "ack_seq", "did_close",
                 "fin_cnt", "fin_seq", "rst_cnt", "hist_last_syn", "hist_last_fin", "hist_last_rst",
                 "chk_cnt", "chk_thresh", "rxmt_cnt", "rxmt_thresh", "win0_cnt", "win0_thresh",
                 "gap_cnt", "gap_thresh", "reassem", "trim", "blocks", "window_scale")

    def __init__(self, is_orig: bool) -> None:
        self.is_orig = is_orig
        self.state = self.prev_state = INACTIVE
        self.start_seq = self.last_seq = self.ack_seq = 0
        self.did_close = False
        self.fin_cnt = self.fin_seq = self.rst_cnt = 0
        self.hist_last_syn = self.hist_last_fin = self.hist_last_rst = 0
        self.chk_cnt = self.rxmt_cnt = self.win0_cnt = self.gap_cnt = 0
        self.chk_thresh = self.rxmt_thresh = self.win0_thresh = self.gap_thresh = 1
        # reassembler: relative sequence numbers, starting at 1 after the SYN
        self.reassem = 1  # last_reassem_seq: everything below was delivered (or declared a gap)
        self.trim = 1  # trim_seq: everything below was acknowledged
        self.blocks: list[list[int]] = []  # undelivered data above a hole, sorted [seq, upper)
        self.window_scale = 0

    def set_state(self, new: int) -> None:
        if new != self.state:
            self.prev_state = self.state
            self.state = new

    def size(self, peer: "ZeekEndpoint") -> int:
        """TCP_Endpoint::Size(): bytes of sequence space sent, without SYN and FIN."""
        if (self.prev_state == SYN_SENT and self.state == RESET and peer.state == INACTIVE
                and not self.no_data_acked()):
            return 0
        last = seq_delta(self.last_seq, self.start_seq)
        ack = seq_delta(self.ack_seq, self.start_seq)
        size = max(last, ack)
        if size != 0:
            size -= 1
        if self.fin_cnt > 0 and size != 0:
            size -= 1
        return max(size, 0)

    def no_data_acked(self) -> bool:
        d = seq_delta(self.ack_seq, self.start_seq)
        return d in (0, 1)


class ZeekConn:
    """Zeek's view of one TCP connection: conn_state, history, and when Zeek would drop it.

    `process()` is TCPSessionAdapter::Process (plus the checksum test of TCPAnalyzer::DeliverPacket)
    for one segment; `is_reuse()` is IsReuse(); `expired_by()` runs this connection's timers up to
    a time and tells whether one of them removed it (Zeek then logs it, and the next packet of the
    4-tuple starts a new connection). Times are ns.
    """

    __slots__ = ("orig", "resp", "orig_key", "resp_key", "history", "hist_seen", "is_partial",
                 "first_packet_seen", "is_active", "last_time", "start_time", "timers", "inactivity", "removed_at")

    def __init__(self, orig_key: tuple, resp_key: tuple, t: int, *, flipped: bool = False) -> None:
        self.orig = ZeekEndpoint(True)
        self.resp = ZeekEndpoint(False)
        self.orig_key = orig_key  # (addr, port) of the originator, as Zeek decided it
        self.resp_key = resp_key
        self.history = "^" if flipped else ""
        self.hist_seen = 0
        self.is_partial = False
        self.first_packet_seen = 0
        self.is_active = True
        self.last_time = self.start_time = t
        # [(time, kind)]: analyzer timers ("attempt", "expire", "delete")
        self.timers: list[tuple[int, str]] = [(t + TCP_SYN_TIMEOUT, "expire")]
        resp_port = resp_key[1]
        self.inactivity = LONG_INACTIVITY_TIMEOUT if resp_port in LONG_INACTIVITY_PORTS else TCP_INACTIVITY_TIMEOUT
        self.removed_at: int | None = None

    # ---- creation (IPBasedAnalyzer::NewConn + TCPAnalyzer::WantConnection)

    @classmethod
    def create(cls, src: tuple, dst: tuple, flags: int, t: int,
               likely: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS) -> "ZeekConn":
        """The connection Zeek makes for a first packet from `src` to `dst` ((addr, port) pairs)."""
        if cls.wants_flip(flags, src[1], dst[1], likely):
            return cls(dst, src, t, flipped=True)
        return cls(src, dst, t)

    @staticmethod
    def wants_flip(flags: int, sport: int, dport: int, likely: frozenset[int]) -> bool:
        """Whether Zeek makes the receiver of this first packet the originator.

        As TCPAnalyzer::WantConnection: only a connection that does not start with a plain SYN is
        a candidate, and only when its source port is a likely server port; with both ports
        likely, a packet without SYN flips when the source port is the lower one. A SYN-ACK then
        flips too: the oracle's flip-without-syn trace (SYN-ACK from port 80 to IRC's 6669, both
        likely) is logged flipped, which the older rule did not do.
        """
        if flags & SYN and not flags & ACK:
            return False
        if sport not in likely:
            return False
        if dport in likely:
            return bool(flags & SYN) or sport < dport
        return True

    # ---- history (Connection::CheckHistory / AddHistory, ScaledHistoryEntry)

    def _check(self, ep: ZeekEndpoint, mask: int, code: str) -> bool:
        if not ep.is_orig:
            mask <<= 16
            code = code.lower()
        if not self.hist_seen & mask:
            self.hist_seen |= mask
            if len(self.history) < HISTORY_MAX:
                self.history += code
            return False
        return True

    def _add(self, ep: ZeekEndpoint, code: str) -> None:
        if len(self.history) < HISTORY_MAX:
            self.history += code if ep.is_orig else code.lower()

    def _scaled(self, ep: ZeekEndpoint, code: str, counter: str, thresh: str) -> None:
        n = getattr(ep, counter) + 1
        setattr(ep, counter, n)
        t = getattr(ep, thresh)
        if n == t:
            self._add(ep, code)
            setattr(ep, thresh, t * 10)

    # ---- the packet

    def process(self, is_orig: bool, t: int, flags: int, seq: int, ack: int, plen: int, window: int,
                complete: bool = True, checksum_ok: bool = True) -> None:
        """One TCP segment. `complete`: the whole payload was captured; `checksum_ok`: False drops
        the segment like Zeek does for a bad checksum (only a 'C'/'c' in the history)."""
        ep, peer = (self.orig, self.resp) if is_orig else (self.resp, self.orig)
        if not checksum_ok:
            self._scaled(ep, "C", "chk_cnt", "chk_thresh")
            return

        # SetPartialStatus
        if is_orig:
            if not self.first_packet_seen & 1:
                self.is_partial = not (flags & SYN) or bool(flags & ACK)
        elif not self.first_packet_seen & 2 and not self.is_partial:
            self.is_partial = not (flags & SYN)

        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if flags & RST:
            seg_len -= plen
        one_past = (seq + seg_len) & M32

        # init_endpoint
        st = ep.state
        if st == INACTIVE:
            if flags & SYN:
                ep.ack_seq = ep.start_seq = seq
                last = one_past
            else:
                ep.ack_seq = ep.start_seq = (seq - 1) & M32
                last = seq
            ep.last_seq = last
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if flags & SYN and seq != ep.start_seq:
                ep.start_seq = ep.ack_seq = seq
                ep.last_seq = one_past
        elif st in (ESTABLISHED, PARTIAL):
            if flags & SYN:
                ep.start_seq = ep.ack_seq = seq
                ep.last_seq = one_past
        elif st == RESET:
            if flags & SYN and ep.prev_state == INACTIVE:
                ep.start_seq = ep.ack_seq = seq
                ep.last_seq = one_past

        rel_seq = seq_delta(seq, ep.start_seq)
        underflow = rel_seq < 0

        # update_history
        bits = (flags & SYN) // SYN + (flags & FIN) + (flags & RST) // RST
        if bits > 1:
            if flags & FIN and flags & RST:
                self._check(ep, HIST_FIN_RST_PKT, "I")
            else:
                self._check(ep, HIST_MULTI_FLAG_PKT, "Q")
        elif bits == 1:
            if flags & SYN:
                code = "H" if flags & ACK else "S"
                if self._check(ep, HIST_SYN_PKT, code) and rel_seq != ep.hist_last_syn:
                    self._add(ep, code)
                ep.hist_last_syn = rel_seq
            if flags & FIN:
                if self._check(ep, HIST_FIN_PKT, "F") and rel_seq + plen != ep.hist_last_fin:
                    self._add(ep, "F")
                ep.hist_last_fin = rel_seq + plen
            if flags & RST:
                if self._check(ep, HIST_RST_PKT, "R") and rel_seq != ep.hist_last_rst:
                    self._add(ep, "R")
                ep.hist_last_rst = rel_seq
        elif plen:
            self._check(ep, HIST_DATA_PKT, "D")
        elif flags & ACK:
            self._check(ep, HIST_ACK_PKT, "A")

        # update_window: only the zero-window letter matters here
        if window == 0 and not flags & RST and peer.state != CLOSED and ep.state != RESET:
            self._scaled(ep, "W", "win0_cnt", "win0_thresh")

        if not (self.orig.did_close and self.resp.did_close):
            self.last_time = t

        if flags & FIN:
            ep.fin_cnt += 1
            ep.fin_seq = rel_seq + seg_len
        if flags & RST:
            ep.rst_cnt += 1

        rel_ack = 0
        if flags & ACK:
            if peer.state == INACTIVE:
                rel_ack = 1
                peer.start_seq = peer.ack_seq = peer.last_seq = (ack - 1) & M32  # init_peer
            else:
                rel_ack = seq_delta(ack, peer.start_seq)
                if rel_ack < 0:
                    rel_ack = 0
                elif not flags & RST:
                    d = seq_delta(ack, peer.ack_seq)
                    if not (ack == 0 and d > TOO_LARGE_SEQ_DELTA) and d > 0:
                        peer.ack_seq = ack

        # update_last_seq
        delta_last = seq_delta(one_past, ep.last_seq)
        if flags & (SYN | RST) and (delta_last > TOO_LARGE_SEQ_DELTA or delta_last < -TOO_LARGE_SEQ_DELTA):
            pass
        elif flags & FIN and ep.last_seq == (ep.start_seq + 1) & M32:
            ep.last_seq = one_past
        elif ep.state == RESET:
            pass
        elif delta_last > 0:
            ep.last_seq = one_past
        elif plen > 0:
            self._scaled(ep, "T", "rxmt_cnt", "rxmt_thresh")

        do_close, gen_event = self._state_machine(t, ep, peer, seq, ack, plen, is_orig, flags)

        if flags & ACK:
            self._ack_received(peer, rel_ack)

        if plen > 0 and complete and not flags & RST and not underflow:
            self._data_sent(ep, peer, rel_seq + 1 if flags & SYN else rel_seq, plen)

        if is_orig:
            self.first_packet_seen |= 1
        else:
            self.first_packet_seen |= 2

        if do_close:
            self._closed(ep, peer, gen_event)

    # ---- UpdateStateMachine

    def _state_machine(self, t: int, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: int, ack: int, plen: int,
                       is_orig: bool, flags: int) -> tuple[bool, bool]:
        do_close = gen_event = False
        st = ep.state
        if st == INACTIVE:
            if flags & SYN:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if flags & ACK else SYN_SENT)
                    self.timers.append((t + TCP_ATTEMPT_DELAY, "attempt"))
                else:
                    if not flags & ACK and peer.state == SYN_ACK_SENT and seq == ep.start_seq:
                        # SYN/SYN-ACK reversal: flip the endpoints and establish
                        self.is_partial = False
                        self._flip()
                        peer.set_state(ESTABLISHED)
                        self.first_packet_seen |= 1
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    ep.set_state(ESTABLISHED)
            if flags & FIN:
                ep.set_state(CLOSED)
                do_close = gen_event = True
            if flags & RST:
                ep.set_state(RESET)
                if is_orig:
                    is_reject = peer.state == ESTABLISHED
                else:
                    is_reject = peer.state in (SYN_SENT, SYN_ACK_SENT)
                do_close = True
                gen_event = not is_reject
            if ep.state == INACTIVE:  # no control flag changed it
                if not is_orig and plen == 0 and self.orig.state == SYN_SENT:
                    pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
                elif flags & ACK and peer.state == ESTABLISHED:
                    ep.set_state(ESTABLISHED)
                    self.is_partial = False
                    self.first_packet_seen |= 1 if ep.is_orig else 2
                else:
                    ep.set_state(PARTIAL)
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if flags & FIN:
                ep.set_state(CLOSED)
                do_close = gen_event = True
            if flags & RST:
                ep.set_state(RESET)
                self.is_active = False  # ConnectionReset
                do_close = True
        elif st in (ESTABLISHED, PARTIAL):
            if flags & SYN and st == PARTIAL and peer.state == INACTIVE and not flags & ACK:
                ep.set_state(SYN_SENT)
            if flags & FIN and not flags & RST:
                ep.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)
                do_close = gen_event = True
            if flags & RST:
                ep.set_state(RESET)
                do_close = True
                if peer.state != RESET or peer.prev_state != ESTABLISHED:
                    self.is_active = False
        elif st == CLOSED:
            if flags & RST and peer.state != CLOSED:
                ep.set_state(RESET)
                if not ep.did_close:
                    do_close = True
        return do_close, gen_event

    def _flip(self) -> None:
        """Connection::FlipRoles: the endpoints swap roles; the history only gains a '^'."""
        self.orig, self.resp = self.resp, self.orig
        self.orig.is_orig = True
        self.resp.is_orig = False
        self.orig_key, self.resp_key = self.resp_key, self.orig_key
        fps = self.first_packet_seen
        self.first_packet_seen = ((fps & 1) << 1) | ((fps & 2) >> 1)
        self.is_partial = False
        if len(self.history) < HISTORY_MAX:
            self.history += "^"

    # ---- ConnectionClosed

    def _closed(self, ep: ZeekEndpoint, peer: ZeekEndpoint, gen_event: bool) -> None:
        if ep.did_close:
            return
        ep.did_close = True
        complete = ep.state == RESET or peer.did_close or peer.state == INACTIVE
        if complete:
            if (ep.prev_state != INACTIVE or peer.state != INACTIVE) and gen_event:
                self.is_active = False  # ConnectionFinished
            # CancelTimers, then delete the connection tcp_close_delay after its last activity
            self.timers = [(self.last_time + TCP_CLOSE_DELAY, "delete")]
        elif ep.prev_state != INACTIVE:
            self.timers.append((self.last_time + TCP_SESSION_TIMER, "expire"))

    # ---- the reassembler's gap bookkeeping (TCP_Reassembler)

    def _data_sent(self, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: int, plen: int) -> None:
        acked = seq_delta(ep.ack_seq, ep.start_seq)
        upper = seq + plen
        if seq < acked:
            if upper <= acked:
                return
            seq = acked
        if upper <= ep.trim:
            return
        if seq < ep.trim:
            seq = ep.trim
        if upper <= ep.reassem:
            return
        # insert [seq, upper) above the delivered data, then deliver what became contiguous
        if seq <= ep.reassem:
            ep.reassem = upper
            self._deliver(ep)
        elif len(ep.blocks) < MAX_BLOCKS:
            ep.blocks.append([seq, upper])
            ep.blocks.sort()
        else:  # full: widen the last hole's block rather than grow
            last = ep.blocks[-1]
            last[0], last[1] = min(last[0], seq), max(last[1], upper)
            ep.blocks.sort()
        # BlockInserted: data nobody acknowledges is not held for ever
        if ep.no_data_acked() and ep.size(peer) > TCP_MAX_INITIAL_WINDOW:
            self._trim(ep, peer, ep.reassem)

    @staticmethod
    def _deliver(ep: ZeekEndpoint) -> None:
        while ep.blocks and ep.blocks[0][0] <= ep.reassem:
            b = ep.blocks.pop(0)
            if b[1] > ep.reassem:
                ep.reassem = b[1]

    def _ack_received(self, ep: ZeekEndpoint, seq: int) -> None:
        """The peer acknowledged `ep`'s data up to relative `seq` (TCP_Reassembler::AckReceived)."""
        if ep.fin_cnt > 0 and seq >= ep.fin_seq:
            seq = ep.fin_seq - 1
        if seq <= ep.trim:
            return
        self._trim(ep, self.resp if ep is self.orig else self.orig, seq)

    def _trim(self, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: int) -> None:
        if seq > ep.reassem:
            self._undelivered(ep, peer, seq)
        ep.blocks = [b for b in ep.blocks if b[1] > seq]
        for b in ep.blocks:
            if b[0] < seq:
                b[0] = seq
        if seq > ep.trim:
            ep.trim = seq

    def _undelivered(self, ep: ZeekEndpoint, peer: ZeekEndpoint, up_to: int) -> None:
        if up_to <= 2 and self.is_partial:
            return  # the faked-up SYN (or a keep-alive octet) of a partial connection
        while ep.blocks and ep.blocks[0][0] < up_to:
            b = ep.blocks[0]
            if b[0] > ep.reassem:
                self._gap(ep, peer)
                ep.reassem = b[0]
            self._deliver(ep)
        if up_to > ep.reassem:
            self._gap(ep, peer)
            ep.reassem = up_to

    def _gap(self, ep: ZeekEndpoint, peer: ZeekEndpoint) -> None:
        def clean(a: ZeekEndpoint) -> bool:
            return a.state == ESTABLISHED or (a.state == CLOSED and a.prev_state == ESTABLISHED)

        if clean(ep) and clean(peer):
            self._scaled(ep, "G", "gap_cnt", "gap_thresh")

    # ---- session rules

    def is_reuse(self, flags: int, seq: int) -> bool:
        """TCPSessionAdapter::IsReuse: does this segment start a new connection on the 4-tuple?"""
        if not flags & SYN:
            return False
        conn_orig = self.orig
        if flags & ACK:
            if self.orig.state != INACTIVE:
                return False
            conn_orig = self.resp
        if not (self.orig.did_close or self.resp.did_close):
            if seq == conn_orig.start_seq:
                return False
            if (not flags & ACK and conn_orig.state == SYN_ACK_SENT and self.resp.state == INACTIVE
                    and seq == self.resp.start_seq):
                return False
        return True

    def expired_by(self, t: int) -> bool:
        """Run the timers due at or before `t`; True (and `removed_at` set) if one removed the
        connection. The connection's state does not change between its packets, so running its
        timers late, in order, decides exactly as Zeek's timer manager would have."""
        if self.removed_at is not None:
            return True
        # the connection's own inactivity timer (Connection::InactivityTimer)
        inactive_at = self.last_time + self.inactivity
        while self.timers:
            self.timers.sort()
            when, kind = self.timers[0]
            if when > t or when >= inactive_at:
                break
            self.timers.pop(0)
            if self._fire(when, kind):
                self.removed_at = when
                return True
        if inactive_at <= t:
            self.removed_at = inactive_at
            return True
        return False

    def _fire(self, when: int, kind: str) -> bool:
        o, r = self.orig, self.resp
        if kind == "delete":
            return True
        if kind == "attempt":
            return self.is_active and o.state in (SYN_SENT, SYN_ACK_SENT) and r.state == INACTIVE
        # "expire": TCPSessionAdapter::ExpireTimer
        if not self.is_active:
            return False
        if self.last_time + TCP_CONNECTION_LINGER < when:
            if o.did_close or r.did_close:
                if ((o.did_close and r.did_close) or RESET in (o.state, r.state)
                        or INACTIVE in (o.state, r.state)):
                    return True
            if r.state == INACTIVE and o.state == INACTIVE:
                return True
        self.timers.append((when + TCP_SESSION_TIMER, "expire"))
        return False

    # ---- results

    def conn_state(self) -> str:
        """conn_state() of scripts/base/protocols/conn/main.zeek."""
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (
                    os_ == RESET and self.orig.size(self.resp) == 0 and self.resp.size(self.orig) == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == RESET:
            if r_inactive:
                return "RSTOS0" if _rstos0(self.history) else "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"


def _rstos0(history: str) -> bool:
    """The pattern /^\\^?S[^HAFGIQ]*R.*/ of conn_state(), matched against the whole history."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False


# ==================================================================================================
# Classifying a Trace (a live capture or a saved one, through the detailed view)
# ==================================================================================================

def classify_connection(conn, number: int | None = None, *, end_ns: int | None = None,
                        likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS) -> ConnectionRecord:
    """Both machines over one `verifier.analysis.trace.Connection`, on its primary interface.

    `end_ns` is the end of the capture (it tells a timed-out attempt from one still trying).
    """
    machine = AttemptMachine()
    events = conn.events
    client, server = conn.client, conn.server
    zeek: ZeekConn | None = None
    syn_times: list[int] = []
    icmp: dict | None = None
    rtt = None
    last_syn = None
    for e in events:
        if e.kind == "ICMP":
            machine.feed(E["ICMP"])
            if icmp is None:
                icmp = {"family": conn.family, "type": e.icmp_type, "code": e.icmp_code, "from": e.icmp_from,
                        "count": 0}
            icmp["count"] += 1
            continue
        flags = _flag_bits(e.flags)
        from_client = e.direction == "c>s"
        machine.feed(event_of(flags, from_client))
        if from_client and flags & (SYN | ACK | RST) == SYN:
            syn_times.append(e.ts_ns)
            last_syn = e.ts_ns
        elif not from_client and flags & (SYN | ACK | RST) == SYN | ACK and rtt is None and last_syn is not None:
            rtt = (e.ts_ns - last_syn) / 1e9
        src, dst = (client, server) if from_client else (server, client)
        if zeek is None:
            zeek = ZeekConn.create(src, dst, flags, e.ts_ns, likely_server_ports)
        zeek.process(src == zeek.orig_key, e.ts_ns, flags, e.seq_abs or 0, e.ack_abs or 0, e.payload_len,
                     e.window if e.window is not None else 1)
    end = end_ns if end_ns is not None else (events[-1].ts_ns if events else 0)
    return _record(
        number=conn.number if number is None else number, family=conn.family, client=client, server=server,
        state=machine.state, visited=machine.visited, conn_state=zeek.conn_state() if zeek else "OTH",
        history=zeek.history if zeek else "",
        zeek_orig=zeek.orig_key if zeek is not None and zeek.orig_key != client else None,
        syn_times=syn_times[:MAX_SYN_TIMES], syn_count=len(syn_times), end_ns=end, icmp=icmp,
        start_ns=events[0].ts_ns if events else 0, last_ns=events[-1].ts_ns if events else 0,
        packets=len(events), iface=conn.primary_interface if conn.interfaces else None, partial=conn.partial,
        isn=conn.isn_client, rtt=rtt)


def _record(*, number: int, family: int, client: tuple, server: tuple, state: int, visited: int,
            conn_state: str, history: str, zeek_orig: tuple | None, syn_times: list[int], syn_count: int,
            end_ns: int, icmp: dict | None, start_ns: int, last_ns: int, packets: int, iface: str | None,
            partial: bool, isn: int | None, rtt: float | None) -> ConnectionRecord:
    """A ConnectionRecord from the final values of both machines (shared by every engine).

    `syn_times`: ns timestamps of the first MAX_SYN_TIMES SYNs; `syn_count`: all of them.
    `zeek_orig`: Zeek's originator (addr, port) when it is not our client.
    """
    age = (end_ns - syn_times[-1]) / 1e9 if syn_times else None
    if syn_count > len(syn_times) and syn_times:
        age = None  # the last SYN's time was not kept: it is at least this old
    outcome, detail = outcome_of(state, visited, syn_count=syn_count, last_syn_age_s=age)
    name = STATES[state]
    reset_by = "client" if name == "RESET_CLIENT" else "server" if name == "RESET_SERVER" else None
    if icmp is not None and outcome == "unreachable":
        detail = f"{_icmp_name(icmp)} from {icmp['from']} quoting the SYN; no answer from the server"
    t0 = syn_times[0] if syn_times else 0
    rec = ConnectionRecord(
        id=number, family=family, orig_h=client[0], orig_p=client[1], resp_h=server[0], resp_p=server[1],
        outcome=outcome, detail=detail, state=name, syn_count=syn_count,
        syn_times_s=[(t - t0) / 1e9 for t in syn_times], start_ns=start_ns, end_ns=last_ns, packets=packets,
        conn_state=conn_state, history=history, reset_by=reset_by, icmp=icmp, iface=iface, partial=partial,
        isn=isn, rtt_s=rtt)
    if zeek_orig is not None:
        rec.zeek_orig_h = zeek_orig[0]
        rec.extra["zeek_orig"] = f"{zeek_orig[0]}:{zeek_orig[1]}"
    return rec


def classify_trace(trace, *, likely_server_ports: frozenset[int] = DEFAULT_LIKELY_SERVER_PORTS
                   ) -> list[ConnectionRecord]:
    """Classify every connection of a `verifier.analysis.trace.Trace` (see `classify_connection`)."""
    # the end of the capture: its last packet, or the end time of its statistics blocks if later
    ends = [c.packets[-1].ts_ns for c in trace.connections if c.packets]
    ends += [s.ts_ns for s in getattr(trace, "capture_stats", [])]
    end = max(ends, default=None)
    return [classify_connection(c, end_ns=end, likely_server_ports=likely_server_ports) for c in trace.connections]


_FLAG_BITS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": 0x20, "E": 0x40, "C": 0x80, "N": 0x100}


def _flag_bits(letters: str) -> int:
    bits = 0
    for ch in letters:
        bits |= _FLAG_BITS.get(ch, 0)
    return bits


_ICMP_NAMES = {
    (4, 3, 0): "net unreachable", (4, 3, 1): "host unreachable", (4, 3, 2): "protocol unreachable",
    (4, 3, 3): "port unreachable", (4, 3, 4): "fragmentation needed", (4, 3, 9): "net prohibited",
    (4, 3, 10): "host prohibited", (4, 3, 13): "administratively prohibited", (4, 11, 0): "TTL exceeded",
    (6, 1, 0): "no route", (6, 1, 1): "administratively prohibited", (6, 1, 3): "address unreachable",
    (6, 1, 4): "port unreachable", (6, 1, 5): "source address failed policy", (6, 1, 6): "reject route",
    (6, 2, 0): "packet too big", (6, 3, 0): "hop limit exceeded",
}


def _icmp_name(icmp: dict) -> str:
    fam = icmp.get("family", 4)
    name = _ICMP_NAMES.get((fam, icmp["type"], icmp["code"]), "error")
    return f"ICMP{'v6' if fam == 6 else ''} type {icmp['type']} code {icmp['code']} ({name})"


def icmp_name(icmp: dict) -> str:
    """A short readable name for a record's `icmp` dict."""
    return _icmp_name(icmp)
