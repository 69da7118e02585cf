"""The subflow state machine of a multipath flow, every (SubflowState, SubflowInput) pair.

For each pair: bring extra subflow 1 (uplink up1) of a real Converter into the state with
packets built as on the wire (a plain guest on one side, the server's side of the MP_JOIN
handshake and of each subflow on the other), feed the input (a packet to the uplink address,
`tick(now)` at a chosen `now`, `uplink_event`), and check the next state and the observable
behaviour against MODEL, written out below by hand from RFC 8684 §3.2/§3.6 and MULTIPATH.md
(never derived from `table.SUBFLOW_TABLE`, which the converter dispatches on).

Some pairs cannot be produced by the wire or the clock: `multipath._classify` calls every
non-SYN segment ODD in SYN_SENT, tick() only raises the timer a state has, uplink_event() skips
closed subflows, and a closed join is forgotten (its packets are unknown to the converter).
For those the test feeds the natural stimulus (asserting it changes nothing) and then
dispatches the pair itself through `multipath._event`, so the row is still checked.

Also here: the join SYN's contents, the SYN/ACK HMAC check, the third ACK's HMAC (PROTOCOL.md
vectors) and "no data on a subflow before the server's fourth ACK". The harness (MPair) is
shared with test_multipath_model.py.
"""

from __future__ import annotations

import socket
import struct

import pytest

from middlebox.core import ACCEPT, Config, Counter, Direction, Drop, Inject, Rewrite
from middlebox.core import MULTIPATH as MP
from middlebox.core.config import JOIN_PORTS_DEFAULT, Uplink
from middlebox.core.table import SubflowInput, SubflowState
from middlebox.wire import (
    Dss,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpTcpRst,
    RemoveAddr,
    build_options,
    encode_tcp_options,
    ipv4_checksum,
    join_hmac,
    key_idsn,
    key_token,
    options_of,
    parse_packet,
    tcp_checksum,
)

from tests.unit import vectors as V
from tests.unit.test_core_harness import ACK, FIN, M32, M64, PSH, RST, SYN, Pair, make_packet, mptcp_of

SS, SI = SubflowState, SubflowInput

UPLINKS = (
    Uplink("up1", 1, addr4="192.0.2.1", addr6="fd02::1"),
    Uplink("up2", 2, addr4="198.51.100.1", addr6="fd03::1"),
    Uplink("up3", 3, addr4="203.0.113.1", addr6="fd04::1"),
)


def mp_config(n_uplinks=2, **kw) -> Config:
    return Config(uplinks=UPLINKS[:n_uplinks], join_after_bytes=0, join_after_ms=0, **kw)


def wire_check(buf: bytes, injected: bool):
    """The packet parses and its TCP checksum is right; its IPv4 header checksum too, except
    that an Inject may leave it 0 (multipath.segment: the kernel fills it on an IP_HDRINCL
    raw socket). Returns (Packet, TcpOptions, [MPTCP options])."""
    pkt = parse_packet(buf)
    assert pkt.length == len(buf)
    assert struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0] == tcp_checksum(buf, pkt), "TCP checksum"
    if pkt.version == 4:
        got = struct.unpack_from("!H", buf, 10)[0]
        assert got == ipv4_checksum(buf, pkt.ip_hlen // 4) or (injected and got == 0), "IPv4 checksum"
    opts = options_of(buf, pkt)
    return pkt, opts, mptcp_of(buf, pkt, opts)


class Join:
    """The server's side of one MP_JOIN subflow, learnt from the converter's SYN."""

    def __init__(self, mpair, syn: bytes):
        pkt, opts, mp = wire_check(syn, True)
        assert pkt.flags == SYN, "a join SYN is a bare SYN"
        (o,) = mp
        assert type(o) is MpJoinSyn, mp
        self.syn = syn
        self.local, self.lport = pkt.src, pkt.sport  # the converter's end (uplink address)
        self.server, self.sport = pkt.dst, pkt.dport
        self.c_isn = pkt.seq
        self.opt = o
        self.opts = opts
        self.uplink = next(u for u in mpair.cfg.uplinks if mpair.addr_of(u) == self.local)
        self.s_isn = (0x70000000 + 0x1000000 * self.uplink.id) & M32
        self.s_nonce = (V.NONCE_B + self.uplink.id - 1) & M32
        self.s_nxt = 1  # server's next subflow seq (relative)
        self.s_rcv = 1  # what the server received in order on this subflow (relative)

    @property
    def key(self):
        return (self.local, self.lport, self.server, self.sport)


class MPair(Pair):
    """Pair plus the multipath parts: uplinks, the server's side of each join, classification
    of every emitted packet (each one is wire-checked; the guest never sees an MPTCP option)."""

    def __init__(self, n_uplinks=2, config=None, **kw):
        super().__init__(config or mp_config(n_uplinks), **kw)
        self.joins: dict[int, Join] = {}  # uplink id -> Join
        self.s_drel = 1  # server's next new data-level byte (relative)
        self.c_dack = 1  # the server's DATA_ACK for the converter's data (relative)
        self.nonce_b = V.NONCE_B
        self.join_sack = False  # the server's join SYN/ACKs offer SACK (the model's do)

    # -- addresses ---------------------------------------------------------------------------

    def addr_of(self, up: Uplink) -> bytes:
        if self.v6:
            return socket.inet_pton(socket.AF_INET6, up.addr6)
        return socket.inet_aton(up.addr4)

    @property
    def g_bytes(self):
        fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        return socket.inet_pton(fam, self.g_addr)

    @property
    def flow(self):
        (f,) = self.conv.flows.values()
        return f

    @property
    def mp(self):
        return self.flow.mp

    def path(self, upid: int):
        for p in self.mp.paths:
            if p.uplink is not None and p.uplink.id == upid:
                return p
        raise KeyError(upid)

    # -- emitted packets -----------------------------------------------------------------------

    def classify(self, actions, original: bytes | None = None) -> list[str]:
        """Every action as a short label: drop/accept/rewrite, and for each Inject what it is
        and where it goes: g_ack, g_data, g_fin (to the guest), or <kind>@<uplink id or 0>
        (to the server: syn, ack3, rst, fin, data, rm_addr, ack)."""
        out = []
        for i, a in enumerate(actions):
            if isinstance(a, Drop):
                assert i == 0
                out.append("drop")
            elif a is ACCEPT:
                assert i == 0
                out.append("accept")
            elif isinstance(a, Rewrite):
                assert i == 0
                wire_check(a.data, False)
                out.append("rewrite")
            else:
                assert isinstance(a, Inject), a
                out.append(self.label(a.data))
        return out

    def label(self, buf: bytes) -> str:
        pkt, opts, mp = wire_check(buf, True)
        if pkt.dst == self.g_bytes:
            assert not opts.mptcp, "the guest must never see an MPTCP option"
            assert pkt.src != self.g_bytes
            if pkt.payload_len:
                return "g_data+fin" if pkt.flags & FIN else "g_data"
            return "g_fin" if pkt.flags & FIN else "g_ack"
        where = 0
        if pkt.src != self.g_bytes:
            where = next(j.uplink.id for j in self.joins.values() if j.local == pkt.src and j.lport == pkt.sport) \
                if any(j.local == pkt.src and j.lport == pkt.sport for j in self.joins.values()) else -1
        types = {type(o) for o in mp}
        if pkt.flags & RST:
            kind = "rst"
            if MpTcpRst in types:
                kind = "rst+tcprst"
        elif pkt.flags & SYN:
            kind = "syn"
        elif MpJoinAck in types:
            kind = "ack3"
        elif pkt.flags & FIN:
            kind = "fin"
        elif pkt.payload_len:
            kind = "data"
        elif RemoveAddr in types:
            kind = "rm_addr"
        else:
            kind = "ack"
        return f"{kind}@{where}"

    # -- getting a flow multipath ------------------------------------------------------------

    def go_multipath(self, first=b"hello"):
        """Handshake, first data, the server's DATA_ACK: the converter answers with a join
        SYN per uplink. Returns the actions of that DATA_ACK."""
        self.handshake()
        _, sent = self.out(self.g_data(first))
        self.s_receive(sent)
        self.c_dack = 1 + len(first)
        actions, _ = self.inn(self.s_ack())
        for a in actions[1:]:
            if isinstance(a, Inject):
                j = Join(self, a.data)
                self.joins[j.uplink.id] = j
        return actions

    def j_packet(self, j: Join, seq, ack, flags, mptcp=(), payload=b"", window=509, tcp=b"") -> bytes:
        fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        return make_packet(socket.inet_ntop(fam, j.server), socket.inet_ntop(fam, j.local), j.sport, j.lport,
                           seq, ack, flags, build_options(tcp, tuple(mptcp)), payload, window=window, v6=self.v6)

    def j_in(self, buf: bytes, direction=Direction.LOCAL):
        self.now += 0.001
        return self.conv.handle(buf, direction, self.now)

    def j_synack(self, j: Join, good=True, with_join=True) -> bytes:
        mac = join_hmac(self.s_key, self.c_key, j.s_nonce, j.opt.nonce, self.s_version)[:8]
        if not good:
            mac = bytes(b ^ 0xFF for b in mac)
        mptcp = (MpJoinSynAck(False, 0, mac, j.s_nonce),) if with_join else ()
        tcp = encode_tcp_options(mss=1460, wscale=7, sack_perm=self.join_sack)
        return self.j_packet(j, j.s_isn, j.c_isn + 1, SYN | ACK, mptcp, tcp=tcp, window=65535)

    def dack(self):
        return Dss(data_ack=(self.idsn_c + self.c_dack) & M32)

    def j_ack(self, j: Join, flags=ACK, payload=b"", mptcp=None, seq=None, ack=None) -> bytes:
        mptcp = (self.dack(),) if mptcp is None else mptcp
        return self.j_packet(j, j.s_isn + (j.s_nxt if seq is None else seq),
                             j.c_isn + (j.s_rcv if ack is None else ack), flags, mptcp, payload)

    def j_data(self, j: Join, payload: bytes, fin=False) -> bytes:
        """New server data on join j, mapped at the next data-level byte."""
        dsn = (self.s_idsn + self.s_drel) & M64
        dss = Dss(data_ack=(self.idsn_c + self.c_dack) & M32, data_seq=dsn, dsn64=True,
                  subflow_seq=j.s_nxt, data_len=len(payload))
        buf = self.j_ack(j, ACK | PSH | (FIN if fin else 0), payload, (dss,))
        self.s_drel += len(payload)
        j.s_nxt += len(payload) + (1 if fin else 0)
        return buf

    def join_up(self, upid: int):
        """SYN/ACK and fourth ACK on the join of uplink upid: ESTABLISHED."""
        j = self.joins[upid]
        acts = self.j_in(self.j_synack(j))
        assert self.classify(acts) == ["drop", f"ack3@{upid}"], self.classify(acts)
        j.s_rcv = 1
        acts = self.j_in(self.j_ack(j))
        assert self.path(upid).state is SS.ESTABLISHED
        return acts

    def g_send(self, n: int, size=100) -> list:
        """n new guest segments: (labels, the sent or injected bytes) each."""
        out = []
        for _ in range(n):
            buf = self.g_data(bytes([0x41 + len(out) % 26]) * size)
            self.now += 0.001
            acts = self.conv.handle(buf, Direction.OUT, self.now)
            out.append((self.classify(acts), acts))
        return out

    def data_on(self, upid: int, size=1000, limit=None):
        """Guest segments until one is placed on the join of uplink upid (the scheduler's
        choice: after a burst of multipath.BURST on one subflow it chooses again). Returns
        that segment's injected bytes."""
        if limit is None:  # (BURST: bytes, or segments in older versions)
            limit = 4 * max(MP.BURST, 16 * size) // size + 4
        for _ in range(limit):
            ((labels, acts),) = self.g_send(1, size)
            if f"data@{upid}" in labels:
                return next(a.data for a in acts[1:] if self.label(a.data) == f"data@{upid}")
        raise AssertionError(f"no guest data went on uplink {upid}")


# -- the model, by hand ----------------------------------------------------------------------------
#
# Behaviour is the list of labels of the actions (MPair.classify): "drop" is the verdict of a
# packet (timers and link events have none); injects: "ack3@1" the third ACK on the subflow,
# "syn@1" the join SYN again, "rst+tcprst@1" a RST carrying MP_TCPRST, "fin@1" our FIN on the
# subflow, "ack@1" our ACK of server data on it, "rm_addr@2" REMOVE_ADDR on the other live
# join, "g_data" the server's bytes to the guest, "g_ack" an ACK to the guest. "3g_ack" means
# three ACKs to the guest (the prompt to retransmit at once, MULTIPATH.md §5).
#
# What the inputs are in each state (the drivers below): ACK acks nothing new and moves no
# data level, except in STALE where it acks the subflow's outstanding data; DATA is new server
# data on the subflow, except in CLOSING where it is a retransmission of data before the
# server's FIN; FIN is the server's FIN (again, in CLOSING); in STALE the subflow holds guest
# data the server has not acked.

DROP = ["drop"]
NOTHING: list = []
_DEAD = ["rst+tcprst@1", "rm_addr@2"]

MODEL: dict = {
    # -- SYN_SENT: our MP_JOIN SYN is out ---------------------------------------------------------
    (SS.SYN_SENT, SI.SYNACK_JOIN): (SS.PRE_ESTABLISHED, ["drop", "ack3@1"], {"MPJoinSynAckRX": 1, "MPJoinAckTX": 1}),
    (SS.SYN_SENT, SI.SYNACK_BAD): (SS.CLOSED, ["drop", "rst+tcprst@1"], {"MPJoinSynAckHMacFailure": 1}),
    (SS.SYN_SENT, SI.RST): (SS.CLOSED, DROP, {"MPJoinRejected": 1}),
    (SS.SYN_SENT, SI.ACK): (SS.SYN_SENT, DROP, {}),
    (SS.SYN_SENT, SI.DATA): (SS.SYN_SENT, DROP, {}),
    (SS.SYN_SENT, SI.FIN): (SS.SYN_SENT, DROP, {}),
    (SS.SYN_SENT, SI.ODD): (SS.SYN_SENT, DROP, {}),
    (SS.SYN_SENT, SI.TIMER_SYN): (SS.SYN_SENT, ["syn@1"], {"MPJoinSynTX": 1}),
    (SS.SYN_SENT, SI.TIMER_ACK3): (SS.SYN_SENT, NOTHING, {}),
    (SS.SYN_SENT, SI.GIVE_UP): (SS.CLOSED, NOTHING, {"MPJoinTimeout": 1}),
    (SS.SYN_SENT, SI.TIMER_STALE): (SS.SYN_SENT, NOTHING, {}),
    (SS.SYN_SENT, SI.TIMER_DEAD): (SS.SYN_SENT, NOTHING, {}),
    (SS.SYN_SENT, SI.LINK_DOWN): (SS.CLOSED, NOTHING, {}),  # nothing to tell anyone: never established
    # -- PRE_ESTABLISHED: SYN/ACK verified, third ACK out, no data before the fourth ACK ---------
    (SS.PRE_ESTABLISHED, SI.SYNACK_JOIN): (SS.PRE_ESTABLISHED, ["drop", "ack3@1"], {"MPJoinAckTX": 1}),
    (SS.PRE_ESTABLISHED, SI.SYNACK_BAD): (SS.PRE_ESTABLISHED, DROP, {}),
    (SS.PRE_ESTABLISHED, SI.RST): (SS.CLOSED, DROP, {"MPJoinRejected": 1}),
    (SS.PRE_ESTABLISHED, SI.ACK): (SS.ESTABLISHED, DROP, {"MPJoinEstablished": 1}),
    (SS.PRE_ESTABLISHED, SI.DATA): (SS.ESTABLISHED, ["drop", "g_data", "ack@1"], {"MPJoinEstablished": 1}),
    (SS.PRE_ESTABLISHED, SI.FIN): (SS.CLOSING, ["drop", "ack@1", "fin@1"], {"SubflowClosed": 1}),
    (SS.PRE_ESTABLISHED, SI.ODD): (SS.PRE_ESTABLISHED, DROP, {}),
    (SS.PRE_ESTABLISHED, SI.TIMER_SYN): (SS.PRE_ESTABLISHED, NOTHING, {}),
    (SS.PRE_ESTABLISHED, SI.TIMER_ACK3): (SS.PRE_ESTABLISHED, ["ack3@1"], {"MPJoinAckTX": 1}),
    (SS.PRE_ESTABLISHED, SI.GIVE_UP): (SS.CLOSED, ["rst+tcprst@1"], {"MPJoinTimeout": 1}),
    (SS.PRE_ESTABLISHED, SI.TIMER_STALE): (SS.PRE_ESTABLISHED, NOTHING, {}),
    (SS.PRE_ESTABLISHED, SI.TIMER_DEAD): (SS.PRE_ESTABLISHED, NOTHING, {}),
    (SS.PRE_ESTABLISHED, SI.LINK_DOWN): (SS.CLOSED, _DEAD, {"SubflowDead": 1, "RmAddrTX": 1}),
    # -- ESTABLISHED -----------------------------------------------------------------------------
    (SS.ESTABLISHED, SI.SYNACK_JOIN): (SS.ESTABLISHED, DROP, {}),
    (SS.ESTABLISHED, SI.SYNACK_BAD): (SS.ESTABLISHED, DROP, {}),
    (SS.ESTABLISHED, SI.RST): (SS.CLOSED, DROP, {"SubflowClosed": 1}),
    (SS.ESTABLISHED, SI.ACK): (SS.ESTABLISHED, DROP, {}),
    (SS.ESTABLISHED, SI.DATA): (SS.ESTABLISHED, ["drop", "g_data", "ack@1"], {"JoinDataFwd": 1}),
    (SS.ESTABLISHED, SI.FIN): (SS.CLOSING, ["drop", "ack@1", "fin@1"], {"SubflowClosed": 1}),
    (SS.ESTABLISHED, SI.ODD): (SS.ESTABLISHED, DROP, {}),
    (SS.ESTABLISHED, SI.TIMER_SYN): (SS.ESTABLISHED, NOTHING, {}),
    (SS.ESTABLISHED, SI.TIMER_ACK3): (SS.ESTABLISHED, NOTHING, {}),
    (SS.ESTABLISHED, SI.GIVE_UP): (SS.ESTABLISHED, NOTHING, {}),
    (SS.ESTABLISHED, SI.TIMER_STALE): (SS.STALE, ["ack@1"], {"SubflowStale": 1, "StaleProbeTX": 1}),  # (its probe)
    (SS.ESTABLISHED, SI.TIMER_DEAD): (SS.ESTABLISHED, NOTHING, {}),
    # no guest data outstanding in this ESTABLISHED: no prompt for the guest
    (SS.ESTABLISHED, SI.LINK_DOWN): (SS.CLOSED, _DEAD, {"SubflowDead": 1, "RmAddrTX": 1}),
    # -- STALE: guest data out on it, no progress while others progressed ------------------------
    (SS.STALE, SI.SYNACK_JOIN): (SS.STALE, DROP, {}),
    (SS.STALE, SI.SYNACK_BAD): (SS.STALE, DROP, {}),
    (SS.STALE, SI.RST): (SS.CLOSED, ["drop", "3g_ack"], {"SubflowClosed": 1, "DupAckSynth": 3}),
    (SS.STALE, SI.ACK): (SS.ESTABLISHED, ["drop", "g_ack"], {"SubflowRecover": 1}),
    (SS.STALE, SI.DATA): (SS.ESTABLISHED, ["drop", "g_data", "ack@1"], {"SubflowRecover": 1}),
    (SS.STALE, SI.FIN): (SS.CLOSING, ["drop", "ack@1", "fin@1"], {"SubflowClosed": 1}),
    (SS.STALE, SI.ODD): (SS.STALE, DROP, {}),
    (SS.STALE, SI.TIMER_SYN): (SS.STALE, NOTHING, {}),
    (SS.STALE, SI.TIMER_ACK3): (SS.STALE, NOTHING, {}),
    (SS.STALE, SI.GIVE_UP): (SS.STALE, NOTHING, {}),
    (SS.STALE, SI.TIMER_STALE): (SS.STALE, NOTHING, {}),
    (SS.STALE, SI.TIMER_DEAD): (SS.CLOSED, [*_DEAD, "3g_ack"], {"SubflowDead": 1, "RmAddrTX": 1, "DupAckSynth": 3}),
    (SS.STALE, SI.LINK_DOWN): (SS.CLOSED, [*_DEAD, "3g_ack"], {"SubflowDead": 1, "RmAddrTX": 1, "DupAckSynth": 3}),
    # -- CLOSING: the server's FIN came on it (answered with ours) -------------------------------
    (SS.CLOSING, SI.SYNACK_JOIN): (SS.CLOSING, DROP, {}),
    (SS.CLOSING, SI.SYNACK_BAD): (SS.CLOSING, DROP, {}),
    (SS.CLOSING, SI.RST): (SS.CLOSED, DROP, {"SubflowClosed": 1}),
    (SS.CLOSING, SI.ACK): (SS.CLOSING, DROP, {}),
    (SS.CLOSING, SI.DATA): (SS.CLOSING, ["drop", "ack@1"], {"DupConsumed": 1}),  # a retransmission: acked again
    (SS.CLOSING, SI.FIN): (SS.CLOSING, ["drop", "ack@1"], {}),  # its FIN again: acked, our FIN not again
    (SS.CLOSING, SI.ODD): (SS.CLOSING, DROP, {}),
    (SS.CLOSING, SI.TIMER_SYN): (SS.CLOSING, NOTHING, {}),
    (SS.CLOSING, SI.TIMER_ACK3): (SS.CLOSING, NOTHING, {}),
    (SS.CLOSING, SI.GIVE_UP): (SS.CLOSING, NOTHING, {}),
    (SS.CLOSING, SI.TIMER_STALE): (SS.CLOSING, NOTHING, {}),
    (SS.CLOSING, SI.TIMER_DEAD): (SS.CLOSING, NOTHING, {}),
    (SS.CLOSING, SI.LINK_DOWN): (SS.CLOSED, _DEAD, {"SubflowDead": 1}),
    # -- CLOSED: nothing moves --------------------------------------------------------------------
    **{(SS.CLOSED, i): (SS.CLOSED, DROP if i <= SI.ODD else NOTHING, {}) for i in SI if i < SI.SYN_AGAIN},
}

# Pairs the wire, the clock or the link events cannot produce (see the module docstring).
UNREACHABLE = {
    (SS.SYN_SENT, SI.ACK), (SS.SYN_SENT, SI.DATA), (SS.SYN_SENT, SI.FIN),  # classified ODD in SYN_SENT
    *((s, i) for s in SS for i in (SI.TIMER_SYN, SI.TIMER_ACK3, SI.GIVE_UP, SI.TIMER_STALE, SI.TIMER_DEAD)
      if (s, i) not in {(SS.SYN_SENT, SI.TIMER_SYN), (SS.SYN_SENT, SI.GIVE_UP), (SS.PRE_ESTABLISHED, SI.TIMER_ACK3),
                        (SS.PRE_ESTABLISHED, SI.GIVE_UP), (SS.ESTABLISHED, SI.TIMER_STALE), (SS.STALE, SI.TIMER_DEAD)}),
    *((SS.CLOSED, i) for i in SI),  # a closed join is forgotten; uplink_event skips it
}


# -- bringing subflow up1 into a state ----------------------------------------------------------------


def in_state(state: SubflowState, v6=False) -> MPair:
    """An MPair (2 uplinks) whose join on up1 is in `state`; the join on up2 is ESTABLISHED
    (a live subflow for REMOVE_ADDR) except while up1 is still SYN_SENT / PRE_ESTABLISHED,
    where up2 is established first."""
    p = MPair(2, v6=v6)
    p.go_multipath()
    assert set(p.joins) == {1, 2}
    p.join_up(2)
    j = p.joins[1]
    if state is SS.SYN_SENT:
        pass
    elif state is SS.PRE_ESTABLISHED:
        p.j_in(p.j_synack(j))
    elif state is SS.CLOSED:
        p.join_up(1)
        p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    else:
        p.join_up(1)
        if state is SS.CLOSING:
            p.j_in(p.j_data(j, b"before the fin"))
            p.g_rcv = (p.s_isn + p.s_drel) & M32  # the guest has it
            p.out(p.g_ack())
            assert p.flow.rcv_rel == p.s_drel
            p.j_in(p.j_ack(j, ACK | FIN))
            j.s_nxt += 1
        elif state is SS.STALE:
            p.data_on(1)  # guest data out on up1 ...
            pa = p.path(1)
            assert pa.snd_nxt > pa.snd_una
            p.now += 0.05
            p.c_dack = p.flow.mp.data_ack  # ... while subflow 1 progresses (its data acked)
            p0 = p.mp.paths[0]
            p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
            assert p0.progress_at > pa.progress_at
            acts = p.conv.tick(pa.progress_at + max(MP.STALE_MIN, 4 * pa.srtt) + 0.001)
            assert pa.state is SS.STALE, acts
    assert p.path(1).state is state
    return p


def stimulus(p: MPair, state, inp):
    """Feed `inp` to up1's join; returns the actions."""
    j = p.joins[1]
    pa = p.path(1)
    if inp is SI.SYNACK_JOIN:
        return p.j_in(p.j_synack(j))
    if inp is SI.SYNACK_BAD:
        return p.j_in(p.j_synack(j, good=False))
    if inp is SI.RST:
        if state is SS.SYN_SENT:
            return p.j_in(p.j_packet(j, 0, j.c_isn + 1, RST | ACK))
        return p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    if inp is SI.ACK:
        if state is SS.SYN_SENT:
            return p.j_in(p.j_packet(j, j.s_isn + 1, j.c_isn + 1, ACK, (p.dack(),)))
        if state is SS.STALE:  # the server acks what it got on up1 at last
            p.c_dack = p.mp.snd_nxt
            return p.j_in(p.j_ack(j, ack=pa.snd_nxt))
        return p.j_in(p.j_ack(j, ack=pa.snd_una))
    if inp is SI.DATA:
        if state is SS.SYN_SENT:
            dss = Dss(data_seq=(p.s_idsn + p.s_drel) & M64, dsn64=True, subflow_seq=1, data_len=4)
            return p.j_in(p.j_packet(j, j.s_isn + 1, j.c_isn + 1, ACK | PSH, (dss,), b"data"))
        if state is SS.CLOSING:  # the data before the FIN, again (same seq, same mapping)
            n = len(b"before the fin")
            dss = Dss(data_ack=p.dack().data_ack, data_seq=(p.s_idsn + p.s_drel - n) & M64, dsn64=True,
                      subflow_seq=1, data_len=n)
            return p.j_in(p.j_ack(j, ACK | PSH, b"before the fin", (dss,), seq=1, ack=pa.snd_una))
        return p.j_in(p.j_data(j, b"server data"))
    if inp is SI.FIN:
        if state is SS.SYN_SENT:
            return p.j_in(p.j_packet(j, j.s_isn + 1, j.c_isn + 1, ACK | FIN, (p.dack(),)))
        if state is SS.CLOSING:
            return p.j_in(p.j_ack(j, ACK | FIN, seq=j.s_nxt - 1, ack=pa.snd_una))
        buf = p.j_ack(j, ACK | FIN, ack=pa.snd_una)
        j.s_nxt += 1
        return p.j_in(buf)
    if inp is SI.ODD:
        return p.j_in(p.j_packet(j, j.s_isn, 0, SYN))  # a SYN without ACK
    if inp is SI.LINK_DOWN:
        return p.conv.uplink_event("up1", False, p.now + 0.001)
    # timers
    if inp is SI.TIMER_SYN:
        return p.conv.tick(pa.timer + 0.001)
    if inp is SI.TIMER_ACK3:
        return p.conv.tick(pa.timer + 0.001)
    if inp is SI.GIVE_UP:
        acts = []
        n = len(MP.SYN_RTO) if state is SS.SYN_SENT else MP.ACK3_TRIES
        for _ in range(n):  # the retransmissions before the last try
            acts = p.conv.tick(pa.timer + 0.001)
            assert p.classify(acts) == (["syn@1"] if state is SS.SYN_SENT else ["ack3@1"]), p.classify(acts)
        p.now = pa.timer
        return p.conv.tick(pa.timer + 0.001)
    if inp is SI.TIMER_STALE:  # ESTABLISHED: data out on up1, subflow 1 progressed since
        p.data_on(1)
        p.now += 0.05
        p.c_dack = p.mp.data_ack
        p0 = p.mp.paths[0]
        p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
        return p.conv.tick(pa.progress_at + max(MP.STALE_MIN, 4 * pa.srtt) + 0.001)
    if inp is SI.TIMER_DEAD:
        return p.conv.tick(pa.stale_at + MP.DEAD_AFTER + 0.001)
    raise AssertionError(inp)


def natural_nothing(p: MPair, state, inp):
    """For a pair the wire/clock/links cannot produce: the closest real stimulus, asserting
    it changes nothing for up1 (the classifier or tick() turns it into another input or
    none)."""
    pa = p.path(1)
    if inp <= SI.ODD:
        acts = stimulus(p, state, inp) if state is not SS.CLOSED else _closed_packet(p, inp)
        assert p.classify(acts) == ["drop"], p.classify(acts)
    elif inp is SI.LINK_DOWN:  # CLOSED
        acts = p.conv.uplink_event("up1", False, p.now + 0.001)
        assert [x for x in p.classify(acts) if x.endswith("@1")] == []
    else:  # a late wake-up: tick() far later raises nothing for up1 in this state
        before = pa.state
        acts = p.conv.tick(p.now + 0.01)
        assert [x for x in p.classify(acts) if x.endswith("@1")] == [], p.classify(acts)
        assert pa.state is before
    assert pa.state is state


def _closed_packet(p: MPair, inp):
    """A packet of input kind `inp` to up1's closed (forgotten) join."""
    j = p.joins[1]
    if inp is SI.SYNACK_JOIN:
        return p.j_in(p.j_synack(j))
    if inp is SI.SYNACK_BAD:
        return p.j_in(p.j_synack(j, good=False))
    if inp is SI.RST:
        return p.j_in(p.j_packet(j, j.s_isn + j.s_nxt, 0, RST))
    if inp is SI.ACK:
        return p.j_in(p.j_ack(j))
    if inp is SI.DATA:
        return p.j_in(p.j_data(j, b"late"))
    if inp is SI.FIN:
        return p.j_in(p.j_ack(j, ACK | FIN))
    return p.j_in(p.j_packet(j, j.s_isn, 0, SYN))


def squash(labels: list[str]) -> list[str]:
    """Three g_ack in a row -> "3g_ack"; order otherwise kept."""
    out = list(labels)
    for i in range(len(out) - 2):
        if out[i:i + 3] == ["g_ack"] * 3:
            out[i:i + 3] = ["3g_ack"]
            break
    return out


# The joins a peer opens (inbound, issue 9: state SYN_RCVD, inputs SYN_AGAIN / ACK3_JOIN /
# ACK3_BAD) have their own model and drivers: tests/unit/test_passive_join_table.py.
PASSIVE_INPUTS = (SI.SYN_AGAIN, SI.ACK3_JOIN, SI.ACK3_BAD)
ALL_PAIRS = [(s, i) for s in SS for i in SI if s is not SS.SYN_RCVD and i not in PASSIVE_INPUTS]


def test_model_covers_every_pair_and_the_table_has_every_pair():
    from tests.unit.test_passive_join_table import PAIRS as PASSIVE_PAIRS

    assert set(MODEL) == set(ALL_PAIRS)
    assert set(MP.SUBFLOW_TABLE) == set(ALL_PAIRS) | set(PASSIVE_PAIRS), (
        set(ALL_PAIRS) | set(PASSIVE_PAIRS)) ^ set(MP.SUBFLOW_TABLE)


@pytest.mark.parametrize("state,inp", ALL_PAIRS, ids=[f"{s.name}-{i.name}" for s, i in ALL_PAIRS])
def test_pair(state, inp):
    check_pair(state, inp)


# rows replaced by a wrong one: the check above must notice each
MUTATIONS = [
    ((SS.SYN_SENT, SI.SYNACK_BAD), ("drop", SS.SYN_SENT)),
    ((SS.SYN_SENT, SI.SYNACK_JOIN), ("synack", SS.ESTABLISHED)),  # data before the fourth ACK
    ((SS.PRE_ESTABLISHED, SI.ACK), ("drop", SS.PRE_ESTABLISHED)),
    ((SS.PRE_ESTABLISHED, SI.GIVE_UP), ("nothing", SS.PRE_ESTABLISHED)),  # retries for ever
    ((SS.ESTABLISHED, SI.FIN), ("segment", SS.ESTABLISHED)),
    ((SS.STALE, SI.TIMER_DEAD), ("lost", SS.CLOSED)),  # no RST, no REMOVE_ADDR
    ((SS.STALE, SI.ACK), ("segment", SS.STALE)),
    ((SS.CLOSING, SI.FIN), ("lost", SS.CLOSED)),
    ((SS.CLOSED, SI.LINK_DOWN), ("dead", SS.CLOSED)),
]


@pytest.mark.parametrize("pair,wrong", MUTATIONS, ids=[f"{s.name}-{i.name}" for (s, i), _ in MUTATIONS])
def test_model_catches_table_mutations(monkeypatch, pair, wrong):
    monkeypatch.setitem(MP.SUBFLOW_TABLE, pair, wrong)
    with pytest.raises(AssertionError):
        check_pair(*pair)


def check_pair(state, inp):
    nxt, behaviour, counts = MODEL[(state, inp)]
    p = in_state(state)
    pa = p.path(1)
    before = dict(p.conv.counters)
    if (state, inp) in UNREACHABLE:
        natural_nothing(p, state, inp)
        before = dict(p.conv.counters)
        pkt = data = None
        if inp <= SI.ODD:  # the packet the input names, handed to the row itself
            j = p.joins[1]
            data = {SI.ACK: p.j_ack(j), SI.DATA: p.j_data(j, b"data"), SI.FIN: p.j_ack(j, ACK | FIN),
                    SI.SYNACK_JOIN: p.j_synack(j), SI.SYNACK_BAD: p.j_synack(j, good=False),
                    SI.RST: p.j_packet(j, j.s_isn + j.s_nxt, 0, RST),
                    SI.ODD: p.j_packet(j, j.s_isn, 0, SYN)}[inp]
            pkt = parse_packet(data)
            before = dict(p.conv.counters)
        actions = MP._event(p.conv, p.flow, pa, inp, p.now, pkt, data or b"", None)
    else:
        actions = stimulus(p, state, inp)
    labels = squash(p.classify(actions))
    assert labels == behaviour, (labels, behaviour)
    assert pa.state is nxt, (pa.state, nxt)
    after = p.conv.counters
    for name, n in counts.items():
        assert after[Counter[name]] - before.get(Counter[name], 0) == n, name
    assert after[Counter.JoinViolation] == 0
    assert after[Counter.CoreBug] == 0
    if nxt is SS.CLOSED and state is not SS.CLOSED:  # a closed join is forgotten
        j = p.joins[1]
        assert j.key not in p.conv.joins


# -- the join handshake itself ---------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True])
def test_join_syn_carries_token_nonce_from_the_uplink_address_and_a_join_port(v6):
    p = MPair(3, v6=v6)
    acts = p.go_multipath()
    assert p.classify(acts) == ["rewrite", "syn@1", "syn@2", "syn@3"]
    lo, hi = JOIN_PORTS_DEFAULT
    nonces = set()
    for upid, j in p.joins.items():
        up = UPLINKS[upid - 1]
        assert j.local == p.addr_of(up)
        assert j.server == (p.flow.mp.server) and j.sport == p.sport
        assert lo <= j.lport <= hi
        assert j.opt.token == key_token(p.s_key, p.s_version) == V.KEY_B_TOKEN_V1
        assert j.opt.addr_id == up.id and j.opt.backup is up.backup
        nonces.add(j.opt.nonce)
        assert len(j.opts.mptcp[0]) == 12  # MP_JOIN SYN: 12 bytes (PROTOCOL.md)
        assert j.opts.sack_perm is True  # SACK: we receive the join's download (acked on arrival)
        assert j.opts.ts_val == -1  # no timestamps (MULTIPATH.md; PAWS, trap 9)
        assert j.opts.mss == p.cfg.mss_limit(6 if v6 else 4)
    assert len(nonces) == 3  # one nonce per subflow
    assert len({j.lport for j in p.joins.values()}) >= 1
    assert p.count("MPJoinSynTX") == 3 and p.count("MultipathStarted") == 1


def test_join_ports_follow_the_configured_range():
    p = MPair(config=mp_config(2, join_ports=(50000, 50001)))
    p.go_multipath()
    assert {j.lport for j in p.joins.values()} <= {50000, 50001}


def test_third_ack_hmac_matches_the_protocol_vectors(monkeypatch):
    """Converter key = vector key A, server key = key B, our nonce A, the server's nonce B:
    the third ACK carries exactly PROTOCOL.md's 160-bit HMAC, and the SYN/ACK vector HMAC
    is accepted."""
    monkeypatch.setattr(MP, "new_nonce", lambda: V.NONCE_A)
    p = MPair(1, server_key=V.KEY_B)
    _, syn = p.out(p.g_syn())
    f = p.flow
    f.local_key, f.local_idsn = V.KEY_A, key_idsn(V.KEY_A, 1)  # as if new_key() had drawn key A
    _, synack = p.inn(p.s_synack(syn))
    p.g_rcv = (p.s_isn + 1) & M32
    _, ack = p.out(p.g_ack())
    p.s_receive(ack)
    assert p.c_key == V.KEY_A
    _, sent = p.out(p.g_data(b"hello"))
    p.s_receive(sent)
    p.c_dack = 6
    acts, _ = p.inn(p.s_ack())
    j = Join(p, acts[1].data)
    p.joins[1] = j
    assert j.opt.nonce == V.NONCE_A and j.opt.token == V.KEY_B_TOKEN_V1
    j.s_nonce = V.NONCE_B
    synack = p.j_synack(j)
    pk = parse_packet(synack)
    (o,) = mptcp_of(synack, pk, options_of(synack, pk))
    assert o.hmac == V.JOIN_SYNACK_HMAC_B
    acts = p.j_in(synack)
    assert p.classify(acts) == ["drop", "ack3@1"]
    pk, opts, mp = wire_check(acts[1].data, True)
    (o,) = [x for x in mp if type(x) is MpJoinAck]
    assert o.hmac == V.JOIN_ACK_HMAC_A
    assert len(opts.mptcp[0]) == 24  # MP_JOIN ACK: 24 bytes
    assert pk.seq == (j.c_isn + 1) & M32 and pk.ack == (j.s_isn + 1) & M32 and pk.flags == ACK
    assert pk.payload_len == 0


@pytest.mark.parametrize("with_join", [True, False])
def test_synack_with_a_wrong_hmac_or_no_mp_join_is_reset_with_mp_tcprst(with_join):
    p = MPair(2)
    p.go_multipath()
    p.join_up(2)
    j = p.joins[1]
    acts = p.j_in(p.j_synack(j, good=False, with_join=with_join))
    assert p.classify(acts) == ["drop", "rst+tcprst@1"]
    pk, _, mp = wire_check(acts[1].data, True)
    (rst,) = [o for o in mp if type(o) is MpTcpRst]
    assert rst.reason == MP.MPTCP_RST_EMPTCP  # "MPTCP-specific error" (RFC 8684 §3.6)
    assert pk.seq == (j.c_isn + 1) & M32 and pk.ack == (j.s_isn + 1) & M32
    assert p.count("MPJoinSynAckHMacFailure") == 1
    assert p.path(1).state is SS.CLOSED and j.key not in p.conv.joins
    # the transfer carries on: guest data goes on the remaining subflows
    for labels, _ in p.g_send(20):
        assert "data@1" not in labels and labels[0] in ("rewrite", "drop")


def test_no_data_on_a_subflow_before_the_fourth_ack():
    """While up1 is PRE_ESTABLISHED (third ACK out, not acknowledged) and up2 SYN_SENT,
    every guest byte goes on subflow 1; after the fourth ACK up1 gets data."""
    p = MPair(2)
    p.go_multipath()
    j = p.joins[1]
    p.j_in(p.j_synack(j))
    assert p.path(1).state is SS.PRE_ESTABLISHED
    for labels, _ in p.g_send(40):
        assert labels == ["rewrite"], labels
    acts = p.conv.tick(p.path(1).timer + 0.001)  # the third ACK again, still no data
    assert p.classify(acts) == ["ack3@1"]
    for labels, _ in p.g_send(5):
        assert labels == ["rewrite"], labels
    p.j_in(p.j_ack(j))
    assert p.path(1).state is SS.ESTABLISHED
    buf = p.data_on(1)
    pk, _, mp = wire_check(buf, True)
    (dss,) = [o for o in mp if type(o) is Dss]
    assert dss.data_seq is not None and dss.subflow_seq == 1  # its first data byte is ssn 1
    assert pk.seq == (j.c_isn + 1) & M32


def test_join_packets_arriving_as_in_reach_the_subflow():
    """The shell may hand a join's packet in as Direction.IN (no flow has its 4-tuple)."""
    p = MPair(1)
    p.go_multipath()
    j = p.joins[1]
    acts = p.j_in(p.j_synack(j), Direction.IN)
    assert p.classify(acts) == ["drop", "ack3@1"]


def test_syn_retransmissions_back_off_then_give_up():
    p = MPair(1)
    p.go_multipath()
    pa = p.path(1)
    t0 = p.now
    times = []
    while pa.state is SS.SYN_SENT:
        t = pa.timer
        times.append(round(t - t0, 2))
        acts = p.conv.tick(t + 0.0001)
        for a in acts:
            if p.label(a.data) == "syn@1":
                assert a.data == p.joins[1].syn or parse_packet(a.data).seq == p.joins[1].c_isn
        t0 = t
    assert times == [*MP.SYN_RTO, MP.SYN_RTO[-1]], times  # 1, 2, 4 s, then 4 s more and give up
    assert p.count("MPJoinTimeout") == 1 and p.count("MPJoinSynTX") == 1 + len(times) - 1


def test_injected_ipv4_packets_have_their_header_checksum():
    p = MPair(1)
    acts = p.go_multipath()
    buf = acts[1].data
    assert struct.unpack_from("!H", buf, 10)[0] == ipv4_checksum(buf, 5)


def test_a_dead_subflow_whose_hole_was_data_acked_goes_stale_after_one_fill():
    """A join with guest data out, its path dead (no ACK on it ever again), the data-acked by
    the server over subflow 1: the hole at its snd_una is filled with zeros once
    (_fill_acked_hole), and when that fill brings no progress either, the subflow goes stale
    (its data moves elsewhere). It was filled again on every tick, so its progress time was
    reset for good: never stale, and the transfer stalled (CI-style reproducer: an inbound
    client's second interface dying for good, AckedHoleFilled in the thousands)."""
    p = in_state(SS.ESTABLISHED)
    pa = p.path(1)
    p.data_on(1)
    assert pa.snd_nxt > pa.snd_una
    p.now += 0.05
    p.c_dack = p.mp.snd_nxt  # the server data-acks everything, the join's bytes too
    p0 = p.mp.paths[0]
    p.inn(p.s_packet(p.s_nxt, (p.g_isn + p0.snd_nxt) & M32, ACK, (p.dack(),)))
    wait = max(MP.STALE_MIN, 4 * pa.srtt)
    t = pa.progress_at + wait + 0.001
    p.conv.tick(t)
    assert p.count("AckedHoleFilled") >= 1 and pa.state is SS.ESTABLISHED
    fills = p.count("AckedHoleFilled")
    # subflow 1 progresses meanwhile; the join stays silent
    p0.progress_at = t + 0.01
    p.conv.tick(t + wait + 0.02)
    assert p.count("AckedHoleFilled") == fills, "filled again though the fill brought nothing"
    assert pa.state is SS.STALE


def test_a_silent_subflow_goes_stale_even_when_no_other_progresses():
    """Guest data out on a join whose path died, and nothing else moving (the guest, blocked by
    the hole at the data level, sends nothing new on subflow 1): after SILENT_ALONE without
    progress the join goes stale anyway, so its data moves to the live subflow (it stalled
    for good: an inbound client's second interface gone). Meanwhile next_deadline() is not a
    time already past (the loop would spin)."""
    p = in_state(SS.ESTABLISHED)
    pa = p.path(1)
    p.data_on(1)
    assert pa.snd_nxt > pa.snd_una
    wait = max(MP.STALE_MIN, 4 * pa.srtt)
    t0 = pa.progress_at
    p.conv.tick(t0 + wait + 0.001)  # no one progressed: not stale yet
    assert pa.state is SS.ESTABLISHED
    assert MP.next_deadline(p.conv) > t0 + wait + 0.001  # not in the past
    p.conv.tick(t0 + MP.SILENT_ALONE + 0.001)
    assert pa.state is SS.STALE and p.count("SubflowStale") >= 1
