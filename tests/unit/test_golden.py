"""The golden captures (captures/golden/, described in its README), replayed offline without root.

For each file, three things are compared:

* what the capture holds, read independently of the verifier's core: Scapy dissects the frames and
  `_derive()` below applies the rules of RFC 9293 the README states for each claim (a SYN answered by
  an acceptable RST/ACK is refused, an ICMP error quoting an unanswered SYN is unreachable, a RST
  after the handshake is a reset by its sender, FINs from both sides are a close, an unanswered SYN
  is timed out once the capture went on for at least the minimum RTO of 1 s after it, else
  incomplete); the capture's end is the time of its Interface Statistics Block, read by hand;
* what captures/golden/README.md states for the file (`README_STATES`, typed from its table);
* what the one core finds: `Scan` (the compiled engine, what `verifier replay` prints), the same
  scan by the pure-Python reference (VERIFIER_PURE=1, in a subprocess) and `load_trace` (what
  `expect()` reads).

The outcome, reset side, SYN count, SYN times and ICMP error of every connection must agree three
ways. Zeek's conn_state and history are checked separately, and only as a change detector: the
README says they are "as our code computes them" (there is no Zeek run behind them).

Then the claim's own expectation from the conformance suite (`verifier.analysis.expect`) and
`--expect` conditions that say the same in the expectation language, on the saved capture.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, IPerror, IPerror6, IPv6, TCPerror, rdpcap
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded

from verifier.analysis.conditions import check
from verifier.analysis.expect import expect
from verifier.analysis.trace import load_trace
from verifier.replay.scan import Scan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "captures" / "golden"
ICMP_ERRORS = (ICMP, ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem)
MIN_RTO_S = Decimal(1)  # RFC 6298 2.4: before this, "timed out" cannot be told from "still trying"

# What captures/golden/README.md states, per connection in the order of their first packet:
# (server port, outcome, reset_by, SYNs, ICMP (type, code) or None). Typed from the README's table
# ("classification (per connection)"); where the README leaves a field implicit it is noted.
CLOSED_1 = (5000, "closed", None, 1, None)  # "closed" rows: one SYN each (a handshake, no retransmission)
README_STATES = {
    "c1_handshake_ipv4": [CLOSED_1],
    "c1_handshake_ipv6": [CLOSED_1],
    "c2_syn_timeout_linear1_retries2_ipv4": [(5000, "timed-out", None, 4, None)],
    "c2_syn_timeout_linear5_retries2_ipv6": [(5000, "timed-out", None, 7, None)],
    "c3_refused_ipv4": [(5001, "refused", None, 1, None)],
    "c3_refused_ipv6": [(5001, "refused", None, 1, None)],
    "c4b_linger_rst_ipv4": [(5000, "reset", "client", 1, None)],
    "c4b_unread_data_rst_ipv6": [(5000, "reset", "server", 1, None)],
    "c4c_rst_for_no_connection_ipv4": [(5002, "reset", "server", 0, None)],  # "mid-stream (no SYN)"
    "c5_icmp_host_reject_ipv4": [(5000, "unreachable", None, 2, (3, 1))],
    "c5_icmp_net_50ms_ipv6": [(5000, "unreachable", None, 1, (1, 0))],
    "c6_connect_again_ipv4": [(5003, "refused", None, 1, None)] * 2,
    "c8_accept_queue_abort1_ipv4": [(5000, "reset", "server", 1, None)] * 4 + [(5000, "incomplete", None, 2, None)],
    "c9_handshake_before_accept_ipv4": [CLOSED_1],
    "c10_one_listener_ipv4": [CLOSED_1] * 4,
    "c11_fork_server_ipv6": [CLOSED_1] * 6,
    "c12_four_segment_close_ipv4": [CLOSED_1],
    "c14_exec_ipv4": [CLOSED_1],
}

# CHANGE DETECTOR of our own output, not an oracle: Zeek's (conn_state, history) per connection as
# the README lists them, which it says are "as our code computes them" (no Zeek ran on these files).
# A change here is a change of our Zeek reading to be explained, not necessarily a bug fixed or made.
ZEEK_FIELDS_OF_OUR_OWN_OUTPUT = {
    "c1_handshake_ipv4": [("SF", "ShAFf")],
    "c1_handshake_ipv6": [("SF", "ShAFf")],
    "c2_syn_timeout_linear1_retries2_ipv4": [("S0", "S")],
    "c2_syn_timeout_linear5_retries2_ipv6": [("S0", "S")],
    "c3_refused_ipv4": [("REJ", "Sr")],
    "c3_refused_ipv6": [("REJ", "Sr")],
    "c4b_linger_rst_ipv4": [("RSTO", "ShAR")],
    "c4b_unread_data_rst_ipv6": [("RSTR", "ShADar")],
    "c4c_rst_for_no_connection_ipv4": [("RSTRH", "Ar")],
    "c5_icmp_host_reject_ipv4": [("S0", "S")],
    "c5_icmp_net_50ms_ipv6": [("S0", "S")],
    "c6_connect_again_ipv4": [("REJ", "Sr")] * 2,
    "c8_accept_queue_abort1_ipv4": [("RSTR", "ShAr")] * 4 + [("S0", "S")],  # S0 S: not in the README either
    "c9_handshake_before_accept_ipv4": [("SF", "ShAFaf")],
    "c10_one_listener_ipv4": [("SF", "ShAdfFa")] * 4,
    "c11_fork_server_ipv6": [("SF", "ShAdfFa")] * 6,
    "c12_four_segment_close_ipv4": [("SF", "ShAFaf")],
    "c14_exec_ipv4": [("SF", "ShAdfFa")],
}

# Zeek fields above that the README does not state (only our output when this test was written).
_NOT_IN_README = {"c8_accept_queue_abort1_ipv4": {("S0", "S")}}

# file -> --expect conditions that hold (the claim, in the expectation language)
CONDITIONS = {
    "c1_handshake_ipv4": ["every attempt to port 5000 is closed", "port 5000 syns 1"],
    "c1_handshake_ipv6": ["every attempt to port 5000 is closed", "ipv6 port 5000 count 1"],
    "c2_syn_timeout_linear1_retries2_ipv4": [
        "the SYNs to 203.0.113.2:5000 follow the linux schedule with tcp_syn_retries=2 tcp_syn_linear_timeouts=1",
        "no attempt to port 5000 follows stevens", "port 5000 timed-out"],
    "c2_syn_timeout_linear5_retries2_ipv6": [
        "[2001:db8:2::2]:5000 follows linux tcp_syn_retries=2 tcp_syn_linear_timeouts=5",
        "no attempt to port 5000 follows linux tcp_syn_retries=2", "port 5000 syns 7"],
    "c3_refused_ipv4": ["every attempt to port 5001 is refused", "port 5001 conn_state REJ"],
    "c3_refused_ipv6": ["every attempt to [2001:db8:2::2]:5001 is refused"],
    "c4b_linger_rst_ipv4": ["port 5000 reset by client", "port 5000 history ShAR"],
    "c4b_unread_data_rst_ipv6": ["port 5000 reset by server"],
    "c4c_rst_for_no_connection_ipv4": ["port 5002 reset by server", "port 5002 syns 0"],
    "c5_icmp_host_reject_ipv4": ["every attempt to port 5000 is unreachable type 3 code 1", "port 5000 syns 2"],
    "c5_icmp_net_50ms_ipv6": ["port 5000 unreachable type 1 code 0", "port 5000 syns 1"],
    "c6_connect_again_ipv4": ["port 5003 count 2", "every attempt to port 5003 is refused"],
    "c8_accept_queue_abort1_ipv4": ["any attempt to port 5000 is reset by server", "no attempt to port 5000 is closed",
                                    "port 5000 count 5"],
    "c9_handshake_before_accept_ipv4": ["port 5000 closed"],
    "c10_one_listener_ipv4": ["port 5000 count 4", "every attempt to port 5000 is closed"],
    "c11_fork_server_ipv6": ["port 5000 count 6", "every attempt to port 5000 is closed"],
    "c12_four_segment_close_ipv4": ["port 5000 closed", "port 5000 history ShAFaf"],
    "c14_exec_ipv4": ["port 5000 closed", "no attempt to port 5000 is reset"],
}


# ---------------------------------------------------------------------------------------------------
# what the capture holds, without the core


def _capture_end(path: Path) -> Decimal:
    """The time of the file's last Interface Statistics Block, in seconds (the README: "an ISB whose
    time is the original capture's end"), parsed by hand from the pcapng blocks."""
    data = path.read_bytes()
    assert data[:4] == b"\x0a\x0d\x0d\x0a" and data[8:12] == b"\x4d\x3c\x2b\x1a", "little-endian pcapng expected"
    pos, resol, end = 0, {}, None
    while pos + 12 <= len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + total - 4]
        if btype == 1:  # IDB: find if_tsresol (option 9)
            iid, o, exp = len(resol), 8, 6
            while o + 4 <= len(body):
                code, olen = struct.unpack_from("<HH", body, o)
                if code == 0:
                    break
                if code == 9:
                    exp = body[o + 4]
                    assert exp < 0x80, "only decimal resolutions in the golden files"
                o += 4 + olen + (-olen % 4)
            resol[iid] = exp
        elif btype == 5:  # ISB
            iid, hi, lo = struct.unpack_from("<III", body, 0)
            end = Decimal((hi << 32) | lo) / (Decimal(10) ** resol[iid])
        pos += total
    assert end is not None, f"{path.name} has no statistics block"
    return end


def _us(t: Decimal) -> float:
    """Seconds to the microsecond, rounded half up (the JSON's syn_times_s)."""
    return float(t.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def _derive(path: Path) -> list[dict]:
    """Every TCP connection of a golden capture and its outcome, from Scapy's dissection and the
    RFC 9293 rules of the module docstring (enough for these small, single-interface captures)."""
    conns: list[dict] = []
    by_tuple: dict = {}
    for pkt in rdpcap(str(path)):
        t = Decimal(pkt.time)
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
        if ip is None:
            continue
        if TCP in pkt and not (TCPerror in pkt):
            tcp = pkt[TCP]
            src, dst = (ip.src, tcp.sport), (ip.dst, tcp.dport)
            flags = str(tcp.flags)
            key = frozenset((src, dst))
            c = by_tuple.get(key)
            if "S" in flags and "A" not in flags:
                if c is None or c["client"] != src or c["isn"] != tcp.seq:
                    c = {"client": src, "server": dst, "isn": tcp.seq, "syns": [], "synack": False, "ack": False,
                         "rst": None, "fins": set(), "icmp": None}
                    conns.append(c)
                    by_tuple[key] = c
                c["syns"].append(t)
                continue
            if c is None:  # no SYN captured: the receiver of a SYN-ACK is the client, else the first sender
                client = dst if "S" in flags else src
                c = {"client": client, "server": src if client == dst else dst, "isn": None, "syns": [],
                     "synack": False, "ack": False, "rst": None, "fins": set(), "icmp": None}
                conns.append(c)
                by_tuple[key] = c
            side = "client" if src == c["client"] else "server"
            isn_ack = c["isn"] is not None and "A" in flags and tcp.ack == (c["isn"] + 1) % 2**32
            if "R" in flags:
                if c["rst"] is None:
                    # answering an unanswered SYN, a RST counts only with an ACK of the ISN + 1
                    refusal = side == "server" and c["syns"] and not c["synack"]
                    if not refusal or isn_ack:
                        c["rst"] = ("refusal" if refusal else side)
            elif "S" in flags and side == "server" and isn_ack:
                c["synack"] = True
            else:
                if side == "client" and c["synack"]:
                    c["ack"] = True
                if "F" in flags:
                    c["fins"].add(side)
        elif (IPerror in pkt or IPerror6 in pkt) and TCPerror in pkt:
            icmp = next((layer for layer in pkt.iterpayloads() if isinstance(layer, ICMP_ERRORS)), None)
            if icmp is None:
                continue
            q = pkt[IPerror] if IPerror in pkt else pkt[IPerror6]
            qt = pkt[TCPerror]
            c = by_tuple.get(frozenset(((q.src, qt.sport), (q.dst, qt.dport))))
            if c is not None and c["icmp"] is None:
                c["icmp"] = (int(icmp.type), int(icmp.code))
    end = _capture_end(path)
    out = []
    for c in conns:
        reset_by = None
        if c["rst"] == "refusal":
            outcome = "refused"
        elif c["rst"] is not None:
            outcome, reset_by = "reset", c["rst"]
        elif c["fins"] == {"client", "server"}:
            outcome = "closed"
        elif c["synack"] or c["ack"]:
            outcome = "established"
        elif c["icmp"] is not None:
            outcome = "unreachable"
        else:
            outcome = "timed-out" if end - c["syns"][-1] >= MIN_RTO_S else "incomplete"
        t0 = c["syns"][0] if c["syns"] else None
        out.append({"resp_p": c["server"][1], "outcome": outcome, "reset_by": reset_by, "syn_count": len(c["syns"]),
                    "icmp": c["icmp"], "client": c["client"], "server": c["server"],
                    "syn_times_s": [_us(s - t0) for s in c["syns"]]})
    return out


# ---------------------------------------------------------------------------------------------------
# what the core finds


def _ours(attempts) -> list[dict]:
    return [{"resp_p": a.resp_p, "outcome": a.outcome, "reset_by": a.reset_by, "syn_count": a.syn_count,
             "icmp": (a.icmp["type"], a.icmp["code"]) if a.icmp else None, "client": (a.orig_h, a.orig_p),
             "server": (a.resp_h, a.resp_p), "syn_times_s": a.syn_times_s}
            for a in sorted(attempts, key=lambda a: a.id)]


_PURE = r"""
import json, sys
from verifier.replay.scan import Scan
out = {}
for path in sys.argv[1:]:
    s = Scan(path)
    out[path] = {"attempts": [a.as_json() for a in s], "engine": s.stats.engine}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pure_scans() -> dict:
    """Every golden file through the pure-Python reference, in one subprocess: {stem: [as_json()]}."""
    paths = sorted(str(p) for p in GOLDEN.glob("*.pcapng"))
    res = subprocess.run([sys.executable, "-c", _PURE, *paths], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VERIFIER_PURE": "1"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {v["engine"] for v in out.values()} == {"python"}, "the subprocess did not run the pure engine"
    return {Path(p).stem: v["attempts"] for p, v in out.items()}


def _claim_expectations(name: str, trace) -> None:
    """The conformance suite's packet expectation for the file's claim, on the saved trace."""
    e = expect(trace)
    if name.startswith("c1_") or name.startswith("c9_") or name.startswith("c12_"):
        e.connection(dport=5000).handshake().no_rst().fin_from("client").fin_from("server")
    elif name.startswith("c2_"):
        e.connection(dport=5000).syn_count(4 if "linear1" in name else 7).no_rst()
    elif name.startswith("c3_"):
        e.connection(dport=5001).refused().syn_count(1)
    elif name == "c4b_linger_rst_ipv4":
        e.connection(dport=5000).handshake().reset_by("client")
        assert e.connection(dport=5000).connection.first("FIN", "c>s") is None  # RST, not FIN
    elif name == "c4b_unread_data_rst_ipv6":
        e.connection(dport=5000).handshake().reset_by("server")
    elif name.startswith("c4c_"):
        conn = e.connection(dport=5002).reset_by("server").connection
        ack = conn.first("ACK", "c>s")
        rst = conn.first("RST", "s>c")
        assert rst.seq_abs == ack.ack_abs  # the RST's seq is the crafted segment's ack
    elif name.startswith("c5_"):
        t, c = (3, 1) if "ipv4" in name else (1, 0)
        e.connection(dport=5000).icmp(type=t, code=c).syn_count(2 if "reject" in name else 1)
    elif name.startswith("c6_"):
        e.connection_count(2, dport=5003)
        e.connection(dport=5003, index=1).refused()
    elif name.startswith("c8_"):
        e.connection(dport=5000).handshake().reset_by("server")
    elif name.startswith("c10_") or name.startswith("c11_"):
        n = 4 if name.startswith("c10_") else 6
        e.connection_count(n, dport=5000)
        tuples = {(c.client, c.server) for c in trace.connections}
        assert len(tuples) == n
        for i in range(n):
            e.connection(dport=5000, index=i).handshake().fin_from("server").no_rst()
    elif name.startswith("c14_"):
        e.connection(dport=5000).handshake().no_rst().fin_from("server")
    else:  # pragma: no cover
        raise AssertionError(f"no claim expectation for {name}")


def _files() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.pcapng"))


def _readme_rows() -> dict[str, str]:
    """file stem -> its row of the README's table (a row may describe two files)."""
    rows = {}
    for line in (GOLDEN / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            for stem in re.findall(r"`([^`]+)\.pcapng`", line.split("|")[1]):
                rows[stem] = line
    return rows


def test_every_golden_capture_is_described_and_tested():
    rows = _readme_rows()
    assert _files() == sorted(rows) == sorted(README_STATES) == sorted(ZEEK_FIELDS_OF_OUR_OWN_OUTPUT) \
        == sorted(CONDITIONS)
    for name in _files():
        assert (GOLDEN / f"{name}.pcapng").stat().st_size < 16_000, "golden captures are kept small"


@pytest.mark.parametrize("name", _files())
def test_readme_states_what_was_typed_from_it(name):
    """README_STATES and the Zeek fields are the README's words: each row's count, outcome, SYN count,
    ICMP and Zeek fields appear in it (so a README edit and the tables cannot drift apart)."""
    row = _readme_rows()[name].split("|")[4]
    states = README_STATES[name]
    for outcome in {s[1] for s in states}:
        n = sum(s[1] == outcome for s in states)
        word = {"reset": "reset by the", "timed-out": "timed-out"}.get(outcome, outcome)
        assert f"{n} × {word}" in row, (name, outcome, row)
    for _, outcome, reset_by, syns, icmp in states:
        if reset_by:
            assert f"reset by the {reset_by}" in row
        if icmp:
            assert f"{icmp[0]}/{icmp[1]}" in row
        if syns > 1:
            assert f"{syns} SYNs" in row
    for cs, hist in set(ZEEK_FIELDS_OF_OUR_OWN_OUTPUT[name]) - _NOT_IN_README.get(name, set()):
        assert f"{cs} {hist}" in row, (name, cs, hist, row)


@pytest.mark.parametrize("name", _files())
def test_golden_outcomes_follow_from_the_packets(name, pure_scans):
    """The outcome of every connection: derived from the packets == the README's statement == the
    compiled engine == the pure reference == the Trace that expect() reads."""
    path = GOLDEN / f"{name}.pcapng"
    derived = _derive(path)
    fields = ("resp_p", "outcome", "reset_by", "syn_count", "icmp")
    assert [tuple(d[k] for k in fields) for d in derived] == README_STATES[name], "the packets vs the README"
    scan = Scan(path)
    ours = _ours(scan)
    assert scan.stats.engine == "compiled"
    assert ours == derived, "the compiled engine vs the packets"
    pure = [{"resp_p": r["resp_p"], "outcome": r["outcome"], "reset_by": r["reset_by"], "syn_count": r["syn_count"],
             "icmp": (r["icmp"]["type"], r["icmp"]["code"]) if r["icmp"] else None,
             "client": (r["orig_h"], r["orig_p"]), "server": (r["resp_h"], r["resp_p"]),
             "syn_times_s": r["syn_times_s"]} for r in sorted(pure_scans[name], key=lambda r: r["id"])]
    assert pure == derived, "the pure reference vs the packets"
    trace = load_trace(path)
    assert _ours(trace.connections) == derived, "the Trace vs the packets"
    assert not scan.stats.damage_count and not scan.stats.truncated and not scan.stats.lost


def test_the_syn_times_the_readme_states():
    """c2 linear1: "SYNs at 0, 1.0, 2.1, 4.1 s"; linear5: "seven SYNs one second apart"."""
    (a,) = Scan(GOLDEN / "c2_syn_timeout_linear1_retries2_ipv4.pcapng")
    assert [round(t, 1) for t in a.syn_times_s] == [0.0, 1.0, 2.1, 4.1]
    (b,) = Scan(GOLDEN / "c2_syn_timeout_linear5_retries2_ipv6.pcapng")
    gaps = [y - x for x, y in zip(b.syn_times_s, b.syn_times_s[1:])]
    assert len(b.syn_times_s) == 7 and all(abs(g - 1.0) < 0.05 for g in gaps), gaps
    (c,) = [x for x in Scan(GOLDEN / "c8_accept_queue_abort1_ipv4.pcapng") if x.outcome == "incomplete"]
    # "the capture ends 0.03 s after the second [SYN]"
    assert round((c.end_ns - c.start_ns) / 1e9 - c.syn_times_s[-1], 2) == 0.03


@pytest.mark.parametrize("name", _files())
def test_golden_zeek_fields_change_detector(name, pure_scans):
    """CHANGE DETECTOR of our own output (see ZEEK_FIELDS_OF_OUR_OWN_OUTPUT): Zeek's conn_state and
    history as our code computed them when the README was written, compiled and pure alike."""
    got = [(a.conn_state, a.history) for a in sorted(Scan(GOLDEN / f"{name}.pcapng"), key=lambda a: a.id)]
    assert got == ZEEK_FIELDS_OF_OUR_OWN_OUTPUT[name]
    pure = [(r["conn_state"], r["history"]) for r in sorted(pure_scans[name], key=lambda r: r["id"])]
    assert pure == got


@pytest.mark.parametrize("name", _files())
def test_golden_claim_expectations(name):
    path = GOLDEN / f"{name}.pcapng"
    trace = load_trace(path)
    _claim_expectations(name, trace)
    for v in check(path, *CONDITIONS[name]):
        assert v.ok, v.text()
    for v in check(trace, *CONDITIONS[name]):  # the same checks on a Trace
        assert v.ok, v.text()
    for v in check(list(Scan(path)), *CONDITIONS[name]):  # and on the streamed attempts
        assert v.ok, v.text()
