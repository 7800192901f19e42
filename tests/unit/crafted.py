"""Crafted packets and captures shared by the unit tests.

One copy of the helpers the tests use to build frames with Scapy and write
them to pcapng files, the addresses those frames use (documentation ranges
only: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), and the
location of the Zeek oracle's real traces.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

from scapy.all import IP, TCP, Ether, IPv6, Raw

from verifier.pcap import PcapngWriter

T0 = 1_700_000_000_000_000_000  # capture start for write(): frame times are microseconds after it

# client, server and a router that sends ICMP errors; an IPv6 client and server
C, S, R = "192.0.2.1", "198.51.100.2", "192.0.2.254"
C6, S6 = "2001:db8::1", "2001:db8:1::2"

ZEEK = Path(__file__).resolve().parents[2] / "tests" / "data" / "zeek"
def pure_module(name: str):
    """An engine module (`verifier.wire.decoder`, `verifier.pcap.reader`...) as plain Python: its
    `.py` file loaded on its own, beside the compiled module the package imports, so that one
    process can run both engines on the same input."""
    path = Path(__file__).resolve().parents[2].joinpath(*name.split(".")).with_suffix(".py")
    spec = importlib.util.spec_from_file_location("pure_" + name.rsplit(".", 1)[1], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not mod.cython.compiled
    return mod


def assert_compiled_beside_pure(name: str, pure) -> None:
    """The package imports engine module `name` compiled (`verifier.engine.status()` says so, and so
    does the module's own file, in case status() were wrong), and `pure` is its `.py` source."""
    from verifier import engine

    st = engine.status()[name]
    assert st["compiled"], f"{name} is not the compiled module (stale: {engine.stale()})"
    mod = importlib.import_module(name)
    assert not mod.__spec__.origin.endswith(".py"), mod.__spec__.origin
    assert pure.__file__.endswith(name.rsplit(".", 1)[1] + ".py") and pure is not mod


def zeek_traces() -> list[dict]:
    """The Zeek oracle's trace index (traces.jsonl, in the repository: a missing one is an error, not
    an empty list that would make the tests over it vanish)."""
    index = ZEEK / "traces.jsonl"
    return [json.loads(line) for line in index.read_text().splitlines() if line.strip()]


def eth(**kw) -> Ether:
    """Ethernet with fixed MACs: Scapy would otherwise resolve them (slow for IPv6)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 0, ack: int = 0, data: bytes = b""):
    """An IPv4 or IPv6 (by the form of `src`) TCP segment, with `data` as payload if any."""
    ip = IPv6 if ":" in src else IP
    pkt = ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
    return pkt / Raw(data) if data else pkt


def write(frames, path: Path | None = None) -> io.BytesIO | Path:
    """Write frames to pcapng: in memory (rewound), or to `path` and return it.

    frames: (interface name, microseconds after T0, IP packet or raw frame bytes), in any order;
    IP packets are put in eth() frames.
    """
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    ids: dict[str, int] = {}
    for iface, t_us, l3 in frames:
        if iface not in ids:
            ids[iface] = w.add_interface(iface)
        data = l3 if isinstance(l3, bytes) else bytes(eth() / l3)
        w.write_packet(ids[iface], T0 + t_us * 1000, data)
    if path is None:
        buf.seek(0)
        return buf
    path.write_bytes(buf.getvalue())
    return path


def handshake(iface: str, t: int = 0, sport: int = 40000, dport: int = 8080, isn_c: int = 1000, isn_s: int = 5000,
              client: str = C, server: str = S):
    """A complete three-way handshake on `iface`, starting `t` microseconds after T0, 100 us apart."""
    return [
        (iface, t, tcp(client, server, sport, dport, "S", isn_c)),
        (iface, t + 100, tcp(server, client, dport, sport, "SA", isn_s, (isn_c + 1) & 0xFFFFFFFF)),
        (iface, t + 200, tcp(client, server, sport, dport, "A", (isn_c + 1) & 0xFFFFFFFF, (isn_s + 1) & 0xFFFFFFFF)),
    ]
