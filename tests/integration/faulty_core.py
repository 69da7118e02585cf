"""A deliberately broken converter for the daemon's robustness test (`--converter
faulty_core:Converter`): it raises, returns nothing, returns non-verdicts, fails in tick and
in its counters. The daemon must accept every packet unchanged and stay up."""

import enum


class Direction(enum.Enum):
    OUT = 1
    IN = 2


class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Accept:
    pass


class Inject:
    def __init__(self, data):
        self.data = data


class Converter:
    def __init__(self, config):
        self.n = 0
        self.flows = {}

    def handle(self, data, direction, now):
        self.n += 1
        k = self.n % 6
        if k == 0:
            raise ValueError("faulty core: ValueError")
        if k == 1:
            return []  # no verdict at all: IndexError in the shell
        if k == 2:
            return [object()]  # not a verdict
        if k == 3:
            return [Accept(), Inject(b"\x45garbage")]  # an inject that cannot be sent
        if k == 4:
            return None  # TypeError
        return [Accept()]

    def tick(self, now):
        raise RuntimeError("faulty core: tick")

    @property
    def counters(self):
        raise RuntimeError("faulty core: counters")
