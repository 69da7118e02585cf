"""The DATA_ACK on the guest's data sent on a join is capped as our ACKs' is (JoinDataAckHeld):
a segment whose window the server does not take must not move the connection's right edge
(DATA_ACK + the window the server holds for that subflow, Linux's ack_update_msk) beyond
the guest's. Found by the review of stop 41: a slow reader acks bytes and offers a smaller
window; the next upload segment on a join, at the seq and ack of our last ACK there, carried
the new DATA_ACK, and the server's edge went ~4 KB past the guest's."""

from __future__ import annotations

from middlebox.core import Inject
from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, wire_check


def _joined(uplinks: int):
    """A flow gone multipath with join 1 up: (pair, its Join, its Path, the flow, wscale)."""
    p = MPair(uplinks)
    p.go_multipath()
    p.join_up(1)
    return p, p.joins[1], p.path(1), p.flow, p.flow.guest_wscale


def test_a_data_segment_on_a_join_keeps_the_servers_edge_within_the_guests():
    p, j, path, flow, ws = _joined(2)
    for i in range(4):  # the server's bytes on the join: our ACKs there set its window
        p.j_in(p.j_data(j, bytes([i]) * 1000))
    held = path.wnd_held
    edge = flow.rcv_rel + (flow.guest_window << ws)
    # a slow reader: it acks the 4000 bytes and keeps its right edge where it was
    p.g_rcv = (p.s_isn + 1 + 4000) & M32
    w = -(-(edge - (flow.rcv_rel + 4000)) >> ws)  # (rounded up: never a shrink)
    p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=w))
    g_edge = flow.rcv_rel + (w << ws)
    assert g_edge >= edge
    before = p.count("JoinDataAckHeld")
    for _ in range(200):  # guest bytes until one goes on the join
        payload = b"u" * 1000
        acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x18, payload, window=w))
        p.g_nxt = (p.g_nxt + len(payload)) & M32
        for a in acts[1:]:
            pkt, _, mp = wire_check(a.data, True)
            if (pkt.dst, pkt.dport, pkt.sport) != (j.server, j.sport, j.lport) or not pkt.payload_len:
                continue
            (dss,) = [o for o in mp if type(o).__name__ == "Dss"]
            dack = (dss.data_ack - flow.remote_idsn) & M32
            # the server does not take this segment's window (same seq and ack as our last
            # ACK there, a smaller window): it keeps `held`
            assert (pkt.seq - j.c_isn) & M32 == 1 and pkt.window == w
            assert dack + held <= g_edge, (dack, held, g_edge)
            assert p.count("JoinDataAckHeld") > before
            return
    raise AssertionError("no guest byte went on join 1")


def test_the_fill_of_an_acked_hole_keeps_the_servers_edge_within_the_guests():
    """Review of stop 41: the one segment on a join that still carried the guest's whole DATA_ACK
    whatever window the server keeps there was the fill of an acked hole (_fill_acked_hole): at
    the hole's old seq, with the join's rcv_nxt, the guest's current window. Linux takes no
    window from it (tcp_may_update_window: seq before snd_wl1, nothing new acked) but reads its
    DATA_ACK (ack_update_msk), so its edge is that DATA_ACK plus the window it held from our
    last ACK there: beyond the guest's when a slow reader's window shrank meanwhile."""
    p, j, path, flow, ws = _joined(1)
    p.data_on(1, size=1000)  # guest bytes on the join; their subflow ack never comes
    # the server has them at the data level (they came again on subflow 1, say): its data on
    # the join data-acks them, our ACK there gives it the guest's whole window
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p.j_in(p.j_data(j, b"d" * 2000))
    held = path.wnd_held
    assert held == flow.guest_window << ws
    edge = flow.rcv_rel + held
    # a slow reader acks the 2000 bytes, its window smaller by as much: the edge stays
    w = -(-(edge - (flow.rcv_rel + 2000)) >> ws)
    p.g_rcv = (p.s_isn + 1 + 2000) & M32
    p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=w))
    g_edge = flow.rcv_rel + (w << ws)
    assert edge <= g_edge < edge + (1 << ws)
    fills = []
    for _ in range(60):
        p.now += 0.05
        for a in p.conv.tick(p.now) or []:
            if not isinstance(a, Inject):
                continue
            pkt, _, mp = wire_check(a.data, True)
            if (pkt.dst, pkt.dport, pkt.sport) != (j.server, j.sport, j.lport):
                continue
            (dss,) = [o for o in mp if type(o).__name__ == "Dss"]
            seq = (pkt.seq - j.c_isn) & M32
            dack = (dss.data_ack - flow.remote_idsn) & M32
            if pkt.payload_len:
                fills.append((seq, dack, pkt.window << ws))
        if fills:
            break
    assert p.count("AckedHoleFilled") >= 1 and fills
    for seq, dack, win in fills:
        # Linux keeps `held` for the join: the fill acks nothing new, its seq is old
        assert seq < path.snd_nxt and win < held
        assert dack + held <= g_edge, (dack, held, g_edge)
