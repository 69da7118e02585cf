"""Outbound role end to end, from the core's side: after real transfers against a Linux MPTCP
server, the converter's own oddity counters must be zero and the close must be clean (the
core engineer's cases; the I/O engineer's are in test_outbound.py)."""

from __future__ import annotations

import re
import socket

import pytest

from conftest import download, payload, upload

MB = 1 << 20

#: core counters that must stay 0 on a clean conversion against Linux
CORE_MUST_STAY_ZERO = (
    "CoreBug", "StateViolation", "MappingMismatch", "MappingUncovered", "DataCsumErr",
    "DssFallback", "InfiniteMapRX", "OptionSpaceExhausted", "MPCapableFallbackSYNACK",
    "BadPacket", "RstTX", "RstRX", "TcpRstRX", "FastCloseRX",  # closes are clean, no RST
)


def core_counters(output: str) -> dict[str, int]:
    """The `counters at exit:` line the daemon prints, as {name: value} without `core.`."""
    lines = [line for line in output.splitlines() if "counters at exit" in line]
    assert lines, output
    return {k.removeprefix("core."): int(v) for k, v in re.findall(r"(\S+)=(\d+)", lines[-1])}


def server_nstat(t) -> dict[str, int]:
    return t.nstat(t.server)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_core_counters_clean_after_transfers(mbox, server_factory, family):
    t = mbox.t
    d = mbox.start()
    srv = server_factory(family=family)
    before = server_nstat(t)
    upload(t, srv, payload(2 * MB))
    download(t, srv, 2 * MB)
    rc, _ = d.stop()
    assert rc == 0
    c = core_counters(d.output)
    print(c)
    bad = {k: c[k] for k in CORE_MUST_STAY_ZERO if c.get(k)}
    assert not bad, (bad, c)
    assert c.get("MPCapableSYNTX", 0) >= 2 and c.get("MPCapableSYNACKRX", 0) >= 2
    assert c.get("MPCapableEstablished", 0) >= 2 and c.get("DataFinTX", 0) >= 2
    assert c.get("DataFinRX", 0) >= 2
    after = server_nstat(t)
    print({k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)})


@pytest.mark.topology(checksum=True)
def test_core_counters_clean_with_server_checksums(mbox, server_factory):
    """net.mptcp.checksum_enabled=1 on the server: every DSS carries a checksum both ways;
    the core verifies the server's and the server verifies ours (DataCsumErr stays 0)."""
    t = mbox.t
    d = mbox.start()
    srv = server_factory()
    before = server_nstat(t)
    upload(t, srv, payload(2 * MB))
    download(t, srv, 2 * MB)
    rc, _ = d.stop()
    assert rc == 0
    c = core_counters(d.output)
    bad = {k: c[k] for k in CORE_MUST_STAY_ZERO if c.get(k)}
    assert not bad, (bad, c)
    after = server_nstat(t)
    assert after.get("DataCsumErr", 0) == before.get("DataCsumErr", 0)
    assert after.get("MPCapableACKRX", 0) - before.get("MPCapableACKRX", 0) == 2
