"""Per-host views of a capture: the packets of one interface, in a file of their own.

A capture of a testbed holds every interface, so each packet is in it once per interface it
crossed. That is the evidence, but Wireshark's TCP analysis, which runs over every frame of a file
whatever the display filter, takes the copies for retransmissions and duplicate ACKs. A view holds
one interface's packets only (with its name, timestamps, directions and statistics), so Wireshark
analyses the exchange as that host saw it:

    write_view("run.pcapng", "client:c0", view_path("run.pcapng", "client"))   # run.client.pcapng
"""

from __future__ import annotations

from pathlib import Path

from verifier.pcap import CaptureFile, PcapngWriter

__all__ = ["view_path", "write_view"]


def view_path(capture: str | Path, name: str) -> Path:
    """Where the view `name` (a host, or a host:interface label) of `capture` goes: next to it, as
    ``STEM.NAME.pcapng`` (``run.client.pcapng``, ``run.router-r0.pcapng``)."""
    capture = Path(capture)
    stem = capture.name[:-len(capture.suffix)] if capture.suffix else capture.name
    return capture.with_name(f"{stem}.{name.replace(':', '-')}.pcapng")


def write_view(capture: str | Path, label: str, dst: str | Path) -> Path:
    """Copy the packets of interface `label` (e.g. ``client:c0``) of `capture` to a new pcapng `dst`,
    with the interface's statistics; returns `dst`. Raises ValueError if there is no such interface."""
    dst = Path(dst)
    src = CaptureFile(capture)
    tmp = dst.with_name(dst.name + ".part")
    found = False
    try:
        with open(tmp, "wb") as out:
            writer = PcapngWriter(out)
            for raw in src:
                if raw.iface_name != label:
                    continue
                if not found:
                    info = next(i for i in src.interfaces if i.name == label)
                    writer.add_interface(label, linktype=info.linktype, snaplen=info.snaplen or 0,
                                         description=info.description)
                    found = True
                writer.write_packet(0, raw.ts_ns, raw.data, orig_len=raw.orig_len, direction=raw.direction)
            if not found:
                info = next((i for i in src.interfaces if i.name == label), None)
                if info is None:
                    names = ", ".join(str(i.name) for i in src.interfaces)
                    raise ValueError(f"{capture} has no interface {label!r} (it has {names})")
                writer.add_interface(label, linktype=info.linktype, snaplen=info.snaplen or 0,
                                     description=info.description)
            for st in src.stats:
                if st.iface_name == label:
                    writer.write_stats(0, st.ts_ns, received=st.received, dropped=st.dropped,
                                       os_dropped=st.os_dropped, delivered=st.delivered)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
