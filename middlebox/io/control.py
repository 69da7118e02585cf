"""The daemon's control socket and its clients, `middlebox flows` and `middlebox stats`.

The daemon listens on a Unix stream socket, one per queue and network namespace:
`/run/middlebox/<netns>.q<N>.sock` (`<netns>` is the namespace's cookie, as for the rules'
record: queue numbers are per namespace, /run is not), mode 0600, and answers root (or its
own uid) only, checked with SO_PEERCRED.

Protocol: one JSON object on one line per connection, one JSON object back, then close.
Requests: `{"cmd": "flows", "all": false}`, `{"cmd": "stats"}`, `{"cmd": "ping"}`.
Replies: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`; a malformed request gets an
error reply and never disturbs the daemon. Requests are read and answered from the daemon's
loop without blocking it (replies are written by a short-lived thread); no secret ever appears
in a reply (flow views are built from a list of allowed fields, `ops.flow_view`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import struct
import sys
import threading
import time

from middlebox.io import rules

MAX_REQUEST = 4096
REQUEST_TIMEOUT = 2.0
REPLY_TIMEOUT = 10.0
EXIT_NODAEMON = 1
EXIT_NOPERM = 3


def socket_path(queue: int) -> pathlib.Path:
    return rules.STATE_DIR / f"{rules.netns_id()}.q{queue}.sock"


class ControlServer:
    """Non-blocking: `poll()` accepts, reads complete requests and answers them with
    `handler(request) -> dict`, all without waiting."""

    def __init__(self, path: pathlib.Path, handler) -> None:
        self.path = pathlib.Path(path)
        self.handler = handler
        self.pending: dict[socket.socket, tuple[bytearray, float]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()  # a socket left by a killed daemon (we hold the queue now)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                          | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            s.bind(str(self.path))
        except BaseException:
            s.close()
            raise
        finally:
            os.umask(old)
        s.listen(16)
        self.sock = s
        self.ino = os.stat(self.path).st_ino
        self.uid = os.geteuid()

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while len(self.pending) < 64:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            conn.setblocking(False)
            self.pending[conn] = (bytearray(), now + REQUEST_TIMEOUT)
        for conn, (buf, deadline) in list(self.pending.items()):
            done = False
            try:
                while True:
                    chunk = conn.recv(MAX_REQUEST)
                    if not chunk:
                        done = True
                        break
                    buf += chunk
                    if b"\n" in buf or len(buf) > MAX_REQUEST:
                        done = True
                        break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(conn)
                continue
            if done:
                del self.pending[conn]
                self._answer(conn, bytes(buf))
            elif now > deadline:
                del self.pending[conn]
                self._reply(conn, {"ok": False, "error": "no complete request within "
                                                         f"{REQUEST_TIMEOUT:g} s"})

    def _drop(self, conn: socket.socket) -> None:
        self.pending.pop(conn, None)
        conn.close()

    def _peer_allowed(self, conn: socket.socket) -> bool:
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", cred)
        except OSError:
            return False
        return uid in (0, self.uid)

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        if not self._peer_allowed(conn):
            reply = {"ok": False, "error": "permission denied: root only"}
        elif len(data) > MAX_REQUEST:
            reply = {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        else:
            try:
                request = json.loads(data.split(b"\n", 1)[0].decode())
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ValueError('a request is a JSON object with a "cmd" string')
            except (ValueError, UnicodeDecodeError) as e:
                reply = {"ok": False, "error": f"malformed request: {e}"}
            else:
                try:
                    reply = self.handler(request)
                except Exception as e:  # never kills the daemon
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        self._reply(conn, reply)

    def _reply(self, conn: socket.socket, reply: dict) -> None:
        data = (json.dumps(reply, separators=(",", ":")) + "\n").encode()

        def send() -> None:
            try:
                conn.setblocking(True)
                conn.settimeout(REPLY_TIMEOUT)
                conn.sendall(data)
            except OSError:
                pass
            finally:
                conn.close()

        try:
            sent = conn.send(data)  # a small reply fits the socket buffer: no thread needed
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.close()
            return
        if sent == len(data):
            conn.close()
            return
        data = data[sent:]
        threading.Thread(target=send, name="control-reply", daemon=True).start()

    def close(self) -> None:
        for conn in list(self.pending):
            self._drop(conn)
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.ino:  # ours, not a successor's
                self.path.unlink()
        except OSError:
            pass


# -- clients ---------------------------------------------------------------------------------


class ClientError(Exception):
    def __init__(self, message: str, status: int = EXIT_NODAEMON) -> None:
        super().__init__(message)
        self.status = status


def request(queue: int, req: dict, timeout: float = 10.0) -> dict:
    path = socket_path(queue)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(f"no daemon serves queue {queue} in this network namespace "
                              f"(no socket {path}): is `middlebox run` running?") from None
        except PermissionError:
            raise ClientError(f"permission denied on {path}: root only", EXIT_NOPERM) from None
        s.sendall((json.dumps(req) + "\n").encode())
        buf = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        raise ClientError(f"the daemon on queue {queue} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ClientError(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf.decode())
    except ValueError:
        raise ClientError(f"unreadable reply from the daemon on queue {queue}") from None
    if not reply.get("ok"):
        status = EXIT_NOPERM if "permission" in str(reply.get("error")) else 1
        raise ClientError(f"the daemon refused: {reply.get('error')}", status)
    return reply


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", type=int, default=None, metavar="N",
                        help="the daemon's NFQUEUE number (default: `queue` of the config "
                             "file, else 0)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _fmt_secs(v) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}s" if v < 600 else f"{v / 60:.0f}m"


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def format_flows(reply: dict) -> str:
    flows = reply.get("flows", [])
    lines = []
    header = ("State", "Guest", "Server", "Ver", "Token", "Age", "Idle", "Out", "In")
    rows = []
    for f in flows:
        state = f.get("state", "?") + ("/inbound" if f.get("role") == "inbound" else "")
        rows.append((state, f"{f['guest_ip_port']}", f"{f['server_ip_port']}",
                     f"v{f.get('version')}" + ("+csum" if f.get("checksum") else ""),
                     f.get("token") or "-", _fmt_secs(f.get("age")), _fmt_secs(f.get("idle")),
                     _fmt(f.get("bytes_out")), _fmt(f.get("bytes_in"))))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip())
    for f, row in zip(flows, rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        subs = f.get("subflows") or []
        if len(subs) > 1:
            for s in subs:
                parts = [f"subflow {s.get('index')}", f"uplink {s.get('uplink') or '-'}"]
                for key, label in (("state", "state"), ("bytes_out", "out"), ("bytes_in", "in")):
                    if s.get(key) is not None:
                        parts.append(f"{label} {s[key]}")
                if s.get("srtt_ms") is not None:
                    parts.append(f"rtt {s['srtt_ms']:.1f}ms")
                if s.get("rate_mbit") is not None:
                    parts.append(f"rate {s['rate_mbit']}Mbit/s")
                lines.append("\t" + " ".join(parts))
    total = reply.get("total")
    shown = "all flows" if reply.get("all") else "converting flows"
    lines.append(f"# {len(flows)} {shown} of {total} in the table (limit {reply.get('limit')})")
    return "\n".join(lines)


def format_stats(reply: dict) -> str:
    lines = []
    for section in ("daemon", "core"):
        values = reply.get(section, {})
        if not values:
            continue
        width = max(len(k) for k in values)
        lines.append(f"# {section}")
        lines.extend(f"{k.ljust(width)}  {v}" for k, v in values.items())
    q = reply.get("queue_stats")
    if q:
        lines.append(f"# queue {q['queue']} (/proc/net/netfilter/nfnetlink_queue)")
        lines.extend(f"{k.ljust(13)}  {q[k]}" for k in ("waiting", "queue_dropped", "user_dropped"))
    ub = reply.get("uplink_bytes")
    if ub:
        costs = reply.get("uplink_cost", {})
        lines.append("# uplinks: bytes sent, received, cost (cost=N per GB, both ways)")
        width = max(len(k) for k in ub)
        for name, (o, i) in sorted(ub.items()):
            c = costs.get(name)
            lines.append(f"{name.ljust(width)}  {o}  {i}  {'-' if c is None else f'{c:.6g}'}")
        if costs:
            lines.append(f"{'total'.ljust(width)}  {sum(v[0] for v in ub.values())}  "
                         f"{sum(v[1] for v in ub.values())}  {sum(costs.values()):.6g}")
    flows = reply.get("flows_by_state")
    if flows:
        lines.append("# flows by state")
        width = max(len(k) for k in flows)
        lines.extend(f"{k.ljust(width)}  {v}" for k, v in flows.items())
    return "\n".join(lines)


def _run_client(args: argparse.Namespace, req: dict, fmt) -> int:
    from middlebox.io.service import error_line

    queue = 0 if args.queue is None else args.queue
    try:
        reply = request(queue, req)
    except ClientError as e:
        error_line(f"middlebox {req['cmd']}", str(e))
        return e.status
    if args.json:
        reply.pop("ok", None)
        print(json.dumps(reply, indent=1))
    else:
        print(fmt(reply))
    return 0


class FlowsCommand:
    """List the flows the daemon converts right now, one line each (`--all`: every flow in its table).

    Per flow: guest and server address:port, state, MPTCP version (+csum when DSS checksums
    are on), the middlebox side's token (never a key), age, idle time, bytes each way; and,
    once a flow has several subflows, one line per subflow with its uplink, state, bytes and
    smoothed RTT. Fields the running core does not keep are shown as `-` (left out with
    --json). Exit status 1 when no daemon serves the queue in this network namespace.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_common(parser)
        parser.add_argument("--all", action="store_true",
                            help="also flows that pass unconverted (fallback, closed, MPTCP guests)")

    @staticmethod
    def main(args: argparse.Namespace) -> int:
        return _run_client(args, {"cmd": "flows", "all": bool(args.all)}, format_flows)


class StatsCommand:
    """Print every counter of the running daemon: its own tallies, every core counter (zeros
    included), the queue's kernel figures and the flows by state.

    The names are those of the log line SIGUSR1 prints and of the Prometheus metrics
    (`middlebox_<name>_total`). Exit status 1 when no daemon serves the queue here.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_common(parser)

    @staticmethod
    def main(args: argparse.Namespace) -> int:
        return _run_client(args, {"cmd": "stats"}, format_stats)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `middlebox flows` or `middlebox stats`")
