"""Orphans (core/orphans.py): connections a killed daemon converted, which its successor does
not know. A peer's segment carrying an MPTCP option never reaches a guest unconverted; the
guest is asked (an ACK half the sequence space away) and its answer decides: MPTCP options,
its own connection (passed from then on); plain TCP whose numbers fit the held segment's,
reset at both ends at their exact rcv_nxt; numbers that do not fit (a forged segment), nothing
reset. tests/integration/test_stop_reset.py kills a daemon mid-transfer against the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from middlebox.core import ACCEPT, Direction
from middlebox.core import orphans as OR
from middlebox.core.events import Drop, Inject
from middlebox.core.table import State
from middlebox.wire import Dss, MpTcpRst, build_options, parse_packet
from middlebox.wire.packet import options_of

from tests.unit.test_core_harness import ACK, PSH, RST, Pair

M32 = 0xFFFFFFFF
S_SEQ, S_ACK = 0x70000000, 0x10000100  # a restarted daemon's first sight of the connection
G_SEQ, G_RCV = 0x10000180, 0x70000000 + 4000  # the guest's numbers: its own, never moved


def _b(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def _peer(p, seq=S_SEQ, ack=S_ACK, payload=b"x" * 1000, mptcp=True, flags=ACK | PSH):
    opts = (Dss(data_ack=123456, data_seq=777777, subflow_seq=1, data_len=len(payload) or 1),) if mptcp else ()
    return p.s_packet(seq, ack, flags, opts, payload=payload if mptcp or payload else b"")


def _in(p, buf):
    p.now += 0.001
    return p.conv.handle(buf, Direction.IN, p.now)


def _out(p, buf):
    p.now += 0.001
    return p.conv.handle(buf, Direction.OUT, p.now)


def _guest_answer(p, seq=G_SEQ, ack=G_RCV, mptcp=()):
    opts = build_options(p.g_opts(), tuple(mptcp)) if mptcp else None
    return p.g_packet(seq, ack, ACK, options=opts)


@pytest.mark.parametrize("v6", [False, True])
def test_an_unknown_connections_mptcp_segment_is_held_and_the_guest_asked(v6):
    p = Pair(v6=v6)
    acts = _in(p, _peer(p))
    assert type(acts[0]) is Drop, acts
    (probe,) = acts[1:]
    assert type(probe) is Inject
    q = parse_packet(probe.data)
    assert (q.version, q.src, q.dst, q.sport, q.dport) == (6 if v6 else 4, _b(p.s_addr), _b(p.g_addr), p.sport, p.gport)
    assert q.flags == ACK and q.payload_len == 0 and not options_of(probe.data, q).mptcp
    # half the sequence space away from the held segment's: outside the guest's window
    assert q.seq == (S_SEQ + 0x80000000) & M32 and q.ack == (S_ACK + 0x80000000) & M32
    assert p.count("OrphanHeld") == 1 and p.count("OrphanProbe") == 1
    # held again, asked again only after PROBE_EVERY
    acts = _in(p, _peer(p, seq=S_SEQ + 1000))
    assert type(acts[0]) is Drop and len(acts) == 1
    p.now += OR.PROBE_EVERY
    acts = _in(p, _peer(p, seq=S_SEQ + 2000))
    assert type(acts[0]) is Drop and len(acts) == 2
    assert p.count("OrphanHeld") == 3 and p.count("OrphanProbe") == 2
    assert not p.conv.flows  # (no flow: the table is not where orphans live)


@pytest.mark.parametrize("fit", ["seq-above-peer-ack", "ack-near-peer-seq"])
def test_a_plain_answer_that_fits_resets_both_ends_at_their_rcv_nxt(fit):
    p = Pair()
    _in(p, _peer(p))
    if fit == "seq-above-peer-ack":  # (a download: the guest's stream kept its numbering)
        seq, ack = (S_ACK + OR.GATE - 1) & M32, 0x01234567
    else:  # (an upload: the peer's stream kept it)
        seq, ack = 0x55555555, (S_SEQ - OR.GATE + 1) & M32
    acts = _out(p, _guest_answer(p, seq, ack))
    assert type(acts[0]) is Drop, acts
    rsts = [parse_packet(a.data) for a in acts[1:]]
    assert all(type(a) is Inject for a in acts[1:]) and [r.flags for r in rsts] == [RST, RST]
    to_guest, to_peer = rsts
    assert (to_guest.src, to_guest.dst, to_guest.sport, to_guest.dport) == (_b(p.s_addr), _b(p.g_addr), p.sport, p.gport)
    assert to_guest.seq == ack  # the guest's own ack: its rcv_nxt, accepted exactly
    assert (to_peer.src, to_peer.dst, to_peer.sport, to_peer.dport) == (_b(p.g_addr), _b(p.s_addr), p.gport, p.sport)
    assert to_peer.seq == S_ACK  # the held segment's ack: the peer's rcv_nxt
    assert p.count("OrphanReset") == 1 and not p.conv.orphans.entries
    # the guest's next segment (its socket is gone: none, or a RST) passes
    assert _out(p, _guest_answer(p, seq, ack)) == [ACCEPT]


def test_an_answer_with_mptcp_options_makes_the_connection_the_guests_own():
    p = Pair()
    _in(p, _peer(p))
    acts = _out(p, _guest_answer(p, mptcp=(Dss(data_ack=5),)))
    assert acts == [ACCEPT]
    (key, flow), = p.conv.flows.items()
    assert key == (_b(p.g_addr), p.gport, _b(p.s_addr), p.sport) and flow.state is State.GUEST_MPTCP
    assert p.count("OrphanGuestMPTCP") == 1 and not p.conv.orphans.entries
    # from then on the peer's MPTCP segments pass untouched, options and all
    assert _in(p, _peer(p, seq=S_SEQ + 1000)) == [ACCEPT]
    assert p.count("OrphanHeld") == 1


def test_a_forged_segment_does_not_reset_a_plain_connection():
    """Anyone who knows a 4-tuple can send a segment with an MPTCP option: the guest's plain
    answer whose numbers lie GATE or more from the forged ones resets nothing; after TRIES
    such answers the guest is asked no more for GIVE_UP_FOR. The peer's plain segments pass
    throughout."""
    p = Pair()
    far_seq, far_ack = (G_RCV + OR.GATE + 1) & M32, (G_SEQ + 1) & M32  # (just outside either way)
    for i in range(OR.TRIES):
        p.now += OR.PROBE_EVERY
        acts = _in(p, _peer(p, seq=far_seq, ack=far_ack))
        assert type(acts[0]) is Drop and len(acts) == 2, (i, acts)
        assert _out(p, _guest_answer(p)) == [ACCEPT]
        assert _in(p, _peer(p, mptcp=False, payload=b"plain")) == [ACCEPT]  # the real peer's
    assert p.count("OrphanMisfit") == OR.TRIES and p.count("OrphanReset") == 0
    p.now += OR.PROBE_EVERY
    assert len(_in(p, _peer(p, seq=far_seq, ack=far_ack))) == 1  # held, not asked
    assert _out(p, _guest_answer(p, seq=(far_ack + 1) & M32)) == [ACCEPT]  # (would fit: given up)
    p.now += OR.GIVE_UP_FOR
    assert len(_in(p, _peer(p, seq=far_seq, ack=far_ack))) == 2  # asked again
    assert p.count("OrphanReset") == 0


def test_plain_segments_of_unknown_connections_pass_both_ways():
    p = Pair()
    assert _in(p, _peer(p, mptcp=False, payload=b"abc")) == [ACCEPT]
    assert _out(p, _guest_answer(p)) == [ACCEPT]
    assert p.count("OrphanHeld") == 0 and p.count("UnknownFlow") == 2


def test_resets_pass_and_end_the_question():
    p = Pair()
    rst = p.s_packet(S_SEQ, S_ACK, RST | ACK, (MpTcpRst(transient=False, reason=1),))
    assert _in(p, rst) == [ACCEPT]  # (a RST ends whatever it is: never held)
    _in(p, _peer(p))
    assert _out(p, p.g_packet(G_SEQ, G_RCV, RST)) == [ACCEPT]
    assert not p.conv.orphans.entries


def test_an_answer_after_the_ttl_is_not_taken():
    p = Pair()
    _in(p, _peer(p))
    p.now += OR.TTL + 1
    assert _out(p, _guest_answer(p, seq=S_ACK)) == [ACCEPT]
    assert p.count("OrphanReset") == 0 and not p.conv.orphans.entries


def test_the_orphan_table_is_bounded():
    p = Pair()
    p.conv.orphans.cap = 3
    for port in range(5):
        p.sport = 1000 + port
        p.now += 0.01
        _in(p, _peer(p))
    keys = list(p.conv.orphans.entries)
    assert len(keys) == 3 and [k[3] for k in keys] == [1002, 1003, 1004]  # (oldest out first)


def test_a_known_flow_is_not_an_orphan():
    p = Pair()
    p.established()
    _, got = p.inn(p.s_data_pkt(b"y" * 100))
    assert got is not None and p.count("OrphanHeld") == 0


def test_a_guest_segment_with_mptcp_options_is_taken_as_its_own_unasked():
    """(A native MPTCP connection the table forgot, idle: the guest speaking first needs no
    held segment to be known again.)"""
    p = Pair()
    assert _out(p, _guest_answer(p, mptcp=(Dss(data_ack=5),))) == [ACCEPT]
    (flow,) = p.conv.flows.values()
    assert flow.state is State.GUEST_MPTCP and p.count("OrphanGuestMPTCP") == 0
    assert _in(p, _peer(p)) == [ACCEPT] and p.count("OrphanHeld") == 0


def test_an_ack_just_above_the_held_seq_fits_and_one_past_the_gate_does_not():
    p = Pair()
    _in(p, _peer(p))
    assert _out(p, _guest_answer(p, 0x55555555, (S_SEQ + OR.GATE) & M32)) == [ACCEPT]  # (outside)
    acts = _out(p, _guest_answer(p, 0x55555555, (S_SEQ + OR.GATE - 1) & M32))
    assert type(acts[0]) is Drop and p.count("OrphanReset") == 1 and p.count("OrphanMisfit") == 1


def test_a_guest_segment_without_ack_decides_nothing():
    p = Pair()
    _in(p, _peer(p))
    assert _out(p, p.g_packet(S_ACK, 0, PSH, payload=b"z")) == [ACCEPT]  # (its seq would fit)
    assert p.count("OrphanReset") == 0 and p.count("OrphanMisfit") == 0 and p.conv.orphans.entries


def test_a_connection_taken_as_the_guests_own_is_evicted_as_one():
    """The GUEST_MPTCP flow an answer makes is in that state's eviction class (the cheapest),
    not the half-open one it was made in: a full table loses it before a guest's newer
    half-open flow."""
    from middlebox.core import Config

    p = Pair(Config(max_flows=2))
    p.out(p.g_syn())  # a half-open flow of the guest's (port 40000)
    p.gport = 40001
    p.now += 1
    _in(p, _peer(p))
    _out(p, _guest_answer(p, mptcp=(Dss(data_ack=5),)))  # GUEST_MPTCP, newer than the SYN's
    p.gport = 40002
    p.out(p.g_syn())  # the table is full: one goes
    assert sorted(k[1] for k in p.conv.flows) == [40000, 40002]
    assert p.count("FlowEvictedPassive") == 1
