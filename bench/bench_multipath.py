#!/usr/bin/env python3
"""Multipath goodput (issue 6 item 7; MULTIPATH.md §6, §8): the converter against plain TCP,
Linux MPTCP end to end and a terminating MPTCP proxy, measured in one run.

Per scenario (a Topology of 2 or 3 paths, tbf on each, optional random loss on one path both
directions) and for each direction and guest congestion control, N runs of each system, the
systems taking turns within a run (plain, converter, linux, proxy, plain, ...) so that a
disturbed stretch of this shared machine spoils one run of each rather than all of one:

  plain      plain TCP on path 1: no daemon and no middlebox rules (kernel forwarding only),
             guest `iperf3 -c` -> a plain `iperf3 -s` (no mptcpize: a TCP socket both ends).
  converter  `middlebox rules install --uplink <each path>` + `middlebox run --join-after-bytes 0
             --join-after-ms 0` (+ --converter-args): the guest's plain TCP -> MPTCP, one
             subflow per uplink, to `mptcpize run iperf3 -s`. Rules are installed before and
             removed after each converter run, so that no other system crosses the queue rules.
  conv-nfq   the same with `--backend nfqueue` (NetfilterQueue: the kernel segments GSO
             packets before queueing) instead of the default backend (auto: our netlink reader,
             GSO super-packets). Not in the default --systems.
  linux      Linux MPTCP end to end from the middlebox namespace: `mptcpize run iperf3 -c` in
             mbox, `ip mptcp endpoint add <uplink addr> dev <uplink> subflow` per uplink and
             `ip mptcp limits set subflow <paths>` there (the path-1 endpoint is the initial
             subflow's address, which the kernel's PM skips: one subflow per path).
  proxy      a terminating proxy: `mptcpize run socat TCP-LISTEN:5301,fork TCP:<server>:5201` in
             mbox; the guest's plain TCP ends at socat, which opens MPTCP (same endpoints).

Goodput is iperf3's `end.sum_received` (bytes the receiver got over the test's duration) of a
single stream, `--duration` seconds (no omitted interval: every system pays its own start).
The congestion control (`--cc`) is set per socket (TCP_CONGESTION: a namespace's default may
only be one of the host's tcp_allowed_congestion_control): iperf3 -C on the client, which also
sets it on the server's data socket, and socat's two sockets. On upload the guest's (for linux
the mbox client's, for proxy socat's) sender counts, on download the server's. Loss: nft netdev ingress `numgen random` drops of IPv4 TCP on both ends of path
`loss_path` (this kernel has no netem; as tests/integration/adversary.py `path_loss`), per
wire segment: segmentation offloads off on that path's two ends (`path_loss`).

Per run it records the client namespace's TCP counters (the guest; mbox for `linux`), the
server's MPTCP counters and, for the converter, the daemon's core counters (`middlebox stats
--json` just before it stops). Per converter run it samples each uplink's interface byte
counters every 100 ms in mbox; the PNG shows the first converter run per (scenario, direction)
of the first congestion control. Writes bench/results/multipath.md (printed too), .json and
.png. Needs root, iperf3, mptcpize (mptcpd), socat, nft; matplotlib for the PNG.

    .venv/bin/python bench/bench_multipath.py --list
    .venv/bin/python bench/bench_multipath.py --scenario '2x100-*' --direction up --cc cubic \\
        --runs 3 --duration 8
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from middlebox.testbed import Topology, in_netns  # noqa: E402

ME = [sys.executable, "-m", "middlebox"]
TREE = ROOT  # the middlebox source tree the daemon, `rules` and `stats` run from (--tree)


def mb_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(TREE)}
RESULTS = ROOT / "bench" / "results"
QUEUE = 0
PORT_MPTCP, PORT_PLAIN, PORT_PROXY = 5201, 5202, 5301
SYSTEMS = ("plain", "converter", "conv-nfq", "linux", "proxy")
DEFAULT_SYSTEMS = ("plain", "converter", "linux", "proxy")
CONVERTERS = {"converter": (), "conv-nfq": ("--backend", "nfqueue")}

GUEST_KEYS = ("TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes",
              "TcpExtTCPSackRecovery", "TcpExtTCPRenoRecovery", "TcpExtTCPDSACKUndo",
              "TcpExtPAWSEstab", "TcpExtTCPOFODrop", "TcpExtTCPLossUndo", "TcpExtTCPFullUndo",
              "TcpExtTCPPartialUndo", "TcpExtTCPDSACKRecv", "TcpExtTCPSpuriousRTOs")
SERVER_KEYS = ("MPTcpExtMPTCPRetrans", "MPTcpExtDuplicateData", "MPTcpExtOFOQueue",
               "MPTcpExtNoDSSInWindow", "MPTcpExtMPJoinAckRx",
               # subflow segments the server already had (it answers with a D-SACK): resends
               # that were not needed, the guest's or ours
               "TcpExtTCPDSACKOldSent", "TcpExtTCPDSACKOfoSent",
               # the server as a sender (downloads): how it met loss on its subflows
               "TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes",
               "TcpExtTCPSackRecovery", "TcpExtTCPFastRetrans", "TcpExtTCPLostRetransmit",
               "TcpExtTCPSpuriousRTOs", "TcpExtTCPSACKReorder", "TcpExtTCPDSACKRecv",
               "TcpExtTCPDSACKUndo", "TcpExtTCPLossUndo", "TcpExtTCPSackRecoveryFail")
# what must stay zero on the server for a healthy conversion (test_multipath.py MUST_STAY_ZERO)
SERVER_BAD = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK",
              "MPTcpExtMPJoinNoTokenFound", "MPTcpExtMPJoinAckHMacFailure",
              "MPTcpExtDSSNotMatching", "MPTcpExtDSSNoMatchTCP", "MPTcpExtInfiniteMapRx",
              "MPTcpExtDataCsumErr", "MPTcpExtMPFailRx", "MPTcpExtDssFallback")
CORE_KEYS = ("RunMapDrop", "RunMapNearFull", "SackNewsTimer", "DupAckFwd", "DupAckSuppressed", "DupAckSynth", "SubflowStale", "SubflowDead",
             "ReinjectTX", "RunMapFull", "GuestRetransMapped", "JoinRepairTX", "JoinCwndCut",
             "RepairBeyondWindow", "DsackUndoTX", "UndoBeyondWindow", "UndoAfterRto", "Sf1LossyCut", "Sf1OrphanCut", "HeadIntoHole")


def short(key: str) -> str:
    for p in ("TcpExt", "MPTcpExt"):
        if key.startswith(p):
            return key[len(p):]
    return key


# -- scenarios ---------------------------------------------------------------------------------

# 30+100, 10+50+50: the guest's route (subflow 1) on the slow uplink. With the slow path first,
# a hole rule of two RTTs alone halved a 10+50+50 Mbit/s upload in one run of two (a slow tbf
# releases a super-packet whole, long after the srtt its ACKs show). 3x50: three paths at half
# the rate, to tell a three-path cost from the daemon's one core running out at 3x100 with loss
# (the lossy path's offloads are off, path_loss: its bytes come as single segments)
TOPOS = {"2x100": [100, 100], "3x100": [100, 100, 100], "100+30": [100, 30], "30+100": [30, 100],
         "10+50+50": [10, 50, 50], "3x50": [50, 50, 50]}
BUFFERS = {"deep": 50, "shallow": 5}
LOSSES = {"clean": 0.0, "loss1": 1.0, "loss2": 2.0}


def all_scenarios() -> dict[str, dict]:
    out = {}
    for tname, rates in TOPOS.items():
        for bname, lat in BUFFERS.items():
            for lname, loss in LOSSES.items():
                out[f"{tname}-{bname}-{lname}"] = {
                    "rates": rates, "latency_ms": lat, "loss": loss,
                    "loss_path": 2,  # the second path (the 30 Mbit/s one in 100+30, 100 in 30+100)
                }
    return out


def pick(names: list[str], patterns: list[str] | None) -> list[str]:
    if not patterns:
        return names
    chosen = []
    for pat in patterns:
        for p in pat.split(","):
            hits = [n for n in names if fnmatch.fnmatchcase(n, p.strip())]
            if not hits:
                raise SystemExit(f"--scenario {p!r} matches nothing; --list shows the names")
            chosen += [h for h in hits if h not in chosen]
    return chosen


# -- pieces ------------------------------------------------------------------------------------


def path_loss(t: Topology, percent: float, path: int) -> None:
    """Random loss of `percent` % of the IPv4 TCP segments each way on path `path` (nft netdev
    ingress on the receiving end of each direction; tests/integration/adversary.py).

    Per wire segment, for every system: segmentation offloads (TSO, GSO, GRO) are off on both
    ends of the path. With them, a kernel sender's TSO packet (up to 22 segments under tbf's
    32 KB burst) crossed the veth whole and was lost or kept whole, while the converter's
    joins carry single segments: on 1 % loss upload Linux MPTCP met 149 drops where the
    converter met 769. Per segment (stop 34, 2 runs): 894 and 824, Linux's goodput barely
    moved (176 against 181 Mbit/s), the converter's neither (160 against 163)."""
    p = t.paths[path - 1]
    per_mille = round(percent * 10)
    for ns, ifname in ((t.mbox, p.mbox_if), (t.server, p.server_if)):
        t.run(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"], check=False)
    for ns, ifname in ((t.mbox, p.mbox_if), (t.server, p.server_if)):
        t.run(ns, ["nft", "-f", "-"], input=f"""
table netdev mbbenchloss {{
    chain ingress {{
        type filter hook ingress device "{ifname}" priority 0; policy accept;
        ip protocol tcp numgen random mod 1000 < {per_mille} counter drop
    }}
}}
""")


STEER_CPU = 1  # --steer: the CPU that takes the guest's and the server's receive work


def steer(t: Topology) -> None:
    """--steer: the guest's and the server's veths hand their receive work to CPU STEER_CPU
    (RPS), and the daemon runs on CPU 0 only (Daemon). Without it, a packet the daemon sends
    (a verdict's, an injection) is received by the guest's or the server's TCP inside the
    daemon's own system call (veth delivers on the sending CPU), and the daemon's one thread
    pays for both ends' receive processing. A hypervisor's guest (tap, vhost) and a server
    behind a NIC take that work elsewhere (stop 41: the lossy join's round trip, 2-6 ms
    against 0.8 for Linux's own subflow, was that work)."""
    mask = format(1 << STEER_CPU, "x")
    for ns, ifaces in ((t.guest, [t.guest_if]), (t.server, [p.server_if for p in t.paths])):
        for ifname in ifaces:
            t.run(ns, ["sh", "-c", f"for f in /sys/class/net/{ifname}/queues/rx-*/rps_cpus; "
                                   f"do echo {mask} > $f; done"])


def pin_cpu0(pid: int) -> None:
    """Every thread of process `pid` on CPU 0 only (--steer)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {0})
        except OSError:
            pass  # (a thread that ended meanwhile)


def loss_dropped(t: Topology) -> int:
    import re

    total = 0
    for ns in (t.mbox, t.server):
        out = t.run(ns, ["nft", "list", "table", "netdev", "mbbenchloss"], check=False).stdout
        total += sum(int(n) for n in re.findall(r"counter packets (\d+)", out))
    return total


class Daemon:
    """`middlebox run` in mbox; its output drained by a thread (kept for the report)."""

    def __init__(self, t: Topology, *extra: str, pin: bool = False) -> None:
        self.t = t
        self.lines: list[str] = []
        self.proc = t.popen(t.mbox, [*ME, "run", "--queue", str(QUEUE), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=mb_env(), cwd=str(TREE))
        self.bound = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.bound.wait(20) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("middlebox run did not bind the queue:\n" + self.output[-3000:])
        with open(f"/proc/{self.proc.pid}/maps") as f:  # the compiled core of --tree, loaded?
            if f"{TREE}/middlebox/_ccore/" not in f.read():
                self.stop()
                raise RuntimeError(f"the daemon did not load the compiled core from {TREE}")
        if pin:  # (`ip netns exec` execs the daemon: the pid is the daemon's)
            pin_cpu0(self.proc.pid)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "bound queue" in line:
                self.bound.set()
        self.bound.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stats(self) -> dict:
        r = self.t.run(self.t.mbox, [*ME, "stats", "--json", "--queue", str(QUEUE)],
                       check=False, timeout=20, env=mb_env(), cwd=str(TREE))
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"error": (r.stdout + r.stderr)[-500:]}

    def cpu(self) -> float:
        """User + system CPU seconds of the daemon so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ip netns exec` execs: the pid is ours
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


class Sampler:
    """Every 100 ms, tx/rx bytes of the uplinks in mbox (/proc/thread-self/net/dev read by a
    thread that lives in the mbox namespace)."""

    def __init__(self, t: Topology, interval: float = 0.1, ns: str | None = None,
                 ifaces: list[str] | None = None) -> None:
        self.ifaces = ifaces or [p.mbox_if for p in t.paths]
        self.ns = ns or t.mbox
        self.interval = interval
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, tuple[int, int]]:
        out = {}
        with open("/proc/thread-self/net/dev") as f:
            for line in f.readlines()[2:]:
                name, rest = line.split(":", 1)
                name = name.strip()
                if name in self.ifaces:
                    v = rest.split()
                    out[name] = (int(v[8]), int(v[0]))  # tx_bytes, rx_bytes
        return out

    def _run(self) -> None:
        with in_netns(self.ns):
            t0 = time.monotonic()
            nxt = t0
            while not self._stop.is_set():
                self.samples.append((time.monotonic() - t0, self._read()))
                nxt += self.interval
                self._stop.wait(max(0.0, nxt - time.monotonic()))

    def __enter__(self) -> "Sampler":
        self._th.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._th.join(5)

    def rates(self, direction: str) -> dict:
        """{'t': [...], iface: [Mbit/s ...]}: tx on upload, rx on download."""
        col = 0 if direction == "up" else 1
        ts, series = [], {i: [] for i in self.ifaces}
        for (ta, a), (tb, b) in zip(self.samples, self.samples[1:]):
            dt = tb - ta
            if dt <= 0:
                continue
            ts.append(tb)
            for i in self.ifaces:
                series[i].append((b.get(i, (0, 0))[col] - a.get(i, (0, 0))[col]) * 8 / dt / 1e6)
        return {"t": ts, **series}


# -- one scenario ------------------------------------------------------------------------------


class Bench:
    def __init__(self, name: str, sc: dict, args) -> None:
        self.name, self.sc, self.args = name, sc, args
        guest = dict(kv.split("=", 1) for kv in args.guest_sysctl)
        self.t = Topology(rate_mbit=sc["rates"], latency_ms=sc["latency_ms"],
                          paths=len(sc["rates"]), policy_routing=True, sysctls={"guest": guest})
        self.servers: list[subprocess.Popen] = []
        self.proxy: subprocess.Popen | None = None
        self.cc = "cubic"
        self.pcaps = 0  # --pcap: captures written

    # setup ---------------------------------------------------------------------------------

    def start(self) -> None:
        t = self.t
        t.start()
        if self.sc["loss"]:
            path_loss(t, self.sc["loss"], self.sc["loss_path"])
        if self.args.steer:
            steer(t)
        # Linux MPTCP in mbox: an endpoint per uplink (the initial subflow's is skipped)
        t.run(t.mbox, ["ip", "mptcp", "limits", "set", "subflow", str(len(t.paths)),
                       "add_addr_accepted", "0"])
        for p in t.paths:
            t.run(t.mbox, ["ip", "mptcp", "endpoint", "add", p.mbox_ip, "dev", p.mbox_if,
                           "subflow"])

    def start_servers(self) -> None:
        t = self.t
        for proc in self.servers + ([self.proxy] if self.proxy else []):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers = [
            t.popen(t.server, ["mptcpize", "run", "iperf3", "-s", "-p", str(PORT_MPTCP)], **quiet),
            t.popen(t.server, ["iperf3", "-s", "-p", str(PORT_PLAIN)], **quiet),
        ]
        cc = f"setsockopt-string=6:13:{self.cc}"  # IPPROTO_TCP, TCP_CONGESTION
        self.proxy = t.popen(t.mbox, ["mptcpize", "run", "socat",
                                      f"TCP-LISTEN:{PORT_PROXY},bind={t.mbox_guest_ip},fork,"
                                      f"reuseaddr,backlog=64,{cc}",
                                      f"TCP:{t.server_ip}:{PORT_MPTCP},{cc}"], **quiet)
        t.wait_tcp_listen(t.server, PORT_MPTCP)
        t.wait_tcp_listen(t.server, PORT_PLAIN)
        t.wait_tcp_listen(t.mbox, PORT_PROXY)

    def set_cc(self, cc: str) -> None:
        """Per socket (TCP_CONGESTION): a namespace's default may only be one of the host's
        tcp_allowed_congestion_control, which this bench leaves alone. iperf3 -C sets it on the
        client's socket and the server's data socket; socat gets it on both of its sockets."""
        self.cc = cc
        self.start_servers()

    def rules(self, install: bool) -> None:
        t = self.t
        if install:
            argv = [*ME, "rules", "install", "--queue", str(QUEUE), "--guest-iface",
                    t.mbox_guest_if]
            for spec in t.uplink_specs():
                argv += ["--uplink", spec]
        else:
            argv = [*ME, "rules", "remove"]
        t.run(t.mbox, argv, check=install, timeout=60, env=mb_env(), cwd=str(TREE))

    def close(self) -> None:
        self.t.close()  # kills what it started (servers, proxy, daemon), deletes namespaces

    # one measurement -----------------------------------------------------------------------

    def iperf(self, system: str, direction: str) -> tuple[float | None, str]:
        t, d = self.t, self.args.duration
        common = ["-t", str(d), "-J", "--connect-timeout", "5000", "-C", self.cc]
        if direction == "down":
            common.append("-R")
        if system == "plain":
            ns, argv = t.guest, ["iperf3", "-c", t.server_ip, "-p", str(PORT_PLAIN)]
        elif system in CONVERTERS:
            ns, argv = t.guest, ["iperf3", "-c", t.server_ip, "-p", str(PORT_MPTCP)]
        elif system == "linux":
            ns, argv = t.mbox, ["mptcpize", "run", "iperf3", "-c", t.server_ip,
                                "-p", str(PORT_MPTCP)]
        else:
            ns, argv = t.guest, ["iperf3", "-c", t.mbox_guest_ip, "-p", str(PORT_PROXY)]
        try:
            r = t.run(ns, argv + common, check=False, timeout=d + 40)
        except subprocess.TimeoutExpired:
            return None, "iperf3 timed out"
        try:
            res = json.loads(r.stdout)
        except ValueError:
            return None, f"iperf3 rc {r.returncode}: {(r.stdout + r.stderr)[-300:]}"
        if "error" in res:
            # a partial result still says how much arrived before the error
            end = res.get("end", {}).get("sum_received", {})
            mbit = end.get("bits_per_second", 0) / 1e6 if end else None
            return mbit, f"iperf3: {res['error']}"
        end = res["end"]
        used = {end.get("sender_tcp_congestion"), end.get("receiver_tcp_congestion")} - {None}
        if used and used != {self.cc}:
            return end["sum_received"]["bits_per_second"] / 1e6, f"cc used {sorted(used)}"
        return end["sum_received"]["bits_per_second"] / 1e6, ""

    def measure(self, system: str, direction: str) -> dict:
        t = self.t
        client_ns = t.mbox if system == "linux" else t.guest
        row: dict = {"system": system}
        daemon = sampler = pcap = None
        try:
            if system in CONVERTERS:
                self.rules(True)
                daemon = Daemon(t, "--join-after-bytes", "0", "--join-after-ms", "0",
                                *CONVERTERS[system], *self.args.converter_args.split(),
                                pin=self.args.steer)
                cpu0 = daemon.cpu()
            g0, s0 = t.nstat(client_ns, prefix=None), t.nstat(t.server, prefix=None)
            drop0 = loss_dropped(t) if self.sc["loss"] else 0
            sampler = Sampler(t)  # (every system: where Linux MPTCP puts its bytes, too)
            if self.args.pcap and system in CONVERTERS:
                self.pcaps += 1
                row["pcap"] = os.path.join(self.args.pcap, f"{self.name}-{system}-{self.pcaps}.pcap")
                base = row["pcap"][:-len(".pcap")]
                # the guest side, and each path at both ends: the middlebox's end shows what
                # left the tbf queue, the server's what reached it before the loss rules
                where = [(t.guest, t.guest_if, row["pcap"])]
                for k, p in enumerate(t.paths):
                    where += [(t.mbox, p.mbox_if, f"{base}-path{k + 1}-mbox.pcap"),
                              (t.server, p.server_if, f"{base}-path{k + 1}-server.pcap")]
                pcap = [t.popen(ns, ["tcpdump", "-q", "-n", "-s", "128", "-i", ifname, "-w", out, "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for ns, ifname, out in where]
                time.sleep(0.5)  # (tcpdump up before the first packet)
            t0 = time.monotonic()
            if sampler:
                sampler.__enter__()
            mbit, err = self.iperf(system, direction)
            if sampler:
                sampler.__exit__()
            g1, s1 = t.nstat(client_ns, prefix=None), t.nstat(t.server, prefix=None)
            row["mbit"], row["error"] = mbit, err
            row["client"] = {k: g1.get(k, 0) - g0.get(k, 0) for k in GUEST_KEYS}
            row["server"] = {k: s1.get(k, 0) - s0.get(k, 0) for k in SERVER_KEYS + SERVER_BAD}
            if self.sc["loss"]:
                row["loss_dropped"] = loss_dropped(t) - drop0
            if sampler:
                row["uplinks"] = sampler.rates(direction)
            if daemon:
                row["daemon_cpu"] = (daemon.cpu() - cpu0) / (time.monotonic() - t0)
                st = daemon.stats()
                core = st.get("core", {})
                row["core"] = {k: int(v) for k, v in core.items() if v}
                row["daemon"] = {k: v for k, v in st.get("daemon", {}).items() if v}
                row["queue_stats"] = st.get("queue_stats")
        except Exception as e:  # recorded, the bench goes on
            row.setdefault("mbit", None)
            row["error"] = f"{type(e).__name__}: {e}"
        finally:
            for cap in pcap or ():
                cap.terminate()
                cap.wait(timeout=10)
            if sampler and sampler._th.is_alive():
                sampler.__exit__()
            if daemon:
                row["daemon_rc"] = daemon.stop()
                out = daemon.output
                bad = [ln for ln in daemon.lines
                       if any(w in ln.lower() for w in ("traceback", "error", "bug", "warning"))
                       and not ln.startswith("counters at exit")]
                row["daemon_bad_lines"] = bad[:20]
                row["daemon_tail"] = out[-1500:]
            if system in CONVERTERS:
                try:
                    self.rules(False)
                except Exception as e:
                    row["error"] = (row.get("error") or "") + f" rules remove: {e}"
        err = row.get("error") or ""
        if "timed out" in err or "busy" in err:
            self.start_servers()  # a stuck iperf3 server would spoil the next runs
        return row


# -- failover (optional): a link set down mid-transfer --------------------------------------------


def failover(b: Bench, system: str, direction: str, path: int, args) -> dict:
    """One iperf3 run of `--duration` s; path `path` goes down at `--down-at` s (both ends,
    Topology.set_link) and comes back after the run. The receiver's interface bytes are sampled
    every 100 ms (upload: the server's path interfaces; download: the guest's interface, for
    linux the mbox uplinks): goodput before, the time until the 100 ms rate is back to >= 50 %
    of the remaining capacity, and the mean rate from 1 s to 3 s after the failure."""
    t = b.t
    d = args.duration
    row: dict = {"system": system, "direction": direction, "path": path}
    if direction == "up":
        ns, ifaces, col = t.server, [p.server_if for p in t.paths], "rx"
    elif system == "linux":
        ns, ifaces, col = t.mbox, [p.mbox_if for p in t.paths], "rx"
    else:
        ns, ifaces, col = t.guest, [t.guest_if], "rx"
    daemon = None
    try:
        if system in CONVERTERS:
            b.rules(True)
            daemon = Daemon(t, "--join-after-bytes", "0", "--join-after-ms", "0",
                            *CONVERTERS[system], *args.converter_args.split())
        common = ["-t", str(d), "-J", "--connect-timeout", "5000", "-C", b.cc]
        if direction == "down":
            common.append("-R")
        if system in CONVERTERS:
            cns, argv = t.guest, ["iperf3", "-c", t.server_ip, "-p", str(PORT_MPTCP)]
        elif system == "linux":
            cns, argv = t.mbox, ["mptcpize", "run", "iperf3", "-c", t.server_ip,
                                 "-p", str(PORT_MPTCP)]
        else:
            cns, argv = t.guest, ["iperf3", "-c", t.mbox_guest_ip, "-p", str(PORT_PROXY)]
        s0 = t.nstat(t.server, prefix=None)
        with Sampler(t, ns=ns, ifaces=ifaces) as smp:
            proc = t.popen(cns, argv + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
            time.sleep(args.down_at)
            t_down = smp.samples[-1][0] if smp.samples else args.down_at
            t.set_link(path, False)
            try:
                out, _ = proc.communicate(timeout=d + 40)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        try:
            res = json.loads(out)
            row["mbit"] = res["end"]["sum_received"]["bits_per_second"] / 1e6
            row["error"] = res.get("error", "")
        except (ValueError, KeyError):
            row["mbit"], row["error"] = None, f"iperf3: {out[-300:]}"
        s1 = t.nstat(t.server, prefix=None)
        row["server"] = {k: s1.get(k, 0) - s0.get(k, 0) for k in SERVER_KEYS + SERVER_BAD
                         + ("MPTcpExtRmAddr", "MPTcpExtRmSubflow", "MPTcpExtMPPrioRx")}
        rates = smp.rates("down" if col == "rx" else "up")
        ts = rates["t"]
        total = [sum(v) for v in zip(*(rates[i] for i in ifaces))]
        row["t_down"], row["series"] = t_down, {"t": ts, "mbit": total}
        row["remaining"] = sum(r for k, r in enumerate(b.sc["rates"], 1) if k != path)
        failover_metrics(row)
        if daemon:
            st = daemon.stats()
            row["core"] = {k: int(v) for k, v in st.get("core", {}).items() if v}
            row["daemon"] = {k: v for k, v in st.get("daemon", {}).items() if v}
    except Exception as e:
        row.setdefault("mbit", None)
        row["error"] = f"{type(e).__name__}: {e}"
    finally:
        t.set_link(path, True)
        # the server's route to the guest prefix goes by path 1 and the kernel deleted it
        t.run(t.server, ["ip", "route", "replace", t.GUEST_PREFIX, "via", t.paths[0].mbox_ip],
              check=False)
        if daemon:
            row["daemon_rc"] = daemon.stop()
            row["daemon_bad_lines"] = [
                ln for ln in daemon.lines
                if any(w in ln.lower() for w in ("traceback", "error", "bug", "warning"))
                and not ln.startswith("counters at exit")][:20]
        if system in CONVERTERS:
            try:
                b.rules(False)
            except Exception as e:
                row["error"] = (row.get("error") or "") + f" rules remove: {e}"
        time.sleep(1.0)  # the links' operstate and routes settle
    return row


def failover_metrics(row: dict) -> None:
    """From the 100 ms series: `before` (median from 1 s to the failure), `recovery_s` (from
    the failure to the start of the first 500 ms whose mean is >= 50 % of the remaining
    capacity: a sample or two of what was already in flight does not count), `after_1_2s`
    (mean from 1 s to 2 s after the failure: the issue's goal is this >= 50 % of remaining)."""
    ts, xs, td = row["series"]["t"], row["series"]["mbit"], row["t_down"]
    half = 0.5 * row["remaining"]
    before = [x for tt, x in zip(ts, xs) if 1.0 <= tt < td]
    row["before"] = statistics.median(before) if before else None
    row["recovery_s"] = None
    for i, tt in enumerate(ts):
        if tt <= td or i + 5 > len(xs):
            continue
        if statistics.mean(xs[i:i + 5]) >= half:
            row["recovery_s"] = max(0.0, tt - 0.1 - td)  # its interval began 100 ms earlier
            break
    after = [x for tt, x in zip(ts, xs) if td + 1 <= tt < td + 2]
    row["after_1_2s"] = statistics.mean(after) if after else None


def failover_report(rows: list[dict], meta: dict) -> str:
    out = ["# Multipath failover (bench/bench_multipath.py --failover)\n",
           f"Run {meta['started']} -> {meta['finished']} UTC at {meta['commit']}, {meta['impl']}; "
           f"`{meta['command']}`. One iperf3 run of {meta['duration']} s per row, the path set "
           f"down (both ends) at {meta['down_at']} s; receiver interface bytes every 100 ms. "
           "Goal (issue 6 item 5): back to >= 50 % of the remaining capacity within 1 s.\n",
           "| scenario | cc | dir | path down | system | goodput (whole run) | before | "
           "recovery to 50 % (s) | mean 1-2 s after | server RmAddr / unhealthy | "
           "SubflowStale / SubflowDead / ReinjectTX / DupAckSynth | error |",
           "|" + "---|" * 12]
    for r in rows:
        core = r.get("core", {})
        srv = r.get("server", {})
        bad = sum(srv.get(k, 0) for k in SERVER_BAD)
        cells = [r["scenario"], r["cc"], r["direction"], str(r["path"]), r["system"],
                 fmt(r.get("mbit")), fmt(r.get("before")),
                 "never" if r.get("recovery_s") is None and "series" in r
                 else fmt(r.get("recovery_s"), 1),
                 fmt(r.get("after_1_2s")), f"{srv.get('MPTcpExtRmAddr', 0)} / {bad}",
                 " / ".join(str(core.get(k, 0)) for k in
                            ("SubflowStale", "SubflowDead", "ReinjectTX", "DupAckSynth"))
                 if r["system"] in CONVERTERS else "",
                 "; ".join(x.replace("|", "/")[:120] for x in
                           [r.get("error") or ""] + r.get("daemon_bad_lines", []) if x)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def failover_plot(rows: list[dict], path: pathlib.Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keys = []
    for r in rows:
        k = (r["scenario"], r["direction"], r["path"])
        if k not in keys and "series" in r:
            keys.append(k)
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 2.6 * len(keys)), squeeze=False)
    for k, ax in zip(keys, axes[:, 0]):
        for r in rows:
            if (r["scenario"], r["direction"], r["path"]) == k and "series" in r:
                ax.plot(r["series"]["t"], r["series"]["mbit"], lw=1, label=r["system"])
                ax.axvline(r["t_down"], color="grey", ls=":", lw=1)
        ax.set_title(f"{k[0]} {k[1]}: path {k[2]} down (receiver goodput, 100 ms)", fontsize=9)
        ax.set_ylabel("Mbit/s", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return str(path)


def run_failover(names, scen, systems, ccs, dirs, args, meta, out) -> int:
    if args.rerender:
        saved = json.loads(out.with_suffix(".json").read_text())
        rows, meta = saved["rows"], saved["meta"]
        for r in rows:
            if "series" in r:
                r.setdefault("remaining", sum(
                    x for k, x in enumerate(scen[r["scenario"]]["rates"], 1) if k != r["path"]))
                failover_metrics(r)
        return _failover_write(rows, meta, out)
    rows: list[dict] = []
    paths = [int(x) for x in args.failover_paths.split(",")]
    meta["down_at"] = args.down_at
    t0 = time.monotonic()
    for name in names:
        b = Bench(name, scen[name], args)
        try:
            b.start()
            for cc in ccs:
                b.set_cc(cc)
                for direction in dirs:
                    for path in paths:
                        for i in range(args.runs):
                            for s in systems:
                                if s == "plain":
                                    continue
                                r = failover(b, s, direction, path, args)
                                r.update(scenario=name, cc=cc, run=i)
                                rows.append(r)
                                print(f"[{time.monotonic() - t0:6.0f} s] {name} {cc} {direction} "
                                      f"path {path} down: {s:9s} {fmt(r.get('mbit'), 1)} Mbit/s, "
                                      f"before {fmt(r.get('before'))}, recovery "
                                      f"{fmt(r.get('recovery_s'), 1)} s, 1-2 s after "
                                      f"{fmt(r.get('after_1_2s'))}"
                                      + (f" ({r['error']})" if r.get("error") else ""),
                                      flush=True)
        finally:
            b.close()
    meta["finished"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
    return _failover_write(rows, meta, out)


def _failover_write(rows, meta, out) -> int:
    text = failover_report(rows, meta)
    png = failover_plot(rows, out.with_suffix(".png"))
    if png:
        text += f"\nReceiver goodput over time: `{os.path.relpath(png, ROOT)}`.\n"
    out.with_suffix(".md").write_text(text)
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, separators=(",", ":"))
    print(text)
    return 0


# -- report ------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    return "-" if x is None else f"{x:.{nd}f}"


def goodput_cell(vals):
    v = [x if x is not None else 0.0 for x in vals]
    if not v:
        return "-"
    return f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]"


def summarize(results: list[dict], systems: list[str]) -> list[dict]:
    """One line per (scenario, direction, cc): goodputs per system; per converter system its
    ratios to linux and plain and the goal verdict."""
    lines = []
    for block in results:
        runs = block["runs"]
        by = {s: [r["mbit"] if r["mbit"] is not None else 0.0 for r in runs if r["system"] == s]
              for s in systems}
        line = {k: block[k] for k in ("scenario", "direction", "cc")}
        line["goodput"] = by
        m = {s: (statistics.median(v) if v else None) for s, v in by.items()}
        line["median"] = m
        lx, p = m.get("linux"), m.get("plain")
        loss = block["loss"] > 0
        line["loss"] = loss
        line["conv"] = {}
        for cs in (s for s in systems if s in CONVERTERS):
            c = m.get(cs)
            r = {"linux": c / lx if c is not None and lx else None,
                 "plain": c / p if c is not None and p else None,
                 "min_plain": min(by[cs]) / p if by.get(cs) and p else None}
            if r["linux"] is not None:
                ok = r["linux"] >= (0.95 if loss else 1.0)
                if loss and r["min_plain"] is not None:
                    ok = ok and r["min_plain"] >= 1.5
                r["goal"] = "ok" if ok else "MISS"
            else:
                r["goal"] = "-"
            line["conv"][cs] = r
        lines.append(line)
    return lines


def report(results: list[dict], systems: list[str], args, meta: dict) -> str:
    out = []
    w = out.append
    w("# Multipath benchmark (bench/bench_multipath.py)\n")
    w(f"Run {meta['started']} -> {meta['finished']} UTC, {meta['duration']} s per iperf3 run, "
      f"{args.runs} runs per system, systems taking turns within each run; "
      f"middlebox {meta['commit']} from {meta['tree']} ({meta['impl']}); load average at start {meta['load0']}, at end {meta['load1']} "
      f"(2 cores, shared with other work: compare ratios within a row, not across runs).\n")
    w(f"Command: `{meta['command']}`\n")
    w("Systems: **plain** = plain TCP guest -> plain iperf3 server over path 1, no daemon, no "
      "rules; **conv** = the converter (daemon, an uplink per path, joins at once); **linux** = "
      "`mptcpize run iperf3 -c` in the mbox namespace, an endpoint per uplink; **proxy** = "
      f"guest plain TCP -> `mptcpize run socat` in mbox -> MPTCP. Loss is on path "
      f"{getattr(args, 'loss_path', 2)}, both directions. Goodput in Mbit/s: median [min-max].\n")
    w("Goals (issue 6 item 7): clean: conv/linux >= 1.0; loss: conv/linux >= 0.95 and every "
      "conv run >= 1.5 x plain (`min/plain` = the slowest converter run over the plain median)."
      "\n")
    lines = summarize(results, systems)
    convs = [s for s in systems if s in CONVERTERS]
    hdr = ["scenario", "dir", "cc"] + [s if s != "converter" else "conv" for s in systems]
    for cs in convs:
        n = "conv" if cs == "converter" else cs
        hdr += [f"{n}/linux", f"{n}/plain", f"min {n}/plain", f"{n} goal"]
    w("| " + " | ".join(hdr) + " |")
    w("|" + "---|" * len(hdr))
    for ln in lines:
        cells = [ln["scenario"], ln["direction"], ln["cc"]]
        cells += [goodput_cell(ln["goodput"][s]) for s in systems]
        for cs in convs:
            r = ln["conv"][cs]
            cells += [fmt(r["linux"], 2), fmt(r["plain"], 2), fmt(r["min_plain"], 2), r["goal"]]
        w("| " + " | ".join(cells) + " |")
    w("")

    w("## Client TCP counters (median per run; the guest, for linux the mbox client)\n")
    hdr = ["scenario", "dir", "cc", "system"] + [short(k) for k in GUEST_KEYS]
    w("| " + " | ".join(hdr) + " |")
    w("|" + "---|" * len(hdr))
    for block in results:
        for s in systems:
            rs = [r for r in block["runs"] if r["system"] == s and "client" in r]
            if not rs:
                continue
            cells = [block["scenario"], block["direction"], block["cc"], s]
            cells += [fmt(med([r["client"][k] for r in rs])) for k in GUEST_KEYS]
            w("| " + " | ".join(cells) + " |")
    w("")

    w("## Server MPTCP counters (median per run; unhealthy = sum of fallback/DSS/HMAC errors)\n")
    hdr = ["scenario", "dir", "cc", "system"] + [short(k) for k in SERVER_KEYS]
    hdr += ["unhealthy", "loss drops"]
    w("| " + " | ".join(hdr) + " |")
    w("|" + "---|" * len(hdr))
    for block in results:
        for s in systems:
            rs = [r for r in block["runs"] if r["system"] == s and "server" in r]
            if not rs:
                continue
            cells = [block["scenario"], block["direction"], block["cc"], s]
            cells += [fmt(med([r["server"][k] for r in rs])) for k in SERVER_KEYS]
            cells.append(str(sum(r["server"].get(k, 0) for r in rs for k in SERVER_BAD)))
            cells.append(fmt(med([r.get("loss_dropped") for r in rs])))
            w("| " + " | ".join(cells) + " |")
    w("")

    if convs:
        w("## Daemon counters, converter runs (median per run; cpu = daemon CPU seconds per "
          "second; inject_err = the daemon's failed injections)\n")
        hdr = ["scenario", "dir", "cc", "system"] + list(CORE_KEYS)
        hdr += ["inject_err", "cpu", "errors"]
        w("| " + " | ".join(hdr) + " |")
        w("|" + "---|" * len(hdr))
        for block, cs in ((b, c) for b in results for c in convs):
            rs = [r for r in block["runs"] if r["system"] == cs]
            if not rs:
                continue
            cells = [block["scenario"], block["direction"], block["cc"], cs]
            cells += [fmt(med([r.get("core", {}).get(k, 0) for r in rs])) for k in CORE_KEYS]
            cells.append(fmt(med([r.get("daemon", {}).get("inject_errors", 0) for r in rs])))
            cells.append(fmt(med([r.get("daemon_cpu") for r in rs]), 2))
            errs = sorted({r["error"] for r in rs if r.get("error")}
                          | {ln for r in rs for ln in r.get("daemon_bad_lines", [])})
            cells.append("; ".join(e.replace("|", "/")[:160] for e in errs) or "")
            w("| " + " | ".join(cells) + " |")
        w("")

    errs = [(b["scenario"], b["direction"], b["cc"], r["system"], r["error"])
            for b in results for r in b["runs"] if r.get("error")]
    if errs:
        w("## Errors\n")
        for e in errs:
            w(f"* {e[0]} {e[1]} {e[2]} {e[3]}: {e[4]}")
        w("")
    if meta.get("plot"):
        w(f"Per-uplink throughput of converter runs: `{meta['plot']}`.\n")
    return "\n".join(out)


def plot(results: list[dict], path: pathlib.Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (.venv/bin/pip install matplotlib): no PNG", file=sys.stderr)
        return None
    first_cc = results[0]["cc"] if results else None
    convs = [c for c in CONVERTERS if any(r["system"] == c for b in results for r in b["runs"])]
    rows_ = []  # (block, {conv system: its first run with samples})
    for b in results:
        if b["cc"] != first_cc or any(x[0]["scenario"] == b["scenario"]
                                      and x[0]["direction"] == b["direction"] for x in rows_):
            continue
        got = {c: next((r for r in b["runs"] if r["system"] == c and r.get("uplinks")), None)
               for c in convs}
        if any(got.values()):
            rows_.append((b, got))
    if not rows_:
        return None
    cols = len(convs)
    fig, axes = plt.subplots(len(rows_), cols, figsize=(6.5 * cols, 2.6 * len(rows_)),
                             squeeze=False, sharex=True)
    for (b, got), axrow in zip(rows_, axes):
        for c, ax in zip(convs, axrow):
            r = got[c]
            if r is None:
                ax.axis("off")
                continue
            u = r["uplinks"]
            ifaces = [k for k in u if k != "t"]
            total = [sum(vals) for vals in zip(*(u[i] for i in ifaces))]
            for n, i in enumerate(ifaces, 1):
                ax.plot(u["t"], u[i], lw=1,
                        label=f"uplink {n} ({'tx' if b['direction'] == 'up' else 'rx'})")
            ax.plot(u["t"], total, label="sum", lw=1.2, color="black", alpha=0.7)
            ax.set_title(f"{b['scenario']} {b['direction']} {b['cc']}: {c} "
                         f"{fmt(r['mbit'])} Mbit/s (run 1)", fontsize=9)
            ax.set_ylabel("Mbit/s (100 ms)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("s")
    fig.suptitle("converter: per-subflow (per-uplink interface) throughput, mbox namespace",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.6 * len(rows_))))
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return str(path)


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    scen = all_scenarios()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--scenario", action="append",
                    help="scenario names or globs, comma-separated or repeated (default all; "
                         "--list)")
    ap.add_argument("--direction", choices=["up", "down", "both"], default="both")
    ap.add_argument("--cc", default="cubic,bbr", help="comma-separated (default cubic,bbr)")
    ap.add_argument("--cc-loss-only", default="",
                    help="congestion controls run only in the loss scenarios (e.g. bbr)")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)} "
                         f"(default {','.join(DEFAULT_SYSTEMS)})")
    ap.add_argument("--converter-args", default="",
                    help="extra `middlebox run` arguments of the converter, e.g. "
                         "'--backend nfqueue' (default none: the daemon's defaults)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8, help="seconds per iperf3 run")
    ap.add_argument("--out", default=str(RESULTS / "multipath"),
                    help="output prefix (.md, .json, .png; default bench/results/multipath)")
    ap.add_argument("--tree", default=str(ROOT),
                    help="the middlebox source tree (built in place) whose daemon, `rules` and "
                         "`stats` run, e.g. a `git archive` snapshot, so that edits in a shared "
                         "work tree cannot change the code mid-run (default: this repository)")
    ap.add_argument("--steer", action="store_true",
                    help="the guest's and the server's receive work on CPU 1 (RPS), the "
                         "daemon pinned to CPU 0, as a hypervisor's tap guest and a NIC "
                         "would take that work off the daemon (needs 2 CPUs)")
    ap.add_argument("--pcap", metavar="DIR",
                    help="capture the guest side (TCP headers) of every converter run into "
                         "DIR/<scenario>-<system>-<n>.pcap (the row's `pcap`), and each path "
                         "at both ends into <that name>-path<k>-{mbox,server}.pcap")
    ap.add_argument("--list", action="store_true", help="list the scenario names and exit")
    ap.add_argument("--guest-sysctl", action="append", default=[], metavar="KEY=VALUE",
                    help="a sysctl in the guest's namespace, e.g. net.ipv4.tcp_timestamps=0 "
                         "(repeatable; every system's guest: plain and converter)")
    ap.add_argument("--loss-path", type=int, default=2,
                    help="the path the loss scenarios drop on (default 2; 1 is subflow 1's, "
                         "whose SACK blocks the converter writes)")
    ap.add_argument("--failover", action="store_true",
                    help="instead of the goodput matrix: per system (not plain), direction and "
                         "--failover-paths, a run with that path set down at --down-at s "
                         "(writes <--out>.md/.json/.png; use another --out)")
    ap.add_argument("--failover-paths", default="1,2")
    ap.add_argument("--down-at", type=float, default=3.0)
    ap.add_argument("--rerender", action="store_true",
                    help="with --failover: recompute the table and plot from <--out>.json")
    args = ap.parse_args()
    for sc in scen.values():
        sc["loss_path"] = args.loss_path
    if args.list:
        for n, s in scen.items():
            print(f"{n:24s} rates {s['rates']} tbf latency {s['latency_ms']} ms, "
                  f"loss {s['loss']}% on path {s['loss_path']}")
        return 0
    if os.geteuid() != 0:
        print("bench_multipath: needs root (namespaces, netfilter)", file=sys.stderr)
        return 1
    global TREE
    TREE = pathlib.Path(args.tree).resolve()
    names = pick(list(scen), args.scenario)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s!r}")
    systems = [s for s in SYSTEMS if s in systems]
    ccs = [c.strip() for c in args.cc.split(",") if c.strip()]
    ccs_loss = [c.strip() for c in args.cc_loss_only.split(",") if c.strip()]
    dirs = ["up", "down"] if args.direction == "both" else [args.direction]
    if "bbr" in ccs + ccs_loss:
        try:
            subprocess.run(["modprobe", "tcp_bbr"], check=False, capture_output=True)
        except FileNotFoundError:
            pass  # no kmod here: bbr is built in or already loaded, or set_cc fails loudly
    probe = subprocess.run(
        [sys.executable, "-c", "import middlebox, middlebox.core as c, middlebox.wire as w; "
         "print(middlebox.__file__, w.IMPLEMENTATION, c.IMPLEMENTATION)"],
        capture_output=True, text=True, env=mb_env(), cwd="/")
    where, wire_impl, core_impl = (probe.stdout.split() + ["?", "?", "?"])[:3]
    if not where.startswith(str(TREE)):
        raise SystemExit(f"--tree {TREE}: middlebox imports from {where or probe.stderr}")
    if args.steer and (os.cpu_count() or 1) < 2:
        raise SystemExit("--steer needs 2 CPUs (the daemon on CPU 0, receive work on CPU 1)")
    commit_file = TREE / "COMMIT"
    commit = (commit_file.read_text().strip()[:12] if commit_file.exists() else
              subprocess.run(["git", "-C", str(TREE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip())
    dirty = "" if commit_file.exists() else subprocess.run(
        ["git", "-C", str(TREE), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True).stdout.strip()

    meta = {
        "started": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
        "duration": args.duration,
        "impl": f"wire {wire_impl}, core {core_impl}",
        "load0": " ".join(open("/proc/loadavg").read().split()[:3]),
        "command": " ".join(["bench/bench_multipath.py", *sys.argv[1:]]),
        "commit": commit + (" + uncommitted edits" if dirty else ""),
        "tree": str(TREE),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.failover:
        return run_failover(names, scen, systems, ccs, dirs, args, meta, out)
    results: list[dict] = []
    t_start = time.monotonic()
    for name in names:
        sc = scen[name]
        b = Bench(name, sc, args)
        try:
            b.start()
            for cc in ccs + ([c for c in ccs_loss if c not in ccs] if sc["loss"] else []):
                b.set_cc(cc)
                for direction in dirs:
                    block = {"scenario": name, "direction": direction, "cc": cc,
                             "loss": sc["loss"], "runs": []}
                    results.append(block)
                    for i in range(args.runs):
                        for s in systems:
                            row = b.measure(s, direction)
                            row["run"] = i
                            block["runs"].append(row)
                            el = time.monotonic() - t_start
                            print(f"[{el:6.0f} s] {name} {direction} {cc} run {i + 1}/{args.runs}"
                                  f" {s:9s} {fmt(row['mbit'], 1):>6s} Mbit/s"
                                  + (f"  ({row['error']})" if row.get("error") else "")
                                  + (f"  core {({k: row['core'].get(k, 0) for k in CORE_KEYS})}"
                                     if "core" in row else ""),
                                  flush=True)
                    _write(out, results, systems, args, meta, final=False)
        except Exception as e:
            print(f"scenario {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            results.append({"scenario": name, "direction": "-", "cc": "-", "loss": sc["loss"],
                            "runs": [], "error": f"{type(e).__name__}: {e}"})
        finally:
            b.close()
    _write(out, results, systems, args, meta, final=True)
    return 0


def _write(out: pathlib.Path, results, systems, args, meta, final: bool) -> None:
    meta["finished"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
    meta["load1"] = " ".join(open("/proc/loadavg").read().split()[:3])
    results = [b for b in results if b["runs"] or final]
    if final:
        meta["plot"] = plot(results, out.with_suffix(".png"))
        if meta["plot"]:
            meta["plot"] = os.path.relpath(meta["plot"], ROOT)
    text = report([b for b in results if b["runs"]], systems, args, meta)
    out.with_suffix(".md").write_text(text + "\n")
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, separators=(",", ":"))
    if final:
        print()
        print(text)


if __name__ == "__main__":
    sys.exit(main())
