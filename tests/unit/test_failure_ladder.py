"""A failing expectation in a user's test leaves the ladder of the offending connection beside the
capture, and the failure names the file: pytest run on a small test file in a subprocess, on a copy
of a golden capture (no root needed; tests/testbed/test_plugin.py runs the same with a live capture)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"
NS = "{http://www.w3.org/2000/svg}"

INNER = textwrap.dedent('''
    from verifier import expect
    from verifier.analysis.trace import load_trace

    def test_handshake_expected():
        expect(load_trace("caps/c3.pcapng")).connection(dport=5001).handshake()

    def test_no_such_connection():
        expect(load_trace("caps/c3.pcapng")).connection(dport=9)

    def test_plain_assert():
        assert 1 == 2

    def test_passes():
        expect(load_trace("caps/c3.pcapng")).connection(dport=5001).refused()
''')


def run_inner(tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "caps").mkdir()
    shutil.copyfile(GOLDEN / "c3_refused_ipv4.pcapng", tmp_path / "caps" / "c3.pcapng")
    (tmp_path / "test_inner.py").write_text(INNER)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                           f"--rootdir={tmp_path}", "test_inner.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_failed_expectation_writes_the_ladder_beside_the_capture(tmp_path):
    res = run_inner(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    written = sorted(p.name for p in (tmp_path / "caps").iterdir())
    # one page, for the one failure that is about a connection
    assert written == ["c3.connection0.html", "c3.pcapng"], written
    page = (tmp_path / "caps" / "c3.connection0.html").read_text()
    assert "<script" not in page and 'href="c3.pcapng"' in page
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg" class="ladder"')
    svg = ET.fromstring(page[start:page.index("</svg>", start) + 6])
    pkts = [g for g in svg.iter(f"{NS}g") if g.get("class") == "pkt"]
    assert [g.get("data-kind") for g in pkts] == ["SYN", "RST"]
    # the RST/ACK is the offending packet: highlighted in its arrow's group
    marked = [g.get("data-kind") for g in pkts if any(r.get("class") == "mark" for r in g.iter(f"{NS}rect"))]
    assert marked == ["RST"]
    # the failure names the file, in the failed test's report
    section = res.stdout.split("test_handshake_expected", 1)[1].split("test_no_such_connection", 1)[0]
    assert "ladder of the offending connection" in section
    assert "ladder: caps/c3.connection0.html (open it in a browser)" in section
    assert res.stdout.count("ladder of the offending connection") == 1
