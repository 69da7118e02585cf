"""Guard: the netlink backend's per-batch path is the compiled `middlebox._cnlqueue` unless
MIDDLEBOX_PURE_PYTHON asks for the reference `middlebox/io/nlqueue.py` (a build that
silently fell back would pass every other test, only slower)."""

import os

from middlebox.io import fastpath, nlqueue

PURE = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")


def test_selected_engine_is_loaded():
    impl = fastpath.twin()
    if PURE:
        assert impl is nlqueue and impl.IMPLEMENTATION == "python"
    else:
        from middlebox import _cnlqueue

        assert impl is _cnlqueue and impl.IMPLEMENTATION == "cython"
        for name in ("Engine", "fix_checksums", "send_many"):
            assert hasattr(impl, name) and hasattr(nlqueue, name), name
