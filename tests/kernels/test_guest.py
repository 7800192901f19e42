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

from verifier import LinuxProfile, Tolerance, load_trace
from verifier.analysis.schedules import LINUX_SYSCTLS
from verifier.kernels import guest, session
from verifier.kernels.image import KernelError, debian_kernel
from verifier.pytest_plugin import require, require_root

REPO = Path(__file__).resolve().parents[2]
C3 = "tests/conformance/test_connect.py::test_c3_c4a_no_listener_means_rst_and_econnrefused[ipv4]"
C2 = "tests/conformance/test_c2_syn_timeout.py::test_c2_syn_schedule_follows_the_kernel_rule"
CASE = "ipv4-linear1-retries2"  # the case whose 6.1 schedule is 0, 1, 3 s


def guest_run(tmp_path, kernel_name: str = "6.1"):
    require_root("the guest's testbeds and the host's sysctls")
    why = guest.available()
    require(why is None, why or "")
    try:
        kernel = debian_kernel(kernel_name, progress=lambda line: None)
    except (KernelError, OSError) as exc:
        require(False, f"Debian's {kernel_name} kernel could not be had: {exc}")
    args = [C3, C2, "-p", "no:cacheprovider", "-q", "--keep-captures", "--verifier-captures", str(tmp_path),
            "--verifier-report", str(tmp_path / "report.md")]
    lines: list[str] = []
    # One CPU at a low priority: `make test` runs this beside the host's own timing checks, which must
    # keep their CPU; the guest's tolerance comes from its own lateness, measured at boot as it runs.
    result = session.run_pytest(kernel, args, cwd=REPO, outputs=[tmp_path], deadline_s=300, echo=lines.append,
                                cpus=1, nice=10)
    return kernel, result, lines


def results(out: Path) -> dict[str, dict]:
    return {r["nodeid"]: r for r in json.loads((out / "report.json").read_text())["results"]}


def host_sysctls() -> dict:
    values = {}
    for key in LINUX_SYSCTLS:
        path = Path("/proc/sys", *key.split("."))
        values[key] = path.read_text().strip() if path.exists() else None
    return values


# One test, so that one guest boot serves both checks (pytest-xdist would give two tests of a module
# to two workers, and so boot twice).
def test_c3_and_the_c2_syn_schedule_on_6_1_in_a_guest(tmp_path):
    kernel, result, lines = guest_run(tmp_path)
    tail = "\n".join(lines[-40:])
    assert result.status is not None, result.why() + "\n" + tail
    assert result.boot_s is not None and result.boot_s < result.wall_s

    # C3 holds on 6.1 as on the host.
    r = results(tmp_path)[C3]
    assert r["outcome"] == "passed", r["message"] + "\n" + tail
    assert "ECONNREFUSED" in r["observed"]

    # C2: 6.1 has no tcp_syn_linear_timeouts (the probe read the guest's /proc/sys) ...
    probe = guest.probe_of(result)
    assert probe and probe["kernel"] == kernel.release and probe["sysctls"]["net.ipv4.tcp_syn_linear_timeouts"] is False
    # ... so with tcp_syn_retries=2 its SYNs go at 0, 1 and 3 s: read from the guest's capture.
    pcap = next(tmp_path.glob(f"test_c2_syn_timeout.*.{CASE}.pcapng"), None)
    assert pcap is not None, f"no capture of {CASE} came back: " + result.why() + "\n" + tail
    (conn,) = load_trace(pcap).find(dport=5000)
    syns = [(e.ts_ns - conn.syns()[0].ts_ns) / 1e9 for e in conn.syns()]
    old = LinuxProfile.from_sysctls({"net.ipv4.tcp_syn_retries": 2}).schedule()  # 6.1's rule: plain doubling
    assert list(old.syn_times) == [0, 1, 3]
    # within the tolerance the suite used in the guest: the host's model plus the lateness measured at boot
    slack, base = probe["max_ms"] / 1e3, Tolerance()
    tolerance = Tolerance(hz=kernel.hz(), sent_s=base.sent_s + slack, absolute_s=base.absolute_s + slack,
                          early_s=base.early_s + slack)
    comparison = old.compare(syns, None, tolerance)
    assert all(i.ok for i in comparison.items if i.name.startswith("SYN")), comparison.report()
    # The host's rule for the same case (tcp_syn_linear_timeouts=1, tcp_syn_retries=2), from the host's
    # own sysctls, gives another schedule.
    host = host_sysctls()
    if host["net.ipv4.tcp_syn_linear_timeouts"] is None:
        pytest.skip(f"the host kernel {os.uname().release} has no tcp_syn_linear_timeouts either: same rule as 6.1")
    host.update({"net.ipv4.tcp_syn_retries": 2, "net.ipv4.tcp_syn_linear_timeouts": 1})
    here = LinuxProfile.from_sysctls(host).schedule()
    assert (here.syn_count, list(here.syn_times)) != (3, [0, 1, 3]), here


def test_a_hung_guest_is_killed_at_its_deadline_and_leaves_nothing(tmp_path):
    require_root("the guest's testbeds and the host's sysctls")
    why = guest.available()
    require(why is None, why or "")
    try:
        kernel = debian_kernel("6.1", progress=lambda line: None)
    except (KernelError, OSError) as exc:
        require(False, f"Debian's 6.1 kernel could not be had: {exc}")
    deadline = 15
    result = guest.run(kernel, ["/bin/sh", "-c", "echo hanging; sleep 600"], cwd=REPO, deadline_s=deadline,
                       cpus=1, nice=10)
    assert result.timed_out and result.status is None, result.why()
    assert deadline <= result.wall_s < deadline + 10
    assert "did not finish by its deadline" in result.why()
    assert not Path(f"/proc/{result.qemu_pid}").exists(), "QEMU is still running"
    assert result.run_dir is not None and not result.run_dir.exists()
