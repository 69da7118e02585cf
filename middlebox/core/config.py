"""Converter configuration (immutable; one per Converter)."""

from __future__ import annotations

from dataclasses import dataclass

JOIN_PORTS_DEFAULT = (61000, 61999)  # above Linux's default ephemeral range (32768-60999)


@dataclass(frozen=True, slots=True)
class Uplink:
    """One uplink of the hypervisor (issue 6): extra subflows leave from its address.

    `id` is the MPTCP address id announced in MP_JOIN (1..255; subflow 1 has id 0, RFC 8684
    §3.2); `addr4`/`addr6` the interface's primary addresses (None when it has none of that
    family); `backup` sets the B bit of its joins; `cost` is recorded for the policy work."""

    name: str
    id: int
    addr4: str | None = None
    addr6: str | None = None
    backup: bool = False
    cost: float = 0.0
    up: bool = True  # the link's state when the converter starts

    def __post_init__(self) -> None:
        if not 1 <= self.id <= 255:
            raise ValueError("uplink id must be 1..255")
        if self.addr4 is None and self.addr6 is None:
            raise ValueError(f"uplink {self.name}: no address")


@dataclass(frozen=True, slots=True)
class Config:
    version: int = 1  # MPTCP version offered on guest SYNs: 1 (RFC 8684) or 0 (RFC 6824)
    checksum: bool = False  # ask for DSS checksums (A bit on our SYN)
    max_flows: int = 65536  # flow table cap; when full, evict by class (Converter._new_flow)
    mtu: int = 1500  # path MTU towards the servers, for the MSS clamp
    # idle timeouts in seconds, by flow state (tick(now) expires flows)
    # An MPTCP flow must live as long as conntrack keeps the connection (5 days): forgetting it
    # would send its next data without DSS, a silent downgrade of every idle SSH session.
    # The table cap and fair eviction bound the memory instead.
    established_timeout: float = 432000.0  # MP_CAPABLE pending, established
    fallback_timeout: float = 300.0  # plain TCP (fallback, MPTCP guests): forgetting costs nothing
    half_open_timeout: float = 60.0  # SYN sent, no SYN/ACK yet
    closing_timeout: float = 120.0  # a FIN/DATA_FIN seen, close not complete
    time_wait_timeout: float = 60.0  # 2 * MSL-ish after both DATA_FINs were acked
    closed_timeout: float = 10.0  # after a RST
    # multipath (issue 6): no uplinks = single path, as before
    uplinks: tuple = ()  # of Uplink
    join_ports: tuple = JOIN_PORTS_DEFAULT  # local ports of extra subflows (inclusive range)
    max_subflows: int = 0  # per flow, subflow 1 included; 0 = 1 + uplinks x server addresses
    max_multipath_flows: int = 4096  # flows that may open extra subflows at once
    join_after_bytes: int = 65536  # joins start once a flow moved this many bytes ...
    join_after_ms: int = 1000  # ... or lived this long, whichever first
    # repair inside the middlebox (issue 6, MULTIPATH.md option A): the segments a flow sent
    # on its extra subflows are kept until the server acks them, up to `repair_bytes` per
    # flow and `repair_total_bytes` in all, and a loss there is resent from them instead of
    # being shown to the guest (whose one congestion window would halve for one path's loss)
    repair_bytes: int = 0  # 0: off
    repair_total_bytes: int = 64 << 20
    # with repair: each join gets its own congestion window (AIMD, multipath.py _cwnd_*), which
    # repair's hidden losses cut; only bytes a join sent within it are kept (a loss beyond
    # it goes to the guest). The scheduler still weighs a full join by delivery time.
    repair_window: bool = False
    # each join gets its own congestion window (as with repair_window, no payload kept); a
    # guest resend of bytes a join sent within it is named to the guest as a D-SACK once the
    # server has it, so that a Linux guest undoes the window cut that one path's loss made
    dsack_undo: bool = False
    # uplink policy (issue 10, policy.py): "greedy" uses every live uplink; "cost" reaches
    # `target` (policy.Target: a multiple of the best single uplink, or bytes/s) cheapest first
    policy: str = "greedy"
    target: object = None  # policy.Target; None = 2x
    # inbound role (issue 9): MPTCP peers connecting to plain-TCP services in guests get
    # MPTCP (their SYN's MP_CAPABLE is answered on the guest's behalf); False: passed untouched
    inbound: bool = True

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise ValueError("version must be 0 or 1")
        if self.max_flows < 1:
            raise ValueError("max_flows must be >= 1")
        if not 576 <= self.mtu <= 65535:
            raise ValueError("mtu must be 576..65535")
        lo, hi = self.join_ports
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError("join_ports must be a range within 1024..65535")
        if len({u.id for u in self.uplinks}) != len(self.uplinks):
            raise ValueError("uplink ids must be distinct")
        if self.max_subflows < 0 or self.max_multipath_flows < 0:
            raise ValueError("max_subflows and max_multipath_flows must be >= 0")
        if self.join_after_bytes < 0 or self.join_after_ms < 0:
            raise ValueError("join_after_bytes and join_after_ms must be >= 0")
        if self.repair_bytes < 0 or self.repair_total_bytes < 0:
            raise ValueError("repair_bytes and repair_total_bytes must be >= 0")
        if self.dsack_undo and self.repair_bytes:
            raise ValueError("dsack_undo and repair_bytes answer the same losses: choose one")
        if self.repair_window and not self.repair_bytes:
            raise ValueError("repair_window is repair's congestion window: it needs repair_bytes > 0")
        if self.policy not in ("greedy", "cost"):
            raise ValueError("policy must be greedy or cost")

    def mss_limit(self, ip_version: int) -> int:
        """Largest MSS the guest may learn: DSS-carrying segments must fit the MTU.

        The sender subtracts its timestamp option from the MSS itself, so what we must leave
        room for is the largest DSS (28 bytes: 64-bit DATA_ACK and DSN, checksum; RFC 8684
        §3.3). IPv4 1500 -> 1500 - 20 - 20 - 28 = 1432; IPv6 -> 1412 (LESSONS.md trap 8).
        """
        return self.mtu - (20 if ip_version == 4 else 40) - 20 - 28
