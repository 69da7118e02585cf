"""Review of 8b956e2 (orphans): defects found, one test each."""

from __future__ import annotations

from middlebox.core import ACCEPT, Config, Direction
from middlebox.core import orphans as OR
from middlebox.core.events import Drop
from middlebox.core.table import State
from middlebox.wire import Dss, MpCapable, build_options, encode_tcp_options

from tests.unit.test_core_harness import ACK, M32, SERVER_KEY, SYN, Pair
from tests.unit.test_inbound import peer_syn
from tests.unit.test_orphans import G_RCV, G_SEQ, _guest_answer, _in, _out, _peer

GUEST_KEY = 0x1122334455667788


def test_inbound_off_an_mptcp_speaking_guest_service_still_gets_the_peers_third_ack():
    """Config(inbound=False) passes a peer's MP_CAPABLE SYN "as it is: a guest that speaks
    MPTCP gets it" (test_inbound). The guest's SYN/ACK with MP_CAPABLE passed unlearnt (the
    orphan path skips every SYN), so the peer's third ACK (MP_CAPABLE, both keys) was held
    and the guest probed: the guest's request socket answers an ACK whose ack is not
    snt_isn+1 with the listener's plain RST, the peer's MPTCP segments are held for ever, the
    connection never establishes."""
    p = Pair(Config(inbound=False))
    assert _in(p, peer_syn(p)) == [ACCEPT]
    opts = build_options(encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=5, ts_ecr=9),
                         (MpCapable(1, 0x01, GUEST_KEY),))
    assert _out(p, p.g_packet(p.g_isn, (p.s_isn + 1) & M32, SYN | ACK, options=opts)) == [ACCEPT]
    third = p.s_packet((p.s_isn + 1) & M32, (p.g_isn + 1) & M32, ACK,
                       (MpCapable(1, 0x01, SERVER_KEY, GUEST_KEY),))
    assert _in(p, third) == [ACCEPT], p.conv.counters
    assert _in(p, _peer(p, seq=(p.s_isn + 1) & M32, ack=(p.g_isn + 1) & M32)) == [ACCEPT]
    assert p.count("OrphanHeld") == 0


def test_the_give_up_outlives_the_ttl():
    """After TRIES misfits the guest is to be asked no more for GIVE_UP_FOR (600 s). But an
    entry idle for TTL (120 s) was replaced by a fresh one (misfits 0, no give-up): a blind
    attacker got TRIES new tries every ~2 minutes, not every 10."""
    p = Pair()
    far_seq, far_ack = (G_RCV + OR.GATE + 1) & M32, (G_SEQ + 1) & M32
    for _ in range(OR.TRIES):
        p.now += OR.PROBE_EVERY
        _in(p, _peer(p, seq=far_seq, ack=far_ack))
        _out(p, _guest_answer(p))
    assert p.count("OrphanMisfit") == OR.TRIES
    p.now += OR.TTL + 1  # (the attacker waits)
    acts = _in(p, _peer(p, seq=far_seq, ack=far_ack))
    assert len(acts) == 1, "asked again before GIVE_UP_FOR"
    _out(p, _guest_answer(p, seq=(far_ack + 1) & M32))  # (a guess that fits)
    assert p.count("OrphanReset") == 0
    # the guest's own segments after TTL do not end the give-up either
    p.now += OR.TTL + 1
    assert _out(p, _guest_answer(p)) == [ACCEPT]
    acts = _in(p, _peer(p, seq=far_seq, ack=far_ack))
    assert len(acts) == 1, "asked again before GIVE_UP_FOR"


def test_the_give_up_survives_a_flush_of_the_table():
    """Another way round it: MAX_ORPHANS segments with other 4-tuples (anyone can send them)
    pushed the given-up entry out, and the victim's next forged segment started afresh."""
    p = Pair()
    p.conv.orphans.cap = 8
    far_seq, far_ack = (G_RCV + OR.GATE + 1) & M32, (G_SEQ + 1) & M32
    for _ in range(OR.TRIES):
        p.now += OR.PROBE_EVERY
        _in(p, _peer(p, seq=far_seq, ack=far_ack))
        _out(p, _guest_answer(p))
    victim = p.sport
    for port in range(p.conv.orphans.cap):
        p.sport = 2000 + port
        _in(p, _peer(p))
    p.sport = victim
    acts = _in(p, _peer(p, seq=far_seq, ack=far_ack))
    assert len(acts) == 1, "asked again before GIVE_UP_FOR"


def test_an_mptcp_guest_whose_flow_cannot_be_made_is_not_held_for_ever():
    """A table full of converting flows: the guest's MPTCP answer could not become a
    GUEST_MPTCP flow (_new_flow returns None for class < EVICT_ACTIVE), the entry was gone,
    and every later peer segment was held again (asked again once a second): a native MPTCP
    guest's connection, which passed before the change, never moved again."""
    p = Pair(Config(max_flows=1), gport=40001)
    p.established()
    assert len(p.conv.flows) == 1
    p.gport = 40002
    acts = _in(p, _peer(p))
    assert type(acts[0]) is Drop
    assert _out(p, _guest_answer(p, mptcp=(Dss(data_ack=5),))) == [ACCEPT]
    assert _in(p, _peer(p, seq=0x70000000 + 1000)) == [ACCEPT]


def test_strikes_on_other_connections_do_not_start_a_guessed_ones_count_afresh():
    """With the strikes apart from the entries, the one way left to start a connection's
    count afresh would be pushing it out with misfits on `cap` other connections (an
    attacker's own connections to a guest service give such answers). A full table of live
    counts pushes none out and resets nothing: the orphans stall, held, until they expire."""
    p = Pair()
    p.conv.orphans.cap = 4
    far_seq, far_ack = (G_RCV + OR.GATE + 1) & M32, (G_SEQ + 1) & M32
    victim = p.sport
    for port in range(p.conv.orphans.cap + 1):
        p.sport = 3000 + port if port else victim
        p.now += OR.PROBE_EVERY
        _in(p, _peer(p, seq=far_seq, ack=far_ack))
        _out(p, _guest_answer(p))
    assert victim in [k[3] for k in p.conv.orphans.strikes]
    p.sport = 5000  # (a fit on a new connection while the table is full: not reset)
    _in(p, _peer(p))
    assert _out(p, _guest_answer(p, seq=0x10000100)) == [ACCEPT]
    assert p.count("OrphanReset") == 0
    p.now += OR.GIVE_UP_FOR  # (the counts expire: a fit resets again)
    _in(p, _peer(p))
    assert type(_out(p, _guest_answer(p, seq=0x10000100))[0]) is Drop
    assert p.count("OrphanReset") == 1
