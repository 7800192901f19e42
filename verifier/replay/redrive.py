"""Re-driving one captured connection against a live testbed (tcpliveplay-style); needs root.

The client side of a captured connection is sent again from a testbed's client namespace to its
server: each client segment leaves at its recorded time after the previous one, or once the answers
recorded before it have arrived; the client's sequence numbers are kept and its acknowledgements are
moved from the recorded server ISN onto the live one. Frames are built by `verifier.wire.encode`
and the live answers read by the one decoder (`verifier.wire.decode_frame`); an nftables rule drops
the client kernel's own RSTs (it has no socket for the replayed port). The live server's answers
are compared with the recorded ones.
"""

from __future__ import annotations

import os
import random
import select
import socket
import time
from dataclasses import dataclass, field

from verifier.analysis.conditions import endpoint_text
from verifier.wire import ACK, SYN, TCP, decode_frame, encode, flag_str

__all__ = ["RedriveError", "RedriveReport", "Segment", "redrive", "resolve_testbed"]


class RedriveError(RuntimeError):
    """A re-drive could not be done (no root, no such connection, no such testbed...)."""



@dataclass
class Segment:
    """A TCP segment as compared: seq/ack relative to each side's ISN (ack None without ACK)."""

    t: float
    flags: str
    seq: int
    ack: int | None
    length: int

    def text(self) -> str:
        ack = "-" if self.ack is None else str(self.ack)
        return f"{self.t:9.6f}  {self.flags:<4} seq={self.seq} ack={ack} len={self.length}"

    def key(self) -> tuple:
        return (self.flags, self.seq, self.ack, self.length)


@dataclass
class RedriveReport:
    """What a re-drive sent, what came back, and how that differs from the capture."""

    connection_id: int
    recorded_client: tuple[str, int]
    recorded_server: tuple[str, int]
    live_client: tuple[str, int]
    live_server: tuple[str, int]
    sent: list[Segment]
    recorded_answers: list[Segment]
    live_answers: list[Segment]
    differences: list[str]
    live_server_isn: int | None = None
    client_rsts_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def text(self) -> str:
        lines = [f"re-drive of connection #{self.connection_id}: {endpoint_text(self.recorded_client)} > "
                 f"{endpoint_text(self.recorded_server)} recorded, sent as {endpoint_text(self.live_client)} > "
                 f"{endpoint_text(self.live_server)}",
                 f"sent {len(self.sent)} client segment(s); the client kernel's RSTs dropped: "
                 f"{self.client_rsts_dropped}"]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("server answers (seq relative to the server's ISN, ack to the client's):")
        lines.append(f"  {'recorded':<44} live")
        for k in range(max(len(self.recorded_answers), len(self.live_answers))):
            a = self.recorded_answers[k].text() if k < len(self.recorded_answers) else "(none)"
            b = self.live_answers[k].text() if k < len(self.live_answers) else "(none)"
            mark = "  " if k < len(self.recorded_answers) and k < len(self.live_answers) and \
                self.recorded_answers[k].key() == self.live_answers[k].key() else "!="
            lines.append(f"{mark}{a:<44} {b}")
        if self.differences:
            lines.append("differences:")
            lines += [f"  {d}" for d in self.differences]
        else:
            lines.append("the live server answered exactly as recorded")
        return "\n".join(lines)


def resolve_testbed(bed_or_name):
    """A `netns.Testbed` from a Testbed (returned as is) or the name of a long-lived testbed
    (`verifier testbed up --name N`). RedriveError if there is no such testbed."""
    if hasattr(bed_or_name, "client") and hasattr(bed_or_name, "hosts"):
        return bed_or_name
    from netns import Testbed, TestbedError
    from netns.namespace import NamespaceError

    try:
        return Testbed.attach(str(bed_or_name))
    except (TestbedError, NamespaceError, ValueError) as exc:
        raise RedriveError(str(exc)) from None


def _rel(v: int, base: int) -> int:
    d = (v - base) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def _mac_of(netns_name: str, ifname: str) -> bytes:
    from netns import namespace

    with namespace.inside(netns_name):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((ifname, 0))
            return s.getsockname()[4][:6]
        finally:
            s.close()


def redrive(trace, connection_id: int, bed, *, port: int | None = None, answer_timeout: float = 5.0,
            total_timeout: float = 60.0, client_port: int | None = None) -> RedriveReport:
    """Send the client side of `trace.connections[connection_id]` again from `bed`'s client host to
    its server host, and compare the live server's answers with the recorded ones.

    `trace` is a `verifier.analysis.trace.Trace` loaded from a file (`trace.source`: the frames' payloads are
    read from it again); `bed` a `netns.Testbed` or the name of a long-lived testbed. Each client
    segment leaves at its recorded time after the previous one, or once the answers recorded
    before it have arrived (at most `answer_timeout` s each), as tcpliveplay paces. The client's
    sequence numbers are kept; its acknowledgements are moved from the recorded server ISN onto the
    live one. Needs root.
    """
    if os.geteuid() != 0:
        raise RedriveError("re-driving needs root (it sends from a testbed's network namespace): run it with sudo")
    bed = resolve_testbed(bed)
    if not 0 <= connection_id < len(trace.connections):
        raise RedriveError(f"no connection {connection_id} in {trace.source} "
                           f"(it has {len(trace.connections)}: ids 0-{len(trace.connections) - 1})")
    conn = trace.connections[connection_id]
    if conn.partial or conn.isn_client is None:
        raise RedriveError(f"connection {connection_id} has no SYN from its client in the capture: "
                           f"it cannot be re-driven (the live server needs the handshake)")
    if trace.source is None or not os.path.exists(trace.source):
        raise RedriveError("the trace was not loaded from a file: its payloads cannot be re-sent")
    fam = conn.family
    try:
        client_ip, server_ip = bed.client.addr(fam), bed.server.addr(fam)
    except LookupError as exc:
        raise RedriveError(f"the testbed has no IPv{fam} addresses for this IPv{fam} connection: {exc}") from None
    sport = client_port or random.randint(20000, 59999)
    dport = port or conn.server[1]

    from netns import namespace
    from verifier.faults import Drop, Match, inject
    from verifier.pcap import CaptureFile

    events = conn.events
    client_events = [e for e in events if e.direction == "c>s" and e.kind != "ICMP"]
    recorded_answers_ev = [e for e in events if e.direction == "s>c" and e.kind != "ICMP"]
    isn_s_rec = conn.isn_server
    wanted = {e.packet_index for e in client_events}
    frames: dict[int, tuple[bytes, int]] = {}
    for raw in CaptureFile(trace.source):
        if raw.index in wanted:
            frames[raw.index] = (raw.data, raw.linktype)
            if len(frames) == len(wanted):
                break
    payloads: dict[int, bytes] = {}
    for e in client_events:
        data, linktype = frames.get(e.packet_index, (b"", 1))
        body = b""
        for p in decode_frame(linktype, data, len(data)):
            if p.kind == TCP:
                start = p.l4_off + ((data[p.l4_off + 12] >> 4) * 4 if len(data) > p.l4_off + 12 else 20)
                body = data[start:start + p.payload_len]
                break
        if len(body) < e.payload_len:  # snaplen cut it: pad to the recorded length
            body += b"\0" * (e.payload_len - len(body))
        payloads[e.packet_index] = body[:e.payload_len]

    itf = bed.client.interfaces[0]
    peer = bed[itf.peer_host]
    src_mac = _mac_of(bed.client.netns, itf.name)
    dst_mac = _mac_of(peer.netns, itf.peer_name)
    t_conn0 = events[0].t

    # How many server answers come before each client segment, in the recording.
    answers_before = []
    for e in client_events:
        answers_before.append(sum(1 for a in recorded_answers_ev if a.ts_ns < e.ts_ns))

    live: list[tuple[float, int, int, int, int, int]] = []  # (t, flags, seq, ack, len, has_ack)
    sent: list[Segment] = []
    live_isn_s: int | None = None
    notes: list[str] = []

    with namespace.inside(bed.client.netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        sock.bind((itf.name, 0))
        sock.setblocking(False)
        drop = Drop(Match(flags="rst", sport=sport, dst=server_ip))
        with inject(bed.client, drop):
            start = time.monotonic()
            deadline = start + total_timeout

            def pump(until: float, need: int | None = None) -> None:
                """Receive the server's frames until `until`, or until `need` answers have come."""
                nonlocal live_isn_s
                while True:
                    now = time.monotonic()
                    if now >= until or now >= deadline or (need is not None and len(live) >= need):
                        return
                    ready, _, _ = select.select([sock], [], [], min(until, deadline) - now)
                    if not ready:
                        continue
                    while True:
                        try:
                            data, addr = sock.recvfrom(65536)
                        except BlockingIOError:
                            break
                        if addr[2] == socket.PACKET_OUTGOING:
                            continue
                        seg = _answer(data, server_ip, dport, client_ip, sport)
                        if seg is None:
                            continue
                        flags, seq, ack, length = seg
                        if flags & 0x02 and live_isn_s is None:
                            live_isn_s = seq
                        live.append((time.monotonic() - start, flags, seq, ack, length, flags & 0x10))

            prev_t = None
            for k, e in enumerate(client_events):
                # pace: the recorded gap since the previous client segment, and the answers before it
                if prev_t is not None:
                    pump(time.monotonic() + max(e.t - prev_t, 0.0), None)
                need = answers_before[k]
                if len(live) < need:
                    pump(time.monotonic() + answer_timeout, need)
                prev_t = e.t
                flags = e.flags
                ack_val = 0
                if e.ack_abs is not None:
                    if live_isn_s is not None and isn_s_rec is not None:
                        ack_val = (e.ack_abs - isn_s_rec + live_isn_s) & 0xFFFFFFFF
                    else:
                        ack_val = e.ack_abs
                        if isn_s_rec is not None:
                            notes.append(f"client segment {k + 1} acknowledges the server, but no live SYN-ACK "
                                         f"came: its ack is sent unmapped")
                seg = encode.tcp(client_ip, server_ip, sport, dport, seq=e.seq_abs, ack=ack_val, flags=flags,
                                 window=e.window or 64240,
                                 options=[("MSS", e.mss)] if "S" in flags and e.mss else (),
                                 payload=payloads.get(e.packet_index, b""))
                frame = encode.ethernet(dst_mac, src_mac, encode.ip(client_ip, server_ip, encode.IPPROTO_TCP, seg))
                sock.send(frame)
                sent.append(Segment(round(time.monotonic() - start, 6), flags, e.seq, e.ack, e.payload_len))
            # the answers recorded after the last client segment
            pump(time.monotonic() + answer_timeout, len(recorded_answers_ev))
            pump(time.monotonic() + 0.2, None)  # and anything unexpected right behind them
        dropped = drop.report.get("matched", 0)
    finally:
        sock.close()

    isn_c = conn.isn_client
    rec_answers = [Segment(round(a.t - t_conn0, 6), a.flags, a.seq or 0, a.ack, a.payload_len)
                   for a in recorded_answers_ev]
    live_answers = []
    for t, flags, seq, ack, length, has_ack in live:
        # without a live SYN-ACK there is no server ISN: such a RST is numbered 0, as the Trace does
        rel_seq = _rel(seq, live_isn_s) if live_isn_s is not None else 0
        live_answers.append(Segment(round(t, 6), flag_str(flags), rel_seq,
                                    _rel(ack, isn_c) if has_ack else None, length))
    diffs = []
    for k in range(max(len(rec_answers), len(live_answers))):
        a = rec_answers[k] if k < len(rec_answers) else None
        b = live_answers[k] if k < len(live_answers) else None
        if a is None:
            diffs.append(f"answer {k + 1}: not recorded, live {b.flags} seq={b.seq} ack={b.ack} len={b.length}")
        elif b is None:
            diffs.append(f"answer {k + 1}: recorded {a.flags} seq={a.seq} ack={a.ack} len={a.length}, no live answer "
                         f"(waited {answer_timeout:g} s)")
        elif a.key() != b.key():
            diffs.append(f"answer {k + 1}: recorded {a.flags} seq={a.seq} ack={a.ack} len={a.length}, "
                         f"live {b.flags} seq={b.seq} ack={b.ack} len={b.length}")
    return RedriveReport(connection_id, conn.client, conn.server, (client_ip, sport), (server_ip, dport), sent,
                         rec_answers, live_answers, diffs, live_isn_s, dropped, sorted(set(notes)))


def _answer(data: bytes, server_ip: str, sport: int, client_ip: str, cport: int):
    """(flags, seq, ack, payload length) of an Ethernet frame from the server to our replayed port,
    else None (read by the one decoder)."""
    for p in decode_frame(1, data, len(data)):
        if (p.kind == TCP and p.sport == sport and p.dport == cport and p.src == _canon(server_ip)
                and p.dst == _canon(client_ip)):
            return p.flags, p.seq, p.ack, p.payload_len
    return None


def _canon(addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET6 if ":" in addr else socket.AF_INET,
                            socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr))
