"""Alert lifecycles (DESIGN §5: alert_id -> status, fingerprint, ticket) kept in ClickHouse ``debug_alerts``.

Each change reads the newest version, applies a pure ``plugwatch.regression.alerts`` event and
writes version + 1, one change at a time per alert in this worker. Reads go to ClickHouse: the
alert's report, its ticket op and its fix may be handled by different workers.

Except for repeats. Alerts come as storms of report revisions, each saying "reported" again (and its
ticket op "ticketed" again), and each of those read ClickHouse to find nothing to change. The store
remembers the last version of each alert it read or wrote: when that version already has the
revision's report id and fingerprint (or the ticket's id and url) past the status the event would
set, the event is a no-op whatever happened since -- statuses only move forward, and only a report
or ticket of the same alert changes those fields, which after a rebalance may be another worker's:
so the memory is dropped whenever this worker's partitions change (``forget``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from plugwatch.regression.alerts import OPEN, REPORTED, AlertLifecycle, AlertTransitionError, apply
from plugwatch.sinks.clickhouse import ClickHouse

log = logging.getLogger(__name__)


class AlertStore:
    def __init__(self, clickhouse: ClickHouse, clock_ms: Callable[[], int], *, remembered: int = 10_000):
        self.clickhouse = clickhouse
        self.clock_ms = clock_ms
        self._locks = [asyncio.Lock() for _ in range(64)]  # striped: one change at a time per alert
        self._seen: OrderedDict[str, AlertLifecycle] = OrderedDict()  # alert_id -> last version read or written
        self.remembered = remembered

    def _remember(self, lifecycle: AlertLifecycle | None) -> None:
        if lifecycle is None:
            return
        self._seen[lifecycle.alert_id] = lifecycle
        self._seen.move_to_end(lifecycle.alert_id)
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)

    def forget(self) -> None:
        """Partitions moved: another worker may have written what this one remembers."""
        self._seen.clear()

    async def _read(self, alert_id: str) -> tuple[AlertLifecycle | None, int]:
        """The newest saved lifecycle (remembered) and its version (0: none saved)."""
        found = await self.clickhouse.alert(alert_id)
        lifecycle = AlertLifecycle.from_dict(found[0]) if found else None
        self._remember(lifecycle)
        return lifecycle, found[1] if found else 0

    async def get(self, alert_id: str) -> AlertLifecycle | None:
        return (await self._read(alert_id))[0]

    async def change(
        self, alert_id: str, change: Callable[[AlertLifecycle | None], AlertLifecycle | None]
    ) -> AlertLifecycle | None:
        """Apply ``change`` to the newest lifecycle and save the result when it differs."""
        async with self._locks[hash(alert_id) % len(self._locks)]:
            current, version = await self._read(alert_id)
            new = change(current)
            if new is not None and new != current:
                await self.clickhouse.save_alert(new.as_dict(), version + 1)
                self._remember(new)
            return new

    async def reported(self, report: dict[str, Any]) -> AlertLifecycle | None:
        """A report revision of the alert was written."""
        known = self._seen.get(report["alert_id"])
        if (known is not None and known.status != OPEN and known.report_id == report["report_id"]
                and known.fingerprint == (report.get("fingerprint") or known.fingerprint)):
            return known  # a later revision: nothing to change
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
        known = self._seen.get(alert_id)
        if (known is not None and known.status not in (OPEN, REPORTED) and known.ticket_id == ticket_id
                and known.ticket_url == ticket_url):
            return known  # the ticket of a later revision: already recorded
        now = self.clock_ms()

        def change(current: AlertLifecycle | None) -> AlertLifecycle | None:
            if current is None:
                return None
            try:
                return apply(current, "ticketed", now, by="plugwatch", ticket_id=ticket_id, ticket_url=ticket_url)
            except AlertTransitionError:  # the fix came first: the ticket is still the alert's
                return replace(current, ticket_id=ticket_id, ticket_url=ticket_url)

        return await self.change(alert_id, change)
