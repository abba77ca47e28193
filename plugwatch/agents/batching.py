"""Batches beneath the agent API: events are iterated one by one (Faust's cheapest path), handed to
the agent's handler in batches, and acknowledged -- in order -- only once the handler's writes for
their batch are durable.

Faust's ``stream.take_events`` buffers through a passive drainer and a task per wait; this loop
keeps the per-event cost at that of a bare ``async for``. A batch is handled when it is full or
when its oldest event has waited ``within`` seconds; reading goes on while one batch is handled.
A handler may return an awaitable that
completes later (e.g. rows waiting in a larger ClickHouse insert): those events stay unacknowledged
until it completes, and at most ``max_pending`` such batches wait before consumption pauses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


Handler = Callable[[list[Any]], Awaitable[Awaitable[Any] | None]]


async def consume_in_batches(
    stream: Any, handle: Handler, max_size: int, within: float, max_pending: int = 64
) -> None:
    manual = stream.noack()
    buffer: list[Any] = []
    lock = asyncio.Lock()
    pending: asyncio.Queue[tuple[list[Any], Awaitable[Any] | None]] = asyncio.Queue(maxsize=max_pending)

    async def flush() -> None:
        async with lock:
            if not buffer:
                return
            batch = buffer[:]
            buffer.clear()
            durable = await handle(batch)
            await pending.put((batch, durable))  # blocks when too much is waiting: backpressure

    async def acknowledge() -> None:
        while True:
            batch, durable = await pending.get()
            if durable is not None:
                await durable
            for event in batch:
                await manual.ack(event)

    async def flush_when_idle() -> None:
        while True:
            await asyncio.sleep(within)
            if buffer and not lock.locked():
                await flush()

    helpers = [asyncio.ensure_future(acknowledge()), asyncio.ensure_future(flush_when_idle())]
    flushing: asyncio.Future[None] | None = None
    try:
        async for event in manual.events():
            buffer.append(event)
            if len(buffer) >= max_size:
                # Hand the full batch over and keep reading while it is written; wait only when
                # the next batch is full too (one batch in flight).
                if flushing is not None and not flushing.done():
                    if len(buffer) < 2 * max_size:
                        continue
                    await flushing
                if flushing is not None:
                    flushing.result()  # surface a failed flush
                flushing = asyncio.ensure_future(flush())
            for task in helpers:
                if task.done():  # a helper died: surface it instead of stalling silently
                    task.result()
                    raise RuntimeError("batch helper task ended unexpectedly")
    finally:
        for task in helpers + ([flushing] if flushing is not None else []):
            task.cancel()
