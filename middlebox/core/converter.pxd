# Types for the compiled twin of converter.py (middlebox._ccore.converter; setup.py,
# STYLE.md item 9). converter.py is the spec and runs as it is in pure mode; this file only
# tells Cython the C types: Converter as a cdef class, the per-packet methods as C methods
# with a typed Flow, module constants as C globals.

cimport cython

from middlebox._cwire cimport Packet  # the wire twin's parsed header: C struct reads

from .flow cimport Flow, Subflow, seq_before, _unwrap

cdef long long MAX_JUMP

cdef long long M32
cdef unsigned long long M64
cdef int FIN, SYN, RST, PSH, ACK, ECE, CWR, TCP_HLEN
cdef object OUT, NEW, MPC_PENDING, FALLBACK, FALLBACK_CLOSING, SYN_SENT, GUEST_MPTCP
cdef object IN_SYN, IN_RST_CHALLENGE, IN_RST_OUTSIDE, IN_OUTSIDE, IN_CSUM_MISSING
cdef object IN_CSUM_BAD_LATE, IN_UNRECONCILABLE, IN_OLD, IN_BEYOND, GuestMPTCPPacket
cdef int OLD, BEYOND
cdef tuple CLASS_OF_STATE, EVICTED, IS_MPTCP
cdef long long WND_SLACK
cdef object OUT_SYN, OUT_SYN_RTX, OUT_SYN_MPTCP, OUT_ACK, OUT_DATA, OUT_FIN, OUT_RST
cdef object OUT_CLOSE_DONE, OUT_ODD
cdef object IN_SYNACK_MPC, IN_SYNACK_PLAIN, IN_DSS, IN_DSS_NOACK, IN_DATA_FIN, IN_INFINITE
cdef object IN_NODSS_DATA, IN_NODSS, IN_RST, IN_FASTCLOSE, IN_CLOSE_DONE, IN_ODD, IN_STALE_ACK
cdef object IN_MP_FAIL, IN_CSUM_BAD, OUT_INFINITE, IN_FIN
cdef object DSSTX, DataAckTX, DSSRX, DataAckMismatch
cdef object _new_action, _set_rewrite_data, IN_DIR, LOCAL
cdef object ESTABLISHED, MP, AN, OR

cdef object _rewrite(object data)


cdef class Converter:
    cdef public object config
    cdef public object flows
    cdef public dict counters
    cdef tuple _dispatch
    cdef tuple _lru
    cdef public dict _mss_limit
    cdef public dict joins, mp_flows, uplink_up, tokens, announcing
    cdef public list repair_held
    cdef public list routes
    cdef public bint _mp_on, _inbound
    cdef public object _pm_opt
    cdef public object _mptcp_servers  # server addresses whose SYN/ACK had MP_CAPABLE (LRU)
    cdef dict _timeout
    cdef tuple _min_timeout
    cdef set _logged
    cdef public object orphans  # orphans.Orphans
    cdef public bint stopping, recording
    cdef public list fresh
    cdef list _evicted  # resets of an evicted converting flow, sent with the packet that evicted it

    @cython.locals(pkt=Packet, flags=int, flow=Flow, c=int)
    cpdef list _handle(self, object data, object direction, double now)
    cdef Flow _new_flow(self, tuple key, double now, int classes=*)
    @cython.locals(f=int)
    cpdef object _classify_out(self, Flow flow, Packet pkt, object data)
    @cython.locals(f=int, judged=bint, sf=Subflow, base="long long", r="long long", n="long long",
                   d="long long")
    cpdef tuple _classify_in(self, Flow flow, Packet pkt, object data)

    cpdef list _h_pass_out(self, Flow flow, Packet pkt, object data, object ctx)
    cpdef list _h_pass_in(self, Flow flow, Packet pkt, object data, object ctx)
    cpdef list _h_closed_data(self, Flow flow, Packet pkt, object data, object ctx)
    @cython.locals(sf=Subflow, plen=long, fin=int, ack="long long", new_ack="long long",
                   counters=dict, data_ack="unsigned long long", rel="long long",
                   dsn="unsigned long long", data_len=long, subflow_seq="long long",
                   s_ack="long long", edge="long long", sub_ack="long long", hit=int,
                   m_s="long long", ck="long long", dfin=bint, seg_max=int)
    cpdef list _h_out(self, Flow flow, Packet pkt, object data, object ctx)
    cdef object _set_state(self, object key, Flow flow, object state)
    cdef list _with_option(self, Packet pkt, object data, object opt, long long new_ack, object raw=*)
    cpdef list _h_in_(self, Flow flow, Packet pkt, object data, object dss)
    @cython.locals(sf=Subflow, f=int, plen=long, counters=dict, r="long long", new_ack="long long",
                   new_flags=int, guest_closed=bint, data_fin=bint, fin_d="long long", own_map=bint,
                   guest_ack="long long", d="long long", dlen="long long", fin_len=int,
                   m_r="long long", m_len="long long", m_d="long long", sf_m_r="long long",
                   sf_m_len="long long", sf_m_d="long long", d0="long long", guest_seq="long long",
                   gend="long long", fin_seq="long long", sub_ack="long long", rec=int,
                   consumed=bint)
    cdef list _in_segment(self, Flow flow, Packet pkt, object data, object dss, int old)
    cdef object _to_guest(self, Packet pkt, object data, long long guest_seq, long long new_ack, int new_flags, object options=*, long long window=*)
    @cython.locals(plen=long, end="long long")
    cdef object _csum_step(self, Subflow sf, object data, Packet pkt, long long r, long long m_r,
                           long long m_len)
    cdef object _stripped(self, Packet pkt, object data)
