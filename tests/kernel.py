"""What the test suites read from the kernel under test to predict its timers: its HZ, and from it the
one `Tolerance` every timing check uses (the model is stated in `verifier.analysis.schedules`)."""

from __future__ import annotations

import gzip
import os
import platform
import re
from functools import lru_cache
from pathlib import Path

from verifier.analysis.schedules import Tolerance


@lru_cache(maxsize=None)
def kernel_hz() -> int | None:
    """CONFIG_HZ of the running kernel, from /proc/config.gz or /boot/config-<release>; None if neither
    says (the tolerance then falls back to its worst case over every HZ)."""
    sources = [("/proc/config.gz", gzip.open), (f"/boot/config-{platform.release()}", open)]
    for path, opener in sources:
        if not Path(path).exists():
            continue
        try:
            with opener(path, "rt") as f:
                m = re.search(r"^CONFIG_HZ=(\d+)$", f.read(), re.M)
        except OSError:
            continue
        if m:
            return int(m[1])
    return None


def upstream_version(version: str, signature: str | None, release: str) -> tuple[int, int, int]:
    """The upstream version (major, minor, sublevel) of a kernel from its /proc/version text, its
    /proc/version_signature (Ubuntu's; None where there is none) and its release. Distributions name
    their kernels by an ABI ("6.1.0-57-amd64" is Debian's 6.1.192), so the upstream version is read
    where they state it: the last field of Ubuntu's signature, or the last "Debian X.Y.Z" of the
    banner (an earlier one is the compiler's version); else the release itself."""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)\s*$", signature or "")
    if not m:
        found = re.findall(r"Debian (\d+)\.(\d+)\.(\d+)", version)
        m = [None, *found[-1]] if found else None
    if not m:
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        raise ValueError(f"no kernel version in {release!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


@lru_cache(maxsize=None)
def kernel_version() -> tuple[int, int, int]:
    """The upstream version of the running kernel (see `upstream_version`)."""
    texts = {}
    for path in ("/proc/version", "/proc/version_signature"):
        try:
            texts[path] = Path(path).read_text()
        except OSError:
            texts[path] = None
    return upstream_version(texts["/proc/version"] or "", texts["/proc/version_signature"], platform.release())


def guest_slack_s() -> float:
    """How late this kernel's timers were measured to fire when it runs in an emulated guest: the larger
    of the figure measured at boot (`verifier.kernels.inguest` sets VERIFIER_TIMER_SLACK_S) and the
    live one, the largest lateness of the last 30 s as the guest's monitor measures it now
    (VERIFIER_LATENESS_FILE). 0 on the host, where nothing sets either."""
    from verifier.kernels.inguest import LATENESS_ENV, live_lateness_s

    try:
        boot = max(0.0, float(os.environ.get("VERIFIER_TIMER_SLACK_S", "0")))
    except ValueError:
        boot = 0.0
    return max(boot, live_lateness_s(os.environ.get(LATENESS_ENV)))


def tolerance() -> Tolerance:
    """The timer tolerance for this kernel, now: one model, used by every check of a kernel timer. In
    a guest the lateness measured (`guest_slack_s`) is added to what a packet or a woken process may
    be late by, and to how early one may be (each event is timed from the previous one, which may
    itself have been late)."""
    base, slack = Tolerance(), guest_slack_s()
    return Tolerance(hz=kernel_hz(), sent_s=base.sent_s + slack, absolute_s=base.absolute_s + slack,
                     early_s=base.early_s + slack)


class _Live:
    """`TOLERANCE`: `tolerance()` taken afresh at each use, so a check in a guest gets the lateness
    measured while it ran (on the host it is always the same)."""

    def __getattr__(self, name: str):
        return getattr(tolerance(), name)

    def __repr__(self) -> str:
        return repr(tolerance())


#: The timer tolerance for this kernel (see `tolerance`).
TOLERANCE = _Live()
