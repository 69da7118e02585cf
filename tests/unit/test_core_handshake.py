"""Outbound handshake: MP_CAPABLE on the guest SYN, the SYN/ACK, the third ACK, fallbacks,
MSS clamping (RFC 8684 §3.1, §3.7; LESSONS.md trap 8)."""

from middlebox.core import ACCEPT, Config, Counter, Direction, Rewrite, State
from middlebox.wire import Dss, MpCapable, build_options, encode_tcp_options, key_idsn, key_token

from tests.unit.test_core_harness import (
    ACK,
    FIN,
    RST,
    SERVER_KEY,
    SYN,
    Pair,
    check_wire,
    mptcp_of,
)


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def test_syn_gets_4_byte_mp_capable_v1():
    p = Pair()
    actions, syn = p.out(p.g_syn())
    assert isinstance(actions[0], Rewrite)
    pkt, opts = check_wire(syn)
    (mpc,) = mptcp_of(syn, pkt, opts)
    assert mpc == MpCapable(version=1, flags=0x01)
    assert len(opts.mptcp[0]) == 4
    # the guest's own options survive, MSS clamped for DSS-carrying segments: 1500-20-20-28
    assert opts.mss == 1432 and opts.wscale == 7 and opts.sack_perm and opts.ts_val == 1
    assert p.count("MPCapableSYNTX") == 1 and p.count("MSSClamped") == 1
    assert _flow(p).state is State.SYN_SENT


def test_syn_checksum_flag_and_v0_form():
    p = Pair(Config(checksum=True))
    _, syn = p.out(p.g_syn())
    pkt, opts = check_wire(syn)
    (mpc,) = mptcp_of(syn, pkt, opts)
    assert mpc.flags == 0x81 and mpc.sndr_key is None

    p0 = Pair(Config(version=0))
    _, syn0 = p0.out(p0.g_syn())
    pkt, opts = check_wire(syn0)
    (mpc0,) = mptcp_of(syn0, pkt, opts)
    assert mpc0.version == 0 and len(opts.mptcp[0]) == 12 and mpc0.sndr_key


def test_mss_clamp_ipv6_and_other_mtu():
    p = Pair(v6=True)
    _, syn = p.out(p.g_syn())
    assert check_wire(syn)[1].mss == 1412
    p = Pair(Config(mtu=9000))
    _, syn = p.out(p.g_syn())
    assert check_wire(syn)[1].mss == 1460  # below the limit: untouched
    assert p.count("MSSClamped") == 0


def test_syn_retransmission_is_byte_identical_and_new_isn_gets_new_key():
    p = Pair()
    _, a = p.out(p.g_syn())
    _, b = p.out(p.g_syn())
    assert a == b
    key1 = _flow(p).local_key
    p.g_isn = 777
    p.out(p.g_syn())
    assert _flow(p).local_key != key1 and _flow(p).guest_isn == 777


def test_key_is_never_in_repr():
    p = Pair()
    p.handshake()
    flow = _flow(p)
    for text in (repr(flow), repr(p.conv.flows), str(p.conv.counters)):
        assert f"{flow.local_key:x}" not in text and str(flow.local_key) not in text
        assert f"{SERVER_KEY:x}" not in text


def test_synack_recorded_stripped_and_mss_clamped():
    p = Pair()
    _, syn = p.out(p.g_syn())
    _, synack = p.inn(p.s_synack(syn))
    pkt, opts = check_wire(synack)
    assert not opts.mptcp and opts.mss == 1432 and opts.wscale == 7 and opts.ts_val == 77
    flow = _flow(p)
    assert flow.state is State.MPC_PENDING
    assert flow.remote_key == SERVER_KEY and flow.remote_idsn == key_idsn(SERVER_KEY)
    assert not flow.checksum
    assert p.count("MPCapableSYNACKRX") == 1


def test_third_ack_carries_both_keys_and_validates():
    p = Pair()
    _, _, ack = p.handshake()
    pkt, opts = check_wire(ack)
    (mpc,) = mptcp_of(ack, pkt, opts)
    assert len(opts.mptcp[0]) == 20
    assert mpc.rcvr_key == SERVER_KEY and mpc.sndr_key == _flow(p).local_key
    # the key the server learns gives the token and IDSN the converter uses
    assert key_token(mpc.sndr_key) == key_token(_flow(p).local_key)
    assert _flow(p).local_idsn == key_idsn(mpc.sndr_key)
    assert opts.ts_val != -1  # timestamps kept
    assert p.count("MPCapableACKTX") == 1


def test_checksum_negotiated_by_either_side():
    p = Pair(server_checksum=True)
    p.handshake()
    assert _flow(p).checksum
    _, sent = p.out(p.g_data(b"abc"))
    pkt, opts = check_wire(sent)
    (mpc,) = mptcp_of(sent, pkt, opts)
    assert len(opts.mptcp[0]) == 24 and mpc.flags & 0x80
    p.s_receive(sent)


def test_synack_without_mp_capable_falls_back_and_stays_cheap():
    p = Pair(server_mptcp=False)
    _, syn = p.out(p.g_syn())
    actions, synack = p.inn(p.s_synack(syn))
    assert actions == [ACCEPT]
    assert _flow(p).state is State.FALLBACK
    assert p.count("MPCapableFallbackSYNACK") == 1
    p.g_rcv = p.s_isn + 1
    for buf in (p.g_ack(), p.g_data(b"plain"), p.g_fin()):
        assert p.out(buf)[0] == [ACCEPT]
    assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, 0x10, payload=b"reply"))[0] == [ACCEPT]


def test_synack_of_another_version_falls_back():
    p = Pair(server_version=0)
    _, syn = p.out(p.g_syn())
    actions, synack = p.inn(p.s_synack(syn, mptcp=(MpCapable(0, 0x01, SERVER_KEY),)))
    assert not check_wire(synack)[1].mptcp
    assert _flow(p).state is State.FALLBACK
    assert p.count("MPCapableVersionMismatch") == 1


def test_v0_handshake_and_dss_data():
    p = Pair(Config(version=0))
    _, _, ack = p.handshake()
    pkt, opts = check_wire(ack)
    assert len(opts.mptcp[0]) == 20 and mptcp_of(ack, pkt, opts)[0].version == 0
    _, sent = p.out(p.g_data(b"v0 data"))
    p.s_receive(sent)
    assert p.mapping_forms == [("dss", 7)]  # v0 has no MP_CAPABLE data form
    assert _flow(p).local_idsn == key_idsn(_flow(p).local_key, 0)


def test_guest_that_speaks_mptcp_is_left_alone():
    p = Pair()
    opts = encode_tcp_options(mss=1460) + bytes([30, 4, 0x01, 0x01])
    actions, _ = p.out(p.g_syn(options=opts))
    assert actions == [ACCEPT]
    assert _flow(p).state is State.GUEST_MPTCP
    assert p.count("GuestSpeaksMPTCP") == 1
    # the server's SYN/ACK keeps its MP_CAPABLE (the guest negotiates MPTCP end to end), and
    # so do the guest's third ACK, data with DSS, FIN and RST, both ways: byte for byte
    synack = p.s_packet(p.s_isn, p.g_nxt, SYN | ACK, (MpCapable(1, 0x01, SERVER_KEY),))
    # (the harness refuses MPTCP options towards the guest: this guest wants them)
    assert p.conv.handle(synack, Direction.IN, p.now) == [ACCEPT]
    dss = Dss(data_ack=1, dsn64=False, data_seq=7, subflow_seq=1, data_len=2)
    for buf, way in ((p.g_packet(p.g_nxt, p.s_nxt, ACK, b"hi", options=build_options(b"", (dss,))), Direction.OUT),
                     (p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, (dss,), b"yo"), Direction.IN),
                     (p.s_packet(p.s_nxt, p.g_nxt, RST, ()), Direction.IN),
                     (p.g_packet(p.g_nxt, p.s_nxt, RST | ACK), Direction.OUT)):
        assert p.conv.handle(buf, way, p.now) == [ACCEPT]
    assert _flow(p).state is State.GUEST_MPTCP
    assert p.count("GuestMPTCPPacket") == 5 and p.count("StateViolation") == 0
    assert p.count("MPCapableSYNACKRX") == 0 and p.count("DSSRX") == 0


def test_simultaneous_open_falls_back_once():
    p = Pair()
    p.out(p.g_syn())
    syn = p.s_packet(p.s_isn, 0, SYN, ())
    p.inn(syn)
    assert _flow(p).state is State.FALLBACK and p.count("SimultaneousOpen") == 1
    for _ in range(3):  # the rest of the exchange passes as plain TCP, no violations
        p.out(p.g_packet(p.g_isn, p.s_isn + 1, SYN | ACK))
        p.inn(p.s_packet(p.s_isn, p.g_nxt, SYN | ACK, ()))
    assert p.count("StateViolation") == 0 and p.count("SimultaneousOpen") == 1


def test_syn_with_full_option_space_makes_room():
    p = Pair()
    # MSS 4 + SACK_PERM/TS 12 + WS 4 + an unknown 18-byte option (e.g. TCP-MD5) = 38
    opts = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=1, ts_ecr=0) + bytes([19, 18]) + bytes(16)
    _, syn = p.out(p.g_syn(options=opts))
    pkt, o = check_wire(syn)
    assert len(o.mptcp) == 1 and o.mss == 1432 and o.ts_val == 1 and o.wscale == 7


def test_lost_guest_synack_resends_same_syn_then_retransmitted_synack():
    p = Pair()
    _, syn1 = p.out(p.g_syn())
    p.inn(p.s_synack(syn1))
    _, syn2 = p.out(p.g_syn())  # the guest never got the SYN/ACK
    assert syn1 == syn2
    _, synack = p.inn(p.s_synack(syn2))
    assert _flow(p).state is State.MPC_PENDING and not check_wire(synack)[1].mptcp
    assert p.count("StateViolation") == 0
