"""The window our injected ACKs carry is that of the guest's newest ack (rcv_rel), which they
also carry. A guest ACK that arrives late (its ACKs cross two CPUs' backlogs on the way to the
queue) must not lend its window to that newer ack: a slow reader's window shrinks as its ack
grows, and the old window with the new ack put the right edge beyond the guest's; Linux's
edge never retracts, so the server sent bytes on a join that the guest dropped and only its
MPTCP timer repaired (JoinBeyondGuestWindow, MPTCPRetrans)."""

from __future__ import annotations

from middlebox.wire import parse_packet

from tests.unit.test_subflow_table import ACK, M32, PSH, MPair


def _join_acks(p, acts):
    return [parse_packet(a.data) for a in acts[1:] if p.label(a.data) == "ack@1"]


def _a_kilobyte_in():
    """A multipath pair whose join brought the guest 1000 bytes: (pair, join, flow, the
    guest's ack before them, its ack after them)."""
    p = MPair(1)
    p.go_multipath()
    p.join_up(1)
    j = p.joins[1]
    f = p.flow
    old = (f.server_isn + f.rcv_rel) & M32
    p.j_in(p.j_data(j, b"d" * 1000))
    return p, j, f, old, (old + 1000) & M32


def test_a_late_guest_ack_does_not_lend_its_window_to_the_newest_ack():
    p, j, f, old, new = _a_kilobyte_in()
    p.out(p.g_packet(p.g_nxt, new, ACK, window=400))  # the edge stays where it was
    p.out(p.g_packet(p.g_nxt, old, ACK, window=408))  # sent before it, arrived after it
    assert (f.server_isn + f.rcv_rel) & M32 == new
    acks = _join_acks(p, p.j_in(p.j_data(j, b"e" * 100)))
    assert acks and all(a.window == 400 for a in acks), [a.window for a in acks]
    # a newer ACK (or the same ack again) still updates the window, down or up
    p.out(p.g_packet(p.g_nxt, new, ACK, window=300))
    acks = _join_acks(p, p.j_in(p.j_data(j, b"f" * 100)))
    assert acks and all(a.window == 300 for a in acks), [a.window for a in acks]


def test_a_late_guest_ack_goes_on_with_the_newest_acks_window():
    """The late ACK itself, when it goes on at all, carries the newest ack (DATA_ACK and the
    clamped subflow ack), so it carries that ack's window too."""
    p, j, f, old, new = _a_kilobyte_in()
    p.out(p.g_packet(p.g_nxt, new, ACK, window=400))
    p.g_rcv = new
    acts, sent = p.out(p.g_data(b"u" * 300))  # guest data: it goes on, with an ack...
    late = p.g_packet(p.g_nxt, old, ACK | PSH, b"v" * 300, window=408)  # ...then one sent before it
    p.g_nxt = (p.g_nxt + 300) & M32
    acts, sent = p.out(late)
    out = [parse_packet(a.data) for a in acts if hasattr(a, "data") and a.data]
    # 502: the window of the guest's data segment, the latest with the newest ack
    assert out and all(o.window == 502 for o in out), [(p.label(a.data), parse_packet(a.data).window)
                                                       for a in acts if hasattr(a, "data") and a.data]
    assert p.count("GuestLateAckWindow") == 1
