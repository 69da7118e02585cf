"""Adversarial review of commit 6e8c88f (inbound: the uplink addresses announced to MPTCP
clients with ADD_ADDR, and the clients' joins answered there). One test per defect found;
each failed on 6e8c88f for the reason its docstring gives."""

from __future__ import annotations

from middlebox.core import Config, Direction, Inject
from middlebox.core.config import Uplink
from middlebox.core.table import SubflowState as SS
from middlebox.wire import AddAddr, MpJoinSynAck, RemoveAddr

from tests.unit.test_core_harness import M32
from tests.unit.test_inbound import PEER2_PORT, _flow, _mp, new_pair
from tests.unit.test_inbound_announce import _established, _join_syn, _joined_at_uplink, _local, _pair
from tests.unit.test_passive_join_review import _joined, _sf1_reset_by_the_peer
from tests.unit.test_subflow_table import UPLINKS

UP4 = Uplink("up4", 4, addr4="192.0.2.77", addr6="fd05::1")


def _opts_of(actions, kind):
    """(packet, option) of each `kind` option the actions inject."""
    out = []
    for a in actions:
        if isinstance(a, Inject):
            pkt, opts = _mp(a.data)
            out += [(pkt, o) for o in opts if type(o) is kind]
    return out


def _rm_ids(actions):
    return [o.addr_ids for _, o in _opts_of(actions, RemoveAddr)]


# -- 1. more than two duplicate ACKs in a row for signalling ---------------------------------------


def test_never_more_than_two_option_only_acks_in_a_row():
    """RFC 8684 §3.3.6 (and §3): an implementation MUST NOT send more than two duplicate ACKs
    in a row for the purposes of sending MPTCP options alone. Each ADD_ADDR rides alone on a
    pure ACK with the same seq, ack and window (the guest's last): with three uplinks to
    announce, begin() sent three such ACKs at once, and tick() resent them three at once
    (a peer uploading to the guest sees a third duplicate ACK: a spurious fast retransmit)."""
    p = _pair(uplinks=UPLINKS[:3])
    adds = _established(p)
    assert len(adds) <= 2, [o.addr_id for _, o in adds]
    # the rest go later (never a third within 0.1 s), every uplink is announced in the end
    sent = [(p.now, o.addr_id) for _, o in adds]
    t = p.now
    for _ in range(200):
        t += 0.05
        sent += [(t, o.addr_id) for _, o in _opts_of(p.conv.tick(t), AddAddr)]
    assert {i for _, i in sent} == {1, 2, 3}
    for k in range(2, len(sent)):
        assert sent[k][0] - sent[k - 2][0] >= 0.1, sent
    assert p.count("CoreBug") == 0


# -- 2. REMOVE_ADDR left out because of a subflow that is not alive --------------------------------


def _timed_out_join(p):
    """The peer's join at uplink 2 answered, its third ACK never came: reset after a while."""
    _local(p, _join_syn(p, UPLINKS[1].addr4))
    path = _flow(p).mp.paths[1]
    p.now += 11
    p.conv.tick(p.now)
    assert path.state is SS.CLOSED and path.addr_id == 2
    return path


def test_uplink_down_after_a_failed_join_there_still_says_remove_addr():
    """uplink_event left the REMOVE_ADDR to multipath._j_dead whenever mp.paths held any path
    with the uplink's id, whatever its state. A closed one (a join that timed out, failed its
    HMAC, or that the peer closed; anyone who saw the token can make one) gets no LINK_DOWN
    and no _j_dead: the address stayed announced to the peer though the uplink is gone."""
    p = _pair()
    _established(p)
    _timed_out_join(p)
    down = p.conv.uplink_event("up2", False, p.now)
    assert _rm_ids(down) == [(2,)]
    assert p.count("RmAddrTX") == 1


def test_uplink_down_with_a_half_open_join_there_still_says_remove_addr():
    """A join at uplink 2 still waiting for its third ACK (SYN_RCVD: LINK_DOWN does nothing
    there, SUBFLOW_TABLE) also kept the REMOVE_ADDR from being sent."""
    p = _pair()
    _established(p)
    _local(p, _join_syn(p, UPLINKS[1].addr4))
    assert _flow(p).mp.paths[1].state is SS.SYN_RCVD
    down = p.conv.uplink_event("up2", False, p.now)
    assert _rm_ids(down) == [(2,)]


def test_uplink_down_up_down_says_remove_addr_each_time():
    """An established join at uplink 2: the first down is said once (by _j_dead). The uplink
    comes back and is announced again; it goes down again: no REMOVE_ADDR at all, the closed
    path of the first join (still in mp.paths with id 2) was taken for one that _j_dead
    would handle. The peer kept an address that is gone."""
    p = _pair()
    _established(p)
    _joined_at_uplink(p, UPLINKS[1])
    assert _rm_ids(p.conv.uplink_event("up2", False, p.now)) == [(2,)]
    assert 2 in [o.addr_id for _, o in _opts_of(p.conv.uplink_event("up2", True, p.now + 1), AddAddr)]
    assert _rm_ids(p.conv.uplink_event("up2", False, p.now + 2)) == [(2,)]


# -- 3. announcements on a subflow 1 the peer has reset ----------------------------------------------


def test_announcements_go_on_a_live_subflow_when_subflow_1_is_gone():
    """A client joined at the guest's address, then reset subflow 1 (its first interface went
    away); the connection lives on the join (RFC 8684 §3.6). When the join policy then says
    so, every ADD_ADDR (and its resends) went on subflow 1, a subflow the peer no longer has:
    answered by a RST at best, never processed, so the uplinks were never used."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=10 ** 9, join_after_ms=5000))
    from tests.unit.test_inbound import inbound

    inbound(p)
    _joined(p)
    _sf1_reset_by_the_peer(p)
    assert _flow(p).announced is None
    p.now += 6
    actions, _ = p.out(p.g_data(b"x" * 100))
    adds = _opts_of(actions, AddAddr)
    assert adds, "the join policy says so: announced"
    assert all(pkt.dport == PEER2_PORT for pkt, _ in adds), [pkt.dport for pkt, _ in adds]
    for pkt, _ in adds:  # the join's own numbers
        path = _flow(p).mp.paths[1]
        assert pkt.seq == (path.local_isn + path.snd_nxt) & M32 and pkt.ack == (path.remote_isn + path.rcv_nxt) & M32
    resent = _opts_of(p.conv.tick(p.now + 1.5), AddAddr)
    assert resent and all(pkt.dport == PEER2_PORT for pkt, _ in resent)


# -- 4. a backup uplink's joins -----------------------------------------------------------------------


def test_a_join_at_a_backup_uplink_is_a_backup_subflow():
    """config.Uplink: `backup` sets the B bit of its joins (outbound: MP_JOIN SYN, and our
    scheduler uses it only when nothing else is left). A peer's join at an announced backup
    uplink got a SYN/ACK with B=0 (RFC 8684 §3.2: B=1 asks the other host to send there only
    when no B=0 subflow is available) and a path our scheduler uses as a regular one: a
    metered backup uplink carried a full share of the traffic both ways."""
    backup = Uplink("up2", 2, addr4="198.51.100.1", addr6="fd03::1", backup=True)
    p = _pair(uplinks=(UPLINKS[0], backup))
    _established(p)
    (synack,) = [a.data for a in _local(p, _join_syn(p, backup.addr4)) if isinstance(a, Inject)]
    (sa,) = _mp(synack)[1]
    assert isinstance(sa, MpJoinSynAck) and sa.addr_id == 2
    assert sa.backup
    assert _flow(p).mp.paths[1].backup


# -- 5. announcing what every join would be refused at -----------------------------------------------


def test_nothing_is_announced_when_max_subflows_is_one():
    """max_subflows 1: subflow 1 only (passive_join refuses every join with MP_TCPRST
    "lack of resources"). The uplinks were announced all the same (and resent until
    echoed): every join the peer then opened at them was refused."""
    p = _pair(max_subflows=1)
    assert _established(p) == [] and p.count("AddAddrTX") == 0
    assert p.conv.announcing == {} and p.conv.next_deadline() is None


def test_direction_local_guard_no_core_bug():
    """(guard) every path above ran without a CoreBug."""
    p = _pair(uplinks=UPLINKS[:3])
    _established(p)
    _local(p, _join_syn(p, UPLINKS[1].addr4))
    for name in ("up1", "up2", "up3"):
        p.conv.uplink_event(name, False, p.now)
        p.conv.uplink_event(name, True, p.now + 0.1)
    for dt in (0.5, 1, 2, 5, 11, 30):
        p.conv.tick(p.now + dt)
    assert p.count("CoreBug") == 0
    assert Direction.LOCAL is not None


# -- 6. an uplink coming back announces to connections that must get no ADD_ADDR ----------------------


def test_uplink_up_announces_nothing_to_a_v0_connection():
    """begin() leaves v0 out (its ADD_ADDR has no HMAC; and ours, with the v1 HMAC and layout,
    is no v0 option) but sets flow.announced to []; uplink_event then took [] for "announced
    before" and, on the next uplink that came up, sent the v1 ADD_ADDR to the v0 peer."""
    p = new_pair(config=Config(uplinks=UPLINKS[:2], join_after_bytes=0, join_after_ms=0, version=0))
    assert _established(p) == [] and _flow(p).state.name == "ESTABLISHED"
    p.conv.uplink_event("up2", False, p.now)
    up = p.conv.uplink_event("up2", True, p.now + 1)
    assert _opts_of(up, AddAddr) == [] and p.count("AddAddrTX") == 0
    assert p.conv.announcing == {}


def test_uplink_up_announces_nothing_when_max_subflows_is_one():
    p = _pair(max_subflows=1)
    _established(p)
    p.conv.uplink_event("up2", False, p.now)
    assert _opts_of(p.conv.uplink_event("up2", True, p.now + 1), AddAddr) == []
