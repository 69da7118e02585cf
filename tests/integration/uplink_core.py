"""The reference core plus the multipath hooks the shell calls where a core has them, for
test_uplinks.py (`--converter uplink_core:Converter`): `uplink_event(name, up, now)` records the
event and answers with one Inject (a UDP datagram from uplink 1's address to $UPLINK_CORE_DST
port $UPLINK_CORE_PORT saying "<name> up|down"), `next_deadline()` asks for a tick every 50 ms,
every tick is recorded, and a packet handed in as Direction.LOCAL is recorded and dropped.
Records go to the file $UPLINK_CORE_LOG, one line each."""

import os
import socket
import struct

from middlebox.core import ACCEPT, REFERENCE, Config, Counter, Direction, Drop, Inject  # noqa: F401

DEADLINE_EVERY = 0.05
LOCAL = getattr(Direction, "LOCAL", None)


class Converter(REFERENCE):
    def __init__(self, config):
        super().__init__(config)
        self._log = open(os.environ["UPLINK_CORE_LOG"], "a", buffering=1)
        self._dst = os.environ.get("UPLINK_CORE_DST", "")
        self._port = int(os.environ.get("UPLINK_CORE_PORT", "9999"))
        self._uplinks = config.uplinks
        self._log.write("uplinks " + " ".join(f"{u.id}:{u.name}:{u.addr4}:{u.addr6}:{int(u.up)}"
                                              for u in config.uplinks) + "\n")
        self._next = None

    def handle(self, data, direction, now):
        if LOCAL is not None and direction == LOCAL:
            self._log.write(f"local {len(data)}\n")
            return [Drop("uplink_core: LOCAL")]
        return super().handle(data, direction, now)

    def next_deadline(self):
        return self._next

    def tick(self, now):
        self._log.write(f"tick {now:.3f}\n")
        self._next = now + DEADLINE_EVERY
        return super().tick(now)

    def uplink_event(self, name, up, now):
        self._log.write(f"event {name} {'up' if up else 'down'}\n")
        if not self._dst or not self._uplinks[0].addr4:
            return []
        payload = f"{name} {'up' if up else 'down'}".encode()
        udp = struct.pack("!HHHH", 9998, self._port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(self._uplinks[0].addr4), socket.inet_aton(self._dst))
        return [Inject(ip + udp)]
