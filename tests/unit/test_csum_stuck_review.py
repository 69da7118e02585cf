"""Review 2 of stop 46 (of 277af48 and d51083a), the stuck head with DSS checksums: each
test failed on d51083a (the names say what was wrong). Fixed: the lost branch moves the head
only, and gives back the tokens pick took; the stuck test sees a fragmented run map (room for
the head's move only); a subflow alone fills an acked hole again after a fill without
progress (FILL_AGAIN; the fill's loss hung the upload, older than stop 46)."""
from __future__ import annotations

from middlebox.core import Direction, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire.mptcp import RemoveAddr

from tests.unit.test_head_into_hole import _maps_sent as _maps_on
from tests.unit.test_head_into_hole import _state
from tests.unit.test_subflow_table import wire_check


def _join1_idle():
    """_state with checksums, join 1 alive and idle (windows open): (p, mp, j2, sf1, j1)."""
    p, mp, j2 = _state()
    sf1, j1, _ = mp.paths
    p.flow.checksum = True
    j1.state = SS.ESTABLISHED
    j1.snd_una = j1.snd_nxt = 1
    j1.snd_wnd = j2.snd_wnd = 1 << 20
    return p, mp, j2, sf1, j1


def _cnt(p):
    return {k: p.count(k) for k in ("CsumHeadReinjected", "CsumStuckReset", "ReinjectTX", "MPJoinRejoin")}


def test_lost_branch_without_head_check_cancels_the_reset_of_the_stuck_subflow():
    """Guest resends [6, 206). DSN 6..106 (the head) is mapped on join 2 at ssn 2841, behind
    join 2's hole at ssn 1 (DSNs 206.. beyond it): the in-place branch moves the head to join 1
    (CsumHeadReinjected, csum_moved) and leaves csum_stuck = 2 for the reset. DSN 106..206 is
    homed on closed subflow 1: pick's burst gives join 2; _into_holes (not the head) returns;
    the lost branch's `elif mp.csum_stuck == k` (no head check) moves that piece to join 1
    and sets csum_stuck = -1: join 2 is never reset though the head was moved off it."""
    p, mp, j2, sf1, j1 = _join1_idle()
    sf1.snd_una, sf1.snd_nxt = 1, 101
    mp.runs = [[6, 106, 2, 2841, None], [106, 206, 0, 1, None], [206, 3046, 2, 1, None]]
    j2.snd_una, j2.snd_nxt = 1, 2941
    mp.last_pick, mp.burst_left = 2, 1 << 20  # (pick's burst on join 2)
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(range(200)), seq=s0), Direction.OUT, p.now)
    assert p.count("CsumHeadReinjected") == 1  # the head moved off join 2 ...
    # ... so join 2's ssn 2841..2941 (the head's old copy) has no run any more: the invariant
    # _head_hole's docstring keeps ("no subflow seq is left without a run"), which only the
    # reset makes moot; should that copy be lost, nothing (guest, _fill_acked_hole) fills it
    runless = MP._run_at(mp, 2, 2841) is None
    assert not (runless and j2.state is SS.ESTABLISHED), "join 2 alive with a run-less range"
    assert p.count("CsumStuckReset") == 1 and j2.state is SS.CLOSED  # ... but join 2 is not reset


def test_acked_hole_fill_lost_once_leaves_a_lone_subflow_stuck_for_good():
    """Pre-existing (fails on 277af48~1 too; fuzz: fz2.py SEED=1021 I=66 CLOSE=data DROPW=4
    LD=0). Join 2 is the only live subflow; its hole at ssn 1..201 holds DSNs 6..206 that
    the server data-acked (got them on subflow 1, now closed); the head 206.. sits behind it
    at ssn 201 (SACKed). tick fills the hole with zeros once (AckedHoleFilled); that fill lost,
    nothing fills it again (fill_at == progress_at; alone it never goes stale), and the
    guest's resends of the head go in place behind the hole (its DSNs are below the head:
    no csum_stuck): the upload hangs for good."""
    p, mp, j2 = _state()
    sf1, j1, _ = mp.paths
    p.flow.checksum = True
    mp.runs = [[6, 206, 2, 1, None], [206, 606, 2, 201, None]]
    mp.snd_nxt = 606
    mp.data_ack = 206
    j2.snd_una, j2.snd_nxt = 1, 601
    j2.sacked = ((201, 601),)
    j2.fill_at = -1.0
    fills = 0
    t = p.now
    for i in range(200):  # 100 s of ticks; every fill is lost
        t += 0.5
        acts = MP.tick(p.conv, t)
        fills += sum(1 for a in acts if isinstance(a, Inject) and wire_check(a.data, True)[0].payload_len)
    assert fills >= 2, "the acked hole's zero fill is sent once and never again"


def _fragmented(mp, j1, j2, nruns):
    """Runs above DSN 3046 alternating between join 1 and join 2 (a fragmented map)."""
    d, s1, s2 = 3046, 1, 3041
    for i in range(nruns):
        if i % 2 == 0:
            mp.runs.append([d, d + 10, 1, s1, None]); s1 += 10
        else:
            mp.runs.append([d, d + 10, 2, s2, None]); s2 += 10
        d += 10
    mp.snd_nxt = d
    j1.snd_una, j1.snd_nxt = 1, s1
    j2.snd_nxt = s2


def test_stuck_head_is_not_seen_when_the_run_map_is_nearly_full():
    """The stuck test in _into_holes goes through _head_hole, which returns _NO_HOLE when
    len(mp.runs) + 6 > MAX_RUNS (a guard for the swap's two moves, which never happens with
    checksums). With a fragmented run map the head's resend goes in place behind join 2's
    hole beyond it again, csum_stuck is never set, nothing is moved or reset: the deadlock of
    277af48 stays (and the run map cannot shrink: the DATA_ACK waits for the head)."""
    from tests.unit.test_head_into_hole import _csum_head_resend
    for nruns, want in ((100, 1), (MP.MAX_RUNS - 5, 1)):
        p, mp, j2 = _state()
        j1 = mp.paths[1]
        j1.state = SS.ESTABLISHED
        j1.snd_wnd = j2.snd_wnd = 1 << 20
        _fragmented(mp, j1, j2, nruns)
        acts = _csum_head_resend(p)
        (nruns, len(mp.runs), _maps_on(p, acts)[:2], _cnt(p), j2.state)
        assert p.count("CsumHeadReinjected") == want, f"{len(mp.runs)} runs: head not moved"


def test_lost_branch_swap_keeps_picks_tokens_and_ignores_the_new_subflows_cap():
    """The head, homed on closed subflow 1, is reinjected: pick's burst gives join 2 (capped,
    its tokens charged 200), _into_holes finds it stuck behind join 2's hole, the lost branch
    swaps to join 1 by _pick_other, which looks at no cap: join 1 (capped, no tokens) takes
    the head, and join 2 keeps the charge for bytes it never carried."""
    p, mp, j2, sf1, j1 = _join1_idle()
    sf1.snd_una, sf1.snd_nxt = 1, 201
    mp.runs = [[6, 206, 0, 1, None], [206, 3046, 2, 1, None]]
    j2.snd_una, j2.snd_nxt = 1, 2841
    for q in (j1, j2):
        q.cap = 1000.0
        q.tok_at = p.now + 1e9  # (no refill in this instant)
    j2.tokens = 10000.0
    j1.tokens = 0.0
    mp.last_pick, mp.burst_left = 2, 1 << 20
    s0 = (p.flow.guest_isn + 6) & 0xFFFFFFFF
    acts = p.conv.handle(p.g_data(bytes(range(200)), seq=s0), Direction.OUT, p.now)
    sent = _maps_on(p, acts)
    assert (j1.lport, 6, 200) in sent  # the swap happened
    assert j2.tokens == 10000.0, "join 2 charged for the head it did not carry"


# -- review 3 (of 4268b71 and 65cac05): the re-fill backs off; a path manager's ACK or the
# server's keepalive is no news of bytes above an orphaned head


def test_refill_on_a_dead_lone_path_backs_off():
    """A lone join's acked hole of 60 KB, every fill lost (dead path): FILL_AGAIN re-sends the
    whole FILL_MAX share every ~1 s for as long as the flow lives, with no backoff."""
    p, mp, j2 = _state()
    p.flow.checksum = True
    end = 6 + 60000
    mp.runs = [[6, end, 2, 1, None], [end, end + 400, 2, end - 5, None]]
    mp.snd_nxt, mp.data_ack = end + 400, end
    j2.snd_una, j2.snd_nxt = 1, end - 5 + 400
    j2.sacked = ((end - 5, end - 5 + 400),)
    j2.fill_at = -1.0
    t, sent = p.now, 0
    while t < p.now + 120:
        t = MP.next_deadline(p.conv) + 1e-6
        for a in MP.tick(p.conv, t):
            if isinstance(a, Inject):
                sent += wire_check(a.data, True)[0].payload_len
    assert sent <= 10 * 60000, f"{sent} bytes of zero fills in 120 s on a dead path"


def test_orphan_dup_ack_not_from_a_path_manager_ack_or_keepalive():
    """A REMOVE_ADDR pure ACK and the server's keepalive on the join are no news of our bytes
    (_ack_info keeps them out of sack_at), yet each reaches the guest as a duplicate ACK."""
    p, mp, j2 = _state()
    p.flow.sack_ok = False
    mp.runs = [[6, 206, 1, 1, None], [206, 606, 2, 1, None]]
    mp.snd_nxt = 606
    j2.snd_una, j2.snd_nxt = 1, 401
    j2.dups = 0
    J = p.joins[2]
    J.s_rcv = 201
    p.j_in(p.j_ack(J, ack=201))
    n = p.count("DupAckOrphanFwd")
    p.j_in(p.j_ack(J, ack=201, mptcp=(p.dack(), RemoveAddr((5,)))))
    p.j_in(p.j_ack(J, ack=201, seq=J.s_nxt - 1))
    assert p.count("DupAckOrphanFwd") == n
