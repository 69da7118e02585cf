"""DSS checksums of the server's mappings summed in any order (subflow 1, stop 37).

A mapping that spans segments is verified once all its bytes came, whatever their order,
cut and repeats: each mapping in progress keeps its sum and the runs of bytes summed, so a
byte is summed once however often it comes (Subflow.ck_maps, converter._csum_step). Before,
the sum ran in subflow order only and every segment after a hole was dropped until the hole
filled: the guest never saw them, sent no duplicate ACK and no SACK, and each loss cost the
server an RTO (a guest without timestamps and SACK downloaded 6 MB in 43-67 s)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlebox.core import Inject, State
from middlebox.core.flow import MAX_CK_MAPS, MAX_CK_RUNS
from middlebox.wire import Dss, dss_checksum
from tests.unit.test_core_harness import ACK, M32, M64, PSH, Pair, check_wire
from tests.unit.test_core_placement import Sim, _csum_sim, _map_seg, _mapping_pieces, _stream
from tests.unit.test_subflow_table import MPair

CSUM_ERRORS = ("DataCsumErr", "DataCsumLateErr", "DataCsumHoleDropped", "CsumMapForgotten", "CoreBug",
               "MappingConflict", "AbortTX")


def _cuts(draw, n: int) -> tuple:
    """Sizes that cut n bytes into 1-8 pieces."""
    k = draw(st.integers(1, min(8, n)))
    points = sorted(draw(st.sets(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1))) if k > 1 else []
    edges = [0, *points, n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@st.composite
def _scenario(draw):
    """Up to three consecutive mappings, each cut twice (a resend cut otherwise, as Linux
    does after a loss), and an order of their pieces with repeats, every piece at least once."""
    sizes = [draw(st.integers(2, 900)) for _ in range(draw(st.integers(1, 3)))]
    cuts = [(_cuts(draw, n), _cuts(draw, n)) for n in sizes]
    n_pieces = sum(len(a) + len(b) for a, b in cuts)
    order = draw(st.permutations(range(n_pieces)))
    repeats = draw(st.lists(st.integers(0, n_pieces - 1), max_size=6))
    cut = draw(st.integers(0, len(order)))
    return sizes, cuts, [*order[:cut], *repeats, *order[cut:]]


def _pieces(p, S, sizes, cuts):
    out, start = [], 1
    for n, (a, b) in zip(sizes, cuts):
        out += _mapping_pieces(p, S, start, start, a)
        out += _mapping_pieces(p, S, start, start, b)
        start += n
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_mappings_in_any_order_verify_and_reach_the_guest_byte_exact(scenario):
    sizes, cuts, order = scenario
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(sum(sizes))
    sim = Sim(p, S)
    segs = _pieces(p, S, sizes, cuts)
    for i in order:
        sim.inn(segs[i])
        sim.ack()
    assert sim.stream_ok(), f"guest has {sim.rcv_nxt() - 1} of {len(S)} bytes"
    assert sim.acks[-1] == len(S) + 1
    assert {c: p.count(c) for c in CSUM_ERRORS if p.count(c)} == {}
    (flow,) = p.conv.flows.values()
    assert not flow.sf.ck_maps, "a mapping verified whole stays in progress"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 900), st.data())
def test_a_changed_byte_is_found_by_whichever_piece_completes_the_mapping(n, data):
    sizes = data.draw(_cuts_strategy(n))
    if len(sizes) < 2:
        return  # one segment: judged on its own (_csum_ok), another test's matter
    bad = data.draw(st.integers(0, len(sizes) - 1))
    at = data.draw(st.integers(0, sizes[bad] - 1))
    order = data.draw(st.permutations(range(len(sizes))))
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(n)
    sim = Sim(p, S)
    segs = _mapping_pieces(p, S, 1, 1, sizes, tamper=(bad, at))
    last = None
    for i in order:
        actions, got = p.inn(segs[i])
        last = (i, got)
    i, got = last
    assert got is None, "the piece that completes a mapping with a wrong sum must not reach the guest"
    assert p.count("DataCsumLateErr") == 1 and p.count("AbortTX") == 1 and p.count("CoreBug") == 0
    (flow,) = p.conv.flows.values()
    assert flow.state is State.CLOSED


@st.composite
def _cuts_strategy(draw, n):
    return _cuts(draw, n)


def _full_table():
    """MAX_CK_MAPS mappings of 200 bytes in progress, each missing its first half (lost), and
    one more above them: (pair, sim, the pieces of each mapping)."""
    n = MAX_CK_MAPS + 1
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(200 * n)
    sim = Sim(p, S)
    maps = [_mapping_pieces(p, S, 1 + 200 * k, 1 + 200 * k, (100, 100)) for k in range(n)]
    return p, sim, maps


def test_a_mapping_below_a_full_table_gets_in():
    """MAX_CK_MAPS mappings in progress, all waiting for a hole: a piece of a mapping below
    them (the server's resend of the hole itself, first after an RTO) must be taken, or every
    resend of it would be refused for good. The highest's sum is given up (counted); its
    bytes went on unverified."""
    p, sim, maps = _full_table()
    n = len(maps)
    for k in range(1, n):
        sim.inn(maps[k][1])  # the second half of mappings 2..n (their heads lost)
        sim.ack()
    assert p.count("DataCsumHoleDropped") == 0
    _, got = sim.inn(maps[0][1])  # and of the first, the lowest: the highest makes room
    assert got is not None and p.count("CsumMapForgotten") == 1
    for k in range(n):
        sim.inn(maps[k][0])
        sim.ack()
    for k in range(n):  # (tails the subflow's range map forgot, MAX_RANGES, come again)
        sim.inn(maps[k][1])
        sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 200 * n + 1
    assert p.count("DataCsumErr") == p.count("DataCsumLateErr") == p.count("CoreBug") == 0
    (flow,) = p.conv.flows.values()
    assert not flow.sf.ck_maps


def test_a_piece_above_a_full_table_waits():
    """A mapping above the MAX_CK_MAPS in progress waits (dropped: the server resends it)
    rather than give up a lower one's sum."""
    p, sim, maps = _full_table()
    for k in range(len(maps) - 1):
        sim.inn(maps[k][1])
    _, got = sim.inn(maps[-1][1])
    assert got is None and p.count("DataCsumHoleDropped") == 1 and p.count("CsumMapForgotten") == 0


def _deliver_all(p, sim, segs) -> None:
    """Every segment (again) in subflow order, each acked: the guest's stream is the
    server's, every sum right."""
    for seg in segs:
        sim.inn(seg)
        sim.ack()
    assert sim.stream_ok() and p.count("DataCsumErr") == p.count("DataCsumLateErr") == 0


def test_runs_within_one_mapping_are_bounded():
    """Beyond a hole, pieces may leave MAX_CK_RUNS - 1 separate runs of one mapping: the
    piece that would make one more waits (dropped, resent by the server); pieces that join
    runs are still taken, and so is the piece in subflow order (next test)."""
    n = 2 * MAX_CK_RUNS + 4
    p, sim, segs = _csum_sim(100 * n, (100,) * n)
    for k in range(1, 2 * MAX_CK_RUNS - 1, 2):  # pieces 1, 3, ...: MAX_CK_RUNS - 1 runs
        _, got = sim.inn(segs[k])
        assert got is not None
    _, got = sim.inn(segs[2 * MAX_CK_RUNS + 1])
    assert got is None and p.count("DataCsumHoleDropped") == 1
    _, got = sim.inn(segs[2])  # joins two runs
    assert got is not None
    _deliver_all(p, sim, segs)


def test_the_piece_in_subflow_order_is_taken_whatever_the_runs_beyond_it():
    """Review of stop 37: with MAX_CK_RUNS runs beyond a lost head, the head (what Linux
    resends alone after its RTO) made one run too many and was refused for good."""
    n = 2 * MAX_CK_RUNS + 4
    p, sim, segs = _csum_sim(100 * n, (100,) * n)
    for k in range(2, 2 * MAX_CK_RUNS + 2, 2):  # as many runs as out-of-order pieces may make
        sim.inn(segs[k])
    _, got = sim.inn(segs[0])  # in subflow order
    assert got is not None
    _deliver_all(p, sim, segs)


def test_another_length_at_the_same_start_is_refused_and_the_sum_kept():
    """Review of stop 37: a segment naming the same subflow start with another length (Linux
    never sends one) pruned the mapping in progress, and its real pieces then passed
    unsummed: a changed byte reached the guest. Refused now; the sum catches the byte."""
    p, sim, segs = _csum_sim(600, (200, 200, 200))
    S = sim.stream
    sim.inn(segs[0])
    sim.inn(segs[1])
    odd = _map_seg(p, 401, 401, S[400:500], m_sub=1, m_dsn=1, m_payload=S[:500], checksum=True)
    _, got = p.inn(odd)
    assert got is None
    bad = bytearray(S[400:600])
    bad[150] ^= 0x5A
    last = _map_seg(p, 401, 401, bytes(bad), m_sub=1, m_dsn=1, m_payload=S[:600],
                    csum=dss_checksum((p.s_idsn + 1) & M64, 1, 600, S[:600]))
    _, got = p.inn(last)
    assert got is None and p.count("DataCsumLateErr") == 1


def _guest_parts(p, actions, got) -> list:
    """(data rel, payload) of every segment that reached the guest: the verdict's own
    bytes, or guest-bound Injects (a resend cut to its new bytes)."""
    out = []
    segs = [got] if got is not None else []
    segs += [a.data for a in actions[1:] if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    for seg in segs:
        pkt = check_wire(seg)[0]
        if pkt.payload_len:
            out.append(((pkt.seq - p.s_isn) & M32, seg[pkt.payload_off:pkt.length]))
    return out


def test_a_resend_over_bytes_summed_out_of_order_is_checked_too():
    """(open since stop 37, fixed in stop 39) A server resend that covers bytes summed out of
    order went to the guest whole, and a Linux guest keeps the newer copy of bytes it holds
    out of order (tcp_data_queue_ofo): that copy, summed by no mapping, reached the reader
    with a changed byte. The guest gets the resend's new bytes only (CsumResendCut)."""
    p, sim, segs = _csum_sim(600, (200, 200, 200))
    S = sim.stream
    p.inn(segs[1])  # s1 lost: s2 taken beyond the hole, summed
    bad = bytearray(S[200:600])
    bad[10] ^= 0x5A  # a resend of s2 + s3, s2's part changed on the way
    resend = _map_seg(p, 201, 201, bytes(bad), m_sub=1, m_dsn=1, m_payload=S[:600],
                      csum=dss_checksum((p.s_idsn + 1) & M64, 1, 600, S[:600]))
    actions, got = p.inn(resend)
    assert _guest_parts(p, actions, got) == [(401, S[400:600])]
    assert p.count("CsumResendCut") == 1
    _, got1 = p.inn(segs[0])  # completes the mapping: summed from the copies the guest has
    assert got1 is not None and p.count("DataCsumLateErr") == 0


def test_a_resend_with_new_bytes_around_old_ones_reaches_the_guest_byte_exact():
    """New bytes on both sides of bytes that came out of order: both parts go, the first in
    the segment's place (its Rewrite), the other injected, PSH on the last; the mapping
    verifies."""
    p, sim, segs = _csum_sim(1200, (300, 300, 300, 300))
    S = sim.stream
    sim.inn(segs[1])  # bytes 300..600 beyond the hole
    resend = _map_seg(p, 1, 1, S[:900], m_sub=1, m_dsn=1, m_payload=S, checksum=True, flags=ACK | PSH)
    actions, got = sim.inn(resend)
    parts = _guest_parts(p, actions, got)
    assert [(k, len(b)) for k, b in parts] == [(1, 300), (601, 300)]
    pshs = [bool(check_wire(got)[0].flags & PSH)] + [bool(check_wire(a.data)[0].flags & PSH) for a in actions[1:]
            if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    assert pshs == [False, True]
    sim.inn(segs[3])  # completes the mapping
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 1201
    assert {c: p.count(c) for c in CSUM_ERRORS if p.count(c)} == {}


def test_a_piece_without_its_mapping_that_completes_one_is_checked():
    """(open since stop 37, fixed in stop 38) On subflow 1 a segment whose DSS carries no
    mapping, placed by the last one, completed it unverified: the mapping's checksum is kept
    with it (Subflow.rmap_csum) and judged whichever segment completes it. Linux repeats the
    mapping on every segment; other stacks need not."""
    p, sim, segs = _csum_sim(600, (200, 200, 200))
    S = sim.stream
    sim.inn(segs[0])
    sim.inn(p.s_packet((p.s_isn + 201) & M32, p.g_nxt, ACK, (p.s_dss_ack(),), S[200:400]))
    bad = bytearray(S[400:600])
    bad[5] ^= 0x5A
    _, got = p.inn(p.s_packet((p.s_isn + 401) & M32, p.g_nxt, ACK, (p.s_dss_ack(),), bytes(bad)))
    assert got is None or p.count("DataCsumLateErr") + p.count("DataCsumErr") > 0


@pytest.mark.parametrize("order", ["in-order", "last-first"])
def test_pieces_without_their_mapping_that_complete_one_pass_when_right(order):
    """The other side of the test above: right bytes pass, whichever piece completes."""
    p, sim, segs = _csum_sim(600, (200, 200, 200))
    S = sim.stream
    sim.inn(segs[0])
    bare = [p.s_packet((p.s_isn + 1 + k) & M32, p.g_nxt, ACK, (p.s_dss_ack(),), S[k:k + 200])
            for k in (200, 400)]
    for seg in (bare if order == "in-order" else bare[::-1]):
        _, got = sim.inn(seg)
        assert got is not None
    sim.ack()
    assert sim.stream_ok() and p.count("DataCsumLateErr") == p.count("DataCsumErr") == 0


def test_a_segment_of_a_whole_mapping_verified_before_passes():
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(400)
    sim = Sim(p, S)
    (whole,) = _mapping_pieces(p, S, 1, 1, (400,))
    sim.inn(whole)
    sim.ack()
    _, got = sim.inn(_map_seg(p, 1, 1, S[:400], checksum=True))  # again: wholly old
    assert p.count("DataCsumErr") == 0 and sim.stream_ok()


# -- an extra subflow (multipath._csum_step) ---------------------------------------------------


def _join_pieces(p, j, body: bytes, sizes, tamper=None):
    """Server segments on join j of one checksummed mapping of `body` at the next data-level
    byte, cut into `sizes`; `tamper` = (piece, offset): that byte flipped after the sum."""
    dsn = (p.s_idsn + p.s_drel) & M64
    csum = dss_checksum(dsn, j.s_nxt, len(body), body)
    segs, off = [], 0
    for i, n in enumerate(sizes):
        payload = bytearray(body[off:off + n])
        if tamper is not None and tamper[0] == i:
            payload[tamper[1]] ^= 0x5A
        dss = Dss(data_ack=p.dack().data_ack, data_seq=dsn, dsn64=True, subflow_seq=j.s_nxt,
                  data_len=len(body), csum=csum)
        segs.append(p.j_ack(j, ACK | PSH, bytes(payload), (dss,), seq=j.s_nxt + off))
        off += n
    p.s_drel += len(body)
    j.s_nxt += len(body)
    return segs


def _to_guest(p, acts) -> bytes:
    out = b""
    for a in acts:
        if isinstance(a, Inject):
            pkt = check_wire(a.data)[0]
            if pkt.dport == p.gport and pkt.payload_len:
                out += a.data[pkt.payload_off:pkt.length]
    return out


def _joined(sizes, tamper=None):
    """A checksummed multipath flow with one join up, and the pieces on it of a 600-byte
    mapping: (pair, body, pieces)."""
    p = MPair(1, server_checksum=True)
    p.go_multipath()
    p.join_up(1)
    body = _stream(600)
    return p, body, _join_pieces(p, p.joins[1], body, sizes, tamper)


def test_a_join_takes_a_mapping_in_any_order_and_verifies_it():
    p, body, (s1, s2, s3) = _joined((201, 199, 200))
    got = _to_guest(p, p.j_in(s3))  # s1, s2 lost: s3 taken, summed, acked (SACK)
    assert got == body[400:] and p.count("DataCsumHoleDropped") == 0 and p.count("CsumOutOfOrder") == 1
    assert _to_guest(p, p.j_in(s2)) == body[201:400]
    p.j_in(s3)  # a resend (on to the guest, which has not acked it): summed once
    assert _to_guest(p, p.j_in(s1)) == body[:201]  # completes the mapping: verified
    assert p.count("DataCsumErr") == p.count("DataCsumLateErr") == p.count("AbortTX") == 0
    assert not p.path(1).ck_maps


def test_a_join_resend_over_bytes_summed_out_of_order_goes_as_its_new_bytes_only():
    """The join side of test_a_resend_over_bytes_summed_out_of_order_is_checked_too: a resend
    of s2 + s3 with s2's part changed gives the guest s3 only; s1 completes the mapping,
    summed from the copies the guest has, and it verifies."""
    p, body, (s1, s2, s3) = _joined((200, 200, 200))
    j = p.joins[1]
    p.s_drel -= 600
    j.s_nxt -= 600
    _, resend = _join_pieces(p, j, body, (200, 400), tamper=(1, 10))
    assert _to_guest(p, p.j_in(s2)) == body[200:400]
    assert _to_guest(p, p.j_in(resend)) == body[400:] and p.count("CsumResendCut") == 1
    assert _to_guest(p, p.j_in(s1)) == body[:200]
    assert p.count("DataCsumErr") == p.count("DataCsumLateErr") == p.count("AbortTX") == 0
    assert not p.path(1).ck_maps


def test_a_join_mapping_with_a_changed_byte_is_caught_by_its_last_piece_whichever():
    p, body, (s1, s2, s3) = _joined((200, 200, 200), tamper=(2, 9))
    p.j_in(s3)
    p.j_in(s1)
    acts = p.j_in(s2)  # completes it: the sum is wrong, and bytes of it went on
    assert _to_guest(p, acts) == b""
    assert p.count("AbortTX") >= 1 and p.count("CoreBug") == 0
