"""Soak: repeated inbound downloads (a Linux MPTCP client fetching from the guest's plain
service) under 2 % loss each way on both paths, the client joining the uplink we announce;
captures of the guest side and both uplinks kept for the first download that fails or takes
longer than SOAK_SLOW seconds (not part of `make test`: `make soak-inbound`).

Made for a stall seen once in CI (stop 46's first proof run): in
test_inbound_kernel.py::test_slow_guest_reader_and_loss_both_ways[join-at-announced-uplink]
the 4 MB download outlived the guest service's 60 s. Environment: SOAK_N downloads (default
25), SOAK_SLOW (default 30), SOAK_DIR for the captures (default a fresh temporary
directory, printed)."""

from __future__ import annotations

import os
import tempfile

from adversary import path_loss, soak
from test_inbound_kernel import MB, guest_service, peer_download
from test_outbound_core import core_counters

N = int(os.environ.get("SOAK_N", "25"))
SLOW = float(os.environ.get("SOAK_SLOW", "30"))


def test_soak_inbound_downloads_under_loss(mbox):
    t = mbox.t
    out = os.environ.get("SOAK_DIR") or tempfile.mkdtemp(prefix="soak-inbound-")
    os.makedirs(out, exist_ok=True)
    d = mbox.start(uplinks=True)
    path_loss(t, 2.0, 1)
    path_loss(t, 2.0, 2)
    srv = guest_service(t)
    failed, took = None, []
    try:
        failed, took = soak(t, N, out, lambda i: peer_download(t, srv, 4 * MB), "download", SLOW)
        if failed:
            failed += f"; service {srv.errors}"
    finally:
        rc, _ = d.stop()
        print("seconds per download", took, core_counters(d.output))
    assert failed is None, f"{failed}; captures in {out}"
    assert rc == 0, d.output
