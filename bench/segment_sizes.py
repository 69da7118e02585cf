"""Upload segment sizes on the wire, the converter against Linux MPTCP (not a timed test).

Why the clean upload is 0.998 x Linux MPTCP (bench/README.md, stop 36): per system and with
or without a greeting from the server first (its data makes DATA_ACKs 64-bit, RFC 8684
§3.3.2), a 4 MB upload over one 100 Mbit/s path, captured on the server's link; prints the
most common payload size of the upload's segments and the length of their DSS option.

  converter  the guest's plain TCP through `middlebox run` (the rules of bench_multipath.py)
  linux      a Linux MPTCP client in the middlebox namespace

Needs root and tcpdump. Usage: python bench/segment_sizes.py [--tree DIR]"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
import types

import bench_multipath as bm

PORT = 7001
SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d)); s.listen(8)
while True:
    c, _ = s.accept()
    g = int(c.recv(16).split()[0])
    c.sendall(b"g" * g)
    while c.recv(1 << 16):
        pass
    c.close()
""" % PORT
CLIENT = r"""
import socket, sys
g = int(sys.argv[2])
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, int(sys.argv[3]))
c.connect((sys.argv[1], %d))
c.sendall(b"%%-15d\n" %% g)
got = 0
while got < g:
    got += len(c.recv(65536))
c.sendall(b"u" * (4 << 20)); c.close()
""" % PORT


def measure(t, system: str, greeting: int, pcap: str) -> tuple[int, int, int]:
    """(most common upload payload size, its share, DSS option length) for one upload."""
    cap = t.popen(t.server, ["tcpdump", "-q", "-s", "160", "-w", pcap, "-i", t.paths[0].server_if,
                             "tcp", "dst", "port", str(PORT)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    ns, proto = (t.guest, 0) if system == "converter" else (t.mbox, 262)
    t.run(ns, [sys.executable, "-c", CLIENT, t.server_ip, str(greeting), str(proto)], timeout=60)
    time.sleep(0.5)
    cap.terminate()
    cap.wait(5)
    out = subprocess.run(["tcpdump", "-nr", pcap], capture_output=True, text=True).stdout
    sizes = collections.Counter()
    dss = collections.Counter()
    for line in out.splitlines():
        m = re.search(r"length (\d+)$", line)
        if not m or int(m.group(1)) < 500:
            continue
        sizes[int(m.group(1))] += 1
        d = re.search(r"mptcp (\d+) dss", line)
        dss[int(d.group(1)) if d else 0] += 1
    size, n = (sizes.most_common(1) or [(0, 0)])[0]
    return size, round(100 * n / max(1, sum(sizes.values()))), dss.most_common(1)[0][0] if dss else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="the middlebox tree the daemon runs from (default: this one)")
    args = ap.parse_args()
    if args.tree:
        bm.TREE = bm.pathlib.Path(args.tree).resolve()
    sc = {"rates": [100], "latency_ms": 5, "loss": 0.0, "loss_path": 1}
    b = bm.Bench("segment-sizes", sc, types.SimpleNamespace(duration=0, converter_args=""))
    t = b.t
    rows = []
    try:
        t.start()
        srv = t.popen(t.server, [sys.executable, "-c", SERVER])
        t.wait_tcp_listen(t.server, PORT)
        with tempfile.TemporaryDirectory() as tmp:
            for system in ("linux", "converter"):
                daemon = None
                if system == "converter":
                    b.rules(True)
                    daemon = bm.Daemon(t)
                try:
                    for greeting in (0, 2000):
                        rows.append((system, greeting,
                                     *measure(t, system, greeting, f"{tmp}/{system}-{greeting}.pcap")))
                finally:
                    if daemon:
                        daemon.stop()
                        b.rules(False)
        srv.kill()
    finally:
        b.close()
    print("| system | server's greeting | upload payload per segment (share) | DSS option |")
    print("|---|---|---|---|")
    for system, g, size, share, dss in rows:
        print(f"| {system} | {g} bytes | {size} ({share} %) | {dss} bytes |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
