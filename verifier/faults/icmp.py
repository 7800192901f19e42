"""The `icmp-unreachable` fault: matching packets are answered with a forged ICMP/ICMPv6
destination-unreachable quoting them, by the fault agent (`IcmpArm`, the agent side, is below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults.arm import PACKET_OUTGOING, Arm, Frame, flag_text, flags_match, matches
from verifier.faults.base import (DEFAULT_LIFETIME_S, MAX_DURATION_S, MAX_MATCHES, AgentFault, FaultError, Match,
                                  Option, Syn, agent_pid, match_options, poll)
from verifier.faults.drop import Drop
from verifier.wire import encode, names

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host
    from verifier.faults.agent import Agent

__all__ = ["DEFAULT_MTU", "ICMP_UNREACH_CODES", "IcmpArm", "IcmpUnreachable", "icmp_unreach_code"]

#: Friendly name -> {family: (ICMP type, code)}: the destination-unreachable (and, for "frag-needed",
#: packet-too-big) errors of the project's one ICMP name table (`verifier.wire.names.ICMP_KINDS`,
#: RFC 792/1812 and RFC 4443 codes). A name missing for a family has no equivalent there.
ICMP_UNREACH_CODES: dict[str, dict[int, tuple[int, int]]] = {
    name: by for name, by in names.ICMP_KINDS.items() if name != "ttl"}
_ICMP_ALIASES = {alias: name for alias, name in names.ICMP_ALIASES.items() if name in ICMP_UNREACH_CODES}
DEFAULT_MTU = {4: 1200, 6: 1280}  # what a "fragmentation needed" / "packet too big" announces by default
DEFAULT_MAX_ANSWERS = 64


def icmp_unreach_code(code: str | int, family: int) -> tuple[int, int] | None:
    """The (type, code) a friendly name (or a raw destination-unreachable code) means in one family,
    or None if the family has no such error."""
    if isinstance(code, int):
        return (3, code) if family == 4 else (1, code)
    name = _ICMP_ALIASES.get(code, code)
    if name not in ICMP_UNREACH_CODES:
        known = sorted(set(ICMP_UNREACH_CODES) | set(_ICMP_ALIASES))
        raise FaultError(f"unknown ICMP unreachable code {code!r}; use a number or one of {', '.join(known)}")
    return ICMP_UNREACH_CODES[name].get(family)


def _code(value: str | int) -> str | int:
    """A code as the command line gives it: a number 0-255, or a name (checked: FaultError if unknown)."""
    if isinstance(value, int) or str(value).strip().isdigit():
        code = int(value)
        if not 0 <= code <= 255:
            raise FaultError(f"an ICMP code is 0-255, not {code}")
        return code
    icmp_unreach_code(str(value), 4)  # refuses an unknown name
    return str(value)


class IcmpUnreachable(AgentFault, kind="icmp-unreachable"):
    """Answer matching packets arriving at a host (normally the router) with a forged ICMP
    destination-unreachable, sent by the long-lived fault agent (built at layer 2):

        with inject(bed.router, IcmpUnreachable("host", Syn(dport=5000), delay_ms=50)) as fault:
            ...                                    # every SYN to port 5000 gets an ICMP 50 ms later
        fault.report   # {"matched": 1, "sent": 1, "send_times_ns": [...], "match_times_ns": [...], ...}

    `code`: a friendly name ("net", "host", "protocol", "port", "frag-needed", "admin", and aliases such
    as "no-route", "address-unreachable", "port-unreachable", "admin-prohibited", "too-big"), mapped per
    family by `ICMP_UNREACH_CODES`; or a raw code number used with type 3 (IPv4) / 1 (IPv6).
    `mtu`: what a frag-needed / packet-too-big announces (default `DEFAULT_MTU`).
    `nth`: answer only the nth match (1-based); None answers every match, up to `max_answers`.
    Either way every match is dropped at this host (see below): with `nth`, the matches before and
    after the nth die silently, unanswered, and the nth gets the ICMP error.
    `delay_ms`: wait that long after the packet's arrival (kernel timestamp) before answering.
    `family`: 4 or 6 to act on one family only; by default every family the code exists in.
    `interface`: the host's interface (name or peer host) to listen and answer on; by default the one
    facing the client. The ICMP comes from that interface's address.
    `lifetime_s`: the agent closes its socket by itself after that, should nobody disarm it, and the
    drop rule stops (default 60 s, at most a day).

    While armed, the matched packets are also dropped at this host (an nft `Drop`), so that the
    destination never answers them; the agent still sees them, because packet taps see an incoming
    frame before netfilter's prerouting hook.
    """

    options = match_options(flags_default="syn") + (
        Option("code", _code, "net, host (default), port, protocol, admin, frag-needed; ICMPv6: no-route, address, "
                              "port; or a number"),
        Option("nth", int, "answer only the Kth match; every other match is dropped here silently, unanswered",
               low=1, high=MAX_MATCHES),
        Option("delay_ms", float, "wait this long before answering", low=0, high=60_000),
        Option("mtu", int, "the MTU of a frag-needed / packet-too-big", low=68, high=65535),
        Option("family", int, "act on one IP family only", choices=(4, 6), what="IP family"),
        Option("max_answers", int, "answer at most this many matches", low=1, high=MAX_MATCHES),
        Option("interface", str, "the interface (name or peer host) to listen and answer on"),
        Option("lifetime_s", float, "the fault ends by itself after this long", low=0, low_open=True,
               high=MAX_DURATION_S),
    )

    def __init__(self, code: str | int = "host", match: Match | None = None, nth: int | None = None,
                 delay_ms: float = 0, *, mtu: int | None = None, family: int | None = None,
                 max_answers: int | None = None, lifetime_s: float = DEFAULT_LIFETIME_S,
                 interface: str | None = None) -> None:
        super().__init__()
        self.code = self._checked("code", code)
        self.match = match if match is not None else Syn()
        self.nth = self._checked("nth", nth)
        self.delay_ms = self._checked("delay_ms", delay_ms)
        self.mtu = self._checked("mtu", mtu)
        self.max_answers = self._checked("max_answers", max_answers)
        self.lifetime_s = self._checked("lifetime_s", lifetime_s)
        self.interface = interface
        family = self._checked("family", family)
        wanted = [family] if family is not None else [4, 6]
        self.types = {f: tc for f in wanted if (tc := icmp_unreach_code(self.code, f)) is not None}
        if not self.types:
            raise FaultError(f"ICMP code {code!r} does not exist in IPv{family}")
        self._drop: Drop | None = None
        self._itf = None

    def describe(self) -> str:
        which = f"match #{self.nth}" if self.nth else "every match"
        delay = f" after {self.delay_ms:g} ms" if self.delay_ms else ""
        return f"answer {self.match.describe()} ({which}) with ICMP {self.code} unreachable{delay}"

    def _interface(self, host: "Host"):
        if self.interface is not None:
            try:
                return host.interface(self.interface)
            except LookupError as exc:
                raise FaultError(f"{exc}; it has {', '.join(i.name for i in host.interfaces)}") from None
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
        self.arm(host, IcmpArm.kind, f"could not arm the ICMP injector on {host.name}:{itf.name}", ifname=itf.name,
                 match=self.match.agent(), reply=reply, nth=self.nth, delay_ms=self.delay_ms,
                 max_answers=self.max_answers, lifetime_s=self.lifetime_s)
        self._drop = Drop(self.match, families=[int(f) for f in reply], duration_s=self.lifetime_s)
        try:
            self._drop.apply(host)
        except BaseException:
            self._drop = None
            self.disarm()
            raise

    def wait_sent(self, n: int = 1, timeout: float = 5.0) -> dict:
        """Poll the agent until it has sent `n` ICMP errors; FaultError after `timeout` seconds."""
        last: dict = {}

        def check():
            last.update(self.agent_status())
            return dict(last) if last["sent"] >= n else None

        return poll(check, timeout, lambda: f"the ICMP injector sent {last.get('sent')} of {n} errors within "
                                            f"{timeout} s ({last.get('matched')} packets matched)")

    def status(self) -> dict:
        """While applied: the report so far, with `dropped` from the drop rule's counter now."""
        report = self._report(self._host, self.agent_status())
        report["dropped"] = self._drop.status()["dropped"] if self._drop is not None else 0
        return report

    def _report(self, host: "Host", report: dict, dropped: int = 0) -> dict:
        sends = report["sends"]
        return {
            "fault": self.kind, "host": host.name, "interface": self._itf.name if self._itf else None,
            "match": self.match.describe(), "code": self.code, "nth": self.nth, "delay_ms": self.delay_ms,
            "matched": report["matched"], "sent": report["sent"], "dropped": dropped,
            "match_times_ns": [m["t_ns"] for m in report["matches"]],
            "send_times_ns": [s["t_ns"] for s in sends],
            "matches": report["matches"], "sends": sends, "cancelled": report["cancelled"],
            "expired": report["expired"], "errors": report["errors"], "agent_pid": agent_pid(),
        }

    def remove(self, host: "Host") -> dict:
        try:
            dropped = self._drop.remove(host)["dropped"] if self._drop is not None else 0
        finally:
            # Whatever happened to the nft table, the agent's socket must not outlive the fault: it
            # would keep the testbed's namespace alive.
            self._drop = None
            report = self.disarm()
        self.report = self._report(host, report, dropped)
        return self.report


# ---------------------------------------------------------------------------------------------------
# The agent side
# ---------------------------------------------------------------------------------------------------

class IcmpArm(Arm, kind="icmp"):
    """Answers matching segments with a forged ICMP error.

    ``{"op": "arm", "kind": "icmp", "id", "netns", "ifname", "match": {"flags": "syn", "dport": 5000, ...},
    "reply": {"4": {"type": 3, "code": 1, "mtu": null, "src": "192.0.2.1"}, "6": {...}},
    "nth": null, "delay_ms": 0, "max_answers": 64, "lifetime_s": 60}``: each received frame that
    matches counts as a match; the `nth` match (1-based, or every match when null), up to
    `max_answers`, is answered `delay_ms` after its kernel receive timestamp with an ICMP error of the
    packet's family, built at layer 2: MACs swapped, source `reply[family].src`, destination the
    packet's source, quoting the packet as received (as much as fits: `verifier.wire.encode.icmp_error`).
    A family missing from `reply` is counted but never answered. Report: ``{"matched": n, "sent": m,
    "matches": [{"t_ns", "family", "src", "sport", "dst", "dport", "seq", "flags", "answer": bool}],
    "sends": [{"t_ns", "due_ns", "match", "type", "code", "src", "dst", "quoted_len", "frame_len"}],
    "cancelled": k, "expired": bool, "errors": []}``.
    """

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        self.match = dict(req.get("match") or {})
        flags_match(self.match.get("flags"), 0)  # refuse an unknown class now, not per frame
        self.reply = {int(f): r for f, r in (req.get("reply") or {}).items()}
        self.nth = req.get("nth")
        self.delay_ns = int(float(req.get("delay_ms") or 0) * 1_000_000)
        self.max_answers = int(req.get("max_answers") or DEFAULT_MAX_ANSWERS)
        self.matches: list[dict] = []
        self.answers = 0  # scheduled, whether sent yet or not
        self.open([self.ifname])

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype == PACKET_OUTGOING:
            return
        t = Frame.parse(data)
        if t is None or not matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport):
            return
        index = len(self.matches)
        answer = (t.family in self.reply and self.answers < self.max_answers
                  and (self.nth is None or index + 1 == int(self.nth)))
        self.matches.append({"t_ns": ts_ns, "family": t.family, "src": t.src, "sport": t.sport, "dst": t.dst,
                             "dport": t.dport, "seq": t.seq, "flags": flag_text(t.flags), "answer": answer})
        if not answer:
            return
        self.answers += 1
        spec = self.reply[t.family]
        mtu = int(spec.get("mtu") or 0) or (1280 if t.family == 6 else 0)
        # Quoting the packet as received, without Ethernet padding.
        error = encode.icmp_error(spec["src"], t.src, spec["type"], spec["code"], bytes(t.ip), mtu=mtu)
        frame = encode.ethernet(t.eth_src, t.eth_dst, error)
        quoted = len(error) - (28 if t.family == 4 else 48)
        record = {"due_ns": ts_ns + self.delay_ns, "match": index, "type": spec["type"], "code": spec["code"],
                  "src": spec["src"], "dst": t.src, "quoted_len": quoted, "frame_len": len(frame)}
        # Built now, sent at its time: the delay is not stretched by the building.
        agent.schedule(record["due_ns"], self, ifname, frame, record)

    def report(self) -> dict:
        return {**super().report(), "matched": len(self.matches), "matches": self.matches}
