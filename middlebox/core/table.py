"""The per-flow state machine of the outbound converter, in one table.

    TABLE[(state, input)] = (handler, next_state)

* `state` is the flow's `State`; `input` is the packet's `Input`, computed by
  `Converter._classify_out` / `_classify_in` from the TCP flags, the MPTCP options and the
  flow's FIN bookkeeping (nothing else decides a transition).
* `handler` names a `Converter._h_<handler>` method: it returns the actions for the packet
  (verdict first) and updates the flow's *data* (keys, ISNs, mapping references, FIN
  positions) but never `flow.state`; the converter sets `flow.state = next_state` after it.
* A missing key is a protocol violation (h11 "Rule 1"): the packet passes as plain TCP (MPTCP
  options stripped towards the guest), the state does not change, `StateViolation` counts it.
  It is never a crash.

The outbound role (RFC 8684 §3.1, §3.3, §3.7): a guest speaking plain TCP connects to a server.

    NEW --guest SYN--> SYN_SENT --SYN/ACK+MPC--> MPC_PENDING --DATA_ACK--> ESTABLISHED
                          |                          |                         |
                          +--SYN/ACK plain--> FALLBACK <--no DSS / infinite map-+
    ESTABLISHED --FIN / DATA_FIN--> CLOSING --last ack of both FINs--> TIME_WAIT
    any --RST / MP_FASTCLOSE--> CLOSED;  a new guest SYN (other ISN) restarts the flow.
    FALLBACK --FIN either way--> FALLBACK_CLOSING --RST--> CLOSED

The inbound role (issue 9): an MPTCP peer connects to a plain-TCP service in a guest.

    NEW --peer SYN+MPC--> SYN_RCVD --guest SYN/ACK (+ our MPC)--> SYN_RCVD
        SYN_RCVD --peer ACK+MPC (both keys)--> ESTABLISHED (then as above)
        SYN_RCVD --peer ACK without MPC, or SYN retried without it--> FALLBACK

Once in FALLBACK (or FALLBACK_CLOSING) the converter does not even classify packets (only
SYN/RST/FIN go through the table): the flow costs one dict lookup per packet.

Aborts and failures (RFC 8684 §3.5, §3.7), all with one subflow:

* guest RST (OUT_RST) while MPTCP: sent on as RST + MP_FASTCLOSE (Option R), so the server's
  MPTCP connection dies with it, not just the subflow; -> CLOSED.
* server MP_FASTCLOSE (IN_FASTCLOSE, valid key only): RST to the guest; on an ACK (Option A)
  we also answer the server with a RST on the subflow; -> CLOSED.
* server data whose DSS checksum fails (IN_CSUM_BAD): dropped, MP_FAIL (DSN of the mapping)
  on an ACK to the server; the state stays until the server's infinite mapping (IN_INFINITE)
  turns the flow into FALLBACK.
* server MP_FAIL (IN_MP_FAIL): the answer to ours, or the server found our checksum wrong:
  then we answer MP_FAIL and the next guest data (OUT_INFINITE) carries our infinite
  mapping; -> FALLBACK.
"""

from __future__ import annotations

from enum import IntEnum


class State(IntEnum):
    NEW = 0  # just created for a guest SYN
    SYN_SENT = 1  # guest SYN sent with MP_CAPABLE, waiting for the SYN/ACK
    MPC_PENDING = 2  # SYN/ACK had MP_CAPABLE; MP_CAPABLE on ACK/first data until a DATA_ACK
    ESTABLISHED = 3  # a DATA_ACK arrived: DSS on every guest segment
    CLOSING = 4  # guest FIN / server DATA_FIN seen, close not complete
    TIME_WAIT = 5  # both DATA_FINs sent and acked; still converting retransmissions
    FALLBACK = 6  # plain TCP: passes untouched
    CLOSED = 7  # reset: passes as plain TCP until expiry
    FALLBACK_CLOSING = 8  # plain TCP and a FIN passed: closing timeout instead of established
    GUEST_MPTCP = 9  # the guest speaks MPTCP itself: every packet passes untouched, both ways
    SYN_RCVD = 10  # inbound: a peer's MP_CAPABLE SYN went to the guest without it; the guest's
    #                SYN/ACK gets our key; waiting for the peer's third ACK (issue 9)


class Input(IntEnum):
    # guest -> server (Direction.OUT)
    OUT_SYN = 0  # SYN without ACK opening a new connection (new flow or another ISN)
    OUT_SYN_RTX = 1  # SYN again, same ISN
    OUT_SYN_MPTCP = 2  # SYN that already carries MPTCP options: the guest speaks MPTCP
    OUT_ACK = 3  # ACK, no payload, no FIN
    OUT_DATA = 4  # payload, no FIN
    OUT_FIN = 5  # FIN (with or without payload)
    OUT_RST = 6
    OUT_CLOSE_DONE = 7  # acks the server's DATA_FIN after the server acked the guest's
    OUT_ODD = 8  # SYN/ACK from the guest, no ACK flag, ...
    # server -> guest (Direction.IN)
    IN_SYNACK_MPC = 9  # SYN/ACK with a valid MP_CAPABLE of our version
    IN_SYNACK_PLAIN = 10  # SYN/ACK without a valid MP_CAPABLE
    IN_DSS = 11  # DSS with a DATA_ACK (no DATA_FIN, no infinite mapping)
    IN_DSS_NOACK = 12  # DSS without a DATA_ACK
    IN_DATA_FIN = 13  # DSS with DATA_FIN
    IN_INFINITE = 14  # DSS with an infinite mapping (data-level length 0, RFC 8684 §3.7)
    IN_NODSS_DATA = 15  # no MPTCP option at all, and payload/FIN/ack of guest data
    IN_NODSS = 16  # no DSS, nothing that proves a fallback (bare ACK, ADD_ADDR, ...)
    IN_RST = 17  # RST (with or without MP_TCPRST)
    IN_FASTCLOSE = 18  # MP_FASTCLOSE (RST or ACK)
    IN_CLOSE_DONE = 19  # DATA_ACK of the guest's DATA_FIN after the guest acked the server's
    IN_ODD = 20  # SYN without ACK from the server, no ACK flag, ...
    IN_STALE_ACK = 21  # bare ACK after both FINs were acked and the guest saw its FIN acked
    IN_MP_FAIL = 22  # MP_FAIL on a non-RST segment (RFC 8684 §3.7)
    IN_CSUM_BAD = 23  # data whose whole mapping is in the segment and fails the DSS checksum
    OUT_INFINITE = 24  # guest data after the server's MP_FAIL: carries our infinite mapping
    IN_FIN = 25  # FIN from the server on a fallback flow (classified only there)
    IN_SYN = 26  # SYN without ACK from the server: simultaneous open
    IN_RST_CHALLENGE = 27  # RST in the guest's window but not at its rcv_nxt (RFC 5961 §3.2)
    IN_RST_OUTSIDE = 28  # RST outside the guest's window (or not acking our SYN in SYN_SENT)
    IN_OUTSIDE = 29  # 2^30 from the guest's rcv_nxt, or a SYN/ACK that is not the flow's: dropped
    IN_CSUM_MISSING = 30  # a mapping without the DSS checksum that was negotiated (§3.3)
    IN_CSUM_BAD_LATE = 31  # a mapping spanning segments fails its checksum at its last one
    IN_UNRECONCILABLE = 32  # the server falls back where its subflow seq is not the data seq
    IN_OLD = 33  # segment wholly before the guest's rcv_nxt (a retransmission): data the guest
    #              acknowledged is consumed and acked on the subflow; nothing else acts
    IN_BEYOND = 34  # beyond the window the converter saw the guest offer: passed, placed by
    #                 its mapping; nothing acts (the guest judges it)
    # the inbound role (issue 9): an MPTCP peer connects to a plain-TCP service in a guest
    IN_SYN_MPC = 35  # SYN without ACK from the peer with an MP_CAPABLE of our version
    OUT_SYNACK = 36  # SYN/ACK from the guest (answering a peer's SYN)
    IN_MPC_ACK = 37  # ACK from the peer carrying MP_CAPABLE with both keys (the third ACK, or
    #                  the first data in the MP_CAPABLE data form, RFC 8684 §3.1)


S, I = State, Input

# The converter indexes tuples by these values (state x input): they must be 0..n-1.
assert [s.value for s in State] == list(range(len(State))), "State values must be dense"
assert [i.value for i in Input] == list(range(len(Input))), "Input values must be dense"

OUT_INPUTS = tuple(i for i in Input if i.name.startswith("OUT_"))
IN_INPUTS = tuple(i for i in Input if i.name.startswith("IN_"))


def _rows(states, inputs, handler, next_state=None):
    """Entries for every (state, input) pair; next_state None means "stay"."""
    return {(s, i): (handler, s if next_state is None else next_state) for s in states for i in inputs}


_CONVERTING = (S.ESTABLISHED, S.CLOSING, S.TIME_WAIT)
_MPTCP = (S.MPC_PENDING, *_CONVERTING)  # the server has our keys: MPTCP-level signals apply
_PLAIN = (S.FALLBACK, S.FALLBACK_CLOSING)
_ABORTABLE = (S.SYN_SENT, *_MPTCP)  # states whose RSTs are MPTCP business
_DATA_IN = (I.IN_DSS, I.IN_DSS_NOACK, I.IN_NODSS_DATA, I.IN_NODSS)

TABLE: dict[tuple[State, Input], tuple[str, State]] = {
    # -- a new connection ------------------------------------------------------------------
    (S.NEW, I.OUT_SYN): ("syn", S.SYN_SENT),
    (S.NEW, I.OUT_SYN_MPTCP): ("guest_mptcp", S.GUEST_MPTCP),
    # a new SYN (another ISN) on a known 4-tuple restarts the flow, whatever it was
    **_rows([s for s in S if s is not S.NEW], [I.OUT_SYN], "syn", S.SYN_SENT),
    **_rows([s for s in S if s is not S.NEW], [I.OUT_SYN_MPTCP], "guest_mptcp", S.GUEST_MPTCP),
    # -- handshake -------------------------------------------------------------------------
    (S.SYN_SENT, I.OUT_SYN_RTX): ("syn", S.SYN_SENT),
    (S.SYN_SENT, I.IN_SYNACK_MPC): ("synack", S.MPC_PENDING),
    (S.SYN_SENT, I.IN_SYNACK_PLAIN): ("synack_fallback", S.FALLBACK),
    (S.SYN_SENT, I.IN_SYN): ("simultaneous", S.FALLBACK),  # simultaneous open: plain TCP, once
    (S.MPC_PENDING, I.OUT_SYN_RTX): ("syn", S.MPC_PENDING),  # our SYN/ACK copy got lost
    (S.MPC_PENDING, I.IN_SYNACK_MPC): ("synack", S.MPC_PENDING),  # third ACK lost
    (S.MPC_PENDING, I.OUT_ACK): ("out", S.MPC_PENDING),
    (S.MPC_PENDING, I.OUT_DATA): ("out", S.MPC_PENDING),
    (S.MPC_PENDING, I.OUT_FIN): ("out", S.CLOSING),
    (S.MPC_PENDING, I.IN_DSS): ("in_", S.ESTABLISHED),  # the first DATA_ACK
    (S.MPC_PENDING, I.IN_DSS_NOACK): ("in_", S.MPC_PENDING),
    (S.MPC_PENDING, I.IN_DATA_FIN): ("in_", S.CLOSING),
    (S.MPC_PENDING, I.IN_NODSS): ("in_", S.MPC_PENDING),
    (S.MPC_PENDING, I.IN_NODSS_DATA): ("dss_fallback", S.FALLBACK),  # RFC 8684 §3.7
    (S.MPC_PENDING, I.IN_INFINITE): ("infinite", S.FALLBACK),
    # -- established and closing: convert everything ---------------------------------------
    **_rows(_CONVERTING, [I.OUT_ACK, I.OUT_DATA], "out"),
    **_rows(_CONVERTING, _DATA_IN, "in_"),
    **_rows(_CONVERTING, [I.IN_INFINITE], "infinite", S.FALLBACK),
    # a server that fell back mid-connection (RFC 8684 §3.7: data without any MPTCP option,
    # e.g. after segments of ours passed unconverted while the queue was full): plain TCP
    **_rows((S.ESTABLISHED, S.CLOSING), [I.IN_NODSS_DATA], "dss_fallback", S.FALLBACK),
    (S.ESTABLISHED, I.OUT_FIN): ("out", S.CLOSING),
    (S.ESTABLISHED, I.IN_DATA_FIN): ("in_", S.CLOSING),
    (S.CLOSING, I.OUT_FIN): ("out", S.CLOSING),
    (S.CLOSING, I.IN_DATA_FIN): ("in_", S.CLOSING),
    # (and any row into CLOSING: the dispatcher turns it into TIME_WAIT once both FINs are
    # acked, whichever segment carried the last ack, e.g. a resent guest FIN: OUT_FIN)
    (S.CLOSING, I.OUT_CLOSE_DONE): ("out", S.TIME_WAIT),
    (S.CLOSING, I.IN_CLOSE_DONE): ("in_", S.TIME_WAIT),
    (S.TIME_WAIT, I.OUT_FIN): ("out", S.TIME_WAIT),
    (S.TIME_WAIT, I.IN_DATA_FIN): ("in_", S.TIME_WAIT),
    (S.TIME_WAIT, I.OUT_CLOSE_DONE): ("out", S.TIME_WAIT),
    (S.TIME_WAIT, I.IN_CLOSE_DONE): ("in_", S.TIME_WAIT),
    # Linux sends a DATA_ACK after its subflow FIN/ACK; a guest that closed second is gone by
    # then and would answer it with a RST. It tells the guest nothing: drop it.
    (S.TIME_WAIT, I.IN_STALE_ACK): ("drop_stale", S.TIME_WAIT),
    (S.CLOSING, I.IN_STALE_ACK): ("in_", S.CLOSING),
    # -- checksum failure and MP_FAIL (RFC 8684 §3.7, single subflow) -----------------------
    **_rows(_MPTCP, [I.IN_CSUM_BAD], "csum_fail"),
    **_rows(_MPTCP, [I.IN_MP_FAIL], "mp_fail"),
    **_rows(_MPTCP, [I.OUT_INFINITE], "infinite_out", S.FALLBACK),
    # -- fallback and closed: plain TCP ----------------------------------------------------
    **_rows((*_PLAIN, S.CLOSED), [i for i in OUT_INPUTS if i not in (I.OUT_SYN, I.OUT_SYN_MPTCP)], "pass_out"),
    **_rows((*_PLAIN, S.CLOSED), IN_INPUTS, "pass_in"),
    # a FIN either way: the flow only waits for the close now (closing timeout)
    **_rows(_PLAIN, [I.OUT_FIN, I.IN_FIN], "fallback_fin", S.FALLBACK_CLOSING),
    # -- resets (RFC 8684 §3.5, §3.6: one subflow, so a subflow RST ends the flow) -----------
    **_rows(_ABORTABLE, [I.OUT_RST], "rst_out", S.CLOSED),
    **_rows(_ABORTABLE, [I.IN_RST], "rst_in", S.CLOSED),
    **_rows(_ABORTABLE, [I.IN_FASTCLOSE], "fastclose", S.CLOSED),
    **_rows(_PLAIN, [I.OUT_RST], "pass_out", S.CLOSED),
    # A RST the server did not take (RFC 5961 §3.2: in window but not at rcv_nxt, answered
    # with a challenge ACK) is followed by the guest's RST for that ACK: it must carry the
    # MP_FASTCLOSE too, or the server sees a plain subflow RST and its MPTCP socket lingers.
    (S.CLOSED, I.OUT_RST): ("rst_out_again", S.CLOSED),
    # Guest data or FIN after the guest's own RST went out with MP_FASTCLOSE: the RST overtook
    # it (two CPUs' backlogs on the way, seen in CI), so the server may still be waiting for
    # it and challenged the RST. Sent on, it would be payload without a mapping on an MPTCP
    # subflow: the server falls back and then ignores the MP_FASTCLOSE. The guest's connection
    # is gone, so the bytes are dropped; its RST for the server's challenge ACK closes it.
    **_rows([S.CLOSED], [I.OUT_DATA, I.OUT_FIN], "closed_data"),
    **_rows(_PLAIN, [I.IN_RST], "pass_in", S.CLOSED),
    # -- acceptability (RFC 5961; RFC 9293 §3.10.7.4): only a RST exactly at the guest's
    # rcv_nxt resets; one in its window reaches the guest, which answers with a challenge ACK;
    # anything else, and any segment outside the guest's window, changes nothing: dropped.
    **_rows(_MPTCP, [I.IN_RST_CHALLENGE], "rst_challenge"),
    **_rows(_ABORTABLE, [I.IN_RST_OUTSIDE], "drop_rst"),
    **_rows((S.SYN_SENT, *_MPTCP), [I.IN_OUTSIDE], "drop_outside"),  # SYN_SENT: a SYN/ACK not acking our SYN
    **_rows(_MPTCP, [I.IN_OLD], "in_old"),
    **_rows(_MPTCP, [I.IN_BEYOND], "in_beyond"),
    # -- the stream cannot continue exactly: end it visibly, both ways (guest RST; server
    # RST + MP_FASTCLOSE), never deliver bytes that are not the server's stream.
    **_rows(_MPTCP, [I.IN_CSUM_MISSING, I.IN_CSUM_BAD_LATE, I.IN_UNRECONCILABLE], "abort", S.CLOSED),
    # -- the inbound role (issue 9; RFC 8684 §3.1 with the roles swapped): the peer's SYN goes
    # to the guest without its MP_CAPABLE, the guest's SYN/ACK gets ours (our key, the C bit:
    # no joins yet), the peer's third ACK brings its key and the flow converts as an outbound
    # one does. A third ACK without MP_CAPABLE, or a SYN retried without it: plain TCP.
    # (a SYN restarts only a flow that ended: never one whose connection may still carry data)
    **_rows([S.NEW, S.SYN_RCVD, S.CLOSED, S.TIME_WAIT], [I.IN_SYN_MPC], "syn_in", S.SYN_RCVD),
    (S.SYN_SENT, I.IN_SYN_MPC): ("simultaneous", S.FALLBACK),  # as IN_SYN; elsewhere a violation
    (S.SYN_RCVD, I.OUT_SYNACK): ("synack_out", S.SYN_RCVD),
    (S.ESTABLISHED, I.OUT_SYNACK): ("synack_out", S.ESTABLISHED),  # the third ACK did not reach the guest
    (S.SYN_RCVD, I.IN_MPC_ACK): ("mpc_ack_in", S.ESTABLISHED),
    (S.SYN_RCVD, I.IN_SYN): ("passive_fallback", S.FALLBACK),  # the peer retried without MPTCP
    **_rows([S.SYN_RCVD], [I.IN_NODSS, I.IN_NODSS_DATA], "passive_fallback", S.FALLBACK),
    (S.SYN_RCVD, I.OUT_RST): ("pass_out", S.CLOSED),
    (S.SYN_RCVD, I.IN_RST): ("pass_in", S.CLOSED),
    (S.SYN_RCVD, I.OUT_ACK): ("pass_out", S.SYN_RCVD),
    (S.SYN_RCVD, I.OUT_DATA): ("drop_early", S.SYN_RCVD),  # before the peer's key: resent later
    # unacceptable segments (seq outside the guest's window, ack not of its SYN/ACK): nothing
    # acts, the guest never sees them; MP_FASTCLOSE with our key (the third ACK was lost)
    (S.SYN_RCVD, I.IN_OUTSIDE): ("drop_outside", S.SYN_RCVD),
    (S.SYN_RCVD, I.IN_RST_OUTSIDE): ("drop_rst", S.SYN_RCVD),
    (S.SYN_RCVD, I.IN_FASTCLOSE): ("fastclose", S.CLOSED),
    # -- a guest that speaks MPTCP itself: its connection is not ours, both ways. (The
    # converter passes these packets before classifying them; the rows say the same.)
    **_rows([S.GUEST_MPTCP], [i for i in Input if i not in (I.OUT_SYN, I.OUT_SYN_MPTCP)], "untouched"),
}

# Seconds of idleness after which tick() forgets a flow, by state (attribute of Config).
TIMEOUT_OF_STATE = {
    S.NEW: "half_open_timeout",
    S.SYN_SENT: "half_open_timeout",
    S.MPC_PENDING: "established_timeout",
    S.ESTABLISHED: "established_timeout",
    S.CLOSING: "closing_timeout",
    S.TIME_WAIT: "time_wait_timeout",
    S.FALLBACK: "fallback_timeout",
    S.CLOSED: "closed_timeout",
    S.FALLBACK_CLOSING: "closing_timeout",
    S.GUEST_MPTCP: "fallback_timeout",
    S.SYN_RCVD: "half_open_timeout",
}


# -- subflows of a multipath flow (issue 6; MULTIPATH.md §2, §5, §7) --------------------------
#
#     SUBFLOW_TABLE[(subflow state, subflow input)] = (handler, next_state)
#
# Same rules as TABLE: `multipath.classify_join` computes the input from the packet (or the
# timer / link event), the handler `multipath._j_<handler>` returns actions and never sets
# the state, a missing pair is a violation (counted, packet dropped: a join packet never
# reaches the middlebox's own stack). Subflow 1 (the guest's connection) uses the rows for
# timers and link events only; its packets go through TABLE.
#
#   SYN_SENT --SYN/ACK, HMAC ok--> PRE_ESTABLISHED --server ACK--> ESTABLISHED <--progress-- STALE
#      |  bad HMAC / RST / timeout          | 3rd ACK timeout, RST     |  no progress  -->  |
#      +-----------> CLOSED <---------------+------- FIN --> CLOSING  +-- link down / dead --+


class SubflowState(IntEnum):
    SYN_SENT = 0  # our MP_JOIN SYN is out
    PRE_ESTABLISHED = 1  # SYN/ACK verified, third ACK sent: no data before the server's ACK
    ESTABLISHED = 2  # schedulable
    STALE = 3  # data out and no progress while other subflows progress: nothing new on it
    CLOSING = 4  # the server sent FIN on it (answered): no new data on it
    CLOSED = 5  # reset, refused, given up or dead: its data (if any) went elsewhere
    SYN_RCVD = 6  # inbound (issue 9): the peer's MP_JOIN SYN answered with our SYN/ACK; its
    #               third ACK (HMAC) awaited


class SubflowInput(IntEnum):
    SYNACK_JOIN = 0  # SYN/ACK acking our SYN with MP_JOIN and the right HMAC
    SYNACK_BAD = 1  # SYN/ACK acking our SYN without MP_JOIN, or with a wrong HMAC
    RST = 2  # acceptable RST
    ACK = 3  # ACK without payload or FIN
    DATA = 4  # payload (no FIN)
    FIN = 5  # FIN (with or without payload)
    ODD = 6  # anything else: SYN without ACK, no ACK flag, a SYN/ACK not acking our SYN
    TIMER_SYN = 7  # SYN not answered in time, tries left
    TIMER_ACK3 = 8  # third ACK not acknowledged in time, tries left
    GIVE_UP = 9  # SYN or third ACK unanswered after the last try
    TIMER_STALE = 10  # data out, no progress for the stale time, other subflows progressed
    TIMER_DEAD = 11  # stale for the dead time
    LINK_DOWN = 12  # its uplink went down (or lost its address)
    # joins the peer opens (inbound role, issue 9)
    SYN_AGAIN = 13  # the peer's MP_JOIN SYN again (our SYN/ACK got lost)
    ACK3_JOIN = 14  # the peer's third ACK with MP_JOIN and the right HMAC (again, once established)
    ACK3_BAD = 15  # a third ACK without MP_JOIN or with a wrong HMAC


SS, SI = SubflowState, SubflowInput
_SF_PACKETS = (SI.SYNACK_JOIN, SI.SYNACK_BAD, SI.RST, SI.ACK, SI.DATA, SI.FIN, SI.ODD,
               SI.SYN_AGAIN, SI.ACK3_JOIN, SI.ACK3_BAD)
_SF_PASSIVE = (SI.SYN_AGAIN, SI.ACK3_JOIN, SI.ACK3_BAD)
_SF_TIMERS = (SI.TIMER_SYN, SI.TIMER_ACK3, SI.GIVE_UP, SI.TIMER_STALE, SI.TIMER_DEAD)

SUBFLOW_TABLE: dict[tuple[SubflowState, SubflowInput], tuple[str, SubflowState]] = {
    # -- the join handshake (RFC 8684 §3.2) ----------------------------------------------------
    (SS.SYN_SENT, SI.SYNACK_JOIN): ("synack", SS.PRE_ESTABLISHED),
    (SS.SYN_SENT, SI.SYNACK_BAD): ("refuse", SS.CLOSED),  # RST + MP_TCPRST, counted
    (SS.SYN_SENT, SI.RST): ("rejected", SS.CLOSED),
    (SS.SYN_SENT, SI.ACK): ("stale_ack", SS.SYN_SENT),  # RST <SEQ=SEG.ACK> and our SYN again
    **_rows([SS.SYN_SENT], [SI.DATA, SI.FIN, SI.ODD], "drop"),
    (SS.SYN_SENT, SI.TIMER_SYN): ("syn_again", SS.SYN_SENT),
    (SS.SYN_SENT, SI.GIVE_UP): ("give_up", SS.CLOSED),
    (SS.PRE_ESTABLISHED, SI.SYNACK_JOIN): ("ack3", SS.PRE_ESTABLISHED),  # our third ACK got lost
    (SS.PRE_ESTABLISHED, SI.SYNACK_BAD): ("drop", SS.PRE_ESTABLISHED),
    (SS.PRE_ESTABLISHED, SI.ACK): ("established", SS.ESTABLISHED),  # the fourth ACK
    (SS.PRE_ESTABLISHED, SI.DATA): ("established", SS.ESTABLISHED),  # data: the server took it
    (SS.PRE_ESTABLISHED, SI.FIN): ("fin", SS.CLOSING),
    (SS.PRE_ESTABLISHED, SI.RST): ("rejected", SS.CLOSED),
    (SS.PRE_ESTABLISHED, SI.ODD): ("drop", SS.PRE_ESTABLISHED),
    (SS.PRE_ESTABLISHED, SI.TIMER_ACK3): ("ack3", SS.PRE_ESTABLISHED),
    (SS.PRE_ESTABLISHED, SI.GIVE_UP): ("reset", SS.CLOSED),
    # -- carrying data -------------------------------------------------------------------------
    **_rows([SS.ESTABLISHED, SS.STALE], [SI.SYNACK_JOIN, SI.SYNACK_BAD, SI.ODD], "drop"),
    (SS.ESTABLISHED, SI.ACK): ("segment", SS.ESTABLISHED),
    (SS.ESTABLISHED, SI.DATA): ("segment", SS.ESTABLISHED),
    (SS.ESTABLISHED, SI.TIMER_STALE): ("stale", SS.STALE),
    (SS.STALE, SI.ACK): ("recover", SS.ESTABLISHED),
    (SS.STALE, SI.DATA): ("recover", SS.ESTABLISHED),
    (SS.STALE, SI.TIMER_DEAD): ("dead", SS.CLOSED),
    **_rows([SS.ESTABLISHED, SS.STALE], [SI.FIN], "fin", SS.CLOSING),
    **_rows([SS.ESTABLISHED, SS.STALE], [SI.RST], "lost", SS.CLOSED),
    # -- closing and closed ----------------------------------------------------------------------
    **_rows([SS.CLOSING], [SI.ACK, SI.DATA, SI.FIN], "segment"),
    **_rows([SS.CLOSING], [SI.SYNACK_JOIN, SI.SYNACK_BAD, SI.ODD], "drop"),
    (SS.CLOSING, SI.RST): ("lost", SS.CLOSED),
    **_rows([SS.CLOSED], _SF_PACKETS, "drop"),
    # -- link down: a live subflow's data goes elsewhere at once ---------------------------------
    (SS.SYN_SENT, SI.LINK_DOWN): ("give_up", SS.CLOSED),
    (SS.PRE_ESTABLISHED, SI.LINK_DOWN): ("dead", SS.CLOSED),
    **_rows([SS.ESTABLISHED, SS.STALE, SS.CLOSING], [SI.LINK_DOWN], "dead", SS.CLOSED),
    (SS.CLOSED, SI.LINK_DOWN): ("nothing", SS.CLOSED),
    # -- joins the peer opens (inbound, issue 9; RFC 8684 §3.2 as the responder) ----------------
    (SS.SYN_RCVD, SI.SYN_AGAIN): ("synack_again", SS.SYN_RCVD),
    (SS.SYN_RCVD, SI.ACK3_JOIN): ("passive_established", SS.ESTABLISHED),  # our fourth ACK
    (SS.SYN_RCVD, SI.ACK3_BAD): ("refuse_ack3", SS.CLOSED),  # RST + MP_TCPRST, counted
    (SS.SYN_RCVD, SI.RST): ("rejected", SS.CLOSED),
    **_rows([SS.SYN_RCVD], [SI.SYNACK_JOIN, SI.SYNACK_BAD, SI.ACK, SI.DATA, SI.FIN, SI.ODD], "drop"),
    (SS.SYN_RCVD, SI.GIVE_UP): ("passive_give_up", SS.CLOSED),
    (SS.SYN_RCVD, SI.LINK_DOWN): ("nothing", SS.SYN_RCVD),  # (no uplink: the guest's address)
    (SS.ESTABLISHED, SI.ACK3_JOIN): ("ack4", SS.ESTABLISHED),  # our fourth ACK got lost
    # the passive inputs are classified in SYN_RCVD (ACK3_JOIN also once established) only
    **{(s, i): ("drop", s) for s in SS for i in _SF_PASSIVE
       if s is not SS.SYN_RCVD and (s, i) != (SS.ESTABLISHED, SI.ACK3_JOIN)},
    # -- timers that no longer apply in a state (a late wake-up) change nothing --------------------
    **{(s, i): ("nothing", s) for s in SS for i in _SF_TIMERS
       if (s, i) not in {(SS.SYN_SENT, SI.TIMER_SYN), (SS.SYN_SENT, SI.GIVE_UP), (SS.SYN_RCVD, SI.GIVE_UP),
                         (SS.PRE_ESTABLISHED, SI.TIMER_ACK3), (SS.PRE_ESTABLISHED, SI.GIVE_UP),
                         (SS.ESTABLISHED, SI.TIMER_STALE), (SS.STALE, SI.TIMER_DEAD)}},
}
