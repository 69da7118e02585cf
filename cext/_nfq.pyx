# cython: language_level=3, boundscheck=True, wraparound=True
# (checks on: it indexes whatever a core returns, and a faulty core returns anything)
"""The daemon's per-packet path, compiled (`middlebox._cnfq`); the reference is the pure-Python
`_PyPassthrough`, `_PyConverting` and `_BudgetReader` in `middlebox/io/daemon.py`.

It reads private C fields of NetfilterQueue's `Packet` and `NetfilterQueue` as declared by
NetfilterQueue 1.1.0, the version pinned in pyproject.toml: the daemon imports this module only
when that version is installed (`NETFILTERQUEUE_PIN` in middlebox/io/daemon.py) and uses the
pure-Python reference otherwise.

It stays within NetfilterQueue 1.1.0: the queue is opened, bound and unbound by it, and its
`global_callback` still makes one `Packet` per queue message and calls the bound callback.
What this module removes is the Python around that (profiled at ~2/3 of the daemon's time):

* `pump(nfq, budget)` reads at most `budget` queue messages without blocking into a C buffer
  and hands each to `nfq_handle_packet` (no Python `recv` wrapper, no bytes per read);
* `set_queue_flags(nfq, mask, flags)` sets the bound queue's flags (fail-open), which
  NetfilterQueue does not offer;
* `Passthrough` and `Converting` are the callbacks: C fields of the `Packet` (payload
  pointer, indev, id) instead of method calls, the verdict sent with `nfq_set_verdict`
  directly (the rewritten bytes are not copied again), the verdict dispatched by type, the
  tallies C integers. Anything unusual (a core exception, an unknown verdict, injections)
  goes to the daemon's Python methods, which behave as before.

Signals: the whole per-packet path is C, so Python signal handlers run when `pump` returns
to the daemon's loop (at most `budget` packets later); they only set flags (LESSONS.md 12).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from netfilterqueue._impl cimport (MSG_DONTWAIT, NF_ACCEPT, NF_DROP, NetfilterQueue, Packet,
                                   nfq_fd, nfq_handle_packet, nfq_q_handle, nfq_set_verdict,
                                   recv)

import os

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)

cdef extern from "libnetfilter_queue/libnetfilter_queue.h":
    # not declared by NetfilterQueue 1.1.0; in libnetfilter_queue since 1.0.0 (2010)
    int nfq_set_queue_flags(nfq_q_handle *qh, unsigned int mask, unsigned int flags)

cdef enum:
    BUFSIZE = 4096  # NetfilterQueue's own receive buffer (its copy range is 4016 bytes)
    MAXGUESTS = 16

IMPLEMENTATION = "cython"


def pump(NetfilterQueue nfq, int budget):
    """Handle at most `budget` queued messages without blocking; returns (messages, enobufs).

    ENOBUFS (the kernel dropped queue messages) is counted and reading goes on; EAGAIN ends
    the round; other recv errors raise OSError; an exception of a callback propagates.
    """
    cdef char buf[BUFSIZE]
    cdef int fd, err, n = 0, enobufs = 0
    cdef ssize_t rv
    if nfq.h == NULL:
        raise RuntimeError("queue not open")
    fd = nfq_fd(nfq.h)
    while n < budget:
        rv = recv(fd, buf, BUFSIZE, MSG_DONTWAIT)
        if rv < 0:
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
            raise OSError(err, os.strerror(err))
        n += 1
        nfq_handle_packet(nfq.h, buf, <int>rv)
    return n, enobufs


def set_queue_flags(NetfilterQueue nfq, unsigned int mask, unsigned int flags):
    """Set the bound queue's NFQA_CFG_FLAGS bits in `mask` to `flags` (nfq_set_queue_flags);
    returns 0 or the errno of the kernel's refusal (EOPNOTSUPP: a flag this kernel does not
    know). Queue messages arriving before the kernel's answer go to the bound callback, as
    during `bind`. Reference: `_py_set_queue_flags` in middlebox/io/daemon.py."""
    if nfq.qh == NULL:
        raise RuntimeError("queue not bound")
    if nfq_set_queue_flags(nfq.qh, mask, flags) < 0:
        return errno or -1
    return 0


cdef inline bint _give(Packet pkt, unsigned int verdict, object data) except -1:
    """The verdict for `pkt`, with `data` (exact bytes) as its new payload unless None."""
    cdef unsigned char *buf = NULL
    cdef unsigned int length = 0
    if pkt._verdict_is_set:
        raise RuntimeError("Verdict already given for this packet")
    if pkt._queue is None or pkt._queue.qh == NULL:
        raise RuntimeError("Parent queue has already been unbound")
    if data is not None:
        buf = <unsigned char *>PyBytes_AS_STRING(data)
        length = <unsigned int>PyBytes_GET_SIZE(data)
    nfq_set_verdict(pkt._queue.qh, pkt.id, verdict, length, buf)
    pkt._verdict_is_set = True
    return True


cdef class Passthrough:
    """Accept every packet unchanged (the benchmark's reference path)."""

    cdef public unsigned long long passed

    def __call__(self, Packet pkt):
        self.passed += 1
        _give(pkt, NF_ACCEPT, None)


cdef class Converting:
    """One packet through the core: direction from `indev`, `handle(data, direction, now)`,
    the first action given as the verdict, the rest to `inject`.

    `accept_type`, `rewrite_type`, `drop_type` are the verdict classes handled here; a
    verdict of any other type goes to `slow(pkt, verdict)` (the daemon classifies it by name,
    may set these fields, and gives the verdict). `bug(where, exc, pkt)` is called for an
    exception of the core ("core") or of the verdict ("verdict") and accepts the packet if it
    has no verdict yet; `inject(actions)` gets the actions after the verdict.
    """

    cdef object handle, out, inn, slow, bug, inject
    cdef object guest_set
    cdef unsigned int guests[MAXGUESTS]
    cdef int nguests
    cdef public object accept_type, rewrite_type, drop_type
    cdef public unsigned long long handled, rewritten, dropped

    def __init__(self, handle, guests, out, inn, slow, bug, inject):
        self.handle, self.out, self.inn = handle, out, inn
        self.slow, self.bug, self.inject = slow, bug, inject
        self.set_guests(guests)

    def set_guests(self, guests):
        """The guest-facing ifindexes, replaced while running (interfaces that came or went);
        the reference replaces `_PyConverting.guests`."""
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

    def __call__(self, Packet pkt):
        cdef timespec ts
        cdef object actions, verdict, t, data
        self.handled += 1
        try:
            if pkt.payload != NULL:
                data = PyBytes_FromStringAndSize(<char *>pkt.payload, pkt.payload_len)
            else:
                data = pkt.get_payload()  # raises: no payload in this packet
            clock_gettime(CLOCK_MONOTONIC, &ts)  # the clock of time.monotonic()
            actions = self.handle(data, self.out if self._is_guest(pkt.indev) else self.inn,
                                  ts.tv_sec + ts.tv_nsec * 1e-9)
            verdict = actions[0]
        except Exception as e:
            self.bug("core", e, pkt)
            return
        try:
            t = type(verdict)
            if t is self.rewrite_type:
                data = verdict.data
                if PyBytes_CheckExact(data):
                    _give(pkt, NF_ACCEPT, data)
                    self.rewritten += 1
                else:
                    self.slow(pkt, verdict)
            elif t is self.accept_type:
                _give(pkt, NF_ACCEPT, None)
            elif t is self.drop_type:
                _give(pkt, NF_DROP, None)
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
