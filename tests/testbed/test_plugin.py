"""The pytest plugin as a user meets it: run pytest on a small test file in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

INNER = textwrap.dedent('''
    import pytest
    from verifier.analysis.expect import expect

    @pytest.mark.claim("C3")
    @pytest.mark.families(6)
    def test_refused(testbed, capture, family):
        res = testbed.client.run(["python3", "-c",
            f"import socket; socket.create_connection(({testbed.server.addr(family)!r}, 5000))"])
        assert "ConnectionRefusedError" in res.stderr
        expect(capture.trace()).connection(dport=5000).refused().syn_count(1)

    @pytest.mark.topology("pair")
    def test_pair(testbed, family):
        assert list(testbed.hosts) == ["client", "server"]
        assert testbed.family == {4: "ipv4", 6: "ipv6"}[family]
''')
NOT_ROOT = "import os\nos.geteuid = lambda: 1000  # behave as a user without sudo\n"


def pytest_in(tmp_path, *args, conftest="", env=None):
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "conftest.py").write_text(conftest)
    environ = {k: v for k, v in os.environ.items() if k != "VERIFIER_REQUIRE_ROOT"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
                           f"--rootdir={tmp_path}", str(tmp_path / "test_inner.py"), *args],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


def test_families_topology_keep_and_report(root, tmp_path):
    caps, report = tmp_path / "caps", tmp_path / "out" / "report.md"
    res = pytest_in(tmp_path, "--keep-captures", f"--verifier-captures={caps}", f"--verifier-report={report}")
    assert res.returncode == 0, res.stdout + res.stderr
    # families(6) gives one test; the pair test runs once per family.
    assert "PASSED test_inner.py::test_refused[ipv6]" in res.stdout
    assert "test_refused[ipv4]" not in res.stdout
    assert "PASSED test_inner.py::test_pair[ipv4]" in res.stdout and "PASSED test_inner.py::test_pair[ipv6]" in res.stdout
    kept = sorted(p.name for p in caps.iterdir())
    # The capture, and beside it the client's view (its interface alone, for Wireshark).
    assert kept == ["test_inner.test_refused_ipv6.client.pcapng", "test_inner.test_refused_ipv6.pcapng"], \
        "--keep-captures keeps passed tests' captures"
    from verifier.pcap import read_packets

    view = list(read_packets(caps / kept[0]))
    assert view and {p.iface_name for p in view} == {"client:c0"}
    assert [p.data for p in view] == [p.data for p in read_packets(caps / kept[1]) if p.iface_name == "client:c0"]
    data = json.loads(report.with_suffix(".json").read_text())
    rows = [r for r in data["results"] if r["claim"] == "C3"]
    assert len(rows) == 1 and rows[0]["outcome"] == "passed" and rows[0]["family"] == 6
    assert rows[0]["captures"] == [str(caps / kept[1])]
    md = report.read_text()
    assert "## C3:" in md and "| `test_refused` | IPv6 |" in md and "holds" in md
    assert "test_inner.test_refused_ipv6.pcapng" in md
    # the HTML twin: the C3 section with the ladder of the live capture, all four interfaces drawn
    html = report.with_suffix(".html").read_text()
    assert 'data-claim="C3"' in html and html.count('class="ladder"') == 1
    ladder = html[html.index('class="ladder"'):html.index("</svg>", html.index('class="ladder"'))]
    assert ladder.count('class="pkt"') == 2 and 'data-kind="SYN"' in ladder and 'data-kind="RST"' in ladder
    assert "(r0, r1)" in ladder and "(s0)" in ladder  # the router's and server's interfaces were captured
    assert 'href="../caps/test_inner.test_refused_ipv6.pcapng"' in html


FAILING = textwrap.dedent('''
    import pytest
    from verifier.analysis.expect import expect

    @pytest.mark.families(4)
    def test_expects_a_handshake(testbed, capture, family):
        testbed.client.run(["python3", "-c",
            f"import socket; socket.create_connection(({testbed.server.addr(family)!r}, 5000))"])
        expect(capture.trace()).connection(dport=5000).handshake()
''')


def test_a_failing_expectation_leaves_a_ladder_beside_the_kept_capture(root, tmp_path):
    (tmp_path / "test_fail.py").write_text(FAILING)
    caps = tmp_path / "caps"
    environ = {k: v for k, v in os.environ.items() if k != "VERIFIER_REQUIRE_ROOT"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"--rootdir={tmp_path}", f"--verifier-captures={caps}", str(tmp_path / "test_fail.py")],
                         cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    kept = sorted(p.name for p in caps.iterdir())
    assert kept == ["test_fail.test_expects_a_handshake_ipv4.client.pcapng",
                    "test_fail.test_expects_a_handshake_ipv4.connection0.html",
                    "test_fail.test_expects_a_handshake_ipv4.pcapng"], kept
    page = (caps / kept[1]).read_text()
    assert page.count('class="pkt"') == 2 and page.count('class="mark"') == 1  # SYN, RST; the RST marked
    assert f"ladder: {caps / kept[1]} (open it in a browser)" in res.stdout


def test_without_root_namespace_tests_skip_with_the_reason(tmp_path):
    res = pytest_in(tmp_path, conftest=NOT_ROOT)
    assert res.returncode == 0, res.stdout
    assert "3 skipped" in res.stdout
    assert "needs root for network namespaces: run with sudo" in res.stdout


def test_in_ci_a_namespace_test_without_root_fails_instead(tmp_path):
    res = pytest_in(tmp_path, conftest=NOT_ROOT, env={"VERIFIER_REQUIRE_ROOT": "1"})
    assert res.returncode == 1
    assert "3 errors" in res.stdout  # the fixture fails, so pytest counts errors
    assert "VERIFIER_REQUIRE_ROOT=1 forbids skipping" in res.stdout
