"""What every fault kind builds on: `Fault` and the registry of kinds, the `Option`s a kind declares,
`Match` and `Syn`, `inject`, and the machinery several kinds share: nftables tables (`NftFault`),
faults carried out by the fault agent (`AgentFault`), and reading a testbed's links, routes and
neighbours in its own namespaces.

Light on purpose: the fault agent imports every kind module, and so this one, when it starts, so
nothing here imports pyroute2 or Scapy (`netns.namespace` and the agent's client are imported when
first used).
"""

from __future__ import annotations

import inspect
import ipaddress
import itertools
import json
import math
import os
import subprocess
import time
from argparse import ArgumentTypeError
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Iterator

from verifier.argtypes import MAX_DURATION_S, bounds_text, check_range

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host, Testbed
    from netns.host import Interface

__all__ = [
    "DEFAULT_LIFETIME_S", "FAULT_KINDS", "AgentFault", "Fault", "FaultError", "Match", "NftFault", "Option", "Syn",
    "from_cli", "inject",
]

#: How long a fault lives if nobody removes it: its nft rules stop acting (`meta time`) and the
#: agent closes its sockets by itself. No fault lives longer than `MAX_DURATION_S` (one day).
DEFAULT_LIFETIME_S = 60.0
#: The most matches a fault counts to (`first`, `nth`, `max_answers`): an nft `limit` bucket of this
#: many packets, refilled one a week, fits the kernel's 64-bit token count (cost x burst).
MAX_MATCHES = 10_000
#: Documentation networks (RFC 5737, RFC 3849): the only addresses a fault may forge as a source
#: besides the testbed's own.
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in
                               ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))

#: The fault kinds by their command-line names, filled in by `Fault.__init_subclass__`.
FAULT_KINDS: dict[str, type["Fault"]] = {}

_ids = itertools.count()


def new_id() -> int:
    """A number unique in this process, for names of nft tables and agent arms."""
    return next(_ids)


class FaultError(RuntimeError):
    """A fault could not be applied or removed, or was asked for something out of its bounds."""


def addresses(value: "str | tuple[str, ...] | list[str] | None") -> tuple[str, ...] | None:
    """Addresses from one string (separated by commas) or a sequence of them, checked and normalised."""
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


def one_address(value: str) -> str:
    """One IP address, normalised."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise FaultError(f"{value!r} is not an IP address") from None


# ---------------------------------------------------------------------------------------------------
# Match
# ---------------------------------------------------------------------------------------------------

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

    _NFT_FLAGS: ClassVar[dict[str, str]] = {
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
                   src=addresses(src), dst=addresses(dst))

    def _by_family(self, which: str) -> dict[int, list[str]] | None:
        addrs = addresses(getattr(self, which))
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
        src, dst = addresses(self.src), addresses(self.dst)
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


# ---------------------------------------------------------------------------------------------------
# Options: what a kind takes, declared once for its constructor, `from_cli` and the command line
# ---------------------------------------------------------------------------------------------------

def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a yes/no value")


@dataclass(frozen=True)
class Option:
    """One option of a fault kind: a keyword argument of its constructor (a field of its `match` when
    `match` is set) and of `from_cli`, and the command-line flag `--name-with-dashes` of
    `verifier inject KIND` (unless `flag` is False: then the command line sets it some other way).

    `type` converts a command-line string (str, int, float, bool, or a function raising ValueError or
    FaultError); `low`/`high` (inclusive, or exclusive for `low` when `low_open`) and `choices` bound
    the value: `check()` enforces them for the command line and the constructors alike. `default`
    is only for `match` fields (what the kind matches when the field is not given); the other options'
    defaults are the constructor's own, which the documentation shows. `address`: on the command line
    a host name may stand for its address ("one") or all its addresses, comma-separated ("many").
    `what` names the value in error messages ("RST position").
    """

    name: str
    type: Callable[[Any], Any] = str
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    required: bool = False
    default: Any = None
    address: str | None = None
    match: bool = False
    flag: bool = True
    what: str = ""

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def limits(self) -> str:
        """The bounds in words ("in [0, 1]", "at least 1", "one of a, b"), or ""."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return ""
        return bounds_text(self.low, self.high, self.low_open)

    def check(self, value: Any) -> Any:
        """`value` converted by `type` and checked against the bounds (None, "not given", passes)."""
        if value is None:
            return None
        what = self.what or self.name
        convert = _boolean if self.type is bool else self.type
        try:
            v = convert(value)
        except FaultError:
            raise
        except (TypeError, ValueError) as exc:
            kind = getattr(self.type, "__name__", "")
            explain = f"not a{'n' if kind[:1] in 'aeiou' else ''} {kind}" if self.type in (int, float, bool) else exc
            raise FaultError(f"{what} {value!r}: {explain}") from None
        if self.choices is not None and v not in self.choices:
            raise FaultError(f"unknown {what} {v!r}; use one of {', '.join(map(str, self.choices))}")
        if isinstance(v, float) and not math.isfinite(v):  # nan passes every comparison, inf most
            raise FaultError(f"{what} must be a finite number, not {value!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                check_range(v, what, self.low, self.high, self.low_open)
            except ArgumentTypeError as exc:
                raise FaultError(str(exc)) from None
        return v


def match_options(flags_default: str | None = None) -> tuple[Option, ...]:
    """The options of a kind's `match` (the `Match` fields); `flags_default` is what it matches by default."""
    return (
        Option("flags", str, "TCP flags to match", choices=tuple(Match._NFT_FLAGS), match=True, default=flags_default,
               what="TCP flags match"),
        Option("sport", int, "source port", low=1, high=65535, match=True),
        Option("dport", int, "destination port", low=1, high=65535, match=True),
        Option("src", addresses, "source address(es), comma-separated, or a host name", match=True, address="many"),
        Option("dst", addresses, "destination address(es), comma-separated, or a host name", match=True,
               address="many"),
    )


# ---------------------------------------------------------------------------------------------------
# Fault: the base of every kind, and the registry
# ---------------------------------------------------------------------------------------------------

class Fault:
    """Base of all faults. `report` is filled in when the fault is removed; `status()` gives the same
    fields while it is applied, read at that moment (the counters so far).

    A kind is a subclass named by its command-line name, `class Drop(NftFault, kind="drop")`, which
    registers it in `FAULT_KINDS`; its `options` (a tuple of `Option`) say what it takes. It
    implements `apply(host)`, `remove(host)` (which fills `report`, a JSON-serialisable dict with a
    `fault` key) and `describe()` (one line), and may implement `fire(timeout=)`, the one-off action
    of a fault that acts once (a command line calls it right after `apply`), and `on_testbed`, what
    the command line fills in from the testbed.
    """

    kind: ClassVar[str] = "fault"
    options: ClassVar[tuple[Option, ...]] = ()
    #: Groups of options of which at most one may be given (the command line makes them exclusive).
    exclusive: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: Where the command line applies the fault unless --host says otherwise (the server of a testbed
    #: that has no such host).
    default_host: ClassVar[str] = "router"

    def __init_subclass__(cls, kind: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if kind is None:
            return  # a base of several kinds (NftFault, AgentFault), or a variant of one
        if kind in FAULT_KINDS:
            raise TypeError(f"fault kind {kind!r} is taken by {FAULT_KINDS[kind].__qualname__}")
        names = [o.name for o in cls.options]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__qualname__} declares an option twice: {names}")
        params = inspect.signature(cls.__init__).parameters
        stray = [o.name for o in cls.options if not o.match and o.name not in params]
        if stray or (any(o.match for o in cls.options) and "match" not in params):
            raise TypeError(f"{cls.__qualname__}: options {stray or ['match']} are not arguments of its constructor")
        cls.kind = kind
        cls.__doc__ = (inspect.cleandoc(cls.__doc__ or "") + "\n\n" + cls.options_doc()).strip()
        FAULT_KINDS[kind] = cls

    @classmethod
    def option(cls, name: str) -> Option:
        for o in cls.options:
            if o.name == name:
                return o
        raise KeyError(f"{cls.kind} has no option {name!r}")

    @classmethod
    def option_default(cls, o: Option) -> Any:
        """What the kind uses when option `o` is not given (None: nothing, or decided when applied)."""
        if o.match:
            return o.default
        param = inspect.signature(cls.__init__).parameters[o.name]
        return None if param.default is inspect.Parameter.empty else param.default

    @classmethod
    def options_doc(cls) -> str:
        """The options as documentation: appended to each kind's docstring when it registers."""
        lines = [f"Command line (`from_cli`, `verifier inject {cls.kind}`):"]
        for o in cls.options:
            bits = [b for b in (o.limits(),) if b]
            default = cls.option_default(o)
            if o.required:
                bits.append("required")
            elif default not in (None, "", False):
                bits.append(f"default {default}")
            flag = o.flag_name if o.flag else "(set by --duration)"
            lines.append(f"    {o.name} {flag}: {o.help}" + (f" ({'; '.join(bits)})" if bits else ""))
        return "\n".join(lines)

    def _checked(self, name: str, value: Any) -> Any:
        """`value` of option `name` checked against its declared bounds (for the constructors)."""
        return self.option(name).check(value)

    @classmethod
    def from_cli(cls, **given: Any) -> "Fault":
        """The fault from its options as plain values (command-line strings, or numbers; None = not
        given): each converted and checked by its `Option`, the match fields made into the `match`,
        the rest handed to the constructor."""
        known = {o.name: o for o in cls.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise FaultError(f"{cls.kind} has no option {', '.join(unknown)}; it takes {', '.join(known)}")
        values = {name: known[name].check(v) for name, v in given.items() if v is not None}
        missing = [o for o in cls.options if o.required and o.name not in values]
        if len(missing) == 1:
            raise FaultError(f"{cls.kind} needs {missing[0].flag_name}: {missing[0].help}")
        if missing:
            raise FaultError(f"{cls.kind} needs " + " and ".join(o.flag_name for o in missing))
        fields = {o.name: values.pop(o.name, o.default) for o in cls.options if o.match}
        if fields:
            values["match"] = Match(**fields)
        try:
            return cls(**values)
        except TypeError as exc:  # a positional argument left to the caller (e.g. syn-flood's dst)
            raise FaultError(f"{cls.kind}: {exc}") from None

    @classmethod
    def on_testbed(cls, bed: "Testbed", options: dict, host: str | None) -> str:
        """For the command line: fill in (in `options`) what defaults to something of testbed `bed`,
        such as the server's address, and return the host the fault acts on (`host`: --host or None)."""
        if host is not None:
            return host
        return cls.default_host if cls.default_host in bed.hosts else "server"

    @classmethod
    def acts_once(cls) -> bool:
        """Does the kind have a one-off action (`fire`), after which the command line removes it?"""
        return cls.fire is not Fault.fire

    def __init__(self) -> None:
        self.report: dict = {}

    def describe(self) -> str:
        return self.kind

    def status(self) -> dict:
        """While applied: the report so far (the same fields as `report`, counters read now)."""
        raise FaultError(f"the {self.kind} fault keeps no counters while applied")  # pragma: no cover

    def addressed(self) -> dict[str, tuple[str, ...]]:
        """Where the packets this fault forges go: {"to": destinations, "from": forged sources (an
        address or a network)}. `inject` holds every kind to one rule with it (`check_addressed`):
        destinations are hosts of the fault's own testbed, forged sources are testbed or documentation
        addresses. A kind that forges no packets of its own choosing (drop, reject, delay, an ICMP
        error to a packet's own source) has none."""
        return {}

    def fire(self, timeout: float | None = None) -> Any:
        """The one-off action of a fault that acts once; a standing fault (the default) has none."""
        return None

    def fire_limit_s(self) -> float | None:
        """The longest `fire()` may take (the command line says so when it is over 2 s), or None."""
        return None

    def apply(self, host: "Host") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def remove(self, host: "Host") -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def applied(self, host: "Host") -> ContextManager["Fault"]:
        """This fault applied to `host` for a `with` block (what `Host.inject` calls): see `inject`."""
        return inject(host, self)


@contextmanager
def inject(host: "Host", fault: Fault) -> Iterator[Fault]:
    """Apply `fault` to `host` for the duration of the block; always remove it; fill `fault.report`."""
    from netns import namespace

    if not namespace.is_testbed_namespace(host.netns) or not namespace.exists(host.netns):
        raise FaultError(f"{host.name} is not a host of a live testbed: faults apply only inside testbed namespaces")
    check_addressed(host, fault)
    fault.apply(host)
    try:
        yield fault
    finally:
        fault.remove(host)


def testbed_addresses(host: "Host") -> dict[str, str]:
    """Every global address of every host of `host`'s testbed, read in their own namespaces (the
    namespaces named with the same tag): address -> host name."""
    from netns import namespace

    bed = tag(host)
    out: dict[str, str] = {}
    for netns in namespace.list_names():
        if netns.rsplit("-", 1)[0] != bed or not namespace.is_testbed_namespace(netns):
            continue
        for link in ip_json(netns, "addr", "show"):
            for a in link.get("addr_info", []):
                if a.get("family") in ("inet", "inet6") and a.get("scope") == "global":
                    out[str(ipaddress.ip_address(a["local"]))] = netns.rsplit("-", 1)[1]
    return out


def _documentation(value: str) -> bool:
    net = ipaddress.ip_network(value, strict=False)
    return any(net.version == d.version and net.subnet_of(d) for d in DOCUMENTATION_NETWORKS)


def check_addressed(host: "Host", fault: Fault) -> None:
    """The one rule for the packets every kind forges (`Fault.addressed`): each goes to an address of
    a host of `host`'s own live testbed, and a forged source is a testbed or documentation address.
    FaultError, naming the testbed's addresses, otherwise."""
    sent = fault.addressed()
    if not any(sent.values()):
        return
    known = testbed_addresses(host)

    def hosts() -> str:
        by_host: dict[str, list[str]] = {}
        for a, h in known.items():
            by_host.setdefault(h, []).append(a)
        return "; ".join(f"{h} {' '.join(a)}" for h, a in sorted(by_host.items()))

    for a in sent.get("to", ()):
        if one_address(a) not in known:
            raise FaultError(f"{a} is not an address of this testbed ({hosts()}): a {fault.kind} fault sends "
                             f"packets only to hosts of its own testbed")
    for a in sent.get("from", ()):
        try:
            ok = _documentation(a) or str(ipaddress.ip_address(a)) in known
        except ValueError:  # neither an address nor a network
            ok = False
        if not ok:
            raise FaultError(f"forged source {a} is neither an address of this testbed nor a documentation "
                             f"address ({', '.join(map(str, DOCUMENTATION_NETWORKS))})")


def from_cli(kind: str, **options: Any) -> Fault:
    """A fault from its command-line name and options (plain str/int/float values; None = not given)."""
    if kind not in FAULT_KINDS:
        raise FaultError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    return FAULT_KINDS[kind].from_cli(**options)


def poll(check: Callable[[], Any], timeout: float, fail: Callable[[], str]) -> Any:
    """Call `check()` until it returns something true; FaultError(fail()) after `timeout` seconds."""
    from netns.waiting import wait_until

    return wait_until(check, timeout, lambda: FaultError(fail()))


# ---------------------------------------------------------------------------------------------------
# A testbed's namespaces: nft, links, neighbours, routes
# ---------------------------------------------------------------------------------------------------

def tag(host: "Host") -> str:
    """The testbed's tag: the part of every namespace name before the host's name."""
    return host.netns.rsplit("-", 1)[0]


def nft(host: "Host", ruleset: str, what: str) -> None:
    """Load an nft ruleset in the host's namespace; FaultError with nft's first line if refused."""
    # TZ=UTC: `meta time` strings are read in the local time zone; ours are written in UTC.
    res = host.run(["nft", "-f", "-"], input=ruleset, env={**os.environ, "TZ": "UTC"})
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise FaultError(f"nft refused the {what} rules on {host.name}: {first}")


def nft_counters(host: "Host", family: str, table: str) -> dict[str, int] | None:
    """Packet counts of a table's named counters; None if the table is gone."""
    res = host.run(["nft", "-j", "list", "table", family, table])
    if res.returncode != 0:
        return None
    counts: dict[str, int] = {}
    for item in json.loads(res.stdout).get("nftables", []):
        if "counter" in item:
            counts[item["counter"]["name"]] = item["counter"]["packets"]
    return counts


def nft_delete(host: "Host", family: str, table: str) -> None:
    res = host.run(["nft", "delete", "table", family, table])
    if res.returncode != 0 and "No such file" not in res.stderr:
        raise FaultError(f"could not delete nft table {family} {table} on {host.name}: {res.stderr.strip()}")


def nft_until(deadline_ns: int | None) -> str:
    """An nft condition true until `deadline_ns` (CLOCK_REALTIME, whole seconds, written in UTC)."""
    if deadline_ns is None:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(deadline_ns // 1_000_000_000))
    return f'meta time < "{stamp}" '


def deadline_after(duration_s: float | None) -> int | None:
    """The CLOCK_REALTIME deadline of a fault lasting `duration_s`, rounded up to a whole second (nft's
    `meta time` resolution), so the agent and nftables end together."""
    if duration_s is None:
        return None
    if not 0 < duration_s <= MAX_DURATION_S:  # also refuses nan
        raise FaultError(f"a fault's duration must lie in (0, {MAX_DURATION_S:g}] s, got {duration_s}")
    return math.ceil((time.time_ns() + duration_s * 1e9) / 1e9) * 1_000_000_000


def ip_json(netns: str, *args: str) -> list:
    """`ip -j ARGS` inside a testbed namespace (ip -n enters it; nothing runs in the root namespace's
    network stack)."""
    res = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise FaultError(f"ip {' '.join(args)} in {netns} failed: {res.stderr.strip()}")
    return json.loads(res.stdout or "[]")


def peer_of(host: "Host", itf: "Interface") -> dict:
    """The other end of one of the host's links, read from the peer's own namespace: its namespace,
    interface, MAC address and addresses. Every testbed link ends inside the testbed."""
    from netns import namespace

    netns = f"{tag(host)}-{itf.peer_host}"
    if not namespace.is_testbed_namespace(netns) or not namespace.exists(netns):
        raise FaultError(f"the peer of {host.name}:{itf.name} ({netns}) is not a live testbed namespace")
    (link,) = ip_json(netns, "addr", "show", "dev", itf.peer_name)
    addrs = [a["local"] for a in link.get("addr_info", []) if a.get("family") in ("inet", "inet6")]
    return {"host": itf.peer_host, "netns": netns, "ifname": itf.peer_name, "mac": link["address"],
            "addresses": addrs}


def link_of(host: "Host", ifname: str) -> dict:
    """`ip -j link show dev IFNAME` in the host's namespace (its MAC address, MTU, ...)."""
    (link,) = ip_json(host.netns, "link", "show", "dev", ifname)
    return link


def read_sysctl(netns: str, key: str) -> str:
    """A sysctl inside a testbed namespace (this thread enters it for the read)."""
    from netns import namespace

    with namespace.inside(netns):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()


def interface_facing(host: "Host", addr: str, name: str | None = None) -> "Interface":
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


def next_hop(host: "Host", dst: str) -> dict:
    """How `host` sends to `dst`: egress interface, its MAC and address, and the next hop's MAC (the
    peer's own interface address, read in the peer's namespace)."""
    (route,) = ip_json(host.netns, "route", "get", dst)
    ifname = route["dev"]
    hop = route.get("gateway") or dst
    itf = next((i for i in host.interfaces if i.name == ifname), None)
    if itf is None:
        raise FaultError(f"{host.name} routes {dst} through {ifname}, which is not a testbed link")
    peer = peer_of(host, itf)
    if ipaddress.ip_address(hop) not in {ipaddress.ip_address(a) for a in peer["addresses"]}:
        raise FaultError(f"next hop {hop} of {host.name} towards {dst} is not the peer {peer['host']} on {ifname}")
    return {"ifname": ifname, "src_mac": link_of(host, ifname)["address"], "dst_mac": peer["mac"],
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
    acted on). A subclass says what it does to a packet in `action()` (and `objects()`).

    Every rule that acts on a packet carries its own expiry (`meta time` before the deadline,
    `duration_s` from when it is applied: default `DEFAULT_LIFETIME_S`, at most `MAX_DURATION_S`),
    so a table left behind by a killed process stops acting by itself.
    """

    verdict = "drop"
    hooks: tuple[tuple[str, int], ...] = (("prerouting", -300), ("output", -300))
    options = match_options() + (
        Option("duration_s", float, "the rules stop acting after this long (nft meta time, whole seconds)", low=0,
               low_open=True, high=MAX_DURATION_S, flag=False),
    )

    def __init__(self, match: Match | None = None, *, families: list[int] | None = None,
                 duration_s: float | None = None) -> None:
        super().__init__()
        self.match = match if match is not None else Match()
        self.families = sorted(families) if families else None
        self.duration_s = self._checked("duration_s", DEFAULT_LIFETIME_S if duration_s is None else duration_s)
        self.deadline_ns: int | None = None
        self.table = ""
        self._host: "Host | None" = None

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
        return [f'{m} {nft_until(self.deadline_ns)}counter name "acted" {self.verdict}']

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
        self.deadline_ns = deadline_after(self.duration_s)
        self.table = f"{tag(host)}_{self.kind.replace('-', '_')}{new_id()}"
        nft(host, self.ruleset(), self.kind)
        self._host = host

    def counts(self, host: "Host | None" = None) -> dict[str, int]:
        """The counters so far, while the fault is applied."""
        host = host or self._host
        if host is None:
            raise FaultError(f"the {self.kind} fault is not applied")
        return nft_counters(host, "inet", self.table) or {}

    def status(self) -> dict:
        """While applied: the report so far (`matched`, and what the kind did, counted now)."""
        counts = self.counts()
        return self._report(self._host, counts)

    def _report(self, host: "Host", counts: dict[str, int]) -> dict:
        """The report from the table's counters (a kind renames `acted` to what it did)."""
        return {"fault": self.kind, "host": host.name, "match": self.match.describe(),
                "matched": counts.get("matched", 0), "acted": counts.get("acted", 0), "table": self.table,
                "until_ns": self.deadline_ns}

    def wait_matched(self, host: "Host", n: int, timeout: float = 5.0) -> dict[str, int]:
        """Poll the counters until `n` packets have matched; the counters then. FaultError after `timeout`."""
        last: dict[str, int] = {}

        def check():
            last.update(self.counts(host))
            return dict(last) if last.get("matched", 0) >= n else None

        return poll(check, timeout, lambda: f"{last.get('matched', 0)} of {n} packets matched {self.describe()} "
                                            f"within {timeout} s")

    def remove(self, host: "Host") -> dict:
        counts = nft_counters(host, "inet", self.table) or {}
        nft_delete(host, "inet", self.table)
        self._host = None
        self.report = self._report(host, counts)
        return self.report


# ---------------------------------------------------------------------------------------------------
# Faults carried out by the fault agent (verifier.faults.agent)
# ---------------------------------------------------------------------------------------------------

def agent_pid() -> int | None:
    """The pid of this process's fault agent (None before it started)."""
    from verifier.faults.agent import agent

    return agent().pid


def agent_request(op: str, what: str, **fields: Any) -> dict:
    """One request to this process's fault agent (started on first use); FaultError if it fails."""
    from verifier.faults.agent import AgentError, agent

    try:
        return agent().request(op, **fields)
    except AgentError as exc:
        raise FaultError(f"{what}: {exc}") from None


class AgentFault(Fault):
    """A fault carried out by the fault agent under one arm id. The kind's module also holds the agent
    side, an `Arm` subclass registered under the name `arm()` is called with (see `verifier.faults.arm`)."""

    def __init__(self) -> None:
        super().__init__()
        self._id = ""
        self._host: "Host | None" = None

    def arm(self, host: "Host", arm_kind: str, what: str, **fields: Any) -> None:
        """Arm the agent (kind `arm_kind`) in the host's namespace; `fields` complete the request."""
        self._id = f"{tag(host)}-{self.kind}{new_id()}"
        agent_request("arm", what, kind=arm_kind, id=self._id, netns=host.netns, **fields)
        self._host = host

    def agent_status(self) -> dict:
        """While applied: the agent's own report so far, without disarming."""
        if not self._id or self._host is None:
            raise FaultError(f"the {self.kind} fault is not applied")
        return agent_request("status", f"status of {self.kind}", id=self._id)["report"]

    def status(self) -> dict:
        """While applied: the report so far (the fields of `report`, from the agent's counts now)."""
        return self._report(self._host, self.agent_status())

    def _report(self, host: "Host", agent_report: dict) -> dict:  # pragma: no cover - interface
        """The fault's report from the agent's (the kind's own fields)."""
        raise NotImplementedError

    def disarm(self) -> dict:
        """Disarm (the agent closes the arm's sockets) and return the agent's final report."""
        self._host = None
        return agent_request("disarm", f"removing {self.kind}", id=self._id)["report"]
