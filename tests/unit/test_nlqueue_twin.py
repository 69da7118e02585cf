"""The netlink backend's per-batch path: the compiled `middlebox._cnlqueue` against its
reference `middlebox/io/nlqueue.py`, and both against the rules of docs/fastpath.md §4.

No kernel here: the engine reads queue messages from one end of a datagram socketpair and
writes its verdicts back into it, so the test plays the kernel: it writes NFQNL_MSG_PACKET
messages (the attributes the kernel sends) and reads the verdict messages. The same message
sequence through both twins must give the same verdict bytes, the same injections, the
same tallies.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlebox.io import nlqueue
from middlebox.wire import REFERENCE as WIRE

try:
    from middlebox import _cnlqueue
except ImportError:  # not built: the guard test (test_guard_compiled.py) says so
    _cnlqueue = None

TWINS = [nlqueue] + ([_cnlqueue] if _cnlqueue is not None else [])
GUEST_IF, SERVER_IF = 7, 9
CSUMNOTREADY, GSO, NOTVERIFIED = (nlqueue.NFQA_SKB_CSUMNOTREADY, nlqueue.NFQA_SKB_GSO,
                                  nlqueue.NFQA_SKB_CSUM_NOTVERIFIED)


# -- the kernel's side ---------------------------------------------------------------------


def packet_message(queue: int, packet_id: int, payload: bytes, indev: int = GUEST_IF,
                   skb_info: int = 0, cap_len: int = 0, hook: int = 2) -> bytes:
    attrs = nlqueue.attr(nlqueue.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, hook))
    attrs += nlqueue.attr(nlqueue.NFQA_IFINDEX_INDEV, struct.pack("!I", indev))
    if cap_len:
        attrs += nlqueue.attr(nlqueue.NFQA_CAP_LEN, struct.pack("!I", cap_len))
    if skb_info:
        attrs += nlqueue.attr(nlqueue.NFQA_SKB_INFO, struct.pack("!I", skb_info))
    attrs += nlqueue.attr(nlqueue.NFQA_PAYLOAD, payload)
    body = struct.pack("!BBH", socket.AF_INET, 0, queue) + attrs
    return struct.pack("=IHHII", 16 + len(body), nlqueue.MSG_PACKET, 0, 0, 0) + body


def verdicts(data: bytes) -> list[tuple[int, int, int, bytes | None]]:
    """(queue, packet id, verdict, payload or None) of each verdict message."""
    out, off = [], 0
    while off + 16 <= len(data):
        length, kind, flags = struct.unpack_from("=IHH", data, off)
        assert kind == nlqueue.MSG_VERDICT and flags == nlqueue.NLM_F_REQUEST
        queue = struct.unpack_from("!H", data, off + 18)[0]
        a, end = off + 20, off + length
        verdict = packet_id = None
        payload = None
        while a + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, a)
            if atype == nlqueue.NFQA_VERDICT_HDR:
                verdict, packet_id = struct.unpack_from("!II", data, a + 4)
            elif atype == nlqueue.NFQA_PAYLOAD:
                payload = bytes(data[a + 4:a + alen])
            a += (alen + 3) & ~3
        out.append((queue, packet_id, verdict, payload))
        off += (length + 3) & ~3
    assert off == len(data), "verdict messages must be 4-byte aligned, back to back"
    return out


def tcp4(payload_len: int, src="10.0.0.2", dst="10.9.0.2", options=b"", flags=0x18,
         seq=1000, ack=2000, csum: str = "full") -> bytes:
    """An IPv4 TCP packet; `csum`: "full" (valid checksum) or "pseudo" (what a CSUMNOTREADY
    packet holds: the pseudo-header sum, not inverted)."""
    rnd = random.Random(payload_len)
    payload = bytes(rnd.getrandbits(8) for _ in range(min(payload_len, 4096)))
    payload = (payload * (payload_len // max(len(payload), 1) + 1))[:payload_len]
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, seq, ack, (20 + len(options)) // 4 << 4, flags,
                      500, 0, 0) + options + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", ~nlqueue._fold(nlqueue._sum16(ip)) & 0xFFFF) + ip[12:]
    pkt = ip + tcp
    if csum == "pseudo":
        check = nlqueue.pseudo_sum(pkt, 20)
    else:
        p = WIRE["parse_packet"](pkt)
        check = WIRE["tcp_checksum"](pkt, p)
    return pkt[:36] + struct.pack("!H", check) + pkt[38:]


def tcp6(payload_len: int) -> bytes:
    payload = bytes(range(256)) * (payload_len // 256 + 1)
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 5, 6, 5 << 4, 0x18, 500, 0, 0) + payload[:payload_len]
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                     socket.inet_pton(socket.AF_INET6, "fd00::2"),
                     socket.inet_pton(socket.AF_INET6, "fd09::2"))
    pkt = ip + tcp
    p = WIRE["parse_packet"](pkt)
    check = WIRE["tcp_checksum"](pkt, p)
    return pkt[:56] + struct.pack("!H", check) + pkt[58:]


def checksum_ok(pkt: bytes) -> bool:
    p = WIRE["parse_packet"](pkt)
    return struct.unpack_from("!H", pkt, p.ip_hlen + 16)[0] == WIRE["tcp_checksum"](pkt, p)


# -- a core for the engine ---------------------------------------------------------------------


class Accept:
    pass


class Rewrite:
    def __init__(self, data):
        self.data = data


class Drop:
    pass


class Inject:
    def __init__(self, data):
        self.data = data


ACCEPT = Accept()


def grow(data: bytes) -> bytes:
    """The guest segment with 20 more option bytes (an MPTCP-sized option: NOPs here), its IP
    length and checksum and TCP checksum updated as the wire layer's `rewrite` does it
    (incrementally from the packet's own field)."""
    p = WIRE["parse_packet"](data)
    start, end = p.ip_hlen + 20, p.payload_off
    options = bytes(data[start:end]) + b"\x01" * 20
    return WIRE["rewrite"](data, p, options=options)


class Core:
    """A scripted core: the action depends on the packet's first payload byte, so both twins
    see the same decisions. Records what it was handed."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, object]] = []

    def handle(self, data, direction, now):
        self.seen.append((data, direction))
        p = WIRE["parse_packet"](data)
        k = data[p.payload_off] % 8 if p.payload_len else 0
        if k == 1:
            return [Rewrite(grow(data))]
        if k == 2:
            return [Drop()]
        if k == 3:
            raise ValueError("scripted core bug")
        if k == 4:
            return [Rewrite(grow(data)), Inject(b"\x45inject-" + bytes([data[-1]]))]
        if k == 5:
            return [object()]  # not a verdict
        if k == 6:
            return [Rewrite(bytearray(grow(data)))]  # not exact bytes
        return [ACCEPT]


class Harness:
    """One twin's engine on a socketpair, with the daemon's callbacks."""

    def __init__(self, twin, companion: int = 1, handler: bool = True) -> None:
        self.kernel, self.ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.kernel, self.ours):
            s.setsockopt(socket.SOL_SOCKET, nlqueue.SO_SNDBUFFORCE, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, nlqueue.SO_RCVBUFFORCE, 8 << 20)
            s.setblocking(False)
        self.engine = twin.Engine(self.ours, companion)
        self.core = Core()
        self.bugs: list[str] = []
        self.injected: list[bytes] = []
        self.kinds = {Accept: 0, Rewrite: 1, Drop: 2}
        if handler:
            self.engine.set_handler(self.core.handle, {GUEST_IF}, "OUT", "IN", self.kind,
                                    lambda where, e: self.bugs.append(f"{where}:{type(e).__name__}"),
                                    lambda actions: self.injected.extend(a.data for a in actions))

    def kind(self, verdict) -> int:
        k = self.kinds.get(type(verdict), -1)
        if k == 0:
            self.engine.accept_type = type(verdict)
        elif k == 1:
            self.engine.rewrite_type = type(verdict)
        elif k == 2:
            self.engine.drop_type = type(verdict)
        return k

    def run(self, messages: list[bytes], budget: int = 1000) -> bytes:
        for m in messages:
            self.kernel.send(m)
        n, enobufs = self.engine.pump(budget)
        assert (n, enobufs) == (min(len(messages), budget), 0)
        out = b""
        while True:
            try:
                out += self.kernel.recv(1 << 23)
            except BlockingIOError:
                return out

    def tallies(self) -> dict:
        e = self.engine
        return {k: getattr(e, k) for k in (
            "packets", "rewritten", "dropped", "gso_packets", "gso_bytes", "requeued_truncated",
            "requeued_oversize", "oversize_unconverted", "nl_errors", "send_errors", "csum_full",
            "csum_pseudo")}

    def close(self) -> None:
        self.kernel.close()
        self.ours.close()


@pytest.fixture(params=TWINS, ids=lambda m: m.IMPLEMENTATION)
def twin(request):
    return request.param


# -- the rules, each twin ----------------------------------------------------------------------


def test_passthrough_accepts_without_payload(twin):
    h = Harness(twin, handler=False)
    out = verdicts(h.run([packet_message(0, i, tcp4(100 + i)) for i in range(5)]))
    assert out == [(0, i, nlqueue.NF_ACCEPT, None) for i in range(5)]
    assert h.tallies()["packets"] == 5
    h.close()


def test_rewrite_by_checksum_state(twin):
    """Full checksum in: the core's incremental update stays right and is sent as it is.
    CSUMNOTREADY alone: a full checksum from scratch. CSUMNOTREADY + GSO in FORWARD or
    PREROUTING (routed on): the pseudo-header sum for the new length. GSO in INPUT: full."""
    h = Harness(twin)
    first = 1  # payload byte % 8 == 1: the scripted core grows the segment
    full = tcp4(1400, csum="full")
    pseudo = tcp4(1400, csum="pseudo")
    sup = tcp4(60000, csum="pseudo")
    msgs = [packet_message(0, 1, _first(full, first)),
            packet_message(0, 2, _first(full, first), skb_info=NOTVERIFIED),
            packet_message(0, 3, _first(pseudo, first), skb_info=CSUMNOTREADY),
            packet_message(0, 4, _first(sup, first), skb_info=CSUMNOTREADY | GSO),
            packet_message(0, 5, _first(sup, first), skb_info=CSUMNOTREADY | GSO, hook=1),
            packet_message(0, 6, _first(sup, first), skb_info=CSUMNOTREADY | GSO, hook=0)]
    out = verdicts(h.run(msgs))
    assert [v[:3] for v in out] == [(0, i, nlqueue.NF_ACCEPT) for i in range(1, 7)]
    grown = [v[3] for v in out]
    assert all(len(g) == len(m) + 20 for g, m in zip(grown, (full, full, pseudo, sup, sup, sup)))
    assert checksum_ok(grown[0]) and checksum_ok(grown[1]) and checksum_ok(grown[2])
    assert struct.unpack_from("!H", grown[3], 36)[0] == nlqueue.pseudo_sum(grown[3], 20)
    assert checksum_ok(grown[4])  # INPUT: delivered here, verified in full
    assert struct.unpack_from("!H", grown[5], 36)[0] == nlqueue.pseudo_sum(grown[5], 20)
    for g in grown:
        assert struct.unpack_from("!H", g, 2)[0] == len(g)
        assert nlqueue._fold(nlqueue._sum16(g[:20])) == 0xFFFF  # IPv4 header checksum
    t = h.tallies()
    assert (t["gso_packets"], t["rewritten"], t["csum_full"], t["csum_pseudo"]) == (3, 6, 2, 2)
    h.close()


def _first(pkt: bytes, value: int) -> bytes:
    """`pkt` with its first payload byte set to `value` (checksum kept valid / pseudo)."""
    p = WIRE["parse_packet"](pkt)
    i = p.payload_off
    old = struct.unpack_from("!H", pkt, i)[0]
    new = (value << 8) | pkt[i + 1]
    out = pkt[:i] + bytes([value]) + pkt[i + 1:]
    check = struct.unpack_from("!H", pkt, p.ip_hlen + 16)[0]
    if check != nlqueue.pseudo_sum(pkt, p.ip_hlen):  # a real checksum: keep it right
        check = WIRE["csum_replace"](check, struct.pack("!H", old), struct.pack("!H", new))
    return out[:p.ip_hlen + 16] + struct.pack("!H", check) + out[p.ip_hlen + 18:]


def test_truncated_and_oversized_go_to_the_companion(twin):
    h = Harness(twin, companion=1)
    big = _first(tcp4(nlqueue.MAX_PAYLOAD - 40 - 20 - 20 + 1, csum="pseudo"), 1)  # could outgrow
    ok = _first(tcp4(nlqueue.MAX_PAYLOAD - 40 - 40, csum="pseudo"), 1)
    msgs = [packet_message(0, 1, big[:1000], skb_info=CSUMNOTREADY | GSO, cap_len=90000),
            packet_message(0, 2, big, skb_info=CSUMNOTREADY | GSO),
            packet_message(0, 3, ok, skb_info=CSUMNOTREADY | GSO),
            packet_message(1, 4, big[:1000], cap_len=70000)]  # on the companion: no further
    out = verdicts(h.run(msgs))
    requeue = nlqueue.NF_QUEUE | nlqueue.NF_VERDICT_FLAG_QUEUE_BYPASS | (1 << 16)
    assert out[0] == (0, 1, requeue, None)
    assert out[1] == (0, 2, requeue, None)
    assert out[2][:3] == (0, 3, nlqueue.NF_ACCEPT) and len(out[2][3]) == len(ok) + 20
    assert out[3] == (1, 4, nlqueue.NF_ACCEPT, None)
    t = h.tallies()
    assert (t["requeued_truncated"], t["requeued_oversize"], t["oversize_unconverted"]) == (1, 1, 1)
    assert len(h.core.seen) == 1  # the core saw only the one that fits
    h.close()


def test_without_companion_truncated_pass_unchanged(twin):
    h = Harness(twin, companion=-1)
    pkt = tcp4(2000)
    out = verdicts(h.run([packet_message(0, 1, pkt[:500], cap_len=len(pkt))]))
    assert out == [(0, 1, nlqueue.NF_ACCEPT, None)]
    h.close()


def test_core_failures_accept_unchanged(twin):
    h = Harness(twin)
    msgs = [packet_message(0, k, _first(tcp4(300 + k), k)) for k in range(8)]
    out = verdicts(h.run(msgs))
    assert [v[2] for v in out] == [1, 1, 0, 1, 1, 1, 1, 1]  # k=2 dropped
    assert [v[3] is not None for v in out] == [False, True, False, False, True, False, True, False]
    assert h.bugs == ["core:ValueError"]
    assert h.injected == [b"\x45inject-" + bytes([msgs[4][-1]])]
    h.close()


def test_directions_by_input_interface(twin):
    h = Harness(twin)
    h.run([packet_message(0, 1, tcp4(10), indev=GUEST_IF),
           packet_message(0, 2, tcp4(10), indev=SERVER_IF)])
    assert [d for _, d in h.core.seen] == ["OUT", "IN"]
    h.engine.set_guests({SERVER_IF})
    h.run([packet_message(0, 3, tcp4(10), indev=SERVER_IF)])
    assert h.core.seen[-1][1] == "OUT"
    h.close()


def test_big_batches_flush_in_pieces(twin):
    """Verdicts beyond FLUSH_BYTES leave in several sendmsg calls, none lost or reordered."""
    h = Harness(twin)
    msgs = [packet_message(0, i, _first(tcp4(30000 + i, csum="pseudo"), 1),
                           skb_info=CSUMNOTREADY | GSO) for i in range(40)]
    out = verdicts(h.run(msgs))
    assert [v[1] for v in out] == list(range(40))
    assert all(len(v[3]) == 30000 + i + 60 for i, v in enumerate(out))
    h.close()


def test_ipv6_lengths(twin):
    h = Harness(twin)
    pkt = _first(tcp6(1000), 1)
    out = verdicts(h.run([packet_message(0, 1, pkt, skb_info=CSUMNOTREADY)]))
    g = out[0][3]
    assert struct.unpack_from("!H", g, 4)[0] == len(g) - 40 and checksum_ok(g)
    h.close()


# -- the twins agree ---------------------------------------------------------------------------


@pytest.mark.skipif(_cnlqueue is None, reason="compiled twin not built")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3000), st.sampled_from(
    [0, CSUMNOTREADY, CSUMNOTREADY | GSO, NOTVERIFIED]), st.sampled_from([GUEST_IF, SERVER_IF]),
    st.sampled_from([0, 1]), st.booleans(), st.sampled_from([2, 0, 1, 4])), min_size=1, max_size=30))
def test_twins_give_the_same_bytes(spec):
    outs = []
    for twin in (nlqueue, _cnlqueue):
        h = Harness(twin)
        msgs = []
        for i, (k, n, info, indev, queue, truncated, hook) in enumerate(spec):
            pkt = _first(tcp4(n + 2, csum="pseudo" if info & CSUMNOTREADY else "full"), k)
            msgs.append(packet_message(queue, i, pkt[:40] if truncated else pkt, indev, info,
                                       len(pkt) if truncated else 0, hook))
        outs.append((h.run(msgs), h.injected, h.bugs, h.tallies(),
                     [(d, s) for d, s in h.core.seen]))
        h.close()
    assert outs[0] == outs[1]


@pytest.mark.skipif(_cnlqueue is None, reason="compiled twin not built")
@given(st.binary(min_size=0, max_size=200), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]),
       st.sampled_from([0, 1, 2, 4]))
def test_fix_checksums_twins_agree(data, info, hook):
    for pkt in (data, tcp4(len(data), csum="pseudo") if data else b"", tcp6(len(data))):
        assert nlqueue.fix_checksums(pkt, info, hook) == _cnlqueue.fix_checksums(pkt, info, hook)


@pytest.mark.skipif(_cnlqueue is None, reason="compiled twin not built")
def test_send_many_twins_agree():
    """Both send every packet to its own destination (here: UDP sockets stand in for raw)."""
    got = []
    for twin in (nlqueue, _cnlqueue):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(("127.0.0.1", port))  # the port comes from the connection, the address from the packet
        packets = [struct.pack("!BB", 0x45, i) + b"\0" * 14 + socket.inet_aton("127.0.0.1") + b"x" * i
                   for i in range(5)]
        try:
            sent = twin.send_many(tx, packets)
        except OSError:
            sent = -1
        rx.settimeout(0.2)
        seen = []
        try:
            while True:
                seen.append(rx.recv(100))
        except OSError:
            pass
        got.append((sent, seen))
        rx.close()
        tx.close()
    assert got[0] == got[1]


@pytest.mark.parametrize("make", [lambda n: tcp4(n), lambda n: tcp6(n)], ids=["ipv4", "ipv6"])
def test_split_cuts_like_gso(make):
    """An injected super-packet cut for the MTU: same header on every piece, seq advancing,
    FIN/PSH only on the last, every checksum valid, the payload the same bytes."""
    pkt = make(10000)
    p0 = WIRE["parse_packet"](pkt)
    pkt = pkt[:p0.ip_hlen + 13] + bytes([0x19]) + pkt[p0.ip_hlen + 14:]  # FIN PSH ACK
    pieces = nlqueue.split(pkt, 1500)
    assert len(pieces) > 1 and all(len(x) <= 1500 for x in pieces)
    payload = b""
    for i, x in enumerate(pieces):
        p = WIRE["parse_packet"](x)
        assert checksum_ok(x) and p.length == len(x)
        assert p.seq == (p0.seq + len(payload)) & 0xFFFFFFFF
        assert p.flags == (0x19 if i == len(pieces) - 1 else 0x10)
        payload += x[p.payload_off:]
    assert payload == pkt[p0.payload_off:]
    assert nlqueue.split(pkt[:1500], 1500) == [pkt[:1500]]
