"""The DATA_ACK on the guest's data sent on a join is capped as our ACKs' is (JoinDataAckHeld):
a segment whose window the server does not take must not move the connection's right edge
(DATA_ACK + the window the server holds for that subflow, Linux's ack_update_msk) beyond
the guest's. Found by the review of stop 41: a slow reader acks bytes and offers a smaller
window; the next upload segment on a join, at the seq and ack of our last ACK there, carried
the new DATA_ACK, and the server's edge went ~4 KB past the guest's."""

from __future__ import annotations

from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, wire_check


def test_a_data_segment_on_a_join_keeps_the_servers_edge_within_the_guests():
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    j, path, flow = p.joins[1], p.path(1), p.flow
    ws = flow.guest_wscale
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
