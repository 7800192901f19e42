"""A pytest session on a guest kernel: ``pytest --verifier-kernel 6.1|6.12|PATH ...``.

The pytest plugin hands the whole session here when ``--verifier-kernel`` is given: the same pytest
command line, less the kernel options, runs inside the guest (in the same folder, with the same
Python), its output streams to this terminal, its captures and claim report land where they would
on the host (their folders are shared at the same paths), and its exit status is pytest's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import guest, inguest
from .image import Kernel, KernelError, resolve

__all__ = ["KERNEL_OPTIONS", "guest_pytest_argv", "run_pytest", "strip_kernel_options"]

#: The plugin's options that choose the kernel; they are not passed on into the guest.
KERNEL_OPTIONS = ("--verifier-kernel", "--verifier-kernel-modules", "--verifier-kernel-deadline",
                  "--verifier-kernel-cpus")
#: Environment variables passed on into the guest (the guest's environment is otherwise clean).
PASSED_ENV = ("VERIFIER_REQUIRE_ROOT", "PYTEST_ADDOPTS")
#: A pytest exit status for "the run could not happen" (pytest's ExitCode.INTERNAL_ERROR).
NOT_RUN = 3


def strip_kernel_options(args: list[str]) -> list[str]:
    """`args` without the kernel options (``--opt VALUE`` and ``--opt=VALUE`` forms)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in KERNEL_OPTIONS:
            skip = True
        elif not a.startswith(tuple(o + "=" for o in KERNEL_OPTIONS)):
            out.append(a)
    return out


def guest_pytest_argv(args: list[str], python: str = sys.executable) -> list[str]:
    """The guest's command: the timer probe (`verifier.kernels.inguest`), then pytest with `args`."""
    return [python, "-m", "verifier.kernels.inguest", "--", python, "-m", "pytest", *args]


def run_pytest(kernel: Kernel, args: list[str], *, cwd: Path, outputs: list[Path], deadline_s: float = 900,
               echo=None, cpus: int = 1, nice: int = 0) -> guest.GuestResult:
    """Run pytest with `args` in a guest of `kernel`; `outputs`: host folders it writes into
    (created here); `echo` gets each console line (default: the console text is printed as it
    comes); `cpus` and `nice`: the guest's CPUs and QEMU's nice value (see `guest.run`)."""
    for o in outputs:
        Path(o).mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    # The host's own figure, measured now, for the guest's pace (verifier.kernels.inguest).
    env[inguest.HOST_START_ENV] = f"{inguest.process_start_ms():g}"
    if echo is not None:
        return guest.run(kernel, guest_pytest_argv(args), cwd=cwd, env=env, outputs=outputs, deadline_s=deadline_s,
                         cpus=cpus, on_line=echo, nice=nice)
    return guest.run(kernel, guest_pytest_argv(args), cwd=cwd, env=env, outputs=outputs, deadline_s=deadline_s,
                     cpus=cpus, on_text=lambda text: print(text, end="", flush=True), nice=nice)


def in_guest() -> bool:
    """Whether this process runs inside a guest started by `guest.run` (so it must not start another)."""
    return "VERIFIER_GUEST_DIR" in os.environ


def session_main(config, captures: Path) -> int | None:
    """The plugin's pytest_cmdline_main: None (go on as usual) unless --verifier-kernel is given.
    `captures`: the session's capture folder. With --verifier-report R, what the guest measured (boot
    time, timer lateness, which SYN sysctls the kernel has) is written to R's ``.guest.json`` twin."""
    spec = config.getoption("verifier_kernel")
    if not spec or in_guest():
        return None
    try:
        kernel = resolve(spec, config.getoption("verifier_kernel_modules"))
    except KernelError as exc:
        print(f"pytest: --verifier-kernel {spec}: {exc}", file=sys.stderr)
        return 4  # pytest's ExitCode.USAGE_ERROR
    outputs = [Path(captures).resolve()]
    report = config.getoption("verifier_report")
    if report:
        outputs.append(Path(report).resolve().parent)
    args = strip_kernel_options(list(config.invocation_params.args))
    print(f"verifier: running pytest on Linux {kernel.release} in a QEMU guest ({kernel.package or kernel.image})",
          flush=True)
    try:
        result = run_pytest(kernel, args, cwd=Path(config.invocation_params.dir), outputs=outputs,
                            deadline_s=config.getoption("verifier_kernel_deadline"),
                            cpus=config.getoption("verifier_kernel_cpus"))
    except KernelError as exc:
        print(f"pytest: --verifier-kernel {spec}: {exc}", file=sys.stderr)
        return NOT_RUN
    except KeyboardInterrupt:  # the guest was killed and its folder removed on the way out
        print("\npytest: interrupted: the guest was stopped", file=sys.stderr)
        return 2  # pytest's ExitCode.INTERRUPTED
    boot = f"booted in {result.boot_s:.1f} s, " if result.boot_s is not None else ""
    print(f"verifier: guest Linux {kernel.release}: {boot}{result.wall_s:.1f} s in all; {result.why()}", flush=True)
    if report:
        facts = {"kernel": kernel.release, "source": kernel.package or str(kernel.image), "boot_s": result.boot_s,
                 "wall_s": round(result.wall_s, 2), "status": result.status, "ended": result.why(),
                 "probe": guest.probe_of(result)}
        Path(report).resolve().with_suffix(".guest.json").write_text(json.dumps(facts, indent=2) + "\n")
    return result.status if result.status is not None and result.status != 125 else NOT_RUN
