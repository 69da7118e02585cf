"""Outbound role end to end (issue 3): a plain-TCP guest, `middlebox run` with the real core in
the mbox namespace, a Linux MPTCP server. Written against docs/core-api.md.

These tests fail until middlebox.core.Converter exists and converts: that is expected.
"""

from __future__ import annotations

import socket
import threading

import pytest

from conftest import download, is_fallback, payload, upload

MB = 1 << 20

#: server MIB counters that must not move on a clean conversion
MUST_STAY_ZERO = (
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinNoTokenFound",
    "MPJoinAckHMacFailure", "DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx",
    "DataCsumErr", "MPFailRx", "DssFallback",
)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def assert_converted(t, before, srv, connections: int) -> None:
    """The server saw `connections` MPTCP connections, none fell back, no MIB error moved."""
    d = delta(before, t.nstat(t.server))
    assert d["MPCapableSYNRX"] >= connections, d
    assert d["MPCapableACKRX"] >= connections, d
    bad = {k: d.get(k, 0) for k in MUST_STAY_ZERO if d.get(k, 0)}
    assert not bad, f"server MIB errors: {bad}"
    assert len(srv.mptcp_flags) >= connections
    fallbacks = [f for f in srv.mptcp_flags if is_fallback(f)]
    assert not fallbacks, f"{len(fallbacks)} of {len(srv.mptcp_flags)} server sockets fell back"
    assert not srv.errors, srv.errors


def assert_no_fragmentation(t, before_all) -> None:
    d = delta(before_all, t.nstat(t.mbox, prefix=None))
    assert d.get("IpFragFails", 0) == 0 and d.get("Ip6FragFails", 0) == 0, (
        "full-size segments were too big after conversion (MSS clamp?)")
    assert d.get("IpFragCreates", 0) == 0 and d.get("Ip6FragCreates", 0) == 0


def assert_daemon_clean(d) -> None:
    rc, elapsed = d.stop()
    assert rc == 0 and elapsed < 2.0, (rc, elapsed, d.output)
    assert "bug in" not in d.output, d.output


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_20mb_each_way(mbox, server_factory, family):
    t = mbox.t
    d = mbox.start()
    srv = server_factory(family=family)
    before, before_mbox = t.nstat(t.server), t.nstat(t.mbox, prefix=None)
    upload(t, srv, payload(20 * MB))
    download(t, srv, 20 * MB)
    assert_converted(t, before, srv, connections=2)
    assert_no_fragmentation(t, before_mbox)
    assert_daemon_clean(d)


@pytest.mark.topology(checksum=True)
@pytest.mark.parametrize("flags", [(), ("--checksum",)], ids=["negotiated", "daemon-checksum"])
def test_20mb_each_way_server_requires_checksums(mbox, server_factory, flags):
    t = mbox.t
    assert t.read_sysctl(t.server, "net.mptcp.checksum_enabled") == "1"
    d = mbox.start(*flags)
    srv = server_factory()
    before = t.nstat(t.server)
    upload(t, srv, payload(20 * MB))
    download(t, srv, 20 * MB)
    assert_converted(t, before, srv, connections=2)
    assert_daemon_clean(d)


@pytest.mark.topology(server_mptcp=False)
def test_plain_tcp_server_works_through_the_middlebox(mbox, server_factory):
    t = mbox.t
    d = mbox.start()
    srv = server_factory(mptcp=False)
    upload(t, srv, payload(5 * MB))
    download(t, srv, 5 * MB)
    assert not srv.errors, srv.errors
    assert_daemon_clean(d)


def test_50_concurrent_connections(mbox, server_factory):
    t = mbox.t
    d = mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            if i % 2:
                upload(t, srv, payload(256 * 1024, seed=i % 4), timeout=60)
            else:
                download(t, srv, 256 * 1024, timeout=60)
        except Exception as e:  # collected and asserted below
            errors.append(f"connection {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:5]
    assert_converted(t, before, srv, connections=50)
    assert_daemon_clean(d)


def test_1000_short_connections_in_a_row(mbox, server_factory):
    t = mbox.t
    d = mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    request = payload(200, seed=7)
    for i in range(1000):
        upload(t, srv, request, timeout=10)
    assert_converted(t, before, srv, connections=1000)
    assert_daemon_clean(d)
