"""Read IP packets out of pcap and pcapng captures, without scapy.

`read_packets(path)` (or `iter_packets(fileobj)`) yields `(timestamp, ip_bytes)`: the
timestamp in float seconds since the epoch and the IPv4/IPv6 packet with its link-layer header
removed. Frames that carry no IP (ARP, LLDP, ...) are skipped silently. Captured bytes only:
a snaplen-truncated frame yields a short packet (its IP length field tells the true size).

Formats:
* pcap (libpcap): both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d)
  magic; the link type of the file header (its FCS bits are ignored).
* pcapng: every section (SHB, its own byte order), interfaces (IDB: link type, snaplen,
  if_tsresol, if_tsoffset) per section, Enhanced (EPB), Simple (SPB) and the obsolete
  Packet Block (type 2); every other block is skipped by its length.

Link types: 0 NULL / 108 LOOP (BSD loopback), 1 Ethernet (802.1Q/802.1ad/QinQ tags),
12 / 101 / 228 / 229 raw IP, 113 Linux cooked (SLL), 276 Linux cooked v2 (SLL2, what
`tcpdump -i any` writes). A link type not in this list is an error (`PcapError`), since
nothing useful could be read from it.

Anything malformed (bad magic, a record running past the end of the file, an impossible block
length) raises `PcapError` with a one-line message naming the file offset: the caller (the
`inspect` command) prints it and exits 2.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

__all__ = [
    "PcapError",
    "iter_packets",
    "read_packets",
    "strip_link",
    "LINKTYPE_NULL",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW_12",
    "LINKTYPE_RAW",
    "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL2",
    "SUPPORTED_LINKTYPES",
]


class PcapError(ValueError):
    """The file is not a capture we can read (remedy: nothing to inspect, exit 2)."""


# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_12,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
# BSD AF_INET6 differs per OS (24 NetBSD/OpenBSD, 28 FreeBSD, 30 Darwin; 10 is Linux).
NULL_AF_INET = 2
NULL_AF_INET6 = (10, 24, 28, 30)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_OPB = 2  # obsolete Packet Block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
IDB_OPT_TSRESOL = 9
IDB_OPT_TSOFFSET = 14
MAX_BLOCK = 64 * 1024 * 1024  # sanity bound for a pcapng block / pcap record


def _ethertype_payload(frame: bytes, off: int, ethertype: int) -> bytes | None:
    """Follow VLAN tags from `ethertype` at `off`; the IP packet, or None for non-IP."""
    while ethertype in VLAN_TPIDS:
        if len(frame) < off + 4:
            return None
        ethertype = int.from_bytes(frame[off + 2 : off + 4], "big")
        off += 4
    if ethertype in (ETH_P_IP, ETH_P_IPV6):
        return frame[off:]
    return None


def _ip_by_version(data: bytes) -> bytes | None:
    if data and data[0] >> 4 in (4, 6):
        return data
    return None


def strip_link(linktype: int, frame: bytes, little_endian_host: bool = True) -> bytes | None:
    """The IP packet inside `frame` of link type `linktype`, or None when it carries no IP.

    `little_endian_host` is the byte order of the capturing host, which LINKTYPE_NULL's
    4-byte address family is written in (the file's byte order tells it).
    """
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        return _ethertype_payload(frame, 14, int.from_bytes(frame[12:14], "big"))
    if linktype == LINKTYPE_LINUX_SLL2:
        # protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
        if len(frame) < 20:
            return None
        return _ethertype_payload(frame, 20, int.from_bytes(frame[0:2], "big"))
    if linktype == LINKTYPE_LINUX_SLL:
        # pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
        if len(frame) < 16:
            return None
        return _ethertype_payload(frame, 16, int.from_bytes(frame[14:16], "big"))
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _ip_by_version(frame)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        order = "big" if linktype == LINKTYPE_LOOP or not little_endian_host else "little"
        family = int.from_bytes(frame[0:4], order)
        if family > 0xFFFF:  # written by a host of the other byte order (Wireshark does this too)
            family = int.from_bytes(frame[0:4], "little" if order == "big" else "big")
        if family == NULL_AF_INET or family in NULL_AF_INET6:
            return _ip_by_version(frame[4:])
        return None
    raise PcapError(f"unsupported link type {linktype}")


def _read_exact(f: BinaryIO, n: int, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise PcapError(
            f"truncated capture: {what} at byte {offset} needs {n} bytes, {len(data)} left"
        )
    return data


def _iter_pcap(f: BinaryIO, head: bytes) -> Iterator[tuple[float, bytes]]:
    magic_le = int.from_bytes(head[:4], "little")
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        e = "<"
        magic = magic_le
    else:
        e = ">"
        magic = int.from_bytes(head[:4], "big")
    scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    rest = _read_exact(f, 20, "pcap file header", 4)
    _vmaj, _vmin, _zone, _sigfigs, snaplen, network = struct.unpack(e + "HHiIII", rest)
    linktype = network & 0xFFFF  # upper bits: FCS length / flags (ignored)
    if linktype not in SUPPORTED_LINKTYPES:
        raise PcapError(f"unsupported link type {linktype} in pcap file header")
    little = e == "<"
    offset = 24
    rec = struct.Struct(e + "IIII")
    while True:
        hdr = f.read(16)
        if not hdr:
            return
        if len(hdr) < 16:
            raise PcapError(f"truncated capture: record header at byte {offset} is cut short")
        sec, frac, incl, _orig = rec.unpack(hdr)
        if incl > MAX_BLOCK:
            raise PcapError(f"corrupt capture: record at byte {offset} claims {incl} bytes")
        frame = _read_exact(f, incl, "record data", offset + 16)
        offset += 16 + incl
        ip = strip_link(linktype, frame, little)
        if ip is not None:
            yield sec + frac * scale, ip


class _Iface:
    __slots__ = ("linktype", "snaplen", "scale", "tsoffset")

    def __init__(self, linktype: int, snaplen: int, scale: float, tsoffset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.scale = scale
        self.tsoffset = tsoffset


def _idb(body: bytes, e: str, offset: int) -> _Iface:
    if len(body) < 8:
        raise PcapError(f"corrupt capture: interface block at byte {offset} is too short")
    linktype, _res, snaplen = struct.unpack(e + "HHI", body[:8])
    scale, tsoffset = 1e-6, 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack(e + "HH", body[pos : pos + 4])
        value = body[pos + 4 : pos + 4 + length]
        if code == 0:
            break
        if code == IDB_OPT_TSRESOL and length >= 1:
            r = value[0]
            scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
        elif code == IDB_OPT_TSOFFSET and length >= 8:
            (tsoffset,) = struct.unpack(e + "q", value[:8])
        pos += 4 + length + (-length % 4)
    return _Iface(linktype, snaplen, scale, tsoffset)


def _iter_pcapng(f: BinaryIO, head: bytes) -> Iterator[tuple[float, bytes]]:
    offset = 0
    e = "<"
    ifaces: list[_Iface] = []
    first = True
    while True:
        hdr = head if first else f.read(8)
        first = False
        if not hdr:
            return
        if len(hdr) < 8:
            raise PcapError(f"truncated capture: block header at byte {offset} is cut short")
        btype_raw = hdr[:4]
        if int.from_bytes(btype_raw, "little") == PCAPNG_SHB:
            # A new section: its byte-order magic decides how everything after it is read.
            bom = _read_exact(f, 4, "section header", offset + 8)
            if int.from_bytes(bom, "little") == PCAPNG_BOM:
                e = "<"
            elif int.from_bytes(bom, "big") == PCAPNG_BOM:
                e = ">"
            else:
                raise PcapError(f"corrupt capture: bad pcapng byte-order magic at byte {offset + 8}")
            ifaces = []
            (blen,) = struct.unpack(e + "I", hdr[4:8])
            if blen < 28 or blen % 4 or blen > MAX_BLOCK:
                raise PcapError(f"corrupt capture: section header at byte {offset} has length {blen}")
            body = _read_exact(f, blen - 12, "section header", offset + 12)
            if struct.unpack(e + "I", body[-4:])[0] != blen:
                raise PcapError(f"corrupt capture: section header at byte {offset} length mismatch")
            offset += blen
            continue
        btype, blen = struct.unpack(e + "II", hdr)
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise PcapError(f"corrupt capture: block at byte {offset} has length {blen}")
        rest = _read_exact(f, blen - 8, f"block of type {btype}", offset + 8)
        if struct.unpack(e + "I", rest[-4:])[0] != blen:
            raise PcapError(f"corrupt capture: block at byte {offset} length mismatch")
        body = rest[:-4]
        here = offset
        offset += blen
        if btype == PCAPNG_IDB:
            iface = _idb(body, e, here)
            if iface.linktype not in SUPPORTED_LINKTYPES:
                raise PcapError(f"unsupported link type {iface.linktype} (interface {len(ifaces)})")
            ifaces.append(iface)
            continue
        if btype == PCAPNG_EPB or btype == PCAPNG_OPB:
            if len(body) < 20:
                raise PcapError(f"corrupt capture: packet block at byte {here} is too short")
            if btype == PCAPNG_EPB:
                ifid, ts_hi, ts_lo, caplen, _orig = struct.unpack(e + "IIIII", body[:20])
            else:
                ifid, _drops, ts_hi, ts_lo, caplen, _orig = struct.unpack(e + "HHIIII", body[:20])
            if caplen > len(body) - 20:
                raise PcapError(f"corrupt capture: packet block at byte {here} claims {caplen} bytes")
            frame = body[20 : 20 + caplen]
            iface = _iface(ifaces, ifid, here)
            ts = (ts_hi << 32) | ts_lo
        elif btype == PCAPNG_SPB:
            if len(body) < 4:
                raise PcapError(f"corrupt capture: simple packet block at byte {here} is too short")
            (orig,) = struct.unpack(e + "I", body[:4])
            iface = _iface(ifaces, 0, here)
            caplen = min(orig, len(body) - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            frame = body[4 : 4 + caplen]
            ts = None
        else:
            continue  # NRB, ISB, DSB, custom, ...: nothing to read
        ip = strip_link(iface.linktype, frame, e == "<")
        if ip is not None:
            stamp = 0.0 if ts is None else ts * iface.scale + iface.tsoffset
            yield stamp, ip


def _iface(ifaces: list[_Iface], ifid: int, offset: int) -> _Iface:
    if ifid >= len(ifaces):
        raise PcapError(f"corrupt capture: packet block at byte {offset} names unknown interface {ifid}")
    return ifaces[ifid]


def iter_packets(f: BinaryIO) -> Iterator[tuple[float, bytes]]:
    """Yield `(timestamp, ip_bytes)` from an open binary capture file (pcap or pcapng)."""
    head = f.read(8)
    if len(head) < 4:
        raise PcapError("not a capture: file is empty or shorter than a header")
    magic_le = int.from_bytes(head[:4], "little")
    magic_be = int.from_bytes(head[:4], "big")
    if magic_le == PCAPNG_SHB:
        if len(head) < 8:
            raise PcapError("truncated capture: pcapng section header is cut short")
        yield from _iter_pcapng(f, head)
        return
    if PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
        if len(head) < 8:
            raise PcapError("truncated capture: pcap file header is cut short")
        # _iter_pcap reads the header after the magic itself: give back bytes 4..8.
        yield from _iter_pcap(_Prefixed(head[4:], f), head)
        return
    raise PcapError(f"not a pcap or pcapng file (starts with {head[:4].hex()})")


class _Prefixed:
    """A file whose first bytes were already read: serve them again, then the file."""

    def __init__(self, prefix: bytes, f: BinaryIO) -> None:
        self._prefix = prefix
        self._f = f

    def read(self, n: int) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(out) < n:
                out += self._f.read(n - len(out))
            return out
        return self._f.read(n)


def read_packets(path: str) -> Iterator[tuple[float, bytes]]:
    """Yield `(timestamp, ip_bytes)` from the capture at `path`; `PcapError` when unreadable."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise PcapError(f"cannot open {path}: {exc.strerror or exc}") from None
    with f:
        yield from iter_packets(f)
