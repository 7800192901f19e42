"""Benchmark of `verifier replay`'s classification against `tshark -q -z conv,tcp`.

    .venv/bin/python bench/replay.py [--packets N] [--big-factor K] [--keep DIR]

Generates two captures (N packets, then K x N), each a steady mix of TCP connection attempts over
IPv4 and IPv6: full exchanges closed with FIN, refusals (RST), timeouts (the Linux SYN schedule
with tcp_syn_retries=2: six SYNs over five seconds), ICMP host-unreachable answers to SYNs, and
connections reset after the handshake. Frames are built from templates with `struct` and written
with our PcapngWriter (no Scapy per packet). Then, in this one run, on this machine:

* our classification, C engine: records as raw tuples (the classification itself) and as
  `ConnectionRecord` objects (what `verifier replay --json` uses);
* the Python reference engine, on the smaller file (it is the fallback without a compiler);
* `tshark -q -z conv,tcp -r FILE` (tshark's own TCP conversation table);

and prints packets per second, the speedup over tshark, and the peak memory (ru_maxrss of a fresh
process per run) for both sizes, to show that memory stays bounded as the file grows.
Each classification is also checked: the counts per outcome must equal what was generated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier.wire import internet_checksum  # noqa: E402
from verifier.pcap import PcapngWriter  # noqa: E402

T0 = 1_700_000_000 * 10**9
MS = 1_000_000
S = 1_000_000_000
RATE = 20  # connection attempts started per second of capture time


class Frames:
    """Ethernet frames for one client/server pair, from templates (no Scapy)."""

    def __init__(self, family: int, client: bytes, server: bytes, router: bytes) -> None:
        self.family = family
        self.client, self.server, self.router = client, server, router
        et = b"\x08\x00" if family == 4 else b"\x86\xdd"
        self.eth_cs = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + et
        self.eth_sc = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + et

    def _ip(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
        if self.family == 4:
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst)
            hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
            return hdr + payload
        return struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64, src, dst) + payload

    def tcp(self, from_client: bool, sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 64240, 0, 0)
        return (self.eth_cs if from_client else self.eth_sc) + self._ip(src, dst, 6, seg + data)

    def icmp_unreach(self, quoted_frame: bytes) -> bytes:
        quoted = quoted_frame[14:14 + (28 if self.family == 4 else 48)]
        if self.family == 4:
            body = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
            return self.eth_sc + self._ip(self.router, self.client, 1, body)
        body = struct.pack("!BBHI", 1, 3, 0, 0) + quoted
        return self.eth_sc + self._ip(self.router, self.client, 58, body)


FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16


def connection(kind: str, fr: Frames, sport: int, dport: int, t: int, rng: random.Random) -> list[tuple[int, bytes]]:
    """The frames of one attempt of `kind`, with their times."""
    ci, si = rng.getrandbits(32), rng.getrandbits(32)
    rtt = 200_000  # 0.2 ms
    syn = fr.tcp(True, sport, dport, SYN, ci, 0)
    if kind == "refused":
        return [(t, syn), (t + rtt, fr.tcp(False, dport, sport, RST | ACK, 0, ci + 1))]
    if kind == "timeout":  # Linux, tcp_syn_retries=2, tcp_syn_linear_timeouts=4: SYNs at 0..5 s
        return [(t + k * S + k * 20 * MS, syn) for k in range(6)]
    if kind == "unreachable":
        return [(t, syn), (t + rtt, fr.icmp_unreach(syn)), (t + S, syn), (t + S + rtt, fr.icmp_unreach(syn))]
    out = [(t, syn), (t + rtt, fr.tcp(False, dport, sport, SYN | ACK, si, ci + 1)),
           (t + rtt + 10_000, fr.tcp(True, sport, dport, ACK, ci + 1, si + 1))]
    req = b"GET / HTTP/1.0\r\n\r\n"
    t1 = t + rtt + 50_000
    out.append((t1, fr.tcp(True, sport, dport, PSH | ACK, ci + 1, si + 1, req)))
    c2 = ci + 1 + len(req)
    if kind == "reset":
        out.append((t1 + rtt, fr.tcp(False, dport, sport, RST | ACK, si + 1, c2)))
        return out
    resp = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 300
    out += [(t1 + rtt, fr.tcp(False, dport, sport, ACK, si + 1, c2)),
            (t1 + rtt + 20_000, fr.tcp(False, dport, sport, PSH | ACK, si + 1, c2, resp)),
            (t1 + 2 * rtt, fr.tcp(True, sport, dport, ACK, c2, si + 1 + len(resp)))]
    s2 = si + 1 + len(resp)
    t2 = t1 + 2 * rtt + 100_000
    out += [(t2, fr.tcp(True, sport, dport, FIN | ACK, c2, s2)),
            (t2 + rtt, fr.tcp(False, dport, sport, FIN | ACK, s2, c2 + 1)),
            (t2 + rtt + 10_000, fr.tcp(True, sport, dport, ACK, c2 + 1, s2 + 1))]
    return out


# kind -> (weight, expected outcome)
MIX = {"closed": (5, "closed"), "refused": (2, "refused"), "timeout": (1, "timed-out"),
       "unreachable": (1, "unreachable"), "reset": (1, "reset")}


def generate(path: Path, packets: int, seed: int = 1) -> dict:
    """Write a capture of at least `packets` frames; returns what it holds (counts per outcome)."""
    rng = random.Random(seed)
    pairs = [Frames(4, bytes([192, 0, 2, 10 + i]), bytes([203, 0, 113, 2 + i % 3]), bytes([192, 0, 2, 1]))
             for i in range(8)]
    pairs += [Frames(6, bytes.fromhex("20010db8000100000000000000000%03x" % (16 + i)),
                     bytes.fromhex("20010db800020000000000000000000%x" % (2 + i % 3)),
                     bytes.fromhex("20010db8000100000000000000000001")) for i in range(8)]
    kinds = [k for k, (w, _) in MIX.items() for _ in range(w)]
    expected: dict[str, int] = {}
    # Connections start RATE per second; frames are merged in time order with a small heap so the
    # generator needs memory for the connections in flight only (like the scanner).
    import heapq

    heap: list[tuple[int, int, bytes]] = []
    last_syns: list[int] = []  # of the timeouts: one whose last SYN is < 1 s before the end is "still trying"
    n = written = 0
    t = T0
    port = 10000
    with open(path, "wb") as f:
        w = PcapngWriter(f, application="bench/replay.py")
        ifc = w.add_interface("eth0")
        while written < packets:
            kind = rng.choice(kinds)
            expected[MIX[kind][1]] = expected.get(MIX[kind][1], 0) + 1
            port = port + 1 if port < 60000 else 10000
            frames = connection(kind, rng.choice(pairs), port, 80, t, rng)
            if kind == "timeout":
                last_syns.append(frames[-1][0])
                del last_syns[:-64]
            for ts, frame in frames:
                n += 1
                heapq.heappush(heap, (ts, n, frame))
            t += S // RATE
            while heap and heap[0][0] < t:
                ts, _, frame = heapq.heappop(heap)
                w.write_packet(ifc, ts, frame)
                written += 1
        end = 0
        while heap:
            ts, _, frame = heapq.heappop(heap)
            w.write_packet(ifc, ts, frame)
            written += 1
            end = ts
    still = sum(1 for ts in last_syns if end - ts < S)  # MIN_RTO_S of verifier.analysis.classify
    if still:
        expected["timed-out"] -= still
        expected["incomplete"] = still
    return {"packets": written, "attempts": sum(expected.values()), "outcomes": expected}


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from verifier.replay.fastpath import ScanStats, scan, scan_raw
path, mode = sys.argv[2], sys.argv[3]
st = ScanStats()
t = time.perf_counter()
counts = {}
if mode == "raw":
    counts = scan_raw(path, stats=st)
else:
    for r in scan(path, engine="c" if mode == "records" else "python", stats=st):
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "packets": st.packets, "outcomes": counts,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_ours(path: Path, mode: str) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", _CHILD, root, str(path), mode], capture_output=True, text=True,
                         timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"classification ({mode}) failed: {res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout)


def run_tshark(path: Path) -> float | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    t = time.perf_counter()
    res = subprocess.run([tshark, "-q", "-z", "conv,tcp", "-r", str(path)], capture_output=True, text=True,
                         timeout=3600)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"tshark failed: {res.stderr.strip()[-500:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=200_000, help="packets in the smaller capture (default 200000)")
    ap.add_argument("--big-factor", type=int, default=5, help="the larger capture is this many times bigger")
    ap.add_argument("--keep", metavar="DIR", help="write the captures here and keep them")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    if args.packets < 1000:
        ap.error("--packets must be at least 1000")

    from verifier.replay.fastpath import build_engine

    build_engine()  # compile once, outside the timed runs
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-replay-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in (args.packets, args.packets * args.big_factor):
            path = tmp / f"mix-{size}.pcapng"
            t = time.perf_counter()
            info = generate(path, size)
            gen_s = time.perf_counter() - t
            row = {"file": str(path), "packets": info["packets"], "attempts": info["attempts"],
                   "bytes": path.stat().st_size, "generate_s": gen_s}
            for mode in ("raw", "records") + (("python",) if size == args.packets else ()):
                r = run_ours(path, mode)
                if r["packets"] != info["packets"]:
                    raise SystemExit(f"{mode}: read {r['packets']} packets, wrote {info['packets']}")
                if r["outcomes"] != info["outcomes"]:
                    raise SystemExit(f"{mode}: outcomes {r['outcomes']} != generated {info['outcomes']}")
                row[mode] = r
            row["tshark_s"] = run_tshark(path)
            results.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"replay classification vs tshark -q -z conv,tcp, {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}")
    for row in results:
        n = row["packets"]
        print(f"\n{n} packets, {row['attempts']} connection attempts, {row['bytes'] / 1e6:.1f} MB "
              f"(generated in {row['generate_s']:.1f} s)")
        for mode, label in (("raw", "ours, C engine (classification)"), ("records", "ours, C engine + records"),
                            ("python", "ours, Python engine")):
            if mode in row:
                r = row[mode]
                pps = n / r["seconds"]
                speed = f"  {row['tshark_s'] / r['seconds']:5.1f}x tshark" if row["tshark_s"] else ""
                print(f"  {label:<34} {r['seconds']:7.3f} s  {pps / 1e6:6.2f} M packets/s{speed}  "
                      f"peak RSS {r['maxrss_kb'] / 1024:6.1f} MB")
        if row["tshark_s"] is not None:
            print(f"  {'tshark -q -z conv,tcp':<34} {row['tshark_s']:7.3f} s  {n / row['tshark_s'] / 1e6:6.2f} M packets/s")
        else:
            print("  tshark: not installed (make setup installs it)")
    small, big = results
    print(f"\npeak RSS, C engine with records: {small['records']['maxrss_kb'] / 1024:.1f} MB for "
          f"{small['packets']} packets, {big['records']['maxrss_kb'] / 1024:.1f} MB for {big['packets']} packets")
    raw_pps = small["packets"] / small["raw"]["seconds"]
    ok_pps = raw_pps >= 1_000_000
    ok_tshark = small["tshark_s"] is not None and small["tshark_s"] / small["raw"]["seconds"] >= 5
    print(f"targets: >= 1,000,000 packets/s: {'met' if ok_pps else 'NOT met'} ({raw_pps / 1e6:.2f} M); "
          f">= 5x tshark: {'met' if ok_tshark else 'NOT met'}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
