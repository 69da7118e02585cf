"""Command line: `middlebox {run,rules,flows,stats,config,inspect,demo}`.

Each subcommand lives in its own module (or `module:Object`) exposing `add_arguments(parser)`
and `main(args) -> int` (the exit status). This file only wires them together, and merges
the config file (middlebox/io/config.py) into the options of the commands that take
`--config` before they run. Exit statuses: middlebox/io/service.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from middlebox import __version__
from middlebox.io import config, service

# (name, module, one-line help)
SUBCOMMANDS = (
    ("run", "middlebox.io.daemon", "convert packets from an NFQUEUE until SIGINT/SIGTERM"),
    ("rules", "middlebox.io.rules", "install, remove or show the netfilter rules and sysctls"),
    ("flows", "middlebox.io.control:FlowsCommand", "list the flows the running daemon converts"),
    ("stats", "middlebox.io.control:StatsCommand", "print every counter of the running daemon"),
    ("config", "middlebox.io.config", "validate a config file and print the effective settings"),
    ("inspect", "middlebox.analysis.inspect", "judge the MPTCP connections in a pcap/pcapng capture"),
    ("demo", "middlebox.demo", "build a test topology in namespaces and show a conversion"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="middlebox",
        description="Convert plain TCP into Multipath TCP (RFC 8684) on the wire, and back.",
        epilog="Settings: /etc/middlebox/middlebox.toml (`middlebox config check`). Exit "
               "statuses: 0 done, 1 failure, 2 usage or config error, 3 missing capability "
               "(CAP_NET_ADMIN/CAP_NET_RAW), 4 missing kernel support, 5 queue already bound; "
               "inspect: 1 violation, 2 unreadable capture.",
    )
    parser.add_argument("--version", action="version", version=f"middlebox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, modname, help_ in SUBCOMMANDS:
        modname, _, attr = modname.partition(":")
        module = importlib.import_module(modname)
        module = getattr(module, attr) if attr else module
        p = sub.add_parser(name, help=help_, description=(module.__doc__ or help_).strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
        if name in CONFIG_COMMANDS:
            for q in CONFIG_COMMANDS[name](p):
                config.add_argument(q)
    return parser


def _rules_actions(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [q for a in p._actions if isinstance(a, argparse._SubParsersAction)
            for q in a.choices.values()]


# the commands that take --config (and so read /etc/middlebox/middlebox.toml by default)
CONFIG_COMMANDS = {"run": lambda p: [p], "rules": _rules_actions, "flows": lambda p: [p],
                   "stats": lambda p: [p]}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config.apply(build_parser, args, argv)
    except config.ConfigError as e:
        service.error_line(f"middlebox {args.command}", str(e))
        return e.status
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
