"""Make real MPTCP captures in throw-away namespaces (for inspect's tests and test vectors).

`capture_transfer(path, ...)` builds `middlebox.testbed.Topology`, runs a Linux MPTCP client
in the *mbox* namespace (two paths to the server; a `subflow` endpoint on its path-2 address
makes a second subflow join) against a Linux MPTCP server in the *server* namespace
(`socket(AF_INET, SOCK_STREAM, 262)`), transfers `size` bytes each way at the same time, both
sides half-close (DATA_FIN both ways), and captures everything on the server with
`tcpdump -i any -s 0 -w path` (Linux cooked v2 link type). The namespaces are deleted
afterwards, also on failure. Needs root and the Linux MPTCP stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from middlebox.testbed import Topology

PORT = 5201

# Both peers: send `size` deterministic bytes in `chunks` writes (with a pause between writes),
# receive `size` bytes and check them, then half-close and wait for the peer's close.
_PEER = r"""
import hashlib, random, socket, sys, threading, time
role, host, port, size, chunks, pause, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
def blob(tag):
    return random.Random(tag).randbytes(size)
if role == "server":
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port)); ls.listen(1)
    print("listening", flush=True)
    s, _ = ls.accept()
    mine, theirs = blob("server"), blob("client")
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    s.connect((host, port))
    mine, theirs = blob("client"), blob("server")
    time.sleep(delay)  # let the extra subflows join before data flows
def send():
    step = max(1, -(-size // chunks))
    for i in range(0, size, step):
        s.sendall(mine[i:i + step])
        if pause:
            time.sleep(pause)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
got = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
t.join()
if role == "server":
    time.sleep(0.2)
s.close()
ok = bytes(got) == theirs
print("ok" if ok else f"BAD {len(got)} bytes", flush=True)
sys.exit(0 if ok else 3)
"""


@dataclass
class CaptureResult:
    path: str
    client_nstat: dict
    server_nstat: dict
    server_ip: str
    client_ips: tuple[str, str]
    tcpdump_stats: str = ""


def capture_transfer(path: str, *, attempts: int = 3, **kw) -> CaptureResult:
    """`capture_one`, made again (up to `attempts` times) while tcpdump reports kernel drops."""
    for _ in range(attempts):
        res = capture_one(path, **kw)
        if re.search(r"^0 packets dropped by kernel", res.tcpdump_stats, re.M):
            return res
    return res


def capture_one(
    path: str,
    *,
    size: int = 2 * 1024 * 1024,
    chunks: int = 64,
    pause: float = 0.0,
    checksum: bool = False,
    join: bool = True,
    add_addr: bool = False,
    rate_mbit: float | None = 100,
    delay: float = 0.5,
) -> CaptureResult:
    """Capture one MPTCP transfer of `size` bytes each way into `path` (see module doc)."""
    topo = Topology(rate_mbit=rate_mbit, checksum=checksum, server_signal=add_addr,
                    sysctls={"mbox": {"net.mptcp.checksum_enabled": 1 if checksum else 0}})
    with topo as t:
        p1, p2 = t.paths[0], t.paths[1]
        t.run(t.mbox, ["ip", "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])
        if join:
            t.run(t.mbox, ["ip", "mptcp", "endpoint", "add", p2.mbox_ip, "dev", p2.mbox_if, "subflow"])
        dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", "any", "-s", "0", "-B", "262144", "-U", "--immediate-mode", "-w", path, "tcp"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_line(dump, "listening on", what="tcpdump")
        argv = [sys.executable, "-c", _PEER]
        server = t.popen(t.server, [*argv, "server", "0.0.0.0", PORT, size, chunks, pause, 0],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t.wait_tcp_listen(t.server, PORT)
        client = t.run(t.mbox, [*argv, "client", p1.server_ip, PORT, size, chunks, pause, delay],
                       check=False, timeout=120)
        out, err = server.communicate(timeout=60)
        if client.returncode or server.returncode:
            raise RuntimeError(f"transfer failed: client {client.returncode} {client.stdout}{client.stderr} "
                               f"server {server.returncode} {out}{err}")
        time.sleep(0.5)  # the last ACKs reach tcpdump
        dump.terminate()
        _, dump_err = dump.communicate(timeout=10)
        cn, sn = t.nstat(t.mbox), t.nstat(t.server)
        return CaptureResult(path, cn, sn, p1.server_ip, (p1.mbox_ip, p2.mbox_ip),
                             dump_err.decode(errors="replace").strip())


def _wait_for_line(proc: subprocess.Popen, needle: str, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stderr.fileno(), True)
    buf = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"{what} exited: {buf.decode(errors='replace')}")
        buf += line
        if needle.encode() in line:
            return
    raise TimeoutError(f"{what} did not start: {buf.decode(errors='replace')}")
