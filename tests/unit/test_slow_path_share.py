"""New guest bytes chosen for a subflow under half as fast as the best go there only in its
share (multipath._slow_share: the burst pick allows it, in whole segments), and the rest is
scheduled again. A whole GSO super-packet (netlink backend, up to 64 KB) on the 30 Mbit/s
path of 30+100 held the data level up while the guest's one window waited for it: upload
0.96 of Linux MPTCP; split 1.01 (bench/results/multipath-slowshare-*)."""

from __future__ import annotations

from middlebox.core import Direction, Drop, Rewrite
from middlebox.core import MULTIPATH as MP

from tests.unit.test_checksum_segment_maps import _maps
from tests.unit.test_subflow_table import MPair


def _pair(r0: float, r1: float):
    """A multipath pair whose next pick is subflow 1 (the end of a burst there), subflow 1
    and the join measured at r0 and r1 bytes/s."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mp = p.mp
    mp.last_pick, mp.burst_left = 0, 1000
    p.g_send(1, 100)  # subflow 1 busy (bytes in flight), its estimate a measure (not app-limited)
    assert mp.paths[0].snd_nxt > mp.paths[0].snd_una
    mp.paths[0].rate, mp.paths[1].rate = r0, r1
    mp.paths[0].app_lim = mp.paths[1].app_lim = False
    mp.last_pick, mp.burst_left = 0, 1
    return p


def _stream(sent):
    """{dsn: byte} of what the server gets, by the DSS mappings of the segments sent (each
    segment's own mapping, or its place in a mapping over several)."""
    out = {}
    for pkt, payload, dss in sent:
        off = (pkt.seq - dss.subflow_seq) & 0xFFFFFFFF if dss.data_len != len(payload) else 0
        for i, b in enumerate(payload):
            out[dss.data_seq + off + i] = b
    return out


def test_a_super_packet_for_a_much_slower_subflow_gives_it_its_share_and_the_rest_elsewhere():
    p = _pair(1.25e6, 5e6)  # 10 and 40 Mbit/s: subflow 1 at a quarter of the best
    mss = p.conv._mss_limit[4] - 12
    share = max(mss, int(MP.BURST * 0.25) // mss * mss)
    body = bytes(range(256)) * (10 * mss // 256 + 1)
    body = body[:10 * mss]
    acts = p.conv.handle(p.g_data(body), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop)  # not in place: two subflows
    assert p.count("SlowPathShare") == 1
    sent = _maps(p, acts[1:])
    runs = p.mp.runs[-2:]
    assert [r[2] for r in runs] == [0, 1]
    assert runs[0][1] == runs[1][0] and runs[1][1] - runs[1][0] == 10 * mss - share  # (the first
    # run also holds the bytes before: contiguous on subflow 1, they merged)
    got = _stream(sent)
    d0 = min(got)
    assert bytes(got[d0 + i] for i in range(len(body))) == body  # the server's stream is the guest's
    # the guest resends the whole super-packet: each byte to the same subflow, seq and mapping
    s0 = (p.g_nxt - len(body)) & 0xFFFFFFFF
    p.now += 0.3
    again = p.conv.handle(p.g_data(body, seq=s0), Direction.OUT, p.now)
    assert p.count("GuestRetransMapped") >= 2 and p.count("SlowPathShare") == 1
    assert [(a.seq, d.data_seq, d.subflow_seq, d.data_len) for a, _, d in _maps(p, again[1:])] == \
        [(a.seq, d.data_seq, d.subflow_seq, d.data_len) for a, _, d in sent]


def test_no_split_when_the_subflow_is_at_least_half_as_fast_as_the_best():
    """... and the super-packet is within SHARE_TIME of its rate (3e7 B/s: 60 KB in 2 ms)."""
    p = _pair(3e7, 5e7)
    mss = p.conv._mss_limit[4] - 12
    acts = p.conv.handle(p.g_data(b"x" * (10 * mss)), Direction.OUT, p.now)
    assert isinstance(acts[0], Rewrite)  # in place, one mapping over the super-packet
    ((_, payload, dss),) = _maps(p, acts[:1])
    assert dss.data_len == len(payload) == 10 * mss
    assert p.count("SlowPathShare") == 0


def test_a_fast_subflow_takes_at_most_share_time_of_its_rate_and_the_rest_goes_elsewhere():
    """(Stop 40.) Subflow 1 at 6.25e6 B/s (50 Mbit/s, as fast as the join): SHARE_TIME (2 ms)
    of it is 12.5 KB, 8 segments of a 20-segment super-packet; the rest is scheduled again
    and goes to the join, whose queue drains first now. Whole, one 28-64 KB burst on a 50
    Mbit/s path with a 5 ms buffer overflowed it (bench: 3 x 50 Mbit/s upload 0.89 of Linux
    MPTCP, 0.96 cut). The server's stream is the guest's, and a resend of the whole
    super-packet maps each byte where it went."""
    p = _pair(6.25e6, 6.25e6)
    mss = p.conv._mss_limit[4] - 12
    body = (bytes(range(256)) * (20 * mss // 256 + 1))[:20 * mss]
    acts = p.conv.handle(p.g_data(body), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop)  # not in place: two subflows
    assert p.count("SlowPathShare") == 1
    share = int(6.25e6 * MP.SHARE_TIME) // mss * mss
    assert share == 8 * mss
    runs = p.mp.runs[-2:]
    assert [r[2] for r in runs] == [0, 1]
    assert runs[1][1] - runs[1][0] <= 20 * mss - share
    sent = _maps(p, acts[1:])
    got = _stream(sent)
    d0 = min(got)
    assert bytes(got[d0 + i] for i in range(len(body))) == body
    s0 = (p.g_nxt - len(body)) & 0xFFFFFFFF
    p.now += 0.3
    again = p.conv.handle(p.g_data(body, seq=s0), Direction.OUT, p.now)
    assert p.count("SlowPathShare") == 1
    assert [(a.seq, d.data_seq, d.subflow_seq, d.data_len) for a, _, d in _maps(p, again[1:])] == \
        [(a.seq, d.data_seq, d.subflow_seq, d.data_len) for a, _, d in sent]


def test_no_split_of_the_guests_fin_on_subflow_1():
    """The guest's FIN goes on subflow 1 with its DATA_FIN, all of the segment with it."""
    p = _pair(1.25e6, 5e6)
    mss = p.conv._mss_limit[4] - 12
    acts = p.conv.handle(p.g_data(b"y" * (10 * mss), fin=True), Direction.OUT, p.now)
    assert isinstance(acts[0], Rewrite)
    ((_, payload, dss),) = _maps(p, acts[:1])
    assert dss.data_fin and dss.data_len == 10 * mss + 1
    assert p.count("SlowPathShare") == 0


def test_a_drained_join_or_one_measured_only_app_limited_takes_it_all():
    """A join's estimate may be what it was given, not what its path delivers: split there, a
    join the cost policy had just brought in got a segment at a time, was measured low from
    that and starved (test_cost_policy_keeps_the_dear_uplink_idle: 0.2 MB of a 16 MB upload).
    Subflow 1, drained, is still split (its estimate starts from the flow's rate)."""
    for drained in (True, False):
        p = _pair(5e6, 1.25e6)  # the join at a quarter of subflow 1's rate
        mp = p.mp
        j = mp.paths[1]
        mp.last_pick, mp.burst_left = 1, 1  # its next pick: the join
        if drained:
            assert j.snd_nxt == j.snd_una
        else:
            j.snd_nxt += 1  # (one byte "in flight": busy, but its estimate from what it got)
            j.app_lim = True
        mss = p.conv._mss_limit[4] - 12
        p.conv.handle(p.g_data(b"d" * (10 * mss)), Direction.OUT, p.now)
        assert p.count("SlowPathShare") == 0, drained
    p = _pair(1.25e6, 5e6)
    p0 = p.mp.paths[0]
    p0.snd_una, p0.app_lim = p0.snd_nxt, True  # subflow 1 drained: split all the same
    mss = p.conv._mss_limit[4] - 12
    p.conv.handle(p.g_data(b"e" * (10 * mss)), Direction.OUT, p.now)
    assert p.count("SlowPathShare") == 1


def test_a_single_segment_is_never_split():
    p = _pair(1.0, 5e6)
    mss = p.conv._mss_limit[4] - 12
    acts = p.conv.handle(p.g_data(b"z" * mss), Direction.OUT, p.now)
    assert isinstance(acts[0], Rewrite) and p.count("SlowPathShare") == 0


def test_a_capped_slow_subflow_pays_tokens_only_for_its_share():
    """(Review of the split: pick took the cost policy's tokens for the whole super-packet,
    the capped subflow sent only its share, and was then used at a fraction of its cap.)"""
    p = _pair(1.25e6, 5e6)
    p0 = p.mp.paths[0]
    p0.cap, p0.tokens, p0.tok_at = 1e6, 50_000.0, p.now
    mss = p.conv._mss_limit[4] - 12
    share = max(mss, int(MP.BURST * 0.25) // mss * mss)
    p.conv.handle(p.g_data(b"c" * (10 * mss)), Direction.OUT, p.now)
    assert p.count("SlowPathShare") == 1
    assert p0.tokens == 50_000.0 - share


def test_a_slow_subflow_chosen_again_takes_the_rest_whole():
    """(Review of the split: with the best subflow unusable now, its window full, the slow one
    was chosen again and again, a share each time: a 40-segment super-packet went as 39
    pieces.) Chosen again, it takes the rest at once."""
    p = _pair(1.25e6, 5e6)
    j = p.mp.paths[1]
    j.snd_wnd = 0  # the join's window is closed: pick falls back to subflow 1 only
    mss = p.conv._mss_limit[4] - 12
    acts = p.conv.handle(p.g_data(b"w" * (40 * mss)), Direction.OUT, p.now)
    assert p.count("SlowPathShare") == 1
    sent = _maps(p, acts[1:])
    assert sum(len(x[1]) for x in sent) == 40 * mss
    assert all(p.label(a.data) != "data@1" for a in acts[1:] if a.data)  # nothing on the join
