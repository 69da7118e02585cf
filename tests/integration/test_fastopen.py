"""TCP Fast Open (RFC 7413) from a plain-TCP guest, through the converter, to a Linux MPTCP
server: "a guest SYN carrying data converts if it can, else falls back cleanly".

Setup: net.ipv4.tcp_fastopen=3 in the server namespace and TCP_FASTOPEN on the MPTCP listening
socket (Linux takes Fast Open on an MPTCP listener: net/mptcp/fastopen.c, passive side);
net.ipv4.tcp_fastopen=1 in the guest, which connects with sendto(MSG_FASTOPEN) twice: the
first SYN asks for a cookie (no data in it), the second carries the cookie and 1000 bytes.
Each connection then moves 300 KB each way (sha256 checked). tcpdump in the server namespace
proves that Fast Open really happened: the second SYN has data and a cookie, its SYN/ACK
acks the data; the server's TcpExtTCPFastOpenPassive moves by one.

What this kernel (6.18) does, asserted exactly:
* --passthrough: Fast Open works, both sockets are plain TCP (no MP_CAPABLE reached the
  server), no reset.
* the converter: both connections must be MPTCP, none falling back, no server MIB error
  (the server takes MPTCP Fast Open, so the conversion is possible). The bytes after the SYN
  data start at DSN IDSN+1, subflow seq 1, as RFC 8684 Appendix B.3 (Figure 19, erratum
  6609) and Linux (fastopen.c adds the SYN data's length to ssn_offset) keep the SYN data
  outside the data sequence space (tests/unit/test_core_fastopen.py). Counting the SYN data
  made the server answer MPTcpExtDSSNoMatchTCP and fall back in the middle of the connection.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import Server, is_fallback, mptcp_info_flags, payload, sha256_of
from middlebox.analysis.pcap import read_packets
from test_correctness import SERVER_MUST_STAY_ZERO
from test_outbound_core import core_counters

KB = 1024
UP_N, DOWN_N = 300 * KB, 300 * KB
SYN_DATA_N = 1000  # what the guest puts in the SYN (one sendto)
PORT = 5201
TCP_FASTOPEN = 23
MSG_FASTOPEN = 0x20000000
TFO_OPTION = 34

pytestmark = pytest.mark.topology(sysctls={
    "server": {"net.ipv4.tcp_fastopen": 3},  # client and server (cookies required)
    "guest": {"net.ipv4.tcp_fastopen": 1},   # client
})


class TfoServer(Server):
    """MPTCP listener with TCP_FASTOPEN. Protocol `BOTH n m\\n`: the server sends
    payload(m, seed=2) while it hashes the n bytes that follow the line, then sends their hex
    sha256 and closes. MPTCP_INFO flags are read once everything arrived."""

    def __init__(self, t) -> None:
        super().__init__(t, port=PORT)
        self.sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 16)

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(20)
            f = conn.makefile("rb")
            _, n, m = f.readline().split()
            n, m = int(n), int(m)
            sender = threading.Thread(target=conn.sendall, args=(payload(m, seed=2),), daemon=True)
            sender.start()
            digest = sha256_of(f.read1, n)
            sender.join(20)
            self.mptcp_flags.append(mptcp_info_flags(conn))
            conn.sendall(digest)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # the guest's close
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()


def tfo_exchange(t, srv: Server, seed: int) -> str | None:
    """One guest connection opened with sendto(MSG_FASTOPEN); None when both directions were
    byte-exact, else what went wrong."""
    up = payload(UP_N, seed=seed)
    msg = f"BOTH {UP_N} {DOWN_N}\n".encode() + up
    with t.in_netns(t.guest):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    err: list[str] = []
    buf = bytearray()
    with c:
        try:
            # blocking: with a cookie the data goes in the SYN; without, after the handshake
            first = c.sendto(msg[:SYN_DATA_N], MSG_FASTOPEN, (srv.addr, srv.port))
            c.settimeout(15)

            def send_rest() -> None:
                try:
                    c.sendall(msg[first:])
                except OSError as e:
                    err.append(f"send: {type(e).__name__}: {e}")

            th = threading.Thread(target=send_rest, daemon=True)
            th.start()
            while len(buf) <= DOWN_N + 64:
                chunk = c.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
            th.join(15)
        except OSError as e:
            err.append(f"{type(e).__name__}: {e}")
    if bytes(buf[:DOWN_N]) != payload(DOWN_N, seed=2):
        err.append(f"download corrupted or truncated ({len(buf)} bytes)")
    elif bytes(buf[DOWN_N:]) != hashlib.sha256(up).hexdigest().encode():
        err.append(f"upload corrupted: server's sha256 {bytes(buf[DOWN_N:])[:64]!r}")
    return "; ".join(err) or None


def _after_server_fin(segs: list[dict], rst: dict) -> bool:
    """Does `rst` (from the server) come after the server's FIN on the same connection?"""
    i = segs.index(rst)
    return any(s["flags"] & 0x01 and s["sport"] == PORT and s["dport"] == rst["dport"] for s in segs[:i])


def tcp_segments(path: str) -> list[dict]:
    """IPv4 TCP segments of the capture (headers only: the snaplen cuts payloads)."""
    out = []
    for _, ip in read_packets(path):
        if ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        sport, dport, seq, ack = struct.unpack_from("!HHII", ip, ihl)
        doff = (ip[ihl + 12] >> 4) * 4
        flags = ip[ihl + 13]
        raw = ip[ihl + 20: ihl + doff]
        opts, i = {}, 0
        while i < len(raw) and raw[i] != 0:
            if raw[i] == 1:
                i += 1
                continue
            if i + 1 >= len(raw) or raw[i + 1] < 2:
                break
            opts[raw[i]] = raw[i + 2: i + raw[i + 1]]
            i += raw[i + 1]
        out.append(dict(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, opts=opts,
                        plen=total - ihl - doff))
    return out


def start_capture(t, path: str) -> subprocess.Popen:
    # --immediate-mode: without it the packets wait in the ring buffer and die with tcpdump
    cap = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", t.paths[0].server_if, "-U",
                             "--immediate-mode", "-s", "128", "-w", path, f"tcp port {PORT}"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = cap.stderr.readline()
    assert "listening on" in line, f"tcpdump did not start: {line}"
    return cap


def run_two_connections(mbox, tmp_path, *daemon_args: str) -> dict:
    """Cookie-request connection, then SYN-data connection, with the daemon running."""
    t = mbox.t
    pcap = str(tmp_path / "server.pcap")
    cap = start_capture(t, pcap)
    srv = None
    try:
        d = mbox.start(*daemon_args)
        srv = TfoServer(t)
        before = t.nstat(t.server, prefix=None)
        errors = [tfo_exchange(t, srv, seed=3), tfo_exchange(t, srv, seed=4)]
        deadline = time.monotonic() + 5
        while len(srv.mptcp_flags) + len(srv.errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the server's recv(1) sees the close
        after = t.nstat(t.server, prefix=None)
        rc, _ = d.stop()
    finally:
        if srv is not None:
            srv.close()
        cap.terminate()
        cap.wait(5)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)
             if after.get(k, 0) != before.get(k, 0)}
    r = dict(errors=errors, delta=delta, flags=list(srv.mptcp_flags), server_errors=srv.errors,
             rc=rc, output=d.output, core=core_counters(d.output), segments=tcp_segments(pcap))
    print("server nstat delta:", delta)
    print("server MPTCP_INFO flags:", r["flags"], "daemon:", r["core"])
    return r


def assert_fast_open_happened(r: dict) -> None:
    """Both directions byte-exact, and Fast Open really exercised: the first SYN asks for a
    cookie, the second carries it and SYN_DATA_N bytes, which its SYN/ACK acknowledges."""
    assert r["errors"] == [None, None], r["errors"]
    assert not r["server_errors"], r["server_errors"]
    segs = r["segments"]
    syns = [s for s in segs if s["flags"] & 0x12 == 0x02 and s["dport"] == PORT]
    assert len({s["sport"] for s in syns}) == 2, syns
    first, second = syns[0], [s for s in syns if s["sport"] != syns[0]["sport"]][0]
    assert first["opts"].get(TFO_OPTION) == b"" and first["plen"] == 0, "cookie request"
    cookie = second["opts"].get(TFO_OPTION)
    assert cookie and len(cookie) >= 4, f"second SYN without a cookie: {second}"
    assert second["plen"] == SYN_DATA_N, f"second SYN without data: {second}"
    synacks = [s for s in segs if s["flags"] & 0x12 == 0x12 and s["dport"] == second["sport"]]
    assert synacks and synacks[0]["ack"] == (second["seq"] + 1 + SYN_DATA_N) & 0xFFFFFFFF, (
        "the server did not take the SYN data")
    first_synack = [s for s in segs if s["flags"] & 0x12 == 0x12 and s["dport"] == first["sport"]]
    assert first_synack and first_synack[0]["opts"].get(TFO_OPTION) == cookie, "cookie handed out"
    d = r["delta"]
    assert d.get("TcpExtTCPFastOpenPassive", 0) == 1, d
    assert d.get("TcpExtTCPFastOpenCookieReqd", 0) == 1, d
    assert d.get("TcpExtTCPFastOpenPassiveFail", 0) == 0, d
    # nothing reset either way while the connections lived. One exception, seen once in three
    # clean-clone CI runs (pure-Python core, loaded machine) and not reproduced in 18 runs
    # since: after the server had sent its FIN and closed, a late duplicate from the guest
    # (its FIN retransmitted while the slow daemon held the ACK) found no socket and was
    # answered with a bare RST (no ACK flag, RFC 9293 §3.10.7.1). It resets nothing; the bytes
    # were checked above. Any other RST, or one before the server's FIN, fails.
    late = [s for s in segs if s["flags"] == 0x04 and s["sport"] == PORT and _after_server_fin(segs, s)]
    assert not [s for s in segs if s["flags"] & 0x04 and s not in late], "RST on the server's path"
    assert d.get("TcpEstabResets", 0) == 0 and d.get("TcpOutRsts", 0) == len(late), d


def test_fastopen_passthrough(mbox, tmp_path):
    """Without the core: Fast Open works and the server's MPTCP listener hands out plain TCP
    sockets (the guest's SYNs carry no MP_CAPABLE)."""
    r = run_two_connections(mbox, tmp_path, "--passthrough")
    assert_fast_open_happened(r)
    assert r["rc"] == 0, r["output"][-2000:]
    assert len(r["flags"]) == 2 and all(is_fallback(f) for f in r["flags"]), r["flags"]
    assert r["delta"].get("MPTcpExtMPCapableSYNRX", 0) == 0, r["delta"]
    segs = r["segments"]
    assert not [s for s in segs if 30 in s["opts"]], "an MPTCP option on the wire in passthrough"


def test_fastopen_through_the_converter_stays_mptcp(mbox, tmp_path):
    """With the converter: Fast Open still works (cookie request and SYN data pass), and both
    connections are MPTCP end to end at the server, with no fallback and no MIB error."""
    r = run_two_connections(mbox, tmp_path)
    assert_fast_open_happened(r)
    # the SYN with data got MP_CAPABLE, as every guest SYN
    syns = [s for s in r["segments"] if s["flags"] & 0x12 == 0x02 and s["dport"] == PORT]
    assert all(30 in s["opts"] for s in syns), "a guest SYN without MP_CAPABLE"
    # the daemon: clean exit, no core bug, no state violation
    c = r["core"]
    assert r["rc"] == 0, r["output"][-2000:]
    assert "bug in" not in r["output"], r["output"][-2000:]
    assert c.get("CoreBug", 0) == 0 and c.get("StateViolation", 0) == 0, c
    # converted: Linux 6.18 takes MPTCP Fast Open, so both must be MPTCP
    d = {k.removeprefix("MPTcpExt"): v for k, v in r["delta"].items() if k.startswith("MPTcpExt")}
    assert d.get("MPCapableSYNRX", 0) == 2 and d.get("MPCapableACKRX", 0) == 2, d
    bad = {k: d[k] for k in SERVER_MUST_STAY_ZERO if d.get(k)}
    assert not bad, (
        f"server MIB fallback/error counters moved: {bad} (all MPTCP: {d}; daemon: {c}). "
        "DSSNoMatchTCP + DssFallback: the mapping after the SYN data counts the SYN data "
        "(DSN IDSN+1+len, ssn 1+len); RFC 8684 B.3 / Linux want DSN IDSN+1, ssn 1")
    fellback = [i for i, f in enumerate(r["flags"]) if is_fallback(f)]
    assert len(r["flags"]) == 2 and not fellback, f"server sockets fell back: {r['flags']}"
    assert c.get("DssFallback", 0) == 0 and c.get("MPCapableFallbackSYNACK", 0) == 0, c
