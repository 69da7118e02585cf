"""Data-level SACK for the guest (MULTIPATH.md §3.5 (c), option B). The guest keeps its
SACK_PERM; once the flow is multipath, subflow 1's own SACK blocks (its seqs) never reach the
guest and the guest's blocks (data level) reach subflow 1 only where subflow 1 holds those
bytes; every ACK the guest gets names, as SACK blocks, the bytes above DATA_ACK that a
subflow's cumulative ACK covers. Without them the guest, one congestion controller for
every path, repaired one hole per RTT and after an RTO resent everything from its snd_una."""

from __future__ import annotations

import pytest

from middlebox.core import Direction
from middlebox.core import MULTIPATH as MP
from middlebox.wire import Dss, build_options, encode_tcp_options, parse_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, M64, PSH, MPair, make_packet


def _opts(buf: bytes):
    pkt = parse_packet(buf)
    return parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)


def test_guest_sack_perm_reaches_the_server_with_uplinks_and_the_synack_decides():
    p = MPair(1)
    _, syn = p.out(p.g_syn())
    assert _opts(syn).sack_perm
    _, synack = p.inn(p.s_synack(syn))
    assert p.flow.sack_ok == _opts(synack).sack_perm


STALL = 0.2  # seconds without progress after which a subflow's hole is known lost (> 2 * HOLE_RTT)


def _joined_pair(srtt: float = 0.0):
    """A multipath pair with its join on uplink 1 established: (pair, join, subflow 1's path),
    subflow 1's srtt set when given."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    p0 = p.mp.paths[0]
    if srtt:
        p0.srtt = srtt
    return p, p.joins[1], p0


def _hole_on_subflow_1():
    """Guest data on subflow 1 (not acked by the server) then on the join (acked by the
    join): (pair, join, guest seq of the join's segment)."""
    p, j, _ = _joined_pair()
    assert p.flow.sack_ok
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    assert MP.guest_sack(p.flow, p.mp, 4) == ()  # nothing acked above DATA_ACK yet
    p.now += STALL  # subflow 1 makes no progress: its hole is known lost (_hole_evident)
    p.j_in(p.j_ack(j, ack=ss + 1000))  # the join acks it; the DATA_ACK cannot move
    return p, j, gseq


def test_bytes_a_join_acked_above_a_hole_become_one_sack_block():
    p, j, gseq = _hole_on_subflow_1()
    assert MP.guest_sack(p.flow, p.mp, 4) == ((gseq, (gseq + 1000) & M32),)
    # an ACK we inject towards the guest carries it (and nothing MPTCP)
    o = _opts(MP._guest_ack(p.flow, p.mp))
    assert o.sack == ((gseq, (gseq + 1000) & M32),) and not o.mptcp


def test_subflow_1_duplicate_reaches_the_guest_with_data_level_blocks_not_its_own():
    p, j, gseq = _hole_on_subflow_1()
    p0 = p.mp.paths[0]
    una = (p0.local_isn + p0.snd_una) & M32
    # (beyond what subflow 1 was sent: not taken into the scoreboard; the guest must not see
    # it either, it names subflow-1 seqs)
    own = (((p0.local_isn + p0.snd_nxt + 3000) & M32, (p0.local_isn + p0.snd_nxt + 4000) & M32),)
    tcp = encode_tcp_options(ts_val=77, ts_ecr=1, sack=own)
    dup = make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                      build_options(tcp, (p.dack(),)), b"", window=509, v6=p.v6)
    fwd = p.count("DupAckFwd")
    acts, got = p.inn(dup)
    assert p.count("DupAckFwd") == fwd + 1, p.classify(acts)
    o = _opts(got)
    assert o.sack == ((gseq, (gseq + 1000) & M32),), o.sack
    assert o.ts_val == 77  # the rest of its options stay


def test_no_block_without_sack_on_the_connection():
    p = MPair(1, timestamps=True)
    p.go_multipath()
    p.flow.sack_ok = False  # as when the server's SYN/ACK declined SACK
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.now += STALL
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert MP.guest_sack(p.flow, p.mp, 4)  # the scoreboard knows ...
    assert _opts(MP._guest_ack(p.flow, p.mp)).sack == ()  # ... the guest is not told


# -- found by a review of the first version (each failed on it) --------------------------------


def _sf1_data(p, srel, drel, payload):
    """Server data on subflow 1 at relative subflow seq srel mapped to relative DSN drel."""
    dss = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=(p.s_idsn + drel) & M64, dsn64=True,
              subflow_seq=srel, data_len=len(payload))
    return make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn + srel, p.g_nxt, ACK | PSH,
                       build_options(encode_tcp_options(ts_val=77, ts_ecr=1), (dss,)), payload,
                       window=509, v6=p.v6)


def _dack_lags_join():
    """sf1 burst then one segment on the join; subflow 1 and the DATA_ACK reach the join's
    bytes, the join acks them at subflow level only (msk move deferred / NoDSSInWindow)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    p.c_dack = (gseq - p.g_isn) & M32
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    p.j_in(p.j_ack(j, ack=ss + 1000))
    return p, gseq


def test_no_sack_block_starts_at_the_data_ack():
    """RFC 2018 §3: a block is 'isolated' (the byte below its left edge not received). A left
    edge == ack makes Linux flag the head SACKed (FLAG_SACK_RENEGING -> loss state)."""
    p, gseq = _dack_lags_join()
    ack = (p.flow.guest_isn + p.mp.data_ack) & M32
    assert ack == gseq
    blocks = MP.guest_sack(p.flow, p.mp, 4)
    assert all(left != ack for left, _ in blocks), blocks


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("ts", [False, True])
def test_download_segments_to_the_guest_fit_the_mtu(v6, ts):
    """Join data cut at mss_limit (GRO) + 4 SACK blocks (36 bytes) = 1508 > mtu 1500."""
    p = MPair(1, v6=v6, timestamps=ts)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    for _ in range(200):  # alternating bursts: sf1, join, sf1, join ...
        p.g_send(1, 1000)
    p.now += STALL
    j.s_rcv = p.path(1).snd_nxt
    p.j_in(p.j_ack(j))  # the join acks all: 4+ holes on subflow 1
    assert len(MP.guest_sack(p.flow, p.mp, 4)) == 4
    acts = p.j_in(p.j_data(j, b"z" * p.conv._mss_limit[6 if v6 else 4]))
    sizes = [len(a.data) for a in acts[1:] if p.label(a.data) == "g_data"]
    assert sizes and max(sizes) <= p.cfg.mtu, sizes


def test_guest_sack_of_subflow_1_bytes_reaches_subflow_1_translated():
    """Multipath download: subflow 1 rel 1..301 (DSN 501..801) lost, rel 301..601 (DSN
    801..1101) arrives; the guest SACKs DSN 801..1101: subflow 1 must hear (301, 601)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p.j_in(p.j_data(j, b"a" * 500))  # DSN 1..501 on the join
    p.g_rcv = (p.s_isn + 501) & M32
    p.out(p.g_ack())
    p.inn(_sf1_data(p, 301, 801, b"y" * 300))
    g = (p.s_isn + 801) & M32
    _, sent = p.out(p.g_ack(sack=((g, (g + 300) & M32),)))
    got = [((a - p.s_isn) & M32, (b - p.s_isn) & M32) for a, b in _opts(sent).sack]
    assert got == [(301, 601)], got


def test_guest_blocks_for_join_bytes_never_reach_subflow_1():
    """Subflow 1 rel 1001..2001 carries DSN 1601..2601; the join carries DSN 1001..1501.
    The guest's block for the join's bytes must not become a subflow-1 block."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p.inn(_sf1_data(p, 1001, 1601, b"y" * 1000))
    p.s_drel = 1001
    p.j_in(p.j_data(j, b"j" * 500))
    g = lambda d: (p.s_isn + d) & M32  # noqa: E731
    p.g_rcv = g(1)
    _, sent = p.out(p.g_ack(sack=((g(1001), g(1501)), (g(1601), g(2601)))))
    got = [((a - p.s_isn) & M32, (b - p.s_isn) & M32) for a, b in _opts(sent).sack]
    assert (1001, 1501) not in got, got


def test_resend_of_the_byte_at_data_ack_is_never_silently_dropped():
    """Suspicion (35a3f30): the byte at DATA_ACK acked on its subflow but not taken by the
    server's msk (Linux NoDSSInWindow / RcvPruned): every guest resend is dropped, no
    reinjection, nothing in tick(): the data level stays stuck for good."""
    p, gseq = _dack_lags_join()
    da = p.mp.data_ack
    for _ in range(3):
        acts = p.conv.handle(p.g_data(b"A" * 1000, seq=gseq), Direction.OUT, p.now)
        assert p.classify(acts) != ["drop"], "resend of the byte at DATA_ACK dropped"
        for _ in range(50):
            p.tick(0.1)
    assert p.mp.data_ack == da


def _join_sacks_its_second_segment():
    """Two segments on the join, the first lost: the join's ACK stays at it and SACKs the
    second. (pair, join, the first's subflow seq, the second's guest seq)."""
    p, j, _ = _joined_pair()
    first = p.data_on(1, size=1000)
    ss1 = (parse_packet(first).seq - j.c_isn) & M32
    ((labels, acts),) = p.g_send(1, 1000)
    assert "data@1" in labels, labels  # the burst stays on the join
    g2 = (p.g_nxt - 1000) & M32
    sack = (((j.c_isn + ss1 + 1000) & M32, (j.c_isn + ss1 + 2000) & M32),)
    tcp = encode_tcp_options(sack=sack)
    p.now += STALL  # (subflow 1's earlier bytes: known lost too)
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),), tcp=tcp))
    assert p.path(1).snd_una == ss1
    return p, j, ss1, g2


def test_a_subflows_own_sack_blocks_reach_the_guest_as_data_level_blocks():
    """Loss on a join: the server SACKs the join's bytes after the hole. Those bytes are not
    below any cumulative ACK, yet the server has them: the guest must hear so, or it takes
    every byte sent on that join after the hole for lost (a bench upload with 1 % loss on
    one path: 30 guest RTOs in 8 s, 27 of 186 Mbit/s)."""
    p, j, ss1, g2 = _join_sacks_its_second_segment()
    assert (g2, (g2 + 1000) & M32) in MP.guest_sack(p.flow, p.mp, 4)
    # a block naming bytes never sent, or below the ACK (D-SACK), is not taken
    bad = (((j.c_isn + ss1 + 2000) & M32, (j.c_isn + ss1 + 90000) & M32),
           ((j.c_isn + ss1 - 500) & M32, (j.c_isn + ss1) & M32))
    held = p.path(1).sacked
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),), tcp=encode_tcp_options(sack=bad)))
    assert held and p.path(1).sacked == held  # (the earlier block is kept: nothing it said went)


def test_a_dead_subflows_sack_blocks_never_reach_the_guest():
    """The server drops a closed subflow's out-of-order bytes: named to the guest, they were
    bytes it skipped when resending (SACKed) until its RTO, backed off to 5 s (inbound
    failover captures, the client's second path down for good). Its cumulatively acked
    bytes went to the data level and are still named."""
    p, _, _, g2 = _join_sacks_its_second_segment()
    assert (g2, (g2 + 1000) & M32) in MP.guest_sack(p.flow, p.mp, 4)
    for state in (MP.SS.STALE, MP.SS.CLOSED):
        p.path(1).state = state
        assert (g2, (g2 + 1000) & M32) not in MP.guest_sack(p.flow, p.mp, 4)


def test_an_idle_join_without_a_rate_sample_is_not_starved_by_the_scheduler():
    """A join that took one early burst and got no delivery-rate sample (rate 0) must still be
    chosen while the others have queues: an idle subflow is tried at the best known rate.
    (CI and --runxfail: uplink 2 or 3 carried 28-166 KB of a 12 MB upload.)"""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mp = p.mp
    p0, p1 = mp.paths[0], mp.paths[1]
    p0.snd_nxt = p0.snd_una + 500_000  # subflow 1: a queue, a measured rate
    p0.rate = 5e6
    for stale in (0.0, 130_000.0):  # no sample yet; an old low one
        p1.rate = stale
        assert p1.snd_nxt == p1.snd_una
        mp.burst_left = 0
        assert MP.pick(mp, 65536, p.conv.counters) == 1
    # with bytes in flight its own (low) rate counts again
    p1.snd_nxt = p1.snd_una + 65536
    mp.burst_left = 0
    assert MP.pick(mp, 65536, p.conv.counters) == 0


# -- reordering between subflows is not loss (each failed before _hole_evident / _sack_news) ----


def test_bytes_above_a_hole_still_in_flight_are_not_shown():
    """The join acks its bytes while subflow 1's earlier bytes are still on their way (a
    slower path, recent progress): blocks above them made the guest's RACK resend them and
    halve its window (310 SACK recoveries and 7 RTOs per 8 s clean upload on 2 x 100)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert MP.guest_sack(p.flow, p.mp, 4) == ()
    assert _opts(MP._guest_ack(p.flow, p.mp)).sack == ()
    # the server's SACK on subflow 1 names bytes above its hole: now it is loss
    p0 = p.mp.paths[0]
    assert MP._hole_evident(p.flow, p0, p0.snd_una) is False
    p0.sacked = ((p0.snd_una + 100, p0.snd_una + 200),)
    assert MP._hole_evident(p.flow, p0, p0.snd_una) is True
    assert MP.guest_sack(p.flow, p.mp, 4)


def test_an_ack_with_news_for_the_guest_sack_is_not_held_back():
    """A join ACK that moves no data level used to be held back as reordering even when it
    made a hole known lost: the guest learnt of the loss only by its RTO (15 per 8 s run with
    1 % loss). Once: the same blocks again are held back."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.j_in(p.j_ack(j, ack=ss + 500))
    p.now += STALL
    acts = p.j_in(p.j_ack(j, ack=ss + 1000))
    assert "g_ack" in p.classify(acts) and p.count("SackNewsFwd") == 1
    acts = p.j_in(p.j_ack(j, ack=ss + 1000))
    assert "g_ack" not in p.classify(acts) and p.count("SackNewsFwd") == 1


# -- a silent subflow's tail: the clock tells the guest (_silent_tail) --------------------------


def test_a_silent_subflows_lost_tail_reaches_the_guest_by_the_clock():
    """A GSO burst whose tail a shallow queue dropped leaves its subflow nothing to ACK and the
    server nothing to say; the other subflow's ACKs came before two RTTs had passed and were
    held back as reordering. Nothing else would come: the guest waited for its RTO (3-8 per
    8 s upload on 100+30 Mbit/s with 5 ms buffers). The clock sends the news, once."""
    p, j, p0 = _joined_pair(0.02)
    buf = p.data_on(1, size=1000)  # subflow 1's bytes first (never acked: its tail was lost)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    acts = p.j_in(p.j_ack(j, ack=ss + 1000))  # the join acks at once: reordering, held back
    assert "g_ack" not in p.classify(acts) and not p.count("SackNewsFwd")
    due = MP.next_deadline(p.conv)
    assert due is not None and p.now < due <= p0.progress_at + 2 * 0.02 + 0.01
    assert p.conv.tick(due - 0.001) == []  # not yet
    acts = p.conv.tick(due)
    assert p.classify(acts) == ["g_ack"], p.classify(acts)
    assert _opts(acts[0].data).sack == ((gseq, (gseq + 1000) & M32),)
    assert p.count("SackNewsTimer") == 1
    # once: no second ACK, and no deadline in the past (a busy loop of the shell)
    assert p.conv.tick(due + 0.05) == []
    nd = MP.next_deadline(p.conv)
    assert nd is None or nd > due
    assert p0.state is MP.SS.ESTABLISHED


def test_an_idle_subflows_first_bytes_after_a_pause_are_neither_lost_nor_stale():
    """A subflow with nothing in flight for seconds gets new bytes: its wait for an ACK starts
    then. Timed from its last ACK (before the pause), those bytes looked two RTTs overdue at
    once (blocks above them made the guest resend them) and the subflow went stale at the next
    tick because the other subflow had progressed meanwhile."""
    p, j, p0 = _joined_pair(0.05)
    p.now += 5.0  # a pause: nothing in flight anywhere
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.j_in(p.j_ack(j, ack=ss + 1000))  # the join acks; subflow 1's bytes are on their way
    assert p0.snd_nxt > p0.snd_una
    assert MP.guest_sack(p.flow, p.mp, 4) == ()
    p.conv.tick(p.now + 0.01)
    assert p0.state is MP.SS.ESTABLISHED and not p.count("SubflowStale")


def test_a_drained_slow_subflow_is_not_tried_at_the_fast_ones_rate():
    """10+50+50 Mbit/s, 20 ms buffers: the slow subflow, tried at the best rate whenever it
    had drained, took a whole 64 KB super-packet (50 ms there), held the data level up and
    overflowed its queue: upload 17-35 Mbit/s against Linux MPTCP's 102. With a rate sample
    it is tried at twice its own (at least a quarter of the best, at most the best)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mp = p.mp
    p0, p1 = mp.paths[0], mp.paths[1]
    p0.rate, p1.rate = 6.25e6, 1.25e6  # 50 and 10 Mbit/s measured
    p0.snd_nxt = p0.snd_una + 60_000  # the fast one has a short queue (10 ms)
    assert p1.snd_nxt == p1.snd_una  # the slow one drained
    mp.burst_left = 0
    assert MP.pick(mp, 65536, p.conv.counters) == 0  # 64 KB: 20 ms here, 26 ms there
    mp.burst_left = 0
    assert MP.pick(mp, 1400, p.conv.counters) == 1  # one segment: sooner on the idle one


def test_a_burst_on_a_much_slower_subflow_is_shorter_in_proportion_to_its_rate():
    """Bytes in a row on the chosen subflow: BURST, but fewer, in proportion to its rate, on
    one less than half as fast as the best; 22 KB in a row held a 10 Mbit/s path's data level
    up 18 ms."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mp = p.mp
    p0, p1 = mp.paths[0], mp.paths[1]
    p0.rate, p1.rate = 6.25e6, 1.25e6
    p0.snd_nxt = p0.snd_una + 200_000
    p1.snd_nxt = p1.snd_una + 1
    mp.burst_left = 0
    assert MP.pick(mp, 1400, p.conv.counters) == 1
    assert mp.burst_left == int(MP.BURST * 1.25e6 / 6.25e6) - 1400
    p1.rate = 4e6  # more than half the best rate: BURST (its estimate may be lowered by loss)
    mp.burst_left = 0
    assert MP.pick(mp, 1400, p.conv.counters) == 1 and mp.burst_left == MP.BURST - 1400
    p1.rate = 0.0  # no sample: BURST
    mp.burst_left = 0
    assert MP.pick(mp, 1400, p.conv.counters) == 1 and mp.burst_left == MP.BURST - 1400


def test_an_idle_subflow_with_an_old_low_estimate_is_tried_again_as_its_idle_time_grows():
    """Two uplinks; the guest's rate (pure Python's CPU) is what subflow 1 carries alone, so
    it never queues much. The join's early sample was low; tried at twice that (at least a
    quarter of the best), it lost to subflow 1 at every pick and, never used, its estimate
    never changed (CI: uplink 2 carried 0.37 MB of an 8 MB upload). Its estimate counts double
    per IDLE_DOUBLING of idle time, up to the best rate."""
    p, j, p0 = _joined_pair(0.02)
    mp = p.mp
    p1 = mp.paths[1]
    p0.rate, p1.rate = 3.1e6, 0.3e6  # 25 Mbit/s; the join's early sample: 2.4 Mbit/s
    p0.snd_nxt = p0.snd_una + 62_000  # one BDP in flight: it keeps up
    t = p1.progress_at  # the join's last ACK: it has drained
    assert p1.snd_nxt == p1.snd_una
    for at, want in ((t, 0), (t + MP.IDLE_DOUBLING, 0), (t + 3 * MP.IDLE_DOUBLING, 1)):
        mp.burst_left = 0
        assert MP.pick(mp, 65536, p.conv.counters, at) == want, at - t


def test_forged_acks_on_a_join_neither_show_the_guest_blocks_nor_wake_the_clock():
    """An adversary's segments on a join, while subflow 1's bytes wait below the join's: an
    ACK of the join's bytes with a sequence number far outside (2^30 away), one acking bytes
    never sent, and one whose SACK names bytes never sent. None is progress; the guest hears
    of no block, then or when the clock later looks, and the join's state is what it was. A
    flood of the same duplicate ACK tells the guest once."""
    p, j, p0 = _joined_pair(0.02)
    p0.rate = 12.5e6
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    p1 = p.mp.paths[1]
    una, at, sacked = p1.snd_una, p1.progress_at, p1.sacked
    never = (((j.c_isn + ss + 5000) & M32, (j.c_isn + ss + 6000) & M32),)
    forged = [
        p.j_ack(j, seq=j.s_nxt + 0x50000000, ack=ss + 1000),
        p.j_ack(j, ack=ss + 1000 + 100_000),
        p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss, ACK, (p.dack(),),
                   tcp=encode_tcp_options(sack=never)),
    ]
    for buf in forged:
        acts = p.j_in(buf)
        assert "g_ack" not in p.classify(acts), p.classify(acts)
        assert (p1.snd_una, p1.progress_at, p1.sacked) == (una, at, sacked)
    p.now += 1.0  # the clock: subflow 1 long silent, but nothing above it was acked
    assert MP.guest_sack(p.flow, p.mp, 4) == ()
    assert [a for a in p.conv.tick(p.now) if p.label(a.data) == "g_ack"] == []
    # the real ACK shows the block once, however often it comes
    fwd = p.count("SackNewsFwd")
    for _ in range(200):
        p.j_in(p.j_ack(j, ack=ss + 1000))
    assert p.count("SackNewsFwd") == fwd + 1
    assert MP.guest_sack(p.flow, p.mp, 4) == ((gseq, (gseq + 1000) & M32),)


def _sack_guest_twelve():
    """Twelve segments on the join, its first lost: (pair, join, its first's subflow seq,
    the guest seq of that first segment, a function SACKing the given segments on the join
    and returning the SACK blocks the guest was told)."""
    p, j, _ = _joined_pair()
    first = p.data_on(1, size=1000)
    ss1 = (parse_packet(first).seq - j.c_isn) & M32
    for _ in range(11):
        ((labels, _acts),) = p.g_send(1, 1000)
        assert "data@1" in labels, labels  # (the burst stays on the join)

    def sack(ks):
        blk = tuple(((j.c_isn + ss1 + 1000 * k) & M32, (j.c_isn + ss1 + 1000 * k + 1000) & M32) for k in ks)
        acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),),
                                 tcp=encode_tcp_options(sack=blk)))
        return [_opts(a.data).sack for a in acts[1:] if p.label(a.data) == "g_ack"]

    return p, j, ss1, (p.g_nxt - 12000) & M32, sack


def test_a_fifth_block_is_news_and_reaches_the_guest():
    """More than four data-level blocks: the server SACKing bytes above the fourth made no
    news (only the lowest four were compared) and the guest never heard of them: its window
    stayed full of bytes it took for in flight, and a bbr guest waited out 8-16 RTOs per
    8 s upload with 1 % loss (stop 47's captures). Such an ACK is news now, and it names the
    new block; the others follow in turn, each reaching the guest."""
    p, j, ss1, g1, sack = _sack_guest_twelve()
    p.now += STALL  # (the holes are known lost: shown)
    for k in (2, 4, 6, 8):
        sack((k,))
    assert len(MP.guest_blocks(p.flow, p.mp)) == 4
    news = p.count("SackNewsFwd")
    told = sack((10,))
    fifth = ((g1 + 10000) & M32, (g1 + 11000) & M32)
    assert MP.guest_blocks(p.flow, p.mp)[-1] == fifth
    assert told and p.count("SackNewsFwd") == news + 1
    assert fifth in told[0], told
    named = set(told[0]) | set(MP.guest_sack(p.flow, p.mp, 4))
    assert named == set(MP.guest_blocks(p.flow, p.mp))  # (the next ACK names the one left)


def test_blocks_shown_together_for_the_first_time_reach_the_guest_lowest_first():
    """Review of 0c5fd65: five blocks showable at once (held while their holes were in
    flight) went highest first, and the lowest came on a later ACK: a Linux guest reads a
    never-resent segment SACKed below its highest SACKed one as reordering in the network
    (tcp_sacktag_one) and raises its reordering estimate."""
    p, j, ss1, g1, sack = _sack_guest_twelve()
    told = sack((2, 4, 6)) + sack((8, 4, 6)) + sack((10, 6, 8))  # (in flight: held back)
    p.now += STALL
    told += sack((10, 6, 8)) + sack((10, 11, 8))
    highest, seen, reordered = None, set(), []
    for blocks in told:  # the guest's view, segment by segment, as tcp_sacktag_one sees it
        for a, b in blocks:
            for s in range(a, b, 1000):
                if s not in seen and highest is not None and ((s - highest) & M32) > 1 << 31:
                    reordered.append(s)
                seen.add(s)
        for a, b in blocks:
            if highest is None or ((b - highest) & M32) < 1 << 31:
                highest = b
    assert told and not reordered, (reordered, told)


def test_blocks_trimmed_away_are_named_later():
    """Review of 0c5fd65: the blocks guest_sack chose were taken as named when chosen; those a
    segment then had no room for (the guest's MSS, a D-SACK in front) were never named, the
    highest among them. Only what went counts (_sack_shown)."""
    p, j, ss1, g1, sack = _sack_guest_twelve()
    p.now += STALL
    for k in (2, 4, 6, 8, 10):
        sack((k,))
    every = set(MP.guest_blocks(p.flow, p.mp))
    assert len(every) == 5
    named = set()
    for _ in range(5):  # each time a segment with room for one block only
        one = MP.guest_sack(p.flow, p.mp, 4)[:1]
        MP._sack_shown(p.mp, one)
        named |= set(one)
    assert named == every, sorted(every - named)
    assert len(p.mp.sack_order) <= MP.MAX_GUEST_BLOCKS
