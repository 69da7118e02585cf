"""What the daemon shows to operators, in one place: systemd notification, the control socket
(`middlebox flows`, `middlebox stats`), the Prometheus endpoint, and the guest interfaces
followed while running.

Everything that reads the converter runs in the daemon's loop (`poll()`, called every round):
the metrics thread asks for a snapshot and waits for the loop to take it, so the flow table is
never read while a packet changes it. The converter is read defensively (`getattr` with a
default for every field but the flow table and its key): the views grow as the core does.

Keys never leave the daemon: a flow's view (`flow_view`) is built from the list of fields
below, and shows the tokens (the hash prefixes any MP_JOIN carries on the wire), not keys.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from middlebox import __version__
from middlebox.io import control, ifaces, metrics, service

log = logging.getLogger("middlebox.run")

POLL_EVERY = 0.05  # seconds between looks at the control socket and the interfaces
ACCOUNT_EVERY = 5.0  # seconds between byte accountings while metrics are served
SCRAPE_WAIT = 2.0  # seconds a scrape waits for the loop before using the last snapshot
#: states whose flows pass unconverted (`middlebox flows` leaves them out without --all)
PASSIVE_STATES = frozenset({"FALLBACK", "CLOSED", "FALLBACK_CLOSING", "GUEST_MPTCP"})
DEFAULT_UPLINK = "default"  # the routed path of a flow's first subflow


def _addr(a) -> str:
    if isinstance(a, (bytes, bytearray)):
        if len(a) == 4:
            return socket.inet_ntop(socket.AF_INET, bytes(a))
        if len(a) == 16:
            return socket.inet_ntop(socket.AF_INET6, bytes(a))
    return str(a)


def _ipport(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _name(v):
    return getattr(v, "name", None) or (None if v is None else str(v))


def _int(obj, name):
    v = getattr(obj, name, None)
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _token(key, version) -> str | None:
    if key is None:
        return None
    try:
        from middlebox.wire import key_token

        return f"{key_token(int(key), int(version) if version is not None else 1):08x}"
    except Exception:
        return None


def subflow_view(index: int, sf) -> dict:
    out = {"index": index, "uplink": getattr(sf, "uplink", None) or (DEFAULT_UPLINK if index == 0 else None)}
    if out["uplink"] is not None and not isinstance(out["uplink"], str):
        out["uplink"] = str(getattr(out["uplink"], "name", out["uplink"]))
    state = getattr(sf, "state", None)
    if state is not None:
        out["state"] = _name(state)
    for field in ("bytes_out", "bytes_in"):
        v = _int(sf, field)
        if v is not None:
            out[field] = v
    srtt = getattr(sf, "srtt", None)
    if isinstance(srtt, (int, float)) and not isinstance(srtt, bool):
        out["srtt_ms"] = round(float(srtt) * 1000.0, 3)
    return out


#: per-subflow fields shown (what the core's own view offers, see subflows_of)
SUBFLOW_FIELDS = ("index", "uplink", "state", "bytes_out", "bytes_in", "srtt_ms", "rate_mbit",
                  "inflight")


def _core_view():
    """The core's per-subflow view of a flow (`flow_view` of the active multipath module), if any."""
    try:
        from middlebox.core import MULTIPATH as multipath
    except Exception:
        return None
    return getattr(multipath, "flow_view", None)


_CORE_VIEW = _core_view()


def subflows_of(flow) -> list[dict]:
    """One dict per subflow: the core's view where it has one for this flow (multipath), else
    what the flow's `subflows` tuple exposes; only SUBFLOW_FIELDS."""
    subs = None
    if _CORE_VIEW is not None:
        try:
            subs = _CORE_VIEW(flow)
        except Exception:
            subs = None
    if subs:
        out = []
        for s in subs:
            v = {k: s[k] for k in SUBFLOW_FIELDS if isinstance(s, dict) and s.get(k) is not None}
            if "srtt" in s and "srtt_ms" not in v and isinstance(s["srtt"], (int, float)):
                v["srtt_ms"] = round(s["srtt"] * 1000.0, 3)
            if v.get("uplink") is None and v.get("index") == 0:
                v["uplink"] = DEFAULT_UPLINK
            out.append(v)
        return out
    return [subflow_view(i, sf) for i, sf in enumerate(getattr(flow, "subflows", None) or ())]


def flow_view(key, flow, now: float) -> dict:
    """What `middlebox flows` shows of one flow: only the fields listed here, never a key."""
    gip, gport, sip, sport = key
    gip, sip = _addr(gip), _addr(sip)
    version = _int(flow, "version")
    out = {
        "guest_ip": gip, "guest_port": int(gport), "server_ip": sip, "server_port": int(sport),
        "guest_ip_port": _ipport(gip, gport), "server_ip_port": _ipport(sip, sport),
        "state": _name(getattr(flow, "state", None)),
        # who opened the connection: the guest (outbound) or an MPTCP peer (inbound, issue 9)
        "role": "inbound" if getattr(flow, "inbound", 0) else "outbound",
        "version": version,
        "checksum": bool(getattr(flow, "checksum", False)),
        "token": _token(getattr(flow, "local_key", None), version),
        "peer_token": _token(getattr(flow, "remote_key", None), version),
    }
    born = getattr(flow, "born", None)
    if isinstance(born, (int, float)):
        out["age"] = round(max(0.0, now - born), 3)
    last = getattr(flow, "last", None)
    if isinstance(last, (int, float)):
        out["idle"] = round(max(0.0, now - last), 3)
    for field in ("bytes_out", "bytes_in"):
        v = _int(flow, field)
        if v is not None:
            out[field] = v
    out["subflows"] = subflows_of(flow)
    return out


def queue_stats(queue: int, text: str | None = None) -> dict | None:
    """The queue's line of /proc/net/netfilter/nfnetlink_queue (this namespace)."""
    if text is None:
        try:
            with open("/proc/net/netfilter/nfnetlink_queue") as f:
                text = f.read()
        except OSError:
            return None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].isdigit() and int(f[0]) == queue:
            return {"queue": queue, "portid": int(f[1]), "waiting": int(f[2]),
                    "queue_dropped": int(f[5]), "user_dropped": int(f[6]), "id_seq": int(f[7])}
    return None


class Ops:
    """Created by the daemon before it binds the queue; `start_metrics()` (before the bind:
    a port in use stops the start cleanly), `ready()` (after it), `poll()` every loop round,
    `stopping()` when a stop signal ends the loop, `close()` at the end."""

    def __init__(self, daemon) -> None:
        self.d = daemon
        self.args = daemon.args
        self.control: control.ControlServer | None = None
        self.metrics: metrics.MetricsServer | None = None
        self.watch: ifaces.GuestWatch | None = None
        self.start_time = time.time()
        self._next_poll = 0.0
        self._next_account = 0.0
        self._req = threading.Event()
        self._done = threading.Event()
        self._scrape = threading.Lock()
        self._last: dict | None = None
        self._ready = False
        self._seen: dict = {}  # (flow key, subflow index) -> (uplink, bytes out, bytes in)
        self._uplink_bytes: dict[str, list[int]] = {}

    # -- life cycle ------------------------------------------------------------------------

    def start_metrics(self) -> None:
        address = getattr(self.args, "metrics", None)
        if not address:
            return
        try:
            self.metrics = metrics.MetricsServer(address, self.threadsafe_snapshot)
        except OSError as e:
            from middlebox.io.daemon import DaemonError

            raise DaemonError(f"cannot serve metrics on {address}: {e.strerror or e}") from None
        log.info("metrics on http://%s/metrics", self.metrics.address)

    def ready(self) -> None:
        """The queue is bound: open the control socket, follow the guest interfaces, and tell
        systemd (READY=1). Called by the loop after the bind, else by the first `poll()` (the
        loops call `poll()` through `Daemon.tick`, which only runs once the queue is bound)."""
        if self._ready:
            return
        self._ready = True
        guest_patterns = getattr(self.d, "guest_patterns", ())
        path = control.socket_path(self.args.queue)
        try:
            self.control = control.ControlServer(path, self.handle)
        except OSError as e:
            log.warning("no control socket %s (%s): `middlebox flows` and `stats` will not "
                        "reach this daemon", path, e.strerror or e)
        if guest_patterns:
            self.watch = ifaces.GuestWatch(guest_patterns)
        service.sd_notify(f"READY=1\nSTATUS=converting on queue {self.args.queue}\n"
                          f"MAINPID={os.getpid()}")

    def stopping(self) -> None:
        service.sd_notify("STOPPING=1\nSTATUS=stopping: draining the queue")

    def close(self) -> None:
        for thing in (self.control, self.metrics, self.watch):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass
        self.control = self.metrics = self.watch = None

    # -- the loop's share --------------------------------------------------------------------

    def poll(self) -> None:
        if not self._ready:
            self.ready()
        if self._req.is_set():
            self._req.clear()
            try:
                self._last = self.snapshot()
            except Exception as e:
                self.d.bug("snapshot", e)
            self._done.set()
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + POLL_EVERY
        if self.watch is not None:
            found = self.watch.poll()
            if found is not None:
                self.d.set_guests(found)
        if self.control is not None:
            self.control.poll(now)
        if self.metrics is not None and now >= self._next_account:
            self._next_account = now + ACCOUNT_EVERY
            try:
                self._account()
            except Exception as e:
                self.d.bug("snapshot", e)

    def threadsafe_snapshot(self) -> dict | None:
        """For the metrics thread: the loop's next snapshot (or the last one after SCRAPE_WAIT)."""
        with self._scrape:
            self._done.clear()
            self._req.set()
            self._done.wait(SCRAPE_WAIT)
            return self._last

    # -- views -------------------------------------------------------------------------------

    def handle(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "queue": self.args.queue}
        if cmd == "stats":
            return {"ok": True, **self.snapshot()}
        if cmd == "flows":
            return {"ok": True, **self.flows(bool(request.get("all")))}
        return {"ok": False, "error": f"unknown command {cmd!r} (flows, stats, ping)"}

    def _conv_flows(self) -> dict:
        conv = self.d.conv
        flows = getattr(conv, "flows", None) if conv is not None else None
        return flows if isinstance(flows, dict) else {}

    def flows(self, every: bool = False) -> dict:
        now = time.monotonic()
        table = self._conv_flows()
        names, costs = self._uplink_names(), self.uplink_costs()
        out = []
        for key, flow in list(table.items()):
            state = _name(getattr(flow, "state", None))
            if not every and state in PASSIVE_STATES:
                continue
            try:
                v = flow_view(key, flow, now)
                if costs:  # issue 10: what this flow's subflows cost so far, both ways
                    priced = [(sf, sf.get("uplink") or names.get(sf.get("uplink_id"))) for sf in v["subflows"]]
                    priced = [(sf, n) for sf, n in priced if n in costs]
                    if priced:
                        v["cost"] = round(sum(((sf.get("bytes_out") or 0) + (sf.get("bytes_in") or 0))
                                              / 1e9 * costs[n] for sf, n in priced), 9)
                out.append(v)
            except Exception as e:  # an odd flow must not hide the others
                self.d.bug("flow_view", e)
        return {"flows": out, "all": every, "total": len(table), "limit": self._limit()}

    def _limit(self):
        conv = self.d.conv
        return _int(getattr(conv, "config", None), "max_flows") if conv is not None else None

    def _account(self) -> dict[str, int]:
        """Add what every subflow carried since the last accounting to the per-uplink totals;
        returns the subflows by uplink."""
        seen, count = {}, {}
        for key, flow in list(self._conv_flows().items()):
            subs = subflows_of(flow)
            names = self._uplink_names()
            for pos, sf in enumerate(subs):
                i = sf.get("index", pos)
                uplink = sf.get("uplink") or names.get(sf.get("uplink_id")) or f"subflow{i}"
                count[uplink] = count.get(uplink, 0) + 1
                o, n = sf.get("bytes_out"), sf.get("bytes_in")
                if o is None and n is None and len(subs) == 1:
                    o, n = _int(flow, "bytes_out"), _int(flow, "bytes_in")
                if o is None and n is None:
                    continue
                o, n = o or 0, n or 0
                prev = self._seen.get((key, i))
                po, pn = (prev[1], prev[2]) if prev and prev[0] == uplink else (0, 0)
                tot = self._uplink_bytes.setdefault(uplink, [0, 0])
                tot[0] += o - po if o >= po else o
                tot[1] += n - pn if n >= pn else n
                seen[(key, i)] = (uplink, o, n)
        self._seen = seen
        return count

    def _uplink_names(self) -> dict:
        return {getattr(u, "id", None): u.name for u in getattr(self.d, "uplinks", None) or ()}

    def uplink_costs(self) -> dict:
        """Cost per GB of each uplink (`cost=N` of its spec), by name."""
        return {u.name: float(getattr(u, "cost", 0.0) or 0.0) for u in getattr(self.d, "uplinks", None) or ()}

    def snapshot(self) -> dict:
        d = self.d
        folded = d.counters()  # folds the packet handler's tallies; non-zero ones only
        daemon = {name: 0 for name in metrics.DAEMON_TALLIES}
        daemon.update({k: v for k, v in folded.items() if not k.startswith("core.")})
        core = {}
        conv = d.conv
        if conv is not None:
            try:
                core = {_name(k): int(v) for k, v in dict(conv.counters).items()}
            except Exception as e:
                d.bug("counters", e)
        by_state = {}
        try:
            from middlebox.core.table import State

            by_state = {s.name: 0 for s in State}
        except Exception:
            pass
        table = self._conv_flows()
        for flow in list(table.values()):
            name = _name(getattr(flow, "state", None)) or "?"
            by_state[name] = by_state.get(name, 0) + 1
        subflows = self._account()
        costs = self.uplink_costs()
        return {
            "daemon": daemon,
            "core": core,
            "flows": len(table),
            "flows_limit": self._limit(),
            "flows_by_state": by_state,
            "subflows_by_uplink": subflows,
            "uplink_bytes": {u: tuple(v) for u, v in self._uplink_bytes.items()},
            # issue 10: what each uplink's bytes cost, both ways, at its cost=N per GB (1e9 B)
            "uplink_cost": {u: round((v[0] + v[1]) / 1e9 * costs[u], 9)
                            for u, v in self._uplink_bytes.items() if u in costs},
            "queue_stats": queue_stats(self.args.queue),
            "info": {"version": __version__,
                     "mptcp_version": getattr(self.args, "mptcp_version", ""),
                     "mode": "passthrough" if getattr(self.args, "passthrough", False)
                     else "converting"},
            "start_time": self.start_time,
        }
