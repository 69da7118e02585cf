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

from tests.unit.test_core_harness import ACK, RST
from tests.unit.test_revive import _bring_up
from tests.unit.test_subflow_table import MPair, in_state


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
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    p.join_up(2)
    conv, flow, mp = p.conv, p.flow, p.mp
    t = p.now
    MP._event(conv, flow, mp.paths[0], SI.TIMER_STALE, t)
    MP._event(conv, flow, mp.paths[0], SI.TIMER_DEAD, t + 1)  # (subflow 1's uplink unknown: no retry)
    MP._event(conv, flow, p.path(1), SI.TIMER_STALE, t + 1)
    MP._event(conv, flow, p.path(1), SI.TIMER_DEAD, t + 2)
    assert [e[0] for e in mp.retries] == [1]
    p.now = mp.retry_at + 0.001
    acts = conv.tick(p.now)
    up1, up2 = (p.addr_of(u) for u in p.cfg.uplinks)
    assert [s for s, _, _ in _syn_tuples(acts)] == [up1]  # the retry, into the black hole
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
    # (as it stands: (7, 4, True, False, 0, None): nothing alive, no reset, no timer; hung)
    assert up2 in srcs, ("no join over up2, which works", end)
