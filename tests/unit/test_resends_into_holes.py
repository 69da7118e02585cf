"""Guest resends above the data-level head go into the next subflow hole too (multipath.
_into_holes, _hole_from), and the holes come from what the server SACKed over all its ACKs
(multipath._board), not from its last ACK's one block.

Captured (stop 28, the netlink failover crawl): eighteen one-segment holes on subflow 1 whose
DSNs lay above the data-level head. The guest resent the head and the next heads in one burst
after its RTO; only a resend that was the head at that instant went into a hole, the others
went to their homes behind the holes left, and each step waited for the guest's next,
backed-off RTO (3, 4.6, 8.4, 15.3, 41.6, 66.2 s). Here on a hand-made state:

    DSN    6..106  join 2, ssn 1001..1101   (the head)
    DSN  106..206  join 2, ssn 1101..1201   (the next head)
    DSN  206..1206 join 2, ssn    1..1001   (holes at ssn 1..101 and 201..301, the rest SACKed)
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlebox.core import Direction, Drop
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire import encode_tcp_options

from tests.unit.test_checksum_segment_maps import _maps
from tests.unit.test_subflow_table import MPair

M32 = 0xFFFFFFFF


def _pair():
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    p.join_up(2)
    return p


def _join2(runs, snd_nxt: int, dead=(0, 1)):
    """A pair whose paths `dead` are closed, the run map `runs` (DSNs up to its last run's
    end), join 2 at snd_una 1 with `snd_nxt`."""
    p = _pair()
    mp = p.mp
    for i in dead:
        mp.paths[i].state = SS.CLOSED
    mp.runs = runs
    mp.snd_nxt = runs[-1][1]
    j2 = mp.paths[2]
    j2.snd_una, j2.snd_nxt = 1, snd_nxt
    assert mp.data_ack == 6
    return p, mp, j2


def _ack2(p, ack: int, *blocks):
    """The server's ACK on join 2 of relative seq `ack`, with these SACK blocks."""
    j = p.joins[2]
    blk = tuple(((j.c_isn + s) & M32, (j.c_isn + e) & M32) for s, e in blocks)
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ack, 0x10, (p.dack(),),
                      tcp=encode_tcp_options(sack=blk) if blk else b""))


def _onto(sent, sacked) -> list:
    """The pieces sent onto subflow seqs the server SACKed."""
    return [(ss, d, n) for ss, d, n in sent if any(s < ss + n and ss < e for s, e in sacked)]


def _state():
    p, mp, j2 = _join2([[6, 106, 2, 1001, None], [106, 206, 2, 1101, None], [206, 1206, 2, 1, None]], 1201)
    j2.sacked = ((101, 201), (301, 1001))  # (the heads' old copies lost too)
    return p, mp, j2


def _sent(p, acts):
    return [(d.subflow_seq, (d.data_seq - p.flow.local_idsn) & MP.M64, d.data_len) for _, _, d in _maps(p, acts[1:])]


@pytest.mark.parametrize("burst", [1, 2], ids=["one-segment", "two-segments"])
def test_resends_above_the_head_go_each_into_the_next_hole(burst):
    """The head into the hole at snd_una, the next head (in the same segment, or in the next
    one before any ACK) into the next hole up, not onto the first fill nor behind the hole."""
    p, mp, j2 = _state()
    g = (p.flow.guest_isn + 6) & M32
    body = bytes(range(200))
    if burst == 1:
        acts = p.conv.handle(p.g_data(body, seq=g), Direction.OUT, p.now)
        assert isinstance(acts[0], Drop)
        sent = _sent(p, acts)
    else:
        sent = []
        for k in range(2):
            acts = p.conv.handle(p.g_data(body[100 * k:100 * k + 100], seq=(g + 100 * k) & M32), Direction.OUT, p.now)
            sent += _sent(p, acts)
    assert sent == [(1, 6, 100), (201, 106, 100)]
    assert p.count("HeadIntoHole") == 2
    # the holes' DSNs take the resends' old seqs (unsure: the heads' old copies may arrive
    # late, then they are sent as new mappings when the guest resends them); the next head
    # too (above the DATA_ACK: the hole's late original may win at 201)
    assert sorted(r[:4] for r in mp.runs) == [[6, 106, 2, 1], [106, 206, 2, 201], [206, 306, 2, 1001],
                                              [306, 406, 2, 101], [406, 506, 2, 1101], [506, 1206, 2, 301]]
    assert mp.unsure == [[106, 306], [406, 506]]
    assert (j2.fill_end, j2.fill_hi) == (301, 1201)
    # a third resend finds no hole left below its home: it goes there, as before
    acts = p.conv.handle(p.g_data(bytes(100), seq=(g + 200) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1001, 206, 100)] and p.count("HeadIntoHole") == 2


def test_a_resend_above_the_head_whose_old_copy_the_server_holds_stays_and_the_holes_own_resend_fills_it():
    """A netlink failover capture of this stop (aee1bb6): the next head, its old copy SACKed,
    went into the next hole, whose DSN (resent by the guest in the same burst) then went in
    place onto the held bytes as a duplicate; the DATA_ACK stopped there for good. Above the
    head a resend no longer swaps where the server holds its old copy; the hole's own resend
    fills its hole in place."""
    p, mp, j2 = _state()
    j2.sacked = ((101, 201), (301, 1201))  # (the heads' old copies arrived: SACKed)
    g = (p.flow.guest_isn + 6) & M32
    acts = p.conv.handle(p.g_data(bytes(200), seq=g), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 6, 100), (1101, 106, 100)]  # (the head in, the next at home)
    assert p.count("HeadIntoHole") == 1 and mp.unsure == [[206, 306]]
    # the guest resends the hole at 201's own DSNs (406..506): in place (no fill mark: the
    # hole at snd_una's first fill still rules the next resend's place, b11593b)
    acts = p.conv.handle(p.g_data(bytes(100), seq=(g + 400) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(201, 406, 100)] and p.count("HeadIntoHole") == 1
    assert j2.fill_end == 101


def test_the_holes_stop_at_what_an_earlier_ack_sacked():
    """Linux's ACKs beside timestamps and a DATA_ACK carry one SACK block, the latest: taken
    alone, the hole at snd_una reached up to that block, and the head went onto bytes the
    server held (its D-SACK, then a stall to the guest's next RTO; the crawl's capture)."""
    p, mp, j2 = _state()
    j2.sacked = ()
    for s, e in ((101, 201), (301, 1201)):  # one block an ACK, the latest last
        _ack2(p, 1, (s, e))
    assert j2.sacked == ((101, 201), (301, 1201))
    acts = p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 6, 100)]  # (not 200: ssn 101..201 is held)


def test_the_sack_record_is_trimmed_by_the_cumulative_ack_and_dropped_when_reneged():
    p, mp, j2 = _state()
    j2.sacked = ()
    MP._board(j2, ((301, 401),), 1)
    MP._board(j2, ((101, 201),), 1)
    MP._board(j2, ((401, 501), (601, 701)), 1)
    assert j2.sacked == ((101, 201), (301, 501), (601, 701))
    MP._board(j2, (), 251)  # (the ACK passes the first block)
    assert j2.sacked == ((301, 501), (601, 701))
    MP._board(j2, ((801, 901),), 351)  # inside bytes it SACKed: discarded (RFC 2018 §8)
    assert j2.sacked == ((801, 901),)
    MP._board(j2, ((1001, 1002),), 1)  # (an old ACK: nothing below snd_una 1 goes)
    assert j2.sacked == ((801, 901), (1001, 1002))


def test_the_sack_record_is_bounded_and_never_names_a_byte_not_sacked():
    p, mp, j2 = _state()
    j2.sacked = ()
    blocks = [(10 + 20 * i, 20 + 20 * i) for i in range(3 * MP.MAX_SACKED)]
    for b in blocks:
        MP._board(j2, (b,), 1)
        assert len(j2.sacked) <= MP.MAX_SACKED
        assert all(any(s <= x and y <= e for s, e in blocks) for x, y in j2.sacked)
    assert j2.sacked[-1] == blocks[-1] and j2.sacked[0] == blocks[0]  # (the lowest and the latest top)


def test_a_resend_from_a_closed_home_goes_into_the_next_hole_too():
    """Reinjected (its home closed), the bytes above the head go into the next hole as the
    head does, the holes' DSNs to the closed home (reinjected when the guest resends them):
    at the join's tail they waited behind the holes (the crawl's second RTO)."""
    p, mp, j2 = _state()
    mp.runs = [[6, 206, 0, 6, None], [206, 1206, 2, 1, None]]
    j2.snd_nxt = 1001
    j2.sacked = ((101, 201), (301, 1001))
    mp.paths[0].sacked = ((106, 206),)  # (a closed subflow's out-of-order bytes are gone)
    acts = p.conv.handle(p.g_data(bytes(200), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 6, 100), (201, 106, 100)]
    assert p.count("HeadIntoHole") == 2 and p.count("ReinjectTX") == 1
    assert j2.snd_nxt == 1001 and mp.orphan_hi == 506
    assert sorted(r[:4] for r in mp.runs) == [[6, 106, 2, 1], [106, 206, 2, 201], [206, 306, 0, 6],
                                              [306, 406, 2, 101], [406, 506, 0, 106], [506, 1206, 2, 301]]


def test_not_inside_a_mapping_over_several_segments_while_fills_are_in_flight():
    """At the start of a whole mapping a fill may go, and after fills the server acked (it
    read them under their own mappings); but not past fills still in flight: a late
    original of the mapping's first segment, taken before them, would begin it, and a
    second mapping inside it is DSSNotMatching."""
    p, mp, j2 = _state()
    j2.sacked = ((1001, 1101),)  # (one hole, ssn 1..1001, all of it known lost; the next head's old copy too)
    m = (206, 1, 1000, None, False)
    mp.runs[2][4] = m
    g = (p.flow.guest_isn + 6) & M32
    acts = p.conv.handle(p.g_data(bytes(100), seq=g), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 6, 100)] and j2.fill_m is m
    acts = p.conv.handle(p.g_data(bytes(100), seq=(g + 100) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1101, 106, 100)] and p.count("HeadIntoHole") == 1  # (at its home)


def _dsn_blocks(p, blocks):
    return [((a - p.flow.guest_isn) & M32, (b - p.flow.guest_isn) & M32) for a, b in blocks]


# -- review of 186b8fd: a resend above the head put into a hole is unsure, the SACK record's
#    cut is no hole, and above snd_una only a SACK block shows one -------------------------------


def test_a_non_head_resend_moved_into_a_hole_is_not_named_held_to_the_guest():
    """
        DSN    6..106  join 1, ssn    1..101   (the head, lost there: two dup ACKs)
        DSN  106..206  join 2, ssn 1001..1101  (its home, behind the hole at 1)
        DSN  206..1206 join 2, ssn    1..1001  (hole at 1..101, 101..1001 SACKed)
    The guest resends 106..206 (not the head): it goes into join 2's hole at 1, and DSNs
    206..306 go to 1001 (unsure). The server then acks join 2 up to 1001, DATA_ACK still 6.
    Whichever copy reached ssn 1 first was taken: the fill (DSN 106) or the hole's late
    original (DSN 206). In the second case the server does not hold 106..206 at all (its old
    copy at 1001 is not acked either), yet guest_sack named 106..206 held on 186b8fd: the
    guest never resent them (and its resends were dropped as GuestRetransAcked)."""
    p, mp, j2 = _join2([[6, 106, 1, 1, None], [106, 206, 2, 1001, None], [206, 1206, 2, 1, None]], 1101, dead=(0,))
    j1 = mp.paths[1]
    j1.snd_una, j1.snd_nxt, j1.dups = 1, 101, 2
    j2.sacked = ((101, 1001),)
    assert mp.data_ack == 6
    acts = p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 106) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 106, 100)]  # (into the hole: the new behaviour)
    assert [1001 <= r[3] for r in mp.runs if r[0] == 206] == [True]
    j = p.joins[2]
    p.j_in(p.j_ack(j, ack=1001))  # join 2 acked to 1001; DATA_ACK 6 (the head, on join 1, lost)
    assert j2.snd_una == 1001 and mp.data_ack == 6
    blocks = _dsn_blocks(p, MP.guest_sack(p.flow, mp, 4, p.now))
    # 106..206 may well not be held (the hole's original won at ssn 1): never named
    assert not any(a < 206 and b > 106 for a, b in blocks), blocks


def test_a_non_head_resend_moved_into_a_hole_is_not_dropped_when_resent():
    """Same state: after the join's ACK the guest resends 106..206 (its RTO); the bytes are
    acked at their new place (ssn 1), where the server may hold DSN 206 instead. Dropped as
    GuestRetransAcked, the guest's only copy of them never reaches the server until they are
    the head."""
    p, mp, j2 = _join2([[6, 106, 1, 1, None], [106, 206, 2, 1001, None], [206, 1206, 2, 1, None]], 1101, dead=(0,))
    j1 = mp.paths[1]
    j1.snd_una, j1.snd_nxt, j1.dups = 1, 101, 2
    j2.sacked = ((101, 1001),)
    p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 106) & M32), Direction.OUT, p.now)
    p.j_in(p.j_ack(p.joins[2], ack=1001))
    acts = p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 106) & M32), Direction.OUT, p.now)
    assert _sent(p, acts), p.count("GuestRetransAcked")


def test_resends_never_go_onto_bytes_an_earlier_ack_sacked_beyond_max_sacked():
    """Ten one-segment holes on join 2 (ssn 1+200k..101+200k), each followed by a SACKed
    segment, one block per ACK (Linux beside timestamps and a DATA_ACK). The record keeps
    the lowest seven ranges and the highest: ssn 1501..1601 and 1701..1801, SACKed, are
    forgotten. The guest resends the nine heads homed above (DSN 6..906 at ssn 2001..2901):
    on 8820d21 the eighth fill was 200 bytes at 1401..1601 (n stopped only at the next block kept, 1901),
    half of it onto 1501..1601, bytes the server SACKed (a D-SACK, the very outcome b7e0071
    was made to prevent; DSN 806..906 homed where the server holds DSN 2406's bytes, and DSN
    2406..2506 moved to 2801..2901, unsure, though the server holds them at 1501)."""
    p, mp, j2 = _join2([[6, 906, 2, 2001, None], [906, 2906, 2, 1, None]], 2901)
    sacked = [(101 + 200 * k, 201 + 200 * k) for k in range(10)]
    for s, e in sacked:  # one block an ACK, ascending (each the latest arrival)
        _ack2(p, 1, (s, e))
    assert len(j2.sacked) == MP.MAX_SACKED
    acts = p.conv.handle(p.g_data(bytes(900), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    onto_held = _onto(sent, sacked)
    assert not onto_held, onto_held


def test_a_resend_does_not_go_onto_bytes_above_every_sack_block_by_the_clock_alone():
    """join 2 has waited at its hole at ssn 1 for a second (its cumulative ACK did not move:
    _overdue_at passed) while new bytes went on it; the server SACKed 101..201 only, so
    201..1201 are simply not answered yet (nothing above them is SACKed). The head goes into
    the hole at 1 (SACK above it). On 186b8fd the next head (home 1101) went onto ssn 201: for a seq
    above snd_una the clock (progress_at is the cumulative ACK's) says nothing about loss,
    those bytes may be in flight (their original, sent earlier, then wins: a D-SACK and DSN
    106..206 homed where the server holds DSN 406's bytes)."""
    p, mp, j2 = _join2([[6, 106, 2, 1001, None], [106, 206, 2, 1101, None], [206, 1206, 2, 1, None]], 1201)
    j2.sacked = ((101, 201),)
    p.now += 1.0  # (the join has been stuck at ssn 1 for a second: overdue)
    assert MP._hole_evident(p.flow, j2, 1, p.now)
    assert not any(e > 201 for _, e in j2.sacked)
    acts = p.conv.handle(p.g_data(bytes(200), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    assert (1, 6, 100) in sent
    assert (201, 106, 100) not in sent, sent


# -- review of 8820d21: a cut record's forgotten ranges stay no holes, one burst of fills keeps
#    held bytes named, reinjections merge their runs -----------------------------------------


def test_forgotten_sack_ranges_are_no_holes_after_an_ack_trims_the_record():
    """Ten one-segment holes on join 2 (ssn 1+200k), each followed by a SACKed segment, one
    block an ACK: the record keeps (101,201)..(1301,1401) and (1901,2001); 1501..1601 and
    1701..1801 are forgotten. The late originals of the first two holes arrive: ACK 401, the
    record now six ranges. The guest resends the heads (DSN 6..906, homed at 2001..2901)."""
    p, mp, j2 = _join2([[6, 906, 2, 2001, None], [906, 2906, 2, 1, None]], 2901)
    sacked = [(101 + 200 * k, 201 + 200 * k) for k in range(10)]
    for s, e in sacked:
        _ack2(p, 1, (s, e))
    assert len(j2.sacked) == MP.MAX_SACKED
    _ack2(p, 401, (1901, 2001))  # (Linux: the latest block again)
    assert j2.snd_una == 401 and len(j2.sacked) == MP.MAX_SACKED - 2
    acts = p.conv.handle(p.g_data(bytes(900), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    onto_held = _onto(sent, sacked)
    assert not onto_held, onto_held


def test_seven_fills_in_one_burst_leave_held_segments_between_the_holes_named():
    """
        DSN    6..706  join 2, ssn 1601..2301 (the heads; their copies lost too)
        DSN  706..2306 join 2, ssn    1..1601 (holes at ssn 1+200k, k<7; 101+200k SACKed)
        DSN 2306..2406 join 2, ssn 2301..2401 (an earlier swap's DSNs: mp.unsure)
    The guest resends the seven heads in one segment: each into the next hole."""
    p, mp, j2 = _join2([[6, 706, 2, 1601, None], [706, 2306, 2, 1, None], [2306, 2406, 2, 2301, None]], 2401)
    # (hole 1401..1601 stays; the earlier swap's seqs SACKed: the holes moved to the heads'
    # old seqs are known lost)
    j2.sacked = tuple((101 + 200 * k, 201 + 200 * k) for k in range(7)) + ((2301, 2401),)
    mp.unsure = [[2306, 2406]]
    acts = p.conv.handle(p.g_data(bytes(700), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    assert [s for s, _, _ in sent] == [1 + 200 * k for k in range(7)], sent
    every = MP.guest_blocks(p.flow, mp, p.now)
    blocks = _dsn_blocks(p, every)
    # DSN 806..906 (ssn 101..201) was SACKed under its own mapping and no swap touched it
    assert any(a <= 806 and 906 <= b for a, b in blocks), (blocks, mp.unsure)
    # more than four: in turn, four per ACK, every one reaches the guest (stop 47)
    named = set()
    for _ in range((len(every) + 3) // 4):
        four = MP.guest_sack(p.flow, mp, 4, p.now)
        MP._sack_shown(mp, four)  # (as a segment to the guest records what it carried)
        named |= set(four)
    assert named == set(every), (named, every)


def test_reinjections_keep_the_run_map_within_max_runs():
    """A dead join's bytes reinjected one guest resend at a time: each went to a run of its
    own (_runs_move never merged), past MAX_RUNS."""
    p = _pair()
    mp = p.mp
    j1 = mp.paths[1]
    n = 200
    mp.runs = [[6, 6 + 100 * n, 1, 1, None]]
    mp.snd_nxt = 6 + 100 * n
    j1.snd_una, j1.snd_nxt = 1, 1 + 100 * n
    j1.state = SS.CLOSED
    for k in range(n):
        p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 6 + 100 * k) & M32), Direction.OUT, p.now)
        assert len(mp.runs) <= MP.MAX_RUNS, k


# -- review of 3598d89 ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["home-closes", "server-reneges"])
def test_a_fill_whose_old_copy_was_only_sacked_is_never_named_held_when_that_copy_goes(how):
    """A SACKed old copy is out of order at the server: it goes when the subflow closes or
    the server reneges (RFC 2018 s8). With the hole's late original winning at the fill's
    seq, the resend's DSNs were then held nowhere yet named held to the guest (3598d89 let
    them off mp.unsure when their old copy was SACKed; review of 3598d89). Here the old copy
    is SACKed only after the swap (it arrived late).

        DSN    6..106  join 1, ssn    1..101   (the head, lost there: two dup ACKs)
        DSN  106..206  join 2, ssn 1001..1101  (its copy not SACKed yet)
        DSN  206..1206 join 2, ssn    1..1001  (holes at 1..101 and 501..601, the rest SACKed)
    """
    p, mp, j2 = _join2([[6, 106, 1, 1, None], [106, 206, 2, 1001, None], [206, 1206, 2, 1, None]], 1101, dead=(0,))
    j1 = mp.paths[1]
    j1.snd_una, j1.snd_nxt, j1.dups = 1, 101, 2
    j2.sacked = ((101, 501), (601, 1001))
    assert mp.data_ack == 6
    acts = p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 106) & M32), Direction.OUT, p.now)
    assert _sent(p, acts) == [(1, 106, 100)]  # into the hole at 1; DSN 206..306 to 1001
    # the hole's late original (DSN 206) won at ssn 1, the old copy at 1001 arrived: the
    # server acks 501 (hole 501..601 left) and SACKs 601..1101
    _ack2(p, 501, (601, 1101))
    assert j2.snd_una == 501 and mp.data_ack == 6
    if how == "home-closes":
        j2.state = SS.CLOSED  # (its out-of-order 601..1101, DSN 106..206's old copy, is gone)
    else:
        # the server pruned its out-of-order queue, then the hole at 501 filled: ACK 601, no block
        _ack2(p, 601)
        assert j2.snd_una == 601 and j2.sacked == ()
    # the server holds DSN 106..206 nowhere now (ssn 1 has DSN 206, ssn 1001 was discarded)
    blocks = _dsn_blocks(p, MP.guest_sack(p.flow, mp, 4, p.now))
    assert not any(a < 206 and b > 106 for a, b in blocks), (blocks, mp.unsure)


def test_a_fill_at_snd_una_inside_the_forgotten_span_is_one_segment():
    """The cumulative ACK moved into the span the cut record forgot: the hole at snd_una is
    taken (the head is resent alone after the guest's RTO), but where the forgotten ranges
    begin is unknown, so a resend larger than a segment (a GSO super-packet) fills one segment
    there, not up to the next known block over SACKed bytes (review of 3598d89)."""
    p, mp, j2 = _join2([[6, 7, 2, 1, None]], 2)  # (the runs below, in join 2's segments)
    S = MP._seg_max(j2, p.conv._mss_limit[4] - 12)
    mp.runs = [[6, 6 + 3 * S, 2, 1 + 20 * S, None], [6 + 3 * S, 6 + 23 * S, 2, 1, None]]
    mp.snd_nxt, j2.snd_nxt = 6 + 23 * S, 1 + 23 * S
    sacked = [(1 + S + 2 * S * k, 1 + 2 * S + 2 * S * k) for k in range(10)]  # holes of a segment between
    for s, e in sacked:  # one block an ACK
        _ack2(p, 1, (s, e))
    assert (j2.gap_lo, j2.gap_hi) == (1 + 14 * S, 1 + 19 * S)
    # the late originals of the holes below 1 + 15 S arrive: the ACK lands inside the span
    _ack2(p, 1 + 16 * S, (sacked[-1][0], sacked[-1][1]))
    assert j2.snd_una == 1 + 16 * S and j2.gap_hi == 1 + 19 * S
    acts = p.conv.handle(p.g_data(bytes(3 * S), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    assert (1 + 16 * S, 6, S) in sent, sent
    assert not _onto(sent, sacked), sent


# -- the SACK record under any sequence of ACKs ---------------------------------------------------

_ACKS = st.lists(st.tuples(st.integers(-5, 20), st.lists(st.tuples(st.integers(1, 300), st.integers(1, 6)), max_size=4)),
                 max_size=60)


@settings(max_examples=300, deadline=None)
@given(acks=_ACKS)
def test_the_sack_record_never_names_a_byte_no_ack_sacked(acks):
    """Any ACKs (cumulative ACKs moving up by 0-20 or old ones, up to four blocks each, as
    _ack_info feeds _board): the record is ascending, apart, at most MAX_SACKED ranges, above
    snd_una, names only bytes an ACK SACKed since the last reneging, and every such byte
    above snd_una it does not name lies in the span it forgot (gap_lo..gap_hi)."""
    p, mp, j2 = _state()
    j2.sacked = ()
    j2.snd_una, j2.snd_nxt = 1, 10_000
    truth = set()
    for step, blocks in acks:
        a = j2.snd_una + step
        lo = max(a, j2.snd_una)
        if any(s <= lo < e for s, e in j2.sacked):
            truth = set()  # (reneged: the record goes, and its forgotten span)
        new = [(a + x, a + x + n) for x, n in blocks]
        MP._board(j2, sorted(new), a)
        for s, e in new:
            if s > lo:
                truth.update(range(s, e))
        if a > j2.snd_una:
            j2.snd_una = a
        truth = {b for b in truth if b >= j2.snd_una}
        rec = j2.sacked
        assert len(rec) <= MP.MAX_SACKED
        assert all(s < e for s, e in rec) and all(rec[i][1] < rec[i + 1][0] for i in range(len(rec) - 1))
        named = {b for s, e in rec for b in range(s, e)}
        assert named <= truth and all(b >= j2.snd_una for b in named)
        assert all(j2.gap_lo <= b < j2.gap_hi for b in truth - named)
        assert not j2.gap_hi or j2.gap_hi > j2.snd_una  # (a span passed is forgotten)


def test_above_the_head_no_swap_where_the_old_copy_lies_in_the_forgotten_span():
    """The next head's old copy lies in the span the cut SACK record forgot: the server may
    hold it, so no swap (the shape of run 48 again; final re-read of this stop)."""
    runs = [[6, 106, 2, 1401, None], [106, 206, 2, 1501, None], [206, 1606, 2, 1, None], [1606, 2006, 2, 1601, None]]
    p, mp, j2 = _join2(sorted(runs), 2001)
    for k in range(10):
        _ack2(p, 1, (101 + 200 * k, 201 + 200 * k))
    assert (j2.gap_lo, j2.gap_hi) == (1401, 1901)
    acts = p.conv.handle(p.g_data(bytes(200), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    sent = _sent(p, acts)
    assert (1, 6, 100) in sent and (1501, 106, 100) in sent, sent  # (the head in, the next at home)


def test_a_resend_needing_a_new_mapping_with_no_subflow_to_take_it_is_counted():
    """Known stall (run 48's end): subflow 1 sent the guest's FIN, no join lives, and the
    head's home is closed: nothing can take it. Counted (ReinjectNoPath), not silent."""
    p, mp, j2 = _join2([[6, 106, 1, 1, None], [106, 206, 0, 6, None]], 1, dead=(1, 2))
    mp.paths[0].fin_sent = True
    acts = p.conv.handle(p.g_data(bytes(100), seq=(p.flow.guest_isn + 6) & M32), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop) and p.count("ReinjectNoPath") == 1
    assert p.count("GuestAckAgain") == 0 and "no live subflow" in acts[0].reason  # (not the server's ack: stop 46)


def test_a_moved_run_merges_with_the_runs_it_continues_on_both_sides():
    p, mp, j2 = _join2([[6, 106, 2, 1, None], [106, 206, 0, 6, None], [206, 306, 2, 201, None]], 301)
    MP._runs_move(mp, 106, 206, 2, 101)
    assert mp.runs == [[6, 306, 2, 1, None]]
