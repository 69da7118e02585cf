"""Server address announcements (RFC 8684 §3.4; issue 6 scope: joins "to addresses the server
announces with ADD_ADDR (HMAC checked)") and the MP_CAPABLE C bit (§3.1: no join to the
server's initial address).

An ADD_ADDR with the right HMAC is echoed on the subflow it came on, every time it comes, and
the address becomes a join target over every live uplink; one with a wrong HMAC, an echo, a v0
one, or one on a segment outside the window changes nothing; REMOVE_ADDR forgets a target. The
guest never sees any of these options (MPair.classify and Pair.inn check every packet)."""

from __future__ import annotations

import socket

import pytest

from middlebox.core import Config, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.wire import AddAddr, MpCapable, RemoveAddr, add_addr_hmac, parse_packet

from tests.unit.test_subflow_table import ACK, UPLINKS, MPair, mp_config, wire_check

SERVER2_4 = socket.inet_aton("203.0.113.80")
SERVER2_6 = socket.inet_pton(socket.AF_INET6, "2001:db8:2::80")


def _announce(p: MPair, addr_id=7, addr=None, port=None, good=True, echo=False):
    addr = (SERVER2_6 if p.v6 else SERVER2_4) if addr is None else addr
    if echo:
        return AddAddr(True, addr_id, addr, port)
    mac = add_addr_hmac(p.s_key, p.c_key, addr_id, addr, port)
    if not good:
        mac = bytes(b ^ 0x5A for b in mac)
    return AddAddr(False, addr_id, addr, port, mac)


def _sf1_ack_with(p: MPair, opt):
    """A pure ACK from the server on subflow 1 carrying `opt` (Linux drops the DSS from an
    ADD_ADDR ACK when they do not fit together: no DSS here)."""
    return p.s_packet(p.s_nxt, p.g_nxt, ACK, (opt,))


def _injects(actions):
    return [wire_check(a.data, True) for a in actions if isinstance(a, Inject)]


def _echoes(actions):
    return [(pkt, o) for pkt, _, mp in _injects(actions) for o in mp if type(o) is AddAddr]


def _syns_to(actions, addr):
    return [pkt for pkt, _, _ in _injects(actions) if pkt.flags == 0x02 and pkt.dst == addr]


def _single_path(n_uplinks=2, v6=False, **kw):
    """Established, not multipath yet (join policy not met): joins come later."""
    p = MPair(n_uplinks, v6=v6, config=Config(uplinks=UPLINKS[:n_uplinks], join_after_bytes=1 << 40,
                                                join_after_ms=10_000, **kw))
    p.established()
    assert p.flow.mp is None
    return p


@pytest.mark.parametrize("v6", [False, True])
def test_valid_add_addr_on_subflow_1_is_echoed_and_joined_once_multipath(v6):
    p = _single_path(v6=v6)
    port = None if v6 else 8443  # (v6 with a port and timestamps: 42 bytes, no room)
    o = _announce(p, port=port)
    actions, got = p.inn(_sf1_ack_with(p, o))
    assert got is not None  # the ACK itself reaches the guest, stripped (Pair.inn checks)
    ((pkt, echo),) = _echoes(actions)
    assert echo == AddAddr(True, 7, o.addr, port) and echo.hmac is None
    assert pkt.dst == parse_packet(p.s_ack()).src and pkt.dport == p.sport  # on subflow 1
    assert pkt.seq == p.g_nxt  # the guest's next byte (no later than the server expects)
    (_, opts, _), = _injects(actions)
    assert opts.ts_val == -1  # no timestamps: PAWS would drop an echo with the guest's older TSval
    assert p.count("AddAddrRX") == 1 and p.flow.peer_addrs == [(7, o.addr, port)]
    # multipath starts: joins to the initial address over each uplink, to the announced
    # one (its port) over each uplink
    p.now += 10
    actions, _ = p.inn(p.s_ack())
    server = p.flow.mp.server
    assert len(_syns_to(actions, server)) == 2
    to2 = _syns_to(actions, o.addr)
    assert len(to2) == 2 and {s.dport for s in to2} == {port or p.sport}
    assert {s.src for s in to2} == {p.addr_of(u) for u in UPLINKS[:2]}
    assert p.count("AddAddrJoin") == 2


def test_add_addr_with_a_wrong_hmac_is_ignored_and_not_echoed():
    p = _single_path()
    actions, got = p.inn(_sf1_ack_with(p, _announce(p, good=False)))
    assert got is not None and not _echoes(actions)
    assert p.count("AddAddrBadHmac") == 1 and p.count("AddAddrRX") == 0
    assert not p.flow.peer_addrs


def test_add_addr_echo_form_from_the_server_is_ignored():
    p = _single_path()
    actions, _ = p.inn(_sf1_ack_with(p, _announce(p, echo=True)))
    assert not _echoes(actions) and p.count("AddAddrIgnored") == 1 and not p.flow.peer_addrs


def test_add_addr_on_a_segment_outside_the_window_changes_nothing():
    p = _single_path()
    buf = p.s_packet((p.s_nxt + 0x20000000) & 0xFFFFFFFF, p.g_nxt, ACK, (_announce(p),))
    actions, _ = p.inn(buf)
    assert not _echoes(actions) and p.count("AddAddrRX") == 0 and not p.flow.peer_addrs


def test_resent_add_addr_is_echoed_again_and_opens_no_second_join():
    p = MPair(2)
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    o = _announce(p)
    a1, _ = p.inn(_sf1_ack_with(p, o))
    assert len(_echoes(a1)) == 1 and len(_syns_to(a1, o.addr)) == 2  # multipath: at once
    a2, _ = p.inn(_sf1_ack_with(p, o))
    assert len(_echoes(a2)) == 1 and not _syns_to(a2, o.addr)
    assert p.count("AddAddrRX") == 2 and p.count("AddAddrJoin") == 2
    assert len(p.flow.mp.paths) == 5


def test_add_addr_on_a_join_is_echoed_on_that_join():
    p = MPair(2)
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    j = p.joins[2]
    o = _announce(p, addr_id=3)
    acts = p.j_in(p.j_ack(j, mptcp=(p.dack(), o)))
    (pkt, echo), = _echoes(acts)
    assert (pkt.src, pkt.sport) == (j.local, j.lport) and echo.echo and echo.addr_id == 3
    assert len(_syns_to(acts, o.addr)) == 2
    # and one far outside that join's window: nothing
    p2 = MPair(2)
    p2.go_multipath()
    p2.join_up(1)
    j2 = p2.joins[1]
    acts = p2.j_in(p2.j_ack(j2, mptcp=(p2.dack(), _announce(p2)), seq=j2.s_nxt + 0x1000000))
    assert not _echoes(acts) and p2.count("AddAddrRX") == 0


def test_subflow_limit_and_the_list_bound_hold():
    p = MPair(2, config=mp_config(2, max_subflows=4))
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    a, _ = p.inn(_sf1_ack_with(p, _announce(p)))
    assert len(_syns_to(a, SERVER2_4)) == 1 and len(p.flow.mp.paths) == 4
    # addresses beyond MAX_PEER_ADDRS are echoed (so the server stops resending) but not kept
    for i in range(MP.MAX_PEER_ADDRS + 3):
        p.inn(_sf1_ack_with(p, _announce(p, addr_id=20 + i, addr=bytes((10, 9, 9, i)))))
    assert len(p.flow.peer_addrs) == MP.MAX_PEER_ADDRS
    assert len(p.flow.mp.paths) == 4


def test_remove_addr_forgets_the_target_and_a_rejoin_skips_it():
    p = MPair(2)
    p.go_multipath()
    for u in (1, 2):
        p.join_up(u)
    o = _announce(p, addr_id=9)
    p.inn(_sf1_ack_with(p, o))
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), RemoveAddr((9,)))))
    assert p.flow.peer_addrs == [] and p.count("RmAddrRX") == 1
    p.now += 1
    p.conv.uplink_event("up2", False, p.now)
    acts = p.conv.uplink_event("up2", True, p.now + 1)
    assert not _syns_to(acts, o.addr)


def test_c_bit_keeps_joins_off_the_initial_address_and_add_addr_opens_them():
    p = MPair(2)
    _, syn = p.out(p.g_syn())
    p.inn(p.s_synack(syn, mptcp=(MpCapable(1, 0x01 | 0x20, p.s_key),)))
    p.g_rcv = (p.s_isn + 1) & 0xFFFFFFFF
    _, ack = p.out(p.g_ack())
    p.s_receive(ack)
    _, sent = p.out(p.g_data(b"hello"))
    p.s_receive(sent)
    actions, _ = p.inn(p.s_ack())
    assert not _injects(actions) and p.flow.mp is None
    assert p.count("JoinInitialDenied") == 1 and p.flow.no_initial_join
    o = _announce(p)
    actions, _ = p.inn(_sf1_ack_with(p, o))
    assert len(_echoes(actions)) == 1
    syns = [pkt for pkt, _, _ in _injects(actions) if pkt.flags == 0x02]
    assert syns and all(s.dst == o.addr for s in syns) and len(syns) == 2
    assert p.flow.mp is not None


def test_v0_add_addr_is_ignored():
    p = MPair(2, config=Config(uplinks=UPLINKS[:2], version=0, join_after_bytes=1 << 40, join_after_ms=1 << 40))
    p.established()
    actions, _ = p.inn(_sf1_ack_with(p, AddAddr(False, 4, SERVER2_4, None, b"\0" * 8)))
    assert not _echoes(actions) and p.count("AddAddrIgnored") == 1


def test_dss_and_add_addr_together_still_ack_the_guest():
    p = _single_path()
    n = len(p.to_guest)
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), _announce(p))))
    assert got is not None and len(p.to_guest) == n + 1 and len(_echoes(actions)) == 1


def test_add_addr_before_our_side_is_established_is_taken():
    """Linux announces once its side is established: the ADD_ADDR can come before the DATA_ACK
    that establishes ours (MPC_PENDING). Ignoring it left a download single-path: the server
    announces its next address only after the echo, and resends after a timer."""
    p = MPair(2, config=Config(uplinks=UPLINKS[:2], join_after_bytes=1 << 40, join_after_ms=10_000))
    p.handshake()
    assert p.flow.state.name == "MPC_PENDING"
    actions, _ = p.inn(_sf1_ack_with(p, _announce(p)))
    assert len(_echoes(actions)) == 1 and p.flow.peer_addrs and p.count("AddAddrRX") == 1


def test_echo_during_an_upload_sits_at_the_guests_highest_seq():
    """The server's ADD_ADDR acks guest data up to some point; more guest data is in flight.
    An echo at the ADD_ADDR's ack lies before the server's rcv_wup by the time it lands:
    Linux drops it as out of window (measured: the server resent its ADD_ADDR for good)."""
    p = _single_path()
    old = p.g_nxt
    for _ in range(3):
        _, sent = p.out(p.g_data(b"x" * 500))
        p.s_receive(sent)
    buf = p.s_packet(p.s_nxt, old, ACK, (_announce(p),))
    actions, _ = p.inn(buf)
    ((pkt, _),) = _echoes(actions)
    assert pkt.seq == p.g_nxt != old
