"""The pcap/pcapng reader of `middlebox inspect`: every format, byte order and link type.

Files are written here, byte by byte, from the format specifications (libpcap file format,
draft-ietf-opsawg-pcapng), and tshark reads the same files to prove the writers are right.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess

import pytest

from middlebox.analysis.pcap import PcapError, iter_packets, read_packets, strip_link

IPV4 = bytes.fromhex(
    "4500002c00014000400600000a0000010a010102"  # IPv4, 44 bytes, TCP
    "c0000050000000010000000060022000000000000204059c"  # SYN with MSS
)
IPV6 = bytes.fromhex("60000000001806400000000000000000000000000000000100000000000000000000000000000002") + IPV4[20:]


def eth(payload: bytes, ethertype: int, vlans: tuple[int, ...] = ()) -> bytes:
    head = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for tpid in vlans:
        head += struct.pack(">HH", tpid, 42)
    return head + struct.pack(">H", ethertype) + payload


def sll(payload: bytes, proto: int) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", proto) + payload


def sll2(payload: bytes, proto: int) -> bytes:
    return struct.pack(">HHIHBB8s", proto, 0, 3, 1, 4, 6, b"\x02\0\0\0\0\x01\0\0") + payload


def null(payload: bytes, family: int, order: str) -> bytes:
    return family.to_bytes(4, order) + payload


def ip_family(p: bytes) -> int:
    return 0x0800 if p[0] >> 4 == 4 else 0x86DD


# (linktype, frame builder from an IP packet, byte order of the null header or None)
def frames_for(linktype: int, ip: bytes, order: str = "little") -> list[bytes]:
    et = ip_family(ip)
    if linktype == 1:
        return [eth(ip, et), eth(ip, et, (0x8100,)), eth(ip, et, (0x88A8, 0x8100))]
    if linktype == 113:
        return [sll(ip, et), sll(struct.pack(">HH", 7, et) + ip, 0x8100)]
    if linktype == 276:
        return [sll2(ip, et)]
    if linktype in (12, 101) or (linktype == 228 and et == 0x0800) or (linktype == 229 and et == 0x86DD):
        return [ip]
    if linktype == 0:
        fam = 2 if et == 0x0800 else 24
        return [null(ip, fam, order)]
    if linktype == 108:
        fam = 2 if et == 0x0800 else 24
        return [null(ip, fam, "big")]
    return []


LINKTYPES = (0, 1, 12, 101, 108, 113, 228, 229, 276)
NON_IP = {
    1: eth(b"\x00" * 28, 0x0806),  # ARP
    113: sll(b"\x00" * 28, 0x0806),
    276: sll2(b"\x00" * 28, 0x0806),
    0: null(IPV4, 7, "little"),
}


def write_pcap(records, linktype: int, order: str = "<", nano: bool = False, snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for ts, frame in records:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out += struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame
    return out


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def _opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(order, 4, b"pytest") + _opt(order, 0, b"")
    return _block(order, 0x0A0D0D0A, body)


def idb(order: str, linktype: int, tsresol: int | None = None, snaplen: int = 0, tsoffset: int = 0) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, snaplen)
    body += _opt(order, 2, b"if0")
    if tsresol is not None:
        body += _opt(order, 9, bytes([tsresol]))
    if tsoffset:
        body += _opt(order, 14, struct.pack(order + "q", tsoffset))
    body += _opt(order, 0, b"")
    return _block(order, 1, body)


def epb(order: str, ifid: int, ticks: int, frame: bytes) -> bytes:
    body = struct.pack(order + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame
    body += b"\0" * (-len(body) % 4) + _opt(order, 1, b"comment") + _opt(order, 0, b"")
    return _block(order, 6, body)


def spb(order: str, frame: bytes) -> bytes:
    return _block(order, 3, struct.pack(order + "I", len(frame)) + frame)


def opb(order: str, ifid: int, ticks: int, frame: bytes) -> bytes:
    body = struct.pack(order + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame
    return _block(order, 2, body)


def read_bytes(data: bytes):
    return list(iter_packets(io.BytesIO(data)))


@pytest.mark.parametrize("linktype", LINKTYPES)
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_every_linktype(linktype, order, nano):
    host = "little" if order == "<" else "big"
    ips = [IPV4, IPV6]
    records, expected = [], []
    ts = 1700000000.25
    for ip in ips:
        for frame in frames_for(linktype, ip, host):
            records.append((ts, frame))
            expected.append(ip)
            ts += 0.5
    if linktype in NON_IP:
        records.append((ts, NON_IP[linktype]))
    got = read_bytes(write_pcap(records, linktype, order, nano))
    assert [p for _, p in got] == expected
    assert got[0][0] == pytest.approx(1700000000.25, abs=1e-6)
    assert got[-1][0] == pytest.approx(records[len(expected) - 1][0], abs=1e-6)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_blocks_and_resolutions(order):
    host = "little" if order == "<" else "big"
    data = shb(order)
    data += idb(order, 1)  # if 0: Ethernet, default µs
    data += idb(order, 276, tsresol=9)  # if 1: SLL2, ns
    data += idb(order, 0, tsresol=0x80 | 10, tsoffset=100)  # if 2: NULL, 2^-10 s, +100 s
    data += _block(order, 0x00000004, b"\x01\x00\x04\x00\x0a\x00\x00\x01host\x00\x00\x00\x00")  # NRB
    data += _block(order, 0x00000BAD, b"custom block")
    data += epb(order, 0, 1_700_000_000_500_000, eth(IPV4, 0x0800, (0x8100,)))
    data += epb(order, 1, 1_700_000_001_000_000_000, sll2(IPV6, 0x86DD))
    data += epb(order, 2, 1024 * 5 + 512, null(IPV4, 2, host))
    data += _block(order, 5, struct.pack(order + "III", 0, 0, 0))  # ISB
    data += epb(order, 0, 1, eth(b"\0" * 28, 0x0806))  # ARP: skipped
    data += opb(order, 1, 7_000_000_000, sll2(IPV4, 0x0800))
    data += spb(order, eth(IPV6, 0x86DD))
    got = read_bytes(data)
    assert [p for _, p in got] == [IPV4, IPV6, IPV4, IPV4, IPV6]
    assert got[0][0] == pytest.approx(1_700_000_000.5)
    assert got[1][0] == pytest.approx(1_700_000_001.0)
    assert got[2][0] == pytest.approx(105.5)
    assert got[3][0] == pytest.approx(7.0)


def test_pcapng_sections_change_byte_order_and_interfaces():
    data = shb("<") + idb("<", 101) + epb("<", 0, 1, IPV4)
    data += shb(">") + idb(">", 113) + epb(">", 0, 2, sll(IPV6, 0x86DD))
    assert [p for _, p in read_bytes(data)] == [IPV4, IPV6]


def test_pcapng_spb_honours_snaplen():
    data = shb("<") + idb("<", 101, snaplen=30) + spb("<", IPV4)
    assert read_bytes(data) == [(0.0, IPV4[:30])]


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"hello world, not a capture", "not a pcap or pcapng"),
        (write_pcap([(1.0, IPV4)], 101)[:20], "truncated"),
        (write_pcap([(1.0, IPV4)], 101)[:-5], "truncated"),
        (write_pcap([(1.0, IPV4)], 101)[:30], "truncated"),
        (write_pcap([(1.0, IPV4)], 147), "unsupported link type 147"),
        ((shb("<") + idb("<", 1) + epb("<", 0, 1, eth(IPV4, 0x800)))[:-3], "truncated"),
        (shb("<") + epb("<", 0, 1, IPV4), "unknown interface 0"),
        (shb("<")[:8] + b"\x00\x00\x00\x00" + shb("<")[12:], "byte-order magic"),
        (shb("<") + struct.pack("<II", 6, 13) + b"\0" * 8, "length 13"),
    ],
)
def test_garbage_raises_one_line_error(data, fragment):
    with pytest.raises(PcapError) as exc:
        read_bytes(data)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(PcapError, match="cannot open"):
        list(read_packets(str(tmp_path / "nope.pcap")))


def test_strip_link_short_frames_are_not_ip():
    for lt in (0, 1, 113, 276, 101):
        assert strip_link(lt, b"\x45") is None or lt == 101
    assert strip_link(1, eth(b"", 0x8100)) is None


@pytest.mark.parametrize("kind", ["pcap-le-us", "pcap-be-ns", "pcapng-le", "pcapng-be"])
@pytest.mark.parametrize("linktype", [1, 113, 276, 101, 0])
def test_tshark_reads_our_files_the_same(tmp_path, kind, linktype):
    """Our test writers are right: tshark decodes the same IP sources from them."""
    assert shutil.which("tshark"), "tshark is required (make deps installs it)"
    ip = IPV4
    frames = frames_for(linktype, ip)
    if kind.startswith("pcapng"):
        order = "<" if kind.endswith("le") else ">"
        data = shb(order) + idb(order, linktype) + b"".join(epb(order, 0, 10**15 + i, f) for i, f in enumerate(frames))
    else:
        data = write_pcap([(1.5, f) for f in frames], linktype, "<" if "le" in kind else ">", "ns" in kind)
    path = tmp_path / "x.cap"
    path.write_bytes(data)
    ours = list(read_packets(str(path)))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "json", "-e", "ip.src", "-e", "tcp.srcport"],
        capture_output=True, text=True, check=True,
    ).stdout
    theirs = json.loads(out)
    assert len(ours) == len(theirs) == len(frames)
    for layer in theirs:
        assert layer["_source"]["layers"]["ip.src"] == ["10.0.0.1"]
        assert layer["_source"]["layers"]["tcp.srcport"] == ["49152"]
