"""The DATA_ACK caps must not keep the guest's DATA_ACK from the server (liveness), and the fill
of subflow 1's acked hole must not change what the guest's next ACKs are judged by. From the
review of 162e071 (stop 41), whose larger cap (the largest of the last three windows taken)
held an idle flow's last DATA_ACK until the server's own MPTCP-level timer: reverted."""

from __future__ import annotations

from middlebox.core import Inject, Rewrite
from middlebox.core import MULTIPATH as MP
from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, wire_check


def _dacks_to_server(p, actions):
    """DATA_ACKs (relative to the server's IDSN) of every packet in `actions` to the server."""
    out = []
    for a in actions or []:
        if not isinstance(a, (Inject, Rewrite)):
            continue
        pkt, _, mp = wire_check(a.data, isinstance(a, Inject))
        if pkt.dst == p.g_bytes:
            continue
        for o in mp:
            if type(o).__name__ == "Dss" and o.data_ack is not None:
                out.append((o.data_ack - p.flow.remote_idsn) & M32)
    return out


def test_idle_join_download_the_guests_last_data_ack_reaches_the_server():
    """A slow reader's window shrinks once (64256 -> 63360) and then stays: the server's last
    segment on the join is acked on arrival (taken: wnd_held 63360, wnd_h1 64256), the guest
    then acks it with the same window. Linux holds 63232 (our ACKs all arrived): the whole
    DATA_ACK is safe (edge = 2001 + 63360 = the guest's). _held_bound caps it at 2001 - 1024
    (< 1001, so nothing new) and nothing ever carries the rest: the server sees DATA_ACK 1001
    for good (until its own MPTCP-level RTO resends the segment)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j, flow = p.joins[1], p.flow
    seen = [0]
    log = []

    def feed(acts):
        for d in _dacks_to_server(p, acts):
            log.append(d)
            if d < 1 << 31:
                seen[0] = max(seen[0], d)

    feed(p.j_in(p.j_data(j, b"a" * 1000)))  # arrival ACK, window 502 (taken)
    p.g_rcv = (p.s_isn + p.s_drel) & M32  # guest acks A, reader behind: window 494
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=495))[0])
    feed(p.j_in(p.j_data(j, b"b" * 1000)))  # arrival ACK, window 494 (taken)
    p.g_rcv = (p.s_isn + p.s_drel) & M32  # guest acks B, same window 494 (reader keeps pace)
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=495))[0])
    for _ in range(500):  # 5 s idle
        feed(p.tick(0.01))
    assert flow.rcv_rel == 2001
    assert seen[0] == 2001, f"the server's DATA_ACK stays at {seen[0]}, the guest acked 2001; sent {log}"


def _sf1_fill_setup():
    """Guest bytes on subflow 1 that the server data-acks (on the join) but never acks on
    subflow 1: a hole tick() fills (_fill_acked_hole, idx 0)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p0 = p.mp.paths[0]
    for _ in range(60):
        ((labels, _),) = p.g_send(1, 1000)
        if labels[0] == "rewrite" and p0.snd_nxt - p0.snd_una >= 2000:
            break
    assert p0.snd_nxt > p0.snd_una
    p.c_dack = (p.g_nxt - p.g_isn) & M32  # the server has all at the data level
    j.s_rcv = p.path(1).snd_nxt
    p.j_in(p.j_ack(j))
    assert p.mp.data_ack >= p.c_dack - 1
    return p, p0


def test_a_fill_on_subflow_1_does_not_eat_the_answer_to_the_servers_probe():
    """The server's keepalive / window probe on subflow 1 went to the guest (sf1_old_in); the
    fill of subflow 1's acked hole goes out (tick) before the guest's answer comes back.
    Through _sf1_dack -> _sf1_out (162e071) the fill zeroed mp.sf1_answer: the answer (same
    ack, same window) was held as a duplicate (Sf1DupAckHeld) and the server never got it
    (the WinProbe stall _sf1_dup's docstring describes)."""
    p, p0 = _sf1_fill_setup()
    fills = p.count("AckedHoleFilled")
    for _ in range(200):
        MP.sf1_old_in(p.mp, p.now + 0.005)  # (the server's probe, just before this tick)
        p.tick(0.005)
        if p.count("AckedHoleFilled") > fills:
            break
    assert p.count("AckedHoleFilled") > fills, "no fill on subflow 1"
    acts, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=p.flow.guest_window))  # the answer
    assert sent is not None, "the guest's answer to the server's probe was held as a duplicate"


def test_a_fill_on_subflow_1_does_not_lower_the_window_dup_acks_are_judged_by():
    """The guest's pure ACKs with the same subflow-1 ack and a smaller window are held
    (_sf1_dup: the server keeps the larger window it took, so they would be dupacks there).
    Through _sf1_out (162e071) the fill recorded flow.guest_window (the smaller one, never
    taken by the server: old seq) as sf1_win_out; the next such ACK, with a window between
    the two, was no longer held and reached the server as a subflow-level duplicate ACK."""
    p, p0 = _sf1_fill_setup()
    w0 = p.flow.guest_window + 10
    acts, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=w0))  # a window update: taken
    assert sent is not None and p0.wnd_seq == p0.snd_nxt and p0.wnd_held == w0 << p.flow.guest_wscale
    acts, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=w0 - 20))
    assert sent is None and p.mp.sf1_win_out == w0  # held: a duplicate
    fills = p.count("AckedHoleFilled")
    for _ in range(200):
        p.tick(0.005)
        if p.count("AckedHoleFilled") > fills:
            break
    assert p.count("AckedHoleFilled") > fills, "no fill on subflow 1"
    acts, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=w0 - 10))
    assert sent is None, "a duplicate ACK (window below the one the server holds) went to the server"
