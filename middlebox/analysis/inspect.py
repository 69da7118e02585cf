"""Judge the MPTCP connections in a pcap/pcapng capture: keys, tokens, HMACs, mappings, checksums.

`middlebox inspect FILE [--json]` reads the capture (pcap or pcapng, see
`middlebox/analysis/pcap.py`), follows every MPTCP connection (identified by its tokens; joins
attach by token) and prints one block per connection and a summary line, or one JSON document.

Exit status: 0 nothing wrong, 1 at least one violation (see `middlebox/analysis/trace.py` for
the list and what each check needs), 2 unreadable input (one line on stderr).

What is checked and what is only reported is documented in `middlebox/analysis/trace.py`.
In short: a check the capture cannot support (packets missing, snaplen) is *unverifiable*,
never a violation; fallbacks are reported, not violations; a TCP segment with a wrong TCP
checksum is a violation (corruption), unless the field holds the bare pseudo-header sum
that checksum offload leaves in captures taken on the sending host.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from middlebox.analysis.pcap import PcapError, read_packets
from middlebox.analysis.trace import Trace

EXIT_OK, EXIT_VIOLATION, EXIT_UNREADABLE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="capture file (pcap or pcapng)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def analyze(path: str) -> dict[str, Any]:
    """Read and judge a capture; raises PcapError when it cannot be read."""
    trace = Trace()
    for ts, ip in read_packets(path):
        trace.feed(ts, ip)
    report = trace.report()
    report["file"] = path
    return report


def exit_status(report: dict[str, Any]) -> int:
    return EXIT_VIOLATION if report["summary"]["violations"] else EXIT_OK


def main(args: argparse.Namespace) -> int:
    try:
        report = analyze(args.file)
    except PcapError as exc:
        print(f"middlebox inspect: {args.file}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        render_text(report, sys.stdout)
    return exit_status(report)


# ---- text --------------------------------------------------------------------------------


def _counts(d: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in d.items() if v) or "-"


def render_text(r: dict[str, Any], out: TextIO) -> None:
    w = out.write
    for c in r["connections"]:
        cl, sv = c["client"], c["server"]
        w(f"connection {c['id']}: MPTCP v{c['version']}, checksums {'on' if c['checksums'] else 'off'}, "
          f"tokens client {cl['token']} server {sv['token']}\n")
        w(f"  keys    client {cl['key']} (idsn {cl['idsn']})  server {sv['key']} (idsn {sv['idsn']})\n")
        for sf in c["subflows"]:
            line = (f"  subflow {sf['id']} {sf['kind']:<7} {sf['client']} -> {sf['server']}  "
                    f"c2s {sf['payload_bytes']['c2s']} B/{sf['mappings']['c2s']} maps  "
                    f"s2c {sf['payload_bytes']['s2c']} B/{sf['mappings']['s2c']} maps")
            j = sf.get("join")
            if j:
                line += (f"  join id {j['addr_id']}{' backup' if j['backup'] else ''} by {j['initiator']}: "
                         f"hmac syn/ack {j['synack_hmac_verdict']}, ack {j['ack_hmac_verdict']}")
            bad = sf["tcp_checksums"]["c2s"]["bad"] + sf["tcp_checksums"]["s2c"]["bad"]
            if bad:
                line += f"  {bad} bad TCP checksum(s)"
            w(line + "\n")
            for ev in sf.get("events", ()):
                w(f"    {ev}\n")
        for a in c["add_addr"]:
            port = f" port {a['port']}" if a["port"] is not None else ""
            if a.get("echo_only"):
                w(f"  add_addr echo from {a['from']}: id {a['addr_id']} {a['addr']}{port} (no announcement seen)\n")
            else:
                if a["verdict"] == "none":  # v0 (RFC 6824): no HMAC, no echo
                    tail = "(v0: no hmac, no echo)"
                else:
                    tail = f"hmac {a['verdict']}{', echoed' if a['echoed'] else ', not echoed'}"
                w(f"  add_addr from {a['from']}: id {a['addr_id']} {a['addr']}{port} {tail}\n")
        if c["remove_addr"]:
            w(f"  remove_addr ids {' '.join(map(str, c['remove_addr']))}\n")
        for dirname, d in c["directions"].items():
            line = f"  {dirname}: {d['data_bytes']} data bytes, {d['mappings']} mappings"
            if d["dss_checksums"] is not None:
                line += f", dss checksums {_counts(d['dss_checksums'])}"
            if d["window_probes"]:
                line += f", {d['window_probes']} window probe(s)"
            if d["data_fin"]:
                line += f", DATA_FIN at +{d['data_fin_dsn']}{' acked' if d['data_fin_acked'] else ''}"
            w(line + "\n")
        for f in c["fallbacks"]:
            w(f"  fallback {f['kind']}: {f['detail']}\n")
        for u in c["unverifiable"]:
            w(f"  unverifiable {u['kind']}: {u['detail']}\n")
        for v in c["violations"]:
            w(f"  VIOLATION {v['kind']}: {v['detail']}\n")
    for f in r["fallback_connections"]:
        sf = f["subflow"]
        w(f"fallback connection {f['id']}: {sf['client']} -> {sf['server']} "
          f"({', '.join(x['kind'] for x in f['fallbacks']) or 'no MP_CAPABLE answer'})\n")
    for o in r["orphan_joins"]:
        tag = "VIOLATION token-unknown" if r["orphan_joins_are_violations"] else "unverifiable"
        w(f"{tag}: join subflow {o['id']} {o['client']} -> {o['server']} names token {o['token']}, "
          f"no connection of the capture has it\n")
    for p in r["partial_subflows"]:
        w(f"unverifiable: MPTCP subflow {p['id']} {p['client']} <-> {p['server']}: handshake not captured\n")
    for m in r["malformed_options"][:10]:
        w(f"malformed MPTCP option on subflow {m['subflow']}: {m['option']}\n")
    s = r["summary"]
    opts = ", ".join(f"{k} {v}" for k, v in r["mptcp_options"].items()) or "none"
    w(f"summary: {s['connections']} MPTCP connection(s), {s['subflows']} subflow(s), "
      f"{s['fallback_connections']} fallback(s), {s['violations']} violation(s), "
      f"{s['unverifiable']} unverifiable; {r['packets']} packets; options: {opts}\n")


if __name__ == "__main__":  # `python -m middlebox.analysis.inspect FILE` (same as `middlebox inspect`)
    _parser = argparse.ArgumentParser(prog="middlebox inspect", description=__doc__.strip().splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
