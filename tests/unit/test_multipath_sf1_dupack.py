"""Download over a join: the guest's ACKs of join data must not reach the server as
subflow-level duplicates on subflow 1 (without SACK there, Linux counts each as a Reno dupack:
spurious fast retransmits, subflow 1's cwnd at 2-3, its share of the download gone). They are
held back while a join lives; the join's own ACKs carry the DATA_ACK, or the timer does."""

from __future__ import annotations

from middlebox.core import Counter, Drop, Inject, Rewrite
from middlebox.core import MULTIPATH as MP
from middlebox.wire import mptcp_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, M64, MPair


def _dack_of(buf: bytes) -> int | None:
    pkt = parse_packet(buf)
    for o in mptcp_options(buf, pkt):
        if getattr(o, "data_ack", None) is not None:
            return o.data_ack
    return None


def _acked():
    """A pair with one join; the guest acks everything so far: a subflow-1 ACK goes out (the
    server's view of it). Returns (pair, join, that ACK's actions, its bytes)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    acts, sent = p.out(p.g_ack())
    assert isinstance(acts[0], Rewrite)
    return p, p.joins[1], acts, sent


def _setup():
    p, j, _, _ = _acked()
    return p, j


def test_guest_acks_of_join_data_are_not_subflow_1_duplicates():
    p, j = _setup()
    held = p.count("Sf1DupAckHeld")
    for _ in range(5):
        p.j_in(p.j_data(j, b"x" * 100))
        p.g_rcv = (p.s_isn + p.s_drel) & M32  # the guest has it
        acts, _ = p.out(p.g_ack())
        assert isinstance(acts[0], Drop) and len(acts) == 1, acts
    assert p.count("Sf1DupAckHeld") == held + 5
    # the next join ACK carries the guest's DATA_ACK
    acts = p.j_in(p.j_data(j, b"y" * 100))
    acks = [a.data for a in acts if isinstance(a, Inject) and p.label(a.data) == "ack@1"]
    want = (p.s_idsn + p.flow.rcv_rel) & M64
    assert acks and _dack_of(acks[-1]) in (want, want & M32)
    assert p.mp.dack_due == 0.0


def test_held_data_ack_is_flushed_by_the_timer():
    p, j = _setup()
    p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    acts, _ = p.out(p.g_ack())
    assert isinstance(acts[0], Drop)
    due = p.mp.dack_due
    assert due and p.conv.next_deadline() <= due
    p.now = due + 0.0001
    acts = p.conv.tick(p.now)
    labels = [p.label(a.data) for a in acts if isinstance(a, Inject)]
    assert labels == ["ack@1"], labels
    want = (p.s_idsn + p.flow.rcv_rel) & M64
    assert _dack_of(acts[0].data) in (want, want & M32)
    assert p.count("DataAckFlushed") == 1 and p.mp.dack_due == 0.0


def test_window_update_and_subflow_1_progress_still_go_on_subflow_1():
    p, j = _setup()
    p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    # a larger window is a window update for the server, not a duplicate
    acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=600))
    assert isinstance(acts[0], Rewrite)


def test_join_acks_carry_sack_blocks_of_out_of_order_download_data():
    """Joins offer SACK_PERM (we receive their download and ack it on arrival): when the
    server's SYN/ACK permits it, our ACKs name what we hold beyond a hole, the block with the
    latest arrival first; without it, no SACK option (and the hole filled: none either)."""
    from middlebox.wire import encode_tcp_options, options_of

    for permitted in (True, False):
        p = MPair(1)
        p.go_multipath()
        j = p.joins[1]
        tcp = encode_tcp_options(mss=1460, wscale=7, sack_perm=permitted)
        synack = p.j_packet(j, j.s_isn, j.c_isn + 1, 0x12, (_synack_join(p, j),), tcp=tcp,
                            window=65535)
        p.j_in(synack)
        j.s_rcv = 1
        p.j_in(p.j_ack(j))
        segs = [p.j_data(j, bytes([65 + i]) * 100) for i in range(4)]
        p.j_in(segs[0])
        p.j_in(segs[2])  # seg 1 lost: [201, 301) held beyond the hole
        acts3 = p.j_in(segs[3])
        ack = [a.data for a in acts3 if isinstance(a, Inject) and p.label(a.data) == "ack@1"][-1]
        sack = options_of(ack, parse_packet(ack)).sack
        if permitted:
            assert sack == (((j.s_isn + 201) & M32, (j.s_isn + 401) & M32),), sack
        else:
            assert sack == ()
        acts = p.j_in(segs[1])  # the hole is filled: a plain cumulative ACK
        ack = [a.data for a in acts if isinstance(a, Inject) and p.label(a.data) == "ack@1"][-1]
        assert options_of(ack, parse_packet(ack)).sack == ()
        assert parse_packet(ack).ack == (j.s_isn + 401) & M32


def _synack_join(p, j):
    from middlebox.wire import MpJoinSynAck, join_hmac

    mac = join_hmac(p.s_key, p.c_key, j.s_nonce, j.opt.nonce, p.s_version)[:8]
    return MpJoinSynAck(False, 0, mac, j.s_nonce)


def test_guest_resend_of_bytes_their_join_acked_is_not_sent_again():
    """Upload: a guest segment resent (after an RTO the guest, without SACK, resends all from
    its snd_una) goes to its subflow and seq again, unless that subflow has acked it: the
    server's TCP would discard the copy, and on a full path it crowded out resends of real
    holes. Dropped and counted (GuestRetransAcked); before the subflow's ACK it still goes."""
    from middlebox.core import Direction

    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    # not acked on the join yet: the resend goes there again, same subflow seq
    acts = p.conv.handle(p.g_data(b"A" * 1000, seq=gseq), Direction.OUT, p.now)
    again = [a.data for a in acts if isinstance(a, Inject) and p.label(a.data) == "data@1"]
    assert again and (parse_packet(again[0]).seq - j.c_isn) & M32 == ss, p.classify(acts)
    # the join acks it (subflow level; the DATA_ACK stays: bytes before it are missing)
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert p.path(1).snd_una == ss + 1000
    mapped, acked = p.count("GuestRetransMapped"), p.count("GuestRetransAcked")
    acts = p.conv.handle(p.g_data(b"A" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.classify(acts) == ["drop"], p.classify(acts)
    assert p.count("GuestRetransAcked") == acked + 1 and p.count("GuestRetransMapped") == mapped


def _sf1_seg(p, ssn, drel, payload):
    """A server segment on subflow 1 at relative ssn `ssn` mapping DSN `drel` (relative)."""
    from middlebox.wire import Dss

    dss = Dss(data_ack=p.dack().data_ack, data_seq=(p.s_idsn + drel) & M64, dsn64=True, subflow_seq=ssn,
              data_len=len(payload))
    return p.s_packet((p.s_isn + ssn) & M32, (p.g_isn + 6) & M32, 0x18, (dss,), payload)


def test_a_guest_ack_passed_on_subflow_1_with_a_hole_keeps_the_servers_edge_within_the_guests():
    """Subflow 1 has a hole (its segment at ssn 1 lost, the next one in): the guest's ACKs of
    a join's bytes pass on subflow 1 (not held as duplicates: the hole needs them). Same
    subflow-1 ack, a window smaller by what they acked: Linux keeps the window it holds for
    subflow 1 and pairs it with the new DATA_ACK, an edge beyond the guest's, and its next
    bytes on a join were dropped by the guest (JoinBeyondGuestWindow, MPTCP-level
    retransmissions). The DATA_ACK on such an ACK stops where the held window meets the
    guest's edge (Sf1DataAckHeld); a later ACK that the server takes carries the rest."""
    p, j, _, sent = _acked()
    f = p.flow
    ws = f.guest_wscale
    unit = 1 << ws
    # the window the server holds for subflow 1: that of the last ACK it took, this one's
    held = parse_packet(sent).window << ws
    # the join brings DSN [s_drel, +3000); subflow 1's next segment (ssn 1, later DSNs) is
    # lost and the one after it arrives: a hole on subflow 1
    d0 = p.s_drel
    p.j_in(p.j_data(j, b"j" * 3000))
    p.inn(_sf1_seg(p, 1 + 1000, d0 + 4000, b"b" * 1000))
    assert f.sf.ranges, "subflow 1 has a hole"
    edge = f.rcv_rel + held  # the guest reads nothing: its edge stays
    sent = []
    for k in (1, 2, 3):
        ack = d0 + 1000 * k
        win = -(-(edge - ack) // unit)
        acts, _ = p.out(p.g_packet(p.g_nxt, (f.server_isn + ack) & M32, 0x10, window=win))
        for a in acts:
            if isinstance(a, Rewrite):
                sent.append((a.data, ack + (win << ws)))
    assert len(sent) == 3, "the guest's ACKs go on on subflow 1"
    for buf, guest_edge in sent:
        dack = (_dack_of(buf) - p.s_idsn) & M32
        assert dack + held <= guest_edge, "the server's edge passed the guest's"
    assert p.count("Sf1DataAckHeld") >= 1
    # the lost segment comes again: the subflow-1 ack moves, the window is taken, the whole
    # DATA_ACK goes
    p.inn(_sf1_seg(p, 1, d0 + 3000, b"a" * 1000))
    ack = d0 + 3000 + 1000  # (the guest has the join's bytes and the resent ones)
    acts, _ = p.out(p.g_packet(p.g_nxt, (f.server_isn + ack) & M32, 0x10, window=-(-(edge - ack) // unit)))
    (rw,) = [a for a in acts if isinstance(a, Rewrite)]
    assert (_dack_of(rw.data) - p.s_idsn) & M32 == f.rcv_rel == ack


class _LinuxSf1:
    """The server's window state for subflow 1 as Linux keeps it (tcp_may_update_window, then
    ack_update_msk: wnd_end = max(wnd_end, DATA_ACK + snd_wnd)). (From a review of 0032673.)"""

    def __init__(self, p):
        self.p = p
        self.snd_una = self.wl1 = self.snd_wnd = None
        self.wnd_end = 0

    def feed(self, acts):
        p = self.p
        for a in acts:
            if not isinstance(a, (Rewrite, Inject)):
                continue
            pkt = parse_packet(a.data)
            if pkt.src != p.g_bytes or pkt.dst == p.g_bytes or pkt.sport != p.gport:
                continue  # only what reaches the server on subflow 1
            ack = (pkt.ack - p.flow.sf.remote_isn) & M32
            seq = (pkt.seq - p.flow.sf.local_isn) & M32
            nwin = pkt.window << p.flow.guest_wscale
            if self.snd_una is None or ack > self.snd_una or seq > self.wl1 or (
                    seq == self.wl1 and (nwin > self.snd_wnd or nwin == 0)):
                self.wl1, self.snd_wnd = seq, nwin
            if self.snd_una is None or ack > self.snd_una:
                self.snd_una = ack
            dack = _dack_of(a.data)
            if dack is not None:
                self.wnd_end = max(self.wnd_end, ((dack - p.s_idsn) & M32) + self.snd_wnd)


def test_the_converters_own_acks_on_subflow_1_keep_the_window_model_right():
    """The ACK the converter injects for a segment the guest already has (DupConsumed: the
    server's MPTCP-level retransmission on subflow 1) moves the subflow ack with the guest's
    window, and Linux takes that window. Untracked, the model judged the guest's next ACK
    (same subflow ack, smaller window) as taken, and the server's edge passed the guest's."""
    p, j, acts, sent = _acked()
    f = p.flow
    unit = 1 << f.guest_wscale
    lx = _LinuxSf1(p)
    lx.feed(acts)
    edge = f.rcv_rel + (parse_packet(sent).window << f.guest_wscale)  # the guest reads nothing
    d0 = p.s_drel
    p.j_in(p.j_data(j, b"j" * 2048))
    acts, _ = p.out(p.g_packet(p.g_nxt, (f.server_isn + d0 + 2048) & M32, ACK, window=(edge - d0 - 2048) // unit))
    lx.feed(acts)
    acts, _ = p.inn(_sf1_seg(p, 1, d0, b"j" * 1024))  # an MPTCP-level retransmission: consumed
    assert p.count("DupConsumed") == 1
    lx.feed(acts)
    p.j_in(p.j_data(j, b"k" * 1024))
    acts, _ = p.out(p.g_packet(p.g_nxt, (f.server_isn + d0 + 3072) & M32, ACK, window=(edge - d0 - 3072) // unit))
    lx.feed(acts)
    p.now += 0.05
    lx.feed(p.conv.tick(p.now))
    assert lx.wnd_end <= edge, (lx.wnd_end, edge)


def test_a_capped_data_ack_is_flushed_on_a_join_by_the_clock():
    """The rest of a DATA_ACK capped on subflow 1 goes on the join within DACK_FLUSH (capped
    there by the join's own held window), not only with the next ACK the server takes."""
    p, j, _, sent = _acked()
    f = p.flow
    unit = 1 << f.guest_wscale
    held = parse_packet(sent).window << f.guest_wscale
    d0 = p.s_drel
    p.j_in(p.j_data(j, b"j" * 3072))
    p.inn(_sf1_seg(p, 1 + 1024, d0 + 4096, b"b" * 1024))  # subflow 1 has a hole
    edge = d0 + held
    p.out(p.g_packet(p.g_nxt, (f.server_isn + d0 + 3072) & M32, ACK, window=(edge - d0 - 3072) // unit))
    assert p.count("Sf1DataAckHeld") == 1 and p.mp.dack_due
    p.now = p.mp.dack_due + 0.0001
    acts = p.conv.tick(p.now)
    assert [a for a in acts if isinstance(a, Inject) and p.label(a.data) == "ack@1"]
    assert p.count("DataAckFlushed") >= 1


def test_subflow_1s_window_model_starts_where_the_flow_is():
    p = MPair(1)
    p.go_multipath()
    p0, f = p.mp.paths[0], p.flow
    assert p0.wnd_ack == f.sf.rcv_base and p0.wnd_seq == p0.snd_nxt
    assert p0.wnd_held == f.guest_window << f.guest_wscale


def test_the_guests_answer_to_a_window_probe_on_subflow_1_is_not_held():
    """The stall of the slow-reader loss test (a throwaway log of it): the guest's window
    update (same ack, window 0 -> 8532) was lost; the server probed subflow 1 at rcv_nxt - 1
    for a minute, and every answer of the guest, the same ack and window as the lost update,
    was held here as a subflow-1 duplicate. An old segment's answer passes; once."""
    p, j, _, _ = _acked()
    acts, _ = p.out(p.g_ack())  # the same ACK again: a duplicate, held
    assert isinstance(acts[0], Drop), acts
    held = p.count("Sf1DupAckHeld")
    probe = p.s_packet((p.s_nxt - 1) & M32, p.g_nxt, ACK, (p.s_dss_ack(),))
    _, got = p.inn(probe)
    assert got is not None and parse_packet(got).seq == (p.g_rcv - 1) & M32  # the guest sees it
    acts, sent = p.out(p.g_ack())  # its answer: the same ack and window
    assert isinstance(acts[0], Rewrite) and sent is not None, acts
    assert parse_packet(sent).window == 502
    assert p.count("Sf1AnswerPassed") == 1 and p.count("Sf1DupAckHeld") == held
    acts, _ = p.out(p.g_ack())  # a duplicate again
    assert isinstance(acts[0], Drop), acts
    assert p.count("Sf1DupAckHeld") == held + 1


def test_the_guests_window_probe_goes_on_as_a_probe_and_its_answer_comes_back():
    """The guest probes a closed window with a pure segment at snd_una - 1 (Linux's
    tcp_xmit_probe_skb; keepalives look the same). Sent at subflow 1's snd_nxt, as any pure
    ACK, the server took it for an ordinary ACK and never answered (or it was held as a
    duplicate): a lost window update of the server's was never repeated. It goes on at
    snd_una - 1, where the server answers it, and that answer reaches the guest although it
    moves nothing (review: it was dropped as a data-level duplicate, so a keepalive never
    got its answer); with subflow 1 gone, all of it on the join."""
    from middlebox.core.multipath import SS

    p, j, _, _ = _acked()
    p0 = p.mp.paths[0]
    probe = p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, ACK)
    acts, sent = p.out(probe)
    assert isinstance(acts[0], Rewrite), acts  # not held as a subflow-1 duplicate
    assert parse_packet(sent).seq == (p0.local_isn + p0.snd_una - 1) & M32
    assert _dack_of(sent) is not None and p.count("GuestProbeFwd") == 1
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),)))  # Linux's dupack
    assert got is not None and p.count("ProbeAnswerFwd") == 1
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),)))  # once
    assert got is None
    acts, _ = p.out(p.g_ack())  # an ordinary ACK is still what it was: a held duplicate
    assert isinstance(acts[0], Drop) and p.count("GuestProbeFwd") == 1
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, 0x14))  # subflow 1 reset: the join carries on
    assert p0.state is SS.CLOSED
    path = p.mp.paths[1]
    acts, _ = p.out(probe)
    inj = [a.data for a in acts if isinstance(a, Inject)]
    assert isinstance(acts[0], Drop) and [p.label(b) for b in inj] == ["ack@1"], acts
    pkt = parse_packet(inj[0])
    assert pkt.seq == (j.c_isn + path.snd_una - 1) & M32 and pkt.ack == (j.s_isn + path.rcv_nxt) & M32
    assert p.count("GuestProbeFwd") == 2
    acts = p.j_in(p.j_ack(j, ack=path.snd_nxt))  # the server's answer on the join
    assert "g_ack" in p.classify(acts) and p.count("ProbeAnswerFwd") == 2


def test_a_guest_probe_below_subflow_1s_unacked_bytes_goes_at_snd_una():
    """Guest bytes on subflow 1 data-acked through the join before subflow 1's own ACK came:
    a probe at snd_nxt - 1 could lie within what the server takes (its window and DATA_ACK
    taken, no answer). At snd_una - 1, as Linux's own, it never does (review)."""
    p, j, _, _ = _acked()
    p0 = p.mp.paths[0]
    for _ in range(4):
        p.out(p.g_data(b"u" * 100))
    path = p.mp.paths[1]
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p.j_in(p.j_ack(j, ack=path.snd_nxt))  # the DATA_ACK of all of it, on the join
    assert p0.snd_una < p0.snd_nxt and p.mp.data_ack == p.c_dack
    acts, sent = p.out(p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, ACK))
    assert p.count("GuestProbeFwd") == 1
    assert parse_packet(sent).seq == (p0.local_isn + p0.snd_una - 1) & M32


def test_a_guest_probe_carrying_a_new_ack_goes_as_an_ordinary_ack():
    """Linux sends no delayed ACK once it probes: the probe may be the only carrier of a new
    ack, and the server takes nothing from a probe (review: the ack was lost until the
    server's RTO). Such a probe goes as an ordinary ACK; the next one as a probe."""
    p, j, _, _ = _acked()
    _, got = p.inn(p.s_data_pkt(b"s" * 100))  # download bytes on subflow 1
    assert got is not None
    p.g_rcv = (p.g_rcv + 100) & M32
    p0 = p.mp.paths[0]
    acts, sent = p.out(p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, ACK))
    assert isinstance(acts[0], Rewrite) and p.count("GuestProbeFwd") == 0
    assert parse_packet(sent).seq == (p0.local_isn + p0.snd_nxt) & M32
    assert p.mp.dack_out == p.flow.rcv_rel
    acts, sent = p.out(p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, ACK))
    assert p.count("GuestProbeFwd") == 1 and parse_packet(sent).seq == (p0.local_isn + p0.snd_una - 1) & M32


def test_the_servers_probe_reaches_the_guest_at_its_rcv_nxt_minus_1_above_a_hole():
    """Subflow 1's last bytes sit above a data-level hole a join left: its offset is theirs,
    and the server's probe at subflow 1's rcv_nxt - 1 landed inside the guest's window,
    where a zero-length segment is taken in silence: never answered (review). It reaches
    the guest at its rcv_nxt - 1; its answer passes (not held), and only within ANSWER_WAIT."""
    p, j, _, _ = _acked()
    p.j_data(j, b"L" * 100)  # the join's 100 bytes: lost on the path
    rel = (p.s_nxt - p.s_isn) & M32
    dsn = (p.s_idsn + p.s_drel) & M64
    dss = p.s_dss_ack(data_seq=dsn, dsn64=True, subflow_seq=rel, data_len=100)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | 0x08, (dss,), b"S" * 100))
    assert got is not None
    p.s_nxt = (p.s_nxt + 100) & M32
    p.s_drel += 100
    p.out(p.g_ack())  # the guest's dupack (the hole)
    rcv = p.flow.rcv_rel
    _, got = p.inn(p.s_packet((p.s_nxt - 1) & M32, p.g_nxt, ACK, (p.s_dss_ack(),)))
    assert got is not None and (parse_packet(got).seq - p.s_isn) & M32 == (rcv - 1) & M32
    acts, _ = p.out(p.g_ack())  # the guest's answer: a duplicate, yet it passes
    assert isinstance(acts[0], Rewrite), acts
    p.inn(p.s_packet((p.s_nxt - 1) & M32, p.g_nxt, ACK, (p.s_dss_ack(),)))
    p.now += MP.ANSWER_WAIT + 0.1  # no answer came in time: a later duplicate is held again
    acts, _ = p.out(p.g_ack())
    assert isinstance(acts[0], Drop), acts


def test_a_pure_server_ack_on_subflow_1_reaches_the_guest_at_its_rcv_nxt():
    """The guest's stream went on with a join's bytes: subflow 1's offset (its last
    mapping's) placed the server's pure ACKs on subflow 1 before the guest's rcv_nxt, and
    Linux drops such a segment unread, its ack too (tcp_sequence). An idle inbound flow's
    keepalive answers were lost so, and the guest reset the connection (the keepalive
    kernel test). They go at the guest's rcv_nxt, as our own ACKs."""
    p, j, _, _ = _acked()
    for _ in range(3):
        p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    p.out(p.g_ack())
    p.out(p.g_data(b"u" * 100))
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),)))  # acks the 100
    assert got is not None and parse_packet(got).seq == p.g_rcv


def test_a_guest_probe_with_a_data_ack_not_carried_goes_as_a_probe_and_the_clock_carries_it():
    """A DATA_ACK held short (the edge the server holds, _sf1_dack_cap) is not carried by an
    idle flow's next ACK either: a probe that waited for it went as an ordinary ACK, held as
    a duplicate or unanswered, every time (the keepalive kernel test: the guest reset the
    connection). It goes as a probe, and the clock carries the DATA_ACK."""
    p, j, _, _ = _acked()
    p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    p.out(p.g_ack())  # a subflow-1 duplicate moving the DATA_ACK: held
    p.mp.dack_out = p.flow.rcv_rel - 50  # (as when capped at the edge)
    p.mp.dack_due = 0.0
    acts, sent = p.out(p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, ACK))
    assert isinstance(acts[0], Rewrite) and p.count("GuestProbeFwd") == 1, acts
    assert p.mp.dack_due and p.conv.next_deadline() <= p.mp.dack_due


def _sf1_data(p, n: int):
    """n bytes of the server's on subflow 1, mapped at the next data-level byte."""
    r = (p.s_nxt - p.s_isn) & M32
    dss = p.s_dss_ack(data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True, subflow_seq=r, data_len=n)
    acts, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | 0x08, (dss,), b"S" * n))
    p.s_nxt = (p.s_nxt + n) & M32
    p.s_drel += n
    return acts, got


def test_a_window_update_goes_after_what_the_guest_took_a_window_from():
    """The guest holds subflow-1 bytes it has not acked yet (a delayed ACK): a pure window
    update of the server's at the guest's last ack lay below the segments it took a window
    from, and Linux ignores a window-only update there (tcp_may_update_window; review of
    0af049f). It goes at the end of what went to the guest."""
    p, j, _, _ = _acked()
    for _ in range(3):
        _sf1_data(p, 100)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),), window=900))
    assert got is not None
    assert (parse_packet(got).seq - p.s_isn) & M32 == (p.flow.rcv_rel + 300) & M32


def test_a_bare_data_fin_on_subflow_1_after_a_joins_bytes_reaches_the_guest_as_its_fin():
    """The guest's stream went on with a join's bytes; a DATA_FIN alone on subflow 1 stayed at
    subflow 1's stale offset, before the guest's rcv_nxt, without the FIN flag (deferred):
    dropped by the guest, again on every resend (review of 0af049f). It goes at its place,
    with the FIN."""
    p, j, _, _ = _acked()
    for _ in range(3):
        p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    p.out(p.g_ack())
    dss = p.s_dss_ack(data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True, subflow_seq=0, data_len=1,
                      data_fin=True)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,)))
    pkt = parse_packet(got)
    assert pkt.flags & 0x01 and pkt.seq == p.g_rcv and p.count("DataFinDeferred") == 0


def test_a_fastclose_reaches_a_guest_holding_unacked_join_bytes_at_its_rcv_nxt():
    """The guest holds a join's bytes it has not acked yet: its rcv_nxt is past its last
    ack, and Linux answers a RST anywhere but at rcv_nxt with a challenge ACK (RFC 5961), so
    a RST only at the last ack left the guest's connection open. A second RST goes at the end
    of what went to it (review of 0af049f), as on a join (_fastclosed)."""
    from middlebox.wire import MpFastclose

    p, j, _, _ = _acked()
    p.j_in(p.j_data(j, b"x" * 100))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    p.out(p.g_ack())
    p.j_in(p.j_data(j, b"y" * 100))  # forwarded, not acked yet
    acked, end = (p.s_isn + p.flow.rcv_rel) & M32, (p.s_isn + p.mp.fwd_end) & M32
    assert acked != end
    acts, _ = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (MpFastclose(p.flow.local_key),)))
    rsts = [parse_packet(a.data) for a in acts if isinstance(a, (Rewrite, Inject))
            and parse_packet(a.data).dst == p.g_bytes and parse_packet(a.data).flags & 0x04]
    assert sorted(r.seq for r in rsts) == sorted([acked, end]), [r.seq for r in rsts]
