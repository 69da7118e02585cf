"""Interface offloads the netlink backend depends on (docs/fastpath.md §4, rule 6).

Fraglist GRO (`rx-gro-list`) builds super-packets the kernel cannot grow: `skb_copy_expand`
refuses SKB_GSO_FRAGLIST skbs, so every rewritten one becomes NF_DROP (measured: 37 Mbit/s).
`rules install` turns it off on every interface of the namespace that has it on (the queued
packets come in from the guest interfaces and, towards the guests, from any other) and
records which, `rules remove` turns it back on there. BIG TCP (`gso_ipv4_max_size` /
`gro_ipv4_max_size` above 65536) is left alone: its super-packets are re-queued to the
companion queue and segmented (slower, still converted); the README says to keep it off.
"""

from __future__ import annotations

import os
import shutil
import subprocess

FEATURE = "rx-gro-list"


def _ethtool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ethtool", *argv], capture_output=True, text=True, timeout=10)


def interfaces() -> list[str]:
    """Every interface of the current namespace but lo."""
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    except OSError:
        return []


def gro_list_on(ifname: str) -> bool:
    r = _ethtool("-k", ifname)
    for line in r.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name == FEATURE:
            return value.strip().startswith("on") and "[fixed]" not in value
    return False


def gro_list_off(log=print) -> list[str]:
    """Turn rx-gro-list off where it is on; the interfaces changed."""
    if shutil.which("ethtool") is None:
        log("ethtool not installed: rx-gro-list not checked (keep it off on the interfaces "
            "the queue sees)")
        return []
    changed = []
    for ifname in interfaces():
        if gro_list_on(ifname):
            r = _ethtool("-K", ifname, FEATURE, "off")
            if r.returncode == 0:
                changed.append(ifname)
                log(f"{ifname}: {FEATURE} off (fraglist GRO cannot be rewritten)")
            else:
                log(f"{ifname}: cannot turn {FEATURE} off: {r.stderr.strip()}")
    return changed


def gro_list_restore(ifaces: list[str], log=print) -> None:
    if not ifaces or shutil.which("ethtool") is None:
        return
    present = set(interfaces())
    for ifname in ifaces:
        if ifname in present and _ethtool("-K", ifname, FEATURE, "on").returncode == 0:
            log(f"restored {ifname}: {FEATURE} on")
