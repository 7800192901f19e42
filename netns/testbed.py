"""Testbeds: a few hosts in their own network namespaces, wired with veth links.

Two topologies:

* ``pair``: ``client`` — ``server`` on one link.
* ``routed``: ``client`` — ``router`` — ``server``; the router forwards, each end host has a default
  route through it.

Only documentation addresses are used (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
2001:db8::/32), and every link end is created directly inside a testbed namespace, so nothing ever
appears in the root namespace. Everything is built with pyroute2 netlink calls from this process.

Names: each host is a namespace `<tag>-<host>` (see netns.namespace for the two tag schemes). The
interfaces live inside those namespaces, so they carry no tag: each is the host's initial and a
counter (`c0`; `r0`, `r1`; `s0`), within IFNAMSIZ by construction and the same in every testbed,
which is also how captures label them (`client:c0`).

Teardown undoes everything in reverse order (kernel-style ``defer``): it kills the testbed's
processes and waits, with a deadline, until they are gone, then deletes its namespaces, which takes
their links with them. It runs on success, on failure, on an exception half-way through setup, and on
Ctrl-C or SIGTERM (see `install_signal_handlers`).

Named testbeds (`Testbed(name=...)`, `verifier testbed up`) take their name in netns.registry before
anything is built, so two of them can never get the same name.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPBatch

from . import namespace, registry
from .waiting import scaled, wait_until
from .host import Host, Interface

IFA_F_NODAD = 0x02
FAMILIES = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}
LINK_UP_DEADLINE_S = 5.0  # how long `up` waits for every interface to be operationally up
TEARDOWN_DEADLINE_S = 5.0  # how long teardown waits for SIGKILLed processes to be gone


class _NextFree:
    """As a testbed's name: the lowest free number ("1", "2", ...), taken when the testbed comes up."""

    def __repr__(self) -> str:
        return "NEXT_FREE"


NEXT_FREE = _NextFree()


class TestbedError(RuntimeError):
    """The testbed could not be built or used; the message says what to do."""

    __test__ = False  # not a pytest test class


class NameInUse(TestbedError):
    """The name is taken by another testbed (up, broken or being built); nothing was created."""


class NoSuchTestbed(TestbedError):
    """No testbed of that name exists."""


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    net4: str  # prefix, hosts get .<n>
    net6: str  # prefix, hosts get ::<n>
    hostnum: dict  # host -> host number on this link


@dataclass(frozen=True)
class Topology:
    """Hosts, links and which hosts route; data only, so adding a topology is one entry."""

    name: str
    hosts: tuple[str, ...]
    links: tuple[LinkSpec, ...]
    routers: tuple[str, ...] = ()
    gateways: tuple[tuple[str, str], ...] = ()  # (end host, router): default route via the router


TOPOLOGIES = {
    "pair": Topology(
        "pair", ("client", "server"),
        (LinkSpec("client", "server", "192.0.2.", "2001:db8:1::", {"client": 2, "server": 3}),),
    ),
    "routed": Topology(
        "routed", ("client", "router", "server"),
        (
            LinkSpec("client", "router", "192.0.2.", "2001:db8:1::", {"client": 2, "router": 1}),
            LinkSpec("router", "server", "203.0.113.", "2001:db8:2::", {"router": 1, "server": 2}),
        ),
        routers=("router",),
        gateways=(("client", "router"), ("server", "router")),
    ),
}
# Host names end namespace names, which are parsed at their last "-": none may contain one.
assert all(namespace.TESTBED_NAME_RE.fullmatch(h) and len(h) <= namespace.HOST_NAME_MAX and "-" not in h
           and "_" not in h for t in TOPOLOGIES.values() for h in t.hosts)

_counter = itertools.count()
_counter_lock = threading.Lock()
_live: "weakref.WeakSet[Testbed]" = weakref.WeakSet()


def _next_tag() -> str:
    """A testbed tag that no live namespace uses: run tag + one base-36 character."""
    base = namespace.run_tag()
    for _ in range(36):
        with _counter_lock:
            n = next(_counter) % 36
        tag = base + namespace._B36[n]
        if not any(name.startswith(tag + "-") for name in namespace.list_names()):
            return tag
    raise TestbedError("this process already has 36 testbeds up; tear some down first")


class Testbed:
    """A set of hosts in fresh network namespaces, linked and addressed. Use it as a context manager.

    >>> with Testbed("routed", family="dual") as bed:
    ...     bed.client.run(["ping", "-c1", bed.server.addr(4)])
    """

    __test__ = False

    def __init__(self, topology: str = "routed", family: str = "dual", *, workdir: str | Path | None = None,
                 name: "str | None" = None):
        """`name`: None for a testbed of this run (`tv...` names, torn down with it); a testbed name
        (netns.namespace.check_testbed_name) or NEXT_FREE for one that can outlive it (`detach()`)."""
        if topology not in TOPOLOGIES:
            raise TestbedError(f"unknown topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
        if family not in FAMILIES:
            raise TestbedError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        self.topology = TOPOLOGIES[topology]
        self.family = family
        self.families = FAMILIES[family]
        self.tag = ""
        self.name = namespace.check_testbed_name(name) if name not in (None, NEXT_FREE) else name
        self.hosts: dict[str, Host] = {}
        self._undo: list[tuple[str, object]] = []
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir else None
        self.up_ns: int | None = None

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def pair(cls, family: str = "dual", **kw) -> "Testbed":
        return cls("pair", family, **kw)

    @classmethod
    def routed(cls, family: str = "dual", **kw) -> "Testbed":
        return cls("routed", family, **kw)

    def __enter__(self) -> "Testbed":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "Testbed":
        """Create the namespaces, links, addresses and routes. On any failure, undo and raise."""
        if os.geteuid() != 0:
            raise TestbedError("building a testbed needs root (network namespaces): run with sudo")
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self.up_ns = time.time_ns()
        return self

    def _build(self) -> None:
        if self.name is not None:
            self._take_name()
        else:
            self.tag = _next_tag()
        _live.add(self)
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        topo = self.topology
        for name in topo.hosts:
            ns = f"{self.tag}-{name}"
            try:
                namespace.create(ns)
            except namespace.NamespaceError as exc:
                if isinstance(self.name, str) and namespace.exists(ns):  # a leftover of that name
                    raise NameInUse(str(exc)) from None
                raise
            self._undo.append(("netns", ns))
            self.hosts[name] = Host(name, ns, self._workdir)

        # Interface names: <host initial><n>, e.g. r1, unique within the host's own namespace; created
        # on the link's `a` side with its peer placed straight into the `b` namespace.
        count = {h: 0 for h in topo.hosts}
        plan: dict[str, list[tuple[Interface, bool]]] = {h: [] for h in topo.hosts}
        for link in topo.links:
            ends = []
            for h in (link.a, link.b):
                ends.append(namespace.check_ifname(f"{h[0]}{count[h]}"))
                count[h] += 1
            for (h, other), (mine, theirs) in (((link.a, link.b), ends), ((link.b, link.a), ends[::-1])):
                itf = Interface(mine, h, other, theirs)
                if 4 in self.families:
                    itf.addresses[4], itf.prefixlen[4] = f"{link.net4}{link.hostnum[h]}", 24
                if 6 in self.families:
                    itf.addresses[6], itf.prefixlen[6] = f"{link.net6}{link.hostnum[h]}", 64
                self.hosts[h].interfaces.append(itf)
                plan[h].append((itf, h == link.a))
        for end, router in topo.gateways:
            shared = next(i for i in self.hosts[router].interfaces if i.peer_host == end)
            self.hosts[end].gateway = dict(shared.addresses)

        # Per-namespace settings, in every namespace before any link exists: a veth's far end is
        # created from the other namespace, and takes this namespace's defaults (no DAD, so even the
        # link-local addresses are usable at once) at that moment.
        for name in topo.hosts:
            with namespace.inside(self.hosts[name].netns):
                _write_sysctl("net/ipv6/conf/default/accept_dad", "0")
                _write_sysctl("net/ipv6/conf/all/accept_dad", "0")
                _write_sysctl("net/ipv6/conf/default/router_solicitations", "0")
                if 6 not in self.families:
                    # An IPv4 testbed sends no IPv6 at all: no link-local addresses, so no MLD
                    # reports turning up in captures a moment after the links come up.
                    _write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
                    _write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")
                if name in topo.routers:
                    _write_sysctl("net/ipv4/ip_forward", "1")
                    _write_sysctl("net/ipv6/conf/all/forwarding", "1")

        # Hosts are configured in topology order; a link's `a` side always comes first, so every
        # interface exists by the time its host is configured.
        for name in topo.hosts:
            self._configure(self.hosts[name], plan[name])
        self._wait_links_up()

    def _take_name(self) -> None:
        """Reserve the name in the registry (atomically, before anything exists), or fail with NameInUse."""
        shape = dict(topology=self.topology.name, family=self.family)
        try:
            if self.name is NEXT_FREE:
                self.name = registry.reserve_lowest(**shape)
                path = registry.path_of(self.name)
            else:
                path = registry.reserve(self.name, **shape)
        except registry.NameTaken as taken:
            raise NameInUse(_taken(taken.name, taken.entry)) from None
        self._undo.append(("state", str(path)))
        self.tag = namespace.named_tag(self.name)
        if self._workdir is None:  # where `attach()` will look too, and `down()` removes it from
            self._workdir = registry.workdir_of(self.name)

    def _configure(self, host: Host, plan: list[tuple[Interface, bool]]) -> None:
        # All of a host's netlink requests are compiled by pyroute2's IPBatch and sent in one
        # sendmsg; the kernel applies them in order. This keeps `up` near a millisecond per host,
        # where one IPRoute round trip per request costs about a millisecond each.
        requests: list[tuple[str, dict]] = [("link", dict(command="set", index=1, state="up"))]  # lo
        peer_fds = []
        with namespace.inside(host.netns):
            try:
                next_index = 100
                for itf, create in plan:
                    if create:
                        index, next_index = next_index, next_index + 1
                        fd = os.open(namespace.NETNS_RUN_DIR / f"{self.tag}-{itf.peer_host}", os.O_RDONLY)
                        peer_fds.append(fd)
                        requests.append(("link", dict(
                            command="add", ifname=itf.name, index=index, kind="veth", state="up",
                            peer={"ifname": itf.peer_name, "net_ns_fd": FD_PLACEHOLDER + len(peer_fds) - 1})))
                    else:
                        index = socket.if_nametoindex(itf.name)
                        requests.append(("link", dict(command="set", index=index, state="up")))
                    for fam, address in itf.addresses.items():
                        requests.append(("addr", dict(command="add", index=index, address=address,
                                                      prefixlen=itf.prefixlen[fam],
                                                      flags=IFA_F_NODAD if fam == 6 else 0)))
                for fam, gw in host.gateway.items():
                    if fam == 4:
                        requests.append(("route", dict(command="add", dst="0.0.0.0/0", gateway=gw)))
                    else:
                        requests.append(("route", dict(command="add", dst="::/0", gateway=gw,
                                                       family=socket.AF_INET6)))
                with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
                    _netlink_batch(nl, requests, f"host {host.name}", peer_fds)
            finally:
                for fd in peer_fds:
                    os.close(fd)

    def _wait_links_up(self) -> None:
        """Return once every interface of the testbed is operationally up, or raise TestbedError.

        A veth end that was set up before its peer gets its carrier, and its real qdisc in place of
        the kernel's `noop` (which drops every packet sent), only when the kernel's link-watch work
        runs; under load (rtnl contention from other namespaces) that comes milliseconds after the
        last netlink ack, and a SYN sent in between is lost without a trace. Measured: 2-4 testbeds
        in 60 had an end still DOWN right after the acks with four builds running at once."""
        for host in self.hosts.values():
            want = {itf.name for itf in host.interfaces}
            with namespace.inside(host.netns):
                with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
                    wait_until(lambda: not (want - _links_up(nl)), LINK_UP_DEADLINE_S, lambda: TestbedError(
                        f"host {host.name}: interface {', '.join(sorted(want - _links_up(nl)))} still not up "
                        f"{scaled(LINK_UP_DEADLINE_S):g} s after it was set up (the kernel's link watch has not "
                        f"run: is the machine overloaded?)"))

    # -- access --------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"testbed has no host {name!r}; it has {', '.join(self.hosts)}") from None

    def __getattr__(self, name: str) -> Host:
        hosts = self.__dict__.get("hosts", {})
        if name in hosts:
            return hosts[name]
        raise AttributeError(name)

    @property
    def namespaces(self) -> list[str]:
        return [h.netns for h in self.hosts.values()]

    @property
    def workdir(self) -> Path:
        assert self._workdir is not None
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def describe(self) -> str:
        lines = [f"testbed {self.name if isinstance(self.name, str) else self.tag} "
                 f"({self.topology.name}, {self.family})"]
        width = max((len(h.netns) for h in self.hosts.values()), default=0)
        for h in self.hosts.values():
            for itf in h.interfaces:
                addrs = " ".join(f"{a}/{itf.prefixlen[f]}" for f, a in itf.addresses.items())
                lines.append(f"  {h.name:<7} {h.netns:<{width}}  {itf.name:<3} -> {itf.peer_host:<7} {addrs}")
        return "\n".join(lines)

    # -- long-lived, named testbeds ------------------------------------------------------------
    def detach(self) -> Path:
        """Let a named testbed outlive this process: record it in the registry and drop it from the
        teardown-at-exit list. `Testbed.attach(name)` gets it back; `down()` removes it."""
        if not isinstance(self.name, str) or not self.hosts:
            raise TestbedError("only a named testbed that is up can outlive its process: give it a name")
        entry = {
            "name": self.name, "state": "up", "tag": self.tag, "topology": self.topology.name,
            "family": self.family, "owner_uid": registry.caller_uid(), "created_ns": self.up_ns,
            "created_by_pid": os.getpid(),
            "hosts": {h.name: {"netns": h.netns, "gateway": h.gateway,
                               "interfaces": [vars(i) for i in h.interfaces]} for h in self.hosts.values()},
        }
        path = registry.write(self.name, entry)
        _live.discard(self)
        return path

    @classmethod
    def attach(cls, name: str) -> "Testbed":
        """The named testbed that `detach()` left running (NoSuchTestbed, or TestbedError if it is
        not usable: being built, or broken)."""
        entry = registry.read(namespace.check_testbed_name(name))
        if entry is None:
            raise NoSuchTestbed(f"no testbed named {name} (see: verifier testbed list)")
        state = registry.status(entry)
        if state != "up" and state != "broken":
            raise TestbedError(_unusable(name, entry, state))
        bed = cls(entry["topology"], entry["family"], name=name, workdir=registry.workdir_of(name))
        bed._own_workdir = True
        bed.tag = entry["tag"]
        bed.up_ns = entry.get("created_ns")
        for hname, h in entry["hosts"].items():
            if not namespace.exists(h["netns"]):
                raise TestbedError(f"testbed {name} is broken: namespace {h['netns']} is gone "
                                   f"(remove it with: verifier testbed down {name})")
            host = Host(hname, h["netns"], bed.workdir)
            host.gateway = {int(k): v for k, v in h["gateway"].items()}
            for i in h["interfaces"]:
                host.interfaces.append(Interface(i["name"], i["host"], i["peer_host"], i["peer_name"],
                                                 {int(k): v for k, v in i["addresses"].items()},
                                                 {int(k): v for k, v in i["prefixlen"].items()}))
            bed.hosts[hname] = host
            bed._undo.append(("netns", h["netns"]))
        # The record goes last (undo runs backwards), so a teardown cut short still leaves it listed.
        bed._undo.insert(0, ("state", str(registry.path_of(name))))
        return bed

    @classmethod
    def remains(cls, name: str) -> "Testbed":
        """Whatever exists of the named testbed, to be removed with `down()`: its registry entry and
        every namespace of its name, also when it is broken or was left half-built by a killed
        `testbed up`. NoSuchTestbed if nothing of it exists; TestbedError while it is being built."""
        entry = registry.read(namespace.check_testbed_name(name))
        listed = {h["netns"] for h in ((entry or {}).get("hosts") or {}).values()}
        netns = sorted(n for n in set(namespace.list_names()) | listed if namespace.exists(n) and
                       (namespace.parse_named(n) or ("",))[0] == name)
        if entry is None and not netns:
            raise NoSuchTestbed(f"no testbed named {name} (see: verifier testbed list)")
        if entry is not None and registry.status(entry) == "creating":
            raise TestbedError(_unusable(name, entry, "creating"))
        entry = entry or {}
        bed = cls(entry.get("topology", "routed"), entry.get("family", "dual"), name=name,
                  workdir=registry.workdir_of(name))
        bed._own_workdir = True
        bed.tag = namespace.named_tag(name)
        bed._undo = [("state", str(registry.path_of(name)))] + [("netns", n) for n in netns]
        return bed

    @staticmethod
    def named() -> list[dict]:
        """The registry's entries, each with `status` (netns.registry.status) and `alive` (status "up")."""
        out = []
        for name in registry.names():
            entry = registry.read(name)
            if entry is None:  # removed meanwhile
                continue
            entry["status"] = registry.status(entry)
            entry["alive"] = entry["status"] == "up"
            entry.setdefault("hosts", {})
            out.append(entry)
        return out

    # -- teardown ------------------------------------------------------------------------------
    def down(self, *, deadline_s: float = TEARDOWN_DEADLINE_S, progress=None) -> None:
        """Kill the testbed's processes and wait until they are gone (at most `deadline_s`; `progress`
        is called once with the pids still there if that takes over 2 s), then delete its namespaces
        and its registry entry. Safe to call more than once. TestbedError, after removing everything,
        if a process could not be stopped or outlived the deadline."""
        errors = []
        for host in self.hosts.values():
            try:
                host.stop_processes()
            except Exception as exc:  # keep going: the namespaces must go regardless
                errors.append(str(exc))
        names = [v for k, v in self._undo if k == "netns"]
        from . import packets

        packets.forget(names)  # the packet agent's sockets in them, if any are still open
        _killed, survivors = end_namespace_processes(names, deadline_s, progress)
        if survivors:
            errors.append(f"process(es) {', '.join(map(str, survivors))} still running {deadline_s:g} s after SIGKILL")
        while self._undo:
            kind, what = self._undo.pop()
            if kind == "netns":
                namespace.remove(what)  # type: ignore[arg-type]
            elif kind == "state":
                Path(what).unlink(missing_ok=True)  # type: ignore[arg-type]
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        _live.discard(self)
        if errors:
            raise TestbedError(f"testbed {self.name if isinstance(self.name, str) else self.tag} torn down, "
                               f"but {errors[0]}")

    def __repr__(self) -> str:
        return f"<Testbed {self.tag or '(down)'} {self.topology.name} {self.family}>"


_batch: IPBatch | None = None
_batch_lock = threading.Lock()
NLMSG_ERROR = 2


FD_PLACEHOLDER = 0x7F7F7F00
IFLA_NET_NS_FD = 28
_compiled: dict[str, tuple[bytes, list[int]]] = {}


def _netlink_batch(nl: socket.socket, requests: list[tuple[str, dict]], where: str,
                   fds: list[int] = ()) -> None:
    """Compile rtnetlink requests with pyroute2's IPBatch, send them at once, and check every ack.

    pyroute2's encoder costs about 0.3 ms a request, more than the kernel's work. The requests are
    therefore compiled with placeholder namespace fds, once per shape of host, and later testbeds
    reuse those bytes with their own fds patched in (interface names are the same in every testbed).
    """
    global _batch
    key = repr(requests)
    with _batch_lock:
        if key not in _compiled:
            if _batch is None:
                _batch = IPBatch()
            _batch.reset()
            for method, kwargs in requests:
                kwargs = dict(kwargs)
                getattr(_batch, method)(kwargs.pop("command"), **kwargs)
            template = bytes(_batch.batch)
            _batch.reset()
            seqs = []
            off = 0
            while off < len(template):
                length, _type, _flags, seq = struct.unpack_from("=IHHI", template, off)
                seqs.append(seq)
                off += length
            _compiled[key] = (template, seqs)
    data, seqs = _compiled[key]
    for k, fd in enumerate(fds):
        attr = struct.pack("=HHI", 8, IFLA_NET_NS_FD, FD_PLACEHOLDER + k)
        if data.count(attr) != 1:
            raise TestbedError(f"{where}: cannot place the namespace fd in the compiled netlink request")
        data = data.replace(attr, struct.pack("=HHi", 8, IFLA_NET_NS_FD, fd))
    described = dict(zip(seqs, requests))
    nl.sendto(data, (0, 0))
    pending = set(seqs)
    while pending:
        reply = nl.recv(65536)
        off = 0
        while off < len(reply):
            length, mtype, _flags, seq = struct.unpack_from("=IHHI", reply, off)
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", reply, off + 16)
                pending.discard(seq)
                if err:
                    method, kw = described.get(seq, ("?", {}))
                    raise TestbedError(f"{where}: netlink {method} {kw} failed: {os.strerror(-err)}")
            off += length or len(reply)


RTM_GETLINK, RTM_NEWLINK, NLMSG_DONE = 18, 16, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME, IFLA_OPERSTATE, IF_OPER_UP = 3, 16, 6


def _links_up(nl: socket.socket) -> set[str]:
    """The names of the links in this namespace whose operational state is UP (one RTM_GETLINK dump).

    Written by hand rather than with pyroute2's IPRoute.get_links(): that costs about a millisecond a
    host (socket setup and decoding every attribute of every link), as much as building the host;
    this reads two attributes and costs a few microseconds."""
    nl.sendto(struct.pack("=IHHIIBxHiII", 32, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, 0, 0, 0, 0, 0),
              (0, 0))
    up: set[str] = set()
    while True:
        reply = nl.recv(65536)
        off = 0
        while off + 16 <= len(reply):
            length, mtype, _flags, _seq = struct.unpack_from("=IHHI", reply, off)
            if mtype == NLMSG_DONE:
                return up
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", reply, off + 16)
                raise TestbedError(f"netlink link dump failed: {os.strerror(-err)}")
            if mtype == RTM_NEWLINK:
                name, state = None, None
                a = off + 32  # nlmsghdr (16) + ifinfomsg (16)
                while a + 4 <= off + length:
                    alen, atype = struct.unpack_from("=HH", reply, a)
                    if alen < 4:
                        break
                    atype &= 0x3FFF
                    if atype == IFLA_IFNAME:
                        name = reply[a + 4:a + alen].split(b"\0", 1)[0].decode()
                    elif atype == IFLA_OPERSTATE:
                        state = reply[a + 4]
                    a += (alen + 3) & ~3
                if name is not None and state == IF_OPER_UP:
                    up.add(name)
            off += (length + 3) & ~3 or len(reply)


def _write_sysctl(rel: str, value: str) -> None:
    with open("/proc/sys/" + rel, "w") as f:
        f.write(value)


def kill_namespace_processes(names: list[str], timeout: float = TEARDOWN_DEADLINE_S) -> list[int]:
    """SIGKILL every process living in the named namespaces, wait (bounded) until they are gone, and
    return the pids killed (see `end_namespace_processes`)."""
    return end_namespace_processes(names, timeout)[0]


def end_namespace_processes(names: list[str], deadline_s: float = TEARDOWN_DEADLINE_S,
                            progress=None) -> tuple[list[int], list[int]]:
    """SIGKILL every process in the named namespaces and poll until none is left: (killed, survivors).

    The namespaces are scanned again after each round, so that children forked before their parent
    died are found too; a process counts as gone once it is a zombie (it runs no more code and holds
    no namespace). Survivors are what is still there at the deadline. Without any process this is one
    scan of /proc.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + deadline_s
    report_at = time.monotonic() + 2.0
    while True:
        pids = namespace.pids_in(names)
        if not pids:
            return sorted(killed), []
        if time.monotonic() >= deadline:
            return sorted(killed), pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        delay = 0.001
        pending = pids
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if namespace.pid_alive(p)]
            if pending:
                if progress is not None and time.monotonic() >= report_at:
                    progress(pending)
                    progress, report_at = None, float("inf")
                time.sleep(delay)  # the interval of a bounded poll
                delay = min(delay * 2, 0.02)


def _taken(name: str, entry: dict | None) -> str:
    """Why a name cannot be had, and the command that frees it (never `verifier clean`, which leaves
    named testbeds alone)."""
    if entry is None:  # every number up to registry.MAX_NUMBERED
        return f"no free testbed number in {name}: remove some (verifier testbed list)"
    state = registry.status(entry)
    if state == "up":
        owner = registry.user_name(entry.get("owner_uid"))
        return (f"a testbed named {name} already exists (owner {owner}; see: verifier testbed list): "
                f"choose another name, or remove it with: verifier testbed down {name}")
    return _unusable(name, entry, state)


def _unusable(name: str, entry: dict, state: str) -> str:
    pid = entry.get("created_by_pid")
    if state == "creating":
        return f"testbed {name} is being brought up right now by process {pid}: try again once that has finished"
    if state == "abandoned":
        return (f"testbed {name} was left half-built by process {pid}, which is gone: "
                f"remove it with: verifier testbed down {name}")
    return f"testbed {name} is {state}: remove it with: verifier testbed down {name}"


def live_testbeds() -> list[Testbed]:
    return list(_live)


def teardown_all() -> None:
    """Tear down every testbed this process still has up (atexit and signal safety net)."""
    for bed in list(_live):
        try:
            bed.down()
        except Exception:
            pass


atexit.register(teardown_all)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so `finally` blocks and fixtures tear down."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, handler)
