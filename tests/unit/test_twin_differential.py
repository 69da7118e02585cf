"""Differential tests: the Cython twin (`middlebox._cwire`) against the pure-Python reference.

For every name in `middlebox.wire.TWINNED`, both implementations get the same inputs (arbitrary
bytes, well-formed packets and options built with the reference builders and with scapy,
and mutations of those) and must return equal results, or both raise `WireError`
(docs/wire-api.md, STYLE.md §9). Results are compared structurally *with types* (a `True`
where the reference has `1` is a difference); `Packet` and `TcpOptions` are compared through
their attributes, since the two implementations have different classes.

The twin is imported directly, so this suite runs in both CI modes (with and without
`MIDDLEBOX_PURE_PYTHON=1`); the twin is built in both.
"""

import dataclasses
import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from middlebox import _cwire as TWIN_MODULE
from middlebox.wire import REFERENCE, TWINNED, WireError
from middlebox.wire import mptcp as M

TWIN = {name: getattr(TWIN_MODULE, name) for name in TWINNED}
REF = REFERENCE

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PACKET_ATTRS = tuple(f.name for f in dataclasses.fields(REF["Packet"]))
OPTIONS_ATTRS = tuple(f.name for f in dataclasses.fields(REF["TcpOptions"]))


# --- comparing results ---------------------------------------------------------------------


def norm(v):
    """A type-tagged structure: equal iff the values and their types match."""
    if isinstance(v, (REF["Packet"], TWIN["Packet"])):
        return ("Packet",) + tuple(norm(getattr(v, a)) for a in PACKET_ATTRS)
    if isinstance(v, (REF["TcpOptions"], TWIN["TcpOptions"])):
        return ("TcpOptions",) + tuple(norm(getattr(v, a)) for a in OPTIONS_ATTRS)
    if dataclasses.is_dataclass(v):
        return (type(v).__name__,) + tuple(norm(getattr(v, f.name)) for f in dataclasses.fields(v))
    if isinstance(v, tuple):
        return ("tuple",) + tuple(norm(x) for x in v)
    if v is None or isinstance(v, (bool, int, bytes)):
        return (type(v).__name__, v)
    raise AssertionError(f"unexpected result type {type(v).__name__}: {v!r}")


def outcome(fn, *args, **kw):
    try:
        return ("ok", norm(fn(*args, **kw)))
    except WireError:
        return ("WireError",)


def same(name, *args, **kw):
    """Call the reference and the twin; demand equal results or WireError from both.

    Anything else escaping either one is a bug (docs/wire-api.md: WireError is the only
    exception) and fails the test with its traceback."""
    ref = outcome(REF[name], *args, **kw)
    twin = outcome(TWIN[name], *args, **kw)
    assert twin == ref, f"{name}{args!r}{kw!r}:\n reference {ref}\n twin      {twin}"
    return ref


def residual(buf, pkt):
    """The one's-complement sum of the whole TCP segment with its pseudo-header, checksum
    field included: 0xffff when the checksum verifies, the error otherwise."""
    field = struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0]
    s = (~REF["tcp_checksum"](buf, pkt) & 0xFFFF) + field
    return (s & 0xFFFF) + (s >> 16)


def twin_packet(ref_pkt):
    """The twin's Packet with the same attributes as a reference Packet."""
    return TWIN["Packet"](*REF["packet_fields"](ref_pkt))


# --- strategies ----------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
def near(maximum):
    """Mostly in 0..maximum; sometimes an edge, just out of range, or a bool."""
    in_range = st.integers(0, maximum)
    return st.one_of(
        in_range, in_range, in_range, in_range,
        st.sampled_from([0, maximum, maximum + 1, -1, -2, 1 << 64, True, False]),
    )


tcp_flags = st.one_of(st.integers(0, 0xFF), st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14]))


@st.composite
def raw_option(draw):
    """Any single TCP option: well-formed known kinds, right or wrong lengths, MPTCP, junk."""
    kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 30, 30, 30, 19, 34, 254]))
    if kind in (0, 1):
        return bytes((kind,))
    good = {2: 4, 3: 3, 4: 2, 8: 10}.get(kind)
    if kind == 5:
        good = 2 + 8 * draw(st.integers(0, 5))
    if kind == 30:
        return draw(st.one_of(mptcp_bytes(), st.binary(min_size=0, max_size=30).map(lambda b: bytes((30, len(b) + 2)) + b)))
    size = good if good is not None and draw(st.booleans()) else draw(st.integers(0, 40))
    body = draw(st.binary(min_size=max(size - 2, 0), max_size=max(size - 2, 0)))
    return bytes((kind, size)) + body


option_area = st.lists(raw_option(), max_size=8).map(b"".join)


@st.composite
def valid_mptcp_option(draw):
    """An MPTCP option value (reference dataclass) that the builders accept."""
    kind = draw(st.sampled_from(["cap", "syn", "synack", "ack", "dss", "dss", "dss", "add", "rm", "prio", "fail", "fc", "rst"]))
    if kind == "cap":  # the lengths 4/12/20/22/24: fields present in order
        present = draw(st.integers(0, 4))
        fields = [draw(m) if i < present else None for i, m in enumerate((u64, u64, u16, u16))]
        version = draw(st.sampled_from([0, 1, 1, 1, 2, 15]))
        flags = draw(st.one_of(st.sampled_from([0x01, 0x81, 0xA1, 0x21, 0x41, 0x03]), u8))
        return M.MpCapable(version, flags, *fields)
    if kind == "syn":
        return M.MpJoinSyn(draw(st.booleans()), draw(u8), draw(u32), draw(u32))
    if kind == "synack":
        return M.MpJoinSynAck(draw(st.booleans()), draw(u8), draw(st.binary(min_size=8, max_size=8)), draw(u32))
    if kind == "ack":
        return M.MpJoinAck(draw(st.binary(min_size=20, max_size=20)))
    if kind == "dss":
        mapping, ack64, dsn64 = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
        return M.Dss(
            data_ack=draw(st.one_of(st.none(), u64 if ack64 else u32)),
            ack64=ack64,
            data_seq=draw(u64 if dsn64 else u32) if mapping else None,
            dsn64=dsn64,
            subflow_seq=draw(u32) if mapping else None,
            data_len=draw(u16) if mapping else None,
            csum=draw(st.one_of(st.none(), u16)),
            data_fin=draw(st.booleans()),
        )
    if kind == "add":
        echo = draw(st.booleans())
        return M.AddAddr(
            echo,
            draw(u8),
            draw(st.sampled_from([4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
            draw(st.one_of(st.none(), u16)),
            None if echo else draw(st.binary(min_size=8, max_size=8)),
        )
    if kind == "rm":
        return M.RemoveAddr(tuple(draw(st.lists(u8, min_size=1, max_size=8))))
    if kind == "prio":
        return M.MpPrio(draw(st.booleans()))
    if kind == "fail":
        return M.MpFail(draw(u64))
    if kind == "fc":
        return M.MpFastclose(draw(u64))
    return M.MpTcpRst(draw(st.booleans()), draw(u8))


BAD_VALUES = [-1, 1 << 64, 0x10000, 0x100, 0x100000000, True, None, b"\x00" * 7, b"\x00" * 9, b"", (), "x"]


@st.composite
def mptcp_option(draw):
    """Mostly a valid option; sometimes one field replaced by something odd (out of range,
    wrong type or size, a missing part of a mapping, ...)."""
    opt = draw(valid_mptcp_option())
    if draw(st.integers(0, 3)) == 0:
        field = draw(st.sampled_from([f.name for f in dataclasses.fields(opt)]))
        if field == "addr_ids":  # a non-iterable here is a TypeError in both: a caller's bug
            bad = draw(st.sampled_from([(), (1,) * 9, (256,), (-1,), (True,), b"\x01\x02", "x"]))
        else:
            bad = draw(st.one_of(st.sampled_from(BAD_VALUES), u64))
        opt = dataclasses.replace(opt, **{field: bad})
    return opt


def _buildable(opt):
    try:
        return REF["build_mptcp"](opt)
    except WireError:
        return None


# well-formed kind-30 options as bytes, from the reference builder (plus flipped bits)
@st.composite
def mptcp_bytes(draw):
    raw = draw(mptcp_option().map(_buildable).filter(lambda b: b is not None))
    if draw(st.integers(0, 4)) == 0 and len(raw) > 2:  # flip a bit past the length byte
        i = draw(st.integers(2, len(raw) - 1))
        raw = raw[:i] + bytes((raw[i] ^ (1 << draw(st.integers(0, 7))),)) + raw[i + 1 :]
    return raw


tcp_option_args = st.fixed_dictionaries(
    {},
    optional={
        "mss": near(0xFFFF),
        "wscale": near(0xFF),
        "sack_perm": st.booleans(),
        "ts_val": near(0xFFFFFFFF),
        "ts_ecr": near(0xFFFFFFFF),
        "sack": st.lists(st.tuples(near(0xFFFFFFFF), near(0xFFFFFFFF)), max_size=5).map(tuple),
    },
)


@st.composite
def encoded_tcp_options(draw):
    try:
        return REF["encode_tcp_options"](**draw(tcp_option_args))
    except WireError:
        return b""


@st.composite
def segment(draw):
    """A well-formed IPv4/IPv6 TCP segment (bytes), hand-assembled so every field is free:
    IPv4 options, odd payloads, trailing bytes past the IP length, TCP reserved bits."""
    version = draw(st.sampled_from([4, 6]))
    opts = draw(st.one_of(option_area, encoded_tcp_options(), st.builds(
        lambda t, m: t + m, encoded_tcp_options(), st.lists(mptcp_bytes(), max_size=2).map(b"".join))))
    opts = opts[:40]
    opts += b"\x00" * (-len(opts) % 4)
    payload = draw(st.one_of(st.binary(max_size=64), st.integers(0, 1500).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256))))
    doff = 20 + len(opts)
    tcp = struct.pack(
        "!HHIIBBHHH",
        draw(u16), draw(u16), draw(u32), draw(u32),
        (doff // 4) << 4 | draw(st.integers(0, 15)), draw(tcp_flags), draw(u16), draw(u16), draw(u16),
    ) + opts + payload
    if version == 4:
        ip_opts = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2]))
        ihl = 20 + len(ip_opts)
        frag = draw(st.sampled_from([0, 0x4000]))  # DF is fine
        hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, draw(u8), ihl + len(tcp), draw(u16), frag,
                          draw(u8), 6, draw(u16), draw(st.binary(min_size=4, max_size=4)),
                          draw(st.binary(min_size=4, max_size=4))) + ip_opts
    else:
        hdr = struct.pack("!IHBB16s16s", 0x60000000 | draw(st.integers(0, 0xFFFFF)), len(tcp), 6, draw(u8),
                          draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16)))
    return hdr + tcp + draw(st.sampled_from([b"", b"\x00", b"trailing junk"]))


@st.composite
def scapy_segment(draw):
    """A segment as scapy builds it (its own checksums and lengths)."""
    l4 = TCP(
        sport=draw(u16), dport=draw(u16), seq=draw(u32), ack=draw(u32),
        flags=draw(tcp_flags), window=draw(u16),
        options=draw(st.lists(st.sampled_from([
            ("MSS", 1460), ("SAckOK", b""), ("Timestamp", (7, 9)), ("NOP", None), ("WScale", 7),
            ("SAck", (1, 2)), (30, b"\x01\x81"), (30, b"\x20\x15" + bytes(range(20))),
        ]), max_size=4)),
    ) / Raw(draw(st.binary(max_size=100)))
    if draw(st.booleans()):
        return bytes(IP(src="10.1.2.3", dst="192.0.2.7", ttl=draw(u8)) / l4)
    return bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=draw(u8)) / l4)


@st.composite
def mutated(draw, base):
    """`base` with a few bytes changed, cut short or extended."""
    b = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        if b:
            b[draw(st.integers(0, len(b) - 1))] = draw(u8)
    cut = draw(st.integers(0, len(b)))
    return bytes(b[:cut]) if draw(st.integers(0, 3)) == 0 else bytes(b)


any_packet_bytes = st.one_of(st.binary(max_size=120), segment(), scapy_segment(), mutated(segment()))


def parsed(buf):
    """(reference Packet, twin Packet) or None when the reference rejects the buffer."""
    try:
        return REF["parse_packet"](buf), TWIN["parse_packet"](buf)
    except WireError:
        return None


# --- Packet / TcpOptions classes -----------------------------------------------------------


@SETTINGS
@given(any_packet_bytes)
def test_parse_packet(buf):
    same("parse_packet", buf)


@FEW
@given(st.binary(max_size=80))
def test_parse_packet_accepts_bytes_like(buf):
    same("parse_packet", bytearray(buf))
    same("parse_packet", memoryview(buf))


@SETTINGS
@given(segment())
def test_packet_fields_and_classes(buf):
    ref_pkt, twin_pkt = REF["parse_packet"](buf), TWIN["parse_packet"](buf)
    fields = REF["packet_fields"](ref_pkt)
    assert TWIN["packet_fields"](twin_pkt) == fields
    assert TWIN["packet_fields"](ref_pkt) == fields
    assert REF["packet_fields"](twin_pkt) == fields
    # the classes themselves: same constructor (by keyword), eq, hash and repr
    kw = dict(zip(PACKET_ATTRS, fields))
    assert TWIN["Packet"](**kw) == twin_pkt
    assert hash(TWIN["Packet"](**kw)) == hash(twin_pkt)
    assert repr(twin_pkt) == repr(ref_pkt)
    assert twin_pkt != ref_pkt  # different classes: compare through packet_fields
    opts_ref = REF["options_of"](buf, ref_pkt)
    opts_twin = TWIN["options_of"](buf, twin_pkt)
    assert norm(opts_twin) == norm(opts_ref)
    assert repr(opts_twin) == repr(opts_ref)
    kw = {a: getattr(opts_ref, a) for a in OPTIONS_ATTRS}
    assert TWIN["TcpOptions"](**kw) == opts_twin
    assert hash(TWIN["TcpOptions"](**kw)) == hash(opts_twin)
    assert norm(TWIN["TcpOptions"]()) == norm(REF["TcpOptions"]())
    # options_of takes a Packet of either implementation
    assert norm(TWIN["options_of"](buf, ref_pkt)) == norm(opts_ref)


def test_packet_is_read_only():
    buf = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP())
    pkt = TWIN["parse_packet"](buf)
    for attr in PACKET_ATTRS:
        try:
            setattr(pkt, attr, 1)
        except AttributeError:
            continue
        raise AssertionError(f"twin Packet.{attr} is writable")


# --- TCP options ---------------------------------------------------------------------------


area_buffers = st.one_of(
    st.binary(max_size=80),
    option_area,
    st.builds(lambda t, m: t + m, encoded_tcp_options(), st.lists(mptcp_bytes(), max_size=3).map(b"".join)),
)
bounds = st.integers(-5, 90)


@SETTINGS
@given(area_buffers, bounds, bounds)
def test_parse_options(buf, start, end):
    same("parse_options", buf, start, end)
    same("parse_options", buf, 0, len(buf))


@SETTINGS
@given(area_buffers, bounds, bounds)
def test_strip_mptcp(buf, start, end):
    same("strip_mptcp", buf, start, end)
    same("strip_mptcp", buf, 0, len(buf))


@SETTINGS
@given(any_packet_bytes)
def test_options_of(buf):
    pkts = parsed(buf)
    assume(pkts is not None)
    ref_pkt, twin_pkt = pkts
    assert norm(TWIN["options_of"](buf, twin_pkt)) == norm(REF["options_of"](buf, ref_pkt))


def test_many_mptcp_options_in_one_area():
    buf = b"\x1e\x02" * 300  # far more kind-30 options than any real segment carries
    same("parse_options", buf, 0, len(buf))
    same("strip_mptcp", buf, 0, len(buf))


@SETTINGS
@given(tcp_option_args)
def test_encode_tcp_options(kw):
    same("encode_tcp_options", **kw)


# --- MPTCP options -------------------------------------------------------------------------


@SETTINGS
@given(
    st.one_of(
        mptcp_bytes(),
        st.binary(max_size=32),
        st.binary(min_size=1, max_size=30).map(lambda b: bytes((30, len(b) + 2)) + b),
    ),
    st.one_of(tcp_flags, st.sampled_from([-1, 0x102, 1 << 70])),
    st.one_of(st.integers(0, 3), st.integers(-3, 70000)),
)
def test_parse_mptcp(opt, flags, payload_len):
    same("parse_mptcp", opt, flags, payload_len)


@SETTINGS
@given(mptcp_option())
def test_build_mptcp(opt):
    r = same("build_mptcp", opt)
    if r[0] == "ok":  # what is built parses back (in the context it belongs to)
        raw = REF["build_mptcp"](opt)
        for flags in (0x02, 0x12, 0x10, 0x14):
            for payload_len in (0, 1):
                same("parse_mptcp", raw, flags, payload_len)


@SETTINGS
@given(
    st.one_of(encoded_tcp_options(), st.binary(max_size=44)),
    st.lists(mptcp_option(), max_size=4),
)
def test_build_options(tcp, options):
    same("build_options", tcp, options)
    same("build_options", tcp, tuple(options))
    same("build_options", mptcp=options)


def test_build_options_rejects_non_options():
    same("build_options", b"", [object()])
    same("build_options", b"", ["\x1e\x04\x01\x81"])
    same("build_mptcp", object())
    same("build_mptcp", b"\x1e\x04\x01\x81")


def test_build_options_every_pair_of_subtypes():
    """The combination table, exhaustively over pairs (and the order of the pair)."""
    examples = [
        M.MpCapable(1, 0x81), M.MpJoinSyn(False, 1, 2, 3), M.Dss(data_ack=1),
        M.AddAddr(True, 1, b"\x0a\x00\x00\x01"), M.RemoveAddr((1,)), M.MpPrio(True),
        M.MpFail(5), M.MpFastclose(7), M.MpTcpRst(False, 1),
    ]
    for a in examples:
        for b in examples:
            same("build_options", b"", [a, b])
            for c in examples:
                same("build_options", b"", [a, b, c])


# --- checksums -----------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300), st.integers(-3, 310), st.integers(-3, 310))
def test_ones_sum(buf, start, end):
    same("ones_sum", buf)
    same("ones_sum", buf, start)
    same("ones_sum", buf, start, end)
    same("ones_sum", buf, end=end)


@SETTINGS
@given(st.integers(1, 3000))
def test_ones_sum_long_zero_and_ones(n):
    same("ones_sum", b"\x00" * n)
    same("ones_sum", b"\xff" * n)
    same("ones_sum", bytes(range(256)) * (n // 256 + 1), 1, n)


@SETTINGS
@given(any_packet_bytes, st.integers(0, 8))
def test_tcp_checksum(buf, cut):
    pkts = parsed(buf)
    assume(pkts is not None)
    ref_pkt, twin_pkt = pkts
    r = same("tcp_checksum", buf, ref_pkt)
    assert outcome(TWIN["tcp_checksum"], buf, twin_pkt) == r
    short = buf[: max(ref_pkt.length - cut, 0)]
    assert outcome(TWIN["tcp_checksum"], short, twin_pkt) == outcome(REF["tcp_checksum"], short, ref_pkt)


@SETTINGS
@given(st.one_of(st.binary(max_size=70), segment()), st.integers(-1, 17))
def test_ipv4_checksum(buf, ihl):
    same("ipv4_checksum", buf, ihl)


@st.composite
def segment_args(draw):
    """build_segment's arguments: valid ones (other bytes-likes too, seq and ack of any size),
    and in about half the examples one of them replaced by a value near or past its limit
    or of the wrong type."""
    version = draw(st.sampled_from([4, 6]))
    alen = 16 if version == 6 else 4
    addr = st.one_of(st.binary(min_size=alen, max_size=alen), st.binary(min_size=alen, max_size=alen).map(bytearray))
    big = st.one_of(u32, st.sampled_from([-1, 1 << 32, (1 << 64) + 7, -(1 << 40), True]))
    opts = st.one_of(st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]), option_area.filter(lambda b: len(b) % 4 == 0 and len(b) <= 40))
    args = [version, draw(addr), draw(addr), draw(u16), draw(u16), draw(big), draw(big), draw(u8),
            draw(st.one_of(u16, st.sampled_from([0x10000, 1 << 40]))),
            draw(st.one_of(opts, opts.map(memoryview))),
            draw(st.one_of(st.binary(max_size=1500), st.binary(max_size=9).map(bytearray))),
            draw(u8), draw(u8), draw(st.integers(0, 0xFFFFF))]
    bad = draw(st.integers(-13, 13))
    if bad >= 0:
        args[bad] = draw({
            0: st.sampled_from([5, 0, True, "4", None]),
            1: st.one_of(st.binary(max_size=17), st.just(None), st.just("a.b")),
            2: st.one_of(st.binary(max_size=17), st.just(None)),
            5: st.sampled_from([1.5, None, "1"]),
            6: st.sampled_from([1.5, None, b"1"]),
            8: st.sampled_from([-1, -(1 << 70), 1.0, None]),
            9: st.one_of(st.binary(min_size=41, max_size=44), st.binary(max_size=7), st.just("ab")),
            10: st.sampled_from(["x", None, 3, b"y" * 65600]),
            13: near(0xFFFFF),
        }.get(bad, near(0xFFFF if bad in (3, 4) else 0xFF)))
    return tuple(args)


@SETTINGS
@given(segment_args())
def test_build_segment(args):
    r = same("build_segment", *args)
    if r[0] == "ok":
        buf = REF["build_segment"](*args)
        pkt = REF["parse_packet"](buf)
        assert pkt.length == len(buf) and residual(buf, pkt) == 0xFFFF
        assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.flags, pkt.window) == (
            args[3], args[4], args[5] & 0xFFFFFFFF, args[6] & 0xFFFFFFFF, args[7], min(args[8], 0xFFFF))
        assert buf[len(buf) - len(args[10]):] == bytes(args[10]) if args[10] else True
        if pkt.version == 4:
            assert REF["ipv4_checksum"](buf, 5) == struct.unpack_from("!H", buf, 10)[0]


def test_build_segment_odd_argument_types():
    """(Review of 4ac07f8.) A bytes-like whose len() is not its length as bytes (the twin
    copied 4 bytes from a 1-byte buffer), a cast memoryview, an int subclass whose `&` is not
    an int: the same outcome from both."""

    class Liar(bytearray):
        def __len__(self):
            return 4

    class OddInt(int):
        def __and__(self, other):
            return "x"

    a4, b4 = bytes(4), b"\x0a\0\0\x02"
    cases = [
        (4, Liar(b"\x01"), b4, 1, 2, 3, 4, 0x10, 5),
        (4, memoryview(bytes(16)).cast("I"), b4, 1, 2, 3, 4, 0x10, 5),
        (4, memoryview(bytes(4)).cast("I"), b4, 1, 2, 3, 4, 0x10, 5),
        (4, a4, b4, 1, 2, OddInt(7), OddInt(1 << 40), 0x10, 5),
        (4, a4, b4, 1, 2, 3, 4, 0x10, 5, memoryview(bytes(8))[::2]),
        (6, bytes(16), bytes(16), 1, 2, 3, 4, 0x10, 5, b"", Liar(b"ab")),
    ]
    for args in cases:
        same("build_segment", *args)
    assert outcome(REF["build_segment"], *cases[0]) == ("WireError",)
    assert outcome(REF["build_segment"], *cases[3])[0] == "ok"


def test_build_segment_against_scapy():
    """Checksums as an independent stack computes them, both versions, odd payload."""
    for version, ip in ((4, IP(src="10.1.1.1", dst="10.2.2.2", tos=0x2e, ttl=63, flags="DF", id=0)),
                        (6, IPv6(src="fd00::1", dst="fd00::2", tc=0x2e, hlim=63, fl=0x12345))):
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]
        want = bytes(ip / TCP(sport=40000, dport=443, seq=5, ack=6, flags="PA", window=512, options=opts) / Raw(b"abc"))
        tcp = TCP(want[20 if version == 4 else 40:])
        label = 0x12345 if version == 6 else 0
        src, dst = (want[12:16], want[16:20]) if version == 4 else (want[8:24], want[24:40])
        for impl in (REF, TWIN):
            got = impl["build_segment"](version, src, dst, 40000, 443, 5, 6, 0x18, 512,
                                        bytes(tcp)[20:tcp.dataofs * 4], b"abc", 0x2e, 63, label)
            assert got == want, (version, got.hex(), want.hex())


@SETTINGS
@given(
    st.one_of(u16, st.sampled_from([-1, 0x10000, True])),
    st.binary(max_size=24),
    st.binary(max_size=24),
    st.booleans(),
)
def test_csum_replace(check, old, new, same_len):
    if same_len:
        new = (new + old)[: len(old)].ljust(len(old), b"\x00")
    same("csum_replace", check, old, new)


@SETTINGS
@given(near(0xFFFFFFFFFFFFFFFF), near(0xFFFFFFFF), near(0xFFFF), st.binary(max_size=200))
def test_dss_checksum(data_seq, subflow_seq, data_len, payload):
    same("dss_checksum", data_seq, subflow_seq, data_len, payload)


def test_dss_checksum_all_zero():
    same("dss_checksum", 0, 0, 0, b"")
    same("dss_checksum", 0, 0, 0, b"\x00" * 33)


# --- rewrite -------------------------------------------------------------------------------


rewrite_args = st.fixed_dictionaries(
    {},
    optional={
        "seq": near(0xFFFFFFFF),
        "ack": near(0xFFFFFFFF),
        "window": near(0xFFFF),
        "flags": near(0xFF),
        "full_checksum": st.booleans(),
        "options": st.one_of(
            st.none(),
            st.binary(max_size=44),
            st.builds(lambda t, m: REF["build_options"](t, m) if _fits(t, m) else b"", encoded_tcp_options(),
                      st.lists(mptcp_option(), max_size=2)),
        ),
    },
)


def _fits(tcp, options):
    try:
        REF["build_options"](tcp, options)
        return True
    except WireError:
        return False


@SETTINGS
@given(st.one_of(segment(), scapy_segment(), mutated(segment())), rewrite_args)
def test_rewrite(buf, kw):
    pkts = parsed(buf)
    assume(pkts is not None)
    ref_pkt, twin_pkt = pkts
    r = same("rewrite", buf, ref_pkt, **kw)
    assert outcome(TWIN["rewrite"], buf, twin_pkt, **kw) == r
    assert outcome(TWIN["rewrite"], buf[: ref_pkt.length - 1], twin_pkt, **kw) == outcome(
        REF["rewrite"], buf[: ref_pkt.length - 1], ref_pkt, **kw)
    if r[0] == "ok":  # the result is a packet both parse alike, with a correct checksum
        out = TWIN["rewrite"](buf, twin_pkt, **kw)
        same("parse_packet", out)
        new_ref = REF["parse_packet"](out)
        if kw.get("full_checksum"):  # computed from the bytes
            assert REF["tcp_checksum"](out, new_ref) == struct.unpack_from("!H", out, new_ref.ip_hlen + 16)[0]
        else:  # updated incrementally: right stays right, wrong stays wrong by the same error
            assert residual(out, new_ref) == residual(buf, ref_pkt)


@FEW
@given(scapy_segment(), rewrite_args)
def test_rewrite_keeps_a_correct_checksum_correct(buf, kw):
    """scapy's checksums are right; the incremental update must keep them right, and give
    the very bytes of a full recompute (with or without new options)."""
    pkts = parsed(buf)
    assume(pkts is not None)
    kw.pop("full_checksum", None)
    try:
        out = TWIN["rewrite"](buf, pkts[1], **kw)
    except WireError:
        return
    pkt = REF["parse_packet"](out)
    assert REF["tcp_checksum"](out, pkt) == struct.unpack_from("!H", out, pkt.ip_hlen + 16)[0]
    assert out == TWIN["rewrite"](buf, pkts[1], full_checksum=True, **kw)
    assert out == REF["rewrite"](buf, pkts[0], full_checksum=True, **kw)


def test_parse_mp_capable_every_form_and_context():
    """MP_CAPABLE's expected length depends on SYN/ACK and on data: all forms x contexts."""
    for version in (0, 1, 2):
        for flags in (0x01, 0x81, 0xA1, 0x41, 0x00, 0x03):
            for n in range(5):
                keys = (0x0102030405060708, 0x1112131415161718, 1448, 0xBEEF)
                raw = REF["build_mptcp"](M.MpCapable(version, flags, *(keys[i] if i < n else None for i in range(4))))
                for tcp in (0x02, 0x12, 0x10, 0x18, 0x11, 0x06, 0x00):
                    for payload_len in (0, 1, 1448):
                        same("parse_mptcp", raw, tcp, payload_len)


@SETTINGS
@given(valid_mptcp_option())
def test_parsed_options_are_the_reference_classes(opt):
    """The twin fills the reference's slotted dataclasses directly (no per-field
    object.__setattr__); what it returns must be indistinguishable from a constructed one."""
    import pickle

    raw = REF["build_mptcp"](opt)
    flags = 0x04 if isinstance(opt, M.MpTcpRst) else 0x10
    if isinstance(opt, M.MpCapable):
        flags = {4: 0x02, 12: 0x12}.get(len(raw), 0x10)
    payload_len = 1 if len(raw) in (22, 24) else 0
    got = TWIN["parse_mptcp"](raw, flags, payload_len)
    want = REF["parse_mptcp"](raw, flags, payload_len)
    assert type(got) is type(want)
    if want is None:
        return
    assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
    assert pickle.loads(pickle.dumps(got)) == want
    assert dataclasses.replace(got) == want
    assert TWIN["build_mptcp"](got) == REF["build_mptcp"](want)


def test_slot_shortcut_is_in_use():
    """The reference classes are frozen slotted dataclasses, so the twin's shortcut applies
    (if this fails after a change to mptcp.py, the twin still works, only slower)."""
    assert all(TWIN_MODULE._fast_layouts().values()), TWIN_MODULE._fast_layouts()


def test_parse_mptcp_context_only_read_where_needed():
    """tcp_flags/payload_len matter to MP_CAPABLE and MP_TCPRST only; elsewhere any value."""
    dss = REF["build_mptcp"](M.Dss(data_ack=1))
    for flags, payload_len in ((None, None), ("x", 0), (0x10, None)):
        assert TWIN["parse_mptcp"](dss, flags, payload_len) == REF["parse_mptcp"](dss, flags, payload_len)


# --- fused per-packet steps of the converter (add_dss, without_mptcp) -----------------------


@st.composite
def dss_fields(draw):
    """`Dss` fields as keyword arguments of add_dss: valid ones mostly, out-of-range or
    inconsistent ones (mapping parts missing, bools, too large) sometimes."""
    mapping, ack64, dsn64 = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    kw = {
        "data_ack": draw(st.one_of(st.none(), near(0xFFFFFFFFFFFFFFFF if ack64 else 0xFFFFFFFF))),
        "ack64": ack64,
        "dsn64": dsn64,
        "data_fin": draw(st.booleans()),
        "csum": draw(st.one_of(st.none(), near(0xFFFF))),
    }
    if mapping:
        kw["data_seq"] = draw(near(0xFFFFFFFFFFFFFFFF if dsn64 else 0xFFFFFFFF))
        kw["subflow_seq"] = draw(near(0xFFFFFFFF))
        kw["data_len"] = draw(near(0xFFFF))
        if draw(st.integers(0, 9)) == 0:  # a mapping with a part missing
            del kw[draw(st.sampled_from(["data_seq", "subflow_seq", "data_len"]))]
    if draw(st.booleans()):
        kw["ack"] = draw(near(0xFFFFFFFF))
    return kw


def _fused_both_packets(name, buf, **kw):
    """`name` on the reference and twin Packets of buf (and on a buffer cut one byte short):
    the same outcome everywhere."""
    pkts = parsed(buf)
    assume(pkts is not None)
    ref_pkt, twin_pkt = pkts
    r = same(name, buf, ref_pkt, **kw)
    assert outcome(TWIN[name], buf, twin_pkt, **kw) == r
    short = buf[: ref_pkt.length - 1]
    assert outcome(TWIN[name], short, twin_pkt, **kw) == outcome(REF[name], short, ref_pkt, **kw)
    return r, ref_pkt


@SETTINGS
@given(st.one_of(segment(), scapy_segment(), mutated(segment())), dss_fields())
def test_add_dss(buf, kw):
    r, pkt = _fused_both_packets("add_dss", buf, **kw)
    if r[0] == "ok" and r[1] != ("NoneType", None):
        # it is the composition it documents
        dss = M.Dss(kw.get("data_ack"), kw["ack64"], kw.get("data_seq"), kw["dsn64"],
                    kw.get("subflow_seq"), kw.get("data_len"), kw.get("csum"), kw["data_fin"])
        tcp = REF["strip_mptcp"](buf, pkt.ip_hlen + 20, pkt.payload_off)
        expected = REF["rewrite"](buf, pkt, ack=kw.get("ack", -1), options=REF["build_options"](tcp, (dss,)))
        assert TWIN["add_dss"](buf, pkt, **kw) == expected
        out = TWIN["add_dss"](buf, pkt, **kw)
        assert residual(out, REF["parse_packet"](out)) == residual(buf, pkt)


@SETTINGS
@given(st.one_of(segment(), scapy_segment(), mutated(segment())),
       st.fixed_dictionaries({}, optional={"ack": near(0xFFFFFFFF), "flags": near(0xFF)}))
def test_without_mptcp(buf, kw):
    r, pkt = _fused_both_packets("without_mptcp", buf, **kw)
    if r[0] == "ok":
        tcp = REF["strip_mptcp"](buf, pkt.ip_hlen + 20, pkt.payload_off)
        out = TWIN["without_mptcp"](buf, pkt, **kw)
        assert out == REF["rewrite"](buf, pkt, options=tcp, **kw)
        assert residual(out, REF["parse_packet"](out)) == residual(buf, pkt)


def test_add_dss_too_long_is_none():
    """Options that leave no room for the DSS: None from both (the caller drops SACK)."""
    opts = REF["encode_tcp_options"](ts_val=1, ts_ecr=2, sack=((1, 2), (3, 4), (5, 6)))
    buf = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A", options=[]) / Raw(b"x" * 10))
    buf = REF["rewrite"](buf, REF["parse_packet"](buf), options=opts)
    kw = dict(data_ack=5, ack64=True, data_seq=9, dsn64=True, subflow_seq=1, data_len=10)
    assert same("add_dss", buf, REF["parse_packet"](buf), **kw) == ("ok", ("NoneType", None))


@SETTINGS
@given(st.one_of(segment(), scapy_segment(), mutated(segment())))
def test_mptcp_options(buf):
    r, pkt = _fused_both_packets("mptcp_options", buf)
    if r[0] == "ok":  # the composition it documents
        expected = tuple(REF["parse_mptcp"](raw, pkt.flags, pkt.payload_len) for raw in REF["options_of"](buf, pkt).mptcp)
        assert norm(TWIN["mptcp_options"](buf, pkt)) == norm(expected)


def test_mptcp_options_many_and_malformed():
    """Several MPTCP options, one of them malformed (None in its place), REMOVE_ADDR's ids."""
    area = (REF["build_mptcp"](M.Dss(data_ack=7)) + bytes((30, 3, 0x20))
            + REF["build_mptcp"](M.RemoveAddr((1, 2, 3))) + bytes((1, 1)))
    area += bytes((1,)) * (-len(area) % 4)
    buf = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A", options=[]) / Raw(b"y" * 5))
    buf = REF["rewrite"](buf, REF["parse_packet"](buf), options=area)
    r = same("mptcp_options", buf, REF["parse_packet"](buf))
    assert r[0] == "ok" and len(r[1]) == 4 and r[1][2] == ("NoneType", None)
