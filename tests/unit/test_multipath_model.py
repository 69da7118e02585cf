"""A model MPTCP server (one TCP receiver/sender per subflow, reassembly by DSN at the data
level, Linux's mapping rules) and a model plain-TCP guest around a real multipath Converter
(2 or 3 uplinks), with hypothesis choosing loss, duplication and reordering of the packets on
the four legs (guest -> converter -> server -> converter -> guest), time (tick), and an uplink
going down mid-stream and coming back (uplink_event: the converter rejoins, the model server
checks the join's token, address id, port range and third-ACK HMAC, and answers data before its
fourth ACK as a failure).

The guest sends MSS segments within a fixed flight, retransmits on three duplicate ACKs and
go-back-N on a timeout (exponential backoff), acks every segment it gets. With guest_sack=True
it honours the SACK blocks it gets, as Linux does (Sim.guest_sack_in: a scoreboard, no resend
of SACKed bytes until reneging, holes below the highest SACKed byte resent one per ACK). The server acks every
segment on its subflow with the contiguous DATA_ACK, retransmits per subflow (same seq, same
mapping), and at the data level like Linux: MPTCP-level retransmissions from the DATA_ACK on a
subflow with nothing outstanding (mptcp_subflow_get_retrans), or on any after a subflow closed
with data on it (its send queue rewound); download schedules add MPTCP-level retransmissions on
any subflow and Linux's zero-window probe; REMOVE_ADDR closes the established subflows of that
address id; a segment for a subflow it closed gets a RST at its ack (RFC 9293).

Properties, checked on every packet and at the end:

* every packet the converter emits parses and has right checksums (multipath.segment's
  Injects may leave the IPv4 header checksum to the kernel: see test_subflow_table);
* the guest never sees an MPTCP option, never an ack for bytes it did not send, and every byte
  it is given is the server's byte at that offset (so Linux's zero-window probe, a byte
  labelled DATA_ACK-1 that carries the next new byte, must never reach it);
* the server: every data segment carries a mapping that covers exactly its bytes (ssn = its
  seq, length = its payload) and agrees with every earlier mapping of the same subflow bytes
  (Linux counts DSSNotMatching otherwise); every byte is the guest's byte at its DSN; every
  subflow ack and DATA_ACK the converter sends acks at most what it received on that subflow /
  what the guest has;
* the upload run map (`flow.mp.runs`) stays within multipath.MAX_RUNS, ordered, never
  overlapping;
* once the schedule ends and the network turns lossless (with time and retransmissions), the
  server's data-level stream is the guest's whole stream and the guest has the server's.

The examples are derandomized (fixed) while the core bugs reproduced at the end of this file
are open: MP_MODEL_RANDOM=1 explores new ones, MP_MODEL_EXAMPLES=N sets how many.
"""

from __future__ import annotations

import os
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlebox.core import ACCEPT, Counter, Direction, Drop, Inject, Rewrite
from middlebox.core import MULTIPATH as MP
from middlebox.core.table import SubflowState
from middlebox.wire import (
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpTcpRst,
    RemoveAddr,
    build_options,
    dss_checksum,
    encode_tcp_options,
    join_hmac,
    key_token,
    options_of,
    parse_packet,
)

from tests.unit.test_core_harness import ACK, FIN, M32, M64, PSH, RST, SYN, make_packet, mptcp_of
from tests.unit.test_subflow_table import MPair, mp_config, wire_check

SS = SubflowState
MSS = 200
RTO = 1.0
EXAMPLES = int(os.environ.get("MP_MODEL_EXAMPLES", "50"))


class Failure(AssertionError):
    pass


def _stream(n, seed):
    r = random.Random(seed)
    return bytes(r.randrange(256) for _ in range(n))


def _add_range(rs, a, b):
    """[a, b) added to the ascending disjoint ranges `rs` (merged): a new list."""
    out = []
    for s, e in rs:
        if e < a or s > b:
            out.append((s, e))
        else:
            a, b = min(a, s), max(b, e)
    out.append((a, b))
    return sorted(out)


def _trim(rs, una):
    return [(max(s, una), e) for s, e in rs if e > una]


def _covers(rs, x):
    return any(s <= x < e for s, e in rs)


def _skip(rs, x):
    """The first position at or above x outside the ranges."""
    for s, e in rs:
        if s <= x < e:
            x = e
    return x


def _inside(rs, a, b):
    return sum(max(0, min(e, b) - max(s, a)) for s, e in rs)


class Sub:
    """The server's side of one subflow (index 0: the guest's 4-tuple)."""

    def __init__(self, k, c_isn, s_isn, local, lport, addr_id, c_nonce=0, s_nonce=0):
        self.k = k
        self.c_nonce, self.s_nonce = c_nonce, s_nonce
        self.joined = k == 0 or c_nonce == 0  # third ACK verified (set up by the harness: yes)
        self.ack4_sent = self.joined
        self.c_acked = self.joined  # the converter got a server ACK on it (the fourth)
        self.c_isn, self.s_isn = c_isn, s_isn
        self.local, self.lport = local, lport  # the converter's end
        self.addr_id = addr_id
        self.rcv_nxt = 1  # in-order receive (relative)
        self.ooo = {}  # rel -> (payload, dsn rel)
        self.ooo_last = 0  # rel seq of the latest out-of-order arrival (its SACK block goes first)
        self.maps = {}  # subflow rel byte -> dsn rel (every mapping seen for it)
        self.whole = {}  # subflow rel byte -> its mapping (ssn, len, dsn) when over several segments, else None
        self.snd_una = 1
        self.snd_nxt = 1
        self.sent = {}  # rel -> (dsn rel, payload) of the server's segments
        self.closed = False  # reset by the converter, or its address removed
        self.heard = 0.0
        self.progress = 0.0
        self.oow_at = -1.0  # when it last answered a segment below its window (Linux: 500 ms apart)
        self.delivered = set()  # subflow rel bytes of the server's segments the converter got
        self.dcontig = 1  # contiguous end of `delivered`
        self.fin_at = None  # rel seq of the converter's FIN on it (close schedules)


class Sim:
    # DSS checksums as Linux checks them (_csum_partial) instead of the mapping-conflict rule.
    # Off by default: on, test_upload_super_packets_split_any_schedule fails (the guest's
    # resends cut otherwise than the converter's cuts of a super-packet, at their seqs, with a
    # late original; test_checksum_resend_cut_otherwise_than_its_late_original_fails_linux)
    linux_csum = False

    def __init__(self, n_uplinks, up, down, v6=False, checksum=False, repair=0, window=False, close=None,
                 guest_sack=False, slow_start=False):
        kw = {"checksum": True} if checksum else {}
        if repair:
            kw["repair_bytes"] = repair
            kw["repair_window"] = window
        self.p = p = MPair(n_uplinks, v6=v6, config=mp_config(n_uplinks, **kw) if kw else None)
        p.join_sack = True  # (Linux offers SACK on a join; ours asks for it)
        self.UP, self.DOWN = up, down
        # close schedules: the guest closes once it sent everything, with a bare FIN ("bare")
        # or on its last data segment ("data"); the server takes the DATA_FIN and subflow 1's
        # FIN, and never a byte after a subflow's FIN
        self.closing = close
        self.dfin_seen = False  # the server received the DATA_FIN (at DSN len(UP) + 1)
        self.failures = []
        p.go_multipath(first=up[:5])
        for upid in sorted(p.joins):
            p.join_up(upid)
        self.conv = p.conv
        self.flow = p.flow
        self.now = p.now
        # guest (relative to its ISN for what it sends, to the server's for what it gets)
        self.g_una = self.g_nxt = self.g_max = 6
        self.g_rcv = 1
        self.g_ooo = {}
        self.g_got = bytearray()
        self.g_dups = 0
        self.g_progress = self.now
        self.g_rto = RTO
        # the SACK-honouring guest (guest_sack=True; see guest_sack_in): its scoreboard of
        # SACKed ranges and what it retransmitted since its last RTO, [a, b) relative, apart
        self.g_sack = guest_sack
        self.g_sacked = []
        self.g_rtx = []
        # (slow_start: after an RTO the guest's flight restarts at one segment and grows by
        # the bytes each ACK acks, as Linux's tcp_enter_loss sets cwnd 1; else none. Without
        # it the guest without SACK resent its whole flight at each RTO, which hid two
        # deadlocks where a Linux guest resends only the head until it is acked: stop 46)
        self.g_ss = slow_start
        self.g_cwnd = 1 << 30
        # server
        self.subs = [Sub(0, p.g_isn, p.s_isn, p.g_bytes, p.gport, 0)]
        self.subs[0].rcv_nxt = 6  # "hello" (MP_CAPABLE data form, checked by the harness)
        for upid in sorted(p.joins):
            j = p.joins[upid]
            s = Sub(len(self.subs), j.c_isn, j.s_isn, j.local, j.lport, upid)
            self.subs.append(s)
        self.server_addr, self.server_port = p.flow.mp.server, p.sport
        for s in self.subs:
            s.heard = s.progress = self.now
        self.up_got = {i + 1: b for i, b in enumerate(up[:5])}
        self.up_seen = set(self.up_got)  # DSNs the server ever received (under that DSN's mapping)
        self.up_rcv = 6  # contiguous data level (relative DSN)
        self.d_una = self.d_nxt = 1  # server's data level (download)
        self.d_progress = self.now
        self.rewind = False
        self.ack64 = False
        # network legs
        self.q = {"g2c": [], "c2s": [], "s2c": [], "c2g": []}
        self.down = set()  # uplink addresses that are down
        self.down_once = False
        self.up_again = False
        self.log = []

    # -- plumbing ----------------------------------------------------------------------------

    def fail(self, msg):
        raise Failure(msg + "\n" + "\n".join(self.log[-30:]))

    def emit(self, actions, leg_of_verdict, original):
        """Queue what the converter emitted: the verdict's bytes on `leg_of_verdict`, each
        Inject by its destination."""
        p = self.p
        for i, a in enumerate(actions):
            if i == 0 and original is not None:
                if isinstance(a, Drop):
                    continue
                buf = original if a is ACCEPT else a.data
                injected = False
                leg = leg_of_verdict
                if not (a is ACCEPT or isinstance(a, Rewrite)):
                    self.fail(f"verdict {a!r}")
            else:
                if not isinstance(a, Inject):
                    self.fail(f"non-Inject action {a!r}")
                buf, injected = a.data, True
                leg = "c2g" if wire_check(buf, True)[0].dst == p.g_bytes else "c2s"
            try:
                pkt, opts, mp = wire_check(buf, injected)
            except AssertionError as e:
                self.fail(f"bad packet from the converter: {e}")
            if leg == "c2g":
                if opts.mptcp:
                    self.fail("the guest saw an MPTCP option")
                if pkt.dst != p.g_bytes or pkt.dport != p.gport or pkt.src != p.flow.mp.server:
                    self.fail("a packet to the guest with wrong addresses")
            if leg == "c2s" and pkt.src in self.down:
                continue  # its uplink is down: lost
            self.q[leg].append(buf)
        self.check_runs()

    def check_runs(self):
        mp = self.flow.mp
        if mp is None:
            return
        runs = mp.runs
        if len(runs) > MP.MAX_RUNS:
            self.fail(f"{len(runs)} runs > MAX_RUNS")
        for r in runs:
            if not r[0] < r[1]:
                self.fail(f"empty run {r}")
        for a, b in zip(runs, runs[1:]):
            if a[1] > b[0]:
                self.fail(f"overlapping runs {a} {b}")
        # every subflow seq an established path has out and unacked belongs to a run: nothing
        # else would ever send it again (review of _head_hole: a range left without one
        # stalled its subflow for good)
        for q in mp.paths:
            if q.state is SS.ESTABLISHED and q.snd_una < q.snd_nxt and not q.fin_sent:
                have = sorted((r[3], r[3] + r[1] - r[0]) for r in runs if r[2] == q.index)
                at = q.snd_una
                for a, b in have:
                    if a > at:
                        break
                    at = max(at, b)
                if at < q.snd_nxt:
                    self.fail(f"path {q.index}: subflow seqs {at}.. of [{q.snd_una}, {q.snd_nxt}) belong to no run")
        if self.conv.counters[Counter.CoreBug]:
            self.fail("CoreBug counted")
        if self.conv.counters[Counter.JoinViolation]:
            self.fail("JoinViolation counted")

    def step(self, dt=0.001):
        self.now += dt
        self.p.now = self.now

    # -- delivering ----------------------------------------------------------------------------

    def deliver(self, leg, i):
        q = self.q[leg]
        if not q:
            return
        buf = q.pop(i % len(q))
        self.step()
        if leg == "g2c":
            self.log.append(f"{self.now:.3f} g2c {_desc(buf)}")
            self.emit(self.conv.handle(buf, Direction.OUT, self.now), "c2s", buf)
        elif leg == "s2c":
            pkt = wire_check(buf, False)[0]
            if pkt.dst in self.down:
                return
            self.log.append(f"{self.now:.3f} s2c {_desc(buf)}")
            self.note_delivered(buf, pkt)
            d = Direction.IN if pkt.dst == self.p.g_bytes else Direction.LOCAL
            self.emit(self.conv.handle(buf, d, self.now), "c2g", buf)
        elif leg == "c2s":
            self.log.append(f"{self.now:.3f} c2s {_desc(buf)}")
            self.server_in(buf)
        else:
            self.log.append(f"{self.now:.3f} c2g {_desc(buf)}")
            self.guest_in(buf)

    def drop(self, leg, i):
        q = self.q[leg]
        if q:
            self.log.append(f"{self.now:.3f} LOST {leg} {_desc(q[i % len(q)])}")
            del q[i % len(q)]

    def dup(self, leg, i):
        q = self.q[leg]
        if q:
            q.append(q[i % len(q)])

    def tick(self, dt):
        self.step(dt)
        self.log.append(f"{self.now:.3f} tick")
        self.emit(self.conv.tick(self.now), None, None)
        nd = self.conv.next_deadline()
        if nd is not None and nd < self.now - 1e-9 and self.flow.mp is not None:
            # a deadline in the past right after tick(): tick had nothing to do then?
            acts = self.conv.tick(self.now)
            if acts:
                self.fail(f"tick() left work for a deadline in the past ({nd} < {self.now})")

    def link_down(self, u):
        if self.down_once:
            return
        self.down_once = True
        up = self.p.cfg.uplinks[u % len(self.p.cfg.uplinks)]
        addr = self.p.addr_of(up)
        self.down.add(addr)
        for leg in ("c2s", "s2c"):
            self.q[leg] = [b for b in self.q[leg] if addr not in (wire_check(b, True)[0].src, wire_check(b, True)[0].dst)]
        self.log.append(f"{self.now:.3f} uplink {up.name} down")
        self.emit(self.conv.uplink_event(up.name, False, self.now), None, None)

    def link_up(self):
        if not self.down or self.up_again:
            return
        self.up_again = True
        addr = self.down.pop()
        up = next(u for u in self.p.cfg.uplinks if self.p.addr_of(u) == addr)
        self.log.append(f"{self.now:.3f} uplink {up.name} up")
        self.emit(self.conv.uplink_event(up.name, True, self.now), None, None)

    # -- the guest -----------------------------------------------------------------------------

    def g_seg(self, rel, n):
        p = self.p
        payload = self.UP[rel - 1: rel - 1 + n]
        end = len(self.UP) + 1
        # (closing: the FIN rides the segment that ends the stream, or goes bare after it;
        # a resend of it goes as it went)
        fin = self.closing is not None and rel + len(payload) == end and self.g_max > end
        buf = p.g_packet((p.g_isn + rel) & M32, (p.s_isn + self.g_rcv) & M32, ACK | PSH | (FIN if fin else 0),
                         payload)
        self.q["g2c"].append(buf)

    def g_ack(self):
        p = self.p
        self.q["g2c"].append(p.g_packet((p.g_isn + self.g_nxt) & M32, (p.s_isn + self.g_rcv) & M32, ACK))

    def guest_send(self, limit=8 * MSS):
        end = len(self.UP) + 1
        if self.g_sack:
            return self.guest_send_sack(limit)
        limit = min(limit, self.g_cwnd)
        if self.g_nxt < end and self.g_nxt - self.g_una < limit:
            n = min(MSS, end - self.g_nxt)
            fin = self.closing == "data" and self.g_nxt + n == end
            if fin:
                self.g_max = end + 1  # (its FIN with it)
            self.g_seg(self.g_nxt, n)
            self.g_nxt += n + (1 if fin or self.g_nxt + n == end and self.g_max > end else 0)
            self.g_max = max(self.g_max, self.g_nxt)
            return True
        if (self.g_nxt == end and (self.closing == "bare" or self.closing and self.g_max > end)
                and self.g_nxt - self.g_una < limit):
            self.g_max = end + 1  # (a bare FIN, or one sent again alone)
            self.g_seg(end, 0)
            self.g_nxt = end + 1
            return True
        return False

    def guest_send_big(self, x: int, limit=8 * MSS):
        """A GSO super-packet: 2-4 of the converter's segments at once (the netlink backend's
        queue gives it whole), within the guest's flight."""
        end = len(self.UP) + 1
        seg = self.conv._mss_limit[4] - 12
        limit = min(limit, self.g_cwnd)
        if self.g_nxt < end and self.g_nxt - self.g_una < limit:
            n = min(seg * (2 + x % 3), end - self.g_nxt)
            self.g_seg(self.g_nxt, n)
            self.g_nxt += n
            self.g_max = max(self.g_max, self.g_nxt)
            return True
        return False

    def guest_in(self, buf):
        p = self.p
        pkt, opts, _ = wire_check(buf, True)
        for left, right in opts.sack:
            # a block tells the guest the server has those bytes: it will not resend them. One
            # the server never received (a swap's late original won, the old copy lost) is a
            # stall for a guest that honours SACK (this model's with guest_sack=True does:
            # guest_sack_in; by default it does not: go-back-N)
            a, b = (left - p.g_isn) & M32, (right - p.g_isn) & M32
            for d in range(a, b):
                if d not in self.up_seen:
                    self.fail(f"the guest was told DSN {d} is held (SACK {a}..{b}); the server never had it")
        if pkt.flags & SYN:
            self.fail(f"the guest got flags {pkt.flags:#x}")
        if pkt.flags & RST:  # RFC 5961: only a RST at rcv_nxt resets; one in the window: challenge ACK
            if (pkt.seq - p.s_isn) & M32 == self.g_rcv:
                self.fail("the guest's connection was reset")
            self.g_ack()
            return
        a = (pkt.ack - p.g_isn) & M32
        if a > self.g_max:
            self.fail(f"the guest got an ack for bytes it never sent ({a} > {self.g_max})")
        if a > self.up_rcv + self.up_fin():
            self.fail(f"the guest got an ack for bytes the server does not have ({a} > {self.up_rcv})")
        if self.g_sack:
            self.guest_sack_in(pkt, opts, a)
        elif a > self.g_una:
            if self.g_ss:
                self.g_cwnd += a - self.g_una  # (slow start: by the bytes acked)
            self._g_advance(a)
        elif a == self.g_una and not pkt.payload_len and self.g_nxt > self.g_una:
            self.g_dups += 1
            if self.g_dups == 3:  # fast retransmit
                self.g_seg(self.g_una, min(MSS, min(self.g_max, len(self.UP) + 1) - self.g_una))
        if pkt.payload_len:
            r = (pkt.seq - p.s_isn) & M32
            payload = buf[pkt.payload_off:pkt.length]
            if r + len(payload) > len(self.DOWN) + 1 or payload != self.DOWN[r - 1: r - 1 + len(payload)]:
                self.fail(f"the guest got wrong bytes at {r}: {payload[:8].hex()} != {self.DOWN[r - 1:r + 7].hex()}")
            if r <= self.g_rcv < r + len(payload):
                self.g_got += payload[self.g_rcv - r:]
                self.g_rcv = r + len(payload)
            elif r > self.g_rcv:
                self.g_ooo[r] = payload
            while True:
                for s, pl in list(self.g_ooo.items()):
                    if s <= self.g_rcv:
                        del self.g_ooo[s]
                        if s + len(pl) > self.g_rcv:
                            self.g_got += pl[self.g_rcv - s:]
                            self.g_rcv = s + len(pl)
                        break
                else:
                    break
            self.g_ack()

    def _g_advance(self, a):
        """The guest's snd_una moves to `a`: its RTO and duplicate count start again."""
        self.g_una = a
        self.g_rto = RTO
        self.g_dups = 0
        self.g_progress = self.now
        if self.g_nxt < self.g_una:
            self.g_nxt = self.g_una

    def guest_timer(self):
        if self.g_una < self.g_max and self.now - self.g_progress >= self.g_rto:
            self.log.append(f"{self.now:.3f} guest RTO from {self.g_una}")
            if self.g_sack:
                if _covers(self.g_sacked, self.g_una):
                    # the head SACKed yet not acked: the receiver reneged (Linux's
                    # tcp_enter_loss, is_reneg): the whole scoreboard goes
                    self.log.append(f"{self.now:.3f} guest: SACK reneging at {self.g_una}, scoreboard cleared")
                    self.g_sacked = []
                self.g_rtx = []  # every unSACKed byte is lost now, retransmitted or not
            if self.g_ss:
                self.g_cwnd = MSS
            self.g_nxt = self.g_una  # go-back-N (the SACK guest skips what its scoreboard holds)
            self.g_progress = self.now
            self.g_rto = min(2 * self.g_rto, 16.0)  # exponential backoff (RFC 6298 §5.5)
            self.g_dups = 0
            return True
        return False

    # -- the SACK-honouring guest (guest_sack=True) ---------------------------------------------

    def guest_sack_in(self, pkt, opts, a):
        """The ACK part of guest_in for a guest that honours SACK, like Linux (RFC 6675 in
        spirit, byte-granular where Linux counts skbs; no RACK timer):

        * a scoreboard of the SACKed ranges (`g_sacked`): the blocks of every ACK are added,
          none is forgotten because a later ACK does not repeat it; cleared below the
          cumulative ACK only (and whole on an RTO that finds its head SACKed: reneging);
        * a cumulative ACK moves snd_una as before; an ACK at snd_una without data counts
          as a duplicate, and the third is a fast retransmit of the head (if not SACKed and
          not already retransmitted);
        * loss recovery: whenever the scoreboard holds a SACKed byte above snd_una (so a hole
          below it: the head itself is unSACKed), each ACK retransmits at most one segment:
          the first unSACKed bytes below the highest SACKed byte not retransmitted since the
          last RTO (`g_rtx`; a lost retransmission waits for the RTO, as without RACK);
        * an RTO goes back to snd_una (guest_timer) and guest_send_sack resends from there,
          skipping every SACKed range; new data is limited by the pipe (unSACKed bytes out
          below the send point), not by snd_nxt - snd_una; with slow_start the flight
          restarts at one segment after an RTO (Linux: cwnd 1 in tcp_enter_loss) and grows
          by the bytes each ACK acks."""
        p = self.p
        if a > self.g_una:
            self.g_cwnd += a - self.g_una  # (slow start: by the bytes acked)
            self._g_advance(a)
        elif a == self.g_una and not pkt.payload_len and self.g_nxt > self.g_una:
            self.g_dups += 1
        for left, right in opts.sack:
            x, y = (left - p.g_isn) & M32, (right - p.g_isn) & M32
            x = max(x, self.g_una)
            y = min(y, self.g_max, len(self.UP) + 1)  # (never the FIN: a data byte's SACK)
            if x < y:
                self.g_sacked = _add_range(self.g_sacked, x, y)
        self.g_sacked = _trim(self.g_sacked, self.g_una)
        self.g_rtx = _trim(self.g_rtx, self.g_una)
        if self.g_dups == 3 and not _covers(self.g_rtx, self.g_una) and not _covers(self.g_sacked, self.g_una):
            self.log.append(f"{self.now:.3f} guest: fast retransmit of {self.g_una}")
            self.guest_resend(self.g_una)
            return
        if self.g_sacked and self.g_sacked[-1][1] > self.g_una:
            hi = self.g_sacked[-1][1]
            h = self.g_una
            while h < hi:
                h = _skip(self.g_sacked, h)
                if h >= hi:
                    break
                r = _skip(self.g_rtx, h)
                if r == h:
                    break
                h = r
            else:
                return
            if h < hi and h < self.g_max:
                self.log.append(f"{self.now:.3f} guest: SACK recovery resends the hole at {h} (SACKed up to {hi})")
                self.guest_resend(h)

    def guest_resend(self, h):
        """Retransmit from `h`: up to MSS, not into the next SACKed range, the FIN with the
        last byte (a hole that is only the FIN resends the last data too, as Linux resends its
        skb whole: the FIN is never SACKed)."""
        end = len(self.UP) + 1
        top = min(self.g_max, end)
        if h >= end:  # only the FIN is missing: the last segment again, with it
            h = max(self.g_una, end - MSS) if end > self.g_una else end
        n = min(MSS, top - h)
        for s, e in self.g_sacked:
            if s > h:
                n = min(n, s - h)
                break
        self.g_seg(h, max(n, 0))
        self.g_rtx = _add_range(self.g_rtx, h, h + max(n, 1))
        return True

    def guest_send_sack(self, limit):
        """guest_send for the SACK guest: resends (below g_max) skip SACKed ranges, and the
        flight limit counts the unSACKed bytes out (RFC 6675's pipe, roughly)."""
        end = len(self.UP) + 1
        self.g_nxt = max(self.g_nxt, self.g_una)
        if self.g_nxt < self.g_max:
            self.g_nxt = min(_skip(self.g_sacked, self.g_nxt), self.g_max)
        pipe = self.g_nxt - self.g_una - _inside(self.g_sacked, self.g_una, self.g_nxt)
        if pipe >= min(limit, self.g_cwnd):
            return False
        if self.g_nxt == end and self.closing == "data" and self.g_max > end and self.g_una < end:
            # the data before the FIN SACKed, the FIN not acked: Linux resends the skb that
            # holds the FIN, its data with it (the FIN is never SACKed: the skb is not whole)
            h = max(self.g_una, end - MSS)
            self.g_seg(h, end - h)
            self.g_rtx = _add_range(self.g_rtx, h, end + 1)
            self.g_nxt = end + 1
            return True
        if self.g_nxt < end:
            n = min(MSS, end - self.g_nxt)
            if self.g_nxt < self.g_max:
                for s, e in self.g_sacked:  # (a resend stops at the next SACKed range)
                    if s > self.g_nxt:
                        n = min(n, s - self.g_nxt)
                        break
            fin = self.closing == "data" and self.g_nxt + n == end
            if fin:
                self.g_max = max(self.g_max, end + 1)  # (its FIN with it)
            self.g_seg(self.g_nxt, n)
            if self.g_nxt < self.g_max:
                self.g_rtx = _add_range(self.g_rtx, self.g_nxt, self.g_nxt + n)
            self.g_nxt += n + (1 if fin or self.g_nxt + n == end and self.g_max > end else 0)
            self.g_max = max(self.g_max, self.g_nxt)
            return True
        if self.g_nxt == end and (self.closing == "bare" or self.closing and self.g_max > end):
            self.g_max = end + 1  # (a bare FIN, or one sent again alone)
            self.g_seg(end, 0)
            self.g_nxt = end + 1
            return True
        return False

    # -- the server ------------------------------------------------------------------------------

    def sub_of(self, pkt):
        for s in reversed(self.subs):
            if s.local == pkt.src and s.lport == pkt.sport:
                return s
        if pkt.flags & SYN:
            return None
        self.fail(f"a packet to the server from an unknown endpoint {pkt.src.hex()}:{pkt.sport}")

    def close(self, s):
        if not s.closed and s.snd_una < s.snd_nxt:
            self.rewind = True
        s.closed = True

    def join_syn(self, pkt, types):
        """An MP_JOIN SYN (a rejoin): checked like Linux would, answered with a SYN/ACK."""
        p = self.p
        o = types.get(MpJoinSyn)
        if o is None or pkt.flags != SYN:
            self.fail(f"a SYN without MP_JOIN or with flags {pkt.flags:#x}")
        if o.token != key_token(p.s_key, p.s_version):
            self.fail("MP_JOIN with a wrong token (MPJoinNoTokenFound)")
        up = next((u for u in p.cfg.uplinks if p.addr_of(u) == pkt.src), None)
        if up is None:
            self.fail("a join from an address that is no uplink's")
        # (any address id: Linux records it; a rejoin after REMOVE_ADDR takes a fresh one)
        lo, hi = p.cfg.join_ports
        if not lo <= pkt.sport <= hi:
            self.fail("a join port outside the join range")
        s = self.sub_of(pkt)
        if s is None or s.c_isn != pkt.seq:
            s = Sub(len(self.subs), pkt.seq, (0x50000000 + 0x10000 * len(self.subs)) & M32, pkt.src, pkt.sport,
                    o.addr_id, o.nonce, 0x5A5A0000 + len(self.subs))
            s.heard = s.progress = self.now
            self.subs.append(s)
        mac = join_hmac(p.s_key, p.c_key, s.s_nonce, s.c_nonce, p.s_version)[:8]
        self.log.append(f"  server: join SYN on {o.addr_id}: subflow {s.k}")
        self.q["s2c"].append(self._synack(s, mac))

    def _synack(self, s, mac):
        p = self.p
        fam = socket.AF_INET6 if p.v6 else socket.AF_INET
        return make_packet(socket.inet_ntop(fam, self.server_addr), socket.inet_ntop(fam, s.local), self.server_port,
                           s.lport, s.s_isn, s.c_isn + 1, SYN | ACK,
                           build_options(encode_tcp_options(mss=1460, wscale=7, sack_perm=True),
                                         (MpJoinSynAck(False, 0, mac, s.s_nonce),)),
                           window=65535, v6=p.v6)

    def s_packet(self, s, flags, payload=b"", dss=None, seq=None, tcp=b""):
        p = self.p
        if dss is None:
            dss = Dss(data_ack=self.s_dack(), ack64=self.ack64)
        seqn = s.s_isn + (s.snd_nxt if seq is None else seq)
        fam = socket.AF_INET6 if p.v6 else socket.AF_INET
        sack = self.sack_of(s) if type(dss) is Dss and dss.data_seq is None else ()  # (no room beside a mapping)
        if s.k == 0:
            return p.s_packet(seqn, s.c_isn + s.rcv_nxt, flags, (dss,), payload, sack=sack)
        if sack and not tcp:
            tcp = encode_tcp_options(sack=sack)
        return make_packet(socket.inet_ntop(fam, self.server_addr), socket.inet_ntop(fam, s.local), self.server_port,
                           s.lport, seqn, s.c_isn + s.rcv_nxt, flags, build_options(tcp, (dss,)),
                           payload, window=509, v6=p.v6)

    def sack_of(self, s):
        """A subflow's SACK blocks, as Linux sends them beside a DATA_ACK: the out-of-order
        bytes holding the latest arrival first (RFC 2018), then the others, lowest first; one
        on subflow 1 (beside timestamps), three on a join (none)."""
        if not s.ooo or (s.k == 0 and not self.flow.sack_ok):
            return ()
        blocks = []
        for r, (pl, _) in sorted(s.ooo.items()):
            if r <= s.rcv_nxt:
                continue
            if blocks and r <= blocks[-1][1]:
                blocks[-1][1] = max(blocks[-1][1], r + len(pl))
            else:
                blocks.append([r, r + len(pl)])
        if not blocks:
            return ()
        first = next((b for b in blocks if b[0] <= s.ooo_last < b[1]), blocks[0])
        order = [first] + [b for b in blocks if b is not first]
        return tuple(((s.c_isn + x) & M32, (s.c_isn + y) & M32) for x, y in order[:1 if s.k == 0 else 3])

    def up_fin(self) -> int:
        """1 once the data level took the DATA_FIN (all bytes before it in)."""
        return 1 if self.dfin_seen and self.up_rcv == len(self.UP) + 1 else 0

    def s_dack(self):
        v = (self.p.idsn_c + self.up_rcv + self.up_fin()) & M64
        return v if self.ack64 else v & M32

    def server_in(self, buf):
        p = self.p
        pkt, opts, mp = wire_check(buf, True)
        s = self.sub_of(pkt)
        if pkt.dst != p.flow.mp.server or pkt.dport != p.sport:
            self.fail("a packet to the wrong server endpoint")
        types = {type(o): o for o in mp}
        if pkt.flags & RST:
            self.close(s)
            return
        if s is not None and s.closed and s.joined and not pkt.flags & SYN:
            # a segment for a subflow the server closed: RST at its ack (RFC 9293 §3.10.7.1)
            self.q["s2c"].append(self.s_packet(s, RST, dss=MpTcpRst(False, 0), seq=(pkt.ack - s.s_isn) & M32))
            return
        if pkt.flags & SYN:
            self.join_syn(pkt, types)
            return
        if not s.joined:
            o = types.get(MpJoinAck)
            if o is None:
                self.fail(f"subflow {s.k}: a segment before its third ACK")
            want = join_hmac(p.c_key, p.s_key, s.c_nonce, s.s_nonce, p.s_version)[:20]
            if o.hmac != want:
                self.fail(f"subflow {s.k}: third ACK with a wrong HMAC")
            s.joined = True
        if MpJoinAck in types:  # (again): the fourth ACK, again
            if pkt.payload_len:
                self.fail("data on a third ACK")
            s.rcv_nxt = max(s.rcv_nxt, 1)
            s.ack4_sent = True
            self.q["s2c"].append(self.s_packet(s, ACK))
            return
        if MpCapable in types and s.k != 0:
            self.fail("MP_CAPABLE on a join")
        if not pkt.payload_len and (s.rcv_nxt - (pkt.seq - s.c_isn)) & M32 in range(1, 0x80000000):
            # below its window (the converter's stale probe, a late ACK): Linux drops it in
            # tcp_validate_incoming before acting on its ack or any option, and answers with a
            # duplicate ACK, one per 500 ms per socket for a segment without data (its rcv_wup
            # is its rcv_nxt here: it acks every segment at once)
            if self.now - s.oow_at >= 0.5:
                s.oow_at = self.now
                self.q["s2c"].append(self.s_packet(s, ACK))
            return
        rm = types.get(RemoveAddr)
        if rm is not None:
            for t in self.subs:  # Linux: the established subflows with that remote id go
                if t.addr_id in rm.addr_ids and t.joined and not t.closed:
                    # (silently here: the RST Linux may send at its snd_nxt would hit the open
                    # bug of test_server_rst_on_subflow_1_never_resets_the_guest_while_joins_live;
                    # the converter learns of it from the RST answering its next segment)
                    self.close(t)
                    self.log.append(f"  server: REMOVE_ADDR {t.addr_id}")
        s.heard = self.now
        # subflow ack: at most what the converter got on this subflow
        a = (pkt.ack - s.s_isn) & M32
        if a > s.dcontig:
            self.fail(f"subflow {s.k} acked {a} but the converter got only up to {s.dcontig}")
        if a > s.snd_una:
            s.snd_una = a
            s.progress = self.now
        dss = types.get(Dss)
        if dss is not None and dss.data_ack is not None:
            da = (dss.data_ack - p.s_idsn) & (M64 if dss.ack64 else M32)
            if da > self.g_rcv:
                self.fail(f"DATA_ACK {da} beyond what the guest has ({self.g_rcv})")
            if da > self.d_una:
                self.d_una = da
                self.d_progress = self.now
        plen = pkt.payload_len
        r = (pkt.seq - s.c_isn) & M32
        if pkt.flags & FIN:
            if self.closing is None:
                self.fail("a subflow FIN from the converter (nobody closed)")
            if s.k != 0:
                self.fail(f"a FIN on join {s.k} (the server closed none)")
            if s.fin_at is not None and s.fin_at != r + plen:
                self.fail(f"subflow {s.k}: FIN at {r + plen}, before at {s.fin_at}")
            s.fin_at = r + plen
        if s.fin_at is not None and plen and r + plen > s.fin_at:
            self.fail(f"subflow {s.k}: bytes {r}..{r + plen} after its FIN at {s.fin_at} (the server's TCP never takes them)")
        if dss is not None and dss.data_fin:
            if self.closing is None:
                self.fail("a DATA_FIN (nobody closed)")
            if dss.data_seq is None:
                self.fail("a DATA_FIN without a mapping")
            if (dss.data_seq - p.idsn_c + dss.data_len - 1) & M64 != len(self.UP) + 1:
                self.fail(f"a DATA_FIN at DSN {(dss.data_seq - p.idsn_c + dss.data_len - 1) & M64}, not after the stream")
            if not plen and (dss.data_len != 1 or dss.subflow_seq != 0):
                self.fail(f"a bare DATA_FIN with ssn {dss.subflow_seq} length {dss.data_len} (RFC 8684: 0 and 1)")
            if not plen or ((r + plen + (1 if pkt.flags & FIN else 0)) - s.rcv_nxt) & M32 in range(1, 0x80000000):
                # (Linux reads a mapping's DATA_FIN from queued data: a segment its subflow
                # has whole already is dropped unread; a zero-length one's at once)
                self.dfin_seen = True
        if not plen:
            if pkt.flags & FIN and r == s.rcv_nxt:
                s.rcv_nxt += 1
            if pkt.flags & FIN or dss is not None and dss.data_fin:
                self.q["s2c"].append(self.s_packet(s, ACK))  # (Linux acks a FIN, a DATA_FIN)
            return
        if not s.c_acked:
            self.fail(f"data on subflow {s.k} before the converter had the server's fourth ACK")
        payload = buf[pkt.payload_off:pkt.length]
        if dss is None or dss.data_seq is None:
            self.fail(f"data without a mapping on subflow {s.k}")
        dl = dss.data_len - (1 if dss.data_fin else 0)  # (Linux: the DATA_FIN takes a DSN, no byte)
        off = (r - dss.subflow_seq) & M32
        if off + plen > dl or (off or dl != plen) and p.csum:
            # (a mapping over several segments, a GSO super-packet in place or a piece of it
            # resent, holds each of them; never with checksums: the converter cuts those)
            self.fail(f"mapping ssn {dss.subflow_seq} len {dss.data_len} does not cover the segment {r}+{plen}")
        if not dss.dsn64:
            self.fail("a 32-bit DSN")
        want = dss_checksum(dss.data_seq, dss.subflow_seq, dss.data_len, payload) if p.csum else None
        if dss.csum != want:
            self.fail(f"DSS checksum {dss.csum} != {want} (DataCsumErr)")
        self.ack64 = True
        d = (dss.data_seq - p.idsn_c + off) & M64
        # A mapping over several segments: not exactly this segment's, or longer than the
        # converter's cuts (`_mss_limit - 12`: the model's network does not segment, so a
        # super-packet in place arrives as one). Its bytes, all of them, come again only under
        # that mapping exactly (Linux: a segment wholly inside a partly received mapping that
        # brings another one is DSSNotMatching), and none that went before under a mapping of
        # its own (a segment's own) come under one over several.
        several = off or dl != plen or dl > self.conv._mss_limit[pkt.version] - 12
        whole = (dss.subflow_seq, dss.data_len, dss.data_seq, dss.data_fin) if several else None
        for i in range(dl if several else plen):
            b = (dss.subflow_seq + i) & M32 if several else r + i
            was = s.whole.get(b, whole)
            if was != whole:
                self.fail(f"subflow {s.k} byte {b} sent under mapping {was}, then {whole} (DSSNotMatching)")
            s.whole[b] = whole
            old = s.maps.get(r + i)
            if old is not None and old != d + i and p.csum and not self.linux_csum:
                # Without checksums a second copy of a subflow byte under another DSN is Linux's
                # TCP duplicate: dropped, or read on from the ACK under the mapping it carries
                # (a mapping may start before the bytes read), as the receive code below does
                # (the converter's head into a hole, _head_hole). With checksums Linux sums a
                # mapping from the bytes read on, so one whose start the other copy took fails.
                # (Stricter than Linux, which drops a copy it holds whole, whatever its mapping:
                # with `linux_csum` only what Linux fails fails, _csum_partial)
                self.fail(f"mapping conflict on subflow {s.k} byte {r + i}: DSN {old} then {d + i} (DataCsumErr)")
            s.maps[r + i] = d + i
        if d < 1 or d + plen > len(self.UP) + 1:
            self.fail(f"the server got a mapping outside the stream at DSN {d}")
        self.up_seen.update(range(d, d + plen))
        # bytes before the data-level ack are discarded unread (Linux: mptcp_subflow_discard_data;
        # the converter fills subflow holes of data-acked bytes with zeros); the rest must be right
        new = max(d, self.up_rcv)
        if d + plen > new and payload[new - d:] != self.UP[new - 1: d - 1 + plen]:
            self.fail(f"the server got wrong bytes at DSN {new}")
        # in-order subflow receive, then the data level
        if r <= s.rcv_nxt < r + plen:
            self._csum_partial(s, r, plen)
            self._take(s, r, payload, d)
            while True:
                for rr, (pl, dd) in sorted(s.ooo.items()):  # (Linux: in seq order)
                    if rr <= s.rcv_nxt:
                        del s.ooo[rr]
                        if rr + len(pl) > s.rcv_nxt:
                            self._csum_partial(s, rr, len(pl))
                            self._take(s, rr, pl, dd)
                        break
                else:
                    break
        elif r > s.rcv_nxt and len(s.ooo.get(r, (b"",))[0]) < plen:
            s.ooo[r] = (payload, d)  # (Linux's out-of-order queue: one covering it replaces it)
            s.ooo_last = r
        if s.fin_at is not None and s.rcv_nxt == s.fin_at:
            s.rcv_nxt += 1  # (its FIN, in order now)
        self.q["s2c"].append(self.s_packet(s, ACK))

    def _csum_partial(self, s, r, plen):
        """With DSS checksums, a segment queued in order while part of it lies below rcv_nxt
        (its mapping, exactly its bytes with checksums, starts below): Linux's TCP queues it
        untrimmed (tcp_data_queue's partial packet, tcp_ofo_queue), MPTCP takes its mapping
        when it reads on at copied_seq past the mapping's start (validate_mapping allows it),
        and validate_data_csum sums the mapping's length from copied_seq, not from its start:
        MAPPING_BAD_CSUM (DataCsumErr), MP_FAIL and a reset of the subflow."""
        if self.linux_csum and self.p.csum and r < s.rcv_nxt < r + plen:
            self.fail(f"subflow {s.k}: segment {r}+{plen} taken partly below rcv_nxt {s.rcv_nxt} under its "
                      f"own mapping (Linux sums it from {s.rcv_nxt}: DataCsumErr)")

    def _take(self, s, r, payload, d):
        for i in range(s.rcv_nxt - r, len(payload)):
            if d + i >= self.up_rcv and d + i not in self.up_got:
                # Linux discards subflow data before its data-level ack and keeps the first
                # copy of data it holds out of order (the converter's zero filler relies on it)
                self.up_got[d + i] = payload[i]
        s.rcv_nxt = r + len(payload)
        while self.up_rcv in self.up_got:
            self.up_rcv += 1

    def note_delivered(self, buf, pkt):
        """A server segment reaches the converter: its subflow bytes are the converter's (on the
        latest subflow of its endpoint, as sub_of: a rejoin may take an earlier join's port;
        the first one's got them, a random run's flaky 'acked 201 but got only up to 1')."""
        s = self.subs[0] if pkt.dst == self.p.g_bytes else next(
            (t for t in reversed(self.subs) if t.local == pkt.dst and t.lport == pkt.dport), None)
        if s is None:
            return
        if not pkt.flags & SYN:
            s.c_acked = True
        if not pkt.payload_len:
            return
        r = (pkt.seq - s.s_isn) & M32
        s.delivered.update(range(r, r + pkt.payload_len))
        while s.dcontig in s.delivered:
            s.dcontig += 1

    def live_subs(self):
        return [s for s in self.subs if not s.closed and s.ack4_sent]  # (Linux: data after the third ACK)

    def server_send(self, k, n, s=None):
        if self.d_nxt > len(self.DOWN):
            return
        live = self.live_subs()
        if not live:
            return
        if s is None:
            s = live[k % len(live)]
        n = min(n, MSS, len(self.DOWN) + 1 - self.d_nxt)
        self._send_map(s, self.d_nxt, n, self.DOWN[self.d_nxt - 1: self.d_nxt - 1 + n])
        self.d_nxt += n

    def _send_map(self, s, d, n, payload, seq=None):
        p = self.p
        ssn = s.snd_nxt if seq is None else seq
        csum = dss_checksum((p.s_idsn + d) & M64, ssn & M32, n, payload) if p.csum else None
        dss = Dss(data_ack=self.s_dack(), ack64=self.ack64, data_seq=(p.s_idsn + d) & M64, dsn64=True,
                  subflow_seq=ssn & M32, data_len=n, csum=csum)
        self.q["s2c"].append(self.s_packet(s, ACK | PSH, payload, dss, seq=ssn))
        if seq is None:
            s.sent[ssn] = (d, payload)
            s.snd_nxt += n

    def server_reinject(self, k, n):
        """MPTCP-level retransmission: data from the DATA_ACK on at new subflow seqs."""
        live = self.live_subs()
        if not live or self.d_una >= self.d_nxt:
            return
        s = live[k % len(live)]
        n = min(n, MSS, self.d_nxt - self.d_una)
        self._send_map(s, self.d_una, n, self.DOWN[self.d_una - 1: self.d_una - 1 + n])

    def server_probe(self, k):
        """Linux's MPTCP zero-window probe: 1 byte labelled DATA_ACK-1 at the subflow's next
        seq, carrying the next new byte (not the one its DSN names)."""
        live = self.live_subs()
        if not live or self.d_una < 2 or self.d_una > len(self.DOWN):
            return
        s = live[k % len(live)]
        self._send_map(s, self.d_una - 1, 1, self.DOWN[self.d_una - 1: self.d_una])

    def server_rtx(self, k, i):
        """Subflow-level retransmission of one of the server's segments (same seq, same
        mapping), from the subflow ack on."""
        subs = [s for s in self.subs if s.sent]
        if not subs:
            return
        s = subs[k % len(subs)]
        pend = sorted(x for x in s.sent if x + len(s.sent[x][1]) > s.snd_una) or sorted(s.sent)
        ssn = pend[i % len(pend)]
        d, payload = s.sent[ssn]
        self._send_map(s, d, len(payload), payload, seq=ssn)

    def server_timer(self):
        did = False
        for s in self.subs:  # subflow RTO: go-back-N on the subflow
            if s.closed or s.snd_una >= s.snd_nxt or self.now - s.progress < RTO:
                continue
            s.progress = self.now
            for ssn in sorted(s.sent):
                d, payload = s.sent[ssn]
                if ssn + len(payload) > s.snd_una:
                    self._send_map(s, d, len(payload), payload, seq=ssn)
                    did = True
        if self.d_una < self.d_nxt and self.now - self.d_progress >= 2 * RTO:  # MPTCP-level
            # Linux (mptcp_subflow_get_retrans): the first subflow with nothing outstanding
            self.d_progress = self.now
            live = [t for t in self.live_subs() if t.snd_una >= t.snd_nxt]
            if not live and self.rewind:
                # a subflow closed with data on it: Linux rewinds its send queue to the
                # DATA_ACK (__mptcp_retransmit_pending_data), the scheduler sends it anew
                live = sorted(self.live_subs(), key=lambda t: (t.snd_nxt - t.snd_una, -t.heard))
                self.rewind = False
            if live:
                d = self.d_una
                while d < self.d_nxt:
                    n = min(MSS, self.d_nxt - d)
                    self._send_map(live[0], d, n, self.DOWN[d - 1: d - 1 + n])
                    d += n
                did = True
        return did

    # -- the end ------------------------------------------------------------------------------------

    def done(self):
        if self.closing is not None:
            # closed: the data level took the DATA_FIN, the guest its FIN acked, and subflow
            # 1 got its FIN unless it is gone (our FIN held back from the guest's, tick)
            mp = self.flow.mp
            s0 = self.subs[0]
            if not (self.up_fin() and self.g_una == len(self.UP) + 2 and (
                    mp is None or mp.paths[0].state not in MP.ALIVE or s0.closed
                    or s0.fin_at is not None and s0.rcv_nxt > s0.fin_at)):
                return False
        return self.up_rcv == len(self.UP) + 1 and self.g_rcv == len(self.DOWN) + 1

    def finish(self, rounds=400):
        """A lossless network from here on, with time, until both streams are through."""
        for _ in range(rounds):
            moved = True
            n = 0
            while moved and n < 20000:
                moved = False
                for leg in ("g2c", "c2s", "s2c", "c2g"):
                    while self.q[leg]:
                        self.deliver(leg, 0)
                        moved = True
                        n += 1
                while self.guest_send():
                    moved = True
                if self.d_nxt <= len(self.DOWN) and self.d_nxt - self.d_una < 8 * MSS:
                    # the least loaded subflow, the most recently heard of those
                    live = sorted(self.live_subs(), key=lambda t: (t.snd_nxt - t.snd_una, -t.heard))
                    if live:
                        self.server_send(0, MSS, live[0])
                        moved = True
            if self.done():
                return True
            self.tick(0.25)
            self.guest_timer()
            self.server_timer()
        return self.done()


def _desc(buf) -> str:
    """One line per packet for the failure log."""
    pkt = parse_packet(buf)
    try:
        mp = mptcp_of(buf, pkt, options_of(buf, pkt))
    except AssertionError:
        mp = ["?"]
    fl = "".join(c for c, b in zip("FSRPA", (1, 2, 4, 8, 16)) if pkt.flags & b)
    return (f"{socket.inet_ntop(socket.AF_INET6 if pkt.version == 6 else socket.AF_INET, pkt.src)}:{pkt.sport}>"
            f"{socket.inet_ntop(socket.AF_INET6 if pkt.version == 6 else socket.AF_INET, pkt.dst)}:{pkt.dport} "
            f"{fl} seq={pkt.seq} ack={pkt.ack} len={pkt.payload_len} {mp}")


# -- schedules -------------------------------------------------------------------------------------

LEGS = ("g2c", "c2s", "s2c", "c2g")
G_SEND, DELIVER, DROP, DUP, TICK, LINK_DOWN, S_SEND, S_REINJECT, S_PROBE, S_RTX, LINK_UP, G_BIG, SKEW = range(13)
DTS = (0.002, 0.05, 0.2, 0.45, 1.2)

UP_OPS = st.lists(st.tuples(st.sampled_from([G_SEND] * 3 + [DELIVER] * 8 + [DROP, DUP, TICK, LINK_DOWN, LINK_UP]),
                            st.integers(0, 255), st.integers(0, 255)), min_size=20, max_size=150)
DOWN_OPS = st.lists(st.tuples(st.sampled_from([S_SEND] * 3 + [DELIVER] * 8 + [DROP, DUP, TICK, LINK_DOWN, LINK_UP, S_REINJECT,
                                                                               S_PROBE, S_RTX]),
                              st.integers(0, 255), st.integers(0, 255)), min_size=20, max_size=150)
# super-packets, and SKEW: one subflow's delivery-rate estimate set far below the others' (the
# model's clock gives every path about the same rate) and the scheduler in a burst there, so
# that the next pick is that subflow: new bytes for it are split
# (multipath._slow_share) and the guest's resends, any cut of them, must map back exactly
BIG_OPS = st.lists(st.tuples(st.sampled_from([G_SEND, G_BIG, G_BIG] + [DELIVER] * 8 + [DROP, DUP, TICK, LINK_DOWN, LINK_UP,
                                                                                     SKEW]),
                             st.integers(0, 255), st.integers(0, 255)), min_size=20, max_size=150)
BOTH_OPS = st.lists(st.tuples(st.sampled_from([G_SEND, S_SEND] * 2 + [DELIVER] * 8 + [DROP, DUP, TICK, LINK_DOWN, LINK_UP,
                                                                                       S_REINJECT, S_PROBE, S_RTX]),
                              st.integers(0, 255), st.integers(0, 255)), min_size=20, max_size=150)


def run(sim, ops, link_down=True):
    apply(sim, ops, link_down)
    ok = sim.finish()
    if not ok:
        sim.fail(f"not through: server has {sim.up_rcv - 1}/{len(sim.UP)}, guest {sim.g_rcv - 1}/{len(sim.DOWN)}; "
                 f"paths {sim.flow.mp and sim.flow.mp.paths}; counters "
                 f"{ {c.name: v for c, v in sim.conv.counters.items() if v} }")
    assert bytes(sim.up_got[i] for i in range(1, len(sim.UP) + 1)) == sim.UP
    assert bytes(sim.g_got) == sim.DOWN


def apply(sim, ops, link_down=True):
    for kind, x, y in ops:
        if kind == G_SEND:
            sim.guest_send()
        elif kind == G_BIG:
            sim.guest_send_big(x)
        elif kind == SKEW:
            mp = sim.flow.mp
            if mp is not None:
                for q in mp.paths:
                    q.rate = q.rate or 1e6  # (no sample yet: the model's ACKs come in bunches)
                top = max(q.rate for q in mp.paths)
                k = x % len(mp.paths)
                mp.paths[k].rate = top * (1 + y % 4) / 10
                mp.paths[k].app_lim = False  # (a measure, not what it was given)
                mp.last_pick, mp.burst_left = k, 1  # (and a burst there: its next pick)
        elif kind == DELIVER:
            sim.deliver(LEGS[x % 4], y)
        elif kind == DROP:
            sim.drop(LEGS[x % 4], y)
        elif kind == DUP:
            sim.dup(LEGS[x % 4], y)
        elif kind == TICK:
            sim.tick(DTS[x % len(DTS)])
            sim.guest_timer()
            sim.server_timer()
        elif kind == LINK_DOWN and link_down:
            sim.link_down(x)
        elif kind == LINK_UP and link_down:
            sim.link_up()
        elif kind == S_SEND:
            sim.server_send(x, 1 + y % MSS)
        elif kind == S_REINJECT:
            sim.server_reinject(x, 1 + y % MSS)
        elif kind == S_PROBE:
            sim.server_probe(x)
        elif kind == S_RTX:
            sim.server_rtx(x, y)


UP_STREAM = _stream(3000, 1)
DOWN_STREAM = _stream(2500, 2)
BIG_STREAM = _stream(12000, 3)
# Derandomized: the same examples on every run (the core bugs below are still open and a
# random run could trip over them); MP_MODEL_RANDOM=1 explores afresh, MP_MODEL_EXAMPLES=N more.
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("MP_MODEL_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ops=UP_OPS)
def test_upload_any_schedule(n, csum, ops):
    run(Sim(n, UP_STREAM, b"", checksum=csum), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), cap=st.sampled_from([1500, 8000, 1 << 18]),
       window=st.booleans(), ops=UP_OPS)
def test_upload_any_schedule_with_repair(n, csum, cap, window, ops):
    """The same schedules with the middlebox repairing join losses from its copies
    (--repair-bytes; a small cap keeps only some of them), with and without the joins'
    own congestion windows (--repair-window: what a join is given without room is not kept)."""
    sim = Sim(n, UP_STREAM, b"", checksum=csum, repair=cap, window=window)
    run(sim, ops)
    mp = sim.flow.mp
    assert sim.conv.repair_held[0] == (mp.rtx_bytes if mp is not None else 0)
    assert mp is None or mp.rtx_bytes <= cap


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), how=st.sampled_from(["bare", "data"]), ops=UP_OPS)
def test_upload_then_close_any_schedule(n, csum, how, ops):
    """The guest closes once it sent everything (a bare FIN, or one on its last segment):
    the server's stream is the guest's bytes and its DATA_FIN, the guest's FIN is acked, no
    subflow carries a byte after its FIN, and subflow 1 gets its FIN unless it died."""
    run(Sim(n, UP_STREAM[:2000], b"", checksum=csum, close=how), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ops=BIG_OPS)
def test_upload_super_packets_split_any_schedule(n, csum, ops):
    """Super-packets, and a subflow far slower than the best (SKEW): its share and the rest
    elsewhere, under loss, duplication, reordering and links going down; the server's stream
    is the guest's bytes."""
    run(Sim(n, BIG_STREAM, b"", checksum=csum), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ops=DOWN_OPS)
def test_download_any_schedule(n, csum, ops):
    run(Sim(n, UP_STREAM[:5], DOWN_STREAM, checksum=csum), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ops=BOTH_OPS)
def test_both_ways_any_schedule(n, csum, ops):
    run(Sim(n, UP_STREAM[:1500], DOWN_STREAM[:1500], checksum=csum), ops)


# -- the same schedules with a guest that honours the SACK blocks it gets (guest_sack_in) ------------


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ss=st.booleans(), ops=UP_OPS)
def test_upload_any_schedule_sack_guest(n, csum, ss, ops):
    run(Sim(n, UP_STREAM, b"", checksum=csum, guest_sack=True, slow_start=ss), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), cap=st.sampled_from([1500, 8000, 1 << 18]),
       window=st.booleans(), ss=st.booleans(), ops=UP_OPS)
def test_upload_any_schedule_with_repair_sack_guest(n, csum, cap, window, ss, ops):
    sim = Sim(n, UP_STREAM, b"", checksum=csum, repair=cap, window=window, guest_sack=True, slow_start=ss)
    run(sim, ops)
    mp = sim.flow.mp
    assert sim.conv.repair_held[0] == (mp.rtx_bytes if mp is not None else 0)
    assert mp is None or mp.rtx_bytes <= cap


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), how=st.sampled_from(["bare", "data"]), ss=st.booleans(),
       ops=UP_OPS)
def test_upload_then_close_any_schedule_sack_guest(n, csum, how, ss, ops):
    run(Sim(n, UP_STREAM[:2000], b"", checksum=csum, close=how, guest_sack=True, slow_start=ss), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ss=st.booleans(), ops=BIG_OPS)
def test_upload_super_packets_split_any_schedule_sack_guest(n, csum, ss, ops):
    run(Sim(n, BIG_STREAM, b"", checksum=csum, guest_sack=True, slow_start=ss), ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ss=st.booleans(), ops=BOTH_OPS)
def test_both_ways_any_schedule_sack_guest(n, csum, ss, ops):
    run(Sim(n, UP_STREAM[:1500], DOWN_STREAM[:1500], checksum=csum, guest_sack=True, slow_start=ss), ops)


# -- a guest without SACK that, after an RTO, resends only its head until it is acked ----------
# (Linux: cwnd 1 in tcp_enter_loss, slow_start=True). With DSS checksums two deadlocks
# followed, found by a helper's fuzzer of this model (stop 46) after a CI upload of a guest
# without timestamps and SACK hung (test_guest_variants, 1 run in many): the head waiting
# behind its own subflow's hole while another subflow lived (no reset: "the stale and dead
# clocks decide", and they never fired), and a hole whose DSNs the DATA_ACK passed while its
# subflow was stale, never filled (_rearm_fill skipped it).


def _seeded_ops(seed: int, i: int, link_down: bool) -> tuple:
    """The schedule the helper's fuzzer drew: (subflow count, ops)."""
    kinds = [G_SEND] * 3 + [DELIVER] * 8 + [DROP, DUP, TICK] + ([LINK_DOWN, LINK_UP] if link_down else [TICK, DROP])
    rnd = random.Random(seed * 100000 + i)
    n = rnd.choice([2, 3])
    ops = [(rnd.choice(kinds), rnd.randrange(256), rnd.randrange(256)) for _ in range(rnd.randrange(20, 250))]
    return n, ops


def _no_sack_sim(n: int, csum: bool = True, stream: bytes = UP_STREAM) -> "Sim":
    sim = Sim(n, stream, b"", checksum=csum, slow_start=True)
    sim.flow.sack_ok = False  # (the guest offered none: subflow 1's blocks are not shown to it)
    return sim


@pytest.mark.parametrize("seed,i,link_down", [
    (2, 2312, True), (2, 1561, True), (2, 9359, True),  # the head behind its subflow's hole
    (7, 1607, False), (7, 2703, False), (7, 3693, False),  # the same, no uplink down
    (7, 3842, False),  # the hole data-acked while its subflow was stale
])
def test_guest_without_sack_resending_only_its_head(seed, i, link_down):
    n, ops = _seeded_ops(seed, i, link_down)
    run(_no_sack_sim(n), ops, link_down)


def test_guest_without_sack_resending_its_fin_after_the_server_acked_it_all():
    """A review's run of the same fuzzer (stop 46), the guest closing with its last bytes:
    our ACK of its FIN was lost, and its FIN resends, all data-acked, went on as duplicates
    that moved nothing; nothing reached the guest, which resent its FIN for good."""
    n, ops = _seeded_ops(63, 403, True)
    sim = Sim(n, UP_STREAM, b"", checksum=True, slow_start=True, close="data")
    sim.flow.sack_ok = False
    run(sim, ops)


@settings(**SETTINGS)
@given(n=st.sampled_from([2, 3]), csum=st.booleans(), ops=UP_OPS)
def test_upload_any_schedule_guest_without_sack_slow_start(n, csum, ops):
    run(_no_sack_sim(n, csum), ops)


def test_sack_guest_resends_only_the_hole():
    """The SACK guest's own check: one segment lost on subflow 1, the rest SACKed; the guest
    resends the hole alone, before any RTO, and nothing SACKed."""
    sim = Sim(1, UP_STREAM[:2000], b"", guest_sack=True)
    mp = sim.flow.mp
    mp.last_pick, mp.burst_left = 0, 1 << 20
    for _ in range(6):
        sim.guest_send()
    while sim.q["g2c"]:
        sim.deliver("g2c", 0)
    sim.drop("c2s", 1)  # the second segment (206..406)
    g2c = []
    for _ in range(20):
        for leg in ("c2s", "s2c", "c2g"):
            while sim.q[leg]:
                sim.deliver(leg, 0)
        if sim.g_una > 406:
            break
        g2c += sim.q["g2c"]
        while sim.q["g2c"]:
            sim.deliver("g2c", 0)
        sim.step(0.01)
    assert sim.g_sacked == [] and sim.g_una == 1206, (sim.g_una, sim.g_sacked)
    assert not [line for line in sim.log if "guest RTO" in line]
    data = [parse_packet(b) for b in g2c if parse_packet(b).payload_len]
    assert [((d.seq - sim.p.g_isn) & M32, d.payload_len) for d in data] == [(206, 200)]
    run(sim, [])


# Found by the SACK guest's properties with reneging counted as a failure (runs/strict.py of
# the review; the properties themselves pass: the guest recovers). The guest's second segment
# [206, 406) reaches the server first on subflow 1, out of order: the server SACKs it, and the
# converter tells the guest (guest_sack, subflow 1 ESTABLISHED: true then). up1 goes down;
# subflow 1, whose uplink is unknown, is suspect and silent (nothing reaches the server for
# 0.2 s), so it dies (SUSPECT_WAIT), REMOVE_ADDR 0: the server closes it and its out-of-order
# queue, [206, 406) with it. The guest's scoreboard still holds [206, 406): once the DATA_ACK
# reaches 206 its head is SACKed and unacked, and only reneging recovers (this model: at its
# RTO; Linux: FLAG_SACK_RENEGING, max(srtt/2, 10 ms), then tcp_enter_loss: cwnd 1 and
# everything from snd_una resent). Every reneging the random runs found was of this kind
# (bytes SACKed on subflow 1, then subflow 1 closed after an uplink went down).
@pytest.mark.xfail(strict=True,
                   reason="open (design): a subflow that dies holding bytes SACKed to the guest makes it renege")
def test_sack_guest_subflow_1_dying_with_sacked_bytes_makes_the_guest_renege():
    sim = Sim(2, UP_STREAM, b"", guest_sack=True)
    run(sim, [(G_SEND, 0, 0)] * 2 + [(DELIVER, 0, 1), (DELIVER, 1, 0), (DELIVER, 2, 0), (LINK_DOWN, 0, 0),
                                      (TICK, 2, 0)])
    reneged = [line for line in sim.log if "SACK reneging" in line]
    assert not reneged, reneged


def test_clean_upload_uses_every_subflow():
    """A guest that sends its whole window before any ack: bursts of multipath.BURST land on
    each subflow in turn."""
    size = 4 * max(MP.BURST, 16 * MSS) + MSS  # (BURST: bytes, or segments in older versions)
    sim = Sim(3, _stream(size, 3), b"")
    while sim.guest_send(limit=size):
        pass
    run(sim, [])
    used = {s.k for s in sim.subs if s.maps}
    assert used == {0, 1, 2, 3}, used


def test_clean_download_over_every_subflow():
    sim = Sim(3, UP_STREAM[:5], DOWN_STREAM)
    for i in range(12):
        sim.server_send(i, MSS)
    run(sim, [])


# -- reproducers of core bugs found by the properties above -----------------------------------------


def _sf1_seg(p, ssn, drel, payload):
    """A server segment on subflow 1 at relative ssn `ssn` mapping DSN `drel` (relative)."""
    dss = Dss(data_ack=p.dack().data_ack, data_seq=(p.s_idsn + drel) & M64, dsn64=True, subflow_seq=ssn,
              data_len=len(payload))
    return p.s_packet((p.s_isn + ssn) & M32, (p.g_isn + 6) & M32, ACK | PSH, (dss,), payload)


# Fixed (was an xfail reproducer): subflow 1's range map (MAX_RANGES=16) filled with one range
# per burst of an interleaved download until the guest acked it, and the server's reinjection
# on subflow 1 of a hole left by a dead join was refused for good (RangeMapFull). Subflow 1 is
# now acknowledged on arrival once the flow is multipath (flow.Subflow.arrival).
def test_reinjection_on_subflow_1_with_a_full_range_map_reaches_the_guest():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j1 = p.joins[1]
    p.j_data(j1, b"L" * 100)  # DSN 1..100 on up1's join: lost on the way
    ssn = 1
    for _ in range(16):  # the server goes on: 10 bytes on subflow 1, 10 on the join, in turn
        p.inn(_sf1_seg(p, ssn, p.s_drel, b"a" * 10))
        p.s_drel += 10
        ssn += 10
        p.j_in(p.j_data(j1, b"b" * 10))
    assert p.flow.rcv_rel == 1  # the guest still lacks DSN 1
    assert p.count("RangeMapFull") == 0 and len(p.flow.sf.ranges) <= 1
    _, sent = p.out(p.g_ack())  # the guest acks DSN 0 only, yet subflow 1 is acked on arrival
    assert sent is not None
    assert parse_packet(sent).ack == (p.s_isn + ssn) & M32
    p.conv.uplink_event("up1", False, p.now + 0.01)  # up1 dies: subflow 1 is all there is
    assert p.path(1).state is SS.CLOSED
    for _ in range(3):  # the server reinjects DSN 1..100 on subflow 1 (and retransmits that)
        acts, got = p.inn(_sf1_seg(p, ssn, 1, b"L" * 100))
        assert got is not None, (acts, p.count("RangeMapFull"))


def _held_sf1_ack_then_dead_subflow_1():
    """Guest bytes A = [6, 206) go on subflow 1 and reach the server, whose ACK on subflow 1
    (DATA_ACK 206) is late; B = [206, 406) goes on up1's join (subflow 1 is stale by then) and
    is acked there at once (DATA_ACK 406); subflow 1 dies (stale 1.2 s). Returns the Sim and
    the late ACK."""
    sim = Sim(2, UP_STREAM, b"")
    sim.guest_send()
    sim.deliver("g2c", 0)  # A: Rewrite on subflow 1
    sim.deliver("c2s", 0)  # the server has A ...
    held = sim.q["s2c"][:]  # ... its ACK is late
    sim.q["s2c"].clear()
    sim.tick(0.45)  # subflow 1: no progress for 0.45 s -> STALE
    assert sim.flow.mp.paths[0].state is SS.STALE
    assert len(sim.q["c2s"]) == 1
    sim.q["c2s"].clear()  # (its stale probe: lost, as the ACK is late)
    sim.guest_send()
    sim.deliver("g2c", 0)  # B: on up1's join, ssn 1
    sim.deliver("c2s", 0)
    sim.deliver("s2c", 0)  # the join's ACK: DATA_ACK 406
    assert sim.flow.mp.data_ack == 406
    sim.q["c2g"].clear()  # (the guest hears of 406 late)
    sim.tick(1.2)  # subflow 1 stale for 1.2 s -> DEAD (REMOVE_ADDR 0 on the join)
    assert sim.flow.mp.paths[0].state is SS.CLOSED
    sim.q["c2s"].clear()
    return sim, held


# Fixed (was an xfail reproducer): multipath.send reinjects a guest retransmission whose home subflow is closed without looking at the DATA_ACK: bytes [6, 206) that the server has data-...
def test_retransmission_of_data_acked_bytes_is_not_reinjected():
    sim, _ = _held_sf1_ack_then_dead_subflow_1()
    sim.g_nxt = sim.g_una  # the guest's RTO (it has not heard of 406 yet): A again
    sim.guest_send()
    sim.deliver("g2c", 0)
    data = [b for b in sim.q["c2s"] if wire_check(b, True)[0].payload_len]
    assert not data, [_desc(b) for b in data]


# Fixed (was an xfail reproducer): upload stalls for good: a reinjected copy (here of data-acked bytes, see above) lost on up1's join leaves a hole in that subflow (ssn 201..401) that n...
def test_lost_reinjected_copy_does_not_stall_the_upload():
    sim, held = _held_sf1_ack_then_dead_subflow_1()
    sim.g_nxt = sim.g_una  # the guest's RTO: A again -> reinjected on up1's join, ssn 201 ...
    sim.guest_send()
    sim.deliver("g2c", 0)
    sim.q["c2s"].clear()  # ... and lost
    sim.q["s2c"] += held  # the late ACK of A arrives at last
    assert sim.finish(), (sim.up_rcv, sim.flow.mp.runs, [(s.k, s.rcv_nxt, sorted(s.ooo)[:3]) for s in sim.subs])


# Fixed (was an xfail reproducer): upload stalled for good with 1 uplink: A = [6, 206) reached
# the server on subflow 1 (ACK late), subflow 1 died, the guest's retransmission of A was
# reinjected on the join at ssn 1 and lost, the late DATA_ACK 206 reached the guest, which never
# resent A: the join's ssn 1..201 stayed a hole. Now filled with zeros under A's mapping
# (multipath._fill_acked_hole), which the server discards as data it has.
def test_lost_reinjection_whose_original_arrived_does_not_stall_the_upload():
    sim = Sim(1, UP_STREAM, b"")
    sim.guest_send()
    sim.deliver("g2c", 0)  # A: Rewrite on subflow 1
    sim.deliver("c2s", 0)  # the server has A; its ACK is late
    held = sim.q["s2c"][:]
    sim.q["s2c"].clear()
    sim.tick(0.45)
    sim.tick(1.2)
    assert sim.flow.mp.paths[0].state is SS.CLOSED
    sim.q["c2s"].clear()  # (its stale probe, lost, and REMOVE_ADDR 0 on the join)
    sim.q["c2g"].clear()  # (three duplicate ACKs)
    sim.g_nxt = sim.g_una  # the guest retransmits A: a new mapping on the join (ssn 1) ...
    sim.guest_send()
    sim.deliver("g2c", 0)
    assert sim.flow.mp.runs[1][:4] == [6, 206, 1, 1]
    sim.q["c2s"].clear()  # ... lost
    sim.q["s2c"] += held  # the late ACK of A: DATA_ACK 206 reaches the guest
    assert sim.finish(), (sim.up_rcv, sim.flow.mp.runs, [(s.k, s.rcv_nxt, sorted(s.ooo)[:3]) for s in sim.subs])
    assert sim.p.count("AckedHoleFilled") >= 1


# Fixed (was an xfail reproducer): a server RST on subflow 1 at the server's snd_nxt (Linux closing subflow 1, e.g. after REMOVE_ADDR 0, with data the guest has received but not yet ack...
def test_server_rst_on_subflow_1_never_resets_the_guest_while_joins_live():
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    p.join_up(2)
    _, got = p.inn(_sf1_seg(p, 1, 1, b"d" * 100))  # DSN 1..100 on subflow 1 -> the guest (not acked yet)
    assert got is not None
    guest_rcv_nxt = (p.s_isn + 101) & M32
    rst = p.s_packet(guest_rcv_nxt, (p.g_isn + 6) & M32, RST | ACK, (MpTcpRst(False, 0),))
    acts, got = p.inn(rst)
    assert got is None or not parse_packet(got).flags & RST, "the guest gets a RST at its rcv_nxt"


# Fixed (was an xfail reproducer): a rejoin over an uplink that came back reused the address id
# that the REMOVE_ADDR sent when it went down named; a late REMOVE_ADDR then removed the new
# subflow too (Linux closes every subflow whose remote id matches). A rejoin takes a fresh id.
def test_a_late_remove_addr_does_not_kill_the_rejoined_subflow():
    sim = Sim(2, UP_STREAM, b"")
    sim.link_down(1)  # up2 down: its join dies, REMOVE_ADDR(2) goes out on up1's join ...
    held = [b for b in sim.q["c2s"] if RemoveAddr in {type(o) for o in wire_check(b, True)[2]}]
    assert held
    sim.q["c2s"] = [b for b in sim.q["c2s"] if b not in held]  # ... and is late
    sim.link_up()  # up2 back: a join SYN over it
    for _ in range(4):  # SYN, SYN/ACK, third ACK, fourth ACK
        for leg in ("c2s", "s2c"):
            while sim.q[leg]:
                sim.deliver(leg, 0)
    new = sim.flow.mp.paths[-1]
    assert new.uplink.name == "up2" and new.state is SS.ESTABLISHED
    rejoined = sim.subs[-1]  # the server's side of it
    assert rejoined.addr_id not in (0, 1, 2) and rejoined.joined and not rejoined.closed
    sim.q["c2s"] += held  # the late REMOVE_ADDR(2)
    for leg in ("c2s", "s2c", "c2s", "s2c"):
        while sim.q[leg]:
            sim.deliver(leg, 0)
    assert not rejoined.closed, "the server removed the rejoined subflow"


def test_checksummed_mapping_on_subflow_1_is_summed_whatever_it_takes_once_acked_on_arrival():
    """Multipath with DSS checksums: subflow 1 is acknowledged on arrival, so every segment it
    takes must be in its mapping's sum (taken unsummed, the sum would wait for bytes the
    server considers delivered, and every later mapping with it). Before stop 37 the sum ran
    in subflow order only and a segment beyond a hole was not taken; summed out of order,
    it is taken and summed, and the hole completes the mapping whenever it comes."""
    p = MPair(1, server_checksum=True)
    p.go_multipath()
    p.join_up(1)
    body = bytes(range(256)) + bytes(44)  # one mapping of 300 bytes in three segments

    def seg(off):
        d = (p.s_idsn + 1) & M64
        dss = Dss(data_ack=p.dack().data_ack, data_seq=d, dsn64=True, subflow_seq=1, data_len=300,
                  csum=dss_checksum(d, 1, 300, body))
        return p.s_packet((p.s_isn + 1 + off) & M32, (p.g_isn + 6) & M32, ACK | PSH, (dss,),
                          body[off:off + 100])

    _, got = p.inn(seg(0))
    assert got is not None
    _, got = p.inn(seg(200))  # the middle one was lost: this one is taken all the same
    assert got is not None and p.count("DataCsumHoleDropped") == 0
    assert p.flow.sf.rcv_end() == 101  # the hole: the server learns of it (SACK)
    # the server reinjected DSN 101..301 on the join and the guest has it all: the last
    # segment, resent on subflow 1, is data the guest has, summed already
    p.g_rcv = (p.s_isn + 301) & M32
    p.out(p.g_ack())
    p.inn(seg(200))
    assert p.count("DataCsumHoleDropped") == 0 and p.flow.sf.rcv_end() == 101
    p.inn(seg(100))  # the hole: the mapping completes, checked whole
    assert p.flow.sf.rcv_end() == 301 and not p.flow.sf.ck_maps
    assert p.count("DataCsumErr") == p.count("DataCsumLateErr") == 0
    # a later mapping on subflow 1 is taken (the sum did not stay stuck on the first one)
    d = (p.s_idsn + 301) & M64
    dss = Dss(data_ack=p.dack().data_ack, data_seq=d, dsn64=True, subflow_seq=301, data_len=50,
              csum=dss_checksum(d, 301, 50, b"n" * 50))
    _, got = p.inn(p.s_packet((p.s_isn + 301) & M32, (p.g_isn + 6) & M32, ACK | PSH, (dss,), b"n" * 50))
    assert got is not None


def test_data_acked_on_arrival_that_the_guest_never_acks_is_counted_as_a_suspected_hole():
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j1 = p.joins[1]
    p.j_in(p.j_data(j1, b"d" * 100))  # acked on the join at once, sent on to the guest
    t0 = p.now
    assert MP.next_deadline(p.conv) is not None
    p.conv.tick(t0 + 0.5)
    p.conv.tick(t0 + 1.6)  # the guest never acked it (lost on the guest's side)
    assert p.count("GuestHoleSuspect") == 1
    p.g_rcv = (p.s_isn + 101) & M32  # now it has it all
    p.out(p.g_ack())
    p.conv.tick(t0 + 3.0)
    p.conv.tick(t0 + 4.5)
    assert p.count("GuestHoleSuspect") == 1


def test_retransmission_across_a_closed_acked_run_and_a_subflow_1_run_is_not_rewritten_whole():
    """Bug (found by a review of the failover flakes): a guest retransmission spanning bytes
    data-acked on a closed subflow and a run on subflow 1 was rewritten in place whole under
    the second run's seq and mapping: payload, seq and mapping disagreed (Linux: wrong bytes at
    that DSN, DSSNoMatchTCP / MAPPING_INVALID and a reset). The model server checks that
    every mapping covers its segment exactly and carries the right bytes."""
    up = bytes((i * 7 + 3) & 0xFF for i in range(200000))
    sim = Sim(1, up, b"")
    mp = sim.flow.mp
    for _ in range(400):  # until a run on the join (path 1) is followed by one on subflow 1
        sim.guest_send(limit=400 * MSS)
        sim.deliver("g2c", 0)
        r = mp.runs
        if len(r) >= 2 and r[-2][2] == 1 and r[-1][2] == 0 and r[-1][1] - r[-1][0] >= MSS:
            break
    a, b = [list(x) for x in mp.runs[-2:]]
    assert a[2] == 1 and b[2] == 0
    sim.drop("c2s", len(sim.q["c2s"]) - 1)  # b's last segment (on subflow 1) is lost
    while sim.q["c2s"]:
        sim.deliver("c2s", 0)
    while sim.q["s2c"]:
        sim.deliver("s2c", 0)
    sim.q["c2g"].clear()  # the guest hears nothing of the acks
    sim.link_down(0 if mp.paths[1].uplink.name == sim.p.cfg.uplinks[0].name else 1)
    assert mp.paths[1].state is SS.CLOSED
    sim.q["c2g"].clear()
    sim.q["c2s"].clear()
    s = a[1] - 50  # one retransmitted skb from inside a to inside b
    sim.g_seg(s, b[0] + 100 - s)
    sim.deliver("g2c", 0)
    while sim.q["c2s"]:
        sim.deliver("c2s", 0)  # fails on a mapping that does not cover its segment


# Fixed: with DSS checksums, a mapping that reached subflow 1 whole in one segment (a GRO
# super-packet) and then the retransmission of its first MSS (Linux resends the head of the skb
# on the guest's duplicate subflow acks) started that mapping's running sum again; the sum then
# waited for bytes the server considered delivered (subflow 1 is acked on arrival) and every
# piece of the next multi-segment mapping was dropped for good (DataCsumHoleDropped): subflow 1
# was stuck, the server's MPTCP-level retransmissions backed off and the download stalled.
def test_checksum_retransmitted_head_of_a_whole_mapping_on_subflow_1_does_not_stall_it():
    p = MPair(1, config=mp_config(1, checksum=True))
    p.go_multipath()
    assert p.flow.checksum and p.flow.sf.arrival
    S = _stream(1000, 7)

    def sf1(ssn, m_ssn, m_d, m_len, n):
        whole = S[m_d - 1:m_d - 1 + m_len]
        payload = whole[ssn - m_ssn:ssn - m_ssn + n]
        dss = Dss(data_ack=p.dack().data_ack, data_seq=(p.s_idsn + m_d) & M64, dsn64=True,
                  subflow_seq=m_ssn, data_len=m_len,
                  csum=dss_checksum((p.s_idsn + m_d) & M64, m_ssn, m_len, whole))
        return p.s_packet((p.s_isn + ssn) & M32, (p.g_isn + 6) & M32, ACK, (dss,), payload)

    d0 = p.s_drel
    _, got = p.inn(sf1(1, 1, d0, 600, 600))  # one mapping, whole
    assert got is not None
    p.inn(sf1(1, 1, d0, 600, 200))  # its head again (a subflow-level retransmission)
    for ssn in (601, 801):  # the next mapping, in two pieces
        acts, got = p.inn(sf1(ssn, 601, d0 + 600, 400, 200))
        assert got is not None, (ssn, acts, p.count("DataCsumHoleDropped"))
    assert p.count("DataCsumHoleDropped") == 0 and p.count("DataCsumErr") == 0
    _, sent = p.out(p.g_ack())
    assert parse_packet(sent).ack == (p.s_isn + 1001) & M32  # subflow 1 acked to its end


# Found by test_upload_super_packets_split_any_schedule with MP_MODEL_RANDOM=1 (it stalled
# the same way with the split turned off). 2 uplinks, a super-packet's segment on up2's join
# (ssn 1..1421) is lost, then up1 goes down and kills subflow 1 and up1's join. The data-level
# head (bytes subflow 1 carried) is reinjected on up2's join behind that hole, at ssn 1421. The
# guest's resends after its RTO reach only its first 8 segments: they fill ssn 1..1201, and
# the hole's last bytes (ssn 1201..1421) lie beyond them. The server cannot take the head
# before the hole is filled, the guest sends nothing beyond the head until it is acked: a
# deadlock (a Linux guest after an RTO likewise resends from its snd_una with cwnd 1). The
# head's resend now goes into the hole as a new mapping (_head_hole: the server never took
# those subflow bytes), and the hole's own bytes get a closed path as home, reinjected when
# the guest resends them.
def test_head_reinjected_behind_a_hole_beyond_the_guests_resends_does_not_stall():
    ops = ([(G_SEND, 0, 0), (G_SEND, 0, 0), (G_BIG, 0, 0), (DELIVER, 0, 1)] + [(G_SEND, 0, 0)] * 11
           + [(SKEW, 2, 0), (DELIVER, 0, 1), (DROP, 1, 1), (LINK_DOWN, 0, 0), (TICK, 52, 0)])
    sim = Sim(2, BIG_STREAM, b"")
    run(sim, ops)
    assert sim.conv.counters[Counter.HeadIntoHole]


# Found by test_upload_then_close_any_schedule_sack_guest with MP_MODEL_RANDOM=1 (stop 48; it
# failed the same way at stop 47's code). Every subflow died; the guest's last bytes and its
# FIN came while none was alive ("no live subflow": dropped, never mapped), so the DATA_ACK
# equalled snd_nxt. The first join alive again took that for "only the FIN outstanding" and
# sent a bare DATA_FIN at snd_nxt, 395 bytes before the stream's end: a Linux server would
# have closed the stream there, the upload cut short. Now the DATA_FIN goes only when the
# guest's FIN lies at snd_nxt; otherwise the guest is prompted to resend what went nowhere.
def test_a_join_alive_again_sends_no_data_fin_before_bytes_that_went_nowhere():
    ops = [(0, 0, 0)] * 11 + [(1, 0, 0), (1, 0, 0), (4, 173, 0), (5, 0, 0), (1, 0, 0), (1, 3, 0),
                              (1, 3, 0), (1, 3, 0), (4, 32, 0)]
    run(Sim(2, UP_STREAM[:2000], b"", checksum=True, close="bare", guest_sack=True, slow_start=False), ops)


_HEAD_BEHIND_A_HOLE = ([(G_SEND, 0, 0), (G_SEND, 0, 0), (G_BIG, 0, 0), (DELIVER, 0, 1)] + [(G_SEND, 0, 0)] * 11
                       + [(SKEW, 2, 0), (DELIVER, 0, 1)])  # (then the hole: DROP, 1, 1 or held)


class _LoseOnce(Sim):
    """The first segment to the server whose mapping starts at subflow seq `lose` is lost."""

    lose = -1

    def server_in(self, buf):
        if self.lose >= 0:
            for o in wire_check(buf, True)[2]:
                if isinstance(o, Dss) and o.data_seq is not None and o.subflow_seq == self.lose:
                    self.log.append(f"  (lost at the server) {_desc(buf)}")
                    self.lose = -1
                    return None
        return super().server_in(buf)


# The head's reinjected copy (ssn 2841 on up2's join) is lost too, after _head_hole moved the head
# into the hole: with the hole's DSNs homed on a closed path, [2841, 3041) belonged to no run and
# the join stalled for good (review of _head_hole). They take the head's old seqs now.
def test_head_into_the_hole_with_its_old_copy_lost_too_does_not_stall():
    sim = _LoseOnce(2, BIG_STREAM, b"")
    sim.lose = 2841
    run(sim, _HEAD_BEHIND_A_HOLE + [(DROP, 1, 1), (LINK_DOWN, 0, 0), (TICK, 52, 0)])
    assert sim.conv.counters[Counter.HeadIntoHole] and sim.lose == -1


# The "hole" is a late segment, not a lost one: it reaches the server after the head went into
# its place, and wins; the head's old copy is lost. The head is reinjected (acked on its
# subflow, not delivered), and its old seqs are filled again by the hole's DSNs (review: stalled
# with the hole's DSNs homed on a closed path, while the parent commit went through). Since the
# head reinjected from a closed subflow goes into the hole at once (no copy at the join's tail
# first), the head has no old copy on the join to lose: `lose` may not fire.
def test_head_into_a_hole_whose_late_original_wins_does_not_stall():
    sim = _LoseOnce(2, BIG_STREAM, b"")
    sim.lose = 2841
    apply(sim, _HEAD_BEHIND_A_HOLE)
    late = sim.q["c2s"].pop(1)  # (where DROP, 1, 1 loses it)
    apply(sim, [(LINK_DOWN, 0, 0), (TICK, 52, 0)])
    assert _until(sim, Counter.HeadIntoHole)  # (until the guest's resend of the head went into the hole)
    j2 = sim.subs[2]
    at = j2.rcv_nxt
    sim.q["c2s"].insert(0, late)  # the late original reaches the server first: it wins the hole
    sim.deliver("c2s", 0)
    assert j2.rcv_nxt > at
    run(sim, [])


HOLE_OPS = st.lists(st.tuples(st.sampled_from([G_SEND] + [DELIVER] * 8 + [DROP, DROP, DUP, TICK, TICK]),
                              st.integers(0, 255), st.integers(0, 255)), min_size=10, max_size=80)


@settings(**SETTINGS)
@given(repair=st.sampled_from([0, 0, 1500]), ops=HOLE_OPS)
def test_upload_after_the_head_went_behind_a_hole_any_schedule(repair, ops):
    """The reproducer's start (the head reinjected behind the only live join's hole), then loss,
    duplication, reordering and time (the review's targeted schedules: random runs of the other
    properties reach _head_hole once in hundreds)."""
    sim = Sim(2, BIG_STREAM, b"", repair=repair)
    run(sim, _HEAD_BEHIND_A_HOLE + [(DROP, 1, 1), (LINK_DOWN, 0, 0), (TICK, 52, 0)] + ops)


@settings(**SETTINGS)
@given(repair=st.sampled_from([0, 0, 1500]), ss=st.booleans(), ops=HOLE_OPS)
def test_upload_after_the_head_went_behind_a_hole_any_schedule_sack_guest(repair, ss, ops):
    sim = Sim(2, BIG_STREAM, b"", repair=repair, guest_sack=True, slow_start=ss)
    run(sim, _HEAD_BEHIND_A_HOLE + [(DROP, 1, 1), (LINK_DOWN, 0, 0), (TICK, 52, 0)] + ops)


# Found by test_upload_any_schedule_with_repair with MP_MODEL_RANDOM=1 (pre-existing): the
# network holds the guest's first segments for 2 s; subflow 1 and up1's join, busy and silent,
# go stale and die beside up2's idle join, whose uplink then goes down. No subflow was left and
# none could come (rejoins came only with an uplink coming back, and up1 never went down): the
# guest's bytes were dropped for good ("no live subflow", RunMapDrop). The last alive subflow
# to close now brings a join over every uplink that is up (_revive).
def test_subflows_dead_of_silence_beside_an_idle_join_rejoin():
    sim = Sim(2, UP_STREAM, b"", repair=1500)
    run(sim, [(G_SEND, 0, 0)] * 14 + [(DELIVER, 0, 0), (TICK, 213, 0), (DELIVER, 0, 0), (TICK, 33, 0),
                                       (TICK, 124, 0), (LINK_DOWN, 1, 0)])
    assert sim.conv.counters[Counter.MPJoinRejoin]


# A chain of heads into one long hole (review of a34025a): 10 guest segments in flight on
# subflow 1 when its uplink dies, the next 12 on up2's join, whose first 10 are lost; the guest
# resends two segments at a time. Each head goes into the join's hole and adds an adjacent
# unsure range: refused at the ninth (MAX_UNSURE), the head went back behind the hole and the
# upload stalled for good. Adjacent ranges merge now, and a full list becomes its hull.
def test_a_chain_of_heads_into_one_long_hole_does_not_stall(monkeypatch):
    forced = [None]
    pick = MP.pick
    monkeypatch.setattr(MP, "pick", lambda mp, n, c, now=0.0: pick(mp, n, c, now) if forced[0] is None else forced[0])
    sim = Sim(2, BIG_STREAM, b"")
    for k, n in ((0, 10), (2, 12)):
        forced[0] = k
        for _ in range(n):
            sim.guest_send(limit=40 * MSS)
        while sim.q["g2c"]:
            sim.deliver("g2c", 0)
        if k == 0:
            sim.q["c2s"].clear()  # (in flight on up1 when it goes down)
    forced[0] = None
    del sim.q["c2s"][:10]  # the join's first 10 segments lost
    for leg in ("c2s", "s2c"):
        while sim.q[leg]:
            sim.deliver(leg, 0)
    sim.q["c2g"].clear()
    apply(sim, [(LINK_DOWN, 0, 0), (TICK, 52, 0)])
    sim.guest_send = lambda limit=0: Sim.guest_send(sim, 2 * MSS)
    run(sim, [])
    assert sim.conv.counters[Counter.HeadIntoHole] >= MP.MAX_UNSURE + 1


# The netlink failover crawl (stop 28's capture): the heads homed on a join whose uplink dies,
# subflow 1 behind them with every second segment lost (the holes' DSNs far above the heads).
# The guest, two segments a flight after its RTO, resends the head and the next one; only the
# one that was the head as it arrived went into a hole, the next went to subflow 1's tail
# behind the holes left, and each step waited for the guest's next RTO (6 RTOs here before).
# The next resend now goes into the next hole; the model's server SACKs as Linux does (one
# block, the latest arrival's), and the holes come from all it SACKed.
def test_resends_after_the_head_fill_the_next_holes_without_a_crawl(monkeypatch):
    forced = [None]
    pick = MP.pick
    monkeypatch.setattr(MP, "pick", lambda mp, n, c, now=0.0: pick(mp, n, c, now) if forced[0] is None else forced[0])
    sim = Sim(2, BIG_STREAM, b"")
    for k, n in ((2, 10), (0, 16)):  # the heads on up2's join, then subflow 1
        forced[0] = k
        for _ in range(n):
            sim.guest_send(limit=40 * MSS)
        while sim.q["g2c"]:
            sim.deliver("g2c", 0)
    forced[0] = 0  # (reinjections too: subflow 1 the one path left, as in the capture)
    q = sim.q["c2s"]
    del q[:10]  # (the join's, lost with its uplink)
    for i in range(8):
        del q[i + 1]  # every second of subflow 1's
    for leg in ("c2s", "s2c"):
        while sim.q[leg]:
            sim.deliver(leg, 0)
    sim.q["c2g"].clear()
    apply(sim, [(LINK_DOWN, 1, 0)])
    sim.guest_send = lambda limit=0: Sim.guest_send(sim, 2 * MSS)
    run(sim, [])
    rtos = [line for line in sim.log if "guest RTO" in line]
    assert len(rtos) <= 1 and sim.conv.counters[Counter.HeadIntoHole] >= 8, rtos


# Eighteen holes, as in the capture: the SACK record (MAX_SACKED ranges) is cut, and the
# ranges it forgot stay no holes (gap_lo..gap_hi) after the first fills' ACKs trim it; a fill
# onto them had gone onto bytes the server held (review of 8820d21). The holes above the cut
# are unknown, so those resends wait for one more guest RTO.
def test_eighteen_holes_no_fill_onto_held_bytes(monkeypatch):
    forced = [None]
    pick = MP.pick
    monkeypatch.setattr(MP, "pick", lambda mp, n, c, now=0.0: pick(mp, n, c, now) if forced[0] is None else forced[0])
    sim = Sim(2, BIG_STREAM, b"")
    for k, n in ((2, 10), (0, 36)):  # the heads on up2's join, then 36 segments on subflow 1
        forced[0] = k
        for _ in range(n):
            sim.guest_send(limit=60 * MSS)
        while sim.q["g2c"]:
            sim.deliver("g2c", 0)
    forced[0] = 0
    q = sim.q["c2s"]
    del q[:10]
    for i in range(18):
        del q[i + 1]  # every second of subflow 1's: eighteen holes, as in the capture
    for leg in ("c2s", "s2c"):
        while sim.q[leg]:
            sim.deliver(leg, 0)
    sim.q["c2g"].clear()
    apply(sim, [(LINK_DOWN, 1, 0)])
    sf1 = sim.flow.mp.paths[0]
    assert len(sf1.sacked) == MP.MAX_SACKED and sf1.gap_hi  # (cut: ten SACKed segments forgotten)
    assert sf1.snd_una == sim.subs[0].rcv_nxt  # (the same relative seqs)
    onto_held = []
    into = MP._into_hole

    def spy(mp, q, d, n, dh, m, home, hs, h0, counters):
        s = sim.subs[0]
        if q.index == 0 and (h0 < s.rcv_nxt or any(r <= h0 < r + len(pl) for r, (pl, _) in s.ooo.items())):
            onto_held.append((d, h0, n))
        return into(mp, q, d, n, dh, m, home, hs, h0, counters)

    monkeypatch.setattr(MP, "_into_hole", spy)
    sim.guest_send = lambda limit=0: Sim.guest_send(sim, 2 * MSS)
    run(sim, [])
    rtos = [line for line in sim.log if "guest RTO" in line]
    assert not onto_held, (onto_held, rtos)
    assert len(rtos) <= 2, rtos


# Found by a randomised run (MP_MODEL_RANDOM=1); 2c62805 has it too. With DSS checksums,
# subflow 1 and up1's join dead, the data-level head homed on up2's join behind a hole there
# whose DSNs lie beyond it: _head_hole does not swap with checksums (Linux sums a mapping from
# the bytes it reads on: a fill is safe only if every copy of the hole's bytes that may still
# come has exactly its range, which the run map cannot tell), and the guest resends nothing
# beyond the head until it is acked: the upload stalled for good. The only live subflow is
# reset and a join opened again now (_csum_stuck_reset); the head goes there.
def test_checksum_head_behind_the_only_subflows_hole():
    ops = ([(G_BIG, 0, 0)] + [(G_SEND, 0, 0)] * 7 + [(DELIVER, 0, 0), (DELIVER, 1, 0), (DELIVER, 2, 0),
                                                    (DELIVER, 3, 0), (LINK_DOWN, 0, 0), (G_SEND, 0, 0),
                                                    (TICK, 22, 0), (DELIVER, 1, 116), (DELIVER, 0, 0),
                                                    (DELIVER, 1, 0), (DELIVER, 1, 0), (DROP, 1, 0)])
    sim = Sim(2, BIG_STREAM, b"", checksum=True)
    sim.linux_csum = True
    run(sim, ops)
    c = sim.conv.counters
    assert c[Counter.CsumStuckReset] == 1 and c[Counter.MPJoinRejoin] and not c[Counter.HeadIntoHole]


def _checksum_head_behind_a_held_hole():
    """_HEAD_BEHIND_A_HOLE with DSS checksums and Linux's checksum rule: the hole's original,
    a 1420-byte cut of a super-packet at ssn 1 on up2's join, is held (late), not lost; the
    head (the guest resends 200-byte segments) is reinjected behind it after subflow 1 and
    up1's join died. Returns (the Sim, the late original)."""
    sim = _LoseOnce(2, BIG_STREAM, b"", checksum=True)
    sim.linux_csum = True
    sim.lose = 2841
    apply(sim, _HEAD_BEHIND_A_HOLE)
    late = sim.q["c2s"].pop(1)  # (where DROP, 1, 1 loses it)
    assert len(late) > 1400
    apply(sim, [(LINK_DOWN, 0, 0), (TICK, 52, 0)])
    return sim, late


def _until(sim, counter):
    """A lossless network until `counter` moves (True) or 40 rounds passed (False)."""
    for _ in range(40):
        for leg in LEGS:
            while sim.q[leg]:
                sim.deliver(leg, 0)
                if sim.conv.counters[counter]:
                    return True
        while sim.guest_send():
            pass
        sim.tick(0.25)
        sim.guest_timer()
        sim.server_timer()
    return False


def test_a_swap_with_checksums_whose_late_original_overlaps_the_fill_fails_as_linux_would(monkeypatch):
    """What the model catches: the swap allowed with checksums (_into_holes as without them)
    puts the head's 200-byte resend at ssn 1 as a new mapping; the hole's 1420-byte original
    then comes: Linux queues it untrimmed (tcp_data_queue's partial packet), reads its mapping
    on from 201 and sums 1420 bytes from there (validate_data_csum): DataCsumErr, MP_FAIL and
    a reset. A swap is safe only where every copy of the hole's bytes has the fill's range."""
    real = MP._into_holes

    def into_holes(conv, flow, *a):
        c = flow.checksum
        flow.checksum = False  # (the mapping's own sum is computed after, by send)
        try:
            return real(conv, flow, *a)
        finally:
            flow.checksum = c

    monkeypatch.setattr(MP, "_into_holes", into_holes)
    sim, late = _checksum_head_behind_a_held_hole()
    assert _until(sim, Counter.HeadIntoHole)
    while sim.q["c2s"]:
        sim.deliver("c2s", 0)  # (the fill reaches the server: its rcv_nxt 201)
    assert sim.subs[2].rcv_nxt == 201
    sim.q["c2s"].insert(0, late)
    with pytest.raises(Failure, match="DataCsumErr"):
        sim.deliver("c2s", 0)


def test_checksum_head_behind_a_held_hole_resets_its_subflow_instead():
    """The same with the converter as it is: no swap; the only live join is reset and a join
    opened again; the late original reaches a closed subflow (a RST) and the upload goes
    through under Linux's checksum rule."""
    sim, late = _checksum_head_behind_a_held_hole()
    assert _until(sim, Counter.CsumStuckReset)
    assert not sim.conv.counters[Counter.HeadIntoHole]
    sim.q["c2s"].append(late)
    run(sim, [])
    assert sim.conv.counters[Counter.MPJoinRejoin]


# Existing, found with the model's Linux checksum rule (`linux_csum`) on: the guest's RTO
# resends (200-byte segments) go at their home on subflow 1 as new mappings over a 1420-byte
# cut of a super-packet whose original is still on its way; it comes after them and Linux
# reads it on from its rcv_nxt: DataCsumErr (a reset). Any resend at its home whose bounds
# differ from a copy still in flight does so (RetransSplit, a resend from the DATA_ACK, the
# guest collapsing small segments on retransmission); the run map keeps no bounds to cut it by.
@pytest.mark.xfail(strict=True, reason="open: with DSS checksums a resend cut otherwise than a late copy fails Linux's sum")
def test_checksum_resend_cut_otherwise_than_its_late_original_fails_linux():
    ops = ([(G_SEND, 0, 0)] * 4 + [(G_BIG, 0, 0)] + [(G_SEND, 0, 0)] * 13 + [(DELIVER, 0, 24), (DROP, 1, 0)])
    sim = Sim(2, BIG_STREAM, b"", checksum=True)
    sim.linux_csum = True
    run(sim, ops)


def _closed_upload_on_a_join(how):
    """One guest segment on subflow 1, the rest on join 1 (a burst there), then the guest's
    FIN, all reaching the converter; nothing reaches the server yet. One uplink: join 1 is
    the only one. Returns the Sim."""
    sim = Sim(1, UP_STREAM[:2000], b"", close=how)
    sim.guest_send()
    sim.deliver("g2c", 0)
    mp = sim.flow.mp
    mp.last_pick, mp.burst_left = 1, 1 << 20  # (the scheduler's burst on join 1)
    while sim.guest_send(limit=4000):
        pass
    while sim.q["g2c"]:
        sim.deliver("g2c", 0)
    assert [r[2] for r in mp.runs][:2] == [0, 1], mp.runs  # (a FIN with data goes on subflow 1)
    return sim


@pytest.mark.parametrize("how", ["bare", "data"])
def test_a_join_dying_below_the_guests_fin_does_not_stall_the_close(how):
    """The end of a kernel failover capture (stop 29, run 48): the guest's FIN went on
    subflow 1 while join 1 held bytes below it; join 1's uplink died; the guest's resends of
    them needed a new mapping, and subflow 1, past its FIN, could take none (pick): with no
    join alive they went nowhere (ReinjectNoPath), the upload stalled for good. Subflow 1's
    FIN waits now (_fin_may_go) and follows once the server data-acks the DATA_FIN."""
    sim = _closed_upload_on_a_join(how)
    mp = sim.flow.mp
    assert not mp.paths[0].fin_sent and sim.conv.counters[Counter.Sf1FinHeld] == 1
    up = mp.paths[1].uplink
    sim.link_down(next(i for i, u in enumerate(sim.p.cfg.uplinks) if u.name == up.name))
    assert mp.paths[1].state is SS.CLOSED
    run(sim, [])
    assert sim.conv.counters[Counter.ReinjectNoPath] == 0
    # (its FIN went with the guest's resent FIN, at its tail after the resends, or late)
    assert sim.subs[0].fin_at is not None and sim.subs[0].rcv_nxt == sim.subs[0].fin_at + 1


def test_a_close_with_every_byte_on_subflow_1_sends_its_fin_with_the_guests():
    """Nothing below the guest's FIN lies elsewhere: subflow 1's FIN goes with it, as before."""
    sim = Sim(2, UP_STREAM[:2000], b"", close="data")
    while sim.guest_send(limit=4000):
        pass
    run(sim, [])
    assert {r[2] for r in sim.flow.mp.runs} <= {0}
    assert sim.conv.counters[Counter.Sf1FinHeld] == 0 and sim.conv.counters[Counter.Sf1FinLate] == 0
    assert sim.subs[0].fin_at == 2001 and sim.subs[0].rcv_nxt == 2002


def test_a_bare_fin_before_the_last_segment_holds_subflow_1s_fin():
    """The guest's last segment is lost on its way to us (a full queue) and its bare FIN
    comes first: subflow 1's FIN went with the DATA_FIN, and the segment's resend, new bytes,
    went on subflow 1 after it (the server's TCP never takes them), every time. Found by
    test_upload_then_close_any_schedule. Now the FIN waits for every byte below it."""
    sim = Sim(2, UP_STREAM[:2000], b"", close="bare")
    while sim.guest_send(limit=4000):
        pass
    last = sim.q["g2c"][-2]  # (the last data segment; the bare FIN after it)
    sim.drop("g2c", len(sim.q["g2c"]) - 2)
    while sim.q["g2c"]:
        sim.deliver("g2c", 0)
    mp = sim.flow.mp
    assert mp.snd_nxt < 2001 and not mp.paths[0].fin_sent and sim.conv.counters[Counter.Sf1FinHeld] == 1
    sim.q["g2c"].append(last)  # (its resend)
    run(sim, [])
    assert sim.subs[0].rcv_nxt == sim.subs[0].fin_at + 1


def _nine_on_join_1_then_one_on_subflow_1(how="bare", checksum=False):
    """One uplink; nine guest segments on join 1 (a burst there), the last on subflow 1, all
    reaching the converter. Returns the Sim."""
    sim = Sim(1, UP_STREAM[:2000], b"", close=how, checksum=checksum)
    mp = sim.flow.mp
    for i in range(10):
        mp.last_pick, mp.burst_left = (1 if i < 9 else 0), 1 << 20
        assert sim.guest_send(limit=4000)
        sim.deliver("g2c", 0)
    assert [r[2] for r in mp.runs][-2:] == [1, 0], mp.runs
    return sim


def test_subflow_1_gets_its_fin_when_the_guests_first_fin_rides_a_resend_below_its_tail():
    """(review of 8347e00) The guest's bare FIN is lost on its way here and comes first on its
    resend of the last segment (Linux folds it in), whose bytes lie on subflow 1 below bytes
    reinjected there after join 1 died: not at its tail, so no FIN there and no hold, and
    subflow 1 never got its FIN though the server took the DATA_FIN. The late FIN is due
    whenever the DATA_FIN is data-acked and subflow 1 sent none. (Checksums: no swap.)"""
    sim = _nine_on_join_1_then_one_on_subflow_1(checksum=True)
    mp = sim.flow.mp
    sim.q["c2s"] = []  # all lost on the way to the server
    assert sim.guest_send(limit=4000)  # the guest's bare FIN ...
    sim.drop("g2c", 0)  # ... lost on its way here
    up = mp.paths[1].uplink
    sim.link_down(next(i for i, u in enumerate(sim.p.cfg.uplinks) if u.name == up.name))
    sim.q["c2g"] = []
    for rel in range(6, 1806, 200):  # the guest's RTO: all again, its FIN in the last segment
        sim.g_seg(rel, 200)
        sim.deliver("g2c", 0)
    sim.g_seg(1806, 195)
    n = len(sim.q["c2s"])
    sim.deliver("g2c", 0)
    (buf,) = sim.q["c2s"][n:]
    pkt, _, opts = wire_check(buf, True)
    (dss,) = [o for o in opts if isinstance(o, Dss)]
    assert dss.data_fin and not pkt.flags & FIN and not sim.conv.counters[Counter.Sf1FinHeld]
    run(sim, [])  # (done: subflow 1 got its FIN)
    assert sim.conv.counters[Counter.Sf1FinLate] >= 1


def test_a_data_fin_riding_only_bytes_the_subflow_has_goes_bare_too():
    """(review of 8347e00) The guest folds its FIN into its resend of the last segment,
    which subflow 1 already has; its FIN held (join 1's bytes are lost), the segment went
    without the TCP FIN, a whole duplicate, which Linux drops unread: the DATA_FIN in its
    mapping was learnt only from the guest's next FIN, an RTO later. A bare DATA_FIN goes
    beside it now, read at once."""
    sim = _nine_on_join_1_then_one_on_subflow_1()
    last = sim.q["c2s"][-1]
    sim.q["c2s"] = []  # join 1's segments lost; the last reaches the server on subflow 1
    sim.server_in(last)
    assert sim.guest_send(limit=4000)  # the guest's bare FIN
    sim.deliver("g2c", 0)
    sim.q["c2s"] = []  # its DATA_FIN lost on the way
    while sim.q["s2c"] or sim.q["c2g"]:
        sim.deliver("s2c", 0)
        sim.deliver("c2g", 0)
    sim.step(1.0)  # the guest's RTO: go-back-N, its FIN folded into the last segment
    for rel in range(6, 1806, 200):
        sim.g_seg(rel, 200)
    sim.g_seg(1806, 195)
    while sim.q["g2c"]:
        sim.deliver("g2c", 0)
    while sim.q["c2s"]:
        sim.deliver("c2s", 0)
    assert sim.up_rcv == 2001 and sim.up_fin(), (sim.up_rcv, sim.dfin_seen)
    run(sim, [])
