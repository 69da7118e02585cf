"""Differential: the same packet sequence through both queue backends (`--backend netlink`,
`--backend nfqueue`) gives the same bytes on the wire, both ways.

The guest and the server here are scripts: hand-made IPv4/TCP segments sent with raw sockets
from their namespaces, whose own stacks are kept quiet (an INPUT drop rule: they never answer
the segments they see). Captured on the guest's and the server's interfaces, every frame of
the first daemon's run must equal the second's. The core has deterministic keys
(deterministic_core.py), so the MPTCP options are the same too. The segments are single
packets (no GRO at the middlebox): with super-packets the netlink backend writes one mapping
per super-packet by design, where NetfilterQueue sees segments.
"""

from __future__ import annotations

import socket
import struct
import time

from adversary import Capture, read_pcap
from conftest import Daemon, payload
from middlebox.wire import Dss, MpCapable, build_options, encode_tcp_options, key_idsn

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
SERVER_KEY = 0x0102030405060708
GUEST_KEY = 0x1122334455667788  # the first key deterministic_core hands out
G_ISN, S_ISN = 1_000_000, 7_000_000
GPORT, SPORT = 40123, 5201


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def seg(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
        options: bytes = b"", data: bytes = b"", ip_id: int = 1) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & M32, ack & M32,
                      (20 + len(options)) // 4 << 4, flags, 64000, 0, 0) + options + data
    c = _csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, 64, 6, 0, s, d)
    return ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:] + tcp


def script(t) -> list[tuple[str, bytes]]:
    """(namespace, packet) in sending order: handshake, data both ways, SACK, close."""
    g, s = t.guest_ip, t.server_ip
    ts = lambda v, e: encode_tcp_options(ts_val=v, ts_ecr=e)  # noqa: E731
    syn_opts = encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=100, ts_ecr=0)
    g_idsn, s_idsn = key_idsn(GUEST_KEY), key_idsn(SERVER_KEY)
    up, down = payload(3000, seed=11), payload(2500, seed=12)
    out = [
        (t.guest, seg(g, s, GPORT, SPORT, G_ISN, 0, SYN, syn_opts, ip_id=1)),
        (t.server, seg(s, g, SPORT, GPORT, S_ISN, G_ISN + 1, SYN | ACK, build_options(
            encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=500, ts_ecr=100),
            (MpCapable(1, 0x01, SERVER_KEY),)), ip_id=2)),
        (t.guest, seg(g, s, GPORT, SPORT, G_ISN + 1, S_ISN + 1, ACK, ts(101, 500), ip_id=3)),
    ]
    for i in range(3):  # guest data: MP_CAPABLE with data, then DSS
        out.append((t.guest, seg(g, s, GPORT, SPORT, G_ISN + 1 + 1000 * i, S_ISN + 1, ACK | PSH,
                                 ts(102 + i, 500), up[1000 * i:1000 * (i + 1)], ip_id=4 + i)))
    out.append((t.server, seg(s, g, SPORT, GPORT, S_ISN + 1, G_ISN + 3001, ACK, build_options(
        ts(501, 104), (Dss((g_idsn + 3001) & M64, True),)), ip_id=7)))
    dsn = (s_idsn + 1) & M64
    for i, (lo, hi) in enumerate(((0, 1000), (2000, 2500), (1000, 2000))):  # reordered
        out.append((t.server, seg(s, g, SPORT, GPORT, S_ISN + 1 + lo, G_ISN + 3001, ACK | PSH,
                                  build_options(ts(502 + i, 104), (Dss(
                                      (g_idsn + 3001) & M64, True, (dsn + lo) & M64, True, 1 + lo,
                                      hi - lo),)), down[lo:hi], ip_id=8 + i)))
        if i == 1:  # the guest SACKs the hole
            out.append((t.guest, seg(g, s, GPORT, SPORT, G_ISN + 3001, S_ISN + 1001, ACK,
                                     encode_tcp_options(ts_val=106, ts_ecr=503,
                                                        sack=((S_ISN + 2001, S_ISN + 2501),)),
                                     ip_id=11)))
    out += [
        (t.guest, seg(g, s, GPORT, SPORT, G_ISN + 3001, S_ISN + 2501, ACK, ts(107, 504), ip_id=12)),
        (t.guest, seg(g, s, GPORT, SPORT, G_ISN + 3001, S_ISN + 2501, FIN | ACK, ts(108, 504),
                      ip_id=13)),
        (t.server, seg(s, g, SPORT, GPORT, S_ISN + 2501, G_ISN + 3002, FIN | ACK, build_options(
            ts(505, 108), (Dss((g_idsn + 3002) & M64, True, (dsn + 2500) & M64, True, 0, 1,
                               data_fin=True),)), ip_id=14)),
        (t.guest, seg(g, s, GPORT, SPORT, G_ISN + 3002, S_ISN + 2502, ACK, ts(109, 505), ip_id=15)),
    ]
    return out


def run_once(t, backend: str, tmp_path) -> tuple[list[bytes], list[bytes], str]:
    caps = [Capture(t, t.guest, t.guest_if, "tcp", tmp_path / f"{backend}-guest.pcap", 65535),
            Capture(t, t.server, t.paths[0].server_if, "tcp", tmp_path / f"{backend}-server.pcap",
                    65535)]
    d = Daemon(t, "--backend", backend, "--guest-iface", t.mbox_guest_if,
               "--converter", "deterministic_core:Converter").wait_bound()
    try:
        socks = {}
        for ns in (t.guest, t.server):
            with t.in_netns(ns):
                socks[ns] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for ns, pkt in script(t):
            socks[ns].sendto(pkt, (socket.inet_ntoa(pkt[16:20]), 0))
            time.sleep(0.05)  # one at a time through the queue: the order is the script's
        # tcpdump hands packets over in blocks (up to ~1 s late): wait for all of them
        want = len(script(t))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and min(len(c.packets()) for c in caps) < want:
            time.sleep(0.1)
        time.sleep(0.3)  # and for anything beyond the script (there should be nothing)
        for sk in socks.values():
            sk.close()
    finally:
        rc, _ = d.stop()
        for c in caps:
            c.stop()
    assert rc == 0, d.output
    frames = []
    for c in caps:
        with open(c.path, "rb") as f:
            ip = [fr[14:] for fr in read_pcap(f.read())]  # without the MACs
        # per direction: the order within one is the script's, across the two it is timing
        frames.append([p for p in ip if p[12:16] == socket.inet_aton(t.guest_ip)]
                      + [p for p in ip if p[12:16] != socket.inet_aton(t.guest_ip)])
    return frames[0], frames[1], d.output


def test_both_backends_write_the_same_bytes(mbox, tmp_path):
    t = mbox.t
    if mbox.backend != "netlink":  # one run compares both backends
        return
    for ns in (t.guest, t.server):
        t.run(ns, ["iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP"])
    runs = {b: run_once(t, b, tmp_path) for b in ("netlink", "nfqueue")}
    (g1, s1, out1), (g2, s2, out2) = runs["netlink"], runs["nfqueue"]
    assert "backend netlink" in out1 and "backend nfqueue" in out2, (out1, out2)
    n = len(script(t))
    assert len(g1) == len(s1) == n, f"captured {len(g1)}, {len(s1)} of {n} packets\n{out1}"
    assert "rewritten=" in out1 and "core.MPCapableSYNTX=1" in out1, out1
    assert s1 == s2, f"server side differs:\n{describe(s1)}\n--\n{describe(s2)}\n{out1}\n{out2}"
    assert g1 == g2, f"guest side differs:\n{describe(g1)}\n--\n{describe(g2)}"


def describe(frames: list[bytes]) -> str:
    out = []
    for f in frames:
        ihl = (f[0] & 15) * 4
        sport, dport, seq, ack, off, flags, win, check = struct.unpack_from("!HHIIBBHH", f, ihl)
        out.append(f"{sport}>{dport} seq={seq} ack={ack} fl={flags:#x} len={len(f)} "
                   f"ttl={f[8]} id={struct.unpack_from('!H', f, 4)[0]} ck={check:#06x} "
                   f"opt={f[ihl + 20:ihl + (off >> 4) * 4].hex()}")
    return "\n".join(out)
