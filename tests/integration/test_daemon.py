"""The I/O shell on a real topology: rules round trip, passthrough, signals, bypass, bugs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import QUEUE, Daemon, cli, download, install_rules, payload, queue_stats, upload

MB = 1 << 20


def test_rules_round_trip_restores_sysctls(topo):
    keys = {
        "net.ipv4.ip_forward": "0",
        "net.ipv6.conf.all.forwarding": "0",
        "net.ipv4.conf.all.rp_filter": "1",
    }
    topo.set_sysctls(topo.mbox, keys)
    topo.run(topo.mbox, ["modprobe", "nf_conntrack"], check=False)
    liberal = topo.read_sysctl(topo.mbox, "net.netfilter.nf_conntrack_tcp_be_liberal")

    out = install_rules(topo)
    assert "falling back to xtables" in out.stdout + out.stderr  # nft queue is missing here
    install_rules(topo)  # idempotent
    shown = topo.run(topo.mbox, [*cli("rules"), "show"]).stdout
    assert f"queue {QUEUE}" in shown and topo.mbox_guest_if in shown
    save = topo.run(topo.mbox, ["iptables-save", "-t", "mangle"]).stdout
    assert save.count("-j MIDDLEBOX\n") == 1, save  # one jump (of each) after two installs
    assert save.count("-j MIDDLEBOX_PRE\n") == 1, save
    assert save.count("--queue-bypass") == 2
    assert topo.run(topo.mbox, ["ip6tables-save", "-t", "mangle"]).stdout.count("--queue-bypass") == 2
    assert topo.read_sysctl(topo.mbox, "net.ipv4.ip_forward") == "1"
    assert topo.read_sysctl(topo.mbox, "net.ipv6.conf.all.forwarding") == "1"
    assert topo.read_sysctl(topo.mbox, "net.ipv4.conf.all.rp_filter") == "2"
    assert topo.read_sysctl(topo.mbox, "net.netfilter.nf_conntrack_tcp_be_liberal") == "1"

    topo.run(topo.mbox, [*cli("rules"), "remove"])
    for key, value in keys.items():
        assert topo.read_sysctl(topo.mbox, key) == value, key
    assert topo.read_sysctl(topo.mbox, "net.netfilter.nf_conntrack_tcp_be_liberal") == liberal
    assert "MIDDLEBOX" not in topo.run(topo.mbox, ["iptables-save", "-t", "mangle"]).stdout
    assert "not installed" in topo.run(topo.mbox, [*cli("rules"), "show"]).stdout
    assert "nothing installed" in topo.run(topo.mbox, [*cli("rules"), "remove"]).stdout


def test_rules_clear_errors(topo):
    r = topo.run(topo.mbox, [*cli("rules"), "install", "--guest-iface", "nosuch0"], check=False)
    assert r.returncode != 0 and "unknown interface" in r.stderr and "Traceback" not in r.stderr
    r = topo.run(topo.mbox, [*cli("run"), "--passthrough", "--guest-iface", "nosuch0"], check=False,
                 timeout=20)
    assert r.returncode != 0 and "unknown interface" in r.stderr and "Traceback" not in r.stderr
    r = topo.run(topo.mbox, [*cli("run")], check=False, timeout=20)  # no rules, no --guest-iface
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr


def test_passthrough_20mb_through_the_queue(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--passthrough")
    srv = server_factory()
    before = queue_stats(t)["id_seq"]
    data = payload(20 * MB)
    upload(t, srv, data)
    download(t, srv, 20 * MB)
    # 40 MB: ~28,000 segments, or (netlink backend, GSO) ~640 super-packets of ~64 KB
    least = 10000 if mbox.backend == "nfqueue" else 300
    assert queue_stats(t)["id_seq"] - before > least, "the packets did not go through the queue"
    rc, elapsed = d.stop()
    assert rc == 0, d.output
    assert not srv.errors


def test_sigterm_exits_within_2s_and_unbinds(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--passthrough")
    srv = server_factory()
    upload(t, srv, payload(MB))
    rc, elapsed = d.stop(signal.SIGTERM)
    assert rc == 0 and elapsed < 2.0, (rc, elapsed, d.output)
    assert "counters at exit" in d.output
    d2 = mbox.start("--passthrough")  # the queue was released: a new daemon can bind it
    rc, elapsed = d2.stop(signal.SIGINT)
    assert rc == 0 and elapsed < 2.0, (rc, elapsed, d2.output)


def test_queue_busy_is_a_clear_error(mbox):
    t = mbox.t
    mbox.start("--passthrough")
    r = t.run(t.mbox, [*cli("run"), "--passthrough", "--queue", str(QUEUE)], check=False, timeout=20)
    # exit status 5: the queue is bound already (middlebox/io/service.py)
    assert r.returncode == 5 and "busy" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sigkill_mid_run_bypass_keeps_new_connections_working(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--passthrough")
    srv = server_factory()
    with t.in_netns(t.guest):
        c = socket.socket()
    c.connect((srv.addr, srv.port))
    c.sendall(b"UP 100000000\n" + b"x" * 100000)  # a flow in the middle of its life
    d.stop(signal.SIGKILL)
    c.close()
    upload(t, srv, payload(2 * MB), timeout=20)  # new connection, no daemon: bypass
    download(t, srv, 2 * MB, timeout=20)


@pytest.mark.daemon_bugs
def test_daemon_survives_a_faulty_core(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--converter", "faulty_core:Converter", "--guest-iface", t.mbox_guest_if)
    srv = server_factory(mptcp=False)
    upload(t, srv, payload(2 * MB), timeout=30)
    download(t, srv, 2 * MB, timeout=30)
    time.sleep(0.6)  # one tick
    assert d.proc.poll() is None, d.output
    rc, _ = d.stop()
    assert rc == 0, d.output
    out = d.output
    assert "Traceback" not in out
    assert "bug in core: ValueError" in out and out.count("bug in core: ValueError") == 1, out
    assert "bug in tick" in out
    assert "bug_core=" in out


def _recv_ifindex(sock: socket.socket, v6: bool) -> tuple[bytes, int]:
    import struct

    data, anc, _, _ = sock.recvmsg(2048, 256)
    for level, kind, value in anc:
        if not v6 and level == socket.IPPROTO_IP and kind == 8:  # IP_PKTINFO
            return data, struct.unpack_from("=i", value, 0)[0]
        if v6 and level == socket.IPPROTO_IPV6 and kind == 50:  # IPV6_PKTINFO
            return data, struct.unpack_from("=i", value, 16)[0]
    raise AssertionError("no pktinfo")


def test_injector_marks_and_routes_by_source(topo):
    """Injected packets carry the mark and leave by the path of their source address."""
    import threading

    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    from middlebox.io.daemon import Injector
    from middlebox.io.rules import INJECT_MARK

    t = topo
    p1, p2 = t.paths[0], t.paths[1]
    t.run(t.mbox, ["iptables", "-t", "mangle", "-A", "OUTPUT", "-m", "mark", "--mark",
                   hex(INJECT_MARK)])
    s2_index = t.ifindex(t.server, p2.server_if)
    for v6 in (False, True):
        with t.in_netns(t.server):
            rx = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        if v6:
            rx.setsockopt(socket.IPPROTO_IPV6, 49, 1)  # IPV6_RECVPKTINFO
            rx.bind(("::", 9999))
            pkt = IPv6(src=p2.mbox_ip6, dst=p1.server_ip6) / UDP(sport=9998, dport=9999) / b"v6"
        else:
            rx.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO
            rx.bind(("0.0.0.0", 9999))
            pkt = IP(src=p2.mbox_ip, dst=p1.server_ip) / UDP(sport=9998, dport=9999) / b"v4"
        rx.settimeout(5)
        err: list[BaseException] = []

        def send() -> None:
            try:
                with t.in_netns(t.mbox):
                    inj = Injector(INJECT_MARK)
                    inj.send(bytes(pkt))
                    inj.close()
            except BaseException as e:  # reported below
                err.append(e)

        th = threading.Thread(target=send)
        th.start()
        th.join()
        assert not err, err
        data, ifindex = _recv_ifindex(rx, v6)
        rx.close()
        assert data == (b"v6" if v6 else b"v4")
        assert ifindex == s2_index, "the injected packet did not leave by its source's path"
    out = t.run(t.mbox, ["iptables", "-t", "mangle", "-L", "OUTPUT", "-v", "-x", "-n"]).stdout
    marked = [line for line in out.splitlines() if "MARK match" in line or "mark match" in line]
    assert marked and int(marked[0].split()[0]) >= 1, out


def test_sigusr1_prints_counters(mbox, server_factory):
    t = mbox.t
    d = mbox.start("--passthrough")
    srv = server_factory()
    upload(t, srv, payload(MB))
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(l.startswith("counters:") for l in d.lines):
        time.sleep(0.05)
    assert any(l.startswith("counters: packets=") for l in d.lines), d.output
    rc, _ = d.stop()
    assert rc == 0
