"""Audit records to ``plugin.audit`` and ClickHouse ``audit_log``, hash-chained (plugwatch.audit.chain).

Each worker writes its own chain (``<app_id>.<host>.<web port>``) and continues it after a restart
from the last row in ClickHouse. Records go to the topic one at a time under a lock (awaited: the
topic's order is the chain's order); ClickHouse rows are written behind, in order, retried until
they land, so an outage of ClickHouse -- the very case in which a report hands out an export
link -- does not hold up the caller. Details are masked first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from plugwatch import metrics
from plugwatch.aio import cancel_and_wait
from plugwatch.audit.chain import AuditChain
from plugwatch.masking import MaskingEngine
from plugwatch.sinks.clickhouse import ClickHouse
from plugwatch.sinks.retry import retry_forever
from plugwatch.sinks.topics import TopicSink

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(
        self,
        chain_id: str,
        *,
        topics: TopicSink,
        topic: str,
        clickhouse: ClickHouse,
        masker: MaskingEngine,
        clock: Callable[[], float] = time.time,
    ):
        self.chain_id = chain_id
        self.topics = topics
        self.topic = topic
        self.clickhouse = clickhouse
        self.masker = masker
        self.clock = clock
        self._chain: AuditChain | None = None
        self._lock = asyncio.Lock()
        self._rows: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def start(self) -> None:
        try:
            head = await self.clickhouse.audit_head(self.chain_id)
        except Exception as exc:
            # Continuing without the head would fork the chain; a new chain id keeps both verifiable.
            self.chain_id = f"{self.chain_id}#{self._now_ms()}"
            log.error("audit chain head not readable (%s); writing a new chain %s", exc, self.chain_id)
            head = None
        self._chain = AuditChain(self.chain_id, self._now_ms, head=head)
        self._writer = asyncio.ensure_future(self._write_rows())

    async def _write_rows(self) -> None:
        while True:
            rows = [await self._rows.get()]
            while not self._rows.empty():
                rows.append(self._rows.get_nowait())
            await retry_forever("audit rows to ClickHouse", lambda: self.clickhouse.insert_audit(rows))
            for _ in rows:
                self._rows.task_done()

    async def stop(self, timeout: float = 10.0) -> None:
        """Give queued rows a moment to land, then stop (the topic has every record already)."""
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._rows.join(), timeout)
            except asyncio.TimeoutError:
                log.error("audit rows not all written to ClickHouse at shutdown (every record is on %s)", self.topic)
        task, self._writer = self._writer, None
        await cancel_and_wait(task)

    async def record(
        self,
        action: str,
        actor: str,
        *,
        tenant_id: str = "",
        plugin_id: str = "",
        target: str = "",
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one record to the chain and write it to the topic and ClickHouse (retried)."""
        if self._chain is None:
            raise RuntimeError("AuditLog.start() was not awaited")
        masked_details, _ = self.masker.mask(details or {})
        async with self._lock:
            record = self._chain.append(
                action, self.masker.mask_text(actor), tenant_id=tenant_id, plugin_id=plugin_id,
                target=target, outcome=outcome, details=masked_details,
            ).as_dict()
            value = orjson.dumps(record)
            key = f"{tenant_id}/{plugin_id}".encode() if tenant_id else None
            await retry_forever(f"audit to {self.topic}", lambda: self.topics.send(self.topic, value, key=key))
            self._rows.put_nowait(record)
        metrics.AUDIT_RECORDS.labels(action).inc()
        return record
