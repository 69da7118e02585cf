"""The cost planner (issue 10): a table of uplink rates, costs and targets -> the set used;
hysteresis; failure."""

from __future__ import annotations

import pytest

from middlebox.core.policy import (CAP_FLOOR, CAP_HEADROOM, SETTLE, SHORT_FOR, Target, UplinkState,
                                   marginal_cap, parse_target, plan, shortfall)

MB = 1e6 / 8  # bytes/s of 1 Mbit/s


def U(i, cost, rate=0.0, alive=True):
    return UplinkState(i, cost, alive, rate * MB)


@pytest.mark.parametrize("text,want", [
    ("2x", Target(multiple=2.0)), ("1.5X", Target(multiple=1.5)),
    ("150mbit", Target(rate=150 * MB)), ("1.2gbit", Target(rate=1200 * MB)), ("800kbit", Target(rate=0.8 * MB)),
])
def test_parse_target(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["", "2", "x", "0x", "-1x", "100", "100mb", "fast", "65x", "0mbit"])
def test_parse_target_refuses(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_target_of_a_multiple_follows_the_best_single_uplink():
    assert Target(multiple=2).bytes_per_s(50 * MB) == 100 * MB
    assert Target(rate=30 * MB).bytes_per_s(50 * MB) == 30 * MB


# uplinks (cost, measured Mbit/s), current plan, target Mbit/s -> next plan (all settled)
TABLE = [
    # nothing planned yet: the cheapest, whatever the order given
    ([(6, 0), (1, 0), (2, 0)], set(), 100, {2}),
    # the cheapest delivers 50 of 100: add the next cheapest
    ([(1, 50), (2, 0), (6, 0)], {1}, 100, {1, 2}),
    # two deliver 100 of 100: stay (never the dear one)
    ([(1, 50), (2, 50), (6, 0)], {1, 2}, 100, {1, 2}),
    # a little short (95 of 100, within ADD_BELOW): stay
    ([(1, 48), (2, 47), (6, 0)], {1, 2}, 100, {1, 2}),
    # well short (80 of 100): the third
    ([(1, 40), (2, 40), (6, 0)], {1, 2}, 100, {1, 2, 3}),
    # target 50 and the cheapest alone delivers 48 (>= 95 %): drop the dearer
    ([(1, 48), (2, 40), (6, 0)], {1, 2}, 50, {1}),
    # ... but not at 46 (92 %, between ADD_BELOW and DROP_ABOVE): no flapping
    ([(1, 46), (2, 40), (6, 0)], {1, 2}, 50, {1, 2}),
    # all three in use and the cheaper two meet the 2x target again: the dear one goes
    ([(1, 50), (2, 50), (6, 50)], {1, 2, 3}, 100, {1, 2}),
    # equal costs: by id
    ([(1, 0), (1, 0)], set(), 10, {1}),
    # everything in use and still short: nothing more to add
    ([(1, 10), (2, 10)], {1, 2}, 100, {1, 2}),
]


@pytest.mark.parametrize("rows,current,target,want", TABLE)
def test_plan_table(rows, current, target, want):
    ups = [U(i + 1, c, r) for i, (c, r) in enumerate(rows)]
    assert plan(ups, frozenset(current), target * MB, now=100.0, changed_at=0.0, short_since=1.0) == frozenset(want)


def test_no_change_by_rate_before_settle():
    ups = [U(1, 1, 10), U(2, 2, 0)]
    assert plan(ups, frozenset({1}), 100 * MB, now=100.0, changed_at=100.0 - SETTLE / 2, short_since=1.0) == {1}
    assert plan(ups, frozenset({1}), 100 * MB, now=100.0, changed_at=100.0 - SETTLE, short_since=1.0) == {1, 2}


def test_a_short_dip_adds_nothing():
    ups = [U(1, 1, 40), U(2, 2, 40), U(3, 6, 0)]
    cur = frozenset({1, 2})
    since = shortfall(ups, cur, 100 * MB, 100.0, 0.0)
    assert since == 100.0  # short from now on ...
    assert plan(ups, cur, 100 * MB, 100.0 + SHORT_FOR / 2, 0.0, since) == cur  # ... not for long
    assert plan(ups, cur, 100 * MB, 100.0 + SHORT_FOR, 0.0, since) == {1, 2, 3}
    ok = [U(1, 1, 50), U(2, 2, 48), U(3, 6, 0)]
    assert shortfall(ok, cur, 100 * MB, 100.5, since) == 0.0  # the dip ended: the clock restarts


def test_a_dead_planned_uplink_is_replaced_at_once():
    ups = [U(1, 1, 0, alive=False), U(2, 2, 50), U(3, 6, 0)]
    # the cheapest died just after a change: its replacement does not wait for SETTLE
    assert plan(ups, frozenset({1, 2}), 100 * MB, now=100.0, changed_at=100.0) == {2, 3}
    assert plan(ups, frozenset({1}), 100 * MB, now=100.0, changed_at=100.0) == {2}


def test_nothing_alive_plans_nothing_and_a_comeback_is_used_when_short():
    assert plan([U(1, 1, alive=False)], frozenset({1}), MB, 100.0, 0.0) == frozenset()
    ups = [U(1, 1, 20), U(2, 2, 0)]  # uplink 2 came back; the flow is short of 50
    assert plan(ups, frozenset({1}), 50 * MB, 100.0, 0.0, 1.0) == {1, 2}


def test_converges_and_holds_on_three_equal_uplinks():
    """A run of the planner against uplinks that deliver what they are given: 2x on 3 x 50
    settles on the cheapest two and stays there."""
    rates = {1: 50, 2: 50, 3: 50}
    costs = {1: 1, 2: 2, 3: 6}
    cur, changed, since, seen = frozenset(), -10.0, 0.0, []
    for step in range(20):
        now = step * 0.5
        ups = [U(i, costs[i], rates[i] if i in cur else 0) for i in (1, 2, 3)]
        best = max((rates[i] for i in cur), default=0) * MB
        since = shortfall(ups, cur, 2 * best, now, since)
        nxt = plan(ups, cur, 2 * best if best else 0, now, changed, since)
        if nxt != cur:
            changed = now
        cur = nxt
        seen.append(cur)
    assert seen[-1] == {1, 2} and all(s == {1, 2} for s in seen[-10:])


@pytest.mark.parametrize("rows,current,target,want", [
    # 1.5x of 50 on equal uplinks: the second gives what the first lacks, with headroom
    ([U(1, 1, 50), U(2, 2, 29), U(3, 6)], {1, 2}, 75, (2, 25 * CAP_HEADROOM)),
    # 2x: the second's cap is above what it can do (no effect)
    ([U(1, 1, 50), U(2, 2, 50), U(3, 6)], {1, 2}, 100, (2, 50 * CAP_HEADROOM)),
    # 2.5x: the first two full, the third gives the last 25
    ([U(1, 1, 50), U(2, 2, 50), U(3, 6, 30)], {1, 2, 3}, 125, (3, 25 * CAP_HEADROOM)),
    # the rest alone meets the target: the floor (the plan drops the dear one later)
    ([U(1, 1, 80), U(2, 2, 10)], {1, 2}, 75, (2, CAP_FLOOR * 75 * CAP_HEADROOM)),
    # one uplink planned, or the other one dead: no cap
    ([U(1, 1, 50), U(2, 2, 50)], {1}, 75, None),
    ([U(1, 1, 50), U(2, 2, 50, alive=False)], {1, 2}, 75, None),
])
def test_marginal_cap_table(rows, current, target, want):
    got = marginal_cap(rows, frozenset(current), target * MB)
    if want is None:
        assert got is None
    else:
        assert got[0] == want[0] and got[1] == pytest.approx(want[1] * MB)
