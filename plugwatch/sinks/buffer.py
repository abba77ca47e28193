"""Batching separate from transport: rows collect here and go to ClickHouse in large inserts.

Each ClickHouse insert costs ~10 ms of fixed work (a new part per partition) on top of ~6 µs a row,
so per-row cost falls from ~16 µs at 1,000 rows an insert to ~6 µs at 20,000. ``add`` returns a
future that completes once the rows are inserted, so callers acknowledge their input only then.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from plugwatch.aio import cancel_and_wait
from plugwatch.sinks.retry import retry_forever

Insert = Callable[[str, Sequence[bytes]], Awaitable[None]]


class InsertBuffer:
    def __init__(self, insert: Insert, *, max_rows: int = 20_000, max_delay_s: float = 0.5):
        self._insert = insert
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._rows: dict[str, list[bytes]] = defaultdict(list)
        self._waiters: list[asyncio.Future[None]] = []
        self._count = 0
        self._first_at = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def add(self, table: str, values: Sequence[bytes]) -> asyncio.Future[None]:
        """Queue rows for ``table``; the future completes when they are inserted."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not values:
            done.set_result(None)
            return done
        if self._count == 0:
            self._first_at = time.monotonic()
            self._wakeup.set()
        self._rows[table].extend(values)
        self._count += len(values)
        self._waiters.append(done)
        if self._count >= self.max_rows:
            self._wakeup.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._count == 0:
                continue
            remaining = self.max_delay_s - (time.monotonic() - self._first_at)
            if self._count < self.max_rows and remaining > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
                self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters, self._count = defaultdict(list), [], 0
        for table, values in rows.items():
            await retry_forever(f"insert into {table}", lambda t=table, v=values: self._insert(t, v))
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def stop(self) -> None:
        """Insert what is queued, then stop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._count:
            await self.flush()
