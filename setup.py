"""Builds the compiled engine when the package is installed (`pip install`, `make setup`).

The hot path is written once, in plain Python (Cython's pure-Python mode): `verifier/pcap/reader.py`,
`verifier/wire/decoder.py`, `verifier/analysis/attempt.py`, `zeek.py` and `grouper.py`, and the capture
agent's ring reader `verifier/capture/ring.py`, with their C types in the `.pxd` files beside them. Compiled here, they are the engine every command runs; read
as Python (`VERIFIER_PURE=1`), they are the reference the tests compare the engine with. Nothing is
compiled at run time. `verifier/_engine_sources.json` records the hash of the sources each build
was made from, so that a stale build is detected (`verifier.engine.stale()`).
"""

import hashlib
import json
from pathlib import Path

from Cython.Build import cythonize
from setuptools import setup

ROOT = Path(__file__).resolve().parent
ENGINE = ["verifier/pcap/reader.py", "verifier/wire/decoder.py", "verifier/analysis/attempt.py",
          "verifier/analysis/zeek.py", "verifier/analysis/grouper.py", "verifier/capture/ring.py"]
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,  # every index into a frame is checked by hand against its length
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "infer_types": True,  # sequence-number arithmetic is masked explicitly; C integers are wide enough
}


def source_hash(module_py: str) -> str:
    h = hashlib.sha256()
    for path in (ROOT / module_py, (ROOT / module_py).with_suffix(".pxd")):
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()


(ROOT / "verifier" / "_engine_sources.json").write_text(
    json.dumps({m[:-3].replace("/", "."): source_hash(m) for m in ENGINE}, indent=1, sort_keys=True) + "\n")

setup(ext_modules=cythonize(ENGINE, compiler_directives=DIRECTIVES, quiet=True))
