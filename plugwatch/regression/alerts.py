"""The alert lifecycle (DESIGN §5): alert_id → status, fingerprint, ticket, fix, history.

Pure: ``apply`` takes a lifecycle and an event and returns a new lifecycle, or raises
``AlertTransitionError``. The grid (state x event → new state; "=" a no-op, "-" refused):

    state \\ event       reported  ticketed  fix_submitted       regression_passed  regression_failed
    open                reported  -         regression_running  -                  -
    reported            =         ticketed  regression_running  -                  -
    ticketed            =         =         regression_running  -                  -
    regression_running  -         -         - (one run at once) resolved           failed
    failed              -         -         regression_running  -                  =
    resolved            -         -         -                   =                  -

Repeats are no-ops because alerts arrive as storms of revisions and results may be redelivered.
A resolved alert is final: a new alert opens a new lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

OPEN = "open"
REPORTED = "reported"
TICKETED = "ticketed"
REGRESSION_RUNNING = "regression_running"
RESOLVED = "resolved"
FAILED = "failed"
STATES = (OPEN, REPORTED, TICKETED, REGRESSION_RUNNING, RESOLVED, FAILED)
EVENTS = ("reported", "ticketed", "fix_submitted", "regression_passed", "regression_failed")

TRANSITIONS: dict[tuple[str, str], str] = {
    (OPEN, "reported"): REPORTED,
    (REPORTED, "ticketed"): TICKETED,
    (OPEN, "fix_submitted"): REGRESSION_RUNNING,
    (REPORTED, "fix_submitted"): REGRESSION_RUNNING,
    (TICKETED, "fix_submitted"): REGRESSION_RUNNING,
    (FAILED, "fix_submitted"): REGRESSION_RUNNING,
    (REGRESSION_RUNNING, "regression_passed"): RESOLVED,
    (REGRESSION_RUNNING, "regression_failed"): FAILED,
}
NO_OPS = frozenset({
    (REPORTED, "reported"), (TICKETED, "reported"), (TICKETED, "ticketed"),
    (RESOLVED, "regression_passed"), (FAILED, "regression_failed"),
})
_DETAILS = {
    "reported": {"report_id"},
    "ticketed": {"ticket_id", "ticket_url"},
    "fix_submitted": {"fix_id", "version", "commit"},
    "regression_passed": {"fix_id", "note"},
    "regression_failed": {"fix_id", "note"},
}


class AlertTransitionError(ValueError):
    """A forbidden event for the alert's status (the HTTP layer answers 409)."""

    def __init__(self, lifecycle: AlertLifecycle, event: str, reason: str) -> None:
        super().__init__(f"alert {lifecycle.alert_id} is {lifecycle.status}: {event} refused ({reason})")
        self.status = lifecycle.status
        self.event = event


@dataclass(frozen=True)
class Fix:
    """The fix under test or last tested."""

    fix_id: str | None
    version: str | None
    commit: str | None
    submitted_at_ms: int
    submitted_by: str | None


@dataclass(frozen=True)
class AlertLifecycle:
    alert_id: str
    tenant_id: str
    plugin_id: str
    status: str = OPEN
    fingerprint: str | None = None
    report_id: str | None = None
    ticket_id: str | None = None
    ticket_url: str | None = None
    fix: Fix | None = None
    last_note: str | None = None  # the last regression summary or note
    history: tuple[tuple[str, int, str | None], ...] = ()  # (status, at_ms, by)

    @classmethod
    def opened(cls, alert_id: str, tenant_id: str, plugin_id: str, at_ms: int,
               fingerprint: str | None = None, by: str | None = None) -> AlertLifecycle:
        """A new lifecycle in ``open`` with its first history entry."""
        return cls(alert_id, tenant_id, plugin_id, OPEN, fingerprint, history=((OPEN, at_ms, by),))

    def as_dict(self) -> dict[str, Any]:
        fix = self.fix
        return {
            "alert_id": self.alert_id, "tenant_id": self.tenant_id, "plugin_id": self.plugin_id,
            "status": self.status, "fingerprint": self.fingerprint, "report_id": self.report_id,
            "ticket_id": self.ticket_id, "ticket_url": self.ticket_url,
            "fix": None if fix is None else {
                "fix_id": fix.fix_id, "version": fix.version, "commit": fix.commit,
                "submitted_at_ms": fix.submitted_at_ms, "submitted_by": fix.submitted_by},
            "last_note": self.last_note,
            "history": [{"status": s, "at_ms": at, "by": by} for s, at, by in self.history],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertLifecycle:
        """The inverse of ``as_dict``; raises ``ValueError`` on an unknown status or missing id."""
        missing = [k for k in ("alert_id", "tenant_id", "plugin_id") if not data.get(k)]
        if missing:
            raise ValueError(f"alert lifecycle record needs {', '.join(missing)}")
        status = data.get("status", OPEN)
        if status not in STATES:
            raise ValueError(f"alert lifecycle status {status!r} is not one of {', '.join(STATES)}")
        raw_fix = data.get("fix")
        fix = None if raw_fix is None else Fix(
            raw_fix.get("fix_id"), raw_fix.get("version"), raw_fix.get("commit"),
            int(raw_fix.get("submitted_at_ms") or 0), raw_fix.get("submitted_by"))
        history = tuple((h["status"], int(h["at_ms"]), h.get("by")) for h in data.get("history") or [])
        return cls(str(data["alert_id"]), str(data["tenant_id"]), str(data["plugin_id"]), status,
                   data.get("fingerprint"), data.get("report_id"), data.get("ticket_id"),
                   data.get("ticket_url"), fix, data.get("last_note"), history)


def apply(lifecycle: AlertLifecycle, event: str, at_ms: int, *, by: str | None = None,
          **details: Any) -> AlertLifecycle:
    """The lifecycle after ``event``: a new object, or ``lifecycle`` itself for a no-op repeat.

    Details per event: reported(report_id), ticketed(ticket_id, ticket_url),
    fix_submitted(fix_id, version, commit), regression_passed/failed(fix_id, note). A result whose
    ``fix_id`` differs from the running fix's is refused (a stale run's result).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}; expected one of {', '.join(EVENTS)}")
    unexpected = sorted(set(details) - _DETAILS[event])
    if unexpected:
        raise TypeError(f"{event} takes details {sorted(_DETAILS[event])}, not {unexpected}")
    key = (lifecycle.status, event)
    if key in NO_OPS:
        return lifecycle
    target = TRANSITIONS.get(key)
    if target is None:
        raise AlertTransitionError(lifecycle, event, _refusal(lifecycle.status, event))
    changes: dict[str, Any] = {}
    if event == "reported":
        changes["report_id"] = details.get("report_id", lifecycle.report_id)
    elif event == "ticketed":
        if not details.get("ticket_id"):
            raise ValueError("ticketed needs the ticket's ticket_id")
        changes.update(ticket_id=str(details["ticket_id"]), ticket_url=details.get("ticket_url"))
    elif event == "fix_submitted":
        changes["fix"] = Fix(details.get("fix_id"), details.get("version"), details.get("commit"), at_ms, by)
        changes["last_note"] = None
    else:
        running = lifecycle.fix.fix_id if lifecycle.fix else None
        given = details.get("fix_id")
        if given is not None and running is not None and given != running:
            raise AlertTransitionError(lifecycle, event, f"result for fix {given}, but fix {running} is running")
        changes["last_note"] = details.get("note")
    return replace(lifecycle, status=target, history=(*lifecycle.history, (target, at_ms, by)), **changes)


def _refusal(status: str, event: str) -> str:
    if status == RESOLVED:
        return "the alert is resolved; a new alert opens a new lifecycle"
    if status == REGRESSION_RUNNING and event == "fix_submitted":
        return "a regression run is in progress; submit again when it has finished"
    if event in ("regression_passed", "regression_failed"):
        return "no regression run is in progress"
    if event == "ticketed" and status == OPEN:
        return "no report has been written yet"
    return "not allowed in this state"
