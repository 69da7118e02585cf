"""TCP Fast Open (RFC 7413) from a plain-TCP guest: a SYN carrying data (and a TFO cookie
option, kind 34) converts if it can, else falls back cleanly.

- The guest SYN keeps its payload and its cookie (or cookie request) and gains MP_CAPABLE.
- The server accepted the SYN data (its SYN/ACK acks ISN+1+len): the guest's third ACK, at
  ISN+1+len, carries MP_CAPABLE with both keys (in MPC_PENDING a pure ACK does, whatever its
  seq). The SYN data is outside the data sequence space (RFC 8684 Appendix B.3, Figure 19 as
  corrected by verified erratum 6609: `S 0(20) <TFO cookie>`, `S. ack 21`, `. 21(0)
  <MP_CAPABLE>`, `. 21(20) <DSS seq=1 ssn=1 dlen=20>`; Linux net/mptcp/fastopen.c: "the
  fastopen data [does not] belong to the mptcp sequence space", it adds the SYN data's length
  to the subflow's ssn_offset and maps the next byte to IDSN+1). So the first byte after the
  SYN data is DSN IDSN+1, relative subflow seq 1, and the server's DATA_ACK IDSN+1+k is the
  guest's ack ISN+1+len+k. Against Linux 6.18 (tests/integration/test_fastopen.py) a mapping
  that counts the SYN data (DSN IDSN+1+len, ssn 1+len) is refused: MPTcpExtDSSNoMatchTCP,
  then a fallback in the middle of the connection.
- The server did not accept it (ack ISN+1): the guest retransmits it at relative seq 1, where
  it gets the MP_CAPABLE data form (DSN IDSN+1, as without Fast Open).
- A SYN/ACK without MP_CAPABLE: plain TCP, untouched from then on.

Runs with either implementation of the core (MIDDLEBOX_PURE_PYTHON=1 for the spec).
"""

from __future__ import annotations

import pytest

from middlebox.core import ACCEPT, Rewrite, State
from middlebox.wire import Dss, MpCapable, build_options, dss_checksum, encode_tcp_options, key_idsn

from tests.unit.test_core_harness import (
    ACK,
    FIN,
    M32,
    M64,
    PSH,
    SYN,
    Pair,
    check_wire,
    make_packet,
    mptcp_of,
)

TFO = 34
COOKIE = bytes.fromhex("cad4a50d873c997e")
SYN_DATA = bytes(range(256)) * 4 + b"syn-data-tail"  # 1037 bytes: fits in one SYN


def tfo_option(cookie: bytes = COOKIE) -> bytes:
    """Kind 34 (RFC 7413 §4.1.1): an empty one asks for a cookie; padded with NOPs."""
    opt = bytes([TFO, 2 + len(cookie)]) + cookie
    return opt + b"\x01" * (-len(opt) % 4)


def tcp_options_raw(buf: bytes) -> bytes:
    pkt, _ = check_wire(buf)
    return buf[pkt.ip_hlen + 20 : pkt.payload_off]


def tfo_of(buf: bytes) -> bytes | None:
    """The value of the segment's kind-34 option (b"" for a cookie request), None if absent."""
    raw = tcp_options_raw(buf)
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        n = raw[i + 1]
        if kind == TFO:
            return raw[i + 2 : i + n]
        i += n
    return None


def payload_of(buf: bytes) -> bytes:
    pkt, _ = check_wire(buf)
    return buf[pkt.payload_off : pkt.length]


def g_syn_tfo(p: Pair, data: bytes = SYN_DATA, cookie: bytes = COOKIE) -> bytes:
    opts = p.g_opts(syn=True) + tfo_option(cookie)
    return make_packet(p.g_addr, p.s_addr, p.gport, p.sport, p.g_isn, 0, SYN, opts, data, v6=p.v6)


def s_synack(p: Pair, syn_sent: bytes, ack: int, mptcp=True, cookie: bytes | None = None) -> bytes:
    """The server's SYN/ACK acking `ack` (ISN+1+len: it took the SYN data; ISN+1: it did not),
    with MP_CAPABLE(server key) when `mptcp`, and a cookie when given."""
    pkt, opts = check_wire(syn_sent)
    mp = []
    if mptcp:
        (mpc,) = mptcp_of(syn_sent, pkt, opts)
        assert isinstance(mpc, MpCapable) and mpc.sndr_key is None
        p.csum = p.s_csum or mpc.checksum
        mp = [MpCapable(1, 0x01 | (0x80 if p.s_csum else 0), p.s_key)]
    if cookie is None:
        tcp = encode_tcp_options(mss=1460, sack_perm=True, ts_val=77, ts_ecr=1, wscale=7)
    else:  # no room for timestamps next to a cookie and MP_CAPABLE: Linux drops them
        tcp = encode_tcp_options(mss=1460, sack_perm=True, ts_val=-1, ts_ecr=-1, wscale=7)
        tcp += tfo_option(cookie)
    return make_packet(p.s_addr, p.g_addr, p.sport, p.gport, p.s_isn, ack, SYN | ACK,
                       build_options(tcp, tuple(mp)), v6=p.v6)


def _flow(p: Pair):
    (flow,) = p.conv.flows.values()
    return flow


def _sent_mptcp(buf: bytes):
    pkt, opts = check_wire(buf)
    return pkt, mptcp_of(buf, pkt, opts)


# -- the SYN ---------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("cookie", [COOKIE, b""], ids=["cookie", "cookie-request"])
def test_syn_with_data_gets_mp_capable_keeps_payload_and_cookie(v6, cookie):
    p = Pair(v6=v6)
    data = SYN_DATA if cookie else b""  # a cookie request carries no data (Linux)
    syn = g_syn_tfo(p, data, cookie)
    actions, sent = p.out(syn)
    assert isinstance(actions[0], Rewrite)
    pkt, mp = _sent_mptcp(sent)
    assert mp == [MpCapable(version=1, flags=0x01)]
    assert pkt.flags == SYN and pkt.seq == p.g_isn
    assert payload_of(sent) == data, "the SYN's data must reach the server unchanged"
    assert tfo_of(sent) == cookie, "the TFO option must reach the server unchanged"
    _, o = check_wire(sent)
    assert o.mss < 1460 and o.wscale == 7 and o.sack_perm and o.ts_val == 1  # MSS clamped only
    assert _flow(p).state is State.SYN_SENT
    assert p.count("MPCapableSYNTX") == 1


def test_synack_cookie_reaches_the_guest_without_mptcp():
    """First connection: cookie request; the SYN/ACK's cookie must reach the guest (it caches
    it for the next connection), the MP_CAPABLE must not."""
    p = Pair()
    _, syn = p.out(g_syn_tfo(p, b"", b""))
    _, got = p.inn(s_synack(p, syn, (p.g_isn + 1) & M32, cookie=COOKIE))
    assert got is not None and tfo_of(got) == COOKIE
    assert p.count("MPCapableSYNACKRX") == 1


# -- the server took the SYN data -------------------------------------------------------------


@pytest.mark.parametrize("checksum", [False, True], ids=["no-csum", "csum"])
def test_syn_data_acked_third_ack_carries_both_keys(checksum):
    p = Pair(server_checksum=checksum)
    _, syn = p.out(g_syn_tfo(p))
    after = (p.g_isn + 1 + len(SYN_DATA)) & M32
    actions, got = p.inn(s_synack(p, syn, after))
    assert got is not None and check_wire(got)[0].ack == after, "the SYN/ACK passes, its ack kept"
    p.g_rcv = (p.s_isn + 1) & M32
    p.g_nxt = after
    _, ack = p.out(p.g_ack())
    pkt, mp = _sent_mptcp(ack)
    assert pkt.seq == after and pkt.payload_len == 0
    (mpc,) = mp
    assert isinstance(mpc, MpCapable) and mpc.data_len is None
    assert mpc.sndr_key is not None and mpc.rcvr_key == p.s_key, "third ACK: both keys"
    assert bool(mpc.flags & 0x80) == checksum
    assert p.count("MPCapableACKTX") == 1
    # a second pure ACK before any data (window update) still carries them
    _, ack2 = p.out(p.g_ack())
    (mpc2,) = _sent_mptcp(ack2)[1]
    assert isinstance(mpc2, MpCapable) and mpc2.rcvr_key == p.s_key
    assert mpc2.sndr_key == mpc.sndr_key


def _tfo_established(p: Pair):
    """SYN with SYN_DATA, SYN/ACK acking it, third ACK; returns the converter's IDSN."""
    _, syn = p.out(g_syn_tfo(p))
    after = (p.g_isn + 1 + len(SYN_DATA)) & M32
    p.inn(s_synack(p, syn, after))
    p.g_rcv = (p.s_isn + 1) & M32
    p.g_nxt = after
    _, ack = p.out(p.g_ack())
    (mpc,) = _sent_mptcp(ack)[1]
    p.c_key = mpc.sndr_key
    return key_idsn(mpc.sndr_key, 1)


@pytest.mark.parametrize("checksum", [False, True], ids=["no-csum", "csum"])
def test_after_accepted_syn_data_the_mapping_starts_at_idsn_plus_1(checksum):
    """RFC 8684 Figure 19 (erratum 6609) and Linux: the first byte after the SYN data is DSN
    IDSN+1 at relative subflow seq 1; later ones follow; DATA_FIN likewise."""
    p = Pair(server_checksum=checksum)
    idsn = _tfo_established(p)
    L = len(SYN_DATA)
    chunks = [b"A" * 1000, b"B" * 700, b"C" * 1]
    k = 0
    for chunk in chunks:
        seq = p.g_nxt
        _, sent = p.out(p.g_data(chunk))
        pkt, mp = _sent_mptcp(sent)
        assert pkt.seq == seq and payload_of(sent) == chunk
        rel = (seq - p.g_isn - L) & M32  # relative to the end of the SYN data
        assert rel == 1 + k
        mpc = [o for o in mp if isinstance(o, MpCapable)]
        if mpc and rel == 1:
            # before the server's first DATA_ACK the first data carries the MP_CAPABLE data
            # form: its implicit mapping is DSN IDSN+1 at subflow seq 1 (RFC 8684 §3.1); the
            # real kernel takes it (tests/integration/test_fastopen.py)
            assert mpc[0].data_len == len(chunk) and mpc[0].rcvr_key == p.s_key
            if checksum:
                assert mpc[0].csum == dss_checksum((idsn + 1) & M64, 1, len(chunk), chunk)
            k += len(chunk)
            continue
        dss = [o for o in mp if isinstance(o, Dss)]
        assert len(dss) == 1 and dss[0].data_seq is not None, mp
        d = dss[0]
        assert (d.data_seq, d.subflow_seq, d.data_len) == ((idsn + rel) & M64, rel, len(chunk)), (
            f"post-TFO mapping: got DSN IDSN+{(d.data_seq - idsn) & M64} ssn {d.subflow_seq}, "
            f"want DSN IDSN+{rel} ssn {rel} (the SYN data, {L} bytes, is outside the data "
            f"sequence space: RFC 8684 B.3 Figure 19, Linux fastopen.c)")
        if checksum:
            assert d.csum == dss_checksum((idsn + rel) & M64, rel, len(chunk), chunk)
        k += len(chunk)
    _, sent = p.out(p.g_fin())
    (d,) = [o for o in _sent_mptcp(sent)[1] if isinstance(o, Dss)]
    assert d.data_fin and d.data_seq == (idsn + 1 + k) & M64 and d.data_len == 1


def test_after_accepted_syn_data_the_servers_data_ack_is_the_guests_ack():
    """Linux's DATA_ACK after the SYN data and k more bytes is IDSN+1+k; the guest sent
    ISN+1+len+k: that is the ack it must see (never one below its SYN data)."""
    p = Pair()
    idsn = _tfo_established(p)
    L = len(SYN_DATA)
    p.out(p.g_data(b"x" * 500))
    sub_ack = p.g_nxt
    # the server's first data, DATA_ACK = IDSN+1+500 (SYN data excluded), subflow ack ISN+1+L+500
    rel = 1
    dss = Dss(data_ack=(idsn + 1 + 500) & M64, ack64=True, data_seq=(p.s_idsn + rel) & M64,
              dsn64=True, subflow_seq=rel, data_len=5)
    buf = p.s_packet(p.s_nxt, sub_ack, ACK | PSH, (dss,), b"hello")
    _, got = p.inn(buf)
    assert got is not None
    gpkt, _ = check_wire(got)
    assert gpkt.ack == (p.g_isn + 1 + L + 500) & M32, (
        f"guest ack ISN+{(gpkt.ack - p.g_isn) & M32}, want ISN+{1 + L + 500}")
    assert payload_of(got) == b"hello" and gpkt.seq == (p.s_isn + 1) & M32


# -- the server did not take the SYN data ------------------------------------------------------


@pytest.mark.parametrize("pure_ack_first", [True, False], ids=["ack-then-data", "data-at-once"])
def test_syn_data_not_acked_retransmitted_data_gets_mp_capable_data_form(pure_ack_first):
    p = Pair()
    _, syn = p.out(g_syn_tfo(p))
    p.inn(s_synack(p, syn, (p.g_isn + 1) & M32))  # the server ignored the SYN's data
    p.g_rcv = (p.s_isn + 1) & M32
    if pure_ack_first:
        _, ack = p.out(p.g_ack())
        p.s_receive(ack)
        (mpc,) = _sent_mptcp(ack)[1]
        assert isinstance(mpc, MpCapable) and mpc.rcvr_key == p.s_key and mpc.data_len is None
    _, sent = p.out(p.g_data(SYN_DATA))  # the retransmission, at relative seq 1
    pkt, mp = p.s_receive(sent)
    (mpc,) = mp
    assert isinstance(mpc, MpCapable) and mpc.data_len == len(SYN_DATA) and mpc.rcvr_key == p.s_key
    assert p.mapping_forms == [("mpc", 22)]
    _, sent = p.out(p.g_data(b"more"))
    p.s_receive(sent)
    assert p.s_stream() == SYN_DATA + b"more", "DSN = IDSN + (seq - ISN) as without Fast Open"


# -- the server is not MPTCP ------------------------------------------------------------------


@pytest.mark.parametrize("acked", [True, False], ids=["data-acked", "data-not-acked"])
def test_synack_without_mp_capable_falls_back_cleanly(acked):
    p = Pair(server_mptcp=False)
    _, syn = p.out(g_syn_tfo(p))
    after = (p.g_isn + 1 + (len(SYN_DATA) if acked else 0)) & M32
    synack = s_synack(p, syn, after, mptcp=False, cookie=COOKIE)
    _, got = p.inn(synack)
    assert got is not None and tfo_of(got) == COOKIE and check_wire(got)[0].ack == after
    assert _flow(p).state is State.FALLBACK
    assert p.count("MPCapableFallbackSYNACK") == 1
    p.g_rcv = (p.s_isn + 1) & M32
    p.g_nxt = after
    # the guest's ACK, then new data (SYN data taken) or the SYN data again (not taken), FIN
    guest = [p.g_ack(), p.g_data(b"q" * 300 if acked else SYN_DATA), p.g_fin()]
    for buf in guest:
        actions, sent = p.out(buf)
        assert actions == [ACCEPT] and sent == buf, "plain TCP after the fallback: untouched"
    server = [p.s_packet(p.s_nxt, p.g_nxt, ACK | PSH, (), b"reply"),
              p.s_packet((p.s_nxt + 5) & M32, p.g_nxt, ACK | FIN, ())]
    for buf in server:
        actions, got = p.inn(buf)
        assert actions == [ACCEPT] and got == buf
    assert p.count("StateViolation") == 0 and p.count("CoreBug") == 0
