"""Window probes and keepalives across a multipath flow, judged by the kernels: both ends of
an idle connection with a join probe it (SO_KEEPALIVE, 1 s idle, 1 s apart, 2 probes), and
each must get its answers through the middlebox, or it resets a healthy connection after
about 3 s. Before 43ee645/a00e5c2/39b23f0 none did: the guest's probes went out as ordinary
ACKs nobody answers, the server's on subflow 1 were answered by the guest and the answer
held as a subflow-1 duplicate, the ones on the join were consumed unanswered. (The same
answers repeat a lost window update: the slow-reader loss test's stall.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import IPPROTO_MPTCP
from test_multipath import JOIN, MUST_STAY_ZERO, core_counters, delta

# probes and keepalives are the core's: they run once, compiled, first backend (`make test`'s
# time; the unit suite holds the core's twins equal)
pytestmark = pytest.mark.one_backend


IDLE = 7.0  # seconds: more than twice what a side whose probes go unanswered survives
PORT = 5399
WARM = 256 * 1024  # bytes each way before the idle time (the join carries some)


def _keepalive(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)


def _exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF with {n - len(buf)} bytes missing")
        buf += chunk
    return bytes(buf)


def _listener(t, ns: str, addr: str, mptcp: bool) -> socket.socket:
    with t.in_netns(ns):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, PORT))
    ls.listen(1)
    ls.settimeout(30)
    return ls


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.parametrize("role", ["outbound", "inbound"])
def test_idle_multipath_connection_survives_keepalives_both_ways(mbox, role):
    """`outbound`: the plain-TCP guest connects to a Linux MPTCP server (the middlebox joins
    from uplink 2); `inbound`: a Linux MPTCP client connects to the guest's plain service
    and joins the uplink address we announce. Both ends keep the connection alive with
    keepalive probes over 7 idle seconds; then one more exchange must work, and the
    counters show that the probes both ways were answered through the middlebox."""
    t = mbox.t
    if role == "outbound":
        d = mbox.start(*JOIN, uplinks=True)
        ls = _listener(t, t.server, t.server_ip, True)
        with t.in_netns(t.guest):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (t.server_ip, PORT)
    else:
        d = mbox.start(uplinks=True)
        ls = _listener(t, t.guest, t.guest_ip, False)
        with t.in_netns(t.server):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        target = (t.guest_ip, PORT)
    before_s = t.nstat(t.server, None)
    before_g = t.nstat(t.guest, None)
    out: dict = {}

    def serve():
        try:
            conn, _ = ls.accept()
            with conn:
                _keepalive(conn)
                conn.settimeout(30)
                _exact(conn, WARM)
                conn.sendall(b"s" * WARM)
                _exact(conn, 4)  # after the idle time
                conn.sendall(b"pong")
                out["ok"] = True
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    answer = b""
    try:
        with c:
            _keepalive(c)
            c.settimeout(30)
            c.connect(target)
            c.sendall(b"c" * WARM)
            _exact(c, WARM)
            time.sleep(IDLE)
            try:
                c.sendall(b"ping")
                answer = _exact(c, 4)
            except OSError as e:  # (reported below with the counters)
                out["client"] = f"{type(e).__name__}: {e}"
        th.join(10)
    finally:
        ls.close()
        rc, _ = d.stop()
    dd = delta(before_s, t.nstat(t.server, None))
    dg = delta(before_g, t.nstat(t.guest, None))
    cc = core_counters(d.output)
    print(role, {k: v for k, v in dd.items() if v and ("KeepAlive" in k or "MPJoin" in k or "Rst" in k)},
          "guest", {k: v for k, v in dg.items() if v and "KeepAlive" in k}, cc)
    assert answer == b"pong" and out.get("ok"), (out, {k: v for k, v in dd.items() if v and (
        "KeepAlive" in k or "Rst" in k or "Timeout" in k or "Abort" in k)}, cc)
    assert dd.get("TcpExtTCPKeepAlive", 0) >= 2 and dg.get("TcpExtTCPKeepAlive", 0) >= 2, (dd, dg)  # both probed
    if role == "outbound":
        assert cc.get("MPJoinEstablished", 0) >= 1, cc
    else:
        assert cc.get("PassiveJoinEstablished", 0) >= 1, cc
    # the guest's probes went on as probes and their answers came back; the server's were
    # answered on the join by us, and by the guest on subflow 1
    assert cc.get("GuestProbeFwd", 0) >= 1 and cc.get("ProbeAnswerFwd", 0) >= 1, cc
    assert cc.get("JoinProbeAnswered", 0) >= 1, cc
    assert not cc.get("SubflowDead") and not cc.get("FastCloseTX"), cc  # nothing given up while idle
    assert not {k: dd[k] for k in ("MPTcpExt" + m for m in MUST_STAY_ZERO) if dd.get(k)}, dd
