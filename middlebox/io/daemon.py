"""Convert packets from an NFQUEUE until SIGINT/SIGTERM (the I/O shell around the core).

`middlebox run --queue 0 [--mptcp-version 1|0] [--checksum] [--guest-iface IF ...]
[--uplink IFACE[,gw=ADDR][,backup][,cost=N] ...] [--join-ports LO-HI] [--max-subflows N]
[--max-multipath-flows N] [--join-after-bytes N] [--join-after-ms N] [--repair-bytes N]
[--repair-total-bytes N] [--repair-window] [--dsack-undo] [--policy greedy|cost] [--target RATE]
[--no-inbound] [--passthrough] [--max-flows N] [--queue-maxlen N] [--fail-open]
[--stop-grace SECONDS] [--state-dir DIR] [-v] [--log-level LEVEL] [--metrics ADDR:PORT]
[--config PATH]`

* Binds the queue with NetfilterQueue: kernel queue length --queue-maxlen (default 4096), an
  8 MB socket receive buffer (SO_RCVBUFFORCE, inside NetfilterQueue's bind; ENOBUFS = the
  kernel dropped queue messages: counted, the loop goes on). A packet that finds the queue
  full is dropped (TCP resends it); --fail-open sets NFQA_CFG_F_FAIL_OPEN instead (accepted
  unchanged: can misplace server bytes, see --help). A kernel that refuses the flag is
  logged once, never fatal.
* A non-blocking loop: select() on the queue fd, at most BUDGET packets per round, then the
  stop flag, SIGUSR1 and the core's timers (every ~0.5 s). The per-packet path (the round's
  reads and the NetfilterQueue callback) is `middlebox._cnfq` (cext/_nfq.pyx), compiled,
  unless `MIDDLEBOX_PURE_PYTHON=1` is set, it was not built, or the installed NetfilterQueue
  is not the version it was written against (`NETFILTERQUEUE_PIN`: it reads private fields);
  its reference is `_BudgetReader`, `_PyPassthrough`, `_PyConverting` and
  `_py_set_queue_flags` below. Signal handlers only set flags:
  nothing is raised inside the NetfilterQueue callback (LESSONS.md trap 12). On SIGINT or
  SIGTERM the daemon goes on converting for up to --stop-grace seconds (2) while a
  connection that ends has both FINs sent but not acked (`Converter.closing`; a second
  signal cuts it short), then drains what is queued, resets the flows that cannot pass
  unconverted once it is gone (Converter.stop), unbinds and exits 0.
* The state file (--state-dir, middlebox/io/statefile.py): the connections a kill would
  orphan (Converter.recorded every second, Converter.fresh each round), read back by a
  successor (Orphans.learn) so that it resets exactly those.
* Direction: a packet whose `indev` is a guest-facing interface is `Direction.OUT`, any other
  `Direction.IN`. Guest interfaces come from --guest-iface or from the installed rules:
  names (a bridge such as virbr0) or patterns with a trailing `*` (vnet*); the interfaces
  that appear or go while the daemon runs are followed (middlebox/io/ifaces.py).
* For each packet the core returns actions (docs/core-api.md); the first is the verdict
  (Accept / Rewrite -> set_payload + accept / Drop), the rest `Inject`s sent through raw
  sockets marked with the injection mark so the ruleset does not queue them again.
* Anything raised by the core is a bug: counted, logged once per kind, and the packet is
  accepted unchanged. The daemon never dies on input.
* `--passthrough` accepts every packet without the core (the reference for benchmarks).
* Uplinks (multipath): from --uplink or from the installed rules (`rules install --uplink`),
  looked up at start (middlebox/io/uplinks.py: primary IPv4/IPv6 address, link state) and
  handed to the core as `Config.uplinks` (ids 1..n), with --join-ports (default: the installed
  range) and the join settings. A queued packet addressed to an uplink address with a
  destination port in the join range arrived for the box itself (the rules queue those from
  INPUT; forwarded packets never carry a local destination): it goes to the core as
  `Direction.LOCAL`, or, while the core has no LOCAL direction, is dropped (`local_dropped`;
  nothing local owns the reserved range, the stack would only answer with a RST). The links
  are followed through an rtnetlink socket (pyroute2, link and address groups) in the same
  select() loop: an uplink going down or up (link state, carrier, its address) is logged and
  reported to the core's `uplink_event(name, up, now)` where it has one; its actions are
  injected. Up again, the uplink's policy routes of the installed rules are put back (the
  kernel deletes them with the link).
* Timers: besides the fixed tick (~0.5 s), the loop wakes for the core's `next_deadline()`
  where it has one.
* Operations (middlebox/io/ops.py, polled by the loop and by every `tick`): READY=1 to
  systemd once the queue is bound, STOPPING=1 on SIGTERM/SIGINT; the control socket of
  `middlebox flows` and `middlebox stats`; `--metrics ADDR:PORT` (Prometheus); journald-style
  log lines under systemd. Options may come from the config file (middlebox/io/config.py).
  Exit statuses: middlebox/io/service.py (2 usage/config, 3 capability, 4 kernel, 5 busy).
"""

from __future__ import annotations

import argparse
import errno
import functools
import importlib
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
import warnings
from collections import Counter as _Tally

from middlebox.core.config import JOIN_PORTS_DEFAULT
from middlebox.io import ops as _ops
from middlebox.io import ifaces, rules, service, statefile
from middlebox.io import metrics as _metrics
from middlebox.io import uplinks as _uplinks

log = logging.getLogger("middlebox.run")
_monotonic = time.monotonic

BUDGET = 256  # packets handled per loop round before looking at flags and timers
TICK = 0.5  # seconds between Converter.tick calls
SELECT_TIMEOUT = 0.1
STOP_GRACE = 2.0  # seconds (--stop-grace)
DEADLINE_MIN_WAIT = 0.001  # a core deadline that stays in the past cannot spin the loop
QUEUE_MAXLEN = 4096  # kernel queue length (default 1024; NetfilterQueue's default too)
SOCK_RCVBUF = 8 * 1024 * 1024
AF_NETLINK, NETLINK_NETFILTER = 16, 12
# `middlebox._cnfq` reads private C fields of this NetfilterQueue release (pyproject.toml pins it)
NETFILTERQUEUE_PIN = "1.1.0"
# nfnetlink: the queue subsystem's config message and its flag attributes
NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG = 3, 2
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 0x1, 0x4, 0x2
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQA_CFG_F_FAIL_OPEN = 0x1


class DaemonError(Exception):
    """A start-up failure with a message for the user; `status` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Injector:
    """Raw sockets (IPv4 IP_HDRINCL, IPv6 IPPROTO_RAW) that send complete, marked packets.

    The kernel routes a raw packet by the socket's bound address, not by the source in the
    header: a packet whose source is a local address (an uplink address of the middlebox)
    goes through a socket bound to that address, so source-based policy routing (one uplink
    per subflow) applies. Other sources (guest or server addresses) use an unbound socket.
    """

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self._socks: dict[tuple[int, str | None], socket.socket] = {}
        self._not_local: set[str] = set()

    def _open(self, version: int, src: str | None) -> socket.socket:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            if version == 4:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            # multipath injects bursts (a GSO super-packet cut into ~45 segments for another
            # subflow): a default-sized buffer overflows (EAGAIN, lost segments)
            try:
                s.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setblocking(False)
            if src is not None:
                s.bind((src, 0) if version == 4 else (src, 0, 0, 0))
        except BaseException:
            s.close()
            raise
        return s

    def _sock(self, version: int, src: str) -> socket.socket:
        key = (version, src)
        s = self._socks.get(key)
        if s is not None:
            return s
        if src not in self._not_local:
            try:
                s = self._socks[key] = self._open(version, src)
                return s
            except OSError as e:
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
                self._not_local.add(src)
        key = (version, None)
        s = self._socks.get(key)
        if s is None:
            s = self._socks[key] = self._open(version, None)
        return s

    def send(self, data: bytes) -> None:
        version = data[0] >> 4 if data else 0
        if version == 4 and len(data) >= 20:
            src = socket.inet_ntop(socket.AF_INET, data[12:16])
            dst = (socket.inet_ntop(socket.AF_INET, data[16:20]), 0)
        elif version == 6 and len(data) >= 40:
            src = socket.inet_ntop(socket.AF_INET6, data[8:24])
            dst = (socket.inet_ntop(socket.AF_INET6, data[24:40]), 0, 0, 0)
        else:
            raise ValueError("injected packet is neither IPv4 nor IPv6")
        self._sock(version, src).sendto(data, dst)

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()


def _is_pure() -> bool:
    return os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")


def netfilterqueue_version() -> str:
    """The version of the NetfilterQueue the daemon imports ("?" if it does not say)."""
    import netfilterqueue

    return str(getattr(netfilterqueue, "__version__", "?"))


def packet_path(nfq_version: str | None = None):
    """The per-packet path: the compiled `middlebox._cnfq`, or None for the Python reference
    below (MIDDLEBOX_PURE_PYTHON=1, not built, or NetfilterQueue is not `NETFILTERQUEUE_PIN`:
    logged once). Imported when the daemon runs, not before: it loads NetfilterQueue.
    `nfq_version` stands for the installed version (tests)."""
    if _is_pure():
        return None
    version = netfilterqueue_version() if nfq_version is None else nfq_version
    if version != NETFILTERQUEUE_PIN:
        log.warning("NetfilterQueue %s is installed, the compiled packet path reads private "
                    "fields of %s: using the pure-Python packet path (slower; pip install "
                    "NetfilterQueue==%s restores it)", version, NETFILTERQUEUE_PIN,
                    NETFILTERQUEUE_PIN)
        return None
    try:
        from middlebox import _cnfq
    except ImportError:
        return None
    return _cnfq


class _BudgetReader:
    """Reference of `_cnfq.pump`: what NetfilterQueue.run_socket reads from, the queue socket
    at most `budget` reads per round (then EAGAIN), ENOBUFS counted."""

    def __init__(self, sock: socket.socket) -> None:
        self._recv = sock.recv
        self.left = 0
        self.enobufs = 0

    def recv(self, n: int) -> bytes:
        if self.left <= 0:
            raise BlockingIOError(errno.EAGAIN, "budget")
        self.left -= 1
        try:
            return self._recv(n)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.enobufs += 1
            raise

    def pump(self, nfq, budget: int) -> tuple[int, int]:
        self.left, self.enobufs = budget, 0
        nfq.run_socket(self)
        return budget - self.left, self.enobufs


class _Replay:
    """One datagram for NetfilterQueue.run_socket, then EAGAIN."""

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data

    def recv(self, n: int) -> bytes:
        data, self.data = self.data, None
        if data is None:
            raise BlockingIOError(errno.EAGAIN, "replayed")
        return data


def _py_set_queue_flags(sock: socket.socket, nfq, queue: int, mask: int, flags: int,
                        timeout: float = 2.0) -> int:
    """Reference of `_cnfq.set_queue_flags` (nfq_set_queue_flags): an NFQNL_MSG_CONFIG with
    NFQA_CFG_MASK/NFQA_CFG_FLAGS on the queue's own socket (the kernel takes a bound queue's
    config only from its peer), NLM_F_ACK; returns 0 or the errno of the kernel's answer.
    Queue messages read before the answer go to the bound callback, as in libnfnetlink."""
    seq = (int(time.time()) ^ os.getpid()) & 0xFFFFFFFF
    attrs = b"".join(struct.pack("=HH", 8, kind) + struct.pack("!I", value)  # nlattr, be32
                     for kind, value in ((NFQA_CFG_MASK, mask), (NFQA_CFG_FLAGS, flags)))
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attrs  # nfgenmsg, res_id = queue
    sock.send(struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG,
                          NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return errno.ETIMEDOUT
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                continue
            raise
        off = 0
        while off + 16 <= len(data):
            length, kind, _, mseq, _ = struct.unpack_from("=IHHII", data, off)
            if kind == NLMSG_ERROR and mseq == seq and off + 20 <= len(data):
                return -struct.unpack_from("=i", data, off + 16)[0]
            if length < 16:
                break
            off += (length + 3) & ~3
        nfq.run_socket(_Replay(data))


class _PyPassthrough:
    """Reference of `_cnfq.Passthrough`."""

    def __init__(self) -> None:
        self.passed = 0

    def __call__(self, pkt) -> None:
        self.passed += 1
        pkt.accept()


class _PyConverting:
    """Reference of `_cnfq.Converting` (see its docstring for the contract)."""

    def __init__(self, handle, guests, out, inn, slow, bug, inject) -> None:
        self.handle, self.guests, self.out, self.inn = handle, frozenset(guests), out, inn
        self.slow, self.bug, self.inject = slow, bug, inject
        self.accept_type = self.rewrite_type = self.drop_type = None
        self.handled = self.rewritten = self.dropped = 0

    def __call__(self, pkt) -> None:
        self.handled += 1
        try:
            data = pkt.get_payload()
            actions = self.handle(data, self.out if pkt.indev in self.guests else self.inn,
                                  _monotonic())
            verdict = actions[0]
        except Exception as e:
            self.bug("core", e, pkt)
            return
        try:
            t = type(verdict)
            if t is self.rewrite_type and type(verdict.data) is bytes:
                pkt.set_payload(verdict.data)
                pkt.accept()
                self.rewritten += 1
            elif t is self.accept_type:
                pkt.accept()
            elif t is self.drop_type:
                pkt.drop()
                self.dropped += 1
            else:
                self.slow(pkt, verdict)
        except Exception as e:
            self.bug("verdict", e, pkt)
        try:
            if len(actions) > 1:
                self.inject(actions[1:])
        except Exception as e:
            self.bug("inject", e, pkt)


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tally: _Tally[str] = _Tally()
        self.seen: set[str] = set()
        self.stop = False
        self.stops = 0  # stop signals received
        self.state = None  # statefile.StateFile (--state-dir)
        self.next_state = 0.0
        self.dump = False
        self.conv = None
        self.guest_ifindexes: frozenset[int] = frozenset()
        self.injector = Injector(args.mark)
        self._verdicts: dict[type, str] = {}
        # the NetfilterQueue callback; its per-packet tallies are plain (C) integers, folded
        # into `tally` by counters(): a Counter item update costs more than a verdict
        self.handler = None
        self._folds: tuple[tuple[str, str], ...] = ()
        self.uplinks: list[_uplinks.ResolvedUplink] = []
        self.recorded_uplinks: dict[str, _uplinks.ResolvedUplink] = {}  # by name, with tables
        self.join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT
        self.links: _uplinks.LinkWatch | None = None
        self.ops = _ops.Ops(self)  # control socket, metrics, systemd, guest interfaces
        self.guest_patterns: list[str] = []
        self.LOCAL = None
        self._drop = None

    # -- bookkeeping ---------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.tally[name] += n

    def enobufs(self, n: int) -> None:
        self.count("enobufs", n)
        self.once("enobufs", "queue socket overrun (ENOBUFS): the kernel dropped queue messages; "
                  "counted, going on")

    def once(self, kind: str, message: str) -> None:
        if kind not in self.seen:
            self.seen.add(kind)
            log.warning("%s", message)

    def bug(self, where: str, exc: BaseException) -> None:
        """An exception that escaped the core or the verdict: count, log once per kind."""
        tb = traceback.extract_tb(exc.__traceback__)
        last = tb[-1] if tb else None
        site = f"{os.path.basename(last.filename)}:{last.lineno}" if last else "?"
        kind = f"{where}:{type(exc).__name__}:{site}"
        self.count(f"bug_{where}")
        if kind not in self.seen:
            self.seen.add(kind)
            log.error("bug in %s: %s: %s at %s (counted; packet accepted unchanged; "
                      "further ones of this kind not logged)", where, type(exc).__name__, exc, site)
            if self.args.verbose:
                log.error("%s", "".join(traceback.format_exception(exc)).rstrip())

    def counters(self) -> dict[str, int]:
        h = self.handler
        for attr, name in self._folds:
            n = getattr(h, attr)
            setattr(h, attr, 0)
            self.tally[name] += n
        out = {k: v for k, v in sorted(self.tally.items()) if v}
        if self.conv is not None:
            try:
                for k, v in dict(self.conv.counters).items():
                    if v:
                        out[f"core.{getattr(k, 'name', k)}"] = int(v)
                out["core.flows"] = len(self.conv.flows)
            except Exception as e:  # a broken counters property must not kill the exit path
                self.bug("counters", e)
        return out

    def print_counters(self, title: str) -> None:
        c = self.counters()
        print(f"{title}: " + (" ".join(f"{k}={v}" for k, v in c.items()) or "all zero"),
              flush=True)

    # -- setup ---------------------------------------------------------------------------

    def load_core(self) -> None:
        spec = self.args.converter
        modname, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(modname)
            factory = getattr(module, attr or "Converter")
            config_cls = getattr(module, "Config")
            direction = getattr(module, "Direction")
        except (ImportError, AttributeError) as e:
            raise DaemonError(f"the converter core ({spec}) is not available: {e}; "
                              "--passthrough runs without it") from None
        kw = dict(version=self.args.mptcp_version, checksum=self.args.checksum,
                  max_flows=self.args.max_flows, mtu=self.args.mtu)
        if getattr(self.args, "no_inbound", False):
            kw["inbound"] = False
        if self.uplinks:
            kw.update(uplinks=tuple(u.to_config() for u in self.uplinks),
                      join_ports=self.join_ports, max_subflows=self.args.max_subflows,
                      max_multipath_flows=self.args.max_multipath_flows,
                      join_after_bytes=self.args.join_after_bytes,
                      join_after_ms=self.args.join_after_ms,
                      repair_bytes=self.args.repair_bytes,
                      repair_total_bytes=self.args.repair_total_bytes,
                      repair_window=self.args.repair_window,
                      dsack_undo=self.args.dsack_undo,
                      policy=self.args.policy, target=self.args.target)
        try:
            config = config_cls(**kw)
        except (TypeError, ValueError) as e:
            raise DaemonError(f"the converter refuses this configuration: {e}") from None
        self.conv = factory(config)
        self.open_state()
        self.OUT, self.IN = direction.OUT, direction.IN
        self.LOCAL = getattr(direction, "LOCAL", None)
        drop = getattr(module, "Drop", None)
        self._drop = [drop("join-range packet: the core has no Direction.LOCAL")] if drop is not None else None

    def open_state(self) -> None:
        """The state file (--state-dir, middlebox/io/statefile.py): the records a killed
        predecessor left go to the core (its orphans are reset whatever their numbers)."""
        orphans = getattr(self.conv, "orphans", None)
        if not self.args.state_dir or orphans is None or not hasattr(self.conv, "recorded"):
            return
        self.state = statefile.StateFile(self.args.state_dir, self.args.queue)
        self.conv.recording = True  # (Converter.fresh, taken each round: record_fresh)
        records = self.state.take()
        if records:
            n = orphans.learn(records, time.monotonic(), self.args.max_flows, self.state.stamps)
            log.warning("a predecessor on queue %d left %d converted connection(s) (%s): their "
                        "orphans are reset at both ends when their peers send", self.args.queue, n,
                        self.state.path)
        self.sync_state()

    def record_fresh(self) -> None:
        """Each loop round: the connections that just became ones a kill would orphan go to
        the state file at once, with the peer's key (the full pass comes every second)."""
        fresh = self.conv.fresh
        if not fresh:
            return
        self.conv.fresh = []
        try:
            flows = self.conv.flows
            records = {}
            for key in fresh:
                flow = flows.get(key)
                if flow is not None and flow.remote_key is not None:
                    records[key] = flow.remote_key
            self.state.add(records)
        except Exception as e:  # (a bug: counted, logged once; the loop goes on)
            self.bug("state file", e)

    def sync_state(self, closing: bool = False) -> None:
        """Every statefile.EVERY seconds (from tick), and at a clean stop (`closing`)."""
        if self.state is None:
            return
        self.next_state = time.monotonic() + statefile.EVERY
        try:
            records = self.conv.recorded(time.monotonic())
            if closing:
                self.state.close(records)
            else:
                self.state.sync(records)
        except Exception as e:  # (a bug: counted, logged once; the loop goes on)
            self.bug("state file", e)

    def resolve_uplinks(self) -> None:
        """The uplinks: --uplink, else those of the installed rules; the join port range:
        --join-ports, else the installed one, else the default. Logged."""
        recorded, installed_ports = rules.installed_uplinks()
        self.recorded_uplinks = {u.name: u for u in recorded}
        specs = self.args.uplink
        source = "--uplink"
        if not specs:
            specs = [u.spec for u in recorded]
            source = "installed rules"
        self.join_ports = self.args.join_ports or installed_ports or JOIN_PORTS_DEFAULT
        if not specs:
            return
        try:
            self.uplinks = _uplinks.resolve(specs, need_gateway=False)
        except _uplinks.UplinkError as e:
            raise DaemonError(str(e)) from None
        for u in self.uplinks:
            log.info("uplink (%s) %s", source, u.describe())
            if u.name not in self.recorded_uplinks:
                log.warning("uplink %s is not in the installed rules: its join packets are not "
                            "queued and it has no source routing (middlebox rules install "
                            "--uplink %s)", u.name, u.name)
        if installed_ports and tuple(installed_ports) != tuple(self.join_ports):
            log.warning("join ports %d-%d differ from the installed rules' %d-%d: only those "
                        "are queued and reserved", *self.join_ports, *installed_ports)
        log.info("join ports %d-%d, max subflows %s, join after %d bytes or %d ms",
                 *self.join_ports, self.args.max_subflows or f"{1 + len(self.uplinks)} (1 + uplinks, more per announced address)",
                 self.args.join_after_bytes, self.args.join_after_ms)
        if self.args.policy == "cost":
            log.info("policy cost, target %s per connection; uplink costs %s", self.args.target or "2x",
                     ", ".join(f"{u.name}={u.cost:g}" for u in self.uplinks))

    def local_classifier(self, handle):
        """`handle` wrapped: a packet to an uplink address with a destination port in the
        join range is for the box itself (Direction.LOCAL, or dropped while the core has no
        LOCAL); anything else goes to `handle` as it came. Used only with uplinks."""
        addrs4 = frozenset(socket.inet_pton(socket.AF_INET, u.addr4) for u in self.uplinks if u.addr4)
        addrs6 = frozenset(socket.inet_pton(socket.AF_INET6, u.addr6) for u in self.uplinks if u.addr6)
        lo, hi = self.join_ports
        inn, local, tally, drop = self.IN, self.LOCAL, self.tally, self._drop

        def classify(data, direction, now):
            if direction is inn and len(data) >= 40:
                version = data[0] >> 4
                if version == 4:
                    hit = data[9] == 6 and data[16:20] in addrs4
                    off = (data[0] & 15) * 4
                else:
                    hit = version == 6 and data[6] == 6 and data[24:40] in addrs6
                    off = 40
                if hit and len(data) >= off + 4 and lo <= (data[off + 2] << 8 | data[off + 3]) <= hi:
                    tally["local_packets"] += 1
                    if local is None:
                        tally["local_dropped"] += 1
                        return drop
                    direction = local
            return handle(data, direction, now)

        return classify

    def resolve_guests(self) -> None:
        names = self.args.guest_iface
        source = "--guest-iface"
        if not names:
            inst = rules.installed()
            names, source = inst.guest_ifaces, f"installed {inst.backend} rules"
            if names and not rules.holds_mptcp(inst):
                log.warning("the installed rules pass every segment while no daemon is bound "
                            "(installed by an older version): a peer's MPTCP segments of a "
                            "connection converted before a crash would then reach the guest "
                            "unconverted; run `middlebox rules install` again")
            if not names:
                raise DaemonError("no guest interface: give --guest-iface or install the rules "
                                  "first (middlebox rules install --guest-iface IF)")
        try:
            for name in names:
                ifaces.check(name)
        except ValueError as e:
            raise DaemonError(f"guest interface: {e}", status=service.EXIT_USAGE) from None
        missing = ifaces.missing_names(names)
        if missing:
            raise DaemonError(f"unknown interface {missing[0]!r} in this network namespace")
        idx = ifaces.current(names)  # patterns (vnet*) may match nothing yet: followed
        self.guest_patterns = list(names)
        self.guest_ifindexes = frozenset(idx.values())
        log.info("guest interfaces (%s): %s%s", source,
                 " ".join(f"{n}(#{i})" for n, i in idx.items()) or "none yet",
                 f", following {' '.join(names)}" if any(map(ifaces.is_pattern, names)) else "")
        hint = ifaces.bridge_port_hint(names)
        if hint:
            log.warning("%s", hint)

    def set_guests(self, found: dict[str, int]) -> None:
        """Guest interfaces came or went (ops.Ops follows rtnetlink): the packet handler
        tells directions by the new ifindexes from its next packet on."""
        self.guest_ifindexes = frozenset(found.values())
        h = self.handler
        if h is not None and hasattr(h, "set_guests"):
            h.set_guests(self.guest_ifindexes)
        elif h is not None and hasattr(h, "guests"):
            h.guests = self.guest_ifindexes
        elif h is not None:
            self.once("set_guests", "this queue backend cannot follow guest interfaces that "
                      "appear while it runs: restart the daemon after adding one")
        log.info("guest interfaces now: %s",
                 " ".join(f"{n}(#{i})" for n, i in found.items()) or "none")

    # -- packets -------------------------------------------------------------------------

    def make_handler(self, path):
        """The NetfilterQueue callback: compiled (`path` is `middlebox._cnfq`) or reference."""
        if self.args.passthrough:
            self.handler = path.Passthrough() if path else _PyPassthrough()
            self._folds = (("passed", "packets"),)
        else:
            cls = path.Converting if path else _PyConverting
            handle = self.core_handle()
            self.handler = cls(handle, self.guest_ifindexes, self.OUT, self.IN,
                               self.verdict_slow, self.bug_packet, self.inject)
            self._folds = (("handled", "packets"), ("rewritten", "rewritten"),
                           ("dropped", "dropped"))
        return self.handler

    def core_handle(self):
        """What every backend calls per packet: the core's `handle`, wrapped for uplinks."""
        handle = self.conv.handle
        if self.uplinks and self._drop is not None:
            handle = self.local_classifier(handle)
        return handle

    def bug_packet(self, where: str, exc: BaseException, pkt) -> None:
        """The handler's report of an exception: counted, logged once, packet accepted."""
        self.bug(where, exc)
        self._accept_safely(pkt)

    def verdict_slow(self, pkt, verdict) -> None:
        """A verdict of a type the handler does not know yet: classify it by class name,
        teach the handler its type, give the verdict; a non-verdict is a core bug."""
        kind = self._verdicts.get(type(verdict)) or self._classify(verdict)
        h = self.handler
        if kind == "Accept":
            h.accept_type = type(verdict)
            pkt.accept()
        elif kind == "Rewrite":
            h.rewrite_type = type(verdict)  # the handler still sends non-bytes data here
            pkt.set_payload(bytes(verdict.data))
            pkt.accept()
            h.rewritten += 1
        elif kind == "Drop":
            h.drop_type = type(verdict)
            pkt.drop()
            h.dropped += 1
        else:
            self.once(f"verdict:{kind}", f"bug in core: first action is {kind}, not a "
                      "verdict (counted; packet accepted unchanged)")
            self.tally["bug_verdict"] += 1
            pkt.accept()

    def _classify(self, action) -> str:
        name = type(action).__name__
        kind = name if name in ("Accept", "Rewrite", "Drop", "Inject") else f"unknown {name}"
        self._verdicts[type(action)] = kind
        return kind

    def _accept_safely(self, pkt) -> None:
        try:
            pkt.accept()
        except Exception:  # verdict already given: nothing more to do
            pass

    def inject(self, actions) -> None:
        for action in actions:
            try:
                kind = self._verdicts.get(type(action)) or self._classify(action)
                if kind != "Inject":
                    raise TypeError(f"{kind} after the verdict")
                self.injector.send(bytes(action.data))
                self.tally["injected"] += 1
            except OSError as e:
                self.tally["inject_errors"] += 1
                self.once(f"inject:{e.errno}", f"inject failed: {e} (counted)")
            except Exception as e:
                self.bug("inject", e)

    def tick(self) -> None:
        self.ops.poll()  # every backend's loop ticks; the NetfilterQueue loop polls each round too
        if self.conv is None:
            return
        try:
            actions = self.conv.tick(time.monotonic())
        except Exception as e:
            self.bug("tick", e)
            return
        if actions:
            self.inject(actions)
        if self.state is not None and time.monotonic() >= self.next_state:
            self.sync_state()

    def reset_flows(self) -> None:
        """Stopping: the core's resets of the flows that cannot pass unconverted once we are
        gone (Converter.stop), injected before the queue is unbound."""
        fn = getattr(self.conv, "stop", None)
        if fn is None:
            return
        try:
            actions = fn(time.monotonic())
        except Exception as e:
            self.bug("stop", e)
            return
        if actions:
            log.info("stopping: %d segment(s) reset the flows that cannot pass unconverted",
                     len(actions))
            self.inject(actions)

    def deadline(self) -> float | None:
        """The core's next timer (monotonic seconds) where it has `next_deadline()`."""
        fn = getattr(self.conv, "next_deadline", None)
        if fn is None:
            return None
        try:
            d = fn()
            return None if d is None else float(d)
        except Exception as e:
            self.bug("deadline", e)
            return None

    def uplink_changes(self, changes) -> None:
        """Uplinks that went down or up: logged, counted, told to the core (its actions
        injected); up again, the uplink's installed policy routes are put back (as the
        installed rules name them now: a `rules install` since the start chose new tables)."""
        for u, up, why in changes:
            log.info("uplink %s %s (%s)", u.name, "up" if up else "down", why)
            self.count("uplink_up" if up else "uplink_down")
            if up:
                try:
                    self.recorded_uplinks = {r.name: r for r in rules.installed_uplinks()[0]}
                except Exception as e:  # (an unreadable state: the routes known at start)
                    log.warning("uplink %s: the installed rules cannot be read: %s", u.name, e)
            if up and u.name in self.recorded_uplinks:
                try:
                    with _uplinks_iproute() as ipr:
                        n = _uplinks.ensure_routing(ipr, self.recorded_uplinks[u.name])
                    if n:
                        log.info("uplink %s: %d policy route(s)/rule(s) put back", u.name, n)
                except Exception as e:  # the link may flap again meanwhile: logged, not fatal
                    self.count("uplink_route_errors")
                    log.warning("uplink %s: cannot restore its policy routing: %s", u.name, e)
            self.push_routes()
            event = getattr(self.conv, "uplink_event", None)
            if event is None:
                continue
            try:
                actions = event(u.name, up, time.monotonic())
            except Exception as e:
                self.bug("uplink_event", e)
                continue
            if actions:
                self.inject(actions)

    def watch_links(self) -> None:
        if not self.uplinks or self.args.passthrough:
            return
        try:
            self.links = _uplinks.LinkWatch(self.uplinks)
        except Exception as e:
            raise DaemonError(f"cannot follow the uplinks' links (rtnetlink): {e}") from None
        if self.links.initial:
            self.uplink_changes(self.links.initial)
        self.push_routes()

    def push_routes(self) -> None:
        """Tell the core which uplink each main-table route leaves by (set_routes): it then
        knows the uplink of a flow's first subflow. At start and after every uplink change."""
        fn = getattr(self.conv, "set_routes", None)
        if fn is None:
            return
        try:
            with _uplinks_iproute() as ipr:
                fn(_uplinks.main_routes(ipr, self.uplinks))
        except Exception as e:
            self.bug("routes", e)

    def poll_links(self) -> None:
        try:
            changes = self.links.poll()
        except Exception as e:
            self.bug("links", e)
            return
        if changes:
            self.uplink_changes(changes)

    def close_links(self) -> None:
        if self.links is not None:
            self.links.close()
            self.links = None

    # What every queue backend's loop does besides the queue (both loops call these):
    #     fds = [queue_fd, *daemon.extra_fds()]
    #     timeout, deadline = daemon.wait_time()   # select() timeout; the core's deadline
    #     ready = select(fds, [], [], timeout); daemon.on_ready(ready) (then flush injections)
    #     if daemon.tick_due(now, next_tick, deadline): tick

    def extra_fds(self) -> list[int]:
        """Descriptors the loop selects on besides the queue (the uplinks' rtnetlink)."""
        return [self.links.fileno()] if self.links is not None else []

    def wait_time(self) -> tuple[float, float | None]:
        """(select timeout, the core's next deadline or None)."""
        deadline = self.deadline()
        if deadline is None:
            return SELECT_TIMEOUT, None
        return min(SELECT_TIMEOUT, max(DEADLINE_MIN_WAIT, deadline - time.monotonic())), deadline

    def on_ready(self, ready) -> bool:
        """Handle the extra descriptors select() found readable; True if there were any."""
        if self.links is not None and self.links.fileno() in ready:
            self.poll_links()
            return True
        return False

    @staticmethod
    def tick_due(now: float, next_tick: float, deadline: float | None) -> bool:
        return now >= next_tick or (deadline is not None and now >= deadline)

    # -- main loop -----------------------------------------------------------------------

    def _signal(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.dump = True
        else:
            if not self.stop:
                self.ops.stopping()  # systemd: STOPPING=1 as soon as the stop is asked
            self.stop = True
            self.stops += 1  # a second one ends the wait for closing connections

    def set_fail_open(self, path, nfq, sock) -> str:
        """NFQA_CFG_F_FAIL_OPEN on the bound queue unless --no-fail-open; returns what a full
        queue does, for the log. A kernel that refuses the flag is logged, never fatal."""
        if self.args.no_fail_open:
            return "full queue drops"
        try:
            if path:
                err = path.set_queue_flags(nfq, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN)
            else:
                err = _py_set_queue_flags(sock, nfq, self.args.queue, NFQA_CFG_F_FAIL_OPEN,
                                          NFQA_CFG_F_FAIL_OPEN)
        except OSError as e:  # the request could not even be sent
            err = e.errno or -1
        if err:
            self.count("fail_open_unset")
            self.once("fail_open", f"queue {self.args.queue}: the kernel refused "
                      f"NFQA_CFG_F_FAIL_OPEN ({os.strerror(err) if err > 0 else err}): when "
                      f"{self.args.queue_maxlen} packets wait, further ones are DROPPED "
                      "(counted in queue_dropped of /proc/net/netfilter/nfnetlink_queue) "
                      "instead of passing unconverted; going on")
            return "full queue drops: fail-open refused"
        return "fail-open"

    def run(self) -> int:
        from netfilterqueue import NetfilterQueue

        missing = service.missing_capabilities()
        if missing:
            raise DaemonError(f"missing {' and '.join(missing)} (binding an NFQUEUE needs "
                              "CAP_NET_ADMIN, injecting CAP_NET_RAW): run as root or give the "
                              "capabilities", status=service.EXIT_NOPERM)
        if self.args.passthrough:
            mode = "passthrough (no core)"
        else:
            self.resolve_uplinks()
            self.load_core()
            mode = f"MPTCP v{self.args.mptcp_version}" + (" with checksums" if self.args.checksum else "")
        self.resolve_guests() if not self.args.passthrough or self.args.guest_iface else None
        path = packet_path()
        callback = self.make_handler(path)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._signal)
        self.ops.start_metrics()  # before the queue: a port in use stops a clean start
        self.watch_links()  # closed by main()

        if self.args.backend != "nfqueue":  # ours (middlebox/io/fastpath.py); auto: if it binds
            from middlebox.io import fastpath

            status = fastpath.run(self, mode)
            if status is not None:
                return status

        try:
            nfq = NetfilterQueue()
        except OSError as e:
            raise DaemonError(*service.queue_failure(self.args.queue, e)) from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                nfq.bind(self.args.queue, callback, max_len=self.args.queue_maxlen,
                         sock_len=SOCK_RCVBUF)
            except OSError as e:
                raise DaemonError(*service.queue_failure(self.args.queue, e)) from None
        for w in caught:
            log.warning("%s", w.message)

        fd = nfq.get_fd()
        sock = None
        if path:
            pump = functools.partial(path.pump, nfq)
        else:
            sock = socket.socket(AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=fd)
            sock.setblocking(False)
            pump = functools.partial(_BudgetReader(sock).pump, nfq)
        try:
            overload = self.set_fail_open(path, nfq, sock)
        except BaseException:
            if sock is not None:
                sock.detach()
            nfq.unbind()
            raise
        log.info("bound queue %d (maxlen %d, %s), %s, backend nfqueue, packet path %s, pid %d",
                 self.args.queue, self.args.queue_maxlen, overload, mode,
                 path.IMPLEMENTATION if path else "python", os.getpid())

        def unbind() -> None:
            if sock is not None:
                sock.setblocking(True)
                sock.detach()  # the fd belongs to NetfilterQueue
            nfq.unbind()

        return self.serve(fd, pump, unbind)

    def round(self, fd: int, fds: list, pump, flush) -> None:
        """One turn of the loop: wait for the queue or the core's next timer, handle at most
        BUDGET messages, the core's tick when due, SIGUSR1, the control socket."""
        timeout, deadline = self.wait_time()
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            ready = []
        if self.on_ready(ready):
            flush()  # what the core answered to a link event
        if fd in ready:
            try:
                enobufs = pump(BUDGET)[1]
            except OSError as e:
                self.count("recv_errors")
                self.once(f"recv:{e.errno}", f"queue recv failed: {e} (counted, going on)")
            else:
                if enobufs:
                    self.enobufs(enobufs)
            flush()
        if self.state is not None:
            self.record_fresh()
        now = time.monotonic()
        if self.tick_due(now, self.next_tick, deadline):
            self.next_tick = now + TICK
            self.tick()
            flush()
        if self.dump:
            self.dump = False
            self.print_counters("counters")
        self.ops.poll()

    def finish_closing(self, fd: int, fds: list, pump, flush) -> None:
        """Stopping: go on converting for up to --stop-grace seconds while a flow that
        `Converter.stop` would reset has both FINs sent (the guest's and the server's
        DATA_FIN: only their acks, or a resend, are missing) and is not silent
        (Converter.closing), so that a connection that was
        ending when the stop came ends cleanly rather than by a reset. A second stop signal
        ends the wait. From here on new connections pass as plain TCP (`StopPlain`)."""
        if self.conv is not None and hasattr(self.conv, "stopping"):
            self.conv.stopping = True
        count = getattr(self.conv, "closing", None)
        if count is None or self.args.stop_grace <= 0:
            return
        # (a stop asked by a signal counts 1: a second one that came before this wait began,
        # within the same loop round, cuts it short as well as one that comes during it)
        hurry = min(self.stops, 1)
        end = time.monotonic() + self.args.stop_grace
        left = self._closing(count)
        if left:
            log.info("stopping: %d closing connection(s), waiting up to %g s for them",
                     left, self.args.stop_grace)
        while left and self.stops <= hurry and time.monotonic() < end:
            self.round(fd, fds, pump, flush)
            left = self._closing(count)
        if left:
            log.info("stopping: %d closing connection(s) left", left)

    def _closing(self, count) -> int:
        try:
            return int(count(time.monotonic()))
        except Exception as e:
            self.bug("closing", e)
            return 0

    def serve(self, fd: int, pump, unbind) -> int:
        """The loop of every queue backend, on the bound queue's `fd`: `pump(budget)` handles
        at most `budget` queued messages ((messages, enobufs)); `unbind()` at the end, after
        the drain. An injector with `flush` (the netlink backend's, batching) is flushed
        after every round and tick."""
        flush = getattr(self.injector, "flush", None) or (lambda: None)
        self.ops.ready()  # control socket, READY=1
        self.next_tick = time.monotonic() + TICK
        fds = [fd, *self.extra_fds()]
        try:
            while not self.stop:
                self.round(fd, fds, pump, flush)
            self.finish_closing(fd, fds, pump, flush)
            log.info("stopping: draining the queue")
            try:
                enobufs = pump(4 * BUDGET)[1]
            except OSError:
                pass
            else:
                if enobufs:
                    self.enobufs(enobufs)
            flush()
            self.reset_flows()
            flush()
            self.sync_state(closing=True)
        finally:
            unbind()
            self.injector.close()
        log.info("unbound queue %d", self.args.queue)
        self.print_counters("counters at exit")
        return 0


def _policy_target(text: str):
    from middlebox.core.policy import parse_target
    try:
        return parse_target(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _nonneg(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return value


def _uplinks_iproute():
    from pyroute2 import IPRoute

    return IPRoute()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", type=int, default=rules.QUEUE_DEFAULT,
                        help="NFQUEUE number (default 0)")
    parser.add_argument("--mptcp-version", type=int, choices=(0, 1), default=1,
                        help="MPTCP version to speak: 1 = RFC 8684 (default), 0 = RFC 6824")
    parser.add_argument("--checksum", action="store_true",
                        help="ask for DSS checksums (RFC 8684 §3.3.1; used when either end asks)")
    parser.add_argument("--guest-iface", action="append", default=[], metavar="IF",
                        help="guest-facing interface: a name (a bridge such as virbr0) or a "
                             "pattern with a trailing * (vnet*), followed while running "
                             "(repeat; default: from the installed rules)")
    parser.add_argument("--uplink", action="append", default=[], type=_uplinks.spec_arg,
                        metavar="IFACE[,gw=ADDR][,backup][,cost=N]",
                        help="an uplink extra subflows leave by (repeat; address ids 1..n in this "
                             "order; default: the uplinks of the installed rules). Its primary "
                             "IPv4/IPv6 address is looked up at start, its link followed while "
                             "running; backup = MP_JOIN backup bit, cost is recorded")
    parser.add_argument("--join-ports", type=_uplinks.port_range_arg, default=None,
                        metavar="LO-HI",
                        help="local ports of extra subflows; its top port is the one announced "
                             "to inbound MPTCP clients with the uplink addresses (default: the "
                             "installed rules' range, "
                             f"else {JOIN_PORTS_DEFAULT[0]}-{JOIN_PORTS_DEFAULT[1]})")
    parser.add_argument("--max-subflows", type=_nonneg, default=0, metavar="N",
                        help="subflows per connection, the first included (default 0 = 1 + one "
                             "per uplink and server address: its initial one and each it "
                             "announces with ADD_ADDR; at most 8)")
    parser.add_argument("--max-multipath-flows", type=_nonneg, default=4096, metavar="N",
                        help="connections that may have extra subflows at once; the others stay "
                             "single-path (default 4096)")
    parser.add_argument("--join-after-bytes", type=_nonneg, default=65536, metavar="N",
                        help="open extra subflows once a connection moved N bytes ... "
                             "(default 65536)")
    parser.add_argument("--join-after-ms", type=_nonneg, default=1000, metavar="N",
                        help="... or lived N ms, whichever comes first (default 1000)")
    parser.add_argument("--repair-bytes", type=_nonneg, default=0, metavar="N",
                        help="keep up to N bytes per connection of what went out on its extra "
                             "subflows until the server acks them, and resend a loss there "
                             "from that copy instead of showing it to the guest, whose one "
                             "congestion window would halve for one path's loss (default 0: "
                             "off; 262144 holds a 100 Mbit/s path's 20 ms)")
    parser.add_argument("--repair-total-bytes", type=_nonneg, default=64 << 20, metavar="N",
                        help="the bytes --repair-bytes may keep for all connections together "
                             "(default 67108864)")
    parser.add_argument("--repair-window", action="store_true",
                        help="with --repair-bytes: give each extra subflow its own congestion "
                             "window, cut by the losses repair hides from the guest (AIMD, "
                             "beta 0.7); only the bytes sent within it are kept, so a loss "
                             "beyond it reaches the guest (experimental, off by default)")
    parser.add_argument("--dsack-undo", action="store_true",
                        help="name a guest's resend that an extra subflow carried as a D-SACK "
                             "once the server has it, so that a Linux guest undoes the window "
                             "cut one path's loss made; none in its RTO recovery "
                             "(experimental, off by default)")
    parser.add_argument("--policy", choices=("greedy", "cost"), default="greedy",
                        help="which uplinks a multipath connection uses: greedy (default) every "
                             "live one; cost the cheapest first (uplink cost=N), the next only "
                             "while the connection delivers less than --target, measured; the "
                             "dearest one in use carries on the upload only what the target "
                             "still needs of it (the server schedules the download)")
    parser.add_argument("--target", type=_policy_target, default=None, metavar="RATE",
                        help="--policy cost: per connection, a multiple of the best single "
                             "uplink's measured rate (2x) or a rate (150mbit) (default 2x)")
    parser.add_argument("--no-inbound", action="store_true",
                        help="leave MPTCP connections from outside to guests alone (by default an "
                             "MPTCP peer's SYN to a guest is answered with MPTCP on the guest's "
                             "behalf, the uplink addresses are announced to it, its joins to "
                             "the guest's address and to those are answered by the middlebox, "
                             "and the guest sees plain TCP)")
    parser.add_argument("--passthrough", action="store_true",
                        help="accept every packet unchanged, without the core")
    parser.add_argument("--max-flows", type=int, default=65536, metavar="N",
                        help="flow table cap; when full, the least recently active flow of the cheapest class goes: closed/fallback, then TIME_WAIT, then half-open, a converting flow only when nothing else is left (default 65536)")
    parser.add_argument("--mtu", type=int, default=1500,
                        help="path MTU towards the servers; the MSS guests learn is clamped so that "
                             "segments with MPTCP options fit (default 1500)")
    parser.add_argument("--queue-maxlen", type=int, default=QUEUE_MAXLEN, metavar="N",
                        help="packets the kernel holds for the daemon; beyond it a packet passes "
                             f"unconverted (fail-open) (default {QUEUE_MAXLEN})")
    parser.add_argument("--backend", choices=("auto", "netlink", "nfqueue"), default="auto",
                        help="queue reader: netlink = our own (batched, GSO super-packets), "
                             "nfqueue = NetfilterQueue; auto (default): ours when it can bind, "
                             "else NetfilterQueue (logged)")
    parser.add_argument("--companion-queue", type=int, default=None, metavar="N",
                        help="netlink backend: the queue (without GSO) that truncated and "
                             "oversized super-packets are re-queued to, segmented (default: "
                             "the one `rules install` recorded, else --queue + 1)")
    parser.add_argument("--no-fail-open", action="store_true",
                        help="when the queue is full, drop packets (the kernel's default; the "
                             "default here too): TCP resends them and they are converted then")
    parser.add_argument("--fail-open", dest="no_fail_open", action="store_false",
                        help="when the queue is full, pass packets unconverted instead of "
                             "dropping them. HAZARD: a server segment passed unconverted after "
                             "its subflow's numbering drifted from the data's (MPTCP-level "
                             "retransmissions, multipath) lands at the wrong place in the "
                             "guest's stream: wrong bytes. Only for hosts that prefer "
                             "availability to integrity")
    parser.set_defaults(no_fail_open=True)
    parser.add_argument("--state-dir", default=statefile.DEFAULT_DIR, metavar="DIR",
                        help="where the daemon records the connections it converts (4-tuple, "
                             "the peer's MPTCP key; a root-only file, updated every second) "
                             "so that, killed outright, its successor resets exactly those "
                             "at both ends; \"\" records nothing (default "
                             f"{statefile.DEFAULT_DIR}, tmpfs)")
    parser.add_argument("--stop-grace", type=float, default=STOP_GRACE, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, go on converting for up to SECONDS while a "
                             "connection the stop would reset has both its FINs sent (only "
                             "their acks or a resend missing; silent for 1 s: done), then "
                             "reset what is left; a "
                             f"second signal ends the wait; 0: none (default {STOP_GRACE:g})")
    parser.add_argument("--mark", type=lambda s: int(s, 0), default=rules.INJECT_MARK,
                        help=f"SO_MARK of injected packets (default {rules.INJECT_MARK:#x})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, tracebacks of core bugs (= --log-level debug)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="info",
                        help="least important messages logged (default info; under systemd the "
                             "lines carry syslog priorities for journald, no timestamps)")
    parser.add_argument("--metrics", type=_metrics.listen_address, default=None,
                        metavar="ADDR:PORT",
                        help="serve Prometheus metrics over HTTP on ADDR:PORT (e.g. "
                             "127.0.0.1:9464, [::1]:9464, :9464 for every address; default off)")
    # module:attribute of the converter factory; tests swap in a faulty core
    parser.add_argument("--converter", default="middlebox.core:Converter", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    level = "debug" if args.verbose else getattr(args, "log_level", "info")
    service.setup_logging("middlebox run", getattr(logging, level.upper()))
    if args.queue < 0 or args.queue > 65535:
        service.error_line("middlebox run", "--queue must be 0..65535")
        return service.EXIT_USAGE
    if args.queue_maxlen < 1 or args.queue_maxlen > 0xFFFFFFFF:
        service.error_line("middlebox run", "--queue-maxlen must be at least 1")
        return service.EXIT_USAGE
    daemon = None
    try:
        daemon = Daemon(args)
        return daemon.run()
    except DaemonError as e:
        service.error_line("middlebox run", str(e))
        return e.status
    finally:
        if daemon is not None:
            daemon.close_links()
            daemon.ops.close()


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="middlebox run", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
