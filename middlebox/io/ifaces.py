"""Guest interfaces as operators write them: names (`virbr0`) and patterns (`vnet*`).

A pattern is a name ending in `*` (any suffix), which is what the kernel's matchers support:
nftables matches `iifname "vnet*"` as it is, xtables writes it `vnet+`. The ruleset matches by
name, so interfaces that appear after `rules install` (a guest's tap when it boots) are queued
without a reinstall; the daemon follows them through rtnetlink link events (`GuestWatch`) to
tell a packet's direction by its input interface.

A bridge (`virbr0`, libvirt's default network) is a guest interface like any other: routed
packets from its guests arrive on the bridge, not on the ports enslaved to it. A pattern that
matches only bridge ports (`vnet*` on a libvirt host) therefore never sees routed traffic;
`bridge_port_hint` says so.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import socket

IFNAMSIZ = 16  # with the NUL: names are at most 15 bytes
RTMGRP_LINK = 1
NETLINK_ROUTE = 0


def is_pattern(name: str) -> bool:
    return name.endswith("*")


def check(name: str) -> str:
    """`name` if it is a valid interface name or pattern; ValueError saying why not."""
    if not isinstance(name, str) or not name:
        raise ValueError("an interface name must be a non-empty string")
    if len(name.encode()) > IFNAMSIZ - 1:
        raise ValueError(f"{name!r} is longer than {IFNAMSIZ - 1} bytes, the kernel's limit")
    if name in (".", "..") or any(c in name for c in "/: \t\n\"'\\"):
        raise ValueError(f"{name!r} is not an interface name")
    if "*" in name[:-1] or any(c in name for c in "?[]+"):
        raise ValueError(f"{name!r}: only a trailing '*' is supported as a wildcard "
                         "(what nftables and xtables match)")
    if name == "*":
        raise ValueError("'*' would make every interface guest-facing")
    return name


def matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) if is_pattern(pattern) else name == pattern


def xt_name(pattern: str) -> str:
    """The xtables spelling: `vnet*` -> `vnet+`."""
    return pattern[:-1] + "+" if is_pattern(pattern) else pattern


def from_xt(name: str) -> str:
    return name[:-1] + "*" if name.endswith("+") else name


def current(patterns, index=None) -> dict[str, int]:
    """{name: ifindex} of the interfaces of this network namespace that match `patterns`."""
    pairs = socket.if_nameindex() if index is None else index
    return {name: idx for idx, name in sorted(pairs)
            if any(matches(p, name) for p in patterns)}


def missing_names(patterns, index=None) -> list[str]:
    """The exact names (not patterns) among `patterns` that no interface has."""
    names = {n for _, n in (socket.if_nameindex() if index is None else index)}
    return [p for p in patterns if not is_pattern(p) and p not in names]


def bridge_port_hint(patterns) -> str | None:
    """A hint when every interface a pattern matches is a bridge port (its routed traffic
    arrives on the bridge), e.g. `vnet*` on a libvirt host whose guests sit on virbr0."""
    found = current(patterns)
    if not found:
        return None
    masters = {}
    for name in found:
        try:
            masters[name] = os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
        except OSError:
            return None  # at least one routed interface: the pattern is useful
    bridges = sorted(set(masters.values()) - set(found))
    if not bridges:
        return None
    return (f"{', '.join(sorted(masters))} {'is a port' if len(masters) == 1 else 'are ports'} "
            f"of {', '.join(bridges)}: routed traffic of their guests arrives on the bridge, "
            f"so name the bridge (--guest-iface {bridges[0]})")


class GuestWatch:
    """The ifindexes of the guest interfaces, kept current: `poll()` reads rtnetlink link
    events (non-blocking) and returns the new {name: ifindex} when the set changed, else None."""

    def __init__(self, patterns) -> None:
        self.patterns = list(patterns)
        self.sock: socket.socket | None = None
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                              | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            s.bind((0, RTMGRP_LINK))
            self.sock = s
        except OSError:
            self.sock = None  # then poll() rescans every call
        self.found = current(self.patterns)

    def poll(self) -> dict[str, int] | None:
        if self.sock is not None:
            events = False
            while True:
                try:
                    self.sock.recv(65536)
                    events = True
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:  # events lost: rescan
                        events = True
                        continue
                    break
            if not events:
                return None
        found = current(self.patterns)
        if found == self.found:
            return None
        self.found = found
        return found

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
