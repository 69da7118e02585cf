"""Server data placed by its mapping, not its subflow seq (zero-window probes, MPTCP-level
retransmissions), checksums of mappings, and guest segments outside the guest's own space."""

from middlebox.core import Config, Drop, State
from middlebox.wire import Dss, dss_checksum

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
    # Linux's probe: 1 byte of acked data (DSN = rcv_nxt - 1) at a NEW subflow seq (7)
    _, probe = p.inn(_server_seg(p, 7, 6, b"f"))
    pkt = check_wire(probe)[0]
    assert pkt.seq == (p.s_isn + 6) & M32 and probe[pkt.payload_off:] == b"f"  # its true guest seq
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
