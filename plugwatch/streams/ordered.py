"""A consumer-group member that handles each record in partition order and commits after it
(the partitions of a fetch are handled side by side).

For work that may wait a long time on something outside Kafka (a ticket system that is down, a
regression check that runs for a minute): a Faust agent would hold every rebalance until it
finished, here a rebalance simply moves the partition and the new owner starts at the last
committed offset. Delivery is at least once; handlers are idempotent.

``handle`` returns normally when the record is done (committed next), raises ``Retry`` to try the
same record again after a backoff (nothing after it in that partition is handled meanwhile), and
any other exception is logged and the record given to ``on_failure`` (e.g. the dead-letter topic)
before it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from plugwatch.streams.reading import fetch, stop_reader

log = logging.getLogger(__name__)


class Retry(Exception):
    """The record could not be handled now (e.g. a system is down); try it again later."""


class _Revocations(ConsumerRebalanceListener):
    def __init__(self, owner: OrderedConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.revoked_since_fetch.update(revoked)
        if self.owner.on_revoked is not None:
            self.owner.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class OrderedConsumer:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        handle: Callable[[Any], Awaitable[None]],
        *,
        on_failure: Callable[[Any, Exception], Awaitable[None]] | None = None,
        on_revoked: Callable[[set[int]], None] | None = None,
        on_waiting: Callable[[Any | None], None] | None = None,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 1.0,
        rebalance_timeout_s: float = 10.0,
    ):
        self.topic = topic
        self.group_id = group_id
        self.handle = handle
        self.on_failure = on_failure
        self.on_revoked = on_revoked
        self.on_waiting = on_waiting  # the record being retried, None when caught up
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.revoked_since_fetch: set[TopicPartition] = set()
        self._config = dict(
            bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100,
            session_timeout_ms=int(session_timeout_s * 1000), heartbeat_interval_ms=int(heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(rebalance_timeout_s * 1000), max_poll_interval_ms=24 * 3600 * 1000,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._committing = asyncio.Lock()
        self.handled = 0

    @classmethod
    def for_worker(cls, settings: Any, topic: str, group: str, handle: Callable[[Any], Awaitable[None]],
                   **options: Any) -> OrderedConsumer:
        """A member of the worker's group ``<app_id>-<group>``, with the worker's broker timeouts."""
        return cls(settings.bootstrap_servers, topic, f"{settings.app_id}-{group}", handle,
                   session_timeout_s=settings.broker_session_timeout_s,
                   heartbeat_interval_s=settings.broker_heartbeat_interval_s,
                   rebalance_timeout_s=settings.broker_rebalance_timeout_s, **options)

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(**self._config)
        await consumer.start()
        consumer.subscribe([self.topic], listener=_Revocations(self))
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        await stop_reader(task, consumer)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await fetch(consumer, self.topic, timeout_ms=500, max_records=100)
            self.revoked_since_fetch.clear()
            # Partitions side by side, each in order: one plugin's slow op does not hold up another
            # partition's, and their writes (e.g. ticket records) can share ClickHouse inserts.
            outcomes = await asyncio.gather(
                *(self._partition(consumer, tp, records) for tp, records in batches.items()), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            if self.on_waiting is not None:
                self.on_waiting(None)

    async def _partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            if tp in self.revoked_since_fetch or tp not in consumer.assignment():
                return  # moved to another member: it starts at our last commit
            if not await self._handle(record, tp):
                return
            try:
                async with self._committing:
                    await consumer.commit({tp: record.offset + 1})
            except (CommitFailedError, KafkaError) as exc:
                log.info("%s: commit of %s failed (%s); the next owner repeats it", self.topic, tp, exc)
                return

    async def _handle(self, record: Any, tp: TopicPartition) -> bool:
        """False when the partition moved away while the record waited."""
        delay = self.first_delay_s
        while True:
            try:
                await self.handle(record)
                self.handled += 1
                return True
            except asyncio.CancelledError:
                raise
            except Retry as exc:
                if tp in self.revoked_since_fetch:
                    return False
                if self.on_waiting is not None:
                    self.on_waiting(record)
                log.warning("%s[%d]@%d waits: %s; retrying in %.1f s", record.topic, record.partition,
                            record.offset, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.max_delay_s)
            except Exception as exc:
                log.exception("%s[%d]@%d failed", record.topic, record.partition, record.offset)
                if self.on_failure is not None:
                    await self.on_failure(record, exc)
                return True
