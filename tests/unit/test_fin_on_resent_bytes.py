"""The guest's FIN on a resend of bytes subflow 1 carried already goes as a bare FIN of its
own, never on those bytes.

Linux (net/mptcp/subflow.c) queues a segment that is old data plus a new FIN whole: TCP
keeps it for the FIN, and with its bytes read already the subflow's read position is at
the end of the segment's mapping, outside it (validate_mapping): DSSNoMatchTCP, and the
subflow is reset (MP_TCPRST). A CI failure of test_slow_guest_reader_and_loss_both_ways
(inbound, announced uplink, pure Python), about 1 run in 15 under load: the guest resent
its last super-packet with its FIN after an RTO; subflow 1 had carried those bytes without
the FIN (held, _fin_may_go) and the client had them all (SACKed, then acked while the resend
was on its way); the last cut, its bytes and the FIN, reset subflow 1 of the download.
"""

from __future__ import annotations

import pytest

from middlebox.core import Direction
from middlebox.wire import Dss

from tests.unit.test_subflow_table import FIN, M32, M64, MPair, wire_check


def _to_server_on_sf1(p, actions):
    """(Packet, [MPTCP options]) of every segment the actions send on subflow 1."""
    out = []
    for a in actions:
        data = getattr(a, "data", None)
        if not data:
            continue
        pkt, _, mp = wire_check(data, True)
        if pkt.dst == p.mp.server and pkt.sport == p.mp.gport:
            out.append((pkt, mp))
    return out


@pytest.mark.parametrize("segments", [1, 3], ids=["in-place", "cut"])
def test_the_fin_on_a_resend_of_sent_bytes_goes_bare(segments):
    p = MPair(2)
    p.go_multipath()  # (the joins not up: subflow 1 takes every byte)
    mp, p0 = p.mp, p.mp.paths[0]
    s0, d0 = p.g_nxt, mp.snd_nxt
    size = 1000
    body = b""
    for i in range(segments):
        chunk = bytes([0x41 + i]) * size
        body += chunk
        p.now += 0.001
        p.conv.handle(p.g_data(chunk), Direction.OUT, p.now)
    end = d0 + len(body)
    assert mp.snd_nxt == end and p0.snd_nxt - p0.snd_una == len(body) and not p0.fin_sent
    sf_end = p0.snd_nxt
    # the guest closed, and resends it all with its FIN (its RTO): the server may have read
    # every byte already, its ACK still on the way
    p.now += 0.3
    acts = p.conv.handle(p.g_data(body, fin=True, seq=s0), Direction.OUT, p.now)
    sent = _to_server_on_sf1(p, acts)
    assert sent, p.classify(acts)
    for pkt, _ in sent:
        assert not (pkt.flags & FIN and pkt.payload_len), "a FIN on bytes subflow 1 carried before"
    assert sum(pkt.payload_len for pkt, _ in sent) == len(body)
    (fin, opts), = [(pkt, o) for pkt, o in sent if pkt.flags & FIN]
    assert (fin.seq - p0.local_isn) & M32 == sf_end and p0.fin_sent and p0.snd_nxt == sf_end + 1
    (dss,) = [o for o in opts if isinstance(o, Dss)]
    assert dss.data_fin and (dss.subflow_seq, dss.data_len) == (0, 1)
    assert (dss.data_seq - p.flow.local_idsn) & M64 == end
    # the bytes themselves under mappings that cover them (the DATA_FIN in the last one)
    for pkt, o in sent:
        if pkt.payload_len:
            (m,) = [x for x in o if isinstance(x, Dss) and x.data_len]
            ss = (pkt.seq - p0.local_isn) & M32
            assert m.subflow_seq <= ss and ss + pkt.payload_len <= m.subflow_seq + m.data_len - m.data_fin


def test_the_fin_on_new_bytes_still_rides_them():
    """(unchanged) New bytes with the guest's FIN: one segment, FIN and DATA_FIN on it."""
    p = MPair(2)
    p.go_multipath()
    p0 = p.mp.paths[0]
    p.now += 0.001
    acts = p.conv.handle(p.g_data(b"x" * 500, fin=True), Direction.OUT, p.now)
    sent = _to_server_on_sf1(p, acts)
    assert len(sent) == 1
    pkt, opts = sent[0]
    assert pkt.flags & FIN and pkt.payload_len == 500 and p0.fin_sent
    (dss,) = [o for o in opts if isinstance(o, Dss)]
    assert dss.data_fin and dss.data_len == 501
