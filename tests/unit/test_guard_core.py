"""Guard: the core implementation the environment asks for is the one that is loaded.

Without `MIDDLEBOX_PURE_PYTHON` the compiled twin of the core (`middlebox._ccore`, built by
setup.py from the core's own sources) must be active and really compiled: a build that
silently fell back to the pure-Python core would pass every other test, only slower. With
it, the spec (`middlebox/core/converter.py`) runs. Same switch values as
`middlebox/core/__init__.py` and `middlebox/wire/__init__.py`.
"""

import os
import types

import middlebox.core as core
from middlebox.core import ACCEPT, Rewrite
from middlebox.core.converter import _rewrite

PURE = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")


def test_selected_core_is_loaded():
    if PURE:
        assert core.IMPLEMENTATION == "python"
        assert core.Converter is core.REFERENCE
        assert core.Converter.__module__ == "middlebox.core.converter"
        assert core.Converter().flows is not None
    else:
        from middlebox._ccore import converter, flow, multipath

        assert core.IMPLEMENTATION == "cython"
        assert core.Converter is converter.Converter is not core.REFERENCE
        assert core.MULTIPATH is multipath  # (the converter holds it as a C global, MP)
        for module in (converter, flow, multipath):  # extension modules, not the copied .py sources
            assert module.__file__.endswith(".so"), module.__file__
        # compiled classes: C fields, no instance __dict__, no Python-level __slots__ walk
        conv = core.Converter()
        assert not hasattr(conv, "__dict__")
        assert type(flow.Flow).__name__ == "type" and not hasattr(flow.Flow(0.0, 1), "__dict__")
        assert not isinstance(converter.Converter._handle, types.FunctionType)  # a C method
        assert not isinstance(multipath._download, types.FunctionType)  # cpdef (multipath.pxd)


def test_rewrite_shortcut_makes_the_same_value():
    """The converter builds Rewrite actions without the frozen dataclass __init__."""
    a, b = _rewrite(b"abc"), Rewrite(b"abc")
    assert type(a) is Rewrite and a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert a != ACCEPT


def test_multipath_shortcuts_make_the_same_values():
    """multipath builds Inject actions and DATA_ACK-only Dss options without the frozen
    dataclasses' __init__."""
    from middlebox.core import Inject
    from middlebox.wire import Dss

    mp = core.MULTIPATH
    for a, b in ((mp._inject(b"abc"), Inject(b"abc")), (mp._dss_ack(7, True), Dss(7, True)),
                 (mp._dss_ack(1 << 40, False), Dss(1 << 40, False))):
        assert type(a) is type(b) and a == b and hash(a) == hash(b) and repr(a) == repr(b)


def test_a_none_flow_raises_in_the_compiled_multipath_too():
    """multipath.pxd types the Flow arguments; nonecheck makes a None raise as in pure Python
    (the converter's guard counts it as a CoreBug) instead of reading through a NULL."""
    import pytest

    mp = core.MULTIPATH
    for call in (lambda: mp.dack_now(None), lambda: mp._download(None, None, None, None, None, b"", None),
                 lambda: mp.send(None, None, None, b"", 0, 0, 0, None)):
        with pytest.raises(AttributeError):
            call()
