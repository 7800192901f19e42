"""Zeek's reading of a TCP connection: `conn_state`, `history`, and when Zeek would end it.

`ZeekConn` follows Zeek's TCP analyzer (src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc,
TCP.cc, src/analyzer/protocol/tcp/TCP_Endpoint.cc, TCP_Reassembler.cc) and `conn_state()` of
scripts/base/protocols/conn/main.zeek: per-endpoint states, the history letters with their repeat
rules, retransmission and gap detection, and the session rules (connection reuse, the attempt /
close / expire / inactivity timers) that decide when Zeek starts a new conn.log row for the same
4-tuple. It is the second, separate reading of the packets the attempt machine
(`verifier.analysis.attempt`) reads with TCP's own semantics; the two are never mixed.

This module is the readable reference and, compiled by Cython (zeek.pxd), the engine.
"""

from __future__ import annotations

import cython

from verifier.wire.names import ACK, FIN, RST, SYN

__all__ = ["DEFAULT_LIKELY_SERVER_PORTS", "HISTORY_MAX", "ZeekConn", "ZeekEndpoint", "seq_delta"]

M32 = 0xFFFFFFFF


# Zeek's endpoint states (TCP_ENDPOINT_*), in Zeek's order.
INACTIVE = 0
SYN_SENT = 1
SYN_ACK_SENT = 2
PARTIAL = 3
ESTABLISHED = 4
CLOSED = 5
RESET = 6
STATE_NAMES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")

# History bits (TCP_Endpoint::HIST_*); the responder's are shifted 16 bits up.
HIST_SYN_PKT = 0x1
HIST_FIN_PKT = 0x2
HIST_RST_PKT = 0x4
HIST_FIN_RST_PKT = 0x8
HIST_DATA_PKT = 0x10
HIST_ACK_PKT = 0x20
HIST_MULTI_FLAG_PKT = 0x40

TOO_LARGE_SEQ_DELTA = 1048576

# Zeek's default timers (scripts/base/init-bare.zeek), in ns.
_S = 1_000_000_000
TCP_ATTEMPT_DELAY = 5 * _S
TCP_SYN_TIMEOUT = 5 * _S
TCP_SESSION_TIMER = 6 * _S
TCP_CONNECTION_LINGER = 5 * _S
TCP_CLOSE_DELAY = 5 * _S
TCP_INACTIVITY_TIMEOUT = 300 * _S
# A new connection starts with udp_inactivity_timeout (TCPAnalyzer::MakeSessionAdapter) and gets
# tcp_inactivity_timeout when an endpoint first leaves the handshake states (TCP_Endpoint::SetState).
UDP_INACTIVITY_TIMEOUT = 60 * _S
# Conn::port_inactivity_timeouts (base/protocols/conn/inactivity.zeek), set on connection_established
LONG_INACTIVITY_PORTS = frozenset((21, 22, 23, 513))  # ftp, ssh, telnet, rlogin: 1 h
LONG_INACTIVITY_TIMEOUT = 3600 * _S
TCP_MAX_INITIAL_WINDOW = 16384

# Bounds that keep a tracked connection's memory fixed: the history keeps its first HISTORY_MAX
# letters, the reassembler at most MAX_BLOCKS holes (a further one widens the last).
HISTORY_MAX = 127
_HIST_MAX = HISTORY_MAX  # (a C constant, compiled)
MAX_BLOCKS = 8

# timer kinds
T_ATTEMPT = 1
T_EXPIRE = 2
T_DELETE = 3

#: `likely_server_ports` of a default (non-bare) Zeek run: the TCP ports its base protocol
#: scripts register (DNS, FTP, HTTP, IRC, Kerberos, LDAP, Modbus, MySQL, POP3, RDP, Redis, SMB, SMTP,
#: SOCKS, SSH, SSL/TLS, XMPP, DNP3, MQTT, ...). A bare run (zeek -b) loads none of them.
DEFAULT_LIKELY_SERVER_PORTS = frozenset((
    21, 22, 23, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585, 587, 614, 631, 636,
    989, 990, 992, 993, 995, 1080, 1883, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432, 6379, 6666,
    6667, 6668, 6669, 8000, 8080, 8888, 20000,
))


def seq_delta(a: cython.longlong, b: cython.longlong) -> cython.longlong:
    """a - b in 32-bit sequence space, as a signed number (Zeek's seq_delta)."""
    d: cython.longlong = (a - b) & M32
    return d - (M32 + 1) if d > (M32 >> 1) else d  # (M32, not 2**32 literals: C arithmetic, compiled)


@cython.final
@cython.no_gc  # no reference cycles: not tracked by the cyclic collector
@cython.freelist(2048)
@cython.cclass
class ZeekEndpoint:
    """One side of a Zeek TCP connection (TCP_Endpoint plus its TCP_Reassembler's bookkeeping)."""


    def __init__(self, is_orig: cython.bint) -> None:
        self._init(is_orig)

    def _init(self, is_orig: cython.bint) -> None:
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
        self.blocks = None  # undelivered data above a hole, sorted [seq, upper) (a list once there is some)
        self.window_scale = 0

    def set_state(self, new: cython.longlong) -> None:
        if new != self.state:
            self.prev_state = self.state
            self.state = new

    def size(self, peer: ZeekEndpoint) -> cython.longlong:
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

    def bump(self, which: cython.int) -> cython.bint:
        """Count one more bad checksum (0), retransmission (1), zero window (2) or gap (3); True when
        the count reaches its threshold (then ten times higher)."""
        n: cython.longlong
        if which == 0:
            self.chk_cnt += 1
            if self.chk_cnt == self.chk_thresh:
                self.chk_thresh *= 10
                return True
        elif which == 1:
            self.rxmt_cnt += 1
            if self.rxmt_cnt == self.rxmt_thresh:
                self.rxmt_thresh *= 10
                return True
        elif which == 2:
            self.win0_cnt += 1
            if self.win0_cnt == self.win0_thresh:
                self.win0_thresh *= 10
                return True
        else:
            self.gap_cnt += 1
            if self.gap_cnt == self.gap_thresh:
                self.gap_thresh *= 10
                return True
        return False

    def no_data_acked(self) -> cython.bint:
        d = seq_delta(self.ack_seq, self.start_seq)
        return d in (0, 1)


@cython.final
@cython.no_gc  # (its endpoints, key, history, timers: nothing refers back to it)
@cython.freelist(1024)
@cython.cclass
class ZeekConn:
    """Zeek's view of one TCP connection: conn_state, history, and when Zeek would drop it.

    `process()` is TCPSessionAdapter::Process (plus the checksum test of TCPAnalyzer::DeliverPacket)
    for one segment; `is_reuse()` is IsReuse(); `expired_by()` runs this connection's timers up to
    a time and tells whether one of them removed it (Zeek then logs it, and the next packet of the
    4-tuple starts a new connection). Times are ns.
    """


    def __init__(self, orig_key: bytes, resp_key: bytes, t: cython.longlong, flipped: cython.bint = False,
                 timed: cython.bint = True) -> None:
        low: cython.bint = orig_key <= resp_key
        self._init(orig_key + resp_key if low else resp_key + orig_key, low, t, flipped, timed)

    def _init(self, key: bytes, orig_low: cython.bint, t: cython.longlong, flipped: cython.bint,
              timed: cython.bint) -> None:
        self.orig = _endpoint(True)
        self.resp = _endpoint(False)
        self.key = key  # the flow: its two endpoints (packed address + 2-byte port), the lower first
        self.orig_low = orig_low  # the originator, as Zeek decided it, is the lower endpoint of `key`
        # the history letters (see `history`)
        if cython.compiled:  # without a call of the bytearray type
            self.hist = PyByteArray_FromStringAndSize(b"^", 1 if flipped else 0)  # noqa: F821 - zeek.pxd
        else:
            self.hist = bytearray(b"^" if flipped else b"")
        self.hist_seen = 0
        self.is_partial = False
        self.first_packet_seen = 0
        self.is_active = True
        self.last_time = self.start_time = t
        # [(time, kind)]: the analyzer's timers (T_ATTEMPT, T_EXPIRE, T_DELETE); None when the caller
        # does not ask when Zeek would end the connection (`timed` False: conn_state and history
        # do not depend on the timers, only `expired_by` does)
        self.timers = [(t + TCP_SYN_TIMEOUT, T_EXPIRE)] if timed else None
        self.inactivity = UDP_INACTIVITY_TIMEOUT
        self.handshaking = True  # both endpoints still in INACTIVE, SYN_SENT or SYN_ACK_SENT
        self.established = False  # a connection_established event is due after this packet
        self.likely = DEFAULT_LIKELY_SERVER_PORTS
        # conn.log's counters: content gap bytes, and the ConnSize analyzer's packets and IP bytes
        # per side (counted by the caller, `count`, for packets with a good checksum)
        self.missed = 0
        self.orig_pkts = self.orig_ip_bytes = self.resp_pkts = self.resp_ip_bytes = 0
        self.removed_at = -1

    # ---- creation (IPBasedAnalyzer::NewConn + TCPAnalyzer::WantConnection)

    @classmethod
    def create(cls, src: bytes, dst: bytes, flags: cython.longlong, t: cython.longlong,
               likely: frozenset = DEFAULT_LIKELY_SERVER_PORTS) -> ZeekConn:
        """The connection Zeek makes for a first packet from `src` to `dst` (packed address + port)."""
        low: cython.bint = src <= dst
        return zeek_connection(src + dst if low else dst + src, low, flags, t, likely)

    @property
    def orig_key(self) -> bytes:
        """The originator: packed address + 2-byte port."""
        n = len(self.key) // 2
        return self.key[:n] if self.orig_low else self.key[n:]

    @property
    def resp_key(self) -> bytes:
        n = len(self.key) // 2
        return self.key[n:] if self.orig_low else self.key[:n]

    @staticmethod
    def wants_flip(flags: cython.longlong, sport: cython.longlong, dport: cython.longlong, likely: frozenset) -> cython.bint:
        """Whether Zeek makes the receiver of this first packet the originator.

        As TCPAnalyzer::WantConnection: only a connection that does not start with a plain SYN is
        a candidate, and only when its source port is a likely server port; with both ports
        likely, a packet without SYN flips when the source port is the lower one. A SYN-ACK then
        flips too: the oracle's flip-without-syn trace (SYN-ACK from port 80 to IRC's 6669, both
        likely) is logged flipped, which the older rule did not do.
        """
        return _wants_flip(flags, sport, dport, likely)

    # ---- history (Connection::CheckHistory / AddHistory, ScaledHistoryEntry)

    @property
    def history(self) -> str:
        """Zeek's history string: a letter per event kind, upper case for the originator."""
        return self.hist.decode("ascii")

    def _check(self, ep: ZeekEndpoint, mask: cython.longlong, code: str) -> cython.bint:
        if not ep.is_orig:
            mask <<= 16
        if not self.hist_seen & mask:
            self.hist_seen |= mask
            if len(self.hist) < _HIST_MAX:
                c: cython.int = ord(code) if ep.is_orig else ord(code) | 0x20
                self.hist.append(c)
            return False
        return True

    def _add(self, ep: ZeekEndpoint, code: str) -> None:
        if len(self.hist) < _HIST_MAX:
            c: cython.int = ord(code) if ep.is_orig else ord(code) | 0x20
            self.hist.append(c)

    def _scaled(self, ep: ZeekEndpoint, code: str, which: cython.int) -> None:
        """ScaledHistoryEntry: the letter again at 1, 10, 100, ... occurrences."""
        if ep.bump(which):
            self._add(ep, code)

    # ---- the packet

    def process(self, is_orig: cython.bint, t: cython.longlong, flags: cython.longlong, seq: cython.longlong, ack: cython.longlong, plen: cython.longlong, window: cython.longlong,
                complete: cython.bint = True, checksum_ok: cython.bint = True) -> None:
        """One TCP segment. `complete`: the whole payload was captured; `checksum_ok`: False drops
        the segment like Zeek does for a bad checksum (only a 'C'/'c' in the history)."""
        ep: ZeekEndpoint = self.orig if is_orig else self.resp
        peer: ZeekEndpoint = self.resp if is_orig else self.orig
        if not checksum_ok:
            self._scaled(ep, "C", 0)
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
            self._scaled(ep, "W", 2)

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
            self._scaled(ep, "T", 1)

        r: cython.int = self._state_machine(t, ep, peer, seq, ack, plen, is_orig, flags)
        do_close: cython.bint = (r & 1) != 0
        gen_event: cython.bint = (r & 2) != 0

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
        if self.handshaking and not (_handshake(self.orig.state) and _handshake(self.resp.state)):
            self.handshaking = False  # TCP_Endpoint::SetState: the handshake is over
            self.inactivity = TCP_INACTIVITY_TIMEOUT
        if self.established:
            self.established = False
            self._port_inactivity()

    def _port_inactivity(self) -> None:
        """connection_established in base/protocols/conn/inactivity.zeek: the responder's port (or,
        for a half-established connection, the originator's, if only it is a likely server port)
        picks Conn::port_inactivity_timeouts."""
        port: cython.int = _key_port(self.key, not self.orig_low)
        if self.orig.state == INACTIVE:
            o_port: cython.int = _key_port(self.key, self.orig_low)
            if port not in self.likely and o_port in self.likely:
                port = o_port
        if port in LONG_INACTIVITY_PORTS:
            self.inactivity = LONG_INACTIVITY_TIMEOUT

    def count(self, is_orig: cython.bint, ip_len: cython.longlong) -> None:
        """One more packet of `ip_len` IP bytes for the ConnSize analyzer (conn.log's orig_pkts,
        orig_ip_bytes, resp_pkts, resp_ip_bytes), after `process` decided who sent it."""
        if is_orig:
            self.orig_pkts += 1
            self.orig_ip_bytes += ip_len
        else:
            self.resp_pkts += 1
            self.resp_ip_bytes += ip_len

    # ---- UpdateStateMachine

    def _state_machine(self, t: cython.longlong, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: cython.longlong,
                       ack: cython.longlong, plen: cython.longlong, is_orig: cython.bint, flags: cython.int) -> cython.int:
        """UpdateStateMachine; returns do_close | gen_event << 1."""
        do_close: cython.bint = False
        gen_event: cython.bint = False
        is_reject: cython.bint
        st = ep.state
        if st == INACTIVE:
            if flags & SYN:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if flags & ACK else SYN_SENT)
                    if self.timers is not None:
                        self.timers.append((t + TCP_ATTEMPT_DELAY, T_ATTEMPT))
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
                    if peer.state != PARTIAL:
                        self.established = True  # Event(connection_established)
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
        return (1 if do_close else 0) | (2 if gen_event else 0)

    def _flip(self) -> None:
        """Connection::FlipRoles: the endpoints swap roles; the history only gains a '^'."""
        self.orig, self.resp = self.resp, self.orig
        self.orig.is_orig = True
        self.resp.is_orig = False
        self.orig_low = not self.orig_low
        fps = self.first_packet_seen
        self.first_packet_seen = ((fps & 1) << 1) | ((fps & 2) >> 1)
        self.is_partial = False
        self.orig_pkts, self.resp_pkts = self.resp_pkts, self.orig_pkts  # ConnSize_Analyzer::FlipRoles
        self.orig_ip_bytes, self.resp_ip_bytes = self.resp_ip_bytes, self.orig_ip_bytes
        if len(self.hist) < _HIST_MAX:
            self.hist.append(94)  # "^"

    # ---- ConnectionClosed

    def _closed(self, ep: ZeekEndpoint, peer: ZeekEndpoint, gen_event: cython.bint) -> None:
        if ep.did_close:
            return
        ep.did_close = True
        complete = ep.state == RESET or peer.did_close or peer.state == INACTIVE
        if complete:
            if (ep.prev_state != INACTIVE or peer.state != INACTIVE) and gen_event:
                self.is_active = False  # ConnectionFinished
            # CancelTimers, then delete the connection tcp_close_delay after its last activity
            if self.timers is not None:
                self.timers = [(self.last_time + TCP_CLOSE_DELAY, T_DELETE)]
        elif ep.prev_state != INACTIVE:
            if self.timers is not None:
                self.timers.append((self.last_time + TCP_SESSION_TIMER, T_EXPIRE))

    # ---- the reassembler's gap bookkeeping (TCP_Reassembler)

    def _data_sent(self, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: cython.longlong, plen: cython.longlong) -> None:
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
        elif ep.blocks is None or len(ep.blocks) < MAX_BLOCKS:
            if ep.blocks is None:
                ep.blocks = []
            ep.blocks.append([seq, upper])
            ep.blocks.sort()
        else:  # full: widen the last hole's block rather than grow
            last = ep.blocks[len(ep.blocks) - 1]  # (no negative index: the engine is compiled with wraparound off)
            last[0], last[1] = min(last[0], seq), max(last[1], upper)
            ep.blocks.sort()
        # BlockInserted: data nobody acknowledges is not held for ever
        if ep.no_data_acked() and ep.size(peer) > TCP_MAX_INITIAL_WINDOW:
            self._trim(ep, peer, ep.reassem)

    def _deliver(self, ep: ZeekEndpoint) -> None:
        while ep.blocks and ep.blocks[0][0] <= ep.reassem:
            b = ep.blocks.pop(0)
            if b[1] > ep.reassem:
                ep.reassem = b[1]

    def _ack_received(self, ep: ZeekEndpoint, seq: cython.longlong) -> None:
        """The peer acknowledged `ep`'s data up to relative `seq` (TCP_Reassembler::AckReceived)."""
        if ep.fin_cnt > 0 and seq >= ep.fin_seq:
            seq = ep.fin_seq - 1
        if seq <= ep.trim:
            return
        self._trim(ep, self.resp if ep is self.orig else self.orig, seq)

    def _trim(self, ep: ZeekEndpoint, peer: ZeekEndpoint, seq: cython.longlong) -> None:
        if seq > ep.reassem:
            self._undelivered(ep, peer, seq)
        if ep.blocks:
            ep.blocks = [b for b in ep.blocks if b[1] > seq]
            for b in ep.blocks:
                if b[0] < seq:
                    b[0] = seq
        if seq > ep.trim:
            ep.trim = seq

    def _undelivered(self, ep: ZeekEndpoint, peer: ZeekEndpoint, up_to: cython.longlong) -> None:
        if up_to <= 2 and self.is_partial:
            return  # the faked-up SYN (or a keep-alive octet) of a partial connection
        while ep.blocks and ep.blocks[0][0] < up_to:
            b = ep.blocks[0]
            if b[0] > ep.reassem:
                self._gap(ep, peer, b[0] - ep.reassem)
                ep.reassem = b[0]
            self._deliver(ep)
        if up_to > ep.reassem:
            self._gap(ep, peer, up_to - ep.reassem)
            ep.reassem = up_to

    def _gap(self, ep: ZeekEndpoint, peer: ZeekEndpoint, n: cython.longlong) -> None:
        if _clean(ep) and _clean(peer):
            self._scaled(ep, "G", 3)
            self.missed += n  # the content_gap event: conn.log's missed_bytes

    # ---- session rules

    def is_reuse(self, flags: cython.longlong, seq: cython.longlong) -> cython.bint:
        """TCPSessionAdapter::IsReuse: does this segment start a new connection on the 4-tuple?"""
        if not flags & SYN:
            return False
        conn_orig: ZeekEndpoint = self.orig
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

    def expired_by(self, t: cython.longlong) -> cython.bint:
        """Run the timers due at or before `t`; True (and `removed_at` set) if one removed the
        connection. The connection's state does not change between its packets, so running its
        timers late, in order, decides exactly as Zeek's timer manager would have."""
        if self.removed_at >= 0:
            return True
        # the connection's own inactivity timer (Connection::InactivityTimer)
        inactive_at: cython.longlong = self.last_time + self.inactivity
        if self.timers is None:
            raise ValueError("this connection keeps no timers (made with timed=False)")
        if inactive_at > t:
            for when, kind in self.timers:
                if when <= t:
                    break
            else:
                return False  # nothing due yet (the common case, checked on every packet)
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

    def _fire(self, when: cython.longlong, kind: cython.int) -> cython.bint:
        o: ZeekEndpoint = self.orig
        r: ZeekEndpoint = self.resp
        if kind == T_DELETE:
            return True
        if kind == T_ATTEMPT:
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
        self.timers.append((when + TCP_SESSION_TIMER, T_EXPIRE))
        return False

    # ---- results

    def limits(self):
        """Where this reading hit one of its fixed bounds and so may differ from Zeek's: a list of
        "history_limit" (HISTORY_MAX letters kept) and "reassembly_limit" (MAX_BLOCKS holes in one
        direction), or None."""
        out = None
        if len(self.hist) >= _HIST_MAX:
            out = ["history_limit"]
        o: ZeekEndpoint = self.orig
        r: ZeekEndpoint = self.resp
        if (o.blocks is not None and len(o.blocks) >= MAX_BLOCKS) or (r.blocks is not None and len(r.blocks) >= MAX_BLOCKS):
            out = (out or []) + ["reassembly_limit"]
        return out

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


def _key_port(key: bytes, low: cython.bint) -> cython.int:
    """The port of the lower (`low`) or higher endpoint of a flow key."""
    half: cython.Py_ssize_t = len(key) // 2
    i: cython.Py_ssize_t = half - 2 if low else 2 * half - 2
    return (key[i] << 8) | key[i + 1]


def _wants_flip(flags: cython.longlong, sport: cython.longlong, dport: cython.longlong, likely: frozenset) -> cython.bint:
    if flags & SYN and not flags & ACK:
        return False
    if sport not in likely:
        return False
    if dport in likely:
        return (flags & SYN) != 0 or sport < dport
    return True


def zeek_connection(key: bytes, src_low: cython.bint, flags: cython.longlong, t: cython.longlong, likely: frozenset,
                    timed: cython.bint = True) -> ZeekConn:
    """The connection Zeek makes for a first packet of the flow `key` (see verifier.wire's Packet.key)
    sent by its lower endpoint when `src_low`. `timed`: keep Zeek's timers (for `expired_by`)."""
    z: ZeekConn = ZeekConn.__new__(ZeekConn)  # without the Python-level __init__ call: the engine's way
    if _wants_flip(flags, _key_port(key, src_low), _key_port(key, not src_low), likely):
        z._init(key, not src_low, t, True, timed)
    else:
        z._init(key, src_low, t, False, timed)
    z.likely = likely
    return z


def _endpoint(is_orig: cython.bint) -> ZeekEndpoint:
    ep: ZeekEndpoint = ZeekEndpoint.__new__(ZeekEndpoint)
    ep._init(is_orig)
    return ep


def _handshake(state: cython.int) -> cython.bint:
    """is_handshake() of TCP_Endpoint.cc."""
    return state == INACTIVE or state == SYN_SENT or state == SYN_ACK_SENT


def _clean(a: ZeekEndpoint) -> cython.bint:
    return a.state == ESTABLISHED or (a.state == CLOSED and a.prev_state == ESTABLISHED)


def _rstos0(history: str) -> cython.bint:
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


