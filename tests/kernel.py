"""What the test suites read from the kernel under test to predict its timers: its HZ, and from it the
one `Tolerance` every timing check uses (the model is stated in `verifier.analysis.schedules`)."""

from __future__ import annotations

import gzip
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


#: The timer tolerance for this kernel: one model, used by every check of a kernel timer.
TOLERANCE = Tolerance(hz=kernel_hz())
