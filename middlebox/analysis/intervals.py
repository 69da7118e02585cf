"""Half-open integer intervals and a sparse byte store, for reassembly in `inspect`."""

from __future__ import annotations

import bisect


class IntervalSet:
    """A set of integers kept as sorted, disjoint, non-adjacent half-open intervals."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)  # first interval that ends at/after start
        j = bisect.bisect_right(self._starts, end)  # intervals starting after end are kept
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def contains(self, start: int, end: int) -> bool:
        """True when every integer of [start, end) is in the set (empty range: True)."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The sub-intervals of [start, end) that are not in the set."""
        out = []
        pos = start
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while pos < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= pos:
                i += 1
                continue
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def __iter__(self):
        return iter(zip(self._starts, self._ends))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)


class ByteStore:
    """Bytes at integer offsets (a stream with holes), with a record of which are known.

    `put` returns the offsets where the new bytes disagree with bytes already stored from a
    *trusted* copy. Bytes from an untrusted copy (bad TCP checksum) fill holes only, and are
    replaced by any trusted copy later.
    """

    MAX_OFFSET = 1 << 31  # larger offsets are not stored (reported as not captured)

    __slots__ = ("data", "known", "trusted")

    def __init__(self) -> None:
        self.data = bytearray()
        self.known = IntervalSet()
        self.trusted = IntervalSet()

    def put(self, offset: int, payload: bytes, trusted: bool = True) -> int:
        """Store `payload` at `offset`; return how many already trusted bytes it contradicts."""
        end = offset + len(payload)
        if offset < 0 or end > self.MAX_OFFSET or not payload:
            return 0
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        conflicts = 0
        if trusted:
            for s, e in self._present(self.trusted, offset, end):
                old = self.data[s:e]
                new = payload[s - offset : e - offset]
                if old != new:
                    conflicts += sum(1 for a, b in zip(old, new) if a != b)
            # write what is not trusted yet (untrusted bytes get replaced)
            for s, e in self.trusted.missing(offset, end):
                self.data[s:e] = payload[s - offset : e - offset]
            self.trusted.add(offset, end)
        else:
            for s, e in self.known.missing(offset, end):
                self.data[s:e] = payload[s - offset : e - offset]
        self.known.add(offset, end)
        return conflicts

    @staticmethod
    def _present(iv: IntervalSet, start: int, end: int) -> list[tuple[int, int]]:
        present, pos = [], start
        for s, e in iv.missing(start, end):
            if s > pos:
                present.append((pos, s))
            pos = e
        if pos < end:
            present.append((pos, end))
        return present

    def has(self, start: int, end: int) -> bool:
        return self.known.contains(start, end)

    def get(self, start: int, end: int) -> bytes:
        return bytes(self.data[start:end])
