"""Every (subflow state, input) pair of the joins a peer opens (inbound role, issue 9):
SYN_RCVD with every input, and the passive inputs (SYN_AGAIN, ACK3_JOIN, ACK3_BAD) in every
other state, against MODEL below, written by hand from RFC 8684 §3.2 (the middlebox as the
responder: SYN/ACK with our truncated HMAC, the third ACK's full HMAC checked, our fourth
ACK; a wrong third ACK reset with MP_TCPRST). The active joins' pairs are in
test_subflow_table.py; together they cover SUBFLOW_TABLE exactly (checked there).

Pairs the wire, the clock and the link events cannot produce are fed to the row itself
(multipath._event) with a representative packet, and the natural stimulus closest to them is
shown to change nothing: as test_subflow_table.py does.
"""

from __future__ import annotations

import pytest

from middlebox.core import Config, Direction, Drop, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowInput as SI, SubflowState as SS
from middlebox.wire import parse_packet

from tests.unit.test_core_harness import ACK, RST, SYN, check_wire, make_packet
from tests.unit.test_inbound import PEER2, PEER2_PORT, _flow, inbound, join_ack3, join_syn, new_pair

PASSIVE = (SI.SYN_AGAIN, SI.ACK3_JOIN, SI.ACK3_BAD)
PAIRS = [(SS.SYN_RCVD, i) for i in SI] + [(s, i) for s in SS if s is not SS.SYN_RCVD for i in PASSIVE]
DROP = ["drop"]

MODEL: dict = {
    (SS.SYN_RCVD, SI.SYN_AGAIN): (SS.SYN_RCVD, ["drop", "synack"], {"PassiveJoinSynRX": 1}),
    (SS.SYN_RCVD, SI.ACK3_JOIN): (SS.ESTABLISHED, ["drop", "ack"], {"PassiveJoinEstablished": 1}),
    (SS.SYN_RCVD, SI.ACK3_BAD): (SS.CLOSED, ["drop", "rst"], {"PassiveJoinAckHMacFailure": 1}),
    (SS.SYN_RCVD, SI.RST): (SS.CLOSED, DROP, {"MPJoinRejected": 1}),
    (SS.SYN_RCVD, SI.ODD): (SS.SYN_RCVD, DROP, {}),  # e.g. an ACK that does not ack our SYN/ACK
    (SS.SYN_RCVD, SI.GIVE_UP): (SS.CLOSED, ["rst"], {"MPJoinTimeout": 1}),
    # unreachable in SYN_RCVD: a passive join's packets are SYN_AGAIN, ACK3_*, RST or ODD
    **{(SS.SYN_RCVD, i): (SS.SYN_RCVD, DROP, {})
       for i in (SI.SYNACK_JOIN, SI.SYNACK_BAD, SI.ACK, SI.DATA, SI.FIN)},
    **{(SS.SYN_RCVD, i): (SS.SYN_RCVD, [], {})
       for i in (SI.TIMER_SYN, SI.TIMER_ACK3, SI.TIMER_STALE, SI.TIMER_DEAD, SI.LINK_DOWN)},
    # established: the peer's third ACK again (our fourth got lost): the fourth again
    (SS.ESTABLISHED, SI.ACK3_JOIN): (SS.ESTABLISHED, ["drop", "ack"], {}),
    # everything else: a passive input outside SYN_RCVD changes nothing
    **{(s, i): (s, DROP, {}) for s in SS if s is not SS.SYN_RCVD for i in PASSIVE
       if (s, i) != (SS.ESTABLISHED, SI.ACK3_JOIN)},
}

#: produced by real packets / timers on a passive join; the others go to the row itself
REACHABLE = {(SS.SYN_RCVD, i) for i in (SI.SYN_AGAIN, SI.ACK3_JOIN, SI.ACK3_BAD, SI.RST, SI.ODD, SI.GIVE_UP)} | {
    (SS.ESTABLISHED, SI.ACK3_JOIN)}


def labels(actions) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Drop):
            out.append("drop")
        elif isinstance(a, Inject):
            f = check_wire(a.data)[0].flags
            out.append("synack" if f & SYN else "rst" if f & RST else "ack")
    return out


def passive_in(state):
    """An inbound pair whose join from PEER2 is in `state`: (pair, its path, its SYN/ACK)."""
    p = new_pair()
    inbound(p)
    acts = p.conv.handle(join_syn(p), Direction.IN, p.now)
    synack = [a.data for a in acts if isinstance(a, Inject)][0]
    path = _flow(p).mp.paths[1]
    if state is SS.ESTABLISHED:
        p.conv.handle(join_ack3(p, synack), Direction.IN, p.now)
    elif state is SS.CLOSED:
        p.conv.handle(join_ack3(p, synack, good=False), Direction.IN, p.now)
    assert path.state is state, path.state
    return p, path, synack


def stimulus(p, path, synack, inp):
    if inp is SI.SYN_AGAIN:
        return p.conv.handle(join_syn(p), Direction.IN, p.now)
    if inp is SI.ACK3_JOIN:
        return p.conv.handle(join_ack3(p, synack), Direction.IN, p.now)
    if inp is SI.ACK3_BAD:
        return p.conv.handle(join_ack3(p, synack, good=False), Direction.IN, p.now)
    if inp is SI.RST:
        return p.conv.handle(make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, 0, RST),
                             Direction.IN, p.now)
    if inp is SI.ODD:  # an ACK that acks something else than our SYN/ACK
        return p.conv.handle(make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, 12345, ACK),
                             Direction.IN, p.now)
    if inp is SI.GIVE_UP:
        return p.conv.tick(path.timer + 0.001)
    raise AssertionError(inp)


def check(state, inp):
    nxt, behaviour, counts = MODEL[(state, inp)]
    if state is SS.SYN_RCVD or (state, inp) in REACHABLE:
        p, path, synack = passive_in(state)
    else:  # an active join in `state` (test_subflow_table's drivers)
        from tests.unit.test_subflow_table import in_state
        p = in_state(state)
        path, synack = p.path(1), None
    before = dict(p.conv.counters)
    if (state, inp) in REACHABLE:
        actions = stimulus(p, path, synack, inp)
    else:
        data = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, 1, ACK)
        pkt = parse_packet(data) if inp <= SI.ODD or inp in PASSIVE else None
        actions = MP._event(p.conv, _flow(p), path, inp, p.now, pkt, data if pkt else b"", None)
    assert labels(actions) == behaviour, (labels(actions), behaviour)
    assert path.state is nxt, (path.state, nxt)
    after = p.conv.counters
    from middlebox.core import Counter
    for name, n in counts.items():
        assert after[Counter[name]] - before.get(Counter[name], 0) == n, name
    assert after[Counter.JoinViolation] == 0 and after[Counter.CoreBug] == 0
    if nxt is SS.CLOSED and state is not SS.CLOSED:
        assert (path.local, path.lport, path.remote, path.rport) not in p.conv.joins


def test_model_covers_the_passive_pairs():
    assert set(MODEL) == set(PAIRS)
    assert set(PAIRS) <= set(MP.SUBFLOW_TABLE)


@pytest.mark.parametrize("state,inp", PAIRS, ids=[f"{s.name}-{i.name}" for s, i in PAIRS])
def test_pair(state, inp):
    check(state, inp)


MUTATIONS = [
    ((SS.SYN_RCVD, SI.ACK3_BAD), ("passive_established", SS.ESTABLISHED)),  # a wrong HMAC taken
    ((SS.SYN_RCVD, SI.ACK3_JOIN), ("drop", SS.SYN_RCVD)),
    ((SS.SYN_RCVD, SI.GIVE_UP), ("nothing", SS.SYN_RCVD)),  # waits for ever
    ((SS.ESTABLISHED, SI.ACK3_JOIN), ("drop", SS.ESTABLISHED)),  # the peer never hears the fourth ACK
]


@pytest.mark.parametrize("pair,wrong", MUTATIONS, ids=[f"{s.name}-{i.name}" for (s, i), _ in MUTATIONS])
def test_model_catches_table_mutations(monkeypatch, pair, wrong):
    monkeypatch.setitem(MP.SUBFLOW_TABLE, pair, wrong)
    with pytest.raises(AssertionError):
        check(*pair)


def test_natural_stimuli_of_unreachable_pairs_change_nothing():
    """A SYN/ACK, plain ACK, data or FIN from the peer on its join before the third ACK is
    ODD or ACK3_BAD (never taken as data); a late tick and a link event leave it alone."""
    p, path, synack = passive_in(SS.SYN_RCVD)
    sa = check_wire(synack)[0]
    odd = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30000, sa.seq + 1, SYN | ACK)
    assert labels(p.conv.handle(odd, Direction.IN, p.now)) == ["drop"] and path.state is SS.SYN_RCVD
    assert labels(p.conv.tick(p.now + 1)) == [] and path.state is SS.SYN_RCVD
    p.conv.uplink_event("nope", False, p.now + 1)
    assert path.state is SS.SYN_RCVD
    data = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, sa.seq + 1, ACK, b"", b"data")
    assert labels(p.conv.handle(data, Direction.IN, p.now)) == ["drop", "rst"]  # no MP_JOIN: ACK3_BAD
    assert path.state is SS.CLOSED and not Config().max_subflows
