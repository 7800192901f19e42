"""The testbed itself, on the real kernel: names, addresses, routing, sysctls, programs, teardown."""

import os
import socket
import subprocess
import sys

import pytest

from netns import ProcessError, Testbed, TestbedError, namespace
from netns.testbed import TOPOLOGIES

DOC_NETS = ("192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:")


def root_links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def connect_cmd(addr: str, port: int) -> list[str]:
    fam = "AF_INET6" if ":" in addr else "AF_INET"
    return [sys.executable, "-c",
            f"import socket; s = socket.socket(socket.{fam}); s.settimeout(3); s.connect(({addr!r}, {port})); "
            f"print(s.getsockname()[0], s.getsockname()[1])"]


def server_cmd(family: int, port: int) -> list[str]:
    fam = "AF_INET6" if family == 6 else "AF_INET"
    return [sys.executable, "-c",
            f"import socket; s = socket.socket(socket.{fam}); s.bind(('', {port})); s.listen(); "
            f"c, a = s.accept(); print(a[0], a[1])"]


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
@pytest.mark.parametrize("fam", ["ipv4", "ipv6", "dual"])
def test_topology_connects_end_to_end(root, topology, fam):
    before = root_links()
    with Testbed(topology, fam) as bed:
        assert list(bed.hosts) == list(TOPOLOGIES[topology].hosts)
        # Names: per-run prefix on namespaces; short fixed interface names inside them (host initial
        # and a counter); links only inside the testbed.
        for host in bed.hosts.values():
            assert host.netns.startswith(namespace.run_tag()) and len(host.netns) <= 15
            assert namespace.NAME_RE.match(host.netns)
            for n, itf in enumerate(host.interfaces):
                assert itf.name == f"{host.name[0]}{n}"
                for a in itf.addresses.values():
                    assert a.startswith(DOC_NETS)
        assert root_links() == before, "a testbed link appeared in the root namespace"
        families = {"ipv4": [4], "ipv6": [6], "dual": [4, 6]}[fam]
        for f in families:
            srv = bed.server.start(server_cmd(f, 5000 + f))
            bed.server.wait_listen(5000 + f, process=srv)
            res = bed.client.run(connect_cmd(bed.server.addr(f), 5000 + f), timeout=10).check()
            local_addr, local_port = res.stdout.split()
            assert local_addr == bed.client.addr(f)
            assert srv.wait(5).stdout.split() == [bed.client.addr(f), local_port]
        for f in {4, 6} - set(families):
            with pytest.raises(LookupError):
                bed.client.addr(f)
        names = bed.namespaces
    assert not set(names) & set(namespace.list_names())


def test_router_forwards_and_end_hosts_route_through_it(root):
    with Testbed.routed("dual") as bed:
        assert bed.router.sysctl("net.ipv4.ip_forward") == "1"
        assert bed.router.sysctl("net.ipv6.conf.all.forwarding") == "1"
        assert bed.client.sysctl("net.ipv4.ip_forward") == "0"
        routes = bed.client.run(["ip", "-4", "route", "show", "default"]).check().stdout
        assert f"via {bed.router.interface('client').addresses[4]}" in routes
        routes6 = bed.server.run(["ip", "-6", "route", "show", "default"]).check().stdout
        assert f"via {bed.router.interface('server').addresses[6]}" in routes6


def test_sysctl_is_per_namespace_and_leaves_the_host_alone(root):
    with open("/proc/sys/net/ipv4/tcp_syn_retries") as f:
        host_value = f.read().strip()
    new = "2" if host_value != "2" else "3"
    with Testbed.pair("ipv4") as bed:
        assert bed.client.sysctl("net.ipv4.tcp_syn_retries", new) == new
        assert bed.server.sysctl("net.ipv4.tcp_syn_retries") != new or host_value == new
        assert bed.client.sysctl("net.ipv4.ip_local_port_range", (41000, 41009)) == "41000\t41009"
        # The program sees the namespace's value too.
        res = bed.client.run(["cat", "/proc/sys/net/ipv4/tcp_syn_retries"]).check()
        assert res.stdout.strip() == new
        with pytest.raises(KeyError, match="does not exist"):
            bed.client.sysctl("net.ipv4.no_such_thing")
    with open("/proc/sys/net/ipv4/tcp_syn_retries") as f:
        assert f.read().strip() == host_value


def test_run_collects_output_and_status(root):
    with Testbed.pair("ipv4") as bed:
        res = bed.client.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
        assert res.started_ns <= res.ended_ns
        with pytest.raises(ProcessError, match="exited with status 3"):
            res.check()
        with pytest.raises(ProcessError, match="not found"):
            bed.client.run(["/nonexistent/program"])
        # The program runs inside the host's namespace: it sees the host's interface, not ours.
        links = bed.client.run(["ip", "-o", "link"]).check().stdout
        assert bed.client.interfaces[0].name in links


def test_wait_listen_polls_and_fails_clearly(root):
    with Testbed.pair("ipv6") as bed:
        assert not bed.server.listening(5000)
        dead = bed.server.start(["sh", "-c", "exit 7"])
        with pytest.raises(ProcessError, match=r"exited \(7\) before listening"):
            bed.server.wait_listen(5000, process=dead, timeout=5)
        with pytest.raises(ProcessError, match="nothing listens"):
            bed.server.wait_listen(5001, timeout=0.05)


def test_teardown_kills_processes_including_escaped_ones(root):
    with Testbed.pair("ipv4") as bed:
        p = bed.server.start(["sleep", "300"])
        # A daemon that leaves our process group: only the namespace scan can find it.
        bed.server.run(["sh", "-c", "setsid sleep 301 >/dev/null 2>&1 < /dev/null &"]).check()
        pids = namespace.pids_in(bed.namespaces)
        assert p.pid in pids and len(pids) >= 2
    for pid in pids:
        assert not namespace.pid_alive(pid)


def test_failure_during_setup_removes_what_was_built(root, monkeypatch):
    from netns import testbed as tb

    calls = []
    real = tb.Testbed._configure

    def failing(self, host, plan):
        calls.append(host.name)
        if host.name == "router":
            raise TestbedError("injected failure while configuring the router")
        return real(self, host, plan)

    monkeypatch.setattr(tb.Testbed, "_configure", failing)
    bed = Testbed.routed("dual")
    with pytest.raises(TestbedError, match="injected"):
        bed.up()
    assert calls == ["client", "router"]
    assert not [n for n in namespace.list_names() if n.startswith(bed.tag + "-")]


def test_parallel_testbeds_do_not_collide(root):
    with Testbed.routed("ipv4") as a, Testbed.routed("ipv4") as b:
        assert a.tag != b.tag
        assert not set(a.namespaces) & set(b.namespaces)
        # Same addresses in both, isolated from each other.
        assert a.server.addr(4) == b.server.addr(4)


def test_other_processes_testbeds_do_not_collide(root):
    code = ("from netns import Testbed\n"
            "with Testbed.routed('ipv4') as bed: print(bed.tag)\n")
    with Testbed.routed("ipv4") as bed:
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() != bed.tag


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(TestbedError, match="unknown topology"):
        Testbed("ring")
    with pytest.raises(TestbedError, match="unknown family"):
        Testbed("pair", "ipv5")
    with pytest.raises(namespace.NamespaceError, match="limit is 15"):
        namespace.check_ifname("x" * 16)


def test_without_root_the_error_says_so(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # what a user without sudo gets
    with pytest.raises(TestbedError, match="needs root"):
        Testbed.pair().up()
    with pytest.raises(namespace.NamespaceError, match="needs root"):
        namespace.create("tvzzzzzz-never")


def test_a_refused_netlink_request_is_reported_with_the_request(root):
    from netns import testbed as tb

    with Testbed.pair("ipv4") as bed, namespace.inside(bed.client.netns):
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
            with pytest.raises(TestbedError, match=r"host client: netlink addr .*index': 999.* failed: No such device"):
                tb._netlink_batch(nl, [("addr", dict(command="add", index=999, address="192.0.2.9", prefixlen=24))],
                                  "host client")


def test_compiled_requests_are_reused_with_each_testbeds_own_namespaces(root):
    with Testbed.routed("dual") as a:
        pass
    with Testbed.routed("dual") as b:
        names = b.client.run(["ip", "-o", "link"]).check().stdout
        assert " c0@" in names and f"link-netns {b.tag}-router" in names and a.tag not in names
        peer = b.router.run(["ip", "-o", "link"]).check().stdout
        assert "r0@if" in peer and "r1@if" in peer and f"link-netns {b.tag}-client" in peer


def test_no_address_is_left_tentative(root):
    """Every IPv6 address, link-local ones on the far ends of links included, is usable at once."""
    with Testbed.routed("ipv6") as bed:
        for host in bed.hosts.values():
            out = host.run(["ip", "-6", "-o", "addr", "show"]).check().stdout
            assert "tentative" not in out, f"{host.name}: {out}"
            for itf in host.interfaces:
                assert host.sysctl(f"net.ipv6.conf.{itf.name}.accept_dad") == "0"


_UP_AT_ONCE = """
import sys
from pyroute2 import IPRoute
from netns import Testbed, namespace
for _ in range(int(sys.argv[1])):
    with Testbed.routed("ipv4") as bed:
        for host in bed.hosts.values():  # read back at once, with pyroute2 (not the code under test)
            with namespace.inside(host.netns), IPRoute() as ipr:
                for link in ipr.get_links():
                    name, state = link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_OPERSTATE")
                    if name != "lo" and state != "UP":
                        print(host.name, name, state)
"""


def test_every_link_is_up_when_up_returns_even_with_builds_racing(root):
    """A veth end set up before its peer is DOWN, with the kernel's packet-dropping noop qdisc, until
    the link-watch work runs; with builds racing for rtnl that is after the last netlink ack, and a
    packet sent then is lost. `up` waits for it, so none is found DOWN here (without the wait, about
    one build in 30 shows one)."""
    procs = [subprocess.Popen([sys.executable, "-c", _UP_AT_ONCE, "25"], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert "".join(outs) == ""


def test_a_link_that_never_comes_up_is_reported_clearly(root, monkeypatch):
    from netns import testbed as tb

    monkeypatch.setattr(tb, "_links_up", lambda nl: {"lo"})
    monkeypatch.setattr(tb, "LINK_UP_DEADLINE_S", 0.05)
    bed = Testbed.pair("ipv4")
    with pytest.raises(TestbedError, match=r"host \w+: interface \w+ still not up 0.05 s after it was set up"):
        bed.up()
    assert not [n for n in namespace.list_names() if n.startswith(bed.tag + "-")]


def test_an_ipv4_testbed_has_no_ipv6_to_chatter_with(root):
    """No IPv6 address on any interface, so no MLD reports land in a capture started just after `up`
    (they used to, a moment after the links came up, and took a `--count` capture's places); a
    program listening on `::` still takes IPv4 connections."""
    with Testbed.routed("ipv4") as bed:
        for host in bed.hosts.values():
            assert host.run(["ip", "-6", "-o", "addr", "show"]).check().stdout == "", host.name
        server = bed.server.start([sys.executable, "-c", "import socket\ns = socket.socket(socket.AF_INET6)\n"
                                   "s.bind(('::', 80))\ns.listen()\nprint(s.accept()[1][0])"])
        bed.server.wait_listen(80)
        bed.client.run([sys.executable, "-c", "import socket; socket.create_connection(('203.0.113.2', 80))"]).check()
        assert server.wait(10).stdout.strip() == "::ffff:192.0.2.2"
    with Testbed.routed("dual") as bed:
        assert "inet6 fe80::" in bed.client.run(["ip", "-6", "-o", "addr", "show"]).check().stdout
