"""The ticket sink (DESIGN §6 steps 4-5): ticket work goes through an outbox topic and lands in
the configured ticket system, one ticket per (tenant, plugin, error fingerprint).

Reports, regression comments and closes are *ops* on ``plugin.ticket.outbox`` (keyed
``tenant_id/plugin_id``, so one plugin's ops stay in order). ``TicketService.deliver`` applies one
op: the plugin's ticket record is read (ClickHouse ``tickets``, cached while this worker owns the
partition), ``plugwatch.tickets.model.on_report`` decides, the ticket system is called and the new
ticket record saved. A system that is down raises ``Retry``: the op stays in the outbox, nothing
behind it in the partition goes first, and ``debug_ticket_outbox_delay_seconds`` shows how long
the oldest waiting op has waited. Creates are idempotent (the system is asked for the ticket with
the op's idempotency key before one is made), counts are per distinct alert, and comment/close ops
are remembered by id, so a replay after a crash does not duplicate a ticket.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from plugwatch import metrics
from plugwatch.masking import MaskingEngine
from plugwatch.reports.owners import Owners
from plugwatch.sinks.clickhouse import ClickHouse
from plugwatch.streams.ordered import Retry
from plugwatch.tickets.adapters import TicketRejected, TicketSystem, TicketUnavailable
from plugwatch.tickets.model import (
    Ownership,
    Ticket,
    TicketContent,
    TicketRef,
    applied,
    content_as_dict,
    content_from_dict,
    on_report,
    render_content,
    with_generation,
)

log = logging.getLogger(__name__)

OP_KINDS = ("report", "comment", "close")


class LocalTickets:
    """The embedded default: the ``tickets`` table is the ticket system (``GET /api/tickets``)."""

    name = "local"

    def __init__(self, public_url: str):
        self.public_url = public_url

    async def find(self, content: TicketContent) -> TicketRef | None:
        return None  # the service's own record is the ticket: a retried create makes the same id

    async def create(self, content: TicketContent) -> TicketRef:
        ticket_id = "TKT-" + content.idempotency_key.removeprefix("pw-")[:16]
        return TicketRef("local", ticket_id, f"{self.public_url}/api/tickets/{ticket_id}")

    async def update(self, ref: TicketRef, content: TicketContent, *, occurrences: int, last_seen_ms: int) -> None:
        return None

    async def comment(self, ref: TicketRef, text: str) -> None:
        return None

    async def close(self, ref: TicketRef, comment: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class TicketService:
    def __init__(
        self,
        system: TicketSystem,
        clickhouse: ClickHouse,
        masker: MaskingEngine,
        owners: Owners,
        *,
        on_ticketed: Callable[[str, Ticket], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.system = system
        self.clickhouse = clickhouse
        self.masker = masker
        self.owners = owners
        self.on_ticketed = on_ticketed  # (alert_id, ticket) once a report's ticket exists
        self.clock = clock
        self.cache: dict[tuple[str, str, str], Ticket] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # Ops in ------------------------------------------------------------------------------------

    def report_op(self, report: dict[str, Any]) -> dict[str, Any]:
        """The outbox op for a written (masked) report revision."""
        tenant, plugin = report["tenant_id"], report["plugin_id"]
        entry = self.owners.lookup(tenant, plugin)
        ownership = Ownership(
            owner=report.get("owner") or (entry.owner if entry else None),
            team=entry.team if entry else None, contact=entry.contact if entry else None,
            assignee=entry.assignee_for(self.system.name) if entry else None,
        )
        content = render_content(report, ownership)
        content = replace(content, title=self.masker.mask_text(content.title), body=self.masker.mask_text(content.body))
        alert = report.get("alert") or {}
        return {
            "op_id": uuid.uuid4().hex, "op": "report", "enqueued_ms": self.now_ms(),
            "tenant_id": tenant, "plugin_id": plugin, "fingerprint": content.fingerprint,
            "alert_id": report["alert_id"], "alert_ts": alert.get("ts") or report.get("generated_at"),
            "report_id": report["report_id"], "revision": report.get("revision", 1),
            "content": content_as_dict(content),
        }

    def note_op(self, kind: str, *, tenant_id: str, plugin_id: str, fingerprint: str, alert_id: str, text: str,
                op_id: str | None = None) -> dict[str, Any]:
        """A comment or close op (``kind``) for the fingerprint's open ticket; ``text`` is masked here."""
        if kind not in ("comment", "close"):
            raise ValueError(f"unknown ticket op {kind!r}")
        return {"op_id": op_id or uuid.uuid4().hex, "op": kind, "enqueued_ms": self.now_ms(), "tenant_id": tenant_id,
                "plugin_id": plugin_id, "fingerprint": fingerprint, "alert_id": alert_id,
                "text": self.masker.mask_text(text)}

    # Delivery ----------------------------------------------------------------------------------

    async def deliver(self, op: dict[str, Any]) -> str:
        """Apply one op; returns what happened. ``Retry`` when the ticket system is unavailable,
        ``TicketRejected`` when it refused the request (the op goes to the dead-letter topic)."""
        kind = op.get("op")
        if kind not in OP_KINDS or not all(isinstance(op.get(k), str) for k in ("tenant_id", "plugin_id", "fingerprint")):
            raise ValueError(f"not a ticket op: {str(op)[:200]}")
        started = time.perf_counter()
        try:
            if kind == "report":
                outcome = await self._report(op)
            else:
                outcome = await self._note(op, closing=kind == "close")
        except TicketUnavailable as exc:
            metrics.TICKET_OPS.labels(kind, "unavailable").inc()
            raise Retry(f"ticket system {self.system.name} unavailable: {exc}") from exc
        except TicketRejected:
            metrics.TICKET_OPS.labels(kind, "rejected").inc()
            raise
        metrics.TICKET_OPS.labels(kind, outcome).inc()
        metrics.TICKET_DELIVERY_DELAY.observe(max(0.0, self.now_ms() - int(op.get("enqueued_ms") or 0)) / 1000)
        log.info("ticket op %s for %s/%s: %s in %.0f ms", kind, op["tenant_id"], op["plugin_id"], outcome,
                 (time.perf_counter() - started) * 1000)
        return outcome

    async def _report(self, op: dict[str, Any]) -> str:
        key = (op["tenant_id"], op["plugin_id"], op["fingerprint"])
        content = content_from_dict(op["content"])
        ticket = await self.load(key)
        step = on_report(ticket, content, system=self.system.name, alert_id=op["alert_id"], report_id=op["report_id"],
                         alert_ts=int(op.get("alert_ts") or self.now_ms()), now_ms=self.now_ms())
        new = step.ticket
        content = with_generation(content, new.generation)
        if step.kind == "create":
            ref = await self.system.find(content) or await self.system.create(content)
            new = replace(new, system=ref.system, external_id=ref.external_id, url=ref.url or "", status="open")
        elif step.kind in ("new_alert", "revision"):
            ref = _ref(new)
            await self.system.update(ref, content, occurrences=new.occurrences, last_seen_ms=new.last_seen_ms)
            if step.comment:
                await self.system.comment(ref, step.comment)
                await self.clickhouse.insert_ticket_comment(new.ticket_id, op["op_id"], self.now_ms(), "alert", step.comment)
        if step.kind != "replay":
            await self._save(key, new)
        if self.on_ticketed is not None:
            await self.on_ticketed(op["alert_id"], new)
        return step.kind

    async def _note(self, op: dict[str, Any], *, closing: bool) -> str:
        key = (op["tenant_id"], op["plugin_id"], op["fingerprint"])
        ticket = await self.load(key)
        if ticket is None or not ticket.external_id:
            log.warning("no ticket for %s/%s fingerprint %s: %s dropped", *key, op["op"])
            return "no_ticket"
        if op["op_id"] in ticket.op_ids or (closing and ticket.status == "closed"):
            return "replay"
        text = str(op.get("text") or "")
        ref = _ref(ticket)
        if closing:
            await self.system.close(ref, text)
        else:
            await self.system.comment(ref, text)
        await self.clickhouse.insert_ticket_comment(ticket.ticket_id, op["op_id"], self.now_ms(), op["op"], text)
        await self._save(key, applied(ticket, op["op_id"], self.now_ms(), closed=closing))
        return "closed" if closing else "commented"

    # The ticket records --------------------------------------------------------------------------

    async def load(self, key: tuple[str, str, str]) -> Ticket | None:
        ticket = self.cache.get(key)
        if ticket is None:
            data = await self.clickhouse.latest_ticket(*key)
            if data is not None:
                ticket = self.cache[key] = Ticket.from_dict(data)
        return ticket

    async def _save(self, key: tuple[str, str, str], ticket: Ticket) -> None:
        await self.clickhouse.save_ticket(ticket.as_dict())
        self.cache[key] = ticket

    def forget(self, partitions: set[int], partition_of: Callable[[str], int]) -> None:
        """Drop cached records of plugins whose outbox partitions moved to another worker."""
        for key in [k for k in self.cache if partition_of(f"{k[0]}/{k[1]}") in partitions]:
            del self.cache[key]


def _ref(ticket: Ticket) -> TicketRef:
    ref = ticket.ref
    if ref is None:
        raise ValueError(f"ticket {ticket.ticket_id} has no id in {ticket.system}")
    return ref


def encode_op(op: dict[str, Any]) -> tuple[bytes, bytes]:
    return f"{op['tenant_id']}/{op['plugin_id']}".encode(), orjson.dumps(op)
