"""A join SYN answered by an old connection's ACK: the server holds the 4-tuple in TIME_WAIT
(an earlier join's on the same port, or one from before a restart) and Linux took our SYN for
an old duplicate. RFC 9293, SYN-SENT: an ACK that does not ack our SYN gets a RST
<SEQ=SEG.ACK> (which ends the server's TIME_WAIT); we send the SYN again at once. Once per
SYN attempt, whatever a forger sends. tests/integration/test_join_time_wait.py shows it
against the kernel."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from middlebox.wire import parse_packet

from tests.unit.test_subflow_table import ACK, M32, RST, SYN, MPair


def _syn_sent():
    p = MPair(1)
    p.go_multipath()
    j = p.joins[1]
    p1 = p.mp.paths[1]
    assert p1.state is MP.SS.SYN_SENT
    return p, j, p1


OLD = 0x12345678  # the TIME_WAIT's rcv_nxt: what its ACK acks


def _stale_ack(p, j):
    return p.j_packet(j, 0x0BAD0000, OLD, ACK)


def test_an_old_connections_ack_gets_a_rst_at_its_ack_and_our_syn_again():
    p, j, p1 = _syn_sent()
    acts = p.j_in(_stale_ack(p, j))
    assert p.classify(acts) == ["drop", "rst@1", "syn@1"], p.classify(acts)
    rst = parse_packet(acts[1].data)
    assert rst.flags == RST and rst.seq == OLD and not rst.payload_len
    syn = parse_packet(acts[2].data)
    assert syn.flags == SYN and syn.seq == j.c_isn  # the same SYN: same ISN (and nonce)
    assert p1.state is MP.SS.SYN_SENT
    assert p.count("JoinTimeWaitReset") == 1
    # the join then opens as any other
    p.join_up(1)
    assert p1.state is MP.SS.ESTABLISHED


def test_once_per_syn_attempt_whatever_arrives():
    p, j, p1 = _syn_sent()
    p.j_in(_stale_ack(p, j))
    for k in range(50):  # a forger's flood, or the server's ACKs for our retransmissions
        acts = p.j_in(p.j_packet(j, k, (OLD + k) & M32, ACK))
        assert p.classify(acts) == ["drop"], p.classify(acts)
    assert p.count("JoinTimeWaitReset") == 1
    p.conv.tick(p1.timer + 0.001)  # the SYN timer: the next attempt may answer one again
    acts = p.j_in(_stale_ack(p, j))
    assert p.classify(acts) == ["drop", "rst@1", "syn@1"], p.classify(acts)
    assert p.count("JoinTimeWaitReset") == 2


def test_an_ack_of_our_syn_without_syn_is_only_dropped():
    p, j, p1 = _syn_sent()
    acts = p.j_in(p.j_packet(j, 1, (j.c_isn + 1) & M32, ACK))
    assert p.classify(acts) == ["drop"]
    assert p.count("JoinTimeWaitReset") == 0 and p1.state is MP.SS.SYN_SENT
