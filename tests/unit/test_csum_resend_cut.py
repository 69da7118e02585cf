"""The review of stop 39's resend cut (3c0be6c, by a helper; each test failed then): a
server resend over bytes that came before goes to the guest as its new bytes only (DSS
checksums, flow.unseen, converter._parts_to_guest, multipath._download). The cut reads the
mapping's summed runs too (the range map forgets), keeps the FIN of a segment whose tail
came before, leaves whole a join resend over bytes taken beyond the guest's window (the
guest dropped them); a whole-mapping resend checks the sum of the pieces summed before (a
changed head the guest already read went unjudged; older than the cut)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlebox.core import Inject
from middlebox.core.flow import MAX_RANGES, resend_cut, unseen
from middlebox.wire import Dss, dss_checksum
from tests.unit.test_core_harness import ACK, FIN, M32, M64, PSH, Pair, check_wire
from tests.unit.test_core_placement import _map_seg, _mapping_pieces, _stream
from tests.unit.test_csum_out_of_order import _guest_parts, _join_pieces, _joined, _to_guest
from tests.unit.test_subflow_table import MPair


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _piece(p, S, m, a, b, tamper=None):
    """Bytes [a, b) (offsets in mapping m) of the 1000-byte mapping m at subflow/DSN 1 + 1000m."""
    base = 1 + 1000 * m
    whole = S[base - 1:base - 1 + 1000]
    payload = bytearray(whole[a:b])
    if tamper is not None:
        payload[tamper] ^= 0x5A
    csum = dss_checksum((p.s_idsn + base) & M64, base & M32, 1000, whole)
    return _map_seg(p, base + a, base + a, bytes(payload), m_sub=base, m_dsn=base, m_payload=whole, csum=csum)


def test_a_resend_over_summed_bytes_the_range_map_forgot_is_still_cut():
    """Subflow 1, single path. 16 islands beyond a subflow hole fill Subflow.ranges
    (MAX_RANGES); a 17th, lower one makes record() forget the highest range (RangeForgotten),
    whose bytes stay summed in their mapping's runs. A resend covering new bytes plus the
    forgotten ones must still go as its new bytes only: unseen() reads the range map, which
    no longer knows them, so the resend goes whole and its (changed) copy of the summed
    bytes reaches the guest; the mapping then verifies from the old copies."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(4000)
    assert MAX_RANGES == 16
    # byte 1..100 (the head of mapping 0) lost: every island below lies beyond a hole
    for m in range(4):
        for a in (100, 300, 500, 700):
            _, got = p.inn(_piece(p, S, m, a, a + 100))
            assert got is not None
    assert len(_flow(p).sf.ranges) == MAX_RANGES
    _, got = p.inn(_piece(p, S, 0, 900, 1000))  # lower than the highest range: that one is forgotten
    assert got is not None and p.count("RangeForgotten") == 1
    # the server resends mapping 3's bytes 600..800 (600..700 new; 700..800 came before and
    # were summed), a byte of the old part changed on the way
    actions, got = p.inn(_piece(p, S, 3, 600, 800, tamper=150))
    parts = _guest_parts(p, actions, got)
    changed = any(b != S[k - 1:k - 1 + len(b)] for k, b in parts)
    # the rest of mapping 3 comes: its sum, from the copies summed (not the guest's), verifies
    for a, b in ((0, 100), (200, 300), (400, 500), (800, 1000)):
        p.inn(_piece(p, S, 3, a, b))
    assert not _flow(p).sf.ck_maps or all(e[0] != 3001 for e in _flow(p).sf.ck_maps)
    caught = p.count("DataCsumLateErr") + p.count("DataCsumErr") + p.count("AbortTX")
    assert [(k, len(b)) for k, b in parts] == [(3601, 100)] and not (changed and not caught), (
        f"guest got {[(k, len(b)) for k, b in parts]}, a changed byte among them: {changed}, "
        f"checksum errors: {caught}")


def test_a_cut_resend_keeps_its_subflow_fin():
    """Single path: mapping 1..300 (no DATA_FIN on it), 1..100 and 201..300 came, the bare
    FIN after them was lost; the server resends 101..300 + FIN (Linux collapses the FIN skb
    into the retransmission). Cut to 101..200, no part carries the FIN, though the converter
    records the FIN as received: the guest sees no FIN until the server's RTO resends it."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(300)
    csum = dss_checksum((p.s_idsn + 1) & M64, 1, 300, S)

    def seg(a, b, flags=ACK):
        return _map_seg(p, 1 + a, 1 + a, S[a:b], m_sub=1, m_dsn=1, m_payload=S, csum=csum, flags=flags)

    # uncut reference: the same resend when nothing of it came before reaches the guest with FIN
    q = Pair(server_checksum=True)
    q.established()
    _, got = q.inn(_map_seg(q, 101, 101, S[100:300], m_sub=1, m_dsn=1, m_payload=S,
                            csum=dss_checksum((q.s_idsn + 1) & M64, 1, 300, S), flags=ACK | FIN))
    assert got is not None and check_wire(got)[0].flags & FIN

    p.inn(seg(0, 100))
    _, got = p.inn(seg(200, 300))
    assert got is not None and not check_wire(got)[0].flags & FIN
    actions, got = p.inn(seg(100, 300, ACK | FIN | PSH))
    assert p.count("CsumResendCut") == 1
    to_guest = [check_wire(a.data)[0] for a in actions[1:]
                if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    fins = [(x.seq - p.s_isn) & M32 for x in to_guest if x.flags & FIN]
    assert fins == [301], f"FIN reaches the guest at {fins}; parts {[((x.seq - p.s_isn) & M32, x.payload_len) for x in to_guest]}"


def test_a_whole_mapping_resend_checks_the_sum_of_a_head_the_guest_already_read():
    """(Before this commit too; the 'whole mapping goes whole' exemption.) The head of a
    3-piece mapping comes in order with a changed byte and reaches the guest in order (its
    reader has it); the rest is lost; the server resends the mapping whole (one segment,
    verified by _csum_ok: the server's bytes are right). ck_step ends the running sum there
    without comparing it with the whole segment's bytes: the changed byte, summed into a sum
    that is never checked, stays with the guest and no error is ever counted."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(600)
    head = _mapping_pieces(p, S, 1, 1, (200, 400), tamper=(0, 10))[0]
    (whole,) = _mapping_pieces(p, S, 1, 1, (600,))
    _, got = p.inn(head)
    assert got is not None and got[check_wire(got)[0].payload_off + 10] != S[10]  # in order: read
    p.inn(whole)
    caught = p.count("DataCsumLateErr") + p.count("DataCsumErr") + p.count("AbortTX")
    assert caught, "a changed byte delivered in order, its mapping's sum dropped unchecked"


def _cut_case(p, S):
    """Mapping 1..900 in 3 pieces of 300; the middle came; the server resends 1..750."""
    segs = _mapping_pieces(p, S, 1, 1, (300, 300, 300))
    p.inn(segs[1])
    resend = _map_seg(p, 1, 1, S[:750], m_sub=1, m_dsn=1, m_payload=S[:900],
                      csum=dss_checksum((p.s_idsn + 1) & M64, 1, 900, S[:900]), flags=ACK | PSH)
    return p.inn(resend)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("multipath", [False, True])
def test_cut_parts_are_byte_exact_and_well_formed(v6, multipath):
    S = _stream(900)
    if multipath:
        p = MPair(1, server_checksum=True, v6=v6)
        p.go_multipath()
    else:
        p = Pair(server_checksum=True, v6=v6)
        p.established()
    actions, got = _cut_case(p, S)
    assert got is not None and p.count("CsumResendCut") == 1  # the first part takes the segment's place
    parts = [got] + [a.data for a in actions[1:] if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    pk = [check_wire(x)[0] for x in parts]
    assert [((x.seq - p.s_isn) & M32, x.payload_len) for x in pk] == [(1, 300), (601, 150)]
    assert [x[y.payload_off:y.length] for x, y in zip(parts, pk)] == [S[:300], S[600:750]]
    assert [bool(x.flags & PSH) for x in pk] == [False, True]
    assert len({x.ack for x in pk}) == 1 and all(x.flags & ACK for x in pk)
    # the segment's IP marks on every part, TTL / hop limit included: the server's segment is
    # queued in the forward hook, its hop counted already (the injected part was one lower)
    ttl = 7 if v6 else 8
    assert len({x[ttl] for x in parts}) == 1 and len({x[1] for x in parts}) == 1


def test_a_cut_resend_keeps_the_data_fin_it_gained():
    """Single path: mapping 1..300 sent before the server's app closed; 1..100 and 201..300
    came (no DATA_FIN), 101..200 lost. Linux adds the DATA_FIN to a retransmitted skb whose
    mapping ends where the DATA_FIN goes (mptcp_write_data_fin: data_len + 1), so the resend
    101..300 carries it; the converter sets remote_fin and would give the guest FIN at 301,
    but the cut part 101..200 does not end the segment: the guest gets no FIN."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(300)

    def seg(a, b, fin):
        dsn = (p.s_idsn + 1) & M64
        dss = p.s_dss_ack(data_seq=dsn, dsn64=True, subflow_seq=1, data_len=300 + fin, data_fin=bool(fin),
                          csum=dss_checksum(dsn, 1, 300 + fin, S))
        p.expect_ack64 = True
        return p.s_packet((p.s_isn + 1 + a) & M32, p.g_nxt, ACK, (dss,), S[a:b])

    p.inn(seg(0, 100, 0))
    _, got = p.inn(seg(200, 300, 0))
    assert got is not None and not check_wire(got)[0].flags & FIN
    actions, got = p.inn(seg(100, 300, 1))
    assert p.count("CsumResendCut") == 1 and p.count("DataFinRX") == 1
    to_guest = [check_wire(a.data)[0] for a in actions[1:]
                if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    fins = [(x.seq - p.s_isn + x.payload_len) & M32 for x in to_guest if x.flags & FIN]
    assert fins == [301], f"FIN at {fins}; parts {[((x.seq - p.s_isn) & M32, x.payload_len) for x in to_guest]}"


def test_a_join_resend_over_bytes_the_guest_dropped_beyond_its_window_goes_whole():
    """Join without SACK. s1 lost; s2 arrives beyond the guest's window (counted
    JoinBeyondGuestWindow: the converter knows the guest drops it, yet records it in p.ooo);
    the window opens; the server resends s1 + s2 (one skb after collapsing, no SACK). Whole,
    it gave the guest s2 as well; cut, s2 is withheld as 'came before', though the guest never
    took it, and the join acks it: only the server's MPTCP-level timer brings it now."""
    p = MPair(1, server_checksum=True)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    f = p.flow
    body = _stream(600)
    s1, s2, s3 = _join_pieces(p, j, body, (200, 200, 200))
    p.s_drel -= 600
    j.s_nxt -= 600
    resend, _ = _join_pieces(p, j, body, (400, 200))
    saved = f.guest_window, f.guest_wscale
    f.guest_window, f.guest_wscale = 100, 0  # the guest's window: 100 bytes past its ack
    assert _to_guest(p, p.j_in(s2)) == body[200:400] and p.count("JoinBeyondGuestWindow") == 1  # guest drops it
    f.guest_window, f.guest_wscale = saved  # the reader caught up
    got = _to_guest(p, p.j_in(resend))
    assert got == body[:400], f"guest got {len(got)} bytes of the resend; CsumResendCut {p.count('CsumResendCut')}"


def test_a_join_whole_mapping_resend_checks_the_sum_of_a_head_the_guest_already_read():
    """The join side of the whole-mapping check: the head came with a changed byte and went
    on; the mapping resent whole (right) ends the entry, and the sums differ: reset."""
    p, body, (s1, s2, s3) = _joined((200, 200, 200), tamper=(0, 7))
    j = p.joins[1]
    p.s_drel -= 600
    j.s_nxt -= 600
    (whole,) = _join_pieces(p, j, body, (600,))
    assert _to_guest(p, p.j_in(s1))[7] != body[7]  # in order: the guest's reader has it
    p.j_in(whole)
    assert p.count("AbortTX") >= 1 and p.count("CoreBug") == 0


def _join_fin_pieces(p, j, body: bytes, cuts):
    """Segments on join j of one checksummed mapping of `body` plus its DATA_FIN, at the
    given (start, end) offsets."""
    dsn = (p.s_idsn + p.s_drel) & M64
    csum = dss_checksum(dsn, j.s_nxt, len(body) + 1, body)
    dss = Dss(data_ack=p.dack().data_ack, data_seq=dsn, dsn64=True, subflow_seq=j.s_nxt,
              data_len=len(body) + 1, csum=csum, data_fin=True)
    return [p.j_ack(j, ACK, body[a:b], (dss,), seq=j.s_nxt + a) for a, b in cuts]


def test_a_join_cut_resend_keeps_its_data_fin():
    """A join's mapping with the DATA_FIN: its head and tail came, the middle lost; the
    resend of middle + tail carries the DATA_FIN. Cut to the middle, the FIN still reaches
    the guest, after the tail (it went on its own)."""
    p = MPair(1, server_checksum=True)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    body = _stream(300)
    start = p.s_drel
    head, tail, resend = _join_fin_pieces(p, j, body, ((0, 100), (200, 300), (100, 300)))
    p.j_in(head)
    p.j_in(tail)
    acts = p.j_in(resend)
    assert p.count("CsumResendCut") == 1
    segs = [check_wire(a.data)[0] for a in acts if isinstance(a, Inject) and check_wire(a.data)[0].dport == p.gport]
    assert [((x.seq - p.flow.server_isn) & M32, x.payload_len) for x in segs if x.payload_len] == [(start + 100, 100)]
    fins = [(x.seq - p.flow.server_isn + x.payload_len) & M32 for x in segs if x.flags & FIN]
    assert fins == [start + 300]


@st.composite
def _spans(draw, limit: int = 60):
    """Sorted, disjoint [start, end) spans below `limit`."""
    points = sorted(draw(st.sets(st.integers(0, limit), max_size=10)))
    return [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), _spans(), _spans(), st.integers(0, 60), st.integers(0, 60))
def test_unseen_is_the_bytes_below_no_base_nor_in_any_range_or_run(base, got, runs, lo, n):
    """flow.unseen against a set of bytes: the parts are sorted, disjoint, not empty, and
    hold exactly the bytes of [lo, lo + n) at or above `base`, in no range and in no run."""
    hi = lo + n
    parts = unseen(base, [[s, e, 0] for s, e in got], lo, hi, [x for s_e in runs for x in s_e])
    seen = set(range(0, base)).union(*(range(s, e) for s, e in got), *(range(s, e) for s, e in runs))
    want = [k for k in range(lo, hi) if k not in seen]
    have = [k for i in range(0, len(parts), 2) for k in range(parts[i], parts[i + 1])]
    assert have == want
    assert all(parts[i] < parts[i + 1] for i in range(0, len(parts), 2))
    assert all(parts[i + 1] < parts[i + 2] for i in range(1, len(parts) - 2, 2))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), _spans(), _spans(), st.integers(0, 60), st.integers(0, 60))
def test_resend_cut_is_unseen_unless_all_or_nothing_is_new(base, got, runs, lo, n):
    """flow.resend_cut (the cut decision of subflow 1 and joins, with its fast path for a
    segment in order) against the set model: None when the segment's bytes are all new or
    none are, else exactly unseen()'s parts."""
    hi = lo + n
    g = [[s, e, 0] for s, e in got]
    flat = [x for s_e in runs for x in s_e]
    seen = set(range(0, base)).union(*(range(s, e) for s, e in got), *(range(s, e) for s, e in runs))
    new = [k for k in range(lo, hi) if k not in seen]
    cut = resend_cut(base, g, lo, hi, flat)
    if not new or len(new) == n:
        assert cut is None
    else:
        assert cut == unseen(base, g, lo, hi, flat)
