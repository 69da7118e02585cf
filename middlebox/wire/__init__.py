"""Stateless bytes <-> values for IPv4/IPv6, TCP and MPTCP (see docs/wire-api.md).

Two implementations with one contract: the pure-Python reference (`packet.py`, `mptcp.py`,
`crypto.py`) and its Cython twin `middlebox._cwire` (built from `cext/_wire.pyx`). The twin
is used unless `MIDDLEBOX_PURE_PYTHON=1` is set or it was not built; `IMPLEMENTATION` says
which one is active. Import wire names from here, never from the submodules.
"""

import os

from middlebox.wire.crypto import (
    add_addr_hmac,
    join_hmac,
    key_idsn,
    key_token,
    new_key,
    new_nonce,
)
from middlebox.wire.errors import WireError
from middlebox.wire.mptcp import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
)

# The names below have a Cython twin; they are taken from the twin when it is active.
TWINNED = (
    "Packet",
    "TcpOptions",
    "packet_fields",
    "parse_packet",
    "parse_options",
    "options_of",
    "parse_mptcp",
    "build_mptcp",
    "build_options",
    "encode_tcp_options",
    "strip_mptcp",
    "rewrite",
    "without_mptcp",
    "add_dss",
    "mptcp_options",
    "ones_sum",
    "tcp_checksum",
    "ipv4_checksum",
    "build_segment",
    "csum_replace",
    "dss_checksum",
)

from middlebox.wire import mptcp as _ref_mptcp  # noqa: E402
from middlebox.wire import packet as _ref_packet  # noqa: E402


def _reference_namespace():
    ns = {}
    for name in TWINNED:
        ns[name] = getattr(_ref_packet, name, None) or getattr(_ref_mptcp, name)
    return ns


REFERENCE = _reference_namespace()
IMPLEMENTATION = "python"
_impl = REFERENCE
if os.environ.get("MIDDLEBOX_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from middlebox import _cwire  # type: ignore[attr-defined]
    except ImportError:
        _cwire = None
    if _cwire is not None:
        _impl = {name: getattr(_cwire, name) for name in TWINNED}
        IMPLEMENTATION = "cython"

globals().update(_impl)

__all__ = [
    "IMPLEMENTATION",
    "REFERENCE",
    "WireError",
    "AddAddr",
    "Dss",
    "MpCapable",
    "MpFail",
    "MpFastclose",
    "MpJoinAck",
    "MpJoinSyn",
    "MpJoinSynAck",
    "MpPrio",
    "MpTcpRst",
    "RemoveAddr",
    "add_addr_hmac",
    "join_hmac",
    "key_idsn",
    "key_token",
    "new_key",
    "new_nonce",
    *TWINNED,
]
