"""The `reject` fault: the kernel answers matching packets at once with an ICMP error (nft `reject`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults.base import Match, NftFault, Option, nft_until

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host

# nftables' names of the ICMP and ICMPv6 codes, per friendly name (nftables spells them differently).
_CODES = {
    "host-unreachable": ("host-unreachable", "addr-unreachable"),
    "net-unreachable": ("net-unreachable", "no-route"),
    "port-unreachable": ("port-unreachable", "port-unreachable"),
    "admin-prohibited": ("admin-prohibited", "admin-prohibited"),
}


class Reject(NftFault, kind="reject"):
    """Answer matching packets at once from this host with an ICMP error (nftables `reject`).

    `code` is the ICMP/ICMPv6 type name as nftables spells it, for both families: "host-unreachable",
    "net-unreachable", "port-unreachable", "admin-prohibited". The kernel sends it within microseconds.
    Report (also `status()` while applied): `matched`, `rejected`.
    """

    hooks = (("forward", 0), ("input", 0))  # reject is only valid in input/forward/output
    options = NftFault.options + (
        Option("code", str, "the ICMP error", choices=tuple(_CODES), what="reject code"),
    )

    def __init__(self, match: Match | None = None, code: str = "host-unreachable", *,
                 duration_s: float | None = None) -> None:
        super().__init__(match, duration_s=duration_s)
        self.code = self._checked("code", code)

    def describe(self) -> str:
        return f"reject {self.match.describe()} with ICMP {self.code}"

    def action(self, m: str) -> list[str]:
        v4, v6 = _CODES[self.code]
        until = nft_until(self.deadline_ns)
        # One rule per family: nftables spells the ICMP and ICMPv6 codes differently.
        return [f'meta nfproto ipv4 {m} {until}counter name "acted" reject with icmp type {v4}',
                f'meta nfproto ipv6 {m} {until}counter name "acted" reject with icmpv6 type {v6}']

    def _report(self, host: "Host", counts: dict[str, int]) -> dict:
        report = super()._report(host, counts)
        report["rejected"] = report.pop("acted")
        report["code"] = self.code
        return report
