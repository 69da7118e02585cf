"""Show a conversion: a plain-TCP guest talks MPTCP to a Linux server through the middlebox,
over both uplinks at once, and survives one of them being pulled; then the inbound role: a
Linux MPTCP client with two interfaces reaches a plain-TCP service in the guest with MPTCP,
its second interface's join answered by the middlebox.

Builds the reference topology (TESTBED.md: two 50 Mbit/s paths, so that one path's limit is
visible) in fresh network namespaces, installs the rules with an `--uplink` per path and
starts `middlebox run` in the middlebox namespace, starts a Linux MPTCP server, and sends data
both ways from a guest that speaks plain TCP. Prints what proves the connection was MPTCP and
used both uplinks (the server's own counters, MPTCP_INFO, the bytes each uplink carried), the
throughput, then downloads again while the uplink of the first subflow is pulled mid-transfer
and put back, and shows the transfer finishing intact. Removes everything it created. Needs
root. Sends traffic only inside the namespaces it creates.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

IPPROTO_MPTCP = 262
SOL_MPTCP, MPTCP_INFO = 284, 1
PORT = 5201
CHUNK = 1 << 16

# Server counters that must stay 0 for a clean conversion (PROTOCOL.md).
MUST_BE_ZERO = (
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinNoTokenFound",
    "MPJoinAckHMacFailure", "DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx",
    "DataCsumErr", "MPFailRx", "DssFallback",
)
RATE_MBIT = 50


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--megabytes", type=int, default=20, metavar="N",
                   help="megabytes to send each way (default: 20)")
    p.add_argument("--mptcp-version", type=int, choices=(0, 1), default=1,
                   help="MPTCP version the middlebox offers (default: 1; Linux answers v0 with plain TCP)")
    p.add_argument("--checksum", action="store_true",
                   help="ask for DSS checksums (the server is also set to require them)")
    p.add_argument("--ipv6", action="store_true", help="use IPv6 instead of IPv4")


def mptcp_info(conn: socket.socket) -> dict | None:
    """The server socket's MPTCP_INFO: subflows, fallback flag, token, checksum."""
    try:
        raw = conn.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
    except OSError:
        return None
    if len(raw) < 43:
        return None
    flags, token = struct.unpack_from("=II", raw, 8)
    return {"subflows": raw[0], "fallback": bool(flags & 1), "token": token,
            "csum_enabled": bool(raw[42])}


class DemoServer(threading.Thread):
    """One connection: receives `n` bytes (hashing them), then sends `n` bytes back."""

    def __init__(self, sock: socket.socket, n: int) -> None:
        super().__init__(daemon=True)
        self.sock, self.n = sock, n
        self.info: dict | None = None
        self.received_sha = ""
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.sock.settimeout(60)
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(60)
                h, left = hashlib.sha256(), self.n
                while left:
                    chunk = conn.recv(min(left, CHUNK))
                    if not chunk:
                        raise ConnectionError(f"upload ended {left} bytes early")
                    h.update(chunk)
                    left -= len(chunk)
                self.received_sha = h.hexdigest()
                self.info = mptcp_info(conn)
                conn.sendall(pattern(self.n))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
        except Exception as e:  # reported by the demo, not raised in a thread
            self.error = f"{type(e).__name__}: {e}"


def link_bytes(t, ifname: str, ns: str | None = None) -> tuple[int, int]:
    base = f"/sys/class/net/{ifname}/statistics/"
    out = t.run(ns or t.mbox, ["cat", base + "tx_bytes", base + "rx_bytes"]).stdout.split()
    return int(out[0]), int(out[1])


def pull_uplink(t, family: int, server_ip: str, n: int) -> tuple[bool, str]:
    """Download `n` bytes again while uplink 1 (the one the guest's own subflow uses) is set
    down after 1 s and up again 1 s later; (ok, what to print)."""
    with t.in_netns(t.server):
        lsock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((server_ip, PORT + 1))
    lsock.listen(1)

    def serve() -> None:
        try:
            conn, _ = lsock.accept()
            with conn:
                conn.sendall(pattern(n))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
        except OSError:
            pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    with t.in_netns(t.guest):
        c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(60)
    samples: list[tuple[float, int]] = []
    h, got = hashlib.sha256(), 0
    events = []
    try:
        c.connect((server_ip, PORT + 1))
        start = time.monotonic()
        down_at, up_at, pulled, back = 1.0, 2.0, False, False
        while chunk := c.recv(CHUNK):
            h.update(chunk)
            got += len(chunk)
            now = time.monotonic() - start
            samples.append((now, got))
            if not pulled and now >= down_at:
                t.set_link(1, False)
                pulled = True
                events.append(f"{now:.1f} s: uplink 1 pulled at {got / 1e6:.1f} MB")
            elif pulled and not back and now >= up_at:
                t.set_link(1, True)
                back = True
                events.append(f"{now:.1f} s: uplink 1 back at {got / 1e6:.1f} MB")
        took = time.monotonic() - start
    except OSError as e:
        return False, f"failover: the transfer broke: {e}"
    finally:
        c.close()
        th.join(10)
        lsock.close()
        t.set_link(1, True)
    stall, last_t, last_b = 0.0, 0.0, 0
    for tm, b in samples:
        if b != last_b:
            stall = max(stall, tm - last_t)
            last_t, last_b = tm, b
    ok = got == n and h.hexdigest() == hashlib.sha256(pattern(n)).hexdigest()
    lines = ["failover: download again while the uplink of the guest's own subflow is pulled:",
             *(f"  {e}" for e in events),
             f"  {got / 1e6:.0f} MB in {took:.1f} s, longest gap without data {stall:.2f} s, "
             f"sha256 {'identical' if ok else 'DIFFERENT'}"]
    return ok, "\n".join(lines)


def client_second_interface(t, family: int) -> str:
    """The client (server namespace) uses its path-2 interface too: a `subflow` endpoint and
    a route from that address to the guests by path 2 (as a phone's second interface)."""
    p2 = t.paths[1]
    v6 = family == socket.AF_INET6
    addr, gw, prefix = ((p2.server_ip6, p2.mbox_ip6, t.GUEST_PREFIX6) if v6 else
                        (p2.server_ip, p2.mbox_ip, t.GUEST_PREFIX))
    fam = ["-6"] if v6 else []
    t.run(t.server, ["ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"])
    t.run(t.server, ["ip", *fam, "route", "add", prefix, "via", gw, "dev", p2.server_if, "table", "202"])
    t.run(t.server, ["ip", *fam, "rule", "add", "from", addr, "table", "202", "priority", "202"])
    t.run(t.server, ["ip", "mptcp", "endpoint", "add", addr, "dev", p2.server_if, "subflow"])
    return p2.server_if


def inbound_role(t, family: int, guest_ip: str, n: int) -> tuple[bool, str]:
    """The other way round: a Linux MPTCP client in the server namespace, with two
    interfaces, sends `n` bytes to a plain-TCP service in the guest and gets `n` back; its
    second interface joins at the guest's address, and it joins the uplink address the
    middlebox announces, both answered by the middlebox; (ok, what to print)."""
    with t.in_netns(t.guest):
        lsock = socket.socket(family, socket.SOCK_STREAM)  # plain TCP: the guest's service
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((guest_ip, PORT + 2))
    lsock.listen(1)
    service = DemoServer(lsock, n)
    service.start()
    if2 = client_second_interface(t, family)
    ifs = (t.paths[0].server_if, if2)
    links0 = [link_bytes(t, i, ns=t.server) for i in ifs]
    before = t.nstat(t.server)
    with t.in_netns(t.server):
        c = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    c.settimeout(60)
    data, h, got, info, error = pattern(n), hashlib.sha256(), 0, None, None
    start = time.monotonic()
    try:
        c.connect((guest_ip, PORT + 2))
        c.sendall(data)
        info = mptcp_info(c)  # (before the close: its subflows)
        while chunk := c.recv(CHUNK):
            h.update(chunk)
            got += len(chunk)
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        c.close()
        service.join(30)
        lsock.close()
    took = time.monotonic() - start
    links1 = [link_bytes(t, i, ns=t.server) for i in ifs]
    d = {k: v - before.get(k, 0) for k, v in t.nstat(t.server).items()}
    up_ok = service.received_sha == hashlib.sha256(data).hexdigest()
    down_ok = got == n and h.hexdigest() == hashlib.sha256(data).hexdigest()
    mptcp = info is not None and not info["fallback"]
    per_if = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(links0, links1)]
    ok = error is None and service.error is None and up_ok and down_ok and mptcp and \
        d.get("MPCapableSYNACKRX", 0) == 1 and d.get("MPJoinSynAckRx", 0) >= 1 and \
        not any(d.get(k, 0) for k in MUST_BE_ZERO) and min(min(x) for x in per_if) > n / 10
    lines = [f"inbound: a Linux MPTCP client (server namespace) -> plain-TCP service in the guest "
             f"[{guest_ip}]:{PORT + 2}, {n / 1e6:.0f} MB each way:",
             f"  the client's socket: {'MPTCP, not fallback' if mptcp else 'NOT MPTCP (fallback)'}"
             + (f", token=0x{info['token']:08x}" if info else "")
             + (f", extra subflows={info['subflows']}" if info else "")
             + f"; its MIB: MPCapableSYNACKRX {d.get('MPCapableSYNACKRX', 0)}, "
             f"MPJoinSynAckRx {d.get('MPJoinSynAckRx', 0)} (its joins, answered by the middlebox: "
             "at the guest's address from its second interface, and at the uplink address we "
             f"announced: AddAddr {d.get('AddAddr', 0)}, MPJoinPortSynAckRx "
             f"{d.get('MPJoinPortSynAckRx', 0)})" + "".join(f", {k} {d[k]}" for k in MUST_BE_ZERO if d.get(k)),
             *(f"  client interface {i} ({name}): sent {tx / 1e6:5.1f} MB, received {rx / 1e6:5.1f} MB"
               for i, (name, (tx, rx)) in enumerate(zip(ifs, per_if), 1)),
             f"  {2 * got / 1e6:.0f} MB in {took:.1f} s, sha256 up {'identical' if up_ok else 'DIFFERENT'}, "
             f"down {'identical' if down_ok else 'DIFFERENT'}"]
    if error or service.error:
        lines.append(f"  error: {error or service.error}")
    return ok, "\n".join(lines)


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"middlebox demo").digest() * (CHUNK // 32)
    return (block * (n // len(block) + 1))[:n]


def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("middlebox demo: needs root (it builds network namespaces)", file=sys.stderr)
        return 1
    from middlebox.testbed import Topology

    n = args.megabytes * 1_000_000
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    print(f"building the topology: guest (plain TCP) -- mbox (middlebox) == 2 uplinks of "
          f"{RATE_MBIT} Mbit/s == server (Linux MPTCP)")
    with Topology(checksum=args.checksum, rate_mbit=RATE_MBIT, latency_ms=20, policy_routing=False) as t:
        server_ip = t.server_ip6 if args.ipv6 else t.server_ip
        me = [sys.executable, "-m", "middlebox"]
        uplinks = [a for spec in t.uplink_specs() for a in ("--uplink", spec)]
        t.run(t.mbox, [*me, "rules", "install", "--queue", "0", "--guest-iface", t.mbox_guest_if, *uplinks])
        run_argv = [*me, "run", "--queue", "0", "--mptcp-version", str(args.mptcp_version)]
        if args.checksum:
            run_argv.append("--checksum")
        daemon = t.popen(t.mbox, run_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        try:
            for line in daemon.stdout:  # its log, until it has bound the queue
                print(f"middlebox: {line.strip()}")
                if "bound queue" in line:
                    break
            else:
                print("middlebox run did not start (see above)", file=sys.stderr)
                return 1
            before = t.nstat(t.server)
            links0 = [link_bytes(t, p.mbox_if) for p in t.paths]
            with t.in_netns(t.server):
                lsock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((server_ip, PORT))
            lsock.listen(1)
            server = DemoServer(lsock, n)
            server.start()

            with t.in_netns(t.guest):
                c = socket.socket(family, socket.SOCK_STREAM)  # plain TCP: the guest knows nothing
            c.settimeout(60)
            data = pattern(n)
            print(f"guest {t.guest_ip6 if args.ipv6 else t.guest_ip} -> server [{server_ip}]:{PORT}, "
                  f"plain TCP socket, {args.megabytes} MB each way")
            # a transfer that fails (60 s socket timeout, reset) is reported below with the
            # counters, not as a traceback
            transfer_error = None
            up_s = down_s = 0.0
            h, got = hashlib.sha256(), 0
            try:
                start = time.monotonic()
                c.connect((server_ip, PORT))
                c.sendall(data)
                up_s = time.monotonic() - start
                start = time.monotonic()
                while chunk := c.recv(CHUNK):
                    h.update(chunk)
                    got += len(chunk)
                down_s = time.monotonic() - start
            except OSError as e:
                transfer_error = f"{'upload' if not up_s else 'download'} failed: {type(e).__name__}: {e}"
            finally:
                c.close()
            server.join(30)
            lsock.close()
            after = t.nstat(t.server)
            links1 = [link_bytes(t, p.mbox_if) for p in t.paths]
            failover = (pull_uplink(t, family, server_ip, n) if transfer_error is None else
                        (False, "failover: not run (the transfer above failed)"))
            inbound = inbound_role(t, family, t.guest_ip6 if args.ipv6 else t.guest_ip, n // 2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                out, _ = daemon.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                out, _ = daemon.communicate()
            t.run(t.mbox, [*me, "rules", "remove"], check=False)

    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    ok = True
    print()
    print("what the Linux MPTCP server saw (nstat MPTcpExt, delta):")
    for k in ("MPCapableSYNRX", "MPCapableACKRX", "MPJoinSynRx", "MPJoinAckRx", *MUST_BE_ZERO):
        v = delta.get(k, 0)
        bad = (v == 0) if k in ("MPCapableSYNRX", "MPCapableACKRX", "MPJoinSynRx", "MPJoinAckRx") else (v != 0)
        ok &= not bad
        print(f"  {k:26s} {v:>6d}{'   <- unexpected' if bad else ''}")
    info = server.info
    if info is None:
        print("  MPTCP_INFO: not available (the server socket was not MPTCP)")
        ok = False
    else:
        print(f"  MPTCP_INFO: extra subflows={info['subflows']} fallback={info['fallback']} "
              f"token=0x{info['token']:08x} checksums={'on' if info['csum_enabled'] else 'off'}")
        ok &= not info["fallback"] and info["subflows"] >= 1
    print()
    print("bytes each uplink of the middlebox carried (interface counters):")
    for i, (p, (tx0, rx0), (tx1, rx1)) in enumerate(zip(t.paths, links0, links1), 1):
        print(f"  uplink {i} ({p.mbox_if}): sent {(tx1 - tx0) / 1e6:6.1f} MB, received {(rx1 - rx0) / 1e6:6.1f} MB")
        ok &= tx1 - tx0 > n / 10 and rx1 - rx0 > n / 10
    up_ok = server.received_sha == hashlib.sha256(data).hexdigest()
    down_ok = got == n and h.hexdigest() == hashlib.sha256(data).hexdigest()
    ok &= up_ok and down_ok and server.error is None
    print()
    if transfer_error:
        ok = False
        print(f"the guest's transfer: {transfer_error}")
    if up_s:
        print(f"upload:   {n / 1e6:.0f} MB in {up_s:.2f} s = {n * 8 / up_s / 1e6:.0f} Mbit/s, "
              f"sha256 {'identical' if up_ok else 'DIFFERENT'}")
    if down_s:
        print(f"download: {got / 1e6:.0f} MB in {down_s:.2f} s = {got * 8 / down_s / 1e6:.0f} Mbit/s, "
              f"sha256 {'identical' if down_ok else 'DIFFERENT'}")
    print(f"          (one {RATE_MBIT} Mbit/s uplink alone carries at most {RATE_MBIT} Mbit/s)")
    print()
    f_ok, f_text = failover
    print(f_text)
    ok &= f_ok
    print()
    i_ok, i_text = inbound
    print(i_text)
    ok &= i_ok
    if server.error:
        print(f"server error: {server.error}")
    print()
    print("middlebox counters at exit:")
    for line in out.splitlines():
        print(f"  {line}")
    print()
    print("RESULT: the guest's plain TCP connection was carried as MPTCP v1, and an MPTCP client "
          "reached the guest's plain service with MPTCP v1" if ok else
          "RESULT: the conversion did not work as it should (see above)")
    return 0 if ok else 1
