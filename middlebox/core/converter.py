"""The converter: a guest's plain TCP becomes MPTCP on the wire (issue 3), and an MPTCP peer's
connection to a plain-TCP service in a guest is answered with MPTCP on the guest's behalf
(the inbound role, issue 9: `_h_syn_in`, `_h_synack_out`, `_h_mpc_ack_in`; after the
handshake the same handlers, with "server" meaning the MPTCP peer whichever side opened).

Sans-IO (docs/core-api.md): `handle(data, direction, now)` and `tick(now)` return actions; no
sockets, no clock. The state machine is `table.TABLE`; this module classifies packets into
`Input`s, runs the table's handler and keeps the flow table. One subflow for now: subflow 1
is the guest's own connection, so its sequence numbers pass unchanged and the DSS mapping is
"guest seq space == data seq space" (see flow.py).

Per packet: parse, one dict lookup, classify, one handler that builds at most one MPTCP
option and calls `rewrite` once. Fallback flows stop after the dict lookup
(only their SYN, RST and FIN packets go on to the table).

Compiled twin (STYLE.md item 9): setup.py also builds this file, and flow.py, as
`middlebox._ccore.converter` / `middlebox._ccore.flow`, with the C types of converter.pxd and
flow.pxd; `middlebox.core` picks it unless MIDDLEBOX_PURE_PYTHON=1. This source is the spec.
Written so that the compiler can do well with it, and plain Python gains too: the hot path
looks up no Enum member (module constants below), builds no option dataclass (the wire's
fused `add_dss` / `without_mptcp`) and dispatches through a tuple indexed by state and input.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from middlebox.core.config import Config
from middlebox.core import orphans as OR
from middlebox.core.counters import Counter, new_counters
from middlebox.core.events import ACCEPT, Direction, Drop, Inject, Rewrite
from middlebox.core.table import TABLE, TIMEOUT_OF_STATE, Input, State
from middlebox.wire import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinSyn,
    MpTcpRst,
    RemoveAddr,
    WireError,
    add_dss,
    build_options,
    build_segment,
    dss_checksum,
    encode_tcp_options,
    key_idsn,
    key_token,
    mptcp_options,
    new_key,
    ones_sum,
    parse_options,
    parse_packet,
    rewrite,
    strip_mptcp,
    without_mptcp,
)

# Relative on purpose: the modules compiled together with this one (middlebox._ccore.flow in
# the compiled twin, whose Flow has C fields, and middlebox._ccore.multipath). Everything else
# is shared by both: absolute.
from .flow import MAX_JUMP, Flow, _unwrap, ck_commit, ck_find, ck_piece, ck_step, ck_verified, options_without_sack, seq_before, resend_cut, ck_runs_match  # noqa: E402
from . import multipath as MP  # noqa: E402  (multipath flows only)
from middlebox.core import announce as AN  # noqa: E402  (inbound ADD_ADDR)

log = logging.getLogger(__name__)

# TCP flags (RFC 9293 §3.1)
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ECE, CWR = 0x40, 0x80
TCP_HLEN = 20
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOLEN_MSS = 0, 1, 2, 4
TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM = 4, 2
MPTCP_SERVERS = 4096  # server addresses remembered as speaking MPTCP (_h_syn, SACK for subflow 1)
# MP_CAPABLE flags (RFC 8684 §3.1)
MPTCP_CAP_CHECKSUM_REQD = 0x80  # A
MPTCP_CAP_HMAC = 0x01  # H: HMAC-SHA256 (v1) / HMAC-SHA1 (v0)
MPTCP_CAP_DENY_JOIN_ID0 = 0x20  # C: no joins to the sender's source address and port
MPTCP_RST_EUNSPEC = 0  # MP_TCPRST reason "unspecified error" (RFC 8684 §3.6, Table 4)

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF  # as in flow.py (C constants in the twin)
I = Input
S = State

# Enum members the per-packet path uses, as module constants: looking a member up on its
# Enum class costs ~0.1 µs in CPython 3.11, as much as the whole classification.
OUT = Direction.OUT
IN_DIR = Direction.IN
LOCAL = Direction.LOCAL
ESTABLISHED = S.ESTABLISHED
NEW, MPC_PENDING, FALLBACK, FALLBACK_CLOSING = S.NEW, S.MPC_PENDING, S.FALLBACK, S.FALLBACK_CLOSING
SYN_SENT, GUEST_MPTCP, SYN_RCVD, CLOSING = S.SYN_SENT, S.GUEST_MPTCP, S.SYN_RCVD, S.CLOSING
TIME_WAIT = S.TIME_WAIT
IN_SYN_MPC, OUT_SYNACK, IN_MPC_ACK = I.IN_SYN_MPC, I.OUT_SYNACK, I.IN_MPC_ACK
OUT_SYN, OUT_SYN_RTX, OUT_SYN_MPTCP, OUT_ACK = I.OUT_SYN, I.OUT_SYN_RTX, I.OUT_SYN_MPTCP, I.OUT_ACK
OUT_DATA, OUT_FIN, OUT_RST, OUT_CLOSE_DONE, OUT_ODD = I.OUT_DATA, I.OUT_FIN, I.OUT_RST, I.OUT_CLOSE_DONE, I.OUT_ODD
IN_SYNACK_MPC, IN_SYNACK_PLAIN, IN_DSS, IN_DSS_NOACK = I.IN_SYNACK_MPC, I.IN_SYNACK_PLAIN, I.IN_DSS, I.IN_DSS_NOACK
IN_DATA_FIN, IN_INFINITE, IN_NODSS_DATA, IN_NODSS = I.IN_DATA_FIN, I.IN_INFINITE, I.IN_NODSS_DATA, I.IN_NODSS
IN_RST, IN_FASTCLOSE, IN_CLOSE_DONE, IN_ODD, IN_STALE_ACK = (
    I.IN_RST, I.IN_FASTCLOSE, I.IN_CLOSE_DONE, I.IN_ODD, I.IN_STALE_ACK)
IN_MP_FAIL, IN_CSUM_BAD, OUT_INFINITE, IN_FIN = I.IN_MP_FAIL, I.IN_CSUM_BAD, I.OUT_INFINITE, I.IN_FIN
IN_SYN, IN_RST_CHALLENGE, IN_RST_OUTSIDE, IN_OUTSIDE = I.IN_SYN, I.IN_RST_CHALLENGE, I.IN_RST_OUTSIDE, I.IN_OUTSIDE
IN_CSUM_MISSING, IN_CSUM_BAD_LATE, IN_UNRECONCILABLE, IN_OLD, IN_BEYOND = (
    I.IN_CSUM_MISSING, I.IN_CSUM_BAD_LATE, I.IN_UNRECONCILABLE, I.IN_OLD, I.IN_BEYOND)
OLD, BEYOND = 1, 2  # _in_segment's modes besides 0 (in order): nothing moves
GuestMPTCPPacket = Counter.GuestMPTCPPacket

# Eviction classes, cheapest to evict first (docs/core-api.md, "flow table"): flows that pass
# unchanged once forgotten, then finished ones, then half-open ones (a SYN flood's), and a
# converting flow only when nothing else is left. Each class is an exact LRU.
EVICT_PASSIVE, EVICT_TIME_WAIT, EVICT_HALF_OPEN, EVICT_ACTIVE = 0, 1, 2, 3
CLOSING_QUIET = 1.0  # s: a closing flow silent this long is not waited for at a stop (closing)
_EVICTION_CLASS = {
    S.CLOSED: EVICT_PASSIVE, S.FALLBACK: EVICT_PASSIVE, S.FALLBACK_CLOSING: EVICT_PASSIVE,
    S.GUEST_MPTCP: EVICT_PASSIVE, S.TIME_WAIT: EVICT_TIME_WAIT,
    # a peer's half-open connection (inbound): anyone can make one with a spoofed SYN, and
    # forgetting it costs a fallback at most (its SYN/ACK, third ACK pass plain): passive
    S.SYN_RCVD: EVICT_PASSIVE,
    S.NEW: EVICT_HALF_OPEN, S.SYN_SENT: EVICT_HALF_OPEN,
    S.MPC_PENDING: EVICT_ACTIVE, S.ESTABLISHED: EVICT_ACTIVE, S.CLOSING: EVICT_ACTIVE,
}
CLASS_OF_STATE = tuple(_EVICTION_CLASS[st] for st in sorted(S))  # indexed by state value
EVICTED = (Counter.FlowEvictedPassive, Counter.FlowEvictedTimeWait, Counter.FlowEvictedHalfOpen,
           Counter.FlowEvictedActive)
IS_MPTCP = tuple(st in (S.MPC_PENDING, S.ESTABLISHED, S.CLOSING, S.TIME_WAIT) for st in sorted(S))
WND_SLACK = 65535  # beyond the guest's window edge: zero-window probes, window rounding
DSSTX, DataAckTX, DSSRX, DataAckMismatch = Counter.DSSTX, Counter.DataAckTX, Counter.DSSRX, Counter.DataAckMismatch

_new_action = object.__new__
_set_rewrite_data = Rewrite.data.__set__  # the slot of the slotted dataclass


def _rewrite(data: bytes) -> Rewrite:
    """`Rewrite(data)`, the same value, made without the frozen dataclass's __init__ (which
    calls object.__setattr__ from Python per field: ~0.3 µs, a third of the compiled path).
    The wire twin fills the option dataclasses the same way."""
    action = _new_action(Rewrite)
    _set_rewrite_data(action, data)
    return action



def _without_dsack(full: bytes, g, opts: bytes) -> bytes:
    """`opts` (full's TCP options, full parsed as g) without a D-SACK block (RFC 2883: a first
    SACK block below the ack): for the parts of a segment after the first. Every copy of a
    D-SACK (multipath.guest_options: --dsack-undo) counted once more towards a Linux guest's
    undo, which then undid a cut for a loss that no D-SACK named (review of --dsack-undo)."""
    o = parse_options(full, g.ip_hlen + TCP_HLEN, g.payload_off)
    if not o.sack or not 0 < (g.ack - o.sack[0][0]) & M32 < 0x80000000:
        return opts
    return encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, o.sack[1:])

class Converter:
    """Outbound TCP -> MPTCP converter. See docs/core-api.md for the contract."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config = config or Config()
        self.flows: dict[tuple, Flow] = {}
        # one exact LRU per eviction class (key -> flow, least recently active first)
        self._lru = (OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict())
        self.counters = new_counters()
        # TABLE as a tuple (by state) of tuples (by input) of (bound handler, next state) or
        # None: two index operations per packet instead of hashing a pair of enums.
        self._dispatch = tuple(
            tuple(self._entry(s, i) for i in sorted(I)) for s in sorted(S)
        )
        self._mss_limit = {4: config.mss_limit(4), 6: config.mss_limit(6)}
        self._timeout = {s: float(getattr(config, attr)) for s, attr in TIMEOUT_OF_STATE.items()}
        self._min_timeout = tuple(  # the shortest timeout in each eviction class
            min(t for st, t in self._timeout.items() if CLASS_OF_STATE[st] == c) for c in range(4))
        self._logged: set[str] = set()
        self._evicted: list = []  # an evicted converting flow's resets (_new_flow), out with the packet
        # multipath (multipath.py): extra subflows by (uplink addr, port, server addr, port),
        # flows that have them, uplink states as the shell reported them
        self.joins: dict = {}
        self.mp_flows: dict = {}
        self.repair_held = [0]  # join segments kept for repair, bytes, all flows
        self.uplink_up: dict = {u.name: u.up for u in config.uplinks}
        self._mp_on = bool(config.uplinks)
        self._inbound = bool(config.inbound)
        # server addresses whose latest SYN/ACK carried MP_CAPABLE (oldest first, at most
        # MPTCP_SERVERS): a guest without SACK gets SACK on subflow 1 towards these only (_h_syn)
        self._mptcp_servers = OrderedDict()
        # inbound connections by the token of our key (a peer's MP_JOIN names it): stale
        # entries are checked on use and pruned as the table grows (_register_token)
        self.tokens = {}
        self.announcing: dict = {}  # inbound flows with uplink ADD_ADDRs to (re)send (announce.py)
        self.routes: list = []  # (ip version, network, prefixlen, uplink id): set_routes
        self._pm_opt = None  # the ADD_ADDR / REMOVE_ADDR of the server segment being classified
        self.orphans = OR.Orphans(self.counters)  # connections a killed predecessor converted
        self.stopping = False  # the shell is stopping (--stop-grace): new connections stay plain
        # the shell keeps a state file (--state-dir): keys of flows that just became ones stop()
        # would reset, for it to record before its next full pass (recorded())
        self.recording = False
        self.fresh = []

    def _entry(self, state: State, inp: Input):
        entry = TABLE.get((state, inp))
        return None if entry is None else (getattr(self, "_h_" + entry[0]), entry[1])

    # -- the contract ------------------------------------------------------------------------

    def handle(self, data: bytes, direction: Direction, now: float) -> list:
        """Actions for one packet; the first is the verdict. Never raises."""
        try:
            actions = self._handle(data, direction, now)
            if self._evicted:
                actions += self._evicted
                self._evicted = []
            return actions
        except Exception as exc:  # a bug: counted, logged once per kind, packet unchanged
            self._evicted = []
            self.counters[Counter.CoreBug] += 1
            kind = type(exc).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                log.exception("core: %s on a packet; accepted unchanged (logged once per kind)", kind)
            return [ACCEPT]

    def tick(self, now: float) -> list:
        """Expire idle flows (timeouts by state, see Config). Returns Inject actions (none yet)."""
        flows = self.flows
        if not flows:
            return []
        timeout = self._timeout
        expired = 0
        for c in range(4):
            lru = self._lru[c]
            floor = self._min_timeout[c]
            dead = []
            # each LRU is ordered by `last`: once a flow was active less than the class's
            # shortest timeout ago, no later one can have expired
            for key, flow in lru.items():
                if now - flow.last < floor:
                    break
                if now - flow.last >= timeout[flow.state]:
                    dead.append(key)
            for key in dead:
                del lru[key]
                f = flows.pop(key)
                if f.mp is not None:
                    MP.release(self, f)
            expired += len(dead)
        self.counters[Counter.FlowExpired] += expired
        if self.mp_flows or self.announcing:
            try:
                return MP.tick(self, now) + AN.tick(self, now)
            except Exception as exc:  # a bug: counted and logged, never raised into the shell
                self.counters[Counter.CoreBug] += 1
                log.exception("core: %s in the multipath timers", type(exc).__name__)
        return []

    def stop(self, now: float) -> list:
        """The daemon is stopping: Inject actions that reset, at both ends, every flow the
        server treats as MPTCP (MPC_PENDING, ESTABLISHED, CLOSING, an inbound SYN_RCVD).
        Without the daemon its packets pass unconverted (the rules' bypass), or, after a
        restart, as a flow the new one does not know: the server's segments reach the guest
        at their subflow seq, which is not the data's once the numbering drifted (a
        zero-window probe's remap, an MPTCP-level resend, always with multipath), and a
        server that gets DATA_ACKs no more resends at the data level what the guest takes
        for new bytes (measured: a single-path download, daemon stopped at 15 MB, delivered
        a wrong byte 1 MB later). The guest gets a RST at its rcv_nxt, the server an ACK with
        MP_FASTCLOSE (RFC 8684 §3.5 Option A: it resets and tears down), or a RST before its
        key is known. Plain, fallen-back, MPTCP-speaking and finished flows pass on as they
        are. Never raises."""
        out = []
        for key, flow in list(self.flows.items()):
            try:
                out += self._stop_flow(key, flow)
            except Exception as exc:  # a bug: counted and logged, never raised into the shell
                self.counters[Counter.CoreBug] += 1
                log.exception("core: %s stopping a flow", type(exc).__name__)
        return out

    def closing(self, now: float) -> int:
        """How many flows `stop` would reset have both FINs sent, the guest's and the
        server's DATA_FIN, and a packet within CLOSING_QUIET: their data is all sent and
        their close under way (only acks, or a resend of a lost FIN, missing). The shell
        keeps converting a moment for them before it stops (--stop-grace), so that a
        connection that was ending when the stop came ends cleanly. (A silent one is done
        as far as anyone can tell: some closes never show us the last ack, and the flow
        waits in CLOSING for its timeout; measured, hundreds of 1000 short connections.)"""
        n = 0
        for flow in self.flows.values():
            if (flow.local_fin and flow.remote_fin and now - flow.last < CLOSING_QUIET
                    and _resettable(flow)):
                n += 1
        return n

    def _stop_flow(self, key, flow) -> list:
        if not _resettable(flow):
            return []
        self.counters[Counter.StopReset] += 1
        return self._reset_both(key, flow)

    def _reset_both(self, key, flow) -> list:
        """Resets of a flow the server treats as MPTCP at both ends (stop, an evicted
        converting flow): RSTs at the guest's rcv_nxt, an ACK with MP_FASTCLOSE to the server
        (RFC 8684 §3.5 Option A), a plain RST before its key is known."""
        if flow.mp is not None:
            return MP.stop_reset(self, flow)
        guest, gport, server, sport = key
        v = 4 if len(guest) == 4 else 6  # (flow.version is MPTCP's)
        sf = flow.sf
        out = []
        at = {(flow.server_isn + flow.rcv_rel) & M32, (flow.server_isn + sf.rcv_max - sf.off) & M32}
        if flow.remote_fin:
            at.add((flow.remote_fin_seq + 1) & M32)  # (past a FIN that reached it)
        for seq in sorted(at):
            out.append(Inject(_bare_rst(v, server, guest, sport, gport, seq)))
        seq = (flow.guest_isn + flow.snd_end + (1 if flow.local_fin else 0)) & M32
        if flow.remote_key is None:
            out.append(Inject(_bare_rst(v, guest, server, gport, sport, seq)))
        else:
            dss = Dss(MP.dack_now(flow), flow.ack64)
            bare = _bare(v, guest, server, gport, sport, seq, (sf.remote_isn + sf.rcv_base) & M32, ACK,
                         flow.guest_window)
            out.append(Inject(rewrite(*bare, options=build_options(b"", (dss, MpFastclose(flow.remote_key))))))
        flow.fastclosed = True
        return out

    def forget_flow(self, key) -> None:
        """Remove a flow whose connection is over and from which nothing will come to close
        it (multipath: the guest reset for want of any path, multipath._no_path_left)."""
        flow = self.flows.pop(key, None)
        if flow is None:
            return
        lru = self._lru[flow.cls]
        if key in lru:
            del lru[key]
        if flow.mp is not None:
            MP.release(self, flow)
        self.counters[Counter.FlowExpired] += 1

    def next_deadline(self):
        """The earliest `now` at which tick() has a timer to serve (join SYN and third-ACK
        retransmissions, stale subflows), or None: the shell sleeps until then at most."""
        if not self.mp_flows and not self.announcing:
            return None
        try:
            a, b = MP.next_deadline(self), AN.next_deadline(self)
            return a if b is None else b if a is None else min(a, b)
        except Exception as exc:
            self.counters[Counter.CoreBug] += 1
            log.exception("core: %s in next_deadline", type(exc).__name__)
            return None

    def uplink_event(self, name: str, up: bool, now: float) -> list:
        """The shell saw uplink `name` go down or up (netlink). Returns Inject actions."""
        try:
            return MP.uplink_event(self, name, up, now) + AN.uplink_event(self, name, up, now)
        except Exception as exc:  # a bug: counted and logged, never raised into the shell
            self.counters[Counter.CoreBug] += 1
            log.exception("core: %s on an uplink event", type(exc).__name__)
            return []

    def set_routes(self, routes) -> None:
        """The main routing table as the shell sees it: (ip version, network bytes, prefix
        length, uplink id) for routes that leave by an uplink. A flow going multipath looks
        its server up here to learn which uplink its subflow 1 uses (no second subflow on
        it; suspect at once when it goes down)."""
        self.routes = sorted(((int(v), bytes(n), int(p), int(u)) for v, n, p, u in routes),
                             key=lambda r: -r[2])

    def flow_subflows(self, flow) -> list:
        """Per-subflow facts of a flow for the live view (empty when single-path)."""
        return MP.flow_view(flow)

    # -- per packet --------------------------------------------------------------------------

    def _handle(self, data: bytes, direction: Direction, now: float) -> list:
        try:
            pkt = parse_packet(data)
        except WireError:
            self.counters[_not_tcp(data)] += 1
            return [ACCEPT]
        flags = pkt.flags
        if direction == OUT:
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        else:
            key = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        if direction == LOCAL:  # an extra subflow's packet, never a guest's connection
            path = self.joins.get((pkt.dst, pkt.dport, pkt.src, pkt.sport))
            if path is not None:
                return MP.join_in(self, path, pkt, data, now)
            if self._inbound and pkt.flags & (SYN | ACK | RST) == SYN and self._peer_syn_kind(pkt, data) == 2:
                return MP.passive_join(self, pkt, data, now, False)  # at an uplink address we announced
            if self.orphans.known and not pkt.flags & (SYN | RST):
                orphan = self._orphan_join(pkt, now)
                if orphan is not None:
                    return orphan
            self.counters[Counter.JoinUnknown] += 1
            return [Drop("packet to a join port of no known subflow")]
        flow = self.flows.get(key)
        if flow is None:
            if direction != OUT and self.joins:
                path = self.joins.get((pkt.dst, pkt.dport, pkt.src, pkt.sport))
                if path is not None:
                    return MP.join_in(self, path, pkt, data, now)
            if flags & (SYN | ACK | RST) != SYN:
                if not flags & SYN or direction == OUT:  # (a guest's SYN/ACK: MPTCP options?)
                    orphan = self._orphan(key, pkt, data, direction, now)
                    if orphan is not None:
                        return orphan
                self.counters[Counter.UnknownFlow] += 1
                return [ACCEPT]
            if direction != OUT:  # a peer's SYN towards a guest (inbound role, issue 9)
                kind = self._peer_syn_kind(pkt, data) if self._inbound else 0
                if kind == 2:  # a join: for an inbound connection of ours, or refused
                    return MP.passive_join(self, pkt, data, now)
                if kind == 0:  # plain TCP (or inbound off, or another MPTCP version): not ours
                    self.counters[Counter.UnknownFlow] += 1
                    return [ACCEPT]
                if self.stopping:  # stop() would reset it: plain TCP is what outlives us
                    self.counters[Counter.StopPlain] += 1
                    return [ACCEPT]
                # anyone can send it: it evicts only flows that cost nothing to forget (passive,
                # other peers' SYN_RCVD) or finished ones, never the guest's own half-open or
                # converting flows; failing that it is not tracked (plain TCP)
                flow = self._new_flow(key, now, EVICT_HALF_OPEN)
                if flow is None:
                    return [ACCEPT]
            else:
                if self.orphans.known:  # a new connection: a predecessor's record named the old one
                    self.orphans.forget(key)
                if self.stopping:  # (the same)
                    self.counters[Counter.StopPlain] += 1
                    return [ACCEPT]
                flow = self._new_flow(key, now)
        else:
            flow.last = now
            self._lru[flow.cls].move_to_end(key)  # exact LRU order within the flow's class
            state = flow.state
            if (state is FALLBACK or state is FALLBACK_CLOSING) and not flags & (SYN | RST | FIN):
                return [ACCEPT]
            if state is GUEST_MPTCP and (direction != OUT or flags & (SYN | ACK) != SYN):
                self.counters[GuestMPTCPPacket] += 1  # its connection, not ours: untouched
                return [ACCEPT]
            if (direction != OUT and flags & (SYN | ACK | RST) == SYN and self._inbound
                    and self._peer_syn_kind(pkt, data) == 2):
                # (a flow the 4-tuple had: never the guest's either, and no subflow of ours:
                # its packets would meet that flow first)
                return MP.refuse_join(self, pkt, MP.MPTCP_RST_EPROHIBIT)
        if direction == OUT:
            inp, ctx = self._classify_out(flow, pkt, data), None
        else:
            inp, ctx = self._classify_in(flow, pkt, data)
        if flow.mp is not None and (inp is IN_RST or inp is IN_RST_CHALLENGE or inp is IN_RST_OUTSIDE):
            # subflow 1 reset while others live (Linux closing it, e.g. after REMOVE_ADDR 0,
            # at its own snd_nxt): the connection lives on elsewhere; the guest never sees it
            actions = MP.sf1_rst(self, flow, pkt)
            if actions is not None:
                return actions
        entry = self._dispatch[flow.state][inp]
        if entry is None:  # protocol violation: pass as plain TCP, state unchanged
            self.counters[Counter.StateViolation] += 1
            return [ACCEPT] if direction == OUT else [self._stripped(pkt, data)]
        handler, nxt = entry
        actions = handler(flow, pkt, data, ctx)
        if nxt is CLOSING and flow.local_fin_acked and flow.remote_fin_acked:
            # (table.py: CLOSING ends with the last ack of both FINs, whichever segment
            # carries it: a guest FIN resent with the ack of the server's DATA_FIN is OUT_FIN.
            # Measured before this: 2 to 323 of 1000 short uploads sat in CLOSING, resettable,
            # until the closing timeout.)
            nxt = TIME_WAIT
        self._set_state(key, flow, nxt)
        if direction != OUT and self._pm_opt is not None:
            pm = self._pm_opt
            self._pm_opt = None
            # (MPC_PENDING too: Linux announces as soon as its side is established, before
            # the DATA_ACK that establishes ours; both keys are known; CLOSING: the guest's FIN
            # closes one direction only, the server's data and announcements go on)
            if (nxt is ESTABLISHED or nxt is MPC_PENDING or nxt is CLOSING) and (inp is IN_DSS or inp is IN_DSS_NOACK or inp is IN_NODSS or inp is IN_DATA_FIN):
                actions.extend(self._peer_option(flow, pkt, data, pm, now))
        if self._mp_on and nxt is ESTABLISHED:
            if not flow.no_join:
                if MP.wants_join(self, flow, now):
                    actions.extend(MP.start(self, key, flow, pkt, now))
            elif flow.inbound and flow.announced is None and MP.wants_join(self, flow, now):
                actions.extend(AN.begin(self, key, flow, pkt.version, now))
        return actions

    def _set_state(self, key, flow, state) -> None:
        """`flow` enters `state`: into its eviction class's LRU (at the end) when the class
        changes; one that became a flow a kill would orphan goes to `fresh` (the shell's state
        file records it at once: recorded())."""
        flow.state = state
        c = CLASS_OF_STATE[state]
        if c != flow.cls:
            del self._lru[flow.cls][key]
            self._lru[c][key] = flow
            flow.cls = c
            if c == EVICT_ACTIVE and self.recording and flow.remote_key is not None:
                self.fresh.append(key)

    def _new_flow(self, key: tuple, now: float, classes: int = 4):
        """A flow for a new guest SYN. When the table is full, one flow goes: the least
        recently active of the cheapest class to lose (EVICT_* above), so a SYN flood evicts
        its own half-open flows and never a converting transfer while another choice exists.
        Only the first `classes` classes may lose one (a peer's SYN): None when they are empty."""
        flows = self.flows
        counters = self.counters
        if len(flows) >= self.config.max_flows:
            counters[Counter.FlowTableFull] += 1
            c = 0
            while c < classes and not self._lru[c]:
                c += 1
            if c == classes:
                if classes < 4:
                    return None
            else:
                old, gone = self._lru[c].popitem(last=False)
                del flows[old]
                try:
                    if c == EVICT_ACTIVE and _resettable(gone):
                        # (forgotten, its packets would pass unconverted, at the wrong place
                        # in the guest's stream: reset at both ends instead, as at stop)
                        self._evicted = self._reset_both(old, gone)
                finally:  # (whatever that raised, its subflows go with it: review of ffa262f)
                    if gone.mp is not None:
                        MP.release(self, gone)
                counters[Counter.FlowEvicted] += 1
                counters[EVICTED[c]] += 1
        flow = flows[key] = Flow(now, self.config.version)
        flow.cls = EVICT_HALF_OPEN  # NEW
        self._lru[EVICT_HALF_OPEN][key] = flow
        counters[Counter.FlowCreated] += 1
        return flow

    # -- classification: packet -> Input ----------------------------------------------------

    def _classify_out(self, flow: Flow, pkt, data: bytes) -> Input:
        f = pkt.flags
        if f & RST:
            return OUT_RST
        if f & SYN:
            if f & ACK:
                return OUT_SYNACK
            if parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off).mptcp:
                return OUT_SYN_MPTCP
            if flow.state is not NEW and flow.local_key is not None and pkt.seq == flow.syn_isn():
                return OUT_SYN_RTX
            return OUT_SYN
        if not f & ACK:
            return OUT_ODD
        if f & FIN:
            return OUT_FIN
        if (
            flow.remote_fin
            and flow.local_fin_acked
            and not flow.remote_fin_acked
            and not seq_before(pkt.ack, (flow.remote_fin_seq + 1) & M32)
        ):
            return OUT_CLOSE_DONE
        if pkt.payload_len:
            return OUT_INFINITE if flow.infinite_tx else OUT_DATA
        return OUT_ACK

    def _classify_in(self, flow: Flow, pkt, data: bytes) -> tuple:
        """Server segment -> Input. Reads facts only (options, flags, where the segment lies
        against the guest's window as the converter knows it): nothing moves here."""
        f = pkt.flags
        mptcp = mptcp_options(data, pkt)  # each parsed (parse_mptcp), None when malformed
        dss = mpc = tcprst = fastclose = mpfail = None
        self._pm_opt = None
        for o in mptcp:
            t = type(o)
            if t is Dss:
                dss = o
            elif t is MpCapable:
                mpc = o
            elif t is MpFastclose:
                fastclose = o
            elif t is MpTcpRst:
                tcprst = o
            elif t is MpFail:
                mpfail = o
            elif t is AddAddr or t is RemoveAddr:
                self._pm_opt = o  # acted on by _handle once the segment proved acceptable
        state = flow.state
        # Where the segment lies (64-bit, relative subflow seq) against what the guest acked
        # (rcv_base) and the right edge of the window it offered (RFC 9293 §3.10.7.4).
        judged = IS_MPTCP[state]
        sf = flow.sf
        base = sf.rcv_base
        r = 0
        n = 0
        if judged:
            r = sf.rel(pkt.seq)
            n = pkt.payload_len + (1 if f & FIN else 0)
        if fastclose is not None:
            # RFC 8684 §3.5: only "containing the valid key" closes the connection, and only on
            # a segment the guest would take
            if fastclose.rcvr_key != flow.local_key:
                self.counters[Counter.FastCloseBadKey] += 1
            elif not judged or (base <= r + n and r <= sf.rcv_edge + WND_SLACK):
                return IN_FASTCLOSE, None
            else:
                self.counters[Counter.FastCloseOutOfWindow] += 1
        if f & RST:
            if state is SYN_SENT:  # RFC 9293 §3.10.7.3: acceptable if it acks our SYN
                if f & ACK and pkt.ack == (flow.syn_isn() + 1) & M32:
                    return IN_RST, tcprst
                return IN_RST_OUTSIDE, None
            if state is SYN_RCVD and flow.inbound == 2:
                # the guest answered with our key: RFC 9293 §3.10.7.4, in the window it offered
                # (a Linux request socket takes any such RST); elsewhere it changes nothing
                r = sf.rel(pkt.seq)
                if 1 <= r < sf.rcv_edge:
                    return IN_RST, tcprst
                return IN_RST_OUTSIDE, None
            if judged:  # RFC 5961 §3.2
                if r == base:
                    return IN_RST, tcprst
                if base < r and r < sf.rcv_edge:
                    return IN_RST_CHALLENGE, None
                return IN_RST_OUTSIDE, None
            return IN_RST, tcprst
        if f & SYN:
            if not f & ACK:
                if state is SYN_RCVD and flow.inbound == 2 and pkt.seq != flow.server_isn:
                    # another ISN once the guest answered with our key: never a restart (one
                    # forged SYN would take the key away from the peer's third ACK); a peer that
                    # really started again answers the guest's SYN/ACK with the RST that ends it
                    return IN_OUTSIDE, None
                # a peer opening a connection to the guest (inbound role): v1 SYNs carry no
                # key, v0 SYNs the peer's
                if mpc is not None and self._inbound and _answerable(mpc, flow.version):
                    return IN_SYN_MPC, mpc
                return IN_SYN, None
            if state is SYN_SENT:
                # RFC 9293 §3.10.7.3: it must ack our SYN (and at most its Fast Open data)
                if (pkt.ack - flow.syn_isn() - 1) & M32 > flow.syn_sent_len:
                    return IN_OUTSIDE, None
            elif judged and (pkt.seq != sf.remote_isn or mpc is None or mpc.sndr_key != flow.remote_key):
                return IN_OUTSIDE, None  # not a retransmission of the SYN/ACK that set up the flow
            if mpc is not None and mpc.version == flow.version and mpc.sndr_key is not None:
                return IN_SYNACK_MPC, mpc
            return IN_SYNACK_PLAIN, mpc
        if not f & ACK:
            return IN_ODD, None
        if state is SYN_RCVD and flow.inbound == 2:
            # the guest's SYN/ACK went out with our key: only an acceptable segment acts (RFC
            # 9293 §3.10.7.4: seq in the window the guest offered, ack = its ISN+1); a blind
            # ACK must not turn the flow into plain TCP
            r = sf.rel(pkt.seq)
            if r < 1 or r > sf.rcv_edge + WND_SLACK or pkt.ack != (flow.guest_isn + 1) & M32:
                return IN_OUTSIDE, None
        if mpc is not None and flow.inbound:
            # the peer's MP_CAPABLE after its SYN (RFC 8684 §3.1): the third ACK, or the first
            # data in the MP_CAPABLE data form, with its key and ours echoed
            ours = mpc.rcvr_key == flow.local_key and mpc.sndr_key is not None and (
                flow.remote_key is None or mpc.sndr_key == flow.remote_key)
            if state is SYN_RCVD:
                if ours:
                    return IN_MPC_ACK, mpc
                self.counters[Counter.InboundKeyMismatch] += 1
                return IN_NODSS, None  # plain TCP from here (passive_fallback)
            if ours and dss is None and mpc.data_len is not None and pkt.payload_len:
                # first data in the data form after the third ACK: its implied mapping,
                # DSN IDSN+1 at subflow seq 1 (the same parameters as a DSS, §3.1)
                dss = Dss(None, False, (flow.remote_idsn + 1) & M64, True, 1, mpc.data_len, mpc.csum, False)
        if judged and (r > base + MAX_JUMP or r + n + MAX_JUMP < base):
            return IN_OUTSIDE, None
        if (
            flow.fin_ack_delivered
            and flow.remote_fin_acked
            and not pkt.payload_len
            and not f & FIN
            and (dss is None or not dss.data_fin)
        ):
            return IN_STALE_ACK, dss
        if judged and (r + n < base or (n and r + n == base)):
            return IN_OLD, dss  # a retransmission of what the guest has: nothing acts
        if judged and r > sf.rcv_edge + WND_SLACK:
            # beyond the window the converter saw the guest offer (its ACKs may have passed
            # the queue unseen, fail-open): the bytes go on, placed by their mapping, and the
            # guest judges them; nothing acts here. Dropping them could stall the flow for good.
            return IN_BEYOND, dss
        if dss is None:
            if f & FIN and (state is FALLBACK or state is FALLBACK_CLOSING):
                return IN_FIN, None
            if mpfail is not None:
                return IN_MP_FAIL, (mpfail, None)
            if not mptcp and (pkt.payload_len or f & FIN or seq_before((flow.guest_isn + 1) & M32, pkt.ack)):
                if judged and sf.off != 0:  # a fallback needs subflow seq == data seq
                    return IN_UNRECONCILABLE, Counter.FallbackUnreconcilable
                return IN_NODSS_DATA, None
            return IN_NODSS, None
        if dss.data_seq is not None:
            if flow.checksum and dss.csum is None:  # RFC 8684 §3.3: not a valid mapping
                return IN_CSUM_MISSING, Counter.DataCsumMissing
            d = flow.remote_rel(dss.data_seq, dss.dsn64)
            if d < 0:
                return IN_OUTSIDE, None
            if dss.data_len == 0:
                # infinite mapping (§3.7): plain TCP from here, which needs subflow seq ==
                # data seq; where the server's subflow drifted from its data, it cannot be
                if sf.off != 0 or (dss.subflow_seq != 0 and _unwrap(dss.subflow_seq, r) != d):
                    return IN_UNRECONCILABLE, Counter.FallbackUnreconcilable
                return IN_INFINITE, mpfail
            if flow.checksum and pkt.payload_len:
                if not _csum_ok(flow, pkt, data, dss):
                    return IN_CSUM_BAD, dss
                if dss.csum is not None and _csum_late_bad(flow, sf, pkt, data, dss.subflow_seq, dss.data_len,
                                                           dss.data_fin, dss.csum, r, d):
                    return IN_CSUM_BAD_LATE, Counter.DataCsumLateErr
        elif flow.checksum and pkt.payload_len and sf.rmap_valid and sf.rmap_csum >= 0:
            # no mapping of its own (a DSS with only its DATA_ACK): placed by the last
            # mapping, and judged by it when it completes it (Linux repeats the mapping on
            # every segment; another stack need not, and such a segment passed unchecked)
            if _csum_late_bad(flow, sf, pkt, data, sf.rmap_ssn, sf.rmap_dlen, sf.rmap_fin, sf.rmap_csum,
                              r, sf.rmap_d):
                return IN_CSUM_BAD_LATE, Counter.DataCsumLateErr
        if mpfail is not None:
            return IN_MP_FAIL, (mpfail, dss)
        if dss.data_fin:
            return IN_DATA_FIN, dss
        if dss.data_ack is None:
            return IN_DSS_NOACK, dss
        if (
            flow.local_fin
            and flow.remote_fin_acked
            and not flow.local_fin_acked
            and not seq_before(flow.guest_seq_of_local_dsn(dss.data_ack), (flow.local_fin_seq + 1) & M32)
        ):
            return IN_CLOSE_DONE, dss
        return IN_DSS, dss

    # -- handlers (named in table.TABLE); they never change flow.state ----------------------

    def _h_pass_out(self, flow, pkt, data, ctx):
        return [ACCEPT]

    def _h_pass_in(self, flow, pkt, data, ctx):
        return [self._stripped(pkt, data)]

    def _h_guest_mptcp(self, flow, pkt, data, ctx):
        """The guest's SYN already has MPTCP options: it speaks MPTCP itself; not ours."""
        self.counters[Counter.GuestSpeaksMPTCP] += 1
        return [ACCEPT]

    def _h_syn(self, flow, pkt, data, ctx):
        """Guest SYN: add MP_CAPABLE (RFC 8684 §3.1), clamp the MSS. Same ISN, same bytes."""
        cfg = self.config
        if flow.state is S.NEW or flow.local_key is None or pkt.seq != flow.syn_isn():
            if flow.mp is not None:
                MP.release(self, flow)
            flow.reset(cfg.version)
            flow.guest_isn = flow.sf.local_isn = pkt.seq
            flow.syn_sent_len = pkt.payload_len  # Fast Open data the SYN/ACK may ack
            flow.local_key = new_key()
            flow.local_idsn = key_idsn(flow.local_key, flow.version)
        mflags = MPTCP_CAP_HMAC | (MPTCP_CAP_CHECKSUM_REQD if cfg.checksum else 0)
        # v1 SYN: no key (length 4); v0 SYN: our key (length 12)
        opt = MpCapable(flow.version, mflags, flow.local_key if flow.version == 0 else None)
        start, end = pkt.ip_hlen + TCP_HLEN, pkt.payload_off
        if flow.state is S.NEW or flow.remote_key is None:  # not after the SYN/ACK settled it
            flow.guest_window = pkt.window
            o = parse_options(data, start, end)
            flow.guest_wscale = o.wscale  # -1: none (see _h_synack)
            flow.guest_wscale_seen = flow.guest_wscale >= 0
            flow.guest_mss = _guest_mss(o.mss)
        self.counters[Counter.MPCapableSYNTX] += 1
        options = None
        if (self._mp_on and pkt.dst in self._mptcp_servers
                and not parse_options(data, start, end).sack_perm):
            # A guest without SACK: subflow 1 gets it all the same (ours once the flow is
            # multipath: acked on arrival, its blocks are the middlebox's record, sf.ranges).
            # Without it Linux recovered subflow 1 as NewReno, one hole per partial ACK, while
            # the guest's ack clock died behind that very hole (the data-level window full
            # above it): an RTO and go-back-N for every burst lost on the path, a 6 MB
            # download took over 60 s (test_no_sack_plain[netlink-mp]). Only towards a server
            # that answered MP_CAPABLE before: one that falls back to plain TCP would have
            # agreed to SACK with a guest that never sends a block, and Linux then recovers
            # only by its timers (TLP, RTO), no fast retransmit at all.
            try:
                raw = self._clamp_mss(strip_mptcp(data, start, end), pkt.version)
                options = build_options(raw + bytes((TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM)), (opt,))
            except WireError:
                options = None
        if flow.remote_key is None:  # (a resend after the SYN/ACK: as that settled it)
            flow.sack_added = options is not None
        if options is None:
            options = self._syn_options(pkt, data, opt)
        return [Rewrite(rewrite(data, pkt, options=options))]

    def _syn_options(self, pkt, data: bytes, opt) -> bytes:
        """The TCP options of a SYN or SYN/ACK without its MPTCP ones, the MSS clamped, plus
        `opt` (our MP_CAPABLE); when unknown options eat the space, only the ones we know."""
        start, end = pkt.ip_hlen + TCP_HLEN, pkt.payload_off
        raw = self._clamp_mss(strip_mptcp(data, start, end), pkt.version)
        try:
            return build_options(raw, (opt,))
        except WireError:
            o = parse_options(data, start, end)
            mss = min(o.mss, self._mss_limit[pkt.version]) if o.mss != -1 else -1
            return build_options(encode_tcp_options(mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr), (opt,))

    def _h_synack(self, flow, pkt, data, mpc):
        """SYN/ACK with MP_CAPABLE: record the server's key, strip the option, clamp the MSS.
        A retransmission of it (same seq and key: _classify_in) changes nothing."""
        start = pkt.ip_hlen + TCP_HLEN
        if flow.remote_key is not None:
            raw = self._clamp_mss(strip_mptcp(data, start, pkt.payload_off), pkt.version)
            return [Rewrite(rewrite(data, pkt, options=_without_sack_perm(raw) if flow.sack_added else raw))]
        flow.remote_key = mpc.sndr_key
        flow.remote_idsn = key_idsn(mpc.sndr_key, flow.version)
        known = self._mptcp_servers
        known[pkt.src] = True
        known.move_to_end(pkt.src)
        if len(known) > MPTCP_SERVERS:
            known.popitem(last=False)
        flow.server_isn = flow.sf.remote_isn = pkt.seq
        flow.rcv_rel = 1
        # TCP Fast Open: SYN data the server took is outside the data sequence space (RFC 8684
        # Appendix B.3, erratum 6609; Linux adds its length to the subflow's seq offset): the
        # first guest byte after it is DSN IDSN+1 at relative subflow seq 1.
        isn = flow.syn_isn()
        syn_len = (pkt.ack - isn - 1) & M32
        if syn_len >= 65536:
            syn_len = 0
        flow.syn_len = syn_len
        flow.guest_isn = flow.sf.local_isn = (isn + syn_len) & M32
        flow.checksum = self.config.checksum or mpc.checksum  # either A bit (§3.1)
        self.counters[Counter.MPCapableSYNACKRX] += 1
        start = pkt.ip_hlen + TCP_HLEN
        # window scaling holds when both SYNs carry it (RFC 7323 §2.2); the guest's SYN window
        # is unscaled: the first right edge the server may fill
        o = parse_options(data, start, pkt.payload_off)
        server_ws = o.wscale
        # (the server echoes SACK_PERM only when the SYN offered it; one we added is subflow
        # 1's alone, the guest never learns of it)
        if not o.sack_perm:
            flow.sack_added = False
        flow.sack_ok = o.sack_perm and not flow.sack_added
        # timestamps (the server echoes them only when the SYN had them, RFC 7323 §2.2): a
        # guest without them (Windows' default) sends 12 bytes more per segment, no
        # super-packet
        flow.guest_ts = o.ts_val != -1
        # C bit (RFC 8684 §3.1): the server takes no join to the source address of this
        # SYN/ACK; joins go to the addresses it announces (ADD_ADDR) only
        flow.no_initial_join = bool(mpc.flags & MPTCP_CAP_DENY_JOIN_ID0)
        if flow.no_initial_join:
            self.counters[Counter.JoinInitialDenied] += 1
        if flow.guest_wscale < 0 or server_ws < 0:
            flow.guest_wscale = 0
            flow.guest_wscale_seen = False
            server_ws = 0
        flow.guest_wscale = min(flow.guest_wscale, 14)
        flow.server_wscale = min(server_ws, 14)
        flow.server_window = pkt.window
        flow.sf.rcv_edge = 1 + max(flow.guest_window, 65535)
        raw = self._clamp_mss(strip_mptcp(data, start, pkt.payload_off), pkt.version)
        if flow.sack_added:
            raw = _without_sack_perm(raw)
        return [Rewrite(rewrite(data, pkt, options=raw))]

    def _h_synack_fallback(self, flow, pkt, data, mpc):
        self.counters[Counter.MPCapableFallbackSYNACK] += 1
        self._mptcp_servers.pop(pkt.src, None)  # (no more SACK on subflow 1 for its guests)
        if mpc is not None:
            self.counters[Counter.MPCapableVersionMismatch] += 1
        return [self._stripped(pkt, data)]

    def _h_out(self, flow, pkt, data, ctx):
        """Guest ACK/data/FIN: MP_CAPABLE (third ACK, first data) or DSS (RFC 8684 §3.1, §3.3).

        The guest's ack is data-level; the subflow ack it becomes is what the converter
        received on the subflow and the guest has (Subflow.subflow_ack), and its SACK blocks
        move with it once the subflow's space drifted from the data's."""
        sf = flow.sf
        plen = pkt.payload_len
        fin = pkt.flags & FIN
        ack = pkt.ack
        new_ack = -1
        counters = self.counters
        if (not plen and not fin and flow.state is TIME_WAIT and flow.mp is None and sf.rcv_base >= sf.rcv_max
                and flow.remote_fin_acked and not seq_before((flow.server_isn + flow.rcv_rel) & M32, ack)):
            # Both DATA_FINs acked, every server byte (its subflow FIN too) acked on the
            # subflow, and this ACK acks nothing new: the guest's answer to a duplicate FIN
            # (the server's DATA_FIN on a pure ACK, then its subflow FIN). Sent on, it
            # reached a server whose subflow had closed meanwhile (LAST_ACK, our ACK of its
            # FIN), which answered with a RST (test_outbound_core, pure run: 1 in about 20)
            counters[Counter.StaleAckOutDropped] += 1
            return [Drop("guest ACK after the close that acks nothing new")]
        rel = 0
        resent = False
        if plen or fin:
            rel = flow.guest_rel(pkt.seq)
            if rel < 0:  # before the ISN or far ahead: never a DSN, never the widening base
                counters[Counter.GuestSeqOutOfWindow] += 1
                return [Drop("guest segment outside its own sequence space")]
            resent = rel < flow.snd_end
            if rel + plen > flow.snd_end:
                flow.snd_end = rel + plen
        if not seq_before(ack, (flow.server_isn + flow.rcv_rel) & M32):
            flow.guest_window = pkt.window  # for the ACKs we may have to inject
        elif pkt.window != flow.guest_window:
            # An ACK older than one seen already (it arrived late: the guest's segments cross
            # two CPUs' backlogs). It goes on with the newest ack (DATA_ACK rcv_rel, the
            # subflow ack clamped to it), so with that ack's window too, as our injected ACKs:
            # a slow reader's window shrinks as its ack grows, the old window with the new ack
            # put the edge beyond the guest's, and Linux, whose edge never retracts, sent
            # bytes on joins that the guest dropped (JoinBeyondGuestWindow), repaired by its
            # MPTCP timer on whatever subflow was free, a backup too (a CI-like proof: 19 of
            # them, 2.6 MB on the cost policy's dear uplink)
            counters[Counter.GuestLateAckWindow] += 1
            data = rewrite(data, pkt, window=flow.guest_window)
            pkt = parse_packet(data)
        data_ack = flow.data_ack_of_guest_ack(ack)
        if not flow.ack64:
            data_ack &= M32
        if flow.remote_fin and not flow.remote_fin_acked and not seq_before(ack, (flow.remote_fin_seq + 1) & M32):
            flow.remote_fin_acked = True
        s_ack = sf.subflow_ack(flow.rcv_rel)
        edge = s_ack + (pkt.window << flow.guest_wscale)
        if edge > sf.rcv_edge:
            sf.rcv_edge = edge
        sub_ack = (sf.remote_isn + s_ack) & M32
        if sub_ack != ack:
            new_ack = sub_ack
            counters[Counter.SubflowAckClamped] += 1
        raw = None  # the guest's TCP options with translated SACK blocks, when they need it
        if flow.mp is not None:
            # acked on arrival: subflow 1's SACK is its own record (sf.ranges, subflow seqs),
            # never the guest's data-level blocks (ranges no longer hold data offsets)
            if (flow.sack_ok or flow.sack_added) and (sf.ranges or pkt.doff > TCP_HLEN):
                raw = self._sack_of_ranges(sf, pkt, data)
        elif flow.sack_added:
            # single path, a guest without SACK on a subflow 1 with it: the subflow bytes that
            # went to the guest beyond a hole, as its own SACK would name them (without any,
            # Linux would resend only on its timers)
            if sf.ranges:
                raw = self._sack_of_ranges(sf, pkt, data, sf.rcv_end())
        elif sf.shifted and pkt.doff > TCP_HLEN:
            raw = self._sack_translated(flow, sf, pkt, data)
        if flow.state is MPC_PENDING and not fin and (plen == 0 or ((pkt.seq - sf.local_isn) & M32 == 1 and flow.version == 1)):
            # §3.1: MP_CAPABLE with both keys on the third ACK (and pure ACKs until data; after
            # a Fast Open SYN whatever their seq), with the data-level length (+ checksum) on
            # the first data: mapping DSN IDSN+1, ssn 1.
            mflags = MPTCP_CAP_HMAC | (MPTCP_CAP_CHECKSUM_REQD if flow.checksum else 0)
            if plen:
                csum = None
                if flow.checksum:
                    csum = dss_checksum((flow.local_idsn + 1) & M64, 1, plen, data[pkt.payload_off : pkt.length])
                opt = MpCapable(flow.version, mflags, flow.local_key, flow.remote_key, plen, csum)
                counters[Counter.MPCapableDataTX] += 1
            else:
                opt = MpCapable(flow.version, mflags, flow.local_key, flow.remote_key)
                counters[Counter.MPCapableACKTX] += 1
            return self._with_option(pkt, data, opt, new_ack, raw)
        if flow.mp is not None:
            return MP.send(self, flow, pkt, data, rel, data_ack, new_ack, raw)
        if plen or fin:
            dsn = (flow.local_idsn + rel) & M64
            data_len = plen + 1 if fin else plen  # DATA_FIN takes one DSN (§3.3)
            subflow_seq = (pkt.seq - sf.local_isn) & M32 if plen else 0  # bare DATA_FIN: ssn 0, length 1
            csum = None
            dfin = bool(fin)
            hit = -1
            seg_max = flow.guest_seg(self._mss_limit[pkt.version])  # more: a super-packet
            if plen and (flow.gso_maps is not None or plen > seg_max):
                # a super-packet, or bytes of one sent before (Flow.gso_lookup)
                hit = flow.gso_lookup(rel, data_len)
                if hit == -2 or (hit >= 0 and fin and not flow.gso_maps[hit + 1] >> 33 & 1):
                    # across mappings, or a FIN after bytes of one without the DATA_FIN
                    return self._gso_cut(flow, pkt, data, rel, data_ack, new_ack)
                if hit >= 0:  # inside a super-packet's mapping: that mapping, exactly
                    counters[Counter.GsoMapRepeated] += 1
                    m_s = flow.gso_maps[hit]
                    ck = flow.gso_maps[hit + 1]
                    data_len = ck & 0x1FFFF
                    ck >>= 17
                    dsn = (flow.local_idsn + m_s) & M64
                    subflow_seq = (m_s + flow.guest_isn - sf.local_isn) & M32
                    dfin = (ck & 0x10000) != 0
                    if flow.checksum:
                        csum = ck & 0xFFFF
            if hit == -1 and plen > seg_max and resent:
                # bytes sent before under mappings of their own (in segments: the record was
                # full, or before any super-packet), resent as one super-packet: one new
                # mapping over them made the server's next queued original segment, wholly
                # inside it, bring another (DSSNotMatching and a fallback: a CI proof of
                # test_loss_of_single_segments_of_super_packets). Cut, a mapping per segment
                return self._gso_cut(flow, pkt, data, rel, data_ack, new_ack)
            if hit == -1 and plen > seg_max and flow.checksum:
                # DSS checksums: never one mapping over several segments. Linux takes none of
                # a checksummed mapping before all of it is in (it sums it whole), and the
                # guest learns the DATA_ACK only: a loss inside held the guest's ack at the
                # mapping's start while the server's subflow acked on. Without SACK the guest
                # then resent that head alone, once per RTO, and never the bytes the server
                # lacked above it: the upload stalled for good (test_no_sack_ck, single path).
                # With SACK too (a helper's capture, stop 36, and mine, stop 37): once the
                # guest's RTO fired, its cwnd of one held the resent head, which the server
                # had and would not data-ack, and every ACK repeated the same SACK blocks
                # (nothing newly acked or SACKed: no cwnd to send the hole with); the head
                # went again once per RTO, backed off, 28 s in all (while its D-SACKs passed
                # on, the guest even read the head as SACKed: _sack_above). Multipath cuts
                # with checksums anyway (multipath.send). Cut, a mapping per segment, at the
                # cost of injecting each one, as the NetfilterQueue backend, which sees no
                # super-packets, always does.
                counters[Counter.CsumNoSackCut] += 1
                return self._gso_cut(flow, pkt, data, rel, data_ack, new_ack)
            if flow.checksum and hit < 0:  # §3.3.1
                csum = dss_checksum(dsn, subflow_seq, data_len, data[pkt.payload_off : pkt.length])
            if hit == -1 and plen > seg_max:
                last = flow.gso_maps
                if last is None or not last or rel >= last[len(last) - 2] + (last[len(last) - 1] & 0x1FFFF):
                    if not flow.gso_record(rel, data_len, (0 if csum is None else csum) | (0x10000 if fin else 0)):
                        # MAX_GSO_MAPS unacked super-packets remembered: this one goes in
                        # segments, each its own mapping (none to remember, none forgotten)
                        counters[Counter.GsoMapFull] += 1
                        return self._gso_cut(flow, pkt, data, rel, data_ack, new_ack)
            if fin:
                flow.guest_fin((pkt.seq + plen) & M32)
                counters[Counter.DataFinTX] += 1
            counters[DSSTX] += 1
            flow.bytes_out += plen
            out = None
            if raw is None:
                out = add_dss(data, pkt, new_ack, data_ack, flow.ack64, dsn, True, subflow_seq, data_len, csum,
                              dfin)
            if out is None:  # no room (RFC 8684 wins over SACK blocks), or translated SACK
                opt = Dss(data_ack, flow.ack64, dsn, True, subflow_seq, data_len, csum, dfin)
                return self._with_option(pkt, data, opt, new_ack, raw)
        else:
            counters[DataAckTX] += 1
            out = None
            if raw is None:
                out = add_dss(data, pkt, new_ack, data_ack, flow.ack64)
            if out is None:
                return self._with_option(pkt, data, Dss(data_ack, flow.ack64), new_ack, raw)
        return [_rewrite(out)]

    def _gso_cut(self, flow, pkt, data: bytes, rel: int, data_ack: int, new_ack: int) -> list:
        """A guest segment that overlaps remembered super-packet mappings without lying in
        one (a retransmission that Linux collapsed across two): cut at their edges, each
        piece with its mapping (or one of its own outside them), injected in segments the
        path takes; the guest's segment itself is dropped. Rare: no fast path."""
        counters = self.counters
        counters[Counter.GsoMapCut] += 1
        sf = flow.sf
        plen = pkt.payload_len
        fin = pkt.flags & FIN
        end = rel + plen
        maps = flow.gso_maps
        if maps is None:  # (no super-packet remembered: a resend of bytes sent in segments)
            maps = ()
        cuts = []  # (a, b, entry index or -1)
        a = rel
        while a < end:
            b = end
            idx = -1
            i = 0
            while i < len(maps):
                ms = maps[i]
                me = ms + (maps[i + 1] & 0x1FFFF)
                if ms <= a < me:
                    idx = i
                    b = min(end, me)
                    break
                if a < ms < b:
                    b = ms
                i += 2
            cuts.append((a, b, idx))
            a = b
        o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        ts = encode_tcp_options(-1, -1, False, o.ts_val, o.ts_ecr) if o.ts_val != -1 else b""
        seg_max = MP.guest_seg(self, flow, pkt.version)  # (the guest's own segments)
        shift = flow.guest_isn - sf.local_isn
        ack = pkt.ack if new_ack == -1 else new_ack
        out = [Drop("guest segment across super-packet mappings: sent in pieces")]
        marks = MP.guest_marks(pkt, data)  # (its DSCP and ECN codepoint, a hop counted)
        ecn = pkt.flags & (ECE | CWR)  # (CWR on the first piece only, as TSO does)
        fin_apart = False  # the FIN goes on a bare DATA_FIN of its own (see below)
        if fin:
            flow.guest_fin((pkt.seq + plen) & M32)
            counters[Counter.DataFinTX] += 1
            fin_apart = not cuts or cuts[-1][2] >= 0 and not (maps[cuts[-1][2] + 1] >> 33) & 1
        for a, b, idx in cuts:
            while a < b:
                c = min(b, a + seg_max)
                payload = data[pkt.payload_off + (a - rel): pkt.payload_off + (c - rel)]
                last = c == end
                if idx >= 0:
                    ms = maps[idx]
                    ck = maps[idx + 1] >> 17
                    csum = ck & 0xFFFF if flow.checksum else None
                    opt = Dss(data_ack, flow.ack64, (flow.local_idsn + ms) & M64, True, (ms + shift) & M32,
                              maps[idx + 1] & 0x1FFFF, csum, (ck & 0x10000) != 0)
                else:
                    dlen = c - a + (1 if fin and last else 0)
                    dsn = (flow.local_idsn + a) & M64
                    csum = dss_checksum(dsn, (a + shift) & M32, dlen, payload) if flow.checksum else None
                    opt = Dss(data_ack, flow.ack64, dsn, True, (a + shift) & M32, dlen, csum, bool(fin) and last)
                flags = (pkt.flags & (ACK | PSH) if last else ACK) | ecn
                ecn &= ~CWR
                if fin and last and not fin_apart:
                    flags |= FIN
                counters[DSSTX] += 1
                out.append(Inject(MP.segment(pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport,
                                             (sf.local_isn + shift + a) & M32, ack, flags, pkt.window,
                                             build_options(ts, (opt,)), payload, marks)))
                a = c
        if fin_apart:  # the last piece's mapping ends before the FIN: a bare DATA_FIN (§3.3)
            opt = MP.bare_dfin(flow, data_ack, end)
            out.append(Inject(MP.segment(pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport,
                                         (sf.local_isn + shift + end) & M32, ack, ACK | FIN | ecn, pkt.window,
                                         build_options(ts, (opt,)), b"", marks)))
        flow.bytes_out += plen
        return out

    def _sack_of_ranges(self, sf, pkt, data: bytes, above: int = -1):
        """The guest's options with subflow 1's SACK blocks from its received ranges (those
        starting beyond `above` only), or None when neither has any. The highest range
        first: beside timestamps and the DSS one block has room (_room drops the rest), and
        it must be the newest the server sent (RFC 2018 §4: the block of the segment that
        triggered the ACK). With the lowest one alone, Linux's RACK could not mark a lost
        retransmission lost (nothing SACKed was sent after it), and waited for its RTO,
        backed off: 0.8 s stalls of a download."""
        o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        ranges = sf.ranges if above < 0 else [rg for rg in sf.ranges if rg[0] > above]
        if not o.sack and not ranges:
            return None
        if len(ranges) > 1:
            ranges = [ranges[-1], *ranges[:-1]]
        n = 3 if o.ts_val != -1 else 4
        blocks = tuple(((sf.remote_isn + rg[0]) & M32, (sf.remote_isn + rg[1]) & M32) for rg in ranges[:n])
        return encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, blocks)

    def _sack_translated(self, flow, sf, pkt, data: bytes):
        """The guest's non-MPTCP options with its SACK blocks (data level) moved into the
        subflow's space through the received ranges (a block no single range holds is left
        out), or None when the segment has no SACK blocks."""
        o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        if not o.sack:
            return None
        blocks = []
        for left, right in o.sack:
            dl = _unwrap((left - flow.server_isn) & M32, flow.rcv_rel)
            dr = dl + ((right - left) & M32)
            r = sf.sack_block(dl, dr)
            if r < 0:
                self.counters[Counter.SackUnmapped] += 1
                continue
            blocks.append(((sf.remote_isn + r) & M32, (sf.remote_isn + r + dr - dl) & M32))
        self.counters[Counter.SackTranslated] += 1
        return encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, tuple(blocks))

    def _with_option(self, pkt, data: bytes, opt, new_ack: int, raw=None) -> list:
        """The guest segment with `opt` as its MPTCP option, SACK blocks dropped for room;
        `raw`: the non-MPTCP options to use instead of the segment's own."""
        options = self._room(pkt, data, opt, raw)
        if options is None:
            if raw is not None:  # no room even without SACK: the ack must still be translated
                options = self._room(pkt, data, opt, None)
            if options is None:
                return [ACCEPT] if new_ack == -1 else [Rewrite(rewrite(data, pkt, ack=new_ack))]
        return [Rewrite(rewrite(data, pkt, ack=new_ack, options=options))]

    def _h_in_(self, flow, pkt, data, dss):
        if flow.mp is not None:
            dup = MP.sf1_in(self, flow, pkt, dss, data)
            if dup is not None:
                return dup
        return self._in_segment(flow, pkt, data, dss, 0)

    def _h_in_old(self, flow, pkt, data, dss):
        """A segment wholly before the guest's rcv_nxt: data the guest acknowledged is
        consumed and acked on the subflow (as any such segment); no DATA_FIN, mapping or
        checksum state moves."""
        return self._in_segment(flow, pkt, data, dss, OLD)

    def _h_in_beyond(self, flow, pkt, data, dss):
        """A segment beyond the guest's window as the converter knows it: placed by its own
        mapping and passed to the guest, which judges it; no state moves."""
        self.counters[Counter.SeqBeyondWindow] += 1
        return self._in_segment(flow, pkt, data, dss, BEYOND)

    def _in_segment(self, flow, pkt, data, dss, old):
        """Server segment: placed at the guest seq of its DSN (never at its subflow seq),
        DATA_ACK -> guest ack, DATA_FIN -> FIN, MPTCP options stripped. `old`: 0, or OLD /
        BEYOND (a segment before the guest's rcv_nxt / beyond its window: nothing moves)."""
        sf = flow.sf
        f = pkt.flags
        plen = pkt.payload_len
        counters = self.counters
        r = sf.rel(pkt.seq)
        new_ack = new_flags = -1
        guest_closed = flow.guest_passive and flow.fin_ack_delivered  # LAST_ACK is over
        cut = None  # the parts of the payload the guest gets, when not all of it (flow.unseen)
        data_fin = False
        fin_d = 0
        own_map = False
        if dss is not None:
            counters[DSSRX] += 1
            data_ack, data_seq = dss.data_ack, dss.data_seq
            if data_ack is not None:
                if flow.state is MPC_PENDING:
                    counters[Counter.MPCapableEstablished] += 1
                guest_ack = flow.guest_seq_of_local_dsn(data_ack)
                if old != BEYOND and flow.mp is None:  # where multipath would start from
                    # (an old segment's too: a resent FIN at the guest's rcv_nxt is one the
                    # guest takes, ack and all; one beyond its window it drops unread. Never
                    # beyond what the guest sent: a forged DATA_ACK half the space away made
                    # the cap below wrap: review of be95301)
                    da = _unwrap((guest_ack - flow.guest_isn) & M32, flow.snd_end)
                    if flow.data_acked < da <= flow.snd_end + (1 if flow.local_fin else 0):
                        flow.data_acked = da
                if guest_ack != pkt.ack:
                    counters[DataAckMismatch] += 1
                    new_ack = guest_ack  # the connection-level ack is what the guest learns
                if (
                    not old
                    and flow.local_fin
                    and not flow.local_fin_acked
                    and not seq_before(guest_ack, (flow.local_fin_seq + 1) & M32)
                ):
                    flow.local_fin_acked = True
            if data_seq is not None:
                d = flow.remote_rel(data_seq, dss.dsn64)
                if d < 0:
                    counters[Counter.SeqOutOfWindow] += 1
                    return [Drop("server DSN outside the guest's window")]
                if dss.dsn64 and not old:
                    flow.ack64 = True  # a 64-bit DSN must be acked with a 64-bit DATA_ACK
                dlen = dss.data_len
                fin_len = 1 if dss.data_fin else 0
                if not (dss.data_fin and dlen == 1 and dss.subflow_seq == 0):  # not a bare DATA_FIN
                    m_r = _unwrap(dss.subflow_seq, r)
                    if old:
                        own_map = True
                        sf_m_r, sf_m_len, sf_m_d = m_r, dlen - fin_len, d
                    else:
                        sf.rmap_r, sf.rmap_len, sf.rmap_d = m_r, dlen - fin_len, d
                        sf.rmap_valid = True
                        sf.rmap_ssn, sf.rmap_dlen, sf.rmap_fin = dss.subflow_seq, dlen, dss.data_fin
                        sf.rmap_csum = -1 if dss.csum is None else dss.csum
                if dss.data_fin and not old:
                    data_fin = True
                    fin_d = d + dlen - 1
        if (dss is None or dss.data_ack is None) and flow.mp is None and (
                flow.state is ESTABLISHED or flow.state is CLOSING):
            # No DATA_ACK on this segment (Linux's ADD_ADDR echo carries no DSS; its window
            # can be 0): its subflow ack may lie beyond the last DATA_ACK (bytes in the
            # server's subflow queue, not yet in its connection's). Told that ack, the guest
            # took every later segment, acking at the DATA_ACK, as an old ACK and ignored its
            # window: the echo's zero window never reopened, and the guest's probes, above
            # the DATA_ACK, were no probes to us (inbound soak, stop 47: 60 s stalls).
            da = (flow.guest_isn + flow.data_acked) & M32
            if seq_before(da, pkt.ack):
                counters[Counter.AckCappedAtDataAck] += 1
                new_ack = da
        if old and own_map:
            m_r, m_len, m_d = sf_m_r, sf_m_len, sf_m_d
        elif sf.rmap_valid and not old:
            m_r, m_len, m_d = sf.rmap_r, sf.rmap_len, sf.rmap_d
        else:
            m_r, m_len, m_d = r, plen, r - sf.off  # no mapping: only for a duplicate
        if plen:
            if not old and not sf.rmap_valid:
                counters[Counter.MappingUncovered] += 1
                return [Drop("server data before any mapping")]
            if r < m_r or r + plen > m_r + m_len:
                counters[Counter.MappingUncovered] += 1
                return [Drop("server data not covered by its mapping")]
            d0 = m_d + (r - m_r)
            consumed = d0 + plen <= flow.rcv_rel and (old != 0 or not (f & FIN or data_fin))
            if old == OLD and not consumed and not sf.arrival:
                # before the subflow ack (a subflow-level retransmission) yet carrying data the
                # guest lacks: no retransmission looks like that (Linux resends a segment with
                # its mapping); a forged or broken one never reaches the guest. Multipath:
                # subflow 1 is acked on arrival, and such a resend goes on to the guest
                counters[Counter.MappingConflict] += 1
                return [Drop("old subflow bytes mapped to data the guest lacks")]
            if not old:
                if r - d0 != sf.off and r >= sf.rcv_max:
                    counters[Counter.MappingMismatch] += 1  # the offset moves (counted once)
                # bytes the guest has still belong to their mapping's checksum: a mapping whose
                # first part was delivered by another subflow is summed whole (multipath)
                # Acknowledged on arrival (multipath), a segment subflow 1 cannot sum (in any
                # order, within flow.ck_step's bounds) is never taken, or the sum would wait
                # for bytes the server considers delivered, and every later mapping with it.
                ck = None
                if flow.checksum:
                    ck = self._csum_step(sf, data, pkt, r, m_r, m_len)
                    if ck is None and (not consumed or sf.arrival):
                        counters[Counter.DataCsumHoleDropped] += 1
                        return [Drop("checksummed mapping: segment not summable now")]
                    if ck is not None and ck is not True and not (r == m_r and plen == m_len):
                        # a resend over bytes that came before (summed then, not now): the
                        # guest gets its new bytes only (flow.unseen); wholly seen, it goes
                        # whole (a guest that reneged on its out-of-order queue needs it); a
                        # whole mapping, verified as it is (_csum_ok), goes whole
                        cut = resend_cut(sf.rcv_base, sf.ranges, r, r + plen, ck[0][3])
                        if cut is not None:
                            counters[Counter.CsumResendCut] += 1
                rec = sf.record(r, plen, d0)
                if rec <= 0:
                    counters[Counter.RangeMapFull if rec == 0 else Counter.MappingConflict] += 1
                    return [Drop("server data that the subflow's ranges cannot take")]
                if ck is not None and ck is not True:
                    if ck_commit(sf.ck_maps, ck):
                        counters[Counter.CsumMapForgotten] += 1
                    if ck[5]:
                        counters[Counter.CsumOutOfOrder] += 1
                if rec == 2:
                    counters[Counter.RangeForgotten] += 1
                if r + plen > sf.rcv_max:
                    sf.rcv_max = r + plen
                    sf.off = r - d0
        else:
            d0 = r - sf.off
            if flow.mp is not None and old != BEYOND:
                # Multipath: subflow 1's offset is its last mapping's, and the guest's stream
                # may have gone on with a join's bytes since. A pure ACK at r - off then lay
                # before the guest's rcv_nxt, and Linux drops such a segment unread, its ack
                # and window too (tcp_sequence: an idle inbound flow's keepalive answers, and
                # with them the connection, were lost; test_keepalive_kernel.py); above a
                # data-level hole a probe landed inside the window, taken in silence. A pure
                # ACK goes where ours do (guest_ack_at); a window probe or keepalive at the
                # guest's rcv_nxt - 1, where it answers (sf1_old_in); a bare DATA_FIN at its
                # own place (review of 0af049f: it stayed at r - off, dropped by the guest,
                # and the FIN never went with it).
                if data_fin:
                    d0 = fin_d
                elif old:
                    d0 = flow.rcv_rel - 1
                else:
                    d0 = MP.guest_ack_at(flow, flow.mp)
            consumed = False
        if consumed:
            # Wholly data the guest has acknowledged: consumed here and acknowledged on the
            # subflow, never sent to the guest. Linux's MPTCP zero-window probe is such a
            # segment, and its byte is not even the one its DSN names (it carries the next new
            # byte under the label DATA_ACK - 1): it must not reach the guest at all.
            counters[Counter.DupConsumed] += 1
            sub_ack = sf.subflow_ack(flow.rcv_rel)
            return [Drop("data the guest already acknowledged: acked on the subflow"),
                    Inject(self._ack_to_server(flow, pkt, data, (sf.remote_isn + sub_ack) & M32))]
        guest_seq = (flow.server_isn + d0) & M32
        if not old:
            flow.bytes_in += plen
        gend = (guest_seq + plen) & M32
        if data_fin:
            fin_seq = (flow.server_isn + fin_d) & M32
            if not flow.remote_fin:
                flow.remote_fin = True
                flow.remote_fin_seq = fin_seq
                counters[Counter.DataFinRX] += 1
            if not f & FIN:
                if fin_seq == gend:
                    new_flags = f | FIN
                else:
                    counters[Counter.DataFinDeferred] += 1
        if f & FIN and not old:
            # the subflow FIN takes one subflow seq, right after this segment's data
            if sf.record(r + plen, 1, d0 + plen) > 0 and r + plen + 1 > sf.rcv_max:
                sf.rcv_max = r + plen + 1
        guest_opts = None
        sf1_fin = None
        gwin = -1
        if flow.sack_added and flow.mp is None and pkt.doff > TCP_HLEN:
            guest_opts = options_without_sack(data, pkt)  # (subflow 1's SACK is not the guest's)
        elif new_ack != -1 and flow.mp is None and pkt.doff > TCP_HLEN and seq_before(new_ack, pkt.ack):
            # The guest's ack lowered to the DATA_ACK (a checksummed mapping not yet all in):
            # a block below the subflow ack would read as a SACK of the guest's head
            guest_opts = _sack_above(data, pkt, new_ack, pkt.ack)
        if flow.mp is not None:
            # subflow 1's SACK blocks name its own seqs: the guest gets the data level's
            guest_opts = MP.guest_options(flow, flow.mp, data, pkt)
            if old:  # (the guest answers it: a probe's answer must reach the server)
                MP.sf1_old_in(flow.mp, flow.last)
            if plen and not old:
                MP.forwarded(flow.mp, d0 + plen, flow.last)
            new_ack = (flow.guest_isn + flow.mp.data_ack) & M32  # never subflow 1's own ack
            gwin = MP.guest_win(flow, flow.mp, flow.mp.data_ack, pkt.window)  # (a guest without SACK)
            if gwin == pkt.window:
                gwin = -1
            if f & FIN and not (data_fin and (flow.server_isn + fin_d) & M32 == gend):
                new_flags = f & ~FIN  # subflow 1 closes, not the connection: no FIN for the guest
                # (a closed guest gets nothing that carries no byte it lacks: a FIN riding on
                # a resend of bytes it has, e.g. subflow 1's tail after its path came back)
                sf1_fin = MP.sf1_fin_in(self, flow, flow.mp, r + plen,
                                        guest_closed and (not plen or d0 + plen <= flow.rcv_rel))
        else:
            flow.server_window = pkt.window
        if flow.local_fin and not seq_before(pkt.ack if new_ack == -1 else new_ack, (flow.local_fin_seq + 1) & M32):
            flow.fin_ack_delivered = True
        if (
            f & FIN
            and flow.guest_passive
            and flow.remote_fin_acked
            and flow.fin_ack_delivered
            and gend == flow.remote_fin_seq
        ):
            # The server's subflow FIN sits on a DATA_FIN the guest already saw as its FIN and
            # acked (that ack did not cover this FIN). A guest that closed second (LAST_ACK)
            # closes on the packet acking its FIN without acking this FIN again, and a closed
            # one would answer RST (a guest in TIME_WAIT would ack: not this branch). So we
            # acknowledge it ourselves, DATA_ACK included, and spare a closed guest the packet.
            counters[Counter.FinAckInjected] += 1
            sub_ack = sf.subflow_ack(flow.rcv_rel)
            inject = Inject(self._ack_to_server(flow, pkt, data, (sf.remote_isn + sub_ack) & M32))
            if guest_closed:
                return [Drop("subflow FIN for a guest that has closed"), inject]
            after = [inject]
        elif sf1_fin:
            if type(sf1_fin[0]) is Drop:
                return sf1_fin
            after = sf1_fin
        else:
            after = None
        to_guest = self._to_guest(pkt, data, guest_seq, new_ack, new_flags, guest_opts, gwin)
        out = [to_guest] if cut is None else self._parts_to_guest(flow, pkt, data, to_guest, r, cut)
        if after:
            out += after
        return out

    def _parts_to_guest(self, flow, pkt, data: bytes, whole, r: int, cut: list) -> list:
        """The server segment at subflow seq `r`, made for the guest (`whole`: _to_guest's
        Rewrite), as its parts `cut` only (flow.unseen: [a0, b0, ...] subflow seqs). The
        first part takes the segment's place (its Rewrite: injected, it left after the rest
        of the round's segments, and a guest without SACK took the reordering for losses);
        the others are injected in segments the guest takes. PSH goes on the last part, FIN
        too when it ends the segment (else on a bare FIN after it: review of stop 39, the FIN
        was lost), CWR on the first. Rare (DSS checksums, a resend over bytes that came
        before): no fast path. Before (stop 37's open gap), the resend went whole and a Linux
        guest kept its copy of bytes it held out of order, summed by no mapping: a byte
        changed there reached the guest's reader."""
        full = whole.data
        g = parse_packet(full)
        hi = r + pkt.payload_len
        opts = full[g.ip_hlen + TCP_HLEN:g.payload_off]
        seg_max = min(self._mss_limit[g.version], max(MP._guest_rmss(flow, g.version) - len(opts), 64))
        # the segment's own marks on every part: it was queued in the forward hook, its TTL
        # already counted (a hop more on the injected parts, they reached the guest one
        # below the first; the helper's review of stop 40)
        marks = MP.guest_marks(g, full, 0)
        keep = g.flags & ~(FIN | PSH | CWR)
        pieces = [(cut[0], cut[1])]
        i = 2
        while i < len(cut):
            a, b = cut[i], cut[i + 1]
            i += 2
            while a < b:
                c = min(b, a + seg_max)
                pieces.append((a, c))
                a = c
        out = []
        for a, c in pieces:
            flags = keep
            if a == cut[0]:
                flags |= g.flags & CWR
            if c == pieces[-1][1]:
                flags |= g.flags & PSH
                if c == hi:
                    flags |= g.flags & FIN
            seg = MP.segment(g.version, g.src, g.dst, g.sport, g.dport, (g.seq + a - r) & M32, g.ack, flags,
                             g.window, opts, full[g.payload_off + a - r:g.payload_off + c - r],
                             marks)
            if not out:
                out.append(_rewrite(seg))
                opts = _without_dsack(full, g, opts)
            else:
                out.append(Inject(seg))
        if g.flags & FIN and pieces[-1][1] != hi:
            # its tail came before: the FIN (the subflow's, or the DATA_FIN's) goes on its own
            out.append(Inject(MP.segment(g.version, g.src, g.dst, g.sport, g.dport, (g.seq + hi - r) & M32,
                                         g.ack, keep | FIN, g.window, opts, b"", marks)))
        return out

    def _to_guest(self, pkt, data: bytes, guest_seq: int, new_ack: int, new_flags: int, options=None,
                  window: int = -1):
        """The server segment without MPTCP options, at `guest_seq`; `options`: the TCP
        options to give it instead of its own (multipath: data-level SACK blocks); `window`:
        its window field instead of its own (-1: kept; multipath.guest_win)."""
        if options is not None:
            return _rewrite(rewrite(data, pkt, seq=guest_seq, ack=new_ack, window=window, flags=new_flags,
                                    options=options))
        if guest_seq == pkt.seq and window == -1:
            return _rewrite(without_mptcp(data, pkt, new_ack, new_flags))
        options = strip_mptcp(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        return _rewrite(rewrite(data, pkt, seq=guest_seq, ack=new_ack, window=window, flags=new_flags,
                                options=options))

    def _csum_step(self, sf, data: bytes, pkt, r: int, m_r: int, m_len: int):
        """This segment's part in the DSS checksum of a mapping that spans segments (RFC 8684
        §3.3.1), in any order (flow.ck_step: each mapping in progress keeps its sum and the
        runs of its bytes summed, so a byte is summed once however often it comes; the
        segment that completes a mapping, whichever it is, is judged by _classify_in). None
        when it cannot be summed (it must not be taken: the server resends it); True when
        there is nothing to sum; else what flow.ck_commit records once the segment is taken
        (never before: a copy summed but not taken, then another delivered, would go
        unchecked).

        Summed in subflow order only (before stop 37), every segment after a hole in a
        checksummed mapping was dropped until the hole filled: the guest never saw them, so
        it sent no duplicate ACK and no SACK, and each loss cost the server an RTO (a guest
        without timestamps and SACK: downloads of 43-67 s for 6 MB at 50 Mbit/s)."""
        plen = pkt.payload_len
        end = sf.rcv_end()
        if r + plen <= end:
            # every byte came before (a subflow-level retransmission, e.g. Linux resending the
            # first MSS of a super-packet that arrived whole): summed or verified then
            return True
        if sf.ck_maps is None:
            sf.ck_maps = []
        return ck_step(sf.ck_maps, m_r, m_len, data, pkt.payload_off, r, plen, end,
                       sf.received_any(m_r, m_r + m_len))

    def _ack_to_server(self, flow, pkt, data: bytes, ack: int, extra=()) -> bytes:
        """A bare ACK from the guest's address to the server, acking subflow seq `ack` and
        the guest's DATA_ACK, at the seq the server expects (`pkt.ack`), with timestamps when
        the server's segment has them (TSval: the guest's latest the server echoes; TSecr:
        the server's); `extra` MPTCP options (MP_FAIL) ride along, as on Linux's ACKs."""
        data_ack = (flow.remote_idsn + flow.rcv_rel) & M64
        if not flow.ack64:
            data_ack &= M32
        if flow.mp is not None:  # (the window model of subflow 1, multipath.sf1_injected_ack)
            data_ack = MP.sf1_injected_ack(flow, flow.mp, pkt.ack, ack, data_ack)
        opt = Dss(data_ack, flow.ack64)
        sf = flow.sf
        edge = _unwrap((ack - sf.remote_isn) & M32, sf.rcv_base) + (flow.guest_window << flow.guest_wscale)
        if edge > sf.rcv_edge:  # the window this ACK offers the server, as the guest's do
            sf.rcv_edge = edge
        o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        tcp = b""
        if o.ts_val != -1:
            tcp = encode_tcp_options(-1, -1, False, o.ts_ecr if o.ts_ecr != -1 else 0, o.ts_val)
        return _segment_to_server(pkt, ack, ACK, flow.guest_window, (opt, *extra), tcp)

    def _peer_option(self, flow, pkt, data: bytes, pm, now: float) -> list:
        """The server's ADD_ADDR / REMOVE_ADDR on subflow 1 (multipath.peer_option). The echo
        rides on an ACK of ours on subflow 1: at the guest's highest seq sent (the server's
        `pkt.ack` is behind its rcv_wup once more guest data came: Linux dropped such an echo
        as out of window during an upload and resent its ADD_ADDR for good), acking what the
        guest acked, DATA_ACK included, and without timestamps: the guest's TSval we know is
        older than the server's TS.Recent by then, and PAWS dropped such echoes (2 of 3 in a
        test upload); Linux checks PAWS only on segments that carry timestamps."""
        mp = flow.mp
        nxt = flow.snd_end if mp is None else mp.paths[0].snd_nxt
        a = _unwrap((pkt.ack - flow.guest_isn) & M32, nxt)
        fin = 1 if flow.local_fin else 0  # the guest's FIN takes a sequence number past its data
        if a > nxt + fin or a + MAX_JUMP < nxt:  # an unacceptable ACK (RFC 5961 §5.2): not acted on
            return []
        echo, actions = MP.peer_option(self, flow, pm, pkt.version, now)
        if echo is not None:
            if mp is not None:
                buf = MP._ack_on_sf1(flow, mp, (echo,))
            else:
                sf = flow.sf
                dss = Dss(MP.dack_now(flow), flow.ack64)
                bare = _bare(pkt.version, pkt.dst, pkt.src, pkt.dport, pkt.sport,
                             (flow.guest_isn + flow.snd_end) & M32,
                             (sf.remote_isn + sf.subflow_ack(flow.rcv_rel)) & M32, ACK, flow.guest_window)
                buf = rewrite(*bare, options=build_options(b"", (dss, echo)))
            actions.insert(0, Inject(buf))
        return actions

    def _mp_fail_to_server(self, flow, pkt, data: bytes, dsn: int):
        """Inject: a duplicate of the guest's latest ACK (DSS DATA_ACK) carrying MP_FAIL(dsn)."""
        self.counters[Counter.MPFailTX] += 1
        sf = flow.sf
        ack = (sf.remote_isn + sf.rcv_base) & M32
        return Inject(self._ack_to_server(flow, pkt, data, ack, (MpFail(dsn & M64),)))

    def _h_drop_stale(self, flow, pkt, data, ctx):
        if flow.mp is not None:  # (its acks still move subflow 1: the server's ACK of our late
            MP.sf1_in(self, flow, pkt, ctx, data)  # FIN after the close, else sent six times)
        self.counters[Counter.StaleAckDropped] += 1
        return [Drop("bare ACK after the close: the guest is gone or in TIME_WAIT")]

    def _h_dss_fallback(self, flow, pkt, data, ctx):
        """Server data (or an ack of guest data) without any MPTCP option where a DSS belongs:
        the server fell back (RFC 8684 §3.7). Subflow seq == guest seq (_classify_in made sure),
        so just stop converting."""
        self.counters[Counter.DssFallback] += 1
        return [ACCEPT]

    def _h_infinite(self, flow, pkt, data, mpfail):
        """Infinite mapping (§3.7): plain TCP from here on (also the server's answer to our
        MP_FAIL, maybe with its own MP_FAIL on the same segment)."""
        self.counters[Counter.InfiniteMapRX] += 1
        if mpfail is not None:
            self.counters[Counter.MPFailRX] += 1
        return [self._stripped(pkt, data)]

    def _h_csum_fail(self, flow, pkt, data, dss):
        """Server data whose DSS checksum fails (RFC 8684 §3.7), one subflow.

        "All data from the start of the segment that failed the checksum onward is not
        trustworthy", so the segment never reaches the guest: it is dropped, and the guest's
        stream stays what the server sent. The server did not get a subflow ack for it (the
        guest never saw it), so TCP retransmits it; a copy that passes the check goes through.
        §3.7 single-subflow case: we "send back an MP_FAIL option on the subflow-level ACK,
        referring to the data-level sequence number of the start of the segment", here a
        duplicate of the guest's ACK with DATA_ACK + MP_FAIL (what Linux sends). The server
        answers with MP_FAIL and an infinite mapping on its next data (IN_INFINITE: the flow
        falls back; from then on the stream is legacy TCP, as §3.7 says). Until then the flow
        keeps converting and every failing copy is dropped and answered the same way."""
        counters = self.counters
        counters[Counter.DataCsumErr] += 1
        counters[Counter.CsumErrDropped] += 1
        flow.fail_sent = True
        return [Drop("DSS checksum failed: MP_FAIL sent (RFC 8684 §3.7)"),
                self._mp_fail_to_server(flow, pkt, data, _dsn64(flow, dss))]

    def _h_mp_fail(self, flow, pkt, data, ctx):
        """MP_FAIL from the server (§3.7). After ours it is the server's answer: its infinite
        mapping follows. Otherwise our checksum failed at the server (should not happen: we
        compute it over the guest's bytes): "the receiver of an MP_FAIL SHOULD also respond
        with an MP_FAIL in the reverse direction and entirely revert to a regular TCP session":
        we answer MP_FAIL (Linux resets the subflow when no answer comes) and the next guest
        data carries our infinite mapping (OUT_INFINITE). The segment itself is converted."""
        mpfail, dss = ctx
        self.counters[Counter.MPFailRX] += 1
        actions = self._h_in_(flow, pkt, data, dss)
        if not flow.fail_sent:
            flow.fail_sent = flow.infinite_tx = True
            actions.append(self._mp_fail_to_server(flow, pkt, data, mpfail.data_seq))
        return actions

    def _h_infinite_out(self, flow, pkt, data, ctx):
        """Guest data after the server's MP_FAIL: one infinite mapping (DSS with data-level
        length 0, §3.7), then plain TCP. Linux puts it on the mapping the segment would have had
        (DSN and subflow seq of its first byte); with one subflow and subflow seq == data seq
        that is also where the retroactive mapping of §3.7 would start from the receiver's
        point of view (it delivers from its DATA_ACK on). Linux ignores the checksum field of
        an infinite mapping; it must be there when checksums are on (option length)."""
        sf = flow.sf
        flow.infinite_tx = False
        new_ack = -1
        ack = pkt.ack
        data_ack = flow.data_ack_of_guest_ack(ack)
        if not flow.ack64:
            data_ack &= M32
        sub_ack = (sf.remote_isn + sf.subflow_ack(flow.rcv_rel)) & M32
        if sub_ack != ack:
            new_ack = sub_ack
            self.counters[Counter.SubflowAckClamped] += 1
        dsn = flow.dsn_of_guest_seq(pkt.seq)
        rel = (pkt.seq - sf.local_isn) & M32
        csum = dss_checksum(dsn, rel, 0, b"") if flow.checksum else None
        self.counters[Counter.InfiniteMapTX] += 1
        opt = Dss(data_ack, flow.ack64, dsn, True, rel, 0, csum, False)
        return self._with_option(pkt, data, opt, new_ack)

    def _h_fallback_fin(self, flow, pkt, data, ctx):
        """A FIN on a plain-TCP flow: untouched; the flow gets the closing timeout."""
        self.counters[Counter.FallbackFin] += 1
        return [ACCEPT]

    def _h_rst_out(self, flow, pkt, data, ctx):
        """Guest RST: the guest's connection is gone, so the MPTCP connection must go too. A
        plain RST only closes the subflow and Linux keeps an established MPTCP connection
        without subflows alive (its application learns nothing). RFC 8684 §3.5: "a host
        [closing abruptly] should send the MP_FASTCLOSE"; Option R: a RST with MP_FASTCLOSE
        (the receiver's key) on every subflow, here the one, and tear down at once. MP_TCPRST
        rides along as on Linux's own fast close. Before the server's key is known (SYN_SENT)
        the RST goes as it is."""
        self.counters[Counter.RstTX] += 1
        if flow.remote_key is None:
            return [ACCEPT]
        fastclose = MpFastclose(flow.remote_key)
        raw = strip_mptcp(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        try:
            options = build_options(raw, (fastclose, MpTcpRst(False, MPTCP_RST_EUNSPEC)))
        except WireError:
            try:
                options = build_options(raw, (fastclose,))
            except WireError:
                # the RST goes plain, but the MPTCP connection is ended all the same: late
                # guest data is dropped and the guest's next RST tries MP_FASTCLOSE again
                self.counters[Counter.OptionSpaceExhausted] += 1
                flow.fastclosed = True
                return [ACCEPT]
        self.counters[Counter.FastCloseTX] += 1
        flow.fastclosed = True
        return [Rewrite(rewrite(data, pkt, options=options))]

    def _h_rst_out_again(self, flow, pkt, data, ctx):
        """Guest RST on a closed flow: with MP_FASTCLOSE again when the first one had it (the
        server may have answered that RST with a challenge ACK instead of taking it)."""
        if flow.fastclosed:
            return self._h_rst_out(flow, pkt, data, ctx)
        return [ACCEPT]

    def _h_closed_data(self, flow, pkt, data, ctx):
        """Guest data or FIN on a closed flow: dropped when the guest's RST ended an MPTCP
        connection (with MP_FASTCLOSE, or plain when it had no room: see the table's row),
        passed as plain TCP otherwise."""
        if flow.fastclosed:
            self.counters[Counter.DataAfterRstDropped] += 1
            return [Drop("guest data after its own reset (MP_FASTCLOSE sent)")]
        return [ACCEPT]

    def _h_rst_in(self, flow, pkt, data, tcprst):
        """An acceptable server RST (exactly at the guest's rcv_nxt; in SYN_SENT acking our
        SYN): the flow ends, the guest gets it at its rcv_nxt in its own space."""
        self.counters[Counter.TcpRstRX if tcprst is not None else Counter.RstRX] += 1
        self.counters[Counter.RstAccepted] += 1
        if flow.state is SYN_SENT:
            return [self._stripped(pkt, data)]
        return [self._to_guest(pkt, data, (flow.server_isn + flow.rcv_rel) & M32, -1, -1), *_rst_past_ack(flow, pkt)]

    def _h_rst_challenge(self, flow, pkt, data, ctx):
        """A server RST in the guest's window but not at its rcv_nxt (RFC 5961 §3.2): it
        reaches the guest at the same distance from rcv_nxt, the guest answers with a challenge
        ACK, nothing changes here."""
        self.counters[Counter.RstChallenged] += 1
        sf = flow.sf
        r = sf.rel(pkt.seq)
        return [self._to_guest(pkt, data, (flow.server_isn + flow.rcv_rel + (r - sf.rcv_base)) & M32, -1, -1)]

    def _h_drop_rst(self, flow, pkt, data, ctx):
        self.counters[Counter.RstOutOfWindow] += 1
        return [Drop("RST outside the guest's window (RFC 5961)")]

    def _h_drop_outside(self, flow, pkt, data, ctx):
        self.counters[Counter.SeqOutOfWindow] += 1
        return [Drop("segment outside the guest's window")]

    def _h_simultaneous(self, flow, pkt, data, ctx):
        """A server SYN crossing the guest's (simultaneous open): plain TCP from here, once."""
        self.counters[Counter.SimultaneousOpen] += 1
        return [self._stripped(pkt, data)]

    # -- the inbound role (issue 9): an MPTCP peer connects to a plain-TCP guest -------------

    def _orphan(self, key, pkt, data: bytes, direction, now: float):
        """A segment (not a SYN; a guest's SYN/ACK only for its MPTCP options) of a connection
        the table does not know: the actions when it may be one a killed predecessor converted
        (orphans.py), None to pass it. (A RST passes: it ends whatever it is.)"""
        orphans = self.orphans
        if direction != OUT:
            if pkt.flags & RST or not parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off).mptcp:
                return None
            said = orphans.peer(key, pkt.seq, pkt.ack, now)
            if said == OR.LET:  # (an MPTCP guest's, whose flow the full table could not take)
                self.counters[GuestMPTCPPacket] += 1
                return [ACCEPT]
            out = [Drop("an MPTCP segment of a connection this daemon does not know: held")]
            if said == OR.PROBE:
                out.append(Inject(_question(pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt)))
            return out
        speaks = bool(parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off).mptcp)
        if pkt.flags & SYN and not speaks:  # (a plain SYN/ACK: nothing to learn, but a new
            orphans.forget(key)               # connection on the 4-tuple: no record names it)
            return None
        said = orphans.guest(key, pkt.flags, pkt.seq, pkt.ack, speaks, now)
        if said == OR.PASS:
            return None
        if said == OR.SPEAKS_MPTCP:
            flow = self._new_flow(key, now, EVICT_HALF_OPEN)
            # (its own MPTCP from here on, as if its SYN had been seen: a connection the table
            # forgot or never saw, whose peer need not send first to be known)
            if flow is not None:
                self._set_state(key, flow, GUEST_MPTCP)
            else:
                orphans.native(key, now)
            self.counters[GuestMPTCPPacket] += 1
            return [ACCEPT]
        # a converted connection whose state died with the daemon: RSTs at both rcv_nxt; with
        # the peer's key (the predecessor's record) an ACK with MP_FASTCLOSE first, so that
        # the peer's MPTCP connection closes, not only this subflow (RFC 8684 §3.5 Option A)
        guest, gport, peer, pport = key
        v = pkt.version
        out = [Drop("a guest segment of a connection a killed daemon converted: reset"),
               Inject(_bare_rst(v, peer, guest, pport, gport, pkt.ack))]
        return out + _peer_reset(v, guest, peer, gport, pport, said[1], said[2], said[3])

    def _orphan_join(self, pkt, now: float):
        """A segment at a join port no subflow owns: when the killed predecessor recorded that
        subflow, the peer gets MP_FASTCLOSE and a RST on it, and the guest is asked about its
        connection as for a held segment of subflow 1 (whose path may be down: then nothing
        else of the connection reaches us). None otherwise."""
        jkey = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        rec = self.orphans.join(jkey, now)
        if rec is None:
            return None
        (guest, gport, peer, pport), peer_key = rec
        local, lport, remote, rport = jkey
        v = pkt.version
        out = [Drop("a subflow of a connection a killed daemon converted: reset")]
        out += _peer_reset(v, local, remote, lport, rport, pkt.ack, pkt.seq, peer_key)
        if self.orphans.peer(rec[0], pkt.seq, pkt.ack, now) == OR.PROBE:
            out.append(Inject(_question(4 if len(guest) == 4 else 6, peer, guest, pport, gport, pkt)))
        return out

    def recorded(self, now: float) -> dict:
        """What the shell's state file holds (--state-dir), so that a successor knows its
        orphans should this daemon be killed: key -> the peer's key, of every flow `stop`
        would reset whose peer key is known; for their live extra subflows (local, lport,
        remote, rport) -> (the flow's key, the peer's key); and the predecessor's records
        still believed."""
        out = self.orphans.recorded(now)
        for key, flow in self.flows.items():
            if flow.remote_key is not None and _resettable(flow):
                out[key] = flow.remote_key
                if flow.mp is not None:  # its extra subflows: (local, lport, remote, rport)
                    for p in flow.mp.paths[1:]:
                        if p.state in MP.ALIVE:
                            out[(p.local, p.lport, p.remote, p.rport)] = (key, flow.remote_key)
        return out

    def _peer_syn_kind(self, pkt, data: bytes) -> int:
        """A peer's SYN towards a guest with no flow yet: 1 with an MP_CAPABLE (a flow is
        made), 2 with an MP_JOIN (refused), 0 otherwise (plain TCP, or an MP_CAPABLE of another
        version than ours: not ours)."""
        version = self.config.version
        for o in mptcp_options(data, pkt):
            t = type(o)
            if t is MpCapable:
                return 1 if _answerable(o, version) else 0
            if t is MpJoinSyn:
                return 2
        return 0

    def _token_live(self, key, token: int) -> bool:
        f = self.flows.get(key)
        return (f is not None and f.inbound != 0 and f.local_key is not None
                and key_token(f.local_key, f.version) == token)

    def _register_token(self, flow, key: tuple) -> None:
        """Our key for an inbound connection, its token unique among the live ones (RFC 8684
        §3.1: a joining peer names the connection by it), registered for MP.passive_join."""
        tokens = self.tokens
        while True:
            k = new_key()
            token = key_token(k, flow.version)
            other = tokens.get(token)
            if other is None or other == key or not self._token_live(other, token):
                break
        flow.local_key = k
        tokens[token] = key
        if len(tokens) > 2 * len(self.flows) + 1024:  # forget the tokens of flows gone
            self.tokens = {t: fk for t, fk in tokens.items() if self._token_live(fk, t)}

    def _h_syn_in(self, flow, pkt, data, mpc):
        """A peer's SYN with MP_CAPABLE towards a guest: the guest gets it without the option
        (MSS clamped: the guest's segments will carry our DSS); the flow keeps the peer's ISN,
        window scale and checksum wish for the guest's SYN/ACK. A retransmission (same ISN)
        changes nothing; another ISN starts the flow again."""
        cfg = self.config
        start, end = pkt.ip_hlen + TCP_HLEN, pkt.payload_off
        if flow.state is not SYN_RCVD or pkt.seq != flow.server_isn:
            if flow.mp is not None:
                MP.release(self, flow)
            flow.reset(cfg.version)
            flow.inbound = 1
            flow.no_join = True  # the peer opens the subflows of an inbound connection
            flow.server_isn = flow.sf.remote_isn = pkt.seq
            flow.rcv_rel = 1
            self._register_token(flow, (pkt.dst, pkt.dport, pkt.src, pkt.sport))
            flow.local_idsn = key_idsn(flow.local_key, flow.version)
            flow.checksum = cfg.checksum or mpc.checksum  # either A bit (§3.1)
            if mpc.sndr_key is not None:  # v0: the peer's key rides on its SYN
                flow.remote_key = mpc.sndr_key
                flow.remote_idsn = key_idsn(mpc.sndr_key, flow.version)
            flow.server_wscale = parse_options(data, start, end).wscale  # -1: none (see synack_out)
            flow.server_window = pkt.window
        self.counters[Counter.MPCapableSYNRX] += 1
        raw = self._clamp_mss(strip_mptcp(data, start, end), pkt.version)
        return [Rewrite(rewrite(data, pkt, options=raw))]

    def _h_synack_out(self, flow, pkt, data, ctx):
        """The guest's SYN/ACK answering the peer's SYN: sent on with MP_CAPABLE and our key
        (RFC 8684 §3.1; H, A when either side wants checksums; no C bit: the peer may join at
        the guest's address, MP.passive_join answers). Window scaling and SACK hold as both
        SYNs say. A retransmission gets the same option."""
        if not flow.inbound or pkt.ack != (flow.server_isn + 1) & M32:
            if flow.inbound:
                flow.inbound = 3  # it leaves plain (see below)
            self.counters[Counter.StateViolation] += 1
            return [ACCEPT]
        start, end = pkt.ip_hlen + TCP_HLEN, pkt.payload_off
        if flow.inbound == 1:
            flow.inbound = 2
            o = parse_options(data, start, end)
            flow.guest_isn = flow.sf.local_isn = pkt.seq
            flow.guest_window = pkt.window
            ws, peer_ws = o.wscale, flow.server_wscale
            flow.guest_wscale_seen = ws >= 0
            if ws < 0 or peer_ws < 0:  # RFC 7323 §2.2: both SYNs or neither
                ws = peer_ws = 0
            flow.guest_wscale = min(ws, 14)
            flow.server_wscale = min(peer_ws, 14)
            flow.sack_ok = o.sack_perm  # (the guest answers SACK_PERM only to a SYN offering it)
            flow.guest_ts = o.ts_val != -1  # (and timestamps only to a SYN with them)
            flow.guest_mss = _guest_mss(o.mss)
            flow.sf.rcv_edge = 1 + max(flow.guest_window, 65535)
        elif pkt.seq != flow.guest_isn:
            # another ISN (SYN cookies across their time slot): it leaves plain, so the peer's
            # plain ACK of it, whatever its numbers, must fall back (_classify_in: inbound 3)
            flow.inbound = 3
            self.counters[Counter.StateViolation] += 1
            return [ACCEPT]
        mflags = MPTCP_CAP_HMAC | (MPTCP_CAP_CHECKSUM_REQD if flow.checksum else 0)
        opt = MpCapable(flow.version, mflags, flow.local_key)
        self.counters[Counter.MPCapableSYNACKTX] += 1
        return [Rewrite(rewrite(data, pkt, options=self._syn_options(pkt, data, opt)))]

    def _h_mpc_ack_in(self, flow, pkt, data, mpc):
        """The peer's third ACK (checked by _classify_in: it echoes our key): its key is the
        flow's, the option goes. In the MP_CAPABLE data form (the peer sends first, or its
        third ACK was lost) the payload is delivered under the mapping that form implies:
        DSN IDSN+1 at subflow seq 1 (§3.1); failing its DSS checksum it is dropped and its
        retransmission, on the established flow, gets the MP_FAIL treatment."""
        if flow.remote_key is None:
            flow.remote_key = mpc.sndr_key
            flow.remote_idsn = key_idsn(mpc.sndr_key, flow.version)
        self.counters[Counter.MPCapableACKRX] += 1
        if pkt.payload_len and mpc.data_len is not None:
            dss = Dss(None, False, (flow.remote_idsn + 1) & M64, True, 1, mpc.data_len, mpc.csum, False)
            if flow.checksum and (mpc.csum is None or not _csum_ok(flow, pkt, data, dss)):
                self.counters[Counter.DataCsumErr] += 1
                return [Drop("first data in the MP_CAPABLE form fails its checksum")]
            return self._in_segment(flow, pkt, data, dss, 0)
        return [self._stripped(pkt, data)]

    def _h_passive_fallback(self, flow, pkt, data, ctx):
        """The peer's ACK without MP_CAPABLE (or its SYN retried without it, or a third ACK
        echoing another key): plain TCP from here (§3.1), without MPTCP options."""
        self.counters[Counter.InboundFallback] += 1
        return [self._stripped(pkt, data)]

    def _h_drop_early(self, flow, pkt, data, ctx):
        """Guest data before the peer's third ACK brought its key (a Fast Open server): it
        cannot be mapped yet; dropped, the guest sends it again."""
        self.counters[Counter.InboundEarlyData] += 1
        return [Drop("guest data before the peer's key")]

    def _h_untouched(self, flow, pkt, data, ctx):
        self.counters[Counter.GuestMPTCPPacket] += 1
        return [ACCEPT]

    def _h_abort(self, flow, pkt, data, why):
        """The server's stream cannot reach the guest exactly any more (`why`: the counter of
        the reason): both ends are reset, visibly, instead of delivering bytes that are not the
        server's. The guest gets a RST at its rcv_nxt; the server a RST with MP_FASTCLOSE (its
        key) + MP_TCPRST on the subflow (RFC 8684 §3.5 Option R), at the seq it expects."""
        counters = self.counters
        counters[why] += 1
        counters[Counter.AbortTX] += 1
        mptcp = (MpFastclose(flow.remote_key), MpTcpRst(False, MPTCP_RST_EUNSPEC))
        to_server = _segment_to_server(pkt, pkt.seq, RST | ACK, 0, mptcp)
        # The guest's rcv_nxt is its last ack, or (bytes it got and has not acked yet) the end
        # of what went to it in order: a RST at each, so that one is exact (RFC 5961).
        actions = [Drop("stream cannot continue exactly: both ends reset"), Inject(to_server)]
        if flow.mp is not None:
            actions += [Inject(_segment_to_guest(pkt, (flow.server_isn + r) & M32))
                        for r in MP.guest_rst_at(flow, flow.mp)]
        else:
            sf = flow.sf
            acked = (flow.server_isn + flow.rcv_rel) & M32
            sent = (flow.server_isn + sf.rcv_max - sf.off) & M32
            actions.append(Inject(_segment_to_guest(pkt, acked)))
            if seq_before(acked, sent):
                actions.append(Inject(_segment_to_guest(pkt, sent)))
        flow.fastclosed = True
        return actions

    def _h_fastclose(self, flow, pkt, data, ctx):
        """MP_FASTCLOSE with our key (§3.5): the connection is gone; the guest gets a RST.
        Option A (on an ACK): "Host B answers on the same subflow with a TCP RST", so we send
        the server a RST (with MP_TCPRST, as Linux's resets carry) at the seq it expects;
        otherwise it retransmits the MP_FASTCLOSE. Option R (on a RST): nothing to answer."""
        self.counters[Counter.FastCloseRX] += 1
        options = strip_mptcp(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
        seq = (flow.server_isn + flow.rcv_rel) & M32  # exactly the guest's rcv_nxt: it is taken
        if pkt.flags & RST:
            return [Rewrite(rewrite(data, pkt, seq=seq, options=options)), *_rst_past_ack(flow, pkt)]
        self.counters[Counter.FastCloseRstTX] += 1
        end = (pkt.seq + pkt.payload_len + (1 if pkt.flags & FIN else 0)) & M32
        rst = _segment_to_server(pkt, end, RST | ACK, 0, (MpTcpRst(False, MPTCP_RST_EUNSPEC),))
        return [Rewrite(rewrite(data, pkt, seq=seq, flags=RST | ACK, options=options)), Inject(rst),
                *_rst_past_ack(flow, pkt)]

    # -- helpers -----------------------------------------------------------------------------

    def _stripped(self, pkt, data: bytes):
        """The packet without its MPTCP options (ACCEPT when it has none)."""
        start = pkt.ip_hlen + TCP_HLEN
        if pkt.payload_off == start or not parse_options(data, start, pkt.payload_off).mptcp:
            return ACCEPT
        return _rewrite(without_mptcp(data, pkt))

    def _room(self, pkt, data: bytes, opt, raw=None) -> bytes | None:
        """The guest's options (or `raw` instead) plus `opt` in 40 bytes: MPTCP wins over
        options the wire layer does not know and SACK blocks, timestamps stay. None (counted)
        when even that does not fit."""
        start, end = pkt.ip_hlen + TCP_HLEN, pkt.payload_off
        try:
            return build_options(strip_mptcp(data, start, end) if raw is None else raw, (opt,))
        except WireError:
            pass
        o = parse_options(data, start, end) if raw is None else parse_options(raw, 0, len(raw))
        # re-encoded from what parse_options knows (MSS, window scale, SACK-permitted,
        # timestamps, SACK): options it does not know (TCP-MD5, TCP-AO, experimental ones)
        # are dropped here, then SACK blocks one by one. (No Linux server converts such a
        # flow: Linux turns MPTCP off on TCP-MD5 sockets, so their SYN/ACK falls back.)
        for n in range(len(o.sack), -1, -1):
            tcp = encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, o.sack[:n])
            try:
                options = build_options(tcp, (opt,))
            except WireError:
                continue
            if n < len(o.sack):
                self.counters[Counter.SackDropped] += 1
            return options
        self.counters[Counter.OptionSpaceExhausted] += 1
        return None

    def _clamp_mss(self, raw: bytes, ip_version: int) -> bytes:
        """`raw` with its MSS option lowered to the limit for DSS-carrying segments."""
        limit = self._mss_limit[ip_version]
        i = _option_at(raw, TCPOPT_MSS, TCPOLEN_MSS)
        if i >= 0 and (raw[i + 2] << 8 | raw[i + 3]) > limit:
            self.counters[Counter.MSSClamped] += 1
            return raw[: i + 2] + limit.to_bytes(2, "big") + raw[i + 4 :]
        return raw


def _guest_mss(mss: int) -> int:
    """Flow.guest_mss of the MSS option of the guest's SYN (-1: none, 0 kept)."""
    return 0 if mss < 0 else max(mss, 88)


def _segment_to_server(pkt, ack: int, flags: int, window: int, mptcp, tcp: bytes = b"") -> bytes:
    """A segment without payload from the guest's address to the server (the reverse of the
    server's `pkt`), at the seq the server expects (`pkt.ack`), with the TCP options `tcp`
    and these MPTCP options."""
    bare = _bare(pkt.version, pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, ack, flags, window)
    return rewrite(*bare, options=build_options(tcp, tuple(mptcp)))


def _rst_past_ack(flow, pkt) -> list:
    """Multipath: the RSTs for the guest past the one at its last ack (multipath.guest_rst_at,
    the one rule for them: at the end of what went to it, when that is past its last ack)."""
    if flow.mp is None:
        return []
    return [Inject(_segment_to_guest(pkt, (flow.server_isn + r) & M32)) for r in MP.guest_rst_at(flow, flow.mp)[1:]]


def _resettable(flow) -> bool:
    """Does the server treat the flow as MPTCP (so that, forgotten, its packets would pass
    unconverted to a guest that does not speak it)? Converter.stop, eviction."""
    state = flow.state
    return not flow.fastclosed and (state is ESTABLISHED or state is CLOSING or state is MPC_PENDING
                                    or state is SYN_RCVD)


def _segment_to_guest(pkt, seq: int) -> bytes:
    """A bare RST from the server's address to the guest (the direction of the server's
    `pkt`) at guest seq `seq`."""
    return _bare_rst(pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport, seq)


def _peer_reset(version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                peer_key) -> list:
    """An orphan's reset towards its peer at its rcv_nxt `seq`: with the peer's key, an ACK
    (of `ack`) carrying MP_FASTCLOSE first, so that its whole MPTCP connection closes (RFC
    8684 §3.5 Option A); then a RST."""
    out = []
    if peer_key is not None:
        out.append(Inject(rewrite(*_bare(version, src, dst, sport, dport, seq, ack, ACK, 0),
                                  options=build_options(b"", (MpFastclose(peer_key),)))))
    out.append(Inject(_bare_rst(version, src, dst, sport, dport, seq)))
    return out


def _question(version: int, src: bytes, dst: bytes, sport: int, dport: int, held) -> bytes:
    """The question to a guest about a held segment `held` (orphans.question): an ACK half
    the sequence space away from its numbers, with its window."""
    seq, ack = OR.question(held.seq, held.ack)
    return build_segment(version, src, dst, sport, dport, seq, ack, ACK, held.window)


def _bare_rst(version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    """A RST without ACK, options or payload at `seq` (what every reset of ours sends: an
    exact rcv_nxt is accepted, RFC 5961 §3.2)."""
    return build_segment(version, src, dst, sport, dport, seq, 0, RST, 0)


def _bare(version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
          flags: int, window: int) -> tuple:
    """An IP + TCP header without options or payload, with a correct TCP checksum (rewrite
    keeps a checksum's error: it must start right), and its Packet."""
    out = build_segment(version, src, dst, sport, dport, seq, ack, flags, window)
    return out, parse_packet(out)


def _answerable(mpc, version: int) -> bool:
    """A peer's SYN's MP_CAPABLE we can answer: our version (v1 SYNs carry no key, v0 SYNs
    the sender's). (B set, or no H: parse_mptcp gave None already, RFC 8684 §3.1.)"""
    return mpc.version == version and (mpc.sndr_key is None) == (version == 1)


def _dsn64(flow, dss) -> int:
    """The 64-bit DSN of a server mapping (a 32-bit one widened against the latest
    data-level position, the guest's ack: Flow.remote_rel)."""
    d = flow.remote_rel(dss.data_seq, dss.dsn64)
    if d < 0:
        d = 0
    return (flow.remote_idsn + d) & M64


def _csum_ok(flow, pkt, data: bytes, dss) -> bool:
    """Does the server segment pass its DSS checksum (RFC 8684 §3.3.1)? Only a segment that
    carries its whole mapping is judged here (True otherwise; see _csum_late_bad)."""
    fin_len = 1 if dss.data_fin else 0
    rel = (pkt.seq - flow.sf.remote_isn) & M32
    if rel != dss.subflow_seq or pkt.payload_len != dss.data_len - fin_len:
        return True
    payload = data[pkt.payload_off : pkt.length]
    return dss_checksum(_dsn64(flow, dss), dss.subflow_seq, dss.data_len, payload) == dss.csum


def _csum_late_bad(flow, sf, pkt, data: bytes, ssn: int, dlen: int, dfin: bool, csum: int, r: int,
                   d: int) -> bool:
    """Does this segment complete a mapping that spans segments (in whatever order its
    pieces came: Converter._csum_step) and fail its DSS checksum (RFC 8684 §3.3.1)? The
    mapping as its DSS gave it: subflow seq `ssn`, data length `dlen`, DATA_FIN `dfin`,
    checksum `csum`, at relative DSN `d` (the segment's own, or the last one: sf.rmap_*)."""
    if dfin and dlen == 1 and ssn == 0:
        return False
    fin_len = 1 if dfin else 0
    m_r = _unwrap(ssn, r)
    m_len = dlen - fin_len
    plen = pkt.payload_len
    if r == m_r and plen == m_len:
        # one segment, judged on its own (_csum_ok); pieces of it summed before must sum
        # alike in it, or the guest may have read a changed byte of theirs
        if sf.ck_maps:
            i = ck_find(sf.ck_maps, m_r, m_len)
            if i >= 0 and not ck_runs_match(sf.ck_maps[i], data, pkt.payload_off, r):
                return True
        return False
    if not sf.ck_maps or r < m_r or r + plen > m_r + m_len:
        return False  # no piece summed before: not complete; not inside the mapping:
        #               _in_segment drops it
    if r + plen <= sf.rcv_end():
        return False  # nothing new (_csum_step takes it as it is)
    i = ck_find(sf.ck_maps, m_r, m_len)
    if i < 0:
        return False
    got = ck_piece(sf.ck_maps[i], data, pkt.payload_off, r, plen)
    if got is None:
        return False  # not summed: _csum_step drops it
    total, runs = got
    if len(runs) != 2 or runs[0] != m_r or runs[1] != m_r + m_len:
        return False  # not complete yet
    return not ck_verified(total, flow.remote_idsn + d, ssn, dlen, csum)


def _sack_above(data: bytes, pkt, ack: int, sub_ack: int):
    """The options of the server's segment `pkt` for a guest whose ack is lowered to `ack`
    below the server's subflow ack `sub_ack`, or None when they need no change. A block the
    server sends below its subflow ack (a D-SACK: bytes it had) would lie above the guest's
    ack, a SACK of the guest's unacknowledged head, and a head SACKed but never acked is
    reneging to Linux: it waits for its RTO, resends the head alone, backed off, and never
    the lost bytes above (an upload stalled up to 28 s: test_dsack_under_lowered_ack.py).
    Such a block goes; one across `sub_ack` keeps its part above; one below `ack` stays (a
    D-SACK for the guest too)."""
    o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    if not o.sack:
        return None
    blocks = []
    changed = False
    for left, right in o.sack:
        if not seq_before(left, sub_ack) or not seq_before(ack, right):
            blocks.append((left, right))
        elif seq_before(sub_ack, right):
            blocks.append((sub_ack, right))
            changed = True
        else:
            changed = True
    if not changed:
        return None
    return encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, tuple(blocks))


def _without_sack_perm(raw: bytes) -> bytes:
    """The option area `raw` with its SACK_PERM turned into NOPs (same length)."""
    i = _option_at(raw, TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM)
    if i < 0:
        return raw
    return raw[:i] + bytes((TCPOPT_NOP, TCPOPT_NOP)) + raw[i + 2:]


def _option_at(raw: bytes, want: int, want_size: int) -> int:
    """Offset of the first option of kind `want` and length `want_size` in the TCP option
    area `raw`, or -1 (the walk stops at EOL or a malformed length)."""
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            break
        size = raw[i + 1]
        if size < 2 or i + size > n:
            break
        if kind == want and size == want_size:
            return i
        i += size
    return -1


def _not_tcp(data: bytes) -> Counter:
    """Why parse_packet refused `data`: another protocol, or a broken packet."""
    n = len(data)
    if n >= 20 and data[0] >> 4 == 4 and data[9] != 6:
        return Counter.NotTCP
    if n >= 40 and data[0] >> 4 == 6 and data[6] != 6:
        return Counter.NotTCP
    return Counter.BadPacket
