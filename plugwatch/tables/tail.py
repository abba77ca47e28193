"""Keeps the window of every plugin this worker owns, from ``telemetry.masked.*``.

The masked topics are keyed ``tenant_id/plugin_id``, so masked partition p holds everything of the
plugins hashed to p, whichever inbound partition a record came through (the Collector's OTLP
batches are not keyed by plugin). Faust assigns co-partitioned topics together, so the worker that
owns inbound partition p -- and alert partition p -- tails masked partition p.

The tail reads with a plain aiokafka consumer (manual assignment, no group, batched fetches):
~10 µs a record against ~80 µs for a Faust agent, which would halve ingest throughput.

On assignment a partition is rebuilt by replaying from now − window: ``offsets_for_times`` finds
where to start (on Apache Kafka the real offset; the embedded Tansu answers the earliest, which is
still correct because records are filtered by timestamp). A rebuild is finished when the position
has reached the end offset seen at assignment AND a fetch found the partition idle: Tansu reports
the last batch's base offset + 1 as the end, so the end offset alone would stop a batch short.
Until then slices of its plugins say they are incomplete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from plugwatch.tables.skew import SkewEstimator
from plugwatch.tables.windows import Slice, WindowStore

log = logging.getLogger(__name__)

SIGNALS = ("logs", "traces", "metrics")
_TIME_FIELD = {"logs": "ts", "traces": "start_ts", "metrics": "ts"}


@dataclass
class Rebuild:
    started_at: float
    targets: dict[TopicPartition, int]  # end offsets seen at assignment
    reached: set[TopicPartition] = field(default_factory=set)
    idle: set[TopicPartition] = field(default_factory=set)

    def done(self) -> bool:
        return all(tp in self.reached and tp in self.idle for tp in self.targets)


class WindowKeeper:
    """Window store + per-plugin skew estimators, fed from the masked topics of owned partitions."""

    def __init__(
        self,
        windows: WindowStore,
        masked_topics: dict[str, str],  # signal -> topic
        *,
        partitions: int,
        window_ms: int,
        clock: Callable[[], float] = time.time,
        max_skew_keys: int = 50_000,
    ):
        self.windows = windows
        self.masked_topics = masked_topics
        self.signal_of = {topic: signal for signal, topic in masked_topics.items()}
        self.partitions = partitions
        self.window_ms = window_ms
        self.clock = clock
        self.skew: dict[str, SkewEstimator] = {}
        self.max_skew_keys = max_skew_keys
        self.owned: set[int] = set()
        self.rebuilding: dict[int, Rebuild] = {}
        self.key_partition: dict[str, int] = {}
        self._partitioner = DefaultPartitioner()
        self.applied = 0
        self.dirty: set[str] = set()  # keys whose skew estimate changed since the last save
        self.complete_from: dict[int, int] = {}  # rebuilt partition -> time its windows are complete from
        self.retime: set[str] = set()  # keys with new evidence since the last recorrect_moved()
        self.placed_offsets: dict[str, dict[tuple[str, str], int]] = {}  # offsets a key's entries follow

    # Pure bookkeeping ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def estimator(self, key: str) -> SkewEstimator:
        estimator = self.skew.get(key)
        if estimator is None:
            if len(self.skew) >= self.max_skew_keys:
                self.skew.pop(next(iter(self.skew)))  # oldest-created key first
            estimator = self.skew[key] = SkewEstimator(clock=self.now_ms)
        return estimator

    def partition_of(self, key: str) -> int:
        partition = self.key_partition.get(key)
        if partition is None:
            all_partitions = list(range(self.partitions))
            partition = self._partitioner(key.encode(), all_partitions, all_partitions)
        return partition

    def apply(
        self, signal: str, key: str, record: dict[str, Any], size: int, partition: int, raw_json: bytes | None = None
    ) -> bool:
        """One masked record into its plugin's skew estimator and window; False when too old."""
        raw_ts = record.get(_TIME_FIELD[signal])
        if not isinstance(raw_ts, int):
            return False
        estimator = self.estimator(key)
        estimator.observe(signal, record)
        corrected = estimator.correct(signal, record)
        if corrected < self.now_ms() - self.window_ms:
            return False
        new_key = key not in self.key_partition
        self.key_partition[key] = partition
        self.windows.add(key, signal, record, corrected, raw_ts, size, raw_json)
        self.retime.add(key)
        if new_key and partition in self.complete_from:
            # The partition's replay found nothing of this key: it is complete since the replay start.
            self.windows.mark_rebuilt(key, self.complete_from[partition])
        self.dirty.add(key)
        self.applied += 1
        return True

    def recorrect_moved(self, threshold_ms: int = 20) -> int:
        """Re-index the windows of plugins whose skew estimates moved by more than ``threshold_ms``
        since their entries were placed, so early records follow what was learnt later."""
        moved_keys = 0
        for key in list(self.retime):
            estimator = self.skew.get(key)
            if estimator is None:
                self.retime.discard(key)
                continue
            offsets = {(row["source"], row["signal"]): row["offset_ms"] for row in estimator.table()}
            placed = self.placed_offsets.get(key, {})
            if all(abs(offsets.get(k, 0) - placed.get(k, 0)) <= threshold_ms for k in offsets.keys() | placed.keys()):
                continue
            self.windows.recorrect(
                key, lambda entry: entry.raw_ts + offsets.get((entry.source, entry.signal), 0)
            )
            self.placed_offsets[key] = offsets
            moved_keys += 1
        self.retime.clear()
        return moved_keys

    def slice(self, key: str, from_ms: int, to_ms: int, signals: Any = None) -> Slice:
        result = self.windows.slice(key, from_ms, to_ms, signals)
        partition = self.partition_of(key)
        if partition not in self.owned:
            return Slice(result.entries, False, result.complete_from, f"partition {partition} is owned by another worker")
        if partition in self.rebuilding:
            return Slice(result.entries, False, result.complete_from, f"partition {partition} is being rebuilt")
        return result

    def forget_partitions(self, partitions: set[int]) -> None:
        for key, partition in list(self.key_partition.items()):
            if partition in partitions:
                self.windows.forget(key)
                self.skew.pop(key, None)
                self.placed_offsets.pop(key, None)
                del self.key_partition[key]


class MaskedTail(WindowKeeper):
    """The keeper plus the aiokafka consumer that tails the owned masked partitions."""

    def __init__(
        self,
        bootstrap_servers: str,
        windows: WindowStore,
        masked_topics: dict[str, str],
        *,
        load_skew: Callable[[list[int]], Awaitable[dict[str, dict[str, Any]]]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(windows, masked_topics, **kwargs)
        self.bootstrap_servers = bootstrap_servers
        self.load_skew = load_skew
        self.idle_ms = 500
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._assign_lock = asyncio.Lock()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def assign(self, partitions: set[int]) -> None:
        """Own exactly ``partitions`` from now: forget the others, rebuild the new ones."""
        consumer = self._consumer
        if consumer is None:
            return
        async with self._assign_lock:
            revoked = self.owned - partitions
            added = partitions - self.owned
            self.forget_partitions(revoked)
            for partition in revoked:
                self.rebuilding.pop(partition, None)
                self.complete_from.pop(partition, None)
            self.owned = set(partitions)
            tps = [TopicPartition(t, p) for t in self.masked_topics.values() for p in sorted(partitions)]
            consumer.assign(tps)
            if not added:
                return
            await self._restore_skew(sorted(added))
            new_tps = [tp for tp in tps if tp.partition in added]
            start_ms = self.now_ms() - self.window_ms
            starts = await consumer.offsets_for_times({tp: start_ms for tp in new_tps})
            ends = await consumer.end_offsets(new_tps)
            for tp in new_tps:
                found = starts.get(tp)
                if found is not None:
                    consumer.seek(tp, found.offset)
                else:  # nothing at or after start_ms: nothing to replay
                    consumer.seek(tp, ends[tp])
            for partition in added:
                targets = {tp: ends[tp] for tp in new_tps if tp.partition == partition}
                self.rebuilding[partition] = Rebuild(self.clock(), targets)
            log.info("window rebuild started for partitions %s from %d ms ago", sorted(added), self.window_ms)

    async def _restore_skew(self, partitions: list[int]) -> None:
        if self.load_skew is None:
            return
        try:
            saved = await self.load_skew(partitions)
        except Exception as exc:  # the replay rebuilds the estimates anyway, from less history
            log.warning("could not load saved clock-skew state (%s); rebuilding it from the replay", exc)
            return
        for key, snapshot in saved.items():
            try:
                self.skew[key] = SkewEstimator.restore(snapshot, clock=self.now_ms)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("saved clock-skew state of %s unusable (%s); starting afresh", key, exc)

    def take_dirty_snapshots(self) -> list[tuple[str, int, dict[str, Any], int]]:
        """Snapshots of the estimators that changed since the last call, for saving."""
        keys, self.dirty = self.dirty, set()
        now = self.now_ms()
        return [(k, self.partition_of(k), self.skew[k].snapshot(), now) for k in keys if k in self.skew]

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            if not consumer.assignment():
                await asyncio.sleep(0.05)
                continue
            batches = await consumer.getmany(timeout_ms=self.idle_ms, max_records=10_000)
            for tp, records in batches.items():
                signal = self.signal_of.get(tp.topic)
                if signal is None:
                    continue
                for message in records:
                    self._apply_message(signal, tp.partition, message)
            await self._track_rebuilds(consumer, batches)

    def _apply_message(self, signal: str, partition: int, message: Any) -> None:
        if message.value is None or message.key is None:
            return
        try:
            record = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            log.warning("undecodable record on %s[%d]@%d skipped", message.topic, partition, message.offset)
            return
        if isinstance(record, dict):
            self.apply(signal, message.key.decode(errors="replace"), record, len(message.value), partition, message.value)

    async def _track_rebuilds(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        for partition, rebuild in list(self.rebuilding.items()):
            for tp, target in rebuild.targets.items():
                if tp not in rebuild.reached and await consumer.position(tp) >= target:
                    rebuild.reached.add(tp)
                if batches.get(tp):
                    rebuild.idle.discard(tp)
                else:
                    rebuild.idle.add(tp)
            if rebuild.done():
                del self.rebuilding[partition]
                self.rebuilt(partition, rebuild)

    def rebuilt(self, partition: int, rebuild: Rebuild) -> None:
        complete_from = int(rebuild.started_at * 1000) - self.window_ms
        self.complete_from[partition] = complete_from
        for key, key_partition in self.key_partition.items():
            if key_partition == partition:
                self.windows.mark_rebuilt(key, complete_from)
        log.info("window rebuild of partition %d done in %.1f s", partition, self.clock() - rebuild.started_at)
