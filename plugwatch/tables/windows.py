"""Per-plugin windows of masked logs, spans and metric points, indexed by corrected time (DESIGN §5).

Each ``tenant_id/plugin_id`` key holds its entries sorted by corrected time (raw time kept beside it)
for the report builder's ``slice``. Memory is bounded twice: a per-key cap (entries and bytes) drops
that key's oldest, a global budget drops the globally oldest across keys. A record is counted as its
JSON byte size plus ``ENTRY_OVERHEAD``.

Whatever is dropped is still in ClickHouse, so a slice says whether it is complete: per key,
``complete_from`` is the earliest corrected time since which nothing was dropped and the key was
held (store start, or the ``complete_from_ms`` of the last rebuild); while a key is being rebuilt
after a restart or rebalance, its slices are incomplete.

Slices are closed on both ends, ``[from_ms, to_ms]``: a report for an alert at T must not miss the
record stamped exactly T.
"""

from __future__ import annotations

import heapq
import sys
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

import orjson

from plugwatch.tables.skew import source_of

# Bytes counted per entry beside the record's JSON size: the WindowEntry, its two timestamp ints, a
# slot in each of the key's two lists and in its event_id set, the heap's share. Measured with
# tracemalloc on CPython 3.11 (200,000 entries over 1,000 keys): 148 B when both timestamps are ints
# the record already holds, 220 B when both are new; rounded up from the latter. Not counted: about
# 500 B per key (its lists, set and bookkeeping), and the record dict itself, which takes 3-4x its
# JSON size in memory; the budget counts JSON bytes, as the design asks.
ENTRY_OVERHEAD = 224

_FORGOTTEN_KEPT = 10_000  # revoked keys remembered so their slices say "not held"


@dataclass(slots=True)
class WindowEntry:
    corrected_ts: int
    raw_ts: int
    signal: str
    source: str
    event_id: str | None
    size: int
    # The record's JSON bytes when the caller has them (kept as bytes: a dict takes 3-4x the
    # memory), else the record itself; ``data()`` gives the dict either way.
    record: dict | bytes

    def data(self) -> dict:
        return orjson.loads(self.record) if isinstance(self.record, bytes) else self.record


# What a window holds per entry, beside its corrected time: a plain tuple
# ``(raw_ts, signal, source, event_id, size, record)``. With the record as JSON bytes every item is
# atomic, so the garbage collector stops tracking the tuple after its first collection: a window of
# a million entries adds almost nothing to each full collection (as WindowEntry objects it made
# every gen-2 pass walk them all, ~25 % of the tail's time). Slices hand out WindowEntry objects.
_Held = tuple
_RAW, _SIGNAL, _SOURCE, _EVENT_ID, _SIZE, _RECORD = range(6)


def _entry(corrected_ts: int, held: _Held) -> WindowEntry:
    return WindowEntry(corrected_ts, *held)


@dataclass(frozen=True, slots=True)
class Slice:
    entries: list[WindowEntry]  # sorted by corrected_ts, ties in arrival order
    complete: bool
    complete_from: int | None  # None while nothing is known complete (rebuilding, or not held)
    reason: str | None  # why incomplete, and what to read instead


class _KeyWindow:
    """One key's entries, sorted; ``head`` skips the entries already dropped from the front."""

    __slots__ = ("times", "entries", "head", "ids", "bytes", "held_from", "lost_until", "rebuilding")

    def __init__(self, held_from: int):
        self.times: list[int] = []
        self.entries: list[_Held | None] = []
        self.head = 0
        self.ids: set[str] = set()
        self.bytes = 0
        self.held_from = held_from
        self.lost_until: int | None = None  # everything dropped was stamped before this
        self.rebuilding = False

    def __len__(self) -> int:
        return len(self.times) - self.head

    def lose(self, corrected_ts: int) -> None:
        if self.lost_until is None or corrected_ts + 1 > self.lost_until:
            self.lost_until = corrected_ts + 1

    def pop_head(self) -> tuple[int, _Held]:
        """Drop the oldest entry; returns its corrected time and what was held."""
        corrected_ts, held = self.times[self.head], self.entries[self.head]
        assert held is not None
        self.entries[self.head] = None
        self.head += 1
        if self.head >= 64 and 2 * self.head >= len(self.times):
            # Dropping from the front of a list moves the rest; do it in bulk instead of per entry.
            del self.times[: self.head]
            del self.entries[: self.head]
            self.head = 0
        if held[_EVENT_ID] is not None:
            self.ids.discard(held[_EVENT_ID])
        self.bytes -= held[_SIZE] + ENTRY_OVERHEAD
        self.lose(corrected_ts)
        return corrected_ts, held

    @property
    def complete_from(self) -> int:
        return self.held_from if self.lost_until is None else max(self.held_from, self.lost_until)


class WindowStore:
    def __init__(
        self,
        window_ms: int = 900_000,
        per_key_max_entries: int = 20_000,
        per_key_max_bytes: int = 16 * 2**20,
        budget_bytes: int = 512 * 2**20,
        *,
        clock: Callable[[], int],
        started_ms: int | None = None,
    ):
        if min(window_ms, per_key_max_entries, per_key_max_bytes, budget_bytes) <= 0:
            raise ValueError("window_ms, per-key caps and budget_bytes must all be positive")
        self.window_ms = window_ms
        self.per_key_max_entries = per_key_max_entries
        self.per_key_max_bytes = per_key_max_bytes
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._started = clock() if started_ms is None else started_ms
        self._windows: dict[str, _KeyWindow] = {}
        # (corrected_ts, key): every non-empty key has an item at or below its oldest entry; items
        # left behind by dropped entries are stale and skipped or re-pushed when they surface.
        self._heap: list[tuple[int, str]] = []
        self._forgotten: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._entries = 0
        self._evicted = 0
        self._expired = 0

    def add(
        self,
        key: str,
        signal: str,
        record: dict,
        corrected_ts: int,
        raw_ts: int,
        size: int,
        raw_json: bytes | None = None,
        source: str | None = None,
    ) -> None:
        """Insert at its corrected time; a redelivered event_id is ignored. O(log n) plus evictions.

        ``raw_json`` (the record's JSON, ``size`` bytes) is stored instead of the dict when given;
        ``source`` saves deriving the record's source again when the caller already has it.
        """
        window = self._windows.get(key)
        if window is None:
            window = self._open(key)
        if corrected_ts < self._clock() - self.window_ms:
            window.lose(corrected_ts)  # arrived already older than the window
            self._expired += 1
            return
        event_id = record.get("event_id")
        if event_id is not None and event_id in window.ids:
            return
        cost = size + ENTRY_OVERHEAD
        if cost > self.per_key_max_bytes or cost > self.budget_bytes:
            window.lose(corrected_ts)
            self._evicted += 1
            return
        stored = record if raw_json is None else raw_json
        # Interned: a plugin has a handful of sources, held by thousands of entries.
        source = sys.intern(source if source is not None else source_of(record))
        held = (raw_ts, signal, source, event_id, size, stored)
        times = window.times
        if not times or corrected_ts >= times[-1]:
            at = len(times)
            times.append(corrected_ts)
            window.entries.append(held)
        else:
            at = bisect_right(times, corrected_ts, window.head)
            times.insert(at, corrected_ts)
            window.entries.insert(at, held)
        if event_id is not None:
            window.ids.add(event_id)
        window.bytes += cost
        self._bytes += cost
        self._entries += 1
        if at == window.head:
            heapq.heappush(self._heap, (corrected_ts, key))  # a new oldest for this key
        while len(window) > self.per_key_max_entries or window.bytes > self.per_key_max_bytes:
            self._drop_head(window)
            self._evicted += 1
        while self._bytes > self.budget_bytes:
            self._evict_oldest()
        if len(self._heap) > 2 * len(self._windows) + 1024:
            self._rebuild_heap()

    def slice(self, key: str, from_ms: int, to_ms: int, signals: Iterable[str] | None = None) -> Slice:
        """Entries with ``from_ms <= corrected_ts <= to_ms``, and whether the window holds all of them."""
        window = self._windows.get(key)
        if window is None:
            if key in self._forgotten:
                return Slice([], False, None, f"{key} is not held by this worker (partition revoked); "
                                              f"read [{from_ms}, {to_ms}] from ClickHouse")
            return self._judge(key, [], self._started, from_ms, to_ms)
        times, held = window.times, window.entries
        lo = bisect_left(times, from_ms, window.head)
        hi = bisect_right(times, to_ms, lo)
        wanted = None if signals is None else set(signals)
        entries = [
            _entry(times[i], held[i])  # type: ignore[arg-type]
            for i in range(lo, hi)
            if wanted is None or held[i][_SIGNAL] in wanted  # type: ignore[index]
        ]
        if window.rebuilding:
            return Slice(entries, False, None, f"the window of {key} is being rebuilt after a restart or "
                                               f"rebalance; read [{from_ms}, {to_ms}] from ClickHouse")
        return self._judge(key, entries, window.complete_from, from_ms, to_ms, window)

    def count(self, key: str, from_ms: int, to_ms: int) -> int:
        """How many entries of ``key`` have ``from_ms <= corrected_ts <= to_ms`` (two bisections)."""
        window = self._windows.get(key)
        if window is None:
            return 0
        lo = bisect_left(window.times, from_ms, window.head)
        return bisect_right(window.times, to_ms, lo) - lo

    def _judge(self, key: str, entries: list[WindowEntry], complete_from: int, from_ms: int, to_ms: int,
               window: _KeyWindow | None = None) -> Slice:
        if from_ms >= complete_from:
            return Slice(entries, True, complete_from, None)
        if window is not None and window.lost_until is not None and window.lost_until >= window.held_from:
            cause = "were dropped (window expiry, per-key cap or memory budget)"
        else:
            cause = "were never held here (worker start or last rebuild)"
        missing_to = min(to_ms, complete_from - 1)
        reason = (f"entries of {key} before {complete_from} {cause}; "
                  f"read [{from_ms}, {missing_to}] from ClickHouse")
        return Slice(entries, False, complete_from, reason)

    def expire(self) -> int:
        """Drop entries older than ``clock() - window_ms``, oldest first; returns how many went."""
        cutoff = self._clock() - self.window_ms
        dropped = 0
        heap = self._heap
        while heap and heap[0][0] < cutoff:
            _, key = heapq.heappop(heap)
            window = self._windows.get(key)
            if window is None or not len(window):
                continue
            while len(window) and window.times[window.head] < cutoff:
                self._drop_head(window)
                dropped += 1
            if len(window):
                heapq.heappush(heap, (window.times[window.head], key))
        self._expired += dropped
        return dropped

    def _evict_oldest(self) -> None:
        heap = self._heap
        while True:
            ts, key = heapq.heappop(heap)
            window = self._windows.get(key)
            if window is None or not len(window):
                continue
            oldest = window.times[window.head]
            if oldest != ts:
                heapq.heappush(heap, (oldest, key))  # stale: this key's oldest went already
                continue
            self._drop_head(window)
            self._evicted += 1
            if len(window):
                heapq.heappush(heap, (window.times[window.head], key))
            return

    def _drop_head(self, window: _KeyWindow) -> None:
        _, held = window.pop_head()
        self._bytes -= held[_SIZE] + ENTRY_OVERHEAD
        self._entries -= 1

    def _rebuild_heap(self) -> None:
        self._heap = [(w.times[w.head], key) for key, w in self._windows.items() if len(w)]
        heapq.heapify(self._heap)

    def _open(self, key: str) -> _KeyWindow:
        held_from = self._forgotten.pop(key, self._started)
        window = self._windows[key] = _KeyWindow(held_from)
        return window

    def mark_rebuilding(self, key: str) -> None:
        """The key's window is (re)filling from replay: its slices are incomplete until mark_rebuilt."""
        window = self._windows.get(key) or self._open(key)
        window.rebuilding = True

    def mark_rebuilt(self, key: str, complete_from_ms: int) -> None:
        """Replay covered everything from ``complete_from_ms`` (corrected time) on."""
        window = self._windows.get(key) or self._open(key)
        window.rebuilding = False
        window.held_from = complete_from_ms

    def forget(self, key: str) -> None:
        """The key's partition was revoked: drop its window."""
        window = self._windows.pop(key, None)
        if window is not None:
            self._bytes -= window.bytes
            self._entries -= len(window)
        self._forgotten[key] = self._clock()
        self._forgotten.move_to_end(key)
        if len(self._forgotten) > _FORGOTTEN_KEPT:
            self._forgotten.popitem(last=False)

    def recorrect(self, key: str, corrected: Callable[[WindowEntry], int]) -> int:
        """Re-index a key after its skew estimates changed; returns how many entries moved."""
        window = self._windows.get(key)
        if window is None or not len(window):
            return 0
        live = list(zip(window.times[window.head :], window.entries[window.head :]))
        moved = 0
        placed = []
        for old, held in live:
            new = corrected(_entry(old, held))  # type: ignore[arg-type]
            moved += new != old
            placed.append((new, held))
        if moved:
            placed.sort(key=lambda item: item[0])  # stable: ties keep their order
            window.times = [ts for ts, _ in placed]
            window.entries = [held for _, held in placed]
            window.head = 0
            heapq.heappush(self._heap, (window.times[0], key))
        return moved

    def keys(self) -> list[str]:
        return list(self._windows)

    def stats(self) -> dict:
        return {
            "keys": len(self._windows),
            "entries": self._entries,
            "bytes": self._bytes,
            "budget_bytes": self.budget_bytes,
            "evicted_total": self._evicted,
            "expired_total": self._expired,
            "rebuilding": sum(1 for w in self._windows.values() if w.rebuilding),
        }
