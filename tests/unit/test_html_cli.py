"""`verifier show FILE --html OUT` and `verifier replay FILE --html OUT`: the real command in a
subprocess, on the golden captures and crafted ones. A page is written whole (one ladder per
connection, replay's table with the outcomes); bad input is one line, status 2, and nothing written."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from scapy.all import ICMP, IP, IPerror

from tests.unit.crafted import C, S, tcp, write
from tests.unit.test_cli_input import GOLDEN, assert_one_line, run
from verifier import exits

C5 = str(GOLDEN / "c5_icmp_host_reject_ipv4.pcapng")
C6 = str(GOLDEN / "c6_connect_again_ipv4.pcapng")
NS = "{http://www.w3.org/2000/svg}"


class Page(HTMLParser):
    """The parts of a page the tests look at: svg blocks (as text), table rows, links, scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.svgs: list[str] = []
        self.rows: list[list[str]] = []
        self.scripts = 0
        self._row: list[str] | None = None
        self._cell = False
        self.feed(text)
        start = 0
        while (i := text.find("<svg", start)) >= 0:
            j = text.index("</svg>", i) + 6
            self.svgs.append(text[i:j])
            start = j

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append("")
            self._cell = True

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.rows.append(self._row)
            self._row = None
        if tag == "td":
            self._cell = False

    def handle_data(self, data):
        if self._cell and self._row:
            self._row[-1] += data


def ladders(page: Page) -> list[ET.Element]:
    return [ET.fromstring(s) for s in page.svgs if 'class="ladder"' in s]


def test_show_html_draws_every_connection(tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "c5.html"
    res = run(["show", C5, "--html", str(out)], tmp_path)
    assert res.returncode == exits.OK, res.stderr
    assert f"html: wrote {out} (1 ladders)" in res.stdout
    assert "S    seq=0" not in res.stdout  # the text ladders are replaced by the page
    page = Page(out.read_text())
    assert page.scripts == 0
    (svg,) = ladders(page)
    kinds = [g.get("data-kind") for g in svg.iter(f"{NS}g") if g.get("class") == "pkt"]
    assert kinds == ["SYN", "ICMP", "SYN", "ICMP"]
    assert not list(out.parent.glob(".*tmp"))  # written through a temporary file, renamed


def test_show_html_of_a_capture_from_elsewhere_and_of_a_routed_one(tmp_path):
    (tmp_path / "out").mkdir()
    syn = tcp(C, S, 40001, 80, "S", 7)
    other = write([("eth0", 0, syn), ("eth0", 5, IP(src="192.0.2.254", dst=C) / ICMP(type=3, code=1) /
                                      IPerror(bytes(syn)[:28]))], tmp_path / "out" / "eth.pcapng")
    out = tmp_path / "out" / "eth.html"
    assert run(["show", str(other), "--html", str(out)], tmp_path).returncode == exits.OK
    (svg,) = ladders(Page(out.read_text()))
    heads = [t.text for t in svg.iter(f"{NS}text") if t.get("font-weight") == "bold"]
    assert heads == ["client", "network", "server"]
    frames = []
    for t, p, hops in [(0, tcp(C, S, 40000, 80, "S", 1), ["client:c0", "router:r0", "router:r1", "server:s0"]),
                       (100, tcp(S, C, 80, 40000, "RA", 0, 2), ["server:s0", "router:r1", "router:r0", "client:c0"])]:
        frames += [(h, t + 10 * k, p) for k, h in enumerate(hops)]
    routed = write(frames, tmp_path / "out" / "routed.pcapng")
    out = tmp_path / "out" / "routed.html"
    assert run(["show", str(routed), "--html", str(out), "--json"], tmp_path).returncode == exits.OK
    (svg,) = ladders(Page(out.read_text()))
    heads = [t.text for t in svg.iter(f"{NS}text") if t.get("font-weight") == "bold"]
    assert heads == ["client", "router", "server"]
    assert len([g for g in svg.iter(f"{NS}g") if g.get("class") == "pkt"]) == 2  # 8 frames, 2 packets


def test_replay_html_has_the_table_of_outcomes_and_a_ladder_each(tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "c6.html"
    res = run(["replay", C6, "--html", str(out)], tmp_path)
    assert res.returncode == exits.OK, res.stderr
    assert "refused" in res.stdout and f"html: wrote {out} (2 rows, 2 ladders)" in res.stdout
    page = Page(out.read_text())
    table = [r for r in page.rows if len(r) == 9]
    assert [(r[0], r[3]) for r in table] == [("0", "refused"), ("1", "refused")]
    assert len(ladders(page)) == 2
    # with --expect that fails: status 1, the page still written
    out2 = tmp_path / "out" / "c6b.html"
    res = run(["replay", C6, "--html", str(out2), "--expect", "every attempt to port 5003 is established"], tmp_path)
    assert res.returncode == exits.FAILED and out2.exists()


def test_html_of_a_truncated_capture_is_written_with_status_3(tmp_path):
    (tmp_path / "out").mkdir()
    cut = tmp_path / "out" / "cut.pcapng"
    data = (GOLDEN / "c6_connect_again_ipv4.pcapng").read_bytes()
    cut.write_bytes(data[: len(data) - 40])
    for cmd in ("show", "replay"):
        out = tmp_path / "out" / f"{cmd}.html"
        res = run([cmd, str(cut), "--html", str(out)], tmp_path)
        assert res.returncode == exits.DAMAGED, (cmd, res.stderr)
        assert ladders(Page(out.read_text())), cmd


BAD_HTML = [
    (["--html", "page.pcapng"], "must end in .html"),
    (["--html", "nowhere/page.html"], "the directory nowhere does not exist"),
    (["--html", ""], "give a file name for the HTML page"),
]


@pytest.mark.parametrize("command", ["show", "replay"])
@pytest.mark.parametrize("extra,words", BAD_HTML)
def test_bad_html_option_is_refused_while_parsing(command, extra, words, tmp_path):
    assert_one_line(run([command, C5, *extra], tmp_path), exits.BAD_INPUT, words)


@pytest.mark.parametrize("command", ["show", "replay"])
def test_html_refusals_write_nothing(command, tmp_path):
    (tmp_path / "d.html").mkdir()
    assert_one_line(run([command, C5, "--html", "d.html"], tmp_path), exits.BAD_INPUT, "is a directory")
    named = tmp_path / "cap.html"  # a capture that happens to be named .html is not overwritten
    named.write_bytes((GOLDEN / "c3_refused_ipv4.pcapng").read_bytes())
    assert_one_line(run([command, "cap.html", "--html", "cap.html"], tmp_path), exits.BAD_INPUT,
                    "that is the capture being read")
    assert named.read_bytes() == (GOLDEN / "c3_refused_ipv4.pcapng").read_bytes()
    (tmp_path / "junk.txt").write_text("not a capture\n")
    assert_one_line(run([command, "junk.txt", "--html", "p.html"], tmp_path), exits.BAD_INPUT, "junk.txt")
    assert_one_line(run([command, C5, "--html", "p.html", "--port", "4"], tmp_path), exits.BAD_INPUT,
                    "no connection with port 4")


def test_replay_html_does_not_go_with_redrive(tmp_path):
    assert_one_line(run(["replay", C5, "--html", "p.html", "--against", "lab", "--connection", "0"], tmp_path),
                    exits.BAD_INPUT, "does not go with --against")
