# C types for grouper.py (Cython "augmenting" declarations: grouper.py stays plain Python).
# A class's decorators (final, no_gc, freelist) are written twice: on the class in the .py, which is what
# builds its type, and here, which is what the modules that cimport it see (Cython 3.3 builds a
# type without the decorators of its own augmenting .pxd; tests/unit/test_engine_types.py checks both).
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.buffer cimport PyBUF_READ
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.string cimport memcpy

cdef extern from *:
    """
    #define verifier_compact_ascii(s) (PyUnicode_IS_COMPACT_ASCII(s))

    /* An arena allocator in front of the interpreter's: freed object arenas (1 MiB each) are kept,
       up to verifier_arena_max, and handed out again, instead of being unmapped and mapped afresh
       (each new arena costs 256 page faults). Called with the GIL held, as the interpreter's is. */
    #define VERIFIER_ARENAS_MAX 1024
    static PyObjectArenaAllocator verifier_arena_base;
    static void *verifier_arena_ptr[VERIFIER_ARENAS_MAX];
    static size_t verifier_arena_len[VERIFIER_ARENAS_MAX];
    static int verifier_arena_n = 0, verifier_arena_max = 0, verifier_arena_installed = 0;
    static void *verifier_arena_alloc(void *ctx, size_t size) {
        int i;
        for (i = verifier_arena_n - 1; i >= 0; i--) {
            if (verifier_arena_len[i] == size) {
                void *p = verifier_arena_ptr[i];
                verifier_arena_n--;
                verifier_arena_ptr[i] = verifier_arena_ptr[verifier_arena_n];
                verifier_arena_len[i] = verifier_arena_len[verifier_arena_n];
                return p;
            }
        }
        return verifier_arena_base.alloc(verifier_arena_base.ctx, size);
    }
    static void verifier_arena_free(void *ctx, void *ptr, size_t size) {
        if (verifier_arena_n < verifier_arena_max) {
            verifier_arena_ptr[verifier_arena_n] = ptr;
            verifier_arena_len[verifier_arena_n] = size;
            verifier_arena_n++;
            return;
        }
        verifier_arena_base.free(verifier_arena_base.ctx, ptr, size);
    }
    static int verifier_hold_arenas(int n) {
        if (n < 0) n = 0;
        if (n > VERIFIER_ARENAS_MAX) n = VERIFIER_ARENAS_MAX;
        if (!verifier_arena_installed) {
            PyObjectArenaAllocator a;
            PyObject_GetArenaAllocator(&verifier_arena_base);
            a.ctx = NULL;
            a.alloc = verifier_arena_alloc;
            a.free = verifier_arena_free;
            PyObject_SetArenaAllocator(&a);
            verifier_arena_installed = 1;
        }
        verifier_arena_max = n;
        while (verifier_arena_n > n) {  /* fewer kept from now on: let the others go */
            verifier_arena_n--;
            verifier_arena_base.free(verifier_arena_base.ctx, verifier_arena_ptr[verifier_arena_n],
                                     verifier_arena_len[verifier_arena_n]);
        }
        return n;
    }
    static int verifier_arenas_held(void) { return verifier_arena_n; }
    """
    bint PyUnicode_IS_COMPACT_ASCII "verifier_compact_ascii" (object s)
    int __builtin_clzll(unsigned long long x) nogil
    int verifier_hold_arenas(int n)
    int verifier_arenas_held()

from verifier.analysis.attempt cimport Machine, judge
from verifier.analysis.zeek cimport ZeekConn, _key_port, zeek_connection
from verifier.pcap.reader cimport Reader
from verifier.wire.decoder cimport address_text, format_address, BADSUM, FRAGMENT, ICMP, MALFORMED, OTHER, TCP, UNSUPPORTED, Decoder, Packet

cdef int ACK, FIN, RST, SYN, MAX_SYN_TIMES, _ANSWERED_STATES
cdef Py_ssize_t DONE_BATCH
cdef long long S_NS
cdef bytes _addr(bytes key, bint low)
cdef str _endpoint_text(bytes key, bint low)
cdef tuple _ep_pair(bytes ep)
cdef long long _ts(Packet pk) noexcept
cdef long long _isn0(Attempt a) noexcept

cpdef int hold_arenas(int count)
cpdef int arenas_held()
cpdef bytes json_lines(list attempts, int port=*, object write=*)
cpdef bytes _json_fixed(long long k, int scale)
cpdef bytes _json_int(object v, bint unsigned)
cdef list _SPARE
cdef Py_ssize_t _SPARE_MAX, _PIECE
cdef unsigned long long _POW10[20]
cdef const char *_DIGIT_PAIRS
cdef long long _MAX_DECIMAL

@cython.final
cdef class _JsonText:
    cdef public bytearray buf
    cdef public Py_ssize_t n
    cdef Py_ssize_t cap
    cdef char *p

    cdef _grown(self)
    cdef int _grow(self, Py_ssize_t k) except -1
    cpdef bytes value(self)
    cdef object view(self)
    cdef inline int room(self, Py_ssize_t k) except -1
    cdef inline int byte(self, int c) except -1
    cdef inline int raw(self, bytes b) except -1
    cdef int quoted(self, const char *c, Py_ssize_t k) except -1
    cdef int ascii(self, bytearray b) except -1
    cdef int plain(self, str s) except -1
    cdef int address(self, bytes key, bint low) except -1
    cdef int string(self, object s) except -1
    cdef inline int digits(self, unsigned long long v, Py_ssize_t k) except -1
    cdef int uint(self, unsigned long long v) except -1
    cdef inline int sint(self, long long v) except -1
    cdef int fixed(self, long long k, int scale, double x) except -1

cdef double _us(long long ns) noexcept

cdef class ScanStats:
    cdef public long long packets, tcp, icmp, icmp_unmatched, icmp_other, other, malformed, fragments
    cdef public long long bad_checksum, other_interface, connections, evicted, unexpected, damage_count, end_ns
    cdef public dict unsupported, lost
    cdef public object first_malformed, format, engine
    cdef public list damage, interfaces
    cdef public bint truncated

@cython.no_gc
cdef class Attempt(Machine):
    cdef public long long id, start_ns, last_ns, end_ns, npackets, copies, last_syn, rtt_ns, isn0, syn0
    cdef public unsigned long long lost  # any 64-bit pcapng counter (saturated: reader.LOST_MAX)
    cdef public int family, c_port, s_port, iface, attempt_no, nsyn, fins, icmp_count, icmp_family, icmp_type, icmp_code
    cdef public bytes key
    cdef public object iface_name, icmp_from, pkts, evs
    cdef public bint partial, closed, evicted, c_low
    cdef public list more_syns
    cdef public ZeekConn zeek

    cpdef bytes json_bytes(self)
    cdef _json(self, _JsonText out)

cdef class Grouper:
    cdef public bint zeek_mode, keep, started, ordered
    cdef public long long window, linger, sweep_every, newest, next_id, next_sweep, now, end_ns, first_ns
    cdef public Py_ssize_t max_live, max_packets
    cdef public object likely, factory, keep_ids
    cdef public dict options
    cdef public list queue
    cdef public Py_ssize_t head
    cdef public dict current, shadowed, by_isn, names, lost, ahead
    cdef object last_key, last_att
    cdef public list done, unmatched
    cdef public ScanStats stats

    cpdef feed(self, Packet pk)
    cpdef bint run(self, Reader reader, Decoder decoder, long long limit=*) except -1
    cdef bint _run(self, Reader reader, Decoder decoder, long long limit) except -1
    cdef _end_of_file(self, Reader reader)
    cdef _dispatch(self, Packet pk)
    cdef _tcp(self, Packet pk)
    cdef bint _simultaneous(self, Attempt att, bint src_low) except -1
    cdef _tcp_zeek(self, Packet pk)
    cdef Attempt _new(self, bytes key, Packet pk, bint c_low, bint partial, object prev)
    cdef list _live(self)
    cdef _segment(self, Attempt a, Packet pk)
    cdef _keep(self, Attempt a, Packet pk, int ev)
    cdef _icmp(self, Packet pk)
    cdef _finish(self, Attempt a)
    cdef _sweep(self, long long now)
    cdef _make_room(self)
    cdef _finish_all(self)
