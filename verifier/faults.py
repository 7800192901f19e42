"""Faults: disturbances applied to one testbed host, removed when they end, reporting what they did.

    with inject(bed.router, Drop(Syn(dport=5000))) as drop:
        bed.client.run([...])          # every SYN to port 5000 dies at the router
    drop.report                        # {"fault": "drop", "matched": 6, ...}

A new fault kind is one class here with `apply`, `remove` and a `report`. Faults act only inside
testbed namespaces: `inject` refuses a host that is not part of a live testbed.
"""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host

_ids = itertools.count()


class FaultError(RuntimeError):
    """A fault could not be applied or removed."""


@dataclass(frozen=True)
class Match:
    """Which TCP packets a fault applies to. `flags`: "syn" (SYN without ACK), "syn-ack", "rst",
    "fin", "ack" (pure ACK without SYN/FIN/RST), or None for any."""

    flags: str | None = None
    sport: int | None = None
    dport: int | None = None
    src: str | None = None
    dst: str | None = None

    _NFT_FLAGS = {
        "syn": "tcp flags & (syn | ack) == syn",
        "syn-ack": "tcp flags & (syn | ack) == syn | ack",
        "rst": "tcp flags & rst == rst",
        "fin": "tcp flags & fin == fin",
        "ack": "tcp flags & (syn | ack | fin | rst) == ack",
    }

    def nft(self) -> str:
        """The match as an nftables expression (inet family: IPv4 and IPv6)."""
        parts = ["meta l4proto tcp"]
        for addr, field in ((self.src, "saddr"), (self.dst, "daddr")):
            if addr is not None:
                parts.append(f"{'ip6' if ':' in addr else 'ip'} {field} {addr}")
        if self.sport is not None:
            parts.append(f"tcp sport {int(self.sport)}")
        if self.dport is not None:
            parts.append(f"tcp dport {int(self.dport)}")
        if self.flags is not None:
            if self.flags not in self._NFT_FLAGS:
                raise FaultError(f"unknown TCP flags match {self.flags!r}; use one of {', '.join(self._NFT_FLAGS)}")
            parts.append(self._NFT_FLAGS[self.flags])
        return " ".join(parts)

    def describe(self) -> str:
        bits = [self.flags.upper() if self.flags else "TCP"]
        for name in ("src", "sport", "dst", "dport"):
            v = getattr(self, name)
            if v is not None:
                bits.append(f"{name}={v}")
        return " ".join(bits)


def Syn(**kw) -> Match:  # noqa: N802 - reads like a packet type in fault specs
    """SYNs (without ACK), e.g. `Syn(dport=5000)`."""
    return Match(flags="syn", **kw)


class Fault:
    """Base of all faults. `report` is filled in when the fault is removed."""

    kind = "fault"

    def __init__(self) -> None:
        self.report: dict = {}

    def apply(self, host: "Host") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def remove(self, host: "Host") -> dict:  # pragma: no cover - interface
        raise NotImplementedError


class NftFault(Fault):
    """A fault made of one nftables table in the host's namespace, named with the testbed's prefix.

    The table hooks prerouting (packets to and through the host) and output (packets it sends), so
    the same rule catches a router's forwarded packets and an end host's own.
    """

    verdict = "drop"

    def __init__(self, match: Match) -> None:
        super().__init__()
        self.match = match
        self.table = ""

    def rule(self) -> str:
        return f"{self.match.nft()} counter {self.verdict}"

    def apply(self, host: "Host") -> None:
        tag = host.netns.split("-", 1)[0]
        self.table = f"{tag}_{self.kind.replace('-', '_')}{next(_ids)}"
        ruleset = (
            f"table inet {self.table} {{\n"
            f"  chain prerouting_hook {{ type filter hook prerouting priority -300; policy accept; {self.rule()}; }}\n"
            f"  chain output_hook {{ type filter hook output priority -300; policy accept; {self.rule()}; }}\n"
            f"}}\n"
        )
        res = host.run(["nft", "-f", "-"], input=ruleset)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
            raise FaultError(f"nft refused the {self.kind} rule on {host.name}: {first}")

    def remove(self, host: "Host") -> dict:
        res = host.run(["nft", "-j", "list", "table", "inet", self.table])
        matched = 0
        if res.returncode == 0:
            for item in json.loads(res.stdout).get("nftables", []):
                for expr in item.get("rule", {}).get("expr", []):
                    if "counter" in expr:
                        matched += expr["counter"]["packets"]
        host.run(["nft", "delete", "table", "inet", self.table])
        self.report = {"fault": self.kind, "host": host.name, "match": self.match.describe(), "matched": matched}
        return self.report


class Drop(NftFault):
    """Drop every matching packet silently (no RST, no ICMP): the sender sees no answer."""

    kind = "drop"
    verdict = "drop"


class Reject(NftFault):
    """Answer matching packets at once from this host with an ICMP error (nftables `reject`).

    `code` is the ICMP/ICMPv6 type name as nftables spells it, for both families: "host-unreachable",
    "net-unreachable", "port-unreachable", "admin-prohibited". The kernel sends it within microseconds.
    """

    kind = "reject"
    _CODES = {
        "host-unreachable": ("host-unreachable", "addr-unreachable"),
        "net-unreachable": ("net-unreachable", "no-route"),
        "port-unreachable": ("port-unreachable", "port-unreachable"),
        "admin-prohibited": ("admin-prohibited", "admin-prohibited"),
    }

    def __init__(self, match: Match, code: str = "host-unreachable") -> None:
        super().__init__(match)
        if code not in self._CODES:
            raise FaultError(f"unknown reject code {code!r}; use one of {', '.join(self._CODES)}")
        self.code = code

    def rule(self) -> str:
        v4, v6 = self._CODES[self.code]
        m = self.match.nft()
        # One rule per family: nftables spells the ICMP and ICMPv6 codes differently.
        return (f"meta nfproto ipv4 {m} counter reject with icmp type {v4}; "
                f"meta nfproto ipv6 {m} counter reject with icmpv6 type {v6}")

    def apply(self, host: "Host") -> None:
        # reject is only valid in input/forward/output: hook forward for a router's transit packets.
        tag = host.netns.split("-", 1)[0]
        self.table = f"{tag}_{self.kind}{next(_ids)}"
        ruleset = (
            f"table inet {self.table} {{\n"
            f"  chain forward_hook {{ type filter hook forward priority 0; policy accept; {self.rule()}; }}\n"
            f"  chain input_hook {{ type filter hook input priority 0; policy accept; {self.rule()}; }}\n"
            f"}}\n"
        )
        res = host.run(["nft", "-f", "-"], input=ruleset)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
            raise FaultError(f"nft refused the {self.kind} rule on {host.name}: {first}")


@contextmanager
def inject(host: "Host", fault: Fault) -> Iterator[Fault]:
    """Apply `fault` to `host` for the duration of the block; always remove it; fill `fault.report`."""
    from netns import namespace

    if not namespace.NAME_RE.match(host.netns) or not namespace.exists(host.netns):
        raise FaultError(f"{host.name} is not a host of a live testbed: faults apply only inside testbed namespaces")
    fault.apply(host)
    try:
        yield fault
    finally:
        fault.remove(host)


# ---------------------------------------------------------------------------------------------------
# ICMP errors forged by the fault agent (verifier.fault_agent)
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


class _FamilyDrop(Drop):
    """`Drop`, limited to some IP families (those the ICMP fault answers)."""

    def __init__(self, match: Match, families: list[int]) -> None:
        super().__init__(match)
        self.families = sorted(families)

    def rule(self) -> str:
        if self.families == [4, 6]:
            return super().rule()
        proto = "ipv4" if self.families == [4] else "ipv6"
        return f"meta nfproto {proto} {super().rule()}"


class IcmpUnreachable(Fault):
    """Answer matching packets arriving at a host (normally the router) with a forged ICMP
    destination-unreachable, sent by the long-lived fault agent (Scapy, built at layer 2):

        with inject(bed.router, IcmpUnreachable("host", Syn(dport=5000), delay_ms=50)) as fault:
            ...                                    # every SYN to port 5000 gets an ICMP 50 ms later
        fault.report   # {"matched": 1, "sent": 1, "send_times_ns": [...], "match_times_ns": [...], ...}

    `code`: a friendly name ("net", "host", "protocol", "port", "frag-needed", "admin", and aliases such
    as "no-route", "address-unreachable", "port-unreachable", "admin-prohibited", "too-big"), mapped per
    family by `ICMP_UNREACH_CODES`; or a raw code number used with type 3 (IPv4) / 1 (IPv6).
    `nth`: answer only the nth match (1-based); None answers every match, up to `max_answers`.
    `delay_ms`: wait that long after the packet's arrival (kernel timestamp) before answering.
    `family`: 4 or 6 to act on one family only; by default every family the code exists in.
    `interface`: the host's interface (name or peer host) to listen and answer on; by default the one
    facing the client. The ICMP comes from that interface's address.
    `lifetime_s`: the agent closes its socket by itself after that, should nobody disarm it.

    While armed, the matched packets are also dropped at this host (an nft `Drop`), so that the
    destination never answers them; the agent still sees them, because packet taps see an incoming
    frame before netfilter's prerouting hook.
    """

    kind = "icmp-unreachable"

    def __init__(self, code: str | int = "host", match: Match | None = None, nth: int | None = None,
                 delay_ms: float = 0, *, mtu: int | None = None, family: int | None = None,
                 max_answers: int | None = None, lifetime_s: float = 60.0, interface: str | None = None) -> None:
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
        self._id = ""
        self._drop: _FamilyDrop | None = None
        self._itf = None

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
        from verifier.fault_agent import AgentError, agent

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
        tag = host.netns.split("-", 1)[0]
        self._id = f"{tag}-{self.kind}{next(_ids)}"
        m = self.match
        try:
            agent().request("arm", id=self._id, netns=host.netns, ifname=itf.name,
                            match={"flags": m.flags, "sport": m.sport, "dport": m.dport, "src": m.src, "dst": m.dst},
                            reply=reply, nth=self.nth, delay_ms=self.delay_ms, max_answers=self.max_answers,
                            lifetime_s=self.lifetime_s)
        except AgentError as exc:
            raise FaultError(f"could not arm the ICMP injector on {host.name}:{itf.name}: {exc}") from None
        self._drop = _FamilyDrop(m, [int(f) for f in reply])
        try:
            self._drop.apply(host)
        except BaseException:
            self._drop = None
            agent().request("disarm", id=self._id)
            raise

    def status(self) -> dict:
        """While armed: the agent's report so far (`matched`, `sent`, `matches`, `sends`), without disarming."""
        from verifier.fault_agent import agent

        if not self._id:
            raise FaultError("the ICMP fault is not armed")
        return agent().request("status", id=self._id)["report"]

    def wait_sent(self, n: int = 1, timeout: float = 5.0) -> dict:
        """Poll the agent until it has sent `n` ICMP errors; FaultError after `timeout` seconds."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            report = self.status()
            if report["sent"] >= n:
                return report
            if time.monotonic() > deadline:
                raise FaultError(f"the ICMP injector sent {report['sent']} of {n} errors within {timeout} s "
                                 f"({report['matched']} packets matched)")
            time.sleep(delay)  # polling interval of a bounded wait, not a readiness guess
            delay = min(delay * 2, 0.02)

    def remove(self, host: "Host") -> dict:
        from verifier.fault_agent import agent

        try:
            dropped = self._drop.remove(host)["matched"] if self._drop is not None else 0
        finally:
            # Whatever happened to the nft table, the agent's socket must not outlive the fault: it
            # would keep the testbed's namespace alive.
            self._drop = None
            report = agent().request("disarm", id=self._id)["report"]
        sends = report["sends"]
        self.report = {
            "fault": self.kind, "host": host.name, "interface": self._itf.name if self._itf else None,
            "match": self.match.describe(), "code": self.code, "nth": self.nth, "delay_ms": self.delay_ms,
            "matched": report["matched"], "sent": report["sent"], "dropped": dropped,
            "match_times_ns": [m["t_ns"] for m in report["matches"]],
            "send_times_ns": [s["t_ns"] for s in sends],
            "matches": report["matches"], "sends": sends, "cancelled": report["cancelled"],
            "expired": report["expired"], "errors": report["errors"], "agent_pid": agent().pid,
        }
        return self.report
