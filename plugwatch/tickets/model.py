"""Tickets as plugwatch keeps them (DESIGN §6 step 4): one per (tenant, plugin, error fingerprint).

Pure: no HTTP, Kafka or ClickHouse. ``render_content`` turns a (masked) report and the plugin's
ownership into what a ticket system is sent; ``on_report`` decides what a report does to the
plugin's ticket -- create it, count a new alert, refresh it for a later revision of a report it
already has, or nothing for a replay -- so a storm of alerts makes one ticket, retries and
restarts included. The caller masks the rendered text once more before it leaves.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

# Alert and op ids remembered per ticket to recognise a replayed alert or op after a restart.
REMEMBERED_IDS = 100
EXCERPT_LINES = 20


@dataclass(frozen=True)
class TicketContent:
    """What a ticket system is sent; already masked."""

    title: str
    body: str
    tenant_id: str
    plugin_id: str
    fingerprint: str
    idempotency_key: str
    severity: str
    owner: str | None = None
    assignee: str | None = None
    report_url: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TicketRef:
    system: str  # generic | jira | github | local
    external_id: str
    url: str | None = None


@dataclass(frozen=True)
class Ownership:
    """The owner fields a ticket names (from config/plugins/owners.yaml)."""

    owner: str | None = None
    team: str | None = None
    contact: str | None = None
    assignee: str | None = None


def identity(tenant_id: str, plugin_id: str, fingerprint: str, generation: int) -> tuple[str, str]:
    """(ticket_id, idempotency key) of the ``generation``-th ticket of a fingerprint: the same on
    every worker and after every restart, so a retried create finds what the first one made."""
    digest = hashlib.sha256(f"{tenant_id}/{plugin_id}/{fingerprint}/{generation}".encode()).hexdigest()
    return f"TKT-{digest[:16]}", f"pw-{digest[:24]}"


@dataclass(frozen=True)
class Ticket:
    """The ``tickets`` row: the mapping to the ticket system and what the ticket says."""

    ticket_id: str
    idempotency_key: str
    generation: int
    tenant_id: str
    plugin_id: str
    fingerprint: str
    system: str
    external_id: str = ""
    url: str = ""
    title: str = ""
    severity: str = ""
    owner: str = ""
    assignee: str = ""
    status: str = "pending"  # pending (not yet in the ticket system) | open | closed
    occurrences: int = 0
    report_id: str = ""
    report_url: str = ""
    labels: tuple[str, ...] = ()
    body: str = ""
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    closed_ms: int | None = None
    alert_ids: tuple[str, ...] = ()  # the latest REMEMBERED_IDS alerts counted
    op_ids: tuple[str, ...] = ()  # the latest REMEMBERED_IDS comment/close ops applied
    version: int = 0

    @property
    def ref(self) -> TicketRef | None:
        return TicketRef(self.system, self.external_id, self.url or None) if self.external_id else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"], data["alert_ids"], data["op_ids"] = list(self.labels), list(self.alert_ids), list(self.op_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ticket:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("labels", "alert_ids", "op_ids"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The ticket as ``GET /api/tickets`` shows it (no bookkeeping ids)."""
        data = self.as_dict()
        for name in ("op_ids", "alert_ids", "version", "idempotency_key"):
            data.pop(name)
        data["recent_alerts"] = list(self.alert_ids[-10:])
        return data


@dataclass(frozen=True)
class Step:
    """What one report does to its ticket."""

    kind: str  # create | new_alert | revision | replay
    ticket: Ticket
    comment: str | None = None


def new_ticket(content: TicketContent, system: str, generation: int, now_ms: int) -> Ticket:
    ticket_id, key = identity(content.tenant_id, content.plugin_id, content.fingerprint, generation)
    return Ticket(ticket_id=ticket_id, idempotency_key=key, generation=generation, tenant_id=content.tenant_id,
                  plugin_id=content.plugin_id, fingerprint=content.fingerprint, system=system,
                  first_seen_ms=now_ms, created_ms=now_ms)


def on_report(ticket: Ticket | None, content: TicketContent, *, system: str, alert_id: str, report_id: str,
              alert_ts: int, now_ms: int) -> Step:
    """The ticket after a report of ``alert_id``: ``create`` when the fingerprint has no open
    ticket (none yet, or the last one was closed: a recurrence is a new ticket), ``new_alert`` when
    this alert was not counted yet (count, last seen, a comment), ``revision`` for a later
    revision of an alert already counted, ``replay`` when nothing changes (or the alert's ticket
    is closed already)."""
    if ticket is not None and ticket.status == "closed" and alert_id in ticket.alert_ids:
        return Step("replay", ticket)  # a late revision of an alert whose ticket was closed
    if ticket is None or ticket.status == "closed":
        generation = 0 if ticket is None else ticket.generation + 1
        fresh = new_ticket(content, system, generation, now_ms)
        return Step("create", _refresh(fresh, content, report_id, alert_id, alert_ts, now_ms, count=True))
    if alert_id not in ticket.alert_ids:
        comment = (f"Alert {alert_id} again at {iso(alert_ts)} (occurrence {ticket.occurrences + 1}). "
                   f"Report: {content.report_url or report_id}")
        return Step("new_alert", _refresh(ticket, content, report_id, alert_id, alert_ts, now_ms, count=True), comment)
    if ticket.body != content.body or ticket.title != content.title or ticket.report_id != report_id:
        return Step("revision", _refresh(ticket, content, report_id, alert_id, alert_ts, now_ms, count=False))
    return Step("replay", ticket)


def _refresh(ticket: Ticket, content: TicketContent, report_id: str, alert_id: str, alert_ts: int, now_ms: int,
             *, count: bool) -> Ticket:
    changes: dict[str, Any] = dict(
        title=content.title, body=content.body, severity=content.severity, owner=content.owner or "",
        assignee=content.assignee or "", labels=content.labels, report_id=report_id,
        report_url=content.report_url or "", updated_ms=now_ms, version=ticket.version + 1,
    )
    if count:
        changes["occurrences"] = ticket.occurrences + 1
        changes["alert_ids"] = (ticket.alert_ids + (alert_id,))[-REMEMBERED_IDS:]
        changes["last_seen_ms"] = max(ticket.last_seen_ms, alert_ts)
        changes["first_seen_ms"] = min(ticket.first_seen_ms or alert_ts, alert_ts)
    return replace(ticket, **changes)


def applied(ticket: Ticket, op_id: str, now_ms: int, *, closed: bool = False) -> Ticket:
    """The ticket after a comment or close op (remembered so a replay of it is skipped)."""
    changes: dict[str, Any] = dict(op_ids=(ticket.op_ids + (op_id,))[-REMEMBERED_IDS:], updated_ms=now_ms,
                                   version=ticket.version + 1)
    if closed:
        changes.update(status="closed", closed_ms=now_ms)
    return replace(ticket, **changes)


def render_content(report: dict[str, Any], ownership: Ownership, *, generation: int = 0) -> TicketContent:
    """Title, body and labels of the ticket for a masked report."""
    tenant, plugin = report["tenant_id"], report["plugin_id"]
    alert = report.get("alert") or {}
    severity = str(alert.get("severity") or "unknown")
    fingerprint = str(report.get("fingerprint") or "")
    _, key = identity(tenant, plugin, fingerprint, generation)
    stacks = report.get("stack_traces") or []
    top = stacks[0] if stacks else None
    headline = f"{top.get('type') or 'error'}: {top.get('message') or ''}".strip(": ") if top else str(alert.get("summary") or alert.get("kind") or "alert")
    title = f"[{severity}] {tenant}/{plugin}: {headline}"[:250]
    report_url = (report.get("links") or {}).get("report_url")
    versions = ", ".join((report.get("environment") or {}).get("plugin_versions") or []) or "unknown"
    owner_line = ownership.owner or "unassigned"
    if ownership.team or ownership.contact:
        owner_line += " (" + ", ".join(x for x in (ownership.team, ownership.contact) if x) + ")"
    lines = [
        f"**Plugin:** {plugin} (version {versions})",
        f"**Tenant:** {tenant}",
        f"**Owner:** {owner_line}",
        f"**Severity:** {severity}",
        f"**Alert:** {alert.get('alert_id', report.get('alert_id'))} at {iso(alert.get('ts'))}: {alert.get('summary') or ''}".rstrip(": "),
        f"**Report:** {report_url or report.get('report_id')}",
        f"**Fingerprint:** `{fingerprint}`",
    ]
    if top:
        instances = ", ".join(top.get("instances") or []) or "unknown"
        lines += ["", "### Error", f"{headline} ({top.get('count', 1)} in the report window; instances: {instances})"]
        if top.get("stacktrace"):
            excerpt = "\n".join(str(top["stacktrace"]).splitlines()[:EXCERPT_LINES])
            lines += ["```", excerpt.replace("```", "'''"), "```"]
        others = len(stacks) - 1
        if others > 0:
            lines.append(f"{others} more distinct stack trace(s) in the report.")
    completeness = report.get("completeness") or {}
    if not completeness.get("complete", True):
        lines += ["", f"The report is incomplete (coverage {completeness.get('coverage')}); see its notes and export link."]
    labels = ("plugwatch", _label(f"tenant-{tenant}"), _label(f"plugin-{plugin}"), _label(f"severity-{severity}"))
    return TicketContent(title=title, body="\n".join(lines), tenant_id=tenant, plugin_id=plugin, fingerprint=fingerprint,
                         idempotency_key=key, severity=severity, owner=ownership.owner, assignee=ownership.assignee,
                         report_url=report_url, labels=labels)


def with_generation(content: TicketContent, generation: int) -> TicketContent:
    _, key = identity(content.tenant_id, content.plugin_id, content.fingerprint, generation)
    return replace(content, idempotency_key=key)


def content_from_dict(data: dict[str, Any]) -> TicketContent:
    known = {f for f in TicketContent.__dataclass_fields__}
    values = {k: v for k, v in data.items() if k in known}
    values["labels"] = tuple(values.get("labels") or ())
    return TicketContent(**values)


def content_as_dict(content: TicketContent) -> dict[str, Any]:
    data = asdict(content)
    data["labels"] = list(content.labels)
    return data


def iso(ms: Any) -> str:
    if not isinstance(ms, int):
        return "unknown time"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _label(text: str) -> str:
    """Ticket labels: no spaces (Jira), lower case, bounded."""
    return "".join(c if c.isalnum() or c in "-_.:" else "-" for c in text.lower())[:100]
