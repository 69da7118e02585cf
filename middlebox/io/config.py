"""Validate a config file and print the effective settings: `middlebox config check [PATH]`.

The config file (TOML, read with the standard library's `tomllib`) holds the options of
`middlebox run` and `middlebox rules install`. `run`, `rules install|remove|show`, `flows`
and `stats` take `--config PATH`; without it they read `/etc/middlebox/middlebox.toml` when
it exists (`$MIDDLEBOX_CONFIG` names another default; empty: none).

* **Keys are the long options** with `_` for `-`: `--guest-iface` is `guest_iface`,
  `--queue-maxlen` is `queue_maxlen`. They are derived from the commands' own argparse
  definitions, so every option has its key, options added later included.
  Repeatable options are lists (`guest_iface = ["virbr0", "vnet*"]`), switches booleans
  (`checksum = true`), numbers integers, choices strings or integers as on the command line.
* **Where**: a top-level key applies to every command that has the option (`queue`,
  `guest_iface` and `mark` are shared by `run` and `rules install`); a key under `[run]` or
  `[rules]` (for `rules install`) applies to that command only and wins over the top level.
  Put an option whose meaning differs between the two there (`backend`).
* **The command line overrides the file**, a repeated option included (the file's list is
  replaced, not extended).
* **Refused before anything is touched**, exit status 2, one line naming the file, the key
  and what is wrong: an unknown key, a wrong type, an impossible value (a queue number beyond
  65535, an MTU below 576, an interface pattern the kernel cannot match).

`contrib/middlebox.toml.example` documents every key (`make install` puts it in
/etc/middlebox/).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tomllib

from middlebox.io import ifaces

DEFAULT_PATH = "/etc/middlebox/middlebox.toml"
#: sections of the file -> the subcommand path whose options they hold
SECTIONS = {"run": ("run",), "rules": ("rules", "install")}
EXIT_USAGE = 2


class ConfigError(Exception):
    """A config error: one line for the user; exit status 2."""

    status = EXIT_USAGE


# -- the options, from the parsers ---------------------------------------------------------


def subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser | None:
    for name in names:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                parser = action.choices[name]
                break
        else:
            return None
    return parser


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """key -> argparse action, for every long option of `parser` a config may set."""
    out = {}
    for action in parser._actions:
        if (isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                argparse._SubParsersAction))
                or action.help == argparse.SUPPRESS or action.dest == "config"):
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            out[longs[0][2:].replace("-", "_")] = action
    return out


def section_options(root: argparse.ArgumentParser) -> dict[str, dict[str, argparse.Action]]:
    out = {}
    for section, path in SECTIONS.items():
        p = subparser(root, *path)
        out[section] = options(p) if p is not None else {}
    return out


# -- values ----------------------------------------------------------------------------------


def _range(lo: int, hi: int | None):
    def check(v):
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be {lo}..{hi}" if hi is not None else f"must be at least {lo}")
    return check


def _iface(v):
    try:
        ifaces.check(v)
    except ValueError as e:
        raise ValueError(str(e)) from None


#: impossible values, checked on the file's values and the command line's alike; per element
#: for lists. Keys of options that do not exist (yet) are skipped.
CHECKS = {
    "queue": _range(0, 65535),
    "queue_maxlen": _range(1, 0xFFFFFFFF),
    "max_flows": _range(1, 1 << 31),
    "mtu": _range(576, 65535),
    "mark": _range(0, 0xFFFFFFFF),
    "guest_iface": _iface,
    "max_subflows": _range(0, 255),
    "max_multipath_flows": _range(0, 1 << 31),
    "join_after_bytes": _range(0, 1 << 62),
    "join_after_ms": _range(0, 1 << 62),
    "repair_bytes": _range(0, 1 << 40),
    "repair_total_bytes": _range(0, 1 << 40),
    "stop_grace": _range(0, 3600),
}


def _tname(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _scalar(action: argparse.Action, v):
    """A file value for one argument of `action`, converted as the command line would."""
    t = action.type
    if isinstance(v, (list, dict)) or isinstance(v, bool):
        want = "an integer" if t is int else "a string" if t in (None, str) else "a value"
        raise ValueError(f"must be {want}, not {_tname(v)}")
    if t is int:
        if not isinstance(v, int):
            raise ValueError(f"must be an integer, not {_tname(v)} ({json.dumps(v)})")
        out = v
    elif t is float:
        if not isinstance(v, (int, float)):
            raise ValueError(f"must be a number, not {_tname(v)}")
        out = float(v)
    elif t is None or t is str:
        if not isinstance(v, str):
            raise ValueError(f"must be a string, not {_tname(v)} ({v!r})")
        out = v
    else:
        try:
            out = t(v if isinstance(v, str) else str(v))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise ValueError(f"{json.dumps(v)} is not valid: {e}") from None
    if action.choices is not None and out not in action.choices:
        raise ValueError(f"must be one of {', '.join(json.dumps(c) for c in action.choices)}, "
                         f"not {json.dumps(v)}")
    return out


def convert(action: argparse.Action, v):
    """The value `action.dest` gets for the file value `v` (ValueError: what is wrong)."""
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(v, bool):
            raise ValueError(f"must be true or false, not {_tname(v)}")
        return action.const if v else action.default
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        if not isinstance(v, list):
            raise ValueError(f"must be a list (the option repeats), not {_tname(v)}: "
                             f"write [{json.dumps(v)}]")
        out = []
        for i, item in enumerate(v):
            try:
                out.append(_scalar(action, item))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        return out
    if isinstance(action, argparse._CountAction):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("must be a count (an integer >= 0)")
        return v
    return _scalar(action, v)


def check_value(key: str, value) -> None:
    """Raise ValueError when `value` of `key` is impossible (CHECKS)."""
    check = CHECKS.get(key)
    if check is None or value is None:
        return
    for item in (value if isinstance(value, list) else [value]):
        if key == "guest_iface" or (isinstance(item, (int, float)) and not isinstance(item, bool)):
            check(item)


# -- the file --------------------------------------------------------------------------------


def default_path() -> str | None:
    env = os.environ.get("MIDDLEBOX_CONFIG")
    if env is not None:
        return env or None
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def _unknown(path: str, where: str, key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{path}: {where}{key}: unknown key{hint}; "
                       f"`middlebox config check` lists the keys")


def _meaning(action: argparse.Action):
    return (type(action), action.type, tuple(action.choices or ()), action.nargs)


def resolve(root: argparse.ArgumentParser, data: dict, path: str) -> dict[str, dict]:
    """{section: {key: (action, value, file value)}} of a parsed file; ConfigError at the
    first problem."""
    secs = section_options(root)
    every = {k for opts in secs.values() for k in opts}
    out: dict[str, dict] = {s: {} for s in secs}
    for key, v in data.items():
        if key in secs:
            if not isinstance(v, dict):
                raise ConfigError(f"{path}: {key}: must be a table ([{key}]), not {_tname(v)}")
            continue
        if key not in every:
            raise _unknown(path, "", key, every | set(secs))
        for section, opts in secs.items():
            if key in opts:
                try:
                    value = convert(opts[key], v)
                    check_value(key, value)
                except ValueError as e:
                    others = [s for s, o in secs.items() if key in o and s != section
                              and _meaning(o[key]) != _meaning(opts[key])]
                    hint = (f" (for `{' '.join(SECTIONS[section])}`, which reads it differently "
                            f"from `{' '.join(SECTIONS[others[0]])}`: put it under "
                            f"[{section}] or [{others[0]}])") if others else ""
                    raise ConfigError(f"{path}: {key}: {e}{hint}") from None
                out[section][key] = (opts[key], value, v)
    for section, opts in secs.items():
        for key, v in data.get(section, {}).items():
            if key not in opts:
                raise _unknown(path, f"[{section}] ", key, opts)
            try:
                value = convert(opts[key], v)
                check_value(key, value)
            except ValueError as e:
                raise ConfigError(f"{path}: [{section}] {key}: {e}") from None
            out[section][key] = (opts[key], value, v)
    return out


def read(root: argparse.ArgumentParser, path: str | None) -> dict[str, dict]:
    if path is None:
        return {s: {} for s in SECTIONS}
    return resolve(root, load(path), path)


# -- applying it to a parsed command line ----------------------------------------------------


def _suppress_defaults(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                _suppress_defaults(p)
        else:
            action.default = argparse.SUPPRESS


def explicit(build_parser, argv: list[str]) -> set[str]:
    """The dests the command line `argv` gives explicitly."""
    p = build_parser()
    _suppress_defaults(p)
    return set(vars(p.parse_args(argv)))


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", default=None,
                        help=f"config file (TOML; default {DEFAULT_PATH} when it exists; "
                             "the command line overrides it)")


def section_of(args: argparse.Namespace) -> str | None:
    if getattr(args, "command", None) == "run":
        return "run"
    if getattr(args, "command", None) == "rules" and getattr(args, "rules_command", None) == "install":
        return "rules"
    return None


def apply(build_parser, args: argparse.Namespace, argv: list[str] | None) -> dict[str, dict]:
    """Merge the config file into `args` (the command line wins) and check the result.
    Returns the file's resolved sections. ConfigError (status 2) on any problem."""
    if not hasattr(args, "config"):
        return {}
    argv = sys.argv[1:] if argv is None else list(argv)
    path = args.config if args.config is not None else default_path()
    if args.config is not None and args.config == "":
        path = None
    root = build_parser()
    sections = read(root, path)
    args.config_path = path
    given = explicit(build_parser, argv)
    section = section_of(args)
    if section is not None:
        for key, (action, value, _) in sections[section].items():
            if action.dest not in given:
                setattr(args, action.dest, value)
        opts = section_options(root)[section]
        for key, action in opts.items():
            if not hasattr(args, action.dest):
                continue
            try:
                check_value(key, getattr(args, action.dest))
            except ValueError as e:
                if action.dest in given:
                    raise ConfigError(f"{action.option_strings[-1]}: {e}") from None
                raise ConfigError(f"{path}: {key}: {e}") from None
    elif hasattr(args, "queue") and args.queue is None:  # flows, stats: the daemon's queue
        found = sections.get("run", {}).get("queue")
        args.queue = found[1] if found else 0
    return sections


# -- `middlebox config check` ----------------------------------------------------------------


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if v is None:
        return '""  # none'
    return json.dumps(v if isinstance(v, str) else str(v))


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def effective(root: argparse.ArgumentParser, sections: dict) -> dict[str, dict]:
    """{section: {key: (value, "file" | "default")}} for every option."""
    out = {}
    for section, opts in section_options(root).items():
        out[section] = {}
        for key, action in opts.items():
            if key in sections.get(section, {}):
                out[section][key] = (sections[section][key][2], "file")
            else:
                default = action.default
                if isinstance(default, str) and action.type not in (None, str):
                    try:
                        default = action.type(default)
                    except Exception:
                        pass
                out[section][key] = (default, "default")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("check", help="validate a config file and print the effective settings",
                       description="Validate a config file (default: "
                                   f"{DEFAULT_PATH}) and print the settings `run` and `rules "
                                   "install` would use; exit 2 with one line if it is wrong.")
    p.add_argument("path", nargs="?", metavar="PATH", help=f"the file (default {DEFAULT_PATH})")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    from middlebox.cli import build_parser

    path = args.path if args.path is not None else default_path()
    root = build_parser()
    try:
        if args.path is not None and not os.path.exists(args.path):
            raise ConfigError(f"{args.path}: cannot read: No such file or directory")
        sections = read(root, path)
    except ConfigError as e:
        print(f"middlebox config: {e}", file=sys.stderr)
        return e.status
    eff = effective(root, sections)
    if args.json:
        print(json.dumps({"path": path, "valid": True, **{
            s: {k: {"value": _jsonable(v), "from": src} for k, (v, src) in keys.items()}
            for s, keys in eff.items()}}, indent=1))
        return 0
    print(f"# {path}: valid" if path else "# no config file: the defaults")
    for section, keys in eff.items():
        print(f"\n[{section}]  # middlebox {' '.join(SECTIONS[section])}")
        width = max((len(k) for k in keys), default=0)
        for key, (v, src) in keys.items():
            if v is None:
                print(f"# {key.ljust(width - 2)} (unset)  # {src}")
                continue
            if key == "mark" and isinstance(v, int):
                shown = f"{v:#x}"
            elif isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
                shown = f'"{v[0]}-{v[1]}"'  # a range option (LO-HI)
            else:
                shown = _toml(v)
            print(f"{key.ljust(width)} = {shown}  # {src}")
    return 0
