"""Downstream topics: one aiokafka producer, record batches built here, awaited before offsets commit.

``send_many`` fills one record batch per partition (aiokafka's BatchBuilder) instead of one
``send()`` per message: ~4 µs instead of ~17 µs a message here. Keys go through aiokafka's default
partitioner (murmur2, as the Java client does), cached per key, so everything keyed
``tenant_id/plugin_id`` lands on the same partition number in every topic of the same size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

_PARTITION_CACHE_LIMIT = 100_000


def partition_of(key: bytes, count: int) -> int:
    """The partition the default partitioner of aiokafka (and of the Java client) gives ``key``
    among ``count`` partitions: where every producer puts it, and so where readers look for it."""
    return (murmur2(key) & 0x7FFFFFFF) % count


class TopicSink:
    def __init__(self, bootstrap_servers: str, *, linger_ms: int = 5, client_id: str = "plugwatch-sink"):
        self._config = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_batch_size": 1024 * 1024,
            "max_request_size": 4 * 1024 * 1024,
        }
        self._producer: AIOKafkaProducer | None = None
        self._partition_of: dict[tuple[int, bytes], int] = {}

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running loop.
        if self._producer is None:
            producer = AIOKafkaProducer(**self._config)
            await producer.start()
            self._producer = producer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("TopicSink.start() was not awaited")
        return self._producer

    async def broker_reachable(self, timeout: float = 3.0) -> bool:
        try:
            return bool(await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout))
        except Exception:
            return False

    async def _partitions(self, topic: str) -> list[int]:
        partitions = self.producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            partitions = await self.producer.partitions_for(topic)  # waits for metadata
        return sorted(partitions)

    async def partition_count(self, topic: str) -> int:
        return len(await self._partitions(topic))

    def _partition(self, partitions: list[int], key: bytes | None, index: int) -> int:
        if key is None:
            return partitions[index % len(partitions)]
        cache_key = (len(partitions), key)
        partition = self._partition_of.get(cache_key)
        if partition is None:
            if len(self._partition_of) > _PARTITION_CACHE_LIMIT:
                self._partition_of.clear()
            partition = partitions[partition_of(key, len(partitions))]
            self._partition_of[cache_key] = partition
        return partition

    async def send_many(self, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Send every (key, value) and wait until the broker acknowledged all of them."""
        count, pending = await self.start_many(topic, items)
        if pending:
            await asyncio.gather(*pending)
        return count

    async def start_many(
        self, topic: str, items: Iterable[tuple[bytes | None, bytes]]
    ) -> tuple[int, list[asyncio.Future[Any]]]:
        """Hand every (key, value) to the producer, in order per partition; returns how many, and
        the futures that complete when the broker has acknowledged them."""
        producer = self.producer
        partitions = await self._partitions(topic)
        batches: dict[int, Any] = {}
        pending = []
        count = 0
        for index, (key, value) in enumerate(items):
            partition = self._partition(partitions, key, index)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                # Full: ship it and start the next one for this partition.
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a message of {len(value)} bytes exceeds the producer's batch size")
            count += 1
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        return count, pending

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        await (await self.producer.send(topic, value, key=key, partition=partition))

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
