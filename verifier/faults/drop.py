"""The `drop` fault: matching packets die silently at a host (nftables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults.base import FaultError, Match, NftFault, Option, nft_until

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host


class Drop(NftFault, kind="drop"):
    """Drop matching packets silently (no RST, no ICMP): the sender sees no answer.

        Drop(Syn(dport=5000), first=2)                          # the first two SYNs to port 5000
        Drop(Match.between(bed.server, bed.client, flags="syn-ack"))   # every SYN-ACK server -> client
        Drop(Match(dport=5000), probability=0.3)                # each packet with probability 0.3

    At most one of: `first=K` drops only the first K matches (nft `limit rate 1/day burst K packets`:
    a token bucket that starts with K tokens and refills one a day); `nth=K` drops only the Kth match
    (an accept rule with a bucket of K-1 lets the first K-1 through, a drop rule with a bucket of 1
    takes the next). The buckets are named objects of the table, shared by both families' rules and
    both hooks, so K counts every match; `probability=p` drops each match with probability p (nft
    `numgen random mod 10000 < p*10000`, so p in steps of 0.0001). `duration_s`: the rules stop
    acting after that long (nft `meta time`, whole seconds), even if nobody removes them.
    `families` (Python only) limits the rules to some IP families.

    Report: `matched` (every matching packet), `dropped`.
    """

    verdict = "drop"
    RESOLUTION = 10000
    options = NftFault.options + (
        Option("first", int, "drop only the first K matches", low=1),
        Option("nth", int, "drop only the Kth match", low=1),
        Option("probability", float, "drop each match with this probability", low=0, high=1),
    )

    def __init__(self, match: Match | None = None, *, first: int | None = None, nth: int | None = None,
                 probability: float | None = None, duration_s: float | None = None,
                 families: list[int] | None = None) -> None:
        super().__init__(match, families=families, duration_s=duration_s)
        if sum(x is not None for x in (first, nth, probability)) > 1:
            raise FaultError("give at most one of first=, nth= and probability=")
        self.first = self._checked("first", first)
        self.nth = self._checked("nth", nth)
        self.probability = self._checked("probability", probability)
        self.threshold = round(self.probability * self.RESOLUTION) if self.probability is not None else None

    def describe(self) -> str:
        which = (f"the first {self.first}" if self.first else f"only match #{self.nth}" if self.nth
                 else f"with probability {self.probability:g}" if self.probability is not None else "every one")
        until = f", for {self.duration_s:g} s" if self.duration_s else ""
        return f"drop {self.match.describe()}: {which}{until}"

    def objects(self) -> list[str]:
        if self.first is not None:
            return [f"limit take {{ rate 1/day burst {self.first} packets }}"]
        if self.nth is not None:
            # burst 0 would mean nft's default of 5, so for the first match there is no "pass" bucket.
            passing = [f"limit pass {{ rate 1/day burst {self.nth - 1} packets }}"] if self.nth > 1 else []
            return passing + ["limit take { rate 1/day burst 1 packets }"]
        return []

    def action(self, m: str) -> list[str]:
        until = nft_until(self.deadline_ns)
        drop = 'counter name "acted" drop'
        if self.first is not None:
            return [f'{m} {until}limit name "take" {drop}']
        if self.nth is not None:
            rules = [f'{m} limit name "pass" accept'] if self.nth > 1 else []
            return rules + [f'{m} {until}limit name "take" {drop}']
        if self.threshold is not None:
            return [f"{m} {until}numgen random mod {self.RESOLUTION} < {self.threshold} {drop}"]
        return [f"{m} {until}{drop}"]

    def remove(self, host: "Host") -> dict:
        report = super().remove(host)
        report["dropped"] = report.pop("acted")
        report.update(first=self.first, nth=self.nth, probability=self.probability)
        return report
