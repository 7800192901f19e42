"""A host of a testbed: one network namespace, its interfaces and addresses, sysctls and programs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import namespace
from .process import Process, ProcessError, Result
from .waiting import wait_until

TCP_LISTEN = "0A"


@dataclass
class Interface:
    """One end of a veth link, inside a host."""

    name: str
    host: str
    peer_host: str
    peer_name: str
    addresses: dict[int, str] = field(default_factory=dict)  # family (4 or 6) -> address
    prefixlen: dict[int, int] = field(default_factory=dict)


class Host:
    """A machine of the testbed: a network namespace with interfaces, addresses and routes.

    `sysctl()`, `run()`, `start()` and `wait_listen()` all act inside the host's namespace and never
    in the namespace of the calling process.
    """

    def __init__(self, name: str, netns: str, workdir: Path):
        self.name = name
        self.netns = netns
        self.path = str(namespace.NETNS_RUN_DIR / netns)
        self.interfaces: list[Interface] = []
        self.gateway: dict[int, str] = {}
        self._workdir = workdir
        self._processes: list[Process] = []

    # -- addresses -----------------------------------------------------------------------------
    def addr(self, family: int = 4) -> str:
        """The host's first address of the given family (4 or 6)."""
        for itf in self.interfaces:
            if family in itf.addresses:
                return itf.addresses[family]
        raise LookupError(f"host {self.name} has no IPv{family} address in this testbed")

    def addresses(self, family: int | None = None) -> list[str]:
        return [a for itf in self.interfaces for f, a in itf.addresses.items() if family in (None, f)]

    def interface(self, name_or_peer: str) -> Interface:
        """An interface by its name, or by the host at its other end."""
        for itf in self.interfaces:
            if name_or_peer in (itf.name, itf.peer_host):
                return itf
        raise LookupError(f"host {self.name} has no interface {name_or_peer!r}")

    # -- sysctls -------------------------------------------------------------------------------
    def sysctl(self, key: str, value: object | None = None) -> str:
        """Read, or set and return, a sysctl inside this host's namespace.

        `key` uses dots (`net.ipv4.tcp_syn_retries`); a tuple/list value is written space-separated,
        as for `net.ipv4.ip_local_port_range`.
        """
        path = "/proc/sys/" + key.replace(".", "/")
        with namespace.inside(self.netns):
            try:
                if value is not None:
                    text = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
                    with open(path, "w") as f:
                        f.write(text)
                with open(path) as f:
                    return f.read().strip()
            except FileNotFoundError:
                raise KeyError(f"sysctl {key} does not exist on this kernel") from None

    # -- programs ------------------------------------------------------------------------------
    def start(self, argv: Sequence[str], env: dict | None = None, input: str | bytes | None = None) -> Process:
        """Start a program inside this host, in the background (`input`: its standard input)."""
        proc = Process(self.name, argv, lambda: namespace.enter_in_child(self.path), self._workdir, env=env,
                       input=input)
        self._processes.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0, check: bool = False, env: dict | None = None,
            input: str | bytes | None = None) -> Result:
        """Run a program inside this host to completion and return its result."""
        proc = self.start(argv, env=env, input=input)
        try:
            res = proc.wait(timeout)
        except ProcessError:
            proc.kill()
            raise
        return res.check() if check else res

    @property
    def processes(self) -> list[Process]:
        return list(self._processes)

    def stop_processes(self) -> None:
        for proc in reversed(self._processes):
            proc.stop(grace=0.2)

    # -- faults --------------------------------------------------------------------------------
    def inject(self, fault):
        """Apply a fault here for the duration of a `with` block:

            with bed.router.inject(IcmpUnreachable(code="host", match=Syn(dport=5000), nth=2)) as f:
                ...
            f.report

        A fault is any object whose `applied(host)` returns that context manager: the faults build on
        hosts, not the other way round, so this package knows nothing of them beyond that method.
        """
        return fault.applied(self)

    # -- Scapy packets, inside the namespace (netns.packets) ---------------------------------------
    def send(self, pkts, *, inter: float = 0.0, iface: str | None = None) -> list:
        """Send Scapy packets from this host: `IP()/...` and `IPv6()/...` routed by this host's kernel
        (its routes and neighbours), `Ether()/...` out of the interface toward their destination (or
        `iface`). The IP source and Ether addresses, when not given, are this host's. Returns the
        packets as sent."""
        from . import packets

        return packets.send(self, pkts, inter=inter, iface=iface)

    def sr(self, pkts, *, timeout: float = 2.0, inter: float = 0.0, multi: bool = False, iface: str | None = None):
        """Send packets from this host and collect the answers, as Scapy's `sr`: `(answered, unanswered)`."""
        from . import packets

        return packets.sr(self, pkts, timeout=timeout, inter=inter, multi=multi, iface=iface)

    def sr1(self, pkt, *, timeout: float = 2.0, iface: str | None = None):
        """Send one packet from this host; its first answer as a Scapy packet, or None after `timeout`:

            ans = bed.client.sr1(IP(dst=bed.server.addr(4)) / TCP(dport=5000, flags="S"), timeout=3)
        """
        from . import packets

        return packets.sr1(self, pkt, timeout=timeout, iface=iface)

    def sniff(self, *, count: int = 0, timeout: float | None = None, filter: str | None = None,
              iface: str | None = None):
        """Packets seen on this host's interfaces (a Scapy `PacketList`), until `count` or `timeout`;
        `filter`: a tcpdump expression. Each has `time`, `ts_ns`, `sniffed_on` and `direction`."""
        from . import packets

        return packets.sniff(self, count=count, timeout=timeout, filter=filter, iface=iface)

    def listen(self, *, iface: str | None = None, filter: str | None = None, lifetime_s: float = 300.0):
        """Receive this host's packets from now on, taken out with `.next(timeout)` (`netns.packets.Listener`)."""
        from . import packets

        return packets.listen(self, iface=iface, filter=filter, lifetime_s=lifetime_s)

    # -- readiness -----------------------------------------------------------------------------
    def listening(self, port: int) -> bool:
        """Is some socket in this host in LISTEN on `port` (IPv4 or IPv6)? Read from /proc/net/tcp{,6}."""
        want = f"{port:04X}"
        with namespace.inside(self.netns):
            for table in ("tcp", "tcp6"):
                try:
                    with open(f"/proc/thread-self/net/{table}") as f:
                        next(f)
                        for line in f:
                            parts = line.split(None, 4)
                            if parts[3] == TCP_LISTEN and parts[1].rsplit(":", 1)[1] == want:
                                return True
                except FileNotFoundError:  # no IPv6 on this kernel
                    continue
        return False

    def wait_listen(self, port: int, timeout: float = 5.0, process: Process | None = None) -> None:
        """Poll until a socket listens on `port` here; fail clearly on timeout or if `process` exits."""
        if process is not None:
            process.wait_for(lambda: self.listening(port), f"listening on port {port}", timeout)
            return
        wait_until(lambda: self.listening(port), timeout,
                   lambda: ProcessError(f"nothing listens on {self.name} port {port} after {timeout} s"))

    def __repr__(self) -> str:
        addrs = ", ".join(self.addresses())
        return f"<Host {self.name} netns={self.netns} {addrs}>"


def network_of(address: str, prefixlen: int) -> str:
    return str(ipaddress.ip_interface(f"{address}/{prefixlen}").network)
