"""Diagnostic reports (DESIGN §6 steps 1-3): the service that builds and writes reports (alerts
reach it through ``plugwatch.agents.alert_feed``).

An alert on ``plugin.debug.alert`` (keyed ``tenant_id/plugin_id``; co-partitioned with the masked
topics, so the worker that owns the alert owns the plugin's window) waits until the plugin's
telemetry has been consumed past the alert's time or ``grace_ms`` has passed, then its report is
built from the window over the look-back, in corrected time. Where the window cannot cover the
range (restart, rebalance, eviction, look-back longer than the window) the rest is read from
ClickHouse; when that fails too the report is still written, marked incomplete, with a signed
download link for the missing telemetry. Telemetry of the window arriving later makes a new revision.

Each revision goes to ``plugin.debug.report`` (awaited: that is "written" for ``generated_ms``),
ClickHouse ``debug_reports`` and a memory cache behind ``GET /internal/debug/reports/{id}``. The
alert is acknowledged once its first revision is on the topic and in ClickHouse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from plugwatch import metrics
from plugwatch.aio import cancel_and_wait
from plugwatch.masking import MaskingEngine
from plugwatch.reports.builder import build_report, report_window
from plugwatch.reports.exports import ExportSigner, ExportSpec
from plugwatch.reports.model import Alert, Coverage, Links, ReportInput, Telemetry, parse_alert
from plugwatch.reports.owners import Owners
from plugwatch.reports.schedule import Pending, ReportScheduler
from plugwatch.reports.template import ReportTemplate, load_template
from plugwatch.settings import Settings
from plugwatch.sinks.audit import AuditLog
from plugwatch.sinks.clickhouse import ClickHouse
from plugwatch.sinks.retry import retry_forever
from plugwatch.sinks.topics import TopicSink
from plugwatch.streams.records import RecordError
from plugwatch.tables.keeper import SIGNALS
from plugwatch.tables.skew import source_of
from plugwatch.tables.tail import MaskedTail

log = logging.getLogger(__name__)

_TIME_FIELD = {"logs": "ts", "traces": "start_ts", "metrics": "ts"}


def report_id_for(alert: Alert) -> str:
    """Stable per alert, so a redelivered alert rewrites the same report instead of adding one."""
    digest = hashlib.sha256(f"{alert.tenant_id}/{alert.plugin_id}/{alert.alert_id}".encode()).hexdigest()
    return f"RPT-{digest[:20]}"


class ReportService:
    def __init__(
        self,
        settings: Settings,
        *,
        masker: MaskingEngine,
        tail: MaskedTail,
        clickhouse: ClickHouse,
        topics: TopicSink,
        audit: AuditLog,
    ):
        self.settings = settings
        self.masker = masker
        self.tail = tail
        self.clickhouse = clickhouse
        self.topics = topics
        self.audit = audit
        config = settings.reports
        self.template: ReportTemplate = load_template(settings.report_template_path)
        self.owners = Owners.from_file(settings.owners_path)
        self.signer = ExportSigner(config.export_key.get_secret_value().encode(), clock=self.now_ms)
        self.scheduler = ReportScheduler(
            grace_ms=config.grace_ms, horizon_ms=int(config.revision_horizon_s * 1000),
            max_open=config.max_open, clock=self.now_ms,
            min_interval_ms=int(config.revision_min_interval_s * 1000),
            max_interval_ms=int(config.revision_max_interval_s * 1000),
            settle_ms=int(config.revision_settle_s * 1000),
        )
        self.cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._first_written: dict[str, asyncio.Future[None]] = {}
        self._builds: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        # Called with every written revision (alert lifecycle, ticket outbox); retried until done.
        self.on_written: list[tuple[str, Callable[[dict[str, Any]], Awaitable[Any]]]] = []

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    # Lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        await cancel_and_wait(task)
        for build in list(self._builds):
            await cancel_and_wait(build)

    # Alerts in ---------------------------------------------------------------------------------

    def submit(self, alert: Alert) -> asyncio.Future[None]:
        """Schedule an alert's report; the future completes when its first revision is written."""
        report_id = report_id_for(alert)
        future = self._first_written.get(report_id)
        if future is None or future.done():
            future = self._first_written[report_id] = asyncio.get_running_loop().create_future()
        self.scheduler.add(alert, report_id, report_window(alert, self.template))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        check_every = self.settings.reports.revision_check_s
        next_check = time.monotonic() + check_every
        while True:
            for pending in self.scheduler.due(self._telemetry_in):
                self._spawn(self._first_revision(pending.alert, pending.report_id, pending.window, pending.consumed_at))
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + check_every
                self._check_revisions()
            # Woken by a new alert; otherwise every 10 ms, to see watermarks pass alert times.
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), 0.01 if self.scheduler.pending else check_every)
            except asyncio.TimeoutError:
                pass

    def _telemetry_in(self, pending: Pending) -> bool:
        """The plugin's telemetry is consumed past the alert: its newest corrected time reached the
        alert's, or the window applied everything ingest had written when the alert arrived."""
        key = pending.alert.key
        newest = self.tail.watermark(key)
        return (newest is not None and newest >= pending.alert.ts) or self.tail.caught_up(key, pending.consumed_at)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    def _check_revisions(self) -> None:
        for report in self.scheduler.revisions_due(self.tail.count):
            self._spawn(self._next_revision(report))

    async def _first_revision(self, alert: Alert, report_id: str, window: tuple[int, int], consumed_at: int) -> None:
        future = self._first_written.get(report_id)
        try:
            report, entries = await self.build(alert, report_id, window, consumed_at, 1, trigger="alert")
            await self.write(report, trigger="alert")
        except Exception as exc:
            metrics.DEBUG_REPORT_FAILURES.inc()
            log.exception("report %s for alert of %s failed", report_id, alert.key)
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        self.scheduler.built(report_id, alert, window, consumed_at, 1, entries)
        if future is not None and not future.done():
            future.set_result(None)
        self._first_written.pop(report_id, None)

    async def _next_revision(self, open_report: Any) -> None:
        revision = open_report.revision + 1
        try:
            report, entries = await self.build(open_report.alert, open_report.report_id, open_report.window,
                                               open_report.consumed_at, revision, trigger="late_data")
            if entries <= open_report.entries:  # e.g. as many evicted as arrived: nothing to add
                self.scheduler.unchanged(open_report.report_id, entries)
                return
            await self.write(report, trigger="late_data")
        except Exception:
            metrics.DEBUG_REPORT_FAILURES.inc()
            log.exception("revision %d of report %s failed", revision, open_report.report_id)
            self.scheduler.unchanged(open_report.report_id)
            return
        self.scheduler.built(open_report.report_id, open_report.alert, open_report.window,
                             open_report.consumed_at, revision, entries)

    # Building ----------------------------------------------------------------------------------

    async def build(
        self, alert: Alert, report_id: str, window: tuple[int, int], consumed_at: int, revision: int,
        *, trigger: str, actor: str = "plugwatch",
    ) -> tuple[dict[str, Any], int]:
        """The report (masked), and how many records the window held inside ``window`` for it."""
        held = self.tail.count(alert.key, *window)
        telemetry, coverage, skew, missing = await self.collect(alert, window)
        links = Links(report_url=f"{self.settings.public_url}/internal/debug/reports/{report_id}.html")
        if not coverage.complete:
            links = await self._export_link(alert, report_id, missing, links, actor)
        report = build_report(
            ReportInput(
                alert=alert, report_id=report_id, revision=revision, window_from=window[0], window_to=window[1],
                telemetry=telemetry, skew=skew, generated_at=self.now_ms(), generated_ms=None,
                owner=self.owners.owner_of(alert.tenant_id, alert.plugin_id), coverage=coverage,
            ),
            self.template,
        )
        # Verified again as a whole (the telemetry was masked at ingest); links are ours and carry
        # a signature the secret-parameter rule would take for a credential, so they go on after.
        masked, _ = self.masker.mask(report)
        masked["links"] = links.as_dict()
        masked["trigger"] = trigger
        masked["generated_ms"] = max(0, self.now_ms() - consumed_at)
        return masked, held

    async def collect(
        self, alert: Alert, window: tuple[int, int]
    ) -> tuple[list[Telemetry], Coverage, list[dict[str, Any]], tuple[int, int] | None]:
        """The plugin's telemetry over the window: from memory, the rest from ClickHouse."""
        key = alert.key
        lo, hi = window
        piece = self.tail.slice(key, lo, hi)
        telemetry = [Telemetry(e.signal, e.corrected_ts, e.raw_ts, e.source, e.data()) for e in piece.entries]
        estimator = self.tail.skew.get(key)
        skew = estimator.table() if estimator is not None else []
        known = sorted({row["source"] for row in skew} | ({alert.instance_id} if alert.instance_id else set()))
        if piece.complete:
            return telemetry, Coverage(known_sources=tuple(known)), skew, None
        gap = (lo, hi if piece.complete_from is None else max(lo, min(hi, piece.complete_from - 1)))
        notes = [piece.reason or "the window does not hold all of the look-back"]
        try:
            found = await self._from_clickhouse(alert, gap, estimator, skew)
        except Exception as exc:
            covered = 0 if piece.complete_from is None else max(0, hi - max(lo, piece.complete_from))
            notes.append("reading the rest from ClickHouse failed: "
                         + self.masker.mask_text(f"{type(exc).__name__}: {exc}")[:500])
            coverage = Coverage(coverage=round(covered / max(1, hi - lo), 4), fallback_used=False, complete=False,
                                notes=tuple(notes), known_sources=tuple(known))
            return telemetry, coverage, skew, gap
        held = {t.record.get("event_id") for t in telemetry}
        added = [t for t in found if t.record.get("event_id") not in held]
        notes.append(f"read {len(added)} records of [{gap[0]}, {gap[1]}] from ClickHouse")
        merged = sorted(telemetry + added, key=lambda t: t.corrected_ts)
        return merged, Coverage(fallback_used=True, notes=tuple(notes), known_sources=tuple(known)), skew, None

    async def _from_clickhouse(
        self, alert: Alert, gap: tuple[int, int], estimator: Any, skew: list[dict[str, Any]]
    ) -> list[Telemetry]:
        """Records whose corrected time is in ``gap``: ClickHouse holds raw times, so the range is
        widened by the largest known offset and every record corrected as the window would."""
        widen = max((abs(int(row["offset_ms"])) for row in skew), default=0) + 1000
        limit = self.settings.reports.clickhouse_rows
        out: list[Telemetry] = []
        for signal in SIGNALS:
            rows = await self.clickhouse.telemetry(signal, alert.tenant_id, alert.plugin_id,
                                                   gap[0] - widen, gap[1] + widen, limit)
            for raw in rows:
                record = orjson.loads(raw)
                raw_ts = record.get(_TIME_FIELD[signal])
                if not isinstance(raw_ts, int):
                    continue
                corrected = estimator.correct(signal, record) if estimator is not None else raw_ts
                if gap[0] <= corrected <= gap[1]:
                    out.append(Telemetry(signal, corrected, raw_ts, source_of(record), record))
        return out

    async def _export_link(
        self, alert: Alert, report_id: str, missing: tuple[int, int] | None, links: Links, actor: str
    ) -> Links:
        lo, hi = missing or report_window(alert, self.template)
        issued = await self.issue_export(
            ExportSpec(alert.tenant_id, alert.plugin_id, lo - 60_000, hi + 60_000, tuple(SIGNALS), actor,
                       f"report {report_id} incomplete", uuid.uuid4().hex[:12]),
        )
        return Links(report_url=links.report_url, export_url=issued["url"], expires_at=issued["expires_at"])

    async def issue_export(self, spec: ExportSpec, ttl_s: int | None = None) -> dict[str, Any]:
        """A signed link for ``spec`` expiring after ``ttl_s`` (at most ``export_ttl_s``); audited."""
        limit = self.settings.reports.export_ttl_s
        signed = self.signer.issue(spec, min(ttl_s or limit, limit))
        await self.audit.record(
            "export.create", spec.created_by, tenant_id=spec.tenant_id, plugin_id=spec.plugin_id,
            target=signed.export_id[:64], details={"from": spec.from_ms, "to": spec.to_ms, "signals": list(spec.signals),
                                                   "reason": spec.reason, "expires_at": signed.expires_at},
        )
        metrics.EXPORTS.labels("create", "ok").inc()
        return {"export_id": signed.export_id, "url": f"{self.settings.public_url}{signed.path}",
                "path": signed.path, "expires_at": signed.expires_at}

    # Writing -----------------------------------------------------------------------------------

    async def write(self, report: dict[str, Any], *, trigger: str) -> None:
        key = f"{report['tenant_id']}/{report['plugin_id']}".encode()
        value = orjson.dumps(report)
        topic = self.settings.topics.debug_report
        await retry_forever(f"report to {topic}", lambda: self.topics.send(topic, value, key=key))
        self._remember(report)
        metrics.DEBUG_REPORT_GENERATE_MS.observe(report["generated_ms"])
        metrics.DEBUG_REPORTS.labels(trigger, str(report["completeness"].get("complete", True)).lower()).inc()
        log.info("report %s revision %d for %s written in %d ms (%s)", report["report_id"], report["revision"],
                 report["plugin_id"], report["generated_ms"], "complete" if report["completeness"].get("complete") else "incomplete")
        # ClickHouse behind the topic: an outage there delays the alert's acknowledgement, not the report.
        await retry_forever("report to ClickHouse", lambda: self.clickhouse.insert_report(report))
        for what, hook in self.on_written:
            await retry_forever(what, lambda: hook(report))

    def _remember(self, report: dict[str, Any]) -> None:
        report_id = report["report_id"]
        known = self.cache.get(report_id)
        if known is None or known["revision"] <= report["revision"]:
            self.cache[report_id] = report
            self.cache.move_to_end(report_id)
        while len(self.cache) > self.settings.reports.cached:
            self.cache.popitem(last=False)

    async def get(self, report_id: str) -> dict[str, Any] | None:
        report = self.cache.get(report_id)
        if report is None:
            report = await self.clickhouse.latest_report(report_id)
        return report

    async def report_now(self, alert: Alert, actor: str) -> dict[str, Any]:
        """``POST /internal/debug/report``: the same builder, now, without waiting for late data."""
        consumed_at = self.now_ms()
        report_id = report_id_for(alert)
        window = report_window(alert, self.template)
        known = self.cache.get(report_id)
        revision = known["revision"] + 1 if known else 1
        report, entries = await self.build(alert, report_id, window, consumed_at, revision, trigger="api", actor=actor)
        await self.write(report, trigger="api")
        self.scheduler.built(report_id, alert, window, consumed_at, revision, entries)
        return report


# The agent ---------------------------------------------------------------------------------------


def parse_alert_message(masker: MaskingEngine, raw: bytes | None) -> Alert:
    """Alert bytes -> a masked, validated ``Alert``; ``RecordError`` says why not."""
    if raw is None:
        raise RecordError("empty", "message has no value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RecordError("not_json", "an alert must be a JSON object") from None
    masked, _ = masker.mask(data)
    return parse_alert(masked)


def chain_id(settings: Settings) -> str:
    return f"{settings.app_id}.{os.uname().nodename}.{settings.web_port}"
