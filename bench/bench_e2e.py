#!/usr/bin/env python3
"""End-to-end throughput on the reference topology (TESTBED.md), measured in one run.

Unshaped veth, iperf3 upload (guest -> server) and download (-R), three ways through the mbox:
  forward      kernel forwarding, no queue
  passthrough  `middlebox run --passthrough`: NFQUEUE, every packet accepted unchanged
  converter    `middlebox run`: plain TCP converted to MPTCP v1 (the server is Linux MPTCP)
then with path 1 shaped to 100 Mbit/s (tbf): plain TCP vs converted.

Prints Mbit/s, packets/s through the mbox (IP forwarded datagrams / s), for the daemon modes
its CPU per queued packet (user and system µs, from /proc/PID/stat over the queue's message
count), and the ratios converter / passthrough (goal >= 0.9) and converted / plain on the
shaped path (goal >= 0.97). With --repeat N the unshaped daemon modes take turns N times
(passthrough, converter, passthrough, ...) so that a disturbed stretch of a shared machine
spoils one run of each rather than a whole mode; the ratios are of the medians.
Needs root and iperf3 + mptcpize (Debian: iperf3, mptcpd). Traffic stays in its namespaces.

    .venv/bin/python bench/bench_e2e.py [--seconds 8] [--repeat 1] [--unshaped-only] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from middlebox.testbed import Topology

ME = [sys.executable, "-m", "middlebox"]


def ip_forwarded(t: Topology) -> int:
    c = t.nstat(t.mbox, prefix=None)
    return c.get("IpForwDatagrams", 0) + c.get("Ip6OutForwDatagrams", 0)


def iperf(t: Topology, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", t.server_ip, "-t", str(seconds), "-J", "-O", "1"]
    if reverse:
        argv.append("-R")
    out = t.run(t.guest, argv, timeout=seconds + 60).stdout
    res = json.loads(out)
    if "error" in res:
        raise RuntimeError(f"iperf3: {res['error']}")
    end = res["end"]
    key = "sum_received"
    return end[key]["bits_per_second"] / 1e6


class Daemon:
    def __init__(self, t: Topology, *extra: str) -> None:
        self.t = t
        self.proc = t.popen(t.mbox, [*ME, "run", "--queue", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            if "bound queue" in line:
                self.pid = int(line.rsplit("pid", 1)[1].split()[0])
                return
        raise RuntimeError("middlebox run did not bind the queue")

    def cpu(self) -> tuple[float, float]:
        """User and system CPU seconds of the daemon so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        hz = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / hz, int(fields[12]) / hz

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def queue_seq(t: Topology, queue: int = 0) -> int:
    """Messages the mbox's queue has carried (id_seq of /proc/net/netfilter/nfnetlink_queue)."""
    out = t.run(t.mbox, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    for line in out.splitlines():
        f = line.split()
        if f and int(f[0]) == queue:
            return int(f[7])
    return 0


def measure(t: Topology, mode: str, seconds: int) -> dict:
    daemon = None
    if mode == "passthrough":
        daemon = Daemon(t, "--passthrough")
    elif mode == "converter":
        daemon = Daemon(t)
    row = {"mode": mode}
    try:
        for direction, reverse in (("up", False), ("down", True)):
            before, t0 = ip_forwarded(t), time.monotonic()
            if daemon:
                seq0, (u0, s0) = queue_seq(t), daemon.cpu()
            row[f"{direction}_mbit"] = iperf(t, seconds, reverse)
            row[f"{direction}_pps"] = (ip_forwarded(t) - before) / (time.monotonic() - t0)
            if daemon:
                n, (u1, s1) = max(queue_seq(t) - seq0, 1), daemon.cpu()
                row[f"{direction}_usr_us"] = (u1 - u0) / n * 1e6
                row[f"{direction}_sys_us"] = (s1 - s0) / n * 1e6
    finally:
        if daemon:
            row["daemon_exit"] = daemon.stop().strip().splitlines()[-1:]
    return row


def run_topology(seconds: int, rate: float | None, modes: list[str]) -> list[dict]:
    with Topology(rate_mbit=[rate, None] if rate else None) as t:
        t.run(t.mbox, [*ME, "rules", "install", "--queue", "0", "--guest-iface", t.mbox_guest_if])
        server = t.popen(t.server, ["mptcpize", "run", "iperf3", "-s"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            t.wait_tcp_listen(t.server, 5201)
            return [measure(t, m, seconds) for m in modes]
        finally:
            server.terminate()
            server.wait(5)
            t.run(t.mbox, [*ME, "rules", "remove"], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=8, help="iperf3 duration per measurement")
    ap.add_argument("--repeat", type=int, default=1,
                    help="unshaped runs of each daemon mode, taking turns (default 1)")
    ap.add_argument("--unshaped-only", action="store_true", help="skip the shaped path")
    ap.add_argument("--json", action="store_true", help="print the raw rows as JSON too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_e2e: needs root", file=sys.stderr)
        return 1
    import middlebox.core
    import middlebox.wire

    impl = f"wire {middlebox.wire.IMPLEMENTATION}, core {middlebox.core.IMPLEMENTATION}"
    print(f"# end-to-end, {args.seconds} s per iperf3 run, {impl}")
    unshaped = run_topology(args.seconds, None,
                            ["forward"] + ["passthrough", "converter"] * max(args.repeat, 1))
    shaped = [] if args.unshaped_only else run_topology(args.seconds, 100, ["forward", "converter"])

    print("\n## unshaped veth (daemon CPU: µs per queued packet, user+system)")
    print(f"{'mode':12s} {'up Mbit/s':>10s} {'up pkt/s':>10s} {'up µs':>11s} "
          f"{'down Mbit/s':>12s} {'down pkt/s':>11s} {'down µs':>11s}")
    for r in unshaped:
        cpu = {d: f"{r[d + '_usr_us']:4.1f}+{r[d + '_sys_us']:4.1f}" if d + "_usr_us" in r else ""
               for d in ("up", "down")}
        print(f"{r['mode']:12s} {r['up_mbit']:10.0f} {r['up_pps']:10.0f} {cpu['up']:>11s} "
              f"{r['down_mbit']:12.0f} {r['down_pps']:11.0f} {cpu['down']:>11s}")
    for d in ("up", "down"):
        med = {m: statistics.median(r[f"{d}_mbit"] for r in unshaped if r["mode"] == m)
               for m in ("passthrough", "converter")}
        print(f"converter / passthrough, {d}: {med['converter'] / med['passthrough']:.2f} "
              f"(medians of {max(args.repeat, 1)}; goal >= 0.9)")

    by = {r["mode"]: r for r in shaped}
    if shaped:
        print("\n## path 1 shaped to 100 Mbit/s (tbf)")
    for d in ("up", "down") if shaped else ():
        plain, conv = by["forward"][f"{d}_mbit"], by["converter"][f"{d}_mbit"]
        print(f"{d:5s} plain TCP {plain:6.1f} Mbit/s, converted {conv:6.1f} Mbit/s, "
              f"ratio {conv / plain:.3f} (goal >= 0.97)")
    if args.json:
        print(json.dumps({"unshaped": unshaped, "shaped": shaped}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
