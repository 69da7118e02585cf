"""Adversarial review of the ADD_ADDR / REMOVE_ADDR / C bit change (66c3cd6): each test failed before its fix."""

from __future__ import annotations

from middlebox.core import Config, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState
from middlebox.wire import MpCapable, RemoveAddr, parse_packet

from tests.unit.test_core_harness import M32, M64
from tests.unit.test_subflow_table import ACK, UPLINKS, Join, MPair, wire_check
from tests.unit.test_multipath_add_addr import SERVER2_4, _announce, _sf1_ack_with, _syns_to

SS = SubflowState


def _c_bit_pair(n_uplinks=2, **cfg):
    """A flow whose server set the MP_CAPABLE C bit, established (first data acked)."""
    kw = dict(uplinks=UPLINKS[:n_uplinks], join_after_bytes=0, join_after_ms=0)
    kw.update(cfg)
    p = MPair(n_uplinks, config=Config(**kw))
    _, syn = p.out(p.g_syn())
    p.inn(p.s_synack(syn, mptcp=(MpCapable(1, 0x01 | 0x20, p.s_key),)))
    p.g_rcv = (p.s_isn + 1) & M32
    _, ack = p.out(p.g_ack())
    p.s_receive(ack)
    return p


def _joins_of(p, actions):
    """Join objects (server side) for the join SYNs among `actions`."""
    return [Join(p, a.data) for a in actions if isinstance(a, Inject)
            and parse_packet(a.data).flags == 0x02]


def _up(p, j):
    """SYN/ACK and fourth ACK on join j (any remote address): ESTABLISHED."""
    p.j_in(p.j_synack(j))
    j.s_rcv = 1
    p.j_in(p.j_ack(j))
    path = p.conv.joins[j.key]
    assert path.state is SS.ESTABLISHED
    return path


def test_rejoin_to_an_announced_address_after_an_uplink_flap():
    """C bit: the only targets are announced addresses. up2 goes down and up again: the flow
    should join the announced address over up2 again (uplink_event calls _join_peer for that),
    but _limit (1 + uplinks x targets = 3) is compared with len(mp.paths), dead paths
    included, so the flow never gets up2 back."""
    p = _c_bit_pair()
    _, sent = p.out(p.g_data(b"hello"))
    p.s_receive(sent)
    p.inn(p.s_ack())
    acts, _ = p.inn(_sf1_ack_with(p, _announce(p)))
    for j in _joins_of(p, acts):
        _up(p, j)
    mp = p.flow.mp
    assert len(mp.paths) == 3
    p.conv.uplink_event("up2", False, p.now + 0.01)
    acts = p.conv.uplink_event("up2", True, p.now + 0.02)
    syns = _syns_to(acts, SERVER2_4)
    assert len(syns) == 1 and syns[0].src == p.addr_of(UPLINKS[1])


def test_rejoin_to_an_announced_address_after_a_flap_without_c_bit():
    p = MPair(2)
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    acts, _ = p.inn(_sf1_ack_with(p, _announce(p)))
    for j in _joins_of(p, acts):
        _up(p, j)
    assert len(p.flow.mp.paths) == 5
    p.conv.uplink_event("up2", False, p.now + 0.01)
    acts = p.conv.uplink_event("up2", True, p.now + 0.02)
    assert len(_syns_to(acts, p.flow.mp.server)) == 1
    assert len(_syns_to(acts, SERVER2_4)) == 1  # the announced address over up2 too


def test_a_dead_join_to_an_announced_address_does_not_remove_its_uplinks_live_subflow():
    """One uplink, two server addresses: two joins from up1 share address id 1. The one to
    the announced address goes stale, then dead: our REMOVE_ADDR(1) makes the server (Linux:
    every subflow whose remote id is 1) close the healthy join to the initial address too."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    acts, _ = p.inn(_sf1_ack_with(p, _announce(p)))
    (j2,) = _joins_of(p, acts)
    pa2 = _up(p, j2)
    pa1 = p.path(1)
    assert pa1.addr_id == pa2.addr_id == 1
    # guest data until some goes on the join to the announced address
    for _ in range(400):
        p.g_send(1, 1000)
        if pa2.snd_nxt > pa2.snd_una:
            break
    assert pa2.snd_nxt > pa2.snd_una
    # subflow 1 progresses (the server acks what it got there); pa2 never does
    p.now += 0.05
    p.c_dack = p.flow.mp.data_ack
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    j1 = p.joins[1]
    p.j_in(p.j_ack(j1, ack=pa1.snd_nxt))  # and the join to the initial address: all acked
    assert pa1.snd_una == pa1.snd_nxt
    p.conv.tick(pa2.progress_at + max(MP.STALE_MIN, 4 * pa2.srtt) + 0.001)
    assert pa2.state is SS.STALE
    acts = p.conv.tick(pa2.stale_at + MP.DEAD_AFTER + 0.001)
    assert pa2.state is SS.CLOSED and pa1.state in MP.ALIVE
    live_ids = {q.addr_id for q in p.flow.mp.paths if q.state in MP.ALIVE and q.index > 0}
    for a in acts:
        if isinstance(a, Inject):
            _, _, opts = wire_check(a.data, True)
            for o in opts:
                if type(o) is RemoveAddr:
                    assert not set(o.addr_ids) & live_ids, (o, live_ids)


def test_c_bit_flow_keeps_its_super_packet_mappings_when_no_join_can_start():
    """C bit, nothing announced yet: `start` runs at the join policy, finds no target and
    stays single-path, but `_runs_of_single_path` already dropped flow.gso_maps. A guest
    retransmission of the second half of a super-packet then gets a mapping of its own
    inside the server's partly received mapping (Linux: DSSNotMatching -> fallback/reset)."""
    p = _c_bit_pair(join_after_bytes=1 << 40, join_after_ms=1000)
    _, sent = p.out(p.g_data(b"hello"))
    p.s_receive(sent)
    p.inn(p.s_ack())
    start = p.g_nxt
    _, sent = p.out(p.g_data(b"x" * 3000))  # a super-packet
    pkt, _, (dss,) = wire_check(sent, False)
    assert dss.data_len == 3000 and p.flow.gso_maps is not None
    p.now += 2  # the join policy: `start` runs on the next server segment
    p.inn(p.s_packet(p.s_nxt, start, ACK, (p.s_dss_ack(data_ack_rel=(start - p.g_isn) & M32),)))
    assert p.flow.mp is None and p.flow.no_join
    # the guest resends its second half
    _, sent = p.out(p.g_data(b"x" * 1500, seq=(start + 1500) & M32))
    _, _, (dss,) = wire_check(sent, False)
    assert (dss.data_len, dss.data_seq) == (3000, (p.idsn_c + ((start - p.g_isn) & M32)) & M64)


def test_remove_addr_of_the_initial_address_stops_rejoins_to_it():
    """RFC 8684 §3.4.2: after REMOVE_ADDR the receiver SHOULD no longer use that address for
    new subflows. REMOVE_ADDR(0) names the server's initial address: a rejoin after an uplink
    flap still goes there."""
    p = MPair(2)
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), RemoveAddr((0,)))))
    p.conv.uplink_event("up2", False, p.now + 0.01)
    acts = p.conv.uplink_event("up2", True, p.now + 0.02)
    assert not _syns_to(acts, p.flow.mp.server)


def test_add_addr_on_a_segment_with_an_unacceptable_ack_changes_nothing():
    """RFC 8684 §3.4.1: the receiver MUST undertake standard TCP validity checks (RFC 5961)
    before acting on ADD_ADDR; a segment acking bytes the guest never sent is not acceptable
    (RFC 9293 §3.10.7.4; joins already check it in multipath._classify, subflow 1 does not)."""
    from tests.unit.test_multipath_add_addr import _echoes, _single_path
    for delta in (0x100000, -0x50000000):  # beyond SND.NXT; 2^30 behind (the joins' bound)
        p = _single_path()
        acts, _ = p.inn(p.s_packet(p.s_nxt, (p.g_nxt + delta) & M32, ACK, (_announce(p),)))
        assert not _echoes(acts) and p.count("AddAddrRX") == 0 and not p.flow.peer_addrs


def test_add_addr_acking_the_guests_fin_is_taken():
    """After the guest's FIN the server's ACK acks one past the guest's last data byte (the
    FIN's sequence number): acceptable, so an ADD_ADDR on it is echoed and kept (it was
    refused as beyond SND.NXT: the data end did not count the FIN)."""
    from tests.unit.test_multipath_add_addr import _echoes, _single_path
    p = _single_path()
    _, sent = p.out(p.g_fin())
    acts, _ = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (_announce(p),)))
    assert _echoes(acts) and p.count("AddAddrRX") == 1 and p.flow.peer_addrs
    # one past the FIN is still too far
    p = _single_path()
    p.out(p.g_fin())
    acts, _ = p.inn(p.s_packet(p.s_nxt, (p.g_nxt + 1) & M32, ACK, (_announce(p, addr_id=9),)))
    assert not _echoes(acts) and p.count("AddAddrRX") == 0
