"""Our Zeek conn_state/history against Zeek's own, on the traces of Zeek's test suite.

tests/data/zeek/ holds real captures from Zeek's btest suite with Zeek's conn.log baseline for each
(expected.jsonl). We read every trace, group packets as Zeek does (`verifier replay --zeek-sessions`,
`grouping="zeek"`: connection reuse and Zeek's timers decide where a 4-tuple starts a new row), and
compare each expected row with ours: originator, conn_state and history must all be equal for a row
to match. Rows with the same 4-tuple are matched in time order, as the oracle README says Zeek logs
them.

Each run's settings come from the oracle rows: checksums are validated unless Zeek ran with -C
(`checksums_ignored` false -> `checksums=True`, `--checksums`), and a bare-mode run (zeek -b) loads no
protocol scripts, so no port counts as a likely server port (`bare_mode` ->
`likely_server_ports=frozenset()`, `--zeek-bare`).

The match is exact: every one of the 87 rows, with no tolerance and no list of known differences. It
is checked on the compiled engine in-process and on the pure-Python reference (VERIFIER_PURE=1)
through the command line, and the figure is printed. Zeek behaviour we model only in part, which
could show on other traces:
  * IP fragments are not reassembled (Zeek reassembles them): a fragmented TCP segment is counted, not
    analysed;
  * a close is never deferred while reassembled data is pending (TCP_Reassembler::DataPending), so a
    FIN arriving before a hole is filled closes at once;
  * the reassembler holds at most 8 holes per direction and the history keeps 127 letters;
  * which ports are "likely server ports" in a default run is our list of the base scripts' ports
    (DEFAULT_LIKELY_SERVER_PORTS), and a SYN-ACK from a likely port flips even when both ports are
    likely: the oracle's flip-without-syn trace is logged that way;
  * Zeek's DPD can stop reassembly (Skipping) or detect Teredo/AYIYA by content on any port; we
    decapsulate by port, and Teredo also by content (IPv6 to or from 2001:0::/32 inside UDP).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from verifier.analysis.trace import load_trace
from verifier.analysis.zeek import DEFAULT_LIKELY_SERVER_PORTS
from verifier.replay.scan import Scan

from .crafted import ZEEK, zeek_traces

ORACLE_ROWS = 87  # rows of expected.jsonl: all must match
VERIFIER = Path(sys.executable).with_name("verifier")  # the venv's command


def _expected() -> dict[str, list[dict]]:
    rows = [json.loads(line) for line in (ZEEK / "expected.jsonl").read_text().splitlines() if line.strip()]
    by = collections.defaultdict(list)
    for r in rows:
        by[r["trace"]].append(r)
    return by


def _settings(rows: list[dict]) -> tuple[bool, bool]:
    """(bare, checksums) of a trace's Zeek run: the same for all its rows."""
    modes = {(r["bare_mode"], not r["checksums_ignored"]) for r in rows}
    assert len(modes) == 1, f"{rows[0]['trace']}: rows from different Zeek runs"
    return modes.pop()


def _ours_compiled(trace: str, rows: list[dict]) -> list[tuple]:
    """(start_ns, Zeek's originator, responder, conn_state, history) per attempt, compiled, in-process."""
    bare, checksums = _settings(rows)
    s = Scan(ZEEK / trace, grouping="zeek", checksums=checksums,
             likely_server_ports=frozenset() if bare else DEFAULT_LIKELY_SERVER_PORTS)
    out = []
    for a in s:
        orig, resp = (a.orig_h, a.orig_p), (a.resp_h, a.resp_p)
        if a.zeek_orig is not None:  # Zeek's originator is our server
            assert a.zeek_orig == resp, a
            orig, resp = resp, orig
        out.append((a.start_ns, orig, resp, a.conn_state, a.history))
    assert s.stats.engine == "compiled", "the engine is not compiled (make setup)"
    return out


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _ours_pure_cli(trace: str, rows: list[dict]) -> list[tuple]:
    """The same through `verifier replay --json --zeek-sessions ...` on the pure-Python reference."""
    bare, checksums = _settings(rows)
    argv = [str(VERIFIER), "replay", str(ZEEK / trace), "--json", "--zeek-sessions"]
    argv += ["--zeek-bare"] if bare else []
    argv += ["--checksums"] if checksums else []
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "VERIFIER_PURE": "1"})
    assert res.returncode == 0, (trace, res.stderr)
    assert "[python engine]" in res.stderr, res.stderr
    out = []
    for line in res.stdout.splitlines():
        r = json.loads(line)
        orig, resp = (r["orig_h"], r["orig_p"]), (r["resp_h"], r["resp_p"])
        if "zeek_orig" in r:
            assert _endpoint(r["zeek_orig"]) == resp, r
            orig, resp = resp, orig
        out.append((r["start_ns"], orig, resp, r["conn_state"], r["history"]))
    return out


def _key(a: tuple, b: tuple) -> tuple:
    return tuple(sorted([a, b]))


def compare(ours_of) -> tuple[int, int, int, int, list[str]]:
    """(rows, full matches, conn_state matches, history matches, mismatch lines)."""
    total = full = cs_ok = hist_ok = 0
    lines = []
    for trace, rows in sorted(_expected().items()):
        ours = collections.defaultdict(list)
        for _, orig, resp, cs, hist in sorted(ours_of(trace, rows), key=lambda r: r[0]):
            ours[_key(orig, resp)].append((orig, cs, hist))
        used = collections.Counter()
        for e in rows:
            k = _key((e["orig_h"], e["orig_p"]), (e["resp_h"], e["resp_p"]))
            i = used[k]
            used[k] += 1
            total += 1
            got = ours[k][i] if i < len(ours[k]) else None
            if got is None:
                lines.append(f"{trace}: row {e['orig_h']}:{e['orig_p']} > :{e['resp_p']} {e['conn_state']} "
                             f"{e['history']} has no counterpart")
                continue
            orig, cs, hist = got
            same_orig = orig == (e["orig_h"], e["orig_p"])
            cs_ok += cs == e["conn_state"]
            hist_ok += hist == (e["history"] or "")
            if same_orig and cs == e["conn_state"] and hist == (e["history"] or ""):
                full += 1
            else:
                lines.append(f"{trace}: {e['orig_h']}:{e['orig_p']} > :{e['resp_p']}: Zeek {e['conn_state']} "
                             f"{e['history']}, ours {cs} {hist} (originator {orig[0]}:{orig[1]})")
        extra = sum(len(v) - used[k] for k, v in ours.items() if len(v) > used[k])
        if extra:
            lines.append(f"{trace}: {extra} row(s) of ours that Zeek does not log")
    return total, full, cs_ok, hist_ok, lines


def test_every_oracle_trace_is_read_without_error():
    index = zeek_traces()
    assert index, "traces.jsonl is empty"
    for t in index:
        path = ZEEK / t["trace"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a damage or truncation warning would fail here
            s = Scan(path)
            attempts = list(s)
            trace = load_trace(path)  # the Trace (expect()'s reading) decapsulates tunnels too
        st = s.stats
        assert st.format == t["format"], t["trace"]
        assert (st.malformed, st.damage_count, st.truncated, st.unsupported) == (0, 0, False, {}), \
            (t["trace"], st.as_json())
        assert attempts, f"{t['trace']}: no TCP connection found"
        assert [c.id for c in trace.connections] == [a.id for a in sorted(attempts, key=lambda a: a.id)], t["trace"]


@pytest.mark.parametrize("engine", ["compiled", "pure"])
def test_conn_state_and_history_match_zeek(engine, request, capsys):
    total, full, cs_ok, hist_ok, lines = compare(_ours_compiled if engine == "compiled" else _ours_pure_cli)
    figure = (f"Zeek oracle ({engine} engine, --zeek-sessions): {full}/{total} rows match; conn_state "
              f"{cs_ok}/{total}, history {hist_ok}/{total}")
    request.node.user_properties.append(("zeek_match", f"{full}/{total}"))  # in --junitxml reports
    with capsys.disabled():  # the figure, in the test output (under xdist, workers' output is not shown)
        print(f"\n{figure}")
    assert total == ORACLE_ROWS, f"the oracle changed: {total} rows"
    assert full == total and not lines, figure + "\n" + "\n".join(lines)
