"""Fuzz the compiled core and the compiled wire parser at volume (a bounded CI step).

    .venv/bin/python tests/fuzz_volume.py [--packets N] [--seed S] [--max-flows M]

N (default 1,000,000) counts mutated packets; the unmutated ones around them come on top.

Seeds: the committed captures (tests/vectors/*.pcap, read with middlebox.analysis.pcap) and
conversations recorded with the two-sided harness (tests/unit/test_core_twin_equal.py's
recorder: v4/v6, v1/v0, checksums on/off, fallback, RST, MP_FASTCLOSE, MP_FAIL, ...). Each
round replays one seed conversation on a fresh guest port (so the table fills up and evicts:
a small `--max-flows`) with 10-100% of its packets mutated: bit flips, truncations, option splices
(option bytes of another packet written over this one's), seq/ack jumps, random bytes, whole
random packets, the other direction; half of the mutated packets get their TCP checksum
fixed again, so the converter also sees damaged packets it would believe.

Every packet goes to `Converter.handle` of the compiled core (`middlebox._ccore`) and to the
compiled wire parser (`parse_packet`, then `mptcp_options` and `parse_options`). It fails
(exit 1, the seed and the packet in hex) when:

* anything but WireError escapes the wire parser, or anything escapes `handle`/`tick`;
* `counters[Counter.CoreBug]` moves (the converter caught an exception: a bug);
* the table holds more than max_flows flows, or an action list has no verdict first;
* on every 25th round (`--twin-every`), fed to a pure and a compiled converter of their own,
  the two differ in an action or a counter;
* a Rewrite or Inject does not parse, or its TCP checksum is wrong although the input's was
  right (an Inject is built from scratch: always checked), or an IPv4 header checksum is
  wrong although the input's was right.

Deterministic: the mutations and the converter's keys come from --seed (default 1, or the
FUZZ_SEED environment variable); FUZZ_PACKETS overrides the default count. Prints the packet
count and the rate.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import random
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import middlebox._ccore.converter as CORE  # noqa: E402  the compiled core, whatever the env says
import middlebox._cwire as W  # noqa: E402  the compiled wire
import middlebox.core.converter as PURE  # noqa: E402  the spec, for the sampled twin check
from middlebox.analysis.pcap import read_packets  # noqa: E402
from middlebox.core import ACCEPT, Config, Counter, Direction, Drop, Inject, Rewrite  # noqa: E402
from middlebox.wire import TWINNED, WireError  # noqa: E402

OUT, IN = Direction.OUT, Direction.IN
M32 = 0xFFFFFFFF
DEFAULT_PACKETS = 1_000_000


class Failure(Exception):
    pass


# -- seeds -------------------------------------------------------------------------------------


def capture_seeds() -> list[list[tuple]]:
    """Each capture as one conversation: the side that sent the first SYN is the guest."""
    seeds = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "vectors", "*.pcap"))):
        conv, guests = [], set()
        for _, buf in read_packets(path):
            try:
                pkt = W.parse_packet(buf)
            except WireError:
                conv.append((OUT, buf))
                continue
            if pkt.flags & 0x12 == 0x02:
                guests.add((pkt.src, pkt.sport))
            conv.append((OUT if (pkt.src, pkt.sport) in guests else IN, buf))
        if conv:
            seeds.append(conv)
    return seeds


def harness_seeds() -> list[list[tuple]]:
    """Conversations recorded with the two-sided harness (same recorder as the twin test)."""
    from tests.unit.test_core_twin_equal import ESTABLISHED, make_events

    steps_list = [
        [("gdata", 5), ("sack", 1), ("sdata", 3), ("gack", 1), ("sdata", 4), ("gdata", 9), ("sack", 0),
         ("gfin", 0), ("sdatafin_fin", 0), ("gack", 2), ("sack", 1)],
        [("sdata", 2), ("gack", 0), ("sdatafin", 0), ("gdata", 7), ("gfin", 0), ("sack", 1), ("sfin", 0),
         ("gack", 1)],
        [("gdata", 3), ("sbadcsum", 5), ("smpfail", 1), ("gdata", 4), ("sinfinite", 2), ("sdata", 3)],
        [("gdata", 1), ("sfastclose", 0), ("gack", 0), ("sfastclose", 1), ("grst", 0)],
        [("gdata", 1), ("sfastclose_bad", 3), ("srst", 1), ("grst", 0), ("gsyn", 0), ("gsyn", 1)],
        [("snodss", 4), ("gdata", 2), ("sfin", 0), ("gfin", 0), ("gack", 0), ("srst", 0)],
        [("gack", 3), ("gdata", 600), ("sdata", 1000), ("gack", 0), ("sack", 0), ("grst", 0)],
    ]
    seeds = []
    for v6 in (False, True):
        for version in (1, 0):
            for checksum in (False, True):
                for server_mptcp in (True, False):
                    for k, steps in enumerate(steps_list):
                        sc = {"v6": v6, "version": version, "checksum": checksum,
                              "server_mptcp": server_mptcp, "server_checksum": checksum and k % 2 == 0,
                              "server_version_other": 1, "timestamps": k % 3 != 2, "max_flows": 65536,
                              "prefix": ESTABLISHED}
                        _, events = make_events(sc, steps)
                        seeds.append([(d, buf) for kind, d, buf, _ in events if kind == "pkt"])
    return seeds


# -- mutations ---------------------------------------------------------------------------------


def tcp_ok(buf: bytes, pkt) -> bool:
    return struct.unpack_from("!H", buf, pkt.ip_hlen + 16)[0] == W.tcp_checksum(buf, pkt)


def ip_ok(buf: bytes, pkt) -> bool:
    return pkt.version != 4 or struct.unpack_from("!H", buf, 10)[0] == W.ipv4_checksum(buf, pkt.ip_hlen // 4)


def fix_checksums(data: bytearray) -> None:
    """TCP (and IPv4 header) checksum set right, when the bytes parse."""
    try:
        pkt = W.parse_packet(bytes(data))
    except WireError:
        return
    struct.pack_into("!H", data, pkt.ip_hlen + 16, W.tcp_checksum(bytes(data), pkt))
    if pkt.version == 4:
        struct.pack_into("!H", data, 10, W.ipv4_checksum(bytes(data), pkt.ip_hlen // 4))


def option_area(buf: bytes) -> bytes:
    try:
        pkt = W.parse_packet(buf)
    except WireError:
        return b""
    return buf[pkt.ip_hlen + 20 : pkt.payload_off]


def with_port(buf: bytes, direction, port: int) -> bytes:
    """The guest's port replaced (source going out, destination coming in), checksum kept
    right when it was."""
    try:
        pkt = W.parse_packet(buf)
    except WireError:
        return buf
    good = tcp_ok(buf, pkt)
    data = bytearray(buf)
    struct.pack_into("!H", data, pkt.ip_hlen + (0 if direction is OUT else 2), port)
    if good:
        struct.pack_into("!H", data, pkt.ip_hlen + 16, W.tcp_checksum(bytes(data), pkt))
    return bytes(data)


def mutate(rng: random.Random, buf: bytes, direction, options_pool: list[bytes]):
    """(bytes, direction) after 1..3 mutations; sometimes the checksums made right again."""
    data = bytearray(buf)
    for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
        m = rng.randrange(9)
        n = len(data)
        if m == 0 and n:  # bit flips
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif m == 1 and n:  # truncation
            del data[rng.randrange(n) :]
        elif m == 2:  # option splice: another packet's option bytes over ours
            opts = rng.choice(options_pool)
            try:
                pkt = W.parse_packet(bytes(data))
            except WireError:
                continue
            start, end = pkt.ip_hlen + 20, pkt.payload_off
            if rng.random() < 0.5 and end > start:  # in place, our length
                k = min(len(opts), end - start)
                data[start : start + k] = opts[:k]
            else:  # the whole area replaced, header fixed by the wire layer
                try:
                    data = bytearray(W.rewrite(bytes(data), pkt, options=opts))
                except WireError:
                    pass
        elif m in (3, 4):  # seq / ack jump
            try:
                pkt = W.parse_packet(bytes(data))
            except WireError:
                continue
            at = pkt.ip_hlen + (4 if m == 3 else 8)
            delta = rng.choice((1, -1, 1 << 31, -(1 << 31), rng.randrange(-70000, 70000),
                                rng.getrandbits(32)))
            struct.pack_into("!I", data, at, (struct.unpack_from("!I", data, at)[0] + delta) & M32)
        elif m == 5 and n:  # random bytes over a span
            at = rng.randrange(n)
            k = min(n - at, rng.randrange(1, 9))
            data[at : at + k] = rng.randbytes(k)
        elif m == 6:  # a whole random packet, sometimes with a plausible IP version nibble
            data = bytearray(rng.randbytes(rng.randrange(0, 100)))
            if data and rng.random() < 0.5:
                data[0] = rng.choice((0x45, 0x60)) | (data[0] & 0x0F if data[0] >> 4 == 4 else 0)
        elif m == 7:  # the other direction
            direction = IN if direction is OUT else OUT
        elif m == 8 and n > 13:  # TCP flags
            try:
                pkt = W.parse_packet(bytes(data))
            except WireError:
                continue
            data[pkt.ip_hlen + 13] = rng.choice((0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x18, 0x19, 0x01, 0x00,
                                                 rng.randrange(256)))
    if rng.random() < 0.5:
        fix_checksums(data)
    return bytes(data), direction


# -- checks ------------------------------------------------------------------------------------


def wire_parse(buf: bytes):
    """The compiled wire parser on arbitrary bytes: only WireError may come out."""
    try:
        pkt = W.parse_packet(buf)
    except WireError:
        return None, False, False
    W.mptcp_options(buf, pkt)
    W.parse_options(buf, pkt.ip_hlen + 20, pkt.payload_off)
    W.options_of(buf, pkt)
    return pkt, tcp_ok(buf, pkt), ip_ok(buf, pkt)


def check_actions(actions, tcp_good: bool, ip_good: bool, husks: int = 0) -> None:
    """`husks`: how many join-SYN husks the core counted for this packet (JoinSynHusk): a
    Rewrite that is one (a bare RST, no option, no payload) has a wrong TCP checksum on
    purpose (multipath._husk); anything else must have a right one."""
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], (type(ACCEPT), Rewrite, Drop)):
        raise Failure(f"no verdict first: {actions!r}")
    for k, a in enumerate(actions):
        if a is ACCEPT or isinstance(a, Drop):
            if k:
                raise Failure(f"a verdict after the first action: {actions!r}")
            continue
        if not isinstance(a, (Rewrite, Inject)) or (isinstance(a, Inject) and k == 0):
            raise Failure(f"unexpected action {a!r} at {k}")
        out = a.data
        try:
            pkt = W.parse_packet(out)
        except WireError as exc:
            raise Failure(f"{type(a).__name__} does not parse ({exc}): {out.hex()}") from None
        inject = isinstance(a, Inject)
        husk = (not inject and husks == 1 and pkt.flags == 0x04 and pkt.doff == 20
                and not pkt.payload_len)
        if husk and tcp_ok(out, pkt):
            raise Failure(f"a join SYN's husk with a right TCP checksum: {out.hex()}")
        if (tcp_good or inject) and not husk and not tcp_ok(out, pkt):
            raise Failure(f"{type(a).__name__} with a wrong TCP checksum (input's was right): {out.hex()}")
        if (ip_good or inject) and not ip_ok(out, pkt):
            raise Failure(f"{type(a).__name__} with a wrong IPv4 header checksum: {out.hex()}")


# -- the loop ----------------------------------------------------------------------------------


def key_source(seed: int):
    rng = random.Random(seed)
    return lambda: rng.getrandbits(64) or 1


class TwinCheck:
    """Every `every`-th round also goes through a pure and a compiled converter of their own
    (same config, same key sequence): their actions and counters must stay equal. The
    compiled core alone cannot show where it departs from the spec (a C shift by a negative
    count does not raise); tests/unit/test_core_twin_equal.py does this with fewer packets."""

    def __init__(self, every: int, max_flows: int, seed: int) -> None:
        self.every = every
        self.pure = PURE.Converter(Config(max_flows=max_flows, checksum=True))
        self.twin = CORE.Converter(Config(max_flows=max_flows, checksum=True))
        self.keys = (key_source(seed ^ 0x7477696E), key_source(seed ^ 0x7477696E))
        self.history: list[str] = []
        self.packets = 0

    def feed(self, buf: bytes, direction, now: float) -> None:
        old = PURE.new_key, CORE.new_key
        PURE.new_key, CORE.new_key = self.keys
        try:
            a, b = self.pure.handle(buf, direction, now), self.twin.handle(buf, direction, now)
        finally:
            PURE.new_key, CORE.new_key = old
        self.packets += 1
        self.history.append(f"{direction.name} now={now!r} {buf.hex()}")
        va, vb = [view(x) for x in a], [view(x) for x in b]
        ca, cb = self.pure.counters, self.twin.counters
        if va != vb or ca != cb or len(self.pure.flows) != len(self.twin.flows):
            diff = {k.name: (ca[k], cb[k]) for k in ca if ca[k] != cb.get(k)}
            raise Failure("compiled core differs from the spec (pure, twin):\n"
                          f"  actions {va!r}\n          {vb!r}\n  counters {diff}\n"
                          f"  len(flows) {len(self.pure.flows)} {len(self.twin.flows)}\n"
                          "  this round so far:\n    " + "\n    ".join(self.history))

    def tick(self, now: float) -> None:
        if [view(x) for x in self.pure.tick(now)] != [view(x) for x in self.twin.tick(now)] or \
                self.pure.counters != self.twin.counters:
            raise Failure(f"compiled core differs from the spec after tick({now})")


def view(action):
    return (type(action).__name__, getattr(action, "data", None) or getattr(action, "reason", None))


def run(packets: int, seed: int, max_flows: int, quiet: bool = False, twin_every: int = 25) -> tuple[int, float]:
    rng = random.Random(seed)
    CORE.new_key = key_source(seed ^ 0x6B6579)  # deterministic keys for the run
    if CORE.parse_packet is not W.parse_packet:  # MIDDLEBOX_PURE_PYTHON=1: still the twin's wire
        for name in TWINNED:
            if hasattr(CORE, name):
                setattr(CORE, name, getattr(W, name))
    seeds = capture_seeds() + harness_seeds()
    options_pool = [o for conv in seeds for _, buf in conv if (o := option_area(buf))] or [b""]
    config = Config(max_flows=max_flows, checksum=False)
    convs = [CORE.Converter(config), CORE.Converter(Config(max_flows=max_flows, checksum=True, version=0))]
    twin = TwinCheck(twin_every, max_flows, seed) if twin_every else None
    now = 1000.0
    done = mutated = 0
    rounds = 0
    t0 = time.perf_counter()
    while mutated < packets:
        rounds += 1
        conv = convs[rounds % 2]
        seq = seeds[rng.randrange(len(seeds))]
        port = rng.randrange(1024, 65536)
        p_mut = rng.choice((0.1, 0.3, 0.7, 1.0, 1.0))  # low: the conversation gets further
        check = twin if twin is not None and rounds % twin.every == 0 else None
        if check is not None:
            check.history = []
        for direction, buf in seq:
            if mutated >= packets:
                break
            buf = with_port(buf, direction, port)
            if rng.random() < p_mut:
                buf, direction = mutate(rng, buf, direction, options_pool)
                mutated += 1
            if rng.random() < 0.02:  # duplicate / reorder-ish: an old seed packet in between
                other_dir, other = seq[rng.randrange(len(seq))]
                feed(conv, with_port(other, other_dir, port), other_dir, now, max_flows)
                done += 1
            now += 0.0005
            feed(conv, buf, direction, now, max_flows)
            done += 1
            if check is not None:
                check.feed(buf, direction, now)
        if rounds % 1000 == 0:  # ~500 new flows per converter in between: the table evicts
            now += rng.choice((0.5, 5.0, 15.0, 70.0, 400.0))
            for c in convs:
                check_tick(c, now)
            if twin is not None:
                twin.tick(now)
    elapsed = time.perf_counter() - t0
    for c in convs:
        longest = max(v for k, v in vars_of(c.config).items() if k.endswith("_timeout"))
        check_tick(c, now + longest + 1.0)
        if c.flows:
            raise Failure(f"{len(c.flows)} flows left after every timeout")
    if not quiet:
        summary(convs, done, mutated, elapsed, seed, len(seeds))
        if twin is not None:
            print(f"  twin check: {twin.packets} of them also through the pure spec, same results")
    return done, elapsed


def vars_of(config) -> dict:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def feed(conv, buf: bytes, direction, now: float, max_flows: int) -> None:
    try:
        _, tcp_good, ip_good = wire_parse(buf)
        bugs = conv.counters[Counter.CoreBug]
        husks = conv.counters[Counter.JoinSynHusk]
        actions = conv.handle(buf, direction, now)
        husks = conv.counters[Counter.JoinSynHusk] - husks
    except Exception as exc:
        raise Failure(f"{type(exc).__name__}: {exc} on {direction.name} {buf.hex()}") from exc
    try:
        if conv.counters[Counter.CoreBug] != bugs:
            raise Failure("CoreBug counted (the converter caught an exception; logged above)")
        if len(conv.flows) > max_flows:
            raise Failure(f"{len(conv.flows)} flows > max_flows {max_flows}")
        check_actions(actions, tcp_good, ip_good, husks)
    except Failure as exc:
        raise Failure(f"{exc}\n  input {direction.name} {buf.hex()}") from None


def check_tick(conv, now: float) -> None:
    actions = conv.tick(now)
    for a in actions:
        if not isinstance(a, Inject):
            raise Failure(f"tick returned {a!r}")
        check_actions([ACCEPT, a], True, True)


def summary(convs, done: int, mutated: int, elapsed: float, seed: int, nseeds: int) -> None:
    total = {}
    for c in convs:
        for k, v in c.counters.items():
            total[k] = total.get(k, 0) + v
    busy = ", ".join(f"{k.name}={v}" for k, v in sorted(total.items(), key=lambda kv: -kv[1]) if v)
    print(f"fuzz_volume: {done} packets ({mutated} mutated) in {elapsed:.1f} s = {done / elapsed:,.0f} "
          f"packets/s (compiled core + wire, seed {seed}, {nseeds} seed conversations)")
    print(f"  counters: {busy}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=int(os.environ.get("FUZZ_PACKETS", DEFAULT_PACKETS)))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    ap.add_argument("--max-flows", type=int, default=256)
    ap.add_argument("--twin-every", type=int, default=25,
                    help="every N-th round also through the pure spec, compared (0: never)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        run(args.packets, args.seed, args.max_flows, twin_every=args.twin_every)
    except Failure as exc:
        print(f"fuzz_volume: FAILED (seed {args.seed}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
