# Types for the compiled twin of flow.py (middlebox._ccore.flow; setup.py, STYLE.md item 9).
# flow.py is the spec and runs as it is in pure mode; this file only tells Cython the C types
# of its fields and helpers. Sequence numbers are 32-bit values and relative positions
# 64-bit ones, so every field fits a C long long; DSNs and IDSNs are unsigned 64-bit, where
# C's wrap-around is the spec's `& M64`.

cimport cython

cdef long long M32, HALF32
cdef int CONFLICT, FULL, RECORDED, RECORDED_FORGOT
cdef unsigned long long M64

cpdef bint seq_before(long long a, long long b) noexcept
cpdef long long _unwrap(long long rel32, long long ref64) noexcept


cdef class Subflow:
    cdef public long long local_isn, remote_isn
    cdef public long long rcv_base, rcv_max, rcv_edge, off
    cdef public bint shifted
    cdef public list ranges
    cdef public long long rmap_r, rmap_len, rmap_d
    cdef public bint rmap_valid
    cdef public long long rmap_ssn, rmap_dlen, rmap_csum
    cdef public bint rmap_fin
    cdef public object ck_maps
    cdef public bint arrival

    cpdef long long rel(self, long long seq)
    @cython.locals(base="long long", off="long long", lo="long long", hi="long long",
                   s="long long", e="long long", o="long long", i=int, keep=list, ranges=list,
                   last=list, rg=list)
    cpdef int record(self, long long r, long long n, long long d) except -2
    @cython.locals(end="long long", rg=list)
    cpdef long long rcv_end(self)
    @cython.locals(rg=list)
    cpdef bint received_any(self, long long lo, long long hi) except -1
    @cython.locals(s_ack="long long", s="long long", e="long long", ds="long long", done=int,
                   ranges=list, rg=list)
    cpdef long long subflow_ack(self, long long d_ack) except? -2
    @cython.locals(i=int, ds="long long", rg=list, ranges=list)
    cpdef long long sack_block(self, long long dl, long long dr) except? -2


cdef class Flow:
    cdef public object state
    cdef public double last
    cdef public int cls
    cdef public int version
    cdef public bint checksum
    cdef public object local_key, remote_key
    cdef public unsigned long long local_idsn, remote_idsn
    cdef public long long guest_isn, syn_len, syn_sent_len, server_isn, snd_rel, rcv_rel
    cdef public bint ack64, local_fin
    cdef public long long local_fin_seq
    cdef public bint local_fin_acked, fin_ack_delivered, guest_passive
    cdef public long long guest_window, guest_wscale
    cdef public bint remote_fin
    cdef public long long remote_fin_seq
    cdef public bint remote_fin_acked, fail_sent, infinite_tx, fastclosed
    cdef public tuple subflows
    cdef public Subflow sf
    cdef public object mp
    cdef public double born
    cdef public long long bytes_out, bytes_in, snd_end, data_acked
    cdef public long long server_wscale, server_window
    cdef public bint guest_wscale_seen, no_join, sack_ok, no_initial_join, guest_ts, sack_added
    cdef public int inbound
    cdef public object gso_maps, peer_addrs, announced
    cdef public int sf1_uplink
    cdef public long long guest_mss

    cpdef long long guest_mss_at(self, long long lim)
    cpdef long long guest_seg(self, long long lim)
    cpdef long long syn_isn(self)
    cpdef void guest_fin(self, long long fin_seq)
    @cython.locals(i=int, lo=int, hi=int, mid=int, s="long long", e="long long", end="long long")
    cpdef int gso_lookup(self, long long rel, long long n) except? -3
    @cython.locals(n=int, k=int, kept=bint, acked="long long")
    cpdef bint gso_record(self, long long rel, long long dlen, long long csum) except -1
    @cython.locals(rel="long long")
    cpdef long long guest_rel(self, long long seq)
    @cython.locals(rel="long long")
    cpdef unsigned long long dsn_of_guest_seq(self, long long seq)
    cpdef long long guest_seq_of_local_dsn(self, unsigned long long dsn)
    @cython.locals(rel="long long")
    cpdef unsigned long long data_ack_of_guest_ack(self, long long ack)
    @cython.locals(rel="long long")
    cpdef long long remote_rel(self, unsigned long long dsn, bint dsn64)
    cpdef long long guest_seq_of_remote_dsn(self, unsigned long long dsn)
