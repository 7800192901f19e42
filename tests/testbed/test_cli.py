"""The command line as a user runs it: long-lived testbeds, exec, capture, and clear errors."""

import json
import os
import subprocess
import select
import sys

import pytest

from netns import namespace
from tests.testbed.wire import read_until
from verifier.pcap import read_packets

VERIFIER = [sys.executable, "-m", "verifier.cli"]


def verifier(*args, input=None, timeout=60):
    return subprocess.run([*VERIFIER, *args], capture_output=True, text=True, input=input, timeout=timeout)


@pytest.fixture
def bed_name(root):
    """A testbed name unique to this test process; the testbed is removed even if the test fails."""
    name = f"t{os.getpid() % 100000}"
    yield name
    verifier("testbed", "down", name)


def test_testbed_up_list_exec_down(bed_name):
    up = verifier("testbed", "up", "--name", bed_name, "--topology", "pair", "--ipv6", "--json")
    assert up.returncode == 0, up.stderr
    bed = json.loads(up.stdout)
    assert (bed["name"], bed["topology"], bed["family"]) == (bed_name, "pair", "ipv6")
    assert bed["hosts"]["client"]["interfaces"][0]["addresses"] == ["2001:db8:1::2/64"]
    names = [h["netns"] for h in bed["hosts"].values()]
    assert all(namespace.exists(n) and len(n) <= 15 for n in names)
    # It outlived the command that made it.
    listed = json.loads(verifier("testbed", "list", "--json").stdout)
    assert [b for b in listed if b["name"] == bed_name and b["alive"]]
    # exec: inside the host, with stdin, stdout and the exit status passed through.
    res = verifier("testbed", "exec", bed_name, "server", "--", "sh", "-c", "cat; ip -o -6 addr show scope global; "
                   "exit 3", input="from stdin\n")
    assert res.returncode == 3
    assert res.stdout.startswith("from stdin\n") and "2001:db8:1::3/64" in res.stdout
    # down: everything goes, and the name is free again.
    down = verifier("testbed", "down", bed_name, "--json")
    assert down.returncode == 0 and json.loads(down.stdout) == {"removed": [bed_name]}
    assert not any(namespace.exists(n) for n in names)
    assert not [b for b in json.loads(verifier("testbed", "list", "--json").stdout) if b["name"] == bed_name]


def test_capture_until_a_packet_count(bed_name, tmp_path):
    assert verifier("testbed", "up", "--name", bed_name, "--ipv4").returncode == 0
    out = tmp_path / "cli.pcapng"
    cap = subprocess.Popen([*VERIFIER, "capture", bed_name, "--host", "client", "-w", str(out), "--count", "6",
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The command says "capturing ..." once the capture is live: wait for that line, bounded.
    ready, _, _ = select.select([cap.stderr], [], [], 30)
    assert ready and cap.stderr.readline().startswith("capturing client:c0 to ")
    # Refused connections (SYN, RST/ACK; the first also needs ARP) until the count of 6 is reached.
    for _ in range(50):
        verifier("testbed", "exec", bed_name, "client", "--", sys.executable, "-c",
                 "import socket\ntry: socket.create_connection(('203.0.113.2', 81), timeout=1)\n"
                 "except OSError: pass")
        if cap.poll() is not None:
            break
    stdout, stderr = cap.communicate(timeout=30)
    assert cap.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["path"] == str(out)
    assert [i["label"] for i in report["interfaces"]] == ["client:c0"]
    assert report["interfaces"][0]["written"] == 6  # exactly the count, as tcpdump -c
    assert len(list(read_packets(out))) == 6
    shown = [json.loads(line) for line in verifier("show", str(out), "--json").stdout.splitlines()]
    assert shown and all(c["server_port"] == 81 for c in shown)
    assert [e["kind"] for e in shown[0]["events"]] == ["SYN", "RST"]


@pytest.mark.parametrize("args, message", [
    (["testbed", "exec", "nosuch", "client", "--", "true"], "no testbed named nosuch"),
    (["testbed", "up", "--name", "Bad_Name"], "has upper-case letters (names are lower case: 'bad_name')"),
    (["capture", "nosuch"], "no testbed named nosuch"),
    (["show", "/nonexistent.pcap"], "no such file"),
])
def test_bad_input_gives_one_clear_line(root, args, message):
    res = verifier(*args)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr


def test_a_garbage_capture_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"<html>not a capture</html>")
    res = verifier("show", str(bad))
    assert res.returncode == 2  # bad input (verifier show --help: exit status)
    assert res.stderr.strip().splitlines() == [f"verifier: {bad}: not a pcap or pcapng file (magic 0x3c68746d)"]


def test_a_user_session_up_exec_inject_capture_down(bed_name, tmp_path):
    """What a user does: up, a server, a capture, a fault, a client, the capture checked, down."""
    import signal

    from netns import Testbed
    from verifier.programs import build
    from verifier.analysis.calls import find, parse_report
    from verifier.analysis.trace import load_trace

    server, client = str(build("server")), str(build("client"))
    assert verifier("testbed", "up", "--name", bed_name).returncode == 0
    names = [h.netns for h in Testbed.attach(bed_name).hosts.values()]
    srv = subprocess.Popen([*VERIFIER, "testbed", "exec", bed_name, "server", "--", server, "--family", "4",
                            "0.0.0.0", "5000"], stdout=subprocess.PIPE, bufsize=0)
    read_until(srv.stdout, '"call":"listen"')  # the server's readiness line
    cap_file = tmp_path / "session.pcapng"
    cap = subprocess.Popen([*VERIFIER, "capture", bed_name, "--host", "client", "-w", str(cap_file), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    read_until(cap.stderr, "Ctrl-C to stop")
    inj = subprocess.Popen([*VERIFIER, "inject", "icmp-unreachable", bed_name, "--dport", "5001", "--code", "host",
                            "--duration", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    read_until(inj.stderr, "Ctrl-C to remove it sooner")  # printed once the fault is in place
    # A client to the faulty port gets the router's ICMP: EHOSTUNREACH; one to the server connects.
    bad = verifier("testbed", "exec", bed_name, "client", "--", client, "--family", "4", "203.0.113.2", "5001")
    good = verifier("testbed", "exec", bed_name, "client", "--", client, "--family", "4", "203.0.113.2", "5000")
    assert find(parse_report(bad.stdout), "connect").errno == "EHOSTUNREACH"
    assert find(parse_report(good.stdout), "connect").ret == 0
    inj.send_signal(signal.SIGINT)
    report = json.loads(inj.communicate(timeout=30)[0])
    assert (report["fault"], report["matched"], report["sent"]) == ("icmp-unreachable", 1, 1)
    cap.send_signal(signal.SIGINT)
    cap_report = json.loads(cap.communicate(timeout=30)[0])
    assert cap.returncode == 0 and cap_report["path"] == str(cap_file)
    srv.wait(10)
    trace = load_trace(cap_file)
    refused = trace.find(dport=5001)[0]
    assert [(e.kind, e.icmp_type, e.icmp_code, e.icmp_from) for e in refused.icmp_events()] == \
        [("ICMP", 3, 1, "192.0.2.1")]
    assert [e.kind for e in trace.find(dport=5000)[0].events][:3] == ["SYN", "SYN-ACK", "ACK"]
    assert verifier("testbed", "down", bed_name).returncode == 0
    assert not any(namespace.exists(n) for n in names)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_inject_removes_its_fault_when_stopped(bed_name, sig):
    import signal

    from netns import Testbed

    assert verifier("testbed", "up", "--name", bed_name, "--ipv4").returncode == 0
    router = Testbed.attach(bed_name).router
    inj = subprocess.Popen([*VERIFIER, "inject", "drop", bed_name, "--flags", "syn", "--duration", "60", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    read_until(inj.stderr, "Ctrl-C to remove it sooner")
    assert "tn" in router.run(["nft", "list", "tables"]).check().stdout
    inj.send_signal(getattr(signal, sig))
    report = json.loads(inj.communicate(timeout=30)[0])
    assert inj.returncode == 0 and report["fault"] == "drop"
    assert router.run(["nft", "list", "tables"]).check().stdout.strip() == ""


def test_fault_fixture_and_host_inject(testbed, fault):
    from verifier.faults import Drop, Syn

    drop = fault(testbed.router, Drop(Syn(dport=5000)))
    assert "drop" in testbed.router.run(["nft", "list", "tables"]).check().stdout
    with testbed.router.inject(Drop(Syn(dport=5001))) as other:
        assert testbed.router.run(["nft", "list", "tables"]).check().stdout.count("table") == 2
    assert other.report["fault"] == "drop" and drop.report == {}
