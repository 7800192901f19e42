#!/usr/bin/env python3
"""Coverage-guided fuzzing of whole capture files: reader, decoder, grouper and both machines.

Each input is a whole pcap/pcapng file. It is read twice through the one core, as `verifier replay`
reads it: `verifier.replay.scan.Scan` iterated to the end (reader + decoder + grouper + the attempt
machine and the Zeek reading), once grouped by attempt and once as Zeek groups sessions with
checksums checked, every attempt rendered (`as_json()`, `json_line()`); and `verifier.pcap.CaptureFile`
with `verifier.wire.decode` of every frame (and the packets' views); and the reader alone with a
read buffer of a few hundred bytes, which must read exactly the same records, damage notes,
interfaces and statistics as with its default 1 MiB buffer (the inputs are smaller than that, so
only this pass crosses buffer refills inside records). The only exception allowed is
`CaptureFormatError` (the file is not a capture at all); `decode()` may also raise `MalformedPacket`,
its documented answer to a frame that claims IP/TCP/ICMP but is broken. Warnings are fine (they are
rendered, so their text is exercised too). Anything else is a crash: atheris prints the traceback
and libFuzzer writes the input as crash-<sha1> (under -artifact_prefix). An input that takes longer
than -timeout seconds is a hang (timeout-<sha1>).

The engine runs as plain Python (VERIFIER_PURE=1, the reference the compiled engine is tested
against), so that atheris sees its coverage; the compiled engine gets the same inputs through
tests/unit/test_fuzz_corpus.py once they are in tests/data/fuzz/.

    mkdir -p /tmp/fuzz-corpus
    .venv/bin/python tests/fuzz/fuzz_capture.py /tmp/fuzz-corpus tests/data/fuzz \\
        -max_len=65536 -timeout=10 -max_total_time=60 -artifact_prefix=/tmp/fuzz-artifacts/
    .venv/bin/python tests/fuzz/fuzz_capture.py tests/data/fuzz/crashers/crash-...   # reproduce one

libFuzzer's usual command line: the first directory is the corpus, where every input that reaches
new coverage is recorded; the other directories only seed it; file arguments are run once each.
`make fuzz` runs a bounded session of this and tests/fuzz/fuzz_frame.py.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import warnings

os.environ["VERIFIER_PURE"] = "1"  # before verifier is imported: the plain-Python engine

import atheris  # noqa: E402

from verifier import engine  # noqa: E402  (the package and this module uninstrumented: they only import)

# The pure finder must sit in sys.meta_path before atheris's (which atheris inserts in front of it):
# atheris then instruments the .py sources the pure finder picks instead of the compiled extensions.
engine.install_pure_finder()
with atheris.instrument_imports(include=["verifier"]):
    from verifier.pcap import CaptureFile, CaptureFormatError, Reader
    from verifier.replay.scan import Scan
    from verifier.wire import MalformedPacket, decode

_pure = [importlib.import_module(m).__spec__.origin.endswith(".py") for m in engine.MODULES]
if not all(_pure):
    sys.exit(f"fuzz_capture: the engine was not imported from its .py sources ({engine.MODULES}): "
             f"atheris would see no coverage")


def _scan(data: bytes, grouping: str, checksums: bool) -> None:
    s = Scan(io.BytesIO(data), grouping=grouping, checksums=checksums)
    n = 0
    try:
        for a in s:
            n += 1
            d = a.as_json()
            line = a.json_line()
            assert isinstance(d, dict) and json.loads(line)["id"] == d["id"], (d, line)
            a.readings_differ()
    except CaptureFormatError:
        return
    st = s.stats
    assert st.connections >= n or st.evicted, (st.connections, n)
    json.dumps(st.as_json())
    st.notes()


def _frames(data: bytes) -> None:
    cap = CaptureFile(io.BytesIO(data))
    n = 0
    try:
        for raw in cap:
            assert raw.index == n and raw.ts_ns >= 0, raw
            assert 0 <= raw.iface < len(cap.interfaces), (raw.iface, cap.interfaces)
            n += 1
            try:
                pk = decode(raw)
            except MalformedPacket as exc:
                str(exc)
                continue
            if pk is not None:
                repr(pk)
                (pk.src, pk.dst, pk.proto, pk.flag_str, pk.complete, pk.checksum_ok)
                if pk.quoted is not None:
                    repr(pk.quoted)
    except CaptureFormatError:
        return
    assert cap.packets_read == n, (cap.packets_read, n)
    for d in cap.damage:
        d.text("fuzz")
    [s.lost for s in cap.stats]


def _records(data: bytes, chunk: int | None):
    r = Reader(io.BytesIO(data)) if chunk is None else Reader(io.BytesIO(data), chunk=chunk)
    recs = []
    try:
        while r.next():
            recs.append((r.rec_index, r.rec_ts, r.rec_iface, r.rec_linktype, r.record(), r.rec_orig_len, r.rec_dir))
    except CaptureFormatError:
        return "not a capture"
    return recs, list(r.damage), r.damage_count, r.truncated, r.interfaces, list(r.stats), r.format


def _chunks(data: bytes) -> None:
    small = 1 + (len(data) * 31 + (data[-1] if data else 0)) % 600
    a, b = _records(data, None), _records(data, small)
    assert a == b, f"the reader reads differently with a {small}-byte buffer"


def TestOneInput(data: bytes) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _scan(data, "attempt", False)
        _scan(data, "zeek", True)
        _frames(data)
        _chunks(data)
    for w in caught:
        str(w.message)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
