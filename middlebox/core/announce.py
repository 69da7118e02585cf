"""Inbound (issue 9): the hypervisor's uplink addresses announced to MPTCP peers (ADD_ADDR,
RFC 8684 §3.4.1), so that a client with a single interface still gets a subflow over every
uplink.

Once an inbound connection is established and the join policy says so (the thresholds of
outbound joins, `multipath.wants_join`), each live uplink with an address of the
connection's family, other than the uplink subflow 1 arrived by, is announced: address id
the uplink's id, its address, and the top port of the join range. That port is what makes
the joins reach us: the ruleset queues TCP to an uplink address in the join range (input
hook, Direction.LOCAL), where `multipath.passive_join` answers them as it answers joins at
the guest's address; the range is reserved from the local stack, so nothing else owns it.

Each ADD_ADDR rides alone on a pure ACK of subflow 1 (at the guest's highest seq, without
timestamps: the lessons of the echo in Converter._peer_option; alone because an IPv6 ADD_ADDR
with a port and its HMAC takes 30 of the 40 option bytes, as Linux drops the DSS of such an
ACK too). It is resent after 1, 2 and 4 s until the peer's echo arrives, then given up
(counted). An uplink that goes down is withdrawn with REMOVE_ADDR (its subflows die as in
the outbound role), and announced again when it comes back.

Per flow: one `Announced` per uplink (at most the configured uplinks, 255), no payload.
"""

from __future__ import annotations

from middlebox.core.counters import Counter
from middlebox.core.events import Inject
from middlebox.core.table import State
from middlebox.wire import AddAddr, RemoveAddr, add_addr_hmac, build_options

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
ACK = 0x10
ANNOUNCE_RTO = 1.0  # first resend of an unechoed ADD_ADDR; doubled each time ...
ANNOUNCE_TRIES = 4  # ... sent this many times in all, then given up
ANNOUNCE_GAP = 0.2  # at most ANNOUNCE_BURST option-only ACKs per flow within this many seconds:
ANNOUNCE_BURST = 2  # RFC 8684 §3.3.6, no more than two duplicate ACKs in a row for signalling


class Announced:
    """One uplink address offered to the peer of an inbound connection."""

    __slots__ = ("addr_id", "addr", "port", "uplink", "tries", "due", "echoed", "sent_at")

    def __init__(self, addr_id: int, addr: bytes, port: int, uplink, now: float) -> None:
        self.addr_id = addr_id
        self.addr = addr
        self.port = port
        self.uplink = uplink
        self.tries = 0
        self.due = now
        self.echoed = False
        self.sent_at = -1.0  # when it was last sent (-1: never)

    def pending(self) -> bool:
        """Still to be (re)sent: not echoed, tries left."""
        return not self.echoed and self.tries < ANNOUNCE_TRIES

    def __repr__(self) -> str:
        return f"<Announced id={self.addr_id} port={self.port} tries={self.tries} echoed={self.echoed}>"


def _addr(up, version: int) -> bytes | None:
    from middlebox.core.multipath import _addr as addr_of
    return addr_of(up.addr4 if version == 4 else up.addr6, version)


def begin(conv, key: tuple, flow, version: int, now: float) -> list:
    """The connection is established and the join policy says so: announce every live uplink
    address of its family but subflow 1's own (joins to it would take the same path).
    v0 is left out (its ADD_ADDR has no HMAC: an off-path forger's could not be told apart,
    and Linux ignores v0 anyway). Returns the first ADD_ADDRs."""
    from middlebox.core.multipath import route_uplink
    flow.announced = []
    if not _eligible(conv, flow):
        return []
    if not flow.sf1_uplink and conv.routes:
        flow.sf1_uplink = route_uplink(conv.routes, version, key[2])
    for up in conv.config.uplinks:
        _offer(conv, flow, up, version, now)
    if not flow.announced:
        return []
    conv.announcing[key] = flow
    return _send_due(conv, key, flow, now)


def _eligible(conv, flow) -> bool:
    """Announcements at all: v1 only (see begin), and joins possible (max_subflows 1: every
    join would be refused, passive_join)."""
    return flow.version == 1 and bool(conv.config.uplinks) and conv.config.max_subflows != 1


def _offer(conv, flow, up, version: int, now: float) -> None:
    if up.id == flow.sf1_uplink or not conv.uplink_up.get(up.name, up.up):
        return
    addr = _addr(up, version)
    if addr is None:
        return
    flow.announced = [a for a in flow.announced if a.addr_id != up.id]
    flow.announced.append(Announced(up.id, addr, conv.config.join_ports[1], up, now))
    mp = flow.mp
    if mp is not None and up.id in mp.removed:
        mp.removed.remove(up.id)  # announced again: a later REMOVE_ADDR of it is due again


def target(flow, addr: bytes, port: int):
    """The announcement a peer's join SYN at (`addr`, `port`) answers, or None."""
    for a in flow.announced or ():
        if a.addr == addr and a.port == port and a.tries:
            return a
    return None


def echoed(conv, flow, o) -> None:
    """The peer echoed an ADD_ADDR: ours (same id, address and port) is not sent again."""
    for a in flow.announced or ():
        if a.addr_id == o.addr_id and a.addr == bytes(o.addr) and (o.port or 0) == a.port:
            if not a.echoed:
                a.echoed = True
                conv.counters[Counter.AddAddrEchoRX] += 1
            return
    conv.counters[Counter.AddAddrIgnored] += 1


def _version(key: tuple) -> int:
    return 4 if len(key[0]) == 4 else 6


def _sf1_ack(flow, key: tuple, version: int, opts: bytes) -> bytes | None:
    """A pure ACK of ours on subflow 1, from the guest's address: at the guest's highest seq
    sent, acking what the guest acked, the guest's window, `opts` only. Once multipath with
    subflow 1 gone (the peer reset it), on the best live subflow instead, at its own numbers;
    None when no subflow is left."""
    from middlebox.core.multipath import ALIVE, _best_live, segment
    mp = flow.mp
    sf = flow.sf
    if mp is not None and mp.paths[0].state not in ALIVE:
        k = _best_live(mp)
        if k <= 0:
            return None
        p = mp.paths[k]
        return segment(p.version, p.local, p.remote, p.lport, p.rport, (p.local_isn + p.snd_nxt) & M32,
                       (p.remote_isn + p.rcv_nxt) & M32, ACK, flow.guest_window, opts)
    nxt = flow.snd_end if mp is None else mp.paths[0].snd_nxt
    seq = (flow.guest_isn if mp is None else mp.paths[0].local_isn) + nxt
    guest, gport, peer, pport = key
    return segment(version, guest, peer, gport, pport, seq & M32, (sf.remote_isn + sf.rcv_base) & M32,
                   ACK, flow.guest_window, opts)


def _send_due(conv, key: tuple, flow, now: float) -> list:
    actions = []
    version = _version(key)
    budget = ANNOUNCE_BURST - sum(1 for a in flow.announced if a.sent_at >= 0 and now - a.sent_at < ANNOUNCE_GAP)
    for a in flow.announced:
        if not a.pending() or now < a.due:
            continue
        if budget <= 0:  # a third option-only ACK in a row: a little later
            a.due = now + ANNOUNCE_GAP
            continue
        budget -= 1
        mac = add_addr_hmac(flow.local_key, flow.remote_key, a.addr_id, a.addr, a.port)
        opt = build_options(b"", (AddAddr(False, a.addr_id, a.addr, a.port, mac),))
        buf = _sf1_ack(flow, key, version, opt)
        if buf is not None:
            actions.append(Inject(buf))
        a.sent_at = now
        a.due = now + ANNOUNCE_RTO * (1 << a.tries)
        a.tries += 1
        conv.counters[Counter.AddAddrTX] += 1
        if a.tries >= ANNOUNCE_TRIES and not a.echoed:
            conv.counters[Counter.AddAddrUnechoed] += 1  # (its joins are still answered)
    return actions


def tick(conv, now: float) -> list:
    """Resend what is due; forget flows that are gone, closed, or have nothing left to send."""
    actions = []
    for key, flow in list(conv.announcing.items()):
        if (conv.flows.get(key) is not flow or flow.state is not State.ESTABLISHED
                or not any(a.pending() for a in flow.announced)):
            del conv.announcing[key]
            continue
        actions.extend(_send_due(conv, key, flow, now))
    return actions


def next_deadline(conv) -> float | None:
    best = None
    for flow in conv.announcing.values():
        for a in flow.announced or ():
            if a.pending() and (best is None or a.due < best):
                best = a.due
    return best


def uplink_event(conv, name: str, up: bool, now: float) -> list:
    """An uplink went down: REMOVE_ADDR of its id to every peer it was announced to (not
    multipath yet: on subflow 1 here; multipath flows: `multipath._j_dead` says it with its
    subflows, or here when none used it). Up again: announced again."""
    uplink = next((u for u in conv.config.uplinks if u.name == name), None)
    if uplink is None:
        return []
    actions = []
    for key, flow in list(conv.flows.items()):
        if (flow.announced is None or not flow.inbound or flow.state is not State.ESTABLISHED
                or not _eligible(conv, flow)):
            continue
        version = _version(key)
        had = next((a for a in flow.announced if a.addr_id == uplink.id), None)
        if not up:
            if had is None:
                continue
            flow.announced.remove(had)
            if not had.tries:
                continue  # never sent: nothing to withdraw
            mp = flow.mp
            if mp is not None and uplink.id in mp.removed:
                continue  # said since it was announced: by its subflows' death (multipath._j_dead)
            opt = build_options(b"", (RemoveAddr((uplink.id,)),))
            buf = _sf1_ack(flow, key, version, opt)
            if buf is not None:
                actions.append(Inject(buf))
                conv.counters[Counter.RmAddrTX] += 1
        elif had is None:
            _offer(conv, flow, uplink, version, now)
            if flow.announced and flow.announced[-1].addr_id == uplink.id:
                conv.announcing[key] = flow
                actions.extend(_send_due(conv, key, flow, now))
    return actions
