"""Converter.stop: the daemon is going; every flow the server treats as MPTCP is reset at
both ends (the guest at its rcv_nxt, the server by an ACK with MP_FASTCLOSE, RFC 8684 §3.5
Option A), because its packets would then pass unconverted: at the wrong place in the guest's
stream (tests/integration/test_stop_reset.py measured the wrong bytes). Flows that pass as
they are go on untouched."""

from __future__ import annotations

import struct

import pytest

from middlebox.core import ACCEPT, Config, Direction
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import State
from middlebox.core.table import SubflowState as SS
from middlebox.wire import MpFastclose, encode_tcp_options, mptcp_options, parse_packet
from middlebox.wire.packet import tcp_checksum

from tests.unit.test_core_harness import ACK, RST, SERVER_KEY, SYN, Pair, make_packet
from tests.unit.test_subflow_table import MPair, mp_config

M32 = 0xFFFFFFFF


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

    p = Pair(Config(max_flows=1))
    p.established()
    (old,) = p.conv.flows.values()
    old.state = State.FALLBACK
    p.gport += 1
    acts, syn = p.out(p.g_syn())
    assert syn is not None and len(acts) == 1 and not old.fastclosed


# -- review of ffa262f ---------------------------------------------------------------------------


def _fc(acts):
    return [a for a in acts if any(type(o) is MpFastclose for o in mptcp_options(a.data, parse_packet(a.data)))]


def test_evicting_a_multipath_flow():
    p = MPair(2, config=mp_config(2, max_flows=1))
    p.go_multipath()
    p.join_up(1)
    conv = p.conv
    old = p.flow
    assert conv.joins and conv.mp_flows
    p.gport += 1
    acts, syn = p.out(p.g_syn())
    assert syn is not None
    assert len(_fc(acts[1:])) == 2
    assert not conv.joins and not conv.mp_flows and old.mp is None and old.fastclosed
    assert p.count("CoreBug") == 0


def test_stop_single_path_after_the_servers_fin():
    p = Pair()
    p.established()
    p.inn(p.s_data_pkt(b"x" * 300, data_fin=True, fin=True))
    (flow,) = p.conv.flows.values()
    assert flow.remote_fin
    acts = p.conv.stop(p.now)
    seqs = sorted(parse_packet(a.data).seq for a in acts if parse_packet(a.data).dport == p.gport)
    assert (p.s_isn + 302) & M32 in seqs  # the guest's rcv_nxt: past its FIN


def test_stop_single_path_fast_open():
    """A Fast Open SYN whose data the server took: the ACK to the server at the guest's snd_nxt."""
    p = Pair()
    opts = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=1, ts_ecr=0)
    syn = make_packet(p.g_addr, p.s_addr, p.gport, p.sport, p.g_isn, 0, SYN, opts, b"tfo-data", v6=p.v6)
    _, sent = p.out(syn)
    p.g_nxt = (p.g_isn + 1 + 8) & M32
    synack = p.s_synack(sent)
    # the server acks the SYN data
    pkt = parse_packet(synack)
    b = bytearray(synack)
    struct.pack_into("!I", b, pkt.ip_hlen + 8, (p.g_isn + 1 + 8) & M32)
    struct.pack_into("!H", b, pkt.ip_hlen + 16, 0)
    struct.pack_into("!H", b, pkt.ip_hlen + 16, tcp_checksum(bytes(b), parse_packet(bytes(b))))
    p.inn(bytes(b))
    p.g_rcv = (p.s_isn + 1) & M32
    _, ack = p.out(p.g_ack())
    p.s_receive(ack)
    _, sent = p.out(p.g_data(b"more"))
    (flow,) = p.conv.flows.values()
    acts = p.conv.stop(p.now)
    srv = [parse_packet(a.data) for a in acts if parse_packet(a.data).dport == p.sport]
    assert srv and srv[0].seq == p.g_nxt


def test_a_bug_in_the_eviction_resets_leaves_no_orphan_multipath_state(monkeypatch):
    """Fault injection: were _reset_both to raise in _new_flow (handle catches it: CoreBug),
    the evicted flow is already out of conv.flows but MP.release never ran: its joins stay in
    conv.joins and its entry in conv.mp_flows, timers and all, for a flow nothing can expire."""
    p = MPair(2, config=mp_config(2, max_flows=1))
    p.go_multipath()
    p.join_up(1)
    conv = p.conv

    def boom(conv, flow):
        raise RuntimeError("injected")
    monkeypatch.setattr(MP, "stop_reset", boom)
    p.gport += 1
    p.out(p.g_syn())
    assert p.count("CoreBug") == 1
    assert not conv.mp_flows and not conv.joins, (len(conv.mp_flows), len(conv.joins))


# -- stopping with --stop-grace: closing() and new connections kept plain -------------------


def test_closing_counts_resettable_flows_with_both_fins_sent():
    """The shell waits (--stop-grace) only for flows whose data is all sent: both FINs seen,
    the guest's and the server's DATA_FIN, and stop() would still reset them."""
    p = Pair()
    p.established()
    assert p.conv.closing(p.now) == 0
    p.inn(p.s_data_pkt(b"x" * 300, data_fin=True, fin=True))  # the server is done
    assert p.conv.closing(p.now) == 0  # (the guest may send for a long time yet)
    p.out(p.g_fin())
    (flow,) = p.conv.flows.values()
    assert flow.local_fin and flow.remote_fin
    assert p.conv.closing(p.now) == 1
    assert p.conv.closing(p.now + 0.9) == 1 and p.conv.closing(p.now + 1.1) == 0  # (silent: done)
    p.conv.stop(p.now)  # reset: nothing left to wait for
    assert p.conv.closing(p.now) == 0


def test_a_flow_where_only_the_guest_closed_is_not_waited_for():
    p = Pair()
    p.established()
    p.out(p.g_fin())
    assert p.conv.closing(p.now) == 0


@pytest.mark.parametrize("v6", [False, True])
def test_while_stopping_a_new_guest_connection_passes_as_plain_tcp(v6):
    """Converted, it would be reset by stop() a moment later; plain, it outlives the daemon."""
    p = Pair(v6=v6)
    p.conv.stopping = True
    syn = p.g_syn()
    acts, sent = p.out(syn)
    assert acts == [ACCEPT] and sent == syn  # untouched: no MP_CAPABLE added
    assert not p.conv.flows and p.count("StopPlain") == 1


def test_while_stopping_a_peers_mp_capable_syn_passes_as_plain_tcp():
    from tests.unit.test_inbound import new_pair, peer_syn

    p = new_pair()
    p.conv.stopping = True
    syn = peer_syn(p)
    assert p.conv.handle(syn, Direction.IN, p.now) == [ACCEPT]
    assert not p.conv.flows and p.count("StopPlain") == 1


def test_while_stopping_known_flows_are_still_converted():
    p = Pair()
    p.established()
    p.conv.stopping = True
    _, sent = p.out(p.g_data(b"more"))
    assert sent is not None and p.count("StopPlain") == 0
    (flow,) = p.conv.flows.values()
    assert flow.state is State.ESTABLISHED
