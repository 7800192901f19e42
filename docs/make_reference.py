"""Write docs/reference.md, the reference a test author needs, from the code's docstrings and registries.

    .venv/bin/python docs/make_reference.py            # (re)write docs/reference.md
    .venv/bin/python docs/make_reference.py --check    # exit 1 if docs/reference.md is out of date

Everything listed comes from the code, so nothing can be forgotten: the plugin's fixtures (the
`FixtureFunctionDefinition`s of `verifier.pytest_plugin`), markers (what its `pytest_configure`
registers), options (what its `pytest_addoption` adds), the methods of `expect(trace)` and of a
connection expectation, the `--expect` grammar (`EXPECT_HELP`), every fault kind of the registry
(`verifier.faults.FAULT_KINDS`) with its `Option`s, the ICMP names of `verifier.wire.names`, and the
public names of `verifier` (`_EXPORTS`). Only the short introductions and the examples
(`docs/reference_examples.md`, which the tests run) are written by hand.

`tests/unit/test_reference.py` fails when the file differs from what this script writes, and checks
independently that every name above appears in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
EXAMPLES = ROOT / "docs" / "reference_examples.md"


# --------------------------------------------------------------------------------------------------
# docstrings

def doc_text(obj) -> str:
    """The docstring as Markdown prose: its code snippets (blocks indented by 4 or more, `>>>`
    sessions) are left out (the runnable examples are at the end of the reference), reST's double
    backticks become single ones."""
    doc = inspect.getdoc(obj) or ""
    out: list[str] = []
    in_code = False
    prev_blank = True
    for line in doc.splitlines():
        stripped = line.strip()
        indented = len(line) - len(line.lstrip()) >= 4
        if stripped.startswith(">>>") or (indented and (prev_blank or in_code)):
            if not in_code:  # the sentence that introduced the snippet ends here
                last = next((k for k in range(len(out) - 1, -1, -1) if out[k].strip()), None)
                if last is not None and out[last].endswith(":"):
                    out[last] = out[last][:-1] + "."
            in_code = True
            continue
        if in_code and (not stripped or stripped.startswith("...")):
            continue
        in_code = False
        out.append(line.rstrip())
        prev_blank = not stripped
    text = "\n".join(out).strip()
    text = re.sub(r"::$", ":", text, flags=re.M)
    return text.replace("``", "`")


def summary(obj) -> str:
    """The first paragraph of the docstring, on one line."""
    text = doc_text(obj).split("\n\n")[0]
    return " ".join(text.split())


def signature(name: str, fn) -> str:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts, star_done = [], False
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        if p.kind == p.KEYWORD_ONLY and not star_done:
            parts.append("*")
        if p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY):
            star_done = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            ann = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
            text += ": " + ann.replace('"', "").replace("'", "")
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
        parts.append(text)
    return f"{name}({', '.join(parts)})"


def members(cls) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself, in source order."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            out.append((name, value))
    return out


def member_entry(cls_label: str, name: str, value) -> str:
    if isinstance(value, property):
        head = f"`{cls_label}.{name}` (property)"
    else:
        head = f"`{cls_label}.{signature(name, value)}`"
    text = doc_text(value)
    return f"- {head}" + (f": {indent_more(text)}" if text else "")


def indent_more(text: str) -> str:
    """Continuation lines of a list item, indented under it."""
    return "\n".join([text.splitlines()[0]] + ["  " + ln if ln else "" for ln in text.splitlines()[1:]])


def class_section(title: str, cls, label: str | None = None, *, constructor: bool = True) -> list[str]:
    label = label or cls.__name__
    lines = [f"### {title}", ""]
    if constructor:
        lines += [f"`{signature(cls.__name__, cls)}`", ""]
    text = doc_text(cls)
    if text:
        lines += [text, ""]
    entries = [member_entry(label, n, v) for n, v in members(cls)]
    if entries:
        lines += entries + [""]
    return lines


def function_entry(module_label: str, fn) -> str:
    text = doc_text(fn)
    return f"- `{signature(fn.__name__, fn)}`" + (f": {indent_more(text)}" if text else "") + \
        (f" (`{module_label}`)" if module_label else "")


def cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --------------------------------------------------------------------------------------------------
# the pytest plugin

class _Recorder:
    """Stands in for pytest's parser and config to read what the plugin registers (no pytest run)."""

    def __init__(self) -> None:
        self.options: list[dict] = []
        self.markers: list[str] = []

    # parser
    def getgroup(self, *args, **kw):
        return self

    def addoption(self, *names, **kw):
        self.options.append({"names": names, **kw})

    # config
    def addinivalue_line(self, name, line):
        if name == "markers":
            self.markers.append(line)


def plugin_registrations():
    """(options, markers) as the plugin registers them."""
    from verifier import pytest_plugin

    rec = _Recorder()
    pytest_plugin.pytest_addoption(rec)
    pytest_plugin.pytest_configure(rec)
    return rec.options, rec.markers


def plugin_fixtures() -> list[tuple[str, object]]:
    """(name, the fixture function) of every fixture the plugin defines, in source order."""
    from _pytest.fixtures import FixtureFunctionDefinition

    from verifier import pytest_plugin

    found = []
    for name, value in vars(pytest_plugin).items():
        if isinstance(value, FixtureFunctionDefinition):
            fn = value._get_wrapped_function()
            found.append((name, fn))
    return sorted(found, key=lambda item: item[1].__code__.co_firstlineno)


def plugin_helpers() -> list[object]:
    """The plugin's public functions and classes that are neither hooks nor fixtures."""
    from verifier import pytest_plugin

    fixtures = {n for n, _ in plugin_fixtures()}
    out = []
    for name, value in vars(pytest_plugin).items():
        if name.startswith(("_", "pytest_")) or name in fixtures:
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == pytest_plugin.__name__:
            out.append(value)
    return out


def plugin_section() -> list[str]:
    from verifier import pytest_plugin

    options, markers = plugin_registrations()
    lines = ["## The pytest plugin", "",
             "`verifier.pytest_plugin`, registered through the `pytest11` entry point: installing the package "
             "is enough. A test asks for fixtures by name; everything that needs root skips without it (fails "
             f"instead under `{pytest_plugin.REQUIRE_ROOT_ENV}=1`).", "",
             "### Fixtures", ""]
    lines.append(f"- `family`: {indent_more(doc_text(pytest_plugin.pytest_generate_tests))}")
    for name, fn in plugin_fixtures():
        params = [p for p in inspect.signature(fn).parameters if p != "request"]
        uses = f" (uses {', '.join(f'`{p}`' for p in params)})" if params else ""
        lines.append(f"- `{name}`{uses}: {indent_more(doc_text(fn))}")
    lines += ["", "### Markers", ""]
    for line in markers:
        head, _, text = line.partition(":")
        lines.append(f"- `@pytest.mark.{head.strip()}`: {text.strip()}")
    lines += ["", "### Options", "", "| option | value | default | what |", "|---|---|---|---|"]
    for opt in options:
        flag = ", ".join(opt["names"])
        value = opt.get("metavar") or ("(flag)" if opt.get("action") == "store_true" else "")
        default = opt.get("default")
        lines.append(f"| `{flag}` | {cell(value)} | {cell('' if default in (None, False) else default)} | "
                     f"{cell(opt.get('help', ''))} |")
    lines += ["", "### Environment", "",
              f"- `{pytest_plugin.REQUIRE_ROOT_ENV}=1`: {module_comment(pytest_plugin, 'REQUIRE_ROOT_ENV')}", "",
              "### Helpers for tests and conftest files", ""]
    for obj in plugin_helpers():
        if inspect.isclass(obj):
            lines.append(f"- `{obj.__name__}`: {indent_more(doc_text(obj))}")
            lines += ["  " + member_entry(obj.__name__, n, v) for n, v in members(obj)]
        else:
            lines.append(function_entry("", obj))
    lines.append(f"- `capture_paths_key`: {module_comment(pytest_plugin, 'capture_paths_key')}")
    lines.append("")
    return lines


def module_comment(module, name: str) -> str:
    """The `#:` comment above a module-level name (its documentation), on one line."""
    source = Path(module.__file__).read_text().splitlines()
    for i, line in enumerate(source):
        if line.startswith(f"{name} = ") or line.startswith(f"{name}: "):
            doc = []
            j = i - 1
            while j >= 0 and source[j].startswith("#:"):
                doc.insert(0, source[j][2:].strip())
                j -= 1
            if not doc:
                raise LookupError(f"{module.__name__}.{name} has no #: comment")
            return " ".join(doc)
    raise LookupError(f"{module.__name__} has no {name}")


# --------------------------------------------------------------------------------------------------
# testbeds, captures, traces

def testbed_section() -> list[str]:
    from netns.host import Host
    from netns.process import Process, Result
    from netns.testbed import Testbed

    lines = ["## Testbeds and hosts", "",
             "`testbed.client`, `testbed.router` (routed topology) and `testbed.server` are `Host`s "
             "(also `testbed[\"client\"]`).", ""]
    lines += class_section("`Testbed`", Testbed)
    lines += class_section("`Host`", Host, "host", constructor=False)
    lines += class_section("`Process` (what `host.start()` returns)", Process, "proc", constructor=False)
    lines += ["### `Result` (what `host.run()` and `proc.wait()` return)", "", doc_text(Result), ""]
    lines += [f"- `{f.name}`" for f in dataclasses.fields(Result)]
    lines += [member_entry("result", n, v) for n, v in members(Result)] + [""]
    return lines


def capture_section() -> list[str]:
    from verifier.analysis.trace import Connection, Event, Trace, load_trace
    from verifier.capture import Capture

    lines = ["## Captures and traces", ""]
    lines += class_section("`Capture`", Capture, "capture")
    lines += ["### `load_trace`", "", function_entry("", load_trace), ""]
    lines += class_section("`Trace`", Trace, "trace", constructor=False)
    lines += ["Attributes: " + ", ".join(f"`{a}`" for a in vars(Trace()) if not a.startswith("_")) + ".", ""]
    client_sysctls = _attribute_comment(Trace, "client_sysctls")
    if client_sysctls:
        lines += [f"`trace.client_sysctls`: {client_sysctls}", ""]
    lines += class_section("`Connection`", Connection, "conn", constructor=False)
    from verifier.analysis.grouper import Attempt

    lines += ["What a `Connection` is as an attempt (`verifier.analysis.grouper.Attempt`):", "", doc_text(Attempt), ""]
    lines += ["### `Event`", "", doc_text(Event), "",
              "Fields: " + ", ".join(f"`{f.name}`" for f in dataclasses.fields(Event)) + "; `from_client` (property).",
              ""]
    return lines


def _attribute_comment(cls, name: str) -> str:
    """The `#:` comment above `self.<name> = ...` in a class's source."""
    source = inspect.getsource(cls).splitlines()
    for i, line in enumerate(source):
        if line.strip().startswith(f"self.{name}"):
            doc = []
            j = i - 1
            while j >= 0 and source[j].strip().startswith("#:"):
                doc.insert(0, source[j].strip()[2:].strip())
                j -= 1
            return " ".join(doc)
    return ""


# --------------------------------------------------------------------------------------------------
# expectations, conditions, schedules, ICMP names

def expect_section() -> list[str]:
    from verifier.analysis import expect as mod

    lines = ["## Expectations: `expect(trace)`", "",
             f"`from verifier import expect` — {summary(mod.expect)} Every check returns the expectation, so "
             "checks chain; a failed one raises `ExpectationFailed` with a report (expected exchange, captured "
             "ladder, offending packet, pcap).", "",
             "### On the whole trace: `expect(trace)`", ""]
    lines += [member_entry("expect(trace)", n, v) for n, v in members(mod.TraceExpectation)] + [""]
    lines += ["### On one connection: `expect(trace).connection(...)`", "", doc_text(mod.ConnectionExpectation), ""]
    lines += [member_entry("conn", n, v) for n, v in members(mod.ConnectionExpectation)] + [""]
    lines += ["### `ExpectationFailed`", "", doc_text(mod.ExpectationFailed), ""]
    return lines


def conditions_section() -> list[str]:
    from verifier.analysis import conditions as mod

    lines = ["## Conditions: the `--expect` language on a Trace", "",
             "The sentences of `verifier replay FILE --expect COND`, checked from Python on a `Trace` "
             "(`capture.trace()`, `load_trace(path)`), a capture path, or attempts:", ""]
    for fn in (mod.check, mod.assert_expectations, mod.parse_condition, mod.evaluate, mod.judge_syns,
               mod.describe_attempt, mod.endpoint_text):
        lines.append(function_entry("", fn))
    for cls in (mod.Verdict, mod.Condition, mod.Evaluation, mod.ExpectSyntaxError):
        lines.append(f"- `{cls.__name__}`: {indent_more(doc_text(cls))}")
    lines += ["", "### Grammar (`EXPECT_HELP`)", "", "```text", mod.EXPECT_HELP.rstrip("\n"), "```", ""]
    return lines


def schedules_section() -> list[str]:
    from verifier.analysis import schedules as mod

    lines = ["## SYN schedules", "", doc_text(mod).split("\n\nPure:")[0], ""]
    lines += class_section("`LinuxProfile`", mod.LinuxProfile)
    lines += class_section("`StevensProfile`", mod.StevensProfile)
    lines += class_section("`SynSchedule`", mod.SynSchedule)
    lines += class_section("`Tolerance`", mod.Tolerance)
    lines += [f"- `DEFAULT_TOLERANCE` = `{mod.DEFAULT_TOLERANCE!r}`",
              f"- `LINUX_SYSCTLS` = `{mod.LINUX_SYSCTLS!r}`",
              f"- `LINUX_DEFAULTS` = `{mod.LINUX_DEFAULTS!r}`", ""]
    return lines


def icmp_section() -> list[str]:
    from verifier.wire import names

    lines = ["## ICMP error names", "",
             "The same name for both families (`conn.icmp(\"host\")`, `--expect \"... unreachable host\"`): "
             "`verifier.wire.names.ICMP_KINDS`.", "",
             "| name | ICMP (IPv4) | ICMPv6 | aliases |", "|---|---|---|---|"]
    aliases: dict[str, list[str]] = {}
    for alias, name in names.ICMP_ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    for name, by in names.ICMP_KINDS.items():
        cols = []
        for fam in (4, 6):
            if fam in by:
                t, c = by[fam]
                cols.append(f"type {t} code {c} ({names.icmp_description(fam, t, c)})")
            else:
                cols.append("—")
        lines.append(f"| `{name}` | {cols[0]} | {cols[1]} | {', '.join(f'`{a}`' for a in aliases.get(name, []))} |")
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------------------
# faults

def fault_kinds() -> list[tuple[str, type]]:
    from verifier.faults import FAULT_KINDS

    return list(FAULT_KINDS.items())


def fault_prose(cls) -> str:
    """The kind's own docstring, without the options list the registry appends to it."""
    doc = inspect.getdoc(cls) or ""
    appended = cls.options_doc().splitlines()[0]  # "Command line (`from_cli`, ...):", added at registration
    if appended in doc:
        doc = doc[:doc.rfind(appended)].strip()

    class _Doc:
        __doc__ = doc

    return doc_text(_Doc)


def option_row(cls, o) -> str:
    default = cls.option_default(o)
    if o.type in (str, int, float, bool):
        kind = o.type.__name__
    else:  # a converting function: say what it takes
        kind = {"one": "address or host", "many": "addresses or host"}.get(getattr(o, "address", None) or "", "text")
    bits = [b for b in (o.limits(),) if b]
    if o.required:
        bits.append("required")
    flag = f"`{o.flag_name}`" if o.flag else "(`--duration`)"
    name = f"`{o.name}`" + (" (match)" if o.match else "")
    return (f"| {name} | {flag} | {cell(kind)} | {cell('; '.join(bits))} | "
            f"{cell('' if default in (None, '', False) else default)} | {cell(o.help)} |")


def faults_section() -> list[str]:
    from verifier import faults
    from verifier.faults import base

    lines = ["## Faults", "", summary(faults), "",
             "Apply one with the `fault` fixture (removed at teardown), `inject(host, fault)` or "
             "`host.inject(fault)` (a `with` block); `fault.report` is filled in when it is removed. "
             "Faults act only inside testbed namespaces.", ""]
    for fn in (base.inject, base.from_cli, base.Syn):
        lines.append(function_entry("", fn))
    lines += ["", *class_section("`Match`", base.Match)]
    lines += class_section("`Fault` (the base of every kind)", base.Fault, "fault", constructor=False)
    lines += ["Every option below is a keyword argument of the constructor (a `Match` field when marked "
              "(match): give those in `match=`) and a flag of `verifier inject KIND`; `from_cli(**options)` "
              "takes them as plain values. The constructors check the same bounds.", ""]
    for kind, cls in fault_kinds():
        lines += [f"### `{kind}`: `{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}`", "",
                  f"`{signature(cls.__name__, cls)}`", "", fault_prose(cls), "",
                  f"Options (`verifier inject {kind} --help`):", "",
                  "| option | flag | type | bounds | default | what |", "|---|---|---|---|---|---|"]
        lines += [option_row(cls, o) for o in cls.options]
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------------------
# verifier's public names, examples, the whole document

def public_names_section() -> list[str]:
    import importlib

    import verifier

    lines = ["## Public names of `verifier`", "",
             "`from verifier import NAME` (each imported on first use: `import verifier` loads neither pyroute2 "
             "nor Scapy).", "", "| name | defined in | what |", "|---|---|---|"]
    for name in sorted(verifier._EXPORTS, key=str.lower):
        module = verifier._EXPORTS[name]
        value = getattr(importlib.import_module(module), name)
        what = summary(value) if (inspect.isclass(value) or inspect.isfunction(value)) else f"`{value!r}`"
        lines.append(f"| `{name}` | `{module}` | {cell(what)} |")
    lines.append("")
    return lines


def render() -> str:
    parts = [
        "# Reference for test authors", "",
        "<!-- Generated by docs/make_reference.py from the docstrings and registries: do not edit by hand; run "
        "`.venv/bin/python docs/make_reference.py`. tests/unit/test_reference.py fails when it is stale. -->", "",
        "What a test needs: the pytest plugin, testbeds and hosts, captures and traces, the expectations, the "
        "`--expect` language, the SYN-schedule models, the ICMP names, the faults and their options, the public "
        "names of `verifier`, and examples that the test suite runs. Code snippets in docstrings are left out "
        "here; the [examples](#examples) at the end run as tests.", "",
    ]
    sections = [plugin_section(), testbed_section(), capture_section(), expect_section(), conditions_section(),
                schedules_section(), icmp_section(), faults_section(), public_names_section()]
    toc = []
    for sec in sections:
        title = sec[0][3:]
        toc.append(f"- [{title.replace('`', '')}](#{anchor(title)})")
    toc.append("- [Examples](#examples)")
    parts += ["## Contents", "", *toc, ""]
    for sec in sections:
        parts += sec
    parts += [EXAMPLES.read_text().rstrip("\n"), ""]
    text = "\n".join(parts)
    return re.sub(r"\n{3,}", "\n\n", text)


def anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    text = title.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write docs/reference.md from the docstrings")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not REFERENCE.exists() or REFERENCE.read_text() != text:
            print(f"{REFERENCE.relative_to(ROOT)} is out of date: run .venv/bin/python docs/make_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
