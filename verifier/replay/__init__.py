"""Replay: captures read offline through the one core, and re-driven against a live stack.

* `scan` (verifier.replay.scan): the attempts of a capture, streamed (what `verifier replay` prints).
* `verifier.replay.command`: the `verifier replay` and `verifier show` commands.
* `verifier.replay.redrive`: re-sending one captured connection's client side to a live testbed (root).

The expectation language of `--expect` is `verifier.analysis.conditions` (`check`, `assert_expectations`).
"""

from verifier.analysis.conditions import assert_expectations, check
from verifier.replay.scan import Scan, scan

__all__ = ["Scan", "assert_expectations", "check", "scan"]
