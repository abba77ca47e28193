"""Alerts in on a consumer of their own (DESIGN §6 step 1).

Under load, a Faust agent's alerts wait in the same conductor as the telemetry of the worker's
partitions: a report was built ~200 ms after its alert was handed over, but the alert reached the
agent seconds after it was produced. This consumer reads ``plugin.debug.alert`` by itself, on the
partitions whose telemetry this worker owns (the same numbers, assigned when Faust assigns the
telemetry), and commits offsets to its own group once each alert's report is written -- in
partition order, so a crash repeats at most the alerts whose reports were not yet written (a report
id is stable per alert: a repeat rewrites the same report).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from plugwatch import metrics
from plugwatch.aio import cancel_and_wait
from plugwatch.sinks.retry import retry_forever
from plugwatch.streams.reading import fetch
from plugwatch.streams.records import RecordError

if TYPE_CHECKING:
    from plugwatch.app import Services

log = logging.getLogger(__name__)


class AlertFeed:
    def __init__(self, services: Services):
        self.services = services
        settings = services.settings
        self.topic = settings.topics.alerts
        self._consumer: AIOKafkaConsumer | None = None  # created in start(): aiokafka binds to the running loop
        self._task: asyncio.Task[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[TopicPartition, deque[tuple[int, asyncio.Future[Any] | None]]] = {}
        self.partitions: set[int] = set()

    async def start(self) -> None:
        settings = self.services.settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=f"{settings.app_id}-alerts",
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20, max_poll_records=500,
        )
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._committing is not None:
            await asyncio.gather(self._committing, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await self._commit_done(consumer)
            except Exception as exc:
                log.info("alert offsets not committed at shutdown (%s); the next owner repeats those alerts", exc)
            await consumer.stop()

    async def assign(self, partitions: set[int]) -> None:
        """Read exactly ``partitions`` of the alert topic from now (from the group's commits)."""
        consumer = self._consumer
        if consumer is None:
            return
        async with self._lock:
            self.partitions = set(partitions)
            for tp in [tp for tp in self._pending if tp.partition not in partitions]:
                del self._pending[tp]  # the new owner repeats what was not committed
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            if not consumer.assignment():
                await asyncio.sleep(0.05)
                continue
            batches = await fetch(consumer, "alerts", timeout_ms=50, max_records=500)
            async with self._lock:
                for tp, records in batches.items():
                    if tp.partition not in self.partitions:
                        continue
                    queue = self._pending.setdefault(tp, deque())
                    for record in records:
                        queue.append((record.offset, await self._take(record)))
            # The commit is a broker round trip (up to ~300 ms under load): the next fetch does not
            # wait for it. One at a time; what finishes meanwhile goes with the next one.
            if self._committing is None or self._committing.done():
                self._committing = asyncio.ensure_future(self._commit_quietly(consumer))

    async def _commit_quietly(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._commit_done(consumer)
        except (KafkaError, OSError, RuntimeError) as exc:
            log.info("alerts: commit failed (%s); later offsets go with the next commit", exc)

    async def _take(self, record: Any) -> asyncio.Future[Any] | None:
        """One alert: to the report service (its future: the first revision written), to the
        dead-letter topic, or moved to the partition whose worker holds the plugin's window."""
        from plugwatch.agents.reports import parse_alert_message

        services = self.services
        try:
            alert = parse_alert_message(services.masker, record.value)
        except RecordError as exc:
            await services.deadletter(exc.reason, str(exc), record, "alert")
            metrics.ALERTS_REJECTED.labels(exc.reason).inc()
            return None
        owner = services.tail.partition_for(alert.key)
        if record.partition != owner and services.tail.partitions == services.alert_partitions:
            await retry_forever(f"re-route alert to {self.topic}[{owner}]", lambda: services.topics.send(
                self.topic, record.value, key=alert.key.encode(), partition=owner))
            return None
        future = services.reports.submit(alert)
        # A report that failed to build (counted, logged) does not hold up the partition.
        return asyncio.ensure_future(asyncio.gather(future, return_exceptions=True))

    async def _commit_done(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {}
        for tp, queue in self._pending.items():
            last = None
            while queue and (queue[0][1] is None or queue[0][1].done()):
                last = queue.popleft()[0]
            if last is not None:
                offsets[tp] = last + 1
        if offsets:
            await consumer.commit(offsets)
