"""HTTP endpoints on Faust's web server: health, metrics, and a read-only SQL view of ClickHouse.

Everything but ``/healthz`` and ``/metrics`` needs a bearer token (``config/security/access.yaml``).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View

from plugwatch import metrics
from plugwatch.web.auth import Access, AuthError, Principal

if TYPE_CHECKING:
    from plugwatch.app import PlugwatchApp

# Statements that only read. ClickHouse servers also get readonly=1; chDB has no users, so this
# check is what keeps the endpoint read-only there.
_READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)
SQL_MAX_ROWS = 10_000


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


class PlugwatchView(View):
    app: PlugwatchApp

    def reply(self, value: Any, status: int = 200) -> Response:
        return self.bytes(_dumps(value), content_type="application/json", status=status)

    def fail(self, status: int, error: str, message: str) -> Response:
        return self.reply({"error": error, "message": message}, status=status)

    @property
    def access(self) -> Access:
        access = getattr(self.app, "_plugwatch_access", None)
        if access is None:
            access = Access.from_file(self.app.settings.access_path)
            self.app._plugwatch_access = access  # type: ignore[attr-defined]
        return access

    def principal(self, request: Request, *roles: str) -> Principal:
        return self.access.require(request.headers.get("Authorization"), *roles)

    async def json_object(self, request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
        """The request's JSON object body (``{}`` for no body when ``empty_ok``); a 400 otherwise."""
        raw = await request.read()
        if empty_ok and not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise AuthError(400, "bad_request", "send a JSON object")
        return body


class Health(PlugwatchView):
    async def get(self, request: Request) -> Response:
        services = self.app.services
        broker_ok = await services.topics.broker_reachable()
        clickhouse_ok = await services.clickhouse.ping()
        ok = broker_ok and clickhouse_ok
        body = {
            "status": "ok" if ok else "degraded",
            "app_id": self.app.settings.app_id,
            "broker": {"ok": broker_ok, "url": services.masker.mask_text(self.app.settings.broker_url)},
            "clickhouse": {
                "ok": clickhouse_ok,
                "dsn": services.masker.mask_text(services.clickhouse.dsn),
                "engine": "chdb" if services.clickhouse.is_chdb else "server",
            },
            # The partitions whose plugins' windows this worker holds (and whose alerts it reports on).
            "windows": {"partitions": sorted(services.tail.owned)},
        }
        if services.suspensions is not None:  # until joined, requests wait in the ops topic for a writer
            body["suspensions"] = {"joined": services.suspensions.joined,
                                   "partitions": sorted(services.suspensions.owned)}
        return self.reply(body, status=200 if ok else 503)


class Metrics(PlugwatchView):
    async def get(self, request: Request) -> Response:
        return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")


class Sql(PlugwatchView):
    """POST {"query": "SELECT …", "parameters": {…}} -> {"columns": [...], "rows": [[...]]}, masked."""

    async def post(self, request: Request) -> Response:
        try:
            self.principal(request, "security", "ops", "auditor", "developer")
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        try:
            body = orjson.loads(await request.read())
            query = body["query"]
            parameters = body.get("parameters") or None
            if not isinstance(query, str) or (parameters is not None and not isinstance(parameters, dict)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return self.fail(400, "bad_request", 'send JSON {"query": "SELECT ...", "parameters": {...}}')
        if not _READ_ONLY.match(query) or ";" in query.strip().rstrip(";"):
            return self.fail(400, "read_only", "one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)")
        services = self.app.services
        try:
            columns, rows = await services.clickhouse.query(query, parameters, readonly=True)
        except Exception as exc:
            return self.fail(400, "query_failed", services.masker.mask_text(str(exc))[:2000])
        truncated = len(rows) > SQL_MAX_ROWS
        plain_rows = orjson.loads(_dumps(rows[:SQL_MAX_ROWS]))  # dates and decimals as JSON text
        masked_rows, _ = services.masker.mask(plain_rows)
        return self.reply({"columns": columns, "rows": masked_rows, "truncated": truncated})


READ_ROLES = ("security", "ops", "auditor", "developer", "tenant_admin")


def plugin_key_from(query: Any) -> str:
    """``?plugin=tenant/plugin``, or ``?plugin=<plugin_id>&tenant=<tenant_id>``."""
    plugin = (query.get("plugin") or "").strip()
    tenant = (query.get("tenant") or "").strip()
    if tenant and plugin and "/" not in plugin:
        return f"{tenant}/{plugin}"
    if plugin.count("/") == 1 and all(plugin.split("/")):
        return plugin
    raise ValueError("name the plugin as ?plugin=<tenant_id>/<plugin_id> (or ?plugin=<id>&tenant=<tenant_id>)")


class PluginDebugView(PlugwatchView):
    """Base for per-plugin debug views: token, role and the plugin's tenant checked."""

    def authorized_key(self, request: Request) -> str:
        principal = self.principal(request, *READ_ROLES)
        key = plugin_key_from(request.query)
        if not principal.may_see_tenant(key.split("/", 1)[0]):
            raise AuthError(403, "forbidden", "this token does not cover the plugin's tenant")
        return key

    async def get(self, request: Request) -> Response:
        try:
            key = self.authorized_key(request)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except ValueError as exc:
            return self.fail(400, "bad_request", str(exc))
        try:
            body = self.body(key, request.query)
        except ValueError as exc:
            return self.fail(400, "bad_request", str(exc))
        return self.reply(body)

    def body(self, key: str, query: Any) -> Any:
        raise NotImplementedError


class Skew(PluginDebugView):
    """GET /internal/debug/skew?plugin=tenant/plugin -> the plugin's clock-skew table."""

    def body(self, key: str, query: Any) -> Any:
        estimator = self.app.services.tail.skew.get(key)
        return {"plugin": key, "sources": estimator.table() if estimator else []}


class Window(PluginDebugView):
    """GET /internal/debug/window?plugin=tenant/plugin[&from=ms&to=ms][&signal=logs] -> the slice."""

    def body(self, key: str, query: Any) -> Any:
        now = int(time.time() * 1000)
        try:
            to_ms = int(query.get("to") or now)
            from_ms = int(query.get("from") or to_ms - self.app.settings.window.ms)
        except ValueError:
            raise ValueError("from and to are epoch milliseconds") from None
        signals = [query["signal"]] if query.get("signal") else None
        window = self.app.services.tail.slice(key, from_ms, to_ms, signals)
        entries = [
            {"corrected_ts": e.corrected_ts, "raw_ts": e.raw_ts, "signal": e.signal, "source": e.source,
             "event_id": record.get("event_id"), "record": record}
            for e in window.entries
            for record in (e.data(),)
        ]
        masked, _ = self.app.services.masker.mask(entries)  # already masked at ingest; verified again
        return {
            "plugin": key, "from": from_ms, "to": to_ms, "complete": window.complete,
            "complete_from": window.complete_from, "reason": window.reason, "entries": masked,
        }


def register_views(app: PlugwatchApp) -> None:
    from plugwatch.web.reports import register_report_views
    from plugwatch.web.suspensions import register_suspension_views
    from plugwatch.web.tickets import register_ticket_views

    app.page("/healthz")(Health)
    app.page("/metrics")(Metrics)
    app.page("/internal/sql")(Sql)
    app.page("/internal/debug/skew")(Skew)
    app.page("/internal/debug/window")(Window)
    register_report_views(app)
    register_ticket_views(app)
    register_suspension_views(app)
