"""The `drop` fault: matching packets die silently at a host (nftables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.faults.base import MAX_MATCHES, FaultError, Match, NftFault, Option, nft_until

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host


class Drop(NftFault, kind="drop"):
    """Drop matching packets silently (no RST, no ICMP): the sender sees no answer.

        Drop(Syn(dport=5000), first=2)                          # the first two SYNs to port 5000
        Drop(Match.between(bed.server, bed.client, flags="syn-ack"))   # every SYN-ACK server -> client
        Drop(Match(dport=5000), probability=0.3)                # each packet with probability 0.3

    At most one of: `first=K` drops only the first K matches, and every later one passes (nft
    `limit rate 1/week burst K packets`: a token bucket that starts with K tokens and gets the next
    one after a week, longer than any fault lives); `nth=K` drops exactly one packet, the Kth match:
    the K-1 before it and every one after it pass (an accept rule with a bucket of K-1 lets the first
    K-1 through, a drop rule with a bucket of 1 takes the next, and then both buckets are empty).
    The buckets are named objects of the table, shared by both families' rules and both hooks, so K
    counts every match; `probability=p` drops each match with probability p (nft `numgen random mod
    10000 < p*10000`, so p in steps of 0.0001). `duration_s`: the rules stop acting after that long
    (nft `meta time`, whole seconds), even if nobody removes them (default 60 s, at most a day).
    `families` (Python only) limits the rules to some IP families.

    Report (also `status()` while applied): `matched` (every matching packet), `dropped`.
    """

    verdict = "drop"
    RESOLUTION = 10000
    options = NftFault.options + (
        Option("first", int, "drop only the first K matches; later ones pass", low=1, high=MAX_MATCHES),
        Option("nth", int, "drop only the Kth match; the others, before and after it, pass", low=1,
               high=MAX_MATCHES),
        Option("probability", float, "drop each match with this probability", low=0, high=1),
    )
    #: At most one of these options may be given (the command line makes them exclusive too).
    exclusive = (("first", "nth", "probability"),)

    def __init__(self, match: Match | None = None, *, first: int | None = None, nth: int | None = None,
                 probability: float | None = None, duration_s: float | None = None,
                 families: list[int] | None = None) -> None:
        super().__init__(match, families=families, duration_s=duration_s)
        if sum(x is not None for x in (first, nth, probability)) > 1:
            raise FaultError("give at most one of first=, nth= and probability= (--first, --nth, --probability)")
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
        # A bucket refills one token a week: no fault lives that long (MAX_DURATION_S), so a bucket
        # emptied stays empty, and "first K" and "the Kth" hold for the fault's whole life.
        if self.first is not None:
            return [f"limit take {{ rate 1/week burst {self.first} packets }}"]
        if self.nth is not None:
            # burst 0 would mean nft's default of 5, so for the first match there is no "pass" bucket.
            passing = [f"limit pass {{ rate 1/week burst {self.nth - 1} packets }}"] if self.nth > 1 else []
            return passing + ["limit take { rate 1/week burst 1 packets }"]
        return []

    def action(self, m: str) -> list[str]:
        until = nft_until(self.deadline_ns)
        drop = 'counter name "acted" drop'
        if self.first is not None:
            return [f'{m} {until}limit name "take" {drop}']
        if self.nth is not None:
            rules = [f'{m} {until}limit name "pass" accept'] if self.nth > 1 else []
            return rules + [f'{m} {until}limit name "take" {drop}']
        if self.threshold is not None:
            return [f"{m} {until}numgen random mod {self.RESOLUTION} < {self.threshold} {drop}"]
        return [f"{m} {until}{drop}"]

    def _report(self, host: "Host", counts: dict[str, int]) -> dict:
        report = super()._report(host, counts)
        report["dropped"] = report.pop("acted")
        report.update(first=self.first, nth=self.nth, probability=self.probability)
        return report
