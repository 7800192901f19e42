"""Test corpora fetched by the project's setup, never stored in the repository: each is a pinned
archive (URL and SHA-256), unpacked into .cache/corpora/ (ignored by git). `make test` runs
``python -m tests.corpora`` first; it does nothing when the corpus is already there.

- tcpdump's own test captures (`tests/*.pcap*` of the tcpdump 4.99.3 source, as Debian's archive
  ships it; BSD licence): 667 captures of every protocol and link type tcpdump prints, many of them
  deliberately malformed. Origin and use: tests/data/tcpdump/ORIGIN.md.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "corpora"

TCPDUMP = {
    "name": "tcpdump-4.99.3",
    "url": "http://deb.debian.org/debian/pool/main/t/tcpdump/tcpdump_4.99.3.orig.tar.gz",
    "sha256": "ad75a6ed3dc0d9732945b2e5483cb41dc8b4b528a169315e499c6861952e73b3",
    "members": "tcpdump-4.99.3/tests/",
}


def tcpdump_dir() -> Path:
    """Where tcpdump's test captures are once fetched."""
    return CACHE / TCPDUMP["name"] / "tests"


def fetch(corpus: dict = TCPDUMP) -> Path:
    """Download, check and unpack `corpus` (only its `members`), unless already there; the folder."""
    dest = CACHE / corpus["name"]
    done = dest / ".complete"
    if done.exists():
        return dest
    with urllib.request.urlopen(corpus["url"], timeout=60) as r:
        data = r.read()
    got = hashlib.sha256(data).hexdigest()
    if got != corpus["sha256"]:
        raise RuntimeError(f"{corpus['url']}: SHA-256 {got}, expected {corpus['sha256']}")
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(corpus["members"]) and m.isfile()
                   and ".." not in Path(m.name).parts]
        for m in members:
            m.name = str(Path(*Path(m.name).parts[1:]))  # strip the top folder
        tar.extractall(tmp, members=members, filter="data")
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    done.touch()
    return dest


def main() -> int:
    try:
        where = fetch()
    except (OSError, RuntimeError) as exc:
        print(f"corpora: could not fetch {TCPDUMP['url']}: {exc}", file=sys.stderr)
        return 1
    n = sum(1 for p in (where / "tests").iterdir() if p.suffix in (".pcap", ".pcapng"))
    print(f"corpora: {where / 'tests'}: {n} captures of tcpdump's tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
