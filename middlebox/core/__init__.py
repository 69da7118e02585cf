"""Sans-IO core: bytes, a direction and `now` in, actions out (docs/core-api.md)."""

from middlebox.core.config import Config
from middlebox.core.converter import Converter
from middlebox.core.counters import Counter
from middlebox.core.events import ACCEPT, Accept, Direction, Drop, Inject, Rewrite
from middlebox.core.table import Input, State

__all__ = [
    "ACCEPT",
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
