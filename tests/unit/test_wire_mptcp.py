"""MPTCP options (RFC 8684 §3): parse/build round trips, Linux length rules, the combination table.

Imported from `middlebox.wire`, so this suite tests whichever implementation is active.
"""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlebox.wire import (
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
    WireError,
    build_mptcp,
    build_options,
    encode_tcp_options,
    parse_mptcp,
    parse_options,
)
from tests.unit import vectors as v

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
# valid MP_CAPABLE flags: H set, B and D..G clear; A and C free (RFC 8684 §3.1)
mpc_flags = st.sampled_from([0x01, 0x21, 0x81, 0xA1])
payload_lens = st.integers(1, 1500)

# --- strategies: (option, tcp_flags, payload_len) it is valid in ------------------------------


def _ctx(options, flags, plen=st.just(0)):
    return st.tuples(options, flags, plen)


mp_capable_cases = st.one_of(
    # v1 SYN, length 4 (a version > 1 is reported as received)
    _ctx(st.builds(MpCapable, version=st.integers(1, 15), flags=mpc_flags), st.just(SYN)),
    # v0 SYN, length 12 (RFC 6824)
    _ctx(st.builds(MpCapable, version=st.just(0), flags=mpc_flags, sndr_key=u64), st.just(SYN)),
    # SYN/ACK, length 12
    _ctx(st.builds(MpCapable, version=st.sampled_from([0, 1]), flags=mpc_flags, sndr_key=u64), st.just(SYN | ACK)),
    # third ACK, length 20 (v0 has no data form, so it keeps 20 with payload)
    _ctx(
        st.builds(MpCapable, version=st.sampled_from([0, 1]), flags=mpc_flags, sndr_key=u64, rcvr_key=u64),
        st.sampled_from([ACK, ACK | FIN]),
    ),
    _ctx(
        st.builds(MpCapable, version=st.just(0), flags=mpc_flags, sndr_key=u64, rcvr_key=u64),
        st.just(ACK),
        payload_lens,
    ),
    # v1 first data, length 22 / 24
    _ctx(
        st.builds(
            MpCapable,
            version=st.just(1),
            flags=mpc_flags,
            sndr_key=u64,
            rcvr_key=u64,
            data_len=u16,
            csum=st.none() | u16,
        ),
        st.just(ACK),
        payload_lens,
    ),
)

any_flags = st.sampled_from([SYN, SYN | ACK, ACK, ACK | FIN, 0])
join_cases = _ctx(
    st.one_of(
        st.builds(MpJoinSyn, backup=st.booleans(), addr_id=u8, token=u32, nonce=u32),
        st.builds(MpJoinSynAck, backup=st.booleans(), addr_id=u8, hmac=st.binary(min_size=8, max_size=8), nonce=u32),
        st.builds(MpJoinAck, hmac=st.binary(min_size=20, max_size=20)),
    ),
    any_flags,
)


@st.composite
def dss_options(draw):
    # every flag combination: A/a, M/m, checksum, F
    data_ack = draw(st.none() | u64)
    ack64 = data_ack is not None and (data_ack > 0xFFFFFFFF or draw(st.booleans()))
    data_seq = subflow_seq = data_len = csum = None
    dsn64 = False
    if draw(st.booleans()):
        data_seq = draw(u64)
        dsn64 = data_seq > 0xFFFFFFFF or draw(st.booleans())
        subflow_seq, data_len, csum = draw(u32), draw(u16), draw(st.none() | u16)
    return Dss(
        data_ack=data_ack,
        ack64=ack64,
        data_seq=data_seq,
        dsn64=dsn64,
        subflow_seq=subflow_seq,
        data_len=data_len,
        csum=csum,
        data_fin=draw(st.booleans()),
    )


@st.composite
def add_addr_options(draw):
    echo = draw(st.booleans())
    return AddAddr(
        echo=echo,
        addr_id=draw(u8),
        addr=draw(st.sampled_from([4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
        port=draw(st.none() | u16),
        hmac=None if echo else draw(st.binary(min_size=8, max_size=8)),
    )


other_cases = st.one_of(
    _ctx(dss_options(), any_flags, st.integers(0, 1500)),
    _ctx(add_addr_options(), any_flags),
    _ctx(st.builds(RemoveAddr, addr_ids=st.lists(u8, min_size=1, max_size=8).map(tuple)), any_flags),
    _ctx(st.builds(MpPrio, backup=st.booleans()), any_flags),
    _ctx(st.builds(MpFail, data_seq=u64), any_flags),
    _ctx(st.builds(MpFastclose, rcvr_key=u64), any_flags),
    _ctx(st.builds(MpTcpRst, transient=st.booleans(), reason=u8), st.sampled_from([RST, RST | ACK])),
)

all_cases = st.one_of(mp_capable_cases, join_cases, other_cases)


def expected_length(o) -> int:
    """The length each option's fields imply (RFC 8684 §3 / PROTOCOL.md tables)."""
    if isinstance(o, MpCapable):
        return 4 + 8 * (o.sndr_key is not None) + 8 * (o.rcvr_key is not None) + 2 * (o.data_len is not None) + 2 * (
            o.csum is not None
        )
    if isinstance(o, Dss):
        size = 4
        if o.data_ack is not None:
            size += 8 if o.ack64 else 4
        if o.data_seq is not None:
            size += (14 if o.dsn64 else 10) + 2 * (o.csum is not None)
        return size
    if isinstance(o, AddAddr):
        return 4 + len(o.addr) + 2 * (o.port is not None) + (0 if o.echo else 8)
    if isinstance(o, RemoveAddr):
        return 3 + len(o.addr_ids)
    return {MpJoinSyn: 12, MpJoinSynAck: 16, MpJoinAck: 24, MpPrio: 3, MpFail: 12, MpFastclose: 12, MpTcpRst: 4}[
        type(o)
    ]


# --- round trips ---------------------------------------------------------------------------


@FAST
@given(all_cases)
def test_build_parse_build_round_trip(case):
    option, tcp_flags, payload_len = case
    wire = build_mptcp(option)
    assert wire[0] == 30 and wire[1] == len(wire) == expected_length(option)
    assert parse_mptcp(wire, tcp_flags, payload_len) == option
    assert build_mptcp(parse_mptcp(wire, tcp_flags, payload_len)) == wire
    # and as seen by the TCP option walker
    assert parse_options(wire, 0, len(wire)).mptcp == (wire,)


def normalized(o):
    """What a rebuilt option parses back to: the DSS width bits only count with their field."""
    if isinstance(o, Dss):
        return Dss(
            data_ack=o.data_ack,
            ack64=o.ack64 and o.data_ack is not None,
            data_seq=o.data_seq,
            dsn64=o.dsn64 and o.data_seq is not None,
            subflow_seq=o.subflow_seq,
            data_len=o.data_len,
            csum=o.csum,
            data_fin=o.data_fin,
        )
    return o


@st.composite
def plausible_options(draw):
    """Bytes shaped like a kind-30 option (right kind and length, any subtype and body)."""
    # biased towards the lengths some subtype accepts, so that the parsers get exercised
    size = draw(st.sampled_from([3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]) | st.integers(3, 40))
    body = draw(st.binary(min_size=size - 3, max_size=size - 3))
    return bytes((30, size, draw(st.integers(0, 9)) << 4 | draw(st.integers(0, 15)))) + body


@st.composite
def mutated_options(draw):
    """A valid option with a few bytes after the length byte changed, maybe resized."""
    wire = bytearray(build_mptcp(draw(all_cases)[0]))
    for _ in range(draw(st.integers(0, 3))):
        wire[draw(st.integers(2, len(wire) - 1))] = draw(u8)
    resize = draw(st.integers(-2, 2))
    wire = wire[: max(3, len(wire) + resize)] if resize < 0 else wire + bytes(resize)
    wire[1] = len(wire)
    return bytes(wire)


@FAST
@given(
    mutated_options() | plausible_options() | st.binary(max_size=40),
    st.integers(0, 0xFF),
    st.integers(0, 2000),
)
def test_parse_mptcp_never_raises_and_what_it_returns_rebuilds(opt, tcp_flags, payload_len):
    parsed = parse_mptcp(opt, tcp_flags, payload_len)
    if parsed is None:
        return
    assert opt[0] == 30 and opt[1] == len(opt)
    rebuilt = build_mptcp(parsed)
    assert parse_mptcp(rebuilt, tcp_flags, payload_len) == normalized(parsed)


def test_options_are_frozen_values():
    o = MpPrio(backup=True)
    with pytest.raises(Exception):
        o.backup = False  # type: ignore[misc]
    assert {Dss(data_ack=1), Dss(data_ack=1)} == {Dss(data_ack=1)}


# --- MP_CAPABLE: Linux accepts only the length the context implies (RFC 8684 §3.1) ---------


def mpc(version=1, flags=0x01, keys=0, extra=b""):
    body = bytes((version, flags)) + b"\x11" * (8 * keys) + extra
    return bytes((30, 2 + len(body))) + body


@pytest.mark.parametrize(
    "opt, tcp_flags, payload_len, ok",
    [
        (mpc(), SYN, 0, True),
        (mpc(keys=1), SYN, 0, False),  # v1 SYN carries no key
        (mpc(version=0, keys=1), SYN, 0, True),  # v0 SYN: sender's key
        (mpc(version=0), SYN, 0, False),
        (mpc(version=2), SYN, 0, True),  # gentle with future versions on the SYN
        (mpc(keys=1), SYN | ACK, 0, True),
        (mpc(version=2, keys=1), SYN | ACK, 0, False),
        (mpc(), SYN | ACK, 0, False),
        (mpc(keys=2), ACK, 0, True),
        (mpc(version=2, keys=2), ACK, 0, False),
        (mpc(keys=2), ACK, 100, False),  # v1 with data: 22/24 instead of 20
        (mpc(keys=2, extra=b"\x00\x10"), ACK, 100, True),
        (mpc(keys=2, extra=b"\x00\x10\xab\xcd"), ACK, 100, True),
        (mpc(keys=2, extra=b"\x00\x10"), ACK, 0, False),
        (mpc(version=0, keys=2), ACK, 100, True),  # v0 has no data form
        (mpc(version=0, keys=2, extra=b"\x00\x10"), ACK, 100, False),
        (mpc(flags=0x00), SYN, 0, False),  # H missing
        (mpc(flags=0x41), SYN, 0, False),  # B set
        (mpc(flags=0x03), SYN, 0, False),  # D..G must be 0
        (mpc(flags=0xA1), SYN, 0, True),  # A and C are fine
    ],
)
def test_mp_capable_lengths_by_context(opt, tcp_flags, payload_len, ok):
    assert (parse_mptcp(opt, tcp_flags, payload_len) is not None) == ok


def test_mp_capable_fields_and_flag_properties():
    o = parse_mptcp(mpc(keys=2, flags=0xA1, extra=b"\x05\xdc\xbe\xef"), ACK, 1500)
    assert o == MpCapable(1, 0xA1, 0x1111111111111111, 0x1111111111111111, 1500, 0xBEEF)
    assert o.checksum and o.no_join_src
    p = parse_mptcp(mpc(), SYN, 0)
    assert p == MpCapable(version=1, flags=0x01) and not p.checksum and not p.no_join_src
    assert p.sndr_key is p.rcvr_key is p.data_len is p.csum is None


# --- the other subtypes: exact lengths ---------------------------------------------------------


@pytest.mark.parametrize(
    "opt, tcp_flags, expected",
    [
        # MP_JOIN by size only (RFC 8684 §3.2)
        (bytes.fromhex("1e0c1107aabbccdd01020304"), SYN, MpJoinSyn(True, 7, 0xAABBCCDD, 0x01020304)),
        (bytes.fromhex("1e10100211223344556677880a0b0c0d"), SYN | ACK,
         MpJoinSynAck(False, 2, bytes.fromhex("1122334455667788"), 0x0A0B0C0D)),
        (bytes.fromhex("1e181000") + bytes(range(20)), ACK, MpJoinAck(bytes(range(20)))),
        (bytes.fromhex("1e0d1107aabbccdd0102030400"), SYN, None),
        # DSS (§3.3): DATA_ACK only, 32 bit
        (bytes.fromhex("1e08200100000005"), ACK, Dss(data_ack=5)),
        # DSS: flags only (DATA_FIN without mapping is parsed, as Linux does)
        (bytes.fromhex("1e042010"), ACK, Dss(data_fin=True)),
        # DSS: 2 extra bytes without a mapping are accepted, no checksum
        (bytes.fromhex("1e0a2001000000050000"), ACK, Dss(data_ack=5)),
        (bytes.fromhex("1e0b200100000005000000"), ACK, None),
        # DSS: the width bits are reported as received
        (bytes.fromhex("1e042002"), ACK, Dss(ack64=True)),
        (bytes.fromhex("1e0e2004" "00000009" "00000001" "0010"), ACK,
         Dss(data_seq=9, subflow_seq=1, data_len=16)),
        (bytes.fromhex("1e102004" "00000009" "00000001" "0010" "abcd"), ACK,
         Dss(data_seq=9, subflow_seq=1, data_len=16, csum=0xABCD)),
        (bytes.fromhex("1e0e2008" "00000009" "00000001" "0010"), ACK, None),  # m without M: 4 bytes extra
        # ADD_ADDR (§3.4.1)
        (bytes.fromhex("1e1030" "01" "c0000201") + bytes(8), ACK,
         AddAddr(False, 1, bytes.fromhex("c0000201"), None, bytes(8))),
        (bytes.fromhex("1e0a31" "01" "c0000201" "1f90"), ACK, AddAddr(True, 1, bytes.fromhex("c0000201"), 8080, None)),
        (bytes.fromhex("1e1431" "02") + bytes(16), ACK, AddAddr(True, 2, bytes(16), None, None)),
        (bytes.fromhex("1e1e30" "02") + bytes(16) + b"\x00\x50" + bytes(8), ACK,
         AddAddr(False, 2, bytes(16), 80, bytes(8))),
        (bytes.fromhex("1e0830" "01" "c0000201"), ACK, None),  # non-echo needs the HMAC
        (bytes.fromhex("1e1131" "01" "c0000201") + bytes(9), ACK, None),
        # REMOVE_ADDR (§3.4.2): 1..8 ids
        (bytes.fromhex("1e0440" "05"), ACK, RemoveAddr((5,))),
        (bytes.fromhex("1e0b40") + bytes(range(8)), ACK, RemoveAddr(tuple(range(8)))),
        (bytes.fromhex("1e0340"), ACK, None),
        (bytes.fromhex("1e0c40") + bytes(9), ACK, None),
        # MP_PRIO (§3.3.8)
        (bytes.fromhex("1e0351"), ACK, MpPrio(True)),
        (bytes.fromhex("1e045100"), ACK, None),
        # MP_FAIL (§3.7), MP_FASTCLOSE (§3.5)
        (bytes.fromhex("1e0c6000" "0000000000000102"), ACK, MpFail(0x102)),
        (bytes.fromhex("1e0b6000" "00000000000001"), ACK, None),
        (bytes.fromhex("1e0c7000" "0102030405060708"), ACK, MpFastclose(0x0102030405060708)),
        # MP_TCPRST (§3.6) needs RST
        (bytes.fromhex("1e048106"), RST, MpTcpRst(True, 6)),
        (bytes.fromhex("1e048106"), ACK, None),
        # unknown subtype, wrong kind, length mismatch, too short
        (bytes.fromhex("1e0390"), ACK, None),
        (bytes.fromhex("1e03f0"), ACK, None),
        (bytes.fromhex("1d0351"), ACK, None),
        (bytes.fromhex("1e0451"), ACK, None),
        (bytes.fromhex("1e02"), ACK, None),
        (b"", ACK, None),
    ],
)
def test_parse_mptcp_lengths(opt, tcp_flags, expected):
    assert parse_mptcp(opt, tcp_flags, 0) == expected


def test_dss_widths_and_max_length():
    d = Dss(data_ack=2**64 - 1, ack64=True, data_seq=2**64 - 1, dsn64=True, subflow_seq=1, data_len=1, csum=0)
    assert len(build_mptcp(d)) == v.DSS_MAX_LEN
    assert build_mptcp(Dss(data_ack=1, ack64=False, data_seq=2, dsn64=False, subflow_seq=3, data_len=4))[3] == 0x05
    assert build_mptcp(Dss(data_ack=1, ack64=True, data_seq=2, dsn64=True, subflow_seq=3, data_len=4))[3] == 0x0F
    # width bits are written only with their field; a checksum only with a mapping
    assert build_mptcp(Dss(ack64=True, dsn64=True, csum=5, data_fin=True)) == bytes.fromhex("1e042010")


# --- build errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        MpCapable(version=16, flags=1),
        MpCapable(version=1, flags=256),
        MpCapable(version=1, flags=1, sndr_key=2**64),
        MpCapable(version=1, flags=1, rcvr_key=1),  # rcvr_key without sndr_key
        MpCapable(version=1, flags=1, sndr_key=1, data_len=1),  # data_len without both keys
        MpCapable(version=1, flags=1, sndr_key=1, rcvr_key=2, csum=1),  # csum without data_len
        MpJoinSyn(False, 256, 0, 0),
        MpJoinSyn(False, 0, 2**32, 0),
        MpJoinSynAck(False, 0, bytes(7), 0),
        MpJoinAck(bytes(32)),
        Dss(data_ack=2**32),  # 32-bit DATA_ACK
        Dss(data_ack=-1, ack64=True),
        Dss(data_seq=1, subflow_seq=1),  # incomplete mapping
        Dss(data_seq=2**32, subflow_seq=1, data_len=1),
        Dss(data_seq=1, subflow_seq=1, data_len=0x10000),
        Dss(data_seq=1, subflow_seq=1, data_len=1, csum=0x10000),
        AddAddr(False, 1, bytes(5), None, bytes(8)),
        AddAddr(False, 1, bytes(4), None, None),  # non-echo needs an HMAC
        AddAddr(True, 1, bytes(4), None, bytes(8)),  # an echo carries none
        AddAddr(True, 1, bytes(4), 0x10000, None),
        RemoveAddr(()),
        RemoveAddr(tuple(range(9))),
        RemoveAddr((256,)),
        MpFail(2**64),
        MpFastclose(-1),
        MpTcpRst(False, 256),
        "not an option",
        b"\x1e\x03\x50",
    ],
)
def test_build_mptcp_impossible(option):
    with pytest.raises(WireError):
        build_mptcp(option)


# --- build_options: the combination table -----------------------------------------------------

REPRESENTATIVE = {
    "MP_CAPABLE": MpCapable(version=1, flags=0x01),
    "MP_JOIN": MpJoinSyn(False, 1, 2, 3),
    "DSS": Dss(data_ack=1),
    "ADD_ADDR": AddAddr(True, 1, bytes(4)),
    "REMOVE_ADDR": RemoveAddr((1,)),
    "MP_PRIO": MpPrio(False),
    "MP_FAIL": MpFail(1),
    "MP_FASTCLOSE": MpFastclose(1),
    "MP_TCPRST": MpTcpRst(False, 1),
}
# Restated from docs/wire-api.md (kernel-faithful MP_FAIL + MP_TCPRST), not read from the code.
ALLOWED_PAIRS = {
    frozenset(p)
    for p in [
        ("DSS", "ADD_ADDR"),
        ("DSS", "REMOVE_ADDR"),
        ("DSS", "MP_PRIO"),
        ("DSS", "MP_FAIL"),
        ("DSS", "MP_FASTCLOSE"),
        ("DSS", "MP_TCPRST"),
        ("MP_FASTCLOSE", "MP_TCPRST"),
        ("MP_FAIL", "MP_TCPRST"),
    ]
}


@pytest.mark.parametrize("a, b", list(itertools.product(REPRESENTATIVE, repeat=2)))
def test_combination_table(a, b):
    options = [REPRESENTATIVE[a], REPRESENTATIVE[b]]
    if a != b and frozenset((a, b)) in ALLOWED_PAIRS:
        area = build_options(b"", options)
        assert parse_options(area, 0, len(area)).mptcp == tuple(build_mptcp(o) for o in options)
    else:
        with pytest.raises(WireError):
            build_options(b"", options)


def test_two_join_forms_are_one_subtype():
    with pytest.raises(WireError):
        build_options(b"", [MpJoinSyn(False, 1, 2, 3), MpJoinAck(bytes(20))])


def test_three_way_rst_combination():
    area = build_options(b"", [Dss(data_ack=1), MpFastclose(2), MpTcpRst(True, 1)])
    assert len(area) == 8 + 12 + 4


def test_build_options_linux_syn():
    tcp = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=1, ts_ecr=0)
    area = build_options(tcp, [MpCapable(version=1, flags=0x01)])
    assert area == v.LINUX_SYN_TCP_OPTIONS + v.LINUX_SYN_MP_CAPABLE
    assert len(area) == v.LINUX_SYN_OPTION_SPACE


def test_build_options_pads_with_nop_and_fits_40():
    tcp = encode_tcp_options(ts_val=1, ts_ecr=2)
    dss = Dss(data_ack=1, ack64=True, data_seq=2, dsn64=True, subflow_seq=3, data_len=4, csum=5)
    assert len(build_options(tcp, [dss])) == v.MAX_OPTION_SPACE  # timestamps 12 + DSS 28
    assert build_options(b"", [MpPrio(True)]) == bytes.fromhex("1e035101")
    assert build_options() == b""
    assert build_options(b"\x02\x04\x05\xb4") == b"\x02\x04\x05\xb4"
    with pytest.raises(WireError):
        build_options(tcp, [dss, MpPrio(True)])  # 43 -> 44 bytes
    with pytest.raises(WireError):
        build_options(bytes(41))


@settings(max_examples=100, deadline=None)
@given(st.lists(other_cases.map(lambda c: c[0]), max_size=3))
def test_build_options_accepts_exactly_the_table(options):
    names = [type(o).__name__ for o in options]
    subtypes = {
        "Dss": "DSS", "AddAddr": "ADD_ADDR", "RemoveAddr": "REMOVE_ADDR", "MpPrio": "MP_PRIO",
        "MpFail": "MP_FAIL", "MpFastclose": "MP_FASTCLOSE", "MpTcpRst": "MP_TCPRST",
    }
    subs = [subtypes[n] for n in names]
    legal = len(set(subs)) == len(subs) and all(
        frozenset(p) in ALLOWED_PAIRS for p in itertools.combinations(subs, 2)
    )
    size = sum(len(build_mptcp(o)) for o in options)
    if legal and size <= 40:
        area = build_options(b"", options)
        assert len(area) % 4 == 0 and len(area) - size < 4
        assert parse_options(area, 0, len(area)).mptcp == tuple(build_mptcp(o) for o in options)
    else:
        with pytest.raises(WireError):
            build_options(b"", options)
