"""Orphans a killed predecessor recorded (its state file, --state-dir): reset whatever their
numbers, the peer first told with MP_FASTCLOSE (its key), then RSTs at both rcv_nxt. And what
the core gives the shell to record (Converter.recorded, Converter.fresh)."""

from __future__ import annotations

import pytest

from middlebox.core import ACCEPT, Direction
from middlebox.core import orphans as OR
from middlebox.core.events import Drop, Inject
from middlebox.wire import MpFastclose, mptcp_options, parse_packet

from tests.unit.test_core_harness import ACK, RST, SERVER_KEY, Pair
from tests.unit.test_orphans import G_RCV, G_SEQ, M32, S_ACK, S_SEQ, _b, _guest_answer, _in, _out, _peer

PEER_KEY = 0x1122334455667788
FAR = (G_RCV + OR.GATE + 12345) & M32, (G_SEQ + 0x40000000) & M32  # fits neither test


def _key(p):
    return (_b(p.g_addr), p.gport, _b(p.s_addr), p.sport)


@pytest.mark.parametrize("v6", [False, True])
def test_a_recorded_orphan_is_reset_whatever_its_numbers_the_peer_fast_closed(v6):
    p = Pair(v6=v6)
    assert p.conv.orphans.learn({_key(p): PEER_KEY}, p.now, 100) == 1
    _in(p, _peer(p, seq=FAR[0], ack=FAR[1]))
    acts = _out(p, _guest_answer(p))  # numbers far from the held segment's
    assert type(acts[0]) is Drop and all(type(a) is Inject for a in acts[1:]), acts
    pkts = [(parse_packet(a.data), a.data) for a in acts[1:]]
    to_guest, (fc, fc_data), to_peer = pkts[0][0], pkts[1], pkts[2][0]
    assert to_guest.flags == RST and to_guest.seq == G_RCV and to_guest.dport == p.gport
    # the peer: an ACK at its rcv_nxt (the held segment's ack) acking the held seq, with its key
    assert fc.flags == ACK and fc.seq == FAR[1] and fc.ack == FAR[0] and fc.dport == p.sport
    (opt,) = [o for o in mptcp_options(fc_data, fc) if type(o) is MpFastclose]
    assert opt.rcvr_key == PEER_KEY
    assert to_peer.flags == RST and to_peer.seq == FAR[1] and to_peer.dport == p.sport
    assert p.count("OrphanReset") == 1 and p.count("OrphanKnown") == 1 and p.count("OrphanMisfit") == 0
    assert not p.conv.orphans.known and not p.conv.orphans.entries  # used once


def test_a_record_without_a_key_resets_with_rsts_only():
    p = Pair()
    p.conv.orphans.learn({_key(p): None}, p.now, 100)
    _in(p, _peer(p, seq=FAR[0], ack=FAR[1]))
    acts = _out(p, _guest_answer(p))
    assert [parse_packet(a.data).flags for a in acts[1:]] == [RST, RST]
    assert p.count("OrphanKnown") == 1


def test_a_recorded_connection_whose_guest_speaks_mptcp_is_still_its_own():
    from middlebox.wire import Dss
    p = Pair()
    p.conv.orphans.learn({_key(p): PEER_KEY}, p.now, 100)
    _in(p, _peer(p))
    assert _out(p, _guest_answer(p, mptcp=(Dss(data_ack=5),))) == [ACCEPT]
    assert p.count("OrphanReset") == 0 and p.count("OrphanGuestMPTCP") == 1


def test_records_expire_and_other_connections_keep_the_numbers_test():
    p = Pair()
    other = (_b(p.g_addr), p.gport + 1, _b(p.s_addr), p.sport)
    p.conv.orphans.learn({other: PEER_KEY}, p.now, 100)
    _in(p, _peer(p, seq=FAR[0], ack=FAR[1]))
    _out(p, _guest_answer(p))
    assert p.count("OrphanMisfit") == 1 and p.count("OrphanReset") == 0  # (not the recorded one)
    assert other in p.conv.recorded(p.now)  # carried for a successor while believed
    p.now += OR.KNOWN_TTL + 1
    assert other not in p.conv.recorded(p.now) and not p.conv.orphans.known


def test_learn_is_bounded():
    p = Pair()
    recs = {(_b(p.g_addr), 1000 + i, _b(p.s_addr), 80): i for i in range(50)}
    assert p.conv.orphans.learn(recs, p.now, 10) == 10


def test_recorded_holds_converting_flows_with_the_peers_key_and_fresh_names_them_at_once():
    p = Pair()
    p.conv.recording = True
    p.handshake()
    assert p.conv.fresh == [_key(p)]  # the transition into a converting state
    assert p.conv.recorded(p.now) == {_key(p): SERVER_KEY}
    p.conv.stop(p.now)  # reset: nothing a kill could orphan
    assert p.conv.recorded(p.now) == {}


def test_fresh_stays_empty_unless_the_shell_records():
    p = Pair()
    p.handshake()
    assert p.conv.fresh == [] and p.conv.recorded(p.now) == {_key(p): SERVER_KEY}


def _join_segment(p, jkey, seq=0x22220000, ack=0x33330000):
    from tests.unit.test_core_harness import make_packet
    from middlebox.wire import Dss, build_options, encode_tcp_options
    local, lport, remote, rport = jkey
    import ipaddress
    opts = build_options(encode_tcp_options(), (Dss(data_ack=1, data_seq=2, subflow_seq=1, data_len=100),))
    return make_packet(str(ipaddress.ip_address(remote)), str(ipaddress.ip_address(local)), rport, lport,
                       seq, ack, ACK, opts, b"y" * 100)


def test_a_recorded_extra_subflows_segment_fast_closes_the_peer_there_and_asks_the_guest():
    """Subflow 1's path down at the restart: only the joins' segments reach the successor, at
    join ports no subflow owns. Recorded, the peer is reset there (MP_FASTCLOSE, RST) and the
    guest asked; its plain answer resets it (the connection's record)."""
    import ipaddress
    p = Pair()
    jkey = (ipaddress.ip_address("10.9.0.1").packed, 61000, _b(p.s_addr), p.sport)
    p.conv.orphans.learn({_key(p): PEER_KEY, jkey: (_key(p), PEER_KEY)}, p.now, 100)
    seg = _join_segment(p, jkey)
    p.now += 0.001
    acts = p.conv.handle(seg, Direction.LOCAL, p.now)
    assert type(acts[0]) is Drop and len(acts) == 4, acts
    fc, rst, probe = (parse_packet(a.data) for a in acts[1:])
    assert (fc.src, fc.sport, fc.dst, fc.dport) == jkey and fc.flags == ACK and fc.seq == 0x33330000
    (opt,) = [o for o in mptcp_options(acts[1].data, fc) if type(o) is MpFastclose]
    assert opt.rcvr_key == PEER_KEY
    assert (rst.src, rst.sport) == jkey[:2] and rst.flags == RST and rst.seq == 0x33330000
    assert (probe.src, probe.sport, probe.dst, probe.dport) == (_b(p.s_addr), p.sport, _b(p.g_addr), p.gport)
    assert probe.flags == ACK and p.count("OrphanJoin") == 1 and p.count("OrphanProbe") == 1
    acts = _out(p, _guest_answer(p))  # the guest's plain answer
    assert type(acts[0]) is Drop and parse_packet(acts[1].data).flags == RST
    assert parse_packet(acts[1].data).seq == G_RCV and p.count("OrphanKnown") == 1
    # the record is used up: the subflow's next segment is an unknown join port's
    p.now += 0.001
    assert len(p.conv.handle(seg, Direction.LOCAL, p.now)) == 1 and p.count("JoinUnknown") == 1


def test_an_unrecorded_join_port_segment_is_dropped_as_before():
    import ipaddress
    p = Pair()
    jkey = (ipaddress.ip_address("10.9.0.1").packed, 61000, _b(p.s_addr), p.sport)
    p.conv.orphans.learn({_key(p): PEER_KEY}, p.now, 100)  # the connection, not this subflow
    acts = p.conv.handle(_join_segment(p, jkey), Direction.LOCAL, p.now + 0.001)
    assert len(acts) == 1 and type(acts[0]) is Drop and p.count("JoinUnknown") == 1


def test_recorded_names_a_multipath_flows_live_extra_subflows():
    from tests.unit.test_subflow_table import MPair
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    rec = p.conv.recorded(p.now)
    (key,) = [k for k, v in rec.items() if type(v) is not tuple]
    joins = {k: v for k, v in rec.items() if type(v) is tuple}
    (jkey, (conn, peer_key)), = joins.items()
    assert conn == key and peer_key == rec[key] is not None
    assert jkey in p.conv.joins


@pytest.mark.parametrize("end", ["syn", "rst"])
def test_a_record_is_forgotten_once_its_4tuple_starts_afresh(end):
    """The record names a connection, not a 4-tuple forever: once the guest ends it (its RST)
    or opens a new connection on the same 4-tuple (its SYN), a forged MPTCP segment naming
    that 4-tuple must meet the numbers test again, or anyone who knows the 4-tuple resets a
    live plain connection blind for KNOWN_TTL after the restart."""
    p = Pair(server_mptcp=False)
    p.conv.orphans.learn({_key(p): PEER_KEY}, p.now, 100)
    if end == "rst":
        _out(p, p.g_packet(G_SEQ, 0, RST))
    p.handshake()  # a new connection on the 4-tuple; the peer plain: fallback
    assert p.conv.flows[_key(p)].state.name == "FALLBACK"
    p.now += p.cfg.fallback_timeout + 1  # idle: the table forgets it (nothing lost)
    p.conv.tick(p.now)
    assert _key(p) not in p.conv.flows
    _in(p, _peer(p, seq=FAR[0], ack=FAR[1]))  # forged, numbers blind
    acts = _out(p, p.g_packet(p.g_nxt, p.g_rcv, ACK))  # the live guest's answer
    assert acts == [ACCEPT], acts
    assert p.count("OrphanReset") == 0 and p.count("OrphanKnown") == 0
