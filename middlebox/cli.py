"""Command line: `middlebox {run,rules,inspect,demo,version}`.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`main(args) -> int` (the exit status). This file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from middlebox import __version__

# (name, module, one-line help)
SUBCOMMANDS = (
    ("run", "middlebox.io.daemon", "convert packets from an NFQUEUE until SIGINT/SIGTERM"),
    ("rules", "middlebox.io.rules", "install, remove or show the netfilter rules and sysctls"),
    ("inspect", "middlebox.analysis.inspect", "judge the MPTCP connections in a pcap/pcapng capture"),
    ("demo", "middlebox.demo", "build a test topology in namespaces and show a conversion"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="middlebox",
        description="Convert plain TCP into Multipath TCP (RFC 8684) on the wire, and back.",
    )
    parser.add_argument("--version", action="version", version=f"middlebox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, modname, help_ in SUBCOMMANDS:
        module = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=(module.__doc__ or help_).strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
