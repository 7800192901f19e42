"""docs/reference.md: up to date with the code, complete, and its examples (and the README's) run.

The reference is generated (docs/make_reference.py). Being up to date is checked by regenerating it;
being complete is checked independently of the generator: what pytest itself reports of the plugin
(`--fixtures`, `--markers`, `--help` with and without it), the expectation classes' attributes, the
fault registry and `verifier._EXPORTS` must each appear in the file. The examples that need no root
run here; those that need root run in tests/testbed/test_examples.py.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys

import pytest

import verifier
from verifier.analysis import conditions, expect as expect_mod
from verifier.faults import FAULT_KINDS

from .. import doc_examples

ROOT = doc_examples.ROOT
REFERENCE = ROOT / "docs" / "reference.md"


def generator():
    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "docs" / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text()


def section(text: str, heading: str) -> str:
    """The text from a heading line to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, start + len(heading) + 1)
    return text[start:end.start() if end else len(text)]


def pytest_output(tmp_path, *args) -> str:
    """What `pytest ARGS` prints in an empty folder (the plugin is loaded from its entry point)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_reference_is_what_the_generator_writes(reference):
    fresh = generator().render()
    assert fresh == reference, "docs/reference.md is out of date: run .venv/bin/python docs/make_reference.py"


def test_the_generator_check_mode_reports_a_stale_file(tmp_path, monkeypatch):
    gen = generator()
    stale = tmp_path / "reference.md"
    stale.write_text("old\n")
    monkeypatch.setattr(gen, "REFERENCE", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0


# --------------------------------------------------------------------------------------------------
# complete: each list taken from somewhere else than the generator

def test_every_fixture_of_the_plugin_is_documented(tmp_path, reference):
    out = pytest_output(tmp_path, "--fixtures")
    block = out.split("fixtures defined from verifier.pytest_plugin", 1)[1].split("\n---", 1)[0]
    names = re.findall(r"^(\w+) -- ", block, re.M)
    assert {"testbed", "capture", "fault", "root"} <= set(names), names  # the listing was read
    fixtures = section(reference, "### Fixtures")
    missing = [n for n in names + ["family"] if f"- `{n}`" not in fixtures]
    assert not missing, f"fixtures missing from docs/reference.md: {missing}"


def test_every_marker_of_the_plugin_is_documented(tmp_path, reference):
    with_plugin = set(re.findall(r"^@pytest\.mark\.(\w+)", pytest_output(tmp_path, "--markers"), re.M))
    without = set(re.findall(r"^@pytest\.mark\.(\w+)", pytest_output(tmp_path, "--markers", "-p", "no:verifier"),
                             re.M))
    ours = with_plugin - without
    assert {"families", "topology"} <= ours, ours
    markers = section(reference, "### Markers")
    missing = [m for m in sorted(ours) if f"`@pytest.mark.{m}" not in markers]
    assert not missing, f"markers missing from docs/reference.md: {missing}"


def test_every_option_of_the_plugin_is_documented(tmp_path, reference):
    flags = lambda text: set(re.findall(r"^\s+(--[\w-]+)", text, re.M))  # noqa: E731
    ours = flags(pytest_output(tmp_path, "--help")) - flags(pytest_output(tmp_path, "--help", "-p", "no:verifier"))
    assert "--keep-captures" in ours, ours
    options = section(reference, "### Options")
    missing = [o for o in sorted(ours) if f"`{o}`" not in options]
    assert not missing, f"plugin options missing from docs/reference.md: {missing}"


def test_the_plugin_environment_variable_and_helpers_are_documented(reference):
    from verifier import pytest_plugin

    plugin = section(reference, "## The pytest plugin")
    assert f"`{pytest_plugin.REQUIRE_ROOT_ENV}=1`" in plugin
    for name, value in vars(pytest_plugin).items():
        public = not name.startswith(("_", "pytest_")) and getattr(value, "__module__", None) == pytest_plugin.__name__
        if public and (inspect.isfunction(value) or inspect.isclass(value)):
            assert f"`{name}" in plugin, f"verifier.pytest_plugin.{name} is missing from docs/reference.md"


@pytest.mark.parametrize("cls, prefix", [(expect_mod.TraceExpectation, "expect(trace)"),
                                         (expect_mod.ConnectionExpectation, "conn")])
def test_every_expectation_method_is_documented(reference, cls, prefix):
    names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
    assert names, cls
    part = section(reference, "## Expectations: `expect(trace)`")
    missing = [n for n in names if f"`{prefix}.{n}(" not in part]
    assert not missing, f"{cls.__name__} methods missing from docs/reference.md: {missing}"
    for n in names:  # each with what it checks
        line = next(ln for ln in part.splitlines() if f"`{prefix}.{n}(" in ln)
        assert re.search(r"`: \S", line), f"{prefix}.{n} has no description in docs/reference.md"


def test_the_new_checks_are_described(reference):
    part = section(reference, "### On one connection: `expect(trace).connection(...)`")
    for name in ("closed_first_by", "icmp", "syn_schedule", "fin_from", "handshake", "refused", "syn_count",
                 "reset_by", "no_rst"):
        assert f"`conn.{name}(" in part, name


def test_the_expect_language_and_its_functions_are_documented(reference):
    part = section(reference, "## Conditions: the `--expect` language on a Trace")
    assert conditions.EXPECT_HELP.rstrip("\n") in part
    for name in conditions.__all__:
        if name != "EXPECT_HELP":
            assert f"`{name}" in part, f"verifier.analysis.conditions.{name} is missing from docs/reference.md"


def test_every_fault_kind_and_option_is_documented(reference):
    assert len(FAULT_KINDS) >= 8, FAULT_KINDS  # the registry was filled
    faults = section(reference, "## Faults")
    for kind, cls in FAULT_KINDS.items():
        heading = next((ln for ln in faults.splitlines() if ln.startswith(f"### `{kind}`:")), None)
        assert heading is not None and cls.__name__ in heading, f"fault {kind} ({cls.__name__}) is not documented"
        part = section(faults, heading)
        for o in cls.options:
            row = next((ln for ln in part.splitlines() if ln.startswith(f"| `{o.name}`")), None)
            assert row is not None, f"option {o.name} of fault {kind} is missing from docs/reference.md"
            if o.flag:
                assert f"`{o.flag_name}`" in row, (kind, o.name)


def test_every_public_name_of_verifier_is_documented(reference):
    part = section(reference, "## Public names of `verifier`")
    missing = [n for n in verifier._EXPORTS if f"| `{n}` | `{verifier._EXPORTS[n]}` |" not in part]
    assert not missing, f"public names missing from docs/reference.md: {missing}"


def test_every_icmp_name_is_in_the_table(reference):
    from verifier.wire.names import ICMP_ALIASES, ICMP_KINDS

    part = section(reference, "## ICMP error names")
    for name in ICMP_KINDS:
        assert f"| `{name}` |" in part, name
    for alias in ICMP_ALIASES:
        assert f"`{alias}`" in part, alias


# --------------------------------------------------------------------------------------------------
# examples

def test_every_example_block_is_accounted_for():
    found = doc_examples.all_examples()
    docs = {ex.document for ex in found}
    assert docs == set(doc_examples.DOCUMENTS), docs
    illustrative = [ex for ex in found if ex.illustrative]
    assert len(illustrative) <= 4, [ex.id for ex in illustrative]  # keep them few
    assert all(ex.illustrative.strip() for ex in illustrative)
    # every unmarked-illustrative entry still matches a block (no stale excuses)
    stale = [key for key in doc_examples.UNMARKED_ILLUSTRATIVE
             if not any(ex.document == key[0] and ex.first_line.startswith(key[1]) for ex in illustrative)]
    assert not stale, stale
    # a file= block is run by a later block of its document that names it
    for ex in found:
        if ex.file:
            later = [o for o in found if o.document == ex.document and o.line > ex.line and ex.file in o.code
                     and o.illustrative is None]
            assert later, f"{ex.id}: {ex.file} is saved but no later example runs it"
    assert doc_examples.runnable(root=False) and doc_examples.runnable(root=True)


def test_markers_are_read(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- example: root file=t.py -->\n```python\ndef test_x(): pass\n```\n\n"
                   "<!-- example: illustrative: a fragment -->\n```sh\nfoo ...\n```\n"
                   "```sh\nsudo true\n```\n```sh\ntrue   # fails: exit 3\n```\n```text\nnot code\n```\n")
    monkeypatch.setattr(doc_examples, "ROOT", tmp_path)
    a, b, c, d = doc_examples.examples("doc.md")
    assert (a.root, a.file, a.illustrative) == (True, "t.py", None)
    assert b.illustrative == "a fragment"
    assert c.root and not d.root and d.earlier_files == {"t.py": "def test_x(): pass\n"}
    assert doc_examples.expected_status(doc_examples.commands(d.code)[0]) == 3
    bad = tmp_path / "bad.md"
    bad.write_text("<!-- example: rooot -->\n```sh\ntrue\n```\n")
    with pytest.raises(ValueError, match="unknown example marker word 'rooot'"):
        doc_examples.examples("bad.md")


@pytest.mark.parametrize("example", doc_examples.runnable(root=False), ids=lambda ex: ex.id)
def test_example_runs(example, tmp_path):
    doc_examples.run(example, tmp_path)
