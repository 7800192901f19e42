"""Benchmark: `verifier replay` end to end, as the user runs it, next to `tshark -q -z conv,tcp`.

    .venv/bin/python bench/replay.py [--packets N] [--runs N] [--keep DIR] [--json]

Generates, once per run (in a temporary directory, or in --keep DIR, where they are reused on the
next run), three captures:

* mix-N: N packets (default 1,000,000) of a steady mix of TCP connection attempts over IPv4 and IPv6:
  full exchanges closed with FIN, refusals (RST), timeouts (the Linux SYN schedule with
  tcp_syn_retries=2: six SYNs over five seconds), ICMP host-unreachable answers to SYNs, and
  connections reset after the handshake. The generator knows how many attempts of each outcome it
  wrote.
* mix-N/5 (default 200,000): the same mix, smaller, to show that memory stays flat as the file grows.
* flood-N: a SYN flood of N distinct 4-tuples (one SYN each, distinct source addresses and ports in the
  documentation ranges, IPv4 and IPv6), a small fraction answered (SYN-ACK or RST), at 10,000 SYNs
  per second of capture time: more live attempts than the default --max-connections, so the table's
  memory cap must evict.

Then, in this one run, on this machine, each as its own process, best of --runs (default 3) for the
wall time, with the peak RSS of that process (ru_maxrss from wait4; the largest over the runs):

* `.venv/bin/verifier replay FILE --json > /dev/null`  (the headline: packets/s end to end, JSON out)
* `.venv/bin/verifier replay FILE > /dev/null`         (the table)
* the same --json run with PATH holding no C compiler (the engine is compiled at install, not at run
  time: same speed expected), also traced once with strace, when there is one, to list every program
  the run executes
* the floor: a Python process reading the file in 1 MiB chunks (open + readinto), and `cat FILE`
* `tshark -q -z conv,tcp -r FILE > /dev/null`          (the peer tool, measured here, in this run)

Before the timed runs, one untimed `--json` run per file is checked: the packets and attempts of
the summary, and the attempts' outcome counts, SYN counts and time fields, against what the
generator wrote; on the flood, the eviction count of the summary line ("N attempts evicted by the
memory cap") against the attempts marked evicted. All files are in the page cache when timed (they
were just written and read), so the figures are CPU figures, not disk ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifier.pcap import PcapngWriter  # noqa: E402
from verifier.wire import internet_checksum  # noqa: E402

T0 = 1_700_000_000 * 10**9
MS = 1_000_000
S = 1_000_000_000
RATE = 20  # connection attempts started per second of capture time (the mixed captures)
GENERATOR_VERSION = 3  # bump when a generator changes: --keep DIR then regenerates

# targets
TARGET_PPS = 1_500_000  # end to end, --json, on the 1 M mixed capture
TARGET_X_TSHARK = 10.0
TARGET_RSS_MB = 200.0  # peak RSS, on the flood and on the 1 M mixed capture
TARGET_FLAT = 1.10  # peak RSS of the 1 M mixed capture at most this times that of the 200 k one
TARGET_NOCC = 1.10  # the run without a compiler on PATH at most this times the normal one


# ---------------------------------------------------------------------------------------------------
# the mixed capture


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


# kind -> (weight, expected outcome, SYNs it sends)
MIX = {"closed": (5, "closed", 1), "refused": (2, "refused", 1), "timeout": (1, "timed-out", 6),
       "unreachable": (1, "unreachable", 2), "reset": (1, "reset", 1)}


def generate(path: Path, packets: int, seed: int = 1) -> dict:
    """Write a capture of at least `packets` frames; returns what it holds (counts per outcome)."""
    rng = random.Random(seed)
    pairs = [Frames(4, bytes([192, 0, 2, 10 + i]), bytes([203, 0, 113, 2 + i % 3]), bytes([192, 0, 2, 1]))
             for i in range(8)]
    pairs += [Frames(6, bytes.fromhex("20010db8000100000000000000000%03x" % (16 + i)),
                     bytes.fromhex("20010db800020000000000000000000%x" % (2 + i % 3)),
                     bytes.fromhex("20010db8000100000000000000000001")) for i in range(8)]
    kinds = [k for k, (w, _, _) in MIX.items() for _ in range(w)]
    expected: dict[str, int] = {}
    syns = 0
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
            syns += MIX[kind][2]
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
    # verifier.analysis.attempt.MIN_RTO_S: an unanswered attempt whose last SYN is less than 1 s before
    # the end of the capture is "incomplete" (still trying), not "timed-out"
    still = sum(1 for ts in last_syns if end - ts < S)
    if still:
        expected["timed-out"] -= still
        expected["incomplete"] = still
    return {"kind": "mixed", "packets": written, "attempts": sum(expected.values()), "outcomes": expected,
            "syns": syns}


# ---------------------------------------------------------------------------------------------------
# the SYN flood

FLOOD_SPACING_NS = 100_000  # 10,000 SYNs per second of capture time
FLOOD_ANSWER_EVERY = 50  # one SYN in 50 is answered: alternately SYN-ACK and RST (refused)
FLOOD_ANSWER_NS = 40_000  # answers come 40 us after their SYN (before the next SYN: no reordering)


def _v4_sources() -> list[bytes]:
    return [bytes([198, 51, 100, h]) for h in range(1, 255)] + [bytes([203, 0, 113, h]) for h in range(1, 255)]


def generate_flood(path: Path, attempts: int, seed: int = 2) -> dict:
    """A SYN flood: `attempts` distinct 4-tuples with one SYN each, half IPv4 (508 source addresses in
    198.51.100.0/24 and 203.0.113.0/24, a new source port each round over them), half IPv6 (a new
    source address in 2001:db8:f000::/36 each), to 192.0.2.80:80 and [2001:db8::80]:80; one in
    FLOOD_ANSWER_EVERY answered, alternately by a SYN-ACK (never acknowledged) and a RST (refused)."""
    rng = random.Random(seed)
    v4src = _v4_sources()
    v4dst, v6dst = bytes([192, 0, 2, 80]), bytes.fromhex("20010db8000000000000000000000080")
    eth_cs4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    eth_sc4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    eth_cs6, eth_sc6 = eth_cs4[:12] + b"\x86\xdd", eth_sc4[:12] + b"\x86\xdd"
    pack_ip4 = struct.Struct("!BBHHHBBH4s4s").pack
    pack_ip6 = struct.Struct("!IHBB16s16s").pack
    pack_tcp = struct.Struct("!HHIIBBHHH").pack

    def ip4(src: bytes, dst: bytes, seg: bytes) -> bytes:
        hdr = pack_ip4(0x45, 0, 20 + len(seg), 0, 0x4000, 64, 6, 0, src, dst)
        return hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:] + seg

    expected = {"refused": 0, "synack": 0, "unanswered": 0}
    sent = set() if attempts <= 2_000_000 else None  # proof that the 4-tuples are distinct
    written = 0
    with open(path, "wb") as f:
        w = PcapngWriter(f, application="bench/replay.py (SYN flood)")
        ifc = w.add_interface("eth0")
        wp = w.write_packet
        t = T0
        for i in range(attempts):
            j = i >> 1
            isn = rng.getrandbits(32)
            if i & 1 == 0:
                src, dst = v4src[j % len(v4src)], v4dst
                sport = 1024 + j // len(v4src)
                syn = eth_cs4 + ip4(src, dst, pack_tcp(sport, 80, isn, 0, 5 << 4, SYN, 64240, 0, 0))
            else:
                src, dst = b"\x20\x01\x0d\xb8\xf0\x00" + j.to_bytes(10, "big"), v6dst
                sport = 1024 + rng.randrange(64512)
                syn = eth_cs6 + pack_ip6(0x60000000, 20, 6, 64, src, dst) + pack_tcp(sport, 80, isn, 0, 5 << 4, SYN,
                                                                                      64240, 0, 0)
            if sent is not None:
                sent.add((src, sport))
            wp(ifc, t, syn)
            written += 1
            if i % FLOOD_ANSWER_EVERY == FLOOD_ANSWER_EVERY - 1:
                k = i // FLOOD_ANSWER_EVERY
                if k & 1:
                    flags, seq, what = RST | ACK, 0, "refused"
                else:
                    flags, seq, what = SYN | ACK, rng.getrandbits(32), "synack"
                seg = pack_tcp(80, sport, seq, (isn + 1) & 0xFFFFFFFF, 5 << 4, flags, 64240, 0, 0)
                if i & 1 == 0:
                    frame = eth_sc4 + ip4(dst, src, seg)
                else:
                    frame = eth_sc6 + pack_ip6(0x60000000, 20, 6, 64, dst, src) + seg
                wp(ifc, t + FLOOD_ANSWER_NS, frame)
                written += 1
                expected[what] += 1
            else:
                expected["unanswered"] += 1
            t += FLOOD_SPACING_NS
    if sent is not None and len(sent) != attempts:
        raise SystemExit(f"flood generator: {attempts - len(sent)} repeated 4-tuples")
    del sent
    # The outcomes (verifier.analysis.attempt): a RST answering the SYN (ACK = ISN + 1): refused; a
    # SYN-ACK never acknowledged: incomplete; an unanswered SYN: timed-out, or incomplete (still
    # trying) when the capture ends less than MIN_RTO_S = 1 s after it. Eviction by the memory cap
    # finishes the oldest unanswered attempts early, seconds after their SYN: timed-out too.
    last = attempts - 1
    end = T0 + last * FLOOD_SPACING_NS + (FLOOD_ANSWER_NS if last % FLOOD_ANSWER_EVERY == FLOOD_ANSWER_EVERY - 1 else 0)
    still = 0
    i = last
    while i >= 0 and end - (T0 + i * FLOOD_SPACING_NS) < S:
        still += i % FLOOD_ANSWER_EVERY != FLOOD_ANSWER_EVERY - 1
        i -= 1
    outcomes = {"refused": expected["refused"], "incomplete": expected["synack"] + still,
                "timed-out": expected["unanswered"] - still}
    return {"kind": "flood", "packets": written, "attempts": attempts, "answers": expected, "syns": attempts,
            "outcomes": {k: v for k, v in outcomes.items() if v}, "capture_s": attempts * FLOOD_SPACING_NS / S}


# ---------------------------------------------------------------------------------------------------
# processes, measured


def _verifier_cmd() -> Path:
    for cand in (ROOT / ".venv" / "bin" / "verifier", Path(sys.executable).with_name("verifier")):
        if cand.exists():
            return cand
    raise SystemExit("bench/replay.py: no .venv/bin/verifier: run `make setup` first")


GNU_TIME = "/usr/bin/time"


def run_once(argv: list[str], env: dict | None = None) -> dict:
    """Run `argv` with stdout to /dev/null; its wall time, peak RSS, status and stderr.

    The peak RSS is the child's ru_maxrss as GNU time reports it (%M): a process forked from this one
    would start as a copy of this (large) Python process, and Linux keeps the pre-exec image's RSS
    in the child's ru_maxrss, so every child would seem to be at least as big as the benchmark
    itself; GNU time is a small process, so the command it forks starts small. The wall time is
    taken here, around the whole (GNU time adds a fork + exec, under a millisecond, to every row alike).
    Without /usr/bin/time, the RSS is the wait4 figure and marked as an upper bound."""
    use_time = os.path.exists(GNU_TIME)
    with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [GNU_TIME, "-f", "%M", "-o", tf.name, *argv] if use_time else argv
        t = time.perf_counter()
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=devnull, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, by wait4
        err.seek(0)
        text = err.read().decode(errors="replace")
        rss_kb, exact = ru.ru_maxrss, False
        if use_time:
            lines = tf.read().split()
            if not lines or not lines[-1].isdigit():
                raise SystemExit(f"{GNU_TIME} gave no %M for {' '.join(argv)}: {lines}")
            rss_kb, exact = int(lines[-1]), True
    return {"seconds": dt, "maxrss_kb": rss_kb, "rss_exact": exact, "rc": p.returncode, "stderr": text}


class Measure:
    """One command on one file, best of several runs."""

    def __init__(self, label: str, argv: list[str], env: dict | None = None, ok_rc=(0,)) -> None:
        self.label, self.argv, self.env, self.ok_rc = label, argv, env, ok_rc
        self.runs: list[dict] = []

    def run(self) -> None:
        r = run_once(self.argv, self.env)
        if r["rc"] not in self.ok_rc:
            raise SystemExit(f"{self.label}: exit status {r['rc']} from {' '.join(self.argv)}\n"
                             f"{r['stderr'].strip()[-2000:]}")
        self.runs.append(r)

    @property
    def best_s(self) -> float:
        return min(r["seconds"] for r in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        return max(r["maxrss_kb"] for r in self.runs) * 1024 / 1e6

    @property
    def stderr(self) -> str:
        return self.runs[-1]["stderr"]

    def as_json(self) -> dict:
        return {"label": self.label, "argv": self.argv, "best_s": self.best_s,
                "runs_s": [r["seconds"] for r in self.runs], "peak_rss_mb": self.peak_rss_mb,
                "rss_mb_runs": [r["maxrss_kb"] * 1024 / 1e6 for r in self.runs]}


COMPILER_NAMES = ("cc", "gcc", "g++", "c++", "c89", "c99", "c89-gcc", "c99-gcc", "clang", "clang++", "tcc", "icc",
                  "icx", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++", "ld", "ld.bfd", "ld.gold", "cython", "cythonize")
_COMPILER_RE = re.compile(r"(^|[-_])(cc|gcc|g\+\+|c\+\+|clang(\+\+)?|tcc|icc|icx|c89|c99)(-[0-9.]+)?$")


def no_compiler_env(tmp: Path) -> tuple[dict, Path, list[str]]:
    """An environment whose PATH is one directory holding symlinks to a few harmless tools only (no C
    compiler, no linker, no Cython), and without CC/CXX/LDSHARED; checked with shutil.which. Returns
    (env, the directory, what was found there that should not be: empty)."""
    d = tmp / "bin-no-compiler"
    d.mkdir(exist_ok=True)
    for tool in ("sh", "cat", "env", "uname", "ls"):
        src = shutil.which(tool)
        if src and not (d / tool).exists():
            (d / tool).symlink_to(src)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX", "LDSHARED", "CFLAGS", "LDFLAGS", "CPP")}
    env["PATH"] = str(d)
    names = set(COMPILER_NAMES)
    cc = (sysconfig.get_config_var("CC") or "").split()
    if cc:
        names.add(os.path.basename(cc[0]))
    found = [f"{n} -> {shutil.which(n, path=env['PATH'])}" for n in sorted(names) if shutil.which(n, path=env["PATH"])]
    for entry in os.listdir(d):
        if _COMPILER_RE.search(entry):
            found.append(f"{entry} in {d}")
    return env, d, found


def strace_execs(argv: list[str], env: dict, tmp: Path) -> list[str] | str:
    """Every program `argv` and its children execute (strace -f -e execve), or why that is not known."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace not installed"
    log = tmp / "strace.log"
    with open(os.devnull, "wb") as devnull:
        res = subprocess.run([strace, "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", str(log), *argv],
                             stdout=devnull, stderr=subprocess.PIPE, env=env, timeout=600)
    if res.returncode != 0 or not log.exists():
        return f"strace failed (exit {res.returncode}): {res.stderr.decode(errors='replace').strip()[-300:]}"
    progs = []
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r'execve\("([^"]+)"', line)
        if m and "= 0" in line.rsplit(")", 1)[-1] and m.group(1) not in progs:
            progs.append(m.group(1))
    return progs


_SUMMARY_RE = re.compile(r"capture .*?: (\w+), (\d+) packets, (\d+) TCP segments, (\d+) TCP connection attempt\(s\) "
                         r"\[(\w+) engine\]")
_EVICTED_RE = re.compile(r"(\d+) attempts evicted by the memory cap")


def summary_of(stderr: str) -> dict:
    m = _SUMMARY_RE.search(stderr)
    if m is None:
        raise SystemExit(f"no summary line on stderr:\n{stderr.strip()[-2000:]}")
    ev = _EVICTED_RE.search(stderr)
    return {"format": m.group(1), "packets": int(m.group(2)), "tcp": int(m.group(3)), "attempts": int(m.group(4)),
            "engine": m.group(5), "evicted": int(ev.group(1)) if ev else 0}


_TIME_FIELDS = ("duration_s", "rtt_s")


def check_run(verifier: Path, path: Path, info: dict) -> dict:
    """One untimed `verifier replay FILE --json`, its output read and checked against what the generator
    wrote. Returns what was found (raises SystemExit on a mismatch)."""
    t = time.perf_counter()
    p = subprocess.Popen([str(verifier), "replay", str(path), "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    outcomes: dict[str, int] = {}
    evicted_outcomes: dict[str, int] = {}
    evicted = syns = lines = 0
    bad_times = []
    parse = json.JSONDecoder(parse_float=Decimal).decode  # times are exact decimals (s, to the ns): keep them exact
    full = info["kind"] == "mixed"
    fast_outcome = re.compile(rb'"outcome": ?"([^"]+)"')
    fast_evicted = re.compile(rb'"evicted": ?true')
    for line in p.stdout:
        lines += 1
        if full:
            a = parse(line.decode())
            outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
            syns += a["syn_count"]
            evicted += a["evicted"] is True
            if a["duration_s"] * 10**9 != a["end_ns"] - a["start_ns"] and len(bad_times) < 5:
                bad_times.append(f"attempt {a['id']}: duration_s {a['duration_s']} != end_ns - start_ns")
            for k in _TIME_FIELDS:
                v = a[k]
                if v is not None and not isinstance(v, Decimal) and len(bad_times) < 5:
                    bad_times.append(f"attempt {a['id']}: {k} = {v!r} is not a decimal")
            for v in a["syn_times_s"]:
                if not isinstance(v, Decimal) and len(bad_times) < 5:
                    bad_times.append(f"attempt {a['id']}: syn_times_s holds {v!r}")
        else:  # the flood: a million lines, read the two fields only
            m = fast_outcome.search(line)
            o = m.group(1).decode() if m else "?"
            outcomes[o] = outcomes.get(o, 0) + 1
            if fast_evicted.search(line):
                evicted += 1
                evicted_outcomes[o] = evicted_outcomes.get(o, 0) + 1
    stderr = p.stderr.read().decode(errors="replace")
    rc = p.wait()
    dt = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"check run of {path}: exit status {rc}\n{stderr.strip()[-2000:]}")
    summ = summary_of(stderr)
    problems = []
    if summ["packets"] != info["packets"]:
        problems.append(f"summary: {summ['packets']} packets, the generator wrote {info['packets']}")
    if summ["attempts"] != info["attempts"] or lines != info["attempts"]:
        problems.append(f"{summ['attempts']} attempts in the summary, {lines} JSON lines; "
                        f"the generator wrote {info['attempts']}")
    if summ["engine"] != "compiled":
        problems.append(f"the {summ['engine']} engine ran, not the compiled one")
    got = {k: v for k, v in outcomes.items() if v}
    if got != info["outcomes"]:
        problems.append(f"outcomes {dict(sorted(got.items()))} != generated {dict(sorted(info['outcomes'].items()))}")
    if full:
        if syns != info["syns"]:
            problems.append(f"{syns} SYNs counted over the attempts, the generator wrote {info['syns']}")
        if evicted or summ["evicted"]:
            problems.append(f"{evicted} attempts evicted on a capture with few live attempts")
        problems += bad_times
    else:
        if evicted != summ["evicted"]:
            problems.append(f"{evicted} attempts marked evicted in the JSON, the summary says {summ['evicted']}")
        if set(evicted_outcomes) - {"timed-out", "incomplete", "refused"}:  # nothing else is in the flood
            problems.append(f"outcomes of the evicted attempts: {evicted_outcomes}")
        from verifier.analysis.grouper import DEFAULT_MAX_CONNECTIONS

        if info["attempts"] > 2 * DEFAULT_MAX_CONNECTIONS and not evicted:
            problems.append(f"{info['attempts']} live 4-tuples and no eviction (cap {DEFAULT_MAX_CONNECTIONS})")
    if problems:
        raise SystemExit(f"check of {path.name} FAILED:\n  " + "\n  ".join(problems))
    return {"seconds": dt, "lines": lines, "outcomes": dict(sorted(outcomes.items())), "evicted": evicted,
            "evicted_outcomes": evicted_outcomes, "summary": summ, "syns": syns if full else None}


# ---------------------------------------------------------------------------------------------------


def _capture(tmp: Path, name: str, gen, size: int, reuse: bool, say) -> tuple[Path, dict, float | None]:
    path, meta = tmp / f"{name}.pcapng", tmp / f"{name}.json"
    want = {"generator": GENERATOR_VERSION, "size": size}
    if reuse and path.exists() and meta.exists():
        try:
            m = json.loads(meta.read_text())
        except ValueError:
            m = {}
        if m.get("params") == want and m.get("bytes") == path.stat().st_size:
            say(f"reusing {path} ({m['info']['packets']} packets)")
            return path, m["info"], None
    say(f"generating {path} ...")
    t = time.perf_counter()
    info = gen(path, size)
    dt = time.perf_counter() - t
    meta.write_text(json.dumps({"params": want, "bytes": path.stat().st_size, "info": info}))
    return path, info, dt


def _size(n: int) -> str:
    """1000000 -> "1 M", 200000 -> "200 k"."""
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g} M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000} k"
    return str(n)


_READ_FLOOR = ("import sys\nf = open(sys.argv[1], 'rb', buffering=0)\nb = bytearray(1 << 20)\nr = f.readinto\n"
               "while r(b):\n    pass\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000,
                    help="packets in the large mixed capture, and 4-tuples in the SYN flood (default 1000000); "
                         "the small mixed capture has this / --big-factor")
    ap.add_argument("--big-factor", type=int, default=5, help="the large mixed capture is this many times the small "
                                                              "one (default 5)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each command; the best wall time counts (default 3)")
    ap.add_argument("--keep", metavar="DIR", help="write the captures here and keep them; reuse them when present")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON on stdout (the table goes to "
                                                        "stderr)")
    args = ap.parse_args()
    if args.packets < 5000:
        ap.error("--packets must be at least 5000")
    if args.big_factor < 2:
        ap.error("--big-factor must be at least 2")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    out = sys.stderr if args.json else sys.stdout

    def say(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    vcmd = _verifier_cmd()
    from verifier import engine

    # The command's Python modules byte-compiled, as any first run leaves them (here
    # PYTHONDONTWRITEBYTECODE may be set, and an editable install compiles nothing): otherwise every
    # timed run would compile them again (about 40 ms).
    pyc = subprocess.run([str(vcmd.with_name("python")), "-m", "compileall", "-q", str(ROOT / "verifier"),
                          str(ROOT / "netns")], capture_output=True, text=True)
    byte_compiled = "byte-compiled" if pyc.returncode == 0 else f"NOT byte-compiled ({pyc.stdout.strip()[-200:]})"

    eng = engine.status()
    stale = engine.stale()
    tshark = shutil.which("tshark")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-replay-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    files = []
    try:
        big, small = args.packets, args.packets // args.big_factor
        specs = [("mix-%d" % big, generate, big), ("mix-%d" % small, generate, small),
                 ("flood-%d" % big, generate_flood, big)]
        for name, gen, size in specs:
            path, info, gen_s = _capture(tmp, name, gen, size, bool(args.keep), say)
            files.append({"name": name, "path": path, "info": info, "generate_s": gen_s,
                          "bytes": path.stat().st_size})

        nocc_env, nocc_dir, nocc_found = no_compiler_env(tmp)
        nocc_tools = sorted(os.listdir(nocc_dir))
        if nocc_found:
            raise SystemExit(f"the no-compiler PATH {nocc_dir} still finds: {', '.join(nocc_found)}")

        for fl in files:
            say(f"checking {fl['name']} (one untimed --json run, output parsed) ...")
            fl["check"] = check_run(vcmd, fl["path"], fl["info"])

        say("tracing one --json run without a compiler on PATH (strace -f -e execve) ...")
        execs = strace_execs([str(vcmd), "replay", str(files[0]["path"]), "--json"], nocc_env, tmp)

        for fl in files:
            p = str(fl["path"])
            ms = [Measure("verifier replay --json", [str(vcmd), "replay", p, "--json"]),
                  Measure("verifier replay (table)", [str(vcmd), "replay", p])]
            if fl is files[0]:
                ms.append(Measure("verifier replay --json, no compiler on PATH", [str(vcmd), "replay", p, "--json"],
                                  env=nocc_env))
            ms += [Measure("floor: python, read in 1 MiB chunks", [sys.executable, "-c", _READ_FLOOR, p]),
                   Measure("floor: cat FILE", [shutil.which("cat") or "/bin/cat", p])]
            if tshark:
                ms.append(Measure("tshark -q -z conv,tcp", [tshark, "-q", "-z", "conv,tcp", "-r", p]))
            say(f"timing {fl['name']}: {len(ms)} commands x {args.runs} runs ...")
            for _ in range(args.runs):  # interleaved: a drift of the machine hits every command alike
                for m in ms:
                    m.run()
            fl["measures"] = ms
            for m in ms:
                if m.label.startswith("verifier") and "--json" in m.argv:  # (the table has it on stdout)
                    s = summary_of(m.stderr)
                    if s["engine"] != "compiled" or s["packets"] != fl["info"]["packets"]:
                        raise SystemExit(f"{m.label} on {fl['name']}: {s}")
                    fl.setdefault("timed_summary", {})[m.label] = s
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    total_s = time.perf_counter() - t_start

    # ----- the figures
    def get(fl, label):
        return next((m for m in fl["measures"] if m.label == label), None)

    mix, mix_small, flood = files
    big_n, small_n = _size(args.packets), _size(args.packets // args.big_factor)
    J, N = "verifier replay --json", "verifier replay --json, no compiler on PATH"
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    pr = lambda *a: print(*a, file=out)  # noqa: E731
    pr(f"verifier replay end to end vs tshark -q -z conv,tcp, each a process, best of {args.runs} runs; "
       f"{os.cpu_count()} CPUs ({model}), kernel {os.uname().release}, Python {platform.python_version()}, "
       f"{'tshark ' + subprocess.run([tshark, '--version'], capture_output=True, text=True).stdout.split()[2] if tshark else 'no tshark'}")
    pr(f"engine: {', '.join(m.rsplit('.', 1)[1] + ('' if s['compiled'] else ' NOT compiled') for m, s in eng.items())}"
       + (f"; WARNING: builds older than their sources (make setup): {', '.join(stale)}" if stale else
          "; builds current") + f"; Python modules {byte_compiled} (__pycache__, as a first run leaves them)")
    exact = all(r["rss_exact"] for fl in files for m in fl["measures"] for r in m.runs)
    pr(f"command: {vcmd}; seconds: best wall time of the process; peak RSS: "
       + ("each command's ru_maxrss as GNU time reports it (%M), the largest over the runs" if exact else
          "wait4's ru_maxrss (no /usr/bin/time: an UPPER BOUND, it includes this benchmark's own image at fork)"))
    for fl in files:
        info, ms = fl["info"], fl["measures"]
        ts = get(fl, "tshark -q -z conv,tcp")
        what = (f"{info['attempts']} attempts (mixed: {', '.join(f'{k} {v}' for k, v in sorted(info['outcomes'].items()))})"
                if info["kind"] == "mixed" else
                f"{info['attempts']} distinct 4-tuples, one SYN each, {info['answers']['synack']} answered by SYN-ACK, "
                f"{info['answers']['refused']} by RST, over {info['capture_s']:.0f} s")
        gen = f"generated in {fl['generate_s']:.1f} s" if fl["generate_s"] is not None else "reused"
        pr(f"\n{fl['path'].name}: {info['packets']} packets, {fl['bytes'] / 1e6:.1f} MB, {what}; {gen}")
        pr(f"  {'command':<46} {'packets':>9} {'seconds':>8} {'M pkt/s':>8} {'x tshark':>9} {'peak RSS':>10}")
        for m in ms:
            xt = "" if ts is None or m is ts else f"{ts.best_s / m.best_s:8.1f}x"
            pr(f"  {m.label:<46} {info['packets']:>9} {m.best_s:8.3f} {info['packets'] / m.best_s / 1e6:8.2f} "
               f"{xt:>9} {m.peak_rss_mb:7.1f} MB")
        if ts is None:
            pr("  tshark: not installed, left out (make setup installs it)")
        c = fl["check"]
        if info["kind"] == "mixed":
            pr(f"  check: {c['lines']} JSON lines; outcomes {', '.join(f'{k} {v}' for k, v in c['outcomes'].items())} "
               f"= generated; {c['syns']} SYNs = generated; durations exact decimals = end_ns - start_ns")
        else:
            pr(f"  check: {c['lines']} JSON lines (one per 4-tuple); outcomes "
               f"{', '.join(f'{k} {v}' for k, v in c['outcomes'].items())} = expected from the generator; "
               f"evicted by the memory cap (default --max-connections): {c['summary']['evicted']} in the summary line "
               f"= {c['evicted']} marked evicted in the JSON "
               f"({', '.join(f'{k} {v}' for k, v in sorted(c['evicted_outcomes'].items())) or 'none'})")
    if isinstance(execs, list):
        pr(f"\nno compiler on PATH ({nocc_dir}: {', '.join(nocc_tools)}; shutil.which finds none of "
           f"{', '.join(sorted(set(COMPILER_NAMES)))}): the traced run executed only {', '.join(execs)}")
    else:
        pr(f"\nno compiler on PATH ({nocc_dir}); programs executed: not known ({execs})")

    j, jn = get(mix, J), get(mix, N)
    ts = get(mix, "tshark -q -z conv,tcp")
    pps = mix["info"]["packets"] / j.best_s
    fj = get(flood, J)
    sj = get(mix_small, J)
    targets = [
        (f"end to end with --json, {big_n} mixed capture", f">= {TARGET_PPS / 1e6:.1f} M packets/s",
         f"{pps / 1e6:.2f} M packets/s", pps >= TARGET_PPS),
        (f"vs tshark, {big_n} mixed capture, --json", f">= {TARGET_X_TSHARK:.0f}x tshark",
         f"{ts.best_s / j.best_s:.1f}x" if ts else "tshark not installed", bool(ts) and ts.best_s / j.best_s >= TARGET_X_TSHARK),
        ("peak RSS, SYN flood, --json", f"< {TARGET_RSS_MB:.0f} MB", f"{fj.peak_rss_mb:.1f} MB "
         f"({flood['check']['summary']['evicted']} evicted)", fj.peak_rss_mb < TARGET_RSS_MB),
        (f"peak RSS, {big_n} mixed capture, --json", f"< {TARGET_RSS_MB:.0f} MB", f"{j.peak_rss_mb:.1f} MB",
         j.peak_rss_mb < TARGET_RSS_MB),
        (f"memory flat, {small_n} -> {big_n} mixed (--json)", f"<= {TARGET_FLAT:.2f}x",
         f"{sj.peak_rss_mb:.1f} MB -> {j.peak_rss_mb:.1f} MB ({j.peak_rss_mb / sj.peak_rss_mb:.2f}x)",
         j.peak_rss_mb <= TARGET_FLAT * sj.peak_rss_mb),
        ("no compiler on PATH: same speed (--json)", f"within {(TARGET_NOCC - 1) * 100:.0f} %",
         f"{jn.best_s:.3f} s vs {j.best_s:.3f} s ({(jn.best_s / j.best_s - 1) * 100:+.1f} %)",
         jn.best_s <= TARGET_NOCC * j.best_s),
    ]
    pr("\ntargets")
    for what, target, got, ok in targets:
        pr(f"  {what:<48} {target:<18} {got:<40} {'met' if ok else 'NOT met'}")
    pr(f"\n(total {total_s:.0f} s; files in the page cache; wall time = fork + exec + interpreter start + the run)")

    if args.json:
        fig = {
            "machine": {"cpus": os.cpu_count(), "cpu": model, "kernel": os.uname().release,
                        "python": platform.python_version()},
            "engine": eng, "engine_stale": stale, "runs": args.runs, "command": str(vcmd),
            "files": [{"name": fl["name"], "kind": fl["info"]["kind"], "packets": fl["info"]["packets"],
                       "attempts": fl["info"]["attempts"], "bytes": fl["bytes"], "generate_s": fl["generate_s"],
                       "generated": {k: v for k, v in fl["info"].items() if k not in ("kind",)},
                       "check": fl["check"],
                       "measures": [dict(m.as_json(), mpps=fl["info"]["packets"] / m.best_s / 1e6) for m in fl["measures"]]}
                      for fl in files],
            "no_compiler": {"path": str(nocc_dir), "tools": nocc_tools, "executed": execs},
            "targets": [{"what": w, "target": t, "got": g, "met": ok} for w, t, g, ok in targets],
        }
        print(json.dumps(fig, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
