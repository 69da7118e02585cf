"""Edit pcap files record by record: flip bytes, fix TCP checksums, drop or truncate packets.

For inspect's tests (corrupting real captures one byte at a time). Reads and writes the pcap
tcpdump writes: little-endian, microseconds, link type 276 (LINUX_SLL2).
"""

from __future__ import annotations

import struct

from middlebox.wire import options_of, parse_mptcp, parse_packet, tcp_checksum

SLL2_LEN = 20


class Capture:
    def __init__(self, path: str) -> None:
        data = open(path, "rb").read()
        assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
        assert struct.unpack("<I", data[20:24])[0] == 276
        self.header = bytearray(data[:24])
        self.records: list[tuple[bytearray, bytearray]] = []
        off = 24
        while off < len(data):
            hdr = bytearray(data[off : off + 16])
            incl = struct.unpack("<I", hdr[8:12])[0]
            self.records.append((hdr, bytearray(data[off + 16 : off + 16 + incl])))
            off += 16 + incl

    def packets(self):
        """(index, ip bytes, Packet, [(raw option offset in ip, parsed option)])"""
        for i, (_, frame) in enumerate(self.records):
            ip = bytes(frame[SLL2_LEN:])
            pkt = parse_packet(ip)
            opts = []
            pos = pkt.ip_hlen + 20
            for raw in options_of(ip, pkt).mptcp:
                where = ip.index(raw, pos)
                opts.append((where, parse_mptcp(raw, pkt.flags, pkt.payload_len)))
            yield i, ip, pkt, opts

    def flip(self, index: int, ip_offset: int, mask: int = 0x01) -> None:
        self.records[index][1][SLL2_LEN + ip_offset] ^= mask

    def set_full_tcp_checksum(self, index: int) -> None:
        frame = self.records[index][1]
        ip = bytes(frame[SLL2_LEN:])
        pkt = parse_packet(ip)
        frame[SLL2_LEN + pkt.ip_hlen + 16 : SLL2_LEN + pkt.ip_hlen + 18] = tcp_checksum(ip, pkt).to_bytes(2, "big")

    def drop(self, index: int) -> None:
        del self.records[index]

    def truncate_all(self, snaplen: int) -> None:
        for hdr, frame in self.records:
            del frame[snaplen:]
            hdr[8:12] = struct.pack("<I", len(frame))
        self.header[16:20] = struct.pack("<I", snaplen)

    def write(self, path) -> str:
        with open(path, "wb") as f:
            f.write(self.header)
            for hdr, frame in self.records:
                f.write(hdr)
                f.write(frame)
        return str(path)
