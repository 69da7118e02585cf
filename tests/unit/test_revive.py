"""A multipath flow whose last subflow closes joins again over every uplink that is up
(multipath._revive), or, when no join can ever come, resets the guest visibly: before, only
an uplink coming back brought a rejoin, and a flow whose subflows died while their uplinks
stayed up kept none for good, the guest's bytes dropped ("no live subflow") until it gave
up (a random run of the hypothesis model: test_multipath_model.py::
test_subflows_dead_of_silence_beside_an_idle_join_rejoin)."""

from __future__ import annotations

from middlebox.core import multipath as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire import parse_packet

from tests.unit.test_core_harness import RST
from tests.unit.test_subflow_table import MPair


def _only_the_join_left(n_uplinks=1):
    p = MPair(n_uplinks)
    p.go_multipath()
    p.join_up(1)
    p.mp.paths[0].state = SS.CLOSED  # (subflow 1 gone before)
    for upid in range(2, n_uplinks + 1):
        p.path(upid).state = SS.CLOSED
    return p


def test_the_last_subflow_reset_by_the_server_brings_a_join_over_each_live_uplink():
    p = _only_the_join_left(2)
    j = p.joins[1]
    n = len(p.mp.paths)
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.path(1) is None or p.mp.paths[1].state is SS.CLOSED
    syns = [parse_packet(a.data) for a in acts[1:] if p.label(a.data).startswith("syn@")]
    assert sorted(s.src for s in syns) == sorted(p.addr_of(u) for u in p.cfg.uplinks), p.classify(acts)
    assert len(p.mp.paths) == n + 2 and p.count("MPJoinRejoin") == 2 and p.count("NoSubflowReset") == 0


def test_with_its_uplink_down_the_flow_waits_for_it_to_come_back():
    p = _only_the_join_left(1)
    acts = p.conv.uplink_event("up1", False, p.now)
    assert p.mp.paths[1].state is SS.CLOSED
    labels = [p.label(a.data) for a in acts if hasattr(a, "data")]
    assert labels == ["rst+tcprst@1"]  # (the dead join's RST only: no join, no reset of the guest)
    assert p.count("NoSubflowReset") == 0
    acts = p.conv.uplink_event("up1", True, p.now)  # (as before: its return rejoins)
    assert [parse_packet(a.data).src for a in acts] == [p.addr_of(p.cfg.uplinks[0])]


def test_when_no_join_can_ever_come_the_guest_is_reset(monkeypatch):
    monkeypatch.setattr(MP, "MAX_PATHS", 2)  # (subflow 1 and the join: used up)
    p = _only_the_join_left(1)
    acts = p.conv.uplink_event("up1", False, p.now)
    rsts = [parse_packet(a.data) for a in acts if p.label(a.data).startswith("g_")]
    assert rsts and all(r.flags & RST for r in rsts), p.classify(acts)
    assert rsts[0].dst == p.g_bytes
    assert p.count("NoSubflowReset") == 1 and p.flow.fastclosed
