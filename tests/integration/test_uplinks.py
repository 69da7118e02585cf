"""Uplinks on a real topology: `rules install --uplink` (policy routing, the join-port queue
rule, reserved ports) and its exact undoing, the daemon taking its uplinks from the installed
rules, join-port packets to an uplink address reaching the daemon instead of the box's stack,
and the daemon following the links (uplink_event, injected answers, routes put back,
next_deadline)."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from conftest import QUEUE, cli, install_rules

RESERVED = "net.ipv4.ip_local_reserved_ports"


def _rules_dump(t) -> tuple[str, str]:
    return (t.run(t.mbox, ["ip", "-4", "rule"]).stdout, t.run(t.mbox, ["ip", "-6", "rule"]).stdout)


def _tables(t) -> set[int]:
    out = t.run(t.mbox, ["ip", "-4", "route", "show", "table", "all"]).stdout
    out += t.run(t.mbox, ["ip", "-6", "route", "show", "table", "all"]).stdout
    return {int(n) for n in re.findall(r"\btable (\d+)\b", out)}


def _uplink_table(t, addr: str) -> int:
    """The installer's table for `addr` (the `ip rule from addr lookup T` with T >= 6100)."""
    v = "-6" if ":" in addr else "-4"
    for line in t.run(t.mbox, ["ip", v, "rule"]).stdout.splitlines():
        m = re.search(rf"from {re.escape(addr)} lookup (\d+)", line)
        if m and int(m.group(1)) >= 6100:
            return int(m.group(1))
    raise AssertionError(f"no installer rule for {addr}")


def _default_via(t, table: int, v6: bool) -> str:
    return t.run(t.mbox, ["ip", "-6" if v6 else "-4", "route", "show", "table", str(table),
                          "default"]).stdout


@pytest.mark.parametrize("paths", [
    pytest.param(2, marks=pytest.mark.topology(paths=2)),
    pytest.param(3, marks=pytest.mark.topology(paths=3, policy_routing=False)),
])
def test_install_uplinks_then_remove_restores_everything(topo, paths):
    t = topo
    assert len(t.paths) == paths and t.uplink_ifaces == [p.mbox_if for p in t.paths]
    t.shape(paths, 50)  # the last path shapes like the others
    for ns, ifname in ((t.mbox, t.paths[-1].mbox_if), (t.server, t.paths[-1].server_if)):
        assert "tbf" in t.run(ns, ["tc", "qdisc", "show", "dev", ifname]).stdout
    t.set_sysctls(t.mbox, {RESERVED: "8080,60990-61005"})
    rules_before, tables_before = _rules_dump(t), _tables(t)
    specs = t.uplink_specs()
    specs[-1] += ",backup,cost=3"
    try:
        install_rules(t, specs)
        install_rules(t, specs)  # idempotent: replaces, no duplicates
        for p in t.paths:
            for addr, gw, v6 in ((p.mbox_ip, p.server_ip, False), (p.mbox_ip6, p.server_ip6, True)):
                table = _uplink_table(t, addr)
                assert table not in tables_before
                assert f"default via {gw} dev {p.mbox_if}" in _default_via(t, table, v6)
            # a packet from path k's address leaves by path k, also towards path 1's server
            for src, dst in ((p.mbox_ip, t.server_ip), (p.mbox_ip6, t.server_ip6)):
                got = t.run(t.mbox, ["ip", "route", "get", dst, "from", src]).stdout
                assert f"dev {p.mbox_if}" in got, got
        v4, v6 = _rules_dump(t)
        assert v4.count("lookup 61") == paths and v6.count("lookup 61") == paths, (v4, v6)

        save4 = t.run(t.mbox, ["iptables-save", "-t", "mangle"]).stdout
        save6 = t.run(t.mbox, ["ip6tables-save", "-t", "mangle"]).stdout
        for save, addrs, plen in ((save4, [p.mbox_ip for p in t.paths], 32),
                                  (save6, [p.mbox_ip6 for p in t.paths], 128)):
            assert save.count("-A INPUT -j MIDDLEBOX_JOIN") == 1, save
            assert "-A MIDDLEBOX_JOIN -m mark --mark 0x4d427801 -j ACCEPT" in save
            for a in addrs:
                held = (f"-A MIDDLEBOX_JOIN -d {a}/{plen} -p tcp -m tcp --dport 61000:61999 "
                        f"--tcp-option 30 --tcp-flags SYN,RST NONE -j NFQUEUE --queue-num {QUEUE}\n")
                rest = (f"-A MIDDLEBOX_JOIN -d {a}/{plen} -p tcp -m tcp --dport 61000:61999 "
                        f"-j NFQUEUE --queue-num {QUEUE} --queue-bypass")
                assert held in save and rest in save and save.index(held) < save.index(rest), save
        assert t.read_sysctl(t.mbox, RESERVED) == "8080,60990-61999"

        shown = t.run(t.mbox, [*cli("rules"), "show"]).stdout
        assert "join ports: 61000-61999" in shown, shown
        for p in t.paths:
            assert (f"{p.mbox_if}: {p.mbox_ip} via {p.server_ip}, {p.mbox_ip6} via "
                    f"{p.server_ip6} (id {p.index}, table ") in shown, shown
        assert "backup, cost 3" in shown
        for save in (save4, save6):  # (the second install kept the jumps: none twice)
            assert save.count("-A FORWARD -j MIDDLEBOX\n") == 1, save
            assert save.count("-A PREROUTING -j MIDDLEBOX_PRE\n") == 1, save
        install_rules(t)  # again without uplinks: their chain and policy routing go
        for tool in ("iptables-save", "ip6tables-save"):
            save = t.run(t.mbox, [tool, "-t", "mangle"]).stdout
            assert "MIDDLEBOX_JOIN" not in save and "-A FORWARD -j MIDDLEBOX" in save, save
        assert "lookup 61" not in "".join(_rules_dump(t))
    finally:
        out = t.run(t.mbox, [*cli("rules"), "remove"], check=False)
    assert out.returncode == 0, out.stderr
    assert _rules_dump(t) == rules_before
    assert _tables(t) == tables_before
    assert t.read_sysctl(t.mbox, RESERVED) == "8080,60990-61005"
    assert "MIDDLEBOX" not in t.run(t.mbox, ["iptables-save", "-t", "mangle"]).stdout
    assert "MIDDLEBOX" not in t.run(t.mbox, ["ip6tables-save", "-t", "mangle"]).stdout
    assert "nothing installed" in t.run(t.mbox, [*cli("rules"), "remove"]).stdout


@pytest.mark.topology(policy_routing=False)
def test_install_uplink_errors_are_clear_and_change_nothing(topo):
    t = topo
    p2 = t.paths[1]
    before = _rules_dump(t), _tables(t), t.read_sysctl(t.mbox, RESERVED)
    for specs, status, says in (
        (["nosuch0"], 1, "uplink nosuch0: unknown interface"),
        ([p2.mbox_if], 1, f"no IPv4 default route via {p2.mbox_if} in any routing table: give "
                          "its next hop (gw=ADDR)"),
        ([f"{p2.mbox_if},gw=10.2.2.2"], 1, "no IPv6 default route"),
        ([f"{p2.mbox_if},gw=10.2.2.2,gw=fd00:2::2", f"{p2.mbox_if},backup"], 1,
         "given more than once"),
        ([f"{p2.mbox_if},speed=9"], 2, "unknown option 'speed'"),
        ([t.guest_if], 1, "unknown interface"),  # in another namespace
    ):
        r = install_rules(t, specs, check=False)
        assert r.returncode == status and says in r.stderr, (specs, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
    r = install_rules(t, [f"{p2.mbox_if},gw=10.2.2.2,gw=fd00:2::2"], join_ports="900-1000",
                      check=False)
    assert r.returncode == 2 and "1024-65535" in r.stderr, r.stderr
    assert (_rules_dump(t), _tables(t), t.read_sysctl(t.mbox, RESERVED)) == before
    assert "not installed" in t.run(t.mbox, [*cli("rules"), "show"]).stdout


def _counters(d, timeout: float = 3) -> dict[str, int]:
    """The daemon's counters, asked for with SIGUSR1."""
    n = sum(1 for line in d.lines if line.startswith("counters:"))
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [line for line in d.lines if line.startswith("counters:")]
        if len(got) > n:
            return {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", got[-1])}
        time.sleep(0.05)
    raise AssertionError(f"no counters:\n{d.output}")


def _connect(t, src: str, dst: str, port: int, timeout: float) -> str:
    """A TCP connect from the server namespace: 'refused' (RST), 'timeout' or 'connected'."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with t.in_netns(t.server):
        s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.connect((dst, port))
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    finally:
        s.close()


def _rsts(t) -> int:
    return t.nstat(t.mbox, prefix=None).get("TcpOutRsts", 0)


def test_daemon_takes_installed_uplinks_and_join_packets_reach_it(mbox, tmp_path):
    """A SYN to an uplink address in the join range reaches the core as Direction.LOCAL
    (where the core has it; else the shell drops it) and, dropped there, is never answered by
    the box's stack; other ports and other addresses stay the stack's."""
    t = mbox.t
    record = tmp_path / "core.log"
    d = mbox.start("--converter", "uplink_core:Converter", uplinks=True,
                   env={"UPLINK_CORE_LOG": str(record)})
    for p in t.paths:
        assert (f"uplink (installed rules) {p.mbox_if}: {p.mbox_ip} via {p.server_ip}, "
                f"{p.mbox_ip6} via {p.server_ip6} (id {p.index}") in d.output, d.output
    assert "join ports 61000-61999" in d.output
    p2 = t.paths[1]
    rsts = _rsts(t)
    assert _connect(t, p2.server_ip, p2.mbox_ip, 61234, 1.5) == "timeout"
    assert _connect(t, p2.server_ip6, p2.mbox_ip6, 61999, 1.5) == "timeout"
    assert _rsts(t) == rsts, "the middlebox namespace's stack answered a join-port packet"
    seen = _counters(d).get("local_packets", 0)
    assert seen >= 4, d.output  # two SYNs per family (the first and its retransmission at 1 s)
    from middlebox.core import Direction

    if hasattr(Direction, "LOCAL"):
        assert record.read_text().count("local ") == seen
    # other ports, and the join range on a non-uplink address: the stack's, untouched
    assert _connect(t, p2.server_ip, p2.mbox_ip, 5000, 3) == "refused"
    assert _connect(t, p2.server_ip6, p2.mbox_ip6, 60999, 3) == "refused"
    assert _connect(t, t.paths[0].server_ip, t.mbox_guest_ip, 61234, 3) == "refused"
    assert _rsts(t) == rsts + 3
    assert _counters(d).get("local_packets", 0) == seen
    rc, _ = d.stop()
    assert rc == 0, d.output
    # no daemon: the queue's bypass lets the stack answer a SYN (segments with an MPTCP option
    # are held: test_stop_reset.py)
    assert _connect(t, p2.server_ip, p2.mbox_ip, 61234, 3) == "refused"


def test_daemon_uplink_not_in_the_rules_is_reported(mbox):
    t = mbox.t
    p1 = t.paths[0]
    d = mbox.start("--uplink", f"{p1.mbox_if},backup", "--join-ports", "62000-62099")
    assert f"uplink (--uplink) {p1.mbox_if}: {p1.mbox_ip} via" in d.output
    assert "backup" in d.output and "is not in the installed rules" in d.output
    assert "join ports 62000-62099" in d.output
    r = t.run(t.mbox, [*cli("run"), "--queue", "7", "--uplink", "nosuch0"], check=False, timeout=20)
    assert r.returncode == 1 and "uplink nosuch0: unknown interface" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _recv(rx, d) -> bytes:
    try:
        return rx.recv(100)
    except (socket.timeout, TimeoutError):
        raise AssertionError(f"no datagram from the core's uplink_event:\n{d.output}") from None


@pytest.mark.topology(paths=3)
def test_daemon_follows_uplink_links(mbox, tmp_path):
    t = mbox.t
    p1, p2, p3 = t.paths
    record = tmp_path / "core.log"
    with t.in_netns(t.server):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((p1.server_ip, 9999))
    rx.settimeout(5)
    d = mbox.start("--converter", "uplink_core:Converter", uplinks=True,
                   env={"UPLINK_CORE_LOG": str(record), "UPLINK_CORE_DST": p1.server_ip})
    try:
        lines = record.read_text().splitlines()
        assert lines[0] == "uplinks " + " ".join(
            f"{p.index}:{p.mbox_if}:{p.mbox_ip}:{p.mbox_ip6}:1" for p in t.paths)
        # next_deadline (50 ms) wakes the loop far more often than the 0.5 s tick
        n0 = record.read_text().count("tick ")
        time.sleep(1.0)
        assert record.read_text().count("tick ") - n0 >= 8

        table = _uplink_table(t, p3.mbox_ip)
        t.set_link(3, False)
        assert _recv(rx, d) == f"{p3.mbox_if} down".encode()  # the core's answer, injected
        assert "" == _default_via(t, table, False)  # the kernel took the routes with the link
        t.set_link(3, True)
        assert _recv(rx, d) == f"{p3.mbox_if} up".encode()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and p3.server_ip6 not in _default_via(t, table, True):
            time.sleep(0.05)
        assert f"default via {p3.server_ip} dev {p3.mbox_if}" in _default_via(t, table, False)
        assert f"default via {p3.server_ip6} dev {p3.mbox_if}" in _default_via(t, table, True)

        # an uplink losing its address is down too, and up when it is back
        t.run(t.mbox, ["ip", "addr", "del", f"{p2.mbox_ip}/24", "dev", p2.mbox_if])
        assert _recv(rx, d) == f"{p2.mbox_if} down".encode()
        t.run(t.mbox, ["ip", "addr", "add", f"{p2.mbox_ip}/24", "dev", p2.mbox_if])
        assert _recv(rx, d) == f"{p2.mbox_if} up".encode()
    finally:
        rx.close()
    events = [line for line in record.read_text().splitlines() if line.startswith("event")]
    assert events == [f"event {p3.mbox_if} down", f"event {p3.mbox_if} up",
                      f"event {p2.mbox_if} down", f"event {p2.mbox_if} up"]
    out = d.output
    assert f"uplink {p3.mbox_if} down (link" in out and f"uplink {p3.mbox_if} up" in out, out
    assert f"uplink {p2.mbox_if} down (address {p2.mbox_ip} gone)" in out, out
    c = _counters(d)
    assert c.get("uplink_down") == 2 and c.get("uplink_up") == 2 and c.get("injected") == 4, c
    rc, _ = d.stop()
    assert rc == 0, d.output


@pytest.mark.topology(policy_routing=False)
def test_uplink_down_at_install_gets_its_routes_from_the_daemon(mbox):
    """The kernel refuses routes through a down link: install records the uplink and its rule,
    and the running daemon adds the routes when the link comes up (the only source of them
    here: the test bed's own source routing is off)."""
    t = mbox.t
    p2 = t.paths[1]
    t.set_link(2, False)
    d = mbox.start(uplinks=True)
    table = _uplink_table(t, p2.mbox_ip)
    assert _default_via(t, table, False) == "" and _default_via(t, table, True) == ""
    assert f"{p2.mbox_if}: {p2.mbox_ip} via {p2.server_ip}" in d.output and "down)" in d.output
    shown = t.run(t.mbox, [*cli("rules"), "show"]).stdout
    assert "now: link down, default route missing (IPv4 IPv6)" in shown, shown
    t.set_link(2, True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and p2.server_ip6 not in _default_via(t, table, True):
        time.sleep(0.05)
    assert f"default via {p2.server_ip} dev {p2.mbox_if}" in _default_via(t, table, False), d.output
    assert f"default via {p2.server_ip6} dev {p2.mbox_if}" in _default_via(t, table, True)
    for src, dst in ((p2.mbox_ip, t.server_ip), (p2.mbox_ip6, t.server_ip6)):
        assert f"dev {p2.mbox_if}" in t.run(t.mbox, ["ip", "route", "get", dst, "from", src]).stdout
    assert f"uplink {p2.mbox_if} up" in d.output
    shown = t.run(t.mbox, [*cli("rules"), "show"]).stdout
    assert f"(id 2, table {table} priority " in shown and "down); now: link up\n" in shown, shown


def test_nft_ruleset_with_uplinks_loads(topo):
    """The nft ruleset with the uplink sets and the input chain is valid nft. This kernel may
    lack nft's native queue (the installer then uses xtables): the queue statements are
    swapped for counters to load it anyway."""
    from middlebox.io import rules

    t = topo
    addrs = [a for p in t.paths for a in (p.mbox_ip, p.mbox_ip6)]
    text = rules.nft_render(QUEUE, rules.INJECT_MARK, [t.mbox_guest_if], addrs, (62000, 62099))
    ok, _ = rules.nft_queue_works()
    if not ok:
        text = re.sub(r"queue num \$queue_num( bypass)?", "counter", text)
    for _ in range(2):  # (an install over a previous one: one transaction replaces it)
        r = t.run(t.mbox, ["nft", "-f", "-"], input=rules.nft_replacing(text), check=False)
        assert r.returncode == 0, r.stderr
    shown = t.run(t.mbox, ["nft", "list", "table", "inet", "middlebox"]).stdout
    assert shown.count("hook input priority mangle") == 1
    assert "tcp flags ! syn,rst tcp option mptcp exists" in shown  # (held: core/orphans.py)
    for name, want in (("uplink4", {p.mbox_ip for p in t.paths}),
                       ("uplink6", {p.mbox_ip6 for p in t.paths})):
        listed = t.run(t.mbox, ["nft", "list", "set", "inet", "middlebox", name]).stdout
        got = re.search(r"elements = \{([^}]*)\}", listed)
        assert got and {a.strip() for a in got.group(1).split(",")} == want, listed
    assert "ip daddr @uplink4 tcp dport 62000-62099" in shown
    assert "ip6 daddr @uplink6 tcp dport 62000-62099" in shown
    t.run(t.mbox, ["nft", "delete", "table", "inet", "middlebox"])
