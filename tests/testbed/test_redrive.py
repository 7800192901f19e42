"""Re-driving a captured connection against a live testbed (`verifier.replay.redrive`), as root.

The client side of a recorded connection is sent again from the testbed's client namespace (Scapy
frames on a packet socket opened there), with a new source port and the acknowledgements moved onto
the live server's ISN; the client kernel's own RSTs are dropped meanwhile. The live answers are
compared with the recorded ones: equal when nothing changed, and different, with the difference
shown, when the server side changed (a listener appeared).
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from verifier.replay.redrive import redrive

GOLDEN = Path(__file__).resolve().parents[2] / "captures" / "golden"

ECHO_SERVER = """
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.listen(8)
while True:
    c, _ = s.accept()
    data = c.recv(100)
    c.sendall(data.upper())
    while c.recv(100):
        pass
    c.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"ping")
assert c.recv(100) == b"PING"
c.shutdown(socket.SHUT_WR)
assert c.recv(100) == b""
c.close()
"""


def _refused_then_listening(testbed, capture, family, port):
    res = testbed.client.run(["python3", "-c", CLIENT, testbed.server.addr(family), str(port)], timeout=15)
    assert res.returncode != 0 and "ConnectionRefusedError" in res.stderr
    trace = capture.trace()
    (conn,) = trace.find(dport=port)
    return trace, conn


def test_redrive_refused_attempt_matches_then_differs_once_a_server_listens(testbed, capture, family):
    port = 5001
    trace, conn = _refused_then_listening(testbed, capture, family, port)
    same = redrive(trace, conn.number, testbed, answer_timeout=3)
    assert same.ok, same.text()
    assert [(a.flags, a.ack) for a in same.live_answers] == [("RA", 1)]
    assert same.live_client[0] == testbed.client.addr(family) and same.live_client[1] != conn.client[1]

    srv = testbed.server.start(["python3", "-c", ECHO_SERVER, str(family), str(port)])
    testbed.server.wait_listen(port, process=srv)
    changed = redrive(trace, conn.number, testbed, answer_timeout=3)
    assert not changed.ok
    assert changed.live_answers[0].flags == "SA" and changed.live_answers[0].ack == 1
    assert "answer 1: recorded RA seq=0 ack=1 len=0, live SA seq=0 ack=1 len=0" in changed.differences
    # the client kernel answered the unexpected SYN-ACK with RST: the nft rule dropped it
    assert changed.client_rsts_dropped >= 1
    assert "differences:" in changed.text()


def test_redrive_full_exchange_maps_acks_onto_the_live_isn(testbed, capture, family):
    port = 5002
    srv = testbed.server.start(["python3", "-c", ECHO_SERVER, str(family), str(port)])
    testbed.server.wait_listen(port, process=srv)
    res = testbed.client.run(["python3", "-c", CLIENT, testbed.server.addr(family), str(port)], timeout=15)
    assert res.returncode == 0, res.stderr
    trace = capture.trace()
    (conn,) = trace.find(dport=port)
    report = redrive(trace, conn.number, testbed, answer_timeout=3)
    live = report.live_answers
    # the handshake and the echoed data only come if every ack we sent was mapped onto the live ISN
    assert live and live[0].flags == "SA" and live[0].ack == 1, report.text()
    data = [a for a in live if a.length]
    assert len(data) == 1 and data[0].length == 4 and data[0].seq == 1 and data[0].ack == 5, report.text()
    assert any("F" in a.flags for a in live), report.text()  # the server closed after our FIN
    assert not any("R" in a.flags for a in live), report.text()
    assert len(report.sent) == len([e for e in conn.events if e.direction == "c>s"])
    assert report.live_server_isn is not None


def test_cli_redrive_against_a_named_testbed(tmp_path, root):
    """The thin name layer: `verifier replay FILE --against NAME --connection ID`."""
    from netns import Testbed

    from verifier.cli import main

    name = "rd" + "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
    bed = Testbed("routed", "dual", name=name).up()
    try:
        bed.detach()
        # recorded on another testbed of the same shape: nothing listens on 5001 here either
        rc = main(["replay", str(GOLDEN / "c3_refused_ipv4.pcapng"), "--against", name, "--connection", "0",
                   "--timeout", "3"])
        assert rc == 0
        rc = main(["replay", str(GOLDEN / "c3_refused_ipv4.pcapng"), "--against", name, "--connection", "7"])
        assert rc == 2
    finally:
        Testbed.attach(name).down()
