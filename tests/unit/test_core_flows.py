"""The flow table: 4-tuple keys for both directions, unknown flows, idle expiry by state,
the flow cap with fair eviction: exact LRU per class, passive < time-wait < half-open < active."""

from middlebox.core import ACCEPT, Config, Converter, Direction, State

from tests.unit.test_core_harness import Pair


def test_unknown_mid_stream_flow_passes_untouched():
    p = Pair()
    assert p.out(p.g_data(b"orphan"))[0] == [ACCEPT]
    assert p.inn(p.s_packet(p.s_nxt, p.g_nxt, 0x10, payload=b"x"))[0] == [ACCEPT]
    assert p.count("UnknownFlow") == 2 and not p.conv.flows


def test_both_directions_find_the_same_flow_and_server_syn_creates_none():
    p = Pair()
    p.handshake()
    assert len(p.conv.flows) == 1
    p.inn(p.s_packet(p.s_isn, 0, 0x02, ()))  # a SYN from the server side: not ours
    assert len(p.conv.flows) == 1


def test_idle_expiry_by_state():
    cfg = Config(established_timeout=300, half_open_timeout=60, time_wait_timeout=60)
    half = Pair(cfg)
    half.out(half.g_syn())
    half.tick(59)
    assert len(half.conv.flows) == 1
    half.tick(2)
    assert not half.conv.flows and half.count("FlowExpired") == 1

    est = Pair(cfg)
    est.established()
    est.tick(200)
    assert len(est.conv.flows) == 1
    est.out(est.g_ack())  # activity resets the idle time
    est.tick(250)
    assert len(est.conv.flows) == 1
    est.tick(60)
    assert not est.conv.flows


def test_fallback_flow_expires_and_then_passes_as_unknown():
    p = Pair(server_mptcp=False)
    p.handshake()
    p.tick(301)
    assert not p.conv.flows
    assert p.out(p.g_data(b"late"))[0] == [ACCEPT] and p.count("UnknownFlow") == 1


def _joined(conv, port, now):
    p = Pair(gport=port)
    p.conv = conv
    p.now = now
    return p


def test_flow_cap_evicts_oldest_idle():
    """Within one class (established) the least recently active flow goes; a new SYN finds
    no cheaper class, so an active flow is evicted (FlowEvictedActive)."""
    conv = Converter(Config(max_flows=3))
    pairs = []
    for i in range(3):
        p = _joined(conv, 41000 + i, 100.0 + 10 * i)
        p.established()
        pairs.append(p)
    # the first flow becomes the most recently active one
    pairs[0].now = 200.0
    pairs[0].out(pairs[0].g_data(b"still here"))
    newcomer = _joined(conv, 42000, 201.0)
    newcomer.out(newcomer.g_syn())
    keys = {k[1] for k in conv.flows}
    assert keys == {41000, 41002, 42000}  # 41001 was the oldest idle
    assert newcomer.count("FlowTableFull") == 1 and newcomer.count("FlowEvicted") == 1
    assert newcomer.count("FlowEvictedActive") == 1
    # the evicted flow's packets now pass untouched
    assert pairs[1].out(pairs[1].g_data(b"x"))[0] == [ACCEPT]


def test_syn_flood_evicts_its_own_half_open_flows():
    conv = Converter(Config(max_flows=5))
    est = _joined(conv, 40999, 10.0)
    est.established()
    flood = []
    for i in range(4):
        p = _joined(conv, 43000 + i, 20.0 + i)
        p.out(p.g_syn())
        flood.append(p)
    for i in range(20):
        p = _joined(conv, 44000 + i, 30.0 + i)
        p.out(p.g_syn())
        assert any(k[1] == 40999 for k in conv.flows), "the established flow survives"
        assert len(conv.flows) == 5
    assert est.count("FlowEvictedHalfOpen") == 20 and est.count("FlowEvictedActive") == 0
    # the 4 newest half-open flows remain, plus the established one
    assert {k[1] for k in conv.flows} == {40999, 44016, 44017, 44018, 44019}
    (flow,) = [f for k, f in conv.flows.items() if k[1] == 40999]
    assert flow.state is State.ESTABLISHED
    _, sent = est.out(est.g_data(b"still converting"))
    est.s_receive(sent)  # carries a valid DSS


def test_passive_flows_go_before_half_open_and_active_last():
    conv = Converter(Config(max_flows=4))
    fb = _joined(conv, 45000, 50.0)  # the most recently active, yet passive: goes first
    est = _joined(conv, 45001, 1.0)
    est.established()
    half = _joined(conv, 45002, 2.0)
    half.out(half.g_syn())
    closed = _joined(conv, 45003, 3.0)
    closed.established()
    closed.out(closed.g_packet(closed.g_nxt, closed.g_rcv, 0x14, options=b""))  # RST: CLOSED
    fb.s_mptcp = False
    fb.handshake()  # at 50 s: more recent than all the others (time runs in call order)
    order = []
    for i, now in enumerate((60.0, 61.0, 62.0, 63.0)):
        before = {k[1] for k in conv.flows}
        p = _joined(conv, 46000 + i, now)
        p.out(p.g_syn())
        order.append((before - {k[1] for k in conv.flows}).pop())
    # CLOSED (older passive) then fallback, then the half-open ones (45002, then the newcomers)
    assert order[:3] == [45003, 45000, 45002]
    assert order[3] == 46000  # a newer half-open flow still goes before the established one
    assert any(k[1] == 45001 for k in conv.flows)
    c = conv.counters
    from middlebox.core import Counter
    assert c[Counter.FlowEvictedPassive] == 2 and c[Counter.FlowEvictedHalfOpen] == 2
    assert c[Counter.FlowEvictedActive] == 0


def test_lru_within_a_class_is_exact():
    """A flow active 0.1 s ago is not evicted before one active 0.5 s ago."""
    conv = Converter(Config(max_flows=3))
    a = _joined(conv, 47000, 1.0)
    a.established()
    b = _joined(conv, 47001, 2.0)
    b.established()
    c = _joined(conv, 47002, 3.0)
    c.established()
    b.now, a.now = 99.5 - 0.001, 99.9 - 0.001  # b active 0.5 s before the SYN, a 0.1 s
    b.out(b.g_ack())
    a.out(a.g_ack())
    c.now = 99.95 - 0.001  # c most recent of all
    c.out(c.g_ack())
    n = _joined(conv, 48000, 100.0 - 0.001)
    n.out(n.g_syn())
    assert {k[1] for k in conv.flows} == {47000, 47002, 48000}  # b (0.5 s) went, not a (0.1 s)


def test_established_flows_live_five_days_fallback_300s():
    assert Config().established_timeout == 432000 and Config().fallback_timeout == 300
    est = Pair()
    est.established()
    est.tick(301)
    est.tick(86400)
    assert len(est.conv.flows) == 1
    est.tick(432000 - 86401)
    assert not est.conv.flows


def test_many_flows_stay_bounded():
    conv = Converter(Config(max_flows=50))
    for i in range(500):
        p = Pair(gport=1024 + i)
        p.conv = conv
        p.now = float(i)
        p.out(p.g_syn())
    assert len(conv.flows) == 50
    conv.tick(10_000.0)
    assert not conv.flows


def test_new_syn_after_time_wait_restarts_the_flow():
    p = Pair()
    p.established()
    p.out(p.g_fin())
    p.inn(p.s_ack())
    p.inn(p.s_bare_data_fin())
    p.g_rcv = (p.s_nxt + 1) & 0xFFFFFFFF
    p.out(p.g_ack())
    (flow,) = p.conv.flows.values()
    assert flow.state is State.TIME_WAIT
    p.g_isn += 100_000
    p.out(p.g_syn())
    assert flow.state is State.SYN_SENT and flow.guest_isn == p.g_isn


def test_tick_returns_a_list():
    assert Converter().tick(0.0) == []
    assert Direction.OUT != Direction.IN
