"""An upload with DSS checksums through two uplinks, 2 % random loss each way on uplink 2,
no repair. Before the fix a GSO super-packet went out with one mapping over all its
segments; Linux takes none of a checksummed mapping before all of it is in, so a loss inside
held back the data-level head while the server's subflow had acked it. The guest resent
that head alone after its RTO, the bytes the server lacked lay above it, and the transfer
stalled for good: 1 run in 2 on the netlink backend (the NetfilterQueue backend sees no
super-packets). The bytes are the bytes, no DSS or checksum error, no fallback."""

from __future__ import annotations

import pytest

import adversary
from conftest import is_fallback, payload, upload
from test_multipath import JOIN, MB, MUST_STAY_ZERO, core_counters, delta


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True)
def test_checksum_upload_under_loss_never_stalls(mbox, server_factory):
    t = mbox.t
    adversary.path_loss(t, 2, path=2)
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    try:
        for seed in (11, 12):  # two connections: the stall came in about half of them
            upload(t, srv, payload(12 * MB, seed=seed))
    finally:
        dd = delta(before, t.nstat(t.server))
        dropped = adversary.path_loss_dropped(t, path=2)
        rc, _ = d.stop()
        c = core_counters(d.output)
        print({k: v for k, v in dd.items() if v}, dropped, c)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    assert dropped > 0, "nothing was lost: the test would prove nothing"
    assert c.get("MPJoinEstablished", 0) >= 2, c
    assert rc == 0, d.output
