"""The core with the old handling of a guest RST (passed on as a plain RST, no MP_FASTCLOSE),
for test_outbound_abort.py to show what the kernel does with it (`--converter
plain_rst_core:Converter`). Everything else is the reference core."""

from middlebox.core import ACCEPT, REFERENCE, Config, Counter, Direction  # noqa: F401


class Converter(REFERENCE):
    def _h_rst_out(self, flow, pkt, data, ctx):
        self.counters[Counter.RstTX] += 1
        return [ACCEPT]
