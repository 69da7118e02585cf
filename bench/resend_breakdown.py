#!/usr/bin/env python3
"""Where a guest's resent segments were when it resent them (stop 47's bbr study).

Input: a converter run of `bench_multipath.py --pcap DIR`: the guest side
(`<scenario>-converter-<n>.pcap`, headers only) and each path's server end
(`...-path<k>-server.pcap`, what reached the server before the loss rules). For every guest
segment (MSS-sized pieces of what it sent on its largest upload connection) sent more than
once, the first copy's fate when the guest first resent it:

  lost                  it never reached the server, or only the resend did
  already at server     the server had it before the resend (the guest had not been told)
  in flight             it reached the server after the resend left the guest
  never arrived         no copy reached the server in the capture

plus the copies beyond the second, and how many resends came within 150 ms after a guest
RTO (a resend after more than 50 ms without an ACK). DSNs are matched to guest seqs through
subflow 1's first mapping (the guest's sequence space is the data sequence space).

    .venv/bin/python bench/resend_breakdown.py /tmp/pc/2x100-shallow-loss1-converter-1.pcap
"""

from __future__ import annotations

import argparse
import bisect
import collections
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from middlebox.analysis.pcap import read_packets  # noqa: E402
from middlebox.analysis.trace import _pad_to_ip_length  # noqa: E402  (as `middlebox inspect` reads captures)
from middlebox.wire import Dss, WireError, parse_packet  # noqa: E402
from middlebox.wire.mptcp import mptcp_options  # noqa: E402

M32 = 0xFFFFFFFF


def _segments(path: str):
    """(time, packet, ip bytes padded to its total length) of each TCP segment in `path`
    (captures keep headers only: the payload is not needed)."""
    for ts, ip in read_packets(path):
        ip = _pad_to_ip_length(ip)
        try:
            yield ts, parse_packet(ip), ip
        except WireError:
            continue


def breakdown(guest_pcap: str, port: int = 5201, mss: int = 0) -> dict:
    guest = list(_segments(guest_pcap))
    if not guest:
        raise SystemExit(f"{guest_pcap}: no TCP segment")
    t0 = guest[0][0]
    sent_by = collections.Counter()
    for _, p, _ in guest:
        if p.dport == port and p.payload_len:
            sent_by[p.sport] += p.payload_len
    if not sent_by:
        raise SystemExit(f"{guest_pcap}: no upload to port {port}")
    gport = sent_by.most_common(1)[0][0]
    isn = next(p.seq for _, p, _ in guest if p.sport == gport and p.payload_len)
    seg = mss or max(p.payload_len for _, p, _ in guest if p.sport == gport and p.payload_len <= 1500)
    # every server end: subflow ISNs from the SYNs, then each data segment's first DSN
    base = guest_pcap[:-len(".pcap")]
    arrivals = collections.defaultdict(list)  # guest rel seq -> arrival times at the server
    offset = None
    for path in sorted(glob.glob(f"{base}-path*-server.pcap")):
        isns = {}
        for ts, p, ip in _segments(path):
            if p.dport != port:
                continue
            key = (p.src, p.sport)
            if p.flags & 0x02:
                isns[key] = p.seq
                continue
            if not p.payload_len or key not in isns:
                continue
            dss = next((o for o in mptcp_options(ip, p) if type(o) is Dss and o.data_seq is not None
                        and o.data_len), None)
            if dss is None:
                continue
            rel = (p.seq - isns[key]) & M32
            dsn = (dss.data_seq + (rel - dss.subflow_seq)) & M32
            if offset is None and p.sport == gport:
                offset = (dsn - p.seq) & M32  # subflow 1's first mapping: seq = guest seq
            arrivals[dsn].append(ts - t0)
    if offset is None:
        raise SystemExit("no mapping of subflow 1 in the server captures")
    sends = collections.defaultdict(list)
    acks = []
    for ts, p, _ in guest:
        if p.sport == gport and p.payload_len:
            r = (p.seq - isn) & M32
            for o in range(0, p.payload_len, seg):
                sends[r + o].append(ts - t0)
        elif p.dport == gport:
            acks.append(ts - t0)
    out = collections.Counter()
    resend_times = []
    for r, times in sends.items():
        if len(times) < 2:
            continue
        resend_times += times[1:]
        out["copies beyond the second"] += len(times) - 2
        arr = sorted(arrivals.get((isn + r + offset) & M32, ()))
        first_resend = times[1]
        if not arr:
            out["never arrived"] += 1
        elif arr[0] < first_resend:
            out["already at server"] += 1
        elif len(arr) >= 2:
            out["in flight"] += 1
        else:
            out["lost"] += 1
    rtos = []
    for tr in sorted(resend_times):
        i = bisect.bisect_left(acks, tr) - 1
        if i >= 0 and tr - acks[i] > 0.05 and (not rtos or tr - rtos[-1] > 0.3):
            rtos.append(tr)
    near = sum(1 for tr in resend_times if any(0 <= tr - e <= 0.15 for e in rtos))
    return {"connection": gport, "segment": seg, "resent segments": sum(1 for t in sends.values() if len(t) > 1),
            "resends": len(resend_times), **out, "guest RTOs": len(rtos), "resends within 150 ms after an RTO": near}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("guest_pcap", help="the guest side of a --pcap converter run")
    ap.add_argument("--port", type=int, default=5201, help="the server's port (default 5201, iperf3)")
    ap.add_argument("--mss", type=int, default=0, help="segment size (default: the largest unsegmented one seen)")
    args = ap.parse_args()
    for k, v in breakdown(args.guest_pcap, args.port, args.mss).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
