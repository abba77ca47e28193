"""The suspension of one plugin (DESIGN §7) as a pure, total state machine.

Every event is a function ``(suspension, ...) -> (new suspension, effects)``: it returns a new frozen
``Suspension`` and the effects the service performs (send a command, schedule its timeout, notify,
audit, raise an alert, snapshot evidence, publish the outcome), or raises a ``SuspensionError`` whose
``code`` the HTTP layer maps (forbidden, self_approval, not_allowed -> 403; conflict -> 409;
invalid -> 400). Nothing else is raised. Time comes in as ``at_ms``; nothing here reads a clock.

Suspend (kind "suspend", ids ``SUS-...``)::

    requested --approve (all steps filled) / auto-approve--> approved --> executing   (one call)
    executing --ack drained|forced--> suspended
    executing --ack failed | timeout, wait mode--> executing (escalated to force_suspend) when the
              policy escalates, else the final failure
    executing --ack failed | timeout, force mode--> executing (retry) while retries last, else the
              final failure: locked (command ``lock``) when lock_on_failure, else failed; both alert
    failed | suspended --lock--> locked          requested --reject--> rejected

Resume (kind "resume", ids ``RES-...``; needs the plugin's suspended, locked or failed suspension)::

    requested --approve (two distinct approvers)--> approved --> executing (command ``resume``)
    executing --ack drained|forced--> resumed    executing --ack failed | timeout--> retry or failed
    requested --reject--> rejected

``approved`` is passed through within the approving call: the command goes out in the same effects.
A request for a plugin whose suspension is open merges into it (same id, request appended; a force
request switches a waiting suspension to force when the policy allows it), so concurrent requests
never race; a request for an already suspended or locked plugin is recorded on that suspension and
changes nothing. Acks and timeouts for any command but the current one are ignored (no change, no
effects), so redelivered and late messages are harmless, and ids are derived from their inputs
(``SUS-`` + sha256(tenant, plugin, first request id), ``{suspension_id}-{attempt}-{action}``), so a
replay yields the same records.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from plugwatch.suspension.policy import (
    MODES,
    SEVERITIES,
    ResumePolicy,
    SuspendPolicies,
    SuspendPolicy,
)

SUSPEND, RESUME = "suspend", "resume"
KINDS = (SUSPEND, RESUME)
REQUESTED, APPROVED, EXECUTING = "requested", "approved", "executing"
SUSPENDED, FAILED, LOCKED, REJECTED, RESUMED = "suspended", "failed", "locked", "rejected", "resumed"
SUSPEND_STATUSES = (REQUESTED, APPROVED, EXECUTING, SUSPENDED, FAILED, LOCKED, REJECTED)
RESUME_STATUSES = (REQUESTED, APPROVED, EXECUTING, RESUMED, FAILED, REJECTED)
STATUSES = (*SUSPEND_STATUSES, RESUMED)
OPEN_STATUSES = frozenset({REQUESTED, APPROVED, EXECUTING})
ACTIONS = ("suspend", "force_suspend", "resume", "lock")
ACK_STATUSES = ("drained", "forced", "failed")
LOCK_ROLES = frozenset({"security", "ops"})  # who may lock a failed or suspended plugin by hand
EXECUTOR = "plugwatch"  # the actor of every step the service takes itself
AUTO_APPROVER = "auto-approve"  # the approver recorded when the policy approves a request at once

Policy = SuspendPolicy | ResumePolicy


# --- errors ------------------------------------------------------------------------------------

class SuspensionError(ValueError):
    """A refused event; ``code`` and ``http_status`` say how the HTTP layer answers."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, *, suspension_id: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.suspension_id = suspension_id
        self.status = status


class ForbiddenError(SuspensionError):
    """The policy forbids it (a force request where ``may_force`` is false)."""

    code, http_status = "forbidden", 403


class ConflictError(SuspensionError):
    """Not in this status (approve after approval, reject while executing, a second approval)."""

    code, http_status = "conflict", 409


class SelfApprovalError(SuspensionError):
    code, http_status = "self_approval", 403


class NotAllowedError(SuspensionError):
    """The principal's roles cannot fill any open approval place (or may not reject or lock)."""

    code, http_status = "not_allowed", 403


class InvalidEventError(SuspensionError):
    """Malformed input: a missing id, an unknown severity, mode or ack status, another plugin."""

    code, http_status = "invalid", 400


# --- records -----------------------------------------------------------------------------------

class Request(NamedTuple):
    request_id: str  # the HTTP request id or the risk signal's signal_id
    requester: str
    at_ms: int
    severity: str | None = None
    mode: str | None = None
    reason: str | None = None


class Approval(NamedTuple):
    principal: str
    roles: tuple[str, ...]
    at_ms: int


class Rejection(NamedTuple):
    principal: str
    roles: tuple[str, ...]
    at_ms: int
    reason: str | None = None


class Step(NamedTuple):
    """One history entry: the status after the step, when, who (a principal or ``EXECUTOR``), what."""

    status: str
    at_ms: int
    actor: str
    details: dict[str, Any]


# --- effects (the service performs them in order) ----------------------------------------------

@dataclass(frozen=True)
class SendCommand:
    """Publish on ``plugin.suspend.command``."""

    command: dict[str, Any]


@dataclass(frozen=True)
class ScheduleTimeout:
    """Call ``timeout(s, command_id, at_ms)`` at ``deadline_ms`` unless the command is acked first."""

    suspension_id: str
    command_id: str
    deadline_ms: int


@dataclass(frozen=True)
class Notify:
    """Tell people (email, SMS, console, webhook): kind is e.g. ``suspend.requested``, ``resume.resumed``."""

    kind: str
    tenant_id: str
    plugin_id: str
    suspension_id: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Audit:
    """One row for ``plugin.audit`` / ``audit_log`` (target: the suspension id)."""

    action: str
    actor: str
    tenant_id: str
    plugin_id: str
    target: str
    details: dict[str, Any]
    outcome: str = "ok"


@dataclass(frozen=True)
class RaiseAlert:
    kind: str  # suspension_locked, suspension_failed, resume_failed, lock_failed
    severity: str
    tenant_id: str
    plugin_id: str
    suspension_id: str
    summary: str
    details: dict[str, Any]


@dataclass(frozen=True)
class SnapshotEvidence:
    """Collect evidence for the suspension (masked logs, config, metrics, versions) as of ``at_ms``."""

    tenant_id: str
    plugin_id: str
    suspension_id: str
    at_ms: int
    status: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Completed:
    """The outcome for ``plugin.suspend.completed`` (suspended, locked, failed, rejected, resumed)."""

    record: dict[str, Any]


Effect = SendCommand | ScheduleTimeout | Notify | Audit | RaiseAlert | SnapshotEvidence | Completed
Result = tuple["Suspension", list[Effect]]


# --- the suspension ----------------------------------------------------------------------------

def suspension_id_for(kind: str, tenant_id: str, plugin_id: str, request_id: str) -> str:
    digest = hashlib.sha256(f"{kind}\x1f{tenant_id}\x1f{plugin_id}\x1f{request_id}".encode()).hexdigest()
    return ("RES-" if kind == RESUME else "SUS-") + digest[:16]


def command_id_for(suspension_id: str, attempt: int, action: str) -> str:
    return f"{suspension_id}-{attempt}-{action}"


@dataclass(frozen=True)
class Suspension:
    suspension_id: str
    kind: str
    tenant_id: str
    plugin_id: str
    status: str
    severity: str
    mode: str | None  # wait | force; None for a resume
    requester: str  # the first requester
    reason: str | None
    policy: Policy  # the policy in force, kept so timeouts and acks need no configuration
    requests: tuple[Request, ...] = ()
    approvals: tuple[Approval, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    commands: tuple[dict[str, Any], ...] = ()
    acks: tuple[dict[str, Any], ...] = ()
    history: tuple[Step, ...] = ()
    created_ms: int = 0
    updated_ms: int = 0
    finished_ms: int | None = None
    resumes: str | None = None  # a resume: the suspension it lifts

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def requesters(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.requester for r in self.requests))

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(a.principal for a in self.approvals)

    @property
    def current_command(self) -> dict[str, Any] | None:
        return self.commands[-1] if self.commands else None

    @property
    def force_attempts(self) -> int:
        return sum(1 for c in self.commands if c["action"] == "force_suspend")

    # elapsed_ms helpers (None until both ends exist; never negative)
    @property
    def request_to_approval_ms(self) -> int | None:
        return _elapsed(self.created_ms, self.approvals[-1].at_ms if self.approvals else None)

    @property
    def request_to_command_ms(self) -> int | None:
        return _elapsed(self.created_ms, self._first_command_ms)

    @property
    def approval_to_command_ms(self) -> int | None:
        return _elapsed(self.approvals[-1].at_ms if self.approvals else None, self._first_command_ms)

    @property
    def command_to_completed_ms(self) -> int | None:
        return _elapsed(self._first_command_ms, self.finished_ms)

    @property
    def request_to_completed_ms(self) -> int | None:
        return _elapsed(self.created_ms, self.finished_ms)

    @property
    def _first_command_ms(self) -> int | None:
        return self.commands[0]["issued_at_ms"] if self.commands else None

    def elapsed(self) -> dict[str, int | None]:
        return {"request_to_approval_ms": self.request_to_approval_ms,
                "request_to_command_ms": self.request_to_command_ms,
                "approval_to_command_ms": self.approval_to_command_ms,
                "command_to_completed_ms": self.command_to_completed_ms,
                "request_to_completed_ms": self.request_to_completed_ms}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``elapsed_ms`` is derived and ignored by ``from_dict``."""
        return {
            "suspension_id": self.suspension_id, "kind": self.kind, "tenant_id": self.tenant_id,
            "plugin_id": self.plugin_id, "status": self.status, "severity": self.severity, "mode": self.mode,
            "requester": self.requester, "reason": self.reason, "policy": self.policy.as_dict(),
            "requests": [r._asdict() for r in self.requests],
            "approvals": [{"principal": a.principal, "roles": list(a.roles), "at_ms": a.at_ms} for a in self.approvals],
            "rejections": [{"principal": r.principal, "roles": list(r.roles), "at_ms": r.at_ms, "reason": r.reason}
                           for r in self.rejections],
            "commands": [_copy(c) for c in self.commands], "acks": [_copy(a) for a in self.acks],
            "history": [{"status": h.status, "at_ms": h.at_ms, "actor": h.actor, "details": _copy(h.details)}
                        for h in self.history],
            "created_ms": self.created_ms, "updated_ms": self.updated_ms, "finished_ms": self.finished_ms,
            "resumes": self.resumes, "elapsed_ms": self.elapsed(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suspension:
        """The inverse of ``as_dict``; ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a suspension record must be a mapping, got {type(data).__name__}")  # noqa: TRY004
        missing = [k for k in ("suspension_id", "kind", "tenant_id", "plugin_id", "status", "severity",
                               "requester", "policy") if data.get(k) in (None, "")]
        if missing:
            raise ValueError(f"suspension record lacks {', '.join(missing)}")
        kind, status = data["kind"], data["status"]
        if kind not in KINDS:
            raise ValueError(f"suspension kind {kind!r} is not one of {', '.join(KINDS)}")
        if status not in (SUSPEND_STATUSES if kind == SUSPEND else RESUME_STATUSES):
            raise ValueError(f"{kind} status {status!r} is not one of "
                             f"{', '.join(SUSPEND_STATUSES if kind == SUSPEND else RESUME_STATUSES)}")
        policy: Policy = (SuspendPolicy.from_dict(data["policy"], "suspension record policy") if kind == SUSPEND
                          else ResumePolicy.from_dict(data["policy"], "suspension record policy"))
        try:
            return cls(
                str(data["suspension_id"]), kind, str(data["tenant_id"]), str(data["plugin_id"]), status,
                str(data["severity"]), data.get("mode"), str(data["requester"]), data.get("reason"), policy,
                tuple(Request(**r) for r in data.get("requests") or ()),
                tuple(Approval(a["principal"], tuple(a["roles"]), int(a["at_ms"])) for a in data.get("approvals") or ()),
                tuple(Rejection(r["principal"], tuple(r["roles"]), int(r["at_ms"]), r.get("reason"))
                      for r in data.get("rejections") or ()),
                tuple(_command_record(c) for c in data.get("commands") or ()),
                tuple(_copy(a) for a in data.get("acks") or ()),
                tuple(Step(h["status"], int(h["at_ms"]), h["actor"], _copy(h.get("details") or {}))
                      for h in data.get("history") or ()),
                int(data.get("created_ms") or 0), int(data.get("updated_ms") or 0),
                None if data.get("finished_ms") is None else int(data["finished_ms"]), data.get("resumes"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"suspension record {data.get('suspension_id')}: malformed entry ({exc})") from None


# --- events ------------------------------------------------------------------------------------

def request(existing: Suspension | None, *, request_id: str, tenant_id: str, plugin_id: str, severity: str,
            mode: str | None = None, requester: str, reason: str | None = None, at_ms: int,
            policy: SuspendPolicy | SuspendPolicies, force: bool = False) -> Result:
    """A suspend request (HTTP or risk signal): a new suspension, or merged into ``existing``.

    ``existing`` is the plugin's latest suspension record (or None). ``policy`` is the policy of
    ``severity`` or all policies. ``force`` (or ``mode="force"``) asks for force; refused with
    ``ForbiddenError`` where the policy does not allow it. ``mode=None`` takes the policy's default.
    """
    _text(request_id=request_id, tenant_id=tenant_id, plugin_id=plugin_id, requester=requester)
    at_ms = _ms(at_ms)
    if severity not in SEVERITIES:
        raise InvalidEventError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    if mode is not None and mode not in MODES:
        raise InvalidEventError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    wants_force = bool(force) or mode == "force"
    pol = _suspend_policy(policy, severity)
    req = Request(request_id, requester, at_ms, severity, "force" if wants_force else mode, reason)
    if existing is not None:
        _suspension(existing)
        _same_plugin(existing, tenant_id, plugin_id)
        if existing.kind == SUSPEND and request_id in {r.request_id for r in existing.requests}:
            return existing, []  # a replay
        if existing.kind == SUSPEND and (existing.is_open or existing.status in (SUSPENDED, LOCKED)):
            return _merge(existing, req, pol, wants_force)
        if existing.kind == RESUME and existing.is_open:
            raise ConflictError(f"resume {existing.suspension_id} of {plugin_id} is {existing.status}; "
                                "reject it before requesting a suspension",
                                suspension_id=existing.suspension_id, status=existing.status)
    chosen = "force" if wants_force else (mode or pol.default_mode)
    if chosen == "force" and not pol.may_force:
        raise ForbiddenError(f"the {severity} policy does not allow force suspension; request wait mode")
    sid = suspension_id_for(SUSPEND, tenant_id, plugin_id, request_id)
    s = Suspension(sid, SUSPEND, tenant_id, plugin_id, REQUESTED, severity, chosen, requester, reason, pol,
                   requests=(req,), created_ms=at_ms, updated_ms=at_ms,
                   history=(Step(REQUESTED, at_ms, requester, {"step": "requested", "request_id": request_id,
                                                               "severity": severity, "mode": chosen}),))
    effects: list[Effect] = [_audit(s, "suspend.requested", requester, request_id=request_id, reason=reason),
                             _notify(s, "suspend.requested", needs=_needs_text(s.approvals, pol))]
    if pol.auto_approves(requester) or pol.approvers_needed == 0:
        s, more = _approve_and_execute(s, at_ms, AUTO_APPROVER, rule=_auto_rule(pol, requester))
        effects += more
    return s, effects


def resume_request(existing: Suspension | None, *, request_id: str, tenant_id: str, plugin_id: str,
                   requester: str, reason: str | None = None, at_ms: int,
                   policy: ResumePolicy | SuspendPolicies) -> Result:
    """A resume request for a suspended, locked or failed plugin; merges into an open resume."""
    _text(request_id=request_id, tenant_id=tenant_id, plugin_id=plugin_id, requester=requester)
    at_ms = _ms(at_ms)
    pol = policy.resume if isinstance(policy, SuspendPolicies) else policy
    if not isinstance(pol, ResumePolicy):
        raise InvalidEventError("resume_request needs the resume policy (or all policies)")
    if existing is None:
        raise ConflictError(f"plugin {plugin_id} has no suspension to resume")
    _suspension(existing)
    _same_plugin(existing, tenant_id, plugin_id)
    if existing.kind == RESUME:
        if request_id in {r.request_id for r in existing.requests}:
            return existing, []
        if existing.is_open:
            req = Request(request_id, requester, at_ms, reason=reason)
            s = _record(existing, existing.status, at_ms, requester, "request_merged", {"request_id": request_id},
                        requests=(*existing.requests, req))
            return s, [_audit(s, "resume.request_merged", requester, request_id=request_id, reason=reason)]
        if existing.status == RESUMED:
            raise ConflictError(f"plugin {plugin_id} was resumed by {existing.suspension_id}; it is not suspended",
                                suspension_id=existing.suspension_id, status=existing.status)
        target = existing.resumes  # the earlier resume was rejected or failed: the plugin is still suspended
    elif existing.status in (SUSPENDED, LOCKED, FAILED):
        target = existing.suspension_id
    elif existing.is_open:
        raise ConflictError(f"suspension {existing.suspension_id} of {plugin_id} is {existing.status}; "
                            "wait for its outcome (or reject it) before resuming",
                            suspension_id=existing.suspension_id, status=existing.status)
    else:
        raise ConflictError(f"plugin {plugin_id} is not suspended ({existing.suspension_id} was {existing.status})",
                            suspension_id=existing.suspension_id, status=existing.status)
    sid = suspension_id_for(RESUME, tenant_id, plugin_id, request_id)
    s = Suspension(sid, RESUME, tenant_id, plugin_id, REQUESTED, existing.severity, None, requester, reason, pol,
                   requests=(Request(request_id, requester, at_ms, reason=reason),), created_ms=at_ms,
                   updated_ms=at_ms, resumes=target,
                   history=(Step(REQUESTED, at_ms, requester, {"step": "requested", "request_id": request_id,
                                                               "resumes": target}),))
    return s, [_audit(s, "resume.requested", requester, request_id=request_id, reason=reason, resumes=target),
               _notify(s, "resume.requested", needs=_needs_text((), pol), resumes=target)]


def approve(s: Suspension, *, principal: str, roles: Iterable[str], at_ms: int,
            policy: Policy | SuspendPolicies | None = None) -> Result:
    """One approval. The last one needed approves and executes in the same call (command issued).

    ``policy`` defaults to the one kept with the suspension (the policy at request time).
    """
    _suspension(s)
    _text(principal=principal)
    at_ms = _ms(at_ms)
    held = _roles(roles)
    pol = _resolve(s, policy)
    if s.status != REQUESTED:
        raise ConflictError(f"{_label(s)} is {s.status}; approvals are taken only while it is requested",
                            suspension_id=s.suspension_id, status=s.status)
    if not pol.self_approval and principal in s.requesters:
        raise SelfApprovalError(f"{principal} requested {_label(s)} and cannot approve it; ask another approver",
                                suspension_id=s.suspension_id, status=s.status)
    if principal in s.approvers:
        raise ConflictError(f"{principal} has already approved {_label(s)}; another person must approve",
                            suspension_id=s.suspension_id, status=s.status)
    if not any(step.admits(held) for step in pol.approvals):
        raise NotAllowedError(f"approving {_label(s)} needs one of the roles {', '.join(sorted(pol.approver_roles))}; "
                              f"{principal} has {', '.join(held) or 'none'}",
                              suspension_id=s.suspension_id, status=s.status)
    approval = Approval(principal, held, at_ms)
    filled = _filled(s.approvals, pol)
    if _filled((*s.approvals, approval), pol) == filled:
        raise NotAllowedError(f"{principal}'s roles fill no open approval of {_label(s)}; "
                              f"still needed: {_needs_text(s.approvals, pol)}",
                              suspension_id=s.suspension_id, status=s.status)
    s = _record(s, REQUESTED, at_ms, principal, "approval",
                {"roles": held, "approvals": filled + 1, "needed": pol.approvers_needed},
                approvals=(*s.approvals, approval))
    effects: list[Effect] = [_audit(s, f"{s.kind}.approval", principal, roles=list(held),
                                    approvals=filled + 1, needed=pol.approvers_needed)]
    if filled + 1 >= pol.approvers_needed:
        s, more = _approve_and_execute(s, at_ms, principal)
        effects += more
    return s, effects


def reject(s: Suspension, *, principal: str, roles: Iterable[str], at_ms: int, reason: str | None = None) -> Result:
    """Refuse a requested suspension or resume (anyone holding an approver role of its policy)."""
    _suspension(s)
    _text(principal=principal)
    at_ms = _ms(at_ms)
    held = _roles(roles)
    if s.status not in (REQUESTED, APPROVED):
        raise ConflictError(f"{_label(s)} is {s.status}; only a requested one can be rejected",
                            suspension_id=s.suspension_id, status=s.status)
    allowed = s.policy.approver_roles | {"security"}
    if allowed.isdisjoint(held):
        raise NotAllowedError(f"rejecting {_label(s)} needs one of the roles {', '.join(sorted(allowed))}",
                              suspension_id=s.suspension_id, status=s.status)
    s = _record(s, REJECTED, at_ms, principal, "rejected", {"reason": reason}, finished=True,
                rejections=(*s.rejections, Rejection(principal, held, at_ms, reason)))
    return s, [_audit(s, f"{s.kind}.rejected", principal, reason=reason),
               _notify(s, f"{s.kind}.rejected", rejected_by=principal, reason=reason), _completed(s)]


def lock(s: Suspension, *, principal: str, roles: Iterable[str], at_ms: int, reason: str | None = None) -> Result:
    """Lock a failed or suspended plugin by hand (security or ops): command ``lock``, entry blocked."""
    _suspension(s)
    _text(principal=principal)
    at_ms = _ms(at_ms)
    held = _roles(roles)
    if s.kind != SUSPEND or s.status not in (FAILED, SUSPENDED):
        raise ConflictError(f"{_label(s)} is {s.status}; only a failed or suspended suspension can be locked",
                            suspension_id=s.suspension_id, status=s.status)
    if LOCK_ROLES.isdisjoint(held):
        raise NotAllowedError(f"locking needs one of the roles {', '.join(sorted(LOCK_ROLES))}",
                              suspension_id=s.suspension_id, status=s.status)
    s = _record(s, LOCKED, at_ms, principal, "locked", {"reason": reason})  # finished_ms stays the outcome's
    s, effects = _issue(s, "lock", at_ms, "lock_command")
    return s, [_audit(s, "suspend.locked", principal, reason=reason), *effects,
               _notify(s, "suspend.locked", locked_by=principal, reason=reason), _completed(s)]


def ack(s: Suspension, ack: Mapping[str, Any], at_ms: int) -> Result:
    """The runtime's ack ``{command_id, plugin_id, instance_id, status, in_flight, ts}``.

    Only the current command's first outcome counts; acks of other or unknown commands, of another
    plugin, or arriving after the outcome are ignored (``s`` unchanged, no effects).
    """
    _suspension(s)
    at_ms = _ms(at_ms)
    if not isinstance(ack, Mapping):
        raise InvalidEventError(f"an ack must be a mapping, got {type(ack).__name__}")
    command_id, status = ack.get("command_id"), ack.get("status")
    if not isinstance(command_id, str) or not command_id:
        raise InvalidEventError("an ack needs its command_id")
    if status not in ACK_STATUSES:
        raise InvalidEventError(f"ack status {status!r} is not one of {', '.join(ACK_STATUSES)}")
    current = s.current_command
    if current is None or current["command_id"] != command_id:
        return s, []
    if ack.get("plugin_id") not in (None, s.plugin_id) or ack.get("tenant_id") not in (None, s.tenant_id):
        return s, []
    record = {"command_id": command_id, "plugin_id": s.plugin_id, "instance_id": _opt_text(ack.get("instance_id")),
              "status": status, "in_flight": _opt_int(ack.get("in_flight")), "ts": _ts(ack.get("ts")),
              "received_at_ms": at_ms}
    if current["action"] == "lock":
        key = (record["instance_id"], status)
        if any(a["command_id"] == command_id and (a["instance_id"], a["status"]) == key for a in s.acks):
            return s, []
        s = _record(s, s.status, at_ms, EXECUTOR, "lock_ack", _ack_details(record), acks=(*s.acks, record))
        effects: list[Effect] = [_audit(s, "suspend.lock_ack", EXECUTOR, **_ack_details(record))]
        if status == "failed":
            effects.append(_alert(s, "lock_failed", f"the runtime failed to lock {s.plugin_id}; block its entry by hand",
                                  **_ack_details(record)))
        return s, effects
    if s.status != EXECUTING:
        return s, []
    s = replace(s, acks=(*s.acks, record), updated_ms=at_ms)
    if status == "failed":
        return _command_failed(s, at_ms, f"the runtime reported failed for {current['action']}",
                               [_audit(s, f"{s.kind}.ack", EXECUTOR, **_ack_details(record))])
    done = SUSPENDED if s.kind == SUSPEND else RESUMED
    s = _record(s, done, at_ms, EXECUTOR, done, _ack_details(record), finished=True)
    effects = [_audit(s, f"{s.kind}.{done}", EXECUTOR, **_ack_details(record), elapsed_ms=s.elapsed()),
               _notify(s, f"{s.kind}.{done}", instance_id=record["instance_id"], in_flight=record["in_flight"])]
    if s.kind == SUSPEND:
        effects.append(_evidence(s, at_ms))
    return s, [*effects, _completed(s)]


def timeout(s: Suspension, command_id: str, at_ms: int) -> Result:
    """The deadline of ``command_id`` passed. Ignored unless it is the current, unanswered command
    and ``at_ms`` has reached its deadline."""
    _suspension(s)
    at_ms = _ms(at_ms)
    current = s.current_command
    if (current is None or current["command_id"] != command_id or s.status != EXECUTING
            or current["action"] == "lock" or at_ms < current["deadline"]):
        return s, []
    waited = (at_ms - current["issued_at_ms"]) / 1000
    return _command_failed(s, at_ms, f"no ack for {current['action']} within {waited:g}s",
                           [_audit(s, f"{s.kind}.timeout", EXECUTOR, command_id=command_id,
                                   action=current["action"], attempt=current["attempt"])])


# --- steps -------------------------------------------------------------------------------------

def _merge(s: Suspension, req: Request, pol: SuspendPolicy, wants_force: bool) -> Result:
    if s.status in (SUSPENDED, LOCKED):
        s = _record(s, s.status, req.at_ms, req.requester, "request_merged",
                    {"request_id": req.request_id, "note": f"plugin already {s.status}"}, requests=(*s.requests, req))
        return s, [_audit(s, "suspend.request_merged", req.requester, request_id=req.request_id,
                          note=f"plugin already {s.status}")]
    upgrade = s.status == REQUESTED and SEVERITIES.index(req.severity) < SEVERITIES.index(s.severity)
    effective = pol if upgrade else s.policy
    assert isinstance(effective, SuspendPolicy)
    if wants_force and not effective.may_force:
        raise ForbiddenError(f"the {effective.severity} policy does not allow force suspension; request wait mode",
                             suspension_id=s.suspension_id, status=s.status)
    s = _record(s, s.status, req.at_ms, req.requester, "request_merged",
                {"request_id": req.request_id, "severity": req.severity, "force": wants_force},
                requests=(*s.requests, req), policy=effective, severity=effective.severity)
    effects: list[Effect] = [_audit(s, "suspend.request_merged", req.requester, request_id=req.request_id,
                                    reason=req.reason, force=wants_force)]
    at_ms = req.at_ms
    if s.status == REQUESTED:
        if wants_force:
            s = replace(s, mode="force")
        if effective.auto_approves(req.requester) or effective.approvers_needed == 0:
            s, more = _approve_and_execute(s, at_ms, AUTO_APPROVER, rule=_auto_rule(effective, req.requester))
            effects += more
        elif _filled(s.approvals, effective) >= effective.approvers_needed:
            s, more = _approve_and_execute(s, at_ms, s.approvals[-1].principal, rule="severity raised")
            effects += more
    elif s.status == EXECUTING and wants_force and s.current_command and s.current_command["action"] == "suspend":
        s, more = _escalate(s, at_ms, f"force requested by {req.requester}")
        effects += more
    return s, effects


def _approve_and_execute(s: Suspension, at_ms: int, approver: str, /, **details: Any) -> Result:
    if approver == AUTO_APPROVER:
        s = replace(s, approvals=(*s.approvals, Approval(AUTO_APPROVER, ("policy",), at_ms)))
    s = _record(s, APPROVED, at_ms, approver, "approved", {"approvers": s.approvers, **details})
    effects: list[Effect] = [_audit(s, f"{s.kind}.approved", approver, approvers=list(s.approvers), **details)]
    action = "resume" if s.kind == RESUME else ("force_suspend" if s.mode == "force" else "suspend")
    s, more = _issue(s, action, at_ms, "executing")
    return s, [*effects, *more, _notify(s, f"{s.kind}.executing", action=action, approvers=list(s.approvers))]


def _issue(s: Suspension, action: str, at_ms: int, step: str, /, **details: Any) -> Result:
    attempt = len(s.commands) + 1
    command_id = command_id_for(s.suspension_id, attempt, action)
    mode = "force" if action in ("force_suspend", "lock") else ("wait" if action == "suspend" else None)
    deadline = at_ms + s.policy.timeout_ms(mode or "wait")
    command = {"command_id": command_id, "suspension_id": s.suspension_id, "tenant_id": s.tenant_id,
               "plugin_id": s.plugin_id, "action": action, "mode": s.mode, "deadline": deadline,
               "requester": s.requester, "approvers": list(s.approvers), "attempt": attempt,
               "issued_at_ms": at_ms, "reason": s.reason}
    status = LOCKED if action == "lock" else EXECUTING
    s = _record(s, status, at_ms, EXECUTOR, step, {"command_id": command_id, "action": action, "attempt": attempt,
                                                    "deadline": deadline, **details}, commands=(*s.commands, command))
    effects: list[Effect] = [SendCommand(_copy(command))]
    if action != "lock":  # nothing is left to escalate to: a silent lock was alerted on already
        effects.append(ScheduleTimeout(s.suspension_id, command_id, deadline))
    effects.append(_audit(s, f"{s.kind}.command", EXECUTOR, command_id=command_id, action=action,
                          attempt=attempt, deadline=deadline, **details))
    return s, effects


def _escalate(s: Suspension, at_ms: int, cause: str) -> Result:
    s = replace(s, mode="force")
    s, effects = _issue(s, "force_suspend", at_ms, "escalated", cause=cause)
    return s, [*effects, _notify(s, "suspend.escalated", cause=cause)]


def _command_failed(s: Suspension, at_ms: int, cause: str, effects: list[Effect]) -> Result:
    action = s.commands[-1]["action"]
    pol = s.policy
    if isinstance(pol, ResumePolicy):
        if sum(1 for c in s.commands if c["action"] == "resume") <= pol.retries:
            s, more = _issue(s, "resume", at_ms, "retry", cause=cause)
            return s, effects + more
    elif action == "suspend":
        if pol.escalate_to_force and pol.may_force:
            s, more = _escalate(s, at_ms, cause)
            return s, effects + more
    elif s.force_attempts <= pol.force_retries:
        s, more = _issue(s, "force_suspend", at_ms, "retry", cause=cause)
        return s, effects + more
    s, more = _give_up(s, at_ms, cause)
    return s, effects + more


def _give_up(s: Suspension, at_ms: int, cause: str) -> Result:
    attempts = len(s.commands)
    if s.kind == RESUME:
        s = _record(s, FAILED, at_ms, EXECUTOR, "failed", {"cause": cause, "attempts": attempts}, finished=True)
        return s, [_audit(s, "resume.failed", EXECUTOR, cause=cause, attempts=attempts),
                   _alert(s, "resume_failed", f"resuming {s.plugin_id} failed after {attempts} attempts: {cause}"),
                   _notify(s, "resume.failed", cause=cause), _completed(s)]
    pol = s.policy
    assert isinstance(pol, SuspendPolicy)
    if pol.lock_on_failure:
        s = replace(s, finished_ms=at_ms)
        s, effects = _issue(s, "lock", at_ms, "locked", cause=cause, attempts=attempts)
        return s, [_audit(s, "suspend.locked", EXECUTOR, cause=cause, attempts=attempts), *effects, _alert(s, "suspension_locked", f"suspending {s.plugin_id} failed after {attempts} "
                                    f"attempts ({cause}); the plugin is locked"),
                   _notify(s, "suspend.locked", cause=cause), _evidence(s, at_ms), _completed(s)]
    s = _record(s, FAILED, at_ms, EXECUTOR, "failed", {"cause": cause, "attempts": attempts}, finished=True)
    return s, [_audit(s, "suspend.failed", EXECUTOR, cause=cause, attempts=attempts),
               _alert(s, "suspension_failed", f"suspending {s.plugin_id} failed after {attempts} attempts "
                      f"({cause}); it is not locked: decide by hand"),
               _notify(s, "suspend.failed", cause=cause), _evidence(s, at_ms), _completed(s)]


def _record(s: Suspension, status: str, at_ms: int, actor: str, step: str, details: Mapping[str, Any] | None = None,
            *, finished: bool = False, **changes: Any) -> Suspension:
    """``s`` in ``status`` with a history step appended and the fields in ``changes`` replaced."""
    entry = Step(status, at_ms, actor, _json({"step": step, **(details or {})}))
    return replace(s, status=status, updated_ms=at_ms, history=(*s.history, entry),
                   finished_ms=at_ms if finished else s.finished_ms, **changes)


# --- helpers -----------------------------------------------------------------------------------

def _filled(approvals: Iterable[Approval], pol: Policy) -> int:
    """How many approval places distinct approvers fill at most (bipartite matching, tiny sizes)."""
    slots = [step for step in pol.approvals for _ in range(step.count)]
    people = [set(a.roles) for a in approvals if a.principal != AUTO_APPROVER]
    owner: list[int | None] = [None] * len(slots)

    def place(person: int, seen: set[int]) -> bool:
        for index, slot in enumerate(slots):
            if index in seen or not slot.admits(people[person]):
                continue
            seen.add(index)
            holder = owner[index]
            if holder is None or place(holder, seen):
                owner[index] = person
                return True
        return False

    return sum(place(person, set()) for person in range(len(people)))


def _needs_text(approvals: Iterable[Approval], pol: Policy) -> str:
    """What is still needed, e.g. "1 of ops" (approximate when approvers hold several roles)."""
    people = [set(a.roles) for a in approvals if a.principal != AUTO_APPROVER]
    parts = []
    for step in pol.approvals:
        have = 0
        while have < step.count and people:
            match = next((p for p in people if step.admits(p)), None)
            if match is None:
                break
            people.remove(match)
            have += 1
        if have < step.count:
            parts.append(f"{step.count - have} of {'/'.join(step.roles)}")
    return ", ".join(parts) or "nothing"


def _auto_rule(pol: SuspendPolicy, requester: str) -> str:
    return "auto_approve_requesters" if pol.auto_approves(requester) else "no approvals required"


def _resolve(s: Suspension, policy: Policy | SuspendPolicies | None) -> Policy:
    if policy is None:
        return s.policy
    if isinstance(policy, SuspendPolicies):
        return policy.resume if s.kind == RESUME else policy.for_severity(s.severity)
    if isinstance(policy, ResumePolicy if s.kind == RESUME else SuspendPolicy):
        return policy
    raise InvalidEventError(f"a {s.kind} is judged by a {s.kind} policy, not {type(policy).__name__}")


def _suspend_policy(policy: SuspendPolicy | SuspendPolicies, severity: str) -> SuspendPolicy:
    if isinstance(policy, SuspendPolicies):
        return policy.for_severity(severity)
    if not isinstance(policy, SuspendPolicy):
        raise InvalidEventError(f"a suspend request needs a SuspendPolicy, not {type(policy).__name__}")
    if policy.severity != severity:
        raise InvalidEventError(f"a {severity} request was given the {policy.severity} policy")
    return policy


def _suspension(s: Any) -> None:
    if not isinstance(s, Suspension):
        raise InvalidEventError(f"expected a Suspension, not {type(s).__name__}")


def _same_plugin(s: Suspension, tenant_id: str, plugin_id: str) -> None:
    if (s.tenant_id, s.plugin_id) != (tenant_id, plugin_id):
        raise InvalidEventError(f"{s.suspension_id} belongs to {s.tenant_id}/{s.plugin_id}, "
                                f"not {tenant_id}/{plugin_id}", suspension_id=s.suspension_id)


def _text(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"{name} must be a non-empty string, not {value!r}")


def _ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventError(f"at_ms must be epoch milliseconds (an int), not {value!r}")
    return value


def _roles(roles: Any) -> tuple[str, ...]:
    if isinstance(roles, str):
        return (roles,)
    try:
        held = tuple(dict.fromkeys(roles))
    except TypeError:
        raise InvalidEventError(f"roles must be a list of role names, not {roles!r}") from None
    if not all(isinstance(r, str) for r in held):
        raise InvalidEventError(f"roles must be a list of role names, not {roles!r}")
    return held


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _ts(value: Any) -> int | str | None:
    """The runtime's timestamp as sent: epoch ms, or an RFC 3339 string."""
    return value if isinstance(value, str) else _opt_int(value)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _elapsed(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else max(0, end - start)


def _label(s: Suspension) -> str:
    return f"{s.kind} {s.suspension_id}"


def _json(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return value


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    return _json(dict(value))


def _command_record(command: Mapping[str, Any]) -> dict[str, Any]:
    """A stored command, checked for what the machine reads from it."""
    if (not isinstance(command.get("command_id"), str) or command.get("action") not in ACTIONS
            or not all(isinstance(command.get(k), int) for k in ("deadline", "issued_at_ms", "attempt"))):
        raise TypeError(f"command {command.get('command_id')!r} needs command_id, action, deadline, "
                        "issued_at_ms and attempt")
    return _copy(command)


def _ack_details(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"command_id": record["command_id"], "instance_id": record["instance_id"], "ack_status": record["status"],
            "in_flight": record["in_flight"]}


def _base(s: Suspension) -> dict[str, Any]:
    return {"suspension_id": s.suspension_id, "kind": s.kind, "severity": s.severity, "mode": s.mode,
            "status": s.status, "requester": s.requester, "approvers": list(s.approvers)}


def _audit(s: Suspension, action: str, actor: str, /, **details: Any) -> Audit:
    return Audit(action, actor, s.tenant_id, s.plugin_id, s.suspension_id, _json({**_base(s), **details}))


def _notify(s: Suspension, kind: str, /, **details: Any) -> Notify:
    return Notify(kind, s.tenant_id, s.plugin_id, s.suspension_id,
                  _json({**_base(s), "reason": s.reason, **details}))


def _alert(s: Suspension, kind: str, summary: str, /, **details: Any) -> RaiseAlert:
    return RaiseAlert(kind, "critical", s.tenant_id, s.plugin_id, s.suspension_id, summary,
                      _json({**_base(s), "attempts": len(s.commands), **details}))


def _evidence(s: Suspension, at_ms: int) -> SnapshotEvidence:
    return SnapshotEvidence(s.tenant_id, s.plugin_id, s.suspension_id, at_ms, s.status,
                            _json({**_base(s), "reason": s.reason, "requesters": list(s.requesters),
                                   "request_ids": [r.request_id for r in s.requests]}))


def _completed(s: Suspension) -> Completed:
    return Completed(_json({
        **_base(s), "tenant_id": s.tenant_id, "plugin_id": s.plugin_id, "reason": s.reason,
        "requesters": list(s.requesters), "forced": s.force_attempts > 0, "attempts": len(s.commands),
        "created_ms": s.created_ms, "finished_ms": s.finished_ms, "resumes": s.resumes, "elapsed_ms": s.elapsed()}))
