"""Testbeds: a few hosts in their own network namespaces, wired with veth links.

Two topologies:

* ``pair``: ``client`` — ``server`` on one link.
* ``routed``: ``client`` — ``router`` — ``server``; the router forwards, each end host has a default
  route through it.

Only documentation addresses are used (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
2001:db8::/32), and every link end is created directly inside a testbed namespace, so nothing ever
appears in the root namespace. Everything is built with pyroute2 netlink calls from this process.

Teardown undoes everything in reverse order (kernel-style ``defer``): it kills the testbed's
processes, then deletes its namespaces, which takes their links with them. It runs on success, on
failure, on an exception half-way through setup, and on Ctrl-C or SIGTERM (see `install_signal_handlers`).
"""

from __future__ import annotations

import atexit
import itertools
import json
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

from . import namespace
from .host import Host, Interface

IFA_F_NODAD = 0x02
STATE_DIR = Path("/run/tcp-verifier/testbeds")  # named testbeds' records; /run dies with the namespaces
FAMILIES = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}


class TestbedError(RuntimeError):
    """The testbed could not be built or used; the message says what to do."""

    __test__ = False  # not a pytest test class


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
                 name: str | None = None):
        if topology not in TOPOLOGIES:
            raise TestbedError(f"unknown topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
        if family not in FAMILIES:
            raise TestbedError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        self.topology = TOPOLOGIES[topology]
        self.family = family
        self.families = FAMILIES[family]
        self.tag = ""
        self.name = namespace.check_testbed_name(name) if name is not None else None
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
            self.tag = namespace.named_tag(self.name)
            if any(n.startswith(self.tag + "-") for n in namespace.list_names()):
                raise TestbedError(f"a testbed named {self.name} already exists (verifier testbed list)")
        else:
            self.tag = _next_tag()
        _live.add(self)
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        topo = self.topology
        for name in topo.hosts:
            ns = f"{self.tag}-{name}"
            namespace.create(ns)
            self._undo.append(("netns", ns))
            self.hosts[name] = Host(name, ns, self._workdir)

        # Interface names: <tag>-<host initial><n>, e.g. tv00tgd0-r1; created on the link's `a` side
        # with its peer placed straight into the `b` namespace.
        count = {h: 0 for h in topo.hosts}
        plan: dict[str, list[tuple[Interface, bool]]] = {h: [] for h in topo.hosts}
        for link in topo.links:
            ends = []
            for h in (link.a, link.b):
                ends.append(namespace.check_ifname(f"{self.tag}-{h[0]}{count[h]}"))
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
                if name in topo.routers:
                    _write_sysctl("net/ipv4/ip_forward", "1")
                    _write_sysctl("net/ipv6/conf/all/forwarding", "1")

        # Hosts are configured in topology order; a link's `a` side always comes first, so every
        # interface exists by the time its host is configured.
        for name in topo.hosts:
            self._configure(self.hosts[name], plan[name])

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
                            command="add", ifname=_template(itf.name, self.tag), index=index, kind="veth",
                            state="up", peer={"ifname": _template(itf.peer_name, self.tag),
                                              "net_ns_fd": FD_PLACEHOLDER + len(peer_fds) - 1})))
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
                    _netlink_batch(nl, requests, f"host {host.name}", self.tag, peer_fds)
            finally:
                for fd in peer_fds:
                    os.close(fd)

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
        lines = [f"testbed {self.tag} ({self.topology.name}, {self.family})"]
        for h in self.hosts.values():
            for itf in h.interfaces:
                addrs = " ".join(f"{a}/{itf.prefixlen[f]}" for f, a in itf.addresses.items())
                lines.append(f"  {h.name:<7} {h.netns:<16} {itf.name:<12} -> {itf.peer_host:<7} {addrs}")
        return "\n".join(lines)

    # -- long-lived, named testbeds ------------------------------------------------------------
    def detach(self) -> Path:
        """Let a named testbed outlive this process: record it under /run and drop it from the
        teardown-at-exit list. `Testbed.attach(name)` gets it back; `down()` removes it."""
        if self.name is None:
            raise TestbedError("only a named testbed can outlive its process: give it a name")
        state = {
            "name": self.name, "tag": self.tag, "topology": self.topology.name, "family": self.family,
            "created_ns": self.up_ns, "created_by_pid": os.getpid(),
            "hosts": {h.name: {"netns": h.netns, "gateway": h.gateway,
                               "interfaces": [vars(i) for i in h.interfaces]} for h in self.hosts.values()},
        }
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = STATE_DIR / f"{self.name}.json"
        path.write_text(json.dumps(state, indent=2) + "\n")
        _live.discard(self)
        return path

    @classmethod
    def attach(cls, name: str) -> "Testbed":
        """The named testbed that `detach()` left running."""
        namespace.check_testbed_name(name)
        path = STATE_DIR / f"{name}.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise TestbedError(f"no testbed named {name} (see: verifier testbed list)") from None
        bed = cls(state["topology"], state["family"], name=name, workdir=STATE_DIR / f"{name}.d")
        bed._own_workdir = True
        bed.tag = state["tag"]
        bed.up_ns = state.get("created_ns")
        for hname, h in state["hosts"].items():
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
        bed._undo.append(("state", str(path)))
        return bed

    @staticmethod
    def named() -> list[dict]:
        """The recorded named testbeds, each with `alive`: are all its namespaces still there?"""
        out = []
        for path in sorted(STATE_DIR.glob("*.json")):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            state["alive"] = all(namespace.exists(h["netns"]) for h in state["hosts"].values())
            out.append(state)
        return out

    # -- teardown ------------------------------------------------------------------------------
    def down(self) -> None:
        """Kill the testbed's processes, then delete its namespaces. Safe to call more than once."""
        errors = []
        for host in self.hosts.values():
            try:
                host.stop_processes()
            except Exception as exc:  # keep going: the namespaces must go regardless
                errors.append(exc)
        names = [v for k, v in self._undo if k == "netns"]
        kill_namespace_processes(names)
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
            raise TestbedError(f"testbed {self.tag} torn down, but stopping a process failed: {errors[0]}")

    def __repr__(self) -> str:
        return f"<Testbed {self.tag or '(down)'} {self.topology.name} {self.family}>"


_batch: IPBatch | None = None
_batch_lock = threading.Lock()
NLMSG_ERROR = 2


def _placeholder(tag: str) -> str:
    """Stands for a tag in compiled requests: same length, and upper case never occurs in real names."""
    return "Q" * len(tag)
FD_PLACEHOLDER = 0x7F7F7F00
IFLA_NET_NS_FD = 28
_compiled: dict[str, tuple[bytes, list[int]]] = {}


def _template(name: str, tag: str) -> str:
    assert name.startswith(tag)
    return _placeholder(tag) + name[len(tag):]


def _netlink_batch(nl: socket.socket, requests: list[tuple[str, dict]], where: str, tag: str = "",
                   fds: list[int] = ()) -> None:
    """Compile rtnetlink requests with pyroute2's IPBatch, send them at once, and check every ack.

    pyroute2's encoder costs about 0.3 ms a request, more than the kernel's work. The requests are
    therefore compiled with a placeholder tag and placeholder namespace fds, once per shape of host,
    and later testbeds reuse those bytes with their own tag and fds patched in.
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
    template, seqs = _compiled[key]
    data = template.replace(_placeholder(tag).encode(), tag.encode()) if tag else template
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
                    request = f"{method} {kw}".replace(_placeholder(tag), tag) if tag else f"{method} {kw}"
                    raise TestbedError(f"{where}: netlink {request} failed: {os.strerror(-err)}")
            off += length or len(reply)


def _write_sysctl(rel: str, value: str) -> None:
    with open("/proc/sys/" + rel, "w") as f:
        f.write(value)


def kill_namespace_processes(names: list[str], timeout: float = 2.0) -> list[int]:
    """SIGKILL every process living in the named namespaces, and wait (bounded) until they are gone."""
    pids = namespace.pids_in(names)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if namespace.pid_alive(p)]
        if pending:
            time.sleep(0.001)
    return pids


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
