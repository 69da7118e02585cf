# Types for the compiled twin of multipath.py (middlebox._ccore.multipath; setup.py, STYLE.md
# item 9). multipath.py is the spec and runs as it is in pure mode; this file only tells
# Cython the C types where a join's data, the guest's ACKs of it and the guest's data pass
# (bench/bench_core.py, "mp" rows): Path and MpConn as C classes whose fields are Python
# objects as in the spec, the Flow and Packet arguments as the twins' C classes (their
# fields read as struct members), the TCP flag constants as C globals, and those functions
# as cpdef (calls among them are C calls). Integers stay Python objects: the spec's
# arithmetic is unchanged. Functions a test replaces (pick, _into_hole, stop_reset,
# _fin_may_go, new_nonce) and constants a test reads or patches stay Python names (M32 and
# the TCP flags below are not attributes of the compiled module: read them from the wire
# layer or the pure module); a function with a closure (a generator expression) cannot be
# cpdef. multipath.py sets nonecheck: a None where a Flow or Path is expected raises as in
# pure Python (the converter counts it as a CoreBug) instead of reading through NULL.

from middlebox._cwire cimport Packet

from .flow cimport Flow

cdef long long M32
cdef int FIN, SYN, RST, PSH, ACK, ECE, CWR, TCP_HLEN


# Path and MpConn as C classes: their fields (all Python objects, as in the spec) are read
# as struct members where a function's argument is typed with them.

cdef class Path:  # one subflow
    cdef public object index, flow, uplink, state, version, local, lport, remote, rport
    cdef public object local_isn, remote_isn, lnonce, rnonce, backup, addr_id, snd_una, snd_nxt, snd_wnd
    cdef public object rwscale, fin_sent, rcv_nxt, ooo, rcv_fin, srtt, rttvar, rtt_ssn, rtt_at, rate
    cdef public object rate_bytes, rate_at, progress_at, stale_at, dups, tries, timer, tx_bytes, rx_bytes
    cdef public object born, heard_at, suspect_at, sack, sack_recent, rx_rate, rx_mark, sacked, ck_maps
    cdef public object passive, fill_at, acked_at, mss, told_at, cap, tokens, tok_at, app_lim, beyond_hi
    cdef public object wnd_held, wnd_ack, wnd_seq, tw_reset, rtx, rep_hi, rep_at, rep_n, cwnd, ssthresh
    cdef public object recover, smss, adm_end, chal_at, fill_hi, fill_end, lost_una, fill_lo, fill_m, loss_at
    cdef public object sack_hi, sack_at, gap_lo, gap_hi, sack_tot, rtx_at, owe_at, sprobe_at, sprobe_open
    cdef public object alive_at, sent_at, grow_end, grow_left, rep_nxt, inwin, refill_at, refill_n, retry
    cdef public object wnd_doubt, doubt_at, sure_seq, sure_ack, sure_win, reopen_at, doubt_push, doubt_late

cdef class MpConn:  # the connection level of a multipath flow
    cdef public object paths, runs, snd_nxt, data_ack, wnd_edge, last_pick, burst_left, key
    cdef public object guest, gport, server, sport, version, dack_sent, started_at, fwd_end, hole_mark
    cdef public object hole_at, removed, sf1_ack_out, sf1_win_out, sf1_answer, probe_at, probe_on, dack_out
    cdef public object dack_due, plan, plan_at, plan_look, plan_short, sack_told, sack_order, unsure, rm_owed, over_at
    cdef public object cwr_owed, orphan_hi, rtx_bytes, held, counters, fin_due, fin_tries, stranded_at
    cdef public object fin_refused, csum_stuck, gack_out, gwin_out, marks, undo, g_at, undo_hold, da_at
    cdef public object csum_moved, retries, retry_at, retry_n

cpdef object _inject(object data)
cpdef object _dss_ack(object data_ack, object ack64)
cpdef object guest_payload_max(object conv, Flow flow, MpConn mp)
cpdef object _dack_carried(Flow flow)
cpdef object _window_taken(Flow flow, Path p, object seq, object ack)
cpdef object _taken(Path p, object seq, object ack, object wb)
cpdef object _join_dack(Flow flow, Path p, object taken)
cpdef object _ack_on(Flow flow, Path p, object extra=*, object dsack=*)
cpdef object _guest_window(Flow flow, MpConn mp)
cpdef object _to_guest(Flow flow, MpConn mp, object seq, object flags, object payload=*, object now=*)
cpdef object guest_sack(Flow flow, MpConn mp, object limit, object now=*)
cpdef object _sack_news(Flow flow, MpConn mp, object now=*)
cpdef object _guest_ack(Flow flow, MpConn mp, object now=*)
cpdef object dack_now(Flow flow)
cpdef object dack_at(Flow flow, object rel)
cpdef object _ack_info(Flow flow, MpConn mp, Path p, Packet pkt, object dss, double now, object data=*)
cpdef object _sacked(Path p, Packet pkt, object data, object a, double now)
cpdef object _j_segment(object conv, Flow flow, Path p, Packet pkt, object data, object dss, object now)
cpdef list _download(object conv, Flow flow, MpConn mp, Path p, Packet pkt, object data, object dss)
cpdef object _dup_range(Path p, object a, object b)
cpdef object _ooo_add(Path p, object a, object b)
cpdef object forwarded(MpConn mp, object end, double now)
cpdef object send(object conv, Flow flow, Packet pkt, object data, object rel, object data_ack, object new_ack, object raw)
cpdef object join_in(object conv, Path p, Packet pkt, object data, double now)
cpdef object _event(object conv, Flow flow, Path p, object inp, object now, object pkt=*, object data=*, object ctx=*)
cpdef object _classify(Flow flow, Path p, Packet pkt, object data)
cpdef object guest_seg(object conv, Flow flow, object version)
cpdef object _seg_max(Path p, object seg_max)
cpdef object _sf1_out(Flow flow, MpConn mp, object seq, object ack, object window)
cpdef object _sf1_dack(Flow flow, MpConn mp, object seq, object ack, object window, object data_ack)
cpdef object _sf1_dack_cap(Flow flow, MpConn mp, object data_ack, object wb)
cpdef object _sf1_dup(Flow flow, MpConn mp, object sf1_ack, object window)
cpdef object _rtt_sample(Path p, double r)
cpdef object _holder(MpConn mp)
cpdef object _probe_answer(MpConn mp, object idx, double now)
cpdef object _release(MpConn mp, Path p, object upto)
cpdef object _repairing(Path p, object ss)
cpdef object _data_on(Flow flow, Path p, object opt, object ss, object payload, object psh=*)
cpdef object _best_live(MpConn mp)
