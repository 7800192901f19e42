# C types for reader.py (Cython "augmenting" declarations: reader.py stays plain Python).

cdef unsigned int SHB, IDB, PB, SPB, ISB, EPB
cdef int DIR_NONE, DIR_IN, DIR_OUT, TS_MUL, TS_DIV, TS_SHIFT, MAX_WARNINGS
cdef long long INT64_MAX, MAX_RECORD_LEN

cdef class Iface:
    cdef public int id, linktype, kind, shift
    cdef public object name, description
    cdef public long long snaplen, mul, div, limit, offset_ns
    cdef public unsigned long long lost

cdef inline unsigned int _u16(const unsigned char *p, Py_ssize_t i, bint be) noexcept nogil
cdef inline unsigned int _u32(const unsigned char *p, Py_ssize_t i, bint be) noexcept nogil

cdef class Reader:
    cdef public object f, name
    cdef public bint owns, eof, be, nano, started, finished, truncated
    cdef public Py_ssize_t chunk, pos, end, extra
    cdef public bytearray buf
    cdef public long long base, packets_read, last_ts, rec_ts, rec_index
    cdef public int fmt, sections, damage_count
    cdef public list ifaces, all_ifaces, stats, damage
    cdef public Py_ssize_t rec_off, rec_caplen, rec_orig_len
    cdef public int rec_iface, rec_linktype, rec_dir

    cdef bint _fill(self, Py_ssize_t n) except -1
    cpdef long long offset(self)
    cdef _note(self, long long offset, str what, bint skipped)
    cdef _truncated(self, long long offset)
    cpdef int next(self) except -1
    cdef _header(self)
    cdef int _next_pcap(self) except -1
    cdef int _next_pcapng(self) except -1
    cdef bint _packet(self, const unsigned char *p, unsigned int btype, Py_ssize_t body, Py_ssize_t bend, long long start) except -1
    cdef bint _simple_packet(self, const unsigned char *p, Py_ssize_t body, Py_ssize_t bend, long long start) except -1
    cdef long long _ns(self, Iface ifc, unsigned long long units)
    cdef dict _options(self, Py_ssize_t pos, Py_ssize_t end)
    cdef _interface(self, Py_ssize_t body, Py_ssize_t bend, long long start)
    cdef _add_iface(self, Iface ifc)
    cdef _statistics(self, Py_ssize_t body, Py_ssize_t bend, long long start)
    cpdef unsigned long long iface_lost(self, int iface)
