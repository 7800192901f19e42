"""The guest runner's parts, without booting anything: the QEMU command line, the initramfs and its
/init, vmlinux extraction, the exit status passed back, the session's argument handling, and the
kernels comparison (on crafted per-kernel reports). The real boot is tests/kernels/test_guest.py."""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from verifier.kernels import compare, guest, initramfs, session
from verifier.kernels.image import Kernel, KernelError, bzimage_release, extract_vmlinux
from verifier.kernels.initramfs import Share
from verifier.pytest_plugin import require


# -- the QEMU command line ---------------------------------------------------------------------------
def test_qemu_command_emulates_a_pc_and_shares_the_root_read_only():
    cmd = guest.qemu_command(vmlinux=Path("/k/vmlinux"), initrd=Path("/k/initrd"),
                             shares=[Share("run", Path("/tmp/r,1")), Share("out0", Path("/o"))], memory_mb=512, cpus=2)
    text = " ".join(cmd)
    assert cmd[0] == "qemu-system-x86_64"
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=multi" and cmd[cmd.index("-M") + 1] == "pc"
    assert cmd[cmd.index("-m") + 1] == "512M" and cmd[cmd.index("-smp") + 1] == "2"
    assert "-no-reboot" in cmd and "-nodefaults" in cmd and "-netdev" not in text  # no network device
    assert cmd[cmd.index("-kernel") + 1] == "/k/vmlinux" and cmd[cmd.index("-initrd") + 1] == "/k/initrd"
    fsdevs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-fsdev"]
    devices = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-device"]
    assert fsdevs[0].startswith("local,id=fs0,path=/,") and fsdevs[0].endswith("readonly=on")
    assert "path=/tmp/r,,1," in fsdevs[1] and "readonly" not in fsdevs[1]  # QEMU's doubled comma
    assert "readonly" not in fsdevs[2]
    assert devices == ["virtio-9p-pci,fsdev=fs0,mount_tag=hostroot", "virtio-9p-pci,fsdev=fs1,mount_tag=run",
                       "virtio-9p-pci,fsdev=fs2,mount_tag=out0"]
    assert "console=ttyS0" in cmd[cmd.index("-append") + 1] and "panic=-1" in cmd[cmd.index("-append") + 1]


# -- modules and the initramfs -----------------------------------------------------------------------
def modules_dir(tmp_path: Path, builtin=("kernel/fs/overlayfs/overlay.ko",)) -> Path:
    d = tmp_path / "lib" / "modules" / "9.9.9-test"
    deps = {
        "kernel/drivers/virtio/virtio_pci.ko.xz": ["kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz"],
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz": [],
        "kernel/net/9p/9pnet_virtio.ko.xz": ["kernel/net/9p/9pnet.ko.xz"],
        "kernel/net/9p/9pnet.ko.xz": [],
        "kernel/fs/9p/9p.ko": ["kernel/fs/netfs/netfs.ko", "kernel/net/9p/9pnet.ko.xz"],
        "kernel/fs/netfs/netfs.ko": [],
    }
    for path in deps:
        f = d / path
        f.parent.mkdir(parents=True, exist_ok=True)
        body = b"\x7fELF module " + path.encode()
        f.write_bytes(lzma.compress(body) if path.endswith(".xz") else body)
    (d / "modules.dep").write_text("".join(f"{p}: {' '.join(v)}\n" for p, v in deps.items()))
    (d / "modules.builtin").write_text("".join(b + "\n" for b in builtin))
    return d


def test_module_order_puts_dependencies_first_and_skips_built_in_ones(tmp_path):
    order = initramfs.module_order(modules_dir(tmp_path))
    names = [initramfs.modname(p) for p in order]
    assert names == ["virtio_pci_modern_dev", "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "9p"]
    assert "overlay" not in names  # built in


def test_module_order_names_a_missing_module(tmp_path):
    with pytest.raises(KernelError, match="module overlay is neither built in nor in modules.dep"):
        initramfs.module_order(modules_dir(tmp_path, builtin=()))


def test_newc_round_trip_and_busybox_reads_it(tmp_path):
    members = [("bin", 0o040755, b""), ("bin/x", 0o100755, b"abc"), ("dev/console", 0o020600, b""),
               ("odd", 0o100644, b"12345")]
    data = initramfs.write_newc(members)
    back = initramfs.read_newc(data)
    assert back == {name: (mode, body) for name, mode, body in members}
    assert len(data) % 4 == 0 and data.endswith(b"\0") and b"TRAILER!!!" in data
    if shutil.which("busybox"):
        listed = subprocess.run(["busybox", "cpio", "-t"], input=data, capture_output=True).stdout.decode().split()
        assert listed == ["bin", "bin/x", "dev/console", "odd"]


def test_initramfs_holds_busybox_init_decompressed_modules_and_config(tmp_path):
    require(Path(initramfs.BUSYBOX).is_file(), "busybox-static is not installed (sudo make setup installs it)")
    mods = modules_dir(tmp_path)
    order = initramfs.module_order(mods)
    config = tmp_path / "config"
    config.write_text("CONFIG_HZ=250\n")
    out = initramfs.build(tmp_path / "initrd", modules_dir=mods, init="#!/bin/busybox sh\n", modules=order,
                          config=config)
    members = initramfs.read_newc(out.read_bytes())
    assert members["init"] == (0o100755, b"#!/bin/busybox sh\n")
    assert members["bin/busybox"][1] == Path(initramfs.BUSYBOX).read_bytes()
    assert members["dev/console"][0] == 0o020600 and members["boot-config"][1] == b"CONFIG_HZ=250\n"
    assert b"chroot /newroot /sbin/modprobe" in members["bin/modprobe-in-root"][1]
    # .ko.xz decompressed, under a .ko name that insmod takes
    assert members["lib/modules/kernel/net/9p/9pnet.ko"][1] == b"\x7fELF module kernel/net/9p/9pnet.ko.xz"
    assert not any(n.endswith(".xz") for n in members)


def test_init_script_mounts_shares_at_their_paths_and_writes_the_status(tmp_path):
    mods = modules_dir(tmp_path)
    order = initramfs.module_order(mods)
    status = Path("/tmp/verifier-guest-x/share/status")
    script = initramfs.init_script(release="9.9.9-test", modules=order, modules_dir=mods,
                                   shares=[Share("run", status.parent), Share("out0", Path("/work/o p"))],
                                   status=status, argv=["python3", "-c", "print('a b')"], cwd=Path("/work"),
                                   env={"A": "1 2"}, config=True)
    lines = script.splitlines()
    inserts = [ln.split()[1] for ln in lines if ln.startswith("insmod ")]
    assert inserts == [initramfs.initramfs_path(m) for m in order]
    assert any("hostroot /lower" in ln and ",ro," in ln for ln in lines)
    assert any(ln.startswith("mount -t overlay") for ln in lines)
    assert f"mount --bind /newroot{mods} /newroot/lib/modules/9.9.9-test" in script
    assert "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,rw out0 '/newroot/work/o p'" in script
    assert "cp /boot-config /newroot/boot/config-9.9.9-test" in script
    job = next(ln for ln in lines if ln.startswith("chroot /newroot"))
    assert "'A=1 2'" in job and "python3 -c" in job and "cd /work" in job
    i = lines.index(job)
    assert lines[i + 1] == f"echo $? > /newroot{status}" and lines[-1].endswith("poweroff -f")


# -- the result passed back --------------------------------------------------------------------------
@pytest.mark.parametrize("text, status", [("0\n", 0), ("3", 3), ("125\n", 125), ("garbage", None), (None, None)])
def test_read_result_takes_the_status_and_small_files(tmp_path, text, status):
    if text is not None:
        (tmp_path / "status").write_text(text)
    (tmp_path / "probe.json").write_text('{"max_ms": 4.5}')
    (tmp_path / "big.pcapng").write_bytes(b"\0" * 10)
    got, files = guest.read_result(tmp_path)
    assert got == status
    assert files == {"probe.json": '{"max_ms": 4.5}'}
    result = guest.GuestResult(got, "verifier-guest: cannot mount the overlay", 1.0, 2.0, files=files)
    assert guest.probe_of(result) == {"max_ms": 4.5}
    if status is None:
        assert "without the job's exit status" in result.why()
    elif status == 125:
        assert "cannot mount the overlay" in result.why()


def test_a_timed_out_guest_says_so():
    assert "deadline" in guest.GuestResult(None, "", None, 60.0, timed_out=True).why()


# -- vmlinux extraction --------------------------------------------------------------------------------
def bzimage(payload_of, elf: bytes = b"\x7fELF" + b"k" * 1000, release: bytes = b"9.9.9-test (x@y) #1") -> bytes:
    setup_sects = 1
    head = bytearray(512 * (setup_sects + 1))
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    head[0x300:0x300 + len(release) + 1] = release + b"\0"
    struct.pack_into("<H", head, 0x20E, 0x300 - 0x200)
    payload = payload_of(elf) + struct.pack("<I", len(elf))
    offset = 0x40
    struct.pack_into("<II", head, 0x248, offset, len(payload))
    return bytes(head) + b"\0" * offset + payload + b"tail"


@pytest.mark.parametrize("compress", [gzip.compress, lambda b: lzma.compress(b, format=lzma.FORMAT_XZ,
                                                                             check=lzma.CHECK_CRC32)],
                         ids=["gzip", "xz"])
def test_extract_vmlinux_from_the_header_payload(tmp_path, compress):
    image = tmp_path / "vmlinuz"
    elf = b"\x7fELF" + bytes(range(256)) * 20
    image.write_bytes(bzimage(compress, elf))
    assert bzimage_release(image) == "9.9.9-test"
    assert extract_vmlinux(image, tmp_path / "vmlinux").read_bytes() == elf


def test_extract_vmlinux_checks_the_announced_size(tmp_path):
    image = tmp_path / "vmlinuz"
    data = bytearray(bzimage(gzip.compress))
    start = 1024 + 0x40
    (length,) = struct.unpack_from("<I", data, 0x24C)
    struct.pack_into("<I", data, start + length - 4, 7)  # the size trailer lies
    image.write_bytes(bytes(data))
    with pytest.raises(KernelError, match="7 expected"):
        extract_vmlinux(image, tmp_path / "vmlinux")


def test_kernel_from_path_finds_modules_beside_the_image_and_says_what_is_missing(tmp_path):
    image = tmp_path / "boot" / "vmlinuz-9.9.9-test"
    image.parent.mkdir()
    image.write_bytes(bzimage(gzip.compress))
    with pytest.raises(KernelError, match="no modules folder for release 9.9.9-test"):
        Kernel.from_path(image)
    mods = modules_dir(tmp_path)
    (image.parent / "config-9.9.9-test").write_text("CONFIG_HZ=300\n")
    k = Kernel.from_path(image)
    assert (k.release, k.modules, k.hz()) == ("9.9.9-test", mods, 300)
    (mods / "modules.dep").unlink()
    with pytest.raises(KernelError, match="no modules.dep"):
        Kernel.from_path(image)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a kernel" * 500)
    with pytest.raises(KernelError, match="neither a bzImage"):
        Kernel.from_path(junk)


# -- the session ---------------------------------------------------------------------------------------
def test_kernel_options_are_not_passed_into_the_guest():
    args = ["tests/conformance", "--verifier-kernel", "6.1", "-q", "--verifier-kernel-modules=/m",
            "--verifier-kernel-deadline", "60", "-k", "c3", "--verifier-kernel-cpus=1"]
    assert session.strip_kernel_options(args) == ["tests/conformance", "-q", "-k", "c3"]
    argv = session.guest_pytest_argv(["-q"], python="/v/bin/python")
    assert argv == ["/v/bin/python", "-m", "verifier.kernels.inguest", "--", "/v/bin/python", "-m", "pytest", "-q"]


# -- the comparison ----------------------------------------------------------------------------------
def test_signature_keeps_counts_and_drops_times_and_ports():
    a = "one SYN, RST/ACK ack=ISN+1 after 36 us, ECONNREFUSED 13 us later; source port 26408"
    b = "one SYN, RST/ACK ack=ISN+1 after 48 us, ECONNREFUSED 12 us later; source port 24221"
    assert compare.behaviour_signature(a) == compare.behaviour_signature(b)
    assert compare.behaviour_signature("9 kept as requests") != compare.behaviour_signature("8 kept as requests")


C2_HOST = ("SYNs dropped at the router; ipv4-linear1-retries2: SYNs at 0.00, 1.03, 2.05, 4.07 s, ETIMEDOUT at 8.16 s "
           "(model 8 s); ipv4-linear8-retries1: SYNs at 0.00, 1.01, 2.02 s, ETIMEDOUT at 3.04 s (model 3 s)")
C2_OLD = ("SYNs dropped at the router; ipv4-linear1-retries2: SYNs at 0.00, 1.04, 3.06 s, ETIMEDOUT at 7.21 s "
          "(model 7 s); ipv4-linear8-retries1: SYNs at 0.00, 1.02 s, ETIMEDOUT at 3.05 s (model 3 s)")


def write_kernel(folder: Path, kernel: str, results: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"kernel": kernel, "results": results}))


def test_comparison_marks_the_differing_row_and_explains_it(tmp_path):
    c2 = "tests/conformance/test_c2_syn_timeout.py::test_c2_syn_schedule_follows_the_kernel_rule"
    c3 = "tests/conformance/test_connect.py::test_c3_c4a_no_listener_means_rst_and_econnrefused[ipv4]"
    row = {"claim": "C3", "outcome": "passed", "observed": "one SYN, RST/ACK after 36 us", "captures": []}
    write_kernel(tmp_path / "host", "6.18", [
        {"nodeid": c2, "claim": "C2", "outcome": "passed", "observed": C2_HOST,
         "captures": [str(tmp_path / "host" / "c2.pcapng")]}, {"nodeid": c3, **row}])
    write_kernel(tmp_path / "6.1", "6.1.0", [
        {"nodeid": c2, "claim": "C2", "outcome": "passed", "observed": C2_OLD, "captures": []},
        {"nodeid": c3, **row, "observed": "one SYN, RST/ACK after 51 us"}])
    runs = [compare.KernelRun("host", tmp_path / "host", 0, 30.0,
                              {"sysctls": {"net.ipv4.tcp_syn_linear_timeouts": True}}),
            compare.KernelRun("6.1", tmp_path / "6.1", 0, 90.0,
                              {"sysctls": {"net.ipv4.tcp_syn_linear_timeouts": False}, "boot_s": 3.9,
                               "probe": {"median_ms": 0.3, "max_ms": 4.7, "samples": 100, "interval_ms": 20,
                                         "load": "2 CPU(s) busy"}})]
    report = compare.write_comparison(runs, tmp_path)
    by_id = {r["nodeid"]: r for r in report["rows"]}
    assert not by_id[c3]["differs"]
    why = " ".join(by_id[c2]["why"])
    assert by_id[c2]["differs"] and "ipv4-linear1-retries2: host: 4 SYNs" in why and "6.1: 3 SYNs at 0, 1.04, 3.06 s" in why
    assert "ipv4-linear8-retries1" in why  # 3 against 2 SYNs
    assert "6.1 has no net.ipv4.tcp_syn_linear_timeouts" in why
    assert by_id[c2]["kernels"]["host"]["captures"] == ["host/c2.pcapng"]
    md = (tmp_path / "report.md").read_text()
    assert "**`test_c2_syn_schedule_follows_the_kernel_rule`**" in md and "0.3 / 4.7 ms" in md
    assert "2 claim checks over 2 claims on 2 kernels; 1 differ" in md


def test_comparison_lists_a_check_that_cannot_run(tmp_path):
    c8 = "tests/conformance/test_c8_listen.py::test_c8_syn_flood[ipv4-cookies]"
    write_kernel(tmp_path / "host", "6.18", [{"nodeid": c8, "claim": "C8", "outcome": "passed", "observed": "x"}])
    write_kernel(tmp_path / "6.1", "6.1.0", [{"nodeid": c8, "claim": "C8", "outcome": "skipped",
                                              "message": "needs tcp_foo"}])
    report = compare.write_comparison([compare.KernelRun("host", tmp_path / "host", 0),
                                       compare.KernelRun("6.1", tmp_path / "6.1", 0)], tmp_path)
    row = report["rows"][0]
    assert row["kernels"]["6.1"]["verdict"] == "cannot run" and "cannot run on 6.1: needs tcp_foo" in row["why"]


# -- bad input: one line, a non-zero status, nothing booted ---------------------------------------------
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec, says", [("5.99", "unknown kernel '5.99'"),
                                        ("/nonexistent/vmlinuz", "/nonexistent/vmlinuz: no such kernel image")])
def test_pytest_with_an_unknown_kernel_says_so_in_one_line(spec, says):
    import sys

    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--verifier-kernel", spec,
                          "tests/unit/test_one_model.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in res.stderr + res.stdout


def test_verifier_kernels_refuses_an_unknown_kernel_at_parse_time():
    import sys

    res = subprocess.run([sys.executable, "-m", "verifier.cli", "kernels", "host", "5.99"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "'5.99' is not a kernel" in res.stderr and "Traceback" not in res.stderr


def test_a_failed_sweep_still_shows_its_schedule_from_the_kept_captures(tmp_path):
    """A C2 sweep that failed on a kernel records no phrase: the SYNs come from its kept capture."""
    c2 = "tests/conformance/test_c2_syn_timeout.py::test_c2_syn_schedule_follows_the_kernel_rule"
    golden = REPO / "captures" / "golden" / "c2_syn_timeout_linear1_retries2_ipv4.pcapng"
    write_kernel(tmp_path / "host", "6.18", [{"nodeid": c2, "claim": "C2", "outcome": "passed", "observed": C2_OLD}])
    kept = tmp_path / "6.12" / "test_c2_syn_timeout.test_c2_syn_schedule_follows_the_kernel_rule.ipv4-linear1-retries2.pcapng"
    write_kernel(tmp_path / "6.12", "6.12", [{"nodeid": c2, "claim": "C2", "outcome": "failed", "observed": None,
                                              "message": "Failed: === ipv4-linear1-retries2: SYN 3",
                                              "captures": [str(kept)]}])
    shutil.copyfile(golden, kept)
    assert compare.capture_syns([str(kept)])["ipv4-linear1-retries2"][0][:2] == [0.0, pytest.approx(1.0, abs=0.1)]
    report = compare.write_comparison([compare.KernelRun("host", tmp_path / "host", 0),
                                       compare.KernelRun("6.12", tmp_path / "6.12", 1)], tmp_path)
    why = " ".join(report["rows"][0]["why"])
    assert "ipv4-linear1-retries2: host: 3 SYNs at 0, 1.04, 3.06 s, ETIMEDOUT 7.21 s; 6.12: 4 SYNs at 0, 1" in why
    assert "(from the capture)" in why and "fails on 6.12: Failed: === ipv4-linear1-retries2: SYN 3" in why


def test_stale_run_folders_of_dead_runners_are_removed(tmp_path):
    import os

    dead = 4_194_305  # above PID_MAX_LIMIT (2**22): no such process
    mine, gone, other = (tmp_path / f"verifier-guest-{os.getpid()}-abc", tmp_path / f"verifier-guest-{dead}-x",
                         tmp_path / "verifier-guest-notapid")
    for d in (mine, gone, other):
        (d / "share").mkdir(parents=True)
    assert guest.remove_stale(str(tmp_path)) == [gone]
    assert mine.exists() and other.exists() and not gone.exists()


@pytest.mark.parametrize("guest_ms, host_ms, pace", [
    (60.0, "3", 20.0), (2.0, "3", 1.0), (60.0, None, 1.0), (60.0, "zero", 1.0), (60.0, "0", 1.0)])
def test_the_guests_pace_is_its_process_start_time_over_the_hosts(guest_ms, host_ms, pace):
    from verifier.kernels import inguest

    assert inguest.pace_of(guest_ms, host_ms) == pace


def test_every_deadline_is_stretched_by_the_pace_the_guest_measured(monkeypatch):
    import time

    from netns import waiting
    from verifier.kernels import inguest

    assert inguest.PACE_ENV == waiting.PACE_ENV
    monkeypatch.delenv(waiting.PACE_ENV, raising=False)
    assert waiting.pace() == 1.0 and waiting.scaled(5) == 5
    monkeypatch.setenv(waiting.PACE_ENV, "not a number")
    assert waiting.pace() == 1.0
    monkeypatch.setenv(waiting.PACE_ENV, "0.5")  # never shorter than written
    assert waiting.pace() == 1.0
    monkeypatch.setenv(waiting.PACE_ENV, "4")
    assert waiting.scaled(5) == 20
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        waiting.wait_until(lambda: False, 0.05, TimeoutError)
    assert time.monotonic() - t0 >= 0.2  # 0.05 s written, four times that waited


def test_the_live_lateness_is_the_largest_of_its_window_only():
    from verifier.kernels.inguest import Lateness

    lat = Lateness(window_s=1.0)
    for t_s, late in [(0.0, 5.0), (0.2, 40.0), (0.4, 3.0), (0.9, 10.0)]:
        lat.add(int(t_s * 1e9), late)
    assert lat.max_ms == 40.0
    lat.add(int(1.3 * 1e9), 1.0)  # the 40 ms sample is now more than a second old
    assert lat.max_ms == 10.0
    lat.add(int(2.5 * 1e9), 2.0)
    assert lat.max_ms == 2.0 and lat.worst_ms == 40.0 and lat.samples == 6


def test_the_monitor_writes_the_live_figure_and_the_runs_summary(tmp_path):
    from verifier.kernels import inguest

    live, summary = tmp_path / "live", tmp_path / "lateness.json"
    rounds = iter(range(20))
    inguest.monitor(live, summary, interval_s=0.001, stop=lambda: next(rounds, None) is None)
    assert inguest.live_lateness_s(str(live)) == float(live.read_text()) / 1e3 >= 0
    run = json.loads(summary.read_text())
    assert run["samples"] >= 1 and run["window_s"] == inguest.WINDOW_S
    assert inguest.live_lateness_s(None) == 0 and inguest.live_lateness_s(str(tmp_path / "none")) == 0


def test_the_tolerance_of_a_check_takes_the_lateness_measured_while_it_ran(tmp_path, monkeypatch):
    from tests import kernel
    from verifier.kernels.inguest import LATENESS_ENV

    monkeypatch.delenv("VERIFIER_TIMER_SLACK_S", raising=False)
    monkeypatch.delenv(LATENESS_ENV, raising=False)
    host = kernel.TOLERANCE.allowed(1.0)
    assert host == kernel.tolerance().allowed(1.0)
    live = tmp_path / "live"
    live.write_text("120.000")  # the monitor measured a sleep 120 ms late within the last 30 s
    monkeypatch.setenv(LATENESS_ENV, str(live))
    monkeypatch.setenv("VERIFIER_TIMER_SLACK_S", "0.04")  # at boot: 40 ms
    assert kernel.TOLERANCE.allowed(1.0) == pytest.approx(host + 0.120)
    live.write_text("10.000")  # that sample left the window: the boot figure is the larger now
    assert kernel.TOLERANCE.allowed(1.0) == pytest.approx(host + 0.040)


@pytest.mark.parametrize("version, signature, release, upstream", [
    ("Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, "
     "GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)", None,
     "6.1.0-57-amd64", (6, 1, 192)),
    ("Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) "
     "13.2.0) #45-Ubuntu SMP PREEMPT_DYNAMIC", "Ubuntu 6.8.0-45.45-generic 6.8.12\n", "6.8.0-45-generic", (6, 8, 12)),
    ("Linux version 6.18.44-fc-v657 (builder@sandboxing) (gcc (GCC) 15.3.0) #1 SMP", None, "6.18.44-fc-v657",
     (6, 18, 44)),
    ("", None, "6.12", (6, 12, 0)),
])
def test_the_upstream_version_is_read_where_the_distribution_states_it(version, signature, release, upstream):
    from tests.kernel import upstream_version

    assert upstream_version(version, signature, release) == upstream


def test_a_peer_that_fell_behind_is_too_slow_here_not_a_kernel_failure(tmp_path):
    from verifier.peer import BEHIND

    p1 = "tests/conformance/test_scripted.py::test_p1_rst_in_syn_sent_needs_an_acceptable_ack[ipv4]"
    ok = {"nodeid": p1, "claim": "P1", "outcome": "passed", "observed": "bare RST: ignored", "captures": []}
    write_kernel(tmp_path / "host", "6.18", [ok])
    write_kernel(tmp_path / "6.12", "6.12.117", [
        {**ok, "outcome": "failed", "observed": "",
         "message": f"scripted peer: step 7: the packet came 0.1 s before the previous step: {BEHIND}"}])
    write_kernel(tmp_path / "6.1", "6.1.0", [
        {**ok, "outcome": "failed", "observed": "", "message": "scripted peer: step 4: a packet came where none should"}])
    runs = [compare.KernelRun(label, tmp_path / label, 0, 30.0, {}) for label in ("host", "6.12", "6.1")]
    row = compare.write_comparison(runs, tmp_path)["rows"][0]
    assert [row["kernels"][k]["verdict"] for k in ("host", "6.12", "6.1")] == ["holds", "too slow here", "FAILS"]
    why = " ".join(row["why"])
    assert "too slow on 6.12: the scripted peer fell behind" in why and "fails on 6.1" in why


def test_the_monitor_ends_with_the_command_it_measures_for_and_leaves_nothing(tmp_path):
    """On the host (the kernels command's host run) nothing powers the machine off: the monitor must
    end by itself once the process that started it has gone, and remove its file."""
    import os
    import signal
    import subprocess
    import sys

    from netns.waiting import wait_until

    live = tmp_path / "live"
    code = ("import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-m', 'verifier.kernels.inguest', '--monitor', {str(live)!r}], "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\ntime.sleep(0.5)\n")
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    pid = int(parent.stdout)
    try:
        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{pid}/stat") as f:  # a zombie not reaped yet has ended too
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        wait_until(gone, 5.0, lambda: AssertionError("the monitor is still running after its parent ended"))
        assert not live.exists() and not live.with_suffix(".tmp").exists()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_hosts_run_measures_its_lateness_as_a_guests_does():
    argv = compare.suite_command("host", Path("/out/host"), 2)
    assert argv[1:4] == ["-m", "verifier.kernels.inguest", "--"] and argv[4:7] == [argv[0], "-m", "pytest"]
    assert "--verifier-kernel" not in argv
    assert "verifier.kernels.inguest" not in compare.suite_command("6.1", Path("/out/6.1"), 2)
