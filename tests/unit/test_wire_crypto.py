"""Keys, tokens, IDSNs and HMACs (RFC 8684 §3.1, §3.2, §3.4.1) against PROTOCOL.md vectors."""

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlebox.wire import (
    WireError,
    add_addr_hmac,
    join_hmac,
    key_idsn,
    key_token,
    new_key,
    new_nonce,
)
from tests.unit import vectors as v

keys = st.integers(0, 2**64 - 1)
nonces = st.integers(0, 2**32 - 1)


def test_token_and_idsn_vectors_v1():
    assert key_token(v.KEY_A) == v.KEY_A_TOKEN_V1
    assert key_idsn(v.KEY_A) == v.KEY_A_IDSN_V1
    assert key_token(v.KEY_B) == v.KEY_B_TOKEN_V1
    assert key_token(v.KEY_A, version=1) == v.KEY_A_TOKEN_V1


def test_token_and_idsn_v0_use_sha1():
    # RFC 6824 §3.1: SHA-1 of the key; token = most significant 32 bits, IDSN = least
    # significant 64 bits (bytes 12..20 of the 20-byte digest).
    d = hashlib.sha1(v.KEY_A.to_bytes(8, "big")).digest()
    assert key_token(v.KEY_A, version=0) == int.from_bytes(d[0:4], "big")
    assert key_idsn(v.KEY_A, version=0) == int.from_bytes(d[12:20], "big")
    assert key_token(v.KEY_A, version=0) != v.KEY_A_TOKEN_V1


def test_join_hmac_vectors_v1():
    # SYN/ACK sender B: HMAC(kB||kA, nB||nA), leftmost 64 bits; ACK sender A: 160 bits.
    full_b = join_hmac(v.KEY_B, v.KEY_A, v.NONCE_B, v.NONCE_A)
    full_a = join_hmac(v.KEY_A, v.KEY_B, v.NONCE_A, v.NONCE_B)
    assert len(full_b) == len(full_a) == 32
    assert full_b[:8] == v.JOIN_SYNACK_HMAC_B
    assert full_a[:20] == v.JOIN_ACK_HMAC_A


def test_join_hmac_v0_is_hmac_sha1():
    full = join_hmac(v.KEY_A, v.KEY_B, v.NONCE_A, v.NONCE_B, version=0)
    assert len(full) == 20
    expected = hmac.new(
        bytes.fromhex("0102030405060708" "1112131415161718"), bytes.fromhex("a1a2a3a4" "b1b2b3b4"), "sha1"
    ).digest()
    assert full == expected


def test_add_addr_hmac_is_rightmost_64_bits():
    # RFC 8684 §3.4.1: HMAC-SHA256(sndr||rcvr, id || addr || port), rightmost 64 bits.
    addr = bytes([192, 0, 2, 1])
    msg = bytes([5]) + addr + (8080).to_bytes(2, "big")
    full = hmac.new(v.KEY_A.to_bytes(8, "big") + v.KEY_B.to_bytes(8, "big"), msg, "sha256").digest()
    assert add_addr_hmac(v.KEY_A, v.KEY_B, 5, addr, 8080) == full[-8:]


def test_add_addr_hmac_absent_port_is_zero():
    addr = bytes(range(16))
    assert add_addr_hmac(1, 2, 3, addr, None) == add_addr_hmac(1, 2, 3, addr, 0)
    assert add_addr_hmac(1, 2, 3, addr, None) != add_addr_hmac(2, 1, 3, addr, None)
    assert len(add_addr_hmac(1, 2, 3, addr, None)) == 8


def test_new_key_and_nonce_ranges():
    for _ in range(50):
        k = new_key()
        assert 0 < k < 2**64
        assert 0 <= new_nonce() < 2**32
    assert len({new_key() for _ in range(20)}) == 20


@pytest.mark.parametrize(
    "call",
    [
        lambda: key_token(-1),
        lambda: key_token(2**64),
        lambda: key_idsn(1, version=2),
        lambda: join_hmac(1, 2, 2**32, 0),
        lambda: join_hmac(1, 2, 3, 4, version=7),
        lambda: add_addr_hmac(1, 2, 256, bytes(4), None),
        lambda: add_addr_hmac(1, 2, 1, bytes(5), None),
        lambda: add_addr_hmac(1, 2, 1, bytes(4), 70000),
    ],
)
def test_impossible_requests_raise_wire_error(call):
    with pytest.raises(WireError):
        call()


@settings(max_examples=50, deadline=None)
@given(keys, keys, nonces, nonces, st.sampled_from([0, 1]))
def test_join_hmac_matches_hmac_module(ka, kb, na, nb, version):
    digest = "sha256" if version == 1 else "sha1"
    expected = hmac.new(
        ka.to_bytes(8, "big") + kb.to_bytes(8, "big"), na.to_bytes(4, "big") + nb.to_bytes(4, "big"), digest
    ).digest()
    assert join_hmac(ka, kb, na, nb, version) == expected
