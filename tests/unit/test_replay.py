"""`verifier replay` offline, on the one core: reading and decoding, the compiled engine against the
pure-Python reference, the JSON record, streaming (idle expiry, the memory cap), lossy and damaged
captures, the expectation language, and the command's output, errors and exit status.

Cross-checks:
* the compiled engine (in this process) and the pure-Python reference (VERIFIER_PURE=1, in a
  subprocess: the same sources read as Python) agree record for record, to the JSON text, and on
  every counter and warning, on crafted captures, the golden captures and the Zeek oracle's traces;
* `verifier replay` and `verifier show` report the same connections, and `Scan` and `load_trace`
  (what `expect()` reads) the same attempts;
* the decoder's fields equal Scapy's dissection of the same frames.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
from scapy.all import GRE, IP, TCP, UDP, Dot1AD, Dot1Q, IPv6, Raw
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header
from scapy.contrib.mpls import MPLS
from scapy.layers.l2 import CookedLinux, CookedLinuxV2
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN

from verifier import cli
from verifier.analysis import conditions
from verifier.analysis.grouper import Grouper
from verifier.analysis.trace import load_trace, stream_connections
from verifier.pcap import (CaptureDamagedWarning, CaptureFile, CaptureFormatError, CaptureTruncatedWarning,
                           PcapngWriter, Reader)
from verifier.replay import redrive as redrive_mod
from verifier.replay.scan import Scan
from verifier.wire import ICMP as ICMP_KIND
from verifier.wire import TCP as TCP_KIND
from verifier.wire import Decoder, decode_frame

from .crafted import C, C6, S, S6, T0, ZEEK, eth, handshake, tcp, write

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "captures" / "golden"
VERIFIER = Path(sys.executable).with_name("verifier")  # the venv's command, as a user runs it
S_NS = 10**9


# ---------------------------------------------------------------------------------------------------
# the compiled engine and the pure-Python reference

_SCAN_JOBS = r"""
import json, sys, warnings
from verifier.replay.scan import Scan

def run(path, options):
    options = dict(options)
    if "likely_server_ports" in options:
        options["likely_server_ports"] = frozenset(options["likely_server_ports"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Scan(path, **options)
        lines = [a.json_line() for a in s]
    return {"lines": lines, "stats": s.stats.as_json(),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}

if __name__ == "__main__":
    print(json.dumps([run(path, options) for path, options in json.loads(sys.stdin.read())]))
"""
_ns: dict = {}
exec(compile(_SCAN_JOBS, "<scan jobs>", "exec"), _ns)  # the same code, in this process: the compiled engine
_run_job = _ns["run"]


def _jsonable(options: dict) -> dict:
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in options.items()}


def pure_jobs(jobs: list[tuple[str, dict]]) -> list[dict]:
    """Each (path, Scan options) through the pure-Python reference, in one subprocess."""
    res = subprocess.run([sys.executable, "-c", _SCAN_JOBS], input=json.dumps([(p, _jsonable(o)) for p, o in jobs]),
                         capture_output=True, text=True, timeout=600, env={**os.environ, "VERIFIER_PURE": "1"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert all(r["stats"]["engine"] == "python" for r in out), "the subprocess did not run the pure reference"
    return out


def compiled_job(path: str, options: dict) -> dict:
    r = _run_job(path, options)
    assert r["stats"]["engine"] == "compiled", "the engine is not compiled: run make setup"
    return r


def assert_same(compiled: dict, pure: dict, what: str) -> None:
    assert compiled["lines"] == pure["lines"], f"{what}: the engines disagree on the records"
    c, p = dict(compiled["stats"]), dict(pure["stats"])
    c.pop("engine"), p.pop("engine")
    assert c == p, f"{what}: the engines disagree on the counters"
    assert compiled["warnings"] == pure["warnings"], f"{what}: the engines disagree on the warnings"


def both(source, **options):
    """Scan `source` (bytes, a BytesIO or a path) with the compiled engine here and the pure
    reference in a subprocess; assert they agree; return (the compiled attempts by id, stats dict)."""
    tmp = None
    if isinstance(source, (bytes, io.BytesIO)):
        data = source.getvalue() if isinstance(source, io.BytesIO) else source
        tmp = tempfile.NamedTemporaryFile(suffix=".pcapng", delete=False)
        tmp.write(data)
        tmp.close()
        path = tmp.name
    else:
        path = str(source)
    try:
        (pure,) = pure_jobs([(path, options)])
        compiled = compiled_job(path, options)
        assert_same(compiled, pure, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Scan(path, **options)
            attempts = sorted(s, key=lambda a: a.id)
        return attempts, compiled["stats"]
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


def test_the_compiled_engine_is_current_and_pure_is_pure(tmp_path):
    """Without this the comparisons below compare nothing: a stale build, or a pure run that is not."""
    from verifier import engine

    assert engine.stale() == [], f"compiled from other sources than these (run make setup): {engine.stale()}"
    p = write(handshake("eth0"), tmp_path / "one.pcapng")
    assert compiled_job(str(p), {})["stats"]["engine"] == "compiled"
    assert pure_jobs([(str(p), {})])[0]["stats"]["engine"] == "python"


def test_engine_status_says_pure_modules_are_not_compiled():
    code = "import json; from verifier import engine; print(json.dumps(engine.status()))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "VERIFIER_PURE": "1"})
    assert res.returncode == 0, res.stderr
    assert not any(m["compiled"] for m in json.loads(res.stdout).values()), res.stdout


# ---------------------------------------------------------------------------------------------------
# decoding: link types, encapsulations, tunnels — against Scapy


INNER4 = IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=512)
INNER6 = IPv6(src=C6, dst=S6) / TCP(sport=40001, dport=443, flags="SA", seq=7, ack=8) / Raw(b"xyz")
OUTER = IP(src="192.0.2.100", dst="198.51.100.100")


def _ayiya(inner: bytes, nh: int) -> bytes:
    # identity 16 bytes (idlen=4), signature 20 bytes (siglen=5), auth 1 + opcode 1 (forward)
    return bytes([0x41, 0x52, 0x11, nh]) + b"\0" * 4 + b"i" * 16 + b"s" * 20 + inner


ENCAPS = {
    # name: (linktype, frame bytes, inner IP packet)
    "ethernet": (1, bytes(eth() / INNER4), INNER4),
    "ethernet-ipv6": (1, bytes(eth() / INNER6), INNER6),
    "vlan": (1, bytes(eth() / Dot1Q(vlan=5) / INNER4), INNER4),
    "qinq": (1, bytes(eth(type=0x88A8) / Dot1AD(vlan=7) / Dot1Q(vlan=9) / INNER6), INNER6),
    "mpls": (1, bytes(eth() / MPLS(label=16, s=0) / MPLS(label=17, s=1) / INNER4), INNER4),
    "pppoe": (1, bytes(eth() / PPPoE(sessionid=3) / PPP(proto=0x0021) / INNER4), INNER4),
    "fabricpath": (1, bytes(eth(type=0x8903)) + b"\x00\x01" + bytes(eth() / INNER4)[:12] + b"\x08\x00" + bytes(INNER4),
                   INNER4),
    "sll": (113, bytes(CookedLinux(pkttype=0, proto=0x0800) / INNER4), INNER4),
    "sll2": (276, bytes(CookedLinuxV2(proto=0x86DD) / INNER6), INNER6),
    "raw": (101, bytes(INNER4), INNER4),
    "raw-ipv6": (101, bytes(INNER6), INNER6),
    "ipv4-linktype": (228, bytes(INNER4), INNER4),
    "ipv6-linktype": (229, bytes(INNER6), INNER6),
    "null-host-order": (0, struct.pack("<I", 2) + bytes(INNER4), INNER4),
    "null-network-order-ipv6": (108, struct.pack(">I", 24) + bytes(INNER6), INNER6),
    "ip-in-ip": (1, bytes(eth() / OUTER / INNER4), INNER4),
    "ipv6-in-ip": (1, bytes(eth() / IP(src="192.0.2.100", dst="198.51.100.100", proto=41) / INNER6), INNER6),
    "gre": (1, bytes(eth() / OUTER / GRE() / INNER4), INNER4),
    "gre-key-seq": (1, bytes(eth() / OUTER / GRE(key_present=1, key=5, seqnum_present=1, sequence_number=9) / INNER6),
                    INNER6),
    "gre-ethernet": (1, bytes(eth() / OUTER / GRE(proto=0x6558) / eth() / INNER4), INNER4),
    "vxlan": (1, bytes(eth() / OUTER / UDP(sport=5555, dport=4789) / VXLAN(vni=42) / eth() / INNER4), INNER4),
    "geneve": (1, bytes(eth() / OUTER / UDP(sport=5555, dport=6081) / GENEVE(proto=0x6558) / eth() / INNER6),
               INNER6),
    "gtp": (1, bytes(eth() / OUTER / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=1) / INNER4), INNER4),
    "teredo": (1, bytes(eth() / OUTER / UDP(sport=3544, dport=40000) / INNER6), INNER6),
    "ayiya": (1, bytes(eth() / OUTER / UDP(sport=5072, dport=5072) / Raw(_ayiya(bytes(INNER6), 41))), INNER6),
}


@pytest.mark.parametrize("name", sorted(ENCAPS))
def test_decoder_finds_the_inner_tcp_segment_as_scapy_dissects_it(name):
    lt, frame, inner = ENCAPS[name]
    pks = [p for p in decode_frame(lt, frame, len(frame)) if p.kind == TCP_KIND]
    assert len(pks) == 1, (name, decode_frame(lt, frame, len(frame)))
    (pk,) = pks
    ip = IP(bytes(inner)) if inner.version == 4 else IPv6(bytes(inner))
    t = ip[TCP]
    assert (pk.family, pk.src, pk.dst) == (ip.version, ip.src, ip.dst)
    assert (pk.sport, pk.dport, pk.seq, pk.ack, pk.flags, pk.window) == (t.sport, t.dport, t.seq, t.ack, int(t.flags),
                                                                         t.window)
    assert pk.payload_len == len(t.payload) and pk.complete
    # and the whole path: a pcapng with that link type gives the connection, on both engines
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("if0", linktype=lt)
    w.write_packet(0, T0, frame)
    (rec,), st = both(buf.getvalue())
    assert {(rec.orig_h, rec.orig_p), (rec.resp_h, rec.resp_p)} == {(ip.src, t.sport), (ip.dst, t.dport)}
    assert st["tcp"] == 1 and st["malformed"] == 0


def test_aruba_gre_amsdu_gives_every_subframe():
    def sub(pkt) -> bytes:
        body = b"\xaa\xaa\x03\x00\x00\x00" + (b"\x08\x00" if pkt.version == 4 else b"\x86\xdd") + bytes(pkt)
        raw = b"\x02" * 12 + struct.pack("!H", len(body)) + body
        return raw + b"\0" * (-len(raw) % 4)

    wlan = bytes([0x88, 0x02]) + b"\0\0" + b"\x01" * 18 + b"\0\0" + bytes([0x80, 0x00])
    frame = bytes(eth() / OUTER / GRE(proto=0x8240) / Raw(wlan + sub(INNER4) + sub(INNER6)))
    pks = decode_frame(1, frame, len(frame))
    assert [(p.kind, p.sport) for p in pks] == [(TCP_KIND, 40000), (TCP_KIND, 40001)]


def test_icmp_error_carries_the_quoted_header():
    syn = tcp(C, S, 40000, 80, "S", 1234)
    err = bytes(eth() / IP(src="192.0.2.254", dst=C, proto=1) / Raw(bytes([3, 1, 0, 0, 0, 0, 0, 0]) + bytes(syn)[:28]))
    (pk,) = decode_frame(1, err, len(err))
    assert pk.kind == ICMP_KIND and (pk.icmp_type, pk.icmp_code, pk.src) == (3, 1, "192.0.2.254")
    q = pk.quoted
    assert (q.src, q.dst, q.sport, q.dport, q.seq, q.proto) == (C, S, 40000, 80, 1234, "tcp")


def test_broken_headers_are_counted_not_fatal():
    good = handshake("eth0", 0)
    bad_off = tcp(C, S, 40001, 80, "S", 1)
    bad_off[TCP].dataofs = 3  # a TCP header of 12 bytes
    frag = IP(src=C, dst=S, flags="MF", frag=0) / TCP(sport=40002, dport=80)
    short_ip = bytes(eth())[:12] + b"\x08\x00" + b"\x45\x00\x00"
    frames = good + [("eth0", 1000, bad_off), ("eth0", 1100, frag), ("eth0", 1200, short_ip)]
    recs, st = both(write(frames))
    assert [r.orig_p for r in recs] == [40000]
    assert (st["malformed"], st["fragments"], st["tcp"], st["packets"]) == (2, 1, 3, 6)
    # the first malformed frame is named (frame numbers as Wireshark's: index + 1)
    assert st["first_malformed"]["frame"] == 4 and "data offset" in st["first_malformed"]["what"]


# ---------------------------------------------------------------------------------------------------
# reading: pcap byte orders and resolutions, pcapng, broken files


def _pcap(frames, *, big: bool, nano: bool, linktype: int = 1) -> bytes:
    bo = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for t_ns, data in frames:
        sec, frac = divmod(t_ns, 10**9)
        out += struct.pack(bo + "IIII", sec, frac if nano else frac // 1000, len(data), len(data)) + data
    return out


@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
def test_classic_pcap_both_byte_orders_and_resolutions(big, nano):
    frames = [(T0 + k * 1_000_000_000 + 1000, bytes(eth() / tcp(C, S, 40000, 80, "S", 77))) for k in range(3)]
    frames.append((T0 + 5 * 10**9, bytes(eth() / tcp(C, S, 40009, 80, "S", 78))))
    (rec, last), st = both(_pcap(frames, big=big, nano=nano))
    assert (st["format"], st["packets"], rec.syn_count, rec.outcome) == ("pcap", 4, 3, "timed-out")
    assert rec.start_ns == T0 + 1000 and rec.syn_times_s == [0.0, 1.0, 2.0]
    assert last.outcome == "incomplete"  # the capture ends with its SYN: still trying


def test_big_endian_pcapng_and_interface_names():
    # a pcapng section written big-endian by hand: SHB, IDB with if_name and if_tsresol 6, one EPB
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(">II", btype, len(body) + 12) + body + struct.pack(">I", len(body) + 12)

    opts = struct.pack(">HH", 2, 4) + b"wan0" + struct.pack(">HH", 9, 1) + b"\x06\0\0\0" + b"\0\0\0\0"
    frame = bytes(eth() / tcp(C, S, 40000, 80, "S", 5))
    ts_us = T0 // 1000
    data = (block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
            + block(1, struct.pack(">HHI", 1, 0, 0) + opts)
            + block(6, struct.pack(">IIIII", 0, ts_us >> 32, ts_us & 0xFFFFFFFF, len(frame), len(frame)) + frame))
    (rec,), st = both(data)
    assert (st["format"], rec.iface_name, rec.start_ns, st["interfaces"]) == ("pcapng", "wan0", T0, ["wan0"])


def test_not_a_capture_is_one_clear_error(tmp_path):
    for content, words in ((b"hello, this is text\n", "not a pcap or pcapng file (magic 0x68656c6c)"),
                           (b"", "not a pcap or pcapng file"),
                           (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "too short to hold its file header")):
        p = tmp_path / "bad.pcap"
        p.write_bytes(content)
        with pytest.raises(CaptureFormatError) as exc:
            list(Scan(p))
        assert words in str(exc.value) and str(p) in str(exc.value) and "\n" not in str(exc.value)
        res = _pure_cli(p)
        assert res.returncode == 2 and words in res.stderr, res.stderr


def _absurd_block_after_the_header() -> bytes:
    head = write(handshake("eth0")).getvalue()
    shb_len = struct.unpack_from("<I", head, 4)[0]
    return head[:shb_len] + struct.pack("<II", 6, 0x7FFFFFF0) + b"\0" * 40


def test_damage_after_the_header_is_a_warning_and_a_note_not_an_error(tmp_path):
    data = _absurd_block_after_the_header()
    with pytest.warns(CaptureDamagedWarning, match="damaged at byte 48: block of type 0x00000006 claims a length"):
        recs = list(Scan(io.BytesIO(data)))
    assert recs == []
    _, st = both(data)
    assert st["damage"] == [{"offset": 48, "what": "block of type 0x00000006 claims a length of 2147483632 bytes",
                             "skipped": False}]
    assert (st["damage_count"], st["truncated"], st["packets"]) == (1, False, 0)
    # a damaged record in the middle is skipped, and what follows is still read
    frames = handshake("eth0", 0, 40000) + handshake("eth0", 1000, 40001)
    data = bytearray(write(frames).getvalue())
    epbs = [m.start() for m in re.finditer(re.escape(struct.pack("<I", 6)), bytes(data)) if m.start() % 4 == 0]
    second_epb = [o for o in epbs if struct.unpack_from("<I", data, o + 8)[0] == 0][1]  # interface id 0
    struct.pack_into("<I", data, second_epb + 8, 7)  # refers to interface 7, which is not defined
    recs, st = both(bytes(data))
    assert st["damage_count"] == 1 and st["damage"][0]["skipped"] and st["packets"] == 5
    assert [(r.orig_p, r.npackets) for r in recs] == [(40000, 2), (40001, 3)]
    # the command: what was read, the warning, and exit status 3
    p = tmp_path / "damaged.pcapng"
    p.write_bytes(bytes(data))
    rc, out, err = run_cli("replay", str(p))
    assert rc == 3 and "warning:" in err and "refers to interface 7" in err and "40001" in out
    assert "1 damaged record(s)" in out.splitlines()[-1]


def test_truncated_file_warns_and_gives_what_was_read(tmp_path):
    data = write(handshake("eth0") + [("eth0", 10_000, tcp(C, S, 40000, 8080, "PA", 1001, 5001, b"x" * 50))]).getvalue()
    p = tmp_path / "cut.pcapng"
    p.write_bytes(data[:-30])
    with pytest.warns(CaptureTruncatedWarning, match="truncated in the middle of a record"):
        (rec,) = list(Scan(p))
    assert rec.npackets == 3
    (rec,), st = both(p)
    assert st["truncated"] and st["packets"] == 3 and rec.npackets == 3


def test_snaplen_cut_payloads_still_count_their_length():
    pkt = tcp(C, S, 40000, 8080, "PA", 1001, 5001, b"y" * 400)
    frames = handshake("eth0") + [("eth0", 1000, bytes(eth() / pkt)[:80])]
    recs, st = both(write(frames))
    assert st["malformed"] == 0 and recs[0].npackets == 4 and "D" in recs[0].history


def test_pcapng_simple_and_obsolete_packet_blocks_and_two_sections():
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    def shb() -> bytes:
        return block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))

    def idb(name: bytes, snaplen: int = 0) -> bytes:
        opts = struct.pack("<HH", 2, len(name)) + name + b"\0" * (-len(name) % 4)
        opts += struct.pack("<HH", 9, 1) + b"\x09\0\0\0" + b"\0\0\0\0"
        return block(1, struct.pack("<HHI", 1, 0, snaplen) + opts)

    syn = bytes(eth() / tcp(C, S, 40000, 80, "S", 5))
    rst = bytes(eth() / tcp(S, C, 80, 40000, "RA", 0, 6))
    syn2 = bytes(eth() / tcp(C, S, 40001, 80, "S", 9))
    t1 = T0 + 1000
    data = (shb() + idb(b"a0")
            + block(6, struct.pack("<IIIII", 0, t1 >> 32, t1 & 0xFFFFFFFF, len(syn), len(syn)) + syn)
            + block(3, struct.pack("<I", len(rst)) + rst)  # simple packet block: no time, interface 0
            + shb() + idb(b"b0", snaplen=40)  # a second section: its interface 0 is the file's second
            + block(2, struct.pack("<HHIIII", 0, 0, t1 >> 32, (t1 & 0xFFFFFFFF) + 5, len(syn2), len(syn2)) + syn2))
    recs, st = both(data)
    assert st["packets"] == 3 and st["interfaces"] == ["a0", "b0"]
    assert [(r.iface_name, r.outcome, r.orig_p) for r in recs] == [("a0", "refused", 40000),
                                                                    ("b0", "incomplete", 40001)]
    assert recs[1].start_ns == t1 + 5


# ---------------------------------------------------------------------------------------------------
# real captures: the two engines, show and replay, Scan and Trace, the decoder and Scapy


def _real_files() -> list[Path]:
    files = sorted(GOLDEN.glob("*.pcapng"))
    if (ZEEK / "traces").is_dir():
        files += sorted((ZEEK / "traces").iterdir())
    return files


def test_engines_agree_on_every_real_capture():
    jobs = [(str(p), {"grouping": g, "checksums": c}) for p in _real_files() for g in ("attempt", "zeek")
            for c in (False, True)]
    jobs += [(str(p), {"grouping": "zeek", "likely_server_ports": frozenset()}) for p in _real_files()]
    for (path, options), pure in zip(jobs, pure_jobs(jobs)):
        assert_same(compiled_job(path, options), pure, f"{Path(path).name} {options}")


def _pure_cli(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(VERIFIER), "replay", *map(str, argv)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VERIFIER_PURE": "1"}, **kw)


def test_the_command_on_both_engines_prints_the_same():
    """`verifier replay FILE --json` compiled and with VERIFIER_PURE=1: the same lines, summary and exit."""
    for path in _real_files():
        a = subprocess.run([str(VERIFIER), "replay", str(path), "--json"], capture_output=True, text=True, timeout=300)
        b = _pure_cli(path, "--json")
        assert "[compiled engine]" in a.stderr and "[python engine]" in b.stderr
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout), path.name
        assert a.stderr.replace("[compiled engine]", "") == b.stderr.replace("[python engine]", ""), path.name


def test_json_line_is_as_json_on_every_attempt_of_every_real_capture():
    checked = 0
    seen_keys: set = set()
    for path in _real_files():
        for grouping in ("attempt", "zeek"):
            for a in Scan(path, grouping=grouping):
                line = a.json_line()
                d = json.loads(line)
                assert d == a.as_json(), (path.name, a.id)
                seen_keys |= set(d)
                # the times in the text are microseconds (SYN times) and nanoseconds (duration, RTT),
                # written as the shortest decimal that reads back as that value
                assert all(x == round(x, 6) for x in d["syn_times_s"]), (path.name, d["syn_times_s"])
                assert d["duration_s"] == round(d["duration_s"], 9), line
                assert d["rtt_s"] is None or d["rtt_s"] == round(d["rtt_s"], 9), line
                for key in ("duration_s", "rtt_s"):
                    text = re.search(rf'"{key}":([^,]+),', line).group(1)
                    assert text == "null" or float(text) == d[key] and len(text) <= len(f"{d[key]:.9f}"), line
                checked += 1
    assert checked > 200
    assert {"state", "lost", "evicted", "ignored_rsts", "challenged_rsts", "unexpected", "zeek_orig",
            "readings_differ"} <= seen_keys


def test_json_lines_are_what_msgspec_writes_for_the_record():
    """json_lines writes the text from the attempts' fields (grouper._JsonText); msgspec's encoding of
    the same `verifier.analysis.jsonl.Record` is the reference, byte for byte: floats, escapes, order."""
    import random

    import msgspec

    from verifier.analysis.grouper import _json_fixed, _json_int, json_lines
    from verifier.analysis.jsonl import ENCODER

    rng = random.Random(8)
    ints = [0, 2**63 - 1, 2**64 - 1] + [10**e + d for e in range(20) for d in (-1, 0, 1)]
    ints += [rng.randrange(2**b) for b in range(1, 65) for _ in range(50)]
    for v in ints:
        if v < 2**64:
            assert _json_int(v, True) == msgspec.json.encode(v), v
        if v < 2**63:
            assert _json_int(v, False) == msgspec.json.encode(v) and _json_int(-v, False) == msgspec.json.encode(-v), v
    assert _json_int(-2**63, False) == msgspec.json.encode(-2**63)
    ks = [0, 1, 9, 10, 11, 99, 100, 9999, 10000, 10001, 99999, 100000, 10**15 - 1, 10**15, 2**53, -1, -10000]
    ks += [rng.randrange(10**e, 10**(e + 1)) for e in range(17) for _ in range(300)]
    for k in ks:
        for scale in (6, 9):
            assert _json_fixed(k, scale) == msgspec.json.encode(k / 1e6 if scale == 6 else k / 1e9), (k, scale)
    checked = 0
    for path in _real_files()[:40]:
        for grouping in ("attempt", "zeek"):
            attempts = list(Scan(path, grouping=grouping))
            for a in attempts[:3]:
                a.iface_name = 'eth"0\\\n\x01\u00e9\u2028'  # a name that needs escaping
            assert json_lines(attempts) == (ENCODER.encode_lines([a.record() for a in attempts]) if attempts else b"")
            checked += len(attempts)
    assert checked > 100


def test_an_attempt_made_by_a_late_packet_is_still_swept_when_idle():
    """A sweep stops at the first live attempt that started within the linger time, which is exact
    only while packets are handled in time order. B's SYN comes too late for the reordering window:
    B is made after A though it started 11 s before, so the sweep at 16.4 s must read past A (started
    12 s, not idle) to finish B (idle since 1 s); A is finished at the end of the capture."""
    frames = [("eth0", 12_000_000, tcp(C, S, 41000, 80, "S", 100)),  # A
              ("eth0", 12_500_000, tcp(C, S, 41001, 80, "S", 200)),  # D: hands A to the grouper
              ("eth0", 1_000_000, tcp(C, S, 41002, 80, "S", 300)),  # B, late
              ("eth0", 16_500_000, tcp(C, S, 41003, 80, "S", 400))]  # E: the sweep at 16.4 s
    for engine in ("compiled", "pure"):
        attempts = (list(Scan(write(frames), linger_s=5.0)) if engine == "compiled" else
                    [json.loads(line) for line in _pure_cli(write(frames, Path(tempfile.mkdtemp()) / "late.pcapng"),
                                                            "--json", "--linger", "5").stdout.splitlines()])
        ports = [a.c_port if engine == "compiled" else a["orig_p"] for a in attempts]
        assert ports == [41002, 41000, 41001, 41003], engine


def test_json_record_fields():
    frames = [("eth0", 0, tcp(C, S, 41000, 5000, "S", 9)), ("eth0", 40, tcp(S, C, 5000, 41000, "RA", 0, 10)),
              ("eth0", 100, tcp(C, S, 41002, 5000, "S", 19)), ("eth0", 150, tcp(S, C, 5000, 41002, "R", 0, 0)),
              ("eth0", 1_000_100, tcp(C, S, 41002, 5000, "S", 19)),
              ("eth0", 3_000_000, tcp(C, S, 41003, 5000, "S", 29))]
    (refused, ignored, last), _ = both(write(frames))
    d = refused.as_json()
    assert {k: d[k] for k in ("outcome", "state", "lost", "evicted", "ignored_rsts", "challenged_rsts",
                              "unexpected", "syn_times_s", "rtt_s", "duration_s")} == {
        "outcome": "refused", "state": "REFUSED", "lost": 0, "evicted": False, "ignored_rsts": 0,
        "challenged_rsts": 0, "unexpected": 0, "syn_times_s": [0.0], "rtt_s": None, "duration_s": 0.00004}
    assert '"duration_s":0.00004,' in refused.json_line() and '"syn_times_s":[0.0]' in refused.json_line()
    assert "readings_differ" not in d and "zeek_orig" not in d
    # a bare RST (no ACK) answering a SYN is dropped by the client (RFC 9293 3.10.7.3): the SYN is sent
    # again and never answered. Zeek's conn_state says REJ; the record says why the two differ.
    d = ignored.as_json()
    assert (d["outcome"], d["state"], d["conn_state"], d["ignored_rsts"], d["syn_count"]) == (
        "timed-out", "SYN_SENT", "REJ", 1, 2)
    assert d["syn_times_s"] == [0.0, 1.0] and '"syn_times_s":[0.0,1.0]' in ignored.json_line()
    assert "RST" in d["readings_differ"] and json.loads(ignored.json_line()) == d
    assert last.outcome == "incomplete"  # its SYN ends the capture: still trying


def test_show_and_replay_report_the_same_connections():
    """`verifier show --json` and `verifier replay --json`: the same count, endpoints and outcomes."""
    for path in _real_files():
        a = subprocess.run([str(VERIFIER), "replay", str(path), "--json"], capture_output=True, text=True, timeout=300)
        b = subprocess.run([str(VERIFIER), "show", str(path), "--json"], capture_output=True, text=True, timeout=300)
        assert a.returncode == b.returncode == 0, (path.name, a.stderr, b.stderr)
        ra = sorted((r["id"], r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["outcome"])
                    for r in map(json.loads, a.stdout.splitlines()))
        rb = sorted((r["id"], r["client"], r["client_port"], r["server"], r["server_port"], r["outcome"])
                    for r in map(json.loads, b.stdout.splitlines()))
        assert ra and ra == rb, path.name


def test_scan_and_trace_agree_on_every_real_capture():
    """The streaming scan (`verifier replay`) and `load_trace` (`expect()`, `verifier show`) group
    through the same core: the same attempts with the same verdicts."""
    keys = ("id", "orig_h", "orig_p", "resp_h", "resp_p", "outcome", "detail", "state", "syn_count", "syn_times_s",
            "conn_state", "history", "npackets", "partial", "iface_name", "reset_by", "icmp", "isn", "zeek_orig")
    compared = 0
    for path in _real_files():
        fast = sorted(Scan(path), key=lambda r: r.id)
        slow = load_trace(path).connections
        assert [{k: getattr(r, k) for k in keys} for r in fast] == [{k: getattr(r, k) for k in keys} for r in slow], \
            path.name
        compared += len(fast)
    assert compared > 50


def test_decoder_agrees_with_scapy_on_real_frames():
    from scapy.all import Ether as SEther

    checked = 0
    for name in ("ftp__ipv6.pcap", "pop3__pop3.pcap", "ldap__simpleauth-diff-port.pcap", "irc-dcc-send.pcapng",
                 "modbus__modbus-and-non-modbus-p502.pcap"):
        for raw in CaptureFile(ZEEK / "traces" / name):
            pks = [p for p in decode_frame(raw.linktype, raw.data, raw.orig_len) if p.kind == TCP_KIND]
            pkt = SEther(raw.data)
            if TCP not in pkt:
                assert not pks
                continue
            (p,) = pks
            ip = pkt[IP] if IP in pkt else pkt[IPv6]
            t = pkt[TCP]
            plen = (ip.len - ip.ihl * 4 if ip.version == 4 else ip.plen) - t.dataofs * 4
            assert (p.src, p.dst, p.sport, p.dport, p.seq, p.ack, p.flags, p.window, p.payload_len) == (
                ip.src, ip.dst, t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, plen), (name, raw.index)
            checked += 1
    assert checked > 1000


# ---------------------------------------------------------------------------------------------------
# streaming: idle expiry, the memory cap


def test_idle_connections_are_emitted_and_forgotten():
    """200 unanswered SYNs one second apart, linger 10 s, reorder window 0.1 s (the defaults'
    shape): a packet at t is dispatched once one later than t + 0.1 s arrives, and every
    max(linger / 10, 1 s) = 1 s the attempts idle for more than linger + 0.1 s are finished. So after
    the SYN at k s is fed, the SYNs at k-10 .. k-1 s are live (k-11 was idle 11 s > 10.1 s; k-10 only
    10 s), the one at k s is queued: exactly min(k, 10) live attempts, and attempt j is handed over
    when the SYN at j + 11 s is fed."""
    g = Grouper(linger_s=10.0, reorder_s=0.1)
    dec = Decoder()
    taken_at: dict[int, int] = {}
    for k in range(200):
        frame = bytes(eth() / tcp(C, S, 20000 + k, 80, "S", k))
        dec.frame(frame, 0, len(frame), len(frame), 1)
        (pk,) = dec.out
        pk.ts_ns = T0 + k * S_NS
        g.feed(pk)
        assert len(g.current) + len(g.shadowed) == min(k, 10), k
        for a in g.take():
            taken_at[a.id] = k
    assert taken_at == {j: j + 11 for j in range(189)}
    g.finish()
    last = sorted(g.take(), key=lambda a: a.id)
    assert [a.id for a in last] == list(range(189, 200))
    # the outcome follows the time since the last SYN: 10.9 s for those finished idle, then to the
    # end of the capture (its last packet, at 199 s): only the SYN at 199 s is < 1 s (MIN_RTO) old
    assert [a.outcome for a in last] == ["timed-out"] * 10 + ["incomplete"]
    # and the same through Scan, on both engines
    data = write([("eth0", k * 1_000_000, tcp(C, S, 20000 + k, 80, "S", k)) for k in range(200)]).getvalue()
    recs, st = both(data, linger_s=10.0)
    assert [r.outcome for r in recs] == ["timed-out"] * 199 + ["incomplete"] and st["evicted"] == 0


def _flood(n_syns: int = 10) -> list:
    """One completed handshake (port 39999), then `n_syns` unanswered SYNs 1 ms apart (40000...)."""
    return handshake("eth0", 0, 39999, 80) + [("eth0", 1000 + k * 1000, tcp(C, S, 40000 + k, 80, "S", 100 + k))
                                              for k in range(n_syns)]


def test_max_connections_evicts_the_oldest_half_open_attempts(tmp_path):
    """Cap 4: the table is full when the 4th half-open SYN comes (with the established attempt), and
    each time it is full the oldest half-open attempts are evicted down to half the cap (2 live), the
    established one never: of SYNs 0-9 (ids 1-10), 0-1 go at SYN 3, 2-3 at SYN 5, 4-5 at SYN 7, 6-7
    at SYN 9. Eight evicted, ids 1-8; the established one and the last two live to the end."""
    recs, st = both(write(_flood()), max_connections=4)
    assert st["evicted"] == 8 and st["connections"] == 11
    assert [r.id for r in recs if r.evicted] == list(range(1, 9))
    assert (recs[0].outcome, recs[0].evicted) == ("established", False)
    assert all(json.loads(r.json_line())["evicted"] == r.evicted for r in recs)
    p = write(_flood(), tmp_path / "flood.pcapng")
    rc, out, err = run_cli("replay", str(p), "--max-connections", "4", "--json")
    assert rc == 0 and [json.loads(x)["evicted"] for x in out.splitlines()].count(True) == 8
    assert "; 8 attempts evicted by the memory cap (see --max-connections)" in err
    rc, out, err = run_cli("replay", str(p))  # the default cap: nothing evicted, nothing said
    assert rc == 0 and "evicted" not in out
    # more half-open attempts than the cap, and the answered one kept: cap 2 holds it and one more
    recs, st = both(write(_flood(3)), max_connections=2)
    assert [r.id for r in recs if r.evicted] == [1, 2] and st["evicted"] == 2


def test_table_start_times_are_never_negative(tmp_path):
    p = write(_flood(2), tmp_path / "flood.pcapng")  # handshake, 2 SYNs; cap 2 evicts SYN 0 before the handshake ends
    rc, out, _ = run_cli("replay", str(p), "--max-connections", "2")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rc == 0 and float(rows["0"][5]) == 0.0, out


# ---------------------------------------------------------------------------------------------------
# lossy captures: the pcapng statistics


def _lossy(isb_at: str = "end") -> bytes:
    """Two interfaces: "lossy" (its ISB says 7 packets dropped) and "clean". On lossy: an unanswered
    SYN (41000) and a refused one (41001); on clean: an unanswered SYN (41002). The statistics
    blocks are at the end (the capture ends 5 s after the SYNs) or, with isb_at="start", right
    after the interface blocks."""
    b = io.BytesIO()
    w = PcapngWriter(b)
    lossy, clean = w.add_interface("lossy"), w.add_interface("clean")
    if isb_at == "start":
        w.write_stats(lossy, T0, received=0, dropped=7)
    w.write_packet(lossy, T0, bytes(eth() / tcp(C, S, 41000, 80, "S", 1)))
    w.write_packet(lossy, T0 + 1000, bytes(eth() / tcp(C, S, 41001, 80, "S", 5)))
    w.write_packet(lossy, T0 + 2000, bytes(eth() / tcp(S, C, 80, 41001, "RA", 0, 6)))
    w.write_packet(clean, T0 + 3000, bytes(eth() / tcp(C, S, 41002, 80, "S", 9)))
    w.write_stats(lossy, T0 + 5 * S_NS, received=3, dropped=7)
    w.write_stats(clean, T0 + 5 * S_NS, received=1, dropped=0)
    return b.getvalue()


def _check_lossy(recs, notes) -> None:
    got = [(r.orig_p, r.iface_name, r.outcome, r.lost) for r in recs]
    assert got == [(41000, "lossy", "uncertain", 7), (41001, "lossy", "refused", 7), (41002, "clean", "timed-out", 0)]
    assert "the capture lost 7 packets on lossy" in recs[0].detail
    assert "the capture lost 7 packets on lossy" in notes


@pytest.mark.parametrize("isb_at", ["end", "start"])
def test_lossy_interface_makes_unanswered_attempts_uncertain(isb_at, tmp_path):
    data = _lossy(isb_at)
    recs, st = both(data)  # a seekable file: the trailing statistics are read first
    assert st["lost"] == {"lossy": 7}
    s = Scan(io.BytesIO(data))
    _check_lossy(sorted(s, key=lambda r: r.id), s.stats.notes())
    p = tmp_path / "lossy.pcapng"
    p.write_bytes(data)
    rc, out, err = run_cli("replay", str(p))
    assert rc == 0 and out.splitlines()[-1].endswith("; the capture lost 7 packets on lossy"), out
    assert " uncertain " in out


class _ReadOnly:
    """A stream with read() only: no seek, tell, seekable or readinto."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def test_lossy_capture_from_a_stream_that_cannot_seek():
    data = _lossy()
    s = Scan(_ReadOnly(data))
    _check_lossy(sorted(s, key=lambda r: r.id), s.stats.notes())
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    writer.start()
    with os.fdopen(r, "rb") as f:
        assert not f.seekable()
        s = Scan(f)
        recs = sorted(s, key=lambda r: r.id)
    writer.join()
    _check_lossy(recs, s.stats.notes())
    # the command reading a pipe: `cat lossy.pcapng | verifier replay /dev/stdin`
    res = subprocess.run([str(VERIFIER), "replay", "/dev/stdin", "--json"], input=data, capture_output=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["outcome"] for x in res.stdout.splitlines()] == ["uncertain", "refused", "timed-out"]
    assert b"the capture lost 7 packets on lossy" in res.stderr


def test_losses_in_a_second_section_are_not_charged_to_the_first():
    def section(name, frames, dropped=None):
        b = io.BytesIO()
        w = PcapngWriter(b)
        i = w.add_interface(name)
        for t, pkt in frames:
            w.write_packet(i, T0 + t, bytes(eth() / pkt))
        if dropped is not None:
            w.write_stats(i, T0 + 20 * S_NS, received=len(frames), dropped=dropped)
        return b.getvalue()

    data = (section("a", [(0, tcp(C, S, 40000, 80, "S", 1))])
            + section("b", [(6 * S_NS, tcp(C, S, 40001, 80, "S", 2))], dropped=5))
    recs, _ = both(data, linger_s=1.0)  # the attempt on "a" is finished (idle) when the SYN on "b" comes
    assert [(r.iface_name, r.outcome, r.lost) for r in recs] == [("a", "timed-out", 0), ("b", "uncertain", 5)]


# ---------------------------------------------------------------------------------------------------
# the benchmark's generator


def test_benchmark_generator_gives_what_it_says(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "bench" / "replay.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    info = bench.generate(tmp_path / "mix.pcapng", 3000)
    assert info["packets"] >= 3000
    recs, st = both(tmp_path / "mix.pcapng")
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    assert counts == info["outcomes"] and st["packets"] == info["packets"]
    if shutil.which("tshark"):  # tshark reads the generated file as a valid capture
        res = subprocess.run(["tshark", "-r", str(tmp_path / "mix.pcapng"), "-c", "5"], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0 and res.stdout.count("\n") == 5


# ---------------------------------------------------------------------------------------------------
# the expectation language


@pytest.mark.parametrize("text, fields", [
    ("port 5000 refused", dict(quantifier="every", server=(None, 5000), predicate="outcome", outcome="refused")),
    ("every attempt to port 5000 is refused", dict(server=(None, 5000), outcome="refused")),
    ("any attempt to 203.0.113.2:5000 is established",
     dict(quantifier="any", server=("203.0.113.2", 5000), outcome="established")),
    ("no attempt to port 22 is reset by server", dict(quantifier="no", outcome="reset", reset_by="server")),
    ("the SYNs to 203.0.113.2:81 follow the linux schedule with tcp_syn_retries=2",
     dict(server=("203.0.113.2", 81), predicate="schedule", model="linux", settings={"syn_retries": 2})),
    ("203.0.113.2:81 follows linux tcp_syn_retries=2 tcp_syn_linear_timeouts=0",
     dict(predicate="schedule", settings={"syn_retries": 2, "linear_timeouts": 0})),
    ("[2001:db8:2::2]:80 follows stevens", dict(server=("2001:db8:2::2", 80), model="stevens")),
    ("from 192.0.2.2 ipv4 syns 1", dict(client=("192.0.2.2", None), family=4, predicate="syns", value=1)),
    ("port 5000 is not timed out", dict(negate=True, outcome="timed-out")),
    ("port 80 unreachable type 3 code 1", dict(outcome="unreachable", icmp_type=3, icmp_code=1)),
    ("port 5000 count 2", dict(predicate="count", value=2)),
    ("to port 5000 conn_state REJ", dict(predicate="conn_state", value="REJ")),
    ("port 5000 uncertain", dict(predicate="outcome", outcome="uncertain")),
])
def test_conditions_parse(text, fields):
    cond = conditions.parse_condition(text)
    for k, v in fields.items():
        assert getattr(cond, k) == v, (text, k)


@pytest.mark.parametrize("text, words", [
    ("port", "expected a number for port"),
    ("port 5000", "expected what to check"),
    ("port 5000 is purple", "expected an outcome"),
    ("to nowhere refused", "expected an address"),
    ("port 80 follows bsd", "expected the model"),
    ("port 80 follows linux retries=two", "expected KEY=VALUE"),
    ("port 80 follows stevens tcp_syn_retries=2", "no settings"),
    ("port 80 follows linux tcp_syn_retries=0", "SYN retries must be at least 1"),
    ("port 80 refused please", "unexpected words"),
])
def test_bad_conditions_say_why_in_one_line(text, words):
    with pytest.raises(conditions.ExpectSyntaxError) as exc:
        conditions.parse_condition(text)
    assert words in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------------------------------
# the command


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`verifier ARGV...` in this process: (exit status, stdout, stderr)."""
    was = gc.isenabled()
    out, err = io.StringIO(), io.StringIO()
    real = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    finally:
        sys.stdout, sys.stderr = real
        if was:
            gc.enable()  # the commands switch the cyclic collector off for their one pass
    return rc, out.getvalue(), err.getvalue()


def _refused_and_closed(tmp_path) -> Path:
    frames = [("eth0", 0, tcp(C, S, 41000, 5000, "S", 9)), ("eth0", 40, tcp(S, C, 5000, 41000, "RA", 0, 10))]
    frames += handshake("eth0", 1000, 41001, 8080) + [
        ("eth0", 1400, tcp(C, S, 41001, 8080, "FA", 1001, 5001)),
        ("eth0", 1500, tcp(S, C, 8080, 41001, "FA", 5001, 1002)),
        ("eth0", 1600, tcp(C, S, 41001, 8080, "A", 1002, 5002))]
    return write(frames, tmp_path / "two.pcapng")


def test_table_lists_each_connection(tmp_path):
    rc, out, err = run_cli("replay", str(_refused_and_closed(tmp_path)))
    assert rc == 0 and not err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["id", "client", "server", "outcome", "SYNs"]
    assert lines[1].split()[:6] == ["0", f"{C}:41000", f"{S}:5000", "refused", "1", "0.000000"]
    assert "REJ Sr" in lines[1] and "SF ShAFf" in lines[2]
    assert lines[3].startswith("capture ")
    assert "pcapng, 8 packets, 8 TCP segments, 2 TCP connection attempt(s)" in lines[3]
    assert len(lines) == 4


def test_json_lines_have_the_zeek_style_fields(tmp_path):
    rc, out, err = run_cli("replay", str(_refused_and_closed(tmp_path)), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(rows) == 2 and "2 TCP connection attempt(s)" in err
    assert {k: rows[0][k] for k in ("orig_h", "orig_p", "resp_h", "resp_p", "outcome", "syn_count", "conn_state",
                                    "history", "state", "lost", "evicted")} == {
        "orig_h": C, "orig_p": 41000, "resp_h": S, "resp_p": 5000, "outcome": "refused", "syn_count": 1,
        "conn_state": "REJ", "history": "Sr", "state": "REFUSED", "lost": 0, "evicted": False}
    assert (rows[1]["outcome"], rows[1]["conn_state"], rows[1]["state"]) == ("closed", "SF", "CLOSED")
    assert [r.as_json() for r in Scan(tmp_path / "two.pcapng")] == rows


def test_expectations_pass_fail_and_exit_status(tmp_path):
    path = str(_refused_and_closed(tmp_path))
    rc, out, _ = run_cli("replay", path, "--expect", "every attempt to port 5000 is refused",
                         "--expect", "port 8080 closed")
    assert rc == 0 and out.count("PASS") == 2
    rc, out, _ = run_cli("replay", path, "--expect", "port 5000 refused",
                         "--expect", "every attempt to port 8080 is reset")
    assert rc == 1
    assert "FAIL  every attempt to port 8080 is reset: 1 of 1 attempt to port 8080 does not hold" in out
    assert f"#1 {C}:41001 > {S}:8080: closed" in out
    rc, out, _ = run_cli("replay", path, "--expect", "port 9 refused")
    assert rc == 1 and "no attempt to port 9 in the capture" in out
    rc, out, err = run_cli("replay", path, "--json", "--expect", "port 5000 refused")
    assert rc == 0 and "PASS" in err and all(json.loads(line) for line in out.splitlines())


def test_exit_status_3_for_a_truncated_capture_with_its_attempts_and_a_warning(tmp_path):
    data = _refused_and_closed(tmp_path).read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-20])
    rc, out, err = run_cli("replay", str(cut))
    assert rc == 3 and "refused" in out and "truncated" in out.splitlines()[-1].split("]")[-1]
    assert err.startswith("verifier: warning: ") and "truncated in the middle of a record" in err
    rc, out, err = run_cli("replay", str(cut), "--json", "--expect", "port 5000 refused")
    assert rc == 3 and [json.loads(x)["outcome"] for x in out.splitlines()][0] == "refused" and "PASS" in err
    rc, out, err = run_cli("replay", str(cut), "--expect", "port 5000 closed")
    assert rc == 1  # a failed expectation says more than the damage
    assert _pure_cli(cut).returncode == 3


BAD_INPUT = {
    "missing file": (lambda t: [str(t / "missing.pcap")], "no such file"),
    "directory without captures": (lambda t: [str(t)], "no pcap or pcapng files in this directory"),
    "not a capture": (lambda t: [str(_garbage(t))], "not a pcap or pcapng file"),
    "bad expectation": (lambda t: [str(_refused_and_closed(t)), "--expect", "port five refused"],
                        "cannot parse expectation"),
    "show of a missing id": (lambda t: [str(_refused_and_closed(t)), "--show", "7"], "no connection 7 in"),
    "re-drive half given": (lambda t: [str(_refused_and_closed(t)), "--against", "nosuch"],
                            "needs both --against TESTBED and --connection"),
    "max-connections too small": (lambda t: [str(_refused_and_closed(t)), "--max-connections", "1"],
                                  "max_connections must be at least 2"),
}
# argparse's own errors: one line too (cli._Parser)
BAD_OPTIONS = {
    "port out of range": (["--port", "70000"], "a port is 0-65535, not 70000"),
    "negative port": (["--port", "-1"], "a port is 0-65535, not -1"),
    "port not a number": (["--port", "http"], "not a port number"),
    "linger zero": (["--linger", "0"], "give a positive, finite number of seconds"),
}


def _garbage(tmp_path) -> Path:
    p = tmp_path / "garbage.pcap"
    p.write_bytes(b"GARB" + bytes(range(64)))
    return p


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_status_2(case, tmp_path):
    make, words = BAD_INPUT[case]
    argv = make(tmp_path)
    res = subprocess.run([str(VERIFIER), "replay", *argv], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, (argv, res.returncode, res.stderr)
    assert words in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, (argv, res.stderr)
    assert res.stderr.startswith("verifier: ")


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option_values_are_status_2_without_traceback(case, tmp_path):
    extra, words = BAD_OPTIONS[case]
    res = subprocess.run([str(VERIFIER), "replay", str(_refused_and_closed(tmp_path)), *extra], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option_values_are_one_line(case, tmp_path):
    extra, words = BAD_OPTIONS[case]
    res = subprocess.run([str(VERIFIER), "replay", str(_refused_and_closed(tmp_path)), *extra], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr


def test_a_pcapng_cut_inside_its_section_header_is_not_a_capture(tmp_path):
    head = (GOLDEN / "c3_refused_ipv4.pcapng").read_bytes()[:12]  # SHB type, length 84, byte-order magic
    p = tmp_path / "head.pcapng"
    p.write_bytes(head)
    res = subprocess.run([str(VERIFIER), "replay", str(p)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "too short to hold its file header" in res.stderr, (res.returncode, res.stderr)


def test_port_filter_and_show(tmp_path):
    path = str(_refused_and_closed(tmp_path))
    rc, out, _ = run_cli("replay", path, "--port", "8080", "--show", "1")
    assert rc == 0
    table = out.split("connection 1:")[0]
    assert "refused" not in table and "41001" in table
    assert "c>s  S    seq=0" in out and "Scapy's dissection:" in out and "TCP" in out
    rc, out, _ = run_cli("replay", path, "--port", "5000", "--json")
    assert rc == 0 and [json.loads(x)["resp_p"] for x in out.splitlines()] == [5000]


@pytest.mark.skipif(os.geteuid() != 0, reason="the testbed lookup needs root")
def test_redrive_against_an_unknown_testbed_says_so(tmp_path):
    rc, out, err = run_cli("replay", str(_refused_and_closed(tmp_path)), "--against", "nosuch", "--connection", "0")
    assert rc == 2 and "no testbed named nosuch" in err and err.count("\n") == 1


def test_redrive_refuses_without_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    trace = load_trace(_refused_and_closed(tmp_path))
    with pytest.raises(redrive_mod.RedriveError, match="needs root"):
        redrive_mod.redrive(trace, 0, "whatever")
    rc, _, err = run_cli("replay", str(tmp_path / "two.pcapng"), "--against", "x", "--connection", "0")
    assert rc == 2 and "needs root" in err


def test_check_works_on_files_traces_and_attempts(tmp_path):
    path = _refused_and_closed(tmp_path)
    for source in (path, str(path), load_trace(path), list(Scan(path)), stream_connections(path)):
        verdicts = conditions.check(source, "port 5000 refused", "port 8080 count 1", "no attempt is reset")
        assert [v.ok for v in verdicts] == [True, True, True], [v.text() for v in verdicts]
    with pytest.raises(AssertionError, match="FAIL  port 5000 closed"):
        conditions.assert_expectations(path, "port 5000 closed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conditions.check(path, "port 5000 syns 1")


def test_reader_streams_a_record_larger_than_its_buffer():
    """The read buffer grows for a record bigger than a chunk: the record is read whole."""
    big = tcp(C, S, 40000, 8080, "PA", 1001, 5001, b"z" * 9000)
    data = write(handshake("eth0") + [("eth0", 1000, big)]).getvalue()
    r = Reader(io.BytesIO(data), chunk=256)
    sizes = []
    while r.next():
        sizes.append(r.rec_caplen)
    assert sizes[-1] == len(bytes(eth() / big)) and not r.truncated and r.damage == []


# --------------------------------------------------------------------------
# the process-wide memory policy of the command


def test_freed_arenas_are_kept_for_reuse_while_held(capsys):
    """hold_arenas keeps the interpreter's freed object arenas (up to its count) and hands them out
    again; hold_arenas(0) lets them go. `verifier replay` holds some while it runs, none after."""
    from verifier.analysis import grouper

    if not grouper.__file__.endswith(".so"):
        assert grouper.hold_arenas(16) == 0  # run as Python: nothing to hold
        return
    assert grouper.hold_arenas(16) == 16
    try:
        junk = [object() for _ in range(2_000_000)]  # 32 MB of 16-byte objects: ~30 arenas, filled
        del junk  # ... and emptied: freed
        assert grouper.arenas_held() == 16
        again = [object() for _ in range(600_000)]  # ~9 arenas, most taken from those kept
        assert grouper.arenas_held() <= 12
        del again
    finally:
        grouper.hold_arenas(0)
    assert grouper.arenas_held() == 0
    assert cli.main(["replay", str(GOLDEN / "c3_refused_ipv4.pcapng"), "--json"]) == 0
    assert grouper.arenas_held() == 0
