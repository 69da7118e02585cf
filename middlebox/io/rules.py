"""Install, remove or show the netfilter rules and sysctls the data path needs.

`middlebox rules install --queue 0 --guest-iface IF [--guest-iface IF ...]` loads the shipped
ruleset (rules/middlebox.nft, or rules/middlebox.xtables where nft's native `queue` is
missing) for IPv4 and IPv6 in the current network namespace and sets:

* net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1 (the box routes guest traffic);
* net.netfilter.nf_conntrack_tcp_be_liberal=1 (conntrack sees shifted sequence numbers:
  strict tracking marks them invalid, LESSONS.md trap 7);
* net.ipv4.conf.all.rp_filter=2 (loose: subflows use asymmetric paths).

With `--uplink IFACE[,gw=ADDR][,backup][,cost=N]` (repeatable; middlebox/io/uplinks.py) it
also adds, per uplink, source policy routing through pyroute2 (a free routing table with the
uplink's prefix and default route, `ip rule from <uplink address> lookup <table>`, IPv4 and
IPv6 where the uplink has an address), and queues TCP to the uplink addresses with a
destination port in the join range (`--join-ports LO-HI`, default 61000-61999) arriving for
the box itself (the packets of extra subflows); the join range is added to
net.ipv4.ip_local_reserved_ports (IPv4 and IPv6) so no local socket takes a port of it.

The previous sysctl values, the uplinks, their tables and rule priorities are recorded (in
/run/middlebox/, keyed by the namespace cookie) and undone by `rules remove`. Install is
idempotent (a second install replaces the rules and the uplinks' routing, and keeps the first
record of each sysctl); remove undoes everything and is idempotent too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from middlebox.core.config import JOIN_PORTS_DEFAULT
from middlebox.io import ifaces as _ifaces
from middlebox.io import offloads as _offloads
from middlebox.io import uplinks as _uplinks

QUEUE_DEFAULT = 0
#: SO_MARK of the packets the daemon injects; the ruleset lets them pass unqueued.
INJECT_MARK = 0x4D427801
NFT_TABLE = "middlebox"
XT_CHAIN = "MIDDLEBOX"
XT_JOIN_CHAIN = "MIDDLEBOX_JOIN"  # mangle INPUT: packets of extra subflows (--uplink)
# mangle PREROUTING: guest packets are queued before the routing decision, so the daemon sees
# them even when the route their first subflow took is gone (its uplink died): a multipath
# flow then carries them on its other subflows (issue 6).
XT_PRE_CHAIN = "MIDDLEBOX_PRE"
XT_RAW_CHAIN = "MIDDLEBOX_RAW"  # raw OUTPUT: injected segments towards guests are not tracked
RESERVED_PORTS = "net.ipv4.ip_local_reserved_ports"  # the join range (IPv4 and IPv6)
STATE_DIR = pathlib.Path(os.environ.get("MIDDLEBOX_STATE_DIR", "/run/middlebox"))

SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.netfilter.nf_conntrack_tcp_be_liberal": "1",
    "net.ipv4.conf.all.rp_filter": "2",
}

SO_NETNS_COOKIE = 71


class RulesError(Exception):
    """A failure with a message for the user (printed without traceback); `status` is the
    exit status (middlebox/io/service.py)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def rules_dir() -> pathlib.Path:
    for cand in (
        pathlib.Path(os.environ.get("MIDDLEBOX_RULES_DIR", "")),
        pathlib.Path(__file__).resolve().parents[2] / "rules",
        pathlib.Path(sys.prefix) / "share" / "middlebox" / "rules",
    ):
        if str(cand) and (cand / "middlebox.nft").is_file():
            return cand
    raise RulesError("cannot find the shipped rulesets (rules/middlebox.nft); set MIDDLEBOX_RULES_DIR")


# -- helpers -----------------------------------------------------------------------------


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RulesError(f"{argv[0]} not found: install nftables/iptables") from None


def _sysctl_path(key: str) -> pathlib.Path:
    return pathlib.Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str | None:
    try:
        return _sysctl_path(key).read_text().strip()
    except FileNotFoundError:
        return None


def write_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(f"{value}\n")


def netns_id() -> str:
    """A key for the current network namespace that is never reused (SO_NETNS_COOKIE)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            cookie = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        return "cookie-" + int.from_bytes(cookie, "little").to_bytes(8, "big").hex()
    except OSError:
        return "ino-" + str(os.stat("/proc/thread-self/ns/net").st_ino)


def state_path() -> pathlib.Path:
    return STATE_DIR / f"{netns_id()}.json"


def interface_indexes(names: list[str]) -> dict[str, int]:
    """ifindex of each name in the current namespace; RulesError for unknown ones."""
    from pyroute2 import IPRoute

    out = {}
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise RulesError(f"unknown interface {name!r} in this network namespace")
            out[name] = found[0]
    return out


# -- backends ----------------------------------------------------------------------------


def nft_queue_works() -> tuple[bool, str]:
    """Try loading a `queue` rule in a throw-away table (regular chain, no hook)."""
    if shutil.which("nft") is None:
        return False, "nft not installed"
    probe = f"middlebox_probe_{os.getpid()}"
    r = _run(["nft", "-f", "-"], input=(
        f"table inet {probe} {{\n chain c {{\n  meta l4proto tcp queue num 0 bypass\n }}\n}}\n"))
    _run(["nft", "delete", "table", "inet", probe])
    if r.returncode == 0:
        return True, "nft native queue works"
    reason = (r.stderr.strip().splitlines() or ["failed"])[0]
    return False, f"nft native queue unavailable ({reason})"


def nft_render(queue: int, mark: int, ifaces: list[str], uplink_addrs=(),
               join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT) -> str:
    body = (rules_dir() / "middlebox.nft").read_text()
    names = ", ".join(json.dumps(i) for i in ifaces)
    text = (f"define queue_num = {queue}\ndefine inject_mark = {mark:#x}\n"
            f"define guest_ifaces = {{ {names} }}\n"
            f"define join_ports = {join_ports[0]}-{join_ports[1]}\n{body}")
    for version in (4, 6):
        addrs = [a for a in uplink_addrs if (":" in a) == (version == 6)]
        if addrs:
            text += f"add element inet {NFT_TABLE} uplink{version} {{ {', '.join(addrs)} }}\n"
    return text


def nft_replacing(text: str) -> str:
    """`text` made to replace our table in the same transaction (`nft -f` applies all or
    none; `table` makes it if missing, so that `delete` cannot fail)."""
    return f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n{text}"


def nft_installed() -> bool:
    return _run(["nft", "list", "table", "inet", NFT_TABLE]).returncode == 0 if shutil.which("nft") else False


def nft_install(queue: int, mark: int, ifaces: list[str], uplink_addrs=(),
                join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT) -> None:
    """One transaction replaces any previous copy: no packet meets a moment without the rules
    (one of a converting connection would pass unconverted, a join's reach the stack)."""
    r = _run(["nft", "-f", "-"], input=nft_replacing(nft_render(queue, mark, ifaces, uplink_addrs,
                                                                join_ports)))
    if r.returncode != 0:
        raise RulesError(f"nft failed: {r.stderr.strip()}")


def nft_remove() -> bool:
    if not nft_installed():
        return False
    _run(["nft", "delete", "table", "inet", NFT_TABLE])
    return True


def nft_show() -> str:
    return _run(["nft", "list", "table", "inet", NFT_TABLE]).stdout


def xt_render(queue: int, mark: int, ifaces: list[str], uplink_addrs=(),
              join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT, jumps=frozenset()) -> str:
    """The ruleset for one family: `uplink_addrs` are the uplink addresses of that family
    (none: the MIDDLEBOX_JOIN lines are left out); `jumps`: the (table, hook, chain) jumps
    already there (a previous install), not added again."""
    out = []
    table = ""
    for line in (rules_dir() / "middlebox.xtables").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("*"):
            table = line[1:].strip()
        if XT_JOIN_CHAIN in line and not uplink_addrs:
            continue
        w = line.split()
        if len(w) == 5 and w[0] == "-I" and w[3] == "-j" and (table, w[1], w[4]) in jumps:
            continue
        line = line.replace("@QUEUE@", str(queue)).replace("@MARK@", f"{mark:#x}")
        line = line.replace("@JOIN_PORTS@", f"{join_ports[0]}:{join_ports[1]}")
        if "@IFACE@" in line:
            out.extend(line.replace("@IFACE@", _ifaces.xt_name(i)) for i in ifaces)
        elif "@UPLINK@" in line:
            out.extend(line.replace("@UPLINK@", a) for a in uplink_addrs)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


XT_TOOLS = (("iptables", "iptables-restore"), ("ip6tables", "ip6tables-restore"))


def xt_installed() -> bool:
    return any(_run([tool, "-t", "mangle", "-S", XT_CHAIN]).returncode == 0
               for tool, _ in XT_TOOLS if shutil.which(tool))


XT_CHAINS = (("mangle", XT_CHAIN, "FORWARD"), ("mangle", XT_JOIN_CHAIN, "INPUT"),
             ("mangle", XT_PRE_CHAIN, "PREROUTING"), ("raw", XT_RAW_CHAIN, "OUTPUT"))


def xt_install(queue: int, mark: int, ifaces: list[str], uplink_addrs=(),
               join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT) -> None:
    """Replaces any previous copy without a moment without the rules (one of a converting
    connection's packets would pass unconverted, a join's reach the stack, which resets it:
    measured, an upload reset by a reinstall mid-transfer): `restore --noflush` flushes and
    refills each declared chain in one commit per table, and the jumps already there stay."""
    for tool, restore in XT_TOOLS:
        addrs = [a for a in uplink_addrs if (":" in a) == (tool == "ip6tables")]
        jumps = frozenset((table, hook, chain) for table, chain, hook in XT_CHAINS
                          if _run([tool, "-t", table, "-C", hook, "-j", chain]).returncode == 0)
        text = xt_render(queue, mark, ifaces, addrs, join_ports, jumps)
        r = _run([restore, "--noflush"], input=text)
        if r.returncode != 0:
            raise RulesError(f"{restore} failed: {r.stderr.strip()}")
        if not addrs:  # (a previous install's, with uplinks of this family)
            _xt_drop_chain(tool, "mangle", XT_JOIN_CHAIN, "INPUT")


def _xt_drop_chain(tool: str, table: str, chain: str, hook: str) -> bool:
    """Remove `chain` and its jumps from `hook`; False when it is not there."""
    if _run([tool, "-t", table, "-S", chain]).returncode != 0:
        return False
    for _ in range(100):
        if _run([tool, "-t", table, "-D", hook, "-j", chain]).returncode != 0:
            break
    _run([tool, "-t", table, "-F", chain])
    r = _run([tool, "-t", table, "-X", chain])
    if r.returncode != 0:
        raise RulesError(f"{tool}: cannot delete chain {chain}: {r.stderr.strip()}")
    return True


def xt_remove() -> bool:
    found = False
    for tool, _ in XT_TOOLS:
        if shutil.which(tool) is None:
            continue
        for table, chain, hook in XT_CHAINS:
            found = _xt_drop_chain(tool, table, chain, hook) or found
    return found


def xt_show() -> str:
    out = []
    for tool, _ in XT_TOOLS:
        r = _run([tool, "-t", "mangle", "-S", XT_CHAIN])
        if r.returncode == 0:
            out.append(f"# {tool} -t mangle\n" + r.stdout)
            r = _run([tool, "-t", "mangle", "-S", XT_JOIN_CHAIN])
            if r.returncode == 0:
                out.append(r.stdout)
            r = _run([tool, "-t", "raw", "-S", XT_RAW_CHAIN])
            if r.returncode == 0:
                out.append(f"# {tool} -t raw\n" + r.stdout)
    return "".join(out)


# -- what is installed -------------------------------------------------------------------


@dataclass
class Installed:
    backend: str | None = None  # "nft" | "xtables" | None
    queue: int | None = None
    mark: int | None = None
    guest_ifaces: list[str] = field(default_factory=list)
    text: str = ""


def installed() -> Installed:
    """Read the rules installed in the current namespace (the kernel is the truth)."""
    if shutil.which("nft") and nft_installed():
        text = nft_show()
        ifaces: list[str] = []
        for m in re.finditer(r'[io]ifname (\{[^}]*\}|"[^"]*"|\S+)', text):
            for name in re.findall(r'"([^"]+)"|([^\s{},"]+)', m.group(1)):
                n = name[0] or name[1]
                if n not in ifaces:
                    ifaces.append(n)
        q = re.search(r"queue (?:flags \S+ )?(?:to|num) (\d+)", text)
        mk = re.search(r"meta mark (0x[0-9a-f]+)", text)
        return Installed("nft", int(q.group(1)) if q else None,
                         int(mk.group(1), 16) if mk else None, ifaces, text)
    if xt_installed():
        text = xt_show()
        ifaces = []
        for m in re.finditer(r"-[io] (\S+)", text):
            name = _ifaces.from_xt(m.group(1))  # vnet+ -> vnet*
            if name not in ifaces:
                ifaces.append(name)
        q = re.search(r"--queue-num (\d+)", text)
        mk = re.search(r"--mark (0x[0-9a-f]+)", text)
        return Installed("xtables", int(q.group(1)) if q else None,
                         int(mk.group(1), 16) if mk else None, ifaces, text)
    return Installed()


def holds_mptcp(inst: Installed) -> bool:
    """Do the installed rules queue a peer's MPTCP-carrying segments towards a guest without
    bypass (held while no daemon is bound: core/orphans.py)? Rules installed by a version
    before that do not."""
    return "tcp option mptcp exists" in inst.text or "--tcp-option 30" in inst.text


# -- commands ----------------------------------------------------------------------------


def _require_root() -> None:
    from middlebox.io.service import EXIT_NOPERM, missing_capabilities

    if missing_capabilities(("CAP_NET_ADMIN",)):
        raise RulesError("missing CAP_NET_ADMIN (netfilter rules and sysctls need it): run as "
                         "root", EXIT_NOPERM)


def _ensure_conntrack_sysctl() -> None:
    if read_sysctl("net.netfilter.nf_conntrack_tcp_be_liberal") is None:
        _run(["modprobe", "nf_conntrack"]) if shutil.which("modprobe") else None


def merge_port_ranges(text: str, lo: int, hi: int) -> str:
    """A port list in the sysctl's syntax ("8080,61000-61999") with [lo, hi] added."""
    ranges = [(lo, hi)]
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        a, _, b = part.partition("-")
        ranges.append((int(a), int(b or a)))
    ranges.sort()
    merged = [list(ranges[0])]
    for a, b in ranges[1:]:
        if a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in merged)


def _state() -> dict:
    path = state_path()
    return json.loads(path.read_text()) if path.exists() else {"previous": {}}


def _write_state(state: dict) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1))


def installed_uplinks() -> tuple[list[_uplinks.ResolvedUplink], tuple[int, int] | None]:
    """The uplinks recorded by `rules install --uplink` here (as resolved then, with their
    tables) and the join port range (None without uplinks)."""
    state = _state()
    ups = [_uplinks.ResolvedUplink.from_dict(d) for d in state.get("uplinks") or ()]
    jp = state.get("join_ports")
    return ups, (tuple(jp) if ups and jp else None)


def installed_companion() -> int | None:
    """The companion queue `rules install` recorded here (the netlink backend re-queues
    truncated and oversized super-packets to it), None when nothing is installed."""
    value = _state().get("companion_queue")
    return value if isinstance(value, int) else None


def _iproute():
    from pyroute2 import IPRoute

    return IPRoute()


def install(queue: int, ifaces: list[str], backend: str = "auto", mark: int = INJECT_MARK,
            log=print, uplinks=(), join_ports: tuple[int, int] = JOIN_PORTS_DEFAULT,
            companion_queue: int | None = None) -> Installed:
    """Load the ruleset, set the sysctls; with `uplinks` (specs) also their policy routing,
    the join-port queue rule and the reserved ports. Replaces a previous install."""
    _require_root()
    if not ifaces:
        raise RulesError("at least one --guest-iface is needed (or guest_iface in the config "
                         "file)", 2)
    if not 0 <= queue <= 65535:
        raise RulesError("--queue must be 0..65535")
    for name in ifaces:  # names must exist (typos); patterns (vnet*) may match nothing yet
        try:
            _ifaces.check(name)
        except ValueError as e:
            raise RulesError(f"--guest-iface: {e}", 2) from None
    interface_indexes([i for i in ifaces if not _ifaces.is_pattern(i)])
    hint = _ifaces.bridge_port_hint(ifaces)
    if hint:
        log(f"warning: {hint}")
    old_uplinks, _ = installed_uplinks()
    try:
        lo, hi = join_ports
        if not 1024 <= lo <= hi <= 65535:
            raise _uplinks.UplinkError("--join-ports must be a range within 1024-65535")
        # (not the tables of the installed uplinks, nor of an install that did not finish)
        ours = {u.table for u in old_uplinks} | {d.get("table") for d in _state().get("leftover") or ()}
        resolved = _uplinks.resolve(uplinks, need_gateway=True, exclude_tables=ours) if uplinks else []
    except _uplinks.UplinkError as e:
        raise RulesError(str(e)) from None
    uplink_addrs = [a for u in resolved for a in (u.addr4, u.addr6) if a]

    if backend == "auto":
        ok, why = nft_queue_works()
        backend = "nft" if ok else "xtables"
        if not ok:
            log(f"{why}: falling back to xtables NFQUEUE")
    if backend == "nft":
        xt_remove()
        nft_install(queue, mark, ifaces, uplink_addrs, join_ports)
    else:
        nft_remove()
        xt_install(queue, mark, ifaces, uplink_addrs, join_ports)

    _ensure_conntrack_sysctl()
    path = state_path()
    state = json.loads(path.read_text()) if path.exists() else {"previous": {}}
    previous: dict[str, str | None] = state["previous"]
    for key, value in SYSCTLS.items():
        current = read_sysctl(key)
        if current is None:
            log(f"sysctl {key} not present here: skipped")
            continue
        previous.setdefault(key, current)
        if current != value:
            write_sysctl(key, value)
    state.update(backend=backend, queue=queue, mark=mark, guest_ifaces=ifaces)
    # the netlink backend's companion queue (no rule: its verdicts name it) and no fraglist GRO
    state["companion_queue"] = (companion_queue if companion_queue is not None
                                else queue + 1 if queue < 65535 else queue - 1)
    gro_list = set(state.get("rx_gro_list_was_on") or ()) | set(_offloads.gro_list_off(log))
    state["rx_gro_list_was_on"] = sorted(gro_list)
    _install_uplinks(state, old_uplinks, resolved, join_ports, log)
    return installed()


def _install_uplinks(state: dict, old: list, resolved: list, join_ports, log) -> None:
    """The uplinks' part of install: the reserved join ports and the policy routing, the
    previous install's undone first; the state file is written before and after."""
    previous = state["previous"]
    current = read_sysctl(RESERVED_PORTS)
    if resolved and current is not None:
        previous.setdefault(RESERVED_PORTS, current)
        wanted = merge_port_ranges(previous[RESERVED_PORTS], *join_ports)
        if current != wanted:
            write_sysctl(RESERVED_PORTS, wanted)
    elif previous.get(RESERVED_PORTS) is not None and current != previous[RESERVED_PORTS]:
        write_sysctl(RESERVED_PORTS, previous[RESERVED_PORTS])  # no uplinks any more
    # The new routing goes in before the old goes (other tables and priorities: both route
    # the same way a moment), so that no join segment meets a moment without a route from
    # its uplink address. The state names what is there at each step (a crash in between
    # leaves nothing `rules remove` does not find: "leftover").
    state["uplinks"] = [u.as_dict() for u in old]
    # (an earlier install that did not finish left its old routing: it goes too, or its
    # tables and rules would be named nowhere once "leftover" is written over)
    gone = [_uplinks.ResolvedUplink.from_dict(d) for d in state.get("leftover") or ()] + list(old)
    _write_state(state)
    with _iproute() as ipr:
        try:
            _uplinks.install_routing(ipr, resolved)
        except _uplinks.UplinkError as e:
            raise RulesError(str(e)) from None
        state["uplinks"] = [u.as_dict() for u in resolved]
        state["join_ports"] = list(join_ports) if resolved else None
        state["leftover"] = [u.as_dict() for u in gone]
        _write_state(state)
        for u in gone:
            _uplinks.remove_routing(ipr, u)
    state.pop("leftover")
    _write_state(state)
    for u in resolved:
        log(f"uplink {u.describe()}")
        if not u.up:
            log(f"uplink {u.name} is down: its routes are added when it comes up, by a running "
                "`middlebox run` (the kernel refuses routes through a down link)")


def remove(log=print) -> bool:
    """Remove rules and restore sysctls; False when nothing was installed."""
    _require_root()
    found = nft_remove() if shutil.which("nft") else False
    found = xt_remove() or found
    path = state_path()
    if path.exists():
        found = True
        state = json.loads(path.read_text())
        if state.get("uplinks") or state.get("leftover"):
            with _iproute() as ipr:
                for d in state.get("leftover") or ():  # (an install that did not finish)
                    _uplinks.remove_routing(ipr, _uplinks.ResolvedUplink.from_dict(d))
                for d in state.get("uplinks") or ():
                    _uplinks.remove_routing(ipr, _uplinks.ResolvedUplink.from_dict(d))
                    log(f"removed the policy routing of uplink {d.get('name')}")
        for key, value in reversed(list(state.get("previous", {}).items())):
            if value is not None and read_sysctl(key) is not None and read_sysctl(key) != value:
                write_sysctl(key, value)
                log(f"restored {key}={value}")
        _offloads.gro_list_restore(state.get("rx_gro_list_was_on") or [], log)
        path.unlink()
    return found


def show() -> str:
    _require_root()
    inst = installed()
    lines = []
    if inst.backend is None:
        lines.append("rules: not installed")
    else:
        lines.append(f"rules: {inst.backend}, queue {inst.queue}, mark {inst.mark:#x}"
                     if inst.mark is not None else f"rules: {inst.backend}, queue {inst.queue}")
        lines.append("guest interfaces: " + " ".join(inst.guest_ifaces))
        if installed_companion() is not None:
            lines.append(f"companion queue (netlink backend): {installed_companion()}")
    path = state_path()
    if path.exists():
        prev = json.loads(path.read_text()).get("previous", {})
        lines.append("sysctls (now, before install):")
        for key in SYSCTLS:
            lines.append(f"  {key} = {read_sysctl(key)} (was {prev.get(key)})")
        ups, join_ports = installed_uplinks()
        if ups:
            lines.append("uplinks (as installed; now):")
            with _iproute() as ipr:
                for u in ups:
                    lines.append(f"  {u.describe()}; now: {_uplinks.live_status(ipr, u)}")
            lines.append(f"join ports: {join_ports[0]}-{join_ports[1]}")
            lines.append(f"  {RESERVED_PORTS} = {read_sysctl(RESERVED_PORTS)} "
                         f"(was {prev.get(RESERVED_PORTS)!r})")
        else:
            lines.append("uplinks: none")
    if inst.text:
        lines.append(inst.text.rstrip())
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("install", help="load the ruleset and set the sysctls (idempotent)")
    p.add_argument("--queue", type=int, default=QUEUE_DEFAULT, help="NFQUEUE number (default 0)")
    p.add_argument("--guest-iface", action="append", default=[], metavar="IF",
                   help="guest-facing interface, a name (virbr0: a bridge, for the guests behind "
                        "it) or a pattern with a trailing * (vnet*: interfaces that appear later "
                        "are covered); repeat for several; required here or in the config file")
    p.add_argument("--backend", choices=("auto", "nft", "xtables"), default="auto",
                   help="auto: nft if its native queue works, else xtables NFQUEUE")
    p.add_argument("--mark", type=lambda s: int(s, 0), default=INJECT_MARK,
                   help=f"mark of injected packets, never queued (default {INJECT_MARK:#x})")
    p.add_argument("--uplink", action="append", default=[], metavar="IFACE[,gw=ADDR][,backup][,cost=N]",
                   type=_uplinks.spec_arg,
                   help="an uplink extra subflows leave by (repeat; ids 1..n in this order): "
                        "source policy routing for its primary IPv4/IPv6 address via gw (default: "
                        "the next hop of a default route via IFACE in any table), and its "
                        "packets in the join port range queued to the daemon")
    p.add_argument("--join-ports", type=_uplinks.port_range_arg, default=JOIN_PORTS_DEFAULT,
                   metavar="LO-HI",
                   help="local ports of extra subflows, added to net.ipv4.ip_local_reserved_ports "
                        f"(default {JOIN_PORTS_DEFAULT[0]}-{JOIN_PORTS_DEFAULT[1]}; used with --uplink)")
    p.add_argument("--companion-queue", type=int, default=None, metavar="N",
                   help="queue without GSO mode that the daemon's netlink backend re-queues "
                        "truncated super-packets to, segmented by the kernel (default --queue + 1)")
    sub.add_parser("remove", help="remove the rules and the uplinks' policy routing, restore the sysctls")
    sub.add_parser("show", help="print what is installed")


def main(args: argparse.Namespace) -> int:
    try:
        if args.rules_command == "install":
            inst = install(args.queue, args.guest_iface, args.backend, args.mark,
                           uplinks=args.uplink, join_ports=args.join_ports,
                           companion_queue=args.companion_queue)
            print(f"installed: {inst.backend}, queue {inst.queue}, "
                  f"guest interfaces {' '.join(inst.guest_ifaces)}")
        elif args.rules_command == "remove":
            print("removed" if remove() else "nothing installed")
        else:
            print(show())
        return 0
    except RulesError as e:
        print(f"middlebox rules: {e}", file=sys.stderr)
        return e.status
    except (OSError, subprocess.SubprocessError) as e:
        print(f"middlebox rules: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="middlebox rules", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
