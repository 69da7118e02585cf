"""Segment acceptability on extra subflows (RFC 9293 §3.10.7.4, RFC 5961 §5.2): a segment on
a join changes what we know only when its seq lies within the largest window the guest's scale
can express of rcv_nxt (ahead, or back: a reordered ACK, a retransmission whose ACK was lost)
and its ack within the server's largest window below snd_una, up to snd_nxt. Before, anything
within 2^30 of rcv_nxt and snd_una passed: a blind forger knowing the 4-tuple got in with 1
segment in 8."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from tests.unit.test_subflow_table import ACK, M32, PSH, MPair
from middlebox.wire import Dss, parse_packet


def _with_bytes_on_the_join(n: int = 4):
    """A multipath pair whose join carried n guest segments the server acked: (pair, join,
    path)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    path = p.mp.paths[1]
    for _ in range(n):
        p.data_on(1, size=1000)
        j.s_rcv = path.snd_nxt
        p.j_in(p.j_ack(j))  # the server acks all of it
    assert path.snd_una == path.snd_nxt
    return p, j, path


def _state(p, path):
    return (path.snd_una, path.rcv_nxt, path.progress_at, p.mp.data_ack, p.mp.wnd_edge, path.snd_wnd)


def test_a_segment_far_beyond_the_window_changes_nothing():
    """Seq 2^29 ahead (accepted before): its DATA_ACK acking everything and a huge window move
    nothing, its payload reaches no guest, and it is counted."""
    p, j, path = _with_bytes_on_the_join()
    p.data_on(1, size=1000)  # bytes in flight on the join: an ack could move them
    before = _state(p, path)
    whole = (p.idsn_c + p.mp.snd_nxt) & M32
    forged = [
        p.j_ack(j, seq=j.s_nxt + (1 << 29), ack=path.snd_nxt, mptcp=(Dss(data_ack=whole),)),
        p.j_ack(j, seq=j.s_nxt - (1 << 29), ack=path.snd_nxt, mptcp=(Dss(data_ack=whole),)),
        p.j_packet(j, j.s_isn + j.s_nxt + (1 << 28), j.c_isn + path.snd_nxt, ACK | PSH,
                   (Dss(data_ack=whole, data_seq=(p.s_idsn + p.s_drel) & ((1 << 64) - 1), dsn64=True,
                        subflow_seq=(j.s_nxt + (1 << 28)) & M32, data_len=100),), b"x" * 100),
    ]
    for i, buf in enumerate(forged):
        acts = p.j_in(buf)
        # RFC 9293 §3.10.7.4: answered with an ACK (at rcv_nxt, nothing acked that was not),
        # at most one per CHALLENGE_GAP on the subflow (RFC 5961 §7)
        assert p.classify(acts) == (["drop", "ack@1"] if i == 0 else ["drop"]), p.classify(acts)
        assert _state(p, path) == before
    assert p.count("JoinSeqUnacceptable") == len(forged) and p.count("JoinChallengeAck") == 1
    p.now += MP.CHALLENGE_GAP
    acts = p.j_in(forged[0])
    assert p.classify(acts) == ["drop", "ack@1"] and _state(p, path) == before
    pkt = parse_packet(acts[1].data)
    assert pkt.ack == (j.s_isn + path.rcv_nxt) & M32 and pkt.seq == (j.c_isn + path.snd_nxt) & M32
    assert not path.ooo


def test_an_ack_older_than_the_servers_window_changes_nothing():
    """RFC 5961 §5.2: an ack below snd_una - MAX.SND.WND is not acceptable; one just below
    snd_una is an old duplicate and still is."""
    p, j, path = _with_bytes_on_the_join(80)
    path.rwscale = 0  # a server without window scaling: its largest window is 64 KiB
    p.data_on(1, size=1000)
    before = _state(p, path)
    old = path.snd_una - (0xFFFF << path.rwscale) - 1
    assert old > 0
    acts = p.j_in(p.j_ack(j, ack=old, mptcp=(Dss(data_ack=(p.idsn_c + p.mp.snd_nxt) & M32),)))
    assert p.classify(acts) == ["drop", "ack@1"] and _state(p, path) == before
    assert p.count("JoinSeqUnacceptable") == 1
    p.j_in(p.j_ack(j, ack=path.snd_una - 1000))
    assert p.count("JoinSeqUnacceptable") == 1


def test_linux_zero_window_probe_and_a_reordered_ack_are_still_taken():
    """Linux probes a closed window with one old byte at rcv_nxt - 1 (LESSONS: the download
    corruption): it is answered with an ACK, not counted as forged. A pure ACK overtaken by
    data (its seq below rcv_nxt) still moves the ack."""
    p, j, path = _with_bytes_on_the_join()
    buf = p.j_data(j, b"a" * 500)
    p.j_in(buf)
    rcv = path.rcv_nxt
    probe = p.j_packet(j, j.s_isn + j.s_nxt - 1, j.c_isn + path.snd_nxt, ACK, (p.dack(),), b"a")
    acts = p.j_in(probe)
    assert "ack@1" in p.classify(acts), p.classify(acts)
    assert path.rcv_nxt == rcv and p.count("JoinSeqUnacceptable") == 0
    p.data_on(1, size=1000)
    una = path.snd_una
    late = p.j_ack(j, seq=j.s_nxt - 500, ack=path.snd_nxt)  # sent before the 500 bytes above
    p.j_in(late)
    assert path.snd_una > una and p.count("JoinSeqUnacceptable") == 0


def test_a_shrunken_guest_window_does_not_make_the_servers_segments_forged():
    """The window we offer on the join is the guest's; when the guest shrinks it, data the
    server sent inside the larger window it saw before is still acceptable."""
    p, j, path = _with_bytes_on_the_join()
    p.flow.guest_window = 10
    ahead = 60000
    dsn = (p.s_idsn + p.s_drel + ahead) & ((1 << 64) - 1)
    buf = p.j_packet(j, j.s_isn + j.s_nxt + ahead, j.c_isn + path.snd_nxt, ACK,
                     (Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=dsn, dsn64=True,
                          subflow_seq=(j.s_nxt + ahead) & M32, data_len=1000),), b"b" * 1000)
    p.j_in(buf)
    assert p.count("JoinSeqUnacceptable") == 0
    assert path.ooo == [[path.rcv_nxt + ahead, path.rcv_nxt + ahead + 1000]]


def test_a_rst_in_the_window_but_not_at_rcv_nxt_is_challenged_not_taken():
    """RFC 5961 §3.2: a RST whose seq lies in the window but is not rcv_nxt is answered with
    an ACK (a real peer then sends the exact RST); the subflow lives on. The exact one is
    taken."""
    from middlebox.core.multipath import SS

    p, j, path = _with_bytes_on_the_join()
    RST = 0x04
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt + 1000, 0, RST))
    assert p.classify(acts) == ["drop", "ack@1"], p.classify(acts)
    assert path.state is SS.ESTABLISHED and p.count("JoinChallengeAck") == 1
    pkt = parse_packet(acts[1].data)
    assert pkt.ack == (j.s_isn + path.rcv_nxt) & M32
    # far outside the window: dropped, not answered
    p.now += MP.CHALLENGE_GAP
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt + (1 << 30), 0, RST))
    assert p.classify(acts) == ["drop"] and path.state is SS.ESTABLISHED
    # the exact RST closes the subflow
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert path.state is not SS.ESTABLISHED


def test_a_tcp_window_probe_on_a_join_is_answered_with_the_guests_window():
    """A subflow whose window the server holds closed probes it with a zero-length segment at
    rcv_nxt - 1 (tcp_send_probe0; keepalives look the same). It was consumed unanswered
    (DupAckSuppressed): a lost window update was never repeated, and the slow-reader loss
    test stalled for a minute (a throwaway log of it). Now it is answered with an ACK (RFC
    9293 §3.10.7.4) carrying the guest's window, rate-limited as challenge ACKs."""
    p, j, path = _with_bytes_on_the_join()
    p.flow.guest_window = 321
    probe = p.j_packet(j, j.s_isn + j.s_nxt - 1, j.c_isn + path.snd_nxt, ACK, (p.dack(),))
    acts = p.j_in(probe)
    assert p.classify(acts) == ["drop", "ack@1"], p.classify(acts)
    pkt = parse_packet(acts[1].data)
    assert pkt.window == 321 and pkt.ack == (j.s_isn + path.rcv_nxt) & M32
    assert p.count("JoinProbeAnswered") == 1 and p.count("JoinSeqUnacceptable") == 0
    assert p.classify(p.j_in(probe)) == ["drop"]  # within CHALLENGE_GAP: not again
    p.now += MP.CHALLENGE_GAP
    assert "ack@1" in p.classify(p.j_in(probe)) and p.count("JoinProbeAnswered") == 2
    p.now += MP.CHALLENGE_GAP
    assert "ack@1" not in p.classify(p.j_in(p.j_ack(j)))  # an ordinary ACK at rcv_nxt: no answer
