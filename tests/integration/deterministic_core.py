"""The real converter with deterministic keys (`--converter deterministic_core:Converter`), so
that two daemons fed the same packets must write the same bytes (test_backend_differential.py).
The key generator is replaced in the module the core runs from (compiled or reference);
everything else is the product's core."""

import itertools

import middlebox.core as _core
from middlebox.core import Config, Direction, Drop  # noqa: F401 - the daemon reads these

_keys = itertools.count(0x1122334455667788)


def _new_key() -> int:
    return next(_keys)


def Converter(config):  # noqa: N802 - a factory where the daemon expects a class
    module = __import__(_core.Converter.__module__, fromlist=["new_key"])
    module.new_key = _new_key
    return _core.Converter(config)
