"""Adversarial kill-and-restart scenarios (the orphans of a daemon killed outright,
core/orphans.py). Across a SIGKILL and a restart, whatever the moment and whatever the
traffic, every transfer must end well before its socket timeout either intact or with
ECONNRESET: never a wrong byte, never a truncated EOF, never a hang; and no daemon may log a
core bug (CoreBug, a traceback).

Each test prints what happened (bytes, error, seconds from the last restart to the end)."""

from __future__ import annotations

import errno
import hashlib
import signal
import socket
import threading
import time

import pytest

import adversary
from conftest import IPPROTO_MPTCP, payload
from test_multipath import JOIN, core_counters
from test_stop_reset import _first_wrong, _recv_all

MB = 1 << 20
TIMEOUT = 25.0  # s: the guest socket's (a hang shows as a TimeoutError)
BOUND = 12.0  # s from the last restart to the end of the transfer: well below TIMEOUT
TOPO = dict(rate_mbit=50, latency_ms=20, policy_routing=False)

# Known to hang (measured, see the tests): the guest waits for its own timeout, no wrong byte.
# (Multipath numbering drifted both ways beyond GATE, the guest's answers misfit, hung too until
# the state file (--state-dir) told the successor its orphans: OrphanKnown.)
# (Path 1 down at the restart hung too: only the joins' segments reached the new daemon, at
# join ports it did not know; now their records in the state file reset it: OrphanJoin.)


def _args(multi: bool, extra: tuple = ()) -> tuple:
    return (*JOIN, *extra) if multi else tuple(extra)


def _start(mbox, multi: bool, extra: tuple = ()):
    return mbox.start(*_args(multi, extra), uplinks=True) if multi else mbox.start(*extra)


def _connect(t, srv, mptcp: bool = False, rcvbuf: int | None = None) -> socket.socket:
    with t.in_netns(t.guest):
        c = socket.socket(srv.family, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.settimeout(TIMEOUT)
    c.connect((srv.addr, srv.port))
    return c


def _capture(t):
    """ADV_CAPTURE=dir: tcpdump on the guest's and mbox's path-1 interfaces (debugging)."""
    import os

    where = os.environ.get("ADV_CAPTURE")
    if not where:
        return None
    name = os.environ.get("PYTEST_CURRENT_TEST", "x").split(" ")[0].split("::")[-1]
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    return _Captures([adversary.Capture(t, t.guest, t.guest_if, "tcp", f"{where}/{name}-guest.pcap", snaplen=200),
                      adversary.Capture(t, t.mbox, t.paths[0].mbox_if, "tcp", f"{where}/{name}-path1.pcap", snaplen=200)])


class _Captures:
    def __init__(self, caps) -> None:
        self.caps = caps

    def stop(self) -> None:
        for c in self.caps:
            c.stop()


class Outage:
    """Kills the daemon and starts new ones. `plan`: seconds dead, [seconds alive, seconds
    dead, ...]: [1.0] is one kill and a restart 1 s later; [1.0, 0.3, 1.0] kills the new
    daemon too 0.3 s after it bound, and starts a third 1 s later. `hook(i)` runs right
    after the i-th kill (loss on a path, say)."""

    def __init__(self, mbox, d, args: tuple, plan=(1.0,), hook=None) -> None:
        self.mbox, self.d, self.args, self.plan, self.hook = mbox, d, args, list(plan), hook
        self.daemons = [d]
        self.at = None  # monotonic time of the last restart
        self.outputs: list[str] = []

    def run(self) -> None:
        plan = self.plan
        i = 0
        while True:
            self.d.stop(signal.SIGKILL)
            self.outputs.append(self.d.output)
            if self.hook:
                self.hook(i)
            time.sleep(plan[2 * i])
            self.d = self.mbox.start(*self.args)
            self.daemons.append(self.d)
            self.at = time.monotonic()
            if 2 * i + 1 >= len(plan):
                return
            time.sleep(plan[2 * i + 1])
            i += 1

    def finish(self) -> dict:
        """Stop the last daemon (SIGTERM: its counters); its core counters."""
        if self.at is None:
            return {}
        self.d.stop()
        self.outputs.append(self.d.output)
        return core_counters(self.d.output)

    def bugs(self) -> list[str]:
        return [line for out in self.outputs for line in out.splitlines()
                if "Traceback" in line or "core:" in line and "accepted unchanged" in line]


def _read(c, n_hint: int, kill_at: int | None, outage: Outage, pace=None, before_recv=None):
    """Read `c` to its end or an error; run `outage` once kill_at bytes came (None: never;
    `before_recv(bytes so far)` may run it instead). pace = (bytes per recv, seconds between
    recvs). Returns (got, err)."""
    def hook(have: int) -> None:
        if kill_at is not None and outage.at is None and have >= kill_at:
            outage.run()
        if before_recv is not None:
            before_recv(have)

    return _recv_all(c, hook, *(pace or ()))


def _judge(what: str, got, err, n: int, outage: Outage, c2: dict, bound: float = BOUND,
           reset_ok: bool = True):
    took = None if outage.at is None else time.monotonic() - outage.at
    bad = _first_wrong(bytes(got), payload(n))
    orph = {k: v for k, v in c2.items() if k.startswith(("Orphan", "CoreBug", "UnknownFlow", "GuestMPTCP"))}
    print(f"{what}: received {len(got)} of {n}, {err!r}, {took and round(took, 2)} s after the "
          f"last restart; first wrong byte {bad}; {orph}")
    assert outage.at is not None, "the transfer ended before the kill"
    assert bad is None, f"wrong byte at {bad}"
    assert not c2.get("CoreBug"), c2
    assert not outage.bugs(), outage.bugs()
    if err is None:
        assert len(got) == n, f"clean EOF after {len(got)} of {n} bytes: truncated"
    else:
        assert reset_ok and isinstance(err, OSError) and err.errno == errno.ECONNRESET, err
    assert took < bound, took
    return took


def _download(mbox, srv, n: int, kill_at: int | None, multi: bool, extra: tuple = (),
              plan=(1.0,), pace=None, rcvbuf=None, hook=None, before=None, what="download",
              bound: float = BOUND):
    t = mbox.t
    d = _start(mbox, multi, extra)
    outage = Outage(mbox, d, _args(multi, extra), plan, hook)
    cap = _capture(t)
    try:
        with _connect(t, srv, rcvbuf=rcvbuf) as c:
            if before == "request":  # killed and restarted before the request leaves
                outage.run()
            c.sendall(f"DOWN {n}\n".encode())
            if before == "first-byte":  # killed as soon as the request left
                outage.run()
            got, err = _read(c, n, kill_at, outage, pace)
    finally:
        c2 = outage.finish()
        print("\n".join(outage.d.output.splitlines()[-6:]))
        if cap:
            cap.stop()
    return _judge(what, got, err, n, outage, c2, bound)


# -- 1. the handshake and the first bytes ----------------------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("when", ["request", "first-byte", "1B", "4KB", "64KB"])
def test_killed_early(mbox, server_factory, multi, when):
    """Killed before the request leaves (it passes plain: the server falls back, or not),
    right after it left, after the first byte, after 4 KB, after 64 KB."""
    srv = server_factory()
    n = 8 * MB
    kill_at = {"1B": 1, "4KB": 4096, "64KB": 65536}.get(when)
    before = when if when in ("request", "first-byte") else None
    _download(mbox, srv, n, kill_at, multi, before=before, what=f"early {when}")


@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("when", ["request", "0B", "64KB", "fin"])
def test_killed_early_upload(mbox, server_factory, multi, when):
    """Upload: killed before "UP n" leaves, right after, after 64 KB went, or right after the
    whole upload was written and the guest shut its side down (its FIN)."""
    t = mbox.t
    srv = server_factory()
    n = 8 * MB
    data = payload(n)
    d = _start(mbox, multi)
    outage = Outage(mbox, d, _args(multi), (1.0,))
    answer = err = None
    sent = 0
    kill_at = {"0B": 0, "64KB": 65536}.get(when)
    try:
        with _connect(t, srv) as c:
            if when == "request":
                outage.run()
            c.sendall(f"UP {n}\n".encode())
            view = memoryview(data)
            try:
                while sent < n:
                    if kill_at is not None and outage.at is None and sent >= kill_at:
                        outage.run()
                    sent += c.send(view[sent:sent + 65536])
                if when == "fin":
                    c.shutdown(socket.SHUT_WR)
                    outage.run()
                answer = c.recv(64)
            except OSError as e:
                err = e
    finally:
        c2 = outage.finish()
    took = time.monotonic() - outage.at
    print(f"upload {when}: sent {sent}, answer {answer!r}, {err!r}, {took:.2f} s; server "
          f"{srv.errors}; {c2}")
    right = hashlib.sha256(data).hexdigest().encode()
    assert not answer or answer == right, "the server took wrong bytes"
    assert answer == right or (err is not None and err.errno in (errno.ECONNRESET, errno.EPIPE)), (answer, err)
    assert not c2.get("CoreBug") and not outage.bugs(), (c2, outage.bugs())
    assert took < BOUND, took


# -- 2. the close --------------------------------------------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("left", [512 * 1024, 64 * 1024, 1, 0])
def test_killed_during_the_close(mbox, server_factory, multi, left):
    """The server sends its last bytes and its DATA_FIN around the kill: killed when the guest
    has all but `left` bytes (0: all of them, its EOF not read yet)."""
    srv = server_factory()
    n = 8 * MB
    _download(mbox, srv, n, n - left, multi, what=f"close left={left}")


@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("n", [3 * MB, 48 * MB], ids=["finished", "window-closed"])
def test_killed_while_the_guest_sleeps(mbox, server_factory, multi, n):
    """The guest does not read for 1.5 s after its request: the server sent everything (3 MB:
    in the guest's buffer, the DATA_FIN among it) or the guest's window is closed (48 MB);
    killed then; the guest reads only after the restart."""
    got, err, outage, c2 = _asleep_at_the_kill(mbox, server_factory(), n, multi)
    _judge("sleeping guest", got, err, n, outage, c2)


def _asleep_at_the_kill(mbox, srv, n: int, multi: bool, mptcp: bool = False):
    """A download whose guest reads nothing for 1.5 s after its request, killed then, read
    after the restart. Returns (got, err, the Outage, the last daemon's counters)."""
    d = _start(mbox, multi)
    outage = Outage(mbox, d, _args(multi), (1.0,))
    try:
        with _connect(mbox.t, srv, mptcp=mptcp) as c:
            c.sendall(f"DOWN {n}\n".encode())
            time.sleep(1.5)
            outage.run()
            got, err = _read(c, n, None, outage)
    finally:
        c2 = outage.finish()
    return got, err, outage, c2


# -- 3. a slow reader (its window closed most of the time) ------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("plan", [(1.0,), (5.0,)], ids=["1s", "5s"])
def test_killed_with_a_slow_reader(mbox, server_factory, multi, plan):
    srv = server_factory()
    n = 8 * MB
    _download(mbox, srv, n, 256 * 1024, multi, plan=plan, pace=(4096, 0.05), rcvbuf=65536,
              what=f"slow reader {plan}", bound=20)


# -- 4. a long outage, and two kills --------------------------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("plan", [(9.0,), (1.0, 0.3, 1.0), (1.0, 2.5, 1.0)],
                         ids=["9s", "double-0.3s", "double-2.5s"])
def test_killed_long_or_twice(mbox, server_factory, multi, plan):
    srv = server_factory()
    n = 48 * MB
    _download(mbox, srv, n, 8 * MB, multi, plan=plan, what=f"outage {plan}")


# -- 5. IPv6 multipath, DSS checksums --------------------------------------------------------

@pytest.mark.topology(**TOPO)
def test_killed_multipath_ipv6(mbox, server_factory):
    srv = server_factory(family=socket.AF_INET6)
    _download(mbox, srv, 48 * MB, 8 * MB, True, what="multipath ipv6")


@pytest.mark.topology(checksum=True, **TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("when", [4096, 8 * MB])
def test_killed_with_checksums(mbox, server_factory, multi, when):
    srv = server_factory()
    _download(mbox, srv, 48 * MB, when, multi, extra=("--checksum",), what="checksum")


# -- 6. loss on a path during the restart ----------------------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("percent", [5, 30])
def test_killed_with_loss(mbox, server_factory, multi, percent):
    t = mbox.t
    srv = server_factory()

    def loss(i):
        if i == 0:
            adversary.path_loss(t, percent, 1)

    _download(mbox, srv, 48 * MB, 8 * MB, multi, hook=loss, what=f"loss {percent}%", bound=15)
    print("dropped", adversary.path_loss_dropped(t))


# -- 7. many connections at once ----------------------------------------------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("count", [8, 32])
def test_killed_with_parallel_downloads(mbox, server_factory, multi, count):
    t = mbox.t
    srv = server_factory()
    n = 24 * MB
    d = _start(mbox, multi)
    outage = Outage(mbox, d, _args(multi), (1.0,))
    socks = [_connect(t, srv) for _ in range(count)]
    results: list = [None] * count
    progress = [0] * count

    def reader(i, c):
        got, err = bytearray(), None
        try:
            c.sendall(f"DOWN {n}\n".encode())
            got, err = _read(c, n, None, outage, before_recv=lambda have: progress.__setitem__(i, have))
        except OSError as e:
            err = e
        finally:
            results[i] = (got, err, time.monotonic())

    threads = [threading.Thread(target=reader, args=(i, c), daemon=True) for i, c in enumerate(socks)]
    try:
        for th in threads:
            th.start()
        deadline = time.monotonic() + 20
        while sum(progress) < 6 * MB and time.monotonic() < deadline:
            time.sleep(0.02)
        outage.run()
        for th in threads:
            th.join(TIMEOUT + 5)
    finally:
        c2 = outage.finish()
        for c in socks:
            c.close()
    data = payload(n)
    fails = []
    for i, (got, err, end) in enumerate(results):
        took = end - outage.at
        bad = _first_wrong(bytes(got), data)
        print(f"#{i}: {len(got)} of {n}, {err!r}, {took:.2f} s; wrong byte {bad}")
        if bad is not None:
            fails.append((i, "wrong byte", bad))
        elif err is None and len(got) != n:
            fails.append((i, "truncated", len(got)))
        elif err is not None and getattr(err, "errno", None) != errno.ECONNRESET:
            fails.append((i, "error", repr(err)))
        elif took > BOUND:
            fails.append((i, "slow", took))
    print({k: v for k, v in c2.items() if k.startswith(("Orphan", "CoreBug"))})
    assert not fails, fails
    assert not c2.get("CoreBug") and not outage.bugs(), (c2, outage.bugs())


# -- 8. both ways at once, multipath: the numbering drifts both ways ----------------------------

class _OneConnectionServer:
    """An MPTCP server in the server namespace for one connection, served by `serve(conn)`."""

    def __init__(self, t, port: int) -> None:
        with t.in_netns(t.server):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((t.server_ip, port))
        self.sock.listen(8)
        self.addr, self.port, self.family = t.server_ip, port, socket.AF_INET
        self.errors: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(60)
        try:
            self.serve(conn)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()


class EchoServer(_OneConnectionServer):
    """Sends back what it reads."""

    def __init__(self, t, port: int = 5301) -> None:
        super().__init__(t, port)

    def serve(self, conn) -> None:
        while True:
            b = conn.recv(1 << 16)
            if not b:
                break
            conn.sendall(b)
        conn.shutdown(socket.SHUT_WR)


@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_killed_mid_echo(mbox, server_factory, multi):
    """The guest sends and reads at once (an echo): both directions move much data, over two
    subflows when multipath."""
    t = mbox.t
    srv = EchoServer(t)
    n = 32 * MB
    data = payload(n)
    d = _start(mbox, multi)
    outage = Outage(mbox, d, _args(multi), (1.0,))
    state = {"sent": 0, "err": None}
    with _connect(t, srv) as c:
        def sender():
            view = memoryview(data)
            try:
                while state["sent"] < n:
                    state["sent"] += c.send(view[state["sent"]:state["sent"] + 65536])
                c.shutdown(socket.SHUT_WR)
            except OSError as e:
                state["err"] = e

        th = threading.Thread(target=sender, daemon=True)
        th.start()
        try:
            got, err = _read(c, n, 8 * MB, outage)
        finally:
            c2 = outage.finish()
        th.join(5)
    print(f"echo: sent {state['sent']} ({state['err']!r}); server {srv.errors}")
    if err is None and len(got) < n and isinstance(state["err"], ConnectionResetError):
        err = state["err"]  # (a socket's error goes to one call: here the sender's send)
    _judge("echo", got, err, n, outage, c2)


# -- 9. the first path down when the daemon is killed (multipath failover) ----------------------

@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("back", [4.0, None],
                         ids=["path1-back-after-4s", "path1-stays-down"])
def test_killed_while_the_first_path_is_down(mbox, server_factory, back):
    """Multipath download; path 1 (subflow 1's) goes down, the transfer goes on over the join;
    then the daemon is killed and restarted 1 s later. The server's segments towards the guest
    can only come by subflow 1 (the join's are the mbox's: JoinUnknown, or its own stack's
    RST while no daemon is bound). Path 1 comes back `back` s after the restart, or never.
    The joins' segments are held while no daemon is bound (the rules), and the new daemon
    resets the connection from the killed one's record of the join (OrphanJoin)."""
    t = mbox.t
    srv = server_factory()
    n = 48 * MB
    d = _start(mbox, True)
    outage = Outage(mbox, d, _args(True), (1.0,))
    state = {"down_at": None, "timer": None}

    def before_recv(have: int) -> None:
        if state["down_at"] is None and have >= 4 * MB:
            t.set_link(1, False)
            state["down_at"] = have
        elif outage.at is None and state["down_at"] is not None and have >= state["down_at"] + 4 * MB:
            outage.run()
            if back is not None:
                state["timer"] = threading.Timer(back, t.set_link, (1, True))
                state["timer"].start()

    try:
        with _connect(t, srv) as c:
            c.sendall(f"DOWN {n}\n".encode())
            got, err = _read(c, n, None, outage, before_recv=before_recv)
    finally:
        if state["timer"]:
            state["timer"].join()
        c2 = outage.finish()
    _judge(f"path 1 down, back {back}", got, err, n, outage, c2,
           bound=BOUND if back is None else back + BOUND)


# -- 10. a large upload, then a large download on the same connection (multipath) ---------------

class UpDownServer(_OneConnectionServer):
    """Reads `UPDOWN u d`, then u bytes, then sends payload(d) and closes."""

    def __init__(self, t, port: int = 5302) -> None:
        super().__init__(t, port)

    def serve(self, conn) -> None:
        f = conn.makefile("rb")
        _, u, dn = f.readline().split()
        left = int(u)
        while left:
            b = f.read1(min(left, 1 << 16))
            if not b:
                raise ConnectionError("EOF in the upload")
            left -= len(b)
        conn.sendall(payload(int(dn)))
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)


@pytest.mark.topology(**TOPO)
@pytest.mark.parametrize("up", [256 * 1024, 1 * MB, 4 * MB],
                         ids=["up-256KB", "up-1MB", "up-4MB"])
def test_killed_in_a_download_after_an_upload_multipath(mbox, server_factory, up):
    """A request with a body (a POST), then a long answer, on one multipath connection: the
    upload's bytes on the join drift the guest's numbering from subflow 1's one way, the
    download's the other way. Killed mid-download."""
    t = mbox.t
    srv = UpDownServer(t)
    n = 48 * MB
    d = _start(mbox, True)
    outage = Outage(mbox, d, _args(True), (1.0,))
    cap = _capture(t)
    try:
        with _connect(t, srv) as c:
            c.sendall(f"UPDOWN {up} {n}\n".encode() + payload(up, seed=2))
            got, err = _read(c, n, 8 * MB, outage)
    finally:
        c2 = outage.finish()
        if cap:
            cap.stop()
    print("server", srv.errors)
    _judge(f"upload {up} then download", got, err, n, outage, c2)


# -- 11. a guest that speaks MPTCP itself, its window closed at the kill --------------------------

@pytest.mark.topology(sysctls={"guest": {"net.mptcp.enabled": 1}}, **TOPO)
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_killed_over_an_mptcp_guests_closed_window(mbox, server_factory, multi):
    """An MPTCP guest does not read for 1.5 s (its window closes); killed then. Its connection
    is its own: after the restart it must complete intact (GUEST_MPTCP), never be reset."""
    n = 24 * MB
    got, err, outage, c2 = _asleep_at_the_kill(mbox, server_factory(), n, multi, mptcp=True)
    _judge("mptcp guest", got, err, n, outage, c2, reset_ok=False)
    assert not c2.get("OrphanReset"), c2
