"""The JSON record of an attempt (one line of `verifier replay --json`): its fields, as msgspec encodes them.

`Record` is the line's schema and msgspec's encoding of it is the reference: the engine writes the
text itself, from the attempts' typed fields in compiled code (`verifier.analysis.grouper.json_lines`;
measured faster than building a Record per attempt and encoding the list, 0.04 s against 0.07 s
for the 29,109 attempts of bench/replay.py's 200 k capture, and without the Records in memory),
using msgspec for what it does not write itself (strings, floats in exponent form);
tests/unit/test_replay.py checks it byte for byte against `ENCODER` on the real captures.
`Attempt.record()` is a line read back with `DECODER`. The field order is the line's key order;
`zeek_orig`, `readings_differ` and `zeek_differences` (where the Zeek reading hit one of its bounds:
"history_limit", "reassembly_limit"; see verifier.analysis.zeeklog.DIFFERENCES) are left out when
they have nothing to say.
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
