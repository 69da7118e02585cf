"""`middlebox inspect` on fresh captures of real Linux MPTCP transfers (root, namespaces).

For each of plain and `net.mptcp.checksum_enabled=1`: a 2 MB transfer each way between a Linux
MPTCP client in the mbox namespace (a `subflow` endpoint on its path-2 address) and a Linux
MPTCP server announcing its path-2 address (ADD_ADDR), captured by tcpdump on the server
(`middlebox.analysis.lab.capture_transfer`; namespaces unique and always deleted). inspect must
decode every MPTCP option, find every key/token/HMAC valid, the mappings complete and (with
checksums) every DSS checksum right, and agree with the kernel's own MIB counters. Then single
bytes of the capture are corrupted and inspect must report each corruption (exit 1).

TCP checksums: captures on veth hold the partial (pseudo-header only) checksum of offload,
which covers no payload, so inspect counts them as `offloaded`. A payload byte flipped under
such a checksum is only detectable by a DSS checksum; to model corruption on a real wire, the
plain-run test first gives the segment its full TCP checksum, then flips a payload bit, and
inspect must report `tcp-checksum`. Option bytes are flipped without touching the TCP
checksum (the offload checksum does not cover them either), so the only violation left is
the one the flipped option names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from middlebox.analysis.inspect import analyze, exit_status
from middlebox.analysis.lab import capture_transfer
from middlebox.analysis.pcapedit import Capture
from middlebox.wire import MpCapable, MpJoinSynAck

pytestmark = pytest.mark.integration

SIZE = 2 * 1024 * 1024
MUST_STAY_ZERO = ("MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinNoTokenFound",
                  "MPJoinAckHMacFailure", "DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx",
                  "DataCsumErr", "MPFailRx", "DssFallback")


def inspect_cli(path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "middlebox", "inspect", path, *extra],
                          capture_output=True, text=True, timeout=300)


def kinds(report) -> set[str]:
    return {v["kind"] for c in report["connections"] for v in c["violations"]}


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "checksum"])
def transfer(request, tmp_path_factory):
    assert os.geteuid() == 0, "integration tests run as root (namespaces, tcpdump)"
    path = str(tmp_path_factory.mktemp("cap") / "transfer.pcap")
    res = capture_transfer(path, size=SIZE, chunks=64, checksum=request.param, join=True,
                           add_addr=True, rate_mbit=100, delay=0.5)
    return request.param, res


def test_inspect_finds_everything_valid(transfer):
    checksum, res = transfer
    assert re.search(r"^0 packets dropped by kernel", res.tcpdump_stats, re.M), res.tcpdump_stats
    cli = inspect_cli(res.path)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    r = analyze(res.path)
    s = r["summary"]
    assert (s["connections"], s["violations"], s["fallback_connections"]) == (1, 0, 0), cli.stdout
    assert s["unverifiable"] == 0, cli.stdout
    assert r["malformed_options"] == [] and r["orphan_joins"] == [] and r["partial_subflows"] == []
    c = r["connections"][0]
    assert c["version"] == 1 and c["checksums"] == checksum and c["fallbacks"] == []
    # every option type Linux used here was decoded
    assert {"MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR"} <= set(r["mptcp_options"])
    joins = [sf for sf in c["subflows"] if sf["kind"] == "join"]
    assert len(joins) >= 1
    for sf in joins:
        assert (sf["join"]["synack_hmac_verdict"], sf["join"]["ack_hmac_verdict"]) == ("ok", "ok")
        assert sf["join"]["token"] == c["server"]["token"]
    announced = [a for a in c["add_addr"] if not a.get("echo_only")]
    assert announced and all(a["verdict"] == "ok" and a["echoed"] for a in announced)
    for dirname in ("c2s", "s2c"):
        d = c["directions"][dirname]
        assert d["data_bytes"] == SIZE
        assert d["data_fin"] and d["data_fin_dsn"] == SIZE + 1 and d["data_fin_acked"]
        if checksum:
            assert d["dss_checksums"]["ok"] >= 1
            assert d["dss_checksums"]["bad"] == d["dss_checksums"]["unverifiable"] == 0
        else:
            assert d["dss_checksums"] is None
    # more than one subflow carried data
    assert sum(1 for sf in c["subflows"] if sf["payload_bytes"]["c2s"] + sf["payload_bytes"]["s2c"]) >= 2
    # the kernel agrees: one MP_CAPABLE connection, as many joins as inspect saw, no failure
    srv = res.server_nstat
    assert srv.get("MPCapableSYNRX") == 1 and srv.get("MPCapableACKRX") == 1
    assert srv.get("MPJoinAckRx") == len(joins)
    for name in MUST_STAY_ZERO:
        assert srv.get(name, 0) == 0, name
        assert res.client_nstat.get(name, 0) == 0, name


def test_payload_corruption_is_reported(transfer, tmp_path):
    checksum, res = transfer
    cap = Capture(res.path)
    for i, ip, pkt, opts in cap.packets():
        if pkt.payload_len > 500:
            if not checksum:
                cap.set_full_tcp_checksum(i)  # what a real wire carries; then the wire flips a bit
            cap.flip(i, pkt.payload_off + 333, 0x20)
            break
    path = cap.write(tmp_path / "payload.pcap")
    cli = inspect_cli(path)
    assert cli.returncode == 1, cli.stdout
    expected = "dss-checksum" if checksum else "tcp-checksum"
    assert f"VIOLATION {expected}" in cli.stdout
    assert kinds(analyze(path)) == {expected}


def test_join_hmac_corruption_is_reported(transfer, tmp_path):
    _, res = transfer
    cap = Capture(res.path)
    for i, ip, pkt, opts in cap.packets():
        hit = [w for w, o in opts if isinstance(o, MpJoinSynAck)]
        if hit:
            cap.flip(i, hit[0] + 4 + 5)  # a byte of the 64-bit truncated HMAC
            break
    path = cap.write(tmp_path / "hmac.pcap")
    cli = inspect_cli(path)
    assert cli.returncode == 1 and "VIOLATION join-synack-hmac" in cli.stdout
    assert kinds(analyze(path)) == {"join-synack-hmac"}


def test_key_corruption_is_reported(transfer, tmp_path):
    _, res = transfer
    cap = Capture(res.path)
    for i, ip, pkt, opts in cap.packets():
        hit = [w for w, o in opts if isinstance(o, MpCapable) and o.rcvr_key is not None]
        if hit:
            cap.flip(i, hit[0] + 12 + 1, 0x08)  # the server's key as echoed in the third ACK
            break
    path = cap.write(tmp_path / "key.pcap")
    cli = inspect_cli(path)
    assert cli.returncode == 1 and "VIOLATION key-mismatch" in cli.stdout
    assert kinds(analyze(path)) == {"key-mismatch"}
