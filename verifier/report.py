"""The claim report: which claims held on this kernel, with the captures that show it.

Written by the pytest plugin (``--verifier-report``) as Markdown for people and JSON for tools.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from verifier.claims import CLAIMS


def write_report(path: Path, results: list[dict]) -> None:
    """Write `path` (Markdown) and `path.with_suffix('.json')` from the per-test results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kernel = platform.release()
    rows = sorted((r for r in results if r.get("claim")), key=lambda r: (_claim_order(r["claim"]), r["nodeid"]))
    lines = [f"# TCP socket claims on Linux {kernel}", "",
             "| claim | statement (Stevens, UNP ch. 4) | test | family | result | capture |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        claim = CLAIMS.get(r["claim"])
        statement = claim.statement if claim else ""
        test = r["nodeid"].split("::", 1)[-1]
        fam = f"IPv{r['family']}" if r.get("family") else ""
        caps = ", ".join(os.path.relpath(c, path.parent) for c in r.get("captures", []))
        result = {"passed": "holds", "failed": "FAILS", "skipped": "skipped"}.get(r["outcome"], r["outcome"])
        if r.get("message") and r["outcome"] == "failed":
            result += f": {r['message'][:120]}"
        lines.append(f"| {r['claim']} | {statement} | `{test}` | {fam} | {result} | {caps} |")
    other = [r for r in results if not r.get("claim")]
    failed = sum(r["outcome"] == "failed" for r in results)
    lines += ["", f"{len(rows)} claim checks, {len(other)} other tests, {failed} failed."]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"kernel": kernel, "results": results}, indent=2) + "\n")


def _claim_order(cid: str) -> tuple[int, str]:
    digits = "".join(ch for ch in cid if ch.isdigit())
    return (int(digits) if digits else 99, cid)
