"""`verifier replay` and `verifier show`: a capture file through the one core, on the command line.

    verifier replay FILE [--json] [--expect COND]... [--port N] [--show ID] [--zeek-sessions] [--html OUT] ...
    verifier replay DIR/ [--json | --zeek-log tsv|json] [--jobs N | --dask SCHEDULER] ...   (corpus mode)
    verifier replay FILE --against TESTBED --connection ID      (re-drive, root)
    verifier show FILE [--port N] [--json] [--max-events N] [--html OUT]

`--html OUT` writes one self-contained page of ladder diagrams (`verifier.draw`): show's replaces
its text ladders, replay's adds the table of attempts with their outcomes.

Both stream: attempts are printed as they finish (JSON Lines, or table rows), expectations are
checked attempt by attempt, and only the live attempts are held, so memory stays flat on files of
any size. Exit status (`verifier.exits`, one scheme for every command): 0 all good, 1 an
expectation failed (or the re-drive differed), 2 bad input (no such file, not a capture, bad options
or expectations, a connection or port the capture does not have), 3 the capture could not be read
in full: damaged or truncated records, or frames of link types the decoder does not read (what
could be read was reported; what was not is named on stderr). Every option is checked while the
arguments are parsed (`verifier.argtypes`). A closed output pipe (`| head`) ends the command quietly;
with --expect the reading goes on, silently, so the exit status is still the verdict.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import stat
import sys
import textwrap
import warnings

from verifier import argtypes, exits
from verifier.analysis.expect_help import EXPECT_HELP

# (verifier.analysis.conditions, the --expect language, is imported where a command needs it: a
# third of `verifier replay`'s start-up, for a run that has no --expect.)

__all__ = ["add_parsers", "quiet_pipe", "run_replay", "run_show"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DAMAGED = exits.OK, exits.FAILED, exits.BAD_INPUT, exits.DAMAGED
TABLE_HEAD = ("id", "client", "server", "outcome", "SYNs", "start s", "duration s", "zeek", "detail")
_RIGHT = {0, 4, 5, 6}
_WIDTH_SAMPLE = 1000  # rows that set the table's column widths before it streams


HELD_ARENAS = 64  # freed 1 MiB object arenas a replay keeps for reuse (grouper.hold_arenas)
MAX_HTML_LADDERS = 200  # ladders on a --html page; the other connections are counted
MAX_HTML_ROWS = 5000  # rows of replay's table on a --html page
_SEND_PORT = argtypes.int_in(1, 65535, "a port to send to")  # --to-port: a segment cannot go to port 0
_MAX_CONNECTIONS = argtypes.int_in(2, None, "max_connections")
_JOBS = argtypes.int_in(1, 4096, "--jobs")


def _dask_address(text: str) -> str:
    """argparse type of --dask: a scheduler address, SCHEME://HOST:PORT or HOST:PORT."""
    rest = text.split("://", 1)[1] if "://" in text else text
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--dask: not a scheduler address (tcp://HOST:PORT): {text!r}")
    return text


def _testbed_name(text: str) -> str:
    """argparse type of --against: a testbed name, checked by the rule of `netns`."""
    from netns.namespace import NamespaceError, check_testbed_name

    try:
        return check_testbed_name(text)
    except NamespaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _err(msg: str) -> None:
    print(f"verifier: {msg}", file=sys.stderr)


def _link_type_name(linktype: int) -> str:
    """"7 (ARCNET: BSD ARCNET)": a link type with libpcap's name for it (pcap_datalink_val_to_name),
    or just its number where libpcap is missing or knows none."""
    try:
        import ctypes
        import ctypes.util

        lib = ctypes.CDLL(ctypes.util.find_library("pcap") or "libpcap.so.0.8")
        lib.pcap_datalink_val_to_name.restype = lib.pcap_datalink_val_to_description.restype = ctypes.c_char_p
        name = lib.pcap_datalink_val_to_name(linktype)
        text = lib.pcap_datalink_val_to_description(linktype)
    except (OSError, AttributeError):
        return str(linktype)
    if not name:
        return str(linktype)
    return f"{linktype} ({name.decode()}" + (f": {text.decode()}" if text and text != name else "") + ")"


def _unread(st) -> str | None:
    """The warning for frames of link types the decoder does not read (one line), or None."""
    if not st.unsupported:
        return None
    total = sum(st.unsupported.values())
    each = ", ".join(f"{_link_type_name(lt)}: {n}" for lt, n in sorted(st.unsupported.items()))
    return (f"warning: {total} frame(s) not read, of link types this tool does not decode ({each}); their "
            f"TCP connections are missing from the result (exit status 3)")


def add_parsers(subparsers) -> None:
    """Register `replay` and `show` on the `verifier` command's subparsers."""
    p = subparsers.add_parser(
        "replay", help="classify every TCP connection attempt of a capture; check expectations; re-drive",
        description="Read a pcap/pcapng file in one streaming pass and classify every TCP connection attempt "
                    "(established, refused, timed-out, unreachable, reset, closed, incomplete, uncertain) with "
                    "its SYN count and times and Zeek's conn_state and history. No root needed. With --against, "
                    "re-send one connection's client side to a live testbed (root) and compare the answers.",
        epilog=EXPECT_HELP + "\n" + textwrap.fill(exits.epilog(
            exits.OK, exits.FAILED, exits.BAD_INPUT, exits.DAMAGED,
            note="An expectation that fails decides over damage (1, not 3). A closed output pipe (| head) ends "
                 "the command quietly: with 0, or with --expect the verdict, the rest read without output."), 100),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="pcap or pcapng file (Ethernet, Linux cooked, raw IP, loopback, PPP, 802.11, ...; VLAN, "
                                "MPLS, PPPoE, tunnels), or a directory of them (corpus mode: every capture under it, "
                                "in parallel, one summary)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per TCP connection attempt (orig_h, orig_p, resp_h, resp_p, outcome, "
                        "detail, syn_count, conn_state, history, ...), printed as each one finishes; the summary "
                        "and verdicts go to stderr")
    p.add_argument("--expect", action="append", default=[], metavar="COND", help="an expectation (see below)")
    p.add_argument("--port", type=argtypes.port, help="only list attempts with this port on either side (0-65535; "
                                                      "none with it: exit status 2)")
    p.add_argument("--show", type=argtypes.count, metavar="ID", help="also print attempt ID packet by packet, with "
                                                             "Scapy's dissection of its frames")
    p.add_argument("--zeek-sessions", action="store_true",
                   help="group packets as Zeek does (its connection reuse and timers split rows; every interface "
                        "counts) instead of one row per attempt")
    p.add_argument("--zeek-log", choices=("tsv", "json"), metavar="FORMAT",
                   help="print Zeek's conn.log instead of our rows: tsv (Zeek's ASCII log with its # header lines) "
                        "or json (Zeek's JSON lines); rows as Zeek groups them (implies --zeek-sessions)")
    p.add_argument("--checksums", action="store_true",
                   help="drop segments with bad checksums like Zeek without -C (off by default: captures taken on "
                        "the sending host carry offloaded, unfinished checksums)")
    p.add_argument("--zeek-bare", action="store_true", help="Zeek's orientation heuristic as in bare mode (zeek -b): "
                                                            "no likely server ports")
    p.add_argument("--linger", type=argtypes.seconds, default=300.0, metavar="S",
                   help="an attempt idle this long (capture time) is finished and forgotten (default 300, Zeek's "
                        "tcp_inactivity_timeout)")
    p.add_argument("--max-connections", type=_MAX_CONNECTIONS, default=None, metavar="N",
                   help="live attempts held at most (default 60000, about 100 MB); when full, idle ones are "
                        "finished, then the oldest half-open ones evicted, each counted")
    p.add_argument("--jobs", type=_JOBS, metavar="N",
                   help="with a directory: replay its captures in N processes at once (default: every core)")
    p.add_argument("--dask", type=_dask_address, metavar="SCHEDULER",
                   help="with a directory: replay its captures on a dask.distributed cluster (e.g. tcp://host:8786; "
                        "the optional dependency tcp-verifier[dask]; the workers must see the files at the same path)")
    p.add_argument("--against", metavar="TESTBED", type=_testbed_name,
                   help="re-drive against this named testbed (verifier testbed up)")
    p.add_argument("--connection", type=argtypes.count, metavar="ID",
                   help="the connection to re-drive (its id in the table)")
    p.add_argument("--to-port", type=_SEND_PORT, metavar="P",
                   help="re-drive to this server port, 1-65535 (default: the captured one)")
    p.add_argument("--timeout", type=argtypes.seconds, default=5.0, metavar="S",
                   help="how long to wait for each expected answer while re-driving (default 5)")
    p.add_argument("--html", type=argtypes.html_output, metavar="OUT",
                   help=f"also write OUT (*.html): one self-contained page with the table of attempts and the ladder "
                        f"diagram of each (the first {MAX_HTML_LADDERS} drawn, the first {MAX_HTML_ROWS} rows listed)")
    p.set_defaults(func=run_replay)

    s = subparsers.add_parser(
        "show", help="list the TCP connections of a capture and their exchanges",
        description="Read a pcap or pcapng file and print every TCP connection attempt with its exchange (time, "
                    "interface, direction, flags, relative seq/ack) and the attempt machine's verdict. Streams: a "
                    "connection is printed when it finishes.",
        epilog=exits.epilog(exits.OK, exits.BAD_INPUT, exits.DAMAGED,
                            note="A closed output pipe (| head) ends the command quietly, with 0."))
    s.add_argument("file", help="pcap or pcapng file")
    s.add_argument("--port", type=argtypes.port, help="only connections with this port on either side (0-65535; "
                                                      "none with it: exit status 2)")
    s.add_argument("--json", action="store_true", help="one JSON object per connection (JSON Lines)")
    s.add_argument("--max-events", type=argtypes.count, default=2000, metavar="N",
                   help="packets kept (and shown) per connection, on all interfaces (default 2000; 0: no limit)")
    s.add_argument("--html", type=argtypes.html_output, metavar="OUT",
                   help=f"write OUT (*.html) instead of the text ladders: one self-contained page with the ladder "
                        f"diagram of each connection (the first {MAX_HTML_LADDERS} drawn, the others counted)")
    s.set_defaults(func=run_show)


def _check_file(path: str) -> str | None:
    """What is wrong with `path` as a capture to read (one line), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except NotADirectoryError:
        return f"{path}: no such file (a part of its path is not a directory)"
    except PermissionError:
        return f"{path}: cannot be reached (permission denied on a directory of its path)"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: is a directory, not a capture file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable (permission denied)"
    return None


class _Table:
    """The attempts as a table, streamed: the first rows set the column widths."""

    def __init__(self, out, t0) -> None:
        self.out = out
        self.pending: list[tuple] = []
        self.widths: list[int] | None = None
        self.fmt = ""
        self.t0 = t0  # () -> the capture's first packet time: "start s" counts from it
        self.rows = 0

    def add_all(self, attempts, port) -> None:
        """The rows of `attempts` (those with `port` on either side, unless it is None), written at once."""
        t0 = self.t0()
        rows = [r.row(t0) for r in attempts if port is None or r.c_port == port or r.s_port == port]
        self.rows += len(rows)
        if self.widths is None:
            self.pending += rows
            if len(self.pending) < _WIDTH_SAMPLE:
                return
            self._start()
            rows, self.pending = self.pending, []
        if rows:
            fmt = self.fmt
            self.out.write("".join([fmt.format(*row) for row in rows]))

    def _start(self) -> None:
        self.widths = [max(len(h), *(len(row[k]) for row in self.pending)) if self.pending else len(h)
                       for k, h in enumerate(TABLE_HEAD)]
        last = len(TABLE_HEAD) - 1
        self.fmt = "  " + "  ".join("{}" if k == last else f"{{:{'>' if k in _RIGHT else '<'}{w}}}"
                                    for k, w in enumerate(self.widths)) + "\n"
        self.out.write(self.fmt.format(*TABLE_HEAD))

    def close(self) -> None:
        if self.widths is None:
            if not self.pending:
                print("  (no TCP connections)", file=self.out)
                return
            self._start()
            rows, self.pending = self.pending, []
            self.out.write("".join([self.fmt.format(*row) for row in rows]))


def _summary(name: str, st) -> str:
    notes = st.notes()
    return (f"capture {name}: {st.format}, {st.packets} packets, {st.tcp} TCP segments, {st.connections} TCP "
            f"connection attempt(s) [{st.engine} engine]" + (f"; {', '.join(notes)}" if notes else ""))


def _warn_all(caught) -> None:
    for w in caught:
        _err(f"warning: {w.message}")


def run_replay(args) -> int:
    """`verifier replay` with parsed arguments; returns the exit status."""
    if os.path.isdir(args.file):
        return _run_corpus(args)
    if args.jobs is not None or args.dask is not None:
        _err(f"--jobs and --dask are for a directory of captures; {args.file} is one file")
        return EXIT_BAD_INPUT
    bad = _check_file(args.file)
    if bad:
        _err(bad)
        return EXIT_BAD_INPUT
    conds = []
    if args.expect:
        from verifier.analysis.conditions import ExpectSyntaxError, parse_condition

        try:
            conds = [parse_condition(c) for c in args.expect]
        except ExpectSyntaxError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
    if args.html is not None and _same_file(args.html, args.file):
        _err(f"--html {args.html}: that is the capture being read; give another file name")
        return EXIT_BAD_INPUT
    if args.against is not None or args.connection is not None:
        if args.html is not None:
            _err("--html draws a capture's connections; it does not go with --against/--connection (re-driving)")
            return EXIT_BAD_INPUT
        if args.against is None or args.connection is None:
            _err("re-driving needs both --against TESTBED and --connection ID")
            return EXIT_BAD_INPUT
        return _run_redrive(args)

    from verifier.analysis.grouper import DEFAULT_MAX_CONNECTIONS, hold_arenas
    from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS
    from verifier.replay.scan import Scan

    try:
        sc = Scan(args.file, grouping="zeek" if args.zeek_sessions or args.zeek_log else "attempt",
                  checksums=args.checksums,
                  likely_server_ports=frozenset() if args.zeek_bare else DEFAULT_LIKELY_SERVER_PORTS,
                  linger_s=args.linger, max_connections=args.max_connections or DEFAULT_MAX_CONNECTIONS)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    # A one-pass command that makes millions of short-lived objects and no reference cycles: the
    # cyclic collector would walk the live attempts again and again for nothing, and the arenas
    # the objects live in are kept for reuse rather than given back and faulted in anew.
    gc_was = gc.isenabled()
    gc.disable()
    hold_arenas(HELD_ARENAS)
    try:
        return _replay(args, sc, conds)
    finally:
        hold_arenas(0)
        if gc_was:
            gc.enable()


def _run_corpus(args) -> int:
    """`verifier replay DIR/`: every capture of a directory (verifier.replay.corpus)."""
    for opt, given in (("--expect", args.expect), ("--show", args.show is not None), ("--html", args.html is not None),
                       ("--against/--connection", args.against is not None or args.connection is not None)):
        if given:
            _err(f"{opt} reads one capture, not a directory ({args.file}): give a file")
            return EXIT_BAD_INPUT
    from verifier.analysis.grouper import DEFAULT_MAX_CONNECTIONS
    from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS
    from verifier.replay.corpus import run_corpus

    options = dict(grouping="zeek" if args.zeek_sessions or args.zeek_log else "attempt", checksums=args.checksums,
                   likely_server_ports=frozenset() if args.zeek_bare else DEFAULT_LIKELY_SERVER_PORTS,
                   linger_s=args.linger, max_connections=args.max_connections or DEFAULT_MAX_CONNECTIONS,
                   output=f"zeek-{args.zeek_log}" if args.zeek_log else "json" if args.json else "lines",
                   port=args.port)
    try:
        return run_corpus(args.file, options, jobs=args.jobs, dask=args.dask)
    except BrokenPipeError:
        quiet_pipe()
        return EXIT_OK
    except (RuntimeError, OSError) as exc:  # no dask, or the scheduler cannot be reached
        _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return EXIT_BAD_INPUT


def _replay(args, sc, conds) -> int:
    from verifier.analysis.grouper import json_lines
    from verifier.pcap import CaptureFormatError

    out = sys.stdout
    zlog = getattr(args, "zeek_log", None)
    table = None if args.json or zlog else _Table(out, lambda: sc.grouper.first_ns)
    # JSON lines go out as bytes, a chunk at a time; a text stream without a buffer (a test's
    # StringIO) gets them decoded
    raw = getattr(out, "buffer", None)
    emit = raw.write if raw is not None else (lambda b: out.write(bytes(b).decode()))
    port = args.port
    shown = None
    html_rows: list | None = [] if args.html is not None else None
    listed = 0  # attempts with --port, when it is given
    closed = False  # the reader of stdout went away
    zeek_started = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunks = sc.chunks()
            first = next(chunks, None)  # opens the file: its recorded client sysctls are known now
            # A `follows linux` condition models the sysctls the capture recorded, if it did.
            evals = []
            if conds:
                from verifier.analysis.conditions import Evaluation

                evals = [Evaluation(c, sc.client_sysctls) for c in conds]
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                for e in evals:
                    for r in chunk:
                        e.add(r)
                if args.show is not None:
                    for r in chunk:
                        if r.id == args.show:
                            from verifier.analysis.conditions import describe_attempt

                            shown = describe_attempt(r)
                if port is not None:
                    listed += sum(1 for r in chunk if r.c_port == port or r.s_port == port)
                if html_rows is not None and len(html_rows) < MAX_HTML_ROWS:
                    t0 = sc.grouper.first_ns
                    html_rows += [r.row(t0) for r in chunk if port is None or r.c_port == port or r.s_port == port]
                    del html_rows[MAX_HTML_ROWS:]
                if closed:
                    continue
                try:
                    if zlog:
                        emit(_zeek_rows(chunk, port, zlog, not zeek_started))
                        zeek_started = True
                    elif table is None:
                        json_lines(chunk, -1 if port is None else port, emit)
                    else:
                        table.add_all(chunk, port)
                except BrokenPipeError:
                    quiet_pipe()
                    closed = True
                    if not evals:  # nothing left to decide: stop reading
                        return EXIT_OK
    except CaptureFormatError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    st = sc.stats
    # The status first, from what was read; then the words (which a closed pipe may swallow).
    status = EXIT_OK
    errors = []
    if port is not None and not listed:
        errors.append(f"no connection with port {port} in {args.file}")
    if args.show is not None and shown is None:
        errors.append(f"no connection {args.show} in {args.file} (ids 0-{st.connections - 1})" if st.connections
                      else f"no connection {args.show}: {args.file} has no TCP connection attempts")
    verdicts = [e.verdict() for e in evals]
    if errors:
        status = EXIT_BAD_INPUT
    elif not all(v.ok for v in verdicts):
        status = EXIT_FAILED
    elif st.truncated or st.damage_count or st.unsupported:
        status = EXIT_DAMAGED
    vout = out if table is not None else sys.stderr  # where the table's companions go
    if table is not None:
        _guarded(table.close)
    if zlog and not closed:
        _guarded(lambda: emit(_zeek_rows([], port, zlog, not zeek_started) + _zeek_close(zlog)))
    if table is not None or not errors:  # bad input on stderr is one line, without the summary
        _say(_summary(args.file, st), vout)
    _warn_all(caught)
    unread = _unread(st)
    if unread:
        _err(unread)
    for line in errors:
        _err(line)
    if args.show is not None and shown is not None and not closed:
        _say("", vout)
        _say(show_attempt(args.file, args.show, shown, sc), vout)
    if verdicts:
        if table is not None:
            _say("", vout)
        for v in verdicts:
            _say(v.text(), vout)
    if html_rows is not None and status != EXIT_BAD_INPUT:
        _say(_replay_html(args, sc, html_rows, listed if port is not None else st.connections), vout)
    _guarded(out.flush)
    return status


def _zeek_time_now() -> str:
    import time

    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime())


def _zeek_rows(chunk, port, fmt: str, first: bool) -> bytes:
    """conn.log lines of the attempts of `chunk` (Zeek's header first when `first` and TSV)."""
    from verifier.analysis import zeeklog

    parts = [zeeklog.header(_zeek_time_now()).encode()] if first and fmt == "tsv" else []
    for a in chunk:
        if port is not None and port not in (a.c_port, a.s_port):
            continue
        d = zeeklog.row(a)
        if d:
            parts.append(zeeklog.tsv_row(d).encode() if fmt == "tsv" else zeeklog.json_row(d))
    return b"".join(parts)


def _zeek_close(fmt: str) -> bytes:
    from verifier.analysis import zeeklog

    return zeeklog.close_line(_zeek_time_now()).encode() if fmt == "tsv" else b""


def _guarded(write) -> None:
    """Call `write()`; if the reader of stdout went away, quietly stop writing there."""
    try:
        write()
    except BrokenPipeError:
        quiet_pipe()


def _say(text: str, file) -> None:
    """print(text, file=file), quiet if file is stdout and its reader went away."""
    _guarded(lambda: print(text, file=file))


def show_attempt(path: str, conn_id: int, line: str, sc) -> str:
    """Attempt `conn_id` packet by packet: our ladder, and Scapy's one-line dissection of each of its
    frames (a second pass keeps only that attempt's packets; Scapy dissects only those frames)."""
    from verifier.analysis.trace import _from_file

    trace = _from_file(path, keep_ids={conn_id}, grouping=sc.grouper, max_packets=500)
    conn = next((c for c in trace.connections if c.id == conn_id), None)
    lines = [f"connection {conn_id}: {line}", ""]
    if conn is None or not conn.packets:
        return "\n".join(lines + ["(its packets cannot be shown)"])
    lines.append(conn.ladder(all_interfaces=len(conn.interfaces) > 1))
    try:
        from scapy.all import conf  # Scapy only for the shown packets
    except ImportError:  # pragma: no cover
        return "\n".join(lines)
    from verifier.pcap import CaptureFile

    want = {p.index for p in conn.packets}
    lines += ["", "Scapy's dissection:"]
    for raw in CaptureFile(path):
        if raw.index in want:
            cls = conf.l2types.get(raw.linktype)
            pkt = cls(raw.data) if cls is not None else conf.raw_layer(raw.data)
            lines.append(f"  frame {raw.index + 1}: {pkt.summary()}")
            want.discard(raw.index)
            if not want:
                break
    return "\n".join(lines)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _write_page(path: str, text: str) -> None:
    """Write the page whole or not at all: into a temporary file beside it, then renamed."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _replay_html(args, sc, rows: list, total: int) -> str:
    """Write replay's --html page: the table and the ladders of its first attempts (a second pass keeps
    only their packets); the line that says so."""
    from verifier.analysis.trace import _from_file
    from verifier.draw.ladder import ladder, render_svg
    from verifier.draw.page import capture_page

    ids = [int(r[0]) for r in rows[:MAX_HTML_LADDERS]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once already, by the first pass
        trace = _from_file(args.file, keep_ids=set(ids), grouping=sc.grouper, max_packets=args_max_events(args))
    by_id = {c.id: c for c in trace.connections}
    ladders = []
    for i in ids:
        c = by_id.get(i)
        if c is not None and c.packets:
            lad = ladder(c, interfaces=trace.interfaces)
            ladders.append({"id": c.id, "title": lad.title, "svg": render_svg(lad)})
    notes = []
    if total > len(rows):
        notes.append(f"the table lists the first {len(rows)} of {total} attempts")
    if total > len(ladders):
        notes.append(f"ladders are drawn for the first {len(ladders)} of {total} attempts")
    page = capture_page(f"verifier replay {os.path.basename(args.file)}", [_summary(args.file, sc.stats)], ladders,
                        table=(TABLE_HEAD, rows), notes=notes)
    _write_page(args.html, page)
    return f"html: wrote {args.html} ({len(rows)} rows, {len(ladders)} ladders)"


def args_max_events(args) -> int:
    return getattr(args, "max_events", 2000)


def quiet_pipe() -> None:
    """The reader of our output went away (`| head`): end quietly, without a second error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _run_redrive(args) -> int:
    if os.geteuid() != 0:
        _err("re-driving needs root (it sends from a testbed's network namespace): run it with sudo")
        return EXIT_BAD_INPUT
    from verifier.analysis.trace import load_trace
    from verifier.pcap import CaptureFormatError
    from verifier.replay.redrive import RedriveError, redrive, resolve_testbed

    try:
        trace = load_trace(args.file)
        bed = resolve_testbed(args.against)
        report = redrive(trace, args.connection, bed, port=args.to_port, answer_timeout=args.timeout)
    except (RedriveError, CaptureFormatError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except OSError as exc:  # the kernel refused a socket or a send while re-driving
        _err(f"the re-drive of connection {args.connection} failed: {exc.strerror or exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"connection": report.connection_id, "ok": report.ok, "differences": report.differences,
                          "sent": len(report.sent), "recorded": [s.__dict__ for s in report.recorded_answers],
                          "live": [s.__dict__ for s in report.live_answers]}))
    else:
        print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


def run_show(args) -> int:
    """`verifier show`: every connection of a capture with its ladder, streamed."""
    bad = _check_file(args.file)
    if bad:
        _err(bad)
        return EXIT_BAD_INPUT
    if args.html is not None and _same_file(args.html, args.file):
        _err(f"--html {args.html}: that is the capture being read; give another file name")
        return EXIT_BAD_INPUT
    gc_was = gc.isenabled()
    gc.disable()  # as in run_replay
    try:
        return _show(args)
    finally:
        if gc_was:
            gc.enable()


def _show(args) -> int:
    from verifier.analysis.trace import stream_connections
    from verifier.pcap import CaptureFormatError

    out = sys.stdout
    n = 0
    html = args.html is not None
    ladders: list[dict] = []
    if html:
        from verifier.draw.ladder import ladder, render_svg
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = stream_connections(args.file, max_packets=args.max_events)
            for c in stream:
                if args.port is not None and args.port not in (c.c_port, c.s_port):
                    continue
                n += 1
                if html and len(ladders) < MAX_HTML_LADDERS:
                    lad = ladder(c)
                    ladders.append({"id": c.id, "title": lad.title, "svg": render_svg(lad)})
                if html and not args.json:
                    continue
                if args.json:
                    out.write(json.dumps({
                        "id": c.id, "client": c.orig_h, "client_port": c.c_port, "server": c.resp_h,
                        "server_port": c.s_port, "family": c.family, "interfaces": c.interfaces,
                        "outcome": c.outcome, "detail": c.detail, "reset_by": c.reset_by,
                        "conn_state": c.conn_state, "history": c.history, "truncated_events": c.npackets + c.copies
                        > len(c.packets),
                        "events": [{"t": round(e.t, 9), "iface": e.iface, "dir": e.direction, "kind": e.kind,
                                    "flags": e.flags, "seq": e.seq, "ack": e.ack, "len": e.payload_len,
                                    "event": e.event, "note": e.note} for e in c.all_events()],
                    }) + "\n")
                else:
                    print(f"  {c.describe()}", file=out)
                    print(c.ladder(), file=out)
                    if c.npackets + c.copies > len(c.packets):
                        print(f"  ... {c.npackets + c.copies - len(c.packets)} more packet(s) not shown "
                              f"(--max-events)", file=out)
                    print(file=out)
    except CaptureFormatError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # show decides nothing: once nobody reads, stop
        quiet_pipe()
        return EXIT_OK
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    st = stream.stats
    summary = _summary(args.file, st)
    if args.port is not None:
        summary += f"; {n} with port {args.port}"
    if not args.json or args.port is None or n:  # bad input on stderr is one line, without the summary
        _say(summary, sys.stderr if args.json else out)
    _warn_all(caught)
    unread = _unread(st)
    if unread:
        _err(unread)
    _guarded(out.flush)
    if args.port is not None and n == 0:
        _err(f"no connection with port {args.port} in {args.file}")
        return EXIT_BAD_INPUT
    if html:
        from verifier.draw.page import capture_page

        notes = [f"ladders are drawn for the first {len(ladders)} of {n} connections"] if n > len(ladders) else []
        _write_page(args.html, capture_page(f"verifier show {os.path.basename(args.file)}", [summary], ladders,
                                            notes=notes))
        _say(f"html: wrote {args.html} ({len(ladders)} ladders)", sys.stderr if args.json else out)
    return EXIT_DAMAGED if (st.truncated or st.damage_count or st.unsupported) else EXIT_OK
