"""Multipath end to end (issue 6): a plain-TCP guest, the converter with an uplink per path,
a Linux MPTCP server. The extra subflows are the middlebox's own (MP_JOIN from each uplink
address); the server's MIB and MPTCP_INFO say they were joined and used, sha256 says the bytes
are the bytes."""

from __future__ import annotations

import socket

import pytest

from conftest import download, is_fallback, payload, upload

MB = 1 << 20

MUST_STAY_ZERO = (
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinNoTokenFound",
    "MPJoinAckHMacFailure", "DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx",
    "DataCsumErr", "MPFailRx", "DssFallback", "DSSCorruptionFallback", "DSSCorruptionReset",
)
JOIN = ("--join-after-bytes", "0", "--join-after-ms", "0")


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def link_bytes(t, ns: str, ifname: str) -> tuple[int, int]:
    base = f"/sys/class/net/{ifname}/statistics/"
    out = t.run(ns, ["cat", base + "tx_bytes", base + "rx_bytes"]).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_two_uplinks_both_carry(mbox, server_factory, family):
    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory(family=family)
    before = t.nstat(t.server)
    links0 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    upload(t, srv, payload(12 * MB))
    download(t, srv, 12 * MB)
    links1 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    dd = delta(before, t.nstat(t.server))
    print(dd, links0, links1)
    print(d.output[-3000:])
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert dd.get("MPJoinSynRx", 0) >= 2 and dd.get("MPJoinAckRx", 0) >= 2, dd
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    for (tx0, rx0), (tx1, rx1) in zip(links0, links1):
        assert tx1 - tx0 > 2 * MB and rx1 - rx0 > 2 * MB, (links0, links1)
    rc, _ = d.stop()
    assert rc == 0, d.output
