"""The product's core inside a network fault at a chosen point of a transfer
(`--converter mark_core:Converter`): once a multipath flow has sent $MARK_CORE_AT bytes at the
data level, its first join's path goes silent both ways (every packet the core sends on it,
and every one that comes for it, is lost at the core's door, as on a wire that died with its
link still up), the scheduler is put in a burst on that join (so the next new bytes go
there and are lost), and $MARK_CORE_FILE is written with what each subflow had in flight. Done
here rather than with nft from the test, whose few milliseconds let the transfer run past
the point (test_multipath.py: a join dying with bytes below the guest's FIN). Everything
else is the product's core (compiled or reference, as the daemon would run)."""

import os

import middlebox.core as _core
from middlebox.core import Config, Direction, Drop, Inject  # noqa: F401 - the daemon reads these
from middlebox.wire import parse_packet


class Converter(_core.Converter):
    def __init__(self, config):
        super().__init__(config)
        self.mark_file = os.environ["MARK_CORE_FILE"]
        self.mark_at = int(os.environ["MARK_CORE_AT"])
        self.silent = None  # (address, port) of the silenced join's end

    def _gone(self, data) -> bool:
        pkt = parse_packet(data)
        return (pkt.src, pkt.sport) == self.silent or (pkt.dst, pkt.dport) == self.silent

    def handle(self, data, direction, now):
        if self.silent is not None and direction == Direction.LOCAL and self._gone(data):
            return [Drop("mark_core: the silent path")]
        actions = super().handle(data, direction, now)
        if self.silent is None and direction == Direction.OUT:
            for flow in self.flows.values():
                mp = getattr(flow, "mp", None)
                if mp is not None and mp.snd_nxt >= self.mark_at and len(mp.paths) > 1:
                    p = mp.paths[1]
                    self.silent = (p.local, p.lport)
                    # and the scheduler in a burst there: the guest's last bytes go onto the
                    # silent join (else it may have put them all on subflow 1, its bytes
                    # before the mark reaching the server: nothing to lose, a test run found)
                    mp.last_pick, mp.burst_left = 1, 1 << 30
                    with open(self.mark_file, "w") as f:
                        f.write(f"{now} data_ack {mp.data_ack} snd_nxt {mp.snd_nxt} " + " ".join(
                            f"[{q.index} {q.state.name} {q.snd_una}..{q.snd_nxt}]" for q in mp.paths) + "\n")
        return self._filter(actions)

    def tick(self, now):
        return self._filter(super().tick(now))

    def _filter(self, actions):
        if self.silent is None:
            return actions
        return [a for a in actions if not (isinstance(a, Inject) and self._gone(a.data))]
