# Types for the compiled twin of multipath.py (middlebox._ccore.multipath; setup.py, STYLE.md
# item 9). multipath.py is the spec and runs as it is in pure mode; this file only tells
# Cython the C types where a join's data and the guest's ACKs of it pass (bench/bench_core.py,
# "mp" rows): the Flow and Packet arguments as the twins' C classes (their fields read as C
# struct members), the TCP flag constants as C globals, and these functions as cpdef (calls
# among them are C calls). Integers stay Python objects: the spec's arithmetic is unchanged.
# Functions a test replaces (pick, _into_hole, stop_reset, ...) and constants a test reads or
# patches stay Python names. multipath.py sets nonecheck: a None where a Flow is expected
# raises as in pure Python (the converter counts it as a CoreBug) instead of crashing.

from middlebox._cwire cimport Packet

from .flow cimport Flow

cdef long long M32
cdef int FIN, SYN, RST, PSH, ACK, ECE, CWR, TCP_HLEN

cpdef object _inject(object data)
cpdef object _dss_ack(object data_ack, object ack64)
cpdef object guest_payload_max(object conv, Flow flow, object mp)
cpdef object _dack_carried(Flow flow)
cpdef object _window_taken(Flow flow, object p, object seq, object ack)
cpdef object _taken(object p, object seq, object ack, object wb)
cpdef object _join_dack(Flow flow, object p, object taken)
cpdef object _ack_on(Flow flow, object p, object extra=*, object dsack=*)
cpdef object _guest_window(Flow flow, object mp)
cpdef object _to_guest(Flow flow, object mp, object seq, object flags, object payload=*, object now=*)
cpdef object guest_sack(Flow flow, object mp, object limit, object now=*)
cpdef object _sack_news(Flow flow, object mp, object now=*)
cpdef object _guest_ack(Flow flow, object mp, object now=*)
cpdef object dack_now(Flow flow)
cpdef object dack_at(Flow flow, object rel)
cpdef object _ack_info(Flow flow, object mp, object p, Packet pkt, object dss, double now, object data=*)
cpdef object _sacked(object p, Packet pkt, object data, object a, double now)
cpdef object _j_segment(object conv, Flow flow, object p, Packet pkt, object data, object dss, object now)
cpdef list _download(object conv, Flow flow, object mp, object p, Packet pkt, object data, object dss)
cpdef object _dup_range(object p, object a, object b)
cpdef object _ooo_add(object p, object a, object b)
cpdef object forwarded(object mp, object end, double now)
cpdef object send(object conv, Flow flow, Packet pkt, object data, object rel, object data_ack, object new_ack, object raw)
