"""The JSON record of an attempt (one line of `verifier replay --json`), encoded by msgspec.

msgspec was chosen by benchmark (bench/replay.py, the JSON output of the 1 M-packet capture): it
encodes a list of these structs to JSON Lines in one call several times faster than building the
text field by field. The field order is the line's key order; `zeek_orig`, `readings_differ` and
`zeek_differences` (where the Zeek reading hit one of its bounds: "history_limit",
"reassembly_limit"; see verifier.analysis.zeeklog.DIFFERENCES) are left out when they have nothing
to say.
"""

from __future__ import annotations

import msgspec

__all__ = ["DECODER", "ENCODER", "Record"]


class Record(msgspec.Struct, omit_defaults=True):
    """One attempt as `verifier replay --json` prints it (see `verifier.analysis.grouper.Attempt`)."""

    id: int
    family: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    outcome: str
    detail: str
    reset_by: str | None
    syn_count: int
    syn_times_s: list
    start_ns: int
    end_ns: int
    duration_s: float
    packets: int
    conn_state: str
    history: str
    icmp: dict | None
    iface: str | None
    partial: bool
    rtt_s: float | None
    state: str
    lost: int
    evicted: bool
    ignored_rsts: int
    challenged_rsts: int
    unexpected: int
    zeek_orig: str | None = None
    readings_differ: str | None = None
    zeek_differences: list | None = None


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Record)
