"""`middlebox inspect` on hand-made MPTCP v0 (RFC 6824) handshakes: what the v0 vector cannot
show, because the converter makes one subflow and sends no ADD_ADDR or MP_PRIO.

Joins are judged with HMAC-SHA1 (a join signed with HMAC-SHA256 is a violation in a v0
connection), v0 ADD_ADDR (IPVer nibble, no HMAC) and v0 MP_PRIO (with an address id) are
options, not malformed ones, and the version the handshake settles on is the one used.
"""

from __future__ import annotations

import pytest

from middlebox.analysis.trace import Trace
from middlebox.wire import MpCapable, MpJoinAck, MpJoinSyn, MpJoinSynAck, build_mptcp, join_hmac, key_idsn, key_token

from tests.unit.test_core_harness import ACK, SYN, make_packet

KA, KB = 0x0102030405060708, 0x1112131415161718
NA, NB = 0x01020304, 0x0A0B0C0D
C1, C2, S1 = "10.1.1.1", "10.2.2.1", "10.1.1.2"


def opts(*raw: bytes) -> bytes:
    return b"".join(raw)


def handshake(t: Trace, syn_v=0, synack_v=0, ack_v=0, cport=40000):
    syn = MpCapable(syn_v, 0x01, KA if syn_v == 0 else None)
    t.feed(0.1, make_packet(C1, S1, cport, 80, 1000, 0, SYN, opts(build_mptcp(syn))))
    t.feed(0.2, make_packet(S1, C1, 80, cport, 5000, 1001, SYN | ACK, opts(build_mptcp(MpCapable(synack_v, 0x01, KB)))))
    t.feed(0.3, make_packet(C1, S1, cport, 80, 1001, 5001, ACK, opts(build_mptcp(MpCapable(ack_v, 0x01, KA, KB)))))


def join(t: Trace, hmac_version: int, token_version: int = 0):
    t.feed(1.1, make_packet(C2, S1, 41000, 80, 7000, 0, SYN,
                            opts(build_mptcp(MpJoinSyn(False, 1, key_token(KB, token_version), NA)))))
    t.feed(1.2, make_packet(S1, C2, 80, 41000, 9000, 7001, SYN | ACK,
                            opts(build_mptcp(MpJoinSynAck(False, 0, join_hmac(KB, KA, NB, NA, hmac_version)[:8], NB)))))
    t.feed(1.3, make_packet(C2, S1, 41000, 80, 7001, 9001, ACK,
                            opts(build_mptcp(MpJoinAck(join_hmac(KA, KB, NA, NB, hmac_version)[:20])))))


def conn_of(t: Trace):
    r = t.report()
    assert r["malformed_options"] == []
    (c,) = r["connections"]
    return r, c


def test_v0_join_hmac_sha1_ok_and_hmac_sha256_bad():
    t = Trace()
    handshake(t)
    join(t, hmac_version=0)
    r, c = conn_of(t)
    assert c["version"] == 0 and c["violations"] == []
    assert c["client"]["token"] == f"0x{key_token(KA, 0):08x}" and c["client"]["idsn"] == f"0x{key_idsn(KA, 0):016x}"
    (sf,) = [s for s in c["subflows"] if s["kind"] == "join"]
    assert (sf["join"]["synack_hmac_verdict"], sf["join"]["ack_hmac_verdict"]) == ("ok", "ok")
    assert sf["join"]["token"] == c["server"]["token"] and sf["join"]["initiator"] == "client"

    t = Trace()
    handshake(t)
    join(t, hmac_version=1)  # v1's HMAC-SHA256 in a v0 connection
    _, c = conn_of(t)
    assert {v["kind"] for v in c["violations"]} == {"join-synack-hmac", "join-ack-hmac"}


def test_v0_join_with_a_v1_token_names_no_connection():
    t = Trace()
    handshake(t)
    join(t, hmac_version=0, token_version=1)
    r = t.report()
    assert len(r["orphan_joins"]) == 1 and r["orphan_joins_are_violations"]
    assert r["orphan_joins"][0]["token"] == f"0x{key_token(KB, 1):08x}"


def test_v0_add_addr_and_mp_prio_forms_are_parsed_not_malformed():
    t = Trace()
    handshake(t)
    add_addr = bytes([30, 10, 0x34, 2, 10, 2, 2, 2]) + (8080).to_bytes(2, "big")  # IPVer 4, port
    add_addr6 = bytes([30, 20, 0x36, 3]) + bytes.fromhex("fd000002000000000000000000000002")
    prio = bytes([30, 4, 0x51, 0])  # B=1, address id 0 (RFC 6824 §3.3.8)
    t.feed(0.4, make_packet(S1, C1, 80, 40000, 5001, 1001, ACK, opts(add_addr)))
    t.feed(0.5, make_packet(S1, C1, 80, 40000, 5001, 1001, ACK, opts(add_addr6)))
    t.feed(0.6, make_packet(C1, S1, 40000, 80, 1001, 5001, ACK, opts(prio)))
    r, c = conn_of(t)
    assert c["violations"] == [] and r["mptcp_options"]["ADD_ADDR"] == 2 and r["mptcp_options"]["MP_PRIO"] == 1
    assert [(a["addr_id"], a["addr"], a["port"], a["hmac"], a["verdict"]) for a in c["add_addr"]] == [
        (2, "10.2.2.2", 8080, None, "none"), (3, "fd00:2::2", None, None, "none")]
    assert c["mp_prio"] == ["subflow 1 backup=1"]


def test_v0_malformed_add_addr_is_still_malformed():
    t = Trace()
    handshake(t)
    t.feed(0.4, make_packet(S1, C1, 80, 40000, 5001, 1001, ACK, opts(bytes([30, 8, 0x35, 2, 10, 2, 2, 2]))))  # IPVer 5
    r = t.report()
    assert len(r["malformed_options"]) == 1
    assert {v["kind"] for v in r["connections"][0]["violations"]} == {"malformed-option"}


@pytest.mark.parametrize("syn_v", [1, 0])
def test_version_is_the_one_the_handshake_settles_on(syn_v):
    """RFC 8684 §3.1: the SYN/ACK may answer a lower version; then v0 hashes are used."""
    t = Trace()
    handshake(t, syn_v=syn_v, synack_v=0, ack_v=0)
    join(t, hmac_version=0)
    _, c = conn_of(t)
    assert c["version"] == 0 and c["violations"] == []
    assert c["server"]["token"] == f"0x{key_token(KB, 0):08x}"
    events = c["subflows"][0].get("events", [])
    assert events == (["MP_CAPABLE SYN/ACK says version 0, earlier v1"] if syn_v == 1 else [])


def test_v1_handshake_is_still_v1():
    t = Trace()
    handshake(t, syn_v=1, synack_v=1, ack_v=1)
    join(t, hmac_version=1, token_version=1)
    _, c = conn_of(t)
    assert c["version"] == 1 and c["violations"] == []
    assert c["client"]["idsn"] == f"0x{key_idsn(KA, 1):016x}"


def test_v0_text_report():
    import io

    from middlebox.analysis.inspect import render_text

    t = Trace()
    handshake(t)
    t.feed(0.4, make_packet(S1, C1, 80, 40000, 5001, 1001, ACK, opts(bytes([30, 8, 0x34, 2, 10, 2, 2, 2]))))
    out = io.StringIO()
    render_text(t.report(), out)
    text = out.getvalue()
    assert text.startswith("connection 1: MPTCP v0, ")
    assert "add_addr from server: id 2 10.2.2.2 (v0: no hmac, no echo)\n" in text
