"""Tickets and alert lifecycles over HTTP (DESIGN §6 steps 4-5).

- ``GET /api/tickets?tenant=&plugin=&status=&limit=``: the tickets plugwatch keeps (the embedded
  ticket system, and the mapping to Jira/GitHub/the platform's tickets otherwise), newest first.
- ``GET /api/tickets/{ticket_id}``: one ticket with the comments plugwatch put on it.
- ``GET /internal/debug/alerts/{alert_id}``: the alert's lifecycle (status, report, ticket, fix, history).
- ``POST /internal/debug/alerts/{alert_id}/fix`` ``{version, commit, submitted_by?}``: publish a fix
  on ``plugin.fix.submitted``; 202, then the regression runs; 404 unknown alert, 409 when the
  alert's state refuses a fix (a run in progress, already resolved).

Everything is visible to the plugin's tenant and owners and to the security and auditor roles.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response
from pydantic import ValidationError

from plugwatch.agents.tickets import UnknownAlert
from plugwatch.regression.alerts import AlertTransitionError
from plugwatch.tickets.model import Ticket
from plugwatch.web.auth import AuthError, Principal, may_read_plugin
from plugwatch.web.views import READ_ROLES, PlugwatchView

FIX_ROLES = ("developer", "ops", "security", "tenant_admin")
MAX_LIST = 1000


class TicketView(PlugwatchView):
    def readable(self, principal: Principal, tenant_id: str, plugin_id: str) -> bool:
        owners = self.app.services.reports.owners.principals_of(tenant_id, plugin_id)
        return may_read_plugin(principal, tenant_id, owners)

    def check(self, principal: Principal, tenant_id: str, plugin_id: str) -> None:
        if not self.readable(principal, tenant_id, plugin_id):
            raise AuthError(403, "forbidden", "this plugin's tickets and alerts are for its tenant, its owners, "
                                              "security and auditors")


class Tickets(TicketView):
    async def get(self, request: Request) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            limit = min(MAX_LIST, max(1, int(request.query.get("limit", 100))))
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except ValueError:
            return self.fail(400, "bad_request", "limit must be a number")
        tenant = request.query.get("tenant") or None
        rows = await self.app.services.clickhouse.tickets(
            tenants=[tenant] if tenant else None, plugin_id=request.query.get("plugin") or None,
            status=request.query.get("status") or None, limit=MAX_LIST * 5,
        )
        tickets = [Ticket.from_dict(row) for row in rows]
        visible = [t.public() for t in tickets if self.readable(principal, t.tenant_id, t.plugin_id)][:limit]
        return self.reply({"tickets": visible, "count": len(visible)})


class TicketById(TicketView):
    async def get(self, request: Request, ticket_id: str) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            data = await self.app.services.clickhouse.ticket(ticket_id)
            if data is None:
                return self.fail(404, "not_found", f"no ticket {ticket_id}")
            ticket = Ticket.from_dict(data)
            self.check(principal, ticket.tenant_id, ticket.plugin_id)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        comments = await self.app.services.clickhouse.ticket_comments(ticket_id)
        return self.reply({**ticket.public(), "comments": comments})


class AlertById(TicketView):
    async def get(self, request: Request, alert_id: str) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            lifecycle = await self.app.services.alerts.get(alert_id)
            if lifecycle is None:
                return self.fail(404, "not_found", f"no alert {alert_id}")
            self.check(principal, lifecycle.tenant_id, lifecycle.plugin_id)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        return self.reply(lifecycle.as_dict())


class AlertFix(TicketView):
    async def post(self, request: Request, alert_id: str) -> Response:
        fixes = self.app.services.fixes
        if fixes is None:
            return self.fail(503, "disabled", "regression checks are disabled on this worker")
        try:
            principal = self.principal(request, *FIX_ROLES)
            body = await self.json_object(request, empty_ok=True)
            lifecycle = await self.app.services.alerts.get(alert_id)
            if lifecycle is None:
                return self.fail(404, "not_found", f"no alert {alert_id}")
            self.check(principal, lifecycle.tenant_id, lifecycle.plugin_id)
            accepted = await fixes.submit(alert_id, body, principal.name)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except UnknownAlert:
            return self.fail(404, "not_found", f"no alert {alert_id}")
        except AlertTransitionError as exc:
            return self.fail(409, "conflict", str(exc))
        except ValidationError as exc:
            return self.fail(400, "bad_request", str(exc)[:500])
        return self.reply(accepted, status=202)


def register_ticket_views(app: Any) -> None:
    app.page("/api/tickets")(Tickets)
    app.page("/api/tickets/{ticket_id}")(TicketById)
    app.page("/internal/debug/alerts/{alert_id}")(AlertById)
    app.page("/internal/debug/alerts/{alert_id}/fix")(AlertFix)
