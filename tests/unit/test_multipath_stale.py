"""Which subflow goes stale when progress stops (multipath.tick): the one whose server
stopped acking, judged by real acks only. A fill of an acked hole (_fill_acked_hole) gives
its own subflow time again, but is no progress the others are measured against."""

from __future__ import annotations

import pytest

from middlebox.core import Direction
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire import build_options, encode_tcp_options, parse_packet
from middlebox.wire import mptcp_options
from middlebox.wire.mptcp import AddAddr, Dss, MpPrio

from tests.unit.test_subflow_table import ACK, M32, M64, RST, MPair, make_packet


def test_a_fill_on_a_dead_join_does_not_make_subflow_1_stale():
    """CI's intermittent "join path for good" stall (inbound, test_inbound_kernel.py), here
    as an upload: the join's path dies with bytes out there that the server has at the data
    level; subflow 1 then waits with bytes out and no ack (its window shut behind the
    join's hole). The join's hole is filled (AckedHoleFilled), which restarted its progress
    clock; compared with that, subflow 1 looked the one that stopped: it went stale and
    dead, the dead join stayed, the transfer stalled for good (the flows view: subflow 0
    CLOSED, subflow 1 ESTABLISHED). Subflow 1's ack is the newer one: the join goes."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    a = p.data_on(1, size=1000)  # bytes on the join; its subflow ack never comes (path dead)
    assert (parse_packet(a).seq - j.c_isn) & M32
    # the server has them at the data level, and acks subflow 1 (its last real progress)
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, 0x10, (p.dack(),)))
    for _ in range(40):  # more guest bytes on subflow 1, never acked
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            break
    assert p0.snd_nxt > p0.snd_una and p.mp.paths[1].snd_nxt > p.mp.paths[1].snd_una
    states = []
    for dt in (0.35, 0.35, 0.35, 1.1):
        p.now += dt
        p.conv.tick(p.now)
        states.append([q.state for q in p.mp.paths])
    assert p.count("AckedHoleFilled") == 1  # (the fill happened: the case in question)
    assert states[1] == [SS.ESTABLISHED, SS.STALE], states
    assert states[-1] == [SS.ESTABLISHED, SS.CLOSED], states



def _sf1_sacked_past_a_hole(join_acks_last: bool):
    """Subflow 1 with bytes out whose later ones the server SACKs (those before lost), and a
    join the server acked, and sent more that its dead path never delivers. The join's
    ack comes before subflow 1's SACK, or after it (`join_acks_last`, the captured order).
    Returns (pair, subflow 1's path, the join's path, [(guest seq, ss, end) of three
    segments on subflow 1, the first in its hole], the SACK packet's bytes)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    assert p.flow.sack_ok
    a = p.data_on(1, size=1000)  # a segment on the join; the server acks it
    ss = (parse_packet(a).seq - j.c_isn) & M32
    sent = []
    for _ in range(60):
        before, g = p0.snd_nxt, p.g_nxt
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            sent.append((g, before, p0.snd_nxt))
        if len(sent) == 3:
            break
    assert len(sent) == 3 and p0.snd_una < sent[0][1]  # (all of it unacked: the hole)
    p.data_on(1, size=1000)  # more for the join; its path has died: never acked
    join_ack = p.j_ack(j, ack=ss + 1000)
    if not join_acks_last:
        p.now += 0.1
        p.j_in(join_ack)
    blocks = (((p0.local_isn + sent[1][1]) & M32, (p0.local_isn + p0.snd_nxt) & M32),)
    una = (p0.local_isn + p0.snd_una) & M32
    sack = make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                       build_options(encode_tcp_options(sack=blocks), (p.dack(),)), b"", window=509, v6=p.v6)
    p.now += 0.05
    p.inn(sack)
    assert p0.sack_at == p.now and p0.sack_hi == p0.snd_nxt
    if join_acks_last:
        p.now += 0.003
        p.j_in(join_ack)
        assert p0.sack_at < pj.acked_at
    else:
        assert p0.acked_at < pj.acked_at < p0.sack_at
    assert pj.snd_nxt > pj.snd_una and p0.snd_nxt == p0.sack_hi
    return p, p0, pj, sent, sack


def _states(p, steps):
    out = []
    for dt in steps:
        p.now += dt
        p.conv.tick(p.now)
        out.append([q.state for q in p.mp.paths])
    return out


def test_a_subflow_whose_server_sacks_past_its_hole_outlives_a_join_that_went_silent():
    """The second shape of the inbound failover stall (2 % loss): subflow 1's cumulative ACK
    waits at a lost segment while the server SACKs every byte after it; the join acked
    before that, sent more, and its path died. Judged by cumulative ACKs alone, subflow 1
    looked the one that stopped (the join acked it last): it went stale and dead, and every
    guest resend went to the dead join for good. SACK blocks reaching higher are news of a
    working path too: the join is the one silent since the other's news, it goes."""
    p, p0, pj, _, sack = _sf1_sacked_past_a_hole(join_acks_last=False)
    states = _states(p, (0.35, 0.35, 0.35, 1.1))
    assert states[1] == [SS.ESTABLISHED, SS.STALE], states
    assert states[-1] == [SS.ESTABLISHED, SS.CLOSED], states
    at = p0.sack_at  # a SACK that reaches no higher is no news
    p.now += 0.01
    p.inn(sack)
    assert p0.sack_at == at


def test_a_subflow_waiting_only_for_a_resend_is_not_silent_in_the_captured_order():
    """As captured: the join's last ack came 3 ms after subflow 1's last SACK, then its path
    died; the guest resent only the data-level head, homed on the join, so subflow 1 got
    nothing more. Both are quiet, and by their news subflow 1 is the older; yet the server
    has told of every byte sent on it save the lost ones (_answered): it is waiting, not
    silent. The join, with bytes never answered, goes stale once silent alone."""
    p, p0, pj, _, _ = _sf1_sacked_past_a_hole(join_acks_last=True)
    states = _states(p, (0.35,) * 5 + (0.4, 0.5, 1.1))
    assert all(s[0] is SS.ESTABLISHED for s in states), states
    assert states[4] == [SS.ESTABLISHED, SS.ESTABLISHED], states  # (1.75 s: not silent alone yet)
    assert states[6] == [SS.ESTABLISHED, SS.STALE], states
    assert states[-1] == [SS.ESTABLISHED, SS.CLOSED], states
    nd = p.conv.next_deadline()
    # (nothing of subflow 1's is due: it waits for a resend; the dead join's uplink is tried
    # again REJOIN_WAIT after its death)
    assert nd == p.mp.retry_at and p.mp.retries, (nd, p.now)


def _resend_into_the_hole(p, p0, sent):
    """The guest resends subflow 1's first hole segment (not SACKed): it goes in place."""
    g, ss, end = sent[0]
    assert MP._answered(p0)
    p.now += 0.1
    acts = p.conv.handle(p.g_data(b"A" * (end - ss), seq=g), Direction.OUT, p.now)
    assert p.classify(acts)[0] == "rewrite"
    assert p0.rtx_at == p.now == p0.owe_at and not MP._answered(p0)
    return p.now


def test_a_lost_resend_into_the_hole_leaves_the_dead_join_the_one_to_go():
    """(review of 527bba8) The guest's one resend into subflow 1's hole is lost beside the
    dead join, whose last news came 3 ms after subflow 1's. Subflow 1 has owed an answer
    only since that resend, the join since its path died: the join should go. By news,
    subflow 1 went stale once the resend's wait was over, and died a second later beside
    the dead join (a strict xfail in stop 27). Compared by when each went quiet instead,
    this passed and the mirror case (a dead join answered at its death, then given new
    bytes) failed: the two have the same evidence in another order. The probe of a subflow
    going stale tells them apart: subflow 1's server answers it, the join's cannot."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=True)
    _resend_into_the_hole(p, p0, sent)
    _until(p, lambda: p0.state is SS.STALE)  # (by news, as before: it is probed)
    assert p.count("StaleProbeTX") == 1
    p.now += 0.01  # the answer: a duplicate ACK with the same SACK blocks (no news by them)
    _sack(p, p0, p0.snd_una, (sent[1][1], p0.snd_nxt))
    assert p.count("StaleProbeAnswered") == 1 and p0.state is SS.ESTABLISHED
    states = _states(p, (0.35,) * 6 + (1.1,) * 2)
    assert all(s[0] is SS.ESTABLISHED for s in states), states
    assert states[-1][:2] == [SS.ESTABLISHED, SS.CLOSED], states
    # (REJOIN_WAIT after its death the join's uplink is tried again: its SYN goes unanswered)
    assert states[-1][2:] == [SS.SYN_SENT] and p.count("MPJoinRetry") == 1, states
    # subflow 1 alone now, owing: nothing can make it stale before a packet, and no deadline
    # stays in the past (the daemon's loop spun every millisecond on one; review)
    for _ in range(20):
        nd = p.conv.next_deadline()
        assert nd is None or nd > p.now, (nd, p.now)
        if nd is None:
            break
        p.now = nd
        p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED


def test_a_resend_into_the_hole_owes_an_answer_from_when_it_went():
    """An answered subflow is not exempt for ever: once a resend into its hole goes
    unanswered for its wait while another subflow has news, it goes stale; not before the
    wait from the resend (its old progress would have judged it in the next tick)."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=True)
    t = _resend_into_the_hole(p, p0, sent)
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join's path works: it acks all it has
    assert pj.snd_una == pj.snd_nxt
    wait = max(MP.STALE_MIN, 4 * p0.srtt)
    assert p.conv.next_deadline() <= t + wait + 1e-9  # (woken in time)
    p.now = t + wait - 0.01
    p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED
    p.now = t + wait + 0.01
    p.conv.tick(p.now)
    assert p0.state is SS.STALE


def test_sack_blocks_covering_more_below_their_top_are_news():
    """(review of 527bba8) A resend into an upper hole arrives: the server's blocks merge,
    their top stays, its cumulative ACK too. The path answered: that is news."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    una = (p0.local_isn + p0.snd_una) & M32
    p0.sacked = ()  # (the helper's block covers sent[2], here an upper hole: its record goes)

    def sack(*blocks):
        b = tuple(((p0.local_isn + x) & M32, (p0.local_isn + y) & M32) for x, y in blocks)
        p.now += 0.05
        p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                          build_options(encode_tcp_options(sack=b), (p.dack(),)), b"", window=509, v6=p.v6))

    sack((sent[2][2], p0.snd_nxt), (sent[1][1], sent[1][2]))  # sent[2] a hole too
    at = p0.sack_at
    sack((sent[2][2], p0.snd_nxt), (sent[1][1], sent[1][2]))  # the same: no news
    assert p0.sack_at == at
    sack((sent[1][1], p0.snd_nxt))  # sent[2] arrived: one block, the same top
    assert p0.sack_at == p.now > at


def test_a_fin_sent_on_the_subflow_does_not_end_its_being_answered():
    """(review of 527bba8) SACK blocks never cover a FIN: with the guest's FIN out on
    subflow 1, blocks up to its last data byte answer everything."""
    p0 = MP.Path(0, None, None, 4, b"\0" * 4, 1, b"\0" * 4, 2, 100.0)
    p0.snd_una, p0.snd_nxt, p0.fin_sent = 1, 5001, True
    p0.sack_hi, p0.sack_at = 5000, 100.5
    assert MP._answered(p0)
    p0.fin_sent = False
    assert not MP._answered(p0)


@pytest.mark.parametrize("resend", [False, True], ids=["sf1-waits", "sf1-resend-lost"])
def test_a_dead_join_answered_at_its_death_goes_when_it_owes(resend):
    """(review of 07e8251) The join's first segment is lost and the server SACKs the rest:
    answered; then its path dies. Subflow 1 has news after that, and its window is full, so
    the scheduler gives the next bytes to the dead join. Those bytes end its being answered
    at that moment; compared by when each went quiet, the join looked the fresher and
    subflow 1 went stale and dead (with subflow 1's resend into its own hole lost before),
    or the join went only when silent alone, 3 s after. By news the join goes after its
    wait from that send, and is closed a second later."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    jsent = []
    for _ in range(3):
        before = pj.snd_nxt
        p.data_on(1, size=1000)
        jsent.append((before, pj.snd_nxt))
    sent = []
    for _ in range(200):
        before, g = p0.snd_nxt, p.g_nxt
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            sent.append((before, p0.snd_nxt, g))
        if len(sent) == 4:
            break
    assert len(sent) == 4
    p.now += 0.05  # the join: its first segment lost, the rest SACKed
    jb = (((j.c_isn + jsent[1][0]) & M32, (j.c_isn + pj.snd_nxt) & M32),)
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + pj.snd_una, ACK, (p.dack(),),
                      tcp=encode_tcp_options(sack=jb)))
    assert MP._answered(pj)
    p.now += 0.05  # subflow 1: acked up to its second segment, which is lost; the rest SACKed
    win = max(1, (p0.snd_nxt - sent[1][0] - 500) >> p0.rwscale)
    una = (p0.local_isn + sent[1][0]) & M32
    blocks = (((p0.local_isn + sent[2][0]) & M32, (p0.local_isn + p0.snd_nxt) & M32),)
    p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                      build_options(encode_tcp_options(sack=blocks), (p.dack(),)), b"", window=win, v6=p.v6))
    assert MP._news(p0) > MP._news(pj)
    if resend:  # the guest resends subflow 1's hole in place; lost
        p.now += 0.05
        acts = p.conv.handle(p.g_data(b"A" * 1000, seq=sent[1][2]), Direction.OUT, p.now)
        assert p.classify(acts)[0] == "rewrite" and p0.rtx_at == p.now
    p.now += 0.05
    n0 = p0.snd_nxt
    p.data_on(1, size=1000)  # new bytes, all on the dead join
    assert p0.snd_nxt == n0 and pj.owe_at == p.now and not MP._answered(pj)
    t = p.now
    states = _states(p, (0.1,) * 40)
    assert all(s[0] is SS.ESTABLISHED for s in states), states
    first = next(i for i, s in enumerate(states) if s[1] is not SS.ESTABLISHED)
    assert 0.1 * (first + 1) >= MP.STALE_MIN - 1e-9  # (its wait from that send)
    closed = next(i for i, s in enumerate(states) if s[1] is SS.CLOSED)
    assert 0.1 * (closed + 1) < 2.0, states


def test_a_bare_fin_after_a_repaired_tail_loss_is_not_answered():
    """(review of 07e8251) Subflow 1's tail loss repaired: its cumulative ACK reaches the
    old SACK top. The guest's bare FIN then goes on it; with the SACK top at snd_nxt - 1 it
    looked answered for good, and a dead path never made it stale."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p.now += 0.05
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    assert p0.snd_una == p0.snd_nxt == p0.sack_hi
    p.out(p.g_fin())
    assert p0.fin_sent and p0.snd_nxt == p0.snd_una + 1 and not MP._answered(p0)
    p.now += 0.05
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join has news after subflow 1's
    states = _states(p, (0.5,) * 4)
    assert SS.STALE in [s[0] for s in states] or p0.state is SS.CLOSED, states


def test_a_stale_subflow_left_alone_gives_no_deadline_in_the_past():
    """(review of 07e8251; older) tick makes a stale subflow dead only beside an established
    one; next_deadline gave stale_at + DEAD_AFTER regardless, and the daemon's loop woke
    every millisecond until a packet came."""
    p, p0, pj, _, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    assert _states(p, (0.35, 0.35))[-1] == [SS.ESTABLISHED, SS.STALE]
    p.inn(p.s_packet(p.s_nxt, 0, RST))  # the server resets subflow 1: the stale join is alone
    assert p0.state is SS.CLOSED and pj.state is SS.STALE
    for _ in range(5):
        p.now += 0.5
        p.conv.tick(p.now)
        nd = p.conv.next_deadline()
        assert nd is None or nd > p.now, (nd, p.now)


def _sack(p, p0, una, *blocks, window=509):
    b = tuple(((p0.local_isn + x) & M32, (p0.local_isn + y) & M32) for x, y in blocks)
    p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, (p0.local_isn + una) & M32, ACK,
                      build_options(encode_tcp_options(sack=b), (p.dack(),)), b"", window=window, v6=p.v6))


@pytest.mark.parametrize("dsack", [False, True], ids=["no-dsack", "dsack-before"])
def test_a_dsack_is_news_and_counted_once(dsack):
    """(review of 82f6547) The guest resends bytes subflow 1's server had SACKed: its answer
    is a D-SACK block inside another (RFC 2883), news that the resend arrived. Summed twice,
    it raised the covered total, and the server's answer to the next resend, into the upper
    hole (the blocks merging under the same top), looked no news: subflow 1, answered in
    full, went stale and dead beside a join with later news."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    una, top = p0.snd_una, p0.snd_nxt
    b1, h2, b2 = (sent[1][1], sent[1][2]), (sent[2][1], sent[2][2]), (sent[2][2], top)
    p0.sacked = ()  # (the helper's block covers sent[2], here an upper hole: its record goes)
    p.now += 0.05
    _sack(p, p0, una, b2, b1)  # sent[2] an upper hole
    assert MP._answered(p0)
    if dsack:
        p.now += 0.05
        acts = p.conv.handle(p.g_data(b"B" * (b1[1] - b1[0]), seq=sent[1][0]), Direction.OUT, p.now)
        assert p.classify(acts)[0] == "rewrite" and p0.rtx_at == p.now
        p.now += 0.05
        _sack(p, p0, una, b1, b2, b1)  # the D-SACK first, then the blocks
        assert p0.sack_at == p.now and MP._answered(p0)
        assert p0.sacked == (b1, b2)
    p.now += 0.05
    acts = p.conv.handle(p.g_data(b"C" * (h2[1] - h2[0]), seq=sent[2][0]), Direction.OUT, p.now)
    assert p.classify(acts)[0] == "rewrite" and not MP._answered(p0)
    p.now += 0.05
    _sack(p, p0, una, (b1[0], top))  # sent[2] arrived: one block, the same top
    assert MP._answered(p0)
    p.now += 0.01
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join has later news
    states = _states(p, (0.1,) * 15)
    assert all(s[0] is SS.ESTABLISHED for s in states), states


def test_an_old_reordered_ack_changes_no_sack_bookkeeping():
    """(review of 82f6547) An ACK below the cumulative ACK, late: its blocks are no news and
    the covered total stays the current ACK's."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    at, tot, hi = p0.sack_at, p0.sack_tot, p0.sack_hi
    p.now += 0.05
    _sack(p, p0, p0.snd_una - 1000, (sent[1][1], sent[1][2]))
    assert (p0.sack_at, p0.sack_tot, p0.sack_hi) == (at, tot, hi)


def test_an_old_reordered_ack_leaves_the_window_alone():
    """An ACK below the cumulative ACK is older than the one that set the window (RFC 9293
    §3.10.7.4: SND.WND is taken from a segment with SND.UNA =< SEG.ACK only): its window
    overwrote the newer one (one of last notes' leftovers). The window decides the dup ACK
    test (unchanged window)."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=False)
    p.now += 0.01
    _sack(p, p0, p0.snd_una, (sent[1][1], p0.snd_nxt), window=600)
    assert p0.snd_wnd == 600 << p0.rwscale
    p.now += 0.01
    _sack(p, p0, p0.snd_una - 1000, (sent[1][1], sent[1][2]), window=509)
    assert p0.snd_wnd == 600 << p0.rwscale


def test_a_join_whose_server_talks_but_never_acks_dies():
    """A path whose upload direction died while the server's segments still come (a one-way
    failure: the server sends data on the join, each segment acks nothing new): any segment
    revived the stale join, the next tick made it stale again, and its dead clock started
    over each time, so it never died and its bytes never got new homes. A subflow that
    comes back without news since it went stale keeps its stale clock: it dies a second
    after it first went stale."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p.data_on(1, size=1000)  # bytes on the join; never acked
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, 0x10, (p.dack(),)))
    assert pj.snd_nxt > pj.snd_una
    states, first = [], None
    for _ in range(24):  # 6 s: a server segment on the join every 0.25 s, then a tick
        p.now += 0.25
        p.j_in(p.j_data(j, b"d" * 100))
        p.conv.tick(p.now)
        states.append(pj.state)
        if first is None and pj.state is SS.STALE:
            first = p.now
        if pj.state is SS.CLOSED:
            break
    assert first is not None and SS.STALE in states, states
    assert states[-1] is SS.CLOSED, states
    assert p.now <= first + MP.DEAD_AFTER + 0.25 + 1e-9, (first, p.now, states)
    assert p0.state is SS.ESTABLISHED


def _two_more_on_the_join(p) -> bool:
    """Guest segments until two went on the join of uplink 1 (False: the scheduler gave it
    none within 60)."""
    sent = 0
    for _ in range(60):
        ((labels, _),) = p.g_send(1, 1000)
        sent += "data@1" in labels
        if sent == 2:
            return True
    return False


def test_a_busy_subflow_with_an_old_hole_and_sack_news_is_not_silent():
    """(third review of stop 27) The stale rule measured a subflow's wait from its last
    cumulative progress: a join whose cumulative ACK waited at an old hole went stale
    once subflow 1 had news after its last SACK, or silent-alone (2 s) beside it, although
    its server SACKed new bytes every step; it came back on its next SACK and went stale
    again. The server answers it: its wait runs from its last news."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    first = p.data_on(1, size=1000)  # lost: the hole
    ss1 = (parse_packet(first).seq - j.c_isn) & M32
    states = []
    for _ in range(16):  # 4 s: more bytes each 0.25 s; the join SACKs all but the last
        p.now += 0.25
        if not _two_more_on_the_join(p):  # (the scheduler gives nothing new to a stale subflow)
            states.append(pj.state)
            break
        assert pj.snd_nxt - pj.snd_una > 2000
        sack = (((j.c_isn + ss1 + 1000) & M32, (j.c_isn + pj.snd_nxt - 1000) & M32),)
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),),
                          tcp=encode_tcp_options(sack=sack)))
        assert pj.sack_at == p.now and pj.snd_una == ss1
        # subflow 1 (given bytes too by the scheduler at times): all it has is acked, news
        # after the join's
        p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
        assert p0.snd_una == p0.snd_nxt
        p.conv.tick(p.now + 0.001)
        states.append(pj.state)
    assert pj.acked_at < p.now - MP.SILENT_ALONE  # (the hole is older than silent-alone)
    assert p0.state is SS.ESTABLISHED
    assert all(s is SS.ESTABLISHED for s in states), states


def _sf1_tail_lost_beside_a_dying_join(sack: bool = True):
    """Stop 28's capture (inbound failover, 2 % loss on subflow 1's path): subflow 1's last
    segment (or its ACK) was lost, and nothing more went on it (the guest, in RTO recovery,
    resent only the data-level head, homed on the join); the join acked 7 ms after subflow
    1's last news, then its path died with bytes out. Both owe an answer, and the join's
    news is the newer: by timestamps subflow 1 is the one that stopped. (pair, subflow 1's
    path, the join's path; `p.sf1_lost`: the lost segment's subflow seq, guest seq and
    payload.) `sack`: whether the guest has SACK (test_no_sack_guest_multipath)."""
    p = MPair(1)
    p.go_multipath()
    p.flow.sack_ok = sack
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    a = p.data_on(1, size=1000)
    ss = (parse_packet(a).seq - j.c_isn) & M32
    sf1 = []
    for _ in range(60):
        before, gseq = p0.snd_nxt, p.g_nxt
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite":
            sf1.append((before, gseq, b"A" * 1000))  # (g_send's first byte value)
        if len(sf1) == 2:
            break
    assert len(sf1) == 2
    p.sf1_lost = sf1[1]
    p.data_on(1, size=1000)  # more on the join: its path dies before they arrive
    p.now += 0.01  # the server acks subflow 1's first segment; its second is lost
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + sf1[1][0]) & M32, ACK, (p.dack(),)))
    assert p0.snd_una == sf1[1][0] < p0.snd_nxt
    p.now += 0.007
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert MP._news(pj) > MP._news(p0) and pj.snd_una < pj.snd_nxt
    return p, p0, pj


def _until(p, cond, step=0.05, limit=100):
    acts = []
    for _ in range(limit):
        p.now += step
        acts += p.conv.tick(p.now)
        if cond():
            return acts
    raise AssertionError([q.state for q in p.mp.paths])


def test_a_stale_subflow_whose_server_answers_the_probe_outlives_a_dead_join():
    """The capture's case: subflow 1 goes stale first (the join's news is 7 ms newer) and is
    probed: a zero-length ACK just below the server's window, which a live TCP answers with
    a duplicate ACK (RFC 9293 §3.10.7.4, as keepalives). The answer is news: subflow 1
    lives on; the join, probed in its turn and silent, goes."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    acts = _until(p, lambda: p0.state is SS.STALE)
    probes = [a.data for a in acts if p.label(a.data) == "ack@0"]
    assert len(probes) == 1 and p.count("StaleProbeTX") == 1, [p.label(a.data) for a in acts]
    pr = parse_packet(probes[0])
    assert pr.payload_len == 0 and (pr.seq - p0.local_isn) & M32 == p0.snd_una - 1
    p.now += 0.01  # the server's answer: a duplicate ACK
    acts, _ = p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
    assert p0.state is SS.ESTABLISHED and p.count("StaleProbeAnswered") == 1
    assert p.classify(acts) == ["drop"]  # (the answer is ours, not the guest's duplicate)
    acts = _until(p, lambda: pj.state is SS.CLOSED)
    assert p0.state is SS.ESTABLISHED
    assert p.count("StaleProbeTX") == 2 and p.count("StaleProbeAnswered") == 1
    assert "ack@1" in [p.label(a.data) for a in acts]  # (the join was probed too)


def test_an_unanswered_probe_changes_nothing():
    """No answer (subflow 1's path is the dead one after all): it dies as before, a second
    after it went stale."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    _until(p, lambda: p0.state is SS.STALE)
    assert p.count("StaleProbeTX") == 1
    t = p.now
    p.now += MP.DEAD_AFTER - 0.01
    p.conv.tick(p.now)
    assert p0.state is SS.STALE
    p.now += 0.02
    p.conv.tick(p.now)
    assert p0.state is SS.CLOSED and p.count("StaleProbeAnswered") == 0
    assert pj.state is SS.ESTABLISHED and p.now - t <= MP.DEAD_AFTER + 0.011


def _s_data(p, p0, n=100):
    """The server's data on subflow 1 (a download segment), acking what it acked before."""
    una = (p0.local_isn + p0.snd_una) & M32
    dss = Dss(data_ack=p.dack().data_ack, data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True,
              subflow_seq=(p.s_nxt - p.s_isn) & M32, data_len=n)
    acts = p.inn(p.s_packet(p.s_nxt, una, ACK, (dss,), b"x" * n))
    p.s_nxt, p.s_drel = (p.s_nxt + n) & M32, p.s_drel + n
    return acts


def test_an_answer_buys_one_wait_and_no_second_probe():
    """The answer restarts the subflow's wait (alive_at in _base): it goes stale again only
    its wait after the answer, when the other has had news since; then with no news of its
    own there is no second probe, and it dies a second later."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
    t = p.now
    assert p.count("StaleProbeAnswered") == 1 and p0.state is SS.ESTABLISHED
    p.now += 0.01
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join's news, newer than the answer
    wait = max(MP.STALE_MIN, 4 * p0.srtt)
    p.now = t + wait - 0.01
    p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED
    p.now = t + wait + 0.01
    p.conv.tick(p.now)
    assert p0.state is SS.STALE and p.count("StaleProbeTX") == 1
    p.now += MP.DEAD_AFTER
    p.conv.tick(p.now)
    assert p0.state is SS.CLOSED and pj.state is SS.ESTABLISHED


@pytest.mark.parametrize("what", ["late", "add_addr", "old"])
def test_only_a_pure_ack_in_time_is_the_answer(what):
    """(review of stop 27's probe) Any segment that came while stale within a second counted
    as the answer. The answer is a pure ACK within its wait with no path manager option: a
    late ACK is none, an ADD_ADDR echo rides on a pure ACK but is none, an old reordered ACK
    is none."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    _until(p, lambda: p0.state is SS.STALE)
    una = (p0.local_isn + p0.snd_una - (1000 if what == "old" else 0)) & M32
    p.now += 0.01
    if what == "late":
        p.now += 1.0
    extra = (AddAddr(echo=True, addr_id=5, addr=p.addr_of(p.cfg.uplinks[0]), port=None, hmac=None),) \
        if what == "add_addr" else ()
    p.inn(p.s_packet(p.s_nxt, una, ACK, (p.dack(), *extra)))
    assert p.count("StaleProbeAnswered") == 0
    _until(p, lambda: p0.state is SS.CLOSED)
    assert pj.state is SS.ESTABLISHED


def test_the_answer_may_carry_another_window():
    """Linux's subflow window follows the connection's receive space, which its reader moves:
    the answer to the probe (a duplicate ACK) may offer another window than the last ACK.
    Required unchanged, the kernel's answers were missed (the black-holed first path,
    test_multipath.py)."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    _until(p, lambda: p0.state is SS.STALE)
    dups = p0.dups
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),), window=400))
    assert p.count("StaleProbeAnswered") == 1 and p0.dups == dups
    _until(p, lambda: pj.state is SS.CLOSED)
    assert p0.state is SS.ESTABLISHED


def test_the_servers_data_in_flight_does_not_use_the_probe_up():
    """(review of 7742d6c) A live server answers the probe after the data it had in flight:
    taken only as the first segment after the probe, the answer behind a download segment was
    not; each data segment revived subflow 1 without news, and on its kept clock it died ~1 s
    after it went stale beside the dead join (the captured hang). Data does not use the probe
    up: the answer behind it counts, subflow 1 lives, the join goes."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    probed = None
    for _ in range(90):  # the server's data on subflow 1 every 45 ms, a tick before each
        p.now += 0.045
        acts = p.conv.tick(p.now)
        if probed is None and any(p.label(a.data) == "ack@0" for a in acts):
            probed = p.now
        _s_data(p, p0)
        if probed is not None and p.now - probed < 0.01:
            p.now += 0.002  # the answer: a duplicate ACK right behind the server's data
            p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
        if p0.state is SS.CLOSED or pj.state is SS.CLOSED:
            break
    assert p.count("StaleProbeAnswered") == 1
    assert p0.state is not SS.CLOSED and pj.state is SS.CLOSED


@pytest.mark.parametrize("what", ["add_addr", "mp_prio"])
def test_a_path_manager_ack_before_the_answer_does_not_hide_it(what):
    """(review of ebd86b3) A pure ACK that cannot be the answer (ADD_ADDR, MP_PRIO) used the
    probe up all the same: the real answer right behind it was not taken, the live subflow
    1 died beside the dead join."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    _until(p, lambda: p0.state is SS.STALE)
    una = (p0.local_isn + p0.snd_una) & M32
    p.now += 0.005
    extra = (AddAddr(echo=True, addr_id=5, addr=p.addr_of(p.cfg.uplinks[0]), port=None, hmac=None),) \
        if what == "add_addr" else (MpPrio(True),)
    p.inn(p.s_packet(p.s_nxt, una, ACK, (p.dack(), *extra)))
    p.now += 0.005
    p.inn(p.s_packet(p.s_nxt, una, ACK, (p.dack(),)))  # the answer, right behind
    assert p.count("StaleProbeAnswered") == 1
    _until(p, lambda: p0.state is SS.CLOSED or pj.state is SS.CLOSED)
    assert p0.state is not SS.CLOSED and pj.state is SS.CLOSED


def test_the_servers_own_probe_on_a_join_is_no_answer():
    """(review of 7742d6c) The server's keepalive or zero-window probe on a join (at our
    rcv_nxt - 1, acking snd_una, no payload, window unchanged) right after our probe there
    was taken as its answer: the dead join's news looked the newest, subflow 1 (its one probe
    spent) went stale and died, the dead join was kept. Linux answers at its snd_nxt."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    j = p.joins[1]
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))  # sf1 answers
    assert p.count("StaleProbeAnswered") == 1
    acts = _until(p, lambda: pj.state is SS.STALE)
    assert "ack@1" in [p.label(a.data) for a in acts]  # (the join's probe)
    p.now += 0.02
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt - 1, j.c_isn + pj.snd_una, ACK, (p.dack(),)))
    _until(p, lambda: pj.state is SS.CLOSED)
    assert p0.state is SS.ESTABLISHED and p.count("StaleProbeAnswered") == 1


def test_an_answered_probe_does_not_make_a_resend_into_the_hole_answered():
    """(review of 7742d6c) The answer stays out of _answered: with it there, subflow 1 whose
    resend into its hole was lost (small probes answered, data lost: an MTU black hole) was
    exempt from the stale rule for good once a probe was answered."""
    p, p0, pj, sent, _ = _sf1_sacked_past_a_hole(join_acks_last=True)
    _resend_into_the_hole(p, p0, sent)  # lost
    j = p.joins[1]
    p.j_in(p.j_ack(j, ack=pj.snd_nxt))  # the join's path works after all
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    _sack(p, p0, p0.snd_una, (sent[1][1], p0.snd_nxt))  # the answer (the same blocks)
    assert p.count("StaleProbeAnswered") == 1 and not MP._answered(p0)
    for _ in range(8):  # the join has news; subflow 1's resend never arrives
        p.data_on(1, size=1000)
        p.now += 0.2
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        p.conv.tick(p.now)
    _until(p, lambda: p0.state is SS.CLOSED)


def _a_hole_on_the_join():
    """A join whose first segment is lost: (pair, join, subflow 1's path, the join's path,
    the hole's subflow seq, the relative DSN right after the hole)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    first = p.data_on(1, size=1000)  # lost on the join: the hole
    pk = parse_packet(first)
    ss1 = (pk.seq - j.c_isn) & M32
    (dss,) = [o for o in mptcp_options(first, pk) if type(o) is Dss]
    hole_end = (dss.data_seq - p.idsn_c) + 1000
    return p, j, p0, pj, ss1, hole_end


def test_an_acked_hole_is_filled_while_its_server_sacks_what_follows():
    """(review of 0597826) With SACK news in _base, the fill of a hole at snd_una whose bytes
    the server has at the data level (_fill_acked_hole: the only repair, _head_hole skips
    data-acked holes) waited while the server SACKed the bytes after it, though none of them
    reaches the data level before the hole is filled. The fill goes by the cumulative clock."""
    p, j, p0, pj, ss1, hole_end = _a_hole_on_the_join()
    t_hole, filled_at = p.now, None
    for _ in range(16):  # 4 s: more bytes each 0.25 s; the join SACKs all after the hole but the last
        p.now += 0.25
        if not _two_more_on_the_join(p):
            break
        sack = (((j.c_isn + ss1 + 1000) & M32, (j.c_isn + pj.snd_nxt - 1000) & M32),)
        p.c_dack = hole_end  # the server has the hole's bytes (a reinjection on subflow 1)
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),),
                          tcp=encode_tcp_options(sack=sack)))
        p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
        if pj.fill_at != pj.progress_at:  # (the fill's look is due by the cumulative clock: woken then)
            assert p.conv.next_deadline() <= MP._cum(pj) + max(MP.STALE_MIN, 4 * pj.srtt) + 1e-9
        p.conv.tick(p.now + 0.001)
        if filled_at is None and p.count("AckedHoleFilled"):
            filled_at = p.now
    assert filled_at is not None and filled_at - t_hole <= 1.0, filled_at


@pytest.mark.parametrize("dack_after", [0.32, 0.6, 1.2])
def test_a_hole_data_acked_after_the_look_for_a_fill_is_still_filled(dack_after):
    """(review of ebd86b3) The look for a fill is once per progress: a hole at the join's
    snd_una data-acked only after it (the server SACKing all after the hole: the join
    _answered, left alone) was never filled, and nothing more happened to the join. The
    DATA_ACK passing the hole's DSN gives one more look (_rearm_fill). Driven by
    next_deadline."""
    p, j, p0, pj, ss1, hole_end = _a_hole_on_the_join()
    t_hole = p.now
    assert _two_more_on_the_join(p)

    def sack_all():  # the server SACKs every byte after the hole
        sack = (((j.c_isn + ss1 + 1000) & M32, (j.c_isn + pj.snd_nxt) & M32),)
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + ss1, ACK, (p.dack(),),
                          tcp=encode_tcp_options(sack=sack)))
        p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    p.now += 0.05
    sack_all()
    acked = False
    while p.now < t_hole + 20.0 and not p.count("AckedHoleFilled"):
        nd = p.conv.next_deadline()
        p.now += 0.05 if nd is None else max(0.001, min(0.05, nd - p.now))
        if not acked and p.now - t_hole >= dack_after:
            acked = True
            p.c_dack = hole_end  # the hole's bytes reach the server's data level elsewhere
            sack_all()  # (the same blocks with the new DATA_ACK: no SACK news)
        p.conv.tick(p.now)
    assert p.count("AckedHoleFilled") == 1, (pj.state, MP._answered(pj))


def test_a_path_that_answers_probes_but_loses_data_still_dies():
    """(review of stop 27's probe, D1) An answer buys one wait: without real news (an ACK of
    new bytes, SACK news) since the last probe there is no new probe, and the subflow dies
    on its next stale beside a join with news (an MTU black hole answers small probes)."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join()
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join works after all
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
    assert p.count("StaleProbeAnswered") == 1 and p0.state is SS.ESTABLISHED
    assert not MP._answered(p0)
    p.data_on(1, size=1000)
    p.now += 0.01
    p.j_in(p.j_ack(p.joins[1], ack=pj.snd_nxt))  # the join's news, later again
    acts = _until(p, lambda: p0.state is SS.STALE)
    assert "ack@0" not in [p.label(a.data) for a in acts]  # no second probe
    _until(p, lambda: p0.state is SS.CLOSED)
    assert p.count("StaleProbeTX") == 1
