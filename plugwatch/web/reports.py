"""Report and export endpoints (DESIGN §6, §8).

- ``POST /internal/debug/report``: build a report now from an alert-shaped body (``alert_id`` and
  ``ts`` optional); same builder and outputs as the alert agent.
- ``GET /internal/debug/reports/{id}`` (JSON) and ``GET /internal/debug/reports/{id}.html`` (page).
- ``POST /internal/debug/logs/export``: a signed, expiring download link for a plugin's masked
  telemetry over a time range; ``GET /internal/debug/exports/{export_id}?expires=…&sig=…`` serves it
  as JSON lines. Tampered or expired links are refused; every export, download and refusal is audited.

Reports and exports are visible to the plugin's tenant and owners and to the security and auditor roles.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response

from plugwatch import metrics
from plugwatch.reports.exports import ExportRefused, ExportSpec
from plugwatch.reports.html import render_report_html
from plugwatch.reports.model import parse_alert
from plugwatch.streams.records import RecordError
from plugwatch.tables.keeper import SIGNALS
from plugwatch.web.auth import AuthError, Principal, may_read_plugin
from plugwatch.web.views import READ_ROLES, PlugwatchView

if TYPE_CHECKING:
    from plugwatch.agents.reports import ReportService

MAX_EXPORT_SPAN_MS = 7 * 86_400_000


class ReportView(PlugwatchView):
    @property
    def reports(self) -> ReportService:
        return self.app.services.reports

    def check_plugin(self, principal: Principal, tenant_id: str, plugin_id: str) -> None:
        owners = self.reports.owners.principals_of(tenant_id, plugin_id)
        if not may_read_plugin(principal, tenant_id, owners):
            raise AuthError(403, "forbidden", "reports of this plugin are for its tenant, its owners, security and auditors")



class ReportNow(ReportView):
    async def post(self, request: Request) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            body = await self.json_object(request)
            body.setdefault("alert_id", f"API-{uuid.uuid4().hex[:16]}")
            body.setdefault("ts", int(time.time() * 1000))
            body.setdefault("kind", "manual")
            body.setdefault("summary", f"report requested by {principal.name}")
            masked, _ = self.app.services.masker.mask(body)
            alert = parse_alert(masked)
            self.check_plugin(principal, alert.tenant_id, alert.plugin_id)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except (ValueError, RecordError) as exc:
            return self.fail(400, "bad_request", str(exc))
        report = await self.reports.report_now(alert, principal.name)
        return self.reply(report, status=201)


class ReportById(ReportView):
    async def get(self, request: Request, report_id: str) -> Response:
        as_html = report_id.endswith(".html")
        report_id = report_id.removesuffix(".html").removesuffix(".json")
        try:
            principal = self.principal(request, *READ_ROLES)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        try:
            report = await self.reports.get(report_id)
        except Exception as exc:
            masked = self.app.services.masker.mask_text(str(exc))[:500]
            return self.fail(503, "unavailable", f"report {report_id} not in memory and ClickHouse failed: {masked}")
        if report is None:
            return self.fail(404, "not_found", f"no report {report_id}")
        try:
            self.check_plugin(principal, report["tenant_id"], report["plugin_id"])
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        if as_html:
            page = render_report_html(report, sections=list(self.reports.template.sections))
            return self.html(page)
        return self.reply(report)


class ExportCreate(ReportView):
    """POST {"tenant_id", "plugin_id", "from", "to"[, "signals"][, "reason"][, "ttl_s"]}
    -> 201 {export_id, url, path, expires_at}; ``ttl_s`` at most ``reports.export_ttl_s``."""

    async def post(self, request: Request) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            body = await self.json_object(request)
            spec = _export_spec(body, principal.name)
            ttl_s = body.get("ttl_s")
            if ttl_s is not None and (not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or ttl_s < 1):
                raise ValueError("ttl_s: whole seconds, at least 1")
            self.check_plugin(principal, spec.tenant_id, spec.plugin_id)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except ValueError as exc:
            return self.fail(400, "bad_request", str(exc))
        issued = await self.reports.issue_export(spec, ttl_s)
        return self.reply(issued, status=201)


def _export_spec(body: dict[str, Any], actor: str) -> ExportSpec:
    tenant_id, plugin_id = body.get("tenant_id"), body.get("plugin_id")
    if not isinstance(tenant_id, str) or not tenant_id or not isinstance(plugin_id, str) or not plugin_id:
        raise ValueError("tenant_id and plugin_id are required")
    from_ms, to_ms = body.get("from"), body.get("to")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (from_ms, to_ms)) or from_ms > to_ms:
        raise ValueError("from and to are epoch milliseconds, from <= to")
    if to_ms - from_ms > MAX_EXPORT_SPAN_MS:
        raise ValueError("an export covers at most 7 days")
    signals = body.get("signals") or list(SIGNALS)
    if not isinstance(signals, list) or not signals or any(s not in SIGNALS for s in signals):
        raise ValueError(f"signals: a list of {', '.join(SIGNALS)}")
    reason = body.get("reason") or "manual"
    if not isinstance(reason, str):
        raise ValueError("reason must be text")
    return ExportSpec(tenant_id, plugin_id, from_ms, to_ms, tuple(dict.fromkeys(signals)), actor, reason[:200],
                      uuid.uuid4().hex[:12])


class ExportDownload(ReportView):
    async def get(self, request: Request, export_id: str) -> Response:
        reports = self.reports
        try:
            principal = self.principal(request, *READ_ROLES)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        query = request.query
        try:
            spec = reports.signer.verify(export_id, query.get("expires", ""), query.get("sig", ""))
        except ExportRefused as exc:
            metrics.EXPORTS.labels("download", exc.reason).inc()
            await reports.audit.record("export.refused", principal.name, target=export_id[:64], outcome="refused",
                                       details={"reason": exc.reason})
            status = 410 if exc.reason == "expired" else 403
            return self.fail(status, exc.reason, f"export link refused: {exc.reason}")
        try:
            self.check_plugin(principal, spec.tenant_id, spec.plugin_id)
        except AuthError as exc:
            await reports.audit.record("export.refused", principal.name, tenant_id=spec.tenant_id,
                                       plugin_id=spec.plugin_id, target=export_id[:64], outcome="refused",
                                       details={"reason": "forbidden"})
            return self.fail(exc.status, exc.error, exc.message)
        lines: list[bytes] = []
        try:
            for signal in spec.signals:
                rows = await reports.clickhouse.telemetry(
                    signal, spec.tenant_id, spec.plugin_id, spec.from_ms, spec.to_ms, reports.settings.reports.clickhouse_rows
                )
                for raw in rows:
                    record, _ = reports.masker.mask(orjson.loads(raw))  # masked at ingest; verified again
                    lines.append(orjson.dumps({"signal": signal, "record": record}))
        except Exception as exc:
            await reports.audit.record("export.download", principal.name, tenant_id=spec.tenant_id,
                                       plugin_id=spec.plugin_id, target=export_id[:64], outcome="failed",
                                       details={"error": type(exc).__name__})
            metrics.EXPORTS.labels("download", "failed").inc()
            return self.fail(503, "unavailable", "ClickHouse could not be read; try the link again later")
        await reports.audit.record("export.download", principal.name, tenant_id=spec.tenant_id,
                                   plugin_id=spec.plugin_id, target=export_id[:64],
                                   details={"records": len(lines), "from": spec.from_ms, "to": spec.to_ms})
        metrics.EXPORTS.labels("download", "ok").inc()
        filename = f"{spec.tenant_id}-{spec.plugin_id}-{spec.from_ms}-{spec.to_ms}.jsonl"
        return self.bytes(b"\n".join(lines) + (b"\n" if lines else b""), content_type="application/x-ndjson",
                          headers={"Content-Disposition": f'attachment; filename="{_safe_name(filename)}"'})


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200]


def register_report_views(app: Any) -> None:
    app.page("/internal/debug/report")(ReportNow)
    app.page("/internal/debug/reports/{report_id}")(ReportById)
    app.page("/internal/debug/logs/export")(ExportCreate)
    app.page("/internal/debug/exports/{export_id}")(ExportDownload)
