#!/usr/bin/env python3
"""Inbound goodput (issue 9 item 6): an MPTCP client reaching a plain-TCP service in a guest
through the converter, against the same client reaching a Linux MPTCP server in the guest's
place without the middlebox, and plain TCP, in one run.

The test bed of bench_multipath.py (`--rates`, default 2 x 100 Mbit/s, tbf with `--latency`
ms of buffer); the client runs in the server namespace, the service in the guest namespace:

  plain      plain TCP end to end: `iperf3 -c` -> `iperf3 -s` in the guest; no daemon, no rules.
  converter  `middlebox rules install --uplink <each path>` + `middlebox run`: the client's
             `mptcpize run iperf3 -c` -> plain `iperf3 -s` in the guest (the inbound role).
  linux      Linux MPTCP end to end: `mptcpize run iperf3 -c` -> `mptcpize run iperf3 -s` in
             the guest; no daemon, no rules.

Upload is client -> guest, download `-R`. The systems take turns within a run, `--runs` runs.
With `--client-paths 2` (default) the client has a second interface: a `subflow` endpoint on
path 2 and a route from that address to the guests by path 2 (middlebox.demo.
client_second_interface), so the MPTCP systems use both paths (the converter answering the
client's join at the guest's address, Linux's server in the guest answering it itself) and plain
TCP uses path 1: the issue's goals, >= 0.95x Linux and >= 1.8x a single path, in one run.
`--client-paths 1`: the client has one route (path 1). Plain TCP and Linux then use one path
(Linux's server in the guest has one address to offer); the converter announces uplink 2's
address (ADD_ADDR) and the client joins there, so the converter alone uses both.

Writes <--out>.md (printed too) and .json. Needs root, iperf3, mptcpize.

    .venv/bin/python bench/bench_inbound.py --tree <built snapshot> --runs 3 --duration 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_multipath as BM  # noqa: E402  (its Daemon, Topology, environment)
from middlebox.testbed import Topology  # noqa: E402

SYSTEMS = ("plain", "converter", "linux")
PORT_PLAIN, PORT_MPTCP = 5202, 5201
CLIENT_BAD = ("MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtMPCapableFallbackACK",
              "MPTcpExtDSSNotMatching", "MPTcpExtDSSNoMatchTCP", "MPTcpExtInfiniteMapRx",
              "MPTcpExtDataCsumErr", "MPTcpExtMPFailRx", "MPTcpExtDssFallback")
CLIENT_KEYS = ("MPTcpExtMPCapableSYNACKRX", "TcpRetransSegs", "TcpExtTCPTimeouts")


def iperf(t, system: str, direction: str, duration: int) -> tuple[float | None, str]:
    port = PORT_MPTCP if system == "linux" else PORT_PLAIN
    argv = ["iperf3", "-c", t.guest_ip, "-p", str(port), "-t", str(duration), "-J",
            "--connect-timeout", "5000"]
    if system != "plain":
        argv = ["mptcpize", "run", *argv]
    if direction == "down":
        argv.append("-R")
    try:
        r = t.run(t.server, argv, check=False, timeout=duration + 40)
    except subprocess.TimeoutExpired:
        return None, "iperf3 timed out"
    try:
        res = json.loads(r.stdout)
    except ValueError:
        return None, f"iperf3 rc {r.returncode}: {(r.stdout + r.stderr)[-300:]}"
    end = res.get("end", {}).get("sum_received", {})
    mbit = end.get("bits_per_second", 0) / 1e6 if end else None
    return mbit, (f"iperf3: {res['error']}" if "error" in res else "")


def rules(t, install: bool) -> None:
    argv = [*BM.ME, "rules", "remove"]
    if install:
        argv = [*BM.ME, "rules", "install", "--queue", str(BM.QUEUE), "--guest-iface", t.mbox_guest_if]
        for spec in t.uplink_specs():
            argv += ["--uplink", spec]
    t.run(t.mbox, argv, check=install, timeout=60, env=BM.mb_env(), cwd=str(BM.TREE))


def measure(t, system: str, direction: str, duration: int) -> dict:
    row: dict = {"system": system, "direction": direction}
    daemon = None
    try:
        if system == "converter":
            rules(t, True)
            daemon = BM.Daemon(t)
        c0 = t.nstat(t.server, prefix=None)
        row["mbit"], row["error"] = iperf(t, system, direction, duration)
        c1 = t.nstat(t.server, prefix=None)
        row["client"] = {k: c1.get(k, 0) - c0.get(k, 0) for k in CLIENT_KEYS + CLIENT_BAD
                         if c1.get(k, 0) != c0.get(k, 0)}
        if daemon:
            core = daemon.stats().get("core", {})
            row["core"] = {k: int(v) for k, v in core.items()
                           if v and k in ("MPCapableSYNRX", "MPCapableACKRX", "InboundFallback",
                                          "DSSTX", "DSSRX", "StateViolation", "AddAddrTX",
                                          "PassiveJoinAtUplink", "PassiveJoinEstablished")}
    except Exception as e:  # recorded, the bench goes on
        row.setdefault("mbit", None)
        row["error"] = f"{type(e).__name__}: {e}"
    finally:
        if daemon:
            row["daemon_rc"] = daemon.stop()
            rules(t, False)
    return row


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def report(rows: list[dict], meta: dict) -> str:
    out = [f"# Inbound goodput at {meta['commit']}", "",
           f"Run {meta['started']} -> {meta['finished']} UTC, {meta['duration']} s per iperf3 run, "
           f"{meta['runs']} runs, paths {meta['rates']} Mbit/s (tbf, {meta['latency']} ms buffer), "
           f"load before {meta['load0']}. Command: `{meta['command']}`.", "",
           "Client: a Linux MPTCP client (`mptcpize run iperf3 -c`, plain for **plain**) in the "
           "server namespace; service in the guest: plain `iperf3 -s` behind the converter "
           "(**converter**, the inbound role), `mptcpize run iperf3 -s` with no middlebox "
           f"(**linux**), plain with no middlebox (**plain**). The client uses "
           f"{meta['client_paths']} interface(s) (MPTCP systems; plain TCP: path 1; see the "
           "script's docstring).", "",
           "| direction | plain | converter | linux | converter / linux | converter / plain |",
           "|---|---|---|---|---|---|"]
    for d in ("up", "down"):
        cells, meds = [], {}
        for s in SYSTEMS:
            v = [r["mbit"] for r in rows if r["system"] == s and r["direction"] == d]
            m = med(v)
            meds[s] = m
            ok = [x for x in v if x is not None]
            cells.append(f"{m:.0f} ({min(ok):.0f}-{max(ok):.0f})" if ok else "-")
        ratio = lambda a, b: f"{meds[a] / meds[b]:.2f}" if meds[a] and meds[b] else "-"  # noqa: E731
        out.append(f"| {d} | {' | '.join(cells)} | {ratio('converter', 'linux')} | "
                   f"{ratio('converter', 'plain')} |")
    out += ["", "Medians (min-max) in Mbit/s (iperf3's receiver). Per run, the client's "
            "counters that moved and the converter's core counters:", ""]
    for r in rows:
        out.append(f"- {r['direction']} {r['system']}: {r['mbit'] and round(r['mbit'])} Mbit/s "
                   f"{r.get('client', {})} {r.get('core', '')} {r.get('error') or ''}".rstrip())
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,100", help="Mbit/s per path (default 100,100)")
    ap.add_argument("--latency", type=int, default=50, help="tbf buffer in ms (default 50)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--client-paths", type=int, choices=(1, 2), default=2,
                    help="interfaces the client uses (default 2)")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--tree", default=str(ROOT), help="the middlebox tree (built in place) to run")
    ap.add_argument("--out", default=str(BM.RESULTS / "inbound"))
    args = ap.parse_args()
    BM.TREE = pathlib.Path(args.tree).resolve()
    rates = [int(x) for x in args.rates.split(",")]
    commit_file = BM.TREE / "COMMIT"
    commit = (commit_file.read_text().strip()[:12] if commit_file.exists() else
              subprocess.run(["git", "-C", str(BM.TREE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip())
    meta = {"commit": commit, "runs": args.runs, "client_paths": args.client_paths, "duration": args.duration, "rates": rates,
            "latency": args.latency, "command": " ".join(sys.argv),
            "started": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
            "load0": " ".join(open("/proc/loadavg").read().split()[:3])}
    rows: list[dict] = []
    # (the test bed turns MPTCP off in the guest: on here, for the linux system's server; the
    # converter's plain service is a TCP socket either way)
    with Topology(rate_mbit=rates, latency_ms=args.latency, paths=len(rates),
                  sysctls={"guest": {"net.mptcp.enabled": 1}}) as t:
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t.popen(t.guest, ["iperf3", "-s", "-p", str(PORT_PLAIN)], **quiet)
        t.popen(t.guest, ["mptcpize", "run", "iperf3", "-s", "-p", str(PORT_MPTCP)], **quiet)
        t.wait_tcp_listen(t.guest, PORT_PLAIN)
        t.wait_tcp_listen(t.guest, PORT_MPTCP)
        if args.client_paths == 2:
            from middlebox.demo import client_second_interface
            import socket
            client_second_interface(t, socket.AF_INET)
            t.run(t.guest, ["ip", "mptcp", "limits", "set", "subflows", "2"])
        for run in range(args.runs):
            for d in ("up", "down"):
                for s in SYSTEMS:
                    row = measure(t, s, d, args.duration)
                    row["run"] = run
                    rows.append(row)
                    print(f"run {run + 1} {d:4s} {s:9s} {row['mbit'] and round(row['mbit'])} Mbit/s "
                          f"{row.get('error') or ''}", flush=True)
                    time.sleep(1)
    meta["finished"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
    text = report(rows, meta)
    out = pathlib.Path(args.out)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
