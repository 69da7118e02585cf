"""D-SACK on extra subflows (RFC 2883): bytes the server sent twice are named in the first
SACK block of our ACK, as a Linux receiver does, so that the server can undo the window cut
of a resend it did not need (tcp_check_dsack). Before, a join never sent one: in the 3 x 100
Mbit/s download with 1 % loss the server counted no TCPDSACKRecv, against 21-30 when the
receiver was Linux itself."""

from __future__ import annotations

from tests.unit.test_core_harness import M32
from tests.unit.test_subflow_table import MPair, wire_check

PAYLOAD = 1000


def _pair(sack=True):
    p = MPair(2)
    p.join_sack = sack
    p.go_multipath()
    p.join_up(1)
    return p, p.joins[1]


def _ack(p, j, actions):
    """(ack, SACK blocks) of our one pure ACK on join j, relative to the server's ISN."""
    (a,) = [a for a in actions[1:] if wire_check(a.data, True)[0].dst == j.server]
    pkt, opts, _ = wire_check(a.data, True)
    assert pkt.flags == 0x10 and not pkt.payload_len
    rel = lambda x: (x - j.s_isn) & M32  # noqa: E731
    return rel(pkt.ack), [(rel(l), rel(r)) for l, r in opts.sack], a


def test_a_duplicate_below_rcv_nxt_is_named_first():
    p, j = _pair()
    segs = [p.j_data(j, bytes([i]) * PAYLOAD) for i in range(3)]
    p.j_in(segs[0])
    p.j_in(segs[1])
    before = p.count("JoinDsackTX")
    ack, blocks, a = _ack(p, j, p.j_in(segs[0]))
    assert ack == 1 + 2 * PAYLOAD
    assert blocks == [(1, 1 + PAYLOAD)]
    assert p.count("JoinDsackTX") == before + 1
    ack, blocks, _ = _ack(p, j, p.j_in(segs[2]))  # new bytes again: no D-SACK
    assert blocks == []


def test_a_duplicate_of_out_of_order_bytes_is_named_then_the_block_holding_it():
    p, j = _pair()
    segs = [p.j_data(j, bytes([i]) * PAYLOAD) for i in range(5)]
    p.j_in(segs[0])
    p.j_in(segs[2])
    p.j_in(segs[4])
    ack, blocks, _ = _ack(p, j, p.j_in(segs[2]))
    assert ack == 1 + PAYLOAD
    two = (1 + 2 * PAYLOAD, 1 + 3 * PAYLOAD)
    assert blocks[0] == two and blocks[1] == two  # (its block: the latest arrival's)
    assert (1 + 4 * PAYLOAD, 1 + 5 * PAYLOAD) in blocks[2:]
    # the hole filled: cumulative, the duplicate part of an overlapping resend named
    ack, blocks, _ = _ack(p, j, p.j_in(segs[1]))
    assert ack == 1 + 3 * PAYLOAD and blocks == [(1 + 4 * PAYLOAD, 1 + 5 * PAYLOAD)]


def test_a_partly_old_segment_names_only_its_old_part():
    p, j = _pair()
    whole = bytes(range(200)) * 10  # 2000 bytes in one mapping
    seg = p.j_data(j, whole)
    p.j_in(seg)
    # the server resends the mapping's tail and more: 500 old bytes, 500 new
    j.s_nxt = 1 + 1500
    p.s_drel -= 500
    more = p.j_data(j, whole[1500:] + b"n" * 500)
    ack, blocks, _ = _ack(p, j, p.j_in(more))
    assert ack == 1 + 2500
    assert blocks == [(1 + 1500, 1 + 2000)]


def test_no_sack_block_when_the_server_did_not_permit_sack():
    p, j = _pair(sack=False)
    seg = p.j_data(j, b"x" * PAYLOAD)
    p.j_in(seg)
    ack, blocks, _ = _ack(p, j, p.j_in(seg))
    assert ack == 1 + PAYLOAD and blocks == []
    assert p.count("JoinDsackTX") == 0
