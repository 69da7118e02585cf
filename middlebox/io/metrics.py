"""Prometheus metrics of the daemon (`middlebox run --metrics ADDR:PORT`), served with the
`prometheus_client` library in its text exposition format (GET /metrics, any path).

Every figure comes from one snapshot the daemon's loop takes when a scrape asks
(`middlebox/io/ops.py`); nothing here touches the converter from the HTTP thread.

| metric | type | labels | what |
|---|---|---|---|
| `middlebox_<Counter>_total` | counter | | every core counter, named as in `middlebox/core/counters.py` (the kernel MIB's spelling: `middlebox_MPCapableSYNTX_total`, `middlebox_DssFallback_total`, ...) |
| `middlebox_daemon_<name>_total` | counter | | the daemon's own tallies: `packets`, `rewritten`, `dropped`, `injected`, `inject_errors`, `enobufs`, `recv_errors`, `fail_open_unset`, and any other it keeps |
| `middlebox_daemon_bugs_total` | counter | `where` | exceptions that escaped the core, a verdict, an injection, a tick (packet accepted unchanged) |
| `middlebox_flows` | gauge | `state` | flows in the table by state (`ESTABLISHED`, `FALLBACK`, ...; every state, zeros included) |
| `middlebox_flows_limit` | gauge | | the table's cap (`max_flows`) |
| `middlebox_subflows` | gauge | `uplink` | subflows of the flows in the table by uplink (`default`: the routed path of a flow's first subflow) |
| `middlebox_uplink_sent_bytes_total` | counter | `uplink` | bytes the subflows sent towards the servers, by uplink |
| `middlebox_uplink_received_bytes_total` | counter | `uplink` | bytes the subflows received from the servers, by uplink |
| `middlebox_queue_dropped_total` | counter | `queue` | packets the kernel dropped because the queue was full (`/proc/net/netfilter/nfnetlink_queue` queue_dropped; stays 0 under fail-open) |
| `middlebox_queue_user_dropped_total` | counter | `queue` | packets the kernel could not send to the daemon (socket buffer full: user_dropped) |
| `middlebox_queue_waiting` | gauge | `queue` | packets waiting for the daemon right now |
| `middlebox_info` | gauge | `version`, `mptcp_version`, `mode` | 1, with what runs |
| `middlebox_start_time_seconds` | gauge | | when the daemon started (Unix time) |
| `process_*` | | | prometheus_client's process collector (CPU, memory, open fds) |

The byte counters add up what the flows' subflows carried between snapshots: bytes a flow
moved after the last snapshot and before it left the table are not counted; flows stay in the
table at least 10 s after they end (TIME_WAIT, closed) and the daemon takes a snapshot every
5 s while metrics are on, so that only happens to evicted flows.
"""

from __future__ import annotations

import argparse
import re

from middlebox.core.counters import Counter

DEFAULT_PORT = 9464


def listen_address(text: str) -> str:
    """Type of `--metrics`: `ADDR:PORT`, `[V6ADDR]:PORT` or `:PORT` (every address);
    returns it normalized ("host:port", "[v6]:port")."""
    host, port = split_address(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(text: str) -> tuple[str, int]:
    text = str(text).strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}, "
                                         f"[::1]:{DEFAULT_PORT})")
    host = m.group(1) if m.group(1) is not None else (m.group(3) or "0.0.0.0")
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not 1..65535")
    return host, port


def _counter_docs() -> dict[str, str]:
    """The comment after each Counter member in counters.py: the metric's HELP."""
    import inspect

    from middlebox.core import counters

    try:
        src = inspect.getsource(counters)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\s+(\w+)\s*=\s*\d+\s*#\s*(.*)$", src, re.M)}


class Collector:
    """A prometheus_client collector over `snapshot()` (a dict, see ops.Ops.snapshot)."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot
        self.docs = _counter_docs()

    def describe(self):
        return []  # no metadata at registration: collect() would run in the daemon's thread

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        if snap is None:
            return
        core = snap.get("core", {})
        for c in Counter:
            m = CounterMetricFamily(f"middlebox_{c.name}",
                                    self.docs.get(c.name) or f"core counter {c.name}")
            m.add_metric([], core.get(c.name, 0))
            yield m
        for name in sorted(k for k in core if k not in Counter.__members__):  # newer than us
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                m = CounterMetricFamily(f"middlebox_{name}", f"core counter {name}")
                m.add_metric([], core[name])
                yield m
        bugs = CounterMetricFamily("middlebox_daemon_bugs",
                                   "exceptions that escaped the core, a verdict, an injection or "
                                   "a tick (the packet was accepted unchanged)", labels=["where"])
        daemon = {**dict.fromkeys(DAEMON_TALLIES, 0), **snap.get("daemon", {})}  # stable series
        for name, v in sorted(daemon.items()):
            if name.startswith("bug_"):
                bugs.add_metric([name[4:]], v)
            elif re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                m = CounterMetricFamily(f"middlebox_daemon_{name}", DAEMON_DOCS.get(name, name))
                m.add_metric([], v)
                yield m
        yield bugs
        g = GaugeMetricFamily("middlebox_flows", "flows in the table by state", labels=["state"])
        for state, n in snap.get("flows_by_state", {}).items():
            g.add_metric([state], n)
        yield g
        if snap.get("flows_limit") is not None:
            yield GaugeMetricFamily("middlebox_flows_limit", "the flow table's cap (max_flows)",
                                    value=snap["flows_limit"])
        g = GaugeMetricFamily("middlebox_subflows", "subflows of the flows in the table by uplink",
                              labels=["uplink"])
        for uplink, n in sorted(snap.get("subflows_by_uplink", {}).items()):
            g.add_metric([uplink], n)
        yield g
        sent = CounterMetricFamily("middlebox_uplink_sent_bytes",
                                   "bytes sent towards the servers by uplink", labels=["uplink"])
        rcvd = CounterMetricFamily("middlebox_uplink_received_bytes",
                                   "bytes received from the servers by uplink", labels=["uplink"])
        for uplink, (o, i) in sorted(snap.get("uplink_bytes", {}).items()):
            sent.add_metric([uplink], o)
            rcvd.add_metric([uplink], i)
        yield sent
        yield rcvd
        cost = CounterMetricFamily("middlebox_uplink_cost",
                                   "what the bytes each uplink carried (both ways) cost, at its "
                                   "cost=N per GB", labels=["uplink"])
        for uplink, v in sorted(snap.get("uplink_cost", {}).items()):
            cost.add_metric([uplink], v)
        yield cost
        q = snap.get("queue_stats")
        if q:
            label = [str(q["queue"])]
            for name, key, doc in (
                    ("middlebox_queue_dropped", "queue_dropped",
                     "packets the kernel dropped because the queue was full"),
                    ("middlebox_queue_user_dropped", "user_dropped",
                     "packets the kernel could not send to the daemon (socket buffer full)")):
                m = CounterMetricFamily(name, doc, labels=["queue"])
                m.add_metric(label, q[key])
                yield m
            m = GaugeMetricFamily("middlebox_queue_waiting", "packets waiting for the daemon",
                                  labels=["queue"])
            m.add_metric(label, q["waiting"])
            yield m
        info = snap.get("info")
        if info:
            m = GaugeMetricFamily("middlebox_info", "what runs", labels=sorted(info))
            m.add_metric([str(info[k]) for k in sorted(info)], 1)
            yield m
        if snap.get("start_time"):
            yield GaugeMetricFamily("middlebox_start_time_seconds",
                                    "when the daemon started (Unix time)", value=snap["start_time"])


DAEMON_DOCS = {
    "packets": "queue messages handled",
    "rewritten": "packets given back rewritten",
    "dropped": "packets dropped by the core's verdict",
    "injected": "packets the daemon sent (ACKs, RSTs, extra-subflow segments)",
    "inject_errors": "injections the kernel refused",
    "enobufs": "queue socket overruns (the kernel dropped queue messages)",
    "recv_errors": "queue receive errors",
    "fail_open_unset": "the kernel refused NFQA_CFG_F_FAIL_OPEN",
}
DAEMON_TALLIES = tuple(DAEMON_DOCS)


class MetricsServer:
    """The HTTP endpoint: a private registry (our collector + the process collector)."""

    def __init__(self, address: str, snapshot) -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        host, port = split_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(snapshot))
        ProcessCollector(registry=self.registry)
        started = start_http_server(port, addr=host, registry=self.registry)
        self.server, self.thread = started if isinstance(started, tuple) else (None, None)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
