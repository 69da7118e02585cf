"""Per-flow state and the sequence-space mapping (ARCHITECTURE.md, "the key idea").

The guest's sequence space *is* the data sequence space:

* guest seq `S` -> DSN `IDSN_local + (S - ISN_guest)` (so the first data byte, ISN+1, is
  IDSN+1: the SYN consumes one DSN, RFC 8684 §3.3);
* server DSN `D` -> guest seq `ISN_server + (D - IDSN_remote)`, and the guest's ack `A` ->
  DATA_ACK `IDSN_remote + (A - ISN_server)`.

Guest -> server, subflow 1 keeps the guest's own sequence numbers: the converter is the MPTCP
sender there and maps subflow seq == data seq. Server -> guest it is the receiver and the
server chooses the mappings: Linux's MPTCP zero-window probe (1 byte of already acknowledged
data, DSN = snd_una - 1, at a *new* subflow seq) and its MPTCP-level retransmissions on the same
subflow move the subflow's sequence space away from the data's. So every server segment is
placed by its mapping, never by its subflow seq, and `Subflow.ranges` remembers, for the subflow
bytes received and not yet acknowledged, which data they carried:

    ranges = [[r_start, r_end, d_start], ...]   (64-bit relative subflow seq -> data seq)

ordered by `r_start`, contiguous pieces with the same offset merged, at most `MAX_RANGES`. The
guest's cumulative ack (data level) becomes the subflow ack by walking them (`subflow_ack`),
and SACK blocks translate through them too. In the usual case there is one range whose offset
is 0 and the walk is one step.

32-bit numbers are widened to 64 bits (`_unwrap`) against a reference that only acceptable
segments move: the highest guest seq inside the window for guest data, the guest's ack for
server DSNs, the subflow ack for server subflow seqs.

Everything is bounded: a flow holds a fixed set of integers and at most MAX_RANGES ranges,
never a buffer. Keys never appear in a repr.

Compiled twin: setup.py also builds this file as `middlebox._ccore.flow` with the C types of
flow.pxd (cdef classes with typed fields, C helpers); this source stays the spec.
"""

from __future__ import annotations

from array import array

from middlebox.core.table import State
from middlebox.wire import dss_checksum, encode_tcp_options, ones_sum, parse_options

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
HALF32 = 0x80000000
MAX_RANGES = 16  # subflow ranges with distinct offsets awaiting the guest's ack (per subflow)
MAX_GSO_MAPS = 128  # super-packet mappings a single-path flow remembers (16 bytes each, lazily)
MAX_CK_MAPS = 16  # checksummed mappings summed at once per subflow, out of order (ck_step)
MAX_CK_RUNS = 8  # runs of bytes summed within one of them
MAX_JUMP = 0x40000000  # 2^30: how far a 32-bit number may lie from its reference
CONFLICT, FULL, RECORDED, RECORDED_FORGOT = -1, 0, 1, 2  # Subflow.record's answers


def seq_before(a: int, b: int) -> bool:
    """a < b in 32-bit sequence arithmetic (RFC 9293 §3.4)."""
    return ((a - b) & M32) >= HALF32


def _unwrap(rel32: int, ref64: int) -> int:
    """The 64-bit value nearest to `ref64` whose low 32 bits are `rel32` (negative when that
    lies before 0: the caller refuses it)."""
    d = (rel32 - ref64) & M32
    if d >= HALF32:
        d -= 1 << 32
    return ref64 + d


class Subflow:
    """One TCP subflow of a flow. Subflow 1 is the guest's own connection.

    Receive side (server -> guest), all 64-bit and relative to `remote_isn` (the SYN is 0):
    `rcv_base` is the subflow ack we have passed on (the guest's ack, translated), `rcv_max`
    the end of what the server sent (data and FIN), `rcv_edge` the right edge of the window
    the guest offered, `off` = subflow seq - data seq of the newest data, `rmap_*` the last
    mapping the server announced, `ranges` the map described in the module docstring, and
    `ck_maps` the running DSS checksums of mappings that span several segments."""

    __slots__ = (
        "local_isn", "remote_isn",
        "rcv_base", "rcv_max", "rcv_edge", "off", "shifted", "ranges",
        "rmap_r", "rmap_len", "rmap_d", "rmap_valid",
        "rmap_ssn", "rmap_dlen", "rmap_csum", "rmap_fin",
        "ck_maps", "arrival",
    )

    def __init__(self, local_isn: int) -> None:
        self.local_isn = local_isn  # ISN of our side (subflow 1: the guest's)
        self.remote_isn = 0  # the server's ISN on this subflow
        self.rcv_base = 1
        self.rcv_max = 1
        self.rcv_edge = 1 + 65535
        self.off = 0
        self.shifted = False  # a range whose offset is not 0 was ever recorded
        self.ranges = []
        self.rmap_r = 0
        self.rmap_len = 0
        self.rmap_d = 0
        self.rmap_valid = False
        # ... as its DSS said it (subflow seq, data length, DATA_FIN, checksum: -1 none), to
        # judge the segment without a mapping of its own that completes it (_csum_late_bad)
        self.rmap_ssn = 0
        self.rmap_dlen = 0
        self.rmap_csum = -1
        self.rmap_fin = False
        # DSS checksums: the mappings that span segments being summed, in any order, each
        # [start, length, sum, runs summed] (converter._csum_step; None until the first)
        self.ck_maps = None
        self.arrival = False  # multipath: acknowledged on arrival (see record)

    def rel(self, seq: int) -> int:
        """The server's subflow seq `seq`, relative to its ISN, widened against rcv_base."""
        return _unwrap((seq - self.remote_isn) & M32, self.rcv_base)

    def record(self, r: int, n: int, d: int) -> int:
        """Remember that subflow bytes [r, r+n) carried data [d, d+n). RECORDED, or
        RECORDED_FORGOT when the map was full and the range farthest from the subflow ack was
        forgotten to make room (those subflow bytes go unacknowledged until the server sends
        them again: a hole before them can always fill, so the flow never stalls on a full
        map); CONFLICT when another mapping is known for the same subflow bytes, FULL when
        the map is full of ranges before this one: the segment must then not reach the guest
        (the server retransmits it).

        Once the flow is multipath (`arrival`), subflow 1 is acknowledged on arrival as the
        extra subflows are (issue 6's decision): the ranges then only hold subflow bytes
        received beyond a subflow-level hole, and data offsets no longer matter. Otherwise,
        with the other subflows' data interleaved, every burst on subflow 1 would be a range
        of its own until the guest acks it, and a full map would refuse, for good, the
        server's reinjection on subflow 1 of a hole that a dead subflow left."""
        base = self.rcv_base
        if r + n <= base:
            return RECORDED  # all acknowledged already (a subflow-level retransmission)
        if r < base:
            d += base - r
            n -= base - r
            r = base
        ranges = self.ranges
        if self.arrival:
            d = r  # intervals of subflow bytes only
        off = r - d
        if off != 0:
            self.shifted = True
        if ranges:
            last = ranges[-1]
            if last[1] == r and last[0] - last[2] == off:  # the usual case: in order
                last[1] = r + n
                return RECORDED
        lo, hi = r, r + n
        keep = []
        for rg in ranges:
            s, e = rg[0], rg[1]
            o = s - rg[2]
            if e < lo or s > hi or (o != off and (e == lo or s == hi)):
                keep.append(rg)
                continue
            if o != off:
                return CONFLICT
            if s < lo:
                lo = s
            if e > hi:
                hi = e
        result = RECORDED
        if len(keep) >= MAX_RANGES:
            if keep[-1][0] < lo:
                return FULL
            keep.pop()
            result = RECORDED_FORGOT
        i = len(keep)
        while i > 0 and keep[i - 1][0] > lo:
            i -= 1
        keep.insert(i, [lo, hi, lo - off])
        self.ranges = keep
        return result

    def rcv_end(self) -> int:
        """The end of the subflow bytes received without a hole (after rcv_base)."""
        end = self.rcv_base
        for rg in self.ranges:
            if rg[0] > end:
                break
            if rg[1] > end:
                end = rg[1]
        return end

    def received_any(self, lo: int, hi: int) -> bool:
        """Did any of the subflow bytes [lo, hi) come before (below rcv_base, or in a range)?"""
        if lo < self.rcv_base:
            return True
        for rg in self.ranges:
            if rg[0] < hi and rg[1] > lo:
                return True
        return False

    def subflow_ack(self, d_ack: int) -> int:
        """The subflow ack (relative) for the guest's data-level ack `d_ack` (relative): the
        end of the longest run of received subflow bytes whose data the guest has. Moves
        `rcv_base` and forgets the ranges it passed. Once `arrival`: the end of the subflow
        bytes received without a hole, whatever the guest has."""
        s_ack = self.rcv_base
        ranges = self.ranges
        done = 0
        for rg in ranges:
            s, e, ds = rg[0], rg[1], rg[2]
            if s > s_ack:
                break
            if self.arrival or ds + (e - s) <= d_ack:
                if e > s_ack:
                    s_ack = e
                done += 1
                continue
            if ds < d_ack and s + (d_ack - ds) > s_ack:
                s_ack = s + (d_ack - ds)
            break
        if done:
            del ranges[:done]
        self.rcv_base = s_ack
        return s_ack

    def sack_block(self, dl: int, dr: int) -> int:
        """The relative subflow seq where data [dl, dr) sits in one received range (the
        newest such range), or -1."""
        ranges = self.ranges
        i = len(ranges)
        while i > 0:
            i -= 1
            rg = ranges[i]
            ds = rg[2]
            if ds <= dl and dr <= ds + (rg[1] - rg[0]):
                return rg[0] + (dl - ds)
        return -1


class Flow:
    """One guest connection: handshake facts, mapping references and FIN bookkeeping."""

    __slots__ = (
        "state",
        "last",  # `now` of the last packet
        "cls",  # eviction class (Converter._class_of), the flow's place in the table's LRUs
        "version",
        "checksum",  # DSS checksums negotiated (either side's A bit)
        "local_key",
        "remote_key",
        "local_idsn",
        "remote_idsn",
        "guest_isn",  # the guest's ISN, plus Fast Open SYN data the server took (syn_len)
        "syn_len",
        "syn_sent_len",  # payload of the guest's SYN (Fast Open data a SYN/ACK may ack)
        "server_isn",
        "snd_rel",  # highest acceptable guest seq seen, relative to guest_isn, 64-bit
        "rcv_rel",  # highest guest ack seen, relative to server_isn, 64-bit
        "ack64",  # send 64-bit DATA_ACKs (the server sent a 64-bit DSN)
        "local_fin",  # guest FIN seen; its seq in guest space
        "local_fin_seq",
        "local_fin_acked",
        "fin_ack_delivered",  # the guest got a packet acking its FIN
        "guest_passive",  # the server's DATA_FIN came before the guest's FIN
        "guest_window",  # the guest's last raw window field (for ACKs we inject)
        "guest_wscale",  # the guest's window scale (0 unless both SYNs had one)
        "remote_fin",  # server DATA_FIN seen; its position in guest space
        "remote_fin_seq",
        "remote_fin_acked",
        "fail_sent",  # we sent MP_FAIL (server checksum failed), waiting for its infinite mapping
        "infinite_tx",  # the server sent MP_FAIL first: our next guest data has an infinite mapping
        "fastclosed",  # the guest's RST ended the MPTCP connection: late data dropped, RSTs fast-close
        "subflows",
        "sf",  # subflows[0], the guest's own connection
        # multipath (issue 6, multipath.py)
        "mp",  # multipath.MpConn once the flow opened extra subflows, else None
        "born",  # `now` of the guest's SYN
        "bytes_out",  # guest payload bytes converted (multipath flows: sent on)
        "bytes_in",  # server payload bytes sent on to the guest (multipath: on extra subflows)
        "snd_end",  # end of the highest guest data seen, relative to guest_isn
        "data_acked",  # the server's highest DATA_ACK, relative to guest_isn
        "server_wscale",  # the server's window scale on subflow 1 (0: none)
        "server_window",  # the server's last raw window field on subflow 1
        "guest_wscale_seen",  # the guest's SYN offered window scaling (joins offer it too)
        "no_join",  # joins tried (or refused by policy): never again for this connection
        "sack_ok",  # SACK on subflow 1: the guest's SYN offered it and the server's SYN/ACK agreed
        "guest_ts",  # both SYNs carried timestamps: the guest's payload is 12 bytes below its MSS
        "guest_mss",  # the MSS the guest's SYN (inbound: its SYN/ACK) announced, as it was
        # (at least 88, Linux's TCP_MIN_MSS); 0: none (the MSS limit holds). What reaches the
        # guest must fit it, whichever subflow the bytes came by: a guest MTU below the
        # uplinks' dropped join segments sized for the uplink at the guest's link
        "sack_added",  # SACK on subflow 1 though the guest has none: we offered it in its SYN
        # (multipath: acked on arrival, the blocks are ours) and the server agreed
        "no_initial_join",  # the server's MP_CAPABLE C bit: no joins to its initial address
        "peer_addrs",  # None, or the server's announced addresses (ADD_ADDR, HMAC checked):
        # [(addr id, address bytes, port or None)], at most multipath.MAX_PEER_ADDRS
        "sf1_uplink",  # id of the uplink subflow 1 leaves by (0: unknown)
        "inbound",  # 0: the guest opened the connection; issue 9, the peer did: 1 its SYN
        # seen, 2 the guest's SYN/ACK seen too (window scale and SACK settled), 3 a SYN/ACK of
        # the guest left plain (another ISN, or acking another SYN): the next ACK falls back
        "announced",  # inbound (issue 9): None until the uplink addresses are announced, then
        # a list of announce.Announced (one per uplink address offered to the peer)
        "gso_maps",  # None, or array('q'): per super-packet mapping sent, its start and
        # length | (DSS checksum | 0x10000 with the DATA_FIN) << 17 (Flow.gso_record)
    )

    def __init__(self, now: float, version: int) -> None:
        self.last = now
        self.cls = -1
        self.reset(version)

    def reset(self, version: int) -> None:
        """Forget everything but the activity time: a new connection on this 4-tuple."""
        self.state = State.NEW
        self.version = version
        self.checksum = False
        self.local_key = None
        self.remote_key = None
        self.local_idsn = 0
        self.remote_idsn = 0
        self.guest_isn = 0
        self.syn_len = 0
        self.syn_sent_len = 0
        self.server_isn = 0
        self.snd_rel = 1
        self.rcv_rel = 1
        self.ack64 = False
        self.local_fin = False
        self.local_fin_seq = 0
        self.local_fin_acked = False
        self.fin_ack_delivered = False
        self.guest_passive = False
        self.guest_window = 0
        self.guest_wscale = 0
        self.remote_fin = False
        self.remote_fin_seq = 0
        self.remote_fin_acked = False
        self.fail_sent = False
        self.infinite_tx = False
        self.fastclosed = False
        self.sf = Subflow(0)
        self.subflows = (self.sf,)
        self.mp = None
        self.born = self.last
        self.bytes_out = 0
        self.bytes_in = 0
        self.snd_end = 1
        self.data_acked = 1
        self.server_wscale = 0
        self.server_window = 0
        self.guest_wscale_seen = False
        self.no_join = False
        self.sack_ok = False
        self.guest_ts = True  # (until a handshake says otherwise: the smaller segment limit)
        self.guest_mss = 0
        self.sack_added = False
        self.no_initial_join = False
        self.peer_addrs = None
        self.sf1_uplink = 0
        self.gso_maps = None
        self.inbound = 0
        self.announced = None

    def __repr__(self) -> str:  # never the keys
        return f"<Flow {self.state.name} v{self.version} csum={self.checksum} last={self.last:.1f}>"

    def guest_mss_at(self, lim: int) -> int:
        """The MSS we pass on for the guest where the MSS limit is `lim`: the limit, or the
        guest's own when smaller (what the server sends on a join must reach it whole)."""
        return self.guest_mss if 0 < self.guest_mss < lim else lim

    def guest_seg(self, lim: int) -> int:
        """The guest's largest segment payload where the MSS limit is `lim`: guest_mss_at
        less its timestamps (12 bytes) when the handshake had them; more is a super-packet.
        A guest without them (Windows' default) sends 12 bytes more: taken for super-packets,
        its segments were cut in two (with DSS checksums, a resend cut otherwise than its
        original failed the server's sum: the connection was reset)."""
        return self.guest_mss_at(lim) - (12 if self.guest_ts else 0)

    def syn_isn(self) -> int:
        """The seq of the guest's SYN (guest_isn counts Fast Open SYN data too)."""
        return (self.guest_isn - self.syn_len) & M32

    # -- guest -> server: data level -------------------------------------------------------

    def guest_rel(self, seq: int) -> int:
        """The guest seq `seq` relative to the guest's ISN, 64-bit, or -1 when it is not
        acceptable: before the ISN, or more than 2^30 ahead of the highest acceptable one (an
        old retransmission or a forged segment must not move the widening base)."""
        rel = _unwrap((seq - self.guest_isn) & M32, self.snd_rel)
        if rel < 0 or rel > self.snd_rel + MAX_JUMP:
            return -1
        if rel > self.snd_rel:
            self.snd_rel = rel
        return rel

    def dsn_of_guest_seq(self, seq: int) -> int:
        """64-bit DSN of the guest byte at `seq` (RFC 8684 §3.3; ARCHITECTURE.md)."""
        rel = _unwrap((seq - self.guest_isn) & M32, self.snd_rel)
        return (self.local_idsn + rel) & M64

    def guest_seq_of_local_dsn(self, dsn: int) -> int:
        """Guest seq of our DSN (for a DATA_ACK from the server); 32-bit DSNs work too."""
        return (self.guest_isn + dsn - self.local_idsn) & M32

    def guest_fin(self, fin_seq: int) -> None:
        """The guest's FIN at guest seq `fin_seq` (the first one counts): a guest that had the
        server's FIN when it closed goes to LAST_ACK (`guest_passive`)."""
        if not self.local_fin:
            self.guest_passive = self.remote_fin_acked
            self.local_fin = True
            self.local_fin_seq = fin_seq

    # -- guest -> server: super-packet mappings (single path) --------------------------------
    #
    # A GSO super-packet goes out in place with one mapping that the kernel copies onto every
    # wire segment (FASTPATH.md). When one of those segments is lost, the server holds part
    # of that mapping, and the guest's retransmission of the lost piece must carry the same
    # mapping exactly: Linux counts DSSNotMatching and falls back (or resets) when a segment
    # wholly inside a partly received mapping brings another. So a single-path flow remembers
    # the mappings of the super-packets it sent until the server data-acks them: at most
    # MAX_GSO_MAPS, relative guest seq start and data-level length (DATA_FIN included), in a
    # flat array created on the first super-packet (flows on NetfilterQueue never get one).

    def gso_lookup(self, rel: int, n: int) -> int:
        """Where guest bytes [rel, rel+n) lie among the remembered super-packet mappings: the
        entry index of the one holding them whole, -1 when none overlaps them, -2 when they
        overlap one or more without lying in one (the caller cuts them). Entries are ordered
        and disjoint: a binary search for the last one starting at or before `rel`."""
        maps = self.gso_maps
        if maps is None:
            return -1
        end = rel + n
        lo = 0
        hi = len(maps) >> 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if maps[2 * mid] <= rel:
                lo = mid + 1
            else:
                hi = mid
        if lo > 0:
            i = 2 * (lo - 1)
            s = maps[i]
            e = s + (maps[i + 1] & 0x1FFFF)
            if e > rel:
                return i if end <= e else -2
        if 2 * lo < len(maps) and maps[2 * lo] < end:
            return -2
        return -1

    def gso_record(self, rel: int, dlen: int, extra: int) -> bool:
        """Remember the mapping [rel, rel+dlen) of a super-packet sent (`extra`: its DSS
        checksum, plus 0x10000 when it carries the DATA_FIN); forget those the server has
        data-acked. False, and nothing recorded, when MAX_GSO_MAPS unacked ones are held: the
        caller then sends this super-packet in segments with mappings of their own (no record
        needed). Forgetting the oldest instead, the one a lasting hole is in, gave the guest's
        retransmission of that hole a new mapping inside the server's partly received one:
        DSSNotMatching and a fallback (1 run in 12 of the 2 % loss test with GSO off)."""
        maps = self.gso_maps
        if maps is None:
            self.gso_maps = maps = array("q")
        acked = self.data_acked
        n = 0
        k = len(maps)
        while 2 * n < k and maps[2 * n] + (maps[2 * n + 1] & 0x1FFFF) <= acked:
            n += 1
        if n == 0 and k >= 2 * MAX_GSO_MAPS:
            return False
        if n:
            del maps[: 2 * n]
        maps.append(rel)
        maps.append(dlen | (extra << 17))
        return True

    # -- server -> guest: data level -------------------------------------------------------

    def data_ack_of_guest_ack(self, ack: int) -> int:
        """64-bit DATA_ACK for the guest's cumulative ack `ack` (moves `rcv_rel` forward)."""
        rel = _unwrap((ack - self.server_isn) & M32, self.rcv_rel)
        if rel > self.rcv_rel and rel <= self.rcv_rel + MAX_JUMP:
            self.rcv_rel = rel
        return (self.remote_idsn + self.rcv_rel) & M64

    def remote_rel(self, dsn: int, dsn64: bool) -> int:
        """A server DSN relative to its IDSN, 64-bit; a 32-bit one is widened against the
        guest's ack (the latest data-level position), not the IDSN. -1 when it lies more than
        2^30 from that ack: no acceptable segment carries it."""
        if dsn64:
            rel = (dsn - self.remote_idsn) & M64
        else:
            rel = _unwrap((dsn - self.remote_idsn) & M32, self.rcv_rel)
        if rel < 0 or rel > self.rcv_rel + MAX_JUMP or rel + MAX_JUMP < self.rcv_rel:
            return -1
        return rel

    def guest_seq_of_remote_dsn(self, dsn: int) -> int:
        """Guest seq of the server's DSN `dsn` (32- or 64-bit)."""
        return (self.server_isn + dsn - self.remote_idsn) & M32


def options_without_sack(data: bytes, pkt, tcp_hlen: int = 20):
    """The options of the server's segment `pkt` without SACK blocks (nor MPTCP options), or
    None when it has no block to drop: a guest without SACK gets none (subflow 1's, which
    SACK_PERM added for the server only, name seqs it never agreed to; Flow.sack_added)."""
    o = parse_options(data, pkt.ip_hlen + tcp_hlen, pkt.payload_off)
    if not o.sack:
        return None
    return encode_tcp_options(o.mss, o.wscale, o.sack_perm, o.ts_val, o.ts_ecr)


def unseen(base: int, got: list, lo: int, hi: int, runs=None) -> list:
    """The parts of the subflow bytes [lo, hi) that never came: not below `base`, nor in any
    of `got` (sorted [start, end, ...] entries: Subflow.ranges, a join's ooo), nor in `runs`
    (a mapping's summed runs, flat [s0, e0, ...]: ck_piece; the range map may have forgotten
    bytes its sum still holds), as a flat list [a0, b0, a1, b1, ...]. With DSS checksums a
    server resend goes to the guest as these parts only (converter._in_segment, multipath's
    join data): its copy of the bytes that came before is summed by no mapping, and a Linux
    guest keeps the newer copy of bytes it holds out of order when the resend starts at or
    before them (tcp_data_queue_ofo)."""
    a = lo if lo > base else base
    if a >= hi:
        return []
    out = _without([a, hi], [(g[0], g[1]) for g in got])
    if runs and out:
        out = _without(out, [(runs[k], runs[k + 1]) for k in range(0, len(runs), 2)])
    return out


def resend_cut(base: int, got: list, lo: int, hi: int, runs=None):
    """The parts of a server segment at subflow bytes [lo, hi) that the guest gets, with DSS
    checksums on a mapping that spans segments (converter._in_segment for subflow 1,
    multipath._download for joins): None when it goes whole, else unseen()'s parts. Whole:
    a segment of new bytes only, and a resend of nothing new (a guest that dropped its
    out-of-order queue needs it; cut, an identical resend would never get through). The
    usual segment, in order above everything received and summed, takes no list (the cut
    decision was written out at both call sites, and every such segment built parts)."""
    if lo >= base and not got and (not runs or (len(runs) == 2 and (runs[1] <= lo or runs[0] >= hi))):
        return None
    cut = unseen(base, got, lo, hi, runs)
    if not cut or (len(cut) == 2 and cut[0] == lo and cut[1] == hi):
        return None
    return cut


def _without(parts: list, spans: list) -> list:
    """The flat parts [a0, b0, ...] less the sorted (start, end) `spans`."""
    out = []
    for i in range(0, len(parts), 2):
        a, b = parts[i], parts[i + 1]
        for s, e in spans:
            if e <= a:
                continue
            if s >= b:
                break
            if s > a:
                out.append(a)
                out.append(s)
            a = e
            if a >= b:
                break
        if a < b:
            out.append(a)
            out.append(b)
    return out


def ck_runs_match(e: list, data: bytes, off: int, r: int) -> bool:
    """Do the bytes of a segment carrying the whole mapping of the entry in progress `e`
    (its payload at data[off:], subflow seq `r` == e[0]) sum, over the runs summed before, to
    the entry's running sum? The segment passed its own checksum (converter._csum_ok); the
    pieces that came before may already be with the guest's reader, and a byte changed in
    them was never judged (the review of stop 39: a whole resend ended the entry unchecked)."""
    total = 0
    runs = e[3]
    for k in range(0, len(runs), 2):
        total = ck_sum_at(total, data, off + (runs[k] - r), off + (runs[k + 1] - r), runs[k] - e[0])
    return total % 0xFFFF == e[2] % 0xFFFF


def ck_find(maps: list, m_r: int, m_len: int) -> int:
    """The index in `maps` (Subflow.ck_maps, or a join's) of the mapping [m_r, m_r + m_len)
    in progress, or -1."""
    for i in range(len(maps)):
        e = maps[i]
        if e[0] == m_r and e[1] == m_len:
            return i
    return -1


def ck_piece(e: list, data: bytes, off: int, r: int, plen: int, runs_max: int = MAX_CK_RUNS):
    """(sum, runs) of the mapping in progress `e` ([start, length, sum, runs]; runs a flat
    sorted list [s0, e0, s1, e1, ...] of the subflow bytes summed) after the segment of
    `plen` bytes at subflow seq `r`, its payload at data[off:]: only the bytes not summed
    before are added, each at its place in the mapping (a piece at an odd offset starts in
    the low byte of a word: its sum byte-swapped, RFC 1071 §2(B)). None when the runs would
    exceed `runs_max`. Nothing in `e` changes."""
    m_r = e[0]
    lo = r if r > m_r else m_r
    hi = r + plen
    if hi > m_r + e[1]:
        hi = m_r + e[1]
    runs = e[3]
    total = e[2]
    out = []
    pos = lo
    merged_lo, merged_hi = lo, hi
    merging = True  # the run of [lo, hi) and those it touches is still to be written
    n = len(runs)
    k = 0
    while k < n:
        s, t = runs[k], runs[k + 1]
        k += 2
        if t < lo:
            out.append(s)
            out.append(t)
            continue
        if s > hi:
            if merging:
                out.append(merged_lo)
                out.append(merged_hi)
                merging = False
            out.append(s)
            out.append(t)
            continue
        # touches or overlaps [lo, hi): the bytes between pos and s are new
        if s > pos:
            total = ck_sum_at(total, data, off + (pos - r), off + (s - r), pos - m_r)
        if t > pos:
            pos = t
        if s < merged_lo:
            merged_lo = s
        if t > merged_hi:
            merged_hi = t
    if pos < hi:
        total = ck_sum_at(total, data, off + (pos - r), off + (hi - r), pos - m_r)
    if merging:
        out.append(merged_lo)
        out.append(merged_hi)
    if len(out) > 2 * runs_max:
        return None
    return total, out


def ck_sum_at(total: int, data: bytes, start: int, end: int, at: int) -> int:
    """`total` plus the one's-complement sum of data[start:end], which sits at offset `at` of
    its mapping (folded to 16 bits)."""
    s = ones_sum(data, start, end)
    if at & 1:
        s = ((s & 0xFF) << 8) | (s >> 8)
    total += s
    total = (total & 0xFFFF) + (total >> 16)
    return (total & 0xFFFF) + (total >> 16)


def ck_verified(total: int, dsn: int, subflow_seq: int, data_len: int, csum: int) -> bool:
    """Does a mapping whose payload summed to `total` (ck_piece) pass its DSS checksum
    `csum` (RFC 8684 §3.3.1: the payload and a pseudo-header of its 64-bit `dsn`, subflow
    seq and length)? For the segment that completes a mapping summed from pieces, on
    subflow 1 (converter._csum_late_bad) or a join (multipath._csum_step)."""
    pseudo = ~dss_checksum(dsn & M64, subflow_seq, data_len, b"") & 0xFFFF
    total += pseudo
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) == csum


def ck_step(maps: list, m_r: int, m_len: int, data: bytes, off: int, r: int, plen: int, end: int, seen: bool):
    """A segment of `plen` bytes at subflow seq `r` (its payload at data[off:]) of the
    checksummed mapping [m_r, m_r + m_len), for the mappings in progress `maps` (each
    [start, length, sum, runs]: summed in any order, each byte once). `end`: the subflow
    bytes before it all came (mappings below are done: forgotten here); `seen`: some bytes
    of this mapping came before. None when the segment cannot be summed now (it must not be
    taken: MAX_CK_MAPS mappings in progress below it, or MAX_CK_RUNS runs in its own); True
    when there is nothing to sum (no sum could complete: a mapping seen before with none in
    progress was verified whole, or its sum given up); else what ck_commit records once the
    segment is taken: [entry, sum, runs, entry forgotten for it or None, new entry?,
    beyond a hole (r > end)?]."""
    i = len(maps)
    while i > 0:
        i -= 1
        e = maps[i]
        if e[0] + e[1] <= end:
            del maps[i]
        elif e[0] == m_r and e[1] != m_len:
            # another mapping for the same subflow bytes (Linux never sends one: a broken or
            # forged DSS): refused, the sum in progress kept (review of stop 37: pruning it
            # let the real mapping's later pieces pass unsummed)
            return None
    i = ck_find(maps, m_r, m_len)
    if r == m_r and plen == m_len:
        # the whole mapping in one segment, judged on its own (_csum_ok): its sum from pieces
        # (pieces came first, the rest was lost and resent whole) ends with it
        return True if i < 0 else [maps[i], 0, [m_r, m_r + m_len], None, False, False]
    victim = None
    if i >= 0:
        e = maps[i]
        new = False
    else:
        if seen:
            return True
        if len(maps) >= MAX_CK_MAPS:
            # full: room only for a mapping below the highest in progress, whose sum is
            # given up (the server resends nothing the guest SACKed: that mapping goes
            # unverified, counted). A lower one must get in, or the server's resends from
            # its head (after an RTO) would all be refused for good.
            victim = maps[0]
            for x in maps:
                if x[0] > victim[0]:
                    victim = x
            if victim[0] < m_r:
                return None
        e = [m_r, m_len, 0, []]
        new = True
    # one run stays free for the piece in subflow order (r <= end): beyond a hole, pieces may
    # leave MAX_CK_RUNS - 1 runs; the head may then always come (review of stop 37: with
    # MAX_CK_RUNS runs beyond it, the server's resends of the head alone, after its RTO,
    # were refused for good)
    got = ck_piece(e, data, off, r, plen, MAX_CK_RUNS if r <= end else MAX_CK_RUNS - 1)
    if got is None:
        return None
    return [e, got[0], got[1], victim, new, r > end]


def ck_complete(pending) -> bool:
    """Does the segment of `pending` (ck_step) complete its mapping?"""
    e, runs = pending[0], pending[2]
    return len(runs) == 2 and runs[0] == e[0] and runs[1] == e[0] + e[1]


def _ck_drop(maps: list, e) -> bool:
    """Take mapping entry `e` itself out of `maps` (by identity: list equality compared
    every field of every entry); False when it is not there."""
    for i in range(len(maps)):
        if maps[i] is e:
            del maps[i]
            return True
    return False


def ck_commit(maps: list, pending) -> bool:
    """Record `pending` (ck_step) in `maps` once its segment was taken: its sum and runs, or
    the mapping gone when complete (verified by the caller). True when another mapping's sum
    was given up for it."""
    e, victim = pending[0], pending[3]
    forgot = victim is not None and _ck_drop(maps, victim)
    if ck_complete(pending):
        _ck_drop(maps, e)
        return forgot
    e[2], e[3] = pending[1], pending[2]
    if pending[4]:
        maps.append(e)
    return forgot
