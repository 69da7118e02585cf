"""handle() never raises and always yields a verdict first: arbitrary bytes, and valid packets
of every phase mutated byte by byte, in both directions (docs/core-api.md); IPv4 and IPv6,
MPTCP v1 and v0, DSS checksums off and on. tests/fuzz_volume.py does the same at volume
(`make test`, `make fuzz`)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlebox.core import ACCEPT, Config, Converter, Counter, Direction, Drop, Rewrite

from tests.unit.test_core_harness import Pair, assert_nfq_writable

VERDICTS = (type(ACCEPT), Rewrite, Drop)
directions = st.sampled_from([Direction.OUT, Direction.IN])


def _check(conv, actions, original: bytes | None = None):
    assert isinstance(actions, list) and actions and isinstance(actions[0], VERDICTS)
    assert conv.counters[Counter.CoreBug] == 0
    if original is not None and isinstance(actions[0], Rewrite):
        assert_nfq_writable(original, actions[0].data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), directions)
def test_arbitrary_bytes(data, direction):
    conv = Converter()
    _check(conv, conv.handle(data, direction, 1.0), data)
    _check(conv, conv.handle(bytes(data), direction, 2.0), bytes(data))
    conv.tick(1000.0)


def _corpus(v6=False, version=1, checksum=False):
    """Valid packets of a whole conversation (handshake, data, DATA_FIN, RST), with
    the direction each one travels and a converter state to replay them into."""
    p = Pair(Config(version=version, checksum=checksum), v6=v6)
    out = []
    out.append((Direction.OUT, p.g_syn()))
    _, syn = p.out(out[-1][1])
    out.append((Direction.IN, p.s_synack(syn)))
    p.inn(out[-1][1])
    p.g_rcv = p.s_isn + 1
    for buf in (p.g_ack(), p.g_data(b"hello")):
        out.append((Direction.OUT, buf))
        _, sent = p.out(buf)
        p.s_receive(sent)
    for buf in (p.s_ack(), p.s_data_pkt(b"world"), p.s_bare_data_fin()):
        out.append((Direction.IN, buf))
        p.inn(buf)
    out.append((Direction.OUT, p.g_fin()))
    return out


# (config, conversation): IPv4 and IPv6, MPTCP v1 and v0, DSS checksums off and on
CORPORA = [
    (Config(version=version, checksum=checksum), _corpus(v6, version, checksum))
    for v6, version, checksum in ((False, 1, False), (True, 1, True), (False, 0, True), (True, 0, False))
]
CORPUS = CORPORA[0][1]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(CORPORA) - 1),
    st.integers(0, len(CORPUS) - 1),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 80),
    st.booleans(),
)
def test_mutated_valid_packets(which, upto, mutations, cut, flip_direction):
    """Replay the conversation up to a point, then feed a mutated packet of it."""
    config, CORPUS = CORPORA[which]
    upto %= len(CORPUS)
    conv = Converter(config)
    now = 1.0
    for direction, buf in CORPUS[:upto]:
        now += 0.01
        _check(conv, conv.handle(buf, direction, now), buf)
    direction, buf = CORPUS[upto]
    data = bytearray(buf)
    for pos, value in mutations:
        data[pos % len(data)] = value
    if cut:
        data = data[: max(0, len(data) - cut)]
    if flip_direction:
        direction = Direction.IN if direction is Direction.OUT else Direction.OUT
    _check(conv, conv.handle(bytes(data), direction, now + 0.01), bytes(data))
    # and the rest of the conversation still goes through without a bug
    for direction, buf in CORPUS[upto + 1 :]:
        now += 0.01
        _check(conv, conv.handle(buf, direction, now), buf)
    conv.tick(now + 10_000)
    assert not conv.flows


def test_not_tcp_and_bad_packets_are_counted():
    conv = Converter()
    udp = bytes.fromhex("4500001c00010000401100000a0000010a010102") + bytes(8)
    assert conv.handle(udp, Direction.OUT, 1.0) == [ACCEPT]
    assert conv.handle(b"\x45\x00", Direction.IN, 1.0) == [ACCEPT]
    assert conv.counters[Counter.NotTCP] == 1 and conv.counters[Counter.BadPacket] == 1
