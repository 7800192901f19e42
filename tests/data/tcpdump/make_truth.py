"""Write tshark_tcp.json: for each capture of tcpdump's test corpus, how many frames tshark's own
TCP dissector finds (`tshark -Y tcp`), the peer reading `tests/unit/test_tcpdump_corpus.py` compares
ours with. Run it again after fetching another corpus version (tests/corpora.py), and commit the file:

    .venv/bin/python tests/data/tcpdump/make_truth.py .cache/corpora/tcpdump-4.99.3/tests tests/data/tcpdump/tshark_tcp.json
"""
import subprocess, json, sys, concurrent.futures as cf
from pathlib import Path
D = Path(sys.argv[1])
files = sorted(p for p in D.iterdir() if p.suffix in (".pcap", ".pcapng"))
def one(p):
    t = subprocess.run(["tshark", "-n", "-r", str(p), "-Y", "tcp", "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=120)
    return p.name, sum(1 for l in t.stdout.splitlines() if l.strip())
with cf.ThreadPoolExecutor(2) as ex:
    res = dict(ex.map(one, files))
ver = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
json.dump({"tshark": ver, "captures": len(files), "tcp_frames": {k: v for k, v in sorted(res.items()) if v}},
          open(sys.argv[2], "w"), indent=1, sort_keys=True)
print(ver, len(files), sum(1 for v in res.values() if v))
