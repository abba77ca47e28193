"""The ordered consumer on the real broker: each partition in order, partitions side by side, and
commits after each record (``plugwatch.streams.ordered``)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from plugwatch.streams.ordered import OrderedConsumer
from plugwatch.streams.topics import ensure_topics


def test_a_waiting_partition_does_not_hold_up_another_and_each_stays_in_order(broker):
    topic = f"ordered-{uuid.uuid4().hex[:10]}"
    group = f"g-{uuid.uuid4().hex[:10]}"

    async def scenario() -> tuple[dict[int, list[bytes]], dict[int, int]]:
        await ensure_topics(broker.bootstrap_servers, [topic], 2)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        for i in range(3):
            for partition in (0, 1):
                await producer.send_and_wait(topic, f"p{partition}-{i}".encode(), partition=partition)
        await producer.stop()

        seen: dict[int, list[bytes]] = {0: [], 1: []}
        started: list[int] = []
        done = {0: asyncio.Event(), 1: asyncio.Event()}

        async def handle(record) -> None:
            started.append(record.partition)
            if len(started) == 1:
                # The first record handled waits until the other partition has had all of its
                # records handled: one partition after the other, this would never finish.
                await asyncio.wait_for(done[1 - record.partition].wait(), 20)
            seen[record.partition].append(record.value)
            if len(seen[record.partition]) == 3:
                done[record.partition].set()

        consumer = OrderedConsumer(broker.bootstrap_servers, topic, group, handle,
                                   session_timeout_s=6, heartbeat_interval_s=1, rebalance_timeout_s=6)
        await consumer.start()
        try:
            for _ in range(300):
                if len(seen[0]) == 3 and len(seen[1]) == 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            await consumer.stop()
        check = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False)
        await check.start()
        try:
            committed = {p: await check.committed(TopicPartition(topic, p)) for p in (0, 1)}
        finally:
            await check.stop()
        return seen, committed

    seen, committed = asyncio.run(scenario())
    assert seen == {0: [b"p0-0", b"p0-1", b"p0-2"], 1: [b"p1-0", b"p1-1", b"p1-2"]}
    assert committed == {0: 3, 1: 3}
