"""The `verifier` command line.

    verifier testbed up [--name N] [--topology pair|routed] [--ipv4|--ipv6|--dual] [--json]
    verifier testbed list [--json]
    verifier testbed exec N HOST -- CMD...
    verifier testbed down N|--all [--json]
    verifier capture N [--host H] [-w FILE] [--duration S] [--count N]
    verifier inject N KIND [--host H] [--duration S] [--json] [options]   drop, reject, icmp-unreachable,
                                          rst, segment, blackhole, delay, syn-flood
    verifier show FILE [--json]           list the TCP connections in a capture, with their exchanges
    verifier replay FILE [--json] [--expect COND]...   classify every TCP connection attempt (no root)
    verifier replay FILE --against TESTBED --connection ID   re-drive one connection against a live stack
    verifier clean [--dry-run] [--json]   remove namespaces (and their processes) left by dead runs

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def cmd_clean(args) -> int:
    from netns import namespace
    from netns.testbed import kill_namespace_processes

    if os.geteuid() != 0:
        raise UserError("clean needs root to remove network namespaces: run 'sudo verifier clean'")
    leftovers = [lo for lo in namespace.ours() if not lo.alive]
    removed = []
    for lo in leftovers:
        pids = [] if args.dry_run else kill_namespace_processes([lo.name])
        if not args.dry_run:
            namespace.remove(lo.name)
        removed.append({"netns": lo.name, "owner_pid": lo.pid, "killed": pids})
    alive = [lo.name for lo in namespace.ours() if lo.alive]
    if args.json:
        print(json.dumps({"removed" if not args.dry_run else "would_remove": removed, "in_use": alive}))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for r in removed:
            extra = f", killed {len(r['killed'])} process(es)" if r["killed"] else ""
            print(f"{verb} {r['netns']} (run pid {r['owner_pid']} is gone{extra})")
        if not removed:
            print("nothing to clean: no namespace of a dead run")
        if alive:
            print(f"left alone {len(alive)} namespace(s) of runs still alive: {' '.join(alive)}")
    return 0


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (network namespaces): run it with sudo")


def _attach(name: str):
    from netns import Testbed, TestbedError
    from netns.namespace import NamespaceError

    try:
        return Testbed.attach(name)
    except (TestbedError, NamespaceError) as exc:
        raise UserError(str(exc)) from None


def _bed_json(bed) -> dict:
    return {"name": bed.name, "topology": bed.topology.name, "family": bed.family,
            "hosts": {h.name: {"netns": h.netns, "interfaces": [
                {"name": i.name, "peer": i.peer_host,
                 "addresses": [f"{a}/{i.prefixlen[f]}" for f, a in sorted(i.addresses.items())]}
                for i in h.interfaces]} for h in bed.hosts.values()}}


def cmd_testbed_up(args) -> int:
    from netns import Testbed, TestbedError
    from netns.namespace import NamespaceError

    _need_root("testbed up")
    family = args.family or "dual"
    name = args.name
    if name is None:  # the lowest free number
        taken = {s["name"] for s in Testbed.named()}
        name = next(str(i) for i in range(1, 10**6) if str(i) not in taken)
    try:
        bed = Testbed(args.topology, family, name=name)
        bed.up()
    except (TestbedError, NamespaceError) as exc:
        raise UserError(str(exc)) from None
    bed.detach()
    if args.json:
        print(json.dumps(_bed_json(bed)))
    else:
        print(bed.describe().replace(f"testbed {bed.tag}", f"testbed {bed.name}", 1))
        print(f"\nrun a program:  verifier testbed exec {bed.name} client -- CMD...")
        print(f"remove it:      verifier testbed down {bed.name}")
    return 0


def cmd_testbed_list(args) -> int:
    from netns import Testbed

    beds = Testbed.named()
    if args.json:
        print(json.dumps([{k: b[k] for k in ("name", "topology", "family", "alive", "created_ns")} |
                          {"hosts": {h: v["netns"] for h, v in b["hosts"].items()}} for b in beds]))
        return 0
    if not beds:
        print("no testbeds (make one: verifier testbed up)")
    for b in beds:
        addrs = []
        for h, v in b["hosts"].items():
            first = next((i for i in v["interfaces"]), None)
            if first:
                addrs.append(f"{h} {' '.join(first['addresses'].values())}")
        state = "" if b["alive"] else "  BROKEN (namespaces missing: verifier testbed down " + b["name"] + ")"
        print(f"{b['name']:<8} {b['topology']:<7} {b['family']:<5} " + "; ".join(addrs) + state)
    return 0


def cmd_testbed_exec(args) -> int:
    from netns import namespace

    _need_root("testbed exec")
    bed = _attach(args.name)
    if args.host not in bed.hosts:
        raise UserError(f"testbed {args.name} has no host {args.host!r}; it has {', '.join(bed.hosts)}")
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise UserError("give the command to run after --, e.g. verifier testbed exec 1 client -- ip addr")
    fd = os.open(bed[args.host].path, os.O_RDONLY)
    if namespace._libc.setns(fd, namespace.CLONE_NEWNET) != 0:
        raise UserError(f"cannot enter {bed[args.host].netns}")
    os.close(fd)
    try:
        os.execvp(argv[0], argv)  # stdin, stdout and the exit status are the program's own
    except FileNotFoundError:
        raise UserError(f"{argv[0]}: command not found") from None
    return 127  # pragma: no cover


def cmd_testbed_down(args) -> int:
    from netns import Testbed

    _need_root("testbed down")
    names = [b["name"] for b in Testbed.named()] if args.all else [args.name]
    if not args.all and not args.name:
        raise UserError("say which testbed: verifier testbed down NAME (or --all)")
    done = []
    for name in names:
        bed = _attach_even_broken(name)
        bed.down()
        done.append(name)
    if args.json:
        print(json.dumps({"removed": done}))
    else:
        print("removed " + (", ".join(done) if done else "nothing"))
    return 0


def _attach_even_broken(name: str):
    """For `down`: a testbed whose namespaces are partly gone is still removed completely."""
    from netns import Testbed, TestbedError, namespace
    from netns.testbed import STATE_DIR

    try:
        return Testbed.attach(name)
    except TestbedError:
        path = STATE_DIR / f"{name}.json"
        if not path.exists():
            raise UserError(f"no testbed named {name} (see: verifier testbed list)") from None
        state = json.loads(path.read_text())
        bed = Testbed(state["topology"], state["family"], name=name, workdir=STATE_DIR / f"{name}.d")
        bed._undo = [("netns", h["netns"]) for h in state["hosts"].values() if namespace.exists(h["netns"])]
        bed._undo.append(("state", str(path)))
        return bed


def cmd_capture(args) -> int:
    import signal
    import time

    from verifier.capture import Capture, CaptureError

    _need_root("capture")
    bed = _attach(args.name)
    hosts = args.host or None
    for h in hosts or []:
        if h not in bed.hosts:
            raise UserError(f"testbed {args.name} has no host {h!r}; it has {', '.join(bed.hosts)}")
    path = args.write or f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.pcapng"
    try:
        cap = Capture(bed, path, hosts=hosts).start()
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    labels = ", ".join(t["label"] for t in cap.targets)
    print(f"capturing {labels} to {path}; Ctrl-C to stop", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - started
            if args.duration is not None and elapsed >= args.duration:
                break
            written = cap.written()
            if args.count is not None and written >= args.count:
                break
            if sys.stderr.isatty():
                print(f"\r{written} packets, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)
            time.sleep(0.2 if args.count is not None else 0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stats = cap.stop()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({"path": str(path), "interfaces": [vars(s) for s in stats]}))
    else:
        print(cap.summary())
    return 0


# The options of each fault kind, as (flag, type, help). The names are the keyword arguments of the
# kind's `from_cli` in verifier/faults.py; a host name (client, router, server) may stand for an address.
MATCH_OPTS = [
    ("--flags", str, "TCP flags to match: syn, syn-ack, rst, fin or ack"),
    ("--sport", int, "source port"), ("--dport", int, "destination port"),
    ("--src", str, "source address(es), comma-separated, or a host name"),
    ("--dst", str, "destination address(es), comma-separated, or a host name"),
]
INJECT_OPTS = {
    "drop": ("drop matching packets silently", MATCH_OPTS + [
        ("--first", int, "drop only the first K matches"), ("--nth", int, "drop only the Kth match"),
        ("--probability", float, "drop each match with this probability (0..1)")]),
    "reject": ("answer matching packets at once with the kernel's ICMP error (nft reject)", MATCH_OPTS + [
        ("--code", str, "host-unreachable (default), net-unreachable, port-unreachable, admin-prohibited")]),
    "icmp-unreachable": ("answer matching packets (SYNs by default) with a crafted ICMP/ICMPv6 "
                         "destination-unreachable quoting them", MATCH_OPTS + [
        ("--code", str, "net, host (default), port, protocol, admin, frag-needed; ICMPv6: no-route, address, port"),
        ("--nth", int, "answer only the Kth match"), ("--delay-ms", float, "wait this long before answering"),
        ("--mtu", int, "the MTU of a frag-needed"), ("--family", int, "4 or 6 only")]),
    "rst": ("inject a RST into an established connection", MATCH_OPTS + [
        ("--to", str, "the endpoint (address or host name) that receives the RST (required)"),
        ("--at", str, "exact (RCV.NXT: resets), in-window (draws a challenge ACK) or out-of-window"),
        ("--offset", int, "sequence offset from RCV.NXT instead of --at"),
        ("--wait-s", float, "how long to wait to learn the sequence numbers from traffic")]),
    "segment": ("send one crafted segment (e.g. an ACK for no connection) and report the answer", [
        ("--dst", str, "destination address or host name (required)"), ("--dport", int, "destination port (required)"),
        ("--flags", str, "TCP flags as letters, default A"), ("--sport", int, "source port"),
        ("--seq", int, "sequence number"), ("--ack", int, "acknowledgement number"), ("--payload", str, "data")]),
    "blackhole": ("make an address unreachable with no answer at all (no ARP or neighbour reply)", [
        ("--address", str, "the address or host name to blackhole (default: the server's)"),
        ("--family", int, "4 or 6 only")]),
    "delay": ("delay matching packets (netem, or a user-space delay line at the router)", MATCH_OPTS + [
        ("--delay-ms", float, "the added delay (required)"), ("--method", str, "auto (default), netem or agent"),
        ("--max-packets", int, "delay at most this many packets")]),
    "syn-flood": ("SYNs from spoofed testbed addresses, at a rate, bounded in count and time", [
        ("--dst", str, "target address or host name (default: the server's)"), ("--dport", int, "target port (required)"),
        ("--count", int, "how many SYNs (default 100)"), ("--rate-pps", float, "SYNs per second (default 1000)"),
        ("--sources", str, "spoofed source network (documentation range)")]),
}
ONE_SHOT = {"rst", "segment", "syn-flood"}


def _resolve(bed, value: str | None, family: int | None = None, single: bool = False) -> str | None:
    """A host name stands for its addresses (of `family`, else all, comma-separated; or the first one)."""
    if value is None or value not in bed.hosts:
        return value
    addrs = bed[value].addresses(family)
    if not addrs:
        raise UserError(f"host {value} has no IPv{family} address in testbed {bed.name}")
    return addrs[0] if single else ",".join(addrs)


def cmd_inject(args) -> int:
    import signal
    import time

    from verifier import faults

    _need_root("inject")
    bed = _attach(args.name)
    opts = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
            for flag, _, _ in INJECT_OPTS[args.kind][1]}
    fam = opts.get("family")
    one_address = {"to", "address"} | ({"dst"} if args.kind in ("segment", "syn-flood") else set())
    for key in ("src", "dst", "to", "address"):
        if opts.get(key) is not None:
            opts[key] = _resolve(bed, opts[key], fam, single=key in one_address)
    if args.kind == "rst" and not opts.get("to"):
        raise UserError("rst needs --to: the endpoint that receives the RST")
    if args.kind == "segment" and (not opts.get("dst") or opts.get("dport") is None):
        raise UserError("segment needs --dst and --dport")
    if args.kind == "delay" and opts.get("delay_ms") is None:
        raise UserError("delay needs --delay-ms")
    if args.kind == "syn-flood":
        if opts.get("dport") is None:
            raise UserError("syn-flood needs --dport")
        opts["dst"] = opts.get("dst") or bed["server"].addr(4 if 4 in bed.families else 6)
    host = args.host
    if args.kind == "blackhole":
        address = opts.get("address") or bed["server"].addresses(fam)[0]
        owner = next((h for h in bed.hosts.values() if address in h.addresses()), None)
        if owner is None:
            raise UserError(f"no host of testbed {bed.name} has the address {address}")
        opts["address"], host = address, owner.name
    if host is None:
        host = "client" if args.kind in ("syn-flood", "segment") else "router" if "router" in bed.hosts else "server"
    if host not in bed.hosts:
        raise UserError(f"testbed {args.name} has no host {host!r}; it has {', '.join(bed.hosts)}")
    if args.kind == "drop" or args.kind == "reject":
        opts["duration_s"] = args.duration
    try:
        fault = faults.from_cli(args.kind, **opts)
    except (faults.FaultError, ValueError) as exc:
        raise UserError(str(exc)) from None

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    def say(*a):  # progress for people goes to stderr, also with --json (stdout is the data)
        print(*a, file=sys.stderr, flush=True)

    result = None
    try:
        with faults.inject(bed[host], fault):
            say(f"{fault.describe()} on {host} of testbed {bed.name}")
            if args.kind in ONE_SHOT:
                result = fault.fire()
            else:
                say(f"active for {args.duration:g} s; Ctrl-C to remove it sooner")
                end = time.monotonic() + args.duration
                while time.monotonic() < end:
                    time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    except faults.FaultError as exc:
        raise UserError(str(exc)) from None
    report = dict(fault.report)
    if isinstance(result, dict):
        report.setdefault("result", result)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(f"{report.get('fault', args.kind)} on {host}: " +
              ", ".join(f"{k}={v}" for k, v in report.items()
                        if k != "fault" and not isinstance(v, (list, dict))))
    return 0


def cmd_show(args) -> int:
    from verifier.pcap import CaptureFormatError
    from verifier.analysis.tracefile import load_trace

    if not os.path.exists(args.file):
        raise UserError(f"{args.file}: no such file")
    try:
        trace = load_trace(args.file)
    except CaptureFormatError as exc:
        raise UserError(str(exc)) from None
    conns = trace.connections
    if args.port:
        conns = [c for c in conns if args.port in (c.client[1], c.server[1])]
    if args.json:
        for c in conns:
            print(json.dumps({
                "client": f"{c.client[0]}", "client_port": c.client[1], "server": c.server[0],
                "server_port": c.server[1], "family": c.family, "interfaces": c.interfaces,
                "events": [{"t": round(e.t, 9), "iface": e.iface, "dir": e.direction, "kind": e.kind,
                            "flags": e.flags, "seq": e.seq, "ack": e.ack, "len": e.payload_len} for e in c.events],
            }))
        return 0
    print(trace.summary())
    for c in conns:
        print()
        print(c.ladder())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="verifier", description="Packet-level verifier of TCP socket behaviour.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("testbed", help="long-lived testbeds: up, list, exec, down",
                       description="Testbeds that outlive the command: bring one up, run your own programs "
                                   "in its hosts, capture and inject faults, then take it down.")
    tsub = t.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = tsub.add_parser("up", help="bring up a testbed and print its hosts and addresses")
    up.add_argument("--name", help="1-6 lower-case letters or digits (default: the lowest free number)")
    up.add_argument("--topology", choices=["pair", "routed"], default="routed",
                    help="pair: client-server; routed: client-router-server (default)")
    fam = up.add_mutually_exclusive_group()
    for flag in ("ipv4", "ipv6", "dual"):
        fam.add_argument(f"--{flag}", dest="family", action="store_const", const=flag,
                         help={"ipv4": "IPv4 only", "ipv6": "IPv6 only", "dual": "both (default)"}[flag])
    up.add_argument("--json", action="store_true", help="print the testbed as JSON")
    up.set_defaults(func=cmd_testbed_up)
    ls = tsub.add_parser("list", help="the testbeds that exist")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_testbed_list)
    ex = tsub.add_parser("exec", help="run a command inside a host (stdin, stdout, exit status pass through)")
    ex.add_argument("name")
    ex.add_argument("host", help="client, router or server")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ex.set_defaults(func=cmd_testbed_exec)
    dn = tsub.add_parser("down", help="remove a testbed completely (processes, links, namespaces)")
    dn.add_argument("name", nargs="?")
    dn.add_argument("--all", action="store_true", help="remove every named testbed")
    dn.add_argument("--json", action="store_true")
    dn.set_defaults(func=cmd_testbed_down)

    cp = sub.add_parser("capture", help="record a testbed's interfaces to pcapng until Ctrl-C or a limit",
                        description="Record every packet on a testbed's interfaces (all hosts, or --host) to a "
                                    "pcapng file with nanosecond timestamps, until Ctrl-C, --duration or --count.")
    cp.add_argument("name", help="the testbed")
    cp.add_argument("--host", action="append", help="only this host's interfaces (repeatable)")
    cp.add_argument("-w", "--write", metavar="FILE", help="output file (default NAME-DATE-TIME.pcapng)")
    cp.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    cp.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    cp.add_argument("--json", action="store_true", help="print the counts as JSON")
    cp.set_defaults(func=cmd_capture)

    inj = sub.add_parser("inject", help="inject a fault into a running testbed, bounded, removed on exit",
                         description="Apply one fault inside a testbed until --duration ends (standing faults) or "
                                     "its action is done (rst, segment, syn-flood), or Ctrl-C/SIGTERM; then remove "
                                     "it and report what it did. Faults act only inside testbed namespaces.")
    ksub = inj.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (text, options) in INJECT_OPTS.items():
        kp = ksub.add_parser(kind, help=text, description=text)
        kp.add_argument("name", help="the testbed")
        kp.add_argument("--host", help="where the fault acts (default: the router, or the host the kind needs)")
        kp.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help="how long a standing fault stays (default 60 s)")
        kp.add_argument("--json", action="store_true", help="print the report as JSON")
        for flag, typ, helptext in options:
            kp.add_argument(flag, type=typ, help=helptext)
        kp.set_defaults(func=cmd_inject)

    from verifier import replay

    replay.add_parser(sub)

    c = sub.add_parser("clean", help="remove namespaces left behind by runs whose process is gone",
                       description="Remove the network namespaces (and processes inside them) of runs whose "
                                   "owning process is gone. Only names of this project's scheme (tv<pid><n>-<host>) "
                                   "are touched; namespaces of live runs are left alone.")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_clean)
    s = sub.add_parser("show", help="list the TCP connections of a capture and their exchanges",
                       description="Read a pcap or pcapng file and print every TCP connection with its "
                                   "exchange (time, interface, direction, flags, relative seq/ack).")
    s.add_argument("file", help="pcap or pcapng file")
    s.add_argument("--port", type=int, help="only connections with this port on either side")
    s.add_argument("--json", action="store_true", help="one JSON object per connection (JSON Lines)")
    s.set_defaults(func=cmd_show)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"verifier: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("verifier: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
