"""`verifier capture` as a user runs it, as a real process (root): bad input refused in one line with
nothing created, --count as tcpdump's -c, Ctrl-C and SIGTERM ending it with a complete file, lost
packets said, --view files beside the capture."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.testbed.wire import children
from verifier.pcap import CaptureFile, read_interface_stats, read_packets

VERIFIER = [sys.executable, "-m", "verifier.cli"]


def verifier(*args, timeout=60, cwd=None):
    return subprocess.run([*VERIFIER, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def bed(root):
    """A named routed IPv4 testbed of this test process, removed afterwards even if the test fails."""
    name = f"k{os.getpid() % 100000}"
    up = verifier("testbed", "up", "--name", name, "--ipv4")
    assert up.returncode == 0, up.stderr
    yield name
    verifier("testbed", "down", name)


def start_capture(*args, **popen):
    """`verifier capture ARGS` in the background; returns once it says it is live (bounded wait)."""
    proc = subprocess.Popen([*VERIFIER, "capture", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    line = b""
    deadline = time.monotonic() + 30
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stderr.fileno(), 1) if ready else b""
        if not chunk:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"verifier capture never said it was live: {line + err!r}")
        line += chunk
    assert line.startswith(b"capturing "), line
    return proc


def flood(name, count, rate=1000):
    res = verifier("inject", "syn-flood", name, "--dport", "5000", "--count", str(count), "--rate-pps", str(rate),
                   "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def assert_complete(path, labels=("client:c0", "router:r0", "router:r1", "server:s0")):
    """A whole pcapng: no damage, not cut, statistics for every interface agreeing with its packets."""
    cf = CaptureFile(path)
    per: dict = {}
    for p in cf:
        per[p.iface_name] = per.get(p.iface_name, 0) + 1
    assert not cf.damage and not cf.truncated
    stats = {s.iface_name: s for s in cf.stats}
    assert sorted(stats) == sorted(labels)
    for label, s in stats.items():
        assert s.delivered == per.get(label, 0) and s.received >= s.delivered + s.dropped, s
    return per, stats


# -- bad input: one line, exit 2, nothing created ------------------------------------------------
def test_a_missing_output_folder_is_refused_and_not_created(bed, tmp_path):
    missing = tmp_path / "missing" / "dir" / "x.pcapng"
    res = verifier("capture", bed, "-w", str(missing))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"verifier: cannot write {missing}: the folder {missing.parent} does not "
                                       f"exist (create it first)"]
    assert not (tmp_path / "missing").exists()
    res = verifier("capture", bed, "-w", str(tmp_path))
    assert res.returncode == 2 and "it is a folder" in res.stderr and len(res.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--duration", "-5"], "argument --duration: a duration is above 0"),
    (["--duration", "nan"], "argument --duration: a duration: give a finite number, not 'nan'"),
    (["--duration", "inf"], "argument --duration: a duration: give a finite number, not 'inf'"),
    (["--duration", "0"], "argument --duration: a duration is above 0"),
    (["--count", "0"], "argument --count: a packet count must be at least 1, got 0"),
    (["--count", "-3"], "argument --count: a packet count must be at least 1, got -3"),
    (["--count", "2.5"], "argument --count: a packet count: not a whole number: '2.5'"),
    (["--ring-size", "0"], "argument --ring-size: a ring size (MiB) must lie in [1, 1024], got 0"),
    (["--ring-size", "4096"], "argument --ring-size: a ring size (MiB) must lie in [1, 1024], got 4096"),
    (["--host", "nope"], "has no host 'nope'"),
    (["--view", "nope"], "has no host 'nope'"),
    (["--host", "client", "--view", "server"], "--view server: that host is not captured"),
])
def test_bad_options_are_one_line_and_exit_2(bed, tmp_path, args, message):
    res = verifier("capture", bed, *args, cwd=tmp_path)
    assert res.returncode == 2, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []  # not even the default NAME-DATE-TIME.pcapng


# -- --count: exactly N packets in all, then stop ------------------------------------------------
def test_count_writes_exactly_n_packets_and_stops(bed, tmp_path):
    out = tmp_path / "few.pcapng"
    proc = start_capture(bed, "-w", str(out), "--count", "3", "--json")
    flood(bed, 50)  # 50 SYNs, each on four interfaces, and the answers: far more than 3 packets
    rc, stdout, stderr = finish(proc)
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert sum(i["written"] for i in report["interfaces"]) == 3
    for i in report["interfaces"]:
        assert i["received"] == i["written"] + i["dropped"] + i["discarded"], i
    assert len(list(read_packets(out))) == 3
    per, stats = assert_complete(out)
    assert sum(s.delivered for s in stats.values()) == 3


# -- Ctrl-C and SIGTERM: a clean stop and a complete file ---------------------------------------
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGTERM to the process group"])
def test_a_signal_stops_the_capture_cleanly_with_a_complete_file(bed, tmp_path, how):
    out = tmp_path / "sig.pcapng"
    proc = start_capture(bed, "-w", str(out), "--json", start_new_session=True)
    sent = flood(bed, 200)["sent"]
    if how == "SIGTERM to the process group":  # the capture and its capture process both get it
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, getattr(signal, how))
    rc, stdout, stderr = finish(proc)
    assert rc == 0, stderr
    assert "Traceback" not in stderr and "Error" not in stderr
    report = json.loads(stdout)
    per, stats = assert_complete(out)
    assert {i["label"]: i["written"] for i in report["interfaces"]} == per
    assert all(i["dropped"] == 0 for i in report["interfaces"])
    syns = [p for p in read_packets(out) if p.iface_name == "server:s0" and p.data[12:14] == b"\x08\x00"
            and p.data[23] == 6 and p.data[47] & 0x12 == 0x02]
    assert len(syns) == sent


# -- lost packets: said, counted, exit 1 ----------------------------------------------------------

def test_packets_lost_are_said_and_the_exit_status_is_1(bed, tmp_path):
    out = tmp_path / "lossy.pcapng"
    proc = start_capture(bed, "-w", str(out), "--ring-size", "1", "--json")
    (agent,) = children(proc.pid)  # the capture process, which reads the rings
    os.kill(agent, signal.SIGSTOP)  # nobody reads: the 1 MiB rings overflow during the flood
    try:
        flood(bed, 20_000, rate=50_000)
    finally:
        os.kill(agent, signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    rc, stdout, stderr = finish(proc)
    assert rc == 1, stderr
    report = json.loads(stdout)
    lost = sum(i["dropped"] for i in report["interfaces"])
    assert lost > 0 and report["lost"] == lost
    assert stderr.splitlines()[-1].startswith(f"verifier: the capture lost {lost} packets (the kernel dropped them")
    per, stats = assert_complete(out)
    assert sum(s.dropped for s in stats.values()) == lost
    for i in report["interfaces"]:
        assert i["received"] == i["written"] + i["dropped"] and stats[i["label"]].received == i["received"]


# -- --view: the per-host files for Wireshark ----------------------------------------------------
def test_views_are_written_beside_the_capture(bed, tmp_path):
    out = tmp_path / "run.pcapng"
    proc = start_capture(bed, "-w", str(out), "--view", "client", "--view", "router", "--json")
    flood(bed, 20)
    proc.send_signal(signal.SIGINT)
    rc, stdout, stderr = finish(proc)
    assert rc == 0, stderr
    views = json.loads(stdout)["views"]
    assert views == [str(tmp_path / n) for n in ("run.client.pcapng", "run.router-r0.pcapng", "run.router-r1.pcapng")]
    for path, label in zip(views, ["client:c0", "router:r0", "router:r1"]):
        pkts = list(read_packets(path))
        assert pkts and {p.iface_name for p in pkts} == {label}
        assert [p.data for p in pkts] == [p.data for p in read_packets(out) if p.iface_name == label]
        assert [s.iface_name for s in read_interface_stats(path)] == [label]
