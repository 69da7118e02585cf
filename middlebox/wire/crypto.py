"""MPTCP keys, tokens, IDSNs and HMACs (RFC 8684 §3.1, §3.2, §3.4.1; v0: RFC 6824).

Reference only (no Cython twin): hashlib/hmac do the work. Keys are 64-bit and nonces
32-bit unsigned ints, serialised big-endian (network order) wherever they are hashed.
Version 1 (RFC 8684) uses SHA-256 / HMAC-SHA256, version 0 (RFC 6824) SHA-1 / HMAC-SHA1.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from middlebox.wire.errors import WireError

MPTCP_VERSION_0 = 0  # RFC 6824
MPTCP_VERSION_1 = 1  # RFC 8684

ADD_ADDR_HMAC_LEN = 8  # RFC 8684 §3.4.1: rightmost 64 bits


def _digest(version: int) -> str:
    if version == MPTCP_VERSION_1:
        return "sha256"
    if version == MPTCP_VERSION_0:
        return "sha1"
    raise WireError(f"MPTCP version {version} (0 or 1)")


def _key_bytes(key: int) -> bytes:
    if not 0 <= key <= 0xFFFFFFFFFFFFFFFF:
        raise WireError(f"key {key:#x} is not 64-bit unsigned")
    return struct.pack("!Q", key)


def _nonce_bytes(nonce: int) -> bytes:
    if not 0 <= nonce <= 0xFFFFFFFF:
        raise WireError(f"nonce {nonce:#x} is not 32-bit unsigned")
    return struct.pack("!I", nonce)


def new_key() -> int:
    """A fresh random 64-bit key, never 0 (RFC 8684 §3.1: keys are random and unique)."""
    while True:
        key = secrets.randbits(64)
        if key:
            return key


def new_nonce() -> int:
    """A fresh random 32-bit nonce for MP_JOIN (RFC 8684 §3.2)."""
    return secrets.randbits(32)


def key_token(key: int, version: int = 1) -> int:
    """The connection token: the most significant 32 bits of the key's hash (RFC 8684 §3.2)."""
    d = hashlib.new(_digest(version), _key_bytes(key)).digest()
    return int.from_bytes(d[0:4], "big")


def key_idsn(key: int, version: int = 1) -> int:
    """The initial data sequence number: the least significant 64 bits of the key's hash
    (RFC 8684 §3.1; v0: SHA-1, bytes 12..20)."""
    d = hashlib.new(_digest(version), _key_bytes(key)).digest()
    return int.from_bytes(d[-8:], "big")


def join_hmac(key_a: int, key_b: int, nonce_a: int, nonce_b: int, version: int = 1) -> bytes:
    """HMAC(key_a || key_b, nonce_a || nonce_b), full length (32 bytes v1, 20 bytes v0).

    RFC 8684 §3.2: the SYN/ACK sender B sends `join_hmac(kB, kA, nB, nA)[:8]`, the ACK sender
    A sends `join_hmac(kA, kB, nA, nB)[:20]`.
    """
    return hmac.new(
        _key_bytes(key_a) + _key_bytes(key_b),
        _nonce_bytes(nonce_a) + _nonce_bytes(nonce_b),
        _digest(version),
    ).digest()


def add_addr_hmac(sndr_key: int, rcvr_key: int, addr_id: int, addr: bytes, port: int | None) -> bytes:
    """The ADD_ADDR truncated HMAC (RFC 8684 §3.4.1): rightmost 64 bits of
    HMAC-SHA256(sndr_key || rcvr_key, addr_id || addr || port), port 0 when absent."""
    if not 0 <= addr_id <= 0xFF:
        raise WireError(f"address id {addr_id} out of range")
    if len(addr) not in (4, 16):
        raise WireError("address must be 4 or 16 bytes")
    if port is not None and not 0 <= port <= 0xFFFF:
        raise WireError(f"port {port} out of range")
    msg = bytes((addr_id,)) + bytes(addr) + struct.pack("!H", port or 0)
    d = hmac.new(_key_bytes(sndr_key) + _key_bytes(rcvr_key), msg, "sha256").digest()
    return d[-ADD_ADDR_HMAC_LEN:]
