"""The run map nearly full (multipath.send, RUNS_SPARE): GSO super-packets stop getting
whole-mapping runs of their own, so that a full map's tail run can always take the guest's
next bytes."""

from __future__ import annotations

from middlebox.core import Direction, Inject
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState as SS
from middlebox.wire import parse_packet

from tests.unit.test_core_harness import ACK
from tests.unit.test_subflow_table import MPair


def test_a_nearly_full_run_map_cuts_super_packets_and_never_drops_new_bytes(monkeypatch):
    """GSO super-packets on subflow 1 each get a whole-mapping run, which takes no merge; a
    full map whose tail was one dropped the guest's next new bytes (RunMapDrop: RTOs, 2 %
    loss uploads at 10-40 Mbit/s on the netlink backend). Nearly full, super-packets go out
    cut (per-segment mappings, RunMapNearFull), so the tail run always takes the next bytes."""
    from middlebox.core import Drop

    monkeypatch.setattr(MP, "MAX_RUNS", 6)  # (full with a whole-mapping run at its tail)
    monkeypatch.setattr(MP, "RUNS_SPARE", 3)
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mss = p.conv._mss_limit[4] - 12
    for labels, acts in p.g_send(120, 3 * mss):  # no server ACK: no run is ever trimmed
        assert "drop" != labels[0] or len(labels) > 1, labels  # never dropped without being sent
        if isinstance(acts[0], Drop):
            sent = [parse_packet(a.data) for a in acts[1:] if isinstance(a, Inject)]
            assert sent and all(s.payload_len <= mss for s in sent), labels
    assert p.count("RunMapDrop") == 0 and p.count("RunMapNearFull") >= 1
    assert len(p.mp.runs) <= 6 and p.mp.runs[-1][4] is None
    assert p.mp.snd_nxt == p.g_nxt - p.g_isn  # every byte has a run


def _s_ack(p, ack, blocks=(), window=509):
    """The server's ACK on subflow 1 acking subflow seq `ack` (relative), with SACK blocks."""
    from middlebox.wire import build_options, encode_tcp_options

    from tests.unit.test_core_harness import make_packet

    isn = p.mp.paths[0].local_isn
    sack = tuple(((isn + a) & 0xFFFFFFFF, (isn + b) & 0xFFFFFFFF) for a, b in blocks)
    tcp = encode_tcp_options(ts_val=77, ts_ecr=int(p.now * 1000) & 0xFFFFFFFF, sack=sack) if p.ts \
        else encode_tcp_options(sack=sack)
    return make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, (isn + ack) & 0xFFFFFFFF, ACK,
                       build_options(tcp, (p.s_dss_ack(),)), b"", window=window, v6=p.v6)


def test_subflow_1_cuts_super_packets_for_a_while_after_a_loss():
    """One mapping over a super-packet on subflow 1 with a segment lost inside it (the client
    having begun the mapping) takes no new mapping inside it (Linux: DSSNotMatching), so the
    data-level head reinjected behind that hole could not go into it (_head_hole): the guest
    resent only the head, a segment per RTO (the inbound failover xfail on netlink). For
    LOSSY_CUT after subflow 1 showed a loss (SACK blocks above its cumulative ACK), its
    super-packets go out a mapping per segment; a duplicate ACK, a window update or a
    D-SACK alone shows none while SACK is on (review)."""
    from middlebox.core import Drop

    p = MPair(1)
    p.go_multipath()  # (the join is not up: every byte goes on subflow 1)
    assert p.flow.sack_ok
    mss = p.conv._mss_limit[4] - 12
    p0 = p.mp.paths[0]

    def one_super():
        ((labels, acts),) = p.g_send(1, 3 * mss)
        return acts

    acts = one_super()
    assert not isinstance(acts[0], Drop) and p.count("Sf1LossyCut") == 0  # whole, in place
    una = p0.snd_una
    p.inn(_s_ack(p, una))  # a duplicate ACK
    p.inn(_s_ack(p, una, window=400))  # a window update
    p.inn(_s_ack(p, una, blocks=((una - 3, una - 1),)))  # a D-SACK
    assert p0.loss_at == -1.0
    acts = one_super()
    assert not isinstance(acts[0], Drop) and p.count("Sf1LossyCut") == 0
    p.inn(_s_ack(p, una, blocks=((una + mss, una + 2 * mss),)))  # the first segment lost
    assert p0.loss_at == p.now
    acts = one_super()
    assert isinstance(acts[0], Drop) and p.count("Sf1LossyCut") == 1
    sent = [parse_packet(a.data) for a in acts[1:] if isinstance(a, Inject)]
    assert len(sent) == 3 and all(s.payload_len == mss for s in sent)
    # the pieces keep the guest's DSCP and ECN codepoint, a forwarded TTL, ECE on each and CWR
    # on the first (they had TOS 0, TTL 64, no CWR/ECE: an ECN guest's CWR never arrived)
    from tests.unit.test_core_gso_maps import _marked

    acts = p.conv.handle(_marked(p.g_data(b"m" * 3 * mss), 0xC0), Direction.OUT, p.now)
    raws = [a.data for a in acts[1:] if isinstance(a, Inject)]
    assert isinstance(acts[0], Drop) and len(raws) == 3
    assert all(r[1] == 0xBA and r[8] == 29 for r in raws)
    assert [r[33] & 0xC0 for r in raws] == [0xC0, 0x40, 0x40]
    p.now += MP.LOSSY_CUT  # (no loss since): whole again, in place, with its CWR and ECE
    acts = one_super()
    assert not isinstance(acts[0], Drop) and p.count("Sf1LossyCut") == 2
    acts = p.conv.handle(_marked(p.g_data(b"w" * 3 * mss), 0xC0), Direction.OUT, p.now)
    assert type(acts[0]).__name__ == "Rewrite" and acts[0].data[1] == 0xBA
    assert acts[0].data[33] & 0xC0 == 0xC0


def test_without_sack_a_duplicate_ack_shows_a_loss_on_subflow_1():
    p = MPair(1)
    p.go_multipath()
    p.flow.sack_ok = False
    mss = p.conv._mss_limit[4] - 12
    p0 = p.mp.paths[0]
    p.g_send(1, 3 * mss)
    una = p0.snd_una
    p.inn(_s_ack(p, una, window=400))  # a window update: none
    assert p0.loss_at == -1.0
    p.inn(_s_ack(p, una, window=400))  # a duplicate ACK
    assert p0.loss_at == p.now


def test_the_guests_cwr_placed_on_a_join_goes_on_the_next_subflow_1_bytes(monkeypatch):
    """ECN is subflow 1's (the guest's own connection; joins negotiate none). A CWR segment
    whose bytes all went on a join lost its CWR: the server kept echoing ECE on subflow 1 and
    the guest cut its window every RTT (review of 05df626)."""
    from tests.unit.test_core_gso_maps import _marked

    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mp = p.mp
    monkeypatch.setattr(MP, "pick", lambda mp_, n, c, now=0.0: 1)
    acts = p.conv.handle(_marked(p.g_data(b"j" * 500), 0xC0), Direction.OUT, p.now)
    (raw,) = [a.data for a in acts[1:] if isinstance(a, Inject)]
    assert p.label(raw) == "data@1" and raw[33] & 0xC0 == 0 and mp.cwr_owed
    monkeypatch.setattr(MP, "pick", lambda mp_, n, c, now=0.0: 0)
    p.now += 0.01
    acts = p.conv.handle(p.g_data(b"k" * 500), Direction.OUT, p.now)
    assert type(acts[0]).__name__ == "Rewrite" and acts[0].data[33] & 0x80 and not mp.cwr_owed
    acts = p.conv.handle(p.g_data(b"l" * 500), Direction.OUT, p.now)
    assert not acts[0].data[33] & 0x80  # (once)


def test_ipv6_pieces_keep_the_traffic_class_hop_and_flow_label():
    from tests.unit.test_core_harness import make_packet

    buf = bytearray(make_packet("fd00::1", "fd01::2", 40000, 80, 1, 1, ACK, b"", b"x" * 10, v6=True))
    buf[0:4] = (0x60000000 | 0xB9 << 20 | 0x5ABCD).to_bytes(4, "big")
    buf[7] = 30
    pkt = parse_packet(bytes(buf))
    marks = MP.guest_marks(pkt, bytes(buf))
    assert marks == (0xB9, 29, 0x5ABCD)
    out = MP.segment(6, pkt.src, pkt.dst, 40000, 80, 1, 1, ACK, 500, b"", b"y", marks)
    assert int.from_bytes(out[0:4], "big") == 0x60000000 | 0xB9 << 20 | 0x5ABCD and out[7] == 29


def test_subflow_1_cuts_super_packets_until_the_data_level_passes_a_dead_subflows_bytes():
    """Stop 27's capture (inbound failover, 2 % loss, netlink): right after the dead join was
    given up, the guest's next super-packet went on subflow 1 in place under one mapping
    (subflow 1 had shown no loss since the join's path died); a segment of it was lost inside
    the mapping the client had begun, and the data-level head, reinjected from the join,
    waited behind that hole for good. While the data level has not passed the bytes a closed
    subflow held, subflow 1's super-packets go out a mapping per segment."""
    from middlebox.core import Drop

    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mss = p.conv._mss_limit[4] - 12
    p0, pj = p.mp.paths[0], p.mp.paths[1]
    p.data_on(1, size=1000)  # bytes on the join, never data-acked
    up = p.conv.config.uplinks[0]
    p.conv.uplink_event(up.name, False, p.now)  # its uplink goes down: it closes
    assert pj.state is SS.CLOSED and p.mp.orphan_hi > p.mp.data_ack

    def one_super():
        ((labels, acts),) = p.g_send(1, 3 * mss)
        return acts

    acts = one_super()
    assert isinstance(acts[0], Drop) and p.count("Sf1OrphanCut") == 1
    sent = [parse_packet(a.data) for a in acts[1:] if isinstance(a, Inject)]
    assert len(sent) == 3 and all(s.payload_len == mss for s in sent)
    assert p.count("Sf1LossyCut") == 0
    # the server data-acks everything: the data level passed them, whole again, in place
    p.c_dack = (p.g_nxt - p.g_isn) & 0xFFFFFFFF
    p.inn(p.s_packet(p.s_nxt, (p0.local_isn + p0.snd_nxt) & 0xFFFFFFFF, ACK, (p.dack(),)))
    assert p.mp.data_ack >= p.mp.orphan_hi
    acts = one_super()
    assert not isinstance(acts[0], Drop) and p.count("Sf1OrphanCut") == 1


def test_subflow_1_cuts_super_packets_while_a_stale_subflow_holds_bytes():
    """(review of c4e66a8) From a join's going stale to its death (at least DEAD_AFTER), its
    bytes keep their home; at its death the heads come behind whatever subflow 1 sent
    meanwhile: cut that too."""
    from middlebox.core import Drop
    from middlebox.core.table import SubflowInput as SI

    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    mss = p.conv._mss_limit[4] - 12
    pj = p.mp.paths[1]
    p.data_on(1, size=1000)
    assert pj.snd_nxt > pj.snd_una
    MP._event(p.conv, p.flow, pj, SI.TIMER_STALE, p.now)
    assert pj.state is SS.STALE and p.mp.orphan_hi <= p.mp.data_ack
    ((labels, acts),) = p.g_send(1, 3 * mss)
    assert isinstance(acts[0], Drop) and p.count("Sf1OrphanCut") == 1
