"""A misbehaving MPTCP peer for the multipath tests, run in the server namespace: every MP_JOIN
SYN/ACK (a server's) or third ACK (a client's, the inbound role) that passes NFQUEUE `queue`
gets its HMAC corrupted (one byte flipped, TCP checksum made right again), as a broken or
hostile peer would send it; other packets pass unchanged.

    python join_peer.py QUEUE
"""

import sys

from netfilterqueue import NetfilterQueue

from middlebox.wire import parse_packet, tcp_checksum


def corrupt(data: bytes) -> bytes:
    buf = bytearray(data)
    p = parse_packet(data)
    i, end = p.ip_hlen + 20, p.payload_off
    while i + 1 < end:
        kind = buf[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        size = buf[i + 1]
        if size < 2:
            break
        if kind == 30 and size in (16, 24) and buf[i + 2] >> 4 == 1:  # MP_JOIN: SYN/ACK, third ACK
            buf[i + 4] ^= 0xFF  # the first byte of the (truncated) HMAC
        i += size
    off = p.ip_hlen + 16
    buf[off:off + 2] = b"\0\0"
    buf[off:off + 2] = tcp_checksum(bytes(buf), parse_packet(bytes(buf))).to_bytes(2, "big")
    return bytes(buf)


def main() -> None:
    def cb(pkt):
        pkt.set_payload(corrupt(pkt.get_payload()))
        pkt.accept()

    nfq = NetfilterQueue()
    nfq.bind(int(sys.argv[1]), cb)
    print("ready", flush=True)
    try:
        nfq.run()
    finally:
        nfq.unbind()


if __name__ == "__main__":
    main()
