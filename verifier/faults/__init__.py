"""Faults: disturbances applied to one testbed host, removed when they end, reporting what they did.

    with inject(bed.router, Drop(Syn(dport=5000), first=2)) as drop:
        bed.client.run([...])          # the first two SYNs to port 5000 die at the router
    drop.report                        # {"fault": "drop", "matched": 3, "dropped": 2, ...}

The kinds, one module each (`FAULT_KINDS` maps the command line's names to their classes):

* `drop.Drop`: drop matching packets silently: all, the first K, only the Kth, or each with a probability.
* `reject.Reject`: answer matching packets at once with an ICMP error from the kernel (nft `reject`).
* `icmp.IcmpUnreachable`: answer matching packets with a forged ICMP destination-unreachable,
  optionally only the Kth and after a delay (the fault agent).
* `rst.Rst`: inject a RST into an established connection, at RCV.NXT, elsewhere in the window or
  outside it (the fault agent learns the sequence numbers from the connection's packets).
* `segment.Segment`: send one crafted segment (e.g. an ACK for a connection that does not exist) and
  report the answer.
* `blackhole.Blackhole`: make a host's address unreachable with no answer at all (no ARP / neighbour reply).
* `delay.Delay`: delay matching packets: netem where the kernel has it, else a user-space delay line at
  a router (the fault agent).
* `kernel_rst.KernelRstDrop`: keep a host's kernel from sending RSTs for connections it does not know,
  while Scapy plays one side from that host (the packet agent's own packets pass).
* `synflood.SynFlood`: a bounded flood of SYNs from spoofed documentation addresses (the flood itself
  is `flood`).

What they share is in `base` (`Fault`, `Option`, `Match`, `Syn`, `inject`, the nft and agent
machinery), the agent side of a kind in `arm`, the agent process in `agent`. Each fault has
`apply(host)`, `remove(host)` (which fills `report`, a JSON-serialisable dict with a `fault` key),
`describe()` (one line), `status()` (while applied: the fields of `report`, counted now),
`from_cli(**options)` (plain str/int/float keyword arguments, as a command line gives them; each
kind's docstring lists them) and `fire(timeout=)`: the one-off action of a fault that acts once
(`Rst` sends its RST, `Segment` waits for the answer to its segment, `SynFlood` waits for the flood
to end), nothing for a standing fault; a command line calls it right after `apply`. Faults act only
inside testbed namespaces: `inject` refuses a host that is not part of a live testbed, and holds
every kind to one rule for the packets it forges (`Fault.addressed`, `base.check_addressed`): they
go to hosts of that same testbed. A fault leaves nothing behind: its nft table, qdisc and agent
sockets go when it is removed, and it ends by itself after its duration (default
`DEFAULT_LIFETIME_S`, at most `verifier.argtypes.MAX_DURATION_S`): every nft rule that acts carries
that expiry (`meta time`), and the agent closes its sockets. `Host.inject(fault)` is
`fault.applied(host)`, the same as `inject(host, fault)`.

Adding a kind: one new module here and its test, nothing else edited.

1. `verifier/faults/<kind>.py` holds `class MyFault(Fault, kind="my-fault")` (or `NftFault` for an
   nftables table, `AgentFault` for the fault agent). `kind=` registers it in `FAULT_KINDS`, which
   makes it a subcommand of `verifier inject` and a name for `from_cli`.
2. Its `options` tuple declares what it takes: `Option(name, type, help, low=, high=, choices=,
   required=, address=)`, each name a keyword argument of its constructor (`match_options()` adds the
   `Match` fields, made into its `match`); `exclusive` names groups of which one at most is given.
   The constructor checks values with `self._checked(name, value)`, and the command line's argparse
   types are the same checks, so the limits (finite numbers, bounds) hold for Python and the command
   line alike, and a bad value is refused while the arguments are parsed; `--help` and the class
   docstring list them. A kind that forges packets says where they go in `addressed()`. `default_host` or `on_testbed()` say where the command line applies it and
   what it fills in from the testbed.
3. If the fault agent does the work, the same module defines the agent side, `class MyArm(Arm,
   kind="my-arm")` (see `verifier.faults.arm`): the agent finds it in `ARM_KINDS`. Packets are built
   with `verifier.wire.encode`; nothing a kind module imports may pull in Scapy or pyroute2, since the
   agent imports every kind module when it starts.
4. Write `tests/testbed/test_<kind>.py`, which proves its effect on the wire. That is all: this
   package imports every module it holds when it is imported, which registers the kind; the agent
   finds its arm, and `verifier inject` its options, through the registries.
"""

from __future__ import annotations

import importlib
import pkgutil

from verifier.faults import flood
from verifier.faults.base import (DEFAULT_LIFETIME_S, FAULT_KINDS, AgentFault, Fault, FaultError, Match, NftFault,
                                  Option, Syn, from_cli, inject, match_options)

# Each kind module registers its kind (and its agent side) when it is imported.
from verifier.faults.drop import Drop
from verifier.faults.reject import Reject
from verifier.faults.icmp import DEFAULT_MTU, ICMP_UNREACH_CODES, IcmpUnreachable, icmp_unreach_code
from verifier.faults.rst import RST_POSITIONS, Rst
from verifier.faults.segment import Segment
from verifier.faults.blackhole import Blackhole
from verifier.faults.delay import Delay, qdisc_available
from verifier.faults.synflood import SynFlood
from verifier.faults.kernel_rst import KernelRstDrop
from verifier.faults.flood import FloodError, FloodReport, background_syn_flood, relax_rp_filter, syn_flood

# Every other module of the package too (but the agent process's), so that a new kind registers
# itself without a line here. The kinds above are imported by name for `from verifier.faults import Drop`.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "agent":
        importlib.import_module(f"{__name__}.{_module}")
del _module

__all__ = [
    "DEFAULT_LIFETIME_S", "DEFAULT_MTU", "FAULT_KINDS", "ICMP_UNREACH_CODES", "RST_POSITIONS", "AgentFault",
    "Blackhole", "Delay", "Drop", "KernelRstDrop", "Fault", "FaultError", "FloodError", "FloodReport", "IcmpUnreachable", "Match",
    "NftFault", "Option", "Reject", "Rst", "Segment", "Syn", "SynFlood", "background_syn_flood", "flood",
    "from_cli", "icmp_unreach_code", "inject", "match_options", "qdisc_available", "relax_rp_filter", "syn_flood",
]
