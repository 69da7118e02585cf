"""The state table, every (state, input) pair (hyper-h2 `test_state_machines.py` style).

For each pair: bring a flow into the state with the two-sided harness, build a packet that the
converter classifies as the input, feed it, and check it against MODEL, the spec-level model
written out below by hand (never derived from `table.TABLE`, which the converter dispatches on:
comparing the converter with its own table would let any wrong row pass): the next state, the
observable wire behaviour (verdict kind and what goes to whom) and whether the pair is a
protocol violation (no row: passed as plain TCP, state unchanged, StateViolation counted).
test_model_catches_table_mutations proves the check has teeth.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlebox.core import ACCEPT, REFERENCE, Direction, Drop, Inject, Input, Rewrite, State
from middlebox.core.table import TABLE
from middlebox.wire import Dss, MpCapable, MpFail, MpFastclose, encode_tcp_options, parse_packet

from middlebox.wire import build_options

from tests.unit.test_core_harness import (ACK, FIN, M32, M64, PSH, RST, SYN, SERVER_KEY, Pair, check_wire, make_packet,
                                          mptcp_of)

I = Input
PLAIN = (State.FALLBACK, State.FALLBACK_CLOSING)  # fallback flows: only SYN/RST/FIN are classified
JUDGED = (State.MPC_PENDING, State.ESTABLISHED, State.CLOSING, State.TIME_WAIT)  # window checks apply


def in_state(state: State, make=None) -> Pair:
    """A Pair whose only flow is in `state` (`make(config)`: the converter to use)."""
    if make is not None:
        real = Pair.__init__

        def init(self, *a, **kw):
            real(self, *a, **kw)
            self.conv = make(self.cfg)

        Pair.__init__ = init
        try:
            return in_state(state)
        finally:
            Pair.__init__ = real
    if state in (State.FALLBACK, State.FALLBACK_CLOSING):
        p = Pair(server_mptcp=False)
        p.handshake()
        if state is State.FALLBACK_CLOSING:
            p.out(p.g_fin())
    elif state is State.GUEST_MPTCP:
        p = Pair()
        p.out(p.g_syn(options=encode_tcp_options(mss=1460) + bytes([30, 4, 0x01, 0x01])))  # MP_CAPABLE v1 SYN
    elif state is State.SYN_RCVD:  # inbound: the peer's SYN and the guest's SYN/ACK passed
        p = Pair()
        p.inn(peer_syn(p))
        p.out(guest_synack(p))
    else:
        p = Pair()
        if state in (State.NEW, State.SYN_SENT):
            p.out(p.g_syn())
        elif state is State.MPC_PENDING:
            p.handshake()
        else:
            p.established()
            if state is State.CLOSING:
                p.out(p.g_fin())
            elif state is State.TIME_WAIT:
                p.out(p.g_fin())
                p.inn(p.s_ack())
                p.inn(p.s_bare_data_fin())
                p.g_rcv = (p.s_nxt + 1) & M32
                p.out(p.g_ack())
            elif state is State.CLOSED:
                p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=b""))
    flow = the_flow(p)
    if state is State.NEW:
        flow.state = State.NEW  # exists only between creation and the SYN handler
    assert flow.state is state
    return p


def the_flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _dsn(flow, rel):
    """A server DSN at data-level offset `rel` in the flow's own view of the server's IDSN
    (0 before the SYN/ACK: then the DSN must be small for remote_rel to accept it)."""
    return (flow.remote_idsn + rel) & M64


def peer_syn(p: Pair, isn=None) -> bytes:
    """An MPTCP peer's SYN towards the guest (inbound role): MP_CAPABLE v1, no key."""
    opts = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=9, ts_ecr=0)
    return make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn if isn is None else isn, 0, SYN,
                       build_options(opts, (MpCapable(1, 0x01),)), v6=p.v6)


def guest_synack(p: Pair) -> bytes:
    return p.g_packet(p.g_isn, (p.s_isn + 1) & M32, SYN | ACK, options=p.g_opts(syn=True))


def packet_for(p: Pair, inp: Input) -> tuple[Direction, bytes]:
    """A packet the converter classifies as `inp` for p's flow (adjusting FIN bookkeeping
    where the input depends on it)."""
    flow = the_flow(p)
    if inp is I.OUT_SYN:
        return Direction.OUT, p.g_packet(p.g_isn + 777, 0, SYN, options=p.g_opts(syn=True))
    if inp is I.OUT_SYN_RTX:
        return Direction.OUT, p.g_syn()
    if inp is I.OUT_SYN_MPTCP:
        return Direction.OUT, p.g_syn(options=encode_tcp_options(mss=1460) + bytes([30, 4, 0x01, 0x01]))
    if inp is I.OUT_ACK:
        return Direction.OUT, p.g_ack()
    if inp is I.OUT_DATA:
        return Direction.OUT, p.g_data(b"data")
    if inp is I.OUT_FIN:
        return Direction.OUT, p.g_fin()
    if inp is I.OUT_RST:
        return Direction.OUT, p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=b"")
    if inp is I.OUT_CLOSE_DONE:
        flow.remote_fin, flow.local_fin_acked, flow.remote_fin_acked = True, True, False
        flow.remote_fin_seq = p.s_nxt
        p.g_rcv = (p.s_nxt + 1) & M32
        return Direction.OUT, p.g_ack()
    if inp is I.OUT_ODD:
        return Direction.OUT, p.g_packet(p.g_nxt, 0, FIN)  # no ACK flag
    if inp is I.OUT_INFINITE:
        flow.infinite_tx = True  # the server's MP_FAIL came first
        return Direction.OUT, p.g_data(b"data")
    if inp is I.OUT_SYNACK:
        return Direction.OUT, guest_synack(p)
    if inp is I.IN_SYN_MPC:
        return Direction.IN, peer_syn(p)
    if inp is I.IN_MPC_ACK:  # the peer's third ACK: its key, ours echoed
        mpc = MpCapable(1, 0x01, SERVER_KEY, flow.local_key if flow.local_key is not None else 1)
        return Direction.IN, p.s_packet(p.s_nxt, (flow.guest_isn + 1) & M32, ACK, (mpc,))
    if p.c_key is None:
        p.c_key = flow.local_key or 1
    if inp is I.IN_STALE_ACK:
        flow.fin_ack_delivered = flow.remote_fin_acked = True
        return Direction.IN, p.s_ack()
    flow.fin_ack_delivered = False
    rel = (p.s_nxt - p.s_isn) & M32
    if inp is I.IN_SYNACK_MPC:
        return Direction.IN, p.s_synack(p.g_syn(), mptcp=(MpCapable(1, 0x01, SERVER_KEY),))
    if inp is I.IN_SYNACK_PLAIN:
        return Direction.IN, p.s_synack(p.g_syn(), mptcp=())
    if inp is I.IN_SYN:
        return Direction.IN, p.s_packet(p.s_isn, 0, SYN, ())
    if inp is I.IN_DSS:
        return Direction.IN, p.s_ack()
    if inp is I.IN_DSS_NOACK:
        dss = Dss(data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel, data_len=3)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"abc")
    if inp is I.IN_DATA_FIN:
        dss = p.s_dss_ack(data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=0, data_len=1, data_fin=True)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,))
    if inp is I.IN_INFINITE:
        dss = Dss(data_ack=1, data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel, data_len=0)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"xyz")
    if inp is I.IN_UNRECONCILABLE:  # an infinite mapping whose subflow seq is not its DSN
        dss = Dss(data_ack=1, data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel + 1000, data_len=0)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"xyz")
    if inp is I.IN_NODSS_DATA:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (), b"plain")
    if inp is I.IN_NODSS:
        return Direction.IN, p.s_packet(p.s_nxt, (flow.guest_isn + 1) & M32, ACK, ())
    if inp is I.IN_RST:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, RST | ACK, ())
    if inp is I.IN_RST_CHALLENGE:  # in the guest's window, 100 bytes after its rcv_nxt
        return Direction.IN, p.s_packet(p.s_nxt + 100, p.g_nxt, RST | ACK, ())
    if inp is I.IN_RST_OUTSIDE:  # far outside the window; in SYN_SENT: not acking our SYN
        return Direction.IN, p.s_packet(p.s_nxt + 0x10000000, (p.g_isn + 5) & M32, RST | ACK, ())
    if inp is I.IN_OUTSIDE and flow.state not in JUDGED:  # a DSN 2^31 away: outside at the data level
        dss = p.s_dss_ack(data_seq=_dsn(flow, rel + 0x80000000), dsn64=True, subflow_seq=rel, data_len=3)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"far")
    if inp is I.IN_OUTSIDE:  # more than 2^30 ahead, with a mapping of its own (taken, it would be delivered)
        far = (rel + 0x50000000) & M32
        dss = p.s_dss_ack(data_seq=_dsn(flow, far), dsn64=True, subflow_seq=far, data_len=3)
        return Direction.IN, p.s_packet(p.s_nxt + 0x50000000, p.g_nxt, ACK, (dss,), b"far")
    if inp is I.IN_BEYOND:  # 16 MB beyond the window the guest offered, with its own mapping
        far = (rel + 0x1000000) & M32
        dss = p.s_dss_ack(data_seq=_dsn(flow, far), dsn64=True, subflow_seq=far, data_len=3)
        return Direction.IN, p.s_packet(p.s_nxt + 0x1000000, p.g_nxt, ACK, (dss,), b"far")
    if inp is I.IN_OLD:  # a pure ACK before the guest's rcv_nxt (a duplicate)
        return Direction.IN, p.s_packet(p.s_nxt - 1, p.g_nxt, ACK, (p.s_dss_ack(),))
    if inp is I.IN_FASTCLOSE:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (MpFastclose(flow.local_key if flow.local_key is not None else 1),))
    if inp is I.IN_MP_FAIL:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFail(_dsn(flow, 1))))
    if inp is I.IN_CSUM_BAD:
        flow.checksum = True
        flow.sf.remote_isn = p.s_isn  # before the SYN/ACK too: the segment carries its mapping
        dss = p.s_dss_ack(data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel, data_len=7, csum=0x1234)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"garbled")
    if inp is I.IN_CSUM_MISSING:  # checksums negotiated, a mapping without one
        flow.checksum = True
        dss = p.s_dss_ack(data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel, data_len=4)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"nock")
    if inp is I.IN_CSUM_BAD_LATE:
        # a mapping of 8 bytes over two segments, the first already summed (as _csum_step
        # leaves it), the second completes it with a wrong checksum
        flow.checksum = True
        sf = flow.sf
        m_r = sf.rcv_base
        sf.rmap_r, sf.rmap_len, sf.rmap_d, sf.rmap_valid = m_r, 8, rel, True
        sf.ck_maps = [[m_r, 8, 0, [m_r, m_r + 4]]]  # (an all-zero first piece: sum 0)
        dss = p.s_dss_ack(data_seq=_dsn(flow, rel), dsn64=True, subflow_seq=rel, data_len=8, csum=0x1234)
        return Direction.IN, p.s_packet(p.s_nxt + 4, p.g_nxt, ACK, (dss,), b"late")
    if inp is I.IN_FIN:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, ())
    if inp is I.IN_CLOSE_DONE:
        flow.local_fin, flow.remote_fin_acked, flow.local_fin_acked = True, True, False
        flow.local_fin_seq = (p.g_nxt - 1) & M32
        return Direction.IN, p.s_ack()
    if inp is I.IN_ODD:  # no ACK flag, no SYN
        return Direction.IN, p.s_packet(p.s_nxt, 0, PSH, ())
    raise AssertionError(inp)


def classify(p: Pair, direction: Direction, buf: bytes) -> Input:
    flow, pkt = the_flow(p), parse_packet(buf)
    if direction is Direction.OUT:
        return p.conv._classify_out(flow, pkt, buf)
    return p.conv._classify_in(flow, pkt, buf)[0]


# -- the spec-level model ------------------------------------------------------------------------
#
# state, input, next state, wire behaviour; "(violation)": no row, StateViolation counted.
# Wire behaviour: the verdict, then every injected packet:
#   pass             ACCEPT: the packet leaves unchanged
#   rw               rewritten towards the guest (never with an MPTCP option); rw:rst: turned into a RST
#   rw:<options>     rewritten towards the server, carrying exactly these MPTCP options
#   drop             dropped
#   +srv:<rst|ack>.<options>   injected to the server;  +gst:rst  injected RST to the guest
# CLOSING becomes TIME_WAIT on any segment after which both FINs are acked (the dispatcher,
# past the table's row): IN_STALE_ACK here carries the DATA_ACK of the guest's FIN.
# TIME_WAIT's OUT_ACK here acks nothing new with every server byte acked: dropped
# (StaleAckOutDropped, stop 38: sent on, it reached a server whose subflow had closed).
# Fallback flows pass their non-SYN/RST/FIN packets unchanged after the dict lookup, MPTCP
# options included (docs/core-api.md), and an MPTCP guest's connection is not ours: "pass".
MODEL_TEXT = """
NEW              OUT_SYN            SYN_SENT         rw:MpCapable
NEW              OUT_SYN_MPTCP      GUEST_MPTCP      pass
NEW              OUT_ACK            NEW              pass (violation)
NEW              OUT_DATA           NEW              pass (violation)
NEW              OUT_FIN            NEW              pass (violation)
NEW              OUT_RST            NEW              pass (violation)
NEW              OUT_CLOSE_DONE     NEW              pass (violation)
NEW              OUT_ODD            NEW              pass (violation)
NEW              IN_SYNACK_MPC      NEW              rw (violation)
NEW              IN_SYNACK_PLAIN    NEW              pass (violation)
NEW              IN_DSS             NEW              rw (violation)
NEW              IN_DSS_NOACK       NEW              rw (violation)
NEW              IN_DATA_FIN        NEW              rw (violation)
NEW              IN_INFINITE        NEW              rw (violation)
NEW              IN_NODSS_DATA      NEW              pass (violation)
NEW              IN_NODSS           NEW              pass (violation)
NEW              IN_RST             NEW              pass (violation)
NEW              IN_FASTCLOSE       NEW              rw (violation)
NEW              IN_CLOSE_DONE      NEW              rw (violation)
NEW              IN_ODD             NEW              pass (violation)
NEW              IN_STALE_ACK       NEW              rw (violation)
NEW              IN_MP_FAIL         NEW              rw (violation)
NEW              IN_CSUM_BAD        NEW              rw (violation)
NEW              OUT_INFINITE       NEW              pass (violation)
NEW              IN_SYN             NEW              pass (violation)
NEW              IN_CSUM_MISSING    NEW              rw (violation)
NEW              IN_UNRECONCILABLE  NEW              rw (violation)
SYN_SENT         OUT_SYN            SYN_SENT         rw:MpCapable
SYN_SENT         OUT_SYN_RTX        SYN_SENT         rw:MpCapable
SYN_SENT         OUT_SYN_MPTCP      GUEST_MPTCP      pass
SYN_SENT         OUT_ACK            SYN_SENT         pass (violation)
SYN_SENT         OUT_DATA           SYN_SENT         pass (violation)
SYN_SENT         OUT_FIN            SYN_SENT         pass (violation)
SYN_SENT         OUT_RST            CLOSED           pass
SYN_SENT         OUT_CLOSE_DONE     SYN_SENT         pass (violation)
SYN_SENT         OUT_ODD            SYN_SENT         pass (violation)
SYN_SENT         IN_SYNACK_MPC      MPC_PENDING      rw
SYN_SENT         IN_SYNACK_PLAIN    FALLBACK         pass
SYN_SENT         IN_DSS             SYN_SENT         rw (violation)
SYN_SENT         IN_DSS_NOACK       SYN_SENT         rw (violation)
SYN_SENT         IN_DATA_FIN        SYN_SENT         rw (violation)
SYN_SENT         IN_INFINITE        SYN_SENT         rw (violation)
SYN_SENT         IN_NODSS_DATA      SYN_SENT         pass (violation)
SYN_SENT         IN_NODSS           SYN_SENT         pass (violation)
SYN_SENT         IN_RST             CLOSED           pass
SYN_SENT         IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
SYN_SENT         IN_CLOSE_DONE      SYN_SENT         rw (violation)
SYN_SENT         IN_ODD             SYN_SENT         pass (violation)
SYN_SENT         IN_STALE_ACK       SYN_SENT         rw (violation)
SYN_SENT         IN_MP_FAIL         SYN_SENT         rw (violation)
SYN_SENT         IN_CSUM_BAD        SYN_SENT         rw (violation)
SYN_SENT         OUT_INFINITE       SYN_SENT         pass (violation)
SYN_SENT         IN_SYN             FALLBACK         pass
SYN_SENT         IN_RST_OUTSIDE     SYN_SENT         drop
SYN_SENT         IN_CSUM_MISSING    SYN_SENT         rw (violation)
SYN_SENT         IN_UNRECONCILABLE  SYN_SENT         rw (violation)
MPC_PENDING      OUT_SYN            SYN_SENT         rw:MpCapable
MPC_PENDING      OUT_SYN_RTX        MPC_PENDING      rw:MpCapable
MPC_PENDING      OUT_SYN_MPTCP      GUEST_MPTCP      pass
MPC_PENDING      OUT_ACK            MPC_PENDING      rw:MpCapable
MPC_PENDING      OUT_DATA           MPC_PENDING      rw:MpCapable
MPC_PENDING      OUT_FIN            CLOSING          rw:Dss
MPC_PENDING      OUT_RST            CLOSED           rw:MpFastclose+MpTcpRst
MPC_PENDING      OUT_CLOSE_DONE     MPC_PENDING      pass (violation)
MPC_PENDING      OUT_ODD            MPC_PENDING      pass (violation)
MPC_PENDING      IN_SYNACK_MPC      MPC_PENDING      rw
MPC_PENDING      IN_DSS             ESTABLISHED      rw
MPC_PENDING      IN_DSS_NOACK       MPC_PENDING      rw
MPC_PENDING      IN_DATA_FIN        CLOSING          rw
MPC_PENDING      IN_INFINITE        FALLBACK         rw
MPC_PENDING      IN_NODSS_DATA      FALLBACK         pass
MPC_PENDING      IN_NODSS           MPC_PENDING      rw
MPC_PENDING      IN_RST             CLOSED           rw
MPC_PENDING      IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
MPC_PENDING      IN_CLOSE_DONE      MPC_PENDING      rw (violation)
MPC_PENDING      IN_ODD             MPC_PENDING      pass (violation)
MPC_PENDING      IN_STALE_ACK       MPC_PENDING      rw (violation)
MPC_PENDING      IN_MP_FAIL         MPC_PENDING      rw+srv:ack.Dss.MpFail
MPC_PENDING      IN_CSUM_BAD        MPC_PENDING      drop+srv:ack.Dss.MpFail
MPC_PENDING      OUT_INFINITE       FALLBACK         rw:Dss
MPC_PENDING      IN_SYN             MPC_PENDING      pass (violation)
MPC_PENDING      IN_RST_CHALLENGE   MPC_PENDING      rw
MPC_PENDING      IN_RST_OUTSIDE     MPC_PENDING      drop
MPC_PENDING      IN_OUTSIDE         MPC_PENDING      drop
MPC_PENDING      IN_CSUM_MISSING    CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
MPC_PENDING      IN_CSUM_BAD_LATE   CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
MPC_PENDING      IN_UNRECONCILABLE  CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
MPC_PENDING      IN_OLD             MPC_PENDING      rw
MPC_PENDING      IN_BEYOND          MPC_PENDING      rw
ESTABLISHED      OUT_SYN            SYN_SENT         rw:MpCapable
ESTABLISHED      OUT_SYN_RTX        ESTABLISHED      pass (violation)
ESTABLISHED      OUT_SYN_MPTCP      GUEST_MPTCP      pass
ESTABLISHED      OUT_ACK            ESTABLISHED      rw:Dss
ESTABLISHED      OUT_DATA           ESTABLISHED      rw:Dss
ESTABLISHED      OUT_FIN            CLOSING          rw:Dss
ESTABLISHED      OUT_RST            CLOSED           rw:MpFastclose+MpTcpRst
ESTABLISHED      OUT_CLOSE_DONE     ESTABLISHED      pass (violation)
ESTABLISHED      OUT_ODD            ESTABLISHED      pass (violation)
ESTABLISHED      IN_SYNACK_MPC      ESTABLISHED      rw (violation)
ESTABLISHED      IN_DSS             ESTABLISHED      rw
ESTABLISHED      IN_DSS_NOACK       ESTABLISHED      rw
ESTABLISHED      IN_DATA_FIN        CLOSING          rw
ESTABLISHED      IN_INFINITE        FALLBACK         rw
ESTABLISHED      IN_NODSS_DATA      FALLBACK         pass
ESTABLISHED      IN_NODSS           ESTABLISHED      rw
ESTABLISHED      IN_RST             CLOSED           rw
ESTABLISHED      IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
ESTABLISHED      IN_CLOSE_DONE      ESTABLISHED      rw (violation)
ESTABLISHED      IN_ODD             ESTABLISHED      pass (violation)
ESTABLISHED      IN_STALE_ACK       ESTABLISHED      rw (violation)
ESTABLISHED      IN_MP_FAIL         ESTABLISHED      rw+srv:ack.Dss.MpFail
ESTABLISHED      IN_CSUM_BAD        ESTABLISHED      drop+srv:ack.Dss.MpFail
ESTABLISHED      OUT_INFINITE       FALLBACK         rw:Dss
ESTABLISHED      IN_SYN             ESTABLISHED      pass (violation)
ESTABLISHED      IN_RST_CHALLENGE   ESTABLISHED      rw
ESTABLISHED      IN_RST_OUTSIDE     ESTABLISHED      drop
ESTABLISHED      IN_OUTSIDE         ESTABLISHED      drop
ESTABLISHED      IN_CSUM_MISSING    CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
ESTABLISHED      IN_CSUM_BAD_LATE   CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
ESTABLISHED      IN_UNRECONCILABLE  CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
ESTABLISHED      IN_OLD             ESTABLISHED      rw
ESTABLISHED      IN_BEYOND          ESTABLISHED      rw
CLOSING          OUT_SYN            SYN_SENT         rw:MpCapable
CLOSING          OUT_SYN_RTX        CLOSING          pass (violation)
CLOSING          OUT_SYN_MPTCP      GUEST_MPTCP      pass
CLOSING          OUT_ACK            CLOSING          rw:Dss
CLOSING          OUT_DATA           CLOSING          rw:Dss
CLOSING          OUT_FIN            CLOSING          rw:Dss
CLOSING          OUT_RST            CLOSED           rw:MpFastclose+MpTcpRst
CLOSING          OUT_CLOSE_DONE     TIME_WAIT        rw:Dss
CLOSING          OUT_ODD            CLOSING          pass (violation)
CLOSING          IN_SYNACK_MPC      CLOSING          rw (violation)
CLOSING          IN_DSS             CLOSING          rw
CLOSING          IN_DSS_NOACK       CLOSING          rw
CLOSING          IN_DATA_FIN        CLOSING          rw
CLOSING          IN_INFINITE        FALLBACK         rw
CLOSING          IN_NODSS_DATA      FALLBACK         pass
CLOSING          IN_NODSS           CLOSING          rw
CLOSING          IN_RST             CLOSED           rw
CLOSING          IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
CLOSING          IN_CLOSE_DONE      TIME_WAIT        rw
CLOSING          IN_ODD             CLOSING          pass (violation)
CLOSING          IN_STALE_ACK       TIME_WAIT        rw
CLOSING          IN_MP_FAIL         CLOSING          rw+srv:ack.Dss.MpFail
CLOSING          IN_CSUM_BAD        CLOSING          drop+srv:ack.Dss.MpFail
CLOSING          OUT_INFINITE       FALLBACK         rw:Dss
CLOSING          IN_SYN             CLOSING          pass (violation)
CLOSING          IN_RST_CHALLENGE   CLOSING          rw
CLOSING          IN_RST_OUTSIDE     CLOSING          drop
CLOSING          IN_OUTSIDE         CLOSING          drop
CLOSING          IN_CSUM_MISSING    CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
CLOSING          IN_CSUM_BAD_LATE   CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
CLOSING          IN_UNRECONCILABLE  CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
CLOSING          IN_OLD             CLOSING          rw
CLOSING          IN_BEYOND          CLOSING          rw
TIME_WAIT        OUT_SYN            SYN_SENT         rw:MpCapable
TIME_WAIT        OUT_SYN_RTX        TIME_WAIT        pass (violation)
TIME_WAIT        OUT_SYN_MPTCP      GUEST_MPTCP      pass
TIME_WAIT        OUT_ACK            TIME_WAIT        drop
TIME_WAIT        OUT_DATA           TIME_WAIT        rw:Dss
TIME_WAIT        OUT_FIN            TIME_WAIT        rw:Dss
TIME_WAIT        OUT_RST            CLOSED           rw:MpFastclose+MpTcpRst
TIME_WAIT        OUT_CLOSE_DONE     TIME_WAIT        rw:Dss
TIME_WAIT        OUT_ODD            TIME_WAIT        pass (violation)
TIME_WAIT        IN_SYNACK_MPC      TIME_WAIT        rw (violation)
TIME_WAIT        IN_DSS             TIME_WAIT        rw
TIME_WAIT        IN_DSS_NOACK       TIME_WAIT        rw
TIME_WAIT        IN_DATA_FIN        TIME_WAIT        rw
TIME_WAIT        IN_INFINITE        FALLBACK         rw
TIME_WAIT        IN_NODSS_DATA      TIME_WAIT        drop
TIME_WAIT        IN_NODSS           TIME_WAIT        rw
TIME_WAIT        IN_RST             CLOSED           rw
TIME_WAIT        IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
TIME_WAIT        IN_CLOSE_DONE      TIME_WAIT        rw
TIME_WAIT        IN_ODD             TIME_WAIT        pass (violation)
TIME_WAIT        IN_STALE_ACK       TIME_WAIT        drop
TIME_WAIT        IN_MP_FAIL         TIME_WAIT        rw+srv:ack.Dss.MpFail
TIME_WAIT        IN_CSUM_BAD        TIME_WAIT        drop+srv:ack.Dss.MpFail
TIME_WAIT        OUT_INFINITE       FALLBACK         rw:Dss
TIME_WAIT        IN_SYN             TIME_WAIT        pass (violation)
TIME_WAIT        IN_RST_CHALLENGE   TIME_WAIT        rw
TIME_WAIT        IN_RST_OUTSIDE     TIME_WAIT        drop
TIME_WAIT        IN_OUTSIDE         TIME_WAIT        drop
TIME_WAIT        IN_CSUM_MISSING    CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
TIME_WAIT        IN_CSUM_BAD_LATE   CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
TIME_WAIT        IN_UNRECONCILABLE  CLOSED           drop+srv:rst.MpFastclose.MpTcpRst+gst:rst
TIME_WAIT        IN_OLD             TIME_WAIT        rw
TIME_WAIT        IN_BEYOND          TIME_WAIT        rw
FALLBACK         OUT_SYN            SYN_SENT         rw:MpCapable
FALLBACK         OUT_SYN_RTX        FALLBACK         pass
FALLBACK         OUT_SYN_MPTCP      GUEST_MPTCP      pass
FALLBACK         OUT_ACK            FALLBACK         pass
FALLBACK         OUT_DATA           FALLBACK         pass
FALLBACK         OUT_FIN            FALLBACK_CLOSING pass
FALLBACK         OUT_RST            CLOSED           pass
FALLBACK         OUT_CLOSE_DONE     FALLBACK         pass
FALLBACK         OUT_ODD            FALLBACK         pass
FALLBACK         IN_SYNACK_MPC      FALLBACK         rw
FALLBACK         IN_SYNACK_PLAIN    FALLBACK         pass
FALLBACK         IN_DSS             FALLBACK         pass
FALLBACK         IN_DSS_NOACK       FALLBACK         pass
FALLBACK         IN_DATA_FIN        FALLBACK         pass
FALLBACK         IN_INFINITE        FALLBACK         pass
FALLBACK         IN_NODSS_DATA      FALLBACK         pass
FALLBACK         IN_NODSS           FALLBACK         pass
FALLBACK         IN_RST             CLOSED           pass
FALLBACK         IN_FASTCLOSE       FALLBACK         pass
FALLBACK         IN_CLOSE_DONE      FALLBACK         pass
FALLBACK         IN_ODD             FALLBACK         pass
FALLBACK         IN_STALE_ACK       FALLBACK         pass
FALLBACK         IN_MP_FAIL         FALLBACK         pass
FALLBACK         IN_CSUM_BAD        FALLBACK         pass
FALLBACK         OUT_INFINITE       FALLBACK         pass
FALLBACK         IN_FIN             FALLBACK_CLOSING pass
FALLBACK         IN_SYN             FALLBACK         pass
FALLBACK         IN_CSUM_MISSING    FALLBACK         pass
FALLBACK         IN_UNRECONCILABLE  FALLBACK         pass
CLOSED           OUT_SYN            SYN_SENT         rw:MpCapable
CLOSED           OUT_SYN_RTX        CLOSED           pass
CLOSED           OUT_SYN_MPTCP      GUEST_MPTCP      pass
CLOSED           OUT_ACK            CLOSED           pass
CLOSED           OUT_DATA           CLOSED           drop
CLOSED           OUT_FIN            CLOSED           drop
CLOSED           OUT_RST            CLOSED           rw:MpFastclose+MpTcpRst
CLOSED           OUT_CLOSE_DONE     CLOSED           pass
CLOSED           OUT_ODD            CLOSED           pass
CLOSED           IN_SYNACK_MPC      CLOSED           rw
CLOSED           IN_SYNACK_PLAIN    CLOSED           pass
CLOSED           IN_DSS             CLOSED           rw
CLOSED           IN_DSS_NOACK       CLOSED           rw
CLOSED           IN_DATA_FIN        CLOSED           rw
CLOSED           IN_INFINITE        CLOSED           rw
CLOSED           IN_NODSS_DATA      CLOSED           pass
CLOSED           IN_NODSS           CLOSED           pass
CLOSED           IN_RST             CLOSED           pass
CLOSED           IN_FASTCLOSE       CLOSED           rw
CLOSED           IN_CLOSE_DONE      CLOSED           rw
CLOSED           IN_ODD             CLOSED           pass
CLOSED           IN_STALE_ACK       CLOSED           rw
CLOSED           IN_MP_FAIL         CLOSED           rw
CLOSED           IN_CSUM_BAD        CLOSED           rw
CLOSED           OUT_INFINITE       CLOSED           pass
CLOSED           IN_SYN             CLOSED           pass
CLOSED           IN_CSUM_MISSING    CLOSED           rw
CLOSED           IN_UNRECONCILABLE  CLOSED           rw
FALLBACK_CLOSING OUT_SYN            SYN_SENT         rw:MpCapable
FALLBACK_CLOSING OUT_SYN_RTX        FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_SYN_MPTCP      GUEST_MPTCP      pass
FALLBACK_CLOSING OUT_ACK            FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_DATA           FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_FIN            FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_RST            CLOSED           pass
FALLBACK_CLOSING OUT_CLOSE_DONE     FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_ODD            FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_SYNACK_MPC      FALLBACK_CLOSING rw
FALLBACK_CLOSING IN_SYNACK_PLAIN    FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_DSS             FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_DSS_NOACK       FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_DATA_FIN        FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_INFINITE        FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_NODSS_DATA      FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_NODSS           FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_RST             CLOSED           pass
FALLBACK_CLOSING IN_FASTCLOSE       FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_CLOSE_DONE      FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_ODD             FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_STALE_ACK       FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_MP_FAIL         FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_CSUM_BAD        FALLBACK_CLOSING pass
FALLBACK_CLOSING OUT_INFINITE       FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_FIN             FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_SYN             FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_CSUM_MISSING    FALLBACK_CLOSING pass
FALLBACK_CLOSING IN_UNRECONCILABLE  FALLBACK_CLOSING pass
GUEST_MPTCP      OUT_SYN            SYN_SENT         rw:MpCapable
GUEST_MPTCP      OUT_SYN_MPTCP      GUEST_MPTCP      pass
GUEST_MPTCP      OUT_ACK            GUEST_MPTCP      pass
GUEST_MPTCP      OUT_DATA           GUEST_MPTCP      pass
GUEST_MPTCP      OUT_FIN            GUEST_MPTCP      pass
GUEST_MPTCP      OUT_RST            GUEST_MPTCP      pass
GUEST_MPTCP      OUT_CLOSE_DONE     GUEST_MPTCP      pass
GUEST_MPTCP      OUT_ODD            GUEST_MPTCP      pass
GUEST_MPTCP      IN_SYNACK_MPC      GUEST_MPTCP      pass
GUEST_MPTCP      IN_SYNACK_PLAIN    GUEST_MPTCP      pass
GUEST_MPTCP      IN_DSS             GUEST_MPTCP      pass
GUEST_MPTCP      IN_DSS_NOACK       GUEST_MPTCP      pass
GUEST_MPTCP      IN_DATA_FIN        GUEST_MPTCP      pass
GUEST_MPTCP      IN_INFINITE        GUEST_MPTCP      pass
GUEST_MPTCP      IN_NODSS_DATA      GUEST_MPTCP      pass
GUEST_MPTCP      IN_NODSS           GUEST_MPTCP      pass
GUEST_MPTCP      IN_RST             GUEST_MPTCP      pass
GUEST_MPTCP      IN_ODD             GUEST_MPTCP      pass
GUEST_MPTCP      IN_STALE_ACK       GUEST_MPTCP      pass
GUEST_MPTCP      IN_MP_FAIL         GUEST_MPTCP      pass
GUEST_MPTCP      IN_CSUM_BAD        GUEST_MPTCP      pass
GUEST_MPTCP      OUT_INFINITE       GUEST_MPTCP      pass
GUEST_MPTCP      IN_SYN             GUEST_MPTCP      pass
GUEST_MPTCP      IN_CSUM_MISSING    GUEST_MPTCP      pass
GUEST_MPTCP      IN_UNRECONCILABLE  GUEST_MPTCP      pass
NEW              IN_OUTSIDE         NEW              rw (violation)
SYN_SENT         IN_OUTSIDE         SYN_SENT         drop
FALLBACK         IN_OUTSIDE         FALLBACK         pass
CLOSED           IN_OUTSIDE         CLOSED           rw
FALLBACK_CLOSING IN_OUTSIDE         FALLBACK_CLOSING pass
GUEST_MPTCP      IN_FASTCLOSE       GUEST_MPTCP      pass
GUEST_MPTCP      IN_CLOSE_DONE      GUEST_MPTCP      pass
GUEST_MPTCP      IN_FIN             GUEST_MPTCP      pass
GUEST_MPTCP      IN_RST_CHALLENGE   GUEST_MPTCP      pass
GUEST_MPTCP      IN_RST_OUTSIDE     GUEST_MPTCP      pass
GUEST_MPTCP      IN_OUTSIDE         GUEST_MPTCP      pass
GUEST_MPTCP      IN_CSUM_BAD_LATE   GUEST_MPTCP      pass
GUEST_MPTCP      IN_OLD             GUEST_MPTCP      pass
GUEST_MPTCP      IN_BEYOND          GUEST_MPTCP      pass
NEW              IN_SYN_MPC         SYN_RCVD         rw
NEW              OUT_SYNACK         NEW              pass (violation)
SYN_SENT         IN_SYN_MPC         FALLBACK         rw
SYN_SENT         OUT_SYNACK         SYN_SENT         pass (violation)
MPC_PENDING      IN_SYN_MPC         MPC_PENDING      rw (violation)
MPC_PENDING      OUT_SYNACK         MPC_PENDING      pass (violation)
ESTABLISHED      IN_SYN_MPC         ESTABLISHED      rw (violation)
ESTABLISHED      OUT_SYNACK         ESTABLISHED      pass (violation)
CLOSING          IN_SYN_MPC         CLOSING          rw (violation)
CLOSING          OUT_SYNACK         CLOSING          pass (violation)
TIME_WAIT        IN_SYN_MPC         SYN_RCVD         rw
TIME_WAIT        OUT_SYNACK         TIME_WAIT        pass (violation)
FALLBACK         IN_SYN_MPC         FALLBACK         rw
FALLBACK         OUT_SYNACK         FALLBACK         pass
CLOSED           IN_SYN_MPC         SYN_RCVD         rw
CLOSED           OUT_SYNACK         CLOSED           pass
FALLBACK_CLOSING IN_SYN_MPC         FALLBACK_CLOSING rw
FALLBACK_CLOSING OUT_SYNACK         FALLBACK_CLOSING pass
GUEST_MPTCP      IN_SYN_MPC         GUEST_MPTCP      pass
GUEST_MPTCP      OUT_SYNACK         GUEST_MPTCP      pass
GUEST_MPTCP      IN_MPC_ACK         GUEST_MPTCP      pass
SYN_RCVD         OUT_SYN            SYN_SENT         rw:MpCapable
SYN_RCVD         OUT_SYN_RTX        SYN_RCVD         pass (violation)
SYN_RCVD         OUT_SYN_MPTCP      GUEST_MPTCP      pass
SYN_RCVD         OUT_ACK            SYN_RCVD         pass
SYN_RCVD         OUT_DATA           SYN_RCVD         drop
SYN_RCVD         OUT_FIN            SYN_RCVD         pass (violation)
SYN_RCVD         OUT_RST            CLOSED           pass
SYN_RCVD         OUT_CLOSE_DONE     SYN_RCVD         pass (violation)
SYN_RCVD         OUT_ODD            SYN_RCVD         pass (violation)
SYN_RCVD         IN_SYNACK_MPC      SYN_RCVD         rw (violation)
SYN_RCVD         IN_SYNACK_PLAIN    SYN_RCVD         pass (violation)
SYN_RCVD         IN_DSS             SYN_RCVD         rw (violation)
SYN_RCVD         IN_DSS_NOACK       SYN_RCVD         rw (violation)
SYN_RCVD         IN_DATA_FIN        SYN_RCVD         rw (violation)
SYN_RCVD         IN_INFINITE        SYN_RCVD         rw (violation)
SYN_RCVD         IN_NODSS_DATA      FALLBACK         pass
SYN_RCVD         IN_NODSS           FALLBACK         pass
SYN_RCVD         IN_RST             CLOSED           pass
SYN_RCVD         IN_FASTCLOSE       CLOSED           rw:rst+srv:rst.MpTcpRst
SYN_RCVD         IN_CLOSE_DONE      SYN_RCVD         rw (violation)
SYN_RCVD         IN_ODD             SYN_RCVD         pass (violation)
SYN_RCVD         IN_STALE_ACK       SYN_RCVD         rw (violation)
SYN_RCVD         IN_MP_FAIL         SYN_RCVD         rw (violation)
SYN_RCVD         IN_CSUM_BAD        SYN_RCVD         rw (violation)
SYN_RCVD         OUT_INFINITE       SYN_RCVD         pass (violation)
SYN_RCVD         IN_SYN             FALLBACK         pass
SYN_RCVD         IN_OUTSIDE         SYN_RCVD         drop
SYN_RCVD         IN_RST_OUTSIDE     SYN_RCVD         drop
SYN_RCVD         IN_CSUM_MISSING    SYN_RCVD         rw (violation)
SYN_RCVD         IN_UNRECONCILABLE  SYN_RCVD         rw (violation)
SYN_RCVD         IN_SYN_MPC         SYN_RCVD         rw
SYN_RCVD         OUT_SYNACK         SYN_RCVD         rw:MpCapable
SYN_RCVD         IN_MPC_ACK         ESTABLISHED      rw
"""


def _parse_model(text: str) -> dict:
    model = {}
    for line in text.strip().splitlines():
        s, i, nxt, wire, *rest = line.split()
        model[(State[s], Input[i])] = (State[nxt], wire, rest == ["(violation)"])
    return model


MODEL = _parse_model(MODEL_TEXT)


def impossible(state: State, inp: Input) -> bool:
    """Pairs no packet can produce (test_impossible_pairs_cannot_be_classified proves it):
    a NEW flow has no ISN yet, so any SYN is OUT_SYN (and an MPTCP guest's plain SYN with its
    ISN too); IN_FIN is classified only on fallback flows (elsewhere a server FIN is part of
    the DSS / DATA_FIN handling); where a segment lies against the guest's window (challenge
    RST, outside, old, the running checksum of a mapping) is judged only in MPTCP states, and
    a RST outside the window besides in SYN_SENT (one that does not ack our SYN); a plain
    SYN/ACK in an MPTCP state."""
    if state is State.GUEST_MPTCP:  # its packets are never classified: all pass
        return inp is I.OUT_SYN_RTX
    judged = state in JUDGED
    return (
        (state is State.NEW and inp is I.OUT_SYN_RTX)
        or (inp is I.IN_FIN and state not in PLAIN)
        or (not judged and inp in (I.IN_RST_CHALLENGE, I.IN_OLD, I.IN_BEYOND, I.IN_CSUM_BAD_LATE))
        or (not judged and state not in (State.SYN_SENT, State.SYN_RCVD) and inp is I.IN_RST_OUTSIDE)
        # a SYN/ACK in an MPTCP state is the flow's own (same seq and key: IN_SYNACK_MPC, a
        # retransmission) or IN_OUTSIDE: never a plain one
        or (judged and inp is I.IN_SYNACK_PLAIN)
        # the peer's third ACK is one only while its SYN/ACK is answered (an inbound flow)
        or (inp is I.IN_MPC_ACK and state is not State.SYN_RCVD)
    )


POSSIBLE_PAIRS = [(s, i) for s in State for i in Input if not impossible(s, i)]
IMPOSSIBLE_PAIRS = [(s, i) for s in State for i in Input if impossible(s, i)]


def test_model_covers_exactly_the_possible_pairs():
    assert set(MODEL) == set(POSSIBLE_PAIRS)


def wire_of(actions, direction: Direction, buf: bytes) -> str:
    """The observable behaviour of `actions` for `buf`, in MODEL's notation."""
    v = actions[0]
    sent = parse_packet(buf)
    if v is ACCEPT:
        out = "pass"
    elif isinstance(v, Drop):
        out = "drop"
    else:
        assert isinstance(v, Rewrite), v
        pkt, opts = check_wire(v.data)
        if direction is Direction.OUT:
            out = "rw:" + "+".join(type(o).__name__ for o in mptcp_of(v.data, pkt, opts))
        else:
            assert not opts.mptcp, "the guest must never see an MPTCP option"
            out = "rw" + (":rst" if pkt.flags & RST and not sent.flags & RST else "")
    for a in actions[1:]:
        assert isinstance(a, Inject), a
        pkt, opts = check_wire(a.data)
        if pkt.dst == sent.dst:  # the direction of the IN packet: to the guest
            assert not opts.mptcp
            to = "gst"
        else:
            to = "srv"
        out += f"+{to}:" + ("rst" if pkt.flags & RST else "ack")
        out += "".join("." + type(o).__name__ for o in mptcp_of(a.data, pkt, opts))
    return out


def mismatch(state: State, inp: Input, make=None) -> str | None:
    """None when the converter does what MODEL says for (state, input), else what differs."""
    try:
        p = in_state(state, make)
    except AssertionError:
        return "could not even reach the state"
    direction, buf = packet_for(p, inp)
    if state is not State.GUEST_MPTCP:
        got = classify(p, direction, buf)
        if got is not inp:
            return f"classified {got.name}"
    flow = the_flow(p)
    violations = p.count("StateViolation")
    actions = p.conv.handle(buf, direction, p.now + 0.5)
    if not actions or not isinstance(actions[0], (type(ACCEPT), Rewrite, Drop)):
        return f"no verdict first: {actions}"
    if p.count("CoreBug"):
        return "an exception escaped a handler (CoreBug)"
    nxt, wire, violation = MODEL[(state, inp)]
    seen = (flow.state, wire_of(actions, direction, buf), p.count("StateViolation") > violations)
    if seen != (nxt, wire, violation):
        return f"expected {(nxt.name, wire, violation)}, got {(seen[0].name, *seen[1:])}"
    return None


def run_pair(state: State, inp: Input) -> None:
    assert mismatch(state, inp) is None, mismatch(state, inp)


@pytest.mark.parametrize("state, inp", POSSIBLE_PAIRS, ids=lambda x: x.name)
def test_every_state_input_pair(state, inp):
    run_pair(state, inp)


@pytest.mark.parametrize("state, inp", IMPOSSIBLE_PAIRS, ids=lambda x: x.name)
def test_impossible_pairs_cannot_be_classified(state, inp):
    """The packet that means `inp` elsewhere is classified as something else in `state`."""
    if inp is I.IN_FIN:
        source = State.FALLBACK
    elif inp in (I.OUT_SYN_RTX, I.IN_RST_OUTSIDE, I.IN_OUTSIDE):
        source = State.SYN_SENT
    else:
        source = State.ESTABLISHED
    direction, buf = packet_for(in_state(source), inp)
    p = in_state(state)
    assert classify(p, direction, buf) is not inp


# Wrong rows the model must catch (the kind of slip a table edit makes): next state, handler, both.
MUTATIONS = [
    ((State.ESTABLISHED, I.IN_RST_CHALLENGE), ("rst_in", State.CLOSED)),
    ((State.MPC_PENDING, I.IN_DSS), ("in_", State.MPC_PENDING)),
    ((State.ESTABLISHED, I.IN_OUTSIDE), ("drop_outside", State.CLOSED)),
    ((State.ESTABLISHED, I.IN_RST_CHALLENGE), ("drop_rst", State.ESTABLISHED)),  # same state, other wire
    ((State.CLOSING, I.IN_CSUM_BAD_LATE), ("in_", State.CLOSING)),
    ((State.SYN_SENT, I.IN_RST_OUTSIDE), ("rst_in", State.CLOSED)),
    ((State.TIME_WAIT, I.IN_STALE_ACK), ("in_", State.TIME_WAIT)),
    ((State.FALLBACK, I.IN_FIN), ("pass_in", State.FALLBACK)),
    # (("out", CLOSING) would be mended by the dispatcher: both FINs acked is TIME_WAIT)
    ((State.CLOSING, I.OUT_CLOSE_DONE), ("out", State.ESTABLISHED)),
    ((State.MPC_PENDING, I.IN_NODSS), ("dss_fallback", State.FALLBACK)),
    ((State.ESTABLISHED, I.IN_CSUM_MISSING), ("csum_fail", State.ESTABLISHED)),
    ((State.SYN_RCVD, I.IN_MPC_ACK), ("passive_fallback", State.FALLBACK)),
    ((State.SYN_RCVD, I.OUT_SYNACK), ("pass_out", State.SYN_RCVD)),
    ((State.CLOSED, I.OUT_DATA), ("pass_out", State.CLOSED)),
]


@pytest.mark.parametrize("key, row", MUTATIONS, ids=lambda x: getattr(x[0], "name", "") + "-" + getattr(x[1], "name", ""))
def test_model_catches_table_mutations(monkeypatch, key, row):
    """A wrong row in TABLE fails the model check (on the pure converter, whose dispatch
    tuple is built from TABLE when it is created)."""
    from middlebox.core import table

    assert mismatch(*key, REFERENCE) is None
    monkeypatch.setitem(table.TABLE, key, row)
    assert mismatch(*key, REFERENCE) is not None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(POSSIBLE_PAIRS))
def test_state_input_pairs_hypothesis(pair):
    run_pair(*pair)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(State)), st.lists(st.sampled_from(list(Input)), min_size=1, max_size=12))
def test_random_walks_never_break(state, inputs):
    """Any sequence of inputs from any state: verdict first, no bug, state always a State."""
    p = in_state(state)
    for inp in inputs:
        if the_flow_or_none(p) is None:
            break
        if the_flow(p).state is State.NEW and inp is I.OUT_SYN_RTX:
            continue
        direction, buf = packet_for(p, inp)
        actions = p.conv.handle(buf, direction, p.now + 0.5)
        assert actions and isinstance(actions[0], (type(ACCEPT), Rewrite, Drop))
        assert p.count("CoreBug") == 0
        assert isinstance(the_flow(p).state, State)


def the_flow_or_none(p):
    return next(iter(p.conv.flows.values()), None)


def test_table_is_total_over_sane_pairs():
    """Every state handles RST from both sides and a new guest SYN (no dead ends)."""
    for s in State:
        if s is State.NEW:
            continue
        assert (s, I.OUT_SYN) in TABLE
        assert (s, I.OUT_RST) in TABLE and (s, I.IN_RST) in TABLE
