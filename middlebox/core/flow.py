"""Per-flow state and the sequence-space mapping (ARCHITECTURE.md, "the key idea").

The guest's sequence space *is* the data sequence space:

* guest seq `S` -> DSN `IDSN_local + (S - ISN_guest)` (so the first data byte, ISN+1, is
  IDSN+1: the SYN consumes one DSN, RFC 8684 §3.3);
* server DSN `D` -> guest seq `ISN_server + (D - IDSN_remote)`, and the guest's ack `A` ->
  DATA_ACK `IDSN_remote + (A - ISN_server)`.

32-bit guest numbers are widened to 64-bit DSNs against the highest value seen so far
(`_unwrap`), so retransmissions get the same DSN as the original.

Per subflow, `Subflow` holds the subflow's own ISNs and what the server has sent on it. Subflow 1
keeps the guest's 4-tuple and ISNs, so its subflow seq is the guest seq; extra subflows (not
built yet) will carry a range map `DSN -> (subflow seq, length)` here, bounded in size.

Everything is bounded: a flow holds a fixed set of integers, never a buffer or a list that
grows with traffic. Keys never appear in a repr.

Compiled twin: setup.py also builds this file as `middlebox._ccore.flow` with the C types of
flow.pxd (cdef classes with typed fields, C helpers); this source stays the spec.
"""

from __future__ import annotations

from middlebox.core.table import State

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
HALF32 = 0x80000000


def seq_before(a: int, b: int) -> bool:
    """a < b in 32-bit sequence arithmetic (RFC 9293 §3.4)."""
    return ((a - b) & M32) >= HALF32


def _unwrap(rel32: int, ref64: int) -> int:
    """The 64-bit value nearest to `ref64` whose low 32 bits are `rel32`."""
    d = (rel32 - ref64) & M32
    if d >= HALF32:
        d -= 1 << 32
    v = ref64 + d
    return v if v >= 0 else rel32


class Subflow:
    """One TCP subflow of a flow. Subflow 1 is the guest's own connection."""

    __slots__ = ("local_isn", "remote_isn", "remote_snd_max", "rmap_ssn", "rmap_len")

    def __init__(self, local_isn: int) -> None:
        self.local_isn = local_isn  # ISN of our side (subflow 1: the guest's)
        self.remote_isn = 0  # the server's ISN on this subflow
        self.remote_snd_max = 0  # highest subflow seq the server has sent + 1 (incl. SYN/FIN)
        self.rmap_ssn = 0  # last server mapping on this subflow (relative subflow seq, length)
        self.rmap_len = 0


class Flow:
    """One guest connection: handshake facts, mapping references and FIN bookkeeping."""

    __slots__ = (
        "state",
        "last",  # `now` of the last packet
        "moved",  # `now` when the flow was last moved to the end of the table (LRU order)
        "version",
        "checksum",  # DSS checksums negotiated (either side's A bit)
        "local_key",
        "remote_key",
        "local_idsn",
        "remote_idsn",
        "guest_isn",
        "server_isn",
        "snd_rel",  # highest guest seq seen, relative to guest_isn, 64-bit
        "rcv_rel",  # highest guest ack seen, relative to server_isn, 64-bit
        "ack64",  # send 64-bit DATA_ACKs (the server sent a 64-bit DSN)
        "local_fin",  # guest FIN seen; its seq in guest space
        "local_fin_seq",
        "local_fin_acked",
        "fin_ack_delivered",  # the guest got a packet acking its FIN
        "guest_passive",  # the server's DATA_FIN came before the guest's FIN
        "guest_window",  # the guest's last raw window field (for ACKs we inject)
        "remote_fin",  # server DATA_FIN seen; its position in guest space
        "remote_fin_seq",
        "remote_fin_acked",
        "fail_sent",  # we sent MP_FAIL (server checksum failed), waiting for its infinite mapping
        "infinite_tx",  # the server sent MP_FAIL first: our next guest data has an infinite mapping
        "fastclosed",  # the guest's RST went out with MP_FASTCLOSE: later guest RSTs carry it too
        "subflows",
        "sf",  # subflows[0], the guest's own connection
    )

    def __init__(self, now: float, version: int) -> None:
        self.last = now
        self.moved = now
        self.reset(version)

    def reset(self, version: int) -> None:
        """Forget everything but the activity times: a new connection on this 4-tuple."""
        self.state = State.NEW
        self.version = version
        self.checksum = False
        self.local_key = None
        self.remote_key = None
        self.local_idsn = 0
        self.remote_idsn = 0
        self.guest_isn = 0
        self.server_isn = 0
        self.snd_rel = 1
        self.rcv_rel = 1
        self.ack64 = False
        self.local_fin = False
        self.local_fin_seq = 0
        self.local_fin_acked = False
        self.fin_ack_delivered = False
        self.guest_passive = False
        self.guest_window = 0
        self.remote_fin = False
        self.remote_fin_seq = 0
        self.remote_fin_acked = False
        self.fail_sent = False
        self.infinite_tx = False
        self.fastclosed = False
        self.sf = Subflow(0)
        self.subflows = (self.sf,)

    def __repr__(self) -> str:  # never the keys
        return f"<Flow {self.state.name} v{self.version} csum={self.checksum} last={self.last:.1f}>"

    # -- guest -> server: data level -------------------------------------------------------

    def dsn_of_guest_seq(self, seq: int) -> int:
        """64-bit DSN of the guest byte at `seq` (RFC 8684 §3.3; ARCHITECTURE.md)."""
        rel = _unwrap((seq - self.guest_isn) & M32, self.snd_rel)
        if rel > self.snd_rel:
            self.snd_rel = rel
        return (self.local_idsn + rel) & M64

    def guest_seq_of_local_dsn(self, dsn: int) -> int:
        """Guest seq of our DSN (for a DATA_ACK from the server); 32-bit DSNs work too."""
        return (self.guest_isn + dsn - self.local_idsn) & M32

    # -- server -> guest: data level -------------------------------------------------------

    def data_ack_of_guest_ack(self, ack: int) -> int:
        """64-bit DATA_ACK for the guest's cumulative ack `ack`."""
        rel = _unwrap((ack - self.server_isn) & M32, self.rcv_rel)
        if rel > self.rcv_rel:
            self.rcv_rel = rel
        return (self.remote_idsn + rel) & M64

    def guest_seq_of_remote_dsn(self, dsn: int) -> int:
        """Guest seq of the server's DSN `dsn` (32- or 64-bit)."""
        return (self.server_isn + dsn - self.remote_idsn) & M32
