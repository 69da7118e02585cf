"""Converter configuration (immutable; one per Converter)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise ValueError("version must be 0 or 1")
        if self.max_flows < 1:
            raise ValueError("max_flows must be >= 1")
        if not 576 <= self.mtu <= 65535:
            raise ValueError("mtu must be 576..65535")

    def mss_limit(self, ip_version: int) -> int:
        """Largest MSS the guest may learn: DSS-carrying segments must fit the MTU.

        The sender subtracts its timestamp option from the MSS itself, so what we must leave
        room for is the largest DSS (28 bytes: 64-bit DATA_ACK and DSN, checksum; RFC 8684
        §3.3). IPv4 1500 -> 1500 - 20 - 20 - 28 = 1432; IPv6 -> 1412 (LESSONS.md trap 8).
        """
        return self.mtu - (20 if ip_version == 4 else 40) - 20 - 28
