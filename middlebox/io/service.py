"""What makes the daemon a good citizen of a Debian host: exit statuses, capabilities,
systemd's notify protocol and journald-friendly log lines.

Exit statuses of every `middlebox` command (also in README.md, "Exit statuses"):

| status | meaning |
|---|---|
| 0 | done |
| 1 | any other failure (a message says which) |
| 2 | usage or configuration error: a bad option, a config key unknown, of the wrong type or impossible; nothing was touched |
| 3 | a capability is missing (CAP_NET_ADMIN, CAP_NET_RAW) |
| 4 | the kernel lacks what is needed (a module such as nfnetlink_queue, a netfilter target) |
| 5 | the queue is already bound (another daemon runs on it in this network namespace) |

`inspect` keeps its own: 1 = a violation was found, 2 = the capture cannot be read.

Logging: under systemd (stderr is the journal stream named by `$JOURNAL_STREAM`) a line is
`<N>message` with the syslog priority N and no timestamp (journald stamps it); in a terminal
it is `middlebox run: message`, with `warning: ` / `error: ` before the message where it is one.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOPERM = 3
EXIT_NOKERNEL = 4
EXIT_BUSY = 5

# linux/capability.h
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}

# syslog priorities (sd-daemon.h SD_ERR ... SD_DEBUG) by logging level
_PRIORITY = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def effective_capabilities(status_text: str | None = None) -> int:
    """The CapEff bit mask of this process (from /proc/self/status)."""
    if status_text is None:
        with open("/proc/self/status") as f:
            status_text = f.read()
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_capabilities(names=("CAP_NET_ADMIN", "CAP_NET_RAW"), status_text: str | None = None) -> list[str]:
    caps = effective_capabilities(status_text)
    return [n for n in names if not caps >> CAPABILITIES[n] & 1]


def under_journal(stream=None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd gave us ($JOURNAL_STREAM is
    `device:inode` of it; a child whose stderr was redirected keeps the variable, hence the
    comparison)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


class _Formatter(logging.Formatter):
    def __init__(self, prog: str, journal: bool) -> None:
        super().__init__()
        self.prog, self.journal = prog, journal

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if self.journal:
            # one entry per line: continuation lines keep the priority
            prio = priority(record.levelno)
            return "\n".join(f"<{prio}>{line}" for line in msg.splitlines() or [""])
        tag = "error: " if record.levelno >= logging.ERROR else (
            "warning: " if record.levelno >= logging.WARNING else "")
        return f"{self.prog}: {tag}{msg}"


def setup_logging(prog: str, level: int = logging.INFO, stream=None) -> bool:
    """Log to stderr in the journal's format or the terminal's; returns True for the journal."""
    stream = sys.stderr if stream is None else stream
    journal = under_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(prog, journal))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return journal


def error_line(prog: str, message: str, stream=None) -> None:
    """The one line a failing command prints (priority 3 under the journal)."""
    stream = sys.stderr if stream is None else stream
    if under_journal(stream):
        print(f"<3>{message}", file=stream, flush=True)
    else:
        print(f"{prog}: {message}", file=stream, flush=True)


def sd_notify(message: str, env: dict | None = None) -> bool:
    """Send `message` (e.g. "READY=1") to $NOTIFY_SOCKET; False when there is none or it fails.
    The datagram protocol of sd_notify(3): a path, or `@name` for the abstract namespace."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path[0] == "@":
        path = "\0" + path[1:]
    elif path[0] != "/":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def queue_failure(queue: int, exc: BaseException, proc_text: str | None = None,
                  status_text: str | None = None) -> tuple[str, int]:
    """(message, exit status) for a queue that cannot be opened or bound: already bound by
    another daemon (5), the kernel module missing (4), a capability missing (3), else 1.
    `proc_text` stands for /proc/net/netfilter/nfnetlink_queue ("" = missing; tests)."""
    path = "/proc/net/netfilter/nfnetlink_queue"
    try:
        if proc_text == "":
            raise FileNotFoundError(path)
        if proc_text is None:
            with open(path) as f:
                proc_text = f.read()
        lines = proc_text.splitlines()
    except OSError:
        return (f"queue {queue}: the kernel has no NFQUEUE support loaded ({path} is missing): "
                "modprobe nfnetlink_queue", EXIT_NOKERNEL)
    for line in lines:
        f = line.split()
        if f and f[0].isdigit() and int(f[0]) == queue:
            return (f"queue {queue} is busy: already bound in this network namespace (netlink "
                    f"portid {f[1] if len(f) > 1 else '?'}): is another `middlebox run` on it? "
                    f"(`middlebox stats --queue {queue}` asks it)", EXIT_BUSY)
    missing = missing_capabilities(status_text=status_text)
    if missing or getattr(exc, "errno", None) in (1, 13):  # EPERM, EACCES
        return (f"queue {queue}: permission denied ({exc}): binding an NFQUEUE needs "
                "CAP_NET_ADMIN", EXIT_NOPERM)
    return f"queue {queue} cannot be bound: {exc}", EXIT_FAILURE
