"""SACK blocks of the server under an ack the converter lowers (single path).

The guest's ack is the server's DATA_ACK, and with DSS checksums Linux takes none of a
mapping before all of it is in: its subflow ack runs ahead of its DATA_ACK. A block the
server sends below its subflow ack (a D-SACK of a resend it already had) then lay above the
ack the guest got, and the guest read it as a SACK of its unacknowledged head. A head that is
SACKed yet never acknowledged is what Linux calls reneging: it waits for its RTO and resends
that head alone, backed off, never the lost bytes above it (a kernel test's upload by a guest
with SACK and without timestamps stalled for up to 28 s, about 1 run in 10:
tests/integration/test_guest_variants.py). The guest gets no block below the server's subflow
ack unless it is below the guest's own ack too (then it is a D-SACK for the guest as well)."""

from __future__ import annotations

import pytest

from middlebox.wire import AddAddr, Dss

from tests.unit.test_core_harness import ACK, FIN, M32, M64, PSH, Pair, check_wire


def _lowered(timestamps: bool, sack: tuple) -> tuple:
    """Three guest segments the server has at the subflow level, its DATA_ACK at the first;
    returns (pair, the guest's view of the server's ACK, the three segments' guest seqs)."""
    p, starts = _three_unacked(timestamps, checksum=True)
    data_ack_rel = (starts[0] - p.g_isn) & M32
    blocks = tuple(((starts[0] + a) & M32, (starts[0] + b) & M32) for a, b in sack)
    buf = p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(data_ack_rel=data_ack_rel),), sack=blocks)
    _, got = p.inn(buf)
    return p, check_wire(got), starts


@pytest.mark.parametrize("timestamps", [False, True], ids=["no-ts", "ts"])
def test_a_dsack_below_the_subflow_ack_is_not_a_sack_of_the_guests_head(timestamps):
    p, (pkt, opts), starts = _lowered(timestamps, ((0, 1000),))  # D-SACK of the first segment
    assert pkt.ack == starts[0], "the guest's ack is the DATA_ACK"
    assert opts.sack == (), "a block above the guest's ack it must not see"
    assert p.count("DataAckMismatch") == 1


def test_a_block_across_the_subflow_ack_keeps_only_its_part_above():
    p, (pkt, opts), starts = _lowered(False, ((1000, 3500),))
    end = (starts[0] + 3000) & M32  # the server's subflow ack
    assert pkt.ack == starts[0]
    assert opts.sack == ((end, (starts[0] + 3500) & M32),)


def _one_segment():
    """A checksummed flow whose guest sent one 1000-byte segment: (pair, its seq)."""
    p = Pair(server_checksum=True, timestamps=False)
    p.established()
    start = p.g_nxt
    _, sent = p.out(p.g_data(b"a" * 1000))
    p.s_receive(sent)
    return p, start


def test_blocks_above_the_subflow_ack_and_below_the_guests_ack_pass_unchanged():
    p, start = _one_segment()
    # a D-SACK below the DATA_ACK too (a D-SACK for the guest as well), then a block above
    dsack = ((start - 3) & M32, start)
    above = ((start + 2000) & M32, (start + 3000) & M32)
    buf = p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(data_ack_rel=(start - p.g_isn) & M32),),
                     sack=(dsack, above))
    _, got = p.inn(buf)
    pkt, opts = check_wire(got)
    assert pkt.ack == start and opts.sack == (dsack, above)


def test_without_a_lowered_ack_the_servers_blocks_pass_as_they_are():
    p, start = _one_segment()
    dsack = (start, (start + 1000) & M32)  # below the ack, which is the server's own
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),), sack=(dsack,)))
    pkt, opts = check_wire(got)
    assert pkt.ack == p.g_nxt and opts.sack == (dsack,)


def _three_unacked(timestamps: bool = True, checksum: bool = False):
    """Three 1000-byte guest segments the server has at the subflow level, nothing of them
    data-acked: (pair, their guest seqs)."""
    p = Pair(server_checksum=checksum, timestamps=timestamps)
    p.established()
    starts = []
    for i in range(3):
        starts.append(p.g_nxt)
        _, sent = p.out(p.g_data(bytes([65 + i]) * 1000))
        p.s_receive(sent)
    return p, starts


def test_a_segment_without_a_data_ack_gets_the_last_data_ack_not_its_subflow_ack():
    """Linux's ADD_ADDR echo carries no DSS, and its window can be 0 (the inbound soak's
    capture, stop 47): passed with its subflow ack, beyond the DATA_ACK, the guest took the
    next segment (at the DATA_ACK, window open) as an old ACK and ignored its window; the zero
    window never reopened and the download stalled for 60 s. The guest gets the last DATA_ACK,
    and the next segment's window is then an update it takes."""
    p, starts = _three_unacked()
    data_ack_rel = (starts[2] - p.g_isn) & M32  # the last segment: in the subflow's queue only
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(data_ack_rel=data_ack_rel),)))
    assert check_wire(got)[0].ack == starts[2]
    echo = AddAddr(True, 2, bytes([10, 2, 2, 1]), 61999)  # (an echo of an address we never sent: ignored)
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (echo,), window=0))
    pkt, _ = check_wire(got)
    assert (pkt.ack, pkt.window) == (starts[2], 0), "never beyond the DATA_ACK"
    assert p.count("AckCappedAtDataAck") == 1
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(data_ack_rel=data_ack_rel),), window=100))
    pkt, _ = check_wire(got)
    assert (pkt.ack, pkt.window) == (starts[2], 100)
    # once the DATA_ACK covers it, the subflow ack passes as it is
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(),)))
    _, got = p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (echo,), window=0))
    assert check_wire(got)[0].ack == p.g_nxt and p.count("AckCappedAtDataAck") == 1


def test_a_segment_beyond_the_window_keeps_its_own_data_ack():
    """Review of be95301: the cap read `no new ack` as `no DATA_ACK`; a segment beyond the
    guest's window (its DATA_ACK not recorded) whose DATA_ACK equals its subflow ack was
    lowered to the last recorded DATA_ACK."""
    p, starts = _three_unacked()
    rel = 200000  # beyond the guest's window as the converter knows it
    all_rel = (p.g_nxt - p.g_isn) & M32
    dss = Dss(data_ack=(p.idsn_c + all_rel) & M32, ack64=False, data_seq=(p.s_idsn + rel) & M64,
              dsn64=True, subflow_seq=rel, data_len=100, csum=None, data_fin=False)
    _, got = p.inn(p.s_packet((p.s_isn + rel) & M32, p.g_nxt, ACK | PSH, (dss,), b"z" * 100))
    assert p.count("SeqBeyondWindow") == 1
    assert check_wire(got)[0].ack == p.g_nxt and p.count("AckCappedAtDataAck") == 0


def test_an_old_resent_fin_acking_the_guests_fin_keeps_its_ack():
    """Review of be95301: the guest closed second (LAST_ACK); the server resends its FIN,
    now data-acking the guest's DATA_FIN. That segment is old to the converter, yet Linux in
    LAST_ACK takes it (its end at rcv_nxt) and closes: its ack must cover the guest's FIN."""
    p = Pair(timestamps=True)
    p.established()
    _, got = p.inn(p.s_bare_data_fin(fin=True))
    assert check_wire(got)[0].flags & FIN
    p.g_rcv = p.s_nxt
    p.out(p.g_ack())
    _, sent = p.out(p.g_fin())
    p.s_receive(sent)
    rel = (p.s_nxt - 1 - p.s_isn) & M32
    dss = p.s_dss_ack(data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=0, data_len=1, csum=None,
                      data_fin=True)
    _, got = p.inn(p.s_packet((p.s_nxt - 1) & M32, p.g_nxt, ACK | FIN, (dss,)))
    assert check_wire(got)[0].ack == p.g_nxt


def test_a_data_ack_beyond_what_the_guest_sent_is_not_recorded():
    """Review of be95301: a DATA_ACK half the sequence space past the guest's bytes (forged,
    in window) was recorded, and the cap then turned an ACK below it into one 2^31 away
    (Linux answers that with a challenge ACK and drops it)."""
    p, starts = _three_unacked()
    bogus = ((p.g_nxt - p.g_isn) & M32) + (1 << 31) - 1
    p.inn(p.s_packet(p.s_nxt, p.g_nxt, ACK, (p.s_dss_ack(data_ack_rel=bogus & M32),)))
    echo = AddAddr(True, 2, bytes([10, 2, 2, 1]), 61999)
    _, got = p.inn(p.s_packet(p.s_nxt, starts[1], ACK, (echo,)))
    assert check_wire(got)[0].ack == starts[0], "the last DATA_ACK within the guest's bytes"
