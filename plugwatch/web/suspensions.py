"""Suspension API (DESIGN §7, §8).

- ``POST /api/plugins/{plugin_id}/suspend`` (wait mode), ``…/suspend/force``, ``…/resume`` with
  ``{"tenant_id", "reason", "severity"?}`` (``tenant_id`` may be left out by a principal of one
  tenant): 202 with the suspension or resume request (a request for a plugin that already has an
  open one is merged into it).
- ``POST /api/suspensions/{id}/approve`` and ``…/reject`` (``{"reason"}``): 200 with the new state;
  403 for self-approval or a role the policy does not accept, 409 when the state does not allow it.
- ``GET /api/suspensions/{id}`` and ``GET /api/plugins/{plugin_id}?tenant_id=``: state, history,
  commands, acks.
- ``POST /api/plugins/{plugin_id}/evidence``: an evidence snapshot now; ``GET /api/evidence/{id}``
  (its record) and ``GET /api/evidence/{id}.jsonl.gz`` (the bundle, hash-checked; audited).

Requests need the security or ops role (tenant_admin for its own tenants); reads are for the
plugin's tenant, its owners, security and auditors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from plugwatch.suspension.machine import SuspensionError
from plugwatch.web.auth import AuthError, Principal, may_read_plugin
from plugwatch.web.views import READ_ROLES, PlugwatchView

if TYPE_CHECKING:
    from plugwatch.agents.suspensions import SuspensionService

REQUEST_ROLES = ("security", "ops", "tenant_admin")
STATUS_OF_CODE = {"forbidden": 403, "self_approval": 403, "not_allowed": 403, "conflict": 409, "not_found": 404,
                  "invalid": 400, "pending": 504, "internal": 500}


class SuspensionView(PlugwatchView):
    @property
    def service(self) -> SuspensionService:
        service = self.app.services.suspensions
        if service is None:
            raise AuthError(503, "disabled", "suspensions are disabled on this worker")
        return service

    async def body(self, request: Request) -> dict[str, Any]:
        masked, _ = self.app.services.masker.mask(await self.json_object(request, empty_ok=True))
        return masked

    def tenant_of(self, principal: Principal, given: Any) -> str:
        if isinstance(given, str) and given:
            tenant = given
        elif len(principal.tenants) == 1 and "*" not in principal.tenants:
            tenant = next(iter(principal.tenants))
        else:
            raise AuthError(400, "bad_request", "say which tenant's plugin: tenant_id")
        if not principal.may_see_tenant(tenant):
            raise AuthError(403, "forbidden", "this token does not cover the plugin's tenant")
        return tenant

    def check_read(self, principal: Principal, tenant_id: str, plugin_id: str) -> None:
        owners = self.app.services.reports.owners.principals_of(tenant_id, plugin_id)
        if not may_read_plugin(principal, tenant_id, owners):
            raise AuthError(403, "forbidden", "this plugin's suspensions are for its tenant, owners, security and auditors")

    def refused(self, exc: SuspensionError) -> Response:
        code = getattr(exc, "code", "conflict")
        return self.fail(STATUS_OF_CODE.get(code, 409), code, str(exc))


class _PluginRequest(SuspensionView):
    kind = "suspend"
    force = False

    async def post(self, request: Request, plugin_id: str) -> Response:
        try:
            principal = self.principal(request, *REQUEST_ROLES)
            body = await self.body(request)
            tenant = self.tenant_of(principal, body.get("tenant_id") or request.query.get("tenant_id"))
            state = await self.service.request(
                tenant_id=tenant, plugin_id=plugin_id, kind=self.kind, force=self.force, requester=principal.name,
                roles=principal.roles, reason=str(body.get("reason") or f"requested by {principal.name}"),
                severity=str(body.get("severity") or "high"), source="api",
            )
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except SuspensionError as exc:
            return self.refused(exc)
        return self.reply(state, status=202)


class Suspend(_PluginRequest):
    pass


class SuspendForce(_PluginRequest):
    force = True


class Resume(_PluginRequest):
    kind = "resume"


class _Decision(SuspensionView):
    approve = True

    async def post(self, request: Request, suspension_id: str) -> Response:
        try:
            principal = self.principal(request, "security", "ops", "tenant_admin")
            body = await self.body(request)
            current = await self.service.get(suspension_id)
            if current is None:
                return self.fail(404, "not_found", f"no suspension {suspension_id}")
            if not principal.may_see_tenant(current["tenant_id"]):
                raise AuthError(403, "forbidden", "this token does not cover the plugin's tenant")
            if self.approve:
                state = await self.service.approve(suspension_id, principal.name, principal.roles)
            else:
                state = await self.service.reject(suspension_id, principal.name, principal.roles,
                                                  str(body.get("reason") or "rejected"))
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        except SuspensionError as exc:
            return self.refused(exc)
        return self.reply(state)


class Approve(_Decision):
    pass


class Reject(_Decision):
    approve = False


class SuspensionById(SuspensionView):
    async def get(self, request: Request, suspension_id: str) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            state = await self.service.get(suspension_id)
            if state is None:
                return self.fail(404, "not_found", f"no suspension {suspension_id}")
            self.check_read(principal, state["tenant_id"], state["plugin_id"])
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        return self.reply(state)


class PluginState(SuspensionView):
    async def get(self, request: Request, plugin_id: str) -> Response:
        try:
            principal = self.principal(request, *READ_ROLES)
            tenant = self.tenant_of(principal, request.query.get("tenant_id"))
            self.check_read(principal, tenant, plugin_id)
            state = await self.service.plugin(tenant, plugin_id)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        return self.reply(state)


class EvidenceNow(SuspensionView):
    """``POST /api/plugins/{plugin_id}/evidence`` ``{"tenant_id", "reason"}``: a snapshot now."""

    async def post(self, request: Request, plugin_id: str) -> Response:
        try:
            principal = self.principal(request, "security", "ops", "auditor")
            body = await self.body(request)
            tenant = self.tenant_of(principal, body.get("tenant_id") or request.query.get("tenant_id"))
            record = await self.service.snapshot(tenant, plugin_id, "on-request", str(body.get("severity") or "high"),
                                                 reason=str(body.get("reason") or f"requested by {principal.name}"),
                                                 actor=principal.name)
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        if record is None:
            return self.fail(503, "evidence_store_failed", "the evidence store failed; the failure is audited")
        return self.reply(record, status=201)


class EvidenceById(SuspensionView):
    """``GET /api/evidence/{id}`` (the record) and ``GET /api/evidence/{id}.jsonl.gz`` (the bundle)."""

    async def get(self, request: Request, evidence_id: str) -> Response:
        bundle = evidence_id.endswith(".jsonl.gz")
        evidence_id = evidence_id.removesuffix(".jsonl.gz")
        try:
            principal = self.principal(request, *READ_ROLES)
            record = await self.service.evidence(evidence_id)
            if record is None:
                return self.fail(404, "not_found", f"no evidence {evidence_id}")
            self.check_read(principal, record["tenant_id"], record["plugin_id"])
        except AuthError as exc:
            return self.fail(exc.status, exc.error, exc.message)
        if not bundle:
            return self.reply(record)
        data = await self.service.evidence_bundle(record, principal.name)
        return self.bytes(data, content_type="application/gzip",
                          headers={"Content-Disposition": f'attachment; filename="{evidence_id}.jsonl.gz"'})


def register_suspension_views(app: Any) -> None:
    app.page("/api/plugins/{plugin_id}/suspend")(Suspend)
    app.page("/api/plugins/{plugin_id}/suspend/force")(SuspendForce)
    app.page("/api/plugins/{plugin_id}/resume")(Resume)
    app.page("/api/plugins/{plugin_id}")(PluginState)
    app.page("/api/suspensions/{suspension_id}/approve")(Approve)
    app.page("/api/suspensions/{suspension_id}/reject")(Reject)
    app.page("/api/suspensions/{suspension_id}")(SuspensionById)
    app.page("/api/plugins/{plugin_id}/evidence")(EvidenceNow)
    app.page("/api/evidence/{evidence_id}")(EvidenceById)
