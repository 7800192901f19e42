"""Benchmark: how long a `routed` testbed (IPv4 and IPv6) takes to come up and go down again.

Compares `netns.Testbed` (pyroute2 netlink from this process) with the same topology built by plain
`ip` commands, as a shell script would, in the same run. Prints the figures; needs root.

    sudo .venv/bin/python bench/testbed.py [--cycles 100] [--json]
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from netns import Testbed, namespace  # noqa: E402


def ours() -> None:
    with Testbed("routed", "dual"):
        pass


def ip_commands(tag: str) -> list[list[str]]:
    c, r, s = f"{tag}-client", f"{tag}-router", f"{tag}-server"
    cmds = [["ip", "netns", "add", n] for n in (c, r, s)]
    cmds += [
        ["ip", "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", r],
        ["ip", "-n", r, "link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns", s],
        ["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
    ]
    for ns, dev, a4, a6 in ((c, "c0", "192.0.2.2", "2001:db8:1::2"), (r, "r0", "192.0.2.1", "2001:db8:1::1"),
                            (r, "r1", "203.0.113.1", "2001:db8:2::1"), (s, "s0", "203.0.113.2", "2001:db8:2::2")):
        cmds += [["ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev],
                 ["ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad"],
                 ["ip", "-n", ns, "link", "set", dev, "up"]]
    for ns in (c, r, s):
        cmds.append(["ip", "-n", ns, "link", "set", "lo", "up"])
    cmds += [["ip", "-n", c, "route", "add", "default", "via", "192.0.2.1"],
             ["ip", "-n", c, "-6", "route", "add", "default", "via", "2001:db8:1::1"],
             ["ip", "-n", s, "route", "add", "default", "via", "203.0.113.1"],
             ["ip", "-n", s, "-6", "route", "add", "default", "via", "2001:db8:2::1"]]
    cmds += [["ip", "netns", "del", n] for n in (c, r, s)]
    return cmds


def plain_ip() -> None:
    tag = namespace.run_tag() + "z"
    for cmd in ip_commands(tag):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def measure(fn, cycles: int) -> list[float]:
    fn()  # warm up: imports, first mount of /run/netns
    times = []
    for _ in range(cycles):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=100, help="up+down cycles per method (at least 50)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/testbed.py: needs root (network namespaces): run with sudo", file=sys.stderr)
        return 1
    if args.cycles < 50:
        print("bench/testbed.py: use at least 50 cycles for a stable median", file=sys.stderr)
        return 2
    results = {}
    for name, fn in (("netns.Testbed (pyroute2)", ours), ("plain ip commands", plain_ip)):
        if not args.json:
            print(f"{name}: {args.cycles} cycles ...", file=sys.stderr, flush=True)
        t = measure(fn, args.cycles)
        results[name] = {"median_ms": round(statistics.median(t), 2), "p10_ms": round(sorted(t)[len(t) // 10], 2),
                         "p90_ms": round(sorted(t)[len(t) * 9 // 10], 2), "cycles": len(t)}
    info = {"kernel": platform.release(), "cpus": os.cpu_count(), "topology": "routed, IPv4+IPv6",
            "results": results}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"routed testbed (IPv4+IPv6) up+down, kernel {info['kernel']}, {info['cpus']} CPUs")
        for name, r in results.items():
            print(f"  {name:<26} median {r['median_ms']:6.2f} ms   p10 {r['p10_ms']:6.2f}   p90 {r['p90_ms']:6.2f}"
                  f"   ({r['cycles']} cycles)")
        ratio = results["plain ip commands"]["median_ms"] / results["netns.Testbed (pyroute2)"]["median_ms"]
        print(f"  target: median <= 15 ms; plain ip is {ratio:.1f}x slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
