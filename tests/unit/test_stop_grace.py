"""Daemon.finish_closing (--stop-grace): the wait for closing connections at a stop, and the
second signal that cuts it short."""

from __future__ import annotations

import argparse
import signal
import time

from middlebox.io import daemon


class _Conv:
    stopping = False

    def closing(self, now):
        return 1  # a connection that stays closing (its guest gone)


def _daemon(*argv):
    parser = argparse.ArgumentParser()
    daemon.add_arguments(parser)
    d = daemon.Daemon(parser.parse_args(list(argv)))
    d.conv = _Conv()
    d.ops.stopping = lambda: None
    return d


def test_a_second_signal_before_the_wait_began_still_cuts_it_short():
    """Two SIGINTs (Ctrl-C twice) or SIGTERMs within one loop round both arrive before
    finish_closing starts: the second must still end the wait, as the help says."""
    d = _daemon("--stop-grace", "1")
    d._signal(signal.SIGTERM, None)
    d._signal(signal.SIGTERM, None)
    rounds = []
    d.round = lambda *a: (rounds.append(1), time.sleep(0.01))
    t0 = time.monotonic()
    d.finish_closing(0, [0], None, None)
    assert d.conv.stopping
    assert rounds == [] and time.monotonic() - t0 < 0.5


def test_one_signal_waits_and_a_second_during_the_wait_ends_it():
    d = _daemon("--stop-grace", "5")
    d._signal(signal.SIGTERM, None)
    rounds = []

    def round_(*a):
        rounds.append(1)
        if len(rounds) == 3:
            d._signal(signal.SIGINT, None)

    d.round = round_
    d.finish_closing(0, [0], None, None)
    assert len(rounds) == 3
