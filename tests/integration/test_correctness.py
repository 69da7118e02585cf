"""Correctness of the conversion under conditions real networks produce, judged by the Linux
kernel: the bytes the guest (or the server) received, the server's MPTCP MIB counters, the
server socket's MPTCP_INFO and the daemon's own counters.

1. slow reader: the guest stops reading, its window closes, Linux's MPTCP stack probes the zero
   window; the guest's stream must stay byte-exact (with and without DSS checksums);
2. random loss on the path, 20 MB each way, several runs;
3. forged RSTs from the server's address: out of the guest's window (dropped by the guest) and
   in its window but not exact (answered with a challenge ACK): the flow must stay MPTCP;
4. a SYN flood with a small flow table (--max-flows 1000) while transfers run: they must stay
   converted;
5. a guest that itself speaks MPTCP: it must stay MPTCP end to end.

Each test names the bug it guards against. Everything is sent only to the test's namespaces.
"""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import threading
import time

import pytest

import adversary
from conftest import (HERE, IPPROTO_MPTCP, PY, is_fallback,
                      mptcp_info_flags, payload, sha256_of)
from test_outbound_core import core_counters

MB = 1 << 20

#: server MIB counters (MPTcpExt*) that mean fallback, a broken mapping or an abort: all must
#: stay 0 on a clean conversion (the names this kernel has; absent ones count as 0)
SERVER_MUST_STAY_ZERO = (
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableDataFallback",
    "MPFallbackTokenInit", "DSSNotMatching", "DSSNoMatchTCP", "DSSCorruptionFallback",
    "DSSCorruptionReset", "InfiniteMapTx", "InfiniteMapRx", "DataCsumErr", "MPFailTx",
    "MPFailRx", "DssFallback", "SimultConnectFallback", "FallbackFailed", "MPFastcloseTx",
    "MPFastcloseRx", "MPRstTx", "MPRstRx",
)

#: daemon (core) counters that must stay 0 in every test here
CORE_MUST_STAY_ZERO = (
    "CoreBug", "StateViolation", "MappingMismatch", "MappingUncovered", "DataCsumErr",
    "CsumErrDropped", "DssFallback", "InfiniteMapRX", "InfiniteMapTX", "MPFailTX", "MPFailRX",
    "OptionSpaceExhausted", "MPCapableFallbackSYNACK", "MPCapableVersionMismatch", "BadPacket",
    "FastCloseRX", "FastCloseTX", "TcpRstRX",
)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)
            if after.get(k, 0) != before.get(k, 0)}


def first_difference(got: bytes, want: bytes) -> str:
    """Where `got` leaves `want`, for the assertion message."""
    n = min(len(got), len(want))
    i = next((i for i in range(0, n, 4096) if got[i:i + 4096] != want[i:i + 4096]), None)
    if i is None:
        return f"same first {n} bytes; lengths {len(got)} vs {len(want)}"
    while i < n and got[i] == want[i]:
        i += 1
    if i == n:
        return f"same first {n} bytes; lengths {len(got)} vs {len(want)}"
    shift = next((s for s in (1, -1, 2, -2, 3, -3) if 0 <= i + s and
                  got[i:i + 64] == want[i - s:i - s + 64]), None)
    return (f"first difference at offset {i} of {len(want)} (received {len(got)} bytes); "
            f"got {got[i:i + 8].hex()} want {want[i:i + 8].hex()}"
            + (f"; the rest is the payload shifted by {shift} byte(s)" if shift else ""))


def read_stream(c: socket.socket, n: int, seconds: float, until_eof: bool = True) -> tuple[bytes, str]:
    """Read up to EOF (or exactly n bytes when not until_eof), but never for more than
    `seconds` nor far beyond n bytes (a broken conversion may trickle data forever).
    Returns the bytes and how the reading ended."""
    deadline = time.monotonic() + seconds
    buf = bytearray()
    while until_eof or len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(buf), f"no EOF within {seconds:.0f} s"
        if len(buf) > n + MB:
            return bytes(buf), "far more bytes than sent"
        c.settimeout(min(left, 5.0))
        try:
            chunk = c.recv(1 << 16 if until_eof else min(n - len(buf), 1 << 16))
        except socket.timeout:
            continue
        except OSError as e:
            return bytes(buf), f"{type(e).__name__}: {e}"
        if not chunk:
            return bytes(buf), "EOF"
        buf += chunk
    return bytes(buf), "complete"


def bounded_download(t, srv, n: int, seconds: float) -> None:
    with t.in_netns(t.guest):
        c = socket.socket(srv.family, socket.SOCK_STREAM)
    with c:
        c.settimeout(10)
        c.connect((srv.addr, srv.port))
        c.sendall(f"DOWN {n}\n".encode())
        got, how = read_stream(c, n, seconds)
    want = payload(n)
    assert got == want, f"download: {first_difference(got, want)}; {how}"


def bounded_upload(t, srv, data: bytes, seconds: float) -> None:
    with t.in_netns(t.guest):
        c = socket.socket(srv.family, socket.SOCK_STREAM)
    with c:
        c.settimeout(seconds)
        c.connect((srv.addr, srv.port))
        c.sendall(f"UP {len(data)}\n".encode())
        c.sendall(data)
        digest, how = read_stream(c, 64, seconds)
    assert digest == hashlib.sha256(data).hexdigest().encode(), (
        f"upload: the server's sha256 is not the data's ({digest[:64]!r}; {how})")


def assert_server_clean(t, before: dict[str, int], srv_flags: list, connections: int,
                        errors: list | None = None) -> dict[str, int]:
    """The server took `connections` MPTCP connections, none fell back, no MIB error moved."""
    d = delta(before, t.nstat(t.server))
    assert d.get("MPCapableSYNRX", 0) >= connections, d
    assert d.get("MPCapableACKRX", 0) >= connections, d
    bad = {k: d[k] for k in SERVER_MUST_STAY_ZERO if d.get(k)}
    assert not bad, f"server MIB fallback/error counters moved: {bad} (all: {d})"
    assert len(srv_flags) >= connections, srv_flags
    fellback = [f for f in srv_flags if is_fallback(f)]
    assert not fellback, f"{len(fellback)} of {len(srv_flags)} server sockets fell back"
    assert not errors, errors
    return d


def stop_daemon(d) -> tuple[int | None, dict[str, int]]:
    """Stop the daemon; its exit status and the counters it printed (checked later, after the
    bytes: a wrong byte says more than a counter)."""
    rc, _ = d.stop()
    return rc, core_counters(d.output)


def assert_daemon_clean(d, rc, c: dict[str, int], *allowed_nonzero: str) -> None:
    """Clean exit, no core bug logged, none of CORE_MUST_STAY_ZERO moved."""
    assert rc == 0, (rc, d.output[-2000:])
    assert "bug in" not in d.output, d.output[-2000:]
    bad = {k: c[k] for k in CORE_MUST_STAY_ZERO if c.get(k) and k not in allowed_nonzero}
    assert not bad, f"daemon counters: {bad} (all: {c})"


# -- 1. slow reader: zero window, MPTCP window probes ----------------------------------------

SLOW_N = 4 * MB
SLOW_PAUSE = 3.0


@pytest.mark.parametrize("csum", [
    pytest.param((), id="no-csum"),
    pytest.param((), id="server-csum", marks=pytest.mark.topology(checksum=True)),
    pytest.param(("--checksum",), id="daemon-csum"),
])
def test_slow_reader_zero_window_stream_intact(mbox, server_factory, csum):
    """Bug: Linux's MPTCP zero-window probe (1 byte of data the guest already has, sent at a
    new subflow seq) was forwarded as a new byte, shifting the guest's stream by one.
    The guest connects, asks for 4 MB, reads nothing for 3 s with a small receive buffer
    (its window closes), then reads everything: the bytes must be the server's."""
    t = mbox.t
    d = mbox.start(*csum)
    srv = server_factory()
    before = t.nstat(t.server)
    with t.in_netns(t.guest):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: small window
        c.settimeout(60)
        c.connect((srv.addr, srv.port))
        c.sendall(f"DOWN {SLOW_N}\n".encode())
        time.sleep(SLOW_PAUSE)
        # 4 MB take well under a second once the guest reads: 20 s bound the broken cases
        got, how = read_stream(c, SLOW_N, 20)
    finally:
        c.close()
    time.sleep(0.3)  # the server's recv(1) sees our close
    after = t.nstat(t.server)
    rc, cc = stop_daemon(d)
    print("server:", delta(before, after), "\ndaemon:", cc)
    want = payload(SLOW_N)
    assert got == want, f"{first_difference(got, want)}; {how}"
    assert_server_clean(t, before, srv.mptcp_flags, 1, srv.errors)
    # the probe really came (it moved the subflow's offset, and the converter consumed it:
    # its byte is not the one its DSN names, it must not reach the guest): this test's case
    assert cc.get("MappingMismatch", 0) >= 1 and cc.get("DupConsumed", 0) >= 1, cc
    assert_daemon_clean(d, rc, cc, "MappingMismatch")


# -- 2. random loss -------------------------------------------------------------------------

#: runs of test_loss (the issue asks for 5), 20 MB each way per run: ~1.3 s a run compiled,
#: ~4 s in pure Python (MIDDLEBOX_PURE_PYTHON=1), so both modes keep all 5 runs.
LOSS_RUNS = 5
LOSS_N = 20 * MB
LOSS_PERCENT = 2


@pytest.mark.parametrize("run", range(LOSS_RUNS))
def test_loss_20mb_each_way_intact(mbox, server_factory, run):
    """2 % random loss each way on the mbox<->server path (nft ingress rules on both veth
    ends; this kernel has no netem):
    retransmissions, SACK, out-of-order data must all keep the conversion exact."""
    t = mbox.t
    adversary.path_loss(t, LOSS_PERCENT)
    d = mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    before_tcp = t.nstat(t.server, prefix=None)
    before_guest = t.nstat(t.guest, prefix=None)
    bounded_upload(t, srv, payload(LOSS_N, seed=run + 1), 60)
    bounded_download(t, srv, LOSS_N, 60)
    time.sleep(0.3)
    after_tcp = t.nstat(t.server, prefix=None)
    after_guest = t.nstat(t.guest, prefix=None)
    # the server's retransmissions repair the download's losses, the guest's the upload's
    # (a proof once counted 590 drops and no server retransmission: the server sends 64 KB
    # GSO skbs over the veth, which the rule drops whole, so the download lost few or none)
    retrans = (after_tcp.get("TcpRetransSegs", 0) - before_tcp.get("TcpRetransSegs", 0)
               + after_guest.get("TcpRetransSegs", 0) - before_guest.get("TcpRetransSegs", 0))
    # MPTCP-level retransmissions (new subflow segments carrying old DSNs) recover losses too:
    # seen once in ~170 runs on a loaded machine with TcpRetransSegs 0 (recorded in the note)
    mptcp_retrans = (after_tcp.get("MPTcpExtMPTCPRetrans", 0) - before_tcp.get("MPTcpExtMPTCPRetrans", 0))
    dropped = adversary.path_loss_dropped(t)
    print(f"run {run}: {dropped} packets dropped, server and guest retransmitted {retrans} segments "
          f"(+{mptcp_retrans} at the MPTCP level)")
    assert dropped > 0 and retrans + mptcp_retrans > 0, (
        f"nothing was lost: the test would prove nothing; server: {delta(before_tcp, after_tcp)}")
    assert_server_clean(t, before, srv.mptcp_flags, 2, srv.errors)
    assert_daemon_clean(d, *stop_daemon(d))


def test_loss_of_single_segments_of_super_packets(mbox, server_factory):
    """Loss of single wire segments of a super-packet. The nft rules above drop a veth's GSO
    skb whole; a real NIC loses one segment of it. With segmentation offload off on the
    middlebox's uplink the kernel cuts every super-packet into segments before the wire, so
    a lost segment leaves the server holding part of a mapping, and the guest's
    retransmission (SACK: just the lost piece) must carry that mapping exactly
    (DSSNotMatching and a fallback otherwise)."""
    t = mbox.t
    p = t.paths[0]
    t.run(t.mbox, ["ethtool", "-K", p.mbox_if, "tso", "off", "gso", "off"])
    adversary.path_loss(t, LOSS_PERCENT)
    d = mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    before_tcp = t.nstat(t.server, prefix=None)
    before_guest = t.nstat(t.guest, prefix=None)
    bounded_upload(t, srv, payload(LOSS_N, seed=7), 60)
    bounded_download(t, srv, LOSS_N, 60)
    time.sleep(0.3)
    after_tcp = t.nstat(t.server, prefix=None)
    after_guest = t.nstat(t.guest, prefix=None)
    # resent by someone: the guest (upload; what this test is about), the server's TCP or its
    # MPTCP level (download). A proof once saw 478 drops and the server's TcpRetransSegs at 0
    retrans = {k: delta(b, a).get(c, 0) for k, b, a, c in (
        ("guest", before_guest, after_guest, "TcpRetransSegs"),
        ("server", before_tcp, after_tcp, "TcpRetransSegs"),
        ("server MPTCP", before_tcp, after_tcp, "MPTcpExtMPTCPRetrans"))}
    dropped = adversary.path_loss_dropped(t)
    print(f"{dropped} packets dropped, retransmitted: {retrans}")
    assert dropped > 0 and sum(retrans.values()) > 0, (dropped, retrans)
    rc, c = stop_daemon(d)
    print("daemon counters:", {k: v for k, v in c.items() if v})
    assert_server_clean(t, before, srv.mptcp_flags, 2, srv.errors)
    if mbox.backend == "netlink":
        assert c.get("GsoMapRepeated", 0) > 0, "no retransmission inside a super-packet: proves nothing"
    assert_daemon_clean(d, rc, c)


# -- 3. forged RSTs -------------------------------------------------------------------------

RST_PORT = 5202
RST_OUT_OF_WINDOW = 200  # in two halves, each during a transfer
RST_IN_WINDOW = 5  # 0.6 s apart (Linux rate-limits challenge ACKs to one per 0.5 s per socket)
RST_PHASE = 12 * MB


class RstServer:
    """One connection on RST_PORT (MPTCP): sends A = payload(12 MB), reads U (2 MB) from the
    guest, sends B = payload(12 MB, seed 2) + sha256(U) hex, then closes after the guest."""

    def __init__(self, t) -> None:
        with t.in_netns(t.server):
            self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((t.server_ip, RST_PORT))
        self.ls.listen(4)
        self.flags: list = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.ls.settimeout(30)
            conn, _ = self.ls.accept()
            with conn:
                conn.settimeout(60)
                conn.sendall(payload(RST_PHASE))
                digest = sha256_of(conn.recv, 2 * MB)
                conn.sendall(payload(RST_PHASE, seed=2) + digest)
                self.flags.append(mptcp_info_flags(conn))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
        except Exception as e:  # noqa: BLE001 - asserted by the test
            self.errors.append(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        self.thread.join(5)
        self.ls.close()


@pytest.mark.topology(rate_mbit=40)  # 12 MB take ~2.5 s: the RSTs land while data flows
def test_forged_rsts_do_not_break_the_flow(mbox, tmp_path):
    """Bug: any RST from the server side, even one the guest's TCP ignores (out of window,
    RFC 5961 §3), moved the flow to CLOSED and the rest of the connection passed unconverted.
    200 RSTs from the server's address to the guest's 4-tuple with random sequence numbers
    far outside the guest's window (100 during each of two 12 MB downloads), and 5 in the
    window but not at rcv_nxt (the guest answers each with a challenge ACK) while idle; they
    are injected in the server's namespace, so they traverse the converter. The connection
    must complete byte-exact and stay MPTCP."""
    t = mbox.t
    d = mbox.start()
    srv = RstServer(t)
    cap = adversary.Capture(t, t.guest, t.guest_if, f"tcp port {RST_PORT}", tmp_path / "g.pcap")
    with t.in_netns(t.server):
        raw = adversary.raw_sender()
    before = t.nstat(t.server)
    before_guest = t.nstat(t.guest, prefix=None)
    rng = random.Random(5961)
    sent = {"oow": 0, "inwin": 0}
    inject_errors: list[str] = []

    def flow_segment(c_port: int) -> dict:
        """The latest server->guest segment of the flow the guest received."""
        for _ in range(200):
            segs = [p for p in cap.packets() if p["sport"] == RST_PORT and p["dport"] == c_port
                    and not p["flags"] & adversary.RST]
            if segs:
                return segs[-1]
            time.sleep(0.02)
        raise AssertionError("no segment of the flow captured")

    def forge(c_port: int, seq: int, ack: int, with_ack: bool) -> None:
        flags = adversary.RST | (adversary.ACK if with_ack else 0)
        raw.sendto(adversary.tcp4(t.server_ip, t.guest_ip, RST_PORT, c_port, seq,
                                  ack if with_ack else 0, flags), (t.guest_ip, 0))

    def out_of_window_burst(c_port: int, n: int) -> None:
        try:
            time.sleep(0.4)  # into the transfer
            seg = flow_segment(c_port)
            est = seg["seq"]
            for i in range(n):
                # >= 2^30 away from anything the guest's window (<= 2^30, RFC 7323) can hold
                off = (1 << 30) + rng.getrandbits(29)
                seq = est + off if i % 2 else est - off
                forge(c_port, seq, seg["ack"], with_ack=bool(i % 4 < 2))
                sent["oow"] += 1
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - asserted below
            inject_errors.append(f"{type(e).__name__}: {e}")

    with t.in_netns(t.guest):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.settimeout(60)
        c.connect((t.server_ip, RST_PORT))
        port = c.getsockname()[1]
        th = threading.Thread(target=out_of_window_burst, args=(port, RST_OUT_OF_WINDOW // 2))
        th.start()
        a, how = read_stream(c, RST_PHASE, 30, until_eof=False)
        th.join(30)
        assert a == payload(RST_PHASE), f"phase A: {first_difference(a, payload(RST_PHASE))}; {how}"
        # idle: the guest's rcv_nxt is the server's ISN + 1 + the bytes it read; RSTs a little
        # above it are in the window. (Taken from the guest's last ACK in the capture, it was
        # once behind: all five RSTs out of window, in a proof with the other core busy; the
        # SYN/ACK is captured before any load)
        time.sleep(0.3)
        synack = [p for p in cap.packets() if p["sport"] == RST_PORT and p["dport"] == port
                  and p["flags"] & (adversary.SYN | adversary.ACK) == adversary.SYN | adversary.ACK]
        assert synack, "the SYN/ACK was not captured"
        rcv_nxt, seg = (synack[0]["seq"] + 1 + RST_PHASE) & 0xFFFFFFFF, flow_segment(port)
        acks = [p for p in cap.packets() if p["dport"] == RST_PORT and p["sport"] == port]
        if acks and acks[-1]["ack"] != rcv_nxt:
            print(f"the capture's last guest ACK {acks[-1]['ack']} is not rcv_nxt {rcv_nxt}")
        for _ in range(RST_IN_WINDOW):
            forge(port, rcv_nxt + rng.randrange(1, 1000), seg["ack"], with_ack=True)
            sent["inwin"] += 1
            time.sleep(0.6)
        th = threading.Thread(target=out_of_window_burst, args=(port, RST_OUT_OF_WINDOW // 2))
        th.start()
        c.sendall(payload(2 * MB, seed=3))
        b, how = read_stream(c, RST_PHASE + 64, 30)
        th.join(30)
    finally:
        c.close()
        raw.close()
    srv.close()
    time.sleep(0.3)
    cap.stop()
    after_guest = t.nstat(t.guest, prefix=None)
    pkts = cap.packets()
    rst_seen = sum(1 for p in pkts if p["flags"] & adversary.RST and p["sport"] == RST_PORT)
    challenge = (after_guest.get("TcpExtTCPChallengeACK", 0)
                 - before_guest.get("TcpExtTCPChallengeACK", 0))
    rc, cc = stop_daemon(d)
    print(f"forged {sent}; RSTs reaching the guest: {rst_seen}; guest challenge ACKs: "
          f"{challenge}\nserver: {delta(before, t.nstat(t.server))}\ndaemon: {cc}")
    assert not inject_errors, inject_errors
    assert sent == {"oow": RST_OUT_OF_WINDOW, "inwin": RST_IN_WINDOW}, sent
    want_b = payload(RST_PHASE, seed=2) + hashlib.sha256(payload(2 * MB, seed=3)).hexdigest().encode()
    assert b == want_b, f"phase B (then the upload's sha256): {first_difference(b, want_b)}; {how}"
    assert challenge >= 1, "no in-window RST reached the guest (no challenge ACK)"
    assert_server_clean(t, before, srv.flags, 1, srv.errors)
    # the forged RSTs are counted as the server's (RstRX); nothing else may move
    assert_daemon_clean(d, rc, cc)


# -- 4. SYN flood with a small flow table ----------------------------------------------------

FLOOD_RATE = 20000  # SYN/s
FLOOD_SECONDS = 3.0
FLOOD_N = 24 * MB


@pytest.mark.topology(rate_mbit=40)  # 24 MB take ~5 s: the flood runs in the middle
def test_syn_flood_keeps_running_transfers_converted(mbox, server_factory):
    """Bug: with the flow table full, a new SYN evicted the least recently *moved* flow, which
    can be a busy transfer (its LRU position is refreshed only once a second); its next
    packets passed unconverted. Daemon with --max-flows 1000; an upload and a download of
    24 MB run while the guest's namespace floods the server with ~20k SYN/s for 3 s (forged
    source ports below the ephemeral range). Both transfers must stay MPTCP and intact."""
    # (It once failed on the netlink backend: a guest retransmission inside a half-received
    # super-packet mapping got a mapping of its own; fixed by Flow.gso_maps, see
    # test_loss_of_single_segments_of_super_packets.)
    _syn_flood(mbox, server_factory)


def _syn_flood(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--max-flows", "1000")
    srv = server_factory()
    before = t.nstat(t.server)
    errors: list[str] = []

    def run(fn, *args):
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(bounded_upload, t, srv, payload(FLOOD_N, seed=4), 60)),
               threading.Thread(target=run, args=(bounded_download, t, srv, FLOOD_N, 60))]
    for th in threads:
        th.start()
    time.sleep(1.0)  # both transfers established and running
    flood = t.popen(t.guest, [PY, str(HERE / "adversary.py"), "synflood", "--src", t.guest_ip,
                              "--dst", t.server_ip, "--dport", str(srv.port),
                              "--rate", str(FLOOD_RATE), "--seconds", str(FLOOD_SECONDS)],
                    stdout=subprocess.PIPE, text=True)
    try:
        out, _ = flood.communicate(timeout=FLOOD_SECONDS + 30)
    finally:
        if flood.poll() is None:
            flood.kill()  # our own flooder, by pid
            flood.wait(5)
    for th in threads:
        th.join(90)
    time.sleep(0.3)
    rc, cc = stop_daemon(d)
    print(out.strip(), "\nserver:", delta(before, t.nstat(t.server)), "\ndaemon:", cc)
    assert flood.returncode == 0, out
    assert cc.get("FlowTableFull", 0) > 0, f"the flood never filled the table: {cc}"
    assert not errors, errors
    assert_server_clean(t, before, srv.mptcp_flags, 2, srv.errors)
    # the guest answers each forged SYN's SYN/ACK with a RST, sent on with MP_FASTCLOSE; with
    # a full queue dropping (the default), a forged flow's packets can come in an order its
    # table row does not expect (passed as plain TCP, StateViolation): never the transfers'
    assert_daemon_clean(d, rc, cc, "FastCloseTX", "StateViolation")


# -- 5. a guest that speaks MPTCP itself ----------------------------------------------------

MPTCP_GUEST_N = 8 * MB


@pytest.mark.topology(sysctls={"guest": {"net.mptcp.enabled": 1}})
def test_mptcp_guest_stays_mptcp_end_to_end(mbox, server_factory):
    """Bug: a guest SYN that already carries MP_CAPABLE was left alone, but the server's
    SYN/ACK was stripped of its MP_CAPABLE on the way back, so both ends fell back to TCP.
    The guest uses an IPPROTO_MPTCP socket: both connections (up, down) must be MPTCP on
    the guest and on the server, bytes intact both ways."""
    t = mbox.t
    d = mbox.start()
    srv = server_factory()
    before, before_guest = t.nstat(t.server), t.nstat(t.guest)
    guest_flags: list = []

    def connect() -> socket.socket:
        with t.in_netns(t.guest):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        c.settimeout(60)
        c.connect((srv.addr, srv.port))
        return c

    data = payload(MPTCP_GUEST_N, seed=5)
    with connect() as c:
        c.sendall(f"UP {len(data)}\n".encode())
        c.sendall(data)
        digest, how = read_stream(c, 64, 30)
        guest_flags.append(mptcp_info_flags(c))
    assert digest == hashlib.sha256(data).hexdigest().encode(), f"upload: {digest!r}; {how}"
    with connect() as c:
        c.sendall(f"DOWN {MPTCP_GUEST_N}\n".encode())
        first, _ = read_stream(c, 1, 10, until_eof=False)
        guest_flags.append(mptcp_info_flags(c))  # while the connection is open
        rest, how = read_stream(c, MPTCP_GUEST_N, 30)
    want = payload(MPTCP_GUEST_N)
    assert first + rest == want, f"download: {first_difference(first + rest, want)}; {how}"
    time.sleep(0.3)
    dg = delta(before_guest, t.nstat(t.guest))
    rc, cc = stop_daemon(d)
    print("guest:", dg, "\nserver:", delta(before, t.nstat(t.server)), "\ndaemon:", cc,
          "\nguest MPTCP_INFO flags:", guest_flags, "server:", srv.mptcp_flags)
    assert not [f for f in guest_flags if is_fallback(f)], f"guest sockets fell back: {guest_flags}"
    assert dg.get("MPCapableSYNACKRX", 0) >= 2, dg
    bad = {k: dg[k] for k in SERVER_MUST_STAY_ZERO if dg.get(k)}
    assert not bad, f"guest MIB fallback/error counters moved: {bad}"
    assert_server_clean(t, before, srv.mptcp_flags, 2, srv.errors)
    assert_daemon_clean(d, rc, cc)
