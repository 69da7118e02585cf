"""Adversarial review of the inbound role (issue 9): one test per defect found (they failed
before the fixes next to them), plus guards for what the fixes must keep working."""

from middlebox.core import Config, Converter, Counter, Direction, Drop, Inject, State
from middlebox.wire import (MpCapable, MpFastclose, MpJoinSyn, build_options, dss_checksum, encode_tcp_options,
                            parse_packet, rewrite)

from tests.unit.test_core_flows import _joined
from tests.unit.test_core_harness import ACK, M32, M64, PSH, RST, SERVER_KEY, SYN, Pair, check_wire, make_packet
from tests.unit.test_inbound import PEER_ISN, _flow, _mp, guest_synack, inbound, new_pair, peer_syn, third_ack

_IN = Direction.IN


def _syn_rcvd(p):
    """Peer SYN, guest SYN/ACK (our key out): the flow waits for the peer's third ACK."""
    p.inn(peer_syn(p))
    _, synack = p.out(guest_synack(p))
    (mpc,) = _mp(synack)[1]
    p.c_key = mpc.sndr_key
    p.csum = p.s_csum or mpc.checksum
    p.g_rcv = (p.s_isn + 1) & M32
    return synack


# -- 1. forged / unacceptable segments in SYN_RCVD change nothing (RFC 9293 §3.10.7.4, RFC 5961) --


def test_ack_outside_the_window_does_not_fall_back():
    """A blind attacker's ACK (seq far outside the guest's window) in SYN_RCVD: before the fix
    any ACK without a valid MP_CAPABLE turned the flow into FALLBACK (a downgrade with no
    knowledge of the ISNs); the genuine third ACK then passed unconverted."""
    p = new_pair()
    _syn_rcvd(p)
    for opts in ((), (MpCapable(1, 0x01, 0x4242, 0x4343),)):  # plain, and a wrong key
        actions, got = p.inn(p.s_packet(p.s_nxt + 0x20000000, p.g_nxt, ACK, opts))
        assert isinstance(actions[0], Drop) and got is None
        assert _flow(p).state is State.SYN_RCVD
    p.inn(third_ack(p))
    assert _flow(p).state is State.ESTABLISHED and p.count("InboundFallback") == 0


def test_ack_not_acking_the_synack_does_not_fall_back():
    """In-window seq but an ack that is not the guest's ISN+1 (unacceptable in SYN-RECEIVED,
    RFC 9293 §3.10.7.4): nothing changes."""
    p = new_pair()
    _syn_rcvd(p)
    for opts in ((), (MpCapable(1, 0x01, 0x4242, 0x4343),)):
        actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt + 12345, ACK, opts))
        assert isinstance(actions[0], Drop) and got is None
        assert _flow(p).state is State.SYN_RCVD
    p.inn(third_ack(p))
    assert _flow(p).state is State.ESTABLISHED


def test_rst_outside_the_window_does_not_close():
    """A RST far outside the window in SYN_RCVD: before the fix it closed the flow (the guest
    ignores it and its connection goes on unconverted)."""
    p = new_pair()
    _syn_rcvd(p)
    actions, got = p.inn(p.s_packet(p.s_nxt + 0x20000000, 0, RST, ()))
    assert isinstance(actions[0], Drop) and _flow(p).state is State.SYN_RCVD
    # at the guest's rcv_nxt it resets
    actions, got = p.inn(p.s_packet(p.s_nxt, 0, RST, ()))
    assert got is not None and _flow(p).state is State.CLOSED


def test_guest_synack_with_another_isn_then_a_plain_ack_still_falls_back():
    """(guard for the ack check) A guest SYN/ACK with another ISN (SYN cookies across their
    time slot) leaves plain: the peer's plain ACK of it must still fall back, not be dropped."""
    p = new_pair()
    _syn_rcvd(p)
    other = p.g_packet(p.g_isn + 5555, (p.s_isn + 1) & M32, SYN | ACK, options=p.g_opts(syn=True))
    _, sent = p.out(other)
    assert not check_wire(sent)[1].mptcp
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_isn + 5556, ACK, ()))
    assert got is not None and _flow(p).state is State.FALLBACK


def test_fail_open_synack_then_plain_ack_still_falls_back():
    """(guard) The guest's SYN/ACK passed the queue unseen (inbound == 1): the peer's plain ACK
    falls back as before."""
    p = new_pair()
    p.inn(peer_syn(p))
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, ()))
    assert got is not None and _flow(p).state is State.FALLBACK


# -- 2. MP_FASTCLOSE before the third ACK ----------------------------------------------------------


def test_fastclose_before_the_third_ack_resets_the_guest():
    """The third ACK was lost; the peer (it has our key from the SYN/ACK) fast-closes on an ACK
    (RFC 8684 §3.5 option A). Before the fix: no row, the ACK reached the guest stripped and
    completed its handshake (a connection the peer had closed), the flow stayed SYN_RCVD."""
    p = new_pair()
    _syn_rcvd(p)
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (MpFastclose(p.c_key),)))
    assert got is not None and check_wire(got)[0].flags & RST, "the guest gets a RST, not an ACK"
    assert check_wire(got)[0].seq == PEER_ISN + 1
    assert _flow(p).state is State.CLOSED and p.count("StateViolation") == 0
    (rst,) = [a for a in actions if isinstance(a, Inject)]
    assert check_wire(rst.data)[0].flags & RST  # option A: the peer gets its RST


# -- 3. SYNs whose MP_CAPABLE we cannot answer -----------------------------------------------------


def test_syn_of_another_version_makes_no_flow():
    """A v0 SYN to a v1 middlebox (and v1 to v0): plain TCP. Before the fix a flow was made and
    stayed NEW: every packet of the connection was a StateViolation and classified in full."""
    for cfg_version, peer_version in ((1, 0), (0, 1)):
        p = new_pair(config=Config(version=cfg_version), server_version=peer_version)
        p.conv.handle(peer_syn(p), _IN, p.now)  # not ours: untouched
        _, synack = p.out(guest_synack(p))
        assert not check_wire(synack)[1].mptcp
        p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, ()))
        p.out(p.g_data(b"plain"))
        assert p.count("StateViolation") == 0 and not p.conv.flows


def test_syn_without_a_crypto_bit_or_with_b_is_plain():
    """(guard, correct before) RFC 8684 §3.1: D..H all 0 -> the MP_CAPABLE is invalid and
    ignored; B=1 not understood -> ignored (parse_mptcp refuses them)."""
    for flags in (0x00, 0x80, 0x41):
        p = new_pair()
        p.conv.handle(peer_syn(p, mpc=MpCapable(1, flags)), _IN, p.now)  # not ours: untouched
        _, synack = p.out(guest_synack(p))
        assert not check_wire(synack)[1].mptcp, hex(flags)


# -- 4. MP_JOIN SYNs --------------------------------------------------------------------------------


def test_join_syn_on_a_known_four_tuple_never_reaches_the_guest():
    """A join SYN on the 4-tuple of a flow the converter still knows (closed, fallback):
    before the fix it reached the guest as a plain SYN (a new connection for its stack)."""
    join = MpJoinSyn(False, 2, 0xCCAD45AC, 0x01020304)
    for end in ("rst", "fallback"):
        p = new_pair()
        if end == "rst":
            inbound(p)
            p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=b""))
            assert _flow(p).state is State.CLOSED
        else:
            p.inn(peer_syn(p, mpc=()))  # plain: not ours ...
            p.inn(peer_syn(p))
            p.out(guest_synack(p))
            p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, ()))
            assert _flow(p).state is State.FALLBACK
        actions = p.conv.handle(peer_syn(p, mpc=join, isn=PEER_ISN + 99), _IN, p.now)
        assert isinstance(actions[0], Drop), end
        assert p.count("JoinToGuestRefused") == 1


def test_join_refusal_rst_takes_seq_zero():
    """RFC 9293 §3.10.7.1: the reset for a segment without ACK has seq 0 (ack = SEG.SEQ +
    SEG.LEN); before the fix it took the SYN's (meaningless) ack field as its seq, which the
    sender of the SYN chooses."""
    p = new_pair()
    join = MpJoinSyn(False, 2, 0xCCAD45AC, 0x01020304)
    buf = peer_syn(p, mpc=join)
    pkt = check_wire(buf)[0]
    buf = rewrite(buf, parse_packet(buf), ack=0x11223344)  # an arbitrary ack field, no ACK flag
    actions = p.conv.handle(buf, _IN, p.now)
    (inj,) = [a for a in actions if isinstance(a, Inject)]
    rst = check_wire(inj.data)[0]
    assert rst.seq == 0 and rst.ack == (pkt.seq + 1) & M32


# -- 5. the flow table: a peer's SYN (anyone's) must not push out the guest's flows ------------------


def test_peer_syn_flood_evicts_no_flow_of_the_guest():
    """Spoofed MP_CAPABLE SYNs from anywhere make flows now. Before the fix SYN_RCVD was a
    half-open class flow: a flood evicted the guest's own half-open outbound flows (and, with
    no cheaper class left, converting ones: a silent downgrade); now a peer's SYN evicts only
    flows that cost nothing to forget (passive ones, other SYN_RCVD flows) or is not tracked."""
    conv = Converter(Config(max_flows=4))
    est = _joined(conv, 40999, 10.0)
    est.established()
    half = _joined(conv, 41000, 11.0)
    half.out(half.g_syn())
    for i in range(30):
        q = Pair(guest_isn=1, server_isn=PEER_ISN + i, gport=80, sport=50000 + i)
        q.conv = conv
        q.now = 20.0 + i
        q.inn(peer_syn(q))
    ports = {k[1] for k in conv.flows}
    assert 40999 in ports and 41000 in ports, ports
    assert conv.counters[Counter.FlowEvictedActive] == 0
    assert len(conv.flows) <= 4


def test_syn_with_another_isn_after_the_synack_takes_nothing_away():
    """A SYN with another ISN once the guest's SYN/ACK carried our key: before the fix it
    restarted the flow with a new key, so the genuine third ACK echoed a key no longer ours and
    the connection fell back (one forged SYN: a downgrade). Now it is dropped; the genuine
    third ACK converts."""
    p = new_pair()
    _syn_rcvd(p)
    actions, got = p.inn(peer_syn(p, isn=PEER_ISN + 100000))
    assert isinstance(actions[0], Drop) and _flow(p).server_isn == PEER_ISN
    p.inn(third_ack(p))
    assert _flow(p).state is State.ESTABLISHED and p.count("InboundKeyMismatch") == 0


def test_a_peer_that_really_started_again_gets_through():
    """(guard) The same 4-tuple reused by a new connection of the peer while the old one waits
    for its third ACK: the guest's SYN/ACK retransmission draws the peer's RST (RFC 9293
    §3.10.7.3, seq = the SYN/ACK's ack: the guest's rcv_nxt), which ends the flow; the retried
    SYN then starts it again."""
    p = new_pair()
    _syn_rcvd(p)
    new = PEER_ISN + 100000
    p.inn(peer_syn(p, isn=new))  # dropped
    p.out(guest_synack(p))  # retransmitted: acks the old ISN
    _, got = p.inn(p.s_packet(PEER_ISN + 1, 0, RST, ()))
    assert got is not None and _flow(p).state is State.CLOSED
    p.inn(peer_syn(p, isn=new))
    flow = _flow(p)
    assert flow.state is State.SYN_RCVD and flow.server_isn == new and flow.inbound == 1


def test_forged_syn_before_the_guest_answered_costs_a_fallback_at_most():
    """(guard) A SYN with another ISN before the guest's SYN/ACK restarts the flow (as the
    commit has it); the guest's SYN/ACK for the real SYN then leaves plain and the peer's plain
    ACK must fall back, not be dropped as outside the forged ISN's window."""
    p = new_pair()
    p.inn(peer_syn(p))
    p.inn(peer_syn(p, isn=PEER_ISN + 100000))
    _, sent = p.out(guest_synack(p))  # acks the real SYN
    assert not check_wire(sent)[1].mptcp
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, ()))
    assert got is not None and _flow(p).state is State.FALLBACK


# -- guards for what was checked and found right -----------------------------------------------------


def test_first_data_form_over_a_super_packet_with_checksums():
    """(guard, correct before) The third ACK lost; the peer's first data is a TSO super-packet:
    every segment repeats the MP_CAPABLE data form (one mapping, IDSN+1 at ssn 1, its
    checksum over all of it, RFC 8684 §3.1). Every byte reaches the guest in place."""
    p = new_pair(server_checksum=True)
    _syn_rcvd(p)
    data = bytes(range(256)) * 12
    ck = dss_checksum((p.s_idsn + 1) & M64, 1, len(data), data)
    mpc = MpCapable(1, 0x81, SERVER_KEY, p.c_key, len(data), ck)
    got = b""
    for i in range(0, len(data), 1024):
        _, g = p.inn(p.s_packet(p.s_isn + 1 + i, p.g_nxt, ACK | PSH, (mpc,), data[i:i + 1024]))
        pkt = check_wire(g)[0]
        assert pkt.seq == (PEER_ISN + 1 + i) & M32
        got += g[pkt.payload_off:pkt.length]
    assert got == data and _flow(p).state is State.ESTABLISHED
    assert p.count("DataCsumErr") == 0 and p.count("MappingUncovered") == 0


def test_window_scaling_only_when_both_syns_carry_it():
    """(guard, correct before) RFC 7323 §2.2."""
    for peer_ws, guest_ws, want in ((7, 7, (7, 7)), (7, -1, (0, 0)), (-1, 7, (0, 0))):
        p = new_pair()
        opts = encode_tcp_options(mss=1460, wscale=peer_ws, sack_perm=True, ts_val=9, ts_ecr=0)
        p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn, 0, SYN,
                          build_options(opts, (MpCapable(1, 0x01),))))
        p.out(guest_synack(p, wscale=guest_ws))
        f = _flow(p)
        assert (f.guest_wscale, f.server_wscale) == want
