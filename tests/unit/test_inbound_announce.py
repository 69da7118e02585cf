"""Inbound (issue 9): the uplink addresses announced to the peer (ADD_ADDR with the v1 HMAC,
resent until echoed, withdrawn with REMOVE_ADDR when the uplink goes down) and the peer's
joins at those addresses answered by the middlebox (Direction.LOCAL, as the ruleset queues
them)."""

from __future__ import annotations

import ipaddress

import pytest

from middlebox.core import Config, Direction, Drop, Inject
from middlebox.core.announce import ANNOUNCE_TRIES
from middlebox.wire import (AddAddr, Dss, MpJoinAck, MpJoinSyn, MpJoinSynAck, MpTcpRst, RemoveAddr, add_addr_hmac,
                            build_options, encode_tcp_options, join_hmac, key_token, parse_options)

from tests.unit.test_core_harness import ACK, M32, RST, SERVER_KEY, SYN, check_wire, make_packet
from tests.unit.test_inbound import _flow, _mp, new_pair
from tests.unit.test_subflow_table import UPLINKS

PORT = 61999  # the top of the default join range: the port we announce
PEER_PORT = 47000
R_A = 0x1122334455667788 & 0xFFFFFFFF


def _pair(v6=False, **kw):
    cfg = dict(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0)
    cfg.update(kw)
    return new_pair(config=Config(**cfg), v6=v6)


def _adds(actions):
    """(packet, ADD_ADDR) of each ADD_ADDR the actions inject."""
    out = []
    for a in actions:
        if isinstance(a, Inject):
            pkt, opts = _mp(a.data)
            out += [(a.data, o) for o in opts if type(o) is AddAddr]
    return out


def _established(p):
    """The handshake; returns the ADD_ADDRs it produced."""
    from tests.unit.test_inbound import guest_synack, peer_syn, third_ack

    p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    p.c_key = _mp(synack)[1][0].sndr_key
    p.g_rcv = (p.s_isn + 1) & M32
    actions, _ = p.inn(third_ack(p))
    return _adds(actions)


def _addr(text):
    return ipaddress.ip_address(text).packed


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_uplinks_are_announced_with_the_v1_hmac_on_a_bare_ack(v6):
    p = _pair(v6=v6)
    adds = _established(p)
    assert [o.addr_id for _, o in adds] == [1, 2]
    for (buf, o), up in zip(adds, UPLINKS[:2]):
        pkt = check_wire(buf)[0]
        assert o.addr == _addr(up.addr6 if v6 else up.addr4) and o.port == PORT and not o.echo
        # the peer checks it with our key then its own (we are the sender)
        assert o.hmac == add_addr_hmac(p.c_key, SERVER_KEY, o.addr_id, o.addr, PORT)
        # a pure ACK of subflow 1 from the guest's address: the guest's next seq, the peer's
        # next byte acked, no DSS (an IPv6 one with its port and HMAC leaves no room), no
        # timestamps (PAWS)
        assert pkt.flags == ACK and pkt.payload_len == 0
        assert (pkt.sport, pkt.dport) == (p.gport, p.sport)
        assert pkt.seq == (p.g_isn + 1) & M32 and pkt.ack == p.s_nxt
        assert [type(x) for x in _mp(buf)[1]] == [AddAddr]
        assert parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off).ts_val == -1
    assert p.count("AddAddrTX") == 2


def test_nothing_is_announced_before_the_join_policy_says_so():
    p = _pair(join_after_bytes=4000, join_after_ms=60000)
    assert _established(p) == []
    actions, _ = p.out(p.g_data(b"x" * 1000))
    assert _adds(actions) == [] and p.conv.next_deadline() is None
    actions, _ = p.out(p.g_data(b"x" * 3500))
    assert [o.addr_id for _, o in _adds(actions)] == [1, 2]


def test_resent_until_echoed_then_given_up():
    p = _pair()
    _established(p)
    t0 = p.now
    assert p.conv.next_deadline() == pytest.approx(t0 + 1.0, abs=0.01)
    # the peer echoes id 1 only
    o1 = AddAddr(True, 1, _addr(UPLINKS[0].addr4), PORT)
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (o1,)))
    assert p.count("AddAddrEchoRX") == 1
    sent = []
    for dt in (1.01, 3.02, 7.03, 15.04, 40):
        sent.append([o.addr_id for _, o in _adds(p.conv.tick(t0 + dt))])
    assert sent == [[2], [2], [2], [], []]  # 1 + 3 resends, 1 s, 2 s, 4 s apart
    assert p.count("AddAddrTX") == 2 + ANNOUNCE_TRIES - 1 and p.count("AddAddrUnechoed") == 1
    assert p.conv.announcing == {} and p.conv.next_deadline() is None
    # an echo of something we never announced is ignored
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (AddAddr(True, 9, _addr("192.0.2.99"), PORT),)))
    assert p.count("AddAddrEchoRX") == 1 and p.count("AddAddrIgnored") == 1


def test_the_uplink_of_subflow_1_is_not_announced():
    p = _pair()
    net = ipaddress.ip_network("10.0.0.0/8")  # the harness's peer lives there
    p.conv.set_routes([(4, net.network_address.packed, 8, 1)])
    assert [o.addr_id for _, o in _established(p)] == [2]


def test_v0_and_outbound_connections_announce_nothing():
    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0, version=0))
    assert _established(p) == [] and p.count("AddAddrTX") == 0
    from tests.unit.test_core_harness import Pair
    q = Pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0))
    q.established()
    assert q.count("AddAddrTX") == 0 and q.conv.announcing == {}


# -- joins at an announced uplink address ------------------------------------------------------


def _join_syn(p, dst, port=PORT, token=None, isn=50000, src="10.9.9.9"):
    opt = MpJoinSyn(False, 0, key_token(p.c_key, 1) if token is None else token, R_A)
    tcp = encode_tcp_options(mss=1400, wscale=7, sack_perm=True)
    return make_packet(src, dst, PEER_PORT, port, isn, 0, SYN, build_options(tcp, (opt,)))


def _local(p, buf):
    return p.conv.handle(buf, Direction.LOCAL, p.now)


def _joined_at_uplink(p, up) -> None:
    """The peer's join at uplink `up` (announced): its SYN, our SYN/ACK, its third ACK with
    the right HMAC."""
    (synack,) = [a.data for a in _local(p, _join_syn(p, up.addr4)) if isinstance(a, Inject)]
    pkt, opts = _mp(synack)
    mac = join_hmac(SERVER_KEY, p.c_key, R_A, opts[0].nonce, 1)[:20]
    _local(p, make_packet("10.9.9.9", up.addr4, PEER_PORT, PORT, 50001, (pkt.seq + 1) & M32, ACK,
                          build_options(b"", (MpJoinAck(mac),))))


def test_a_join_at_an_announced_uplink_is_answered_from_it():
    from middlebox.core.table import SubflowState as SS

    p = _pair()
    _established(p)
    up = UPLINKS[1]
    actions = _local(p, _join_syn(p, up.addr4))
    assert isinstance(actions[0], Drop)
    (synack,) = [a.data for a in actions if isinstance(a, Inject)]
    pkt, opts = _mp(synack)
    (sa,) = opts
    assert isinstance(sa, MpJoinSynAck) and sa.addr_id == up.id  # the uplink's id, not 0
    assert (pkt.src, pkt.sport, pkt.flags) == (_addr(up.addr4), PORT, SYN | ACK)
    assert sa.hmac == join_hmac(p.c_key, SERVER_KEY, sa.nonce, R_A, 1)[:8]
    assert p.count("PassiveJoinSynRX") == 1 and p.count("PassiveJoinAtUplink") == 1
    assert p.count("JoinSynHusk") == 0  # dropped: the host's own address, nothing to confirm
    path = _flow(p).mp.paths[1]
    assert path.uplink is up and path.state is SS.SYN_RCVD
    mac = join_hmac(SERVER_KEY, p.c_key, R_A, sa.nonce, 1)[:20]
    ack3 = make_packet("10.9.9.9", up.addr4, PEER_PORT, PORT, 50001, (pkt.seq + 1) & M32, ACK,
                       build_options(b"", (MpJoinAck(mac),)))
    (ack4,) = [a.data for a in _local(p, ack3) if isinstance(a, Inject)]
    assert [type(o) for o in _mp(ack4)[1]] == [Dss] and path.state is SS.ESTABLISHED
    assert p.count("PassiveJoinEstablished") == 1


@pytest.mark.parametrize("where", ["other-port", "unannounced-uplink", "unknown-token"])
def test_joins_elsewhere_at_the_uplinks_are_refused(where):
    p = _pair()
    p.conv.set_routes([(4, bytes([10, 0, 0, 0]), 8, 1)])  # uplink 1 carries subflow 1: not announced
    _established(p)
    buf = {"other-port": lambda: _join_syn(p, UPLINKS[1].addr4, port=PORT - 1),
           "unannounced-uplink": lambda: _join_syn(p, UPLINKS[0].addr4),
           "unknown-token": lambda: _join_syn(p, UPLINKS[1].addr4, token=key_token(p.c_key, 1) ^ 1)}[where]()
    actions = _local(p, buf)
    (rst,) = [a.data for a in actions if isinstance(a, Inject)]
    pkt, opts = _mp(rst)
    assert pkt.flags & RST and [type(o) for o in opts] == [MpTcpRst]
    assert _flow(p).mp is None and p.count("JoinToGuestRefused") == 1


def test_a_join_at_an_uplink_that_is_down_is_refused():
    p = _pair()
    _established(p)
    p.conv.uplink_event("up2", False, p.now)
    actions = _local(p, _join_syn(p, UPLINKS[1].addr4))
    assert any(isinstance(a, Inject) and check_wire(a.data)[0].flags & RST for a in actions)


# -- uplinks going down and up -----------------------------------------------------------------


def _rms(actions):
    out = []
    for a in actions:
        if isinstance(a, Inject):
            out += [o.addr_ids for o in _mp(a.data)[1] if type(o) is RemoveAddr]
    return out


def test_an_uplink_down_is_withdrawn_and_announced_again_when_up():
    p = _pair()
    _established(p)
    down = p.conv.uplink_event("up2", False, p.now)
    assert _rms(down) == [(2,)] and p.count("RmAddrTX") == 1
    assert [a.addr_id for a in _flow(p).announced] == [1]
    up = p.conv.uplink_event("up2", True, p.now + 0.5)
    assert [o.addr_id for _, o in _adds(up)] == [2]
    # an uplink never announced to this peer (down before it was) is not withdrawn
    p.conv.uplink_event("up2", False, p.now + 2)
    q = _pair()
    q.conv.uplink_event("up1", False, q.now)
    assert [o.addr_id for _, o in _established(q)] == [2]
    assert _rms(q.conv.uplink_event("up1", False, q.now)) == []


def test_an_uplink_down_with_a_subflow_on_it_says_remove_addr_once():
    p = _pair()
    _established(p)
    _joined_at_uplink(p, UPLINKS[1])
    down = p.conv.uplink_event("up2", False, p.now)
    assert _rms(down) == [(2,)], down  # the dead subflow's, not a second one
    assert any(isinstance(a, Inject) and check_wire(a.data)[0].flags & RST for a in down)


def test_an_uplink_back_after_its_subflow_died_is_announced_again():
    p = _pair()
    _established(p)
    _joined_at_uplink(p, UPLINKS[1])
    p.conv.uplink_event("up2", False, p.now)
    back = p.conv.uplink_event("up2", True, p.now + 0.5)
    assert [o.addr_id for _, o in _adds(back)] == [2], back
