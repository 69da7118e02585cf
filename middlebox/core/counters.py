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
    SubflowAckClamped = 15  # guest ack beyond what the server sent on the subflow (DATA_FIN)
    # data, server -> guest
    DSSRX = 16  # server segment with a DSS option (stripped)
    DataFinRX = 17  # server DATA_FIN (turned into a FIN towards the guest)
    DataFinDeferred = 18  # DATA_FIN not at the end of this segment: FIN not set yet
    MappingMismatch = 19  # server mapping breaks "subflow seq == data seq" (one subflow)
    MappingUncovered = 20  # server data not covered by any mapping
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
    FlowEvicted = 31  # the oldest idle flow was evicted to make room
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


def new_counters() -> dict:
    """A fresh mapping with every counter at zero."""
    return dict.fromkeys(Counter, 0)
