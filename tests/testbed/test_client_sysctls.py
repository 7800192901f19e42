"""A trace from a testbed carries its client namespace's SYN sysctls, and the linux SYN-schedule
checks (`syn_schedule("linux")`, `--expect "... follows linux"`) model them, not the kernel's
defaults: on a real testbed whose client has non-default tcp_syn_retries and tcp_syn_linear_timeouts.
The capture file records them, so a saved capture read back later models them as well."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netns import Testbed
from verifier.analysis.conditions import check
from verifier.analysis.expect import ExpectationFailed, expect
from verifier.analysis.schedules import LINUX_DEFAULTS, LINUX_SYSCTLS, LinuxProfile
from verifier.analysis.trace import load_trace
from verifier.capture import Capture
from verifier.faults import Drop, Syn
from verifier.pcap import PcapngWriter, read_interface_stats, read_packets

PORT = 5000
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])))"
# Not the defaults (6 and 4): SYNs at 0 and 1 s, ETIMEDOUT at 3 s.
SETTINGS = {"net.ipv4.tcp_syn_retries": 1, "net.ipv4.tcp_syn_linear_timeouts": 0}


def test_the_linux_schedule_is_the_client_namespace_s(testbed, capture, fault):
    for key, value in SETTINGS.items():
        assert str(value) != str(LINUX_DEFAULTS[key])
        testbed.client.sysctl(key, value)
    fault(testbed.router, Drop(Syn(dport=PORT)))
    res = testbed.client.run(["python3", "-c", CONNECT, testbed.server.addr(4), str(PORT)])
    assert "TimeoutError" in res.stderr, res.stderr

    trace = capture.trace()
    assert trace.client_sysctls == {k: testbed.client.sysctl(k) for k in LINUX_SYSCTLS}
    assert {k: int(trace.client_sysctls[k]) for k in SETTINGS} == SETTINGS
    predicted = LinuxProfile.from_sysctls(trace.client_sysctls).schedule()
    conn = expect(trace).connection(dport=PORT).syn_count(predicted.syn_count)
    conn.syn_schedule("linux")
    verdict = check(trace, f"the SYNs to port {PORT} follow the linux schedule")[0]
    assert verdict.ok, verdict.text()
    assert "tcp_syn_retries=1, tcp_syn_linear_timeouts=0" in verdict.text()
    assert "settings read in the client's namespace" in verdict.text()

    # The capture file records them (an opt_comment of the client interface's statistics block),
    # so the saved capture, read back later, models them too: in Python and with `verifier replay`.
    saved = load_trace(capture.path)
    assert saved.client_sysctls == trace.client_sysctls
    expect(saved).connection(dport=PORT).syn_schedule("linux")
    assert check(saved, f"port {PORT} follows linux")[0].ok
    res = subprocess.run([sys.executable, "-m", "verifier.cli", "replay", str(capture.path), "--expect",
                          f"port {PORT} follows linux"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tcp_syn_retries=1, tcp_syn_linear_timeouts=0" in res.stdout + res.stderr

    # Without that record the defaults are assumed, and they do not fit (so the checks above did
    # use the recorded values): the same file written again with its statistics blocks' comments left out.
    bare = capture.path.with_name("bare.pcapng")
    with open(bare, "wb") as f:
        w = PcapngWriter(f)
        ids = {}
        for p in read_packets(capture.path):
            if p.iface_name not in ids:
                ids[p.iface_name] = w.add_interface(p.iface_name)
            w.write_packet(ids[p.iface_name], p.ts_ns, p.data, direction=p.direction)
        for st in read_interface_stats(capture.path):
            assert st.comments or st.iface_name != "client:c0"
            w.write_stats(ids[st.iface_name], st.ts_ns, received=st.received, dropped=st.dropped)
    unknown = load_trace(bare)
    assert unknown.client_sysctls is None
    with pytest.raises(ExpectationFailed, match="the client's sysctls are unknown"):
        expect(unknown).connection(dport=PORT).syn_schedule("linux")
    assert not check(unknown, f"port {PORT} follows linux")[0].ok


def test_a_trace_taken_after_the_testbed_is_gone_does_not_pretend(root, tmp_path):
    with Testbed("pair", "ipv4") as bed:
        bed.client.sysctl("net.ipv4.tcp_syn_retries", 2)
        stopped = Capture(bed, tmp_path / "stopped.pcapng").start()
        stopped.stop()  # read at the stop, while the namespace was there: kept, and in the file
        inside = Capture(bed, tmp_path / "inside.pcapng").start()
        assert inside.trace().client_sysctls["net.ipv4.tcp_syn_retries"] == "2"
        late = Capture(bed, tmp_path / "late.pcapng").start()
    assert stopped.trace().client_sysctls["net.ipv4.tcp_syn_retries"] == "2"
    assert load_trace(stopped.path).client_sysctls == stopped.trace().client_sysctls
    # Stopped after the testbed went: nothing to read, so unknown, not the defaults dressed up as
    # the namespace's, and nothing recorded.
    assert late.trace().client_sysctls is None
    assert load_trace(late.path).client_sysctls is None
