"""`middlebox inspect` on the real captures of tests/vectors/ (see its README), no root needed.

Valid captures must pass (exit 0) with the facts every regeneration keeps; copies corrupted
here, one byte at a time, must fail (exit 1) with the violation that names the corruption.
The v1 captures are Linux-to-Linux; the v0 one is the converter in v0 mode against a
simulated RFC 6824 server (tests/vectors/make_v0_capture.py), judged with SHA-1 / HMAC-SHA1.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from middlebox.analysis.inspect import analyze, exit_status
from middlebox.analysis.pcapedit import SLL2_LEN, Capture
from middlebox.wire import (
    AddAddr,
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    build_mptcp,
    join_hmac,
    key_idsn,
    key_token,
    options_of,
    parse_mptcp,
    parse_packet,
    tcp_checksum,
)

VECTORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors")
SINGLE = os.path.join(VECTORS, "mptcp_v1_single.pcap")
JOIN = os.path.join(VECTORS, "mptcp_v1_join_addaddr.pcap")
CSUM = os.path.join(VECTORS, "mptcp_v1_checksum.pcap")
V0 = os.path.join(VECTORS, "mptcp_v0_checksum.pcap")


def kinds(report) -> set[str]:
    return {v["kind"] for c in report["connections"] for v in c["violations"]}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "middlebox", "inspect", *args],
                          capture_output=True, text=True, timeout=60)


# ---- valid captures ------------------------------------------------------------------------


def check_common(report, data_bytes: int, version: int = 1) -> dict:
    assert exit_status(report) == 0, report
    s = report["summary"]
    assert (s["connections"], s["violations"], s["unverifiable"], s["fallback_connections"]) == (1, 0, 0, 0)
    assert report["malformed_options"] == []
    c = report["connections"][0]
    assert c["version"] == version and c["fallbacks"] == [] and c["violations"] == []
    for side in ("client", "server"):
        key = int(c[side]["key"], 16)
        assert int(c[side]["token"], 16) == key_token(key, version)
        assert int(c[side]["idsn"], 16) == key_idsn(key, version)
    for dirname in ("c2s", "s2c"):
        d = c["directions"][dirname]
        assert d["data_bytes"] == data_bytes
        assert d["data_fin"] and d["data_fin_dsn"] == data_bytes + 1 and d["data_fin_acked"]
    first = c["subflows"][0]
    assert first["kind"] == "initial"
    if version == 1:
        assert first["client"].startswith("10.1.1.1:") and first["server"] == "10.1.1.2:5201"
    return c


def test_single_subflow_vector():
    r = analyze(SINGLE)
    c = check_common(r, 3000)
    assert len(c["subflows"]) == 1 and not c["checksums"]
    assert r["mptcp_options"]["MP_CAPABLE"] == 3 and r["mptcp_options"]["DSS"] > 0


def test_join_and_add_addr_vector():
    r = analyze(JOIN)
    c = check_common(r, 4000)
    joins = [sf for sf in c["subflows"] if sf["kind"] == "join"]
    assert len(joins) >= 1
    for sf in joins:
        j = sf["join"]
        assert (j["synack_hmac_verdict"], j["ack_hmac_verdict"]) == ("ok", "ok")
        assert j["token"] == c["server"]["token"] and j["initiator"] == "client"
        assert sf["client"].startswith("10.2.2.1:")
    announced = [a for a in c["add_addr"] if not a.get("echo_only")]
    assert announced and all(a["verdict"] == "ok" and a["echoed"] and a["from"] == "server" for a in announced)
    assert {"10.2.2.2"} <= {a["addr"] for a in announced}
    assert r["mptcp_options"]["MP_JOIN"] == 3 * len(joins)


def test_checksum_vector():
    r = analyze(CSUM)
    c = check_common(r, 3000)
    assert c["checksums"]
    for dirname in ("c2s", "s2c"):
        cs = c["directions"][dirname]["dss_checksums"]
        assert cs["ok"] >= 1 and cs["bad"] == 0 and cs["unverifiable"] == 0


def test_v0_checksum_vector():
    """The converter's v0 connection: SHA-1 tokens and IDSNs, every DSS checksum right."""
    r = analyze(V0)
    c = check_common(r, 1200, version=0)
    assert c["checksums"] and len(c["subflows"]) == 1
    assert c["subflows"][0]["client"] == "10.0.0.1:40123" and c["subflows"][0]["server"] == "10.1.1.2:5201"
    assert "events" not in c["subflows"][0]  # the version never changed during the handshake
    # the keys (pinned by the generator) hashed with SHA-1, not SHA-256
    assert c["client"]["key"] == "0x0102030405060708" and c["server"]["key"] == "0x1112131415161718"
    assert c["client"]["token"] == "0xdd5783bc" and c["client"]["idsn"] == "0x3a95ed6e4ebb4ad5"  # also tshark's
    assert int(c["client"]["token"], 16) != key_token(0x0102030405060708, 1)
    assert r["mptcp_options"] == {"DSS": 16, "MP_CAPABLE": 3}  # v0 has no MP_CAPABLE data form
    for dirname in ("c2s", "s2c"):
        cs = c["directions"][dirname]["dss_checksums"]
        assert cs == {"ok": 4, "bad": 0, "unverifiable": 0}  # 3 data mappings + the DATA_FIN
    for _, _, pkt, opts in Capture(V0).packets():
        for _, o in opts:
            assert not isinstance(o, MpCapable) or o.version == 0


@pytest.mark.parametrize("path,version", [(SINGLE, 1), (JOIN, 1), (CSUM, 1), (V0, 0)])
def test_cli_exit_0_text_and_json(path, version):
    text = run_cli(path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1].startswith("summary: 1 MPTCP connection(s)")
    assert "0 violation(s)" in text.stdout
    assert text.stdout.startswith(f"connection 1: MPTCP v{version}, checksums ")
    js = run_cli(path, "--json")
    assert js.returncode == 0
    assert json.loads(js.stdout)["summary"]["violations"] == 0
    assert json.loads(js.stdout)["connections"][0]["version"] == version


# ---- corrupted copies ----------------------------------------------------------------------


def first(cap: Capture, pred):
    for i, ip, pkt, opts in cap.packets():
        for where, opt in opts:
            if pred(pkt, opt):
                return i, ip, pkt, where, opt
    raise AssertionError("no such packet in the vector")


def corrupt_and_judge(cap: Capture, tmp_path):
    path = cap.write(tmp_path / "bad.pcap")
    r = analyze(path)
    assert exit_status(r) == 1
    cli = run_cli(path)
    assert cli.returncode == 1 and "VIOLATION" in cli.stdout
    return r


def test_join_synack_hmac_flip(tmp_path):
    cap = Capture(JOIN)
    i, _, _, where, _ = first(cap, lambda p, o: isinstance(o, MpJoinSynAck))
    cap.flip(i, where + 4 + 3)  # a byte of the truncated HMAC (after kind, len, subtype, id)
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"join-synack-hmac"}


def test_join_ack_hmac_flip(tmp_path):
    cap = Capture(JOIN)
    i, _, _, where, _ = first(cap, lambda p, o: isinstance(o, MpJoinAck))
    cap.flip(i, where + 4 + 19)  # last byte of the 160-bit HMAC
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"join-ack-hmac"}


def test_add_addr_hmac_flip(tmp_path):
    cap = Capture(JOIN)
    i, _, _, where, opt = first(cap, lambda p, o: isinstance(o, AddAddr) and not o.echo)
    cap.flip(i, where + 4 + len(opt.addr) + (2 if opt.port is not None else 0))
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"add-addr-hmac"}


def test_server_key_flip_in_third_ack(tmp_path):
    cap = Capture(SINGLE)
    i, _, _, where, _ = first(cap, lambda p, o: isinstance(o, MpCapable) and o.rcvr_key is not None)
    cap.flip(i, where + 12 + 7, 0x80)  # receiver's (server's) key as echoed by the client
    assert "key-mismatch" in kinds(corrupt_and_judge(cap, tmp_path))


def test_client_key_flip_breaks_idsn_and_join_hmacs(tmp_path):
    cap = Capture(JOIN)
    i, _, _, where, _ = first(cap, lambda p, o: isinstance(o, MpCapable) and o.rcvr_key is not None)
    cap.flip(i, where + 4 + 2, 0x10)  # the client's key: its only copy when the client has no data form
    k = kinds(corrupt_and_judge(cap, tmp_path))
    assert {"dsn-not-from-idsn", "join-synack-hmac", "join-ack-hmac"} <= k


def test_payload_flip_with_dss_checksum(tmp_path):
    cap = Capture(CSUM)
    for i, ip, pkt, opts in cap.packets():
        if pkt.payload_len > 100:
            cap.flip(i, pkt.payload_off + 50)  # TCP checksum left as captured (offload: not covering data)
            break
    r = corrupt_and_judge(cap, tmp_path)
    assert kinds(r) == {"dss-checksum"}


def test_payload_flip_under_full_tcp_checksum(tmp_path):
    """Without DSS checksums, a corrupted segment is caught by its (full) TCP checksum."""
    cap = Capture(SINGLE)
    for i, ip, pkt, opts in cap.packets():
        if pkt.payload_len > 100:
            cap.set_full_tcp_checksum(i)  # what the sender put on a real wire
            cap.flip(i, pkt.payload_off + 10)  # then the wire flipped a bit
            break
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"tcp-checksum"}


def test_dss_dsn_flip_is_a_mapping_conflict_or_data_conflict(tmp_path):
    cap = Capture(SINGLE)
    i, _, pkt, where, opt = first(cap, lambda p, o: isinstance(o, Dss) and o.data_seq is not None
                                  and o.data_len and p.payload_len)
    dsn_off = where + 4 + (0 if opt.data_ack is None else 8 if opt.ack64 else 4)
    cap.flip(i, dsn_off + (7 if opt.dsn64 else 3), 0x04)  # DSN + 4
    k = kinds(corrupt_and_judge(cap, tmp_path))
    assert k & {"mapping-conflict", "data-conflict", "dsn-not-from-idsn"}, k


# ---- the v0 vector, corrupted (its TCP checksums are full: fixed after each flip, as a ---
# ---- middlebox that rewrote the option would; otherwise tcp-checksum would say it first) ---

# key copy -> (packet predicate, key offset in the option), violations, direction of bad DSNs
V0_KEYS = {
    "syn-client": (lambda p, o: isinstance(o, MpCapable) and p.flags & 0x12 == 0x02, 4, "c2s"),
    "synack-server": (lambda p, o: isinstance(o, MpCapable) and p.flags & 0x12 == 0x12, 4, "s2c"),
    "ack-client": (lambda p, o: isinstance(o, MpCapable) and not p.flags & 0x02, 4, None),
    "ack-server": (lambda p, o: isinstance(o, MpCapable) and not p.flags & 0x02, 12, None),
}


@pytest.mark.parametrize("copy", list(V0_KEYS))
def test_v0_key_flip(tmp_path, copy):
    """v0 sends the client key twice (SYN, third ACK) and the server key twice (SYN/ACK, third
    ACK): any flipped copy disagrees with the other (key-mismatch); a flipped first copy is
    the key the DSNs are judged against, and the SHA-1 IDSN of a wrong key does not match."""
    pred, key_off, bad_dir = V0_KEYS[copy]
    cap = Capture(V0)
    i, _, _, where, opt = first(cap, pred)
    assert opt.version == 0
    cap.flip(i, where + key_off + 5, 0x20)
    cap.set_full_tcp_checksum(i)
    r = corrupt_and_judge(cap, tmp_path)
    c = r["connections"][0]
    assert c["version"] == 0
    side = "client" if "client" in copy else "server"
    mismatch = [v["detail"] for v in c["violations"] if v["kind"] == "key-mismatch"]
    assert len(mismatch) == 1 and mismatch[0].startswith(f"{side} key ")
    if bad_dir is None:
        assert kinds(r) == {"key-mismatch"}
    else:
        assert kinds(r) == {"key-mismatch", "dsn-not-from-idsn"}
        (dsn,) = [v["detail"] for v in c["violations"] if v["kind"] == "dsn-not-from-idsn"]
        assert dsn.startswith(f"{bad_dir}: 4 mapping(s)")


def test_v0_key_flip_without_checksum_fix_is_also_tcp_corruption(tmp_path):
    cap = Capture(V0)
    i, _, _, where, _ = first(cap, V0_KEYS["ack-server"][0])
    cap.flip(i, where + 12 + 5, 0x20)
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"key-mismatch", "tcp-checksum"}


def test_v0_payload_flip_with_dss_checksum(tmp_path):
    cap = Capture(V0)
    for i, ip, pkt, opts in cap.packets():
        if pkt.payload_len > 100:
            cap.flip(i, pkt.payload_off + 50)
            cap.set_full_tcp_checksum(i)  # only the DSS checksum can tell now
            break
    assert kinds(corrupt_and_judge(cap, tmp_path)) == {"dss-checksum"}


# ---- captures that miss things: unverifiable, never a violation -------------------------


def test_snaplen_truncation_is_unverifiable_not_a_violation(tmp_path):
    cap = Capture(CSUM)
    cap.truncate_all(SLL2_LEN + 120)  # headers (with options) kept, most payload cut
    r = analyze(cap.write(tmp_path / "short.pcap"))
    assert exit_status(r) == 0, kinds(r)
    c = r["connections"][0]
    assert sum(c["directions"][d]["dss_checksums"]["unverifiable"] for d in ("c2s", "s2c")) >= 1
    assert sum(c["directions"][d]["dss_checksums"]["bad"] for d in ("c2s", "s2c")) == 0


def test_missing_data_packet_is_unverifiable(tmp_path):
    cap = Capture(CSUM)
    for i, ip, pkt, opts in cap.packets():
        if pkt.payload_len > 100:
            cap.drop(i)
            break
    r = analyze(cap.write(tmp_path / "hole.pcap"))
    assert exit_status(r) == 0, kinds(r)
    assert r["summary"]["unverifiable"] >= 1
    assert "data-not-captured" in {u["kind"] for u in r["connections"][0]["unverifiable"]}


def test_duplicated_packets_are_retransmissions(tmp_path):
    cap = Capture(CSUM)
    cap.records = [r for rec in cap.records for r in (rec, (bytearray(rec[0]), bytearray(rec[1])))]
    r = analyze(cap.write(tmp_path / "dup.pcap"))
    assert exit_status(r) == 0, kinds(r)


@pytest.mark.parametrize("cut", [10, 33, 101])
def test_truncated_file_exits_2_with_one_line(tmp_path, cut):
    data = open(SINGLE, "rb").read()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) - cut] if cut != 10 else data[:10])
    res = run_cli(str(path))
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_garbage_exits_2(tmp_path):
    path = tmp_path / "garbage.pcap"
    path.write_bytes(b"this is not a capture at all\n" * 10)
    res = run_cli(str(path))
    assert res.returncode == 2 and "not a pcap or pcapng" in res.stderr
    res = run_cli(str(tmp_path / "missing.pcap"))
    assert res.returncode == 2 and "cannot open" in res.stderr
