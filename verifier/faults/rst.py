"""The `rst` fault: a RST injected into an established connection, at RCV.NXT, elsewhere in the window
or outside it. The fault agent watches the connection to learn its sequence numbers (`WatchArm`, the
agent side, is below)."""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING

from verifier.faults.arm import (PACKET_OUTGOING, TCP_ACK, TCP_SYN, Arm, Frame, flag_text, flags_match, mac_text,
                                 matches, seq_after)
from verifier.faults.base import (DEFAULT_LIFETIME_S, MAX_DURATION_S, AgentFault, FaultError, Match, Option,
                                  agent_request, interface_facing, match_options, one_address, poll)
from verifier.wire import encode

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host
    from verifier.faults.agent import Agent

__all__ = ["OUT_OF_WINDOW_OFFSET", "RST_POSITIONS", "Rst", "WatchArm"]

RST_POSITIONS = ("exact", "in-window", "out-of-window")
# Out of window for any receiver: behind RCV.NXT by more than the largest possible window (65535 << 14
# < 2**30), yet "before" it in sequence space (less than 2**31 away), so never mistaken for ahead.
OUT_OF_WINDOW_OFFSET = -(2 ** 30)


class Rst(AgentFault, kind="rst"):
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
    The match names the connection: any segment matching in either direction.

    The command line fires once, right after applying, waiting up to `wait_s` for a segment (which
    must end within the fault's `lifetime_s`). Report (also `status()` while applied): `sends` (each
    RST: seq, rcv_nxt, offset, window), `segments` seen, `conn`.
    """

    options = match_options() + (
        Option("to", one_address, "the endpoint (address or host name) that receives the RST", required=True,
               address="one"),
        Option("at", str, "exact (RCV.NXT: resets), in-window (draws a challenge ACK) or out-of-window",
               choices=RST_POSITIONS, what="RST position"),
        Option("offset", int, "sequence offset from RCV.NXT instead of --at", low=-2**31, high=2**31 - 1),
        Option("ack", bool, "send RST+ACK"),
        Option("interface", str, "the interface (name or peer host) to watch and send on"),
        Option("wait_s", float, "how long to wait to learn the sequence numbers from traffic", low=0,
               high=MAX_DURATION_S),
        Option("lifetime_s", float, "the fault ends by itself after this long", low=0, low_open=True,
               high=MAX_DURATION_S),
    )

    def __init__(self, match: Match, to: str, *, at: str = "exact", offset: int | None = None, ack: bool = False,
                 interface: str | None = None, wait_s: float = 5.0, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        super().__init__()
        self.match = match
        self.to = self._checked("to", to)
        self.at = self._checked("at", at)
        self.offset = self._checked("offset", offset)
        self.ack = bool(self._checked("ack", ack))
        self.interface = interface
        self.wait_s = self._checked("wait_s", wait_s)
        self.lifetime_s = self._checked("lifetime_s", lifetime_s)
        if self.wait_s > self.lifetime_s:
            raise FaultError(f"a wait of {self.wait_s:g} s (wait_s, --wait-s) is longer than the fault lives "
                             f"({self.lifetime_s:g} s: lifetime_s, --duration)")
        self._itf = None
        self.sent: list[dict] = []

    def addressed(self) -> dict[str, tuple[str, ...]]:
        return {"to": (self.to,)}

    def fire_limit_s(self) -> float | None:
        return self.wait_s

    def describe(self) -> str:
        where = self.at if self.offset is None else f"RCV.NXT{self.offset:+d}"
        return f"RST ({where}) to {self.to} in the connection of {self.match.describe()}"

    def apply(self, host: "Host") -> None:
        self._itf = interface_facing(host, self.to, self.interface)
        self.arm(host, WatchArm.kind, f"could not watch {host.name}:{self._itf.name}", ifname=self._itf.name,
                 match=self.match.agent(), lifetime_s=self.lifetime_s)

    def wait_learned(self, timeout: float | None = None) -> dict:
        """Wait until the agent has seen a segment of the connection; its report so far."""
        timeout = self.wait_s if timeout is None else timeout
        return poll(lambda: (s := self.status())["conn"] and s, timeout,
                    lambda: f"no segment of a connection matching {self.match.describe()} crossed "
                            f"{self._itf.name if self._itf else '?'} within {timeout} s: the RST needs its "
                            f"sequence numbers; send some traffic on the connection")

    def fire(self, at: str | None = None, offset: int | None = None, timeout: float | None = None) -> dict:
        """Send one RST now (after waiting up to `timeout` for the connection's first segment)."""
        at = self._checked("at", at or self.at)
        self.wait_learned(timeout)
        offset = self.offset if offset is None and at == self.at else offset
        sent = agent_request("rst", f"RST to {self.to}", id=self._id, to=self.to, at=at, offset=offset,
                             ack=self.ack)["sent"]
        self.sent.append(sent)
        return sent

    def _report(self, host: "Host", report: dict) -> dict:
        return {"fault": self.kind, "host": host.name, "interface": self._itf.name if self._itf else None,
                "match": self.match.describe(), "to": self.to, "conn": report["conn"],
                "segments": report["segments"], "sent": report["sent"], "sends": report["sends"],
                "sides": report["sides"], "expired": report["expired"], "errors": report["errors"]}

    def remove(self, host: "Host") -> dict:
        self.report = self._report(host, self.disarm())
        return self.report


# ---------------------------------------------------------------------------------------------------
# The agent side
# ---------------------------------------------------------------------------------------------------

class WatchArm(Arm, kind="watch"):
    """Follows one TCP connection on an interface, to send RSTs with the right sequence numbers.

    ``{"op": "arm", "kind": "watch", "id", "netns", "ifname", "match", "lifetime_s"}`` follows the
    first TCP connection one of whose segments matches the match (in either direction), as seen on
    the interface, both directions: each side's highest sequence number sent, last acknowledgment,
    window (scaled once both SYNs were seen), MAC addresses and TTL. Then
    ``{"op": "rst", "id", "to": ADDR, "at": "exact"|"in-window"|"out-of-window", "offset": null}``
    sends a RST to the side whose address is ADDR, as if from its peer, with sequence number the
    receiver's RCV.NXT (the peer's highest sequence number seen, or the receiver's own last
    acknowledgment if later) plus `offset` (default: 0, half the receiver's window, -2**30).
    Report: ``{"conn": {...}, "segments": n, "sides": {...}, "sends": [...]}``.
    """

    ops = ("rst",)

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        self.match = dict(req.get("match") or {})
        flags_match(self.match.get("flags"), 0)
        self.conn: dict | None = None  # {"family", "a": [addr, port], "b": [addr, port]}
        self.segments = 0
        self.sides: dict[str, dict] = {}  # "addr|port" -> what that side last sent
        self.open([self.ifname])

    @staticmethod
    def _key(addr: str, port: int) -> str:
        return f"{ipaddress.ip_address(addr)}|{port}"

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        t = Frame.parse(data)
        if t is None:
            return
        src, dst = self._key(t.src, t.sport), self._key(t.dst, t.dport)
        if self.conn is None:
            if not (matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport)
                    or matches(self.match, t.flags, t.dst, t.dport, t.src, t.sport)):
                return
            self.conn = {"family": t.family, "a": [t.src, t.sport], "b": [t.dst, t.dport], "first_ns": ts_ns}
        elif {src, dst} != {self._key(*self.conn["a"]), self._key(*self.conn["b"])}:
            return
        self.segments += 1
        side = self.sides.setdefault(src, {"addr": t.src, "port": t.sport, "nxt": None, "isn": None, "wscale": None,
                                           "segments": 0})
        side["segments"] += 1
        if t.flags & TCP_SYN:
            side["isn"] = t.seq
            side["wscale"] = t.wscale()
        end = t.seq_end()
        if side["nxt"] is None or seq_after(end, side["nxt"]):
            side["nxt"] = end
        if t.flags & TCP_ACK:
            side["ack"] = t.ack
        side.update(seq=t.seq, flags=flag_text(t.flags), len=t.payload_len, window=t.window,
                    syn_window=bool(t.flags & TCP_SYN), ttl=t.ttl, t_ns=ts_ns,
                    outgoing=pkttype == PACKET_OUTGOING, eth_src=mac_text(t.eth_src), eth_dst=mac_text(t.eth_dst))

    def op_rst(self, agent: "Agent", req: dict) -> dict:
        """Send one RST to side `to` (see the class docstring); {"sent": what was sent}."""
        if self.conn is None:
            raise ValueError("no segment of the connection seen yet: nothing to learn its sequence numbers from")
        to = ipaddress.ip_address(req["to"])
        keys = [self._key(*self.conn["a"]), self._key(*self.conn["b"])]
        mine = [k for k in keys if ipaddress.ip_address(k.split("|")[0]) == to]
        if len(mine) != 1:
            raise ValueError(f"{to} is not one end of the watched connection {self.conn['a']} <-> {self.conn['b']}")
        rkey = mine[0]
        pkey = keys[1 - keys.index(rkey)]
        r, p = self.sides.get(rkey), self.sides.get(pkey)
        # RCV.NXT of the receiver: what its peer has sent so far, or what it last acknowledged if later.
        candidates = [v for v in ((p or {}).get("nxt"), (r or {}).get("ack")) if v is not None]
        if not candidates:
            raise ValueError("neither a segment from the peer nor an acknowledgment from the receiver seen yet")
        rcv_nxt = candidates[0]
        for v in candidates[1:]:
            if seq_after(v, rcv_nxt):
                rcv_nxt = v
        window, scaled = None, False
        if r is not None and "window" in r:
            window = r["window"]
            both = r.get("wscale") is not None and p is not None and p.get("wscale") is not None
            if both and not r["syn_window"]:  # the window field of a SYN is never scaled (RFC 7323)
                window <<= r["wscale"]
                scaled = True
        at = req.get("at") or "exact"
        offset = req.get("offset")
        if offset is None:
            if at == "exact":
                offset = 0
            elif at == "in-window":
                if not window or window < 2:
                    raise ValueError(f"the receiver's window is unknown or below 2 ({window}): no in-window "
                                     f"sequence number other than RCV.NXT exists")
                offset = max(1, window // 2)
            elif at == "out-of-window":
                offset = OUT_OF_WINDOW_OFFSET
            else:
                raise ValueError(f"unknown RST position {at!r}: use exact, in-window or out-of-window")
        seq = (rcv_nxt + int(offset)) & 0xFFFFFFFF
        if r is not None and r["outgoing"]:
            raise ValueError(f"the receiver {to} is this host itself: a RST sent from here would leave it; "
                             f"apply the fault to its peer or to a router on the path")
        # Layer 2: as frames towards the receiver leave this interface, or else mirrored from its own.
        toward = r is not None and not r["outgoing"]
        if p is not None and p["outgoing"]:
            src_mac, dst_mac = p["eth_src"], p["eth_dst"]
        elif toward:
            src_mac, dst_mac = r["eth_dst"], r["eth_src"]
        else:
            raise ValueError("no frame to or from the receiver seen on this interface: cannot address the RST")
        ttl = p["ttl"] if p is not None and p["outgoing"] else 64
        paddr, pport = pkey.split("|")
        raddr, rport = rkey.split("|")
        flags = "RA" if req.get("ack") else "R"
        ack = ((r or {}).get("nxt") or 0) if req.get("ack") else 0
        segment = encode.tcp(paddr, raddr, int(pport), int(rport), seq=seq, ack=ack, flags=flags, window=0)
        frame = encode.ethernet(dst_mac, src_mac, encode.ip(paddr, raddr, encode.IPPROTO_TCP, segment, ttl=ttl))
        self.socks[self.ifname].send(frame)
        record = {"at": at, "offset": int(offset), "seq": seq, "rcv_nxt": rcv_nxt,
                  "ack": ack, "flags": flags, "window": window, "window_scaled": scaled, "from": [paddr, int(pport)],
                  "to": [raddr, int(rport)], "ttl": ttl, "src_mac": src_mac, "dst_mac": dst_mac}
        self.on_sent(record, time.time_ns())
        return {"sent": record}

    def report(self) -> dict:
        return {**super().report(), "conn": self.conn, "segments": self.segments, "sides": self.sides}
