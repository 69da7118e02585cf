"""The guest's resend of the data-level head, when the head waits on its only home behind a
subflow hole whose bytes the guest will not resend before the head is acked, goes into that
hole as a new mapping (multipath._head_hole), and the hole's DSNs take the head's old subflow
seqs: every unacked subflow seq keeps a run (with the hole's DSNs homed on a closed path,
the head's old copy lost left a range nobody would resend: a review's schedules stalled).
Found as a deadlock by the hypothesis model (test_multipath_model.py::
test_head_reinjected_behind_a_hole_beyond_the_guests_resends_does_not_stall); here each guard
on its own, on a hand-made state:

    DSN   6..206   (the head, reinjected after subflow 1 closed)  join 2, ssn 2841..3041
    DSN 206..3046                                                 join 2, ssn    1..2841

join 2's snd_una is 1 (ssn 1.. lost, the server shows it by duplicate ACKs), subflow 1 closed.
"""

from __future__ import annotations

from middlebox.core import Direction, Drop, Inject, Rewrite
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import State as S
from middlebox.core.table import SubflowState as SS
from middlebox.wire import Dss

from tests.unit.test_checksum_segment_maps import _maps
from tests.unit.test_resends_into_holes import _pair
from tests.unit.test_subflow_table import wire_check


def _state():
    p = _pair()
    mp = p.mp
    for q in mp.paths:
        assert q.snd_nxt == q.snd_una
    sf1, j1, j2 = mp.paths
    sf1.state = SS.CLOSED
    j1.state = SS.CLOSED
    mp.runs = [[6, 206, 2, 2841, None], [206, 3046, 2, 1, None]]
    mp.snd_nxt = 3046
    j2.snd_una, j2.snd_nxt = 1, 3041
    j2.dups = 2  # the server's duplicate ACKs at snd_una: its loss shown
    assert mp.data_ack == 6
    return p, mp, j2


def _hole(p, mp, j2, end=206, avail=200):
    return MP._head_hole(p.flow, mp, j2, 2841, avail, end, p.now, 1400)[:2]


def test_the_head_goes_into_the_hole_and_the_holes_dsns_to_its_old_place():
    p, mp, j2 = _state()
    assert _hole(p, mp, j2) == (200, 206)
    # end to end: the guest resends the head (its RTO)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    body = bytes(range(200))
    acts = p.conv.handle(p.g_data(body, seq=s0), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop) and p.count("HeadIntoHole") == 1
    ((pkt, payload, dss),) = _maps(p, acts[1:])
    assert payload == body
    assert (dss.subflow_seq, dss.data_len) == (1, 200)  # at the hole: the join's snd_una
    assert (dss.data_seq - p.flow.local_idsn) & MP.M64 == 6  # a new mapping of the head
    assert (pkt.seq - j2.local_isn) & 0xFFFFFFFF == 1
    # the run map: the head at ssn 1, the hole's DSNs at the head's old seqs, the rest kept
    assert [r[:4] for r in mp.runs] == [[6, 206, 2, 1], [206, 406, 2, 2841], [406, 3046, 2, 201]]
    assert mp.unsure == [[206, 406]]
    # the server SACKs all above ssn 1 (the head's old copy at 2841 arrived): the guest is not
    # told of DSNs 206..406 (at 2841 the server holds the head's bytes, not theirs), but of
    # those above (nothing was named above them before: a guest whose resend of the head was
    # lost again had no SACK for its RACK to find that by, and waited a backed-off RTO)
    j2.sacked = ((201, 3041),)
    ((a, b),) = MP.guest_sack(p.flow, mp, 4, p.now)
    assert ((a - p.flow.guest_isn) & 0xFFFFFFFF, (b - p.flow.guest_isn) & 0xFFFFFFFF) == (406, 3046)
    mp.unsure = []  # (without the mark it would name them held)
    ((a, _),) = MP.guest_sack(p.flow, mp, 4, p.now)
    assert (a - p.flow.guest_isn) & 0xFFFFFFFF == 206


def test_the_head_stops_at_the_servers_first_sack_block():
    p, mp, j2 = _state()
    j2.sacked = ((101, 2841),)
    assert _hole(p, mp, j2) == (100, 206)


def test_not_when_the_guest_resends_the_holes_bytes_with_the_head():
    p, mp, j2 = _state()
    assert _hole(p, mp, j2, end=406, avail=200)[0] == 0  # (the segment reaches DSN 206: the hole)


def test_not_with_dss_checksums():
    """Linux sums a mapping from the bytes it reads on: a copy whose start the other took
    would fail its checksum (DataCsumErr)."""
    p, mp, j2 = _state()
    p.flow.checksum = True
    assert _hole(p, mp, j2)[0] == 0


def _csum_head_resend(p):
    p.flow.checksum = True
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    return p.conv.handle(p.g_data(bytes(range(200)), seq=s0), Direction.OUT, p.now)


def test_with_dss_checksums_the_only_live_subflow_holding_the_head_behind_its_hole_is_reset():
    """No swap with checksums (a fill is safe only if every copy of the hole's bytes has its
    range, which the run map cannot tell): the only live join is reset instead (MP_TCPRST)
    and joins open again; the head's resend, its home closed, goes to the next join."""
    p, mp, j2 = _state()
    acts = _csum_head_resend(p)
    assert p.count("CsumStuckReset") == 1 and p.count("HeadIntoHole") == 0
    assert j2.state is SS.CLOSED and p.count("MPJoinRejoin") >= 1
    assert any(isinstance(a, Inject) and wire_check(a.data, True)[0].flags & 0x04 for a in acts)  # (the RST)
    assert mp.runs[0][:3] == [6, 206, 2]  # (the head's home is the closed join: reinjected when resent)


def test_with_dss_checksums_the_head_goes_to_another_live_subflow_and_the_stuck_one_is_reset():
    """Stop 46: with join 1 alive beside it, the head's resend went in place behind join 2's
    hole for good ("the stale and dead clocks decide", and they never fired: the server
    SACKed all after the hole). It goes to join 1 as a new mapping now, join 2 is reset as if
    its link died (its other bytes reinjected as the guest resends them) and a join opens
    again over its uplink."""
    p, mp, j2 = _state()
    j1 = mp.paths[1]
    j1.state = SS.ESTABLISHED  # (alive, idle)
    j2.sacked = ((201, 3041),)
    up2 = j2.uplink
    acts = _csum_head_resend(p)
    assert p.count("CsumHeadReinjected") == 1 and p.count("CsumStuckReset") == 1
    assert mp.runs[0][:4] == [6, 206, 1, 1]  # (the head: a new mapping at join 1's snd_nxt)
    assert j1.snd_nxt == 201 and j2.state is SS.CLOSED
    heads = []
    for a in acts:
        if isinstance(a, Inject):
            pkt, _, mopts = wire_check(a.data, True)
            if pkt.payload_len and pkt.sport == j1.lport:
                (dss,) = [o for o in mopts if isinstance(o, Dss)]
                heads.append((dss.data_seq - p.flow.local_idsn) & MP.M64)
    assert heads == [6]
    assert any(isinstance(a, Inject) and wire_check(a.data, True)[0].flags & 0x04 for a in acts)  # (join 2's RST)
    assert p.count("MPJoinRejoin") == 1 and mp.paths[-1].uplink is up2 and mp.paths[-1].state is SS.SYN_SENT


def test_with_dss_checksums_no_reset_while_another_subflow_lives_but_cannot_take_the_head():
    p, mp, j2 = _state()
    mp.paths[1].state = SS.STALE  # (alive, not established: the stale and dead clocks decide)
    _csum_head_resend(p)
    assert p.count("CsumStuckReset") == 0 and j2.state is SS.ESTABLISHED


def test_with_dss_checksums_no_reset_when_no_join_can_come():
    p, mp, j2 = _state()
    for up in p.conv.config.uplinks:
        p.conv.uplink_up[up.name] = False
    _csum_head_resend(p)
    assert p.count("CsumStuckReset") == 0 and j2.state is SS.ESTABLISHED


def test_unsure_ranges_merge_and_never_refuse_a_head():
    """A chain of heads into one long hole adds adjacent ranges: merged (refused at the ninth,
    the deadlock was back: review of a34025a); beyond MAX_UNSURE, the hull."""
    p, mp, j2 = _state()
    for i in range(12):
        MP._unsure_add(mp, 1000 + 100 * i, 1100 + 100 * i)
    assert mp.unsure == [[1000, 2200]]
    added = [(1000, 2200)]
    for i in range(3 * MP.MAX_UNSURE):
        MP._unsure_add(mp, 3000 + 100 * i, 3050 + 100 * i)  # (apart)
        added.append((3000 + 100 * i, 3050 + 100 * i))
        assert len(mp.unsure) <= MP.MAX_UNSURE and mp.unsure[0][0] == 1000
        assert all(any(u[0] <= a and b <= u[1] for u in mp.unsure) for a, b in added)
    mp.data_ack = 6000
    MP._unsure_add(mp, 6000, 6100)  # (the ones the data level passed go)
    assert mp.unsure == [[6000, 6100]]


def test_the_holes_dsns_moved_may_reach_the_end_and_the_fin_on_them_goes_as_a_new_mapping():
    """Stopped one byte short of the end (review of a34025a: the guest's FIN riding on them
    went as a duplicate at the head's old seqs), the head's last byte waited behind the
    hole's last, which a window-limited guest had sent last: a deadlock (inbound failover
    captures). They may reach the end now; the FIN on a resend of them, acked at their new
    place, goes out as a new mapping with the DATA_FIN."""
    p, mp, j2 = _state()
    mp.runs[1][1] = mp.snd_nxt = 207  # (the hole's run ends the stream: DSN 206..207)
    assert _hole(p, mp, j2) == (1, 206)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    assert p.count("HeadIntoHole") == 1
    assert [r[:4] for r in mp.runs] == [[6, 7, 2, 1], [7, 206, 2, 2842], [206, 207, 2, 2841]]
    assert mp.unsure == [[206, 207]]
    j2.snd_una = 3041  # (the head's old copy at 2841.. reached the server: acked there)
    acts = p.conv.handle(p.g_data(bytes(1), seq=(s0 + 200) & 0xFFFFFFFF, fin=True), Direction.OUT, p.now)
    ((_, _, dss),) = _maps(p, acts[1:])
    assert (dss.subflow_seq, (dss.data_seq - p.flow.local_idsn) & MP.M64) == (3041, 206)
    assert dss.data_fin and dss.data_len == 2 and p.count("UnsureResent") == 1


def test_not_when_the_run_map_has_no_room_for_the_swap():
    p, mp, j2 = _state()
    mp.runs[1:] = [[206 + 10 * i, 216 + 10 * i, 2, 1 + 10 * i, None] for i in range(MP.MAX_RUNS - 4)]
    assert _hole(p, mp, j2)[0] == 0


def test_not_inside_a_mapping_over_several_segments_past_its_start():
    """The server took the mapping's first bytes in order: it has begun that mapping and
    takes no other inside it (DSSNotMatching)."""
    p, mp, j2 = _state()
    mp.runs[1:] = [[206, 3046, 2, 1, (206 - 1420, -1419, 4260, None, False)]]  # (began at ssn -1419)
    assert _hole(p, mp, j2)[0] == 0


def test_at_the_start_of_a_mapping_over_several_segments_the_head_goes_in():
    """A whole super-packet sent in place (one mapping) and lost at once: the server holds none
    of it in order, so a new mapping may go at its start; the rest keeps the mapping (Linux
    reads on from the next segment under it: a mapping may start before the bytes read). It
    was refused, and the guest resent only the head, a segment per RTO, for good (netlink
    failover captures)."""
    p, mp, j2 = _state()
    m = (206, 1, 2840, None, False)
    mp.runs[1][4] = m
    assert _hole(p, mp, j2) == (200, 206)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    assert p.count("HeadIntoHole") == 1
    ((pkt, _, dss),) = _maps(p, acts[1:])
    assert (dss.subflow_seq, dss.data_len) == (1, 200)
    assert [r[:4] for r in mp.runs] == [[6, 206, 2, 1], [206, 406, 2, 2841], [406, 3046, 2, 201]]
    assert mp.runs[2][4] is m and mp.runs[1][4] is None  # (the rest keeps its mapping)
    # the server acks the head there: the next head goes into the rest of that hole too (it
    # read the first under the head's own mapping; refused, the next head waited behind the
    # rest for good, a segment per RTO; review of c335069)
    j2.snd_una = 201
    mp.data_ack = 206
    j2.dups = 2
    assert MP._head_hole(p.flow, mp, j2, 2841, 200, 406, p.now, 1400)[:2] == (200, 406)
    j2.fill_m = None  # (had the server's ACK not come from our fill: refused, as inside m)
    assert MP._head_hole(p.flow, mp, j2, 2841, 200, 406, p.now, 1400)[0] == 0


def test_not_while_the_hole_is_not_known_lost():
    p, mp, j2 = _state()
    j2.dups = 0
    j2.progress_at = p.now  # (and not overdue either)
    assert _hole(p, mp, j2)[0] == 0


def test_not_when_the_hole_is_data_acked():
    """The server has those bytes from another subflow: the zero filler's case
    (_fill_acked_hole), not this one."""
    p, mp, j2 = _state()
    mp.data_ack = 250  # (DSN 206.. came on another subflow; the head, 250, is at ssn 45)
    assert MP._head_hole(p.flow, mp, j2, 45, 50, 300, p.now, 1400)[0] == 0


# -- the head reinjected (its home closed) goes into the hole at once --------------------------
#
# Found in captures of an inbound failover stall (test_inbound_kernel.py, the join's path down
# for good, 2 % loss on the other): the head, reinjected from the dead join, went to the tail
# of subflow 1 behind its hole and waited there for the guest's next RTO (then _head_hole); its
# next head, resent at once on the ACK of that fill, waited behind the next hole for the RTO
# after; and the hole's DSNs the swap had moved to acked seqs were dropped as acked when the
# guest resent them before they were the head, then waited a backed-off RTO (15 s). Each RTO
# moved one segment: the download stalled past the client's timeout.


def _reinject_state():
    """The head (DSN 6..206) homed on closed subflow 1; join 2's hole at ssn 1 holds DSNs
    206.., its loss shown by duplicate ACKs."""
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 0, 6, None], [206, 3046, 2, 1, None]]
    j2.snd_nxt = 2841
    return p, mp, j2


def test_a_reinjected_head_goes_into_the_hole_and_the_holes_dsns_to_its_old_home():
    p, mp, j2 = _reinject_state()
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    body = bytes(range(200))
    acts = p.conv.handle(p.g_data(body, seq=s0), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop) and p.count("HeadIntoHole") == 1 and p.count("ReinjectTX") == 1
    ((pkt, payload, dss),) = _maps(p, acts[1:])
    assert payload == body and (dss.subflow_seq, dss.data_len) == (1, 200)
    assert (dss.data_seq - p.flow.local_idsn) & MP.M64 == 6
    # the hole's first DSNs take the head's old home (closed: reinjected when resent), and
    # nothing went to the join's tail (no seq left without a run)
    assert [r[:4] for r in mp.runs] == [[6, 206, 2, 1], [206, 406, 0, 6], [406, 3046, 2, 201]]
    assert j2.snd_nxt == 2841 and mp.unsure == [[206, 406]] and j2.fill_hi == 2841
    assert mp.orphan_hi == 406  # (homed on a closed subflow: subflow 1 cuts until passed)
    # the guest resends the hole's DSNs: reinjected at the join's tail (not the head: no swap)
    acts = p.conv.handle(p.g_data(bytes(200), seq=(s0 + 200) & 0xFFFFFFFF), Direction.OUT, p.now)
    ((_, _, dss),) = _maps(p, acts[1:])
    assert (dss.subflow_seq, (dss.data_seq - p.flow.local_idsn) & MP.M64) == (2841, 206)
    assert p.count("HeadIntoHole") == 1


def test_a_reinjected_head_longer_than_the_hole_sends_the_rest_to_the_tail():
    p, mp, j2 = _reinject_state()
    j2.sacked = ((101, 2841),)  # (the server holds ssn 101..: the hole is 100 bytes)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    got = [(d.subflow_seq, (d.data_seq - p.flow.local_idsn) & MP.M64, d.data_len) for _, _, d in _maps(p, acts[1:])]
    assert got == [(1, 6, 100), (2841, 106, 100)]
    assert [r[:4] for r in mp.runs] == [[6, 106, 2, 1], [106, 206, 2, 2841], [206, 306, 0, 6], [306, 3046, 2, 101]]
    assert j2.fill_hi == 2841 and j2.snd_nxt == 2941


def test_not_a_reinjected_head_while_the_hole_is_not_known_lost():
    p, mp, j2 = _reinject_state()
    j2.dups = 0
    j2.progress_at = p.now
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    ((_, _, dss),) = _maps(p, acts[1:])
    assert dss.subflow_seq == 2841 and p.count("HeadIntoHole") == 0  # (to the tail, as before)


def test_the_ack_past_a_fill_shows_what_it_stops_at_lost():
    """Bytes sent before the fill that its ACK does not cover are lost (the server acks in
    order what reached it): the guest's next head, resent at once on that ACK, goes into that
    hole too, not behind it for the guest's next RTO."""
    p, mp, j2 = _reinject_state()
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    assert j2.fill_hi == 2841
    j = p.joins[2]
    p.c_dack = 206
    p.j_in(p.j_ack(j, ack=401))  # the fill and ssn 201..401 (held out of order) acked
    assert j2.snd_una == 401 and j2.dups == 0
    assert MP._loss_shown(j2, 401) and not MP._loss_shown(j2, 402)
    assert MP._hole_evident(p.flow, j2, 401, p.now)
    p.j_in(p.j_ack(j, ack=2841))  # past everything sent before the fill: nothing more to say
    assert j2.fill_hi == 0 and not MP._loss_shown(j2, j2.snd_una)


def test_a_resend_of_unsure_bytes_acked_on_their_subflow_is_sent_again():
    """After the swap the hole's DSNs sit at seqs the server acked with the head's bytes: a
    guest resend of them, before they are the head, goes out again as a new mapping (dropped
    as acked, the guest waited a backed-off RTO once they were the head)."""
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 2, 1, None], [206, 406, 2, 2841, None], [406, 3046, 2, 201, None]]
    mp.unsure = [[206, 406]]
    j2.snd_una = 3041  # (all acked on the join; the data level still lacks the head, say)
    j2.dups = 0
    s1 = (p.flow.guest_isn + 206) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s1), Direction.OUT, p.now)
    ((_, _, dss),) = _maps(p, acts[1:])
    assert (dss.subflow_seq, (dss.data_seq - p.flow.local_idsn) & MP.M64) == (3041, 206)
    assert p.count("UnsureResent") == 1 and p.count("GuestRetransAcked") == 0
    # bytes acked on their subflow and on no unsure range are dropped, as before
    s2 = (p.flow.guest_isn + 406) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s2), Direction.OUT, p.now)
    assert not _maps(p, acts[1:]) and p.count("GuestRetransAcked") == 1


def test_guest_sack_cuts_unsure_ranges_out_of_its_blocks():
    assert MP._cut(10, 100, []) == [(10, 100)]
    assert MP._cut(10, 100, [[0, 5], [20, 30], [50, 60], [200, 300]]) == [(10, 20), (30, 50), (60, 100)]
    assert MP._cut(10, 100, [[0, 40]]) == [(40, 100)]
    assert MP._cut(10, 100, [[90, 120]]) == [(10, 90)]
    assert MP._cut(10, 100, [[5, 120]]) == []


# -- review of ec6a9df -----------------------------------------------------------------------


def _data_acked_unsure(da):
    """The head 6..206 at join 2's 3041 (data-acked: another copy arrived, not yet acked on
    the join, so no run is trimmed); 206..406 unsure at 1..201 (acked); the DATA_ACK at `da`."""
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 2, 3041, None], [206, 406, 2, 1, None], [406, 3046, 2, 201, None]]
    j2.snd_nxt, j2.snd_una, j2.dups = 3241, 2841, 0
    mp.unsure = [[206, 406]]
    mp.data_ack = da
    MP._runs_trim(mp)
    return p, mp, j2


def test_a_resend_of_unsure_bytes_the_server_data_acked_is_not_sent_again():
    """Forced out as lost with the DATA_ACK at or beyond their end, they became an empty or
    inverted run, a zero-length mapping (an infinite one: fallback) or a WireError, and the
    join's snd_nxt went back."""
    for da in (406, 500):
        p, mp, j2 = _data_acked_unsure(da)
        acts = p.conv.handle(p.g_data(bytes(200), seq=(p.flow.guest_isn + 206) & 0xFFFFFFFF), Direction.OUT, p.now)
        assert not _maps(p, acts[1:]) and j2.snd_nxt == 3241
        assert all(r[0] < r[1] for r in mp.runs) and p.count("UnsureResent") == 0


def test_unsure_bytes_resent_once_are_unsure_no_more():
    """Their new copy, acked, is surely held: every later resend of them went out again (and
    guest_sack, cutting them out, never told the guest they were held)."""
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 2, 1, None], [206, 406, 2, 2841, None], [406, 3046, 2, 201, None]]
    mp.unsure = [[206, 406]]
    j2.snd_una, j2.dups = 3041, 0
    s1 = (p.flow.guest_isn + 206) & 0xFFFFFFFF
    sent = []
    for _ in range(3):
        acts = p.conv.handle(p.g_data(bytes(200), seq=s1), Direction.OUT, p.now)
        sent += [d.subflow_seq for _, _, d in _maps(p, acts[1:])]
        j2.snd_una = j2.snd_nxt  # (the server acks the new copy)
    assert sent == [3041] and mp.unsure == [] and p.count("UnsureResent") == 1
    assert p.count("GuestRetransAcked") == 2
    assert MP._unsure_in(mp, 0, 10000) is False


def test_an_ack_short_of_the_fills_end_sets_no_lost_una():
    """It came from the hole's late original, not from the fill: what it stops at may be
    late too."""
    p, mp, j2 = _reinject_state()
    j2.sacked = ((101, 301),)  # (the hole is ssn 1..101; the fill, the head's 100 bytes)
    p.conv.handle(p.g_data(bytes(200), seq=(p.flow.guest_isn + 6) & 0xFFFFFFFF), Direction.OUT, p.now)
    assert (j2.fill_hi, j2.fill_end) == (2841, 101)
    j = p.joins[2]
    p.j_in(p.j_ack(j, ack=51))
    assert j2.snd_una == 51 and j2.lost_una == -1  # (below the SACK record it may be late)
    p.j_in(p.j_ack(j, ack=301))
    assert j2.lost_una == 301 and MP._loss_shown(j2, 301)


# -- review of cc34ce8..a565368: nothing after subflow 1's FIN; since stop 30 its FIN waits -------


def _bare_fin(p, mp):
    """Subflow 1 alive, idle (the scheduler's first choice): the guest's bare FIN. The actions."""
    p0 = mp.paths[0]
    p0.state = SS.ESTABLISHED
    s_end = (p.flow.guest_isn + mp.snd_nxt) & 0xFFFFFFFF
    return p.conv.handle(p.g_data(b"", seq=s_end, fin=True), Direction.OUT, p.now)


def test_a_resend_never_goes_on_subflow_1_after_its_fin(monkeypatch):
    """The server's subflow 1, past its FIN (CLOSE_WAIT), never takes bytes beyond it: the
    unsure DSN reinjected there (pick chose the idle subflow 1), and the DATA_FIN after it,
    never reached the data level, and every resend went to the same place. (Its FIN waits
    now while a byte below may need a new mapping, _fin_may_go: forced out here.)"""
    monkeypatch.setattr(MP, "_fin_may_go", lambda mp, end: True)
    p, mp, j2 = _state()
    mp.runs[1][1] = mp.snd_nxt = 207
    _bare_fin(p, mp)
    p0 = mp.paths[0]
    assert p0.fin_sent
    p0.snd_una = p0.snd_nxt  # (the server acked it)
    fin_seq = p0.snd_nxt - 1
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    assert p.count("HeadIntoHole") == 1 and mp.unsure == [[206, 207]]
    j2.snd_una = 3041
    acts = p.conv.handle(p.g_data(bytes(1), seq=(s0 + 200) & 0xFFFFFFFF, fin=True), Direction.OUT, p.now)
    ((pkt, _, dss),) = _maps(p, acts[1:])
    assert (pkt.seq - j2.local_isn) & 0xFFFFFFFF == 3041 and dss.data_fin  # on the join
    assert all(not (r[2] == 0 and r[3] >= fin_seq) for r in mp.runs), (mp.runs, fin_seq)


def test_the_guests_fin_waits_on_subflow_1_while_a_join_holds_bytes_below_it():
    """Join 2 holds DSNs 6..3046 unacked: the guest's bare FIN goes on subflow 1 as a bare
    DATA_FIN (ssn 0, length 1) on an ACK at its snd_nxt, without the TCP FIN, which would
    shut subflow 1 to every byte of join 2 that needs a new mapping later."""
    p, mp, j2 = _state()
    acts = _bare_fin(p, mp)
    p0 = mp.paths[0]
    assert not p0.fin_sent and p.count("Sf1FinHeld") == 1
    pkt, _, opts = wire_check(acts[0].data, False)
    (dss,) = [o for o in opts if isinstance(o, Dss)]
    assert not pkt.payload_len and not pkt.flags & 0x01 and (pkt.seq - p0.local_isn) & 0xFFFFFFFF == p0.snd_nxt
    assert dss.data_fin and dss.data_len == 1 and dss.subflow_seq == 0
    assert dss.data_seq == (p.flow.local_idsn + mp.snd_nxt) & 0xFFFFFFFFFFFFFFFF


def test_a_closed_homes_bytes_go_on_subflow_1_whose_fin_waited():
    """The stall of a kernel failover capture (stop 29, run 48): join 2 dies holding bytes
    below the guest's FIN; with subflow 1 past its FIN the guest's resends of them had
    nowhere to go (ReinjectNoPath) for good. Its FIN held, subflow 1 takes them, then the
    FIN goes once the server data-acks the DATA_FIN, and again while unacked."""
    p, mp, j2 = _state()
    _bare_fin(p, mp)
    p0 = mp.paths[0]
    j2.state = SS.CLOSED
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(200), seq=s0), Direction.OUT, p.now)
    ((pkt, _, dss),) = _maps(p, acts)
    assert pkt.dst == mp.server and pkt.sport == mp.gport  # subflow 1
    assert (dss.data_seq - p.flow.local_idsn) & 0xFFFFFFFF == 6 and dss.data_len == 200
    assert p.count("ReinjectNoPath") == 0 and not p0.fin_sent
    # the server data-acks all of it and the DATA_FIN: subflow 1's FIN is due
    p.c_dack = mp.snd_nxt + 1
    p.now += 0.01
    p.conv.handle(p.s_packet((p.s_isn + 1) & 0xFFFFFFFF, (p0.local_isn + p0.snd_nxt) & 0xFFFFFFFF, 0x10,
                             (p.dack(),)), Direction.IN, p.now)
    assert mp.data_ack == mp.snd_nxt + 1 and mp.fin_due
    assert p.conv.next_deadline() <= p.now
    acts = p.conv.tick(p.now)
    fins = [a.data for a in acts if p.label(a.data) == "fin@0"]
    assert len(fins) == 1 and p0.fin_sent and p.count("Sf1FinLate") == 1
    pkt = wire_check(fins[0], True)[0]
    assert (pkt.seq - p0.local_isn) & 0xFFFFFFFF == p0.snd_nxt - 1 and pkt.flags & 0x11 == 0x11
    # unacked: again, backing off from FIN_WAIT, FIN_TRIES in all, then nothing
    p.now += MP.FIN_WAIT - 0.01
    p.conv.tick(p.now)
    assert p.count("Sf1FinLate") == 1
    for i in range(MP.FIN_TRIES + 2):
        p.now += MP.FIN_WAIT * (1 << i) + 0.01
        p.conv.tick(p.now)
    assert p.count("Sf1FinLate") == MP.FIN_TRIES and not mp.fin_due




def _late_fin_due(p, mp, j2):
    """The guest's bare FIN held (join 2 holds bytes below it), then the server has it all:
    join 2 acked, the DATA_FIN data-acked; subflow 1 idle for a second."""
    _bare_fin(p, mp)
    p0 = mp.paths[0]
    assert p.count("Sf1FinHeld") == 1 and not p0.fin_sent
    j2.snd_una = j2.snd_nxt
    p0.progress_at = p0.acked_at = p.now - 1.0
    j2.progress_at = j2.acked_at = p.now
    p0.srtt = j2.srtt = 0.02
    mp.data_ack = mp.snd_nxt + 1
    mp.fin_due = p.now
    return p0


def test_the_late_fin_starts_the_wait_for_its_answer():
    """(review of 8347e00) Judged on its old progress, subflow 1 went stale in the very tick
    that sent its late FIN (a stale probe beside it), before the server could answer."""
    p, mp, j2 = _state()
    p0 = _late_fin_due(p, mp, j2)
    p.conv.tick(p.now)
    assert p0.fin_sent and p0.snd_nxt == p0.snd_una + 1
    p.now += 0.005  # (the ACK of the FIN is not back yet)
    p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED and p.count("SubflowStale") == 0


def test_the_late_fin_is_recorded_at_its_own_seq():
    """(review of 8347e00) The window model (_sf1_out) takes the segment's own seq, as
    Linux's snd_wl1: the late FIN's is snd_nxt - 1."""
    p, mp, j2 = _state()
    p0 = _late_fin_due(p, mp, j2)
    p0.wnd_seq = 0
    acts = p.conv.tick(p.now)
    fins = [a.data for a in acts if wire_check(a.data, True)[0].flags & 0x01]
    assert len(fins) == 1
    seq = (wire_check(fins[0], True)[0].seq - p0.local_isn) & 0xFFFFFFFF
    assert seq == p0.snd_nxt - 1 and p0.wnd_seq == seq, (p0.wnd_seq, seq)


def test_a_data_ack_past_a_data_fin_never_sent_moves_nothing():
    """A DATA_ACK one past everything sent before the guest closed acks a DATA_FIN we never
    sent (a forged or broken server): taken, it told the guest of a byte it never sent and
    sent subflow 1's FIN under the guest's open stream."""
    p, mp, j2 = _state()
    mp.paths[0].state = SS.ESTABLISHED
    p.c_dack = mp.snd_nxt + 1
    p.now += 0.01
    p.conv.handle(p.s_packet((p.s_isn + 1) & 0xFFFFFFFF, (mp.paths[0].local_isn + mp.paths[0].snd_nxt) & 0xFFFFFFFF,
                             0x10, (p.dack(),)), Direction.IN, p.now)
    assert mp.data_ack == 6 and not mp.fin_due


# -- second review of the FIN hold ---------------------------------------------------------------

M32 = 0xFFFFFFFF


def _sf1_only():
    """A multipath flow whose joins are closed: everything goes on subflow 1."""
    p = _pair()
    mp = p.mp
    for q in mp.paths[1:]:
        q.state = SS.CLOSED
    return p, mp, mp.paths[0]


def _server_ack(p, p0):
    """The server's pure ACK on subflow 1 of all it was sent, with its DATA_ACK (p.c_dack)."""
    return p.inn(p.s_packet((p.s_isn + 1) & M32, (p0.local_isn + p0.snd_nxt) & M32, 0x10, (p.dack(),)))


def _closed_second():
    """The server's DATA_FIN first (the guest acks it), then the guest's last bytes on join 2
    and its bare FIN: held. The server data-acks it all: TIME_WAIT, the late FIN due."""
    p = _pair()
    mp = p.mp
    p0 = mp.paths[0]
    p.inn(p.s_bare_data_fin())
    assert p.flow.remote_fin
    p.g_rcv = (p.s_isn + 2) & M32
    p.out(p.g_ack())
    assert p.flow.remote_fin_acked
    p.data_on(2)
    p.out(p.g_fin())
    assert p.count("Sf1FinHeld") == 1 and not p0.fin_sent
    p.c_dack = mp.snd_nxt + 1
    acts, _ = _server_ack(p, p0)
    assert mp.data_ack == mp.snd_nxt + 1 and mp.fin_due
    return p, mp, p0


def test_late_fin_ack_in_time_wait_is_seen():
    """(second review of the FIN hold) The guest closed second: the server's DATA_ACK of its
    DATA_FIN took the flow to TIME_WAIT, then the late FIN went; the server's ACK of it was
    a stale ACK, dropped before subflow 1 saw it, and the FIN went six times in 31 s."""
    p, mp, p0 = _closed_second()
    assert p.flow.state is S.TIME_WAIT, p.flow.state
    p.tick(0.001)
    assert p.count("Sf1FinLate") == 1 and p0.fin_sent
    # the server acks our late FIN (a pure ACK with its DATA_ACK)
    acts, _ = _server_ack(p, p0)
    for i in range(MP.FIN_TRIES + 1):
        p.tick(MP.FIN_WAIT * (1 << i) + 0.01)
    assert p0.snd_una == p0.snd_nxt, (p0.snd_una, p0.snd_nxt)
    assert p.count("Sf1FinLate") == 1, p.count("Sf1FinLate")




def test_fin_folded_resend_of_bytes_acked_on_subflow_1_without_the_data_level_gets_a_new_mapping():
    """(second review of the FIN hold) Subflow 1 acked DSNs 6..206, the data level did not.
    The guest's bare FIN is held for exactly this (_fin_may_go). The guest's RTO resends
    6..206 with its FIN folded in: the bytes need a new mapping (send's `lost`)."""
    p, mp, p0 = _sf1_only()
    body = bytes(range(200))
    s0 = p.g_nxt
    p.out(p.g_data(body))
    assert mp.runs[-1][2] == 0 and mp.snd_nxt == 206
    old_ss = p0.snd_nxt - 200  # (subflow 1's seq of DSN 6)
    # subflow 1 acks them, the DATA_ACK stays at 6
    _server_ack(p, p0)
    assert p0.snd_una == p0.snd_nxt and mp.data_ack == 6
    p.out(p.g_fin())
    assert p.count("Sf1FinHeld") == 1 and not p0.fin_sent
    # the guest's RTO: 6..206 again, its FIN folded in
    acts, _ = p.out(p.g_data(body, fin=True, seq=s0))
    maps = _maps(p, acts)
    assert maps, "nothing sent"
    assert all((pk.seq - p0.local_isn) & M32 != old_ss for pk, _, d in maps), \
        "sent again at its acked subflow seq: a whole duplicate the server drops unread, every RTO"




def _data_fins(p, acts):
    out = []
    for a in acts:
        if isinstance(a, (Inject, Rewrite)):
            pkt, _, opts = wire_check(a.data, isinstance(a, Inject))
            for o in opts:
                if isinstance(o, Dss) and o.data_fin:
                    out.append(((o.data_seq + o.data_len - 1 - p.flow.local_idsn) & 0xFFFFFFFFFFFFFFFF,
                                pkt.payload_len, o.subflow_seq))
    return out


def test_a_resend_without_the_guests_fin_adds_no_data_fin_at_its_own_end():
    """(second review of the FIN hold) A whole-mapping run on subflow 1 carries the
    DATA_FIN (the guest's super-packet with its FIN). The guest resends a super-packet
    without its FIN: from join 2's lost bytes to the middle of that run, whose first MSS
    subflow 1 acked. Its cut pieces copy the run's mapping, DATA_FIN flag included (m), and
    the first one, below snd_una, made `dup_fin`: a bare DATA_FIN at the resend's end, not
    at the guest's FIN."""
    p = _pair()
    mp = p.mp
    p0, j1, j2 = mp.paths
    j1.state = SS.CLOSED
    p.data_on(2, size=100)
    x = mp.runs[-1][0]
    assert mp.runs[-1][2] == 2
    # subflow 1 acked all it has, the data level stops at join 2's bytes
    p.c_dack = x
    _server_ack(p, p0)
    a = mp.snd_nxt
    mss = 1400
    ss_a = p0.snd_nxt
    body = bytes(range(256)) * 17
    body = body[:3 * mss]
    acts, _ = p.out(p.g_data(body, fin=True))
    fin_dsn = a + 3 * mss
    run = mp.runs[-1]
    assert run[2] == 0 and run[4] is not None and run[4][4], run  # one mapping, DATA_FIN in it
    # subflow 1 acks its first MSS; the rest lost
    lim = MP._seg_max(p0, p.conv._mss_limit[4] - 12)  # (the cut's segment size)
    p.inn(p.s_packet((p.s_isn + 1) & M32, (p0.local_isn + ss_a + lim) & M32, 0x10, (p.dack(),)))
    assert p0.snd_una == ss_a + lim and mp.data_ack == x
    # the guest resends x .. a + 2 MSS, no FIN (its FIN is on the last skb)
    resend = bytes(a - x) + body[:2 * mss]
    acts, _ = p.out(p.g_data(resend, seq=(p.flow.guest_isn + x) & M32))
    fins = _data_fins(p, acts)
    assert all(d == fin_dsn for d, _, _ in fins), (fins, fin_dsn)


def test_a_data_ack_of_a_byte_never_sent_below_the_data_fin_moves_nothing():
    """(second review of the FIN hold; a broken or forged server) The guest's segment
    206..306 was lost on its way here, its bare FIN came (DATA_FIN at 306). A DATA_ACK of 207 acks byte 206, never sent:
    taken, since local_fin allows mp.snd_nxt + 1 whatever the DATA_FIN's DSN."""
    p, mp, p0 = _sf1_only()
    p.out(p.g_data(bytes(200)))
    p.c_dack = 206
    _server_ack(p, p0)
    assert mp.snd_nxt == 206 and mp.data_ack == 206
    p.out(p.g_data(b"", fin=True, seq=(p.flow.guest_isn + 306) & M32))
    assert p.flow.local_fin and mp.snd_nxt == 206
    p.c_dack = 207
    _server_ack(p, p0)
    assert mp.data_ack == 206 and not mp.fin_due, (mp.data_ack, mp.fin_due)


def test_a_data_fin_on_a_duplicate_on_a_closing_join_goes_bare_on_subflow_1():
    """(second review's remark) The guest's FIN resend lands on join 2, which the server has
    closed (CLOSING) and which has all of those bytes, data-acked: the DATA_FIN rides a whole
    duplicate there, and the bare one beside it wanted a live subflow: every FIN resend went
    the same way and the close hung. It goes on subflow 1 now."""
    p, mp, j2 = _state()
    p0 = mp.paths[0]
    p0.state = SS.ESTABLISHED
    j2.snd_una = j2.snd_nxt  # (join 2 acked all it has ...)
    mp.data_ack = mp.snd_nxt  # (... and the data level too)
    j2.state = SS.CLOSING  # (the server sent its FIN there)
    tail = (p.flow.guest_isn + 3046 - 40) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(40), seq=tail, fin=True), Direction.OUT, p.now)
    fins = []
    for a in acts:
        if isinstance(a, (Inject, Rewrite)):
            pkt, _, opts = wire_check(a.data, isinstance(a, Inject))
            fins += [(pkt.src, pkt.payload_len, o.data_len) for o in opts if isinstance(o, Dss) and o.data_fin]
    assert (mp.guest, 0, 1) in fins, fins  # a bare DATA_FIN from the guest's address: subflow 1


def _maps_sent(p, acts):
    out = []
    for a in acts:
        if isinstance(a, Inject):
            pkt, _, mopts = wire_check(a.data, True)
            if pkt.payload_len:
                (dss,) = [o for o in mopts if isinstance(o, Dss)]
                out.append((pkt.sport, (dss.data_seq - p.flow.local_idsn) & MP.M64, pkt.payload_len))
    return out


def test_with_dss_checksums_a_reinjected_head_avoids_a_joins_hole_and_no_later_piece_counts_as_head():
    """Review of 277af48: the head, homed on closed subflow 1, was reinjected on join 1 (pick's
    burst) behind join 1's hole (DSNs 206.. beyond it); the segment's next piece, DSN 106..206
    in place on join 1, was then taken for the stuck head, moved to join 2, and join 1 reset
    right after the head's only fresh copy went on it. Now the head goes to join 2, where it
    waits behind nothing, and join 1 keeps its piece and lives."""
    p, mp, j2 = _state()
    sf1, j1, _ = mp.paths
    p.flow.checksum = True
    j1.state = SS.ESTABLISHED
    j2.snd_una = j2.snd_nxt = 1
    mp.runs = [[6, 106, 0, 6, None], [106, 206, 1, 2841, None], [206, 3046, 1, 1, None]]
    j1.snd_una, j1.snd_nxt = 1, 2941
    j1.dups = 2
    j1.snd_wnd = j2.snd_wnd = 1 << 20
    mp.last_pick, mp.burst_left = 1, 1 << 20  # (pick's burst on join 1)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    sent = _maps_sent(p, p.conv.handle(p.g_data(bytes(range(200)), seq=s0), Direction.OUT, p.now))
    assert (j2.lport, 6, 100) in sent and (j1.lport, 106, 100) in sent
    assert j1.state is SS.ESTABLISHED and j2.state is SS.ESTABLISHED
    assert p.count("CsumStuckReset") == 0 and p.count("CsumHeadReinjected") == 0


def test_with_dss_checksums_the_stuck_head_goes_where_it_waits_behind_no_hole():
    """Review of 277af48: the drain-time choice alone put the head behind join 1's own hole
    (DSNs beyond it), and the next resend reset join 1 in turn. Subflow 1, slower but without
    such a hole, takes it."""
    p, mp, j2 = _state()
    sf1, j1, _ = mp.paths
    sf1.state = SS.ESTABLISHED
    sf1.snd_una = sf1.snd_nxt = 6
    sf1.rate = MP.RATE_MIN
    j1.state = SS.ESTABLISHED
    j1.rate = 1e8
    mp.runs.append([3046, 4046, 1, 1, None])
    mp.snd_nxt = 4046
    j1.snd_una, j1.snd_nxt = 1, 1001
    j1.dups = 2
    j2.sacked = ((201, 3041),)
    _csum_head_resend(p)
    assert sf1.snd_nxt == 206  # (the head at subflow 1's tail: a new mapping there)
    assert j1.state is SS.ESTABLISHED and j2.state is SS.CLOSED
    assert p.count("CsumHeadReinjected") == 1 and [r[:3] for r in mp.runs if r[0] == 6] == [[6, 206, 0]]


def test_with_dss_checksums_no_slot_left_the_stuck_head_ends_in_a_visible_reset():
    """Review of 277af48: each reset takes a join slot (MAX_PATHS per flow). With none left,
    join 2 is reset without a rejoin and the head goes behind join 1's own hole (no other
    subflow to take it); join 1, stuck alone with no join to come, was left holding it for
    good. It is reset now and the guest with it, visibly (NoPathLeft)."""
    import copy
    p, mp, j2 = _state()
    j1 = mp.paths[1]
    j1.state = SS.ESTABLISHED
    mp.runs.append([3046, 4046, 1, 1, None])
    mp.snd_nxt = 4046
    j1.snd_una, j1.snd_nxt = 1, 1001
    j1.dups = 2
    while len(mp.paths) < MP.MAX_PATHS:  # (closed subflows of earlier rejoins)
        d = copy.copy(mp.paths[0])
        d.index = len(mp.paths)
        d.state = SS.CLOSED
        mp.paths.append(d)
    _csum_head_resend(p)
    assert j2.state is SS.CLOSED and p.count("MPJoinRejoin") == 0
    assert [r[:4] for r in mp.runs if r[0] == 6] == [[6, 206, 1, 1001]]  # (behind join 1's hole)
    p.now += 1.0
    acts = _csum_head_resend(p)
    assert j1.state is SS.CLOSED and p.count("CsumStuckReset") == 2 and p.count("NoPathLeft") == 1
    rsts = [a for a in acts if isinstance(a, Inject) and wire_check(a.data, True)[0].flags & 0x04
            and wire_check(a.data, True)[0].dport == mp.gport]
    assert rsts  # (the guest's RST)


def test_a_server_ack_above_a_head_homed_on_a_closed_subflow_reaches_the_guest():
    """make soak-guest, stop 46 (a guest without SACK, checksums): the guest's RTO resend of
    the head went to a new join and was acked; its F-RTO then sent two new segments, the
    server acked them on the join, the DATA_ACK stayed at the next byte, homed on a closed
    subflow, and those ACKs were suppressed as reordering between subflows: the guest heard
    nothing and waited out its next backed-off RTO (4, 8, 15 s). Nothing carries that byte
    but the guest's resend: the ACK goes to it, a duplicate ACK (DupAckOrphanFwd)."""
    from tests.unit.test_resends_into_holes import _ack2
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 1, 1, None], [206, 406, 2, 1, None]]  # (the head on closed join 1)
    mp.snd_nxt = 406
    j2.snd_una, j2.snd_nxt = 1, 201
    j2.dups = 0
    p.joins[2].s_rcv = 201
    before = p.count("DupAckSuppressed")
    acts = p.j_in(p.j_ack(p.joins[2], ack=201))
    to_guest = [wire_check(a.data, True)[0] for a in acts if isinstance(a, Inject)
                and wire_check(a.data, True)[0].dport == mp.gport]
    assert p.count("DupAckOrphanFwd") == 1 and p.count("DupAckSuppressed") == before
    assert [(k.ack - p.flow.guest_isn) & 0xFFFFFFFF for k in to_guest] == [6]
    j1 = mp.paths[1]  # (its home alive: reordering between subflows, suppressed as before)
    j1.state = SS.ESTABLISHED
    j1.snd_una, j1.snd_nxt = 1, 201
    mp.runs.append([406, 606, 2, 201, None])
    mp.snd_nxt = 606
    j2.snd_nxt = 401
    p.joins[2].s_rcv = 401
    p.j_in(p.j_ack(p.joins[2], ack=401))
    assert p.count("DupAckOrphanFwd") == 1 and p.count("DupAckSuppressed") == before + 1
