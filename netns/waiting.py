"""Bounded polling: the one way this project waits for something to become true.

Readiness is polled, never assumed from a sleep; every wait has a deadline and says what it waited for.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(check: Callable[[], Any], timeout: float, on_timeout: Callable[[], BaseException]) -> Any:
    """Call `check()` until it returns something true, and return that. After `timeout` seconds, raise
    `on_timeout()`. The polling interval starts at 1 ms and backs off to 20 ms."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise on_timeout()
        time.sleep(delay)  # the interval of a bounded poll, not a readiness guess
        delay = min(delay * 2, 0.02)
