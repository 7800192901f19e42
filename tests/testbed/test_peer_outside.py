"""Scapy through the verifier as a user's own test meets it, in a directory outside the repository: the
README's `sr1` probe and the same SYN-ACK in `capture.packets()`, and a scripted peer whose step is
deliberately wrong, which must fail with a readable report (expected and observed packet, the
ladder, the pcap) and keep the pcap."""

import os
import re
import subprocess
import sys
import textwrap

INNER = textwrap.dedent('''
    import sys
    from scapy.layers.inet import IP, TCP
    from verifier.peer import ScriptedPeer

    LISTEN = "import socket, time; s = socket.create_server(('', 5000)); time.sleep(30)"

    def test_probe(testbed, capture):
        srv = testbed.server.start([sys.executable, "-c", LISTEN])
        testbed.server.wait_listen(5000, process=srv)
        ans = testbed.client.sr1(IP(dst=testbed.server.addr(4)) / TCP(sport=40123, dport=5000, flags="S", seq=4242),
                                 timeout=3)
        assert ans[TCP].flags == "SA" and ans[TCP].ack == 4243
        same = [p for p in capture.packets("client:c0") if p.haslayer(TCP) and p[TCP].flags == "SA"]
        assert [(p[TCP].seq, p[TCP].ack) for p in same] == [(ans[TCP].seq, 4243)]

    def test_wrong_step(testbed, capture):
        with ScriptedPeer(testbed, side="client", family=4, capture=capture) as peer:
            listener = peer.socket()
            listener.bind(5000)
            listener.listen(8)
            peer.send("S", seq=0, options=[("MSS", 1460)])
            peer.expect("SA", seq=0, ack=2, within=(0, 0.5))   # wrong: the SYN-ACK acknowledges ISN + 1
''')


def test_probe_and_a_wrong_script_step_from_a_users_directory(root, tmp_path):
    (tmp_path / "test_mine.py").write_text(INNER)
    caps = tmp_path / "caps"
    env = {k: v for k, v in os.environ.items() if k != "VERIFIER_REQUIRE_ROOT"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
                          f"--rootdir={tmp_path}", f"--verifier-captures={caps}", str(tmp_path / "test_mine.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = res.stdout
    assert "PASSED test_mine.py::test_probe" in out, out + res.stderr
    assert "FAILED test_mine.py::test_wrong_step" in out and res.returncode == 1, out + res.stderr
    # The report: which step, what was expected and what came, the ladder with the step marked, the pcap.
    assert "ScriptError: scripted peer: step 4: the packet differs (ack 1, not 2)" in out, out
    assert re.search(r"expected: <  SA\s+seq=0 ack=2 within 0-0.5 s of the previous step", out), out
    assert re.search(r"observed: SA\s+seq=0 ack=1 win=\d+ len=0 <MSS \d+", out), out
    assert re.search(r"ladder \(peer = client 192\.0\.2\.2:\d+, real kernel = server 203\.0\.113\.2:5000", out), out
    assert re.search(r"real\s+listen\(8\) = 0", out) and re.search(r">\s+S\s+seq=0 ack=- ", out), out
    assert re.search(r">>\s+4\s+\+\s*\d+\.\d{6}\s+<\s+SA\s+seq=0 ack=1", out), out
    kept = caps / "test_mine.test_wrong_step.pcapng"
    assert f"pcap: {kept}" in out, out
    # Kept with the failed test, and it holds the SYN-ACK the report shows.
    from verifier.pcap.scapy_view import scapy_packets

    assert kept.exists() and not (caps / "test_mine.test_probe.pcapng").exists()
    every = scapy_packets(kept)
    synacks = [p for p in every if p.sniffed_on == "client:c0" and p.haslayer("TCP") and p["TCP"].flags == "SA"]
    assert synacks and synacks[0]["TCP"].sport == 5000, [(p.sniffed_on, p.summary()) for p in every]
