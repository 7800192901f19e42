"""C9, C10, C11, C13, C14: the server side — accept(), one listener and many connections, fork and
descriptor reference counts, the names a socket reports, and exec handing a socket to a new program."""

from __future__ import annotations

import signal

import pytest

from verifier.analysis.expect import expect

from .conftest import PORT, finish, run_client, sent_by_server, start_client, start_server, story, wait_stopped, wildcard


@pytest.mark.claim("C9")
def test_c9_accept_sleeps_until_a_connection_completes(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "1")
    server.wait_blocked("inet_csk_accept")  # asleep in accept() before any SYN exists
    client = run_client(testbed, programs, family)
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    accept = served.call("accept")
    syn = conn.first("SYN")
    last_ack = next(e for e in conn.at("server:s0") if e.kind == "ACK" and e.direction == "c>s")
    # accept() was entered before the SYN, and returned only after the handshake's last ACK arrived.
    assert accept.t_enter_ns < syn.ts_ns, tale
    assert last_ack.ts_ns <= accept.t_return_ns, "accept() returned before the handshake completed" + tale
    assert (accept.addr, accept.port) == conn.client, "accept()'s peer is not the SYN's source" + tale
    evidence.record(f"accept() slept {(accept.t_return_ns - accept.t_enter_ns) / 1e6:.1f} ms and returned "
                    f"{(accept.t_return_ns - last_ack.ts_ns) / 1e3:.0f} us after the final ACK arrived",
                    stevens=True)


@pytest.mark.claim("C9")
def test_c9_handshake_completes_before_accept_is_called(testbed, capture, family, programs, evidence):
    # The server stops itself (SIGSTOP) right after listen(), before any accept(), and stays stopped
    # for the whole handshake, however long the machine takes: the kernel completes it alone.
    server = start_server(testbed, programs, family, "--accept", "1", "--stop-after-listen")
    try:
        wait_stopped(server)
        client = run_client(testbed, programs, family)
    finally:
        server.signal(signal.SIGCONT)
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    accept, connect = served.call("accept"), client.call("connect")
    last_ack = next(e for e in conn.at("server:s0") if e.kind == "ACK" and e.direction == "c>s")
    assert connect.ret == 0 and connect.t_return_ns < accept.t_enter_ns, tale
    assert last_ack.ts_ns < accept.t_enter_ns, tale
    # accept() took a connection that was already complete: nothing crossed the wire while it ran.
    during = [e for e in conn.at("server:s0") if accept.t_enter_ns <= e.ts_ns <= accept.t_return_ns]
    assert not during, tale
    assert (accept.addr, accept.port) == conn.client, tale
    evidence.record(f"handshake done {(accept.t_enter_ns - last_ack.ts_ns) / 1e6:.0f} ms before accept() was "
                    f"called; accept() returned it in {(accept.t_return_ns - accept.t_enter_ns) / 1e3:.0f} us "
                    f"with no packet", stevens=True)


@pytest.mark.claim("C10")
def test_c10_one_listener_gives_a_new_socket_per_connection(testbed, capture, family, programs, evidence):
    n = 4
    # Batch mode: accept all connections first, so every connected socket is open at the same time.
    server = start_server(testbed, programs, family, "--accept", str(n), "--mode", "batch", "--send", "hi",
                          "--close-unread")
    clients = [start_client(testbed, programs, family, "--read") for _ in range(n)]
    results = [finish(c) for c in clients]  # their socket calls are noted for the report's ladders
    served = finish(server)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    listen = served.call("listen")
    accepts = [c for c in served.calls if c.call == "accept"]
    assert len(accepts) == n
    # Every accept() is on the one listening socket, and returns a distinct new descriptor.
    assert {a.args["fd"] for a in accepts} == {listen.args["fd"]}
    fds = [a.ret for a in accepts]
    assert len(set(fds)) == n and listen.args["fd"] not in fds
    trace = capture.trace()
    conns = trace.find(dport=PORT)
    assert len(conns) == n, trace.summary()
    tuples = {c.client for c in conns}
    assert len(tuples) == n and tuples == {(a.addr, a.port) for a in accepts}
    for c in conns:
        expect(trace).connection(sport=c.client[1], dport=PORT).handshake().fin_from("server")
    evidence.record(f"{n} clients on listening fd {listen.args['fd']}: accept() returned fds {sorted(fds)}, "
                    f"{n} distinct 4-tuples", stevens=True)


@pytest.mark.claim("C11")
def test_c11_fork_server_parent_close_sends_no_fin(testbed, capture, family, programs, evidence):
    n = 6
    # Each child holds its connection 400 ms: the parent's close() of its copy comes long before, and the
    # children overlap even when a loaded machine is slow to start the clients.
    server = start_server(testbed, programs, family, "--accept", str(n), "--mode", "fork", "--send", "hello",
                          "--close-unread", "--hold-ms", "400")
    clients = [start_client(testbed, programs, family, "--read") for _ in range(n)]
    results = [finish(c) for c in clients]  # their socket calls are noted for the report's ladders
    served = finish(server)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    trace = capture.trace()
    parent = served.call("listen").pid
    forks = [c for c in served.calls if c.call == "fork"]
    accepts = [c for c in served.calls if c.call == "accept"]
    assert len(forks) == len(accepts) == n and len({f.ret for f in forks}) == n
    lifetimes = []
    for accept, fork in zip(accepts, forks):
        child = fork.ret
        conn = expect(trace).connection(sport=accept.port, dport=PORT).handshake().no_rst().fin_from("server") \
            .connection
        tale = story(conn, capture, server=[c for c in served.calls if c.pid in (parent, child)])
        parent_close = served.close_of(accept.ret, pid=parent)
        child_close = served.close_of(accept.ret, pid=child)
        fin = sent_by_server(conn, "FIN")
        # The parent's close() only dropped the count from 2 to 1: no FIN then.
        assert parent_close.t_return_ns < fin.ts_ns, "FIN before the child closed" + tale
        assert not [e for e in conn.at("server:s0") if e.direction == "s>c" and e.kind in ("FIN", "RST")
                    and e.ts_ns < child_close.t_enter_ns], tale
        # The FIN leaves during the child's close(), the last reference.
        assert child_close.t_enter_ns <= fin.ts_ns <= child_close.t_return_ns, tale
        start = next(c for c in served.calls if c.pid == child and c.call == "getsockname")
        lifetimes.append((start.t_enter_ns, child_close.t_return_ns))
    # Clients were served at once: children's lifetimes overlap (an iterative server would have one
    # alive at a time). How many at once depends on how fast the clients start, so it is measured.
    most = max_alive(lifetimes)
    assert most >= 2, f"children served one after another: {lifetimes}"
    evidence.record(f"{n} children, up to {most} alive at once; each parent close() "
                    f"sent nothing; each FIN left during the child's close()", stevens=True)


def max_alive(lifetimes: list[tuple[int, int]]) -> int:
    """The most intervals (begin, end) open at one instant."""
    alive = most = 0
    for _, step in sorted([(b, 1) for b, _ in lifetimes] + [(e, -1) for _, e in lifetimes],
                          key=lambda x: (x[0], x[1])):  # an end before a begin at the same instant
        alive += step
        most = max(most, alive)
    return most


@pytest.mark.claim("C13")
def test_c13b_bind_to_port_zero_then_syn_carries_that_port(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "1")
    bind_to = "[::]:0" if family == 6 else "0.0.0.0:0"
    client = run_client(testbed, programs, family, "--bind", bind_to)
    finish(server)
    name_after_bind = client.call("getsockname")  # the first one follows bind()
    assert client.call("bind").t_return_ns <= name_after_bind.t_enter_ns < client.call("connect").t_enter_ns
    conn = expect(capture.trace()).connection(dport=PORT).handshake().connection
    assert name_after_bind.port != 0
    assert conn.client[1] == name_after_bind.port, story(conn, capture, client=client.calls)
    evidence.record(f"bind(port 0) then getsockname() = port {name_after_bind.port}; the SYN came from it",
                    stevens=True)


@pytest.mark.claim("C13")
def test_c13c_wildcard_server_names_on_the_connected_socket(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "1")
    client = run_client(testbed, programs, family)
    served = finish(server)
    assert client.call("connect").ret == 0
    listen_name = served.call("getsockname")  # of the listening socket, bound to the wildcard
    conn_fd = served.conn_fd
    local = next(c for c in served.calls if c.call == "getsockname" and c.args.get("fd") == conn_fd)
    peer = next(c for c in served.calls if c.call == "getpeername" and c.args.get("fd") == conn_fd)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().connection
    tale = story(conn, capture, server=served.calls)
    assert listen_name.addr == wildcard(family)
    # On the connected socket: the local address the kernel used (the SYN's destination) and the peer.
    assert (local.addr, local.port) == conn.server, tale
    assert (peer.addr, peer.port) == conn.client, tale
    evidence.record(f"listening on {wildcard(family)}; the connected socket's getsockname() = {conn.server[0]}, "
                    f"getpeername() = the SYN's source", stevens=True)


@pytest.mark.claim("C14")
def test_c14_exec_hands_the_connected_socket_to_a_new_program(testbed, capture, family, programs, evidence):
    greeting = "served by the exec'ed handler"
    server = start_server(testbed, programs, family, "--accept", "1", "--mode", "exec", "--",
                          programs["handler"], "--send", greeting, "--no-read")
    client = run_client(testbed, programs, family, "--read")
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().no_rst().connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    child = served.call("fork").ret
    execve = served.call("execve")
    handler = [c for c in served.calls if c.pid == child and c.t_enter_ns > execve.t_enter_ns]
    # Same pid after exec, and the new program found the connection on its stdin.
    assert execve.pid == child and handler, tale
    peer = next(c for c in handler if c.call == "getpeername")
    assert (peer.args["fd"], peer.ret, (peer.addr, peer.port)) == (0, 0, conn.client), tale
    # Its data reached the client, and the exec itself sent nothing.
    assert "".join(c.extra.get("data", "") for c in client.calls if c.call == "read") == greeting, tale
    at_exec = [e for e in conn.at("server:s0") if e.direction == "s>c" and e.kind in ("FIN", "RST")
               and e.ts_ns < handler[0].t_enter_ns]
    assert not at_exec, "a FIN or RST left at the exec" + tale
    last = [c for c in handler if c.call == "close"][-1]
    assert last.t_enter_ns <= sent_by_server(conn, "FIN").ts_ns <= last.t_return_ns, tale
    evidence.record(f"pid {child} exec'ed the handler, which read its peer from fd 0 and served the client; "
                    f"no FIN/RST at the exec; FIN at the handler's last close()", stevens=True)


@pytest.mark.claim("C14")
def test_c14_close_on_exec_closes_the_connection_at_exec(testbed, capture, family, programs, evidence):
    server = start_server(testbed, programs, family, "--accept", "1", "--mode", "exec", "--cloexec", "--",
                          programs["handler"], "--send", "never sent")
    client = run_client(testbed, programs, family, "--read")
    served = finish(server)
    conn = expect(capture.trace()).connection(dport=PORT).handshake().fin_from("server").connection
    tale = story(conn, capture, client=client.calls, server=served.calls)
    execve = served.call("execve")
    handler = [c for c in served.calls if c.pid == execve.pid and c.t_enter_ns > execve.t_enter_ns]
    name = next(c for c in handler if c.call == "getsockname")
    # FD_CLOEXEC: fd 0 is gone in the new program, and the last reference went with the exec.
    assert (name.ret, name.errno) == (-1, "EBADF"), tale
    fin = sent_by_server(conn, "FIN")
    assert execve.t_enter_ns <= fin.ts_ns <= name.t_enter_ns, "the FIN did not leave at the exec" + tale
    assert not [c for c in client.calls if c.call == "read" and c.ret > 0], tale
    evidence.record("with FD_CLOEXEC the exec closed the socket: FIN at the exec, the handler's fd 0 is EBADF",
                    stevens=True)
