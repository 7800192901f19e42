# C types for zeek.py (Cython "augmenting" declarations: zeek.py stays plain Python).
# A class's decorators (final, no_gc, freelist) are written twice: on the class in the .py, which is what
# builds its type, and here, which is what the modules that cimport it see (Cython 3.3 builds a
# type without the decorators of its own augmenting .pxd; tests/unit/test_engine_types.py checks both).
cimport cython
from cpython.bytearray cimport PyByteArray_FromStringAndSize

cdef int ACK, FIN, RST, SYN
cdef int INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET
cdef long long HIST_SYN_PKT, HIST_FIN_PKT, HIST_RST_PKT, HIST_FIN_RST_PKT, HIST_DATA_PKT, HIST_ACK_PKT, HIST_MULTI_FLAG_PKT
cdef long long M32, TOO_LARGE_SEQ_DELTA, TCP_ATTEMPT_DELAY, TCP_SYN_TIMEOUT, TCP_SESSION_TIMER, TCP_CONNECTION_LINGER
cdef long long TCP_CLOSE_DELAY, TCP_INACTIVITY_TIMEOUT, UDP_INACTIVITY_TIMEOUT, LONG_INACTIVITY_TIMEOUT, TCP_MAX_INITIAL_WINDOW
cdef Py_ssize_t _HIST_MAX
cdef int MAX_BLOCKS, T_ATTEMPT, T_EXPIRE, T_DELETE

cpdef long long seq_delta(long long a, long long b) noexcept
cdef bint _clean(ZeekEndpoint a) noexcept
cdef bint _handshake(int state) noexcept
cdef int _key_port(bytes key, bint low)
cdef bint _wants_flip(long long flags, long long sport, long long dport, frozenset likely) except -1
cdef ZeekEndpoint _endpoint(bint is_orig)
cpdef ZeekConn zeek_connection(bytes key, bint src_low, long long flags, long long t, frozenset likely, bint timed=*)
cpdef bint _rstos0(str history)

@cython.final
@cython.no_gc  # no reference cycles: not tracked by the cyclic collector
@cython.freelist(2048)
cdef class ZeekEndpoint:
    cdef public bint is_orig, did_close
    cdef public int state, prev_state, window_scale
    cdef public long long start_seq, last_seq, ack_seq, fin_cnt, fin_seq, rst_cnt
    cdef public long long hist_last_syn, hist_last_fin, hist_last_rst
    cdef public long long chk_cnt, chk_thresh, rxmt_cnt, rxmt_thresh, win0_cnt, win0_thresh, gap_cnt, gap_thresh
    cdef public long long reassem, trim
    cdef public list blocks

    cdef _init(self, bint is_orig)
    cpdef set_state(self, long long new)
    cpdef long long size(self, ZeekEndpoint peer) noexcept
    cdef bint bump(self, int which) noexcept
    cpdef bint no_data_acked(self) noexcept

@cython.final
@cython.no_gc  # (its endpoints, key, history, timers: nothing refers back to it)
@cython.freelist(1024)
cdef class ZeekConn:
    cdef public ZeekEndpoint orig, resp
    cdef public bytes key
    cdef public bytearray hist
    cdef public long long hist_seen, last_time, start_time, inactivity, removed_at
    cdef public bint is_partial, is_active, orig_low, handshaking, established
    cdef public frozenset likely
    cdef public long long missed, orig_pkts, orig_ip_bytes, resp_pkts, resp_ip_bytes
    cdef public int first_packet_seen
    cdef public list timers

    cdef _init(self, bytes key, bint orig_low, long long t, bint flipped, bint timed)
    cdef bint _check(self, ZeekEndpoint ep, long long mask, str code) except -1
    cdef _add(self, ZeekEndpoint ep, str code)
    cdef _scaled(self, ZeekEndpoint ep, str code, int which)
    cpdef process(self, bint is_orig, long long t, long long flags, long long seq, long long ack, long long plen,
                  long long window, bint complete=*, bint checksum_ok=*)
    cdef int _state_machine(self, long long t, ZeekEndpoint ep, ZeekEndpoint peer, long long seq, long long ack,
                            long long plen, bint is_orig, int flags) except -1
    cdef _flip(self)
    cdef _port_inactivity(self)
    cdef _closed(self, ZeekEndpoint ep, ZeekEndpoint peer, bint gen_event)
    cdef _data_sent(self, ZeekEndpoint ep, ZeekEndpoint peer, long long seq, long long plen)
    cdef _deliver(self, ZeekEndpoint ep)
    cdef _ack_received(self, ZeekEndpoint ep, long long seq)
    cdef _trim(self, ZeekEndpoint ep, ZeekEndpoint peer, long long seq)
    cdef _undelivered(self, ZeekEndpoint ep, ZeekEndpoint peer, long long up_to)
    cdef _gap(self, ZeekEndpoint ep, ZeekEndpoint peer, long long n)
    cpdef count(self, bint is_orig, long long ip_len)
    cpdef bint is_reuse(self, long long flags, long long seq) except -1
    cpdef bint expired_by(self, long long t) except -1
    cdef bint _fire(self, long long when, int kind) except -1
    cpdef list limits(self)
    cpdef str conn_state(self)
