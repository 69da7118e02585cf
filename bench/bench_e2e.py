#!/usr/bin/env python3
"""End-to-end throughput on the reference topology (TESTBED.md), measured in one run.

Unshaped veth, iperf3 upload (guest -> server) and download (-R), through the mbox:
  forward      kernel forwarding (rules installed, no daemon bound: the queue is bypassed)
  pass-nfq     `middlebox run --passthrough --backend nfqueue`: NetfilterQueue, all accepted
  conv-nfq     `middlebox run --backend nfqueue`: plain TCP converted to MPTCP v1
  pass-nl      `middlebox run --passthrough --backend netlink`: our reader (GSO), all accepted
  conv-nl      `middlebox run --backend netlink`: converted, super-packets included
twice: with default offloads (guest TSO on; GRO on at the mbox's interfaces) and with TSO/GSO
off at the guest (the mbox's GRO still on); then with path 1 shaped to 100 Mbit/s (tbf):
plain TCP against converted (default backend).

Per daemon run it prints the queue's messages/s, bytes and (wire) segments per message, the
daemon's CPU per message and per byte (user+system, /proc/PID/stat over the queue's id_seq
and iperf3's byte count; segments = bytes / 1420, the payload of a full segment here). The
goals (issue "fast path"): converter >= 0.9x the pass-through of the same backend; the
netlink converter >= 0.7x kernel forwarding and >= 10x the NetfilterQueue converter, in the
same run; shaped: converted >= 0.97x plain TCP. With --repeat N the daemon modes take turns
N times per offload setting; ratios are of medians. Needs root, iperf3 and mptcpize (Debian:
iperf3, mptcpd). Traffic stays in its namespaces.

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
MODES = {  # name: daemon arguments (None: no daemon)
    "forward": None,
    "pass-nfq": ("--passthrough", "--backend", "nfqueue"),
    "conv-nfq": ("--backend", "nfqueue"),
    "pass-nl": ("--passthrough", "--backend", "netlink"),
    "conv-nl": ("--backend", "netlink"),
}
SEGMENT = 1420  # payload bytes of a full segment (MSS 1432 clamped, minus timestamps)


def ip_forwarded(t: Topology) -> int:
    c = t.nstat(t.mbox, prefix=None)
    return c.get("IpForwDatagrams", 0) + c.get("Ip6OutForwDatagrams", 0)


def iperf(t: Topology, seconds: int, reverse: bool) -> tuple[float, int]:
    """(Mbit/s, bytes) received, iperf3 from the guest."""
    argv = ["iperf3", "-c", t.server_ip, "-t", str(seconds), "-J", "-O", "1"]
    if reverse:
        argv.append("-R")
    out = t.run(t.guest, argv, timeout=seconds + 60).stdout
    res = json.loads(out)
    if "error" in res:
        raise RuntimeError(f"iperf3: {res['error']}")
    s = res["end"]["sum_received"]
    return s["bits_per_second"] / 1e6, int(s["bytes"])


class Daemon:
    def __init__(self, t: Topology, *extra: str) -> None:
        self.t = t
        self.lines = []
        self.proc = t.popen(t.mbox, [*ME, "run", "--queue", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "bound queue" in line:
                self.pid = int(line.rsplit("pid", 1)[1].split()[0])
                return
        raise RuntimeError("middlebox run did not bind the queue:\n" + "\n".join(self.lines))

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
    """Messages the mbox's queue has carried (id_seq of /proc/net/netfilter/nfnetlink_queue;
    the companion queue's are counted separately and added)."""
    out = t.run(t.mbox, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    return sum(int(f[7]) for f in (line.split() for line in out.splitlines()) if f)


def measure(t: Topology, mode: str, seconds: int) -> dict:
    args = MODES[mode]
    daemon = Daemon(t, *args) if args is not None else None
    row = {"mode": mode}
    try:
        for direction, reverse in (("up", False), ("down", True)):
            before, t0 = ip_forwarded(t), time.monotonic()
            if daemon:
                seq0, (u0, s0) = queue_seq(t), daemon.cpu()
            row[f"{direction}_mbit"], nbytes = iperf(t, seconds, reverse)
            row[f"{direction}_pps"] = (ip_forwarded(t) - before) / (time.monotonic() - t0)
            if daemon:
                n, (u1, s1) = max(queue_seq(t) - seq0, 1), daemon.cpu()
                elapsed = time.monotonic() - t0
                row[f"{direction}_msgs"] = n / elapsed
                row[f"{direction}_bytes_msg"] = nbytes / n
                row[f"{direction}_usr_us"] = (u1 - u0) / n * 1e6
                row[f"{direction}_sys_us"] = (s1 - s0) / n * 1e6
                row[f"{direction}_ns_byte"] = (u1 - u0 + s1 - s0) / max(nbytes, 1) * 1e9
    finally:
        if daemon:
            row["daemon_exit"] = daemon.stop().strip().splitlines()[-1:]
    return row


def offloads(t: Topology, guest_tso: bool) -> None:
    """GRO on at the mbox's interfaces; the guest's TSO/GSO on or off."""
    for ifname in [t.mbox_guest_if] + [p.mbox_if for p in t.paths]:
        t.run(t.mbox, ["ethtool", "-K", ifname, "gro", "on"])
    state = "on" if guest_tso else "off"
    t.run(t.guest, ["ethtool", "-K", t.guest_if, "tso", state, "gso", state])


def run_topology(seconds: int, rate: float | None, modes: list[str],
                 guest_tso: bool = True) -> list[dict]:
    with Topology(rate_mbit=[rate, None] if rate else None) as t:
        if rate is None:
            offloads(t, guest_tso)
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


def med(rows: list[dict], mode: str, key: str) -> float:
    vals = [r[key] for r in rows if r["mode"] == mode and key in r]
    return statistics.median(vals) if vals else float("nan")


def table(title: str, rows: list[dict], repeat: int) -> None:
    print(f"\n## {title}")
    print("(msgs/s: queue messages; B/msg and seg/msg: bytes and full segments per message; "
          "µs/msg: daemon user+system CPU; ns/B: daemon CPU per byte)")
    print(f"{'mode':9s} {'dir':4s} {'Mbit/s':>7s} {'msgs/s':>8s} {'B/msg':>7s} {'seg/msg':>7s} "
          f"{'µs/msg':>11s} {'ns/B':>6s}")
    for r in rows:
        for d in ("up", "down"):
            if f"{d}_msgs" in r:
                print(f"{r['mode']:9s} {d:4s} {r[d + '_mbit']:7.0f} {r[d + '_msgs']:8.0f} "
                      f"{r[d + '_bytes_msg']:7.0f} {r[d + '_bytes_msg'] / SEGMENT:7.1f} "
                      f"{r[d + '_usr_us']:5.1f}+{r[d + '_sys_us']:5.1f} {r[d + '_ns_byte']:6.2f}")
            else:
                print(f"{r['mode']:9s} {d:4s} {r[d + '_mbit']:7.0f}")
    print(f"goals (medians of {repeat}):")
    for d in ("up", "down"):
        fwd = med(rows, "forward", f"{d}_mbit")
        cn, pn = med(rows, "conv-nl", f"{d}_mbit"), med(rows, "pass-nl", f"{d}_mbit")
        cq, pq = med(rows, "conv-nfq", f"{d}_mbit"), med(rows, "pass-nfq", f"{d}_mbit")
        print(f"  {d:4s} conv-nl/pass-nl {cn / pn:.2f} (>= 0.9)   conv-nfq/pass-nfq {cq / pq:.2f} "
              f"(>= 0.9)   conv-nl/forward {cn / fwd:.2f} (>= 0.7)   conv-nl/conv-nfq "
              f"{cn / cq:.1f} (>= 10)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=8, help="iperf3 duration per measurement")
    ap.add_argument("--repeat", type=int, default=1,
                    help="unshaped runs of each daemon mode per offload setting, taking turns")
    ap.add_argument("--unshaped-only", action="store_true", help="skip the shaped path")
    ap.add_argument("--json", action="store_true", help="print the raw rows as JSON too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_e2e: needs root", file=sys.stderr)
        return 1
    import middlebox.core
    import middlebox.wire
    from middlebox.io import fastpath

    impl = (f"wire {middlebox.wire.IMPLEMENTATION}, core {middlebox.core.IMPLEMENTATION}, "
            f"netlink engine {fastpath.twin().IMPLEMENTATION}")
    print(f"# end-to-end, {args.seconds} s per iperf3 run, {impl}")
    repeat = max(args.repeat, 1)
    daemons = [m for m in MODES if m != "forward"]
    modes = ["forward"] + daemons * repeat
    tso = run_topology(args.seconds, None, modes, guest_tso=True)
    notso = run_topology(args.seconds, None, modes, guest_tso=False)
    shaped = [] if args.unshaped_only else run_topology(args.seconds, 100, ["forward", "conv-nl"])

    table("unshaped veth, default offloads (guest TSO on, GRO at the mbox)", tso, repeat)
    table("unshaped veth, guest TSO/GSO off (GRO at the mbox)", notso, repeat)
    by = {r["mode"]: r for r in shaped}
    if shaped:
        print("\n## path 1 shaped to 100 Mbit/s (tbf), netlink backend")
    for d in ("up", "down") if shaped else ():
        plain, conv = by["forward"][f"{d}_mbit"], by["conv-nl"][f"{d}_mbit"]
        print(f"{d:5s} plain TCP {plain:6.1f} Mbit/s, converted {conv:6.1f} Mbit/s, "
              f"ratio {conv / plain:.3f} (goal >= 0.97)")
    if args.json:
        print(json.dumps({"tso": tso, "notso": notso, "shaped": shaped}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
