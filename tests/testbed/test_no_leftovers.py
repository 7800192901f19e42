"""The suite leaves nothing behind: no namespace, link or process, after failure, Ctrl-C or kill -9."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netns import Testbed, namespace

TEST_FILE = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path

    OUT = Path(os.environ["LEAK_OUT"])

    def record(testbed, capture, extra=None):
        procs = [testbed.server.start(["sleep", "301"]), testbed.client.start(["sleep", "302"])]
        info = {"namespaces": testbed.namespaces, "pids": [p.pid for p in procs],
                "links": [i.name for h in testbed.hosts.values() for i in h.interfaces],
                "agent": __import__("verifier.capture").capture._service.pid, "pcap": str(capture.path)}
        OUT.write_text(json.dumps(info))

    def test_fails_on_purpose(testbed, capture):
        record(testbed, capture)
        assert 1 + 1 == 3, "failing on purpose"

    def test_passes(testbed, capture):
        record(testbed, capture)

    def test_waits(testbed, capture):
        record(testbed, capture)
        Path(str(OUT) + ".ready").write_text("x")
        time.sleep(60)
''')


def root_links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def run_inner(tmp_path: Path, test: str, **popen) -> subprocess.Popen:
    (tmp_path / "test_inner.py").write_text(TEST_FILE)
    env = dict(os.environ, LEAK_OUT=str(tmp_path / "info.json"))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
         f"--rootdir={tmp_path}", f"--verifier-captures={tmp_path / 'captures'}",
         f"{tmp_path / 'test_inner.py'}::{test}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def assert_nothing_left(info: dict, links_before: set[str]) -> None:
    present = set(namespace.list_names())
    assert not set(info["namespaces"]) & present, "namespaces left behind"
    for pid in info["pids"] + [info["agent"]]:
        assert not namespace.pid_alive(pid), f"process {pid} left behind"
    assert root_links() == links_before
    assert not set(info["links"]) & root_links()


def test_a_failing_test_leaves_nothing_but_its_capture(root, tmp_path):
    links = root_links()
    proc = run_inner(tmp_path, "test_fails_on_purpose")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "failing on purpose" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert_nothing_left(info, links)
    pcap = Path(info["pcap"])
    assert pcap.exists() and pcap.parent == tmp_path / "captures", "a failed test keeps its capture"
    assert str(pcap) in out, "the failure report names the kept capture"
    assert f"testbed {info['namespaces'][0].split('-')[0]} (routed, dual)" in out, "and describes the testbed"


def test_a_passing_test_removes_its_capture(root, tmp_path):
    links = root_links()
    proc = run_inner(tmp_path, "test_passes")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    info = json.loads((tmp_path / "info.json").read_text())
    assert_nothing_left(info, links)
    assert not Path(info["pcap"]).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_cleans_up(root, tmp_path, sig):
    links = root_links()
    proc = run_inner(tmp_path, "test_waits")
    wait_for(tmp_path / "info.json.ready", proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert_nothing_left(json.loads((tmp_path / "info.json").read_text()), links)


def test_killed_run_is_cleaned_by_verifier_clean_and_nothing_else(root, tmp_path):
    links = root_links()
    proc = run_inner(tmp_path, "test_waits", start_new_session=True)
    wait_for(tmp_path / "info.json.ready", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    info = json.loads((tmp_path / "info.json").read_text())
    assert set(info["namespaces"]) <= set(namespace.list_names()), "kill -9 leaves the namespaces"
    # Programs died with their parent (PR_SET_PDEATHSIG); the namespaces wait for `verifier clean`.
    deadline = time.monotonic() + 5
    while any(namespace.pid_alive(p) for p in info["pids"]) and time.monotonic() < deadline:
        time.sleep(0.01)

    foreign = f"verifier-test-foreign-{os.getpid()}"  # not our naming scheme: must be left alone
    namespace.create(foreign)
    try:
        with Testbed.pair("ipv4") as live:  # ours, but its run (this process) is alive
            res = subprocess.run([sys.executable, "-m", "verifier.cli", "clean", "--json"],
                                 capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr
            report = json.loads(res.stdout)
            assert {r["netns"] for r in report["removed"]} >= set(info["namespaces"])
            assert set(live.namespaces) <= set(report["in_use"])
            assert set(live.namespaces) <= set(namespace.list_names())
            assert foreign in namespace.list_names()
    finally:
        namespace.remove(foreign)
    assert_nothing_left(info, links)


def test_clean_without_root_says_so(monkeypatch, capsys):
    from verifier import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # what a user without sudo gets
    assert cli.main(["clean"]) == 2  # bad input (verifier.exits): no root, nothing done
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["verifier: clean needs root to remove network namespaces: "
                                        "run 'sudo verifier clean'"]
