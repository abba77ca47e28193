"""HTTP endpoints on Faust's web server: health, metrics, and a read-only SQL view of ClickHouse.

Everything but ``/healthz`` and ``/metrics`` needs a bearer token (``config/security/access.yaml``).
"""

from __future__ import annotations

import re
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
        }
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


def register_views(app: PlugwatchApp) -> None:
    app.page("/healthz")(Health)
    app.page("/metrics")(Metrics)
    app.page("/internal/sql")(Sql)
