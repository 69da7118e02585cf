"""Test vectors for the wire layer, as named constants, each with its source.

PROTOCOL.md is the project's design note of wire facts ("MPTCP wire facts, checked against RFC 8684
and a Linux 6.18 peer").
"""

# --- keys, token, IDSN (PROTOCOL.md "Keys, token, IDSN"; RFC 8684 §3.1/§3.2, v1 SHA-256) ----

KEY_A = 0x0102030405060708  # PROTOCOL.md vector key
KEY_A_TOKEN_V1 = 0x66840DDA  # PROTOCOL.md: token of KEY_A
KEY_A_IDSN_V1 = 0xF5A101D3D29D6F72  # PROTOCOL.md: IDSN of KEY_A
KEY_B = 0x1112131415161718  # PROTOCOL.md vector key
KEY_B_TOKEN_V1 = 0xCCAD45AC  # PROTOCOL.md: token of KEY_B

# --- MP_JOIN HMACs (PROTOCOL.md "MP_JOIN", v1 vector; RFC 8684 §3.2) -----------------------

NONCE_A = 0xA1A2A3A4  # PROTOCOL.md: nonce of A (the joining side)
NONCE_B = 0xB1B2B3B4  # PROTOCOL.md: nonce of B (the listener)
# PROTOCOL.md: SYN/ACK from B carries HMAC(kB||kA, nB||nA), leftmost 64 bits
JOIN_SYNACK_HMAC_B = bytes.fromhex("864b40428762fd06")
# PROTOCOL.md: ACK from A carries HMAC(kA||kB, nA||nB), leftmost 160 bits
JOIN_ACK_HMAC_A = bytes.fromhex("53037f2899475529844115fd07e665d23d3554fb")

# --- DSS checksum (RFC 8684 §3.3.1, computed by hand) -------------------------------------
# Pseudo-header words: DSN 0000 0000 0000 0001 | subflow seq 0000 0001 | length 0001 |
# checksum 0000; payload b"\x00" padded to the word 0000. Sum = 3, checksum = ~3 = 0xfffc.
DSS_CSUM_HAND = dict(data_seq=1, subflow_seq=1, data_len=1, payload=b"\x00", csum=0xFFFC)
# Words with carries: DSN ffff ffff ffff ffff | ffff ffff | 0004 | 0000 | payload 8001 8001.
# 6*ffff + 4 + 2*8001 = 0x70000 -> fold 0x0007 -> checksum 0xfff8.
DSS_CSUM_CARRY = dict(
    data_seq=0xFFFFFFFFFFFFFFFF,
    subflow_seq=0xFFFFFFFF,
    data_len=4,
    payload=bytes.fromhex("80018001"),
    csum=0xFFF8,
)

# --- Linux option layouts (PROTOCOL.md "Option space"; Linux tcp_options_write()) ---------

# Linux SYN: MSS 1460, SACK_PERM+TS (TSval 1, TSecr 0), NOP+WS 7, then MP_CAPABLE v1 = 24 bytes.
LINUX_SYN_TCP_OPTIONS = bytes.fromhex("020405b4" "0402080a" "00000001" "00000000" "01030307")
LINUX_SYN_MP_CAPABLE = bytes.fromhex("1e040101")  # kind 30, len 4, v1, flags H (RFC 8684 §3.1; checksums off)
LINUX_SYN_OPTION_SPACE = 24  # PROTOCOL.md: MSS 4 + SACK_PERM/TS 12 + NOP/WS 4 + MP_CAPABLE 4
MAX_OPTION_SPACE = 40  # PROTOCOL.md: "40 bytes in all"; timestamps 12 + DSS up to 28 = 40
DSS_MAX_LEN = 28  # PROTOCOL.md "DSS": max length 28 (ack64 + dsn64 + checksum)
