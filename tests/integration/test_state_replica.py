"""The suspensions' state replica on the real broker: a read that asks for "up to now" has what
another worker's writer wrote before it (``plugwatch.agents.suspension_log.StateReplica``)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from plugwatch.agents.suspension_log import StateReplica, plugin_key, state_message
from plugwatch.sinks.topics import partition_of
from plugwatch.streams.topics import ensure_topics


def test_reading_to_the_end_has_every_version_written_before_it(broker):
    topic = f"state-{uuid.uuid4().hex[:10]}"
    record = {"suspension_id": "SUS-1", "tenant_id": "acme", "plugin_id": "crm", "status": "requested"}

    async def scenario() -> tuple[list[int], list[int], bool]:
        await ensure_topics(broker.bootstrap_servers, [topic], 4)
        seen: list[int] = []
        replica = StateReplica(broker.bootstrap_servers, topic, lambda data, version: seen.append(version))
        assert not await replica.read_to_end(None, 5)  # not reading yet: nothing to promise
        await replica.start()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            partition = partition_of(plugin_key("acme", "crm"), 4)
            for version in range(1, 21):  # another worker's writer, one version after the other
                key, value = state_message({**record, "requests": version}, version)
                await producer.send_and_wait(topic, value, key=key, partition=partition)
            done = await replica.read_to_end({partition}, 30)
            at_once = list(seen)
            everything = await replica.read_to_end(None, 30)
        finally:
            await producer.stop()
            await replica.stop()
        return at_once, seen, done and everything

    at_once, seen, done = asyncio.run(scenario())
    assert done
    assert at_once == list(range(1, 21))
    assert seen == at_once
