"""Queue overload on a real topology: a stalled daemon, a queue at its max length, and what
the kernel does with the packets beyond it (fail-open: pass unconverted; --no-fail-open: drop).

The daemon is stalled with SIGSTOP (our own child; SIGCONT and the fixture's SIGKILL end it),
its queue shortened with --queue-maxlen so that a burst of connects fills it within
milliseconds. Each guest connect's SYN is one queued packet: the first QLEN wait for a verdict
that does not come, the others meet a full queue. The window to count completed connects is
shorter than the guest's first SYN retransmission (1 s), so a connect whose SYN was queued
cannot complete in it.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import time

import pytest

from conftest import guest_connect, payload, queue_stats, recv_digest, upload

QLEN = 64
BURST = 200
WINDOW = 0.8  # seconds; < the 1 s initial SYN retransmission timeout


def connect_burst(t, srv, n: int = BURST, window: float = WINDOW) -> int:
    """n non-blocking connects from the guest; how many completed within `window`."""
    socks = []
    try:
        with t.in_netns(t.guest):
            for _ in range(n):
                s = socket.socket(srv.family, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                s.connect_ex((srv.addr, srv.port))
        pending, done = set(socks), 0
        deadline = time.monotonic() + window
        while pending and time.monotonic() < deadline:
            _, ready, _ = select.select([], list(pending), [], 0.05)
            for s in ready:
                pending.discard(s)
                done += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return done
    finally:
        for s in socks:
            s.close()


def wait_drained(t, timeout: float = 5) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        st = queue_stats(t)
        if st["waiting"] == 0 or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "no-fail-open"])
def test_full_queue_passes_plain_tcp_only_with_fail_open(mbox, server_factory, fail_open):
    t = mbox.t
    extra = ("--fail-open",) if fail_open else ()
    d = mbox.start("--passthrough", "--guest-iface", t.mbox_guest_if,
                   "--queue-maxlen", str(QLEN), *extra)
    bound = next(line for line in d.lines if "bound queue" in line)
    assert f"maxlen {QLEN}, {'fail-open' if fail_open else 'full queue drops'}" in bound, bound
    srv = server_factory(mptcp=False)
    before = queue_stats(t)
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        done = connect_burst(t, srv)
        st = queue_stats(t)
        print(f"fail_open={fail_open}: {done}/{BURST} connects within {WINDOW}s, {st}")
        assert st["waiting"] == QLEN, st  # the queue sits at its max length
        assert st["user_dropped"] == before["user_dropped"], st
        if fail_open:
            # every SYN beyond the queue (and its SYN/ACK, also met a full queue) passed
            assert done >= BURST - QLEN - 8, (done, st)
            assert st["queue_dropped"] == before["queue_dropped"], st  # not counted anywhere
            upload(t, srv, payload(1 << 20), timeout=10)  # a whole transfer, daemon stalled
            assert queue_stats(t)["waiting"] == QLEN
        else:
            assert done == 0, (done, st)
            assert st["queue_dropped"] - before["queue_dropped"] >= BURST - QLEN - 8, st
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    st = wait_drained(t)  # the stalled packets get their verdicts late, none is lost
    assert st["waiting"] == 0, st
    rc, _ = d.stop()
    assert rc == 0, d.output
    if not fail_open:
        upload(t, srv, payload(1 << 16), timeout=10)  # bypass: no daemon, traffic flows


def test_unconverted_segments_make_the_server_fall_back(mbox, server_factory):
    """A converted MPTCP connection whose guest segments pass the full queue without a DSS
    mapping: the server's Linux MPTCP falls back to plain TCP (MPTcpExtDssFallback) and the
    data arrives intact."""
    t = mbox.t
    d = mbox.start("--guest-iface", t.mbox_guest_if, "--queue-maxlen", str(QLEN), fail_open=True)
    srv = server_factory()
    plain = server_factory(mptcp=False, port=5202)
    n = 300_000
    data = payload(n)
    before = t.nstat(t.server)
    c = guest_connect(t, srv, timeout=10)
    try:
        c.sendall(f"UP {n}\n".encode() + data[:100_000])
        deadline = time.monotonic() + 5
        while t.nstat(t.server).get("MPCapableACKRX", 0) <= before.get(
                "MPCapableACKRX", 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            connect_burst(t, plain, n=QLEN + 16, window=0.3)  # fill the queue
            assert queue_stats(t)["waiting"] == QLEN
            c.sendall(data[100_000:200_000])  # these pass unconverted
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                fallback = t.nstat(t.server).get("DssFallback", 0) - before.get(
                    "DssFallback", 0)
                if fallback:
                    break
                time.sleep(0.05)
            assert fallback == 1, t.nstat(t.server)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        c.sendall(data[200_000:])
        digest = recv_digest(c)
    finally:
        c.close()
    assert digest.decode() == hashlib.sha256(data).hexdigest()
    rc, _ = d.stop()
    assert rc == 0, d.output
