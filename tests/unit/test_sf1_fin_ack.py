"""The server's subflow-1 FIN of a multipath flow is the subflow's close, not the connection's:
the guest gets the segment without it, and the middlebox acknowledges it (as a join's FIN).
Captured before (netlink, two uplinks, every download and upload whose guest closed second):
nobody acked it, Linux resent it every RTO, the guest, closed, answered the resend (shown as a
pure ACK) with a RST, which went on to the server with MP_FASTCLOSE."""

from __future__ import annotations

from middlebox.core import Direction
from middlebox.core.table import State as S

from tests.unit.test_core_harness import ACK, FIN, PSH
from tests.unit.test_resends_into_holes import _pair
from tests.unit.test_subflow_table import wire_check

M32 = 0xFFFFFFFF


def _server_closed_first():
    """The server's DATA_FIN, the guest's ack and FIN (it closes second), the server's DATA_ACK
    of it: the guest's LAST_ACK is over."""
    p = _pair()
    mp = p.mp
    p0 = mp.paths[0]
    p.inn(p.s_bare_data_fin())
    p.g_rcv = (p.s_isn + 2) & M32
    p.out(p.g_fin())
    p.c_dack = mp.snd_nxt + 1
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    assert p.flow.state is S.TIME_WAIT and p.flow.fin_ack_delivered
    return p, mp, p0


def _sf1_fin(p, p0, plen=0):
    return p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & M32, ACK | FIN, (p.dack(),))


def test_the_servers_subflow_1_fin_after_the_guest_closed_is_acked_and_not_passed():
    p, mp, p0 = _server_closed_first()
    for resend in range(2):  # (our ACK lost: the server resends its FIN)
        acts = p.conv.handle(_sf1_fin(p, p0), Direction.IN, p.now)
        assert p.classify(acts) == ["drop", "ack@0"], p.classify(acts)
        pkt, _, _ = wire_check(acts[1].data, True)
        assert pkt.ack == (p.s_nxt + 1) & M32  # its FIN
        assert pkt.seq == (p0.local_isn + p0.snd_nxt) & M32
        assert p.count("Sf1FinAcked") == resend + 1


def test_while_the_guest_is_open_the_segment_goes_on_without_the_fin_and_is_acked():
    """Linux closing subflow 1 while the connection lives (joins carry on)."""
    p = _pair()
    p0 = p.mp.paths[0]
    acts = p.conv.handle(_sf1_fin(p, p0), Direction.IN, p.now)
    labels = p.classify(acts)
    assert labels[0] == "rewrite" and "ack@0" in labels, labels
    assert not wire_check(acts[0].data, False)[0].flags & FIN  # the guest's stream goes on
    assert p.count("Sf1FinAcked") == 1


def test_not_before_the_guest_has_every_byte_below_it():
    """Bytes on subflow 1 the guest has not acked yet: the FIN acked would ack them too."""
    p = _pair()
    p0 = p.mp.paths[0]
    p.inn(p.s_data_pkt(b"x" * 100))  # (acked on arrival? not by the guest yet)
    acts = p.conv.handle(_sf1_fin(p, p0), Direction.IN, p.now)
    assert "ack@0" not in p.classify(acts) and p.count("Sf1FinAcked") == 0


def _lost_on_sf1_then_closed(after: bytes = b""):
    """100 bytes lost on subflow 1 and reinjected on a join (then `after` on the join too),
    the server's DATA_FIN on the join, the guest closing second and its FIN data-acked: its
    LAST_ACK is over. Returns the pair, the lost bytes' subflow seq and their DSS."""
    from middlebox.wire import Dss

    from tests.unit.test_multipath_sf1_dupack import _acked

    M64 = (1 << 64) - 1
    p, j, _, _ = _acked()
    f = p.flow
    lost_seq, lost_dsn = (p.s_isn + 1) & M32, (p.s_idsn + p.s_drel) & M64
    p.s_nxt = (p.s_nxt + 100) & M32  # 100 bytes on subflow 1, lost on the way ...
    p.j_in(p.j_data(j, b"A" * 100))  # ... and reinjected on the join
    if after:
        p.j_in(p.j_data(j, after))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    p.out(p.g_ack())
    dfin = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True,
               subflow_seq=0, data_len=1, data_fin=True)
    p.j_in(p.j_ack(j, mptcp=(dfin,)))
    p.g_rcv = (p.g_rcv + 1) & M32
    p.out(p.g_ack())
    p.out(p.g_fin())  # the guest closes second
    p.c_dack = p.mp.snd_nxt + 1
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.dack(),)))
    assert f.state is S.TIME_WAIT and f.guest_passive and f.fin_ack_delivered  # LAST_ACK over
    resend = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=lost_dsn, dsn64=True, subflow_seq=1,
                 data_len=100)
    return p, lost_seq, resend


def test_a_fin_above_a_subflow_1_hole_is_not_shown_to_a_guest_that_closed():
    """Subflow-1 bytes lost and reinjected on a join: the guest has every byte at the data
    level and closed second, but subflow 1 has a hole below the server's FIN, so the FIN is
    not acked yet (the server resends it after the lost bytes). The segment was still passed
    to the closed guest as a pure ACK, which it answers with a RST: the reset this commit is
    about. It is dropped; once the lost bytes are resent the FIN is acked."""
    from middlebox.wire import parse_packet

    p, lost_seq, resend = _lost_on_sf1_then_closed()
    acts, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, (p.dack(),)))
    assert got is None, "a closed guest answers any segment with a RST"
    assert p.classify(acts) == ["drop"] and p.count("Sf1FinAcked") == 0  # (the hole below it)
    _, got = p.inn(p.s_packet(lost_seq, p.g_nxt, ACK | PSH, (resend,), b"A" * 100))
    assert got is None
    acts, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, (p.dack(),)))
    assert got is None and p.classify(acts) == ["drop", "ack@0"]
    pkt, _, _ = wire_check(acts[1].data, True)
    assert pkt.ack == (p.s_nxt + 1) & M32 and p.count("Sf1FinAcked") == 1
    assert parse_packet(acts[1].data).flags & FIN == 0


def test_a_fin_on_a_resend_of_bytes_a_closed_guest_has_is_not_passed():
    """Adversarial pass (uplink 1 down at the close, back 1.5 s later): bytes lost on
    subflow 1 went to the guest on a join; once the path was back, the server's subflow-1 RTO
    resent them, the last piece with the subflow FIN. The pieces without the FIN were
    consumed (DupConsumed); the one with it went on to the closed guest, which answered with
    RSTs that reached the server as MP_FASTCLOSE."""
    p, lost_seq, resend = _lost_on_sf1_then_closed(after=b"B" * 200)  # (the stream goes on)
    acts, got = p.inn(p.s_packet(lost_seq, p.g_nxt, ACK | FIN, (resend,), b"A" * 100))
    assert got is None, "a closed guest answers any segment with a RST"
    assert p.classify(acts)[0] == "drop", p.classify(acts)
