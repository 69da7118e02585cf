"""IPv4/IPv6 + TCP: parse headers and options, rewrite segments, checksums (reference).

This is the readable spec of the wire layer (docs/wire-api.md); `cext/_wire.pyx` is its
Cython twin and must return the same values for the same inputs. Everything here is
stateless bytes <-> values. The only exception ever raised is `WireError`:

* `parse_packet` raises it for a buffer that is not a TCP segment this layer handles;
* builders (`rewrite`, `encode_tcp_options`, `csum_replace`, `ipv4_checksum`,
  `dss_checksum`) raise it for impossible requests (value out of range, > 40 option bytes);
* option walkers (`parse_options`, `strip_mptcp`) never raise: malformed options are
  ignored, the way Linux `tcp_parse_options()` ignores them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from middlebox.wire.errors import WireError

# --- TCP header (RFC 9293 §3.1) ------------------------------------------------------------

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

TCP_HLEN = 20  # fixed part of the TCP header
TCP_MAX_OPTLEN = 40  # data offset is 4 bits of 32-bit words: 60 - 20

# offsets inside the TCP header
TCP_OFF_SEQ = 4
TCP_OFF_ACK = 8
TCP_OFF_DOFF = 12  # data offset (high nibble) + reserved/AE bits; byte 13 is the flag byte
TCP_OFF_FLAGS = 13
TCP_OFF_WINDOW = 14
TCP_OFF_CHECK = 16

# TCP option kinds (IANA "TCP Option Kind Numbers")
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8
TCPOPT_MPTCP = 30  # RFC 8684 §3

TCPOLEN_MSS = 4
TCPOLEN_WINDOW = 3
TCPOLEN_SACK_PERM = 2
TCPOLEN_TIMESTAMP = 10
TCPOLEN_SACK_BASE = 2
TCPOLEN_SACK_PERBLOCK = 8
TCP_MAX_SACK_BLOCKS = 4  # 2 + 4 * 8 = 34 is the most that fits in 40 bytes

# --- IP headers ----------------------------------------------------------------------------

IPPROTO_TCP = 6
IPV4_HLEN = 20  # without options (RFC 791 §3.1)
IPV6_HLEN = 40  # fixed header (RFC 8200 §3); extension headers are not supported
IPV4_MF = 0x2000  # "more fragments" bit of the flags/fragment-offset word
IPV4_FRAG_OFFSET = 0x1FFF


@dataclass(frozen=True, slots=True)
class Packet:
    """Where things are in one IPv4/IPv6 TCP segment (see docs/wire-api.md, `Packet`)."""

    version: int  # 4 or 6
    src: bytes  # 4 or 16 bytes
    dst: bytes
    ip_hlen: int  # IPv4 IHL*4, IPv6 40: the offset of the TCP header
    ttl: int  # IPv4 TTL / IPv6 hop limit
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int  # the TCP flag byte
    window: int  # raw, unscaled
    doff: int  # TCP header length in bytes, 20..60
    payload_off: int  # ip_hlen + doff
    payload_len: int  # from the IP length fields
    length: int  # payload_off + payload_len; bytes past it in the buffer are ignored


def packet_fields(p) -> tuple:
    """All attributes of a `Packet` (reference or twin) as a tuple, in the documented order."""
    return (
        p.version,
        p.src,
        p.dst,
        p.ip_hlen,
        p.ttl,
        p.sport,
        p.dport,
        p.seq,
        p.ack,
        p.flags,
        p.window,
        p.doff,
        p.payload_off,
        p.payload_len,
        p.length,
    )


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """The TCP options of one segment (absent: the default shown)."""

    mss: int = -1
    wscale: int = -1  # as received (Linux clamps to 14 when it *uses* it; we report raw)
    sack_perm: bool = False
    ts_val: int = -1
    ts_ecr: int = -1
    sack: tuple = ()  # ((left, right), ...)
    mptcp: tuple = ()  # raw kind-30 options, each bytes from the kind byte to its end


# --- parsing -------------------------------------------------------------------------------


def parse_packet(buf: bytes) -> Packet:
    """Locate the IP and TCP headers of `buf`; `WireError` if it is not a TCP segment we handle.

    IP checksums are not verified (the kernel did that before the packet reached us).
    """
    if len(buf) < 1:
        raise WireError("empty buffer")
    version = buf[0] >> 4
    if version == 4:
        # RFC 791 §3.1
        if len(buf) < IPV4_HLEN:
            raise WireError("shorter than an IPv4 header")
        ip_hlen = (buf[0] & 0x0F) * 4
        if ip_hlen < IPV4_HLEN:
            raise WireError("IPv4 IHL < 5")
        (length,) = struct.unpack_from("!H", buf, 2)
        if length < ip_hlen + TCP_HLEN or length > len(buf):
            raise WireError("IPv4 total length does not fit IP + TCP headers and the buffer")
        (frag,) = struct.unpack_from("!H", buf, 6)
        if frag & (IPV4_MF | IPV4_FRAG_OFFSET):
            raise WireError("IPv4 fragment")
        if buf[9] != IPPROTO_TCP:
            raise WireError("not TCP")
        ttl = buf[8]
        src = bytes(buf[12:16])
        dst = bytes(buf[16:20])
    elif version == 6:
        # RFC 8200 §3
        if len(buf) < IPV6_HLEN:
            raise WireError("shorter than an IPv6 header")
        ip_hlen = IPV6_HLEN
        (ip6_plen,) = struct.unpack_from("!H", buf, 4)
        length = IPV6_HLEN + ip6_plen
        if ip6_plen < TCP_HLEN or length > len(buf):
            raise WireError("IPv6 payload length does not fit a TCP header and the buffer")
        if buf[6] != IPPROTO_TCP:
            raise WireError("IPv6 next header is not TCP (extension headers unsupported)")
        ttl = buf[7]
        src = bytes(buf[8:24])
        dst = bytes(buf[24:40])
    else:
        raise WireError(f"IP version {version}")

    sport, dport, seq, ack, doff_byte, flags, window = struct.unpack_from("!HHIIBBH", buf, ip_hlen)
    doff = (doff_byte >> 4) * 4
    if doff < TCP_HLEN:
        raise WireError("TCP data offset < 5")
    payload_off = ip_hlen + doff
    if payload_off > length:
        raise WireError("TCP data offset past the IP length")
    return Packet(
        version=version,
        src=src,
        dst=dst,
        ip_hlen=ip_hlen,
        ttl=ttl,
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        doff=doff,
        payload_off=payload_off,
        payload_len=length - payload_off,
        length=length,
    )


def _clamp(start: int, end: int, n: int) -> tuple[int, int]:
    """Clamp an option area [start, end) to a buffer of length n (never raises)."""
    start = min(max(start, 0), n)
    end = min(max(end, start), n)
    return start, end


def _walk_options(buf: bytes, start: int, end: int):
    """Yield (offset, kind, size) for each option in buf[start:end], like Linux
    `tcp_parse_options()`: EOL stops; NOP is one byte (size 1); any other kind needs a
    length byte; a length < 2 or one running past `end` (a partial option) stops the walk."""
    i, end = _clamp(start, end, len(buf))
    while i < end:
        kind = buf[i]
        if kind == TCPOPT_EOL:
            return
        if kind == TCPOPT_NOP:
            yield i, kind, 1
            i += 1
            continue
        if end - i < 2:
            return
        size = buf[i + 1]
        if size < 2 or size > end - i:
            return
        yield i, kind, size
        i += size


def parse_options(buf: bytes, start: int, end: int) -> TcpOptions:
    """Parse the TCP options in buf[start:end]. Never raises.

    Known kinds with a wrong length are ignored; unknown kinds are skipped; a later
    occurrence of a kind overwrites an earlier one (as in Linux). `start`/`end` out of the
    buffer are clamped to it.
    """
    mss = wscale = ts_val = ts_ecr = -1
    sack_perm = False
    sack: tuple = ()
    mptcp = []
    for i, kind, size in _walk_options(buf, start, end):
        if kind == TCPOPT_MSS and size == TCPOLEN_MSS:
            (mss,) = struct.unpack_from("!H", buf, i + 2)
        elif kind == TCPOPT_WINDOW and size == TCPOLEN_WINDOW:
            wscale = buf[i + 2]
        elif kind == TCPOPT_SACK_PERM and size == TCPOLEN_SACK_PERM:
            sack_perm = True
        elif kind == TCPOPT_TIMESTAMP and size == TCPOLEN_TIMESTAMP:
            ts_val, ts_ecr = struct.unpack_from("!II", buf, i + 2)
        elif kind == TCPOPT_SACK:
            nblocks, rest = divmod(size - TCPOLEN_SACK_BASE, TCPOLEN_SACK_PERBLOCK)
            if rest == 0 and 1 <= nblocks <= TCP_MAX_SACK_BLOCKS:
                edges = struct.unpack_from(f"!{2 * nblocks}I", buf, i + 2)
                sack = tuple(zip(edges[0::2], edges[1::2]))
        elif kind == TCPOPT_MPTCP:
            mptcp.append(bytes(buf[i : i + size]))
    return TcpOptions(
        mss=mss,
        wscale=wscale,
        sack_perm=sack_perm,
        ts_val=ts_val,
        ts_ecr=ts_ecr,
        sack=sack,
        mptcp=tuple(mptcp),
    )


def options_of(buf: bytes, pkt: Packet) -> TcpOptions:
    """The TCP options of a parsed packet."""
    return parse_options(buf, pkt.ip_hlen + TCP_HLEN, pkt.payload_off)


def strip_mptcp(buf: bytes, start: int, end: int) -> bytes:
    """The options in buf[start:end] without any kind-30 (MPTCP) option, the rest byte for byte.

    The walk is `parse_options`'s: EOL and what follows are dropped, and so is a partial or
    malformed tail where the walk stops (it is not an option a receiver would parse).
    No padding is added. Never raises.
    """
    return b"".join(
        bytes(buf[i : i + size]) for i, kind, size in _walk_options(buf, start, end) if kind != TCPOPT_MPTCP
    )


def encode_tcp_options(
    mss: int = -1,
    wscale: int = -1,
    sack_perm: bool = False,
    ts_val: int = -1,
    ts_ecr: int = -1,
    sack=(),
) -> bytes:
    """Encode the non-MPTCP options in Linux `tcp_options_write()` order and alignment.

    MSS; SACK_PERM+TS as `04 02 08 0a ...` or `01 01 08 0a ...` (SACK_PERM alone as
    `01 01 04 02`); NOP + WS; SACK as `01 01 05 ...`. The timestamp option is written when
    `ts_val` is given (`ts_ecr` -1 is then written as 0). `WireError` for a value out of
    range or more than 40 bytes.
    """
    out = bytearray()
    if mss != -1:
        _check_range("mss", mss, 0xFFFF)
        out += struct.pack("!BBH", TCPOPT_MSS, TCPOLEN_MSS, mss)
    if ts_val != -1:
        _check_range("ts_val", ts_val, 0xFFFFFFFF)
        if ts_ecr != -1:
            _check_range("ts_ecr", ts_ecr, 0xFFFFFFFF)
        if sack_perm:
            out += bytes((TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM))
        else:
            out += bytes((TCPOPT_NOP, TCPOPT_NOP))
        out += struct.pack("!BBII", TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP, ts_val, max(ts_ecr, 0))
    elif ts_ecr != -1:
        raise WireError("ts_ecr without ts_val")
    elif sack_perm:
        out += bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM))
    if wscale != -1:
        _check_range("wscale", wscale, 0xFF)
        out += bytes((TCPOPT_NOP, TCPOPT_WINDOW, TCPOLEN_WINDOW, wscale))
    if sack:
        if len(sack) > TCP_MAX_SACK_BLOCKS:
            raise WireError("more than 4 SACK blocks")
        out += bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK, TCPOLEN_SACK_BASE + TCPOLEN_SACK_PERBLOCK * len(sack)))
        for left, right in sack:
            _check_range("SACK edge", left, 0xFFFFFFFF)
            _check_range("SACK edge", right, 0xFFFFFFFF)
            out += struct.pack("!II", left, right)
    if len(out) > TCP_MAX_OPTLEN:
        raise WireError(f"TCP options of {len(out)} bytes (> 40)")
    return bytes(out)


def _check_range(what: str, value: int, maximum: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise WireError(f"{what} {value} out of range 0..{maximum}")


def nop_pad(options: bytes) -> bytes:
    """`options` NOP-padded at the end to a multiple of 4 bytes."""
    return bytes(options) + bytes((TCPOPT_NOP,)) * (-len(options) % 4)


# --- checksums (RFC 1071, RFC 1624) --------------------------------------------------------


def _fold(s: int) -> int:
    """Fold a sum of 16-bit words into 16 bits with end-around carry (RFC 1071 §4.1)."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_sum(buf: bytes, start: int = 0, end: int = -1) -> int:
    """16-bit one's-complement sum (folded, not inverted) of buf[start:end]; `end` -1 means
    the end of the buffer; an odd length is zero-padded at the end (RFC 1071)."""
    if end == -1:
        end = len(buf)
    start, end = _clamp(start, end, len(buf))
    data = bytes(buf[start:end])
    if len(data) % 2:
        data += b"\x00"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def _pseudo_header_sum(pkt: Packet) -> int:
    """Sum of the TCP pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6)."""
    tcp_len = pkt.doff + pkt.payload_len
    if pkt.version == 4:
        pseudo = pkt.src + pkt.dst + struct.pack("!BBH", 0, IPPROTO_TCP, tcp_len)
    else:
        pseudo = pkt.src + pkt.dst + struct.pack("!IxxxB", tcp_len, IPPROTO_TCP)
    return ones_sum(pseudo)


def tcp_checksum(buf: bytes, pkt: Packet) -> int:
    """The correct TCP checksum field value for the segment in `buf` (the checksum field
    itself counts as 0)."""
    tcp = pkt.ip_hlen
    if len(buf) < pkt.length:
        raise WireError("buffer shorter than the packet")
    s = _pseudo_header_sum(pkt)
    s += ones_sum(buf, tcp, tcp + TCP_OFF_CHECK)
    s += ones_sum(buf, tcp + TCP_OFF_CHECK + 2, pkt.length)
    return ~_fold(s) & 0xFFFF


def ipv4_checksum(buf: bytes, ihl: int) -> int:
    """The correct IPv4 header checksum field value (RFC 791 §3.1).

    `ihl` is the IHL field, in 32-bit words (5..15) as in Linux `ip_fast_csum(iph, ihl)`; the
    header is buf[0:ihl*4] and its checksum field (bytes 10-11) counts as 0.
    """
    if not isinstance(ihl, int) or not 5 <= ihl <= 15 or len(buf) < ihl * 4:
        raise WireError(f"IPv4 IHL {ihl} does not fit a {len(buf)}-byte buffer")
    s = ones_sum(buf, 0, 10) + ones_sum(buf, 12, ihl * 4)
    return ~_fold(s) & 0xFFFF


def _sized(what: str, value, length: int = -1) -> bytes:
    """bytes of a bytes-like `value` (of exactly `length` bytes unless -1), else WireError."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise WireError(f"{what} must be a bytes-like object, not {type(value).__name__}")
    value = bytes(value)  # (its length as bytes: a subclass's len() or a cast view may differ)
    if length >= 0 and len(value) != length:
        raise WireError(f"{what} must be {length} bytes")
    return value


def build_segment(version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                  flags: int, window: int, options: bytes = b"", payload: bytes = b"",
                  tos: int = 0, ttl: int = 64, label: int = 0) -> bytes:
    """A complete IPv4 or IPv6 TCP segment, with both checksums right (what the core injects).

    The IP header has no options; IPv4's has DF set and id 0; `tos` is the IPv4 TOS or IPv6
    traffic class byte, `ttl` the TTL or hop limit, `label` the IPv6 flow label. `seq` and
    `ack` are taken modulo 2**32 and a window above 65535 goes as 65535 (the caller scales
    it). `options` go as given (a multiple of 4 bytes, at most 40), then `payload`. Anything
    else out of range -> WireError."""
    if not isinstance(version, int) or version not in (4, 6):
        raise WireError(f"IP version {version!r} (4 or 6)")
    alen = 4 if version == 4 else 16
    src = _sized("source address", src, alen)
    dst = _sized("destination address", dst, alen)
    for what, v, top in (("source port", sport, 0xFFFF), ("destination port", dport, 0xFFFF),
                         ("TCP flags", flags, 0xFF), ("TOS", tos, 0xFF), ("TTL", ttl, 0xFF),
                         ("flow label", label, 0xFFFFF)):
        _check_range(what, v, top)
    for what, v in (("seq", seq), ("ack", ack), ("window", window)):
        if not isinstance(v, int):
            raise WireError(f"{what} must be an int, not {type(v).__name__}")
    if window < 0:
        raise WireError(f"window {window} below 0")
    options = _sized("TCP options", options)
    payload = _sized("payload", payload)
    if len(options) % 4 or len(options) > 40:
        raise WireError(f"TCP options of {len(options)} bytes (a multiple of 4, at most 40)")
    doff = TCP_HLEN + len(options)
    tlen = doff + len(payload)
    if tlen + (20 if version == 4 else 0) > 0xFFFF:
        raise WireError(f"a {tlen}-byte TCP segment does not fit the IP length field")
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + tlen, 0, 0x4000, ttl, IPPROTO_TCP, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", ipv4_checksum(ip, 5)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000 | tos << 20 | label, tlen, IPPROTO_TCP, ttl, src, dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, int(seq) & 0xFFFFFFFF, int(ack) & 0xFFFFFFFF, (doff // 4) << 4,
                      flags, min(window, 0xFFFF), 0, 0)
    raw = ip + tcp + options + payload
    check = tcp_checksum(raw, parse_packet(raw))
    off = len(ip) + TCP_OFF_CHECK
    return raw[:off] + struct.pack("!H", check) + raw[off + 2:]


def csum_replace(check: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the new checksum field value after the
    16-bit-aligned bytes `old` (even length) became `new` (same length)."""
    if len(old) != len(new) or len(old) % 2:
        raise WireError("csum_replace needs old and new of the same even length")
    _check_range("checksum", check, 0xFFFF)
    n = len(old) // 2
    s = ~check & 0xFFFF
    s += sum(~w & 0xFFFF for w in struct.unpack(f"!{n}H", old))
    s += sum(struct.unpack(f"!{n}H", new))
    return ~_fold(s) & 0xFFFF


def dss_checksum(data_seq: int, subflow_seq: int, data_len: int, payload: bytes) -> int:
    """The DSS checksum field value of a mapping (RFC 8684 §3.3.1): one's-complement sum of
    the pseudo-header DSN (64 bit) || subflow seq (32) || data-level length (16) || 0x0000,
    followed by the payload the mapping covers."""
    _check_range("data_seq", data_seq, 0xFFFFFFFFFFFFFFFF)
    _check_range("subflow_seq", subflow_seq, 0xFFFFFFFF)
    _check_range("data_len", data_len, 0xFFFF)
    pseudo = struct.pack("!QIHH", data_seq, subflow_seq, data_len, 0)
    return ~_fold(ones_sum(pseudo) + ones_sum(payload)) & 0xFFFF


# --- rewriting -----------------------------------------------------------------------------


def rewrite(
    buf: bytes,
    pkt: Packet,
    seq: int = -1,
    ack: int = -1,
    window: int = -1,
    options: bytes | None = None,
    flags: int = -1,
    full_checksum: bool = False,
) -> bytes:
    """A new packet with the given TCP fields changed (-1 / None: unchanged).

    With `options`, the option area is replaced (NOP-padded to a multiple of 4; > 40 bytes
    is a `WireError`), and the data offset, IP length and IPv4 header checksum (in full) are
    fixed. The TCP checksum is updated incrementally from the packet's own (RFC 1624 eqn. 3),
    with or without `options`: a router keeps a wrong checksum wrong (by the same one's-
    complement error) instead of laundering a corrupted segment; a right one stays right and
    equals a full recompute. `full_checksum=True` computes it from the bytes instead, for a
    segment the caller built whose checksum field is not a checksum yet. Bytes past the IP
    length are dropped.
    """
    if len(buf) < pkt.length:
        raise WireError("buffer shorter than the packet")
    for what, value, maximum in (("seq", seq, 0xFFFFFFFF), ("ack", ack, 0xFFFFFFFF),
                                 ("window", window, 0xFFFF), ("flags", flags, 0xFF)):
        if value != -1:
            _check_range(what, value, maximum)
    tcp = pkt.ip_hlen
    out = bytearray(buf[: pkt.length])

    if options is not None:
        return _rewrite_options(out, pkt, seq, ack, window, nop_pad(options), flags, full_checksum)

    check = struct.unpack_from("!H", out, tcp + TCP_OFF_CHECK)[0]
    # Each changed field is a whole number of 16-bit words at an even offset of the header.
    changes = []
    if seq != -1:
        changes.append((TCP_OFF_SEQ, struct.pack("!I", seq)))
    if ack != -1:
        changes.append((TCP_OFF_ACK, struct.pack("!I", ack)))
    if flags != -1:
        changes.append((TCP_OFF_DOFF, bytes((out[tcp + TCP_OFF_DOFF], flags))))
    if window != -1:
        changes.append((TCP_OFF_WINDOW, struct.pack("!H", window)))
    for off, new in changes:
        old = bytes(out[tcp + off : tcp + off + len(new)])
        check = csum_replace(check, old, new)
        out[tcp + off : tcp + off + len(new)] = new
    if full_checksum:
        check = tcp_checksum(out, pkt)
    struct.pack_into("!H", out, tcp + TCP_OFF_CHECK, check)
    return bytes(out)


def without_mptcp(buf: bytes, pkt: Packet, ack: int = -1, flags: int = -1) -> bytes:
    """The segment without its MPTCP options (the others byte for byte, NOP-padded), with
    `ack`/`flags` changed (-1: unchanged). One step for the converter's per-packet path:

        rewrite(buf, pkt, ack=ack, flags=flags,
                options=strip_mptcp(buf, pkt.ip_hlen + TCP_HLEN, pkt.payload_off))
    """
    return rewrite(buf, pkt, ack=ack, flags=flags, options=strip_mptcp(buf, pkt.ip_hlen + TCP_HLEN, pkt.payload_off))


def _header_sum(buf, tcp: int, doff: int, version: int, payload_len: int) -> int:
    """Folded one's-complement sum of the part of the TCP checksum's coverage that a rewrite
    changes: the TCP header at `tcp` (`doff` bytes, options included) without its checksum
    field, and the pseudo-header's TCP length (IPv4: one 16-bit word; IPv6: 32 bits, two
    words). The rest, addresses, protocol and payload, is the same before and after: the
    payload moves by a multiple of 4 bytes (data offsets are 32-bit words), so it is summed
    as the same 16-bit words."""
    tcp_len = doff + payload_len
    length_words = tcp_len if version == 4 else (tcp_len >> 16) + (tcp_len & 0xFFFF)
    return _fold(
        ones_sum(buf, tcp, tcp + TCP_OFF_CHECK) + ones_sum(buf, tcp + TCP_OFF_CHECK + 2, tcp + doff) + length_words
    )


def _rewrite_options(out: bytearray, pkt: Packet, seq, ack, window, options: bytes, flags, full_checksum) -> bytes:
    """`rewrite` with a new option area: rebuild lengths, recompute the IPv4 header checksum
    and update the TCP checksum incrementally (RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with m
    and m' the `_header_sum` before and after)."""
    if len(options) > TCP_MAX_OPTLEN:
        raise WireError(f"TCP options of {len(options)} bytes (> 40)")
    tcp = pkt.ip_hlen
    header = bytearray(out[tcp : tcp + TCP_HLEN])
    if seq != -1:
        struct.pack_into("!I", header, TCP_OFF_SEQ, seq)
    if ack != -1:
        struct.pack_into("!I", header, TCP_OFF_ACK, ack)
    if flags != -1:
        header[TCP_OFF_FLAGS] = flags
    if window != -1:
        struct.pack_into("!H", header, TCP_OFF_WINDOW, window)
    doff = TCP_HLEN + len(options)
    header[TCP_OFF_DOFF] = (doff // 4) << 4 | (header[TCP_OFF_DOFF] & 0x0F)  # keep reserved/AE bits
    payload = out[pkt.payload_off : pkt.length]
    new = bytearray(out[:tcp]) + header + options + payload
    length = len(new)

    if pkt.version == 4:
        if length > 0xFFFF:
            raise WireError("IPv4 packet longer than 65535 bytes")
        struct.pack_into("!H", new, 2, length)
        struct.pack_into("!H", new, 10, ipv4_checksum(new, tcp // 4))
    else:
        if length - IPV6_HLEN > 0xFFFF:
            raise WireError("IPv6 payload longer than 65535 bytes")
        struct.pack_into("!H", new, 4, length - IPV6_HLEN)

    if full_checksum:
        new_pkt = Packet(
            version=pkt.version,
            src=pkt.src,
            dst=pkt.dst,
            ip_hlen=tcp,
            ttl=pkt.ttl,
            sport=pkt.sport,
            dport=pkt.dport,
            seq=pkt.seq,
            ack=pkt.ack,
            flags=pkt.flags,
            window=pkt.window,
            doff=doff,
            payload_off=tcp + doff,
            payload_len=pkt.payload_len,
            length=length,
        )
        check = tcp_checksum(new, new_pkt)
    else:
        (old_check,) = struct.unpack_from("!H", out, tcp + TCP_OFF_CHECK)
        m = _header_sum(out, tcp, pkt.doff, pkt.version, pkt.payload_len)
        m_new = _header_sum(new, tcp, doff, pkt.version, pkt.payload_len)
        check = ~_fold((~old_check & 0xFFFF) + (~m & 0xFFFF) + m_new) & 0xFFFF
    struct.pack_into("!H", new, tcp + TCP_OFF_CHECK, check)
    return bytes(new)
