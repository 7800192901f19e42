"""The claim report: book against kernel, claim by claim, with the captures that show it.

Written by the pytest plugin (``--verifier-report``) as Markdown for people and JSON for tools. For
each check: the book's statement, what the kernel did, the verdict of the `linux` profile (the test's
own outcome: the kernel must match the model derived from its settings) and of the `stevens` profile
(4.4BSD as the book describes it), and the capture file.
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
    lines = [f"# TCP socket claims (Stevens, UNP ch. 4) on Linux {kernel}", "",
             "`linux`: the kernel matches the model derived from its own settings (the test passed). "
             "`stevens`: the book's 4.4BSD behaviour would have produced the same.", ""]
    by_claim: dict[str, list[dict]] = {}
    for r in rows:
        by_claim.setdefault(r["claim"], []).append(r)
    lines += ["| claim | the book (C) or the RFC (P) says | linux (this kernel) | stevens (the book's 4.4BSD) |",
              "|---|---|---|---|"]
    for cid, checks in by_claim.items():
        claim = CLAIMS.get(cid)
        failed = sum(r["outcome"] == "failed" for r in checks)
        passed = sum(r["outcome"] == "passed" for r in checks)
        linux = f"**FAILS** ({failed} of {len(checks)} checks)" if failed else (
            f"holds ({passed} check{'' if passed == 1 else 's'})" if passed else "not run")
        verdicts = [r["stevens"] for r in checks if r.get("stevens") is not None]
        stevens = ("–" if not verdicts else "holds" if all(verdicts) else "differs" if not any(verdicts)
                   else f"partly ({sum(verdicts)} of {len(verdicts)} checks)")
        lines.append(f"| [{cid}](#{cid.lower()}) | {_cell(claim.statement if claim else '')} | {linux} | {stevens} |")
    shown = set()
    for r in rows:
        cid = r["claim"]
        if cid not in shown:
            shown.add(cid)
            claim = CLAIMS.get(cid)
            lines += ["", f"<a id=\"{cid.lower()}\"></a>", "", f"## {cid}: {claim.title if claim else ''}", "",
                      f"> {claim.statement if claim else ''}", "",
                      "| check | family | kernel did | linux | stevens | capture |", "|---|---|---|---|---|---|"]
        test = r["nodeid"].split("::", 1)[-1].split("[", 1)[0]
        fam = f"IPv{r['family']}" if r.get("family") else ""
        caps = ", ".join(f"[{Path(c).name}]({os.path.relpath(c, path.parent)})" for c in r.get("captures", []))
        linux = {"passed": "holds", "failed": "**FAILS**", "skipped": "skipped"}.get(r["outcome"], r["outcome"])
        if r["outcome"] == "failed" and r.get("message"):
            linux += f": {_cell(r['message'][:160])}"
        if r.get("stevens") is None:
            stevens = "–"
        else:
            stevens = "holds" if r["stevens"] else "differs"
            if r.get("stevens_why"):
                stevens += f": {_cell(r['stevens_why'])}"
        lines.append(f"| `{test}` | {fam} | {_cell(r.get('observed') or '')} | {linux} | {stevens} | {caps} |")
    failed = sum(r["outcome"] == "failed" for r in results)
    differs = sum(r.get("stevens") is False for r in rows)
    lines += ["", f"{len(rows)} claim checks over {len(shown)} claims; {failed} failed; "
                  f"the book's model differs from this kernel in {differs}."]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"kernel": kernel, "results": results}, indent=2) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _claim_order(cid: str) -> tuple[int, int, str]:
    digits = "".join(ch for ch in cid if ch.isdigit())
    return (0 if cid.startswith("C") else 1, int(digits) if digits else 99, cid)
