#!/usr/bin/env python3
"""Make tests/vectors/mptcp_v0_checksum.pcap: an MPTCP v0 (RFC 6824) connection made by the
converter, as seen on its server side (no root, no network; see README.md).

    .venv/bin/python tests/vectors/make_v0_capture.py          # rewrites the .pcap file
    .venv/bin/python tests/vectors/make_v0_capture.py --check  # makes it in memory, compares

No v0 peer exists on a current Linux (it speaks v1 only), so both ends are simulated with the
sans-IO two-sided harness of tests/unit/test_core_harness.py (`Pair`): a plain-TCP guest, the
pure-Python `Converter(Config(version=0, checksum=True))`, and a simulated v0 server that
answers the v0 MP_CAPABLE with its key, checks every converted segment (keys, SHA-1
IDSN-based DSNs, DSS checksums) and maps its own data with DSS (DSN = its SHA-1 IDSN +
subflow offset, DSS checksum on every mapping), then closes with DATA_FIN.

Written: every packet that crosses the converter's server-side wire, in order: what the
converter emits towards the server (its verdict's bytes and any Inject towards the server)
and every packet the server sends (before the converter sees it). Deterministic: the
converter's key is pinned (KEY_A of PROTOCOL.md; the core draws a random one), the server's
is KEY_B, ISNs and the clock are the harness's, payloads come from random.Random(seed).
pcap little-endian, µs, link type 276 (LINUX_SLL2), like the tcpdump vectors, so
middlebox.analysis.pcapedit can edit it.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys

os.environ["MIDDLEBOX_PURE_PYTHON"] = "1"  # the spec converter, whose key can be pinned below

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import middlebox.core.converter as core_converter  # noqa: E402
from middlebox.core import IMPLEMENTATION, Config, Inject  # noqa: E402
from middlebox.wire import parse_packet  # noqa: E402
from tests.unit.test_core_harness import M32, Pair  # noqa: E402

NAME = "mptcp_v0_checksum.pcap"
CLIENT_KEY = 0x0102030405060708  # PROTOCOL.md vector key A (the converter's, pinned)
SERVER_KEY = 0x1112131415161718  # PROTOCOL.md vector key B (the simulated server's)
SIZE, CHUNKS = 1200, 3  # bytes each way, in this many writes
EPOCH = 1_700_000_000  # pcap time = EPOCH + harness clock
LINKTYPE_LINUX_SLL2 = 276


class Wire:
    """The converter's server-side wire, recorded."""

    def __init__(self, pair: Pair) -> None:
        self.p = pair
        self.frames: list[tuple[float, bytes]] = []

    def record(self, buf: bytes | None) -> None:
        if buf is not None:
            self.frames.append((EPOCH + self.p.now, buf))

    def out(self, guest_pkt: bytes) -> bytes | None:
        """Guest -> converter -> server: what the server gets (the harness checks it)."""
        actions, sent = self.p.out(guest_pkt)
        self.record(sent)
        self._injects(actions)
        return sent

    def inn(self, server_pkt: bytes) -> bytes | None:
        """Server -> converter: on the wire whatever the converter does with it."""
        self.record(server_pkt)
        actions, got = self.p.inn(server_pkt)
        self._injects(actions)
        return got

    def _injects(self, actions) -> None:
        for a in actions[1:]:
            if isinstance(a, Inject) and parse_packet(a.data).dst == parse_packet(self.frames[-1][1]).dst:
                self.record(a.data)


def transfer() -> list[tuple[float, bytes]]:
    assert IMPLEMENTATION == "python"
    core_converter.new_key = lambda: CLIENT_KEY
    p = Pair(Config(version=0, checksum=True), server_checksum=True, server_key=SERVER_KEY,
             guest_isn=0x1F2E3D4C, server_isn=0x5A6B7C8D, gport=40123, sport=5201)
    w = Wire(p)
    c_data = random.Random("client").randbytes(SIZE)
    s_data = random.Random("server").randbytes(SIZE)
    step = SIZE // CHUNKS
    # handshake: v0 SYN (client key), SYN/ACK (server key), third ACK (both keys)
    syn = w.out(p.g_syn())
    w.inn(p.s_synack(syn))
    p.g_rcv = (p.s_isn + 1) & M32
    p.s_receive(w.out(p.g_ack()))
    assert p.c_key == CLIENT_KEY
    # guest data, DSS-mapped by the converter; the server DATA_ACKs each write
    for i in range(0, SIZE, step):
        p.s_receive(w.out(p.g_data(c_data[i : i + step])))
        w.inn(p.s_ack())
    # server data, DSS-mapped by the server; the guest acks each (the converter adds DATA_ACK)
    for i in range(0, SIZE, step):
        w.inn(p.s_data_pkt(s_data[i : i + step]))
        p.g_rcv = p.s_nxt
        w.out(p.g_ack())
    # guest closes: FIN -> DATA_FIN; the server acks it, then closes with a bare DATA_FIN + FIN
    p.s_receive(w.out(p.g_fin()))
    w.inn(p.s_ack())
    w.inn(p.s_bare_data_fin(fin=True))
    p.g_rcv = p.s_nxt
    w.out(p.g_ack())
    assert p.s_stream() == c_data, "the server got the guest's bytes"
    got = b"".join(b[parse_packet(b).payload_off : parse_packet(b).length] for b in p.to_guest)
    assert got == s_data, "the guest got the server's bytes"
    assert p.s_data_fin is not None and p.csum
    return w.frames


def sll2(ip: bytes, outgoing: bool) -> bytes:
    # protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
    proto = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 4 if outgoing else 0, 6, bytes(8)) + ip


def pcap_bytes(frames: list[tuple[float, bytes]], server_addr: bytes) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_LINUX_SLL2)]
    for ts, ip in frames:
        frame = sll2(ip, parse_packet(ip).src == server_addr)
        sec, usec = int(ts), round((ts - int(ts)) * 1e6)
        if usec == 1_000_000:
            sec, usec = sec + 1, 0
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    return b"".join(out)


def make() -> bytes:
    frames = transfer()
    server = parse_packet(frames[1][1]).src  # the SYN/ACK's sender
    return pcap_bytes(frames, server)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="make it in memory and compare with the file")
    args = ap.parse_args()
    data = make()
    path = os.path.join(HERE, NAME)
    # inspect must judge it clean before it is kept
    import tempfile

    from middlebox.analysis.inspect import analyze, exit_status

    with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
        tmp.write(data)
        tmp.flush()
        report = analyze(tmp.name)
    s = report["summary"]
    print(f"{NAME}: {len(data)} bytes, inspect exit {exit_status(report)}, violations {s['violations']}, "
          f"unverifiable {s['unverifiable']}, version {[c['version'] for c in report['connections']]}, "
          f"options {report['mptcp_options']}")
    if exit_status(report) or s["unverifiable"] or s["connections"] != 1:
        print(f"inspect rejects {NAME}", file=sys.stderr)
        return 1
    if args.check:
        same = os.path.exists(path) and open(path, "rb").read() == data
        print("identical to the committed file" if same else "DIFFERS from the committed file")
        return 0 if same else 1
    with open(path, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
