"""Hostile and odd traffic for test_correctness.py: hand-made IPv4/TCP segments sent with a raw
socket, one-packet sniffing with tcpdump, netem loss, and a bounded SYN flood that runs as its
own process (`python adversary.py synflood ...`) inside the guest namespace.

Everything here only ever sends to addresses given by the caller, which are the addresses of
the test's own namespaces.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import sys
import time

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp4(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
         window: int = 0, options: bytes = b"", payload: bytes = b"") -> bytes:
    """A complete IPv4 packet (checksums done) carrying one TCP segment."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    doff = (20 + len(options)) // 4
    assert (20 + len(options)) % 4 == 0
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & M32, ack & M32, doff << 4, flags,
                      window, 0, 0) + options + payload
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    c = _csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000,
                     64, socket.IPPROTO_TCP, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def raw_sender() -> socket.socket:
    """IPPROTO_RAW socket (IP_HDRINCL implied), in the namespace of the calling thread."""
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


# -- reading segments back ------------------------------------------------------------------


def parse_tcp4(frame: bytes, link_header: int = 14) -> dict | None:
    """Fields of an IPv4/TCP packet inside an Ethernet frame (None if it is not one)."""
    ip = frame[link_header:]
    if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        return None
    ihl = (ip[0] & 0xF) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    tcp = ip[ihl:total]  # shorter than the segment when the capture was cut (snaplen)
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, off, flags, window = struct.unpack_from("!HHIIBBH", tcp)
    doff = (off >> 4) * 4
    return {"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
            "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags,
            "window": window, "options": bytes(tcp[20:doff]), "payload": bytes(tcp[doff:]),
            "plen": total - ihl - doff}


def read_pcap(data: bytes) -> list[bytes]:
    """The frames of a classic pcap file (as `tcpdump -w` writes it)."""
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        if off + incl > len(data):  # a record still being written
            break
        frames.append(data[off:off + incl])
        off += incl
    return frames


def sniff(t, ns: str, ifname: str, bpf: str, count: int = 1, timeout: float = 10) -> list[dict]:
    """`count` IPv4/TCP segments matching `bpf` seen on `ifname` in `ns` (tcpdump, both ways)."""
    r = t.run(ns, ["timeout", str(timeout), "tcpdump", "-i", ifname, "-U", "-s", "256",
                   "-c", str(count), "-w", "-", bpf], check=False, text=False, timeout=timeout + 5)
    return [p for p in map(parse_tcp4, read_pcap(r.stdout)) if p]


class Capture:
    """tcpdump running in the background in `ns` (packet-buffered), readable while it runs.
    Started through the topology, so it is killed at the topology's close on any failure."""

    def __init__(self, t, ns: str, ifname: str, bpf: str, path, snaplen: int = 128) -> None:
        import subprocess

        self.path = str(path)
        self.proc = t.popen(ns, ["tcpdump", "-i", ifname, "-U", "-n", "-s", str(snaplen),
                                 "-w", self.path, bpf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # tcpdump writes the file header once listening
            try:
                with open(self.path, "rb") as f:
                    if len(f.read(24)) == 24:
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        else:
            raise TimeoutError(f"tcpdump did not start in {ns}")
        time.sleep(0.2)

    def packets(self) -> list[dict]:
        with open(self.path, "rb") as f:
            return [p for p in map(parse_tcp4, read_pcap(f.read())) if p]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by pid: our own tcpdump
        try:
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait(5)


# -- path impairment ------------------------------------------------------------------------


def path_loss(t, percent: float, path: int = 1) -> None:
    """Random loss of `percent` % of the TCP packets each way on mbox<->server path `path`:
    nft netdev ingress rules (this kernel has no netem) on the receiving end of each
    direction, so a packet lost towards the guest never reaches the converter and one lost
    towards the server left the converter like any packet lost on the wire. Called again
    for another path, that path drops too (a chain per path in the same table).

    Segments with MP_CAPABLE (the handshake and the first data) are spared: losing both the
    third ACK and the first data makes Linux's server take the next segment, with a DSS, as
    a fallback (MPCapableFallbackACK). That is the protocol's outcome, the same with a Linux
    client, not a conversion error; it came once in a proof (about 1 in 2500 connections at
    2 %), and these tests judge the data, not the handshake.

    Segments with MP_JOIN (a join's SYN, SYN/ACK and third ACK) are spared for the same
    reason: a proof lost both SYNs of the only join (1 in 2500 at 2 %), the 12 MB upload
    ended on subflow 1 before the third SYN was due, and a test of the join's repair had no
    join. Join SYN loss and backoff are tested in test_subflow_table.py."""
    p = t.paths[path - 1]
    per_mille = round(percent * 10)
    for ns, ifname in ((t.mbox, p.mbox_if), (t.server, p.server_if)):
        script = f"""
table netdev mbtestloss {{
    chain ingress{path} {{
        type filter hook ingress device "{ifname}" priority 0; policy accept;
        ip protocol tcp tcp option mptcp subtype 0 accept
        ip protocol tcp tcp option mptcp subtype 1 accept
        ip protocol tcp numgen random mod 1000 < {per_mille} counter drop
    }}
}}
"""
        t.run(ns, ["nft", "-f", "-"], input=script)


def path_loss_dropped(t, path: int = 1) -> int:
    """Packets path_loss() dropped so far, both ends."""
    import re

    total = 0
    for ns in (t.mbox, t.server):
        out = t.run(ns, ["nft", "list", "table", "netdev", "mbtestloss"]).stdout
        total += sum(int(n) for n in re.findall(r"counter packets (\d+)", out))
    return total


def soak(t, n: int, out: str, run, what: str, slow: float = 0.0) -> tuple:
    """Run `run(i)` for i < n, with captures (TCP, 100 bytes of each packet) of the
    middlebox's guest side and each uplink (`out`/guest-i.pcap, uplink<k>-i.pcap), until one
    raises AssertionError or OSError or takes longer than `slow` seconds (0: any time):
    (the failure or None, seconds per run). The failing run's captures are kept."""
    failed = None
    took = []
    for i in range(n):
        caps = [Capture(t, t.mbox, t.mbox_guest_if, "tcp", f"{out}/guest-{i}.pcap", 100)]
        caps += [Capture(t, t.mbox, p.mbox_if, "tcp", f"{out}/uplink{k + 1}-{i}.pcap", 100)
                 for k, p in enumerate(t.paths)]
        t0 = time.monotonic()
        try:
            run(i)
        except (AssertionError, OSError) as e:
            failed = f"{what} {i}: {e!r}"
        finally:
            for c in caps:
                c.stop()
        took.append(round(time.monotonic() - t0, 1))
        if failed is None and slow and took[-1] > slow:
            failed = f"{what} {i} took {took[-1]} s"
        if failed:
            break
        for c in caps:
            os.unlink(c.path)
    return failed, took


# -- SYN flood, as a process of its own ----------------------------------------------------


def synflood(src: str, dst: str, dport: int, rate: int, seconds: float,
             ports: tuple[int, int] = (1024, 32767)) -> int:
    """SYNs from src:(ports) to dst:dport at `rate` per second for `seconds`; returns the
    number sent. Source ports stay below the ephemeral range, so no real connection of the
    guest can share a 4-tuple with a forged SYN."""
    s = raw_sender()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    lo, hi = ports
    mss = b"\x02\x04\x05\xb4"  # MSS 1460
    sent = 0
    port = lo
    start = time.monotonic()
    slot = 0.01
    per_slot = max(1, int(rate * slot))
    rng = random.Random(0x5EED)
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            break
        due = int(now / slot) + 1
        target = min(due * per_slot, int(seconds * rate))
        while sent < target:
            pkt = tcp4(src, dst, port, dport, rng.getrandbits(32), 0, SYN, 64240, mss)
            try:
                s.sendto(pkt, (dst, 0))
            except BlockingIOError:
                pass
            except OSError:  # ENOBUFS and friends under load: the flood goes on
                pass
            sent += 1
            port = lo if port >= hi else port + 1
        time.sleep(max(0.0, due * slot - (time.monotonic() - start)))
    s.close()
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("synflood")
    f.add_argument("--src", required=True)
    f.add_argument("--dst", required=True)
    f.add_argument("--dport", type=int, required=True)
    f.add_argument("--rate", type=int, default=20000)
    f.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args(argv)
    if a.cmd == "synflood":
        start = time.monotonic()
        n = synflood(a.src, a.dst, a.dport, a.rate, a.seconds)
        print(f"sent {n} SYNs in {time.monotonic() - start:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
