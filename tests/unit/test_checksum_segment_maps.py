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

from tests.unit.test_subflow_table import MPair, mp_config, wire_check


def _pair(checksum: bool):
    p = MPair(1, config=mp_config(1, checksum=checksum)) if checksum else MPair(1)
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
