"""Core benchmark: a fixed corpus through `Converter.handle`, pure Python vs compiled.

    .venv/bin/python bench/bench_core.py [--quick]

The corpus (built with the two-sided harness of tests/unit/test_core_harness.py, same bytes
in every mode: the converter's key is pinned for the run) is two flows in one converter:

* an established MPTCP v1 flow with timestamps: guest data segments of 1448 bytes (DSS
  added), guest pure ACKs (DATA_ACK added), server data of 1448 bytes with a DSS (stripped),
  server pure DATA_ACKs (stripped);
* a fallback flow (the server did not answer MP_CAPABLE): guest and server data, 1448 bytes.

Each row feeds the same packet again and again (a retransmission: same path through the core
as the original), `time.perf_counter_ns` around a loop sized to ~3 ms; the rows take turns,
and each keeps its best of several runs.

Two rows more (`mp ...`, join_download) are a multipath download's main path, where every
packet must be new: server data on an extra subflow, in order, and the guest's ACKs of it,
each packet timed on its own over a fresh flow per repeat (multipath.py is not compiled:
those rows show what its Python costs per packet; the daemon's syscalls come on top).
Columns, in ns per packet:

  pure      MIDDLEBOX_PURE_PYTHON=1 in a subprocess: reference wire + reference core
  py-core   the reference core (middlebox.core.converter) over the compiled wire twin: what
            ran before the core had a compiled twin
  compiled  middlebox.core.Converter as selected (the compiled core when it is built)

Before timing, every mode's verdict bytes for every row are compared with the pure run's:
they must be identical. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PINNED_KEY = 0x0123456789ABCDEF  # the converter's MPTCP key for the whole run
PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(1448))


def corpus(converter_cls):
    """(converter, now, rows): rows are (name, bytes, direction) for flows brought to their
    state through `converter_cls` (the harness drives and validates the handshake)."""
    import importlib

    from middlebox.core import ACCEPT, Direction
    from tests.unit.test_core_harness import ACK, PSH, Pair

    module = importlib.import_module(converter_cls.__module__)
    module.new_key = lambda: PINNED_KEY

    est = Pair()
    est.conv = conv = converter_cls(est.cfg)
    est.established()
    fb = Pair(server_mptcp=False, gport=40001)
    fb.conv = conv
    fb.handshake()
    fb.g_rcv = fb.s_nxt
    now = max(est.now, fb.now) + 0.001
    est.now = fb.now = now - 0.0005
    out, inn = Direction.OUT, Direction.IN
    rows = [
        ("v1 guest data 1448 B + TS", est.g_data(PAYLOAD), out),
        ("v1 guest pure ACK + TS", est.g_ack(), out),
        ("v1 server data 1448 B + DSS", est.s_data_pkt(PAYLOAD), inn),
        ("v1 server pure DATA_ACK", est.s_ack(), inn),
        ("fallback guest data 1448 B", fb.g_data(PAYLOAD), out),
        ("fallback server data 1448 B",
         fb.s_packet(fb.s_nxt, fb.g_nxt, ACK | PSH, payload=PAYLOAD), inn),
    ]
    # one pass in order, the way the conversation goes; the repeats below are retransmissions
    for _name, buf, d in rows:
        verdict = conv.handle(buf, d, now)[0]
        assert verdict is ACCEPT or hasattr(verdict, "data"), verdict
    return conv, now, rows


def verdict_digest(actions, original: bytes) -> str:
    first = actions[0]
    data = getattr(first, "data", None)
    label = type(first).__name__ + ":" + hashlib.sha256(original if data is None else data).hexdigest()[:16]
    return label + "".join("+" + type(a).__name__ for a in actions[1:])


def loop_size(fn, budget_ns: int) -> int:
    """Iterations of fn that take about budget_ns."""
    n = 16
    while True:
        t0 = time.perf_counter_ns()
        fn(n)
        if time.perf_counter_ns() - t0 >= budget_ns or n >= 1 << 22:
            return n
        n *= 2


def measure(converter_cls, budget_ns: int, repeat: int) -> dict:
    """{row name: [ns per packet, verdict digest]} for one converter class.

    The rows take turns (each repeat times every row once) and each keeps its best run: on
    a shared machine a disturbed stretch then spoils one run of every row, not every run of
    one row."""
    from middlebox.core import Counter

    conv, now, rows = corpus(converter_cls)
    before = dict(conv.counters)
    loops, out = [], {}
    for name, buf, d in rows:
        actions = conv.handle(buf, d, now)
        handle = conv.handle

        def loop(n, handle=handle, buf=buf, d=d, now=now):
            for _ in range(n):
                handle(buf, d, now)

        loops.append((name, loop, loop_size(loop, budget_ns)))
        out[name] = [float("inf"), verdict_digest(actions, buf)]
    for _ in range(repeat):
        for name, loop, n in loops:
            t0 = time.perf_counter_ns()
            loop(n)
            out[name][0] = min(out[name][0], (time.perf_counter_ns() - t0) / n)
    bad = {c.name: conv.counters[c] - before[c] for c in (Counter.CoreBug, Counter.StateViolation,
                                                         Counter.MappingUncovered, Counter.UnknownFlow)
           if conv.counters[c] != before[c]}
    assert not bad, f"the corpus took an unexpected path: {bad}"
    return out


def join_download(converter_cls, n: int, repeat: int) -> dict:
    """{row name: [ns per packet, digest]} for a multipath download's main path: new server
    data, 1448 bytes a segment, in order on an extra subflow (each is dropped, its bytes go
    to the guest as an injected segment, and an ACK goes to the server on that subflow), with
    the guest acking every second segment. Unlike the rows above, every packet is a new one:
    each repeat drives a fresh flow (tests/unit/test_subflow_table.MPair) through `n` data
    segments, each `handle` timed on its own, and each row keeps its best repeat. The digest
    is over the bytes the guest got, which must be the same in every mode."""
    from middlebox.core import Direction
    from tests.unit.test_core_harness import M32
    from tests.unit.test_subflow_table import MPair

    best_data = best_ack = float("inf")
    digest = ""
    for _ in range(repeat):
        p = MPair(2)
        p.conv = converter_cls(p.cfg)
        p.go_multipath()
        p.join_up(1)
        j = p.joins[1]
        segs = [p.j_data(j, PAYLOAD) for _ in range(n)]
        handle, now = p.conv.handle, p.now
        t_data = t_ack = 0
        h = hashlib.sha256()
        for i, buf in enumerate(segs):
            now += 0.00002
            t0 = time.perf_counter_ns()
            acts = handle(buf, Direction.LOCAL, now)
            t_data += time.perf_counter_ns() - t0
            for a in acts[1:]:
                if p.label(a.data) == "g_data":
                    h.update(a.data)
            if i % 2:
                p.g_rcv = (p.s_isn + 1 + (i + 1) * len(PAYLOAD)) & M32
                ack = p.g_ack()
                t0 = time.perf_counter_ns()
                handle(ack, Direction.OUT, now)
                t_ack += time.perf_counter_ns() - t0
        best_data = min(best_data, t_data / n)
        best_ack = min(best_ack, t_ack / (n // 2))
        digest = h.hexdigest()[:16]
        forwarded = p.count("JoinDataFwd")
        assert forwarded == n and not p.count("JoinBeyondGuestWindow"), (forwarded, p.count("JoinBeyondGuestWindow"))
    return {"mp join data 1448 B, new, in order": [best_data, digest],
            "mp guest ACK of join data": [best_ack, digest]}


def worker(which: str, budget_ns: int, repeat: int) -> dict:
    import middlebox.core as core
    import middlebox.wire as wire

    if which == "py-core":
        from middlebox.core.converter import Converter as cls
    else:
        cls = core.Converter
    impl = getattr(core, "IMPLEMENTATION", "python") if which != "py-core" else "python"
    rows = measure(cls, budget_ns, repeat)
    rows.update(join_download(cls, 400 if budget_ns < 3_000_000 else 2000, max(3, repeat // 6)))
    return {"wire": wire.IMPLEMENTATION, "core": impl, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, rougher numbers")
    ap.add_argument("--worker", choices=("pure", "py-core", "compiled"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    budget, repeat = (1_000_000, 5) if args.quick else (3_000_000, 30)
    if args.worker:
        print(json.dumps(worker(args.worker, budget, repeat)))
        return 0

    results = {}
    for which in ("pure", "py-core", "compiled"):
        env = dict(os.environ)
        env.pop("MIDDLEBOX_PURE_PYTHON", None)
        if which == "pure":
            env["MIDDLEBOX_PURE_PYTHON"] = "1"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", which] + (["--quick"] if args.quick else [])
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            sys.stderr.write(res.stderr)
            return 1
        results[which] = json.loads(res.stdout.splitlines()[-1])

    pure = results["pure"]["rows"]
    for which in ("py-core", "compiled"):
        for name, (_, digest) in results[which]["rows"].items():
            if digest != pure[name][1]:
                print(f"MISMATCH {which} {name}: {digest} != {pure[name][1]}")
                return 1
    print(f"{'row':32} {'pure ns':>9} {'py-core ns':>11} {'compiled ns':>12} {'vs pure':>8} {'vs py-core':>11}")
    for name, (ns_pure, _) in pure.items():
        ns_py = results["py-core"]["rows"][name][0]
        ns_c = results["compiled"]["rows"][name][0]
        print(f"{name:32} {ns_pure:9.0f} {ns_py:11.0f} {ns_c:12.0f} {ns_pure / ns_c:7.1f}x {ns_py / ns_c:10.1f}x")
    c = results["compiled"]
    print(f"\ncompiled column: wire={c['wire']} core={c['core']}; pure column: wire="
          f"{results['pure']['wire']} core={results['pure']['core']}; verdict bytes identical in all modes")
    print(f"python {sys.version.split()[0]}; best of {repeat}, ~{budget // 1_000_000} ms per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
