"""Convert packets from an NFQUEUE until SIGINT/SIGTERM (the I/O shell around the core).

`middlebox run --queue 0 [--mptcp-version 1|0] [--checksum] [--guest-iface IF ...]
[--passthrough] [--max-flows N] [--queue-maxlen N] [--no-fail-open] [-v]`

* Binds the queue with NetfilterQueue: kernel queue length --queue-maxlen (default 4096), an
  8 MB socket receive buffer (SO_RCVBUFFORCE, inside NetfilterQueue's bind; ENOBUFS = the
  kernel dropped queue messages: counted, the loop goes on), and the queue flag
  NFQA_CFG_F_FAIL_OPEN: a packet that finds the queue full (or the socket buffer full) is
  accepted unchanged by the kernel instead of dropped (--no-fail-open keeps the drop). A
  kernel that refuses the flag is logged once, never fatal.
* A non-blocking loop: select() on the queue fd, at most BUDGET packets per round, then the
  stop flag, SIGUSR1 and the core's timers (every ~0.5 s). The per-packet path (the round's
  reads and the NetfilterQueue callback) is `middlebox._cnfq` (cext/_nfq.pyx), compiled,
  unless `MIDDLEBOX_PURE_PYTHON=1` is set, it was not built, or the installed NetfilterQueue
  is not the version it was written against (`NETFILTERQUEUE_PIN`: it reads private fields);
  its reference is `_BudgetReader`, `_PyPassthrough`, `_PyConverting` and
  `_py_set_queue_flags` below. Signal handlers only set flags:
  nothing is raised inside the NetfilterQueue callback (LESSONS.md trap 12). On SIGINT or
  SIGTERM the daemon drains what is queued, unbinds and exits 0.
* Direction: a packet whose `indev` is a guest-facing interface is `Direction.OUT`, any other
  `Direction.IN`. Guest interfaces come from --guest-iface or from the installed rules.
* For each packet the core returns actions (docs/core-api.md); the first is the verdict
  (Accept / Rewrite -> set_payload + accept / Drop), the rest `Inject`s sent through raw
  sockets marked with the injection mark so the ruleset does not queue them again.
* Anything raised by the core is a bug: counted, logged once per kind, and the packet is
  accepted unchanged. The daemon never dies on input.
* `--passthrough` accepts every packet without the core (the reference for benchmarks).
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

from middlebox.io import rules

log = logging.getLogger("middlebox.run")
_monotonic = time.monotonic

BUDGET = 256  # packets handled per loop round before looking at flags and timers
TICK = 0.5  # seconds between Converter.tick calls
SELECT_TIMEOUT = 0.1
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
        self.dump = False
        self.conv = None
        self.guest_ifindexes: frozenset[int] = frozenset()
        self.injector = Injector(args.mark)
        self._verdicts: dict[type, str] = {}
        # the NetfilterQueue callback; its per-packet tallies are plain (C) integers, folded
        # into `tally` by counters(): a Counter item update costs more than a verdict
        self.handler = None
        self._folds: tuple[tuple[str, str], ...] = ()

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
        config = config_cls(version=self.args.mptcp_version, checksum=self.args.checksum,
                            max_flows=self.args.max_flows, mtu=self.args.mtu)
        self.conv = factory(config)
        self.OUT, self.IN = direction.OUT, direction.IN

    def resolve_guests(self) -> None:
        names = self.args.guest_iface
        source = "--guest-iface"
        if not names:
            inst = rules.installed()
            names, source = inst.guest_ifaces, f"installed {inst.backend} rules"
            if not names:
                raise DaemonError("no guest interface: give --guest-iface or install the rules "
                                  "first (middlebox rules install --guest-iface IF)")
        try:
            idx = rules.interface_indexes(names)
        except rules.RulesError as e:
            raise DaemonError(str(e)) from None
        self.guest_ifindexes = frozenset(idx.values())
        log.info("guest interfaces (%s): %s", source,
                 " ".join(f"{n}(#{i})" for n, i in idx.items()))

    # -- packets -------------------------------------------------------------------------

    def make_handler(self, path):
        """The NetfilterQueue callback: compiled (`path` is `middlebox._cnfq`) or reference."""
        if self.args.passthrough:
            self.handler = path.Passthrough() if path else _PyPassthrough()
            self._folds = (("passed", "packets"),)
        else:
            cls = path.Converting if path else _PyConverting
            self.handler = cls(self.conv.handle, self.guest_ifindexes, self.OUT, self.IN,
                               self.verdict_slow, self.bug_packet, self.inject)
            self._folds = (("handled", "packets"), ("rewritten", "rewritten"),
                           ("dropped", "dropped"))
        return self.handler

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
        if self.conv is None:
            return
        try:
            actions = self.conv.tick(time.monotonic())
        except Exception as e:
            self.bug("tick", e)
            return
        if actions:
            self.inject(actions)

    # -- main loop -----------------------------------------------------------------------

    def _signal(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.dump = True
        else:
            self.stop = True

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

        if os.geteuid() != 0:
            raise DaemonError("must be root (binding an NFQUEUE needs CAP_NET_ADMIN)")
        if self.args.passthrough:
            mode = "passthrough (no core)"
        else:
            self.load_core()
            mode = f"MPTCP v{self.args.mptcp_version}" + (" with checksums" if self.args.checksum else "")
        self.resolve_guests() if not self.args.passthrough or self.args.guest_iface else None
        path = packet_path()
        callback = self.make_handler(path)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._signal)

        try:
            nfq = NetfilterQueue()
        except OSError as e:
            raise DaemonError(f"cannot open nfnetlink queue: {e}") from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                nfq.bind(self.args.queue, callback, max_len=self.args.queue_maxlen,
                         sock_len=SOCK_RCVBUF)
            except OSError as e:
                raise DaemonError(f"queue {self.args.queue} is busy or unavailable ({e}): is "
                                  "another daemon bound to it?", status=2) from None
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
        log.info("bound queue %d (maxlen %d, %s), %s, packet path %s, pid %d", self.args.queue,
                 self.args.queue_maxlen, overload, mode,
                 path.IMPLEMENTATION if path else "python", os.getpid())
        next_tick = time.monotonic() + TICK
        fds = [fd]
        try:
            while not self.stop:
                try:
                    ready, _, _ = select.select(fds, [], [], SELECT_TIMEOUT)
                except InterruptedError:
                    ready = []
                if ready:
                    try:
                        enobufs = pump(BUDGET)[1]
                    except OSError as e:
                        self.count("recv_errors")
                        self.once(f"recv:{e.errno}", f"queue recv failed: {e} (counted, going on)")
                    else:
                        if enobufs:
                            self.enobufs(enobufs)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    self.tick()
                if self.dump:
                    self.dump = False
                    self.print_counters("counters")
            log.info("stopping: draining the queue")
            try:
                enobufs = pump(4 * BUDGET)[1]
            except OSError:
                pass
            else:
                if enobufs:
                    self.enobufs(enobufs)
        finally:
            if sock is not None:
                sock.setblocking(True)
                sock.detach()  # the fd belongs to NetfilterQueue
            nfq.unbind()
            self.injector.close()
        log.info("unbound queue %d", self.args.queue)
        self.print_counters("counters at exit")
        return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", type=int, default=rules.QUEUE_DEFAULT,
                        help="NFQUEUE number (default 0)")
    parser.add_argument("--mptcp-version", type=int, choices=(0, 1), default=1,
                        help="MPTCP version to speak: 1 = RFC 8684 (default), 0 = RFC 6824")
    parser.add_argument("--checksum", action="store_true",
                        help="ask for DSS checksums (RFC 8684 §3.3.1; used when either end asks)")
    parser.add_argument("--guest-iface", action="append", default=[], metavar="IF",
                        help="guest-facing interface (repeat; default: from the installed rules)")
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
    parser.add_argument("--no-fail-open", action="store_true",
                        help="when the queue is full, drop packets (the kernel's default) "
                             "instead of passing them unconverted")
    parser.add_argument("--mark", type=lambda s: int(s, 0), default=rules.INJECT_MARK,
                        help=f"SO_MARK of injected packets (default {rules.INJECT_MARK:#x})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, tracebacks of core bugs")
    # module:attribute of the converter factory; tests swap in a faulty core
    parser.add_argument("--converter", default="middlebox.core:Converter", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="middlebox run: %(message)s", stream=sys.stderr)
    if args.queue < 0 or args.queue > 65535:
        print("middlebox run: --queue must be 0..65535", file=sys.stderr)
        return 1
    if args.queue_maxlen < 1 or args.queue_maxlen > 0xFFFFFFFF:
        print("middlebox run: --queue-maxlen must be at least 1", file=sys.stderr)
        return 1
    try:
        return Daemon(args).run()
    except DaemonError as e:
        print(f"middlebox run: {e}", file=sys.stderr)
        return e.status


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="middlebox run", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
