"""The `kernel-rst-drop` fault: a host's kernel sends no RST for segments of connections it does not
know (nftables), so that Scapy can play a TCP endpoint from that host.

A SYN-ACK answering a SYN that Scapy sent from the host reaches a kernel that has no such
connection: it answers with a RST (RFC 9293 3.10.7.1), which would end the connection at the other
side before Scapy's next packet. This fault drops, in the host's output hook, every RST the host's
own stack sends that matches, and lets through the packets the packet agent sends (`netns.packets`:
they carry its firewall mark), so a scripted peer can still send its own RSTs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults.base import Match, NftFault, nft_until

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host


class KernelRstDrop(NftFault, kind="kernel-rst-drop"):
    """Drop the RSTs this host's kernel sends (those matching `sport`/`dport`/`src`/`dst`), but not the
    packets Scapy sends from the host (`host.send`, `host.sr`, scripted peers: marked by the packet
    agent). Use it on the host from which Scapy plays one side of a connection:

        fault(testbed.client, KernelRstDrop(sport=40123))     # per test: removed at teardown
        with bed.client.inject(KernelRstDrop(sport=40123)):   # or for a block
            ...

    `from_cli(sport=..., dport=..., src=..., dst=..., duration_s=...)`; the rules stop acting after
    `duration_s` (nft `meta time`), like every fault's. Report (also `status()` while applied):
    `matched` (RSTs the kernel sent that match), `dropped`.
    """

    hooks = (("output", -300),)
    default_host = "client"  # on the command line: where Scapy usually plays from
    options = tuple(o for o in NftFault.options if o.name != "flags")

    def __init__(self, match: Match | None = None, *, sport: int | None = None, dport: int | None = None,
                 src=None, dst=None, duration_s: float | None = None, families: list[int] | None = None) -> None:
        if match is None:
            match = Match(flags="rst", sport=sport, dport=dport, src=src, dst=dst)
        elif match.flags != "rst":
            match = Match(flags="rst", sport=match.sport, dport=match.dport, src=match.src, dst=match.dst)
        super().__init__(match, families=families, duration_s=duration_s)

    @classmethod
    def from_cli(cls, **given):
        given.pop("flags", None)
        return super().from_cli(**given)

    def describe(self) -> str:
        until = f", for {self.duration_s:g} s" if self.duration_s else ""
        return f"drop the kernel's own RSTs: {self.match.describe()}{until} (Scapy's pass)"

    def variants(self) -> list[str]:
        from netns.packet_agent import MARK

        return [f"{m} meta mark != {MARK:#x}" for m in super().variants()]

    def action(self, m: str) -> list[str]:
        return [f'{m} {nft_until(self.deadline_ns)}counter name "acted" drop']

    def _report(self, host: "Host", counts: dict[str, int]) -> dict:
        report = super()._report(host, counts)
        report["dropped"] = report.pop("acted")
        return report
