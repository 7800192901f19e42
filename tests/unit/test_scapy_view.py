"""Captures as Scapy packets (no root): lazily dissected PacketLists of saved captures, with the
capture's interface, direction and ns timestamp on each packet, and the packets behind a Connection's
events."""

from pathlib import Path

from scapy.layers.inet import TCP
from scapy.plist import PacketList

from verifier.analysis.trace import load_trace
from verifier.pcap import read_packets
from verifier.pcap.scapy_view import scapy_packets

GOLDEN = Path(__file__).parents[2] / "captures" / "golden" / "c3_refused_ipv4.pcapng"


def test_every_frame_with_its_capture_context_dissected_on_access():
    raws = list(read_packets(GOLDEN))
    pkts = scapy_packets(GOLDEN)
    assert isinstance(pkts, PacketList) and len(pkts) == len(raws) > 0
    assert pkts.res.dissected == 0
    for raw, pkt in zip(raws, pkts):
        assert (pkt.index, pkt.ts_ns, pkt.sniffed_on, pkt.direction) == (raw.index, raw.ts_ns, raw.iface_name,
                                                                         raw.direction)
        assert bytes(pkt) == raw.data  # MLD reports and the like too, not only TCP
        assert abs(float(pkt.time) * 1e9 - raw.ts_ns) < 1000
    assert pkts.res.dissected == len(raws)
    assert len(scapy_packets(GOLDEN, iface="client:c0")) == len(pkts)  # the golden files hold one interface
    assert len(scapy_packets(GOLDEN, iface="router:r0")) == 0
    some = scapy_packets(GOLDEN, [1, 3])
    assert [p.index for p in some] == [1, 3] and bytes(some[1]) == raws[3].data
    assert [p.index for p in pkts[2:4]] == [2, 3]  # a slice stays a lazy list


def test_a_connections_events_have_their_scapy_packets():
    trace = load_trace(GOLDEN)
    conn = trace.connections[0]
    mine = conn.scapy_packets()
    assert sorted(p.index for p in mine) == sorted(p.index for p in conn.packets)
    for event in conn.events:
        pkt = conn.scapy_packet(event)
        assert pkt.index == event.packet_index and pkt.sniffed_on == event.iface
        assert str(pkt[TCP].flags) == event.flags and pkt[TCP].seq == event.seq_abs
    assert len(trace.scapy_packets()) == trace.packet_count + trace.skipped + trace.malformed
