"""Self-contained HTML pages (inline CSS and SVG; no script, no network) from plain data.

`report_page(doc)` is the claim report; `doc` is plain data (dicts, lists, strings), so that any
producer can fill it: the demo's one kernel, or a kernels report with a column per kernel. Its shape:

    {"title": str, "intro": [str, ...], "columns": ["Linux 6.18", ...],
     "claims": [{"id": "C1", "title": str, "statement": str,
                 "verdicts": {column: {"linux": str, "linux_ok": bool|None, "stevens": str, "stevens_ok": bool|None}},
                 "figures": [{"title": str, "svg": str, "caption": str}],
                 "checks": [{"name": str, "family": str,
                             "cells": {column: {"outcome": str, "observed": str, "message": str,
                                                "stevens_ok": bool|None, "stevens_why": str,
                                                "captures": [{"name": str, "href": str}],
                                                "ladders": [{"title": str, "svg": str, "href": str}]}}}]}],
     "footer": str}

`capture_page(...)` is what `verifier show --html` and `verifier replay --html` write: a summary,
optionally the table of attempts, and one ladder per connection. Text is escaped here; `svg` values
are inserted as they are (they come from `verifier.draw`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from verifier.draw.ladder import legend_svg

__all__ = ["CSS", "capture_page", "report_page"]

CSS = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
blockquote { margin: .5em 0; padding: .4em 1em; border-left: 4px solid #888; background: #fafafa; }
.ok { color: #1a7a30; font-weight: bold; } .bad { color: #c62828; font-weight: bold; } .na { color: #777; }
.check { margin: 1em 0 2em; } .cells { display: flex; gap: 1.5em; flex-wrap: wrap; }
.cell { flex: 1 1 0; min-width: 380px; }
.cell h4 { margin: .2em 0; }
.figure { margin: .6em 0 1.2em; overflow-x: auto; }
.figure .caption { color: #555; font-size: .9em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; margin: .3em 0; }
dt { font-weight: bold; } dd { margin: 0; }
code, .mono { font-family: DejaVu Sans Mono, monospace; font-size: .92em; }
.small { font-size: .9em; color: #555; }
"""


def _verdict(text: str, ok: bool | None) -> str:
    cls = "na" if ok is None else ("ok" if ok else "bad")
    return f'<span class="{cls}">{escape(text)}</span>'


def _figure(fig: Mapping, cls: str = "figure") -> str:
    title = fig.get("title", "")
    link = f' &mdash; <a href="{escape(fig["href"])}">{escape(fig.get("link_text") or fig["href"])}</a>' \
        if fig.get("href") else ""
    caption = f'<div class="caption">{escape(fig["caption"])}</div>' if fig.get("caption") else ""
    return (f'<div class="{cls}"><div class="small"><b>{escape(title)}</b>{link}</div>{fig["svg"]}{caption}</div>')


def _doc(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def report_page(doc: Mapping) -> str:
    """The claim report (see the module's docstring for `doc`)."""
    columns = list(doc.get("columns") or [""])
    body = [f"<h1>{escape(doc.get('title', 'TCP socket claims'))}</h1>"]
    body += [f"<p>{escape(p)}</p>" for p in doc.get("intro", ())]
    body.append(f'<p class="small">Arrow colours: {legend_svg()}</p>')
    head = "".join(f"<th>linux{escape(' · ' + c) if len(columns) > 1 else ''}</th>"
                   f"<th>stevens{escape(' · ' + c) if len(columns) > 1 else ''}</th>" for c in columns)
    rows = []
    for cl in doc.get("claims", ()):
        cells = ""
        for c in columns:
            v = cl.get("verdicts", {}).get(c, {})
            cells += f"<td>{_verdict(v.get('linux', '-'), v.get('linux_ok'))}</td>"
            cells += f"<td>{_verdict(v.get('stevens', '-'), v.get('stevens_ok'))}</td>"
        rows.append(f'<tr class="claim-row"><td><a href="#{escape(cl["id"].lower())}">{escape(cl["id"])}</a></td>'
                    f'<td>{escape(cl.get("statement", ""))}</td>{cells}</tr>')
    body.append(f'<table class="summary"><tr><th>claim</th><th>the book says</th>{head}</tr>{"".join(rows)}</table>')
    for cl in doc.get("claims", ()):
        cid = cl["id"]
        body.append(f'<section class="claim" id="{escape(cid.lower())}" data-claim="{escape(cid)}">')
        body.append(f"<h2>{escape(cid)}: {escape(cl.get('title', ''))}</h2>")
        body.append(f"<blockquote><b>The book:</b> {escape(cl.get('statement', ''))}</blockquote>")
        body += [_figure(f) for f in cl.get("figures", ())]
        for chk in cl.get("checks", ()):
            name = chk["name"] + (f" ({chk['family']})" if chk.get("family") else "")
            body.append(f'<div class="check" data-check="{escape(chk["name"])}"><h3><code>{escape(name)}</code></h3>'
                        '<div class="cells">')
            for c in columns:
                cell = chk.get("cells", {}).get(c)
                body.append(_cell(cell, c if len(columns) > 1 else ""))
            body.append("</div></div>")
        body.append("</section>")
    if doc.get("footer"):
        body.append(f'<p class="small">{escape(doc["footer"])}</p>')
    return _doc(doc.get("title", "TCP socket claims"), body)


def _cell(cell: Mapping | None, column: str) -> str:
    if cell is None:
        return f'<div class="cell"><h4>{escape(column)}</h4><p class="na">not run</p></div>'
    outcome = cell.get("outcome", "")
    linux_ok = {"passed": True, "failed": False}.get(outcome)
    linux = {"passed": "holds", "failed": "FAILS", "skipped": "skipped"}.get(outcome, outcome)
    if cell.get("message"):
        linux += f": {cell['message']}"
    s_ok = cell.get("stevens_ok")
    stevens = "-" if s_ok is None else ("holds" if s_ok else "differs")
    if cell.get("stevens_why"):
        stevens += f": {cell['stevens_why']}"
    caps = ", ".join(f'<a href="{escape(c["href"])}">{escape(c["name"])}</a>' for c in cell.get("captures", ()))
    caps = caps or '<span class="na">none kept</span>'
    parts = ['<div class="cell">' + (f"<h4>{escape(column)}</h4>" if column else ""), "<dl>",
             f"<dt>kernel did</dt><dd>{escape(cell.get('observed') or '')}</dd>",
             f"<dt>linux</dt><dd>{_verdict(linux, linux_ok)}</dd>",
             f"<dt>stevens</dt><dd>{_verdict(stevens, s_ok)}</dd>",
             f"<dt>captures</dt><dd>{caps}</dd>", "</dl>"]
    parts += [_figure(dict(lad, link_text="pcapng"), "figure ladder-figure") for lad in cell.get("ladders", ())]
    if cell.get("ladder_note"):
        parts.append(f'<p class="small">{escape(cell["ladder_note"])}</p>')
    parts.append("</div>")
    return "".join(parts)


def capture_page(title: str, summary: Sequence[str], ladders: Sequence[Mapping], *,
                 table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None, notes: Sequence[str] = ()) -> str:
    """A capture's page: summary lines, the table (header, rows; a row's first cell, the attempt's id,
    links to its ladder), then each ladder ({"id", "title", "svg"})."""
    body = [f"<h1>{escape(title)}</h1>"] + [f"<p>{escape(s)}</p>" for s in summary]
    body.append(f'<p class="small">Arrow colours: {legend_svg()}</p>')
    drawn = {str(lad.get("id")) for lad in ladders}
    if table is not None:
        head, rows = table
        trs = []
        for row in rows:
            first = escape(str(row[0]))
            first = f'<a href="#conn-{first}">{first}</a>' if str(row[0]) in drawn else first
            trs.append("<tr><td>" + first + "</td>" + "".join(f"<td>{escape(str(v))}</td>" for v in row[1:]) + "</tr>")
        body.append('<table class="attempts"><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
                    + "".join(trs) + "</table>")
    for lad in ladders:
        body.append(f'<section class="connection" id="conn-{escape(str(lad.get("id")))}">'
                    + _figure(lad, "figure ladder-figure") + "</section>")
    body += [f'<p class="small">{escape(n)}</p>' for n in notes]
    return _doc(title, body)
