"""The netlink backend on a real kernel: GSO super-packets through the converter, truncated
(BIG TCP) super-packets re-queued to the companion queue, rx-gro-list off while the rules are
installed, `--backend auto` falling back to NetfilterQueue when it cannot bind."""

from __future__ import annotations

import os
import re
import socket
import struct

import pytest

from conftest import cli, download, install_rules, is_fallback, payload, upload

MB = 1 << 20


def counters(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if "counters at exit" in line]
    assert lines, output
    return {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", lines[-1])}


def big_tcp(t, ns: str, ifname: str, size: int) -> int:
    """gso/gro_max_size and their IPv4 twins (IFLA_GSO_IPV4_MAX_SIZE 63, IFLA_GRO_IPV4_MAX_SIZE
    64: newer than this iproute2 and pyroute2) set with one RTM_NEWLINK; 0 or the errno."""
    with t.in_netns(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        index = socket.if_nametoindex(ifname)
    with s:
        s.bind((0, 0))
        attrs = b"".join(struct.pack("=HHI", 8, kind, size) for kind in (41, 58, 63, 64))
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + attrs
        s.send(struct.pack("=IHHII", 16 + len(body), 16, 0x1 | 0x4, 1, 0) + body)
        answer = s.recv(4096)
    return -struct.unpack_from("=i", answer, 16)[0]


def test_super_packets_are_converted_both_ways(mbox, server_factory):
    """Guest TSO (uploads) and the server's TSO (downloads) reach the netlink backend as
    super-packets: one DSS mapping each, the kernel segments them; bytes intact, MPTCP."""
    t = mbox.t
    if mbox.backend != "netlink":
        pytest.skip("super-packets are the netlink backend's (NetfilterQueue gets segments)")
    d = mbox.start()
    srv = server_factory()
    before = t.nstat(t.server)
    upload(t, srv, payload(16 * MB))
    download(t, srv, 16 * MB)
    rc, _ = d.stop()
    assert rc == 0, d.output
    c = counters(d.output)
    assert c.get("super_packets", 0) > 100, c
    assert c["super_bytes"] / c["super_packets"] > 8 * 1448, c  # several segments each
    assert c.get("rewritten", 0) > 0 and not c.get("bug_core") and not c.get("verdict_errors"), c
    after = t.nstat(t.server)
    assert after.get("MPCapableACKRX", 0) - before.get("MPCapableACKRX", 0) >= 2
    for k in ("DSSNotMatching", "DSSNoMatchTCP", "DssFallback", "InfiniteMapRx", "DataCsumErr"):
        assert after.get(k, 0) == before.get(k, 0), (k, after)
    assert not [f for f in srv.mptcp_flags if is_fallback(f)], srv.mptcp_flags


def test_truncated_super_packets_go_to_the_companion(mbox, server_factory):
    """BIG TCP at the guest: super-packets beyond 65,531 bytes arrive truncated (NFQA_CAP_LEN);
    never a payload back for them: re-queued to the companion queue, segmented by the kernel
    and converted there. The upload stays MPTCP and intact."""
    t = mbox.t
    if mbox.backend != "netlink":
        pytest.skip("the companion queue is the netlink backend's")
    for ns, ifname in ((t.guest, t.guest_if), (t.mbox, t.mbox_guest_if)):
        err = big_tcp(t, ns, ifname, 150000)
        if err:
            pytest.skip(f"no BIG TCP here: {os.strerror(err)}")
    d = mbox.start()
    srv = server_factory()
    upload(t, srv, payload(32 * MB))
    rc, _ = d.stop()
    assert rc == 0, d.output
    c = counters(d.output)
    assert "companion queue 1" in d.output, d.output
    assert c.get("requeued_truncated", 0) > 0, c  # BIG TCP happened and went the companion's way
    assert not c.get("unconverted_oversize"), c
    assert not [f for f in srv.mptcp_flags if is_fallback(f)], srv.mptcp_flags


def test_rules_turn_gro_list_off_and_back_on(topo):
    ifname = topo.mbox_guest_if
    r = topo.run(topo.mbox, ["ethtool", "-K", ifname, "rx-gro-list", "on"], check=False)
    if r.returncode:
        pytest.skip(f"rx-gro-list cannot be set on veth here: {r.stderr.strip()}")

    def state() -> str:
        out = topo.run(topo.mbox, ["ethtool", "-k", ifname]).stdout
        return re.search(r"rx-gro-list: (\w+)", out).group(1)

    assert state() == "on"
    out = install_rules(topo)
    assert state() == "off", out.stdout
    shown = topo.run(topo.mbox, [*cli("rules"), "show"]).stdout
    assert "companion queue (netlink backend): 1" in shown, shown
    install_rules(topo)  # idempotent: still recorded as ours to restore
    topo.run(topo.mbox, [*cli("rules"), "remove"])
    assert state() == "on"


def test_auto_falls_back_to_netfilterqueue_when_the_queue_is_taken(mbox, server_factory):
    """A queue another reader holds: `--backend netlink` says the queue is busy; `--backend
    auto` logs that it cannot bind and tries NetfilterQueue, which finds the queue taken too
    and says so. Neither traceback nor harm: the first daemon keeps working."""
    t = mbox.t
    if mbox.backend != "netlink":
        pytest.skip("one run is enough")
    d = mbox.start("--passthrough", "--guest-iface", t.mbox_guest_if)
    for backend in ("netlink", "auto"):
        r = t.run(t.mbox, [*cli("run"), "--queue", "0", "--passthrough", "--guest-iface",
                           t.mbox_guest_if, "--backend", backend], check=False, timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "Traceback" not in out, out
        assert "busy" in out or "in use" in out, out
        if backend == "auto":
            assert "using NetfilterQueue" in out, out
    upload(t, server_factory(), payload(MB))
    rc, _ = d.stop()
    assert rc == 0, d.output
