"""The public names of `verifier`, and what importing the package and loading the plugin cost.

`import verifier` and a pytest run that builds no testbed must load neither pyroute2 nor Scapy, and
the plugin must leave the signal handlers alone until a test asks for a testbed. Both are checked in
a fresh interpreter, since this one may have loaded anything already.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

import verifier

HEAVY = ("pyroute2", "scapy", "netns.testbed")


def run_python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, **kw)


def test_every_public_name_imports_from_the_module_the_table_names():
    assert verifier.__all__ == sorted(verifier._EXPORTS) and len(verifier.__all__) == len(set(verifier.__all__))
    for name in verifier.__all__:
        value = getattr(verifier, name)
        module = importlib.import_module(verifier._EXPORTS[name])
        assert getattr(module, name) is value, name
        if inspect.isclass(value) or inspect.isfunction(value):
            # The table names the module (or the package) that defines a thing, not another module
            # that happens to re-export it.
            home = verifier._EXPORTS[name]
            assert value.__module__ == home or value.__module__.startswith(home + "."), (name, value.__module__)
    assert set(verifier.__all__) <= set(dir(verifier))


def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from verifier import *", namespace)
    assert set(verifier.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        verifier.Nonesuch  # noqa: B018
    with pytest.raises(ImportError):
        exec("from verifier import Nonesuch", {})


def test_import_verifier_loads_neither_pyroute2_nor_scapy():
    res = run_python(textwrap.dedent(f"""
        import json, sys
        import verifier
        before = [m for m in {HEAVY!r} if m in sys.modules]
        verifier.Trace, verifier.expect, verifier.timeline, verifier.SynSchedule, verifier.load_trace
        analysis = [m for m in {HEAVY!r} if m in sys.modules]
        verifier.Testbed
        print(json.dumps([before, analysis, "pyroute2" in sys.modules]))
    """))
    assert res.returncode == 0, res.stderr
    before, analysis, testbed_loads_pyroute2 = json.loads(res.stdout)
    assert before == [], f"import verifier loaded {before}"
    assert analysis == [], f"the analysis names loaded {analysis}"
    assert testbed_loads_pyroute2, "verifier.Testbed did not load the testbed package (is the check blind?)"


INNER_CONFTEST = '''
import json, os, signal, sys
from pathlib import Path

def pytest_unconfigure(config):
    Path(os.environ["VERIFIER_API_OUT"]).write_text(json.dumps({
        "plugin": config.pluginmanager.has_plugin("verifier"),
        "loaded": [m for m in HEAVY if m in sys.modules],
        "handlers": [s.name for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_DFL],
    }))
'''

INNER_UNIT_TESTS = '''
def test_plain():
    assert sum([1, 2]) == 3

def test_with_a_plugin_fixture_that_needs_no_testbed(evidence, capture_path, family):
    evidence.record("nothing", stevens=True)
    assert family in (4, 6) and capture_path.suffix == ".pcapng"
'''

INNER_ROOT_TEST = '''
def test_builds_its_own_testbed(root):
    pass
'''


def run_inner_pytest(tmp_path, tests: str) -> dict:
    (tmp_path / "conftest.py").write_text(f"HEAVY = {HEAVY!r}\n" + INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(tests)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "VERIFIER_REQUIRE_ROOT"}
    env["VERIFIER_API_OUT"] = str(out)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"--rootdir={tmp_path}", f"--verifier-captures={tmp_path / 'captures'}",
                          str(tmp_path / "test_inner.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(out.read_text())


def test_a_run_without_testbeds_loads_no_testbed_and_installs_no_handler(tmp_path):
    seen = run_inner_pytest(tmp_path, INNER_UNIT_TESTS)
    assert seen["plugin"], "the verifier plugin was not loaded: this check would prove nothing"
    assert seen["loaded"] == [], f"a run without testbeds loaded {seen['loaded']}"
    assert seen["handlers"] == [], f"a run without testbeds installed handlers for {seen['handlers']}"


@pytest.mark.skipif(os.geteuid() != 0, reason="the root fixture skips without root: nothing would be guarded")
def test_the_first_test_that_builds_testbeds_guards_their_teardown(tmp_path):
    seen = run_inner_pytest(tmp_path, INNER_ROOT_TEST)
    assert seen["plugin"] and "netns.testbed" in seen["loaded"]
    assert seen["handlers"] == ["SIGTERM", "SIGHUP"]
