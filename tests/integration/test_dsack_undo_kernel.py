"""`--dsack-undo` against the kernel: 2 % random loss each way on uplink 2's path, uploads
through both uplinks from a Linux guest. The guest resends what the join lost (we keep no
copy); once the server has the resend, the guest is told by a D-SACK, and its own kernel
must judge that it may undo the window cut (TcpExtTCPDSACKUndo in the guest's namespace).
The bytes are the bytes (sha256), the server's MIB shows no DSS, checksum or fallback error,
and the join's own window answered those losses (JoinCwndCut)."""

from __future__ import annotations

import pytest

from test_join_repair_kernel import lossy_join_transfer


def _undone(mbox, server_factory, down: int = 0) -> None:
    t = mbox.t
    before = t.nstat(t.guest, prefix=None)
    c = lossy_join_transfer(mbox, server_factory, ("--dsack-undo",), seeds=(7, 8), down=down)
    after = t.nstat(t.guest, prefix=None)
    undo = after.get("TcpExtTCPDSACKUndo", 0) - before.get("TcpExtTCPDSACKUndo", 0)
    recv = after.get("TcpExtTCPDSACKRecv", 0) - before.get("TcpExtTCPDSACKRecv", 0)
    print("guest TCPDSACKRecv", recv, "TCPDSACKUndo", undo)
    assert c.get("DsackUndoTX", 0) > 0, c  # resends the join carried, named once the server had them
    assert c.get("JoinCwndCut", 0) > 0, c  # and answered by the join's own window
    assert recv > 0, "the guest's kernel took none of our D-SACKs"
    assert undo > 0, "the guest's kernel undid no window cut"
    assert c.get("JoinRepairTX", 0) == 0, c  # (no copies: the guest resent every lost byte)


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False)
def test_the_guest_undoes_the_cut_of_a_joins_loss(mbox, server_factory):
    _undone(mbox, server_factory, down=8 << 20)


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True)
def test_the_guest_undoes_the_cut_with_dss_checksums(mbox, server_factory):
    """The resends the D-SACK names go at their seqs and mappings with their DSS checksums
    (DataCsumErr stays 0). Upload only, as test_join_repair_kernel.py's checksum tests."""
    _undone(mbox, server_factory)
