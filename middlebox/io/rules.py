"""Install, remove or show the netfilter rules and sysctls the data path needs.

`middlebox rules install --queue 0 --guest-iface IF [--guest-iface IF ...]` loads the shipped
ruleset (rules/middlebox.nft, or rules/middlebox.xtables where nft's native `queue` is
missing) for IPv4 and IPv6 in the current network namespace and sets:

* net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1 (the box routes guest traffic);
* net.netfilter.nf_conntrack_tcp_be_liberal=1 (conntrack sees shifted sequence numbers:
  strict tracking marks them invalid, LESSONS.md trap 7);
* net.ipv4.conf.all.rp_filter=2 (loose: subflows use asymmetric paths).

The previous sysctl values are recorded (in /run/middlebox/, keyed by the namespace cookie)
and restored by `rules remove`. Install is idempotent (a second install replaces the rules
and keeps the first record); remove undoes everything and is idempotent too.
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

QUEUE_DEFAULT = 0
#: SO_MARK of the packets the daemon injects; the ruleset lets them pass unqueued.
INJECT_MARK = 0x4D427801
NFT_TABLE = "middlebox"
XT_CHAIN = "MIDDLEBOX"
STATE_DIR = pathlib.Path(os.environ.get("MIDDLEBOX_STATE_DIR", "/run/middlebox"))

SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.netfilter.nf_conntrack_tcp_be_liberal": "1",
    "net.ipv4.conf.all.rp_filter": "2",
}

SO_NETNS_COOKIE = 71


class RulesError(Exception):
    """A failure with a message for the user (printed without traceback)."""


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


def nft_render(queue: int, mark: int, ifaces: list[str]) -> str:
    body = (rules_dir() / "middlebox.nft").read_text()
    names = ", ".join(json.dumps(i) for i in ifaces)
    return (f"define queue_num = {queue}\ndefine inject_mark = {mark:#x}\n"
            f"define guest_ifaces = {{ {names} }}\n{body}")


def nft_installed() -> bool:
    return _run(["nft", "list", "table", "inet", NFT_TABLE]).returncode == 0 if shutil.which("nft") else False


def nft_install(queue: int, mark: int, ifaces: list[str]) -> None:
    nft_remove()
    r = _run(["nft", "-f", "-"], input=nft_render(queue, mark, ifaces))
    if r.returncode != 0:
        raise RulesError(f"nft failed: {r.stderr.strip()}")


def nft_remove() -> bool:
    if not nft_installed():
        return False
    _run(["nft", "delete", "table", "inet", NFT_TABLE])
    return True


def nft_show() -> str:
    return _run(["nft", "list", "table", "inet", NFT_TABLE]).stdout


def xt_render(queue: int, mark: int, ifaces: list[str]) -> str:
    out = []
    for line in (rules_dir() / "middlebox.xtables").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        line = line.replace("@QUEUE@", str(queue)).replace("@MARK@", f"{mark:#x}")
        if "@IFACE@" in line:
            out.extend(line.replace("@IFACE@", i) for i in ifaces)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


XT_TOOLS = (("iptables", "iptables-restore"), ("ip6tables", "ip6tables-restore"))


def xt_installed() -> bool:
    return any(_run([tool, "-t", "mangle", "-S", XT_CHAIN]).returncode == 0
               for tool, _ in XT_TOOLS if shutil.which(tool))


def xt_install(queue: int, mark: int, ifaces: list[str]) -> None:
    xt_remove()
    text = xt_render(queue, mark, ifaces)
    for tool, restore in XT_TOOLS:
        r = _run([restore, "--noflush"], input=text)
        if r.returncode != 0:
            raise RulesError(f"{restore} failed: {r.stderr.strip()}")


def xt_remove() -> bool:
    found = False
    for tool, _ in XT_TOOLS:
        if shutil.which(tool) is None or _run([tool, "-t", "mangle", "-S", XT_CHAIN]).returncode != 0:
            continue
        found = True
        for _ in range(100):
            if _run([tool, "-t", "mangle", "-D", "FORWARD", "-j", XT_CHAIN]).returncode != 0:
                break
        _run([tool, "-t", "mangle", "-F", XT_CHAIN])
        r = _run([tool, "-t", "mangle", "-X", XT_CHAIN])
        if r.returncode != 0:
            raise RulesError(f"{tool}: cannot delete chain {XT_CHAIN}: {r.stderr.strip()}")
    return found


def xt_show() -> str:
    out = []
    for tool, _ in XT_TOOLS:
        r = _run([tool, "-t", "mangle", "-S", XT_CHAIN])
        if r.returncode == 0:
            out.append(f"# {tool} -t mangle\n" + r.stdout)
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
            if m.group(1) not in ifaces:
                ifaces.append(m.group(1))
        q = re.search(r"--queue-num (\d+)", text)
        mk = re.search(r"--mark (0x[0-9a-f]+)", text)
        return Installed("xtables", int(q.group(1)) if q else None,
                         int(mk.group(1), 16) if mk else None, ifaces, text)
    return Installed()


# -- commands ----------------------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise RulesError("must be root (netfilter rules and sysctls need CAP_NET_ADMIN)")


def _ensure_conntrack_sysctl() -> None:
    if read_sysctl("net.netfilter.nf_conntrack_tcp_be_liberal") is None:
        _run(["modprobe", "nf_conntrack"]) if shutil.which("modprobe") else None


def install(queue: int, ifaces: list[str], backend: str = "auto", mark: int = INJECT_MARK,
            log=print) -> Installed:
    _require_root()
    if not ifaces:
        raise RulesError("at least one --guest-iface is needed")
    if not 0 <= queue <= 65535:
        raise RulesError("--queue must be 0..65535")
    interface_indexes(ifaces)

    if backend == "auto":
        ok, why = nft_queue_works()
        backend = "nft" if ok else "xtables"
        if not ok:
            log(f"{why}: falling back to xtables NFQUEUE")
    if backend == "nft":
        xt_remove()
        nft_install(queue, mark, ifaces)
    else:
        nft_remove()
        xt_install(queue, mark, ifaces)

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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1))
    return installed()


def remove(log=print) -> bool:
    """Remove rules and restore sysctls; False when nothing was installed."""
    _require_root()
    found = nft_remove() if shutil.which("nft") else False
    found = xt_remove() or found
    path = state_path()
    if path.exists():
        found = True
        state = json.loads(path.read_text())
        for key, value in reversed(list(state.get("previous", {}).items())):
            if value is not None and read_sysctl(key) is not None and read_sysctl(key) != value:
                write_sysctl(key, value)
                log(f"restored {key}={value}")
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
    path = state_path()
    if path.exists():
        prev = json.loads(path.read_text()).get("previous", {})
        lines.append("sysctls (now, before install):")
        for key in SYSCTLS:
            lines.append(f"  {key} = {read_sysctl(key)} (was {prev.get(key)})")
    if inst.text:
        lines.append(inst.text.rstrip())
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("install", help="load the ruleset and set the sysctls (idempotent)")
    p.add_argument("--queue", type=int, default=QUEUE_DEFAULT, help="NFQUEUE number (default 0)")
    p.add_argument("--guest-iface", action="append", default=[], metavar="IF", required=True,
                   help="guest-facing interface (repeat for several)")
    p.add_argument("--backend", choices=("auto", "nft", "xtables"), default="auto",
                   help="auto: nft if its native queue works, else xtables NFQUEUE")
    p.add_argument("--mark", type=lambda s: int(s, 0), default=INJECT_MARK,
                   help=f"mark of injected packets, never queued (default {INJECT_MARK:#x})")
    sub.add_parser("remove", help="remove the rules and restore the sysctls")
    sub.add_parser("show", help="print what is installed")


def main(args: argparse.Namespace) -> int:
    try:
        if args.rules_command == "install":
            inst = install(args.queue, args.guest_iface, args.backend, args.mark)
            print(f"installed: {inst.backend}, queue {inst.queue}, "
                  f"guest interfaces {' '.join(inst.guest_ifaces)}")
        elif args.rules_command == "remove":
            print("removed" if remove() else "nothing installed")
        else:
            print(show())
        return 0
    except RulesError as e:
        print(f"middlebox rules: {e}", file=sys.stderr)
        return 1
    except (OSError, subprocess.SubprocessError) as e:
        print(f"middlebox rules: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="middlebox rules", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
