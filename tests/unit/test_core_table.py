"""The state table, every (state, input) pair (hyper-h2 `test_state_machines.py` style).

For each pair: bring a flow into the state with the two-sided harness, build a packet that the
converter classifies as the input, feed it, and check: a verdict comes first, nothing escaped
(CoreBug stays 0), and the flow is in `TABLE[(state, input)]`'s next state; a missing key
leaves the state unchanged and counts a StateViolation ("pass as plain TCP", never a crash).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlebox.core import ACCEPT, Direction, Drop, Input, Rewrite, State
from middlebox.core.table import TABLE
from middlebox.wire import Dss, MpCapable, MpFail, MpFastclose, encode_tcp_options, parse_packet

from tests.unit.test_core_harness import ACK, FIN, M32, M64, RST, SYN, SERVER_KEY, Pair, check_wire

I = Input
PLAIN = (State.FALLBACK, State.FALLBACK_CLOSING)  # fallback flows: only SYN/RST/FIN are classified


def in_state(state: State) -> Pair:
    """A Pair whose only flow is in `state`."""
    if state in (State.FALLBACK, State.FALLBACK_CLOSING):
        p = Pair(server_mptcp=False)
        p.handshake()
        if state is State.FALLBACK_CLOSING:
            p.out(p.g_fin())
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
    if p.c_key is None:
        p.c_key = flow.local_key or 1
    if inp is I.IN_STALE_ACK:
        flow.fin_ack_delivered = flow.remote_fin_acked = True
        return Direction.IN, p.s_ack()
    flow.fin_ack_delivered = False
    if inp is I.IN_SYNACK_MPC:
        return Direction.IN, p.s_synack(p.g_syn(), mptcp=(MpCapable(1, 0x01, SERVER_KEY),))
    if inp is I.IN_SYNACK_PLAIN:
        return Direction.IN, p.s_synack(p.g_syn(), mptcp=())
    if inp is I.IN_DSS:
        return Direction.IN, p.s_ack()
    if inp is I.IN_DSS_NOACK:
        rel = (p.s_nxt - p.s_isn) & M32
        dss = Dss(data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=rel, data_len=3)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"abc")
    if inp is I.IN_DATA_FIN:
        return Direction.IN, p.s_bare_data_fin()
    if inp is I.IN_INFINITE:
        rel = (p.s_nxt - p.s_isn) & M32
        dss = Dss(data_ack=1, data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=rel, data_len=0)
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"xyz")
    if inp is I.IN_NODSS_DATA:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (), b"plain")
    if inp is I.IN_NODSS:
        return Direction.IN, p.s_packet(p.s_nxt, (flow.guest_isn + 1) & M32, ACK, ())
    if inp is I.IN_RST:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, RST | ACK, ())
    if inp is I.IN_FASTCLOSE:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (MpFastclose(flow.local_key),))
    if inp is I.IN_MP_FAIL:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFail(p.s_idsn + 1)))
    if inp is I.IN_CSUM_BAD:
        flow.checksum = True
        flow.sf.remote_isn = p.s_isn  # before the SYN/ACK too: the segment carries its mapping
        return Direction.IN, p.s_data_pkt(b"garbled", csum=0x1234)
    if inp is I.IN_FIN:
        return Direction.IN, p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, ())
    if inp is I.IN_CLOSE_DONE:
        flow.local_fin, flow.remote_fin_acked, flow.local_fin_acked = True, True, False
        flow.local_fin_seq = (p.g_nxt - 1) & M32
        return Direction.IN, p.s_ack()
    if inp is I.IN_ODD:
        return Direction.IN, p.s_packet(p.s_isn, 0, SYN, ())
    raise AssertionError(inp)


def classify(p: Pair, direction: Direction, buf: bytes) -> Input:
    flow, pkt = the_flow(p), parse_packet(buf)
    if direction is Direction.OUT:
        return p.conv._classify_out(flow, pkt, buf)
    return p.conv._classify_in(flow, pkt, buf)[0]


def impossible(state: State, inp: Input) -> bool:
    """Pairs no packet can produce (test_impossible_pairs_cannot_be_classified proves it):
    a NEW flow has no ISN yet, so any SYN is OUT_SYN; IN_FIN is classified only on fallback
    flows (elsewhere a server FIN is part of the DSS / DATA_FIN handling)."""
    return (state is State.NEW and inp is I.OUT_SYN_RTX) or (inp is I.IN_FIN and state not in PLAIN)


POSSIBLE_PAIRS = [(s, i) for s in State for i in Input if not impossible(s, i)]
IMPOSSIBLE_PAIRS = [(s, i) for s in State for i in Input if impossible(s, i)]


def run_pair(state: State, inp: Input) -> None:
    p = in_state(state)
    direction, buf = packet_for(p, inp)
    assert classify(p, direction, buf) is inp
    flow = the_flow(p)
    violations = p.count("StateViolation")
    actions = p.conv.handle(buf, direction, p.now + 0.5)
    assert actions and isinstance(actions[0], (type(ACCEPT), Rewrite, Drop))
    assert p.count("CoreBug") == 0
    for a in actions[1:]:
        assert not isinstance(a, (Rewrite, Drop)) and a is not ACCEPT
    if isinstance(actions[0], Rewrite):
        pkt, opts = check_wire(actions[0].data)
        if direction is Direction.IN:
            assert not opts.mptcp
    fast = state in PLAIN and not parse_packet(buf).flags & (SYN | RST | FIN)
    expected = TABLE.get((state, inp))
    if expected is None:
        assert flow.state is state
        if not fast:
            assert p.count("StateViolation") == violations + 1
    else:
        assert flow.state is expected[1]


@pytest.mark.parametrize("state, inp", POSSIBLE_PAIRS, ids=lambda x: x.name)
def test_every_state_input_pair(state, inp):
    run_pair(state, inp)


@pytest.mark.parametrize("state, inp", IMPOSSIBLE_PAIRS, ids=lambda x: x.name)
def test_impossible_pairs_cannot_be_classified(state, inp):
    """The packet that means `inp` elsewhere is classified as something else in `state`."""
    source = State.FALLBACK if inp is I.IN_FIN else State.SYN_SENT
    direction, buf = packet_for(in_state(source), inp)
    p = in_state(state)
    assert classify(p, direction, buf) is not inp


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
