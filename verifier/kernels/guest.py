"""One guest run: boot a kernel in QEMU, run one command in it on the host's own root, get its exit
status and files back, and leave nothing behind.

QEMU runs in pure emulation (TCG): on this kind of machine /dev/kvm is a nesting hypervisor that
cannot boot stock kernels (docs/environment.md, "Guest kernels"). The guest sees the host's root
read-only over 9p with a tmpfs overlay for its writes, so the same Python, programs and tests run
unchanged. What comes back is written on writable 9p shares mounted at their host paths: the run's
own folder (its exit status) and the caller's output folders (captures, reports).

Each run builds its initramfs and /init in a fresh temporary folder and removes it after, also on
failure or Ctrl-C; QEMU is killed (its whole process group) at the run's deadline.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .image import Kernel, KernelError, extract_vmlinux
from .initramfs import Share, build, init_script, module_order

__all__ = ["GuestResult", "QEMU", "available", "qemu_command", "read_result", "run"]

QEMU = "qemu-system-x86_64"
#: The kernel command line: the serial console, quiet, and a panic ends QEMU (-no-reboot).
APPEND = "console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off"
#: The job's environment inside the guest (env -i: nothing of the host's leaks in but these).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "TERM": "dumb"}
UP_MARK = "verifier-guest: up"


def available() -> str | None:
    """Why a guest cannot run here (None: it can): QEMU and busybox-static must be installed."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is missing (install qemu-system-x86; sudo make setup does)"
    if not Path("/bin/busybox").is_file():
        return "/bin/busybox is missing (install busybox-static; sudo make setup does)"
    if shutil.which("modprobe") is None and not Path("/sbin/modprobe").exists():
        return "modprobe is missing (install kmod; sudo make setup does)"
    return None


@dataclass
class GuestResult:
    """How a run ended: the job's exit `status` (None when it never wrote one: the guest hung and was
    killed at its deadline, or failed before the job), the serial `console` text, the seconds from
    QEMU's start to the job's start (`boot_s`) and to the end (`wall_s`), and `files`: the run's
    small result files by name (e.g. the jitter probe's JSON)."""

    status: int | None
    console: str
    boot_s: float | None
    wall_s: float
    timed_out: bool = False
    files: dict[str, str] = field(default_factory=dict)
    qemu_pid: int | None = None  # the QEMU process the run started (gone when `run` returns)
    run_dir: Path | None = None  # the run's temporary folder (removed when `run` returns)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def why(self) -> str:
        """A line saying how the run ended, for a failure message."""
        if self.timed_out:
            return f"the guest did not finish by its deadline ({self.wall_s:.0f} s) and was killed"
        if self.status is None:
            tail = [ln for ln in self.console.splitlines() if ln.strip()][-3:]
            return "the guest stopped without the job's exit status; console: " + " | ".join(tail)
        if self.status == 125:
            return "the guest could not start the job: " + next(
                (ln for ln in self.console.splitlines() if ln.startswith("verifier-guest:")), "?")
        return f"the job exited with status {self.status}"


def _opt(path: Path | str) -> str:
    return str(path).replace(",", ",,")  # QEMU's option syntax doubles a literal comma


def qemu_command(*, vmlinux: Path, initrd: Path, shares: list[Share], memory_mb: int = 1024, cpus: int = 1,
                 append: str = APPEND) -> list[str]:
    """The QEMU command line of a run: TCG on the `pc` machine (microvm hangs under load), the kernel
    and initramfs given directly (PVH entry of the uncompressed vmlinux), the host root read-only as
    9p tag ``hostroot``, each share as its tag, the serial console on stdout, no network device, no
    display; ``-no-reboot`` so that the guest's poweroff or a panic ends QEMU."""
    cmd = [QEMU, "-accel", "tcg,thread=multi", "-cpu", "max", "-M", "pc", "-m", f"{memory_mb}M",
           "-smp", str(cpus), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-monitor", "none",
           "-kernel", _opt(vmlinux), "-initrd", _opt(initrd), "-append", append]
    for i, share in enumerate([Share("hostroot", Path("/"), writable=False), *shares]):
        ro = ",readonly=on" if not share.writable else ""
        cmd += ["-fsdev", f"local,id=fs{i},path={_opt(share.path)},security_model=none,multidevs=remap{ro}",
                "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]
    return cmd


def read_result(share_dir: Path) -> tuple[int | None, dict[str, str]]:
    """The job's exit status from the run's shared folder (None if the guest wrote none or garbage),
    and the other small files there (.json, .txt), by name."""
    status = None
    try:
        text = (share_dir / "status").read_text().strip()
        status = int(text) if text.lstrip("-").isdigit() else None
    except OSError:
        pass
    files = {p.name: p.read_text(errors="replace") for p in sorted(share_dir.iterdir())
             if p.suffix in (".json", ".txt") and p.is_file()}
    return status, files


def run(kernel: Kernel, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        outputs: list[Path] = (), deadline_s: float = 600, memory_mb: int = 1024, cpus: int = 1,
        on_line=None, on_text=None, nice: int = 0) -> GuestResult:
    """Boot `kernel`, run `argv` in `cwd` (a host path) as root inside it, and return how it ended.

    `env` is added to `BASE_ENV`; ``VERIFIER_GUEST_DIR`` names the run's shared folder, where the
    job may leave small result files. `outputs` are host folders (they must exist) the job may write
    into at the same paths. `on_line` gets each console line once it has ended, `on_text` the console's
    text as it comes (progress: pytest's dots before their line ends). `nice` lowers QEMU's CPU
    priority (a guest run beside timing checks on the host leaves them the CPU first). The guest is
    killed `deadline_s` seconds after QEMU starts."""
    why = available()
    if why:
        raise KernelError(why)
    outputs = [Path(o).resolve() for o in outputs]
    for o in outputs:
        if not o.is_dir():
            raise KernelError(f"{o}: an output folder of the guest must exist")
    remove_stale()
    tmp = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))
    proc = None
    try:
        boot, share_dir = tmp / "boot", tmp / "share"
        boot.mkdir()
        share_dir.mkdir()
        head = kernel.image.read_bytes()[:4]
        vmlinux = kernel.image if head == b"\x7fELF" else extract_vmlinux(kernel.image, boot / "vmlinux")
        shares = [Share("run", share_dir)] + [Share(f"out{i}", o) for i, o in enumerate(outputs)]
        order = module_order(kernel.modules)
        job_env = {**BASE_ENV, **(env or {}), "VERIFIER_GUEST_DIR": str(share_dir)}
        init = init_script(release=kernel.release, modules=order, modules_dir=kernel.modules.resolve(),
                           shares=shares, status=share_dir / "status", argv=list(argv), cwd=Path(cwd).resolve(),
                           env=job_env, config=kernel.config is not None)
        initrd = build(boot / "initramfs.cpio", modules_dir=kernel.modules, init=init, modules=order,
                       config=kernel.config)
        cmd = qemu_command(vmlinux=vmlinux, initrd=initrd, shares=shares, memory_mb=memory_mb, cpus=cpus)
        started = time.monotonic()
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        lines: list[str] = []
        up: list[float] = []

        def pump() -> None:
            # Read chunks, not lines: pytest's progress dots end their line only at the end of the run,
            # and `on_text` (the user's progress) should see them as they come.
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            buf = ""
            while chunk := os.read(proc.stdout.fileno(), 65536):
                text = decoder.decode(chunk)
                if on_text is not None:
                    on_text(text.replace("\r\n", "\n"))
                buf += text
                *done, buf = buf.split("\n")
                for line in done:
                    line = line.rstrip("\r")
                    if UP_MARK in line and not up:
                        up.append(time.monotonic() - started)
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
            if buf:
                lines.append(buf)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            with _terminate_as_interrupt():
                proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill(proc)
        reader.join(5)
        wall = time.monotonic() - started
        status, files = read_result(share_dir)
        return GuestResult(None if timed_out else status, "\n".join(lines), up[0] if up else None, wall,
                           timed_out, files, proc.pid, tmp)
    finally:
        if proc is not None:
            _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)


RUN_PREFIX = "verifier-guest-"


def remove_stale(tmpdir: str | None = None) -> list[Path]:
    """Remove the run folders (``verifier-guest-PID-*`` in the temporary directory) of runners that
    are gone: killed outright (SIGKILL), they could not remove their own. Their QEMU died with them
    (`_die_with_parent`). Returns what was removed."""
    removed = []
    for d in Path(tmpdir or tempfile.gettempdir()).glob(f"{RUN_PREFIX}*-*"):
        pid = d.name[len(RUN_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _die_with_parent() -> None:
    """In QEMU's process before exec: the kernel sends it SIGKILL if the process that started it dies
    (prctl PR_SET_PDEATHSIG), so a runner killed outright leaves no guest running."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the guest runs (in the main thread), so that
    the guest is killed and its folder removed on the way out, as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _kill(proc: subprocess.Popen) -> None:
    """End QEMU (its process group) if it still runs, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def probe_of(result: GuestResult) -> dict | None:
    """The in-guest timer probe's figures (`verifier.kernels.inguest`), if the run wrote them, with
    the monitor's figures over the whole run under "run" (when it wrote them)."""
    text = result.files.get("probe.json")
    if not text:
        return None
    probe = json.loads(text)
    try:
        probe["run"] = json.loads(result.files["lateness.json"])
    except (KeyError, ValueError):  # absent, or cut off mid-write when the guest powered off
        pass
    return probe
