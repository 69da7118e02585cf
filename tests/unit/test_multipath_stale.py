"""Which subflow goes stale when progress stops (multipath.tick): the one whose server
stopped acking, judged by real acks only. A fill of an acked hole (_fill_acked_hole) gives
its own subflow time again, but is no progress the others are measured against."""

from __future__ import annotations

from middlebox.core.table import SubflowState as SS
from middlebox.wire import parse_packet

from tests.unit.test_subflow_table import M32, MPair


def test_a_fill_on_a_dead_join_does_not_make_subflow_1_stale():
    """CI's intermittent "join path for good" stall (inbound, test_inbound_kernel.py), here
    as an upload: the join's path dies with bytes out there that the server has at the data
    level; subflow 1 then waits with bytes out and no ack (its window shut behind the
    join's hole). The join's hole is filled (AckedHoleFilled), which restarted its progress
    clock; compared with that, subflow 1 looked the one that stopped: it went stale and
    dead, the dead join stayed, the transfer stalled for good (the flows view: subflow 0
    CLOSED, subflow 1 ESTABLISHED). Subflow 1's ack is the newer one: the join goes."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    a = p.data_on(1, size=1000)  # bytes on the join; its subflow ack never comes (path dead)
    assert (parse_packet(a).seq - j.c_isn) & M32
    # the server has them at the data level, and acks subflow 1 (its last real progress)
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, 0x10, (p.dack(),)))
    for _ in range(40):  # more guest bytes on subflow 1, never acked
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            break
    assert p0.snd_nxt > p0.snd_una and p.mp.paths[1].snd_nxt > p.mp.paths[1].snd_una
    states = []
    for dt in (0.35, 0.35, 0.35, 1.1):
        p.now += dt
        p.conv.tick(p.now)
        states.append([q.state for q in p.mp.paths])
    assert p.count("AckedHoleFilled") == 1  # (the fill happened: the case in question)
    assert states[1] == [SS.ESTABLISHED, SS.STALE], states
    assert states[-1] == [SS.ESTABLISHED, SS.CLOSED], states
