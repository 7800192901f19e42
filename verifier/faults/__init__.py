"""Faults: disturbances applied to one testbed host, removed when they end, reporting what they did.

    with inject(bed.router, Drop(Syn(dport=5000), first=2)) as drop:
        bed.client.run([...])          # the first two SYNs to port 5000 die at the router
    drop.report                        # {"fault": "drop", "matched": 3, "dropped": 2, ...}

The kinds, one class each (`FAULT_KINDS` maps the command line's names to them):

* `Drop`: drop matching packets silently: all, the first K, only the Kth, or each with a probability.
* `Reject`: answer matching packets at once with an ICMP error from the kernel (nft `reject`).
* `IcmpUnreachable`: answer matching packets with a forged ICMP destination-unreachable, optionally
  only the Kth and after a delay (the fault agent).
* `Rst`: inject a RST into an established connection, at RCV.NXT, elsewhere in the window or outside
  it (the fault agent learns the sequence numbers from the connection's packets).
* `Segment`: send one crafted segment (e.g. an ACK for a connection that does not exist) and report
  the answer.
* `Blackhole`: make a host's address unreachable with no answer at all (no ARP / neighbour reply).
* `Delay`: delay matching packets: netem where the kernel has it, else a user-space delay line at a
  router (the fault agent).
* `SynFlood`: a bounded flood of SYNs from spoofed documentation addresses (`verifier.faults.flood`).

Each fault is a class with `apply(host)`, `remove(host)` (which fills `report`, a JSON-serialisable
dict with a `fault` key), `describe()` (one line), `from_cli(**options)` (plain str/int/float
keyword arguments, as a command line gives them, documented in each class) and `fire(timeout=)`: the
one-off action of a fault that acts once (`Rst` sends its RST, `Segment` waits for the answer to its
segment, `SynFlood` waits for the flood to end), nothing for a standing fault; a command line calls it
right after `apply`. Faults act only inside testbed namespaces:
`inject` refuses a host that is not part of a live testbed. A fault leaves nothing behind: its nft
table, qdisc and agent sockets go when it is removed.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import random
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host
    from netns.host import Interface

_ids = itertools.count()

#: How long an agent-backed fault lives if nobody removes it (the agent closes its sockets by itself).
DEFAULT_LIFETIME_S = 60.0


class FaultError(RuntimeError):
    """A fault could not be applied or removed."""


def _addresses(value: "str | tuple[str, ...] | list[str] | None") -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if part:
                try:
                    out.append(str(ipaddress.ip_address(part)))
                except ValueError:
                    raise FaultError(f"{part!r} is not an IP address") from None
    if not out:
        raise FaultError("an empty address list matches nothing")
    return tuple(out)


@dataclass(frozen=True)
class Match:
    """Which TCP packets a fault applies to. `flags`: "syn" (SYN without ACK), "syn-ack", "rst",
    "fin", "ack" (pure ACK without SYN/FIN/RST), or None for any. `src`/`dst`: an address, or several
    (a tuple, or one string separated by commas), possibly of both families: the match then holds
    for either family, with the addresses of that family. `Match.between(a, b)` builds the direction
    "from host a to host b"."""

    flags: str | None = None
    sport: int | None = None
    dport: int | None = None
    src: str | tuple[str, ...] | None = None
    dst: str | tuple[str, ...] | None = None

    _NFT_FLAGS = {
        "syn": "tcp flags & (syn | ack) == syn",
        "syn-ack": "tcp flags & (syn | ack) == syn | ack",
        "rst": "tcp flags & rst == rst",
        "fin": "tcp flags & fin == fin",
        "ack": "tcp flags & (syn | ack | fin | rst) == ack",
    }

    def __post_init__(self) -> None:
        if self.flags is not None and self.flags not in self._NFT_FLAGS:
            raise FaultError(f"unknown TCP flags match {self.flags!r}; use one of {', '.join(self._NFT_FLAGS)}")
        for name in ("sport", "dport"):
            v = getattr(self, name)
            if v is not None and not 0 < int(v) < 65536:
                raise FaultError(f"{name} {v} is not a port number")

    @classmethod
    def between(cls, a: "Host", b: "Host", family: int | None = None, **kw) -> "Match":
        """Packets from host `a` to host `b` (all their addresses, or those of one family)."""
        src = tuple(a.addresses(family))
        dst = tuple(b.addresses(family))
        if not src or not dst:
            raise FaultError(f"{a.name} or {b.name} has no IPv{family or '4/6'} address in this testbed")
        return cls(src=src, dst=dst, **kw)

    @classmethod
    def from_cli(cls, flags: str | None = None, sport: int | None = None, dport: int | None = None,
                 src: str | None = None, dst: str | None = None) -> "Match":
        return cls(flags=flags or None, sport=int(sport) if sport else None, dport=int(dport) if dport else None,
                   src=_addresses(src), dst=_addresses(dst))

    def _by_family(self, which: str) -> dict[int, list[str]] | None:
        addrs = _addresses(getattr(self, which))
        if addrs is None:
            return None
        out: dict[int, list[str]] = {4: [], 6: []}
        for a in addrs:
            out[ipaddress.ip_address(a).version].append(a)
        return out

    def families(self) -> list[int]:
        """The IP families this match can hold for (both when it names no address)."""
        fams = [4, 6]
        for which in ("src", "dst"):
            by = self._by_family(which)
            if by is not None:
                fams = [f for f in fams if by[f]]
        return fams

    def nft_variants(self) -> list[str]:
        """The match as nftables expressions (inet family), one per IP family when it names addresses."""
        return [expr for _, expr in self.nft_by_family()]

    def nft_by_family(self) -> list[tuple[int | None, str]]:
        """(family or None for both, nftables expression) pairs; see `nft_variants`."""
        tail = []
        if self.sport is not None:
            tail.append(f"tcp sport {int(self.sport)}")
        if self.dport is not None:
            tail.append(f"tcp dport {int(self.dport)}")
        if self.flags is not None:
            tail.append(self._NFT_FLAGS[self.flags])
        src, dst = self._by_family("src"), self._by_family("dst")
        if src is None and dst is None:
            return [(None, " ".join(["meta l4proto tcp", *tail]))]
        fams = self.families()
        if not fams:
            raise FaultError(f"the match {self.describe()} has no family in common between its source and "
                             f"destination addresses: it would match nothing")
        out = []
        for fam in fams:
            parts = ["meta l4proto tcp"]
            for by, field in ((src, "saddr"), (dst, "daddr")):
                if by is not None:
                    addrs = by[fam]
                    value = addrs[0] if len(addrs) == 1 else "{ " + ", ".join(addrs) + " }"
                    parts.append(f"{'ip6' if fam == 6 else 'ip'} {field} {value}")
            out.append((fam, " ".join(parts + tail)))
        return out

    def nft(self) -> str:
        """The match as one nftables expression (inet family: IPv4 and IPv6)."""
        variants = self.nft_variants()
        if len(variants) != 1:
            raise FaultError(f"the match {self.describe()} names addresses of both families: use nft_variants()")
        return variants[0]

    def agent(self) -> dict:
        """The match as the fault agent takes it (`src`/`dst` lists of addresses)."""
        src, dst = _addresses(self.src), _addresses(self.dst)
        return {"flags": self.flags, "sport": self.sport, "dport": self.dport,
                "src": list(src) if src else None, "dst": list(dst) if dst else None}

    def describe(self) -> str:
        bits = [self.flags.upper() if self.flags else "TCP"]
        for name in ("src", "sport", "dst", "dport"):
            v = getattr(self, name)
            if v is not None:
                bits.append(f"{name}={','.join(v) if isinstance(v, tuple) else v}")
        return " ".join(bits)


def Syn(**kw) -> Match:  # noqa: N802 - reads like a packet type in fault specs
    """SYNs (without ACK), e.g. `Syn(dport=5000)`."""
    return Match(flags="syn", **kw)


class Fault:
    """Base of all faults. `report` is filled in when the fault is removed."""

    kind = "fault"

    def __init__(self) -> None:
        self.report: dict = {}

    @classmethod
    def from_cli(cls, **options: Any) -> "Fault":  # pragma: no cover - every kind has its own
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def fire(self, timeout: float | None = None) -> Any:
        """The one-off action of a fault that acts once; a standing fault (the default) has none."""
        return None

    def apply(self, host: "Host") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def remove(self, host: "Host") -> dict:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# Helpers: nft, namespaces, link-layer addresses, routes
# ---------------------------------------------------------------------------------------------------

def _tag(host: "Host") -> str:
    """The testbed's tag: the part of every namespace name before the host's name."""
    return host.netns.rsplit("-", 1)[0]


def _nft(host: "Host", ruleset: str, what: str) -> None:
    # TZ=UTC: `meta time` strings are read in the local time zone; ours are written in UTC.
    res = host.run(["nft", "-f", "-"], input=ruleset, env={**os.environ, "TZ": "UTC"})
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise FaultError(f"nft refused the {what} rules on {host.name}: {first}")


def _nft_counters(host: "Host", family: str, table: str) -> dict[str, int] | None:
    """Packet counts of a table's named counters; None if the table is gone."""
    res = host.run(["nft", "-j", "list", "table", family, table])
    if res.returncode != 0:
        return None
    counts: dict[str, int] = {}
    for item in json.loads(res.stdout).get("nftables", []):
        if "counter" in item:
            counts[item["counter"]["name"]] = item["counter"]["packets"]
    return counts


def _nft_delete(host: "Host", family: str, table: str) -> None:
    res = host.run(["nft", "delete", "table", family, table])
    if res.returncode != 0 and "No such file" not in res.stderr:
        raise FaultError(f"could not delete nft table {family} {table} on {host.name}: {res.stderr.strip()}")


def _until(deadline_ns: int | None) -> str:
    """An nft condition true until `deadline_ns` (CLOCK_REALTIME, whole seconds, written in UTC)."""
    if deadline_ns is None:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(deadline_ns // 1_000_000_000))
    return f'meta time < "{stamp}" '


def _deadline(duration_s: float | None) -> int | None:
    """The CLOCK_REALTIME deadline of a fault lasting `duration_s`, rounded up to a whole second (nft's
    `meta time` resolution), so the agent and nftables end together."""
    if duration_s is None:
        return None
    if duration_s <= 0:
        raise FaultError(f"a duration must be positive, got {duration_s}")
    return math.ceil((time.time_ns() + duration_s * 1e9) / 1e9) * 1_000_000_000


def _ip_json(netns: str, *args: str) -> list:
    """`ip -j ARGS` inside a testbed namespace (ip -n enters it; nothing runs in the root namespace's
    network stack)."""
    res = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise FaultError(f"ip {' '.join(args)} in {netns} failed: {res.stderr.strip()}")
    return json.loads(res.stdout or "[]")


def _peer(host: "Host", itf: "Interface") -> dict:
    """The other end of one of the host's links, read from the peer's own namespace: its namespace,
    interface, MAC address and addresses. Every testbed link ends inside the testbed."""
    from netns import namespace

    netns = f"{_tag(host)}-{itf.peer_host}"
    if not namespace.is_testbed_namespace(netns) or not namespace.exists(netns):
        raise FaultError(f"the peer of {host.name}:{itf.name} ({netns}) is not a live testbed namespace")
    (link,) = _ip_json(netns, "addr", "show", "dev", itf.peer_name)
    addrs = [a["local"] for a in link.get("addr_info", []) if a.get("family") in ("inet", "inet6")]
    return {"host": itf.peer_host, "netns": netns, "ifname": itf.peer_name, "mac": link["address"],
            "addresses": addrs}


def _link(host: "Host", ifname: str) -> dict:
    (link,) = _ip_json(host.netns, "link", "show", "dev", ifname)
    return link


def _read_sysctl(netns: str, key: str) -> str:
    """A sysctl inside a testbed namespace (this thread enters it for the read)."""
    from netns import namespace

    with namespace.inside(netns):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()


def _interface_facing(host: "Host", addr: str, name: str | None = None) -> "Interface":
    """The host's interface named `name`, or the one on whose link `addr` lies, or its only one."""
    if name is not None:
        try:
            return host.interface(name)
        except LookupError as exc:
            raise FaultError(str(exc)) from None
    ip = ipaddress.ip_address(addr)
    for itf in host.interfaces:
        for fam, a in itf.addresses.items():
            if fam == ip.version and ip in ipaddress.ip_interface(f"{a}/{itf.prefixlen[fam]}").network:
                return itf
    if len(host.interfaces) == 1:
        return host.interfaces[0]
    raise FaultError(f"{host.name} has no link to {addr} and several interfaces: say which with interface=")


def _next_hop(host: "Host", dst: str) -> dict:
    """How `host` sends to `dst`: egress interface, its MAC and address, and the next hop's MAC (the
    peer's own interface address, read in the peer's namespace)."""
    (route,) = _ip_json(host.netns, "route", "get", dst)
    ifname = route["dev"]
    hop = route.get("gateway") or dst
    itf = next((i for i in host.interfaces if i.name == ifname), None)
    if itf is None:
        raise FaultError(f"{host.name} routes {dst} through {ifname}, which is not a testbed link")
    peer = _peer(host, itf)
    if ipaddress.ip_address(hop) not in {ipaddress.ip_address(a) for a in peer["addresses"]}:
        raise FaultError(f"next hop {hop} of {host.name} towards {dst} is not the peer {peer['host']} on {ifname}")
    return {"ifname": ifname, "src_mac": _link(host, ifname)["address"], "dst_mac": peer["mac"],
            "src": route.get("prefsrc"), "hop": hop, "peer": peer["host"]}


# ---------------------------------------------------------------------------------------------------
# nftables faults
# ---------------------------------------------------------------------------------------------------

class NftFault(Fault):
    """A fault made of one nftables table in the host's namespace, named with the testbed's prefix.

    The rules live in one regular chain, `fault`, which base chains jump to: by default prerouting
    (packets to and through the host) and output (packets it sends), so the same rule catches a
    router's forwarded packets and an end host's own, and a rule's state (a `limit`) is shared by
    both hooks. Two named counters: `matched` (every matching packet) and `acted` (those the fault
    acted on).
    """

    verdict = "drop"
    hooks: tuple[tuple[str, int], ...] = (("prerouting", -300), ("output", -300))

    def __init__(self, match: Match | None = None, *, families: list[int] | None = None,
                 duration_s: float | None = None) -> None:
        super().__init__()
        self.match = match if match is not None else Match()
        self.families = sorted(families) if families else None
        self.duration_s = duration_s
        self.deadline_ns: int | None = None
        self.table = ""

    def variants(self) -> list[str]:
        """The match's nft expressions, limited to `families` if set."""
        out = []
        for fam, expr in self.match.nft_by_family():
            if self.families and self.families != [4, 6]:
                if fam is None:
                    expr = f"meta nfproto ipv{self.families[0]} {expr}"
                elif fam not in self.families:
                    continue
            out.append(expr)
        if not out:
            raise FaultError(f"the match {self.match.describe()} holds for no family of IPv{self.families}")
        return out

    def objects(self) -> list[str]:
        """Named stateful objects of the table (besides the counters), shared by all its rules."""
        return []

    def action(self, m: str) -> list[str]:
        """The rules acting on packets that match expression `m` (they count into `acted`)."""
        return [f'{m} {_until(self.deadline_ns)}counter name "acted" {self.verdict}']

    def rules(self) -> list[str]:
        rules = []
        for m in self.variants():
            rules.append(f'{m} counter name "matched"')
            rules += self.action(m)
        return rules

    def ruleset(self) -> str:
        chains = "".join(f"  chain {hook}_hook {{ type filter hook {hook} priority {prio}; policy accept; "
                         f"jump fault; }}\n" for hook, prio in self.hooks)
        body = "".join(f"    {r}\n" for r in self.rules())
        objects = "".join(f"  {o}\n" for o in self.objects())
        return (f"table inet {self.table} {{\n  counter matched {{ }}\n  counter acted {{ }}\n{objects}"
                f"  chain fault {{\n{body}  }}\n{chains}}}\n")

    def apply(self, host: "Host") -> None:
        self.deadline_ns = _deadline(self.duration_s)
        self.table = f"{_tag(host)}_{self.kind.replace('-', '_')}{next(_ids)}"
        _nft(host, self.ruleset(), self.kind)

    def counts(self, host: "Host") -> dict[str, int]:
        """The counters so far, while the fault is applied."""
        return _nft_counters(host, "inet", self.table) or {}

    def remove(self, host: "Host") -> dict:
        counts = _nft_counters(host, "inet", self.table) or {}
        _nft_delete(host, "inet", self.table)
        self.report = {"fault": self.kind, "host": host.name, "match": self.match.describe(),
                       "matched": counts.get("matched", 0), "acted": counts.get("acted", 0), "table": self.table,
                       "until_ns": self.deadline_ns}
        return self.report


class Drop(NftFault):
    """Drop matching packets silently (no RST, no ICMP): the sender sees no answer.

        Drop(Syn(dport=5000), first=2)                          # the first two SYNs to port 5000
        Drop(Match.between(bed.server, bed.client, flags="syn-ack"))   # every SYN-ACK server -> client
        Drop(Match(dport=5000), probability=0.3)                # each packet with probability 0.3

    At most one of: `first=K` drops only the first K matches (nft `limit rate 1/day burst K packets`:
    a token bucket that starts with K tokens and refills one a day); `nth=K` drops only the Kth match
    (an accept rule with a bucket of K-1 lets the first K-1 through, a drop rule with a bucket of 1
    takes the next). The buckets are named objects of the table, shared by both families' rules and
    both hooks, so K counts every match; `probability=p` drops each match with probability p (nft `numgen random mod
    10000 < p*10000`, so p in steps of 0.0001). `duration_s`: the rules stop acting after that long
    (nft `meta time`, whole seconds), even if nobody removes them.

    Command line (`from_cli`): flags (syn, syn-ack, ack, fin, rst), sport, dport, src, dst
    (addresses, comma-separated), first, nth, probability, duration_s.
    Report: `matched` (every matching packet), `dropped`.
    """

    kind = "drop"
    verdict = "drop"
    RESOLUTION = 10000

    def __init__(self, match: Match | None = None, *, first: int | None = None, nth: int | None = None,
                 probability: float | None = None, duration_s: float | None = None) -> None:
        super().__init__(match, duration_s=duration_s)
        if sum(x is not None for x in (first, nth, probability)) > 1:
            raise FaultError("give at most one of first=, nth= and probability=")
        for name, v in (("first", first), ("nth", nth)):
            if v is not None and int(v) < 1:
                raise FaultError(f"{name} counts matches from 1, got {v}")
        if probability is not None and not 0 <= probability <= 1:
            raise FaultError(f"probability must lie in [0, 1], got {probability}")
        self.first = int(first) if first is not None else None
        self.nth = int(nth) if nth is not None else None
        self.probability = probability
        self.threshold = round(probability * self.RESOLUTION) if probability is not None else None

    @classmethod
    def from_cli(cls, flags: str | None = None, sport: int | None = None, dport: int | None = None,
                 src: str | None = None, dst: str | None = None, first: int | None = None, nth: int | None = None,
                 probability: float | None = None, duration_s: float | None = None) -> "Drop":
        return cls(Match.from_cli(flags, sport, dport, src, dst), first=first, nth=nth,
                   probability=float(probability) if probability is not None else None,
                   duration_s=float(duration_s) if duration_s is not None else None)

    def describe(self) -> str:
        which = (f"the first {self.first}" if self.first else f"only match #{self.nth}" if self.nth
                 else f"with probability {self.probability:g}" if self.probability is not None else "every one")
        until = f", for {self.duration_s:g} s" if self.duration_s else ""
        return f"drop {self.match.describe()}: {which}{until}"

    def objects(self) -> list[str]:
        if self.first is not None:
            return [f"limit take {{ rate 1/day burst {self.first} packets }}"]
        if self.nth is not None:
            # burst 0 would mean nft's default of 5, so for the first match there is no "pass" bucket.
            passing = [f"limit pass {{ rate 1/day burst {self.nth - 1} packets }}"] if self.nth > 1 else []
            return passing + ["limit take { rate 1/day burst 1 packets }"]
        return []

    def action(self, m: str) -> list[str]:
        until = _until(self.deadline_ns)
        drop = 'counter name "acted" drop'
        if self.first is not None:
            return [f'{m} {until}limit name "take" {drop}']
        if self.nth is not None:
            rules = [f'{m} limit name "pass" accept'] if self.nth > 1 else []
            return rules + [f'{m} {until}limit name "take" {drop}']
        if self.threshold is not None:
            return [f"{m} {until}numgen random mod {self.RESOLUTION} < {self.threshold} {drop}"]
        return [f"{m} {until}{drop}"]

    def remove(self, host: "Host") -> dict:
        report = super().remove(host)
        report["dropped"] = report.pop("acted")
        report.update(first=self.first, nth=self.nth, probability=self.probability)
        return report


class Reject(NftFault):
    """Answer matching packets at once from this host with an ICMP error (nftables `reject`).

    `code` is the ICMP/ICMPv6 type name as nftables spells it, for both families: "host-unreachable",
    "net-unreachable", "port-unreachable", "admin-prohibited". The kernel sends it within microseconds.
    Command line (`from_cli`): flags, sport, dport, src, dst, code, duration_s.
    Report: `matched`, `rejected`.
    """

    kind = "reject"
    hooks = (("forward", 0), ("input", 0))  # reject is only valid in input/forward/output
    _CODES = {
        "host-unreachable": ("host-unreachable", "addr-unreachable"),
        "net-unreachable": ("net-unreachable", "no-route"),
        "port-unreachable": ("port-unreachable", "port-unreachable"),
        "admin-prohibited": ("admin-prohibited", "admin-prohibited"),
    }

    def __init__(self, match: Match | None = None, code: str = "host-unreachable", *,
                 duration_s: float | None = None) -> None:
        super().__init__(match, duration_s=duration_s)
        if code not in self._CODES:
            raise FaultError(f"unknown reject code {code!r}; use one of {', '.join(self._CODES)}")
        self.code = code

    @classmethod
    def from_cli(cls, flags: str | None = None, sport: int | None = None, dport: int | None = None,
                 src: str | None = None, dst: str | None = None, code: str = "host-unreachable",
                 duration_s: float | None = None) -> "Reject":
        return cls(Match.from_cli(flags, sport, dport, src, dst), code,
                   duration_s=float(duration_s) if duration_s is not None else None)

    def describe(self) -> str:
        return f"reject {self.match.describe()} with ICMP {self.code}"

    def action(self, m: str) -> list[str]:
        v4, v6 = self._CODES[self.code]
        until = _until(self.deadline_ns)
        # One rule per family: nftables spells the ICMP and ICMPv6 codes differently.
        return [f'meta nfproto ipv4 {m} {until}counter name "acted" reject with icmp type {v4}',
                f'meta nfproto ipv6 {m} {until}counter name "acted" reject with icmpv6 type {v6}']

    def remove(self, host: "Host") -> dict:
        report = super().remove(host)
        report["rejected"] = report.pop("acted")
        report["code"] = self.code
        return report


@contextmanager
def inject(host: "Host", fault: Fault) -> Iterator[Fault]:
    """Apply `fault` to `host` for the duration of the block; always remove it; fill `fault.report`."""
    from netns import namespace

    if not namespace.is_testbed_namespace(host.netns) or not namespace.exists(host.netns):
        raise FaultError(f"{host.name} is not a host of a live testbed: faults apply only inside testbed namespaces")
    fault.apply(host)
    try:
        yield fault
    finally:
        fault.remove(host)


# ---------------------------------------------------------------------------------------------------
# ICMP errors forged by the fault agent (verifier.faults.agent)
# ---------------------------------------------------------------------------------------------------

#: Friendly name -> {family: (ICMP type, code)}. IPv4: type 3 (destination unreachable) codes of
#: RFC 792/1812; IPv6: type 1 (destination unreachable) codes of RFC 4443, and type 2 (packet too big)
#: as the IPv6 counterpart of "fragmentation needed". A name missing for a family has no equivalent there.
ICMP_UNREACH_CODES: dict[str, dict[int, tuple[int, int]]] = {
    "net": {4: (3, 0), 6: (1, 0)},          # net unreachable / no route to destination
    "host": {4: (3, 1), 6: (1, 3)},         # host unreachable / address unreachable
    "protocol": {4: (3, 2)},                # IPv6 signals this with a parameter problem, not type 1
    "port": {4: (3, 3), 6: (1, 4)},
    "frag-needed": {4: (3, 4), 6: (2, 0)},  # with an MTU: fragmentation needed / packet too big
    "admin": {4: (3, 13), 6: (1, 1)},       # communication administratively prohibited
}
_ICMP_ALIASES = {
    "net-unreachable": "net", "network": "net", "no-route": "net",
    "host-unreachable": "host", "address": "host", "addr-unreachable": "host", "address-unreachable": "host",
    "proto": "protocol", "protocol-unreachable": "protocol",
    "port-unreachable": "port",
    "frag": "frag-needed", "fragmentation-needed": "frag-needed", "too-big": "frag-needed",
    "packet-too-big": "frag-needed",
    "admin-prohibited": "admin", "prohibited": "admin",
}
DEFAULT_MTU = {4: 1200, 6: 1280}  # what a "fragmentation needed" / "packet too big" announces by default


def icmp_unreach_code(code: str | int, family: int) -> tuple[int, int] | None:
    """The (type, code) a friendly name (or a raw destination-unreachable code) means in one family,
    or None if the family has no such error."""
    if isinstance(code, int):
        return (3, code) if family == 4 else (1, code)
    name = _ICMP_ALIASES.get(code, code)
    if name not in ICMP_UNREACH_CODES:
        names = sorted(set(ICMP_UNREACH_CODES) | set(_ICMP_ALIASES))
        raise FaultError(f"unknown ICMP unreachable code {code!r}; use a number or one of {', '.join(names)}")
    return ICMP_UNREACH_CODES[name].get(family)


def _agent():
    from verifier.faults.agent import agent

    return agent()


def _agent_request(op: str, what: str, **fields) -> dict:
    from verifier.faults.agent import AgentError, agent

    try:
        return agent().request(op, **fields)
    except AgentError as exc:
        raise FaultError(f"{what}: {exc}") from None


def _poll(check, timeout: float, fail) -> Any:
    """Call `check()` until it returns something true; FaultError(fail()) after `timeout` seconds."""
    from netns.waiting import wait_until

    return wait_until(check, timeout, lambda: FaultError(fail()))


class _AgentFault(Fault):
    """A fault carried out by the fault agent under one arm id."""

    def __init__(self) -> None:
        super().__init__()
        self._id = ""

    def _arm(self, host: "Host", kind: str, what: str, **fields) -> None:
        self._id = f"{_tag(host)}-{self.kind}{next(_ids)}"
        _agent_request("arm", what, kind=kind, id=self._id, netns=host.netns, **fields)

    def status(self) -> dict:
        """While applied: the agent's report so far, without disarming."""
        if not self._id:
            raise FaultError(f"the {self.kind} fault is not applied")
        return _agent_request("status", f"status of {self.kind}", id=self._id)["report"]

    def _disarm(self) -> dict:
        report = _agent_request("disarm", f"removing {self.kind}", id=self._id)["report"]
        return report


class _FamilyDrop(Drop):
    """`Drop`, limited to some IP families (those the ICMP fault answers)."""

    def __init__(self, match: Match, families: list[int]) -> None:
        super().__init__(match)
        self.families = sorted(families)


class IcmpUnreachable(_AgentFault):
    """Answer matching packets arriving at a host (normally the router) with a forged ICMP
    destination-unreachable, sent by the long-lived fault agent (Scapy, built at layer 2):

        with inject(bed.router, IcmpUnreachable("host", Syn(dport=5000), delay_ms=50)) as fault:
            ...                                    # every SYN to port 5000 gets an ICMP 50 ms later
        fault.report   # {"matched": 1, "sent": 1, "send_times_ns": [...], "match_times_ns": [...], ...}

    `code`: a friendly name ("net", "host", "protocol", "port", "frag-needed", "admin", and aliases such
    as "no-route", "address-unreachable", "port-unreachable", "admin-prohibited", "too-big"), mapped per
    family by `ICMP_UNREACH_CODES`; or a raw code number used with type 3 (IPv4) / 1 (IPv6).
    `mtu`: what a frag-needed / packet-too-big announces (default `DEFAULT_MTU`).
    `nth`: answer only the nth match (1-based); None answers every match, up to `max_answers`.
    `delay_ms`: wait that long after the packet's arrival (kernel timestamp) before answering.
    `family`: 4 or 6 to act on one family only; by default every family the code exists in.
    `interface`: the host's interface (name or peer host) to listen and answer on; by default the one
    facing the client. The ICMP comes from that interface's address.
    `lifetime_s`: the agent closes its socket by itself after that, should nobody disarm it.

    While armed, the matched packets are also dropped at this host (an nft `Drop`), so that the
    destination never answers them; the agent still sees them, because packet taps see an incoming
    frame before netfilter's prerouting hook.

    Command line (`from_cli`): code, flags (default syn), sport, dport, src, dst, nth, delay_ms, mtu,
    family, interface, lifetime_s.
    """

    kind = "icmp-unreachable"

    def __init__(self, code: str | int = "host", match: Match | None = None, nth: int | None = None,
                 delay_ms: float = 0, *, mtu: int | None = None, family: int | None = None,
                 max_answers: int | None = None, lifetime_s: float = DEFAULT_LIFETIME_S,
                 interface: str | None = None) -> None:
        super().__init__()
        self.code = code
        self.match = match if match is not None else Syn()
        if nth is not None and int(nth) < 1:
            raise FaultError(f"nth counts matches from 1, got {nth}")
        if delay_ms < 0:
            raise FaultError(f"delay_ms must not be negative, got {delay_ms}")
        self.nth = nth
        self.delay_ms = delay_ms
        self.mtu = mtu
        self.max_answers = max_answers
        self.lifetime_s = lifetime_s
        self.interface = interface
        wanted = [family] if family is not None else [4, 6]
        self.types = {f: tc for f in wanted if (tc := icmp_unreach_code(code, f)) is not None}
        if not self.types:
            raise FaultError(f"ICMP code {code!r} does not exist in IPv{family}")
        self._drop: _FamilyDrop | None = None
        self._itf = None

    @classmethod
    def from_cli(cls, code: str = "host", flags: str | None = "syn", sport: int | None = None,
                 dport: int | None = None, src: str | None = None, dst: str | None = None, nth: int | None = None,
                 delay_ms: float = 0, mtu: int | None = None, family: int | None = None,
                 interface: str | None = None, lifetime_s: float = DEFAULT_LIFETIME_S) -> "IcmpUnreachable":
        code_value: str | int = int(code) if str(code).isdigit() else code
        return cls(code_value, Match.from_cli(flags, sport, dport, src, dst), int(nth) if nth else None,
                   float(delay_ms), mtu=int(mtu) if mtu else None, family=int(family) if family else None,
                   interface=interface, lifetime_s=float(lifetime_s))

    def describe(self) -> str:
        which = f"match #{self.nth}" if self.nth else "every match"
        delay = f" after {self.delay_ms:g} ms" if self.delay_ms else ""
        return f"answer {self.match.describe()} ({which}) with ICMP {self.code} unreachable{delay}"

    def _interface(self, host: "Host"):
        if self.interface is not None:
            return host.interface(self.interface)
        try:
            return host.interface("client")
        except LookupError:
            if len(host.interfaces) == 1:
                return host.interfaces[0]
            raise FaultError(f"{host.name} has several interfaces and none faces a client: "
                             f"say which one with interface=") from None

    def apply(self, host: "Host") -> None:
        itf = self._interface(host)
        reply = {}
        for fam, (icmp_type, icmp_code) in self.types.items():
            if fam in itf.addresses:  # a single-family testbed has no address of the other family
                mtu = self.mtu if self.mtu is not None else DEFAULT_MTU[fam]
                reply[str(fam)] = {"type": icmp_type, "code": icmp_code, "src": itf.addresses[fam], "mtu": mtu}
        if not reply:
            raise FaultError(f"{host.name}:{itf.name} has no address of IPv{'/'.join(map(str, self.types))} "
                             f"to send the ICMP error from")
        self._itf = itf
        self._arm(host, "icmp", f"could not arm the ICMP injector on {host.name}:{itf.name}", ifname=itf.name,
                  match=self.match.agent(), reply=reply, nth=self.nth, delay_ms=self.delay_ms,
                  max_answers=self.max_answers, lifetime_s=self.lifetime_s)
        self._drop = _FamilyDrop(self.match, [int(f) for f in reply])
        try:
            self._drop.apply(host)
        except BaseException:
            self._drop = None
            self._disarm()
            raise

    def wait_sent(self, n: int = 1, timeout: float = 5.0) -> dict:
        """Poll the agent until it has sent `n` ICMP errors; FaultError after `timeout` seconds."""
        last: dict = {}

        def check():
            last.update(self.status())
            return dict(last) if last["sent"] >= n else None

        return _poll(check, timeout, lambda: f"the ICMP injector sent {last.get('sent')} of {n} errors within "
                                             f"{timeout} s ({last.get('matched')} packets matched)")

    def remove(self, host: "Host") -> dict:
        try:
            dropped = self._drop.remove(host)["dropped"] if self._drop is not None else 0
        finally:
            # Whatever happened to the nft table, the agent's socket must not outlive the fault: it
            # would keep the testbed's namespace alive.
            self._drop = None
            report = self._disarm()
        sends = report["sends"]
        self.report = {
            "fault": self.kind, "host": host.name, "interface": self._itf.name if self._itf else None,
            "match": self.match.describe(), "code": self.code, "nth": self.nth, "delay_ms": self.delay_ms,
            "matched": report["matched"], "sent": report["sent"], "dropped": dropped,
            "match_times_ns": [m["t_ns"] for m in report["matches"]],
            "send_times_ns": [s["t_ns"] for s in sends],
            "matches": report["matches"], "sends": sends, "cancelled": report["cancelled"],
            "expired": report["expired"], "errors": report["errors"], "agent_pid": _agent().pid,
        }
        return self.report


# ---------------------------------------------------------------------------------------------------
# RST into a live connection, and a segment for a connection that does not exist
# ---------------------------------------------------------------------------------------------------

RST_POSITIONS = ("exact", "in-window", "out-of-window")


class Rst(_AgentFault):
    """Inject a RST into an established connection, as if from one end to the other.

        with inject(bed.router, Rst(Match(dport=5000), to=bed.client.addr(4))) as rst:
            ...                            # traffic flows; the agent learns the sequence numbers
            rst.fire("in-window")          # RFC 5961: a challenge ACK, not a reset
            rst.fire("exact")              # seq = RCV.NXT: the client's next read fails, ECONNRESET

    Applied to a host on the connection's path (the router, or one of its ends), the fault agent
    watches the connection on the host's interface towards `to` (the receiver's address) and learns
    each side's sequence numbers, acknowledgments and windows from its packets: so arm it before the
    connection carries traffic (its handshake gives the window scale). `fire()` then sends a RST with
    the peer's address and port as source and sequence number RCV.NXT + offset, where `at` is
    "exact" (offset 0), "in-window" (offset: half the receiver's last advertised window) or
    "out-of-window" (offset -2**30, outside any window); `offset` overrides. `ack=True` sends RST+ACK.

    Command line (`from_cli`): to (the receiver's address), sport, dport, src, dst (the connection:
    any segment matching in either direction), at, offset, ack, interface, wait_s, lifetime_s.
    The command line fires once, right after applying, waiting up to `wait_s` for a segment.
    Report: `sends` (each RST: seq, rcv_nxt, offset, window), `segments` seen, `conn`.
    """

    kind = "rst"

    def __init__(self, match: Match, to: str, *, at: str = "exact", offset: int | None = None, ack: bool = False,
                 interface: str | None = None, wait_s: float = 5.0, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        super().__init__()
        if at not in RST_POSITIONS:
            raise FaultError(f"unknown RST position {at!r}; use one of {', '.join(RST_POSITIONS)}")
        self.match = match
        self.to = str(ipaddress.ip_address(to))
        self.at = at
        self.offset = offset
        self.ack = ack
        self.interface = interface
        self.wait_s = wait_s
        self.lifetime_s = lifetime_s
        self._itf = None
        self.sent: list[dict] = []

    @classmethod
    def from_cli(cls, to: str, flags: str | None = None, sport: int | None = None, dport: int | None = None,
                 src: str | None = None, dst: str | None = None, at: str = "exact", offset: int | None = None,
                 ack: bool = False, interface: str | None = None, wait_s: float = 5.0,
                 lifetime_s: float = DEFAULT_LIFETIME_S) -> "Rst":
        return cls(Match.from_cli(flags, sport, dport, src, dst), to, at=at,
                   offset=int(offset) if offset is not None else None, ack=bool(ack), interface=interface,
                   wait_s=float(wait_s), lifetime_s=float(lifetime_s))

    def describe(self) -> str:
        where = self.at if self.offset is None else f"RCV.NXT{self.offset:+d}"
        return f"RST ({where}) to {self.to} in the connection of {self.match.describe()}"

    def apply(self, host: "Host") -> None:
        self._itf = _interface_facing(host, self.to, self.interface)
        self._arm(host, "watch", f"could not watch {host.name}:{self._itf.name}", ifname=self._itf.name,
                  match=self.match.agent(), lifetime_s=self.lifetime_s)

    def wait_learned(self, timeout: float | None = None) -> dict:
        """Wait until the agent has seen a segment of the connection; its report so far."""
        timeout = self.wait_s if timeout is None else timeout
        return _poll(lambda: (s := self.status())["conn"] and s, timeout,
                     lambda: f"no segment of a connection matching {self.match.describe()} crossed "
                             f"{self._itf.name if self._itf else '?'} within {timeout} s: the RST needs its "
                             f"sequence numbers; send some traffic on the connection")

    def fire(self, at: str | None = None, offset: int | None = None, timeout: float | None = None) -> dict:
        """Send one RST now (after waiting up to `timeout` for the connection's first segment)."""
        at = at or self.at
        if at not in RST_POSITIONS:
            raise FaultError(f"unknown RST position {at!r}; use one of {', '.join(RST_POSITIONS)}")
        self.wait_learned(timeout)
        offset = self.offset if offset is None and at == self.at else offset
        sent = _agent_request("rst", f"RST to {self.to}", id=self._id, to=self.to, at=at, offset=offset,
                              ack=self.ack)["sent"]
        self.sent.append(sent)
        return sent

    def remove(self, host: "Host") -> dict:
        report = self._disarm()
        self.report = {"fault": self.kind, "host": host.name, "interface": self._itf.name if self._itf else None,
                       "match": self.match.describe(), "to": self.to, "conn": report["conn"],
                       "segments": report["segments"], "sent": report["sent"], "sends": report["sends"],
                       "sides": report["sides"], "expired": report["expired"], "errors": report["errors"]}
        return self.report


class Segment(_AgentFault):
    """Send one crafted TCP segment from a host and report the answer, e.g. an ACK for a connection
    that does not exist, which the receiver answers with a RST whose seq is the segment's ack (RFC 793):

        with inject(bed.client, Segment(bed.server.addr(4), 5000, flags="A")) as seg:
            answer = seg.wait_answer()     # {"flags": "R", "seq": <the ACK's ack>, ...}

    The segment leaves the host's interface towards `dst` at layer 2 (the agent addresses the frame to
    the next hop, whose MAC it reads in the next hop's own namespace), so the host's own TCP stack
    never knows it. `src` (default: the host's address on that interface) may be any address; the
    answer is seen only if it comes back through that interface. `sport` (default: random in
    40000..59999), `seq` and `ack` (default: random), `flags` (Scapy letters, default "A"), `payload`.

    Command line (`from_cli`): dst, dport, src, sport, flags, seq, ack, payload, wait_ms.
    Report: `sent` (the segment), `answers` (every segment back on the same 4-tuple), `answer` (the first).
    """

    kind = "segment"

    def __init__(self, dst: str, dport: int, *, flags: str = "A", src: str | None = None, sport: int | None = None,
                 seq: int | None = None, ack: int | None = None, payload: bytes | str = b"",
                 wait_ms: float = 1000) -> None:
        super().__init__()
        self.dst = str(ipaddress.ip_address(dst))
        self.dport = int(dport)
        rng = random.SystemRandom()
        self.flags = flags
        self.src = src
        self.sport = int(sport) if sport is not None else rng.randrange(40000, 60000)
        self.seq = int(seq) if seq is not None else rng.getrandbits(32)
        self.ack = int(ack) if ack is not None else rng.getrandbits(32)
        self.payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.wait_ms = wait_ms
        self._via: dict = {}

    @classmethod
    def from_cli(cls, dst: str, dport: int, flags: str = "A", src: str | None = None, sport: int | None = None,
                 seq: int | None = None, ack: int | None = None, payload: str = "", wait_ms: float = 1000) -> "Segment":
        return cls(dst, int(dport), flags=flags, src=src, sport=int(sport) if sport is not None else None,
                   seq=int(seq) if seq is not None else None, ack=int(ack) if ack is not None else None,
                   payload=payload, wait_ms=float(wait_ms))

    def describe(self) -> str:
        return (f"segment {self.flags} seq={self.seq} ack={self.ack} len={len(self.payload)} to "
                f"{self.dst} port {self.dport} from port {self.sport}")

    def apply(self, host: "Host") -> None:
        via = self._via = _next_hop(host, self.dst)
        src = self.src or via["src"]
        if src is None:
            raise FaultError(f"{host.name} has no source address towards {self.dst}: give src=")
        self.src = str(ipaddress.ip_address(src))
        family = ipaddress.ip_address(self.dst).version
        self._arm(host, "segment", f"could not send the segment from {host.name}", ifname=via["ifname"],
                  lifetime_s=max(5.0, self.wait_ms / 1000 * 2),
                  segment={"family": family, "src": self.src, "dst": self.dst, "sport": self.sport,
                           "dport": self.dport, "flags": self.flags, "seq": self.seq, "ack": self.ack,
                           "payload_hex": self.payload.hex(), "src_mac": via["src_mac"], "dst_mac": via["dst_mac"],
                           "ttl": 64})

    def wait_answer(self, timeout: float | None = None) -> dict | None:
        """The first segment that came back, waiting up to `timeout` s (default `wait_ms`); None if none."""
        timeout = self.wait_ms / 1000 if timeout is None else timeout
        try:
            return _poll(lambda: (self.status()["answers"] or [None])[0], timeout, lambda: "")
        except FaultError:
            return None

    fire = wait_answer

    def remove(self, host: "Host") -> dict:
        report = self._disarm()
        sent = report["sends"][0] if report["sends"] else None
        self.report = {"fault": self.kind, "host": host.name, "interface": self._via.get("ifname"),
                       "via": self._via.get("peer"), "sent": sent, "answers": report["answers"],
                       "answer": report["answers"][0] if report["answers"] else None, "errors": report["errors"]}
        return self.report


# ---------------------------------------------------------------------------------------------------
# Blackhole: an address that nobody answers for
# ---------------------------------------------------------------------------------------------------

class Blackhole(Fault):
    """Make a host's address unreachable with no answer at all: no ARP reply, no neighbour advertisement.

        with inject(bed.server, Blackhole()) as bh:     # all the server's addresses
            ...    # routed: the router's resolution fails, it sends ICMP host unreachable back;
                   # pair: the client's own resolution fails; either way connect() -> EHOSTUNREACH

    Applied to the host that owns the address. In its namespace an nft table of family `arp` drops
    ARP requests for the address (input) and any ARP the host would send from it (output), and one of
    family `ip6` drops neighbour solicitations for it (input, matched on the target address in the
    ICMPv6 body) and the solicitations and advertisements it would send from it (output): so no
    neighbour ever learns its link-layer address. The neighbours' caches (the peers of its links,
    in their own namespaces) are flushed of the address when the fault starts, so none answers from
    cache, and when it ends, so none keeps the FAILED entry.

    A neighbour gives up after `mcast_solicit + app_solicit` probes `retrans_time_ms` apart (its
    `net.ipv{4,6}.neigh.<dev>.*` sysctls): the report gives each neighbour's settings and that time
    (`resolution_ms`), read in its namespace when the fault starts.

    Command line (`from_cli`): address (default: all the host's addresses), family.
    Report: `addresses`, `arp_dropped`, `nd_dropped`, `neighbours` (netns, dev, family, settings,
    `resolution_ms`).
    """

    kind = "blackhole"

    def __init__(self, address: str | None = None, *, family: int | None = None) -> None:
        super().__init__()
        self.address = str(ipaddress.ip_address(address)) if address else None
        self.family = family
        self.addresses: list[str] = []
        self.tables: list[tuple[str, str]] = []
        self.neighbours: list[dict] = []

    @classmethod
    def from_cli(cls, address: str | None = None, family: int | None = None) -> "Blackhole":
        return cls(address, family=int(family) if family else None)

    def describe(self) -> str:
        return f"blackhole {self.address or 'every address of the host'}" + \
            (f" (IPv{self.family})" if self.family else "")

    def apply(self, host: "Host") -> None:
        own = host.addresses(self.family)
        if self.address is not None:
            if ipaddress.ip_address(self.address) not in {ipaddress.ip_address(a) for a in own}:
                raise FaultError(f"{self.address} is not an address of {host.name}: apply a blackhole to the host "
                                 f"that owns the address")
            own = [self.address]
        if not own:
            raise FaultError(f"{host.name} has no IPv{self.family} address to blackhole")
        self.addresses = own
        v4 = [a for a in own if ipaddress.ip_address(a).version == 4]
        v6 = [a for a in own if ipaddress.ip_address(a).version == 6]
        tag = f"{_tag(host)}_{self.kind}{next(_ids)}"
        rules = ""
        if v4:
            s = v4[0] if len(v4) == 1 else "{ " + ", ".join(v4) + " }"
            rules += (f"table arp {tag} {{\n  counter dropped {{ }}\n"
                      f"  chain input_hook {{ type filter hook input priority -300; policy accept; "
                      f"arp daddr ip {s} counter name \"dropped\" drop; }}\n"
                      f"  chain output_hook {{ type filter hook output priority -300; policy accept; "
                      f"arp saddr ip {s} counter name \"dropped\" drop; }}\n}}\n")
            self.tables.append(("arp", tag))
        if v6:
            # The target address of a solicitation is the 16 bytes after the ICMPv6 header's 8.
            targets = ", ".join(str(int(ipaddress.ip_address(a))) for a in v6)
            s = v6[0] if len(v6) == 1 else "{ " + ", ".join(v6) + " }"
            rules += (f"table ip6 {tag} {{\n  counter dropped {{ }}\n"
                      f"  chain input_hook {{ type filter hook prerouting priority -300; policy accept; "
                      f"icmpv6 type nd-neighbor-solicit @th,64,128 {{ {targets} }} counter name \"dropped\" drop; }}\n"
                      f"  chain output_hook {{ type filter hook output priority -300; policy accept; "
                      f"ip6 saddr {s} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} "
                      f"counter name \"dropped\" drop; }}\n}}\n")
            self.tables.append(("ip6", tag))
        _nft(host, rules, self.kind)
        try:
            self.neighbours = self._neighbours(host, v4, v6)
            self._flush()
        except BaseException:
            for family, table in self.tables:
                _nft_delete(host, family, table)
            self.tables = []
            raise

    def _neighbours(self, host: "Host", v4: list[str], v6: list[str]) -> list[dict]:
        """The links' peers that would resolve the addresses, and their neighbour settings."""
        out = []
        for itf in host.interfaces:
            peer = _peer(host, itf)
            for fam, addrs in ((4, v4), (6, v6)):
                mine = [a for a in addrs if itf.addresses.get(fam) == a]
                if not mine:
                    continue
                base = f"net.ipv{fam}.neigh.{peer['ifname']}"
                settings = {k: int(_read_sysctl(peer["netns"], f"{base}.{k}"))
                            for k in ("mcast_solicit", "app_solicit", "ucast_solicit", "retrans_time_ms")}
                out.append({"host": peer["host"], "netns": peer["netns"], "dev": peer["ifname"], "family": fam,
                            "addresses": mine, **settings,
                            # Resolution of a new entry: mcast_solicit (+ app_solicit) probes, one every
                            # retrans_time, and FAILED at the timer after the last (net/core/neighbour.c).
                            "resolution_ms": (settings["mcast_solicit"] + settings["app_solicit"])
                            * settings["retrans_time_ms"]})
        return out

    def _flush(self) -> None:
        for n in self.neighbours:
            for addr in n["addresses"]:
                res = subprocess.run(["ip", "-n", n["netns"], "neigh", "flush", "to", addr, "dev", n["dev"]],
                                     capture_output=True, text=True, timeout=10)
                if res.returncode != 0:
                    raise FaultError(f"could not flush {addr} from the neighbour cache of {n['host']}: "
                                     f"{res.stderr.strip()}")

    def remove(self, host: "Host") -> dict:
        dropped = {"arp": 0, "ip6": 0}
        try:
            for family, table in self.tables:
                counts = _nft_counters(host, family, table) or {}
                dropped[family] += counts.get("dropped", 0)
                _nft_delete(host, family, table)
        finally:
            self.tables = []
            self._flush()
        self.report = {"fault": self.kind, "host": host.name, "addresses": self.addresses,
                       "arp_dropped": dropped["arp"], "nd_dropped": dropped["ip6"], "neighbours": self.neighbours}
        return self.report


# ---------------------------------------------------------------------------------------------------
# Delay: netem where the kernel has it, a user-space delay line at a router where it does not
# ---------------------------------------------------------------------------------------------------

def qdisc_available(host: "Host", kind: str, *args: str) -> tuple[bool, str]:
    """Can this kernel make a qdisc of `kind`? Probed on the loopback of the host's namespace (which
    nothing of the testbed uses), and removed at once. Returns (yes, the kernel's message)."""
    res = host.run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "7fe0:", kind, *args])
    if res.returncode == 0:
        host.run(["tc", "qdisc", "del", "dev", "lo", "root"])
        return True, ""
    return False, res.stderr.strip()


class Delay(Fault):
    """Delay matching TCP packets by `delay_ms` milliseconds.

        with inject(bed.router, Delay(100, Match(dport=5000))) as d:   # client -> server +100 ms
            ...

    `method`: "netem" (a `prio` root qdisc on each egress interface, with netem on the band that nft
    `meta priority` sends matching packets to), "agent" (a user-space delay line: nft drops the
    matching packets as they arrive at the router, and the fault agent, which saw them on its packet
    tap before netfilter, re-sends each `delay_ms` after its kernel receive timestamp on the egress
    interface, with the router's MAC as source, the next hop's MAC (read in its namespace) as
    destination, TTL / hop limit less one and fresh checksums), or "auto" (netem when this kernel has
    netem and prio, else the agent). The delay line forwards, so it works only on a host that routes
    between testbed links; packets to the host's own addresses are never delayed.
    Bounds: `max_packets` (later matches pass undelayed), `lifetime_s` (then everything passes
    undelayed, even if nobody removes the fault: nft `meta time` and the agent end together).

    Command line (`from_cli`): delay_ms, flags, sport, dport, src, dst, method, max_packets, lifetime_s.
    Report: `method`, `matched`, `delayed`, `dropped` (by the nft rule), `packets` (receive, due and
    send times of each delayed packet), `ttl_expired`, `unroutable`.
    """

    kind = "delay"
    METHODS = ("auto", "netem", "agent")

    def __init__(self, delay_ms: float, match: Match | None = None, *, method: str = "auto",
                 max_packets: int = 10000, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        super().__init__()
        if not 0 < delay_ms <= 60_000:
            raise FaultError(f"delay_ms must lie in (0, 60000], got {delay_ms}")
        if method not in self.METHODS:
            raise FaultError(f"unknown delay method {method!r}; use one of {', '.join(self.METHODS)}")
        if not 1 <= max_packets <= 1_000_000:
            raise FaultError(f"max_packets must lie in 1..1000000, got {max_packets}")
        self.delay_ms = delay_ms
        self.match = match if match is not None else Match()
        self.method = method
        self.max_packets = int(max_packets)
        self.lifetime_s = lifetime_s
        self.used = ""
        self.table = ""
        self.deadline_ns: int | None = None
        self._id = ""
        self._qdiscs: list[str] = []
        self.probe: dict = {}

    @classmethod
    def from_cli(cls, delay_ms: float, flags: str | None = None, sport: int | None = None, dport: int | None = None,
                 src: str | None = None, dst: str | None = None, method: str = "auto", max_packets: int = 10000,
                 lifetime_s: float = DEFAULT_LIFETIME_S) -> "Delay":
        return cls(float(delay_ms), Match.from_cli(flags, sport, dport, src, dst), method=method,
                   max_packets=int(max_packets), lifetime_s=float(lifetime_s))

    def describe(self) -> str:
        return f"delay {self.match.describe()} by {self.delay_ms:g} ms ({self.used or self.method})"

    def _choose(self, host: "Host") -> str:
        netem, why = qdisc_available(host, "netem", "delay", "1ms")
        prio, why_prio = qdisc_available(host, "prio") if netem else (False, "")
        self.probe = {"netem": netem, "netem_error": why, "prio": prio, "prio_error": why_prio}
        if self.method == "netem" or (self.method == "auto" and netem and prio):
            if not netem:
                raise FaultError(f"this kernel has no netem qdisc (tc said: {why}); use method='agent', the "
                                 f"user-space delay line at a router")
            if not prio:
                raise FaultError(f"this kernel has netem but no prio qdisc (tc said: {why_prio}), so netem could "
                                 f"only delay every packet of an interface; use method='agent'")
            return "netem"
        forwarding = _read_sysctl(host.netns, "net.ipv4.ip_forward") == "1" or \
            _read_sysctl(host.netns, "net.ipv6.conf.all.forwarding") == "1"
        if not forwarding:
            raise FaultError(f"{host.name} does not forward packets, so the user-space delay line cannot serve it"
                             + ("" if netem else f", and this kernel has no netem (tc said: {why})")
                             + ": apply the delay to the router")
        return "agent"

    def apply(self, host: "Host") -> None:
        self.used = self._choose(host)
        self.deadline_ns = _deadline(self.lifetime_s)
        self.table = f"{_tag(host)}_{self.kind}{next(_ids)}"
        until = _until(self.deadline_ns)
        variants = self.match.nft_variants()
        if self.used == "netem":
            self._apply_netem(host, variants, until)
            return
        # Drop the originals as they arrive for forwarding (never packets for this host itself), at most
        # max_packets of them: the agent delays exactly those.
        body = "".join(f'    {m} counter name "matched"\n    {m} fib daddr type != local {until}limit name "bound" '
                       f'counter name "acted" drop\n' for m in variants)
        ruleset = (f"table inet {self.table} {{\n  counter matched {{ }}\n  counter acted {{ }}\n"
                   f"  limit bound {{ rate 1/day burst {self.max_packets} packets }}\n"
                   f"  chain fault {{\n{body}  }}\n"
                   f"  chain prerouting_hook {{ type filter hook prerouting priority -300; policy accept; "
                   f"jump fault; }}\n}}\n")
        routes, neighbours = self._routes(host)
        self._id = f"{_tag(host)}-{self.kind}{next(_ids)}"
        # The agent first (its sockets bound), then the drop rule: no packet is dropped unseen.
        _agent_request("arm", f"could not arm the delay line on {host.name}", kind="delay", id=self._id,
                       netns=host.netns, ifnames=[i.name for i in host.interfaces], match=self.match.agent(),
                       delay_ms=self.delay_ms, max_packets=self.max_packets, deadline_ns=self.deadline_ns,
                       lifetime_s=self.lifetime_s + 1, routes=routes, neighbours=neighbours,
                       local=host.addresses())
        try:
            _nft(host, ruleset, self.kind)
        except BaseException:
            _agent_request("disarm", "removing the delay line", id=self._id)
            self._id = ""
            raise

    def _routes(self, host: "Host") -> tuple[list[dict], dict[str, str]]:
        """The host's routes (both families) and its peers' link-layer addresses, for the delay line."""
        links = {i.name: (i, _peer(host, i), _link(host, i.name)) for i in host.interfaces}
        neighbours = {a: peer["mac"] for _, peer, _ in links.values() for a in peer["addresses"]}
        routes = []
        for fam in ("-4", "-6"):
            for r in _ip_json(host.netns, fam, "route", "show"):
                dev = r.get("dev")
                if dev not in links or r.get("type") in ("unreachable", "blackhole", "prohibit"):
                    continue
                prefix = r["dst"]
                if prefix == "default":
                    prefix = "0.0.0.0/0" if fam == "-4" else "::/0"
                routes.append({"prefix": prefix, "ifname": dev, "gateway": r.get("gateway"),
                               "src_mac": links[dev][2]["address"], "mtu": links[dev][2]["mtu"]})
        return routes, neighbours

    def _apply_netem(self, host: "Host", variants: list[str], until: str) -> None:  # pragma: no cover - no netem here
        # Matching packets get skb->priority 7fe1:4, which the prio root qdisc sends straight to its
        # band 4, where netem waits; every other packet goes to band 1 (priomap all zero).
        for itf in host.interfaces:
            steps = [["tc", "qdisc", "add", "dev", itf.name, "root", "handle", "7fe1:", "prio", "bands", "4",
                      "priomap", *["0"] * 16],
                     ["tc", "qdisc", "add", "dev", itf.name, "parent", "7fe1:4", "handle", "7fe2:", "netem", "delay",
                      f"{self.delay_ms}ms", "limit", str(self.max_packets)]]
            for argv in steps:
                res = host.run(argv)
                if res.returncode != 0:
                    self._remove_qdiscs(host)
                    raise FaultError(f"{' '.join(argv)} failed on {host.name}: {res.stderr.strip()}")
                if argv[4] == "root":
                    self._qdiscs.append(itf.name)
        body = "".join(f'    {m} counter name "matched"\n    {m} {until}counter name "acted" meta priority set 7fe1:4\n'
                       for m in variants)
        ruleset = (f"table inet {self.table} {{\n  counter matched {{ }}\n  counter acted {{ }}\n"
                   f"  chain fault {{\n{body}  }}\n"
                   f"  chain postrouting_hook {{ type filter hook postrouting priority 0; policy accept; "
                   f"jump fault; }}\n}}\n")
        try:
            _nft(host, ruleset, self.kind)
        except BaseException:
            self._remove_qdiscs(host)
            raise

    def _remove_qdiscs(self, host: "Host") -> None:
        for ifname in self._qdiscs:
            host.run(["tc", "qdisc", "del", "dev", ifname, "root"])
        self._qdiscs = []

    def status(self) -> dict:
        """While applied (agent method): the delay line's report so far (`matched`, `delayed`, `sent`, ...)."""
        return _agent_request("status", "status of the delay line", id=self._id)["report"]

    def wait_sent(self, timeout: float | None = None) -> dict:
        """Wait until the delay line has sent every packet it holds (bounded: by default the delay and
        a second); the report so far. Packets that arrive meanwhile are delayed too."""
        timeout = self.delay_ms / 1000 + 1.0 if timeout is None else timeout
        last: dict = {}

        def check():
            last.update(self.status())
            return dict(last) if last["sent"] + last["cancelled"] >= last["delayed"] else None

        return _poll(check, timeout, lambda: f"the delay line still holds {last['delayed'] - last['sent']} "
                                             f"packets after {timeout} s")

    def remove(self, host: "Host") -> dict:
        counts: dict[str, int] = {}
        agent_report: dict = {}
        try:
            counts = _nft_counters(host, "inet", self.table) or {}
            _nft_delete(host, "inet", self.table)
        finally:
            self._remove_qdiscs(host)
            if self._id:
                try:
                    # The kernel forwards new packets again; the delay line stops taking them and
                    # delivers what it holds (it took them from the network: dropping them would be loss).
                    _agent_request("stop", "stopping the delay line", id=self._id)
                    self.wait_sent()
                finally:
                    agent_report = _agent_request("disarm", "removing the delay line", id=self._id)["report"]
                    self._id = ""
        self.report = {"fault": self.kind, "host": host.name, "method": self.used, "delay_ms": self.delay_ms,
                       "match": self.match.describe(), "matched": counts.get("matched", 0),
                       "dropped": counts.get("acted", 0) if self.used == "agent" else 0,
                       "until_ns": self.deadline_ns, "probe": self.probe}
        if self.used == "netem":
            self.report["delayed"] = counts.get("acted", 0)
        else:
            self.report.update({k: agent_report.get(k) for k in (
                "delayed", "sent", "ttl_expired", "unroutable", "packets", "cancelled", "expired", "errors")})
            self.report["seen"] = agent_report.get("matched")
        return self.report


# ---------------------------------------------------------------------------------------------------
# SYN flood
# ---------------------------------------------------------------------------------------------------

class SynFlood(Fault):
    """A bounded flood of SYNs from spoofed documentation addresses (`verifier.faults.flood`), sent from the
    host it is applied to, in a background thread, for the duration of the `inject` block (whose end
    waits for the flood, which always ends by its own count or time limit).

        with inject(bed.client, SynFlood(bed.server.addr(4), 5000, count=300, rate_pps=3000)) as f:
            f.wait()

    Command line (`from_cli`): dst, dport, count, rate_pps, sources (a documentation network, foreign
    to the testbed), time_limit_s, seed. Report: `sent`, `requested`, `duration_s`, `stopped_by`, ...
    """

    kind = "syn-flood"

    def __init__(self, dst: str, dport: int, *, count: int, rate_pps: float, sources: str | None = None,
                 time_limit_s: float | None = None, seed: int | None = None) -> None:
        super().__init__()
        from verifier.faults import flood

        self.dst = str(ipaddress.ip_address(dst))
        self.dport = int(dport)
        self.count = int(count)
        self.rate_pps = float(rate_pps)
        self.sources = sources
        self.seed = seed
        try:  # refuse what is out of bounds now, not in the flood's thread
            self.time_limit_s = flood._check_bounds(self.count, self.rate_pps, time_limit_s)
            flood._documentation_network(self.dst, "destination")
            if sources:
                flood._documentation_network(sources, "source range")
        except flood.FloodError as exc:
            raise FaultError(str(exc)) from None
        self._flood = None

    @classmethod
    def from_cli(cls, dst: str, dport: int, count: int = 100, rate_pps: float = 1000, sources: str | None = None,
                 time_limit_s: float | None = None, seed: int | None = None) -> "SynFlood":
        return cls(dst, int(dport), count=int(count), rate_pps=float(rate_pps), sources=sources,
                   time_limit_s=float(time_limit_s) if time_limit_s is not None else None,
                   seed=int(seed) if seed is not None else None)

    def describe(self) -> str:
        return (f"SYN flood of {self.count} to {self.dst} port {self.dport} at {self.rate_pps:g}/s from "
                f"{self.sources or 'a spoofed documentation range'} (at most {self.time_limit_s:g} s)")

    def apply(self, host: "Host") -> None:
        from verifier.faults.flood import BackgroundFlood

        self._flood = BackgroundFlood(host, self.dst, self.dport, count=self.count, rate_pps=self.rate_pps,
                                      sources=self.sources, time_limit=self.time_limit_s, seed=self.seed).start()

    def wait(self, timeout: float | None = None):
        """Wait for the flood to end (it always does, by its count or time limit); its FloodReport."""
        from verifier.faults.flood import FloodError

        if self._flood is None:
            raise FaultError("the SYN flood was not started")
        try:
            return self._flood.wait(self.time_limit_s + 1 if timeout is None else timeout)
        except FloodError as exc:
            raise FaultError(str(exc)) from None

    fire = wait

    def remove(self, host: "Host") -> dict:
        if self._flood is None:
            return self.report
        r = self.wait()
        self.report = {"fault": self.kind, "host": host.name, "family": r.family, "dst": r.dst, "dport": r.dport,
                       "sources": r.sources, "requested": r.requested, "rate_pps": r.rate_pps,
                       "time_limit_s": r.time_limit_s, "sent": r.sent, "send_errors": r.send_errors,
                       "stopped_by": r.stopped_by, "started_ns": r.started_ns, "ended_ns": r.ended_ns,
                       "first_ns": r.first_ns, "last_ns": r.last_ns, "duration_s": r.duration_s}
        return self.report


#: The fault kinds by the command line's names.
FAULT_KINDS: dict[str, type[Fault]] = {
    "drop": Drop, "reject": Reject, "icmp-unreachable": IcmpUnreachable, "rst": Rst, "segment": Segment,
    "blackhole": Blackhole, "delay": Delay, "syn-flood": SynFlood,
}


def from_cli(kind: str, **options: Any) -> Fault:
    """A fault from its command-line name and options (plain str/int/float values; None = not given)."""
    if kind not in FAULT_KINDS:
        raise FaultError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    try:
        return FAULT_KINDS[kind].from_cli(**{k: v for k, v in options.items() if v is not None})
    except TypeError as exc:
        raise FaultError(f"{kind}: {exc}") from None
