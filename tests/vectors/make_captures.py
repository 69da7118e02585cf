#!/usr/bin/env python3
"""Regenerate the small MPTCP captures in tests/vectors/ (root, Linux MPTCP; see README.md).

    sudo .venv/bin/python tests/vectors/make_captures.py [--check]

Each capture is a real Linux-to-Linux MPTCP v1 transfer in throw-away namespaces
(`middlebox.analysis.lab.capture_transfer`: client in the topology's mbox namespace, server in
its server namespace, tcpdump -i any -s 0 on the server). Keys, nonces and ports are random
per run, so the files change on every run; tests/unit/test_inspect_vectors.py checks facts
that do not (options present, HMACs valid, mappings complete, byte counts).
With --check, nothing is written: every capture is made in a temporary directory and
`middlebox inspect` must accept it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from middlebox.analysis.inspect import analyze, exit_status  # noqa: E402
from middlebox.analysis.lab import capture_transfer  # noqa: E402

# name -> capture_transfer arguments
CAPTURES = {
    # one subflow, 3000 bytes each way in 3 writes
    "mptcp_v1_single.pcap": dict(size=3000, chunks=3, pause=0.02, join=False, delay=0.1),
    # a `subflow` endpoint (join from mbox path 2) and server `signal` endpoints (ADD_ADDR v4+v6)
    "mptcp_v1_join_addaddr.pcap": dict(size=4000, chunks=8, pause=0.03, join=True, add_addr=True, delay=0.4),
    # net.mptcp.checksum_enabled=1 on both peers: DSS checksums on every mapping
    "mptcp_v1_checksum.pcap": dict(size=3000, chunks=3, pause=0.02, join=False, checksum=True, delay=0.1),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="make them in a temporary directory only")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mbvec-")
    os.chmod(tmp, 0o777)  # tcpdump drops privileges to user tcpdump before writing
    try:
        for name, kw in CAPTURES.items():
            path = os.path.join(tmp, name)
            for attempt in range(1, 6):
                capture_transfer(path, rate_mbit=None, **kw)
                report = analyze(path)
                status = exit_status(report)
                summary = report["summary"]
                print(f"{name} (attempt {attempt}): {os.path.getsize(path)} bytes, inspect exit {status}, "
                      f"unverifiable {summary['unverifiable']}, options {report['mptcp_options']}")
                if status or summary["connections"] != 1:
                    print(f"inspect rejects {name}", file=sys.stderr)
                    return 1
                if summary["unverifiable"] == 0:  # tcpdump may miss a packet: then make it again
                    break
            else:
                return 1
            if not args.check:
                shutil.copyfile(path, os.path.join(HERE, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
