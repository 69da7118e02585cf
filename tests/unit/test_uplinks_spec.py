"""Uplink specs (`--uplink IFACE[,gw=ADDR][,backup][,cost=N]`), join port ranges, the reserved
ports merge and the rulesets' rendering with uplinks: no kernel needed."""

from __future__ import annotations

import argparse

import pytest

from middlebox.core.config import JOIN_PORTS_DEFAULT, Uplink
from middlebox.io import rules
from middlebox.io.uplinks import (ResolvedUplink, UplinkError, UplinkSpec, check_specs,
                                  parse_port_range, parse_spec, port_range_arg, spec_arg)


@pytest.mark.parametrize("text, want", [
    ("eth1", UplinkSpec("eth1")),
    (" eth1 ", UplinkSpec("eth1")),
    ("eth1,backup", UplinkSpec("eth1", backup=True)),
    ("eth1,gw=192.0.2.1", UplinkSpec("eth1", gw4="192.0.2.1")),
    ("eth1,gw=2001:db8::1", UplinkSpec("eth1", gw6="2001:db8::1")),
    ("eth1,gw=2001:DB8:0::1,gw=192.0.2.1", UplinkSpec("eth1", "192.0.2.1", "2001:db8::1")),
    ("wwan0,cost=2.5,backup", UplinkSpec("wwan0", backup=True, cost=2.5)),
    ("ppp0,cost=0", UplinkSpec("ppp0")),
    ("vlan.100,gw=fe80::1,cost=10", UplinkSpec("vlan.100", gw6="fe80::1", cost=10.0)),
])
def test_good_specs(text, want):
    assert parse_spec(text) == want
    assert parse_spec(str(want)) == want  # str() is a spec again (recorded at install)


@pytest.mark.parametrize("text, says", [
    ("", "empty uplink spec"),
    (",backup", "no interface name"),
    ("eth1,", "empty option"),
    ("eth1,,backup", "empty option"),
    ("a" * 16, "not a valid interface name"),
    ("eth/1", "not a valid interface name"),
    ("eth1,gw=", "not an IPv4 or IPv6 address"),
    ("eth1,gw=foo", "not an IPv4 or IPv6 address"),
    ("eth1,gw=0.0.0.0", "cannot be a next hop"),
    ("eth1,gw=224.0.0.1", "cannot be a next hop"),
    ("eth1,gw=192.0.2.1,gw=192.0.2.2", "two IPv4 gateways"),
    ("eth1,backup=1", "backup takes no value"),
    ("eth1,backup,backup", "backup given twice"),
    ("eth1,cost", "cost must be a number >= 0"),
    ("eth1,cost=-1", "cost must be a number >= 0"),
    ("eth1,cost=nan", "cost must be a number >= 0"),
    ("eth1,cost=inf", "cost must be a number >= 0"),
    ("eth1,cost=x", "cost must be a number >= 0"),
    ("eth1,cost=1,cost=2", "cost given twice"),
    ("eth1,weight=3", "unknown option 'weight' (known: gw=ADDR, backup, cost=N)"),
])
def test_bad_specs(text, says):
    with pytest.raises(UplinkError, match=None) as e:
        parse_spec(text)
    assert says in str(e.value)


def test_bad_spec_is_a_usage_error_exit_2(capsys):
    parser = argparse.ArgumentParser(prog="middlebox rules install")
    parser.add_argument("--uplink", action="append", type=spec_arg)
    parser.add_argument("--join-ports", type=port_range_arg)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--uplink", "eth1,weight=3"])
    assert e.value.code == 2
    assert "argument --uplink: uplink 'eth1,weight=3': unknown option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--join-ports", "70000-70001"])
    assert e.value.code == 2
    assert parser.parse_args(["--uplink", "eth1", "--uplink", "eth2,backup"]).uplink == [
        UplinkSpec("eth1"), UplinkSpec("eth2", backup=True)]


def test_cli_rejects_bad_uplink_with_status_2(capsys):
    from middlebox import cli

    for argv in (["rules", "install", "--guest-iface", "x", "--uplink", "eth1,cost=-3"],
                 ["run", "--uplink", "eth1,bogus"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "argument --uplink" in capsys.readouterr().err


def test_duplicate_interfaces_refused():
    with pytest.raises(UplinkError, match="eth1 given more than once"):
        check_specs(["eth1", "eth2", "eth1,backup"])


def test_port_ranges():
    assert parse_port_range("61000-61999") == JOIN_PORTS_DEFAULT
    assert parse_port_range(" 2000 - 2000 ") == (2000, 2000)
    for bad in ("61000", "1000-2000", "3000-2000", "60000-70000", "a-b", ""):
        with pytest.raises(UplinkError):
            parse_port_range(bad)


@pytest.mark.parametrize("before, want", [
    ("", "61000-61999"),
    ("8080", "8080,61000-61999"),
    ("8080,60990-61005", "8080,60990-61999"),
    ("61500,62000-62010", "61000-62010"),
    ("61000-61999", "61000-61999"),
    ("1-5,70,61100-61200,65000", "1-5,70,61000-61999,65000"),
])
def test_reserved_ports_merge(before, want):
    assert rules.merge_port_ranges(before, *JOIN_PORTS_DEFAULT) == want


def test_resolved_uplink_round_trips_and_becomes_a_config_uplink():
    u = ResolvedUplink(name="eth1", id=2, spec="eth1,backup", ifindex=3, addr4="192.0.2.2",
                       plen4=24, gw4="192.0.2.1", addr6="2001:db8::2", plen6=64, backup=True,
                       cost=1.5, table=6100, priority=6100)
    assert ResolvedUplink.from_dict({**u.as_dict(), "future": 1}) == u
    assert u.to_config() == Uplink("eth1", 2, "192.0.2.2", "2001:db8::2", True, 1.5, True)
    d = u.describe()
    assert "192.0.2.2 via 192.0.2.1" in d and "2001:db8::2 via dev eth1" in d
    assert "table 6100" in d and "backup" in d


def test_rulesets_render_join_queue_rules_per_family():
    addrs = ["192.0.2.2", "2001:db8::2", "198.51.100.2"]
    v4 = rules.xt_render(3, 0x10, ["vnet0"], [a for a in addrs if ":" not in a], (62000, 62999))
    v6 = rules.xt_render(3, 0x10, ["vnet0"], ["2001:db8::2"], (62000, 62999))
    none = rules.xt_render(3, 0x10, ["vnet0"])
    assert "-I INPUT 1 -j MIDDLEBOX_JOIN" in v4 and "MIDDLEBOX_JOIN" not in none
    assert "-A MIDDLEBOX_JOIN -d 192.0.2.2 -p tcp --dport 62000:62999 -j NFQUEUE --queue-num 3 " \
           "--queue-bypass" in v4
    assert "198.51.100.2" in v4 and "2001:db8::2" not in v4
    assert "-d 2001:db8::2 " in v6 and "192.0.2.2" not in v6
    assert "-A MIDDLEBOX_JOIN -m mark --mark 0x10 -j ACCEPT" in v6
    nft = rules.nft_render(3, 0x10, ["vnet0"], addrs, (62000, 62999))
    assert "define join_ports = 62000-62999" in nft
    assert "add element inet middlebox uplink4 { 192.0.2.2, 198.51.100.2 }" in nft
    assert "add element inet middlebox uplink6 { 2001:db8::2 }" in nft
    assert "ip daddr @uplink4 tcp dport $join_ports queue num $queue_num bypass" in nft
    assert "\nadd element" not in rules.nft_render(3, 0x10, ["vnet0"])


def test_xt_render_leaves_out_the_jumps_a_previous_install_left():
    """An install over a previous one keeps its jumps (restore --noflush flushes and refills
    the declared chains in one commit): adding them again would queue every packet twice."""
    full = rules.xt_render(3, 0x10, ["vnet0"], ["192.0.2.2"], (62000, 62999))
    jumps = frozenset((table, hook, chain) for table, chain, hook in rules.XT_CHAINS)
    again = rules.xt_render(3, 0x10, ["vnet0"], ["192.0.2.2"], (62000, 62999), jumps)
    dropped = [line for line in full.splitlines() if line not in again.splitlines()]
    assert sorted(dropped) == sorted(["-I FORWARD 1 -j MIDDLEBOX", "-I PREROUTING 1 -j MIDDLEBOX_PRE",
                                      "-I INPUT 1 -j MIDDLEBOX_JOIN", "-I OUTPUT 1 -j MIDDLEBOX_RAW"])
    assert again.count(":MIDDLEBOX ") == 1 and again.count("COMMIT") == 2


def test_an_install_after_one_that_did_not_finish_removes_its_leftover_routing(tmp_path, monkeypatch):
    """An install that stopped between adding the new policy routing and removing the old
    (killed, or remove_routing failed) leaves the old in the state's "leftover", for `rules
    remove`. The next install wrote its own "leftover" over it and popped it: the first
    install's tables and `ip rule`s were then named nowhere and stayed for good (a stale
    rule at a lower priority number wins over the new one once the uplink's gateway moves)."""
    import contextlib

    from middlebox.io import uplinks as U

    monkeypatch.setattr(rules, "STATE_DIR", tmp_path)
    monkeypatch.setattr(rules, "read_sysctl", lambda key: None)
    monkeypatch.setattr(rules, "_iproute", lambda: contextlib.nullcontext(object()))
    removed: list[int] = []
    monkeypatch.setattr(U, "remove_routing", lambda ipr, u: removed.append(u.table))
    tables = iter(range(6103, 6200))

    def install(ipr, ups):
        for u in ups:
            u.table = u.priority = next(tables)
        return ups

    monkeypatch.setattr(U, "install_routing", install)

    def up(table):
        return ResolvedUplink("wan0", 1, "wan0", 2, addr4="192.0.2.2", plen4=24, gw4="192.0.2.1",
                              table=table, priority=table)

    state = {"previous": {}, "uplinks": [up(6102).as_dict()], "leftover": [up(6101).as_dict()]}
    rules._install_uplinks(state, [up(6102)], [up(None)], (62000, 62999), lambda msg: None)
    saved = rules._state()
    named = {d["table"] for d in saved.get("uplinks", []) + saved.get("leftover", [])}
    assert 6101 in removed or 6101 in named, (removed, saved)
    assert 6102 in removed
