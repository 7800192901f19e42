"""The claim report: book against kernel, claim by claim, with the captures that show it.

Written by the pytest plugin (``--verifier-report``) as Markdown for people, JSON for tools, and HTML
with pictures (``report.html``: a ladder diagram of every connection of each check's capture, with the
programs' socket calls on their host's line, the C2 plot of SYN times against both profiles and the
C8 plot of the queue limit against the backlog). For each check: the book's statement, what the
kernel did, the verdict of the `linux` profile (the test's own outcome: the kernel must match the
model derived from its settings) and of the `stevens` profile (4.4BSD as the book describes it),
and the capture file.

`html_document(results, column=...)` turns the per-test results into the plain data of
`verifier.draw.page.report_page` (reading the kept captures); `merged_document({kernel: results,
...})` makes one report with a column per kernel (verdicts and ladders side by side) for the same page.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from verifier.claims import CLAIMS

#: At most this many connections of one capture are drawn (a SYN flood's spoofed ones are counted instead).
MAX_LADDERS_PER_CAPTURE = 8


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
    try:
        write_html(path.with_suffix(".html"), results, kernel)
    except Exception as exc:  # the pictures must not cost the Markdown and JSON reports (written above)
        import sys

        print(f"verifier: {path.with_suffix('.html')} not written: {type(exc).__name__}: {exc}", file=sys.stderr)


def write_html(path: Path, results: list[dict], kernel: str | None = None) -> None:
    """Write the HTML report (one self-contained file) from the per-test results."""
    from verifier.draw.page import report_page

    kernel = kernel or platform.release()
    column = f"Linux {kernel}"
    doc = html_document(results, column=column, base=path.parent)
    doc["columns"] = [column]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_page(doc))


def write_kernels_html(out: Path, columns: dict[str, Path]) -> Path:
    """OUT/report.html for `verifier kernels`: the claim report with one column of verdicts and
    ladders per kernel (`merged_document`), from each kernel's own report.json (label -> its path;
    a kernel whose run wrote none has an empty column). Returns the path."""
    from verifier.draw.page import report_page

    results = {}
    for label, rj in columns.items():
        data = json.loads(rj.read_text()) if rj.exists() else {"results": []}
        results[label] = data.get("results", [])
    path = out / "report.html"
    path.write_text(report_page(merged_document(results, base=out, title=f"TCP socket claims on {', '.join(columns)}")))
    return path


def merged_document(columns: dict[str, list[dict]], *, base: Path, title: str | None = None) -> dict:
    """The plain data of a report with one column per kernel (column name -> that kernel's results):
    each claim and check once, with a cell (verdicts, ladders) per column where it ran. For
    `verifier.draw.page.report_page`, as a kernels report would write it."""
    merged: dict = {"title": title or f"TCP socket claims on {', '.join(columns)}", "columns": list(columns),
                    "intro": [], "claims": [], "footer": ""}
    claims: dict[str, dict] = {}
    for column, results in columns.items():
        doc = html_document(results, column=column, base=base)
        merged["intro"] = merged["intro"] or doc["intro"][1:]
        for cl in doc["claims"]:
            into = claims.get(cl["id"])
            if into is None:
                into = claims[cl["id"]] = {k: v for k, v in cl.items() if k not in ("verdicts", "checks", "figures")}
                into.update(verdicts={}, checks=[], figures=[])
                merged["claims"].append(into)
            into["verdicts"].update(cl["verdicts"])
            into["figures"] += [dict(f, title=f"{column}: {f['title']}") for f in cl["figures"]]
            by_name = {c["name"]: c for c in into["checks"]}
            for chk in cl["checks"]:
                if chk["name"] in by_name:
                    by_name[chk["name"]]["cells"].update(chk["cells"])
                else:
                    into["checks"].append({"name": chk["name"], "family": chk["family"], "cells": dict(chk["cells"])})
    merged["claims"].sort(key=lambda c: _claim_order(c["id"]))
    return merged


def _claim_verdicts(checks: list[dict]) -> dict:
    failed = sum(r["outcome"] == "failed" for r in checks)
    passed = sum(r["outcome"] == "passed" for r in checks)
    linux = (f"FAILS ({failed} of {len(checks)} checks)" if failed else
             f"holds ({passed} check{'' if passed == 1 else 's'})" if passed else "not run")
    verdicts = [r["stevens"] for r in checks if r.get("stevens") is not None]
    stevens = ("-" if not verdicts else "holds" if all(verdicts) else "differs" if not any(verdicts)
               else f"partly ({sum(verdicts)} of {len(verdicts)} checks)")
    return {"linux": linux, "linux_ok": None if not (failed or passed) else not failed,
            "stevens": stevens, "stevens_ok": None if not verdicts else all(verdicts)}


def html_document(results: list[dict], *, column: str, base: Path) -> dict:
    """The plain data of the claim report for one column (a kernel): claims, verdicts, checks, with
    the ladders of each check's kept captures (links relative to `base`) and the C2 and C8 plots."""
    rows = sorted((r for r in results if r.get("claim")), key=lambda r: (_claim_order(r["claim"]), r["nodeid"]))
    by_claim: dict[str, list[dict]] = {}
    for r in rows:
        by_claim.setdefault(r["claim"], []).append(r)
    claims = []
    for cid, checks in by_claim.items():
        claim = CLAIMS.get(cid)
        entry = {"id": cid, "title": claim.title if claim else "", "statement": claim.statement if claim else "",
                 "verdicts": {column: _claim_verdicts(checks)}, "figures": _figures(cid, checks), "checks": []}
        for r in checks:
            test = r["nodeid"].split("::", 1)[-1]
            cell = {"outcome": r["outcome"], "observed": r.get("observed") or "", "message": r.get("message") or "",
                    "stevens_ok": r.get("stevens"), "stevens_why": r.get("stevens_why") or "",
                    "captures": [{"name": Path(c).name, "href": os.path.relpath(c, base)} for c in r.get("captures", [])]}
            cell["ladders"], cell["ladder_note"] = _ladders(r, base)
            entry["checks"].append({"name": test, "family": f"IPv{r['family']}" if r.get("family") else "",
                                    "cells": {column: cell}})
        claims.append(entry)
    failed = sum(r["outcome"] == "failed" for r in rows)
    differs = sum(r.get("stevens") is False for r in rows)
    return {
        "title": f"TCP socket claims (Stevens, UNP ch. 4) on {column}",
        "intro": ["linux: the kernel matches the model derived from its own settings (the test passed). stevens: "
                  "the book's 4.4BSD behaviour would have produced the same.",
                  "Each ladder shows one connection of a check's capture: client, router and server as columns, "
                  "each packet an arrow with its flags and seq/ack relative to each side's initial sequence number, "
                  "time running down the page (every event gets a row; longer gaps get more height, growing with "
                  "their logarithm, and gaps over 0.2 s are marked with their length). Bars on a host's line are "
                  "the socket calls of our programs, from entry to return. Hover over an arrow for the packet "
                  "in full."],
        "claims": claims,
        "footer": f"{len(rows)} claim checks over {len(claims)} claims; {failed} failed; the book's model differs "
                  f"from this kernel in {differs}.",
    }


def _ladders(result: dict, base: Path) -> tuple[list[dict], str]:
    """The ladders of a check's kept captures, and a note on what was not drawn."""
    import warnings

    from verifier.analysis.calls import parse_line
    from verifier.analysis.trace import load_trace
    from verifier.draw.ladder import calls_for, ladder, render_svg
    from verifier.pcap import CaptureFormatError

    caps = [Path(c) for c in result.get("captures", []) if Path(c).exists()]
    if not caps:
        return [], "no capture kept" if result.get("outcome") != "skipped" else ""
    host_calls: dict[str, list] = {}
    if len(caps) == 1:  # the calls can be matched to one capture's connections
        for d in result.get("calls", []):
            d = dict(d)
            host = d.pop("host")
            host_calls.setdefault(host, []).append(parse_line(json.dumps(d)))
    figures, notes = [], []
    for cap in caps:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trace = load_trace(cap)
        except (CaptureFormatError, OSError) as exc:
            notes.append(f"{cap.name}: cannot be read ({exc})")
            continue
        conns = trace.connections
        if len(conns) > MAX_LADDERS_PER_CAPTURE:
            # the connections with an exchange first (a flood's spoofed SYNs are one packet each)
            ranked = sorted(conns, key=lambda c: (len(c.events) < 3, c.id))
            shown = sorted(ranked[:MAX_LADDERS_PER_CAPTURE], key=lambda c: c.id)
            rest = [c for c in conns if c not in shown]
            outcomes = ", ".join(f"{n} {o}" for o, n in sorted(_count(c.outcome for c in rest).items()))
            notes.append(f"{cap.name}: {len(rest)} more connection(s) not drawn ({outcomes})")
        else:
            shown = conns
        for c in shown:
            calls = calls_for(c, host_calls) if host_calls else None
            lad = ladder(c, calls, interfaces=trace.interfaces)
            figures.append({"title": lad.title, "svg": render_svg(lad), "href": os.path.relpath(cap, base),
                            "link_text": cap.name})
        if not conns:
            notes.append(f"{cap.name}: no TCP connection")
    return figures, "; ".join(notes)


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _figures(cid: str, checks: list[dict]) -> list[dict]:
    """The claim's plots, from the data its checks attached."""
    from verifier.draw.plot import Series, TimesRow, times_plot, xy_plot

    figures = []
    cases = [c for r in checks for c in (r.get("data") or {}).get("syn_times", [])]
    if cid == "C2" and cases:
        rows = [TimesRow(c["case"], c["observed"], c["fail"],
                         {"linux": (c["linux"], c["linux_fail"]), "stevens": (c["stevens"], c["stevens_fail"])})
                for c in cases]
        zoom = max([t for c in cases for t in [*c["observed"], c["fail"] or 0, *c["linux"], c["linux_fail"] or 0]]
                   + [1.0]) * 1.05
        figures.append({"title": "C2, zoomed to this kernel's times: the SYNs and ETIMEDOUT against the linux model",
                        "svg": times_plot(rows, x_max=zoom),
                        "caption": "the same cases on a scale that ends at this kernel's last event: each dot (a SYN "
                                   "as captured) should sit in its ring (the linux profile's prediction)."})
        figures.insert(0, {"title": "C2: every SYN and the ETIMEDOUT time, per case, against both profiles' models",
                        "svg": times_plot(rows),
                        "caption": "dots: the SYNs on the client's interface, bar: connect() returned ETIMEDOUT "
                                   "(seconds after the first SYN); rings and open bars: the linux profile's "
                                   "prediction from the namespace's sysctls and the measured initial RTO; crosses: "
                                   "the book's 4.4BSD schedule (SYNs at 0, 6, 30 s, giving up at 75 s)."})
    queues = [q for r in checks for q in [(r.get("data") or {}).get("accept_queue")] if q]
    if cid == "C8" and queues:
        somaxconn = min(q["somaxconn"] for q in queues)
        top = max(8, *(q["backlog"] for q in queues))
        bs = list(range(top + 1))
        figures.append({"title": "C8: completed connections a listener holds, against the backlog",
                        "svg": xy_plot([
                            Series("linux: min(backlog, somaxconn) + 1", [(b, min(b, somaxconn) + 1) for b in bs],
                                   "#1a8a3a"),
                            Series("4.4BSD: 3 x backlog / 2 + 1", [(b, 3 * b // 2 + 1) for b in bs], "#c62828"),
                            Series("held by this kernel", [(q["backlog"], q["held"]) for q in queues], "#111111",
                                   line=False)], x_label="backlog (listen's argument)", y_label="queued connections"),
                        "caption": f"lines: each model's limit (somaxconn {somaxconn}; 4.4BSD counts both queues "
                                   f"together, UNP fig. 4.10); dots: the accept-queue length this kernel held before "
                                   f"it refused, measured at backlog {', '.join(sorted({str(q['backlog']) for q in queues}))}."})
    return figures


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _claim_order(cid: str) -> tuple[int, int, str]:
    digits = "".join(ch for ch in cid if ch.isdigit())
    return (0 if cid.startswith("C") else 1, int(digits) if digits else 99, cid)
