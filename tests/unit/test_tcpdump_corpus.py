"""tcpdump's own test corpus (667 captures: every protocol and link type tcpdump prints, many of
them deliberately malformed; fetched by `python -m tests.corpora`, origin in
tests/data/tcpdump/ORIGIN.md), captures nobody here shaped the tool on: no traceback, no hang, and
no silent zero. tshark is the peer: wherever its TCP dissector finds TCP (tests/data/tcpdump/
tshark_tcp.json, written by make_truth.py), we find TCP segments too, or say in the summary why
not (a malformed packet, a fragment not reassembled, a link type not read)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import corpora
from verifier.pytest_plugin import require

TRUTH = json.loads((Path(__file__).resolve().parents[1] / "data" / "tcpdump" / "tshark_tcp.json").read_text())
REPLAY = [sys.executable, "-m", "verifier.cli", "replay"]
# What a summary says when a capture's TCP could not be read, each a reason, not a silence.
REASONS = re.compile(r"malformed packet|fragments \(not reassembled\)|not read \(unsupported\)|truncated|damaged")


@pytest.fixture(scope="module")
def corpus() -> Path:
    where = corpora.tcpdump_dir()
    require(where.is_dir(), f"tcpdump's test corpus is not fetched ({where}): run python -m tests.corpora")
    files = sorted(p for p in where.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(files) == TRUTH["captures"], (len(files), TRUTH["captures"])
    return where


@pytest.fixture(scope="module")
def whole(corpus):
    """The whole corpus in one corpus-mode run: (exit status, attempts by file, stderr)."""
    res = subprocess.run([*REPLAY, f"{corpus}/", "--json"], capture_output=True, text=True, timeout=600)
    by_file: dict[str, int] = {}
    for line in res.stdout.splitlines():
        rec = json.loads(line)
        by_file[rec["file"]] = by_file.get(rec["file"], 0) + 1
    return res.returncode, by_file, res.stderr


def test_the_whole_corpus_reads_without_a_traceback_or_a_hang(whole):
    status, by_file, err = whole
    assert "Traceback" not in err, err[-3000:]
    # 3: some captures are damaged or of link types not read, which the summary names
    assert status == 3, err[-3000:]
    assert f": {TRUTH['captures']} capture(s)" in err, err[-500:]
    assert sum(by_file.values()) > 0


def test_no_silent_zero_where_tshark_finds_tcp(corpus, whole):
    _, by_file, _ = whole
    silent = []
    for name, frames in sorted(TRUTH["tcp_frames"].items()):
        if by_file.get(name):
            continue
        res = subprocess.run([*REPLAY, str(corpus / name), "--json"], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in res.stderr, (name, res.stderr)
        segments = int(re.search(r"(\d+) TCP segments", res.stderr).group(1))
        reason = REASONS.search(res.stderr)
        # TCP segments but no attempt among them (a lone ACK, say) is read, not silent
        if not segments and not reason:
            silent.append(f"{name}: tshark finds {frames} TCP frames; we say: {res.stderr.strip()}")
    assert not silent, "\n".join(silent)
