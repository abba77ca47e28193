"""``plugwatch runtime-sim``: plays the plugin runtime for tests and the demo.

It consumes ``plugin.suspend.command`` and answers each command on ``plugin.suspend.ack`` after a
configurable delay: ``suspend`` (wait mode: drain in-flight requests) with ``drained``,
``force_suspend`` with ``forced``, ``resume`` and ``lock`` with ``drained`` -- or ``failed`` with a
configurable probability per action, or not at all for the actions told to stay silent (to play
a runtime that never finishes draining). ``in_flight`` is what a draining instance still held.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger(__name__)

OK_STATUS = {"suspend": "drained", "force_suspend": "forced", "resume": "drained", "lock": "drained"}


@dataclass(frozen=True)
class SimBehaviour:
    delay_ms: int = 50
    failure_rates: dict[str, float] = field(default_factory=dict)  # action -> probability of "failed"
    silent: frozenset[str] = frozenset()  # actions never acknowledged
    instance_id: str = "runtime-0"


def answer(command: dict[str, Any], behaviour: SimBehaviour, rand: Callable[[], float], now_ms: int) -> dict[str, Any] | None:
    """The ack the simulated runtime sends for ``command``; None when it stays silent (pure)."""
    action = command.get("action")
    if action not in OK_STATUS or action in behaviour.silent:
        return None
    failed = rand() < behaviour.failure_rates.get(action, 0.0)
    return {
        "command_id": command.get("command_id"), "plugin_id": command.get("plugin_id"),
        "tenant_id": command.get("tenant_id"), "instance_id": behaviour.instance_id,
        "status": "failed" if failed else OK_STATUS[action],
        "in_flight": 0 if action != "suspend" or failed else int(rand() * 5), "ts": now_ms,
    }


async def run_sim(bootstrap_servers: str, command_topic: str, ack_topic: str, behaviour: SimBehaviour, *,
                  group_id: str = "plugwatch-runtime-sim", seed: int | None = None,
                  stop: asyncio.Event | None = None, on_ack: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Answer commands until ``stop`` is set (or forever)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    rand = random.Random(seed).random
    consumer = AIOKafkaConsumer(command_topic, bootstrap_servers=bootstrap_servers, group_id=group_id,
                                auto_offset_reset="earliest", enable_auto_commit=True, fetch_max_wait_ms=50)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    stop = stop or asyncio.Event()
    pending: set[asyncio.Task[None]] = set()

    async def reply(command: dict[str, Any], key: bytes | None) -> None:
        await asyncio.sleep(behaviour.delay_ms / 1000)
        ack = answer(command, behaviour, rand, int(time.time() * 1000))
        if ack is None:
            log.info("runtime-sim: %s %s left unanswered", command.get("action"), command.get("command_id"))
            return
        await producer.send_and_wait(ack_topic, orjson.dumps(ack), key=key)
        log.info("runtime-sim: %s %s -> %s", command.get("action"), command.get("command_id"), ack["status"])
        if on_ack is not None:
            on_ack(ack)

    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        command = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(command, dict):
                        task = asyncio.ensure_future(reply(command, record.key))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
    finally:
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
