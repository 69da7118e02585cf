"""A join whose 4-tuple is still in TIME_WAIT on the server. Our joins take a random port of
the join range, so a connection's join can reuse the 4-tuple of an earlier join to the same
server port, which the server (it closed that subflow first) holds in TIME_WAIT for 60 s.
Linux answers a SYN there with a new connection only when its seq lies beyond the old
connection's (tcp_timewait_state_process; our join SYNs carry no timestamps), otherwise
with an ACK of the old connection. RFC 9293 (SYN-SENT, an unacceptable ACK): send a RST
<SEQ=SEG.ACK>; the RST ends the TIME_WAIT and the SYN sent again opens the join. Dropping
that ACK left the join unanswered through every SYN retry: a bench run (2 x 100 Mbit/s,
upload) went at one path's rate. A join range of one port makes every connection's join
meet its predecessor's TIME_WAIT; the daemon restarts between connections (its own table
would otherwise hold the port), as an operator's restart would."""

from __future__ import annotations

import pytest

from conftest import install_rules, payload, upload
from test_multipath import JOIN, MB, MUST_STAY_ZERO, core_counters, delta

CONNECTIONS = 5


@pytest.mark.topology(rate_mbit=50, latency_ms=10, policy_routing=False)
def test_a_join_meeting_the_servers_time_wait_still_opens(mbox, server_factory):
    t = mbox.t
    install_rules(t, True, join_ports="61000-61000")
    srv = server_factory()
    before = t.nstat(t.server)
    joined, resets = [], 0
    for _ in range(CONNECTIONS):
        d = mbox.start(*JOIN, "--join-ports", "61000-61000")
        try:
            upload(t, srv, payload(1 * MB))
        finally:
            rc, _ = d.stop()
            c = core_counters(d.output)
        assert rc == 0, d.output
        joined.append(c.get("MPJoinEstablished", 0))
        resets += c.get("JoinTimeWaitReset", 0)
    dd = delta(before, t.nstat(t.server))
    print({k: v for k, v in dd.items() if v}, joined, resets)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    # every connection got its join, though each after the first met the last one's
    # TIME_WAIT (Linux took about half of those SYNs for old duplicates)
    assert joined == [1] * CONNECTIONS, joined
    assert dd.get("MPJoinAckRx", 0) == CONNECTIONS, dd
    assert dd.get("MPJoinSynRx", 0) >= CONNECTIONS, dd
