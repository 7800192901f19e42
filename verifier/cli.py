"""The `verifier` command line.

    verifier testbed up [--name N] [--topology pair|routed] [--ipv4|--ipv6|--dual] [--json]
    verifier testbed list [--json]
    verifier testbed exec N HOST -- CMD...
    verifier testbed down N|--all [--json]
    verifier capture N [--host H] [-w FILE] [--duration S] [--count N]
    verifier inject KIND N [--host H] [--duration S] [--json] [options]   one subcommand per fault kind
                                          of verifier.faults (drop, reject, icmp-unreachable, rst, ...)
    verifier show FILE [--json]           list the TCP connections in a capture, with their exchanges
    verifier replay FILE [--json] [--expect COND]...   classify every TCP connection attempt (no root)
    verifier replay FILE --against TESTBED --connection ID   re-drive one connection against a live stack
    verifier clean [--dry-run] [--json]   remove namespaces (and their processes) left by dead runs

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
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
    kind = faults.FAULT_KINDS[args.kind]
    opts = {o.name: getattr(args, o.name) for o in kind.options if o.flag}
    for o in kind.options:  # a host name stands for its address(es), of --family if the kind has one
        if o.address and opts.get(o.name) is not None:
            opts[o.name] = _resolve(bed, opts[o.name], opts.get("family"), single=o.address == "one")
    if any(o.name == "duration_s" for o in kind.options):
        opts["duration_s"] = args.duration  # the rules end by themselves too, should this command be killed
    try:
        host = kind.on_testbed(bed, opts, args.host)
        if host not in bed.hosts:
            raise UserError(f"testbed {args.name} has no host {host!r}; it has {', '.join(bed.hosts)}")
        fault = kind.from_cli(**opts)
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
            if kind.acts_once():
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


def _add_inject_parsers(sub) -> None:
    """`verifier inject KIND`: one subcommand per registered fault kind, its options from the kind's
    declared `options` (verifier.faults.base.Option)."""
    from verifier import faults

    once = ", ".join(k for k, c in faults.FAULT_KINDS.items() if c.acts_once())
    inj = sub.add_parser("inject", help="inject a fault into a running testbed, bounded, removed on exit",
                         description=f"Apply one fault inside a testbed until --duration ends (standing faults) or "
                                     f"its action is done ({once}), or Ctrl-C/SIGTERM; then remove it and report "
                                     f"what it did. Faults act only inside testbed namespaces.")
    ksub = inj.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, cls in faults.FAULT_KINDS.items():
        text = (inspect.getdoc(cls) or kind).split("\n\n")[0].replace("\n", " ").rstrip(":")
        kp = ksub.add_parser(kind, help=text, description=text)
        kp.add_argument("name", help="the testbed")
        placed = cls.on_testbed.__func__ is not faults.Fault.on_testbed.__func__
        kp.add_argument("--host", help=f"where the fault acts (default: the {cls.default_host}"
                                       + (", or what its options imply)" if placed else ")"))
        kp.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help="how long a standing fault stays (default 60 s)")
        kp.add_argument("--json", action="store_true", help="print the report as JSON")
        for o in cls.options:
            if not o.flag:
                continue
            notes = [n for n in (o.limits(),) if n]
            default = cls.option_default(o)
            if o.required:
                notes.append("required")
            elif default not in (None, "", False):
                notes.append(f"default {default}")
            helptext = o.help + (f" ({'; '.join(notes)})" if notes else "")
            if o.type is bool:
                kp.add_argument(o.flag_name, dest=o.name, action="store_true", default=None, help=helptext)
            else:
                # Converted and checked by the kind (Option.check), so that a bad value is one clear line.
                kp.add_argument(o.flag_name, dest=o.name, metavar=o.name.split("_")[0].upper(), help=helptext)
        kp.set_defaults(func=cmd_inject)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (what is wrong, and where the help is) instead of the
    usage block; the exit status stays 2 (bad input). Subcommands' parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"verifier: {sub}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verifier", description="Packet-level verifier of TCP socket behaviour.")
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

    _add_inject_parsers(sub)

    from verifier.replay.command import add_parsers

    add_parsers(sub)

    c = sub.add_parser("clean", help="remove namespaces left behind by runs whose process is gone",
                       description="Remove the network namespaces (and processes inside them) of runs whose "
                                   "owning process is gone. Only names of this project's scheme (tv<pid><n>-<host>) "
                                   "are touched; namespaces of live runs are left alone.")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_clean)
    return p


_OFFLINE = ("replay", "show")  # commands on capture files: their parser alone, without the faults' imports


def _offline_parser() -> argparse.ArgumentParser:
    from verifier.replay.command import add_parsers

    p = _Parser(prog="verifier", description="Packet-level verifier of TCP socket behaviour.")
    add_parsers(p.add_subparsers(dest="command", metavar="COMMAND"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _offline_parser() if argv and argv[0] in _OFFLINE else build_parser()
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
