"""The `verifier` command line.

    verifier clean [--dry-run] [--json]   remove namespaces (and their processes) left by dead runs
    verifier show FILE [--json]           list the TCP connections in a capture, with their exchanges

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


def cmd_show(args) -> int:
    from verifier.pcapng import CaptureFormatError
    from verifier.tracefile import load_trace

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
