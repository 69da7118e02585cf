"""A guest whose MTU is below the uplinks' (1400 against 1500): its SYN announces MSS 1360
(IPv6: 1340), which subflow 1 passes on unchanged (below the MSS limit). The joins did not:
their SYN announced the MSS limit (1432), so the server sized its join segments for the
uplink, and we cut what we forward to the guest at the MSS limit too. Those segments were
bigger than the guest's link: dropped there (its `ip -s link` counted 637 RX drops in a 6 MB
download), resent by the server's MPTCP timer only (MPTCPRetrans 170), the download stalled
(kernel test: tests/integration exploratory `test_guest_mtu_1400_*[netlink-mp]`). With DSS
checksums a guest super-packet on a join was cut at the limit rather than at the guest's own
segments: its resend of one of them, cut otherwise, failed the server's sum (DataCsumErr,
MP_FAIL, MP_FASTCLOSE).

What reaches the guest must fit the MSS it announced, whichever subflow the bytes came by."""

from __future__ import annotations

import pytest

from middlebox.core import Direction
from middlebox.core import MULTIPATH as MP
from middlebox.wire import Dss, build_options, encode_tcp_options, parse_options, parse_packet

from tests.unit.test_core_harness import check_wire, mptcp_of
from tests.unit.test_subflow_table import ACK, M32, M64, PSH, MPair, make_packet

STALL = 0.2  # (test_multipath_sack: a subflow's hole is known lost after this long)


def _guest_mss(v6: bool) -> int:
    return 1400 - (60 if v6 else 40)  # what Linux announces on a 1400-byte MTU


class SmallMtuPair(MPair):
    """MPair whose guest announces the MSS of a 1400-byte MTU in its SYN."""

    def g_opts(self, syn=False, sack=()):
        if syn:
            return encode_tcp_options(mss=_guest_mss(self.v6), wscale=7, sack_perm=True,
                                      ts_val=1 if self.ts else -1, ts_ecr=0 if self.ts else -1)
        return super().g_opts(syn, sack)


def _fits(p, buf: bytes) -> bool:
    """Does this segment to the guest fit its MSS (payload and TCP options: RFC 6691), so
    its MTU?"""
    pkt = parse_packet(buf)
    return pkt.length - pkt.ip_hlen - 20 <= _guest_mss(p.v6) and len(buf) <= 1400


def _opts(buf: bytes):
    pkt = parse_packet(buf)
    return parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_the_join_syn_announces_the_guests_mss(v6):
    p = SmallMtuPair(1, v6=v6)
    p.go_multipath()
    assert _opts(p.joins[1].syn).mss == _guest_mss(v6)
    assert p.flow.guest_mss == _guest_mss(v6)


def test_a_guest_that_announces_more_than_the_limit_still_gets_the_limit():
    p = MPair(1)  # its SYN says 1460
    p.go_multipath()
    assert _opts(p.joins[1].syn).mss == p.conv._mss_limit[4]


def _holes(p):
    """Four and more data-level SACK blocks for the guest (test_multipath_sack): bursts on
    subflow 1 and the join, the join's all acked, subflow 1's not."""
    j = p.joins[1]
    for _ in range(200):
        p.g_send(1, 1000)
    p.now += STALL
    j.s_rcv = p.path(1).snd_nxt
    p.j_in(p.j_ack(j))
    assert len(MP.guest_sack(p.flow, p.mp, 4)) == 4


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("blocks", [False, True], ids=["no-sack", "sack"])
def test_join_data_sized_for_the_uplink_reaches_the_guest_in_segments_it_takes(v6, blocks):
    """A server segment (or a GRO super-packet) on a join as big as the uplink carries: the
    guest gets it in segments of its MSS, SACK blocks included, every byte in order."""
    p = SmallMtuPair(1, v6=v6, timestamps=False)
    p.go_multipath()
    p.join_up(1)
    if blocks:
        _holes(p)
    j = p.joins[1]
    for size in (p.conv._mss_limit[6 if v6 else 4], 3 * 1448):
        start = p.s_drel
        acts = p.j_in(p.j_data(j, bytes(range(256)) * (size // 256) + b"q" * (size % 256)))
        segs = [a.data for a in acts[1:] if p.label(a.data) == "g_data"]
        assert segs and all(_fits(p, s) for s in segs), [len(s) for s in segs]
        got = b"".join(s[parse_packet(s).payload_off:] for s in segs)
        assert len(got) == size
        first = parse_packet(segs[0]).seq
        assert first == (p.flow.server_isn + start) & M32


def test_subflow_1_segment_with_data_level_sack_blocks_fits_the_guest():
    """Once multipath, a server segment on subflow 1 has its DSS replaced by the data level's
    SACK blocks: a full one (the guest's MSS with a DSS of 24 bytes) gets no more of them
    than fit the guest's MSS."""
    p = SmallMtuPair(1)
    p.go_multipath()
    p.join_up(1)
    _holes(p)
    dss = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True,
              subflow_seq=p.s_drel, data_len=0)
    opts = build_options(encode_tcp_options(ts_val=77, ts_ecr=1), (dss,))
    n = _guest_mss(p.v6) - len(opts)  # as the server sizes it: payload + options = the MSS
    dss = Dss(data_ack=dss.data_ack, data_seq=dss.data_seq, dsn64=True, subflow_seq=p.s_drel, data_len=n)
    seg = make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn + p.s_drel, p.g_nxt, ACK | PSH,
                      build_options(encode_tcp_options(ts_val=77, ts_ecr=1), (dss,)), b"s" * n,
                      window=509, v6=p.v6)
    _, got = p.inn(seg)
    assert got is not None and parse_packet(got).payload_len == n
    assert _fits(p, got), len(got)
    o = _opts(got)
    assert o.sack and o.ts_val == 77  # what fits still goes


def _join_maps(p, acts) -> list:
    """(DSN, subflow seq, length, checksum) of every mapping sent on the join."""
    out = []
    for a in acts[1:]:
        if p.label(a.data) == "data@1":
            pkt, opts = check_wire(a.data)
            out += [(o.data_seq, o.subflow_seq, o.data_len, o.csum) for o in mptcp_of(a.data, pkt, opts)
                    if isinstance(o, Dss) and o.data_len]
    return out


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksum"])
def test_a_guest_super_packet_on_a_join_is_cut_as_the_guest_cut_it(checksum):
    """The guest's segments are its MSS less its timestamps (1348): a super-packet of two of
    them goes on a join in those two segments, each its mapping, and the guest's resend of
    either is sent under that same mapping (and checksum). Cut at the MSS limit (1420 and
    1276) a resend of one guest segment went under a mapping of its own over bytes the
    server had under another: with DSS checksums the server's sum failed (the kernel test:
    DataCsumErr, MP_FAIL, the connection reset)."""
    p = SmallMtuPair(1, server_checksum=checksum)
    p.go_multipath()
    p.join_up(1)
    seg = 1360 - 12
    for _ in range(200):
        ((labels, acts),) = p.g_send(1, 2 * seg)
        if "data@1" in labels:
            break
    start = (p.g_nxt - 2 * seg) & M32
    sent = _join_maps(p, acts)
    assert [m[2] for m in sent] == [seg, seg]
    for k in (0, 1):
        p.now += 1.0
        acts = p.conv.handle(p.g_data(b"A" * seg, seq=(start + k * seg) & M32), Direction.OUT, p.now)
        assert _join_maps(p, acts) == [sent[k]]
    assert MP.guest_seg(p.conv, p.flow, 4) == seg


def test_a_passive_join_synack_announces_the_mss_of_the_guests_synack():
    """Inbound (the peer opened the connection, issue 9): the guest's SYN/ACK says its MSS;
    our SYN/ACK to a join the peer opens says the same."""
    from tests.unit.test_inbound import _answer, _mp, join_syn, new_pair, peer_syn, third_ack

    p = new_pair()
    p.inn(peer_syn(p))
    opts = encode_tcp_options(mss=1360, wscale=7, sack_perm=True, ts_val=5, ts_ecr=9)
    _, synack = p.out(p.g_packet(p.g_isn, (p.s_isn + 1) & M32, 0x12, options=opts))
    assert _opts(synack).mss == 1360  # (subflow 1: as the guest said it)
    (mpc,) = _mp(synack)[1]
    p.c_key = mpc.sndr_key
    p.g_rcv = (p.s_isn + 1) & M32
    p.inn(third_ack(p))
    jsynack = _answer(p.conv.handle(join_syn(p), Direction.IN, p.now))
    assert _opts(jsynack).mss == 1360


class NoMssPair(MPair):
    """MPair whose guest's SYN carries no MSS option."""

    def g_opts(self, syn=False, sack=()):
        if syn:
            return encode_tcp_options(wscale=7, sack_perm=True, ts_val=1 if self.ts else -1,
                                      ts_ecr=0 if self.ts else -1)
        return super().g_opts(syn, sack)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_guest_syn_without_mss_gets_rfc_9293s_default_on_the_joins_too(v6):
    """(carried since stop 35, done in stop 39) A guest SYN without an MSS option goes on
    without one, so the server sends that guest segments of RFC 9293's default on subflow 1
    (§3.7.1: 536, IPv6 1220); the joins announced the MSS limit, and the guest got 1432-byte
    segments from them. Now the join SYN announces the default, and join data reaches the
    guest in segments within it."""
    default = 1220 if v6 else 536
    p = NoMssPair(1, v6=v6)
    p.go_multipath()
    assert p.flow.guest_mss == 0
    assert _opts(p.joins[1].syn).mss == default
    p.join_up(1)
    j = p.joins[1]
    size = 3 * 1000
    acts = p.j_in(p.j_data(j, bytes(range(250)) * (size // 250)))
    segs = [a.data for a in acts[1:] if p.label(a.data) == "g_data"]
    assert segs
    for s in segs:
        pkt = parse_packet(s)
        assert pkt.length - pkt.ip_hlen - 20 <= default, pkt.length
    assert sum(parse_packet(s).payload_len for s in segs) == size
