"""Stopping the daemon mid-transfer (SIGTERM: an upgrade, a restart). Once it is gone the
rules' bypass passes the flow's packets unconverted, and a restarted daemon would pass them as
a flow it does not know. Measured before Converter.stop: a single-path download stopped at
15 MB delivered a wrong byte 1 MB later and went on to 132 MB of a 48 MB transfer (the
server, its DATA_ACKs stalled, resent at the data level what the guest took for new bytes);
a multipath one stalled for good, no error, both ways. Now the daemon resets both ends of
every flow the server treats as MPTCP on its way out: the guest's socket fails at once with
ECONNRESET, the server gets MP_FASTCLOSE, and no wrong byte reaches either application."""

from __future__ import annotations

import errno
import hashlib
import time

import pytest

from conftest import guest_connect, payload
from test_multipath import JOIN, core_counters, delta

MB = 1 << 20
N = 48 * MB
STOP_AT = 12 * MB  # (a few seconds in at 50 Mbit/s per path)


def _start(mbox, multi: bool):
    return mbox.start(*JOIN, uplinks=True) if multi else mbox.start()


def _check_server_side(t, before, d, srv, multi: bool) -> dict:
    c = core_counters(d.output)
    dd = delta(before, t.nstat(t.server))
    print({k: v for k, v in c.items() if k.startswith(("Stop", "MPJoinEst", "Abort"))},
          {k: v for k, v in dd.items() if v and ("Fast" in k or "Rst" in k or "Fallback" in k)})
    assert c.get("StopReset") == 1, c
    assert not multi or c.get("MPJoinEstablished", 0) >= 1, c  # (the multipath case is one)
    assert dd.get("MPFastcloseRx", 0) >= 1, dd  # the server tore the connection down (one per subflow told)
    for k in ("DSSNotMatching", "DSSNoMatchTCP", "InfiniteMapRx", "DataCsumErr", "DssFallback"):
        assert not dd.get(k), dd
    return c


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.parametrize("multi", [False, True], ids=["single-path", "multipath"])
def test_stopping_the_daemon_mid_download_resets_the_guest_and_delivers_no_wrong_byte(
        mbox, server_factory, multi):
    t = mbox.t
    d = _start(mbox, multi)
    srv = server_factory()
    data = payload(N)
    before = t.nstat(t.server)
    got = bytearray()
    err = stopped_at = None
    try:
        with guest_connect(t, srv, timeout=20) as c:
            c.sendall(f"DOWN {N}\n".encode())
            while True:
                if stopped_at is None and len(got) >= STOP_AT:
                    d.stop()
                    stopped_at = time.monotonic()
                try:
                    chunk = c.recv(1 << 16)
                except OSError as e:
                    err = e
                    break
                if not chunk:
                    break
                got += chunk
    finally:
        d.stop()
        print(d.output[-1200:])
    took = None if stopped_at is None else time.monotonic() - stopped_at
    bad = next((i for i in range(len(got)) if got[i] != data[i]), None) if got != data[:len(got)] else None
    print(f"received {len(got)} of {N}, {err!r} {took} s after the stop; first wrong byte: {bad}")
    assert bad is None, f"wrong byte at {bad} after the daemon stopped"
    assert stopped_at is not None and len(got) < N, "the transfer ended before the stop"
    assert err is not None and err.errno == errno.ECONNRESET, err
    assert took < 10, took  # (at once: not the reader's 20 s timeout)
    _check_server_side(t, before, d, srv, multi)


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.parametrize("multi", [False, True], ids=["single-path", "multipath"])
def test_stopping_the_daemon_mid_upload_resets_both_applications(mbox, server_factory, multi):
    t = mbox.t
    d = _start(mbox, multi)
    srv = server_factory()
    data = payload(N)
    before = t.nstat(t.server)
    sent = 0
    err = stopped_at = answer = None
    try:
        with guest_connect(t, srv, timeout=20) as c:
            c.sendall(f"UP {N}\n".encode())
            view = memoryview(data)
            try:
                while sent < N:
                    if stopped_at is None and sent >= STOP_AT:
                        d.stop()
                        stopped_at = time.monotonic()
                    sent += c.send(view[sent:sent + 65536])
                answer = c.recv(64)
            except OSError as e:
                err = e
    finally:
        d.stop()
    took = None if stopped_at is None else time.monotonic() - stopped_at
    print(f"sent {sent} of {N}: {err!r} {took} s after the stop; answer {answer!r}; server {srv.errors}")
    assert answer != hashlib.sha256(data).hexdigest().encode(), "the upload outran the stop"
    assert err is not None and err.errno in (errno.ECONNRESET, errno.EPIPE), err
    assert took < 10, took
    deadline = time.monotonic() + 5
    while not srv.errors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.errors and "reset" in srv.errors[0].lower(), srv.errors  # its read failed: no digest of wrong bytes
    _check_server_side(t, before, d, srv, multi)
