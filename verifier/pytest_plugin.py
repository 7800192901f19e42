"""pytest plugin: testbed and capture fixtures, IPv4/IPv6 parametrisation, kept captures, claim report.

Registered through the ``pytest11`` entry point, so installing the package is enough::

    @pytest.mark.claim("C3")
    def test_refused(testbed, capture, family):
        res = testbed.client.run([...connect to testbed.server.addr(family)...])
        expect(capture.trace()).connection(dport=5000).refused()

* ``family`` is ``4`` or ``6``; a test that asks for it runs once per family (ids ``ipv4``/``ipv6``).
  ``@pytest.mark.families(6)`` narrows that.
* ``testbed`` is a fresh testbed per test, ``routed`` unless ``@pytest.mark.topology("pair")``.
* ``capture`` records every interface of the testbed, live before the test body runs. The pcapng is
  written under ``--verifier-captures`` (default ``captures/runs``); it is kept when the test fails
  (the failure report names it) or with ``--keep-captures``, and removed otherwise; beside a kept
  one, ``NAME.client.pcapng`` holds the client's interface alone, for Wireshark.
  ``capture.trace()`` carries the client namespace's SYN sysctls, so a ``linux`` schedule check
  models the namespace under test.
* Without root, tests that need namespaces are skipped with the reason; with the environment variable
  ``VERIFIER_REQUIRE_ROOT=1`` (set by CI) they fail instead, so a green run proves they ran.

Loading the plugin has no side effects: a run that uses no testbed (unit tests, replay of saved
captures) imports neither the testbed package (pyroute2) nor Scapy, and leaves the signal handlers
alone. The first test that asks for ``testbed`` or ``root`` (the fixture of tests that build their
own testbeds) imports `netns.testbed` and turns SIGTERM and SIGHUP into KeyboardInterrupt, so that
teardown runs on Ctrl-C, SIGTERM and SIGHUP from then on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

#: With this environment variable set to 1 (CI sets it), a test that needs root fails instead of skipping.
REQUIRE_ROOT_ENV = "VERIFIER_REQUIRE_ROOT"
#: A test's capture paths (item stash): a pcapng registered here is kept with a failed test (or
#: with --keep-captures), named in the failure and claim reports, like the `capture` fixture's own.
capture_paths_key = pytest.StashKey[list]()
outcome_key = pytest.StashKey[dict]()  # phase -> passed, for keeping captures
testbed_key = pytest.StashKey[str]()  # the testbed's description, shown with a failure


class Evidence:
    """What a claim's test saw on this kernel, and whether the book's 4.4BSD model (the `stevens`
    profile) predicts the same. The test itself asserts the `linux` profile; this is the record."""

    def __init__(self) -> None:
        self.observed: str | None = None
        self.stevens: bool | None = None
        self.why = ""
        self.data: dict = {}

    def record(self, observed: str, *, stevens: bool, why: str = "") -> None:
        self.observed, self.stevens, self.why = observed, stevens, why

    def attach(self, name: str, value) -> None:
        """Plain data (JSON-able) for the report's pictures, e.g. the SYN times of each case of C2."""
        self.data[name] = value


evidence_key = pytest.StashKey[Evidence]()
#: The socket calls a test's programs reported, as (host, `SyscallEvent`) pairs: `record_calls` adds
#: them; the claim report draws them on the ladders of the test's capture.
calls_key = pytest.StashKey[list]()


def record_calls(node, host: str, calls) -> None:
    """Note the socket calls (`verifier.analysis.calls.SyscallEvent`s) a program on `host` reported
    during test `node` (``request.node``), for the ladder diagrams of the claim report."""
    node.stash.setdefault(calls_key, []).extend((host, c) for c in calls)


def pytest_addoption(parser):
    """The plugin's command-line options (group "TCP socket verifier" of ``pytest --help``)."""
    group = parser.getgroup("verifier", "TCP socket verifier")
    group.addoption("--verifier-captures", metavar="DIR", default=None,
                    help="where test captures are written (default: captures/runs under the rootdir)")
    group.addoption("--keep-captures", action="store_true", default=False,
                    help="keep the captures of passed tests too")
    group.addoption("--verifier-report", metavar="FILE", default=None,
                    help="write a claim-by-claim report (Markdown; a .json twin is written beside it)")
    group.addoption("--verifier-server", metavar="CMD", default=None,
                    help="your own server in place of ours where a check only needs a listener that accepts "
                         "(placeholders: {port}, {family} = 4 or 6, {addr} = the wildcard address), e.g. "
                         "'socat TCP{family}-LISTEN:{port},reuseaddr,fork EXEC:cat'")
    group.addoption("--verifier-kernel", metavar="KERNEL", default=None,
                    help="run the session on another Linux kernel, in a QEMU guest: 6.1 or 6.12 (Debian's, fetched "
                         "into .cache/kernels once) or the path of a vmlinuz/vmlinux (see README, Kernels under test)")
    group.addoption("--verifier-kernel-modules", metavar="DIR", default=None,
                    help="the modules folder (lib/modules/RELEASE) of a --verifier-kernel PATH (default: found "
                         "beside the image, then /lib/modules/RELEASE)")
    group.addoption("--verifier-kernel-deadline", metavar="S", type=float, default=900.0,
                    help="kill the guest of --verifier-kernel after this many seconds (default 900)")
    group.addoption("--verifier-kernel-cpus", metavar="N", type=int, default=1, choices=range(1, 9),
                    help="CPUs of the guest of --verifier-kernel (1-8, default 1: one emulated CPU runs faster than two on a shared host)")


def pytest_configure(config):
    """Register the plugin's markers."""
    config.addinivalue_line("markers", "families(*fams): run only for these IP families (4, 6)")
    config.addinivalue_line("markers", "topology(name): testbed topology for this test (pair, routed)")
    config.addinivalue_line("markers", "claim(id): the claim (C1..C14) this test gives evidence for")
    config.addinivalue_line("markers", "needs_root: the test needs root (network namespaces)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """With --verifier-kernel, the whole session runs in a guest of that kernel (verifier.kernels.session)."""
    if config.getoption("verifier_kernel", None) is None:
        return None
    from verifier.kernels.session import session_main

    return session_main(config, captures_dir(config))


def pytest_generate_tests(metafunc):
    """A test that takes the argument ``family`` runs once per IP family, with ``family`` = 4 and 6
    (test ids ``[ipv4]`` and ``[ipv6]``), or only for the families of ``@pytest.mark.families(...)``.
    The ``testbed`` of such a test has only that family's addresses (``testbed.server.addr(family)``);
    without ``family`` it is dual-stack."""
    if "family" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("families")
        fams = [int(f) for f in marker.args] if marker else [4, 6]
        metafunc.parametrize("family", fams, ids=[f"ipv{f}" for f in fams])


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` unless `condition` holds; fail instead under VERIFIER_REQUIRE_ROOT=1 (CI)."""
    if condition:
        return
    if os.environ.get(REQUIRE_ROOT_ENV) == "1":
        pytest.fail(f"{reason} [{REQUIRE_ROOT_ENV}=1 forbids skipping]", pytrace=False)
    pytest.skip(reason)


def require_root(what: str = "network namespaces") -> None:
    """Skip (or fail, under VERIFIER_REQUIRE_ROOT=1) when not root."""
    require(os.geteuid() == 0, f"needs root for {what}: run with sudo (e.g. sudo make test)")


def require_tool(name: str) -> str:
    """The path of a program that `make` setup installs; skip (or fail in CI) without it."""
    import shutil

    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (sudo make test installs it)")
    return path


def captures_dir(config) -> Path:
    """Where this run writes captures: ``--verifier-captures``, else ``captures/runs`` under the rootdir."""
    opt = config.getoption("verifier_captures")
    return Path(opt) if opt else Path(config.rootpath) / "captures" / "runs"


def _safe_name(nodeid: str) -> str:
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    module = Path(nodeid.split("::", 1)[0]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}.{name}").strip("_")[:150]


_teardown_guarded = False


def guard_teardown() -> None:
    """Make sure testbeds are torn down when the run is interrupted; called before the first testbed.

    Imports the testbed package (and so pyroute2) and turns SIGTERM and SIGHUP into KeyboardInterrupt
    (`netns.testbed.install_signal_handlers`), so fixtures' teardown and `finally` blocks run; Ctrl-C
    is a KeyboardInterrupt already. Done once per process, and only by runs that use testbeds.
    """
    global _teardown_guarded
    if _teardown_guarded:
        return
    from netns import testbed as testbed_mod

    testbed_mod.install_signal_handlers()
    _teardown_guarded = True


@pytest.fixture
def root():
    """For tests that need root but build their testbeds themselves (``with Testbed(...)``): skips
    without root (fails under VERIFIER_REQUIRE_ROOT=1) and guards teardown like ``testbed``."""
    require_root()
    guard_teardown()


@pytest.fixture
def testbed(request):
    """A fresh `netns.Testbed` for this test, torn down afterwards whatever happens: ``routed``
    (hosts ``client``, ``router``, ``server``) unless ``@pytest.mark.topology("pair")`` (``client``,
    ``server``); addresses of the ``family`` parameter's family if the test takes it, else both.
    Needs root: skipped without it (failed under VERIFIER_REQUIRE_ROOT=1)."""
    require_root()
    guard_teardown()
    from netns import Testbed

    marker = request.node.get_closest_marker("topology")
    topology = marker.args[0] if marker else "routed"
    fam = request.getfixturevalue("family") if "family" in request.fixturenames else None
    family = {4: "ipv4", 6: "ipv6", None: "dual"}[fam]
    bed = Testbed(topology, family)
    bed.up()
    request.node.stash[testbed_key] = bed.describe()
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def fault():
    """Apply faults that stay until the test ends: ``drop = fault(testbed.router, Drop(Syn(dport=5000)))``
    applies a fault (any kind of `verifier.faults`) to a host and returns it. Each is removed at
    teardown, also when the test fails; its ``report`` is filled in then."""
    from verifier.faults import inject

    active = []

    def apply(host, f):
        cm = inject(host, f)
        cm.__enter__()
        active.append(cm)
        return f

    yield apply
    errors = []
    for cm in reversed(active):
        try:
            cm.__exit__(None, None, None)
        except Exception as exc:  # remove the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def evidence(request) -> Evidence:
    """An `Evidence` for this test: ``evidence.record(observed, stevens=..., why=...)`` records what
    the kernel did and whether the book's model predicts it; both go to the claim report
    (``--verifier-report``)."""
    ev = request.node.stash[evidence_key] = Evidence()
    return ev


@pytest.fixture
def capture_path(request) -> Path:
    """A path under ``--verifier-captures`` for a capture of your own (``Capture(bed, capture_path)``),
    named after the test and registered in `capture_paths_key`, so that it is kept with a failed test
    (or with ``--keep-captures``) and named in the reports. The ``capture`` fixture uses one."""
    base = captures_dir(request.config)
    base.mkdir(parents=True, exist_ok=True)
    paths = request.node.stash.setdefault(capture_paths_key, [])
    path = base / f"{_safe_name(request.node.nodeid)}{'' if not paths else f'.{len(paths)}'}.pcapng"
    paths.append(path)
    return path


@pytest.fixture
def capture(testbed, capture_path, request):
    """A `verifier.capture.Capture` of every interface of ``testbed``, already live when the test body
    starts, stopped at teardown. ``capture.trace()`` stops it and returns the `Trace` (refusing a
    capture that lost packets), with the client namespace's SYN sysctls in ``trace.client_sysctls``.
    The pcapng is removed after a passed test unless ``--keep-captures``; a kept one gets the client's
    view beside it (``NAME.client.pcapng``: only the client's interface, which Wireshark's TCP
    analysis reads cleanly; see `Capture.write_views`)."""
    from verifier.capture import Capture

    cap = Capture(testbed, capture_path)
    cap.start()
    try:
        yield cap
    finally:
        cap.stop()
        if not _keep(request):
            capture_path.unlink(missing_ok=True)
        elif capture_path.exists():
            cap.write_views()


def _keep(request) -> bool:
    if request.config.getoption("keep_captures"):
        return True
    results = request.node.stash.get(outcome_key, {})
    return any(not passed for passed in results.values())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    item.stash.setdefault(outcome_key, {})[rep.when] = rep.passed or rep.skipped
    paths = item.stash.get(capture_paths_key, [])
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        marker = item.get_closest_marker("claim")
        if marker:
            rep.user_properties.append(("claim", marker.args[0]))
        family = getattr(item, "callspec", None) and item.callspec.params.get("family")
        if family:
            rep.user_properties.append(("family", family))
    if rep.when == "call":
        ev = item.stash.get(evidence_key, None)
        if ev is not None and ev.observed is not None:
            rep.user_properties += [("observed", ev.observed), ("stevens", ev.stevens), ("stevens_why", ev.why)]
        if ev is not None and ev.data:
            rep.user_properties.append(("data", ev.data))
        noted = item.stash.get(calls_key, [])
        if noted and paths and (rep.failed or item.config.getoption("keep_captures")):
            rep.user_properties.append(("calls", [_call_dict(host, c) for host, c in noted]))
        if paths:
            keep = rep.failed or item.config.getoption("keep_captures")
            if keep:
                rep.user_properties.append(("captures", [str(p) for p in paths]))
            if rep.failed:
                rep.sections.append(("captures kept", "\n".join(str(p) for p in paths)))
    if rep.when == "call" and rep.failed and call.excinfo is not None:
        drawn = _draw_offender(call.excinfo.value)
        if drawn:
            rep.sections.append(("ladder of the offending connection", drawn))
    if rep.failed and testbed_key in item.stash:
        rep.sections.append(("testbed", item.stash[testbed_key]))
    return rep


def _draw_offender(exc) -> str | None:
    """For a failed expectation on a connection of a capture file: write the connection's ladder
    (`verifier.draw`) beside the file as NAME.connectionID.html, the offending packet marked; the
    line naming it (or saying why it could not be written)."""
    from verifier.analysis.expect import ExpectationFailed

    if not isinstance(exc, ExpectationFailed) or exc.connection is None or exc.trace is None:
        return None
    source = exc.trace.source
    if not isinstance(source, str) or not os.path.isfile(source):
        return None
    from verifier.draw.ladder import ladder, render_svg
    from verifier.draw.page import capture_page

    conn = exc.connection
    base = source[: -len(".pcapng")] if source.endswith(".pcapng") else source.rsplit(".", 1)[0]
    out = Path(f"{base}.connection{conn.id}.html")
    lad = ladder(conn, interfaces=exc.trace.interfaces)
    mark = exc.event.packet_index if exc.event is not None else None
    message = str(exc).splitlines()
    page = capture_page(message[0] if message else "expectation failed", message[1:2] + [f"pcap: {source}"],
                        [{"id": conn.id, "title": lad.title, "svg": render_svg(lad, mark_frame=mark),
                          "href": os.path.basename(source), "link_text": os.path.basename(source)}])
    try:
        out.write_text(page)
    except OSError as err:
        return f"could not write {out}: {err.strerror or err}"
    return f"ladder: {out} (open it in a browser)"


def pytest_runtest_logreport(report):
    # Runs on the controller under xdist too, so the report sees every worker's results.
    if report.when != "call" and not (report.when == "setup" and not report.passed):
        return
    props = dict(report.user_properties)
    _results.append({
        "nodeid": report.nodeid, "outcome": report.outcome, "claim": props.get("claim"),
        "family": props.get("family"), "captures": props.get("captures", []),
        "observed": props.get("observed"), "stevens": props.get("stevens"), "stevens_why": props.get("stevens_why", ""),
        "duration_s": round(report.duration, 4), "data": props.get("data", {}), "calls": props.get("calls", []),
        "message": _failure_line(report) if report.failed else "",
    })


def _call_dict(host: str, c) -> dict:
    """A socket call as its report line has it (`verifier.analysis.calls.parse_line` reads it back), and its host."""
    return {"host": host, "pid": c.pid, "call": c.call, "args": dict(c.args), "ret": c.ret, "errno": c.errno,
            "t_enter_ns": c.t_enter_ns, "t_return_ns": c.t_return_ns, **dict(c.extra)}


def _failure_line(report) -> str:
    """The first line of what went wrong (for an ExpectationFailed: its title line)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


_results: list[dict] = []


def pytest_sessionfinish(session, exitstatus):
    out = session.config.getoption("verifier_report")
    if not out or hasattr(session.config, "workerinput"):
        return
    from verifier.report import write_report

    write_report(Path(out), _results)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    out = config.getoption("verifier_report")
    if out and not hasattr(config, "workerinput"):
        terminalreporter.write_sep("-", f"claim report written to {out}")
