"""`--dsack-undo`: a guest resend that an extra subflow carried is named to the guest as a
D-SACK (RFC 2883) once the server's DATA_ACK passes it, so that a Linux guest undoes the
window cut that one path's loss made (tcp_check_dsack counts a D-SACK of a resent segment;
with every resend of the recovery so named, tcp_try_undo_dsack restores cwnd and ssthresh).
A resend on subflow 1 gets none: its loss is the guest's own path's, and its cut stands."""

from __future__ import annotations

import pytest

from middlebox.core import Direction, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.flow import M64
from middlebox.wire import dss_checksum, parse_options, parse_packet

from tests.unit.test_core_harness import ACK, PSH
from tests.unit.test_core_placement import _map_seg, _mapping_pieces, _stream
from tests.unit.test_subflow_table import M32, MPair, mp_config


def _opts(buf: bytes):
    pkt = parse_packet(buf)
    return pkt, parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)


def _resent_on_join(undo=True, upid=1):
    """A guest segment placed on the join (upid 1) or subflow 1 (upid 0), then resent by the
    guest: (pair, its guest seq)."""
    p = MPair(1, config=mp_config(1, dsack_undo=undo))
    p.go_multipath()
    p.join_up(1)
    if upid:
        p.data_on(1, size=1000)
    else:
        for _ in range(40):
            ((labels, acts),) = p.g_send(1, 1000)
            if "data@1" not in labels and "drop" not in labels:
                break
        else:
            raise AssertionError("nothing went on subflow 1")
    gseq = (p.g_nxt - 1000) & M32
    p.now += 0.01
    acts = p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert acts and p.count("GuestRetransMapped") >= 1
    return p, gseq


def _server_has_all(p):
    """The server data-acks everything sent, on the join (its ACK also acks the subflow)."""
    j = p.joins[1]
    p.c_dack = p.mp.snd_nxt
    return p.j_in(p.j_ack(j, ack=p.path(1).snd_nxt))


def _dsack_of(acts, gseq):
    """The D-SACK blocks naming [gseq, gseq + 1000) in the guest-bound segments of acts."""
    found = []
    for a in acts:
        buf = getattr(a, "data", None)
        if not buf:
            continue
        pkt, o = _opts(buf)
        if pkt.dport != 0 and o.sack and o.sack[0] == (gseq, (gseq + 1000) & M32):
            assert (pkt.ack - gseq) & M32 >= 1000, "a D-SACK only below the ack it rides with"
            found.append(o.sack[0])
    return found


def test_a_resend_on_a_join_is_named_once_when_the_data_ack_passes_it():
    p, gseq = _resent_on_join()
    assert p.mp.undo, "the resend waits for its D-SACK"
    # not before the server has the bytes: an ACK to the guest now carries none
    _, o = _opts(MP._guest_ack(p.flow, p.mp))
    assert not o.sack or o.sack[0] != (gseq, (gseq + 1000) & M32)
    acts = _server_has_all(p)
    got = _dsack_of(acts, gseq)
    if not got:  # (no ACK went to the guest with the join's ACK: the next one carries it)
        got = _dsack_of([type("A", (), {"data": MP._guest_ack(p.flow, p.mp)})()], gseq)
    assert got == [(gseq, (gseq + 1000) & M32)]
    assert not p.mp.undo
    # named once: the next ACK has no D-SACK
    _, o = _opts(MP._guest_ack(p.flow, p.mp))
    assert not o.sack


def test_off_by_default_no_dsack():
    p, gseq = _resent_on_join(undo=False)
    assert not p.mp.undo
    acts = _server_has_all(p)
    assert not _dsack_of(acts, gseq)
    _, o = _opts(MP._guest_ack(p.flow, p.mp))
    assert not o.sack


def test_a_resend_on_subflow_1_keeps_its_cut():
    p, gseq = _resent_on_join(upid=0)
    assert not p.mp.undo


def test_the_waiting_resends_are_bounded():
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    p.join_up(1)
    for i in range(3 * MP.UNDO_MAX):
        MP._undo_add(p.mp, 10000 * i + 1, 10000 * i + 1001)
    assert len(p.mp.undo) == MP.UNDO_MAX
    MP._undo_add(p.mp, 500, 1500)  # overlapping the first: merged, not added
    assert [1, 1500] in p.mp.undo and len(p.mp.undo) == MP.UNDO_MAX


def test_a_join_gets_its_own_window_and_a_resend_within_it_cuts_it_once_per_round():
    p, gseq = _resent_on_join()
    j = p.path(1)
    assert j.inwin is not None and j.cwnd
    assert p.count("JoinCwndCut") == 1 and j.cwnd == 2 * j.smss  # (one segment in flight)
    assert j.recover == j.snd_nxt
    cut = j.cwnd
    # the same bytes resent again (the guest's next recovery): still a D-SACK, no second cut
    p.now += 0.01
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("JoinCwndCut") == 1 and j.cwnd == cut
    assert p.mp.undo


def test_a_resend_of_bytes_sent_beyond_the_joins_window_keeps_the_guests_cut():
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    p.join_up(1)
    j = p.path(1)
    p.data_on(1, size=1000)  # (within its window)
    j.cwnd = 1  # full: what it is given now is sent beyond its window
    p.data_on(1, size=1000)
    gseq = (p.g_nxt - 1000) & M32
    assert not j.inwin or not MP._inwin_has(j, j.snd_nxt - 1000, j.snd_nxt)
    p.now += 0.01
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("UndoBeyondWindow") == 1 and not p.mp.undo
    assert p.count("JoinCwndCut") == 0
    _server_has_all(p)
    _, o = _opts(MP._guest_ack(p.flow, p.mp))
    assert not o.sack


def test_the_ranges_sent_within_the_window_are_bounded_and_forget_what_was_acked():
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    p.join_up(1)
    j = p.path(1)
    base = j.snd_nxt
    for i in range(3 * MP.INWIN_MAX):
        MP._inwin_add(j, base + 2000 * i, base + 2000 * i + 1000)
    assert len(j.inwin) == MP.INWIN_MAX
    MP._inwin_add(j, j.inwin[-1][1], j.inwin[-1][1] + 500)  # contiguous: one range grows
    assert len(j.inwin) == MP.INWIN_MAX
    j.snd_una = j.inwin[3][1]
    MP._inwin_add(j, base + 10 ** 6, base + 10 ** 6 + 10)
    assert j.inwin[0][1] > j.snd_una


def test_dsack_undo_and_repair_are_not_taken_together():
    from middlebox.core.config import Config
    with pytest.raises(ValueError):
        Config(dsack_undo=True, repair_bytes=1 << 18)
    assert Config(dsack_undo=True).dsack_undo


def test_a_dsack_rides_on_one_part_only_of_a_cut_server_segment():
    """Review of --dsack-undo: every copy of a D-SACK counts once more towards a Linux
    guest's undo (tcp_check_dsack on bytes below its snd_una): the parts of a server segment
    cut for the guest (DSS checksums, a resend over bytes that came before) carry it once."""
    p = MPair(1, config=mp_config(1, dsack_undo=True), server_checksum=True)
    p.go_multipath()
    S = _stream(900)
    p.inn(_mapping_pieces(p, S, 1, 1, (300, 300, 300))[1])
    p.mp.undo.append([1, 4])  # a resend the DATA_ACK has passed, waiting to be named
    resend = _map_seg(p, 1, 1, S[:750], m_sub=1, m_dsn=1, m_payload=S[:900],
                      csum=dss_checksum((p.s_idsn + 1) & M64, 1, 900, S[:900]), flags=ACK | PSH)
    actions, got = p.inn(resend)
    assert p.count("CsumResendCut") == 1
    segs = [got] + [a.data for a in actions[1:] if isinstance(a, Inject) and parse_packet(a.data).dport == p.gport]
    d = ((p.flow.guest_isn + 1) & M32, (p.flow.guest_isn + 4) & M32)
    n = sum(1 for s in segs if parse_options(s, parse_packet(s).ip_hlen + 20, parse_packet(s).payload_off).sack[:1] == (d,))
    assert n == 1, f"the D-SACK reached the guest {n} times"


def test_a_resend_split_between_subflow_1_and_a_join_is_named_whole_or_not_at_all():
    """Review of --dsack-undo: a D-SACK of the join's part of a resend that subflow 1 carried
    a part of counted as a whole segment, and the guest undid a cut for subflow 1's loss."""
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    p.join_up(1)
    for _ in range(400):
        p.g_send(1, 500)
        r = p.mp.runs
        if len(r) >= 2 and r[-1][2] == p.path(1).index and r[-2][2] == 0 and r[-1][1] - r[-1][0] == 500:
            break
    else:
        raise AssertionError("no subflow-1 segment followed by a join segment")
    s = (p.g_nxt - 1000) & M32  # one resend of both (e.g. tcp_retrans_try_collapse)
    p.now += 0.01
    p.conv.handle(p.g_data(b"R" * 1000, seq=s), Direction.OUT, p.now)
    rel = (s - p.flow.guest_isn) & M32
    assert not p.mp.undo or p.mp.undo == [[rel, rel + 1000]], p.mp.undo


def test_overlapping_waiting_resends_merge_into_one():
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    MP._undo_add(p.mp, 0, 10)
    MP._undo_add(p.mp, 20, 30)
    MP._undo_add(p.mp, 5, 25)
    assert p.mp.undo == [[0, 30]]


def test_no_dsack_on_a_rst_to_the_guest():
    p, gseq = _resent_on_join()
    _server_has_all(p)
    p.mp.undo.append([1, 2])  # (one more waiting, the DATA_ACK past it)
    for a in MP._guest_rsts(p.flow, p.mp):
        _, o = _opts(a.data)
        assert not o.sack
    assert p.mp.undo


def _join_flow():
    p = MPair(1, config=mp_config(1, dsack_undo=True))
    p.go_multipath()
    p.join_up(1)
    return p


def _resend(p, seq, n):
    p.now += 0.01
    p.conv.handle(p.g_data(b"R" * n, seq=seq), Direction.OUT, p.now)


def test_bytes_lost_before_the_middlebox_are_not_named_as_a_joins_loss():
    """Second review: a guest segment lost before us, the next one placed on the join with
    the lost one's DSNs reserved before it (GapReserved): its resend was taken as a loss
    within the join's window, and the guest undid the cut our side's loss called for."""
    p = _join_flow()
    p.data_on(1, size=1000)
    for _ in range(200):
        b = p.g_nxt
        p.g_nxt = (p.g_nxt + 1000) & M32  # B: dropped before the middlebox
        ((labels, _),) = p.g_send(1, 1000)  # C, on the join: B's DSNs reserved there
        if "data@1" in labels:
            break
    assert p.count("GapReserved")
    _resend(p, b, 1000)
    assert not p.mp.undo and not p.count("JoinCwndCut"), p.mp.undo


def test_a_resend_with_bytes_never_seen_is_not_named():
    """Second review: a resend of join bytes and of bytes we never saw, named in part,
    counted as a whole segment."""
    p = _join_flow()
    p.data_on(1, size=500)
    a = (p.g_nxt - 500) & M32
    p.g_nxt = (p.g_nxt + 500) & M32  # never reached us
    _resend(p, a, 1000)
    assert not p.mp.undo, p.mp.undo


@pytest.mark.parametrize("n", [8000, 1448])
def test_a_long_server_segment_neither_loses_nor_carries_the_dsack(n):
    """Second review: taken off the queue, then trimmed away for the guest's MSS (or copied
    onto every segment of a super-packet), the D-SACK was lost (or counted many times)."""
    p, _ = _resent_on_join()
    _server_has_all(p)
    p.mp.undo = [[p.mp.data_ack - 1000, p.mp.data_ack]]
    acts, _ = p.inn(p.s_data_pkt(b"D" * n))
    _, o = _opts(acts[0].data)
    assert not o.sack and p.mp.undo


def test_no_guest_mss_a_super_packet_carries_no_dsack():
    p, _ = _resent_on_join()
    _server_has_all(p)
    p.mp.undo = [[p.mp.data_ack - 1000, p.mp.data_ack]]
    p.flow.guest_mss = 0
    acts, _ = p.inn(p.s_data_pkt(b"D" * 8000))
    _, o = _opts(acts[0].data)
    assert not o.sack and p.mp.undo
    # the next pure ACK to the guest carries it
    _, o = _opts(MP._guest_ack(p.flow, p.mp))
    assert o.sack and not p.mp.undo


def test_a_later_resend_that_is_not_the_joins_cancels_the_waiting_dsack():
    """Third review: named once within the join's window, then the join died and the guest's
    next resend of the same bytes went on subflow 1: its cut stands."""
    from middlebox.core.multipath import SI, SS
    p, gseq = _resent_on_join()
    assert p.mp.undo
    j = p.path(1)
    MP._event(p.conv, p.flow, j, SI.LINK_DOWN, p.now)
    assert j.state is SS.CLOSED
    p.now += 0.3
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("ReinjectTX") >= 1
    assert not p.mp.undo, p.mp.undo


def test_a_subflow_1_piece_the_server_has_is_neutral():
    """Third review: a piece the server already has is truly a duplicate, on subflow 1 too."""
    p = _join_flow()
    for _ in range(400):
        p.g_send(1, 500)
        r = p.mp.runs
        if len(r) >= 2 and r[-1][2] == 1 and r[-2][2] == 0 and r[-1][1] - r[-1][0] == 500:
            break
    else:
        raise AssertionError("no subflow-1 segment followed by a join segment")
    s = (p.g_nxt - 1000) & M32
    rel = (s - p.flow.guest_isn) & M32
    p.mp.data_ack = rel + 500
    _resend(p, s, 1000)
    assert p.mp.undo == [[rel, rel + 1000]], p.mp.undo


def test_after_the_guests_rto_nothing_is_named_until_it_is_past_what_it_had_sent():
    """A stall (bench, three 50 Mbit/s paths, clean): the guest's RTO resend of the head was
    named, and in its loss state the D-SACK undid the RTO and unmarked every segment the RTO
    had marked lost; each of those then waited for the next backed-off RTO. A resend of the
    head after GUEST_RTO_QUIET without a guest segment is the RTO's: it is not named, the
    waiting ones are forgotten, and nothing is named until the DATA_ACK passes what the guest
    had sent."""
    p = _join_flow()
    p.data_on(1, size=1000)
    gseq = (p.g_nxt - 1000) & M32
    p.g_send(3, 1000)  # (more after it, on any subflow)
    rel = (gseq - p.flow.guest_isn) & M32
    p.mp.data_ack = rel  # (everything before it acked: it is the head)
    p.mp.undo = [[1, 2]]  # one waiting
    p.now += MP.GUEST_RTO_QUIET + 0.05
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("UndoAfterRto") == 1
    assert not p.mp.undo and p.mp.undo_hold == p.mp.snd_nxt
    # its next resend (the RTO's second segment) is not named either
    p.now += 0.001
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert not p.mp.undo


def test_a_quick_resend_of_the_head_is_still_named():
    p, gseq = _resent_on_join()  # (10 ms after the last segment: fast recovery)
    assert p.mp.undo and p.count("UndoAfterRto") == 0


def test_no_rto_bookkeeping_without_the_option():
    p, gseq = _resent_on_join(undo=False)
    p.now += 1.0
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("UndoAfterRto") == 0 and p.mp.undo_hold == 0
    assert p.mp.g_at == 0.0  # (its clock is not even kept: stop 45's re-read)


def test_a_tail_loss_probe_of_new_bytes_before_the_rto_does_not_hide_it():
    """Review of 4884d82: Linux's RTO after a tail loss probe fires the RTO's time after the
    head was sent, so the probe (new bytes) may come a jiffy before it: the guest was not
    quiet, yet the DATA_ACK had not moved for that long."""
    p = _join_flow()
    p.data_on(1, size=1000)
    gseq = (p.g_nxt - 1000) & M32
    p.mp.data_ack = (gseq - p.flow.guest_isn) & M32
    p.mp.da_at = p.now
    p.now += 0.3
    p.g_send(1, 1000)  # the probe: new bytes
    p.now += 0.03  # the RTO 30 ms later
    p.conv.handle(p.g_data(b"R" * 1000, seq=gseq), Direction.OUT, p.now)
    assert p.count("UndoAfterRto") == 1 and not p.mp.undo and p.mp.undo_hold
