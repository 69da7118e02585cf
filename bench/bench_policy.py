#!/usr/bin/env python3
"""Cost policy benchmark (issue 10): the origin study's result, reproduced on the test bed.

Three uplinks shaped alike (`--rate`, default 50 Mbit/s each, tbf, `--latency` ms of buffer)
with costs 1, 2 and 6 per GB (`--costs`); one bulk iperf3 transfer per row, upload and
download, `--runs` each, all in one run:

* `single`: plain TCP on the cheapest uplink (the guest's route; no converter);
* `greedy`: the converter with `--policy greedy` (every uplink);
* `linux`: Linux MPTCP end to end from the middlebox namespace (an endpoint per uplink), the
  greedy reference;
* `cost-<T>`: the converter with `--policy cost --target <T>` for each of `--targets`
  (default 1x,1.5x,2x,2.5x,3x).

Per row: goodput (iperf3's receiver), bytes per uplink (interface counters in the middlebox
namespace, both ways, every 100 ms), and the cost per GB carried: sum(bytes_i * cost_i) /
sum(bytes_i). The report (<--out>.md, .json) gives medians and min/max and the ratios the
issue's goals name; <--out>.png plots the throughput/cost frontier with the greedy points.

`--dynamic`: instead, one `cost-2x` upload of `--dynamic-duration` s in which the cheapest
uplink drops to a fifth of its rate at `--slow-at` s and comes back at `--fast-at` s; it plots
throughput and per-uplink rate over time (<--out>-dynamic.png) and reports how long the flow
stayed below 90 % of its target after the drop.

Goals (issue 10): at target 2x, throughput >= 1.8x single path and cost per GB <= 0.5x greedy;
the dear uplink carries < 5 % of the bytes while the cheaper two suffice; after the cheap
uplink slows, the target is met again within 2 s by adding the next uplink.

Not a timed test: a benchmark for a quiet machine (this one has 2 shared cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import subprocess
import sys
import threading
import time

import bench_multipath as BM

ROOT = BM.ROOT
SYSTEMS_FIXED = ("single", "greedy", "linux")


class PolicyBench(BM.Bench):
    def __init__(self, args) -> None:
        sc = {"rates": [args.rate] * 3, "latency_ms": args.latency, "loss": 0.0, "loss_path": 2}
        super().__init__("3x%g" % args.rate, sc, args)
        self.costs = [float(c) for c in args.costs.split(",")]

    def rules(self, install: bool) -> None:
        t = self.t
        if install:
            argv = [*BM.ME, "rules", "install", "--queue", str(BM.QUEUE), "--guest-iface",
                    t.mbox_guest_if]
            for spec, cost in zip(t.uplink_specs(), self.costs):
                argv += ["--uplink", f"{spec},cost={cost:g}"]
        else:
            argv = [*BM.ME, "rules", "remove"]
        t.run(t.mbox, argv, check=install, timeout=60, env=BM.mb_env(), cwd=str(BM.TREE))

    def run_row(self, system: str, direction: str, duration: int, during=None) -> dict:
        """One transfer; `during()` runs in a thread alongside it (the dynamic run)."""
        t = self.t
        row: dict = {"system": system, "direction": direction}
        daemon = None
        try:
            if system not in ("single", "linux"):
                self.rules(True)
                extra = ["--policy", "greedy"] if system == "greedy" else \
                    ["--policy", "cost", "--target", system.split("-", 1)[1]]
                daemon = BM.Daemon(t, "--join-after-bytes", "0", "--join-after-ms", "0", *extra)
            kind = {"single": "plain", "linux": "linux"}.get(system, "converter")
            saved = self.args.duration
            self.args.duration = duration
            with BM.Sampler(t) as sampler:
                if during is not None:
                    threading.Thread(target=during, daemon=True).start()
                mbit, err = self.iperf(kind, direction)
            self.args.duration = saved
            row["mbit"], row["error"] = mbit, err
            s = sampler.samples
            if len(s) >= 2:
                first, last = s[0][1], s[-1][1]
                row["bytes"] = [sum(last.get(i, (0, 0))[k] - first.get(i, (0, 0))[k] for k in (0, 1))
                                for i in sampler.ifaces]
            row["series"] = sampler.rates(direction)
            if daemon:
                st = daemon.stats()
                row["core"] = {k: int(v) for k, v in st.get("core", {}).items()
                               if v and k in ("PolicyReplan", "MpPrioTX", "MPJoinEstablished")}
                row["uplink_cost"] = st.get("uplink_cost")
        except Exception as e:  # recorded, the bench goes on
            row.setdefault("mbit", None)
            row["error"] = f"{type(e).__name__}: {e}"
        finally:
            if daemon:
                row["daemon_rc"] = daemon.stop()
                row["daemon_bad_lines"] = [ln for ln in daemon.lines if any(
                    w in ln.lower() for w in ("traceback", "error", "bug"))][:10]
                try:
                    self.rules(False)
                except Exception as e:
                    row["error"] = (row.get("error") or "") + f" rules remove: {e}"
        b = row.get("bytes")
        if b and sum(b):
            row["cost_per_gb"] = sum(x * c for x, c in zip(b, self.costs)) / sum(b)
            row["shares"] = [x / sum(b) for x in b]
        return row


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows: list[dict], systems: list[str]) -> list[dict]:
    out = []
    for d in ("up", "down"):
        single = med([r["mbit"] for r in rows if r["system"] == "single" and r["direction"] == d])
        greedy_cost = med([r.get("cost_per_gb") for r in rows if r["system"] == "greedy" and r["direction"] == d])
        for s in systems:
            rs = [r for r in rows if r["system"] == s and r["direction"] == d]
            if not rs:
                continue
            mb = [r["mbit"] for r in rs if r["mbit"] is not None]
            cost = med([r.get("cost_per_gb") for r in rs])
            shares = [med([r["shares"][i] for r in rs if r.get("shares")]) for i in range(3)]
            out.append({
                "direction": d, "system": s, "runs": len(rs),
                "mbit": med(mb), "min": min(mb) if mb else None, "max": max(mb) if mb else None,
                "x_single": med(mb) / single if mb and single else None,
                "cost_per_gb": cost,
                "x_greedy_cost": cost / greedy_cost if cost is not None and greedy_cost else None,
                "shares": shares,
                "errors": [r["error"] for r in rs if r.get("error")],
            })
    return out


def fmt(x, nd=0):
    return "-" if x is None else f"{x:.{nd}f}"


def report(summary: list[dict], meta: dict, costs: list[float]) -> str:
    lines = [f"# Cost policy (bench/bench_policy.py)", "",
             f"Run {meta['start']} -> {meta['end']} UTC at {meta['commit']}; `{meta['argv']}`. "
             f"Three uplinks of {meta['rate']:g} Mbit/s (tbf, {meta['latency']} ms), costs "
             f"{', '.join(f'{c:g}' for c in costs)} per GB; {meta['runs']} run(s) of "
             f"{meta['duration']} s per row; medians [min-max].", "",
             "| dir | system | Mbit/s | x single | cost/GB | x greedy cost | share uplink 1/2/3 | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        share = " / ".join("-" if x is None else f"{100 * x:.1f}%" for x in s["shares"])
        lines.append(f"| {s['direction']} | {s['system']} | {fmt(s['mbit'])} [{fmt(s['min'])}-{fmt(s['max'])}] "
                     f"| {fmt(s['x_single'], 2)} | {fmt(s['cost_per_gb'], 2)} | {fmt(s['x_greedy_cost'], 2)} "
                     f"| {share} | {'; '.join(s['errors'])[:120]} |")
    lines += ["", "Goals at target 2x: throughput >= 1.8x single, cost/GB <= 0.5x greedy's, "
              "uplink 3 < 5 % of the bytes."]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: pathlib.Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e}"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, d in zip(axes, ("up", "down")):
        pts = [s for s in summary if s["direction"] == d and s["mbit"] is not None
               and s["cost_per_gb"] is not None]
        cost_pts = sorted((s for s in pts if s["system"].startswith("cost-")), key=lambda s: s["cost_per_gb"])
        ax.plot([s["cost_per_gb"] for s in cost_pts], [s["mbit"] for s in cost_pts], "o-",
                label="converter --policy cost")
        for s in pts:
            marker = {"single": "s", "greedy": "D", "linux": "^"}.get(s["system"])
            if marker:
                ax.plot([s["cost_per_gb"]], [s["mbit"]], marker, label=s["system"])
            ax.annotate(s["system"].replace("cost-", ""), (s["cost_per_gb"], s["mbit"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_title(f"{'upload' if d == 'up' else 'download'}")
        ax.set_xlabel("cost per GB carried")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("goodput (Mbit/s)")
    axes[0].legend(fontsize=8)
    fig.suptitle("throughput / cost frontier: 3 uplinks, costs 1, 2, 6")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def dynamic(b: PolicyBench, args) -> dict:
    """cost-2x upload; the cheapest uplink at a fifth of its rate from --slow-at to --fast-at."""
    t = b.t

    def change():
        t0 = time.monotonic()
        time.sleep(args.slow_at)
        t.shape(1, max(1, args.rate // 5))
        b.events.append(("slow", time.monotonic() - t0))
        time.sleep(max(0.0, args.fast_at - args.slow_at))
        t.shape(1, args.rate)
        b.events.append(("fast", time.monotonic() - t0))

    b.events = []
    row = b.run_row("cost-2x", "up", args.dynamic_duration, during=change)
    row["events"] = b.events
    ser = row.get("series") or {}
    ts = ser.get("t", [])
    tot = [sum(ser[i][k] for i in ser if i != "t") for k in range(len(ts))]
    target = 2 * args.rate
    slow = next((e for n, e in b.events if n == "slow"), None)
    if slow is not None:
        below = [(tt, v) for tt, v in zip(ts, tot) if tt >= slow]
        # the first moment after the drop from which a 1 s window averages >= 90 % of target
        back = None
        for k, (tt, _) in enumerate(below):
            win = [v for t2, v in below[k:] if t2 < tt + 1.0]
            if win and sum(win) / len(win) >= 0.9 * target:
                back = tt - slow
                break
        row["recovery_s"] = back
    row["total_series"] = tot
    return row


def dynamic_plot(row: dict, path: pathlib.Path, rate: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e}"
    ser = row.get("series") or {}
    ts = ser.get("t", [])
    fig, ax = plt.subplots(figsize=(9, 4))
    for k, name in enumerate(i for i in ser if i != "t"):
        ax.plot(ts, ser[name], label=f"uplink {k + 1}")
    ax.plot(ts, row.get("total_series", []), "k-", lw=1.5, label="total")
    ax.axhline(2 * rate, color="grey", ls="--", lw=1, label="target 2x")
    for name, at in row.get("events", []):
        ax.axvline(at, color="red" if name == "slow" else "green", ls=":", lw=1)
    ax.set_xlabel("s")
    ax.set_ylabel("Mbit/s (interface tx, 100 ms)")
    ax.set_title("cost-2x upload; uplink 1 at a fifth of its rate between the dotted lines")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--rate", type=int, default=50, help="Mbit/s per uplink (default 50)")
    ap.add_argument("--latency", type=int, default=20, help="tbf latency, ms (default 20)")
    ap.add_argument("--costs", default="1,2,6")
    ap.add_argument("--targets", default="1x,1.5x,2x,2.5x,3x")
    ap.add_argument("--systems", default="single,greedy,linux,cost",
                    help="subset of single,greedy,linux,cost (cost: one row per --targets)")
    ap.add_argument("--direction", choices=["up", "down", "both"], default="both")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run")
    ap.add_argument("--out", default=str(BM.RESULTS / "policy"))
    ap.add_argument("--tree", default=str(ROOT), help="as bench_multipath.py --tree")
    ap.add_argument("--dynamic", action="store_true", help="the slow-uplink run instead")
    ap.add_argument("--dynamic-duration", type=int, default=16)
    ap.add_argument("--slow-at", type=float, default=5.0)
    ap.add_argument("--fast-at", type=float, default=11.0)
    args = ap.parse_args()
    BM.TREE = pathlib.Path(args.tree).resolve()
    args.converter_args = ""
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    meta = {"start": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), "commit": commit,
            "argv": "bench/bench_policy.py " + " ".join(sys.argv[1:]), "rate": args.rate,
            "latency": args.latency, "runs": args.runs, "duration": args.duration}
    b = PolicyBench(args)
    try:
        b.start()
        b.set_cc("cubic")
        if args.dynamic:
            row = dynamic(b, args)
            meta["end"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
            dyn = pathlib.Path(str(out) + "-dynamic")
            dyn.with_suffix(".json").write_text(json.dumps({"meta": meta, "row": row}, indent=1))
            msg = dynamic_plot(row, dyn.with_suffix(".png"), args.rate)
            print(f"dynamic: {row.get('mbit')} Mbit/s, back to 90 % of the target "
                  f"{row.get('recovery_s')} s after the drop, events {row.get('events')}, "
                  f"core {row.get('core')} {msg or ''}")
            return 0
        systems = []
        for s in args.systems.split(","):
            systems += [f"cost-{x}" for x in args.targets.split(",")] if s == "cost" else [s]
        dirs = ["up", "down"] if args.direction == "both" else [args.direction]
        rows = []
        t0 = time.monotonic()
        for run in range(args.runs):
            for d in dirs:
                for s in systems:
                    r = b.run_row(s, d, args.duration)
                    r["run"] = run
                    rows.append(r)
                    share = "/".join(f"{100 * x:.0f}" for x in r.get("shares", []))
                    print(f"[{time.monotonic() - t0:6.0f} s] {d:4s} {s:9s} run {run + 1}: "
                          f"{BM.fmt(r['mbit'], 1)} Mbit/s, cost/GB {BM.fmt(r.get('cost_per_gb'), 2)}, "
                          f"shares {share} % {r.get('error') or ''}", flush=True)
        meta["end"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
        summary = summarize(rows, systems)
        for r in rows:
            r.pop("series", None)
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))
        text = report(summary, meta, b.costs)
        msg = plot(summary, out.with_suffix(".png"))
        out.with_suffix(".md").write_text(text + (f"\n{msg}\n" if msg else
                                                   f"\nFrontier: `{out.with_suffix('.png').name}`.\n"))
        print(text)
        return 0
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
