"""When to build a report, and when to build it again (pure; the report service drives it).

Late data: an alert may arrive before the telemetry it refers to. A pending alert is due once the
plugin's telemetry has been consumed past the alert's time, or once ``grace_ms`` has passed since the
alert was consumed, whichever comes first. "Consumed past" is the caller's ``ready`` test; the
service passes when the plugin's newest corrected time reached the alert's, or when its window has
applied every record ingest wrote up to the alert's arrival (nothing is left in flight).

After its first revision a report stays open for ``horizon_ms``: when, in that time, the plugin's
window holds more records inside the report's window (corrected time) than the last revision was
built from, the late telemetry makes a new revision. Counting (two bisections a report) rather than
watching arrivals leaves no gap between taking a slice and starting to watch.

Revisions are spaced: the second comes ``min_interval_ms`` after the first at the earliest, each
next one twice as long after its predecessor, up to ``max_interval_ms``. And a revision waits until
its late telemetry has settled -- no new records in the report's window for ``settle_ms`` -- or
until ``max_interval_ms`` has passed since the last one. Telemetry that trickles in (a worker
catching up on a backlog) then makes a revision every ``max_interval_ms`` while it lasts and one
when it stops, not one per spacing step -- each rebuild reads and masks the whole window again, and
one built from settled data says more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from plugwatch.reports.model import Alert


@dataclass
class Pending:
    alert: Alert
    report_id: str
    window: tuple[int, int]
    consumed_at: int  # ms on the scheduler's clock
    due_at: int


@dataclass
class OpenReport:
    alert: Alert
    report_id: str
    window: tuple[int, int]
    consumed_at: int
    revision: int
    entries: int  # records the window held inside ``window`` when the last revision was built
    open_until: int
    building: bool = False
    next_at: int = 0  # no revision before this
    built_at: int = 0
    seen: int = 0  # records in the window at the last check
    grew_at: int = 0  # when ``seen`` last changed


class ReportScheduler:
    def __init__(self, *, grace_ms: int, horizon_ms: int, max_open: int, clock: Callable[[], int],
                 min_interval_ms: int = 0, max_interval_ms: int = 0, settle_ms: int = 0):
        self.grace_ms = grace_ms
        self.settle_ms = settle_ms
        self.horizon_ms = horizon_ms
        self.min_interval_ms = min_interval_ms
        self.max_interval_ms = max(max_interval_ms, min_interval_ms)
        self.max_open = max_open
        self.clock = clock
        self.pending: dict[str, Pending] = {}  # report_id -> waiting for its first build
        self.open: OrderedDict[str, OpenReport] = OrderedDict()  # report_id -> watching for late data

    # First revision ----------------------------------------------------------------------------

    def add(self, alert: Alert, report_id: str, window: tuple[int, int]) -> Pending:
        """An alert was consumed. A redelivered alert already waiting or open is not added twice."""
        existing = self.pending.get(report_id)
        if existing is not None:
            return existing
        now = self.clock()
        pending = Pending(alert, report_id, window, now, now + self.grace_ms)
        self.pending[report_id] = pending
        return pending

    def due(self, ready: Callable[[Pending], bool]) -> list[Pending]:
        """Pending alerts to build now: ``ready(pending)`` (telemetry consumed past the alert), or grace over."""
        now = self.clock()
        due = [p for p in self.pending.values() if now >= p.due_at or ready(p)]
        for pending in due:
            del self.pending[pending.report_id]
        return due

    def next_deadline(self) -> int | None:
        return min((p.due_at for p in self.pending.values()), default=None)

    # Later revisions ---------------------------------------------------------------------------

    def built(self, report_id: str, alert: Alert, window: tuple[int, int], consumed_at: int,
              revision: int, entries: int) -> OpenReport:
        """A revision was written; watch its window for late telemetry."""
        report = self.open.pop(report_id, None)
        if report is None:
            report = OpenReport(alert, report_id, window, consumed_at, revision, entries, 0)
        report.revision, report.entries, report.building = revision, entries, False
        now = self.clock()
        report.open_until = now + self.horizon_ms
        report.next_at = now + self.spacing(revision)
        report.built_at = report.grew_at = now
        report.seen = entries
        self.open[report_id] = report
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)  # the oldest stops being watched
        return report

    def spacing(self, revision: int) -> int:
        """The least time from ``revision`` to the next one."""
        if self.min_interval_ms <= 0:
            return 0
        return min(self.min_interval_ms << min(max(revision - 1, 0), 30), self.max_interval_ms)

    def revisions_due(self, held: Callable[[str, int, int], int]) -> list[OpenReport]:
        """Open reports whose window now holds more records than their last revision was built
        from (``held(key, from_ms, to_ms)``); closes the ones past their horizon."""
        now = self.clock()
        for report_id in [rid for rid, r in self.open.items() if r.open_until <= now and not r.building]:
            del self.open[report_id]
        due = []
        for report in self.open.values():
            if report.building:
                continue
            count = held(report.alert.key, *report.window)
            if count != report.seen:
                report.seen, report.grew_at = count, now
            if count <= report.entries or now < report.next_at:
                continue
            if now - report.grew_at >= self.settle_ms or now - report.built_at >= self.max_interval_ms:
                report.building = True
                due.append(report)
        return due

    def unchanged(self, report_id: str, entries: int | None = None) -> None:
        """A rebuild was not written (failed, or found nothing new): keep watching from ``entries``."""
        report = self.open.get(report_id)
        if report is not None:
            report.building = False
            if entries is not None:
                report.entries = entries
