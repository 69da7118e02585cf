"""MPTCP options (TCP option kind 30, RFC 8684 §3): values, parser, builders (reference).

The option dataclasses below are *the* classes: the Cython twin imports and returns them.
`parse_mptcp` follows Linux `mptcp_parse_option()` (net/mptcp/options.c): the exact length
of each subtype is checked against the named constants below and anything malformed is
ignored (`None`), never raised. `build_mptcp` writes one option with the length its fields
imply; `build_options` is the one writer that decides which options go together.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from middlebox.wire.errors import WireError
from middlebox.wire.packet import (
    ACK,
    RST,
    SYN,
    TCP_HLEN,
    TCP_MAX_OPTLEN,
    TCPOPT_MPTCP,
    nop_pad,
    options_of,
    rewrite,
    strip_mptcp,
)

# --- subtypes (RFC 8684 §3, IANA "MPTCP Option Subtypes") ----------------------------------

MPTCPOPT_MP_CAPABLE = 0
MPTCPOPT_MP_JOIN = 1
MPTCPOPT_DSS = 2
MPTCPOPT_ADD_ADDR = 3
MPTCPOPT_RM_ADDR = 4
MPTCPOPT_MP_PRIO = 5
MPTCPOPT_MP_FAIL = 6
MPTCPOPT_MP_FASTCLOSE = 7
MPTCPOPT_MP_TCPRST = 8

# --- which options may share one segment -----------------------------------------------------
#
# The combination table of `build_options`, the one writer of MPTCP option areas. Each
# subtype maps to the subtypes allowed alongside it (the relation is symmetric); at most one
# option of each subtype per segment. MP_CAPABLE and MP_JOIN are handshake options and go
# alone. On a RST, Linux `mptcp_established_options()` writes MP_FASTCLOSE or MP_FAIL, plus
# MP_TCPRST; RFC 8684 §3.7 sends MP_FAIL on the RST that closes a subflow after a checksum
# failure, so MP_FAIL goes with DSS *and* MP_TCPRST (docs/wire-api.md said "only with DSS").
# ADD_ADDR, REMOVE_ADDR and MP_PRIO ride on a DSS-bearing segment, one at a time.
OPTION_COMBINATIONS: dict[int, frozenset[int]] = {
    MPTCPOPT_MP_CAPABLE: frozenset(),
    MPTCPOPT_MP_JOIN: frozenset(),
    MPTCPOPT_DSS: frozenset(
        {
            MPTCPOPT_ADD_ADDR,
            MPTCPOPT_RM_ADDR,
            MPTCPOPT_MP_PRIO,
            MPTCPOPT_MP_FAIL,
            MPTCPOPT_MP_FASTCLOSE,
            MPTCPOPT_MP_TCPRST,
        }
    ),
    MPTCPOPT_ADD_ADDR: frozenset({MPTCPOPT_DSS}),
    MPTCPOPT_RM_ADDR: frozenset({MPTCPOPT_DSS}),
    MPTCPOPT_MP_PRIO: frozenset({MPTCPOPT_DSS}),
    MPTCPOPT_MP_FAIL: frozenset({MPTCPOPT_DSS, MPTCPOPT_MP_TCPRST}),
    MPTCPOPT_MP_FASTCLOSE: frozenset({MPTCPOPT_DSS, MPTCPOPT_MP_TCPRST}),
    MPTCPOPT_MP_TCPRST: frozenset({MPTCPOPT_DSS, MPTCPOPT_MP_FASTCLOSE, MPTCPOPT_MP_FAIL}),
}

# --- option lengths (names as in Linux net/mptcp/protocol.h) ---------------------------------

TCPOLEN_MPTCP_MPC_SYN = 4  # v1 SYN: no key
TCPOLEN_MPTCP_MPC_SYNACK = 12  # sender's key (also the v0 SYN)
TCPOLEN_MPTCP_MPC_ACK = 20  # sender's key, receiver's key
TCPOLEN_MPTCP_MPC_ACK_DATA = 22  # + data-level length (v1)
TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM = 24  # + DSS checksum (v1)
TCPOLEN_MPTCP_MPJ_SYN = 12
TCPOLEN_MPTCP_MPJ_SYNACK = 16
TCPOLEN_MPTCP_MPJ_ACK = 24
TCPOLEN_MPTCP_DSS_BASE = 4
TCPOLEN_MPTCP_DSS_ACK32 = 4
TCPOLEN_MPTCP_DSS_ACK64 = 8
TCPOLEN_MPTCP_DSS_MAP32 = 10  # DSN 4 + subflow seq 4 + data-level length 2
TCPOLEN_MPTCP_DSS_MAP64 = 14  # DSN 8 + subflow seq 4 + data-level length 2
TCPOLEN_MPTCP_DSS_CHECKSUM = 2
TCPOLEN_MPTCP_ADD_ADDR = 16  # IPv4 + HMAC
TCPOLEN_MPTCP_ADD_ADDR_PORT = 18
TCPOLEN_MPTCP_ADD_ADDR_BASE = 8  # IPv4, echo (no HMAC)
TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT = 10
TCPOLEN_MPTCP_ADD_ADDR6 = 28
TCPOLEN_MPTCP_ADD_ADDR6_PORT = 30
TCPOLEN_MPTCP_ADD_ADDR6_BASE = 20
TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT = 22
TCPOLEN_MPTCP_PORT_LEN = 2
TCPOLEN_MPTCP_ADD_ADDR_HMAC = 8
TCPOLEN_MPTCP_RM_ADDR_BASE = 3
MPTCP_RM_IDS_MAX = 8
TCPOLEN_MPTCP_PRIO = 3
TCPOLEN_MPTCP_FAIL = 12
TCPOLEN_MPTCP_FASTCLOSE = 12
TCPOLEN_MPTCP_RST = 4
TCPOLEN_MPTCP_MPJ_SYNACK_HMAC = 8  # leftmost 64 bits (RFC 8684 §3.2)
TCPOLEN_MPTCP_MPJ_ACK_HMAC = 20  # leftmost 160 bits

# --- flag bits --------------------------------------------------------------------------------

MPTCP_VERSION_MASK = 0x0F
# MP_CAPABLE flags, byte 3 (RFC 8684 §3.1)
MPTCP_CAP_CHECKSUM_REQD = 0x80  # A
MPTCP_CAP_EXTENSIBILITY = 0x40  # B, must be 0
MPTCP_CAP_DENY_JOIN_ID0 = 0x20  # C: no joins to my source address/port
MPTCP_CAP_HMAC_SHA256 = 0x01  # H (HMAC-SHA1 in v0)
MPTCP_CAP_FLAG_MASK = 0x1F  # D..H: only H may be set
# DSS flags, byte 3 (RFC 8684 §3.3)
MPTCP_DSS_HAS_ACK = 0x01  # A
MPTCP_DSS_ACK64 = 0x02  # a
MPTCP_DSS_HAS_MAP = 0x04  # M
MPTCP_DSS_DSN64 = 0x08  # m
MPTCP_DSS_DATA_FIN = 0x10  # F
MPTCP_DSS_FLAG_MASK = 0x1F
# low bit of byte 2 for the subtypes that have one
MPTCPOPT_BACKUP = 0x01  # MP_JOIN B (§3.2)
MPTCP_ADDR_ECHO = 0x01  # ADD_ADDR E (§3.4.1)
MPTCP_PRIO_BKUP = 0x01  # MP_PRIO B (§3.3.8)
MPTCP_RST_TRANSIENT = 0x01  # MP_TCPRST T (§3.6)

U8, U16, U32, U64 = 0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MpCapable:
    """MP_CAPABLE (RFC 8684 §3.1): SYN 4 (v0: 12), SYN/ACK 12, ACK 20, first data 22/24."""

    version: int
    flags: int  # raw flag byte: A 0x80, B 0x40, C 0x20, H 0x01
    sndr_key: int | None = None
    rcvr_key: int | None = None
    data_len: int | None = None
    csum: int | None = None

    @property
    def checksum(self) -> bool:
        """A: the sender requires DSS checksums."""
        return bool(self.flags & MPTCP_CAP_CHECKSUM_REQD)

    @property
    def no_join_src(self) -> bool:
        """C: do not send MP_JOIN to the sender's source address/port."""
        return bool(self.flags & MPTCP_CAP_DENY_JOIN_ID0)


@dataclass(frozen=True, slots=True)
class MpJoinSyn:
    """MP_JOIN on the SYN (RFC 8684 §3.2): the receiver's token and the sender's nonce."""

    backup: bool
    addr_id: int
    token: int
    nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinSynAck:
    """MP_JOIN on the SYN/ACK: leftmost 64 bits of the sender's HMAC and its nonce."""

    backup: bool
    addr_id: int
    hmac: bytes  # 8 bytes
    nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinAck:
    """MP_JOIN on the third ACK: leftmost 160 bits of the sender's HMAC."""

    hmac: bytes  # 20 bytes


@dataclass(frozen=True, slots=True)
class Dss:
    """Data Sequence Signal (RFC 8684 §3.3): DATA_ACK and/or a mapping
    (data_seq, subflow_seq, data_len [, csum]) and DATA_FIN.

    `ack64` matters only with `data_ack`, `dsn64` only with `data_seq`; a parser reports the
    flag bits as received, `build_mptcp` uses them to choose the widths.
    """

    data_ack: int | None = None
    ack64: bool = False
    data_seq: int | None = None
    dsn64: bool = False
    subflow_seq: int | None = None  # relative: the subflow's first data byte is 1
    data_len: int | None = None
    csum: int | None = None
    data_fin: bool = False


@dataclass(frozen=True, slots=True)
class AddAddr:
    """ADD_ADDR (RFC 8684 §3.4.1); `hmac` (8 bytes) unless it is an echo."""

    echo: bool
    addr_id: int
    addr: bytes  # 4 or 16 bytes
    port: int | None = None
    hmac: bytes | None = None


@dataclass(frozen=True, slots=True)
class RemoveAddr:
    """REMOVE_ADDR (RFC 8684 §3.4.2): 1 to 8 address ids."""

    addr_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MpPrio:
    """MP_PRIO (RFC 8684 §3.3.8): change the sending subflow's backup flag."""

    backup: bool


@dataclass(frozen=True, slots=True)
class MpFail:
    """MP_FAIL (RFC 8684 §3.7): the DSN where the checksum failed."""

    data_seq: int


@dataclass(frozen=True, slots=True)
class MpFastclose:
    """MP_FASTCLOSE (RFC 8684 §3.5): the receiver's key."""

    rcvr_key: int


@dataclass(frozen=True, slots=True)
class MpTcpRst:
    """MP_TCPRST (RFC 8684 §3.6), only on a RST."""

    transient: bool
    reason: int


# --- parsing ------------------------------------------------------------------------------------


def _be(opt: bytes, start: int, size: int) -> int:
    return int.from_bytes(opt[start : start + size], "big")


def parse_mptcp(opt: bytes, tcp_flags: int, payload_len: int):
    """One kind-30 option (kind byte to end) -> option value, or `None` when malformed.

    `tcp_flags` and `payload_len` are the carrying segment's: MP_CAPABLE's expected length
    depends on SYN/ACK and on whether the segment carries data, MP_TCPRST needs RST.
    Never raises.
    """
    if len(opt) < 3 or opt[0] != TCPOPT_MPTCP or opt[1] != len(opt):
        return None
    opsize = len(opt)
    subtype = opt[2] >> 4
    parse = _PARSERS.get(subtype)
    if parse is None:
        return None
    return parse(opt, opsize, tcp_flags, payload_len)


def _parse_mp_capable(opt, opsize, tcp_flags, payload_len):
    # RFC 8684 §3.1; Linux accepts only the exact length the context implies.
    version = opt[2] & MPTCP_VERSION_MASK
    if tcp_flags & SYN and not tcp_flags & ACK:
        if version >= 1:
            # v1 SYN carries no key; be gentle with future versions on the initial SYN
            # (reported as received: the caller answers with the version it speaks).
            expected = (TCPOLEN_MPTCP_MPC_SYN,)
        else:
            expected = (TCPOLEN_MPTCP_MPC_SYNACK,)  # v0 SYN: the sender's key (RFC 6824)
    elif tcp_flags & SYN:
        if version > 1:
            return None
        expected = (TCPOLEN_MPTCP_MPC_SYNACK,)
    else:
        if version > 1:
            return None
        if version == 1 and payload_len > 0:
            # first data segment(s): data-level length, optionally the DSS checksum
            expected = (TCPOLEN_MPTCP_MPC_ACK_DATA, TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM)
        else:
            expected = (TCPOLEN_MPTCP_MPC_ACK,)
    if opsize not in expected:
        return None
    flags = opt[3]
    if flags & MPTCP_CAP_FLAG_MASK != MPTCP_CAP_HMAC_SHA256 or flags & MPTCP_CAP_EXTENSIBILITY:
        return None
    return MpCapable(
        version=version,
        flags=flags,
        sndr_key=_be(opt, 4, 8) if opsize >= 12 else None,
        rcvr_key=_be(opt, 12, 8) if opsize >= 20 else None,
        data_len=_be(opt, 20, 2) if opsize >= 22 else None,
        csum=_be(opt, 22, 2) if opsize >= 24 else None,
    )


def _parse_mp_join(opt, opsize, tcp_flags, payload_len):
    # RFC 8684 §3.2: the form is told by the length alone.
    if opsize == TCPOLEN_MPTCP_MPJ_SYN:
        return MpJoinSyn(
            backup=bool(opt[2] & MPTCPOPT_BACKUP), addr_id=opt[3], token=_be(opt, 4, 4), nonce=_be(opt, 8, 4)
        )
    if opsize == TCPOLEN_MPTCP_MPJ_SYNACK:
        return MpJoinSynAck(
            backup=bool(opt[2] & MPTCPOPT_BACKUP), addr_id=opt[3], hmac=bytes(opt[4:12]), nonce=_be(opt, 12, 4)
        )
    if opsize == TCPOLEN_MPTCP_MPJ_ACK:
        return MpJoinAck(hmac=bytes(opt[4:24]))
    return None


def _dss_expected_size(flags: int) -> int:
    """DSS length implied by its flags, without the optional checksum (RFC 8684 §3.3)."""
    size = TCPOLEN_MPTCP_DSS_BASE
    if flags & MPTCP_DSS_HAS_ACK:
        size += TCPOLEN_MPTCP_DSS_ACK64 if flags & MPTCP_DSS_ACK64 else TCPOLEN_MPTCP_DSS_ACK32
    if flags & MPTCP_DSS_HAS_MAP:
        size += TCPOLEN_MPTCP_DSS_MAP64 if flags & MPTCP_DSS_DSN64 else TCPOLEN_MPTCP_DSS_MAP32
    return size


def _parse_dss(opt, opsize, tcp_flags, payload_len):
    # RFC 8684 §3.3. Linux parses any checksum presence (it enforces the negotiated
    # checksum later): expected or expected + 2; the 2 extra bytes without a mapping are
    # accepted and carry nothing.
    if opsize < 4:
        return None
    flags = opt[3] & MPTCP_DSS_FLAG_MASK
    expected = _dss_expected_size(flags)
    if opsize not in (expected, expected + TCPOLEN_MPTCP_DSS_CHECKSUM):
        return None
    ack64 = bool(flags & MPTCP_DSS_ACK64)
    dsn64 = bool(flags & MPTCP_DSS_DSN64)
    i = 4
    data_ack = data_seq = subflow_seq = data_len = csum = None
    if flags & MPTCP_DSS_HAS_ACK:
        width = 8 if ack64 else 4
        data_ack = _be(opt, i, width)
        i += width
    if flags & MPTCP_DSS_HAS_MAP:
        width = 8 if dsn64 else 4
        data_seq = _be(opt, i, width)
        subflow_seq = _be(opt, i + width, 4)
        data_len = _be(opt, i + width + 4, 2)
        i += width + 6
        if opsize == expected + TCPOLEN_MPTCP_DSS_CHECKSUM:
            csum = _be(opt, i, 2)
    return Dss(
        data_ack=data_ack,
        ack64=ack64,
        data_seq=data_seq,
        dsn64=dsn64,
        subflow_seq=subflow_seq,
        data_len=data_len,
        csum=csum,
        data_fin=bool(flags & MPTCP_DSS_DATA_FIN),
    )


# ADD_ADDR lengths -> (address length, has port), by echo (RFC 8684 §3.4.1)
_ADD_ADDR_FORMS = {
    False: {
        TCPOLEN_MPTCP_ADD_ADDR: (4, False),
        TCPOLEN_MPTCP_ADD_ADDR_PORT: (4, True),
        TCPOLEN_MPTCP_ADD_ADDR6: (16, False),
        TCPOLEN_MPTCP_ADD_ADDR6_PORT: (16, True),
    },
    True: {
        TCPOLEN_MPTCP_ADD_ADDR_BASE: (4, False),
        TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT: (4, True),
        TCPOLEN_MPTCP_ADD_ADDR6_BASE: (16, False),
        TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT: (16, True),
    },
}


def _parse_add_addr(opt, opsize, tcp_flags, payload_len):
    echo = bool(opt[2] & MPTCP_ADDR_ECHO)
    form = _ADD_ADDR_FORMS[echo].get(opsize)
    if form is None:
        return None
    addr_len, has_port = form
    i = 4 + addr_len
    port = _be(opt, i, 2) if has_port else None
    if has_port:
        i += TCPOLEN_MPTCP_PORT_LEN
    return AddAddr(
        echo=echo,
        addr_id=opt[3],
        addr=bytes(opt[4 : 4 + addr_len]),
        port=port,
        hmac=None if echo else bytes(opt[i : i + TCPOLEN_MPTCP_ADD_ADDR_HMAC]),
    )


def _parse_rm_addr(opt, opsize, tcp_flags, payload_len):
    # RFC 8684 §3.4.2
    if not TCPOLEN_MPTCP_RM_ADDR_BASE + 1 <= opsize <= TCPOLEN_MPTCP_RM_ADDR_BASE + MPTCP_RM_IDS_MAX:
        return None
    return RemoveAddr(addr_ids=tuple(opt[TCPOLEN_MPTCP_RM_ADDR_BASE:opsize]))


def _parse_mp_prio(opt, opsize, tcp_flags, payload_len):
    if opsize != TCPOLEN_MPTCP_PRIO:
        return None
    return MpPrio(backup=bool(opt[2] & MPTCP_PRIO_BKUP))


def _parse_mp_fail(opt, opsize, tcp_flags, payload_len):
    if opsize != TCPOLEN_MPTCP_FAIL:
        return None
    return MpFail(data_seq=_be(opt, 4, 8))


def _parse_mp_fastclose(opt, opsize, tcp_flags, payload_len):
    if opsize != TCPOLEN_MPTCP_FASTCLOSE:
        return None
    return MpFastclose(rcvr_key=_be(opt, 4, 8))


def _parse_mp_tcprst(opt, opsize, tcp_flags, payload_len):
    # RFC 8684 §3.6: only meaningful on a RST
    if opsize != TCPOLEN_MPTCP_RST or not tcp_flags & RST:
        return None
    return MpTcpRst(transient=bool(opt[2] & MPTCP_RST_TRANSIENT), reason=opt[3])


_PARSERS = {
    MPTCPOPT_MP_CAPABLE: _parse_mp_capable,
    MPTCPOPT_MP_JOIN: _parse_mp_join,
    MPTCPOPT_DSS: _parse_dss,
    MPTCPOPT_ADD_ADDR: _parse_add_addr,
    MPTCPOPT_RM_ADDR: _parse_rm_addr,
    MPTCPOPT_MP_PRIO: _parse_mp_prio,
    MPTCPOPT_MP_FAIL: _parse_mp_fail,
    MPTCPOPT_MP_FASTCLOSE: _parse_mp_fastclose,
    MPTCPOPT_MP_TCPRST: _parse_mp_tcprst,
}


# --- building -----------------------------------------------------------------------------------


def _u(what: str, value, maximum: int) -> int:
    """`value` checked to be an int in 0..maximum, else `WireError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise WireError(f"{what} {value!r} out of range 0..{maximum:#x}")
    return value


def _bytes_of(what: str, value, length: int) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != length:
        raise WireError(f"{what} must be {length} bytes")
    return bytes(value)


def _option(subtype_byte: int, body: bytes) -> bytes:
    """kind 30, length, subtype/flags byte, then the body."""
    return bytes((TCPOPT_MPTCP, 3 + len(body), subtype_byte)) + body


def _build_mp_capable(o: MpCapable) -> bytes:
    # RFC 8684 §3.1: the fields present decide the length (4, 12, 20, 22, 24).
    body = bytes((_u("flags", o.flags, U8),))
    if o.sndr_key is not None:
        body += struct.pack("!Q", _u("sndr_key", o.sndr_key, U64))
    if o.rcvr_key is not None:
        if o.sndr_key is None:
            raise WireError("MP_CAPABLE rcvr_key needs sndr_key")
        body += struct.pack("!Q", _u("rcvr_key", o.rcvr_key, U64))
    if o.data_len is not None:
        if o.rcvr_key is None:
            raise WireError("MP_CAPABLE data_len needs both keys")
        body += struct.pack("!H", _u("data_len", o.data_len, U16))
    if o.csum is not None:
        if o.data_len is None:
            raise WireError("MP_CAPABLE csum needs data_len")
        body += struct.pack("!H", _u("csum", o.csum, U16))
    return _option(MPTCPOPT_MP_CAPABLE << 4 | _u("version", o.version, MPTCP_VERSION_MASK), body)


def _build_mp_join_syn(o: MpJoinSyn) -> bytes:
    body = bytes((_u("addr_id", o.addr_id, U8),)) + struct.pack(
        "!II", _u("token", o.token, U32), _u("nonce", o.nonce, U32)
    )
    return _option(MPTCPOPT_MP_JOIN << 4 | (MPTCPOPT_BACKUP if o.backup else 0), body)


def _build_mp_join_synack(o: MpJoinSynAck) -> bytes:
    body = (
        bytes((_u("addr_id", o.addr_id, U8),))
        + _bytes_of("MP_JOIN SYN/ACK hmac", o.hmac, TCPOLEN_MPTCP_MPJ_SYNACK_HMAC)
        + struct.pack("!I", _u("nonce", o.nonce, U32))
    )
    return _option(MPTCPOPT_MP_JOIN << 4 | (MPTCPOPT_BACKUP if o.backup else 0), body)


def _build_mp_join_ack(o: MpJoinAck) -> bytes:
    return _option(MPTCPOPT_MP_JOIN << 4, b"\x00" + _bytes_of("MP_JOIN ACK hmac", o.hmac, TCPOLEN_MPTCP_MPJ_ACK_HMAC))


def _build_dss(o: Dss) -> bytes:
    # RFC 8684 §3.3: DATA_ACK (4/8), then the mapping DSN (4/8), subflow seq, data-level
    # length, [checksum]. The a/m width bits are written only with A/M (as Linux does).
    flags = MPTCP_DSS_DATA_FIN if o.data_fin else 0
    body = b""
    if o.data_ack is not None:
        flags |= MPTCP_DSS_HAS_ACK
        if o.ack64:
            flags |= MPTCP_DSS_ACK64
            body += struct.pack("!Q", _u("data_ack", o.data_ack, U64))
        else:
            body += struct.pack("!I", _u("data_ack", o.data_ack, U32))
    mapping = (o.data_seq, o.subflow_seq, o.data_len)
    if any(v is not None for v in mapping):
        if any(v is None for v in mapping):
            raise WireError("a DSS mapping needs data_seq, subflow_seq and data_len together")
        flags |= MPTCP_DSS_HAS_MAP
        if o.dsn64:
            flags |= MPTCP_DSS_DSN64
            body += struct.pack("!Q", _u("data_seq", o.data_seq, U64))
        else:
            body += struct.pack("!I", _u("data_seq", o.data_seq, U32))
        body += struct.pack("!IH", _u("subflow_seq", o.subflow_seq, U32), _u("data_len", o.data_len, U16))
        if o.csum is not None:
            body += struct.pack("!H", _u("csum", o.csum, U16))
    return _option(MPTCPOPT_DSS << 4, bytes((flags,)) + body)


def _build_add_addr(o: AddAddr) -> bytes:
    # RFC 8684 §3.4.1: the HMAC is present exactly when it is not an echo.
    if not isinstance(o.addr, (bytes, bytearray, memoryview)) or len(o.addr) not in (4, 16):
        raise WireError("ADD_ADDR address must be 4 or 16 bytes")
    body = bytes((_u("addr_id", o.addr_id, U8),)) + bytes(o.addr)
    if o.port is not None:
        body += struct.pack("!H", _u("port", o.port, U16))
    if o.echo:
        if o.hmac is not None:
            raise WireError("an ADD_ADDR echo carries no HMAC")
    else:
        body += _bytes_of("ADD_ADDR hmac", o.hmac, TCPOLEN_MPTCP_ADD_ADDR_HMAC)
    return _option(MPTCPOPT_ADD_ADDR << 4 | (MPTCP_ADDR_ECHO if o.echo else 0), body)


def _build_rm_addr(o: RemoveAddr) -> bytes:
    ids = tuple(o.addr_ids)
    if not 1 <= len(ids) <= MPTCP_RM_IDS_MAX:
        raise WireError("REMOVE_ADDR carries 1 to 8 address ids")
    return _option(MPTCPOPT_RM_ADDR << 4, bytes(_u("addr_id", i, U8) for i in ids))


def _build_mp_prio(o: MpPrio) -> bytes:
    return _option(MPTCPOPT_MP_PRIO << 4 | (MPTCP_PRIO_BKUP if o.backup else 0), b"")


def _build_mp_fail(o: MpFail) -> bytes:
    return _option(MPTCPOPT_MP_FAIL << 4, b"\x00" + struct.pack("!Q", _u("data_seq", o.data_seq, U64)))


def _build_mp_fastclose(o: MpFastclose) -> bytes:
    return _option(MPTCPOPT_MP_FASTCLOSE << 4, b"\x00" + struct.pack("!Q", _u("rcvr_key", o.rcvr_key, U64)))


def _build_mp_tcprst(o: MpTcpRst) -> bytes:
    return _option(
        MPTCPOPT_MP_TCPRST << 4 | (MPTCP_RST_TRANSIENT if o.transient else 0), bytes((_u("reason", o.reason, U8),))
    )


# option class -> (subtype, builder)
_BUILDERS = {
    MpCapable: (MPTCPOPT_MP_CAPABLE, _build_mp_capable),
    MpJoinSyn: (MPTCPOPT_MP_JOIN, _build_mp_join_syn),
    MpJoinSynAck: (MPTCPOPT_MP_JOIN, _build_mp_join_synack),
    MpJoinAck: (MPTCPOPT_MP_JOIN, _build_mp_join_ack),
    Dss: (MPTCPOPT_DSS, _build_dss),
    AddAddr: (MPTCPOPT_ADD_ADDR, _build_add_addr),
    RemoveAddr: (MPTCPOPT_RM_ADDR, _build_rm_addr),
    MpPrio: (MPTCPOPT_MP_PRIO, _build_mp_prio),
    MpFail: (MPTCPOPT_MP_FAIL, _build_mp_fail),
    MpFastclose: (MPTCPOPT_MP_FASTCLOSE, _build_mp_fastclose),
    MpTcpRst: (MPTCPOPT_MP_TCPRST, _build_mp_tcprst),
}


def _builder_of(option):
    entry = _BUILDERS.get(type(option))
    if entry is None:
        raise WireError(f"not an MPTCP option value: {option!r}")
    return entry


def build_mptcp(option) -> bytes:
    """One MPTCP option, with the exact length its fields imply; `WireError` for values out
    of range or field combinations no length can carry. Reserved bits are 0."""
    _, build = _builder_of(option)
    return build(option)


def build_options(tcp: bytes = b"", mptcp: Sequence = ()) -> bytes:
    """The whole TCP option area: `tcp` (already encoded, see `encode_tcp_options`), then
    the MPTCP options in the order given, NOP-padded to a multiple of 4.

    `WireError` when the MPTCP options break `OPTION_COMBINATIONS` (at most one per subtype,
    only allowed companions) or the result exceeds 40 bytes.
    """
    subtypes: list[int] = []
    encoded = [bytes(tcp)]
    for option in mptcp:
        subtype, build = _builder_of(option)
        if subtype in subtypes:
            raise WireError(f"two MPTCP options of subtype {subtype} in one segment")
        for other in subtypes:
            if other not in OPTION_COMBINATIONS[subtype]:
                raise WireError(f"MPTCP subtypes {other} and {subtype} cannot share a segment")
        subtypes.append(subtype)
        encoded.append(build(option))
    area = nop_pad(b"".join(encoded))
    if len(area) > TCP_MAX_OPTLEN:
        raise WireError(f"TCP options of {len(area)} bytes (> 40)")
    return area


def add_dss(
    buf: bytes,
    pkt,
    ack: int = -1,
    data_ack: int | None = None,
    ack64: bool = False,
    data_seq: int | None = None,
    dsn64: bool = False,
    subflow_seq: int | None = None,
    data_len: int | None = None,
    csum: int | None = None,
    data_fin: bool = False,
) -> bytes | None:
    """The segment with its MPTCP options replaced by one DSS (the fields and defaults of
    `Dss`), its other options kept byte for byte, and its TCP `ack` set (-1: unchanged).
    One step for the converter's per-packet path (guest -> server), without a `Dss` value:

        rewrite(buf, pkt, ack=ack, options=build_options(
            strip_mptcp(buf, pkt.ip_hlen + TCP_HLEN, pkt.payload_off), (Dss(...),)))

    except that options which do not fit in 40 bytes give None (the caller decides what to
    drop) instead of `WireError`. `WireError` for DSS fields `build_mptcp` refuses, and for
    what `rewrite` refuses.
    """
    dss = Dss(data_ack, ack64, data_seq, dsn64, subflow_seq, data_len, csum, data_fin)
    size = len(build_mptcp(dss))
    tcp = strip_mptcp(buf, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)
    if len(tcp) + size > TCP_MAX_OPTLEN:
        return None
    return rewrite(buf, pkt, ack=ack, options=build_options(tcp, (dss,)))


def mptcp_options(buf: bytes, pkt) -> tuple:
    """Every MPTCP option of a parsed segment, in order, each parsed (None when malformed).
    One step for the converter's per-packet path (server -> guest):

        tuple(parse_mptcp(raw, pkt.flags, pkt.payload_len) for raw in options_of(buf, pkt).mptcp)
    """
    return tuple(parse_mptcp(raw, pkt.flags, pkt.payload_len) for raw in options_of(buf, pkt).mptcp)
