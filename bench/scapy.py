"""Benchmark: a Scapy `sr1` round trip from a testbed host, `Host.sr1` (the packet agent) against plain
Scapy `srp1` from a process that is already in the host's namespace, in the same run.

The probe is the README's: a SYN from the client to a listener on the server (routed testbed, IPv4),
answered by a SYN-ACK; each probe has its own source port. `Host.sr1` is timed in this process, call
by call, end to end (building the packet, the agent's round trip, the answer dissected); the plain
Scapy process (started in the client's namespace, Scapy imported, warmed up) times each of its own
`srp1` calls (at layer 2 on `c0`, the router's MAC given, as docs/environment.md says works there),
and of the same probe through one Scapy L2 socket kept open (`conf.L2socket(iface).sr1`). The
contestants take turns in rounds, so that both see the same load. Prints the figures; needs root.

    sudo .venv/bin/python bench/scapy.py [--probes 200] [--rounds 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# This file's own folder first on the path would make `import scapy` find this file: the repository instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

from netns import Testbed, namespace  # noqa: E402

TARGET_RATIO = 2.0
LISTEN = "import socket, time; s = socket.create_server(('', 5000), backlog=1024); time.sleep(3600)"
PLAIN = r'''
import json, sys, time
from scapy.all import Ether, IP, TCP, conf, srp1
conf.verb = 0
dst, src, mac, smac = sys.argv[1:5]
port = 20000
def probe():
    global port
    port += 1
    t = time.perf_counter()
    ans = srp1(Ether(dst=mac, src=smac) / IP(src=src, dst=dst) / TCP(sport=port, dport=5000, flags="S", seq=4242),
               iface="c0", timeout=2)
    dt = time.perf_counter() - t
    assert ans is not None and ans[TCP].flags == "SA" and ans[TCP].ack == 4243, ans
    return dt
sock = conf.L2socket(iface="c0")
def kept():
    global port
    port += 1
    t = time.perf_counter()
    ans = sock.sr1(Ether(dst=mac, src=smac) / IP(src=src, dst=dst) / TCP(sport=port, dport=5000, flags="S", seq=4242),
                   timeout=2)
    dt = time.perf_counter() - t
    assert ans is not None and ans[TCP].flags == "SA" and ans[TCP].ack == 4243, ans
    return dt
def drain():
    # What the kept socket queued while the other contestants ran is not part of a round trip.
    import socket as so
    sock.ins.setblocking(False)
    try:
        while True:
            sock.ins.recv(65536)
    except (BlockingIOError, so.error):
        pass
    sock.ins.setblocking(True)
for _ in range(5):
    probe()
    drain()
    kept()
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    one = [probe() for _ in range(n)]
    drain()
    print(json.dumps([one, [kept() for _ in range(n)]]), flush=True)
'''


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=200, help="probes per contestant (default 200)")
    ap.add_argument("--rounds", type=int, default=4, help="turns each contestant takes (default 4)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scapy.py needs root (network namespaces): run it with sudo", file=sys.stderr)
        return 2
    from scapy.layers.inet import IP, TCP

    from verifier.faults.base import link_of

    per_round = max(1, args.probes // args.rounds)
    ours: list[float] = []
    ours_src: list[float] = []
    plain: list[float] = []
    plain_kept: list[float] = []
    with Testbed("routed", "ipv4") as bed:
        srv = bed.server.start([sys.executable, "-c", LISTEN])
        bed.server.wait_listen(5000, process=srv)
        dst, src = bed.server.addr(4), bed.client.addr(4)
        mac = link_of(bed.router, bed.router.interface("client").name)["address"]
        smac = link_of(bed.client, "c0")["address"]
        proc = subprocess.Popen([sys.executable, "-c", PLAIN, dst, src, mac, smac], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, preexec_fn=lambda: namespace.enter_in_child(
                                    bed.client.path))
        try:
            assert proc.stdout.readline().strip() == "ready"
            port = 30000

            def probe(with_src: bool) -> float:
                nonlocal port
                port += 1
                t = time.perf_counter()
                ip = IP(dst=dst, src=src) if with_src else IP(dst=dst)
                ans = bed.client.sr1(ip / TCP(sport=port, dport=5000, flags="S", seq=4242), timeout=2)
                dt = time.perf_counter() - t
                assert ans is not None and ans[TCP].flags == "SA" and ans[TCP].ack == 4243, ans
                return dt

            for _ in range(5):  # warm up: the agent starts, Scapy is imported there
                probe(False)
            for _ in range(args.rounds):
                ours += [probe(False) for _ in range(per_round)]
                ours_src += [probe(True) for _ in range(per_round)]
                proc.stdin.write(f"{per_round}\n")
                proc.stdin.flush()
                one, other = json.loads(proc.stdout.readline())
                plain += one
                plain_kept += other
        finally:
            proc.kill()
            proc.wait()
    rows = [("Host.sr1(IP(dst)/TCP)", ours), ("Host.sr1(IP(dst, src)/TCP)", ours_src),
            ("plain Scapy srp1, in the namespace", plain),
            ("plain Scapy, L2socket kept open .sr1", plain_kept)]
    figures = {name: {"median_ms": statistics.median(v) * 1e3, "p10_ms": pct(v, 0.1) * 1e3,
                      "p90_ms": pct(v, 0.9) * 1e3, "probes": len(v)} for name, v in rows}
    ratio = statistics.median(ours) / statistics.median(plain)
    result = {"kernel": platform.release(), "cpus": os.cpu_count(), "figures": figures,
              "ratio_median": ratio, "target_ratio": TARGET_RATIO, "met": ratio <= TARGET_RATIO}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"sr1 round trip, SYN -> SYN-ACK client to server (routed IPv4), kernel {platform.release()}, "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds taken in turns")
    for name, f in figures.items():
        print(f"  {name:<36} median {f['median_ms']:7.2f} ms   p10 {f['p10_ms']:6.2f}   p90 {f['p90_ms']:6.2f}   "
              f"({f['probes']} probes)")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"  target: Host.sr1 median within {TARGET_RATIO:g}x plain srp1: {ratio:.2f}x, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
