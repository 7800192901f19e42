"""A bounded SYN flood from spoofed documentation addresses, sent from inside one testbed host.

    report = syn_flood(bed.client, bed.server.addr(4), 5000, count=300, rate_pps=2000)
    report.sent, report.duration_s, report.stopped_by        # 300, ~0.15, "count"

    with background_syn_flood(bed.client, dst, 5000, count=300, rate_pps=1000) as flood:
        ...                                                  # runs in a thread meanwhile
    flood.report

Every flood is bounded three ways: a packet count (at most `MAX_COUNT`), a rate (at most
`MAX_RATE_PPS`) and a hard wall-clock limit (at most `MAX_SECONDS`); whichever comes first ends it.
Sources and destination must be documentation addresses, and the sender must be a host of a live
testbed, so a flood can only ever hit testbed namespaces.

How the SYNs are sent: a raw IP socket with the header included (IPv4 `IP_HDRINCL`, IPv6
`IPPROTO_RAW`, which implies `IPV6_HDRINCL`), opened inside the host's namespace. The kernel then
routes each packet and resolves the next hop's link address itself, so the flood needs no knowledge
of MAC addresses or neighbour tables, and its packets leave through the host's ordinary output path
(and its captures) exactly like the host's own traffic. A layer-2 AF_PACKET sender would have to
duplicate ARP/NDP and routing for nothing.

Before the first SYN, one ordinary datagram from the host's own address primes the path (see
`prime_path`): the flood's clock starts with every neighbour resolved.

Where the spoofed SYN-ACKs go: the server answers every source through its default route, the
router. The router has routes only to its two links, so it has none to the spoofed range: it drops
each SYN-ACK and answers with ICMP destination-unreachable "no route" to the server (rate-limited by
the kernel; for IPv4 that error also makes the server drop the half-open request). `blackhole()`
makes the router discard them silently instead. Nothing can leave the testbed either way: the
testbed's namespaces have no link to the root namespace or anywhere else. A router with reverse-path
filtering on would drop the flood on the way in: `relax_rp_filter()` turns it off there if needed.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from netns import namespace
from verifier.faults.base import DOCUMENTATION_NETWORKS
from verifier.wire import encode

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host

MAX_COUNT = 100_000
MAX_RATE_PPS = 50_000
MAX_SECONDS = 10.0
DEFAULT_SOURCES = {4: "198.51.100.0/24", 6: "2001:db8:64::/64"}
DOCUMENTATION = DOCUMENTATION_NETWORKS

IPPROTO_TCP = encode.IPPROTO_TCP
SYN_WINDOW = 64240
TTL = 64
IPV6_HDRINCL = 36  # linux/in6.h; not in Python's socket module
# Send in small bursts: between bursts the sender sleeps until the next packet is due. A burst is
# never more than this many packets, so even at the top rate the spacing stays within ~1 ms.
MAX_BURST = 32


class FloodError(ValueError):
    """A flood was asked for something outside its bounds or outside the testbed."""


@dataclass(frozen=True)
class FloodReport:
    """What a flood did. Times are CLOCK_REALTIME ns, comparable with capture timestamps."""

    family: int
    dst: str
    dport: int
    sources: str
    requested: int
    rate_pps: float
    time_limit_s: float
    sent: int
    started_ns: int
    ended_ns: int
    first_ns: int | None  # when the first SYN was handed to the kernel
    last_ns: int | None  # when the last one was
    stopped_by: str  # "count", "time limit", "stop", or "send errors" (the kernel kept refusing)
    send_errors: int = 0  # sends the kernel refused (ENOBUFS/EAGAIN); those SYNs were not sent
    path_primed: bool = False  # the path to dst answered before the flood started (see prime_path)
    source_ports: tuple[int, ...] = field(default=(), repr=False)

    @property
    def duration_s(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9

    @property
    def send_span_s(self) -> float:
        """From the first SYN sent to the last."""
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    def describe(self) -> str:
        return (f"{self.sent}/{self.requested} SYNs from {self.sources} to {self.dst} port {self.dport} in "
                f"{self.duration_s:.3f} s (asked {self.rate_pps:g}/s, limit {self.time_limit_s:g} s), "
                f"stopped by {self.stopped_by}" + (f", {self.send_errors} send errors" if self.send_errors else ""))


# -- packets -------------------------------------------------------------------------------------
# A flood needs a new source address, port, ISN and checksums in every packet; Scapy takes tens to
# hundreds of microseconds to build one (and a second to import). So one SYN is built once with
# `verifier.wire.encode` as a template, and each packet is that template with its source address, port,
# ISN and IP id patched in and its checksums updated from precomputed sums: a few microseconds.
# tests/testbed/test_flood.py checks these bytes against Scapy's dissection, checksums included.

class SynBuilder:
    """Builds raw SYNs (IP header + 20-byte TCP header, no options) to one destination and port.

    The template's checksums are summed once without the fields that change (source address, port,
    ISN, IP id: zero in the template); each packet adds only those.
    """

    def __init__(self, family: int, dst: str, dport: int):
        self.family = family
        self.dst = ipaddress.ip_address(dst)
        if self.dst.version != family:
            raise FloodError(f"destination {dst} is not an IPv{family} address")
        self.dport = dport
        zero = bytes(4 if family == 4 else 16)
        tcp = encode.tcp(zero, self.dst.packed, 0, dport, seq=0, flags="S", window=SYN_WINDOW)
        if family == 4:
            self._template = bytearray(encode.ipv4(zero, self.dst.packed, IPPROTO_TCP, tcp, ttl=TTL))
            self._src_at, self._hl = 12, 20
            self._ip_sum = encode.word_sum(self._template[:10] + self._template[12:20])  # all but the checksum
        else:
            self._template = bytearray(encode.ipv6(zero, self.dst.packed, IPPROTO_TCP, tcp, hlim=TTL))
            self._src_at, self._hl = 8, 40
        # The TCP checksum over the pseudo-header and the template segment, its own field left out.
        seg = self._template[self._hl:]
        self._tcp_sum = encode.word_sum(encode.pseudo_header(zero, self.dst.packed, IPPROTO_TCP, len(seg))
                                        + seg[:16] + seg[18:])

    def build(self, src: bytes, sport: int, seq: int, ip_id: int = 0) -> bytes:
        """One SYN from `src` (packed address), `sport`, initial sequence number `seq`."""
        pkt = bytearray(self._template)
        hl, src_sum = self._hl, encode.word_sum(src)
        pkt[self._src_at:self._src_at + len(src)] = src
        struct.pack_into("!HHI", pkt, hl, sport, self.dport, seq)
        struct.pack_into("!H", pkt, hl + 16,
                         encode.checksum_of_sum(self._tcp_sum + src_sum + sport + (seq >> 16) + (seq & 0xFFFF)))
        if self.family == 4:
            struct.pack_into("!H", pkt, 4, ip_id)
            struct.pack_into("!H", pkt, 10, encode.checksum_of_sum(self._ip_sum + ip_id + src_sum))
        return bytes(pkt)


# -- bounds --------------------------------------------------------------------------------------
def _documentation_network(text: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise FloodError(f"{what} {text!r} is not an address or network: {exc}") from None
    if not any(net.version == doc.version and net.subnet_of(doc) for doc in DOCUMENTATION):
        raise FloodError(f"{what} {text} is outside the documentation ranges "
                         f"({', '.join(map(str, DOCUMENTATION))}); floods stay inside the testbed")
    return net


def _check_bounds(count: int, rate_pps: float, time_limit: float | None) -> float:
    """Refuse a count, rate or time limit outside the bounds; return the time limit to use."""
    if not 1 <= count <= MAX_COUNT:
        raise FloodError(f"count {count} is outside 1..{MAX_COUNT}")
    if not 0 < rate_pps <= MAX_RATE_PPS:
        raise FloodError(f"rate {rate_pps}/s is outside (0, {MAX_RATE_PPS}]")
    if time_limit is None:
        # The schedule's own length, half as much again and half a second for a slow start.
        time_limit = min(MAX_SECONDS, (count - 1) / rate_pps * 1.5 + 0.5)
    if not 0 < time_limit <= MAX_SECONDS:
        raise FloodError(f"time limit {time_limit} s is outside (0, {MAX_SECONDS}]")
    return time_limit


def _source_picker(net, rng: random.Random):
    """A function returning a random packed host address of `net` (never its network/broadcast address)."""
    first = int(net.network_address)
    size = net.num_addresses
    plen = 4 if net.version == 4 else 16
    if size <= 2:
        raise FloodError(f"source range {net} has no host addresses")
    lo, hi = 1, size - 2 if net.version == 4 else size - 1

    def pick() -> bytes:
        return (first + rng.randint(lo, hi)).to_bytes(plen, "big")

    return pick


def syn_flood(host: "Host", dst: str, dport: int, *, count: int, rate_pps: float, sources: str | None = None,
              family: int | None = None, time_limit: float | None = None, seed: int | None = None,
              stop: threading.Event | None = None, progress: dict | None = None) -> FloodReport:
    """Send `count` SYNs to `dst`:`dport` from random addresses of `sources`, at `rate_pps`, from `host`.

    Source addresses and ports (1024..65535) are random, no (address, port) twice, so every SYN is a
    connection of its own; ISNs are random 32-bit. `time_limit` (default: the schedule's
    length plus half of it and 0.5 s, never more than `MAX_SECONDS`) is a hard wall-clock bound: the
    flood stops there even if packets remain. `stop` (an Event) ends it early. Runs in the calling
    thread; the raw socket is opened inside the host's namespace and bound to it. `progress` (a dict),
    if given, holds the count sent so far under "sent" while the flood runs.
    """
    dst_ip = ipaddress.ip_address(dst)
    family = family or dst_ip.version
    if dst_ip.version != family:
        raise FloodError(f"destination {dst} is not IPv{family}")
    _documentation_network(dst, "destination")
    src_net = _documentation_network(sources or DEFAULT_SOURCES[family], "source range")
    if src_net.version != family:
        raise FloodError(f"source range {src_net} is not IPv{family}")
    if not 0 < dport < 65536:
        raise FloodError(f"destination port {dport} is out of range")
    time_limit = _check_bounds(count, rate_pps, time_limit)
    if not namespace.is_testbed_namespace(host.netns) or not namespace.exists(host.netns):
        raise FloodError(f"{host.name} is not a host of a live testbed: floods run only inside testbed namespaces")
    for itf in host.interfaces:
        for fam, addr in itf.addresses.items():
            if fam == family and ipaddress.ip_interface(f"{addr}/{itf.prefixlen[fam]}").network.overlaps(src_net):
                raise FloodError(f"source range {src_net} overlaps the link {itf.name} of {host.name}: "
                                 f"spoofed sources must be foreign to the testbed")

    primed = prime_path(host, str(dst_ip))
    rng = random.Random(seed)
    pick_src = _source_picker(src_net, rng)
    builder = SynBuilder(family, str(dst_ip), dport)
    with namespace.inside(host.netns):
        if family == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            try:  # implied by IPPROTO_RAW on Linux; set it anyway where the option exists
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
            except OSError:
                pass
    # Non-blocking, so a full device queue can never hold the sender past its time limit.
    sock.setblocking(False)
    target = (str(dst_ip), 0)
    sent = errors = 0
    ports: list[int] = []
    used: set[tuple[bytes, int]] = set()
    first_ns = last_ns = None
    stopped_by = "count"
    started_ns = time.time_ns()
    t0 = time.monotonic()
    deadline = t0 + time_limit
    try:
        while sent < count:
            now = time.monotonic()
            if now >= deadline:
                stopped_by = "time limit"
                break
            if stop is not None and stop.is_set():
                stopped_by = "stop"
                break
            # Packets due by now on the schedule t0 + i/rate, i = 0..count-1, at most one burst.
            due = min(count, int((now - t0) * rate_pps) + 1, sent + MAX_BURST)
            if due <= sent:
                wake = min(t0 + sent / rate_pps, deadline)
                time.sleep(max(0.0, wake - now))
                continue
            while sent < due:
                src, sport = pick_src(), rng.randint(1024, 65535)
                while (src, sport) in used:  # each SYN its own connection: no 4-tuple twice
                    src, sport = pick_src(), rng.randint(1024, 65535)
                used.add((src, sport))
                pkt = builder.build(src, sport, rng.getrandbits(32), rng.getrandbits(16) or 1)
                try:
                    sock.sendto(pkt, target)
                except OSError as exc:
                    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    errors += 1
                    time.sleep(0.0005)  # the device queue is full: let it drain a little
                    break
                t = time.time_ns()
                if first_ns is None:
                    first_ns = t
                last_ns = t
                ports.append(sport)
                sent += 1
            if progress is not None:
                progress["sent"] = sent
            if errors > count:  # the kernel refuses persistently: stop rather than spin
                stopped_by = "send errors"
                break
    finally:
        sock.close()
    return FloodReport(family, str(dst_ip), dport, str(src_net), count, rate_pps, time_limit, sent, started_ns,
                       time.time_ns(), first_ns, last_ns, stopped_by, errors, primed, tuple(ports))


PRIME_PORT = 9  # discard: nothing listens there in a testbed, so the destination answers port-unreachable
PRIME_TIMEOUT = 2.5  # covers one lost ARP/ND exchange (retransmitted after 1 s)


def prime_path(host: "Host", dst: str, timeout: float = PRIME_TIMEOUT) -> bool:
    """Send a datagram from the host's own address to `dst` until its ICMP port-unreachable returns.

    That answer means every hop has resolved its neighbour in both directions. Without it, the
    flood's first SYNs would wait in the host's neighbour queue while ARP/ND runs, each charged to
    the raw socket's send buffer, and a resolution that takes long (a lost reply on a busy machine)
    fills that buffer and makes the sends fail. It also lets the router learn the host's own address
    from the host's neighbour solicitation, which then carries that address and not a spoofed
    source's. Returns False (and the flood goes on regardless) if no answer comes within `timeout`.
    """
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with namespace.inside(host.netns):
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    deadline = time.monotonic() + timeout
    try:
        sock.connect((dst, PRIME_PORT))
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.send(b"")
            try:
                sock.recv(1)
            except ConnectionRefusedError:  # the port-unreachable came back: the path is resolved
                return True
            except TimeoutError:
                continue
            except OSError:  # another ICMP error (no route, prohibited): nothing to wait for
                return False
        return False
    finally:
        sock.close()


class BackgroundFlood:
    """A flood running in a thread; `report` once it has ended (see `background_syn_flood`)."""

    def __init__(self, *args, **kwargs):
        self.stop_event = threading.Event()
        kwargs["stop"] = self.stop_event
        self.report: FloodReport | None = None
        self.progress = {"sent": 0}  # updated by the flood as it sends
        kwargs["progress"] = self.progress
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, name="syn-flood", daemon=True)

    def _run(self, *args, **kwargs) -> None:
        self.started.set()
        try:
            self.report = syn_flood(*args, **kwargs)
        except BaseException as exc:  # handed to the caller in wait()
            self.error = exc

    def start(self) -> "BackgroundFlood":
        self._thread.start()
        self.started.wait()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float = MAX_SECONDS + 1) -> FloodReport:
        """Wait for the flood to end (it always does, by its own time limit) and return its report."""
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - the flood's own deadline makes this unreachable
            self.stop_event.set()
            self._thread.join(1.0)
            raise FloodError(f"the flood did not end within {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


@contextmanager
def background_syn_flood(host: "Host", dst: str, dport: int, **kwargs) -> Iterator[BackgroundFlood]:
    """Run `syn_flood` in a thread for the duration of the block; the block's end waits for it to finish."""
    flood = BackgroundFlood(host, dst, dport, **kwargs).start()
    try:
        yield flood
    except BaseException:
        flood.stop_event.set()
        raise
    finally:
        flood.wait()


# -- the router on the way back ------------------------------------------------------------------
def relax_rp_filter(router: "Host", ingress: str) -> dict[str, str]:
    """Let the router forward spoofed IPv4 sources arriving on interface `ingress` (a name or peer host).

    Reverse-path filtering drops a packet whose source the router would not route back out of the
    same interface (strict, 1) or out of any interface (loose, 2). The router has no route at all to
    the spoofed range, so either mode would drop the flood. The effective mode is the larger of
    `conf.all` and the interface's own; both are read inside the router's namespace and set to 0
    there only when not 0 already. Returns what was changed, {} when nothing had to be.
    """
    itf = router.interface(ingress).name
    changed = {}
    for key in ("net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{itf}.rp_filter"):
        if router.sysctl(key) != "0":
            changed[key] = router.sysctl(key)
            router.sysctl(key, 0)
    return changed


def blackhole(router: "Host", sources: str) -> str:
    """Make the router discard packets to the spoofed range silently, and return the route it added.

    Without it the router, having no route to the range, answers each SYN-ACK to a spoofed source with
    ICMP "no route" to the server (rate-limited); for IPv4 the server then drops that half-open
    request at once (a "net/host unreachable" for a request in SYN-RECV aborts it), which frees a
    slot in the SYN queue. A blackhole route models sources that never answer at all, so a test can
    count the SYN queue exactly. The route lives in the router's namespace and goes with it.
    """
    net = _documentation_network(sources, "blackholed range")
    res = router.run(["ip", f"-{net.version}", "route", "add", "blackhole", str(net)])
    if res.returncode != 0:
        raise FloodError(f"could not add a blackhole route for {net} on {router.name}: {res.stderr.strip()}")
    return f"blackhole {net}"
