"""A guest that does not use TCP timestamps (Windows' default): its segments carry 12 bytes
more payload than a Linux guest's at the same MSS, so the DSS we add must fit without the
timestamp's room. Uploads after the server's greeting (its data makes our DATA_ACKs 64-bit,
the largest DSS) and downloads, single path and through two uplinks, and on joins with DSS
checksums: the bytes are the bytes and the server's MIB clean. One backend, compiled. Before the core knew the
guest's segment size, it cut each of them in two on the joins as if it were a super-packet,
and with checksums the server counted DataCsumErr, sent MP_FAIL and reset the connection
(1 of 2 runs); tests/unit/test_guest_segment_size.py pins the size."""

from __future__ import annotations

import pytest

from conftest import download, greet_upload, is_fallback, payload
from test_multipath import JOIN, MB, MUST_STAY_ZERO, core_counters, delta

NO_TS = {"guest": {"net.ipv4.tcp_timestamps": 0}}


def _transfer(mbox, server_factory, multipath: bool) -> None:
    t = mbox.t
    assert t.read_sysctl(t.guest, "net.ipv4.tcp_timestamps").strip() == "0"
    d = mbox.start(*JOIN, uplinks=True) if multipath else mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    try:
        greet_upload(t, srv, 20000, payload(8 * MB, seed=3))
        download(t, srv, 8 * MB)
    finally:
        dd = delta(before, t.nstat(t.server))
        rc, _ = d.stop()
        c = core_counters(d.output)
        print({k: v for k, v in dd.items() if v}, c)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    assert c.get("DataAckTX", 0) > 0 and c.get("DSSTX", 0) > 0, c
    if multipath:
        assert c.get("MPJoinEstablished", 0) >= 2, c
    assert rc == 0, d.output


@pytest.mark.one_backend
@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, sysctls=NO_TS)
@pytest.mark.parametrize("multipath", [False, True], ids=["single-path", "multipath"])
def test_guest_without_timestamps(mbox, server_factory, multipath):
    _transfer(mbox, server_factory, multipath)


# (single path with checksums is left out, open: its upload stalled in about 1 run of 10 at
# the end of stop 36, under investigation; note 40)
@pytest.mark.one_backend
@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False, sysctls=NO_TS,
                      checksum=True)
def test_guest_without_timestamps_with_dss_checksums_on_joins(mbox, server_factory):
    _transfer(mbox, server_factory, True)
