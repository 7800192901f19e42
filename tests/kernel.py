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


def guest_slack_s() -> float:
    """How late this kernel's timers were measured to fire at boot when it runs in an emulated guest
    (`verifier.kernels.inguest` sets VERIFIER_TIMER_SLACK_S); 0 on the host, where nothing sets it."""
    try:
        return max(0.0, float(os.environ.get("VERIFIER_TIMER_SLACK_S", "0")))
    except ValueError:
        return 0.0


#: The timer tolerance for this kernel: one model, used by every check of a kernel timer. In a guest
#: the lateness measured at boot is added to what a packet or a woken process may be late by, and to
#: how early one may be (each event is timed from the previous one, which may itself have been late).
_base, _slack = Tolerance(), guest_slack_s()
TOLERANCE = Tolerance(hz=kernel_hz(), sent_s=_base.sent_s + _slack, absolute_s=_base.absolute_s + _slack,
                      early_s=_base.early_s + _slack)
