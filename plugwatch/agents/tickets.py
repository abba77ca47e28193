"""Tickets and regression checks in a worker (DESIGN §6 steps 4-5).

- ``TicketDesk``: reports written by the report service become ops on ``plugin.ticket.outbox``;
  a consumer group member (``OrderedConsumer``) delivers them to the configured ticket system.
- ``FixDesk``: ``plugin.fix.submitted`` (and ``POST /internal/debug/alerts/{id}/fix``, which
  publishes there) runs the plugin's regression checks; success closes the ticket and the alert
  and emits ``plugin.debug.alert.resolved``, failure comments with the masked output tail.

Both consume with their own consumer groups and commit after each record, so a ticket system that
is down or a check that runs for a minute never holds up the Faust agents or a rebalance.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugwatch import metrics
from plugwatch.regression.alerts import AlertLifecycle, AlertTransitionError, apply
from plugwatch.regression.config import RegressionConfig
from plugwatch.regression.runner import RegressionResult, run_checks
from plugwatch.sinks.alerts import AlertStore
from plugwatch.sinks.retry import retry_forever
from plugwatch.streams.ordered import OrderedConsumer, Retry
from plugwatch.tickets.adapters import RetryPolicy, TicketRejected, TicketSystem, build_http_adapter
from plugwatch.tickets.model import Ticket
from plugwatch.tickets.service import LocalTickets, TicketService, encode_op

if TYPE_CHECKING:
    from plugwatch.app import Services

log = logging.getLogger(__name__)


def ticket_system(services: Services) -> TicketSystem:
    config = services.settings.tickets
    if config.system == "local":
        return LocalTickets(services.settings.public_url)
    policy = RetryPolicy(attempts=config.attempts, first_delay_s=config.first_delay_s,
                         max_delay_s=config.max_delay_s, timeout_s=config.timeout_s)
    return build_http_adapter(config.system, dict(config.options), policy)


class TicketDesk:
    def __init__(self, services: Services, alerts: AlertStore):
        self.services = services
        settings = services.settings
        self.topic = settings.topics.ticket_outbox
        self.system = ticket_system(services)
        self.service = TicketService(self.system, services.clickhouse, services.masker, services.reports.owners,
                                     on_ticketed=self._ticketed)
        self.alerts = alerts
        self.consumer = OrderedConsumer.for_worker(
            settings, self.topic, "tickets", self._handle, on_failure=services.deadletter_record,
            on_revoked=self._revoked, on_waiting=self._waiting, max_delay_s=settings.tickets.max_delay_s,
        )

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.system.aclose()

    async def enqueue(self, op: dict[str, Any]) -> None:
        key, value = encode_op(op)
        await retry_forever(f"ticket op to {self.topic}", lambda: self.services.topics.send(self.topic, value, key=key))

    async def report_written(self, report: dict[str, Any]) -> None:
        await self.enqueue(self.service.report_op(report))

    async def _handle(self, record: Any) -> None:
        async with transient_as_retry():
            await self._deliver(record)

    async def _deliver(self, record: Any) -> None:
        try:
            op = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            raise ValueError("a ticket op must be a JSON object") from exc
        if not isinstance(op, dict):
            raise ValueError("a ticket op must be a JSON object")
        await self.service.deliver(op)

    async def _ticketed(self, alert_id: str, ticket: Ticket) -> None:
        if ticket.external_id:
            await self.alerts.ticketed(alert_id, ticket.ticket_id, ticket.url or None)

    def _revoked(self, partitions: set[int]) -> None:
        self.service.forget(partitions, self.services.tail.partition_for)
        self.alerts.forget()

    @staticmethod
    def _waiting(record: Any | None) -> None:
        if record is None:
            metrics.TICKET_OUTBOX_DELAY.set(0)
            return
        try:
            enqueued = int(orjson.loads(record.value).get("enqueued_ms") or record.timestamp)
        except Exception:
            enqueued = record.timestamp
        metrics.TICKET_OUTBOX_DELAY.set(max(0.0, time.time() - enqueued / 1000))


class UnknownAlert(LookupError):
    pass


@asynccontextmanager
async def transient_as_retry() -> AsyncIterator[None]:
    """Bad input and refusals (``ValueError``, ``TicketRejected``, ``UnknownAlert``) are final and go
    to the dead-letter topic; anything else (ClickHouse or the broker unavailable, …) is retried."""
    try:
        yield
    except (Retry, ValueError, TicketRejected, UnknownAlert):
        raise
    except Exception as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from exc


class Fix(BaseModel):
    """``plugin.fix.submitted`` (DESIGN §3)."""

    model_config = ConfigDict(extra="allow")

    alert_id: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(min_length=1, max_length=200)
    plugin_id: str = Field(min_length=1, max_length=200)
    version: str | None = Field(None, max_length=100)
    commit: str | None = Field(None, max_length=100)
    submitted_by: str | None = Field(None, max_length=200)
    fix_id: str | None = Field(None, max_length=100)


class FixDesk:
    def __init__(self, services: Services, alerts: AlertStore, tickets: TicketDesk):
        self.services = services
        self.alerts = alerts
        self.tickets = tickets
        settings = services.settings
        self.topic = settings.topics.fix_submitted
        self.regression = RegressionConfig.from_file(settings.regression_path)
        self.finished = {"passed": 0, "failed": 0}
        self.consumer = OrderedConsumer.for_worker(settings, self.topic, "fixes", self._handle,
                                                   on_failure=services.deadletter_record)

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def submit(self, alert_id: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        """``POST /internal/debug/alerts/{id}/fix``: checked against the alert, then published."""
        lifecycle = await self.alerts.get(alert_id)
        if lifecycle is None:
            raise UnknownAlert(alert_id)
        fix = Fix.model_validate({**body, "alert_id": alert_id, "tenant_id": lifecycle.tenant_id,
                                  "plugin_id": lifecycle.plugin_id, "submitted_by": body.get("submitted_by") or actor,
                                  "fix_id": uuid.uuid4().hex[:16]})
        apply(lifecycle, "fix_submitted", 0, fix_id=fix.fix_id, version=fix.version, commit=fix.commit)  # 409 early
        masked, _ = self.services.masker.mask(fix.model_dump(exclude_none=True))
        await self.services.topics.send(self.topic, orjson.dumps(masked), key=f"{fix.tenant_id}/{fix.plugin_id}".encode())
        return {"alert_id": alert_id, "fix_id": fix.fix_id, "status": "accepted"}

    async def _handle(self, record: Any) -> None:
        async with transient_as_retry():
            await self._run(record)

    async def _run(self, record: Any) -> None:
        try:
            data = orjson.loads(record.value)
            masked, _ = self.services.masker.mask(data)
            fix = Fix.model_validate(masked)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"invalid fix submission: {str(exc)[:300]}") from None
        fix_id = fix.fix_id or f"{record.partition}-{record.offset}"
        now = int(time.time() * 1000)

        def start(current: AlertLifecycle | None) -> AlertLifecycle:
            if current is None:
                raise UnknownAlert(f"no alert {fix.alert_id} for this fix")
            if current.status == "regression_running" and current.fix and current.fix.fix_id == fix_id:
                return current  # replayed after a crash mid-run: run it again
            return apply(current, "fix_submitted", now, by=fix.submitted_by, fix_id=fix_id,
                         version=fix.version, commit=fix.commit)

        try:
            lifecycle = await self.alerts.change(fix.alert_id, start)
        except AlertTransitionError as exc:
            log.warning("fix %s not run: %s", fix_id, exc)
            return
        assert lifecycle is not None
        values = {"tenant_id": fix.tenant_id, "plugin_id": fix.plugin_id, "version": fix.version or "",
                  "commit": fix.commit or "", "alert_id": fix.alert_id}
        result = await run_checks(self.regression.checks_for(fix.tenant_id, fix.plugin_id), values,
                                  self.services.masker.mask_text,
                                  tail_bytes=self.services.settings.regression.output_tail_bytes, env=os.environ)
        await self._finish(fix, fix_id, lifecycle, result)

    async def _finish(self, fix: Fix, fix_id: str, lifecycle: AlertLifecycle, result: RegressionResult) -> None:
        verdict = "passed" if result.passed else "failed"
        summary = result.summary()
        what = f"fix {fix.version or fix_id}" + (f" (commit {fix.commit})" if fix.commit else "")
        fingerprint = lifecycle.fingerprint or ""
        if result.passed:
            text = f"Regression checks passed for {what}; closing.\n\n```\n{summary}\n```"
        else:
            tails = "\n\n".join(f"{c.name}:\n{c.output_tail[-1500:]}" for c in result.checks if not c.passed)
            text = f"Regression checks failed for {what}; the ticket stays open.\n\n```\n{summary}\n```\n\n```\n{tails}\n```"
        await self.tickets.enqueue(self.tickets.service.note_op(
            "close" if result.passed else "comment", tenant_id=fix.tenant_id, plugin_id=fix.plugin_id,
            fingerprint=fingerprint, alert_id=fix.alert_id, text=text, op_id=f"fix-{fix_id}"))
        now = int(time.time() * 1000)
        event = "regression_passed" if result.passed else "regression_failed"
        note = self.services.masker.mask_text(summary)[:2000]
        await self.alerts.change(fix.alert_id, lambda current: apply(current, event, now, by="plugwatch",
                                                                     fix_id=fix_id, note=note))
        if result.passed:
            resolved = {
                "alert_id": fix.alert_id, "tenant_id": fix.tenant_id, "plugin_id": fix.plugin_id,
                "fingerprint": fingerprint, "ticket_id": lifecycle.ticket_id, "ticket_url": lifecycle.ticket_url,
                "fix_id": fix_id, "version": fix.version, "commit": fix.commit, "submitted_by": fix.submitted_by,
                "resolved_at": now, "regression": result.as_dict(),
            }
            masked, _ = self.services.masker.mask(resolved)
            topic = self.services.settings.topics.alert_resolved
            await retry_forever(f"resolution to {topic}", lambda: self.services.topics.send(
                topic, orjson.dumps(masked), key=f"{fix.tenant_id}/{fix.plugin_id}".encode()))
        metrics.REGRESSION_RUNS.labels(verdict).inc()
        self.finished[verdict] += 1
        metrics.TICKET_AUTOCLOSE_RATE.set(self.finished["passed"] / sum(self.finished.values()))
        log.info("regression for alert %s of %s/%s %s (%s)", fix.alert_id, fix.tenant_id, fix.plugin_id, verdict, what)

