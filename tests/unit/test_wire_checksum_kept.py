"""A router keeps a bad TCP checksum bad (docs/wire-api.md, "Rewriting and checksums").

`rewrite` (with or without new options), `add_dss` and `without_mptcp` update the TCP
checksum incrementally from the segment's own field (RFC 1624 eqn. 3) instead of recomputing
it: a segment that arrived valid leaves valid, with the very bytes a full recompute gives; a
segment that arrived corrupted (wrong checksum field, or a payload byte changed on the way)
leaves with a checksum wrong by exactly the same one's-complement error, so the receiver
still drops it. Everything comes from `middlebox.wire`, so this suite tests whichever
implementation is active (it runs with and without MIDDLEBOX_PURE_PYTHON=1). Valid segments
are built here with an independent checksum (plain RFC 1071 sum), not with the code under test.
"""

import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from middlebox.wire import (
    Dss,
    MpCapable,
    add_dss,
    build_mptcp,
    encode_tcp_options,
    ones_sum,
    parse_packet,
    rewrite,
    tcp_checksum,
    without_mptcp,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def _sum(data: bytes) -> int:
    """RFC 1071 folded sum, the oracle (independent of the code under test)."""
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _pseudo(version: int, src: bytes, dst: bytes, tcp_len: int) -> bytes:
    if version == 4:
        return src + dst + struct.pack("!BBH", 0, 6, tcp_len)
    return src + dst + struct.pack("!I3xB", tcp_len, 6)


def field(buf: bytes, pkt) -> int:
    return struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0]


def residual(buf: bytes) -> int:
    """The folded sum of pseudo-header + whole segment, checksum field included (oracle):
    0xffff when the checksum verifies (as Linux checks it), the error otherwise."""
    pkt = parse_packet(buf)
    return _sum(_pseudo(pkt.version, pkt.src, pkt.dst, pkt.length - pkt.ip_hlen) + buf[pkt.ip_hlen : pkt.length])


def verifies(buf: bytes) -> bool:
    return residual(buf) == 0xFFFF


OPTION_PIECES = st.sampled_from([
    encode_tcp_options(mss=1460, sack_perm=True, ts_val=7, ts_ecr=0, wscale=7),
    encode_tcp_options(ts_val=0x8E0B3A52, ts_ecr=0x1C2D0F33),
    encode_tcp_options(sack=((1, 2), (3, 4))),
    build_mptcp(MpCapable(version=1, flags=0x81, sndr_key=0x1122334455667788)),
    build_mptcp(Dss(data_ack=0x1D1E1F2021222324, ack64=True)),
    build_mptcp(Dss(data_ack=5, data_seq=9, subflow_seq=1, data_len=100, csum=0xBEEF)),
    bytes((1,)),
    bytes((30, 3, 0x50)),  # MP_PRIO, 3 bytes: odd
    bytes((0x99, 5, 1, 2, 3)),  # unknown kind, odd length
])


@st.composite
def option_area(draw):
    area = b"".join(draw(st.lists(OPTION_PIECES, max_size=3)))[:40]
    return area + b"\x00" * (-len(area) % 4)


@st.composite
def valid_segment(draw, version=None, min_payload=0):
    """A well-formed IPv4/IPv6 TCP segment with correct IP and TCP checksums: IPv4 options,
    odd payload lengths, reserved bits, trailing bytes past the IP length."""
    if version is None:
        version = draw(st.sampled_from([4, 6]))
    opts = draw(option_area())
    payload = draw(st.one_of(
        st.binary(min_size=min_payload, max_size=80),
        st.integers(max(min_payload, 0), 1460).map(lambda n: bytes((i * 7 + 3) & 0xFF for i in range(n))),
    ))
    doff = 20 + len(opts)
    tcp = bytearray(struct.pack(
        "!HHIIBBHHH", draw(u16), draw(u16), draw(u32), draw(u32),
        (doff // 4) << 4 | draw(st.integers(0, 15)), draw(st.integers(0, 0xFF)), draw(u16), 0, draw(u16),
    ) + opts + payload)
    if version == 4:
        src, dst = draw(st.binary(min_size=4, max_size=4)), draw(st.binary(min_size=4, max_size=4))
        ip_opts = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2]))
        ihl = 20 + len(ip_opts)
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + len(tcp), draw(u16), 0x4000,
                                   draw(st.integers(1, 255)), 6, 0, src, dst) + ip_opts)
        struct.pack_into("!H", ip, 10, ~_sum(bytes(ip)) & 0xFFFF)
    else:
        src, dst = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16))
        ip = bytearray(struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, draw(st.integers(1, 255)), src, dst))
    struct.pack_into("!H", tcp, 16, ~_sum(_pseudo(version, src, dst, len(tcp)) + bytes(tcp)) & 0xFFFF)
    buf = bytes(ip + tcp)
    assert verifies(buf)
    return buf + draw(st.sampled_from([b"", b"\x00", b"trailing junk"]))


rewrite_kw = st.fixed_dictionaries({}, optional={
    "seq": u32,
    "ack": u32,
    "window": u16,
    "flags": st.integers(0, 0xFF),
    "options": st.one_of(st.none(), option_area(), st.binary(max_size=40)),
})

dss_kw = st.sampled_from([
    dict(ack=77, data_ack=0x1D1E1F2021222324, ack64=True),
    dict(data_ack=5, data_seq=0xF5A101D3D29D6F72, dsn64=True, subflow_seq=1, data_len=1448, csum=0x1234),
    dict(ack=1, data_ack=9, data_seq=10, subflow_seq=11, data_len=12, data_fin=True),
])

OPERATIONS = ("rewrite", "add_dss", "without_mptcp")


def operate(name: str, buf: bytes, pkt, data):
    """One of the converter's rewriting steps on buf, with drawn arguments; None when the
    options do not fit (add_dss) or the rewrite is impossible."""
    if name == "rewrite":
        return rewrite(buf, pkt, **data.draw(rewrite_kw))
    if name == "add_dss":
        return add_dss(buf, pkt, **data.draw(dss_kw))
    return without_mptcp(buf, pkt, ack=data.draw(st.one_of(st.just(-1), u32)),
                         flags=data.draw(st.one_of(st.just(-1), st.integers(0, 0xFF))))


@SETTINGS
@given(valid_segment(), st.sampled_from(OPERATIONS), st.data())
def test_valid_segments_leave_valid(buf, name, data):
    pkt = parse_packet(buf)
    out = operate(name, buf, pkt, data)
    assume(out is not None)
    new = parse_packet(out)
    assert tcp_checksum(out, new) == field(out, new)
    assert verifies(out)


@SETTINGS
@given(valid_segment(), rewrite_kw)
def test_incremental_equals_full_recompute_for_valid_segments(buf, kw):
    """Byte for byte what the full recompute (today's behaviour for new options) gives."""
    pkt = parse_packet(buf)
    out = rewrite(buf, pkt, **kw)
    assert out == rewrite(buf, pkt, full_checksum=True, **kw)
    new = parse_packet(out)
    assert field(out, new) == tcp_checksum(out, new)


def _corrupt_field(buf: bytes, pkt, data) -> bytes:
    """buf with a checksum field that does not verify (not the right value, nor its other
    one's-complement zero: 0x0000 and 0xffff are the same number and Linux accepts both)."""
    right = tcp_checksum(buf, pkt)
    bad = data.draw(u16.filter(lambda v: v != right and {v, right} != {0, 0xFFFF}), label="bad checksum")
    out = bytearray(buf)
    struct.pack_into("!H", out, pkt.ip_hlen + 16, bad)
    return bytes(out)


def _corrupt_payload(buf: bytes, pkt, data) -> bytes:
    i = data.draw(st.integers(pkt.payload_off, pkt.length - 1), label="corrupted byte")
    flip = data.draw(st.integers(1, 0xFF), label="xor")
    out = bytearray(buf)
    out[i] ^= flip
    return bytes(out)


@SETTINGS
@given(st.sampled_from([4, 6]), st.sampled_from(OPERATIONS), st.booleans(), st.data())
def test_corrupted_segments_leave_corrupted_by_the_same_error(version, name, in_payload, data):
    buf = data.draw(valid_segment(version=version, min_payload=1 if in_payload else 0), label="segment")
    pkt = parse_packet(buf)
    bad = (_corrupt_payload if in_payload else _corrupt_field)(buf, pkt, data)
    assert not verifies(bad)
    out = operate(name, bad, pkt, data)
    assume(out is not None)
    new = parse_packet(out)
    assert tcp_checksum(out, new) != field(out, new)
    assert residual(out) == residual(bad)  # the same error: the receiver sees what we saw


def test_one_corrupted_bit_in_each_version_and_operation():
    """The bug as reported: one flipped payload bit used to leave with a fresh checksum."""
    for version in (4, 6):
        buf = _fixed(version)
        pkt = parse_packet(buf)
        bad = buf[:-1] + bytes((buf[-1] ^ 0x01,))
        for out in (rewrite(bad, pkt, options=b""), rewrite(bad, pkt, ack=1, options=b"\x01\x01\x08\x0a" + bytes(8)),
                    add_dss(bad, pkt, data_ack=5), without_mptcp(bad, pkt), rewrite(bad, pkt, ack=1)):
            new = parse_packet(out)
            assert tcp_checksum(out, new) != field(out, new)
            assert residual(out) == residual(bad) != 0xFFFF


def _fixed(version: int, window: int = 501, payload: bytes = b"hello, world") -> bytes:
    opts = encode_tcp_options(ts_val=1, ts_ecr=2) + build_mptcp(Dss(data_ack=3))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 443, 1000, 2000, ((20 + len(opts)) // 4) << 4, 0x18,
                                window, 0, 0) + opts + payload)
    if version == 4:
        src, dst = bytes((10, 0, 0, 1)), bytes((10, 1, 1, 2))
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst))
        struct.pack_into("!H", ip, 10, ~_sum(bytes(ip)) & 0xFFFF)
    else:
        src, dst = bytes(15) + b"\x01", bytes(15) + b"\x02"
        ip = bytearray(struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst))
    struct.pack_into("!H", tcp, 16, ~_sum(_pseudo(version, src, dst, len(tcp)) + bytes(tcp)) & 0xFFFF)
    return bytes(ip + tcp)


def test_the_other_zero_is_a_valid_checksum():
    """0xffff and 0x0000 are the same one's-complement number: a sender may write either
    where the computed checksum is 0 (Linux accepts both). The incremental update treats the
    field as that number: the result is the full recompute's, a valid checksum."""
    for version in (4, 6):
        probe = _fixed(version, window=0)
        pkt = parse_packet(probe)
        # choose the window so that the checksum comes out as 0
        window = ~_sum(_pseudo(version, pkt.src, pkt.dst, pkt.length - pkt.ip_hlen)
                       + probe[pkt.ip_hlen : pkt.ip_hlen + 16] + probe[pkt.ip_hlen + 18 : pkt.length]) & 0xFFFF
        buf = _fixed(version, window=window)
        pkt = parse_packet(buf)
        assert field(buf, pkt) == 0 == tcp_checksum(buf, pkt)
        minus_zero = bytearray(buf)
        struct.pack_into("!H", minus_zero, pkt.ip_hlen + 16, 0xFFFF)
        minus_zero = bytes(minus_zero)
        assert verifies(minus_zero)
        for kw in ({"options": b""}, {"ack": 7, "options": b"\x01\x01\x08\x0a" + bytes(8)}, {"seq": 9}):
            out = rewrite(minus_zero, pkt, **kw)
            assert verifies(out)
            assert out == rewrite(buf, pkt, **kw) == rewrite(buf, pkt, full_checksum=True, **kw)


@SETTINGS
@given(valid_segment(), st.one_of(option_area(), st.binary(max_size=40)))
def test_payload_words_keep_their_parity(buf, options):
    """Why the payload can be left out of the update: the checksum sums 16-bit words from the
    TCP header's start, and the header length (old and new) is a multiple of 4, so every
    payload byte keeps its position within its word. The payload's sum, counted from where
    the header ends, is the same before and after; and a segment's sum is its header's plus
    its payload's. (Were the payload to move by an odd number of bytes, its sum would come
    out byte-swapped: that is what the padding to 4 prevents.)"""
    pkt = parse_packet(buf)
    out = rewrite(buf, pkt, options=options)
    new = parse_packet(out)
    for p in (pkt, new):
        assert (p.payload_off - p.ip_hlen) % 4 == 0
    assert out[new.payload_off : new.length] == buf[pkt.payload_off : pkt.length]
    assert ones_sum(out, new.payload_off, new.length) == ones_sum(buf, pkt.payload_off, pkt.length)
    for b, p in ((buf, pkt), (out, new)):
        whole = ones_sum(b, p.ip_hlen, p.length)
        split = ones_sum(b, p.ip_hlen, p.payload_off) + ones_sum(b, p.payload_off, p.length)
        assert whole == (split & 0xFFFF) + (split >> 16)
    payload = buf[pkt.payload_off : pkt.length]
    if len(payload) >= 2:  # the counterfactual: one byte of shift swaps the bytes of the sum
        s = ones_sum(payload)
        assert ones_sum(b"\x00" + payload) == ((s & 0xFF) << 8 | s >> 8)


def test_full_checksum_builds_from_scratch():
    """A segment the caller assembled with checksum fields of 0 (as the converter builds the
    segments it injects): `full_checksum=True` computes both; the default, an update of a
    field that is not a checksum, does not give a valid one."""
    for version in (4, 6):
        if version == 4:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)))
        else:
            ip = struct.pack("!IHBB16s16s", 0x60000000, 20, 6, 64, bytes(15) + b"\x01", bytes(15) + b"\x02")
        bare = ip + struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 5 << 4, 0x14, 0, 0, 0)
        opts = build_mptcp(Dss(data_ack=3))
        built = rewrite(bare, parse_packet(bare), options=opts, full_checksum=True)
        assert verifies(built)
        if version == 4:
            assert _sum(built[:20]) == 0xFFFF
        assert not verifies(rewrite(bare, parse_packet(bare), options=opts))
        assert verifies(rewrite(bare, parse_packet(bare), ack=9, full_checksum=True))
