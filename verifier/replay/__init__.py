"""Replay: captures read offline through the one core, and re-driven against a live stack.

* `scan` (verifier.replay.scan): the attempts of a capture, streamed (what `verifier replay` prints).
* `verifier.replay.command`: the `verifier replay` and `verifier show` commands.
* `verifier.replay.redrive`: re-sending one captured connection's client side to a live testbed (root).

The expectation language of `--expect` is `verifier.analysis.conditions` (`check`, `assert_expectations`).
"""

from verifier.replay.scan import Scan, scan

__all__ = ["Scan", "assert_expectations", "check", "scan"]


def __getattr__(name: str):
    """check and assert_expectations, imported on first use (PEP 562): the `verifier replay`
    command imports this package, and most of its runs have no --expect."""
    if name in ("check", "assert_expectations"):
        from verifier.analysis import conditions

        return getattr(conditions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
