"""Repair inside the middlebox (issue 6's option A, `--repair-bytes`): the segments sent on an
extra subflow are kept until the server acks them, and a loss there (the server's SACK above
them, two duplicate ACKs, or two RTTs without progress) is resent from that copy, exactly as
first sent, instead of being shown to the guest, whose one congestion window would halve
for one path's loss. Bounded per flow and in all; after REPAIR_TRIES the hole is the
guest's again; the copies go when acked, when the join dies and when the flow goes."""

from __future__ import annotations

from middlebox.core import Inject
from middlebox.core import MULTIPATH as MP
from middlebox.wire import Dss, encode_tcp_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, RST, MPair, mp_config, wire_check

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


def _resent(p, j, acts):
    """The join data segments among `acts`: [(relative seq, payload, DSS mapping)]."""
    out = []
    for buf in _sent(acts):
        if p.label(buf) == "data@1":
            pkt, _, mp = wire_check(buf, True)
            (dss,) = [o for o in mp if isinstance(o, Dss)]
            out.append(((pkt.seq - j.c_isn) & M32, buf[pkt.payload_off:pkt.length],
                        (dss.data_seq, dss.subflow_seq, dss.data_len, dss.csum)))
    return out


def _as_sent(p, j, buf):
    (x,) = _resent(p, j, [Inject(buf)])
    return x


def test_segments_on_a_join_are_kept_until_acked():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    assert [r[0] for r in p1.rtx] == [s1, s2]
    kept = 2 * (1000 + MP.REPAIR_ENTRY)  # payload and what keeping it costs
    assert p.mp.rtx_bytes == kept and p.conv.repair_held[0] == kept
    p.j_in(p.j_ack(j, ack=s1 + 1000))
    assert [r[0] for r in p1.rtx] == [s2] and p.conv.repair_held[0] == kept // 2
    p.j_in(p.j_ack(j, ack=s2 + 1000))
    assert p1.rtx == [] and p.mp.rtx_bytes == 0 and p.conv.repair_held[0] == 0


def test_a_loss_the_server_sacks_around_is_resent_from_the_copy_and_not_shown_to_the_guest():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    acts = p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    assert _resent(p, j, acts) == [_as_sent(p, j, b1)]  # the same bytes, seq and mapping
    assert p.count("JoinRepairTX") == 1
    # with the current ack (a copy's old ack can fall below what Linux takes, RFC 5961)
    (rp,) = [parse_packet(b) for b in _sent(acts) if p.label(b) == "data@1"]
    assert rp.ack == (j.s_isn + p1.rcv_nxt) & M32
    assert "g_ack" not in p.classify(acts)
    assert MP.guest_sack(p.flow, p.mp, 4) == ()  # for the guest: still in flight
    # the server's next duplicate within the RTT: nothing again
    acts = p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    assert _resent(p, j, acts) == [] and p.count("JoinRepairTX") == 1 and p.count("DupAckFwd") == 0
    p.j_in(p.j_ack(j, ack=s2 + 1000))  # repaired
    assert p1.rtx == [] and p.conv.repair_held[0] == 0


def test_a_silent_tail_is_resent_by_the_clock():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    due = MP.next_deadline(p.conv)
    assert due is not None and due <= p1.progress_at + 2 * p1.srtt + 0.006
    acts = p.conv.tick(p1.progress_at + 2 * p1.srtt + 0.006)
    assert _resent(p, j, acts) == [_as_sent(p, j, b1), _as_sent(p, j, b2)]  # nothing SACKed: the tail
    assert p.count("JoinRepairTX") == 2


def test_after_repair_tries_the_hole_is_the_guests():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    t = p.now
    assert not MP._hole_evident(p.flow, p1, s1, t)
    for _ in range(MP.REPAIR_TRIES - 1):
        t += 1.5 * p1.srtt + 0.003
        assert _resent(p, j, p.conv.tick(t)) == [_as_sent(p, j, b1)]
    assert p.count("JoinRepairTX") == MP.REPAIR_TRIES
    t += 1.5 * p1.srtt + 0.003
    acts = p.conv.tick(t)
    assert p.count("RepairGaveUp") == 1 and p.count("JoinRepairTX") == MP.REPAIR_TRIES
    assert _resent(p, j, acts) == []
    assert MP._hole_evident(p.flow, p1, s1, t)  # known lost: guest_sack shows what lies above
    assert MP._repair_due(p1) == 0.0  # and the clock no longer wakes for it


def test_beyond_the_flows_cap_a_loss_goes_to_the_guest_as_before():
    for kw in ({"repair_bytes": 1800}, {"repair_total_bytes": 1800}):
        p, j, p1 = _pair(**kw)
        (s1, b1), (s2, b2) = _two_on_join(p, j)
        assert [r[0] for r in p1.rtx] == [s1] and p.count("RepairCapSkip") == 1
        p.j_in(p.j_ack(j, ack=s1 + 1000))  # b1 acked; b2 not kept
        p.now += 0.2
        acts = p.j_in(_sack(p, j, s2, [(s2 + 500, s2 + 1000)]))
        assert p.count("JoinRepairTX") == 0 and _resent(p, j, acts) == []


def test_the_copies_go_with_the_join_and_with_the_flow():
    p, j, p1 = _pair()
    _two_on_join(p, j)
    assert p.conv.repair_held[0] == 2 * (1000 + MP.REPAIR_ENTRY)
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


def _lost_eight(p, j):
    """12 segments on the join, the first 8 lost, the last 4 SACKed: their seqs."""
    segs = [(parse_packet(p.data_on(1, size=1000)).seq - j.c_isn) & M32 for _ in range(12)]
    assert segs == [segs[0] + 1000 * k for k in range(12)]
    return segs[0]


def test_partial_acks_of_a_repair_resend_nothing_in_flight():
    """(Review: each partial ACK of a repair counted as a new hole and resent up to 8
    segments already on their way; a server acking a byte at a time drew 1.6 MB.)"""
    p, j, p1 = _pair()
    s0 = _lost_eight(p, j)
    acts = p.j_in(_sack(p, j, s0, [(s0 + 8000, s0 + 12000)]))
    assert [x[0] for x in _resent(p, j, acts)] == [s0 + 1000 * k for k in range(8)]
    for k in range(1, 8):  # the repaired segments acked one by one, the SACK block above
        assert _resent(p, j, p.j_in(_sack(p, j, s0 + 1000 * k, [(s0 + 8000, s0 + 12000)]))) == []
    for k in range(1, 400):  # then a byte at a time (0.4 s): progress, so nothing is resent
        assert _resent(p, j, p.j_in(_sack(p, j, s0 + 7000 + k, [(s0 + 8000, s0 + 12000)]))) == []
    assert p.count("JoinRepairTX") == 8


def test_a_hole_given_up_is_told_to_the_guest_at_once():
    """(Review: after the clock gave up, nobody told the guest; it waited for its RTO.)"""
    p, j, p1 = _pair()
    _two_on_join(p, j)
    # three more segments go on subflow 1, which the server acks: the join's two are a hole
    # below bytes the server has (blocks the guest would be shown once the hole is known lost)
    p.mp.burst_left = 0
    p1.rate, p.mp.paths[0].rate = 1.0, 1e9
    assert all("data@1" not in labels for labels, _ in p.g_send(3, 1000))
    p0 = p.mp.paths[0]
    hole = min(r[0] for r in p.mp.runs if r[2] == 1)
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (Dss(data_ack=(p.idsn_c + hole) & M32),)))
    t = p.now
    told_at = None
    for _ in range(80):
        t += 0.005
        labels = p.classify(p.conv.tick(t))
        if "g_ack" in labels:
            told_at = t
            break
        assert p.count("RepairGaveUp") == 0, "given up without telling the guest"
    assert p.count("RepairGaveUp") == 1 and p.count("JoinRepairTX") == 2 * MP.REPAIR_TRIES
    assert told_at is not None and MP.guest_sack(p.flow, p.mp, 4, t)


def test_a_hole_on_a_join_that_is_not_established_is_not_hidden():
    p, j, p1 = _pair()
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    p.j_in(_sack(p, j, s1, [(s2, s2 + 1000)]))
    assert not MP._hole_evident(p.flow, p1, s1, p.now)
    p1.state = MP.SS.STALE
    assert MP._hole_evident(p.flow, p1, s1, p.now) and MP._repair_due(p1) == 0.0
    assert MP._repair(p.conv, p.flow, p.mp, p1, p.now + 1.0) == []


def test_the_clock_does_not_wake_for_bytes_it_cannot_repair():
    """(Review: bytes at snd_una not kept, later ones kept: the deadline stayed in the past
    and the daemon ticked every millisecond.)"""
    p, j, p1 = _pair(repair_bytes=1000 + MP.REPAIR_ENTRY)
    (s1, b1), (s2, b2) = _two_on_join(p, j)
    assert [r[0] for r in p1.rtx] == [s1]
    p.j_in(p.j_ack(j, ack=s1 + 1000))  # the kept one acked; the next one was not kept
    assert p1.rtx == []
    (s3, b3), _ = _two_on_join(p, j)[:1] * 2
    assert p1.rtx and p1.rtx[0][0] > p1.snd_una
    assert MP._repair_due(p1) == 0.0
