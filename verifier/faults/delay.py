"""The `delay` fault: matching packets delayed, by netem where the kernel has it, else by a user-space
delay line at a router: nft drops the originals, the fault agent re-sends each one late (`DelayArm`,
the agent side, is below)."""

from __future__ import annotations

import ipaddress
import struct
import time
from typing import TYPE_CHECKING

from verifier.faults.arm import MAX_RECORDS, PACKET_HOST, TCP_FIN, TCP_PSH, Arm, Frame, flag_text, flags_match, matches
from verifier.faults.base import (DEFAULT_LIFETIME_S, MAX_DURATION_S, MAX_MATCHES, Fault, FaultError, Match, Option,
                                  agent_request, deadline_after, ip_json, link_of, match_options, new_id, nft,
                                  nft_counters, nft_delete, nft_until, peer_of, poll, read_sysctl, tag)
from verifier.wire import encode

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host
    from verifier.faults.agent import Agent

__all__ = ["Delay", "DelayArm", "forwarded", "qdisc_available"]


def qdisc_available(host: "Host", kind: str, *args: str) -> tuple[bool, str]:
    """Can this kernel make a qdisc of `kind`? Probed on the loopback of the host's namespace (which
    nothing of the testbed uses), and removed at once. Returns (yes, the kernel's message)."""
    res = host.run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "7fe0:", kind, *args])
    if res.returncode == 0:
        host.run(["tc", "qdisc", "del", "dev", "lo", "root"])
        return True, ""
    return False, res.stderr.strip()


class Delay(Fault, kind="delay"):
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

    Report (also `status()` while applied): `method`, `matched`, `delayed`, `dropped` (by the nft
    rule), `packets` (receive, due and send times of each delayed packet), `ttl_expired`, `unroutable`.
    """

    METHODS = ("auto", "netem", "agent")
    options = match_options() + (
        Option("delay_ms", float, "the added delay", low=0, low_open=True, high=60_000, required=True),
        Option("method", str, "auto: netem if the kernel has it, else the agent's delay line", choices=METHODS,
               what="delay method"),
        Option("max_packets", int, "delay at most this many packets", low=1, high=MAX_MATCHES),
        Option("lifetime_s", float, "everything passes undelayed after this long", low=0, low_open=True,
               high=MAX_DURATION_S),
    )

    def __init__(self, delay_ms: float, match: Match | None = None, *, method: str = "auto",
                 max_packets: int = 10000, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        super().__init__()
        self.delay_ms = self._checked("delay_ms", delay_ms)
        self.match = match if match is not None else Match()
        self.method = self._checked("method", method)
        self.max_packets = self._checked("max_packets", max_packets)
        self.lifetime_s = self._checked("lifetime_s", lifetime_s)
        self.used = ""
        self.table = ""
        self.deadline_ns: int | None = None
        self._id = ""
        self._qdiscs: list[str] = []
        self.probe: dict = {}
        self._host: "Host | None" = None

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
        forwarding = read_sysctl(host.netns, "net.ipv4.ip_forward") == "1" or \
            read_sysctl(host.netns, "net.ipv6.conf.all.forwarding") == "1"
        if not forwarding:
            raise FaultError(f"{host.name} does not forward packets, so the user-space delay line cannot serve it"
                             + ("" if netem else f", and this kernel has no netem (tc said: {why})")
                             + ": apply the delay to the router")
        return "agent"

    def apply(self, host: "Host") -> None:
        self.used = self._choose(host)
        self.deadline_ns = deadline_after(self.lifetime_s)
        self.table = f"{tag(host)}_{self.kind}{new_id()}"
        until = nft_until(self.deadline_ns)
        variants = self.match.nft_variants()
        if self.used == "netem":
            self._apply_netem(host, variants, until)
            self._host = host
            return
        # Drop the originals as they arrive for forwarding (never packets for this host itself), at most
        # max_packets of them: the agent delays exactly those.
        body = "".join(f'    {m} counter name "matched"\n    {m} fib daddr type != local {until}limit name "bound" '
                       f'counter name "acted" drop\n' for m in variants)
        ruleset = (f"table inet {self.table} {{\n  counter matched {{ }}\n  counter acted {{ }}\n"
                   f"  limit bound {{ rate 1/week burst {self.max_packets} packets }}\n"
                   f"  chain fault {{\n{body}  }}\n"
                   f"  chain prerouting_hook {{ type filter hook prerouting priority -300; policy accept; "
                   f"jump fault; }}\n}}\n")
        routes, neighbours = self._routes(host)
        self._id = f"{tag(host)}-{self.kind}{new_id()}"
        # The agent first (its sockets bound), then the drop rule: no packet is dropped unseen.
        agent_request("arm", f"could not arm the delay line on {host.name}", kind=DelayArm.kind, id=self._id,
                      netns=host.netns, ifnames=[i.name for i in host.interfaces], match=self.match.agent(),
                      delay_ms=self.delay_ms, max_packets=self.max_packets, deadline_ns=self.deadline_ns,
                      lifetime_s=self.lifetime_s + 1, routes=routes, neighbours=neighbours,
                      local=host.addresses())
        try:
            nft(host, ruleset, self.kind)
        except BaseException:
            agent_request("disarm", "removing the delay line", id=self._id)
            self._id = ""
            raise
        self._host = host

    def _routes(self, host: "Host") -> tuple[list[dict], dict[str, str]]:
        """The host's routes (both families) and its peers' link-layer addresses, for the delay line."""
        links = {i.name: (i, peer_of(host, i), link_of(host, i.name)) for i in host.interfaces}
        neighbours = {a: peer["mac"] for _, peer, _ in links.values() for a in peer["addresses"]}
        routes = []
        for fam in ("-4", "-6"):
            for r in ip_json(host.netns, fam, "route", "show"):
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
            nft(host, ruleset, self.kind)
        except BaseException:
            self._remove_qdiscs(host)
            raise

    def _remove_qdiscs(self, host: "Host") -> None:
        for ifname in self._qdiscs:
            host.run(["tc", "qdisc", "del", "dev", ifname, "root"])
        self._qdiscs = []

    def agent_status(self) -> dict:
        """While applied (agent method): the delay line's own report so far (`matched`, `delayed`, `sent`...)."""
        if not self._id:
            raise FaultError("the delay line is not armed")
        return agent_request("status", "status of the delay line", id=self._id)["report"]

    def status(self) -> dict:
        """While applied: the report so far (the nft counters and the delay line's counts, read now)."""
        if self._host is None:
            raise FaultError("the delay is not applied")
        counts = nft_counters(self._host, "inet", self.table) or {}
        return self._report(self._host, counts, self.agent_status() if self._id else {})

    def _report(self, host: "Host", counts: dict, agent_report: dict) -> dict:
        report = {"fault": self.kind, "host": host.name, "method": self.used, "delay_ms": self.delay_ms,
                  "match": self.match.describe(), "matched": counts.get("matched", 0),
                  "dropped": counts.get("acted", 0) if self.used == "agent" else 0,
                  "until_ns": self.deadline_ns, "probe": self.probe}
        if self.used == "netem":
            report["delayed"] = counts.get("acted", 0)
        else:
            report.update({k: agent_report.get(k) for k in (
                "delayed", "sent", "ttl_expired", "unroutable", "packets", "cancelled", "expired", "errors")})
            report["seen"] = agent_report.get("matched")
        return report

    def wait_sent(self, timeout: float | None = None) -> dict:
        """Wait until the delay line has sent every packet it holds (bounded: by default the delay and
        a second); the report so far. Packets that arrive meanwhile are delayed too."""
        timeout = self.delay_ms / 1000 + 1.0 if timeout is None else timeout
        last: dict = {}

        def check():
            last.update(self.agent_status())
            return dict(last) if last["sent"] + last["cancelled"] >= last["delayed"] else None

        return poll(check, timeout, lambda: f"the delay line still holds {last['delayed'] - last['sent']} "
                                             f"packets after {timeout} s")

    def remove(self, host: "Host") -> dict:
        counts: dict[str, int] = {}
        agent_report: dict = {}
        try:
            counts = nft_counters(host, "inet", self.table) or {}
            nft_delete(host, "inet", self.table)
        finally:
            self._remove_qdiscs(host)
            if self._id:
                try:
                    # The kernel forwards new packets again; the delay line stops taking them and
                    # delivers what it holds (it took them from the network: dropping them would be loss).
                    agent_request("stop", "stopping the delay line", id=self._id)
                    self.wait_sent()
                finally:
                    agent_report = agent_request("disarm", "removing the delay line", id=self._id)["report"]
                    self._id = ""
        self._host = None
        self.report = self._report(host, counts, agent_report)
        return self.report



# ---------------------------------------------------------------------------------------------------
# The agent side
# ---------------------------------------------------------------------------------------------------

class DelayArm(Arm, kind="delay"):
    """A user-space delay line for a router without netem.

    ``{"op": "arm", "kind": "delay", "id", "netns", "ifnames": [...], "match", "delay_ms", "max_packets",
    "deadline_ns", "routes": [{"prefix", "ifname", "gateway", "src_mac", "mtu"}], "neighbours": {ADDR: MAC},
    "local": [ADDR...]}``: every matching TCP packet received for forwarding (not to a `local`
    address) is re-sent `delay_ms` after its kernel receive timestamp on the egress interface of the
    longest matching route, with the egress MAC as source, the next hop's MAC (gateway or destination,
    from `neighbours`) as destination, TTL / hop limit decremented and checksums recomputed; a segment
    larger than the egress MTU (a GSO frame handed over whole by a veth) is cut into MTU-sized
    segments. The caller drops the originals in nftables (taps see a frame before netfilter). At most
    `max_packets` matches, and nothing after `deadline_ns` (CLOCK_REALTIME). ``{"op": "stop"}``: no new
    packets, those held are still sent. Report: ``{"matched", "delayed", "sent", "ttl_expired",
    "unroutable", "packets": [{"t_ns", "due_ns", "sent_ns", ...}]}``.
    """

    def __init__(self, req: dict, agent: "Agent") -> None:
        super().__init__(req, agent)
        self.match = dict(req.get("match") or {})
        flags_match(self.match.get("flags"), 0)
        self.delay_ns = int(float(req["delay_ms"]) * 1_000_000)
        self.max_packets = int(req["max_packets"])
        self.deadline_ns = int(req["deadline_ns"])
        self.routes = []
        for r in req.get("routes") or []:
            net = ipaddress.ip_network(r["prefix"], strict=False)
            self.routes.append((net, r["ifname"], r.get("gateway"), encode.mac_bytes(r["src_mac"]),
                                int(r.get("mtu") or 1500)))
        self.routes.sort(key=lambda route: route[0].prefixlen, reverse=True)
        self.neighbours = {ipaddress.ip_address(a): encode.mac_bytes(m)
                           for a, m in (req.get("neighbours") or {}).items()}
        self.local = {ipaddress.ip_address(a) for a in req.get("local") or []}
        self.matched = self.delayed = self.sent = self.ttl_expired = self.unroutable = 0
        self.packets: list[dict] = []
        self.open(list(req["ifnames"]))

    def on_frame(self, agent: "Agent", ifname: str, data: bytes, ts_ns: int, pkttype: int) -> None:
        if pkttype != PACKET_HOST:  # to be forwarded, a frame is addressed to this host's MAC
            return
        t = Frame.parse(data)
        if t is None or not matches(self.match, t.flags, t.src, t.sport, t.dst, t.dport):
            return
        dst = ipaddress.ip_address(t.dst)
        if dst in self.local:
            return  # for this host itself: not forwarded, not delayed (the nft rule skips it too)
        if self.matched >= self.max_packets or time.time_ns() >= self.deadline_ns:
            return  # past its bounds the nft rule no longer drops either: the packet goes through as usual
        self.matched += 1
        record = {"t_ns": ts_ns, "due_ns": ts_ns + self.delay_ns, "in": ifname, "family": t.family, "src": t.src,
                  "sport": t.sport, "dst": t.dst, "dport": t.dport, "seq": t.seq, "flags": flag_text(t.flags),
                  "len": t.payload_len}
        if len(self.packets) < MAX_RECORDS:
            self.packets.append(record)
        if t.ttl <= 1:
            self.ttl_expired += 1  # a router would send "time exceeded"; the delay line only counts it
            record["error"] = "ttl expired"
            return
        route = next((r for r in self.routes if r[0].version == dst.version and dst in r[0]), None)
        if route is None or route[1] not in self.socks:
            self.unroutable += 1
            record["error"] = "no route"
            return
        net, out, gateway, src_mac, mtu = route
        hop = ipaddress.ip_address(gateway) if gateway else dst
        dst_mac = self.neighbours.get(hop)
        if dst_mac is None:
            self.unroutable += 1
            record["error"] = f"no link-layer address for next hop {hop}"
            return
        record["out"] = out
        frames = forwarded(t, src_mac, dst_mac, mtu)
        self.delayed += 1
        for frame in frames:
            agent.schedule(record["due_ns"], self, out, frame, record)

    def stop_intake(self) -> None:
        self.deadline_ns = 0

    def on_sent(self, record: dict, sent_ns: int) -> None:
        if "sent_ns" not in record:  # a cut GSO frame counts once, at its first piece's time
            record["sent_ns"] = sent_ns
            self.sent += 1
        record["pieces"] = record.get("pieces", 0) + 1

    def report(self) -> dict:
        return {**super().report(), "matched": self.matched, "delayed": self.delayed, "sent": self.sent,
                "ttl_expired": self.ttl_expired, "unroutable": self.unroutable, "packets": self.packets}


def forwarded(t: Frame, src_mac: bytes, dst_mac: bytes, mtu: int) -> list[bytes]:
    """The frames a router sends for packet `t`: new MACs, TTL / hop limit less one, fresh checksums,
    and, for a segment larger than the egress MTU, cut into MTU-sized segments (as GSO would). The IP
    header is the one received (IPv4 options, TOS, DF and the flow label kept), not a new one."""
    ip = bytes(t.ip)
    hl = t.ip_hl
    tcp_hl = t.tcp_hl
    header, tcp_header, payload = bytearray(ip[:hl]), ip[hl:hl + tcp_hl], ip[hl + tcp_hl:]
    if t.family == 4:
        header[8] -= 1
        src, dst = ip[12:16], ip[16:20]
    else:
        header[7] -= 1
        src, dst = ip[8:24], ip[24:40]
    mss = max(1, mtu - hl - tcp_hl)
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
    frames = []
    ip_id = struct.unpack_from("!H", header, 4)[0] if t.family == 4 else 0
    for n, chunk in enumerate(chunks):
        seg = bytearray(tcp_header + chunk)
        struct.pack_into("!I", seg, 4, (t.seq + n * mss) & 0xFFFFFFFF)
        if n < len(chunks) - 1:
            seg[13] &= ~(TCP_FIN | TCP_PSH) & 0xFF  # FIN and PSH belong to the last piece only
        encode.refresh_tcp_checksum(src, dst, seg)
        h = bytearray(header)
        if t.family == 4:
            struct.pack_into("!HH", h, 2, hl + len(seg), (ip_id + n) & 0xFFFF)
            encode.refresh_ipv4_checksum(h)
        else:
            struct.pack_into("!H", h, 4, len(seg))
        frames.append(encode.ethernet(dst_mac, src_mac, bytes(h) + seg))
    return frames
