"""Adversarial cases for 0649295 (a drained subflow's rate sample leaves out its idle time)
and 9ff4a56 (_fill_lost): subflow 1 too, no estimate above bytes over busy time, and
refills that meet a late or in-place copy at the same seq."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP

from tests.unit.test_lost_fill import _resend, _state, _to_lost_fill
from tests.unit.test_resends_into_holes import _ack2, _sent
from tests.unit.test_subflow_table import MPair


def _sf1():
    p = MPair(1)
    p.go_multipath()  # (the join SYN'd, not established: everything on subflow 1)
    p0 = p.mp.paths[0]
    assert p0.snd_una == p0.snd_nxt
    return p, p0


def test_subflow1_sample_after_idle_leaves_the_idle_out():
    p, p0 = _sf1()
    p0.rate = 0.0
    p.now += 0.5
    t0 = p.now
    for _ in range(20):
        p.out(p.g_data(bytes(1000)))
    p.now += 0.02
    p.inn(p.s_ack())
    assert p0.snd_una == p0.snd_nxt
    assert p0.rate >= 20000 / (p.now - t0), p0.rate


def test_subflow1_two_idle_spells_no_inflation():
    """Busy spells [send, drain] add up; the estimate never exceeds bytes / busy time."""
    p, p0 = _sf1()
    p0.rate = 0.0
    busy = 0.0
    tot = 0
    for _ in range(3):
        p.now += 0.4
        t0 = p.now + 0.001  # (the harness: the first send 1 ms on)
        for _ in range(3):
            p.out(p.g_data(bytes(1000)))
            tot += 1000
        p.now += 0.008
        p.inn(p.s_ack())
        busy += p.now - t0
    assert p0.rate > 0.0
    assert p0.rate <= 1.001 * tot / busy, (p0.rate, tot / busy)


def test_wait_from_never_moves_rate_at_past_now_or_back():
    p, p0 = _sf1()
    for acked_at, rate_at in ((1.0, 2.0), (2.0, 1.0), (1.5, 1.5)):
        p0.acked_at, p0.rate_at = acked_at, rate_at
        MP._wait_from(p0, 3.0)
        assert rate_at <= p0.rate_at <= 3.0


def test_refill_is_protected_again_until_news_above_it():
    """After the head went into the lost fill's hole, an immediate resend of the head goes in
    place onto that refill (same DSN, same mapping), not into the hole a third time."""
    p, mp, j2 = _to_lost_fill()
    assert _sent(p, _resend(p, 6)) == [(1, 6, 100)]
    assert (j2.fill_end, j2.fill_hi) == (101, 401)
    assert _sent(p, _resend(p, 6)) == [(1, 6, 100)]
    assert p.count("HeadIntoHole") == 2 and p.count("FillLostRefilled") == 1
    # the guest's resend of DSN 106 (the lost fill's, now homed at 301, where the server
    # holds the head's copy): not into hole 1 again
    sent = _sent(p, _resend(p, 106))
    assert all(ss != 1 for ss, _, _ in sent), sent


def test_the_lost_looking_fill_arrives_late_the_data_level_still_moves():
    """Reordering: the first fill (DSN 106 at ssn 1) was not lost, only late; it wins at
    ssn 1 over the refill (the head). The server then has DSN 6 (at 301) and 106: the
    DATA_ACK passes both; the guest's resends after that are not stuck."""
    p, mp, j2 = _to_lost_fill()
    assert _sent(p, _resend(p, 6)) == [(1, 6, 100)]
    p.c_dack = 206  # (server: DSN 106..206 from ssn 1, 6..106 from ssn 301)
    _ack2(p, 401)
    assert mp.data_ack == 206 and j2.snd_una == 401
    sent = _sent(p, _resend(p, 206))  # its home: closed subflow 1 (moved there by fill 1)
    assert [(d, n) for _, d, n in sent] == [(206, 100)] and sent[0][0] >= 401, sent


def test_a_shorter_refill_and_the_late_first_fill_both_arrive():
    """The refill carries only 50 bytes (the guest resends DSN 6..56): the first fill's run
    splits. The refill wins at ssn 1..51, the late first fill adds 51..101 under its own
    mapping (DSN 156..206, as the run map says). The server lacks DSN 106..156 (the run map
    homes it at 301, where the server holds the head's copy: unsure): the guest's resend
    goes as a new mapping and the DATA_ACK passes."""
    p, mp, j2 = _to_lost_fill()
    assert _sent(p, _resend(p, 6, 50)) == [(1, 6, 50)]
    runs = sorted(tuple(r[:4]) for r in mp.runs if r[2] == 2)
    assert (156, 206, 2, 51) in runs, runs
    p.c_dack = 106
    _ack2(p, 401)
    assert mp.data_ack == 106
    sent = _sent(p, _resend(p, 106, 100))
    assert (106, 50) in [(d, n) for _, d, n in sent] and all(ss >= 401 for ss, d, _ in sent if d == 106), sent
    p.c_dack = 206
    _ack2(p, j2.snd_nxt)
    assert mp.data_ack >= 206


def test_a_resend_of_a_dsn_below_the_holes_does_not_go_onto_an_in_place_copy():
    """X: the guest resends DSN 106 (homed at the fill, ssn 1) while the fill's ACK is due:
    in place at ssn 1, sent AFTER the head's copy at 301. The server SACKs 301..401 (the
    head's copy), its cumulative ACK at 1 (fill 1 lost, X still in flight on a FIFO path):
    _fill_lost. The guest's resend of DSN 206 still goes to the tail, not onto X at ssn 1:
    the hole's DSN (106) lies below its end (_head_hole's `dh < end`); only the head (DSN
    6, below it) may go there, and then the copy the server takes first wins harmlessly
    (test_the_lost_looking_fill_arrives_late_the_data_level_still_moves)."""
    p, mp, j2 = _state()
    assert _sent(p, _resend(p, 106)) == [(1, 106, 100)]
    assert _sent(p, _resend(p, 6)) == [(301, 6, 100)]
    assert _sent(p, _resend(p, 106)) == [(1, 106, 100)]  # X, in place
    _ack2(p, 1, (101, 401))
    assert MP._fill_lost(j2)
    assert _sent(p, _resend(p, 206)) == [(401, 206, 100)]
    assert p.count("FillLostRefilled") == 0
