"""When a subflow's unacked bytes count as lost by the clock (multipath._overdue_at): not before
an ACK could have come. Two RTTs alone declared lone tails lost on the 10 Mbit/s path of
10+50+50 while the server only delayed its ACK, and did so whenever the path's RTT jumped
(tbf's bucket gives 0.1 ms, its queue 13 ms): the guest resent bytes the server had (476
D-SACKs per 8 s upload) and halved its window each time. RFC 6298's srtt + 4 rttvar, and
Linux's delayed ACK for a lone segment, now bound the wait from below."""

from __future__ import annotations

import pytest

from middlebox.core import MULTIPATH as MP
from middlebox.wire import parse_packet

from tests.unit.test_multipath_sack import _joined_pair, _opts
from tests.unit.test_subflow_table import M32


def _path(srtt=0.0, rttvar=0.0, unacked=10_000, mss=1460):
    p = MP.Path(1, None, None, 4, b"\0" * 4, 1, b"\0" * 4, 2, 100.0)
    p.srtt, p.rttvar, p.mss = srtt, rttvar, mss
    p.snd_una, p.snd_nxt = 1, 1 + unacked
    p.progress_at = 100.0
    return p


def test_rtt_samples_follow_rfc_6298():
    p = _path()
    MP._rtt_sample(p, 0.010)
    assert (p.srtt, p.rttvar) == pytest.approx((0.010, 0.005))
    MP._rtt_sample(p, 0.002)  # rttvar = 3/4 * 5 ms + 1/4 * |10 - 2| ms; srtt = 7/8 10 + 1/8 2
    assert p.rttvar == pytest.approx(0.00575)
    assert p.srtt == pytest.approx(0.009)


def test_two_rtts_when_the_rtt_is_steady():
    p = _path(srtt=0.010, rttvar=0.001)
    assert MP._overdue_at(p) == pytest.approx(100.0 + 0.020 + 0.005)


def test_a_jumpy_rtt_waits_for_srtt_plus_four_rttvar():
    """Samples of 0.1 ms (the bucket) and 13 ms (the queue) in turn: two RTTs of the mean were
    shorter than the slow samples themselves."""
    p = _path()
    for _ in range(20):
        MP._rtt_sample(p, 0.0001)
        MP._rtt_sample(p, 0.013)
    assert MP._overdue_at(p) - p.progress_at > 0.013 + 0.005
    assert MP._overdue_at(p) == pytest.approx(p.progress_at + p.srtt + 4 * p.rttvar + 0.005)


def test_samples_reach_the_estimate_through_the_acks_of_a_join():
    """A join's ACKs time its bytes: both srtt and rttvar move (Karn aside)."""
    p, j, _ = _joined_pair(0.02)
    jp = p.path(1)
    jp.srtt = jp.rttvar = 0.0
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.now += 0.004
    p.j_in(p.j_ack(j, ack=ss + 1000))  # (j_in adds 1 ms)
    assert jp.srtt == pytest.approx(0.005, abs=0.0015)
    assert jp.rttvar == pytest.approx(jp.srtt / 2)


def test_duplicate_acks_show_the_byte_at_snd_una_lost_not_the_bytes_above():
    """Two duplicate ACKs say the subflow's snd_una is lost, nothing of its later bytes. Taken
    as loss of any byte, guest_sack went past the subflow's later runs still in flight and
    showed the guest blocks above them: the server D-SACKed 1066 guest resends per 8 s upload
    at 1 % loss (258 with this rule)."""
    p = _path(unacked=30_000)
    p.dups = 2
    assert MP._loss_shown(p, p.snd_una) is True
    assert MP._loss_shown(p, p.snd_una + 20_000) is False
    p.sacked = ((p.snd_una + 25_000, p.snd_una + 26_000),)  # SACK above: lost below it
    assert MP._loss_shown(p, p.snd_una + 20_000) is True
    assert MP._loss_shown(p, p.snd_una + 27_000) is False


def test_a_later_run_in_flight_on_a_subflow_with_duplicate_acks_stops_the_guests_blocks():
    """Runs on subflow 1, the join, subflow 1, the join; the server duplicate-acks subflow 1
    (its first bytes lost) and the join acks all it has: the guest is shown the join's first
    run (above the lost head), and nothing from subflow 1's second run up, still in flight."""
    p, j, p0 = _joined_pair(0.02)
    jp = p.path(1)
    for _ in range(400):
        p.g_send(1, 1000)
        live = [r for r in p.mp.runs if r[1] > p.mp.data_ack]
        if [r[2] for r in live][:4] == [0, jp.index, 0, jp.index]:
            break
    else:
        raise AssertionError(f"no alternating runs: {[r[2] for r in p.mp.runs]}")
    p.j_in(p.j_ack(j, ack=jp.snd_nxt))  # the join acks all it has
    p0.dups = 2  # subflow 1's snd_una lost (no SACK blocks on it)
    p0.progress_at = p.now  # (and not overdue by the clock)
    blocks = MP.guest_sack(p.flow, p.mp, 4)
    gi = p.flow.guest_isn
    shown = [((a - gi) & M32, (b - gi) & M32) for a, b in blocks]
    assert shown == [(live[1][0], live[1][1])], (shown, live[:4])


def test_window_updates_are_no_duplicate_acks():
    """RFC 5681 §2: a duplicate ACK leaves the window as it was. A server reading slowly
    sends window updates at the same ACK; counted as duplicates, two of them showed the
    join's snd_una lost (guest blocks passing it, the hole counted lost)."""
    p, j, _ = _joined_pair(0.02)
    jp = p.path(1)
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    for w in (600, 700, 800):
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss, 0x10, (p.dack(),), window=w))
    assert jp.dups == 0 and not MP._loss_shown(jp, jp.snd_una)
    for _ in range(2):  # the same ACK, the same window: duplicates
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss, 0x10, (p.dack(),), window=800))
    assert jp.dups == 2 and MP._loss_shown(jp, jp.snd_una)
