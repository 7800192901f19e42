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
