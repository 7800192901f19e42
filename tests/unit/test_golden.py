"""The golden captures (captures/golden/, described in its README), replayed offline without root.

For each file: the classification of every connection by both fast-path engines and by the detailed
path, the claim's own expectation from the conformance suite (`verifier.analysis.expect`) on the saved
capture, and `verifier replay --expect` conditions that say the same in its language.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.analysis.classify import classify_trace
from verifier.analysis.expect import expect
from verifier.replay.fastpath import engine_available, scan
from verifier.replay import check
from verifier.analysis.tracefile import load_trace

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"

# file -> per connection: (server port, outcome, reset_by, SYNs, conn_state, history, ICMP (type, code) or None)
CLOSED = (5000, "closed", None, 1, "SF", "ShAdfFa", None)
EXPECTED = {
    "c1_handshake_ipv4": [(5000, "closed", None, 1, "SF", "ShAFf", None)],
    "c1_handshake_ipv6": [(5000, "closed", None, 1, "SF", "ShAFf", None)],
    "c2_syn_timeout_linear1_retries2_ipv4": [(5000, "timed-out", None, 4, "S0", "S", None)],
    "c2_syn_timeout_linear5_retries2_ipv6": [(5000, "timed-out", None, 7, "S0", "S", None)],
    "c3_refused_ipv4": [(5001, "refused", None, 1, "REJ", "Sr", None)],
    "c3_refused_ipv6": [(5001, "refused", None, 1, "REJ", "Sr", None)],
    "c4b_linger_rst_ipv4": [(5000, "reset", "client", 1, "RSTO", "ShAR", None)],
    "c4b_unread_data_rst_ipv6": [(5000, "reset", "server", 1, "RSTR", "ShADar", None)],
    "c4c_rst_for_no_connection_ipv4": [(5002, "reset", "server", 0, "RSTRH", "Ar", None)],
    "c5_icmp_host_reject_ipv4": [(5000, "unreachable", None, 2, "S0", "S", (3, 1))],
    "c5_icmp_net_50ms_ipv6": [(5000, "unreachable", None, 1, "S0", "S", (1, 0))],
    "c6_connect_again_ipv4": [(5003, "refused", None, 1, "REJ", "Sr", None)] * 2,
    "c8_accept_queue_abort1_ipv4": [(5000, "reset", "server", 1, "RSTR", "ShAr", None)] * 4
                                   + [(5000, "incomplete", None, 2, "S0", "S", None)],
    "c9_handshake_before_accept_ipv4": [(5000, "closed", None, 1, "SF", "ShAFaf", None)],
    "c10_one_listener_ipv4": [CLOSED] * 4,
    "c11_fork_server_ipv6": [CLOSED] * 6,
    "c12_four_segment_close_ipv4": [(5000, "closed", None, 1, "SF", "ShAFaf", None)],
    "c14_exec_ipv4": [CLOSED],
}

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
    "c8_accept_queue_abort1_ipv4": ["any attempt to port 5000 is reset by server", "no attempt to port 5000 is closed"],
    "c9_handshake_before_accept_ipv4": ["port 5000 closed"],
    "c10_one_listener_ipv4": ["port 5000 count 4", "every attempt to port 5000 is closed"],
    "c11_fork_server_ipv6": ["port 5000 count 6", "every attempt to port 5000 is closed"],
    "c12_four_segment_close_ipv4": ["port 5000 closed", "port 5000 history ShAFaf"],
    "c14_exec_ipv4": ["port 5000 closed", "no attempt to port 5000 is reset"],
}


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


def test_every_golden_capture_is_described_and_tested():
    readme = (GOLDEN / "README.md").read_text()
    assert _files() == sorted(EXPECTED) == sorted(CONDITIONS)
    for name in _files():
        assert f"`{name}.pcapng`" in readme, f"{name} is not described in captures/golden/README.md"
        assert (GOLDEN / f"{name}.pcapng").stat().st_size < 16_000, "golden captures are kept small"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_capture(name):
    path = GOLDEN / f"{name}.pcapng"
    engines = ["python"] + (["c"] if engine_available() else [])
    for engine in engines:
        got = [(r.resp_p, r.outcome, r.reset_by, r.syn_count, r.conn_state, r.history,
                (r.icmp["type"], r.icmp["code"]) if r.icmp else None)
               for r in sorted(scan(path, engine=engine), key=lambda r: r.id)]
        assert got == EXPECTED[name], engine
    trace = load_trace(path)
    slow = [(r.resp_p, r.outcome, r.reset_by, r.syn_count, r.conn_state, r.history,
             (r.icmp["type"], r.icmp["code"]) if r.icmp else None) for r in classify_trace(trace)]
    assert slow == EXPECTED[name], "the detailed path"
    _claim_expectations(name, trace)
    for v in check(path, *CONDITIONS[name]):
        assert v.ok, v.text()
    for v in check(trace, *CONDITIONS[name]):  # the same checks on a Trace
        assert v.ok, v.text()
