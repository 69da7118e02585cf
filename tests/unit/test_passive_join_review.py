"""Adversarial review of the joins a peer opens at a guest's address (inbound role, issue 9;
RFC 8684 §3.2 with the middlebox as responder B) and of how the rest of multipath.py treats
such a passive path. One test per defect found (each failed before its fix), then guards for
what was checked and found right."""

import pytest

from middlebox.core import ACCEPT, Config, Direction, Inject, State
from middlebox.core.table import SubflowState as SS
from middlebox.wire import (AddAddr, Dss, MpFastclose, MpJoinSyn, MpTcpRst, add_addr_hmac, build_options,
                            encode_tcp_options, key_idsn, key_token, mptcp_options, parse_packet)

from tests.unit.test_core_harness import ACK, FIN, M64, PSH, RST, SERVER_KEY, SYN, check_wire, make_packet
from tests.unit.test_inbound import (PEER2, PEER2_PORT, R_A, _answer, _flow, _mp, inbound, join_ack3, join_syn,
                                     new_pair)
from tests.unit.test_subflow_table import UPLINKS

_IN = Direction.IN


def _joined(p, syn=None):
    """A passive join from PEER2 established: (its path, our SYN/ACK)."""
    syn = syn or join_syn(p)
    synack = _answer(p.conv.handle(syn, _IN, p.now))
    p.conv.handle(join_ack3(p, synack), _IN, p.now)
    spkt = check_wire(syn)[0]
    (path,) = [q for q in _flow(p).mp.paths if (q.remote, q.rport, q.state) == (spkt.src, spkt.sport, SS.ESTABLISHED)]
    assert path.passive and path.state is SS.ESTABLISHED
    return path, synack


def _syn_from(p, src, sport, dst=None, dport=None, v6=False, mss=1460, token=None):
    opt = MpJoinSyn(False, 1, key_token(p.c_key, 1) if token is None else token, R_A)
    tcp = encode_tcp_options(mss=mss, wscale=7, sack_perm=True)
    return make_packet(src, p.g_addr if dst is None else dst, sport, p.gport if dport is None else dport,
                       30000, 0, SYN, build_options(tcp, (opt,)), v6=v6)


def _injected(actions):
    return [a.data for a in actions if isinstance(a, Inject)]


def _join_syns(actions):
    out = []
    for buf in _injected(actions):
        pkt = parse_packet(buf)
        if pkt.flags & SYN and any(type(o) is MpJoinSyn for o in mptcp_options(buf, pkt)):
            out.append(buf)
    return out


def _sf1_reset_by_the_peer(p):
    """The peer resets subflow 1 (its first interface went away): the connection lives on
    the join (RFC 8684 §3.6); the guest sees nothing."""
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, RST))
    assert got is None and _flow(p).mp.paths[0].state is SS.CLOSED


# -- 1. the middlebox opens subflows of its own on an inbound connection once it is multipath -----


def test_add_addr_after_a_passive_join_opens_no_join_of_ours():
    """Inbound connections: the peer opens the subflows (flow.no_join; issue 9). Before the
    fix, once a passive join had made the flow multipath, the peer's ADD_ADDR (a Linux client
    with a `signal` endpoint) made the middlebox open MP_JOIN SYNs from every uplink address
    to it: subflows from the hypervisor's own addresses on a connection the guest serves."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0))
    inbound(p)
    _joined(p)
    addr = bytes([203, 0, 113, 80])
    mac = add_addr_hmac(p.s_key, p.c_key, 5, addr, None)
    actions, _ = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (AddAddr(False, 5, addr, None, mac),)))
    assert not _join_syns(actions)
    echoes = [o for b in _injected(actions) for o in mptcp_options(b, parse_packet(b)) if type(o) is AddAddr]
    assert len(echoes) == 1 and echoes[0].echo  # (still echoed)
    assert p.count("MPJoinSynTX") == 0 and len(_flow(p).mp.paths) == 2


def test_uplink_up_opens_no_join_on_an_inbound_connection():
    """Before the fix an uplink coming up made every multipath flow, inbound ones included,
    join over it to the flow's "server": the peer's initial address."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0))
    inbound(p)
    _joined(p)
    p.conv.uplink_event("up1", False, p.now)
    actions = p.conv.uplink_event("up1", True, p.now + 1)
    assert not _join_syns(actions) and p.count("MPJoinSynTX") == 0


# -- 2. a join to another address than the guest's (another guest, the other family) -----------


def test_ipv4_join_to_an_ipv6_connection_is_refused():
    """The token names an IPv6 connection; the join SYN is IPv4 (to some IPv4 address behind
    the middlebox). Before the fix it was answered and made the flow's multipath part with the
    join's IP version: every segment built from the connection's addresses (to the guest,
    subflow 1's ACKs) went out as IPv4 with the 16-byte addresses cut to 4 (the peer's data
    on the join went to 253.0.0.0, acked on arrival: lost for the guest)."""
    p = new_pair(v6=True)
    inbound(p)
    actions = p.conv.handle(_syn_from(p, "10.2.2.2", 45000, dst="10.9.9.9"), _IN, p.now)
    (rst,) = _injected(actions)
    pkt, mp = _mp(rst)
    assert pkt.flags & RST and type(mp[0]) is MpTcpRst
    assert _flow(p).mp is None and p.count("JoinToGuestRefused") == 1


def test_join_to_another_guest_address_or_port_is_refused():
    """Joins go to the guest's address and port (we announce no other; our SYN/ACK names
    address id 0, the initial subflow's). Before the fix a join to another guest's address
    (or another port of this guest) with this connection's token was answered from there,
    and its data delivered into this connection."""
    for dst, dport in (("10.0.0.77", None), (None, 8080)):
        p = new_pair()
        inbound(p)
        actions = p.conv.handle(_syn_from(p, PEER2, PEER2_PORT, dst=dst, dport=dport), _IN, p.now)
        assert check_wire(_answer(actions))[0].flags & RST, (dst, dport)
        assert _flow(p).mp is None and not p.conv.joins


# -- 3. limits ----------------------------------------------------------------------------------


def test_max_subflows_one_refuses_the_first_passive_join():
    """max_subflows 1: subflow 1 only (start() opens nothing). Before the fix the limit was
    checked only once the flow was multipath: the first passive join was always answered."""
    p = new_pair(config=Config(max_subflows=1))
    inbound(p)
    rst = _answer(p.conv.handle(join_syn(p), _IN, p.now))
    assert check_wire(rst)[0].flags & RST and _mp(rst)[1][0].reason == 2  # lack of resources
    assert _flow(p).mp is None


def test_failed_joins_do_not_lock_joins_out_for_the_connections_life():
    """Closed passive paths stayed in mp.paths and counted against MAX_PATHS: seven join SYNs
    left without a third ACK (anyone who saw one join SYN has the token), or seven real joins
    that failed, and no join was ever answered again for this connection. A closed passive
    path that no run refers to is reused now (memory stays bounded: MAX_PATHS paths)."""
    p = new_pair()
    inbound(p)
    for i in range(7):
        p.conv.handle(_syn_from(p, "10.66.0.1", 20000 + i), _IN, p.now)
    p.now += 11
    p.conv.tick(p.now)
    mp = _flow(p).mp
    assert all(q.state is SS.CLOSED for q in mp.paths[1:]) and not p.conv.joins
    path, _ = _joined(p)  # answered, established
    assert len(mp.paths) <= 8 and mp.paths[path.index] is path


def test_a_gracefully_closed_join_does_not_count_as_live():
    """max_subflows 2: the peer closes its join with FIN (address removed), we answer FIN,
    it acks ours. Before the fix the path stayed CLOSING for good and counted as live: the
    peer's next join (its interface back) was refused for the connection's life."""
    p = new_pair(config=Config(max_subflows=2))
    inbound(p)
    path, synack = _joined(p)
    lseq = check_wire(synack)[0].seq
    actions = p.conv.handle(make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, lseq + 1, FIN | ACK),
                            _IN, p.now)
    (fin,) = [b for b in _injected(actions) if check_wire(b)[0].flags & FIN]
    assert check_wire(fin)[0].dst == check_wire(join_syn(p))[0].src
    p.conv.handle(make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30002, lseq + 2, ACK), _IN, p.now)
    assert path.state is SS.CLOSING
    syn = _syn_from(p, PEER2, PEER2_PORT + 1)
    answer = check_wire(_answer(p.conv.handle(syn, _IN, p.now)))[0]
    assert answer.flags == SYN | ACK


# -- 4. the join's own TCP negotiation ----------------------------------------------------------


def test_syn_again_with_other_options_changes_what_we_assume_too():
    """The peer's SYN again without window scale and SACK_PERM (a stack that drops options on
    a retry): our SYN/ACK again had no window scale but still SACK_PERM (RFC 2018: only to a
    SYN that offered it), and the path kept scaling the peer's windows by the first SYN's
    shift (a window 128 times too large) and sending SACK blocks."""
    p = new_pair()
    inbound(p)
    _answer(p.conv.handle(join_syn(p), _IN, p.now))
    plain = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30000, 0, SYN,
                        build_options(encode_tcp_options(mss=1460), (MpJoinSyn(False, 1, key_token(p.c_key, 1), R_A),)))
    again = _answer(p.conv.handle(plain, _IN, p.now))
    _, opts = check_wire(again)
    assert opts.wscale == -1 and not opts.sack_perm
    path = _flow(p).mp.paths[1]
    assert path.rwscale == 0 and not path.sack


def test_data_on_a_join_respects_the_peers_mss():
    """RFC 9293 §3.7.1 / RFC 6691: segments no larger than the MSS the peer announced on that
    subflow, less our options (DSS: 28 bytes at most). The join SYN's MSS was ignored: guest
    segments (sized for subflow 1's MSS) went out whole on a join whose path takes less (a
    client's second interface on a tunnel or cellular link): dropped there, the join went
    stale then dead."""
    p = new_pair()
    inbound(p)
    path, _ = _joined(p, _syn_from(p, PEER2, PEER2_PORT, mss=1000))
    _sf1_reset_by_the_peer(p)
    actions, _ = p.out(p.g_data(b"q" * 1400))
    on_join = [check_wire(b)[0] for b in _injected(actions) if check_wire(b)[0].dport == PEER2_PORT]
    assert sum(q.payload_len for q in on_join) == 1400
    assert all(q.payload_len + (q.doff - 20) <= 1000 for q in on_join), [q.payload_len for q in on_join]


# -- 5. MP_FASTCLOSE on a join ----------------------------------------------------------------------


def test_fastclose_on_the_join_resets_the_guest_when_subflow_1_is_gone():
    """RFC 8684 §3.5: MP_FASTCLOSE with our key closes the connection, on whichever subflow.
    A client that moved to its second interface (subflow 1 reset) and then aborts sends it on
    the join only; before the fix a join's RST was taken as that subflow's loss and the
    option ignored: the guest's connection stayed open with no subflow left (a service waiting
    for a request waits for good)."""
    p = new_pair()
    inbound(p)
    path, synack = _joined(p)
    _sf1_reset_by_the_peer(p)
    lseq = check_wire(synack)[0].seq
    rst = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, lseq + 1, RST | ACK,
                      build_options(b"", (MpFastclose(p.c_key), MpTcpRst(False, 0))))
    actions = p.conv.handle(rst, _IN, p.now)
    to_guest = [check_wire(b)[0] for b in _injected(actions) if check_wire(b)[0].dport == p.gport]
    assert any(q.flags & RST and q.seq == p.g_rcv for q in to_guest), actions
    assert path.state is SS.CLOSED and not p.conv.joins
    # a wrong key changes nothing but the subflow
    p = new_pair()
    inbound(p)
    path, synack = _joined(p)
    _sf1_reset_by_the_peer(p)
    lseq = check_wire(synack)[0].seq
    bad = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, lseq + 1, RST | ACK,
                      build_options(b"", (MpFastclose(p.c_key ^ 1),)))
    actions = p.conv.handle(bad, _IN, p.now)
    assert not [b for b in _injected(actions) if check_wire(b)[0].flags & RST]
    # Option A (on an ACK): the guest reset, and our RST to the peer on that subflow
    p = new_pair()
    inbound(p)
    path, synack = _joined(p)
    _sf1_reset_by_the_peer(p)
    lseq = check_wire(synack)[0].seq
    ack = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, lseq + 1, ACK,
                      build_options(b"", (MpFastclose(p.c_key),)))
    rsts = [check_wire(b)[0] for b in _injected(p.conv.handle(ack, _IN, p.now)) if check_wire(b)[0].flags & RST]
    assert sorted(q.dport for q in rsts) == sorted([p.gport, PEER2_PORT])
    assert path.state is SS.CLOSED and p.count("FastCloseRX") == 1


# -- 6. the live view ---------------------------------------------------------------------------------


def test_flow_view_does_not_put_a_passive_join_on_subflow_1s_uplink():
    """Cosmetic: _uid gave a passive join subflow 1's uplink (flow.sf1_uplink, the route to the
    peer's first address); it leaves by the route to the peer's other address: unknown (0)."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2]))
    p.conv.set_routes([(4, bytes(4), 0, 1)])  # default route by uplink 1
    inbound(p)
    _joined(p)
    view = p.conv.flow_subflows(_flow(p))
    assert view[0]["uplink_id"] == 1 and view[1]["uplink_id"] == 0


# -- 7. open (not fixed here) ----------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="open: unknown-token joins are refused even for a guest that "
                   "speaks MPTCP itself (needs the converter to know which guests do)")
def test_join_to_a_guest_that_speaks_mptcp_itself_reaches_it():
    """A guest whose own MPTCP connection (GUEST_MPTCP: left alone end to end) announced an
    address: a Linux server's PM joins it (mptcp_pm_nl_add_addr_received), with the guest's
    token, which the middlebox cannot know. refuse_join answers RST + MP_TCPRST on the
    guest's behalf, so such guests never get a join in (the same before this feature: the
    first inbound cut refused every join)."""
    from tests.unit.test_core_harness import Pair

    p = Pair()
    opts = encode_tcp_options(mss=1460) + bytes([30, 4, 0x01, 0x01])
    p.out(p.g_syn(options=opts))
    assert _flow(p).state is State.GUEST_MPTCP
    join = make_packet(p.s_addr, p.g_addr, 47000, p.gport, 1234, 0, SYN,
                       build_options(encode_tcp_options(mss=1460), (MpJoinSyn(False, 3, 0x5EED5EED, 99),)))
    assert p.conv.handle(join, _IN, p.now) == [ACCEPT]


# -- guards: checked and found right ------------------------------------------------------------------


def test_guard_hmac_roles_and_sizes():
    """SYN/ACK: HMAC(Key-B + Key-A, R-B + R-A), leftmost 64 bits, we being B; the third ACK
    checked against HMAC(Key-A + Key-B, R-A + R-B), 160 bits; one with the roles swapped is
    refused."""
    from middlebox.wire import MpJoinAck, join_hmac

    p = new_pair()
    inbound(p)
    synack = _answer(p.conv.handle(join_syn(p), _IN, p.now))
    pkt, (sa,) = _mp(synack)
    assert sa.hmac == join_hmac(p.c_key, SERVER_KEY, sa.nonce, R_A)[:8] and len(sa.hmac) == 8
    swapped = join_hmac(p.c_key, SERVER_KEY, sa.nonce, R_A)[:20]
    ack = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, pkt.seq + 1, ACK,
                      build_options(b"", (MpJoinAck(swapped),)))
    rst = _answer(p.conv.handle(ack, _IN, p.now))
    assert check_wire(rst)[0].flags & RST and _flow(p).mp.paths[1].state is SS.CLOSED


def test_guard_old_token_after_a_restart_and_closing_states_are_refused():
    p = new_pair()
    inbound(p)
    old = key_token(p.c_key, 1)
    for st in (State.CLOSING, State.TIME_WAIT, State.FALLBACK, State.CLOSED):
        _flow(p).state = st
        assert check_wire(_answer(p.conv.handle(join_syn(p), _IN, p.now)))[0].flags & RST, st
    # the peer starts again on the same 4-tuple (the flow CLOSED): a new key, the old token dead
    p.s_isn = (p.s_isn + 5000) & 0xFFFFFFFF
    p.s_nxt = (p.s_isn + 1) & 0xFFFFFFFF
    p.g_isn += 77777
    p.g_nxt = p.g_isn + 1
    inbound(p)
    assert key_token(p.c_key, 1) != old and _flow(p).state is State.ESTABLISHED
    syn = _syn_from(p, PEER2, PEER2_PORT, token=old)
    assert check_wire(_answer(p.conv.handle(syn, _IN, p.now)))[0].flags & RST


def test_guard_a_join_flood_stays_bounded_and_release_forgets_the_joins():
    p = new_pair()
    inbound(p)
    for i in range(200):
        p.conv.handle(_syn_from(p, "10.66.0.1", 20000 + i), _IN, p.now)
    mp = _flow(p).mp
    assert len(mp.paths) == 8 and len(p.conv.joins) == 7
    assert p.count("JoinToGuestRefused") == 193
    # the flow expires: its joins go with it
    p.conv.tick(p.now + 10 ** 6)
    assert not p.conv.flows and not p.conv.joins and not p.conv.mp_flows
    assert p.count("CoreBug") == 0


def test_guard_data_both_ways_on_the_join_after_subflow_1_is_gone():
    """The guest's bytes go on the join with DSS mappings; the peer's reach the guest at their
    place; no crash anywhere (tick, flow_view, uplink events) on a passive path."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2]))
    inbound(p)
    path, synack = _joined(p)
    _sf1_reset_by_the_peer(p)
    actions, _ = p.out(p.g_data(b"hello guest"))
    (seg,) = [b for b in _injected(actions) if check_wire(b)[0].dport == PEER2_PORT]
    pkt, mp = _mp(seg)
    (dss,) = [o for o in mp if type(o) is Dss]
    assert seg.endswith(b"hello guest") and dss.data_seq == (key_idsn(p.c_key, 1) + 1) & M64
    lseq = check_wire(synack)[0].seq
    data = make_packet(PEER2, p.g_addr, PEER2_PORT, p.gport, 30001, lseq + 1 + 11, ACK | PSH,
                       build_options(b"", (Dss(data_ack=None, data_seq=(p.s_idsn + 1) & M64, dsn64=True,
                                               subflow_seq=1, data_len=5),)), b"hello")
    actions = p.conv.handle(data, _IN, p.now)
    to_guest = [b for b in _injected(actions) if check_wire(b)[0].dport == p.gport]
    assert any(b.endswith(b"hello") and check_wire(b)[0].seq == (p.s_isn + 1) & 0xFFFFFFFF for b in to_guest)
    view = p.conv.flow_subflows(_flow(p))
    assert [v["index"] for v in view] == [0, 1] and view[1]["uplink"] is None
    p.conv.uplink_event("up1", False, p.now)
    p.conv.uplink_event("up1", True, p.now)
    for dt in (0.5, 2, 5, 20):
        p.conv.tick(p.now + dt)
    assert p.count("CoreBug") == 0 and p.count("RmAddrTX") == 0  # never REMOVE_ADDR of id 0
