"""What the service's plain aiokafka readers (no Faust) do alike: fetch, riding out broker errors,
and stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from plugwatch.aio import cancel_and_wait

log = logging.getLogger(__name__)


async def fetch(consumer: AIOKafkaConsumer, what: str, **options: Any) -> dict[Any, list[Any]]:
    """``consumer.getmany(**options)``; while the broker fails, said in the log and tried again each second."""
    while True:
        try:
            return await consumer.getmany(**options)
        except KafkaError as exc:
            log.warning("%s: fetch failed (%s); retrying", what, exc)
            await asyncio.sleep(1)


async def stop_reader(task: asyncio.Task[Any] | None, consumer: AIOKafkaConsumer | None) -> None:
    """The reading task first, then its consumer (a group member leaves its group: its partitions move at once)."""
    await cancel_and_wait(task)
    if consumer is not None:
        await consumer.stop()
