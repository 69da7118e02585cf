"""Judge the MPTCP connections of a packet trace (the engine behind `middlebox inspect`).

Feed IP packets in capture order to `Trace.feed(ts, ip_bytes)`, then call `Trace.finish()`
and read `Trace.report()` (a JSON-able dict). Every judgement is one of three outcomes:

* **ok** - checked and right;
* **violation** - checked and wrong (bad HMAC or checksum, a key that changes, unmapped or
  conflicting data, a DSN not derived from the key, a corrupt TCP segment, ...);
* **unverifiable** - the capture lacks what the check needs (a packet missing from the
  capture, a snaplen-truncated payload, a handshake before the capture started). Never a
  violation: captures drop packets.

Rules worth knowing (each cites its source):

* Sides: the *client* sent the MP_CAPABLE SYN, the *server* answered it. Directions are
  `c2s` / `s2c`. A connection is named by its tokens; joins attach by the token in their SYN
  (RFC 8684 §3.2) and their SYN sender plays A in the HMACs.
* Versions: a connection's MPTCP version is the one its handshake settled on: the SYN's,
  then the SYN/ACK's, then the third ACK's (RFC 8684 §3.1: the answer may only lower it; a
  change is reported as a subflow event). Every hash follows it: v1 (RFC 8684) SHA-256 and
  HMAC-SHA256, v0 (RFC 6824) SHA-1 and HMAC-SHA1. v0 has no MP_CAPABLE data form, no HMAC
  in ADD_ADDR (whose v0 form carries the IP version where v1 has flags: RFC 6824 §3.4.1,
  verdict `none`) and an optional address id in MP_PRIO (§3.3.8); both are parsed here.
* Keys (§3.1): v1 server key in SYN/ACK, both in the third ACK and in the MP_CAPABLE data
  form; v0 client key in the SYN too (RFC 6824 §3.1). A key that differs from an earlier
  copy is `key-mismatch`. Token = hash(key)[0:4], IDSN = its last 8 bytes: SHA-256 [24:32]
  for v1, SHA-1 [12:20] for v0.
* Mappings (§3.3): a DSS mapping covers subflow bytes [ssn, ssn + len) (minus one when it
  carries DATA_FIN, which takes a DSN but no subflow byte). The MP_CAPABLE data form maps
  DSN IDSN+1 at ssn 1. Every payload byte must be covered by a mapping carried by its own
  segment or an earlier one (`unmapped-data` / `late-mapping`); two mappings that give the
  same subflow byte different DSNs are a `mapping-conflict`; two subflow bytes mapped to the
  same DSN must carry the same value (`data-conflict`). Mapped DSNs must lie in
  [IDSN+1, IDSN+2^40] (`dsn-not-from-idsn`: wrong key, or a DSN from nowhere).
* DSS checksums (§3.3.1), when either SYN had flag A: every mapping must carry one
  (`missing-dss-checksum`) and it must match the mapped payload, reassembled from all the
  subflow segments it covers (`dss-checksum`); a mapping whose bytes were not all captured
  is unverifiable.
* TCP checksums: a segment whose checksum is wrong is corruption (`tcp-checksum`) - except
  when the field holds the bare pseudo-header sum, which is what a capture on the sending
  host shows under checksum offload (CHECKSUM_PARTIAL); those count as `offloaded`. A
  corrupt segment's payload fills holes only; a good retransmission replaces it.
  Retransmissions carrying other bytes than a trusted earlier copy are
  `retransmission-conflict`.
* Fallbacks (§3.7) are reported, not violations: MP_CAPABLE SYN answered without
  MP_CAPABLE, third ACK without it, infinite mapping, MP_FAIL; also MP_TCPRST and
  MP_FASTCLOSE (whose key must match: `fastclose-key`).
* Joins: SYN/ACK HMAC = HMAC(kB || kA, nB || nA)[:8], ACK HMAC = HMAC(kA || kB, nA || nB)[:20]
  (HMAC-SHA256 for v1, HMAC-SHA1 for v0, whose 20 bytes are all sent)
  (`join-synack-hmac`, `join-ack-hmac`); a join token that names no connection of the
  capture is `token-unknown` (unverifiable instead if the capture holds MPTCP subflows whose
  handshake it missed). ADD_ADDR HMAC = rightmost 64 bits of HMAC(k_sender || k_receiver,
  id || addr || port) (`add-addr-hmac`, §3.4.1); echoes are matched to announcements.
* Linux zero-window probes (a 1-byte mapping at an already DATA_ACKed DSN, whose byte value
  Linux does not keep equal to the original) are counted, and left out of `data-conflict`.
* A malformed MPTCP option (what Linux would silently ignore) is `malformed-option`.

Limits: subflow byte offsets beyond 2 GiB and DSNs beyond IDSN + 2 GiB are not stored for
reassembly (their checks become unverifiable); one TCP connection per 4-tuple at a time (a
new SYN with another ISN starts a new subflow record).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from middlebox.wire import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    WireError,
    add_addr_hmac,
    dss_checksum,
    join_hmac,
    key_idsn,
    key_token,
    ones_sum,
    options_of,
    parse_mptcp,
    parse_packet,
    tcp_checksum,
)

from middlebox.analysis.intervals import ByteStore, IntervalSet

SYN, ACK, RST, FIN = 0x02, 0x10, 0x04, 0x01
SUB_ADD_ADDR, SUB_MP_PRIO = 3, 5  # MPTCP option subtypes whose v0 form differs (RFC 6824)
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
DSN_WINDOW = 1 << 40  # a mapped DSN must lie within IDSN + [1, 2^40]
INFINITE = 1 << 62  # end of an infinite mapping's subflow range

OPTION_NAMES = {
    MpCapable: "MP_CAPABLE",
    MpJoinSyn: "MP_JOIN",
    MpJoinSynAck: "MP_JOIN",
    MpJoinAck: "MP_JOIN",
    Dss: "DSS",
    AddAddr: "ADD_ADDR",
    RemoveAddr: "REMOVE_ADDR",
    MpPrio: "MP_PRIO",
    MpFail: "MP_FAIL",
    MpFastclose: "MP_FASTCLOSE",
    MpTcpRst: "MP_TCPRST",
}

# Violation kinds (stable names: tests and scripts match on them).
V_MALFORMED = "malformed-option"
V_KEY_MISMATCH = "key-mismatch"
V_TOKEN_UNKNOWN = "token-unknown"
V_JOIN_SYNACK = "join-synack-hmac"
V_JOIN_ACK = "join-ack-hmac"
V_ADD_ADDR = "add-addr-hmac"
V_UNMAPPED = "unmapped-data"
V_LATE = "late-mapping"
V_MAP_CONFLICT = "mapping-conflict"
V_DATA_CONFLICT = "data-conflict"
V_RTX_CONFLICT = "retransmission-conflict"
V_DSS_CSUM = "dss-checksum"
V_DSS_NO_CSUM = "missing-dss-checksum"
V_DSN_RANGE = "dsn-not-from-idsn"
V_TCP_CSUM = "tcp-checksum"
V_FASTCLOSE = "fastclose-key"
VIOLATION_KINDS = (
    V_MALFORMED, V_KEY_MISMATCH, V_TOKEN_UNKNOWN, V_JOIN_SYNACK, V_JOIN_ACK, V_ADD_ADDR,
    V_UNMAPPED, V_LATE, V_MAP_CONFLICT, V_DATA_CONFLICT, V_RTX_CONFLICT, V_DSS_CSUM,
    V_DSS_NO_CSUM, V_DSN_RANGE, V_TCP_CSUM, V_FASTCLOSE,
)


def fmt_addr(addr: bytes, port: int | None = None) -> str:
    if len(addr) == 4:
        host = ".".join(str(b) for b in addr)
        return host if port is None else f"{host}:{port}"
    import ipaddress

    host = str(ipaddress.IPv6Address(addr))
    return host if port is None else f"[{host}]:{port}"


def hexkey(v: int | None, width: int = 16) -> str | None:
    return None if v is None else f"0x{v:0{width}x}"


@dataclasses.dataclass
class Mapping:
    ssn: int  # relative subflow seq of the first byte
    data_len: int  # data-level length (includes a DATA_FIN)
    dsn: int  # 64-bit DSN of the first byte
    csum: int | None
    data_fin: bool
    source: str  # "dss" or "mp_capable"

    @property
    def sub_len(self) -> int:
        if self.data_len == 0:
            return INFINITE - self.ssn
        return self.data_len - (1 if self.data_fin else 0)

    @property
    def end(self) -> int:
        return self.ssn + self.sub_len


class Direction:
    """One direction of one subflow: its bytes and its mappings."""

    def __init__(self) -> None:
        self.isn: int | None = None
        self.store = ByteStore()  # payload by relative subflow seq
        self.segments = 0
        self.payload_bytes = 0  # as sent (IP lengths), retransmissions included
        self.truncated_bytes = 0  # payload bytes the capture did not keep (snaplen)
        self.mappings: dict[tuple[int, int, int, int | None, bool], Mapping] = {}
        self.mapped = IntervalSet()  # subflow bytes covered by some mapping seen so far
        self.offsets: list[tuple[int, int, int]] = []  # (ssn, end, dsn - ssn) per mapping range
        self.pending = IntervalSet()  # payload bytes that arrived before any mapping covered them
        self.gap_before: dict[int, bool] = {}  # pending start -> capture had a hole below it
        self.highest = 1  # highest relative seq captured (end of payload)
        self.tcp_csum = {"ok": 0, "offloaded": 0, "bad": 0, "unverifiable": 0}
        self.fin = False
        self.rst = False

    def rel(self, seq: int) -> int | None:
        if self.isn is None:
            return None
        return (seq - self.isn) & M32


class Subflow:
    def __init__(self, sid: int, client: tuple[bytes, int], server: tuple[bytes, int], ts: float) -> None:
        self.id = sid
        self.client = client  # (addr, port) of the SYN sender
        self.server = server
        self.first_ts = ts
        self.kind = "plain"  # "initial" | "join" | "plain" | "partial"
        self.conn: Connection | None = None
        self.c2s = Direction()
        self.s2c = Direction()
        self.syn_seen = False
        self.synack_seen = False
        self.mpc_syn: MpCapable | None = None
        self.mpc_synack: MpCapable | None = None
        self.mpc_ack = False
        self.join_syn: MpJoinSyn | None = None
        self.join_synack: MpJoinSynAck | None = None
        self.join_ack: MpJoinAck | None = None
        self.join_synack_verdict = "unverifiable"
        self.join_ack_verdict = "unverifiable"
        self.join_token: int | None = None
        self.joiner_is_client = True  # the join SYN sender is the connection's client side
        self.backup = False
        self.addr_id: int | None = None
        self.mptcp_seen = False
        self.events: list[str] = []

    def direction(self, from_client: bool) -> Direction:
        return self.c2s if from_client else self.s2c


class Connection:
    def __init__(self, cid: int, first: Subflow, version: int) -> None:
        self.id = cid
        self.first = first
        self.version = version  # 0 (RFC 6824) or 1 (RFC 8684): which hashes the keys take
        self.checksums = False
        self.client_key: int | None = None
        self.server_key: int | None = None
        self.subflows: list[Subflow] = [first]
        self.add_addrs: list[dict[str, Any]] = []
        self.fallbacks: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.unverifiable: list[dict[str, Any]] = []
        self.data = {"c2s": ByteStore(), "s2c": ByteStore()}  # by DSN - IDSN
        self.data_fin: dict[str, int | None] = {"c2s": None, "s2c": None}  # DSN of DATA_FIN
        self.data_ack: dict[str, int | None] = {"c2s": None, "s2c": None}  # highest seen, acking that dir
        self.dss_csum = {"c2s": {"ok": 0, "bad": 0, "unverifiable": 0}, "s2c": {"ok": 0, "bad": 0, "unverifiable": 0}}
        self.dsn_bad = {"c2s": 0, "s2c": 0}
        self.window_probes = {"c2s": 0, "s2c": 0}
        self.mp_prio: list[str] = []
        self.remove_addr: list[int] = []

    @property
    def client_token(self) -> int | None:
        return None if self.client_key is None else key_token(self.client_key, self.version)

    @property
    def server_token(self) -> int | None:
        return None if self.server_key is None else key_token(self.server_key, self.version)

    def idsn(self, dirname: str) -> int | None:
        key = self.client_key if dirname == "c2s" else self.server_key
        return None if key is None else key_idsn(key, self.version)

    def key_of(self, client_side: bool) -> int | None:
        return self.client_key if client_side else self.server_key


class Trace:
    def __init__(self) -> None:
        self.packets = 0
        self.non_tcp = 0
        self.truncated_headers = 0
        self.option_counts: dict[str, int] = {}
        self.malformed: list[dict[str, Any]] = []
        self.subflows: dict[tuple, Subflow] = {}  # (client addr, port, server addr, port) -> current
        self.all_subflows: list[Subflow] = []
        self.connections: list[Connection] = []
        self.by_token: dict[int, Connection] = {}
        self.orphan_joins: list[Subflow] = []
        self.has_partial = False
        self._finished = False

    # ---- input -----------------------------------------------------------------------

    def feed(self, ts: float, buf: bytes) -> None:
        self.packets += 1
        captured = len(buf)
        buf = _pad_to_ip_length(buf)
        try:
            pkt = parse_packet(buf)
        except WireError:
            self.non_tcp += 1
            return
        if captured < pkt.payload_off:
            self.truncated_headers += 1
            return
        plen = pkt.payload_len
        cap_plen = max(0, min(plen, captured - pkt.payload_off))
        fwd = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        rev = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        flags = pkt.flags
        sf = self.subflows.get(fwd)
        from_client = True
        if sf is None:
            sf = self.subflows.get(rev)
            from_client = False
        if flags & SYN and not flags & ACK:
            if sf is None or not from_client or (sf.c2s.isn is not None and sf.c2s.isn != pkt.seq):
                sf = Subflow(len(self.all_subflows) + 1, (pkt.src, pkt.sport), (pkt.dst, pkt.dport), ts)
                self.subflows[fwd] = sf
                self.all_subflows.append(sf)
                from_client = True
        elif sf is None:
            sf = Subflow(len(self.all_subflows) + 1, (pkt.src, pkt.sport), (pkt.dst, pkt.dport), ts)
            sf.kind = "partial"
            self.subflows[fwd] = sf
            self.all_subflows.append(sf)
            from_client = True
        d = sf.direction(from_client)
        # TCP checksum: only when the whole segment was captured
        trusted = True
        if captured >= pkt.length:
            field = int.from_bytes(buf[pkt.ip_hlen + 16 : pkt.ip_hlen + 18], "big")
            if field == tcp_checksum(buf, pkt):
                d.tcp_csum["ok"] += 1
            elif field in _partial_sums(buf, pkt):
                d.tcp_csum["offloaded"] += 1
            else:
                d.tcp_csum["bad"] += 1
                trusted = False
        else:
            d.tcp_csum["unverifiable"] += 1
        opts = []
        v0 = sf.conn is not None and sf.conn.version == 0
        for raw in options_of(buf, pkt).mptcp:
            if v0 and len(raw) >= 3 and raw[2] >> 4 in (SUB_ADD_ADDR, SUB_MP_PRIO):
                opt = _parse_v0(raw)
            else:
                opt = parse_mptcp(raw, flags, plen)
            if opt is None:
                self.malformed.append({"subflow": sf.id, "time": ts, "option": raw.hex(),
                                       "connection": sf.conn.id if sf.conn is not None else None})
                self.option_counts["malformed"] = self.option_counts.get("malformed", 0) + 1
                if sf.conn is not None:
                    self._violate(sf.conn, V_MALFORMED, f"subflow {sf.id}: option {raw.hex()}")
                continue
            name = OPTION_NAMES[type(opt)]
            self.option_counts[name] = self.option_counts.get(name, 0) + 1
            opts.append(opt)
        if opts:
            sf.mptcp_seen = True
        if flags & SYN:
            self._handshake(sf, pkt, from_client, flags, opts, trusted)
        else:
            for opt in opts:
                self._option(sf, pkt, from_client, opt, ts)
        if flags & RST:
            d.rst = True
        if flags & FIN:
            d.fin = True
        if plen and not flags & SYN:
            self._payload(sf, d, pkt, buf, plen, cap_plen, trusted, ts)

    def _handshake(self, sf: Subflow, pkt, from_client: bool, flags: int, opts: list, trusted: bool) -> None:
        d = sf.direction(from_client)
        d.isn = pkt.seq
        if not flags & ACK:
            sf.syn_seen = True
            for opt in opts:
                if isinstance(opt, MpCapable):
                    sf.mpc_syn = opt
                    # a SYN may offer a version above 1; the SYN/ACK answers with the one it speaks
                    version = min(opt.version, 1)
                    if sf.kind != "initial":
                        sf.kind = "initial"
                        conn = Connection(len(self.connections) + 1, sf, version)
                        self.connections.append(conn)
                        sf.conn = conn
                    conn = sf.conn
                    self._set_version(conn, sf, version, "SYN")
                    conn.checksums = conn.checksums or bool(opt.flags & 0x80)
                    if opt.sndr_key is not None:
                        self._set_key(conn, True, opt.sndr_key, "SYN")
                elif isinstance(opt, MpJoinSyn):
                    sf.kind = "join"
                    sf.join_syn = opt
                    sf.join_token = opt.token
                    sf.addr_id = opt.addr_id
                    sf.backup = opt.backup
            return
        # SYN/ACK
        sf.synack_seen = True
        mpc = next((o for o in opts if isinstance(o, MpCapable)), None)
        join = next((o for o in opts if isinstance(o, MpJoinSynAck)), None)
        if sf.kind == "initial":
            conn = sf.conn
            if mpc is None:
                if sf.mpc_synack is None:
                    self._fallback(conn, "syn-ack-without-mp-capable", f"subflow {sf.id}")
                return
            sf.mpc_synack = mpc
            self._set_version(conn, sf, mpc.version, "SYN/ACK")
            conn.checksums = conn.checksums or bool(mpc.flags & 0x80)
            if mpc.sndr_key is not None:
                self._set_key(conn, False, mpc.sndr_key, "SYN/ACK")
        elif sf.kind == "join":
            if join is None:
                sf.events.append("join refused (SYN/ACK without MP_JOIN)")
                return
            sf.join_synack = join
            self._attach_join(sf)
            self._check_join(sf)

    def _attach_join(self, sf: Subflow) -> None:
        if sf.conn is not None or sf.join_token is None:
            return
        conn = self.by_token.get(sf.join_token)
        if conn is None:
            return
        sf.conn = conn
        conn.subflows.append(sf)
        # The SYN names the receiver's token: a join sent to the server has the server's token.
        sf.joiner_is_client = conn.server_token == sf.join_token

    def _check_join(self, sf: Subflow) -> None:
        conn = sf.conn
        if conn is None or sf.join_syn is None:
            return
        ka = conn.key_of(sf.joiner_is_client)
        kb = conn.key_of(not sf.joiner_is_client)
        if ka is None or kb is None:
            return
        v = conn.version
        na = sf.join_syn.nonce
        if sf.join_synack is not None and sf.join_synack_verdict == "unverifiable":
            nb = sf.join_synack.nonce
            ok = join_hmac(kb, ka, nb, na, v)[:8] == sf.join_synack.hmac
            sf.join_synack_verdict = "ok" if ok else "bad"
            if not ok:
                self._violate(conn, V_JOIN_SYNACK, f"subflow {sf.id}: SYN/ACK HMAC {sf.join_synack.hmac.hex()}")
        if sf.join_ack is not None and sf.join_synack is not None and sf.join_ack_verdict == "unverifiable":
            nb = sf.join_synack.nonce
            ok = join_hmac(ka, kb, na, nb, v)[:20] == sf.join_ack.hmac
            sf.join_ack_verdict = "ok" if ok else "bad"
            if not ok:
                self._violate(conn, V_JOIN_ACK, f"subflow {sf.id}: ACK HMAC {sf.join_ack.hmac.hex()}")

    def _set_version(self, conn: Connection, sf: Subflow, version: int, where: str) -> None:
        """The handshake's latest MP_CAPABLE decides the version (RFC 8684 §3.1, RFC 6824 §3.1);
        tokens already filed under the old version's hash are filed again."""
        if version == conn.version:
            return
        event = f"MP_CAPABLE {where} says version {version}, earlier v{conn.version}"
        if event not in sf.events:
            sf.events.append(event)
        for tok in [t for t, c in self.by_token.items() if c is conn]:
            del self.by_token[tok]
        conn.version = version
        for tok in (conn.client_token, conn.server_token):
            if tok is not None:
                self.by_token.setdefault(tok, conn)

    def _set_key(self, conn: Connection, client: bool, key: int, where: str) -> None:
        old = conn.client_key if client else conn.server_key
        side = "client" if client else "server"
        if old is None:
            if client:
                conn.client_key = key
            else:
                conn.server_key = key
            tok = key_token(key, conn.version)
            other = self.by_token.get(tok)
            if other is None:
                self.by_token[tok] = conn
            for sf in list(self.orphan_joins):
                if sf.join_token == tok:
                    self.orphan_joins.remove(sf)
                    self._attach_join(sf)
            for sf in conn.subflows:
                self._check_join(sf)
        elif old != key:
            self._violate(conn, V_KEY_MISMATCH, f"{side} key {where} 0x{key:016x} != earlier 0x{old:016x}")

    def _option(self, sf: Subflow, pkt, from_client: bool, opt, ts: float) -> None:
        conn = sf.conn
        if isinstance(opt, MpCapable):
            if sf.kind != "initial" or conn is None:
                return
            sf.mpc_ack = True
            self._set_version(conn, sf, opt.version, "ACK")
            if opt.sndr_key is not None:
                self._set_key(conn, from_client, opt.sndr_key, "ACK")
            if opt.rcvr_key is not None:
                self._set_key(conn, not from_client, opt.rcvr_key, "ACK")
            if opt.data_len is not None and pkt.payload_len:
                dirname = "c2s" if from_client else "s2c"
                idsn = conn.idsn(dirname)
                if idsn is not None:
                    self._add_mapping(sf, from_client, Mapping(1, opt.data_len, (idsn + 1) & M64, opt.csum, False, "mp_capable"), ts)
            return
        if isinstance(opt, MpJoinAck):
            if sf.kind == "join":
                sf.join_ack = opt
                if sf.conn is None:
                    self._attach_join(sf)
                self._check_join(sf)
            return
        if isinstance(opt, (MpJoinSyn, MpJoinSynAck)):
            return
        if conn is None:
            return
        # the sender's side in connection terms
        sender_client = from_client == sf.joiner_is_client if sf.kind == "join" else from_client
        dirname = "c2s" if sender_client else "s2c"
        if isinstance(opt, Dss):
            if opt.data_ack is not None:
                other = "s2c" if dirname == "c2s" else "c2s"
                idsn = conn.idsn(other)
                if idsn is not None:
                    ack = opt.data_ack if opt.ack64 else _expand32(opt.data_ack, idsn)
                    rel = (ack - idsn) & M64
                    if rel < DSN_WINDOW and (conn.data_ack[other] is None or rel > conn.data_ack[other]):
                        conn.data_ack[other] = rel
            if opt.data_seq is not None and opt.subflow_seq is not None and opt.data_len is not None:
                idsn = conn.idsn(dirname)
                dsn = opt.data_seq
                if not opt.dsn64:
                    if idsn is None:
                        return
                    dsn = _expand32(dsn, idsn)
                if opt.data_fin:
                    conn.data_fin[dirname] = (dsn + opt.data_len - 1) & M64
                if opt.data_len == 0:
                    self._fallback(conn, "infinite-mapping", f"subflow {sf.id} {dirname} at ssn {opt.subflow_seq}")
                m = Mapping(opt.subflow_seq, opt.data_len, dsn, opt.csum, opt.data_fin, "dss")
                acked = conn.data_ack[dirname]
                if (opt.data_len == 1 and not opt.data_fin and idsn is not None and acked is not None
                        and 1 <= ((dsn - idsn) & M64) < acked):
                    # Linux zero-window probe (net/mptcp/protocol.c, mptcp_sendmsg_frag): one new
                    # subflow byte mapped to DSN snd_una - 1, already DATA_ACKed; the receiver
                    # drops it, and Linux does not promise its value: not data for the stream.
                    m.source = "window-probe"
                    conn.window_probes[dirname] += 1
                self._add_mapping(sf, from_client, m, ts)
            return
        if isinstance(opt, AddAddr):
            self._add_addr(conn, sf, sender_client, opt)
            return
        if isinstance(opt, MpFail):
            self._fallback(conn, "mp-fail", f"subflow {sf.id} from {dirname[0] == 'c' and 'client' or 'server'} dsn 0x{opt.data_seq:016x}")
            return
        if isinstance(opt, MpFastclose):
            expect = conn.key_of(not sender_client)
            self._fallback(conn, "mp-fastclose", f"subflow {sf.id} from {'client' if sender_client else 'server'}")
            if expect is not None and expect != opt.rcvr_key:
                self._violate(conn, V_FASTCLOSE, f"subflow {sf.id}: key 0x{opt.rcvr_key:016x} != 0x{expect:016x}")
            return
        if isinstance(opt, MpTcpRst):
            self._fallback(conn, "mp-tcprst", f"subflow {sf.id} reason {opt.reason}{' transient' if opt.transient else ''}")
            return
        if isinstance(opt, MpPrio):
            conn.mp_prio.append(f"subflow {sf.id} backup={int(opt.backup)}")
            return
        if isinstance(opt, RemoveAddr):
            conn.remove_addr.extend(opt.addr_ids)

    def _add_addr(self, conn: Connection, sf: Subflow, sender_client: bool, opt: AddAddr) -> None:
        sender = "client" if sender_client else "server"
        addr = fmt_addr(opt.addr)
        if opt.echo:
            for a in conn.add_addrs:
                if a["from"] != sender and a["addr_id"] == opt.addr_id and a["addr"] == addr and a["port"] == opt.port:
                    a["echoed"] = True
                    return
            conn.add_addrs.append({"from": sender, "addr_id": opt.addr_id, "addr": addr, "port": opt.port,
                                   "echo_only": True, "hmac": None, "echoed": False})
            return
        for a in conn.add_addrs:
            if a["from"] == sender and a["addr_id"] == opt.addr_id and a["addr"] == addr and a["port"] == opt.port \
                    and a["hmac"] == (opt.hmac.hex() if opt.hmac is not None else None):
                return  # retransmitted announcement
        ks, kr = conn.key_of(sender_client), conn.key_of(not sender_client)
        if opt.hmac is None:
            verdict = "none"  # v0 (RFC 6824 §3.4.1): ADD_ADDR carries no HMAC
        elif ks is None or kr is None:
            verdict = "unverifiable"
        else:
            verdict = "ok" if add_addr_hmac(ks, kr, opt.addr_id, opt.addr, opt.port) == opt.hmac else "bad"
        entry = {"from": sender, "addr_id": opt.addr_id, "addr": addr, "port": opt.port,
                 "hmac": opt.hmac.hex() if opt.hmac is not None else None, "verdict": verdict, "echoed": False, "subflow": sf.id}
        conn.add_addrs.append(entry)
        if verdict == "bad":
            self._violate(conn, V_ADD_ADDR, f"from {sender}: id {opt.addr_id} {addr} hmac {opt.hmac.hex()}")

    def _add_mapping(self, sf: Subflow, from_client: bool, m: Mapping, ts: float) -> None:
        d = sf.direction(from_client)
        key = (m.ssn, m.data_len, m.dsn, m.csum, m.data_fin)
        if key in d.mappings:
            return
        d.mappings[key] = m
        if m.sub_len <= 0:
            return
        off = (m.dsn - m.ssn) & M64
        for s, e, o in d.offsets:
            if s < m.end and m.ssn < e and o != off:
                self._violate(sf.conn, V_MAP_CONFLICT,
                              f"subflow {sf.id} {'c2s' if from_client else 's2c'}: ssn {m.ssn}+{m.sub_len} -> dsn 0x{m.dsn:016x} "
                              f"overlaps ssn {s}+{e - s} mapped to dsn offset 0x{o:016x}")
                break
        d.offsets.append((m.ssn, m.end, off))
        d.mapped.add(m.ssn, m.end)

    def _payload(self, sf: Subflow, d: Direction, pkt, buf: bytes, plen: int, cap_plen: int, trusted: bool, ts: float) -> None:
        d.segments += 1
        d.payload_bytes += plen
        d.truncated_bytes += plen - cap_plen
        rel = d.rel(pkt.seq)
        if rel is None:
            return
        payload = buf[pkt.payload_off : pkt.payload_off + cap_plen]
        if cap_plen:
            conflicts = d.store.put(rel, payload, trusted)
            if conflicts and sf.conn is not None:
                self._violate(sf.conn, V_RTX_CONFLICT,
                              f"subflow {sf.id}: segment at ssn {rel} differs from an earlier copy in {conflicts} byte(s)")
        if sf.conn is None or sf.kind == "plain":
            return
        end = rel + plen
        if not d.mapped.contains(rel, end):
            gap = not d.store.known.contains(1, rel) if rel > 1 else False
            for s, e in d.mapped.missing(rel, end):
                d.pending.add(s, e)
                d.gap_before.setdefault(s, gap)

    # ---- end of input ----------------------------------------------------------------

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        has_partial = any(sf.kind == "partial" and sf.mptcp_seen for sf in self.all_subflows)
        for sf in self.all_subflows:
            if sf.kind == "join" and sf.conn is None:
                self._attach_join(sf)
                self._check_join(sf)
            if sf.kind == "join" and sf.conn is None:
                self.orphan_joins.append(sf)
        for conn in self.connections:
            if conn.first.mpc_synack is None:
                continue
            if conn.client_key is None and conn.first.c2s.segments + conn.first.s2c.segments:
                # RFC 8684 §3.7: MP_CAPABLE SYN/ACK, but the client never sent the third-ACK keys
                self._fallback(conn, "third-ack-without-mp-capable", f"subflow {conn.first.id}")
                continue  # plain TCP from here: nothing is mapped
            self._finish_mappings(conn)
        self.has_partial = has_partial

    def _finish_mappings(self, conn: Connection) -> None:
        for sf in conn.subflows:
            for from_client in (True, False):
                d = sf.direction(from_client)
                sender_client = (from_client == sf.joiner_is_client) if sf.kind == "join" else from_client
                dirname = "c2s" if sender_client else "s2c"
                label = f"subflow {sf.id} {'c2s' if from_client else 's2c'}"
                if d.tcp_csum["bad"]:
                    self._violate(conn, V_TCP_CSUM, f"{label}: {d.tcp_csum['bad']} segment(s) with a wrong TCP checksum")
                # payload never covered / covered only later
                late = unmapped = 0
                late_unverifiable = 0
                for s, e in d.pending:
                    for ms, me in d.mapped.missing(s, e):
                        unmapped += me - ms
                    covered = (e - s) - sum(me - ms for ms, me in d.mapped.missing(s, e))
                    if covered:
                        if d.gap_before.get(s, False):
                            late_unverifiable += covered
                        else:
                            late += covered
                if unmapped:
                    self._violate(conn, V_UNMAPPED, f"{label}: {unmapped} payload byte(s) covered by no mapping")
                if late:
                    self._violate(conn, V_LATE, f"{label}: {late} payload byte(s) mapped only by a later segment")
                if late_unverifiable:
                    conn.unverifiable.append({"kind": "late-mapping", "detail":
                                              f"{label}: {late_unverifiable} byte(s) mapped later, after a capture gap"})
                idsn = conn.idsn(dirname)
                csum_stats = conn.dss_csum[dirname]
                for m in d.mappings.values():
                    rel_dsn = None if idsn is None else (m.dsn - idsn) & M64
                    if m.data_len and rel_dsn is not None and not 1 <= rel_dsn <= DSN_WINDOW:
                        conn.dsn_bad[dirname] += 1
                    if m.data_len == 0:
                        continue
                    plen = m.sub_len
                    have = d.store.has(m.ssn, m.ssn + plen) if plen > 0 else True
                    if have and rel_dsn is not None and 1 <= rel_dsn <= DSN_WINDOW and plen > 0 \
                            and m.source != "window-probe":
                        diff = conn.data[dirname].put(rel_dsn, d.store.get(m.ssn, m.ssn + plen), True)
                        if diff:
                            self._violate(conn, V_DATA_CONFLICT,
                                          f"{label}: dsn +{rel_dsn} carries other bytes than another copy ({diff} byte(s))")
                    if conn.checksums:
                        if m.csum is None:
                            self._violate(conn, V_DSS_NO_CSUM, f"{label}: mapping ssn {m.ssn} len {m.data_len} has no checksum")
                        elif not have:
                            csum_stats["unverifiable"] += 1
                        else:
                            payload = d.store.get(m.ssn, m.ssn + plen) if plen > 0 else b""
                            if dss_checksum(m.dsn, m.ssn if plen > 0 else m.ssn, m.data_len, payload) == m.csum:
                                csum_stats["ok"] += 1
                            else:
                                csum_stats["bad"] += 1
                                self._violate(conn, V_DSS_CSUM,
                                              f"{label}: mapping ssn {m.ssn} len {m.data_len} dsn 0x{m.dsn:016x} csum 0x{m.csum:04x}")
        for dirname in ("c2s", "s2c"):
            # data-level holes: DSNs below the highest mapped one (or the DATA_FIN) never captured
            idsn = conn.idsn(dirname)
            store = conn.data[dirname]
            top = max((e for _, e in store.known), default=0)
            if conn.data_fin[dirname] is not None and idsn is not None:
                fin_rel = (conn.data_fin[dirname] - idsn) & M64
                if fin_rel <= DSN_WINDOW:
                    top = max(top, fin_rel)
            holes = sum(e - s for s, e in store.known.missing(1, top)) if top > 1 else 0
            if holes:
                conn.unverifiable.append({"kind": "data-not-captured",
                                          "detail": f"{dirname}: {holes} data byte(s) below the highest DSN seen were not captured"})
            if conn.dsn_bad[dirname]:
                self._violate(conn, V_DSN_RANGE, f"{dirname}: {conn.dsn_bad[dirname]} mapping(s) with a DSN not in "
                                                  f"IDSN+[1, 2^40] (wrong key?)")

    # ---- helpers ---------------------------------------------------------------------

    def _violate(self, conn: Connection | None, kind: str, detail: str) -> None:
        if conn is None:
            return
        conn.violations.append({"kind": kind, "detail": detail})

    def _fallback(self, conn: Connection | None, kind: str, detail: str) -> None:
        if conn is None:
            return
        for f in conn.fallbacks:
            if f["kind"] == kind and f["detail"] == detail:
                return
        conn.fallbacks.append({"kind": kind, "detail": detail})

    # ---- report ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        self.finish()
        conns = [self._conn_report(c) for c in self.connections if c.first.mpc_synack is not None]
        fallback_conns = [self._fallback_report(c) for c in self.connections if c.first.mpc_synack is None]
        orphans = []
        for sf in self.orphan_joins:
            o = self._subflow_report(sf)
            o["token"] = hexkey(sf.join_token, 8)
            orphans.append(o)
        violations = sum(len(c["violations"]) for c in conns)
        orphan_violation = bool(orphans) and not self.has_partial
        if orphan_violation:
            violations += len(orphans)
        partial = [self._subflow_report(sf) for sf in self.all_subflows if sf.kind == "partial" and sf.mptcp_seen]
        unverifiable = sum(len(c["unverifiable"]) for c in conns) + (len(orphans) if not orphan_violation else 0) + len(partial)
        return {
            "packets": self.packets,
            "non_tcp_packets": self.non_tcp,
            "truncated_headers": self.truncated_headers,
            "mptcp_options": dict(sorted(self.option_counts.items())),
            "malformed_options": self.malformed,
            "connections": conns,
            "fallback_connections": fallback_conns,
            "orphan_joins": orphans,
            "orphan_joins_are_violations": orphan_violation,
            "partial_subflows": partial,
            "summary": {
                "connections": len(conns),
                "subflows": sum(len(c["subflows"]) for c in conns),
                "fallback_connections": len(fallback_conns),
                "violations": violations + sum(1 for m in self.malformed if m["connection"] is None),
                "unverifiable": unverifiable,
            },
        }

    def _subflow_report(self, sf: Subflow) -> dict[str, Any]:
        r: dict[str, Any] = {
            "id": sf.id,
            "kind": sf.kind,
            "client": fmt_addr(*sf.client),
            "server": fmt_addr(*sf.server),
            "segments": {"c2s": sf.c2s.segments, "s2c": sf.s2c.segments},
            "payload_bytes": {"c2s": sf.c2s.payload_bytes, "s2c": sf.s2c.payload_bytes},
            "truncated_bytes": {"c2s": sf.c2s.truncated_bytes, "s2c": sf.s2c.truncated_bytes},
            "tcp_checksums": {"c2s": sf.c2s.tcp_csum, "s2c": sf.s2c.tcp_csum},
            "mappings": {"c2s": len(sf.c2s.mappings), "s2c": len(sf.s2c.mappings)},
            "fin": {"c2s": sf.c2s.fin, "s2c": sf.s2c.fin},
            "rst": {"c2s": sf.c2s.rst, "s2c": sf.s2c.rst},
        }
        if sf.kind == "join":
            r["join"] = {
                "token": hexkey(sf.join_token, 8),
                "addr_id": sf.addr_id,
                "backup": sf.backup,
                "initiator": "client" if sf.joiner_is_client else "server",
                "nonce_syn": hexkey(sf.join_syn.nonce if sf.join_syn else None, 8),
                "nonce_synack": hexkey(sf.join_synack.nonce if sf.join_synack else None, 8),
                "synack_hmac": sf.join_synack.hmac.hex() if sf.join_synack else None,
                "ack_hmac": sf.join_ack.hmac.hex() if sf.join_ack else None,
                "synack_hmac_verdict": sf.join_synack_verdict,
                "ack_hmac_verdict": sf.join_ack_verdict,
            }
        if sf.events:
            r["events"] = sf.events
        return r

    def _conn_report(self, c: Connection) -> dict[str, Any]:
        for sf in c.subflows:
            if sf.kind == "join" and sf.join_synack is not None and sf.join_synack_verdict == "unverifiable":
                c.unverifiable.append({"kind": "join-hmac", "detail": f"subflow {sf.id}: keys or nonces not captured"})
            elif sf.kind == "join" and sf.join_synack is not None and sf.join_ack_verdict == "unverifiable":
                c.unverifiable.append({"kind": "join-hmac", "detail": f"subflow {sf.id}: third ACK (MP_JOIN) not captured"})
        dirs = {}
        for dirname in ("c2s", "s2c"):
            mapped = sum(len(sf.direction(self._dir_from_client(sf, dirname)).mappings) for sf in c.subflows)
            payload = sum(sf.direction(self._dir_from_client(sf, dirname)).payload_bytes for sf in c.subflows)
            stored = c.data[dirname].known.total()
            fin = c.data_fin[dirname]
            idsn = c.idsn(dirname)
            fin_rel = None if fin is None or idsn is None else (fin - idsn) & M64
            ack = c.data_ack[dirname]
            dirs[dirname] = {
                "payload_bytes": payload,
                "data_bytes": stored,
                "mappings": mapped,
                "dss_checksums": c.dss_csum[dirname] if c.checksums else None,
                "data_fin": fin is not None,
                "data_fin_dsn": fin_rel,
                "data_fin_acked": fin_rel is not None and ack is not None and ack >= fin_rel + 1,
                "data_ack": ack,
                "window_probes": c.window_probes[dirname],
            }
        return {
            "id": c.id,
            "version": c.version,
            "checksums": c.checksums,
            "client": {"key": hexkey(c.client_key), "token": hexkey(c.client_token, 8),
                       "idsn": hexkey(c.idsn("c2s"))},
            "server": {"key": hexkey(c.server_key), "token": hexkey(c.server_token, 8),
                       "idsn": hexkey(c.idsn("s2c"))},
            "subflows": [self._subflow_report(sf) for sf in c.subflows],
            "add_addr": c.add_addrs,
            "remove_addr": c.remove_addr,
            "mp_prio": c.mp_prio,
            "directions": dirs,
            "fallbacks": c.fallbacks,
            "violations": c.violations,
            "unverifiable": c.unverifiable,
        }

    def _fallback_report(self, c: Connection) -> dict[str, Any]:
        return {"id": c.id, "subflow": self._subflow_report(c.first), "fallbacks": c.fallbacks}

    @staticmethod
    def _dir_from_client(sf: Subflow, dirname: str) -> bool:
        sender_client = dirname == "c2s"
        return sender_client == sf.joiner_is_client if sf.kind == "join" else sender_client


def _parse_v0(raw: bytes):
    """RFC 6824 forms of ADD_ADDR and MP_PRIO (the v1 parser would call them malformed);
    None when malformed. ADD_ADDR (§3.4.1): subtype | IPVer, address id, address, optional
    port; no HMAC, no echo. MP_PRIO (§3.3.8): subtype | B, optional address id."""
    if len(raw) < 3 or raw[0] != 30 or raw[1] != len(raw):
        return None
    subtype, low = raw[2] >> 4, raw[2] & 0x0F
    if subtype == SUB_ADD_ADDR:
        addr_len = {4: 4, 6: 16}.get(low)
        if addr_len is None or len(raw) not in (4 + addr_len, 6 + addr_len):
            return None
        port = int.from_bytes(raw[4 + addr_len : 6 + addr_len], "big") if len(raw) == 6 + addr_len else None
        return AddAddr(echo=False, addr_id=raw[3], addr=bytes(raw[4 : 4 + addr_len]), port=port, hmac=None)
    if subtype == SUB_MP_PRIO and len(raw) in (3, 4):
        return MpPrio(backup=bool(low & 0x01))
    return None


def _expand32(low: int, ref: int) -> int:
    """The 64-bit value with low 32 bits `low` closest to `ref` (RFC 8684 §3.3.1 32-bit DSNs)."""
    cand = (ref & ~M32) | low
    best = cand
    for c in (cand - (1 << 32), cand + (1 << 32)):
        if abs(c - ref) < abs(best - ref):
            best = c
    return best & M64


def _pad_to_ip_length(buf: bytes) -> bytes:
    """Zero-pad a snaplen-truncated packet to its IP length so headers parse."""
    if len(buf) < 4:
        return buf
    v = buf[0] >> 4
    if v == 4:
        total = int.from_bytes(buf[2:4], "big")
    elif v == 6 and len(buf) >= 6:
        total = 40 + int.from_bytes(buf[4:6], "big")
    else:
        return buf
    if len(buf) < total:
        return buf + bytes(total - len(buf))
    return buf


def _partial_sums(buf: bytes, pkt) -> tuple[int, int]:
    """Checksum field values a CHECKSUM_PARTIAL (offloaded) segment shows in a sender capture."""
    tcp_len = pkt.length - pkt.ip_hlen
    if pkt.version == 4:
        pseudo = pkt.src + pkt.dst + b"\x00\x06" + tcp_len.to_bytes(2, "big")
    else:
        pseudo = pkt.src + pkt.dst + tcp_len.to_bytes(4, "big") + b"\x00\x00\x00\x06"
    s = ones_sum(pseudo)
    return s, s ^ 0xFFFF
