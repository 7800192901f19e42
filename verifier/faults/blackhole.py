"""The `blackhole` fault: a host's address that nobody answers for, no ARP reply, no neighbour
advertisement (nftables tables of families `arp` and `ip6` in the owner's namespace)."""

from __future__ import annotations

import ipaddress
import subprocess
from typing import TYPE_CHECKING

from verifier.faults.base import (DEFAULT_LIFETIME_S, MAX_DURATION_S, Fault, FaultError, Option, deadline_after,
                                  new_id, nft, nft_counters, nft_delete, nft_until, one_address, peer_of,
                                  read_sysctl, tag)

if TYPE_CHECKING:  # pragma: no cover
    from netns import Host, Testbed


class Blackhole(Fault, kind="blackhole"):
    """Make a host's address unreachable with no answer at all: no ARP reply, no neighbour advertisement.

        with inject(bed.server, Blackhole()) as bh:     # all the server's addresses
            ...    # routed: the router's resolution fails, it sends ICMP host unreachable back;
                   # pair: the client's own resolution fails; either way connect() -> EHOSTUNREACH

    Applied to the host that owns the address. In its namespace an nft table of family `arp` drops
    ARP requests for the address (input) and any ARP the host would send from it (output), and one of
    family `ip6` drops neighbour solicitations for it (input, matched on the target address in the
    ICMPv6 body) and the solicitations and advertisements it would send from it (output): so no
    neighbour ever learns its link-layer address. The neighbours' caches (the peers of its links,
    in their own namespaces) are flushed of the address when the fault starts, so none answers from
    cache, and when it ends, so none keeps the FAILED entry.

    A neighbour gives up after `mcast_solicit + app_solicit` probes `retrans_time_ms` apart (its
    `net.ipv{4,6}.neigh.<dev>.*` sysctls): the report gives each neighbour's settings and that time
    (`resolution_ms`), read in its namespace when the fault starts.

    Every drop rule carries its own expiry (nft `meta time`): after `duration_s` (default 60 s, at
    most a day) the address answers again even if nobody removes the tables.

    The command line applies it to the host that owns `address` (default: the server's first address).
    Report (also `status()` while applied): `addresses`, `arp_dropped`, `nd_dropped`, `neighbours`
    (netns, dev, family, settings, `resolution_ms`), `until_ns`.
    """

    default_host = "server"  # on the command line: the owner of --address, by default the server's
    options = (
        Option("address", one_address, "the address or host name to blackhole (default: every address of the "
                                       "host; on the command line without --host, the server's first)",
               address="one"),
        Option("family", int, "only the addresses of one IP family", choices=(4, 6), what="IP family"),
        Option("duration_s", float, "the drop rules stop acting after this long (nft meta time)", low=0,
               low_open=True, high=MAX_DURATION_S, flag=False),
    )

    def __init__(self, address: str | None = None, *, family: int | None = None,
                 duration_s: float | None = None) -> None:
        super().__init__()
        self.address = self._checked("address", address or None)
        self.family = self._checked("family", family)
        self.duration_s = self._checked("duration_s", DEFAULT_LIFETIME_S if duration_s is None else duration_s)
        self.deadline_ns: int | None = None
        self.addresses: list[str] = []
        self.tables: list[tuple[str, str]] = []
        self.neighbours: list[dict] = []
        self._host: "Host | None" = None

    @classmethod
    def on_testbed(cls, bed: "Testbed", options: dict, host: str | None) -> str:
        """The host is --host (every address of it, unless --address says one), or else the owner of
        --address, by default the server's first address (of --family)."""
        if host is not None:
            return host
        given = options.get("address")
        if given:
            address = one_address(given)
        else:
            own = bed["server"].addresses(options.get("family"))
            if not own:
                raise FaultError(f"the server of testbed {bed.name} has no IPv{options.get('family')} address "
                                 f"(the testbed is {bed.family})")
            address = own[0]
        owner = next((h for h in bed.hosts.values() if address in h.addresses()), None)
        if owner is None:
            raise FaultError(f"no host of testbed {bed.name} has the address {address}")
        options["address"] = address
        return owner.name

    def describe(self) -> str:
        return f"blackhole {self.address or 'every address of the host'}" + \
            (f" (IPv{self.family})" if self.family else "")

    def apply(self, host: "Host") -> None:
        own = host.addresses(self.family)
        if self.address is not None:
            if ipaddress.ip_address(self.address) not in {ipaddress.ip_address(a) for a in own}:
                raise FaultError(f"{self.address} is not an address of {host.name}: apply a blackhole to the host "
                                 f"that owns the address")
            own = [self.address]
        if not own:
            raise FaultError(f"{host.name} has no IPv{self.family} address to blackhole")
        self.addresses = own
        v4 = [a for a in own if ipaddress.ip_address(a).version == 4]
        v6 = [a for a in own if ipaddress.ip_address(a).version == 6]
        table = f"{tag(host)}_{self.kind}{new_id()}"
        self.deadline_ns = deadline_after(self.duration_s)
        until = nft_until(self.deadline_ns)
        rules = ""
        if v4:
            s = v4[0] if len(v4) == 1 else "{ " + ", ".join(v4) + " }"
            rules += (f"table arp {table} {{\n  counter dropped {{ }}\n"
                      f"  chain input_hook {{ type filter hook input priority -300; policy accept; "
                      f"arp daddr ip {s} {until}counter name \"dropped\" drop; }}\n"
                      f"  chain output_hook {{ type filter hook output priority -300; policy accept; "
                      f"arp saddr ip {s} {until}counter name \"dropped\" drop; }}\n}}\n")
            self.tables.append(("arp", table))
        if v6:
            # The target address of a solicitation is the 16 bytes after the ICMPv6 header's 8.
            targets = ", ".join(str(int(ipaddress.ip_address(a))) for a in v6)
            s = v6[0] if len(v6) == 1 else "{ " + ", ".join(v6) + " }"
            rules += (f"table ip6 {table} {{\n  counter dropped {{ }}\n"
                      f"  chain input_hook {{ type filter hook prerouting priority -300; policy accept; "
                      f"icmpv6 type nd-neighbor-solicit @th,64,128 {{ {targets} }} {until}counter name \"dropped\" "
                      f"drop; }}\n"
                      f"  chain output_hook {{ type filter hook output priority -300; policy accept; "
                      f"ip6 saddr {s} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} "
                      f"{until}counter name \"dropped\" drop; }}\n}}\n")
            self.tables.append(("ip6", table))
        nft(host, rules, self.kind)
        self._host = host
        try:
            self.neighbours = self._neighbours(host, v4, v6)
            self._flush()
        except BaseException:
            for family, table in self.tables:
                nft_delete(host, family, table)
            self.tables = []
            raise

    def _neighbours(self, host: "Host", v4: list[str], v6: list[str]) -> list[dict]:
        """The links' peers that would resolve the addresses, and their neighbour settings."""
        out = []
        for itf in host.interfaces:
            peer = peer_of(host, itf)
            for fam, addrs in ((4, v4), (6, v6)):
                mine = [a for a in addrs if itf.addresses.get(fam) == a]
                if not mine:
                    continue
                base = f"net.ipv{fam}.neigh.{peer['ifname']}"
                settings = {k: int(read_sysctl(peer["netns"], f"{base}.{k}"))
                            for k in ("mcast_solicit", "app_solicit", "ucast_solicit", "retrans_time_ms")}
                out.append({"host": peer["host"], "netns": peer["netns"], "dev": peer["ifname"], "family": fam,
                            "addresses": mine, **settings,
                            # Resolution of a new entry: mcast_solicit (+ app_solicit) probes, one every
                            # retrans_time, and FAILED at the timer after the last (net/core/neighbour.c).
                            "resolution_ms": (settings["mcast_solicit"] + settings["app_solicit"])
                            * settings["retrans_time_ms"]})
        return out

    def _flush(self) -> None:
        for n in self.neighbours:
            for addr in n["addresses"]:
                res = subprocess.run(["ip", "-n", n["netns"], "neigh", "flush", "to", addr, "dev", n["dev"]],
                                     capture_output=True, text=True, timeout=10)
                if res.returncode != 0:
                    raise FaultError(f"could not flush {addr} from the neighbour cache of {n['host']}: "
                                     f"{res.stderr.strip()}")

    def _dropped(self, host: "Host") -> dict[str, int]:
        dropped = {"arp": 0, "ip6": 0}
        for family, table in self.tables:
            dropped[family] += (nft_counters(host, family, table) or {}).get("dropped", 0)
        return dropped

    def _report(self, host: "Host", dropped: dict[str, int]) -> dict:
        return {"fault": self.kind, "host": host.name, "addresses": self.addresses, "arp_dropped": dropped["arp"],
                "nd_dropped": dropped["ip6"], "neighbours": self.neighbours, "until_ns": self.deadline_ns}

    def status(self) -> dict:
        """While applied: the report so far (the drop counters read now)."""
        if self._host is None:
            raise FaultError("the blackhole is not applied")
        return self._report(self._host, self._dropped(self._host))

    def remove(self, host: "Host") -> dict:
        dropped = {"arp": 0, "ip6": 0}
        try:
            dropped = self._dropped(host)
            for family, table in self.tables:
                nft_delete(host, family, table)
        finally:
            self.tables = []
            self._host = None
            self._flush()
        self.report = self._report(host, dropped)
        return self.report

