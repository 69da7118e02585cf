"""Converter.stop: the daemon is going; every flow the server treats as MPTCP is reset at
both ends (the guest at its rcv_nxt, the server by an ACK with MP_FASTCLOSE, RFC 8684 §3.5
Option A), because its packets would then pass unconverted: at the wrong place in the guest's
stream (tests/integration/test_stop_reset.py measured the wrong bytes). Flows that pass as
they are go on untouched."""

from __future__ import annotations

import pytest

from middlebox.core.table import State
from middlebox.core.table import SubflowState as SS
from middlebox.wire import MpFastclose, mptcp_options, parse_packet

from tests.unit.test_core_harness import ACK, RST, SERVER_KEY, Pair
from tests.unit.test_subflow_table import MPair


def _split(p, acts):
    """(RSTs to the guest, packets to the server)."""
    to_guest, to_server = [], []
    for a in acts:
        pkt = parse_packet(a.data)
        (to_guest if pkt.dport == p.gport else to_server).append((pkt, a.data))
    return to_guest, to_server


@pytest.mark.parametrize("v6", [False, True])
def test_a_single_path_flow_is_reset_at_both_ends(v6):
    p = Pair(v6=v6)
    p.established()
    p.inn(p.s_data_pkt(b"x" * 300))  # server bytes the guest has not acked yet
    acts = p.conv.stop(p.now)
    to_guest, to_server = _split(p, acts)
    assert all(pkt.version == (6 if v6 else 4) for pkt, _ in to_guest + to_server)
    # one RST at the guest's last ack, one past what went to it since (its rcv_nxt if it has them)
    assert [pkt.flags for pkt, _ in to_guest] == [RST, RST]
    assert sorted(pkt.seq for pkt, _ in to_guest) == [(p.s_isn + 1) & 0xFFFFFFFF, (p.s_isn + 301) & 0xFFFFFFFF]
    ((pkt, buf),) = to_server
    assert pkt.flags == ACK and pkt.seq == p.g_nxt  # (the guest's snd_nxt: in the server's window)
    fcs = [o for o in mptcp_options(buf, pkt) if type(o) is MpFastclose]
    assert fcs and fcs[0].rcvr_key == SERVER_KEY
    (flow,) = p.conv.flows.values()
    assert p.count("StopReset") == 1 and flow.fastclosed
    assert p.conv.stop(p.now) == [] and p.count("StopReset") == 1  # (once)


def test_a_multipath_flow_is_reset_on_every_alive_subflow():
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    flow, mp = p.flow, p.mp
    acts = p.conv.stop(p.now)
    labels = [p.label(a.data) for a in acts]
    rsts = [a for a in acts if parse_packet(a.data).dst == p.g_bytes]
    assert rsts and all(parse_packet(a.data).flags == RST for a in rsts), labels
    fc = [a for a in acts if any(type(o) is MpFastclose for o in mptcp_options(a.data, parse_packet(a.data)))]
    assert len(fc) == 2, labels  # (subflow 1 and the join)
    assert all(parse_packet(a.data).flags == ACK for a in fc)
    assert flow.fastclosed and all(q.state is SS.CLOSED for q in mp.paths)
    assert p.count("StopReset") == 1


@pytest.mark.parametrize("state", [State.FALLBACK, State.GUEST_MPTCP, State.TIME_WAIT, State.SYN_SENT])
def test_flows_that_pass_as_they_are_are_left_alone(state):
    p = Pair()
    p.established()
    (flow,) = p.conv.flows.values()
    flow.state = state
    assert p.conv.stop(p.now) == [] and p.count("StopReset") == 0 and not flow.fastclosed


def test_a_flow_before_the_servers_key_gets_a_plain_rst():
    """MPC_PENDING before the key (v1: the server's key comes in its SYN/ACK, so only a
    state forced here): no MP_FASTCLOSE can be made; the server gets a plain RST."""
    p = Pair()
    p.established()
    (flow,) = p.conv.flows.values()
    flow.state = State.MPC_PENDING
    flow.remote_key = None
    _, to_server = _split(p, p.conv.stop(p.now))
    ((pkt, buf),) = to_server
    assert pkt.flags == RST and not mptcp_options(buf, pkt)


def test_a_converting_flow_evicted_from_a_full_table_is_reset_at_both_ends():
    """The table full of converting flows, a new guest SYN evicts the least recently active
    one (FlowEvictedActive): forgotten, its packets would pass unconverted, so its resets go
    out with the SYN's actions, as at stop; the SYN itself goes on converted."""
    from middlebox.core import Config

    p = Pair(Config(max_flows=1))
    p.established()
    (old,) = p.conv.flows.values()
    p.gport += 1
    acts, syn = p.out(p.g_syn())
    assert syn is not None and p.count("FlowEvictedActive") == 1 and old.fastclosed
    p.gport -= 1
    to_guest, to_server = _split(p, acts[1:])
    assert [pkt.flags for pkt, _ in to_guest] == [RST] and to_guest[0][0].seq == (p.s_isn + 1) & 0xFFFFFFFF
    ((pkt, buf),) = to_server
    assert pkt.sport == p.gport and any(type(o) is MpFastclose for o in mptcp_options(buf, pkt))
    assert p.count("StopReset") == 0
    p.gport += 1
    acts, _ = p.out(p.g_syn())  # (a retransmitted SYN evicts nothing: no reset again)
    assert len(acts) == 1


def test_an_evicted_flow_that_passes_as_it_is_gets_no_reset():
    from middlebox.core import Config

    p = Pair(Config(max_flows=1))
    p.established()
    (old,) = p.conv.flows.values()
    old.state = State.FALLBACK
    p.gport += 1
    acts, syn = p.out(p.g_syn())
    assert syn is not None and len(acts) == 1 and not old.fastclosed
