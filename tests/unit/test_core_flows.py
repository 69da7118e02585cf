"""The flow table: 4-tuple keys for both directions, unknown flows, idle expiry by state,
the flow cap with eviction of the oldest idle flow (docs/core-api.md)."""

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


def test_flow_cap_evicts_oldest_idle():
    conv = Converter(Config(max_flows=3))
    pairs = []
    for i in range(3):
        p = Pair(gport=41000 + i)
        p.conv = conv
        p.now = 100.0 + 10 * i
        p.handshake()
        pairs.append(p)
    # the first flow becomes the most recently active one
    pairs[0].now = 200.0
    pairs[0].out(pairs[0].g_data(b"still here"))
    newcomer = Pair(gport=42000)
    newcomer.conv = conv
    newcomer.now = 201.0
    newcomer.out(newcomer.g_syn())
    keys = {k[1] for k in conv.flows}
    assert keys == {41000, 41002, 42000}  # 41001 was the oldest idle
    assert newcomer.count("FlowTableFull") == 1 and newcomer.count("FlowEvicted") == 1
    # the evicted flow's packets now pass untouched
    assert pairs[1].out(pairs[1].g_data(b"x"))[0] == [ACCEPT]


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
