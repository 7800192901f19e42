"""Bad input to the command line, refused as it is parsed: the real `.venv/bin/verifier` in a
subprocess, for `show`, `replay`, `inject` (its every kind), `clean` and the command itself.

Each case asserts the one scheme of `verifier.exits`: the exit status, exactly one line on stderr
that names the problem, no traceback, and nothing created (no file in the working directory, no
namespace named after the process). Values that argparse refuses need no root and no testbed; the
cases that need a testbed (unknown hosts, families, addresses outside it) are in
tests/testbed/test_cli_bad_input.py. Also here: a closed output pipe (a real `| head -1`, and a
pipe closed before the first write) ends `show` and `replay` quietly, and captures of link types
the decoder does not read are named on stderr with exit status 3.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from netns import namespace
from verifier import argtypes, exits
from verifier.faults import FAULT_KINDS
from verifier.pcap import PcapngWriter

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / ".venv" / "bin" / "verifier"
GOLDEN = ROOT / "captures" / "golden"
C3 = str(GOLDEN / "c3_refused_ipv4.pcapng")  # one attempt, to port 5001, refused
BAD = exits.BAD_INPUT


def run(argv: list[str], cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The command as a user runs it, in `cwd`; also checks it created nothing there or in /run/netns."""
    before = sorted(os.listdir(cwd))
    proc = subprocess.Popen([*prefix, str(VERIFIER), *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=120)
    assert sorted(os.listdir(cwd)) == before, f"{argv}: files created in {cwd}"
    tag = namespace.run_tag(proc.pid)
    assert not [n for n in namespace.list_names() if n.startswith(tag)], f"{argv}: namespaces of {tag} left"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def assert_one_line(res: subprocess.CompletedProcess, status: int, words: str) -> None:
    lines = res.stderr.splitlines()
    assert res.returncode == status, (res.args, res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, (res.args, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("verifier: ") and words in lines[0], (res.args, res.stderr)


# ---------------------------------------------------------------------------------------------------
# refused while parsing: wrong types, out of range, nan/inf, missing values; the same for each kind

PARSE_CASES = [
    # show
    (["show", C3, "--port", "99999"], "a port is 0-65535, not 99999"),
    (["show", C3, "--port", "70000"], "a port is 0-65535, not 70000"),
    (["show", C3, "--port", "-1"], "a port is 0-65535, not -1"),
    (["show", C3, "--port", "http"], "not a port number"),
    (["show", C3, "--port", "1.5"], "not a port number"),
    (["show", C3, "--max-events", "-5"], "a count is 0 or more, not -5"),
    (["show", C3, "--max-events", "nan"], "not a whole number"),
    (["show", C3, "--bogus"], "unrecognized arguments: --bogus"),
    (["show"], "the following arguments are required: file"),
    # replay
    (["replay", C3, "--show", "-1"], "a count is 0 or more, not -1"),
    (["replay", C3, "--show", "one"], "not a whole number"),
    (["replay", C3, "--port", "70000"], "a port is 0-65535, not 70000"),
    (["replay", C3, "--linger", "nan"], "give a positive, finite number of seconds"),
    (["replay", C3, "--linger", "inf"], "give a positive, finite number of seconds"),
    (["replay", C3, "--linger", "-1"], "give a positive, finite number of seconds"),
    (["replay", C3, "--linger", "1e12"], "at most 86400"),
    (["replay", C3, "--max-connections", "-5"], "max_connections must be at least 2, got -5"),
    (["replay", C3, "--max-connections", "1"], "max_connections must be at least 2, got 1"),
    (["replay", C3, "--to-port", "70000", "--against", "lab", "--connection", "0"], "must lie in [1, 65535]"),
    (["replay", C3, "--to-port", "0", "--against", "lab", "--connection", "0"], "must lie in [1, 65535], got 0"),
    (["replay", C3, "--connection", "-1", "--against", "lab"], "a count is 0 or more, not -1"),
    (["replay", C3, "--timeout", "nan", "--against", "lab", "--connection", "0"], "finite number of seconds"),
    (["replay", C3, "--against", "Bad_Name", "--connection", "0"], "upper-case"),
    # inject: the shared options
    (["inject", "drop", "lab", "--duration", "99999999"], "at most 86400 s (one day)"),
    (["inject", "drop", "lab", "--duration", "1e12"], "at most 86400 s (one day)"),
    (["inject", "drop", "lab", "--duration", "0"], "a duration is above 0"),
    (["inject", "drop", "lab", "--duration", "-3"], "a duration is above 0"),
    (["inject", "drop", "lab", "--duration", "nan"], "give a finite number"),
    (["inject", "drop", "lab", "--duration", "inf"], "give a finite number"),
    (["inject", "drop", "lab", "--duration", "soon"], "not a number"),
    (["inject", "drop", "Bad_Name"], "upper-case"),
    (["inject", "meteor", "lab"], "invalid choice: 'meteor'"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--duration", "5"],
     "unrecognized arguments: --duration 5"),  # segment acts once: no duration to give
    # inject: each kind's own options
    (["inject", "drop", "lab", "--nth", "0"], "nth must lie in [1, 10000], got 0"),
    (["inject", "drop", "lab", "--nth", "10001"], "nth must lie in [1, 10000], got 10001"),
    (["inject", "drop", "lab", "--nth", "2.5"], "nth '2.5': not an int"),
    (["inject", "drop", "lab", "--first", "-1"], "first must lie in [1, 10000], got -1"),
    (["inject", "drop", "lab", "--probability", "1.5"], "probability must lie in [0, 1], got 1.5"),
    (["inject", "drop", "lab", "--probability", "nan"], "probability must be a finite number"),
    (["inject", "drop", "lab", "--first", "1", "--nth", "2"], "argument --nth: not allowed with argument --first"),
    (["inject", "drop", "lab", "--flags", "synack"], "unknown TCP flags match 'synack'"),
    (["inject", "drop", "lab", "--dport", "0"], "dport must lie in [1, 65535], got 0"),
    (["inject", "drop", "lab", "--sport", "65536"], "sport must lie in [1, 65535], got 65536"),
    (["inject", "drop", "lab", "--dport", "http"], "dport 'http': not an int"),
    (["inject", "drop", "lab", "--src", "192.0.2.300"], "not an IP address: '192.0.2.300'"),
    (["inject", "drop", "lab", "--dst", "client,"], "an empty address"),
    (["inject", "reject", "lab", "--code", "tcp-reset"], "unknown reject code 'tcp-reset'"),
    (["inject", "icmp-unreachable", "lab", "--delay-ms", "nan"], "delay_ms must be a finite number"),
    (["inject", "icmp-unreachable", "lab", "--delay-ms", "inf"], "delay_ms must be a finite number"),
    (["inject", "icmp-unreachable", "lab", "--delay-ms", "-1"], "delay_ms must lie in [0, 60000], got -1"),
    (["inject", "icmp-unreachable", "lab", "--mtu", "-1"], "mtu must lie in [68, 65535], got -1"),
    (["inject", "icmp-unreachable", "lab", "--mtu", "70000"], "mtu must lie in [68, 65535], got 70000"),
    (["inject", "icmp-unreachable", "lab", "--code", "bogus"], "unknown ICMP unreachable code 'bogus'"),
    (["inject", "icmp-unreachable", "lab", "--code", "300"], "an ICMP code is 0-255, not 300"),
    (["inject", "icmp-unreachable", "lab", "--family", "5"], "unknown IP family 5; use one of 4, 6"),
    (["inject", "icmp-unreachable", "lab", "--max-answers", "0"], "max_answers must lie in [1, 10000]"),
    (["inject", "icmp-unreachable", "lab", "--lifetime-s", "inf"], "lifetime_s must be a finite number"),
    (["inject", "rst", "lab", "--to", "client", "--wait-s", "nan"], "wait_s must be a finite number"),
    (["inject", "rst", "lab", "--to", "client", "--wait-s", "inf"], "wait_s must be a finite number"),
    (["inject", "rst", "lab", "--to", "client", "--at", "sideways"], "unknown RST position 'sideways'"),
    (["inject", "rst", "lab", "--to", "client", "--offset", str(2**31)], "offset must lie in"),
    (["inject", "rst", "lab", "--dport", "80"], "the following arguments are required: --to"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--seq", "-1"],
     "seq must lie in [0, 4294967295], got -1"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--seq", "4294967296"],
     "seq must lie in [0, 4294967295], got 4294967296"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--ack", "-1"], "ack must lie in"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--flags", "Q"], "flags 'Q'"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--wait-ms", "nan"], "finite"),
    (["inject", "segment", "lab", "--dst", "server", "--dport", "80", "--payload", "x" * 1300],
     "does not fit one segment"),
    (["inject", "segment", "lab", "--dport", "80"], "the following arguments are required: --dst"),
    (["inject", "segment", "lab", "--dst", "8.8.8.8.8", "--dport", "80"], "not an IP address"),
    (["inject", "blackhole", "lab", "--family", "5"], "unknown IP family 5; use one of 4, 6"),
    (["inject", "blackhole", "lab", "--family", "four"], "family 'four': not an int"),
    (["inject", "delay", "lab"], "the following arguments are required: --delay-ms"),
    (["inject", "delay", "lab", "--delay-ms", "0"], "delay_ms must lie in (0, 60000], got 0"),
    (["inject", "delay", "lab", "--delay-ms", "10", "--lifetime-s", "inf"], "lifetime_s must be a finite number"),
    (["inject", "delay", "lab", "--delay-ms", "10", "--max-packets", "20000"], "max_packets must lie in"),
    (["inject", "delay", "lab", "--delay-ms", "10", "--method", "tc"], "unknown delay method 'tc'"),
    (["inject", "syn-flood", "lab", "--dport", "80", "--count", "0"], "count must lie in [1, 100000], got 0"),
    (["inject", "syn-flood", "lab", "--dport", "80", "--rate-pps", "nan"], "rate_pps must be a finite number"),
    (["inject", "syn-flood", "lab", "--dport", "80", "--rate-pps", "0"], "rate_pps must lie in (0, 50000]"),
    (["inject", "syn-flood", "lab", "--dport", "80", "--time-limit-s", "inf"], "time_limit_s must be a finite"),
    (["inject", "syn-flood", "lab", "--dport", "80", "--seed", "-1"], "seed must lie in"),
    # clean, and the command itself
    (["clean", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "give a command"),
    (["meteor"], "invalid choice: 'meteor'"),
]


@pytest.mark.parametrize("argv, words", PARSE_CASES, ids=[" ".join(a)[:70] for a, _ in PARSE_CASES])
def test_bad_values_are_refused_while_parsing(argv, words, tmp_path):
    assert_one_line(run(argv, tmp_path), BAD, words)


NUMERIC = [(kind, o) for kind, cls in FAULT_KINDS.items() for o in cls.options if o.flag and o.type in (int, float)]


def test_the_kinds_declare_the_numeric_options_checked_below():
    assert len(NUMERIC) >= 20 and {k for k, _ in NUMERIC} == set(FAULT_KINDS)


@pytest.mark.parametrize("kind, option", NUMERIC, ids=[f"{k} {o.flag_name}" for k, o in NUMERIC])
def test_every_numeric_option_of_every_kind_refuses_nan_and_inf(kind, option, tmp_path):
    """Not only the options listed above: every int/float option of every kind."""
    for value in ("nan", "inf", "-inf"):
        argv = ["inject", kind, "lab", f"{option.flag_name}={value}"]
        res = run(argv, tmp_path)
        assert_one_line(res, BAD, option.flag_name)
        assert ("finite" if option.type is float else "not an int") in res.stderr, (argv, res.stderr)


# ---------------------------------------------------------------------------------------------------
# refused once the file is looked at: missing, a directory, unreadable, not a capture, no such id/port

def _unreadable(tmp_path) -> tuple[Path, tuple[str, ...]]:
    """A capture (mode 000) the command may not read, and how to run it so: as root, without the
    capabilities that let root read any file (setpriv drops them from the bounding set)."""
    f = tmp_path / "secret.pcapng"
    f.write_bytes(Path(C3).read_bytes())
    f.chmod(0o000)
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    return f, prefix


FILE_CASES = {
    "missing file": (lambda t: [str(t / "missing.pcap")], "no such file"),
    "a path through a file": (lambda t: [C3 + "/x.pcap"], "a part of its path is not a directory"),
    "a directory": (lambda t: [str(t)], "is a directory"),  # show; replay reads a directory (corpus mode)
    "a directory without captures": (lambda t: [str(t)], "no pcap or pcapng files in this directory"),
    "an empty file": (lambda t: [str(_write(t / "empty.pcap", b""))], "empty.pcap"),
    "not a capture": (lambda t: [str(_write(t / "page.pcap", b"<html>not a capture</html>"))],
                      "not a pcap or pcapng file"),
    "no such connection": (lambda t: [C3, "--show", "99"], "no connection 99 in"),
    "no connection with the port": (lambda t: [C3, "--port", "5002"], "no connection with port 5002"),
}
FILE_RUNS = [(cmd, case) for cmd in ("show", "replay") for case in sorted(FILE_CASES)
             if not (cmd == "show" and case in ("no such connection", "a directory without captures"))  # no --show
             and not (cmd == "replay" and case == "a directory")]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("command, case", FILE_RUNS, ids=[f"{c} {k}" for c, k in FILE_RUNS])
def test_file_problems_are_one_line_and_status_2(command, case, tmp_path):
    make, words = FILE_CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    assert_one_line(run([command, *make(data)], work), BAD, words)
    assert_one_line(run([command, *make(data), "--json"], work), BAD, words)


@pytest.mark.parametrize("command", ["show", "replay"])
def test_an_unreadable_capture_is_one_line_and_status_2(command, tmp_path):
    f, prefix = _unreadable(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    try:
        assert_one_line(run([command, str(f)], work, prefix), BAD, "not readable (permission denied)")
    finally:
        f.chmod(0o600)


def test_the_same_fault_gives_the_same_status_in_every_command(tmp_path):
    """A missing file, a bad port: 2 in show and replay alike (once 1 in show, 2 in replay)."""
    for argv in (["x.pcap"], [C3, "--port", "70000"], [C3, "--port", "5002"]):
        statuses = {cmd: run([cmd, *argv], tmp_path).returncode for cmd in ("show", "replay")}
        assert statuses == {"show": BAD, "replay": BAD}, (argv, statuses)


# ---------------------------------------------------------------------------------------------------
# the --help of every command says its exit statuses

@pytest.mark.parametrize("argv", [[], ["show"], ["replay"], ["inject"], ["clean"], ["inject", "drop"],
                                  ["inject", "rst"], ["inject", "syn-flood"]])
def test_help_says_the_exit_statuses(argv, tmp_path):
    res = run([*argv, "--help"], tmp_path)
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "exit status" in text and "2 bad input" in text, (argv, res.stdout)
    if argv[:1] == ["inject"]:
        assert "0 done" in text and "1 the fault was in place but could not do its work" in text
    if argv[:1] in (["show"], ["replay"]):
        assert "3 the capture could not be read in full" in text and "closed output pipe" in text


def test_help_says_every_fault_is_bounded_and_what_nth_means(tmp_path):
    drop = " ".join(run(["inject", "drop", "--help"], tmp_path).stdout.split())
    assert f"at most {argtypes.MAX_DURATION_S:g} s (one day)" in drop
    assert "drop only the Kth match; the others, before and after it, pass" in drop
    icmp = " ".join(run(["inject", "icmp-unreachable", "--help"], tmp_path).stdout.split())
    assert "answer only the Kth match; every other match is dropped here silently, unanswered" in icmp


# ---------------------------------------------------------------------------------------------------
# a closed output pipe: quiet, and the status still the verdict where there is one

@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[Path, dict]:
    """A capture of thousands of connections (the benchmark's generator): far more output than a pipe
    holds, so the command is still writing when its reader goes away."""
    spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "bench" / "replay.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path_factory.mktemp("many") / "mix.pcapng"
    info = bench.generate(path, 20000)
    assert info["outcomes"].get("refused") and len(info["outcomes"]) > 1
    return path, info


PIPE_CASES = {  # argv after the file -> exit status
    "show": (["show"], [], exits.OK),
    "show --json": (["show"], ["--json"], exits.OK),
    "replay": (["replay"], [], exits.OK),
    "replay --json": (["replay"], ["--json"], exits.OK),
    "replay --expect that holds": (["replay"], ["--expect", "any attempt is refused"], exits.OK),
    "replay --expect that fails": (["replay"], ["--expect", "no attempt is refused"], exits.FAILED),
    "replay --json --expect that fails": (["replay"], ["--json", "--expect", "no attempt is refused"], exits.FAILED),
}


@pytest.mark.parametrize("case", sorted(PIPE_CASES))
def test_a_real_pipe_to_head_ends_quietly(case, many, tmp_path):
    """`verifier show FILE | head -1`, through a shell, as a user types it."""
    (cmd, extra, status) = PIPE_CASES[case]
    path, _ = many
    err = tmp_path / "stderr"
    script = '"$0" "$@" 2>"$ERR" | head -1 >/dev/null; exit "${PIPESTATUS[0]}"'
    res = subprocess.run(["bash", "-c", script, str(VERIFIER), *cmd, str(path), *extra],
                         env={**os.environ, "ERR": str(err)}, capture_output=True, text=True, timeout=120)
    stderr = err.read_text()
    assert res.returncode == status, (case, res.returncode, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "Broken pipe" not in stderr, stderr
    if "--json" not in extra:  # the table's summary and verdicts went to the closed stdout
        assert stderr == "", (case, stderr)


@pytest.mark.parametrize("case", sorted(PIPE_CASES))
def test_a_pipe_closed_before_the_first_write_ends_quietly(case, many):
    """The reader is gone before the command starts: its very first write fails (EPIPE)."""
    (cmd, extra, status) = PIPE_CASES[case]
    path, _ = many
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([str(VERIFIER), *cmd, str(path), *extra], stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=120)
    finally:
        os.close(w)
    assert res.returncode == status, (case, res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    if "--json" not in extra:
        assert res.stderr == "", (case, res.stderr)


def test_help_into_a_closed_pipe_ends_quietly():
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([str(VERIFIER), "replay", "--help"], stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=60)
    finally:
        os.close(w)
    assert (res.returncode, res.stderr) == (0, "")


# ---------------------------------------------------------------------------------------------------
# link types the decoder does not read: named on stderr, with how many frames, and status 3

def _other_link_types(path: Path, linktypes: dict[int, int], with_tcp: bool) -> Path:
    """A pcapng with frames of the given link types (type -> count), and an Ethernet interface with
    one refused attempt if `with_tcp` (copied from the C3 golden capture)."""
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    t = 1_700_000_000_000_000_000
    for lt, n in linktypes.items():
        i = w.add_interface(f"if{lt}", linktype=lt)
        for k in range(n):
            w.write_packet(i, t + k, b"\x45" + bytes(40))
    if with_tcp:
        from verifier.pcap import CaptureFile

        eth = w.add_interface("eth0")
        for raw in CaptureFile(C3):
            if raw.linktype == 1:
                w.write_packet(eth, raw.ts_ns, raw.data)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("command", ["show", "replay"])
@pytest.mark.parametrize("json_out", [False, True])
def test_frames_of_link_types_not_read_are_named_and_status_3(command, json_out, tmp_path):
    # SLIP (8), ARCNET (7), Linux USB (220), Juniper Ethernet (178), and 32, which libpcap has no name for
    kinds = {8: 2, 7: 3, 220: 1, 178: 4, 32: 5}
    path = _other_link_types(tmp_path / "other.pcapng", kinds, with_tcp=True)
    res = run([command, str(path), *(["--json"] if json_out else [])], tmp_path)
    assert res.returncode == exits.DAMAGED and "Traceback" not in res.stderr, res.stderr
    (warning,) = [line for line in res.stderr.splitlines() if "not read" in line and line.startswith("verifier:")]
    assert "15 frame(s) not read" in warning
    for part in ("7 (ARCNET: BSD ARCNET): 3", "220 (USB_LINUX_MMAPPED: USB with padded Linux header): 1",
                 "178 (JUNIPER_ETHER: Juniper Ethernet): 4",
                 "8 (SLIP): 2", "32: 5"):
        assert part in warning, warning
    # what could be read is still there: the Ethernet interface's refused attempt
    assert ("refused" in res.stdout) and "5001" in res.stdout, res.stdout


def test_a_capture_with_only_frames_not_read_is_not_silently_empty(tmp_path):
    path = _other_link_types(tmp_path / "arcnet.pcapng", {7: 4}, with_tcp=False)
    for command in ("show", "replay"):
        res = run([command, str(path)], tmp_path)
        assert res.returncode == exits.DAMAGED, (command, res.returncode, res.stderr)
        assert res.stderr.count("\n") == 1 and "4 frame(s) not read" in res.stderr and "ARCNET" in res.stderr


def test_an_expectation_that_fails_decides_over_frames_not_read(tmp_path):
    path = _other_link_types(tmp_path / "mixed.pcapng", {220: 2}, with_tcp=True)
    assert run(["replay", str(path), "--expect", "port 5001 refused"], tmp_path).returncode == exits.DAMAGED
    assert run(["replay", str(path), "--expect", "port 5001 closed"], tmp_path).returncode == exits.FAILED


def test_a_capture_of_link_types_read_is_status_0_without_a_warning(tmp_path):
    for command in ("show", "replay"):
        res = run([command, C3], tmp_path)
        assert res.returncode == exits.OK and res.stderr == "", (command, res.stderr)


def test_the_command_ends_an_offline_replay_with_its_output_and_status_whole(tmp_path):
    """The console command skips the interpreter's teardown after an offline replay (cli.run): the
    output is still all there, to a pipe and to a file, and the exit status is the command's."""
    from verifier import cli

    big = str(ROOT / "tests" / "data" / "zeek" / "traces" / "http__http-single-conn-22.pcap")
    for path, expect, status in ((C3, (), exits.OK), (C3, ("--expect", "every attempt is established"), exits.FAILED),
                                 (big, (), exits.OK)):
        argv = ["replay", path, "--json", *expect]
        buf = io.StringIO()
        saved = cli.sys.stdout
        cli.sys.stdout = buf
        try:
            assert cli.main(argv) == status
        finally:
            cli.sys.stdout = saved
        piped = run(argv, tmp_path)
        assert (piped.returncode, piped.stdout) == (status, buf.getvalue())
        with open(tmp_path / "out.jsonl", "w") as f:
            buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
            assert subprocess.run([str(VERIFIER), *argv], stdout=f, stderr=subprocess.DEVNULL, env=buffered).returncode == status
        assert (tmp_path / "out.jsonl").read_text() == buf.getvalue()
        (tmp_path / "out.jsonl").unlink()


def test_the_command_flushes_what_a_command_left_unflushed_before_it_skips_teardown(tmp_path):
    """cli.run flushes the output itself before os._exit: a replay whose own final flush is taken
    away (so the lines wait in the stream's buffer: PYTHONUNBUFFERED unset) still hands over every
    line, to a file."""
    code = ("import sys\n"
            "from verifier import cli\n"
            "from verifier.replay import command\n"
            "guarded = command._guarded\n"
            "command._guarded = lambda f: None if getattr(f, '__name__', '') == 'flush' else guarded(f)\n"
            f"sys.argv = ['verifier', 'replay', {C3!r}, '--json']\n"
            "cli.run()\n")
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # (buffered, as by default)
    with open(out, "w") as f:
        res = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], stdout=f, stderr=subprocess.PIPE,
                             text=True, timeout=120, env=env)
    assert res.returncode == exits.OK, res.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["outcome"] == "refused"
