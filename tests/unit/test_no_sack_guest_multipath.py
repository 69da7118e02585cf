"""A guest without SACK, its connection multipath (stop 38). Such a guest learns of a loss
only from duplicate ACKs (RFC 5681: same ack, no data, the window unchanged; Linux counts no
ACK that changed the window) or from its RTO, and the subflows wait for its resends. Found
by the variants kernel test, which timed out on an upload through two uplinks in stop 37's
CI: our duplicate ACKs carried the data level's growing window (none was counted: an RTO at
every loss), and live subflows went stale and died while they waited for the guest."""

from __future__ import annotations

from middlebox.core import Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire import mptcp_options, parse_packet
from middlebox.wire.mptcp import Dss, MpPrio
from tests.unit.test_multipath_stale import _sf1_tail_lost_beside_a_dying_join, _until
from tests.unit.test_subflow_table import ACK, M32, Join, MPair


def _hole_on_the_join(sack: bool):
    """A join whose first segment is lost, the server holding every byte before it (subflow
    1 and the data level acked up to it) and the bytes after it. (pair, join, the hole's
    subflow seq, the hole's guest seq)"""
    p = MPair(1)
    p.go_multipath()
    p.flow.sack_ok = sack
    p.join_up(1)
    j = p.joins[1]
    p0 = p.mp.paths[0]
    first = p.data_on(1, size=1000)  # lost on the join: the hole
    pk = parse_packet(first)
    ss = (pk.seq - j.c_isn) & M32
    (dss,) = [o for o in mptcp_options(first, pk) if type(o) is Dss]
    hole = dss.data_seq - p.idsn_c
    for _ in range(3):
        p.data_on(1, size=1000)  # after the hole, on the join
    p.c_dack = hole  # (the server's DATA_ACK stops at the hole)
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    assert p.mp.data_ack == hole
    return p, j, ss, (p.flow.guest_isn + hole) & M32


def _guest_acks(p, acts) -> list:
    """(ack, window) of each ACK the actions send to the guest."""
    out = []
    for a in acts[1:]:
        if p.label(a.data) == "g_ack":
            pk = parse_packet(a.data)
            out.append((pk.ack, pk.window))
    return out


def _dupacks_with_windows_opening(p, j, ss) -> tuple:
    """The server's duplicate ACKs on the join (the bytes after the hole arriving), between
    ACKs on subflow 1 whose window grows (its reader moved): what the guest gets of each,
    (ack, window) lists."""
    p0 = p.mp.paths[0]
    sf1, dups = [], []
    for i in range(4):
        acts, sent = p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),),
                                      window=520 + 20 * i))
        if sent is not None:
            pk = parse_packet(sent)
            sf1.append((pk.ack, pk.window))
        dups += _guest_acks(p, p.j_in(p.j_ack(j, ack=ss)))
    return sf1, dups


def test_duplicate_acks_to_a_guest_without_sack_keep_their_window():
    """And an ACK that would only open the window (subflow 1's, the guest far from the
    window's edge) is not sent: to this guest it would be one more duplicate, though no
    byte came after the hole."""
    p, j, ss, hole = _hole_on_the_join(sack=False)
    before = p.count("DupAckFwd")
    sf1, dups = _dupacks_with_windows_opening(p, j, ss)
    assert p.count("DupAckFwd") - before == 4
    assert len(dups) == 4 and {a for a, _ in dups} == {hole}, dups
    assert len({w for _, w in dups}) == 1, dups  # each one a duplicate the guest counts
    assert sf1 == []


def test_a_guest_with_sack_sees_the_window_open():
    p, j, ss, hole = _hole_on_the_join(sack=True)
    sf1, dups = _dupacks_with_windows_opening(p, j, ss)
    got = sf1 + dups
    assert len(sf1) == 4 and {a for a, _ in got} == {hole} and len({w for _, w in got}) > 1, got


def test_a_guest_without_sack_near_its_windows_edge_sees_it_open():
    """Held, the window would keep a guest that filled it from sending at all."""
    p, j, ss, hole = _hole_on_the_join(sack=False)
    p0 = p.mp.paths[0]
    w0 = parse_packet(MP._guest_ack(p.flow, p.mp)).window
    for _ in range(200):
        if MP._room_short(p.flow, p.mp):
            break
        p.g_send(1, 1000)
    assert MP._room_short(p.flow, p.mp)
    acts, sent = p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),), window=900))
    got = [(parse_packet(sent).ack, parse_packet(sent).window)] if sent is not None else _guest_acks(p, acts)
    assert got and got[-1][0] == hole and got[-1][1] > w0, (got, w0)


def test_subflow_1_that_duplicate_acks_is_not_stale():
    """Subflow 1 without SACK (the first connection to a server: none added) waits at a hole
    while its server duplicate-ACKs what comes after it: news that its path delivers, as
    SACK blocks would be. Before, it went stale beside the join every 0.3 s."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join(sack=False)
    j = p.joins[1]
    assert not p.flow.sack_added
    for _ in range(30):
        p.data_on(1, size=1000)  # (bytes on subflow 1 too, after its hole: duplicate ACKs)
        p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        p.now += 0.05
        p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED and p.count("SubflowStale") == 0


def test_a_join_without_sack_takes_no_news_from_the_servers_own_probe():
    """The server's keepalive or zero-window probe on a join (below our rcv_nxt) is no
    duplicate ACK: a dead join's news that way would make the live subflow 1 die."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join(sack=False)
    j = p.joins[1]
    assert not pj.sack
    at = pj.sack_at
    p.now += 0.05
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt - 1, j.c_isn + pj.snd_una, ACK, (p.dack(),)))
    assert pj.sack_at == at
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + pj.snd_una, ACK, (p.dack(),)))
    assert pj.sack_at == p.now  # (a duplicate ACK at its snd_nxt: news)


def test_an_answered_subflow_waits_for_the_guest_then_a_black_hole_still_dies():
    """A guest without SACK: subflow 1's lost tail waits for the guest's RTO. Its path
    answered our probe, and nothing went on it since: it stays, however long the guest
    takes, while the join has news. The next bytes sent there go unanswered (a path that
    answers small probes but loses data): stale again, no second probe, dead a second on."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join(sack=False)
    j = p.joins[1]
    p.j_in(p.j_ack(j, ack=pj.snd_nxt))  # the join works after all
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
    assert p.count("StaleProbeAnswered") == 1 and p0.state is SS.ESTABLISHED
    for _ in range(60):  # 3 s: the guest's RTO, backing off
        p.now += 0.05
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED and p.count("SubflowStale") == 1
    assert MP.next_deadline(p.conv) is None or MP.next_deadline(p.conv) > p.now
    for _ in range(60):  # new bytes until some go on subflow 1: lost
        before = p0.snd_nxt
        p.g_send(1, 1000)
        if p0.snd_nxt > before:
            break
    assert p0.sent_at > p0.alive_at
    labels = []
    for _ in range(60):  # the join keeps its news; subflow 1's new bytes are never answered
        p.now += 0.05
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        labels += [p.label(a.data) for a in p.conv.tick(p.now)]
        if p0.state is SS.CLOSED:
            break
    assert p0.state is SS.CLOSED and pj.state is SS.ESTABLISHED
    assert p.count("SubflowStale") == 2 and p.count("StaleProbeTX") == 1  # no second probe
    assert "ack@0" not in labels


# -- found by a review of the first version (d71154a; each failed on it) -----------------------


def test_a_resend_after_the_answer_gets_its_wait_before_the_subflow_goes_stale():
    """_waits: after an answered probe, subflow 1 may go stale again only for something sent
    after the answer. The stale clock (_base) ran from the answer (alive_at): the guest's
    RTO resend of subflow 1's lost segment, sent 0.5 s after the answer, made it stale in
    the very next tick (5 ms later), before the server could answer the resend (_sent)."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join(sack=False)
    j = p.joins[1]
    ss, gseq, payload = p.sf1_lost
    p.j_in(p.j_ack(j, ack=pj.snd_nxt))  # the join works
    _until(p, lambda: p0.state is SS.STALE)
    p.now += 0.01
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(),)))
    assert p0.state is SS.ESTABLISHED and p.count("StaleProbeAnswered") == 1
    for _ in range(10):  # 0.5 s: the guest's RTO
        p.now += 0.05
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED
    acts, sent = p.out(p.g_data(payload[:1000], seq=gseq))  # the guest's resend: on subflow 1
    assert sent is not None and p0.sent_at == p.now
    stale = p.count("SubflowStale")
    p.g_send(1, 1000)  # new bytes: on the join (subflow 1 is not chosen behind its hole)
    assert p0.sent_at < p.now
    p.now += 0.002
    p.j_in(p.j_ack(j, ack=pj.snd_nxt))  # (the join's news, as every RTT)
    assert MP._news(pj) > MP._news(p0)
    p.now += 0.003
    p.conv.tick(p.now)
    assert p0.state is SS.ESTABLISHED and p.count("SubflowStale") == stale, \
        "stale 5 ms after the resend: no wait for its answer"


def test_subflow_1_with_bytes_from_the_single_path_phase_can_go_stale():
    """sent_at starts at -1 and so does alive_at: a subflow on which nothing was sent through
    send() since it began (subflow 1's bytes in flight when the flow went multipath) never
    went stale for a guest without SACK (tick and next_deadline skipped it), where before
    d71154a it went stale beside a join with news."""
    p = MPair(1)
    p.handshake()
    _, sent = p.out(p.g_data(b"hello"))
    p.s_receive(sent)
    _, lost = p.out(p.g_data(b"L" * 1000))  # on subflow 1, lost
    assert lost is not None
    p.c_dack = 1 + 5
    acts, _ = p.inn(p.s_packet(p.s_nxt, (p.g_isn + 1 + 5) & M32, ACK, (p.dack(),)))
    for a in acts[1:]:
        if isinstance(a, Inject):
            jj = Join(p, a.data)
            p.joins[jj.uplink.id] = jj
    p.flow.sack_ok = False
    p0 = p.mp.paths[0]
    assert p0.snd_una < p0.snd_nxt and p0.sent_at == -1.0
    p.join_up(1)
    j = p.joins[1]
    pj = p.mp.paths[1]
    for _ in range(60):  # the join carries on, acked every 50 ms; subflow 1 never acks
        p.data_on(1, size=1000)
        p.j_in(p.j_ack(j, ack=pj.snd_nxt))
        p.now += 0.05
        p.conv.tick(p.now)
        if p0.state is not SS.ESTABLISHED:
            break
    assert p0.state is not SS.ESTABLISHED, (p0.sent_at, p0.alive_at, MP._waits(p0))


def test_a_path_manager_ack_on_subflow_1_is_no_duplicate_ack_news():
    """The server's MP_PRIO (or ADD_ADDR / REMOVE_ADDR, and Linux's mptcp_send_ack on every
    subflow when the DATA_FIN arrives) rides a pure ACK at snd_una with the window unchanged:
    the duplicate ACK rule took it as news (sack_at) though nothing of ours reached the
    server on that subflow. _probe_answer_like refuses exactly these for the same reason (review of
    7742d6c: a dead subflow's news that way made the live one die)."""
    p, p0, pj = _sf1_tail_lost_beside_a_dying_join(sack=False)
    assert p0.snd_una < p0.snd_nxt
    at = p0.sack_at
    p.now += 0.05
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_una) & M32, ACK, (p.dack(), MpPrio(True))))
    assert p0.sack_at == at, "a path manager's pure ACK counted as news of bytes reaching the server"
