"""Data-level SACK for the guest (MULTIPATH.md §3.5 (c), option B). The guest keeps its
SACK_PERM; once the flow is multipath, subflow 1's own SACK blocks (its seqs) never reach the
guest and the guest's blocks (data level) reach subflow 1 only where subflow 1 holds those
bytes; every ACK the guest gets names, as SACK blocks, the bytes above DATA_ACK that a
subflow's cumulative ACK covers. Without them the guest, one congestion controller for
every path, repaired one hole per RTT and after an RTO resent everything from its snd_una."""

from __future__ import annotations

from middlebox.core import Counter, Direction, Inject
from middlebox.core import multipath as MP
from middlebox.wire import build_options, encode_tcp_options, parse_options, parse_packet

from tests.unit.test_subflow_table import ACK, M32, MPair, make_packet


def _opts(buf: bytes):
    pkt = parse_packet(buf)
    return parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)


def test_guest_sack_perm_reaches_the_server_with_uplinks_and_the_synack_decides():
    p = MPair(1)
    _, syn = p.out(p.g_syn())
    assert _opts(syn).sack_perm
    _, synack = p.inn(p.s_synack(syn))
    assert p.flow.sack_ok == _opts(synack).sack_perm


def _hole_on_subflow_1():
    """Guest data on subflow 1 (not acked by the server) then on the join (acked by the
    join): (pair, join, guest seq of the join's segment)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    assert p.flow.sack_ok
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    gseq = (p.g_nxt - 1000) & M32
    assert MP.guest_sack(p.flow, p.mp, 4) == ()  # nothing acked above DATA_ACK yet
    p.j_in(p.j_ack(j, ack=ss + 1000))  # the join acks it; the DATA_ACK cannot move
    return p, j, gseq


def test_bytes_a_join_acked_above_a_hole_become_one_sack_block():
    p, j, gseq = _hole_on_subflow_1()
    assert MP.guest_sack(p.flow, p.mp, 4) == ((gseq, (gseq + 1000) & M32),)
    # an ACK we inject towards the guest carries it (and nothing MPTCP)
    o = _opts(MP._guest_ack(p.flow, p.mp))
    assert o.sack == ((gseq, (gseq + 1000) & M32),) and not o.mptcp


def test_subflow_1_duplicate_reaches_the_guest_with_data_level_blocks_not_its_own():
    p, j, gseq = _hole_on_subflow_1()
    p0 = p.mp.paths[0]
    una = (p0.local_isn + p0.snd_una) & M32
    own = (((p0.local_isn + p0.snd_una + 3000) & M32, (p0.local_isn + p0.snd_una + 4000) & M32),)
    tcp = encode_tcp_options(ts_val=77, ts_ecr=1, sack=own)
    dup = make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_nxt, una, ACK,
                      build_options(tcp, (p.dack(),)), b"", window=509, v6=p.v6)
    fwd = p.count("DupAckFwd")
    acts, got = p.inn(dup)
    assert p.count("DupAckFwd") == fwd + 1, p.classify(acts)
    o = _opts(got)
    assert o.sack == ((gseq, (gseq + 1000) & M32),), o.sack
    assert o.ts_val == 77  # the rest of its options stay


def test_no_block_without_sack_on_the_connection():
    p = MPair(1, timestamps=True)
    p.go_multipath()
    p.flow.sack_ok = False  # as when the server's SYN/ACK declined SACK
    p.join_up(1)
    j = p.joins[1]
    buf = p.data_on(1, size=1000)
    ss = (parse_packet(buf).seq - j.c_isn) & M32
    p.j_in(p.j_ack(j, ack=ss + 1000))
    assert MP.guest_sack(p.flow, p.mp, 4)  # the scoreboard knows ...
    assert _opts(MP._guest_ack(p.flow, p.mp)).sack == ()  # ... the guest is not told


def test_guest_blocks_for_join_bytes_do_not_reach_subflow_1():
    """Download: the guest SACKs bytes it got from the join; subflow 1 never carried them,
    so the block is left out (it would name subflow-1 seqs of other bytes)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p.j_in(p.j_data(j, b"a" * 500))  # the guest's view: a hole of 500, then ...
    p.j_in(p.j_data(j, b"b" * 500))
    g0 = (p.s_isn + p.s_drel - 500) & M32
    tcp = encode_tcp_options(ts_val=5, ts_ecr=77, sack=((g0, (g0 + 500) & M32),))
    ack = make_packet(p.g_addr, p.s_addr, p.gport, p.sport, p.g_nxt, (g0 - 500) & M32, ACK, tcp, b"",
                      window=900, v6=p.v6)  # a larger window: a window update, goes on
    unmapped = p.count("SackUnmapped")
    acts, sent = p.out(ack)
    assert sent is not None
    assert _opts(sent).sack == ()
    assert p.count("SackUnmapped") == unmapped + 1
