"""The enums that index tuples are dense: their values are exactly 0 .. len - 1.

`Converter._dispatch` is `tuple(tuple(entry(s, i) for i in sorted(Input)) for s in sorted(State))`
and is read as `_dispatch[flow.state][inp]`: the *position* in the tuple is the member's rank,
the *index* is its value. They agree only when the values are 0, 1, 2, ... without a gap or a
duplicate; a member added as `= 30` after `= 25` would silently dispatch to another member's
handler (or off the end: IndexError, counted as CoreBug, in the compiled twin too now that it
keeps Python's bounds checks). Every enum the core uses as a sequence index belongs here;
`Counter` and `Direction` are only dict keys / compared (values start at 1 on purpose).
"""

import pytest

from middlebox.core.converter import Converter as PureConverter
from middlebox.core.table import TABLE, TIMEOUT_OF_STATE, Input, State

INDEXING_ENUMS = (State, Input)  # the enums whose values index Converter._dispatch


@pytest.mark.parametrize("enum", INDEXING_ENUMS, ids=lambda e: e.__name__)
def test_values_are_dense_from_zero(enum):
    values = [int(m) for m in enum]
    assert values == list(range(len(enum))), f"{enum.__name__} values must be 0..{len(enum) - 1} in order"
    # no aliases hiding a duplicate value (an alias is not listed by iteration)
    assert len(enum.__members__) == len(enum)


def test_dispatch_is_indexed_by_value():
    """Every (state, input) pair dispatches to TABLE's entry for that very pair."""
    conv = PureConverter()
    assert len(conv._dispatch) == len(State)
    for s in State:
        row = conv._dispatch[s]
        assert len(row) == len(Input)
        for i in Input:
            entry, want = row[i], TABLE.get((s, i))
            if want is None:
                assert entry is None, (s, i)
            else:
                handler, nxt = entry
                assert handler.__name__ == "_h_" + want[0] and nxt is want[1], (s, i)


def test_every_state_has_a_timeout():
    assert set(TIMEOUT_OF_STATE) == set(State)
