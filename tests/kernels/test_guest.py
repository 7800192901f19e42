"""The conformance suite in a real guest: Debian's 6.1 booted in QEMU (pure emulation), one boot for
both checks, to keep `make test` short (about a minute).

* C3 (RST answer: ECONNREFUSED) passes on 6.1 as on the host.
* C2 (the SYN sweep): with tcp_syn_retries=2, 6.1, which has no tcp_syn_linear_timeouts, sends SYNs
  at 0, 1 and 3 s, where the host's rule for the same settings (the model with the host's own
  sysctls) gives another schedule. The SYN times are read from the guest's capture.

Skipped with the reason where QEMU, busybox-static or root is missing, or Debian's kernel cannot be
fetched; with VERIFIER_REQUIRE_ROOT=1 (CI) a missing piece fails instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from verifier import LinuxProfile, load_trace
from verifier.analysis.schedules import LINUX_SYSCTLS
from verifier.kernels import guest, session
from verifier.kernels.image import KernelError, debian_kernel
from verifier.pytest_plugin import require, require_root

REPO = Path(__file__).resolve().parents[2]
C3 = "tests/conformance/test_connect.py::test_c3_c4a_no_listener_means_rst_and_econnrefused[ipv4]"
C2 = "tests/conformance/test_c2_syn_timeout.py::test_c2_syn_schedule_follows_the_kernel_rule"
CASE = "ipv4-linear1-retries2"  # the case whose 6.1 schedule is 0, 1, 3 s


@pytest.fixture(scope="module")
def run_61(tmp_path_factory):
    require_root("the guest's testbeds and the host's sysctls")
    why = guest.available()
    require(why is None, why or "")
    try:
        kernel = debian_kernel("6.1", progress=lambda line: None)
    except (KernelError, OSError) as exc:
        require(False, f"Debian's 6.1 kernel could not be had: {exc}")
    out = tmp_path_factory.mktemp("guest61")
    args = [C3, C2, "-p", "no:cacheprovider", "-q", "--keep-captures", "--verifier-captures", str(out),
            "--verifier-report", str(out / "report.md")]
    lines: list[str] = []
    result = session.run_pytest(kernel, args, cwd=REPO, outputs=[out], deadline_s=240, echo=lines.append)
    return kernel, result, out, lines


def results(out: Path) -> dict[str, dict]:
    return {r["nodeid"]: r for r in json.loads((out / "report.json").read_text())["results"]}


def test_c3_holds_on_6_1_in_a_guest(run_61):
    kernel, result, out, lines = run_61
    assert result.status is not None, result.why() + "\n" + "\n".join(lines[-30:])
    assert result.boot_s is not None and result.boot_s < result.wall_s
    r = results(out)[C3]
    assert r["outcome"] == "passed", r["message"] + "\n" + "\n".join(lines[-40:])
    assert "ECONNREFUSED" in r["observed"]


def test_c2_sees_the_6_1_syn_schedule_differ_from_the_hosts(run_61):
    kernel, result, out, lines = run_61
    probe = guest.probe_of(result)
    assert probe and probe["kernel"] == kernel.release and probe["sysctls"]["net.ipv4.tcp_syn_linear_timeouts"] is False
    pcap = next(out.glob(f"test_c2_syn_timeout.*.{CASE}.pcapng"), None)
    assert pcap is not None, f"no capture of {CASE} came back: " + result.why() + "\n" + "\n".join(lines[-40:])
    (conn,) = load_trace(pcap).find(dport=5000)
    syns = [(e.ts_ns - conn.syns()[0].ts_ns) / 1e9 for e in conn.syns()]
    # 6.1's rule, from the sysctls it has (no tcp_syn_linear_timeouts: plain doubling from 1 s)
    old = LinuxProfile.from_sysctls({"net.ipv4.tcp_syn_retries": 2}).schedule()
    assert len(syns) == old.syn_count == 3
    assert all(abs(t - p) < 0.3 for t, p in zip(syns, old.syn_times)), (syns, old.syn_times)
    # The host's rule for the same settings, with the host's own sysctls
    host = {}
    for key in LINUX_SYSCTLS:
        path = Path("/proc/sys", *key.split("."))
        host[key] = path.read_text().strip() if path.exists() else None
    if host["net.ipv4.tcp_syn_linear_timeouts"] is None:
        pytest.skip(f"the host kernel {os.uname().release} has no tcp_syn_linear_timeouts either: same rule as 6.1")
    host.update({"net.ipv4.tcp_syn_retries": 2, "net.ipv4.tcp_syn_linear_timeouts": 1})  # the case's settings
    here = LinuxProfile.from_sysctls(host).schedule()
    assert here.syn_count != len(syns) or list(here.syn_times) != list(old.syn_times), (here, syns)
