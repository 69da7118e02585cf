"""The window of doubt on a join (multipath._taken's wnd_doubt, _doubt_resolve; stop 42), from
the review of e85c6a3, against the stricter server of test_join_edge_strict.py: the ACK after
the copy carries the guest's window (with the model's, at a later seq, Linux kept that one
and an idle flow's DATA_ACK stayed capped), the copy waits DOUBT_WAIT from the clock (not
from the flow's last packet, which may be long past when the hold is set in tick), and a
copy of a zero window goes alone, the ACK reopening it DOUBT_WAIT later (stop 43)."""

from __future__ import annotations

import random

import pytest

from middlebox.core import MULTIPATH as MP
from middlebox.core import Inject, Rewrite
from tests.unit.test_core_harness import M32
from tests.unit.test_join_edge_model import Server
from tests.unit.test_join_edge_strict import run
from tests.unit.test_subflow_table import MPair, wire_check

LIVE_OPS = [('gdata', 715784), ('tick', 647682), ('tick', 225523), ('next', 146627), ('gack', 642106),
            ('dup', 920471), ('gack', 8068), ('sack', 233047), ('gack', 99165), ('next', 867591),
            ('next', 525260), ('next', 667293), ('gack', 873460), ('gack', 63886), ('dup', 459589),
            ('gdata', 810795), ('tick', 916151), ('next', 264101), ('gack', 386394), ('tick', 215537),
            ('gack', 523800), ('dup', 340693), ('gack', 10424)]


class _Spy:
    """A converter that records the DATA_ACK of every packet it sends (any subflow)."""

    def __init__(self, conv, seen):
        self._conv, self._seen = conv, seen

    def __getattr__(self, name):
        return getattr(self._conv, name)

    def _grab(self, acts):
        for a in acts or []:
            if isinstance(a, (Inject, Rewrite)):
                _, _, mp = wire_check(a.data, isinstance(a, Inject))
                self._seen.extend(o.data_ack for o in mp if type(o).__name__ == "Dss" and o.data_ack is not None)
        return acts

    def handle(self, *a):
        return self._grab(self._conv.handle(*a))

    def tick(self, *a):
        return self._grab(self._conv.tick(*a))


def _spied(monkeypatch, seen):
    real_init = MPair.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.conv = _Spy(self.conv, seen)

    monkeypatch.setattr(MPair, "__init__", init)


def test_an_idle_flows_data_ack_after_a_doubt_resolved_at_a_later_seq(monkeypatch):
    """The guest's bytes went on the join since the last window Linux took, so the ACK after
    the copy is at a later seq and Linux surely takes its window: it must be the guest's, or
    every later ACK there (the guest's smaller window) is not taken and the DATA_ACK stays
    capped on an idle flow (it did with the model's window; before e85c6a3 it went whole)."""
    seen = []
    _spied(monkeypatch, seen)
    p, srv, grcv, gedge, log = run(LIVE_OPS, sack=True, repair=False, v6=False, k=10 ** 9, d=1, lost=True,
                                   wmax=40, idle=100)
    best = max(x for x in ((d - p.s_idsn) & M32 for d in seen) if x < 1 << 31)
    assert p.count("JoinWindowDoubtResolved") >= 1
    assert grcv == 2001
    assert best == grcv, (f"after 2 s idle the best DATA_ACK the server got (any subflow) is {best}, the guest "
                          f"acked {grcv}; Linux holds {srv.wnd} on the join, the guest's window "
                          f"{gedge - grcv}; last on the join: {log[-6:]}")


def test_the_copy_waits_doubt_wait_from_the_clock(monkeypatch):
    """A hold set in tick() (the DATA_ACK flush, a repair, a fill) comes long after the flow's
    last packet: armed from flow.last, the copy went in the same tick, and a segment of ours
    still in flight could not settle first. Each copy comes DOUBT_WAIT or more after the hold
    that armed it (seen after each call of the converter: a hold arms, a copy counts)."""
    from middlebox.core import Counter

    events = []

    class Watch:
        def __init__(self, conv):
            self._conv = conv
            self._armed = set()

        def __getattr__(self, name):
            return getattr(self._conv, name)

        def _look(self, now, acts):
            copies = self._conv.counters[Counter.JoinWindowDoubtResolved]
            if copies > sum(1 for k, _ in events if k == "copy"):
                events.append(("copy", now))
            for flow in list(self._conv.mp_flows.values()):
                for q in flow.mp.paths[1:] if flow.mp else ():
                    if q.doubt_at and id(q) not in self._armed:
                        self._armed.add(id(q))
                        events.append(("arm", now))
                    elif not q.doubt_at:
                        self._armed.discard(id(q))
            return acts

        def handle(self, data, direction, now):
            return self._look(now, self._conv.handle(data, direction, now))

        def tick(self, now):
            return self._look(now, self._conv.tick(now))

    real_init = MPair.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.conv = Watch(self.conv)

    monkeypatch.setattr(MPair, "__init__", init)
    ops = ["next", "next", "next", "dup", "gack", "gack", "gack", "gdata", "gdata", "sack", "tick", "tick"]
    rnd = random.Random(6)  # (the review's seed: its holds are set in tick)
    ops = [(rnd.choice(ops), rnd.randrange(10 ** 6)) for _ in range(rnd.randint(8, 30))]
    run(ops, idle=20, sack=rnd.random() < .5, repair=rnd.random() < .6, v6=False, k=10 ** 9, d=1, lost=True,
        wmax=rnd.choice([400, 40, 12, 3]))
    copies = [(t, max((a for k, a in events[:i] if k == "arm"), default=None))
              for i, (k, t) in enumerate(events) if k == "copy"]
    assert copies, events
    # (None: the hold and its copy in one call of the converter)
    assert all(armed is not None and t - armed >= MP.DOUBT_WAIT - 1e-9 for t, armed in copies), events


def _to_join(p, j, actions):
    out = []
    for a in actions or []:
        if not isinstance(a, Inject):
            continue
        pkt, _, mp = wire_check(a.data, True)
        if (pkt.dst, pkt.dport, pkt.sport) != (j.server, j.sport, j.lport):
            continue
        dss = [o for o in mp if type(o).__name__ == "Dss"]
        dack = (dss[0].data_ack - p.s_idsn) & M32 if dss and dss[0].data_ack is not None else None
        out.append(((pkt.seq - j.c_isn) & M32, (pkt.ack - j.s_isn) & M32, pkt.window, dack))
    return out


def _zero_window_doubt():
    """A join whose last segment Linux surely took had a zero window (the reader was full);
    the window then opened to 1024 with a doubt, and the caps hold for it."""
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    j, path, flow = p.joins[1], p.path(1), p.flow
    srv = Server(flow.guest_wscale, path.wnd_held)
    sent = []

    def feed(acts):
        sent.extend(_to_join(p, j, acts))

    feed(p.j_in(p.j_data(j, b"a" * 1000)))  # arrival ACK: sure, window W0
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=0))[0])  # reader full: window 0
    b = p.j_data(j, b"b" * 1000)
    feed(p.j_in(b))  # arrival ACK: more acked, window 0 (sure)
    assert path.wnd_held == 0 and path.wnd_doubt > 0
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=8))[0])  # the reader read 1 KB
    feed(p.j_in(b))  # the server resends b: our ACK, window 1024, capped for the doubt
    assert path.wnd_held == 1024 and path.doubt_at, (path.wnd_held, path.wnd_doubt, path.doubt_at)
    p.resend_b = b  # (the server's segment b, to send again)
    return p, j, path, srv, sent, feed


def test_a_copy_of_a_zero_window_goes_alone_and_the_ack_reopening_it_after_doubt_wait():
    """The copy (window 0) and our ACK (1024) went back to back until stop 43: had the ACK
    overtaken the copy, Linux would have taken the copy's zero window after it (a zero window
    at snd_wl1 always is) and held it while the model said 1024, and nothing we send on an
    idle flow reopens it before the server's window probe. Now the copy goes alone (twice)
    and the ACK DOUBT_WAIT later, on the clock: a reordering that overtakes by that much is
    not one."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    n0 = len(sent)
    feed(p.tick(0.001))  # the clock arms the copy ...
    feed(p.tick(0.011))  # ... and sends it (twice: a lost copy would shrink nothing), alone
    assert p.count("JoinWindowDoubtResolved") == 1
    assert [w for _, _, w, _ in sent[n0:]] == [0, 0], sent[n0:]
    assert path.wnd_held == 0 and path.reopen_at
    due = p.conv.next_deadline()
    assert due is not None and due <= path.reopen_at + 1e-9
    feed(p.tick(MP.DOUBT_WAIT / 2))
    assert len(sent) == n0 + 2, "the ACK went before DOUBT_WAIT"
    feed(p.tick(MP.DOUBT_WAIT / 2 + 1e-6))
    assert [w for _, _, w, _ in sent[n0:]] == [0, 0, 8], sent[n0:]
    assert path.wnd_held == 1024 and not path.reopen_at
    for s, a, w, d in sent:
        srv.take(s, a, w, d)
    n1 = len(sent)
    for _ in range(100):  # 1 s, the guest idle: nothing more to say
        feed(p.tick(0.01))
    for s, a, w, d in sent[n1:]:
        srv.take(s, a, w, d)
    assert srv.wnd == path.wnd_held == 1024, (srv.wnd, path.wnd_held, sent[n1:])


def test_an_ack_overtaking_the_zero_copies_the_reopening_ack_still_goes():
    """(Review of 995d953.) Our ACK with an open window, sent just after the copies, overtakes
    them: Linux takes their zero window after it and holds 0 while the model says 1024. The
    reopening ACK goes DOUBT_WAIT after the copies all the same, and Linux takes it."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    b = p.resend_b
    n0 = len(sent)
    feed(p.tick(0.001))
    feed(p.tick(0.011))
    copies = sent[n0:]
    assert [w for _, _, w, _ in copies] == [0, 0]
    n1 = len(sent)
    feed(p.j_in(b))  # the server resends b once more: our duplicate ACK, window 1024
    y = sent[n1:]
    assert y and y[-1][2] > 0 and path.wnd_held > 0, y
    for s, a, w, d in sent[:n0]:
        srv.take(s, a, w, d)
    for s, a, w, d in y + copies:  # one reordering: y overtakes the two copies just before it
        srv.take(s, a, w, d)
    assert srv.wnd == 0
    n2 = len(sent)
    for _ in range(100):  # 1 s, the guest idle, its window open
        feed(p.tick(0.01))
    for s, a, w, d in sent[n2:]:
        srv.take(s, a, w, d)
    assert srv.wnd == path.wnd_held == 1024, (srv.wnd, path.wnd_held, y, copies, sent[n2:])


def test_an_ack_just_before_the_copies_puts_them_off_by_doubt_wait():
    """(Review of 995d953.) An ACK with an open window 1 ms before the copies were due, and
    the copies overtaking it: Linux took its window after their zero, while the model said
    0, and the edge went past a slow reader's. The copies now go DOUBT_WAIT after the last
    segment whose window Linux may still take (a reordering within that is assumed)."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    b = p.resend_b
    feed(p.tick(0.001))  # arms the copy
    feed(p.tick(0.008))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=16))[0])  # the reader read: 2048
    n = len(sent)
    feed(p.j_in(b))  # the server resends b: our ACK y2, window 2048
    y2 = sent[n:]
    assert y2 and y2[-1][2] == 16, (y2, path.wnd_held, path.wnd_doubt)
    n0 = len(sent)
    feed(p.tick(0.0021))  # DOUBT_WAIT after the arming: not yet, y2 went 2 ms ago
    assert len(sent) == n0, sent[n0:]
    for _ in range(3):
        feed(p.tick(0.005))
    for s, a, w, d in sent:
        srv.take(s, a, w, d)
    assert srv.wnd <= path.wnd_held, (srv.wnd, path.wnd_held, sent[n0:])


def _sf1_data(p, payload):
    """Server bytes on subflow 1, in order."""
    rel = (p.s_nxt - p.s_isn) & M32
    dss = p.s_dss_ack(data_seq=(p.s_idsn + p.s_drel) & ((1 << 64) - 1), dsn64=True, subflow_seq=rel,
                      data_len=len(payload))
    buf = p.s_packet(p.s_nxt, p.g_nxt, 0x18, (dss,), payload)
    p.s_nxt = (p.s_nxt + len(payload)) & M32
    p.s_drel += len(payload)
    return buf


def test_one_zero_copy_lost_the_servers_edge_stays_within_the_guests():
    """(Review of 9f70376.) The zero copy shrinks the window itself: sent once and lost, Linux
    kept the 1024 it took before while the model said 0 with no doubt, and the reopening
    ACK's DATA_ACK, with a slow reader's 256, put the server's edge 768 bytes past the
    guest's. It goes twice: one of them lost changes nothing."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    flow = p.flow
    for s, a, w, d in sent:
        srv.take(s, a, w, d if d is not None and d < 1 << 31 else None)  # (an old DATA_ACK: ignored)
    assert srv.wnd == 1024
    g_edge = srv.wnd_end  # the guest's edge (DATA_ACK 1 + 502 << 7, in the model server's terms)
    feed(p.tick(0.001))
    n0 = len(sent)
    feed(p.tick(0.011))
    assert [w for _, _, w, _ in sent[n0:]] == [0, 0]
    del sent[n0]  # one copy lost
    assert p.inn(_sf1_data(p, b"x" * 62000))[1] is not None  # the guest fills up to 256 short of its edge
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=2))[0])  # acked: window 256
    assert flow.rcv_rel + 256 == g_edge
    for _ in range(11):
        feed(p.tick(0.01))
    for s, a, w, d in sent[n0:]:
        srv.take(s, a, w, d)
    assert srv.wnd_end <= g_edge, (srv.wnd_end, g_edge, srv.wnd, path.wnd_held, sent[n0:])


def test_a_guest_window_closed_at_the_reopening_is_carried_to_the_join_once_open():
    """(Review of 9f70376.) The guest's window is 0 when the reopening ACK is due: it waits;
    the guest's next window goes on subflow 1 only, so the clock looks again (REOPEN_POLL)
    and carries it to the join, where Linux holds the zero copy's window."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    feed(p.tick(0.001))
    feed(p.tick(0.011))
    n0 = len(sent)
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=0))[0])  # the reader full again
    feed(p.tick(MP.DOUBT_WAIT + 1e-6))
    assert path.reopen_at and not any(w for _, _, w, _ in sent[n0:])  # waits, sends nothing open
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=8))[0])  # the reader read
    for _ in range(int(MP.REOPEN_POLL / 0.01) + 1):
        feed(p.tick(0.01))
    for s, a, w, d in sent:
        srv.take(s, a, w, d)
    assert srv.wnd == path.wnd_held == 1024, (srv.wnd, path.wnd_held, sent[n0:])
    assert not path.reopen_at


def test_the_servers_zero_window_probe_on_a_join_is_answered():
    """What ends the case above: the server's probe (at snd_nxt - 1) is answered at once."""
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    p.j_in(p.j_data(j, b"a" * 1000))
    acts = p.j_in(p.j_ack(j, seq=j.s_nxt - 1))
    assert _to_join(p, j, acts[1:]), "the server's window probe on a join is not answered"


def test_steady_acks_of_ours_do_not_hold_the_copy_off_for_ever():
    """(Review of 0dbe4e4.) Every segment of ours on the join put a due copy off by DOUBT_WAIT;
    a guest acking every 4 ms (each flushed on the join 5 ms later as a capped DATA_ACK)
    held it off for good, and the server never got the DATA_ACK of what the guest had (its
    MPTCP-level timer would resend it). Now only a window Linux would take after the copy's
    puts it off, at most DOUBT_PUSH_MAX times."""
    from tests.unit.test_join_dack_liveness import _dacks_to_server

    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j, flow = p.joins[1], p.flow
    seen = [0]

    def feed(acts):
        for d in _dacks_to_server(p, acts):
            if d < 1 << 31:
                seen[0] = max(seen[0], d)

    feed(p.j_in(p.j_data(j, b"a" * 1000)))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=495))[0])
    feed(p.j_in(p.j_data(j, b"b" * 1000)))
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=495))[0])
    for _ in range(250):  # 1 s: a guest pure ACK every 4 ms, nothing new from the server
        feed(p.tick(0.003))
        feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=495))[0])
    assert flow.rcv_rel == 2001
    assert seen[0] == 2001


def test_growing_windows_put_the_copy_off_a_bounded_number_of_times():
    """A window growing with every ACK (each one Linux would take after the copy's) puts it
    off DOUBT_PUSH_MAX times at most: then it goes."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    feed(p.tick(0.001))  # arms the copy
    copies_at = None
    for i in range(40):
        feed(p.tick(0.004))
        p.g_rcv = (p.s_isn + p.s_drel) & M32
        n = len(sent)
        feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=9 + i % 2))[0])
        feed(p.j_in(p.resend_b))  # our ACK on the join with that window
        if p.count("JoinWindowDoubtResolved") and copies_at is None:
            copies_at = i
            break
    assert copies_at is not None and copies_at <= 3 * (MP.DOUBT_PUSH_MAX + 2), copies_at


def _u(d):
    return d if d is not None and d < 1 << 31 else None  # (a DATA_ACK below the IDSN: Linux ignores it)


def test_a_window_past_the_put_off_bound_stays_a_doubt_after_the_copies():
    """(Review of eb738a2.) After DOUBT_PUSH_MAX put-offs the copies go even right after an
    ACK of ours with a window Linux would take after their zero. Overtaken once, that window
    was Linux's while the model said 0 with no doubt, and the reopening ACK's DATA_ACK, with
    a slow reader's smaller window, put the edge 768 bytes past the guest's. That window now
    stays a doubt after the copies (doubt_late): the caps count it."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    b = p.resend_b
    for s, a, w, d in sent:
        srv.take(s, a, w, _u(d))
    g_edge = srv.wnd_end
    feed(p.tick(0.001))
    n0 = len(sent)
    ys = []
    for i in range(MP.DOUBT_PUSH_MAX + 1):
        feed(p.tick(MP.DOUBT_WAIT - 0.001))
        n = len(sent)
        feed(p.j_in(b))
        ys.append(sent[n:])
        if i < MP.DOUBT_PUSH_MAX:
            feed(p.tick(1e-6))
    n1 = len(sent)
    feed(p.tick(0.001))
    copies, y4 = sent[n1:], ys[-1]
    assert [w for _, _, w, _ in copies] == [0, 0], copies
    for s, a, w, d in sent[n0:n1 - len(y4)] + copies + y4:  # the copies overtake the last ACK
        srv.take(s, a, w, _u(d))
    n2 = len(sent)
    assert p.inn(_sf1_data(p, b"x" * 62000))[1] is not None
    p.g_rcv = (p.s_isn + p.s_drel) & M32
    feed(p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=2))[0])  # a slow reader: 256
    for _ in range(11):
        feed(p.tick(0.01))
    for s, a, w, d in sent[n2:]:
        srv.take(s, a, w, _u(d))
    assert srv.wnd_end <= g_edge, (srv.wnd_end, g_edge, srv.wnd, path.wnd_held, sent[n2:])


def test_a_doubt_settled_by_a_sure_take_leaves_no_copy_or_count_behind():
    """(Review of eb738a2.) A sure take with a window at least the doubt ends it: the due
    copy and its count of put-offs went on into the next doubt, which then got no put-off."""
    p, j, path, srv, sent, feed = _zero_window_doubt()
    feed(p.tick(0.001))
    assert path.doubt_at > 0
    path.doubt_push = MP.DOUBT_PUSH_MAX
    taken = MP._taken(path, path.wnd_seq, path.wnd_ack + 1, path.wnd_doubt)
    assert taken == MP.TAKEN_SURE and path.wnd_doubt == 0
    assert path.doubt_at == 0 and path.doubt_push == 0 and path.doubt_late == 0
