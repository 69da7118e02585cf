"""Guard: the implementation the environment asks for is the one that is loaded.

Without `MIDDLEBOX_PURE_PYTHON` the compiled twin must be active (a build that silently falls
back to pure Python would pass every other test, only slower); with it, the reference.
Same switch values as `middlebox/wire/__init__.py`.
"""

import os

import middlebox.wire as wire

PURE = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")


def test_selected_implementation_is_loaded():
    if PURE:
        assert wire.IMPLEMENTATION == "python"
        assert wire.parse_packet is wire.REFERENCE["parse_packet"]
    else:
        from middlebox import _cwire

        assert wire.IMPLEMENTATION == "cython"
        assert wire.parse_packet is _cwire.parse_packet
        for name in wire.TWINNED:
            assert getattr(wire, name) is getattr(_cwire, name), name
