"""Bounded polling: the one way this project waits for something to become true.

Readiness is polled, never assumed from a sleep; every wait has a deadline and says what it waited for.

Deadlines are written for a real machine. Where everything runs many times slower (an emulated guest
kernel: QEMU without KVM), the one who starts the run measures how much slower and says so in
``VERIFIER_PACE``; `pace()` reads it and every deadline here is stretched by it (`scaled`). A deadline
only bounds how long to wait for something that will come, so stretching it changes no verdict.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

PACE_ENV = "VERIFIER_PACE"


def pace() -> float:
    """How many times slower than a real machine this one runs (>= 1): ``VERIFIER_PACE``, measured by
    `verifier.kernels.inguest` in a guest; 1 where nothing set it (or it is not a number)."""
    try:
        return max(1.0, float(os.environ.get(PACE_ENV, "1")))
    except ValueError:
        return 1.0


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on a real machine, stretched by `pace()`."""
    return seconds * pace()


def wait_until(check: Callable[[], Any], timeout: float, on_timeout: Callable[[], BaseException]) -> Any:
    """Call `check()` until it returns something true, and return that. After `timeout` seconds
    (stretched by `pace()`), raise `on_timeout()`. The polling interval starts at 1 ms and backs off to
    20 ms."""
    deadline = time.monotonic() + scaled(timeout)
    delay = 0.001
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise on_timeout()
        time.sleep(delay)  # the interval of a bounded poll, not a readiness guess
        delay = min(delay * 2, 0.02)
