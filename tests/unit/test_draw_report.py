"""The plots (verifier.draw.plot), the HTML pages (verifier.draw.page) and the HTML claim report
(verifier.report.write_html) on results that point at the golden captures: no root needed."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from verifier.draw.page import capture_page, report_page
from verifier.draw.plot import Series, TimesRow, nice_ticks, times_plot, xy_plot
from verifier.report import write_report

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"
NS = "{http://www.w3.org/2000/svg}"


def circles(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [e for g in root.iter(f"{NS}g") if cls in (g.get("class") or "", g.get("data-model") or "")
            for e in g if e.tag in (f"{NS}circle", f"{NS}path")]


def test_nice_ticks():
    assert nice_ticks(75) == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert nice_ticks(8.1)[-1] >= 8.1 and nice_ticks(0.3)[-1] >= 0.3
    assert nice_ticks(0) == [0.0, 1.0]


def test_times_plot_puts_each_mark_at_its_time():
    row = TimesRow("case", [0.0, 1.0, 3.0], 7.0, {"linux": ([0.0, 1.0, 3.0], 7.0), "stevens": ([0.0, 6.0, 30.0], 75.0)})
    svg = times_plot([row])
    dots = circles(svg, "observed")
    assert len(dots) == 3
    xs = [float(d.get("cx")) for d in dots]
    # a linear axis: the dot at 3 s is three times as far from 0 as the one at 1 s
    assert abs((xs[2] - xs[0]) - 3 * (xs[1] - xs[0])) < 0.2
    assert len(circles(svg, "stevens")) == 3 and len(circles(svg, "linux")) == 3
    zoomed = times_plot([row], x_max=8)
    assert len(circles(zoomed, "stevens")) == 2 and "+2 beyond" in zoomed  # 30 s and the 75 s failure


def test_xy_plot_series():
    svg = xy_plot([Series("a", [(0, 1), (8, 9)]), Series("m", [(2, 3)], line=False)], x_label="b", y_label="q")
    root = ET.fromstring(svg)
    names = [g.get("data-name") for g in root.iter(f"{NS}g") if g.get("class") == "series"]
    assert names == ["a", "m"]
    point = next(e for e in root.iter(f"{NS}circle"))
    line = next(e for g in root.iter(f"{NS}g") if g.get("data-name") == "a" for e in g if e.tag == f"{NS}path")
    # the measured point (2, 3) lies on the line from (0, 1) to (8, 9)
    (x0, y0), (x1, y1) = [tuple(map(float, p[1:].split(","))) for p in line.get("d").split()]
    px, py = float(point.get("cx")), float(point.get("cy"))
    assert abs(y0 + (y1 - y0) * (px - x0) / (x1 - x0) - py) < 0.2


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict]]:
    p = _Collect()
    p.feed(html)
    return p.tags


def result(claim, nodeid, capture, **kw):
    return {"nodeid": nodeid, "outcome": kw.get("outcome", "passed"), "claim": claim, "family": 4,
            "captures": [str(capture)] if capture else [], "observed": "what it did", "stevens": kw.get("stevens", True),
            "stevens_why": "", "message": kw.get("message", ""), "data": kw.get("data", {}), "calls": kw.get("calls", [])}


def test_html_report_from_results(tmp_path):
    t0 = None
    from verifier.analysis.trace import load_trace

    c1 = GOLDEN / "c1_handshake_ipv4.pcapng"
    conn = load_trace(c1).connections[0]
    t0 = conn.events[0].ts_ns
    calls = [{"host": "client", "pid": 11, "call": "connect", "args": {"fd": 3, "addr": "203.0.113.2", "port": 5000},
              "ret": 0, "errno": None, "t_enter_ns": t0 - 20_000, "t_return_ns": conn.events[2].ts_ns + 5_000}]
    results = [
        result("C1", "t.py::test_c1[ipv4]", c1, calls=calls),
        result("C3", "t.py::test_c3[ipv4]", GOLDEN / "c3_refused_ipv4.pcapng"),
        result("C2", "t.py::test_c2", GOLDEN / "c2_syn_timeout_linear1_retries2_ipv4.pcapng", stevens=False,
               data={"syn_times": [{"case": "ipv4-linear1-retries2", "observed": [0, 1.03, 2.05, 4.07], "fail": 8.1,
                                    "linux": [0, 1, 2, 4], "linux_fail": 8, "stevens": [0, 6, 30],
                                    "stevens_fail": 75}]}),
        result("C8", "t.py::test_c8[ipv4-abort1]", GOLDEN / "c8_accept_queue_abort1_ipv4.pcapng", outcome="failed",
               message="boom", stevens=False,
               data={"accept_queue": {"backlog": 2, "somaxconn": 4096, "held": 3, "model": 3}}),
        result("C9", "t.py::test_c9[ipv4]", None, outcome="skipped"),
    ]
    out = tmp_path / "report.md"
    write_report(out, results)
    html = (tmp_path / "report.html").read_text()
    tags = parse(html)
    # self-contained: no script, nothing fetched
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe")]
    assert not re.search(r'(src|href)="(https?:)?//', html)
    sections = [a["data-claim"] for t, a in tags if t == "section"]
    assert sections == ["C1", "C2", "C3", "C8", "C9"]
    # the summary links to every section
    links = [a["href"] for t, a in tags if t == "a" and a.get("href", "").startswith("#")]
    assert links == ["#c1", "#c2", "#c3", "#c8", "#c9"]
    assert {a["id"] for t, a in tags if t == "section"} == {"c1", "c2", "c3", "c8", "c9"}
    # one ladder per connection of each kept capture, each linking to its pcapng
    ladders = [a for t, a in tags if t == "svg" and a.get("class") == "ladder"]
    assert len(ladders) == 1 + 1 + 1 + 5
    pcap_links = [a["href"] for t, a in tags if t == "a" and a.get("href", "").endswith(".pcapng")]
    assert all((tmp_path / h).resolve().exists() for h in pcap_links)
    # C1's connect() is drawn on the client's line; the plots of C2 (two) and C8 are there
    assert html.count('class="call"') == 1 and "connect(addr=203.0.113.2, port=5000)" in html
    assert html.count('class="plot times"') == 2 and html.count('class="plot xy"') == 1
    assert "FAILS: boom" in html and "no capture kept" not in html.split('data-claim="C9"')[1]
    # the JSON twin keeps the data the pictures came from
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["results"][0]["calls"][0]["call"] == "connect"


def test_report_page_takes_a_column_per_kernel():
    cell = {"outcome": "passed", "observed": "x", "ladders": [{"title": "t", "svg": "<svg class=\"ladder\"></svg>",
                                                               "href": "a.pcapng"}]}
    doc = {"title": "kernels", "columns": ["6.1", "6.18"],
           "claims": [{"id": "C1", "title": "t", "statement": "s",
                       "verdicts": {"6.1": {"linux": "holds", "linux_ok": True}, "6.18": {"linux": "FAILS"}},
                       "checks": [{"name": "test_c1", "cells": {"6.1": cell, "6.18": dict(cell, outcome="failed")}}]}]}
    html = report_page(doc)
    assert html.count('class="cell"') == 2 and html.count('class="ladder"') == 2
    assert "<th>linux · 6.1</th>" in html and "<th>stevens · 6.18</th>" in html


def test_capture_page_links_rows_to_ladders():
    html = capture_page("t", ["2 connections"], [{"id": 0, "title": "#0", "svg": "<svg></svg>"}],
                        table=(["id", "outcome"], [["0", "closed"], ["1", "refused"]]))
    assert '<a href="#conn-0">0</a>' in html and 'href="#conn-1"' not in html and 'id="conn-0"' in html
    assert "<script" not in html


def test_noted_calls_go_to_the_report_as_their_report_lines():
    import pytest as _pytest

    from verifier.analysis.calls import parse_line
    from verifier.pytest_plugin import _call_dict, calls_key, record_calls

    line = ('{"pid": 7, "call": "accept", "args": {"fd": 3}, "ret": 4, "errno": null, "t_enter_ns": 10, '
            '"t_return_ns": 20, "addr": "192.0.2.2", "port": 40000}')
    ev = parse_line(line)

    class Node:
        stash = _pytest.Stash()

    node = Node()
    record_calls(node, "server", [ev])
    ((host, noted),) = node.stash[calls_key]
    d = _call_dict(host, noted)
    assert d.pop("host") == "server"
    back = parse_line(json.dumps(d))
    assert back == ev and back.extra == ev.extra and back.args == ev.args


def test_a_report_over_two_kernels_has_a_column_of_ladders_each(tmp_path):
    from verifier.report import merged_document

    old = [result("C3", "t.py::test_c3[ipv4]", GOLDEN / "c3_refused_ipv4.pcapng"),
           result("C1", "t.py::test_c1[ipv4]", GOLDEN / "c1_handshake_ipv4.pcapng")]
    new = [result("C3", "t.py::test_c3[ipv4]", GOLDEN / "c3_refused_ipv6.pcapng", outcome="failed", message="x"),
           result("C12", "t.py::test_c12[ipv4]", GOLDEN / "c12_four_segment_close_ipv4.pcapng")]
    doc = merged_document({"6.1": old, "6.18": new}, base=tmp_path)
    assert [c["id"] for c in doc["claims"]] == ["C1", "C3", "C12"]
    c3 = doc["claims"][1]
    assert c3["verdicts"]["6.1"]["linux_ok"] is True and c3["verdicts"]["6.18"]["linux_ok"] is False
    (check,) = c3["checks"]
    assert set(check["cells"]) == {"6.1", "6.18"}
    assert [len(check["cells"][k]["ladders"]) for k in ("6.1", "6.18")] == [1, 1]
    html = report_page(doc)
    section = html.split('data-claim="C3"')[1].split("</section>")[0]
    assert section.count('class="cell"') == 2 and section.count('class="ladder"') == 2
    assert "IPv6" in section and "<h4>6.1</h4>" in section and "<h4>6.18</h4>" in section
    c1 = html.split('data-claim="C1"')[1].split("</section>")[0]
    assert "not run" in c1  # C1 did not run on 6.18: its cell says so


def test_the_kernels_report_is_written_with_a_column_per_kernel(tmp_path):
    """`verifier kernels` hands each kernel's own report.json to write_kernels_html (a kernel whose
    run wrote none still gets its column)."""
    import json

    from verifier.report import write_kernels_html

    host, old = tmp_path / "host", tmp_path / "6.1"
    for folder, results in ((host, [result("C3", "t.py::test_c3[ipv4]", GOLDEN / "c3_refused_ipv4.pcapng")]),
                            (old, [result("C3", "t.py::test_c3[ipv4]", GOLDEN / "c3_refused_ipv6.pcapng")])):
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps({"kernel": folder.name, "results": results}))
    path = write_kernels_html(tmp_path, {"host": host / "report.json", "6.1": old / "report.json",
                                         "6.12": tmp_path / "6.12" / "report.json"})
    assert path == tmp_path / "report.html"
    html = path.read_text()
    assert "TCP socket claims on host, 6.1, 6.12" in html
    section = html.split('data-claim="C3"')[1].split("</section>")[0]
    assert section.count('class="ladder"') == 2
    assert "<h4>host</h4>" in section and "<h4>6.1</h4>" in section and "<h4>6.12</h4>" in section
