# C types for ring.py (Cython "augmenting" declarations: ring.py stays plain Python).

from libc.string cimport memcpy

cdef extern from *:
    """
    static inline void verifier_ring_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    void verifier_ring_fence() nogil

cdef unsigned int TP_STATUS_KERNEL, TP_STATUS_USER, TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID
cdef unsigned int PACKET_OUTGOING, ETH_P_8021Q, EPB, EPB_FLAGS, EPB_INBOUND, EPB_OUTBOUND
cdef bint BIG_ENDIAN
cdef Py_ssize_t BLK_STATUS, BLK_NUM_PKTS, BLK_FIRST, BLK_SEQ, BLK_LAST_SEC, BLK_LAST_NSEC
cdef Py_ssize_t PKT_NEXT, PKT_SEC, PKT_NSEC, PKT_SNAPLEN, PKT_LEN, PKT_STATUS, PKT_MAC, PKT_VLAN_TCI
cdef Py_ssize_t PKT_VLAN_TPID, PKT_SLL_PKTTYPE, EPB_FIXED
cdef long long TS_MIN, TS_MAX

cdef inline unsigned int _h32(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef inline unsigned int _h16(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef inline unsigned long long _h64(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef inline unsigned int _rd32(const unsigned char *o, Py_ssize_t i) noexcept nogil
cdef inline long long _epb_ts(const unsigned char *o, Py_ssize_t i) noexcept nogil
cdef inline void _le32(unsigned char *o, Py_ssize_t i, unsigned int v) noexcept nogil
cdef inline void _fence() noexcept nogil
cdef inline void _copy(unsigned char *o, Py_ssize_t i, unsigned char *p, Py_ssize_t j, Py_ssize_t n) noexcept nogil

cdef class Ring:
    cdef public object mm
    cdef unsigned char[::1] mem
    cdef public Py_ssize_t bsize, nblocks, rel, held, poff
    cdef public int iface
    cdef public unsigned int pleft
    cdef public bint cursor
    cdef public long long head_ts, last_ts
    cdef public unsigned long long next_seq
    cdef public long long blocks, consumed, written, discarded

    cpdef int collect(self)
    cpdef bint filling(self)
    cdef long long frontier(self, long long now_ns, long long slack_ns)
    cdef bint head(self)
    cdef void advance(self)
    cdef void _release(self, unsigned char *p)

cdef class Merger:
    cdef public list rings
    cdef public object out
    cdef public long long limit, slack_ns, total
    cdef public bytearray buf
    cdef public Py_ssize_t fill
    cdef public long long reordered, late, flushed_ts

    cpdef bint full(self)
    cpdef bint holding(self)
    cpdef bint filling(self)
    cpdef long long pump(self, long long now_ns, bint final) except -1
    cdef void _write(self, Ring r) except *
    cdef void _place(self, Py_ssize_t start, long long ts) except *
    cdef void _flush_upto(self, long long limit) except *
    cpdef flush(self)
