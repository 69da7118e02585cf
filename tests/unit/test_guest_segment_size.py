"""A guest without TCP timestamps (Windows' default) sends 12 bytes more per segment than one
with them, at the same MSS: its segments of the MSS limit are segments, not super-packets.
Before, the core took any guest segment above the limit less 12 for a super-packet: on
single path it remembered a mapping for each, on a join it cut each in two, and with DSS
checksums a resend cut otherwise than its original failed the server's sum (a kernel test
saw DataCsumErr, MP_FAIL and the connection reset: tests/integration/test_guest_variants.py,
the no-ts cases)."""

from __future__ import annotations

import pytest

from middlebox.core import Config, Inject
from middlebox.wire import Dss, parse_packet
from tests.unit.test_core_harness import Pair, check_wire, mptcp_of
from tests.unit.test_subflow_table import MPair

LIMIT = Config().mss_limit(4)  # what the guest learns: 1432


def _dss_lens(buf: bytes) -> list:
    pkt, opts = check_wire(buf)
    return [(pkt.payload_len, o.data_len) for o in mptcp_of(buf, pkt, opts) if isinstance(o, Dss)]


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksum"])
def test_single_path_segment_of_the_mss_is_one_segment(checksum):
    p = Pair(timestamps=False, server_checksum=checksum)
    p.established()
    (flow,) = p.conv.flows.values()
    assert not flow.guest_ts
    _, sent = p.out(p.g_data(b"w" * LIMIT))
    assert _dss_lens(sent) == [(LIMIT, LIMIT)]  # one segment, its own mapping
    assert flow.gso_maps is None  # nothing remembered as a super-packet
    p.s_receive(sent)
    assert p.s_stream().endswith(b"w" * LIMIT)


def test_with_timestamps_the_same_size_is_a_super_packet():
    """The contrast: a guest with timestamps cannot send LIMIT bytes in one segment, so that
    many are a super-packet (its mapping remembered for resends of its pieces)."""
    p = Pair(timestamps=True)
    p.established()
    (flow,) = p.conv.flows.values()
    assert flow.guest_ts
    p.out(p.g_data(b"w" * LIMIT))
    assert flow.gso_maps is not None


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksum"])
def test_join_takes_a_segment_of_the_mss_whole(checksum):
    m = MPair(1, timestamps=False, server_checksum=checksum)
    m.go_multipath()
    m.join_up(1)
    assert not m.flow.guest_ts
    seg = m.data_on(1, size=LIMIT)
    assert parse_packet(seg).payload_len == LIMIT
    assert _dss_lens(seg) == [(LIMIT, LIMIT)]
