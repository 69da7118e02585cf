"""A subflow that dies by the clocks (stale, then dead) while its uplink stays up is joined
again over that uplink REJOIN_WAIT later (multipath._retry_later, _retry_joins): before stop
48 rejoins came only when an uplink came back up or when no subflow was left (_revive), so a
path black-holed for a few seconds beyond our uplink cost the flow that uplink's share for
good. A retry that fails to open is owed again, the wait doubling; none over an uplink that
is down (uplink_event's rejoin covers it), after the server's RST, once the flow closes, or
beyond MAX_PATHS - 1 subflows."""

from __future__ import annotations

import socket

import pytest

from middlebox.core import Direction
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowInput as SI
from middlebox.core.table import SubflowState as SS
from middlebox.wire import AddAddr, MpFastclose, add_addr_hmac, parse_packet

from tests.unit.test_core_harness import ACK, FIN, RST
from tests.unit.test_revive import _bring_up
from tests.unit.test_subflow_table import Join, MPair, in_state


def _dead_by_clocks():
    """in_state(STALE) for up1's join, then DEAD_AFTER on: dead by the tick, up2's join and
    subflow 1 alive. Returns (pair, the time of death)."""
    p = in_state(SS.STALE)
    pa = p.path(1)
    t = pa.stale_at + MP.DEAD_AFTER + 0.001
    p.now = t
    p.conv.tick(t)
    assert pa.state is SS.CLOSED and p.count("SubflowDead") == 1
    return p, t


def _syns(p, acts) -> list[str]:
    """The uplinks (up<id>) of the join SYNs among `acts`, new or retransmitted."""
    names = {p.addr_of(u): f"up{u.id}" for u in p.cfg.uplinks}
    out = []
    for a in acts:
        if hasattr(a, "data") and p.label(a.data).startswith("syn@"):
            out.append(names[parse_packet(a.data).src])
    return out


def test_a_join_dead_by_the_clocks_is_opened_again_over_its_uplink_after_the_wait():
    p, t = _dead_by_clocks()
    mp = p.mp
    n = len(mp.paths)
    assert mp.retry_at == t + MP.REJOIN_WAIT
    assert MP.next_deadline(p.conv) <= mp.retry_at
    assert _syns(p, p.conv.tick(t + MP.REJOIN_WAIT - 0.01)) == []
    acts = p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    assert _syns(p, acts) == ["up1"], p.classify(acts)
    q = mp.paths[-1]
    assert len(mp.paths) == n + 1 and q.uplink.id == 1 and q.retry and q.state is SS.SYN_SENT
    assert p.count("MPJoinRetry") == 1 and p.count("MPJoinRejoin") == 0
    assert mp.retry_at == 0.0 and mp.retries == []
    p.now = t + MP.REJOIN_WAIT + 0.01
    _bring_up(p, q)
    assert q.state is SS.ESTABLISHED
    # the rejoined subflow carries guest data again
    for _ in range(200):
        p.g_send(1, 1000)
        if q.snd_nxt > 1:
            break
    assert q.snd_nxt > q.snd_una, q


def test_a_retry_that_gets_no_answer_is_owed_again_after_twice_the_wait():
    p, t = _dead_by_clocks()
    mp = p.mp
    p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    q = mp.paths[-1]
    # the SYN goes unanswered: retransmitted, then given up (the path is still black)
    while q.state is SS.SYN_SENT:
        p.conv.tick(q.timer + 0.0001)
    gave_up = q.timer
    assert q.state is SS.CLOSED and p.count("MPJoinTimeout") == 1
    assert mp.retries and abs(mp.retry_at - (gave_up + 2 * MP.REJOIN_WAIT)) < 0.01, (mp.retry_at, gave_up)
    acts = p.conv.tick(mp.retry_at + 0.001)
    assert _syns(p, acts) == ["up1"] and p.count("MPJoinRetry") == 2 and mp.paths[-1].retry


def test_a_first_join_that_fails_to_open_is_not_retried():
    """An uplink that never reached the server (the first SYN given up) is not tried again
    by the clock (MULTIPATH.md §2: give up on that uplink); only a retry's failure is."""
    p = in_state(SS.SYN_SENT)
    q = p.path(1)
    while q.state is SS.SYN_SENT:
        p.conv.tick(q.timer + 0.0001)
    assert q.state is SS.CLOSED and p.mp.retries == [] and not p.mp.retry_at


def test_no_retry_over_an_uplink_that_went_down_it_rejoins_when_it_comes_back():
    p, t = _dead_by_clocks()
    up1 = p.path(1).uplink
    p.conv.uplink_event(up1.name, False, t + 0.5)
    assert _syns(p, p.conv.tick(t + MP.REJOIN_WAIT + 0.001)) == []
    assert p.count("MPJoinRetry") == 0 and p.mp.retry_at == 0.0
    acts = p.conv.uplink_event(up1.name, True, t + 3)
    assert _syns(p, acts) == ["up1"] and p.count("MPJoinRejoin") == 1


def test_no_retry_after_the_server_reset_the_subflow():
    p = in_state(SS.ESTABLISHED)
    j = p.joins[1]
    p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    assert p.path(1).state is SS.CLOSED
    assert p.mp.retries == [] and not p.mp.retry_at


def test_no_retry_while_a_subflow_over_that_uplink_is_open_again():
    p, t = _dead_by_clocks()
    up1 = p.path(1).uplink
    p.conv.uplink_event(up1.name, False, t + 0.1)
    p.conv.uplink_event(up1.name, True, t + 0.2)  # rejoined by uplink_event
    assert p.count("MPJoinRejoin") == 1
    n = len(p.mp.paths)
    p.conv.tick(t + MP.REJOIN_WAIT + 0.001)  # (the rejoin's SYN goes again: its own timer)
    assert len(p.mp.paths) == n and p.count("MPJoinRetry") == 0


def test_no_retry_once_the_server_takes_no_join():
    """The server forbade its initial address (REMOVE_ADDR of id 0) meanwhile: no join to it."""
    p, t = _dead_by_clocks()
    p.flow.no_initial_join = True
    acts = p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    assert _syns(p, acts) == [] and p.count("MPJoinRetry") == 0 and p.mp.retry_at == 0.0


def test_retries_keep_the_last_subflow_slot_for_an_uplink_that_comes_back():
    p, t = _dead_by_clocks()
    mp = p.mp
    while len(mp.paths) < MP.MAX_PATHS - 1:  # slots spent by earlier subflows
        mp.paths.append(type(mp.paths[1])(len(mp.paths), p.flow, None, mp.version, b"", 0, b"", 0, t))
        mp.paths[-1].state = SS.CLOSED
    acts = p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    assert _syns(p, acts) == [] and p.count("MPJoinRetry") == 0
    assert len(mp.paths) == MP.MAX_PATHS - 1


def test_each_death_waits_longer_and_the_wait_is_capped():
    p, t = _dead_by_clocks()
    mp = p.mp
    waits = []
    for _ in range(MP.REJOIN_DOUBLINGS + 2):
        mp.retry_n += 1  # (as after that many retries)
        mp.retry_at = 0.0
        mp.retries = []
        MP._retry_later(p.flow, mp, p.path(2), t)
        waits.append(round(mp.retry_at - t, 3))
    assert waits == [MP.REJOIN_WAIT * (1 << min(n, MP.REJOIN_DOUBLINGS))
                     for n in range(1, MP.REJOIN_DOUBLINGS + 3)], waits


def test_stale_then_dead_by_the_event_table_owes_a_retry_and_link_down_does_not():
    p = in_state(SS.STALE)
    conv, flow, mp = p.conv, p.flow, p.mp
    MP._event(conv, flow, p.path(2), SI.LINK_DOWN, p.now)
    assert mp.retries == []
    MP._event(conv, flow, p.path(1), SI.TIMER_DEAD, p.now)
    assert [e[0] for e in mp.retries] == [1]


# -- review of 308cbeb ------------------------------------------------------------------------------

M32 = 0xFFFFFFFF
SERVER2 = socket.inet_aton("203.0.113.80")


def _syn_tuples(acts):
    """(src, dst, dport) of every bare SYN among the actions."""
    out = []
    for a in acts:
        if hasattr(a, "data"):
            pkt = parse_packet(a.data)
            if pkt.flags == 0x02:
                out.append((pkt.src, pkt.dst, pkt.dport))
    return out


def test_retry_to_an_announced_address_without_port_is_opened():
    """ADD_ADDR without a port (Linux's usual form) is kept as (id, addr, None); the join to
    it uses rport = mp.sport (_join_peer: `port or mp.sport`), so the retry entry is
    (uid, addr, mp.sport). _retry_joins requires a peer_addrs entry with a[2] == rport:
    None != mp.sport, so the owed retry is dropped as if the server had removed the address."""
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    p.join_up(2)
    conv, flow, mp = p.conv, p.flow, p.mp
    mac = add_addr_hmac(p.s_key, p.c_key, 7, SERVER2, None)
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (AddAddr(False, 7, SERVER2, None, mac),)))
    assert flow.peer_addrs == [(7, SERVER2, None)]
    q = next(q for q in mp.paths if q.remote == SERVER2 and q.uplink.id == 1)
    assert q.rport == mp.sport
    _bring_up(p, q)
    MP._event(conv, flow, q, SI.TIMER_STALE, p.now)
    MP._event(conv, flow, q, SI.TIMER_DEAD, p.now + 1)
    assert q.state is SS.CLOSED
    assert [e[:3] for e in mp.retries] == [(1, SERVER2, mp.sport)] and mp.retry_at  # owed ...
    acts = conv.tick(mp.retry_at + 0.001)
    # ... but never opened (the address is still announced, up1 is up, slots are free)
    assert p.count("MPJoinRetry") == 1, _syn_tuples(acts)
    assert (p.addr_of(p.cfg.uplinks[0]), SERVER2, mp.sport) in _syn_tuples(acts)


@pytest.mark.parametrize("flags", [ACK, RST | ACK])
def test_no_retry_join_after_the_server_fastclosed_the_connection(flags):
    """A join dead by the clocks owes a retry; the server then ends the connection with
    MP_FASTCLOSE on the other join (multipath._fastclosed: every subflow closed,
    flow.fastclosed, the guest reset; Linux sends it on every subflow, and on a join only
    when subflow 1 is gone). The flow's table state stays ESTABLISHED, so _joinable holds
    and the owed retry opens a join SYN for a connection that is gone (_join_peer and the
    _revive hook skip fastclosed flows; _retry_joins and the _retry_later hook do not)."""
    p, t = _dead_by_clocks()
    mp, flow = p.mp, p.flow
    assert mp.retries and mp.retry_at
    # subflow 1 gone too (its uplink unknown, suspect, then down: no retry owed for it)
    MP._event(p.conv, flow, mp.paths[0], SI.LINK_DOWN, t + 0.2)
    assert mp.paths[0].state is SS.CLOSED and [e[0] for e in mp.retries] == [1]
    j = p.joins[2]
    p.now = t + 0.5
    p.conv.handle(p.j_ack(j, flags, mptcp=(MpFastclose(p.c_key),)), Direction.LOCAL, p.now)
    assert flow.fastclosed and all(q.state is SS.CLOSED for q in mp.paths)
    assert p.count("FastCloseRX") == 1
    acts = p.conv.tick(mp.retry_at + 0.001)
    assert _syn_tuples(acts) == [] and p.count("MPJoinRetry") == 0, (flow.state, _syn_tuples(acts))


def test_a_death_just_before_an_owed_batch_waits_its_own_rejoin_wait():
    """A second death joins the batch already owed (retry_at is not moved), so its join goes
    out as early as at once after the death, not REJOIN_WAIT later as the commit says
    ("the death owes a join over that uplink REJOIN_WAIT (2 s) later"): into a path that was
    black-holed a moment ago."""
    p = MPair(3)
    p.go_multipath()
    for u in (1, 2, 3):
        p.join_up(u)
    conv, flow, mp = p.conv, p.flow, p.mp
    t = p.now
    MP._event(conv, flow, p.path(1), SI.TIMER_STALE, t)
    MP._event(conv, flow, p.path(1), SI.TIMER_DEAD, t + 1)
    assert mp.retry_at == t + 1 + MP.REJOIN_WAIT
    t2 = mp.retry_at - 0.01  # up2's subflow dies 10 ms before the batch
    MP._event(conv, flow, p.path(2), SI.TIMER_STALE, t2 - 1)
    MP._event(conv, flow, p.path(2), SI.TIMER_DEAD, t2)
    acts = conv.tick(mp.retry_at + 0.001)
    srcs = [s for s, _, _ in _syn_tuples(acts)]
    assert p.addr_of(p.cfg.uplinks[1]) not in srcs, "up2 rejoined 11 ms after its death"
    assert srcs == [p.addr_of(p.cfg.uplinks[0])]
    assert mp.retry_at == t2 + MP.REJOIN_WAIT  # its own wait, from its own death
    acts = conv.tick(mp.retry_at + 0.001)
    assert [s for s, _, _ in _syn_tuples(acts)] == [p.addr_of(p.cfg.uplinks[1])]


def test_a_retry_in_flight_does_not_keep_the_flow_off_a_working_uplink():
    """Regression: subflow 1 died by the clocks, then up1's join too (its path black-holed):
    a retry over up1 is owed and goes out. While its SYN is unanswered the server resets
    up2's join, the last alive subflow. Before 308cbeb that reset brought _revive: a join over
    every uplink that is up, up2 (which works) included. Now the retry's SYN counts as
    "opening" (_none_alive), so _revive does nothing; when the retry gives up it is a join
    that failed to open (no _revive, by design), and only up1 is owed again. The flow never
    joins over up2 again: the guest's bytes go nowhere until the retries use up the slots."""
    p, r = _retry_out(0)  # (the retry's SYN over up1 is out, into the black hole)
    conv, flow, mp = p.conv, p.flow, p.mp
    up1, up2 = (p.addr_of(u) for u in p.cfg.uplinks)
    assert r.local == up1
    j = p.joins[2]
    acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))  # the server resets up2's join
    assert p.path(2).state is SS.CLOSED
    srcs = [s for s, _, _ in _syn_tuples(acts)]
    assert srcs == [up2], "up2 not joined at once (the retry's SYN held _revive off)"
    for _ in range(40):  # the retries' SYNs go unanswered (up1's path is still black)
        nd = conv.next_deadline()
        if nd is None:
            break
        p.now = max(nd, p.now) + 0.0001
        srcs += [s for s, _, _ in _syn_tuples(conv.tick(p.now))]
    end = (len(mp.paths), p.count("MPJoinRetry"), MP._none_alive(mp), flow.fastclosed,
           p.count("NoPathLeft"), conv.next_deadline())
    # no SYN is ever answered here: the flow ends visibly (its slots used, the guest reset),
    # not hung (before the fix: (7, 4, True, False, 0, None), nothing alive, no timer)
    assert flow.fastclosed and p.count("NoPathLeft") == 1 and len(mp.paths) == MP.MAX_PATHS, end


# -- probation: a retry must show that its path carries data ----------------------------------------


def _retry_up_with_data():
    """A retry over up1 opened and established, guest data sent on it and never acked."""
    p, t = _dead_by_clocks()
    mp = p.mp
    p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    q = mp.paths[-1]
    assert q.retry
    p.now = t + MP.REJOIN_WAIT + 0.01
    _bring_up(p, q)
    for _ in range(200):
        p.g_send(1, 1000)
        if q.snd_nxt > 1:
            break
    assert q.snd_nxt > q.snd_una == 1
    # the other subflows' paths work: the server acks all they carry
    p0, p2 = mp.paths[0], p.path(2)
    p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    p.j_in(p.j_ack(p.joins[2], ack=p2.snd_nxt))
    assert p0.snd_una == p0.snd_nxt and p2.snd_una == p2.snd_nxt
    return p, q


def test_a_retry_whose_data_goes_unanswered_dies_at_its_first_stale():
    """An MTU black hole (small segments pass, data does not): the retry's handshake works,
    its data is never acked. Nothing else has news (the guest waits on the head held
    there), so an ordinary join would wait SILENT_ALONE, be probed, answered, and wait again
    (6.8 s of stall per retry against the kernel); a retry on probation dies after its wait."""
    p, q = _retry_up_with_data()
    mp = p.mp
    due = MP._base(q) + max(MP.STALE_MIN, 4 * q.srtt, MP.PROBATION_WAIT)
    assert MP.next_deadline(p.conv) <= due + 1e-9
    p.conv.tick(due - 0.01)
    assert q.state is SS.ESTABLISHED
    acts = p.conv.tick(due + 0.001)
    assert q.state is SS.CLOSED and p.count("SubflowDead") == 2, p.classify(acts)
    assert "3g_ack" in " ".join(p.classify(acts)) or p.count("DupAckSynth") >= 3  # the guest resends now
    # owed again, twice the wait
    assert [e[0] for e in mp.retries] == [1]
    assert abs(mp.retry_at - (due + 0.001 + 2 * MP.REJOIN_WAIT)) < 1e-6


def test_a_retry_that_carried_its_probation_bytes_is_an_ordinary_subflow():
    p, q = _retry_up_with_data()
    q.snd_una = MP.PROBATION_BYTES + 1  # (as if the server had acked that much)
    q.snd_nxt = max(q.snd_nxt, q.snd_una + 1000)
    assert not MP._on_probation(q)
    wait = max(MP.STALE_MIN, 4 * q.srtt)
    base = MP._base(q)
    p.conv.tick(base + wait + 0.001)
    # stale beside the others' news, probed, and given DEAD_AFTER as any join: not dead at once
    assert q.state is SS.STALE and p.count("SubflowDead") == 1


def test_a_first_join_is_never_on_probation():
    p = in_state(SS.ESTABLISHED)
    assert not MP._on_probation(p.path(1)) and not MP._on_probation(p.mp.paths[0])


# -- second review (e8841b2) ---------------------------------------------------------------------


def _pad(mp, flow, t, upto):
    """Slots spent by earlier subflows (closed), as test_rejoin_after_death does."""
    while len(mp.paths) < upto:
        mp.paths.append(type(mp.paths[1])(len(mp.paths), flow, None, mp.version, b"", 0, b"", 0, t))
        mp.paths[-1].state = SS.CLOSED


def _retry_out(pad_to):
    """Two uplinks: subflow 1 gone (uplink unknown: no retry), up1's join dead by the clocks,
    its retry's SYN out (unanswered yet), up2's join the last alive subflow."""
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    p.join_up(2)
    conv, flow, mp = p.conv, p.flow, p.mp
    t = p.now
    MP._event(conv, flow, mp.paths[0], SI.TIMER_STALE, t)
    MP._event(conv, flow, mp.paths[0], SI.TIMER_DEAD, t + 1)
    MP._event(conv, flow, p.path(1), SI.TIMER_STALE, t + 1)
    MP._event(conv, flow, p.path(1), SI.TIMER_DEAD, t + 2)
    _pad(mp, flow, t, pad_to)
    p.now = mp.retry_at + 0.001
    acts = conv.tick(p.now)
    r = mp.paths[-1]
    assert r.retry and r.state is SS.SYN_SENT and r.uplink.id == 1, _syn_tuples(acts)
    return p, r


def test_no_reset_of_the_guest_while_a_retry_syn_may_still_open():
    """A retry's SYN is out over up1 (slot 7 of 8). up2's join, the last alive, is reset by
    the server: _revive skips up1 (the retry is out) and joins over up2 in the last slot; the
    server refuses that join too. The retry's SYN has not been answered nor given up (its
    timer runs, SYN_RTO 1+2+4 s), yet _no_path_left finds the flow pathless (the retry no
    longer counts: _none_alive) with no slot left (_may_rejoin false) and resets the guest
    at once (NoPathLeft). Before e8841b2 the retry counted as opening: no reset until it
    gave up, and an answer to it carried the flow on."""
    p, r = _retry_out(MP.MAX_PATHS - 2)  # the retry takes slot 7 (index 6)
    conv, flow, mp = p.conv, p.flow, p.mp
    MP._event(conv, flow, p.path(2), SI.RST, p.now)  # the server resets up2's join
    q = mp.paths[-1]
    assert len(mp.paths) == MP.MAX_PATHS and q.uplink.id == 2 and q.state is SS.SYN_SENT  # _revive
    MP._event(conv, flow, q, SI.RST, p.now + 0.05)  # refused (e.g. MP_JOIN stripped on up2's path)
    assert r.state is SS.SYN_SENT and r.timer > p.now  # the retry still may open
    assert p.count("NoPathLeft") == 0 and not flow.fastclosed, "guest reset beside a retry SYN in flight"
    # the server answers the retry: it carries the flow
    p.now += 0.5
    _bring_up(p, r)
    assert r.state is SS.ESTABLISHED and not flow.fastclosed


def test_no_reset_when_the_last_alive_subflow_closes_with_every_slot_used_and_a_retry_out():
    """Same, more directly: all 8 slots used, the retry's SYN out, the last alive subflow
    closes: _revive has no slot, _no_path_left resets the guest at once."""
    p, r = _retry_out(MP.MAX_PATHS - 2)
    conv, flow, mp = p.conv, p.flow, p.mp
    _pad(mp, flow, p.now, MP.MAX_PATHS)  # (the 8th slot spent, e.g. by a join to an announced address)
    MP._event(conv, flow, p.path(2), SI.RST, p.now)
    assert r.state is SS.SYN_SENT
    assert p.count("NoPathLeft") == 0 and not flow.fastclosed, "guest reset beside a retry SYN in flight"


def test_a_closed_by_fin_join_on_the_only_uplink_does_not_keep_revive_off_it():
    """_open_on counts every subflow not CLOSED, CLOSING included: a join the server closed
    with FIN (CLOSING for good: it leaves it only on RST or LINK_DOWN) over up1 to the
    server's address. Subflow 1, the last alive, dies: _revive (e8841b2: `not _open_on(...)`)
    skips up1, the only uplink, and opens nothing; _no_path_left waits (slots left); the
    owed retry (subflow 1's uplink known) is skipped by the same test in _retry_joins, whose
    _revive skips it again. Nothing alive, nothing opening, no timer, no reset: the flow
    hangs beside a working uplink. Before e8841b2 _revive joined over up1 at once."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    flow.sf1_uplink = p.cfg.uplinks[0].id  # (subflow 1's route known: over up1)
    j = p.path(1)
    sj = p.joins[1]
    p.j_in(p.j_ack(sj, ACK | FIN))  # the server closes the join (a subflow FIN, no DATA_FIN)
    sj.s_nxt += 1
    assert j.state is SS.CLOSING
    t = p.now
    MP._event(conv, flow, mp.paths[0], SI.TIMER_STALE, t)
    acts = MP._event(conv, flow, mp.paths[0], SI.TIMER_DEAD, t + 1)
    srcs = [s for s, _, _ in _syn_tuples(acts)]
    for _ in range(20):
        nd = conv.next_deadline()
        if nd is None:
            break
        p.now = max(nd, p.now) + 0.001
        srcs += [s for s, _, _ in _syn_tuples(conv.tick(p.now))]
    end = (MP._none_alive(mp), MP._pathless(flow, mp), flow.fastclosed, mp.retry_at, conv.next_deadline())
    assert srcs, ("no join over up1, which works", end)


def _lone_retry_out():
    """One uplink: up1's join dead by the clocks, its retry's SYN out, then subflow 1 (its
    uplink unknown: no retry) dead too: nothing alive. Returns (pair, the retry)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    conv, flow, mp = p.conv, p.flow, p.mp
    t = p.now
    MP._event(conv, flow, p.path(1), SI.TIMER_STALE, t)
    MP._event(conv, flow, p.path(1), SI.TIMER_DEAD, t + 1)
    p.now = mp.retry_at + 0.001
    conv.tick(p.now)
    r = mp.paths[-1]
    assert r.retry and r.state is SS.SYN_SENT
    MP._event(conv, flow, mp.paths[0], SI.TIMER_STALE, p.now)
    MP._event(conv, flow, mp.paths[0], SI.TIMER_DEAD, p.now + 0.5)
    return p, r


def test_a_pathless_flow_whose_retry_is_refused_does_not_hang():
    """(Pre-existing in kind, low.) One uplink: up1's join dead by the clocks, its retry's SYN
    out; subflow 1 (uplink unknown) dies: _revive skips up1 (the retry is out) and waits.
    The server refuses the retry (RST to its SYN): no retry is owed after a RST, and a join
    that failed to open brings no _revive; _no_path_left waits (slots left, up1 up). Nothing
    alive, nothing opening, no timer, no reset: the guest resends into nothing until its own
    timeout."""
    p, r = _lone_retry_out()
    conv, flow, mp = p.conv, p.flow, p.mp
    MP._event(conv, flow, r, SI.RST, p.now + 0.6)  # the server refuses the retry
    end = (MP._pathless(flow, mp), flow.fastclosed, mp.retry_at, conv.next_deadline(), len(mp.paths))
    assert flow.fastclosed or mp.retry_at or conv.next_deadline() is not None, ("hung", end)


# -- third review (c5f8747) ----------------------------------------------------------------------


def test_probation_deadline_agrees_with_tick_when_the_others_are_stale():
    """A retry on probation, data unanswered; the other alive subflows are STALE (went stale
    by SILENT_ALONE beside the retry, their news later than the retry's). tick: `probation
    and not _others_alive` -> never stale. next_deadline: `_others_news > _news` so the
    SILENT_ALONE / None branch is skipped and it returns base + wait, in the past: the shell
    spins on tick until the stale ones die (DEAD_AFTER, 1 s)."""
    p, q = _retry_up_with_data()
    mp = p.mp
    p0, p2 = mp.paths[0], p.path(2)
    # the others' news is later than the retry's (they were acked after its establishment)
    t = max(MP._news(p0), MP._news(p2))
    assert t > MP._news(q), (t, MP._news(q))
    # both go stale (as by SILENT_ALONE beside the established retry)
    MP._event(p.conv, p.flow, p0, SI.TIMER_STALE, t + 0.01)
    MP._event(p.conv, p.flow, p2, SI.TIMER_STALE, t + 0.01)
    assert p0.state is SS.STALE and p2.state is SS.STALE
    wait = max(MP.STALE_MIN, 4 * q.srtt)
    now = MP._base(q) + wait + 0.001
    assert now < t + 0.01 + MP.DEAD_AFTER
    p.conv.tick(now)
    assert q.state is SS.ESTABLISHED  # tick: alone on probation, it waits
    spins = 0
    for _ in range(20):
        nd = MP.next_deadline(p.conv)
        if nd is None or nd > now:
            break
        spins += 1
        p.conv.tick(now)
    assert spins == 0, ("next_deadline stays in the past", MP.next_deadline(p.conv), now, q.state)


def test_a_pathless_flow_whose_retry_synack_lacks_mp_join_does_not_hang():
    """As test_a_pathless_flow_whose_retry_is_refused_does_not_hang (c5f8747's fix), but the
    retry is refused by a SYN/ACK without MP_JOIN (a middlebox on the path stripping it; a
    wrong HMAC alike): SYN_SENT --SYNACK_BAD--> CLOSED ("refuse"). _event owes a retry only
    for GIVE_UP or RST, so none is owed; a join that failed to open brings no _revive;
    _no_path_left waits (slots left, up1 up). Nothing alive, nothing opening, no timer, no
    reset."""
    p, r = _lone_retry_out()
    conv, flow, mp = p.conv, p.flow, p.mp
    p.now += 0.6
    nj = Join(p, MP._join_syn(conv, flow, r))
    nj.c_isn = r.local_isn
    p.j_in(p.j_synack(nj, with_join=False))  # the retry's SYN/ACK, MP_JOIN stripped
    assert r.state is SS.CLOSED and p.count("MPJoinSynAckHMacFailure") == 1
    end = (MP._pathless(flow, mp), flow.fastclosed, mp.retry_at, conv.next_deadline(), len(mp.paths))
    assert flow.fastclosed or mp.retry_at or conv.next_deadline() is not None, ("hung", end)


@pytest.mark.parametrize("retry", [True, False])  # (False: the control, an ordinary join; passes)
def test_a_healthy_retry_outlives_a_guest_rto_repairing_its_tail_loss(retry):
    """A retry whose path works: its one segment (the tail of the guest's flight on it) is
    lost; a guest without SACK repairs it by its RTO (Linux: srtt + max(200 ms, 4 rttvar),
    its srtt the data level's, over the slowest subflow): 0.35 s after. The retry's
    probation kills it at base + max(STALE_MIN, 4 srtt) = 0.3 s, before the resend can be
    acked, though no probe was tried and the server would answer; an ordinary join (or this
    retry off probation) carries the resend. Each such death spends a slot and doubles the
    next retry's wait."""
    p, t = _dead_by_clocks()
    p.flow.sack_ok = False
    mp = p.mp
    p.conv.tick(t + MP.REJOIN_WAIT + 0.001)
    q = mp.paths[-1]
    assert q.retry
    p.now = t + MP.REJOIN_WAIT + 0.01
    nj = Join(p, MP._join_syn(p.conv, p.flow, q))
    nj.c_isn = q.local_isn
    p.j_in(p.j_synack(nj))
    nj.s_rcv = 1
    p.j_in(p.j_ack(nj))
    assert q.state is SS.ESTABLISHED
    q.retry = retry
    gseq = None
    for _ in range(200):
        g = p.g_nxt
        p.g_send(1, 1000)
        if q.snd_nxt > 1:
            gseq = g
            break
    assert gseq is not None and q.snd_nxt == 1001 and q.snd_una == 1
    p0, p2 = mp.paths[0], p.path(2)
    p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    p.j_in(p.j_ack(p.joins[2], ack=p2.snd_nxt))
    base = MP._base(q)
    rto = 0.35
    while p.now < base + rto:  # the daemon's ticks meanwhile
        p.now = min(p.now + 0.05, base + rto)
        p.conv.tick(p.now)
    assert q.state is not SS.CLOSED, "a retry whose path works died before the guest's RTO resend"
    # the guest's RTO resend goes on q and the server acks it: q carries on
    p.conv.handle(p.g_data(b"A" * 1000, seq=gseq), Direction.OUT, p.now)
    p.now += 0.01
    p.j_in(p.j_ack(nj, ack=1001))
    assert q.snd_una == 1001 and q.state is SS.ESTABLISHED


def test_gap_a_retry_dies_at_its_wait_when_no_other_subflow_has_news():
    """test_a_retry_whose_data_goes_unanswered_dies_at_its_first_stale
    claims "nothing else has news", but _retry_up_with_data acks the others after the retry
    is established (g_send moves the clock): their news is newer, so the old rule made it
    stale too and the `not probation and` guard in tick is never exercised (removing it,
    all 22 tests pass). Here the others' news is no newer than the retry's."""
    p, q = _retry_up_with_data()
    mp = p.mp
    q.acked_at = max(MP._news(mp.paths[0]), MP._news(p.path(2)))  # its news the latest
    assert MP._others_news(mp, q) <= MP._news(q)
    due = MP._base(q) + max(MP.STALE_MIN, 4 * q.srtt, MP.PROBATION_WAIT)
    assert MP.next_deadline(p.conv) <= due + 1e-9
    p.conv.tick(due - 0.01)
    assert q.state is SS.ESTABLISHED
    p.conv.tick(due + 0.001)
    assert q.state is SS.CLOSED


def test_a_retry_refused_beside_a_rejoin_that_is_refused_next_does_not_hang():
    """c5f8747 owes a refused retry again only when the flow is pathless at that moment. The
    retry's SYN is out over up1; up2's join, the last alive, is reset: _revive opens a rejoin
    over up2 (SYN_SENT, not a retry: it counts as opening). The server refuses the retry
    (RST): not pathless (the rejoin is opening), nothing owed. Then it refuses the rejoin
    too: not a retry, so nothing owed; _no_path_left waits (slots left). Nothing alive,
    nothing opening, no timer, no reset. (Refused in the other order, the retry is owed
    again and the flow ends in a join or the guest's reset.)"""
    p, r = _retry_out(3)
    conv, flow, mp = p.conv, p.flow, p.mp
    MP._event(conv, flow, p.path(2), SI.RST, p.now)  # the server resets up2's join
    j = mp.paths[-1]
    assert j is not r and j.uplink.id == 2 and j.state is SS.SYN_SENT and not j.retry  # _revive
    MP._event(conv, flow, r, SI.RST, p.now + 0.05)  # the retry refused
    MP._event(conv, flow, j, SI.RST, p.now + 0.06)  # the rejoin refused
    end = (MP._pathless(flow, mp), flow.fastclosed, mp.retry_at, conv.next_deadline(), len(mp.paths))
    assert flow.fastclosed or mp.retry_at or conv.next_deadline() is not None, ("hung", end)
