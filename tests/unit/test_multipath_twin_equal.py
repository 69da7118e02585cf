"""Differential: the compiled multipath (`middlebox._ccore.multipath`, called by the compiled
converter) against the pure spec (`middlebox/core/multipath.py`, called by `REFERENCE`), on
whole multipath conversations, packet by packet.

Both converters get the same hypothesis-chosen events on a flow with two joins: the server's
data on either join (some lost, some repeated; with DSS checksums or not), the guest's ACKs
with shrinking and growing windows, its data, window probes and FIN, the server's acks of
our data (with SACK blocks), its RSTs, out-of-window segments, keepalives and DATA_FIN, and
the clock. After every event the two must emit the same actions (type and bytes or
reason); at the end, the same counters and the same value in every field of every Path and
of the MpConn. Keys, nonces and ISNs come from one seeded generator (`secrets.randbits` /
`randbelow`, looked up at call time by both), with every ISN just below 2^32 and every IDSN
just below 2^64 (`key_idsn` replaced where the converter and the harness look it up), so
that sequence numbers, DSNs and 32-bit DATA_ACKs wrap mid-conversation; the guest's window
scale is 0, 7 or 14 (the C shifts of multipath.pxd's typed Flow fields). Written by a
review of stop 42; a perturbed twin constant makes it fail.

The compiled core types its parsed packets as the wire twin's `Packet`; with
MIDDLEBOX_PURE_PYTHON=1 the wire layer is the pure one, so this file runs in the compiled
run only (test_core_twin_equal.py holds the single-path twin in both).
"""

from __future__ import annotations

import os
import random
import secrets
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import middlebox.core as core
import tests.unit.test_core_harness as H
import tests.unit.test_subflow_table as T
from middlebox.core import Inject
from middlebox.wire import Dss, dss_checksum, encode_tcp_options, parse_packet
from tests.unit.test_core_harness import M32, M64
from tests.unit.test_subflow_table import MPair, mp_config

PURE_RUN = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(PURE_RUN or core.IMPLEMENTATION != "cython",
                                reason="the compiled twin runs with the wire twin (the compiled CI run)")

REAL_IDSN = H.key_idsn

ops = st.lists(st.tuples(st.sampled_from(["data", "data", "data", "lose", "dup", "gack", "gack", "gdata",
                                          "gdata", "sack", "jsack", "tick"]),
                         st.integers(0, 10 ** 6)), min_size=5, max_size=60)


def _action(a):
    return type(a).__name__, getattr(a, "data", None) or getattr(a, "reason", None)


def _norm(v):
    """A comparable view of a field value (Paths and MpConns by reference)."""
    if isinstance(v, (list, tuple)):
        return type(v).__name__, tuple(_norm(x) for x in v)
    name = type(v).__name__
    if name in ("Path", "MpConn"):
        return "<%s %s>" % (name, getattr(v, "index", ""))
    if name == "Flow":
        return "<Flow>"
    if isinstance(v, dict):
        return tuple(sorted((repr(k), _norm(x)) for k, x in v.items()))
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return type(v).__name__, v
    return repr(v)


def _fields(obj):
    """Field name -> value, over the pure class's __slots__ (the twin has the same names)."""
    ref = getattr(sys.modules["middlebox.core.multipath"], type(obj).__name__)
    return {n: _norm(getattr(obj, n)) for n in ref.__slots__}


def _j_data(p, j, payload):
    """MPair.j_data, with the DSS checksum when the flow has checksums."""
    if not p.csum:
        return p.j_data(j, payload)
    dsn = (p.s_idsn + p.s_drel) & M64
    dss = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=dsn, dsn64=True, subflow_seq=j.s_nxt,
              data_len=len(payload), csum=dss_checksum(dsn, j.s_nxt, len(payload), payload))
    buf = p.j_ack(j, 0x18, payload, (dss,))
    p.s_drel += len(payload)
    j.s_nxt += len(payload)
    return buf


def _trace(cls, ops, v6, sack, repair, csum, seed, isn, wscale):
    rnd = random.Random(seed)
    near = random.Random(seed ^ 0x5A5A)

    def randbits(k):
        if k == 32:  # join ISNs and nonces: just below the wrap
            return (M32 - near.randrange(0, 4000)) & M32
        return rnd.getrandbits(k)

    def idsn(key, version=1):  # IDSNs just below 2^64: DSNs wrap within the first 64 KB
        return M64 - (REAL_IDSN(key, version) & 0xFFFF)

    conv_mod = sys.modules[cls.__module__]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(secrets, "randbits", randbits)
        m.setattr(secrets, "randbelow", rnd.randrange)
        m.setattr(conv_mod, "key_idsn", idsn)
        m.setattr(H, "key_idsn", idsn)
        m.setattr(T, "key_idsn", idsn)
        kw = {"repair_bytes": 40000} if repair else {}
        if csum:
            kw["checksum"] = True
        p = MPair(2, config=mp_config(2, **kw), v6=v6, guest_isn=(M32 - isn) & M32,
                  server_isn=(M32 - 2 * isn - 7) & M32, server_checksum=csum)
        p.conv = cls(p.cfg)
        p.join_sack = sack
        syn_opts = p.g_opts

        def g_opts(syn=False, sack=()):
            if syn:
                return encode_tcp_options(mss=1460, wscale=wscale, sack_perm=True, ts_val=1, ts_ecr=0)
            return syn_opts(syn, sack)
        p.g_opts = g_opts
        trace = [("start", [_action(a) for a in p.go_multipath()])]
        ups = sorted(p.joins)
        for u in ups:
            p.joins[u].s_isn = (M32 - isn - 1000 * u) & M32
            trace.append(("join", [_action(a) for a in p.join_up(u)]))
        flow = p.flow
        got = {}
        sent = {u: [] for u in ups}
        g_rcv, g_win = flow.rcv_rel, 502

        def note(acts):
            for a in acts or []:
                if isinstance(a, Inject):
                    pkt = parse_packet(a.data)
                    if pkt.dst == p.g_bytes and pkt.payload_len:
                        got[(pkt.seq - flow.server_isn) & M32] = pkt.payload_len
            return [_action(a) for a in acts or []]

        for op, x in ops:
            u = ups[x % len(ups)]
            j = p.joins[u]
            if op in ("data", "lose"):
                buf = _j_data(p, j, bytes([0x30 + x % 64]) * (1 + x % 1400))
                sent[u].append(buf)
                acts = p.j_in(buf) if op == "data" else []
            elif op == "dup":
                old = sent[u]
                acts = p.j_in(old[x % len(old)]) if old else []
            elif op == "gack":
                held = g_rcv
                while held in got:
                    held += got[held]
                g_rcv = max(g_rcv, held - (x % 3) * 500 * (held - g_rcv >= 1500))
                g_win = max(1, (x // 7) % 65536) if x % 5 == 0 else max(1, (x // 7) % 503)
                p.g_rcv = (flow.server_isn + g_rcv) & M32
                acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x10, window=g_win))
            elif op == "gdata":
                pl = bytes([0x61 + x % 26]) * (1 + x % 1400)
                acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x18, pl, window=g_win))
                p.g_nxt = (p.g_nxt + len(pl)) & M32
            elif op == "sack":
                j.s_rcv = p.path(u).snd_nxt
                p.c_dack = (p.g_nxt - p.g_isn) & M32
                acts = p.j_in(p.j_ack(j))
            elif op == "jsack":  # a duplicate ACK on the join with a SACK block above its snd_una
                q = p.path(u)
                una, nxt = q.snd_una, q.snd_nxt
                if nxt - una > 2:
                    lo = una + 1 + x % (nxt - una - 1)
                    hi = min(nxt, lo + 1 + (x // 3) % 3000)
                    tcp = encode_tcp_options(sack=(((j.c_isn + lo) & M32, (j.c_isn + hi) & M32),))
                    buf = p.j_packet(j, j.s_isn + j.s_nxt, j.c_isn + una, 0x10, (p.dack(),), tcp=tcp)
                    acts = p.j_in(buf)
                else:
                    acts = []
            elif op == "jrst":  # a RST on the join: at rcv_nxt (x % 4 == 0) or within the window
                q = p.path(u)
                off = 0 if x % 4 == 0 else 1 + x % 60000
                acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt + off, j.c_isn + q.snd_nxt, 0x14))
            elif op == "jodd":  # seq or ack outside the windows
                q = p.path(u)
                seq = j.s_isn + j.s_nxt + (0x80000000 if x % 2 else 0)
                ack = j.c_isn + q.snd_nxt + (0 if x % 2 else 0x40000000 + x)
                acts = p.j_in(p.j_packet(j, seq, ack, 0x10, (p.dack(),)))
            elif op == "jkeep":  # the server's keepalive / window probe on the join
                q = p.path(u)
                acts = p.j_in(p.j_packet(j, j.s_isn + j.s_nxt - 1, j.c_isn + q.snd_una, 0x10, (p.dack(),)))
            elif op == "gprobe":  # the guest's window probe
                acts, _ = p.out(p.g_packet((p.g_nxt - 1) & M32, p.g_rcv, 0x10, window=g_win))
            elif op == "dfin":  # server data with the DATA_FIN on a join (x % 2: and the join's FIN)
                pl = bytes([0x30 + x % 64]) * (x % 500)
                dsn = (p.s_idsn + p.s_drel) & M64
                n = len(pl) + 1
                dss = Dss(data_ack=(p.idsn_c + p.c_dack) & M32, data_seq=dsn, dsn64=True,
                          subflow_seq=j.s_nxt if pl else 0, data_len=n, data_fin=True,
                          csum=dss_checksum(dsn, j.s_nxt if pl else 0, n, pl) if p.csum else None)
                fin = 0x01 if x % 2 else 0
                acts = p.j_in(p.j_ack(j, 0x18 | fin, pl, (dss,)))
                p.s_drel += len(pl)
                j.s_nxt += len(pl) + (1 if fin else 0)
            elif op == "gfin":
                acts, _ = p.out(p.g_packet(p.g_nxt, p.g_rcv, 0x11, window=g_win))
                p.g_nxt = (p.g_nxt + 1) & M32
            else:
                acts = p.tick(0.001 + (x % 400) / 1000)
            trace.append((op, note(acts)))
        counters = {c.name: v for c, v in p.conv.counters.items() if v}
        state = _fields(flow.mp) if flow.mp is not None else None
        paths = [_fields(q) for q in flow.mp.paths] if flow.mp is not None else []
        return trace, counters, state, paths


def _check(ops, v6, sack, repair, csum, seed, isn, wscale):
    pure = _trace(core.REFERENCE, ops, v6, sack, repair, csum, seed, isn, wscale)
    twin = _trace(core.Converter, ops, v6, sack, repair, csum, seed, isn, wscale)
    for k, (a, b) in enumerate(zip(pure[0], twin[0])):
        assert a == b, (k, a[0], a, b)
    assert len(pure[0]) == len(twin[0])
    assert pure[1] == twin[1]
    for k, (a, b) in enumerate(zip(pure[3], twin[3])):
        diff = {n: (a[n], b[n]) for n in a if a[n] != b[n]}
        assert not diff, (k, diff)
    diff = {n: (pure[2][n], twin[2][n]) for n in pure[2] if pure[2][n] != twin[2][n]} if pure[2] else {}
    assert not diff, diff


ops2 = st.lists(st.tuples(st.sampled_from(["data", "data", "data", "lose", "dup", "gack", "gack", "gdata",
                                           "gdata", "sack", "jsack", "tick", "jrst", "jodd", "jkeep",
                                           "gprobe", "dfin", "gfin"]),
                          st.integers(0, 10 ** 6)), min_size=5, max_size=60)


def _conversations(op_strategy):
    """300 examples of conversations made of `op_strategy`'s events, with every setting drawn."""
    return lambda test: settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
        given(ops=op_strategy, v6=st.booleans(), sack=st.booleans(), repair=st.booleans(), csum=st.booleans(),
              seed=st.integers(0, 2 ** 32), isn=st.integers(0, 70000), wscale=st.sampled_from([0, 7, 14]))(test))


@_conversations(ops2)
def test_the_compiled_multipath_agrees_with_the_spec_on_odd_segments(ops, v6, sack, repair, csum, seed, isn, wscale):
    _check(ops, v6, sack, repair, csum, seed, isn, wscale)


@_conversations(ops)
def test_the_compiled_multipath_agrees_with_the_spec_at_the_wraps(ops, v6, sack, repair, csum, seed, isn, wscale):
    _check(ops, v6, sack, repair, csum, seed, isn, wscale)
