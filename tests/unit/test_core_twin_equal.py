"""Differential tests: the compiled core (`middlebox._ccore.converter.Converter`) against the
pure-Python spec (`middlebox.core.REFERENCE`), packet by packet.

Both converters get the same event sequence: whole conversations recorded with the two-sided
harness (tests/unit/test_core_harness.py: handshake, data both ways, FIN / DATA_FIN, RST,
MP_FASTCLOSE, MP_FAIL, bad DSS checksums, infinite mappings; IPv4 and IPv6; MPTCP v1 and v0;
checksums asked for or not; one or two flows in one table), then perturbed: packets lost,
duplicated, reordered, bytes overwritten, bits flipped, truncated, seq/ack moved, random bytes
inserted, `tick(now)` calls with small and large time steps. After every event the two must
agree on every action (its type and its bytes or reason), on the whole counter mapping, on
len(flows) and the table's order, and on every field of every flow (the twin's flows expose
theirs as C fields).

The converter draws its MPTCP keys from `secrets` (`new_key`, imported into the converter
module's globals); here both modules' `new_key` draw the same deterministic sequence. The
compiled module looks its globals up at call time, so patching the module attribute works.

The twin is imported directly, so this suite runs in both CI modes. With
MIDDLEBOX_PURE_PYTHON=1 the wire layer (`middlebox.wire`) is the pure reference, and the
compiled core, which types its parsed packets as the wire twin's `Packet`, gets the wire
twin's functions patched into its globals for the test; the pure core keeps the reference
wire, so that run also holds the compiled core + compiled wire against the pure pair.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import middlebox.core.converter as PURE_MODULE
import middlebox.wire as WIRE
from middlebox.core import ACCEPT, Config, Counter, Direction, Drop, Inject, Rewrite
from middlebox.wire import Dss, MpFail, MpFastclose, MpTcpRst, dss_checksum, key_idsn

from tests.unit.test_core_harness import ACK, FIN, PSH, RST, SYN, Pair


def _built(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


# Skipped only when the twin was not built at all; a built twin that fails to import (stale
# against the sources, a missing name) fails here, it does not skip.
BUILT = _built("middlebox._ccore.converter") and _built("middlebox._cwire")
if BUILT:
    import middlebox._ccore.converter as TWIN_MODULE
    import middlebox._cwire as CWIRE
else:
    TWIN_MODULE = CWIRE = None

pytestmark = pytest.mark.skipif(not BUILT, reason="compiled core (middlebox._ccore) not built")

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
KEY_SEED = 0x5EED


# -- deterministic keys, and the compiled core on the compiled wire --------------------------


class KeySource:
    """`new_key` drawing a fixed sequence (never 0), one source per converter."""

    def __init__(self, seed: int = KEY_SEED) -> None:
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        while True:
            key = self.rng.getrandbits(64)
            if key:
                return key


@contextlib.contextmanager
def patched(module, **values):
    """Set module attributes for the duration, then put the old ones back."""
    old = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def twin_wire_globals() -> dict:
    """The wire functions the compiled core must see: the wire twin's, whatever middlebox.wire
    selected (its Packet type is what the compiled core's C code expects)."""
    if WIRE.IMPLEMENTATION == "cython":
        return {}
    return {name: getattr(CWIRE, name) for name in WIRE.TWINNED if hasattr(TWIN_MODULE, name)}


@contextlib.contextmanager
def deterministic_keys(seed: int = KEY_SEED):
    """Both converter modules draw the same key sequence (and the twin runs on the wire twin)."""
    with patched(PURE_MODULE, new_key=KeySource(seed)), patched(
        TWIN_MODULE, new_key=KeySource(seed), **twin_wire_globals()
    ):
        yield


# -- recording whole conversations with the harness -------------------------------------------

GUEST_STEPS = ("gdata", "gack", "gfin", "grst", "gsyn", "gsyn_bare")
SERVER_STEPS = ("sdata", "sack", "sdatafin", "sdatafin_fin", "sfin", "srst", "sfastclose",
                "sfastclose_bad", "smpfail", "sbadcsum", "sinfinite", "snodss")
STEPS = GUEST_STEPS + SERVER_STEPS + ("tick",)


def payload_of(n: int, salt: int) -> bytes:
    return bytes((i * 31 + salt) & 0xFF for i in range(n))


def record_flow(pair: Pair, steps, key_index: int = 0, t0: float = 100.0, prefix=()):
    """Events [(kind, direction, bytes, now)] of one conversation: the handshake through a
    pure converter (the server answers the SYN it produced), then `steps`, each a (name, n)
    pair, built by the harness's guest and server from their own bookkeeping (the converter
    is not consulted after the handshake, so any step order gives well-formed packets);
    `prefix` steps first (ESTABLISHED: the third ACK, first data, the first DATA_ACK)."""
    events = []
    now = t0
    keys = KeySource()  # what a replay's converter draws for its key_index-th flow
    for _ in range(key_index):
        keys()
    with patched(PURE_MODULE, new_key=keys):
        conv = PURE_MODULE.Converter(pair.cfg)
        syn = pair.g_syn()
        events.append(("pkt", Direction.OUT, syn, now))
        first = conv.handle(syn, Direction.OUT, now)[0]
    sent = first.data if isinstance(first, Rewrite) else syn
    synack = pair.s_synack(sent)
    if pair.c_key is None and conv.flows:  # v1: the key rides on the third ACK; it is this one
        pair.c_key = next(iter(conv.flows.values())).local_key
    pair.g_rcv = (pair.s_isn + 1) & M32
    now += 0.001
    events.append(("pkt", Direction.IN, synack, now))
    for name, n in (*prefix, *steps):
        now += 0.001
        buf, direction = _step(pair, name, n)
        if name == "tick":
            events.append(("tick", None, b"", now + n))
            continue
        events.append(("pkt", direction, buf, now))
    return events


def _step(p: Pair, name: str, n: int):
    pay = payload_of(1 + n * 37 % 1400, n)
    mptcp = p.s_mptcp and p.c_key is not None
    if name == "tick":
        return None, None
    if name == "gdata":
        return p.g_data(pay), Direction.OUT
    if name == "gack":
        p.g_rcv = p.s_nxt
        return p.g_ack(sack=(((p.s_nxt + 10) & M32, (p.s_nxt + 20) & M32),) if n % 3 == 0 else ()), Direction.OUT
    if name == "gfin":
        return p.g_fin(), Direction.OUT
    if name == "grst":
        return p.g_packet(p.g_nxt, p.g_rcv, RST | ACK, options=b""), Direction.OUT
    if name == "gsyn":  # a retransmitted SYN (n even) or a new connection on the same 4-tuple
        if n % 2:
            p.g_isn = (p.g_isn + 100_000) & M32
            p.g_nxt = (p.g_isn + 1) & M32
        return p.g_syn(), Direction.OUT
    if name == "gsyn_bare":  # the same SYN again with fewer options (no window scale)
        opts = WIRE.encode_tcp_options(mss=1460, sack_perm=bool(n % 2), ts_val=1 if n % 3 else -1,
                                       ts_ecr=0 if n % 3 else -1)
        return p.g_syn(options=opts), Direction.OUT
    if name == "sdata":
        if mptcp:
            return p.s_data_pkt(pay, dsn64=bool(n % 2), ack64=bool(n % 4 == 1)), Direction.IN
        buf = p.s_packet(p.s_nxt, p.g_nxt, ACK | PSH, (), pay)
        p.s_nxt = (p.s_nxt + len(pay)) & M32
        return buf, Direction.IN
    if name == "sack":
        return (p.s_ack(ack64=bool(n % 2)) if mptcp else p.s_packet(p.s_nxt, p.g_nxt, ACK)), Direction.IN
    if name in ("sdatafin", "sdatafin_fin"):
        if mptcp:
            return p.s_bare_data_fin(fin=name == "sdatafin_fin"), Direction.IN
        name = "sfin"
    if name == "sfin":
        buf = p.s_packet(p.s_nxt, p.g_nxt, ACK | FIN)
        p.s_nxt = (p.s_nxt + 1) & M32
        return buf, Direction.IN
    if name == "srst":
        opts = (MpTcpRst(False, n & 0xF),) if mptcp and n % 2 else ()
        return p.s_packet(p.s_nxt, p.g_nxt, RST | ACK, opts), Direction.IN
    if name in ("sfastclose", "sfastclose_bad"):
        key = (p.c_key or 1) if name == "sfastclose" else (p.s_key ^ n) or 1
        flags = RST | ACK if n % 2 else ACK
        return p.s_packet(p.s_nxt, p.g_nxt, flags, (MpFastclose(key),)), Direction.IN
    if name == "smpfail":
        dsn = (p.s_idsn + n) & M64
        opts = (p.s_dss_ack(), MpFail(dsn)) if mptcp and n % 2 else (MpFail(dsn),)
        return p.s_packet(p.s_nxt, p.g_nxt, ACK, opts), Direction.IN
    if name == "sbadcsum":
        if mptcp and p.csum:
            rel = (p.s_nxt - p.s_isn) & M32
            good = dss_checksum((p.s_idsn + rel) & M64, rel, len(pay), pay)
            return p.s_data_pkt(pay, csum=good ^ 0x5A5A), Direction.IN
        return p.s_data_pkt(pay) if mptcp else p.s_packet(p.s_nxt, p.g_nxt, ACK), Direction.IN
    if name == "sinfinite":
        rel = (p.s_nxt - p.s_isn) & M32
        csum = dss_checksum((p.s_idsn + rel) & M64, rel, 0, b"") if p.csum else None
        dss = Dss(data_ack=None, data_seq=(p.s_idsn + rel) & M64, dsn64=True, subflow_seq=rel,
                  data_len=0, csum=csum)
        buf = p.s_packet(p.s_nxt, p.g_nxt, ACK | PSH, (dss,), pay)
        p.s_nxt = (p.s_nxt + len(pay)) & M32
        return buf, Direction.IN
    if name == "snodss":  # server data without any MPTCP option (a fallback, §3.7)
        buf = p.s_packet(p.s_nxt, p.g_nxt, ACK | PSH, (), pay)
        p.s_nxt = (p.s_nxt + len(pay)) & M32
        return buf, Direction.IN
    raise AssertionError(name)


# -- perturbations ---------------------------------------------------------------------------


def _fix_tcp_checksum(buf: bytes) -> bytes:
    """The same bytes with a correct TCP checksum (when they still parse)."""
    try:
        pkt = WIRE.parse_packet(buf)
    except WIRE.WireError:
        return buf
    out = bytearray(buf)
    struct.pack_into("!H", out, pkt.ip_hlen + 16, 0)
    struct.pack_into("!H", out, pkt.ip_hlen + 16, WIRE.tcp_checksum(bytes(out), pkt))
    return bytes(out)


def _jump(buf: bytes, field: int, delta: int) -> bytes:
    """seq (field 4) or ack (field 8) moved by delta, TCP checksum fixed."""
    try:
        pkt = WIRE.parse_packet(buf)
    except WIRE.WireError:
        return buf
    out = bytearray(buf)
    at = pkt.ip_hlen + field
    struct.pack_into("!I", out, at, (struct.unpack_from("!I", out, at)[0] + delta) & M32)
    return _fix_tcp_checksum(bytes(out))


def perturb(events, ops):
    """Apply perturbation ops (each a tuple: name, index, a, b) to a copy of the events."""
    ev = list(events)
    for name, i, a, b in ops:
        if not ev:
            break
        i %= len(ev)
        kind, direction, buf, now = ev[i]
        if name == "drop":
            del ev[i]
        elif name == "dup":
            ev.insert(i, ev[i])
        elif name == "swap":
            j = a % len(ev)
            ev[i], ev[j] = ev[j], ev[i]
        elif name == "tick":
            ev.insert(i, ("tick", None, b"", now + (b if a % 2 else b * 100.0)))
        elif name == "random":
            ev.insert(i, ("pkt", Direction.OUT if a % 2 else Direction.IN,
                          random.Random(b).randbytes(a % 120), now))
        elif kind == "pkt" and buf:
            data = bytearray(buf)
            if name == "byte":
                data[a % len(data)] = b & 0xFF
            elif name == "bit":
                data[a % len(data)] ^= 1 << (b % 8)
            elif name == "truncate":
                del data[max(0, len(data) - 1 - a % len(data)):]
            elif name == "seq":
                data = bytearray(_jump(bytes(data), 4, (b - 50_000) * (1 + a % 4096)))
            elif name == "ack":
                data = bytearray(_jump(bytes(data), 8, (b - 50_000) * (1 + a % 4096)))
            elif name == "flipdir":
                direction = Direction.IN if direction is Direction.OUT else Direction.OUT
            elif name == "fixcsum":
                data = bytearray(_fix_tcp_checksum(bytes(data)))
            ev[i] = (kind, direction, bytes(data), now)
    # the clock never runs backwards for the converter
    out, last = [], 0.0
    for kind, direction, buf, now in ev:
        last = max(last, now)
        out.append((kind, direction, buf, last))
    return out


# -- comparing ---------------------------------------------------------------------------------


def action_view(a):
    if a is ACCEPT:
        return ("ACCEPT",)
    if isinstance(a, (Rewrite, Inject)):
        assert type(a.data) is bytes, type(a.data)
        return (type(a).__name__, a.data)
    if isinstance(a, Drop):
        return ("Drop", a.reason)
    raise AssertionError(f"not an action: {a!r}")


def _value_view(v, depth=0):
    if isinstance(v, (list, tuple)):
        return tuple(_value_view(x, depth) for x in v)
    if hasattr(type(v), "__slots__") and depth < 2:  # a Subflow (or the like): by fields
        return object_view(v, depth + 1)
    if isinstance(v, bool):
        return int(v)
    return v


def object_view(obj, depth=0, names=None):
    """Field name -> value for the pure object's slots (the twin has the same names)."""
    names = names or getattr(type(obj), "__slots__", ())
    return {n: _value_view(getattr(obj, n), depth) for n in names}


def flow_view(conv, ref_flow_type):
    """The flow table: keys in order, each flow's fields (those of the pure Flow)."""
    names = ref_flow_type.__slots__
    out = []
    for key, flow in conv.flows.items():
        fields = {}
        for n in names:
            try:
                v = getattr(flow, n)
            except AttributeError:  # a C field not exposed to Python: compared by its effects
                v = "<hidden>"
            fields[n] = v
        out.append((key, {n: ("<hidden>" if v == "<hidden>" else _value_view(v)) for n, v in fields.items()}))
    return out


def snapshot(conv, actions):
    return (
        [action_view(a) for a in actions],
        {int(k): v for k, v in conv.counters.items()},
        len(conv.flows),
    )


def replay_both(config: Config, events, compare_flows: bool = True):
    """Feed the events to a fresh pure and a fresh compiled converter; fail at the first
    difference with the event history that led to it."""
    from middlebox.core.flow import Flow as PureFlow

    with deterministic_keys():
        pure = PURE_MODULE.Converter(config)
        twin = TWIN_MODULE.Converter(config)
        for n, (kind, direction, buf, now) in enumerate(events):
            if kind == "tick":
                a, b = pure.tick(now), twin.tick(now)
            else:
                a, b = pure.handle(buf, direction, now), twin.handle(buf, direction, now)
            sa, sb = snapshot(pure, a), snapshot(twin, b)
            if sa != sb:
                raise AssertionError(_difference(config, events, n, sa, sb))
            if compare_flows:
                fa, fb = flow_view(pure, PureFlow), flow_view(twin, PureFlow)
                fb = [(k, {n_: v for n_, v in f.items()}) for k, f in fb]
                hidden = {n_ for _, f in fb for n_, v in f.items() if v == "<hidden>"}
                fa = [(k, {n_: v for n_, v in f.items() if n_ not in hidden}) for k, f in fa]
                fb = [(k, {n_: v for n_, v in f.items() if n_ not in hidden}) for k, f in fb]
                if fa != fb:
                    raise AssertionError(_difference(config, events, n, fa, fb, "flow table"))
        return pure


def _difference(config, events, n, ref, twin, what="actions/counters/len(flows)"):
    lines = [f"twins differ ({what}) at event {n} of {len(events)}, {config}"]
    for k, (kind, direction, buf, now) in enumerate(events[: n + 1]):
        d = "" if direction is None else direction.name
        lines.append(f"  [{k}] {kind} {d} now={now!r} {buf.hex()}")
    if isinstance(ref, tuple) and isinstance(twin, tuple):
        if ref[0] != twin[0]:
            lines.append(f"  pure actions: {ref[0]!r}\n  twin actions: {twin[0]!r}")
        diff = {Counter(k).name: (ref[1].get(k), twin[1].get(k)) for k in set(ref[1]) | set(twin[1])
                if ref[1].get(k) != twin[1].get(k)}
        if diff:
            lines.append(f"  counters (pure, twin): {diff}")
        if ref[2] != twin[2]:
            lines.append(f"  len(flows): pure {ref[2]}, twin {twin[2]}")
    else:
        lines.append(f"  pure: {ref!r}\n  twin: {twin!r}")
    return "\n".join(lines)


# -- strategies ----------------------------------------------------------------------------------

steps_st = st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 2000)), max_size=18)
ops_st = st.lists(
    st.tuples(
        st.sampled_from(("drop", "dup", "swap", "tick", "random", "byte", "bit", "truncate", "seq",
                         "ack", "flipdir", "fixcsum")),
        st.integers(0, 1000), st.integers(0, 100_000), st.integers(0, 100_000),
    ),
    max_size=8,
)
ESTABLISHED = (("gack", 0), ("gdata", 1), ("sack", 0))
scenario_st = st.fixed_dictionaries({
    "v6": st.booleans(),
    "version": st.sampled_from((1, 0)),
    "checksum": st.booleans(),
    "server_mptcp": st.sampled_from((True, True, True, False)),
    "prefix": st.sampled_from((ESTABLISHED, ESTABLISHED, ESTABLISHED, ("gack", 0), ())),
    "server_checksum": st.booleans(),
    "server_version_other": st.integers(0, 9),  # 0: the server speaks the other version
    "timestamps": st.booleans(),
    "max_flows": st.sampled_from((1, 2, 65536)),
})

SETTINGS = settings(max_examples=int(os.environ.get("TWIN_EQUAL_EXAMPLES", "250")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make_events(sc, steps, steps2=None):
    """One conversation (two interleaved ones, on two guest ports, with `steps2`)."""
    cfg = Config(version=sc["version"], checksum=sc["checksum"], max_flows=sc["max_flows"])
    server_version = sc["version"] if sc["server_version_other"] else 1 - sc["version"]
    pairs = []
    for gport, st_ in ((40000, steps), (40001, steps2)):
        if st_ is None:
            continue
        p = Pair(cfg, v6=sc["v6"], server_mptcp=sc["server_mptcp"], server_checksum=sc["server_checksum"],
                 server_version=server_version, timestamps=sc["timestamps"], gport=gport,
                 guest_isn=1000 + gport, server_isn=(5000 + gport * 7919) & M32)
        prefix = sc.get("prefix", ESTABLISHED)
        prefix = (prefix,) if prefix and isinstance(prefix[0], str) else prefix
        pairs.append(record_flow(p, st_, key_index=len(pairs), t0=100.0, prefix=prefix))
    if len(pairs) == 1:
        return cfg, pairs[0]
    merged = sorted(pairs[0] + pairs[1], key=lambda e: e[3])  # interleaved by time (stable)
    return cfg, merged


# -- the tests -------------------------------------------------------------------------------------


@SETTINGS
@given(scenario_st, steps_st, ops_st)
def test_twins_agree_on_perturbed_conversations(sc, steps, ops):
    cfg, events = make_events(sc, steps)
    replay_both(cfg, perturb(events, ops))


@settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 3))
@given(scenario_st, steps_st, steps_st, ops_st)
def test_twins_agree_on_two_interleaved_conversations(sc, steps, steps2, ops):
    cfg, events = make_events(sc, steps, steps2)
    replay_both(cfg, perturb(events, ops))


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=120)), max_size=10), st.booleans())
def test_twins_agree_on_arbitrary_bytes(packets, checksum):
    events = [("pkt", Direction.OUT if out else Direction.IN, buf, 1.0 + k) for k, (out, buf) in enumerate(packets)]
    replay_both(Config(checksum=checksum), events)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("version", [1, 0])
@pytest.mark.parametrize("checksum", [False, True])
def test_twins_agree_on_a_whole_conversation(v6, version, checksum):
    """A clean conversation (no perturbation): both sides close, timers expire the flow."""
    sc = {"v6": v6, "version": version, "checksum": checksum, "server_mptcp": True, "server_checksum": False,
          "server_version_other": 1, "timestamps": True, "max_flows": 65536, "prefix": ESTABLISHED}
    steps = [ ("sdata", 3), ("gack", 1), ("sdata", 4), ("gdata", 9), ("sack", 0),
             ("gfin", 0), ("sdatafin_fin", 0), ("gack", 2), ("sack", 1), ("tick", 1000)]
    cfg, events = make_events(sc, steps)
    pure = replay_both(cfg, events)
    assert pure.counters[Counter.CoreBug] == 0 and pure.counters[Counter.DSSTX] > 0


def test_twins_agree_on_a_syn_retransmitted_without_window_scale():
    """Found by the fuzzing here: a guest SYN retransmission (same ISN) without the window
    scale option, after the server's SYN/ACK (MPC_PENDING), then the guest's third ACK. The
    SYN handler records the option's absence as guest_wscale = -1 and nothing resets it:
    the spec computes `pkt.window << -1` (ValueError: CoreBug, packet accepted), the twin
    shifts a C long long by -1 (undefined behaviour in C) and sends a Rewrite."""
    p = Pair()
    events = record_flow(p, [], prefix=())
    rtx = p.g_syn(options=WIRE.encode_tcp_options(mss=1460, sack_perm=True, ts_val=1, ts_ecr=0))
    p.g_rcv = p.s_nxt
    events += [("pkt", Direction.OUT, rtx, 100.002), ("pkt", Direction.OUT, p.g_ack(), 100.003)]
    pure = replay_both(Config(), events)
    assert pure.counters[Counter.CoreBug] == 0


def test_keys_are_patched_in_both_modules():
    """The compiled module reads `new_key` from its globals at call time (the patch takes)."""
    with deterministic_keys(7):
        a = PURE_MODULE.Converter()
        b = TWIN_MODULE.Converter()
        p = Pair()
        syn = p.g_syn()
        ra = a.handle(syn, Direction.OUT, 1.0)
        rb = b.handle(syn, Direction.OUT, 1.0)
        assert ra[0] == rb[0]
        ka = next(iter(a.flows.values())).local_key
        kb = next(iter(b.flows.values())).local_key
        assert ka == kb == KeySource(7)() and key_idsn(ka, 1) != 0
