"""Review probes (adversarial): each test that fails demonstrates a defect of the core."""

from middlebox.core import State
from middlebox.wire import MpCapable

from tests.unit.test_core_harness import ACK, M32, SYN, Pair, check_wire
from tests.unit.test_core_placement import Sim, _map_seg, _mapping_pieces, _stream


def _flow(p):
    (flow,) = p.conv.flows.values()
    return flow


def _two_mappings_with_a_loss(p, tamper=None):
    """M1 = subflow/data 1..400 in two segments, M2 = 401..800 in two; M1's second segment is
    lost and comes back (subflow retransmission) after M2's first segment arrived (GSO
    mappings, a plain loss)."""
    S = _stream(800)
    sim = Sim(p, S)
    a1, a2 = _mapping_pieces(p, S, 1, 1, (200, 200), tamper=tamper)
    b1, b2 = _mapping_pieces(p, S, 401, 401, (200, 200))
    sim.inn(a1)
    sim.ack()
    sim.inn(b1)  # a2 lost: out of order for the guest
    sim.ack()
    return sim, a2, b1, b2


def test_csum_a_later_mapping_summed_beside_an_incomplete_one():
    """Was a stall: b1 restarted the running sum for M2 while M1 was incomplete, a2's
    retransmission then switched summing off and every copy of b2 was 'after a hole' for good
    (b1 acked on the subflow, never resent). Then (stop 20s) M2 waited while M1 was summed: b1
    was dropped, and each such loss cost the server an RTO. Now (stop 37) each mapping has
    its own sum and runs: b1 is taken into M2's, a2 completes M1, b2 completes M2."""
    p = Pair(server_checksum=True)
    p.established()
    sim, a2, b1, b2 = _two_mappings_with_a_loss(p)
    assert p.count("DataCsumHoleDropped") == 0  # b1, while M1 was incomplete: taken
    assert sim.acks[-1] == 201
    sim.inn(a2)
    sim.ack()
    assert sim.acks[-1] == 601  # M1 whole, and b1 with it
    _, got = sim.inn(b2)
    assert got is not None
    sim.ack()
    assert sim.stream_ok() and sim.acks[-1] == 801
    assert p.count("DataCsumErr") == 0 and p.count("DataCsumLateErr") == 0


def test_csum_corrupted_end_of_mapping_passes_unverified_after_next_mapping_started():
    """Wrong bytes: a2 (corrupted in transit) completes M1 but M1 is never judged
    (_csum_late_bad: sf.rmap_r != m_r; the running sum is M2's), so its bytes reach the guest."""
    p = Pair(server_checksum=True)
    p.established()
    S = _stream(800)
    sim = Sim(p, S)
    a1, a2 = _mapping_pieces(p, S, 1, 1, (200, 200), tamper=(1, 10))
    b1, _ = _mapping_pieces(p, S, 401, 401, (200, 200))
    sim.inn(a1)
    sim.ack()
    sim.inn(b1)
    sim.ack()
    actions, got = p.inn(a2)
    assert got is None, "a segment failing its mapping's DSS checksum reached the guest"


def test_dup_consumed_ack_moves_server_window_past_rcv_edge_then_new_data_dropped():
    """Stall: consumed duplicates (an MPTCP-level retransmission of data the guest has) are
    acked on the subflow by an injected ACK with the guest's window; the server's subflow
    window now ends at that ack + window, but sf.rcv_edge stays at the guest's last ack +
    window. New data at the server's snd_una lies beyond rcv_edge + WND_SLACK: IN_OUTSIDE,
    dropped, and so is every retransmission of it; the guest has nothing to ack."""
    p = Pair()
    p.established()
    S = _stream(120000)
    sim = Sim(p, S)
    # guest window: raw 100 << wscale 7 = 12800 bytes
    for x in range(1, 120001, 10000):
        sim.inn(_map_seg(p, x, x, S[x - 1 : x - 1 + 10000]))
        p.g_rcv = (p.s_isn + sim.rcv_nxt()) & M32
        p.out(p.g_packet(p.g_nxt, p.g_rcv, ACK, window=100))
    # the DATA_ACK was late at the server: MPTCP-level retransmission of 1..100000 at subflow
    # seqs 120001.., all of it data the guest has: consumed and acked by us. Each piece lies
    # at the server's snd_una, inside the window our last ACK gave it (12800 bytes).
    for i in range(10):
        x = 1 + 10000 * i
        sub = 120001 + 10000 * i
        for _ in range(3):  # the server retransmits what is not acked
            actions, got = p.inn(_map_seg(p, sub, x, S[x - 1 : x - 1 + 10000]))
            if len(actions) == 2:
                break
        assert got is None and len(actions) == 2, (
            f"piece at the server's snd_una {sub} dropped for good: {actions[0]} (rcv_edge "
            f"{_flow(p).sf.rcv_edge}); the guest has nothing to ack: stall")
        ack = check_wire(actions[1].data)[0]
        assert (ack.ack - p.s_isn) & M32 == sub + 10000 and ack.window == 100


def test_old_segment_sets_ack64():
    """IN_OLD is not side-effect free: a wholly old segment with a 64-bit DSN sets ack64."""
    p = Pair()
    p.established()
    S = _stream(100)
    sim = Sim(p, S)
    sim.inn(_map_seg(p, 1, 1, S[:100], dsn64=False))
    sim.ack()
    assert not _flow(p).ack64
    sim.inn(_map_seg(p, 1, 1, S[:100], dsn64=True))  # wholly before rcv_nxt: IN_OLD
    assert not _flow(p).ack64, "an IN_OLD segment changed ack64"


def test_synack_in_mpc_pending_with_other_isn_and_key_is_not_taken():
    """State change from a forged/unacceptable segment: in MPC_PENDING a SYN/ACK with
    MP_CAPABLE is taken whatever its seq, ack and key (_h_synack): server_isn, remote_isn,
    remote_key, rcv_rel and rcv_edge are overwritten, and the real server's data then reaches
    the guest at the wrong seq."""
    p = Pair()
    p.handshake()
    assert _flow(p).state is State.MPC_PENDING
    forged = p.s_packet((p.s_isn + 123456) & M32, 77777, SYN | ACK,
                        (MpCapable(1, 0x01, 0x0102030405060708),))
    p.inn(forged)
    f = _flow(p)
    assert f.server_isn == p.s_isn and f.remote_key == p.s_key
    _, got = p.inn(p.s_data_pkt(b"abc"))
    assert got is not None and check_wire(got)[0].seq == (p.s_isn + 1) & M32


def test_old_subflow_segment_with_mapping_to_new_data_does_not_reach_the_guest():
    """IN_OLD (subflow bytes wholly before the subflow ack, up to 2^30 back, even before the
    server's ISN) is placed by its own mapping with no check that the data is old too: a
    segment the subflow would discard (RFC 9293 §3.10.7.4) delivers NEW data to the guest,
    unrecorded; the real bytes for that DSN later arrive as 'duplicates' and lose."""
    p = Pair()
    p.established()
    S = _stream(200)
    sim = Sim(p, S)
    sim.inn(_map_seg(p, 1, 1, S[:100]))
    sim.ack()
    # subflow seq 1000 bytes before the server's ISN, mapping it to DSN 101 (new data)
    actions, got = p.inn(_map_seg(p, -1000, 101, b"X" * 50))
    assert got is None, "an old (unacceptable) subflow segment delivered new data to the guest"
