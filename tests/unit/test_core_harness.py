"""Two-sided harness for the core: a plain-TCP guest <-> Converter <-> a simulated MPTCP server.

The guest and the server are built with scapy (IP/TCP headers) and the wire layer (options).
Every packet the converter emits is checked: it parses, its TCP (and IPv4 header) checksum is
right, the guest never sees an MPTCP option, and the server side parses every MPTCP option with
`parse_mptcp` and validates it against the keys (IDSNs from `key_idsn`, tokens from
`key_token`, DSS checksums from `dss_checksum`). h11's `ConnectionPair`, aioquic's `roundtrip`.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from middlebox.core import ACCEPT, Config, Converter, Counter, Direction, Rewrite
from middlebox.wire import (
    Dss,
    MpCapable,
    build_mptcp,
    build_options,
    dss_checksum,
    encode_tcp_options,
    ipv4_checksum,
    key_idsn,
    key_token,
    options_of,
    parse_mptcp,
    parse_packet,
    rewrite,
    tcp_checksum,
)

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF

GUEST4, SERVER4 = "10.0.0.1", "10.1.1.2"
GUEST6, SERVER6 = "fd00::1", "fd01::2"
SERVER_KEY = 0x1112131415161718  # PROTOCOL.md vector key B: token 0xccad45ac


def make_packet(src, dst, sport, dport, seq, ack, flags, options=b"", payload=b"", window=502, v6=False) -> bytes:
    """An IPv4/IPv6 TCP segment: headers by scapy, option area by the wire layer."""
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst, id=1)
    seg = ip / TCP(sport=sport, dport=dport, seq=seq & M32, ack=ack & M32, flags=flags, window=window)
    if payload:
        seg = seg / Raw(payload)
    buf = bytes(seg)
    if options:
        buf = rewrite(buf, parse_packet(buf), options=options)
    return buf


def check_wire(buf: bytes):
    """The packet parses and its checksums are right. Returns (Packet, TcpOptions)."""
    pkt = parse_packet(buf)
    assert struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0] == tcp_checksum(buf, pkt), "TCP checksum"
    if pkt.version == 4:
        assert struct.unpack_from("!H", buf, 10)[0] == ipv4_checksum(buf, pkt.ip_hlen // 4), "IPv4 checksum"
    assert pkt.doff <= 60
    return pkt, options_of(buf, pkt)


def mptcp_of(buf: bytes, pkt, opts):
    """Every MPTCP option of a packet, parsed; a malformed one fails the test."""
    out = []
    for raw in opts.mptcp:
        o = parse_mptcp(raw, pkt.flags, pkt.payload_len)
        assert o is not None, f"malformed MPTCP option {raw.hex()}"
        out.append(o)
    return out


def assert_nfq_writable(original: bytes, new: bytes) -> None:
    """A Rewrite verdict's bytes pass the checks newer kernels make of a queued packet's new
    payload (nf-next, June 2026: "nfnetlink_queue: restrict writes to network header"; a
    payload that fails them turns the verdict into NF_DROP): IPv4: the version, an IP
    length equal to the bytes given, the same header length and IP options, the fragment
    field unchanged but for DF; IPv6: the version, a payload length equal to the bytes
    given, the same next header (we never write extension headers)."""
    if len(original) < 40 or original[0] >> 4 not in (4, 6):
        return  # nothing a kernel would have queued as IP/TCP: no rule to keep
    if original[0] >> 4 == 4:
        if struct.unpack_from("!H", original, 2)[0] != len(original) or (original[0] & 15) < 5:
            return  # the kernel trims to the IP length before queueing: not a packet it queues
    elif struct.unpack_from("!H", original, 4)[0] != len(original) - 40:
        return
    v = new[0] >> 4
    assert v == original[0] >> 4, "IP version changed"
    if v == 4:
        ihl = (new[0] & 15) * 4
        assert 20 <= ihl <= len(new) and ihl == (original[0] & 15) * 4, "IPv4 header length changed"
        assert struct.unpack_from("!H", new, 2)[0] == len(new), "IPv4 total length != bytes given"
        assert new[20:ihl] == original[20:ihl], "IPv4 options changed"
        assert (struct.unpack_from("!H", new, 6)[0] ^ struct.unpack_from("!H", original, 6)[0]) & ~0x4000 == 0, \
            "IPv4 fragment field changed"
    else:
        assert len(new) >= 40 and struct.unpack_from("!H", new, 4)[0] == len(new) - 40, \
            "IPv6 payload length != bytes given"
        assert new[6] == original[6], "IPv6 next header changed"


def verdict_bytes(actions, original: bytes) -> bytes | None:
    """The bytes that leave the middlebox for this packet (None when dropped); a rewrite's
    are ones the kernel takes (assert_nfq_writable)."""
    assert actions, "no verdict"
    first = actions[0]
    if first is ACCEPT:
        return original
    if isinstance(first, Rewrite):
        assert_nfq_writable(original, first.data)
        return first.data
    return None


class Pair:
    """guest (plain TCP) <-> Converter <-> server (simulated MPTCP v1/v0 peer)."""

    def __init__(self, config: Config | None = None, v6=False, guest_isn=1000, server_isn=5000,
                 server_mptcp=True, server_checksum=False, server_version=None, timestamps=True,
                 server_key=SERVER_KEY, gport=40000, sport=80):
        self.conv = Converter(config or Config())
        self.cfg = self.conv.config
        self.v6 = v6
        self.g_addr, self.s_addr = (GUEST6, SERVER6) if v6 else (GUEST4, SERVER4)
        self.gport, self.sport = gport, sport
        self.now = 100.0
        self.ts = timestamps
        # guest
        self.g_isn = guest_isn & M32
        self.g_nxt = (guest_isn + 1) & M32
        self.g_rcv = 0  # guest's ack
        # server
        self.s_isn = server_isn & M32
        self.s_nxt = (server_isn + 1) & M32
        self.s_mptcp = server_mptcp
        self.s_csum = server_checksum
        self.s_version = self.cfg.version if server_version is None else server_version
        self.s_key = server_key
        self.s_idsn = key_idsn(server_key, self.s_version)
        self.c_key = None  # the converter's key, learnt by the server from the MP_CAPABLE ACK
        self.c_idsn = None
        self.csum = False  # negotiated
        self.s_data = {}  # DSN -> payload received by the server (validated mappings)
        self.s_data_fin = None  # DSN of the guest's DATA_FIN as the server saw it
        self.s_data_ack = None  # last DATA_ACK the server got (64-bit)
        self.mapping_forms = []  # ("mpc", len) / ("dss", ...) for every guest data segment
        self.to_guest = []  # bytes delivered to the guest

    # -- plumbing ---------------------------------------------------------------------------

    def tick(self, dt=0.01):
        self.now += dt
        return self.conv.tick(self.now)

    def out(self, buf: bytes):
        """Guest -> converter. Returns (actions, bytes sent to the server or None)."""
        self.now += 0.001
        actions = self.conv.handle(buf, Direction.OUT, self.now)
        sent = verdict_bytes(actions, buf)
        if sent is not None:
            check_wire(sent)
        return actions, sent

    def inn(self, buf: bytes):
        """Server -> converter. Returns (actions, bytes delivered to the guest or None)."""
        self.now += 0.001
        actions = self.conv.handle(buf, Direction.IN, self.now)
        got = verdict_bytes(actions, buf)
        if got is not None:
            pkt, opts = check_wire(got)
            assert not opts.mptcp, "the guest must never see an MPTCP option"
            self.to_guest.append(got)
        return actions, got

    # -- guest side -------------------------------------------------------------------------

    def g_opts(self, syn=False, sack=()):
        if syn:
            return encode_tcp_options(mss=1460, wscale=7, sack_perm=True, ts_val=1 if self.ts else -1,
                                      ts_ecr=0 if self.ts else -1)
        if self.ts:
            return encode_tcp_options(ts_val=int(self.now * 1000) & M32, ts_ecr=7, sack=sack)
        return encode_tcp_options(sack=sack)

    def g_packet(self, seq, ack, flags, payload=b"", options=None, window=502):
        opts = self.g_opts() if options is None else options
        return make_packet(self.g_addr, self.s_addr, self.gport, self.sport, seq, ack, flags, opts,
                           payload, window=window, v6=self.v6)

    def g_syn(self, options=None):
        opts = self.g_opts(syn=True) if options is None else options
        return make_packet(self.g_addr, self.s_addr, self.gport, self.sport, self.g_isn, 0, SYN, opts,
                           v6=self.v6)

    def g_ack(self, sack=()):
        return self.g_packet(self.g_nxt, self.g_rcv, ACK, options=self.g_opts(sack=sack))

    def g_data(self, payload: bytes, fin=False, seq=None):
        s = self.g_nxt if seq is None else seq
        buf = self.g_packet(s, self.g_rcv, ACK | PSH | (FIN if fin else 0), payload)
        if seq is None:
            self.g_nxt = (self.g_nxt + len(payload) + (1 if fin else 0)) & M32
        return buf

    def g_fin(self):
        return self.g_data(b"", fin=True)

    # -- server side ------------------------------------------------------------------------

    def s_packet(self, seq, ack, flags, mptcp=(), payload=b"", window=509, sack=()):
        tcp = (encode_tcp_options(ts_val=77, ts_ecr=int(self.now * 1000) & M32, sack=sack) if self.ts
               else encode_tcp_options(sack=sack) if sack else b"")
        opts = build_options(tcp, tuple(mptcp))
        return make_packet(self.s_addr, self.g_addr, self.sport, self.gport, seq, ack, flags, opts, payload,
                           window=window, v6=self.v6)

    def s_synack(self, syn_sent: bytes, mptcp=None):
        """The server's answer to the SYN the converter sent, validating its MP_CAPABLE."""
        pkt, opts = check_wire(syn_sent)
        mp = mptcp_of(syn_sent, pkt, opts)
        if mptcp is None:
            mptcp = ()
            if self.s_mptcp:
                assert len(mp) == 1 and isinstance(mp[0], MpCapable), mp
                mpc = mp[0]
                self.csum = self.s_csum or mpc.checksum
                if mpc.version == 0:
                    assert mpc.sndr_key is not None and len(opts.mptcp[0]) == 12
                    self.c_key = mpc.sndr_key
                else:
                    assert len(opts.mptcp[0]) == 4 and mpc.sndr_key is None
                flags = 0x01 | (0x80 if self.s_csum else 0)
                mptcp = (MpCapable(self.s_version, flags, self.s_key),)
        self.g_rcv_expected = (self.s_isn + 1) & M32
        # (SACK_PERM echoed only to a SYN that offered it, as Linux does)
        tcp = encode_tcp_options(mss=1460, sack_perm=opts.sack_perm, ts_val=77 if self.ts else -1,
                                 ts_ecr=1 if self.ts else -1, wscale=7)
        opts = build_options(tcp, tuple(mptcp))
        return make_packet(self.s_addr, self.g_addr, self.sport, self.gport, self.s_isn, pkt.seq + 1,
                           SYN | ACK, opts, v6=self.v6)

    def s_receive(self, sent: bytes):
        """Validate a converted guest segment as an MPTCP server would; record its data."""
        pkt, opts = check_wire(sent)
        mp = mptcp_of(sent, pkt, opts)
        payload = sent[pkt.payload_off : pkt.length]
        rel = (pkt.seq - self.g_isn) & M32
        for o in mp:
            if isinstance(o, MpCapable):
                assert o.version == self.s_version
                assert o.rcvr_key == self.s_key
                if self.c_key is None:
                    self.c_key = o.sndr_key
                assert o.sndr_key == self.c_key
                assert key_token(self.c_key, self.s_version) != key_token(self.s_key, self.s_version)
                assert bool(o.flags & 0x80) == self.csum
                if pkt.payload_len:
                    assert rel == 1 and o.data_len == pkt.payload_len
                    dsn = (self.idsn_c + 1) & M64
                    if self.csum:
                        assert o.csum == dss_checksum(dsn, 1, o.data_len, payload)
                    else:
                        assert o.csum is None
                    self.s_data[dsn] = payload
                    self.mapping_forms.append(("mpc", len(opts.mptcp[0])))
            elif isinstance(o, Dss):
                if o.data_ack is not None:
                    assert o.ack64 == self.expect_ack64
                    self.s_data_ack = o.data_ack
                if o.data_seq is not None:
                    assert o.dsn64
                    if o.data_fin and o.data_len == 1 and pkt.payload_len == 0:
                        assert o.subflow_seq == 0
                    else:
                        assert o.subflow_seq == rel, "subflow 1: subflow seq is the guest's"
                        assert o.data_len == pkt.payload_len + (1 if o.data_fin else 0)
                    assert o.data_seq == (self.idsn_c + rel) & M64, "DSN = IDSN + (seq - ISN)"
                    if self.csum:
                        assert o.csum == dss_checksum(o.data_seq, o.subflow_seq, o.data_len, payload)
                    else:
                        assert o.csum is None
                    if pkt.payload_len:
                        self.s_data[o.data_seq] = payload
                    if o.data_fin:
                        self.s_data_fin = (o.data_seq + o.data_len - 1) & M64
                    self.mapping_forms.append(("dss", o.data_len))
                else:
                    assert pkt.payload_len == 0, "guest data without a mapping"
        return pkt, mp

    @property
    def idsn_c(self):
        return key_idsn(self.c_key, self.s_version)

    expect_ack64 = False

    def s_stream(self) -> bytes:
        """What the server received, in DSN order, checked contiguous from IDSN+1."""
        out = b""
        nxt = (self.idsn_c + 1) & M64
        for dsn in sorted(self.s_data):
            chunk = self.s_data[dsn]
            assert dsn <= nxt, "hole in the data stream"
            out += chunk[nxt - dsn :] if dsn < nxt else chunk
            nxt = max(nxt, dsn + len(chunk))
        return out

    def s_dss_ack(self, data_ack_rel=None, ack64=False, **kw):
        """A DSS acking everything the server got (DATA_ACK in the converter's DSN space)."""
        ack_rel = (self.g_nxt - self.g_isn) & M32 if data_ack_rel is None else data_ack_rel
        da = (self.idsn_c + ack_rel) & (M64 if ack64 else M32)
        return Dss(data_ack=da, ack64=ack64, **kw)

    def s_ack(self, ack64=False, window=509):
        return self.s_packet(self.s_nxt, self.g_nxt, ACK, (self.s_dss_ack(ack64=ack64),), window=window)

    def s_data_pkt(self, payload: bytes, data_fin=False, fin=False, csum=None, dsn64=True, ack64=False):
        rel = (self.s_nxt - self.s_isn) & M32
        dsn = (self.s_idsn + rel) & (M64 if dsn64 else M32)
        dlen = len(payload) + (1 if data_fin else 0)
        if self.csum and csum is None:
            csum = dss_checksum((self.s_idsn + rel) & M64, rel, dlen, payload)
        dss = self.s_dss_ack(ack64=ack64, data_seq=dsn, dsn64=dsn64, subflow_seq=rel, data_len=dlen,
                             csum=csum, data_fin=data_fin)
        buf = self.s_packet(self.s_nxt, self.g_nxt, ACK | PSH | (FIN if fin else 0), (dss,), payload)
        if dsn64:
            self.expect_ack64 = True  # the converter must answer a 64-bit DSN with 64-bit DATA_ACKs
        self.s_nxt = (self.s_nxt + len(payload) + (1 if fin else 0)) & M32
        return buf

    def s_bare_data_fin(self, fin=False, ack64=False):
        """DATA_FIN on a pure ACK (what Linux sends on close): subflow seq 0, length 1."""
        rel = (self.s_nxt - self.s_isn) & M32
        dsn = (self.s_idsn + rel) & M64
        csum = dss_checksum(dsn, 0, 1, b"") if self.csum else None
        dss = self.s_dss_ack(ack64=ack64, data_seq=dsn, dsn64=True, subflow_seq=0, data_len=1, csum=csum,
                             data_fin=True)
        buf = self.s_packet(self.s_nxt, self.g_nxt, ACK | (FIN if fin else 0), (dss,))
        self.expect_ack64 = True
        if fin:
            self.s_nxt = (self.s_nxt + 1) & M32
        return buf

    # -- scripted sequences -----------------------------------------------------------------

    def handshake(self):
        """SYN, SYN/ACK, third ACK. Returns the bytes the server got for the SYN and the ACK."""
        _, syn = self.out(self.g_syn())
        _, synack = self.inn(self.s_synack(syn))
        self.g_rcv = (self.s_isn + 1) & M32
        _, ack = self.out(self.g_ack())
        self.s_receive(ack)
        return syn, synack, ack

    def established(self, first=b"hello"):
        """Handshake, first data with MP_CAPABLE, DATA_ACK from the server."""
        self.handshake()
        _, sent = self.out(self.g_data(first))
        self.s_receive(sent)
        self.inn(self.s_ack())
        return sent

    def count(self, name: str) -> int:
        return self.conv.counters[Counter[name]]


# -- the harness checks itself ----------------------------------------------------------------


def test_harness_packets_are_valid():
    p = Pair()
    buf = p.g_data(b"x" * 10)
    pkt, opts = check_wire(buf)
    assert pkt.payload_len == 10 and opts.ts_val != -1


def test_harness_v6_packets_are_valid():
    p = Pair(v6=True)
    pkt, _ = check_wire(p.g_syn())
    assert pkt.version == 6
