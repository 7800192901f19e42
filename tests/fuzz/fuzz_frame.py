#!/usr/bin/env python3
"""Coverage-guided fuzzing of the frame decoder alone: `verifier.wire.decode_frame` must not raise.

Each input is one frame after a selector byte: bits 0-5 pick the link type (index into the sorted
list of link types the decoder reads, `verifier.wire.decoder.LINKTYPES`, modulo its length), bit 6
claims an original length of 65535 bytes (as a snaplen-cut or TSO frame has: lengths taken from the
wire, not from the captured bytes), bit 7 checks checksums. The rest of the input is the frame.

`decode_frame` must return at least one Packet and never raise; the packets must keep the decoder's
own invariants (valid kinds, never "unsupported link type" but for a PPI header naming an unread
one; for TCP: a flow key of two endpoints, ports and sequence numbers in
range, 0 <= captured <= payload_len, the header inside the frame; an ICMP error has its quote), and
their views (`src`, `dst`, `repr`, ...) must work. The decoder runs as plain Python
(VERIFIER_PURE=1), so that atheris sees its coverage.

    mkdir -p /tmp/fuzz-frames
    .venv/bin/python tests/fuzz/fuzz_frame.py /tmp/fuzz-frames tests/data/fuzz/frames \\
        -max_len=65536 -timeout=10 -max_total_time=30 -artifact_prefix=/tmp/fuzz-artifacts/

The seeds in tests/data/fuzz/frames/ are written by tests/fuzz/make_corpus.py.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["VERIFIER_PURE"] = "1"  # before verifier is imported: the plain-Python engine

import atheris  # noqa: E402

from verifier import engine  # noqa: E402

engine.install_pure_finder()  # in sys.meta_path before atheris's finder (see fuzz_capture.py)
with atheris.instrument_imports(include=["verifier"]):
    from verifier.wire import decoder
    from verifier.wire.decoder import ICMP, MALFORMED, TCP, UNSUPPORTED, decode_frame

if not importlib.import_module("verifier.wire.decoder").__spec__.origin.endswith(".py"):
    sys.exit("fuzz_frame: the decoder was not imported from its .py source: atheris would see no coverage")

LINKS = sorted(decoder.LINKTYPES)
KINDS = range(len(decoder.KIND_NAMES))
# A link-layer header that names the link type of what it carries (PPI, 192) may name one the decoder
# does not read: that frame is an unsupported link type, reported as such, not a decoder fault.
CARRIERS = {192}


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    sel, frame = data[0], data[1:]
    lt = LINKS[(sel & 0x3F) % len(LINKS)]
    orig = 65535 if sel & 0x40 and len(frame) < 65535 else None
    pks = decode_frame(lt, frame, orig, checksums=bool(sel & 0x80))
    assert pks, "decode_frame returned no packet"
    for pk in pks:
        assert pk.kind in KINDS and (pk.kind != UNSUPPORTED or lt in CARRIERS), (lt, pk.kind)
        repr(pk)
        (pk.proto, pk.src, pk.dst, pk.flag_str, pk.complete, pk.checksum_ok, pk.src_ep, pk.dst_ep)
        if pk.kind == TCP:
            alen = 4 if pk.family == 4 else 16
            assert pk.family in (4, 6) and len(pk.key) == 2 * alen + 4, (pk.family, pk.key)
            assert 0 <= pk.sport <= 0xFFFF and 0 <= pk.dport <= 0xFFFF, (pk.sport, pk.dport)
            assert 0 <= pk.seq <= 0xFFFFFFFF and 0 <= pk.ack <= 0xFFFFFFFF, (pk.seq, pk.ack)
            assert 0 <= pk.captured <= pk.payload_len, (pk.captured, pk.payload_len)
            assert 0 <= pk.l4_off <= len(frame) - 20, (pk.l4_off, len(frame))
            assert (pk.src_raw + pk.dst_raw) in (pk.key[:alen] + pk.key[alen + 2:-2],
                                                 pk.key[alen + 2:-2] + pk.key[:alen]), pk.key
        elif pk.kind == ICMP:
            assert pk.quoted is not None and pk.icmp_type is not None, pk
            repr(pk.quoted)
            (pk.quoted.src, pk.quoted.dst, pk.quoted.proto)
        elif pk.kind == MALFORMED:
            assert isinstance(pk.error, str) and pk.error, pk.error


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
