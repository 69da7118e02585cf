"""An upload with DSS checksums through two uplinks, 2 % random loss each way on uplink 2,
no repair. Before the fix a GSO super-packet went out with one mapping over all its
segments; Linux takes none of a checksummed mapping before all of it is in, so a loss inside
held back the data-level head while the server's subflow had acked it. The guest resent
that head alone after its RTO, the bytes the server lacked lay above it, and the transfer
stalled for good: 1 run in 2 on the netlink backend (the NetfilterQueue backend sees no
super-packets). The bytes are the bytes, no DSS or checksum error, no fallback."""

from __future__ import annotations

import pytest

from test_join_repair_kernel import lossy_join_transfer


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True)
def test_checksum_upload_under_loss_never_stalls(mbox, server_factory):
    # two connections (the stall came in about half of them), no repair
    lossy_join_transfer(mbox, server_factory, seeds=(11, 12))
