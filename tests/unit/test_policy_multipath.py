"""The cost policy inside the converter (issue 10): joins over dearer uplinks open as backups
(MP_JOIN B bit), new upload data goes only on planned uplinks, and a replan tells the server
with MP_PRIO; bytes are accounted per uplink."""

from __future__ import annotations

import dataclasses

from middlebox.core import Inject
from middlebox.core import multipath as MP
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
