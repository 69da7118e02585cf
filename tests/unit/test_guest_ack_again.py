"""A guest that resends only bytes the server has data-acked, on subflows that acked them too,
lost our ACK of them: it gets that ACK again (as a TCP receiver answers an old segment), not
silence. Silent, with every subflow acked to its end nothing else could tell it, and the
upload stalled for good on the guest's RTOs (a random run of the hypothesis model,
test_upload_super_packets_split_any_schedule)."""

from __future__ import annotations

from middlebox.core import Direction, Drop, Inject
from middlebox.wire import parse_packet

from tests.unit.test_core_harness import M32
from tests.unit.test_join_acceptability import _with_bytes_on_the_join


def test_a_resend_of_data_acked_bytes_gets_the_ack_again():
    p, j, path = _with_bytes_on_the_join(1)
    mp = p.mp
    p.c_dack = mp.snd_nxt  # the server data-acks all, on the join
    p.j_in(p.j_ack(j))  # (our ACK of it to the guest: lost)
    assert mp.data_ack == mp.snd_nxt and path.snd_una == path.snd_nxt
    acts = p.conv.handle(p.g_data(b"R" * 1000, seq=(p.g_nxt - 1000) & M32), Direction.OUT, p.now)
    assert isinstance(acts[0], Drop) and len(acts) == 2 and isinstance(acts[1], Inject)
    ack = parse_packet(acts[1].data)
    assert ack.dst == p.g_bytes and (ack.ack - p.flow.guest_isn) & M32 == mp.data_ack
    assert p.count("GuestRetransAcked") == 1 and p.count("GuestAckAgain") == 1


def test_a_resend_of_bytes_acked_on_their_subflow_only_stays_quiet():
    """Above the DATA_ACK (the server's TCP has them, its data level waits for a hole
    elsewhere): nothing new to tell the guest, the copy is dropped as before."""
    p, j, path = _with_bytes_on_the_join(1)  # subflow-acked, DATA_ACK unmoved
    assert p.mp.data_ack < p.mp.snd_nxt
    acts = p.conv.handle(p.g_data(b"R" * 1000, seq=(p.g_nxt - 1000) & M32), Direction.OUT, p.now)
    assert len(acts) == 1 and isinstance(acts[0], Drop)
    assert p.count("GuestRetransAcked") == 1 and p.count("GuestAckAgain") == 0
