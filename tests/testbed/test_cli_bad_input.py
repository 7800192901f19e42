"""Bad input that only a live testbed can show wrong: `verifier inject` and `verifier replay --against`
run as a user runs them (the real `.venv/bin/verifier`, as root) against named testbeds, one IPv4-only
and one IPv6-only.

Every case asserts the scheme of `verifier.exits`: exit status 2, exactly one line on stderr naming
the problem, no traceback, and nothing created or left: the testbeds' namespaces are the same, no
namespace carries the command's run tag, every host's nft ruleset is as it was (empty), and no
file appeared in the working directory. A fault that was in place but could not act is status 1,
and it is removed too. The parse-time refusals (types, ranges, nan/inf) are in
tests/unit/test_cli_input.py. Also here, on the same testbeds: `--nth` from the command line, and
the counters a standing fault shows on a terminal while it stands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netns import Testbed, namespace
from verifier import exits
from verifier.pytest_plugin import guard_teardown, require_root

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / ".venv" / "bin" / "verifier"
C3 = str(ROOT / "captures" / "golden" / "c3_refused_ipv4.pcapng")
SUFFIX = os.getpid() % 100000  # named testbeds of this test process only


def verifier(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(VERIFIER), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def beds():
    """Two named testbeds brought up by the command line: IPv4 only and IPv6 only."""
    require_root()
    guard_teardown()
    names = {4: f"bad4-{SUFFIX}", 6: f"bad6-{SUFFIX}"}
    try:
        for fam, name in names.items():
            up = verifier("testbed", "up", "--name", name, f"--ipv{fam}")
            assert up.returncode == 0, up.stderr
        yield {fam: Testbed.attach(name) for fam, name in names.items()}
    finally:
        for name in names.values():
            verifier("testbed", "down", name)


def snapshot(beds: dict, cwd: Path) -> dict:
    """What a command could have created: namespaces, nft rulesets of every host, files in cwd."""
    rulesets = {}
    for bed in beds.values():
        for h in bed.hosts.values():
            rulesets[h.netns] = h.run(["nft", "list", "ruleset"]).check().stdout
    return {"netns": sorted(namespace.list_names()), "nft": rulesets, "files": sorted(os.listdir(cwd))}


def assert_nothing_created(before: dict, after: dict, pid: int) -> None:
    tag = namespace.run_tag(pid)
    assert not [n for n in after["netns"] if n.startswith(tag)], f"namespaces of the command's run {tag} left"
    ours = [n for n in before["nft"]]
    assert [n for n in after["netns"] if n in ours] == [n for n in before["netns"] if n in ours]
    assert after["nft"] == before["nft"] and all(not r.strip() for r in after["nft"].values()), after["nft"]
    assert after["files"] == before["files"]


def run_checked(beds: dict, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    before = snapshot(beds, cwd)
    proc = subprocess.Popen([str(VERIFIER), *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=120)
    assert_nothing_created(before, snapshot(beds, cwd), proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# (argv with {v4} / {v6} for the testbeds' names, the words of the one stderr line)
CASES = [
    # families a testbed does not have (once an IndexError in cmd_inject)
    (["inject", "blackhole", "{v6}", "--family", "4"], "has no IPv4 addresses (it is ipv6)"),
    (["inject", "blackhole", "{v4}", "--family", "6"], "has no IPv6 addresses (it is ipv4)"),
    (["inject", "icmp-unreachable", "{v4}", "--family", "6"], "has no IPv6 addresses (it is ipv4)"),
    # packets addressed outside the testbed: one rule for every kind that forges them
    (["inject", "segment", "{v4}", "--dst", "8.8.8.8", "--dport", "80"], "8.8.8.8 is not an address of this testbed"),
    (["inject", "segment", "{v4}", "--dst", "2001:db8:2::2", "--dport", "80"],
     "2001:db8:2::2 is not an address of this testbed"),
    (["inject", "segment", "{v4}", "--dst", "server", "--dport", "80", "--src", "8.8.8.8"],
     "forged source 8.8.8.8 is neither an address of this testbed nor a documentation address"),
    (["inject", "syn-flood", "{v4}", "--dst", "2001:db8:2::2", "--dport", "80"],  # once OSError: unreachable
     "2001:db8:2::2 is not an address of this testbed"),
    (["inject", "syn-flood", "{v4}", "--dst", "203.0.113.99", "--dport", "80"],
     "203.0.113.99 is not an address of this testbed"),
    (["inject", "syn-flood", "{v6}", "--dst", "203.0.113.2", "--dport", "80"],
     "203.0.113.2 is not an address of this testbed"),
    (["inject", "rst", "{v4}", "--to", "8.8.8.8", "--dport", "80"], "8.8.8.8 is not an address of this testbed"),
    # unknown testbeds, hosts, interfaces, addresses
    (["inject", "drop", "nosuch-{v4}"], "no testbed named nosuch-"),
    (["inject", "drop", "{v4}", "--host", "laptop"], "has no host 'laptop'; it has client, router, server"),
    (["inject", "segment", "{v4}", "--dst", "servr", "--dport", "80"], "has no host 'servr'"),
    (["inject", "drop", "{v4}", "--src", "client,laptop"], "has no host 'laptop'"),
    (["inject", "icmp-unreachable", "{v4}", "--interface", "eth9"], "has no interface 'eth9'"),
    (["inject", "rst", "{v4}", "--to", "client", "--interface", "eth9"], "has no interface 'eth9'"),
    (["inject", "blackhole", "{v4}", "--address", "203.0.113.99"], "has the address 203.0.113.99"),
    (["inject", "blackhole", "{v4}", "--host", "client", "--address", "203.0.113.2"],
     "203.0.113.2 is not an address of client"),
    # combinations refused before anything is applied
    (["inject", "rst", "{v4}", "--to", "client", "--wait-s", "100", "--duration", "10"],
     "--wait-s 100 is longer than the fault stays (--duration 10)"),
    (["inject", "rst", "{v4}", "--to", "client", "--wait-s", "100", "--lifetime-s", "10"],
     "a wait of 100 s (wait_s, --wait-s) is longer than the fault lives (10 s"),
    # re-driving
    (["replay", C3, "--against", "nosuch-{v4}", "--connection", "0"], "no testbed named nosuch-"),
    (["replay", C3, "--against", "{v4}", "--connection", "99"], "no connection 99"),
    (["replay", C3, "--against", "{v6}", "--connection", "0"], "no IPv4 addresses"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_against_a_testbed_is_one_line_status_2_and_creates_nothing(beds, argv, words, tmp_path):
    names = {"v4": beds[4].name, "v6": beds[6].name}
    argv = [a.format(**names) for a in argv]
    res = run_checked(beds, argv, tmp_path)
    lines = res.stderr.splitlines()
    assert res.returncode == exits.BAD_INPUT, (argv, res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("verifier: ") and words in lines[0], (argv, res.stderr)
    assert res.stdout == "", res.stdout


def test_a_fault_that_cannot_act_is_status_1_and_is_removed(beds, tmp_path):
    """rst needs a segment of the connection to learn from; with no traffic it cannot act: one line,
    after its progress line, status 1, and its rules and the agent's sockets are gone."""
    res = run_checked(beds, ["inject", "rst", beds[4].name, "--to", "client", "--dport", "5999", "--wait-s", "0.3"],
                      tmp_path)
    assert res.returncode == exits.FAILED and "Traceback" not in res.stderr, res.stderr
    last = res.stderr.splitlines()[-1]
    assert last.startswith("verifier: no segment of a connection matching TCP dport=5999"), res.stderr
    assert res.stdout.startswith("rst on router: ") and "sent=0" in res.stdout, res.stdout


def _connect(bed, port: int, timeout: float) -> str:
    """One connect() from the client (one SYN: it gives up before any retransmission): the errno name."""
    code = ("import socket, sys\ns = socket.socket()\ns.settimeout(float(sys.argv[2]))\n"
            "try:\n    s.connect(('203.0.113.2', int(sys.argv[1]))); print('connected')\n"
            "except OSError as e:\n    print(type(e).__name__)")
    return bed["client"].run([sys.executable, "-c", code, str(port), str(timeout)]).check().stdout.strip()


def test_nth_from_the_command_line_drops_exactly_the_kth(beds):
    """`--nth 2`: of three SYNs, only the second dies; the first and third are answered (RST: nothing
    listens). The report, printed with --json at the end, counts all three and one drop."""
    bed = beds[4]
    inj = subprocess.Popen([str(VERIFIER), "inject", "drop", bed.name, "--flags", "syn", "--dport", "5002", "--nth",
                            "2", "--duration", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           bufsize=0)
    try:
        assert "Ctrl-C to remove it sooner" in _read_until(inj, "Ctrl-C to remove it sooner")
        # 0.5 s: well inside the first retransmission timeout (1 s), so each attempt is one SYN
        results = [_connect(bed, 5002, 0.5) for _ in range(3)]
    finally:
        inj.send_signal(signal.SIGINT)
        out, err = inj.communicate(timeout=30)
    assert results == ["ConnectionRefusedError", "TimeoutError", "ConnectionRefusedError"], results
    report = json.loads(out)
    assert inj.returncode == exits.OK and (report["matched"], report["dropped"], report["nth"]) == (3, 1, 2), report
    assert not bed["router"].run(["nft", "list", "ruleset"]).check().stdout.strip()


def test_a_standing_fault_shows_its_counters_on_a_terminal_while_it_stands(beds):
    """On a terminal (a pty here), `inject` shows the fault's live counters (`status()`) once a second."""
    import pty
    import select
    import time

    bed = beds[4]
    master, slave = pty.openpty()
    inj = subprocess.Popen([str(VERIFIER), "inject", "drop", bed.name, "--flags", "syn", "--dport", "5003",
                            "--duration", "20"], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"matched=1" not in seen:
            if b"Ctrl-C to remove it sooner" in seen and b"attempted" not in seen:
                _connect(bed, 5003, 0.3)  # one SYN, dropped: matched=1, dropped=1
                seen += b"attempted"
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no live counters within 30 s: {seen!r}"
            seen += os.read(master, 4096)
    finally:
        inj.send_signal(signal.SIGINT)
        out, _ = inj.communicate(timeout=30)
        os.close(master)
    assert b" s left: matched=1, dropped=1" in seen, seen
    assert inj.returncode == exits.OK and "matched=1" in out and "dropped=1" in out, out


def _read_until(proc, text: str, timeout: float = 30) -> str:
    """Read the process's stderr until `text` appears (bounded by `timeout`)."""
    import select
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} within {timeout} s; got {seen!r}"
        chunk = os.read(proc.stderr.fileno(), 65536)
        assert chunk, f"the command ended before {text!r}: {seen!r}"
        seen += chunk
    return seen.decode()


def test_a_syn_flood_on_a_testbed_without_that_family_is_refused_not_unreachable(beds, tmp_path):
    """Once `OSError: Network is unreachable` from the flood's thread; now refused before it starts."""
    res = run_checked(beds, ["inject", "syn-flood", beds[6].name, "--dst", "203.0.113.2", "--dport", "80"], tmp_path)
    assert res.returncode == exits.BAD_INPUT and "Network is unreachable" not in res.stderr, res.stderr


def test_the_address_rule_holds_for_the_python_api_too(beds):
    """The rule is in `inject` itself, for every kind: Python refuses what the command line refuses."""
    from verifier.faults import FaultError, Match, Rst, Segment, SynFlood, inject

    client = beds[4]["client"]
    for fault in (Segment("8.8.8.8", 80), Segment("203.0.113.2", 80, src="10.1.2.3"),
                  SynFlood("2001:db8:2::2", 80, count=1, rate_pps=1), Rst(Match(dport=80), to="192.0.2.99")):
        with pytest.raises(FaultError, match="not an address of this testbed|neither an address"):
            with inject(client, fault):
                pass  # pragma: no cover
    assert not client.run(["nft", "list", "ruleset"]).check().stdout.strip()
