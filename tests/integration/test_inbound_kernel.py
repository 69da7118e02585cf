"""The inbound role (issue 9) against the real kernel: a Linux MPTCP client (in the server
namespace) connects through the middlebox to a plain-TCP service in the guest.

The client's socket must be MPTCP, not fallback; its MIB must count the MP_CAPABLE SYN/ACK and
nothing that looks like a broken mapping; the bytes must arrive intact both ways (sha256); the
guest's link must carry no MPTCP option at all; the client side's capture must pass `middlebox
inspect`. A plain-TCP client, and `--no-inbound`, leave the connection alone. An MP_JOIN SYN
towards the guest with an unknown token is refused (RST + MP_TCPRST) and never reaches it; a
client with two interfaces joins at the guest's address and uses both, the middlebox answering
the join. A client with one interface route learns the other uplink's address (ADD_ADDR) and
joins there, the middlebox answering at its own address.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest

from adversary import Capture, raw_sender, tcp4
from conftest import (IPPROTO_MPTCP, MPTCP_INFO, SOL_MPTCP, Server, is_fallback, mptcp_info_flags, payload,
                      recv_digest, sha256_of)
from test_outbound_core import core_counters

MB = 1 << 20
PORT = 5301

#: client MIB counters that must not move (no fallback, no broken mapping, no join trouble)
MUST_STAY_ZERO = (
    "MPCapableFallbackSYNACK", "MPCapableFallbackACK", "DSSNotMatching", "DSSNoMatchTCP",
    "InfiniteMapRx", "DssFallback", "DataCsumErr", "MPFailRx", "MPJoinSynAckHMacFailure",
)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def guest_service(t, family=socket.AF_INET) -> Server:
    """The UP/DOWN service of the outbound tests, plain TCP, listening in the guest."""
    addr = t.guest_ip if family == socket.AF_INET else t.guest_ip6
    return Server(t, family=family, mptcp=False, port=PORT, ns=t.guest, addr=addr)


def peer_connect(t, srv: Server, mptcp: bool = True, timeout: float = 60) -> socket.socket:
    with t.in_netns(t.server):
        c = socket.socket(srv.family, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
    c.settimeout(timeout)
    c.connect((srv.addr, srv.port))
    return c


def peer_upload(t, srv: Server, data: bytes, mptcp: bool = True) -> int | None:
    """Send `data` from the client; the guest's sha256 must match. Returns the client socket's
    MPTCP_INFO flags (None: not MPTCP)."""
    with peer_connect(t, srv, mptcp) as c:
        c.sendall(f"UP {len(data)}\n".encode())
        c.sendall(data)
        digest = recv_digest(c)
        flags = mptcp_info_flags(c)
    assert digest.decode() == hashlib.sha256(data).hexdigest(), "upload corrupted or truncated"
    return flags


def peer_download(t, srv: Server, n: int, mptcp: bool = True) -> int | None:
    with peer_connect(t, srv, mptcp) as c:
        c.sendall(f"DOWN {n}\n".encode())
        got = sha256_of(c.recv, n)
        flags = mptcp_info_flags(c)
        assert c.recv(1) == b""
    assert got.decode() == hashlib.sha256(payload(n)).hexdigest(), "download corrupted"
    return flags


def mptcp_options_in(pcap: str) -> list[str]:
    """Every MPTCP option in a capture, described (empty: none)."""
    from middlebox.analysis.pcap import iter_packets  # our own reader: IPv4 and IPv6, any link
    from middlebox.wire import WireError, options_of, parse_packet

    found = []
    with open(pcap, "rb") as f:
        for _, ip in iter_packets(f):
            try:
                pkt = parse_packet(ip)
            except WireError:  # not TCP
                continue
            for raw in options_of(ip, pkt).mptcp:
                found.append(f"{pkt.sport}->{pkt.dport} {raw.hex()}")
    return found


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_mptcp_client_reaches_a_plain_guest_service(mbox, family, tmp_path):
    t = mbox.t
    d = mbox.start()
    srv = guest_service(t, family)
    guest_pcap, peer_pcap = tmp_path / "guest.pcap", str(tmp_path / "peer.pcap")
    guest_cap = Capture(t, t.guest, t.guest_if, "tcp", guest_pcap, 65535)
    dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", t.paths[0].server_if, "-s", "0",
                              "-B", "262144", "-U", "-w", peer_pcap, "tcp"])
    time.sleep(1.0)
    before = t.nstat(t.server)
    try:
        up = peer_upload(t, srv, payload(8 * MB))
        down = peer_download(t, srv, 8 * MB)
    except BaseException:
        d.stop()
        print(d.output[-3000:], delta(before, t.nstat(t.server)), srv.errors)
        raise
    after = t.nstat(t.server)
    time.sleep(0.5)
    dump.terminate()
    dump.wait(timeout=10)
    guest_cap.stop()
    rc, _ = d.stop()
    c = core_counters(d.output)
    dd = delta(before, after)
    print(dd, c)
    assert rc == 0 and not srv.errors, srv.errors
    # the client's connections were MPTCP, both of them, not fallback
    assert not is_fallback(up) and not is_fallback(down), (up, down)
    assert dd.get("MPCapableSYNACKRX", 0) == 2, dd
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert c.get("MPCapableSYNRX", 0) >= 2 and c.get("MPCapableACKRX") == 2, c
    assert not c.get("InboundFallback") and not c.get("StateViolation"), c
    # the guest saw plain TCP only
    assert mptcp_options_in(str(guest_pcap)) == []
    # and the client side's capture is correct MPTCP (keys, mappings, data)
    r = subprocess.run([sys.executable, "-m", "middlebox", "inspect", peer_pcap],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 MPTCP connection(s)" in r.stdout and " 0 fallback(s), 0 violation(s)" in r.stdout, r.stdout[-2000:]


@pytest.mark.one_backend
def test_plain_client_and_no_inbound_are_left_alone(mbox):
    t = mbox.t
    d = mbox.start()
    srv = guest_service(t)
    assert peer_upload(t, srv, payload(2 * MB), mptcp=False) is None  # plain TCP: not ours
    d.stop()
    c = core_counters(d.output)
    assert not c.get("MPCapableSYNRX") and not c.get("FlowCreated"), c
    # --no-inbound: the MPTCP SYN reaches the guest as it is; the guest's plain listener
    # answers without MP_CAPABLE and the client falls back (plain TCP end to end)
    d = mbox.start("--no-inbound")
    before = t.nstat(t.server)
    flags = peer_upload(t, srv, payload(2 * MB))
    dd = delta(before, t.nstat(t.server))
    d.stop()
    c = core_counters(d.output)
    assert is_fallback(flags) and dd.get("MPCapableFallbackSYNACK", 0) == 1, (flags, dd)
    assert not c.get("MPCapableSYNRX") and not c.get("FlowCreated"), c


@pytest.mark.one_backend
def test_join_with_an_unknown_token_is_refused_and_never_reaches_the_guest(mbox, tmp_path):
    """An MP_JOIN SYN to the guest's service with a token the middlebox never issued gets
    RST + MP_TCPRST from the middlebox (seq 0: the SYN had no ACK); the guest sees only its
    husk (a bare RST, no option: multipath._husk) and answers nothing."""
    t = mbox.t
    d = mbox.start()
    guest_service(t)
    guest_cap = Capture(t, t.guest, t.guest_if, "tcp", tmp_path / "guest.pcap")
    peer_cap = Capture(t, t.server, t.paths[0].server_if, f"tcp and src host {t.guest_ip}",
                       tmp_path / "peer.pcap")
    # MP_JOIN SYN: kind 30, length 12, subtype 1, address id 1, token, nonce
    join = bytes([30, 12, 0x10, 1]) + (0x0BADC0DE).to_bytes(4, "big") + (0x01020304).to_bytes(4, "big")
    with t.in_netns(t.server):
        s = raw_sender()
    try:
        s.sendto(tcp4(t.server_ip, t.guest_ip, 45454, PORT, 1000, 0, 0x02, 64240, join), (t.guest_ip, 0))
    finally:
        s.close()
    time.sleep(1.0)
    guest_cap.stop()
    peer_cap.stop()
    d.stop()
    c = core_counters(d.output)
    rsts = [p for p in peer_cap.packets() if p["dport"] == 45454]
    assert len(rsts) == 1 and rsts[0]["flags"] & 0x04 and rsts[0]["ack"] == 1001 and rsts[0]["seq"] == 0, rsts
    assert b"\x1e\x04\x80\x03" in rsts[0]["options"], rsts  # MP_TCPRST, administratively prohibited
    mine = [p for p in guest_cap.packets() if 45454 in (p["sport"], p["dport"])]
    assert [(p["dport"], p["flags"], p["options"], p["plen"]) for p in mine] == [(PORT, 0x04, b"", 0)], mine
    assert c.get("JoinToGuestRefused") == 1 and c.get("JoinSynHusk") == 1 and not c.get("PassiveJoinSynRX"), c


def _client_second_path(t) -> str:
    """The client (server namespace) gets a second interface for the connection: a `subflow`
    endpoint on path 2 and a route from that address to the guests by path 2 (source policy
    routing, as a phone's second interface has its own route)."""
    p2 = t.paths[1]
    t.run(t.server, ["ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"])
    t.run(t.server, ["ip", "route", "add", t.GUEST_PREFIX, "via", p2.mbox_ip, "dev", p2.server_if,
                     "table", "202"])
    t.run(t.server, ["ip", "rule", "add", "from", p2.server_ip, "table", "202", "priority", "202"])
    t.run(t.server, ["ip", "mptcp", "endpoint", "add", p2.server_ip, "dev", p2.server_if, "subflow"])
    assert p2.server_ip in t.run(t.server, ["ip", "mptcp", "endpoint", "show"]).stdout
    return p2.server_if


def assert_only_husks(packets: list[dict], addr: str, core: dict) -> None:
    """Of the packets on the guest's link, those from or to `addr` (a client address that
    only joins) are husks of join SYNs: bare RSTs (RST, no ACK, no option, no payload), one
    per join SYN the core passed on (JoinSynHusk), and the guest answered none of them."""
    mine = [p for p in packets if addr in (p["src"], p["dst"])]
    assert mine and all(p["src"] == addr for p in mine), mine[:6]  # the guest sent nothing there
    assert all(p["flags"] == 0x04 and not p["options"] and not p["plen"] for p in mine), mine[:6]
    assert len(mine) == core.get("JoinSynHusk"), (len(mine), core)


def _link(t, ns: str, ifname: str) -> tuple[int, int]:
    base = f"/sys/class/net/{ifname}/statistics/"
    out = t.run(ns, ["cat", base + "tx_bytes", base + "rx_bytes"]).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
def test_client_with_two_interfaces_joins_at_the_guests_address(mbox, tmp_path):
    """The client opens a second subflow from its other interface to the guest's address
    (our SYN/ACK carries no C bit): the middlebox answers the join (HMACs both ways, RFC 8684
    §3.2), the guest never sees it, and both of the client's interfaces carry the transfer,
    upload and download, bytes intact; the client's MIB counts the join and no HMAC failure."""
    t = mbox.t
    d = mbox.start()
    srv = guest_service(t)
    if2 = _client_second_path(t)
    guest_cap = Capture(t, t.guest, t.guest_if, "tcp", tmp_path / "guest.pcap", 65535)
    peer_pcap = str(tmp_path / "peer.pcap")  # both of the client's interfaces
    dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", "any", "-s", "0", "-B", "262144",
                              "-U", "-w", peer_pcap, "tcp"])
    time.sleep(1.0)
    before = t.nstat(t.server)
    l1a, l2a = _link(t, t.server, t.paths[0].server_if), _link(t, t.server, if2)
    try:
        with peer_connect(t, srv) as c:
            c.sendall(f"UP {12 * MB}\n".encode())
            c.sendall(payload(12 * MB, seed=7))
            info = c.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)  # before the close: its subflows
            digest = recv_digest(c)
        down = peer_download(t, srv, 12 * MB)
    except BaseException:
        d.stop()
        print(d.output[-3000:], delta(before, t.nstat(t.server)), srv.errors)
        raise
    l1b, l2b = _link(t, t.server, t.paths[0].server_if), _link(t, t.server, if2)
    dd = delta(before, t.nstat(t.server))
    time.sleep(0.5)
    dump.terminate()
    dump.wait(timeout=10)
    guest_cap.stop()
    d.stop()
    c_ = core_counters(d.output)
    up2, down2 = l2b[0] - l2a[0], l2b[1] - l2a[1]
    print(dd, c_, "path 1", l1b[0] - l1a[0], l1b[1] - l1a[1], "path 2", up2, down2)
    assert digest.decode() == hashlib.sha256(payload(12 * MB, seed=7)).hexdigest(), "upload corrupted"
    assert not srv.errors and not is_fallback(down), (srv.errors, down)
    assert info[0] >= 1, "no extra subflow in MPTCP_INFO"  # mptcpi_subflows
    assert dd.get("MPJoinSynAckRx", 0) >= 2 and dd.get("MPJoinSynTx", 0) >= 2, dd  # both connections
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert not dd.get("MPJoinSynAckHMacFailure") and not dd.get("MPJoinAckHMacFailure"), dd
    assert c_.get("PassiveJoinEstablished", 0) >= 2 and not c_.get("PassiveJoinAckHMacFailure"), c_
    # the client's second interface carried a share of each direction (50 Mbit/s per path)
    assert up2 > 2 * MB and down2 > 2 * MB, (up2, down2)
    # the guest saw plain TCP, and of the joins only their husks: a bare RST with no option
    # for each join SYN (conntrack confirms the SYN's entry, multipath._husk), never
    # answered; nothing else from or to the client's second address
    assert mptcp_options_in(str(tmp_path / "guest.pcap")) == []
    assert_only_husks(guest_cap.packets(), t.paths[1].server_ip, c_)
    # the client side, both interfaces: keys, tokens, join HMACs both ways, mappings
    r = subprocess.run([sys.executable, "-m", "middlebox", "inspect", peer_pcap],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 MPTCP connection(s), 4 subflow(s), 0 fallback(s), 0 violation(s)" in r.stdout, r.stdout[-3000:]

@pytest.mark.topology(rate_mbit=50, latency_ms=20)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_client_with_one_interface_joins_the_announced_uplink(mbox, family, tmp_path):
    """A client with one interface route to the guest: the middlebox announces the other
    uplink's address (ADD_ADDR with the v1 HMAC, a port of the join range; subflow 1's own
    uplink is not announced), the client echoes it and joins there, the middlebox answers the
    join at its own address (queued, never the hypervisor's stack) and both uplinks carry the
    transfer, upload and download, bytes intact."""
    t = mbox.t
    d = mbox.start(uplinks=True)
    srv = guest_service(t, family)
    if2 = t.paths[1].server_if
    guest_cap = Capture(t, t.guest, t.guest_if, "tcp", tmp_path / "guest.pcap", 65535)
    peer_pcap = str(tmp_path / "peer.pcap")  # both of the client's interfaces
    dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", "any", "-s", "0", "-B", "262144",
                              "-U", "-w", peer_pcap, "tcp"])
    time.sleep(1.0)
    before = t.nstat(t.server)
    l2a = _link(t, t.server, if2)
    try:
        with peer_connect(t, srv) as c:
            c.sendall(f"UP {12 * MB}\n".encode())
            c.sendall(payload(12 * MB, seed=9))
            info = c.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)  # before the close: its subflows
            digest = recv_digest(c)
        down = peer_download(t, srv, 12 * MB)
    except BaseException:
        d.stop()
        print(d.output[-3000:], delta(before, t.nstat(t.server)), srv.errors)
        raise
    l2b = _link(t, t.server, if2)
    dd = delta(before, t.nstat(t.server))
    time.sleep(0.5)
    dump.terminate()
    dump.wait(timeout=10)
    guest_cap.stop()
    d.stop()
    c_ = core_counters(d.output)
    up2, down2 = l2b[0] - l2a[0], l2b[1] - l2a[1]
    print(dd, c_, "path 2", up2, down2)
    assert digest.decode() == hashlib.sha256(payload(12 * MB, seed=9)).hexdigest(), "upload corrupted"
    assert not srv.errors and not is_fallback(down), (srv.errors, down)
    assert info[0] >= 1, "no extra subflow in MPTCP_INFO"  # mptcpi_subflows
    # the client took our ADD_ADDR (HMAC good), echoed it and joined: both connections
    assert dd.get("AddAddr", 0) >= 2 and dd.get("EchoAddTx", 0) >= 2 and dd.get("PortAdd", 0) >= 2, dd
    assert dd.get("MPJoinSynAckRx", 0) >= 2 and dd.get("MPJoinPortSynAckRx", 0) >= 2, dd
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert not dd.get("AddAddrDrop") and not dd.get("MPJoinAckHMacFailure"), dd
    assert c_.get("AddAddrEchoRX", 0) >= 2 and c_.get("PassiveJoinAtUplink", 0) >= 2, c_
    assert c_.get("PassiveJoinEstablished", 0) >= 2 and not c_.get("JoinUnknown"), c_
    # the announced uplink carried a share of each direction (50 Mbit/s per path)
    assert up2 > 2 * MB and down2 > 2 * MB, (up2, down2)
    assert mptcp_options_in(str(tmp_path / "guest.pcap")) == []
    r = subprocess.run([sys.executable, "-m", "middlebox", "inspect", peer_pcap],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " 0 fallback(s), 0 violation(s)" in r.stdout, r.stdout[-3000:]


FWD = 8080  # the forwarded port on uplink 1's address


@contextlib.contextmanager
def _port_forward(t, table: str, iif: str | None = None):
    """DNAT of uplink 1's address, port FWD, to the guest's service (arriving by `iif` only,
    or by any interface), in nft table `table`, deleted afterwards. Yields the service as
    the client sees it (a Server with only family, address and port)."""
    p1 = t.paths[0]
    only = f'iifname "{iif}" ' if iif else ""
    t.run(t.mbox, ["nft", "-f", "-"], input=(
        f"table ip {table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n"
        f"  {only}ip daddr {p1.mbox_ip} tcp dport {FWD} dnat to {t.guest_ip}:{PORT}\n"
        " }\n}\n"))
    try:
        fsrv = Server.__new__(Server)
        fsrv.family, fsrv.addr, fsrv.port = socket.AF_INET, p1.mbox_ip, FWD
        yield fsrv
    finally:
        t.run(t.mbox, ["nft", "delete", "table", "ip", table], check=False)


def _forwarded_up_and_down(t, d, srv: Server, fsrv: Server, ifname: str, seed: int) -> tuple:
    """8 MB up and 8 MB down through the port forward `fsrv`; the daemon `d` is stopped
    after (also on failure, its output then printed). Returns (upload's MPTCP_INFO flags,
    download's, the client's MIB delta, the core's counters, bytes the client sent and
    received on its interface `ifname`)."""
    before = t.nstat(t.server)
    tx0, rx0 = _link(t, t.server, ifname)
    try:
        up = peer_upload(t, fsrv, payload(8 * MB, seed=seed))
        down = peer_download(t, fsrv, 8 * MB)
    except BaseException:
        d.stop()
        print(d.output[-3000:], delta(before, t.nstat(t.server)), srv.errors)
        raise
    tx1, rx1 = _link(t, t.server, ifname)
    dd = delta(before, t.nstat(t.server))
    d.stop()
    c_ = core_counters(d.output)
    print(dd, c_, ifname, tx1 - tx0, rx1 - rx0)
    return up, down, dd, c_, tx1 - tx0, rx1 - rx0


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
def test_port_forwarded_service(mbox, tmp_path):
    """A service port-forwarded by DNAT on the hypervisor (uplink 1's address, port 8080 ->
    the guest's service): the client connects to the address it knows, gets MPTCP (the
    middlebox sees the connection after DNAT, at the guest's address, and conntrack turns
    its SYN/ACK and injected segments back into the forwarded address), learns uplink 2's
    address (ADD_ADDR) and joins there, and both uplinks carry the bytes, intact both ways."""
    t = mbox.t
    with _port_forward(t, "mbtestdnat", iif=t.paths[0].mbox_if) as fsrv:
        d = mbox.start(uplinks=True)
        srv = guest_service(t)
        up, down, dd, c_, up2, down2 = _forwarded_up_and_down(t, d, srv, fsrv, t.paths[1].server_if, 11)
        assert not srv.errors and not is_fallback(up) and not is_fallback(down), (srv.errors, up, down)
        assert dd.get("MPCapableSYNACKRX", 0) == 2 and dd.get("MPJoinPortSynAckRx", 0) >= 2, dd
        assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
        assert c_.get("PassiveJoinAtUplink", 0) >= 2 and c_.get("MPCapableACKRX") == 2, c_
        # segments we inject towards the guest are not tracked (rules: the output chain):
        # tracked, NAT gave them another source port and the guest answered with RSTs
        # (UnknownFlow, and MPTCP-level retransmissions by the thousand). A couple of the
        # client's MPTCP retransmissions came in 1 clean-clone proof of 4 (2, nfqueue, no
        # UnknownFlow, bytes intact): tolerated as in test_multipath's masquerade case, with
        # one for each join segment the guest dropped beyond its window (acked here on
        # arrival, repaired only by the client's MPTCP timer)
        explained = c_.get("JoinBeyondGuestWindow", 0)
        assert not c_.get("UnknownFlow") and dd.get("MPTCPRetrans", 0) <= 2 + explained, (c_, dd)
        assert up2 > MB and down2 > MB, "uplink 2 carried nothing"


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
@pytest.mark.one_backend
def test_port_forwarded_service_client_with_two_interfaces(mbox, tmp_path):
    """A port-forwarded service (DNAT of uplink 1's address, port 8080, from any interface)
    and a client with two interfaces: its second interface joins the address it connected to,
    so the join SYN reaches us after DNAT, at the guest's address. Our SYN/ACK must leave as
    the forwarded address (conntrack's reverse NAT), which needs conntrack to have confirmed
    the join SYN's entry: the SYN goes on to the guest as a husk (a bare RST, no option, a
    wrong checksum: ignored there, never answered). Before the husk the client never got a
    usable SYN/ACK (MPJoinSynAckRx 0: ours left from the guest's address). Both of the
    client's interfaces carry the bytes, intact both ways."""
    t = mbox.t
    p1, p2 = t.paths[0], t.paths[1]
    with _port_forward(t, "mbtestdnat2") as fsrv:
        try:
            d = mbox.start()
            srv = guest_service(t)
            if2 = _client_second_path(t)
            # the second interface reaches the forwarded address by its own path
            t.run(t.server, ["ip", "route", "add", f"{p1.mbox_ip}/32", "via", p2.mbox_ip, "dev", if2,
                             "table", "202"])
            guest_cap = Capture(t, t.guest, t.guest_if, "tcp", tmp_path / "guest.pcap", 65535)
            time.sleep(1.0)
            up, down, dd, c_, up2, down2 = _forwarded_up_and_down(t, d, srv, fsrv, if2, 17)
            guest_cap.stop()
            assert not srv.errors and not is_fallback(up) and not is_fallback(down), (srv.errors, up, down)
            assert dd.get("MPJoinSynAckRx", 0) >= 2 and dd.get("MPJoinSynTx", 0) >= 2, dd
            assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
            assert c_.get("PassiveJoinEstablished", 0) >= 2, c_
            assert up2 > MB and down2 > MB, (up2, down2)
            assert mptcp_options_in(str(tmp_path / "guest.pcap")) == []
            assert_only_husks(guest_cap.packets(), p2.server_ip, c_)
        finally:
            t.run(t.server, ["ip", "route", "flush", "table", "202"], check=False)


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
@pytest.mark.one_backend
def test_join_with_a_bad_third_ack_hmac_is_refused(mbox):
    """The client's third ACK of its join at the announced uplink carries a wrong HMAC
    (corrupted in the client's namespace, join_peer.py): the middlebox resets that subflow
    (RST + MP_TCPRST), counts it, and the transfer completes on subflow 1, bytes intact, the
    client still MPTCP."""
    t = mbox.t
    t_addr = t.paths[1].mbox_ip
    rule = ["-p", "tcp", "-d", t_addr, "--dport", "61999", "--tcp-flags", "SYN,ACK,RST,FIN", "ACK",
            "-j", "NFQUEUE", "--queue-num", "9"]
    t.run(t.server, ["iptables", "-t", "mangle", "-A", "OUTPUT", *rule])
    peer = t.popen(t.server, [sys.executable, os.path.join(os.path.dirname(__file__), "join_peer.py"), "9"],
                   stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        d = mbox.start(uplinks=True)
        srv = guest_service(t)
        before = t.nstat(t.server)
        # (12 MB each way: a transfer outlasts our first resend of an unechoed ADD_ADDR, after
        # 1 s. With 4 MB, a proof saw the second connection's only ADD_ADDR lost and the
        # transfer over before the resend: no join there, PassiveJoinAtUplink 1)
        data = payload(12 * MB, seed=13)
        up = peer_upload(t, srv, data)
        down = peer_download(t, srv, 12 * MB)
        dd = delta(before, t.nstat(t.server))
        d.stop()
        c = core_counters(d.output)
        print(dd, c)
        assert not is_fallback(up) and not is_fallback(down), (up, down)
        assert c.get("PassiveJoinAtUplink", 0) >= 2 and c.get("PassiveJoinAckHMacFailure", 0) >= 2, c
        assert not c.get("PassiveJoinEstablished"), c
        # the client got our SYN/ACK (its HMAC good) before its third ACK was refused; our RST
        # (seq 1, MP_TCPRST) ended the subflow: seen in a capture, the client resets it too
        # (MPRstTx), and Linux does not count the RST's MP_TCPRST as MPRstRx there
        assert dd.get("MPJoinPortSynAckRx", 0) >= 2 and not dd.get("MPJoinSynAckHMacFailure"), dd
        assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    finally:
        peer.terminate()
        peer.wait(timeout=10)
        t.run(t.server, ["iptables", "-t", "mangle", "-D", "OUTPUT", *rule], check=False)


def _download_across_link_event(t, srv: Server, n: int, path: int, down_for: float,
                                back: bool = True, after_up=None) -> tuple[dict, str]:
    """The client downloads `n` bytes from the guest's service while path `path` goes down
    1.5 s in, for `down_for` s, then up again (unless not `back`; `after_up` runs then).
    Returns the outcome ("flags" or "error", and "hung" when the download outlived the wait)
    and the daemon's `flows` view, taken when the download had not finished after 40 s."""
    import threading

    result: dict = {}

    def fetch():
        try:
            result["flags"] = peer_download(t, srv, n)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            result["error"] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=fetch)
    th.start()
    time.sleep(1.5)
    t.set_link(path, False)
    time.sleep(down_for)
    if back:
        t.set_link(path, True)
        if after_up is not None:
            after_up()
    th.join(40)
    view = ""
    if th.is_alive():  # stalling: what the middlebox holds for the flow, for the report
        r = t.run(t.mbox, [sys.executable, "-m", "middlebox", "flows"], check=False, timeout=30,
                  env={**os.environ, "MIDDLEBOX_CONFIG": ""})
        view = (r.stdout + r.stderr)[-1500:]
    th.join(50)
    result["hung"] = th.is_alive()
    return result, view


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
@pytest.mark.parametrize("path", [1, 2], ids=["subflow-1-uplink", "announced-uplink"])
@pytest.mark.one_backend
def test_one_interface_client_survives_an_uplink_going_down_and_up(mbox, path):
    """A client with one interface route downloads through both uplinks: subflow 1 on
    uplink 1, its join at the announced uplink 2. One of them goes down mid-transfer and
    comes back, the bytes arrive intact on the other:
    * uplink 1: subflow 1 is dead for the middlebox at once (the route to the client leaves
      by uplink 1), the client hears REMOVE_ADDR of address id 0 on the join, the guest's
      data moves to the join;
    * uplink 2: the join dies at once (REMOVE_ADDR to the client, the guest prompted to
      resend); when the uplink comes back it is announced again and the client joins there
      again."""
    t = mbox.t
    d = mbox.start(uplinks=True)
    srv = guest_service(t)
    before = t.nstat(t.server)
    # 48 MB: still running when the uplink is back (~5 s at 2 x 50 Mbit/s)
    result, view = _download_across_link_event(t, srv, 48 * MB, path, 1.5)
    dd = delta(before, t.nstat(t.server))
    d.stop()
    c = core_counters(d.output)
    print(result, dd, c, view)
    assert not result["hung"], "the download hung"
    assert "error" not in result, (result, srv.errors)
    assert not is_fallback(result["flags"]), result
    assert c.get("PassiveJoinAtUplink", 0) >= 1 and c.get("SubflowDead", 0) >= 1, c
    assert c.get("RmAddrTX", 0) >= 1 and dd.get("RmAddr", 0) >= 1, (c, dd)  # the client heard it
    if path == 2:
        assert c.get("AddAddrTX", 0) >= 2, c  # announced again once the uplink was back ...
        assert c.get("PassiveJoinEstablished", 0) >= 2, c  # ... and the client joined there again
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd


def _slow_guest_service(t, n: int, port: int):
    """A plain-TCP service in the guest that reads `n` bytes slowly (small reads, pauses long
    enough for its window to close: the client's MPTCP zero-window probes and retransmissions
    meet the converter), then answers their sha256. Returns (thread, result dict)."""
    import threading

    with t.in_netns(t.guest):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # (inherited: a small window)
    ls.bind((t.guest_ip, port))
    ls.listen(1)
    out: dict = {}

    def serve():
        try:
            ls.settimeout(30)
            conn, _ = ls.accept()
            with conn:
                conn.settimeout(60)
                h, left, i = hashlib.sha256(), n, 0
                while left:
                    chunk = conn.recv(min(left, 4096))
                    if not chunk:
                        raise ConnectionError(f"EOF with {left} bytes missing")
                    h.update(chunk)
                    left -= len(chunk)
                    i += 1
                    time.sleep(0.3 if i % 200 == 0 else 0.001)
                conn.sendall(h.hexdigest().encode())
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            ls.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return th, out


@pytest.mark.parametrize("announced", [False, True], ids=["subflow-1", "join-at-announced-uplink"])
def test_slow_guest_reader_and_loss_both_ways(mbox, announced):
    """The guest reads slowly (its window closes again and again: Linux's MPTCP zero-window
    probe remaps an old byte, the trap that once corrupted outbound downloads) while a path
    drops 2 % of the TCP packets each way; then a download under the same loss. Bytes intact,
    the client still MPTCP, nothing that looks like a broken mapping. `announced`: with
    uplinks, the client also joins the uplink we announce, and both paths drop: with the
    loss on the join's path alone, the join once carried 29 segments of the whole test and
    none was dropped (the guard below failed: the test had not tested loss)."""
    from adversary import path_loss, path_loss_dropped

    t = mbox.t
    d = mbox.start(uplinks=announced)
    path_loss(t, 2.0, 1)
    if announced:
        path_loss(t, 2.0, 2)
    n = 3 * MB
    th, out = _slow_guest_service(t, n, PORT + 1)
    before = t.nstat(t.server)
    data = payload(n, seed=5)
    with t.in_netns(t.server):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    c.settimeout(90)
    try:
        with c:
            c.connect((t.guest_ip, PORT + 1))
            c.sendall(data)
            try:
                digest = recv_digest(c)
            except OSError:  # (reset: the guest gave up; its own error says why, below)
                digest = b""
            up_flags = mptcp_info_flags(c)
        th.join(30)
        srv = guest_service(t)
        down_flags = peer_download(t, srv, 4 * MB)
    except OSError as e:  # a stall: a timeout, or the reset after the guest's timeout
        d.stop()
        raise AssertionError(f"stalled: {type(e).__name__}: {e}; guest {out}; "
                             f"{delta(before, t.nstat(t.server))} {core_counters(d.output)}"[:2500]) from e
    dd = delta(before, t.nstat(t.server))
    dropped = path_loss_dropped(t)  # (both paths' chains)
    d.stop()
    c_ = core_counters(d.output)
    print(dd, c_, "dropped", dropped)
    # (it stalled here in about 1 run in 20, a lost window update never repeated: the
    # answers to the client's window probes were held as subflow-1 duplicates and its probes
    # on the join went unanswered, 43ee645; the guest's own probes went out as ordinary
    # ACKs, a00e5c2. Reported as a known issue before; now an error again.)
    assert not out.get("error"), (out, dd, c_)
    if announced:
        assert c_.get("PassiveJoinAtUplink", 0) >= 1 and c_.get("PassiveJoinEstablished", 0) >= 1, c_
    assert digest.decode() == hashlib.sha256(data).hexdigest(), "slow upload corrupted"
    assert dropped > 0
    assert not is_fallback(up_flags) and not is_fallback(down_flags), (up_flags, down_flags)
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd


@pytest.mark.topology(rate_mbit=50, latency_ms=20)
@pytest.mark.parametrize("path,back,loss", [(1, True, 0), (2, True, 0), (2, False, 0), (2, False, 20)],
                         ids=["initial-subflow-path", "join-path", "join-path-for-good",
                              "join-path-for-good-2pc-loss"])
@pytest.mark.one_backend
def test_inbound_survives_a_path_going_down(mbox, path, back, loss):
    """A client with two interfaces downloads from the guest's service; the path of its
    initial subflow, or of its join, goes down mid-transfer and comes back (or, the join's,
    stays down): the bytes arrive intact (the middlebox moves the dead subflow's data to the
    live one, as in the outbound role), the client stays MPTCP. With `loss` (per mille) the
    client drops that share of what reaches it on the live path: the dead join's bytes land
    on subflow 1 behind its own losses (_head_hole; captures of the CI failure of stop 24,
    1 run in 28 failed so before the fixes, with two CPU hogs; 0 in 60 after, NetfilterQueue)."""
    t = mbox.t
    d = mbox.start()
    srv = guest_service(t)
    _client_second_path(t)
    if loss:  # (nft in the client's namespace, which the topology removes)
        t.run(t.server, ["nft", "add table inet lossy; add chain inet lossy pre { type filter hook prerouting "
                         f"priority -300; }}; add rule inet lossy pre iifname {t.paths[0].server_if} "
                         f"meta l4proto tcp numgen random mod 1000 < {loss} drop"])

    def second_route_back():  # the kernel deleted the client's route of its second interface with the link
        p2 = t.paths[1]
        t.run(t.server, ["ip", "route", "replace", t.GUEST_PREFIX, "via", p2.mbox_ip, "dev",
                         p2.server_if, "table", "202"])

    before = t.nstat(t.server)
    result, view = _download_across_link_event(t, srv, 24 * MB, path, 2.0, back,
                                               second_route_back if path == 2 else None)
    dd = delta(before, t.nstat(t.server))
    d.stop()
    c = core_counters(d.output)
    print(path, back, result, dd, c, view)
    err = result.get("error", "")
    stalled = result["hung"] or "timed out" in err or any("timed out" in e for e in srv.errors)
    if path == 2 and stalled and mbox.backend == "netlink" and "corrupted" not in err:
        # Known issue, netlink backend only (kept as a guard while the loop record grows; stop
        # 29's loop caught one stall its own change caused, fixed, and left open a case: a
        # lost head after subflow 1's FIN has no path). After the join's path died, subflow 1
        # (2 % loss) holds holes whose DSNs lie above the data-level head. Stop 28 captured a crawl: only
        # the guest resend that was the head as it arrived went into a hole, the next heads of
        # its burst went behind the holes left, a step per backed-off guest RTO; since stop 29
        # each goes into the next hole (HeadIntoHole, multipath._into_holes), the holes known
        # from all the client SACKed (the model's reproducer:
        # test_multipath_model.py::test_resends_after_the_head_fill_the_next_holes_without_a_crawl).
        # Older shapes: a head behind a hole
        # inside a super-packet under one mapping the client had begun (now cut:
        # Sf1LossyCut, Sf1OrphanCut); and the stale rule killing the live subflow 1 beside the
        # dead join (stops 26-28; the end state subflow 1 CLOSED, the join ESTABLISHED; stop
        # 28 captured its last cause, subflow 1's tail lost with nothing more sent on it, fixed
        # by the stale probe). Reported with the flow's subflows; wrong
        # bytes are never excused. On NetfilterQueue (segments, a mapping each) the head
        # goes into the hole: stalls there fail (the CI failure of stop 24, fixed since).
        pytest.xfail(f"known stall after the join's path went down: {c} {view}"[:2500])
    assert not result["hung"], "the download hung"
    assert "error" not in result, (result, srv.errors)
    assert not is_fallback(result["flags"]), result
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
