"""The compiled engine's classes are built as declared: final, outside the cyclic collector, with
free lists, where their declarations say so.

Cython 3.3 builds a class from the decorators on the class in its .py file; the same decorators in
the module's augmenting .pxd are what other modules that cimport it see (a subclass elsewhere can
only leave the collector if its base is declared out of it there), and alone they do nothing to the
type itself. So each is written twice, and these tests keep the two copies equal and check the
built types' flags.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from verifier.analysis import attempt, grouper, zeek
from verifier.wire import decoder

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"verifier/analysis/attempt": attempt, "verifier/analysis/grouper": grouper,
           "verifier/analysis/zeek": zeek, "verifier/wire/decoder": decoder}
HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC
BASETYPE = 1 << 10  # Py_TPFLAGS_BASETYPE


def _py_decorators(path: Path) -> dict[str, set[str]]:
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names = {ast.unparse(d) for d in node.decorator_list} - {"cython.cclass"}
            if names:
                out[node.name] = names
    return out


def _pxd_decorators(path: Path) -> dict[str, set[str]]:
    out, pending = {}, set()
    for line in path.read_text().splitlines():
        if line.startswith("@cython."):
            pending.add(line.split("#")[0].strip()[1:])
        elif line.startswith("cdef class "):
            name = re.match(r"cdef class (\w+)", line).group(1)
            if pending:
                out[name] = pending
            pending = set()
    return out


@pytest.mark.parametrize("stem", sorted(MODULES))
def test_decorators_are_the_same_in_the_py_and_the_pxd(stem):
    py, pxd = _py_decorators(ROOT / f"{stem}.py"), _pxd_decorators(ROOT / f"{stem}.pxd")
    assert py == pxd


@pytest.mark.parametrize("stem", sorted(MODULES))
def test_compiled_types_have_the_flags_their_decorators_ask_for(stem):
    mod = MODULES[stem]
    if not mod.__file__.endswith(".so"):
        pytest.skip("the pure-Python engine (VERIFIER_PURE=1) has no C types")
    declared = _py_decorators(ROOT / f"{stem}.py")
    assert declared
    for name, decorators in declared.items():
        flags = getattr(mod, name).__flags__
        if "cython.no_gc" in decorators:  # (without it, a type may still need no collector: _JsonText)
            assert not flags & HAVE_GC, name
        assert bool(flags & BASETYPE) == ("cython.final" not in decorators), name


def test_the_hot_types_are_out_of_the_collector():
    """What the replay makes a million of: packets, attempts, Zeek connections and endpoints."""
    if not decoder.__file__.endswith(".so"):
        pytest.skip("the pure-Python engine (VERIFIER_PURE=1) has no C types")
    for cls in (decoder.Packet, decoder.QuotedPacket, grouper.Attempt, attempt.Machine, zeek.ZeekConn,
                zeek.ZeekEndpoint):
        assert not cls.__flags__ & HAVE_GC, cls.__name__
