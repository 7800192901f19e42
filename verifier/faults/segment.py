"""The `segment` fault: one crafted TCP segment sent from a host (e.g. an ACK for a connection that does
not exist), and the answer it draws. The fault agent sends it and watches for the answer
(`SegmentArm`, the agent side, is below)."""

from __future__ import annotations

import ipaddress
import random
import time
from typing import TYPE_CHECKING

from verifier.faults.arm import MAX_RECORDS, PACKET_OUTGOING, Arm, Frame, flag_text, same_addr
from verifier.faults.base import AgentFault, FaultError, Option, next_hop, one_address, poll
from verifier.wire import encode

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host
    from verifier.faults.agent import Agent

__all__ = ["Segment", "SegmentArm"]


MAX_PAYLOAD = 1200  # fits one frame on every testbed link (MTU 1500, IPv6 header 40, TCP 20)


def _payload(value: str | bytes) -> bytes:
    """A segment's data: text (UTF-8) or bytes, at most MAX_PAYLOAD bytes."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    if len(data) > MAX_PAYLOAD:
        raise FaultError(f"a payload of {len(data)} bytes does not fit one segment: at most {MAX_PAYLOAD}")
    return data


def _flag_letters(value: str) -> str:
    """TCP flags as Scapy letters ("A", "SA", "FPA"...), checked."""
    encode.tcp_flags(str(value))
    return str(value)


class Segment(AgentFault, kind="segment"):
    """Send one crafted TCP segment from a host and report the answer, e.g. an ACK for a connection
    that does not exist, which the receiver answers with a RST whose seq is the segment's ack (RFC 793):

        with inject(bed.client, Segment(bed.server.addr(4), 5000, flags="A")) as seg:
            answer = seg.wait_answer()     # {"flags": "R", "seq": <the ACK's ack>, ...}

    The segment leaves the host's interface towards `dst` at layer 2 (the agent addresses the frame to
    the next hop, whose MAC it reads in the next hop's own namespace), so the host's own TCP stack
    never knows it. `src` (default: the host's address on that interface) may be any address; the
    answer is seen only if it comes back through that interface. `sport` (default: random in
    40000..59999), `seq` and `ack` (default: random), `flags` (Scapy letters, default "A"), `payload`.

    `dst` must be an address of a host of the same testbed, and `src` one too or a documentation
    address (`verifier.faults.base.check_addressed`).

    Report (also `status()` while applied): `sent` (the segment), `answers` (every segment back on the
    same 4-tuple), `answer` (the first).
    """

    default_host = "client"
    options = (
        Option("dst", one_address, "destination address or host name", required=True, address="one"),
        Option("dport", int, "destination port", low=1, high=65535, required=True),
        Option("flags", _flag_letters, "TCP flags as letters (F S R P A U E C N)"),
        Option("src", one_address, "source address (default: the host's own towards dst)", address="one"),
        Option("sport", int, "source port (default: random)", low=1, high=65535),
        Option("seq", int, "sequence number (default: random)", low=0, high=2**32 - 1),
        Option("ack", int, "acknowledgement number (default: random)", low=0, high=2**32 - 1),
        Option("payload", _payload, f"data (text, at most {MAX_PAYLOAD} bytes as UTF-8)"),
        Option("wait_ms", float, "how long to wait for the answer", low=0, high=60_000),
    )

    def __init__(self, dst: str, dport: int, *, flags: str = "A", src: str | None = None, sport: int | None = None,
                 seq: int | None = None, ack: int | None = None, payload: bytes | str = b"",
                 wait_ms: float = 1000) -> None:
        super().__init__()
        self.dst = self._checked("dst", dst)
        self.dport = self._checked("dport", dport)
        rng = random.SystemRandom()
        self.flags = self._checked("flags", flags)
        self.src = self._checked("src", src)
        sport, seq, ack = self._checked("sport", sport), self._checked("seq", seq), self._checked("ack", ack)
        self.sport = sport if sport is not None else rng.randrange(40000, 60000)
        self.seq = seq if seq is not None else rng.getrandbits(32)
        self.ack = ack if ack is not None else rng.getrandbits(32)
        self.payload = self._checked("payload", payload)
        self.wait_ms = self._checked("wait_ms", wait_ms)
        self._via: dict = {}

    def addressed(self) -> dict[str, tuple[str, ...]]:
        return {"to": (self.dst,), "from": (self.src,) if self.src else ()}

    def fire_limit_s(self) -> float | None:
        return self.wait_ms / 1000

    def describe(self) -> str:
        return (f"segment {self.flags} seq={self.seq} ack={self.ack} len={len(self.payload)} to "
                f"{self.dst} port {self.dport} from port {self.sport}")

    def apply(self, host: "Host") -> None:
        via = self._via = next_hop(host, self.dst)
        src = self.src or via["src"]
        if src is None:
            raise FaultError(f"{host.name} has no source address towards {self.dst}: give src=")
        self.src = str(ipaddress.ip_address(src))
        family = ipaddress.ip_address(self.dst).version
        self.arm(host, SegmentArm.kind, f"could not send the segment from {host.name}", ifname=via["ifname"],
                 lifetime_s=max(5.0, self.wait_ms / 1000 * 2),
                 segment={"family": family, "src": self.src, "dst": self.dst, "sport": self.sport,
                          "dport": self.dport, "flags": self.flags, "seq": self.seq, "ack": self.ack,
                          "payload_hex": self.payload.hex(), "src_mac": via["src_mac"], "dst_mac": via["dst_mac"],
                          "ttl": 64})

    def wait_answer(self, timeout: float | None = None) -> dict | None:
        """The first segment that came back, waiting up to `timeout` s (default `wait_ms`); None if none."""
        timeout = self.wait_ms / 1000 if timeout is None else timeout
        try:
            return poll(lambda: (self.agent_status()["answers"] or [None])[0], timeout, lambda: "")
        except FaultError:
            return None

    fire = wait_answer

    def _report(self, host: "Host", report: dict) -> dict:
        sent = report["sends"][0] if report["sends"] else None
        return {"fault": self.kind, "host": host.name, "interface": self._via.get("ifname"),
                "via": self._via.get("peer"), "sent": sent, "answers": report["answers"],
                "answer": report["answers"][0] if report["answers"] else None, "errors": report["errors"]}

    def remove(self, host: "Host") -> dict:
        self.report = self._report(host, self.disarm())
        return self.report


# ---------------------------------------------------------------------------------------------------
# The agent side
# ---------------------------------------------------------------------------------------------------

class SegmentArm(Arm, kind="segment"):
    """Sends one crafted TCP segment and records what comes back on its 4-tuple.

    ``{"op": "arm", "kind": "segment", "id", "netns", "ifname", "segment": {"family", "src", "dst",
    "sport", "dport", "flags", "seq", "ack", "window", "payload_hex", "src_mac", "dst_mac", "ttl"}}``
    sends that TCP segment once, right after binding, and records every TCP segment that comes back on
    the same 4-tuple (the answer). Report: ``{"sends": [...], "answers": [{"t_ns", "flags", "seq", "ack",
    "window", "len"}]}``.
    """

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.ifname = req["ifname"]
        s = self.spec = dict(req["segment"])
        self.answers: list[dict] = []
        self.open([self.ifname])
        segment = encode.tcp(s["src"], s["dst"], int(s["sport"]), int(s["dport"]), seq=int(s["seq"]),
                             ack=int(s.get("ack") or 0), flags=s.get("flags") or "A",
                             window=int(s.get("window", 64240)), payload=bytes.fromhex(s.get("payload_hex") or ""))
        packet = encode.ip(s["src"], s["dst"], encode.IPPROTO_TCP, segment, ttl=int(s.get("ttl") or 64))
        frame = encode.ethernet(s["dst_mac"], s["src_mac"], packet)
        self.socks[self.ifname].send(frame)
        self.on_sent({"frame_len": len(frame), **{k: s.get(k) for k in (
            "family", "src", "sport", "dst", "dport", "flags", "seq", "ack")}}, time.time_ns())

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype == PACKET_OUTGOING:
            return
        t = Frame.parse(data)
        s = self.spec
        if t is None or (t.sport, t.dport) != (int(s["dport"]), int(s["sport"])):
            return
        if not (same_addr(s["dst"], t.src) and same_addr(s["src"], t.dst)):
            return
        if len(self.answers) < MAX_RECORDS:
            self.answers.append({"t_ns": ts_ns, "flags": flag_text(t.flags), "seq": t.seq, "ack": t.ack,
                                 "window": t.window, "len": t.payload_len, "src": t.src, "sport": t.sport,
                                 "dst": t.dst, "dport": t.dport})

    def report(self) -> dict:
        return {**super().report(), "answers": self.answers}
