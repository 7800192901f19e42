"""The compiled engine: which of its modules are compiled, and whether the build is current.

`setup.py` compiles the hot modules (`MODULES`) when the package is installed and records the hash
of the sources each build came from in `_engine_sources.json`. `status()` says, per module, whether
the imported module is the compiled one and whether its build matches the sources on disk now;
`stale()` lists the modules whose build is out of date (then Python would still import the old
compiled module: run `make setup`). With the environment variable `VERIFIER_PURE=1` set before
`verifier` is imported, the plain-Python sources are imported instead (the reference the tests
compare the engine with; about 20 times slower).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["MODULES", "PURE_ENV", "install_pure_finder", "status", "stale"]

MODULES = ("verifier.pcap.reader", "verifier.wire.decoder", "verifier.analysis.attempt",
           "verifier.analysis.zeek", "verifier.analysis.grouper", "verifier.capture.ring")
PURE_ENV = "VERIFIER_PURE"
_ROOT = Path(__file__).resolve().parent.parent


def _source(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _hash(module: str) -> str:
    py = _source(module)
    h = hashlib.sha256()
    for path in (py, py.with_suffix(".pxd")):
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()


def _built() -> dict:
    try:
        return json.loads((Path(__file__).with_name("_engine_sources.json")).read_text())
    except (OSError, ValueError):
        return {}


def status() -> dict:
    """{module: {"compiled": bool, "current": bool}} for the engine's modules (imports them)."""
    built = _built()
    out = {}
    for m in MODULES:
        mod = importlib.import_module(m)
        compiled = not (getattr(mod, "__file__", "") or "").endswith(".py")
        out[m] = {"compiled": compiled, "current": built.get(m) == _hash(m)}
    return out


def stale() -> list:
    """The engine modules whose compiled build does not match their sources (empty when current)."""
    built = _built()
    return [m for m in MODULES if built.get(m) != _hash(m)]


class _PureFinder:
    """Imports the engine modules from their .py sources, not the compiled extensions."""

    def find_spec(self, name, path=None, target=None):
        if name not in MODULES:
            return None
        src = _source(name)
        return importlib.util.spec_from_file_location(name, str(src),
                                                      loader=importlib.machinery.SourceFileLoader(name, str(src)))


def install_pure_finder() -> None:
    if not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


if os.environ.get(PURE_ENV) == "1":
    install_pure_finder()
