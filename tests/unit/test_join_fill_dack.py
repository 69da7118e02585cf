"""Review of stop 41: the one segment on a join that still carried the guest's whole DATA_ACK
whatever window the server keeps there was the fill of an acked hole (_fill_acked_hole): at
the hole's old seq, with the join's rcv_nxt, the guest's current window. Linux takes no
window from it (tcp_may_update_window: seq before snd_wl1, nothing new acked) but reads its
DATA_ACK (ack_update_msk), so its edge is that DATA_ACK plus the window it held from our
last ACK there: beyond the guest's when a slow reader's window shrank meanwhile."""

from __future__ import annotations

from middlebox.core import Inject
from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, wire_check


def test_the_fill_of_an_acked_hole_keeps_the_servers_edge_within_the_guests():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j, path, flow = p.joins[1], p.path(1), p.flow
    ws = flow.guest_wscale
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
