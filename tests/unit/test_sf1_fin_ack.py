"""The server's subflow-1 FIN of a multipath flow is the subflow's close, not the connection's:
the guest gets the segment without it, and the middlebox acknowledges it (as a join's FIN).
Captured before (netlink, two uplinks, every download and upload whose guest closed second):
nobody acked it, Linux resent it every RTO, the guest, closed, answered the resend (shown as a
pure ACK) with a RST, which went on to the server with MP_FASTCLOSE."""

from __future__ import annotations

from middlebox.core import Direction
from middlebox.core.table import State as S

from tests.unit.test_core_harness import ACK, FIN
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
