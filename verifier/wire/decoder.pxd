# C types for decoder.py (Cython "augmenting" declarations: decoder.py stays plain Python).
# A class's decorators (final, no_gc, freelist) are written twice: on the class in the .py, which is what
# builds its type, and here, which is what the modules that cimport it see (Cython 3.3 builds a
# type without the decorators of its own augmenting .pxd; tests/unit/test_engine_types.py checks both).
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    /* Empty a list but keep its item array (list.clear() frees it; the next append allocates it again). */
    static inline void verifier_list_truncate(PyObject *l) {
        PyListObject *o = (PyListObject *)l;
        Py_ssize_t n = Py_SIZE(o);
        Py_SET_SIZE(o, 0);
        while (n-- > 0) {
            PyObject *x = o->ob_item[n];
            o->ob_item[n] = NULL;
            Py_XDECREF(x);
        }
    }
    """
    void verifier_list_truncate(list l)

# Packet kinds (the same values as decoder.py gives them when it runs uncompiled)
cpdef enum:
    OTHER = 0
    TCP = 1
    ICMP = 2
    FRAGMENT = 3
    MALFORMED = 4
    BADSUM = 5
    UNSUPPORTED = 6

cdef int ACK, FIN, RST, SYN, MAX_DEPTH

@cython.final
@cython.no_gc
@cython.freelist(64)
cdef class QuotedPacket:
    cdef public int family, ip_proto
    cdef public object src_raw, dst_raw, sport, dport, seq

@cython.final
@cython.no_gc
@cython.freelist(1024)
cdef class Packet:
    cdef public long long index, ts_ns, seq, ack
    cdef public int iface, linktype, kind, family, sport, dport, flags, window, checksum
    cdef public bint src_low
    cdef public Py_ssize_t payload_len, l4_off, l3_off, captured, ip_len
    cdef public int ttl
    cdef public object iface_name, direction, key, mss, wscale, sack_ok, tsval, tsecr
    cdef public object icmp_type, icmp_code, mtu, quoted, tunnel, error

cdef Packet _new_packet()
cdef bytes _last_key
cpdef str address_text(bytes b)
cdef Py_ssize_t _decimal(int v, char *out, Py_ssize_t k) noexcept
cdef Py_ssize_t _dotted(const unsigned char *a, Py_ssize_t i, char *out, Py_ssize_t k) noexcept
cdef Py_ssize_t format_address(const unsigned char *a, Py_ssize_t n, char *out) noexcept
cdef bint _flow_key(Packet pk, const unsigned char *d, Py_ssize_t src, Py_ssize_t dst, Py_ssize_t alen, Py_ssize_t ports) except -1
cdef inline unsigned int _u16(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef inline unsigned int _u32(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef inline unsigned int _u32le(const unsigned char *p, Py_ssize_t i) noexcept nogil
cdef bint _is_af_inet6(unsigned int v) noexcept
cdef object _sll_direction(unsigned int packet_type)
cdef void _syn_options(Packet pk, const unsigned char *d, Py_ssize_t pos, Py_ssize_t end) noexcept

cdef class Decoder:
    cdef public bint checksums
    cdef public list out
    cdef object d
    cdef const unsigned char *p
    cdef Py_ssize_t wire_len, start, l3
    cdef int ttl
    cdef object tunnel, sll_dir

    cpdef int frame(self, object d, Py_ssize_t off, Py_ssize_t caplen, Py_ssize_t orig_len, int linktype) except -1
    cdef _simple(self, int kind, object error)
    cdef _malformed(self, str what, Py_ssize_t pos)
    cdef _link(self, int lt, Py_ssize_t off, Py_ssize_t n)
    cdef _l2(self, int lt, Py_ssize_t off, Py_ssize_t n, bint outer)
    cdef _ppp(self, Py_ssize_t off, Py_ssize_t n, int depth)
    cdef _ppp_protocol(self, unsigned int p, Py_ssize_t off, Py_ssize_t n, int depth)
    cdef _ethertype(self, unsigned int et, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _ether(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _ip_any(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _ip4(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _ip6(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _l4(self, int proto, int fam, Py_ssize_t src, Py_ssize_t dst, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t wire_end, int depth)
    cdef _enter(self, str name)
    cdef _icmp(self, int fam, Py_ssize_t src, Py_ssize_t alen, Py_ssize_t pos, Py_ssize_t end)
    cdef _quoted(self, Py_ssize_t pos, Py_ssize_t n)
    cdef _gre(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _wlan(self, Py_ssize_t pos, Py_ssize_t n, int depth)
    cdef _snap(self, Py_ssize_t p, Py_ssize_t n, int depth)
    cdef _udp_tunnel(self, str kind, Py_ssize_t p, Py_ssize_t n, int depth)
