"""The compiled twin of `middlebox.core` (STYLE.md item 9).

`setup.py` builds `flow` and `converter` here from the very sources of `middlebox/core/`
(`flow.py`, `converter.py`) with the C types of their `.pxd` files; nothing else lives here
and the copies it compiles are not kept in the tree. `middlebox.core` uses it unless
`MIDDLEBOX_PURE_PYTHON=1` is set or it was not built; `middlebox.core.IMPLEMENTATION` says
which one is active.
"""
