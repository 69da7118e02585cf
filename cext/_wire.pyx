# cython: language_level=3
"""Cython twin of the wire layer (docs/wire-api.md): same signatures, same results.

The pure-Python reference (`middlebox/wire/packet.py`, `middlebox/wire/mptcp.py`) is the spec;
this module only makes it fast. Everything here works on `const unsigned char *` views of
`bytes` objects, reads big-endian fields with shifts, sums checksums in native 16-bit words
with a 64-bit accumulator (RFC 1071 §2(B): byte-order independence) and builds every output
`bytes` with one allocation. The MPTCP option values are the reference's own frozen
dataclasses (imported from `middlebox.wire.mptcp`).

Differential hypothesis tests (`tests/unit/test_twin_differential.py`) hold the two together.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_Check
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memmove, memset

# --------------------------------------------------------------------------------------------
# constants (names as in the reference / RFC 8684)

cdef enum:
    TCPOPT_EOL = 0
    TCPOPT_NOP = 1
    TCPOPT_MSS = 2
    TCPOPT_WINDOW = 3
    TCPOPT_SACK_PERM = 4
    TCPOPT_SACK = 5
    TCPOPT_TIMESTAMP = 8
    TCPOPT_MPTCP = 30

cdef enum:
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10

cdef enum:
    MAX_TCP_OPTIONS = 40

# MPTCP subtypes, RFC 8684 §3
cdef enum:
    MPTCPOPT_MP_CAPABLE = 0
    MPTCPOPT_MP_JOIN = 1
    MPTCPOPT_DSS = 2
    MPTCPOPT_ADD_ADDR = 3
    MPTCPOPT_RM_ADDR = 4
    MPTCPOPT_MP_PRIO = 5
    MPTCPOPT_MP_FAIL = 6
    MPTCPOPT_MP_FASTCLOSE = 7
    MPTCPOPT_RST = 8

# DSS flags, RFC 8684 §3.3
cdef enum:
    MPTCP_DSS_DATA_ACK = 0x01
    MPTCP_DSS_ACK64 = 0x02
    MPTCP_DSS_HAS_MAP = 0x04
    MPTCP_DSS_DSN64 = 0x08
    MPTCP_DSS_DATA_FIN = 0x10
    MPTCP_DSS_FLAG_MASK = 0x1f

cdef object _EMPTY = ()


# --------------------------------------------------------------------------------------------
# Fast access to the reference's frozen slotted dataclasses.
#
# Calling a frozen dataclass runs one object.__setattr__ per field (~1.3 µs for Dss here) and
# reading a field is a generic attribute lookup. The classes have __slots__, so each field is
# a member descriptor with a fixed offset in the object: the twin reads and writes the slots
# there directly. It does so only when the class is exactly what that shortcut assumes (a
# dataclass-generated __init__ that only assigns the fields, no __post_init__, object.__new__,
# every field an object slot, the field names in the order used here); otherwise it calls the
# class / getattr like any Python code. Objects built either way are indistinguishable.

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    ctypedef struct PyObject
    ctypedef struct PyTypeObject:
        PyObject *(*tp_alloc)(PyTypeObject *, Py_ssize_t) except NULL
    int T_OBJECT_EX
    int READONLY
    void _incref "Py_INCREF"(PyObject *)
    void _xdecref "Py_XDECREF"(PyObject *)

from cpython.ref cimport Py_DECREF

cdef struct _Layout:
    bint fast
    int n
    Py_ssize_t off[8]

cdef enum:
    K_DSS = 0
    K_MPC = 1
    K_MPJ_SYN = 2
    K_MPJ_SYNACK = 3
    K_MPJ_ACK = 4
    K_ADD_ADDR = 5
    K_RM_ADDR = 6
    K_PRIO = 7
    K_FAIL = 8
    K_FASTCLOSE = 9
    K_TCPRST = 10
    K_COUNT = 11

cdef _Layout _LAYOUT[11]
cdef object _CLASSES = [None] * K_COUNT  # filled at the end of the module
cdef tuple _FIELD_NAMES = (
    ("data_ack", "ack64", "data_seq", "dsn64", "subflow_seq", "data_len", "csum", "data_fin"),
    ("version", "flags", "sndr_key", "rcvr_key", "data_len", "csum"),
    ("backup", "addr_id", "token", "nonce"),
    ("backup", "addr_id", "hmac", "nonce"),
    ("hmac",),
    ("echo", "addr_id", "addr", "port", "hmac"),
    ("addr_ids",),
    ("backup",),
    ("data_seq",),
    ("rcvr_key",),
    ("transient", "reason"),
)


cdef inline object _get(object o, int k, int i):
    """Field i of option dataclass instance o of class index k (type already checked)."""
    cdef PyObject *v
    if _LAYOUT[k].fast:
        v = (<PyObject **>((<char *><PyObject *>o) + _LAYOUT[k].off[i]))[0]
        if v != NULL:
            return <object>v
    return getattr(o, _FIELD_NAMES[k][i])


cdef object _make(int k, object a0, object a1=None, object a2=None, object a3=None,
                  object a4=None, object a5=None, object a6=None, object a7=None):
    """Instance of option class k with its fields a0..a(n-1), as calling the class would."""
    cdef _Layout *L = &_LAYOUT[k]
    cdef PyObject *raw
    cdef PyObject **slot
    cdef PyObject *args[8]
    cdef object obj
    cdef object cls = _CLASSES[k]
    cdef int n = L.n, i
    if not L.fast:
        return cls(*(a0, a1, a2, a3, a4, a5, a6, a7)[:n])
    args[0] = <PyObject *>a0
    args[1] = <PyObject *>a1
    args[2] = <PyObject *>a2
    args[3] = <PyObject *>a3
    args[4] = <PyObject *>a4
    args[5] = <PyObject *>a5
    args[6] = <PyObject *>a6
    args[7] = <PyObject *>a7
    raw = (<PyTypeObject *>cls).tp_alloc(<PyTypeObject *>cls, 0)  # slots start NULL
    obj = <object>raw  # takes its own reference; drop tp_alloc's
    Py_DECREF(obj)
    for i in range(n):
        slot = <PyObject **>((<char *>raw) + L.off[i])
        _incref(args[i])
        _xdecref(slot[0])
        slot[0] = args[i]
    return obj


def _load_layouts():
    """Decide per option class whether the slot shortcut is safe (see above)."""
    import dataclasses
    import types
    cdef int k, i
    cdef PyMemberDef *m
    for k in range(K_COUNT):
        cls = _CLASSES[k]
        names = _FIELD_NAMES[k]
        _LAYOUT[k].fast = False
        _LAYOUT[k].n = len(names)
        if not dataclasses.is_dataclass(cls):
            continue
        if tuple(f.name for f in dataclasses.fields(cls)) != names:
            raise ImportError(f"{cls.__name__} fields changed: {dataclasses.fields(cls)}; update cext/_wire.pyx")
        init = cls.__dict__.get("__init__")
        if (hasattr(cls, "__post_init__") or init is None
                or getattr(getattr(init, "__code__", None), "co_filename", None) != "<string>"
                or cls.__new__ is not object.__new__ or type(cls) is not type):
            continue
        ok = True
        for i, name in enumerate(names):
            d = cls.__dict__.get(name)
            if type(d) is not types.MemberDescriptorType:
                ok = False
                break
            m = (<PyMemberDescrObject *><PyObject *>d).d_member
            if m.type != T_OBJECT_EX or (m.flags & READONLY):
                ok = False
                break
            _LAYOUT[k].off[i] = m.offset
        _LAYOUT[k].fast = ok


cdef extern from "<arpa/inet.h>" nogil:
    uint16_t ntohs(uint16_t)


# --------------------------------------------------------------------------------------------
# small C helpers

cdef inline uint32_t _be16(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be64(const unsigned char *p) noexcept nogil:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef inline void _put16(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xff
    p[1] = v & 0xff


cdef inline void _put32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xff
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff


cdef inline void _put64(unsigned char *p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>v)


cdef inline uint64_t _sum_native(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """Unfolded one's-complement sum of p[0:n] in native-order 16-bit words (odd n: zero pad).

    64-bit loads split into two 32-bit halves, four independent accumulators (no carry chain
    between them); each half adds < 2**32, so 2**31 rounds cannot overflow 64 bits."""
    cdef uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, w0, w1, w2, w3
    cdef uint32_t w32
    cdef uint16_t w16 = 0
    while n >= 32:
        memcpy(&w0, p, 8)
        memcpy(&w1, p + 8, 8)
        memcpy(&w2, p + 16, 8)
        memcpy(&w3, p + 24, 8)
        a0 += (w0 & 0xffffffffULL) + (w0 >> 32)
        a1 += (w1 & 0xffffffffULL) + (w1 >> 32)
        a2 += (w2 & 0xffffffffULL) + (w2 >> 32)
        a3 += (w3 & 0xffffffffULL) + (w3 >> 32)
        p += 32
        n -= 32
    a0 += a1 + a2 + a3  # each < 2**62 for any Python-sized buffer
    while n >= 4:
        memcpy(&w32, p, 4)
        a0 += w32
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&w16, p, 2)
        a0 += w16
        p += 2
        n -= 2
    if n:
        w16 = 0
        (<unsigned char *>&w16)[0] = p[0]
        a0 += w16
    return a0


cdef inline uint32_t _fold(uint64_t acc) noexcept nogil:
    """Fold a native-order accumulator to 16 bits and return it in network (big-endian) value."""
    acc = (acc & 0xffffffffULL) + (acc >> 32)
    acc = (acc & 0xffffffffULL) + (acc >> 32)
    acc = (acc & 0xffff) + (acc >> 16)
    acc = (acc & 0xffff) + (acc >> 16)
    acc = (acc & 0xffff) + (acc >> 16)
    return ntohs(<uint16_t>acc)


cdef inline uint32_t _fold_be(uint64_t acc) noexcept nogil:
    """Fold an accumulator of big-endian word values to 16 bits."""
    acc = (acc & 0xffffffffULL) + (acc >> 32)
    acc = (acc & 0xffffffffULL) + (acc >> 32)
    acc = (acc & 0xffff) + (acc >> 16)
    acc = (acc & 0xffff) + (acc >> 16)
    acc = (acc & 0xffff) + (acc >> 16)
    return <uint32_t>acc


cdef inline object _as_bytes(object buf):
    """bytes as-is; any other bytes-like object copied to bytes (TypeError for non-buffers)."""
    if PyBytes_CheckExact(buf):
        return buf
    return bytes(memoryview(buf))


cdef inline const unsigned char *_ptr(object b) noexcept:
    return <const unsigned char *>PyBytes_AS_STRING(b)


cdef uint64_t _uint(object v, uint64_t maximum, str what) except? 0xffffffffffffffffULL:
    """Python int -> C unsigned, WireError when not in 0..maximum (packet.py `_check_range`;
    a bool is an int there). No exception machinery on the common path."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_Check(v):
        raise WireError(f"{what} must be an int, not {type(v).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow == 0:
        if x < 0 or <uint64_t>x > maximum:
            raise WireError(f"{what} {v!r} out of range 0..{maximum}")
        return <uint64_t>x
    if overflow > 0 and maximum == 0xffffffffffffffffULL and v <= 0xffffffffffffffffULL:
        return PyLong_AsUnsignedLongLong(v)
    raise WireError(f"{what} {v!r} out of range 0..{maximum}")


cdef uint64_t _u(object v, uint64_t maximum, str what) except? 0xffffffffffffffffULL:
    """mptcp.py `_u`: like _uint but a bool is not an int here."""
    if type(v) is bool:
        raise WireError(f"{what} {v!r} out of range 0..{maximum:#x}")
    return _uint(v, maximum, what)


cdef bytes _bytes_of(object v, Py_ssize_t length, str what):
    """mptcp.py `_bytes_of`: bytes, bytearray or memoryview of exactly `length` bytes."""
    if PyBytes_CheckExact(v):
        if PyBytes_GET_SIZE(v) != length:
            raise WireError(f"{what} must be {length} bytes")
        return <bytes>v
    if not isinstance(v, (bytes, bytearray, memoryview)) or len(v) != length:
        raise WireError(f"{what} must be {length} bytes")
    return bytes(v)


# --------------------------------------------------------------------------------------------
# Packet

@cython.freelist(32)
@cython.final
cdef class Packet:
    """One parsed IPv4/IPv6 + TCP header (see docs/wire-api.md, "Packet"). Its fields are
    declared in _wire.pxd, so that the compiled core reads them as C struct members."""

    def __init__(self, version, src, dst, ip_hlen, ttl, sport, dport, seq, ack, flags,
                 window, doff, payload_off, payload_len, length):
        self.version = version
        self.src = src
        self.dst = dst
        self.ip_hlen = ip_hlen
        self.ttl = ttl
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.doff = doff
        self.payload_off = payload_off
        self.payload_len = payload_len
        self.length = length

    cdef tuple _fields(self):
        return (self.version, self.src, self.dst, self.ip_hlen, self.ttl, self.sport,
                self.dport, self.seq, self.ack, self.flags, self.window, self.doff,
                self.payload_off, self.payload_len, self.length)

    def __eq__(self, other):
        if type(other) is not Packet:
            return NotImplemented
        return self._fields() == (<Packet>other)._fields()

    def __ne__(self, other):
        if type(other) is not Packet:
            return NotImplemented
        return self._fields() != (<Packet>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"Packet(version={self.version!r}, src={self.src!r}, dst={self.dst!r}, "
            f"ip_hlen={self.ip_hlen!r}, ttl={self.ttl!r}, sport={self.sport!r}, "
            f"dport={self.dport!r}, seq={self.seq!r}, ack={self.ack!r}, "
            f"flags={self.flags!r}, window={self.window!r}, doff={self.doff!r}, "
            f"payload_off={self.payload_off!r}, payload_len={self.payload_len!r}, "
            f"length={self.length!r})"
        )

    def __reduce__(self):
        return (Packet, self._fields())


cdef Packet _coerce_packet(object pkt):
    """A twin Packet for a twin Packet (as-is) or any object with the Packet attributes."""
    if type(pkt) is Packet:
        return <Packet>pkt
    return Packet(*packet_fields(pkt))


def packet_fields(p):
    """(version, src, dst, ip_hlen, ttl, sport, dport, seq, ack, flags, window, doff,
    payload_off, payload_len, length) of a Packet of either implementation."""
    if type(p) is Packet:
        return (<Packet>p)._fields()
    return (p.version, p.src, p.dst, p.ip_hlen, p.ttl, p.sport, p.dport, p.seq, p.ack,
            p.flags, p.window, p.doff, p.payload_off, p.payload_len, p.length)


def parse_packet(buf):
    """Parse the IPv4/IPv6 + TCP headers of `buf`; WireError if this layer cannot handle it."""
    buf = _as_bytes(buf)
    cdef const unsigned char *p = _ptr(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef int version, ihl, total, doff, ttl
    cdef Packet pkt
    if n < 20:
        raise WireError("buffer shorter than an IP header")
    version = p[0] >> 4
    if version == 4:
        ihl = (p[0] & 0x0f) * 4
        if ihl < 20:
            raise WireError("IPv4 IHL < 5")
        total = _be16(p + 2)
        if total < ihl + 20 or total > n:
            raise WireError("IPv4 total length does not fit a TCP segment in the buffer")
        if _be16(p + 6) & 0x3fff:
            raise WireError("IPv4 fragment")
        if p[9] != 6:
            raise WireError("not TCP")
        ttl = p[8]
    elif version == 6:
        if n < 60:
            raise WireError("buffer shorter than IPv6 + TCP headers")
        if p[6] != 6:
            raise WireError("IPv6 next header is not TCP (extension headers are not supported)")
        ihl = 40
        total = 40 + <int>_be16(p + 4)
        if total < 60 or total > n:
            raise WireError("IPv6 payload length does not fit a TCP segment in the buffer")
        ttl = p[7]
    else:
        raise WireError(f"IP version {version}")
    doff = (p[ihl + 12] >> 4) * 4
    if doff < 20 or ihl + doff > total:
        raise WireError("bad TCP data offset")
    pkt = Packet.__new__(Packet)
    pkt.version = version
    if version == 4:
        pkt.src = PyBytes_FromStringAndSize(<const char *>p + 12, 4)
        pkt.dst = PyBytes_FromStringAndSize(<const char *>p + 16, 4)
    else:
        pkt.src = PyBytes_FromStringAndSize(<const char *>p + 8, 16)
        pkt.dst = PyBytes_FromStringAndSize(<const char *>p + 24, 16)
    pkt.ip_hlen = ihl
    pkt.ttl = ttl
    p += ihl
    pkt.sport = _be16(p)
    pkt.dport = _be16(p + 2)
    pkt.seq = _be32(p + 4)
    pkt.ack = _be32(p + 8)
    pkt.flags = p[13]
    pkt.window = _be16(p + 14)
    pkt.doff = doff
    pkt.payload_off = ihl + doff
    pkt.payload_len = total - ihl - doff
    pkt.length = total
    return pkt


# --------------------------------------------------------------------------------------------
# TCP options

@cython.freelist(32)
@cython.final
cdef class TcpOptions:
    """The TCP options of one segment (see docs/wire-api.md, "TcpOptions")."""

    cdef readonly int mss
    cdef readonly int wscale
    cdef readonly bint sack_perm
    cdef readonly int64_t ts_val
    cdef readonly int64_t ts_ecr
    cdef readonly tuple sack
    cdef readonly tuple mptcp

    def __init__(self, mss=-1, wscale=-1, sack_perm=False, ts_val=-1, ts_ecr=-1, sack=(),
                 mptcp=()):
        self.mss = mss
        self.wscale = wscale
        self.sack_perm = sack_perm
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.sack = tuple(sack)
        self.mptcp = tuple(mptcp)

    cdef tuple _fields(self):
        return (self.mss, self.wscale, self.sack_perm, self.ts_val, self.ts_ecr, self.sack,
                self.mptcp)

    def __eq__(self, other):
        if type(other) is not TcpOptions:
            return NotImplemented
        return self._fields() == (<TcpOptions>other)._fields()

    def __ne__(self, other):
        if type(other) is not TcpOptions:
            return NotImplemented
        return self._fields() != (<TcpOptions>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"TcpOptions(mss={self.mss!r}, wscale={self.wscale!r}, "
            f"sack_perm={self.sack_perm!r}, ts_val={self.ts_val!r}, ts_ecr={self.ts_ecr!r}, "
            f"sack={self.sack!r}, mptcp={self.mptcp!r})"
        )

    def __reduce__(self):
        return (TcpOptions, self._fields())


cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t n) noexcept nogil:
    if v < 0:
        return 0
    if v > n:
        return n
    return v


cdef TcpOptions _parse_options(object buf, Py_ssize_t start, Py_ssize_t end):
    cdef const unsigned char *p = _ptr(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i, size, j, nsack = 0, sack_at = 0
    cdef int kind
    cdef int nmp = 0
    cdef Py_ssize_t mp_at[40]
    cdef Py_ssize_t mp_len[40]
    cdef TcpOptions o = TcpOptions.__new__(TcpOptions)
    cdef tuple t
    cdef object item
    cdef list more = None  # kind-30 options past the 40th (only for a huge option area)
    o.mss = -1
    o.wscale = -1
    o.sack_perm = False
    o.ts_val = -1
    o.ts_ecr = -1
    start = _clamp(start, n)
    end = _clamp(end, n)
    i = start
    while i < end:
        kind = p[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            break
        size = p[i + 1]
        if size < 2 or i + size > end:
            break
        if kind == TCPOPT_MSS:
            if size == 4:
                o.mss = _be16(p + i + 2)
        elif kind == TCPOPT_WINDOW:
            if size == 3:
                o.wscale = p[i + 2]
        elif kind == TCPOPT_SACK_PERM:
            if size == 2:
                o.sack_perm = True
        elif kind == TCPOPT_TIMESTAMP:
            if size == 10:
                o.ts_val = _be32(p + i + 2)
                o.ts_ecr = _be32(p + i + 6)
        elif kind == TCPOPT_SACK:
            if size >= 10 and size <= 34 and (size - 2) % 8 == 0:
                nsack = (size - 2) >> 3
                sack_at = i + 2
        elif kind == TCPOPT_MPTCP:
            if nmp < 40:
                mp_at[nmp] = i
                mp_len[nmp] = size
                nmp += 1
            else:
                if more is None:
                    more = []
                more.append(PyBytes_FromStringAndSize(<const char *>p + i, size))
        i += size
    if nsack:
        t = PyTuple_New(nsack)
        for j in range(nsack):
            item = (_be32(p + sack_at + 8 * j), _be32(p + sack_at + 8 * j + 4))
            Py_INCREF(item)
            PyTuple_SET_ITEM(t, j, item)
        o.sack = t
    else:
        o.sack = _EMPTY
    if nmp:
        t = PyTuple_New(nmp)
        for j in range(nmp):
            item = PyBytes_FromStringAndSize(<const char *>p + mp_at[j], mp_len[j])
            Py_INCREF(item)
            PyTuple_SET_ITEM(t, j, item)
        o.mptcp = t if more is None else t + tuple(more)
    else:
        o.mptcp = _EMPTY
    return o


def parse_options(buf, start, end):
    """Walk the TCP options in buf[start:end] like Linux tcp_parse_options; never raises."""
    buf = _as_bytes(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t s = _clamp_obj(start, n), e = _clamp_obj(end, n)
    return _parse_options(buf, s, e)


cdef inline Py_ssize_t _clamp_obj(object v, Py_ssize_t n) except? -1:
    """An int bound clamped to 0..n (a Python int of any size), as packet.py `_clamp`."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        return 0 if overflow < 0 else n
    if x < 0:
        return 0
    if x > n:
        return n
    return <Py_ssize_t>x


def options_of(buf, pkt):
    """parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)."""
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    return _parse_options(buf, pk.ip_hlen + 20, pk.payload_off)


def strip_mptcp(buf, start, end):
    """The options in buf[start:end] without any kind-30 option, the rest byte for byte.

    EOL and what follows are dropped, and so is a partial or malformed tail. Never raises."""
    buf = _as_bytes(buf)
    cdef const unsigned char *p = _ptr(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t s = _clamp_obj(start, n), e = _clamp_obj(end, n)
    cdef Py_ssize_t w
    cdef unsigned char out[256]
    cdef unsigned char *o = out
    cdef object res
    if e - s > 256:
        res = PyBytes_FromStringAndSize(NULL, e - s)
        o = <unsigned char *>PyBytes_AS_STRING(res)
    w = _strip_into(p, s, e, o)
    return PyBytes_FromStringAndSize(<const char *>o, w)


cdef Py_ssize_t _strip_into(const unsigned char *p, Py_ssize_t s, Py_ssize_t e,
                            unsigned char *o) noexcept:
    """strip_mptcp of p[s:e] (already clamped) written to o (room for e - s); its length."""
    cdef Py_ssize_t i = s, size, w = 0
    cdef int kind
    while i < e:
        kind = p[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            o[w] = 1
            w += 1
            i += 1
            continue
        if i + 1 >= e:
            break  # partial option: the walk stops, the tail is dropped
        size = p[i + 1]
        if size < 2 or i + size > e:
            break
        if kind != TCPOPT_MPTCP:
            memcpy(o + w, p + i, size)
            w += size
        i += size
    return w


def encode_tcp_options(mss=-1, wscale=-1, sack_perm=False, ts_val=-1, ts_ecr=-1, sack=()):
    """The non-MPTCP options in the Linux order and alignment (tcp_options_write)."""
    cdef unsigned char out[80]
    cdef Py_ssize_t w = 0
    cdef bint have_ts = ts_val != -1
    cdef uint64_t v
    if mss != -1:
        v = _uint(mss, 0xffff, "mss")
        out[0] = TCPOPT_MSS
        out[1] = 4
        _put16(out + 2, <uint32_t>v)
        w = 4
    if have_ts:
        if sack_perm:
            out[w] = TCPOPT_SACK_PERM
            out[w + 1] = 2
        else:
            out[w] = TCPOPT_NOP
            out[w + 1] = TCPOPT_NOP
        out[w + 2] = TCPOPT_TIMESTAMP
        out[w + 3] = 10
        _put32(out + w + 4, <uint32_t>_uint(ts_val, 0xffffffffULL, "ts_val"))
        _put32(out + w + 8, <uint32_t>_uint(0 if ts_ecr == -1 else ts_ecr, 0xffffffffULL, "ts_ecr"))
        w += 12
    elif ts_ecr != -1:
        raise WireError("ts_ecr without ts_val")
    elif sack_perm:
        out[w] = TCPOPT_NOP
        out[w + 1] = TCPOPT_NOP
        out[w + 2] = TCPOPT_SACK_PERM
        out[w + 3] = 2
        w += 4
    if wscale != -1:
        v = _uint(wscale, 0xff, "wscale")
        out[w] = TCPOPT_NOP
        out[w + 1] = TCPOPT_WINDOW
        out[w + 2] = 3
        out[w + 3] = <unsigned char>v
        w += 4
    if sack:
        blocks = tuple(sack)
        if len(blocks) > 4:
            raise WireError("more than 4 SACK blocks")
        out[w] = TCPOPT_NOP
        out[w + 1] = TCPOPT_NOP
        out[w + 2] = TCPOPT_SACK
        out[w + 3] = 2 + 8 * len(blocks)
        w += 4
        for left, right in blocks:
            _put32(out + w, <uint32_t>_uint(left, 0xffffffffULL, "sack left"))
            _put32(out + w + 4, <uint32_t>_uint(right, 0xffffffffULL, "sack right"))
            w += 8
    if w > MAX_TCP_OPTIONS:
        raise WireError("TCP options longer than 40 bytes")
    return PyBytes_FromStringAndSize(<const char *>out, w)


# --------------------------------------------------------------------------------------------
# MPTCP options: parse (RFC 8684 §3, Linux net/mptcp/options.c mptcp_parse_option)

def parse_mptcp(opt, tcp_flags, payload_len):
    """One kind-30 option -> its dataclass, or None when malformed (silently ignored)."""
    opt = _as_bytes(opt)
    return _parse_mptcp(_ptr(opt), PyBytes_GET_SIZE(opt), tcp_flags, payload_len)


def mptcp_options(buf, pkt):
    """mptcp.py mptcp_options: every MPTCP option of the segment, parsed (None when
    malformed), found by parse_options' walk; no TcpOptions and no raw bytes are made."""
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    cdef const unsigned char *p = _ptr(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i = _clamp(pk.ip_hlen + 20, n), end = _clamp(pk.payload_off, n), size
    cdef int kind
    cdef list found = None
    cdef object first = None, flags = None, plen = None
    cdef int count = 0
    while i < end:  # the walk of _parse_options / the reference's _walk_options
        kind = p[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            break
        size = p[i + 1]
        if size < 2 or i + size > end:
            break
        if kind == TCPOPT_MPTCP:
            if count == 0:
                flags, plen = pk.flags, pk.payload_len
            item = _parse_mptcp(p + i, size, flags, plen)
            if count == 0:
                first = item
            else:
                if found is None:
                    found = [first]
                found.append(item)
            count += 1
        i += size
    if count == 0:
        return ()
    if count == 1:
        return (first,)
    return tuple(found)


cdef object _parse_mptcp(const unsigned char *p, Py_ssize_t opsize, object tcp_flags,
                         object payload_len):
    """parse_mptcp of the option p[0:opsize]."""
    cdef int subtype, version, flags, expected
    # tcp_flags and payload_len are looked at only where the reference looks at them
    # (MP_CAPABLE, MP_TCPRST), so an odd value elsewhere is no error here either.
    cdef long tflags
    cdef bint syn, ackf
    cdef Py_ssize_t off, alen
    if opsize < 3 or p[0] != TCPOPT_MPTCP or p[1] != opsize:
        return None
    subtype = p[2] >> 4
    if subtype == MPTCPOPT_DSS:
        if opsize < 4:
            return None
        flags = p[3] & MPTCP_DSS_FLAG_MASK
        expected = 4
        if flags & MPTCP_DSS_DATA_ACK:
            expected += 8 if flags & MPTCP_DSS_ACK64 else 4
        if flags & MPTCP_DSS_HAS_MAP:
            expected += 14 if flags & MPTCP_DSS_DSN64 else 10
        if opsize != expected and opsize != expected + 2:
            return None
        off = 4
        data_ack = None
        if flags & MPTCP_DSS_DATA_ACK:
            if flags & MPTCP_DSS_ACK64:
                data_ack = _be64(p + off)
                off += 8
            else:
                data_ack = _be32(p + off)
                off += 4
        data_seq = subflow_seq = data_len = csum = None
        if flags & MPTCP_DSS_HAS_MAP:
            if flags & MPTCP_DSS_DSN64:
                data_seq = _be64(p + off)
                off += 8
            else:
                data_seq = _be32(p + off)
                off += 4
            subflow_seq = _be32(p + off)
            data_len = _be16(p + off + 4)
            off += 6
            if opsize == expected + 2:
                csum = _be16(p + off)
        return _make(K_DSS, data_ack, bool(flags & MPTCP_DSS_ACK64), data_seq,
                   bool(flags & MPTCP_DSS_DSN64), subflow_seq, data_len, csum,
                   bool(flags & MPTCP_DSS_DATA_FIN))
    if subtype == MPTCPOPT_MP_CAPABLE:
        tflags = tcp_flags & 0xff  # only the flag bits matter, whatever the int
        if opsize < 4:
            return None
        version = p[2] & 0x0f
        flags = p[3]
        if (flags & 0x1f) != 0x01 or (flags & 0x40):
            return None
        syn = (tflags & TCP_SYN) != 0
        ackf = (tflags & TCP_ACK) != 0
        if syn and not ackf:
            if version >= 1:
                if opsize != 4:
                    return None
                return _make(K_MPC, version, flags, None, None, None, None)
            if opsize != 12:
                return None
            return _make(K_MPC, version, flags, _be64(p + 4), None, None, None)
        if version > 1:
            return None
        if syn:
            if opsize != 12:
                return None
            return _make(K_MPC, version, flags, _be64(p + 4), None, None, None)
        if version == 1 and payload_len > 0:
            if opsize == 22:
                return _make(K_MPC, version, flags, _be64(p + 4), _be64(p + 12), _be16(p + 20),
                                 None)
            if opsize == 24:
                return _make(K_MPC, version, flags, _be64(p + 4), _be64(p + 12), _be16(p + 20),
                                 _be16(p + 22))
            return None
        if opsize != 20:
            return None
        return _make(K_MPC, version, flags, _be64(p + 4), _be64(p + 12), None, None)
    if subtype == MPTCPOPT_MP_JOIN:
        if opsize == 12:
            return _make(K_MPJ_SYN, bool(p[2] & 1), p[3], _be32(p + 4), _be32(p + 8))
        if opsize == 16:
            return _make(K_MPJ_SYNACK, bool(p[2] & 1), p[3],
                                PyBytes_FromStringAndSize(<const char *>p + 4, 8), _be32(p + 12))
        if opsize == 24:
            return _make(K_MPJ_ACK, PyBytes_FromStringAndSize(<const char *>p + 4, 20))
        return None
    if subtype == MPTCPOPT_ADD_ADDR:
        echo = bool(p[2] & 1)
        if not echo:
            if opsize == 16 or opsize == 18:
                alen = 4
            elif opsize == 28 or opsize == 30:
                alen = 16
            else:
                return None
            has_port = opsize == 18 or opsize == 30
        else:
            if opsize == 8 or opsize == 10:
                alen = 4
            elif opsize == 20 or opsize == 22:
                alen = 16
            else:
                return None
            has_port = opsize == 10 or opsize == 22
        if opsize < 4:
            return None
        addr = PyBytes_FromStringAndSize(<const char *>p + 4, alen)
        port = _be16(p + 4 + alen) if has_port else None
        hmac = None if echo else PyBytes_FromStringAndSize(<const char *>p + opsize - 8, 8)
        return _make(K_ADD_ADDR, echo, p[3], addr, port, hmac)
    if subtype == MPTCPOPT_RM_ADDR:
        if opsize < 4 or opsize > 11:
            return None
        return _make(K_RM_ADDR, tuple(PyBytes_FromStringAndSize(<const char *>p + 3, opsize - 3)))
    if subtype == MPTCPOPT_MP_PRIO:
        if opsize != 3:
            return None
        return _make(K_PRIO, bool(p[2] & 1))
    if subtype == MPTCPOPT_MP_FAIL:
        if opsize != 12:
            return None
        return _make(K_FAIL, _be64(p + 4))
    if subtype == MPTCPOPT_MP_FASTCLOSE:
        if opsize != 12:
            return None
        return _make(K_FASTCLOSE, _be64(p + 4))
    if subtype == MPTCPOPT_RST:
        if opsize != 4:
            return None
        tflags = tcp_flags & 0xff
        if not (tflags & TCP_RST):
            return None
        return _make(K_TCPRST, bool(p[2] & 1), p[3])
    return None


# --------------------------------------------------------------------------------------------
# MPTCP options: build

cdef Py_ssize_t _write_dss(unsigned char *out, object data_ack, object ack64, object data_seq,
                           object dsn64, object subflow_seq, object data_len, object csum,
                           object data_fin) except -1:
    """Encode a DSS with these `Dss` fields at out (room for 30 bytes); returns its length."""
    cdef uint32_t flags
    cdef Py_ssize_t w
    cdef bint mapping
    flags = 0
    w = 4
    out[0] = TCPOPT_MPTCP
    out[2] = MPTCPOPT_DSS << 4
    if data_ack is not None:
        flags |= MPTCP_DSS_DATA_ACK
        if ack64:
            flags |= MPTCP_DSS_ACK64
            _put64(out + w, _u(data_ack, 0xffffffffffffffffULL, "data_ack"))
            w += 8
        else:
            _put32(out + w, <uint32_t>_u(data_ack, 0xffffffffULL, "data_ack"))
            w += 4
    mapping = data_seq is not None
    if mapping != (subflow_seq is not None) or mapping != (data_len is not None):
        raise WireError("a DSS mapping needs data_seq, subflow_seq and data_len together")
    if mapping:
        flags |= MPTCP_DSS_HAS_MAP
        if dsn64:
            flags |= MPTCP_DSS_DSN64
            _put64(out + w, _u(data_seq, 0xffffffffffffffffULL, "data_seq"))
            w += 8
        else:
            _put32(out + w, <uint32_t>_u(data_seq, 0xffffffffULL, "data_seq"))
            w += 4
        _put32(out + w, <uint32_t>_u(subflow_seq, 0xffffffffULL, "subflow_seq"))
        _put16(out + w + 4, <uint32_t>_u(data_len, 0xffff, "data_len"))
        w += 6
        if csum is not None:
            _put16(out + w, <uint32_t>_u(csum, 0xffff, "csum"))
            w += 2
    if data_fin:
        flags |= MPTCP_DSS_DATA_FIN
    out[1] = <unsigned char>w
    out[3] = <unsigned char>flags
    return w


cdef Py_ssize_t _write_mptcp(unsigned char *out, object opt) except -1:
    """Encode one MPTCP option at out (room for 30 bytes); returns its length."""
    cdef type t = type(opt)
    cdef uint32_t flags
    cdef Py_ssize_t w, alen
    cdef bint mapping
    if t is Dss:
        return _write_dss(out, _get(opt, K_DSS, 0), _get(opt, K_DSS, 1), _get(opt, K_DSS, 2),
                          _get(opt, K_DSS, 3), _get(opt, K_DSS, 4), _get(opt, K_DSS, 5),
                          _get(opt, K_DSS, 6), _get(opt, K_DSS, 7))
    if t is MpCapable:
        sndr_key = _get(opt, K_MPC, 2)
        rcvr_key = _get(opt, K_MPC, 3)
        data_len = _get(opt, K_MPC, 4)
        csum = _get(opt, K_MPC, 5)
        out[0] = TCPOPT_MPTCP
        out[2] = (MPTCPOPT_MP_CAPABLE << 4) | <unsigned char>_u(_get(opt, K_MPC, 0), 0x0f, "version")
        out[3] = <unsigned char>_u(_get(opt, K_MPC, 1), 0xff, "flags")
        w = 4
        if sndr_key is not None:
            _put64(out + 4, _u(sndr_key, 0xffffffffffffffffULL, "sndr_key"))
            w = 12
            if rcvr_key is not None:
                _put64(out + 12, _u(rcvr_key, 0xffffffffffffffffULL, "rcvr_key"))
                w = 20
                if data_len is not None:
                    _put16(out + 20, <uint32_t>_u(data_len, 0xffff, "data_len"))
                    w = 22
                    if csum is not None:
                        _put16(out + 22, <uint32_t>_u(csum, 0xffff, "csum"))
                        w = 24
                elif csum is not None:
                    raise WireError("MP_CAPABLE csum needs data_len")
            elif data_len is not None or csum is not None:
                raise WireError("MP_CAPABLE data_len needs both keys")
        elif rcvr_key is not None or data_len is not None or csum is not None:
            raise WireError("MP_CAPABLE fields need sndr_key")
        out[1] = <unsigned char>w
        return w
    if t is MpJoinSyn:
        out[0] = TCPOPT_MPTCP
        out[1] = 12
        out[2] = (MPTCPOPT_MP_JOIN << 4) | (1 if _get(opt, K_MPJ_SYN, 0) else 0)
        out[3] = <unsigned char>_u(_get(opt, K_MPJ_SYN, 1), 0xff, "addr_id")
        _put32(out + 4, <uint32_t>_u(_get(opt, K_MPJ_SYN, 2), 0xffffffffULL, "token"))
        _put32(out + 8, <uint32_t>_u(_get(opt, K_MPJ_SYN, 3), 0xffffffffULL, "nonce"))
        return 12
    if t is MpJoinSynAck:
        hmac = _bytes_of(_get(opt, K_MPJ_SYNACK, 2), 8, "MP_JOIN SYN/ACK hmac")
        out[0] = TCPOPT_MPTCP
        out[1] = 16
        out[2] = (MPTCPOPT_MP_JOIN << 4) | (1 if _get(opt, K_MPJ_SYNACK, 0) else 0)
        out[3] = <unsigned char>_u(_get(opt, K_MPJ_SYNACK, 1), 0xff, "addr_id")
        memcpy(out + 4, _ptr(hmac), 8)
        _put32(out + 12, <uint32_t>_u(_get(opt, K_MPJ_SYNACK, 3), 0xffffffffULL, "nonce"))
        return 16
    if t is MpJoinAck:
        hmac = _bytes_of(_get(opt, K_MPJ_ACK, 0), 20, "MP_JOIN ACK hmac")
        out[0] = TCPOPT_MPTCP
        out[1] = 24
        out[2] = MPTCPOPT_MP_JOIN << 4
        out[3] = 0
        memcpy(out + 4, _ptr(hmac), 20)
        return 24
    if t is AddAddr:
        addr = _get(opt, K_ADD_ADDR, 2)
        if not isinstance(addr, (bytes, bytearray, memoryview)) or len(addr) not in (4, 16):
            raise WireError("ADD_ADDR address must be 4 or 16 bytes")
        alen = len(addr)
        addr = _as_bytes(addr)
        out[0] = TCPOPT_MPTCP
        out[2] = (MPTCPOPT_ADD_ADDR << 4) | (1 if _get(opt, K_ADD_ADDR, 0) else 0)
        out[3] = <unsigned char>_u(_get(opt, K_ADD_ADDR, 1), 0xff, "addr_id")
        memcpy(out + 4, _ptr(addr), alen)
        w = 4 + alen
        port = _get(opt, K_ADD_ADDR, 3)
        if port is not None:
            _put16(out + w, <uint32_t>_u(port, 0xffff, "port"))
            w += 2
        if _get(opt, K_ADD_ADDR, 0):
            if _get(opt, K_ADD_ADDR, 4) is not None:
                raise WireError("an ADD_ADDR echo carries no HMAC")
        else:
            hmac = _bytes_of(_get(opt, K_ADD_ADDR, 4), 8, "ADD_ADDR hmac")
            memcpy(out + w, _ptr(hmac), 8)
            w += 8
        out[1] = <unsigned char>w
        return w
    if t is RemoveAddr:
        ids = tuple(_get(opt, K_RM_ADDR, 0))
        if len(ids) < 1 or len(ids) > 8:
            raise WireError("REMOVE_ADDR carries 1 to 8 address ids")
        out[0] = TCPOPT_MPTCP
        out[1] = 3 + len(ids)
        out[2] = MPTCPOPT_RM_ADDR << 4
        w = 3
        for i in ids:
            out[w] = <unsigned char>_u(i, 0xff, "addr_id")
            w += 1
        return w
    if t is MpPrio:
        out[0] = TCPOPT_MPTCP
        out[1] = 3
        out[2] = (MPTCPOPT_MP_PRIO << 4) | (1 if _get(opt, K_PRIO, 0) else 0)
        return 3
    if t is MpFail:
        out[0] = TCPOPT_MPTCP
        out[1] = 12
        out[2] = MPTCPOPT_MP_FAIL << 4
        out[3] = 0
        _put64(out + 4, _u(_get(opt, K_FAIL, 0), 0xffffffffffffffffULL, "data_seq"))
        return 12
    if t is MpFastclose:
        out[0] = TCPOPT_MPTCP
        out[1] = 12
        out[2] = MPTCPOPT_MP_FASTCLOSE << 4
        out[3] = 0
        _put64(out + 4, _u(_get(opt, K_FASTCLOSE, 0), 0xffffffffffffffffULL, "rcvr_key"))
        return 12
    if t is MpTcpRst:
        out[0] = TCPOPT_MPTCP
        out[1] = 4
        out[2] = (MPTCPOPT_RST << 4) | (1 if _get(opt, K_TCPRST, 0) else 0)
        out[3] = <unsigned char>_u(_get(opt, K_TCPRST, 1), 0xff, "reason")
        return 4
    raise WireError(f"not an MPTCP option: {opt!r}")


def build_mptcp(option):
    """One MPTCP option with the exact length its fields imply."""
    cdef unsigned char out[32]
    cdef Py_ssize_t w = _write_mptcp(out, option)
    return PyBytes_FromStringAndSize(<const char *>out, w)


# The one writer's combination table, taken from the reference's OPTION_COMBINATIONS (the
# spec) as bit masks: _ALLOWED[subtype] has bit i set when subtype i may share the segment.
cdef uint32_t _ALLOWED[16]



cdef inline int _subtype_of(type t):
    if t is Dss:
        return MPTCPOPT_DSS
    if t is MpCapable:
        return MPTCPOPT_MP_CAPABLE
    if t is MpJoinSyn or t is MpJoinSynAck or t is MpJoinAck:
        return MPTCPOPT_MP_JOIN
    if t is AddAddr:
        return MPTCPOPT_ADD_ADDR
    if t is RemoveAddr:
        return MPTCPOPT_RM_ADDR
    if t is MpPrio:
        return MPTCPOPT_MP_PRIO
    if t is MpFail:
        return MPTCPOPT_MP_FAIL
    if t is MpFastclose:
        return MPTCPOPT_MP_FASTCLOSE
    if t is MpTcpRst:
        return MPTCPOPT_RST
    return -1


def build_options(tcp=b"", mptcp=()):
    """The one writer: tcp options, then the MPTCP options, NOP-padded to a multiple of 4."""
    tcp = _as_bytes(tcp)
    cdef unsigned char out[40 + 40 + 32]
    cdef Py_ssize_t w = PyBytes_GET_SIZE(tcp)
    cdef uint32_t seen = 0
    cdef int st
    if w > MAX_TCP_OPTIONS:
        raise WireError("TCP options longer than 40 bytes")
    memcpy(out, _ptr(tcp), w)
    for opt in mptcp:
        st = _subtype_of(type(opt))
        if st < 0:
            raise WireError(f"not an MPTCP option: {opt!r}")
        if seen & (1u << st):
            raise WireError("at most one MPTCP option of each subtype")
        if seen & ~_ALLOWED[st]:
            raise WireError("forbidden MPTCP option combination")
        seen |= 1u << st
        w += _write_mptcp(out + w, opt)
        if w > MAX_TCP_OPTIONS:
            raise WireError("options longer than 40 bytes")
    while w & 3:
        out[w] = TCPOPT_NOP
        w += 1
    if w > MAX_TCP_OPTIONS:
        raise WireError("options longer than 40 bytes")
    return PyBytes_FromStringAndSize(<const char *>out, w)


# --------------------------------------------------------------------------------------------
# checksums

def ones_sum(buf, start=0, end=-1):
    """16-bit one's-complement sum (folded, not inverted) of buf[start:end]; `end` -1 means
    the end of the buffer; out-of-range bounds are clamped; odd length: zero pad (RFC 1071)."""
    buf = _as_bytes(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t s, e
    if end == -1:
        e = n
    else:
        e = _clamp_obj(end, n)
    s = _clamp_obj(start, n)
    if e <= s:
        return 0
    return _fold(_sum_native(_ptr(buf) + s, e - s))


cdef inline uint64_t _range_sum(const unsigned char *p, Py_ssize_t n, Py_ssize_t s, Py_ssize_t e) noexcept nogil:
    """_sum_native of p[s:e] with s, e clamped to [0, n] like a Python slice of a buffer."""
    s = _clamp(s, n)
    e = _clamp(e, n)
    if e <= s:
        return 0
    return _sum_native(p + s, e - s)


cdef uint64_t _pseudo_sum(Packet pk, uint32_t tcp_len) except? 0xffffffffffffffffULL:
    """Native-order unfolded sum of the TCP pseudo-header of pk (RFC 9293 §3.1 for IPv4,
    RFC 8200 §8.1 for IPv6), addresses taken from the Packet as the reference does."""
    cdef unsigned char hdr[40]
    cdef bytes src = pk.src, dst = pk.dst
    cdef Py_ssize_t ls = PyBytes_GET_SIZE(src), ld = PyBytes_GET_SIZE(dst)
    cdef Py_ssize_t w
    if pk.version == 4 and tcp_len > 0xffff:
        raise WireError("TCP segment longer than 65535 bytes")
    if ls + ld > 32:  # not a real Packet; sum it the slow way, like the reference
        return _sum_native(_ptr(src + dst), ls + ld) + _pseudo_tail_sum(pk.version, tcp_len)
    memcpy(hdr, _ptr(src), ls)
    memcpy(hdr + ls, _ptr(dst), ld)
    w = ls + ld
    if pk.version == 4:
        hdr[w] = 0
        hdr[w + 1] = 6
        _put16(hdr + w + 2, tcp_len)
        w += 4
    else:
        _put32(hdr + w, tcp_len)
        hdr[w + 4] = 0
        hdr[w + 5] = 0
        hdr[w + 6] = 0
        hdr[w + 7] = 6
        w += 8
    return _sum_native(hdr, w)


cdef uint64_t _pseudo_tail_sum(int version, uint32_t tcp_len):
    cdef unsigned char t[8]
    if version == 4:
        t[0] = 0
        t[1] = 6
        _put16(t + 2, tcp_len)
        return _sum_native(t, 4)
    _put32(t, tcp_len)
    t[4] = 0
    t[5] = 0
    t[6] = 0
    t[7] = 6
    return _sum_native(t, 8)


cdef inline uint32_t _tcp_csum(const unsigned char *p, Py_ssize_t n, Py_ssize_t tcp,
                               Py_ssize_t length, uint64_t pseudo) noexcept nogil:
    """Checksum field value of the TCP segment p[tcp:length]; its checksum field counts as 0."""
    cdef uint64_t acc = pseudo
    acc += _range_sum(p, n, tcp, tcp + 16)
    acc += _range_sum(p, n, tcp + 18, length)
    return (~_fold(acc)) & 0xffff


def tcp_checksum(buf, pkt):
    """The correct TCP checksum field value for the segment in buf (checksum field as 0)."""
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    if n < pk.length:
        raise WireError("buffer shorter than the packet")
    return _tcp_csum(_ptr(buf), n, pk.ip_hlen, pk.length,
                     _pseudo_sum(pk, <uint32_t>(pk.doff + pk.payload_len)))


cdef inline uint32_t _ip_csum(const unsigned char *p, Py_ssize_t hlen) noexcept nogil:
    """IPv4 header checksum field value of p[0:hlen] (bytes 10-11 count as 0)."""
    cdef uint64_t acc = _sum_native(p, 10) + _sum_native(p + 12, hlen - 12)
    return (~_fold(acc)) & 0xffff


def ipv4_checksum(buf, ihl):
    """The correct IPv4 header checksum field value; `ihl` is the IHL field in 32-bit words
    (5..15), as in Linux ip_fast_csum(iph, ihl)."""
    buf = _as_bytes(buf)
    if not PyLong_Check(ihl) or not (5 <= ihl <= 15) or PyBytes_GET_SIZE(buf) < ihl * 4:
        raise WireError(f"IPv4 IHL {ihl!r} does not fit a {len(buf)}-byte buffer")
    return _ip_csum(_ptr(buf), <Py_ssize_t>ihl * 4)


cdef inline object _sized(object v, Py_ssize_t length, str what):
    """packet.py `_sized`: bytes of a bytes-like v (of exactly `length` bytes unless -1).
    Anything but bytes of the right length (other bytes-likes, errors) goes to the reference."""
    if PyBytes_CheckExact(v) and (length < 0 or PyBytes_GET_SIZE(v) == length):
        return v
    return _ref_sized(what, v, length)


cdef inline uint32_t _int32(object v, str what) except? 0xffffffffU:
    """An int of any size taken modulo 2**32 (packet.py: `v & 0xFFFFFFFF`)."""
    if not PyLong_Check(v):
        raise WireError(f"{what} must be an int, not {type(v).__name__}")
    return <uint32_t>_uint(int(v) & 0xFFFFFFFF, 0xFFFFFFFFU, what)


def build_segment(version, src, dst, sport, dport, seq, ack, flags, window, options=b"", payload=b"",
                  tos=0, ttl=64, label=0):
    """A complete IPv4 or IPv6 TCP segment with both checksums right (packet.py
    `build_segment`), built in one allocation."""
    cdef int v4
    cdef Py_ssize_t alen, olen, plen, iph, doff, tlen
    cdef uint32_t sp, dp, fl, ts, tt, lb, sq, ak, win
    cdef unsigned char *o
    cdef uint64_t acc
    if not PyLong_Check(version) or not (version == 4 or version == 6):
        raise WireError(f"IP version {version!r} (4 or 6)")
    v4 = version == 4
    alen = 4 if v4 else 16
    src = _sized(src, alen, "source address")
    dst = _sized(dst, alen, "destination address")
    sp = <uint32_t>_uint(sport, 0xFFFF, "source port")
    dp = <uint32_t>_uint(dport, 0xFFFF, "destination port")
    fl = <uint32_t>_uint(flags, 0xFF, "TCP flags")
    ts = <uint32_t>_uint(tos, 0xFF, "TOS")
    tt = <uint32_t>_uint(ttl, 0xFF, "TTL")
    lb = <uint32_t>_uint(label, 0xFFFFF, "flow label")
    sq = _int32(seq, "seq")
    ak = _int32(ack, "ack")
    if not PyLong_Check(window):
        raise WireError(f"window must be an int, not {type(window).__name__}")
    if window < 0:
        raise WireError(f"window {window} below 0")
    win = 0xFFFF if window > 0xFFFF else <uint32_t>window
    options = _sized(options, -1, "TCP options")
    payload = _sized(payload, -1, "payload")
    olen = PyBytes_GET_SIZE(options)
    plen = PyBytes_GET_SIZE(payload)
    if olen % 4 or olen > 40:
        raise WireError(f"TCP options of {olen} bytes (a multiple of 4, at most 40)")
    doff = 20 + olen
    tlen = doff + plen
    if tlen + (20 if v4 else 0) > 0xFFFF:
        raise WireError(f"a {tlen}-byte TCP segment does not fit the IP length field")
    iph = 20 if v4 else 40
    out = PyBytes_FromStringAndSize(NULL, iph + tlen)
    o = <unsigned char *>PyBytes_AS_STRING(out)
    if v4:
        o[0] = 0x45
        o[1] = <unsigned char>ts
        _put16(o + 2, <uint32_t>(20 + tlen))
        _put16(o + 4, 0)
        _put16(o + 6, 0x4000)
        o[8] = <unsigned char>tt
        o[9] = 6
        memcpy(o + 12, _ptr(src), 4)
        memcpy(o + 16, _ptr(dst), 4)
        _put16(o + 10, _ip_csum(o, 20))
    else:
        _put32(o, 0x60000000U | ts << 20 | lb)
        _put16(o + 4, <uint32_t>tlen)
        o[6] = 6
        o[7] = <unsigned char>tt
        memcpy(o + 8, _ptr(src), 16)
        memcpy(o + 24, _ptr(dst), 16)
    _put16(o + iph, sp)
    _put16(o + iph + 2, dp)
    _put32(o + iph + 4, sq)
    _put32(o + iph + 8, ak)
    o[iph + 12] = <unsigned char>((doff // 4) << 4)
    o[iph + 13] = <unsigned char>fl
    _put16(o + iph + 14, win)
    _put32(o + iph + 16, 0)  # checksum 0, urgent pointer 0
    if olen:
        memcpy(o + iph + 20, _ptr(options), olen)
    if plen:
        memcpy(o + iph + doff, _ptr(payload), plen)
    # pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1): the addresses, the protocol and the length
    acc = _sum_native(o + (12 if v4 else 8), 2 * alen) + _pseudo_tail_sum(4 if v4 else 6, <uint32_t>tlen)
    acc += _sum_native(o + iph, tlen)
    _put16(o + iph + 16, (~_fold(acc)) & 0xffff)
    return out


def csum_replace(check, old, new):
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for 16-bit-aligned old -> new bytes."""
    old = _as_bytes(old)
    new = _as_bytes(new)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(old)
    if n != PyBytes_GET_SIZE(new) or n & 1:
        raise WireError("csum_replace needs old and new of the same even length")
    cdef uint32_t hc = <uint32_t>_uint(check, 0xffff, "checksum")
    cdef const unsigned char *po = _ptr(old)
    cdef const unsigned char *pn = _ptr(new)
    cdef uint64_t acc = (~hc) & 0xffff
    cdef Py_ssize_t i
    for i in range(0, n, 2):
        acc += (~_be16(po + i)) & 0xffff
        acc += _be16(pn + i)
    return (~_fold_be(acc)) & 0xffff


def dss_checksum(data_seq, subflow_seq, data_len, payload):
    """RFC 8684 §3.3.1: the DSS checksum field value of a mapping: one's-complement sum of
    DSN (64) || subflow seq (32) || data-level length (16) || 0x0000, then the payload."""
    cdef unsigned char hdr[16]
    _put64(hdr, _uint(data_seq, 0xffffffffffffffffULL, "data_seq"))
    _put32(hdr + 8, <uint32_t>_uint(subflow_seq, 0xffffffffULL, "subflow_seq"))
    _put16(hdr + 12, <uint32_t>_uint(data_len, 0xffff, "data_len"))
    hdr[14] = 0
    hdr[15] = 0
    payload = _as_bytes(payload)
    cdef uint64_t acc = _sum_native(hdr, 16) + _sum_native(_ptr(payload), PyBytes_GET_SIZE(payload))
    return (~_fold(acc)) & 0xffff


# --------------------------------------------------------------------------------------------
# rewrite

def rewrite(buf, pkt, seq=-1, ack=-1, window=-1, options=None, flags=-1, full_checksum=False):
    """A new packet with seq/ack/window/flags (-1: unchanged) and the option area (None:
    unchanged) replaced. With options: NOP-padded, data offset, IP length and IPv4 header
    checksum (in full) fixed. The TCP checksum is updated incrementally from the packet's own
    (RFC 1624 eqn. 3), so a wrong one stays wrong by the same error; `full_checksum`:
    computed from the bytes (a segment the caller built). Bytes past the IP length are
    dropped. One allocation."""
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    cdef bint full = full_checksum
    if options is None:
        return _rewrite(buf, pk, seq, ack, window, flags, NULL, 0, False, full)
    options = _as_bytes(options)
    return _rewrite(buf, pk, seq, ack, window, flags, _ptr(options), PyBytes_GET_SIZE(options), True, full)


cdef inline uint32_t _header_sum(const unsigned char *t, Py_ssize_t doff, int version,
                                 uint32_t tcp_len) noexcept nogil:
    """packet.py _header_sum: folded sum (big-endian value) of the TCP header t[0:doff]
    without its checksum field, plus the pseudo-header's TCP length words: all a rewrite
    changes in the checksum's coverage (the payload moves by a multiple of 4 bytes)."""
    cdef uint64_t acc = _fold(_sum_native(t, 16) + _sum_native(t + 18, doff - 18))
    if version == 4:
        acc += tcp_len
    else:
        acc += (tcp_len >> 16) + (tcp_len & 0xffff)
    return _fold_be(acc)


cdef object _rewrite(object buf, Packet pk, object seq, object ack, object window, object flags,
                     const unsigned char *opts, Py_ssize_t olen, bint has_options, bint full):
    """rewrite() on a bytes buf and a twin Packet; the new option area (when has_options) is
    opts[0:olen]; `full`: the TCP checksum from the bytes, not incrementally. Shared by
    rewrite, without_mptcp and add_dss."""
    cdef const unsigned char *p = _ptr(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t ip_hlen = pk.ip_hlen, length = pk.length
    cdef Py_ssize_t optpad, newdoff, newlen, payload_len
    cdef unsigned char *q
    cdef unsigned char *t
    cdef const unsigned char *po
    cdef uint32_t new_seq = 0, new_ack = 0, new_win = 0, new_flags = 0
    cdef bint set_seq = seq != -1, set_ack = ack != -1, set_win = window != -1
    cdef bint set_flags = flags != -1
    cdef uint64_t acc
    cdef uint32_t hc
    if n < length:
        raise WireError("buffer shorter than the packet")
    if set_seq:
        new_seq = <uint32_t>_uint(seq, 0xffffffffULL, "seq")
    if set_ack:
        new_ack = <uint32_t>_uint(ack, 0xffffffffULL, "ack")
    if set_win:
        new_win = <uint32_t>_uint(window, 0xffff, "window")
    if set_flags:
        new_flags = <uint32_t>_uint(flags, 0xff, "flags")
    # A Packet from parse_packet always satisfies this; anything else is not ours to touch
    # (and would make the C code below read out of bounds).
    if (ip_hlen < 20 or pk.doff < 20 or pk.payload_off != ip_hlen + pk.doff
            or pk.payload_off > length or pk.payload_len != length - pk.payload_off):
        raise WireError("Packet does not describe a TCP segment")

    if has_options:
        optpad = (olen + 3) & ~3
        if optpad > MAX_TCP_OPTIONS:
            raise WireError(f"TCP options of {optpad} bytes (> 40)")
        payload_len = pk.payload_len
        newdoff = 20 + optpad
        newlen = ip_hlen + newdoff + payload_len
        if pk.version == 4:
            if newlen > 0xffff:
                raise WireError("IPv4 packet longer than 65535 bytes")
            if ip_hlen > 60 or ip_hlen & 3:
                raise WireError(f"IPv4 IHL {ip_hlen // 4} does not fit")
        elif newlen - 40 > 0xffff:
            raise WireError("IPv6 payload longer than 65535 bytes")
        if full:
            acc = _pseudo_sum(pk, <uint32_t>(newdoff + payload_len))
        out = PyBytes_FromStringAndSize(NULL, newlen)
        q = <unsigned char *>PyBytes_AS_STRING(out)
        memcpy(q, p, ip_hlen + 20)
        t = q + ip_hlen
        memcpy(t + 20, opts, olen)
        memset(t + 20 + olen, TCPOPT_NOP, optpad - olen)
        memcpy(t + newdoff, p + pk.payload_off, payload_len)
        if set_seq:
            _put32(t + 4, new_seq)
        if set_ack:
            _put32(t + 8, new_ack)
        t[12] = <unsigned char>(((newdoff >> 2) << 4) | (t[12] & 0x0f))  # keep reserved/AE bits
        if set_flags:
            t[13] = <unsigned char>new_flags
        if set_win:
            _put16(t + 14, new_win)
        if pk.version == 4:
            _put16(q + 2, <uint32_t>newlen)
            _put16(q + 10, _ip_csum(q, ip_hlen))
        else:
            _put16(q + 4, <uint32_t>(newlen - 40))
        if full:
            _put16(t + 16, _tcp_csum(q, newlen, ip_hlen, newlen, acc))
        else:
            # RFC 1624 eqn. 3 over what changed: header (options included) and TCP length.
            hc = _be16(p + ip_hlen + 16)
            acc = ((~hc) & 0xffff) + ((~_header_sum(p + ip_hlen, pk.doff, pk.version,
                                                    <uint32_t>(pk.doff + payload_len))) & 0xffff)
            acc += _header_sum(t, newdoff, pk.version, <uint32_t>(newdoff + payload_len))
            _put16(t + 16, (~_fold_be(acc)) & 0xffff)
        return out

    # No new options: same layout; each changed field is whole 16-bit words at an even offset
    # of the header, so the checksum is updated incrementally (RFC 1624 eqn. 3). Chaining
    # csum_replace per field, as the reference does, gives the same value as one sum.
    out = PyBytes_FromStringAndSize(<const char *>p, length)
    if not (set_seq or set_ack or set_flags or set_win or full):
        return out
    q = <unsigned char *>PyBytes_AS_STRING(out)
    t = q + ip_hlen
    po = p + ip_hlen
    hc = _be16(po + 16)
    acc = (~hc) & 0xffff
    if set_seq:
        _put32(t + 4, new_seq)
        acc += ((~_be16(po + 4)) & 0xffff) + ((~_be16(po + 6)) & 0xffff)
        acc += _be16(t + 4) + _be16(t + 6)
    if set_ack:
        _put32(t + 8, new_ack)
        acc += ((~_be16(po + 8)) & 0xffff) + ((~_be16(po + 10)) & 0xffff)
        acc += _be16(t + 8) + _be16(t + 10)
    if set_flags:
        t[13] = <unsigned char>new_flags
        acc += ((~_be16(po + 12)) & 0xffff) + _be16(t + 12)
    if set_win:
        _put16(t + 14, new_win)
        acc += ((~_be16(po + 14)) & 0xffff) + _be16(t + 14)
    if full:
        _put16(t + 16, _tcp_csum(q, length, ip_hlen, length,
                                 _pseudo_sum(pk, <uint32_t>(pk.doff + pk.payload_len))))
    else:
        _put16(t + 16, (~_fold_be(acc)) & 0xffff)
    return out


def without_mptcp(buf, pkt, ack=-1, flags=-1):
    """packet.py without_mptcp: rewrite(buf, pkt, ack=ack, flags=flags,
    options=strip_mptcp(buf, pkt.ip_hlen + 20, pkt.payload_off))."""
    cdef unsigned char out[40]
    cdef Py_ssize_t s, e, n
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    n = PyBytes_GET_SIZE(buf)
    s = _clamp(pk.ip_hlen + 20, n)
    e = _clamp(pk.payload_off, n)
    if e - s > 40:  # not a real Packet: the long way
        return rewrite(buf, pk, -1, ack, -1, strip_mptcp(buf, pk.ip_hlen + 20, pk.payload_off), flags)
    return _rewrite(buf, pk, -1, ack, -1, flags, out, _strip_into(_ptr(buf), s, e, out), True, False)


def add_dss(buf, pkt, ack=-1, data_ack=None, ack64=False, data_seq=None, dsn64=False,
            subflow_seq=None, data_len=None, csum=None, data_fin=False):
    """mptcp.py add_dss: the segment's MPTCP options replaced by one DSS with these fields,
    its TCP ack set (-1: unchanged); None when the options do not fit in 40 bytes. No `Dss`
    value is built."""
    cdef unsigned char out[80]
    cdef Py_ssize_t w, d, s, e, n
    buf = _as_bytes(buf)
    cdef Packet pk = _coerce_packet(pkt)
    d = _write_dss(out + 40, data_ack, ack64, data_seq, dsn64, subflow_seq, data_len, csum, data_fin)
    n = PyBytes_GET_SIZE(buf)
    s = _clamp(pk.ip_hlen + 20, n)
    e = _clamp(pk.payload_off, n)
    if e - s > 40:  # not a real Packet: the long way
        tcp = strip_mptcp(buf, pk.ip_hlen + 20, pk.payload_off)
        w = PyBytes_GET_SIZE(tcp)
        if w + d > MAX_TCP_OPTIONS:
            return None
        memcpy(out, _ptr(tcp), w)
    else:
        w = _strip_into(_ptr(buf), s, e, out)
        if w + d > MAX_TCP_OPTIONS:
            return None
    memmove(out + w, out + 40, d)
    w += d
    while w & 3:
        out[w] = TCPOPT_NOP
        w += 1
    return _rewrite(buf, pk, -1, ack, -1, -1, out, w, True, False)


# --------------------------------------------------------------------------------------------
# Imports last, on purpose: importing `middlebox.wire.errors` runs `middlebox/wire/__init__.py`,
# which (compiled mode) takes the TWINNED names from this module. When this module is the
# first one imported (`from middlebox import _cwire`), those names must already exist, so
# every def above is created before these imports run. The names below are looked up as
# module globals at call time.

from middlebox.wire.errors import WireError
from middlebox.wire.packet import _sized as _ref_sized
from middlebox.wire.mptcp import (
    OPTION_COMBINATIONS,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
)


def _load_combinations():
    cdef int st
    for st in range(16):
        _ALLOWED[st] = 0
    for st, allowed in OPTION_COMBINATIONS.items():
        _ALLOWED[st] = 0
        for other in allowed:
            _ALLOWED[st] |= 1u << other


_load_combinations()


_CLASSES[K_DSS] = Dss
_CLASSES[K_MPC] = MpCapable
_CLASSES[K_MPJ_SYN] = MpJoinSyn
_CLASSES[K_MPJ_SYNACK] = MpJoinSynAck
_CLASSES[K_MPJ_ACK] = MpJoinAck
_CLASSES[K_ADD_ADDR] = AddAddr
_CLASSES[K_RM_ADDR] = RemoveAddr
_CLASSES[K_PRIO] = MpPrio
_CLASSES[K_FAIL] = MpFail
_CLASSES[K_FASTCLOSE] = MpFastclose
_CLASSES[K_TCPRST] = MpTcpRst
_load_layouts()


def _fast_layouts():
    """{class name: True when the slot shortcut is in use} (for tests and the benchmark)."""
    return {_CLASSES[k].__name__: bool(_LAYOUT[k].fast) for k in range(K_COUNT)}
