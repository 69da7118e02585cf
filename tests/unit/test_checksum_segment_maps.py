"""With DSS checksums, a multipath flow never puts one mapping over several segments on the
wire. Linux checks a mapping's sum only once all of it is in, and until then its subflow
acks bytes the connection does not take: a loss inside a GSO super-packet's one mapping
held back the data-level head, which the guest resends first and alone after its RTO, while
the bytes the server lacked lay above it. The upload stalled for good (netlink backend, 2 %
loss; tests/integration/test_checksum_upload_loss.py). Super-packets of such a flow go cut,
a mapping and a sum per segment; without checksums they still go in place, one mapping."""

from __future__ import annotations

from middlebox.core import Direction, Drop, Inject, Rewrite
from middlebox.wire import Dss, dss_checksum, parse_packet

from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import ACK, MPair, mp_config, wire_check


def _pair(checksum: bool, timestamps: bool = True):
    p = (MPair(1, config=mp_config(1, checksum=checksum), timestamps=timestamps) if checksum
         else MPair(1, timestamps=timestamps))
    p.go_multipath()
    p.join_up(1)
    p.mp.burst_left = 0
    p.mp.paths[1].rate, p.mp.paths[0].rate = 1.0, 1e9  # the scheduler's choice: subflow 1
    return p


def _maps(p, acts):
    """[(payload length, Dss)] of the data segments sent."""
    out = []
    for a in acts:
        if isinstance(a, (Inject, Rewrite)) and a.data and parse_packet(a.data).payload_len:
            pkt, _, mp = wire_check(a.data, isinstance(a, Inject))
            (dss,) = [o for o in mp if isinstance(o, Dss) and o.data_len]
            out.append((pkt, a.data[pkt.payload_off:pkt.length], dss))
    return out


def test_a_super_packet_of_a_checksummed_flow_goes_with_a_mapping_per_segment():
    p = _pair(True)
    mss = p.conv._mss_limit[4] - 12
    ((labels, acts),) = p.g_send(1, 3 * mss)
    assert isinstance(acts[0], Drop), labels
    sent = _maps(p, acts[1:])
    assert len(sent) == 3
    for pkt, payload, dss in sent:
        assert pkt.payload_len <= mss and dss.data_len == len(payload)
        assert dss.csum == dss_checksum(dss.data_seq, dss.subflow_seq, dss.data_len, payload)
    assert all(r[4] is None for r in p.mp.runs)  # no whole-mapping run either
    # the guest resends the whole super-packet: cut again, each piece at its seq and mapping
    s0 = p.g_nxt - 3 * mss
    acts = p.conv.handle(p.g_data(b"A" * (3 * mss), seq=s0), Direction.OUT, p.now)
    again = _maps(p, acts[1:])
    assert isinstance(acts[0], Drop) and len(again) == 3
    assert [(a.seq, d.data_seq, d.csum) for a, _, d in again] == [(a.seq, d.data_seq, d.csum) for a, _, d in sent]


def test_without_checksums_a_super_packet_still_goes_in_place_with_one_mapping():
    p = _pair(False)
    mss = p.conv._mss_limit[4] - 12
    ((labels, acts),) = p.g_send(1, 3 * mss)
    assert isinstance(acts[0], Rewrite), labels
    ((pkt, payload, dss),) = _maps(p, acts[:1])
    assert dss.data_len == 3 * mss == len(payload)


def _injected_sizes(acts):
    return [parse_packet(a.data).payload_len for a in acts if isinstance(a, Inject) and a.data]


def test_a_full_segment_of_a_guest_without_timestamps_still_goes_in_place():
    """(Review of the fix: a guest without timestamps sends payloads of the whole MSS limit,
    one segment on the wire; cut, it went as two injected packets.) The harness's guest
    had timestamps until the core learnt the difference (guest_ts): such a guest cannot
    send that much in one segment."""
    p = _pair(True, timestamps=False)
    ((labels, acts),) = p.g_send(1, p.conv._mss_limit[4])
    assert isinstance(acts[0], Rewrite), labels


def test_a_resend_spanning_a_whole_mapping_run_is_cut_with_that_mapping_per_segment():
    """(Review of the fix: a piece of a whole-mapping run that is not the whole packet went
    out as one raw segment of 3 MSS, beyond the MTU: the kernel refuses it, and every resend
    after it.) Each cut carries the run's one mapping, as the kernel's TSO copies it."""
    p = _pair(False)
    mss = p.conv._mss_limit[4] - 12
    s0 = p.g_nxt
    ((_, first),) = p.g_send(1, 3 * mss)  # in place: a whole-mapping run
    p.g_send(1, 1000)  # the next run
    ((_, _, whole),) = _maps(p, first[:1])
    acts = p.conv.handle(p.g_data(b"A" * (3 * mss + 1000), seq=s0), Direction.OUT, p.now)
    sent = _maps(p, acts[1:])
    assert isinstance(acts[0], Drop) and max(_injected_sizes(acts)) <= mss
    assert [d.data_seq for _, _, d in sent[:3]] == [whole.data_seq] * 3
    assert all(d.data_len == 3 * mss for _, _, d in sent[:3])


def test_a_resend_of_a_single_path_super_packet_after_joins_is_cut():
    """(Review of the fix: a super-packet sent while the flow was single-path keeps its one
    mapping in the run map; the guest's resend of it went as one raw segment of 3 MSS.)"""
    for checksum in (True, False):
        p = MPair(1, config=mp_config(1, checksum=checksum))
        p.handshake()
        _, sent = p.out(p.g_data(b"hello"))
        p.s_receive(sent)
        start = p.g_nxt
        big = 3 * (p.conv._mss_limit[4] - 12)
        p.out(p.g_data(b"x" * big))  # single path: one mapping over the super-packet
        p.inn(p.s_packet(p.s_nxt, start, ACK, (p.s_dss_ack(data_ack_rel=(start - p.g_isn) & M32),)))
        assert p.flow.mp is not None  # the joins start
        acts = p.conv.handle(p.g_data(b"x" * big, seq=start), Direction.OUT, p.now)
        if isinstance(acts[0], Rewrite):  # in place, its one mapping: the kernel segments it
            assert not checksum
        else:
            sizes = _injected_sizes(acts)
            assert sizes and max(sizes) <= p.conv._mss_limit[4] - 12, (checksum, sizes)


def test_repair_window_without_repair_is_refused():
    import pytest

    from middlebox.core import Config

    with pytest.raises(ValueError, match="repair_bytes"):
        Config(repair_window=True)
    assert Config(repair_window=True, repair_bytes=1 << 18).repair_window


def test_bytes_sent_in_segments_and_resent_as_one_super_packet_go_cut_on_multipath():
    """Multipath, no checksums: three segments on subflow 1 (one run, no mapping of its own
    beyond each segment's), resent by the guest as one super-packet: not one new mapping
    over them in place (the server's queued originals would bring others: DSSNotMatching),
    but cut, a mapping per segment."""
    p = _pair(False)
    s0 = p.g_nxt
    for labels, acts in p.g_send(3, 1000):
        assert isinstance(acts[0], Rewrite), labels
    payload = b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    acts = p.conv.handle(p.g_data(payload, seq=s0), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop), "resent in place under one new mapping"
    sent = _maps(p, acts[1:])
    assert all(d.data_len == len(pl) <= p.conv._mss_limit[4] - 12 for _, pl, d in sent)
    assert b"".join(pl for _, pl, _ in sent) == payload


def test_a_piece_resent_from_a_whole_mapping_with_the_data_fin_repeats_the_data_fin():
    """The guest's last super-packet carried its FIN: one mapping over it with the DATA_FIN
    (its length counts the FIN). A resend of a middle piece has no FIN of its own, yet its
    DSS must be that mapping exactly, DATA_FIN flag included: Linux takes one less byte from
    a mapping's length when the flag is set, so without it the length differed by one, and
    a segment wholly inside the partly received mapping bringing another one is
    DSSNotMatching (a CI run of test_client_with_one_interface_joins_the_announced_uplink,
    netlink, the guest's download ending)."""
    p = _pair(False)
    mss = p.conv._mss_limit[4] - 12
    s0 = p.g_nxt
    body = bytes(range(256)) * (3 * mss // 256 + 1)
    body = body[:3 * mss]
    acts = p.conv.handle(p.g_data(body, fin=True), Direction.OUT, p.now)
    assert isinstance(acts[0], Rewrite)
    ((_, _, orig),) = _maps(p, acts[:1])
    assert orig.data_fin and orig.data_len == 3 * mss + 1
    # the second wire segment alone again (no FIN on it)
    p.now += 0.3
    acts = p.conv.handle(p.g_data(body[mss:2 * mss], seq=(s0 + mss) & M32), Direction.OUT, p.now)
    ((pkt, payload, dss),) = _maps(p, acts)
    assert payload == body[mss:2 * mss]
    assert (dss.data_seq, dss.subflow_seq, dss.data_len, dss.data_fin) == \
        (orig.data_seq, orig.subflow_seq, orig.data_len, True)
    assert not pkt.flags & 0x01  # no subflow FIN on a segment that does not end the stream
    # and the last piece with the FIN: the same mapping; the TCP FIN after it, bare (on
    # bytes the server may have read already, Linux finds its read position outside the
    # mapping: DSSNoMatchTCP, test_fin_on_resent_bytes.py)
    acts = p.conv.handle(p.g_data(body[2 * mss:], fin=True, seq=(s0 + 2 * mss) & M32), Direction.OUT, p.now)
    ((pkt, payload, dss),) = _maps(p, acts)
    assert (dss.data_seq, dss.data_len, dss.data_fin) == (orig.data_seq, orig.data_len, True)
    assert not pkt.flags & 0x01
    fins = [parse_packet(a.data) for a in acts[1:] if parse_packet(a.data).flags & 0x01]
    assert len(fins) == 1 and not fins[0].payload_len and fins[0].seq == (pkt.seq + len(payload)) & M32
