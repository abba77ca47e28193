"""Alert lifecycles (DESIGN §5: alert_id -> status, fingerprint, ticket) kept in ClickHouse ``debug_alerts``.

Each change reads the newest version, applies a pure ``plugwatch.regression.alerts`` event and
writes version + 1, one change at a time per alert in this worker. Reads go to ClickHouse every
time: the alert's report, its ticket op and its fix may be handled by different workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from plugwatch.regression.alerts import AlertLifecycle, AlertTransitionError, apply
from plugwatch.sinks.clickhouse import ClickHouse

log = logging.getLogger(__name__)


class AlertStore:
    def __init__(self, clickhouse: ClickHouse, clock_ms: Callable[[], int]):
        self.clickhouse = clickhouse
        self.clock_ms = clock_ms
        self._locks = [asyncio.Lock() for _ in range(64)]  # striped: one change at a time per alert

    async def get(self, alert_id: str) -> AlertLifecycle | None:
        found = await self.clickhouse.alert(alert_id)
        return AlertLifecycle.from_dict(found[0]) if found else None

    async def change(
        self, alert_id: str, change: Callable[[AlertLifecycle | None], AlertLifecycle | None]
    ) -> AlertLifecycle | None:
        """Apply ``change`` to the newest lifecycle and save the result when it differs."""
        async with self._locks[hash(alert_id) % len(self._locks)]:
            found = await self.clickhouse.alert(alert_id)
            current = AlertLifecycle.from_dict(found[0]) if found else None
            new = change(current)
            if new is not None and new != current:
                await self.clickhouse.save_alert(new.as_dict(), (found[1] if found else 0) + 1)
            return new

    async def reported(self, report: dict[str, Any]) -> AlertLifecycle | None:
        """A report revision of the alert was written."""
        now = self.clock_ms()

        def change(current: AlertLifecycle | None) -> AlertLifecycle:
            lifecycle = current or AlertLifecycle.opened(
                report["alert_id"], report["tenant_id"], report["plugin_id"], now, report.get("fingerprint"), "plugwatch")
            lifecycle = replace(lifecycle, fingerprint=report.get("fingerprint") or lifecycle.fingerprint)
            try:
                return apply(lifecycle, "reported", now, by="plugwatch", report_id=report["report_id"])
            except AlertTransitionError:  # e.g. a late revision while a fix is tested: keep the status
                return replace(lifecycle, report_id=report["report_id"])

        return await self.change(report["alert_id"], change)

    async def ticketed(self, alert_id: str, ticket_id: str, ticket_url: str | None) -> AlertLifecycle | None:
        now = self.clock_ms()

        def change(current: AlertLifecycle | None) -> AlertLifecycle | None:
            if current is None:
                return None
            try:
                return apply(current, "ticketed", now, by="plugwatch", ticket_id=ticket_id, ticket_url=ticket_url)
            except AlertTransitionError:  # the fix came first: the ticket is still the alert's
                return replace(current, ticket_id=ticket_id, ticket_url=ticket_url)

        return await self.change(alert_id, change)
