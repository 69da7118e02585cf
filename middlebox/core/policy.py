"""Uplink policy (issue 10): which uplinks a multipath flow may use.

`greedy` (the default) uses every live uplink. `cost` reaches a target rate at the least cost:
uplinks are taken cheapest first (cost per byte from `Uplink.cost`, ties by id); the next one
is added only while the flow delivers less than its target, and the dearest one is dropped
when the others alone deliver comfortably more than the target. Rates are the flow's own
measured delivery rates per uplink (multipath.py measures them), never configured ones.

The target is a rate (bytes/s) or a multiple of the best single uplink's rate as this flow
measured it (`2x`): on three equal uplinks `2x` settles on the cheapest two.

`plan` is a pure function of what it is given (unit tested as a table). Hysteresis keeps a
plan from flapping: a change stands at least SETTLE seconds (rates need that long to show), an
uplink is added once the flow stayed below ADD_BELOW of the target for SHORT_FOR seconds, and
the dearest dropped only when the rest deliver DROP_ABOVE of it. A planned uplink that dies is replaced at once by the cheapest
live one outside the plan (failure must not wait for SETTLE).

`marginal_cap` caps the dearest planned uplink at what the target still needs from it (the
rest of the plan delivers the remainder) with CAP_HEADROOM: a 1.5x target on equal uplinks
fills the cheapest and gives the second half of its rate, instead of all of it as at 2x.
multipath.py enforces it on the upload (a token bucket in the scheduler); the download is
the server's to schedule, told only by MP_PRIO which uplinks are in the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GREEDY = "greedy"
COST = "cost"
POLICIES = (GREEDY, COST)
ADD_BELOW = 0.9  # add the next uplink while the flow delivers < 90 % of its target
DROP_ABOVE = 0.95  # drop the dearest when the others alone deliver >= 95 % of the target
#                   (above ADD_BELOW, so no flapping; at 115 % two equal uplinks that meet a
#                   2x target exactly never let the third go once it was added: bench dynamic run)
SETTLE = 1.0  # seconds a plan stands before the next change by rate (not by failure)
SHORT_FOR = 1.0  # seconds the flow must stay short of ADD_BELOW before an uplink is added
#                  (a 3 x 50 test at 2x added the dear uplink on one dip of the download's rate)

CAP_HEADROOM = 1.15  # the marginal uplink may carry this much more than the target needs of it
CAP_FLOOR = 0.05  # ... and at least this share of the target (the plan drops it when unneeded)

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True, slots=True)
class Target:
    """A multiple of the best single uplink's rate (`multiple`), or a rate in bytes/s."""

    multiple: float = 0.0
    rate: float = 0.0

    def bytes_per_s(self, best_single: float) -> float:
        return self.rate if self.rate else self.multiple * best_single

    def __str__(self) -> str:
        if self.rate:
            return f"{self.rate * 8 / 1e6:g}mbit"
        return f"{self.multiple:g}x"


def parse_target(text: str) -> Target:
    """`2x`, `1.5x` (multiples of the best single uplink) or `150mbit`, `1.2gbit`, `800kbit`
    (bits per second, as tc writes them). ValueError otherwise."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)x", t)
    if m:
        v = float(m.group(1))
        if not 0 < v <= 64:
            raise ValueError(f"target multiple {text!r}: must be > 0 and <= 64")
        return Target(multiple=v)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", t)
    if m:
        v = float(m.group(1)) * _UNITS[m.group(2)] / 8.0
        if v <= 0:
            raise ValueError(f"target rate {text!r}: must be > 0")
        return Target(rate=v)
    raise ValueError(f"target {text!r}: expected a multiple like 2x or a rate like 150mbit")


@dataclass(frozen=True, slots=True)
class UplinkState:
    """What the planner knows of one uplink for one flow."""

    id: int
    cost: float
    alive: bool  # the link is up and the flow has a live subflow on it (or may join it)
    rate: float = 0.0  # bytes/s the flow measured on it (0: unused or unknown)


def plan(uplinks, current: frozenset, target: float, now: float, changed_at: float,
         short_since: float = 0.0) -> frozenset:
    """The uplink ids the flow should use next. `current`: the plan so far (empty: none yet);
    `target`: bytes/s; `changed_at`: when `current` last changed by rate; `short_since`: since
    when the flow has delivered less than ADD_BELOW of its target without a break (0: it
    does not; `shortfall` keeps it)."""
    alive = sorted((u for u in uplinks if u.alive), key=lambda u: (u.cost, u.id))
    if not alive:
        return frozenset()
    ids = {u.id for u in alive}
    members = [u for u in alive if u.id in current]
    dead = len(current - ids)
    if not members:
        members = [alive[0]]
        dead = max(dead - 1, 0)
    outside = [u for u in alive if u.id not in {m.id for m in members}]
    for _ in range(dead):  # a planned uplink died: its replacement at once
        if outside:
            members.append(outside.pop(0))
    planned = frozenset(m.id for m in members)
    if planned != current and (dead or not current):
        return planned
    if now - changed_at < SETTLE:
        return planned
    total = sum(m.rate for m in members)
    if total < ADD_BELOW * target and outside and short_since and now - short_since >= SHORT_FOR:
        return planned | {outside[0].id}
    if len(members) > 1:
        dearest = max(members, key=lambda u: (u.cost, u.id))
        if total - dearest.rate >= DROP_ABOVE * target:
            return planned - {dearest.id}
    return planned


def shortfall(uplinks, current: frozenset, target: float, now: float, short_since: float) -> float:
    """`short_since` for the next `plan` call: kept while the planned uplinks deliver less than
    ADD_BELOW of the target, `now` when that starts, 0 when it ends."""
    total = sum(u.rate for u in uplinks if u.alive and u.id in current)
    if total < ADD_BELOW * target:
        return short_since or now
    return 0.0


def marginal_cap(uplinks, current: frozenset, target: float) -> tuple[int, float] | None:
    """(uplink id, bytes/s) the dearest planned uplink may carry, or None (one uplink planned,
    or no target): what the target still needs once the other planned uplinks deliver what
    they measured, times CAP_HEADROOM, at least CAP_FLOOR of the target. The capped uplink's
    own rate does not count: were it the one short, the flow would fall below ADD_BELOW and
    `plan` would add the next uplink."""
    members = [u for u in uplinks if u.alive and u.id in current]
    if len(members) < 2 or target <= 0:
        return None
    dearest = max(members, key=lambda u: (u.cost, u.id))
    rest = sum(u.rate for u in members if u is not dearest)
    return dearest.id, max(target - rest, CAP_FLOOR * target) * CAP_HEADROOM
