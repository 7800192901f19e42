# C types for attempt.py (Cython "augmenting" declarations: attempt.py stays plain Python).
# A class's decorators (final, no_gc, freelist) are written twice: on the class in the .py, which is what
# builds its type, and here, which is what the modules that cimport it see (Cython 3.3 builds a
# type without the decorators of its own augmenting .pxd; tests/unit/test_engine_types.py checks both).
cimport cython

cdef tuple _NEXT
cdef int ACK, FIN, RST, SYN, NSTATES, NEVENTS, _SYN_SENT_STATES, _ESTABLISHED_BIT, _ANSWERED_BITS
cdef long long M32
cdef long long _seq_diff(long long a, long long b) noexcept

@cython.no_gc
cdef class Machine:
    cdef public int cur, visited, misses, last_event, ignored_rsts, challenged_rsts, bad_synacks, ignored_icmp
    cdef public object miss
    cdef public long long c_isn, s_isn, c_nxt, s_nxt, c_acked, s_acked, c_win, s_win
    cdef public int c_wscale, s_wscale
    cdef public bint c_fin, s_fin

    cdef _reset(self)
    cpdef int segment(self, bint from_client, int flags, long long seq, long long ack, int window,
                      long long payload_len, object wscale, long long index) except -1
    cpdef int icmp_error(self, bint quotes_client, object quoted_seq, long long index) except -1
    cdef int _rst(self, bint from_client, int flags, long long seq, long long ack) except -1
    cdef long long _window(self, bint of_client) noexcept
    cdef _step(self, int ev, long long index)

cdef tuple _BY_STATE, _HALF_CLOSED, _CLOSED, _RESET
cdef long long _MIN_RTO_NS
cpdef tuple judge(int state, int visited, long long syn_count, long long last_syn_age_ns, unsigned long long lost, object iface)
