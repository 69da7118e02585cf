"""The reference topology of TESTBED.md, built in network namespaces with pyroute2.

```
 ns guest             ns mbox (middlebox)                    ns server (Linux MPTCP)
 10.0.0.1   --veth--  10.0.0.254 | 10.1.1.1  --veth path 1--  10.1.1.2
 fd00::1              fd00::fe   | fd00:1::1                  fd00:1::2
                                 | 10.2.2.1  --veth path 2--  10.2.2.2
                                 | fd00:2::1                  fd00:2::2
                                 | 10.3.3.1  --veth path 3--  10.3.3.2   (paths=3; up to 9)
                                 | fd00:3::1                  fd00:3::2
```

Path k's interfaces are `paths[k-1].mbox_if` / `.server_if`; `uplink_ifaces` lists the mbox
ends (the middlebox's uplinks), `uplink_specs()` their `--uplink` specs.

In mbox, source policy routing sends what comes from path k's address out by path k (table
100+k, rule priority 1000+k), so a subflow from 10.2.2.1 to the server's 10.1.1.2 takes path
2. `middlebox rules install --uplink` adds its own source routing (its own free tables and
priorities, 6100 and up) and coexists with this: both send path k's address by path k, and
each removes only what it added. `Topology(policy_routing=False)` leaves the test bed's out,
so that the installer's routing is all there is (its specs then name the gateways: there is
no default route to find; `uplink_specs()` does that). The kernel deletes the routes through a
link set down; `set_link(k, True)` puts the test bed's back (the daemon does the same for the
installer's when it sees the link up). IPv6 addresses survive a link going down
(keep_addr_on_down=1 in mbox and server), as IPv4 ones do.

The server accepts up to 8 subflows and 8 ADD_ADDR (`ip mptcp limits`, the kernel's maximum)
unless `server_limits` says otherwise.

Usage, from a test or a plain script::

    from middlebox.testbed import Topology
    with Topology(rate_mbit=100) as t:
        srv = t.popen(t.server, ["iperf3", "-s", "-1"])
        t.run(t.guest, ["iperf3", "-c", t.server_ip, "-t", "3"])
        print(t.nstat(t.server))          # MPTcp* counters of the server namespace

Every namespace and interface name carries a per-instance tag (pid + random), so concurrent
topologies on one machine never collide. `close()` (also run by `__exit__`, on failure of
`start()` and at interpreter exit) kills the processes started through `popen` and deletes
the namespaces, which deletes their veths.

Only addresses inside these namespaces ever get traffic.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import secrets
import signal
import subprocess
import threading
import time
from typing import Iterator, Mapping, Sequence

from pyroute2 import IPRoute, MPTCP, netns

CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the *calling thread* inside network namespace `name`.

    Sockets created in the body stay in that namespace after the block ends. setns(2) is per
    thread, so other threads are not affected (use one thread per namespace for servers).
    """
    path = name if "/" in name else os.path.join(NETNS_RUN_DIR, name)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)


def write_sysctl(key: str, value: object) -> None:
    """Write net.x.y=value for the namespace of the calling thread."""
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path, "w") as f:
        f.write(f"{value}\n")


def read_sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


@dataclasses.dataclass(frozen=True)
class Path:
    """One uplink between mbox and server."""

    index: int  # 1, 2
    mbox_if: str
    server_if: str
    mbox_ip: str
    server_ip: str
    mbox_ip6: str
    server_ip6: str
    prefix: str  # "10.1.1.0/24"
    prefix6: str  # "fd00:1::/64"


class Topology:
    """guest / mbox / server namespaces wired as in TESTBED.md.

    Parameters:
      rate_mbit: None (unshaped), a number (every path), or a sequence (one per path);
        tbf on both ends of each path with `latency_ms` and `burst` bytes.
      server_mptcp: False makes the server a plain-TCP host (net.mptcp.enabled=0).
      checksum: net.mptcp.checksum_enabled=1 on the server.
      sysctls: extra sysctls per role, e.g. {"server": {"net.mptcp.allow_join_initial_addr_port": 0}}.
      server_limits: (subflows, add_addr_accepted) for `ip mptcp limits` in the server.
      server_signal: also add the server's path-2 addresses as `signal` endpoints (ADD_ADDR).
      paths: number of mbox<->server paths (1..9).
      policy_routing: False leaves out the test bed's source policy routing in mbox.
    """

    GUEST_IP, MBOX_GUEST_IP = "10.0.0.1", "10.0.0.254"
    GUEST_IP6, MBOX_GUEST_IP6 = "fd00::1", "fd00::fe"
    GUEST_PREFIX, GUEST_PREFIX6 = "10.0.0.0/24", "fd00::/64"

    def __init__(
        self,
        *,
        rate_mbit: float | Sequence[float] | None = None,
        latency_ms: float = 50,
        burst: int = 32 * 1024,
        server_mptcp: bool = True,
        checksum: bool = False,
        sysctls: Mapping[str, Mapping[str, object]] | None = None,
        server_limits: tuple[int, int] = (8, 8),
        server_signal: bool = False,
        paths: int = 2,
        tag: str | None = None,
        policy_routing: bool = True,
    ) -> None:
        if not 1 <= paths <= 9:
            raise ValueError("paths must be 1..9")
        self.tag = tag or f"{os.getpid() % 0x10000:04x}{secrets.token_hex(2)}"
        t = self.tag
        self.guest, self.mbox, self.server = f"mbg-{t}", f"mbm-{t}", f"mbs-{t}"
        self.guest_if, self.mbox_guest_if = f"g0{t}", f"m0{t}"
        self.guest_ip, self.mbox_guest_ip = self.GUEST_IP, self.MBOX_GUEST_IP
        self.guest_ip6, self.mbox_guest_ip6 = self.GUEST_IP6, self.MBOX_GUEST_IP6
        self.paths = [
            Path(
                index=i,
                mbox_if=f"m{i}{t}",
                server_if=f"s{i}{t}",
                mbox_ip=f"10.{i}.{i}.1",
                server_ip=f"10.{i}.{i}.2",
                mbox_ip6=f"fd00:{i}::1",
                server_ip6=f"fd00:{i}::2",
                prefix=f"10.{i}.{i}.0/24",
                prefix6=f"fd00:{i}::/64",
            )
            for i in range(1, paths + 1)
        ]
        if rate_mbit is None or isinstance(rate_mbit, (int, float)):
            self.rates = [rate_mbit] * paths
        else:
            self.rates = list(rate_mbit)
            if len(self.rates) != paths:
                raise ValueError("one rate per path")
        self.latency_ms = latency_ms
        self.burst = burst
        self.server_mptcp = server_mptcp
        self.checksum = checksum
        self.extra_sysctls = {k: dict(v) for k, v in (sysctls or {}).items()}
        self.server_limits = server_limits
        self.server_signal = server_signal
        self.policy_routing = policy_routing
        self._procs: list[subprocess.Popen] = []
        self._created: list[str] = []
        self._closed = False
        self._lock = threading.Lock()

    # -- addresses ----------------------------------------------------------------------

    @property
    def server_ip(self) -> str:
        """The server's address on path 1 (the one the guest connects to)."""
        return self.paths[0].server_ip

    @property
    def server_ip6(self) -> str:
        return self.paths[0].server_ip6

    @property
    def namespaces(self) -> list[str]:
        return [self.guest, self.mbox, self.server]

    @property
    def uplink_ifaces(self) -> list[str]:
        """The mbox ends of the paths (the middlebox's uplinks), path 1 first."""
        return [p.mbox_if for p in self.paths]

    def uplink_specs(self, gateways: bool | None = None) -> list[str]:
        """`--uplink` specs of the paths, path 1 first; with gateways (the default when the
        test bed's own policy routing is off) they name the server's end as gw."""
        if gateways is None:
            gateways = not self.policy_routing
        return [f"{p.mbox_if},gw={p.server_ip},gw={p.server_ip6}" if gateways else p.mbox_if
                for p in self.paths]

    def ifindex(self, ns: str, ifname: str) -> int:
        with IPRoute(netns=ns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no interface {ifname} in {ns}")
        return found[0]

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> "Topology":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Topology":
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces:
            netns.create(ns)
            self._created.append(ns)
        self._sysctls()
        self._veth(self.guest, self.guest_if, self.mbox, self.mbox_guest_if)
        for p in self.paths:
            self._veth(self.mbox, p.mbox_if, self.server, p.server_if)

        with IPRoute(netns=self.guest) as ipr:
            self._up(ipr, "lo")
            idx = self._up(ipr, self.guest_if)
            self._addr(ipr, idx, self.guest_ip, 24)
            self._addr(ipr, idx, self.guest_ip6, 64)
            ipr.route("add", dst="0.0.0.0/0", gateway=self.mbox_guest_ip)
            ipr.route("add", dst="::/0", gateway=self.mbox_guest_ip6, family=10)

        with IPRoute(netns=self.mbox) as ipr:
            self._up(ipr, "lo")
            idx = self._up(ipr, self.mbox_guest_if)
            self._addr(ipr, idx, self.mbox_guest_ip, 24)
            self._addr(ipr, idx, self.mbox_guest_ip6, 64)
            for p in self.paths:
                idx = self._up(ipr, p.mbox_if)
                self._addr(ipr, idx, p.mbox_ip, 24)
                self._addr(ipr, idx, p.mbox_ip6, 64)
            # Source policy routing: a packet from path k's address leaves by path k, whatever
            # its destination (extra subflows reach the server's path-1 address by path 2).
            for p in self.paths if self.policy_routing else ():
                table = self.policy_table(p.index)
                self._policy_routes(ipr, p)
                ipr.rule("add", table=table, priority=1000 + p.index, src=p.mbox_ip, src_len=32)
                ipr.rule("add", table=table, priority=1000 + p.index, src=p.mbox_ip6,
                         src_len=128, family=10)

        with IPRoute(netns=self.server) as ipr:
            self._up(ipr, "lo")
            for p in self.paths:
                idx = self._up(ipr, p.server_if)
                self._addr(ipr, idx, p.server_ip, 24)
                self._addr(ipr, idx, p.server_ip6, 64)
            p1 = self.paths[0]
            ipr.route("add", dst=self.GUEST_PREFIX, gateway=p1.mbox_ip)
            ipr.route("add", dst=self.GUEST_PREFIX6, gateway=p1.mbox_ip6, family=10)

        for p, rate in zip(self.paths, self.rates):
            if rate:
                self.shape(p.index, rate)
        self._wait_links_up()

        with in_netns(self.server):
            with MPTCP() as mp:
                subflows, add_addr = self.server_limits
                mp.limits("set", subflows=subflows, add_addr_accepted=add_addr)
                if self.server_signal:
                    for p in self.paths[1:]:
                        mp.endpoint("add", addr=p.server_ip, flags=1)  # MPTCP_PM_ADDR_FLAG_SIGNAL
                        mp.endpoint("add", addr6=p.server_ip6, flags=1)

    def _policy_routes(self, ipr: IPRoute, p: Path) -> None:
        """Path p's routes in its table in mbox (`replace`: also after a link flap)."""
        idx = ipr.link_lookup(ifname=p.mbox_if)[0]
        table = self.policy_table(p.index)
        ipr.route("replace", dst=p.prefix, oif=idx, table=table)
        ipr.route("replace", dst="0.0.0.0/0", gateway=p.server_ip, oif=idx, table=table)
        ipr.route("replace", dst=p.prefix6, oif=idx, table=table, family=10)
        ipr.route("replace", dst="::/0", gateway=p.server_ip6, oif=idx, table=table, family=10)

    def _wait_links_up(self, timeout: float = 5.0) -> None:
        """veth operstate follows the peer with a short (linkwatch) delay: wait for it."""
        wanted = {
            self.guest: [self.guest_if],
            self.mbox: [self.mbox_guest_if, *(p.mbox_if for p in self.paths)],
            self.server: [p.server_if for p in self.paths],
        }
        deadline = time.monotonic() + timeout
        for ns, names in wanted.items():
            with IPRoute(netns=ns) as ipr:
                for name in names:
                    while True:
                        link = ipr.get_links(ipr.link_lookup(ifname=name)[0])[0]
                        if link.get("operstate") == "UP":
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{name} in {ns} did not come up")
                        time.sleep(0.02)

    @staticmethod
    def policy_table(path: int) -> int:
        """Routing table of path `path` in mbox (`ip rule from <mbox path addr> lookup T`)."""
        return 100 + path

    def _sysctls(self) -> None:
        common = {
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
            "net.ipv6.conf.all.accept_ra": 0,
            "net.ipv6.conf.default.accept_ra": 0,
        }
        per_role = {
            "guest": {**common, "net.mptcp.enabled": 0},
            "mbox": {
                **common,
                "net.ipv4.ip_forward": 1,
                "net.ipv6.conf.all.forwarding": 1,
                "net.ipv6.conf.all.keep_addr_on_down": 1,
            },
            "server": {
                **common,
                "net.ipv6.conf.all.keep_addr_on_down": 1,
                "net.mptcp.enabled": 1 if self.server_mptcp else 0,
                "net.mptcp.checksum_enabled": 1 if self.checksum else 0,
            },
        }
        for role, extra in self.extra_sysctls.items():
            if role not in per_role:
                raise ValueError(f"sysctls: unknown role {role!r} (guest, mbox, server)")
            per_role[role].update(extra)
        for role, values in per_role.items():
            self.set_sysctls(getattr(self, role), values)

    def set_sysctls(self, ns: str, values: Mapping[str, object]) -> None:
        """Write sysctls inside namespace `ns` (in a helper thread: setns is per thread)."""
        self._in_thread(ns, lambda: [write_sysctl(k, v) for k, v in values.items()])

    def read_sysctl(self, ns: str, key: str) -> str:
        return self._in_thread(ns, lambda: read_sysctl(key))

    def _in_thread(self, ns: str, fn):
        box: dict[str, object] = {}

        def target() -> None:
            try:
                with in_netns(ns):
                    box["value"] = fn()
            except BaseException as e:  # handed to the caller below
                box["error"] = e

        th = threading.Thread(target=target, name=f"netns-{ns}")
        th.start()
        th.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box.get("value")

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        with IPRoute(netns=ns_a) as ipr:
            ipr.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})

    @staticmethod
    def _up(ipr: IPRoute, ifname: str) -> int:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, state="up")
        return idx

    @staticmethod
    def _addr(ipr: IPRoute, idx: int, address: str, prefixlen: int) -> None:
        if ":" in address:
            ipr.addr("add", index=idx, address=address, prefixlen=prefixlen, family=10,
                     flags=IFA_F_NODAD)
        else:
            ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)

    def shape(self, path: int, rate_mbit: float, latency_ms: float | None = None,
              burst: int | None = None) -> None:
        """(Re)shape path `path` (1-based) with tbf on both ends."""
        p = self.paths[path - 1]
        for ns, ifname in ((self.mbox, p.mbox_if), (self.server, p.server_if)):
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                with contextlib.suppress(Exception):
                    ipr.tc("del", index=idx, handle="1:", parent=0xFFFFFFFF)
                ipr.tc(
                    "add", "tbf", index=idx, handle="1:",
                    rate=f"{rate_mbit}mbit",
                    burst=burst or self.burst,
                    latency=f"{latency_ms if latency_ms is not None else self.latency_ms}ms",
                )

    def set_link(self, path: int, up: bool) -> None:
        """Bring path `path` (1-based) down or up on both ends; up again, the test bed's
        policy routes of the path and (path 1) the server's routes to the guests, which the
        kernel deleted with the link, come back."""
        p = self.paths[path - 1]
        for ns, ifname in ((self.mbox, p.mbox_if), (self.server, p.server_if)):
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=idx, state="up" if up else "down")
        if up and self.policy_routing:
            with IPRoute(netns=self.mbox) as ipr:
                self._policy_routes(ipr, p)
        if up and path == 1:  # the server's routes to the guests go by path 1 (inbound role)
            with IPRoute(netns=self.server) as ipr:
                ipr.route("replace", dst=self.GUEST_PREFIX, gateway=p.mbox_ip)
                ipr.route("replace", dst=self.GUEST_PREFIX6, gateway=p.mbox_ip6, family=10)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        # Anything else still running inside our namespaces (started by hand, by a test)
        # would keep them alive: kill it, by pid, namespaces ours only.
        for pid in self._pids_in_our_namespaces():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for ns in reversed(self._created):
            with contextlib.suppress(FileNotFoundError, OSError):
                netns.remove(ns)
        self._created.clear()

    def _pids_in_our_namespaces(self) -> list[int]:
        inodes = set()
        for ns in self._created:
            with contextlib.suppress(OSError):
                inodes.add(os.stat(os.path.join(NETNS_RUN_DIR, ns)).st_ino)
        pids = []
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    pids.append(int(entry))
        return pids

    # -- running things -----------------------------------------------------------------

    def _argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]

    def popen(self, ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start `argv` inside namespace `ns`; killed at close() if still running."""
        proc = subprocess.Popen(self._argv(ns, argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 120,
            capture_output: bool = True, text: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run `argv` inside namespace `ns` to completion (CalledProcessError if check)."""
        return subprocess.run(self._argv(ns, argv), check=check, timeout=timeout,
                              capture_output=capture_output, text=text, **kw)

    def nstat(self, ns: str, prefix: str | None = "MPTcpExt") -> dict[str, int]:
        """Absolute SNMP/netstat counters of namespace `ns` (`nstat -asz`).

        With the default prefix: the MPTCP counters, keyed without the prefix
        (`{"MPCapableSYNRX": 1, ...}`); prefix=None: every counter, full names.
        """
        out = self.run(ns, ["nstat", "-asz", "--json"]).stdout
        import json

        data = json.loads(out)
        flat: dict[str, int] = {}
        for table in data.values():
            for k, v in table.items():
                flat[k] = int(v)
        if prefix is None:
            return flat
        return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}

    @contextlib.contextmanager
    def in_netns(self, ns: str) -> Iterator[None]:
        """Create sockets in-process in namespace `ns` (the calling thread only)."""
        with in_netns(ns):
            yield

    def wait_tcp_listen(self, ns: str, port: int, timeout: float = 5.0) -> None:
        """Wait until something listens on TCP `port` in `ns`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on port {port} in {ns}")


def main() -> int:  # pragma: no cover - manual smoke test
    """Build the topology, pass one MPTCP connection guest -> server (no middlebox), report."""
    import socket

    with Topology(rate_mbit=100) as t:
        print("namespaces:", " ".join(t.namespaces))
        for family, server in ((socket.AF_INET, t.server_ip), (socket.AF_INET6, t.server_ip6)):
            with t.in_netns(t.server):
                ls = socket.socket(family, socket.SOCK_STREAM, 262)
            ls.bind((server, 5201))
            ls.listen()
            with t.in_netns(t.guest):
                c = socket.create_connection((server, 5201), timeout=5)
            s, _ = ls.accept()
            c.sendall(b"hello")
            print(family.name, server, "->", s.recv(5))
            for x in (c, s, ls):
                x.close()
        print({k: v for k, v in t.nstat(t.server).items() if v})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
