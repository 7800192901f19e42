"""The examples of README.md and docs/reference.md, found and run as they are written.

Every fenced ```python and ```sh block of those documents is an example that runs in a test, unless
an HTML comment right above it says otherwise:

    <!-- example: root -->                  needs root: run by tests/testbed/test_examples.py
    <!-- example: root file=my_test.py -->  saved as my_test.py for a later block of the same document
                                            to run (that block must name it)
    <!-- example: illustrative: WHY -->     not run, and why (keep these few)

An sh block that says `sudo` needs root too (the documents write `sudo` where root is needed). The
others run without root, in tests/unit/test_reference.py.

How a block runs: in a scratch directory that mirrors the project (a symbolic link to each of its
top-level entries, so `captures/golden/...`, `tests/...` and `.venv/bin/...` resolve) plus the files
of the document's earlier `file=` blocks. A python block runs with the venv's python (with pytest if it
defines `test_` functions); an sh block runs command by command in bash, with `.venv/bin` first on
PATH and `sudo` a no-op for root. Each must exit 0, or with the status its comment states ("# fails:
exit 1").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/reference.md")
LANGUAGES = ("python", "sh")
TIMEOUT_S = 300

#: Blocks of README.md sections that the documentation task does not own, so they cannot carry a
#: marker yet: (document, how their first line starts) -> why each is not run. (They belong in README.md as
#: `<!-- example: illustrative: ... -->` lines.)
UNMARKED_ILLUSTRATIVE = {
    ("README.md", "sudo make demo"):
        "the whole setup and suite (make test would run this test again)",
    ("README.md", "sudo verifier testbed up --name lab"):
        "an interactive session of background jobs ended by Ctrl-C, on a fixed testbed name; each command "
        "runs in tests/testbed/test_cli.py",
}

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")


@dataclass
class Example:
    """One fenced block: where it is, its language and code, and how it runs."""

    document: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    root: bool = False
    file: str | None = None
    illustrative: str | None = None  # why it is not run
    earlier_files: dict[str, str] = field(default_factory=dict)  # file= blocks above it in the document

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")


def examples(document: str) -> list[Example]:
    """Every python and sh block of `document` (a path relative to the project), in order."""
    lines = (ROOT / document).read_text().splitlines()
    found: list[Example] = []
    files: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, language = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        code = "\n".join(lines[start + 1:j]) + "\n"
        i = j + 1
        if language not in LANGUAGES:
            continue
        ex = Example(document, start + 1, language, code, earlier_files=dict(files))
        marker = _MARKER.match(lines[start - 1]) if start else None
        if marker:
            words = marker.group(1)
            if words.startswith("illustrative"):
                ex.illustrative = words.partition(":")[2].strip() or "(no reason given)"
            else:
                for word in words.split():
                    if word == "root":
                        ex.root = True
                    elif word.startswith("file="):
                        ex.file = word[5:]
                    else:
                        raise ValueError(f"{ex.id}: unknown example marker word {word!r}")
        else:
            ex.illustrative = next((why for (doc, start), why in UNMARKED_ILLUSTRATIVE.items()
                                    if doc == document and ex.first_line.startswith(start)), None)
        if language == "sh" and re.search(r"(^|[;&|(]\s*)sudo\s", code, re.M):
            ex.root = True
        if ex.file:
            files[ex.file] = code
        found.append(ex)
    return found


def all_examples() -> list[Example]:
    return [ex for doc in DOCUMENTS for ex in examples(doc)]


def runnable(root: bool) -> list[Example]:
    """The examples that run on their own (not illustrative, not file= blocks), needing root or not."""
    return [ex for ex in all_examples() if ex.illustrative is None and ex.file is None and ex.root == root]


def workdir(tmp: Path, ex: Example) -> Path:
    """A scratch copy of the project's layout (links) plus the document's earlier file= blocks."""
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (tmp / entry.name).symlink_to(entry)
    for name, code in ex.earlier_files.items():
        (tmp / name).write_text(code)
    return tmp


def commands(code: str) -> list[str]:
    """The commands of an sh block: lines joined over trailing backslashes, blank ones dropped."""
    out, current = [], ""
    for line in code.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            out.append(current.strip())
        current = ""
    return out


def expected_status(command: str) -> int:
    """The exit status a command's trailing comment states ("# fails: exit 1"), else 0."""
    m = re.search(r"#[^\"']*\bexit (\d+)\b[^\"']*$", command)
    return int(m.group(1)) if m else 0


def environment(ex: Example) -> dict:
    """The outer run's environment, without pytest's variables; a root example's own tests may not skip
    (VERIFIER_REQUIRE_ROOT=1 turns a skip for want of root into a failure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VERIFIER_REQUIRE"))}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    if ex.root:
        env["VERIFIER_REQUIRE_ROOT"] = "1"
    return env


def run(ex: Example, tmp: Path) -> None:
    """Run one example in the scratch directory `tmp`; AssertionError with its output if it fails.
    The links to the project are removed afterwards (so that nothing ever deletes through them)."""
    cwd = workdir(tmp, ex)
    try:
        _run(ex, cwd)
    finally:
        for entry in cwd.iterdir():
            if entry.is_symlink():
                entry.unlink()


def _run(ex: Example, cwd: Path) -> None:
    env = environment(ex)
    if ex.language == "python":
        script = cwd / f"example_{ex.line}.py"
        if re.search(r"^def test_", ex.code, re.M):
            script = cwd / f"test_example_{ex.line}.py"
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", script.name]
        else:
            argv = [sys.executable, script.name]
        script.write_text(ex.code)
        _check(ex, ex.first_line, argv, cwd, env, 0)
        return
    prelude = 'sudo() { "$@"; }; ' if os.geteuid() == 0 else ""
    for command in commands(ex.code):
        _check(ex, command, ["bash", "-c", prelude + command], cwd, env, expected_status(command))


def _check(ex: Example, what: str, argv: list[str], cwd: Path, env: dict, want: int) -> None:
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == want, (
        f"the example at {ex.id} ({what}) exited with status {res.returncode}, the document says {want}\n"
        f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}")

