"""The cost policy inside the converter (issue 10): joins over dearer uplinks open as backups
(MP_JOIN B bit), new upload data goes only on planned uplinks, and a replan tells the server
with MP_PRIO; bytes are accounted per uplink."""

from __future__ import annotations

import dataclasses

import pytest

from middlebox.core import Direction, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.policy import Target
from middlebox.wire import MpPrio, parse_packet

from tests.unit.test_subflow_table import UPLINKS, MPair, mp_config, wire_check

COSTS = (1.0, 2.0, 6.0)


def _pair(target=None):
    ups = tuple(dataclasses.replace(u, cost=c) for u, c in zip(UPLINKS, COSTS))
    cfg = dataclasses.replace(mp_config(3), uplinks=ups, policy="cost", target=target)
    p = MPair(3, config=cfg)
    acts = p.go_multipath()
    for a in acts:
        if isinstance(a, Inject):
            _, _, (o,) = wire_check(a.data, True)
            up = next(u for u in ups if p.addr_of(u) == parse_packet(a.data).src)
            assert o.backup == (up.id != 1), (up.id, o)  # only the cheapest is not a backup
    for u in (1, 2, 3):
        p.join_up(u)
    return p


def test_upload_goes_only_on_the_planned_uplink():
    p = _pair()
    assert p.mp.plan == {1}
    seen = set()
    for labels, _ in p.g_send(200, 1000):
        seen.update(l for l in labels if l.startswith("data@"))
    assert seen <= {"data@0", "data@1"} and "data@1" in seen  # (0: subflow 1, uplink unknown)


def _prios(actions):
    out = {}
    for a in actions:
        if isinstance(a, Inject):
            pkt, _, mp = wire_check(a.data, True)
            for o in mp:
                if type(o) is MpPrio:
                    out[pkt.src] = o.backup
    return out


def test_replan_adds_the_next_cheapest_and_says_so_with_mp_prio():
    p = _pair()
    path1 = p.path(1)
    path1.rate = 50e6 / 8  # the cheapest delivers 50 Mbit/s; the target is 2x that
    p.mp.plan_at -= 10
    assert not _prios(p.tick(MP.PLAN_EVERY + 0.01)) and p.mp.plan == {1}  # short: the clock starts
    acts = p.tick(1.0)
    assert p.mp.plan == {1, 2}
    assert _prios(acts) == {p.addr_of(UPLINKS[1]): False} and p.count("MpPrioTX") == 1
    # delivering the target with both: it stays; later the cheap one alone is plenty: dropped
    p.path(2).rate = 50e6 / 8
    p.mp.plan_at -= 10
    assert not _prios(p.tick(MP.PLAN_EVERY + 0.01)) and p.mp.plan == {1, 2}
    q = _pair(target=Target(rate=20e6 / 8))
    q.path(1).rate = 50e6 / 8
    q.path(2).rate = 1.0
    q.mp.plan = frozenset({1, 2})
    q.path(2).backup = False
    q.mp.plan_at -= 10
    acts = q.tick(MP.PLAN_EVERY + 0.01)
    assert q.mp.plan == {1} and _prios(acts) == {q.addr_of(UPLINKS[1]): True}


def test_a_planned_uplink_going_down_is_replaced_at_once():
    p = _pair()
    p.conv.uplink_event("up1", False, p.now)
    acts = p.tick(MP.PLAN_EVERY + 0.01)
    assert p.mp.plan == {2}
    assert _prios(acts) == {p.addr_of(UPLINKS[1]): False}


def test_flow_view_names_each_subflows_uplink_and_backup_flag():
    p = _pair()
    p.flow.sf1_uplink = 1
    view = {v["index"]: v for v in MP.flow_view(p.flow)}
    assert view[0]["uplink_id"] == 1 and view[1]["uplink_id"] == 1 and view[3]["uplink_id"] == 3
    assert [view[i]["backup"] for i in (1, 2, 3)] == [False, True, True]
    assert "key" not in str(view).lower()


def test_a_1_5x_target_caps_the_marginal_uplinks_upload():
    """At 1.5x the second-cheapest uplink is planned but capped at what the target needs of it
    (policy.marginal_cap): new bytes go there only while its token bucket holds them, the
    rest on the cheapest, never none; at 2x the cap is above what it delivers."""
    p = _pair(target=Target(multiple=1.5))
    p.flow.sf1_uplink = 1  # subflow 1 leaves by the cheapest uplink too
    p.mp.paths[0].rate = p.path(1).rate = 25e6 / 8
    p.path(2).rate = 50e6 / 8
    p.mp.plan = frozenset({1, 2})
    p.path(2).backup = False
    p.mp.plan_at -= 10
    p.tick(MP.PLAN_EVERY + 0.01)
    assert p.mp.plan == {1, 2}
    cap = p.path(2).cap
    assert cap == pytest.approx((75e6 - 50e6) / 8 * 1.15)
    assert p.path(1).cap == p.path(3).cap == 0.0
    # the scheduler for 2 s of a guest sending 100 Mbit/s in 10 KB segments; each subflow
    # delivers at its link's rate (uplink 1: 50 Mbit/s shared by subflow 1 and its join)
    deliver = {0: 25e6 / 8, 1: 25e6 / 8, 2: 50e6 / 8, 3: 50e6 / 8}
    mp = p.mp
    for q in mp.paths:
        q.snd_wnd = 1 << 30  # (no window limits: the cap is what is tested)
    seg = 10000
    dt = seg / (100e6 / 8)
    sent = [0, 0, 0, 0]
    for _ in range(2500):
        p.now += dt
        k = MP.pick(mp, seg, p.conv.counters, p.now)
        mp.paths[k].snd_nxt += seg
        sent[k] += seg
        for q in mp.paths:
            q.snd_una = min(q.snd_nxt, q.snd_una + int(deliver[q.index] * dt))
    rate2 = sent[2] / (2500 * dt)
    assert cap * 0.8 <= rate2 <= cap + 131072 / (2500 * dt), (sent, rate2, cap)
    assert sent[0] + sent[1] > sent[2] and sent[3] == 0 and p.count("PolicyCapSkip") > 0
