"""The I/O shell on a real topology: rules round trip, passthrough, signals, bypass, bugs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

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
    assert save.count("-j MIDDLEBOX") == 1, save  # one jump after two installs
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
    assert queue_stats(t)["id_seq"] - before > 10000, "the packets did not go through the queue"
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
    assert r.returncode == 2 and "busy" in r.stderr and "Traceback" not in r.stderr, r.stderr


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
