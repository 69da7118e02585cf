"""A DSS checksum failure on server data, for real (RFC 8684 §3.7): a rule in the server's
namespace changes one byte of one data segment after the server's MPTCP stack computed its DSS
checksum (the TCP checksum stays valid: it is computed after the rule on veth). The converter
must never hand those bytes to the guest: it drops the segment and sends MP_FAIL; the server
retransmits the intact segment, answers MP_FAIL and falls back with an infinite mapping."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import IPPROTO_MPTCP
from test_outbound_abort import delta
from test_outbound_core import core_counters

PORT = 5203
N = 30  # messages, each its own skb (and so its own mapping in one segment)


def message(i: int) -> bytes:
    return f"M{i:03d}".encode() + bytes((i * 7 + j) & 0xFF for j in range(96))


def corrupt_once(t, chain: str, hook: str, match: str) -> None:
    """In the server's namespace: one byte of the first segment of message 10 that `match`
    selects becomes 'X', once (the retransmission passes intact); the rule counts it."""
    tag = int.from_bytes(message(10)[:4], "big")
    script = f"""
table inet mbtest {{
    chain {chain} {{
        type filter hook {hook} priority 0; policy accept;
        {match} @ih,0,32 0x{tag:08x} limit rate 1/hour burst 1 packets @ih,8,8 set 0x58 counter
    }}
}}
"""
    t.run(t.server, ["nft", "-f", "-"], input=script)


def fired(t, chain: str) -> str:
    return t.run(t.server, ["nft", "list", "chain", "inet", "mbtest", chain]).stdout


def mptcp_listener(t) -> socket.socket:
    with t.in_netns(t.server):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((t.server_ip, PORT))
    ls.listen(4)
    return ls


@pytest.mark.topology(checksum=True)
def test_corrupted_server_segment_never_reaches_the_guest(mbox):
    t = mbox.t
    d = mbox.start()
    corrupt_once(t, "out", "output", f"tcp sport {PORT}")
    ls = mptcp_listener(t)
    errors: list[str] = []

    def serve():
        try:
            conn, _ = ls.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.recv(4)
            for i in range(N):
                conn.sendall(message(i))
                time.sleep(0.03)  # one skb, one mapping, one segment per message
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
            conn.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    before = t.nstat(t.server)
    with t.in_netns(t.guest):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect((t.server_ip, PORT))
    c.sendall(b"GET\n")
    got = b""
    while True:
        chunk = c.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    c.close()
    th.join(5)
    ls.close()
    rule = fired(t, "out")
    after = t.nstat(t.server)
    rc, _ = d.stop()
    cc = core_counters(d.output)
    diff = delta(before, after)
    print(rule, diff, cc, sep="\n")
    assert "packets 1 " in rule, rule  # the rule changed exactly one segment
    assert got == b"".join(message(i) for i in range(N)), "the guest's stream is not the server's"
    assert not errors, errors
    assert rc == 0
    # the converter saw the failure, dropped it, signalled it; the server answered and fell back
    assert cc.get("DataCsumErr") == 1 and cc.get("CsumErrDropped") == 1, cc
    assert cc.get("MPFailTX") == 1 and cc.get("MPFailRX") == 1, cc
    assert cc.get("InfiniteMapRX") == 1, cc
    assert not cc.get("CoreBug") and not cc.get("StateViolation"), cc
    assert diff.get("MPFailRx") == 1 and diff.get("MPFailTx") == 1, diff
    assert diff.get("InfiniteMapTx") == 1, diff
    assert not diff.get("DataCsumErr"), diff  # our checksums stayed right


@pytest.mark.topology(checksum=True)
def test_server_mp_fail_is_answered_with_an_infinite_mapping(mbox):
    """The other direction: a byte of one converted guest segment changes on the way in to the
    server (its TCP checksum is not checked again on veth), so the server's DSS check fails
    and it sends MP_FAIL. The converter answers MP_FAIL and puts an infinite mapping on the
    guest's next data; the server falls back on it (InfiniteMapRx) instead of resetting.
    (Seen on Linux 6.18: its application does get the changed byte, the receiver's choice
    there; the converter, receiving, drops such a segment: the test above.)"""
    t = mbox.t
    d = mbox.start()
    corrupt_once(t, "in", "prerouting", f"tcp dport {PORT}")
    ls = mptcp_listener(t)
    received: list[bytes] = []
    errors: list[str] = []

    def serve():
        try:
            conn, _ = ls.accept()
            conn.settimeout(20)
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                received.append(chunk)
            conn.sendall(b"done")
            conn.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    before = t.nstat(t.server)
    with t.in_netns(t.guest):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(20)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.connect((t.server_ip, PORT))
    for i in range(N):
        c.sendall(message(i))
        time.sleep(0.03)
    c.shutdown(socket.SHUT_WR)
    reply = c.recv(16)
    c.close()
    th.join(5)
    ls.close()
    rule = fired(t, "in")
    after = t.nstat(t.server)
    rc, _ = d.stop()
    cc = core_counters(d.output)
    diff = delta(before, after)
    got = b"".join(received)
    sent = b"".join(message(i) for i in range(N))
    print(rule, diff, cc, f"server stream intact: {got == sent} ({len(got)} of {len(sent)} bytes)", sep="\n")
    assert "packets 1 " in rule, rule
    assert not errors and reply == b"done", (errors, reply)
    assert rc == 0
    assert diff.get("DataCsumErr") == 1 and diff.get("MPFailTx") == 1, diff  # the server's check
    assert cc.get("MPFailRX") == 1 and cc.get("MPFailTX") == 1 and cc.get("InfiniteMapTX") == 1, cc
    assert diff.get("MPFailRx") == 1 and diff.get("InfiniteMapRx") == 1, diff  # it fell back
    assert not cc.get("CoreBug") and not cc.get("StateViolation"), cc
    assert len(got) == len(sent)
