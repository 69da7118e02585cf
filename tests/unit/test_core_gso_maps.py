"""Single-path super-packets (netlink backend, GSO): a guest retransmission of a piece of a
super-packet carries that super-packet's mapping exactly (Linux: DSSNotMatching and a fallback
when a segment wholly inside a partly received mapping brings another one), one across two
of them is cut at their edges, and the record stays bounded. The integration test
`test_loss_of_single_segments_of_super_packets` is the same against the kernel."""

from middlebox.core import Drop, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.flow import MAX_GSO_MAPS, Flow
from middlebox.wire import Dss, dss_checksum, encode_tcp_options

from tests.unit.test_core_harness import M32, M64, Pair, check_wire, mptcp_of

SEG = 1400


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _dss(buf):
    pkt, opts = check_wire(buf)
    (dss,) = [o for o in mptcp_of(buf, pkt, opts) if isinstance(o, Dss)]
    return pkt, dss


def _super(p, n_segs, fill):
    """A guest super-packet of n_segs segments (the queue's GSO mode hands it over whole)."""
    start = p.g_nxt
    payload = bytes([fill]) * (SEG * n_segs)
    _, sent = p.out(p.g_data(payload))
    pkt, dss = _dss(sent)
    assert dss.data_len == len(payload)  # one mapping for the whole super-packet
    return start, payload, dss


def test_a_piece_of_a_super_packet_resent_carries_its_mapping():
    p = Pair()
    p.established()
    start, payload, orig = _super(p, 10, 0x41)
    # the guest resends the 4th wire segment alone (SACK told it exactly that one was lost)
    seq = (start + 3 * SEG) & M32
    _, sent = p.out(p.g_data(payload[3 * SEG:4 * SEG], seq=seq))
    pkt, dss = _dss(sent)
    assert pkt.seq == seq and pkt.payload_len == SEG
    assert (dss.data_seq, dss.subflow_seq, dss.data_len) == (orig.data_seq, orig.subflow_seq, orig.data_len)
    assert p.count("GsoMapRepeated") == 1
    # a segment of new data after it gets a mapping of its own
    _, sent = p.out(p.g_data(b"z" * 100))
    _, dss = _dss(sent)
    assert dss.data_len == 100


def test_a_resend_across_two_super_packets_is_cut_at_their_edge():
    p = Pair()
    p.established()
    a_start, a, a_dss = _super(p, 4, 0x61)
    b_start, b, b_dss = _super(p, 4, 0x62)
    # Linux collapsed the last piece of A and the first of B into one retransmission
    seq = (a_start + 3 * SEG) & M32
    actions, _ = p.out(p.g_data(a[3 * SEG:] + b[:SEG], seq=seq))
    assert isinstance(actions[0], Drop) and p.count("GsoMapCut") == 1
    pieces = [_dss(x.data) + (x.data,) for x in actions[1:] if isinstance(x, Inject)]
    assert len(pieces) == 2
    (p1, d1, raw1), (p2, d2, raw2) = pieces
    assert (d1.data_seq, d1.data_len) == (a_dss.data_seq, a_dss.data_len)
    assert (d2.data_seq, d2.data_len) == (b_dss.data_seq, b_dss.data_len)
    assert p1.seq == seq and p2.seq == (seq + SEG) & M32
    assert raw1[p1.payload_off:p1.length] + raw2[p2.payload_off:p2.length] == a[3 * SEG:] + b[:SEG]


def test_data_acked_mappings_are_forgotten_and_the_record_is_bounded():
    f = Flow(0.0, 4)
    for i in range(MAX_GSO_MAPS + 5):
        assert f.gso_record(1 + i * 1000, 1000, 0) == (i < MAX_GSO_MAPS)
    assert len(f.gso_maps) == 2 * MAX_GSO_MAPS
    # full: the unacked ones are all kept (the oldest holds a lasting hole), nothing newer added
    assert f.gso_lookup(1 + 10, 100) == 0
    assert f.gso_lookup(1 + MAX_GSO_MAPS * 1000 + 10, 100) == -1
    assert f.gso_lookup(1 + 5 * 1000 + 900, 200) == -2  # across two
    f.data_acked = 1 + 100 * 1000
    f.gso_record(1 + 200 * 1000, 1000, 0)
    assert f.gso_maps[0] == 1 + 100 * 1000  # everything data-acked went


def test_a_flow_going_multipath_keeps_the_unacked_super_packet_mappings():
    p = Pair()
    p.established()
    start, payload, orig = _super(p, 5, 0x43)
    flow = _flow(p)
    runs = MP._runs_of_single_path(flow)
    rel = (start - flow.guest_isn) & M32
    (run,) = [r for r in runs if r[4] is not None]
    assert run[0] == rel and run[1] == rel + len(payload)
    assert run[4][2] == orig.data_len and (flow.local_idsn + run[4][0]) & M64 == orig.data_seq
    assert runs[0][0] == 1 and runs[-1][1] == flow.snd_end and flow.gso_maps is None


def test_a_resend_of_a_super_packets_tail_with_the_fin_gets_its_data_fin_apart():
    """The guest closed after a super-packet (its FIN went alone, a bare DATA_FIN) and then
    resent the super-packet's last piece together with the FIN: the piece keeps the
    super-packet's mapping, which has no DATA_FIN, so the FIN goes on a bare DATA_FIN."""
    p = Pair()
    p.established()
    start, payload, orig = _super(p, 4, 0x44)
    p.out(p.g_fin())
    seq = (start + 3 * SEG) & M32
    actions, _ = p.out(p.g_data(payload[3 * SEG:], fin=True, seq=seq))
    assert isinstance(actions[0], Drop)
    (piece, fin) = [x.data for x in actions[1:] if isinstance(x, Inject)]
    pp, d1 = _dss(piece)
    assert (d1.data_seq, d1.data_len, d1.data_fin) == (orig.data_seq, orig.data_len, False)
    assert not pp.flags & 0x01 and pp.seq == seq
    fp, d2 = _dss(fin)
    assert fp.flags & 0x01 and fp.payload_len == 0 and fp.seq == (start + len(payload)) & M32
    assert d2.data_fin and d2.data_len == 1 and d2.subflow_seq == 0
    assert d2.data_seq == (orig.data_seq + len(payload)) & M64


def test_with_the_record_full_a_new_super_packet_goes_in_segments_and_the_oldest_is_kept():
    """MAX_GSO_MAPS super-packets unacked (a hole the server waits for while the guest keeps
    sending past it): the next one is sent in segments, each its own mapping, and nothing is
    forgotten; a resend of a piece of the oldest, the one holding the hole, still carries its
    mapping exactly. (Forgetting the oldest gave that resend a mapping of its own inside the
    server's partly received one: DSSNotMatching and a fallback, 1 run in 12 of
    test_loss_of_single_segments_of_super_packets.)"""
    p = Pair()
    p.established()
    first_start, first_payload, first = _super(p, 3, 0x50)
    for i in range(MAX_GSO_MAPS - 1):
        _super(p, 2, 0x51)
    start = p.g_nxt
    payload = bytes([0x52]) * (SEG * 3)
    actions, _ = p.out(p.g_data(payload))
    assert isinstance(actions[0], Drop) and p.count("GsoMapFull") == 1
    pieces = [_dss(x.data) + (x.data,) for x in actions[1:] if isinstance(x, Inject)]
    seg_max = p.conv._mss_limit[4] - 12  # (room for the guest's timestamps)
    assert len(pieces) == -(-len(payload) // seg_max)
    at = 0
    for pkt, dss, raw in pieces:
        n = pkt.payload_len
        assert pkt.seq == (start + at) & M32 and n <= seg_max
        assert dss.data_len == n and raw[pkt.payload_off:pkt.length] == payload[at:at + n]
        at += n
    assert at == len(payload)
    assert len(_flow(p).gso_maps) == 2 * MAX_GSO_MAPS
    _, sent = p.out(p.g_data(first_payload[SEG:2 * SEG], seq=(first_start + SEG) & M32))
    _, dss = _dss(sent)
    assert (dss.data_seq, dss.subflow_seq, dss.data_len) == (first.data_seq, first.subflow_seq, first.data_len)


def test_bytes_sent_in_segments_and_resent_as_one_super_packet_are_cut():
    """Bytes that went out in segments, each its own mapping (the record was full), resent
    by the guest as one super-packet once the record had room again: one new mapping over
    them made the server's next queued original segment, wholly inside it, bring another
    (DSSNotMatching and a DSS fallback: a CI proof of
    test_loss_of_single_segments_of_super_packets). Now cut, a mapping per segment."""
    p = Pair()
    p.established()
    for i in range(MAX_GSO_MAPS):
        _super(p, 2, 0x51)
    start = p.g_nxt
    payload = bytes([0x52]) * (SEG * 3)
    actions, _ = p.out(p.g_data(payload))
    assert isinstance(actions[0], Drop) and p.count("GsoMapFull") == 1  # sent in segments
    # the server data-acks every recorded super-packet: the record has room again
    _flow(p).data_acked = (start - p.g_isn) & M32
    actions, _ = p.out(p.g_data(payload, seq=start))
    assert isinstance(actions[0], Drop), "resent in place under one new mapping"
    seg_max = p.conv._mss_limit[4] - 12
    pieces = [_dss(x.data) for x in actions[1:] if isinstance(x, Inject)]
    assert [pkt.payload_len for pkt, _ in pieces] == [seg_max, seg_max, len(payload) - 2 * seg_max]
    assert all(dss.data_len == pkt.payload_len for pkt, dss in pieces)


def _marked(buf, flags_or=0, tos=0xBA, ttl=30):
    """`buf` (IPv4) with TOS `tos` (DSCP EF, ECT(0)), TTL `ttl` and TCP flags `flags_or` added."""
    import struct

    from middlebox.wire import parse_packet, rewrite
    from middlebox.wire.packet import ipv4_checksum

    b = bytearray(buf)
    b[1], b[8] = tos, ttl
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", ipv4_checksum(bytes(b), 5))
    pkt = parse_packet(bytes(b))
    return rewrite(bytes(b), pkt, flags=pkt.flags | flags_or)


def test_pieces_keep_the_guests_dscp_ecn_and_a_forwarded_ttl():
    """(A review: pieces we send in place of a guest segment had TOS 0, TTL 64 and neither
    CWR nor ECE: its DSCP lost, and an ECN guest's CWR never reached the server, which then
    kept echoing ECE.) ECE on every piece, CWR on the first only, as TSO does."""
    p = Pair()
    p.established()
    a_start, a, _ = _super(p, 4, 0x61)
    b_start, b, _ = _super(p, 4, 0x62)
    seq = (a_start + 3 * SEG) & M32
    actions, _ = p.out(_marked(p.g_data(a[3 * SEG:] + b[:SEG], seq=seq), 0xC0))
    pieces = [x.data for x in actions[1:] if isinstance(x, Inject)]
    assert len(pieces) == 2
    for i, raw in enumerate(pieces):
        check_wire(raw)
        assert raw[1] == 0xBA and raw[8] == 29
        assert raw[33] & 0xC0 == (0xC0 if i == 0 else 0x40)


def test_a_resend_as_one_super_packet_of_bytes_sent_in_segments_before_any_is_cut():
    """The guest sent its bytes in segments (no super-packet yet, so nothing remembered) and
    resent them collapsed into one super-packet: cut, a mapping per segment. The cut read the
    absent record (`len(None)`: a TypeError, and the segment went on unconverted)."""
    p = Pair()
    p.established()
    flow = _flow(p)
    start = p.g_nxt
    a, b = b"a" * SEG, b"b" * SEG
    p.out(p.g_data(a))
    p.out(p.g_data(b))
    assert flow.gso_maps is None
    actions, _ = p.out(p.g_data(a + b, seq=start))
    assert isinstance(actions[0], Drop) and p.count("GsoMapCut") == 1
    pieces = [_dss(x.data) + (x.data,) for x in actions[1:] if isinstance(x, Inject)]
    got = b""
    for pkt, dss, raw in pieces:
        assert dss.data_len == pkt.payload_len and dss.data_seq == (flow.local_idsn + (pkt.seq - flow.guest_isn)) & M64
        got += raw[pkt.payload_off:pkt.length]
    assert got == a + b


class _NoSackPair(Pair):
    """A guest whose SYN offers no SACK (net.ipv4.tcp_sack=0)."""

    def g_opts(self, syn=False, sack=()):
        if syn:
            return encode_tcp_options(mss=1460, wscale=7, sack_perm=False, ts_val=1 if self.ts else -1,
                                      ts_ecr=0 if self.ts else -1)
        return super().g_opts(syn, sack)


def test_with_checksums_a_guest_without_sack_gets_a_mapping_per_segment():
    """DSS checksums and a guest without SACK (single path): a super-packet goes in segments,
    each its own mapping and sum, never one mapping over all of them. Linux takes none of a
    checksummed mapping before all of it is in, the guest sees the DATA_ACK only, and without
    SACK it resends the head of a mapping with a hole alone, once per RTO: the upload stalled
    for good (test_no_sack_ck[netlink-sp], kernel). A resend of a piece is cut the same way."""
    for ts in (True, False):
        p = _NoSackPair(server_checksum=True, timestamps=ts)
        p.established()
        flow = _flow(p)
        assert flow.checksum and not flow.sack_ok
        seg_max = p.conv._mss_limit[4] - (12 if ts else 0)
        start = p.g_nxt
        payload = bytes(range(256)) * 40  # 10240 bytes: 8 segments
        actions, _ = p.out(p.g_data(payload))
        assert isinstance(actions[0], Drop) and p.count("CsumNoSackCut") == 1
        pieces = [x.data for x in actions[1:] if isinstance(x, Inject)]
        assert len(pieces) == -(-len(payload) // seg_max)
        for raw in pieces:
            pkt, mp = p.s_receive(raw)  # each mapping: this segment exactly, its own checksum
            assert pkt.payload_len <= seg_max
        assert p.s_stream().endswith(payload)
        assert flow.gso_maps is None  # nothing to repeat: each piece is its own mapping
        # the guest resends a piece (the head of the lost ones) collapsed with the next
        seq = (start + seg_max) & M32
        actions, _ = p.out(p.g_data(payload[seg_max:3 * seg_max], seq=seq))
        assert isinstance(actions[0], Drop)
        for x in actions[1:]:
            pkt, mp = p.s_receive(x.data)
            (dss,) = [o for o in mp if isinstance(o, Dss)]
            assert dss.data_len == pkt.payload_len <= seg_max


def test_with_checksums_a_guest_with_sack_gets_a_mapping_per_segment_too():
    """With SACK as well: one checksummed mapping over a super-packet whose last segment was
    lost held the guest's ack (the DATA_ACK) at the mapping's start while the server's subflow
    acked up to the hole; the server's D-SACKs of the guest's resends of the head, passed on
    under that lower ack, named the head as SACKed and not acked, and the guest resent the
    head alone once per RTO, backed off (0.2 s .. 14 s): uploads of
    test_guest_without_timestamps_with_dss_checksums[netlink-single-path] took 29-58 s or
    timed out. Cut, a mapping per segment, whatever the guest's SACK."""
    for ts in (True, False):
        p = Pair(server_checksum=True, timestamps=ts)
        p.established()
        flow = _flow(p)
        assert flow.checksum and flow.sack_ok
        seg_max = p.conv._mss_limit[4] - (12 if ts else 0)
        payload = bytes(range(256)) * 40
        actions, _ = p.out(p.g_data(payload))
        assert isinstance(actions[0], Drop) and p.count("CsumNoSackCut") == 1
        pieces = [x.data for x in actions[1:] if isinstance(x, Inject)]
        assert len(pieces) == -(-len(payload) // seg_max)
        for raw in pieces:
            pkt, mp = p.s_receive(raw)
            (dss,) = [o for o in mp if isinstance(o, Dss)]
            assert dss.data_len == pkt.payload_len <= seg_max
        assert p.s_stream().endswith(payload)
