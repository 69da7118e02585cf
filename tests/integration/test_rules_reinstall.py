"""`rules install` run again while connections convert (configuration management re-applying
it, an operator adding an uplink): no packet of a converting connection may slip past the
daemon meanwhile. One that did (guest data without a mapping, or a join segment reaching the
stack, which resets the join) made the server fall back or lose a subflow."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import download, install_rules, is_fallback, payload, upload

MB = 1 << 20
JOIN = ("--join-after-bytes", "0", "--join-after-ms", "0")
MUST_STAY_ZERO = (
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinNoTokenFound",
    "MPJoinAckHMacFailure", "DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx",
    "DataCsumErr", "MPFailRx", "DssFallback", "DSSCorruptionFallback", "DSSCorruptionReset",
)


@pytest.mark.one_backend
@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False)
def test_rules_installed_again_mid_transfer_let_nothing_slip_past(mbox, server_factory):
    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    errors: list = []

    def transfer(up: bool) -> None:
        try:
            if up:
                upload(t, srv, payload(40 * MB, seed=3), timeout=60)
            else:
                download(t, srv, 40 * MB, timeout=60)
        except Exception as e:  # asserted below
            errors.append(f"{'upload' if up else 'download'}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=transfer, args=(up,)) for up in (True, False)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    reinstalls = 0
    while any(th.is_alive() for th in threads) and reinstalls < 6:
        install_rules(t, True)
        reinstalls += 1
        time.sleep(0.1)
    for th in threads:
        th.join(90)
    after = t.nstat(t.server)
    rc, _ = d.stop()
    dd = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(reinstalls, dd, d.output[-2500:])
    assert reinstalls >= 3
    assert not errors, errors
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    assert dd.get("MPJoinSynRx", 0) == dd.get("MPJoinAckRx", 0) == 2, dd
    assert "UnknownFlow" not in d.output, d.output[-2500:]
    assert not dd.get("MPFastcloseRx") and not dd.get("MPRstRx"), dd  # both closed cleanly
    assert rc == 0
