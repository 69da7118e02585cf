"""Counters for every fallback, drop and oddity, named in the kernel-MIB style.

`Converter.counters` maps each `Counter` to an int; the daemon prints the non-zero ones.
Expected oddities are counted, never raised (house style 8). Keep the values stable: they
may be exported as metrics.
"""

from __future__ import annotations

from enum import IntEnum


class Counter(IntEnum):
    # handshake, guest -> server
    MPCapableSYNTX = 1  # guest SYN sent on with MP_CAPABLE
    MPCapableSYNACKRX = 2  # server SYN/ACK with a valid MP_CAPABLE
    MPCapableFallbackSYNACK = 3  # SYN/ACK without (or with a bad) MP_CAPABLE: plain TCP
    MPCapableVersionMismatch = 4  # SYN/ACK MP_CAPABLE of another version (also a fallback)
    MPCapableACKTX = 5  # third ACK (or a pure ACK before the first data) with MP_CAPABLE(keys)
    MPCapableDataTX = 6  # first data with the MP_CAPABLE data form (RFC 8684 §3.1)
    MPCapableEstablished = 7  # first DATA_ACK from the server
    GuestSpeaksMPTCP = 8  # guest SYN already carries MPTCP: left alone
    MSSClamped = 9  # an MSS option lowered so DSS-carrying segments fit the MTU
    # data, guest -> server
    DSSTX = 10  # guest segment sent with a DSS mapping
    DataAckTX = 11  # pure guest ACK sent with a DSS DATA_ACK
    DataFinTX = 12  # guest FIN sent with DATA_FIN
    SackDropped = 13  # SACK blocks removed to make room for an MPTCP option
    OptionSpaceExhausted = 14  # no room for the MPTCP option even without SACK: sent plain
    SubflowAckClamped = 15  # guest ack passed on as another subflow ack (mapping offset, DATA_FIN before subflow FIN)
    # data, server -> guest
    DSSRX = 16  # server segment with a DSS option (stripped)
    DataFinRX = 17  # server DATA_FIN (turned into a FIN towards the guest)
    DataFinDeferred = 18  # DATA_FIN not at the end of this segment: FIN not set yet
    MappingMismatch = 19  # the server's subflow seq moved away from its data seq (zero-window probe, MPTCP-level retransmission); data placed by its DSN
    MappingUncovered = 20  # server data not covered by any mapping: dropped
    DataCsumErr = 21  # server DSS checksum wrong
    DataAckMismatch = 22  # DATA_ACK does not match the subflow ack (one subflow)
    # fallback and teardown
    DssFallback = 23  # server data/ack without DSS before the first DATA_ACK (§3.7)
    InfiniteMapRX = 24  # infinite mapping from the server: plain TCP from now on (§3.7)
    FastCloseRX = 25  # MP_FASTCLOSE from the server: RST to the guest
    TcpRstRX = 26  # RST with MP_TCPRST from the server
    RstRX = 27  # plain RST from the server
    RstTX = 28  # RST from the guest
    # flow table
    FlowCreated = 29
    FlowTableFull = 30  # a new flow found the table full
    FlowEvicted = 31  # a flow was evicted to make room (by class: FlowEvicted* below)
    FlowExpired = 32  # idle / TIME_WAIT expiry in tick()
    UnknownFlow = 33  # mid-stream packet of a flow not in the table: passed untouched
    # packets the core does not handle
    NotTCP = 34
    BadPacket = 35  # unparsable TCP/IP (truncated, bad offsets, fragments, ...)
    StateViolation = 36  # (state, input) not in the table: packet passed as plain TCP
    CoreBug = 37  # an exception escaped a handler: packet accepted unchanged
    StaleAckDropped = 38  # server bare ACK after the close completed: dropped
    FinAckInjected = 39  # server subflow FIN at a DATA_FIN the guest already acked: we ACK it
    # aborts and failures (RFC 8684 §3.5, §3.7)
    FastCloseTX = 40  # guest RST sent on with MP_FASTCLOSE: the server's MPTCP connection ends too
    FastCloseRstTX = 41  # RST injected to the server in answer to its ACK + MP_FASTCLOSE (§3.5)
    FastCloseBadKey = 42  # MP_FASTCLOSE with a key that is not ours: ignored
    MPFailTX = 43  # MP_FAIL injected to the server (its checksum failed, or answering its MP_FAIL)
    MPFailRX = 44  # MP_FAIL from the server
    InfiniteMapTX = 45  # guest data sent with an infinite mapping after the server's MP_FAIL
    CsumErrDropped = 46  # server segment dropped because its DSS checksum failed (never to the guest)
    FallbackFin = 47  # FIN on a fallback flow: closing timeout from now on
    # placing server data by its mapping (never by its subflow seq)
    # (48: unused)
    MappingConflict = 49  # server data whose mapping contradicts one already seen for the same subflow bytes: dropped
    RangeMapFull = 50  # range map full of ranges before this segment: dropped (the server retransmits)
    SackTranslated = 51  # guest SACK blocks translated into the subflow's space
    SackUnmapped = 52  # a guest SACK block with no single subflow range: left out
    # acceptability (RFC 5961, RFC 9293): no state change from a segment the guest would refuse
    RstAccepted = 53  # server RST exactly at the guest's rcv_nxt (or acking our SYN): the flow resets
    RstChallenged = 54  # server RST in the guest's window, not exact: passed, the guest answers a challenge ACK
    RstOutOfWindow = 55  # server RST outside the guest's window: dropped
    SeqOutOfWindow = 56  # server segment outside the guest's window (subflow or data level): dropped
    GuestSeqOutOfWindow = 57  # guest segment before its ISN or 2^30 ahead: dropped (it must not move the DSN base)
    FastCloseOutOfWindow = 58  # MP_FASTCLOSE with our key on an unacceptable segment: ignored
    # the stream cannot continue exactly: both ends reset (guest RST; server RST + MP_FASTCLOSE)
    DataCsumMissing = 59  # a mapping without the negotiated DSS checksum (RFC 8684 §3.3): connection reset
    DataCsumLateErr = 60  # a mapping spanning segments failed its DSS checksum after bytes reached the guest: reset
    DataCsumHoleDropped = 61  # checksummed mapping: segment beyond a hole dropped so the sum stays whole
    FallbackUnreconcilable = 62  # the server fell back where its subflow seq is not the data seq: reset
    AbortTX = 63  # connections the converter reset both ways (one of the three above)
    # flow table
    FlowEvictedPassive = 64  # evicted: closed / fallback / MPTCP guest (they pass unchanged when unknown)
    FlowEvictedTimeWait = 65  # evicted: both DATA_FINs done
    FlowEvictedHalfOpen = 66  # evicted: SYN sent, no SYN/ACK yet
    FlowEvictedActive = 67  # evicted: a converting flow (nothing else was left): it falls back
    # misc
    SimultaneousOpen = 68  # a server SYN without ACK answered our SYN: plain TCP
    GuestMPTCPPacket = 69  # packet of a guest that speaks MPTCP: passed untouched
    DupConsumed = 71  # server data the guest already acknowledged (zero-window probe, MPTCP-level retransmission): consumed, acked on the subflow
    SeqBeyondWindow = 72  # server segment beyond the window the guest offered (as seen here): passed, no state change
    RangeForgotten = 70  # range map full: the range farthest from the subflow ack forgotten (its bytes get acked when the server resends them)
    # multipath (issue 6; MULTIPATH.md §7)
    MultipathStarted = 73  # flows that opened extra subflows
    MultipathRefusedCap = 74  # flows that stayed single-path: max_multipath_flows reached
    MPJoinSynTX = 75  # MP_JOIN SYNs sent (retransmissions included)
    MPJoinSynAckRX = 76  # MP_JOIN SYN/ACKs with a valid HMAC
    MPJoinSynAckHMacFailure = 77  # SYN/ACK with a bad HMAC or without MP_JOIN: RST + MP_TCPRST
    MPJoinAckTX = 78  # third ACKs sent (retransmissions included)
    MPJoinEstablished = 79  # extra subflows that got the server's fourth ACK
    MPJoinRejected = 80  # server RST on a join being set up
    MPJoinTimeout = 81  # no SYN/ACK (or no fourth ACK) in time: given up on that uplink
    MPJoinPortsExhausted = 82  # no free port in the join range on an uplink
    SubflowStale = 83  # subflow without progress while others progressed: no new data on it
    SubflowRecover = 84  # a stale subflow progressed again
    SubflowClosed = 85  # extra subflows closed (FIN, RST, link down, dead)
    SubflowDead = 86  # subflows given up (link down or stale too long): their data reinjected
    DSSTXJoin = 87  # guest data sent on an extra subflow
    GuestRetransMapped = 88  # guest retransmissions sent to the subflow and seq of the original
    RetransSplit = 89  # guest retransmissions split at run boundaries
    ReinjectTX = 90  # guest bytes remapped from a dead subflow onto a live one
    GapReserved = 91  # guest bytes never seen (lost before the queue), reserved on a subflow
    RunMapFull = 92  # run map at its bound: the segment went on the tail run's subflow
    RunMapDrop = 93  # run map at its bound and the tail subflow could not take it: dropped
    DupAckFwd = 94  # data-level duplicate ACKs passed to the guest (loss on the subflow holding DATA_ACK)
    DupAckSuppressed = 95  # data-level duplicate ACKs not passed (reordering between subflows)
    DupAckSynth = 96  # duplicate ACKs made for the guest when a subflow died
    GuestAckInjected = 97  # ACKs injected towards the guest (DATA_ACK moved on an extra subflow)
    SubflowAckTX = 98  # ACKs the middlebox sent on extra subflows for server data
    JoinDataRX = 99  # server segments received on extra subflows
    JoinDataFwd = 100  # of those, sent on to the guest (placed by their DSN)
    JoinOutOfOrder = 101  # server data beyond an extra subflow's rcv_nxt (kept until filled)
    JoinOfoDrop = 102  # beyond rcv_nxt with the out-of-order list full: dropped
    RmAddrTX = 103  # REMOVE_ADDR sent for a dead uplink
    MpPrioTX = 104  # MP_PRIO sent (cost policy: a subflow's uplink left or joined the plan)
    SubflowWindowLimited = 105  # a subflow skipped by the scheduler: the server's window was full
    JoinUnknown = 106  # packets to the join ports of no known subflow: answered RST
    GuestHoleSuspect = 107  # server data acked on a subflow that the guest has not acked 1 s later
    MPJoinRejoin = 110  # joins opened again when an uplink came back up
    JoinViolation = 109  # (subflow state, input) pair missing from SUBFLOW_TABLE: dropped
    GsoMapRepeated = 111  # single path: guest bytes inside a super-packet's mapping sent with it again
    GsoMapFull = 112  # single path: super-packets sent in segments (own mappings): MAX_GSO_MAPS unacked ones held
    AckedHoleFilled = 114  # zero-filled segments for a subflow hole whose data the server had data-acked
    JoinBeyondGuestWindow = 115  # server data on an extra subflow beyond the guest's window (the guest drops it)
    GsoMapCut = 113  # single path: a guest segment across super-packet mappings, sent in pieces
    Sf1DupAckHeld = 117  # guest ACKs not sent: subflow-1 duplicates (no hole there) moving only the DATA_ACK
    DataAckFlushed = 118  # held-back DATA_ACKs sent on by the timer (no other ACK carried them in time)
    GuestRetransAcked = 119  # guest bytes resent that their subflow had acked already: not sent again
    AddAddrRX = 120  # server ADD_ADDRs with a valid HMAC (each echoed, a retransmission too)
    AddAddrBadHmac = 121  # server ADD_ADDRs whose HMAC failed: ignored (RFC 8684 §3.4.1)
    AddAddrIgnored = 122  # server ADD_ADDRs not used: echo form, v0, other family, or the list full
    AddAddrJoin = 123  # joins opened to an address the server announced
    RmAddrRX = 124  # announced server addresses forgotten on the server's REMOVE_ADDR
    JoinInitialDenied = 125  # flows whose server set the C bit: no join to its initial address
    PolicyReplan = 126  # cost policy: a flow's set of uplinks changed (issue 10)
    SackNewsFwd = 127  # ACKs that moved no data level sent on to the guest for new data-level SACK blocks
    DataAfterRstDropped = 128  # guest data/FIN after its RST went out with MP_FASTCLOSE (the RST overtook it)
    MPCapableSYNRX = 129  # inbound: a peer's SYN with MP_CAPABLE, passed to the guest without it
    MPCapableSYNACKTX = 130  # inbound: the guest's SYN/ACK sent on with MP_CAPABLE (our key)
    MPCapableACKRX = 131  # inbound: the peer's third ACK (or first data) with both keys: converting
    InboundFallback = 132  # inbound: the peer's ACK without MP_CAPABLE, or its SYN retried without it: plain TCP
    InboundKeyMismatch = 133  # inbound: a third ACK echoing a key that is not ours: plain TCP
    InboundEarlyData = 134  # inbound: guest data before the peer's key arrived: dropped (resent)
    JoinToGuestRefused = 135  # inbound: MP_JOIN SYNs towards a guest refused (unknown token, limits): RST + MP_TCPRST
    PassiveJoinSynRX = 136  # inbound: the peer's MP_JOIN SYNs answered with our SYN/ACK (retransmissions included)
    PassiveJoinEstablished = 137  # inbound: the peer's third ACK with the right HMAC: a subflow of the connection
    PassiveJoinAckHMacFailure = 138  # inbound: a third ACK with a wrong HMAC or none: RST + MP_TCPRST
    AddAddrTX = 139  # inbound: ADD_ADDRs of uplink addresses sent to peers (resends included)
    AddAddrEchoRX = 140  # inbound: the peer echoed an ADD_ADDR of ours (no more resends)
    AddAddrUnechoed = 141  # inbound: ADD_ADDRs sent ANNOUNCE_TRIES times without an echo (given up)
    PassiveJoinAtUplink = 142  # inbound: the peer's join SYNs at an announced uplink address, answered
    JoinSynHusk = 143  # inbound: join SYNs towards a guest passed on as husks (no options, wrong checksum) so conntrack maps our answer
    RunMapNearFull = 144  # super-packets sent cut (per-segment mappings) because the run map was nearly full
    SackNewsTimer = 145  # guest ACKs sent by the clock: a silent subflow's unacked tail became a known hole (SACK news)
    PolicyCapSkip = 146  # cost policy: new bytes kept off the capped marginal uplink (its token bucket was empty)
    JoinSeqUnacceptable = 147  # extra-subflow segments whose seq or ack lay outside the windows (RFC 5961): dropped, nothing moved
    GuestLateAckWindow = 148  # guest segments whose ack was older than one seen (late): sent on with the newest ack's window
    JoinDataAckHeld = 149  # our ACKs on joins whose DATA_ACK stopped short: the window the server holds would pass the guest's edge
    JoinTimeWaitReset = 150  # join SYNs answered by an old connection's ACK (server TIME_WAIT): RST <SEQ=SEG.ACK> and the SYN again
    JoinRepairTX = 151  # join segments resent from the middlebox's own copy (repair_bytes): a loss the guest was not shown
    RepairCapSkip = 152  # join segments not kept for repair: the flow's or the global cap was reached
    RepairGaveUp = 153  # holes on joins left to the guest after REPAIR_TRIES repairs
    JoinCwndCut = 154  # loss events on joins with repair on: the join's own congestion window cut (one per window)
    JoinCwndLimited = 155  # new bytes the scheduler gave a join whose own window was full (repair on): not kept
    RepairBeyondWindow = 156  # join segments sent beyond the join's own window (the guest's resends of them too): not kept, their loss goes to the guest
    Sf1DataAckHeld = 157  # subflow-1 segments whose window the server does not take: DATA_ACK held at the guest's edge
    JoinChallengeAck = 158  # unacceptable segments (or in-window inexact RSTs) on joins answered with an ACK (rate-limited)
    Sf1AnswerPassed = 159  # guest ACKs answering the server's old segments on subflow 1 (window probes, keepalives) passed, not held as duplicates
    JoinProbeAnswered = 160  # pure segments before rcv_nxt on joins (window probes, keepalives) answered with an ACK (rate-limited)
    GuestProbeFwd = 161  # the guest's window probes and keepalives (pure, before what the server data-acked) sent on as probes (snd_una - 1)
    ProbeAnswerFwd = 162  # the server's answers to those probes passed to the guest although they moved nothing
    SlowPathShare = 163  # guest segments whose new bytes were split: a subflow under half the best rate took only its share, or any other at most SHARE_TIME (2 ms) of its rate (_slow_share; the second since stop 40)
    HeadIntoHole = 164  # subflow holes filled by a guest resend of the data-level head, or of bytes after it, that waited behind them (_into_hole; one resend may fill several): the guest would not resend those holes before the head is acked
    GuestAckAgain = 165  # ACKs sent again to a guest that resent only bytes (or its FIN) the server had data-acked (our ACK of them was lost)
    UnsureResent = 166  # guest resends of bytes their subflow acked that may be another DSN's (_head_hole's swap): sent again as new mappings, not dropped
    NoPathLeft = 167  # multipath flows whose guest was reset: every subflow died and none can open again (MAX_PATHS used up, no address to join, or the server takes no join while the flow closes)
    Sf1LossyCut = 168  # multipath: guest super-packets on subflow 1 cut into a mapping per segment because subflow 1 showed a loss within LOSSY_CUT (a hole inside one whole mapping can take no reinjected head)
    RmAddrOwedTX = 169  # REMOVE_ADDRs sent late, on a join coming up, for subflows that died while no subflow was alive to carry one
    Sf1OrphanCut = 170  # multipath: guest super-packets on subflow 1 cut into a mapping per segment because a subflow closed holding bytes the data level has not passed yet (the heads reinjected from it come behind them)
    StaleProbeTX = 171  # multipath: subflows probed as they went stale (a zero-length ACK just below the server's window, which a live TCP answers with a duplicate ACK); once per cumulative ACK or SACK news (an answer does not re-arm it)
    StaleProbeAnswered = 172  # multipath: stale subflows whose server answered that probe in time (news: the other quiet subflow is the one judged, not this one)
    ReinjectNoPath = 173  # multipath: guest resends that needed a new mapping (home closed, or acked there and not data-acked) and found no subflow to take it (with subflow 1 closed and no join alive; the guest resends later)
    Sf1FinHeld = 174  # multipath: guest FINs sent on subflow 1 as a DATA_FIN without the TCP FIN, because a byte below it that the server lacks may need a new mapping (on a join, unsure, or acked on subflow 1): a subflow takes no byte after its FIN
    Sf1FinLate = 175  # multipath: subflow-1 FINs held back from the guest's and sent by the middlebox once the server data-acked the DATA_FIN (again while unacked, FIN_TRIES in all)
    StopReset = 176  # converting flows reset at both ends because the daemon stopped (Converter.stop): unconverted, the server's segments would reach the guest at the wrong place, and its MPTCP-level resends as new bytes
    CsumStuckReset = 177  # multipath, DSS checksums: a live subflow reset (and a join opened again over its uplink, or, the only one, over every uplink) because the guest's resend of the data-level head waited behind its hole, where no new mapping may go safely (multipath._csum_stuck_reset)
    # connections a killed daemon left converted (orphans.py): the peer's MPTCP segments of an unknown connection are never passed to a guest
    OrphanHeld = 178  # peer segments with an MPTCP option towards a guest, of a connection the table does not know: dropped (its peer resends)
    OrphanProbe = 179  # out-of-window ACKs sent to such a guest to learn whether it speaks MPTCP itself (one per PROBE_EVERY at most)
    OrphanGuestMPTCP = 180  # such connections whose guest answered with MPTCP options: its own MPTCP, passed on untouched from then on (GUEST_MPTCP)
    OrphanReset = 181  # such connections whose guest answered in plain TCP with numbers that fit the peer's: converted by a predecessor, reset at both ends
    OrphanMisfit = 182  # plain answers whose numbers did not fit the held segment's (a forged segment, or numbering drifted both ways): nothing reset
    StopPlain = 183  # new connections (a guest's SYN, a peer's MP_CAPABLE SYN) passed as plain TCP while the daemon stops (--stop-grace): converted, the stop would reset them a moment later
    OrphanKnown = 184  # of the OrphanReset: connections the killed predecessor's state file named (--state-dir): reset whatever their numbers, the peer's MPTCP connection closed with MP_FASTCLOSE
    OrphanJoin = 185  # segments at a join port no subflow owns, of an extra subflow the killed predecessor recorded: MP_FASTCLOSE and a RST there, the guest asked (subflow 1's path may be down)
    Sf1FinAcked = 186  # multipath: the server's subflow-1 FIN (its subflow closing, not the connection: the guest never sees it) acknowledged by the middlebox, as a join's
    FillLostRefilled = 187  # multipath: guest resends put into a subflow hole whose last fill (HeadIntoHole) the server showed lost (SACK of bytes sent after it): taken as in flight, that hole stayed hidden and the data-level head waited behind it for good (_fill_lost)
    CsumNoSackCut = 188  # single path, DSS checksums (a guest with SACK or without; the name is historical): its super-packets cut into a mapping per segment (a loss inside one checksummed mapping held its ack below the subflow's, and the guest resent only the head, once per RTO: a stall)
    CsumMapForgotten = 189  # DSS checksums: a server mapping's running sum given up (MAX_CK_MAPS mappings in progress, and bytes of a lower one came): the mapping's bytes went on unverified
    CsumOutOfOrder = 190  # DSS checksums: a piece of a server mapping taken and summed beyond a subflow-level hole (before stop 37 such pieces were dropped until the hole filled: DataCsumHoleDropped, and an RTO per loss)
    StaleAckOutDropped = 191  # single path, both DATA_FINs acked and every server byte acked on the subflow: a guest ACK that acks nothing new (its answer to a duplicate FIN) not sent on; it reached a server whose subflow had closed, which answered with a RST
    CsumResendCut = 192  # DSS checksums: a server resend over subflow bytes that came before (out of order) sent to the guest as its new bytes only; whole, a Linux guest kept its copy of those bytes, which no mapping had summed
    JoinDsackTX = 193  # multipath: our ACKs on an extra subflow that name bytes it got twice first (D-SACK, RFC 2883), as a Linux receiver's do, so that the server can undo the window cut of a resend that was not needed (before stop 41 a join never sent one)
    JoinWindowDoubtResolved = 194  # multipath: a copy of the last segment the server surely took on an extra subflow, then our ordinary ACK there, after a DATA_ACK was held back for a larger window it may still hold (a segment that shrank it may have been lost or overtaken)
    DsackUndoTX = 195  # multipath, --dsack-undo: guest resends carried by an extra subflow within its own window, named to the guest as a D-SACK once the server had them, so that a Linux guest undoes the window cut of that one path's loss
    UndoBeyondWindow = 196  # multipath, --dsack-undo: guest resends of bytes an extra subflow sent beyond its own window: no D-SACK, the guest's cut stands
    UndoAfterRto = 197  # multipath, --dsack-undo: guest RTOs seen (its resend of the data-level head after 100 ms without a segment): no D-SACK until the DATA_ACK passes what it had sent, the waiting ones forgotten (in its loss state a D-SACK undid the RTO and unmarked every lost segment: each then waited for the next backed-off RTO, a stall)
    CsumHeadReinjected = 198  # multipath, DSS checksums: the guest's resend of the data-level head, waiting behind its subflow's hole whose DSNs lie beyond it, sent as a new mapping on another live subflow (in place it waited there for good: multipath.send)
    DupAckOrphanFwd = 199  # multipath: data-level duplicate ACKs passed to the guest because the byte at DATA_ACK is homed on a closed subflow (nothing carries it until the guest resends it; suppressed, a guest's F-RTO waited out backed-off RTOs)
    AckCappedAtDataAck = 200  # single path: server segments without a DATA_ACK (Linux's ADD_ADDR echo) whose subflow ack lay beyond the last DATA_ACK: the guest gets the DATA_ACK (told the subflow ack, it ignored every later segment's window as an old ACK: a zero window never reopened)
    MPJoinRetry = 201  # multipath: joins opened again over an uplink that stayed up, after its subflow died by the clocks (stale, then dead) or such a join failed to open; REJOIN_WAIT (1 s) later, doubling per retry of the flow up to 32 s (before stop 48 the flow never used that uplink again: a path black-holed for a few seconds beyond it cost its share for the flow's life)


def new_counters() -> dict:
    """A fresh mapping with every counter at zero."""
    return dict.fromkeys(Counter, 0)
