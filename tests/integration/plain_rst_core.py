"""The core with the old handling of a guest RST (passed on as a plain RST, no MP_FASTCLOSE),
for test_outbound_abort.py to show what the kernel does with it (`--converter
plain_rst_core:Converter`). Everything else is the reference core, including what happens to
guest data that its own RST overtook (two CPUs' backlogs between the guest and the queue): it
is dropped, as the reference core drops it after its MP_FASTCLOSE. Passed on, it would reach
the server as payload without a DSS mapping, the server would fall back (DssFallback, traced
as MAPPING_NODSS in subflow_check_data_avail) and then take the plain RST as a TCP reset:
what the test must show would be hidden by a race (1 run in 8 here, twice in CI)."""

from middlebox.core import ACCEPT, REFERENCE, Config, Counter, Direction, Drop  # noqa: F401


class Converter(REFERENCE):
    def _h_rst_out(self, flow, pkt, data, ctx):
        self.counters[Counter.RstTX] += 1
        return [ACCEPT]

    def _h_closed_data(self, flow, pkt, data, ctx):
        if flow.remote_key is not None:  # the MPTCP connection exists: no bytes without a mapping
            self.counters[Counter.DataAfterRstDropped] += 1
            return [Drop("guest data after its own reset")]
        return [ACCEPT]
