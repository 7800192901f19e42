"""A capture records its client namespace's SYN sysctls in the file, and every reading of the file
models them (no root): the pcapng opt_comment of a statistics block, written by `PcapngWriter`, read
back by the reader (both engines) in the stream and from the end of the file before the stream, and
used by `load_trace`, `check` and `verifier replay --expect "... follows linux"`.

The packets are a real capture: C2's golden file (tcp_syn_retries=2, tcp_syn_linear_timeouts=1,
three SYNs one second apart, ETIMEDOUT), which does not fit the kernel's defaults (6 and 4)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.crafted import pure_module
from verifier.analysis.conditions import check
from verifier.analysis.schedules import LINUX_DEFAULTS, SYSCTLS_COMMENT, sysctls_comment, sysctls_from_comments
from verifier.analysis.trace import load_trace
from verifier.pcap import PcapngWriter, read_interface_stats, read_packets
from verifier.pcap import reader as compiled_reader

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden" / "c2_syn_timeout_linear1_retries2_ipv4.pcapng"
RECORDED = {"net.ipv4.tcp_syn_retries": "2", "net.ipv4.tcp_syn_linear_timeouts": "1",
            "net.ipv4.tcp_rto_max_ms": "120000"}
EXPECT = "the SYNs to 203.0.113.2:5000 follow the linux schedule"
READERS = {"compiled": compiled_reader, "python": pure_module("verifier.pcap.reader")}


def rewrite(dst: Path, comment: str | None) -> Path:
    """The golden packets again, each interface's statistics block with `comment` on the client's."""
    with open(dst, "wb") as f:
        w = PcapngWriter(f)
        ids: dict = {}
        for p in read_packets(GOLDEN):
            if p.iface_name not in ids:
                ids[p.iface_name] = w.add_interface(p.iface_name)
            w.write_packet(ids[p.iface_name], p.ts_ns, p.data, direction=p.direction)
        stats = read_interface_stats(GOLDEN)
        assert stats, "the golden capture has statistics blocks"
        for st in stats:
            w.write_stats(ids[st.iface_name], st.ts_ns, received=st.received, dropped=st.dropped,
                          comment=comment if st.iface_name.startswith("client:") else None)
    return dst


def test_the_comment_says_what_it_holds_and_reads_back():
    text = sysctls_comment({**RECORDED, "net.ipv4.tcp_rto_max_ms": None})
    assert text == (f"{SYSCTLS_COMMENT} net.ipv4.tcp_syn_retries=2 net.ipv4.tcp_syn_linear_timeouts=1 "
                    "net.ipv4.tcp_rto_max_ms=-")
    # "-": the kernel has no such sysctl (6.1 has neither of the last two), kept as None
    assert sysctls_from_comments(["another comment", text]) == {**RECORDED, "net.ipv4.tcp_rto_max_ms": None}
    assert sysctls_from_comments(["another comment"]) is None
    assert sysctls_from_comments([f"{SYSCTLS_COMMENT} net.core.somaxconn=1 bare-word"]) == {}


@pytest.mark.parametrize("engine", sorted(READERS))
def test_the_reader_gives_the_comment_in_the_stream_and_from_the_end(engine, tmp_path):
    path = rewrite(tmp_path / "c2.pcapng", sysctls_comment(RECORDED))
    reader = READERS[engine].Reader(str(path))
    try:
        ahead = reader.trailing_comments()  # before the stream: read backwards from the end
        assert list(ahead.values()) == [[sysctls_comment(RECORDED)]]
        while reader.next():
            pass
        by_name = {st.iface_name: st.comments for st in reader.stats}
    finally:
        reader.close()
    assert {n: c for n, c in by_name.items() if c} == {"client:c0": (sysctls_comment(RECORDED),)}
    # the client interface's id, in both readings
    assert [reader.all_ifaces[i].name for i in ahead] == ["client:c0"]


@pytest.mark.parametrize("engine", sorted(READERS))
def test_a_stream_that_cannot_seek_has_no_comments_ahead(engine, tmp_path):
    path = rewrite(tmp_path / "c2.pcapng", sysctls_comment(RECORDED))

    class Pipe(io.BytesIO):
        def seekable(self):
            return False

    reader = READERS[engine].Reader(Pipe(path.read_bytes()))
    try:
        assert reader.trailing_comments() == {}
    finally:
        reader.close()


def test_load_trace_and_check_model_the_recorded_sysctls(tmp_path):
    recorded = load_trace(rewrite(tmp_path / "recorded.pcapng", sysctls_comment(RECORDED)))
    assert recorded.client_sysctls == RECORDED
    verdict = check(recorded, EXPECT)[0]
    assert verdict.ok, verdict.text()
    assert "tcp_syn_retries=2, tcp_syn_linear_timeouts=1" in verdict.text()
    # Without the record, the defaults, which these SYNs do not follow.
    assert {k: str(v) for k, v in LINUX_DEFAULTS.items()} != RECORDED
    bare = load_trace(rewrite(tmp_path / "bare.pcapng", None))
    assert bare.client_sysctls is None
    assert not check(bare, EXPECT)[0].ok


@pytest.mark.parametrize("recorded, status", [(True, 0), (False, 1)])
def test_replay_expect_models_the_recorded_sysctls(tmp_path, recorded, status):
    path = rewrite(tmp_path / "c2.pcapng", sysctls_comment(RECORDED) if recorded else None)
    res = subprocess.run([sys.executable, "-m", "verifier.cli", "replay", str(path), "--expect", EXPECT],
                         capture_output=True, text=True)
    assert res.returncode == status, res.stdout + res.stderr
    if recorded:
        assert "tcp_syn_retries=2, tcp_syn_linear_timeouts=1" in res.stdout + res.stderr
