"""The HTML pages in a real browser: headless Chromium, driven through chromedriver (Debian's
`chromium` and `chromium-driver`, installed by `make setup`), over the WebDriver protocol.

* The claim report, built from results that point at the golden captures (every claim C1-C14),
  rendered: every claim section is there and laid out, every check's ladders are drawn (each svg has
  its size on the page), the summary's links lead to the sections, the C2 and C8 plots are drawn.
* A screenshot of one ladder against the packets it draws: the ladder is rendered with each arrow
  in its own colour and no anti-aliasing; in the screenshot's pixels there are as many arrow
  colours as the connection has packets, their rows go down the page in the packets' order, each
  reaches from its sender's column to its receiver's, with its head at the receiver.

Without chromium these tests skip; under VERIFIER_REQUIRE_ROOT=1 (CI) they fail instead. The
browser runs with its own profile in the test's tmp_path (HOME too): nothing is left on the host.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from verifier.analysis.trace import load_trace
from verifier.claims import CLAIMS
from verifier.draw.ladder import column_xs, ladder, render_svg
from verifier.draw.page import capture_page
from verifier.pytest_plugin import require_tool
from verifier.report import write_report

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
#: Distinct colours, none of which the ladder uses for anything else.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


# ---- a small WebDriver client ---------------------------------------------------------------------

class Browser:
    """Headless Chromium through chromedriver (both started here, both ended by their pid)."""

    def __init__(self, tmp: Path) -> None:
        chromium = require_tool("chromium")
        driver = require_tool("chromedriver")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        home = tmp / "home"
        home.mkdir()
        env = dict(os.environ, HOME=str(home))
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("chromedriver did not come up within 20 s")
            time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--force-color-profile=srgb",
                "--hide-scrollbars", "--window-size=1400,1000", f"--user-data-dir={tmp / 'profile'}",
                "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": args}}}}
        try:
            self.session = self._call("POST", "/session", caps)["value"]["sessionId"]
        except Exception:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def s(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)["value"]

    def open(self, path: Path) -> None:
        self.s("POST", "/url", {"url": path.resolve().as_uri()})

    def run(self, script: str, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, css: str) -> bytes:
        el = self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
        return base64.b64decode(self.s("GET", f"/element/{el}/screenshot"))

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        except OSError:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


# ---- PNG pixels (8-bit RGB/RGBA, not interlaced: what Chromium writes) -----------------------------

def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line[k] for k in range(stride) if k % bpp < 3))
        prev = line
    return w, h, rows


def colour_pixels(rows: list[bytes], colours: list[tuple[int, int, int]]) -> dict[tuple, list[tuple[int, int]]]:
    """(x, y) of the pixels of exactly each colour."""
    want = {bytes(c): c for c in colours}
    found: dict[tuple, list[tuple[int, int]]] = {c: [] for c in colours}
    for y, row in enumerate(rows):
        for x in range(0, len(row), 3):
            c = want.get(row[x:x + 3])
            if c is not None:
                found[c].append((x // 3, y))
    return found


# ---- the claim report --------------------------------------------------------------------------

CLAIM_CAPTURES = {
    "C1": ["c1_handshake_ipv4", "c1_handshake_ipv6"], "C2": ["c2_syn_timeout_linear1_retries2_ipv4"],
    "C3": ["c3_refused_ipv4"], "C4": ["c4b_linger_rst_ipv4", "c4c_rst_for_no_connection_ipv4"],
    "C5": ["c5_icmp_host_reject_ipv4", "c5_icmp_net_50ms_ipv6"], "C6": ["c6_connect_again_ipv4"],
    "C7": ["c1_handshake_ipv4"], "C8": ["c8_accept_queue_abort1_ipv4"], "C9": ["c9_handshake_before_accept_ipv4"],
    "C10": ["c10_one_listener_ipv4"], "C11": ["c11_fork_server_ipv6"], "C12": ["c12_four_segment_close_ipv4"],
    "C13": ["c1_handshake_ipv6"], "C14": ["c14_exec_ipv4"],
}


def golden_results() -> list[dict]:
    results = []
    for cid, names in CLAIM_CAPTURES.items():
        for name in names:
            data = {}
            if cid == "C2":
                data = {"syn_times": [{"case": "ipv4-linear1-retries2", "observed": [0, 1.03, 2.05, 4.07], "fail": 8.1,
                                       "linux": [0, 1, 2, 4], "linux_fail": 8, "stevens": [0, 6, 30],
                                       "stevens_fail": 75}]}
            if cid == "C8":
                data = {"accept_queue": {"backlog": 2, "somaxconn": 4096, "held": 3, "model": 3}}
            results.append({"nodeid": f"tests/conformance/t.py::test_{cid.lower()}_{name}", "outcome": "passed",
                            "claim": cid, "family": 6 if "ipv6" in name else 4,
                            "captures": [str(GOLDEN / f"{name}.pcapng")], "observed": f"{name} as recorded",
                            "stevens": cid not in ("C2", "C5", "C6", "C8"), "stevens_why": "", "message": "",
                            "data": data, "calls": []})
    return results


def test_report_renders_every_claim_and_every_ladder(browser, tmp_path):
    write_report(tmp_path / "report.md", golden_results())
    page = tmp_path / "report.html"
    browser.open(page)
    got = browser.run("""
        const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
        return {
          sections: [...document.querySelectorAll('section.claim')].map(s => [s.id, s.dataset.claim, box(s),
                       [...s.querySelectorAll('div.check')].map(c => [c.dataset.check,
                          [...c.querySelectorAll('svg.ladder')].map(box),
                          c.querySelectorAll('svg.ladder g.pkt').length])]),
          links: [...document.querySelectorAll('table.summary a')].map(a => [a.textContent, a.hash,
                    !!document.getElementById(a.hash.slice(1))]),
          plots: [...document.querySelectorAll('svg.plot')].map(p => [p.getAttribute('class'), box(p),
                    p.querySelectorAll('g.observed circle').length]),
        };""")
    # every claim with results (here C1-C14), in the order of verifier.claims, each laid out on the page
    claims = [c for c in CLAIMS if c in CLAIM_CAPTURES]
    assert claims == list(CLAIM_CAPTURES)
    assert [s[1] for s in got["sections"]] == claims
    assert all(w > 0 and h > 0 for _, _, (w, h), _ in got["sections"])
    assert [(t, h, ok) for t, h, ok in got["links"]] == [(c, f"#{c.lower()}", True) for c in claims]
    # every check has one drawn ladder per connection of its capture, with one arrow per packet
    for (sid, cid, _, checks), (_, names) in zip(got["sections"], CLAIM_CAPTURES.items()):
        assert len(checks) == len(names), cid
        for (check, boxes, arrows), name in zip(checks, names):
            trace = load_trace(GOLDEN / f"{name}.pcapng")
            assert len(boxes) == len(trace.connections) >= 1, (cid, check)
            assert all(w > 300 and h > 60 for w, h in boxes), (cid, check, boxes)
            assert arrows == sum(len(c.events) for c in trace.connections), (cid, check)
    kinds = sorted(p[0] for p in got["plots"])
    assert kinds == ["plot times", "plot times", "plot xy"]
    assert all(w > 200 and h > 50 for _, (w, h), _ in got["plots"])
    assert [n for k, _, n in got["plots"] if k == "plot times"] == [4, 4]  # the C2 case's four SYNs, twice


@pytest.mark.parametrize("name,conn_no", [("c12_four_segment_close_ipv4", 0), ("c5_icmp_host_reject_ipv4", 0),
                                          ("c8_accept_queue_abort1_ipv4", 2)])
def test_screenshot_of_a_ladder_shows_each_packet_in_order(browser, tmp_path, name, conn_no):
    trace = load_trace(GOLDEN / f"{name}.pcapng")
    conn = trace.connections[conn_no]
    lad = ladder(conn, interfaces=trace.interfaces)
    n = len(lad.arrows)
    assert n == len(conn.events) <= len(PALETTE)
    colours = {a.index: "#%02x%02x%02x" % PALETTE[a.index] for a in lad.arrows}
    page = tmp_path / "one.html"
    page.write_text(capture_page("one ladder", [], [{"id": 0, "title": "", "svg": render_svg(
        lad, colours=colours, crisp=True)}]))
    browser.open(page)
    w, h, rows = png_pixels(browser.screenshot("svg.ladder"))
    found = colour_pixels(rows, PALETTE[:n])
    # every packet's arrow is in the picture, and no other arrow colour is
    assert all(found[PALETTE[i]] for i in range(n)), [i for i in range(n) if not found[PALETTE[i]]]
    assert not any(colour_pixels(rows, PALETTE[n:]).values())
    xs = column_xs(len(lad.columns))
    tops = []
    for a in lad.arrows:
        px = found[PALETTE[a.index]]
        # the line's own pixels: those on the start column's side (the label sits in the middle)
        ys = sorted(y for x, y in px)
        tops.append(ys[0])
        left, right = min(x for x, _ in px), max(x for x, _ in px)
        start, end = xs[a.hops[0][0]], xs[a.hops[-1][2]]
        assert abs(min(start, end) - left) <= 3 and abs(max(start, end) - right) <= 3, (a.label, left, right)
        # the head is at the receiver: more of its colour within 10 px of the end than of the start
        near_end = sum(abs(x - end) <= 10 for x, _ in px)
        near_start = sum(abs(x - start) <= 10 for x, _ in px)
        assert near_end > near_start, (a.label, near_end, near_start)
    # in order: each arrow's first row is below the one before
    assert tops == sorted(tops) and len(set(tops)) == n, tops


def test_a_suite_run_report_in_the_browser(root, browser, tmp_path):
    """The whole way, as `make demo` goes: two checks of the conformance suite run with the plugin's
    report (a real testbed, captures and programs), and the report.html it wrote, in Chromium: their
    claim sections, a ladder per connection with the programs' socket calls on it, the C8 plot."""
    import sys

    root_dir = Path(__file__).resolve().parents[2]
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "VERIFIER_REQUIRE_ROOT"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                          str(root_dir / "tests" / "conformance" / "test_connect.py"),
                          str(root_dir / "tests" / "conformance" / "test_c8_listen.py"),
                          "-k", "test_c3_c4a and ipv4 or test_c8_accept_queue_overflow and ipv4-abort1",
                          "--keep-captures", f"--verifier-captures={out}", f"--verifier-report={out / 'report.md'}"],
                         cwd=root_dir, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    browser.open(out / "report.html")
    got = browser.run("""
        return [...document.querySelectorAll('section.claim')].map(s => [s.dataset.claim,
          [...s.querySelectorAll('svg.ladder')].map(l => [l.getBoundingClientRect().height,
             l.querySelectorAll('g.pkt').length, [...l.querySelectorAll('g.call text')].map(t => t.textContent)]),
          s.querySelectorAll('svg.plot').length]);""")
    assert [g[0] for g in got] == ["C3", "C8"]
    (_, c3, _), (_, c8, c8_plots) = got
    assert len(c3) == 1 and c3[0][0] > 60 and c3[0][1] == 2  # SYN, RST/ACK
    assert any(t.startswith("connect(") for t in c3[0][2]) and any("ECONNREFUSED" in t for t in c3[0][2])
    # C8: every client's connection drawn (limit + 2 of them), the server's accept queue plot
    assert len(c8) >= 4 and all(n >= 1 for _, n, _ in c8) and c8_plots == 1
