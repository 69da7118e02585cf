"""Sans-IO core: bytes, a direction and `now` in, actions out (docs/core-api.md).

Two implementations of `Converter` with one contract, like the wire layer: the pure-Python
spec (`converter.py`, `flow.py`, `multipath.py`) and its compiled twin `middlebox._ccore`,
built by setup.py from those very sources. The twin is used unless `MIDDLEBOX_PURE_PYTHON=1`
is set or it was not built; `IMPLEMENTATION` says which one is active, `REFERENCE` is the
spec's class and `MULTIPATH` the multipath module the active `Converter` calls (tests that
patch or read it must use this one: the compiled converter does not see the pure module).
"""

import os

from middlebox.core.config import Config
from middlebox.core import multipath as MULTIPATH
from middlebox.core.converter import Converter as REFERENCE
from middlebox.core.counters import Counter
from middlebox.core.events import ACCEPT, Accept, Direction, Drop, Inject, Rewrite
from middlebox.core.table import Input, State

IMPLEMENTATION = "python"
Converter = REFERENCE
if os.environ.get("MIDDLEBOX_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from middlebox._ccore.converter import Converter  # type: ignore[no-redef]
        from middlebox._ccore import multipath as MULTIPATH  # type: ignore[no-redef]
    except ImportError:
        pass
    else:
        IMPLEMENTATION = "cython"

__all__ = [
    "ACCEPT",
    "IMPLEMENTATION",
    "MULTIPATH",
    "REFERENCE",
    "Accept",
    "Config",
    "Converter",
    "Counter",
    "Direction",
    "Drop",
    "Inject",
    "Input",
    "Rewrite",
    "State",
]
