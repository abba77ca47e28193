"""Per-plugin windows and clock-skew estimators of the partitions this worker owns (pure logic).

``MaskedTail`` (tables/tail.py) feeds it from the masked topics; the report builder reads slices.
A slice is incomplete while its plugin's partition is owned elsewhere or still being rebuilt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugwatch.tables.skew import SkewEstimator
from plugwatch.tables.windows import Slice, WindowStore

log = logging.getLogger(__name__)

SIGNALS = ("logs", "traces", "metrics")
_TIME_FIELD = {"logs": "ts", "traces": "start_ts", "metrics": "ts"}
# Per-plugin estimator limits, for thousands of plugins per worker: logs usually arrive within
# seconds of their span, and with sampled traces most span ids never arrive at all, so a short,
# small wait list (64 span ids: a burst of logs before their spans still links) loses little
# evidence; 16 broker samples still give the bound's low quantile.
ESTIMATOR_LIMITS = {"index_ttl_ms": 60_000, "max_waiting": 64, "max_spans": 1024, "max_slacks": 16}


@dataclass
class Rebuild:
    started_at: float
    targets: dict[Any, int]  # end offsets seen at assignment
    reached: set[Any] = field(default_factory=set)
    idle: set[Any] = field(default_factory=set)

    def done(self) -> bool:
        return all(tp in self.reached and tp in self.idle for tp in self.targets)


class WindowKeeper:
    """Window store + per-plugin skew estimators, fed from the masked topics of owned partitions."""

    def __init__(
        self,
        windows: WindowStore,
        masked_topics: dict[str, str],  # signal -> topic
        *,
        partition_for: Callable[[str], int],
        window_ms: int,
        clock: Callable[[], float] = time.time,
        max_skew_keys: int = 50_000,
    ):
        self.windows = windows
        self.masked_topics = masked_topics
        self.signal_of = {topic: signal for signal, topic in masked_topics.items()}
        self.partition_for = partition_for
        self.window_ms = window_ms
        self.clock = clock
        self.skew: dict[str, SkewEstimator] = {}
        self.max_skew_keys = max_skew_keys
        self.owned: set[int] = set()
        self.rebuilding: dict[int, Rebuild] = {}
        self.key_partition: dict[str, int] = {}
        self.applied = 0
        self.dirty: set[str] = set()  # keys whose skew estimate changed since the last save
        self.complete_from: dict[int, int] = {}  # rebuilt partition -> time its windows are complete from
        self.retime: set[str] = set()  # keys whose estimates moved since their entries were placed
        self.observed: set[str] = set()  # keys whose estimators got votes or root spans since the last retime
        self.retime_threshold_ms = 20
        self.placed_offsets: dict[str, dict[tuple[str, str], int]] = {}  # offsets a key's entries follow
        self.watermarks: dict[str, int] = {}  # key -> newest corrected time applied
        # partition -> newest broker timestamp of the masked records applied (the time ingest wrote them)
        self.written_until: dict[int, int] = {}

    # Pure bookkeeping ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def estimator(self, key: str) -> SkewEstimator:
        estimator = self.skew.get(key)
        if estimator is None:
            if len(self.skew) >= self.max_skew_keys:
                self.skew.pop(next(iter(self.skew)))  # oldest-created key first
            estimator = self.skew[key] = SkewEstimator(clock=self.now_ms, **ESTIMATOR_LIMITS)
        return estimator

    def partition_of(self, key: str) -> int:
        partition = self.key_partition.get(key)
        return self.partition_for(key) if partition is None else partition

    def apply(
        self, signal: str, key: str, record: dict[str, Any], size: int, partition: int, raw_json: bytes | None = None
    ) -> bool:
        """One masked record into its plugin's skew estimator and window; False when too old."""
        raw_ts = record.get(_TIME_FIELD[signal])
        if not isinstance(raw_ts, int):
            return False
        now = self.now_ms()
        estimator = self.estimator(key)
        links = estimator.links
        source = estimator.observe(signal, record, now)
        if estimator.links != links:
            # Evidence that may move another (source, signal) than this record's: checked on the
            # next retime. A move of this record's own is noted below, with the offset it gets.
            self.observed.add(key)
        offset = estimator.offset(source, signal, now)  # what estimator.correct() adds, source known
        corrected = raw_ts + offset
        self._note_offset(key, source, signal, offset)
        if corrected < now - self.window_ms:
            return False
        new_key = key not in self.key_partition
        self.key_partition[key] = partition
        self.windows.add(key, signal, record, corrected, raw_ts, size, raw_json, source, now)
        if corrected > self.watermarks.get(key, corrected - 1):
            self.watermarks[key] = corrected
        if new_key and partition in self.complete_from:
            # The partition's replay found nothing of this key: it is complete since the replay start.
            self.windows.mark_rebuilt(key, self.complete_from[partition])
        self.dirty.add(key)
        self.applied += 1
        return True

    def watermark(self, key: str) -> int | None:
        """The newest corrected time of the plugin's telemetry applied so far (None: none yet)."""
        return self.watermarks.get(key)

    def caught_up(self, key: str, at_ms: int) -> bool:
        """Whether the plugin's masked partition has been applied past records written at ``at_ms``
        or later: all that ingest had written for the plugin by then is in the window."""
        seen = self.written_until.get(self.partition_of(key))
        return seen is not None and seen >= at_ms

    def count(self, key: str, from_ms: int, to_ms: int) -> int:
        """Records of the plugin held with a corrected time in ``[from_ms, to_ms]``."""
        return self.windows.count(key, from_ms, to_ms)

    def _note_offset(self, key: str, source: str, signal: str, offset: int) -> None:
        """Remember the offset a key's entries of (source, signal) were placed with; when the estimate
        has moved by more than ``retime_threshold_ms`` since, the key is due for re-indexing."""
        placed = self.placed_offsets.get(key)
        if placed is None:
            placed = self.placed_offsets[key] = {}
        previous = placed.get((source, signal))
        if previous is None:
            placed[(source, signal)] = offset
        elif abs(offset - previous) > self.retime_threshold_ms:
            self.retime.add(key)

    def recorrect_moved(self) -> int:
        """Re-index the windows of plugins whose skew estimates moved since their entries were
        placed, so records placed before the skew was known follow what was learnt later.

        A span arriving after its logs moves the logs' estimate without any new log to notice it,
        so every plugin that learnt something since the last call is checked, not only those whose
        own (source, signal) saw a new record."""
        observed, self.observed = self.observed, set()
        for key in observed:
            if key not in self.retime and self._moved(key):
                self.retime.add(key)
        moved_keys = 0
        for key in list(self.retime):
            estimator = self.skew.get(key)
            if estimator is None:
                continue
            offsets = {(row["source"], row["signal"]): row["offset_ms"] for row in estimator.table()}
            self.windows.recorrect(key, lambda entry: entry.raw_ts + offsets.get((entry.source, entry.signal), 0))
            self.placed_offsets[key] = offsets
            moved_keys += 1
        self.retime.clear()
        return moved_keys

    def _moved(self, key: str) -> bool:
        estimator, placed = self.skew.get(key), self.placed_offsets.get(key)
        if estimator is None or not placed:
            return False
        return any(
            abs(estimator.offset(source, signal) - offset) > self.retime_threshold_ms
            for (source, signal), offset in list(placed.items())
        )

    def offsets(self) -> list[tuple[str, str, str, int]]:
        """(plugin key, source, signal, offset ms) of every non-zero offset windows were placed with."""
        return [
            (key, source, signal, offset)
            for key, placed in list(self.placed_offsets.items())
            for (source, signal), offset in placed.items()
            if offset
        ]

    def slice(self, key: str, from_ms: int, to_ms: int, signals: Any = None) -> Slice:
        result = self.windows.slice(key, from_ms, to_ms, signals)
        partition = self.partition_of(key)
        if partition not in self.owned:
            return Slice(result.entries, False, None, f"partition {partition} is owned by another worker")
        if partition in self.rebuilding:
            return Slice(result.entries, False, None, f"partition {partition} is being rebuilt")
        return result

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.written_until.pop(partition, None)
        for key, partition in list(self.key_partition.items()):
            if partition in partitions:
                self.windows.forget(key)
                self.skew.pop(key, None)
                self.placed_offsets.pop(key, None)
                self.observed.discard(key)
                self.retime.discard(key)
                self.watermarks.pop(key, None)
                del self.key_partition[key]

    def rebuilt(self, partition: int, rebuild: Rebuild) -> None:
        complete_from = int(rebuild.started_at * 1000) - self.window_ms
        self.complete_from[partition] = complete_from
        for key, key_partition in self.key_partition.items():
            if key_partition == partition:
                self.windows.mark_rebuilt(key, complete_from)
        log.info("window rebuild of partition %d done in %.1f s", partition, self.clock() - rebuild.started_at)
