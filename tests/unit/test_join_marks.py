"""The guest's DSCP on the packets we make of its flow on the server side (stop 43): its bytes
on extra subflows, our ACKs there and our own ACKs on subflow 1 carried TOS 0 before, so a
QoS policy on the uplinks saw the flow's joins unmarked. The ECN codepoint is not copied:
joins negotiate no ECN (RFC 3168 §6.1.1: not-ECT), and subflow 1's own ECN is the guest's,
on the guest's own segments."""

from __future__ import annotations

import struct

import pytest

from middlebox.core import Direction
from middlebox.wire import parse_packet
from middlebox.wire.packet import ipv4_checksum
from tests.unit.test_subflow_table import MPair

EF_ECT0 = 0xBA  # DSCP EF (46) and ECT(0)


def _tos(buf: bytes) -> int:
    return buf[1] if buf[0] >> 4 == 4 else (buf[0] << 4 | buf[1] >> 4) & 0xFF


def _marked(buf: bytes, tos: int) -> bytes:
    b = bytearray(buf)
    if b[0] >> 4 == 4:
        b[1] = tos
        b[10:12] = b"\0\0"
        b[10:12] = struct.pack("!H", ipv4_checksum(bytes(b), 5))
    else:
        b[0] = 0x60 | tos >> 4
        b[1] = (tos & 0x0F) << 4 | b[1] & 0x0F
    return bytes(b)


@pytest.mark.parametrize("v6", [False, True])
def test_join_data_and_acks_carry_the_guests_dscp_without_its_ecn(v6):
    p = MPair(2, v6=v6)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    on_join = None
    for _ in range(200):
        buf = _marked(p.g_data(b"q" * 1000), EF_ECT0)
        assert _tos(buf) == EF_ECT0 and parse_packet(buf)
        p.now += 0.001
        acts = p.conv.handle(buf, Direction.OUT, p.now)
        on_join = next((a.data for a in acts[1:] if p.label(a.data) == "data@1"), None)
        if on_join is not None:
            break
    assert on_join is not None, "no guest data went on the join"
    assert _tos(on_join) == EF_ECT0 & 0xFC
    # our ACK of the server's bytes on the join, and the guest's ACK of them on subflow 1
    acts = p.j_in(p.j_data(j, b"d" * 700))
    ours = [a.data for a in acts[1:] if p.label(a.data) == "ack@1"]
    assert ours and all(_tos(x) == EF_ECT0 & 0xFC for x in ours), [p.label(a.data) for a in acts[1:]]


def test_a_guest_that_changes_its_dscp_changes_ours():
    p = MPair(2)
    p.go_multipath()
    p.join_up(1)
    seen = set()
    for i in range(200):
        tos = 0x28 if i < 100 else 0x00 | 0x01  # AF11, then best effort with ECT(1)
        buf = _marked(p.g_data(b"r" * 1000), tos)
        p.now += 0.001
        for a in p.conv.handle(buf, Direction.OUT, p.now)[1:]:
            if p.label(a.data) == "data@1":
                seen.add((i >= 100, _tos(a.data)))
    assert seen == {(False, 0x28), (True, 0x00)}, seen
