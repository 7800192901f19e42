"""`verifier replay` and `verifier show`: a capture file through the one core, on the command line.

    verifier replay FILE [--json] [--expect COND]... [--port N] [--show ID] [--zeek-sessions] ...
    verifier replay FILE --against TESTBED --connection ID      (re-drive, root)
    verifier show FILE [--port N] [--json] [--max-events N]

Both stream: attempts are printed as they finish (JSON Lines, or table rows), expectations are
checked attempt by attempt, and only the live attempts are held, so memory stays flat on files of
any size. Exit status: 0 all good, 1 an expectation failed (or the re-drive differed), 2 bad input
(no such file, not a capture, bad options or expectations), 3 the capture is damaged or truncated
(what could be read was reported; the damage is on stderr).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import warnings

from verifier.analysis.conditions import (EXPECT_HELP, Evaluation, ExpectSyntaxError, describe_attempt,
                                          endpoint_text, parse_condition)

__all__ = ["add_parsers", "run_replay", "run_show"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DAMAGED = 0, 1, 2, 3
TABLE_HEAD = ("id", "client", "server", "outcome", "SYNs", "start s", "duration s", "zeek", "detail")
_RIGHT = {0, 4, 5, 6}
_WIDTH_SAMPLE = 1000  # rows that set the table's column widths before it streams


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"give a positive, finite number of seconds, not {text}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"give 0 or more, not {v}")
    return v


def _err(msg: str) -> None:
    print(f"verifier: {msg}", file=sys.stderr)


def add_parsers(subparsers) -> None:
    """Register `replay` and `show` on the `verifier` command's subparsers."""
    p = subparsers.add_parser(
        "replay", help="classify every TCP connection attempt of a capture; check expectations; re-drive",
        description="Read a pcap/pcapng file in one streaming pass and classify every TCP connection attempt "
                    "(established, refused, timed-out, unreachable, reset, closed, incomplete, uncertain) with "
                    "its SYN count and times and Zeek's conn_state and history. No root needed. With --against, "
                    "re-send one connection's client side to a live testbed (root) and compare the answers.",
        epilog=EXPECT_HELP + "\nexit status: 0 all good, 1 an expectation failed or the re-drive differed, "
                             "2 bad input (file, expectation syntax, options), 3 the capture is damaged or "
                             "truncated (the part that could be read was reported)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="pcap or pcapng file (Ethernet, Linux cooked, raw IP, loopback; VLAN, MPLS, "
                                "PPPoE, tunnels)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per TCP connection attempt (orig_h, orig_p, resp_h, resp_p, outcome, "
                        "detail, syn_count, conn_state, history, ...), printed as each one finishes; the summary "
                        "and verdicts go to stderr")
    p.add_argument("--expect", action="append", default=[], metavar="COND", help="an expectation (see below)")
    p.add_argument("--port", type=_port, help="only list attempts with this port on either side")
    p.add_argument("--show", type=_count, metavar="ID", help="also print attempt ID packet by packet, with "
                                                             "Scapy's dissection of its frames")
    p.add_argument("--zeek-sessions", action="store_true",
                   help="group packets as Zeek does (its connection reuse and timers split rows; every interface "
                        "counts) instead of one row per attempt")
    p.add_argument("--checksums", action="store_true",
                   help="drop segments with bad checksums like Zeek without -C (off by default: captures taken on "
                        "the sending host carry offloaded, unfinished checksums)")
    p.add_argument("--zeek-bare", action="store_true", help="Zeek's orientation heuristic as in bare mode (zeek -b): "
                                                            "no likely server ports")
    p.add_argument("--linger", type=_seconds, default=300.0, metavar="S",
                   help="an attempt idle this long (capture time) is finished and forgotten (default 300, Zeek's "
                        "tcp_inactivity_timeout)")
    p.add_argument("--max-connections", type=_count, default=None, metavar="N",
                   help="live attempts held at most (default 60000, about 100 MB); when full, idle ones are "
                        "finished, then the oldest half-open ones evicted, each counted")
    p.add_argument("--against", metavar="TESTBED", help="re-drive against this named testbed (verifier testbed up)")
    p.add_argument("--connection", type=_count, metavar="ID", help="the connection to re-drive (its id in the table)")
    p.add_argument("--to-port", type=_port, metavar="P", help="re-drive to this server port (default: the captured one)")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="S",
                   help="how long to wait for each expected answer while re-driving (default 5)")
    p.set_defaults(func=run_replay)

    s = subparsers.add_parser(
        "show", help="list the TCP connections of a capture and their exchanges",
        description="Read a pcap or pcapng file and print every TCP connection attempt with its exchange (time, "
                    "interface, direction, flags, relative seq/ack) and the attempt machine's verdict. Streams: a "
                    "connection is printed when it finishes.",
        epilog="exit status: 0 ok, 2 bad input, 3 the capture is damaged or truncated")
    s.add_argument("file", help="pcap or pcapng file")
    s.add_argument("--port", type=_port, help="only connections with this port on either side")
    s.add_argument("--json", action="store_true", help="one JSON object per connection (JSON Lines)")
    s.add_argument("--max-events", type=_count, default=2000, metavar="N",
                   help="packets kept (and shown) per connection, on all interfaces (default 2000; 0: no limit)")
    s.set_defaults(func=run_show)


def _check_file(path: str) -> str | None:
    if not os.path.exists(path):
        return f"{path}: no such file"
    if os.path.isdir(path):
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
    bad = _check_file(args.file)
    if bad:
        _err(bad)
        return EXIT_BAD_INPUT
    try:
        conds = [parse_condition(c) for c in args.expect]
    except ExpectSyntaxError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.against is not None or args.connection is not None:
        if args.against is None or args.connection is None:
            _err("re-driving needs both --against TESTBED and --connection ID")
            return EXIT_BAD_INPUT
        return _run_redrive(args)

    from verifier.analysis.grouper import DEFAULT_MAX_CONNECTIONS
    from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS
    from verifier.replay.scan import Scan

    try:
        sc = Scan(args.file, grouping="zeek" if args.zeek_sessions else "attempt", checksums=args.checksums,
                  likely_server_ports=frozenset() if args.zeek_bare else DEFAULT_LIKELY_SERVER_PORTS,
                  linger_s=args.linger, max_connections=args.max_connections or DEFAULT_MAX_CONNECTIONS)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    evals = [Evaluation(c) for c in conds]
    # A one-pass command that makes millions of short-lived objects and no reference cycles: the
    # cyclic collector would walk the live attempts again and again for nothing.
    gc_was = gc.isenabled()
    gc.disable()
    try:
        return _replay(args, sc, evals)
    finally:
        if gc_was:
            gc.enable()


def _replay(args, sc, evals) -> int:
    from verifier.analysis.grouper import json_lines
    from verifier.pcap import CaptureFormatError

    out = sys.stdout
    table = None if args.json else _Table(out, lambda: sc.grouper.first_ns)
    # JSON lines go out as bytes, a chunk at a time; a text stream without a buffer (a test's
    # StringIO) gets them decoded
    raw = getattr(out, "buffer", None)
    emit = raw.write if raw is not None else (lambda b: out.write(b.decode()))
    port = args.port
    shown = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for chunk in sc.chunks():
                if table is None:
                    emit(json_lines(chunk, -1 if port is None else port))
                else:
                    table.add_all(chunk, port)
                for e in evals:
                    for r in chunk:
                        e.add(r)
                if args.show is not None:
                    for r in chunk:
                        if r.id == args.show:
                            shown = describe_attempt(r)
    except CaptureFormatError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    st = sc.stats
    try:
        if table is not None:
            table.close()
            print(_summary(args.file, st), file=out)
        else:
            print(_summary(args.file, st), file=sys.stderr)
        _warn_all(caught)
        status = EXIT_OK
        if args.show is not None:
            if shown is None:
                _err(f"no connection {args.show} in {args.file} (ids 0-{st.connections - 1})" if st.connections
                     else f"no connection {args.show}: {args.file} has no TCP connection attempts")
                status = EXIT_BAD_INPUT
            else:
                print(file=out if table is not None else sys.stderr)
                print(show_attempt(args.file, args.show, shown, sc), file=out if table is not None else sys.stderr)
        if evals:
            vout = out if table is not None else sys.stderr
            if table is not None:
                print(file=vout)
            for e in evals:
                v = e.verdict()
                print(v.text(), file=vout)
                if not v.ok and status == EXIT_OK:
                    status = EXIT_FAILED
        if status == EXIT_OK and (st.truncated or st.damage_count):
            status = EXIT_DAMAGED
        out.flush()
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    return status


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


def _quiet_pipe() -> None:
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
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = stream_connections(args.file, max_packets=args.max_events)
            for c in stream:
                if args.port is not None and args.port not in (c.c_port, c.s_port):
                    continue
                n += 1
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
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    st = stream.stats
    try:
        summary = _summary(args.file, st)
        if args.port is not None:
            summary += f"; {n} with port {args.port}"
        print(summary, file=sys.stderr if args.json else out)
        _warn_all(caught)
        out.flush()
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    if args.port is not None and n == 0:
        _err(f"no connection with port {args.port} in {args.file}")
        return EXIT_FAILED
    return EXIT_DAMAGED if (st.truncated or st.damage_count) else EXIT_OK
