"""Uplinks: the interfaces extra subflows leave by (spec parsing, resolution, policy routing,
link state). Used by `middlebox rules install --uplink` and `middlebox run --uplink`.

An uplink spec is ``IFACE[,gw=ADDR][,backup][,cost=N]``:

* ``IFACE``: the interface; its address is the interface's primary global address, IPv4 and
  IPv6 (the first one that is not secondary, temporary, tentative or deprecated); an uplink
  needs at least one.
* ``gw=ADDR``: the next hop of the uplink's own routing table; may be given once per family.
  Without it: the next hop of a default route via that interface in any routing table (the
  main table first). A point-to-point or NOARP link needs none (a device route is used).
* ``backup``: joins over this uplink carry the MP_JOIN backup bit.
* ``cost=N``: a number >= 0, recorded for path policies.

Uplinks get the MPTCP address ids 1..n in the order given (subflow 1 has id 0).

Policy routing (what `rules install` adds per uplink, through pyroute2, undone by `rules
remove`): a free routing table T holding the uplink's connected prefix and a default route via
its gateway (or its device), per family where it has an address, and `ip rule from <address>
lookup T` at a free priority below the main table's (32766). So a packet the daemon sends from
an uplink address (its raw sockets bind that address) leaves by that uplink, whatever the
destination. T and the priority are chosen among numbers no route or rule uses yet, starting at
`TABLE_BASE` / `PRIORITY_BASE`; rules and routes already there (another uplink manager's, the
test bed's own source routing) are left alone. A link set down loses the routes through it (the
kernel deletes them, IPv4 and IPv6); `ensure_routing` puts them back, and the daemon calls it
when it sees the link up again.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import math
import re
import socket
import struct
from dataclasses import asdict, dataclass

from middlebox.core.config import JOIN_PORTS_DEFAULT, Uplink

AF = {4: socket.AF_INET, 6: socket.AF_INET6}
TABLE_BASE = 6100  # first routing table tried for an uplink
PRIORITY_BASE = 6100  # first `ip rule` priority tried (must stay below the main rule's 32766)
PRIORITY_MAX = 32765
IFNAMSIZ = 16
# link flags (linux/if.h)
IFF_UP, IFF_POINTOPOINT, IFF_RUNNING, IFF_NOARP = 0x1, 0x10, 0x40, 0x80
# address flags (linux/if_addr.h); IPv4 calls 0x01 secondary, IPv6 temporary
IFA_F_SECONDARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
RT_TABLE_MAIN = 254


class UplinkError(ValueError):
    """A bad spec or an uplink that cannot be used, with a message for the user."""


# -- specs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UplinkSpec:
    iface: str
    gw4: str | None = None
    gw6: str | None = None
    backup: bool = False
    cost: float = 0.0

    def __str__(self) -> str:
        parts = [self.iface]
        parts += [f"gw={g}" for g in (self.gw4, self.gw6) if g]
        if self.backup:
            parts.append("backup")
        if self.cost:
            parts.append(f"cost={self.cost:g}")
        return ",".join(parts)


_IFNAME_BAD = re.compile(r"[/:\s,=]")


def parse_spec(text: str) -> UplinkSpec:
    """`IFACE[,gw=ADDR][,backup][,cost=N]` -> UplinkSpec; UplinkError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UplinkError("empty uplink spec (IFACE[,gw=ADDR][,backup][,cost=N])")
    iface, *options = text.strip().split(",")
    if not iface:
        raise UplinkError(f"uplink {text!r}: no interface name before the options")
    if len(iface.encode()) >= IFNAMSIZ or iface in (".", "..") or _IFNAME_BAD.search(iface):
        raise UplinkError(f"uplink {text!r}: {iface!r} is not a valid interface name")
    gw: dict[int, str] = {}
    backup = False
    cost: float | None = None
    seen: set[str] = set()
    for opt in options:
        key, eq, value = opt.partition("=")
        key = key.strip()
        if key in seen and key != "gw":
            raise UplinkError(f"uplink {text!r}: {key} given twice")
        seen.add(key)
        if key == "gw":
            try:
                addr = ipaddress.ip_address(value.strip())
            except ValueError:
                raise UplinkError(f"uplink {text!r}: gw={value!r} is not an IPv4 or IPv6 "
                                  "address") from None
            if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
                raise UplinkError(f"uplink {text!r}: gw={addr} cannot be a next hop")
            if addr.version in gw:
                raise UplinkError(f"uplink {text!r}: two IPv{addr.version} gateways")
            gw[addr.version] = str(addr)
        elif key == "backup":
            if eq:
                raise UplinkError(f"uplink {text!r}: backup takes no value")
            backup = True
        elif key == "cost":
            try:
                cost = float(value)
            except ValueError:
                cost = math.nan
            if not eq or not math.isfinite(cost) or cost < 0:
                raise UplinkError(f"uplink {text!r}: cost must be a number >= 0 (cost=N)")
        elif not key:
            raise UplinkError(f"uplink {text!r}: empty option (stray comma?)")
        else:
            raise UplinkError(f"uplink {text!r}: unknown option {key!r} "
                              "(known: gw=ADDR, backup, cost=N)")
    return UplinkSpec(iface, gw.get(4), gw.get(6), backup, cost or 0.0)


def spec_arg(text: str) -> UplinkSpec:
    """argparse `type=` of --uplink: a bad spec is a usage error (exit status 2)."""
    try:
        return parse_spec(text)
    except UplinkError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_specs(specs) -> list[UplinkSpec]:
    specs = [s if isinstance(s, UplinkSpec) else parse_spec(s) for s in specs]
    names = [s.iface for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UplinkError(f"uplink {dup[0]} given more than once")
    if len(specs) > 255:
        raise UplinkError("at most 255 uplinks (MPTCP address ids 1..255)")
    return specs


def parse_port_range(text: str) -> tuple[int, int]:
    """`LO-HI` (inclusive, 1024..65535) -> (lo, hi)."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text or "")
    if not m:
        raise UplinkError(f"port range {text!r}: expected LO-HI, e.g. "
                          f"{JOIN_PORTS_DEFAULT[0]}-{JOIN_PORTS_DEFAULT[1]}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 1024 <= lo <= hi <= 65535:
        raise UplinkError(f"port range {text!r}: must lie within 1024-65535, LO <= HI")
    return lo, hi


def port_range_arg(text: str) -> tuple[int, int]:
    try:
        return parse_port_range(text)
    except UplinkError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- resolution --------------------------------------------------------------------------


@dataclass
class ResolvedUplink:
    """An uplink as found in the kernel: what `rules install` records and `run` uses."""

    name: str
    id: int
    spec: str
    ifindex: int
    addr4: str | None = None
    plen4: int = 32
    addr6: str | None = None
    plen6: int = 128
    gw4: str | None = None
    gw6: str | None = None
    backup: bool = False
    cost: float = 0.0
    up: bool = True
    table: int | None = None  # set by install_routing
    priority: int | None = None

    def addr(self, version: int) -> str | None:
        return self.addr4 if version == 4 else self.addr6

    def to_config(self) -> Uplink:
        return Uplink(name=self.name, id=self.id, addr4=self.addr4, addr6=self.addr6,
                      backup=self.backup, cost=self.cost, up=self.up)

    def describe(self) -> str:
        fam = []
        for v, a, g in ((4, self.addr4, self.gw4), (6, self.addr6, self.gw6)):
            if a:
                fam.append(f"{a} via {g or 'dev ' + self.name}")
        extra = [f"id {self.id}"]
        if self.table is not None:
            extra.append(f"table {self.table} priority {self.priority}")
        if self.backup:
            extra.append("backup")
        if self.cost:
            extra.append(f"cost {self.cost:g}")
        extra.append("up" if self.up else "down")
        return f"{self.name}: {', '.join(fam)} ({', '.join(extra)})"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResolvedUplink":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def link_is_up(link) -> bool:
    """Administratively up and operationally up (carrier, not dormant): IFF_RUNNING is set by
    the kernel exactly when the operstate is UP or UNKNOWN (dev_get_flags)."""
    flags = link["flags"]
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def primary_addresses(ipr, ifindex: int) -> dict[int, tuple[str, int]]:
    """{4: (addr, prefixlen), 6: (addr, prefixlen)} of the interface's primary global
    addresses (first in the kernel's order that is not secondary/temporary, tentative,
    deprecated or DAD-failed)."""
    out: dict[int, tuple[str, int]] = {}
    for version in (4, 6):
        for a in ipr.get_addr(family=AF[version], index=ifindex):
            if a["index"] != ifindex or a["scope"] != RT_SCOPE_UNIVERSE:
                continue
            flags = a.get_attr("IFA_FLAGS") or a["flags"]
            if flags & (IFA_F_SECONDARY | IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE):
                continue
            addr = a.get_attr("IFA_LOCAL") if version == 4 else None
            addr = addr or a.get_attr("IFA_ADDRESS")
            if addr:
                out[version] = (addr, a["prefixlen"])
                break
    return out


def find_gateway(ipr, ifindex: int, version: int, exclude_tables=()) -> str | None:
    """Next hop of a default route via `ifindex` in any table (main first, then by table
    number); None if there is none. Tables in `exclude_tables` (our own) are skipped."""
    found: list[tuple[int, str]] = []
    for r in ipr.get_routes(family=AF[version]):
        table = r.get_attr("RTA_TABLE") or r["table"]
        if r["dst_len"] != 0 or r["type"] != RTN_UNICAST or table in exclude_tables:
            continue
        hops = []
        if r.get_attr("RTA_OIF") == ifindex and r.get_attr("RTA_GATEWAY"):
            hops.append(r.get_attr("RTA_GATEWAY"))
        for nh in r.get_attr("RTA_MULTIPATH") or ():
            if nh["oif"] == ifindex and nh.get_attr("RTA_GATEWAY"):
                hops.append(nh.get_attr("RTA_GATEWAY"))
        for gw in hops:
            found.append((0 if table == RT_TABLE_MAIN else 1, table, gw))
    found.sort(key=lambda x: (x[0], x[1]))
    return found[0][2] if found else None


def resolve(specs, ipr=None, *, need_gateway: bool = True, exclude_tables=()) -> list[ResolvedUplink]:
    """Look the uplinks up in the current namespace; ids 1..n in the order given.
    UplinkError for an unknown interface, one with no global address, or (need_gateway) one
    with an address family but no gateway for it."""
    specs = check_specs(specs)
    if ipr is None:
        from pyroute2 import IPRoute

        with IPRoute() as own:
            return resolve(specs, own, need_gateway=need_gateway, exclude_tables=exclude_tables)
    out = []
    for n, spec in enumerate(specs, 1):
        found = ipr.link_lookup(ifname=spec.iface)
        if not found:
            raise UplinkError(f"uplink {spec.iface}: unknown interface in this network namespace")
        idx = found[0]
        link = ipr.get_links(idx)[0]
        addrs = primary_addresses(ipr, idx)
        if not addrs:
            raise UplinkError(f"uplink {spec.iface}: no global IPv4 or IPv6 address")
        u = ResolvedUplink(name=spec.iface, id=n, spec=str(spec), ifindex=idx,
                           backup=spec.backup, cost=spec.cost, up=link_is_up(link))
        devroute_ok = bool(link["flags"] & (IFF_POINTOPOINT | IFF_NOARP))
        for version in (4, 6):
            given = spec.gw4 if version == 4 else spec.gw6
            if version not in addrs:
                if given:
                    raise UplinkError(f"uplink {spec.iface}: gw={given} given but the interface "
                                      f"has no global IPv{version} address")
                continue
            addr, plen = addrs[version]
            gw = given or find_gateway(ipr, idx, version, exclude_tables)
            if gw is None and need_gateway and not devroute_ok:
                raise UplinkError(
                    f"uplink {spec.iface}: no IPv{version} default route via {spec.iface} in any "
                    f"routing table: give its next hop (gw=ADDR)")
            if version == 4:
                u.addr4, u.plen4, u.gw4 = addr, plen, gw
            else:
                u.addr6, u.plen6, u.gw6 = addr, plen, gw
        out.append(u)
    return out


# -- policy routing ----------------------------------------------------------------------


def _used_tables_and_priorities(ipr) -> tuple[set[int], set[int]]:
    tables: set[int] = set()
    prios: set[int] = set()
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in ipr.get_routes(family=fam):
            tables.add(r.get_attr("RTA_TABLE") or r["table"])
        for rule in ipr.get_rules(family=fam):
            tables.add(rule.get_attr("FRA_TABLE") or rule["table"])
            prios.add(rule.get_attr("FRA_PRIORITY") or 0)
    return tables, prios


def _routes(u: ResolvedUplink, ifindex: int) -> list[dict]:
    """The routes of the uplink's table, as pyroute2 `route()` keyword arguments."""
    out = []
    for version in (4, 6):
        addr = u.addr(version)
        if addr is None:
            continue
        plen = u.plen4 if version == 4 else u.plen6
        gw = u.gw4 if version == 4 else u.gw6
        fam = AF[version]
        net = ipaddress.ip_interface(f"{addr}/{plen}").network
        if net.prefixlen < net.max_prefixlen:
            out.append(dict(family=fam, dst=str(net.network_address), dst_len=net.prefixlen,
                            oif=ifindex, table=u.table, scope=RT_SCOPE_LINK))
        if gw:
            out.append(dict(family=fam, dst_len=0, gateway=gw, oif=ifindex, table=u.table))
        else:
            out.append(dict(family=fam, dst_len=0, oif=ifindex, table=u.table,
                            scope=RT_SCOPE_LINK))
    return out


def _rules(u: ResolvedUplink) -> list[dict]:
    return [dict(family=AF[v], src=u.addr(v), src_len=32 if v == 4 else 128, table=u.table,
                 priority=u.priority)
            for v in (4, 6) if u.addr(v)]


def ensure_routing(ipr, u: ResolvedUplink) -> int:
    """(Re)add the uplink's table routes and rules; returns how many were missing.
    Idempotent. The kernel refuses routes through a link that is down (and deletes them when
    it goes down): those are left out, to be put back when it is up (the daemon does)."""
    found = ipr.link_lookup(ifname=u.name)
    if not found:
        raise UplinkError(f"uplink {u.name}: interface gone")
    added = 0
    down = not link_is_up(ipr.get_links(found[0])[0])
    for kw in _routes(u, found[0]):
        try:
            ipr.route("add", **kw)
            added += 1
        except Exception as e:
            code = getattr(e, "code", None)
            if code == errno.EEXIST or (down and code in (errno.ENETDOWN, errno.ENETUNREACH,
                                                        errno.EHOSTUNREACH)):
                continue
            raise
    for kw in _rules(u):
        try:
            ipr.rule("add", **kw)
            added += 1
        except Exception as e:
            if getattr(e, "code", None) != errno.EEXIST:
                raise
    return added


def live_status(ipr, u: ResolvedUplink) -> str:
    """The uplink now, for `rules show`: its link state, and which of its table's default
    routes are missing (a link that went down took them; a running daemon puts them back)."""
    found = ipr.link_lookup(ifname=u.name)
    if not found:
        return "interface gone"
    state = "up" if link_is_up(ipr.get_links(found[0])[0]) else "down"
    missing = []
    for version in (4, 6):
        if u.addr(version) and u.table is not None:
            routes = ipr.get_routes(family=AF[version], table=u.table)
            if not any(r["dst_len"] == 0 and (r.get_attr("RTA_TABLE") or r["table"]) == u.table
                       for r in routes):
                missing.append(f"IPv{version}")
    return f"link {state}" + (f", default route missing ({' '.join(missing)})" if missing else "")


def remove_routing(ipr, u: ResolvedUplink) -> None:
    """Delete the uplink's rules and everything in its table (ours: chosen free). Idempotent."""
    if u.table is None:
        return
    for fam in (socket.AF_INET, socket.AF_INET6):
        for rule in ipr.get_rules(family=fam):
            if ((rule.get_attr("FRA_TABLE") or rule["table"]) == u.table
                    and rule.get_attr("FRA_PRIORITY") == u.priority):
                with contextlib.suppress(Exception):
                    ipr.rule("del", family=fam, table=u.table, priority=u.priority,
                             src=rule.get_attr("FRA_SRC"), src_len=rule["src_len"])
        for r in ipr.get_routes(family=fam, table=u.table):
            if (r.get_attr("RTA_TABLE") or r["table"]) != u.table:
                continue
            kw = dict(family=fam, table=u.table, dst_len=r["dst_len"], scope=r["scope"],
                      proto=r["proto"], type=r["type"])
            if r.get_attr("RTA_DST"):
                kw["dst"] = r.get_attr("RTA_DST")
            if r.get_attr("RTA_OIF"):
                kw["oif"] = r.get_attr("RTA_OIF")
            with contextlib.suppress(Exception):
                ipr.route("del", **kw)


def install_routing(ipr, uplinks: list[ResolvedUplink]) -> list[ResolvedUplink]:
    """Give each uplink a free table and rule priority and install its routing. On failure,
    what this call added is removed again and UplinkError raised."""
    tables, prios = _used_tables_and_priorities(ipr)
    table, prio = TABLE_BASE, PRIORITY_BASE
    done: list[ResolvedUplink] = []
    try:
        for u in uplinks:
            while table in tables:
                table += 1
            while prio in prios:
                prio += 1
            if prio > PRIORITY_MAX:
                raise UplinkError("no free ip rule priority below the main table's")
            u.table, u.priority = table, prio
            tables.add(table)
            prios.add(prio)
            done.append(u)
            ensure_routing(ipr, u)
    except Exception as e:
        for u in done:
            remove_routing(ipr, u)
        if isinstance(e, UplinkError):
            raise
        raise UplinkError(f"policy routing for uplink {done[-1].name if done else '?'} "
                          f"failed: {e}") from None
    return uplinks


# -- link state while running ------------------------------------------------------------


@dataclass
class _Watched:
    uplink: ResolvedUplink
    up: bool
    note: str = ""


RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
NETLINK_ROUTE = 0


class LinkWatch:
    """Follows the uplinks' links and addresses for a select() loop: `fileno()` to watch,
    `poll()` when readable, which returns the uplinks whose state changed as (uplink, up, why).
    An uplink is up when its link is administratively and operationally up and still holds
    the addresses it started with.

    The events come from a non-blocking rtnetlink socket bound to the link and address groups,
    drained to EAGAIN at every poll; a message only says which interface to look at again
    (its ifindex), the state itself is asked for through pyroute2. (pyroute2's own bound
    IPRoute reads ahead into a buffer select() cannot see: events then surfaced one wake-up
    late, or never.) A lost message (ENOBUFS) makes every uplink be looked at again.
    """

    def __init__(self, uplinks: list[ResolvedUplink], ipr_factory=None) -> None:
        from pyroute2 import IPRoute

        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.events.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self.events.setblocking(False)
            self.query = (ipr_factory or IPRoute)()
        except BaseException:
            self.close()
            raise
        self.watched = {u.name: _Watched(u, u.up) for u in uplinks}
        self.errors = 0
        # the state may have moved between resolve() and bind(): look once more
        self.initial = self._recheck(list(self.watched))

    def fileno(self) -> int:
        return self.events.fileno()

    def state(self, name: str) -> tuple[bool, str]:
        """(up, why) of uplink `name` now, from the kernel."""
        w = self.watched[name]
        found = self.query.link_lookup(ifname=name)
        if not found:
            return False, "interface gone"
        idx = found[0]
        w.uplink.ifindex = idx
        link = self.query.get_links(idx)[0]
        if not link_is_up(link):
            return False, f"link {link.get_attr('IFLA_OPERSTATE') or 'down'}"
        have = {a.get_attr("IFA_ADDRESS") for a in self.query.get_addr(index=idx)}
        have |= {a.get_attr("IFA_LOCAL") for a in self.query.get_addr(index=idx)}
        lost = [a for a in (w.uplink.addr4, w.uplink.addr6) if a and a not in have]
        if lost:
            return False, "address " + " ".join(lost) + " gone"
        return True, "link up"

    def _recheck(self, names) -> list[tuple[ResolvedUplink, bool, str]]:
        changed = []
        for name in names:
            w = self.watched[name]
            up, why = self.state(name)
            if up != w.up:
                w.up = up
                w.uplink.up = up
                changed.append((w.uplink, up, why))
        return changed

    def poll(self) -> list[tuple[ResolvedUplink, bool, str]]:
        """Drain the socket (call when select() says readable); the changes."""
        by_index = {w.uplink.ifindex: n for n, w in self.watched.items()}
        names: set[str] = set()
        while True:
            try:
                data = self.events.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: messages lost, look at everything again
                self.errors += 1
                names.update(self.watched)
                continue
            off = 0
            while off + 24 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                # ifinfomsg and ifaddrmsg both hold the ifindex at offset 4 (after nlmsghdr)
                index = struct.unpack_from("=i", data, off + 20)[0]
                if kind in (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR):
                    if index in by_index:
                        names.add(by_index[index])
                    elif kind == RTM_NEWLINK:  # an uplink re-created under a new index?
                        names.update(n for n, w in self.watched.items() if not w.up)
                if length < 16:
                    break
                off += (length + 3) & ~3
        return self._recheck(sorted(names))

    def close(self) -> None:
        for s in (getattr(self, "events", None), getattr(self, "query", None)):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.close()


def main_routes(ipr, uplinks) -> list[tuple[int, bytes, int, int]]:
    """The main table's routes that leave by an uplink, as the core's `set_routes` takes them:
    (ip version, network bytes, prefix length, uplink id; ids 1..n in the uplinks' order)."""
    by_index = {}
    for i, u in enumerate(uplinks, 1):
        found = ipr.link_lookup(ifname=u.name)
        if found:
            by_index[found[0]] = u.id
    out = []
    for family, version, width in ((socket.AF_INET, 4, 4), (socket.AF_INET6, 6, 16)):
        for r in ipr.get_routes(family=family, table=254):
            oif = r.get_attr("RTA_OIF")
            if oif is None:
                mp = r.get_attr("RTA_MULTIPATH")
                oif = mp[0]["oif"] if mp else None
            uid = by_index.get(oif)
            if uid is None:
                continue
            dst = r.get_attr("RTA_DST")
            net = socket.inet_pton(family, dst) if dst else bytes(width)
            out.append((version, net, r["dst_len"], uid))
    return out
