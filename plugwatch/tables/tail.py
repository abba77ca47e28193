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
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from plugwatch.sinks.topics import partition_of
from plugwatch.streams.reading import fetch, stop_reader
from plugwatch.tables.keeper import ESTIMATOR_LIMITS, Rebuild, WindowKeeper
from plugwatch.tables.skew import SkewEstimator
from plugwatch.tables.windows import WindowStore

log = logging.getLogger(__name__)
_YIELD_EVERY = 1000  # records applied between two passes of the event loop


class MaskedTail(WindowKeeper):
    """The keeper plus the aiokafka consumer that tails the owned masked partitions."""

    def __init__(
        self,
        bootstrap_servers: str,
        windows: WindowStore,
        masked_topics: dict[str, str],
        *,
        partitions: int,
        load_skew: Callable[[list[int]], Awaitable[dict[str, dict[str, Any]]]] | None = None,
        **kwargs: Any,
    ):
        self.partitions = partitions
        super().__init__(windows, masked_topics, partition_for=self._partition_for, **kwargs)
        self.bootstrap_servers = bootstrap_servers
        self.load_skew = load_skew
        self.idle_ms = 500
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._assign_lock = asyncio.Lock()

    def _partition_for(self, key: str) -> int:
        """The masked topics' partition of a key: where the producer put it."""
        return partition_of(key.encode(), self.partitions)

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
        consumer, self._consumer = self._consumer, None
        await stop_reader(task, consumer)

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
                self.skew[key] = SkewEstimator.restore(snapshot, clock=self.now_ms, **ESTIMATOR_LIMITS)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("saved clock-skew state of %s unusable (%s); starting afresh", key, exc)

    def take_dirty_snapshots(self, limit: int | None = None) -> list[tuple[str, int, bytes, int]]:
        """Snapshots (JSON) of up to ``limit`` estimators that changed since they were last taken."""
        if limit is None or limit >= len(self.dirty):
            keys, self.dirty = self.dirty, set()
        else:
            keys = [self.dirty.pop() for _ in range(limit)]
        now = self.now_ms()
        return [(k, self.partition_of(k), self.skew[k].snapshot_json(), now) for k in keys if k in self.skew]

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            if not consumer.assignment():
                await asyncio.sleep(0.05)
                continue
            batches = await fetch(consumer, "window tail", timeout_ms=self.idle_ms, max_records=10_000)
            applied = 0
            for tp, records in batches.items():
                signal = self.signal_of.get(tp.topic)
                if signal is None or not records:
                    continue
                for message in records:
                    self._apply_message(signal, tp.partition, message)
                    applied += 1
                    if applied % _YIELD_EVERY == 0:
                        # A backlog comes in fetches of up to 10,000 records (~150 ms of work):
                        # let alerts and reports in between -- and a rebalance, after which the
                        # rest of a partition no longer ours is not applied.
                        await asyncio.sleep(0)
                        if tp.partition not in self.owned:
                            break
                if tp.partition not in self.owned:
                    continue
                # Broker timestamps of one partition come from the producers' clocks: keep the newest.
                written = max(message.timestamp for message in records)
                if written > self.written_until.get(tp.partition, 0):
                    self.written_until[tp.partition] = written
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
