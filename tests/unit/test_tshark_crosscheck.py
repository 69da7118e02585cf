"""Our MPTCP option writer against an independent decoder: tshark's MPTCP dissector.

Each case is one option built by `middlebox.wire.build_mptcp`, put in a TCP segment by scapy,
written to a pcap, decoded by `tshark -T json -o mptcp.analyze_mptcp:TRUE`; tshark's
`tcp.options.mptcp.*` fields (and `mptcp.expected_token` / `mptcp.expected_idsn` where a key
is present) must equal our values. Needs only tshark (no root).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from scapy.all import IP, TCP, wrpcap  # type: ignore

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
    build_mptcp,
    key_idsn,
    key_token,
    parse_mptcp,
)

KEY_A, KEY_B = 0x0102030405060708, 0x1112131415161718  # PROTOCOL.md vectors
SYN, ACK, RST = "S", "A", "RA"

# (name, option, TCP flags, payload length, expected tshark fields: name -> value)
CASES = [
    ("mpc-v1-syn", MpCapable(1, 0x81, None, None, None, None), SYN, 0,
     {"subtype": 0, "version": 1, "checksumreq.flags": 1, "sha256.flag": 1}),
    ("mpc-v1-synack", MpCapable(1, 0x01, KEY_B, None, None, None), "SA", 0,
     {"subtype": 0, "version": 1, "sendkey": KEY_B, "checksumreq.flags": 0}),
    ("mpc-v1-ack", MpCapable(1, 0x01, KEY_A, KEY_B, None, None), ACK, 0,
     {"sendkey": KEY_A, "recvkey": KEY_B}),
    ("mpc-v1-data", MpCapable(1, 0x01, KEY_A, KEY_B, 100, None), ACK, 100,
     {"sendkey": KEY_A, "recvkey": KEY_B, "datalvllen": 100}),
    ("mpc-v1-data-csum", MpCapable(1, 0x81, KEY_A, KEY_B, 100, 0xBEEF), ACK, 100,
     {"sendkey": KEY_A, "recvkey": KEY_B, "datalvllen": 100, "checksum": 0xBEEF}),
    ("mpc-v0-syn", MpCapable(0, 0x01, KEY_A, None, None, None), SYN, 0,
     {"version": 0, "sendkey": KEY_A, "sha1.flag": 1}),
    ("join-syn", MpJoinSyn(True, 3, 0x66840DDA, 0xA1A2A3A4), SYN, 0,
     {"subtype": 1, "backup.flag": 1, "addrid": 3, "recvtok": 0x66840DDA, "sendrand": 0xA1A2A3A4}),
    ("join-synack", MpJoinSynAck(False, 4, bytes.fromhex("864b40428762fd06"), 0xB1B2B3B4), "SA", 0,
     {"subtype": 1, "addrid": 4, "sendtrunchmac": 0x864B40428762FD06, "sendrand": 0xB1B2B3B4}),
    ("join-ack", MpJoinAck(bytes.fromhex("53037f2899475529844115fd07e665d23d3554fb")), ACK, 0,
     {"subtype": 1, "sendhmac": "53037f2899475529844115fd07e665d23d3554fb"}),
    ("dss-ack32", Dss(0x12345678, False, None, False, None, None, None, False), ACK, 0,
     {"subtype": 2, "dataackpresent.flag": 1, "dataack8.flag": 0, "rawdataack": 0x12345678}),
    ("dss-ack64-map64-csum", Dss(0x1122334455667788, True, 0x99AABBCCDDEEFF00, True, 1, 1400, 0x1234, False),
     ACK, 1400,
     {"dataackpresent.flag": 1, "dataack8.flag": 1, "rawdataack": 0x1122334455667788,
      "dseqnpresent.flag": 1, "dseqn8.flag": 1, "rawdataseqno": 0x99AABBCCDDEEFF00,
      "subflowseqno": 1, "datalvllen": 1400}),  # tshark 4.0 shows a DSS checksum only after a whole
     # checksum-negotiating handshake on the stream; our DSS checksum values are checked against
     # Linux instead (tests/integration/test_inspect_capture.py, checksum run)
    ("dss-map32", Dss(None, False, 0xCAFEBABE, False, 77, 500, None, False), ACK, 500,
     {"dataackpresent.flag": 0, "dseqnpresent.flag": 1, "dseqn8.flag": 0, "rawdataseqno": 0xCAFEBABE,
      "subflowseqno": 77, "datalvllen": 500}),
    ("dss-data-fin", Dss(5, False, 0x1000, True, 0, 1, None, True), ACK, 0,
     {"datafin.flag": 1, "subflowseqno": 0, "datalvllen": 1, "rawdataseqno": 0x1000}),
    ("add-addr-v4", AddAddr(False, 1, bytes([10, 2, 2, 2]), None, bytes.fromhex("0102030405060708")), ACK, 0,
     {"subtype": 3, "echo": 0, "addrid": 1, "ipv4": "10.2.2.2", "addaddrtrunchmac": 0x0102030405060708}),
    ("add-addr-v4-port", AddAddr(False, 2, bytes([10, 2, 2, 2]), 8080, bytes(8)), ACK, 0,
     {"addrid": 2, "ipv4": "10.2.2.2", "port": 8080}),
    ("add-addr-v6-echo", AddAddr(True, 5, bytes.fromhex("fd000002" + "00" * 10 + "0002"), None, None), ACK, 0,
     {"echo": 1, "addrid": 5, "ipv6": "fd00:2::2"}),
    ("remove-addr", RemoveAddr((1, 2, 3)), ACK, 0, {"subtype": 4, "rm_addr.count": 3}),
    ("mp-prio", MpPrio(True), ACK, 0, {"subtype": 5, "backup.flag": 1}),
    ("mp-fail", MpFail(0x0102030405060708), ACK, 0, {"subtype": 6, "rawdataseqno": 0x0102030405060708}),
    ("mp-fastclose", MpFastclose(KEY_B), ACK, 0, {"subtype": 7, "recvkey": KEY_B}),
    ("mp-tcprst", MpTcpRst(True, 4), RST, 0, {"subtype": 8, "rst_reason": 4, "flag_T.flag": True}),
]

# expected mptcp.expected_token / expected_idsn (tshark computes them from the sender's key)
KEYED = {"mpc-v1-synack": KEY_B, "mpc-v1-ack": KEY_A}


def _norm(v):
    if isinstance(v, list):
        v = v[0]
    if isinstance(v, str):
        low = v.lower()
        if low in ("true", "false"):
            return low == "true"
        if low.startswith("0x"):
            return int(low, 16)
        if low.isdigit():
            return int(low)
        return low
    return v


@pytest.fixture(scope="module")
def tshark_layers(tmp_path_factory):
    assert shutil.which("tshark"), "tshark is required (make deps installs it)"
    pkts = []
    for i, (name, opt, flags, plen, _) in enumerate(CASES):
        raw = build_mptcp(opt)
        assert parse_mptcp(raw, {"S": 2, "SA": 0x12, "A": 0x10, "RA": 0x14}[flags], plen) == opt, name
        tcp = TCP(sport=40000 + i, dport=5201, flags=flags, seq=1000, ack=2000 if "A" in flags else 0,
                  options=[(30, raw[2:])])
        pkts.append(IP(src="10.1.1.1", dst="10.1.1.2") / tcp / (b"x" * plen))
    path = tmp_path_factory.mktemp("tshark") / "options.pcap"
    wrpcap(str(path), pkts)
    out = subprocess.run(["tshark", "-r", str(path), "-o", "mptcp.analyze_mptcp:TRUE", "-o",
                          "tcp.analyze_sequence_numbers:TRUE", "-T", "json"],
                         capture_output=True, text=True, check=True).stdout
    frames = json.loads(out)
    assert len(frames) == len(CASES)
    return {name: frame["_source"]["layers"] for (name, *_), frame in zip(CASES, frames)}


def _find(tree, key):
    """All values of `key` anywhere in tshark's JSON tree."""
    found = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                found.append(v)
            found.extend(_find(v, key))
    elif isinstance(tree, list):
        for v in tree:
            found.extend(_find(v, key))
    return found


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_tshark_agrees_with_our_option(tshark_layers, case):
    name, opt, flags, plen, expected = case
    layers = tshark_layers[name]
    for field, want in expected.items():
        got = _find(layers, f"tcp.options.mptcp.{field}")
        if not got:
            got = _find(layers, f"mptcp.{field}")
        assert got, f"{name}: tshark shows no {field}"
        value = _norm(got[0])
        if isinstance(want, str):  # addresses and byte strings: tshark may separate bytes by ':'
            want = want.lower().replace(":", "")
            value = str(value).replace(":", "")
        assert value == want, f"{name}: {field} tshark {got[0]!r} ours {want!r}"


@pytest.mark.parametrize("name", sorted(KEYED))
def test_tshark_expected_token_and_idsn(tshark_layers, name):
    key = KEYED[name]
    layers = tshark_layers[name]
    token = _find(layers, "mptcp.expected_token")
    idsn = _find(layers, "mptcp.expected_idsn")
    assert token and idsn, f"{name}: tshark computed no token/idsn"
    assert _norm(token[0]) == key_token(key)
    assert _norm(idsn[0]) == key_idsn(key)
