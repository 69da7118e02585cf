"""Which subflow goes stale when progress stops (multipath.tick): the one whose server
stopped acking, judged by real acks only. A fill of an acked hole (_fill_acked_hole) gives
its own subflow time again, but is no progress the others are measured against."""

from __future__ import annotations

from middlebox.core.table import SubflowState as SS
from middlebox.wire import build_options, encode_tcp_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, MPair, make_packet


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


def test_a_subflow_whose_server_sacks_past_its_hole_outlives_a_join_that_went_silent():
    """The second shape of the inbound failover stall (2 % loss, captured): subflow 1's
    cumulative ACK waits at a lost segment while the server SACKs every byte after it; the
    join acked last, then its path died. Judged by cumulative ACKs alone, subflow 1 looked
    the one that stopped: it went stale and dead, and every guest resend went to the dead
    join for good. Its SACK blocks reaching higher are news of a working path: the join
    goes, subflow 1 stays."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    assert p.flow.sack_ok
    a = p.data_on(1, size=1000)  # a segment on the join; the server acks it below
    ss = (parse_packet(a).seq - j.c_isn) & M32
    sent = []  # subflow-1 segments: (start, end) relative to its ISN
    for _ in range(60):
        before = p0.snd_nxt
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            sent.append((before, p0.snd_nxt))
        if len(sent) == 3:
            break
    assert len(sent) == 3 and p0.snd_una < sent[0][0]  # (all of it unacked: the hole)
    p.now += 0.1
    p.j_in(p.j_ack(j, ack=ss + 1000))  # the join's last cumulative progress
    assert pj.acked_at == p.now
    p.data_on(1, size=1000)  # more for the join; its path dies: never acked
    # the server SACKs the last two of them on subflow 1: what came before was lost
    p.now += 0.05
    blocks = (((p0.local_isn + sent[1][0]) & M32, (p0.local_isn + sent[2][1]) & M32),)
    una = (p0.local_isn + p0.snd_una) & M32
    p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                      build_options(encode_tcp_options(sack=blocks), (p.dack(),)), b"", window=509, v6=p.v6))
    assert p0.sack_at == p.now and p0.acked_at < pj.acked_at < p0.sack_at
    states = []
    for dt in (0.35, 0.35, 0.35, 1.1):
        p.now += dt
        p.conv.tick(p.now)
        states.append([q.state for q in p.mp.paths])
    assert states[1] == [SS.ESTABLISHED, SS.STALE], states
    assert states[-1] == [SS.ESTABLISHED, SS.CLOSED], states
    # and a SACK that reaches no higher is no news (a repeat of the same blocks)
    at = p0.sack_at
    p.now += 0.01
    p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                      build_options(encode_tcp_options(sack=blocks), (p.dack(),)), b"", window=509, v6=p.v6))
    assert p0.sack_at == at
