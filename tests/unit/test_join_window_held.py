"""The right edge Linux derives from our ACKs on a join (ack_update_msk: DATA_ACK plus the
window the server holds for the subflow) must not pass the guest's. Linux takes a window
only from a segment that acks more, has a later seq, or offers more (tcp_may_update_window),
so a pure DATA_ACK update on a join with a slow reader's shrinking window left the old
window in place with the new DATA_ACK: the server sent bytes beyond the guest's window, which
the guest dropped and only the server's MPTCP-level timer repaired (JoinBeyondGuestWindow,
MPTCPRetrans in the integration tests). Such an ACK's DATA_ACK now stops at the guest's
edge minus the held window; the next ACK of new bytes carries the rest."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from middlebox.wire import Dss, parse_options, parse_packet

from tests.unit.test_core_harness import mptcp_of
from tests.unit.test_subflow_table import ACK, M32, MPair


def _on_join(p, acts):
    out = []
    for a in acts:
        data = getattr(a, "data", None)
        if data and p.label(data) == "ack@1":
            pkt = parse_packet(data)
            opts = parse_options(data, pkt.ip_hlen + 20, pkt.payload_off)
            (dss,) = [o for o in mptcp_of(data, pkt, opts) if isinstance(o, Dss)]
            out.append((pkt, dss))
    return out


def _edge(f, pkt, dss):
    """The data-level right edge a server computes from our ACK, relative."""
    return ((dss.data_ack - f.remote_idsn) & M32) + (pkt.window << f.guest_wscale)


def _slow_reader():
    """A join brought the guest 2000 bytes it has not read: (pair, join, flow, the guest's
    edge, the window the server holds, relative)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    f = p.flow
    (pkt, dss), = _on_join(p, p.j_in(p.j_data(j, b"d" * 2000)))
    held = pkt.window << f.guest_wscale
    edge = _edge(f, pkt, dss)
    assert edge == f.rcv_rel + held
    # the guest acks them, a kilobyte at a time; its window shrinks by as much: the edge
    # stays. (The first ACK goes on on subflow 1; the second, a subflow-1 duplicate moving
    # only the DATA_ACK, is held back for the clock to send on the join.)
    # (Linux rounds a shrinking window up to its scale, so that its edge never retracts)
    unit = 1 << f.guest_wscale
    for k in (1, 2):
        left = held - 1000 * k
        p.out(p.g_packet(p.g_nxt, (f.server_isn + f.rcv_rel + 1000) & M32, ACK, window=-(-left // unit)))
    assert p.count("Sf1DupAckHeld") == 1
    return p, j, f, edge, held


def test_a_data_ack_only_ack_on_a_join_stops_where_the_held_window_meets_the_guests_edge():
    p, j, f, edge, held = _slow_reader()
    assert p.flow.guest_window << f.guest_wscale < held
    p.now += 0.05
    acks = _on_join(p, p.conv.tick(p.now))  # the DATA_ACK held back from subflow 1, flushed
    assert acks, "the clock sends the DATA_ACK on the join"
    assert f.rcv_rel + (f.guest_window << f.guest_wscale) >= edge
    for pkt, dss in acks:
        # the server keeps the window it holds (smaller offered, nothing new acked): DATA_ACK
        # plus that stays within the guest's edge, and the DATA_ACK is not ahead of the guest
        dack = (dss.data_ack - f.remote_idsn) & M32
        assert dack + held <= f.rcv_rel + (f.guest_window << f.guest_wscale)
        assert dack < f.rcv_rel
    assert p.count("JoinDataAckHeld") >= 1


def test_the_next_ack_of_new_bytes_carries_the_whole_data_ack():
    p, j, f, edge, held = _slow_reader()
    p.now += 0.05
    p.conv.tick(p.now)
    (pkt, dss), = _on_join(p, p.j_in(p.j_data(j, b"e" * 100)))
    assert (dss.data_ack - f.remote_idsn) & M32 == f.rcv_rel  # the guest's own, whole
    assert _edge(f, pkt, dss) <= f.rcv_rel + (f.guest_window << f.guest_wscale)


def test_a_reader_that_keeps_up_has_its_data_ack_unchanged():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    f = p.flow
    p.j_in(p.j_data(j, b"d" * 2000))
    base = f.server_isn + f.rcv_rel
    for k in (1, 2):  # it reads as fast as the bytes come: its window stays
        p.out(p.g_packet(p.g_nxt, (base + 1000 * k) & M32, ACK, window=f.guest_window))
    p.now += 0.05
    for pkt, dss in _on_join(p, p.conv.tick(p.now)):
        assert (dss.data_ack - f.remote_idsn) & M32 == f.rcv_rel
    assert p.count("JoinDataAckHeld") == 0


def test_the_first_data_ack_only_ack_on_a_join_knows_the_third_acks_window():
    """Linux's new subflow takes its window from our third ACK (snd_wl1 = its seq 1): a
    later DATA_ACK-only ACK with a smaller window is not taken either. (Review: the model
    started empty and let the first such ACK through with the whole DATA_ACK.)"""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    f = p.flow
    w3 = f.guest_window << f.guest_wscale  # what the third ACK offered
    p.inn(p.s_data_pkt(b"d" * 2000))  # a download on subflow 1; the guest reads slowly
    unit = 1 << f.guest_wscale
    for k in (1, 2):
        p.out(p.g_packet(p.g_nxt, (f.server_isn + 1 + 1000 * k) & M32, ACK, window=-(-(w3 - 1000 * k) // unit)))
    p.now += 0.05
    acks = _on_join(p, p.conv.tick(p.now))
    assert acks
    for pkt, dss in acks:
        dack = (dss.data_ack - f.remote_idsn) & M32
        assert dack + w3 <= f.rcv_rel + (f.guest_window << f.guest_wscale)


def test_a_resent_segment_with_a_wider_window_does_not_reset_what_the_server_holds():
    """A segment older than the last window update (a guest retransmission on the join) is
    not one Linux takes a window from (its seq is below snd_wl1), whatever it offers."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    f, p1 = p.flow, p.mp.paths[1]
    f.guest_window = 100
    assert MP._window_taken(f, p1, 5001, 1)  # new data: taken
    f.guest_window = 200
    assert not MP._window_taken(f, p1, 1001, 1)  # an old seq offering more: not taken
    f.guest_window = 90
    assert not MP._window_taken(f, p1, 5001, 1)  # the last update's seq offering less: not taken
    assert p1.wnd_held == 100 << f.guest_wscale and p1.wnd_seq == 5001
    f.guest_window = 150
    assert MP._window_taken(f, p1, 5001, 1)  # offering more than it holds: taken


def test_every_capped_ack_is_counted_whichever_path_sends_it():
    """The server resends bytes the join acked (our ACK got lost): our answer is an ACK on the
    join, capped like any other, and counted (JoinDataAckHeld undercounted: only 3 of the 15
    places that send an ACK on a join passed the counters)."""
    p, j, f, edge, held = _slow_reader()
    before = p.count("JoinDataAckHeld")
    old = p.j_ack(j, ACK, b"d" * 1000, seq=j.s_nxt - 2000)
    acks = _on_join(p, p.j_in(old))
    assert acks, "old bytes are answered with an ACK on the join"
    for pkt, dss in acks:
        dack = (dss.data_ack - f.remote_idsn) & M32
        assert dack + held <= f.rcv_rel + (f.guest_window << f.guest_wscale)
    assert p.count("JoinDataAckHeld") == before + len(acks)
