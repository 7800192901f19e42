"""A user's own server in place of ours: the conformance checks run against it (socat from Debian)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from verifier.pytest_plugin import require_tool

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance" / "test_connect.py"


def test_conformance_checks_run_against_socat(root, tmp_path):
    require_tool("socat")
    report = tmp_path / "report.md"
    cmd = "socat TCP{family}-LISTEN:{port},reuseaddr,fork EXEC:cat"
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                          str(CONFORMANCE), "-k", "c1 or c7", f"--verifier-server={cmd}",
                          f"--verifier-report={report}", f"--verifier-captures={tmp_path / 'caps'}"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(report.with_suffix(".json").read_text())["results"]
    assert len(results) == 4 and all(r["outcome"] == "passed" for r in results)
    # The evidence names the user's server, with the placeholders filled in per family.
    assert {r["family"] for r in results if "socat TCP6-LISTEN:5000" in r["observed"]} == {6}
    assert {r["family"] for r in results if "socat TCP4-LISTEN:5000" in r["observed"]} == {4}
