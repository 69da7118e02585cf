# C declarations of the wire twin (built from cext/_wire.pyx as middlebox._cwire: Cython
# finds this file by the module name), shared with the compiled core, which cimports Packet.

cimport cython
from libc.stdint cimport uint32_t


@cython.final
cdef class Packet:
    cdef readonly int version
    cdef readonly bytes src
    cdef readonly bytes dst
    cdef readonly int ip_hlen
    cdef readonly int ttl
    cdef readonly int sport
    cdef readonly int dport
    cdef readonly uint32_t seq
    cdef readonly uint32_t ack
    cdef readonly int flags
    cdef readonly int window
    cdef readonly int doff
    cdef readonly int payload_off
    cdef readonly int payload_len
    cdef readonly int length

    cdef tuple _fields(self)
