"""Soak: repeated uploads of a guest variant through two uplinks with DSS checksums, every one
checked by sha256, captures of the guest side and both uplinks kept for the first that fails
(not part of `make test`: `make soak-guest`).

Made for a hang seen once in CI (stop 45: test_guest_variants, a guest without timestamps
and SACK, `no-ts-no-sack-multipath-checksum`, its upload timed out); 150 uploads here did
not reproduce it, and a fuzzer of the unit suite's model then found its two deadlocks (stop
46, tests/unit/test_multipath_model.py); this soak then found a third stall
(DupAckOrphanFwd). Environment: SOAK_N uploads (default 25), SOAK_VARIANT (a key of
test_guest_variants.SYSCTLS but mtu-1400, default no-ts-no-sack), SOAK_DIR for the captures
(default a fresh temporary directory, printed). Each upload has the CI test's 60 s: such a
guest loses a retransmission to the paths' queues now and then and waits out a backed-off
RTO (plain TCP alike), so 30 s failed 1 upload in 30 without a fault of ours."""

from __future__ import annotations

import os
import tempfile

import pytest

from adversary import soak
from conftest import greet_upload, payload
from test_guest_variants import SYSCTLS
from test_multipath import JOIN, MB, core_counters

N = int(os.environ.get("SOAK_N", "25"))
VARIANT = os.environ.get("SOAK_VARIANT", "no-ts-no-sack")


@pytest.mark.one_backend
@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True,
                      sysctls={"guest": SYSCTLS[VARIANT]})
def test_soak_uploads(mbox, server_factory):
    t = mbox.t
    out = os.environ.get("SOAK_DIR") or tempfile.mkdtemp(prefix="soak-guest-")
    os.makedirs(out, exist_ok=True)
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    failed, took = None, []
    try:
        failed, took = soak(t, N, out, lambda i: greet_upload(t, srv, 20000, payload(6 * MB, seed=5 + i),
                                                              timeout=60), "upload")
    finally:
        rc, _ = d.stop()
        print("seconds per upload", took, core_counters(d.output))
    assert failed is None, f"{failed}; captures in {out}"
    assert rc == 0, d.output
