"""A multipath flow whose last alive subflow closes joins again over every uplink that is up
(multipath._revive): before, only an uplink coming back brought a rejoin, and a flow whose
subflows died while their uplinks stayed up kept none for good, the guest's bytes dropped
("no live subflow") until it gave up (a random run of the hypothesis model:
test_multipath_model.py::test_subflows_dead_of_silence_beside_an_idle_join_rejoin).
Never after a join that failed to open, nor after the server's DATA_FIN (review of b5d97cb)."""

from __future__ import annotations

from middlebox.core import MULTIPATH as MP
from middlebox.core.table import State
from middlebox.core.table import SubflowInput as SI
from middlebox.core.table import SubflowState as SS
from middlebox.wire import Dss, mptcp_options, parse_packet

from tests.unit.test_core_harness import ACK, FIN, RST
from tests.unit.test_subflow_table import Join, MPair

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def _only_the_join_left(n_uplinks=1):
    """Subflow 1 stale and dead beside up1's join (the others, if any, closed): up1's join is
    the flow's last alive subflow."""
    p = MPair(n_uplinks)
    p.go_multipath()
    p.join_up(1)
    for upid in range(2, n_uplinks + 1):
        p.path(upid).state = SS.CLOSED
    conv, flow, mp = p.conv, p.flow, p.mp
    MP._event(conv, flow, mp.paths[0], SI.TIMER_STALE, p.now)
    MP._event(conv, flow, mp.paths[0], SI.TIMER_DEAD, p.now + 1)
    assert mp.paths[0].state is SS.CLOSED and p.path(1).state is SS.ESTABLISHED
    return p


def _bring_up(p, q):
    """The server answers join q's SYN and its third ACK: the actions of that ACK."""
    nj = Join(p, MP._join_syn(p.conv, p.flow, q))
    nj.c_isn = q.local_isn
    p.j_in(p.j_synack(nj))
    nj.s_rcv = 1
    acts = p.j_in(p.j_ack(nj))
    assert q.state is SS.ESTABLISHED
    return acts


def _syn_sources(p, acts):
    return sorted(parse_packet(a.data).src for a in acts if hasattr(a, "data") and p.label(a.data).startswith("syn@"))


def test_the_last_subflow_reset_by_the_server_brings_a_join_over_each_live_uplink():
    p = _only_the_join_left(2)
    j = p.joins[1]
    n = len(p.mp.paths)
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.mp.paths[1].state is SS.CLOSED
    assert _syn_sources(p, acts) == sorted(p.addr_of(u) for u in p.cfg.uplinks), p.classify(acts)
    assert len(p.mp.paths) == n + 2 and p.count("MPJoinRejoin") == 2


def test_with_its_uplink_down_the_flow_waits_for_it_to_come_back():
    p = _only_the_join_left(1)
    acts = p.conv.uplink_event("up1", False, p.now)
    assert p.mp.paths[1].state is SS.CLOSED
    assert [p.label(a.data) for a in acts] == ["rst+tcprst@1"]  # (the dead join's RST only)
    assert p.count("NoPathLeft") == 0 and not p.flow.fastclosed  # (no reset: it may come back)
    acts = p.conv.uplink_event("up1", True, p.now)  # (as before: its return rejoins)
    assert _syn_sources(p, acts) == [p.addr_of(p.cfg.uplinks[0])]


def test_a_join_that_fails_at_once_does_not_reopen_itself():
    """(Review of b5d97cb: a server refusing joins with a RST, or a middlebox stripping MP_JOIN
    from its SYN/ACK, had the revived join re-open at once, in a loop, until MAX_PATHS was used
    up; the uplink that came back then could not rejoin.)"""
    p = _only_the_join_left(2)
    conv, flow, mp = p.conv, p.flow, p.mp
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert len(_syn_sources(p, acts)) == 2
    n = len(mp.paths)
    for q in [q for q in mp.paths if q.state is SS.SYN_SENT]:
        nj = Join(p, MP._join_syn(conv, flow, q))
        nj.c_isn = q.local_isn
        acts = p.j_in(p.j_packet(nj, 0, nj.c_isn + 1, RST | ACK))  # refused
        assert q.state is SS.CLOSED and not _syn_sources(p, acts)
    assert len(mp.paths) == n < MP.MAX_PATHS
    acts = conv.uplink_event("up2", True, p.now)  # an uplink event still rejoins
    assert _syn_sources(p, acts) == [p.addr_of(p.cfg.uplinks[1])]


def test_no_join_after_the_servers_data_fin():
    """Linux refuses joins once its DATA_FIN is out (__mptcp_finish_join)."""
    p = _only_the_join_left(1)
    p.flow.remote_fin = True
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.mp.paths[1].state is SS.CLOSED and not _syn_sources(p, acts)


def test_a_subflow_1_rst_while_the_revived_joins_open_stays_from_the_guest():
    """Linux answers the REMOVE_ADDR 0 of subflow 1's death with a RST there; arriving while
    the revived joins are in their handshake it reached the guest and ended the flow they
    would carry (review of b5d97cb)."""
    p = _only_the_join_left(1)
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert _syn_sources(p, acts)
    acts, got = p.inn(p.s_packet(p.s_nxt, 0, RST))
    assert got is None and not any(hasattr(a, "data") and parse_packet(a.data).flags & RST
                                   and parse_packet(a.data).dst == p.g_bytes for a in acts), acts
    assert p.flow.mp is not None and any(q.state is SS.SYN_SENT for q in p.mp.paths)


def test_the_first_join_alive_again_prompts_the_guest_to_resend():
    """Its resends meanwhile went nowhere (no live subflow), and its RTO may have backed off
    for seconds: three duplicate ACKs once a join is up again, as when a subflow dies."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    p.data_on(1, size=1000)  # guest bytes out on the join, not acked
    assert mp.snd_nxt > mp.data_ack
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    (q,) = [q for q in mp.paths if q.state is SS.SYN_SENT]
    synth = p.count("DupAckSynth")
    acts = _bring_up(p, q)
    assert [p.label(a.data) for a in acts[1:]].count("g_ack") == 3 and p.count("DupAckSynth") == synth + 3


def _guest_rsts_in(p, acts):
    return [a for a in acts if hasattr(a, "data") and parse_packet(a.data).dst == p.g_bytes
            and parse_packet(a.data).flags & RST]


def test_a_flow_that_can_never_open_a_subflow_again_resets_the_guest():
    """MAX_PATHS used up (outbound joins take a new slot each): before, the guest resent into
    nothing ("no live subflow") until its own timeout, minutes later."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    old = mp.paths[1]
    _max_paths_used(p)
    old2 = mp.paths[-1]
    q = MP.Path(len(mp.paths), flow, old2.uplink, old2.version, old2.local, old2.lport + 1, old2.remote, old2.rport, p.now)
    q.state = SS.CLOSED
    mp.paths.append(q)  # (all 8 used)
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert old.state is SS.CLOSED and not _syn_sources(p, acts)
    assert _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 1 and flow.fastclosed
    seq = parse_packet(_guest_rsts_in(p, acts)[0].data).seq
    assert seq == (flow.server_isn + flow.rcv_rel) & 0xFFFFFFFF  # at the guest's rcv_nxt


def test_a_flow_with_no_address_left_to_join_resets_the_guest():
    """The server forbade joins to its initial address (C bit, or REMOVE_ADDR 0) and
    announced none: no subflow can come, whichever uplink returns."""
    p = _only_the_join_left(1)
    p.flow.no_initial_join = True
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert not _syn_sources(p, acts) and _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 1


def test_a_subflow_dead_while_none_was_alive_is_removed_once_a_join_is_up():
    """Its uplink went down while it was the flow's last alive subflow: no subflow could carry
    the REMOVE_ADDR then, and none was sent later, so the server kept resending on it until
    its own timers gave up. The next join up carries it (never an id in use again)."""
    from middlebox.wire import RemoveAddr, mptcp_options

    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    old_id = mp.paths[1].addr_id
    acts = conv.uplink_event("up1", False, p.now)
    assert mp.paths[1].state is SS.CLOSED and mp.rm_owed == [old_id]
    assert not any("rm_addr" in p.label(a.data) for a in acts if hasattr(a, "data"))
    acts = conv.uplink_event("up1", True, p.now)
    (q,) = [q for q in mp.paths if q.state is SS.SYN_SENT]
    assert q.addr_id != old_id  # (a rejoin takes a fresh id)
    acts = _bring_up(p, q)
    rms = [o for a in acts[1:] for o in mptcp_options(a.data, parse_packet(a.data)) if type(o) is RemoveAddr]
    assert rms == [RemoveAddr((old_id,))] and p.count("RmAddrOwedTX") == 1 and mp.rm_owed == []


def _max_paths_used(p):
    conv, flow, mp = p.conv, p.flow, p.mp
    old = mp.paths[1]
    while len(mp.paths) < MP.MAX_PATHS - 1:  # earlier joins, closed (link flaps); one slot left
        q = MP.Path(len(mp.paths), flow, old.uplink, old.version, old.local, old.lport + len(mp.paths),
                    old.remote, old.rport, p.now)
        q.state = SS.CLOSED
        mp.paths.append(q)


def test_a_revived_join_refused_with_the_last_slot_resets_the_guest():
    """(Review: the check ran only when an alive subflow closed, so a flow whose last
    revived join was refused, or gave up its SYNs, with MAX_PATHS used up waited for ever.)"""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    _max_paths_used(p)
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    (q,) = [q for q in mp.paths if q.state is SS.SYN_SENT]  # the revived join, the 8th subflow
    assert len(mp.paths) == MP.MAX_PATHS and not _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 0
    nj = Join(p, MP._join_syn(conv, flow, q))
    nj.c_isn = q.local_isn
    acts = p.j_in(p.j_packet(nj, 0, nj.c_isn + 1, RST | ACK))  # refused
    assert q.state is SS.CLOSED and _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 1


def test_a_flow_reset_for_want_of_a_path_is_forgotten_soon():
    """(Review: it stayed ESTABLISHED, its table entry and multipath slot held, for the
    ESTABLISHED timeout: nothing comes back to close it.)"""
    p = _only_the_join_left(1)
    flow = p.flow
    flow.no_initial_join = True
    j = p.joins[1]
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.count("NoPathLeft") == 1 and flow.fastclosed
    expired = p.count("FlowExpired")
    p.conv.tick(p.now + MP.OVER_KEEP / 2)
    assert list(p.conv.flows.values()) == [flow] and p.conv.mp_flows
    flow.last = p.now + 5  # a late packet of the flow: kept while they come (review of d952ba3)
    p.conv.tick(p.now + MP.OVER_KEEP)
    assert list(p.conv.flows.values()) == [flow]
    assert MP._join_peer(p.conv, flow, p.mp, (9, p.mp.server[:-1] + b"\x63", 0), p.now) == []  # (nor joins)
    p.conv.tick(p.now + 5 + MP.OVER_KEEP)
    assert not p.conv.flows and not p.conv.mp_flows and flow.mp is None
    assert p.count("FlowExpired") == expired + 1


# -- a close no subflow can carry (multipath._stranded) ---------------------------------------


def _last_join_reset(p):
    j = p.joins[1]
    return p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))


def test_a_flow_stranded_after_the_servers_data_fin_resets_the_guest_soon():
    """Every subflow dead after the server's DATA_FIN: Linux takes no join then, so nothing
    can carry the guest's bytes or its FIN; before, the guest resent into nothing until its
    own timeout (a FIN_WAIT2 guest still reading: for ever). Reset STRANDED_WAIT later."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    flow.remote_fin = True
    acts = _last_join_reset(p)
    assert not _syn_sources(p, acts) and not _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 0
    assert mp.stranded_at == p.now and MP.next_deadline(conv) <= p.now + MP.STRANDED_WAIT
    assert not _guest_rsts_in(p, conv.tick(p.now + MP.STRANDED_WAIT / 2))
    acts = conv.tick(p.now + MP.STRANDED_WAIT)
    assert _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 1 and flow.fastclosed
    assert not _guest_rsts_in(p, conv.tick(p.now + 2 * MP.STRANDED_WAIT))  # (once)


def test_a_flow_stranded_once_the_server_acked_the_guests_fin_resets_the_guest():
    """The guest's FIN data-acked (the server's connection in CLOSE_WAIT takes no join), the
    server's data still to come: the guest, in FIN_WAIT2, would wait for it for ever."""
    p = _only_the_join_left(1)
    p.flow.local_fin = p.flow.local_fin_acked = True
    acts = _last_join_reset(p)
    assert not _syn_sources(p, acts)
    assert _guest_rsts_in(p, p.conv.tick(p.now + MP.STRANDED_WAIT)) and p.count("NoPathLeft") == 1


def test_a_close_complete_in_the_wait_is_not_reset():
    """The flow's close completed (both FINs acked) while it waited: no reset, no deadline."""
    p = _only_the_join_left(1)
    flow, mp = p.flow, p.mp
    flow.remote_fin = True
    _last_join_reset(p)
    assert mp.stranded_at
    flow.local_fin = flow.local_fin_acked = flow.remote_fin_acked = True
    assert not _guest_rsts_in(p, p.conv.tick(p.now + MP.STRANDED_WAIT)) and p.count("NoPathLeft") == 0
    assert not mp.stranded_at and not flow.fastclosed


def test_a_guest_fin_the_server_has_not_acked_rejoins():
    """The guest closed and the path carrying its DATA_FIN died: the server may never have had
    it and still takes joins, so the flow joins again (as before its FIN) rather than being
    reset; so too when an uplink comes back."""
    p = _only_the_join_left(1)
    flow = p.flow
    p.out(p.g_fin())
    assert flow.state is State.CLOSING and flow.local_fin
    acts = _last_join_reset(p)
    assert _syn_sources(p, acts) == [p.addr_of(p.cfg.uplinks[0])] and not p.mp.stranded_at
    p2 = _only_the_join_left(1)
    p2.out(p2.g_fin())
    p2.conv.uplink_event("up1", False, p2.now)
    assert not p2.mp.stranded_at and p2.count("NoPathLeft") == 0  # (its uplink may come back)
    assert _syn_sources(p2, p2.conv.uplink_event("up1", True, p2.now)) == [p2.addr_of(p2.cfg.uplinks[0])]


def test_no_rejoin_on_an_uplinks_return_after_the_servers_data_fin():
    p = _only_the_join_left(1)
    p.flow.remote_fin = True
    p.conv.uplink_event("up1", False, p.now)
    assert p.mp.stranded_at
    assert not _syn_sources(p, p.conv.uplink_event("up1", True, p.now))


def test_the_guests_reset_past_the_servers_fin_goes_at_its_rcv_nxt():
    """The server's FIN went to the guest after its last byte, not yet acked: the guest's
    rcv_nxt is one past it, and a RST at the FIN lies outside its window (ignored)."""
    p = _only_the_join_left(1)
    flow, mp = p.flow, p.mp
    fin = flow.rcv_rel + 500
    mp.fwd_end = fin
    flow.remote_fin = True
    flow.remote_fin_seq = (flow.server_isn + fin) & 0xFFFFFFFF
    assert MP.guest_rst_at(flow, mp) == (flow.rcv_rel, fin + 1)
    flow.rcv_rel = fin + 1  # (acked)
    assert MP.guest_rst_at(flow, mp) == (fin + 1,)


def test_a_join_refused_after_the_guests_fin_strands_the_flow():
    """The server had the guest's DATA_FIN (its ack lost with the path): it refuses the
    rejoin (a RST to its SYN, Linux subflow_check_req), and no other would fare better: the
    guest is reset rather than resending its FIN into nothing; no further rejoin."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    p.out(p.g_fin())
    _last_join_reset(p)
    (q,) = [q for q in mp.paths if q.state is SS.SYN_SENT]
    nj = Join(p, MP._join_syn(conv, flow, q))
    nj.c_isn = q.local_isn
    acts = p.j_in(p.j_packet(nj, 0, nj.c_isn + 1, RST | ACK))  # refused
    assert q.state is SS.CLOSED and mp.fin_refused and mp.stranded_at and not _guest_rsts_in(p, acts)
    assert not _syn_sources(p, conv.uplink_event("up1", True, p.now))
    assert _guest_rsts_in(p, conv.tick(p.now + MP.STRANDED_WAIT)) and p.count("NoPathLeft") == 1


# -- review of ffa262f: the stranded close ----------------------------------------------------

def _close_on_the_join(p):
    """Subflow 1 dead, the join carries the whole close: the guest's FIN, the server's
    DATA_ACK of it, the server's DATA_FIN, the guest's ACK of it (a clean close)."""
    conv, flow, mp = p.conv, p.flow, p.mp
    j = p.joins[1]
    p.out(p.g_fin())
    assert flow.state is State.CLOSING and flow.local_fin
    p.c_dack = (p.g_nxt - p.g_isn) & M32  # (the DATA_FIN included)
    p.j_in(p.j_ack(j))
    assert mp.data_ack > mp.snd_nxt  # the converter knows its DATA_FIN is data-acked
    dsn = (p.s_idsn + p.s_drel) & M64
    dfin = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=dsn, dsn64=True, subflow_seq=0,
               data_len=1, data_fin=True)
    p.j_in(p.j_ack(j, mptcp=(dfin,)))
    assert flow.remote_fin
    p.g_rcv = (p.s_isn + p.s_drel + 1) & M32
    p.out(p.g_ack())
    assert flow.remote_fin_acked
    return j


def test_a_close_completed_on_a_join_is_not_reset_when_that_join_dies_later():
    """Both FINs data-acked on the join (the guest is in TIME_WAIT or closed): its uplink going
    down afterwards must not count NoPathLeft nor RST the guest. local_fin_acked is only
    ever set by a subflow-1 DATA_ACK (converter._in_segment): _stranded took the finished
    flow for a stranded one (review of ffa262f)."""
    p = _only_the_join_left(1)
    _close_on_the_join(p)
    flow, mp = p.flow, p.mp
    acts = p.conv.uplink_event("up1", False, p.now)
    acts += p.conv.tick(p.now + MP.STRANDED_WAIT + 0.01)
    assert not _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 0, (
        flow.state, flow.local_fin_acked, flow.remote_fin_acked, mp.stranded_at)


def test_a_guest_fin_data_acked_on_a_join_is_known_acked():
    """The server data-acked the guest's DATA_FIN on a join: Linux's connection is in
    CLOSE_WAIT (or beyond) and takes no join. _joinable must say so (no rejoin that can only
    be refused); before the review of ffa262f it reads local_fin_acked, which a join's DATA_ACK never sets."""
    p = _only_the_join_left(1)
    j = p.joins[1]
    flow, mp = p.flow, p.mp
    p.out(p.g_fin())
    p.c_dack = (p.g_nxt - p.g_isn) & M32
    p.j_in(p.j_ack(j))
    assert mp.data_ack > mp.snd_nxt
    assert not MP._joinable(flow, mp), "the DATA_FIN was data-acked: the server takes no join"


def test_an_uplink_flap_during_the_rejoin_after_the_guests_fin_does_not_strand_the_flow():
    """The guest closed, the path carrying its DATA_FIN died (unacked), the flow rejoins over
    up1 (it may: the server may lack the DATA_FIN). up1 then goes down while that join
    is still in its handshake: a local event, no refusal by the server. As for an ESTABLISHED
    flow (test_with_its_uplink_down_the_flow_waits_for_it_to_come_back) the flow should wait
    for the uplink; before the review of ffa262f _event takes any opening join's CLOSED for a refusal
    (fin_refused), _stranded holds, and the guest is reset a second later."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    p.out(p.g_fin())
    assert flow.state is State.CLOSING and not flow.local_fin_acked
    j = p.joins[1]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))  # the last alive subflow dies
    assert any(q.state is SS.SYN_SENT for q in mp.paths)  # rejoining
    acts = conv.uplink_event("up1", False, p.now)
    acts += conv.tick(p.now + MP.STRANDED_WAIT + 0.01)
    assert not _guest_rsts_in(p, acts) and p.count("NoPathLeft") == 0, (mp.fin_refused, mp.stranded_at)
    acts = conv.uplink_event("up1", True, p.now + 2)
    assert any(p.label(a.data).startswith("syn@") for a in acts), "the uplink's return rejoins"


def test_a_closing_join_reset_after_the_guests_fin_is_no_refusal_of_a_join():
    """A join the server closed (its FIN: a path-manager removal) and then reset, after the
    guest's FIN, while subflow 1 is alive: no join was refused, yet fin_refused was set
    (the else branch of _event: `was` not in ALIVE), and the flow will never rejoin when
    subflow 1 dies later with the DATA_FIN unacked."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    j = p.joins[1]
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + 1, FIN | ACK, (p.dack(),)))
    assert p.path(1).state is SS.CLOSING
    j.s_nxt += 1
    p.out(p.g_fin())  # the guest's FIN, its DATA_FIN on subflow 1 (alive), not acked yet
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.path(1).state is SS.CLOSED
    # subflow 1 then dies with the DATA_FIN unacked (the server may lack it): the flow should
    # rejoin over its uplinks, as test_a_guest_fin_the_server_has_not_acked_rejoins says
    p0 = mp.paths[0]
    MP._event(conv, flow, p0, SI.TIMER_STALE, p.now)
    acts = MP._event(conv, flow, p0, SI.TIMER_DEAD, p.now + 1)
    assert p0.state is SS.CLOSED and not flow.local_fin_acked
    assert any(p.label(a.data).startswith("syn@") for a in acts), (
        "no rejoin", mp.fin_refused, mp.stranded_at)


def test_the_rejoin_after_the_guests_fin_carries_the_data_fin_or_prompts_the_guest():
    """The guest's FIN (all its bytes data-acked) went on the join that then died; the flow
    rejoins. When the new join is up, nothing re-sends the DATA_FIN: _j_established
    prompts the guest only when mp.snd_nxt > mp.data_ack, which excludes a lone FIN; the
    close waits for the guest's next FIN resend, an RTO backed off while no path existed."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    p.out(p.g_fin())
    j = p.joins[1]
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    (q,) = [q for q in mp.paths if q.state is SS.SYN_SENT]
    acts = _bring_up(p, q)
    labels = [p.label(a.data) for a in acts[1:]]
    dfin = [a for a in acts[1:] if any(type(o) is Dss and o.data_fin for o in
                                        mptcp_options(a.data, parse_packet(a.data)))]
    assert dfin or labels.count("g_ack") >= 3, labels


def test_a_pathless_flow_that_becomes_unjoinable_later_is_still_reset():
    """Every subflow dead, the join's uplink down: the flow waits for it (joinable). Then the
    server's DATA_FIN comes on subflow 1 (the converter gave subflow 1 up, the server did
    not: no RST, the REMOVE_ADDR owed): the flow is now one no join can carry, yet _stranded
    is only evaluated when a subflow closes (_event), so stranded_at is never set: no reset,
    no rejoin on the uplink's return, the guest's bytes dropped until it gives up."""
    p = _only_the_join_left(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    conv.uplink_event("up1", False, p.now)
    assert MP._pathless(flow, mp) and not mp.stranded_at
    p.inn(p.s_bare_data_fin(fin=True))
    assert flow.remote_fin and MP._stranded(flow, mp)
    acts = conv.tick(p.now + MP.STRANDED_WAIT + 0.01)
    acts += conv.tick(p.now + 2 * MP.STRANDED_WAIT + 0.02)
    assert _guest_rsts_in(p, acts), ("never reset", mp.stranded_at)
