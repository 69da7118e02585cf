"""Operations on a real topology: the live view (`middlebox flows`, `middlebox stats`) and the
Prometheus endpoint during a converted transfer, systemd's notify protocol and journald's line
format, interface patterns that follow guests appearing after the install, and the exit
statuses (middlebox/io/service.py)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (BACKENDS, PY, QUEUE, ROOT, HERE, Daemon, guest_connect, install_rules,
                      payload, queue_stats, sha256_of)
from middlebox.core.counters import Counter
from middlebox.testbed import in_netns
from pyroute2 import IPRoute, netns

MB = 1 << 20
MIDDLEBOX = str(pathlib.Path(PY).with_name("middlebox"))
METRICS = "127.0.0.1:9464"  # inside the mbox namespace: no clash with anything


def mbx(t, *argv: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """`middlebox ARGV` in the mbox namespace."""
    return t.run(t.mbox, [MIDDLEBOX, *argv], check=check, timeout=30,
                 env={**os.environ, "MIDDLEBOX_CONFIG": ""}, **kw)


def mbx_json(t, *argv: str) -> dict:
    r = mbx(t, *argv, "--json")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def scrape(t) -> dict[str, dict[tuple, float]]:
    """GET /metrics in the mbox namespace, parsed: {sample name: {labels: value}}."""
    with in_netns(t.mbox):
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as r:
            text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m[name][tuple(sorted(labels.items()))]


class Reader:
    """The guest's side of a `DOWN n` transfer, read in steps."""

    def __init__(self, t, srv, n: int) -> None:
        self.c = guest_connect(t, srv)
        self.c.sendall(f"DOWN {n}\n".encode())
        self.n, self.got = n, bytearray()

    def read(self, k: int) -> None:
        want = min(self.n, len(self.got) + k)
        while len(self.got) < want:
            chunk = self.c.recv(min(1 << 16, want - len(self.got)))
            if not chunk:
                raise ConnectionError(f"EOF after {len(self.got)} of {self.n} bytes")
            self.got += chunk

    def finish(self) -> None:
        self.read(self.n)
        assert bytes(self.got) == payload(self.n), "download corrupted"
        self.c.close()


def test_live_view_and_metrics_during_a_converted_transfer(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--metrics", METRICS)
    srv = server_factory()
    m0 = scrape(t)
    for c in Counter:  # every core counter, in the kernel MIB's spelling
        assert f"middlebox_{c.name}_total" in m0, c.name
    for name in ("middlebox_daemon_packets_total", "middlebox_queue_dropped_total",
                 "middlebox_queue_user_dropped_total", "middlebox_flows_limit",
                 "process_cpu_seconds_total"):
        assert name in m0, name
    assert value(m0, "middlebox_flows", state="ESTABLISHED") == 0
    assert value(m0, "middlebox_queue_dropped_total", queue=str(QUEUE)) == 0

    n = 24 * MB
    r = Reader(t, srv, n)
    r.read(2 * MB)
    guest_port = r.c.getsockname()[1]

    view = mbx_json(t, "flows")
    mine = [f for f in view["flows"] if f["guest_port"] == guest_port]
    assert len(mine) == 1, view
    f = mine[0]
    assert f["guest_ip"] == t.guest_ip and f["server_ip"] == t.server_ip
    assert f["server_port"] == srv.port and f["state"] == "ESTABLISHED" and f["version"] == 1
    assert re.fullmatch(r"[0-9a-f]{8}", f["token"]) and re.fullmatch(r"[0-9a-f]{8}", f["peer_token"])
    assert f["idle"] < 30 and len(f["subflows"]) >= 1
    assert not [k for k in json.dumps(view).split('"') if "key" in k.lower()], "a key in the view"
    text = mbx(t, "flows").stdout
    assert f"{t.guest_ip}:{guest_port}" in text and "ESTABLISHED" in text and f["token"] in text

    m1 = scrape(t)
    assert value(m1, "middlebox_flows", state="ESTABLISHED") == 1
    assert value(m1, "middlebox_subflows", uplink="default") >= 1
    assert m1["middlebox_DSSRX_total"][()] > m0["middlebox_DSSRX_total"][()]
    assert m1["middlebox_MPCapableSYNTX_total"][()] >= 1

    r.read(12 * MB)  # the figures move with the transfer
    m2 = scrape(t)
    assert m2["middlebox_DSSRX_total"][()] > m1["middlebox_DSSRX_total"][()]
    assert m2["middlebox_DataAckTX_total"][()] > m1["middlebox_DataAckTX_total"][()]
    assert (m2["middlebox_daemon_packets_total"][()] > m1["middlebox_daemon_packets_total"][()])
    later = [x for x in mbx_json(t, "flows")["flows"] if x["guest_port"] == guest_port][0]
    assert later["age"] > f["age"] and later["token"] == f["token"], (f, later)
    for field in ("bytes_in", "bytes_out"):  # where the core keeps them (multipath flows)
        if field in f:
            assert later[field] >= f[field], (field, f, later)

    stats = mbx_json(t, "stats")
    assert set(Counter.__members__) <= set(stats["core"]), "stats must list every counter"
    assert stats["core"]["MPCapableSYNTX"] >= 1 and stats["daemon"]["packets"] > 0
    by_state = stats["flows_by_state"]  # CLOSING once the server's DATA_FIN went by
    assert by_state["ESTABLISHED"] + by_state["CLOSING"] == 1, by_state
    assert "MPCapableSYNTX" in mbx(t, "stats").stdout
    r.finish()

    # a malformed request gets an error reply; the daemon lives on
    sock_path = t.run(t.mbox, [PY, "-c", "from middlebox.io import control; "
                                         f"print(control.socket_path({QUEUE}))"]).stdout.strip()
    assert sock_path.endswith(f".q{QUEUE}.sock")
    assert re.search(r"cookie-[0-9a-f]{16}", sock_path), sock_path  # the namespace is in the name
    for junk in (b"garbage\n", b"[1,2]\n", b'{"cmd": "nope"}\n', b"\xff\xfe\n", b"x" * 5000):
        with in_netns(t.mbox):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(sock_path)
        c.sendall(junk)
        reply = json.loads(c.makefile("rb").readline())
        c.close()
        assert reply["ok"] is False and reply["error"], reply
    with in_netns(t.mbox):  # and one that says nothing and goes away
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(sock_path)
    assert mbx_json(t, "stats")["daemon"]["packets"] > 0
    assert d.proc.poll() is None, d.output
    assert os.stat(sock_path).st_mode & 0o777 == 0o600
    rc, _ = d.stop()
    assert rc == 0, d.output
    assert not os.path.exists(sock_path), "the control socket outlived the daemon"
    r2 = mbx(t, "stats")
    assert r2.returncode == 1 and "no daemon serves queue" in r2.stderr, r2.stderr


def test_systemd_notify_and_journal_lines(mbox):
    """READY=1 once the queue is bound, STOPPING=1 on SIGTERM; under journald (stderr is
    $JOURNAL_STREAM) lines are `<priority>message`, without a timestamp."""
    t = mbox.t
    with tempfile.TemporaryDirectory() as tmp:
        notify_path = os.path.join(tmp, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(10)
        log_path = os.path.join(tmp, "journal")
        with open(log_path, "w") as log_file:
            st = os.fstat(log_file.fileno())
            env = {**os.environ, "NOTIFY_SOCKET": notify_path, "MIDDLEBOX_CONFIG": "",
                   "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                   "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
            proc = t.popen(t.mbox, [MIDDLEBOX, "run", "--queue", str(QUEUE), "--backend",
                                    mbox.backend, "--passthrough"],
                           stdout=log_file, stderr=log_file, env=env)
        try:
            msg = notify.recv(4096).decode()
            assert "READY=1" in msg.split("\n"), msg
            assert queue_stats(t), "READY=1 came before the queue was bound"
            proc.send_signal(signal.SIGTERM)
            msg = notify.recv(4096).decode()
            assert "STOPPING=1" in msg.split("\n"), msg
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            notify.close()
        lines = open(log_path).read().splitlines()
    assert any(re.fullmatch(r"<6>bound queue .*", line) for line in lines), lines
    logged = [line for line in lines if not line.startswith("counters")]
    assert logged and all(re.match(r"<[0-7]>", line) for line in logged), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines), lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_iface_pattern_covers_guests_that_come_later(topo, server_factory, backend):
    """`--guest-iface 'PREFIX*'`: a guest interface created after `rules install` and after
    the daemon started is queued and converted (the server's socket is MPTCP)."""
    t = topo
    prefix = t.mbox_guest_if[:2]  # "m0": the guest side; the paths are m1..., m2...
    r = t.run(t.mbox, [MIDDLEBOX, "rules", "install", "--queue", str(QUEUE), "--guest-iface",
                       f"{prefix}*"], env={**os.environ, "MIDDLEBOX_CONFIG": ""})
    assert f"{prefix}*" in r.stdout, r.stdout
    saved = t.run(t.mbox, ["iptables-save", "-t", "mangle"]).stdout
    nft = t.run(t.mbox, ["nft", "list", "ruleset"]).stdout
    assert f"-i {prefix}+" in saved or f'"{prefix}*"' in nft, saved + nft
    # pure Python drops instead of failing open, as the `mbox` fixture does (conftest.py)
    d = Daemon(t, "--backend", backend, *(("--no-fail-open",) if _pure() else ())).wait_bound()
    srv = server_factory()
    late = f"mbl-{t.tag}"
    late_if = f"{prefix}L{t.tag}"
    netns.create(late)
    try:
        with IPRoute(netns=late) as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": late_if, "net_ns_fd": t.mbox})
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, state="up")
            ipr.addr("add", index=idx, address="10.9.0.1", prefixlen=24)
            ipr.route("add", dst="0.0.0.0/0", gateway="10.9.0.254")
        with IPRoute(netns=t.mbox) as ipr:
            idx = ipr.link_lookup(ifname=late_if)[0]
            ipr.link("set", index=idx, state="up")
            ipr.addr("add", index=idx, address="10.9.0.254", prefixlen=24)
        with IPRoute(netns=t.server) as ipr:
            ipr.route("add", dst="10.9.0.0/24", gateway=t.paths[0].mbox_ip)
        deadline = time.monotonic() + 5
        while late_if not in d.output and time.monotonic() < deadline:
            time.sleep(0.05)
        assert late_if in d.output, f"the daemon did not see {late_if} appear:\n{d.output}"
        with in_netns(late):
            c = socket.socket()
        c.settimeout(30)
        c.connect((srv.addr, srv.port))
        c.sendall(b"DOWN 1000000\n")
        assert sha256_of(c.recv, 1000000) == hashlib.sha256(payload(1000000)).hexdigest().encode()
        c.close()
        deadline = time.monotonic() + 5
        while not srv.mptcp_flags and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.mptcp_flags and not srv.mptcp_flags[-1] & 1, (
            "the late guest's connection was not converted (server socket fell back)")
    finally:
        rc, _ = d.stop()
        netns.remove(late)
        t.run(t.mbox, [MIDDLEBOX, "rules", "remove"], check=False)
    assert rc == 0, d.output


def _pure() -> bool:
    return os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")


def test_exit_statuses_and_messages(topo):
    """One line and a distinct status each: config error 2, missing CAP_NET_ADMIN 3, queue
    busy 5 (test_daemon.py), no daemon for `flows` 1; never a traceback."""
    t = topo
    install_rules(t)
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write('queue = 0\nguest_iface = ["nosuch*"]\nmax_flows = 0\n')
        f.flush()
        r = t.run(t.mbox, [MIDDLEBOX, "run", "--config", f.name], check=False, timeout=20)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and f.name in r.stderr and "max_flows" in r.stderr
        assert not queue_stats(t), "a config error must stop the start before the queue"
        # the whole file is checked, whatever the command line overrides
        r = t.run(t.mbox, [MIDDLEBOX, "run", "--config", f.name, "--max-flows", "10"],
                  check=False, timeout=20)
        assert r.returncode == 2 and "max_flows" in r.stderr, r.stderr
    r = mbx(t, "run", "--passthrough", "--queue", "70000")
    assert r.returncode == 2 and "--queue" in r.stderr and "65535" in r.stderr, r.stderr
    drop = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"]
    r = t.run(t.mbox, [*drop, MIDDLEBOX, "run", "--passthrough", "--queue", str(QUEUE)],
              check=False, timeout=20, env={**os.environ, "MIDDLEBOX_CONFIG": ""})
    assert r.returncode == 3 and "CAP_NET_ADMIN" in r.stderr, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr
    r = t.run(t.mbox, [*drop, MIDDLEBOX, "rules", "install", "--guest-iface", t.mbox_guest_if],
              check=False, timeout=20, env={**os.environ, "MIDDLEBOX_CONFIG": ""})
    assert r.returncode == 3 and "CAP_NET_ADMIN" in r.stderr, (r.returncode, r.stderr)
    r = mbx(t, "flows", "--queue", "7")
    assert r.returncode == 1 and "no daemon serves queue 7" in r.stderr, r.stderr
    d = Daemon(t, "--passthrough").wait_bound()
    try:  # a second daemon on the bound queue: 5 whatever its backend
        for backend in ("netlink", "nfqueue", "auto"):
            r = mbx(t, "run", "--passthrough", "--queue", str(QUEUE), "--backend", backend)
            assert r.returncode == 5 and "busy" in r.stderr, (backend, r.returncode, r.stderr)
            assert "Traceback" not in r.stderr
    finally:
        d.stop()
    # a metrics port in use: a clear failure before the queue is touched
    with in_netns(t.mbox):
        busy = socket.socket()
    busy.bind(("127.0.0.1", 9464))
    busy.listen()
    try:
        r = mbx(t, "run", "--passthrough", "--metrics", METRICS)
        assert r.returncode == 1 and "cannot serve metrics" in r.stderr, r.stderr
        assert not queue_stats(t)
    finally:
        busy.close()
    for argv in (["run"], ["rules", "install"], ["rules", "remove"], ["rules", "show"],
                 ["flows"], ["stats"], ["config", "check"]):
        r = subprocess.run([MIDDLEBOX, *argv, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "--config" in r.stdout or argv[0] == "config", (argv, r.stderr)
    r = subprocess.run([MIDDLEBOX, "run", "--help"], capture_output=True, text=True)
    assert "--metrics" in r.stdout and "--log-level" in r.stdout and "trailing *" in " ".join(
        subprocess.run([MIDDLEBOX, "rules", "install", "--help"], capture_output=True,
                       text=True).stdout.split())


@pytest.mark.topology(rate_mbit=50, latency_ms=20, policy_routing=False)
def test_multipath_flow_view_and_metrics_by_uplink(topo, server_factory):
    """Once a flow has extra subflows, `middlebox flows` lists each with its uplink, state,
    bytes and RTT, and the metrics count subflows and bytes by uplink."""
    t = topo
    argv = ["rules", "install", "--queue", str(QUEUE), "--guest-iface", t.mbox_guest_if]
    for spec in t.uplink_specs():
        argv += ["--uplink", spec]
    r = mbx(t, *argv)
    assert r.returncode == 0, r.stderr
    d = Daemon(t, "--backend", "nfqueue", "--join-after-bytes", "0", "--join-after-ms", "0",
               "--metrics", METRICS, *(("--no-fail-open",) if _pure() else ())).wait_bound()
    try:
        srv = server_factory()
        reader = Reader(t, srv, 20 * MB)
        reader.read(2 * MB)
        port = reader.c.getsockname()[1]
        deadline = time.monotonic() + 10
        while True:
            flow = [f for f in mbx_json(t, "flows")["flows"] if f["guest_port"] == port][0]
            if len(flow["subflows"]) >= 2 or time.monotonic() > deadline:
                break
            reader.read(256 * 1024)
        subs = flow["subflows"]
        assert len(subs) >= 2, flow
        uplinks = {p.mbox_if for p in t.paths}
        assert subs[0]["uplink"] == "default" and {s["uplink"] for s in subs[1:]} <= uplinks, subs
        for s in subs:
            assert {"state", "bytes_out", "bytes_in", "srtt_ms"} <= set(s), s
        text = mbx(t, "flows").stdout
        assert re.search(rf"(?m)^\tsubflow 1 uplink {re.escape(subs[1]['uplink'])} state ", text), text
        m1 = scrape(t)
        extra = subs[1]["uplink"]
        assert value(m1, "middlebox_subflows", uplink=extra) >= 1, m1["middlebox_subflows"]
        reader.read(10 * MB)
        subs2 = [f for f in mbx_json(t, "flows")["flows"] if f["guest_port"] == port][0]["subflows"]
        m2 = scrape(t)  # after the view: the counters hold at least what the view showed
        rx1 = m1.get("middlebox_uplink_received_bytes_total", {})
        rx2 = m2["middlebox_uplink_received_bytes_total"]
        for sub in subs2[1:]:
            assert value(m2, "middlebox_uplink_received_bytes_total", uplink=sub["uplink"]) >= sub["bytes_in"]
            assert value(m2, "middlebox_uplink_sent_bytes_total", uplink=sub["uplink"]) >= sub["bytes_out"]
        for k, v in rx1.items():  # counters: never backwards
            assert rx2[k] >= v, (rx1, rx2)
        assert sum(s["bytes_in"] for s in subs2[1:]) > 0 and sum(rx2.values()) > 0, (subs2, rx2)
        reader.finish()
    finally:
        rc, _ = d.stop()
        mbx(t, "rules", "remove")
    assert rc == 0, d.output
