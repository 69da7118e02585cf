"""A guest without SACK (net.ipv4.tcp_sack=0) behind a multipath middlebox: subflow 1 gets SACK
all the same, and its blocks are the middlebox's.

Subflow 1 used to inherit the guest's SYN, so it had no SACK. Once the flow is multipath the
middlebox acknowledges subflow 1 on arrival and knows exactly which of its bytes are missing,
but without SACK it could not say so: Linux recovered subflow 1 as NewReno, one hole per
partial ACK, and the guest's ACKs, which drive those, died out behind the very hole (the
data-level window full above it). Every burst lost on the path cost an RTO and a go-back-N
(captured: hundreds of retransmissions per event). A 6 MB download took over 60 s, long
enough for the test server's sendall to time out and close: the guest saw a clean EOF
6120136 bytes in (tests/integration test_no_sack_plain[netlink-mp], FlowExpired 1: the
upload's flow, expired from TIME_WAIT during the long download). Now the guest's SYN carries
SACK_PERM to the server when the middlebox has uplinks and the server answered MP_CAPABLE
before (a plain server would agree to SACK with a guest that never sends a block), the
guest's SYN/ACK loses it again, and the ACKs to the server carry subflow 1's blocks."""

from __future__ import annotations

from middlebox.core import Config
from middlebox.wire import encode_tcp_options, parse_options
from tests.unit.test_core_harness import ACK, SYN, Pair, check_wire, make_packet
from tests.unit.test_subflow_table import UPLINKS, MPair


class NoSack:
    """A guest whose SYN offers no SACK, a server that echoes SACK_PERM only when offered, and
    (knows_server) a converter that saw this server answer MP_CAPABLE before."""

    def __init__(self, *a, known=True, **kw):
        super().__init__(*a, **kw)
        if known:
            self.conv._mptcp_servers[check_wire(self.g_syn())[0].dst] = True

    def g_opts(self, syn=False, sack=()):
        if syn:
            return encode_tcp_options(mss=1460, wscale=7, ts_val=1 if self.ts else -1,
                                      ts_ecr=0 if self.ts else -1)
        return super().g_opts(syn, sack)

    def s_synack(self, syn_sent: bytes, mptcp=None):
        """The server echoes SACK_PERM only when the SYN offered it, as Linux does (the base
        harness's model server does so too)."""
        buf = super().s_synack(syn_sent, mptcp)
        if check_wire(syn_sent)[1].sack_perm:
            return buf
        pkt, o = check_wire(buf)
        raw = buf[pkt.ip_hlen + 20:pkt.payload_off]
        i = raw.find(bytes((4, 2)))
        if i < 0:
            return buf
        raw = raw[:i] + bytes((1, 1)) + raw[i + 2:]
        return make_packet(self.s_addr, self.g_addr, self.sport, self.gport, pkt.seq, pkt.ack, SYN | ACK, raw,
                           v6=self.v6)


class NoSackMPair(NoSack, MPair):
    pass


class NoSackPair(NoSack, Pair):
    pass


def _sack_of(buf: bytes):
    return check_wire(buf)[1].sack


def test_subflow_1_gets_sack_the_guest_never_sees_it():
    p = NoSackMPair()
    _, syn = p.out(p.g_syn())
    assert check_wire(syn)[1].sack_perm  # offered to the server
    _, synack = p.inn(p.s_synack(syn))
    assert not check_wire(synack)[1].sack_perm  # the guest's SYN/ACK: as its SYN asked
    assert p.flow.sack_added and not p.flow.sack_ok


def test_single_path_config_leaves_the_syn_alone():
    p = NoSackPair()
    _, syn = p.out(p.g_syn())
    assert not check_wire(syn)[1].sack_perm
    p.inn(p.s_synack(syn))
    assert not p.conv.flows[next(iter(p.conv.flows))].sack_added


def test_server_declining_sack_leaves_subflow_1_without():
    p = NoSackMPair()
    _, syn = p.out(p.g_syn())
    pkt, _ = check_wire(syn)
    # a server that takes no SACK: its SYN/ACK has none though the SYN offered it
    buf = Pair.s_synack(p, syn)  # (the harness's, with SACK_PERM)
    q, _ = check_wire(buf)
    raw = buf[q.ip_hlen + 20:q.payload_off]
    i = raw.find(bytes((4, 2)))
    raw = raw[:i] + bytes((1, 1)) + raw[i + 2:]
    p.inn(make_packet(p.s_addr, p.g_addr, p.sport, p.gport, q.seq, q.ack, SYN | ACK, raw))
    assert not p.flow.sack_added and not p.flow.sack_ok


def test_multipath_ack_names_subflow_1_hole():
    """The pin: a segment lost on subflow 1's path, the next one arrives: the guest's ACK (no
    SACK, a duplicate) reaches the server with a SACK block naming what subflow 1 received
    beyond the hole. Before, it carried none, and Linux could only count duplicates."""
    p = NoSackMPair()
    p.go_multipath()
    p.join_up(1)
    p.s_data_pkt(b"a" * 1000)  # lost on the path
    base = p.s_nxt
    _, got = p.inn(p.s_data_pkt(b"b" * 1000))
    assert got is not None and not _sack_of(got)  # on to the guest, no blocks for it
    _, sent = p.out(p.g_ack())  # the guest's duplicate ACK
    assert sent is not None
    assert _sack_of(sent) == ((base, (base + 1000) & 0xFFFFFFFF),)


def test_server_sack_blocks_never_reach_the_guest():
    p = NoSackMPair(timestamps=False)  # (room for a block beside the DSS)
    p.go_multipath()
    p.join_up(1)
    # the server SACKs guest bytes on subflow 1 (an upload's hole): not for the guest
    rel = (p.s_nxt - p.s_isn) & 0xFFFFFFFF
    dss = p.s_dss_ack(data_seq=(p.s_idsn + rel) & 0xFFFFFFFFFFFFFFFF, dsn64=True, subflow_seq=rel, data_len=100)
    buf = p.s_packet(p.s_nxt, p.g_nxt, ACK, (dss,), payload=b"c" * 100,
                     sack=(((p.g_isn + 5000) & 0xFFFFFFFF, (p.g_isn + 6000) & 0xFFFFFFFF),))
    p.s_nxt += 100
    _, got = p.inn(buf)
    assert got is not None and not _sack_of(got)


def test_single_path_phase_names_only_bytes_beyond_a_hole():
    """Before any join, the guest's ACKs still pass as its own: the blocks name the subflow
    bytes that went to the guest beyond a hole, never those in order it has not acked yet."""
    p = NoSackPair(Config(uplinks=UPLINKS[:2], join_after_bytes=1 << 30, join_after_ms=10 ** 9))
    p.established()
    flow = p.conv.flows[next(iter(p.conv.flows))]
    assert flow.sack_added and flow.mp is None
    _, got = p.inn(p.s_data_pkt(b"a" * 1000))  # in order, not acked by the guest yet
    p.s_data_pkt(b"b" * 1000)  # lost
    base = p.s_nxt
    p.inn(p.s_data_pkt(b"c" * 1000))
    p.g_rcv = (p.g_rcv + 1000) & 0xFFFFFFFF  # the guest acks "a" only
    _, sent = p.out(p.g_ack())
    assert _sack_of(sent) == ((base, (base + 1000) & 0xFFFFFFFF),)
    # no hole: no blocks
    q = NoSackPair(Config(uplinks=UPLINKS[:2], join_after_bytes=1 << 30, join_after_ms=10 ** 9))
    q.established()
    q.inn(q.s_data_pkt(b"a" * 1000))
    _, sent = q.out(q.g_ack())
    assert not _sack_of(sent)
    assert parse_options  # (imported for readers: the blocks are parse_options' .sack)


def test_the_one_block_with_room_is_the_newest():
    """Beside timestamps and the DSS one block fits: it must be the highest range (the newest
    segment the server sent), or Linux's RACK cannot mark a lost retransmission lost and
    waits for its backed-off RTO (captured: 0.8 s stalls)."""
    p = NoSackMPair()
    p.go_multipath()
    p.join_up(1)
    p.s_data_pkt(b"a" * 1000)  # lost
    low = p.s_nxt
    p.inn(p.s_data_pkt(b"b" * 1000))
    p.s_data_pkt(b"c" * 1000)  # lost
    high = p.s_nxt
    p.inn(p.s_data_pkt(b"d" * 1000))
    _, sent = p.out(p.g_ack())
    blocks = _sack_of(sent)
    assert blocks and blocks[0] == (high, (high + 1000) & 0xFFFFFFFF), blocks
    assert (low, (low + 1000) & 0xFFFFFFFF) not in blocks[:1]


def test_only_towards_a_server_known_to_speak_mptcp():
    p = NoSackMPair(known=False)
    _, syn = p.out(p.g_syn())
    assert not check_wire(syn)[1].sack_perm  # never seen: the SYN as the guest sent it
    p.inn(p.s_synack(syn))  # MP_CAPABLE: known from now on
    q = NoSackMPair(known=False, gport=40001)
    q.conv, q.cfg = p.conv, p.cfg
    _, syn = q.out(q.g_syn())
    assert check_wire(syn)[1].sack_perm
    q.inn(q.s_synack(syn, mptcp=()))  # it falls back now: forgotten
    r = NoSackMPair(known=False, gport=40002)
    r.conv, r.cfg = p.conv, p.cfg
    _, syn = r.out(r.g_syn())
    assert not check_wire(syn)[1].sack_perm
