"""Differential: the compiled multipath (`middlebox._ccore.multipath`, called by the compiled
converter) against the pure spec (`middlebox/core/multipath.py`, called by `REFERENCE`), on
whole multipath conversations, packet by packet.

Both converters get the same hypothesis-chosen events on a flow with two joins: the server's
data on either join (some lost, some repeated), the guest's ACKs with shrinking and growing
windows, the guest's data (scheduled over the subflows), the server's acks of it, and the
clock (stale subflows, held DATA_ACKs, repair). After every event the two must emit the same
actions (type and bytes or reason); at the end, the same counters. The keys, nonces and
ISNs both draw come from one seeded generator (`secrets.randbits` / `randbelow`, looked up at
call time by both).

The compiled core types its parsed packets as the wire twin's `Packet`; with
MIDDLEBOX_PURE_PYTHON=1 the wire layer is the pure one, so this file runs in the compiled
run only (test_core_twin_equal.py holds the single-path twin in both).
"""

from __future__ import annotations

import os
import random
import secrets

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import middlebox.core as core
from middlebox.core import Inject
from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, mp_config

PURE_RUN = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(PURE_RUN or core.IMPLEMENTATION != "cython",
                                reason="the compiled twin runs with the wire twin (the compiled CI run)")

ops = st.lists(st.tuples(st.sampled_from(["data", "data", "data", "lose", "dup", "gack", "gack", "gdata",
                                          "gdata", "sack", "tick"]),
                         st.integers(0, 10 ** 6)), min_size=5, max_size=60)


def _action(a):
    return type(a).__name__, getattr(a, "data", None) or getattr(a, "reason", None)


def _trace(cls, ops, v6, sack, repair, seed):
    """[(op, [actions])] of a conversation driven by `ops` through a `cls` converter, and its
    counters at the end."""
    rnd = random.Random(seed)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(secrets, "randbits", rnd.getrandbits)
        m.setattr(secrets, "randbelow", rnd.randrange)
        kw = {"repair_bytes": 40000} if repair else {}
        p = MPair(2, config=mp_config(2, **kw), v6=v6)
        p.conv = cls(p.cfg)
        p.join_sack = sack
        trace = [("start", [_action(a) for a in p.go_multipath()])]
        ups = sorted(p.joins)
        for u in ups:
            trace.append(("join", [_action(a) for a in p.join_up(u)]))
        flow = p.flow
        got = {}  # guest byte (relative) -> length delivered
        sent = {u: [] for u in ups}  # server segments on each join, for repeats
        g_rcv, g_win = flow.rcv_rel, 502

        def note(acts):
            for a in acts or []:
                if isinstance(a, Inject):
                    b = a.data
                    pkt = core.MULTIPATH.parse_packet(b)
                    if pkt.dst == p.g_bytes and pkt.payload_len:
                        got[(pkt.seq - flow.server_isn) & M32] = pkt.payload_len
            return [_action(a) for a in acts or []]

        for op, x in ops:
            j = p.joins[ups[x % len(ups)]]
            if op in ("data", "lose"):
                buf = p.j_data(j, bytes([0x30 + x % 64]) * (1 + x % 1400))
                sent[ups[x % len(ups)]].append(buf)
                acts = p.j_in(buf) if op == "data" else []
            elif op == "dup":
                old = sent[ups[x % len(ups)]]
                acts = p.j_in(old[x % len(old)]) if old else []
            elif op == "gack":
                held = g_rcv
                while held in got:
                    held += got[held]
                g_rcv = max(g_rcv, held - (x % 3) * 500 * (held - g_rcv >= 1500))
                g_win = max(1, (x // 7) % 503)
                p.g_rcv = (flow.server_isn + g_rcv) & M32
                acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=g_win))
            elif op == "gdata":
                pl = bytes([0x61 + x % 26]) * (1 + x % 1400)
                acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x18, pl, window=g_win))
                p.g_nxt = (p.g_nxt + len(pl)) & M32
            elif op == "sack":  # the server has everything of ours on this join
                j.s_rcv = p.path(ups[x % len(ups)]).snd_nxt
                p.c_dack = (p.g_nxt - p.g_isn) & M32
                acts = p.j_in(p.j_ack(j))
            else:
                acts = p.tick(0.001 + (x % 400) / 1000)
            trace.append((op, note(acts)))
        counters = {c.name: v for c, v in p.conv.counters.items() if v}
        return trace, counters


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, v6=st.booleans(), sack=st.booleans(), repair=st.booleans(), seed=st.integers(0, 2 ** 32))
def test_the_compiled_multipath_agrees_with_the_spec(ops, v6, sack, repair, seed):
    pure, pure_counters = _trace(core.REFERENCE, ops, v6, sack, repair, seed)
    twin, twin_counters = _trace(core.Converter, ops, v6, sack, repair, seed)
    assert core.Converter is not core.REFERENCE
    for k, (a, b) in enumerate(zip(pure, twin)):
        assert a == b, (k, a[0])
    assert len(pure) == len(twin)
    assert pure_counters == twin_counters
    assert pure_counters.get("JoinDataFwd", 0) or not any(op == "data" for op, _ in ops)
