# Types for the compiled twin of converter.py (middlebox._ccore.converter; setup.py,
# STYLE.md item 9). converter.py is the spec and runs as it is in pure mode; this file only
# tells Cython the C types: Converter as a cdef class, the per-packet methods as C methods
# with a typed Flow, module constants as C globals.

cimport cython

from middlebox._cwire cimport Packet  # the wire twin's parsed header: C struct reads

from .flow cimport Flow, Subflow, seq_before

cdef long long M32
cdef unsigned long long M64
cdef int FIN, SYN, RST, ACK, TCP_HLEN
cdef object OUT, NEW, MPC_PENDING, FALLBACK, FALLBACK_CLOSING
cdef object OUT_SYN, OUT_SYN_RTX, OUT_SYN_MPTCP, OUT_ACK, OUT_DATA, OUT_FIN, OUT_RST
cdef object OUT_CLOSE_DONE, OUT_ODD
cdef object IN_SYNACK_MPC, IN_SYNACK_PLAIN, IN_DSS, IN_DSS_NOACK, IN_DATA_FIN, IN_INFINITE
cdef object IN_NODSS_DATA, IN_NODSS, IN_RST, IN_FASTCLOSE, IN_CLOSE_DONE, IN_ODD, IN_STALE_ACK
cdef object IN_MP_FAIL, IN_CSUM_BAD, OUT_INFINITE, IN_FIN
cdef object DSSTX, DataAckTX, DSSRX, DataAckMismatch
cdef object _new_action, _set_rewrite_data

cdef object _rewrite(object data)
cdef bint _covers(long long map_ssn, long long map_len, long long rel, long long plen) noexcept


cdef class Converter:
    cdef public object config
    cdef public object flows
    cdef public dict counters
    cdef tuple _dispatch
    cdef dict _mss_limit
    cdef dict _timeout
    cdef double _min_timeout
    cdef set _logged

    @cython.locals(pkt=Packet, flags=int, flow=Flow)
    cpdef list _handle(self, object data, object direction, double now)
    cdef Flow _new_flow(self, tuple key, double now)
    @cython.locals(f=int)
    cpdef object _classify_out(self, Flow flow, Packet pkt, object data)
    @cython.locals(f=int)
    cpdef tuple _classify_in(self, Flow flow, Packet pkt, object data)

    cpdef list _h_pass_out(self, Flow flow, Packet pkt, object data, object ctx)
    cpdef list _h_pass_in(self, Flow flow, Packet pkt, object data, object ctx)
    @cython.locals(sf=Subflow, plen=long, fin=int, ack="long long", new_ack="long long",
                   counters=dict, data_ack="unsigned long long", rel="long long",
                   dsn="unsigned long long", data_len=long, subflow_seq="long long")
    cpdef list _h_out(self, Flow flow, Packet pkt, object data, object ctx)
    cdef list _with_option(self, Packet pkt, object data, object opt, long long new_ack)
    @cython.locals(sf=Subflow, f=int, plen=long, counters=dict, end="long long", rel="long long",
                   new_ack="long long", new_flags=int, guest_closed=bint, guest_ack="long long",
                   fin_len=int, fin_seq="long long", ssn="long long", dlen="long long",
                   data_seq=object, data_fin=bint, dsn64=bint)
    cpdef list _h_in_(self, Flow flow, Packet pkt, object data, object dss)
    cdef object _stripped(self, Packet pkt, object data)
