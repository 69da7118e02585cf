"""The inbound role (issue 9): an MPTCP peer connects to a plain-TCP service in a guest.

RFC 8684 §3.1 with the roles swapped: the peer's SYN reaches the guest without MP_CAPABLE; the
guest's SYN/ACK leaves with our key; the peer's third ACK (both keys) is checked and stripped;
from then on the flow converts as an outbound one does (the same table and handlers: the guest's
segments get DSS mappings in its own sequence space, the peer's are placed by theirs). A third
ACK without MP_CAPABLE, or a SYN retried without it, is plain TCP. MP_JOIN SYNs towards a guest
never reach it. The harness's "server" is the MPTCP peer here (its validation of our options
and mappings applies as it is).
"""

import pytest

from middlebox.core import ACCEPT, Config, Direction, Drop, Inject, State
from middlebox.wire import MpCapable, MpFastclose, MpJoinSyn, MpTcpRst, build_options, dss_checksum, encode_tcp_options

from tests.unit.test_core_harness import ACK, FIN, M32, M64, PSH, RST, SERVER_KEY, SYN, Pair, check_wire, make_packet, mptcp_of

PEER_ISN, GUEST_ISN = 7000, 90000
_IN = Direction.IN


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _mp(buf):
    pkt, opts = check_wire(buf)
    return pkt, mptcp_of(buf, pkt, opts)


def peer_syn(p, mpc=None, isn=None, mss=1460):
    """The peer's SYN towards the guest: MP_CAPABLE (v1: no key) unless `mpc` says otherwise."""
    if mpc is None:
        mpc = MpCapable(p.s_version, 0x01 | (0x80 if p.s_csum else 0),
                        SERVER_KEY if p.s_version == 0 else None)
    opts = encode_tcp_options(mss=mss, wscale=7, sack_perm=True, ts_val=9, ts_ecr=0)
    return make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn if isn is None else isn, 0, SYN,
                       build_options(opts, (mpc,) if mpc else ()), v6=p.v6)


def guest_synack(p, wscale=7, sack=True):
    opts = encode_tcp_options(mss=1460, wscale=wscale, sack_perm=sack, ts_val=5, ts_ecr=9)
    return p.g_packet(p.g_isn, (p.s_isn + 1) & M32, SYN | ACK, options=opts)


def third_ack(p, payload=b"", key=None):
    """The peer's third ACK: its key and ours echoed; with payload, the MP_CAPABLE data form."""
    mpc = MpCapable(p.s_version, 0x01 | (0x80 if p.csum else 0), SERVER_KEY,
                    p.c_key if key is None else key)
    if payload:
        csum = dss_checksum((p.s_idsn + 1) & M64, 1, len(payload), payload) if p.csum else None
        mpc = MpCapable(mpc.version, mpc.flags, mpc.sndr_key, mpc.rcvr_key, len(payload), csum)
    buf = p.s_packet(p.s_nxt, p.g_nxt, ACK | (PSH if payload else 0), (mpc,), payload)
    p.s_nxt = (p.s_nxt + len(payload)) & M32
    return buf


def inbound(p, payload=b""):
    """SYN, SYN/ACK, third ACK. Returns (what the guest got for the SYN, what the peer got
    for the SYN/ACK, what the guest got for the third ACK). The harness's peer learns our key
    from the SYN/ACK, as a client does."""
    _, syn = p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    (mpc,) = _mp(synack)[1]
    p.c_key = mpc.sndr_key
    p.csum = p.s_csum or mpc.checksum
    p.g_rcv = (p.s_isn + 1) & M32
    _, ack = p.inn(third_ack(p, payload))
    return syn, synack, ack


def new_pair(**kw):
    return Pair(guest_isn=GUEST_ISN, server_isn=PEER_ISN, **kw)


# -- the handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_handshake_on_the_guests_behalf(v6):
    p = new_pair(v6=v6)
    syn, synack, ack = inbound(p)
    # the guest sees plain TCP: no MPTCP option, the MSS clamped for our DSS
    pkt, opts = check_wire(syn)
    assert not opts.mptcp and pkt.flags == SYN and pkt.seq == PEER_ISN
    assert opts.mss == p.cfg.mss_limit(6 if v6 else 4) and opts.wscale == 7 and opts.sack_perm
    # the peer gets MP_CAPABLE v1 with our key only (12 bytes), H set; no A, and no C: the
    # peer may join at the guest's address (the middlebox answers)
    pkt, mp = _mp(synack)
    (mpc,) = mp
    assert isinstance(mpc, MpCapable) and mpc.version == 1 and mpc.sndr_key is not None and mpc.rcvr_key is None
    assert mpc.flags & 0x01 and not mpc.no_join_src and not mpc.checksum
    assert pkt.seq == p.g_isn and pkt.ack == PEER_ISN + 1
    # the third ACK reaches the guest without the option; the flow converts
    pkt, opts = check_wire(ack)
    assert not opts.mptcp and pkt.ack == p.g_isn + 1
    flow = _flow(p)
    assert flow.state is State.ESTABLISHED and flow.inbound == 2 and flow.no_join
    assert flow.remote_key == SERVER_KEY and flow.local_key == p.c_key
    assert (p.count("MPCapableSYNRX"), p.count("MPCapableSYNACKTX"), p.count("MPCapableACKRX")) == (1, 1, 1)


def test_data_both_ways_after_the_handshake():
    p = new_pair()
    inbound(p)
    # the guest (the service) answers: DSS in its own sequence space, DATA_ACK of the peer's
    for chunk in (b"220 hello\r\n", b"x" * 1000):
        _, sent = p.out(p.g_data(chunk))
        p.s_receive(sent)
    assert p.s_stream() == b"220 hello\r\n" + b"x" * 1000
    assert p.s_data_ack == (p.s_idsn + 1) & M32
    # the peer's data: placed by its mapping, stripped, its DATA_ACK becomes the guest's ack
    _, got = p.inn(p.s_data_pkt(b"HELO there"))
    pkt, opts = check_wire(got)
    assert not opts.mptcp and pkt.seq == PEER_ISN + 1 and got[pkt.payload_off : pkt.length] == b"HELO there"
    assert pkt.ack == p.g_nxt
    assert _flow(p).state is State.ESTABLISHED and p.count("DSSTX") == 2 and p.count("DSSRX") == 1


def test_checksums_when_the_peer_asks():
    p = new_pair(server_checksum=True)
    _, synack, _ = inbound(p)
    assert _mp(synack)[1][0].checksum and _flow(p).checksum
    _, sent = p.out(p.g_data(b"checked"))
    p.s_receive(sent)  # validates the DSS checksum
    assert p.s_stream() == b"checked"


def test_first_data_in_the_mp_capable_form_after_a_lost_third_ack():
    """RFC 8684 §3.1: the peer's first data carries MP_CAPABLE with the data-level length (the
    third ACK may have been lost): its key arrives with it, the payload is delivered."""
    p = new_pair(server_checksum=True)
    _, syn = p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    p.c_key = _mp(synack)[1][0].sndr_key
    p.csum = True
    _, got = p.inn(third_ack(p, b"GET / HTTP/1.0\r\n\r\n"))
    pkt, opts = check_wire(got)
    assert not opts.mptcp and got[pkt.payload_off : pkt.length] == b"GET / HTTP/1.0\r\n\r\n"
    assert pkt.seq == PEER_ISN + 1
    assert _flow(p).state is State.ESTABLISHED and _flow(p).remote_key == SERVER_KEY


def test_first_data_in_the_mp_capable_form_after_the_third_ack():
    """The peer sent its third ACK, then its first data still in the MP_CAPABLE form (it has
    not heard from us yet): the same implied mapping, DSN IDSN+1 at subflow seq 1."""
    p = new_pair()
    inbound(p)
    _, got = p.inn(third_ack(p, b"first"))
    pkt, opts = check_wire(got)
    assert not opts.mptcp and got[pkt.payload_off : pkt.length] == b"first" and pkt.seq == PEER_ISN + 1
    # and on the next segment, a DSS mapping as usual
    p.s_nxt = (PEER_ISN + 6) & M32
    _, got = p.inn(p.s_data_pkt(b"second"))
    pkt, _ = check_wire(got)
    assert pkt.seq == PEER_ISN + 6 and got[pkt.payload_off : pkt.length] == b"second"


def test_first_data_form_with_a_bad_checksum_is_dropped():
    p = new_pair(server_checksum=True)
    p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    p.c_key = _mp(synack)[1][0].sndr_key
    mpc = MpCapable(1, 0x81, SERVER_KEY, p.c_key, 5, 0x1234)
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | PSH, (mpc,), b"wrong"))
    assert isinstance(actions[0], Drop) and got is None and p.count("DataCsumErr") == 1


# -- falling back, and what is not ours --------------------------------------------------------


def test_third_ack_without_mp_capable_falls_back():
    p = new_pair()
    p.inn(peer_syn(p))
    p.out(guest_synack(p))
    actions, _ = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, ()))
    assert actions == [ACCEPT] and _flow(p).state is State.FALLBACK and p.count("InboundFallback") == 1
    actions, _ = p.out(p.g_data(b"plain from here"))
    assert actions == [ACCEPT]  # no DSS on a plain connection


def test_third_ack_echoing_another_key_falls_back():
    p = new_pair()
    p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    p.c_key = _mp(synack)[1][0].sndr_key
    actions, got = p.inn(third_ack(p, key=p.c_key ^ 1))
    assert not check_wire(got)[1].mptcp
    assert _flow(p).state is State.FALLBACK and p.count("InboundKeyMismatch") == 1


def test_syn_retransmission_keeps_the_key_and_a_plain_retry_falls_back():
    p = new_pair()
    p.inn(peer_syn(p))
    _, a = p.out(guest_synack(p))
    p.inn(peer_syn(p))  # the same SYN again
    _, b = p.out(guest_synack(p))
    assert _mp(a)[1] == _mp(b)[1] and _flow(p).state is State.SYN_RCVD
    # Linux retries a SYN without MP_CAPABLE after losses: plain TCP
    actions, _ = p.inn(peer_syn(p, mpc=()))
    assert actions == [ACCEPT] and _flow(p).state is State.FALLBACK


def test_a_new_isn_starts_the_flow_again():
    """(review: before the guest answered; after its SYN/ACK carried our key, see
    test_inbound_review.test_syn_with_another_isn_after_the_synack_takes_nothing_away)"""
    p = new_pair()
    p.inn(peer_syn(p))
    p.inn(peer_syn(p, isn=PEER_ISN + 100000))
    flow = _flow(p)
    assert flow.state is State.SYN_RCVD and flow.server_isn == PEER_ISN + 100000 and flow.inbound == 1


def test_plain_syn_and_inbound_off_are_not_ours():
    p = new_pair()
    actions, _ = p.inn(peer_syn(p, mpc=()))
    assert actions == [ACCEPT] and not p.conv.flows and p.count("UnknownFlow") == 1
    p = Pair(Config(inbound=False))
    actions = p.conv.handle(peer_syn(p), _IN, p.now)  # as it is: a guest that speaks MPTCP gets it
    assert actions == [ACCEPT] and not p.conv.flows


def assert_husk(verdict, syn: bytes | None = None) -> None:
    """`verdict` passes a join SYN on to the guest only as a husk (multipath._husk): the same
    addresses, ports and seq, a bare RST (no ACK, no SYN), no TCP option at all, no payload,
    and a TCP checksum that is wrong (and not the right one's one's-complement twin): the
    guest drops it unanswered, conntrack confirms the SYN's entry on the way."""
    import struct

    from middlebox.core.events import Rewrite
    from middlebox.wire import parse_packet, tcp_checksum

    assert isinstance(verdict, Rewrite), verdict
    h = parse_packet(verdict.data)
    assert h.flags == RST and h.ack == 0 and h.doff == 20 and h.payload_len == 0 and len(verdict.data) == h.length
    right = tcp_checksum(verdict.data, h)
    got = struct.unpack_from("!H", verdict.data, h.ip_hlen + 16)[0]
    assert got != right and {got, right} != {0, 0xFFFF}, (got, right)
    if syn is not None:
        o = parse_packet(syn)
        assert (h.src, h.dst, h.sport, h.dport, h.seq) == (o.src, o.dst, o.sport, o.dport, o.seq)


def test_join_syn_towards_a_guest_is_refused_never_passed():
    p = new_pair()
    join = MpJoinSyn(False, 2, 0xCCAD45AC, 0x01020304)
    buf = peer_syn(p, mpc=join)
    actions = p.conv.handle(buf, _IN, p.now)
    assert_husk(actions[0], buf)  # the guest gets no MPTCP option and nothing it would take
    assert not p.conv.flows and p.count("JoinSynHusk") == 1
    (inj,) = [a for a in actions if isinstance(a, Inject)]
    pkt, mp = _mp(inj.data)
    assert pkt.flags == RST | ACK and pkt.ack == PEER_ISN + 1
    assert check_wire(buf)[0].src == pkt.dst  # back to the peer
    assert [type(o) for o in mp] == [MpTcpRst] and mp[0].reason == 3
    assert p.count("JoinToGuestRefused") == 1


def test_guest_data_before_the_peers_key_is_dropped():
    p = new_pair()
    p.inn(peer_syn(p))
    p.out(guest_synack(p))
    actions, sent = p.out(p.g_data(b"too early"))
    assert isinstance(actions[0], Drop) and p.count("InboundEarlyData") == 1


# -- closing --------------------------------------------------------------------------------------


def test_guest_reset_fast_closes_the_peers_connection():
    p = new_pair()
    inbound(p)
    actions, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=b""))
    mp = {type(o): o for o in _mp(sent)[1]}
    assert mp[MpFastclose].rcvr_key == SERVER_KEY and _flow(p).state is State.CLOSED


def test_close_both_ways():
    p = new_pair()
    inbound(p)
    _, sent = p.out(p.g_data(b"bye", fin=True))
    p.s_receive(sent)
    assert p.s_data_fin is not None and p.count("DataFinTX") == 1
    p.inn(p.s_ack())
    _, got = p.inn(p.s_bare_data_fin(fin=True))
    assert check_wire(got)[0].flags & FIN
    p.g_rcv = (p.s_nxt) & M32
    p.out(p.g_ack())
    assert _flow(p).state in (State.CLOSING, State.TIME_WAIT)


def test_v0_peer_key_on_its_syn():
    p = new_pair(config=Config(version=0))
    syn, synack, ack = inbound(p)
    (mpc,) = _mp(synack)[1]
    assert mpc.version == 0 and mpc.sndr_key is not None
    flow = _flow(p)
    assert flow.state is State.ESTABLISHED and flow.remote_key == SERVER_KEY
    _, sent = p.out(p.g_data(b"v0 data"))
    p.s_receive(sent)
    assert p.s_stream() == b"v0 data"


def test_no_joins_from_the_middlebox_on_inbound_connections():
    """With uplinks configured and the join policy met at once, an inbound connection opens no
    subflow of its own (the peer opens the subflows of a connection it started), not even to
    an address the peer announces: the ADD_ADDR is echoed, nothing else."""
    from middlebox.wire import AddAddr, add_addr_hmac

    from tests.unit.test_subflow_table import UPLINKS

    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0))
    inbound(p)
    addr = bytes([203, 0, 113, 80])
    mac = add_addr_hmac(p.s_key, p.c_key, 5, addr, None)
    actions, _ = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (AddAddr(False, 5, addr, None, mac),)))
    for _ in range(3):
        p.now += 2
        more, sent = p.out(p.g_data(b"z" * 500))
        p.s_receive(sent)
        actions += more
    injected = [_mp(a.data) for a in actions if isinstance(a, Inject)]
    assert len(injected) == 1 and not injected[0][0].flags & SYN  # the echo, and no join SYN
    (echo,) = [o for o in injected[0][1] if type(o) is AddAddr]
    assert echo.echo and p.count("AddAddrRX") == 1
    assert _flow(p).mp is None and p.count("MPJoinSynTX") == 0


# -- joins the peer opens at the guest's address (RFC 8684 §3.2, the middlebox as responder) ----

PEER2 = "10.2.2.2"
PEER2_PORT = 45000
R_A = 0x0A0B0C0D  # the peer's nonce


def join_syn(p, token=None, nonce=R_A, isn=30000, wscale=7):
    from middlebox.wire import key_token

    opt = MpJoinSyn(False, 1, key_token(p.c_key, 1) if token is None else token, nonce)
    tcp = encode_tcp_options(mss=1460, wscale=wscale, sack_perm=True)
    return make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, isn, 0, SYN, build_options(tcp, (opt,)))


def join_ack3(p, synack: bytes, good=True, isn=30000):
    from middlebox.wire import MpJoinAck, MpJoinSynAck, join_hmac

    pkt, mp = _mp(synack)
    (sa,) = [o for o in mp if type(o) is MpJoinSynAck]
    mac = join_hmac(SERVER_KEY, p.c_key, R_A, sa.nonce, 1)[:20]
    if not good:
        mac = bytes(b ^ 0x33 for b in mac)
    return make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, isn + 1, pkt.seq + 1, ACK,
                       build_options(b"", (MpJoinAck(mac),)))


def _answer(actions):
    """The one segment the middlebox answers with; the packet itself goes no further (a join
    SYN towards a guest: only as a husk, assert_husk)."""
    if not isinstance(actions[0], Drop):
        assert_husk(actions[0])
    (inj,) = [a for a in actions if isinstance(a, Inject)]
    return inj.data


def test_join_at_the_guests_address_is_answered_and_established():
    from middlebox.core.table import SubflowState as SS
    from middlebox.wire import Dss, MpJoinSynAck, join_hmac

    p = new_pair()
    inbound(p)
    synack = _answer(p.conv.handle(join_syn(p), _IN, p.now))
    pkt, mp = _mp(synack)
    (sa,) = mp
    assert isinstance(sa, MpJoinSynAck) and pkt.flags == SYN | ACK and pkt.ack == 30001
    assert (check_wire(synack)[0].src, pkt.sport) == (check_wire(join_syn(p))[0].dst, p.gport)  # from the guest's address
    assert sa.hmac == join_hmac(p.c_key, SERVER_KEY, sa.nonce, R_A, 1)[:8]  # HMAC(Key-B + Key-A, R-B + R-A)
    flow = _flow(p)
    assert flow.mp is not None and flow.mp.paths[1].state is SS.SYN_RCVD and p.count("PassiveJoinSynRX") == 1
    # the SYN again (our SYN/ACK lost): the same nonce and HMAC again
    again = _answer(p.conv.handle(join_syn(p), _IN, p.now))
    assert _mp(again)[1] == mp
    # the third ACK with the right HMAC: our fourth ACK, with the DATA_ACK
    ack4 = _answer(p.conv.handle(join_ack3(p, synack), _IN, p.now))
    pkt4, mp4 = _mp(ack4)
    assert pkt4.flags == ACK and pkt4.seq == pkt.seq + 1 and pkt4.ack == 30001
    assert [type(o) for o in mp4] == [Dss] and mp4[0].data_ack is not None
    assert flow.mp.paths[1].state is SS.ESTABLISHED and p.count("PassiveJoinEstablished") == 1
    # the third ACK again (our fourth lost): the fourth again
    assert _mp(_answer(p.conv.handle(join_ack3(p, synack), _IN, p.now)))[0].flags == ACK
    # the peer's data on the join reaches the guest at its place in the stream
    from middlebox.wire import dss_checksum  # noqa: F401 (no checksums here)
    dsn = (p.s_idsn + 1) & M64
    data = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, pkt.seq + 1, ACK | PSH,
                       build_options(b"", (Dss(data_ack=None, data_seq=dsn, dsn64=True, subflow_seq=1,
                                               data_len=5),)), b"hello")
    actions = p.conv.handle(data, _IN, p.now)
    to_guest = [a.data for a in actions if isinstance(a, Inject) and check_wire(a.data)[0].dst == check_wire(synack)[0].src]
    assert any(check_wire(b)[0].seq == PEER_ISN + 1 and b.endswith(b"hello") for b in to_guest), actions


def test_join_with_a_bad_third_ack_hmac_is_reset():
    from middlebox.core.table import SubflowState as SS

    p = new_pair()
    inbound(p)
    synack = _answer(p.conv.handle(join_syn(p), _IN, p.now))
    rst = _answer(p.conv.handle(join_ack3(p, synack, good=False), _IN, p.now))
    pkt, mp = _mp(rst)
    assert pkt.flags & RST and [type(o) for o in mp] == [MpTcpRst] and mp[0].reason == 1
    assert _flow(p).mp.paths[1].state is SS.CLOSED and p.count("PassiveJoinAckHMacFailure") == 1
    assert not [k for k in p.conv.joins if k[2:] == (check_wire(join_syn(p))[0].src, PEER2_PORT)]


def test_join_refused_before_the_connection_is_established_and_beyond_the_limit():
    p = new_pair()
    p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    p.c_key = _mp(synack)[1][0].sndr_key
    rst = _answer(p.conv.handle(join_syn(p), _IN, p.now))  # third ACK not seen yet
    assert check_wire(rst)[0].flags & RST and p.count("JoinToGuestRefused") == 1
    # max_subflows 2: one join, the next refused (lack of resources)
    p = new_pair(config=Config(max_subflows=2))
    inbound(p)
    _answer(p.conv.handle(join_syn(p), _IN, p.now))
    second = make_packet("10.3.3.3", p.g_addr, 45001, p.gport, 1, 0, SYN, check_wire(join_syn(p))[1] and
                         build_options(encode_tcp_options(mss=1460), (MpJoinSyn(False, 2, _token(p), 7),)))
    rst = _answer(p.conv.handle(second, _IN, p.now))
    assert _mp(rst)[1][0].reason == 2 and p.count("JoinToGuestRefused") == 1


def test_join_left_without_third_ack_is_reset_after_a_while():
    from middlebox.core.table import SubflowState as SS

    p = new_pair()
    inbound(p)
    _answer(p.conv.handle(join_syn(p), _IN, p.now))
    acts = p.conv.tick(p.now + 11)
    rst = [a.data for a in acts if isinstance(a, Inject)]
    assert len(rst) == 1 and check_wire(rst[0])[0].flags & RST
    assert _flow(p).mp.paths[1].state is SS.CLOSED


def _token(p):
    from middlebox.wire import key_token

    return key_token(p.c_key, 1)
