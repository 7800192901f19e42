"""Zeek's conn.log, written from the attempts of a Zeek-grouped reading (`Grouper(grouping="zeek")`).

Two formats, as Zeek's ASCII and JSON log writers make them (scripts/base/protocols/conn/main.zeek's
Conn::Info; LogWriterAscii's header lines): TSV with the `#separator`, `#set_separator`,
`#empty_field`, `#unset_field`, `#path`, `#open`, `#fields`, `#types` lines before the rows and
`#close` after, and JSON Lines with one object per row (unset fields left out, `ts` in seconds, as
Zeek's `LogAscii::use_json=T` writes them). So the output drops into zat, `zeek-cut`, DuckDB or Spark,
and `diff <(zeek-cut ... < conn.log) <(verifier replay X --zeek-log tsv | zeek-cut ...)` compares
with a real Zeek run.

Fields the tool cannot know as Zeek does (see `DIFFERENCES`) are named in each JSON row's
`verifier_differences` (a field Zeek does not have: readers of Zeek logs ignore it).
"""

from __future__ import annotations

import hashlib
import math

from verifier.analysis.jsonl import ENCODER

__all__ = ["DIFFERENCES", "FIELDS", "TYPES", "close_line", "header", "json_row", "row", "tsv_row", "uid"]

FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
          "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
          "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents", "ip_proto")
TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count", "count", "string",
         "bool", "bool", "count", "string", "count", "count", "count", "count", "set[string]", "count")

#: What a row of ours knowingly says differently from Zeek's, by the code used in
#: `verifier_differences` (the README's "Zeek's conn.log" section lists them too).
DIFFERENCES = {
    "uid": "derived from the connection (4-tuple, start time, row number), not Zeek's random uid",
    "service": "no protocol analyzers (no DPD): service is never set and no X (analysis limit) enters the history",
    "history_limit": "the history reached 127 letters and was cut there (Zeek's is unbounded)",
    "reassembly_limit": "more than 8 holes in one direction: the reassembler widened the last (gaps may differ)",
}

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def uid(key: bytes, start_ns: int, number: int) -> str:
    """A Zeek-shaped uid ("C" and base62) that the same capture always gives the same."""
    n = int.from_bytes(hashlib.blake2b(key + start_ns.to_bytes(8, "big", signed=True) + number.to_bytes(8, "big"),
                                       digest_size=12).digest(), "big")
    out = []
    while n:
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "C" + "".join(out)


def _zeek_time(ns: int) -> float:
    return ns / 1e9


def row(a) -> dict:
    """One conn.log row of a Zeek-grouped attempt `a` (a `verifier.analysis.grouper.Attempt`): the
    fields by name, unset ones absent; plus `verifier_differences`."""
    z = a.zeek
    if z is None:  # no TCP segment reached Zeek's reading (an ICMP error only): Zeek would log no TCP row
        return {}
    n = len(z.key) // 2
    from verifier.wire.decoder import address_text

    o, r = z.orig_key, z.resp_key
    d = {"ts": _zeek_time(z.start_time), "uid": uid(z.key, z.start_time, a.id),
         "id.orig_h": address_text(o[:n - 2]), "id.orig_p": (o[n - 2] << 8) | o[n - 1],
         "id.resp_h": address_text(r[:n - 2]), "id.resp_p": (r[n - 2] << 8) | r[n - 1], "proto": "tcp"}
    duration = z.last_time - z.start_time
    if duration > 0:  # set_conn: duration and sizes only when the duration is above 0
        d["duration"] = duration / 1e9
        d["orig_bytes"] = z.orig.size(z.resp)
        d["resp_bytes"] = z.resp.size(z.orig)
    d["conn_state"] = z.conn_state()
    d["missed_bytes"] = z.missed
    if z.history:
        d["history"] = z.history
    d.update({"orig_pkts": z.orig_pkts, "orig_ip_bytes": z.orig_ip_bytes, "resp_pkts": z.resp_pkts,
              "resp_ip_bytes": z.resp_ip_bytes, "ip_proto": 6})
    d["verifier_differences"] = ["uid", "service"] + (z.limits() or [])
    return d


def _cell(v, typ: str) -> str:
    if v is None:
        return "-"
    if typ == "time" or typ == "interval":
        return f"{v:.6f}"
    if typ == "bool":
        return "T" if v else "F"
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    return str(v)


def tsv_row(d: dict) -> str:
    """The row as a line of Zeek's ASCII (TSV) writer."""
    return "\t".join(_cell(d.get(f), t) for f, t in zip(FIELDS, TYPES)) + "\n"


def json_row(d: dict) -> bytes:
    """The row as one line of Zeek's JSON writer (with our `verifier_differences`)."""
    return ENCODER.encode(d) + b"\n"


def header(open_time: str) -> str:
    """Zeek's ASCII log header; `open_time` as Zeek writes it (YYYY-MM-DD-HH-MM-SS)."""
    return ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
            f"#open\t{open_time}\n#fields\t" + "\t".join(FIELDS) + "\n#types\t" + "\t".join(TYPES) + "\n")


def close_line(close_time: str) -> str:
    return f"#close\t{close_time}\n"
