"""A join's own congestion window with repair (`--repair-bytes N --repair-window`). Repair hides a join's
losses from the guest, so the guest's one window no longer answers congestion there; the
join gets a window of its own, as a Linux subflow has (RFC 8312 §4.2's AIMD: cut to
CWND_BETA of the flight once per window of data, CWND_ALPHA segments of growth per window).
The window decides what is kept, not where new bytes go (the scheduler weighs a full join
by delivery time as any other): bytes a join is given without room are not kept, so their
loss is shown to the guest, whose window then answers, as without repair."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from middlebox.wire import Dss, parse_packet

from tests.unit.test_join_repair import _resent, _sack
from tests.unit.test_join_repair import _pair as _repair_pair
from tests.unit.test_subflow_table import ACK, M32, MPair


def _pair(**kw):
    return _repair_pair(repair_window=True, **kw)


def _on_join(p, j, n):
    """n 1000-byte guest segments placed on the join: their relative seqs."""
    return [(parse_packet(p.data_on(1, size=1000)).seq - j.c_isn) & M32 for _ in range(n)]


def test_a_join_gets_its_own_window_only_with_repair():
    p, j, p1 = _pair()
    assert 500 < p1.smss <= 1500 and p1.cwnd == MP.CWND_INIT * p1.smss
    q = MPair(1)
    q.go_multipath()
    q.join_up(1)
    assert q.mp.paths[1].cwnd == 0  # without repair: no window, the scheduler as before
    q, _, q1 = _repair_pair()
    assert q1.cwnd == 0  # repair without the switch: as before


def test_a_loss_event_cuts_the_window_once_per_window_of_data():
    p, j, p1 = _pair()
    s = _on_join(p, j, 6)
    assert s == [s[0] + 1000 * k for k in range(6)]
    s0 = s[0]
    w0 = p1.cwnd
    # the first segment lost: the server SACKs two blocks above it
    acts = p.j_in(_sack(p, j, s0, [(s0 + 1000, s0 + 2000), (s0 + 3000, s0 + 4000)]))
    assert [x[0] for x in _resent(p, j, acts)] == [s0]
    assert p.count("JoinCwndCut") == 1
    assert p1.cwnd == max(int(min(6000, w0) * MP.CWND_BETA), 2 * p1.smss) == p1.ssthresh
    assert p1.recover == p1.snd_nxt
    cut = p1.cwnd
    # a second hole within the same window of data is repaired but cuts nothing more,
    # and the acks within it do not grow the window (recovery)
    acts = p.j_in(_sack(p, j, s0 + 2000, [(s0 + 3000, s0 + 4000)]))
    assert [x[0] for x in _resent(p, j, acts)] == [s0 + 2000]
    assert p.count("JoinRepairTX") == 2 and p.count("JoinCwndCut") == 1 and p1.cwnd == cut


def test_the_window_grows_in_slow_start_when_used_and_not_when_idle():
    p, j, p1 = _pair()
    w0 = p1.cwnd
    (s0,) = _on_join(p, j, 1)
    p.j_in(p.j_ack(j, ack=s0 + 1000))  # one segment of a 14 KB window: not in use
    assert p1.cwnd == w0
    s = _on_join(p, j, 8)  # 8000 bytes in flight: more than half the window
    assert 2 * 8000 >= w0
    p.j_in(p.j_ack(j, ack=s[-1] + 1000))
    assert p1.cwnd == w0 + 8000  # slow start: by the bytes acked


def test_after_a_cut_the_window_grows_by_alpha_segments_per_window():
    p, j, p1 = _pair()
    p1.cwnd = p1.ssthresh = 4 * p1.smss
    p1.recover = p1.snd_nxt
    p.mp.paths[0].snd_wnd = 0  # subflow 1 closed: the join gets the bytes (beyond its window too)
    s = _on_join(p, j, 4)
    w = p1.cwnd
    p.j_in(p.j_ack(j, ack=s[0] + 1000))
    assert p1.cwnd == w + max(int(MP.CWND_ALPHA * p1.smss * 1000 / w), 1)
    assert p1.cwnd < w + 1000  # not slow start


def test_a_full_join_still_competes_by_delivery_time():
    """The join's own window decides what is kept, not where new bytes go. Kept off a full
    join, they all went to subflow 1, which has no window of its own, and when that was the
    slow path its queue overflowed (30+100 Mbit/s clean: 114-115 Mbit/s against Linux's 121,
    122 when the full join competes)."""
    p, j, p1 = _pair()
    mp = p.mp
    p0 = mp.paths[0]
    _on_join(p, j, 2)
    p1.cwnd = 2000  # full: 2000 bytes in flight
    p0.snd_una = p0.snd_nxt - 1000
    p1.rate = p0.rate = 1e7
    limited = p.count("JoinCwndLimited")
    # subflow 1 drains its 1000 bytes and the new ones before the join its 3000: subflow 1
    mp.burst_left = 0
    assert MP.pick(mp, 1000, p.conv.counters, p.now) == 0
    assert p.count("JoinCwndLimited") == limited  # (counted when the full join is chosen)
    # subflow 1's queue longer than the join's: the join, full or not
    p0.snd_una -= 2001
    mp.burst_left = 0
    assert MP.pick(mp, 1000, p.conv.counters, p.now) == 1
    assert p.count("JoinCwndLimited") == limited + 1
    p1.cwnd = 2001  # room for a byte: the same choice, not counted
    mp.burst_left = 0
    assert MP.pick(mp, 1000, p.conv.counters, p.now) == 1
    assert p.count("JoinCwndLimited") == limited + 1
    # subflow 1 closed by the server's window: the full join all the same (never none while
    # one is alive: the guest's window is the limit)
    p1.cwnd = 2000
    p0.snd_una += 2001
    p0.snd_wnd = 0
    mp.burst_left = 0
    assert MP.pick(mp, 1000, p.conv.counters, p.now) == 1
    assert p.count("JoinCwndLimited") == limited + 2
    # and what it takes beyond its window is not kept
    (s3,) = _on_join(p, j, 1)
    assert all(r[0] != s3 for r in p1.rtx) and p.count("RepairBeyondWindow") >= 1


def test_bytes_beyond_the_window_are_not_kept_and_their_loss_is_the_guests():
    p, j, p1 = _pair()
    (s1,) = _on_join(p, j, 1)
    p1.cwnd = 1000  # full with s1; the next one beyond it
    p.mp.paths[0].snd_wnd = 0
    p1.rate, p.mp.paths[0].rate = 1e9, 1.0
    (s2,) = _on_join(p, j, 1)
    assert s2 == s1 + 1000
    assert [r[0] for r in p1.rtx] == [s1] and p.count("RepairBeyondWindow") == 1
    assert MP._repairing(p1, s1) and not MP._repairing(p1, s2)
    p.j_in(p.j_ack(j, ack=s1 + 1000))  # s1 acked; s2 (not kept) lost
    p.now += 0.2
    acts = p.j_in(_sack(p, j, s2, [(s2 + 500, s2 + 1000)]))
    assert _resent(p, j, acts) == [] and p.count("JoinRepairTX") == 0
    assert MP._hole_evident(p.flow, p1, s2, p.now)  # shown to the guest, which resends it


def _in_turn():
    """A full join in slow start (everything goes to it) given kept and not-kept segments in
    turn, each ACK opening room for one more: K0a, K0b kept, U1 not; K0a acked; K1 kept, U2
    not. Returns the pair, the join, its path and those five seqs."""
    p, j, p1 = _pair()
    p.mp.paths[0].snd_wnd = 0
    p1.cwnd = 2000  # (ssthresh unbounded)
    k0a, k0b, u1 = _on_join(p, j, 3)  # the third beyond the window
    p.j_in(p.j_ack(j, ack=k0a + 1000))  # room for one more
    k1, u2 = _on_join(p, j, 2)
    return p, j, p1, (k0a, k0b, u1, k1, u2)


def test_a_hole_not_kept_between_kept_segments_is_the_guests():
    """A full join that competes gets kept and not-kept segments in turn, each ACK opening
    room for one more. A loss of a segment not kept between two kept ones is the guest's
    (nobody else resends it): review of 215f700, where it stayed hidden, and the guest's SACK
    stopped below it, until the guest's resend of the hole before it was acked."""
    p, j, p1, (k0a, k0b, u1, k1, u2) = _in_turn()
    p.j_in(p.j_ack(j, ack=k0b + 1000))
    (k2,) = _on_join(p, j, 1)
    assert [r[0] for r in p1.rtx] == [k1, k2] and p1.snd_una == u1
    # the server lost U1 and U2 (not kept), has K1 and K2
    acts = p.j_in(_sack(p, j, u1, [(k1, k1 + 1000), (k2, k2 + 1000)]))
    assert _resent(p, j, acts) == []  # nothing kept is lost: both holes are the guest's
    assert MP._hole_evident(p.flow, p1, u1, p.now) and MP._hole_evident(p.flow, p1, u2, p.now)
    assert len(MP.guest_sack(p.flow, p.mp, 4, p.now)) == 2
    # kept bytes stay ours: K1's and K2's first and last bytes, not the bytes between
    assert all(MP._repairing(p1, x) for x in (k1, k1 + 999, k2, k2 + 999))
    assert not any(MP._repairing(p1, x) for x in (k1 - 1, u2, k2 - 1, k2 + 1000))


def test_a_window_grows_by_a_windows_worth_of_acks_per_round():
    """A full join gets bytes beyond its window; the acks of all of them grew it 3 x too
    fast: in congestion avoidance 1588 bytes in one round where CWND_ALPHA segments (752) are
    due, in slow start 4000 -> 11000 in one round (review of 215f700). At most a window's
    worth of acked bytes per round counts."""
    p, j, p1 = _pair()
    p.mp.paths[0].snd_wnd = 0  # the join is all the scheduler has: driven 3x over
    w = p1.cwnd = p1.ssthresh = 4000
    p1.recover = p1.snd_nxt
    s = _on_join(p, j, 12)
    assert len(p1.rtx) == 4 and p.count("RepairBeyondWindow") == 8
    for x in s:
        p.j_in(p.j_ack(j, ack=x + 1000))
    assert 0 < p1.cwnd - w <= MP.CWND_ALPHA * p1.smss + 1
    q, k, q1 = _pair()
    q.mp.paths[0].snd_wnd = 0
    q1.cwnd = 4000  # slow start
    s = _on_join(q, k, 12)
    for x in s:
        q.j_in(q.j_ack(k, ack=x + 1000))
    assert q1.cwnd == 8000  # doubled in one round, as slow start does


def _busy(p, j, first, rounds):
    """The join kept busy: `first` segments in flight, then one more per segment acked (in
    order, no loss), `rounds` times."""
    q = _on_join(p, j, first)
    for _ in range(rounds):
        p.j_in(p.j_ack(j, ack=q[0] + 1000))
        q = q[1:] + _on_join(p, j, 1)


def test_a_busy_join_after_a_cut_regrows_its_window():
    """After a cut, a join the scheduler keeps busy beyond its window: its window climbs back
    and repair resumes. Grown only by the acks of bytes kept (7d15396), it froze: nothing
    sent while full is kept, so nothing grew it again (review of 7d15396: 3570 bytes for
    good, nothing kept)."""
    p, j, p1 = _pair()
    p.mp.paths[0].snd_wnd = 0  # everything to the join
    p1.cwnd = p1.ssthresh = 2 * p1.smss
    p1.recover = p1.snd_nxt
    _busy(p, j, 6, 200)  # 6000 bytes in flight throughout
    assert p1.cwnd >= 6000 and len(p1.rtx) == 6


def test_a_busy_join_in_slow_start_keeps_growing():
    """No loss: a fresh join driven past its initial window (40 KB in flight, 14 KB of
    window) grows until all it has in flight is kept (review of 7d15396: frozen at 29200
    after the first round)."""
    p, j, p1 = _pair()
    p.mp.paths[0].snd_wnd = 0
    _busy(p, j, 40, 400)
    assert p1.cwnd >= 40000 and len(p1.rtx) == 40


def test_a_hole_not_kept_right_behind_a_kept_one_is_the_guests():
    """A kept segment and the one not kept behind it, both lost, the server's SACK above:
    we repair the kept one, the guest is shown the hole, since the other is its to resend
    (review of 7d15396: hidden until our repair was acked). The guest resends the kept one
    too, as when the hole not kept comes first."""
    p, j, p1, (k0a, k0b, u1, k1, u2) = _in_turn()
    assert [r[0] for r in p1.rtx] == [k0b, k1] and k1 == u1 + 1000 == k0b + 2000
    assert MP.guest_sack(p.flow, p.mp, 4, p.now) == ()  # nothing known lost yet
    acts = p.j_in(_sack(p, j, k0b, [(k1, k1 + 1000)]))  # K0b and U1 lost
    assert [x[0] for x in _resent(p, j, acts)] == [k0b]
    assert MP._repairing(p1, k0b) and not MP._repairing(p1, u1)
    assert MP._gap_evident(p.flow, p1, k0b, k1, p.now)
    assert len(MP.guest_sack(p.flow, p.mp, 4, p.now)) == 1  # K1 (and above) shown
    # a hole of kept bytes alone stays ours: K0b lost, U1 arrived
    q, k, q1, (c0a, c0b, v1, c1, v2) = _in_turn()
    q.j_in(_sack(q, k, c0b, [(v1, c1 + 1000)]))
    assert not MP._gap_evident(q.flow, q1, c0b, v1, q.now)
    assert MP.guest_sack(q.flow, q.mp, 4, q.now) == ()


def _kept_then_not(p, j, p1):
    """K (kept) and U (beyond the window: not kept) on the join, then three segments on
    subflow 1 that the server acks there: blocks above K/U once their hole is evident."""
    p0 = p.mp.paths[0]
    w0 = p0.snd_wnd
    p0.snd_wnd = 0
    p1.cwnd = 1000
    k, u = _on_join(p, j, 2)
    assert [r[0] for r in p1.rtx] == [k]
    _above_on_sf1(p, p1, w0)
    return k, u


def _above_on_sf1(p, p1, w0):
    """Subflow 1 open again (window w0) and fast: three guest segments on it, which the
    server acks there (a DATA_ACK up to the join's first bytes)."""
    p0 = p.mp.paths[0]
    p0.snd_wnd = w0
    p.mp.burst_left = 0
    p1.rate, p0.rate = 1.0, 1e9
    assert all("data@1" not in labels for labels, _ in p.g_send(3, 1000))
    hole = min(r[0] for r in p.mp.runs if r[2] == 1)
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (Dss(data_ack=(p.idsn_c + hole) & M32),)))


def test_the_stall_of_a_kept_hole_does_not_show_the_bytes_behind_it():
    """Review of 08aeb59. K lost, U arrived (the server's two duplicate ACKs, no SACK on the join): K is ours,
    repaired; its repair lost. By the clock (no progress: K's loss) U, which the server
    has, was shown lost to the guest: blocks above it, the guest resends K and U and halves
    its window for a loss the middlebox repairs."""
    p, j, p1 = _pair()
    k, u = _kept_then_not(p, j, p1)
    p.j_in(p.j_ack(j, ack=k))
    acts = p.j_in(p.j_ack(j, ack=k))  # two duplicates: U (or something above K) arrived
    assert [x[0] for x in _resent(p, j, acts)] == [k]
    assert MP.guest_sack(p.flow, p.mp, 4, p.now) == ()
    t = MP._overdue_at(p1) + 0.001  # before the second repair (1.5 RTTs) is acked
    assert p1.rep_n == 1 and t < MP._rerepair_at(p1) + p1.srtt
    assert MP.guest_sack(p.flow, p.mp, 4, t) == (), "a hole we repair shown by its own stall"


def test_no_credit_of_the_round_before_a_cut():
    """Review of 08aeb59. The cut on the ACK that began a round: recover == grow_end; the ACK that reaches
    recover exactly is still in the old round: the old (uncut) window's credit."""
    p, j, p1 = _pair()
    p.mp.paths[0].snd_wnd = 0
    p1.cwnd = p1.ssthresh = 10000
    p1.recover = p1.snd_nxt
    s = _on_join(p, j, 10)
    p.j_in(p.j_ack(j, ack=s[1]))  # a round begins: grow_end = snd_nxt
    assert p1.grow_end == p1.snd_nxt
    p.j_in(_sack(p, j, s[1], [(s[2], s[9] + 1000)]))  # s[1] lost: cut
    assert p1.recover == p1.grow_end
    w = p1.cwnd
    p.j_in(p.j_ack(j, ack=s[9] + 1000))  # repaired: all acked, == recover
    assert p1.cwnd - w <= max(int(MP.CWND_ALPHA * p1.smss), 1), (w, p1.cwnd)


def test_a_kept_tail_stalled_does_not_show_the_bytes_just_sent_behind_it():
    """Review of 08aeb59. SACK on the join. K (kept) lost at the tail; U (beyond the window, not kept) sent
    just before K is overdue, in flight. By the clock alone (K's stall) U was shown lost
    to the guest with blocks above it, 2 ms after it was sent on a 10 ms path."""
    p, j, p1 = _pair()
    p0 = p.mp.paths[0]
    w0 = p0.snd_wnd
    p0.snd_wnd = 0
    p1.cwnd = 1000
    (k,) = _on_join(p, j, 1)
    p1.progress_at = p.now  # (as if the bytes before K were just acked)
    p.now = MP._overdue_at(p1) - 0.002
    (u,) = _on_join(p, j, 1)
    assert [r[0] for r in p1.rtx] == [k] and u == k + 1000
    _above_on_sf1(p, p1, w0)
    t = MP._overdue_at(p1) + 0.001
    assert t - 0.004 < p.now + 0.001  # U left ~3 ms ago on a path of srtt 10 ms
    assert MP.guest_sack(p.flow, p.mp, 4, t) == (), "U, in flight, shown lost by K's stall"


def _until_repair(p, j):
    """The clock on, a millisecond at a time, until our repair goes: its time."""
    t = t0 = p.now
    while t < t0 + 5.0:
        t += 0.001
        p.now = t
        if _resent(p, j, p.conv.tick(t)):
            return t
    raise AssertionError("no repair in 5 s")


def test_the_ack_of_our_repair_short_of_what_went_before_it_shows_that_loss():
    """Review of 844847d. K (kept) and U (not kept) lost, nothing above them on the join (its
    tail, or a server without SACK). The ACK of our repair of K stops at U: U went before
    the repair, so it is lost (a FIFO path, as for a fill), and the guest, the one to resend
    it, is told at once, not by the clock 2 RTTs later."""
    p, j, p1 = _pair()
    k, u = _kept_then_not(p, j, p1)
    rep = _until_repair(p, j)
    assert MP.guest_sack(p.flow, p.mp, 4, p.now) == ()  # K is ours: U not shown yet
    p.now = rep + p1.srtt
    acts = p.j_in(p.j_ack(j, ack=u))  # our repair arrived; U did not
    assert p1.snd_una == u and p1.lost_una == u
    assert MP._hole_evident(p.flow, p1, u, p.now) and p.now < MP._overdue_at(p1)
    assert "g_ack" in p.classify(acts) and MP.guest_sack(p.flow, p.mp, 4, p.now)


def test_a_late_original_right_after_our_repair_shows_nothing():
    """Review of 844847d. K only late: repaired by the clock, then K's original arrives 1 ms
    after the repair went, its ACK stopping at U, which may be on its way too: not a loss."""
    p, j, p1 = _pair()
    k, u = _kept_then_not(p, j, p1)
    p.now = _until_repair(p, j) + 0.001
    p.j_in(p.j_ack(j, ack=u))
    assert p1.lost_una != u
    assert MP.guest_sack(p.flow, p.mp, 4, p.now) == ()


def test_a_late_original_between_half_and_one_rtt_after_the_repair_shows_nothing():
    """Review of 6877899. K only late (a delay spike): repaired by the clock; K's original arrives 0.6 srtt after
    the repair went, too soon for the repair's own ACK (a full round trip). Its ACK stops at
    U, which is right behind it on a FIFO path: not a loss."""
    p, j, p1 = _pair()
    k, u = _kept_then_not(p, j, p1)
    rep = _until_repair(p, j)
    p.now = rep + 0.6 * p1.srtt
    p.j_in(p.j_ack(j, ack=u))
    assert p1.lost_una != u, "U, in flight behind K's late original, taken as lost"
    assert MP.guest_sack(p.flow, p.mp, 4, p.now) == ()


def test_the_ack_of_our_repair_stopping_at_a_gap_not_kept_inside_it_shows_that_loss():
    """Review of 6877899. K0b, U1 (not kept), K1 lost at the join's tail, no SACK. Our repair sends K0b and K1
    (rep_hi = K1's end). K0b's repair arrives: the ACK stops at U1, sent before the repair,
    so lost (FIFO) as in 6877899's own case, but a < rep_hi: still only the clock tells."""
    p, j, p1, (k0a, k0b, u1, k1, u2) = _in_turn()
    p.j_in(p.j_ack(j, ack=k0b))  # K0a acked
    rep = _until_repair(p, j)
    assert p1.rep_hi == k1 + 1000 > u1
    p.now = rep + p1.srtt
    p.j_in(p.j_ack(j, ack=u1))  # K0b's repair arrived; U1 did not
    assert p.now < MP._overdue_at(p1)
    assert MP._hole_evident(p.flow, p1, u1, p.now), "U1 lost, the guest's, shown only by the clock"


def test_an_ack_inside_a_fill_that_went_after_the_repair_is_not_a_loss():
    """Review of 6877899. After our repair of K was acked at U1 (U1 lost: the guest's), the guest's resend of U1
    and U2 (one 2000-byte segment) goes into the hole (_into_hole: fill [U1, U3), lost_una
    -1). U1's late original arrives: the ACK stops at U2, inside the fill; the fill rule
    says 'may be late too', but the repair rule (rep_nxt from before the fill) overrides it."""
    p, j, p1 = _pair()
    p0 = p.mp.paths[0]
    w0 = p0.snd_wnd
    p0.snd_wnd = 0
    p1.cwnd = 1000
    k, u1, u2, u3 = _on_join(p, j, 4)
    _above_on_sf1(p, p1, w0)
    rep = _until_repair(p, j)
    p.now = rep + p1.srtt
    p.j_in(p.j_ack(j, ack=u1))
    assert p1.lost_una == u1
    # what _into_hole does for the guest's resend [U1, U3) into the hole at snd_una
    p1.fill_hi, p1.fill_lo, p1.fill_end, p1.fill_m, p1.lost_una = p1.snd_nxt, u1, u1 + 2000, None, -1
    p.now += 0.002
    p.j_in(p.j_ack(j, ack=u2))  # U1's late original
    assert p1.lost_una != u2, "U2, inside the fill in flight, taken as lost by the repair rule"
