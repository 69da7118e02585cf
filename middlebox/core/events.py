"""What goes into and comes out of the core (see docs/core-api.md).

Events in: `(data, Direction, now)`. Actions out: the first action of `Converter.handle` is
always the verdict for the packet (`ACCEPT`, `Rewrite`, `Drop`), followed by zero or more
`Inject`. Small frozen dataclasses, after aioquic's `events.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Direction(IntEnum):
    """Which way a packet travels, decided by the I/O shell from the NFQUEUE `indev`."""

    OUT = 1  # from a guest (entered through a guest-facing interface)
    IN = 2  # towards a guest
    LOCAL = 3  # to the box itself: an uplink address, a port of the join range (extra subflows)


@dataclass(frozen=True, slots=True)
class Accept:
    """Let the packet pass unchanged. Use the `ACCEPT` singleton."""


ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Let the packet pass with these bytes instead (`set_payload` + accept)."""

    data: bytes

    def __repr__(self) -> str:  # packets can be large; the bytes are not interesting in logs
        return f"Rewrite(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the packet; `reason` is for logs and tests."""

    reason: str


@dataclass(frozen=True, slots=True)
class Inject:
    """A complete IP packet (checksums done) for the I/O shell's raw socket."""

    data: bytes

    def __repr__(self) -> str:
        return f"Inject(<{len(self.data)} bytes>)"
