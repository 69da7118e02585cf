# cython: nonecheck=True
"""Multipath (issue 6; MULTIPATH.md): the extra subflows of a converted flow, its upload run
map and its scheduler.

A flow goes multipath once it is established, the converter has live uplinks and the join
policy says so (`join_after_bytes` moved or `join_after_ms` lived): joins go over every uplink
to the server's initial address (unless its MP_CAPABLE C bit forbids that) and to each address
it announced with ADD_ADDR (`peer_option`: HMAC checked, echoed). Then `MpConn` holds, per
flow:

* `paths`: one `Path` per subflow. Path 0 is the guest's own connection (subflow 1: the
  guest's 4-tuple, the guest's ISN); paths 1.. are the middlebox's own endpoints, one per
  uplink: its address, a port of the join range, a random ISN (RFC 8684 §3.2).
* `runs`: the upload run map, `[d0, d1, path, s0]` per run of data bytes (relative to the
  guest's ISN, which is the data sequence space: flow.py) sent contiguously on one subflow
  from its relative subflow seq `s0`. Ordered by `d0`, never overlapping: each byte has one
  home, where a guest retransmission of it must go (RFC 8684 §3.3.6; LESSONS.md trap 2). At
  most `MAX_RUNS` runs; a run leaves once its bytes are data-acked and subflow-acked.
* the data level: `snd_nxt` (end of the guest data placed), `data_ack` and `wnd_edge` (the
  server's largest DATA_ACK and right edge, never decreasing, RFC 8684 §3.3.5).

Download needs no map: the server maps every segment (PROTOCOL.md), the converter places its
bytes at the guest seq of their DSN and acknowledges each extra subflow itself on arrival
(MULTIPATH.md §4, decision of issue 6). Subflow 1 keeps its single-path receive logic
(`flow.Subflow`) but is acknowledged on arrival too (`Subflow.arrival`): the guest's ACKs
carry the end of what subflow 1 received without a hole, and its data-level ack becomes
the DATA_ACK only.

What the guest sees: one TCP connection. ACKs that do not move the data level are data-level
duplicates; they reach the guest only when they are also subflow-level duplicates on the
subflow that holds the byte at DATA_ACK (LESSONS.md trap 3), or when they change the guest's
data-level SACK blocks (`_sack_news`). The guest keeps SACK (MULTIPATH.md §3.5 (c)): what it
gets carries data-level blocks (`guest_sack`: bytes above DATA_ACK some subflow's cumulative
ACK or SACK covers, up to the first hole not known lost: `_hole_evident`), never subflow 1's
own; its own blocks reach subflow 1 translated, for bytes subflow 1 carried only. (§3.5 (a), stripping SACK_PERM, left
the guest one hole per RTT and go-back-N after each RTO: uploads at 14-18 of 100 Mbit/s.) Joins
negotiate no timestamps, so no subflow-k TSval ever reaches the guest (PAWS, trap 9).

Failure (MULTIPATH.md §5): a subflow with data out and no progress while another progressed
goes STALE (no new data on it), and DEAD after `DEAD_AFTER` more seconds or at once when its
uplink goes down: it is reset (MP_TCPRST), REMOVE_ADDR tells the server to stop using the
address, the guest gets three duplicate ACKs so that it retransmits now, and its
retransmissions of bytes whose home was the dead subflow become new mappings on a live one
(`ReinjectTX`).

The subflow state machine is `table.SUBFLOW_TABLE`; this module classifies and runs its
handlers (`_j_<name>`). Pure Python in both runs (the compiled converter calls it only for
multipath flows): nothing here is on the single-path per-packet path.
"""

from __future__ import annotations

import bisect
import secrets
import socket

from middlebox.core import announce as AN
from middlebox.core import policy as POL
from middlebox.core.counters import Counter
# relative: the compiled twin (middlebox._ccore.multipath) calls the compiled flow helpers
from .flow import _unwrap, ck_commit, ck_complete, ck_step, ck_verified, options_without_sack, resend_cut, ck_runs_match
from middlebox.core.events import Drop, Inject, Rewrite
from middlebox.core.table import SUBFLOW_TABLE, State, SubflowInput, SubflowState
from middlebox.wire import (
    AddAddr,
    Dss,
    MpJoinAck,
    MpJoinSyn,
    MpFastclose,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    WireError,
    add_addr_hmac,
    build_options,
    build_segment,
    dss_checksum,
    encode_tcp_options,
    join_hmac,
    key_token,
    mptcp_options,
    new_nonce,
    parse_options,
    rewrite,
)
from middlebox.wire.packet import TCP_OFF_CHECK

SS, SI = SubflowState, SubflowInput

# Actions and DATA_ACK options made without the frozen dataclasses' __init__ (object.__setattr__
# from Python per field: Dss(data_ack, ack64) ~0.75 us, Inject ~0.18), the same values, as
# converter._rewrite makes a Rewrite: a join's data segment makes four of them.
_new = object.__new__
_set_inject = Inject.data.__set__
_DSS_SET = (Dss.data_ack.__set__, Dss.ack64.__set__, Dss.data_seq.__set__, Dss.dsn64.__set__,
            Dss.subflow_seq.__set__, Dss.data_len.__set__, Dss.csum.__set__, Dss.data_fin.__set__)
_CONSUMED = Drop("extra subflow segment: consumed")


def _inject(data: bytes) -> Inject:
    """`Inject(data)`."""
    action = _new(Inject)
    _set_inject(action, data)
    return action


def _dss_ack(data_ack: int, ack64: bool) -> Dss:
    """`Dss(data_ack, ack64)`: a DATA_ACK alone."""
    d = _new(Dss)
    s = _DSS_SET
    s[0](d, data_ack)
    s[1](d, ack64)
    s[2](d, None)
    s[3](d, False)
    s[4](d, None)
    s[5](d, None)
    s[6](d, None)
    s[7](d, False)
    return d

_ESTABLISHED = State.ESTABLISHED
_CLOSING = State.CLOSING
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ECE, CWR = 0x40, 0x80
TCP_HLEN = 20
MAX_RUNS = 128  # upload runs per multipath flow: bursts of ~22 KB, so >= 2.8 MB in flight; ~28 KiB
#                 at most with 3 subflows (measured with tracemalloc; the issue's budget: 32 KiB)
RUNS_SPARE = 16  # runs left when super-packets stop getting whole-mapping runs of their own (send)
MAX_SACKED = 8  # SACK ranges kept per subflow (Path.sacked, _board): 16 ints
MAX_UNSURE = 8  # DSN ranges per flow whose subflow bytes the server may hold under another DSN (_unsure_add)
MAX_OOO = 8  # out-of-order intervals kept per extra subflow (download)
LOSSY_CUT = 1.0  # seconds after a loss shown on subflow 1 that its super-packets go out cut
OVER_KEEP = 10.0  # seconds a flow reset for want of any path (_no_path_left) stays, for stray packets
MAX_PATHS = 8  # subflows a flow may open over its life (rejoins after link flaps included)
# a subflow dead by the clocks (stale, then DEAD_AFTER) while its uplink stayed up: a join over
# that uplink again after this long, doubling per retry of the flow up to 2**REJOIN_DOUBLINGS
# times it (a path black-holed beyond our uplink comes back; a join lost for good cost the
# flow that uplink's share until it closed), keeping one of MAX_PATHS for an uplink that
# comes back up (uplink_event)
REJOIN_WAIT = 1.0
REJOIN_DOUBLINGS = 5
PROBATION_BYTES = 64 * 1024  # a retry's data the server must ack before it counts as a path (_on_probation) ...
PROBATION_WAIT = 1.0  # ... and the least it waits for an answer (a guest's RTO may repair a tail loss)
STRANDED_WAIT = 1.0  # seconds a closing flow no subflow can carry again waits before the guest's reset (_stranded)
FIN_TRIES = 6  # our subflow-1 FIN held back from the guest's (send), sent at most this often ...
FIN_WAIT = 0.5  # ... first after this (2 srtt when larger), doubling (31.5 s in all)
MAX_PEER_ADDRS = 8  # server addresses (ADD_ADDR) kept per flow as join targets
BURST = 16 * 1400  # bytes in a row on one subflow before the scheduler chooses again (a GSO
#                    super-packet counts for its length); fewer on a much slower one (pick)
SHARE_TIME = 0.002  # seconds of its delivery rate a subflow takes of one guest super-packet
#                    at most; the rest is scheduled again (_slow_share)
IDLE_DOUBLING = 0.1  # seconds: an idle subflow's old rate estimate counts double per this
#                     much idle time (pick), up to the best subflow's rate
CAP_DEPTH = 0.05  # seconds of its cap a capped subflow's token bucket holds (cost policy)
SYN_RTO = (1.0, 2.0, 4.0)  # join SYN retransmissions, then give up (MULTIPATH.md §2)
REPAIR_TRIES = 3  # repairs of one hole before the guest is told of it after all
UNDO_MAX = 8  # --dsack-undo: guest resends waiting for their D-SACK, per flow (_undo_add)
# --dsack-undo: a resend of the data-level head after the guest sent nothing for this long,
# or this long after the DATA_ACK last moved, is taken for its RTO's (Linux: at least 200 ms
# after the head was sent and after the last ACK of new data; a tail loss probe, new bytes,
# may come in between: review of 4884d82). A D-SACK in its loss state undid the RTO and
# unmarked every segment it had marked lost: it waited for the next, backed-off RTO for each
# (a stall). A fast retransmit of the head taken for one only forgoes an undo
GUEST_RTO_QUIET = 0.1
INWIN_MAX = 32  # --dsack-undo: ranges a join sent within its own window, kept per join (_inwin_add)
REPAIR_SEGS = 8  # segments resent at once from a hole's start (up to the server's SACK)
REPAIR_ENTRY = 200  # bytes counted per kept segment beyond its payload (list, bytes, Dss objects)
# a join's own congestion window while repair is on (_cwnd_*): RFC 8312 §4.2's AIMD, the
# TCP-friendly region of the CUBIC a Linux subflow runs: cut to BETA of the flight per loss
# event (one per window of data), grow by ALPHA segments per window after slow start
CWND_INIT = 10  # segments (RFC 6928)
CWND_BETA = 0.7
CWND_ALPHA = 3.0 * (1.0 - CWND_BETA) / (1.0 + CWND_BETA)
ACK3_RTO = 0.2  # third ACK repeated until the server's ACK ...
ACK3_TRIES = 5  # ... this many times, then reset
PASSIVE_WAIT = 10.0  # inbound: a peer's join whose third ACK has not come by then is reset
MPTCP_RST_ERESOURCE, MPTCP_RST_EPROHIBIT = 2, 3  # MP_TCPRST reasons (RFC 8684 §3.6)
STALE_MIN = 0.3  # seconds without progress (at least; 4 srtt when larger) ...
DEAD_AFTER = 1.0  # ... then this long stale: dead
PROBE_ANSWER = (0.1, 0.5)  # seconds the answer to a stale probe may take: 2 srtt within these
SILENT_ALONE = 2.0  # no progress this long while another subflow is established: stale even
#                     though none progressed (the guest, blocked by the hole, sends nothing new)
WND_ROOM_SEGS = 4  # guest_win: a guest without SACK this near its window's edge sees it open
FILL_MAX = 64 * 1024  # bytes of an acked hole filled per stale timeout (_fill_acked_hole)
FILL_AGAIN = 1.0  # s after a fill without progress, a subflow alone fills again (tick)
DACK_FLUSH = 0.005  # seconds a DATA_ACK held back from subflow 1 (a guest ACK that would have been
#                    a subflow-level duplicate there) may wait for another ACK to carry it
DOUBT_WAIT = 0.01  # seconds a join's DATA_ACK is held back for a window Linux may still hold
#                   (wnd_doubt) before a copy of the last segment it surely took settles it
#                   (_doubt_resolve): reordering on a path settles well within it
DOUBT_PUSH_MAX = 3  # times our segments may put a due copy off by DOUBT_WAIT (_join_dack)
REOPEN_POLL = 0.1  # seconds between looks at a guest window still 0, after a zero copy (_reopen)
PLAN_EVERY = 0.25  # seconds between two looks of the cost policy at a flow's rates (issue 10)
HOLE_RTT = 0.05  # seconds: the RTT a subflow without a sample is taken to have (_hole_evident)
ANSWER_WAIT = 1.0  # seconds an answer to a probe is awaited (_probe_answer, _sf1_dup): the
# guest rate-limits its answers to one per 0.5 s (tcp_oow_rate_limited)
CHALLENGE_GAP = 0.5  # seconds between two ACKs answering unacceptable segments on a subflow
#                      (RFC 5961 §7's rate limit; Linux's tcp_invalid_ratelimit is 500 ms)
HOLE_WAIT = 1.0  # seconds the guest may take to ack server data acked on arrival (GuestHoleSuspect)
SUSPECT_WAIT = 0.2  # subflow 1 silent this long (at least; 2 srtt when larger) after an uplink
#                     went down: it was on that uplink, it is dead
RATE_MIN = 125000.0  # bytes/s floor of a delivery-rate estimate (1 Mbit/s)
MPTCP_RST_EMPTCP = 1  # MP_TCPRST reason "MPTCP-specific error" (RFC 8684 §3.6)
MPTCP_RST_EUNSPEC = 0
ALIVE = (SS.ESTABLISHED, SS.STALE)


class Path:
    """One subflow of a multipath flow (index 0: the guest's own connection). Relative
    subflow seqs are 64-bit, the SYN is 0 on both sides. Never holds a key."""

    __slots__ = (
        "index", "flow", "uplink", "state", "version", "local", "lport", "remote", "rport",
        "local_isn", "remote_isn", "lnonce", "rnonce", "backup", "addr_id",
        "snd_una", "snd_nxt", "snd_wnd", "rwscale", "fin_sent",
        "rcv_nxt", "ooo", "rcv_fin",
        "srtt", "rttvar", "rtt_ssn", "rtt_at", "rate", "rate_bytes", "rate_at",
        "progress_at", "stale_at", "dups", "tries", "timer", "tx_bytes", "rx_bytes", "born",
        "heard_at", "suspect_at", "sack", "sack_recent",
        "rx_rate", "rx_mark",  # download delivery rate (bytes/s) and rx_bytes at the last look
        # what the server SACKed on this subflow above its cumulative ACK (_board):
        "sacked",  # ((start, end), ...) relative, ascending
        "ck_maps",  # running DSS checksums of the server's mappings, any order (flow.ck_step)
        "passive",  # inbound (issue 9): the peer opened it to the guest's address, we answered
        "fill_at",  # progress_at when tick last looked for a fill (-1: never, or re-armed: _rearm_fill)
        "refill_at",  # when a subflow alone looks for a fill again after one without progress (0: no)
        "refill_n",  # fills in a row so sent again without progress (the wait doubles: tick)
        "retry",  # a join opened again because its uplink's subflow died by the clocks (_retry_joins)
        "acked_at",  # the server's last ack of new bytes here: progress_at without the fills
        "mss",  # the MSS the peer announced on this subflow (0: not known; passive joins)
        "told_at",  # progress_at when the clock last looked at this subflow's silent tail (-1: never)
        "cap", "tokens", "tok_at",  # cost policy: the upload cap (bytes/s, 0: none) and its bucket
        "app_lim",  # it had nothing in flight since the rate was last sampled: the sample is low
        "beyond_hi",  # end of the server bytes taken here beyond the guest's window (it drops them)
        # the window the server holds for this join (bytes), as Linux takes a window update
        # (tcp_may_update_window): from a segment acking more, or with a later seq, or larger
        "wnd_held", "wnd_ack", "wnd_seq",
        # a window Linux may still hold for this join although the model says it took a
        # smaller one since (that segment may be lost or overtaken: 0 when none), when the caps
        # counted with it and a copy of the last segment it surely took is due (0.0: none;
        # -1.0: due DOUBT_WAIT after the clock's next look),
        # and that segment's relative seq, ack and window (bytes), for the copy (_doubt_resolve);
        # when that copy had a zero window, when our ordinary ACK reopens it (0.0: none)
        # how often segments of ours put that copy off (at most DOUBT_PUSH_MAX: _join_dack),
        # and the largest window of ours sent since that may reach Linux after the copy
        "wnd_doubt", "doubt_at", "sure_seq", "sure_ack", "sure_win", "reopen_at", "doubt_push",
        "doubt_late",
        "tw_reset",  # the SYN attempt (tries) whose stray ACK we answered with a RST (-1: none)
        # repair (Config.repair_bytes): [[ss, end, Dss, payload, psh], ...] sent and not yet
        # acked, in order; the end of the last repair, when it went, how often for that hole
        "rtx", "rep_hi", "rep_at", "rep_n",
        # the join's congestion window while repair is on (bytes, 0: none), its slow-start
        # threshold, snd_nxt at the last cut (no other cut, no growth, below it), its segment
        # size, and the end of the last bytes it was given with room in the window (_admit)
        "cwnd", "ssthresh", "recover", "smss", "adm_end",
        # the round of acks now counted for growth (snd_nxt when it began) and what is left
        # of its credit: at most a window's worth of acked bytes grows the window per round
        "grow_end", "grow_left",
        "rep_nxt",  # snd_nxt when a repair last went (_repair): an ACK of it short of that stops at a loss
        "inwin",  # --dsack-undo: [s, e) relative seqs sent within the join's own window (None: off)
        "chal_at",  # when we last answered an unacceptable segment here with an ACK (-1: never)
        # snd_nxt when a resend last went into a hole (_into_hole; 0: none), that
        # fill's end, and the snd_una an ACK past the fill stopped at, below fill_hi (-1:
        # none): bytes sent before the fill that its ACK did not cover are lost on a FIFO
        # path (as RACK reasons)
        "fill_hi", "fill_end", "lost_una",
        "fill_lo",  # where that fill began (_fill_lost)
        "fill_m",  # the mapping over several segments the last fill went into (None: none)
        "loss_at",  # when the server last showed a loss here (-1: never): SACK blocks; without
        #            SACK, a duplicate ACK with an unchanged window (_ack_info)
        # the highest end of the server's SACK blocks here, and when it last grew (-1: never):
        # the path delivers although its cumulative ACK waits at a hole (_news)
        "sack_hi", "sack_at",
        # seqs [gap_lo, gap_hi) where _board forgot SACKed ranges when its record was full
        # (0, 0: none): no hole is known there above snd_una
        "gap_lo", "gap_hi",
        "sack_tot",  # bytes its SACK record here covered (news when it grows)
        "rtx_at",  # when bytes below sack_hi (into a hole) last went out here (-1: never; _answered)
        "owe_at",  # when it last stopped being _answered by a send (-1: never; _base)
        # the stale probe (_j_stale): when it last went (-1: never), whether it is still open
        # (the first pure ACK that may be its answer closes it, _ack_info), and when the last
        # answer came (-1: never; _news)
        "sprobe_at", "sprobe_open", "alive_at",
        "sent_at",  # when bytes last went out here, new, resent or a fill (-1: never; _waits)
    )

    def __init__(self, index: int, flow, uplink, version: int, local: bytes, lport: int,
                 remote: bytes, rport: int, now: float) -> None:
        self.index = index
        self.flow = flow
        self.uplink = uplink  # config.Uplink, or None for subflow 1
        self.state = SS.SYN_SENT
        self.version = version  # IP version
        self.local, self.lport, self.remote, self.rport = local, lport, remote, rport
        self.local_isn = 0
        self.remote_isn = 0
        self.lnonce = 0
        self.rnonce = 0
        self.backup = bool(uplink is not None and uplink.backup)
        self.addr_id = 0 if uplink is None else uplink.id
        self.snd_una = 1
        self.snd_nxt = 1
        self.snd_wnd = 65535
        self.rwscale = 0
        self.fin_sent = False
        self.rcv_nxt = 1
        self.ooo = []  # [[start, end], ...] received beyond rcv_nxt (extra subflows)
        self.rcv_fin = False
        self.srtt = 0.0
        self.rttvar = 0.0  # RFC 6298's RTTVAR (seconds), with srtt
        self.rtt_ssn = 0
        self.rtt_at = 0.0
        self.rate = 0.0
        self.rate_bytes = 0
        self.rate_at = now
        self.app_lim = True
        self.chal_at = -1.0
        self.fill_hi = 0
        self.fill_end = 0
        self.fill_lo = 0
        self.lost_una = -1
        self.fill_m = None
        self.loss_at = -1.0
        self.sack_hi = 0
        self.gap_lo = self.gap_hi = 0
        self.sack_at = -1.0
        self.sack_tot = 0
        self.rtx_at = -1.0
        self.owe_at = -1.0
        self.sprobe_at = -1.0
        self.sprobe_open = False
        self.alive_at = -1.0
        self.sent_at = -1.0
        self.wnd_held = -1  # none yet: the first window is taken
        self.wnd_ack = 0
        self.wnd_seq = 0
        self.wnd_doubt = 0
        self.doubt_at = 0.0
        self.sure_seq = self.sure_ack = self.sure_win = 0
        self.reopen_at = 0.0
        self.doubt_push = 0
        self.doubt_late = 0
        self.tw_reset = -1
        self.rtx = []
        self.rep_hi = 0
        self.rep_at = 0.0
        self.rep_n = 0
        self.cwnd = 0
        self.ssthresh = 1 << 62
        self.recover = 0
        self.smss = 1400
        self.adm_end = 0
        self.grow_end = 0
        self.grow_left = 0
        self.rep_nxt = 0
        self.inwin = None
        self.progress_at = now
        self.acked_at = now
        self.stale_at = 0.0
        self.dups = 0
        self.tries = 0
        self.timer = 0.0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.rx_rate = 0.0
        self.rx_mark = 0
        self.born = now
        self.heard_at = now  # the last segment from the server on this subflow
        self.suspect_at = 0.0  # subflow 1: an uplink went down then (we do not know its route)
        self.sacked = ()
        self.sack = False  # extra subflows: SACK_PERM in the server's SYN/ACK (our ACKs carry SACK)
        self.sack_recent = -1  # subflow seq (relative) of the latest out-of-order arrival
        self.beyond_hi = 0
        self.ck_maps = None
        self.passive = False
        self.fill_at = -1.0
        self.refill_at = 0.0
        self.refill_n = 0
        self.retry = False
        self.mss = 0
        self.told_at = -1.0
        self.cap = 0.0
        self.tokens = 0.0
        self.tok_at = now

    def __repr__(self) -> str:
        name = "guest" if self.uplink is None else self.uplink.name
        return f"<Path {self.index} {name} {self.state.name} una={self.snd_una} nxt={self.snd_nxt}>"

    def inflight(self) -> int:
        return self.snd_nxt - self.snd_una

    def usable(self) -> bool:
        return self.state is SS.ESTABLISHED


class MpConn:
    """The multipath part of one flow (see the module docstring). Bounded: at most
    1 + len(uplinks) paths, MAX_RUNS runs, MAX_OOO intervals per path."""

    __slots__ = ("paths", "runs", "snd_nxt", "data_ack", "wnd_edge", "last_pick", "burst_left",
                 "key", "guest", "gport", "server", "sport", "version", "dack_sent", "started_at",
                 "fwd_end", "hole_mark", "hole_at", "removed", "sf1_ack_out", "sf1_win_out",
                 "sf1_answer", "probe_at", "probe_on", "dack_out", "dack_due", "plan", "plan_at",
                 "plan_look", "plan_short", "sack_told", "sack_order", "unsure", "rm_owed", "over_at", "cwr_owed",
                 "orphan_hi", "rtx_bytes", "held", "counters", "fin_due", "fin_tries", "stranded_at",
                 "fin_refused", "csum_stuck", "gack_out", "gwin_out", "marks", "undo", "g_at",
                 "undo_hold", "da_at", "csum_moved", "retries", "retry_at", "retry_n")

    def __init__(self, key: tuple, version: int, now: float) -> None:
        self.paths = []
        self.runs = []
        self.snd_nxt = 1
        self.data_ack = 1
        self.wnd_edge = 1
        self.last_pick = -1
        self.burst_left = 0
        self.key = key
        self.guest, self.gport, self.server, self.sport = key
        self.version = version
        self.dack_sent = 0
        self.started_at = now
        # guest-side holes (issue 6: subflows are acked on arrival, so the server learns of a
        # byte the guest never got only from the DATA_ACK): the end of the server data sent on
        # to the guest, and a mark of it the guest's ack must pass within HOLE_WAIT
        self.fwd_end = 0
        self.hole_mark = 0
        self.hole_at = 0.0
        self.removed = []  # address ids a REMOVE_ADDR named: a rejoin takes a fresh one
        self.rm_owed = []  # ids of subflows that died while no subflow was alive to say so
        self.over_at = 0.0  # when _no_path_left reset the guest (0: never): forgotten OVER_KEEP later
        self.stranded_at = 0.0  # since when no subflow can carry the flow's close (_stranded; 0: not)
        self.fin_refused = False  # the server refused a join after the guest's FIN (_joinable)
        self.cwr_owed = False  # the guest's CWR went on no subflow-1 byte yet (send)
        self.orphan_hi = 0  # the end of the highest run a subflow held when it closed (_event)
        # download: what the server last heard on subflow 1 (its subflow ack, the raw window)
        # and the largest data-level ack (relative, as flow.rcv_rel) any of our ACKs carried;
        # a DATA_ACK held back (send) is due on some subflow by `dack_due` (0: none)
        self.sf1_ack_out = -1
        self.sf1_win_out = -1
        self.sf1_answer = 0.0  # when an old segment went to the guest: its answer is no duplicate
        self.probe_at = 0.0  # when the guest's probe went to the server (_guest_probe) ...
        self.probe_on = 0  # ... on which path
        self.dack_out = 0
        self.dack_due = 0.0
        # cost policy (issue 10): the uplink ids in use, when that last changed by rate, and
        # when the rates were last looked at (None: greedy, every uplink)
        self.plan = None
        self.plan_at = now
        self.plan_look = now
        self.plan_short = 0.0  # since when the flow is short of its target (policy.shortfall)
        self.sack_told = 0  # hash of the data-level SACK blocks _sack_news last saw
        self.sack_order = ()  # the guest's blocks, the one last sent to it first (guest_sack)
        self.unsure = []  # [d0, d1): DSNs whose subflow bytes the server may hold under another
        #                   DSN (_head_hole): guest_sack names none of them
        self.rtx_bytes = 0  # payload kept for repair on this flow's extra subflows
        self.held = [0]  # the converter's tally of it, all flows (set at start: repair_held)
        self.counters = None  # the converter's counters (set at start), for helpers without conv
        # subflow 1's TCP FIN when it did not go with the guest's (send, _fin_may_go): due by
        # `fin_due` (tick) once the server data-acked the DATA_FIN, sent `fin_tries` times
        self.fin_due = 0.0
        self.fin_tries = 0
        # with DSS checksums, the path whose hole the data-level head's resend waits behind,
        # where the swap (_head_hole) cannot go (-1: none): send resets it (_csum_stuck_reset)
        self.csum_stuck = -1
        self.csum_moved = False  # send put the head stuck there on another subflow
        # joins owed over an uplink that stayed up (_retry_later: its subflow died by the
        # clocks, or such a join failed to open; _no_path_left: nothing alive or opening):
        # (uplink id, remote, rport, due), due REJOIN_WAIT doubled per batch tried so far
        # (retry_n) after it was owed; retry_at the earliest due (tick; 0: none)
        self.retries = []
        self.retry_at = 0.0
        self.retry_n = 0
        # the ack (relative, as data_ack) and raw window of the latest segment to the guest
        # (guest_win: a guest without SACK needs its duplicate ACKs' windows unchanged)
        self.gack_out = -1
        self.gwin_out = -1
        # segment's marks for the packets we make of the flow's data and ACKs on the server
        # side (_data_on, _ack_on, _ack_on_sf1): the guest's DSCP, no ECN codepoint (joins
        # negotiate none), TTL 64 (send takes the DSCP from each guest packet)
        self.marks = (0, 64, 0)
        # --dsack-undo: [d0, d1) guest resends of an extra subflow's bytes, each named once to
        # the guest as a D-SACK (RFC 2883) when the DATA_ACK passes it (_undo_at)
        self.undo = []
        self.g_at = 0.0  # when the guest's last segment with payload came (send)
        # --dsack-undo: after a guest RTO nothing is named until the DATA_ACK passes this
        # (the guest's highest byte then: Linux leaves its loss state there)
        self.undo_hold = 0
        self.da_at = 0.0  # when the DATA_ACK last moved (_ack_info)


# -- packets ----------------------------------------------------------------------------------


def segment(version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
            flags: int, window: int, options: bytes = b"", payload: bytes = b"",
            marks: tuple = (0, 64, 0)) -> bytes:
    """A complete IPv4/IPv6 TCP segment with correct checksums; `marks`: its TOS (traffic
    class) byte, TTL (hop limit) and IPv6 flow label, see guest_marks. (wire.build_segment:
    one allocation in the wire twin, where this took two struct packs, a parse and three
    copies of the payload: ~a quarter of a join segment's cost, stop 43.)"""
    tos, ttl, label = marks
    return build_segment(version, src, dst, sport, dport, seq, ack, flags, window, options, payload,
                         tos, ttl, label)


def guest_marks(pkt, data: bytes, hop: int = 1) -> tuple:
    """(TOS / traffic class byte, TTL / hop limit - `hop`, IPv6 flow label) of the packet
    `data` (`pkt` its parse), for the pieces we send in its place on its own connection (a
    cut super-packet): its DSCP and ECN codepoint kept, the hop a forwarded packet would have
    counted (1: a guest segment, queued in prerouting before the kernel counts it; 0: a
    server segment towards the guest, queued in the forward hook after it did), and its
    flow label (ECMP keeps the pieces on the path of its other segments)."""
    if pkt.version == 4:
        return data[1], max(data[8] - hop, 1), 0
    return (data[0] & 0x0F) << 4 | data[1] >> 4, max(data[7] - hop, 1), (data[1] & 0x0F) << 16 | data[2] << 8 | data[3]


def _addr(text: str | None, version: int) -> bytes | None:
    if text is None:
        return None
    return socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, text)


# -- starting ------------------------------------------------------------------------------------


def wants_join(conv, flow, now: float) -> bool:
    """The join policy (issue 6): moved `join_after_bytes` or lived `join_after_ms`."""
    cfg = conv.config
    moved = flow.snd_end + flow.rcv_rel
    return moved >= cfg.join_after_bytes or (now - flow.born) * 1000.0 >= cfg.join_after_ms


def start(conv, key: tuple, flow, pkt, now: float) -> list:
    """Open the extra subflows of an established flow: MP_JOIN SYNs over every live uplink
    that has an address of the flow's family (MULTIPATH.md §2). Returns the Injects."""
    cfg = conv.config
    counters = conv.counters
    if flow.no_join:
        return []
    if len(conv.mp_flows) >= cfg.max_multipath_flows:
        counters[Counter.MultipathRefusedCap] += 1
        flow.no_join = True
        return []
    version = pkt.version
    guest, gport, server, sport = key
    if not flow.sf1_uplink and conv.routes:
        flow.sf1_uplink = route_uplink(conv.routes, version, server)
    mp = _new_mp(conv, flow, key, version, now)
    limit = _limit(conv, flow)
    actions = []
    if cfg.policy == POL.COST:
        # the cheapest live uplink first (subflow 1's included); joins over the others open
        # as backups, idle until the plan needs them (issue 10: switching costs no handshake)
        mp.plan = POL.plan(_uplink_states(conv, flow, mp, every=True), frozenset(), 0.0, now, now)
        mp.plan_at = now
    for up in () if flow.no_initial_join else cfg.uplinks:
        if len(mp.paths) >= limit:
            break
        if not conv.uplink_up.get(up.name, up.up) or up.id == flow.sf1_uplink:
            continue
        actions.extend(_open_join(conv, flow, mp, up, now))
    for entry in flow.peer_addrs or ():
        actions.extend(_join_peer(conv, flow, mp, entry, now))
    flow.no_join = True  # one attempt per flow (rejoins: uplink_event)
    if len(mp.paths) == 1:
        return actions
    _go_multipath(conv, flow, mp)
    return actions


def _new_mp(conv, flow, key: tuple, version: int, now: float) -> "MpConn":
    """A flow's multipath part, subflow 1 made from its single-path state."""
    guest, gport, server, sport = key
    mp = MpConn(key, version, now)
    mp.held = conv.repair_held
    mp.counters = conv.counters
    p0 = Path(0, flow, None, version, guest, gport, server, sport, now)
    p0.state = SS.ESTABLISHED
    p0.local_isn = flow.sf.local_isn
    p0.remote_isn = flow.server_isn
    p0.snd_nxt = flow.snd_end
    p0.snd_una = min(flow.data_acked, flow.snd_end)
    p0.rwscale = flow.server_wscale
    p0.snd_wnd = flow.server_window << flow.server_wscale
    mp.paths.append(p0)
    mp.snd_nxt = flow.snd_end
    mp.data_ack = p0.snd_una
    mp.wnd_edge = mp.data_ack + p0.snd_wnd
    return mp


def _go_multipath(conv, flow, mp) -> None:
    """The flow has extra subflows from now on (start, passive_join)."""
    if flow.snd_end > 1:  # (after: it consumes flow.gso_maps, which a single-path flow needs)
        mp.runs = _runs_of_single_path(flow)
    flow.mp = mp
    conv.mp_flows[mp.key] = flow
    sf = flow.sf
    p0 = mp.paths[0]
    # the window the server holds for subflow 1 (_sf1_out), from where the flow is: from 0, an
    # ack past 2^31 unwrapped negative and no ACK looked like it acked more (review)
    p0.wnd_ack = sf.rcv_base
    p0.wnd_seq = p0.snd_nxt
    p0.wnd_held = flow.guest_window << flow.guest_wscale
    p0.sure_seq, p0.sure_ack, p0.sure_win = p0.wnd_seq, p0.wnd_ack, p0.wnd_held
    sf.arrival = True  # subflow 1 is acknowledged on arrival from now on (flow.Subflow.record)
    for rg in sf.ranges:
        rg[2] = rg[0]
    conv.counters[Counter.MultipathStarted] += 1


def passive_join(conv, pkt, data: bytes, now: float, forwarded: bool = True) -> list:
    """Inbound (issue 9): an MP_JOIN SYN from the peer towards a guest (a client with another
    interface joins the connection at the guest's address), or towards an uplink address we
    announced to that peer (announce.py; Direction.LOCAL). Never the guest's: its token
    must name an established inbound connection, which gets a subflow answered by us (RFC 8684
    §3.2 as the responder: SYN/ACK with our nonce and truncated HMAC; the third ACK's HMAC is
    checked in _classify). Otherwise RST + MP_TCPRST.

    `forwarded`: the SYN is on its way to a guest (not Direction.LOCAL). It then goes on as a
    husk (_husk) instead of being dropped, so that conntrack confirms its entry: a join to a
    port-forwarded address reached us after DNAT, and only that entry turns our answer's
    source back into the address the peer joined (without it the SYN/ACK leaves from the
    guest's address and the peer never takes it; a masqueraded guest's would be renumbered)."""
    counters = conv.counters
    opt = next((o for o in mptcp_options(data, pkt) if type(o) is MpJoinSyn), None)
    flow = None
    at = None
    if opt is not None:
        key = conv.tokens.get(opt.token)
        f = conv.flows.get(key) if key is not None else None
        # at the guest's address and port (address id 0, the initial subflow's) or at an
        # uplink address and port we announced to this peer; a join elsewhere (another
        # guest's address, the other IP family) is not this connection's subflow
        if (f is not None and f.inbound == 2 and f.state is _ESTABLISHED and f.remote_key is not None
                and key_token(f.local_key, f.version) == opt.token):
            if pkt.dst == key[0] and pkt.dport == key[1]:
                flow = f
            else:  # at an uplink address we announced to this peer (announce.py), if it is up
                at = AN.target(f, pkt.dst, pkt.dport)
                if at is not None and conv.uplink_up.get(at.uplink.name, True):
                    flow = f
    reason = MPTCP_RST_EPROHIBIT
    mp = None
    slot = -1
    if flow is not None:
        mp = flow.mp
        limit = min(conv.config.max_subflows or MAX_PATHS, MAX_PATHS)  # (subflow 1 included)
        if mp is None:
            if limit <= 1:
                flow, reason = None, MPTCP_RST_ERESOURCE
            elif len(conv.mp_flows) >= conv.config.max_multipath_flows:
                counters[Counter.MultipathRefusedCap] += 1
                flow, reason = None, MPTCP_RST_ERESOURCE
        else:
            slot = _free_slot(mp)
            live = sum(1 for q in mp.paths if not _finished(q))
            if live >= limit or (slot < 0 and len(mp.paths) >= MAX_PATHS):
                flow, reason = None, MPTCP_RST_ERESOURCE
    if flow is None:
        return refuse_join(conv, pkt, reason, data if forwarded else None)
    if mp is None:
        key = conv.tokens[opt.token]
        if not flow.sf1_uplink and conv.routes:
            flow.sf1_uplink = route_uplink(conv.routes, pkt.version, key[2])
        mp = _new_mp(conv, flow, key, pkt.version, now)
        _go_multipath(conv, flow, mp)
    p = Path(len(mp.paths) if slot < 0 else slot, flow, None, pkt.version, pkt.dst, pkt.dport, pkt.src,
             pkt.sport, now)
    p.passive = True
    p.state = SS.SYN_RCVD
    p.backup = opt.backup  # the peer asks us to send on it only when nothing else is left
    p.addr_id = 0  # the guest's address is the connection's initial one
    if at is not None:  # an uplink address: its id, and the subflow dies with the uplink
        p.addr_id = at.addr_id
        p.uplink = at.uplink
        p.backup = p.backup or at.uplink.backup  # (our SYN/ACK asks the peer the same: B bit)
        counters[Counter.PassiveJoinAtUplink] += 1
    p.remote_isn = pkt.seq
    p.rnonce = opt.nonce
    p.local_isn = secrets.randbits(32)
    p.lnonce = new_nonce()
    o = _passive_syn(flow, p, pkt, data)
    p.rcv_nxt = 1
    p.timer = now + PASSIVE_WAIT
    if slot < 0:
        mp.paths.append(p)
    else:
        old = mp.paths[slot]
        _forget(conv, old)
        mp.paths[slot] = p
        if mp.last_pick == slot:
            mp.last_pick = -1
    conv.joins[(p.local, p.lport, p.remote, p.rport)] = p
    counters[Counter.PassiveJoinSynRX] += 1
    synack = _inject(_join_synack(conv, flow, p, o.wscale >= 0))
    if forwarded:
        counters[Counter.JoinSynHusk] += 1
        return [Rewrite(_husk(data, pkt)), synack]
    return [Drop("MP_JOIN SYN at an uplink address: answered by the middlebox"), synack]


def _husk(data: bytes, pkt) -> bytes:
    """A peer's MP_JOIN SYN made harmless for the guest it is forwarded to: the same
    addresses, ports and seq, but a bare RST (no ACK; a listener ignores it and a closed port
    never answers one, RFC 9293 §3.10.7.1-2), no TCP option at all (no MPTCP option ever
    reaches a guest), and a wrong TCP checksum besides (the right one XOR 0x5555, never its
    one's-complement twin). Either makes the guest drop it unanswered; the RST is what
    counts where the checksum is trusted unchecked (a veth peer takes CHECKSUM_NONE as
    verified). Conntrack confirms the SYN's entry as the husk leaves: what it is for
    (passive_join)."""
    out = bytearray(rewrite(data, pkt, ack=0, flags=RST, options=b"", full_checksum=True))
    off = pkt.ip_hlen + TCP_OFF_CHECK
    out[off] ^= 0x55
    out[off + 1] ^= 0x55
    return bytes(out)


def _passive_syn(flow, p, pkt, data: bytes):
    """What the peer's join SYN (the latest, when it is resent) offers: window scale and
    SACK hold as our SYN/ACK answers them (_join_synack), its MSS bounds our segments."""
    o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    p.rwscale = min(o.wscale, 14) if o.wscale >= 0 and flow.guest_wscale_seen else 0
    p.snd_wnd = pkt.window  # unscaled in a SYN
    p.sack = o.sack_perm
    p.mss = o.mss if o.mss > 0 else (536 if pkt.version == 4 else 1220)  # RFC 9293 §3.7.1
    return o


def _finished(q) -> bool:
    """A subflow that carries nothing any more: closed, or both FINs exchanged and ours acked."""
    return q.state is SS.CLOSED or (q.state is SS.CLOSING and q.fin_sent and q.snd_una >= q.snd_nxt)


def _free_slot(mp) -> int:
    """The index of a finished passive join that no run refers to (none of its bytes can be
    asked for again): a new passive join takes its place, so that joins that failed or ended
    do not use up MAX_PATHS for the connection's life. -1: none."""
    used = {r[2] for r in mp.runs}
    for q in mp.paths:
        if q.passive and q.index not in used and _finished(q):
            return q.index
    return -1


def guest_seg(conv, flow, version: int) -> int:
    """The guest's largest segment payload on a subflow of IP `version` (Flow.guest_seg)."""
    return flow.guest_seg(conv._mss_limit[version])


def _guest_rmss(flow, ip_version: int) -> int:
    """The MSS the guest announced in its SYN, or RFC 9293's default (§3.7.1: 536 for IPv4,
    1220 for IPv6; `ip_version`: the guest's connection's) when its SYN had none. Subflow 1
    passes such a SYN on without one, so the server sends it segments of that default
    there; the joins announced the MSS limit, and the guest got 1432-byte segments from
    them (stop 39)."""
    if flow.guest_mss:
        return flow.guest_mss
    return 536 if ip_version == 4 else 1220


def guest_mss(conv, flow, version: int) -> int:
    """The MSS we pass on for the guest on a subflow of IP `version` (Flow.guest_mss_at; the
    default when its SYN had none: _guest_rmss)."""
    lim = conv._mss_limit[version]
    if flow.guest_mss:
        return flow.guest_mss_at(lim)
    return min(lim, _guest_rmss(flow, flow.mp.version if flow.mp is not None else version))


def guest_payload_max(conv, flow, mp) -> int:
    """Payload bytes of a segment we build for the guest (_to_guest): room for 28 bytes of
    SACK blocks within the MTU of the uplinks (the MSS limit) and within the MSS the guest
    announced, or its default (_guest_rmss; RFC 6691: options count against it)."""
    return min(conv._mss_limit[mp.version], _guest_rmss(flow, mp.version) - 28)


def _seg_max(p, seg_max: int) -> int:
    """Payload bytes per segment on p: `seg_max`, or less when the peer announced a smaller MSS
    there (less our options: a DSS takes 28 bytes at most; RFC 6691)."""
    return seg_max if not p.mss else max(min(seg_max, p.mss - 28), 64)


def refuse_join(conv, pkt, reason: int, husk_of: bytes | None = None) -> list:
    """An MP_JOIN SYN towards a guest that no connection of ours takes: RST + MP_TCPRST
    (RFC 8684 §3.2), at seq 0 (RFC 9293 §3.10.7.1: the SYN has no ACK), never the guest's.
    `husk_of` (the SYN's bytes, when it is forwarded to a new 4-tuple): it goes on as a husk
    so that the RST leaves as the address the peer joined (passive_join)."""
    conv.counters[Counter.JoinToGuestRefused] += 1
    end = (pkt.seq + 1 + pkt.payload_len) & M32
    rst = segment(pkt.version, pkt.dst, pkt.src, pkt.dport, pkt.sport, 0, end, RST | ACK, 0,
                  build_options(b"", (MpTcpRst(False, reason),)))
    if husk_of is not None:
        conv.counters[Counter.JoinSynHusk] += 1
        return [Rewrite(_husk(husk_of, pkt)), _inject(rst)]
    return [Drop("MP_JOIN towards a guest: refused"), _inject(rst)]


def _join_synack(conv, flow, p, wscale: bool) -> bytes:
    """Our SYN/ACK to the peer's MP_JOIN SYN: the leftmost 64 bits of HMAC(Key-B + Key-A,
    R-B + R-A), we being B (RFC 8684 §3.2); window scale and SACK as the SYN offered them."""
    mac = join_hmac(flow.local_key, flow.remote_key, p.lnonce, p.rnonce, flow.version)[:8]
    ws = flow.guest_wscale if wscale and flow.guest_wscale_seen else -1
    tcp = encode_tcp_options(guest_mss(conv, flow, p.version), ws, p.sack, -1, -1)
    opt = MpJoinSynAck(bool(p.uplink is not None and p.uplink.backup), p.addr_id, mac, p.lnonce)
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn, p.remote_isn + 1,
                   SYN | ACK, min(flow.guest_window, 0xFFFF), build_options(tcp, (opt,)))


def _runs_of_single_path(flow) -> list:
    """The run map of what subflow 1 sent so far (subflow seq == data seq there): one run,
    cut where super-packet mappings still unacked lie (flow.Flow.gso_maps), which keep their
    mapping: the guest may still resend a piece of one."""
    runs = []
    at = 1
    maps = flow.gso_maps
    if maps is not None:
        k = len(maps)
        i = max(0, k - 2 * (MAX_RUNS // 2))
        while i < k:
            ms = maps[i]
            word = maps[i + 1]
            dlen = word & 0x1FFFF
            ck = word >> 17
            fin = 1 if ck & 0x10000 else 0
            me = ms + dlen - fin
            i += 2
            if me <= flow.data_acked or ms < at:
                continue
            if ms > at:
                runs.append([at, ms, 0, at, None])
            runs.append([ms, me, 0, ms, (ms, ms, dlen, (ck & 0xFFFF) if flow.checksum else None, fin == 1)])
            at = me
        flow.gso_maps = None
    if flow.snd_end > at:
        runs.append([at, flow.snd_end, 0, at, None])
    return runs


def route_uplink(routes, version: int, dst: bytes) -> int:
    """The uplink id of the longest prefix of `routes` ((version, network, prefixlen,
    uplink id), longest first: Converter.set_routes) holding `dst`; 0 when none does."""
    for v, net, plen, uid in routes:
        if v != version:
            continue
        full, rest = divmod(plen, 8)
        if dst[:full] != net[:full]:
            continue
        if rest and (dst[full] ^ net[full]) >> (8 - rest):
            continue
        return uid
    return 0


def _limit(conv, flow) -> int:
    """Subflows a flow may have (subflow 1 included): `max_subflows`, or by default one per
    uplink and server address (its initial one unless the C bit forbids it, and each it
    announced), and subflow 1; never more than MAX_PATHS."""
    n = conv.config.max_subflows
    if not n:
        targets = (0 if flow.no_initial_join else 1) + len(flow.peer_addrs or ())
        n = 1 + len(conv.config.uplinks) * targets
    return min(n, MAX_PATHS)


def _open_join(conv, flow, mp, up, now: float, remote: bytes | None = None, rport: int = 0) -> list:
    """A new extra subflow over uplink `up` to the server's initial address, or to `remote`
    port `rport` (an address it announced): its SYN (no Inject when the uplink has no address
    of the flow's family or no free port)."""
    version = mp.version
    local = _addr(up.addr4 if version == 4 else up.addr6, version)
    if local is None:
        return []
    if remote is None:
        remote, rport = mp.server, mp.sport
    port = _port(conv, local, remote, rport)
    if port < 0:
        conv.counters[Counter.MPJoinPortsExhausted] += 1
        return []
    p = Path(len(mp.paths), flow, up, version, local, port, remote, rport, now)
    if mp.plan is not None and up.id not in mp.plan:
        p.backup = True  # MP_JOIN B bit: the server sends on it only when nothing else is left
    if p.addr_id in mp.removed:
        # a REMOVE_ADDR of this id may still be on its way (or be resent): Linux would close
        # the new subflow with it (every subflow with that remote id), so a fresh id
        used = {q.addr_id for q in mp.paths} | set(mp.removed) | {u.id for u in conv.config.uplinks}
        p.addr_id = next((i for i in range(255, 0, -1) if i not in used), p.addr_id)
    p.local_isn = secrets.randbits(32)
    p.lnonce = new_nonce()
    mp.paths.append(p)
    conv.joins[(local, port, remote, rport)] = p
    p.timer = now + SYN_RTO[0]
    conv.counters[Counter.MPJoinSynTX] += 1
    return [_inject(_join_syn(conv, flow, p))]


def _port(conv, local: bytes, server: bytes, sport: int) -> int:
    """A free port of the join range on this uplink address towards this server port."""
    lo, hi = conv.config.join_ports
    span = hi - lo + 1
    first = secrets.randbelow(span)
    joins = conv.joins
    for i in range(min(span, 64)):
        port = lo + (first + i) % span
        if (local, port, server, sport) not in joins:
            return port
    return -1


def peer_option(conv, flow, o, version: int, now: float) -> tuple:
    """A server ADD_ADDR or REMOVE_ADDR on an acceptable segment of an established flow
    (RFC 8684 §3.4), on subflow 1 or a join. Returns (the echo to send back on that subflow,
    or None; the join SYNs it opens).

    An ADD_ADDR counts only with the right HMAC (keyed by the server's key then ours); then it
    is echoed, every time (the server resends it until an echo arrives), kept as a join target
    (at most MAX_PEER_ADDRS; a new address under a known id replaces the old one), and joined
    over every live uplink within the subflow limit: at once when the flow is multipath, else
    by `start`. A REMOVE_ADDR forgets the targets it names (the server closes their subflows
    itself). v0 has no HMAC in its ADD_ADDR: ignored there, as are echoes (we announce
    nothing)."""
    counters = conv.counters
    addrs = flow.peer_addrs
    if type(o) is RemoveAddr:
        if 0 in o.addr_ids:
            flow.no_initial_join = True  # its initial address: no new subflow to it (§3.4.2)
        if addrs:
            kept = [a for a in addrs if a[0] not in o.addr_ids]
            counters[Counter.RmAddrRX] += len(addrs) - len(kept)
            flow.peer_addrs = kept
        return None, []
    if o.echo and flow.inbound:
        AN.echoed(conv, flow, o)  # our announcement of an uplink (announce.py)
        return None, []
    if o.echo or o.hmac is None or flow.version != 1:
        counters[Counter.AddAddrIgnored] += 1
        return None, []
    mac = add_addr_hmac(flow.remote_key, flow.local_key, o.addr_id, o.addr, o.port)
    if not secrets.compare_digest(mac, o.hmac):
        counters[Counter.AddAddrBadHmac] += 1
        return None, []
    counters[Counter.AddAddrRX] += 1
    echo = AddAddr(True, o.addr_id, o.addr, o.port)
    entry = (o.addr_id, o.addr, o.port)
    if addrs is None:
        addrs = flow.peer_addrs = []
    if entry in addrs:
        return echo, []  # the server resent it: our echo was lost
    if len(o.addr) != (4 if version == 4 else 16):
        counters[Counter.AddAddrIgnored] += 1  # the other family: no join can use it
        return echo, []
    addrs = [a for a in addrs if a[0] != o.addr_id]
    if len(addrs) >= MAX_PEER_ADDRS:
        counters[Counter.AddAddrIgnored] += 1
        return echo, []
    addrs.append(entry)
    flow.peer_addrs = addrs
    mp = flow.mp
    if flow.inbound:  # inbound connections: the peer opens the subflows (issue 9), multipath or not
        return echo, []
    if mp is None:
        flow.no_join = False  # `start` (also when it found nothing to join before) tries it
        return echo, []
    return echo, _join_peer(conv, flow, mp, entry, now)


def _join_peer(conv, flow, mp, entry: tuple, now: float) -> list:
    """Joins to an announced address (RFC 8684 §3.4.1: its port, else the connection's) over
    every live uplink that has no subflow to it yet, within the subflow limit."""
    _, addr, port = entry
    rport = port or mp.sport  # (a port of 0 names none: the connection's)
    if (addr == mp.server and rport == mp.sport) or flow.fastclosed:
        return []  # (fastclosed: the guest was reset, _no_path_left; review of d952ba3)
    limit = _limit(conv, flow)
    live = sum(1 for q in mp.paths if q.state is not SS.CLOSED)
    actions = []
    for up in conv.config.uplinks:
        if live >= limit or len(mp.paths) >= MAX_PATHS:
            break
        if not conv.uplink_up.get(up.name, up.up):
            continue
        if any(p.uplink is up and p.remote == addr and p.rport == rport and p.state is not SS.CLOSED
               for p in mp.paths):
            continue
        syn = _open_join(conv, flow, mp, up, now, addr, rport)
        if syn:
            live += 1
            conv.counters[Counter.AddAddrJoin] += 1
            actions.extend(syn)
    return actions


def release(conv, flow) -> None:
    """Forget the flow's extra subflows (flow expired, evicted, reset or restarted)."""
    mp = flow.mp
    if mp is None:
        return
    for p in mp.paths[1:]:
        _forget(conv, p)
    conv.mp_flows.pop(mp.key, None)
    flow.mp = None


def _join_syn(conv, flow, p) -> bytes:
    # SACK_PERM: we are the receiver of the join's download (acked on arrival): with SACK
    # blocks from our out-of-order record the server repairs a loss there without Reno's
    # one hole per RTT (measured: 2x100 Mbit/s download, 1 % loss on the join's path)
    guest_ws = flow.guest_wscale if flow.guest_wscale_seen else -1
    tcp = encode_tcp_options(guest_mss(conv, flow, p.version), guest_ws, True, -1, -1)
    opt = MpJoinSyn(p.backup, p.addr_id, key_token(flow.remote_key, flow.version), p.lnonce)
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn, 0, SYN,
                   65535, build_options(tcp, (opt,)))


def _join_ack3(conv, flow, p) -> bytes:
    mac = join_hmac(flow.local_key, flow.remote_key, p.lnonce, p.rnonce, flow.version)[:20]
    dack = (flow.remote_idsn + flow.rcv_rel) & M64
    opts = (MpJoinAck(mac),)
    # the server's new subflow takes its window from this ACK (snd_wl1 = its seq)
    p.wnd_held = flow.guest_window << flow.guest_wscale
    p.wnd_seq = p.wnd_ack = 1
    p.sure_seq, p.sure_ack, p.sure_win = 1, 1, p.wnd_held
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + 1,
                   p.remote_isn + 1, ACK, flow.guest_window, build_options(b"", opts))


def _rst(flow, p, reason: int) -> bytes:
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.snd_nxt,
                   p.remote_isn + p.rcv_nxt, RST | ACK, 0,
                   build_options(b"", (MpTcpRst(False, reason),)))


def _dack_carried(flow) -> None:
    """An ACK with the guest's current DATA_ACK goes to the server."""
    mp = flow.mp
    if mp is not None and flow.rcv_rel >= mp.dack_out:
        mp.dack_out = flow.rcv_rel
        mp.dack_due = 0.0


def _sf1_out(flow, mp, seq: int, ack: int, window: int) -> bool:
    """A segment with relative seq `seq`, subflow ack `ack` and raw window `window` goes out
    on subflow 1: recorded for _sf1_dup, and does the server take its window (as
    _window_taken for the joins)?"""
    mp.sf1_ack_out = ack
    mp.sf1_win_out = window
    mp.sf1_answer = 0.0
    p0 = mp.paths[0]
    return _taken(p0, seq, _unwrap((ack - flow.sf.remote_isn) & M32, p0.wnd_ack), window << flow.guest_wscale)


def _sf1_dack(flow, mp, seq: int, ack: int, window: int, data_ack: int) -> int:
    """The DATA_ACK a segment going out on subflow 1 carries (relative seq `seq`, subflow ack
    `ack`, raw window `window`): recorded (_sf1_out), and capped (_sf1_dack_cap) when the
    server keeps the window it holds."""
    if _sf1_out(flow, mp, seq, ack, window):
        return data_ack
    return _sf1_dack_cap(flow, mp, data_ack, window << flow.guest_wscale)


def sf1_injected_ack(flow, mp, seq: int, ack: int, data_ack: int) -> int:
    """An ACK the converter injects on subflow 1 (at absolute seq `seq`, subflow ack `ack`,
    the guest's window): its DATA_ACK as _sf1_dack makes it (review of 0032673: untracked, a
    DupConsumed ACK's window taken by Linux left the model stale, and the next guest ACK
    passed uncapped)."""
    p0 = mp.paths[0]
    return _sf1_dack(flow, mp, _unwrap((seq - p0.local_isn) & M32, p0.snd_nxt), ack, flow.guest_window, data_ack)


def _sf1_dack_cap(flow, mp, data_ack: int, wb: int) -> int:
    """The DATA_ACK for a segment on subflow 1 whose window (`wb` bytes) the server does not
    take: it stops where the window it holds for subflow 1 reaches this segment's edge, as
    on the joins (_ack_on). A guest ACK of a join's bytes with the same subflow-1 ack and a
    smaller window passes while subflow 1 has a hole (_sf1_dup); with the new DATA_ACK and
    the old window Linux put its edge beyond the guest's, and the server's next bytes on a
    join were dropped by the guest (JoinBeyondGuestWindow, MPTCPRetrans)."""
    p0 = mp.paths[0]
    rel = _unwrap((data_ack - flow.remote_idsn) & M32, flow.rcv_rel)
    cap = rel + wb - p0.wnd_held
    if cap >= rel:
        return data_ack
    if mp.dack_out > cap:
        mp.dack_out = cap  # not carried yet: the next ACK that can carries the rest ...
        if not mp.dack_due and _best_live(mp) > 0:
            # ... or the clock's, on a join (_ack_on: capped there by its own held window,
            # never re-armed; on subflow 1 it would be capped again and again)
            mp.dack_due = flow.last + DACK_FLUSH
    if mp.counters is not None:
        mp.counters[Counter.Sf1DataAckHeld] += 1
    return dack_at(flow, cap)


def _sf1_dup(flow, mp, sf1_ack: int, window: int) -> bool:
    """A pure guest ACK that the server would take as a subflow-level duplicate on subflow 1
    (same ack, no larger window) although subflow 1 has no hole: it only moves the DATA_ACK
    (the guest acked data of another subflow, or saw reordering between subflows). Without
    SACK on subflow 1 (the guest's SACK_PERM is stripped) Linux counts each one as a Reno
    dupack: hundreds of spurious fast retransmits per second on a download, subflow 1's cwnd
    at 2-3 and its reordering estimate at 1 (RFC 8684 §3.3.6: no more than two duplicate ACKs
    in a row for signalling). Held back while an extra subflow lives: its ACKs carry the
    DATA_ACK, or tick() sends it there within DACK_FLUSH.

    Never the guest's answer to an old segment of the server's (sf1_old_in): a zero-window
    probe or keepalive is how the server learns a window update that got lost, and the
    answer repeats exactly what we sent last. Held, it left the server probing a window it
    believed closed until the guest gave up (WinProbe, 60 s; the loss test's stall)."""
    if sf1_ack != mp.sf1_ack_out or window > mp.sf1_win_out or flow.sf.ranges:
        return False
    if mp.sf1_answer and flow.last - mp.sf1_answer <= ANSWER_WAIT:
        if mp.counters is not None:
            mp.counters[Counter.Sf1AnswerPassed] += 1
        return False
    for q in mp.paths:
        if q.index and q.state is SS.ESTABLISHED:
            return True
    return False


def sf1_old_in(mp, now: float) -> None:
    """A server segment before the guest's rcv_nxt on subflow 1 (a window probe at rcv_nxt -
    1, a keepalive, a resend) goes on to the guest, which answers it with an ACK: that ACK
    passes (_sf1_dup), within ANSWER_WAIT."""
    mp.sf1_answer = now


def _sack_blocks(p) -> list:
    """SACK blocks (RFC 2018) of extra subflow p's out-of-order record: the one holding the
    latest arrival first, then the others from the lowest, at most 3 (with the DATA_ACK's
    12 bytes, 26 of SACK fit the 40)."""
    ooo = p.ooo
    first = [iv for iv in ooo if iv[0] <= p.sack_recent < iv[1]]
    out = [((p.remote_isn + a) & M32, (p.remote_isn + b) & M32) for a, b in first]
    for a, b in ooo:
        if len(out) >= 3:
            break
        if not (a <= p.sack_recent < b):
            out.append(((p.remote_isn + a) & M32, (p.remote_isn + b) & M32))
    return out


def _window_taken(flow, p, seq: int, ack: int) -> bool:
    """A segment with relative seq `seq`, relative ack `ack` and the guest's window goes out
    on extra subflow p: does the server take its window? Linux's tcp_may_update_window: when
    it acks more than before, or its seq is later than the last update's, or the window
    grew (or is zero). Records the window the server then holds."""
    return _taken(p, seq, ack, flow.guest_window << flow.guest_wscale)


TAKEN_SURE = 2  # (_taken: taken whatever Linux holds, if the segment arrives)


def _taken(p, seq: int, ack: int, wb: int) -> int:
    """Does the server take the window (`wb` bytes) of a segment at relative seq `seq` and
    ack `ack` on path p (_window_taken)? 0: no; TAKEN_SURE: yes, whatever it holds now (it acks
    more, has a later seq, or a zero window, or grows past every window the server may
    hold); 1: the model's window grows, but a lost or overtaken segment may have left Linux
    a larger one, which it keeps (wnd_doubt). A segment it surely takes with a smaller
    window than the model's makes the model's old window such a doubt: if that segment is
    lost, Linux keeps it (review of stop 41). Only the joins' caps count with the doubt."""
    if ack > p.wnd_ack or seq > p.wnd_seq or (seq == p.wnd_seq and wb == 0):
        taken = TAKEN_SURE
    elif seq == p.wnd_seq and wb > p.wnd_held:
        taken = TAKEN_SURE if wb > p.wnd_doubt else 1
    else:
        taken = 0
    if taken == TAKEN_SURE:
        if wb < p.wnd_held:
            if p.wnd_held > p.wnd_doubt:
                p.wnd_doubt = p.wnd_held
        elif wb >= p.wnd_doubt and p.wnd_doubt:
            # every window Linux may hold is at most this one: no copy is due any more
            # (nor its count of put-offs for the next doubt: review of eb738a2)
            p.wnd_doubt = 0
            p.doubt_at = 0.0
            p.doubt_push = p.doubt_late = 0
        p.sure_seq, p.sure_ack, p.sure_win = seq, ack, wb
    if taken:
        p.wnd_held = wb
        if seq > p.wnd_seq:
            p.wnd_seq = seq
    if ack > p.wnd_ack:
        p.wnd_ack = ack
    return taken


def _join_dack(flow, p, taken: int) -> int:
    """The DATA_ACK (relative) a segment on extra subflow p carries: the guest's, or, unless
    the server surely takes the segment's window (`taken`, _taken), where the largest window
    it may hold for p reaches the guest's edge (JoinDataAckHeld; _ack_on says why). When
    that is a window of doubt (a segment that shrank it may be lost), a copy of the last
    segment it surely took goes by the clock (_doubt_resolve), and then the rest."""
    rel = flow.rcv_rel
    if taken != TAKEN_SURE:
        gw = flow.guest_window << flow.guest_wscale
        cap = rel + gw - max(p.wnd_held, p.wnd_doubt)
        if p.doubt_at > 0 and (gw > p.sure_win or (gw == 0 and p.sure_win)):
            # a copy is due: it goes DOUBT_WAIT after this segment instead, whose window
            # Linux would take after the copy's if the copy overtook it (a larger or a zero
            # one; review of 995d953), but not for ever: steady ACKs of ours held it off
            # while the DATA_ACK stayed capped (review of 0dbe4e4). Past that, the window
            # stays a doubt after the copy (doubt_late, _doubt_resolve; review of eb738a2).
            if p.doubt_push < DOUBT_PUSH_MAX:
                p.doubt_at = -1.0
                p.doubt_push += 1
            elif gw > p.doubt_late:
                p.doubt_late = gw
        if cap < rel:
            mp = flow.mp
            if p.wnd_doubt > p.wnd_held and not p.doubt_at and rel + gw - p.wnd_held > cap:
                p.doubt_at = -1.0  # (the clock arms it: this may run in tick, long after flow.last)
            rel = cap
            if mp is not None:
                if mp.dack_out > rel:
                    mp.dack_out = rel  # not carried yet: the next ACK that can carries the rest
                if mp.counters is not None:
                    mp.counters[Counter.JoinDataAckHeld] += 1
    return rel


def _doubt_resolve(flow, p, now: float) -> list:
    """Linux may hold a larger window for join p than the model (wnd_doubt): the segment that
    shrank it may have been lost or overtaken, and the caps have held the DATA_ACK back for
    it since DOUBT_WAIT. A copy of the last segment the server surely takes (its seq, ack
    and window) makes it hold that window if the original was lost (it is taken as surely)
    and changes nothing if it arrived (but a zero window, which it takes again). Our ordinary
    ACK follows, with the guest's window. Then the model is what Linux holds, unless both the
    original and the copy are lost, and the doubt is dropped; that ACK carries the DATA_ACK
    as far as the model allows (JoinWindowDoubtResolved; review of stop 41's way out).

    A copy with a zero window goes twice, and that ACK DOUBT_WAIT later (_reopen), not at
    once: an ACK that overtook the copy would leave Linux the copy's zero window (taken after
    the ACK's, as a zero window at snd_wl1 always is) while the model says open, and an idle
    join would wait for the server's window probe (stop 42's open case). Twice, because that
    copy itself shrinks the window: lost alone, it would leave Linux the larger window it
    held before while the model says 0 (review of 9f70376); as for any copy, only the loss of
    both leaves that."""
    p.doubt_at = 0.0
    p.doubt_push = 0
    late = p.doubt_late  # (a window of ours that may reach Linux after the copy: _join_dack)
    p.doubt_late = 0
    if p.wnd_doubt <= p.wnd_held or p.state not in ALIVE:
        p.wnd_doubt = 0
        return []
    p.wnd_doubt = 0
    ws = flow.guest_wscale
    # the copy's DATA_ACK: Linux then holds its window or the model's (larger or equal)
    rel = min(flow.rcv_rel, flow.rcv_rel + (flow.guest_window << ws) - p.wnd_held)
    mp = flow.mp
    copy = segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.sure_seq,
                   p.remote_isn + p.sure_ack, ACK, p.sure_win >> ws,
                   build_options(b"", (_dss_ack(dack_at(flow, rel), flow.ack64),)), b"", mp.marks)
    if mp.counters is not None:
        mp.counters[Counter.JoinWindowDoubtResolved] += 1
    if p.sure_win == 0:
        p.wnd_held = 0  # (a zero window at Linux's snd_wl1 is taken whatever it holds)
        p.wnd_doubt = late
        p.reopen_at = now + DOUBT_WAIT  # (_reopen)
        return [_inject(copy), _inject(copy)]
    if late > p.wnd_held:
        p.wnd_doubt = late  # (taken after the copy if the copy overtook it: the caps count it)
    # then our ordinary ACK: the guest's window, taken as the model says, its DATA_ACK capped
    # as the model alone says (with the model's larger window instead, at a later seq, Linux
    # kept that one and an idle flow's DATA_ACK stayed capped: review of e85c6a3)
    return [_inject(copy), _inject(_ack_on(flow, p))]


def _reopen(flow, p, now: float) -> list:
    """DOUBT_WAIT after a copy with a zero window (_doubt_resolve): our ordinary ACK, with the
    guest's window, even when one went since: sent within DOUBT_WAIT of the copies, that one
    may have overtaken them, and Linux then holds their zero window while the model says
    open (a smaller one than the model's: safe, but the join waits for the server's probe;
    review of 995d953). While the guest's own window is 0 it waits, looking again every
    REOPEN_POLL: nothing else carries the guest's next window to this join (its ACKs go on
    subflow 1; review of 9f70376)."""
    p.reopen_at = 0.0
    if p.state not in ALIVE:
        return []
    if not flow.guest_window:
        p.reopen_at = now + REOPEN_POLL
        return []
    return [_inject(_ack_on(flow, p))]


def _ack_on(flow, p, extra=(), dsack=None) -> bytes:
    """Our ACK on extra subflow `p`: its rcv_nxt, the guest's DATA_ACK, the guest's window;
    SACK blocks when the server permitted them and bytes beyond a hole are held.

    Linux puts the right edge of the connection's window at DATA_ACK plus the window it
    holds for the subflow (ack_update_msk), and an ACK that acks nothing new on the subflow
    and offers a smaller window does not change the window it holds. A slow reader's
    window shrinks as its ack grows: such an ACK with the new DATA_ACK moved the edge
    beyond the guest's, and the server sent bytes the guest drops (JoinBeyondGuestWindow,
    repaired only by the server's MPTCP-level timer). The DATA_ACK on it stops where the
    held window reaches the guest's edge (JoinDataAckHeld); the next ACK of new bytes, or a
    wider window, carries the rest.

    `dsack`: (a, b), relative subflow seqs of bytes that came twice: named first (D-SACK,
    RFC 2883), before the out-of-order blocks."""
    _dack_carried(flow)
    data_ack = dack_at(flow, _join_dack(flow, p, _window_taken(flow, p, p.snd_nxt, p.rcv_nxt)))
    tcp = b""
    if p.sack and not extra:
        if dsack is not None:
            blocks = [((p.remote_isn + dsack[0]) & M32, (p.remote_isn + dsack[1]) & M32)]
            tcp = encode_tcp_options(sack=blocks + _sack_blocks(p)[:2])
        elif p.ooo:
            tcp = encode_tcp_options(sack=_sack_blocks(p))
    opts = build_options(tcp, (_dss_ack(data_ack, flow.ack64), *extra))
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.snd_nxt,
                   p.remote_isn + p.rcv_nxt, ACK, flow.guest_window, opts, b"", flow.mp.marks)


def _ack_on_sf1(flow, mp, extra=(), fin=False, dfin=None, ack_rel=-1) -> bytes:
    """An ACK on subflow 1 from the guest's address: its own seq and the subflow ack the guest
    has passed on, the guest's DATA_ACK and window (for options the guest cannot send). With
    `fin`: our FIN, sent already (p0.snd_nxt counts it), held back from the guest's (send).
    With `dfin` (a bare DATA_FIN's DSS, its DATA_ACK to be set): that DSS, with the DATA_ACK.
    `ack_rel`: another subflow ack than the guest's (the server's FIN: sf1_fin_in)."""
    p0 = mp.paths[0]
    sf = flow.sf
    _dack_carried(flow)
    data_ack = dack_now(flow)
    seq = p0.snd_nxt - (1 if fin else 0)
    data_ack = _sf1_dack(flow, mp, seq, (sf.remote_isn + sf.rcv_base) & M32, flow.guest_window, data_ack)
    d = _dss_ack(data_ack, flow.ack64) if dfin is None else Dss(
        data_ack, flow.ack64, dfin.data_seq, True, 0, 1, dfin.csum, True)
    opts = build_options(b"", (d, *extra))
    return segment(mp.version, mp.guest, mp.server, mp.gport, mp.sport, p0.local_isn + seq,
                   sf.remote_isn + (sf.rcv_base if ack_rel < 0 else ack_rel),
                   ACK | FIN if fin else ACK, flow.guest_window, opts, b"", mp.marks)


def sf1_fin_in(conv, flow, mp, fin_rel: int, guest_closed: bool) -> list:
    """The server closes subflow 1 with a FIN at relative subflow seq `fin_rel` that is not
    the connection's (the guest gets the segment without it): acknowledged here, as a join's
    FIN is, once the guest has acked every byte before it on subflow 1 (else the server
    resends it). (Unlike a join, nothing else changes: our FIN on subflow 1 goes with the
    guest's close, and the scheduler is not told; Linux closes subflow 1 early only on rare
    paths, and resets it if data comes: sf1_rst.) Nobody did before: Linux resent it every RTO; a guest that had closed
    second was shown the resend as a pure ACK and answered with a RST, which went on to the
    server with MP_FASTCLOSE (captured: every multipath download's close). `guest_closed`:
    a segment carrying nothing else is not passed to a guest that closed (Drop first)."""
    sf = flow.sf
    if fin_rel > sf.rcv_base:
        # (not acked yet: bytes below it are missing on subflow 1, e.g. lost and reinjected
        # on a join; the server resends it. A closed guest must not see it either: shown as
        # a pure ACK, it answers with the RST this is about)
        return [Drop("subflow 1's FIN for a guest that has closed")] if guest_closed else []
    conv.counters[Counter.Sf1FinAcked] += 1
    # (a FIN below the guest's ack on subflow 1, resent or forged: that ack, as TCP answers
    # an old segment; never an ack below it)
    inject = _inject(_ack_on_sf1(flow, mp, ack_rel=fin_rel + 1 if fin_rel + 1 > sf.rcv_base else -1))
    return [Drop("subflow 1's FIN for a guest that has closed"), inject] if guest_closed else [inject]


def _guest_window(flow, mp) -> int:
    w = (mp.wnd_edge - mp.data_ack) >> flow.server_wscale
    return guest_win(flow, mp, mp.data_ack, 0 if w < 0 else min(w, 0xFFFF))


def guest_win(flow, mp, ack_rel: int, win: int) -> int:
    """The raw window field for a segment to the guest that acks relative seq `ack_rel`
    (as data_ack) and would carry `win`. A guest without SACK counts an ACK as a duplicate
    only when its window equals the last one (RFC 5681 §2 (e); Linux: a changed window is
    FLAG_WIN_UPDATE, never a dupack), and only duplicate ACKs make it resend before its RTO.
    Our ACKs carry the data level's window, which grows as the server reads: every
    duplicate ACK a loss on a subflow made told the guest of a bigger window, none was
    counted, and the guest waited for its RTO (0.22 s) at each loss and then resent its
    whole window (captured: a 6 MB upload through two uplinks, an RTO every 0.25 s; the
    resends of bytes the server held made live subflows look stale). So while the ack
    stands still the window does too, unless the guest has less than WND_ROOM_SEGS
    segments of room left under it (_room_short: the window must open for it to send at
    all), and an ACK that would only open the window is not sent (_ack_info): to the guest
    it would be a duplicate ACK no loss made. A guest with SACK counts SACK blocks, not
    windows: unchanged."""
    if flow.sack_ok or ack_rel < mp.gack_out:
        return win  # (an old ack: the guest ignores it, window and all)
    if ack_rel == mp.gack_out and win != mp.gwin_out and (win < mp.gwin_out or not _room_short(flow, mp)):
        return mp.gwin_out  # (never smaller: that edge was announced)
    mp.gack_out = ack_rel
    mp.gwin_out = win
    return win


def _room_short(flow, mp) -> bool:
    """Has the guest less than WND_ROOM_SEGS segments of room left under the window we last
    showed it (guest_win)? Then it may wait for the window to open, and an ACK that only
    opens it must reach it (_ack_info: otherwise such an ACK goes to a guest without SACK
    only as a duplicate, which it would count)."""
    if mp.gwin_out < 0:
        return True
    return mp.gack_out + (mp.gwin_out << flow.server_wscale) - mp.snd_nxt < WND_ROOM_SEGS * flow.guest_mss_at(1460)


def _to_guest(flow, mp, seq: int, flags: int, payload: bytes = b"", now=None) -> bytes:
    """A segment from the server's address to the guest: ack = guest seq of the DATA_ACK,
    window = the data-level window in subflow 1's scale, no options but the data-level SACK
    blocks (guest_sack, as of `now`: the flow's clock by default)."""
    ack = (flow.guest_isn + mp.data_ack) & M32
    opts = b""
    if flow.sack_ok:
        blocks = guest_sack(flow, mp, 3 if payload else 4, now)  # 28 bytes: mss_limit's room
        u = -1 if flags & RST else _undo_at(mp)  # (a RST ends it: no undo)
        d = None
        if u >= 0:
            d = _undo_dsack(flow, mp, u)
            _undo_sent(mp, u)
            blocks = (d,) + blocks[:2 if payload else 3]
        if blocks:
            _sack_shown(mp, blocks)
            opts = encode_tcp_options(-1, -1, False, -1, -1, blocks)
    return segment(mp.version, mp.server, mp.guest, mp.sport, mp.gport, seq, ack, flags,
                   _guest_window(flow, mp), opts, payload)


def _hole_evident(flow, p, ss: int, now=None) -> bool:
    """Is the unacked byte at relative subflow seq `ss` of subflow `p` known lost, rather than
    still in flight on a slower path? The server's SACK on that subflow names bytes above it,
    the subflow counts duplicate ACKs, or it has made no progress for longer than an ACK can
    take (_overdue_at) by `now` (the flow's clock by default). Not while we hold
    its bytes to repair it ourselves (_repair), unless REPAIR_TRIES repairs did not do."""
    if p.rtx and _repairing(p, ss):
        return False
    if _loss_shown(p, ss):
        return True
    return (flow.last if now is None else now) > _overdue_at(p)


def _gap_evident(flow, p, lo: int, hi: int, now=None) -> bool:
    """Is the hole [lo, hi) of subflow p known lost in a part that is the guest's: its first
    byte, or, when that one is ours to repair, the first byte after it that we did not keep,
    by the server's SACK above it?
    A segment sent beyond a join's window (not kept) right behind a kept one, both lost,
    stayed hidden from the guest, the only one to resend it, until our repair of the kept
    one was acked (review of 7d15396). Shown, the guest resends the kept one too, as it does
    when the hole not kept comes first."""
    if _hole_evident(flow, p, lo, now):
        return True
    rtx = p.rtx
    if not rtx or not _repairing(p, lo):
        return False
    i = _kept_above(rtx, lo)
    g = rtx[i - 1][1]  # (lo lies in rtx[i - 1]: _repairing)
    n = len(rtx)
    while i < n and g < hi and rtx[i][0] <= g:  # kept segments on end to end
        if rtx[i][1] > g:
            g = rtx[i][1]
        i += 1
    # (the server's word for g, SACK above it, not the clock: a stall of the kept bytes at
    # snd_una, which we repair, said nothing of g and showed the guest a loss we repair,
    # review of 08aeb59)
    return g < hi and _loss_shown(p, g)


def _loss_shown(p, ss: int) -> bool:
    """Does the server show subflow p's byte at relative seq `ss` lost: SACK above it, or
    two duplicate ACKs while it is the subflow's snd_una, or the ACK of a head we put into
    the hole at snd_una stopped at it (`lost_una`: sent before that fill)? Duplicate ACKs say
    nothing of the bytes above snd_una: taken as loss of any byte, they let guest_sack pass
    the subflow's later runs still in flight and show the guest blocks above them, and the
    guest resent bytes the server then had twice."""
    for s, e in p.sacked:
        if e > ss:
            return True
    return (p.dups >= 2 or p.lost_una == p.snd_una) and ss <= p.snd_una


def _overdue_at(p) -> float:
    """When subflow p's unacked bytes have waited without progress longer than an ACK can
    take (known lost by then): two RTTs, or RFC 6298's srtt + 4 rttvar when larger (HOLE_RTT
    while it has no RTT sample). With two RTTs alone, the 10 Mbit/s path of 10+50+50 (RTT
    samples from 0.1 ms, tbf's bucket, to 13 ms, its queue) had bytes declared lost that
    were still queued: the guest resent them, the server had them twice (D-SACK), and the
    guest halved its window each time (1843-2496 retransmissions and 99-122 recoveries per
    8 s upload; 905 and 47-51 with the variance). Not waiting for the server's delayed ACK
    of a lone segment (40 ms) too: tried, it slowed the news of real losses, 2 x 100 Mbit/s
    at 1 % loss fell from 170 to 146 Mbit/s."""
    rtt = p.srtt or HOLE_RTT
    wait = rtt + 4.0 * p.rttvar
    if wait < 2.0 * rtt:
        wait = 2.0 * rtt
    return p.progress_at + wait + 0.005


def _rtt_sample(p, r: float) -> None:
    """RFC 6298 (2.2, 2.3): srtt and rttvar from one RTT measurement `r` (seconds)."""
    if p.srtt == 0.0:
        p.srtt = r
        p.rttvar = r / 2.0
    else:
        d = p.srtt - r
        p.rttvar = 0.75 * p.rttvar + 0.25 * (d if d >= 0.0 else -d)
        p.srtt = 0.875 * p.srtt + 0.125 * r


def guest_sack(flow, mp, limit: int, now=None) -> tuple:
    """Data-level SACK for the guest (MULTIPATH.md §3.5 (c), option B: precise signals, no
    payload kept): the guest bytes above DATA_ACK that a subflow's cumulative ACK or SACK
    covers (the server's TCP has them), as up to `limit` blocks in guest seqs, but only up to
    the first hole that is not known lost (`_gap_evident`): a hole whose bytes are still in
    flight on a slower subflow is reordering between paths, and blocks above it made the
    guest's RACK mark those bytes lost, resend them and halve its window (measured: 310 SACK
    recoveries and 7 RTOs per 8 s upload on 2 x 100 Mbit/s, clean). Without blocks for real
    losses the guest (one congestion controller for every path) knew of one hole per RTT
    and, after an RTO, resent all it had sent from its snd_una. Never a byte no subflow
    acked.

    More blocks than `limit`: those the guest was never sent first, lowest first, then those
    sent to it longest ago, so that in turn every block reaches it (the caller records what
    it sent: _sack_shown). Until stop 47 the lowest only: with five holes or more the bytes
    the server got above them were never named; what a join delivered between two of subflow
    1's holes stayed in flight to the guest, its window full, and it waited out its RTO (a
    bbr guest: 8-16 RTOs per 8 s upload at 1 % loss, a fifth of its bytes resent, 0.56 of
    Linux MPTCP). Never-sent blocks highest first, as RFC 2018 orders a receiver's, named a
    lower one after a higher: a Linux guest took that for reordering in the network and
    raised its reordering estimate (tcp_sacktag_one; review of 0c5fd65)."""
    blocks = guest_blocks(flow, mp, now)
    if len(blocks) <= limit:
        return blocks
    prev = mp.sack_order
    out = []
    for b in blocks:
        if b not in prev:
            out.append(b)
            if len(out) >= limit:
                break
    if len(out) < limit:
        for b in reversed(prev):
            if b in blocks:
                out.append(b)
                if len(out) >= limit:
                    break
    return tuple(out)


def _sack_shown(mp, shown) -> None:
    """Blocks of guest_sack that went to the guest (after any trimming for room): first in
    mp.sack_order, the others after them in their order, at most MAX_GUEST_BLOCKS. Recorded
    when chosen, blocks trimmed away or dropped with their segment counted as named and some,
    the highest among them, never reached the guest (review of 0c5fd65)."""
    if not shown:
        return
    order = list(shown)
    for b in mp.sack_order:
        if len(order) >= MAX_GUEST_BLOCKS:
            break
        if b not in shown:
            order.append(b)
    mp.sack_order = tuple(order)


MAX_GUEST_BLOCKS = 16  # (guest_blocks: beyond these, the highest bytes wait for a hole to fill)


def guest_blocks(flow, mp, now=None) -> tuple:
    """Every data-level SACK block of guest_sack (at most MAX_GUEST_BLOCKS), lowest first."""
    limit = MAX_GUEST_BLOCKS
    runs = mp.runs
    da = mp.data_ack
    if not runs or runs[-1][1] <= da:
        return ()
    paths = mp.paths
    blocks = []
    cur_a = cur_b = -1
    # never DSNs the server may not hold although their subflow acked them (mp.unsure, the
    # swap of _head_hole): cut out of the blocks. Nothing was named above them before, and a
    # guest whose resend of the head was lost again (2 % loss) had no SACK to find that by
    # (RACK): it waited for its RTO, backed off to 50 s (inbound failover captures)
    unsure = [u for u in mp.unsure if u[1] > da]
    for r0, r1, idx, s0, m in runs:
        if r1 <= da:
            continue
        p = paths[idx]
        n = r1 - r0
        una = p.snd_una - s0
        # the run's bytes its subflow has: below its cumulative ACK, then in its SACK blocks
        # (ascending, all above snd_una), as offsets into the run
        pieces = [(0, una if una < n else n)] if una > 0 else []
        # (not a dead or dying subflow's SACK blocks: the server drops a closed subflow's
        # out-of-order bytes. Named to the guest, they were bytes it never resent (a SACKed
        # segment is skipped) until its RTO, backed off to 5 s: inbound failover captures)
        for s, e in (p.sacked if p.state is SS.ESTABLISHED else ()):
            x, y = s - s0, e - s0
            if y > 0 and x < n:
                pieces.append((x if x > 0 else 0, y if y < n else n))
        at = da - r0 if da > r0 else 0  # offset in the run up to which all is covered or seen
        stop = False
        for x, y in pieces + [(n, n)]:
            if x > at and not _gap_evident(flow, p, s0 + at, s0 + x, now):
                stop = True  # a hole in flight: nothing above it is shown
                break
            if y > at:
                at = y
            a = r0 + x
            b = r0 + y
            if a < da:
                a = da
            if b <= a:
                continue
            for a, b in _cut(a, b, unsure):
                if cur_b >= 0 and a <= cur_b:
                    if b > cur_b:
                        cur_b = b
                    continue
                if cur_b >= 0 and cur_a > da:  # RFC 2018: isolated; left == ack reads as reneging
                    blocks.append(((flow.guest_isn + cur_a) & M32, (flow.guest_isn + cur_b) & M32))
                    if len(blocks) >= limit:
                        return tuple(blocks)
                cur_a, cur_b = a, b
        if stop:
            break
    if cur_b >= 0 and cur_a > da:
        blocks.append(((flow.guest_isn + cur_a) & M32, (flow.guest_isn + cur_b) & M32))
    return tuple(blocks)


def _cut(a: int, b: int, out) -> list:
    """[a, b) without the ranges `out` ([[u0, u1], ...], ascending, apart)."""
    if not out:
        return [(a, b)]
    res = []
    for u0, u1 in out:
        if u1 <= a or u0 >= b:
            continue
        if u0 > a:
            res.append((a, u0))
        a = u1
        if a >= b:
            return res
    res.append((a, b))
    return res


def _silent_tail(flow, mp, p) -> float:
    """When the clock makes subflow p's unacked bytes a known hole (_overdue_at: no progress
    for longer than an ACK can take) that no ACK has shown the guest yet; 0.0: nothing to
    wait for. A tail
    dropped on a path (a GSO burst into a shallow queue) leaves its subflow nothing to ACK and
    the server nothing to say; the ACKs of other subflows, which would carry the news, came
    before that time had passed and were held back as reordering. The guest then waited for
    its RTO (100+30 Mbit/s, 5 ms buffers: 3-8 RTOs per 8 s upload, 0.68x Linux MPTCP)."""
    if (p.state is not SS.ESTABLISHED or p.snd_nxt <= p.snd_una or p.told_at == p.progress_at
            or not flow.sack_ok or not mp.runs or mp.runs[-1][1] <= mp.data_ack):
        return 0.0
    return _overdue_at(p) + 0.001


def _tell_silent_tails(conv, flow, mp, now: float) -> list:
    """tick: the guest's ACK with the data-level SACK blocks a silent subflow's tail now shows
    (at most one per flow and look; _silent_tail)."""
    out = []
    for p in mp.paths:
        due = _silent_tail(flow, mp, p)
        if not due or now < due:
            continue
        p.told_at = p.progress_at
        if out:
            continue
        if _sack_news(flow, mp, now):
            conv.counters[Counter.SackNewsTimer] += 1
            out.append(_inject(_guest_ack(flow, mp, now)))
    return out


def _sack_news(flow, mp, now=None) -> bool:
    """Would the guest learn something from an ACK now? Its data-level SACK blocks (guest_sack)
    differ from the last ones this asked about. An ACK that moves no data level is otherwise
    held back as reordering between subflows; one that names a newly known-lost hole is what
    the guest's RACK needs to resend it before its RTO (a 1 % loss upload counted 15 RTOs
    per 8 s run while these ACKs were held back)."""
    if not flow.sack_ok:
        return False
    blocks = guest_blocks(flow, mp, now)  # (every block: news above the fourth is news)
    if not blocks:
        return False
    h = hash(blocks)  # (16 blocks kept whole: 2 KB more per flow)
    if h == mp.sack_told:
        return False
    mp.sack_told = h
    return True


def guest_options(flow, mp, data: bytes, pkt):
    """The TCP options of a server segment on subflow 1 as the guest gets them once the flow
    is multipath: its SACK blocks (subflow 1's seqs) replaced by the data level's
    (guest_sack); None when nothing changes (no SACK on the connection, no blocks either
    way: the segment keeps its own, MPTCP stripped)."""
    if not flow.sack_ok:
        if flow.sack_added:  # (SACK on subflow 1 only: its blocks never reach the guest)
            return options_without_sack(data, pkt, TCP_HLEN)
        return None
    o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    limit = 3 if o.ts_val != -1 or pkt.payload_len else 4
    blocks = guest_sack(flow, mp, limit)
    # a D-SACK (--dsack-undo) only on a segment that reaches the guest as one: each copy a
    # super-packet's segmentation made counted once more towards its undo (second review)
    u = _undo_at(mp) if not pkt.payload_len or pkt.payload_len + 40 <= flow.guest_mss else -1
    d = _undo_dsack(flow, mp, u) if u >= 0 else None
    if d is not None:
        blocks = (d,) + blocks[:limit - 1]
    if not blocks and not o.sack:
        return None
    opts = encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, blocks)
    # within the MSS the guest announced (a guest MTU below the uplinks': the server's
    # segment fits it with its DSS, maybe not with more SACK blocks in the DSS's place)
    while blocks and flow.guest_mss and len(opts) + pkt.payload_len > flow.guest_mss:
        blocks = blocks[:-1]
        opts = encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, blocks)
    _sack_shown(mp, blocks)
    if d is not None and blocks and blocks[0] == d:
        _undo_sent(mp, u)  # (trimmed away, it waits for the next segment)
    return opts


def _undo_add(mp, a: int, b: int) -> None:
    """--dsack-undo: the guest resent [a, b) (data-level, relative) on an extra subflow; at
    most UNDO_MAX ranges wait (one more is forgotten: the guest then keeps that cut)."""
    keep = []
    for u in mp.undo:
        if a <= u[1] and b >= u[0]:  # (overlapping or adjacent: one range)
            if u[0] < a:
                a = u[0]
            if u[1] > b:
                b = u[1]
        else:
            keep.append(u)
    if len(keep) < UNDO_MAX:
        keep.append([a, b])
        mp.undo = keep


def _undo_drop(mp, a: int, b: int) -> None:
    """--dsack-undo: a resend of [a, b) that is not to be named: waiting resends that overlap
    it are not named either (e.g. the join died and the guest's next resend of them went on
    another subflow)."""
    mp.undo = [u for u in mp.undo if u[1] <= a or u[0] >= b]


def _undo_at(mp) -> int:
    """--dsack-undo: the index in mp.undo of the first waiting resend the DATA_ACK has
    passed (-1: none)."""
    if mp.undo:
        da = mp.data_ack
        for i, u in enumerate(mp.undo):
            if u[1] <= da:
                return i
    return -1


def _undo_dsack(flow, mp, i: int) -> tuple:
    """The D-SACK block (guest seqs) of waiting resend i (_undo_at)."""
    u = mp.undo[i]
    return ((flow.guest_isn + u[0]) & M32, (flow.guest_isn + u[1]) & M32)


def _undo_sent(mp, i: int) -> None:
    """Waiting resend i went to the guest as a D-SACK: named once, forgotten."""
    del mp.undo[i]
    if mp.counters is not None:
        mp.counters[Counter.DsackUndoTX] += 1


def guest_ack_at(flow, mp) -> int:
    """Where (data-level, relative) a pure segment to the guest goes: the end of what went to
    it (fwd_end; Linux's own pure ACKs go at snd_nxt), never before what the guest acked nor
    beyond the window it offered. Acceptable to the guest (tcp_sequence), and never before a
    segment it took a window from: a window-only update at a lower seq is ignored
    (tcp_may_update_window; review of 0af049f: at rcv_rel, while the guest held bytes it had
    not acked yet)."""
    rel = flow.rcv_rel
    end = mp.fwd_end
    if end <= rel:
        return rel
    edge = rel + (flow.guest_window << flow.guest_wscale)
    return end if end < edge else edge


def guest_rst_at(flow, mp) -> tuple:
    """Where (data-level, relative) a RST to the guest goes: at its last ack, and at the end of
    what went to it when that is past it (bytes the guest holds and has not acked: its rcv_nxt
    is there, and Linux answers a RST anywhere but at rcv_nxt with a challenge ACK, RFC 5961).
    The one rule for every RST we give the guest in multipath (review of e5baeb8). Past the
    server's FIN when that went to it after its last byte (its rcv_nxt there once it has
    them all; a RST at the FIN itself lies outside its window)."""
    rel = flow.rcv_rel
    end = mp.fwd_end
    if flow.remote_fin:
        f = _unwrap((flow.remote_fin_seq - flow.server_isn) & M32, rel)
        if end >= f and f >= rel:
            end = f + 1
    return (rel, end) if end > rel else (rel,)


def _guest_rsts(flow, mp) -> list:
    return [_inject(_to_guest(flow, mp, (flow.server_isn + r) & M32, RST)) for r in guest_rst_at(flow, mp)]


def _guest_ack(flow, mp, now=None) -> bytes:
    return _to_guest(flow, mp, (flow.server_isn + guest_ack_at(flow, mp)) & M32, ACK, b"", now)


# -- the scheduler ------------------------------------------------------------------------------


def _cap_ok(p, length: int, now: float) -> bool:
    """May capped subflow p (cost policy: the marginal uplink) take `length` bytes now? Its
    token bucket fills at `cap` bytes/s up to CAP_DEPTH seconds of it (two 64 KB
    super-packets at least)."""
    if now > p.tok_at:
        depth = p.cap * CAP_DEPTH
        if depth < 131072.0:
            depth = 131072.0
        t = p.tokens + p.cap * (now - p.tok_at)
        p.tokens = depth if t > depth else t
        p.tok_at = now
    return p.tokens >= length


def _top_rate(mp) -> float:
    """The best delivery rate measured on an established subflow."""
    top = 0.0
    for p in mp.paths:
        if p.state is SS.ESTABLISHED and p.rate > top:
            top = p.rate
    return top


def _burst(r: float, top: float) -> int:
    """Bytes in a row for a subflow measured at `r`: BURST, but fewer, in proportion to its
    rate, on one under half as fast as the best (`top`)."""
    return int(BURST * r / top) if 0.0 < r and 2.0 * r < top else BURST


def _slow_share(mp, k: int, length: int, seg: int) -> int:
    """How many of `length` new bytes subflow k takes now, in whole segments of `seg`, at
    least one: if it is measured (a join: busy, its estimate not from what it was given, see
    below) under half as fast as the best established subflow, what the burst pick allows it
    (BURST in proportion to its rate); otherwise at most SHARE_TIME of its rate, when another
    established subflow (backup like it or not) may take the rest. Whole, a
    guest super-packet (netlink backend: ~28 KB on average, up to 64 KB) went to one subflow
    as one burst, and a 50 Mbit/s path with a 5 ms buffer (31 KB) dropped from it: the guest's
    one window halved for it (43 SACK recoveries in 8 s against Linux MPTCP's 12), and an
    upload over 3 x 50 Mbit/s reached 0.89 of Linux MPTCP; 0.99 with the guest's GSO off,
    0.96 with this cut (stop 40, bench/README.md)."""
    p = mp.paths[k]
    r = p.rate
    if r <= 0.0 or length <= seg or (k and (p.app_lim or p.snd_nxt == p.snd_una)):
        # no estimate yet; or a join's from what it was given since it last drained (low, not
        # what its path delivers): all of it, so that it is measured. Split there, a join the
        # cost policy had just brought in got a segment at a time, was measured low from that
        # and starved (0.2 MB of a 16 MB upload; test_cost_policy_keeps_the_dear_uplink_idle).
        # Subflow 1's estimate starts from the whole flow's rate before the joins, and it
        # drains between picks on a slow path: guarded like a join, 30+100 fell back to 0.96
        return length
    b = _burst(r, _top_rate(mp))
    if b >= BURST:
        n = int(r * SHARE_TIME) // seg * seg
        if seg <= n < length:
            for q in mp.paths:  # (only when another subflow may take the rest: cut for
                #                 nothing, subflow 1's super-packet lost its place)
                if q.index != k and q.state is SS.ESTABLISHED and not q.fin_sent and q.backup == p.backup:
                    return n
        return length
    n = b // seg * seg
    if n < seg:
        n = seg
    return n if n < length else length


def _fin_may_go(mp, end: int) -> bool:
    """May subflow 1 carry a TCP FIN after DSN `end` (the guest's FIN)? Only when no byte
    below it that the server lacks can need a new mapping: from the DATA_ACK to `end` every
    run on subflow 1, its bytes there not acked yet (acked, a new mapping: send's `lost`),
    none unsure (_head_hole's swap). Otherwise a join dying with bytes on it, or one of
    those, needs a new mapping later, and no subflow can take it: a subflow takes no byte
    after its FIN (pick), so with no join alive the resends went nowhere (ReinjectNoPath)
    and the upload stalled for good (a kernel failover capture, run 48 of stop 29). Held,
    the DATA_FIN goes without the FIN; the FIN follows once the server data-acks it (tick).
    Nor before every byte below it went out: a guest segment lost on its way here (a full
    queue) and its bare FIN after it, the segment's resend went as new bytes on subflow 1
    after its FIN, and so every time (the close model)."""
    if mp.snd_nxt < end:
        return False
    da = mp.data_ack
    if da >= end:
        return True
    if _unsure_in(mp, da, end):
        return False
    una = mp.paths[0].snd_una
    for a, b, idx, ss, _ in mp.runs:
        if b <= da or a >= end:
            continue
        if idx != 0 or ss + ((da - a) if da > a else 0) < una:
            return False
    return True


def pick(mp, length: int, counters, now: float = 0.0) -> int:
    """The subflow for `length` new bytes: bursts of BURST bytes; otherwise the one whose
    queue drains first, (inflight + length) / delivery rate, among established non-backup
    subflows (backups only when none), the server's window permitting (a join's own, with
    repair, decides only what is kept: _admit); never none while one is alive
    (the guest's congestion control is the limit, not us). -1 when no subflow is alive.
    Never one that sent its FIN (subflow 1 after the guest's): bytes beyond it, a resend
    reinjected there, the server's TCP never takes, and the close stalled (review)."""
    paths = mp.paths
    lp = mp.last_pick
    if lp >= 0 and mp.burst_left > 0:
        p = paths[lp]
        if (p.state is SS.ESTABLISHED and not p.fin_sent and p.snd_nxt + length <= p.snd_una + p.snd_wnd
                and (p.cwnd == 0 or p.snd_nxt < p.snd_una + p.cwnd)
                and (p.cap == 0.0 or _cap_ok(p, length, now))):
            mp.burst_left -= length
            if p.cap:
                p.tokens -= length
            return lp
    best = -1
    best_key = 0.0
    fallback = -1
    fallback_key = 0.0
    top = _top_rate(mp)
    for backup in (False, True):
        for p in paths:
            if p.state is not SS.ESTABLISHED or p.backup != backup or p.fin_sent:
                continue
            inflight = p.snd_nxt - p.snd_una
            rate = p.rate
            if inflight == 0 and rate < top:
                # idle: its estimate (none yet, or an old low one) only its own ACKs can
                # raise, so it is tried at a better rate. Without a sample, at the best rate
                # known: otherwise a join that got one early burst and no rate sample (0) lost
                # to every queue for good (a 64 KB super-packet costs 0.5 s at RATE_MIN; CI:
                # one join carried 28 KB of a 12 MB upload). With one, at twice its own, at
                # least a quarter of the best (an old estimate from a trickle recovers) and
                # at most the best: at the best, a slow path (10 of 10+50+50 Mbit/s) took a
                # whole super-packet whenever it had drained, held the data level up for
                # 50 ms and overflowed its queue (upload 17-35 Mbit/s, Linux MPTCP 102)
                # An estimate grows older while unused, and nothing else corrects it: it counts
                # double per IDLE_DOUBLING of idle time. Without that a join whose early sample
                # was low stayed idle for good once the others kept up with the guest (CI, pure
                # Python: uplink 2 carried 0.37 MB of an 8 MB upload)
                if rate > 0.0:
                    rate = max(2.0 * rate, 0.25 * top)
                    idle = now - p.progress_at
                    if idle > 0.0:
                        rate *= 2.0 ** min(idle / IDLE_DOUBLING, 8.0)
                if rate == 0.0 or rate > top:
                    rate = top
            if rate < RATE_MIN:
                rate = RATE_MIN
            key = (inflight + length) / rate
            if p.cap and not _cap_ok(p, length, now):
                counters[Counter.PolicyCapSkip] += 1  # (used only when nothing else can be)
                if fallback < 0 or key < fallback_key:
                    fallback, fallback_key = p.index, key
                continue
            if p.snd_nxt + length > p.snd_una + p.snd_wnd:
                counters[Counter.SubflowWindowLimited] += 1
                if fallback < 0 or key < fallback_key:
                    fallback, fallback_key = p.index, key
                continue
            # a join whose own window is full (repair on) competes all the same: what it
            # gets then is not kept (_admit, _keep), so a loss of it is the guest's to
            # answer. Kept off a full join, the bytes all went to subflow 1, which has no
            # window of its own: when that was the slow path its queue overflowed (30+100
            # Mbit/s clean, 114-115 Mbit/s against Linux's 121; 122 when it competes; also
            # tried: competing at twice its delivery time, 116-119, and 2 x 100 Mbit/s at
            # 1 % loss fell from 182 to 159)
            if best < 0 or key < best_key:
                best, best_key = p.index, key
        if best >= 0 or fallback >= 0:
            break
    if best < 0:
        best = fallback
    if best < 0:  # nothing established: a stale one rather than nothing
        for p in paths:
            if p.state is SS.STALE:
                best = p.index
                break
    mp.last_pick = best
    if best >= 0:
        p = paths[best]
        if p.cap:
            p.tokens -= length
        if p.cwnd and p.snd_nxt - p.snd_una >= p.cwnd:
            counters[Counter.JoinCwndLimited] += 1
    # a burst on a path less than half as fast as the best is shorter, in proportion to its
    # rate: BURST bytes on a slow path held the data level up (22 KB: 18 ms at 10 Mbit/s;
    # 10+50+50 Mbit/s upload 59-71 Mbit/s, 96-100 with short bursts there). Shortened on
    # every path slower than the best (or timed: 2 ms of each path's rate), bursts shrank on
    # the lossy one of two equal paths, whose estimate loss lowers: 2 x 100 Mbit/s with 1 %
    # loss went from 156-174 to 137-157 Mbit/s
    mp.burst_left = (_burst(paths[best].rate, top) if best >= 0 else BURST) - length
    return best


# -- the run map ----------------------------------------------------------------------------------


def _runs_add(mp, d0: int, d1: int, idx: int, s0: int, counters, merge: bool = True) -> bool:
    """A run for data [d0, d1) sent on path idx from subflow seq s0. Runs of one-segment
    mappings merge with the tail run when contiguous; a run whose mapping spans segments (a
    GSO super-packet rewritten in place) stands alone: its 5th field will hold that mapping,
    which every retransmission of its bytes must repeat exactly (Linux: DSSNotMatching when a
    segment wholly inside a partly received mapping brings another one)."""
    runs = mp.runs
    if runs and merge:
        t = runs[-1]
        if _continues(t, d0, idx, s0):
            t[1] = d1
            return True
    if len(runs) >= MAX_RUNS:
        return False
    runs.append([d0, d1, idx, s0, None])
    return True


def _continues(t, d: int, idx: int, s: int) -> bool:
    """Does run t end at DSN `d` on path `idx` at subflow seq `s`, with no mapping over
    several segments (so a run from there may merge into it)?"""
    return t[1] == d and t[2] == idx and t[3] + (t[1] - t[0]) == s and t[4] is None


def _runs_pieces(mp, d0: int, d1: int) -> list:
    """[(a, b, path, s, mapping)] covering what the run map knows of [d0, d1), in order;
    `mapping` is the run's multi-segment mapping (dsn rel, ssn rel, length, csum, DATA_FIN)
    or None."""
    runs = mp.runs
    i = bisect.bisect_right(runs, [d0, M64]) - 1
    if i < 0:
        i = 0
    out = []
    n = len(runs)
    while i < n:
        r0, r1, idx, s0, m = runs[i]
        if r0 >= d1:
            break
        if r1 > d0:
            a = max(r0, d0)
            b = min(r1, d1)
            out.append((a, b, idx, s0 + (a - r0), m))
        i += 1
    return out


def _runs_move(mp, a: int, b: int, idx: int, s: int) -> None:
    """Give data [a, b) a new home (path idx from subflow seq s): split the runs it covers,
    and merge the new run with a neighbour it continues (the same path, seqs on from its
    end, neither under a mapping over several segments), as _runs_add does: a dead
    subflow's bytes reinjected one guest resend at a time left a run each, past MAX_RUNS
    (review of 8820d21)."""
    runs = mp.runs
    out = []
    new = [a, b, idx, s, None]
    for r in runs:
        r0, r1, ridx, s0, m = r
        if r1 <= a or r0 >= b:
            out.append(r)
            continue
        if r0 < a:
            out.append([r0, a, ridx, s0, m])
        if r1 > b:
            out.append([b, r1, ridx, s0 + (b - r0), m])
    out.append(new)
    out.sort()
    i = out.index(new)
    if i + 1 < len(out):
        t = out[i + 1]
        if t[4] is None and _continues(new, t[0], t[2], t[3]):
            new[1] = t[1]
            del out[i + 1]
    if i > 0:
        t = out[i - 1]
        if _continues(t, a, idx, s):
            t[1] = new[1]
            del out[i]
    mp.runs = out


def _runs_trim(mp) -> None:
    """Forget runs whose bytes are data-acked and acked on their subflow (or whose subflow
    is closed): nothing can ask for them again."""
    runs = mp.runs
    paths = mp.paths
    da = mp.data_ack
    n = 0
    for r in runs:
        if r[1] > da:
            break
        p = paths[r[2]]
        if p.state is not SS.CLOSED and r[3] + (r[1] - r[0]) > p.snd_una:
            break
        n += 1
    if n:
        del runs[:n]


_NO_HOLE = (0, 0, None, 0)


def _head_hole(flow, mp, p, sd: int, avail: int, end: int, now: float, seg: int, csum_ok: bool = False) -> tuple:
    """The guest resends the data-level head or bytes above it (`avail` bytes of them in
    this segment) and their home is subflow p at relative seq `sd`, behind a hole of p's
    (_hole_from: at its snd_una, or the next one up) whose bytes lie beyond the segment
    (`end`). The server's TCP cannot pass the hole to take the head, and the guest (its
    cwnd at one segment after an RTO, grown only by acks of new data) resends nothing
    beyond the head until the head is acked: the upload stalled for good.
    The head reinjected on the only live join behind that join's own loss, after the other
    uplink went down; the model's reproducer, whose resends stopped short of the hole.
    Bytes above the head: the guest resends the next heads in the burst after its RTO, a
    few ms before each is the head; behind the holes left, each waited for the guest's
    next, backed-off RTO, the download crawling for a minute (the netlink failover capture
    of stop 28: eighteen one-segment holes on subflow 1). Each goes into the next hole.
    (n, dsn of the hole, the hole's run's mapping over several segments or None, the
    hole's seq) when the resend's first n bytes go into the hole as a new mapping and
    the hole's first n DSNs take the resend's old subflow seqs (send swaps the two homes;
    [sd, sd + n) below when its home is p, else its closed or acked home). The server never
    took the hole's subflow bytes (its cumulative ACK stops at them, or, above snd_una, a
    SACK block above shows them lost; n stops at the next SACK block, and inside the span
    the SACK record forgot at one segment `seg`), so whichever copy reaches it first is taken
    and consistent: Linux drops the other as a TCP duplicate or reads it on from its ACK
    under the mapping it carries (validate_mapping: a mapping may start before the bytes
    read). Whatever the server got, no subflow seq is left without a run: the guest's resend
    of the hole's DSNs fills [sd, sd + n) if the head's old copy was lost; if that copy
    arrived, the resend is a duplicate and the DSNs, acked there on the subflow and not
    delivered, are reinjected once they are the head (send's `lost`); if the hole's original
    won, the head is reinjected so too, and should its old copy have been lost, the
    reinjected head waits behind [sd, sd + n) and goes into that hole in turn (or, once its
    DSNs are data-acked, zeros do: _fill_acked_hole). (With the hole's DSNs homed anywhere else, [sd, sd + n)
    belonged to no run: the head's old copy lost there, the subflow stalled for good; the
    review's schedules.) Those DSNs go on mp.unsure: acked on the subflow, they may not be
    held, so guest_sack names none of them until they are data-acked, and a guest resend of
    them acked at their new place goes as a new mapping (send); above the DATA_ACK the
    resend's own DSNs too (_into_hole).
    Not with DSS checksums (Linux sums a mapping from the bytes it reads on: one whose start
    the other copy took fails, DataCsumErr), nor inside a mapping over several segments past
    its start, nor past fills in it still in flight (DSSNotMatching), nor while we repair
    the hole ourselves (_hole_evident), nor above snd_una without a SACK block above, nor in
    the span the SACK record forgot above snd_una (_hole_from). Above the head, _into_holes
    also refuses where the server may hold the resend's old copy. _NO_HOLE: nothing to do."""
    h0 = _hole_from(p)
    if (flow.checksum and not csum_ok) or sd <= h0 or p.fin_sent or not _hole_evident(flow, p, h0, now):
        return _NO_HOLE  # (sd <= h0 too when _hole_from finds none: h0 is snd_nxt)
    sack = _lost_shown(p, h0)
    if h0 > p.snd_una and sack < 0:
        # (above snd_una only a SACK block above shows a loss: the clock runs from the
        # cumulative ACK, and bytes above every block may still be in flight; their
        # original, sent earlier, would win, a D-SACK; review of 186b8fd)
        return _NO_HOLE
    if p.index == 0:
        if p.state not in ALIVE:
            return _NO_HOLE
    elif p.state is not SS.ESTABLISHED:
        return _NO_HOLE
    da = mp.data_ack
    if len(mp.runs) + (2 if csum_ok else 6) > MAX_RUNS:
        # (two moves, and send's reinjection of the rest; with checksums no swap, only the
        # head's move elsewhere: +6 hid a stuck head from that rule with a fragmented map,
        # review 2 of stop 46)
        return _NO_HOLE
    r = _run_at(mp, p.index, h0)
    if r is None:
        return _NO_HOLE
    r0, r1, _, s0, m = r
    dh = r0 + (h0 - s0)
    if ((m is not None and m[1] != h0 and not (p.fill_m is m and p.fill_end == h0 == p.snd_una))
            or dh <= da or dh < end):
        # (inside a mapping over several segments whose start the server took: it has
        # begun that mapping and takes no other inside it. At its start, the server holds
        # none of it in order (its out-of-order bytes are not mapped yet, nor merged with
        # a copy of another mapping), so the head goes in and the rest keeps that mapping:
        # a whole super-packet on subflow 1 lost at once left the head behind it for good,
        # a segment per RTO, the netlink failover captures. So too right after heads we
        # put in from its start, acked up to the last one's end: the server read those
        # under their own mappings, and the next head would wait there; review of c335069.
        # A late original of its first segment, taken before our head, would have begun
        # it: then the server resets subflow 1, visibly. Not inside it while such heads
        # are still in flight: the fills go on only between mappings of their own)
        return _NO_HOLE
    h1 = s0 + (r1 - r0)
    if sd < h1:
        h1 = sd
    if h0 < sack < h1:
        h1 = sack
    n = h1 - h0
    if avail < n:
        n = avail
    if p.gap_lo <= h0 < p.gap_hi and n > seg:
        n = seg  # (where the ranges the record forgot begin is unknown: one lost segment, `seg`)
    # (up to the end of what the guest sent too: its FIN riding on a resend of those
    # DSNs, acked at [sd, sd + n) as the head's, goes as a new mapping, send's unsure
    # case. Stopped one byte short instead (review of a34025a), the head's last byte
    # waited behind the hole's last, which the guest, window-limited, had sent last:
    # a deadlock, inbound failover captures)
    return (n, dh, m, h0)


def _hole_from(p) -> int:
    """Where the next resend into subflow p's holes goes (_head_hole): its snd_una, or past
    the last fill while the server has not acked it (each resend into the next hole, not
    onto the last one) unless that fill is shown lost (_fill_lost), past what the server
    SACKed; p.snd_nxt (none) inside the span the SACK record forgot."""
    h0 = p.snd_una
    if p.fill_hi and h0 < p.fill_end and not _fill_lost(p):
        h0 = p.fill_end
    for s, e in p.sacked:  # (ascending)
        if s <= h0 < e:
            h0 = e
    if p.gap_lo <= h0 < p.gap_hi and h0 > p.snd_una:
        # (the record was cut there, _board: SACKed bytes it forgot would look like holes,
        # and a fill would go onto them; reviews of 186b8fd and 8820d21: a rule that held only
        # while the record was full let them through once an ACK had trimmed it)
        return p.snd_nxt
    return h0


def _fill_lost(p) -> bool:
    """Is subflow p's last fill (_into_hole) lost? The server SACKed bytes first sent after it
    (at or above fill_hi, p's snd_nxt then) while its cumulative ACK stops below the fill's
    end: on a FIFO path the fill went missing (RACK's reasoning, as lost_una's). Its hole is
    a hole again: taken as still in flight, it hid the hole from every later resend of the
    head, which went in place behind it as a duplicate, while the hole's DSNs lay above the
    head, never resent by the guest: the DATA_ACK stopped for good (hclose harness,
    upg-closeloss, 25 % loss). Not when the fill's hole lay in a mapping over several
    segments (fill_m) and the cumulative ACK stops inside the fill: the server may have read
    the hole's original under that mapping (a one-segment fill is taken whole or not at
    all), and then takes no other mapping inside it (DSSNotMatching, the subflow reset); the
    run map no longer shows that mapping there (the fill's run has none: _head_hole's guard
    does not see it)."""
    if p.fill_m is not None and p.snd_una > p.fill_lo:
        return False
    for s, e in p.sacked:
        if e > p.fill_hi:
            return True
    return False


def _into_holes(conv, flow, mp, q, a: int, b: int, e: int, sd: int, home: int, hs: int, now: float,
                pieces) -> int:
    """Guest bytes [a, b) resent (in a segment ending at DSN `e`), their home path `home`
    from seq `hs`, due at q's seq `sd`: each hole of q that they may fill (_head_hole) takes
    the next of them, a piece appended to `pieces`. Returns the DSN up to which they went
    (`a`: none). Due at their home (q is it), `sd` moves with them. Above the DATA_ACK they
    stop where the server may hold their old copy (_holds_any)."""
    same = sd == hs and home == q.index
    seg = _seg_max(q, guest_seg(conv, flow, q.version))
    counters = conv.counters
    hp = mp.paths[home]
    if flow.checksum:
        # No swap with DSS checksums: Linux sums a mapping from where it reads on
        # (validate_data_csum), and whether every copy of the hole's bytes that may still
        # reach the server has exactly the fill's range, the only case where either copy may
        # win (tcp_data_queue drops a whole duplicate, queues a partial one untrimmed), is
        # not known here (the run map keeps no segment boundaries). The data-level head
        # waiting there for good goes to another subflow and this one is reset, or, none
        # alive, it is reset and joins open (send, _csum_stuck_reset).
        if a == mp.data_ack and _head_hole(flow, mp, q, sd, b - a, e, now, seg, True)[0]:
            mp.csum_stuck = q.index
        return a
    while a < b:
        n, dh, m, h0 = _head_hole(flow, mp, q, sd, b - a, e, now, seg)
        if not n or (a > mp.data_ack and _holds_any(hp, hs, hs + n)):
            # (above the head, not when the server holds bytes at their old seqs: the
            # hole's DSNs would go onto them, and the guest's resend of those DSNs, often
            # in the same burst, went there in place as a duplicate; its own hole taken,
            # the DATA_ACK stopped at it for good, a netlink failover capture of this stop.
            # The head still goes in: nothing else lets the data level pass)
            break
        _into_hole(mp, q, a, n, dh, m, home, hs, h0, counters)
        pieces.append((a, a + n, q.index, h0, None))
        a += n
        hs += n
        if same:
            sd += n
    return a


def _stuck_behind(conv, flow, mp, q, a: int, b: int, e: int, now: float) -> bool:
    """With DSS checksums: would the data-level head [a, b) (of a guest segment ending at
    DSN `e`), sent at q's snd_nxt, wait behind a hole of q whose DSNs lie beyond it
    (_into_holes' test)?"""
    if not flow.checksum or a != mp.data_ack:
        return False
    seg = _seg_max(q, guest_seg(conv, flow, q.version))
    return _head_hole(flow, mp, q, q.snd_nxt, b - a, e, now, seg, True)[0] > 0


def _pick_other(conv, flow, mp, x, a: int, b: int, e: int, now: float, clean_only: bool) -> int:
    """A live subflow other than x for the data-level head [a, b) stuck behind x's hole
    (send, DSS checksums): established, no FIN sent, not a backup unless only backups are
    left, the server's window permitting if one does, the one whose queue drains first (as
    pick); first among those where the head would not wait behind a hole of theirs too
    (_stuck_behind: a review of 277af48 put it there, and both subflows were reset for one
    head), then, unless `clean_only`, among any. -1: none."""
    length = b - a
    for clean in (True, False):
        if not clean and clean_only:
            break
        for backup in (False, True):
            for wnd in (True, False):
                best = -1
                best_key = 0.0
                for p in mp.paths:
                    if p is x or p.state is not SS.ESTABLISHED or p.backup != backup or p.fin_sent:
                        continue
                    if wnd and p.snd_nxt + length > p.snd_una + p.snd_wnd:
                        continue
                    if clean and _stuck_behind(conv, flow, mp, p, a, b, e, now):
                        continue
                    rate = p.rate if p.rate > RATE_MIN else RATE_MIN
                    key = (p.snd_nxt - p.snd_una + length) / rate
                    if best < 0 or key < best_key:
                        best, best_key = p.index, key
                if best >= 0:
                    return best
    return -1


def _csum_stuck_reset(conv, flow, mp, now: float) -> list:
    """With DSS checksums the guest's resend of the data-level head went behind a hole of
    its subflow whose DSNs lie beyond it (_into_holes): the guest resends nothing past the
    head before the head is acked, and no new mapping can go into the hole safely. (A
    helper's analysis, stop 31: a fill of the hole is safe with checksums only if every copy
    of its bytes that may reach the server has exactly its range, which the run map,
    keeping no segment bounds, cannot tell.)

    Another subflow alive: send put the head there as a new mapping, and the run map maps
    its copy behind the hole no more. The stuck subflow is reset as if its link died
    (_j_dead: MP_TCPRST or, subflow 1, the REMOVE_ADDR; the guest prompted), its other bytes
    go to new homes as the guest resends them, and a join opens again over its uplink. Left
    alone for "the stale and dead clocks" to decide, it held the head for good: subflow 1
    went stale, its probe was answered, it never died; a join, the bytes after its hole
    SACKed, never went stale (a helper's fuzzer of the model, stop 46; a CI upload of a guest
    without timestamps and SACK hung).

    None alive: it is reset the same way and a join opened again over every uplink up
    (_revive); the guest's resends go there as new mappings (their home closed). Linux keeps
    an established msk without subflows for its close timeout (__mptcp_close_ssk) and takes
    a join meanwhile (__mptcp_finish_join stops that timer). Only when the server would take
    a join (_joinable) and an uplink is up; with no slot left for one (MAX_PATHS) the guest
    is then reset, visibly (_no_path_left), rather than left waiting for good. An inbound
    flow's peer opens its subflows (issue 9): one stuck beside a live one is reset with its
    REMOVE_ADDR, and that uplink is lost to the connection; one stuck alone waits."""
    k = mp.csum_stuck
    mp.csum_stuck = -1
    p = mp.paths[k]
    if p.state not in ALIVE:
        return []
    counters = conv.counters
    if any(q is not p and q.state in ALIVE for q in mp.paths):
        if not mp.csum_moved:
            return []  # (the head went in place: none to take it; the clocks decide after all)
        mp.csum_moved = False
        up = p.uplink
        if up is None and p.index == 0:
            up = next((u for u in conv.config.uplinks if u.id == flow.sf1_uplink), None)
        remote, rport = (mp.server, mp.sport) if p.index == 0 else (p.remote, p.rport)
        counters[Counter.CsumStuckReset] += 1
        acts = _event(conv, flow, p, SI.LINK_DOWN, now)
        if (up is not None and conv.uplink_up.get(up.name, up.up) and _joinable(flow, mp)
                and _may_rejoin(flow, mp) and not (remote == mp.server and flow.no_initial_join)):
            syn = _open_join(conv, flow, mp, up, now, remote, rport)
            if syn:
                counters[Counter.MPJoinRejoin] += 1
                acts.extend(syn)
        return acts
    v = mp.version
    if (not _joinable(flow, mp)
            or not any(conv.uplink_up.get(up.name, up.up) and _addr(up.addr4 if v == 4 else up.addr6, v)
                       for up in conv.config.uplinks)):
        return []
    # (no slot left for a join, MAX_PATHS used by earlier resets: reset all the same, and
    # the guest is reset visibly (_revive, _no_path_left) rather than left waiting for good
    # behind the hole; review of 277af48)
    counters[Counter.CsumStuckReset] += 1
    return _event(conv, flow, p, SI.LINK_DOWN, now)


def _holds_any(p, a: int, b: int) -> bool:
    """May the server hold any of subflow p's relative seqs [a, b): acked, SACKed, or in the
    span its SACK record forgot, while p lives?"""
    if p.state is SS.CLOSED:
        return False
    if a < p.snd_una or (a < p.gap_hi and p.gap_lo < b):
        return True
    for s, e in p.sacked:
        if s < b and a < e:
            return True
    return False


def _into_hole(mp, q, d: int, n: int, dh: int, m, home: int, hs: int, h0: int, counters) -> None:
    """_head_hole's swap: a resend's first `n` bytes (DSN `d`) into q's hole at `h0`, the
    hole's DSNs `dh`.. to the resend's old home (path `home` from seq `hs`), unsure until
    data-acked; Karn, and what the ACK past the fill stops at is lost (`Path.lost_una`).
    `m`: the mapping over several segments the hole is in (None: none)."""
    if q.fill_hi and h0 < q.fill_end:
        counters[Counter.FillLostRefilled] += 1  # (below the last fill's end: _fill_lost)
    q.fill_m = m
    _runs_move(mp, dh, dh + n, home, hs)
    if mp.paths[home].state is SS.CLOSED and dh + n > mp.orphan_hi:
        mp.orphan_hi = dh + n  # (homed on a closed subflow: heads to come, review of c4e66a8)
    _runs_move(mp, d, d + n, q.index, h0)
    _unsure_add(mp, dh, dh + n)
    if d > mp.data_ack:
        # (the resend's DSNs too: the hole's late original may win at h0, and their old copy
        # be lost, or thrown away though SACKed: the subflow closed, or the server pruned
        # it. Above the DATA_ACK they were named held to the guest and its resends of them
        # dropped, until they were the head; reviews of 186b8fd and 3598d89)
        _unsure_add(mp, d, d + n)
    if q.rtt_ssn and h0 < q.rtt_ssn:
        q.rtt_ssn = 0
    q.fill_hi = q.snd_nxt
    q.fill_lo = h0
    q.fill_end = h0 + n
    q.lost_una = -1
    counters[Counter.HeadIntoHole] += 1


def _run_at(mp, idx: int, ss: int):
    """The run (dsn0, dsn1, path index, subflow seq, mapping) that holds relative subflow seq
    `ss` of path `idx` (None: none)."""
    for r in mp.runs:
        if r[2] == idx and r[3] <= ss < r[3] + (r[1] - r[0]):
            return r
    return None


def _unsure_in(mp, a: int, b: int) -> bool:
    """Do DSNs [a, b) above the DATA_ACK touch an unsure range (_head_hole)?"""
    if a < mp.data_ack:
        a = mp.data_ack
    for u0, u1 in mp.unsure:
        if u0 < b and a < u1:
            return True
    return False


def _unsure_drop(mp, a: int, b: int) -> None:
    """DSNs [a, b) went out as a new mapping: no longer unsure once acked there, and left on
    the list every guest resend of them went out again, the guest never told (guest_sack
    cuts them out) that the server held them (review of ec6a9df). Kept when cutting them
    out would split a range beyond MAX_UNSURE."""
    if not mp.unsure:
        return
    out = []
    for u0, u1 in mp.unsure:
        if u1 <= a or u0 >= b:
            out.append([u0, u1])
            continue
        if u0 < a:
            out.append([u0, a])
        if u1 > b:
            out.append([b, u1])
    if len(out) <= MAX_UNSURE:
        mp.unsure = out


def _unsure_add(mp, a: int, b: int) -> None:
    """[a, b) on mp.unsure: merged with the ranges it touches, the ones the data level passed
    dropped; beyond MAX_UNSURE the two closest merge (ascending and apart: guest_sack's
    _cut). (Refused when full, a chain of heads into one long hole, one guest segment a
    time, stopped at the ninth and the deadlock was back, review of a34025a; the whole
    list's hull instead hid from the guest every held byte up to the last hole, review of
    8820d21.)"""
    da = mp.data_ack
    out = []
    for u in mp.unsure:
        if u[1] <= da:
            continue
        if u[1] < a or u[0] > b:
            out.append(u)
        else:
            a, b = min(a, u[0]), max(b, u[1])
    out.append([a, b])
    out.sort()
    while len(out) > MAX_UNSURE:
        i = min(range(len(out) - 1), key=lambda k: out[k + 1][0] - out[k][1])
        out[i:i + 2] = [[out[i][0], max(out[i][1], out[i + 1][1])]]
    mp.unsure = out


def _holder(mp) -> int:
    """The path holding the byte at DATA_ACK, or -1."""
    pieces = _runs_pieces(mp, mp.data_ack, mp.data_ack + 1)
    return pieces[0][2] if pieces else -1


def _head_orphaned(mp) -> bool:
    """Bytes out at the data level, and the one at DATA_ACK homed on a closed subflow: nothing
    carries it until the guest resends it, so a server ACK that moves nothing there (its bytes
    above arrived) is the guest's news of that loss, as a receiver's duplicate ACK, not
    reordering between subflows. Suppressed, a guest whose RTO resend of the head went to a
    new join and was acked sent two new segments (Linux's F-RTO) and, hearing nothing more,
    waited out its next backed-off RTO: 4, 8, 15 s (make soak-guest, stop 46)."""
    if mp.snd_nxt <= mp.data_ack:
        return False
    h = _holder(mp)
    return h >= 0 and mp.paths[h].state is SS.CLOSED


def _orphan_news(mp, p, pkt, data, una0: int, subdup: bool) -> bool:
    """Is pure server ACK `pkt` on p, which moved no data level, the guest's news of its
    orphaned head (_head_orphaned)? It acks bytes on p (from `una0`) or is a subflow-level
    duplicate, and may be the answer to something of ours (_probe_answer_like): the ACK that
    completes a join's handshake is no news, nor a path manager's ACK or the server's
    keepalive (review 3 of stop 46). One rule for subflow 1 (sf1_in) and the joins."""
    return (subdup or p.snd_una > una0) and _probe_answer_like(p, pkt, data) and _head_orphaned(mp)


# -- guest -> server ---------------------------------------------------------------------------


def _guest_probe(conv, flow, mp, pkt, data: bytes, sf1_ack: int, data_ack: int, raw) -> list | None:
    """A pure guest segment before what the server data-acked: the guest's window probe (Linux
    sends it at snd_una - 1 while the window it holds is closed) or a keepalive. It goes on
    as one: at the subflow's snd_una - 1 (as Linux's own, always below what the server
    takes), on subflow 1 or else the best live join, and the server's answer goes on to the
    guest (_probe_answer). Sent as an ordinary ACK, nobody answered it (or it was held as a
    duplicate, _sf1_dup): a lost window update of the server's was never repeated and the
    guest probed until its transfer timed out. The server takes nothing from a probe (RFC
    9293 §3.10.7.4), so one carrying a new subflow-1 ack (Linux may send no other ACK) goes
    as an ordinary ACK (None: send goes on as usual), and a DATA_ACK not carried yet goes by
    the clock (dack_due)."""
    p0 = mp.paths[0]
    if flow.rcv_rel > mp.dack_out and not mp.dack_due:
        # a DATA_ACK not carried yet (held at the edge, _sf1_dack_cap): by the clock's ACK.
        # (Waiting for it to be carried here sent every probe of an idle flow as an ACK
        # that was held or never answered: the guest's keepalive reset the connection.)
        mp.dack_due = flow.last + DACK_FLUSH
    if p0.state in ALIVE:
        if sf1_ack != mp.sf1_ack_out:
            return None  # a new subflow ack: an ordinary ACK (never a duplicate, _sf1_dup)
        options = conv._room(pkt, data, _dss_ack(data_ack, flow.ack64), raw)
        if options is None:
            return [Drop("no option room for the DATA_ACK")]
        conv.counters[Counter.GuestProbeFwd] += 1
        mp.probe_at, mp.probe_on = flow.last, 0
        return [Rewrite(rewrite(data, pkt, seq=(p0.local_isn + p0.snd_una - 1) & M32, ack=sf1_ack,
                                options=options))]
    actions = [Drop("guest window probe: subflow 1 is gone, it goes on another subflow")]
    k = _best_live(mp)
    if k > 0:
        p = mp.paths[k]
        conv.counters[Counter.GuestProbeFwd] += 1
        mp.probe_at, mp.probe_on = flow.last, k
        actions.append(_inject(_below_window(flow, p, build_options(b"", (_dss_ack(data_ack, flow.ack64),)))))
    return actions


def _probe_answer(mp, idx: int, now: float) -> bool:
    """Is a pure server ACK on path `idx` the answer to the guest's probe we sent there
    (_guest_probe) within ANSWER_WAIT? Then it goes to the guest even when it moves nothing
    (a keepalive's answer: without it the guest resets a healthy idle connection); once."""
    if mp.probe_at and mp.probe_on == idx and now - mp.probe_at <= ANSWER_WAIT:
        mp.probe_at = 0.0
        return True
    return False


def send(conv, flow, pkt, data: bytes, rel: int, data_ack: int, new_ack: int, raw) -> list:
    """A guest ACK/data/FIN of a multipath flow: each byte to its home subflow (new bytes to
    the scheduler's choice), in place on subflow 1, injected on the others."""
    mp = flow.mp
    counters = conv.counters
    now = flow.last
    plen = pkt.payload_len
    fin = pkt.flags & FIN
    sf1_ack = pkt.ack if new_ack == -1 else new_ack
    p0 = mp.paths[0]
    p0_alive = p0.state in ALIVE
    sf1_sent = p0.snd_nxt - (1 if p0.fin_sent else 0)  # subflow 1's bytes sent before this segment
    dscp = (data[1] if pkt.version == 4 else (data[0] << 4 | data[1] >> 4) & 0xFF) & 0xFC
    if dscp != mp.marks[0]:
        mp.marks = (dscp, 64, 0)  # (the guest's DSCP on our packets of this flow; MpConn)
    if fin:
        flow.guest_fin((pkt.seq + plen) & M32)
        if mp.data_ack > rel + plen and not flow.inbound:
            # the server data-acked every byte and the DATA_FIN (ours lost on its way to the
            # guest): tell the guest again, as a TCP receiver answers an old segment. Sent on
            # as a duplicate (its acked piece with the FIN, a bare DATA_FIN), nothing moved
            # and nothing reached the guest: its FIN resends went on for good (a review's
            # model run, stop 46: a guest without SACK, its close on its last bytes)
            counters[Counter.GuestAckAgain] += 1
            return [Drop("guest FIN resent: the server has acknowledged it"), _inject(_guest_ack(flow, mp))]
    if not plen and not fin:
        if _unwrap((pkt.seq - flow.guest_isn) & M32, mp.data_ack) < mp.data_ack:
            acts = _guest_probe(conv, flow, mp, pkt, data, sf1_ack, data_ack, raw)
            if acts is not None:
                return acts
        if p0_alive and _sf1_dup(flow, mp, sf1_ack, pkt.window):
            counters[Counter.Sf1DupAckHeld] += 1
            if flow.rcv_rel > mp.dack_out and not mp.dack_due:
                mp.dack_due = now + DACK_FLUSH
            return [Drop("guest ACK: a subflow-1 duplicate moving only the DATA_ACK")]
        if p0_alive:
            counters[Counter.DataAckTX] += 1
            _dack_carried(flow)
            data_ack = _sf1_dack(flow, mp, p0.snd_nxt, sf1_ack, pkt.window, data_ack)
            options = conv._room(pkt, data, _dss_ack(data_ack, flow.ack64), raw)
            if options is None:
                return [Drop("no option room for the DATA_ACK")]
            return [Rewrite(rewrite(data, pkt, seq=(p0.local_isn + p0.snd_nxt) & M32, ack=sf1_ack,
                                    options=options))]
        actions = [Drop("guest ACK: subflow 1 is gone, the DATA_ACK goes on another subflow")]
        if data_ack != mp.dack_sent or flow.rcv_rel > mp.dack_out:  # (or our last stopped short)
            k = _best_live(mp)
            if k > 0:
                mp.dack_sent = data_ack
                actions.append(_inject(_ack_on(flow, mp.paths[k])))
        return actions
    s, e = rel, rel + plen
    pieces = []
    mp.csum_stuck = -1  # (set by _into_holes below, acted on at the end)
    mp.csum_moved = False
    quiet = 0.0
    if plen and conv.config.dsack_undo:  # (the clocks of the RTO rule below: only with it)
        if mp.g_at:
            quiet = now - mp.g_at
        mp.g_at = now
    # --dsack-undo: this resend is named to the guest as a D-SACK only if every piece of it
    # went to its join within the join's window (or the server has it already): one piece on
    # subflow 1, reinjected, or beyond a window keeps the guest's cut whole (a D-SACK of a
    # part of its resent segment counts as a whole segment once below its snd_una)
    undo = 0  # 1: a piece qualifies; -1: one does not
    if (conv.config.dsack_undo and s <= mp.data_ack < e and s < mp.snd_nxt and flow.sack_ok
            and (quiet >= GUEST_RTO_QUIET or (mp.da_at and now - mp.da_at >= GUEST_RTO_QUIET))):
        # the guest's RTO (GUEST_RTO_QUIET): no D-SACK until it is past what it had sent, and
        # none of those waiting (in its loss state they count towards undoing the RTO)
        if mp.undo or mp.undo_hold <= mp.data_ack:
            counters[Counter.UndoAfterRto] += 1
        mp.undo = []
        mp.undo_hold = mp.snd_nxt

    merged = False  # new bytes joined the tail run (run map full): they go out cut, see below
    skipped = False  # bytes resent that their subflow had acked (not sent again)
    nopath = False  # a piece to reinject found no live subflow (dropped: the guest resends)
    if plen:
        if s < mp.snd_nxt:
            old = _runs_pieces(mp, s, min(e, mp.snd_nxt))
            if len(old) > 1:
                counters[Counter.RetransSplit] += 1
            for a, b, idx, ss, m in old:
                p = mp.paths[idx]
                if p.state is SS.CLOSED and b <= mp.data_ack:
                    continue  # the server has these bytes (data-acked): nothing to resend
                below = ss + (b - a) <= p.snd_una  # its subflow acked them
                acked = below and not (fin and b == e)
                # (the FIN's piece too: sent again at its acked seqs, a whole duplicate the
                # server drops unread, every RTO, while subflow 1's FIN waited for it;
                # second review of the FIN hold)
                lost = below and a <= mp.data_ack < b
                if (not lost and below and b > mp.data_ack and p.state is not SS.CLOSED
                        and _unsure_in(mp, a, b)):
                    # its subflow acked bytes that may be another DSN's (_head_hole's swap):
                    # new copies now, the guest's FIN with them too (at their seqs it went as
                    # a duplicate with the server's copy). Dropped (GuestRetransAcked), they
                    # were the guest's only resend: by the time they were the head it waited
                    # a backed-off RTO (15 s, inbound failover captures)
                    lost = True
                    counters[Counter.UnsureResent] += 1
                if p.state is SS.CLOSED or lost:  # home gone, or its subflow acked what the msk lacks
                    undo = -1
                    if a < mp.data_ack:
                        ss += mp.data_ack - a
                        a = mp.data_ack
                    k = pick(mp, b - a, counters, now)
                    if k < 0:
                        counters[Counter.ReinjectNoPath] += 1  # (dropped: the guest resends)
                        nopath = True
                        continue
                    q = mp.paths[k]
                    if not fin:
                        # due at q's snd_nxt: behind q's holes, whose DSNs lie beyond them,
                        # they waited for the guest's next RTO (then _head_hole below). Into
                        # those holes now, the holes' DSNs to their old home (closed, or acked
                        # there: reinjected when the guest resends them)
                        f = _into_holes(conv, flow, mp, q, a, b, e, q.snd_nxt, idx, ss, now, pieces)
                        if f > a:
                            counters[Counter.ReinjectTX] += 1
                            if f == b:
                                continue
                            ss += f - a
                            a = f  # (the rest to q's tail)
                        elif mp.csum_stuck == k and a == mp.data_ack:
                            # the head would wait behind q's hole (DSS checksums): to another
                            # subflow where it does not, if one lives (else there, and the
                            # next resend finds it stuck: the rule in place below). The head
                            # only: a later piece cleared a stuck mark the head had set, and
                            # the stuck subflow lived on with a copy no run mapped (review 2)
                            k2 = _pick_other(conv, flow, mp, q, a, b, e, now, True)
                            if k2 >= 0:
                                mp.csum_stuck = -1
                                if q.cap:
                                    q.tokens += b - a  # (pick took them for q: back)
                                k = k2
                                q = mp.paths[k]
                    _admit(q, b - a)
                    _runs_move(mp, a, b, k, q.snd_nxt)
                    _unsure_drop(mp, a, b)
                    ss = q.snd_nxt
                    _wait_from(q, now)  # (as for new bytes below)
                    q.snd_nxt += b - a
                    idx = k
                    m = None
                    counters[Counter.ReinjectTX] += 1
                elif acked:
                    # its subflow acked these bytes: the server's TCP would discard them as a
                    # duplicate (only a new mapping could repair a loss above that, and the
                    # server keeps what its subflow acked). After an RTO the guest (no SACK)
                    # resends everything from its snd_una; sent again, those copies crowded
                    # out the resends of real holes and lost them too (more RTOs)
                    counters[Counter.GuestRetransAcked] += 1
                    skipped = True
                    continue
                else:
                    counters[Counter.GuestRetransMapped] += 1
                    if b <= mp.data_ack:
                        pass  # (the server has these: a D-SACK of them is true)
                    elif p.inwin is None or not flow.sack_ok:
                        undo = -1  # (subflow 1's loss: its cut stands)
                    else:
                        # --dsack-undo: a loss of bytes sent within the join's own window is
                        # the join's to answer (its window is cut); the guest, whose one window
                        # this resend cut too, is told by a D-SACK to undo that. Bytes sent
                        # beyond it keep the guest's cut, as without the option
                        if _inwin_has(p, ss, ss + (b - a)):
                            if undo == 0:
                                undo = 1
                            if ss >= p.recover:
                                _cwnd_cut(p)
                                counters[Counter.JoinCwndCut] += 1
                        else:
                            undo = -1
                            counters[Counter.UndoBeyondWindow] += 1
                    if p.rtt_ssn and ss < p.rtt_ssn:
                        p.rtt_ssn = 0  # Karn
                    da = mp.data_ack
                    if b > da and not fin:
                        h = a if a > da else da  # (the server has the bytes below)
                        sd = ss + (h - a)
                        f = _into_holes(conv, flow, mp, p, h, b, e, sd, idx, sd, now, pieces)
                        if f > h:  # into the holes they waited behind, the holes' DSNs to their place
                            if f < b:
                                pieces.append((f, b, idx, ss + (f - a), m))
                            continue
                        if mp.csum_stuck == p.index and h == mp.data_ack:
                            # (the head only: a later piece of the segment on a subflow the
                            # head was just reinjected behind is no head; review of 277af48)
                            k = _pick_other(conv, flow, mp, p, h, b, e, now, False)
                            if k >= 0:
                                # With DSS checksums the data-level head waits behind its
                                # subflow's hole, whose DSNs lie beyond it (no swap: _into_holes).
                                # Another subflow lives: the head goes there as a new mapping,
                                # and the stuck one is reset below (_csum_stuck_reset)
                                mp.csum_moved = True
                                q = mp.paths[k]
                                _admit(q, b - h)
                                _runs_move(mp, h, b, k, q.snd_nxt)
                                _unsure_drop(mp, h, b)
                                _wait_from(q, now)
                                pieces.append((h, b, k, q.snd_nxt, None))
                                q.snd_nxt += b - h
                                counters[Counter.ReinjectTX] += 1
                                counters[Counter.CsumHeadReinjected] += 1
                                undo = -1
                                continue
                pieces.append((a, b, idx, ss, m))
            if undo > 0 and e <= mp.snd_nxt and mp.data_ack >= mp.undo_hold:
                # (not one that also brings new bytes: a D-SACK of a part of the segment the
                # guest resent counts as a whole one once below its snd_una; second review)
                _undo_add(mp, s, e)
            elif undo < 0 and mp.undo:
                _undo_drop(mp, s, e)  # (resent again elsewhere: its cut stands; third review)
        e_all = e  # (new bytes may be split among subflows: `e` is the end of each share)
        shared = -1  # the subflow that took a share of these bytes (then the rest goes on
        #              it whole if chosen again: a best one it cannot use now, window- or
        #              cap-limited, cut a super-packet into dozens; review of the split)
        while e_all > mp.snd_nxt:
            start_d = mp.snd_nxt
            e = e_all
            if fin and p0_alive:
                k = 0  # (the guest's FIN goes on subflow 1 with its DATA_FIN: no split)
            else:
                k = pick(mp, e_all - start_d, counters, now)
                if k >= 0 and k != shared and s <= start_d:
                    # a subflow under half the best rate takes only its share, in whole segments,
                    # any other at most SHARE_TIME of its rate (a burst its path's queue takes);
                    # the rest is scheduled again. Given a whole super-packet (netlink backend: up
                    # to 64 KB, 17 ms at 30 Mbit/s) it held the data level up and the guest's one
                    # window waited on it: 30+100 Mbit/s upload 0.96 of Linux MPTCP, 1.01 split
                    # (the NetfilterQueue backend, whose packets come segmented, 0.99)
                    n = _slow_share(mp, k, e_all - start_d, _seg_max(mp.paths[k], guest_seg(conv, flow, pkt.version)))
                    if n < e_all - start_d:
                        e = start_d + n
                        if shared < 0:
                            counters[Counter.SlowPathShare] += 1
                        shared = k
                        q = mp.paths[k]
                        if q.cap:  # (pick took tokens for all of them: back what it does not take)
                            q.tokens += e_all - e
            if k < 0:
                counters[Counter.RunMapDrop] += 1
                return [Drop("no live subflow")]
            p = mp.paths[k]
            # a super-packet wholly new on subflow 1 goes in place with one mapping, unless the
            # run map is nearly full: a whole-mapping run takes no merge, and with one at the
            # tail of a full map the next new bytes found no run and were dropped (RunMapDrop;
            # the guest's RTOs then, 2 % loss upload runs at 10-40 Mbit/s on the netlink
            # backend). Cut instead (per-segment mappings, like a merge), the tail run can
            # always take the next bytes on its subflow
            big = e - s > guest_seg(conv, flow, pkt.version)
            if big and len(mp.runs) >= MAX_RUNS - RUNS_SPARE:
                merged = True
                counters[Counter.RunMapNearFull] += 1
            whole = (k == 0 and not pieces and s == start_d and e == e_all and big and not merged
                     and not flow.checksum)
            if whole and (mp.data_ack < mp.orphan_hi or _stale_holds(mp)):
                # a subflow closed with bytes the data level has not passed: the heads
                # reinjected from it come to subflow 1 behind these bytes. A segment of them
                # lost inside one whole mapping the client had begun left the head behind
                # that hole for good: the super-packet went in place right after the join's
                # death, subflow 1 quiet (no loss shown) since that path died (stop 27's capture).
                # So too while a stale subflow holds unacked bytes: when it dies, its heads
                # come behind what subflow 1 sends meanwhile (review of c4e66a8)
                whole = False
                counters[Counter.Sf1OrphanCut] += 1
            elif whole and p.loss_at >= 0.0 and now - p.loss_at < LOSSY_CUT:
                # subflow 1 lost bytes lately: cut, a mapping per segment. One mapping over a
                # super-packet with a segment lost inside it, the client having begun it, can
                # take no new mapping inside it (Linux: DSSNotMatching), so the data-level head
                # reinjected behind that hole could not go into it (_head_hole) and the guest
                # resent only the head, one segment per RTO (the inbound failover xfail, netlink)
                whole = False
                counters[Counter.Sf1LossyCut] += 1
            if not _runs_add(mp, start_d, e, k, p.snd_nxt, counters, not whole):
                t = mp.runs[-1]
                counters[Counter.RunMapFull] += 1
                k = t[2]
                p = mp.paths[k]
                if p.state is not SS.ESTABLISHED or not _runs_add(mp, start_d, e, k, p.snd_nxt, counters):
                    counters[Counter.RunMapDrop] += 1
                    return [Drop("run map full")]
                # Merged into the tail run: no run of its own, so no multi-segment mapping
                # (given to the merged run, it would label the run's earlier bytes too: their
                # retransmission went out at their seq under a mapping starting later, Linux
                # DSSNoMatchTCP and a reset). Sent cut, one mapping per segment.
                whole = False
                merged = True
            if s > start_d:
                counters[Counter.GapReserved] += s - start_d
            s0 = p.snd_nxt
            _wait_from(p, now)
            _admit(p, e - start_d, s - start_d)
            p.snd_nxt += e - start_d
            mp.snd_nxt = e
            a = max(s, start_d)
            if p.rtt_ssn == 0:
                p.rtt_ssn = p.snd_nxt
                p.rtt_at = now
            pieces.append((a, e, k, s0 + (a - start_d), mp.runs[-1] if whole else None))
        e = e_all
        if not pieces and skipped:
            if e <= mp.data_ack:
                # all of it data-acked too: the guest resends because our ACK of it was lost,
                # and nothing else may come to tell it (every subflow acked all: the upload
                # stalled for good with the guest's RTOs, a model run). Tell it again, as a TCP
                # receiver answers an old segment
                counters[Counter.GuestAckAgain] += 1
                return [Drop("guest bytes resent that the server has acknowledged"), _inject(_guest_ack(flow, mp))]
            return [Drop("guest bytes resent that their subflow has acknowledged")]
        if not pieces:  # all of it data-acked already: tell the guest again
            if nopath:  # (or no subflow to reinject it on, a join opening: not the server's ack)
                return [Drop("guest bytes resent: no live subflow for them"), _inject(_guest_ack(flow, mp))]
            counters[Counter.GuestAckAgain] += 1
            return [Drop("guest bytes the server has acknowledged"), _inject(_guest_ack(flow, mp))]
    fin_d = e  # the DATA_FIN's relative DSN
    actions = [None]
    verdict = None
    if not plen:  # a bare FIN: a bare DATA_FIN (ssn 0, length 1), on subflow 1 with its FIN
        opt = bare_dfin(flow, data_ack, fin_d)
        counters[Counter.DataFinTX] += 1
        if p0_alive:
            held = not p0.fin_sent and not _fin_may_go(mp, fin_d)
            if held:  # (the DATA_FIN on an ACK: ssn 0 takes no subflow seq, RFC 8684 §3.3.3)
                counters[Counter.Sf1FinHeld] += 1
            elif not p0.fin_sent:
                p0.fin_sent = True
                p0.snd_nxt += 1
            options = conv._room(pkt, data, opt, raw)
            if options is None:
                return [Drop("no option room for the DATA_FIN")]
            _dack_carried(flow)
            at = p0.snd_nxt if held else p0.snd_nxt - 1
            _sf1_out(flow, mp, at, sf1_ack, pkt.window)
            return [Rewrite(rewrite(data, pkt, seq=(p0.local_isn + at) & M32, ack=sf1_ack,
                                    flags=pkt.flags & ~FIN if held else pkt.flags, options=options))]
        k = _best_live(mp)
        if k <= 0:
            return [Drop("no live subflow for the DATA_FIN")]
        return [Drop("DATA_FIN on another subflow"), _inject(_data_on(flow, mp.paths[k], opt, 0, b""))]
    ts = None
    marks = (0, 64, 0)
    # (ECN is subflow 1's, the guest's own connection: the guest's CWR goes on the first of its
    # bytes there, or, when none go there, on the next that do: left on a join, the server
    # kept echoing ECE on subflow 1 and the guest cut its window every RTT; review of 05df626)
    cwr_due = bool(pkt.flags & CWR) or mp.cwr_owed
    # In place only when the one piece is the whole payload: a piece is less when bytes
    # before it were skipped (data-acked on a closed subflow, or runs already trimmed: the
    # guest resends from a snd_una behind DATA_ACK) or after it (no live subflow); rewritten
    # whole, the segment would carry those bytes too under the piece's seq and mapping (the
    # server: wrong bytes at that DSN, then MAPPING_INVALID / DSSNoMatchTCP and a reset).
    # With DSS checksums, never one mapping over several segments (a GSO super-packet in place,
    # or a whole-mapping run): Linux checks the sum of a mapping only once all of it is in,
    # and until then its subflow has acked bytes its msk does not take. A loss inside the
    # mapping then held back its first bytes too, the data-level head the guest resends
    # first and alone after its RTO, while the bytes it lacked lay above: the upload stalled
    # for good (netlink backend, 2 % loss, no repair: 1 run in 2; the kernel test
    # test_checksum_upload_under_loss_never_stalls). Cut, each segment has its own mapping
    # and sum, as on the NetfilterQueue backend, at the cost of injecting each one. (More
    # than the MSS limit: a guest without timestamps sends one segment of the limit itself.
    # A super-packet of segments under a smaller MSS the server announced is not seen as
    # one: the core does not keep that MSS, as on single path.)
    # Nor one new mapping over bytes resent that went before under mappings of their own (a
    # run without one, `m` None: sent cut or reinjected): the server's next queued original,
    # wholly inside it, would bring another (DSSNotMatching and a fallback, as on single path).
    several = plen > guest_seg(conv, flow, pkt.version)
    in_place = (len(pieces) == 1 and pieces[0][2] == 0 and pieces[0][0] == s and pieces[0][1] == e
                and not merged and not (several and (flow.checksum or pieces[0][4] is None)))
    if in_place and type(pieces[0][4]) is list:  # the new whole-mapping run: it gets its mapping
        a, b, idx, ss, run = pieces[0]
        dsn = (flow.local_idsn + a) & M64
        dlen = b - a + (1 if fin and b == e else 0)
        csum = dss_checksum(dsn, ss & M32, dlen, data[pkt.payload_off + (a - s): pkt.payload_off + (b - s)]) \
            if flow.checksum else None
        run[4] = (a, ss, dlen, csum, dlen > b - a)
        pieces = [(a, b, idx, ss, run[4])]
    if not in_place:
        # Injected pieces go out as they are (a raw socket does no segmentation): a GSO
        # super-packet (queue in GSO mode) is cut into segments the path takes, each with its
        # own mapping. In place, the kernel segments and copies the one mapping on every
        # segment, as Linux MPTCP's own TSO does.
        seg_max = guest_seg(conv, flow, pkt.version)  # (room for its timestamps, if any)
        cut = []
        for a, b, idx, ss, m in pieces:
            lim = _seg_max(mp.paths[idx], seg_max)
            # (a piece of a mapping over several segments, `m`: each cut carries that mapping,
            # as the kernel's TSO copies it. Left whole, it went out as one raw segment beyond
            # the MTU: a resend of a super-packet sent while the flow was single-path, or one
            # spanning a whole-mapping run and the next run; review of c5ef7d4)
            while b - a > lim:
                cut.append((a, a + lim, idx, ss, m))
                a += lim
                ss += lim
            cut.append((a, b, idx, ss, m))
        pieces = cut
    dup_fin = None  # (the DATA_FIN's piece, when its subflow has all its bytes: see below)
    for i, (a, b, idx, ss, m) in enumerate(pieces):
        p = mp.paths[idx]
        payload = data[pkt.payload_off + (a - s): pkt.payload_off + (b - s)]
        dfin = bool(fin) and b == e
        if m is not None:  # bytes of a multi-segment mapping: that mapping, exactly
            # (its DATA_FIN flag too, on a piece without the guest's FIN: Linux takes one
            # less byte from a mapping's length when the flag is set, so without it the
            # mapping differed and a segment wholly inside the partly received one was
            # DSSNotMatching, a CI run: a download's last super-packet, a piece resent)
            ma, mss, dlen, csum, dfin = m
            dsn = (flow.local_idsn + ma) & M64
            opt = Dss(data_ack, flow.ack64, dsn, True, mss & M32, dlen, csum, dfin)
        else:
            dsn = (flow.local_idsn + a) & M64
            dlen = b - a + (1 if dfin else 0)
            csum = dss_checksum(dsn, ss & M32, dlen, payload) if flow.checksum else None
            opt = Dss(data_ack, flow.ack64, dsn, True, ss & M32, dlen, csum, dfin)
        counters[Counter.DSSTX] += 1
        if dfin:
            counters[Counter.DataFinTX] += 1
            if fin and b == e and ss + (b - a) <= p.snd_una:  # (not `m`'s flag on a cut
                dup_fin = p  # without the guest's FIN: a bare DATA_FIN at its end was misplaced)
        p.tx_bytes += b - a
        _sent(p, now)
        resend = ss < p.sack_hi  # (into a hole: the server owes an answer again, _answered)
        if idx == 0:
            _dack_carried(flow)
            da = _sf1_dack(flow, mp, ss, sf1_ack, pkt.window, data_ack)
            if da != data_ack:  # (a guest retransmission whose window the server keeps)
                opt = Dss(da, flow.ack64, opt.data_seq, True, opt.subflow_seq, opt.data_len, opt.csum,
                          opt.data_fin)
            flags = pkt.flags & (PSH | ACK | ECE)  # (ECN: the guest's connection's own)
            if cwr_due and b > a:
                flags |= CWR
                cwr_due = mp.cwr_owed = False
            bare_fin = None
            if dfin and ss + (b - a) == p.snd_nxt - (1 if p.fin_sent else 0):
                if p.fin_sent or _fin_may_go(mp, e):
                    if not p.fin_sent:
                        p.fin_sent = True
                        p.snd_nxt += 1
                    dup_fin = None
                    if ss < sf1_sent and b > a:
                        # Bytes subflow 1 carried before: the FIN goes after them as a bare FIN
                        # with a bare DATA_FIN, not on them. Linux's TCP keeps a segment of old
                        # bytes and a new FIN whole (for the FIN); with its bytes read already
                        # the subflow's read position is at the end of its mapping, outside it
                        # (validate_mapping): DSSNoMatchTCP and a reset of subflow 1 (the slow
                        # reader's download with loss, inbound: the guest's resend of its last
                        # super-packet with its FIN, whose bytes the client had SACKed and then
                        # acked while the resend was on its way). We cannot know the server has
                        # not read them: any resend may be such a duplicate.
                        bare_fin = _inject(_ack_on_sf1(flow, mp, fin=True, dfin=bare_dfin(flow, data_ack, e)))
                    else:
                        flags |= FIN  # (new bytes: the FIN takes them past the server's rcv_nxt)
                else:  # (the DATA_FIN in the mapping alone, _fin_may_go)
                    counters[Counter.Sf1FinHeld] += 1
            if in_place:
                options = conv._room(pkt, data, opt, raw)
                if options is None:
                    return [Drop("no option room for the mapping")]
                verdict = Rewrite(rewrite(data, pkt, seq=(p.local_isn + ss) & M32, ack=sf1_ack,
                                          flags=flags, options=options))
                if bare_fin is not None:
                    actions.append(bare_fin)
                if resend:
                    _resent(p, flow.last)
                continue
            if ts is None:
                o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
                ts = encode_tcp_options(-1, -1, False, o.ts_val, o.ts_ecr) if o.ts_val != -1 else b""
                marks = guest_marks(pkt, data)
            actions.append(_inject(segment(p.version, p.local, p.remote, p.lport, p.rport,
                                          p.local_isn + ss, sf1_ack, flags, pkt.window,
                                          build_options(ts, (opt,)), payload, marks)))
            if bare_fin is not None:
                actions.append(bare_fin)
            if resend:
                _resent(p, flow.last)
        else:
            counters[Counter.DSSTXJoin] += 1
            psh = pkt.flags & PSH
            actions.append(_inject(_data_on(flow, p, opt, ss, payload, psh)))
            if resend:
                _resent(p, flow.last)
            if payload and conv.config.repair_bytes:
                _keep(conv, mp, p, ss, ss + (b - a), opt, payload, psh)
    if dup_fin is not None and dup_fin.state not in ALIVE:
        # (on a join the server closed, CLOSING: subflow 1 or the best live join instead;
        # else every FIN resend went the same way and the close hung, second review)
        k = 0 if p0_alive else _best_live(mp)
        dup_fin = mp.paths[k] if k >= 0 else None
    if dup_fin is not None:
        # The DATA_FIN rode bytes its subflow has acked, with no TCP FIN: Linux drops such a
        # segment whole as a duplicate and reads its mapping, DATA_FIN included, from queued
        # data only (a zero-length segment's it reads at once). So a bare DATA_FIN too (ssn 0,
        # length 1), or the server learnt of it only from the guest's next resend of its FIN,
        # an RTO later (the guest folds its FIN into its resend of the last segment; review
        # of 8347e00, whose hold had left such a resend without the TCP FIN)
        opt = bare_dfin(flow, data_ack, e)
        counters[Counter.DataFinTX] += 1
        actions.append(_inject(_ack_on_sf1(flow, mp, dfin=opt) if dup_fin.index == 0
                              else _data_on(flow, dup_fin, opt, 0, b"")))
    actions[0] = verdict if verdict is not None else Drop("guest segment sent on its subflows")
    if mp.csum_stuck >= 0:
        actions.extend(_csum_stuck_reset(conv, flow, mp, now))
    if cwr_due:
        mp.cwr_owed = True
    flow.bytes_out += plen
    return actions


def dack_now(flow) -> int:
    """The DATA_ACK of the guest's ack, as our segments carry it (32 bits unless ack64)."""
    return dack_at(flow, flow.rcv_rel)


def dack_at(flow, rel: int) -> int:
    """The DATA_ACK at relative data offset `rel`, as our segments carry it (32 bits unless
    ack64)."""
    data_ack = (flow.remote_idsn + rel) & M64
    return data_ack if flow.ack64 else data_ack & M32


def bare_dfin(flow, data_ack: int, fin_d: int):
    """A bare DATA_FIN at relative DSN fin_d: ssn 0, length 1 (RFC 8684 §3.3.3), its
    checksum over no payload when checksums are on."""
    dsn = (flow.local_idsn + fin_d) & M64
    return Dss(data_ack, flow.ack64, dsn, True, 0, 1, dss_checksum(dsn, 0, 1, b"") if flow.checksum else None, True)


def _keep(conv, mp, p, s: int, e: int, opt, payload: bytes, psh: int) -> None:
    """Keep bytes [s, e) of join p as sent (their mapping `opt`) for repair
    (Config.repair_bytes): new bytes only (a resent range is kept already), within the
    flow's and the global cap, each entry counted with REPAIR_ENTRY bytes for its own
    keeping (beyond the caps a loss goes to the guest as before, counted)."""
    rtx = p.rtx
    if rtx and s < rtx[-1][1]:
        return
    if p.cwnd and e > p.adm_end:
        # beyond the join's own window (pick weighs a full join by delivery time): a loss
        # of these bytes is the guest's to answer, with its window, as without repair
        conv.counters[Counter.RepairBeyondWindow] += 1
        return
    n = e - s + REPAIR_ENTRY
    cfg = conv.config
    if mp.rtx_bytes + n > cfg.repair_bytes or mp.held[0] + n > cfg.repair_total_bytes:
        conv.counters[Counter.RepairCapSkip] += 1
        return
    rtx.append([s, e, opt, payload, psh])
    mp.rtx_bytes += n
    mp.held[0] += n


def _release(mp, p, upto: int) -> None:
    """Join p's kept segments below relative seq `upto` are acked (or the join is gone)."""
    rtx = p.rtx
    i = 0
    freed = 0
    while i < len(rtx) and rtx[i][1] <= upto:
        freed += rtx[i][1] - rtx[i][0] + REPAIR_ENTRY
        i += 1
    if i:
        del rtx[:i]
        mp.rtx_bytes -= freed
        mp.held[0] -= freed


def _repairing(p, ss: int) -> bool:
    """Is the byte at relative seq `ss` of join p ours to repair (kept, the join
    established, its repairs not given up)? Then the guest is not told it is lost.
    Kept means inside a kept segment: between two of them may lie bytes not kept (sent
    beyond the join's own window, or past the caps), whose loss is the guest's (review of
    215f700: such a hole stayed hidden, and the guest's SACK stopped below it, until the
    guest's resend of the hole before it was acked, a round trip per hole)."""
    rtx = p.rtx
    if not (p.state is SS.ESTABLISHED and rtx[0][0] <= ss < rtx[-1][1]
            and not (p.rep_n > REPAIR_TRIES and p.snd_una < p.rep_hi)):
        return False
    return ss < rtx[_kept_above(rtx, ss) - 1][1]


def _kept_above(rtx, ss: int) -> int:
    """The index in a join's kept segments (ascending, apart) of the first starting above
    relative seq `ss` (binary search: up to repair_bytes / a segment of them)."""
    lo = 0
    hi = len(rtx)
    while lo < hi:
        mid = (lo + hi) // 2
        if rtx[mid][0] <= ss:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _lost_shown(p, una: int) -> int:
    """Where the server's first SACK block above relative seq `una` of p starts (-1: none)."""
    for s, e in p.sacked:  # (ascending)
        if s > una:
            return s
    return -1


def _repair(conv, flow, mp, p, now: float) -> list:
    """Resend, from the bytes kept, join p's bytes at its snd_una once the server shows them
    lost (SACK above them, two duplicate ACKs) or the join made no progress for two RTTs:
    the same bytes under the same seq and mapping (rebuilt with the current ack and window:
    a copy's old ack can fall below what Linux accepts, RFC 5961), up to REPAIR_SEGS of
    them and not beyond the server's first SACK block. Bytes a repair sent are not sent
    again before 1.5 RTTs have passed without progress (partial ACKs resend nothing); after
    REPAIR_TRIES repairs without progress the hole is the guest's business again (_hole_evident),
    and the clock tells it at once. The guest meanwhile sees neither blocks above the hole
    nor duplicate ACKs: for it the bytes are still in flight, and its one congestion window
    does not halve for a loss on one path (Linux MPTCP halves that subflow's only)."""
    rtx = p.rtx
    una = p.snd_una
    if not rtx or una >= p.snd_nxt or rtx[0][0] > una or p.state is not SS.ESTABLISHED:
        return []
    again = una < p.rep_hi
    if again and (p.rep_n > REPAIR_TRIES or now < _rerepair_at(p)):
        return []  # in flight (being acked), or given up
    if not (_loss_shown(p, una) or now >= _overdue_at(p)):
        return []
    if again:
        p.rep_n += 1
        if p.rep_n > REPAIR_TRIES:
            conv.counters[Counter.RepairGaveUp] += 1
            p.told_at = -1.0  # _tell_silent_tails looks at this subflow again
            return []
    else:
        p.rep_n = 1
        if p.cwnd and una >= p.recover:
            _cwnd_cut(p)
            conv.counters[Counter.JoinCwndCut] += 1
    p.rep_at = now
    sack_at = _lost_shown(p, una)
    limit = sack_at if sack_at > una else p.snd_nxt
    out = []
    hi = una
    for s, e, opt, payload, psh in rtx:
        if s >= limit or len(out) >= REPAIR_SEGS:
            break
        if e > una:
            out.append(_inject(_data_on(flow, p, opt, s, payload, psh)))
            p.tx_bytes += e - s
            _sent(p, now)
            hi = e
            if s < p.sack_hi:
                _resent(p, now)
    p.rep_hi = hi
    p.rep_nxt = p.snd_nxt
    conv.counters[Counter.JoinRepairTX] += len(out)
    return out


def _cwnd_start(conv, flow, p) -> None:
    """A join just established gets its own congestion window with --repair-window or
    --dsack-undo: repair hides its losses from the guest, and the D-SACK makes the guest undo
    its cut for them, so the guest's window no longer answers them (RFC 6928's initial
    window, in segments of what we send there)."""
    cfg = conv.config
    if (cfg.repair_bytes and cfg.repair_window) or cfg.dsack_undo:
        if cfg.dsack_undo:
            p.inwin = []
        p.smss = _seg_max(p, guest_seg(conv, flow, p.version))
        p.cwnd = CWND_INIT * p.smss
        p.ssthresh = 1 << 62
        p.recover = p.snd_nxt


def _admit(p, n: int, gap: int = 0) -> None:
    """Path p is given `n` new bytes at its snd_nxt: with room in its own window (repair on),
    all of them are admitted, kept and repaired. Room for a byte admits a whole super-packet:
    the window is exceeded by up to one (at most 64 KB), as cutting them at its edge would
    take another pick per packet. (Tried: keeping only the bytes within the window; the
    rest, their losses shown to the guest, was a third of the join's bytes at 1 % loss, and
    the DSS-checksum kernel test met a stall of the path without repair in 3 runs of 6.)"""
    if p.cwnd and p.snd_nxt - p.snd_una < p.cwnd:
        p.adm_end = p.snd_nxt + n
        if p.inwin is not None and gap < n:
            # (not the first `gap` bytes, reserved for a guest segment we never saw: their
            # loss happened before us, and the guest's cut for it stands; second review)
            _inwin_add(p, p.snd_nxt + (gap if gap > 0 else 0), p.adm_end)


def _inwin_add(p, s: int, e: int) -> None:
    """--dsack-undo: join p sent [s, e) within its own window (_admit). Ranges below its
    snd_una are forgotten, and the oldest beyond INWIN_MAX (their loss then keeps the
    guest's cut)."""
    w = p.inwin
    if w and w[-1][1] == s:
        w[-1][1] = e
    else:
        w.append([s, e])
    una = p.snd_una
    while w and (w[0][1] <= una or len(w) > INWIN_MAX):
        del w[0]


def _inwin_has(p, s: int, e: int) -> bool:
    """--dsack-undo: were join p's bytes [s, e) all sent within its own window?"""
    for u in p.inwin:
        if u[0] <= s and e <= u[1]:
            return True
    return False


def _cwnd_cut(p) -> None:
    """A loss event on join p (the first repair of a hole at or above `recover`): the window
    falls to CWND_BETA of what was in flight within it, at least two segments; no other cut
    and no growth until the bytes in flight now are acked (RFC 5681 §3.2, RFC 6582)."""
    flight = p.snd_nxt - p.snd_una
    if flight > p.cwnd:
        flight = p.cwnd
    w = int(flight * CWND_BETA)
    p.ssthresh = p.cwnd = w if w > 2 * p.smss else 2 * p.smss
    p.recover = p.grow_end = p.snd_nxt
    p.grow_left = 0  # (no credit of the round before the cut: a new round once past recover)


def _cwnd_grow(p, acked: int, flight: int) -> None:
    """Join p's server acked `acked` new bytes (of this round's credit) with `flight` bytes in
    flight before: slow start below ssthresh, then CWND_ALPHA segments per window; only when the
    window was in use (half of it in flight: an idle join's window does not grow, RFC 7661)
    and not in recovery."""
    if acked <= 0 or p.snd_una < p.recover or 2 * flight < p.cwnd:
        return
    if p.cwnd < p.ssthresh:
        p.cwnd += acked
    else:
        p.cwnd += max(int(CWND_ALPHA * p.smss * acked / p.cwnd), 1)


def _rep_settled(p) -> float:
    """How long after a repair of join p an ACK short of it stops at a loss (_ack_info): a
    round trip less twice its variation, half an RTT at least (asked only after the cheap
    tests: an ACK of a join with no repair out never computes it)."""
    r = p.srtt or HOLE_RTT
    return max(0.5 * r, r - 2.0 * p.rttvar)


def _rerepair_at(p) -> float:
    """When bytes a repair of join p sent may be sent again: 1.5 RTTs without progress."""
    return max(p.rep_at, p.progress_at) + 1.5 * (p.srtt or HOLE_RTT) + 0.002


def _repair_due(p) -> float:
    """When _repair would next act on join p by the clock alone (0.0: it will not)."""
    if not p.rtx or p.rtx[0][0] > p.snd_una or p.state is not SS.ESTABLISHED:
        return 0.0
    timed = _overdue_at(p)
    if p.snd_una < p.rep_hi:
        if p.rep_n > REPAIR_TRIES:
            return 0.0
        t = _rerepair_at(p)
        return t if (_loss_shown(p, p.snd_una) or timed <= t) else timed
    return timed


def _data_on(flow, p, opt, ss: int, payload: bytes, psh: int = 0) -> bytes:
    """The guest's bytes (or a bare DATA_FIN) on extra subflow p under mapping `opt`, whose
    DATA_ACK is capped as our ACKs' (_join_dack) when the server keeps the window it holds:
    uncapped, a slow reader's new ack with its smaller window put the server's edge beyond
    the guest's (review of stop 41)."""
    taken = _window_taken(flow, p, ss if payload else p.snd_nxt, p.rcv_nxt)
    if taken != TAKEN_SURE and opt.data_ack is not None:
        rel = _join_dack(flow, p, taken)
        if rel != flow.rcv_rel:
            opt = Dss(dack_at(flow, rel), flow.ack64, opt.data_seq, opt.dsn64, opt.subflow_seq,
                      opt.data_len, opt.csum, opt.data_fin)
    seq = p.local_isn + (ss if payload else p.snd_nxt)
    return segment(p.version, p.local, p.remote, p.lport, p.rport, seq, p.remote_isn + p.rcv_nxt,
                   ACK | psh, flow.guest_window, build_options(b"", (opt,)), payload, flow.mp.marks)


def _fill_acked_hole(conv, flow, mp, p) -> list:
    """Subflow p has made no progress and the bytes at its snd_una carry data the server has
    already data-acked (it got them on another subflow): the guest will never resend them,
    and the payload is not kept here (MULTIPATH.md option B), so the subflow-level hole
    would stay for good and with it everything sent on p after it. Fill it with zeros under
    a mapping of those DSNs: Linux discards subflow data whose DSN lies before its data-level
    ack (mptcp_subflow_discard_data, MIB DuplicateData), after checking its DSS checksum,
    which is computed over the zeros. Not for a run whose one mapping spans segments when it
    is checksummed (that checksum is the original bytes') or the guest has sent its FIN. At
    most FILL_MAX bytes a call."""
    idx = p.index
    r = _run_at(mp, idx, p.snd_una)
    if r is None:
        return []
    r0, r1, _, s0, m = r
    d = r0 + (p.snd_una - s0)
    end = min(r1, mp.data_ack, d + FILL_MAX)
    if d >= end or (m is not None and (flow.checksum or flow.local_fin)):
        return []  # (a whole mapping may carry the DATA_FIN: repeated without it, it would differ)
    seg_max = _seg_max(p, guest_seg(conv, flow, p.version))
    out = []
    if idx == 0:
        sf = flow.sf
        ack = sf.remote_isn + sf.rcv_base
    else:
        ack = p.remote_isn + p.rcv_nxt
    while d < end:
        n = min(seg_max, end - d)
        ss = s0 + (d - r0)
        zeros = bytes(n)
        # its DATA_ACK as on any segment there: Linux takes no window from it (an old seq that
        # acks nothing new) but reads its DATA_ACK (review of stop 41: uncapped, it put the
        # server's edge past a slow reader's)
        if idx == 0:
            # (the model only: _sf1_out's record is of the guest's segments, which _sf1_dup
            # judges the guest's next ACKs by; review of stop 41)
            data_ack = dack_now(flow)
            wb = flow.guest_window << flow.guest_wscale
            if not _taken(p, ss, _unwrap((ack - sf.remote_isn) & M32, p.wnd_ack), wb):
                data_ack = _sf1_dack_cap(flow, mp, data_ack, wb)
        else:
            data_ack = dack_at(flow, _join_dack(flow, p, _window_taken(flow, p, ss, p.rcv_nxt)))
        if m is not None:  # a whole super-packet mapping: repeated exactly (no checksum)
            opt = Dss(data_ack, flow.ack64, (flow.local_idsn + m[0]) & M64, True, m[1] & M32, m[2], None,
                      False)
        else:
            dsn = (flow.local_idsn + d) & M64
            csum = dss_checksum(dsn, ss & M32, n, zeros) if flow.checksum else None
            opt = Dss(data_ack, flow.ack64, dsn, True, ss & M32, n, csum, False)
        out.append(_inject(segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + ss, ack,
                                  ACK, flow.guest_window, build_options(b"", (opt,)), zeros, mp.marks)))
        d += n
    conv.counters[Counter.AckedHoleFilled] += len(out)
    return out


def _best_live(mp) -> int:
    best = -1
    for p in mp.paths[1:]:
        if p.state in ALIVE and (best < 0 or p.srtt < mp.paths[best].srtt):
            best = p.index
    return best


# -- server -> guest: acks on any subflow ---------------------------------------------------


def _ack_info(flow, mp, p, pkt, dss, now: float, data=None) -> tuple:
    """What a server segment on path p tells about our data: (data level moved, subflow-level
    duplicate). Moves snd_una, the rate and RTT estimates, data_ack and wnd_edge; with the
    segment's bytes (`data`), the subflow's SACK blocks (`Path.sacked`, for guest_sack).
    Takes the answer to a stale probe (alive_at, sprobe_open) and, as the DATA_ACK moves,
    re-arms the look for a fill (_rearm_fill)."""
    a = _unwrap((pkt.ack - p.local_isn) & M32, p.snd_una)
    subdup = False
    answered = False
    if (p.sprobe_open and not pkt.payload_len and not pkt.flags & FIN and a >= p.snd_una
            and data is not None and _probe_answer_like(p, pkt, data)):
        # (only a pure ACK that may be the answer closes the probe; data, a FIN, an old ACK,
        # a path manager ACK, or on a join the server's own probe leave it open: each once
        # used it up and the answer behind it was missed, the live subflow then died on its
        # kept clock beside a dead join; reviews of 7742d6c and ebd86b3)
        p.sprobe_open = False
        answered = now - p.sprobe_at <= _probe_wait(p)
        if answered:
            # the answer to our stale probe (_j_stale): news that the path works both ways.
            # Its window may differ (Linux's subflow window follows the connection's receive
            # space, and its reader moves it): an unchanged window was required, and the
            # kernel's answers were missed (the black-holed first path, integration test)
            p.alive_at = now
            if mp.counters is not None:
                mp.counters[Counter.StaleProbeAnswered] += 1
    if data is not None:
        dsack = _sacked(p, pkt, data, a, now)
        if a >= p.snd_una:  # (an old, reordered ACK tells nothing new)
            hi = tot = 0
            for s, e in p.sacked:
                tot += e - s
                if e > hi:
                    hi = e
            if hi > p.sack_hi or (a == p.snd_una and tot > p.sack_tot) or dsack:
                # (the top reaching higher, or with the same cumulative ACK more bytes
                # covered: a resend into an upper hole arrived, review of 527bba8; or a
                # D-SACK: a resend of bytes it had arrived)
                if hi > p.sack_hi:
                    p.sack_hi = hi
                p.sack_at = now
            p.sack_tot = tot
    if p.snd_una < a <= p.snd_nxt:
        acked = a - p.snd_una
        flight = p.snd_nxt - p.snd_una
        p.snd_una = a
        if p.rtx:
            _release(flow.mp, p, a)
        if p.cwnd:
            # at most a window's worth of acked bytes per round (a round ends at snd_nxt as
            # it began): a join given bytes beyond its window has more acked per round, and
            # all of them grew it 3 x too fast (review of 215f700: 1588 bytes in one window
            # of congestion avoidance where 752 are due); only the kept ones froze it for
            # good once it was over-driven, nothing kept again (review of 7d15396)
            if a > p.grow_end:
                p.grow_end = p.snd_nxt
                p.grow_left = p.cwnd
            credit = acked if acked < p.grow_left else p.grow_left
            p.grow_left -= credit
            _cwnd_grow(p, credit, flight)
        p.progress_at = p.acked_at = now
        p.dups = 0
        if p.fill_hi:
            # past a resend we put into a hole (_into_hole): what it stops at was sent before
            # that fill, so is lost (the server acks in order what reached it). Unknown, the
            # guest's next head, resent at once on this ACK, waited behind it for the guest's
            # next RTO, a segment per RTO (inbound failover, captures: the download stalled)
            # (an ACK short of the fill's end came from the hole's late original, not from the
            # fill: what it stops at may be late too; review of ec6a9df)
            if a >= p.fill_hi:
                p.fill_hi = 0
            elif a >= p.fill_end:
                p.lost_una = a
        if (a < p.rep_nxt and (a >= p.rep_hi or not (p.rtx and p.rtx[0][0] <= a))
                and now - p.rep_at >= _rep_settled(p)
                and not (p.fill_hi and p.fill_lo <= a < p.fill_end)):
            # the same for our repair (_repair): an ACK of it that stops short of what went
            # before it stops at a loss, as a rule of a FIFO path; a segment not kept there is
            # the guest's to resend. Without it, on a join whose server takes no SACK, or at
            # its tail, the guest learnt of it by the clock, 2 RTTs after our repair's ACK
            # (review of 844847d). Not at a kept byte the repair itself may still bring (a
            # partial ACK of it); not sooner than a round trip (less its variation, half an
            # RTT at least) after the repair: that ACK came from the late original of what we
            # repaired, and the bytes after it may be on their way too; not inside a fill in
            # flight, where the fill's rule says the same (review of 6877899)
            p.lost_una = a
        p.rate_bytes += acked
        if p.rtt_ssn and a >= p.rtt_ssn:
            _rtt_sample(p, now - p.rtt_at)
            p.rtt_ssn = 0
        span = now - p.rate_at
        if span >= max(p.srtt, 0.02):
            sample = p.rate_bytes / span
            # app-limited (BBR's rule): a sample over a span in which the subflow ran dry
            # measures what the scheduler gave it, not what its path delivers, and may raise
            # the estimate but never lower it. Taken as it came, a join that got little had a
            # low estimate, so little again, and so on: the third of 3 x 100 Mbit/s starved in
            # about 8 upload runs of 45 (a14129b)
            if p.rate == 0.0:
                p.rate = sample
            elif not p.app_lim or sample > p.rate:
                p.rate = 0.75 * p.rate + 0.25 * sample
            p.rate_bytes = 0
            p.rate_at = now
            p.app_lim = False
        if a == p.snd_nxt:
            p.app_lim = True
    elif (a == p.snd_una and not pkt.payload_len and not pkt.flags & (FIN | SYN) and p.snd_nxt > p.snd_una
          and pkt.window << p.rwscale == p.snd_wnd):
        # (a duplicate has the window unchanged, RFC 5681 §2 (e); Linux too counts no ACK
        # that updated its window as a duplicate. Two window updates of a slowly reading
        # server showed snd_una lost)
        if not answered:  # (the answer to our stale probe is not a sign of loss)
            p.dups += 1
            if not ((flow.sack_ok or flow.sack_added) if p.index == 0 else p.sack):
                p.loss_at = now  # (with SACK only its blocks show a loss: not a D-SACK)
                # and, with no blocks to show it, the news that bytes above a hole reach
                # the server (_news): subflow 1 of a guest without SACK (the first
                # connection to a server: sack_added) waited at each hole for the guest's
                # resend with no news while the server dup-acked all it got, went stale
                # beside the joins every 0.3 s and, its probes answered, died (SubflowDead,
                # rejoins; an upload through two uplinks timed out, CI of stop 37). Not the
                # server's own keepalive or zero-window probe on a join, below our rcv_nxt:
                # a dead join's news that way made the live subflow 1 die (_probe_answer_like)
                # Nor a path manager's pure ACK (ADD_ADDR, REMOVE_ADDR, MP_PRIO): no byte of
                # ours made it (review of d71154a)
                if _probe_answer_like(p, pkt, data):
                    p.sack_at = now
            subdup = True
    if a >= p.snd_una:  # (not an old, reordered ACK: RFC 9293 §3.10.7.4, SND.UNA =< SEG.ACK)
        p.snd_wnd = pkt.window << p.rwscale
    moved = False
    if dss is not None and dss.data_ack is not None:
        if dss.ack64:
            da = (dss.data_ack - flow.local_idsn) & M64
        else:
            da = _unwrap((dss.data_ack - flow.local_idsn) & M32, mp.data_ack)
        top = mp.snd_nxt
        if flow.local_fin and _unwrap((flow.local_fin_seq - flow.guest_isn) & M32, top) == top:
            top += 1  # (our DATA_FIN, once the guest's FIN is in and every byte before it sent)
        if mp.data_ack < da <= top:
            _rearm_fill(mp, da)
            mp.data_ack = da
            mp.da_at = now
            flow.data_acked = da
            moved = True
            if da > mp.snd_nxt and not mp.fin_due and not mp.fin_tries and not mp.paths[0].fin_sent:
                # the DATA_FIN data-acked and subflow 1 sent no FIN: it may go now (tick).
                # Not only after a hold: the guest's FIN may have come first on a resend not at
                # subflow 1's tail, or gone on a join (review of 8347e00)
                mp.fin_due = now
        if da >= mp.data_ack - 0x40000000:
            edge = da + p.snd_wnd
            if edge > mp.wnd_edge:
                mp.wnd_edge = edge
                moved = True
    if moved:
        _runs_trim(mp)
        if not flow.sack_ok and mp.data_ack == mp.gack_out and not _room_short(flow, mp):
            moved = False  # (only the window grew: guest_win holds it, so this would be a duplicate)
    return moved, subdup


def _rearm_fill(mp, da: int) -> None:
    """The DATA_ACK moves to `da`: a subflow whose look for a fill of its hole (tick) was
    spent while the DSN at its snd_una was not data-acked yet, and is now, gets one more
    look. Looked at once per progress, a hole data-acked after that look was never filled
    (with the server SACKing all after it, the subflow _answered and left alone: nothing
    more happened to it; review of ebd86b3, which moved the look earlier). Once per hole:
    no fill on every tick (that stalled the transfer for good, tick)."""
    old = mp.data_ack
    for q in mp.paths:
        # (a stale one too: skipped, then revived by a segment, its hole's DSNs data-acked
        # meanwhile, it never had its look and the head reinjected behind that hole waited
        # for good; a helper's fuzzer of the model with a guest without SACK, stop 46)
        if q.fill_at != q.progress_at or q.state not in ALIVE or q.snd_nxt <= q.snd_una:
            continue
        r = _run_at(mp, q.index, q.snd_una)
        if r is not None and old <= r[0] + (q.snd_una - r[3]) < da:
            q.fill_at = -1.0


def _wider_first(b: tuple) -> tuple:
    return b[0], -b[1]


def _sacked(p, pkt, data: bytes, a: int, now: float) -> bool:
    """The SACK blocks of the server's segment on p, beyond its cumulative ACK `a`, added to
    what its earlier ACKs SACKed (`Path.sacked`, _board): kept if above `a` and within what
    we sent (a block below is a D-SACK; one beyond snd_nxt names bytes never sent). Blocks
    here are loss (`loss_at`). True when it carried a D-SACK (RFC 2883: below `a`, or inside
    another block): a duplicate arrived."""
    if pkt.doff <= TCP_HLEN:
        _board(p, (), a)
        return False
    o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    if not o.sack:
        _board(p, (), a)
        return False
    out = []
    dsack = False
    for left, right in o.sack:
        s = _unwrap((left - p.local_isn) & M32, a)
        e = s + ((right - left) & M32)
        if a < s < e <= p.snd_nxt:
            out.append((s, e))
        elif s < e <= a:
            dsack = True
    out.sort(key=_wider_first)
    keep = []
    for b in out:  # (a block inside another is a D-SACK, RFC 2883: counted twice, the
        if keep and b[1] <= keep[-1][1]:  # answer to the next resend into a hole looked no news)
            dsack = True
            continue
        keep.append(b)
    if keep:
        p.loss_at = now
    _board(p, keep, a)
    return dsack


def _board(p, blocks, a: int) -> None:
    """Path.sacked: what the server's ACKs on p have SACKed above its cumulative ACK, RFC
    6675's scoreboard, `blocks` (ascending, from an ACK of `a`) added; at most MAX_SACKED
    ranges, ascending and apart (beyond, the lowest seven and the highest are kept: fewer
    held bytes known, never a byte held that was not SACKed; what lies between them is
    `gap_lo`..`gap_hi` until the cumulative ACK passes it or the server reneges). Only the latest
    ACK's blocks were kept before, and Linux's ACKs beside timestamps and a DATA_ACK carry
    one, the most recent: the hole at snd_una looked as large as the gap up to that block,
    and a head put into it went onto bytes the server held (a D-SACK, and a stall to the
    guest's next RTO; the netlink failover crawl). A cumulative ACK inside bytes it SACKed
    (RFC 2018 §8: the receiver discarded them) forgets the old ones."""
    lo = a if a > p.snd_una else p.snd_una
    if p.gap_hi and lo >= p.gap_hi:
        p.gap_lo = p.gap_hi = 0  # (passed)
    sk = p.sacked
    if not blocks and (not sk or sk[0][0] > lo):
        return  # (nothing to add, trim or forget: every server segment comes here)
    ranges = []
    for s, e in p.sacked:
        if e <= lo:
            continue
        if s <= lo:  # (reneged: the record goes, and what it forgot, likely dropped too)
            ranges = []
            p.gap_lo = p.gap_hi = 0
            break
        ranges.append([s, e])
    for s, e in blocks:
        if s > lo:
            ranges.append([s, e])
    if not ranges:
        p.sacked = ()
        return
    ranges.sort()
    out = [ranges[0]]
    for r in ranges[1:]:
        if r[0] <= out[-1][1]:
            if r[1] > out[-1][1]:
                out[-1][1] = r[1]
        else:
            out.append(r)
    if len(out) > MAX_SACKED:
        g0, g1 = out[MAX_SACKED - 2][1], out[-1][0]
        if p.gap_hi:
            g0, g1 = min(g0, p.gap_lo), max(g1, p.gap_hi)
        p.gap_lo, p.gap_hi = g0, g1
        out = out[:MAX_SACKED - 1] + [out[-1]]
    p.sacked = tuple((s, e) for s, e in out)


def sf1_in(conv, flow, pkt, dss, data=None):
    """A server segment on subflow 1 of a multipath flow: its acks move path 0; a pure ACK
    that moves nothing at the data level is a duplicate the guest must not see unless it is a
    subflow-level duplicate on the subflow holding DATA_ACK. None: go on as usual."""
    mp = flow.mp
    p0 = mp.paths[0]
    now = flow.last
    p0.heard_at = now
    if p0.state is SS.STALE:
        _event(conv, flow, p0, SI.ACK, now)  # any word from the server revives it
    una0 = p0.snd_una
    moved, subdup = _ack_info(flow, mp, p0, pkt, dss, now, data)
    p0.rx_bytes += pkt.payload_len
    if pkt.payload_len or pkt.flags & FIN or (dss is not None and dss.data_fin):
        return None
    if _probe_answer(mp, 0, now) and not moved:
        conv.counters[Counter.ProbeAnswerFwd] += 1
        return None
    if moved:
        return None
    if subdup and _holder(mp) == 0:
        conv.counters[Counter.DupAckFwd] += 1
        return None
    if _sack_news(flow, mp):
        conv.counters[Counter.SackNewsFwd] += 1
        return None
    if _orphan_news(mp, p0, pkt, data, una0, subdup):
        conv.counters[Counter.DupAckOrphanFwd] += 1
        return None
    conv.counters[Counter.DupAckSuppressed] += 1
    return [Drop("data-level duplicate ACK (reordering between subflows)")]


def sf1_rst(conv, flow, pkt) -> list | None:
    """A RST on subflow 1 while other subflows live: the subflow is gone, the connection is
    not (RFC 8684 §3.6); its data goes elsewhere. None when no other subflow lives."""
    mp = flow.mp
    p0 = mp.paths[0]
    if _best_live(mp) <= 0 and not (p0.state is SS.CLOSED and any(
            q.state is SS.SYN_SENT or q.state is SS.PRE_ESTABLISHED for q in mp.paths)):
        # (subflow 1 already ours to forget, joins opening after the last one closed
        # (_revive): Linux answers our REMOVE_ADDR 0 with this RST; it is no end of the
        # connection, and reaching the guest it ended the flow the joins would carry
        # (review of b5d97cb))
        return None
    if p0.state is not SS.CLOSED:
        acts = _event(conv, flow, p0, SI.RST, flow.last)
    else:
        acts = []
    return [Drop("RST of subflow 1; the connection lives on its other subflows"), *acts]


# -- packets on extra subflows --------------------------------------------------------------------


def join_in(conv, p, pkt, data: bytes, now: float) -> list:
    """A packet addressed to one of our extra subflows (consumed, never forwarded)."""
    flow = p.flow
    if flow.mp is None or p.index >= len(flow.mp.paths) or flow.mp.paths[p.index] is not p:
        conv.counters[Counter.JoinUnknown] += 1
        return [Drop("packet of a forgotten subflow")]
    flow.last = now
    inp, ctx, pm = _classify(flow, p, pkt, data)
    if ctx is _UNACCEPTABLE:
        conv.counters[Counter.JoinSeqUnacceptable] += 1
    if inp is _FASTCLOSE:
        return _fastclosed(conv, flow, flow.mp, p, pkt)
    # a pure segment before rcv_nxt: a window probe (Linux's at rcv_nxt - 1) or a keepalive,
    # sent when the window the server holds is closed: unanswered, a lost window update was
    # never repeated and the server probed until the guest gave up (the loss test's stall)
    probe = (inp is SI.ACK and not pkt.payload_len
             and _unwrap((pkt.seq - p.remote_isn) & M32, p.rcv_nxt) < p.rcv_nxt)
    actions = _event(conv, flow, p, inp, now, pkt, data, ctx)
    if (ctx is _UNACCEPTABLE or ctx is _CHALLENGE or probe) and p.state in ALIVE and now - p.chal_at >= CHALLENGE_GAP:
        # RFC 9293 §3.10.7.4: an unacceptable segment (not a RST; a zero-length one before
        # rcv_nxt is one) is answered with an ACK; RFC 5961 §3.2: so is a RST in the window
        # but not at rcv_nxt (a challenge: a real peer answers it with the exact RST).
        # Rate-limited (§7, as Linux's tcp_oow_rate_limited); it changes nothing here
        p.chal_at = now
        conv.counters[Counter.JoinProbeAnswered if probe else Counter.JoinChallengeAck] += 1
        actions.append(_inject(_ack_on(flow, p)))
    if pm is not None and p.state in ALIVE and flow.state is _ESTABLISHED:
        echo, joins = peer_option(conv, flow, pm, p.version, now)
        if echo is not None:
            actions.append(_inject(_ack_on(flow, p, (echo,))))
        actions.extend(joins)
    return actions


_UNACCEPTABLE = "unacceptable"  # (_classify: seq or ack outside the windows, counted)
_CHALLENGE = "challenge"  # (_classify: a RST within the window, not at rcv_nxt)
_FASTCLOSE = "fastclose"  # (_classify: MP_FASTCLOSE with our key on an acceptable segment of a join)


def _fastclosed(conv, flow, mp, p, pkt) -> list:
    """The peer closed the connection with MP_FASTCLOSE on a join (a peer whose subflow 1 is
    gone sends it there only): the guest gets a RST at its rcv_nxt (at the end of what went
    to it too, when it has not acked all of it), the peer our RST on that subflow when the
    option came on an ACK (Option A); every subflow is closed."""
    counters = conv.counters
    counters[Counter.FastCloseRX] += 1
    acts = [Drop("MP_FASTCLOSE on a join: the connection is gone"), *_guest_rsts(flow, mp)]
    if not pkt.flags & RST:
        counters[Counter.FastCloseRstTX] += 1
        acts.append(_inject(_rst(flow, p, MPTCP_RST_EUNSPEC)))
    _close_all(conv, flow, mp)
    return acts


def _stale_holds(mp) -> bool:
    for q in mp.paths:
        if q.state is SS.STALE and q.snd_nxt > q.snd_una:
            return True
    return False


def _orphans(mp, p) -> None:
    """Subflow p closes: its bytes the server has not data-acked get new homes as the guest
    resends them, the data-level head first (mp.orphan_hi, for send's cut)."""
    hi = mp.orphan_hi
    idx = p.index
    for r in mp.runs:
        if r[2] == idx and r[1] > hi:
            hi = r[1]
    mp.orphan_hi = hi


def _event(conv, flow, p, inp, now, pkt=None, data=b"", ctx=None) -> list:
    entry = SUBFLOW_TABLE.get((p.state, inp))
    if entry is None:
        conv.counters[Counter.JoinViolation] += 1
        return [Drop("subflow state violation")] if pkt is not None else []
    name, nxt = entry
    was = p.state
    if nxt is SS.CLOSED and was is not SS.CLOSED and flow.mp is not None:
        _orphans(flow.mp, p)
    actions = _HANDLERS[name](conv, flow, p, pkt, data, ctx, now)
    p.state = nxt
    if nxt is SS.CLOSED and was is not SS.CLOSED and flow.mp is not None and (
            inp is SI.TIMER_DEAD
            or (p.retry and (was is SS.SYN_SENT or was is SS.PRE_ESTABLISHED) and (
                inp is SI.GIVE_UP or ((inp is SI.RST or inp is SI.SYNACK_BAD) and _pathless(flow, flow.mp))))):
        # (a retry refused while nothing else is left: owed again, so that the flow ends in
        # a join or, its slots used up, in the guest's reset; it waited for good, no timer
        # left, as after any refused last join before: second review of stop 48)
        _retry_later(flow, flow.mp, p, now)
    if nxt is SS.CLOSED and was is not SS.CLOSED and not flow.fastclosed and flow.mp is not None:
        if was in ALIVE:
            actions.extend(_revive(conv, flow, flow.mp, now))
        else:  # a join that failed to open: no rejoin (see _revive), but it may have been the last hope
            if flow.local_fin and inp is SI.RST and (was is SS.SYN_SENT or was is SS.PRE_ESTABLISHED):
                # (refused by the server, not an uplink going down under a join in its
                # handshake, nor a closing join's end; review of ffa262f)
                flow.mp.fin_refused = True
            actions.extend(_no_path_left(conv, flow, flow.mp, now))
        if not flow.mp.stranded_at and _stranded(flow, flow.mp):
            flow.mp.stranded_at = now  # (tick resets the guest STRANDED_WAIT later)
    return actions


def _retry_later(flow, mp, p, now: float) -> None:
    """Subflow p died by the clocks, or its retry failed to open (no answer to its SYN or
    third ACK): a join over its uplink to its address is owed REJOIN_WAIT (doubled per retry
    of the flow so far) from now (tick at retry_at, the earliest owed: _retry_joins). Each
    death waits its own time: one joining a batch owed earlier went out right after it
    (review of 308cbeb). Not for a subflow 1 whose uplink is unknown, nor a passive join (the
    peer opens those), nor an inbound flow, nor once the connection is gone."""
    uid = _uid(flow, p)
    if not uid or flow.inbound or flow.fastclosed:
        return
    remote, rport = (mp.server, mp.sport) if p.index == 0 else (p.remote, p.rport)
    _owe_join(mp, uid, remote, rport, now)


def _owe_join(mp, uid: int, remote: bytes, rport: int, now: float) -> None:
    """A join over uplink `uid` to remote:rport owed by _retry_joins, REJOIN_WAIT (doubled per
    retry of the flow so far) from now; at most MAX_PATHS owed, each once."""
    if len(mp.retries) >= MAX_PATHS:
        return
    for e in mp.retries:
        if e[0] == uid and e[1] == remote and e[2] == rport:
            return
    n = mp.retry_n if mp.retry_n < REJOIN_DOUBLINGS else REJOIN_DOUBLINGS
    due = now + REJOIN_WAIT * (1 << n)
    mp.retries.append((uid, remote, rport, due))
    if not mp.retry_at or due < mp.retry_at:
        mp.retry_at = due


def _retry_joins(conv, flow, mp, now: float) -> list:
    """The joins owed by _retry_later that are due: each over its uplink if that is up (down:
    uplink_event joins when it comes back) to its address if the server still takes joins
    to it (the initial one unless it forbade it, or one it announced and did not remove; an
    ADD_ADDR without a port means the initial port, as in _join_peer), unless a subflow there
    is open again; within the subflow limit, keeping the last of MAX_PATHS. None once the
    connection is gone (MP_FASTCLOSE). A flow that has no subflow alive or opening after it
    (a retry in the black hole does not count: _none_alive) joins over every uplink up
    (_revive)."""
    due = []
    later = []
    for e in mp.retries:
        if e[3] <= now:
            due.append(e)
        else:
            later.append(e)
    mp.retries = later
    mp.retry_at = 0.0
    for e in later:
        if not mp.retry_at or e[3] < mp.retry_at:
            mp.retry_at = e[3]
    if not due or flow.fastclosed or not _joinable(flow, mp):
        return []
    mp.retry_n += 1
    acts = []
    limit = _limit(conv, flow)
    for uid, remote, rport, _ in due:
        if len(mp.paths) >= MAX_PATHS - 1:
            break
        if sum(1 for q in mp.paths if q.state is not SS.CLOSED) >= limit:
            break
        up = None
        for u in conv.config.uplinks:
            if u.id == uid:
                up = u
        if up is None or not conv.uplink_up.get(up.name, up.up):
            continue
        if remote == mp.server and rport == mp.sport:
            if flow.no_initial_join:
                continue
        elif not any(a[1] == remote and (a[2] or mp.sport) == rport for a in flow.peer_addrs or ()):
            continue  # (removed by the server since)
        if _open_on(flow, mp, uid, remote, rport):
            continue
        syn = _open_join(conv, flow, mp, up, now, remote, rport)
        if syn:
            mp.paths[-1].retry = True
            conv.counters[Counter.MPJoinRetry] += 1
            acts.extend(syn)
    if not acts and _pathless(flow, mp):
        acts = _revive(conv, flow, mp, now)
    return acts


def _on_probation(p) -> bool:
    """A retry (_retry_joins) whose server has not yet acked PROBATION_BYTES of data on it:
    its path died once and may pass small segments but not data (an MTU black hole, a
    policer). Beside another established subflow, it goes stale after its wait (at least
    PROBATION_WAIT: a guest's RTO may repair a tail loss there first, third review of stop
    48) with no answer, even when no other subflow has news (the guest, its data-level head
    held there, sends nothing new), and dies at once (tick): each retry into such a path
    stalled the upload 6.8 s, the stale probe answered and SILENT_ALONE waited out twice (an
    experiment of stop 48, 5 retries in 75 s)."""
    return p.retry and p.snd_una <= PROBATION_BYTES


def _open_on(flow, mp, uid: int, remote: bytes, rport: int) -> bool:
    """Has the flow a subflow alive or opening over uplink `uid` to remote:rport? (Not one
    the server closed with its FIN, CLOSING until a RST: it kept _revive off the only uplink
    for good, second review of stop 48.)"""
    for q in mp.paths:
        if q.state is not SS.CLOSED and q.state is not SS.CLOSING and _uid(flow, q) == uid:
            if (q.index == 0 and remote == mp.server and rport == mp.sport) or (
                    q.index != 0 and q.remote == remote and q.rport == rport):
                return True
    return False


def _none_alive(mp) -> bool:
    """No subflow alive or opening. A retry's SYN (_retry_joins) is a probe of a path that
    died, not a subflow opening: with it in flight the last alive subflow's end brought no
    _revive, the retry gave up 11 s later with no rejoin (a join that failed to open), and
    the flow hung beside an uplink that worked (review of 308cbeb)."""
    for q in mp.paths:
        if q.state in ALIVE or q.state is SS.PRE_ESTABLISHED or (q.state is SS.SYN_SENT and not q.retry):
            return False
    return True


def _joinable(flow, mp) -> bool:
    """Would the server take a join for this flow? Outbound only (inbound: the peer opens the
    subflows, issue 9), and Linux takes one only while its connection is ESTABLISHED
    (mptcp_can_accept_new_subflow, mptcp_finish_join: fully established, TCP_ESTABLISHED):
    not once it sent its DATA_FIN, nor once it acked ours. Between the guest's FIN and the
    server's ack of it, it may not have our DATA_FIN yet (lost with the path that died): a
    join may carry the close. If it had it, it refuses the join (a RST to its SYN,
    subflow_check_req, or to its third ACK): such a refusal after the guest's FIN ends the
    hope (mp.fin_refused); an uplink going down under a join in its handshake does not."""
    return (not flow.inbound and (flow.state is _ESTABLISHED or flow.state is _CLOSING)
            and not flow.remote_fin and not _guest_fin_acked(flow, mp) and not mp.fin_refused)


def _guest_fin_acked(flow, mp) -> bool:
    """The server data-acked the guest's DATA_FIN, on any subflow (flow.local_fin_acked is
    the converter's, from subflow 1's DATA_ACKs only: a close carried on a join left it
    unset, and a finished flow looked stranded; review of ffa262f)."""
    if flow.local_fin_acked:
        return True
    return flow.local_fin and mp.data_ack > _unwrap((flow.local_fin_seq - flow.guest_isn) & M32, mp.snd_nxt)


def _stranded(flow, mp) -> bool:
    """An outbound flow whose close is not complete, no subflow alive or opening, and none can
    open again for it (not _joinable: the server sent its DATA_FIN, acked ours, or refused a
    join after the guest's FIN). The guest resent its bytes or FIN into nothing, or waited
    for the server's, until its own timeout, minutes later (a FIN_WAIT2 socket its
    application still reads: for ever); it is reset instead (tick, STRANDED_WAIT later: by
    then a packet that completes the close, the FIN that closed the last subflow carrying
    the last DATA_ACK, has moved the flow on)."""
    if flow.inbound or flow.fastclosed or _joinable(flow, mp):
        return False
    if flow.state is not _ESTABLISHED and flow.state is not _CLOSING:
        return False
    if flow.remote_fin_acked and _guest_fin_acked(flow, mp):
        return False
    return _none_alive(mp)


def _pathless(flow, mp) -> bool:
    """A flow the server would take a join for (_joinable) with no subflow alive or opening:
    the case of _revive and _no_path_left (once it takes none, _stranded's)."""
    return _joinable(flow, mp) and _none_alive(mp)


def _revive(conv, flow, mp, now: float) -> list:
    """A subflow that carried the flow closed, and none is left alive or opening: join again
    over every uplink that is up (and to the server's announced addresses), within the
    subflow limit and MAX_PATHS. Rejoins came only when an uplink came back, so a flow whose
    subflows died while their uplinks stayed up (subflow 1 and a join stale and dead beside
    an idle join, whose uplink then went down; the server's RST) had none for good, and the
    guest's bytes were dropped ("no live subflow") until it gave up (a random model run).
    Only after an alive subflow closed, never after a join that failed to open: one that
    fails at once (the server's RST, a middlebox stripping MP_JOIN) re-opened itself in a
    loop until MAX_PATHS was used up, and the uplink that came back could no longer rejoin
    (review of b5d97cb). Not after the server's DATA_FIN (Linux refuses joins then), nor for
    inbound flows (the peer opens the subflows, issue 9)."""
    if not _pathless(flow, mp):
        return []
    acts = []
    limit = _limit(conv, flow)
    for up in () if flow.no_initial_join else conv.config.uplinks:
        if len(mp.paths) >= MAX_PATHS or len(acts) >= limit:
            break
        if conv.uplink_up.get(up.name, up.up) and not _open_on(flow, mp, up.id, mp.server, mp.sport):
            # (a retry's SYN may be out there: _none_alive)
            syn = _open_join(conv, flow, mp, up, now)
            if syn:
                conv.counters[Counter.MPJoinRejoin] += 1
                acts.extend(syn)
    for entry in flow.peer_addrs or ():
        if len(mp.paths) >= MAX_PATHS:
            break
        acts.extend(_join_peer(conv, flow, mp, entry, now))
    return acts or _no_path_left(conv, flow, mp, now)


def _no_path_left(conv, flow, mp, now: float) -> list:
    """Nothing alive, nothing opening, and no subflow can be opened for this (outbound) flow
    again: its 8 subflows used up (each join takes a new slot), or no address left to join
    (the server forbade its initial one, and announced none or removed them). The guest
    would resend into nothing until its own timeout, minutes later: it is reset, visibly, at
    once (its RSTs at guest_rst_at), and the flow is forgotten once OVER_KEEP passed without
    a packet of it (tick). A flow whose uplinks are down waits: one may come back. Once the
    server takes no join (its DATA_FIN, or ours acked): _stranded."""
    if flow.fastclosed or not _pathless(flow, mp):
        return []
    if _may_rejoin(flow, mp):
        # (it waits for an uplink to come back, or for a join owed over one that is up:
        # owed here, so that a flow whose joins were refused while its uplinks stayed up
        # does not wait with no timer for good (third review of stop 48); each retry takes
        # a slot, and the last slot's refusal resets the guest)
        if not mp.retries and not flow.inbound:
            for up in conv.config.uplinks:
                if conv.uplink_up.get(up.name, up.up):
                    if not flow.no_initial_join:
                        _owe_join(mp, up.id, mp.server, mp.sport, now)
                    for entry in flow.peer_addrs or ():
                        if len(entry[1]) == (4 if mp.version == 4 else 16):
                            _owe_join(mp, up.id, entry[1], entry[2] or mp.sport, now)
        return []
    for q in mp.paths:
        if q.retry and q.state is SS.SYN_SENT:
            # (its answer may still come, and its failure comes back here; a reset beside
            # it lost a flow the retry would have carried: second review of stop 48)
            return []
    return _reset_pathless(conv, flow, mp, now)


def _may_rejoin(flow, mp) -> bool:
    """A slot left (MAX_PATHS) and an address to join: the server's initial one, or one it
    announced."""
    return len(mp.paths) < MAX_PATHS and not (flow.no_initial_join and not flow.peer_addrs)


def _reset_pathless(conv, flow, mp, now: float) -> list:
    """The guest's RSTs for a flow no subflow can carry again (_no_path_left, _stranded)."""
    conv.counters[Counter.NoPathLeft] += 1
    flow.fastclosed = True
    mp.over_at = now
    mp.stranded_at = 0.0
    return _guest_rsts(flow, mp)


def _fastclose_with_our_key(flow, pkt, data: bytes) -> bool:
    """Does the segment carry MP_FASTCLOSE with our key? (a loop: no closure, so that the
    compiled twin can make _classify a C function)"""
    for o in mptcp_options(data, pkt):
        if type(o) is MpFastclose and o.rcvr_key == flow.local_key:
            return True
    return False


def _classify(flow, p, pkt, data: bytes) -> tuple:
    """(SubflowInput, its context, an ADD_ADDR or REMOVE_ADDR on an acceptable segment)."""
    f = pkt.flags
    if p.passive and p.state is SS.SYN_RCVD:
        return _classify_passive(flow, p, pkt, data), None, None
    if f & RST:
        if p.state is SS.SYN_SENT:
            return (SI.RST if f & ACK and pkt.ack == (p.local_isn + 1) & M32 else SI.ODD), None, None
        r = _unwrap((pkt.seq - p.remote_isn) & M32, p.rcv_nxt)
        if r != p.rcv_nxt:
            if p.rcv_nxt < r <= p.rcv_nxt + (0xFFFF << flow.guest_wscale):
                return SI.ODD, _CHALLENGE, None
            return SI.ODD, None, None
        if (p.state in ALIVE or p.state is SS.CLOSING) and _fastclose_with_our_key(flow, pkt, data):
            return _FASTCLOSE, None, None  # Option R (RFC 8684 §3.5)
        return SI.RST, None, None
    if f & SYN:
        if not f & ACK or pkt.ack != (p.local_isn + 1) & M32:
            return SI.ODD, None, None
        if p.state is not SS.SYN_SENT and pkt.seq != p.remote_isn:
            return SI.ODD, None, None
        for o in mptcp_options(data, pkt):
            if type(o) is MpJoinSynAck:
                mac = join_hmac(flow.remote_key, flow.local_key, o.nonce, p.lnonce, flow.version)[:8]
                if secrets.compare_digest(mac, o.hmac):
                    return SI.SYNACK_JOIN, o, None
                return SI.SYNACK_BAD, None, None
        return SI.SYNACK_BAD, None, None
    if not f & ACK:
        return SI.ODD, None, None
    if p.state is SS.SYN_SENT:
        return SI.ACK, None, None  # not our SYN/ACK: an old connection's ACK (_j_stale_ack)
    # Acceptability (RFC 9293 §3.10.7.4, RFC 5961 §5.2), with the largest window each side's
    # scale can express as the bound (the window we offer here is the guest's, which may have
    # been wider when the server sent, and shrinks when the guest reads slowly): the segment
    # must lie within that window of rcv_nxt, ahead or one window back (a reordered ACK, a
    # retransmission whose ACK got lost, Linux's zero-window probe at rcv_nxt - 1 are still
    # answered), and its ack within the server's largest window below snd_una, up to snd_nxt.
    # Anything else changes nothing: a blind forger must hit both ranges (about 1 in 2^17 at
    # the common scale 7), where anything within 2^30 passed before (1 in 8).
    n = pkt.payload_len
    rwnd = 0xFFFF << flow.guest_wscale
    r = _unwrap((pkt.seq - p.remote_isn) & M32, p.rcv_nxt)
    if r > p.rcv_nxt + rwnd or r + n + (1 if f & FIN else 0) + rwnd < p.rcv_nxt:
        return SI.ODD, _UNACCEPTABLE, None
    a = _unwrap((pkt.ack - p.local_isn) & M32, p.snd_una)
    if a > p.snd_nxt + 1 or a + (0xFFFF << p.rwscale) < p.snd_una:
        return SI.ODD, _UNACCEPTABLE, None
    dss = pm = None
    fastclose = False
    for o in mptcp_options(data, pkt):
        t = type(o)
        if t is Dss:
            dss = o
        elif t is AddAddr or t is RemoveAddr:
            pm = o
        elif t is MpJoinAck and p.passive and not pkt.payload_len and _ack3_ok(flow, p, pkt, o):
            return SI.ACK3_JOIN, None, None  # the peer's third ACK again: our fourth got lost
        elif t is MpFastclose and o.rcvr_key == flow.local_key:
            fastclose = True
    acceptable = p.rcv_nxt <= r + n and r <= p.rcv_nxt + (flow.guest_window << flow.guest_wscale)
    if fastclose and acceptable and (p.state in ALIVE or p.state is SS.CLOSING):
        return _FASTCLOSE, None, None  # Option A (RFC 8684 §3.5)
    if pm is not None and not acceptable:
        pm = None  # RFC 9293 §3.10.7.4: only an acceptable segment changes what we know
    if f & FIN:
        return SI.FIN, dss, pm
    if n:
        return SI.DATA, dss, pm
    return SI.ACK, dss, pm


def _ack3_ok(flow, p, pkt, o) -> bool:
    """The peer's third ACK of a join it opened: it acks our SYN/ACK exactly, and its HMAC is
    HMAC(Key-A + Key-B, R-A + R-B) (160 bits), the peer being A (RFC 8684 §3.2)."""
    if pkt.ack != (p.local_isn + 1) & M32 or pkt.seq != (p.remote_isn + 1) & M32:
        return False
    mac = join_hmac(flow.remote_key, flow.local_key, p.rnonce, p.lnonce, flow.version)[:20]
    return secrets.compare_digest(mac, o.hmac)


def _classify_passive(flow, p, pkt, data: bytes):
    """A packet on a join the peer opened, before its third ACK."""
    f = pkt.flags
    if f & RST:
        return SI.RST if pkt.seq == (p.remote_isn + 1) & M32 else SI.ODD
    if f & SYN:
        return SI.SYN_AGAIN if not f & ACK and pkt.seq == p.remote_isn else SI.ODD
    if not f & ACK or pkt.ack != (p.local_isn + 1) & M32:
        return SI.ODD  # (not an answer to our SYN/ACK: changes nothing)
    for o in mptcp_options(data, pkt):
        if type(o) is MpJoinAck:
            return SI.ACK3_JOIN if _ack3_ok(flow, p, pkt, o) else SI.ACK3_BAD
    return SI.ACK3_BAD


# -- subflow handlers (SUBFLOW_TABLE) ---------------------------------------------------------


def _j_drop(conv, flow, p, pkt, data, ctx, now):
    return [Drop("join packet that changes nothing")] if pkt is not None else []


def _j_nothing(conv, flow, p, pkt, data, ctx, now):
    return [Drop("join packet that changes nothing")] if pkt is not None else []


def _j_synack(conv, flow, p, pkt, data, opt, now):
    counters = conv.counters
    counters[Counter.MPJoinSynAckRX] += 1
    p.remote_isn = pkt.seq
    p.rnonce = opt.nonce
    o = parse_options(data, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    p.rwscale = min(o.wscale, 14) if o.wscale >= 0 and flow.guest_wscale_seen else 0
    p.snd_wnd = pkt.window  # unscaled in a SYN/ACK
    p.sack = o.sack_perm
    p.rcv_nxt = 1
    p.tries = 0
    p.timer = now + ACK3_RTO
    counters[Counter.MPJoinAckTX] += 1
    return [Drop("join SYN/ACK: consumed"), _inject(_join_ack3(conv, flow, p))]


def _j_ack3(conv, flow, p, pkt, data, ctx, now):
    p.tries += 1
    p.timer = now + ACK3_RTO * (1 << min(p.tries, 4))
    conv.counters[Counter.MPJoinAckTX] += 1
    acts = [_inject(_join_ack3(conv, flow, p))]
    return [Drop("join SYN/ACK again: third ACK again"), *acts] if pkt is not None else acts


def _j_synack_again(conv, flow, p, pkt, data, ctx, now):
    conv.counters[Counter.PassiveJoinSynRX] += 1
    o = _passive_syn(flow, p, pkt, data)  # (what our SYN/ACK answers is what we assume)
    return [Drop("join SYN again: our SYN/ACK again"), _inject(_join_synack(conv, flow, p, o.wscale >= 0))]


def _j_passive_established(conv, flow, p, pkt, data, ctx, now):
    """The peer's third ACK, HMAC checked: the subflow carries data from now on; our fourth
    ACK (with the DATA_ACK) tells the peer so (RFC 8684 §3.2)."""
    conv.counters[Counter.PassiveJoinEstablished] += 1
    mp = flow.mp
    p.rcv_nxt = 1
    p.snd_una = p.snd_nxt = 1
    p.rate = max((q.rate for q in mp.paths if q.state is SS.ESTABLISHED), default=0.0)
    p.srtt = mp.paths[0].srtt
    p.rttvar = mp.paths[0].rttvar
    p.progress_at = p.acked_at = p.rate_at = p.heard_at = now
    p.timer = 0.0
    _cwnd_start(conv, flow, p)
    return [Drop("third ACK of a join: consumed"), _inject(_ack_on(flow, p))]


def _j_ack4(conv, flow, p, pkt, data, ctx, now):
    return [Drop("third ACK again: our fourth ACK again"), _inject(_ack_on(flow, p))]


def _j_refuse_ack3(conv, flow, p, pkt, data, ctx, now):
    """A third ACK without MP_JOIN or with a wrong HMAC: RST + MP_TCPRST (RFC 8684 §3.2)."""
    conv.counters[Counter.PassiveJoinAckHMacFailure] += 1
    _forget(conv, p)
    return [Drop("third ACK of a join refused"), _inject(_rst(flow, p, MPTCP_RST_EMPTCP))]


def _j_passive_give_up(conv, flow, p, pkt, data, ctx, now):
    conv.counters[Counter.MPJoinTimeout] += 1
    _forget(conv, p)
    return [_inject(_rst(flow, p, MPTCP_RST_EMPTCP))]  # (SYN_RCVD: snd_nxt, rcv_nxt 1)


def _j_refuse(conv, flow, p, pkt, data, ctx, now):
    """SYN/ACK without MP_JOIN or with a wrong HMAC: RST + MP_TCPRST (RFC 8684 §3.2)."""
    conv.counters[Counter.MPJoinSynAckHMacFailure] += 1
    rst = segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + 1, pkt.seq + 1,
                  RST | ACK, 0, build_options(b"", (MpTcpRst(False, MPTCP_RST_EMPTCP),)))
    _forget(conv, p)
    return [Drop("join SYN/ACK refused"), _inject(rst)]


def _j_rejected(conv, flow, p, pkt, data, ctx, now):
    conv.counters[Counter.MPJoinRejected] += 1
    _forget(conv, p)
    return [Drop("join reset by the server")]


def _j_syn_again(conv, flow, p, pkt, data, ctx, now):
    p.tries += 1
    p.timer = now + SYN_RTO[min(p.tries, len(SYN_RTO) - 1)]
    conv.counters[Counter.MPJoinSynTX] += 1
    return [_inject(_join_syn(conv, flow, p))]


def _j_stale_ack(conv, flow, p, pkt, data, ctx, now):
    """An ACK without SYN to our join SYN: the server has the 4-tuple in TIME_WAIT (an
    earlier join's, on the port we chose again, or before a restart) and took the SYN for
    an old duplicate (Linux: its seq not beyond the old connection's, no timestamps). RFC
    9293 SYN-SENT: an ACK that does not ack our SYN gets a RST <SEQ=SEG.ACK>, which ends the
    TIME_WAIT (Linux, tcp_rfc1337 off, its default); our SYN, sent again at once, then opens
    the join. Dropped, every retry met the same ACK until we gave up. Once per SYN attempt:
    a forger's ACKs get no more of our packets than our own SYN timer sends."""
    if pkt.ack == (p.local_isn + 1) & M32 or p.tw_reset == p.tries:
        return [Drop("join: an ACK without SYN while our SYN waits")]
    p.tw_reset = p.tries
    counters = conv.counters
    counters[Counter.JoinTimeWaitReset] += 1
    counters[Counter.MPJoinSynTX] += 1
    rst = segment(p.version, p.local, p.remote, p.lport, p.rport, pkt.ack, 0, RST, 0)
    return [Drop("join: an old connection's ACK, answered with a RST"), _inject(rst),
            _inject(_join_syn(conv, flow, p))]


def _j_give_up(conv, flow, p, pkt, data, ctx, now):
    conv.counters[Counter.MPJoinTimeout] += 1
    acts = []
    if p.state is SS.PRE_ESTABLISHED:
        acts.append(_inject(_rst(flow, p, MPTCP_RST_EMPTCP)))
    _forget(conv, p)
    return acts


def _j_reset(conv, flow, p, pkt, data, ctx, now):
    conv.counters[Counter.MPJoinTimeout] += 1
    _forget(conv, p)
    return [_inject(_rst(flow, p, MPTCP_RST_EMPTCP))]


def _j_established(conv, flow, p, pkt, data, dss, now):
    conv.counters[Counter.MPJoinEstablished] += 1
    mp = flow.mp
    p0 = mp.paths[0]
    p.rate = max((q.rate for q in mp.paths if q.state is SS.ESTABLISHED), default=0.0)
    p.srtt = p0.srtt
    p.rttvar = p0.rttvar
    p.progress_at = p.acked_at = now
    p.rate_at = now
    _cwnd_start(conv, flow, p)
    acts = _j_segment(conv, flow, p, pkt, data, dss, now)
    first = not any(q is not p and q.state in ALIVE for q in mp.paths)  # alive again after none was
    # the guest's FIN lies at snd_nxt: every byte before it was mapped. Not when its last
    # bytes came while no subflow was alive (dropped, never mapped): a DATA_FIN at snd_nxt
    # then ended the stream before them (the model, MP_MODEL_RANDOM, stop 48)
    fin_next = flow.local_fin and _unwrap((flow.local_fin_seq - flow.guest_isn) & M32, mp.snd_nxt) == mp.snd_nxt
    if first and (mp.snd_nxt > mp.data_ack or (flow.local_fin and not fin_next and not _guest_fin_acked(flow, mp))):
        # the first subflow alive again after none was (_revive, or an uplink's return): the
        # guest's resends since went nowhere ("no live subflow"), and its RTO may have backed
        # off for seconds; prompted now, as when a subflow dies (_j_dead) (review of b5d97cb)
        acts += _prompt_guest(flow, mp, conv.counters)
    elif first and fin_next and mp.snd_nxt == mp.data_ack and not _guest_fin_acked(flow, mp):
        # only the guest's FIN outstanding, and this the first subflow alive again: its
        # DATA_FIN goes on it now, not at the guest's next FIN resend, an RTO backed off while
        # no path existed (review of ffa262f)
        conv.counters[Counter.DataFinTX] += 1
        acts.append(_inject(_data_on(flow, p, bare_dfin(flow, dack_now(flow), mp.snd_nxt), 0, b"")))
    if mp.rm_owed:
        acts += _rm_owed(flow, mp, p, conv.counters)
    return acts


def _rm_owed(flow, mp, p, counters) -> list:
    """The REMOVE_ADDR owed for subflows that died while none was alive, on join p as it
    comes up: the server otherwise kept them, resending its data into a dead path until its
    own timers gave up (RFC 8684 §3.4.2). Never an id a subflow of ours uses again."""
    ids = tuple(i for i in mp.rm_owed if not any(q.addr_id == i and q.state is not SS.CLOSED for q in mp.paths))
    mp.rm_owed = []
    if not ids:
        return []
    counters[Counter.RmAddrTX] += 1
    counters[Counter.RmAddrOwedTX] += 1
    return [_inject(_ack_on(flow, p, (RemoveAddr(ids),)))]


def _j_recover(conv, flow, p, pkt, data, dss, now):
    conv.counters[Counter.SubflowRecover] += 1
    if pkt is None:
        return []
    return _j_segment(conv, flow, p, pkt, data, dss, now)


def _j_segment(conv, flow, p, pkt, data, dss, now):
    """ACK / data / FIN on an extra subflow: acks move the data level (the guest hears of it
    when something moved); data goes to the guest at the guest seq of its DSN and is acked
    here on arrival."""
    mp = flow.mp
    counters = conv.counters
    una0 = p.snd_una
    moved, subdup = _ack_info(flow, mp, p, pkt, dss, now, data)
    actions = [_CONSUMED]
    if p.rtx:
        actions.extend(_repair(conv, flow, mp, p, now))
        if subdup and _repairing(p, p.snd_una):
            subdup = False  # we repair it: not the guest's loss
    plen = pkt.payload_len
    f = pkt.flags
    data_fin = dss is not None and dss.data_fin
    if plen or f & FIN or data_fin:
        actions.extend(_download(conv, flow, mp, p, pkt, data, dss))
        return actions
    if _probe_answer(mp, p.index, now) and not moved:
        counters[Counter.ProbeAnswerFwd] += 1
        actions.append(_inject(_guest_ack(flow, mp)))
    elif moved:
        counters[Counter.GuestAckInjected] += 1
        actions.append(_inject(_guest_ack(flow, mp)))
    elif subdup and _holder(mp) == p.index:
        counters[Counter.DupAckFwd] += 1
        actions.append(_inject(_guest_ack(flow, mp)))
    elif _sack_news(flow, mp):
        counters[Counter.SackNewsFwd] += 1
        actions.append(_inject(_guest_ack(flow, mp)))
    elif _orphan_news(mp, p, pkt, data, una0, subdup):
        counters[Counter.DupAckOrphanFwd] += 1
        actions.append(_inject(_guest_ack(flow, mp)))
    else:
        counters[Counter.DupAckSuppressed] += 1
    return actions


def _download(conv, flow, mp, p, pkt, data, dss) -> list:
    counters = conv.counters
    counters[Counter.JoinDataRX] += 1
    f = pkt.flags
    plen = pkt.payload_len
    r = _unwrap((pkt.seq - p.remote_isn) & M32, p.rcv_nxt)
    out = []
    d0 = -1
    ck = None  # this segment's part in its mapping's DSS checksum, recorded once taken
    cut = None  # the parts of the payload the guest gets, when not all of it (flow.unseen)
    if plen:
        if dss is None or dss.data_seq is None or dss.data_len == 0:
            counters[Counter.MappingUncovered] += 1
            return [_inject(_ack_on(flow, p))]
        fin_len = 1 if dss.data_fin else 0
        m_r = _unwrap(dss.subflow_seq, r)
        m_len = dss.data_len - fin_len
        if r < m_r or r + plen > m_r + m_len:
            counters[Counter.MappingUncovered] += 1
            return [_inject(_ack_on(flow, p))]
        if flow.checksum and dss.csum is None:
            counters[Counter.DataCsumMissing] += 1
            return [_inject(_ack_on(flow, p))]
        d = flow.remote_rel(dss.data_seq, dss.dsn64)
        if d < 0:
            counters[Counter.SeqOutOfWindow] += 1
            return [_inject(_ack_on(flow, p))]
        if dss.dsn64:
            flow.ack64 = True
        d0 = d + (r - m_r)
        if d0 + plen > flow.rcv_rel + (flow.guest_window << flow.guest_wscale) and r + plen > p.rcv_nxt:
            # Beyond the window the guest offered (Linux seems to pair a new DATA_ACK with a
            # join's older window): the guest drops it, and acked here only the server's
            # MPTCP-level timer repairs that (GuestHoleSuspect). Counted, still taken: not
            # taking it (the server resends it sooner) cost the join its share of the
            # download in a first trial; to be decided on the benchmark.
            counters[Counter.JoinBeyondGuestWindow] += 1
            if r + plen > p.beyond_hi:
                p.beyond_hi = r + plen
        if flow.checksum and r + plen > p.rcv_nxt:
            if r == m_r and plen == m_len:
                if dss_checksum((flow.remote_idsn + d) & M64, dss.subflow_seq, dss.data_len,
                                data[pkt.payload_off:pkt.length]) != dss.csum:
                    counters[Counter.DataCsumErr] += 1
                    return [_inject(_ack_on(flow, p))]  # not taken: the server resends it
            ck = _csum_step(flow, p, pkt, data, dss, r, m_r, m_len, d)
            if ck is None:  # not summable now (flow.ck_step): the server resends it
                counters[Counter.DataCsumHoleDropped] += 1
                return [_inject(_ack_on(flow, p))]
            if ck is False:  # the mapping's checksum failed after bytes of it went on
                return _abort(conv, flow, mp, p)
            if ck is not True and not (r == m_r and plen == m_len) and r >= p.beyond_hi:
                # a resend over bytes that came before: the guest gets its new bytes only
                # (flow.unseen; converter._parts_to_guest for subflow 1); a whole mapping,
                # verified as it is, goes whole; so does one over bytes taken beyond the
                # guest's window (it dropped them: review of stop 39)
                cut = resend_cut(p.rcv_nxt, p.ooo, r, r + plen, ck[0][3])
                if cut is not None:
                    counters[Counter.CsumResendCut] += 1
    end = r + plen + (1 if f & FIN else 0)
    dsack = _dup_range(p, r, r + plen) if plen and p.sack else None
    if dsack is not None:
        # bytes that came twice: our ACK names them (D-SACK), as a Linux receiver's does, so
        # that the server can undo the window cut of a resend it did not need
        counters[Counter.JoinDsackTX] += 1
    # receive bookkeeping: rcv_nxt and the out-of-order intervals of this subflow
    if r > p.rcv_nxt:
        if not _ooo_add(p, r, end):
            counters[Counter.JoinOfoDrop] += 1
            return [_inject(_ack_on(flow, p))]
        counters[Counter.JoinOutOfOrder] += 1
        p.sack_recent = r
    elif end > p.rcv_nxt:
        p.rcv_nxt = end
        ooo = p.ooo
        while ooo and ooo[0][0] <= p.rcv_nxt:
            if ooo[0][1] > p.rcv_nxt:
                p.rcv_nxt = ooo[0][1]
            del ooo[0]
    if ck is not None and ck is not True:  # (taken: now its sum)
        if ck_commit(p.ck_maps, ck):
            counters[Counter.CsumMapForgotten] += 1
        if ck[5]:
            counters[Counter.CsumOutOfOrder] += 1
    p.rx_bytes += plen
    new_flags = ACK | (f & PSH)
    if dss is not None and dss.data_fin and dss.data_seq is not None:
        fin_d = flow.remote_rel(dss.data_seq, dss.dsn64) + dss.data_len - 1
        if fin_d >= 0:
            fin_seq = (flow.server_isn + fin_d) & M32
            if not flow.remote_fin:
                flow.remote_fin = True
                flow.remote_fin_seq = fin_seq
                counters[Counter.DataFinRX] += 1
            if plen and d0 + plen == fin_d:
                new_flags |= FIN
            elif not plen:
                out.append(_inject(_to_guest(flow, mp, fin_seq, ACK | FIN)))
    if plen and d0 + plen > flow.rcv_rel:
        counters[Counter.JoinDataFwd] += 1
        flow.bytes_in += plen
        forwarded(mp, d0 + plen, flow.last)
        # a GRO super-packet, or a segment bigger than the guest takes (its MTU below the
        # uplink's): the guest gets segments it takes
        seg_max = guest_payload_max(conv, flow, mp)
        off = pkt.payload_off
        parts = (0, plen) if cut is None else [x - r for x in cut]
        for i in range(0, len(parts), 2):
            for a in range(parts[i], parts[i + 1], seg_max):
                b = min(a + seg_max, parts[i + 1])
                flags = new_flags if b == plen else ACK | (new_flags & PSH if b == parts[-1] else 0)
                out.append(_inject(_to_guest(flow, mp, (flow.server_isn + d0 + a) & M32, flags,
                                            data[off + a:off + b])))
        if new_flags & FIN and parts[-1] != plen:
            # a cut resend whose tail came before: its FIN goes on its own (review of stop 39)
            out.append(_inject(_to_guest(flow, mp, (flow.server_isn + d0 + plen) & M32, ACK | FIN)))
    elif plen:
        counters[Counter.DupConsumed] += 1
    counters[Counter.SubflowAckTX] += 1
    out.append(_inject(_ack_on(flow, p, (), dsack)))
    return out


def _dup_range(p, a: int, b: int):
    """The part of subflow bytes [a, b) that extra subflow p had already (below rcv_nxt, or
    in an out-of-order interval), as (start, end), or None: the D-SACK block of RFC 2883
    (the first such part, one block)."""
    if a < p.rcv_nxt:
        return a, min(b, p.rcv_nxt)
    for lo, hi in p.ooo:
        if lo < b and a < hi:
            return max(a, lo), min(b, hi)
    return None


def _csum_step(flow, p, pkt, data: bytes, dss, r: int, m_r: int, m_len: int, d: int):
    """This segment's part in the DSS checksum of a mapping on an extra subflow (RFC 8684
    §3.3.1), summed in any order (flow.ck_step): None (not summable now: drop, the server
    resends), False (it completes the mapping, which is wrong), True (nothing to sum), else
    what flow.ck_commit records once the segment is taken. Summed in subflow order only
    (before stop 37), a segment beyond a hole was dropped, and the join's SACK never named
    the bytes after a loss."""
    if p.ck_maps is None:
        p.ck_maps = []
    hi = m_r + m_len
    seen = m_r < p.rcv_nxt
    for iv in p.ooo:
        if iv[0] < hi and iv[1] > m_r:
            seen = True
    ck = ck_step(p.ck_maps, m_r, m_len, data, pkt.payload_off, r, pkt.payload_len, p.rcv_nxt, seen)
    if ck is None or ck is True or not ck_complete(ck):
        return ck
    if r == m_r and pkt.payload_len == m_len:
        # verified as it is (_download); pieces of it summed before must sum alike in it, or
        # the guest may have read a changed byte of theirs (review of stop 39)
        return ck if ck[4] or ck_runs_match(ck[0], data, pkt.payload_off, r) else False
    return ck if ck_verified(ck[1], flow.remote_idsn + d, dss.subflow_seq, dss.data_len, dss.csum) else False


def _abort(conv, flow, mp, p) -> list:
    """The server's stream cannot reach the guest exactly any more: both ends reset, visibly
    (the guest at its rcv_nxt; the server with MP_FASTCLOSE on this subflow), every subflow
    closed. The flow table follows on the RSTs that come back."""
    counters = conv.counters
    counters[Counter.DataCsumErr] += 1
    counters[Counter.AbortTX] += 1
    acts = _guest_rsts(flow, mp)
    acts += [_inject(segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.snd_nxt,
                            p.remote_isn + p.rcv_nxt, RST | ACK, 0,
                            build_options(b"", (MpFastclose(flow.remote_key),
                                                MpTcpRst(False, MPTCP_RST_EMPTCP)))))]
    _close_all(conv, flow, mp)
    return acts


def _ooo_add(p, a: int, b: int) -> bool:
    ooo = p.ooo
    for iv in ooo:
        if a <= iv[1] and b >= iv[0]:
            iv[0] = min(iv[0], a)
            iv[1] = max(iv[1], b)
            ooo.sort()
            merged = [ooo[0]]
            for x in ooo[1:]:
                if x[0] <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], x[1])
                else:
                    merged.append(x)
            p.ooo = merged
            return True
    if len(ooo) >= MAX_OOO:
        return False
    ooo.append([a, b])
    ooo.sort()
    return True


def _j_fin(conv, flow, p, pkt, data, dss, now):
    """The server closes this subflow: its data (if any) as usual, its FIN acknowledged and
    answered with ours; nothing new goes on it."""
    actions = _j_segment(conv, flow, p, pkt, data, dss, now)
    conv.counters[Counter.SubflowClosed] += 1
    if not p.fin_sent:
        p.fin_sent = True
        fin = segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.snd_nxt,
                      p.remote_isn + p.rcv_nxt, FIN | ACK, flow.guest_window, b"", b"", flow.mp.marks)
        p.snd_nxt += 1
        actions.append(_inject(fin))
    return actions


def _j_stale(conv, flow, p, pkt, data, ctx, now):
    """No answer from the server on p while others have news: nothing new goes on it. Its
    dead clock starts now, unless it came back since it last went stale without news (any
    segment revives it: a server whose segments still came while our direction of the path
    was dead revived it each time, and it never died).

    With the clock, a probe: a zero-length ACK just below the server's window, which a live
    TCP answers at once with a duplicate ACK (RFC 9293 §3.10.7.4; keepalives work so). Which
    of two quiet subflows stopped cannot be told from timestamps: subflow 1 whose last
    segment (or its ACK) was lost, nothing more sent on it, beside a join that acked 7 ms
    later and then lost its path, looks like subflow 1 dead beside a live join (captured,
    stop 28; the mirror case pinned in stop 27). The answer (_ack_info) is news (alive_at):
    the other goes stale in its turn. One probe per cumulative ACK or SACK news (_heard; an
    answer does not re-arm it): a path that answers small probes but loses data (an MTU
    black hole) lives one wait more, then dies on its next stale."""
    conv.counters[Counter.SubflowStale] += 1
    if _news(p) <= p.stale_at:
        return []
    p.stale_at = now
    if p.sprobe_at >= _heard(p):
        return []
    p.sprobe_at = now
    p.sprobe_open = True
    conv.counters[Counter.StaleProbeTX] += 1
    return [_inject(_stale_probe(flow, flow.mp, p))]


def _stale_probe(flow, mp, p) -> bytes:
    """A zero-length ACK at p's snd_una - 1, below what the server received (out of its
    window: answered), with no option (Linux drops it before acting on any)."""
    if p.index == 0:
        sf = flow.sf
        return segment(mp.version, mp.guest, mp.server, mp.gport, mp.sport, p.local_isn + p.snd_una - 1,
                       sf.remote_isn + sf.rcv_base, ACK, flow.guest_window)
    return _below_window(flow, p)


def _below_window(flow, p, opts: bytes = b"") -> bytes:
    """A zero-length ACK on join p at its snd_una - 1, which the server answers at once
    (RFC 9293 §3.10.7.4): the guest's probe forwarded (_guest_probe), or our stale probe."""
    return segment(p.version, p.local, p.remote, p.lport, p.rport, p.local_isn + p.snd_una - 1,
                   p.remote_isn + p.rcv_nxt, ACK, flow.guest_window, opts)


def _probe_answer_like(p, pkt, data) -> bool:
    """Could pure ACK `pkt` on p be the server's answer to our stale probe? Linux answers
    at its snd_nxt (tcp_send_dupack) with no path manager option. On a join, the server's
    own keepalive or zero-window probe comes at rcv_nxt - 1; an ADD_ADDR, REMOVE_ADDR or
    MP_PRIO rides on a pure ACK too: taken as the answer, a dead join's news looked the
    newest and the live subflow 1, its one probe spent, died (review of 7742d6c). (On
    subflow 1 a segment below rcv_nxt never gets here: the converter's table takes it.)"""
    if p.index and _unwrap((pkt.seq - p.remote_isn) & M32, p.rcv_nxt) < p.rcv_nxt:
        return False
    return data is None or not _pm_ack(data, pkt)  # (None: options not at hand)


def _pm_ack(data: bytes, pkt) -> bool:
    """Does server segment `pkt` carry a path manager option (ADD_ADDR, REMOVE_ADDR,
    MP_PRIO)? Such a pure ACK is neither the answer to our probe nor a duplicate ACK."""
    for o in mptcp_options(data, pkt):
        t = type(o)
        if t is AddAddr or t is RemoveAddr or t is MpPrio:
            return True
    return False


def _probe_wait(p) -> float:
    lo, hi = PROBE_ANSWER
    w = 2 * p.srtt
    return lo if w < lo else hi if w > hi else w


def _j_dead(conv, flow, p, pkt, data, ctx, now):
    """Link down or stale too long: reset it, tell the server (REMOVE_ADDR), make the guest
    retransmit now; its bytes get new homes as the guest resends them."""
    counters = conv.counters
    counters[Counter.SubflowDead] += 1
    mp = flow.mp
    acts = []
    if p.index > 0:
        acts.append(_inject(_rst(flow, p, MPTCP_RST_EUNSPEC)))
        _forget(conv, p)
    p.state = SS.CLOSED  # (the table says so too) so that the choices below skip it
    k = _best_live(mp)
    if k < 0 and mp.paths[0].index != p.index and mp.paths[0].state in ALIVE:
        k = 0
    rm = (RemoveAddr((p.addr_id,)),)
    if any(q is not p and q.addr_id == p.addr_id and q.state is not SS.CLOSED and q.state is not SS.SYN_SENT
           for q in mp.paths):
        k = -1  # another subflow of ours has this address id (same uplink, other server address):
        #         the server would close it too; our RST closes this one
    elif p.addr_id not in mp.removed:
        mp.removed.append(p.addr_id)
        if k < 0 and not flow.inbound:  # nothing alive to carry it: owed to the next join up
            mp.rm_owed.append(p.addr_id)
    if k > 0:  # the server stops using the address (id 0: subflow 1) and resends its data
        acts.append(_inject(_ack_on(flow, mp.paths[k], rm)))
        counters[Counter.RmAddrTX] += 1
    elif k == 0 and p.index != 0:  # only subflow 1 is left: it carries the REMOVE_ADDR
        acts.append(_inject(_ack_on_sf1(flow, mp, rm)))
        counters[Counter.RmAddrTX] += 1
    if mp.snd_nxt > mp.data_ack:
        acts += _prompt_guest(flow, mp, counters)
    return acts


def _prompt_guest(flow, mp, counters) -> list:
    """Three duplicate ACKs to the guest: resend from the DATA_ACK now, not at its RTO."""
    counters[Counter.DupAckSynth] += 3
    return [_inject(_guest_ack(flow, mp)) for _ in range(3)]


def _j_lost(conv, flow, p, pkt, data, ctx, now):
    """The server reset the subflow: like a dead one, without our RST."""
    counters = conv.counters
    counters[Counter.SubflowClosed] += 1
    mp = flow.mp
    if p.index > 0:
        _forget(conv, p)
    acts = [Drop("subflow reset by the server")] if pkt is not None else []
    if mp.snd_nxt > mp.data_ack:
        acts += _prompt_guest(flow, mp, counters)
    return acts


def stop_reset(conv, flow) -> list:
    """The daemon stops (Converter.stop): once it is gone the flow's packets pass unconverted
    (the rules' bypass) or, after a restart, as a flow it does not know; the server's
    segments then reach the guest at subflow seqs that are not the data's, and the server,
    its DATA_ACKs stalled, resends at the data level what the guest takes as new bytes. So
    both ends are reset: the guest at its rcv_nxt (guest_rst_at), the server by an ACK with
    MP_FASTCLOSE on each alive subflow (RFC 8684 §3.5 Option A: it answers with its RSTs and
    tears the connection down; an ACK needs no exact seq, a RST would)."""
    mp = flow.mp
    acts = _guest_rsts(flow, mp)
    fc = (MpFastclose(flow.remote_key),)
    for q in mp.paths:
        if q.state in ALIVE:
            acts.append(_inject(_ack_on_sf1(flow, mp, fc) if q.index == 0 else _ack_on(flow, q, fc)))
    _close_all(conv, flow, mp)
    return acts


def _close_all(conv, flow, mp) -> None:
    """The connection is gone (MP_FASTCLOSE either way): every subflow closed, the extra
    ones forgotten."""
    flow.fastclosed = True
    for q in mp.paths:
        if q.index:
            _forget(conv, q)
        q.state = SS.CLOSED


def _forget(conv, p) -> None:
    if p.rtx:
        _release(p.flow.mp, p, 1 << 62)
    k = (p.local, p.lport, p.remote, p.rport)
    if conv.joins.get(k) is p:
        del conv.joins[k]


_HANDLERS = {name[3:]: fn for name, fn in list(globals().items()) if name.startswith("_j_")}
assert {h for h, _ in SUBFLOW_TABLE.values()} <= set(_HANDLERS), "SUBFLOW_TABLE names a missing handler"


# -- time and links ----------------------------------------------------------------------------------


def forwarded(mp, end: int, now: float) -> None:
    """Server data up to `end` (relative DSN) went on to the guest, acked on its subflow."""
    if end > mp.fwd_end:
        mp.fwd_end = end
    if not mp.hole_at:
        mp.hole_mark = mp.fwd_end
        mp.hole_at = now


def _refill_waits(mp, p) -> bool:
    """Subflow p is alone and its last fill (tick) brought no progress: at p.refill_at it
    fills again (tick; next_deadline wakes the shell for it)."""
    return p.fill_at == p.progress_at and not _others_alive(mp, p)


def tick(conv, now: float) -> list:
    """Join and ACK retransmissions, stale and dead subflows, suspected guest-side holes."""
    actions = []
    for key, flow in list(conv.mp_flows.items()):
        mp = flow.mp
        if mp is None:
            conv.mp_flows.pop(key, None)
            continue
        if mp.over_at and now - mp.over_at >= OVER_KEEP and now - flow.last >= OVER_KEEP:
            # (the guest was reset, the server cannot be reached: nothing will come to close
            # it, and it held its table entry and multipath slot for the ESTABLISHED timeout.
            # Kept while packets still come: the guest's RST to a late server segment gets
            # its MP_FASTCLOSE, review of d952ba3)
            conv.forget_flow(key)
            continue
        if mp.hole_at and now - mp.hole_at >= HOLE_WAIT:
            if flow.rcv_rel < mp.hole_mark:  # the server's MPTCP-level retransmission repairs it
                conv.counters[Counter.GuestHoleSuspect] += 1
            mp.hole_at = 0.0
        if not mp.hole_at and mp.fwd_end > flow.rcv_rel:
            mp.hole_mark = mp.fwd_end
            mp.hole_at = now
        if mp.dack_due and now >= mp.dack_due:
            mp.dack_due = 0.0
            if flow.rcv_rel > mp.dack_out:  # held back, and no ACK carried it since
                k = _best_live(mp)
                if k > 0:
                    conv.counters[Counter.DataAckFlushed] += 1
                    actions.append(_inject(_ack_on(flow, mp.paths[k])))
                elif mp.paths[0].state in ALIVE:
                    conv.counters[Counter.DataAckFlushed] += 1
                    actions.append(_inject(_ack_on_sf1(flow, mp)))
        if mp.fin_due and now >= mp.fin_due:
            actions.extend(_fin_late(conv, flow, mp, now))
        if not mp.stranded_at:
            if _stranded(flow, mp):
                # (a flow already pathless may become one no join can carry later: the
                # server's DATA_FIN on a subflow 1 we gave up; review of ffa262f)
                mp.stranded_at = now
        elif not _stranded(flow, mp):
            mp.stranded_at = 0.0
        elif now - mp.stranded_at >= STRANDED_WAIT:
            actions.extend(_reset_pathless(conv, flow, mp, now))
        if mp.plan is not None and now - mp.plan_look >= PLAN_EVERY:
            actions.extend(_replan(conv, flow, mp, now))
        if mp.retry_at and now >= mp.retry_at:
            actions.extend(_retry_joins(conv, flow, mp, now))
        for p in mp.paths:
            if p.rtx:
                actions.extend(_repair(conv, flow, mp, p, now))
            if p.doubt_at < 0:
                p.doubt_at = now + DOUBT_WAIT
            elif p.doubt_at and now >= p.doubt_at:
                actions.extend(_doubt_resolve(flow, p, now))
            if p.reopen_at and now >= p.reopen_at:
                actions.extend(_reopen(flow, p, now))
        actions.extend(_tell_silent_tails(conv, flow, mp, now))
        p0 = mp.paths[0]
        if p0.suspect_at and p0.state in ALIVE:
            if p0.heard_at > p0.suspect_at:
                p0.suspect_at = 0.0  # it spoke: its uplink is not the one that went down
            elif now - p0.suspect_at >= max(SUSPECT_WAIT, 2 * p0.srtt) and _others_alive(mp, p0):
                actions.extend(_event(conv, flow, p0, SI.LINK_DOWN, now))
        for p in mp.paths:
            st = p.state
            if st is SS.SYN_SENT and now >= p.timer:
                inp = SI.GIVE_UP if p.tries + 1 >= len(SYN_RTO) + 1 else SI.TIMER_SYN
            elif st is SS.PRE_ESTABLISHED and now >= p.timer:
                inp = SI.GIVE_UP if p.tries >= ACK3_TRIES else SI.TIMER_ACK3
            elif st is SS.SYN_RCVD and now >= p.timer:
                inp = SI.GIVE_UP
            elif st is SS.ESTABLISHED and p.snd_nxt > p.snd_una:
                wait = max(STALE_MIN, 4 * p.srtt)
                again = False
                if p.refill_at and now >= p.refill_at:
                    # alone, a fill without progress since: it may have been lost, and a
                    # subflow alone never goes stale: the DATA_ACK waited for good behind
                    # that hole (review 2 of stop 46). Another look after FILL_AGAIN,
                    # doubling while none brings progress, up to 64 times it (review 3: on a
                    # dead path a fill every second went on for the flow's life)
                    p.refill_at = 0.0
                    if _refill_waits(mp, p):
                        p.fill_at = -1.0
                        again = True
                if p.fill_at != p.progress_at and now - _cum(p) >= wait:
                    # a hole nobody would fill: filled, and the subflow gets its time again,
                    # once: when that brought no progress either (a dead path beyond our
                    # uplink, a client's interface gone), it goes stale like any silent
                    # subflow; filled on every tick instead, it never did and the transfer
                    # stalled for good. By the cumulative clock: SACK news of the bytes after
                    # the hole held the fill back (nothing after it reaches the data level),
                    # review of 0597826
                    fill = _fill_acked_hole(conv, flow, mp, p)
                    if fill:
                        actions.extend(fill)
                        _sent(p, now)
                        p.progress_at = p.fill_at = p.rtx_at = now  # (its own clock; no news)
                        p.refill_n = p.refill_n + 1 if again else 0
                        p.refill_at = now + FILL_AGAIN * (1 << (p.refill_n if p.refill_n < 6 else 6))
                        continue
                    p.fill_at = p.progress_at  # (looked at: next_deadline waits for the stale rule)
                base = _base(p)
                if now - base < wait:
                    continue
                if _answered(p) or not _waits(p):
                    continue
                probation = _on_probation(p)
                if probation and (not _others_alive(mp, p) or now - base < PROBATION_WAIT):
                    continue
                if not probation and _others_news(mp, p) <= _news(p) and not (
                        now - base >= max(SILENT_ALONE, wait) and _others_alive(mp, p)):
                    continue
                inp = SI.TIMER_STALE
            elif st is SS.STALE and now - p.stale_at >= DEAD_AFTER and _others_alive(mp, p):
                inp = SI.TIMER_DEAD
            else:
                continue
            actions.extend(_event(conv, flow, p, inp, now))
            if inp is SI.TIMER_STALE and p.state is SS.STALE and _on_probation(p) and _others_alive(mp, p):
                # (a retry that has not shown its path carries data: dead at its first stale,
                # without the probe's extra wait nor SILENT_ALONE's: _on_probation)
                actions.extend(_event(conv, flow, p, SI.TIMER_DEAD, now))
            elif (inp is SI.TIMER_STALE and p.state is SS.STALE and now - p.stale_at >= DEAD_AFTER
                    and _others_alive(mp, p)):
                # (stale again on a clock it kept, _j_stale: dead now, or the next segment
                # that revives it comes before the tick that would find it dead, TIMER_DEAD)
                actions.extend(_event(conv, flow, p, SI.TIMER_DEAD, now))
    return actions


def _uid(flow, p) -> int:
    """The id of the uplink subflow `p` leaves by (0: unknown). A passive join leaves by the
    route to the peer's other address, not necessarily subflow 1's: unknown."""
    if p.uplink is not None:
        return p.uplink.id
    return 0 if p.passive else flow.sf1_uplink


def _uplink_states(conv, flow, mp, every: bool = False) -> list:
    """What the cost planner knows of each uplink for this flow: up, and (unless `every`) with
    a subflow of the flow on it that is not dead; its rate, the larger of what the flow's
    established subflows on it deliver up (acked) and down (received). Configured backups
    count only when nothing else is alive."""
    live = {}
    for p in mp.paths:
        uid = _uid(flow, p)
        if not uid or p.state is SS.CLOSED:
            continue
        r = max(p.rate, p.rx_rate) if p.state is SS.ESTABLISHED else 0.0
        live[uid] = live.get(uid, 0.0) + r
    out = []
    for u in conv.config.uplinks:
        alive = conv.uplink_up.get(u.name, u.up) and (every or u.id in live)
        out.append((u, POL.UplinkState(u.id, u.cost, alive, live.get(u.id, 0.0))))
    if any(a.alive for u, a in out if not u.backup):
        return [a if not u.backup else POL.UplinkState(a.id, a.cost, False, a.rate) for u, a in out]
    return [a for _, a in out]


def _replan(conv, flow, mp, now: float) -> list:
    """The cost policy's look at a flow (every PLAN_EVERY): download rates measured, the plan
    redone (policy.plan), and every established subflow told by MP_PRIO when it moves in or
    out of the plan (the server sends on backups only when no other subflow is left; our
    scheduler does the same for the upload: pick)."""
    span = now - mp.plan_look
    mp.plan_look = now
    for p in mp.paths:
        if p.state is SS.ESTABLISHED and span > 0:
            sample = (p.rx_bytes - p.rx_mark) / span
            p.rx_rate = sample if p.rx_rate == 0.0 else 0.5 * p.rx_rate + 0.5 * sample
        p.rx_mark = p.rx_bytes
    states = _uplink_states(conv, flow, mp)
    best = max((u.rate for u in states if u.id in mp.plan), default=0.0)
    target = (conv.config.target or POL.Target(multiple=2.0)).bytes_per_s(best)
    mp.plan_short = POL.shortfall(states, mp.plan, target, now, mp.plan_short)
    new = POL.plan(states, mp.plan, target, now, mp.plan_at, mp.plan_short)
    counters = conv.counters
    if new != mp.plan:
        counters[Counter.PolicyReplan] += 1
        mp.plan = new
        mp.plan_at = now
    # the marginal uplink's upload cap (policy.marginal_cap), from the rates of this look
    cap = POL.marginal_cap(states, new, target)
    for p in mp.paths:
        want = cap[1] if cap is not None and _uid(flow, p) == cap[0] else 0.0
        if want and not p.cap:
            p.tokens, p.tok_at = 0.0, now
        p.cap = want
    actions = []
    for p in mp.paths:
        uid = _uid(flow, p)
        if p.state is not SS.ESTABLISHED or not uid:
            continue
        want = bool(p.uplink is not None and p.uplink.backup) or uid not in new
        if want == p.backup:
            continue
        p.backup = want
        counters[Counter.MpPrioTX] += 1
        opt = (MpPrio(want),)
        actions.append(_inject(_ack_on(flow, p, opt) if p.index else _ack_on_sf1(flow, mp, opt)))
    return actions


def _news(p) -> float:
    """When the server last told of new bytes reaching it on subflow p: its cumulative ACK
    moved (acked_at), or its SACK blocks reached higher, covered more under the same
    cumulative ACK, or carried a D-SACK (sack_at, _ack_info); or it answered our stale probe
    (alive_at, _ack_info; the probe: _j_stale). The stale rule compares subflows by it. By the cumulative ACK
    alone, a live subflow waiting at a hole while the server SACKed everything after it
    looked stopped next to a join that acked last just before its path died: the live one
    went stale and dead, the dead join was kept, and the guest's resends went to it for good
    (inbound failover test, 2 % loss, captured)."""
    t = _heard(p)
    return t if t >= p.alive_at else p.alive_at


def _heard(p) -> float:
    """When the server last told of bytes reaching it on p (acked_at, sack_at): _news
    without the answers to our stale probes."""
    return p.acked_at if p.acked_at >= p.sack_at else p.sack_at


def _cum(p) -> float:
    """Since when the server owes subflow p a cumulative ACK: its last progress, or when a
    send ended its being _answered (the fill of an acked hole goes by it, tick)."""
    return p.progress_at if p.progress_at >= p.owe_at else p.owe_at


def _base(p) -> float:
    """Since when the server owes subflow p an answer it has not given: its last progress or
    SACK news, the answer to our stale probe (alive_at: one more wait), or when a send ended
    its being _answered (a resend into a hole gets its RTT
    too; judged from its old progress, subflow 1 went stale in the tick after the guest's
    resend, review of 527bba8). (From the cumulative ACK alone, a busy subflow whose ACK
    waited at a hole older than its wait went stale beside another with news, or after 2 s
    beside any, though its server SACKed new bytes every RTT; then came back on its next
    SACK, and again: third review of stop 27.)"""
    t = _cum(p)
    if t < p.alive_at:
        t = p.alive_at  # (an answer to a stale probe: a new wait, once per news, _j_stale)
    return t if t >= p.sack_at else p.sack_at


def _owe(p, now: float) -> None:
    """Something went out on subflow p at `now` that the server has not answered: when p was
    _answered until then, its wait for an answer starts now (_base)."""
    if _answered(p):
        p.owe_at = now


def _wait_from(p, now: float) -> None:
    """Something new goes out on subflow p at `now` (before snd_nxt moves). Nothing was in
    flight: the wait for an ACK starts now. From the last ACK of an idle subflow instead,
    its first bytes after a pause looked two RTTs overdue at once (_hole_evident: blocks
    above them, the guest resent them) and stale in the next tick (SubflowStale) while
    another subflow had progressed. Else it owes an answer from now (_owe), so too one
    waiting only for resends into its holes. A drained subflow's delivery-rate sample leaves
    out the time it sat idle: spanning it, the first sample after a pause measured the
    pause. A join given its first bytes 0.3 s after it was established took 44 KB/s for a
    50 Mbit/s path as its first estimate, then (app-limited samples only raise it, also
    spanning pauses) crept up to 0.4 MB/s while the others carried the transfer: CI, uplink
    2 carried 0.28 MB of an 8 MB upload. (Restarted instead, a fast join that drained
    within 20 ms of every send never completed a sample: no estimate at all.)"""
    if p.snd_nxt == p.snd_una:
        p.progress_at = now
        p.rate_at += now - (p.acked_at if p.acked_at > p.rate_at else p.rate_at)
    else:
        _owe(p, now)


def _resent(p, now: float) -> None:
    """Bytes below p's sack_hi (into a hole) went out on p at `now` (not for a fill)."""
    _owe(p, now)
    p.rtx_at = now


def _others_news(mp, p) -> float:
    """The latest _news of the other alive subflows (0: none): p, owing an answer for its
    wait, is the one that stopped when this is later than its own news. A fill restarts its
    own subflow's clock (progress_at) but is no news: counted as progress, it made subflow
    1 stale when a join's path died and subflow 1 waited, its window shut, for the join's
    hole (CI's "join path for good" xfail). (Compared by when each went quiet, news or the
    send that ended its being answered, a dead join answered at its death that the
    scheduler then gave new bytes looked the fresher: subflow 1 stale, the join kept; review
    of 07e8251.)"""
    best = 0.0
    for q in mp.paths:
        if q is not p and q.state in ALIVE:
            t = _news(q)
            if t > best:
                best = t
    return best


def _answered(p) -> bool:
    """Has the server told of every byte sent on subflow p, save holes: its SACK blocks above
    the cumulative ACK reach snd_nxt (its FIN aside: no block covers it), and nothing went
    into a hole since its last news? Such a subflow is not silent, it waits for a resend: no
    stale rule applies to it until something goes out unanswered (then `owe_at`, _base).
    (Blocks at or below the cumulative ACK are old: a bare FIN after a tail loss was
    repaired looked answered for good, review of 07e8251.)
    In the captured stall the join's path died ~3 ms after subflow 1's last SACK; the guest
    resent only the data-level head, homed on the join, so subflow 1 got nothing more and
    looked the older of two silent subflows: it went stale and dead, the dead join was
    kept, and the head went to it for good."""
    return p.snd_una < p.sack_hi >= p.snd_nxt - (1 if p.fin_sent else 0) and p.rtx_at < _heard(p)


def _waits(p) -> bool:
    """May subflow p go stale, owing an answer? For a guest without SACK, once the server has
    answered our stale probe there, only for something sent since that answer (_sent; before
    any answer, as for any guest: subflow 1's bytes from the single-path phase never went
    through send(), review of d71154a): with nothing sent since, the path works both ways
    and what it owes waits for the guest's resends, not for the server.
    Such a guest recovers a loss by its RTO (0.2 s and more, backing off; its duplicate ACK
    threshold grows with the reordering it sees between subflows), and every subflow holding
    a lost tail sat silent that long beside another whose answer was a moment fresher:
    stale, probed, answered, and stale again with no news in between, dead though it
    answered (captured: an upload through two uplinks, SubflowDead, rejoins; one timed out
    in stop 37's CI). A path that answers probes but loses data (an MTU black hole) still
    dies: the guest's next resend goes there and is not answered. A guest with SACK
    resends a subflow's lost bytes within an RTT or two of the data-level SACK: there one
    answer buys one wait, as before (test_multipath_stale)."""
    return p.flow.sack_ok or p.alive_at < 0 or p.sent_at > p.alive_at


def _sent(p, now: float) -> None:
    """Bytes went out on subflow p at `now` (_waits). The first since the server answered our
    stale probe, for a guest without SACK: the wait for their answer starts now, not at the
    answer (owe_at, _base); from the answer, the guest's RTO resend 0.5 s later made the
    subflow stale in the next tick (review of d71154a)."""
    if not p.flow.sack_ok and p.alive_at >= 0 and p.sent_at <= p.alive_at:
        p.owe_at = now
    p.sent_at = now


def _others_alive(mp, p) -> bool:
    return any(q is not p and q.state is SS.ESTABLISHED for q in mp.paths)


def _fin_late(conv, flow, mp, now: float) -> list:
    """Subflow 1's FIN, held back from the guest's (_fin_may_go), now that the server has
    data-acked the DATA_FIN: the guest, its FIN acked, sends it no more. Sent again while
    unacked, backing off, FIN_TRIES times in all (lost each time, the server's subflow ends
    on its own timers; the connection closed at the data level already)."""
    p0 = mp.paths[0]
    if p0.state not in ALIVE or mp.fin_tries >= FIN_TRIES or (p0.fin_sent and p0.snd_una >= p0.snd_nxt):
        mp.fin_due = 0.0
        return []
    if not p0.fin_sent:
        # (the wait for its answer starts now: judged on an old progress, subflow 1 went
        # stale in the same tick, review of 8347e00)
        _wait_from(p0, now)
        p0.fin_sent = True
        p0.snd_nxt += 1
    mp.fin_due = now + max(FIN_WAIT, 2 * p0.srtt) * (1 << mp.fin_tries)
    mp.fin_tries += 1
    conv.counters[Counter.Sf1FinLate] += 1
    return [_inject(_ack_on_sf1(flow, mp, fin=True))]


def next_deadline(conv) -> float | None:
    """The earliest time tick() has something to do for a multipath flow (None: nothing)."""
    best = None
    for flow in conv.mp_flows.values():
        mp = flow.mp
        if mp is None:
            continue
        if mp.hole_at and (best is None or mp.hole_at + HOLE_WAIT < best):
            best = mp.hole_at + HOLE_WAIT
        if mp.dack_due and (best is None or mp.dack_due < best):
            best = mp.dack_due
        if mp.fin_due and (best is None or mp.fin_due < best):
            best = mp.fin_due
        if mp.stranded_at and (best is None or mp.stranded_at + STRANDED_WAIT < best):
            best = mp.stranded_at + STRANDED_WAIT
        if mp.plan is not None and (best is None or mp.plan_look + PLAN_EVERY < best):
            best = mp.plan_look + PLAN_EVERY
        if mp.retry_at and (best is None or mp.retry_at < best):
            best = mp.retry_at
        for p in mp.paths:
            t = _silent_tail(flow, mp, p)
            if t and (best is None or t < best):
                best = t
            if p.rtx:  # (_repair_due: 0.0 when nothing is due)
                t = _repair_due(p)
                if t and (best is None or t < best):
                    best = t
            if p.doubt_at:  # (< 0: armed, due now: tick sets its time)
                t = flow.last if p.doubt_at < 0 else p.doubt_at
                if best is None or t < best:
                    best = t
            if p.reopen_at and (best is None or p.reopen_at < best):
                best = p.reopen_at
        for p in mp.paths:
            st = p.state
            t = None
            if st is SS.SYN_SENT or st is SS.PRE_ESTABLISHED or st is SS.SYN_RCVD:
                t = p.timer
            elif st is SS.ESTABLISHED and p.snd_nxt > p.snd_una and p.refill_at and _refill_waits(mp, p):
                t = p.refill_at  # (tick: a subflow alone fills again)
            elif st is SS.ESTABLISHED and p.snd_nxt > p.snd_una and not (
                    p.fill_at == p.progress_at and (_answered(p) or not _waits(p))):
                wait = max(STALE_MIN, 4 * p.srtt)
                t = (_cum(p) if p.fill_at != p.progress_at else _base(p)) + wait  # (tick: the fill's look first)
                if p.fill_at == p.progress_at and _on_probation(p):
                    # (as tick: after PROBATION_WAIT at least, beside an established subflow;
                    # beside stale ones only, nothing: a deadline in the past spun the loop,
                    # third review of stop 48)
                    t = t - wait + max(wait, PROBATION_WAIT) if _others_alive(mp, p) else None
                elif p.fill_at == p.progress_at and _others_news(mp, p) <= _news(p):
                    # (as tick decides: only SILENT_ALONE can make it stale before another
                    # subflow's news, which comes with a packet; with no other established,
                    # nothing can: a deadline left in the past spun the loop)
                    t = t - wait + max(SILENT_ALONE, wait) if _others_alive(mp, p) else None
            elif st is SS.STALE and _others_alive(mp, p):  # (as tick: alone, it waits for a packet)
                t = p.stale_at + DEAD_AFTER
            if p.index == 0 and p.suspect_at and st in ALIVE:
                t2 = p.suspect_at + max(SUSPECT_WAIT, 2 * p.srtt)
                t = t2 if t is None else min(t, t2)
            if t is not None and (best is None or t < best):
                best = t
    return best


def uplink_event(conv, name: str, up: bool, now: float) -> list:
    """An uplink went down (its subflows die at once, and subflow 1 becomes suspect when we
    do not know its uplink) or up (every multipath flow without a live subflow on it joins
    over it again; at most MAX_PATHS subflows per flow over its life)."""
    conv.uplink_up[name] = up
    actions = []
    if up:
        uplink = next((u for u in conv.config.uplinks if u.name == name), None)
        if uplink is None:
            return []
        for flow in list(conv.mp_flows.values()):
            mp = flow.mp
            if mp is None or len(mp.paths) >= MAX_PATHS or not _joinable(flow, mp):
                continue  # (inbound: the peer opens the subflows, issue 9)
            if not flow.no_initial_join and not any(
                    p.uplink is not None and p.uplink.name == name and p.remote == mp.server
                    and p.state is not SS.CLOSED for p in mp.paths):
                conv.counters[Counter.MPJoinRejoin] += 1
                actions.extend(_open_join(conv, flow, mp, uplink, now))
            for entry in flow.peer_addrs or ():
                actions.extend(_join_peer(conv, flow, mp, entry, now))
        return actions
    for flow in list(conv.mp_flows.values()):
        mp = flow.mp
        if mp is None:
            continue
        for p in mp.paths:
            if p.uplink is not None and p.uplink.name == name and p.state is not SS.CLOSED:
                actions.extend(_event(conv, flow, p, SI.LINK_DOWN, now))
            elif p.index == 0 and flow.sf1_uplink and flow.sf1_uplink == _uplink_id(conv, name):
                actions.extend(_event(conv, flow, p, SI.LINK_DOWN, now))
            elif p.index == 0 and p.state in ALIVE and not flow.sf1_uplink:
                p.suspect_at = now  # it may have used that uplink: dead unless it speaks soon
    return actions


def _uplink_id(conv, name: str) -> int:
    for u in conv.config.uplinks:
        if u.name == name:
            return u.id
    return -1


def flow_view(flow) -> list:
    """Per-subflow facts for `middlebox flows` (no keys, no nonces)."""
    mp = flow.mp
    if mp is None:
        return []
    out = []
    for p in mp.paths:
        out.append({
            "index": p.index,
            "uplink": None if p.uplink is None else p.uplink.name,
            "uplink_id": _uid(flow, p),  # subflow 1: the uplink of its route (0: unknown)
            "backup": p.backup,
            "state": p.state.name,
            "bytes_out": p.tx_bytes,
            "bytes_in": p.rx_bytes,
            "srtt_ms": round(p.srtt * 1000.0, 3),
            "rate_mbit": round(p.rate * 8 / 1e6, 3),
            "inflight": p.snd_nxt - p.snd_una,
        })
    return out
