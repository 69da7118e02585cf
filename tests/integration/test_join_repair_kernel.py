"""Repair inside the middlebox (`--repair-bytes`) against the kernel: 2 % random loss each
way on uplink 2's path, an upload and a download through both uplinks. The middlebox resends
the join's lost segments from its copies (the same seq and mapping: the server's MIB must
show no DSS, checksum or fallback error), the bytes are the bytes (sha256), and its copies
are gone at the end. With `--repair-window` the join's own congestion window is cut for them."""

from __future__ import annotations

import pytest

import adversary
from conftest import download, is_fallback, payload, upload
from test_multipath import JOIN, MB, MUST_STAY_ZERO, core_counters, delta


def lossy_join_transfer(mbox, server_factory, args=(), seeds=(7,), down: int = 0) -> dict:
    """2 % random loss each way on uplink 2's path; the daemon with `args` and the joins; a
    12 MB upload per seed, then a download of `down` bytes; the server's MIB clean, no
    fallback, something lost, a join established, a clean exit. The core's counters."""
    t = mbox.t
    adversary.path_loss(t, 2, path=2)
    d = mbox.start(*JOIN, *args, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    try:
        for seed in seeds:
            upload(t, srv, payload(12 * MB, seed=seed))
        if down:
            download(t, srv, down)
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
    assert c.get("MPJoinEstablished", 0) >= len(seeds), c
    assert rc == 0, d.output
    return c


def _lossy_transfer(mbox, server_factory, down: int, *extra: str):
    c = lossy_join_transfer(mbox, server_factory, ("--repair-bytes", "262144", *extra), down=down)
    assert c.get("JoinRepairTX", 0) > 0, c  # losses on the join were resent from the copies
    if "--repair-window" in extra:
        assert c.get("JoinCwndCut", 0) > 0, c  # and answered by the join's own window


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False)
def test_join_losses_repaired_by_the_middlebox_keep_the_bytes(mbox, server_factory):
    _lossy_transfer(mbox, server_factory, 8 * MB)


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True)
def test_join_losses_repaired_with_dss_checksums(mbox, server_factory):
    """The copies carry their DSS checksums: the server sums the resent bytes as the first
    ones (DataCsumErr stays 0). Upload only (the download with checksums has a known issue
    on the netlink backend, test_multipath.py's three-uplink test)."""
    _lossy_transfer(mbox, server_factory, 0)


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, checksum=True)
def test_join_losses_repaired_with_the_joins_own_window(mbox, server_factory):
    """--repair-window: the losses repair hides from the guest cut the join's own window,
    and bytes the join was given without room in it go unkept (their loss is the guest's,
    the path without repair: with DSS checksums that path stalled before one mapping per
    segment, test_checksum_upload_loss.py). Upload only, as the checksum test above."""
    _lossy_transfer(mbox, server_factory, 0, "--repair-window")
