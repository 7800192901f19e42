"""The verifier's C test programs (``client.c``, ``server.c``) and their build.

``build(name)`` compiles ``verifier/programs/<name>.c`` with the system's
``cc`` and returns the path of the binary.  Binaries are cached by the
SHA-256 of the source, of the shared headers in this directory, of the
compiler flags and of the compiler's identity (resolved path, size, mtime),
in ``$VERIFIER_CACHE`` or else ``~/.cache/tcp-verifier/programs``.  A call
with an unchanged source costs a few stats and a hash; concurrent builds
(several pytest-xdist workers) are safe: each compiles to its own temporary
file in the cache directory and ``os.replace``\\ s it into place.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "CFLAGS",
    "PROGRAMS",
    "SOURCE_DIR",
    "BuildError",
    "CompilerNotFoundError",
    "build",
    "cache_dir",
    "program_path",
    "source_path",
]

SOURCE_DIR = Path(__file__).resolve().parent
PROGRAMS = ("client", "server")
CFLAGS = ("-O2", "-Wall", "-Werror")
COMPILER = "cc"


class BuildError(RuntimeError):
    """A program failed to compile (the message holds the compiler output)."""


class CompilerNotFoundError(BuildError):
    """No C compiler on PATH."""


def cache_dir() -> Path:
    """The binary cache directory (created if missing)."""
    env = os.environ.get("VERIFIER_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "tcp-verifier" / "programs"
    base.mkdir(parents=True, exist_ok=True)
    return base


def source_path(name: str) -> Path:
    if not name or "/" in name or name.startswith(".") or os.sep in name:
        raise ValueError(f"bad program name {name!r}")
    src = SOURCE_DIR / f"{name}.c"
    if not src.is_file():
        known = ", ".join(sorted(p.stem for p in SOURCE_DIR.glob("*.c")))
        raise FileNotFoundError(f"no program {name!r}: {src} missing (known: {known})")
    return src


def _compiler() -> str:
    cc = shutil.which(COMPILER)
    if cc is None:
        raise CompilerNotFoundError(
            "a C compiler (gcc/cc) is needed to build the test programs; "
            "`make test` installs it"
        )
    return cc


def _digest(src: Path, cc: str) -> str:
    h = hashlib.sha256()
    h.update(b"tcp-verifier-program-v1\0")
    h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    # Every local header: the programs share report.h.
    for hdr in sorted(SOURCE_DIR.glob("*.h")):
        h.update(hdr.name.encode() + b"\0" + hdr.read_bytes() + b"\0")
    h.update("\0".join(CFLAGS).encode() + b"\0")
    real = os.path.realpath(cc)
    st = os.stat(real)
    h.update(f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _remove_stale_temps(cache: Path, max_age_s: float = 3600.0) -> None:
    """Remove temp files left by builds that were killed mid-compile."""
    now = time.time()
    for p in cache.glob(".*.tmp"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            pass


def build(name: str) -> Path:
    """Compile ``<name>.c`` (if not cached) and return the binary's path."""
    src = source_path(name)
    cc = _compiler()
    digest = _digest(src, cc)
    cache = cache_dir()
    out = cache / f"{name}-{digest[:24]}"
    if os.access(out, os.X_OK):
        return out
    _remove_stale_temps(cache)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", tmp, str(src)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"compiling {src} failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def program_path(name: str) -> Path:
    """Alias of :func:`build`: the path of the (built) program."""
    return build(name)
