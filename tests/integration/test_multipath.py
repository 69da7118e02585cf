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
@pytest.mark.parametrize("family,masquerade", [(socket.AF_INET, False), (socket.AF_INET6, False),
                                               (socket.AF_INET, True)],
                         ids=["ipv4", "ipv6", "ipv4-masquerade"])
def test_two_uplinks_both_carry(mbox, server_factory, family, masquerade):
    """Both uplinks carry a share of an upload and a download, bytes intact, one join per
    connection. `masquerade`: the usual hypervisor, guests with private addresses
    masqueraded out of the uplinks. Subflow 1 leaves as uplink 1's address (conntrack
    rewrites our segments to the server as it rewrites the guest's), the joins leave from
    the uplink addresses; the server's data from the joins reaches the guest untracked
    (rules: the output chain; tracked, NAT gave those segments another source port and the
    guest answered with RSTs): nothing unknown to the core."""
    t = mbox.t
    if masquerade:
        ifs = ", ".join(f'"{p.mbox_if}"' for p in t.paths)
        t.run(t.mbox, ["nft", "-f", "-"], input=(
            "table ip mbtestmasq {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
            f"  oifname {{ {ifs} }} ip saddr {t.GUEST_PREFIX} masquerade\n }}\n}}\n"))
    try:
        d = mbox.start(*JOIN, uplinks=True)
        srv = server_factory(family=family)
        before = t.nstat(t.server)
        links0 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
        upload(t, srv, payload(12 * MB))
        download(t, srv, 12 * MB)
        links1 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
        dd = delta(before, t.nstat(t.server))
        rc, _ = d.stop()  # first, so that a failure below shows the core's counters at exit
        c = core_counters(d.output)
        print(dd, links0, links1)
        print(d.output[-3000:])
        bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
        assert not bad, bad
        assert dd.get("MPJoinSynRx", 0) == dd.get("MPJoinAckRx", 0) == 2, dd  # one join x 2 flows
        assert not [f for f in srv.mptcp_flags if is_fallback(f)]
        # both connections closed cleanly: no guest RST (one answered the server's subflow-1
        # FIN, resent while nobody acked it; Sf1FinAcked), no MP_FASTCLOSE with it
        assert not c.get("RstTX") and not dd.get("MPFastcloseRx") and not dd.get("MPRstRx"), (c, dd)
        if masquerade:
            # the symptom was the guest's RSTs (UnknownFlow 5509 in one run, thousands of MPTCP
            # retransmissions with them). A few retransmissions have a known cause: each join
            # segment beyond the guest's window (JoinBeyondGuestWindow: taken and acked here,
            # dropped by the guest) is repaired only by the server's MPTCP timer (a proof: 4 of
            # them, MPTCPRetrans 4). One more, in about 1 run in 6, is not understood.
            # (GuestHoleSuspect is no such count: it grows by one a second while a hole
            # lasts, and counts holes the server's TCP repairs too; review of 13e3758)
            explained = c.get("JoinBeyondGuestWindow", 0)
            assert not c.get("UnknownFlow") and dd.get("MPTCPRetrans", 0) <= 2 + explained, (c, dd)
        for (tx0, rx0), (tx1, rx1) in zip(links0, links1):
            # (a CI run once saw uplink 2 carry ~0 of the upload: the counters name the cause)
            assert tx1 - tx0 > 2 * MB and rx1 - rx0 > 2 * MB, (links0, links1, c)
        assert rc == 0, d.output
    finally:
        if masquerade:
            t.run(t.mbox, ["nft", "delete", "table", "ip", "mbtestmasq"], check=False)


def _transfer_with_link_event(t, srv, direction: str, n: int, path: int, down_at: float,
                              up_at: float | None, samples: list) -> None:
    """Up- or download `n` bytes (sha256 checked) while path `path` goes down at `down_at`
    seconds (and up at `up_at`); `samples` gets (time, bytes so far) every 100 ms."""
    import hashlib
    import threading
    import time

    from conftest import guest_connect, recv_digest

    data = payload(n)
    done = threading.Event()
    progress = [0]
    t0 = time.monotonic()

    def links():
        fired_down = fired_up = False
        while not done.is_set():
            now = time.monotonic() - t0
            samples.append((now, progress[0]))
            if not fired_down and now >= down_at:
                t.set_link(path, False)
                fired_down = True
            if up_at is not None and not fired_up and now >= up_at:
                t.set_link(path, True)
                fired_up = True
            time.sleep(0.1)

    import os
    cap = None
    if os.environ.get("MP_CAPTURE"):  # debugging aid: the guest's side of the transfer
        cap = t.popen(t.guest, ["tcpdump", "-i", t.guest_if, "-s", "96", "-U", "-w", os.environ["MP_CAPTURE"]])
        time.sleep(1)
    th = threading.Thread(target=links, daemon=True)
    th.start()
    try:
        with guest_connect(t, srv, timeout=60) as c:
            if direction == "up":
                c.sendall(f"UP {n}\n".encode())
                view = memoryview(data)
                while progress[0] < n:
                    progress[0] += c.send(view[progress[0]:progress[0] + 65536])
                digest = recv_digest(c)
                assert digest.decode() == hashlib.sha256(data).hexdigest(), "upload corrupted"
            else:
                c.sendall(f"DOWN {n}\n".encode())
                h = hashlib.sha256()
                while True:
                    chunk = c.recv(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    progress[0] += len(chunk)
                assert progress[0] == n, f"download truncated: {progress[0]} of {n}"
                assert h.hexdigest() == hashlib.sha256(data).hexdigest(), "download corrupted"
    finally:
        done.set()
        th.join()
        if cap is not None:
            time.sleep(0.3)
            cap.terminate()
            cap.wait()


def _longest_stall(samples) -> float:
    """Longest time without progress, from the 100 ms samples."""
    worst = 0.0
    last_t, last_b = samples[0] if samples else (0.0, 0)
    for tm, b in samples[1:]:
        if b != last_b:
            worst = max(worst, tm - last_t)
            last_t, last_b = tm, b
    return worst


def core_counters(output: str) -> dict[str, int]:
    """The daemon's `counters at exit` line (core.* names) as a dict."""
    out = {}
    for line in output.splitlines():
        if line.startswith("counters at exit:"):
            for item in line.split()[3:]:
                k, _, v = item.partition("=")
                if k.startswith("core.") and v.isdigit():
                    out[k[5:]] = int(v)
    return out


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("path", [1, 2])
def test_uplink_down_mid_transfer(mbox, server_factory, direction, path):
    """Each uplink in turn (path 1 carries subflow 1 too) goes down mid-transfer and comes
    back: the bytes arrive intact, the dead subflow's data went elsewhere, the flow joins
    over the uplink again once it is back. The stall is measured (printed), not asserted.

    Known issue, netlink backend only (GSO super-packets): failover stalls are longer there
    (0.2-26 s measured) and a run can time out; on netlink such a failure is reported as xfail
    with what failed. Wrong bytes are never excused (the sha256 check raises 'corrupted')."""
    try:
        _uplink_down(mbox, server_factory, direction, path)
    except (AssertionError, OSError) as e:
        if mbox.backend == "netlink" and "corrupt" not in str(e):
            pytest.xfail(f"known issue on the netlink backend (failover): {type(e).__name__}: {e}"[:1500])
        raise


def _uplink_down(mbox, server_factory, direction, path):
    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    samples: list = []
    try:
        _transfer_with_link_event(t, srv, direction, 32 * MB, path, 1.5, 2.5, samples)
    except OSError as e:
        # (the intermittent reset of issue 6: the xfail message is all CI shows, so it names
        # who reset what: the core's subflow and reset counters, the server's MPTCP counters)
        d.stop()
        c = core_counters(d.output)
        dd = delta(before, t.nstat(t.server))
        keys = ("Subflow", "MPJoin", "Rst", "RST", "Fastclose", "Reinject", "DupAckSynth", "Unknown", "Fail")
        raise type(e)(f"{e}; at {samples[-1] if samples else None}; core "
                      f"{ {k: v for k, v in c.items() if k.startswith(keys) or 'Rst' in k} }; server "
                      f"{ {k: v for k, v in dd.items() if v and ('Rst' in k or 'Fast' in k or 'Reset' in k or 'Fallback' in k)} }") from e
    finally:
        d.stop()
        print(d.output[-2500:])
        print({k: v for k, v in delta(before, t.nstat(t.server)).items() if v})
    dd = delta(before, t.nstat(t.server))
    c = core_counters(d.output)
    print(f"path {path} {direction}: longest stall {_longest_stall(samples):.2f} s;",
          {k: v for k, v in c.items() if k.startswith(("Subflow", "MPJoin", "RmAddr", "Reinject", "DupAck"))})
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert c.get("SubflowDead", 0) >= 1, c
    assert c.get("MPJoinRejoin", 0) >= 1 and c.get("MPJoinEstablished", 0) >= 2, c
    assert dd.get("RmAddr", 0) >= 1, dd  # the server was told to stop using the address


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.one_backend
def test_a_first_path_that_loses_data_but_passes_small_segments_is_probed_then_given_up(mbox, server_factory):
    """Stale probe against the kernel: mid-upload, subflow 1's path starts dropping every
    segment with data but lets small ones through (an MTU black hole, as far as the
    converter can tell): subflow 1 makes no progress while the join does, so it goes stale
    and is probed (a zero-length ACK just below the server's window). Linux answers it with
    a duplicate ACK (StaleProbeAnswered: the probe works on the real stack), which buys one
    more wait; with no news after it, a subflow is given up (SubflowDead; the counters are
    per flow, so which one is not asserted), and the upload arrives intact."""
    import threading
    import time

    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    rule = (f"table inet mbtestbh {{\n chain in {{\n  type filter hook input priority -10;\n"
            f"  iifname \"{t.paths[0].server_if}\" ip saddr {t.guest_ip} tcp dport {srv.port} "
            f"meta length > 200 drop\n }}\n}}\n")
    armed = threading.Event()

    def black_hole():
        time.sleep(1.0)
        t.run(t.server, ["nft", "-f", "-"], input=rule)
        armed.set()

    th = threading.Thread(target=black_hole, daemon=True)
    th.start()
    try:
        upload(t, srv, payload(24 * MB), timeout=90)
    finally:
        th.join()
        t.run(t.server, ["nft", "delete", "table", "inet", "mbtestbh"], check=False)
        rc, _ = d.stop()
        print(d.output[-2500:])
    assert rc == 0, rc
    assert armed.is_set()
    c = core_counters(d.output)
    dd = delta(before, t.nstat(t.server))
    print({k: v for k, v in c.items() if k.startswith(("Subflow", "StaleProbe", "Reinject", "DupAck"))})
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert c.get("StaleProbeTX", 0) >= 1 and c.get("StaleProbeAnswered", 0) >= 1, c
    assert c.get("SubflowDead", 0) >= 1, c


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.one_backend
@pytest.mark.parametrize("path", [1, 2])
def test_a_path_black_holed_for_seconds_is_joined_again_when_it_works(mbox, server_factory, path):
    """Mid-upload, path `path` (1: subflow 1's) drops every packet both ways for 3 s while
    its link stays up (a router beyond the uplink rebooting): its subflow goes stale and
    dies by the clocks, its bytes move to the other path; REJOIN_WAIT after its death the
    middlebox joins over that uplink again (MPJoinRetry), and once the path works that join
    carries a share of the rest. Before stop 48 only an uplink going down and up brought a
    rejoin: the flow used one path for the rest of its life. sha256 and the server's MIB
    are checked."""
    import threading
    import time

    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    sif = t.paths[path - 1].server_if
    rule = (f"table inet mbtestbh2 {{\n chain in {{\n  type filter hook input priority -10;\n"
            f"  iifname \"{sif}\" drop\n }}\n chain out {{\n  type filter hook output priority -10;\n"
            f"  oifname \"{sif}\" drop\n }}\n}}\n")
    marks: dict = {}
    done = threading.Event()

    def black_hole():
        time.sleep(1.0)
        t.run(t.server, ["nft", "-f", "-"], input=rule)
        marks["on"] = time.monotonic()
        time.sleep(3.0)
        t.run(t.server, ["nft", "delete", "table", "inet", "mbtestbh2"])
        marks["off"] = time.monotonic()
        # (the death comes about 1.3 s into the black hole, the retry REJOIN_WAIT (1 s) later:
        # its SYN, resent 1 s on, opens the join once the path works)
        done.wait(2.0)
        marks["links"] = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]

    th = threading.Thread(target=black_hole, daemon=True)
    th.start()
    try:
        upload(t, srv, payload(96 * MB), timeout=120)
    finally:
        done.set()
        th.join()
        t.run(t.server, ["nft", "delete", "table", "inet", "mbtestbh2"], check=False)
        rc, _ = d.stop()
        print(d.output[-2500:])
    links_end = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    assert rc == 0, rc
    assert "off" in marks, "the upload ended before the black hole was lifted"
    c = core_counters(d.output)
    dd = delta(before, t.nstat(t.server))
    print({k: v for k, v in c.items() if k.startswith(("Subflow", "MPJoin", "StaleProbe", "RmAddr"))},
          {k: v for k, v in dd.items() if v and k.startswith("MPJoin")}, marks, links_end)
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert c.get("SubflowDead", 0) >= 1 and c.get("MPJoinRetry", 0) >= 1, c
    assert dd.get("MPJoinAckRx", 0) >= 2, dd  # the first join and the retry
    assert "links" in marks, "the upload ended before the retry could carry anything"
    sent = [end[0] - mid[0] for mid, end in zip(marks["links"], links_end)]
    assert sent[path - 1] >= 0.2 * sum(sent), (sent, c)  # the path carries its share again


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.one_backend
def test_retries_into_a_path_that_passes_only_small_segments_die_at_their_first_wait(mbox, server_factory):
    """Mid-upload, path 2 starts passing small segments only, for good (an MTU black hole):
    its join dies, and each retry's handshake works but its data is never acked. A retry
    on probation (_on_probation) dies at its first stale, without the probe's answer and
    SILENT_ALONE's extra waits: before, each retry stalled the guest about 6.8 s (5 retries
    in a 200 MB upload: 75 s instead of 45). The stalls are printed (measured, not
    asserted); sha256 and the retries are checked."""
    import hashlib
    import threading
    import time

    from conftest import guest_connect, recv_digest

    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    sif = t.paths[1].server_if
    rule = (f"table inet mbtestmtu {{\n chain in {{\n  type filter hook input priority -10;\n"
            f"  iifname \"{sif}\" meta length > 200 drop\n }}\n}}\n")
    data = payload(120 * MB)
    samples: list = []
    progress = [0]
    done = threading.Event()
    t0 = time.monotonic()

    def sampler():
        armed = False
        while not done.is_set():
            now = time.monotonic() - t0
            samples.append((now, progress[0]))
            if not armed and now > 1.0:
                t.run(t.server, ["nft", "-f", "-"], input=rule)
                armed = True
            time.sleep(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        with guest_connect(t, srv, timeout=60) as c:
            c.sendall(f"UP {len(data)}\n".encode())
            view = memoryview(data)
            while progress[0] < len(data):
                progress[0] += c.send(view[progress[0]:progress[0] + 65536])
            assert recv_digest(c).decode() == hashlib.sha256(data).hexdigest(), "upload corrupted"
    finally:
        done.set()
        th.join()
        t.run(t.server, ["nft", "delete", "table", "inet", "mbtestmtu"], check=False)
        rc, _ = d.stop()
    c = core_counters(d.output)
    dd = delta(before, t.nstat(t.server))
    stalls = []
    last_t, last_b = samples[0]
    for tm, b in samples[1:]:
        if b != last_b:
            if tm - last_t > 0.3:
                stalls.append(f"{last_t:.1f}-{tm:.1f}")
            last_t, last_b = tm, b
    print(f"{samples[-1][0]:.1f} s, stalls over 0.3 s: {stalls};",
          {k: v for k, v in c.items() if k.startswith(("Subflow", "MPJoin", "StaleProbe"))})
    assert rc == 0, rc
    assert not {k: dd[k] for k in MUST_STAY_ZERO if dd.get(k)}, dd
    assert c.get("MPJoinRetry", 0) >= 1, c
    # every retry died (its data never passed), none lived on
    assert c.get("SubflowDead", 0) == c["MPJoinRetry"] + 1 or c.get("MPJoinSynTX", 0) > c.get("MPJoinEstablished", 0), c


def _mptcp_subflows(t, srv) -> list[int]:
    """MPTCP_INFO's subflow count of each server socket the test server accepted."""
    return [getattr(srv, "subflow_counts", [None])[-1]] if hasattr(srv, "subflow_counts") else []


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False, paths=3, checksum=True)
def test_three_uplinks_checksums_captures_pass_inspect(mbox, server_factory, tmp_path):
    """Three uplinks, DSS checksums negotiated: every uplink carries its share, the server's
    MIB is clean, the middlebox's own stack answered no join packet (no RST from it), and a
    capture of every server interface passes `middlebox inspect` (keys, tokens, HMACs,
    mappings and DSS checksums of all subflows).

    Known issue, netlink backend only (GSO super-packets): with checksums, the download can
    crawl and be reset by the server (subflow 1 drops pieces of checksummed mappings that the
    server reinjects while another mapping is being summed: DataCsumHoleDropped in the
    thousands). The test runs for real on both backends; on netlink a failure is reported as
    xfail with what failed, never hidden; bytes that arrive are still checked."""
    try:
        _three_uplinks_checksums(mbox, server_factory, tmp_path)
    except (AssertionError, OSError) as e:
        if mbox.backend == "netlink" and "corrupt" not in str(e):  # wrong bytes: never excused
            pytest.xfail(f"known issue on the netlink backend with checksums: {type(e).__name__}: {e}"[:400])
        raise


def _three_uplinks_checksums(mbox, server_factory, tmp_path):
    import subprocess
    import sys
    import time

    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    pcap = str(tmp_path / "server.pcap")
    dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", "any", "-s", "0", "-B", "262144",
                              "-U", "-w", pcap, "tcp"])
    time.sleep(1.0)
    before, before_mbox = t.nstat(t.server), t.nstat(t.mbox, prefix=None)
    links0 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    try:
        upload(t, srv, payload(10 * MB))
        download(t, srv, 10 * MB)
    except BaseException:
        d.stop()
        print(d.output[-3000:])
        print({k: v for k, v in delta(before, t.nstat(t.server)).items() if v})
        raise
    links1 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    time.sleep(0.5)
    dump.terminate()
    dump.wait(timeout=10)
    dd = delta(before, t.nstat(t.server))
    dm = delta(before_mbox, t.nstat(t.mbox, prefix=None))
    d.stop()
    c = core_counters(d.output)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    # subflow 1 leaves by uplink 1 (the main route): joins over the two others, 2 flows
    assert dd.get("MPJoinSynRx", 0) == dd.get("MPJoinAckRx", 0) == 2 * 2, dd
    assert c.get("MPJoinEstablished") == 4 and not c.get("MPJoinSynAckHMacFailure"), c
    assert dm.get("TcpOutRsts", 0) == 0, dm  # the box's stack never saw a join packet
    # every uplink carried a share both ways (the split itself is printed and benchmarked)
    tx = [b[0] - a[0] for a, b in zip(links0, links1)]
    rx = [b[1] - a[1] for a, b in zip(links0, links1)]
    print("bytes sent per uplink", tx, "received", rx)
    assert min(tx) > 0.05 * sum(tx) and min(rx) > 0.05 * sum(rx), (tx, rx)
    r = subprocess.run([sys.executable, "-m", "middlebox", "inspect", pcap], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False, paths=3)
@pytest.mark.one_backend
def test_join_refused_bad_hmac_and_reset(mbox, server_factory):
    """A server whose join SYN/ACK carries a wrong HMAC (uplink 2; corrupted in the server
    namespace) and one that resets the join SYN (uplink 3): both refused and counted, the
    bad one answered with RST + MP_TCPRST, no third ACK sent, the transfer completes on what
    is left, bytes intact."""
    import os
    import sys

    t = mbox.t
    up2, up3 = t.paths[1].mbox_ip, t.paths[2].mbox_ip
    lo, hi = 61000, 61999
    t.run(t.server, ["iptables", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-d", up2,
                     "--tcp-flags", "SYN,ACK", "SYN,ACK", "--dport", f"{lo}:{hi}",
                     "-j", "NFQUEUE", "--queue-num", "9"])
    t.run(t.server, ["iptables", "-A", "INPUT", "-p", "tcp", "--syn", "-s", up3,
                     "--sport", f"{lo}:{hi}", "-j", "REJECT", "--reject-with", "tcp-reset"])
    peer = t.popen(t.server, [sys.executable, os.path.join(os.path.dirname(__file__), "join_peer.py"), "9"],
                   stdout=__import__("subprocess").PIPE, text=True)
    assert peer.stdout.readline().strip() == "ready"
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before, before_tcp = t.nstat(t.server), t.nstat(t.server, prefix=None)
    try:
        upload(t, srv, payload(4 * MB))
        download(t, srv, 4 * MB)
    finally:
        d.stop()
        peer.terminate()
        peer.wait(timeout=10)
    dd = delta(before, t.nstat(t.server))
    c = core_counters(d.output)
    print(c, {k: v for k, v in dd.items() if v})
    assert c.get("MPJoinSynAckHMacFailure", 0) == 2, c  # one per connection
    assert c.get("MPJoinRejected", 0) == 2, c
    assert not c.get("MPJoinEstablished"), c
    assert dd.get("MPJoinAckRx", 0) == 0 and dd.get("MPJoinAckHMacFailure", 0) == 0, dd
    # our RST (+ MP_TCPRST) for each bad SYN/ACK ended the server's half-open join
    assert delta(before_tcp, t.nstat(t.server, prefix=None)).get("TcpAttemptFails", 0) >= 2
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False, server_signal=True)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.one_backend
def test_joins_follow_add_addr_when_the_server_denies_its_initial_address(mbox, server_factory, family, tmp_path):
    """The server sets the MP_CAPABLE C bit (allow_join_initial_addr_port=0: no join to the
    address the guest connected to) and announces its path-2 address with ADD_ADDR (a
    `signal` endpoint). The middlebox checks the HMAC, echoes it, and joins that address over
    both uplinks: the server counts its ADD_ADDR echoed and exactly those joins, every uplink
    carries a share, the bytes are intact, no join went to the initial address (the server
    would count MPJoinRejected or a token failure) and the guest never saw an MPTCP option
    (the converter strips them; the unit tests check every packet). A capture of the server's
    interfaces passes `middlebox inspect` (its ADD_ADDR HMACs and echoes included)."""
    import subprocess
    import sys
    import time

    t = mbox.t
    t.run(t.server, ["sysctl", "-qw", "net.mptcp.allow_join_initial_addr_port=0"])
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory(family=family, bind_any=True)
    pcap = str(tmp_path / "server.pcap")
    dump = t.popen(t.server, ["tcpdump", "-Z", "root", "-i", "any", "-s", "0", "-B", "262144",
                              "-U", "-w", pcap, "tcp"])
    time.sleep(1.0)
    before, before_tcp = t.nstat(t.server), t.nstat(t.server, prefix=None)
    links0 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
    try:
        upload(t, srv, payload(8 * MB))
        download(t, srv, 8 * MB)
    finally:
        links1 = [link_bytes(t, t.mbox, p.mbox_if) for p in t.paths]
        dd = delta(before, t.nstat(t.server))
        rc, _ = d.stop()
        c = core_counters(d.output)
        tcp = {k: v for k, v in delta(before_tcp, t.nstat(t.server, prefix=None)).items() if v}
        print({k: v for k, v in dd.items() if v}, c, links0, links1, tcp)
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not [f for f in srv.mptcp_flags if is_fallback(f)]
    # two connections, each: the server announced once, heard the echo; joined from 2 uplinks
    assert dd.get("AddAddrTx", 0) >= 2 and dd.get("EchoAdd", 0) >= 2, dd
    assert c.get("JoinInitialDenied") == 2 and c.get("AddAddrJoin") == 4 and not c.get("AddAddrBadHmac"), c
    assert dd.get("MPJoinSynRx", 0) == dd.get("MPJoinAckRx", 0) == 4, dd
    assert not dd.get("MPJoinRejected", 0), dd
    for (tx0, rx0), (tx1, rx1) in zip(links0, links1):
        assert tx1 - tx0 > 1 * MB and rx1 - rx0 > 1 * MB, (links0, links1)
    assert rc == 0, d.output
    time.sleep(0.5)
    dump.terminate()
    dump.wait(timeout=10)
    r = subprocess.run([sys.executable, "-m", "middlebox", "inspect", pcap], capture_output=True,
                       text=True, timeout=300)
    print(r.stdout[-1500:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "add_addr from" in r.stdout, r.stdout[-3000:]


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.one_backend
def test_a_join_dying_with_bytes_below_the_guests_fin(mbox, server_factory, tmp_path):
    """The guest uploads and closes at once (its FIN right behind its data). 32-64 KB before
    the end, uplink 2's path (the only join's) goes silent both ways and the guest's next
    bytes are steered onto it (mark_core), so the join holds bytes below the guest's FIN
    that the server never gets, and dies of silence after it. Those bytes need new mappings
    and only subflow 1 is left: had it carried the guest's FIN, it could take none (a
    subflow takes no byte after its FIN): the Linux server reset the connection, or the
    upload stalled for good (ReinjectNoPath; the end of a failover capture, stop 29).
    Subflow 1's FIN waits now while a byte below it may need a new mapping: the bytes
    arrive intact, the server's close reaches the guest. Each attempt must be right; the
    case must arise in one of five. It does not when nothing is lost (the guest's last
    super-packet, FIN and all, crossed the mark: more likely the nearer the end), or when the
    guest, its window full behind the lost bytes, sends its FIN only after the join died
    (more likely the farther: a loop saw three attempts in a row so with 64 KB left); so the
    mark alternates."""
    arose = []
    for attempt in range(5):
        left = (32, 64, 48, 32, 64)[attempt] * 1024
        c = _close_on_a_dying_join(mbox, server_factory, tmp_path / f"mark{attempt}", left)
        if c.get("Sf1FinHeld", 0) >= 1 and c.get("ReinjectTX", 0) >= 1 and c.get("SubflowDead", 0) >= 1:
            arose.append(attempt)
            break
    assert arose, c


def _close_on_a_dying_join(mbox, server_factory, mark, left: int) -> dict:
    """One attempt of the test above: its checks, and the daemon's core counters."""
    import hashlib

    from conftest import guest_connect, recv_digest

    t = mbox.t
    n = 8 * MB
    d = mbox.start(*JOIN, "--converter", "mark_core:Converter", uplinks=True,
                   env={"MARK_CORE_FILE": str(mark), "MARK_CORE_AT": str(n - left)})
    srv = server_factory()
    before = t.nstat(t.server)
    data = payload(n)
    try:
        with guest_connect(t, srv, timeout=90) as c:
            c.sendall(f"UP {n}\n".encode())
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            digest = recv_digest(c)
            rest = c.recv(1)
        assert digest.decode() == hashlib.sha256(data).hexdigest(), "upload corrupted or cut short"
        assert rest == b"", rest  # (the server's close)
    finally:
        d.stop()
        srv.close()
        print(d.output[-2000:])
    print(mark.read_text())
    c = core_counters(d.output)
    dd = delta(before, t.nstat(t.server))
    print({k: v for k, v in c.items() if k.startswith(("Sf1Fin", "Reinject", "Subflow", "DataFin", "Guest"))})
    assert c.get("ReinjectNoPath", 0) == 0, c
    bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
    assert not bad, bad
    assert not srv.errors, srv.errors
    return c


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
@pytest.mark.one_backend
def test_a_close_no_subflow_can_carry_resets_the_guest(mbox, server_factory):
    """The server sent its data and its DATA_FIN (shutdown, still reading); the guest read it
    all and keeps its side open; then uplink 1 goes down (subflow 1 dies, the join carries
    on), then uplink 2 (the join dies). Linux takes no join after its DATA_FIN, so nothing
    can carry the guest's bytes or its FIN again: the guest is reset (STRANDED_WAIT later),
    its next write fails. Before, its writes were taken and resent into nothing until its
    own timeout, some 15 minutes, with no error."""
    import errno
    import time

    from conftest import guest_connect

    t = mbox.t
    d = mbox.start(*JOIN, uplinks=True)
    srv = server_factory()
    before = t.nstat(t.server)
    err = waited = None
    try:
        with guest_connect(t, srv, timeout=30) as c:
            c.sendall(b"DOWN 2000000\n")
            got = 0
            while chunk := c.recv(1 << 16):
                got += len(chunk)
            assert got == 2000000
            t.set_link(1, False)
            time.sleep(1.0)
            t.set_link(2, False)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15:
                time.sleep(0.25)
                try:
                    c.send(b"x" * 100)
                except OSError as e:
                    err, waited = e, time.monotonic() - t0
                    break
    finally:
        t.set_link(1, True)
        t.set_link(2, True)
        d.stop()
        print(d.output[-1500:])
    c = core_counters(d.output)
    print(f"the guest's write failed {waited} s after the last uplink went down: {err!r};",
          {k: v for k, v in c.items() if k.startswith(("Subflow", "MPJoin", "NoPath", "DataFin"))})
    assert err is not None and err.errno in (errno.EPIPE, errno.ECONNRESET), (err, c)
    assert c.get("NoPathLeft") == 1 and c.get("MPJoinEstablished", 0) >= 1 and c.get("DataFinRX", 0) >= 1, c
    bad = {k: v for k, v in delta(before, t.nstat(t.server)).items() if k in MUST_STAY_ZERO and v}
    assert not bad, bad
