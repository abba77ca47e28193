"""Per-plugin windows of masked logs, spans and metric points, indexed by corrected time (DESIGN §5).

Each ``tenant_id/plugin_id`` key holds its entries sorted by corrected time (raw time kept beside it)
for the report builder's ``slice``. Memory is bounded twice: a per-key cap (entries and bytes) drops
that key's oldest, a global budget drops the globally oldest across keys. A record is counted as its
JSON byte size plus ``ENTRY_OVERHEAD``, and held compressed (``RecordPacker``): the window takes a
fraction of what it counts.

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
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

import orjson
import zstandard

from plugwatch.tables.skew import source_of

# Bytes counted per entry beside the record's JSON size. Measured when event ids were held as
# strings in a set (tracemalloc, CPython 3.11, 200,000 entries over 1,000 keys): the bytes object's
# header and malloc's share (~49 B), the event_id string (~81 B) and the key's columns, list slots and
# id set (~102 B). Event ids are now an 8-byte tag column (``_tag``), so an entry's bookkeeping is
# ~100 B; the budget still counts 240, so a budget holds as many records as before in less memory.
# Not counted: about 1 KB per key (its columns and bookkeeping), and a record held as a dict (only
# when the caller has no JSON), which takes 3-4x its JSON size. The budget counts JSON bytes, as the
# design asks, plus this - what the records are, not how they are held: held compressed they take
# about a fifth (``RecordPacker``).
ENTRY_OVERHEAD = 240
_NO_TAG = bytes(8)
_TAG_MASK = (1 << 64) - 1
# A key holding more entries than this also counts its tags in a dict, so that a new id is told new
# without reading the whole tag column (~60 us for 20,000 entries, ~1.5 us for 512), and a
# redelivery is looked for near its corrected time first.
_INDEX_FROM = 512
_NEAR_MS = 1_000  # where such a key looks for a redelivery first: this close to its corrected time

_FORGOTTEN_KEPT = 10_000  # revoked keys remembered so their slices say "not held"
_KINDS_KEPT = 64  # (signal, source) pairs a key may hold before those no entry uses are dropped


class RecordPacker:
    """Records as the window holds them: zstd frames, compressed one by one with a dictionary
    trained on the first records this store saw (telemetry of one deployment repeats its field
    names, tenants, hosts and versions, which a dictionary captures where one ~500-byte record alone
    has too little to compress). Until the dictionary exists records are held as they came.

    Measured on ``bench window`` records: ~2 us to pack and ~1 us to unpack a record, a fifth of
    its size. A frame starts with zstd's magic number, which no JSON text starts with, so either
    form unpacks. The dictionary is trained once; telemetry that drifts far from it compresses
    less, never wrongly."""

    MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self, train_records: int = 2000, dict_bytes: int = 32768, level: int = 1) -> None:
        self.train_records = train_records
        self.dict_bytes = dict_bytes
        self.level = level
        self._samples: list[bytes] | None = []
        self._compress: Callable[[bytes], bytes] | None = None
        self._decompress: Callable[[bytes], bytes] | None = None

    @property
    def trained(self) -> bool:
        return self._compress is not None

    def pack(self, raw: bytes) -> bytes:
        if self._compress is not None:
            # A copy: zstandard leaves its output in a buffer of the compression bound (~the input's
            # size, measured with tracemalloc), so the frame alone would save no memory at all.
            return memoryview(self._compress(raw)).tobytes()
        samples = self._samples
        if samples is not None:
            samples.append(raw)
            if len(samples) >= self.train_records:
                self._train(samples)
        return raw

    def unpack(self, stored: bytes) -> bytes:
        if stored[:4] == self.MAGIC and self._decompress is not None:
            return self._decompress(stored)
        return stored

    def _train(self, samples: list[bytes]) -> None:
        self._samples = None
        try:
            zdict = zstandard.train_dictionary(self.dict_bytes, samples)
        except zstandard.ZstdError:  # too few or too uniform samples: compress without a dictionary
            zdict = None
        compressor = zstandard.ZstdCompressor(level=self.level, dict_data=zdict, write_checksum=False,
                                              write_content_size=True, write_dict_id=False)
        decompressor = zstandard.ZstdDecompressor(dict_data=zdict)
        self._compress, self._decompress = compressor.compress, decompressor.decompress


def _tag(event_id: str) -> bytes:
    """An event id's 8-byte tag in a key's tag column: its hash (never all zeros, which marks an
    entry without an id). Process-local (str hashes are salted per process) and only a hint: a
    match is confirmed against the record's own event_id."""
    return ((hash(event_id) & _TAG_MASK) or 1).to_bytes(8, "little")


def _held(record: dict | bytes, size: int) -> int:
    """Bytes a stored record takes as held: a packed or raw record its length, a dict its JSON size."""
    return size if isinstance(record, dict) else len(record)


@dataclass(slots=True)
class WindowEntry:
    corrected_ts: int
    raw_ts: int
    signal: str
    source: str
    size: int
    # The record's JSON bytes when the caller has them (kept as bytes: a dict takes 3-4x the
    # memory), else the record itself; ``data()`` gives the dict either way.
    record: dict | bytes

    def data(self) -> dict:
        return orjson.loads(self.record) if isinstance(self.record, bytes) else self.record

    @property
    def event_id(self) -> str | None:
        """The record's event_id (read from the record: the window holds only a tag of it)."""
        value = self.data().get("event_id")
        return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Slice:
    entries: list[WindowEntry]  # sorted by corrected_ts, ties in arrival order
    complete: bool
    complete_from: int | None  # None while nothing is known complete (rebuilding, or not held)
    reason: str | None  # why incomplete, and what to read instead


class _KeyWindow:
    """One key's entries, sorted by corrected time, in parallel columns; ``head`` skips the entries
    already dropped from the front.

    Times, sizes and each entry's (signal, source) sit in ``array`` columns (machine integers, no
    Python object per entry) and event ids as 8-byte tags in a ``bytearray`` (``_tag``): per entry
    only the record's bytes are an object. A redelivery is found by searching the tags (C speed, ~8
    bytes an entry) and confirmed against the record; measured with ``bench window``'s records
    (5,000 keys, budget full), a string per id and a set per key took ~140 B an entry, 90 MiB. A
    key past ``_INDEX_FROM`` entries also keeps ``index`` (tag -> how many live entries have it).
    Measured with ``bench window``: held as one object per entry plus two int objects, the entries
    left a few small long-lived objects each among the many short-lived ones of every batch, and the
    worker's RSS grew ~1.8 MiB per MiB counted.
    """

    __slots__ = ("times", "raws", "sizes", "kinds", "kind_of", "kind_codes", "records", "tags", "index", "head",
                 "bytes", "held", "held_from", "lost_until", "rebuilding")

    def __init__(self, held_from: int):
        self.times = array("q")  # corrected time, sorted
        self.raws = array("q")
        self.sizes = array("q")
        self.kinds = array("L")  # index into kind_of
        self.kind_of: list[tuple[str, str]] = []  # this key's (signal, source) pairs: a handful
        self.kind_codes: dict[tuple[str, str], int] = {}
        self.records: list[dict | bytes | None] = []
        self.tags = bytearray()  # 8 bytes an entry: _tag(event_id), or zeros when it has none
        self.index: dict[int, int] | None = None  # tag -> live entries with it, for large keys
        self.head = 0
        self.bytes = 0
        self.held = 0  # bytes of the records as held (packed); a dict counts its JSON size
        self.held_from = held_from
        self.lost_until: int | None = None  # everything dropped was stamped before this
        self.rebuilding = False

    def __len__(self) -> int:
        return len(self.times) - self.head

    def kind(self, signal: str, source: str) -> int:
        code = self.kind_codes.get((signal, source))
        if code is None:
            code = self.kind_codes[(signal, source)] = len(self.kind_of)
            self.kind_of.append((sys.intern(signal), sys.intern(source)))
        return code

    def put(self, at: int, corrected_ts: int, raw_ts: int, size: int, kind: int, record: dict | bytes,
            tag: bytes) -> None:
        self.held += _held(record, size)
        if at == len(self.times):
            self.times.append(corrected_ts)
            self.raws.append(raw_ts)
            self.sizes.append(size)
            self.kinds.append(kind)
            self.records.append(record)
            self.tags += tag
        else:
            self.times.insert(at, corrected_ts)
            self.raws.insert(at, raw_ts)
            self.sizes.insert(at, size)
            self.kinds.insert(at, kind)
            self.records.insert(at, record)
            self.tags[at * 8:at * 8] = tag
        index = self.index
        if index is not None:
            if tag != _NO_TAG:
                number = int.from_bytes(tag, "little")
                index[number] = index.get(number, 0) + 1
        elif len(self.times) - self.head > _INDEX_FROM:
            self.index = index = {}
            tags = self.tags
            for pos in range(self.head * 8, len(tags), 8):
                number = int.from_bytes(tags[pos:pos + 8], "little")
                if number:
                    index[number] = index.get(number, 0) + 1

    def entry(self, i: int, unpack: Callable[[bytes], bytes] | None) -> WindowEntry:
        """Entry ``i``; without ``unpack`` its record is left out (``b"{}"``), for callers that read times."""
        signal, source = self.kind_of[self.kinds[i]]
        record = self.records[i]
        assert record is not None
        if unpack is None:
            record = b"{}"
        elif not isinstance(record, dict):
            record = unpack(record)
        return WindowEntry(self.times[i], self.raws[i], signal, source, self.sizes[i], record)

    def holds(self, event_id: str, tag: bytes, unpack: Callable[[bytes], bytes], near: int) -> bool:
        """A live entry has this event_id: a search of the tag column, each hit confirmed. A key
        with an index looks first among the entries within a second of ``near`` (where a redelivery's
        first copy lies unless its skew estimate moved since), then in the whole column."""
        if self.index is None:
            if self.tags.find(tag, self.head * 8) < 0:
                return False  # the common case, answered in C
            return self._find(event_id, tag, unpack, self.head, len(self.times))
        if int.from_bytes(tag, "little") not in self.index:
            return False
        lo = bisect_left(self.times, near - _NEAR_MS, self.head)
        hi = bisect_right(self.times, near + _NEAR_MS, lo)
        return self._find(event_id, tag, unpack, lo, hi) or self._find(event_id, tag, unpack, self.head, len(self.times))

    def _find(self, event_id: str, tag: bytes, unpack: Callable[[bytes], bytes], lo: int, hi: int) -> bool:
        tags, pos, end = self.tags, lo * 8, hi * 8
        while (pos := tags.find(tag, pos, end)) >= 0:
            if pos % 8:  # straddles two tags
                pos += 1
                continue
            record = self.records[pos // 8]
            assert record is not None
            data = record if isinstance(record, dict) else orjson.loads(unpack(record))
            held = data.get("event_id")
            if held is not None and str(held) == event_id:
                return True
            pos += 8  # two ids with one hash: look on
        return False

    def lose(self, corrected_ts: int) -> None:
        if self.lost_until is None or corrected_ts + 1 > self.lost_until:
            self.lost_until = corrected_ts + 1

    def pop_head(self) -> int:
        """Drop the oldest entry; returns the bytes it was counted for."""
        head = self.head
        corrected_ts, size, record = self.times[head], self.sizes[head], self.records[head]
        self.held -= _held(record, size)
        self.records[head] = None
        index = self.index
        if index is not None:
            number = int.from_bytes(self.tags[head * 8:head * 8 + 8], "little")
            if number:
                left = index[number] - 1
                if left:
                    index[number] = left
                else:
                    del index[number]
        self.head = head = head + 1
        if head >= 32 and 4 * head >= len(self.times):
            # Dropping from the front moves the rest; do it in bulk instead of per entry. At a quarter
            # (not half) the columns shrink in place: cut by half, each was reallocated smaller and
            # then larger again, and the C heap fragmented - measured in-process with ``bench
            # window``'s records (budget full, 5,000 keys), memory crept 397 -> 459 MiB over 1.3
            # million more records at a half; at a quarter it stays at 308-310 MiB.
            for column in (self.times, self.raws, self.sizes, self.kinds, self.records):
                del column[:head]
            del self.tags[:head * 8]
            self.head = 0
            if len(self.kind_of) > _KINDS_KEPT:
                self.forget_kinds()
        cost = size + ENTRY_OVERHEAD
        self.bytes -= cost
        self.lose(corrected_ts)
        return cost

    def forget_kinds(self) -> None:
        """Keep only the (signal, source) pairs live entries use: sources come and go (pods are
        replaced), and a long-lived key must not keep every one it ever saw."""
        live = sorted(set(self.kinds[self.head :]))
        if len(live) == len(self.kind_of):
            return
        self.kind_of = [self.kind_of[code] for code in live]
        self.kind_codes = {kind: code for code, kind in enumerate(self.kind_of)}
        renumbered = {old: new for new, old in enumerate(live)}
        self.kinds = array("L", [renumbered.get(code, 0) for code in self.kinds])  # dropped slots: any code

    def reorder(self, times: list[int]) -> None:
        """Give the live entries these corrected times (in held order) and sort them again."""
        head = self.head
        order = sorted(range(len(times)), key=times.__getitem__)  # stable: ties keep their order
        self.times = array("q", [times[i] for i in order])
        self.raws = array("q", [self.raws[head + i] for i in order])
        self.sizes = array("q", [self.sizes[head + i] for i in order])
        self.kinds = array("L", [self.kinds[head + i] for i in order])
        self.records = [self.records[head + i] for i in order]
        with memoryview(self.tags) as view, view.cast("Q") as tags:  # released before the column changes
            self.tags = bytearray(array("Q", [tags[head + i] for i in order]).tobytes())
        self.head = 0

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
        packer: RecordPacker | None = None,
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
        self._packer = packer or RecordPacker()
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
        now: int | None = None,
    ) -> None:
        """Insert at its corrected time; a redelivered event_id is ignored. O(log n) plus evictions.

        ``raw_json`` (the record's JSON, ``size`` bytes) is stored instead of the dict when given;
        ``source`` and ``now`` (the clock's reading) save deriving them again when the caller
        already has them.
        """
        window = self._windows.get(key)
        if window is None:
            window = self._open(key)
        if corrected_ts < (self._clock() if now is None else now) - self.window_ms:
            window.lose(corrected_ts)  # arrived already older than the window
            self._expired += 1
            return
        event_id = record.get("event_id")
        tag = _NO_TAG
        if event_id is not None:
            event_id = str(event_id)
            tag = _tag(event_id)
            if window.holds(event_id, tag, self._packer.unpack, corrected_ts):
                return
        cost = size + ENTRY_OVERHEAD
        if cost > self.per_key_max_bytes or cost > self.budget_bytes:
            window.lose(corrected_ts)
            self._evicted += 1
            return
        stored = record if raw_json is None else self._packer.pack(raw_json)
        kind = window.kind(signal, source if source is not None else source_of(record))
        times = window.times
        if not times or corrected_ts >= times[-1]:
            at = len(times)
        else:
            at = bisect_right(times, corrected_ts, window.head)
        window.put(at, corrected_ts, raw_ts, size, kind, stored, tag)
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
        lo = bisect_left(window.times, from_ms, window.head)
        hi = bisect_right(window.times, to_ms, lo)
        indices: Iterable[int] = range(lo, hi)
        if signals is not None:  # before unpacking: only the records asked for are unpacked
            wanted, kind_of, kinds = set(signals), window.kind_of, window.kinds
            indices = [i for i in indices if kind_of[kinds[i]][0] in wanted]
        unpack = self._packer.unpack
        entries = [window.entry(i, unpack) for i in indices]
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
        self._bytes -= window.pop_head()
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
        """Re-index a key after its skew estimates changed; returns how many entries moved.
        ``corrected`` gets each entry without its record (``b"{}"``): times, signal and source."""
        window = self._windows.get(key)
        if window is None or not len(window):
            return 0
        times = [corrected(window.entry(i, None)) for i in range(window.head, len(window.times))]
        moved = sum(1 for new, old in zip(times, window.times[window.head :]) if new != old)
        if moved:
            window.reorder(times)
            heapq.heappush(self._heap, (window.times[0], key))
        return moved

    def keys(self) -> list[str]:
        return list(self._windows)

    def stats(self) -> dict:
        return {
            "keys": len(self._windows),
            "entries": self._entries,
            "bytes": self._bytes,
            "held_bytes": sum(w.held for w in self._windows.values()),
            "budget_bytes": self.budget_bytes,
            "evicted_total": self._evicted,
            "expired_total": self._expired,
            "rebuilding": sum(1 for w in self._windows.values() if w.rebuilding),
        }
