"""Aborts, checksum failures and the end of fallback flows, both sides of the converter
(RFC 8684 §3.5 fast close, §3.6 MP_TCPRST, §3.7 MP_FAIL / infinite mapping):

* a server MP_FASTCLOSE on an ACK is answered with a RST on the subflow; on a RST it is not;
  a fast close with a key that is not ours is ignored;
* a guest RST after the connection became MPTCP goes on with MP_FASTCLOSE (the server's MPTCP
  connection ends, not just the subflow);
* server data failing its DSS checksum never reaches the guest: dropped, MP_FAIL to the server,
  fallback on the server's infinite mapping; an MP_FAIL from the server is answered and our
  next data carries the infinite mapping;
* fallback flows get the closing timeout after a FIN and the closed one after a RST.
"""

import pytest

from middlebox.core import ACCEPT, Config, Drop, Inject, Rewrite, State
from middlebox.wire import Dss, MpFail, MpFastclose, MpTcpRst, dss_checksum, encode_tcp_options

from tests.unit.test_core_harness import ACK, FIN, M32, M64, RST, SERVER_KEY, SYN, Pair, check_wire, mptcp_of


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _mp(buf):
    pkt, opts = check_wire(buf)
    return pkt, {type(o): o for o in mptcp_of(buf, pkt, opts)}


def _injected(actions):
    injects = [a for a in actions[1:] if isinstance(a, Inject)]
    assert len(injects) == 1, actions
    return injects[0].data


def _assert_to_server(p, buf):
    """An injected packet goes from the guest's address and port to the server's."""
    pkt, _ = check_wire(buf)
    sent = check_wire(p.g_ack())[0]
    assert (pkt.src, pkt.dst, pkt.sport, pkt.dport) == (sent.src, sent.dst, sent.sport, sent.dport)
    return pkt


# -- server MP_FASTCLOSE (§3.5) -----------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_server_fastclose_on_ack_is_answered_with_a_rst(v6):
    p = Pair(v6=v6)
    p.established()
    p.inn(p.s_data_pkt(b"some data"))
    buf = p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFastclose(p.c_key)))
    actions, got = p.inn(buf)
    assert check_wire(got)[0].flags & RST  # the guest's connection ends
    rst = _injected(actions)
    pkt, mp = _mp(rst)
    _assert_to_server(p, rst)
    # "Host B answers on the same subflow with a TCP RST", at the seq the server expects
    assert pkt.flags == RST | ACK and pkt.seq == p.g_nxt and pkt.ack == p.s_nxt
    assert set(mp) == {MpTcpRst}
    assert _flow(p).state is State.CLOSED
    assert p.count("FastCloseRX") == 1 and p.count("FastCloseRstTX") == 1
    # the flow then ends with the closed timeout
    p.tick(p.cfg.closed_timeout + 0.1)
    assert not p.conv.flows


def test_server_fastclose_on_rst_is_not_answered():
    p = Pair()
    p.established()
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, RST | ACK, (MpFastclose(p.c_key),)))
    assert len(actions) == 1 and check_wire(got)[0].flags & RST
    assert p.count("FastCloseRX") == 1 and p.count("FastCloseRstTX") == 0
    assert _flow(p).state is State.CLOSED


def test_fastclose_with_a_wrong_key_is_ignored():
    """RFC 8684 §3.5 acts on MP_FASTCLOSE "containing the valid key" only."""
    p = Pair()
    p.established()
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFastclose(p.c_key ^ 1))))
    assert len(actions) == 1 and not check_wire(got)[0].flags & RST
    assert _flow(p).state is State.ESTABLISHED
    assert p.count("FastCloseBadKey") >= 1 and p.count("FastCloseRX") == 0


# -- guest RST (§3.5 Option R) --------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mpc_pending", "established", "closing"])
def test_guest_rst_goes_on_with_mp_fastclose(stage):
    p = Pair()
    if stage == "mpc_pending":
        p.handshake()
    else:
        p.established()
        if stage == "closing":
            p.out(p.g_fin())
    buf = p.g_packet(p.g_nxt, p.g_rcv, RST | ACK)
    actions, sent = p.out(buf)
    assert isinstance(actions[0], Rewrite) and len(actions) == 1
    pkt, mp = _mp(sent)
    orig = check_wire(buf)[0]
    assert (pkt.flags, pkt.seq, pkt.ack) == (orig.flags, orig.seq, orig.ack)
    assert check_wire(sent)[1].ts_val == check_wire(buf)[1].ts_val  # the guest's options stay
    assert mp[MpFastclose].rcvr_key == SERVER_KEY  # "the key of Host B"
    assert mp[MpTcpRst].reason == 0
    assert _flow(p).state is State.CLOSED
    assert p.count("RstTX") == 1 and p.count("FastCloseTX") == 1


def test_guest_rst_after_a_challenge_ack_carries_mp_fastclose_again():
    """RFC 5961 §3.2: a RST in the window but not at rcv_nxt gets a challenge ACK, and the
    guest (its socket gone) answers that ACK with a RST at the exact seq. That second RST is
    the one the server takes: it must carry the MP_FASTCLOSE as well."""
    p = Pair()
    p.established()
    p.out(p.g_packet((p.g_nxt + 5000) & M32, p.g_rcv, RST | ACK))  # ahead of the server
    assert _flow(p).state is State.CLOSED
    p.inn(p.s_ack())  # the challenge ACK, at what the server really has
    actions, sent = p.out(p.g_packet(p.g_nxt, 0, RST))
    assert isinstance(actions[0], Rewrite)
    _, mp = _mp(sent)
    assert mp[MpFastclose].rcvr_key == SERVER_KEY
    assert p.count("FastCloseTX") == 2 and p.count("RstTX") == 2


def test_guest_data_overtaken_by_its_rst_is_dropped():
    """The guest's RST can reach the converter before data the guest sent earlier (two CPUs'
    backlogs between the guest and the queue; CI saw it in test_outbound_abort). That data,
    sent on after the flow closed, would be payload without a DSS mapping on an MPTCP subflow:
    Linux falls back (DssFallback) and then ignores every MP_FASTCLOSE. It is dropped (the
    guest's connection is gone), and the guest's RST for the challenge ACK closes the server."""
    p = Pair()
    p.established()
    late = [p.g_data(b"x" * 1000) for _ in range(3)]  # sent by the guest, not yet seen here
    late.append(p.g_fin())
    actions, sent = p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK))  # the RST comes first
    assert isinstance(actions[0], Rewrite) and _flow(p).state is State.CLOSED
    for buf in late:
        actions, sent = p.out(buf)
        assert len(actions) == 1 and isinstance(actions[0], Drop) and sent is None, actions
    assert p.count("DataAfterRstDropped") == len(late)
    # the server challenges the RST (it waits for the dropped bytes); the guest's RST for that
    # ACK sits exactly at the server's rcv_nxt and carries the MP_FASTCLOSE
    p.inn(p.s_ack())
    first_late = check_wire(late[0])[0].seq
    actions, sent = p.out(p.g_packet(first_late, 0, RST))
    _, mp = _mp(sent)
    assert mp[MpFastclose].rcvr_key == SERVER_KEY and p.count("FastCloseTX") == 2


def test_guest_data_after_a_plain_reset_still_passes():
    """Only a flow whose guest RST carried the MP_FASTCLOSE drops late data: a fallback flow's
    (plain TCP) goes on untouched."""
    p = Pair(server_mptcp=False)
    p.handshake()
    late = p.g_data(b"y" * 500)
    p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK))
    assert _flow(p).state is State.CLOSED
    actions, _ = p.out(late)
    assert actions == [ACCEPT] and p.count("DataAfterRstDropped") == 0


def test_guest_rst_without_room_goes_plain():
    p = Pair()
    p.established()
    sack = tuple((p.s_nxt + 100 * i, p.s_nxt + 100 * i + 50) for i in range(1, 4))
    opts = encode_tcp_options(ts_val=5, ts_ecr=7, sack=sack)  # 40 bytes with padding
    actions, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=opts))
    assert actions == [ACCEPT]
    assert p.count("OptionSpaceExhausted") == 1 and _flow(p).state is State.CLOSED


def test_guest_data_after_a_rst_without_room_is_dropped_too():
    """A guest RST that had no room for MP_FASTCLOSE still ended an MPTCP connection: data it
    overtook must not reach the server without a mapping (the server would fall back), and the
    guest's next RST, with room, carries the MP_FASTCLOSE."""
    p = Pair()
    p.established()
    late = p.g_data(b"z" * 700)
    sack = tuple((p.s_nxt + 100 * i, p.s_nxt + 100 * i + 50) for i in range(1, 4))
    opts = encode_tcp_options(ts_val=5, ts_ecr=7, sack=sack)
    actions, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=opts))
    assert actions == [ACCEPT] and p.count("OptionSpaceExhausted") == 1
    actions, sent = p.out(late)
    assert len(actions) == 1 and isinstance(actions[0], Drop) and sent is None, actions
    assert p.count("DataAfterRstDropped") == 1
    p.inn(p.s_ack())
    actions, sent = p.out(p.g_packet(check_wire(late)[0].seq, 0, RST))
    _, mp = _mp(sent)
    assert mp[MpFastclose].rcvr_key == SERVER_KEY and p.count("FastCloseTX") == 1


def test_guest_rst_on_a_fallback_flow_stays_plain():
    p = Pair(server_mptcp=False)
    p.handshake()
    actions, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, RST | ACK))
    assert actions == [ACCEPT] and p.count("FastCloseTX") == 0
    assert _flow(p).state is State.CLOSED


# -- DSS checksum failure on server data (§3.7) ----------------------------------------------


def _corrupted(p, original: bytes, altered: bytes, dsn64=True):
    """Server data whose checksum was computed over `original` but which carries `altered`
    (a box on the path changed the payload)."""
    rel = (p.s_nxt - p.s_isn) & M32
    csum = dss_checksum((p.s_idsn + rel) & M64, rel, len(original), original)
    return p.s_data_pkt(altered, csum=csum, dsn64=dsn64)


@pytest.mark.parametrize("dsn64", [True, False], ids=["dsn64", "dsn32"])
def test_server_checksum_failure_drops_sends_mp_fail_then_falls_back(dsn64):
    p = Pair(server_checksum=True)
    p.established()
    _, got = p.inn(p.s_data_pkt(b"good part "))
    delivered = [got[check_wire(got)[0].payload_off:]]
    p.g_rcv = p.s_nxt
    p.out(p.g_ack())
    start = p.s_nxt
    dsn = (p.s_idsn + ((start - p.s_isn) & M32)) & M64
    actions, got = p.inn(_corrupted(p, b"original", b"0riginal", dsn64))
    # never to the guest
    assert got is None and isinstance(actions[0], Drop)
    assert p.count("DataCsumErr") == 1 and p.count("CsumErrDropped") == 1
    # MP_FAIL on a (duplicate) subflow ACK, with the 64-bit DSN of the failing mapping
    inj = _injected(actions)
    pkt, mp = _mp(inj)
    _assert_to_server(p, inj)
    assert pkt.flags == ACK and pkt.seq == p.g_nxt and pkt.ack == start and pkt.payload_len == 0
    assert pkt.window == check_wire(p.g_ack())[0].window  # the guest's window, not 0
    assert mp[MpFail].data_seq == dsn
    assert mp[Dss].data_ack is not None and mp[Dss].data_seq is None
    assert p.count("MPFailTX") == 1 and _flow(p).state is State.ESTABLISHED
    # the server's TCP retransmits the segment; an intact copy goes through
    p.s_nxt = start
    _, got = p.inn(p.s_data_pkt(b"original"))
    delivered.append(got[check_wire(got)[0].payload_off:])
    p.g_rcv = p.s_nxt
    # its answer: MP_FAIL (nothing to answer back), then data with an infinite mapping
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFail(dsn))))
    assert len(actions) == 1 and p.count("MPFailRX") == 1 and p.count("MPFailTX") == 1
    rel = (p.s_nxt - p.s_isn) & M32
    inf = Dss(data_ack=p.s_dss_ack().data_ack, data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=rel,
              data_len=0, csum=0)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (inf,), b" plain now"))
    delivered.append(got[check_wire(got)[0].payload_off:])
    assert _flow(p).state is State.FALLBACK and p.count("InfiniteMapRX") == 1
    assert b"".join(delivered) == b"good part original plain now"
    assert p.out(p.g_data(b"plain too"))[0] == [ACCEPT]
    assert p.count("StateViolation") == 0 and p.count("CoreBug") == 0


def test_checksum_failure_of_a_data_fin_segment_delivers_no_fin():
    p = Pair(server_checksum=True)
    p.established()
    rel = (p.s_nxt - p.s_isn) & M32
    csum = dss_checksum((p.s_idsn + rel) & M64, rel, 4, b"bye")
    actions, got = p.inn(p.s_data_pkt(b"by3", data_fin=True, fin=True, csum=csum))
    assert got is None and p.count("DataFinRX") == 0 and not _flow(p).remote_fin
    assert p.count("MPFailTX") == 1


def test_checksum_failure_before_the_first_data_ack():
    p = Pair(server_checksum=True)
    p.handshake()
    actions, got = p.inn(_corrupted(p, b"220 hi", b"220 ho"))
    assert got is None and p.count("MPFailTX") == 1 and _flow(p).state is State.MPC_PENDING


def test_segments_that_do_not_carry_their_whole_mapping_are_not_judged():
    """A mapping over several segments cannot be checked segment by segment (no buffering):
    those pass (what is left to do: a running checksum over the mapping)."""
    p = Pair(server_checksum=True)
    p.established()
    rel = (p.s_nxt - p.s_isn) & M32
    dss = p.s_dss_ack(data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=rel, data_len=8, csum=0x1234)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), b"half"))
    assert got is not None and p.count("DataCsumErr") == 0


def test_no_checksum_no_check():
    p = Pair()
    p.established()
    _, got = p.inn(p.s_data_pkt(b"anything", csum=None))
    assert got is not None and p.count("DataCsumErr") == 0


# -- MP_FAIL from the server (§3.7) --------------------------------------------------------------


@pytest.mark.parametrize("checksum", [True, False])
def test_server_mp_fail_is_answered_and_our_next_data_carries_an_infinite_mapping(checksum):
    p = Pair(Config(checksum=checksum))
    p.established()
    fail_dsn = (p.idsn_c + 1) & M64
    actions, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(), MpFail(fail_dsn))))
    assert not check_wire(got)[1].mptcp  # the segment itself is converted
    pkt, mp = _mp(_injected(actions))
    assert pkt.flags == ACK and mp[MpFail].data_seq == fail_dsn
    assert p.count("MPFailRX") == 1 and p.count("MPFailTX") == 1
    assert _flow(p).state is State.ESTABLISHED
    # the guest's pure ACKs stay MPTCP; its next data carries the infinite mapping
    _, sent = p.out(p.g_ack())
    assert Dss in _mp(sent)[1]
    seq = p.g_nxt
    actions, sent = p.out(p.g_data(b"next data"))
    pkt, mp = _mp(sent)
    dss = mp[Dss]
    rel = (seq - p.g_isn) & M32
    assert dss.data_len == 0 and dss.subflow_seq == rel and dss.data_seq == (p.idsn_c + rel) & M64
    assert (dss.csum is not None) == checksum and dss.data_ack is not None
    assert sent[pkt.payload_off:] == b"next data"
    assert _flow(p).state is State.FALLBACK and p.count("InfiniteMapTX") == 1
    # plain TCP from now on, both ways
    assert p.out(p.g_data(b"plain"))[0] == [ACCEPT]
    assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (), b"plain back"))[0] == [ACCEPT]
    # a second MP_FAIL (the server's answer to ours) is not answered again
    assert p.count("MPFailTX") == 1


def test_mp_fail_with_the_infinite_mapping_on_one_segment():
    p = Pair(server_checksum=True, timestamps=False)  # DSS 24 + MP_FAIL 12: no room for TS
    p.established()
    p.inn(_corrupted(p, b"original", b"0riginal"))
    p.s_nxt = (p.s_nxt - 8) & M32
    rel = (p.s_nxt - p.s_isn) & M32
    dsn = (p.s_idsn + rel) & M64
    inf = Dss(data_ack=p.s_dss_ack().data_ack, data_seq=dsn, dsn64=True, subflow_seq=rel, data_len=0, csum=0)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (inf, MpFail(dsn)), b"original"))
    assert got is not None and not check_wire(got)[1].mptcp
    assert _flow(p).state is State.FALLBACK
    assert p.count("MPFailRX") == 1 and p.count("InfiniteMapRX") == 1


# -- fallback flows: closing and closed timeouts ----------------------------------------------


@pytest.mark.parametrize("first", ["guest", "server"])
def test_fallback_fin_gives_the_closing_timeout(first):
    cfg = Config(established_timeout=300, closing_timeout=120)
    p = Pair(cfg, server_mptcp=False)
    p.handshake()
    p.g_rcv = p.s_nxt
    assert p.out(p.g_data(b"plain"))[0] == [ACCEPT]
    assert _flow(p).state is State.FALLBACK
    if first == "guest":
        assert p.out(p.g_fin())[0] == [ACCEPT]
    else:
        assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN, ()))[0] == [ACCEPT]
    assert _flow(p).state is State.FALLBACK_CLOSING and p.count("FallbackFin") == 1
    # the other side's data and FIN still pass untouched
    assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (), b"more"))[0] == [ACCEPT]
    assert p.out(p.g_ack())[0] == [ACCEPT]
    p.tick(119)
    assert len(p.conv.flows) == 1
    p.tick(2)
    assert not p.conv.flows and p.count("FlowExpired") == 1


def test_fallback_closing_flow_rst_gives_the_closed_timeout():
    p = Pair(Config(closed_timeout=10), server_mptcp=False)
    p.handshake()
    p.out(p.g_fin())
    assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, RST | ACK, ()))[0] == [ACCEPT]
    assert _flow(p).state is State.CLOSED
    p.tick(10.5)
    assert not p.conv.flows


def test_fallback_closing_flow_restarts_on_a_new_syn():
    p = Pair(server_mptcp=False)
    p.handshake()
    p.out(p.g_fin())
    p.g_isn = (p.g_isn + 99999) & M32
    actions, sent = p.out(p.g_syn())
    assert isinstance(actions[0], Rewrite) and _flow(p).state is State.SYN_SENT
    assert check_wire(sent)[0].flags == SYN
