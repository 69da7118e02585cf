"""Server data placed by its mapping, not its subflow seq (zero-window probes, MPTCP-level
retransmissions), checksums of mappings, and guest segments outside the guest's own space."""

import random

import pytest

from middlebox.core import Config, Drop, State
from middlebox.wire import Dss, MpFastclose, dss_checksum, key_idsn

from tests.unit.test_core_harness import ACK, M32, M64, RST, Pair, check_wire, mptcp_of


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _server_seg(p, sseq_rel, dsn_rel, payload, csum=False):
    dss = p.s_dss_ack(data_seq=(p.s_idsn + dsn_rel) & M64, dsn64=True, subflow_seq=sseq_rel & M32,
                      data_len=len(payload),
                      csum=dss_checksum((p.s_idsn + dsn_rel) & M64, sseq_rel & M32, len(payload), payload)
                      if csum else None)
    return p.s_packet((p.s_isn + sseq_rel) & M32, p.g_nxt, ACK, (dss,), payload)


def test_zero_window_probe_then_data_reassembles_byte_exact():
    p = Pair()
    p.established()
    _, got = p.inn(p.s_data_pkt(b"abcdef"))  # subflow 1..6, DSN 1..6
    p.g_rcv = p.s_nxt
    p.out(p.g_ack())
    # Linux's probe: 1 byte labelled with acked data (DSN = rcv_nxt - 1) at a NEW subflow seq
    # (7); Linux 6.18 puts the next new byte in it, not the one its DSN names: it must never
    # reach the guest. The converter consumes it and acks it on the subflow itself.
    actions, probe = p.inn(_server_seg(p, 7, 6, b"g"))
    assert probe is None and p.count("DupConsumed") == 1
    ack = check_wire(actions[1].data)[0]
    assert not ack.flags & RST and ack.ack == (p.s_isn + 8) & M32  # the probe's subflow byte acked
    # then data continues at subflow seq 8 with the next DSN (7)
    _, got = p.inn(_server_seg(p, 8, 7, b"ghij"))
    pkt = check_wire(got)[0]
    assert pkt.seq == (p.s_isn + 7) & M32 and got[pkt.payload_off:] == b"ghij"
    # the guest acks data up to DSN 10 (guest seq isn+11): the subflow ack covers the probe too
    p.g_rcv = (p.s_isn + 11) & M32
    _, sent = p.out(p.g_ack())
    spkt = check_wire(sent)[0]
    assert spkt.ack == (p.s_isn + 12) & M32
    (dss,) = [o for o in mptcp_of(sent, spkt, check_wire(sent)[1]) if isinstance(o, Dss)]
    assert dss.data_ack & M32 == (p.s_idsn + 11) & M32
    assert p.count("MappingMismatch") >= 1 and p.count("CoreBug") == 0


def test_mapping_without_negotiated_checksum_resets_both_ends():
    p = Pair(server_checksum=True)
    p.established()
    actions, got = p.inn(_server_seg(p, 1, 1, b"nocsum", csum=False))
    assert got is None and isinstance(actions[0], Drop)
    assert p.count("DataCsumMissing") == 1 and p.count("AbortTX") == 1
    to_server, to_guest = (check_wire(a.data)[0] for a in actions[1:])
    assert to_server.flags & RST and to_guest.flags & RST and to_guest.seq == (p.s_isn + 1) & M32
    assert _flow(p).state is State.CLOSED


def test_guest_segment_before_its_isn_is_dropped_and_does_not_shift_dsns():
    p = Pair()
    p.established(b"hello")
    actions, sent = p.out(p.g_data(b"bogus", seq=(p.g_isn - 3) & M32))
    assert sent is None and p.count("GuestSeqOutOfWindow") == 1
    _, sent = p.out(p.g_data(b"world"))
    p.s_receive(sent)  # DSN = IDSN + (seq - ISN), validated by the server
    assert p.s_stream() == b"helloworld"


# -- a guest that reassembles, a server that maps as it likes ---------------------------------

def _map_seg(p, sub, dsn, payload, m_sub=None, m_dsn=None, m_payload=None, csum=None, dsn64=True,
             checksum=False, flags=ACK):
    """A server segment of `payload` at relative subflow seq `sub`, carrying the mapping
    (m_sub, m_dsn, len(m_payload)) (default: the segment's own, DSN `dsn`). `checksum`:
    the mapping's DSS checksum over m_payload (64-bit DSN, RFC 8684 §3.3.1) unless `csum`."""
    m_sub = sub if m_sub is None else m_sub
    m_dsn = dsn if m_dsn is None else m_dsn
    m_payload = payload if m_payload is None else m_payload
    dsn_abs = (p.s_idsn + m_dsn) & M64
    if checksum and csum is None:
        csum = dss_checksum(dsn_abs, m_sub & M32, len(m_payload), m_payload)
    dss = p.s_dss_ack(data_seq=dsn_abs if dsn64 else dsn_abs & M32, dsn64=dsn64, subflow_seq=m_sub & M32,
                      data_len=len(m_payload), csum=csum)
    if dsn64:
        p.expect_ack64 = True
    return p.s_packet((p.s_isn + sub) & M32, p.g_nxt, flags, (dss,), payload)


class Sim:
    """Both ends watched: what the guest got (placed by guest seq, as a TCP receiver keeps
    it: the first copy of each byte, every later copy checked equal to it), the subflow bytes
    the converter took, and every subflow ack it sent to the server."""

    def __init__(self, p, stream: bytes):
        self.p = p
        self.stream = stream
        self.got = {}  # data rel (guest seq - server ISN) -> byte
        self.sub_taken = set()  # relative subflow seqs of bytes the converter let through
        self.sub_sent_max = 1  # highest relative subflow seq the server sent + 1
        self.acks = []  # relative subflow acks sent to the server
        self.resets = []
        self._nxt = self._hole = 1  # both sets only grow
        self.check_sack = True  # every SACK block the server gets covers subflow bytes we took

    def rcv_nxt(self) -> int:
        k = self._nxt
        while k in self.got:
            k += 1
        self._nxt = k
        return k

    def sub_hole(self) -> int:
        k = self._hole
        while k in self.sub_taken:
            k += 1
        self._hole = k
        return k

    def inn(self, buf: bytes):
        p = self.p
        pkt0 = check_wire(buf)[0]
        r = (pkt0.seq - p.s_isn) & M32
        end = r + pkt0.payload_len
        self.sub_sent_max = max(self.sub_sent_max, end)
        actions, got = p.inn(buf)
        for a in actions[1:]:
            inj = check_wire(a.data)[0]
            if inj.dst == pkt0.dst and inj.payload_len and not inj.flags & RST:
                # a resend's new bytes only (converter._parts_to_guest): its parts after the first
                assert p.count("CsumResendCut"), "guest data injected only for a cut resend"
                self.sub_taken.update(range(r, end))
                self._guest_gets(a.data)
                continue
            if inj.flags & RST or inj.dst != pkt0.src:
                self.resets.append(a)
                continue
            # the converter consumed data the guest already acknowledged and acked it itself
            assert got is None and p.count("DupConsumed"), "an injected ACK only for consumed data"
            self.sub_taken.update(range(r, end))
            self._sub_ack(inj)
        if got is not None:
            self.sub_taken.update(range(r, end))
            pkt = check_wire(got)[0]
            if pkt.flags & RST:
                self.resets.append(got)
                return actions, got
            self._guest_gets(got)
        return actions, got

    def _guest_gets(self, seg: bytes) -> None:
        """A segment reaches the guest: each byte right, and equal to any earlier copy."""
        pkt = check_wire(seg)[0]
        k = (pkt.seq - self.p.s_isn) & M32
        for i, b in enumerate(seg[pkt.payload_off : pkt.length]):
            pos = k + i
            assert 1 <= pos <= len(self.stream), f"guest byte at data rel {pos}: outside the stream"
            if pos in self.got:
                assert self.got[pos] == b, f"duplicate byte at data rel {pos} differs from the first copy"
            else:
                self.got[pos] = b
            assert b == self.stream[pos - 1], f"wrong byte at data rel {pos}"

    def ack(self, sack=()):
        """The guest acks what it has (cumulative), maybe with SACK blocks (data rel pairs)."""
        p = self.p
        p.g_rcv = (p.s_isn + self.rcv_nxt()) & M32
        blocks = tuple(((p.s_isn + a) & M32, (p.s_isn + b) & M32) for a, b in sack)
        actions, sent = p.out(p.g_ack(sack=blocks))
        assert sent is not None
        self._sub_ack(check_wire(sent)[0])
        if self.check_sack:
            for left, right in check_wire(sent)[1].sack:
                lo, hi = (left - p.s_isn) & M32, (right - p.s_isn) & M32
                assert all(k in self.sub_taken for k in range(lo, hi)), f"SACK {lo}..{hi} not all taken"
        return sent

    def _sub_ack(self, pkt):
        """A subflow ack the server receives (the guest's, translated, or one we injected)."""
        a = (pkt.ack - self.p.s_isn) & M32
        self.acks.append(a)
        assert a <= self.sub_hole(), f"subflow ack {a} beyond what the converter took ({self.sub_hole()})"
        assert a <= self.sub_sent_max, f"subflow ack {a} beyond what the server sent ({self.sub_sent_max})"

    def stream_ok(self) -> bool:
        return self.rcv_nxt() == len(self.stream) + 1


def _stream(n, seed=7):
    return random.Random(seed).randbytes(n)


# (b) MPTCP-level retransmissions on the same subflow, with losses


def test_mptcp_level_retransmissions_reassemble_byte_exact_and_subflow_acks_stay_honest():
    p = Pair()
    p.established()
    S = _stream(2400)
    sim = Sim(p, S)

    def seg(sub, dsn, n):
        return _map_seg(p, sub, dsn, S[dsn - 1 : dsn - 1 + n])

    # first transmission: 12 x 200 bytes, subflow seq == DSN; 401..600 and 1201..1400 lost
    for i in range(12):
        x = 1 + 200 * i
        if x in (401, 1201):
            continue
        sim.inn(seg(x, x, 200))
        sim.ack()
    assert sim.rcv_nxt() == 401 and sim.acks[-1] == 401
    # MPTCP RTO 1: DSN 401..600 again at the subflow's next seq (2401): lost as well
    # MPTCP RTO 2: DSN 401..800 at 2601
    sim.inn(seg(2601, 401, 400))
    sim.ack()
    assert sim.rcv_nxt() == 1201 and sim.acks[-1] == 401  # subflow 401..600 and 2401..2600 missing
    # MPTCP RTO 3: DSN 1201..1400 at 3001, then DSN 1201..1300 once more at 3201 (both arrive)
    sim.inn(seg(3001, 1201, 200))
    sim.ack()
    sim.inn(seg(3201, 1201, 100))
    sim.ack()
    assert sim.stream_ok()
    assert sim.acks[-1] == 401
    # the subflow-level retransmissions fill the subflow's holes (same seq, same mapping)
    for x, d, n in ((401, 401, 200), (1201, 1201, 200), (2401, 401, 200)):
        sim.inn(seg(x, d, n))
        sim.ack()
    assert sim.acks[-1] == 3301, sim.acks  # everything the server sent on the subflow
    assert bytes(sim.got[k] for k in range(1, 2401)) == S
    assert not sim.resets and p.count("CoreBug") == 0 and p.count("MappingMismatch") >= 1


# (c) SACK blocks (data level) move into the subflow's space


def _shifted_with_hole(timestamps):
    """After a zero-window probe the subflow runs 1 ahead of the data; data 7..10 (subflow
    8..11) and an MPTCP-level retransmission at 16..19 lost: data 11..14 sits at subflow
    12..15 and data 15..18 at subflow 20..23."""
    p = Pair(timestamps=timestamps)
    p.established()
    S = _stream(40)
    sim = Sim(p, S)
    sim.inn(_map_seg(p, 1, 1, S[0:6]))
    sim.ack()
    sim.inn(_map_seg(p, 7, 6, S[5:6]))  # the probe: DSN rcv_nxt - 1 at a new subflow seq
    sim.ack()
    sim.inn(_map_seg(p, 12, 11, S[10:14]))
    sim.inn(_map_seg(p, 20, 15, S[14:18]))
    assert sim.rcv_nxt() == 7
    return p, sim


def _sack_of(p, sent):
    pkt, opts = check_wire(sent)
    return pkt, tuple(((a - p.s_isn) & M32, (b - p.s_isn) & M32) for a, b in opts.sack)


def test_sack_blocks_are_translated_into_subflow_space_after_a_shift():
    p, sim = _shifted_with_hole(timestamps=False)
    sent = sim.ack(sack=((11, 15), (15, 19)))
    pkt, sack = _sack_of(p, sent)
    assert (pkt.ack - p.s_isn) & M32 == 8  # the probe's subflow byte is acked, the hole is not
    assert sack == ((12, 16), (20, 24))
    assert p.count("SackTranslated") == 1 and p.count("SackUnmapped") == 0 and p.count("SackDropped") == 0


def test_sack_block_no_single_range_holds_is_left_out():
    p, sim = _shifted_with_hole(timestamps=False)
    sent = sim.ack(sack=((11, 19), (15, 19)))  # 11..18 spans two ranges of different offsets
    _, sack = _sack_of(p, sent)
    assert sack == ((20, 24),)
    assert p.count("SackTranslated") == 1 and p.count("SackUnmapped") == 1
    sent = sim.ack(sack=((30, 35), (11, 15)))  # 30..34 never received at all
    _, sack = _sack_of(p, sent)
    assert sack == ((12, 16),) and p.count("SackUnmapped") == 2


def test_single_sack_block_with_timestamps_is_translated():
    p, sim = _shifted_with_hole(timestamps=True)
    sent = sim.ack(sack=((11, 15),))
    _, sack = _sack_of(p, sent)
    assert sack == ((12, 16),) and p.count("SackTranslated") == 1


def test_single_sack_block_without_timestamps_is_translated():
    """NOP NOP SACK(1 block) is 12 bytes of options, as long as timestamps alone: the block
    must still move into the subflow's space (data 11..14 sits at subflow 12..15)."""
    p, sim = _shifted_with_hole(timestamps=False)
    sim.check_sack = False  # checked here, with a clearer message
    sent = sim.ack(sack=((11, 15),))
    _, sack = _sack_of(p, sent)
    assert sack == ((12, 16),), f"SACK block left in data space: {sack}"
    assert p.count("SackTranslated") == 1


# (d) DSS checksums summed across the segments of a mapping

_CSUM_ERRORS = ("DataCsumErr", "DataCsumLateErr", "DataCsumHoleDropped", "CsumErrDropped", "AbortTX",
                "DataCsumMissing", "MappingUncovered", "MappingConflict", "CoreBug")


def _mapping_pieces(p, S, sub, dsn, sizes, tamper=None):
    """The segments of one mapping [sub, dsn, sum(sizes)) cut into `sizes`, checksummed over
    the server's bytes; `tamper` = (piece, offset): that byte flipped after the checksum."""
    total = sum(sizes)
    whole = S[dsn - 1 : dsn - 1 + total]
    csum = dss_checksum((p.s_idsn + dsn) & M64, sub & M32, total, whole)
    segs, off = [], 0
    for i, n in enumerate(sizes):
        payload = bytearray(whole[off : off + n])
        if tamper is not None and tamper[0] == i:
            payload[tamper[1]] ^= 0x5A
        segs.append(_map_seg(p, sub + off, dsn + off, bytes(payload), m_sub=sub, m_dsn=dsn, m_payload=whole,
                             csum=csum))
        off += n
    return segs


def _no_csum_errors(p):
    return {c: p.count(c) for c in _CSUM_ERRORS if p.count(c)}


def _csum_sim(n: int, sizes, tamper=None):
    """A checksummed flow, a Sim of an n-byte stream, and one mapping of it from byte 1 cut
    into `sizes` (see _mapping_pieces)."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(n)
    return p, Sim(p, S), _mapping_pieces(p, S, 1, 1, sizes, tamper=tamper)


def test_checksummed_mapping_over_three_segments_passes_byte_exact():
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(600)
    sim = Sim(p, S)
    for seg in _mapping_pieces(p, S, 1, 1, (200, 200, 200)):
        _, got = sim.inn(seg)
        assert got is not None
        sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 601
    assert _no_csum_errors(p) == {}


def test_checksummed_mapping_odd_lengths_verify():
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(15 + 9)
    sim = Sim(p, S)
    for seg in _mapping_pieces(p, S, 1, 1, (3, 5, 7)) + _mapping_pieces(p, S, 16, 16, (1, 1, 7)):
        _, got = sim.inn(seg)
        assert got is not None
    sim.ack()
    assert sim.stream_ok() and _no_csum_errors(p) == {}


def test_checksummed_mapping_bad_middle_segment_resets_both_ends_at_the_last():
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(600)
    sim = Sim(p, S)
    s1, s2, s3 = _mapping_pieces(p, S, 1, 1, (200, 200, 200), tamper=(1, 77))
    sim.inn(s1)
    sim.ack()
    actions, got = p.inn(s2)  # its bytes reach the guest: the sum is only known at the end
    assert got is not None
    p.g_rcv = (p.s_isn + 401) & M32
    p.out(p.g_ack())
    actions, got = p.inn(s3)
    assert got is None and isinstance(actions[0], Drop)
    assert p.count("DataCsumLateErr") == 1 and p.count("AbortTX") == 1
    assert p.count("DataCsumErr") == 0 and p.count("CoreBug") == 0
    assert len(actions) == 3
    injected = [(a.data, *check_wire(a.data)) for a in actions[1:]]
    (sbuf, spkt, sopts), = [x for x in injected if x[1].dport == p.sport]
    (_, gpkt, gopts), = [x for x in injected if x[1].dport == p.gport]
    assert gpkt.flags & RST and gpkt.seq == (p.s_isn + 401) & M32 and not gopts.mptcp  # its rcv_nxt
    assert spkt.flags & RST
    assert any(isinstance(o, MpFastclose) and o.rcvr_key == p.s_key for o in mptcp_of(sbuf, spkt, sopts))
    assert spkt.seq == p.g_nxt  # the seq the server expects
    assert _flow(p).state is State.CLOSED


def test_checksummed_mapping_hole_takes_the_later_segment_and_verifies_when_the_middle_comes():
    """Summed out of order (stop 37): the segment after the hole reaches the guest (which
    SACKs it, and the server resends only the hole), the middle one completes the sum.
    Before, it was dropped until the hole filled, and every loss cost the server an RTO."""
    p, sim, (s1, s2, s3) = _csum_sim(600, (200, 200, 200))
    sim.inn(s1)
    sim.ack()
    _, got = sim.inn(s3)  # the middle one was lost
    assert got is not None and p.count("DataCsumHoleDropped") == 0 and p.count("CsumOutOfOrder") == 1
    sim.ack()
    assert sim.acks[-1] == 201
    _, got = sim.inn(s2)  # the hole fills: the mapping is complete, and verifies
    assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 601
    assert _no_csum_errors(p) == {} and not _flow(p).sf.ck_maps


def test_checksummed_mapping_in_reverse_order_with_duplicates_verifies():
    p, sim, (s1, s2, s3, s4) = _csum_sim(601, (151, 150, 149, 151))  # odd offsets too
    for seg in (s4, s3, s4, s3, s2):
        _, got = sim.inn(seg)
        assert got is not None
    assert p.count("DataCsumLateErr") == 0
    _, got = sim.inn(s1)
    assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 602 and _no_csum_errors(p) == {}


def test_checksummed_mapping_bad_segment_found_when_the_hole_fills():
    """The sum is judged by the segment that completes the mapping, whichever it is: here the
    middle one, which came last (with a byte changed): both ends reset, as at the last."""
    p, sim, (s1, s2, s3) = _csum_sim(600, (200, 200, 200), tamper=(1, 77))
    sim.inn(s1)
    sim.inn(s3)
    sim.ack()
    actions, got = p.inn(s2)
    assert got is None and isinstance(actions[0], Drop)
    assert p.count("DataCsumLateErr") == 1 and p.count("AbortTX") == 1 and p.count("CoreBug") == 0
    assert _flow(p).state is State.CLOSED


def test_checksummed_mapping_duplicate_middle_segment_keeps_the_running_sum():
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(600)
    sim = Sim(p, S)
    s1, s2, s3 = _mapping_pieces(p, S, 1, 1, (200, 200, 200))
    sim.inn(s1)
    sim.inn(s2)
    sim.inn(s2)  # subflow-level retransmission, nothing acked yet
    sim.ack()
    sim.inn(s2)  # again, after the guest acked it (wholly old now)
    sim.inn(s1)
    _, got = sim.inn(s3)
    assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 601 and _no_csum_errors(p) == {}


def test_checksummed_mapping_partial_overlap_retransmission_keeps_the_running_sum():
    """A retransmission that overlaps what was summed and adds new bytes (a re-segmented
    subflow retransmission): only the new bytes enter the sum, and only they reach the
    guest (stop 39: CsumResendCut; the copy of the others is summed by no mapping)."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(600)
    sim = Sim(p, S)
    whole = S[:600]
    csum = dss_checksum((p.s_idsn + 1) & M64, 1, 600, whole)

    def piece(a, b):
        return _map_seg(p, 1 + a, 1 + a, whole[a:b], m_sub=1, m_dsn=1, m_payload=whole, csum=csum)

    for (a, b), new in zip(((0, 150), (100, 301), (250, 451), (451, 600)), (0, 150, 301, 451)):
        seen = set(sim.got)
        sim.inn(piece(a, b))
        assert set(sim.got) - seen == set(range(1 + new, 1 + b)), (a, b)
    sim.ack()
    assert sim.stream_ok() and _no_csum_errors(p) == {} and p.count("CsumResendCut") == 2



def test_checksummed_mapping_beyond_a_subflow_hole_does_not_block_the_hole_s_mapping():
    """Seen in a real download (50 Mbit/s, one path): the tail of mapping A was lost and the
    pieces of B after it were dropped (one mapping summed at a time). Linux's RTO resent A's
    tail (A verifies), then sent the first piece of a NEW mapping C before resending B's head.
    C's head, beyond the subflow hole where B belongs, started C's running sum; from then on
    every resend of B's head was dropped as "another mapping while one is being summed", and
    C could never complete, its rest waiting behind B: the server resent B's head with RTO
    backoff until the guest's timeout. Then a sum could only start in subflow order; since
    stop 37 each mapping has its own sum (B's pieces are lost here, not dropped: C's head
    still comes beyond B's hole, and must not block B)."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(1400)
    sim = Sim(p, S)
    a1, a2, a3 = _mapping_pieces(p, S, 1, 1, (200, 200, 200))
    b1, b2 = _mapping_pieces(p, S, 601, 601, (200, 200))
    c1, c2 = _mapping_pieces(p, S, 1001, 1001, (200, 200))
    sim.inn(a1)
    sim.inn(a2)  # a3 lost on the wire, and b1, b2 after it
    sim.ack()
    assert sim.acks[-1] == 401
    sim.inn(a3)  # the RTO's resend: A verifies
    sim.ack()
    assert sim.acks[-1] == 601
    sim.inn(c1)  # new data before B's resend (beyond the hole at 601)
    sim.ack()
    # the server's RTO (cwnd 1, as in the capture): the first segment not acknowledged, again
    # and again; once acked, the next one
    sent = [(601, b1), (801, b2), (1001, c1), (1201, c2)]
    for _ in range(8):
        x, seg = next(((x, seg) for x, seg in sent if x + 200 > sim.acks[-1]), (None, None))
        if seg is None:
            break
        sim.inn(seg)
        sim.ack()
    assert sim.acks[-1] == 1401 and sim.rcv_nxt() == 1401, (
        f"subflow ack {sim.acks[-1]}, guest rcv_nxt {sim.rcv_nxt()}: stalled")
    assert sim.stream_ok()
    assert p.count("DataCsumErr") == p.count("DataCsumLateErr") == p.count("CoreBug") == 0



def test_checksummed_mapping_verified_whole_beyond_a_hole_does_not_vouch_for_the_hole():
    """A mapping that comes whole in one segment (a GRO super-packet) beyond a subflow hole
    verifies itself only: the pieces of the hole's own mapping, when they come, are still
    summed. Before, ck_done jumped past the hole and those pieces passed unsummed, a piece
    changed after the server's checksum too."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(1400)
    sim = Sim(p, S)
    for seg in _mapping_pieces(p, S, 1, 1, (200, 200, 200)):
        sim.inn(seg)
    sim.ack()
    b1, b2 = _mapping_pieces(p, S, 601, 601, (200, 200), tamper=(1, 5))  # B lost, then resent...
    (whole,) = _mapping_pieces(p, S, 1001, 1001, (400,))
    _, got = sim.inn(whole)  # the next mapping, whole, beyond the hole: verified, to the guest
    assert got is not None
    _, got = p.inn(b1)
    assert got is not None
    actions, got = p.inn(b2)  # ...with a byte changed after the server's checksum
    assert got is None and isinstance(actions[0], Drop)
    assert p.count("DataCsumLateErr") == 1 and p.count("AbortTX") == 1


# (f) a server's 32-bit DSNs across 2^32, checksums on


def _key_near_wrap(version, start):
    """A server key whose IDSN's low 32 bits lie within 5000 of 2^32 (searched from `start`)."""
    k = start
    while (key_idsn(k, version) & M32) <= M32 - 5000:
        k += 1
    return k


@pytest.mark.parametrize("version,start", [(1, 0x212223242528BC00), (0, 0x21222324255AB000)])
def test_32bit_server_dsns_across_the_wrap_reach_the_guest_in_place(version, start):
    key = _key_near_wrap(version, start)
    p = Pair(Config(version=version, checksum=True), server_key=key)
    p.established()
    wrap_rel = (1 << 32) - (p.s_idsn & M32)  # the data rel whose 32-bit DSN is 0
    assert 1 < wrap_rel <= 5000
    S = _stream(wrap_rel + 3000, seed=5)
    sim = Sim(p, S)

    def send(sub, dsn, sizes, consumed=False):
        total = sum(sizes)
        whole = S[dsn - 1 : dsn - 1 + total]
        csum = dss_checksum((p.s_idsn + dsn) & M64, sub & M32, total, whole)
        off = 0
        for n in sizes:
            before = p.count("DupConsumed")
            _, got = sim.inn(_map_seg(p, sub + off, dsn + off, whole[off : off + n], m_sub=sub, m_dsn=dsn,
                                      m_payload=whole, csum=csum, dsn64=False))
            if consumed:  # data the guest acknowledged: consumed and acked on the subflow
                assert got is None and p.count("DupConsumed") == before + 1, (sub + off, dsn + off)
                off += n
                continue
            assert got is not None, (sub + off, dsn + off)
            pkt = check_wire(got)[0]
            assert pkt.seq == (p.s_isn + dsn + off) & M32  # the guest seq of its DSN
            off += n

    x = 1
    while x < wrap_rel - 600:
        n = min(1000, wrap_rel - 600 - x)
        send(x, x, (n,))
        sim.ack()
        x += n
    # one mapping of three segments straddling the wrap (DSN low 32 bits ...FFFF -> 0)
    send(x, x, (400, 401, 399))
    sim.ack()
    x += 1200
    # a zero-window probe and an MPTCP-level retransmission with 32-bit DSNs from before the wrap
    send(x, x - 1, (1,), consumed=True)
    sim.ack()
    send(x + 1, wrap_rel - 100, (150,), consumed=True)
    sim.ack()
    d, sub = x, x + 151
    while d <= len(S):
        n = min(777, len(S) + 1 - d)
        send(sub, d, (n,))
        sim.ack()
        d += n
        sub += n
    assert sim.stream_ok() and sim.acks[-1] == sub
    assert bytes(sim.got[k] for k in range(1, len(S) + 1)) == S
    assert _no_csum_errors(p) == {}


# liveness: a subflow hole while ranges of other offsets pile up beyond it


def test_subflow_hole_fills_even_when_ranges_pile_up_beyond_it():
    """Two consecutive subflow segments (A: 1..100, B: 101..200) lost; their data reaches the
    guest by an MPTCP-level retransmission, so the subflow ack waits at 1 for A's subflow-level
    retransmission. Meanwhile, a few more episodes (a segment lost, the next one arrives, the
    lost data is MPTCP-retransmitted at a new subflow seq) each leave two ranges with new
    offsets beyond the hole. When the server then retransmits, in subflow order, every segment
    the converter did not take (A first: Linux's RTO resends the head), they must get in: the
    hole fills, the subflow ack reaches the end and the guest has the whole stream. Refusing
    A (RangeMapFull) could never resolve itself if nothing beyond the hole were ever
    forgotten: the subflow ack would stay at 1 for good and the server's subflow stall."""
    p = Pair()
    p.established()
    S = _stream(5000)
    sim = Sim(p, S)
    sent = []

    def seg(sub, dsn, n, lost=False):
        sent.append((sub, dsn, n))
        if not lost:
            sim.inn(_map_seg(p, sub, dsn, S[dsn - 1 : dsn - 1 + n]))
            sim.ack()

    seg(1, 1, 100, lost=True)
    seg(101, 101, 100, lost=True)
    seg(201, 201, 100)
    sub = d = 301
    seg(sub, 1, 200)  # MPTCP RTO: DSN 1..200 at the subflow's next seq
    sub += 200
    for _ in range(8):
        lost = (sub, d, 100)
        seg(*lost, lost=True)
        seg(sub + 100, d + 100, 100)
        seg(sub + 200, d, 100)  # MPTCP-level retransmission of the lost data
        sub += 300
        d += 200
    assert sim.acks[-1] == 1  # the hole at subflow 1..200
    # the server's RTO resends from its snd_una (the subflow ack), in subflow order, what is
    # not acknowledged yet (a full map forgets the ranges farthest away: those bytes are
    # acknowledged when they come again), round after round
    for _ in range(4):
        for x, dsn, n in sorted(sent):
            if x + n > sim.acks[-1]:
                sim.inn(_map_seg(p, x, dsn, S[dsn - 1 : dsn - 1 + n]))
                sim.ack()
    assert (sim.acks[-1], sim.rcv_nxt()) == (sub, d), (
        f"subflow ack {sim.acks[-1]} (want {sub}), guest rcv_nxt {sim.rcv_nxt()} (want {d}), "
        f"RangeMapFull {p.count('RangeMapFull')}")
    assert p.count("CoreBug") == 0


def test_checksummed_mapping_retransmitted_head_of_a_whole_mapping_does_not_restart_the_sum():
    """A mapping that came whole in one segment (a GRO super-packet), then a retransmission of
    its first MSS (Linux resends the head of an skb on duplicate ACKs or a probe): that piece
    adds nothing to any sum. Before, it started summing its mapping again and the sum waited
    for bytes the server never sends again: every piece of the next multi-segment mapping was
    dropped for good (DataCsumHoleDropped; the download stalled)."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(1000)
    sim = Sim(p, S)
    (whole,) = _mapping_pieces(p, S, 1, 1, (600,))
    head = _mapping_pieces(p, S, 1, 1, (200, 400))[0]
    _, got = sim.inn(whole)
    assert got is not None
    _, got = sim.inn(head)  # the retransmitted head, before the guest acked
    for seg in _mapping_pieces(p, S, 601, 601, (200, 200)):
        _, got = sim.inn(seg)
        assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 1001
    assert _no_csum_errors(p) == {}


def test_checksummed_mapping_resent_whole_after_its_head_ends_the_running_sum():
    """The first piece of a mapping came, the rest was lost, and the server resent the whole
    super-packet (one segment, the whole mapping: verified by _classify_in). The running sum
    of that mapping must end there, or the next mapping's pieces wait behind it for good."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(1000)
    sim = Sim(p, S)
    head = _mapping_pieces(p, S, 1, 1, (200, 400))[0]
    (whole,) = _mapping_pieces(p, S, 1, 1, (600,))
    _, got = sim.inn(head)
    assert got is not None
    _, got = sim.inn(whole)
    assert got is not None
    for seg in _mapping_pieces(p, S, 601, 601, (200, 200)):
        _, got = sim.inn(seg)
        assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 1001
    assert _no_csum_errors(p) == {}
