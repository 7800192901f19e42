"""Readable expectations on a Trace, with packetdrill-style failure reports.

    expect(trace).connection(dport=8080).handshake().closed_first_by("server")
    expect(trace).connection(dport=9).refused().syn_count(1)
    expect(trace).connection(dport=81).icmp("host").syn_schedule("linux")

Verdicts about how the attempt went (`handshake`, `refused`, `reset_by`) come from the attempt
machine (`verifier.analysis.attempt`), the same one `verifier replay` and its `--expect` language
use: a RST the client's stack would drop (no ACK bit, a wrong ACK, out of window) is not a
refusal or a reset here either, and the report says why. Every check returns the expectation so
calls chain. A failed check raises
`ExpectationFailed` (an AssertionError, so pytest shows it as a test failure)
whose message says which check failed and why, shows the EXPECTED exchange
next to the CAPTURED one (the ladder of the primary interface, with `>>` on
the packet that broke the expectation) and names the capture file and the
Wireshark frame number to look at.
"""

from __future__ import annotations

from pathlib import PurePath

from verifier.analysis.conditions import judge_syns
from verifier.analysis.schedules import LinuxProfile, StevensProfile, SynSchedule
from verifier.analysis.trace import Connection, Event, Trace, format_endpoint, format_events
from verifier.wire.names import icmp_code, icmp_description, icmp_kind

__all__ = ["ConnectionExpectation", "ExpectationFailed", "TraceExpectation", "expect"]

_SIDES = {"client": "c>s", "server": "s>c"}

# pytest hides this module's frames: a failed expectation shows its report, not our source.
__tracebackhide__ = True


class ExpectationFailed(AssertionError):
    """An expectation on a captured exchange did not hold; the message is the report.

    `connection` and `event` (the offending packet, if one is to blame) are
    kept for callers that want to dig further, e.g. dissect that packet; `trace` is the
    connection's trace (the pytest plugin draws the connection's ladder beside `trace.source`).
    """

    def __init__(self, message: str, *, connection: Connection | None = None, event: Event | None = None,
                 trace: Trace | None = None) -> None:
        super().__init__(message)
        self.connection = connection
        self.event = event
        self.trace = trace  # the connection's trace (its `source`: the pcap), when there is a connection


def expect(trace: Trace) -> TraceExpectation:
    """Start expectations on a trace: `expect(capture.trace())` or `expect(load_trace(path))`."""
    return TraceExpectation(trace)


def _filters_str(**filters: object) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None) or "no filter"


def _pcap_line(trace: Trace) -> str:
    return f"pcap: {trace.source}" if trace.source else "pcap: (trace not loaded from a file)"


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


# Long connections would drown the report: show the start of the ladder and
# the neighbourhood of the offending packet.
_HEAD_LINES = 30
_CONTEXT_LINES = 5


def _excerpt(lines: list[str], mark: int | None) -> list[str]:
    if len(lines) <= _HEAD_LINES + 2 * _CONTEXT_LINES + 2:
        return lines
    keep = set(range(_HEAD_LINES))
    if mark is not None:
        keep |= set(range(max(mark - _CONTEXT_LINES, 0), min(mark + _CONTEXT_LINES + 1, len(lines))))
    out: list[str] = []
    skipped = 0
    for i, line in enumerate(lines):
        if i in keep:
            if skipped:
                out.append(f"  ... {skipped} more packet(s) ...")
                skipped = 0
            out.append(line)
        else:
            skipped += 1
    if skipped:
        out.append(f"  ... {skipped} more packet(s) ...")
    return out


class TraceExpectation:
    """Expectations about a whole trace: which connections it contains."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def _fail(self, title: str) -> ExpectationFailed:
        lines = [title, "", "connections seen:" if self.trace.connections else "connections seen: none"]
        lines += [f"  {c.describe()}" for c in self.trace.connections]
        if self.trace.unmatched_icmp:
            lines.append(f"  (+ {len(self.trace.unmatched_icmp)} ICMP error(s) quoting no seen connection)")
        lines += ["", _pcap_line(self.trace)]
        return ExpectationFailed("\n".join(lines))

    def connection(
        self,
        dport: int | None = None,
        sport: int | None = None,
        src: str | None = None,
        dst: str | None = None,
        family: int | None = None,
        index: int = 0,
    ) -> ConnectionExpectation:
        """The `index`-th connection (in time order) matching the filters.

        sport/src are the client's port/address, dport/dst the server's.
        """
        filters = _filters_str(dport=dport, sport=sport, src=src, dst=dst, family=family)
        found = self.trace.find(dport=dport, sport=sport, src=src, dst=dst, family=family)
        if not found:
            raise self._fail(f"expect.connection({filters}) failed: no such connection in the trace")
        if index >= len(found):
            raise self._fail(
                f"expect.connection({filters}, index={index}) failed: only {len(found)} "
                f"connection(s) match, so there is no index {index}"
            )
        return ConnectionExpectation(found[index], self.trace)

    def connection_count(
        self,
        n: int,
        *,
        dport: int | None = None,
        sport: int | None = None,
        src: str | None = None,
        dst: str | None = None,
        family: int | None = None,
    ) -> TraceExpectation:
        """Exactly n connections (attempts) match the filters."""
        found = self.trace.find(dport=dport, sport=sport, src=src, dst=dst, family=family)
        if len(found) != n:
            filters = _filters_str(dport=dport, sport=sport, src=src, dst=dst, family=family)
            raise self._fail(f"connection_count({n}, {filters}) failed: {len(found)} connection(s) match")
        return self


class ConnectionExpectation:
    """Chainable checks on one connection, judged on its primary interface."""

    def __init__(self, connection: Connection, trace: Trace) -> None:
        self.connection = connection
        self.trace = trace

    @property
    def events(self) -> list[Event]:
        return self.connection.events

    # ---- reporting

    def _fail(
        self,
        check: str,
        why: str,
        expected: list[str],
        *,
        mark: Event | None = None,
        all_interfaces: bool = False,
    ) -> ExpectationFailed:
        c = self.connection
        lines = [
            f"{check} failed: {why}",
            f"connection {c.describe()}",
            f"ISNs (absolute): client {_or_dash(c.isn_client)}, server {_or_dash(c.isn_server)}",
        ]
        siblings = [o for o in self.trace.connections if o is not c and {o.client, o.server} == {c.client, c.server}]
        if siblings:
            lines.append(
                f"note: {len(siblings)} other attempt(s) on this 4-tuple "
                f"({', '.join('#' + str(o.number) for o in siblings)}); choose with index="
            )
        lines += ["", "expected (c>s = client to server, seq/ack relative to each side's ISN):"]
        lines += [f"  {e}" for e in expected]
        if all_interfaces:
            where = "captured on all interfaces:"
        else:
            others = c.interfaces[1:]
            where = f"captured on {c.primary_interface} (primary interface"
            where += f"; also seen on {', '.join(others)}):" if others else "):"
        lines += ["", where]
        events = c.all_events() if all_interfaces else c.events
        ladder = format_events(events, mark=mark, family=c.family).split("\n")
        lines += _excerpt(ladder, events.index(mark) if mark in events else None)
        lines.append("")
        if mark is not None:
            # The frame number is of the file the trace was read from (the evidence file with every
            # interface), not of a one-host view written beside it, whose numbering differs.
            of = f" of {PurePath(str(self.trace.source)).name}" if self.trace.source else ""
            lines.append(
                f"offending packet: index {mark.packet_index} in the capture "
                f"(Wireshark frame {mark.packet_index + 1}{of}) on {mark.iface}"
            )
        lines.append(_pcap_line(self.trace))
        return ExpectationFailed("\n".join(lines), connection=c, event=mark, trace=self.trace)

    def _syn(self, check: str, expected: list[str]) -> Event:
        syn = self.connection.first("SYN", "c>s")
        if syn is None:
            why = "no SYN from the client"
            if self.connection.partial:
                why += " (the capture joined this connection mid-stream)"
            raise self._fail(check, why, expected)
        return syn

    def _after(self, ev: Event) -> list[Event]:
        events = self.connection.events
        return events[events.index(ev) + 1 :]

    # ---- checks

    def handshake(self) -> ConnectionExpectation:
        """Client SYN, server SYN-ACK with ack=1, client ACK seq=1 ack=1, in that order (or a
        simultaneous open: the client's SYN-ACK ack=1 in place of its ACK); the attempt machine
        must read the attempt as established."""
        check = "handshake()"
        expected = [
            "c>s  S    seq=0",
            "s>c  SA   seq=0 ack=1        (acknowledges the client's ISN + 1)",
            "c>s  A    seq=1 ack=1",
        ]
        syn = self._syn(check, expected)
        later = self._after(syn)
        synack = next((e for e in later if e.kind == "SYN-ACK" and e.direction == "s>c" and e.event == "SYNACK_S"),
                      None)
        bad = next((e for e in later if e.event == "SYNACK_S_BAD"), None)
        if synack is None and bad is not None:
            raise self._fail(
                check,
                f"the SYN-ACK acknowledges {bad.ack} (relative; absolute {bad.ack_abs}), expected 1 = client ISN "
                f"{self.connection.isn_client} + 1: the client's stack answers it with RST (RFC 9293 3.10.7.3)",
                expected,
                mark=bad,
            )
        if synack is None:
            reply = next((e for e in later if e.direction == "s>c" or e.kind == "ICMP"), None)
            if reply is None:
                why = f"the server never answered the SYN (sent at t={syn.t:.6f})"
            elif reply.kind == "RST":
                why = f"the server answered with {reply.flags} (connection refused) instead of SYN-ACK"
            elif reply.kind == "ICMP":
                name = icmp_description(self.connection.family, reply.icmp_type, reply.icmp_code)
                why = (
                    f"an ICMP error came back instead of a SYN-ACK: type={reply.icmp_type} "
                    f"code={reply.icmp_code} ({name}) from {reply.icmp_from}"
                )
            else:
                why = f"the server's first reply is {reply.flags}, not a SYN-ACK"
            raise self._fail(check, why, expected, mark=reply)
        reply = next((e for e in self._after(synack) if e.direction == "c>s" and e.kind != "SYN"), None)
        if reply is None:
            raise self._fail(check, "the client never acknowledged the SYN-ACK", expected)
        # a simultaneous open (RFC 9293 figure 8): the client's SYN-ACK (seq 0) completes the handshake
        simultaneous = reply.event == "SYNACK_C" and reply.seq == 0 and reply.ack == 1
        if not simultaneous and (reply.ack is None or "R" in reply.flags or reply.seq != 1 or reply.ack != 1) \
                or not self.connection.machine.established:
            raise self._fail(
                check,
                f"the client answered the SYN-ACK with {reply.flags} seq={reply.seq} "
                f"ack={'-' if reply.ack is None else reply.ack}, expected an ACK with seq=1 ack=1",
                expected,
                mark=reply,
            )
        return self

    def refused(self) -> ConnectionExpectation:
        """SYN answered by RST/ACK with ack=1 (client ISN + 1) and no SYN-ACK."""
        check = "refused()"
        expected = [
            "c>s  S    seq=0",
            "s>c  RA   seq=0 ack=1        (RST/ACK for the SYN; no SYN-ACK)",
        ]
        syn = self._syn(check, expected)
        synack = self.connection.first("SYN-ACK", "s>c")
        if synack is not None:
            raise self._fail(
                check, "the server answered with SYN-ACK: the port accepted the connection", expected, mark=synack
            )
        rsts = [e for e in self._after(syn) if e.kind == "RST" and e.direction == "s>c"]
        if self.connection.outcome == "refused":
            return self
        if not rsts:
            icmp = self.connection.icmp_events()
            why = "no RST from the server"
            if icmp:
                e = icmp[0]
                why += (
                    f"; an ICMP error came back instead: type={e.icmp_type} code={e.icmp_code} "
                    f"({icmp_description(self.connection.family, e.icmp_type, e.icmp_code)}) from {e.icmp_from}"
                )
            raise self._fail(check, why, expected, mark=icmp[0] if icmp and icmp[0] in self.events else None)
        rst = rsts[0]
        if rst.ack is None:
            why = (f"the server's RST has no ACK flag ({rst.flags}): a client in SYN-SENT drops it "
                   f"(RFC 9293 3.10.7.3), so the attempt is {self.connection.outcome}, not refused")
        elif rst.ack != 1:
            why = (f"the server's RST acknowledges {rst.ack} (relative; absolute {rst.ack_abs}), expected 1 = client "
                   f"ISN {self.connection.isn_client} + 1: a client in SYN-SENT drops it (RFC 9293 3.10.7.3), so "
                   f"the attempt is {self.connection.outcome}, not refused")
        else:
            why = f"the attempt machine reads the attempt as {self.connection.outcome} ({self.connection.detail})"
        raise self._fail(check, why, expected, mark=rst)

    def syn_count(self, n: int) -> ConnectionExpectation:
        """Exactly n client SYNs with the connection's ISN (first + retransmissions)."""
        syns = self.connection.syns()
        if len(syns) != n:
            times = ", ".join(f"{e.t:.6f}" for e in syns) or "none"
            gaps = ", ".join(f"{b.t - a.t:.3f}" for a, b in zip(syns, syns[1:]))
            why = f"saw {len(syns)} SYN(s), expected {n}; SYNs at t={times}"
            if gaps:
                why += f" (gaps {gaps} s)"
            expected = [f"c>s  S    seq=0          x {n} (1 SYN + {max(n - 1, 0)} retransmission(s), same ISN)"]
            raise self._fail(f"syn_count({n})", why, expected, mark=syns[n] if len(syns) > n else None)
        return self

    def no_rst(self) -> ConnectionExpectation:
        """No RST in either direction."""
        rst = self.connection.first("RST")
        if rst is not None:
            side = "client" if rst.from_client else "server"
            raise self._fail(
                "no_rst()",
                f"the {side} sent {rst.flags} at t={rst.t:.6f}",
                ["no RST in either direction"],
                mark=rst,
            )
        return self

    def reset_by(self, side: str) -> ConnectionExpectation:
        """A RST from `side` ("client" or "server")."""
        direction = self._direction(side)
        check = f"reset_by({side!r})"
        accepted = ("RST_C",) if side == "client" else ("RST_S",)
        if any(e.event in accepted for e in self.connection.select("RST", direction)):
            return self
        ignored = self.connection.first("RST", direction)
        other = ignored or self.connection.first("RST")
        why = f"no RST from the {side}"
        if ignored is not None:
            why = (f"the {side}'s {ignored.flags} at t={ignored.t:.6f} changes nothing for TCP: "
                   f"{ignored.note or ignored.event}")
        elif other is not None:
            why += f"; the {'client' if other.from_client else 'server'} sent {other.flags} at t={other.t:.6f}"
        raise self._fail(check, why, [f"{direction}  R    (a RST from the {side} that the peer accepts)"], mark=other)

    def fin_from(self, side: str) -> ConnectionExpectation:
        """A FIN from `side` ("client" or "server"), whoever closed first: after a four-segment close
        both `fin_from("client")` and `fin_from("server")` hold. To say which side closed first, use
        `closed_first_by`."""
        direction = self._direction(side)
        if self.connection.first("FIN", direction) is None:
            why = f"no FIN from the {side}"
            rst = self.connection.first("RST", direction)
            if rst is not None:
                why += f"; it sent {rst.flags} at t={rst.t:.6f} instead"
            raise self._fail(
                f"fin_from({side!r})", why, [f"{direction}  F    (a FIN from the {side})"], mark=rst
            )
        return self

    def closed_first_by(self, side: str) -> ConnectionExpectation:
        """`side` ("client" or "server") closed the connection first: its FIN was sent before the
        peer's (the active close, RFC 9293 3.6), or the peer sent none.

        Causality decides where it can: a FIN that acknowledges the peer's FIN was sent after that
        FIN arrived, so the peer closed first. When neither FIN acknowledges the other (a
        simultaneous close, the FINs crossing), the earlier one counts, each FIN timed by its
        earliest copy on any interface (the one nearest its sender: a testbed's interfaces share
        one clock). A RST from the peer before `side`'s FIN means the peer ended it first: fails."""
        direction = self._direction(side)
        peer = "server" if side == "client" else "client"
        check = f"closed_first_by({side!r})"
        expected = [f"{direction}  F    (the {side}'s FIN comes first)",
                    f"{_SIDES[peer]}  F    (the {peer}'s FIN, if any, acknowledges it)"]
        everything = self.connection.all_events()
        mine = next((e for e in everything if e.kind == "FIN" and e.direction == direction), None)
        theirs = next((e for e in everything if e.kind == "FIN" and e.direction == _SIDES[peer]), None)
        peer_rst = next((e for e in everything if e.kind == "RST" and e.direction == _SIDES[peer]), None)
        if mine is None:
            why = f"no FIN from the {side}"
            if theirs is not None:
                why += f"; the {peer} sent FIN at t={theirs.t:.6f} on {theirs.iface}"
            rst = next((e for e in everything if e.kind == "RST" and e.direction == direction), None)
            if rst is not None:
                why += f"; the {side} sent {rst.flags} at t={rst.t:.6f}"
            raise self._fail(check, why, expected, mark=theirs or rst, all_interfaces=True)
        if peer_rst is not None and peer_rst.ts_ns < mine.ts_ns:
            raise self._fail(check, f"the {peer} reset the connection ({peer_rst.flags} at t={peer_rst.t:.6f}) "
                                    f"before the {side}'s FIN at t={mine.t:.6f}", expected, mark=peer_rst,
                             all_interfaces=True)
        if theirs is None:
            return self

        def acknowledges(a: Event, b: Event) -> bool:
            # a's ack covers b's FIN (b's seq + its data + 1 for the FIN); both relative to b's sender's ISN
            return a.ack is not None and b.seq is not None and a.ack - (b.seq + b.payload_len + 1) >= 0

        if acknowledges(mine, theirs):
            raise self._fail(
                check,
                f"the {peer} closed first: the {side}'s FIN (t={mine.t:.6f} on {mine.iface}) acknowledges the {peer}'s "
                f"FIN (ack={mine.ack}), so it was sent after the {peer}'s FIN (t={theirs.t:.6f} on {theirs.iface}) "
                f"arrived", expected, mark=theirs, all_interfaces=True)
        if acknowledges(theirs, mine) or mine.ts_ns < theirs.ts_ns:
            return self
        raise self._fail(
            check,
            f"a simultaneous close (neither FIN acknowledges the other), and the {peer}'s FIN (t={theirs.t:.6f} "
            f"on {theirs.iface}) came before the {side}'s (t={mine.t:.6f} on {mine.iface})",
            expected, mark=theirs, all_interfaces=True)

    def icmp(self, kind: str | None = None, *, type: int | None = None,  # noqa: A002
             code: int | None = None) -> ConnectionExpectation:
        """An ICMP/ICMPv6 error quoting this connection, on any interface.

        `kind` names the error the same way for both families: "net", "host", "port", "protocol",
        "frag-needed", "admin", "ttl", ... (`verifier.wire.names.ICMP_KINDS`, with aliases such as
        "no-route", "address", "admin-prohibited"): `icmp("host")` is type 3 code 1 over IPv4 and
        type 1 code 3 (address unreachable) over IPv6. `type`/`code` select by number instead (they
        differ between ICMP and ICMPv6). With neither, any ICMP error passes. A name the
        connection's family has no equivalent of ("protocol" over IPv6) raises ValueError."""
        fam = self.connection.family
        if kind is not None and not isinstance(kind, str):
            raise TypeError(f"icmp() takes an error name such as 'host', or type=/code= numbers, not {kind!r}")
        if kind is not None and (type is not None or code is not None):
            raise TypeError("icmp() takes an error name or type=/code= numbers, not both")
        if kind is not None:
            want_type, want_code = icmp_code(kind, fam)  # ValueError for an unknown name or family
            canonical = icmp_kind(fam, want_type, want_code)
            found = [e for e in self.connection.icmp_events()
                     if icmp_kind(fam, e.icmp_type, e.icmp_code) == canonical]
        else:
            found = [
                e
                for e in self.connection.icmp_events()
                if (type is None or e.icmp_type == type) and (code is None or e.icmp_code == code)
            ]
        if not found:
            want = f"ICMP{'v6' if fam == 6 else ''} error"
            if kind is not None:
                want += f" {kind!r} (type={want_type} code={want_code}, {icmp_description(fam, want_type, want_code)})"
            if type is not None:
                want += f" type={type}"
            if code is not None:
                want += f" code={code}"
                if type is not None:
                    want += f" ({icmp_description(fam, type, code)})"
            attached = self.connection.icmp_events()
            why = f"no {want} attached to this connection"
            if attached:
                why += "; attached: " + ", ".join(f"type={e.icmp_type} code={e.icmp_code}" for e in attached)
            unmatched = self.trace.unmatched_icmp
            if unmatched:
                why += f"; {len(unmatched)} ICMP error(s) in the trace quote other flows: " + ", ".join(
                    f"type={p.icmp_type} code={p.icmp_code} from {p.src} quoting "
                    f"{format_endpoint((p.quoted.src, p.quoted.sport or 0))} > "
                    f"{format_endpoint((p.quoted.dst, p.quoted.dport or 0))}"
                    for p in unmatched[:3]
                    if p.quoted is not None
                )
            raise self._fail(
                f"icmp({kind!r})" if kind is not None else f"icmp(type={type}, code={code})",
                why,
                [f"s>c  {want} quoting a packet of this connection"],
                all_interfaces=True,
            )
        return self

    def syn_schedule(self, model: str | LinuxProfile | StevensProfile | SynSchedule = "linux",
                     **settings: int) -> ConnectionExpectation:
        """The client's SYNs (first and retransmissions) follow a SYN-retransmission model.

        `model`: "linux" (the kernel's rule, `LinuxProfile`), "stevens" (the book's 4.4BSD model), or a
        profile or `SynSchedule` of your own. For "linux" the settings are the client namespace's
        sysctls when the trace came from a testbed (`capture.trace()` reads them; see
        `Trace.client_sysctls`), else the kernel's defaults; `settings` (`syn_retries`,
        `linear_timeouts`, `syncnt` (the socket's TCP_SYNCNT), `rto_init_ms`, `rto_max_ms`) override
        them. The judgment is `--expect "... follows linux"`'s (`conditions.judge_syns`): a timed-out
        attempt must show every predicted SYN in time, an answered one its SYNs up to the answer."""
        if isinstance(model, SynSchedule):
            schedule = model
        elif isinstance(model, (LinuxProfile, StevensProfile)):
            schedule = model.schedule()
        elif model == "linux":
            schedule = LinuxProfile.for_capture(self.trace.client_sysctls, **settings).schedule()
        elif model == "stevens":
            schedule = StevensProfile().schedule()
        else:
            raise ValueError(f"model must be 'linux', 'stevens', a profile or a SynSchedule, not {model!r}")
        if settings and model != "linux":
            raise TypeError(f"settings are for the 'linux' model only, not {model!r}")
        ok, lines = judge_syns(schedule, self.connection)
        if ok:
            return self
        syns = self.connection.syns()
        extra = syns[schedule.syn_count] if len(syns) > schedule.syn_count else None
        raise self._fail(
            f"syn_schedule({model!r})" if isinstance(model, str) else "syn_schedule(...)",
            "the SYNs do not follow the model\n" + "\n".join("  " + ln for ln in lines),
            [f"c>s  S    seq=0          at {', '.join(f'{t:g}' for t in schedule.syn_times)} s"],
            mark=extra)

    @staticmethod
    def _direction(side: str) -> str:
        try:
            return _SIDES[side]
        except KeyError:
            raise ValueError(f"side must be 'client' or 'server', not {side!r}") from None

    def __repr__(self) -> str:
        return f"<ConnectionExpectation {self.connection.describe()}>"
