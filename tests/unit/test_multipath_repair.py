"""Repair from a kept copy (issue 6, MULTIPATH.md option A; multipath._keep / _repair): the
segments the middlebox sends on an extra subflow are kept until that subflow acks them; the
server's first duplicate ACK there has the hole resent from the copy, byte for byte as it
first left, and the guest does not hear of the hole while that repair is under way (its one
congestion window, for every path, is not halved for one path's loss). Within a per-flow and
a global cap; a hole without a copy, or a repair that fails REPAIR_TRIES times, is the
guest's to resend as before."""

from __future__ import annotations

from middlebox.core import Inject
from middlebox.core import multipath as MP
from middlebox.wire import encode_tcp_options, parse_packet

from tests.unit.test_subflow_table import M32, MPair, mp_config


def _two_on_the_join(config=None):
    """Two guest segments (1000 bytes each) on the join of uplink 1, back to back:
    (pair, join, [(subflow seq, injected bytes)] of both). Repair on (2 MiB per flow)
    unless `config` says otherwise."""
    p = MPair(1, config=config or mp_config(1, repair_flow_bytes=2 << 20))
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    a = p.data_on(1, size=1000)
    ((labels, acts),) = p.g_send(1, 1000)
    assert "data@1" in labels, labels  # (the scheduler's burst keeps it on the join)
    b = next(x.data for x in acts[1:] if p.label(x.data) == "data@1")
    segs = [((parse_packet(s).seq - j.c_isn) & M32, s) for s in (a, b)]
    assert segs[1][0] == segs[0][0] + 1000
    # the server has everything before A: subflow 1 acked, the DATA_ACK at A (A's subflow,
    # the join, holds it)
    p.c_dack = (p.g_nxt - 2000 - p.g_isn) & M32
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, 0x10, (p.dack(),)))
    assert MP._holder(p.mp) == 1
    return p, j, segs


def _dup(p, j, una: int, sacked: tuple = ()) -> bytes:
    """The server's duplicate ACK on the join at relative subflow seq `una`, SACKing `sacked`
    ((start, end) relative)."""
    blocks = tuple(((j.c_isn + s) & M32, (j.c_isn + e) & M32) for s, e in sacked)
    tcp = encode_tcp_options(sack=blocks) if blocks else b""
    return p.j_packet(j, j.s_isn + j.s_nxt, (j.c_isn + una) & M32, 0x10, (p.dack(),), tcp=tcp)


def test_a_loss_on_a_join_is_resent_from_the_copy_and_the_guest_hears_nothing():
    p, j, ((ss_a, seg_a), (ss_b, _)) = _two_on_the_join()
    assert p.conv.kept_total == p.mp.kept > 0
    acts = p.j_in(_dup(p, j, ss_a, ((ss_b, ss_b + 1000),)))  # A lost, B arrived
    resent = [a.data for a in acts if isinstance(a, Inject)]
    assert resent == [seg_a]  # exactly as it first left: seq, mapping, payload
    assert p.count("RepairTX") == 1 and p.count("RepairHidden") == 1
    assert p.count("DupAckFwd") == 0 and p.count("SackNewsFwd") == 0
    # more duplicates within the repair's round trips: nothing more, still nothing to the guest
    acts = p.j_in(_dup(p, j, ss_a, ((ss_b, ss_b + 1000),)))
    assert [a for a in acts if isinstance(a, Inject)] == [] and p.count("RepairHidden") == 2
    # the hole filled: the join acks both, the copies are forgotten, the guest hears the ACK
    p.c_dack += 2000
    acts = p.j_in(p.j_ack(j, ack=ss_b + 1000))
    assert p.mp.paths[1].kept == {} and p.conv.kept_total == 0 and p.mp.kept == 0
    assert "g_ack" in p.classify(acts)


def test_a_repair_that_fails_is_tried_again_then_left_to_the_guest():
    p, j, ((ss_a, seg_a), (ss_b, _)) = _two_on_the_join()
    sent = 0
    for _ in range(MP.REPAIR_TRIES):
        acts = p.j_in(_dup(p, j, ss_a, ((ss_b, ss_b + 1000),)))
        sent += sum(1 for a in acts if isinstance(a, Inject) and a.data == seg_a)
        p.now += 1.0  # many round trips: the repair was lost
    assert sent == MP.REPAIR_TRIES and p.count("RepairTX") == MP.REPAIR_TRIES
    acts = p.j_in(_dup(p, j, ss_a, ((ss_b, ss_b + 1000),)))
    assert not [a for a in acts if isinstance(a, Inject) and a.data == seg_a]
    assert p.count("DupAckFwd") == 1  # the guest's to resend now, as without a copy
    assert "g_ack" in p.classify(acts)


def test_without_a_copy_the_guest_is_told_at_once():
    p, j, ((ss_a, _), (ss_b, _)) = _two_on_the_join(mp_config(1, repair_flow_bytes=0))
    assert p.conv.kept_total == 0 and p.count("RepairCapHit") == 0  # off: nothing kept, no cap
    acts = p.j_in(_dup(p, j, ss_a, ((ss_b, ss_b + 1000),)))
    assert p.count("RepairTX") == 0 and p.count("DupAckFwd") == 1 and "g_ack" in p.classify(acts)


def test_the_per_flow_cap_bounds_what_is_kept():
    one = 1100  # room for one segment (1000 bytes of payload and its headers), not two
    p, j, ((ss_a, seg_a), (ss_b, seg_b)) = _two_on_the_join(mp_config(1, repair_flow_bytes=one))
    assert p.mp.kept == len(seg_a) <= one and p.count("RepairCapHit") >= 1
    assert list(p.mp.paths[1].kept) == [ss_a]
    # B lost: it has no copy, the guest resends it
    p.j_in(p.j_ack(j, ack=ss_a + 1000))
    assert p.mp.kept == 0
    acts = p.j_in(_dup(p, j, ss_b))
    assert p.count("RepairTX") == 0 and p.count("DupAckFwd") == 1 and "g_ack" in p.classify(acts)


def test_the_global_cap_bounds_every_flow_together():
    p, j, ((ss_a, seg_a), _) = _two_on_the_join(mp_config(1, repair_flow_bytes=2 << 20, repair_total_bytes=1100))
    assert p.conv.kept_total == len(seg_a) and p.count("RepairCapHit") >= 1


def test_off_by_default():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    p.data_on(1, size=1000)
    assert p.conv.config.repair_flow_bytes == 0 and p.conv.kept_total == 0 and p.count("RepairCapHit") == 0


def test_copies_are_freed_with_the_flow():
    p, j, _ = _two_on_the_join()
    assert p.conv.kept_total > 0
    MP.release(p.conv, p.flow)
    assert p.conv.kept_total == 0


# -- the run map nearly full (found measuring repair: multipath.send, RUNS_SPARE) ---------------


def test_a_nearly_full_run_map_cuts_super_packets_and_never_drops_new_bytes(monkeypatch):
    """GSO super-packets on subflow 1 each get a whole-mapping run, which takes no merge; a
    full map whose tail was one dropped the guest's next new bytes (RunMapDrop: RTOs, 2 %
    loss uploads at 10-40 Mbit/s on the netlink backend). Nearly full, super-packets go out
    cut (per-segment mappings, RunMapNearFull), so the tail run always takes the next bytes."""
    from middlebox.core import Drop

    monkeypatch.setattr(MP, "MAX_RUNS", 6)  # (full with a whole-mapping run at its tail)
    monkeypatch.setattr(MP, "RUNS_SPARE", 3)
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mss = p.conv._mss_limit[4] - 12
    for labels, acts in p.g_send(120, 3 * mss):  # no server ACK: no run is ever trimmed
        assert "drop" != labels[0] or len(labels) > 1, labels  # never dropped without being sent
        if isinstance(acts[0], Drop):
            sent = [parse_packet(a.data) for a in acts[1:] if isinstance(a, Inject)]
            assert sent and all(s.payload_len <= mss for s in sent), labels
    assert p.count("RunMapDrop") == 0 and p.count("RunMapNearFull") >= 1
    assert len(p.mp.runs) <= 6 and p.mp.runs[-1][4] is None
    assert p.mp.snd_nxt == p.g_nxt - p.g_isn  # every byte has a run
