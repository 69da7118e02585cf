"""A fill lost in its hole must not hide that hole from the next head (multipath._hole_from).

Captured (hclose harness, upg-closeloss: 25 % loss both ways on both paths, run 25 of 40):
subflow 1 was gone (REMOVE_ADDR after it went stale), the join carried everything. The guest
resent DSN 975552 (above the head 965612) and it went into the join's hole at ssn 541021
(_into_hole: fill_end 542441, fill_hi 550961). That fill was lost. The guest's RTO then resent
the head, homed on the closed subflow 1: reinjected at the join's tail, ssn 550961, because
_hole_from skipped every seq below fill_end while the fill's ACK was due. The server SACKed
550961.. (sent after the fill: the fill was lost on a FIFO path) and acked 541021, no further.
Each later resend of the head went in place at 550961, a duplicate (D-SACK), and the hole at
541021 holds DSNs the guest resends only once the head is acked: the DATA_ACK stayed at 965612
for good (RTOs at 18.7, 43.5, 90.6 s; the loss was off from about 33 s, it changed nothing).

Here, scaled down:

    DSN    6..206  subflow 1 (closed), ssn 6..206     (the head 6..106, then 106..206)
    DSN  206..506  join 2,             ssn 1..301     (hole at ssn 1..101, 101..301 SACKed)
"""

from __future__ import annotations

from middlebox.core import Direction

from tests.unit.test_resends_into_holes import _ack2, _join2, _sent

M32 = 0xFFFFFFFF


def _state():
    p, mp, j2 = _join2([[6, 206, 0, 6, None], [206, 506, 2, 1, None]], 301)
    j2.sacked = ((101, 301),)
    return p, mp, j2


def _resend(p, dsn: int, n: int = 100):
    return p.conv.handle(p.g_data(bytes(n), seq=(p.flow.guest_isn + dsn) & M32), Direction.OUT, p.now)


def _to_lost_fill():
    """The capture's steps up to the stall: a resend above the head into the hole at snd_una
    (lost), the head reinjected at the tail, the server's ACK SACKing the head's copy."""
    p, mp, j2 = _state()
    # the guest resends DSN 106..206 (above the head, its home closed): into the hole at ssn 1
    assert _sent(p, _resend(p, 106)) == [(1, 106, 100)]
    assert (j2.fill_end, j2.fill_hi) == (101, 301)
    # the guest's RTO resends the head, its home closed too: the fill's ACK is due (nothing
    # above snd_nxt at the fill is SACKed), so the head goes to the tail, as before
    assert _sent(p, _resend(p, 6)) == [(301, 6, 100)]
    assert p.count("FillLostRefilled") == 0
    # the fill was lost; the head's copy, sent after it, arrived: ACK 1, SACK 101..401
    _ack2(p, 1, (101, 401))
    assert j2.snd_una == 1 and mp.data_ack == 6
    return p, mp, j2


def test_the_head_goes_into_the_hole_of_a_fill_shown_lost():
    """The guest's next RTO resends the head (home: the join at ssn 301, SACKed there, behind
    the hole at 1). Bytes sent after the fill were SACKed, so the fill is lost: the head goes
    into the hole at snd_una. Left in place at 301 (a duplicate the server drops) it was the
    stall: the hole's DSNs come from the guest only once the head is acked."""
    p, mp, j2 = _to_lost_fill()
    assert _sent(p, _resend(p, 6)) == [(1, 6, 100)]
    assert p.count("HeadIntoHole") == 2 and p.count("FillLostRefilled") == 1


def test_after_the_head_goes_in_the_data_level_moves_on():
    """The server gets the head at ssn 1 and acks the join to 401: DATA_ACK 106. DSN 106..206,
    the lost fill's, now homed at 301 where the server holds the head's copy (unsure): the
    guest's resend of it goes as a new mapping, and DSN 206..306 (moved to the closed subflow 1
    by the first fill) is reinjected too; once the server has both, the DATA_ACK passes them."""
    p, mp, j2 = _to_lost_fill()
    assert _sent(p, _resend(p, 6)) == [(1, 6, 100)]
    p.c_dack = 106
    _ack2(p, 401)
    assert j2.snd_una == 401 and mp.data_ack == 106
    sent = _sent(p, _resend(p, 106, 200))
    assert [(d, n) for _, d, n in sent] == [(106, 100), (206, 100)]
    assert all(ss >= 401 for ss, _, _ in sent), sent  # new mappings at the join's tail
    p.c_dack = 506
    _ack2(p, 601)
    assert mp.data_ack == 506


def test_a_fill_still_in_flight_keeps_its_hole():
    """Nothing sent after the fill is SACKed (only bytes sent before it): its ACK is still
    due, and the head goes to the tail (no second copy onto the fill: b11593b's rule)."""
    p, mp, j2 = _state()
    _resend(p, 106)
    _ack2(p, 1, (101, 301))  # (the same blocks again: nothing new)
    assert _sent(p, _resend(p, 6)) == [(301, 6, 100)]
    assert p.count("FillLostRefilled") == 0


def test_no_refill_inside_a_mapping_the_server_began():
    """The hole at ssn 1..201 lies at the start of a mapping over several segments (DSN 306,
    ssn 1, 1000 bytes) and takes one fill of 200 bytes in one segment (DSN 106). The server's
    ACK then stops at 101, inside that fill: not the fill's (one segment, taken whole or not
    at all) but the hole's original under the mapping, read in order (the guest's resend of
    it in place, or a late original): the server has begun that mapping and takes no other
    inside it (Linux: DSSNotMatching, the subflow reset). The fill is shown lost (SACK of the
    head's copy sent after it), yet the head must not go in at 101 under a mapping of its own."""
    m = (306, 1, 1000, None, False)
    p, mp, j2 = _join2([[6, 306, 0, 6, None], [306, 1306, 2, 1, m]], 1001)
    j2.sacked = ((201, 1001),)
    assert _sent(p, _resend(p, 106, 200)) == [(1, 106, 200)] and j2.fill_m is m
    assert _sent(p, _resend(p, 6)) == [(1001, 6, 100)]  # (the fill's ACK is due: to the tail)
    _ack2(p, 101, (201, 1101))
    assert j2.snd_una == 101
    sent = _sent(p, _resend(p, 6))
    assert all(not (1 < ss < 1001) for ss, _, _ in sent), sent
    assert p.count("FillLostRefilled") == 0
