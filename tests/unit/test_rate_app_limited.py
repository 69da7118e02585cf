"""Delivery-rate samples of an upload subflow and the app-limited rule (BBR's): a sample
taken over a span in which the subflow ran dry measures what the scheduler gave it, not
what its path delivers, so it may raise the estimate but never lower it. Taken as it came, a
join that got little had a low estimate, was given little again, and so on: the third
subflow of 3 x 100 Mbit/s starved in about 8 upload runs of 45."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from middlebox.wire import parse_packet

from tests.unit.test_subflow_table import M32, MPair

FAST = 12.5e6  # bytes/s: 100 Mbit/s measured


def _join():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p1 = p.mp.paths[1]
    p1.rate = FAST
    return p, j, p1


def _on_join(p, j) -> int:
    """One guest segment of 1000 bytes placed on the join: its relative subflow seq."""
    return (parse_packet(p.data_on(1, size=1000)).seq - j.c_isn) & M32


def test_a_sample_over_a_span_in_which_the_join_ran_dry_does_not_lower_its_estimate():
    p, j, p1 = _join()
    ss = _on_join(p, j)
    assert p1.snd_nxt - p1.snd_una == 1000  # all it was given
    p.now += 0.05
    p.j_in(p.j_ack(j, ack=ss + 1000))  # acked: 20 KB/s over the span, and dry again
    assert p1.snd_una == p1.snd_nxt
    assert p1.rate == FAST
    # nor does the next one, which starts dry
    ss = _on_join(p, j)
    p.now += 0.05
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert p1.rate == FAST


def test_a_higher_sample_raises_the_estimate_even_when_the_join_ran_dry():
    p, j, p1 = _join()
    p1.rate = 1e5
    ss = _on_join(p, j)
    p.now += 0.001
    p.j_in(p.j_ack(j, ack=ss + 1000))  # too soon for a sample (span < 20 ms)
    assert p1.rate == 1e5
    ss = _on_join(p, j)
    p.now += 0.02
    p.j_in(p.j_ack(j, ack=ss + 1000))  # 2000 bytes over 21 ms: 95 KB/s < 100 KB/s, kept
    assert p1.rate == 1e5
    for _ in range(40):
        _on_join(p, j)
    p.now += 0.02
    p.j_in(p.j_ack(j, ack=(p1.snd_nxt - 1) & M32))  # 40 KB over 20 ms: 2 MB/s
    assert p1.rate > 1e5


def test_a_join_that_stays_busy_over_the_span_lowers_its_estimate():
    """A path that slows keeps its queue: no span runs dry, and the estimate follows it down
    (what the cost policy re-plans from when an uplink slows)."""
    p, j, p1 = _join()
    first = _on_join(p, j)
    _on_join(p, j)
    p.now += 0.05
    p.j_in(p.j_ack(j, ack=first + 1000))  # the first span started dry (a new join): kept
    assert p1.rate == FAST and p1.snd_nxt > p1.snd_una
    _on_join(p, j)
    p.now += 0.05
    p.j_in(p.j_ack(j, ack=first + 2000))  # 1000 bytes in 50 ms, never dry: a real sample
    assert p1.snd_nxt > p1.snd_una
    assert p1.rate < 0.76 * FAST  # 0.75 of the old estimate and a quarter of 20 KB/s


def _burst_on_join(p, j, n: int) -> int:
    """n guest segments of 1000 bytes placed on the join; the relative seq after them."""
    for _ in range(n):
        ss = _on_join(p, j)
    return ss + 1000


def test_a_joins_first_sample_does_not_span_the_pause_before_its_first_bytes():
    """A join established before any subflow had an estimate starts with none (0), and its
    first sample is taken as it comes. Given its first bytes 0.3 s after it was established,
    the sample spanned the pause and read a quarter of the delivery, and a join whose
    estimate is low is given little, so stays low (CI: the only join on uplink 2 carried
    0.28 MB of an 8 MB upload; a trace showed a join at 44 KB/s on a 50 Mbit/s path)."""
    p, j, p1 = _join()
    p1.rate = 0.0
    p.now += 0.3
    t0 = p.now
    end = _burst_on_join(p, j, 40)  # (the harness: 1 ms per guest segment)
    p.now += 0.02
    p.j_in(p.j_ack(j, ack=end))
    delivered = 40000 / (p.now - t0)  # about 0.5 MB/s; over the pause too, 0.1
    assert p1.rate >= delivered, (p1.rate, delivered)


def test_a_sample_after_an_idle_spell_raises_a_low_estimate():
    """An app-limited sample may raise the estimate: measured from the bytes' send, not from
    the sample before the idle spell, the join's delivery shows and lifts a low estimate."""
    p, j, p1 = _join()
    p1.rate = 1e5
    end = _burst_on_join(p, j, 5)
    p.now += 0.03
    p.j_in(p.j_ack(j, ack=end))  # 5 KB over 30 ms: 167 KB/s, dry again
    assert p1.snd_una == p1.snd_nxt
    low = p1.rate
    assert 1e5 < low < 2e5
    p.now += 1.0  # idle
    t0 = p.now
    end = _burst_on_join(p, j, 40)
    p.now += 0.02
    p.j_in(p.j_ack(j, ack=end))  # about 0.5 MB/s (over the idle second too, 36 KB/s)
    assert p1.rate >= 0.75 * low + 0.25 * 40000 / (p.now - t0), (p1.rate, low)


def test_a_join_that_drains_between_short_bursts_is_measured_over_its_busy_time():
    """Bursts of 5 KB, each acked 5 ms after its last byte went out, then 20 ms idle: no
    single busy spell lasts the 20 ms a sample needs, yet the busy spells add up to one,
    and the estimate is what they delivered (5 KB per 10 ms), idle time left out."""
    p, j, p1 = _join()
    p1.rate = 0.0
    busy = 0.0
    for _ in range(6):
        p.now += 0.02  # idle
        t0 = p.now
        end = _burst_on_join(p, j, 5)
        p.now += 0.005
        p.j_in(p.j_ack(j, ack=end))
        assert p1.snd_una == p1.snd_nxt
        busy += p.now - t0
    assert p1.rate > 0.0
    assert 0.9 * 5000 / 0.011 < p1.rate < 1.1 * 5000 / 0.01, (p1.rate, busy)
