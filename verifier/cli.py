"""The `verifier` command line.

    verifier testbed up [--name N] [--topology pair|routed] [--ipv4|--ipv6|--dual] [--json]
    verifier testbed list [--json]
    verifier testbed exec N HOST -- CMD...
    verifier testbed down N|--all [--json]
    verifier capture N [--host H] [-w FILE] [--duration S] [--count N] [--ring-size MIB] [--view HOST]
    verifier inject KIND N [--host H] [--duration S] [--json] [options]   one subcommand per fault kind
                                          of verifier.faults (drop, reject, icmp-unreachable, rst, ...)
    verifier show FILE [--json]           list the TCP connections in a capture, with their exchanges
    verifier replay FILE [--json] [--expect COND]...   classify every TCP connection attempt (no root)
    verifier replay FILE --against TESTBED --connection ID   re-drive one connection against a live stack
    verifier replay FILE|DIR/ --zeek-log tsv|json   Zeek's conn.log (a directory: every capture in it,
                                          in parallel: --jobs N, or --dask SCHEDULER)
    verifier clean [--dry-run] [--json]   remove namespaces (and their processes) left by dead runs

Errors are one line on stderr and a non-zero exit, never a traceback; the exit statuses are one
scheme for every command (verifier.exits): 0 done, 1 a check failed, 2 bad input (nothing created),
3 the capture could not be read in full, 130 interrupted. A closed output pipe (`| head`) ends a
command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1 (a failure: see `BadInput`)."""


def cmd_clean(args) -> int:
    from netns import namespace
    from netns.testbed import kill_namespace_processes

    if os.geteuid() != 0:
        raise BadInput("clean needs root to remove network namespaces: run 'sudo verifier clean'")
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
    if os.geteuid() != 0:  # a usage error, like a bad option: exit status 2, nothing done
        raise BadInput(f"{what} needs root (network namespaces): run it with sudo")


def _attach(name: str):
    from netns import Testbed, TestbedError
    from netns.namespace import NamespaceError

    try:
        return Testbed.attach(name)
    except (TestbedError, NamespaceError) as exc:
        raise UserError(str(exc)) from None


class BadInput(UserError):
    """Bad input (e.g. a bad or unknown testbed name, an unknown host, no command): one line on stderr
    and exit status 2 (main()), as for argparse's own errors; nothing has been created."""


def _testbed_name(text: str) -> str:
    """argparse type of a testbed name: a bad one is refused, in one line (exit 2), before anything runs."""
    from netns.namespace import NamespaceError, check_testbed_name

    try:
        return check_testbed_name(text)
    except NamespaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _named_testbed(name: str):
    """The named testbed, for exec: unknown is bad input (exit 2); broken or still being built, 1."""
    from netns import NoSuchTestbed, Testbed, TestbedError
    from netns.namespace import NamespaceError

    try:
        return Testbed.attach(name)
    except (NoSuchTestbed, NamespaceError) as exc:
        raise BadInput(str(exc)) from None
    except TestbedError as exc:
        raise UserError(str(exc)) from None


def _bed_json(bed) -> dict:
    from netns import registry

    return {"name": bed.name, "topology": bed.topology.name, "family": bed.family,
            "owner_uid": registry.caller_uid(),
            "hosts": {h.name: {"netns": h.netns, "interfaces": [
                {"name": i.name, "peer": i.peer_host,
                 "addresses": [f"{a}/{i.prefixlen[f]}" for f, a in sorted(i.addresses.items())]}
                for i in h.interfaces]} for h in bed.hosts.values()}}


def cmd_testbed_up(args) -> int:
    from netns import NEXT_FREE, NameInUse, Testbed, TestbedError
    from netns.namespace import NamespaceError

    _need_root("testbed up")
    # Without --name: the lowest free number, taken atomically in the registry when the testbed comes
    # up, so that parallel `testbed up` calls each get their own.
    bed = Testbed(args.topology, args.family or "dual", name=args.name or NEXT_FREE)
    try:
        bed.up()
    except NameInUse as exc:
        raise BadInput(str(exc)) from None
    except (TestbedError, NamespaceError) as exc:
        raise UserError(str(exc)) from None
    bed.detach()
    if args.json:
        print(json.dumps(_bed_json(bed)))
    else:
        print(bed.describe())
        print(f"\nrun a program:  verifier testbed exec {bed.name} client -- CMD...")
        print(f"remove it:      verifier testbed down {bed.name}")
    return 0


_STATUS_NOTES = {
    "up": "",
    "broken": "  BROKEN (namespaces missing: verifier testbed down {name})",
    "creating": "  (being brought up by process {pid})",
    "abandoned": "  HALF-BUILT (its testbed up was killed: verifier testbed down {name})",
    "unreadable": "  UNREADABLE record (verifier testbed down {name})",
}


def cmd_testbed_list(args) -> int:
    from netns import Testbed, registry

    beds = Testbed.named()
    if args.json:
        print(json.dumps([{"name": b["name"], "topology": b.get("topology"), "family": b.get("family"),
                           "status": b["status"], "alive": b["alive"], "owner_uid": b.get("owner_uid"),
                           "created_ns": b.get("created_ns"),
                           "hosts": {h: v["netns"] for h, v in b["hosts"].items()}} for b in beds]))
        return 0
    if not beds:
        print("no testbeds (make one: verifier testbed up)")
    width = max((len(b["name"]) for b in beds), default=0)
    for b in beds:
        addrs = []
        for h, v in b["hosts"].items():
            first = next((i for i in v["interfaces"]), None)
            if first:
                addrs.append(f"{h} {' '.join(first['addresses'].values())}")
        note = _STATUS_NOTES[b["status"]].format(name=b["name"], pid=b.get("created_by_pid"))
        print(f"{b['name']:<{width}}  {b.get('topology') or '?':<7} {b.get('family') or '?':<5} "
              f"{registry.user_name(b.get('owner_uid')):<8} " + "; ".join(addrs) + note)
    return 0


def cmd_testbed_exec(args) -> int:
    from netns import namespace

    _need_root("testbed exec")
    bed = _named_testbed(args.name)
    if args.host not in bed.hosts:
        raise BadInput(f"testbed {args.name} has no host {args.host!r}; it has {', '.join(bed.hosts)}")
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise BadInput("give the command to run after --, e.g. verifier testbed exec 1 client -- ip addr")
    fd = os.open(bed[args.host].path, os.O_RDONLY)
    if namespace._libc.setns(fd, namespace.CLONE_NEWNET) != 0:
        raise UserError(f"cannot enter {bed[args.host].netns}")
    os.close(fd)
    where = f"(on host {args.host} of testbed {args.name})"
    try:
        os.execvp(argv[0], argv)  # stdin, stdout and the exit status are the program's own
    except FileNotFoundError:  # as a shell says it: 127 not found, 126 found but not executable
        print(f"verifier: {argv[0]}: command not found {where}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"verifier: {argv[0]}: permission denied: not an executable file {where}", file=sys.stderr)
        return 126
    except OSError as exc:
        print(f"verifier: {argv[0]}: cannot execute: {exc.strerror} {where}", file=sys.stderr)
        return 126
    return 127  # pragma: no cover - execvp returns only by raising


def cmd_testbed_down(args) -> int:
    from netns import NoSuchTestbed, Testbed, TestbedError, registry
    from verifier import exits

    _need_root("testbed down")
    if args.all and args.name:
        raise BadInput("give a testbed name or --all, not both")
    if not args.all and not args.name:
        raise BadInput("say which testbed: verifier testbed down NAME (or --all: every testbed of yours)")
    left_alone = []
    if args.all:  # the caller's own only: the owner is who ran `testbed up` (SUDO_UID under sudo)
        me = registry.caller_uid()
        names = []
        for b in Testbed.named():
            if b.get("owner_uid") != me:
                why = f"owned by {registry.user_name(b.get('owner_uid'))}"
            elif b["status"] == "creating":
                why = f"being brought up by process {b.get('created_by_pid')}"
            else:
                names.append(b["name"])
                continue
            left_alone.append({"name": b["name"], "owner_uid": b.get("owner_uid"), "why": why})
    else:
        names = [args.name]
    removed, failures = [], []
    for name in names:
        try:
            bed = Testbed.remains(name)
        except NoSuchTestbed as exc:
            if args.all:
                continue  # removed meanwhile
            raise BadInput(str(exc)) from None
        except TestbedError as exc:  # being brought up right now
            failures.append(str(exc))
            continue

        def waiting(pids, name=name):
            print(f"waiting for {len(pids)} process(es) of testbed {name} to end ...", file=sys.stderr, flush=True)

        try:
            bed.down(progress=waiting)  # returns once the testbed's processes are gone (or the deadline)
        except TestbedError as exc:
            failures.append(str(exc))
        removed.append(name)
    if args.json:
        print(json.dumps({"removed": removed} | ({"left_alone": left_alone} if args.all else {})))
    else:
        print("removed " + (", ".join(removed) if removed else "nothing"))
        for b in left_alone:
            print(f"left alone {b['name']} ({b['why']}): remove it by its name: verifier testbed down {b['name']}")
    for f in failures:
        print(f"verifier: {f}", file=sys.stderr)
    return exits.FAILED if failures else exits.OK


def cmd_capture(args) -> int:
    import signal
    import threading
    import time
    from pathlib import Path

    from verifier import exits
    from verifier.capture import Capture, CaptureError

    # Bad input first, before anything is created: the output file's folder must exist already.
    path = Path(args.write or f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.pcapng")
    folder = path.parent
    if path.is_dir():
        raise BadInput(f"cannot write {path}: it is a folder; give a file name, e.g. {path / 'run.pcapng'}")
    if not folder.is_dir():
        raise BadInput(f"cannot write {path}: the folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write {path}: the folder {folder} is not writable")
    _need_root("capture")
    bed = _named_testbed(args.name)
    hosts = list(dict.fromkeys(args.host)) if args.host else None
    for h in (hosts or []) + (args.view or []):
        if h.split(":", 1)[0] not in bed.hosts:
            raise BadInput(f"testbed {args.name} has no host {h!r}; it has {', '.join(bed.hosts)}")
    for h in args.view or []:
        if hosts is not None and h.split(":", 1)[0] not in hosts:
            raise BadInput(f"--view {h}: that host is not captured (--host {' --host '.join(hosts)})")
    # Stop on Ctrl-C and SIGTERM alike, in order: the loop below ends, the capture is stopped and
    # the file completed with its statistics (never an exception in the middle of a request).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cap = Capture(bed, path, hosts=hosts, ring_mib=args.ring_size, count=args.count)
        cap.start()
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    labels = ", ".join(t["label"] for t in cap.targets)
    limit = f" until {args.count} packets" if args.count else ""
    print(f"capturing {labels} to {path}{limit}; Ctrl-C to stop", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if args.duration is not None and elapsed >= args.duration:
                break
            st = cap.status()
            if st["done"]:
                break
            if sys.stderr.isatty():
                lost = f", {st['dropped']} LOST" if st["dropped"] else ""
                print(f"\r{st['written']} packets{lost}, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)
            left = args.duration - elapsed if args.duration is not None else 0.5
            stop.wait(max(0.0, min(0.1 if args.count else 0.5, left)))
    finally:
        try:
            stats = cap.stop()
        except CaptureError as exc:
            raise UserError(str(exc)) from None
    if sys.stderr.isatty():
        print(file=sys.stderr)
    try:
        written_views = cap.write_views(args.view) if args.view else []
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps({"path": str(path), "interfaces": [vars(s) for s in stats], "lost": cap.dropped,
                          "views": [str(v) for v in written_views]}))
    else:
        print(cap.summary())
        for v in written_views:
            print(f"view for Wireshark: {v}")
    if cap.lost:
        print(f"verifier: the capture lost {cap.dropped} packets (the kernel dropped them: a ring was full); "
              f"{path} says so in its statistics; a larger --ring-size (now {args.ring_size} MiB) may help",
              file=sys.stderr)
        return exits.FAILED
    return exits.OK


_HOST_NAME = re.compile(r"[a-z][a-z0-9]*")  # a host of a topology (client, router, server)


def _host_or_address_type(option):
    """argparse type of a fault's address option: an IP address, or a host name standing for its
    address(es) (resolved against the testbed when the command runs); a comma-separated list when the
    option takes several."""
    from verifier import argtypes

    def convert(text: str) -> str:
        items = [t.strip() for t in text.split(",")] if option.address == "many" else [text.strip()]
        if not all(items):
            raise argparse.ArgumentTypeError(f"{option.flag_name}: an empty address in {text!r}")
        return ",".join(i if _HOST_NAME.fullmatch(i) else argtypes.address(i) for i in items)
    convert.__name__ = "address"
    return convert


def _option_type(option):
    """argparse type of a fault's option: the value converted and checked by the kind's declared
    `Option` (type, bounds, choices), so that the command line refuses exactly what the constructor
    refuses, while the arguments are parsed."""
    from verifier.faults import FaultError

    if option.address:
        return _host_or_address_type(option)

    def convert(text: str):
        try:
            return option.check(text)
        except FaultError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = option.what or option.name
    return convert


def _resolve(bed, value: str | None, family: int | None = None, single: bool = False) -> str | None:
    """Host names in an address option stand for their addresses (of `family`, else all; the first
    one if `single`); IP addresses stay. BadInput for a host the testbed does not have."""
    if value is None:
        return None
    out = []
    for item in value.split(","):
        if not _HOST_NAME.fullmatch(item):
            out.append(item)
            continue
        if item not in bed.hosts:
            raise BadInput(f"testbed {bed.name} has no host {item!r}; it has {', '.join(bed.hosts)} "
                           f"(or give an IP address)")
        addrs = bed[item].addresses(family)
        if not addrs:
            raise BadInput(f"host {item} has no IPv{family} address in testbed {bed.name} (it is {bed.family})")
        out += addrs[:1] if single else addrs
    return out[0] if single else ",".join(out)


def _lives(cls) -> bool:
    """Does --duration mean something for this kind: a standing fault, or one with a lifetime?"""
    names = {o.name for o in cls.options}
    return not cls.acts_once() or bool(names & {"duration_s", "lifetime_s"})


def cmd_inject(args) -> int:
    import signal

    from verifier import argtypes, exits, faults

    kind = faults.FAULT_KINDS[args.kind]
    _need_root("inject")
    bed = _named_testbed(args.name)
    if args.host is not None and args.host not in bed.hosts:
        raise BadInput(f"testbed {args.name} has no host {args.host!r}; it has {', '.join(bed.hosts)}")
    opts = {o.name: getattr(args, o.name) for o in kind.options if o.flag}
    family = opts.get("family")
    if family is not None and family not in bed.families:
        raise BadInput(f"testbed {bed.name} has no IPv{family} addresses (it is {bed.family})")
    for o in kind.options:  # a host name stands for its address(es), of --family if the kind has one
        if o.address and opts.get(o.name) is not None:
            opts[o.name] = _resolve(bed, opts[o.name], family, single=o.address == "one")
    names = {o.name for o in kind.options}
    duration = getattr(args, "duration", None)
    if "duration_s" in names:  # the rules end by themselves too, should this command be killed
        opts["duration_s"] = duration or faults.DEFAULT_LIFETIME_S
    if duration and opts.get("wait_s") is not None and opts["wait_s"] > duration:
        raise BadInput(f"--wait-s {opts['wait_s']:g} is longer than the fault stays (--duration {duration:g})")
    if "lifetime_s" in names and opts.get("lifetime_s") is None:
        # a second beyond --duration, so that this command removes the fault (and reports it) before
        # the agent gives it up by itself
        lives = duration + 1 if duration else max(faults.DEFAULT_LIFETIME_S, float(opts.get("wait_s") or 0) + 5)
        opts["lifetime_s"] = min(lives, argtypes.MAX_DURATION_S)
    try:
        host = kind.on_testbed(bed, opts, args.host)
        if host not in bed.hosts:
            raise BadInput(f"testbed {args.name} has no host {host!r}; it has {', '.join(bed.hosts)}")
        fault = kind.from_cli(**opts)
    except (faults.FaultError, ValueError, LookupError) as exc:
        raise BadInput(str(exc)) from None

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    def say(*a, end="\n"):  # progress for people goes to stderr, also with --json (stdout is the data)
        print(*a, file=sys.stderr, flush=True, end=end)

    result = None
    in_place = False
    status = exits.OK
    try:
        with faults.inject(bed[host], fault):
            in_place = True
            say(f"{fault.describe()} on {host} of testbed {bed.name}")
            if kind.acts_once():
                limit = fault.fire_limit_s()
                if limit is not None and limit > 2:
                    say(f"acting, for at most {limit:g} s; Ctrl-C to stop")
                result = fault.fire()
            else:
                length = duration or faults.DEFAULT_LIFETIME_S
                say(f"active for {length:g} s; Ctrl-C to remove it sooner")
                _stand(fault, length, say)
    except KeyboardInterrupt:
        pass
    except faults.FaultError as exc:
        if not in_place:  # refused as asked (the kind undid what it had begun): bad input, nothing left
            raise BadInput(str(exc)) from None
        print(f"verifier: {exc}", file=sys.stderr)  # it was in place, and is removed, but did not act
        status = exits.FAILED
    report = dict(fault.report)
    if isinstance(result, dict):
        report.setdefault("result", result)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(f"{report.get('fault', args.kind)} on {host}: " +
              ", ".join(f"{k}={v}" for k, v in report.items()
                        if k != "fault" and not isinstance(v, (list, dict))))
    return status


def _stand(fault, length: float, say) -> None:
    """Keep a standing fault for `length` seconds; on a terminal, its counters so far once a second."""
    import time

    end = time.monotonic() + length
    live = sys.stderr.isatty()
    shown = 0.0
    while (left := end - time.monotonic()) > 0:
        if live and time.monotonic() - shown >= 1:
            shown = time.monotonic()
            counts = {k: v for k, v in fault.status().items() if isinstance(v, int) and not k.endswith("_ns")}
            say("\r" + f"{left:.0f} s left: " + ", ".join(f"{k}={v}" for k, v in counts.items()) + "\033[K",
                end="")
        time.sleep(min(0.2, left))
    if live:
        say()


def _add_inject_parsers(sub) -> None:
    """`verifier inject KIND`: one subcommand per registered fault kind, its options from the kind's
    declared `options` (verifier.faults.base.Option), each checked while the arguments are parsed."""
    from verifier import argtypes, exits, faults

    once = ", ".join(k for k, c in faults.FAULT_KINDS.items() if c.acts_once())
    most = f"{argtypes.MAX_DURATION_S:g} s (one day)"
    status = exits.epilog(exits.OK, exits.FAILED, exits.BAD_INPUT, exits.INTERRUPTED,
                          words={exits.OK: "done: the fault was applied, acted or stood its time, and was removed",
                                 exits.FAILED: "the fault was in place but could not do its work (e.g. rst saw no "
                                               "segment to learn from); it was removed"},
                          note="Ctrl-C or SIGTERM removes the fault and ends with 0 and its report.")
    inj = sub.add_parser("inject", help="inject a fault into a running testbed, bounded, removed on exit",
                         description=f"Apply one fault inside a testbed until --duration ends (standing faults, "
                                     f"at most {most}) or its action is done ({once}), or Ctrl-C/SIGTERM; "
                                     f"then remove it and report what it did (--json: the report as JSON; on a "
                                     f"terminal the counters so far are shown while it stands). Faults act only "
                                     f"inside testbed namespaces, and every packet a fault forges is addressed "
                                     f"to a host of that testbed.", epilog=status)
    ksub = inj.add_subparsers(dest="kind", metavar="KIND", required=True)
    import inspect  # here, not at the top: `replay` and `show` build a parser without it (start-up time)

    for kind, cls in faults.FAULT_KINDS.items():
        text = (inspect.getdoc(cls) or kind).split("\n\n")[0].replace("\n", " ").rstrip(":")
        kp = ksub.add_parser(kind, help=text, description=text, epilog=status)
        kp.add_argument("name", type=_testbed_name, metavar="NAME", help="the testbed")
        placed = cls.on_testbed.__func__ is not faults.Fault.on_testbed.__func__
        kp.add_argument("--host", help=f"where the fault acts (default: the {cls.default_host}"
                                       + (", or what its options imply)" if placed else ")"))
        if _lives(cls):
            kp.add_argument("--duration", type=argtypes.duration, default=None, metavar="S",
                            help=f"how long the fault stays, at most {most}; its nft rules and the agent's "
                                 f"sockets end by themselves then, even if this command is killed (default "
                                 f"{faults.DEFAULT_LIFETIME_S:g} s)")
        kp.add_argument("--json", action="store_true", help="print the report as JSON")
        groups = {}
        for group in cls.exclusive:  # one argparse group per declared group
            g = kp.add_mutually_exclusive_group()
            for name in group:
                groups[name] = g
        for o in cls.options:
            if not o.flag:
                continue
            notes = [n for n in (o.limits(),) if n]
            default = cls.option_default(o)
            if o.required:
                notes.append("required")
            elif default not in (None, "", False):
                notes.append(f"default {default}")
            if o.address:
                notes.append("a host name stands for its " + ("address" if o.address == "one" else "addresses"))
            helptext = o.help + (f" ({'; '.join(notes)})" if notes else "")
            where = groups.get(o.name, kp)
            if o.type is bool:
                where.add_argument(o.flag_name, dest=o.name, action="store_true", default=None, help=helptext)
            else:
                where.add_argument(o.flag_name, dest=o.name, type=_option_type(o), required=o.required,
                                   metavar=o.name.split("_")[0].upper(), help=helptext)
        kp.set_defaults(func=cmd_inject)


def _epilog() -> str:
    from verifier import exits

    return exits.epilog(words={exits.FAILED: "a check failed (an expectation, a re-drive), or a fault in place "
                                             "could not do its work"},
                        note="The same scheme for every command; each command's --help says which apply.")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (what is wrong, and where the help is) instead of the
    usage block; the exit status stays 2 (bad input). Subcommands' parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"verifier: {sub}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verifier", description="Packet-level verifier of TCP socket behaviour.", epilog=_epilog())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("testbed", help="long-lived testbeds: up, list, exec, down",
                       description="Testbeds that outlive the command: bring one up, run your own programs "
                                   "in its hosts, capture and inject faults, then take it down. A testbed "
                                   "name is 1-32 lower-case letters, digits, '-' or '_', starting with a "
                                   "letter or digit. Bad input (a bad or unknown name, an unknown host) "
                                   "is one line on stderr and exit status 2, and creates nothing.")
    tsub = t.add_subparsers(dest="action", metavar="ACTION", required=True)
    from verifier import exits

    up = tsub.add_parser("up", help="bring up a testbed and print its hosts and addresses",
                         description="Bring up a testbed that outlives this command, recorded (with you as "
                                     "its owner) in /run/tcp-verifier/testbeds/.",
                         epilog=exits.epilog(exits.OK, exits.FAILED, exits.BAD_INPUT, words={
                             exits.FAILED: "the testbed could not be built (nothing is left of it)",
                             exits.BAD_INPUT: "bad input (a bad name, a name in use; no root): one line on "
                                              "stderr, nothing created"}))
    up.add_argument("--name", type=_testbed_name, metavar="NAME",
                    help="1-32 lower-case letters, digits, '-' or '_', starting with a letter or digit "
                         "(default: the lowest free number, 1, 2, ..., taken atomically)")
    up.add_argument("--topology", choices=["pair", "routed"], default="routed",
                    help="pair: client-server; routed: client-router-server (default)")
    fam = up.add_mutually_exclusive_group()
    for flag in ("ipv4", "ipv6", "dual"):
        fam.add_argument(f"--{flag}", dest="family", action="store_const", const=flag,
                         help={"ipv4": "IPv4 only", "ipv6": "IPv6 only", "dual": "both (default)"}[flag])
    up.add_argument("--json", action="store_true", help="print the testbed as JSON")
    up.set_defaults(func=cmd_testbed_up)
    ls = tsub.add_parser("list", help="the testbeds that exist, with their owners and state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_testbed_list)
    ex = tsub.add_parser("exec", help="run a command inside a host (stdin, stdout, exit status pass through)",
                         epilog="exit status: the program's own; 127 if it is not found, 126 if it is not "
                                "executable (as shells do); 2 bad input (a bad or unknown testbed, an unknown "
                                "host, no command; no root): one line on stderr, nothing started.")
    ex.add_argument("name", type=_testbed_name, metavar="NAME", help="the testbed")
    ex.add_argument("host", help="client, router or server")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ex.set_defaults(func=cmd_testbed_exec)
    dn = tsub.add_parser("down", help="remove a testbed completely (processes, links, namespaces)",
                         description="Remove a testbed: kill its processes and wait until they are gone, then "
                                     "delete its namespaces and its record. Also removes what is left of a "
                                     "broken or half-built one.",
                         epilog=exits.epilog(exits.OK, exits.FAILED, exits.BAD_INPUT, words={
                             exits.OK: "removed (its processes are gone)",
                             exits.FAILED: "a process outlived the deadline (the rest was removed), or the "
                                           "testbed is being brought up right now",
                             exits.BAD_INPUT: "bad input (a bad or unknown name; no root): one line on stderr, "
                                              "nothing removed"}))
    dn.add_argument("name", nargs="?", type=_testbed_name, metavar="NAME", help="the testbed")
    dn.add_argument("--all", action="store_true",
                    help="remove every testbed you own (the user who ran `testbed up`: SUDO_UID under sudo, "
                         "else the uid); other users' testbeds are listed and left alone, remove one of "
                         "those by its name")
    dn.add_argument("--json", action="store_true")
    dn.set_defaults(func=cmd_testbed_down)

    from verifier import argtypes, exits
    from verifier.capture import DEFAULT_RING_MIB, MAX_RING_MIB

    cp = sub.add_parser(
        "capture", help="record a testbed's interfaces to pcapng until Ctrl-C or a limit",
        description="Record every packet on a testbed's interfaces (all hosts, or --host) to one pcapng file, "
                    "with nanosecond timestamps, each packet's direction and the kernel's drop counters, until "
                    "Ctrl-C (or SIGTERM), --duration or --count. Each packet is in the file once per interface "
                    "it crossed; --view HOST also writes FILE's stem + .HOST.pcapng with that host's interface "
                    "alone, which Wireshark's TCP analysis reads without taking the copies for retransmissions.",
        epilog=exits.epilog(exits.OK, exits.FAILED, exits.BAD_INPUT, words={
            exits.FAILED: "the kernel dropped packets (how many is said, and written in the file)"}))
    cp.add_argument("name", type=_testbed_name, metavar="NAME", help="the testbed")
    cp.add_argument("--host", action="append", help="only this host's interfaces (repeatable)")
    cp.add_argument("-w", "--write", metavar="FILE",
                    help="output file, in a folder that exists (default NAME-DATE-TIME.pcapng here)")
    cp.add_argument("--duration", type=argtypes.duration, metavar="S", help="stop after S seconds")
    cp.add_argument("--count", type=argtypes.int_in(1, None, "a packet count"), metavar="N",
                    help="write exactly N packets in all (the first, in time order), then stop, as tcpdump -c")
    cp.add_argument("--ring-size", type=argtypes.int_in(1, MAX_RING_MIB, "a ring size (MiB)"),
                    metavar="MIB", default=DEFAULT_RING_MIB,
                    help=f"each interface's receive ring, in MiB (default {DEFAULT_RING_MIB}: about half a "
                         f"second at 100,000 packets/s)")
    cp.add_argument("--view", action="append", metavar="HOST",
                    help="also write FILE's stem + .HOST.pcapng: HOST's interface alone, for Wireshark "
                         "(repeatable; a router gets one file per interface, or name one: router:r0)")
    cp.add_argument("--json", action="store_true", help="print the counts as JSON")
    cp.set_defaults(func=cmd_capture)

    _add_inject_parsers(sub)

    from verifier.replay.command import add_parsers

    add_parsers(sub)

    from verifier.kernels.command import add_parsers as add_kernel_parsers
    from verifier.report import write_kernels_html

    add_kernel_parsers(sub, write_html=write_kernels_html)

    c = sub.add_parser("clean", help="remove namespaces left behind by runs whose process is gone",
                       description="Remove the network namespaces (and processes inside them) of runs whose "
                                   "owning process is gone. Only names of this project's scheme (tv<pid><n>-<host>) "
                                   "are touched; namespaces of live runs are left alone.",
                       epilog="exit status: 0 done; 2 bad input (no root): one line on stderr, nothing removed.")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_clean)
    return p


_OFFLINE = ("replay", "show")  # commands on capture files: their parser alone, without the faults' imports


def _offline_parser() -> argparse.ArgumentParser:
    from verifier.replay.command import add_parsers

    p = _Parser(prog="verifier", description="Packet-level verifier of TCP socket behaviour.", epilog=_epilog())
    add_parsers(p.add_subparsers(dest="command", metavar="COMMAND"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (verifier.exits: 0 done, 1 failed, 2 bad input, 3 capture not
    read in full, 130 interrupted)."""
    from verifier import exits

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = _offline_parser() if argv and argv[0] in _OFFLINE else build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            print("verifier: give a command: testbed, capture, inject, show, replay, kernels or clean "
                  "(see 'verifier --help')", file=sys.stderr)
            return exits.BAD_INPUT
        return args.func(args)
    except UserError as exc:
        print(f"verifier: {exc}", file=sys.stderr)
        return exits.BAD_INPUT if isinstance(exc, BadInput) else exits.FAILED
    except BrokenPipeError:  # the reader of our output went away (`| head`): end quietly
        from verifier.replay.command import quiet_pipe

        quiet_pipe()
        return exits.OK
    except KeyboardInterrupt:
        print("verifier: interrupted", file=sys.stderr)
        return exits.INTERRUPTED


def run() -> None:
    """The `verifier` console command: main() with the process's arguments, then its exit status.

    A replay or show that left nothing to run at exit (re-driving registers its agent's stop) ends
    without the interpreter's teardown (os._exit, after flushing its output): freeing every object one by one
    and a last collection were 1 to 2 % of `verifier replay BIG.pcapng --json`, for nothing. Any
    other command, or one that registered an exit handler, exits normally."""
    import atexit

    argv = sys.argv[1:]
    status = main(argv)
    handlers = getattr(atexit, "_ncallbacks", lambda: 1)()  # (CPython's count of exit handlers)
    if argv and argv[0] in _OFFLINE and not handlers:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            from verifier.replay.command import quiet_pipe

            quiet_pipe()
        except OSError:
            sys.exit(status)  # the normal way, which reports what went wrong
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
