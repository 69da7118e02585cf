"""Connections converted by a daemon that died without resetting them (SIGKILL, a crash, the
OOM killer): their orphans.

A stopping daemon resets every connection the server treats as MPTCP (Converter.stop). One
killed outright cannot, and its successor does not know those connections: passed as they
are, the server's segments would reach the guest at their subflow seq, and the server's
MPTCP-level resends as new bytes (measured: a single-path download, the daemon killed at
12 MB and restarted 1 s later, delivered a wrong byte at 12.8 MB and ran on for two minutes).
So the rules queue a peer's segments towards a guest that carry an MPTCP option without
`bypass` (held while no daemon is bound), and the core never passes one of a connection it
does not know: it drops it and asks the guest with an ACK far outside its window (Linux
answers that with a duplicate ACK at its snd_nxt/rcv_nxt: RFC 793 p.69, tcp_validate_incoming,
at most one per tcp_invalid_ratelimit, 500 ms). The guest's next segment decides:

* it carries MPTCP options: the guest speaks MPTCP itself, and the connection is its own; the
  converter remembers it as GUEST_MPTCP and passes it (the peer resends what was held);
* it is plain TCP whose numbers fit the held segment's (the guest's seq within GATE above the
  peer's ack, or its ack within GATE of the peer's seq: one direction of a converted
  connection keeps the guest's numbering unless the middlebox moved it): a converted
  connection whose state died; the guest gets a RST at its rcv_nxt (its own ack), the peer
  one at its rcv_nxt (its segment's ack). Visible, never wrong bytes;
* plain TCP whose numbers do not fit: a segment forged with an MPTCP option (anyone who knows
  a 4-tuple can send one) or a connection whose numbering both ways drifted (a multipath one
  moving much data both ways): nothing is reset, the held segments stay dropped, and after
  TRIES such answers (`strikes`, counted for GIVE_UP_FOR from the first, apart from the
  entries so that neither their TTL nor other 4-tuples pushing them out start the count
  afresh) the guest is asked no more. A blind attacker who knows the 4-tuple must land a
  seq or an ack within GATE of the right one, at most TRIES times per GIVE_UP_FOR, to reset
  a plain connection this way; while `cap` connections carry strikes at once none without
  one is reset (orphans stall, held: _crowded). The peer's plain segments always pass.

A daemon that records its converting connections (the shell's state file, --state-dir: the
4-tuple and the peer's key of each, written every second) tells its successor which orphans
are really its own: `learn` takes them, and a plain answer of such a guest resets both ends
whatever the numbers (`OrphanKnown`: the numbers test fails once multipath moved data both
ways), the peer with an ACK carrying MP_FASTCLOSE (its key: its whole MPTCP connection
closes, not only the subflow) before the RST. Entries are forgotten once used or after
KNOWN_TTL (the peer has given up by then). The records of extra subflows (`join`) serve when
subflow 1's path is down: a peer's segment on such a subflow, at a join port no subflow of
the successor owns, gets MP_FASTCLOSE and a RST there, and the guest is asked as if
subflow 1 had carried it (`OrphanJoin`).

Every table is bounded (`cap`, oldest first out; the strikes: none pushed out) and entries
expire after TTL without a held segment. A guest that spoke MPTCP but whose GUEST_MPTCP flow
the full flow table could not take is remembered in `natives`: its peer's segments pass.
Pure Python: it runs only for packets of connections the table does not know.
"""

from __future__ import annotations

from collections import OrderedDict

from middlebox.core.counters import Counter
from middlebox.wire.packet import ACK, RST

M32 = 0xFFFFFFFF
GATE = 1 << 18  # bytes: how far the guest's numbers may lie from the held segment's
PROBE_EVERY = 1.0  # s between two questions to one guest (Linux answers one per 500 ms)
TRIES = 4  # answers that do not fit before the guest is asked no more
GIVE_UP_FOR = 600.0  # s
TTL = 120.0  # s without a held segment before an entry is forgotten
MAX_ORPHANS = 1024
KNOWN_TTL = 600.0  # s: how long the predecessor's record of a connection is believed

# Orphans.peer
LET, HOLD, PROBE = 0, 1, 2
# Orphans.guest
PASS, SPEAKS_MPTCP, RESET = 0, 1, 2


class _Entry:
    __slots__ = ("seq", "ack", "last", "probed")

    def __init__(self) -> None:
        self.seq = self.ack = 0
        self.last = self.probed = -1e18


class Orphans:
    """Connections of unknown 4-tuples whose peer sent an MPTCP option towards a plain-looking
    guest, by the converter's flow key (guest addr, guest port, peer addr, peer port)."""

    def __init__(self, counters: dict, cap: int = MAX_ORPHANS) -> None:
        self.entries: OrderedDict = OrderedDict()
        # key -> [misfits, time of the first]: apart from `entries`, so that neither their
        # TTL nor segments of other 4-tuples pushing them out start the count afresh (only a
        # guest's non-RST answer, from a live socket, adds one; none is pushed out: _crowded)
        self.strikes: OrderedDict = OrderedDict()
        # key -> last: guests that spoke MPTCP whose GUEST_MPTCP flow the table could not take
        self.natives: OrderedDict = OrderedDict()
        # key -> (the peer's key or None, when learnt): connections the predecessor recorded
        self.known: dict = {}
        self.counters = counters
        self.cap = cap

    def learn(self, records: dict, now: float, cap: int, stamps: dict | None = None) -> int:
        """Take the killed predecessor's records (a connection's key -> the peer's key or
        None; an extra subflow's (local, lport, remote, rport) -> (its connection's key, the
        peer's key or None)), at most `cap` (the flow table's size). `stamps`: key -> when
        the record was last known alive (the state file's, same clock as `now`; else now):
        each is believed KNOWN_TTL from there. Returns how many were taken."""
        known = self.known
        for key, peer_key in records.items():
            if len(known) >= cap:
                break
            t = now if stamps is None else min(stamps.get(key, now), now)
            if now - t <= KNOWN_TTL:
                known[key] = (peer_key, t)
        return len(known)

    def forget(self, key: tuple) -> None:
        """A new connection on `key` (the guest's SYN or SYN/ACK): the predecessor's record
        named an older one; believed on, it would let a segment forged with that 4-tuple
        reset the new connection whatever its numbers."""
        self.known.pop(key, None)

    def recorded(self, now: float) -> dict:
        """The predecessor's records still believed (key -> peer key): a successor of ours
        gets them too, should this daemon be killed before they were used."""
        known = self.known
        for key in [k for k, (_, t) in known.items() if now - t > KNOWN_TTL]:
            del known[key]
        return {k: v[0] for k, v in known.items()}

    def join(self, jkey: tuple, now: float):
        """A segment at one of our join ports that no subflow owns: (the guest's key, the
        peer's key or None) when the predecessor recorded that subflow (its record is used
        up), else None."""
        rec = self.known.get(jkey)
        if rec is None or type(rec[0]) is not tuple:
            return None
        del self.known[jkey]
        if now - rec[1] > KNOWN_TTL:
            return None
        self.counters[Counter.OrphanJoin] += 1
        return rec[0]

    def _given_up(self, key: tuple, now: float) -> bool:
        s = self.strikes.get(key)
        if s is None:
            return False
        if now - s[1] >= GIVE_UP_FOR:
            del self.strikes[key]
            return False
        return s[0] >= TRIES

    def _crowded(self, now: float) -> bool:
        """The strikes are full of live counts (in insertion order = their first misfit's):
        someone is guessing on `cap` connections at once. No count is pushed out (that would
        start a guessed connection's afresh) and no fit resets anything until they expire:
        orphans then stall, held, instead of being reset."""
        strikes = self.strikes
        while strikes:
            k, s = next(iter(strikes.items()))
            if now - s[1] < GIVE_UP_FOR:
                break
            del strikes[k]
        return len(strikes) >= self.cap

    def native(self, key: tuple, now: float) -> None:
        """The guest spoke MPTCP on this connection but no GUEST_MPTCP flow could be made (a
        full table): its peer's segments pass (LET) while it keeps talking."""
        natives = self.natives
        if key not in natives and len(natives) >= self.cap:
            natives.popitem(last=False)
        natives[key] = now
        natives.move_to_end(key)

    def peer(self, key: tuple, seq: int, ack: int, now: float) -> int:
        """A peer's segment carrying an MPTCP option (not a SYN or RST) towards a guest, of a
        connection the table does not know: always dropped. PROBE when the guest is to be
        asked now (the converter sends the question), HOLD otherwise."""
        last = self.natives.get(key)
        if last is not None:
            if now - last <= TTL:
                self.natives[key] = now
                return LET
            del self.natives[key]
        entries = self.entries
        e = entries.get(key)
        if e is None:  # (a stale one is as good as new: nothing in it outlives a held segment)
            if len(entries) >= self.cap:
                entries.popitem(last=False)
            e = entries[key] = _Entry()
        else:
            entries.move_to_end(key)
        e.seq, e.ack, e.last = seq, ack, now
        self.counters[Counter.OrphanHeld] += 1
        if self._given_up(key, now) or now - e.probed < PROBE_EVERY:
            return HOLD
        e.probed = now
        self.counters[Counter.OrphanProbe] += 1
        return PROBE

    def guest(self, key: tuple, flags: int, seq: int, ack: int, speaks_mptcp: bool, now: float):
        """A guest's segment (not a SYN) of a connection the table does not know. PASS (not
        an orphan, or undecided: it passes as it is), SPEAKS_MPTCP (it carries MPTCP options,
        asked or not: the converter takes the connection as the guest's own) or (RESET,
        peer_rcv_nxt, the held seq, the peer's key or None): the guest's segment is dropped,
        both ends reset (with the key, MP_FASTCLOSE first)."""
        if flags & RST:  # (the guest ends it: a record of it names nothing from now on)
            self.natives.pop(key, None)
            self.known.pop(key, None)
        e = self.entries.get(key)
        if speaks_mptcp and not flags & RST:
            if e is not None:
                del self.entries[key]
                self.counters[Counter.OrphanGuestMPTCP] += 1
            return SPEAKS_MPTCP
        if e is None:
            return PASS
        if flags & RST or now - e.last > TTL:  # (its RST ends it: passed on)
            del self.entries[key]
            return PASS
        if not flags & ACK:
            return PASS
        rec = self.known.get(key)
        if rec is not None and now - rec[1] <= KNOWN_TTL:  # ours: the numbers need not fit
            del self.entries[key], self.known[key]
            self.strikes.pop(key, None)
            self.counters[Counter.OrphanReset] += 1
            self.counters[Counter.OrphanKnown] += 1
            return RESET, e.ack, e.seq, rec[0]
        if self._given_up(key, now):
            return PASS
        fits = ((seq - e.ack) & M32) < GATE or ((ack - e.seq + GATE) & M32) < 2 * GATE
        strikes = self.strikes
        s = strikes.get(key)
        if fits and (s is not None or not self._crowded(now)):
            del self.entries[key]
            strikes.pop(key, None)
            self.counters[Counter.OrphanReset] += 1
            return RESET, e.ack, e.seq, None
        self.counters[Counter.OrphanMisfit] += 1
        if s is None:
            if self._crowded(now):
                return PASS
            s = strikes[key] = [0, now]
        s[0] += 1
        return PASS


def question(seq: int, ack: int) -> tuple:
    """(seq, ack) of the question to the guest about a held segment at (seq, ack): half the
    sequence space away, so outside any window when the numbering is the guest's."""
    return (seq + 0x80000000) & M32, (ack + 0x80000000) & M32
