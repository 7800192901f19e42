"""The one connection model: decoded packets grouped into TCP connection attempts, streaming.

An *attempt* is a 4-tuple plus the client's initial sequence number, on the interface where it was
seen first (its primary interface): a retransmitted SYN (same ISN) is the same attempt, a SYN with
a new ISN on the same 4-tuple starts a new one, a SYN from the server side of an open attempt is a
simultaneous open. The client is the sender of the SYN; an attempt whose first packet is not a SYN
is `partial`, oriented from the receiver of a SYN-ACK or else from the sender of its first packet.
Copies of its packets on other interfaces are kept (`copies`) but judged only once, on the primary.

`Grouper` holds the table of live attempts. Packets are taken in time order within a reordering
window (`reorder_s`, 0.1 s of capture time: a pcapng file written from several interfaces is
slightly out of order); an attempt idle for `linger_s` (Zeek's tcp_inactivity_timeout, 5 min) is
finished and forgotten; and the table has a memory cap (`max_connections`): when it is full, idle
attempts are finished first, then the oldest half-open ones are evicted, each eviction counted
(`evicted` on the attempt, `stats.evicted`). In "zeek" grouping, Zeek's own connection reuse and
timers decide where one connection ends (`verifier.analysis.zeek`), every interface counts, and the
file order is kept, as Zeek does.

Each attempt runs both readings of its packets: the attempt machine (`verifier.analysis.attempt`,
TCP's semantics, the project's verdicts) and Zeek's (`conn_state`, `history`). `verifier replay`,
`verifier show`, `verifier.analysis.trace.Trace` (and so `expect()`) all group through this module.

This module is the readable reference and, compiled by Cython (grouper.pxd), the engine: with the
reader and the decoder it runs without a Python object per packet beyond the decoded record.
"""

from __future__ import annotations

import gc

import cython

from verifier.analysis.attempt import STATES, Machine, judge
from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS, ZeekConn, zeek_connection
from verifier.pcap.reader import Reader
from verifier.wire.decoder import Decoder, Packet

if not cython.compiled:  # compiled, grouper.pxd cimports these
    from verifier.analysis.zeek import _key_port
    from verifier.wire.decoder import BADSUM, FRAGMENT, ICMP, MALFORMED, OTHER, TCP, UNSUPPORTED, address_text
from verifier.wire.names import ACK, FIN, RST, SYN, icmp_label

__all__ = ["Attempt", "DEFAULT_LINGER_S", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_REORDER_S", "Grouper", "ScanStats",
           "json_lines"]

S_NS = 1000000000
DEFAULT_LINGER_S = 300.0  # Zeek's tcp_inactivity_timeout: an attempt idle this long is finished
DEFAULT_REORDER_S = 0.1
DEFAULT_MAX_CONNECTIONS = 60000  # live attempts before eviction (about 1.7 kB each: about 100 MB)
# `run(limit)` also hands back when this many attempts have finished, so that the finished ones
# waiting to be taken stay few (a flood finishes an attempt per frame)
DONE_BATCH = 8192
MAX_SYN_TIMES = 32  # SYN times kept per attempt (the count stays exact)
_ZEEK_SWEEP_NS = 10 * S_NS

_DIRS = ("in", "out")
# states that mean the attempt got past its handshake (the rest are half-open, evicted first)
_ANSWERED_STATES = sum(1 << STATES.index(n) for n in ("ESTABLISHED", "MIDSTREAM", "FIN_CLIENT", "FIN_SERVER", "CLOSED"))


class ScanStats:
    """What a pass over a capture read: counts of frames and packets by fate, and file notes."""

    def __init__(self) -> None:
        self.packets = 0  # frames in the file
        self.tcp = 0  # TCP segments decoded (inner ones for tunnels)
        self.icmp = 0  # ICMP/ICMPv6 errors quoting a TCP packet
        self.icmp_unmatched = 0  # ... that quote no connection seen
        self.icmp_other = 0  # ICMP errors quoting something else than TCP
        self.other = 0  # frames that are neither (ARP, UDP, ...)
        self.malformed = 0  # broken IPv4/IPv6/TCP/ICMP headers
        self.fragments = 0  # IPv4/IPv6 fragments (not reassembled)
        self.bad_checksum = 0  # only counted when checksums are checked
        self.other_interface = 0  # copies of an attempt's packets on other interfaces than its primary
        self.connections = 0
        self.evicted = 0  # attempts evicted by the memory cap
        self.unexpected = 0  # (state, event) pairs the attempt table does not have
        self.unsupported = {}  # link type -> frames of it (not read)
        self.first_malformed = None  # (frame index, what) of the first malformed frame
        self.lost = {}  # interface name -> packets the capture lost there (pcapng statistics)
        self.damage = []  # Damage notes of the file
        self.damage_count = 0
        self.truncated = False
        self.format = None
        self.engine = "compiled" if cython.compiled else "python"
        self.end_ns = 0
        self.interfaces = []

    _FIELDS = ("packets", "tcp", "icmp", "icmp_unmatched", "icmp_other", "other", "malformed", "fragments",
               "bad_checksum", "other_interface", "connections", "evicted", "unexpected", "unsupported", "first_malformed",
               "lost", "damage", "damage_count", "truncated", "format", "engine", "end_ns", "interfaces")

    def as_json(self) -> dict:
        d = {f: getattr(self, f) for f in ScanStats._FIELDS}
        d["unsupported"] = {str(k): v for k, v in self.unsupported.items()}
        d["damage"] = [{"offset": x.offset, "what": x.what, "skipped": x.skipped} for x in self.damage]
        d["first_malformed"] = (None if self.first_malformed is None
                                else {"frame": self.first_malformed[0] + 1, "what": self.first_malformed[1]})
        return d

    def notes(self) -> list:
        """One short phrase per thing a reader of the summary must know."""
        out = []
        for lt, n in sorted(self.unsupported.items()):
            out.append(f"{n} frames of link type {lt} not read (unsupported)")
        if self.malformed:
            out.append(f"{self.malformed} malformed packet(s)")
        if self.fragments:
            out.append(f"{self.fragments} fragments (not reassembled)")
        if self.icmp_unmatched:
            out.append(f"{self.icmp_unmatched} ICMP error(s) quoting no connection")
        if self.evicted:
            out.append(f"{self.evicted} attempts evicted by the memory cap (see --max-connections)")
        if self.unexpected:
            out.append(f"{self.unexpected} packets the attempt table has no transition for")
        for name, n in self.lost.items():
            out.append(f"the capture lost {n} packets on {name}")
        if self.truncated:
            out.append("capture truncated")
        if self.damage_count:
            out.append(f"{self.damage_count} damaged record(s)")
        return out


def _addr(key: bytes, low: cython.bint) -> bytes:
    """The packed address of the lower (`low`) or higher endpoint of a flow key."""
    half: cython.Py_ssize_t = len(key) // 2
    return key[:half - 2] if low else key[half:2 * half - 2]


def _endpoint_text(key: bytes, low: cython.bint) -> str:
    """"addr:port" of one endpoint of a flow key ("[addr]:port" for IPv6)."""
    half: cython.Py_ssize_t = len(key) // 2
    addr = address_text(_addr(key, low))
    port: cython.int = _key_port(key, low)
    return f"[{addr}]:{port}" if half > 6 else f"{addr}:{port}"


def _ep_pair(ep: bytes) -> tuple:
    """(address text, port) of a packed endpoint."""
    n: cython.Py_ssize_t = len(ep) - 2
    return (address_text(ep[:n]), (ep[n] << 8) | ep[n + 1])


def _isn0(a: Attempt) -> cython.longlong:
    return a.isn0


def _attempt_id(a: Attempt):
    return a.id


def _ts(pk: Packet) -> cython.longlong:
    return pk.ts_ns


def hold_arenas(count: cython.int) -> cython.int:
    """Keep up to `count` of the interpreter's freed object arenas (1 MiB each) for reuse, instead of
    giving them back to the kernel, for the rest of the process (0: keep none); returns the count
    in force. For a one-pass command that makes and frees millions of objects: without it, the
    interpreter unmapped and mapped again a hundred arenas on the 1 M mixed capture, each new one
    256 page faults (8% of `verifier replay --json`). A process-wide policy, like gc.disable(): the
    command sets it, not the library. Compiled engine only (run as Python, it does nothing: 0)."""
    if cython.compiled:
        return verifier_hold_arenas(count)  # noqa: F821 - grouper.pxd
    return 0


def arenas_held() -> cython.int:
    """Freed arenas kept for reuse now (see hold_arenas)."""
    if cython.compiled:
        return verifier_arenas_held()  # noqa: F821 - grouper.pxd
    return 0


def json_lines(attempts: list, port: cython.int = -1, write=None) -> bytes:
    """The JSON Lines of `attempts`, only those with `port` on either side when `port` >= 0: one
    bytes object for one write (the replay's output loop, compiled). With `write`, the text goes to
    write(view) instead, in pieces of about 1 MiB (memory stays flat on a long list), and b"" is
    returned: `view` is a read-only memoryview of the buffer, valid only during the call (no copy of
    the text is made: a megabyte copied, a fresh allocation each, was a tenth of the writing)."""
    try:
        out: _JsonText = _SPARE.pop()  # a buffer of an earlier call (pop: one per thread at a time)
    except IndexError:
        out = _JsonText()
    out.n = 0
    a: Attempt
    for x in attempts:
        a = x
        if port < 0 or a.c_port == port or a.s_port == port:
            a._json(out)
            out.byte(10)
            if write is not None and out.n >= _PIECE:
                write(out.view())
                out.n = 0
    if write is not None:
        if out.n:
            write(out.view())
        text = b""
    else:
        text = out.value()
    if len(out.buf) <= _SPARE_MAX:
        _SPARE.append(out)
    return text


def _jsonl():
    """verifier.analysis.jsonl (msgspec), imported when first needed: the lines of a replay
    rarely need it, and its import is a tenth of the command's start-up."""
    from verifier.analysis import jsonl

    return jsonl


_SPARE: list = []  # buffers of json_lines, reused
_SPARE_MAX = 1 << 22  # (a larger one, made for one long list, is let go)
_PIECE = 1 << 20
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000, 10000000000,
          100000000000, 1000000000000, 10000000000000, 100000000000000, 1000000000000000,
          10000000000000000, 100000000000000000, 1000000000000000000, 10000000000000000000)
_DIGIT_PAIRS = (b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"  # "00" "01" ... "99" (a literal: compiled, a C string)
                b"5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899")
_MAX_DECIMAL = 1000000000000000  # fixed-point values below this have at most 15 digits: the shortest form


@cython.final
@cython.cclass
class _JsonText:
    """A growing buffer of JSON text, written value by value from typed fields: the JSON Lines of
    `verifier replay --json`, byte for byte what msgspec writes for `verifier.analysis.jsonl.Record`
    (strings that need escaping and the rare floats in exponent form are msgspec's own encoding;
    tests/unit/test_replay.py compares the two). Each method returns 0 (-1 with an exception, compiled).

    Characters are stored through `p`: compiled, a C pointer into the buffer (kept current by
    `room`); run as Python, the bytearray itself. `cap` is the buffer's length."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)
        self.n = 0
        self._grown()

    def _grown(self) -> None:
        self.cap = len(self.buf)
        if cython.compiled:
            self.p = PyByteArray_AS_STRING(self.buf)  # noqa: F821 - grouper.pxd
        else:
            self.p = self.buf

    def value(self) -> bytes:
        """The text written, as bytes."""
        if cython.compiled:
            return PyBytes_FromStringAndSize(self.p, self.n)  # noqa: F821 - grouper.pxd
        return bytes(self.buf[:self.n])

    def view(self):
        """The text written, as a read-only memoryview of the buffer (valid until the next write)."""
        if cython.compiled:
            return PyMemoryView_FromMemory(self.p, self.n, PyBUF_READ)  # noqa: F821
        return memoryview(self.buf)[:self.n].toreadonly()

    def room(self, k: cython.Py_ssize_t) -> cython.int:
        """Make room for k more bytes (the test inline, the growing out of line: the writers that
        call it stay small enough for the C compiler to inline them)."""
        if self.n + k > self.cap:
            return self._grow(k)
        return 0

    def _grow(self, k: cython.Py_ssize_t) -> cython.int:
        self.buf.extend(bytes(self.cap + k))
        self._grown()
        return 0

    def byte(self, c: cython.int) -> cython.int:
        """One ASCII character (its code)."""
        self.room(1)
        self.p[self.n] = c
        self.n += 1
        return 0

    def raw(self, b: bytes) -> cython.int:
        """Bytes that are JSON text already."""
        k: cython.Py_ssize_t = len(b)
        self.room(k)
        if cython.compiled:
            memcpy(self.p + self.n, PyBytes_AS_STRING(b), k)  # noqa: F821 - grouper.pxd
        else:
            self.buf[self.n:self.n + k] = b
        self.n += k
        return 0

    def quoted(self, c: cython.p_const_char, k: cython.Py_ssize_t) -> cython.int:
        """The `k` characters at `c`, which need no escaping, between quotes (compiled only)."""
        self.room(k + 2)
        self.p[self.n] = 34
        memcpy(self.p + self.n + 1, c, k)  # noqa: F821 - grouper.pxd
        self.p[self.n + 1 + k] = 34
        self.n += k + 2
        return 0

    def ascii(self, b: bytearray) -> cython.int:
        """A JSON string of ASCII characters that need no escaping (Zeek's history letters)."""
        if cython.compiled:
            return self.quoted(PyByteArray_AS_STRING(b), len(b))  # noqa: F821
        k: cython.Py_ssize_t = len(b)
        self.room(k + 2)
        self.buf[self.n] = 34
        self.buf[self.n + 1:self.n + 1 + k] = b
        self.buf[self.n + 1 + k] = 34
        self.n += k + 2
        return 0

    def plain(self, s: str) -> cython.int:
        """A JSON string of ASCII characters that need no escaping (an address, "addr:port")."""
        if cython.compiled:
            k: cython.Py_ssize_t = 0
            c: cython.p_const_char = PyUnicode_AsUTF8AndSize(s, cython.address(k))  # noqa: F821 - grouper.pxd
            return self.quoted(c, k)
        return self.ascii(bytearray(s.encode("ascii")))

    def address(self, key: bytes, low: cython.bint) -> cython.int:
        """The address of the lower (`low`) or higher endpoint of a flow key, as a JSON string
        (compiled: formatted into the buffer, what address_text returns without its objects)."""
        if cython.compiled:
            half: cython.Py_ssize_t = PyBytes_GET_SIZE(key) // 2  # noqa: F821 - grouper.pxd
            self.room(48)
            dst: cython.p_char = self.p + self.n
            src: cython.p_const_uchar = cython.cast(cython.p_const_uchar, PyBytes_AS_STRING(key)) + (0 if low else half)  # noqa: F821
            k: cython.Py_ssize_t = format_address(src, half - 2, dst + 1)  # noqa: F821 - decoder.pxd
            dst[0] = 34
            dst[k + 1] = 34
            self.n += k + 2
            return 0
        return self.plain(address_text(_addr(key, low)))

    def string(self, s) -> cython.int:
        """A str (or None: null), as msgspec encodes it: printable ASCII without a quote or a
        backslash is written as it is (msgspec's text for it is that), anything else by msgspec."""
        if s is None:
            return self.raw(b"null")
        if type(s) is str:
            if cython.compiled:
                if PyUnicode_IS_COMPACT_ASCII(s):  # noqa: F821 - grouper.pxd
                    k: cython.Py_ssize_t = PyUnicode_GET_LENGTH(s)  # noqa: F821
                    c: cython.p_const_uchar = cython.cast(cython.p_const_uchar, PyUnicode_DATA(s))  # noqa: F821
                    i: cython.Py_ssize_t
                    plain: cython.bint = True
                    for i in range(k):
                        if c[i] < 32 or c[i] > 126 or c[i] == 34 or c[i] == 92:
                            plain = False
                            break
                    if plain:
                        return self.quoted(cython.cast(cython.p_const_char, c), k)
            elif s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
                return self.ascii(bytearray(s.encode("ascii")))
        return self.raw(_jsonl().ENCODER.encode(s))

    def digits(self, v: cython.ulonglong, k: cython.Py_ssize_t) -> cython.int:
        """The last k decimal digits of v (leading zeros included), room made already; written from
        the right, four a step (one division by 10,000, two by 100 of a small number), then two, then one."""
        first: cython.Py_ssize_t = self.n
        i: cython.Py_ssize_t = first + k - 1
        r: cython.uint
        hi: cython.uint
        lo: cython.uint
        while i >= first + 3:
            r = cython.cast(cython.uint, v % 10000)
            v //= 10000
            hi = r // 100
            lo = r % 100
            self.p[i] = _DIGIT_PAIRS[2 * lo + 1]
            self.p[i - 1] = _DIGIT_PAIRS[2 * lo]
            self.p[i - 2] = _DIGIT_PAIRS[2 * hi + 1]
            self.p[i - 3] = _DIGIT_PAIRS[2 * hi]
            i -= 4
        while i > first:
            lo = cython.cast(cython.uint, v % 100)
            v //= 100
            self.p[i] = _DIGIT_PAIRS[2 * lo + 1]
            self.p[i - 1] = _DIGIT_PAIRS[2 * lo]
            i -= 2
        if i == first:
            self.p[i] = 48 + cython.cast(cython.int, v % 10)
        self.n += k
        return 0

    def uint(self, v: cython.ulonglong) -> cython.int:
        """An integer, 0 or more."""
        k: cython.Py_ssize_t
        if cython.compiled:
            # its digits from its bits: floor(bits * log10(2)), one more unless below that power of ten
            t: cython.int = ((64 - __builtin_clzll(v | 1)) * 1233) >> 12  # noqa: F821 - grouper.pxd
            k = t + 1 - (v < _POW10[t])
            if k == 0:
                k = 1
        else:
            k = len(str(v))
        self.room(k)
        return self.digits(v, k)

    def sint(self, v: cython.longlong) -> cython.int:
        """An integer."""
        if v < 0:
            self.byte(45)
            return self.uint(cython.cast(cython.ulonglong, -(v + 1)) + 1)
        return self.uint(v)

    def fixed(self, k: cython.longlong, scale: cython.int, x: cython.double) -> cython.int:
        """The float x, which is k / 10**scale (5 < scale <= 9), as msgspec writes it: the shortest
        form that reads back as x, which for at most 15 digits is the decimal k * 10**-scale itself;
        msgspec's exponent form below 1e-5."""
        if k == 0:
            return self.raw(b"0.0")
        if k < cython.cast(cython.longlong, _POW10[scale - 5]) or k >= _MAX_DECIMAL:  # (k may be negative)
            return self.raw(_jsonl().ENCODER.encode(x))
        p: cython.longlong = _POW10[scale]
        self.uint(k // p)
        f: cython.longlong = k % p
        if f == 0:
            return self.raw(b".0")
        d: cython.int = scale  # the fraction's digits, leading zeros included, trailing ones not
        while f % 10 == 0:
            f //= 10
            d -= 1
        self.room(d + 1)
        self.p[self.n] = 46
        self.n += 1
        return self.digits(f, d)


def _json_int(v, unsigned: cython.bint) -> bytes:
    """How the JSON lines write the integer v (a 64-bit unsigned or signed one; for the tests)."""
    out: _JsonText = _JsonText()
    if unsigned:
        out.uint(v)
    else:
        out.sint(v)
    return out.value()


def _json_fixed(k: cython.longlong, scale: cython.int) -> bytes:
    """How the JSON lines write the float k / 10**scale (scale 6 or 9; for the tests)."""
    out: _JsonText = _JsonText()
    out.fixed(k, scale, k / 1e6 if scale == 6 else k / 1e9)
    return out.value()


def _record_dict(r) -> dict:
    d = {f: getattr(r, f) for f in _jsonl().Record.__struct_fields__}
    if d["zeek_orig"] is None:
        del d["zeek_orig"]
    if d["readings_differ"] is None:
        del d["readings_differ"]
    if d["zeek_differences"] is None:
        del d["zeek_differences"]
    return d


def _us(ns: cython.longlong) -> cython.double:
    """ns as seconds, rounded to the microsecond."""
    return ((ns + 500) // 1000) / 1e6


@cython.no_gc  # (no reference cycles)
@cython.cclass
class Attempt(Machine):
    """One TCP connection attempt as the grouper found it, with both readings of its packets.

    Identity: `id` (in order of first packet), `family`, the client `orig_h`/`orig_p` and the server
    `resp_h`/`resp_p` (text; `c_addr`/`s_addr` packed), `iface` (its primary interface), `partial`
    (no SYN from the client was captured first), `attempt_no` (0 for the first attempt on this
    4-tuple). Verdict: `outcome` and `detail` from the attempt machine (`machine`), `reset_by`;
    Zeek's `conn_state` and `history`. Evidence: `syn_count`, `syn_times_s`, `rtt_s`, `icmp`,
    `npackets`, `copies` (on other interfaces), start and end times (ns since the epoch).
    """

    def __init__(self) -> None:
        self._reset()
        self.id = 0
        self.family = 0
        self.c_low = False  # the client is the lower endpoint of `key`
        self.c_port = 0
        self.s_port = 0
        self.iface = 0
        self.iface_name = None
        self.partial = False
        self.attempt_no = 0
        self.key = b""
        self.start_ns = 0
        self.last_ns = 0
        self.end_ns = 0
        self.npackets = 0
        self.copies = 0
        self.syn0 = -1  # the first SYN's time (ns)
        self.more_syns = None  # the later SYNs' times, a list once there is one
        self.nsyn = 0
        self.last_syn = -1
        self.rtt_ns = -1
        self.isn0 = -1  # the ISN of the SYN that started the attempt (-1: partial)
        self.closed = False
        self.fins = 0
        self.icmp_count = 0
        self.icmp_family = 0
        self.icmp_type = 0
        self.icmp_code = 0
        self.icmp_from = None
        self.zeek = None
        self.lost = 0
        self.evicted = False
        self.pkts = None
        self.evs = None

    # ---- identity

    @property
    def number(self) -> int:
        return self.id

    @property
    def c_ep(self) -> bytes:
        """The client: packed address + 2-byte port (one half of `key`)."""
        half = len(self.key) // 2
        return self.key[:half] if self.c_low else self.key[half:]

    @property
    def s_ep(self) -> bytes:
        half = len(self.key) // 2
        return self.key[half:] if self.c_low else self.key[:half]

    @property
    def c_addr(self) -> bytes:
        return _addr(self.key, self.c_low)

    @property
    def s_addr(self) -> bytes:
        return _addr(self.key, not self.c_low)

    @property
    def orig_h(self) -> str:
        return address_text(_addr(self.key, self.c_low))

    @property
    def orig_p(self) -> int:
        return self.c_port

    @property
    def resp_h(self) -> str:
        return address_text(_addr(self.key, not self.c_low))

    @property
    def resp_p(self) -> int:
        return self.s_port

    @property
    def client(self) -> tuple:
        return (address_text(_addr(self.key, self.c_low)), self.c_port)

    @property
    def server(self) -> tuple:
        return (address_text(_addr(self.key, not self.c_low)), self.s_port)

    @property
    def machine(self) -> Machine:
        """The attempt machine of this attempt (the attempt is one: `Attempt` extends `Machine`)."""
        return self

    @property
    def isn(self):
        """The client's ISN (None if no SYN of the client was seen)."""
        return self.c_isn if self.c_isn >= 0 else None

    # ---- the attempt machine's verdict

    @property
    def state(self) -> str:
        return STATES[self.cur]

    def verdict(self) -> tuple:
        """(outcome, detail) from the attempt machine's final state."""
        m: Machine = self
        age: cython.longlong = self.end_ns - self.last_syn if self.nsyn else -1
        return judge(m.cur, m.visited, self.nsyn, age, self.lost, self.iface_name)

    @property
    def outcome(self) -> str:
        return self.verdict()[0]

    @property
    def detail(self) -> str:
        outcome, detail = self.verdict()
        if outcome == "unreachable" and self.icmp_count:
            return (f"{icmp_label(self.icmp_family, self.icmp_type, self.icmp_code)} from "
                    f"{address_text(self.icmp_from)} quoting the SYN; no answer from the server")
        return detail

    @property
    def reset_by(self):
        s: cython.int = self.cur
        return "client" if s == 10 else "server" if s == 11 else None

    @property
    def syn_count(self) -> int:
        return self.nsyn

    @property
    def syn_times_s(self) -> list:
        """Seconds after the first SYN of each SYN (first + retransmissions, the first MAX_SYN_TIMES),
        to the microsecond."""
        if self.syn0 < 0:
            return []
        return [0.0] + [_us(t - self.syn0) for t in self.more_syns or ()]

    @property
    def syn_times(self) -> list:
        """The SYNs' times, ns since the epoch (the first MAX_SYN_TIMES of them)."""
        return [] if self.syn0 < 0 else [self.syn0] + list(self.more_syns or ())

    @property
    def rtt_s(self):
        """SYN (the last one before the answer) to SYN-ACK, in seconds."""
        return None if self.rtt_ns < 0 else self.rtt_ns / 1e9

    @property
    def duration_s(self) -> float:
        return (self.last_ns - self.start_ns) / 1e9

    @property
    def icmp(self):
        """The first ICMP error quoting the attempt: {"family", "type", "code", "from", "count"}."""
        if not self.icmp_count:
            return None
        return {"family": self.icmp_family, "type": self.icmp_type, "code": self.icmp_code,
                "from": address_text(self.icmp_from), "count": self.icmp_count}

    @property
    def unexpected(self):
        """The first (state, event, frame index) the attempt table had no transition for, or None."""
        return self.miss

    # ---- Zeek's reading

    @property
    def conn_state(self) -> str:
        return self.zeek.conn_state() if self.zeek is not None else "OTH"

    @property
    def history(self) -> str:
        return self.zeek.history if self.zeek is not None else ""

    @property
    def zeek_orig(self):
        """Zeek's originator as (addr, port), when it is not our client."""
        z = self.zeek
        if z is None or z.orig_low == self.c_low:
            return None
        return _ep_pair(z.orig_key)

    @property
    def zeek_orig_h(self):
        zo = self.zeek_orig
        return None if zo is None else zo[0]

    def readings_differ(self, outcome=None):
        """Why Zeek's conn_state says something else than our outcome, or None when they agree."""
        if outcome is None:
            outcome = self.outcome
        cs = self.conn_state
        m: Machine = self
        if cs == "REJ" and outcome != "refused":
            if m.ignored_rsts:
                return (f"Zeek's REJ counts a RST the {'client' if self.state != 'REFUSED' else 'server'}'s stack "
                        f"ignores (RFC 9293: no ACK, or a wrong one); for TCP the attempt is {outcome}")
            return f"Zeek reads a rejection where the attempt machine reads {outcome}"
        if outcome == "refused" and cs != "REJ":
            return f"Zeek's conn_state {cs} for an attempt refused with RST/ACK"
        if outcome in ("reset", "closed", "established") and cs in ("S0", "REJ"):
            return f"Zeek's conn_state {cs} for an attempt the machine reads as {outcome}"
        return None

    # ---- output

    def record(self):
        """The attempt as one JSON record (`verifier.analysis.jsonl.Record`): its JSON line, read back."""
        return _jsonl().DECODER.decode(self.json_bytes())

    def json_bytes(self) -> bytes:
        """The attempt's line of `verifier replay --json`, without the newline."""
        out: _JsonText = _JsonText()
        self._json(out)
        return out.value()

    def _json(self, out: _JsonText) -> None:
        """Write the attempt's JSON object (the fields of `verifier.analysis.jsonl.Record`, in order)."""
        m: Machine = self
        age: cython.longlong = self.end_ns - self.last_syn if self.nsyn else -1
        v: tuple = judge(m.cur, m.visited, self.nsyn, age, self.lost, self.iface_name)
        outcome: str = v[0]
        detail: str = self.detail if self.icmp_count and outcome == "unreachable" else v[1]
        s: cython.int = m.cur
        out.raw(b'{"id":')
        out.sint(self.id)
        out.raw(b',"family":')
        out.sint(self.family)
        out.raw(b',"orig_h":')
        out.address(self.key, self.c_low)
        out.raw(b',"orig_p":')
        out.sint(self.c_port)
        out.raw(b',"resp_h":')
        out.address(self.key, not self.c_low)
        out.raw(b',"resp_p":')
        out.sint(self.s_port)
        out.raw(b',"outcome":')
        out.string(outcome)
        out.raw(b',"detail":')
        out.string(detail)
        out.raw(b',"reset_by":')
        out.raw(b'"client"' if s == 10 else b'"server"' if s == 11 else b"null")
        out.raw(b',"syn_count":')
        out.sint(self.nsyn)
        out.raw(b',"syn_times_s":[')
        if self.syn0 >= 0:
            out.raw(b"0.0")
            if self.more_syns is not None:
                t0: cython.longlong = self.syn0
                t: cython.longlong
                us: cython.longlong
                for x in self.more_syns:
                    t = x
                    us = (t - t0 + 500) // 1000  # _us(t - t0), as a fixed-point value
                    out.byte(44)
                    out.fixed(us, 6, us / 1e6)
        out.raw(b'],"start_ns":')
        out.sint(self.start_ns)
        out.raw(b',"end_ns":')
        out.sint(self.last_ns)
        out.raw(b',"duration_s":')
        dur: cython.longlong = self.last_ns - self.start_ns
        out.fixed(dur, 9, dur / 1e9)
        out.raw(b',"packets":')
        out.sint(self.npackets)
        z: ZeekConn = self.zeek
        conn_state: str = "OTH"
        out.raw(b',"conn_state":')
        if z is not None:
            conn_state = z.conn_state()
            out.string(conn_state)
            out.raw(b',"history":')
            out.ascii(z.hist)
        else:
            out.raw(b'"OTH","history":""')
        out.raw(b',"icmp":')
        if self.icmp_count:
            out.raw(b'{"family":')
            out.sint(self.icmp_family)
            out.raw(b',"type":')
            out.sint(self.icmp_type)
            out.raw(b',"code":')
            out.sint(self.icmp_code)
            out.raw(b',"from":')
            out.plain(address_text(self.icmp_from))
            out.raw(b',"count":')
            out.sint(self.icmp_count)
            out.byte(125)
        else:
            out.raw(b"null")
        out.raw(b',"iface":')
        out.string(self.iface_name)
        out.raw(b',"partial":')
        out.raw(b"true" if self.partial else b"false")
        out.raw(b',"rtt_s":')
        if self.rtt_ns < 0:
            out.raw(b"null")
        else:
            out.fixed(self.rtt_ns, 9, self.rtt_ns / 1e9)
        out.raw(b',"state":')
        out.string(STATES[s])
        out.raw(b',"lost":')
        out.uint(self.lost)
        out.raw(b',"evicted":')
        out.raw(b"true" if self.evicted else b"false")
        out.raw(b',"ignored_rsts":')
        out.sint(m.ignored_rsts)
        out.raw(b',"challenged_rsts":')
        out.sint(m.challenged_rsts)
        out.raw(b',"unexpected":')
        out.sint(m.misses)
        if z is not None and z.orig_low != self.c_low:
            zo = _ep_pair(z.orig_key)
            out.raw(b',"zeek_orig":')
            out.plain(f"{zo[0]}:{zo[1]}")
        if (conn_state == "REJ") != (outcome == "refused") or (conn_state == "S0" and (
                outcome == "reset" or outcome == "closed" or outcome == "established")):
            differ = self.readings_differ(outcome)
            if differ is not None:
                out.raw(b',"readings_differ":')
                out.string(differ)
        if z is not None:
            lim = z.limits()
            if lim is not None:
                out.raw(b',"zeek_differences":')
                out.raw(_jsonl().ENCODER.encode(lim))
        out.byte(125)

    def as_json(self) -> dict:
        """The attempt as one JSON object (what `verifier replay --json` prints on its line)."""
        return _record_dict(self.record())

    def json_line(self) -> str:
        """The attempt's line of `verifier replay --json` (`as_json()`, encoded)."""
        return self.json_bytes().decode()

    def row(self, t0_ns: cython.longlong) -> tuple:
        """The attempt's cells in `verifier replay`'s table (id, client, server, outcome, SYNs, start,
        duration, Zeek's reading, detail); start is seconds after `t0_ns`."""
        v: tuple = self.verdict()
        outcome: str = v[0]
        s: cython.int = self.cur
        if s == 10:
            outcome += " by client"
        elif s == 11:
            outcome += " by server"
        detail = v[1]
        if self.icmp_count and v[0] == "unreachable":
            outcome += f" ({self.icmp_type}/{self.icmp_code})"
            detail = self.detail
        z: ZeekConn = self.zeek
        zeek = f"{z.conn_state()} {z.history or '-'}" if z is not None else "OTH -"
        return (str(self.id), _endpoint_text(self.key, self.c_low), _endpoint_text(self.key, not self.c_low), outcome,
                str(self.nsyn), f"{(self.start_ns - t0_ns) / 1e9:.6f}", f"{(self.last_ns - self.start_ns) / 1e9:.6f}",
                zeek, detail)

    def __repr__(self) -> str:
        return (f"<Attempt #{self.id} {self.orig_h}:{self.c_port} > {self.resp_h}:{self.s_port} "
                f"{self.outcome} {self.conn_state} {self.history or '-'}>")


class Grouper:
    """The table of live attempts. Feed it decoded packets (`feed`) or run it over a file (`run`);
    finished attempts collect in `done` (take them with `take()`); `finish()` ends the capture.

    grouping "attempt" (one attempt per 4-tuple + client ISN, judged on its primary interface) or
    "zeek" (one per Zeek conn.log row). `keep`: attempts keep their packets (`pkts`, and the event
    of each in `evs`) and unmatched ICMP errors are kept in `unmatched`, for `Trace`. `factory`: the
    class of the attempts (a subclass of Attempt). `likely_server_ports`: Zeek's orientation rule.
    """

    def __init__(self, *, grouping: str = "attempt", reorder_s: float = DEFAULT_REORDER_S,
                 linger_s: float = DEFAULT_LINGER_S, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 likely_server_ports=DEFAULT_LIKELY_SERVER_PORTS, keep: bool = False, factory=Attempt,
                 max_packets: int = 0, keep_ids=None) -> None:
        if grouping not in ("attempt", "zeek"):
            raise ValueError(f"grouping must be 'attempt' or 'zeek', not {grouping!r}")
        if not linger_s > 0:
            raise ValueError(f"linger_s must be positive, not {linger_s!r}")
        if not reorder_s >= 0:
            raise ValueError(f"reorder_s must be 0 or more, not {reorder_s!r}")
        if max_connections < 2:
            raise ValueError(f"max_connections must be at least 2, not {max_connections!r}")
        self.zeek_mode = grouping == "zeek"
        self.window = 0 if self.zeek_mode else int(reorder_s * S_NS)
        self.linger = int(linger_s * S_NS)
        self.sweep_every = _ZEEK_SWEEP_NS if self.zeek_mode else max(self.linger // 10, S_NS)
        self.max_live = max_connections
        self.likely = frozenset(likely_server_ports)
        self.keep = keep
        self.max_packets = max_packets
        self.keep_ids = None if keep_ids is None else frozenset(keep_ids)
        self.options = dict(grouping=grouping, reorder_s=reorder_s, linger_s=linger_s,
                            max_connections=max_connections, likely_server_ports=self.likely)
        self.first_ns = -1
        self.factory = factory
        self.current = {}
        self.last_key = None  # the key of the latest lookup in `current` by _tcp, and what it found
        self.last_att = None
        self.shadowed = {}  # id -> a live attempt no longer the newest on its 4-tuple
        self.by_isn = {}  # (key, client is low, ISN) -> a shadowed attempt, for its late SYNs and ICMP errors
        self.queue = []
        self.head = 0
        self.newest = 0
        self.done = []
        self.unmatched = []
        self.next_id = 0
        self.next_sweep = -1
        self.ordered = True  # every packet so far was handled in time order (see _sweep)
        self.now = 0
        self.end_ns = 0
        self.stats = ScanStats()
        self.started = False
        self.ahead = {}  # interface -> lost, from the statistics at the end of the file
        self.names = {}  # file-wide interface id -> name
        self.lost = {}  # file-wide interface id -> packets lost (pcapng statistics)

    # ---- input

    def take(self) -> list:
        """The attempts finished so far (in the order they finished), forgetting them."""
        out = self.done
        self.done = []
        return out

    def feed(self, pk: Packet) -> None:
        """One decoded packet with its capture context (see `Packet`), in file order."""
        st: ScanStats = self.stats
        k: cython.int = pk.kind
        t: cython.longlong = pk.ts_ns
        if t > self.end_ns:
            self.end_ns = t
        if (k == TCP or k == ICMP) and (self.first_ns < 0 or t < self.first_ns):
            self.first_ns = t
        if k == TCP:
            st.tcp += 1
        elif k == ICMP:
            st.icmp += 1
        else:
            if k == MALFORMED:
                st.malformed += 1
                if st.first_malformed is None:
                    st.first_malformed = (pk.index, pk.error)
            elif k == FRAGMENT:
                st.fragments += 1
            elif k == BADSUM:
                st.bad_checksum += 1
            elif k == UNSUPPORTED:
                st.unsupported[pk.linktype] = st.unsupported.get(pk.linktype, 0) + 1
            else:
                st.other += 1
            return
        if pk.checksum < 0:
            st.bad_checksum += 1
        if self.window == 0:
            self._dispatch(pk)
        else:
            # The queue is a list with a moving head (cheaper than a deque from compiled code).
            q: list = self.queue
            if t >= self.newest:
                q.append(pk)
                self.newest = t
            else:  # out of order: insert after every queued packet that is not later
                j: cython.Py_ssize_t = len(q) - 1
                while j >= self.head and _ts(q[j]) > t:
                    j -= 1
                q.insert(j + 1, pk)
            limit: cython.longlong = self.newest - self.window
            n: cython.Py_ssize_t = len(q)
            while self.head < n and _ts(q[self.head]) < limit:
                nxt: Packet = q[self.head]
                q[self.head] = None
                self.head += 1
                self._dispatch(nxt)
            if self.head > 4096 and self.head * 2 > n:
                del q[:self.head]
                self.head = 0
        if self.next_sweep < 0:
            self.next_sweep = t + self.sweep_every
        elif t >= self.next_sweep:
            self._sweep(t - self.window)
            self.next_sweep = t + self.sweep_every

    def run(self, reader: Reader, decoder: Decoder, limit: cython.longlong = 0) -> cython.bint:
        """Frames of `reader` (a `verifier.pcap.Reader`), decoded by `decoder`: all of them, or at
        most `limit` (then True while frames remain, so that a caller can take() the attempts
        finished so far and come back). At the end of the file the file's notes are read."""
        if not self.started:
            self.started = True
            self.ahead = reader.trailing_lost()
            for iface, n in self.ahead.items():
                self.lost[iface] = n
        # The loop makes millions of short-lived objects and no reference cycles: the cyclic
        # collector would spend a third of the time walking the live attempts for nothing.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            more: cython.bint = self._run(reader, decoder, limit)
        finally:
            if gc_was:
                gc.enable()
        if not more:
            self._end_of_file(reader)
        return more

    def _run(self, reader: Reader, decoder: Decoder, limit: cython.longlong) -> cython.bint:
        st: ScanStats = self.stats
        buf: bytearray
        i: cython.Py_ssize_t
        n_items: cython.int
        pk: Packet
        names = self.names
        last_iface: cython.int = -1
        iface_name = None
        done: cython.longlong = 0
        while reader.next():
            if self.ahead and reader.sections > 1:
                # the statistics read ahead are the last section's, numbered in that section: only
                # a one-section file can use them before its end
                for ahead_iface in self.ahead:  # (a name of its own: `iface` below is a C int)
                    if self.lost.get(ahead_iface) == self.ahead[ahead_iface]:
                        del self.lost[ahead_iface]
                self.ahead = {}
            st.packets += 1
            buf = reader.buf
            n_items = decoder.frame(buf, reader.rec_off, reader.rec_caplen, reader.rec_orig_len, reader.rec_linktype)
            iface: cython.int = reader.rec_iface
            rdir: cython.int = reader.rec_dir
            if iface != last_iface:
                last_iface = iface
                if iface not in names:
                    names[iface] = reader.iface_name(iface)
                iface_name = names[iface]
            for i in range(n_items):
                pk = decoder.out[i]
                pk.index = reader.rec_index
                pk.ts_ns = reader.rec_ts
                pk.iface = iface
                pk.iface_name = iface_name
                pk.linktype = reader.rec_linktype
                if rdir:
                    pk.direction = _DIRS[rdir - 1]
                self.feed(pk)
            done += 1
            if limit and (done >= limit or len(self.done) >= DONE_BATCH):
                return True
        return False

    def _end_of_file(self, reader: Reader) -> None:
        st: ScanStats = self.stats
        lost = self.lost
        for ifc in reader.all_ifaces:
            if ifc.lost > lost.get(ifc.id, 0):
                lost[ifc.id] = ifc.lost
            if ifc.id not in self.names:
                self.names[ifc.id] = ifc.name
        st.format = reader.format
        st.truncated = reader.truncated
        st.damage = reader.damage
        st.damage_count = reader.damage_count
        st.interfaces = []
        for ifc in reader.all_ifaces:
            st.interfaces.append(ifc.name if ifc.name is not None else str(ifc.id))
        for stat in reader.stats:  # the end of the capture may be later than its last packet
            if stat.ts_ns > self.end_ns:
                self.end_ns = stat.ts_ns

    # ---- the table

    def _dispatch(self, pk: Packet) -> None:
        if pk.ts_ns < self.now:  # a packet later than the reordering window (or zeek grouping)
            self.ordered = False
        self.now = pk.ts_ns
        if pk.kind == TCP:
            if self.zeek_mode:
                self._tcp_zeek(pk)
            else:
                self._tcp(pk)
        else:
            self._icmp(pk)

    def _tcp(self, pk: Packet) -> None:
        key: bytes = pk.key
        low: cython.bint = pk.src_low
        if key is self.last_key:  # the previous packet's flow (the decoder hands over its key object)
            att = self.last_att
        else:
            att = self.current.get(key)
            self.last_key = key
            self.last_att = att
        flags: cython.int = pk.flags
        a: Attempt
        if flags & (SYN | ACK) == SYN:
            found = None
            if att is not None:
                a = att
                if not a.partial and a.c_low == low and a.isn0 == pk.seq:
                    found = att  # a retransmission, or the same SYN on another interface
            if found is None and self.by_isn:
                found = self.by_isn.get((key, low, pk.seq))  # a late SYN of an older attempt
            if found is not None:
                att = found
            elif att is not None and self._simultaneous(att, low):
                pass
            else:
                att = self._new(key, pk, low, False, att)
        elif att is None:
            if flags & (SYN | ACK) == SYN | ACK:
                att = self._new(key, pk, not low, True, None)
            else:
                att = self._new(key, pk, low, True, None)
        a = att
        if a.iface != pk.iface:
            self.stats.other_interface += 1
            a.copies += 1
            if self.keep:
                self._keep(a, pk, -1)
            return
        self._segment(a, pk)

    def _simultaneous(self, att: Attempt, src_low: cython.bint) -> cython.bint:
        """A SYN from the server side of a still-open attempt that has no server ISN yet."""
        return not att.closed and not att.partial and src_low != att.c_low and att.s_isn < 0

    def _tcp_zeek(self, pk: Packet) -> None:
        key: bytes = pk.key
        att = self.current.get(key)
        t: cython.longlong = pk.ts_ns
        flags: cython.int = pk.flags
        a: Attempt
        if att is not None:
            a = att
            if a.zeek.expired_by(t) or a.zeek.is_reuse(flags, pk.seq):
                self._finish(a)
                att = None
        if att is None:
            z: ZeekConn = zeek_connection(key, pk.src_low, flags, t, self.likely)
            att = self._new(key, pk, z.orig_low, not (flags & SYN and not flags & ACK), None)
            a = att
            a.zeek = z
        self._segment(att, pk)

    def _new(self, key: bytes, pk: Packet, c_low: cython.bint, partial: cython.bint, prev) -> Attempt:
        """A new attempt on `key` whose client is its lower endpoint when `c_low`; `prev` is the
        attempt it replaces as the newest on the 4-tuple (it stays live, shadowed)."""
        if len(self.current) + len(self.shadowed) >= self.max_live:
            self._make_room()
            prev = self.current.get(key)
        a: Attempt
        if cython.compiled and self.factory is Attempt:
            a = Attempt.__new__(Attempt)
            a.syn0 = -1
        else:
            a = self.factory()
        a.id = self.next_id
        self.next_id += 1
        a.family = pk.family
        a.c_low = c_low
        a.c_port = _key_port(key, c_low)
        a.s_port = _key_port(key, not c_low)
        a.iface = pk.iface
        a.iface_name = self.names.get(pk.iface)
        a.partial = partial
        a.key = key
        a.start_ns = pk.ts_ns
        a.last_ns = pk.ts_ns
        a.last_syn = -1
        a.rtt_ns = -1
        a.isn0 = -1 if partial else pk.seq
        a._reset()
        if prev is not None:
            p: Attempt = prev
            a.attempt_no = p.attempt_no + 1
            self.shadowed[p.id] = p
            if p.isn0 >= 0:
                self.by_isn[(key, p.c_low, p.isn0)] = p
        if self.keep and (self.keep_ids is None or a.id in self.keep_ids):
            a.pkts = []
            a.evs = []
        if prev is not None:
            del self.current[key]  # re-inserted at the end: `current` stays in the order attempts started
        self.current[key] = a
        self.last_key = None
        return a

    def _segment(self, a: Attempt, pk: Packet) -> None:
        t: cython.longlong = pk.ts_ns
        from_client: cython.bint = pk.src_low == a.c_low
        flags: cython.int = pk.flags
        a.npackets += 1
        a.last_ns = t
        ev: cython.int = -2  # a segment with a bad checksum is not fed to the attempt machine
        csum_ok: cython.bint = pk.checksum >= 0
        if csum_ok:
            m: Machine = a
            ev = m.segment(from_client, flags, pk.seq, pk.ack, pk.window, pk.payload_len, pk.wscale, pk.index)
            masked: cython.int = flags & (SYN | ACK | RST)
            if from_client and masked == SYN:
                if a.syn0 < 0:
                    a.syn0 = t
                elif a.more_syns is None:
                    a.more_syns = [t]
                elif len(a.more_syns) < MAX_SYN_TIMES - 1:
                    a.more_syns.append(t)
                a.nsyn += 1
                a.last_syn = t
            elif not from_client and masked == SYN | ACK and a.rtt_ns < 0 and a.last_syn >= 0:
                a.rtt_ns = t - a.last_syn
            if flags & RST:
                a.closed = True
            if flags & FIN:
                a.fins |= 1 if from_client else 2
                if a.fins == 3:
                    a.closed = True
        z = a.zeek
        if z is None:
            z = zeek_connection(a.key, pk.src_low, flags, t, self.likely, False)
            a.zeek = z
        zc: ZeekConn = z
        is_orig: cython.bint = pk.src_low == zc.orig_low
        zc.process(is_orig, t, flags, pk.seq, pk.ack, pk.payload_len, pk.window, pk.captured >= pk.payload_len,
                   csum_ok)
        if csum_ok:
            zc.count(pk.src_low == zc.orig_low, pk.ip_len)
        if self.keep:
            self._keep(a, pk, ev)

    def _keep(self, a: Attempt, pk: Packet, ev: cython.int) -> None:
        if a.pkts is None or (self.max_packets and len(a.pkts) >= self.max_packets):
            return
        a.pkts.append(pk)
        a.evs.append(ev)

    def _icmp(self, pk: Packet) -> None:
        q = pk.quoted
        if q.ip_proto != 6 or q.sport is None:
            self.stats.icmp_other += 1
            if self.keep:
                self.unmatched.append(pk)
            return
        src = q.src_raw + q.sport.to_bytes(2, "big")
        dst = q.dst_raw + q.dport.to_bytes(2, "big")
        low: cython.bint = src <= dst
        key = src + dst if low else dst + src
        att = self.current.get(key)
        if q.seq is not None and self.by_isn and not self.zeek_mode:
            if att is None or _isn0(att) != q.seq:
                found = self.by_isn.get((key, low, q.seq))  # a quoted SYN names its attempt exactly
                if found is not None:
                    att = found
        if att is None:
            self.stats.icmp_unmatched += 1
            if self.keep:
                self.unmatched.append(pk)
            return
        a: Attempt = att
        if not self.zeek_mode and a.iface != pk.iface:
            self.stats.other_interface += 1
            a.copies += 1
            if self.keep:
                self._keep(a, pk, -1)
            return
        quotes_client: cython.bint = low == a.c_low
        ev: cython.int = a.icmp_error(quotes_client, q.seq, pk.index)
        a.npackets += 1
        a.last_ns = pk.ts_ns
        if not a.icmp_count:
            a.icmp_family = pk.family
            a.icmp_type = pk.icmp_type
            a.icmp_code = pk.icmp_code
            a.icmp_from = pk.src_raw
        a.icmp_count += 1
        if self.keep:
            self._keep(a, pk, ev)

    # ---- finishing

    def _finish(self, a: Attempt) -> None:
        if self.current.get(a.key) is a:
            del self.current[a.key]
            self.last_key = None
        else:
            del self.shadowed[a.id]
            if a.isn0 >= 0:
                isn_key = (a.key, a.c_low, a.isn0)
                if self.by_isn.get(isn_key) is a:
                    del self.by_isn[isn_key]
        a.end_ns = self.now if self.now > a.last_ns else a.last_ns
        a.lost = self.lost.get(a.iface, 0) if self.lost else 0
        if a.iface_name is None:
            a.iface_name = self.names.get(a.iface)
        st: ScanStats = self.stats
        st.connections += 1
        st.unexpected += a.misses
        self.done.append(a)

    def _sweep(self, now: cython.longlong) -> None:
        """Finish the attempts idle for the linger time (Zeek: removed by Zeek's timers)."""
        idle = []
        a: Attempt
        linger: cython.longlong = self.linger
        for table in (self.current, self.shadowed):
            for att in table.values():
                a = att
                if self.zeek_mode:
                    if a.zeek is not None and a.zeek.expired_by(now):
                        idle.append(a)
                elif a.last_ns + linger <= now:
                    idle.append(a)
                elif a.start_ns + linger > now and self.ordered and table is self.current:
                    # `current` is in the order attempts started; while every packet came in time
                    # order, no later attempt can have been idle that long (they stay untouched,
                    # out of the cache: a sweep visits about the attempts it finishes)
                    break
        idle.sort(key=_attempt_id)
        saved: cython.longlong = self.now
        if now > self.now:
            self.now = now
        for att in idle:
            self._finish(att)
        self.now = saved

    def _live(self) -> list:
        """Every live attempt, in the order they started (`current` is kept in that order; the
        shadowed ones are merged in)."""
        out = list(self.current.values())
        if self.shadowed:
            out.extend(self.shadowed.values())
            out.sort(key=_attempt_id)
        return out

    def _make_room(self) -> None:
        """The table is full: finish idle attempts, then evict the oldest half-open ones (never
        established), then the oldest of any kind, down to half the cap."""
        self._sweep(self.now - self.window)
        target: cython.Py_ssize_t = self.max_live // 2
        if len(self.current) + len(self.shadowed) < self.max_live:
            return
        a: Attempt
        for pass_ in range(2):
            victims = []
            excess: cython.Py_ssize_t = len(self.current) + len(self.shadowed) - target
            for att in self._live():
                a = att
                if pass_ == 1 or not a.visited & _ANSWERED_STATES:
                    victims.append(a)
            del victims[excess:]  # the oldest (`_live` is in the order they started)
            for att in victims:
                a = att
                a.evicted = True
                self.stats.evicted += 1
                self._finish(a)
            if len(self.current) + len(self.shadowed) <= target:
                return

    def finish(self) -> None:
        """The end of the capture: every queued packet is handled and every live attempt finished,
        in the order they started."""
        gc_was = gc.isenabled()
        gc.disable()
        try:
            self._finish_all()
        finally:
            if gc_was:
                gc.enable()

    def _finish_all(self) -> None:
        q: list = self.queue
        while self.head < len(q):
            nxt: Packet = q[self.head]
            self.head += 1
            self._dispatch(nxt)
        del q[:]
        self.head = 0
        if self.end_ns > self.now:
            self.now = self.end_ns
        self.stats.end_ns = self.end_ns
        for att in self._live():
            self._finish(att)
        self.stats.lost = {(self.names.get(i) if self.names.get(i) is not None else str(i)): n
                           for i, n in self.lost.items() if n}
