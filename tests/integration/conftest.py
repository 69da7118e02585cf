"""Fixtures of the real-namespace suite: a Topology (TESTBED.md), the rules, the daemon as a
subprocess in the mbox namespace, and a hashing TCP/MPTCP server in the server namespace.

Every test here is marked `integration` and runs for real: root, namespaces, NFQUEUE, the
Linux MPTCP stack. Namespaces are deleted at the end of each test, also on failure.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from middlebox.testbed import Topology

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
PY = sys.executable
IPPROTO_MPTCP = 262
SOL_MPTCP, MPTCP_INFO = 284, 1
QUEUE = 0  # NFQUEUE numbers are per network namespace: no clash between concurrent tests
# the suite's commands never read a config file of the host (/etc/middlebox/middlebox.toml,
# middlebox/io/config.py); a test that wants one names it
os.environ.setdefault("MIDDLEBOX_CONFIG", "")


def _cli_works() -> bool:
    try:
        from middlebox import cli

        cli.build_parser()
        return True
    except Exception:
        return False


def cli(sub: str) -> list[str]:
    """argv prefix of `middlebox SUB`: the console script, or the subcommand's module while
    other subcommands of the CLI are still missing."""
    script = pathlib.Path(PY).with_name("middlebox")
    if script.exists() and _cli_works():
        return [str(script), sub]
    return [PY, "-m", {"run": "middlebox.io.daemon", "rules": "middlebox.io.rules"}[sub]]


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        if HERE in pathlib.Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (item.get_closest_marker("one_backend") and "mbox" in params
                and (_PURE or params["mbox"] != BACKENDS[0])):
            drop.append(item)
        else:
            keep.append(item)
    if drop:  # (`make test`'s time: these test the daemon and the kernels with the core,
        # whose twins the unit suite holds equal: once, compiled, first backend)
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True, scope="session")
def _require_root():
    if os.geteuid() != 0:
        pytest.fail("the integration suite needs root (namespaces, netfilter, NFQUEUE)")


def pytest_configure(config):
    config.addinivalue_line("markers", "topology(**kw): keyword arguments of the test's Topology")
    config.addinivalue_line("markers", "one_backend: run once, with the first queue backend of "
                            "the compiled run (a test of the daemon, the core and the kernels, "
                            "not of the queue reader or the pure twin)")
    config.addinivalue_line("markers", "daemon_bugs: the test makes the daemon survive bugs on "
                            "purpose (a faulty core): its logged bugs do not fail it")


@pytest.fixture
def topo(request):
    marker = request.node.get_closest_marker("topology")
    with Topology(**(marker.kwargs if marker else {})) as t:
        yield t


# -- the daemon --------------------------------------------------------------------------


SETTLE = 3.0  # seconds Daemon.stop waits for closing test connections (below)
LIVE_SERVERS: list = []  # this test's Servers (server_factory)


class Daemon:
    """`middlebox run` as a subprocess inside the mbox namespace."""

    def __init__(self, t: Topology, *extra: str, env: dict | None = None) -> None:
        self.t = t
        self.lines: list[str] = []
        self.proc = t.popen(
            t.mbox, [*cli("run"), "--queue", str(QUEUE), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", **(env or {})},
        )
        self._bound = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "bound queue" in line:
                self._bound.set()
        self._bound.set()

    def wait_bound(self, timeout: float = 10) -> "Daemon":
        if not self._bound.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError(f"daemon did not bind the queue:\n{self.output}")
        return self

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5,
             settle: float = SETTLE) -> tuple[int | None, float]:
        """Send `sig`, wait; returns (exit status or None if still running, seconds).
        Asked to stop (SIGTERM, SIGINT), the daemon resets the connections the server still
        treats as MPTCP (`Converter.stop`), so a test's connection whose close is on its way
        (the guest's FIN lost, resent after its RTO) would end in a reset the test did not
        mean: first wait up to `settle` seconds while a test server has sent everything and
        waits for its client's close. Seconds include that wait."""
        start = time.monotonic()
        if sig in (signal.SIGTERM, signal.SIGINT):
            deadline = start + settle
            while any(s.closing for s in LIVE_SERVERS) and time.monotonic() < deadline:
                time.sleep(0.05)
            if time.monotonic() - start > 0.05:
                print(f"stop: waited {time.monotonic() - start:.2f} s for closing test connections")
        if self.proc.poll() is None:
            # `ip netns exec` execs the command, so the pid is the daemon's own
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        return rc, time.monotonic() - start


def install_rules(t: Topology, uplinks=None, join_ports: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess:
    """`rules install` in mbox; `uplinks`: True = one `--uplink` per path
    (`Topology.uplink_specs()`), or a list of specs."""
    if uplinks is True:
        uplinks = t.uplink_specs()
    argv = [*cli("rules"), "install", "--queue", str(QUEUE), "--guest-iface", t.mbox_guest_if]
    for spec in uplinks or ():
        argv += ["--uplink", spec]
    if join_ports:
        argv += ["--join-ports", join_ports]
    return t.run(t.mbox, argv, check=check)


def queue_stats(t: Topology) -> dict[str, int]:
    """/proc/net/netfilter/nfnetlink_queue of the mbox namespace, for our queue."""
    out = t.run(t.mbox, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    for line in out.splitlines():
        f = [int(x) for x in line.split()]
        if f[0] == QUEUE:
            return {"waiting": f[2], "queue_dropped": f[5], "user_dropped": f[6], "id_seq": f[7]}
    return {}


# Every test that starts a daemon through `mbox` runs once per queue backend (`middlebox run
# --backend`): our own netlink reader and NetfilterQueue. MIDDLEBOX_TEST_BACKENDS=netlink (or
# nfqueue) runs one of them only. The pure-Python run (MIDDLEBOX_PURE_PYTHON=1) takes the
# default backend only unless asked (MIDDLEBOX_TEST_BACKENDS=netlink,nfqueue): both twice
# would double the slowest part of `make test`. NetfilterQueue's pure path still runs there in
# test_backend_differential.py (both backends, same bytes), the netlink twins are held equal
# by tests/unit/test_nlqueue_twin.py.
_PURE = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")
BACKENDS = [b for b in os.environ.get("MIDDLEBOX_TEST_BACKENDS",
                                      "netlink" if _PURE else "netlink,nfqueue").split(",") if b]


@pytest.fixture(params=BACKENDS)
def mbox(topo, request):
    """Rules installed in the mbox namespace; `start(*args)` runs a daemon (stopped at the end)
    with the backend of this run of the test (`backend`)."""
    install_rules(topo)
    started: list[Daemon] = []
    # the daemons of one test share a state file (a restarted one reads its predecessor's),
    # never another test's (its 4-tuples recur: the same addresses and ports)
    state_dir = tempfile.mkdtemp(prefix="middlebox-state-")

    class Ctl:
        t = topo
        backend = request.param
        state = state_dir

        @staticmethod
        def start(*extra: str, fail_open: bool | None = None, uplinks=None, **kw) -> Daemon:
            """`uplinks` (True: every path; or a list of specs) first re-installs the rules
            with them; the daemon then takes them from the installed rules."""
            if uplinks:
                install_rules(topo, uplinks)
            # The pure-Python reference (MIDDLEBOX_PURE_PYTHON=1) runs ~10x slower than the
            # compiled path and cannot keep up with unshaped veth: with the queue's fail-open
            # a transfer test would become an overload test (segments passing unconverted,
            # the server falling back), which test_queue_overload.py covers on purpose. So
            # in pure mode the daemon drops instead (TCP retransmits), unless a test asks.
            # The daemon drops packets beyond a full queue by default (--fail-open passes them
            # unconverted, which can misplace server bytes: the SYN-flood test corrupted a
            # download that way); tests that study fail-open ask for it.
            if fail_open and "--fail-open" not in extra:
                extra = (*extra, "--fail-open")
            if "--backend" not in extra:
                extra = ("--backend", Ctl.backend, *extra)
            if "--state-dir" not in extra:
                extra = ("--state-dir", os.path.join(state_dir, "run"), *extra)
            d = Daemon(topo, *extra, **kw).wait_bound()
            started.append(d)
            return d

    yield Ctl
    for d in started:
        d.stop(signal.SIGKILL)
    topo.run(topo.mbox, [*cli("rules"), "remove"], check=False)
    shutil.rmtree(state_dir, ignore_errors=True)
    bugs = [ln for d in started for ln in d.lines if BUG_LINE.search(ln)]
    if bugs and not request.node.get_closest_marker("daemon_bugs"):
        # (a test that passes on the bytes still fails on a bug the daemon survived)
        pytest.fail("the daemon logged a bug (an exception it survived):\n" + "\n".join(bugs[:20]))


# What the daemon logs when an exception escaped the core or the queue loop (counted as
# CoreBug, the packet accepted unchanged, the daemon running on): a transfer can still end
# intact (the server took the unconverted segment, or a resend repaired it), so no test
# would notice it without this. One packet that left without its mapping was such a case.
BUG_LINE = re.compile(r"core: \w+ (on a packet|in the multipath timers|stopping a flow|"
                      r"in next_deadline|on an uplink event)|\bbug in |Traceback \(most recent|"
                      r"\bcore\.CoreBug=[1-9]")


# -- the server: hashes what it receives, sends what it is asked ---------------------------


@functools.lru_cache(maxsize=4)
def payload(n: int, seed: int = 1) -> bytes:
    """n deterministic pseudo-random bytes (the same on both ends)."""
    block = hashlib.sha256(f"middlebox-{seed}".encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(block[:64] + i.to_bytes(8, "big")).digest()[:8] + block[8:]
        i += 1
    return bytes(out[:n])


class Server:
    """Listens in the server namespace (MPTCP socket unless mptcp=False). Protocol, one line
    then bytes: `UP n` (client sends n bytes, server answers the hex sha256 and closes),
    `DOWN n` (server sends payload(n) and closes), `UPDOWN u n` (u bytes up, then DOWN n),
    `GREETUP g n` (server sends payload(g) first, as a TLS server's hello, then as UP n: its
    data makes the client's DATA_ACKs 64-bit during the upload). Per connection it records
    the MPTCP_INFO flags read before closing (None where the socket is plain TCP or the call
    fails).
    `bind_any`: listen on every address of the namespace (joins to an address the server
    announces need a listener there), the guest still connects to the path-1 address."""

    def __init__(self, t: Topology, family: int = socket.AF_INET, mptcp: bool = True,
                 port: int = 5201, bind_any: bool = False, ns: str | None = None,
                 addr: str | None = None) -> None:
        self.family = family
        self.addr = addr or (t.server_ip if family == socket.AF_INET else t.server_ip6)
        self.port = port
        with t.in_netns(ns or t.server):  # (ns, addr: a service elsewhere, e.g. in the guest)
            self.sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("" if bind_any else self.addr, port))
        self.sock.listen(256)
        self.mptcp_flags: list[int | None] = []
        self.errors: list[str] = []
        self.closing = 0  # handlers that sent all and wait for the client's close
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._blobs: dict[int, bytes] = {}

    def _serve(self) -> None:
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            f = conn.makefile("rb")
            cmd, *nums = f.readline().split()
            n = int(nums[-1])
            if cmd == b"UPDOWN":  # `UPDOWN u n`: u bytes up (not checked), then payload(n) down
                sha256_of(f.read1, int(nums[0]))
                cmd = b"DOWN"
            if cmd == b"GREETUP":  # `GREETUP g n`: payload(g) down first, then as `UP n`
                conn.sendall(payload(int(nums[0])))
                cmd = b"UP"
            if cmd == b"UP":
                digest = sha256_of(f.read1, n)
                self.mptcp_flags.append(mptcp_info_flags(conn))
                conn.sendall(digest)
            else:
                self.mptcp_flags.append(mptcp_info_flags(conn))
                conn.sendall(payload(n))
            conn.shutdown(socket.SHUT_WR)
            with self._lock:
                self.closing += 1
            try:
                conn.recv(1)  # wait for the client's close
            finally:
                with self._lock:
                    self.closing -= 1
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            # abort, never a clean close: a DOWN whose sendall timed out (60 s in total) closed
            # gracefully, and its DATA_FIN after the bytes written so far showed the guest a
            # clean EOF, a slow transfer that looked like truncation by the middlebox
            # (test_no_sack_plain[netlink-mp]: 6120136 of 6291456 bytes, the test 108 s long)
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def mptcp_info_flags(conn: socket.socket) -> int | None:
    try:
        info = conn.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
    except OSError:
        return None
    return struct.unpack_from("=I", info, 8)[0] if len(info) >= 12 else None


def is_fallback(flags: int | None) -> bool:
    return flags is None or bool(flags & 1)  # MPTCP_INFO_FLAG_FALLBACK


@pytest.fixture
def server_factory(topo):
    servers: list[Server] = []

    def make(**kw) -> Server:
        s = Server(topo, **kw)
        servers.append(s)
        LIVE_SERVERS.append(s)
        return s

    yield make
    for s in servers:
        s.close()
        LIVE_SERVERS.remove(s)


def guest_connect(t: Topology, srv: Server, timeout: float = 60) -> socket.socket:
    with t.in_netns(t.guest):
        c = socket.socket(srv.family, socket.SOCK_STREAM)
    c.settimeout(timeout)
    c.connect((srv.addr, srv.port))
    return c


def sha256_of(read, n: int) -> bytes:
    """The hex sha256 (as bytes) of exactly `n` bytes taken with `read(max)` (a socket's recv
    or a file's read1); ConnectionError when the stream ends first."""
    h = hashlib.sha256()
    left = n
    while left:
        chunk = read(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError(f"EOF with {left} bytes missing")
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest().encode()


def recv_digest(c: socket.socket) -> bytes:
    """The 64-byte hex digest a server sends back (shorter when the connection ends first)."""
    digest = b""
    while len(digest) < 64:
        chunk = c.recv(64 - len(digest))
        if not chunk:
            break
        digest += chunk
    return digest


def upload(t: Topology, srv: Server, data: bytes, timeout: float = 60) -> None:
    """Send `data` from the guest; the server's sha256 must match."""
    with guest_connect(t, srv, timeout) as c:
        c.sendall(f"UP {len(data)}\n".encode())
        c.sendall(data)
        digest = recv_digest(c)
    assert digest.decode() == hashlib.sha256(data).hexdigest(), "upload corrupted or truncated"


def greet_upload(t: Topology, srv: Server, greeting: int, data: bytes, timeout: float = 60) -> None:
    """As upload(), after the server's `greeting` bytes (read and checked first)."""
    with guest_connect(t, srv, timeout) as c:
        c.sendall(f"GREETUP {greeting} {len(data)}\n".encode())
        got = b""
        while len(got) < greeting:
            chunk = c.recv(greeting - len(got))
            assert chunk, f"greeting truncated: {len(got)} of {greeting} bytes"
            got += chunk
        assert got == payload(greeting), "greeting corrupted"
        c.sendall(data)
        digest = recv_digest(c)
    assert digest.decode() == hashlib.sha256(data).hexdigest(), "upload corrupted or truncated"


def download(t: Topology, srv: Server, n: int, timeout: float = 60) -> None:
    """Fetch n bytes to the guest; sha256 must equal the payload's."""
    h = hashlib.sha256()
    got = 0
    with guest_connect(t, srv, timeout) as c:
        c.sendall(f"DOWN {n}\n".encode())
        while True:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
    assert got == n, f"download truncated: {got} of {n} bytes"
    assert h.hexdigest() == hashlib.sha256(payload(n)).hexdigest(), "download corrupted"
