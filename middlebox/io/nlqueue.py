"""Our own NFQUEUE reader (the `netlink` backend): raw NETLINK_NETFILTER, batched, GSO-aware.

`middlebox run --backend netlink` (and `auto`, where it can bind) uses it instead of
NetfilterQueue. What it does differently, and why (docs/fastpath.md has the measurements):

* one netlink socket binds the main queue and its **companion** (below) with copy mode
  PACKET, copy range 0xFFFF (the kernel caps it at 65,531), `--queue-maxlen`, and the flags
  `NFQA_CFG_F_GSO` (main queue only) and `NFQA_CFG_F_FAIL_OPEN` (unless --no-fail-open);
  SO_RCVBUFFORCE / SO_SNDBUFFORCE 8 MB; a flag the kernel refuses is reported, never fatal;
* messages are read in batches (`recvmmsg` in the compiled twin, 64 slots of 69,632 bytes:
  a whole 65,531-byte payload plus its attributes) and every verdict of a batch goes back in
  one `sendmsg` (flushed early at 256 KB: `netlink_sendmsg` refuses a message larger than the
  send buffer). ENOBUFS on receive (the kernel dropped queue messages) is counted, never a hang;
* with `NFQA_CFG_F_GSO` a queue message can be a GSO **super-packet** (up to ~64 KB, many
  wire segments). The core converts it as one segment: one DSS mapping for all of it, which
  the kernel copies onto every segment it cuts (as Linux MPTCP's own TSO does).
  The TCP checksum field then depends on NFQA_SKB_INFO (`fix_checksums`):
  - no flag or CSUM_NOTVERIFIED: a full checksum, which the core's incremental update keeps
    right (RFC 1624);
  - CSUMNOTREADY + GSO, hook FORWARD or PREROUTING (routed after the verdict to another
    host: the rules queue in PREROUTING only packets not addressed to the box): the kernel
    recomputes the field when it segments (or hands the packet to a TSO device) and only
    needs the pseudo-header sum for the new length, folded and not inverted (what
    `tcp4_gso_segment` writes);
  - CSUMNOTREADY alone, or with GSO at any other hook (INPUT: delivered locally, as the
    extra subflows' packets queued there are): the full checksum, from scratch (the kernel
    sends or delivers the verdict's bytes as they are, `CHECKSUM_NONE`);
  - and always: IPv4 total length + header checksum, IPv6 payload length;
* **size**: the verdict's payload attribute has a 16-bit length, so at most 65,531 bytes
  (`MAX_PAYLOAD`). A message whose copy was truncated (`NFQA_CAP_LEN` > payload: BIG TCP) never
  gets a payload back (the kernel would cut the packet to it): it is re-queued (verdict
  NF_QUEUE) to the companion queue, which has no GSO flag, so the kernel segments it and
  queues each segment there; so is a packet that could outgrow 65,531 bytes with a full
  40-byte option area (`MAX_PAYLOAD - OPTION_ROOM`), before the core sees it. The re-queue
  verdict carries the bypass flag: without a reader on the companion the packet passes;
* anything raised by the core is counted by the daemon and the packet accepted unchanged.

This module is the pure-Python reference; `middlebox._cnlqueue` (cext/_nlqueue.pyx) is its
compiled twin with the same names and behaviour, used unless MIDDLEBOX_PURE_PYTHON=1.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

IMPLEMENTATION = "python"

AF_NETLINK, NETLINK_NETFILTER = 16, 12
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
# netlink (linux/netlink.h)
NLMSG_HDRLEN = 16
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
# nfnetlink + its queue subsystem (linux/netfilter/nfnetlink*.h)
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_IFINDEX_INDEV = 1, 2, 5
NFQA_PAYLOAD, NFQA_CAP_LEN, NFQA_SKB_INFO = 10, 13, 14
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 0x1, 0x4
NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO, NFQA_SKB_CSUM_NOTVERIFIED = 0x1, 0x2, 0x4
# verdicts (linux/netfilter.h)
NF_DROP, NF_ACCEPT, NF_QUEUE = 0, 1, 3
NF_VERDICT_FLAG_QUEUE_BYPASS = 0x8000
NF_INET_PRE_ROUTING, NF_INET_FORWARD = 0, 2
# hooks whose queued packets are routed after the verdict, to another host (the rules queue
# in PREROUTING only packets not addressed to the box): GSO segmentation rewrites their TCP
# checksum, so the pseudo-header sum is enough
ROUTED_HOOKS = (NF_INET_PRE_ROUTING, NF_INET_FORWARD)

MAX_PAYLOAD = 65531  # 0xFFFF - the 4-byte attribute header: NFQNL_MAX_COPY_RANGE
OPTION_ROOM = 40  # the most a TCP header can grow by
SLOT = 65536 + 4096  # one received message: payload + nlmsghdr, nfgenmsg, attributes
BATCH = 64  # messages per recvmmsg
FLUSH_BYTES = 256 * 1024  # verdict bytes per sendmsg at most (below the send buffer)
FLUSH_PARTS = 900  # iovecs per sendmsg at most (IOV_MAX is 1024)
BUFSIZE = 8 * 1024 * 1024

MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
MSG_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
MSG_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
_PAD = b"\0\0\0\0"


def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + _PAD[: -n % 4]


def config_message(queue: int, seq: int, attrs: bytes) -> bytes:
    """An NFQNL_MSG_CONFIG for `queue` (NLM_F_ACK: the kernel answers every one)."""
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attrs  # nfgenmsg, res_id = queue
    return struct.pack("=IHHII", NLMSG_HDRLEN + len(body), MSG_CONFIG,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def verdict_header(queue: int, packet_id: int, verdict: int, payload_len: int) -> bytes:
    """The verdict message up to (and with) the payload attribute's header; `payload_len` -1:
    no payload. The payload and its padding follow in the caller's iovecs."""
    vattr = struct.pack("=HH", 12, NFQA_VERDICT_HDR) + struct.pack("!II", verdict, packet_id)
    n = NLMSG_HDRLEN + 4 + 12
    if payload_len < 0:
        return struct.pack("=IHHII", n, MSG_VERDICT, NLM_F_REQUEST, 0, 0) + struct.pack(
            "!BBH", socket.AF_UNSPEC, 0, queue) + vattr
    return (struct.pack("=IHHII", n + 4 + payload_len, MSG_VERDICT, NLM_F_REQUEST, 0, 0)
            + struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + vattr
            + struct.pack("=HH", 4 + payload_len, NFQA_PAYLOAD))


def requeue_verdict(queue: int) -> int:
    """NF_QUEUE to `queue`, passing the packet if nothing reads that queue."""
    return NF_QUEUE | NF_VERDICT_FLAG_QUEUE_BYPASS | (queue << 16)


# -- checksums by NFQA_SKB_INFO (docs/fastpath.md §4) ---------------------------------------


def _fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(b) -> int:
    if len(b) % 2:
        b = bytes(b) + b"\0"
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def tcp_offset(data) -> int:
    """Where the TCP header starts in an IPv4/IPv6 packet (IPv6: after hop-by-hop, routing and
    destination options headers); -1 when the packet is not TCP or too short."""
    n = len(data)
    if n < 20:
        return -1
    version = data[0] >> 4
    if version == 4:
        off = (data[0] & 0xF) * 4
        return off if data[9] == socket.IPPROTO_TCP and off >= 20 and off + 20 <= n else -1
    if version != 6 or n < 40:
        return -1
    nxt, off = data[6], 40
    while nxt in (0, 43, 60):  # hop-by-hop, routing, destination options
        if off + 8 > n:
            return -1
        nxt, off = data[off], off + (data[off + 1] + 1) * 8
    return off if nxt == socket.IPPROTO_TCP and off + 20 <= n else -1


def pseudo_sum(data, tcp: int, tcp_len: int = -1) -> int:
    """Folded, not inverted, sum of the TCP pseudo-header for a segment of `tcp_len` bytes
    (-1: len(data) - tcp)."""
    if tcp_len < 0:
        tcp_len = len(data) - tcp
    if data[0] >> 4 == 4:
        return _fold(_sum16(data[12:20]) + socket.IPPROTO_TCP + tcp_len)
    return _fold(_sum16(data[8:40]) + (tcp_len >> 16) + (tcp_len & 0xFFFF) + socket.IPPROTO_TCP)


def fix_checksums(data: bytes, skb_info: int, hook: int) -> bytes:
    """`data` (a rewritten packet) with its IP length, IPv4 header checksum and, by
    `skb_info`, TCP checksum field made right for the kernel (the module docstring has the
    rules). Unchanged when it is not an IPv4/IPv6 TCP packet."""
    return _fix(data, skb_info, hook)[0]


def _fix(data: bytes, skb_info: int, hook: int) -> tuple[bytes, str]:
    """fix_checksums and what it did to the TCP checksum: "full", "pseudo" or ""."""
    tcp = tcp_offset(data)
    if tcp < 0 or len(data) > 0xFFFF + (40 if data[0] >> 4 == 6 else 0):
        return data, ""
    out = bytearray(data)
    how = ""
    if data[0] >> 4 == 4:
        struct.pack_into("!H", out, 2, len(out))
        struct.pack_into("!H", out, 10, 0)
        struct.pack_into("!H", out, 10, ~_fold(_sum16(out[:tcp])) & 0xFFFF)
    else:
        struct.pack_into("!H", out, 4, len(out) - 40)
    if skb_info & NFQA_SKB_CSUMNOTREADY:
        if skb_info & NFQA_SKB_GSO and hook in ROUTED_HOOKS:
            check, how = pseudo_sum(out, tcp), "pseudo"
        else:
            struct.pack_into("!H", out, tcp + 16, 0)
            check, how = ~_fold(pseudo_sum(out, tcp) + _sum16(out[tcp:])) & 0xFFFF, "full"
        struct.pack_into("!H", out, tcp + 16, check)
    return bytes(out), how


def split(data: bytes, mtu: int) -> list[bytes]:
    """A TCP packet longer than `mtu` (an injected segment made from a GSO super-packet:
    data for another subflow) cut the way the kernel's GSO cuts one: the same IP + TCP header
    (options, so the one DSS mapping, included) on every piece, seq advanced, FIN and PSH on
    the last piece only, CWR on the first only, IPv4 ids counting up, lengths and checksums
    (full) recomputed. A raw socket refuses a packet beyond the route's MTU (EMSGSIZE).
    Unchanged (one piece) when it fits or is not TCP."""
    tcp = tcp_offset(data)
    if len(data) <= mtu or tcp < 0:
        return [data]
    hdr = tcp + (data[tcp + 12] >> 4) * 4
    mss = mtu - hdr
    if mss <= 0 or hdr > len(data):
        return [data]
    v4 = data[0] >> 4 == 4
    seq = struct.unpack_from("!I", data, tcp + 4)[0]
    flags = data[tcp + 13]
    ip_id = struct.unpack_from("!H", data, 4)[0] if v4 else 0
    payload = data[hdr:]
    out = []
    for i, off in enumerate(range(0, len(payload), mss)):
        chunk = payload[off:off + mss]
        h = bytearray(data[:hdr])
        struct.pack_into("!I", h, tcp + 4, (seq + off) & 0xFFFFFFFF)
        f = flags
        if off + mss < len(payload):
            f &= ~0x09  # FIN, PSH: the last piece's
        if i:
            f &= ~0x80  # CWR: the first piece's
        h[tcp + 13] = f
        total = hdr + len(chunk)
        if v4:
            struct.pack_into("!HH", h, 2, total, (ip_id + i) & 0xFFFF)
            struct.pack_into("!H", h, 10, 0)
            struct.pack_into("!H", h, 10, ~_fold(_sum16(h[:tcp])) & 0xFFFF)
        else:
            struct.pack_into("!H", h, 4, total - 40)
        struct.pack_into("!H", h, tcp + 16, 0)
        check = _fold(pseudo_sum(h, tcp, total - tcp) + _sum16(h[tcp:]) + _sum16(chunk))
        struct.pack_into("!H", h, tcp + 16, ~check & 0xFFFF)
        out.append(bytes(h) + chunk)
    return out


# -- the reader ----------------------------------------------------------------------------


class NetlinkError(OSError):
    """The kernel refused a queue configuration request (errno of its answer)."""


class Reader:
    """The main queue (GSO mode) and its companion (segments), bound on one netlink socket.

    `open()` binds them (OSError: EBUSY when another reader holds one) and returns
    `{"gso": errno, "fail_open": errno}` for the main queue (0 = set, -1 = not asked);
    `engine` (an `Engine`, the per-batch path) is then ready; `close()` unbinds.
    `engine_cls` is this module's `Engine` or its compiled twin's.
    """

    def __init__(self, queue: int, companion: int = -1, maxlen: int = 4096, gso: bool = True,
                 fail_open: bool = True, bufsize: int = BUFSIZE, engine_cls=None) -> None:
        self.queue, self.companion = queue, companion
        self.maxlen, self.gso, self.fail_open, self.bufsize = maxlen, gso, fail_open, bufsize
        self.engine_cls = engine_cls or Engine
        self.sock: socket.socket | None = None
        self.engine = None
        self.bound: list[int] = []
        self._seq = (int(time.time()) ^ os.getpid()) & 0x7FFFFFFF
        self._backlog: list[bytes] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def open(self) -> dict[str, int]:
        s = self.sock = socket.socket(AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            s.bind((0, 0))
            for opt in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, self.bufsize)
                except PermissionError:  # without CAP_NET_ADMIN: as much as the limit allows
                    s.setsockopt(socket.SOL_SOCKET, opt - 25, self.bufsize)
            result = {"gso": -1, "fail_open": -1}
            for q in ([self.queue] + ([self.companion] if self.companion >= 0 else [])):
                self.request(q, attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)))
                self.bound.append(q)
                self.request(q, attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))
                             + attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", self.maxlen)))
                for name, flag, want in (("gso", NFQA_CFG_F_GSO, self.gso and q == self.queue),
                                         ("fail_open", NFQA_CFG_F_FAIL_OPEN, self.fail_open)):
                    if not want:
                        continue
                    try:
                        self.request(q, attr(NFQA_CFG_MASK, struct.pack("!I", flag))
                                     + attr(NFQA_CFG_FLAGS, struct.pack("!I", flag)))
                        err = 0
                    except NetlinkError as e:
                        err = e.errno
                    if q == self.queue:
                        result[name] = err
            s.setblocking(False)
            self.engine = self.engine_cls(s, self.companion)
            for data in self._backlog:  # answered with the first batch's verdicts
                self.engine.feed(data)
            self._backlog.clear()
            return result
        except BaseException:
            self.close()
            raise

    def request(self, queue: int, attrs: bytes, timeout: float = 2.0) -> None:
        """Send one config request and wait for the kernel's answer (NetlinkError if it
        refused). Queue messages read meanwhile wait in the backlog for the first pump."""
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        seq = self._seq
        s = self.sock
        s.send(config_message(queue, seq, attrs))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                raise NetlinkError(errno.ETIMEDOUT, f"queue {queue}: no answer from the kernel")
            try:
                data = s.recv(SLOT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    continue
                raise
            off, found = 0, None
            while off + NLMSG_HDRLEN <= len(data):
                length, kind, _, mseq, _ = struct.unpack_from("=IHHII", data, off)
                if length < NLMSG_HDRLEN:
                    break
                if kind == NLMSG_ERROR and mseq == seq and off + 20 <= len(data):
                    found = -struct.unpack_from("=i", data, off + 16)[0]
                off += (length + 3) & ~3
            if found is None:
                self._backlog.append(data)
                continue
            if found:
                raise NetlinkError(found, f"queue {queue}: {os.strerror(found)}")
            return

    def close(self) -> None:
        """Unbind both queues (packets still waiting are dropped by the kernel: drain first)
        and close the socket."""
        s, self.sock = self.sock, None
        if s is None:
            return
        try:
            if self.engine is not None:
                self.engine.flush()
            s.setblocking(True)
            s.settimeout(1.0)
            for q in self.bound:
                try:
                    s.send(config_message(q, 0, attr(
                        NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_UNBIND, 0, 0))))
                except OSError:
                    pass
        finally:
            self.bound = []
            s.close()


class Engine:
    """The per-batch path on the bound socket (reference of `_cnlqueue.Engine`).

    `pump(budget)` handles at most `budget` queue messages without blocking and returns
    (messages, enobufs); all verdicts of the round leave in one `sendmsg` (or a few, at
    FLUSH_BYTES). Per packet:

    * no handler (`set_handler` not called): passthrough, NF_ACCEPT without payload;
    * a truncated copy (NFQA_CAP_LEN), or one that could outgrow MAX_PAYLOAD, from the main
      queue: re-queued to the companion (accepted unchanged without one, counted);
    * otherwise `handle(data, out if indev in guests else inn, now)` (the core's contract);
      its first action is the verdict, dispatched by type (`accept_type`, `rewrite_type`,
      `drop_type`; any other goes to `kind(verdict)`, which returns 0 accept, 1 rewrite,
      2 drop or -1 not a verdict, and may teach the engine the type); a rewrite goes back
      through `fix_checksums`; the other actions go to `inject(actions)`. `bug(where, exc)`
      hears of an exception of the core ("core"), the verdict ("verdict") or inject
      ("inject"); the packet is then accepted unchanged.
    """

    def __init__(self, sock: socket.socket, companion: int = -1) -> None:
        self.sock, self.companion = sock, companion
        self._out: list = []
        self._out_bytes = 0
        self.handle = None
        self.guests: frozenset = frozenset()
        self.out = self.inn = None
        self.kind = self.bug = self.inject = None
        self.accept_type = self.rewrite_type = self.drop_type = None
        # tallies, folded into the daemon's counters (which zeroes them)
        self.packets = self.rewritten = self.dropped = 0
        self.gso_packets = self.gso_bytes = 0
        self.requeued_truncated = self.requeued_oversize = self.oversize_unconverted = 0
        self.nl_errors = self.send_errors = 0
        self.csum_full = self.csum_pseudo = 0
        self.last_error = 0

    def set_handler(self, handle, guests, out, inn, kind, bug, inject) -> None:
        self.handle, self.guests, self.out, self.inn = handle, frozenset(guests), out, inn
        self.kind, self.bug, self.inject = kind, bug, inject

    def set_guests(self, guests) -> None:
        """The guest interfaces changed (the daemon follows them): directions from now on."""
        self.guests = frozenset(guests)

    def feed(self, data: bytes) -> None:
        """One datagram read elsewhere (during configuration); its verdicts wait for the
        next flush."""
        self._datagram(data)

    def pump(self, budget: int) -> tuple[int, int]:
        n = enobufs = 0
        s = self.sock
        while n < budget:
            try:
                data = s.recv(SLOT)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    enobufs += 1
                    n += 1  # an overrun storm still ends the round
                    continue
                self.flush()
                raise
            n += 1
            self._datagram(data)
        self.flush()
        return n, enobufs

    def _datagram(self, data: bytes) -> None:
        off, end = 0, len(data)
        while off + NLMSG_HDRLEN <= end:
            length, kind = struct.unpack_from("=IH", data, off)
            if length < NLMSG_HDRLEN or off + length > end:
                break
            if kind == MSG_PACKET and length >= NLMSG_HDRLEN + 4:
                queue = struct.unpack_from("!H", data, off + 18)[0]
                self._packet(data, off + NLMSG_HDRLEN + 4, off + length, queue)
            elif kind == NLMSG_ERROR and length >= 20:
                err = -struct.unpack_from("=i", data, off + 16)[0]
                if err:
                    self.nl_errors += 1
                    self.last_error = err
            off += (length + 3) & ~3

    def _packet(self, data: bytes, off: int, end: int, queue: int) -> None:
        packet_id = hook = -1
        indev = skb_info = cap_len = 0
        p_off = p_len = -1
        while off + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4 or off + alen > end:
                break
            atype &= 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
            if atype == NFQA_PACKET_HDR and alen >= 11:
                packet_id = struct.unpack_from("!I", data, off + 4)[0]
                hook = data[off + 10]
            elif atype == NFQA_IFINDEX_INDEV and alen >= 8:
                indev = struct.unpack_from("!I", data, off + 4)[0]
            elif atype == NFQA_PAYLOAD:
                p_off, p_len = off + 4, alen - 4
            elif atype == NFQA_CAP_LEN and alen >= 8:
                cap_len = struct.unpack_from("!I", data, off + 4)[0]
            elif atype == NFQA_SKB_INFO and alen >= 8:
                skb_info = struct.unpack_from("!I", data, off + 4)[0]
            off += (alen + 3) & ~3
        if packet_id < 0:
            return
        self.packets += 1
        if skb_info & NFQA_SKB_GSO:
            self.gso_packets += 1
            self.gso_bytes += max(p_len, 0)
        if p_len < 0 or self.handle is None:
            self._verdict(queue, packet_id, NF_ACCEPT, None)
            return
        companion = self.companion >= 0 and queue != self.companion
        if cap_len > p_len:  # truncated copy: never a payload back
            if companion:
                self.requeued_truncated += 1
                self._verdict(queue, packet_id, requeue_verdict(self.companion), None)
            else:
                self.oversize_unconverted += 1
                self._verdict(queue, packet_id, NF_ACCEPT, None)
            return
        if p_len > MAX_PAYLOAD - OPTION_ROOM and companion:
            self.requeued_oversize += 1
            self._verdict(queue, packet_id, requeue_verdict(self.companion), None)
            return
        self._convert(data[p_off:p_off + p_len], queue, packet_id, indev, skb_info, hook)

    def _convert(self, data: bytes, queue: int, packet_id: int, indev: int, skb_info: int,
                 hook: int) -> None:
        try:
            actions = self.handle(data, self.out if indev in self.guests else self.inn,
                                  time.monotonic())
            verdict = actions[0]
        except Exception as e:
            self._verdict(queue, packet_id, NF_ACCEPT, None)
            self.bug("core", e)
            return
        try:
            t = type(verdict)
            if t is self.rewrite_type:
                k = 1
            elif t is self.accept_type:
                k = 0
            elif t is self.drop_type:
                k = 2
            else:
                k = self.kind(verdict)
            if k == 1:
                new = verdict.data
                if type(new) is not bytes:
                    new = bytes(new)
                new, how = _fix(new, skb_info, hook)
                if how == "full":
                    self.csum_full += 1
                elif how == "pseudo":
                    self.csum_pseudo += 1
                if len(new) > MAX_PAYLOAD:  # cannot happen below MAX_PAYLOAD - OPTION_ROOM
                    self.oversize_unconverted += 1
                    self._verdict(queue, packet_id, NF_ACCEPT, None)
                else:
                    self._verdict(queue, packet_id, NF_ACCEPT, new)
                    self.rewritten += 1
            elif k == 2:
                self._verdict(queue, packet_id, NF_DROP, None)
                self.dropped += 1
            else:  # accept, or not a verdict (the daemon counted it): accepted unchanged
                self._verdict(queue, packet_id, NF_ACCEPT, None)
        except Exception as e:
            self._verdict(queue, packet_id, NF_ACCEPT, None)
            self.bug("verdict", e)
        try:
            if len(actions) > 1:
                self.inject(actions[1:])
        except Exception as e:
            self.bug("inject", e)

    def _verdict(self, queue: int, packet_id: int, verdict: int, payload: bytes | None) -> None:
        if payload is None:
            part = verdict_header(queue, packet_id, verdict, -1)
            self._out.append(part)
            self._out_bytes += len(part)
        else:
            self._out.append(verdict_header(queue, packet_id, verdict, len(payload)))
            self._out.append(payload)
            if len(payload) % 4:
                self._out.append(_PAD[: -len(payload) % 4])
            self._out_bytes += 36 + len(payload) + 3
        if self._out_bytes >= FLUSH_BYTES or len(self._out) >= FLUSH_PARTS:
            self.flush()

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out, self._out_bytes = [], 0
        try:
            self.sock.sendmsg(out)
        except OSError as e:  # the kernel took none of these verdicts: the packets wait
            self.send_errors += 1
            self.last_error = e.errno or -1


def destination(data: bytes):
    """The sendto address of a complete IPv4/IPv6 packet (its destination, port 0)."""
    if data[:1] and data[0] >> 4 == 4 and len(data) >= 20:
        return (socket.inet_ntop(socket.AF_INET, data[16:20]), 0)
    if data[:1] and data[0] >> 4 == 6 and len(data) >= 40:
        return (socket.inet_ntop(socket.AF_INET6, data[24:40]), 0, 0, 0)
    raise ValueError("injected packet is neither IPv4 nor IPv6")


def send_many(sock: socket.socket, packets: list) -> int:
    """Reference of `_cnlqueue.send_many` (one `sendmmsg`): each complete IP packet to its own
    destination through the raw socket `sock`; returns how many were sent before the first
    error (OSError when the first one fails)."""
    for i, data in enumerate(packets):
        try:
            sock.sendto(data, destination(data))
        except OSError:
            if i == 0:
                raise
            return i
    return len(packets)
