"""`verifier replay` offline: the fast path's reading and decoding, its two engines, the expectation
language, and the command's output and errors.

Cross-checks: the C and Python engines agree record for record (and on every counter) on crafted
captures, the golden captures and the Zeek oracle's real traces; both agree with the detailed path
(`load_trace` + `classify_trace`) wherever the detailed decoder can see the packets; and the fast
decoder's fields equal Scapy's dissection of the same frames.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
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

from verifier import replay
from verifier.analysis.classify import classify_trace
from verifier.replay.fastpath import (ICMP_ITEM, TCP_ITEM, CEngine, ScanStats, decode_frame, engine_available, scan)
from verifier.pcap import CaptureFormatError, CaptureTruncatedWarning, CaptureFile, PcapngWriter
from verifier.analysis.tracefile import load_trace

from .crafted import C, C6, S, S6, T0, ZEEK, eth, handshake, needs_zeek, tcp, write

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "captures" / "golden"


@pytest.fixture(scope="module")
def engines():
    if engine_available():
        return ("c", "python")
    if os.environ.get("VERIFIER_REQUIRE_ROOT") == "1":
        pytest.fail("the C fast path cannot be built (no cc?)")
    return ("python",)


def both(source, engines, **kw):
    """Records and stats from every engine; asserts they agree; returns the first engine's."""
    results = []
    for engine in engines:
        st = ScanStats()
        src = io.BytesIO(source) if isinstance(source, bytes) else source
        recs = sorted(scan(src, engine=engine, stats=st, **kw), key=lambda r: r.id)
        d = st.as_json()
        d.pop("engine")
        results.append(([r.as_json() | {"zo": r.extra.get("zeek_orig")} for r in recs], d, recs))
    for other in results[1:]:
        assert other[0] == results[0][0], "engines disagree on records"
        assert other[1] == results[0][1], "engines disagree on counters"
    return results[0][2], results[0][1]


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
def test_decoder_finds_the_inner_tcp_segment_as_scapy_dissects_it(name, engines):
    lt, frame, inner = ENCAPS[name]
    items = [it for it in decode_frame(lt, frame, len(frame)) if it[0] == TCP_ITEM]
    assert len(items) == 1, (name, decode_frame(lt, frame, len(frame)))
    _, fam, src, dst, sport, dport, seq, ack, flags, win, plen, complete = items[0]
    ip = IP(bytes(inner)) if inner.version == 4 else IPv6(bytes(inner))
    t = ip[TCP]
    assert (fam, import_ntop(src), import_ntop(dst)) == (ip.version, ip.src, ip.dst)
    assert (sport, dport, seq, ack, flags, win) == (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window)
    assert plen == len(t.payload) and complete
    # and the whole path: a pcapng with that link type gives the connection
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("if0", linktype=lt)
    w.write_packet(0, T0, frame)
    (rec,), st = both(buf.getvalue(), engines)
    assert {(rec.orig_h, rec.orig_p), (rec.resp_h, rec.resp_p)} == {(ip.src, t.sport), (ip.dst, t.dport)}
    assert st["tcp"] == 1 and st["malformed"] == 0


def import_ntop(b: bytes) -> str:
    import socket

    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


def test_aruba_gre_amsdu_gives_every_subframe():
    def sub(pkt) -> bytes:
        body = b"\xaa\xaa\x03\x00\x00\x00" + (b"\x08\x00" if pkt.version == 4 else b"\x86\xdd") + bytes(pkt)
        raw = b"\x02" * 12 + struct.pack("!H", len(body)) + body
        return raw + b"\0" * (-len(raw) % 4)

    wlan = bytes([0x88, 0x02]) + b"\0\0" + b"\x01" * 18 + b"\0\0" + bytes([0x80, 0x00])
    frame = bytes(eth() / OUTER / GRE(proto=0x8240) / Raw(wlan + sub(INNER4) + sub(INNER6)))
    items = decode_frame(1, frame, len(frame))
    assert [it[0] for it in items] == [TCP_ITEM, TCP_ITEM]


def test_icmp_error_item_carries_the_quoted_header():
    syn = tcp(C, S, 40000, 80, "S", 1234)
    err = bytes(eth() / IP(src="192.0.2.254", dst=C, proto=1) / Raw(bytes([3, 1, 0, 0, 0, 0, 0, 0]) + bytes(syn)[:28]))
    (item,) = decode_frame(1, err, len(err))
    assert item[0] == ICMP_ITEM
    assert item[3:5] == (3, 1) and item[7:] == (40000, 80, 1234)


def test_broken_headers_are_counted_not_fatal(engines):
    good = handshake("eth0", 0)
    bad_off = tcp(C, S, 40001, 80, "S", 1)
    bad_off[TCP].dataofs = 3  # a TCP header of 12 bytes
    frag = IP(src=C, dst=S, flags="MF", frag=0) / TCP(sport=40002, dport=80)
    short_ip = bytes(eth())[:12] + b"\x08\x00" + b"\x45\x00\x00"
    frames = good + [("eth0", 1000, bad_off), ("eth0", 1100, frag), ("eth0", 1200, short_ip)]
    recs, st = both(write(frames).getvalue(), engines)
    assert [r.orig_p for r in recs] == [40000]
    assert (st["malformed"], st["fragments"], st["tcp"]) == (2, 1, 3)


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
def test_classic_pcap_both_byte_orders_and_resolutions(big, nano, engines):
    frames = [(T0 + k * 1_000_000_000 + 1000, bytes(eth() / tcp(C, S, 40000, 80, "S", 77))) for k in range(3)]
    frames.append((T0 + 5 * 10**9, bytes(eth() / tcp(C, S, 40009, 80, "S", 78))))
    (rec, _), st = both(_pcap(frames, big=big, nano=nano), engines)
    assert (st["format"], st["packets"], rec.syn_count, rec.outcome) == ("pcap", 4, 3, "timed-out")
    assert rec.start_ns == T0 + 1000 and rec.syn_times_s == pytest.approx([0, 1, 2])


def test_big_endian_pcapng_and_interface_names(engines):
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
    (rec,), st = both(data, engines)
    assert (st["format"], rec.iface, rec.start_ns) == ("pcapng", "wan0", T0)


def test_not_a_capture_is_one_clear_error(tmp_path, engines):
    for content, words in ((b"hello, this is text\n", "not a pcap or pcapng file (magic 0x68656c6c)"),
                           (b"", "not a pcap or pcapng file")):
        p = tmp_path / "bad.pcap"
        p.write_bytes(content)
        for engine in engines:
            with pytest.raises(CaptureFormatError) as exc:
                list(scan(p, engine=engine))
            assert words in str(exc.value) and str(p) in str(exc.value) and "\n" not in str(exc.value)
    p = tmp_path / "absurd.pcapng"
    head = write(handshake("eth0")).getvalue()
    shb_len = struct.unpack_from("<I", head, 4)[0]
    p.write_bytes(head[:shb_len] + struct.pack("<II", 6, 0x7FFFFFF0) + b"\0" * 40)
    for engine in engines:
        with pytest.raises(CaptureFormatError, match="absurd length"):
            list(scan(p, engine=engine))


def test_truncated_file_warns_and_gives_what_was_read(tmp_path, engines):
    data = write(handshake("eth0") + [("eth0", 10_000, tcp(C, S, 40000, 8080, "PA", 1001, 5001, b"x" * 50))]).getvalue()
    p = tmp_path / "cut.pcapng"
    p.write_bytes(data[:-30])
    for engine in engines:
        st = ScanStats()
        with pytest.warns(CaptureTruncatedWarning, match="truncated in the middle of a record"):
            (rec,) = list(scan(p, engine=engine, stats=st))
        assert st.truncated and st.packets == 3 and rec.packets == 3


def test_snaplen_cut_payloads_still_count_their_length(engines):
    pkt = tcp(C, S, 40000, 8080, "PA", 1001, 5001, b"y" * 400)
    frames = handshake("eth0") + [("eth0", 1000, bytes(eth() / pkt)[:80])]
    recs, st = both(write(frames).getvalue(), engines)
    assert st["malformed"] == 0 and recs[0].packets == 4 and "D" in recs[0].history


# ---------------------------------------------------------------------------------------------------
# the engines against each other, the detailed path and Scapy, on real captures


def _real_files() -> list[Path]:
    files = sorted(GOLDEN.glob("*.pcapng"))
    if (ZEEK / "traces").is_dir():
        files += sorted((ZEEK / "traces").iterdir())
    return files


@needs_zeek
def test_engines_agree_on_every_real_capture(engines):
    if len(engines) < 2:
        pytest.skip("one engine only")
    for path in _real_files():
        for grouping in ("attempt", "zeek"):
            for checksums in (False, True):
                both(path, engines, grouping=grouping, checksums=checksums)


# Traces whose packets the detailed decoder (verifier.wire) cannot see, or sees differently.
DETAILED_PATH_CANNOT = {
    "cisco-fabric-path.pcap": "FabricPath frames: the detailed decoder sees only the plain copy of each SYN",
    "pppoe-over-qinq.pcap": "PPPoE: not decoded by the detailed decoder",
    "tcp__retransmit-fast009.pcap": "snaplen-cut payloads: a Trace does not know the captured length, so Zeek's "
                                    "gap ('G') is not seen by the detailed path",
}


@needs_zeek
def test_fast_path_agrees_with_the_detailed_path(engines):
    keys = ("id", "orig_h", "orig_p", "resp_h", "resp_p", "outcome", "state", "syn_count", "syn_times_s",
            "conn_state", "history", "packets", "partial", "iface", "reset_by", "icmp", "isn")
    compared = 0
    for path in _real_files():
        if path.name in DETAILED_PATH_CANNOT or path.name.startswith("tunnels__"):
            continue
        fast = sorted(scan(path, engine=engines[0]), key=lambda r: r.id)
        slow = classify_trace(load_trace(path))
        assert [{k: getattr(r, k) for k in keys} for r in fast] == [{k: getattr(r, k) for k in keys} for r in slow], \
            path.name
        compared += len(fast)
    assert compared > 50


@needs_zeek
def test_fast_decoder_agrees_with_scapy_on_real_frames():
    from scapy.all import Ether as SEther

    checked = 0
    for name in ("ftp__ipv6.pcap", "pop3__pop3.pcap", "ldap__simpleauth-diff-port.pcap", "irc-dcc-send.pcapng",
                 "modbus__modbus-and-non-modbus-p502.pcap"):
        for raw in CaptureFile(ZEEK / "traces" / name):
            items = [it for it in decode_frame(raw.linktype, raw.data, raw.orig_len) if it[0] == TCP_ITEM]
            pkt = SEther(raw.data)
            if TCP not in pkt:
                assert not items
                continue
            (it,) = items
            ip = pkt[IP] if IP in pkt else pkt[IPv6]
            t = pkt[TCP]
            plen = (ip.len - ip.ihl * 4 if ip.version == 4 else ip.plen) - t.dataofs * 4
            assert (import_ntop(it[2]), import_ntop(it[3]), it[4], it[5], it[6], it[7], it[8], it[9], it[10]) == (
                ip.src, ip.dst, t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, plen), (name, raw.index)
            checked += 1
    assert checked > 1000


def test_idle_connections_are_emitted_and_forgotten(engines):
    """Memory stays bounded: with a 10 s linger, attempts a second apart leave about ten alive."""
    if "c" not in engines:
        pytest.skip("needs the C engine")
    frames = [("eth0", k * 1_000_000, tcp(C, S, 20000 + k, 80, "S", k)) for k in range(200)]
    data = write(frames).getvalue()
    eng = CEngine(linger_s=10.0)
    try:
        most, pending = 0, b""
        for k in range(0, len(data), 2048):  # fed in pieces, as scan() streams a file
            buf = pending + data[k:k + 2048]
            used = eng.feed(buf)
            pending = buf[used:]
            eng.take()
            most = max(most, eng.live())
        assert 5 <= most <= 25, most
    finally:
        eng.close()
    recs, _ = both(data, engines, linger_s=10.0)
    assert len(recs) == 200 and all(r.outcome in ("timed-out", "incomplete") for r in recs)


def test_benchmark_generator_gives_what_it_says(tmp_path, engines):
    spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "bench" / "replay.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    info = bench.generate(tmp_path / "mix.pcapng", 3000)
    assert info["packets"] >= 3000
    recs, st = both(tmp_path / "mix.pcapng", engines)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    assert counts == info["outcomes"] and st["packets"] == info["packets"]
    # tshark, if there, reads the generated file as a valid capture
    if __import__("shutil").which("tshark"):
        import subprocess

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
])
def test_conditions_parse(text, fields):
    cond = replay.parse_condition(text)
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
    with pytest.raises(replay.ExpectSyntaxError) as exc:
        replay.parse_condition(text)
    assert words in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------------------------------
# the command


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = replay.main(["replay", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _refused_and_closed(tmp_path) -> Path:
    frames = [("eth0", 0, tcp(C, S, 41000, 5000, "S", 9)), ("eth0", 40, tcp(S, C, 5000, 41000, "RA", 0, 10))]
    frames += handshake("eth0", 1000, 41001, 8080) + [
        ("eth0", 1400, tcp(C, S, 41001, 8080, "FA", 1001, 5001)),
        ("eth0", 1500, tcp(S, C, 8080, 41001, "FA", 5001, 1002)),
        ("eth0", 1600, tcp(C, S, 41001, 8080, "A", 1002, 5002))]
    return write(frames, tmp_path / "two.pcapng")


def test_table_lists_each_connection(tmp_path, capsys):
    rc, out, err = run_cli(capsys, str(_refused_and_closed(tmp_path)))
    assert rc == 0 and not err
    lines = out.splitlines()
    assert "2 TCP connection(s)" in lines[0]
    assert lines[1].split()[:5] == ["id", "client", "server", "outcome", "SYNs"]
    assert lines[2].split()[:6] == ["0", f"{C}:41000", f"{S}:5000", "refused", "1", "0.000000"]
    assert "REJ Sr" in lines[2] and "SF ShAFf" in lines[3]


def test_json_lines_have_the_zeek_style_fields(tmp_path, capsys):
    rc, out, err = run_cli(capsys, str(_refused_and_closed(tmp_path)), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(rows) == 2
    assert {k: rows[0][k] for k in ("orig_h", "orig_p", "resp_h", "resp_p", "outcome", "syn_count", "conn_state",
                                    "history")} == {
        "orig_h": C, "orig_p": 41000, "resp_h": S, "resp_p": 5000, "outcome": "refused", "syn_count": 1,
        "conn_state": "REJ", "history": "Sr"}
    assert rows[1]["outcome"] == "closed" and rows[1]["conn_state"] == "SF"


def test_expectations_pass_fail_and_exit_status(tmp_path, capsys):
    path = str(_refused_and_closed(tmp_path))
    rc, out, _ = run_cli(capsys, path, "--expect", "every attempt to port 5000 is refused",
                         "--expect", "port 8080 closed")
    assert rc == 0 and out.count("PASS") == 2
    rc, out, _ = run_cli(capsys, path, "--expect", "port 5000 refused", "--expect", "every attempt to port 8080 is reset")
    assert rc == 1
    assert "FAIL  every attempt to port 8080 is reset: 1 of 1 attempt to port 8080 does not hold" in out
    assert f"#1 {C}:41001 > {S}:8080: closed" in out
    rc, out, _ = run_cli(capsys, path, "--expect", "port 9 refused")
    assert rc == 1 and "no attempt to port 9 in the capture" in out
    rc, out, err = run_cli(capsys, path, "--json", "--expect", "port 5000 refused")
    assert rc == 0 and "PASS" in err and all(json.loads(line) for line in out.splitlines())


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(os.urandom(64) + b"GARBAGE")
    garbage.write_bytes(b"GARB" + garbage.read_bytes())
    cases = [
        ([str(tmp_path / "missing.pcap")], "no such file"),
        ([str(garbage)], "not a pcap or pcapng file"),
        ([str(tmp_path)], "is a directory"),
        ([str(_refused_and_closed(tmp_path)), "--expect", "port five refused"], "cannot parse expectation"),
        ([str(_refused_and_closed(tmp_path)), "--against", "nosuch"], "needs both --against TESTBED and --connection"),
    ]
    for argv, words in cases:
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_truncated_file_is_a_warning_line_not_an_error(tmp_path, capsys):
    data = _refused_and_closed(tmp_path).read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-20])
    rc, out, err = run_cli(capsys, str(cut))
    assert rc == 0 and "warning:" in err and "truncated" in err and "refused" in out


def test_port_filter_and_show(tmp_path, capsys):
    path = str(_refused_and_closed(tmp_path))
    rc, out, _ = run_cli(capsys, path, "--port", "8080", "--show", "1")
    assert rc == 0
    assert "refused" not in out.split("connection 1:")[0].split("\n", 2)[2]
    assert "c>s  S    seq=0" in out and "Scapy's dissection:" in out and "TCP" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="the testbed lookup needs root")
def test_redrive_against_an_unknown_testbed_says_so(tmp_path, capsys):
    rc, out, err = run_cli(capsys, str(_refused_and_closed(tmp_path)), "--against", "nosuch", "--connection", "0")
    assert rc == 2 and "no testbed named nosuch" in err


def test_redrive_refuses_without_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    trace = load_trace(_refused_and_closed(tmp_path))
    with pytest.raises(replay.RedriveError, match="needs root"):
        replay.redrive(trace, 0, "whatever")
    assert replay.main(["replay", str(tmp_path / "two.pcapng"), "--against", "x", "--connection", "0"]) == 2


def test_check_works_on_files_traces_and_records(tmp_path):
    path = _refused_and_closed(tmp_path)
    for source in (path, str(path), load_trace(path), replay.records_of(path)):
        verdicts = replay.check(source, "port 5000 refused", "port 8080 count 1", "no attempt is reset")
        assert [v.ok for v in verdicts] == [True, True, True], [v.text() for v in verdicts]
    with pytest.raises(AssertionError, match="FAIL  port 5000 closed"):
        replay.assert_expectations(path, "port 5000 closed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replay.check(path, "port 5000 syns 1")


def test_pcapng_simple_and_obsolete_packet_blocks_and_two_sections(engines):
    """The C engine frames pcapng itself: the rarer blocks must read as the Python reader does."""
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
    recs, st = both(data, engines)
    assert st["packets"] == 3 and st["interfaces"] == ["a0", "b0"]
    assert [(r.iface, r.outcome, r.orig_p) for r in recs] == [("a0", "refused", 40000), ("b0", "incomplete", 40001)]
    assert recs[1].start_ns == t1 + 5
