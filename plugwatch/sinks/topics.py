"""Downstream topics: one aiokafka producer, batched sends, awaited before the source offsets commit.

Keys go through aiokafka's default partitioner (murmur2, as the Java client), so everything keyed
``tenant_id/plugin_id`` lands on the same partition number in every topic of the same size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer


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

    async def send_many(self, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Send every (key, value) and wait until the broker acknowledged all of them."""
        send = self.producer.send
        pending = [await send(topic, value, key=key) for key, value in items]
        if pending:
            await asyncio.gather(*pending)
        return len(pending)

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        await (await self.producer.send(topic, value, key=key))

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
