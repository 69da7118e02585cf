"""Cost policy end to end (issue 10): three uplinks shaped alike with costs 1, 2 and 6, the
converter in `--policy cost` (target 2x): the two cheap uplinks carry the transfer, the dear
one (its join open as a backup) almost nothing; the server's MIB shows the backup join and
the MP_PRIO that brought the second uplink in; sha256 both ways. And a small exchange opens no
extra subflow at all (the default join thresholds)."""

from __future__ import annotations

import pytest

from conftest import download, is_fallback, payload, upload
from test_multipath import JOIN, MUST_STAY_ZERO, MB, core_counters, delta, link_bytes

COSTS = (1, 2, 6)


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False, paths=3)
def test_cost_policy_keeps_the_dear_uplink_idle(mbox, server_factory):
    t = mbox.t
    specs = [f"{s},cost={c}" for s, c in zip(t.uplink_specs(), COSTS)]
    d = mbox.start(*JOIN, "--policy", "cost", "--target", "2x", uplinks=specs)
    srv = server_factory()
    before = t.nstat(t.server)
    links0 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    try:
        # (the upload is the longer: the second uplink joins the plan only after SETTLE +
        # SHORT_FOR, ~1.25 s on the first alone; over 16 MB its share of the bytes sent was
        # 20-28 % in a loop of 8 and 13 % once in a proof's run, below the 15 % asserted
        # below; over 32 MB, 35-39 % in a loop of 8)
        upload(t, srv, payload(32 * MB))
        download(t, srv, 16 * MB)
    finally:
        links1 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
        dd = delta(before, t.nstat(t.server))
        rc, _ = d.stop()
        c = core_counters(d.output)
        print({k: v for k, v in dd.items() if v}, c)
    tx = [b[0] - a[0] for a, b in zip(links0, links1)]
    rx = [b[1] - a[1] for a, b in zip(links0, links1)]
    print("bytes sent per uplink", tx, "received", rx)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    # joins over uplinks 2 and 3 as backups (the cheapest carries subflow 1), for 2 flows
    assert dd.get("MPJoinSynBackupRx", 0) == 4, dd
    assert dd.get("MPPrioRx", 0) >= 2 and c.get("PolicyReplan", 0) >= 2, (dd, c)
    # the dear uplink carried < 5 % each way; the second one a real share. The download is
    # the server's to schedule: Linux retransmits at the MPTCP level on a backup subflow when
    # every active one has data outstanding (mptcp_subflow_get_retrans, as I read it). Under
    # a proof's load (MPTCPRetrans 15, the core's JoinBeyondGuestWindow 19) the dear uplink
    # received 15 % of a download once; without such retransmissions, 5 % holds
    assert tx[2] < 0.05 * sum(tx), (tx, rx)
    retrans = dd.get("MPTCPRetrans", 0)
    assert rx[2] < 0.05 * sum(rx) or (retrans and rx[2] < 0.2 * sum(rx)), (tx, rx, retrans)
    assert tx[1] > 0.15 * sum(tx) and rx[1] > 0.15 * sum(rx), (tx, rx)
    assert rc == 0, d.output


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False, paths=3)
def test_small_exchange_opens_no_extra_subflow(mbox, server_factory):
    t = mbox.t
    specs = [f"{s},cost={c}" for s, c in zip(t.uplink_specs(), COSTS)]
    d = mbox.start("--policy", "cost", uplinks=specs)  # default thresholds: 64 KiB or 1 s
    srv = server_factory()
    before = t.nstat(t.server)
    upload(t, srv, payload(10_000))
    download(t, srv, 10_000)
    dd = delta(before, t.nstat(t.server))
    rc, _ = d.stop()
    c = core_counters(d.output)
    assert dd.get("MPCapableACKRX", 0) == 2, dd  # both converted ...
    assert not dd.get("MPJoinSynRx", 0) and not c.get("MPJoinSynTX"), (dd, c)  # ... single path
    assert rc == 0, d.output
