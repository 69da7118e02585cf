"""Repair inside the middlebox (issue 6's option A, `--repair-bytes`): the segments sent on an
extra subflow are kept until the server acks them, and a loss there (the server's SACK above
them, two duplicate ACKs, or two RTTs without progress) is resent from that copy, exactly as
first sent, instead of being shown to the guest, whose one congestion window would halve
for one path's loss. Bounded per flow and in all; after REPAIR_TRIES the hole is the
guest's again; the copies go when acked, when the join dies and when the flow goes."""

from __future__ import annotations

from middlebox.core import multipath as MP
from middlebox.wire import encode_tcp_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, RST, MPair, mp_config

CAP = 1 << 18


def _pair(**kw):
    p = MPair(1, config=mp_config(1, **{"repair_bytes": CAP, **kw}))
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p1 = p.mp.paths[1]
    p1.srtt = 0.01
    return p, j, p1


def _two_on_join(p, j):
    """Two 1000-byte guest segments on the join: [(relative seq, injected bytes)] x 2."""
    out = []
    for _ in range(2):
        buf = p.data_on(1, size=1000)
        out.append(((parse_packet(buf).seq - j.c_isn) & M32, buf))
    assert out[1][0] == out[0][0] + 1000
    return out


def _sack(p, j, ack_rel, blocks):
    tcp = encode_tcp_options(sack=tuple(((j.c_isn + a) & M32, (j.c_isn + b) & M32) for a, b in blocks))
    return p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ack_rel, ACK, (p.dack(),), tcp=tcp)


def _sent(acts):
    return [a.data for a in acts if getattr(a, "data", None)]


def test_segments_on_a_join_are_kept_until_acked():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    assert [r[2] for r in p1.rtx] == [b1, b2]
    assert p.mp.rtx_bytes == 2000 and p.conv.repair_held[0] == 2000
    p.j_in(p.j_ack(j, ack=s1 + 1000))
    assert [r[2] for r in p1.rtx] == [b2] and p.conv.repair_held[0] == 1000
    p.j_in(p.j_ack(j, ack=s2 + 1000))
    assert p1.rtx == [] and p.mp.rtx_bytes == 0 and p.conv.repair_held[0] == 0


def test_a_loss_the_server_sacks_around_is_resent_from_the_copy_and_not_shown_to_the_guest():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    acts = p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    assert b1 in _sent(acts) and b2 not in _sent(acts)  # the same bytes, seq and mapping
    assert p.count("JoinRepairTX") == 1
    assert "g_ack" not in p.classify(acts)
    assert MP.guest_sack(p.flow, p.mp, 4) == ()  # for the guest: still in flight
    # the server's next duplicate within the RTT: nothing again
    acts = p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    assert b1 not in _sent(acts) and p.count("JoinRepairTX") == 1 and p.count("DupAckFwd") == 0
    p.j_in(p.j_ack(j, ack=s2 + 1000))  # repaired
    assert p1.rtx == [] and p.conv.repair_held[0] == 0


def test_a_silent_tail_is_resent_by_the_clock():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    due = MP.next_deadline(p.conv)
    assert due is not None and due <= p1.progress_at + 2 * p1.srtt + 0.006
    acts = p.conv.tick(p1.progress_at + 2 * p1.srtt + 0.006)
    assert b1 in _sent(acts) and b2 in _sent(acts)  # nothing SACKed: the whole tail
    assert p.count("JoinRepairTX") == 2


def test_after_repair_tries_the_hole_is_the_guests():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    t = p.now
    assert not MP._hole_evident(p.flow, p1, s1, t)
    for _ in range(MP.REPAIR_TRIES - 1):
        t += 1.5 * p1.srtt + 0.003
        assert b1 in _sent(p.conv.tick(t))
    assert p.count("JoinRepairTX") == MP.REPAIR_TRIES
    t += 1.5 * p1.srtt + 0.003
    p.conv.tick(t)
    assert p.count("RepairGaveUp") == 1 and p.count("JoinRepairTX") == MP.REPAIR_TRIES
    assert MP._hole_evident(p.flow, p1, s1, t)  # known lost: guest_sack shows what lies above
    assert MP._repair_due(p1) == 0.0  # and the clock no longer wakes for it


def test_beyond_the_flows_cap_a_loss_goes_to_the_guest_as_before():
    for kw in ({"repair_bytes": 1500}, {"repair_total_bytes": 1500}):
        p, j, p1 = _pair(**kw)
        (s1, b1), (s2, b2) = _two_on_join(p, j)
        assert [r[2] for r in p1.rtx] == [b1] and p.count("RepairCapSkip") == 1
        p.j_in(p.j_ack(j, ack=s1 + 1000))  # b1 acked; b2 not kept
        p.now += 0.2
        acts = p.j_in(_sack(p, j, s2, [(s2 + 500, s2 + 1000)]))
        assert p.count("JoinRepairTX") == 0 and b2 not in _sent(acts)


def test_the_copies_go_with_the_join_and_with_the_flow():
    p, j, p1 = _pair()
    _two_on_join(p, j)
    assert p.conv.repair_held[0] == 2000
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))  # the server resets the join
    assert p1.rtx == [] and p.conv.repair_held[0] == 0
    p, j, p1 = _pair()
    _two_on_join(p, j)
    MP.release(p.conv, p.flow)
    assert p.conv.repair_held[0] == 0


def test_off_by_default():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    p.data_on(1, size=1000)
    assert p.mp.paths[1].rtx == [] and p.conv.repair_held[0] == 0
