"""Acceptability of server segments (RFC 5961, RFC 9293 §3.10.7): only a RST exactly at the
guest's rcv_nxt resets; one in its window reaches the guest at the same distance (challenge
ACK), anything else is dropped; MP_FASTCLOSE, DATA_FIN, MP_FAIL and infinite mappings act only
on acceptable segments."""

import random

from middlebox.core import Drop, State
from middlebox.wire import Dss, MpFail, MpFastclose

from tests.unit.test_core_harness import ACK, FIN, M32, M64, RST, Pair, check_wire


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _data_pair():
    p = Pair()
    p.established()
    p.inn(p.s_data_pkt(b"0123456789"))
    p.g_rcv = p.s_nxt
    p.out(p.g_ack())
    return p


def test_rst_exactly_at_rcv_nxt_resets():
    p = _data_pair()
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, RST | ACK))
    assert check_wire(got)[0].flags & RST and check_wire(got)[0].seq == p.s_nxt
    assert _flow(p).state is State.CLOSED and p.count("RstAccepted") == 1


def test_in_window_rst_is_challenged_and_changes_nothing():
    p = _data_pair()
    actions, got = p.inn(p.s_packet(p.s_nxt + 100, p.g_nxt, RST | ACK))
    pkt = check_wire(got)[0]
    assert pkt.flags & RST and pkt.seq == (p.s_nxt + 100) & M32  # same distance from rcv_nxt
    assert _flow(p).state is State.ESTABLISHED and p.count("RstChallenged") == 1
    assert p.count("RstAccepted") == 0
    _, got = p.inn(p.s_data_pkt(b"more"))
    assert got[check_wire(got)[0].payload_off:] == b"more"


def test_out_of_window_rsts_are_dropped_and_the_flow_keeps_converting():
    p = _data_pair()
    rnd = random.Random(5961)
    for _ in range(200):
        off = rnd.choice([rnd.randrange(1 << 20, 1 << 31), -rnd.randrange(1, 1 << 31)])
        actions, got = p.inn(p.s_packet((p.s_nxt + off) & M32, p.g_nxt, RST | ACK))
        assert got is None and isinstance(actions[0], Drop)
    assert p.count("RstOutOfWindow") == 200 and _flow(p).state is State.ESTABLISHED
    _, sent = p.out(p.g_data(b"still mptcp"))
    p.s_receive(sent)
    assert p.s_stream().endswith(b"still mptcp")


def test_fastclose_outside_the_window_is_ignored():
    p = _data_pair()
    _, got = p.inn(p.s_packet(p.s_nxt + 0x20000000, p.g_nxt, ACK, (p.s_dss_ack(), MpFastclose(p.c_key))))
    assert got is None or not check_wire(got)[0].flags & RST
    assert p.count("FastCloseOutOfWindow") == 1 and p.count("FastCloseRX") == 0
    assert _flow(p).state is State.ESTABLISHED


def _far(p, mptcp, payload=b"xyz"):
    return p.s_packet(p.s_nxt + 0x20000000, p.g_nxt, ACK, mptcp, payload)


def test_data_fin_mp_fail_infinite_on_out_of_window_segments_change_nothing():
    p = _data_pair()
    flow = _flow(p)
    rel = (p.s_nxt - p.s_isn + 0x20000000) & M32
    dsn = (p.s_idsn + rel) & M64
    for mptcp in (
        (p.s_dss_ack(data_seq=dsn, dsn64=True, subflow_seq=0, data_len=1, data_fin=True),),
        (p.s_dss_ack(), MpFail(dsn)),
        (Dss(data_ack=1, data_seq=dsn, dsn64=True, subflow_seq=rel, data_len=0),),
    ):
        actions, got = p.inn(_far(p, mptcp))
        # beyond the window the guest offered: the guest judges the bytes (it drops them), no
        # option acts here, nothing is injected
        assert len(actions) == 1 and (got is None or check_wire(got)[0].flags & FIN == 0)
        assert flow.state is State.ESTABLISHED
        assert not flow.remote_fin and not flow.fail_sent and not flow.infinite_tx
    assert p.count("DataFinRX") == p.count("MPFailRX") == p.count("InfiniteMapRX") == 0
    assert p.count("SeqBeyondWindow") == 3


def test_syn_sent_rst_not_acking_our_syn_is_dropped():
    p = Pair()
    p.out(p.g_syn())
    actions, got = p.inn(p.s_packet(p.s_isn, (p.g_isn + 77) & M32, RST | ACK))
    assert got is None and _flow(p).state is State.SYN_SENT and p.count("RstOutOfWindow") == 1
    actions, got = p.inn(p.s_packet(p.s_isn, 0, RST))  # no ACK at all
    assert got is None and _flow(p).state is State.SYN_SENT
    _, got = p.inn(p.s_packet(p.s_isn, (p.g_isn + 1) & M32, RST | ACK))  # acks our SYN
    assert got is not None and _flow(p).state is State.CLOSED
