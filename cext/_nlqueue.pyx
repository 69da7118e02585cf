# cython: language_level=3, boundscheck=True, wraparound=True
# (checks on: it indexes whatever a core returns, and a faulty core returns anything)
"""The netlink backend's per-batch path, compiled (`middlebox._cnlqueue`): `Engine`,
`fix_checksums` and `send_many`, twins of the pure-Python reference in
`middlebox/io/nlqueue.py`, which holds the rules (read its docstring first); the queue's
configuration (bind, flags, unbind) stays in the reference's `Reader` for both.

What the C buys: `recvmmsg` of up to 64 messages into fixed slots (no Python object per
read), the attributes walked with pointers, the payload copied once into the bytes the core
gets, and the verdicts of a round gathered in one `sendmsg` whose iovecs point at the
rewritten bytes themselves (no copy of a 64 KB super-packet: only its IP + TCP header is
copied, to fix lengths and checksums in place), injections in one `sendmmsg`.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import os

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<netinet/in.h>":
    ctypedef uint32_t in_addr_t
    struct in_addr:
        in_addr_t s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags, void *tmo) nogil
    int sendmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags) nogil
    ssize_t sendmsg(int fd, const msghdr *message, int flags) nogil
    int MSG_DONTWAIT
    int AF_INET, AF_INET6

IMPLEMENTATION = "cython"

cdef enum:
    NLMSG_HDRLEN = 16
    NLMSG_ERROR = 2
    NLM_F_REQUEST = 1
    MSG_PACKET = (3 << 8) | 0
    MSG_VERDICT = (3 << 8) | 1
    NFQA_PACKET_HDR = 1
    NFQA_VERDICT_HDR = 2
    NFQA_IFINDEX_INDEV = 5
    NFQA_PAYLOAD = 10
    NFQA_CAP_LEN = 13
    NFQA_SKB_INFO = 14
    NFQA_SKB_CSUMNOTREADY = 1
    NFQA_SKB_GSO = 2
    NF_DROP = 0
    NF_ACCEPT = 1
    NF_QUEUE = 3
    NF_VERDICT_FLAG_QUEUE_BYPASS = 0x8000
    NF_INET_PRE_ROUTING = 0
    NF_INET_FORWARD = 2
    MAX_PAYLOAD = 65531
    OPTION_ROOM = 40
    SLOT = 65536 + 4096
    BATCH = 64
    FLUSH_BYTES = 256 * 1024
    FLUSH_PARTS = 900
    TXCAP = 128 * 1024  # verdict headers (+ copied IP/TCP headers) of one flush
    HDRMAX = 60 + 60 + 40 * 8  # IPv4 header / IPv6 + extension headers, + a TCP header
    MAXGUESTS = 16
    INJECT_BATCH = 64
    FULL = 1 << 20  # fix_header's result flags (above any TCP offset)
    PSEUDO = 1 << 21


cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline void put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline uint64_t fold(uint64_t s) noexcept nogil:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


cdef uint16_t _one = 1
cdef bint LITTLE = (<uint8_t *>&_one)[0] == 1


cdef uint64_t sum16(const uint8_t *p, size_t n) noexcept nogil:
    """Sum of big-endian 16-bit words of p[0:n] (odd tail zero-padded), not folded; `n`
    must be even except for the last piece of a sum. The bulk is summed as native 32-bit
    words and byte-swapped once (the one's-complement sum does not depend on byte order,
    RFC 1071 §2(B); 2^16 = 1 modulo 0xFFFF, so 32-bit words sum like their halves)."""
    cdef uint64_t s = 0
    cdef size_t i = 0
    cdef uint32_t w
    while i + 4 <= n:
        memcpy(&w, p + i, 4)
        s += w
        i += 4
    s = fold(s)
    if LITTLE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    while i + 1 < n:
        s += (<uint64_t>p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        s += <uint64_t>p[i] << 8
    return s


cdef Py_ssize_t tcp_offset(const uint8_t *d, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t off
    cdef uint8_t nxt
    if n < 20:
        return -1
    if d[0] >> 4 == 4:
        off = (d[0] & 0xF) * 4
        return off if d[9] == 6 and off >= 20 and off + 20 <= n else -1
    if d[0] >> 4 != 6 or n < 40:
        return -1
    nxt, off = d[6], 40
    while nxt == 0 or nxt == 43 or nxt == 60:
        if off + 8 > n:
            return -1
        nxt = d[off]
        off = off + (d[off + 1] + 1) * 8
    return off if nxt == 6 and off + 20 <= n else -1


cdef uint64_t pseudo_sum(const uint8_t *d, Py_ssize_t tcp_len) noexcept nogil:
    if d[0] >> 4 == 4:
        return fold(sum16(d + 12, 8) + 6 + <uint64_t>tcp_len)
    return fold(sum16(d + 8, 32) + (<uint64_t>tcp_len >> 16) + (<uint64_t>tcp_len & 0xFFFF) + 6)


cdef Py_ssize_t fix_header(uint8_t *h, Py_ssize_t hlen, const uint8_t *rest, Py_ssize_t total,
                           uint32_t skb_info, int hook) noexcept nogil:
    """Fix the packet whose first `hlen` bytes are `h` (writable, the IP + TCP header at
    least) and the others `rest` (total length `total`); `fix_checksums` has the rules.
    Returns the TCP offset, or -1 when the packet was left alone; + FULL when the TCP
    checksum was computed in full, + PSEUDO when the pseudo-header sum was written."""
    cdef Py_ssize_t tcp = tcp_offset(h, hlen)
    cdef uint64_t s
    if tcp < 0 or tcp + 20 > hlen:
        return -1
    if h[0] >> 4 == 4:
        if total > 0xFFFF:
            return -1
        put16(h + 2, <uint16_t>total)
        put16(h + 10, 0)
        put16(h + 10, <uint16_t>(~fold(sum16(h, tcp)) & 0xFFFF))
    else:
        if total - 40 > 0xFFFF:
            return -1
        put16(h + 4, <uint16_t>(total - 40))
    if skb_info & NFQA_SKB_CSUMNOTREADY:
        if skb_info & NFQA_SKB_GSO and (hook == NF_INET_FORWARD or hook == NF_INET_PRE_ROUTING):
            put16(h + tcp + 16, <uint16_t>pseudo_sum(h, total - tcp))
            return tcp + PSEUDO
        put16(h + tcp + 16, 0)
        # hlen - tcp is even for any TCP header (doff * 4), so the pieces join
        s = pseudo_sum(h, total - tcp) + sum16(h + tcp, hlen - tcp) + sum16(rest, total - hlen)
        put16(h + tcp + 16, <uint16_t>(~fold(s) & 0xFFFF))
        return tcp + FULL
    return tcp


cdef Py_ssize_t header_len(const uint8_t *d, Py_ssize_t n) noexcept nogil:
    """Bytes of IP + TCP header at the front of the packet (all of it when unknown)."""
    cdef Py_ssize_t tcp = tcp_offset(d, n)
    cdef Py_ssize_t h
    if tcp < 0:
        return n
    h = tcp + (d[tcp + 12] >> 4) * 4
    return h if tcp + 20 <= h <= n else n


def fix_checksums(bytes data, unsigned int skb_info, int hook):
    """Twin of `nlqueue.fix_checksums`."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), n)
    cdef uint8_t *d = <uint8_t *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t h = header_len(d, n)
    if fix_header(d, h, d + h, n, skb_info, hook) < 0:
        return data
    return out


cdef class Engine:
    """Twin of `nlqueue.Engine` (its docstring is the contract)."""

    cdef object sock, handle, out, inn, guest_set
    cdef public object kind, bug, inject
    cdef public object accept_type, rewrite_type, drop_type
    cdef public int companion
    cdef int fd
    cdef unsigned int guests[MAXGUESTS]
    cdef int nguests
    cdef uint8_t *rx
    cdef mmsghdr rmsgs[BATCH]
    cdef iovec riov[BATCH]
    cdef uint8_t *tx
    cdef Py_ssize_t txlen, open_start
    cdef iovec tiov[FLUSH_PARTS + 8]
    cdef int ntiov
    cdef list keep
    cdef Py_ssize_t out_bytes
    cdef public unsigned long long packets, rewritten, dropped, gso_packets, gso_bytes
    cdef public unsigned long long requeued_truncated, requeued_oversize, oversize_unconverted
    cdef public unsigned long long nl_errors, send_errors, csum_full, csum_pseudo
    cdef public int last_error

    def __cinit__(self, sock, int companion=-1):
        cdef int i
        self.rx = <uint8_t *>malloc(<size_t>BATCH * SLOT)
        self.tx = <uint8_t *>malloc(TXCAP)
        if self.rx == NULL or self.tx == NULL:
            raise MemoryError()
        memset(self.rmsgs, 0, sizeof(self.rmsgs))
        for i in range(BATCH):
            self.riov[i].iov_base = self.rx + <size_t>i * SLOT
            self.riov[i].iov_len = SLOT
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
        self.open_start = -1
        self.keep = []

    def __init__(self, sock, int companion=-1):
        self.sock = sock
        self.fd = sock.fileno()
        self.companion = companion
        self.handle = None
        self.nguests = 0

    def __dealloc__(self):
        free(self.rx)
        free(self.tx)

    def set_handler(self, handle, guests, out, inn, kind, bug, inject):
        self.handle, self.out, self.inn = handle, out, inn
        self.kind, self.bug, self.inject = kind, bug, inject
        self.set_guests(guests)

    def set_guests(self, guests):
        guests = sorted(guests)
        self.guest_set = frozenset(guests)
        self.nguests = len(guests) if len(guests) <= MAXGUESTS else -1
        for i in range(max(self.nguests, 0)):
            self.guests[i] = guests[i]

    cdef inline bint _is_guest(self, unsigned int indev):
        cdef int i
        if self.nguests < 0:
            return indev in self.guest_set
        for i in range(self.nguests):
            if self.guests[i] == indev:
                return True
        return False

    # -- receiving -----------------------------------------------------------------------

    def feed(self, bytes data):
        self._datagram(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    def pump(self, int budget):
        cdef int n = 0, enobufs = 0, got, i, want, err
        while n < budget:
            want = budget - n if budget - n < BATCH else BATCH
            got = recvmmsg(self.fd, self.rmsgs, want, MSG_DONTWAIT, NULL)
            if got < 0:
                err = errno
                if err == EAGAIN:
                    break
                if err == ENOBUFS:
                    enobufs += 1
                    n += 1  # an overrun storm still ends the round
                    continue
                if err == EINTR:
                    PyErr_CheckSignals()
                    continue
                self.flush()
                raise OSError(err, os.strerror(err))
            for i in range(got):
                self._datagram(self.rx + <size_t>i * SLOT, self.rmsgs[i].msg_len)
            n += got
            if got < want:
                break
        self.flush()
        return n, enobufs

    cdef int _datagram(self, const uint8_t *d, Py_ssize_t end) except -1:
        cdef Py_ssize_t off = 0
        cdef uint32_t length
        cdef uint16_t kind
        cdef int err
        while off + NLMSG_HDRLEN <= end:
            memcpy(&length, d + off, 4)
            memcpy(&kind, d + off + 4, 2)
            if length < NLMSG_HDRLEN or off + length > end:
                break
            if kind == MSG_PACKET and length >= NLMSG_HDRLEN + 4:
                self._packet(d, off + NLMSG_HDRLEN + 4, off + length, be16(d + off + 18))
            elif kind == NLMSG_ERROR and length >= 20:
                memcpy(&err, d + off + 16, 4)
                if err:
                    self.nl_errors += 1
                    self.last_error = -err
            off += (length + 3) & ~3
        return 0

    cdef int _packet(self, const uint8_t *d, Py_ssize_t off, Py_ssize_t end,
                     int queue) except -1:
        cdef long long packet_id = -1
        cdef int hook = -1
        cdef uint32_t indev = 0, skb_info = 0, cap_len = 0
        cdef Py_ssize_t p_off = -1, p_len = -1
        cdef uint16_t alen, atype
        cdef bint companion
        while off + 4 <= end:
            memcpy(&alen, d + off, 2)
            memcpy(&atype, d + off + 2, 2)
            if alen < 4 or off + alen > end:
                break
            atype &= 0x3FFF
            if atype == NFQA_PACKET_HDR and alen >= 11:
                packet_id = be32(d + off + 4)
                hook = d[off + 10]
            elif atype == NFQA_IFINDEX_INDEV and alen >= 8:
                indev = be32(d + off + 4)
            elif atype == NFQA_PAYLOAD:
                p_off, p_len = off + 4, alen - 4
            elif atype == NFQA_CAP_LEN and alen >= 8:
                cap_len = be32(d + off + 4)
            elif atype == NFQA_SKB_INFO and alen >= 8:
                skb_info = be32(d + off + 4)
            off += (alen + 3) & ~3
        if packet_id < 0:
            return 0
        self.packets += 1
        if skb_info & NFQA_SKB_GSO:
            self.gso_packets += 1
            if p_len > 0:
                self.gso_bytes += p_len
        if p_len < 0 or self.handle is None:
            self._verdict(queue, <uint32_t>packet_id, NF_ACCEPT, None, 0, 0)
            return 0
        companion = self.companion >= 0 and queue != self.companion
        if cap_len > <uint32_t>p_len:
            if companion:
                self.requeued_truncated += 1
                self._verdict(queue, <uint32_t>packet_id, self._requeue(), None, 0, 0)
            else:
                self.oversize_unconverted += 1
                self._verdict(queue, <uint32_t>packet_id, NF_ACCEPT, None, 0, 0)
            return 0
        if p_len > MAX_PAYLOAD - OPTION_ROOM and companion:
            self.requeued_oversize += 1
            self._verdict(queue, <uint32_t>packet_id, self._requeue(), None, 0, 0)
            return 0
        self._convert(PyBytes_FromStringAndSize(<const char *>d + p_off, p_len), queue,
                      <uint32_t>packet_id, indev, skb_info, hook)
        return 0

    cdef inline uint32_t _requeue(self):
        return NF_QUEUE | NF_VERDICT_FLAG_QUEUE_BYPASS | (<uint32_t>self.companion << 16)

    cdef int _convert(self, bytes data, int queue, uint32_t packet_id, uint32_t indev,
                      uint32_t skb_info, int hook) except -1:
        cdef timespec ts
        cdef object actions, verdict, t, new
        cdef int k
        try:
            clock_gettime(CLOCK_MONOTONIC, &ts)  # the clock of time.monotonic()
            actions = self.handle(data, self.out if self._is_guest(indev) else self.inn,
                                  ts.tv_sec + ts.tv_nsec * 1e-9)
            verdict = actions[0]
        except Exception as e:
            self._verdict(queue, packet_id, NF_ACCEPT, None, 0, 0)
            self.bug("core", e)
            return 0
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
                if not PyBytes_CheckExact(new):
                    new = bytes(new)
                if PyBytes_GET_SIZE(new) > MAX_PAYLOAD:
                    self.oversize_unconverted += 1
                    self._verdict(queue, packet_id, NF_ACCEPT, None, 0, 0)
                else:
                    self._verdict(queue, packet_id, NF_ACCEPT, new, skb_info, hook)
                    self.rewritten += 1
            elif k == 2:
                self._verdict(queue, packet_id, NF_DROP, None, 0, 0)
                self.dropped += 1
            else:
                self._verdict(queue, packet_id, NF_ACCEPT, None, 0, 0)
        except Exception as e:
            self._verdict(queue, packet_id, NF_ACCEPT, None, 0, 0)
            self.bug("verdict", e)
        try:
            if len(actions) > 1:
                self.inject(actions[1:])
        except Exception as e:
            self.bug("inject", e)
        return 0

    # -- verdicts ------------------------------------------------------------------------

    cdef inline void _close_open(self) noexcept:
        if self.open_start >= 0:
            self.tiov[self.ntiov].iov_base = self.tx + self.open_start
            self.tiov[self.ntiov].iov_len = self.txlen - self.open_start
            self.ntiov += 1
            self.open_start = -1

    cdef inline uint8_t *_put(self, Py_ssize_t n) noexcept:
        """n bytes at the end of the open header piece (opened if needed)."""
        cdef uint8_t *p = self.tx + self.txlen
        if self.open_start < 0:
            self.open_start = self.txlen
        self.txlen += n
        return p

    cdef int _verdict(self, int queue, uint32_t packet_id, uint32_t verdict, object payload,
                      uint32_t skb_info, int hook) except -1:
        cdef Py_ssize_t plen = -1, hlen = 0, pad
        cdef uint8_t *p
        cdef uint8_t *h
        cdef const uint8_t *src
        cdef uint32_t u32
        cdef uint16_t u16
        cdef Py_ssize_t fixed
        if payload is not None:
            plen = PyBytes_GET_SIZE(payload)
        if (self.txlen + 64 + HDRMAX > TXCAP or self.ntiov + 4 > FLUSH_PARTS
                or self.out_bytes + 64 + (plen if plen > 0 else 0) > FLUSH_BYTES):
            self.flush()
        p = self._put(NLMSG_HDRLEN + 4 + 12)
        u32 = NLMSG_HDRLEN + 4 + 12 + (4 + plen if plen >= 0 else 0)
        memcpy(p, &u32, 4)
        u16 = MSG_VERDICT
        memcpy(p + 4, &u16, 2)
        u16 = NLM_F_REQUEST
        memcpy(p + 6, &u16, 2)
        memset(p + 8, 0, 8)  # seq, portid
        p[16] = 0  # AF_UNSPEC
        p[17] = 0  # NFNETLINK_V0
        put16(p + 18, <uint16_t>queue)
        u16 = 12
        memcpy(p + 20, &u16, 2)
        u16 = NFQA_VERDICT_HDR
        memcpy(p + 22, &u16, 2)
        put32(p + 24, verdict)
        put32(p + 28, packet_id)
        self.out_bytes += NLMSG_HDRLEN + 4 + 12
        if plen < 0:
            return 0
        p = self._put(4)
        u16 = <uint16_t>(4 + plen)
        memcpy(p, &u16, 2)
        u16 = NFQA_PAYLOAD
        memcpy(p + 2, &u16, 2)
        src = <const uint8_t *>PyBytes_AS_STRING(payload)
        hlen = header_len(src, plen)
        if hlen > HDRMAX:
            hlen = 0
        if hlen:  # the IP + TCP header, copied and fixed in place; the rest by reference
            h = self._put(hlen)
            memcpy(h, src, hlen)
            fixed = fix_header(h, hlen, src + hlen, plen, skb_info, hook)
            if fixed < 0:
                memcpy(h, src, hlen)
            elif fixed & FULL:
                self.csum_full += 1
            elif fixed & PSEUDO:
                self.csum_pseudo += 1
        if plen > hlen:
            self._close_open()
            self.tiov[self.ntiov].iov_base = <void *>(src + hlen)
            self.tiov[self.ntiov].iov_len = plen - hlen
            self.ntiov += 1
            self.keep.append(payload)
        pad = (-(4 + plen)) & 3
        if pad:
            memset(self._put(pad), 0, pad)
        self.out_bytes += 4 + plen + pad
        return 0

    def flush(self):
        cdef msghdr m
        cdef ssize_t rv
        cdef int err
        self._close_open()
        if self.ntiov == 0:
            return
        memset(&m, 0, sizeof(m))
        m.msg_iov = self.tiov
        m.msg_iovlen = self.ntiov
        rv = sendmsg(self.fd, &m, 0)
        err = errno
        self.ntiov = 0
        self.txlen = 0
        self.out_bytes = 0
        self.keep = []
        if rv < 0:  # the kernel took none of these verdicts: the packets wait
            self.send_errors += 1
            self.last_error = err or -1


def send_many(sock, list packets):
    """Twin of `nlqueue.send_many`: one `sendmmsg` per 64 packets, each to its own
    destination; returns how many were sent before the first error (OSError when the first
    one fails)."""
    cdef int fd = sock.fileno()
    cdef mmsghdr msgs[INJECT_BATCH]
    cdef iovec iov[INJECT_BATCH]
    cdef sockaddr_in6 addrs[INJECT_BATCH]
    cdef sockaddr_in *a4
    cdef const uint8_t *d
    cdef Py_ssize_t n
    cdef int i, m, rv, sent = 0, total = len(packets), err
    cdef object data
    while sent < total:
        m = total - sent if total - sent < INJECT_BATCH else INJECT_BATCH
        memset(msgs, 0, sizeof(mmsghdr) * m)
        memset(addrs, 0, sizeof(sockaddr_in6) * m)
        for i in range(m):
            data = packets[sent + i]
            if not PyBytes_CheckExact(data):
                raise TypeError("injected packets are bytes")
            d = <const uint8_t *>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
            if n >= 20 and d[0] >> 4 == 4:
                a4 = <sockaddr_in *>&addrs[i]
                a4.sin_family = AF_INET
                memcpy(&a4.sin_addr, d + 16, 4)
                msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            elif n >= 40 and d[0] >> 4 == 6:
                addrs[i].sin6_family = AF_INET6
                memcpy(&addrs[i].sin6_addr, d + 24, 16)
                msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
            else:
                raise ValueError("injected packet is neither IPv4 nor IPv6")
            iov[i].iov_base = <void *>d
            iov[i].iov_len = n
            msgs[i].msg_hdr.msg_name = &addrs[i]
            msgs[i].msg_hdr.msg_iov = &iov[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        rv = sendmmsg(fd, msgs, m, MSG_DONTWAIT)
        if rv < 0:
            err = errno
            if sent == 0:
                raise OSError(err, os.strerror(err))
            return sent
        sent += rv
        if rv < m:
            return sent
    return sent
