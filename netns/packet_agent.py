"""The packet agent: sends, receives and matches Scapy packets inside testbed namespaces, for `netns.packets`.

One long-lived process serves a whole Python process (each pytest-xdist worker has its own), so
Scapy is imported once, not per call or per testbed. Every request names the namespace it acts in;
the worker thread that serves it opens its sockets *inside* that namespace (`setns` is per thread)
and closes them when the request is done, so the agent pins no namespace between requests (a
listening session, which holds its socket, ends by itself after `lifetime_s`).

Nothing here uses Scapy's process-wide interface or route tables (read in the agent's own namespace;
scapy issue 3467): layer-3 packets go out through a raw socket opened in the namespace
(`IPPROTO_RAW`: the header is the caller's), so the namespace's kernel routes them with its own table
and resolves the next hop with its own neighbour table; layer-2 frames go out of a packet socket
bound to the interface; the route, source address and neighbour a caller needs to fill in a packet
are read from the namespace's kernel (a connected UDP socket's source address, netlink). Scapy is
used only to dissect what was sent and what came back, and to match answers (`hashret`/`answers`,
as Scapy's own `sr` does).

Every packet the agent sends carries the firewall mark `MARK` (SO_MARK), so the nft rule that keeps
a host's kernel from resetting a scripted peer's connection (`verifier.faults.KernelRstDrop`) lets
the agent's own RSTs through.

Protocol: length-prefixed pickles (4-byte big-endian length) on stdin and stdout, one dict per
request, answered (in any order: requests run concurrently) with a dict echoing its `seq`, with
`ok` and either the answer's fields or `error`. First, unasked: ``{"event": "hello", "pid": ...}``.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from netns import namespace

MARK = 0x74765343  # "tvSC": the firewall mark of every packet the agent sends
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SO_MARK = 36
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
ANC = socket.CMSG_SPACE(16)
BUFSIZE = 65536 + 64
SESSION_LIFETIME_S = 300.0
SO_ATTACH_FILTER = 26


# The pipe's framing, both ways (this agent and its client, netns.packets): a 4-byte big-endian
# length, then a pickled dict.

def frame(obj: dict) -> bytes:
    """One message as it goes down the pipe."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack(">I", len(data)) + data


def read_frame(fd: int) -> dict | None:
    """The next message from `fd`; None at the end of the pipe."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else pickle.loads(body)


def _write_frame(fd: int, obj: dict, lock: threading.Lock) -> None:
    with lock:
        view = memoryview(frame(obj))
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def _ts(anc) -> int:
    for lvl, kind, payload in anc:
        if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", payload[:16])
            return sec * 1_000_000_000 + nsec
    return time.time_ns()


_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF "ret #0": take no more packets
_closing: "queue.SimpleQueue[socket.socket]" = queue.SimpleQueue()


def _close_later(s: socket.socket) -> None:
    """Close a socket off the request path: closing a packet socket waits for an RCU grace period
    (about 10 ms here), which would otherwise be most of a round trip. It takes no packet meanwhile."""
    if s.family == socket.AF_PACKET:
        try:
            _attach_filter(s, _DROP_ALL)
        except OSError:
            pass
    _closing.put(s)


def _closer() -> None:
    while True:
        _closing.get().close()


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _words(data: bytes) -> int:
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def _patch_src(data: bytes, family: int, src: str) -> bytes | None:
    """A packet built with the all-zero source address, given `src` instead, its checksums updated
    (RFC 1624: the zero source added nothing to them). Only for the cases it knows exactly: IPv4
    with TCP or UDP (not a fragment), IPv6 with TCP, UDP or ICMPv6 right after the fixed header;
    None for anything else (the caller rebuilds it with Scapy)."""
    buf = bytearray(data)
    if family == 4:
        ihl = (buf[0] & 0x0F) * 4
        if len(buf) < ihl + 8 or buf[9] not in (6, 17) or (struct.unpack_from(">H", buf, 6)[0] & 0x3FFF):
            return None
        addr = socket.inet_pton(socket.AF_INET, src)
        buf[12:16] = addr
        struct.pack_into(">H", buf, 10, 0)
        struct.pack_into(">H", buf, 10, ~_fold(_words(bytes(buf[:ihl]))) & 0xFFFF)
        l4, proto = ihl, buf[9]
    else:
        if len(buf) < 48 or buf[6] not in (6, 17, 58):
            return None
        addr = socket.inet_pton(socket.AF_INET6, src)
        buf[8:24] = addr
        l4, proto = 40, buf[6]
    at = l4 + (16 if proto == 6 else 6 if proto == 17 else 2)
    if len(buf) < at + 2:
        return None
    old = struct.unpack_from(">H", buf, at)[0]
    if proto == 17 and family == 4 and old == 0:
        return bytes(buf)  # no UDP checksum: nothing to update
    new = ~_fold((~old & 0xFFFF) + _words(addr)) & 0xFFFF
    struct.pack_into(">H", buf, at, new or (0xFFFF if proto == 17 else 0))
    return bytes(buf)


def _attach_filter(s: socket.socket, insns: bytes) -> None:
    """Attach classic BPF instructions (8 bytes each, from libpcap) to a packet socket."""
    import ctypes

    buf = ctypes.create_string_buffer(insns, len(insns))
    fprog = struct.pack("HL", len(insns) // 8, ctypes.addressof(buf))
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class Agent:
    def __init__(self) -> None:
        self.sessions: dict[int, tuple[socket.socket, float, str]] = {}
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        self._scapy = None

    # -- Scapy, imported once ----------------------------------------------------------------------
    def scapy(self):
        if self._scapy is None:
            from scapy.config import conf
            from scapy.layers.inet import IP
            from scapy.layers.inet6 import IPv6
            from scapy.layers.l2 import Ether

            conf.verb = 0
            self._scapy = {"IP": IP, "IPv6": IPv6, "Ether": Ether}
        return self._scapy

    # -- sockets, opened inside the namespace ----------------------------------------------------
    @staticmethod
    def _listener(netns: str, iface: str | None, bpf: bytes | None = None) -> socket.socket:
        with namespace.inside(netns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            if bpf is not None:
                _attach_filter(s, bpf)
            if iface:
                s.bind((iface, ETH_P_ALL))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    @staticmethod
    def _sender(netns: str, kind: str, iface: str | None) -> socket.socket:
        with namespace.inside(netns):
            if kind == "l2":
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            else:
                fam = socket.AF_INET6 if kind == "l3v6" else socket.AF_INET
                s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
            if kind == "l2":
                s.bind((iface, 0))
        except OSError:
            s.close()
            raise
        return s

    @staticmethod
    def _recv(s: socket.socket) -> tuple | None:
        try:
            data, anc, _flags, addr = s.recvmsg(BUFSIZE, ANC)
        except BlockingIOError:
            return None
        return (data, _ts(anc), addr[0], "out" if addr[2] == PACKET_OUTGOING else "in")

    def _send_all(self, netns: str, frames: list, inter: float, on_sent=None) -> list[int]:
        socks: dict[tuple, socket.socket] = {}
        sent_ns = []
        try:
            for i, (kind, data, iface, dst) in enumerate(frames):
                key = (kind, iface if kind == "l2" else None)
                s = socks.get(key)
                if s is None:
                    s = socks[key] = self._sender(netns, kind, iface)
                if i and inter > 0:
                    time.sleep(inter)
                # Stamped before the call: on veth links the answer may be back before sendto returns.
                sent_ns.append(time.time_ns())
                if kind == "l2":
                    s.send(data)
                else:
                    s.sendto(data, (dst, 0))
                if on_sent is not None:
                    on_sent()
        finally:
            for s in socks.values():
                _close_later(s)
        return sent_ns

    # -- requests ---------------------------------------------------------------------------------
    def op_ping(self, req: dict) -> dict:
        return {"pid": os.getpid(), "sessions": len(self.sessions), "scapy": self._scapy is not None}

    def op_warm(self, req: dict) -> dict:
        """Return once the start-up work is done (Scapy imported, by the warm-up thread or here): until
        then that import holds the interpreter, and a request served meanwhile comes late."""
        self.scapy()
        return {"pid": os.getpid()}

    def op_src(self, req: dict) -> dict:
        """The source address the namespace's kernel would use toward `dst` (no packet is sent)."""
        return {"src": self._src(req["netns"], req["dst"], req["family"])}

    @staticmethod
    def _src(netns: str, dst: str, family: int) -> str:
        fam = socket.AF_INET6 if family == 6 else socket.AF_INET
        with namespace.inside(netns):
            s = socket.socket(fam, socket.SOCK_DGRAM)
        with s:
            try:
                s.connect((dst, 9))
            except OSError as exc:
                raise OSError(f"no route to {dst} in {netns}: {exc.strerror}") from None
            return s.getsockname()[0]

    def _fill_src(self, netns: str, frames: list, which) -> tuple[list, dict]:
        """The frames at indices `which` (layer-3 packets built with a placeholder source) with the
        source address the namespace's kernel chooses toward their destination, and every checksum
        computed again by Scapy; {index: source}."""
        if not which:
            return frames, {}
        frames = list(frames)
        srcs = {}
        for i in which:
            kind, data, iface, dst = frames[i]
            fam = 6 if kind == "l3v6" else 4
            src = srcs[i] = self._src(netns, dst, fam)
            patched = _patch_src(data, fam, src)
            if patched is not None:
                frames[i] = (kind, patched, iface, dst)
                continue
            sc = self.scapy()
            pkt = (sc["IPv6"] if fam == 6 else sc["IP"])(data)
            pkt.src = src
            layer = pkt
            while layer:
                for name in ("chksum", "cksum"):
                    if name in layer.fields:
                        delattr(layer, name)
                layer = layer.payload
            frames[i] = (kind, bytes(pkt), iface, dst)
        return frames, srcs

    def op_l2(self, req: dict) -> dict:
        """For a frame toward IP `dst`: the interface, its MAC, the next hop's MAC (the kernel's
        neighbour entry, resolved by ARP/ND on that interface if the table has none) and the source
        address, all from the namespace's own kernel."""
        from pyroute2 import IPRoute

        dst, fam = req["dst"], req["family"]
        with namespace.inside(req["netns"]):
            ipr = IPRoute()
        with ipr:
            routes = ipr.route("get", dst=dst)
            if not routes:
                raise OSError(f"no route to {dst} in {req['netns']}")
            r = routes[0]
            oif = r.get_attr("RTA_OIF")
            gw = r.get_attr("RTA_GATEWAY")
            src = r.get_attr("RTA_PREFSRC")
            link = ipr.get_links(oif)[0]
            ifname = link.get_attr("IFLA_IFNAME")
            if req.get("iface") and req["iface"] != ifname:
                ifname = req["iface"]
                link = ipr.get_links(ifname=ifname)[0]
                oif = link["index"]
            mac = link.get_attr("IFLA_ADDRESS")
            hop = gw or dst
            neigh = None
            for n in ipr.get_neighbours(ifindex=oif, dst=hop):
                lladdr = n.get_attr("NDA_LLADDR")
                if lladdr and n["state"] not in (0x01, 0x20):  # not INCOMPLETE, not FAILED
                    neigh = lladdr
        if neigh is None:
            neigh = self._resolve(req["netns"], ifname, mac, src, hop, fam)
        if neigh is None:
            raise OSError(f"{hop} did not answer {'ARP' if fam == 4 else 'neighbour solicitation'} on "
                          f"{ifname} in {req['netns']}")
        return {"iface": ifname, "src_mac": mac, "dst_mac": neigh, "src": src, "next_hop": hop}

    def _resolve(self, netns: str, ifname: str, mac: str, src: str | None, hop: str, fam: int) -> str | None:
        sc = self.scapy()
        if fam == 4:
            from scapy.layers.l2 import ARP

            probe = sc["Ether"](dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc=src or "0.0.0.0",
                                                                        pdst=hop)
        else:
            from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, in6_getnsma, in6_getnsmac, inet_pton

            nsma = socket.inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, hop)))
            probe = (sc["Ether"](dst=in6_getnsmac(inet_pton(socket.AF_INET6, nsma)), src=mac)
                     / sc["IPv6"](src=src, dst=nsma, hlim=255) / ICMPv6ND_NS(tgt=hop) / ICMPv6NDOptSrcLLAddr(lladdr=mac))
        ans = self._sr(netns, [("l2", bytes(probe), ifname, None)], timeout=1.0, inter=0.0, multi=False)
        for _i, frame in ans["answers"]:
            eth = sc["Ether"](frame[0])
            if fam == 4:
                return eth.payload.hwsrc
            from scapy.layers.inet6 import ICMPv6NDOptDstLLAddr

            opt = eth.getlayer(ICMPv6NDOptDstLLAddr)
            return opt.lladdr if opt is not None else eth.src
        return None

    def op_send(self, req: dict) -> dict:
        frames, srcs = self._fill_src(req["netns"], req["frames"], req.get("fill_src"))
        return {"sent_ns": self._send_all(req["netns"], frames, req.get("inter", 0.0)), "srcs": srcs}

    def op_sr(self, req: dict) -> dict:
        frames, srcs = self._fill_src(req["netns"], req["frames"], req.get("fill_src"))
        answer = self._sr(req["netns"], frames, req["timeout"], req.get("inter", 0.0), req.get("multi", False),
                          req.get("iface"))
        answer["srcs"] = srcs
        return answer

    def _sr(self, netns: str, frames: list, timeout: float, inter: float, multi: bool,
            listen_iface: str | None = None) -> dict:
        sc = self.scapy()
        sent = []
        for kind, data, _iface, _dst in frames:
            cls = sc["Ether"] if kind == "l2" else sc["IPv6"] if kind == "l3v6" else sc["IP"]
            sent.append(cls(data))
        by_hash: dict[bytes, list[int]] = {}
        for i, p in enumerate(sent):
            by_hash.setdefault(p.hashret(), []).append(i)
        answered: set[int] = set()
        answers: list = []
        rx = self._listener(netns, listen_iface)
        try:
            def take() -> None:
                while True:
                    got = self._recv(rx)
                    if got is None:
                        return
                    if got[3] == "out":
                        continue
                    eth = sc["Ether"](got[0])
                    for i, p in enumerate(sent):
                        if i in answered and not multi:
                            continue
                        cand = eth if frames[i][0] == "l2" else eth.payload
                        if cand.hashret() == p.hashret() and cand.answers(p):
                            answers.append((i, got))
                            if not multi:
                                answered.add(i)
                                break
            sent_ns = self._send_all(netns, frames, inter, on_sent=take)
            deadline = time.monotonic() + timeout
            while True:
                take()
                if not multi and len(answered) == len(sent):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([rx], [], [], left)
        finally:
            _close_later(rx)
        return {"sent_ns": sent_ns, "answers": answers}

    def op_sniff(self, req: dict) -> dict:
        rx = self._listener(req["netns"], req.get("iface"), req.get("bpf"))
        count, timeout = req.get("count") or 0, req.get("sniff_timeout")
        out = []
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            while not count or len(out) < count:
                got = self._recv(rx)
                if got is not None:
                    out.append(got)
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                select.select([rx], [], [], 1.0 if left is None else min(left, 1.0))
        finally:
            _close_later(rx)
        return {"frames": out}

    # -- listening sessions (for scripted peers) ---------------------------------------------------
    def op_listen(self, req: dict) -> dict:
        rx = self._listener(req["netns"], req.get("iface"), req.get("bpf"))
        with self._lock:
            sid = next(self._ids)
            self.sessions[sid] = (rx, time.monotonic() + req.get("lifetime_s", SESSION_LIFETIME_S), req["netns"])
        return {"id": sid, "listening_ns": time.time_ns()}

    def op_next(self, req: dict) -> dict:
        """The frames the session has received so far, waiting up to `timeout` for the first one."""
        entry = self.sessions.get(req["id"])
        if entry is None:
            raise ValueError(f"no listening session {req['id']} (closed, or expired after its lifetime)")
        rx = entry[0]
        out = []
        deadline = time.monotonic() + req.get("timeout", 0.0)
        while True:
            got = self._recv(rx)
            if got is not None:
                out.append(got)
                continue
            left = deadline - time.monotonic()
            if out or left <= 0:
                break
            select.select([rx], [], [], left)
        return {"frames": out}

    def op_unlisten(self, req: dict) -> dict:
        with self._lock:
            entry = self.sessions.pop(req["id"], None)
        if entry is not None:
            _close_later(entry[0])
        return {"closed": entry is not None}

    def op_forget(self, req: dict) -> dict:
        """Close the listening sessions of these namespaces (their testbed is going down)."""
        gone = set(req["netns"])
        with self._lock:
            sids = [sid for sid, (_, _, ns) in self.sessions.items() if ns in gone]
            for sid in sids:
                _close_later(self.sessions.pop(sid)[0])
        return {"closed": len(sids)}

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for sid in [s for s, (_, until, _) in self.sessions.items() if until <= now]:
                self.sessions.pop(sid)[0].close()

    def handle(self, req: dict) -> dict:
        fn = getattr(self, "op_" + str(req.get("op")), None)
        if fn is None:
            raise ValueError(f"unknown op {req.get('op')!r}")
        return fn(req)


def main() -> int:
    out_lock = threading.Lock()
    agent = Agent()
    pool = ThreadPoolExecutor(max_workers=16)

    def serve(req: dict) -> None:
        try:
            answer = {"seq": req.get("seq"), "ok": True, **agent.handle(req)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = {"seq": req.get("seq"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _write_frame(1, answer, out_lock)

    _write_frame(1, {"event": "hello", "pid": os.getpid()}, out_lock)
    threading.Thread(target=_closer, daemon=True, name="closer").start()
    threading.Thread(target=agent.scapy, daemon=True).start()  # warm up while the first requests come
    while True:
        ready, _, _ = select.select([0], [], [], 5.0)
        agent.expire()
        if not ready:
            continue
        req = read_frame(0)
        if req is None:
            break  # the caller is gone
        if req.get("op") == "quit":
            break
        pool.submit(serve, req)
    for rx, _, _ in list(agent.sessions.values()):
        rx.close()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
