"""The kinds of values the command line takes, as argparse types.

Each is a function of one string, usable as `type=`: it returns the value, or raises
`argparse.ArgumentTypeError` with one line saying what is wrong and what is allowed, so a bad value
is refused while the arguments are parsed (exit status 2), before any command runs.

    p.add_argument("--port", type=argtypes.port)            # 0-65535
    p.add_argument("--duration", type=argtypes.duration)    # seconds, above 0, at most MAX_DURATION_S
    p.add_argument("--count", type=argtypes.count)          # a whole number, 0 or more
    p.add_argument("--nth", type=argtypes.int_in(1, 10_000))

Numbers are finite (`nan` and `inf` are refused) and bounded; integers are written in decimal.
`int_in` and `float_in` make a type for other bounds; the fault options (`verifier.faults.Option`)
are checked by the same two. Only the standard library is imported: the fault agent loads this too.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Callable

__all__ = ["MAX_DURATION_S", "address", "bounds_text", "check_range", "count", "duration", "float_in", "html_output",
           "int_in", "mtu", "port", "probability", "seconds", "seq"]

#: The longest anything of this tool stays in place by itself: a fault, an agent's arm, a capture's
#: --duration. Also what keeps an nft `limit` bucket (refilled one token a week) from refilling.
MAX_DURATION_S = 86_400.0

ArgType = Callable[[str], object]


def _whole(text: str, what: str) -> int:
    try:
        return int(str(text).strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: not a whole number: {text!r}") from None


def _real(text: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{what}: give a finite number, not {text!r}")
    return v


def bounds_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    """The bounds in words: "in [1, 10]", "in (0, 86400]", "at least 1", "above 0", "at most 5"."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_text(low)}, {_text(high)}]"
    if low is not None:
        return f"{'above' if low_open else 'at least'} {_text(low)}"
    return f"at most {_text(high)}" if high is not None else "any"


def _text(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def check_range(v: float, what: str, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """`v` if it lies within the bounds; else ArgumentTypeError "WHAT must lie in [LOW, HIGH], got V"."""
    below = low is not None and (v <= low if low_open else v < low)
    if below or (high is not None and v > high):
        verb = "lie" if low is not None and high is not None else "be"
        raise argparse.ArgumentTypeError(f"{what} must {verb} {bounds_text(low, high, low_open)}, got {_text(v)}")
    return v


def int_in(low: int | None = None, high: int | None = None, what: str = "the value") -> ArgType:
    """A type for whole numbers within [low, high] (None: unbounded on that side)."""
    def convert(text: str) -> int:
        return int(check_range(_whole(text, what), what, low, high))
    convert.__name__ = "whole number"  # argparse names the type in its own messages
    return convert


def float_in(low: float | None = None, high: float | None = None, what: str = "the value",
             low_open: bool = False) -> ArgType:
    """A type for finite numbers within [low, high] (or (low, high] when `low_open`)."""
    def convert(text: str) -> float:
        return check_range(_real(text, what), what, low, high, low_open)
    convert.__name__ = "number"
    return convert


def port(text: str) -> int:
    """A TCP port, 0-65535 (0 only ever matches what a capture holds; faults want 1-65535)."""
    try:
        v = int(str(text).strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {v}")
    return v


def duration(text: str) -> float:
    """How long something stays, in seconds: above 0, at most `MAX_DURATION_S` (one day)."""
    v = _real(text, "a duration")
    if not 0 < v <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"a duration is above 0 and at most {MAX_DURATION_S:g} s (one day), "
                                         f"not {v:g}")
    return v


def seconds(text: str) -> float:
    """A time to wait or a span of capture time, in seconds: above 0, finite, at most one day."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = math.nan
    if not 0 < v <= MAX_DURATION_S:  # nan too
        raise argparse.ArgumentTypeError(f"give a positive, finite number of seconds, at most {MAX_DURATION_S:g} "
                                         f"(one day), not {text!r}")
    return v


def count(text: str) -> int:
    """A number of things: a whole number, 0 or more."""
    v = _whole(text, "a count")
    if v < 0:
        raise argparse.ArgumentTypeError(f"a count is 0 or more, not {v}")
    return v


def probability(text: str) -> float:
    """A probability, 0 to 1."""
    v = _real(text, "a probability")
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"a probability is 0 to 1, not {v:g}")
    return v


def mtu(text: str) -> int:
    """An MTU, 68 (IPv4's minimum) to 65535 bytes."""
    return int_in(68, 65535, "an MTU")(text)


def seq(text: str) -> int:
    """A TCP sequence or acknowledgment number, 0 to 2**32 - 1."""
    return int_in(0, 2**32 - 1, "a sequence number")(text)


def address(text: str) -> str:
    """An IPv4 or IPv6 address, normalised ("2001:DB8::01" -> "2001:db8::1")."""
    try:
        return str(ipaddress.ip_address(str(text).strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def html_output(text: str) -> str:
    """A file to write an HTML page to: named *.html or *.htm (so that a capture given by mistake
    is never overwritten), not a directory, in a directory that exists and can be written."""
    path = str(text)
    if not path.strip():
        raise argparse.ArgumentTypeError("give a file name for the HTML page, e.g. report.html")
    if not path.lower().endswith((".html", ".htm")):
        raise argparse.ArgumentTypeError(f"the HTML page's name must end in .html (or .htm), not {path!r}")
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path}: is a directory; give a file name, e.g. {path.rstrip('/')}/page.html")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{path}: the directory {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{path}: cannot be written (permission denied)")
    return path
