"""IPv4/IPv6 + TCP parsing, option walking, rewriting and checksums (docs/wire-api.md).

scapy only builds test vectors here and gives a second opinion on checksums; the code under
test never uses it. Everything is imported from `middlebox.wire`, so this suite tests
whichever implementation is active (reference or Cython twin).
"""

import ipaddress
import socket
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, in4_chksum
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, in6_chksum
from scapy.utils import checksum
from scapy.packet import Raw

from middlebox.wire import (
    WireError,
    csum_replace,
    dss_checksum,
    encode_tcp_options,
    ipv4_checksum,
    ones_sum,
    options_of,
    packet_fields,
    parse_options,
    parse_packet,
    rewrite,
    strip_mptcp,
    tcp_checksum,
)
from tests.unit import vectors as v

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MPTCP_DSS = b"\x1e\x08\x20\x01\x00\x00\x00\x05"  # DSS with a 32-bit DATA_ACK
SCAPY_OPTIONS = [
    ("MSS", 1460),
    ("SAckOK", b""),
    ("Timestamp", (1000, 2000)),
    ("WScale", 7),
    ("SAck", (11, 22)),
    (30, MPTCP_DSS[2:]),
]


def v4(payload=b"hello", options=SCAPY_OPTIONS, **tcp):
    tcp.setdefault("flags", "PA")
    pkt = IP(src="10.0.0.1", dst="10.1.1.2", ttl=33) / TCP(
        sport=40000, dport=443, seq=0x11223344, ack=0x55667788, window=501, options=options, **tcp
    )
    return bytes(pkt / Raw(payload)) if payload else bytes(pkt)


def v6(payload=b"hello", options=SCAPY_OPTIONS, **tcp):
    tcp.setdefault("flags", "PA")
    pkt = IPv6(src="2001:db8::1", dst="2001:db8:1::2", hlim=17) / TCP(
        sport=40000, dport=443, seq=0xFFFFFFF0, ack=1, window=65535, options=options, **tcp
    )
    return bytes(pkt / Raw(payload)) if payload else bytes(pkt)


TEMPLATES = {
    "v4": v4(),
    "v6": v6(),
    "v4-odd-payload": v4(b"abc"),
    "v6-no-options-no-payload": v6(b"", options=[], flags="A"),
    "v4-ip-options": bytes(
        IP(src="192.0.2.1", dst="198.51.100.2", options=b"\x94\x04\x00\x00")  # Router Alert
        / TCP(sport=1, dport=2, flags="S", options=[("MSS", 536)])
    ),
}


def scapy_tcp_checksum_ok(buf: bytes) -> bool:
    """scapy's own view: its checksum helpers over the raw segment agree with the wire."""
    if buf[0] >> 4 == 4:
        ip = IP(buf)
        header = bytearray(buf[: ip.ihl * 4])
        header[10:12] = b"\x00\x00"
        if checksum(bytes(header)) != ip.chksum:
            return False
        segment = bytearray(buf[ip.ihl * 4 : ip.len])
        chksum = in4_chksum
    else:
        ip = IPv6(buf)
        segment = bytearray(buf[40 : 40 + ip.plen])
        chksum = in6_chksum
    wire = int.from_bytes(segment[16:18], "big")
    segment[16:18] = b"\x00\x00"
    return chksum(socket.IPPROTO_TCP, ip, bytes(segment)) == wire


# --- parse_packet ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_parse_packet_agrees_with_scapy(name):
    buf = TEMPLATES[name]
    pkt = parse_packet(buf)
    s = IP(buf) if buf[0] >> 4 == 4 else IPv6(buf)
    t = s[TCP]
    if pkt.version == 4:
        assert (pkt.ip_hlen, pkt.ttl, pkt.length) == (s.ihl * 4, s.ttl, s.len)
    else:
        assert (pkt.ip_hlen, pkt.ttl, pkt.length) == (40, s.hlim, 40 + s.plen)
    assert pkt.src == ipaddress.ip_address(s.src).packed and pkt.dst == ipaddress.ip_address(s.dst).packed
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.window) == (t.sport, t.dport, t.seq, t.ack, t.window)
    assert pkt.flags == int(t.flags)
    assert pkt.doff == t.dataofs * 4
    assert pkt.payload_off == pkt.ip_hlen + pkt.doff
    assert buf[pkt.payload_off : pkt.length] == bytes(t.payload)
    assert pkt.payload_len == len(bytes(t.payload))
    assert len(packet_fields(pkt)) == 15
    assert packet_fields(parse_packet(buf)) == packet_fields(pkt)
    assert parse_packet(buf) == pkt


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_tcp_checksum_agrees_with_scapy(name):
    buf = TEMPLATES[name]
    pkt = parse_packet(buf)
    assert tcp_checksum(buf, pkt) == struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0]
    if pkt.version == 4:
        assert ipv4_checksum(buf, pkt.ip_hlen // 4) == struct.unpack_from("!H", buf, 10)[0]


def test_trailing_bytes_past_ip_length_are_ignored():
    buf = TEMPLATES["v4"]
    pkt = parse_packet(buf)
    padded = parse_packet(buf + b"\x00" * 6)  # Ethernet padding
    assert packet_fields(padded) == packet_fields(pkt)
    assert tcp_checksum(buf + b"\xff" * 6, padded) == tcp_checksum(buf, pkt)


def _with(buf: bytes, offset: int, new: bytes) -> bytes:
    return buf[:offset] + new + buf[offset + len(new) :]


V4 = TEMPLATES["v4"]
V6 = TEMPLATES["v6"]


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"", id="empty"),
        pytest.param(V4[:19], id="short-ipv4"),
        pytest.param(V4[:39], id="short-ipv4-tcp"),
        pytest.param(V6[:39], id="short-ipv6"),
        pytest.param(V6[:59], id="short-ipv6-tcp"),
        pytest.param(_with(V4, 0, b"\x55"), id="version-5"),
        pytest.param(_with(V4, 0, b"\x44"), id="ihl-4"),
        pytest.param(_with(V4, 2, struct.pack("!H", 39)), id="total-length-too-small"),
        pytest.param(_with(V4, 2, struct.pack("!H", len(V4) + 1)), id="total-length-past-buffer"),
        pytest.param(_with(V4, 6, b"\x20\x00"), id="more-fragments"),
        pytest.param(_with(V4, 6, b"\x00\x01"), id="fragment-offset"),
        pytest.param(_with(V4, 9, b"\x11"), id="udp"),
        pytest.param(_with(V6, 6, b"\x11"), id="ipv6-udp"),
        pytest.param(_with(V6, 4, struct.pack("!H", 19)), id="ipv6-payload-length-too-small"),
        pytest.param(_with(V6, 4, struct.pack("!H", len(V6) - 39)), id="ipv6-payload-length-past-buffer"),
        pytest.param(_with(V4, 20 + 12, b"\x40"), id="doff-4"),
        pytest.param(_with(v4(b"", options=[]), 20 + 12, b"\x60"), id="doff-past-ip-length"),
        pytest.param(
            bytes(IPv6(src="::1", dst="::2") / IPv6ExtHdrHopByHop() / TCP()), id="ipv6-extension-header"
        ),
    ],
)
def test_parse_packet_rejects(buf):
    with pytest.raises(WireError):
        parse_packet(buf)


def test_ipv4_dont_fragment_is_fine():
    assert parse_packet(_with(V4, 6, b"\x40\x00")).length == len(V4)


@FAST
@given(st.binary(max_size=120))
def test_parse_packet_on_garbage_raises_only_wire_error(buf):
    try:
        parse_packet(buf)
    except WireError:
        pass


@FAST
@given(st.sampled_from(sorted(TEMPLATES)), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6))
def test_parse_packet_on_mutated_packets_raises_only_wire_error(name, edits):
    buf = bytearray(TEMPLATES[name])
    for offset, value in edits:
        if offset < len(buf):
            buf[offset] = value
    try:
        pkt = parse_packet(bytes(buf))
    except WireError:
        return
    assert pkt.payload_off + pkt.payload_len == pkt.length <= len(buf)
    assert 20 <= pkt.doff <= 60
    options_of(bytes(buf), pkt)
    tcp_checksum(bytes(buf), pkt)


# --- parse_options / strip_mptcp ----------------------------------------------------------


def test_options_agree_with_scapy():
    for buf in (V4, V6):
        o = options_of(buf, parse_packet(buf))
        assert (o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr) == (1460, 7, True, 1000, 2000)
        assert o.sack == ((11, 22),)
        assert o.mptcp == (MPTCP_DSS,)


def test_options_absent():
    o = options_of(TEMPLATES["v6-no-options-no-payload"], parse_packet(TEMPLATES["v6-no-options-no-payload"]))
    assert (o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr, o.sack, o.mptcp) == (-1, -1, False, -1, -1, (), ())


def _opts(area: bytes):
    return parse_options(area, 0, len(area))


def test_parse_options_walk_rules():
    # EOL stops the walk: the MSS after it is not seen.
    assert _opts(b"\x01\x00\x02\x04\x05\xb4").mss == -1
    # NOPs are one byte; unknown kinds are skipped by their length.
    assert _opts(b"\x01\x01\xfd\x04\xaa\xbb\x02\x04\x05\xb4").mss == 1460
    # length < 2 stops the walk.
    assert _opts(b"\xfd\x01\x02\x04\x05\xb4").mss == -1
    # partial option (length past end) stops the walk.
    assert _opts(b"\x02\x04\x05\xb4\x1e\x09\x00").mptcp == ()
    assert _opts(b"\x02\x04\x05\xb4\x1e\x09\x00").mss == 1460
    # a lone kind byte with no length byte at the end is ignored.
    assert _opts(b"\x02\x04\x05\xb4\x08").mss == 1460


@pytest.mark.parametrize(
    "area, field",
    [
        (b"\x02\x05\x05\xb4\x00", "mss"),
        (b"\x03\x04\x07\x00", "wscale"),
        (b"\x04\x03\x00", "sack_perm"),
        (b"\x08\x0b" + bytes(9), "ts_val"),
        (b"\x05\x09" + bytes(7), "sack"),
        (b"\x05\x02", "sack"),
    ],
)
def test_known_kinds_with_wrong_length_are_ignored(area, field):
    o = _opts(area)
    assert getattr(o, field) in (-1, False, ())


def test_sack_blocks_and_later_options_win():
    area = b"\x05\x12" + struct.pack("!4I", 1, 2, 3, 4) + b"\x02\x04\x00\x01\x02\x04\x00\x02"
    o = _opts(area)
    assert o.sack == ((1, 2), (3, 4))
    assert o.mss == 2


def test_parse_options_clamps_start_and_end():
    area = b"\x02\x04\x05\xb4"
    assert parse_options(area, 0, 1000).mss == 1460
    assert parse_options(area, -5, 4).mss == 1460
    assert parse_options(area, 10, 20).mss == -1
    assert parse_options(area, 3, 1).mss == -1


def test_every_kind30_option_is_reported_raw():
    area = b"\x1e\x03\x50\x01\x1e\x02\x1e\x04\x80\x01"
    assert _opts(area).mptcp == (b"\x1e\x03\x50", b"\x1e\x02", b"\x1e\x04\x80\x01")


def test_strip_mptcp():
    pkt = parse_packet(V4)
    stripped = strip_mptcp(V4, pkt.ip_hlen + 20, pkt.payload_off)
    o = _opts(stripped)
    assert o.mptcp == () and (o.mss, o.wscale, o.ts_val, o.sack) == (1460, 7, 1000, ((11, 22),))
    area = b"\x01\x1e\x04\x00\x81\x02\x04\x05\xb4\x1e\x03\x50\x00\x02\x04\x00\x01"
    assert strip_mptcp(area, 0, len(area)) == b"\x01\x02\x04\x05\xb4"  # EOL and after dropped
    assert strip_mptcp(b"\x01\x01\xfd\x03\x00\x1e\x09", 0, 7) == b"\x01\x01\xfd\x03\x00"  # partial tail
    assert strip_mptcp(b"", 0, 0) == b""


@FAST
@given(st.binary(max_size=64), st.integers(-10, 80), st.integers(-10, 80))
def test_option_walkers_never_raise(buf, start, end):
    o = parse_options(buf, start, end)
    assert all(opt[0] == 30 and opt[1] == len(opt) for opt in o.mptcp)
    stripped = strip_mptcp(buf, start, end)
    assert _opts(stripped).mptcp == ()
    again = _opts(stripped)
    assert (again.mss, again.wscale, again.sack_perm, again.ts_val, again.ts_ecr, again.sack) == (
        o.mss,
        o.wscale,
        o.sack_perm,
        o.ts_val,
        o.ts_ecr,
        o.sack,
    )


# --- encode_tcp_options ------------------------------------------------------------------------


def test_encode_tcp_options_linux_syn_layout():
    area = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=1, ts_ecr=0)
    assert area == v.LINUX_SYN_TCP_OPTIONS
    assert len(area) + len(v.LINUX_SYN_MP_CAPABLE) == v.LINUX_SYN_OPTION_SPACE


def test_encode_tcp_options_linux_alignment():
    assert encode_tcp_options() == b""
    assert encode_tcp_options(ts_val=5, ts_ecr=6) == b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 6)
    assert encode_tcp_options(sack_perm=True) == b"\x01\x01\x04\x02"
    assert encode_tcp_options(wscale=14) == b"\x01\x03\x03\x0e"
    assert encode_tcp_options(sack=((1, 2),)) == b"\x01\x01\x05\x0a" + struct.pack("!II", 1, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mss=70000),
        dict(wscale=256),
        dict(ts_val=2**32),
        dict(ts_val=1, ts_ecr=-2),
        dict(sack=((1, 2),) * 5),
        dict(ts_val=1, sack=((1, 2),) * 4),  # 12 + 36 > 40
        dict(sack=((1, 2**32),)),
    ],
)
def test_encode_tcp_options_impossible(kwargs):
    with pytest.raises(WireError):
        encode_tcp_options(**kwargs)


@FAST
@given(
    st.one_of(st.just(-1), st.integers(0, 0xFFFF)),
    st.one_of(st.just(-1), st.integers(0, 14)),
    st.booleans(),
    st.one_of(st.just((-1, -1)), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=3),
)
def test_encode_then_parse_round_trip(mss, wscale, sack_perm, ts, sack):
    size = (mss != -1) * 4 + (12 if ts[0] != -1 else 4 * sack_perm) + (wscale != -1) * 4
    size += (4 + 8 * len(sack)) if sack else 0
    if size > 40:
        with pytest.raises(WireError):
            encode_tcp_options(mss, wscale, sack_perm, ts[0], ts[1], tuple(sack))
        return
    area = encode_tcp_options(mss, wscale, sack_perm, ts[0], ts[1], tuple(sack))
    assert len(area) == size
    assert len(area) % 4 == 0 and len(area) <= 40
    o = _opts(area)
    assert (o.mss, o.wscale, o.sack_perm, (o.ts_val, o.ts_ecr), o.sack) == (mss, wscale, sack_perm, ts, tuple(sack))


# --- checksums ----------------------------------------------------------------------------


def test_ones_sum_basics():
    assert ones_sum(b"") == 0
    assert ones_sum(b"\x12\x34\x56\x78") == 0x68AC
    assert ones_sum(b"\xff\xff\x00\x01") == 0x0001  # end-around carry
    assert ones_sum(b"\x01") == 0x0100  # odd length: zero pad at the end
    assert ones_sum(b"\xaa\x12\x34\x56", 1) == 0x1234 + 0x5600
    assert ones_sum(b"\xaa\x12\x34\x56", 1, 3) == 0x1234
    assert ones_sum(b"\xaa\x12\x34\x56", 0, -1) == ones_sum(b"\xaa\x12\x34\x56")


@FAST
@given(st.binary(max_size=200))
def test_ones_sum_is_the_sum_mod_0xffff(data):
    s = ones_sum(data)
    padded = data + b"\x00" * (len(data) % 2)
    total = sum(int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2))
    assert s <= 0xFFFF
    assert s % 0xFFFF == total % 0xFFFF
    assert (s == 0) == (total == 0)


def test_csum_replace_rfc1624_example():
    # RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285: HC' = 0x0000 (eqn. 3).
    assert csum_replace(0xDD2F, b"\x55\x55", b"\x32\x85") == 0x0000


@FAST
@given(st.binary(min_size=2, max_size=40).filter(lambda b: len(b) % 2 == 0), st.data())
def test_csum_replace_equals_recompute(data, draw):
    assume(any(data))
    offset = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new = draw.draw(st.binary(min_size=2, max_size=2))
    check = ~ones_sum(data) & 0xFFFF
    changed = data[:offset] + new + data[offset + 2 :]
    assume(any(changed))
    assert csum_replace(check, data[offset : offset + 2], new) == ~ones_sum(changed) & 0xFFFF


def test_csum_replace_impossible():
    with pytest.raises(WireError):
        csum_replace(0, b"\x00", b"\x01")
    with pytest.raises(WireError):
        csum_replace(0, b"\x00\x00", b"\x01\x02\x03\x04")


def test_ipv4_checksum_rejects_bad_ihl():
    with pytest.raises(WireError):
        ipv4_checksum(V4, 4)
    with pytest.raises(WireError):
        ipv4_checksum(V4[:19], 5)


@pytest.mark.parametrize("vector", [v.DSS_CSUM_HAND, v.DSS_CSUM_CARRY])
def test_dss_checksum_vectors(vector):
    assert dss_checksum(vector["data_seq"], vector["subflow_seq"], vector["data_len"], vector["payload"]) == (
        vector["csum"]
    )


@FAST
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.binary(max_size=100))
def test_dss_checksum_verifies_like_linux(data_seq, subflow_seq, data_len, payload):
    # RFC 8684 §3.3.1: with the checksum in the pseudo-header the whole sum is 0xffff.
    csum = dss_checksum(data_seq, subflow_seq, data_len, payload)
    header = struct.pack("!QIHH", data_seq, subflow_seq, data_len, csum)
    assert ones_sum(header + payload + b"\x00" * (len(payload) % 2)) == 0xFFFF


def test_dss_checksum_impossible():
    for args in ((2**64, 0, 0), (0, 2**32, 0), (0, 0, 0x10000), (-1, 0, 0)):
        with pytest.raises(WireError):
            dss_checksum(*args, b"")


# --- rewrite ------------------------------------------------------------------------------


def test_rewrite_nothing_is_identity():
    for buf in TEMPLATES.values():
        assert rewrite(buf, parse_packet(buf)) == buf


def test_rewrite_fields_incrementally():
    for buf in (V4, V6):
        pkt = parse_packet(buf)
        out = rewrite(buf, pkt, seq=1, ack=2, window=3, flags=0x11)
        new = parse_packet(out)
        assert (new.seq, new.ack, new.window, new.flags) == (1, 2, 3, 0x11)
        assert out[: pkt.ip_hlen] == buf[: pkt.ip_hlen]
        assert out[new.ip_hlen + 20 :] == buf[pkt.ip_hlen + 20 :]
        assert tcp_checksum(out, new) == struct.unpack_from("!H", out, new.ip_hlen + 16)[0]
        assert scapy_tcp_checksum_ok(out)
        assert not scapy_tcp_checksum_ok(out[:-1] + bytes([out[-1] ^ 0x01]))  # the oracle can fail


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(TEMPLATES)),
    st.one_of(st.just(-1), st.integers(0, 2**32 - 1)),
    st.one_of(st.just(-1), st.integers(0, 2**32 - 1)),
    st.one_of(st.just(-1), st.integers(0, 0xFFFF)),
    st.one_of(st.just(-1), st.integers(0, 0xFF)),
)
def test_incremental_update_equals_full_recompute(name, seq, ack, window, flags):
    buf = TEMPLATES[name]
    pkt = parse_packet(buf)
    incremental = rewrite(buf, pkt, seq=seq, ack=ack, window=window, flags=flags)
    same_options = buf[pkt.ip_hlen + 20 : pkt.payload_off]
    full = rewrite(buf, pkt, seq=seq, ack=ack, window=window, flags=flags, options=same_options)
    assert incremental == full
    new = parse_packet(incremental)
    assert tcp_checksum(incremental, new) == struct.unpack_from("!H", incremental, new.ip_hlen + 16)[0]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("options", [b"", b"\x02\x04\x05\x78", MPTCP_DSS + b"\x01" * 3, bytes(40)])
def test_rewrite_options_fixes_lengths_and_checksums(name, options):
    buf = TEMPLATES[name] + b"\x00\x00"  # trailing bytes are dropped
    pkt = parse_packet(buf)
    out = rewrite(buf, pkt, seq=7, options=options)
    new = parse_packet(out)
    padded = options + b"\x01" * (-len(options) % 4)
    assert len(out) == new.length == pkt.length - pkt.doff + 20 + len(padded)
    assert new.doff == 20 + len(padded)
    assert out[new.ip_hlen + 20 : new.payload_off] == padded
    assert out[new.payload_off :] == buf[pkt.payload_off : pkt.length]
    assert new.seq == 7 and (new.ack, new.window, new.flags) == (pkt.ack, pkt.window, pkt.flags)
    assert out[new.ip_hlen + 12] & 0x0F == buf[pkt.ip_hlen + 12] & 0x0F  # reserved bits kept
    assert tcp_checksum(out, new) == struct.unpack_from("!H", out, new.ip_hlen + 16)[0]
    if new.version == 4:
        assert ipv4_checksum(out, new.ip_hlen // 4) == struct.unpack_from("!H", out, 10)[0]
    assert scapy_tcp_checksum_ok(out)


def test_rewrite_options_pads_with_nop():
    pkt = parse_packet(V6)
    out = rewrite(V6, pkt, options=b"\x1e\x03\x51")
    assert out[60:64] == b"\x1e\x03\x51\x01"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(options=bytes(41)),
        dict(seq=2**32),
        dict(ack=-2),
        dict(window=0x10000),
        dict(flags=0x100),
    ],
)
def test_rewrite_impossible(kwargs):
    with pytest.raises(WireError):
        rewrite(V4, parse_packet(V4), **kwargs)


def test_rewrite_options_overflowing_ipv4_length():
    big = v4(b"x" * (65535 - 20 - 20), options=[])
    with pytest.raises(WireError):
        rewrite(big, parse_packet(big), options=b"\x01" * 4)


def test_every_twinned_name_has_a_reference():
    import middlebox.wire as wire

    for name in wire.TWINNED:
        assert wire.REFERENCE[name].__module__ in ("middlebox.wire.packet", "middlebox.wire.mptcp"), name


# -- non-integers are impossible requests, in both implementations ------------------------

@pytest.mark.parametrize("impl", ["reference", "twin"])
@pytest.mark.parametrize(
    "call",
    [
        lambda w, buf, pkt: w.rewrite(buf, pkt, seq=5.0),
        lambda w, buf, pkt: w.encode_tcp_options(mss=1.0),
        lambda w, buf, pkt: w.dss_checksum(1.0, 1, 1, b"x"),
        lambda w, buf, pkt: w.csum_replace(1.0, b"ab", b"cd"),
        lambda w, buf, pkt: w.ipv4_checksum(buf, 5.0),
    ],
    ids=["rewrite-seq", "encode-mss", "dss-checksum", "csum-replace", "ipv4-checksum"],
)
def test_floats_raise_wire_error(impl, call):
    """The one documented error, also for a float where an integer belongs."""
    import types

    import middlebox.wire as wire_pkg

    if impl == "twin":
        from middlebox import _cwire as w  # built in both CI runs
    else:
        w = types.SimpleNamespace(**wire_pkg.REFERENCE)
    buf = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2))
    with pytest.raises(WireError):
        call(w, buf, w.parse_packet(buf))
