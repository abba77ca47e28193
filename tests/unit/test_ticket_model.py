"""Tickets as plugwatch keeps them: identity, content, and what each report or op does (pure)."""

from dataclasses import replace

from plugwatch.tickets.model import (
    Ownership,
    Ticket,
    applied,
    identity,
    on_report,
    render_content,
    with_generation,
)

NOW = 1_764_000_000_000


def report(alert_id: str = "ALR-1", revision: int = 1, count: int = 3, **changes) -> dict:
    base = {
        "report_id": f"RPT-{alert_id}", "alert_id": alert_id, "tenant_id": "acme", "plugin_id": "payment-gateway",
        "revision": revision, "fingerprint": "fp-settle", "owner": "team-payments",
        "alert": {"alert_id": alert_id, "ts": NOW - 1000, "severity": "critical", "kind": "error_rate",
                  "summary": "errors on payment-gateway"},
        "environment": {"plugin_versions": ["3.2.1"]},
        "stack_traces": [{"fingerprint": "fp-settle", "type": "PaymentGatewayError", "message": "settlement down",
                          "stacktrace": "Traceback\n  File \"settle.py\", line 88\nPaymentGatewayError: down",
                          "count": count, "instances": ["pg-0", "pg-1"]}],
        "links": {"report_url": f"http://plugwatch/internal/debug/reports/RPT-{alert_id}.html"},
        "completeness": {"complete": True},
    }
    base.update(changes)
    return base


OWNERSHIP = Ownership(owner="team-payments", team="Payments", contact="#payments-oncall", assignee="payments.lead")


def step(ticket, rep, **kwargs):
    content = render_content(rep, OWNERSHIP)
    return on_report(ticket, content, system="local", alert_id=rep["alert_id"], report_id=rep["report_id"],
                     alert_ts=rep["alert"]["ts"], now_ms=kwargs.get("now", NOW))


def opened(rep) -> Ticket:
    created = step(None, rep).ticket
    return replace(created, external_id="TKT-x", url="http://t/TKT-x", status="open")


def test_identity_is_stable_per_fingerprint_and_generation():
    assert identity("acme", "p", "fp", 0) == identity("acme", "p", "fp", 0)
    assert identity("acme", "p", "fp", 0) != identity("acme", "p", "fp", 1)
    assert identity("acme", "p", "fp", 0) != identity("acme", "q", "fp", 0)
    ticket_id, key = identity("acme", "p", "fp", 0)
    assert ticket_id.startswith("TKT-") and key.startswith("pw-") and len(key) <= 40


def test_content_names_plugin_tenant_owner_severity_report_and_error():
    content = render_content(report(), OWNERSHIP)
    assert content.title == "[critical] acme/payment-gateway: PaymentGatewayError: settlement down"
    for text in ("payment-gateway (version 3.2.1)", "**Tenant:** acme", "team-payments (Payments, #payments-oncall)",
                 "RPT-ALR-1.html", "`fp-settle`", "settle.py", "3 in the report window; instances: pg-0, pg-1"):
        assert text in content.body
    assert content.assignee == "payments.lead" and content.owner == "team-payments"
    assert content.labels == ("plugwatch", "tenant-acme", "plugin-payment-gateway", "severity-critical")
    assert content.idempotency_key == identity("acme", "payment-gateway", "fp-settle", 0)[1]
    assert with_generation(content, 2).idempotency_key == identity("acme", "payment-gateway", "fp-settle", 2)[1]


def test_content_without_a_stack_uses_the_alert_and_says_when_the_report_is_incomplete():
    content = render_content(report(stack_traces=[], completeness={"complete": False, "coverage": 0.4}), Ownership())
    assert content.title == "[critical] acme/payment-gateway: errors on payment-gateway"
    assert "**Owner:** unassigned" in content.body and "incomplete (coverage 0.4)" in content.body


def test_the_first_report_creates_a_storm_counts_and_comments_and_replays_change_nothing():
    first = step(None, report("ALR-1"))
    assert first.kind == "create" and first.ticket.occurrences == 1 and first.ticket.alert_ids == ("ALR-1",)
    ticket = opened(report("ALR-1"))
    second = step(ticket, report("ALR-2"))
    assert second.kind == "new_alert" and second.ticket.occurrences == 2
    assert "ALR-2" in second.comment and "occurrence 2" in second.comment
    assert second.ticket.ticket_id == ticket.ticket_id and second.ticket.version == ticket.version + 1
    replay = step(second.ticket, report("ALR-2"))
    assert replay.kind == "replay" and replay.ticket is second.ticket


def test_a_later_revision_refreshes_the_ticket_without_counting():
    ticket = opened(report("ALR-1"))
    revised = step(ticket, report("ALR-1", revision=2, count=7))
    assert revised.kind == "revision" and revised.ticket.occurrences == 1
    assert "7 in the report window" in revised.ticket.body and revised.comment is None


def test_after_close_a_recurrence_opens_the_next_generation_but_a_late_revision_does_not():
    ticket = applied(opened(report("ALR-1")), "fix-1", NOW, closed=True)
    assert ticket.status == "closed" and ticket.op_ids == ("fix-1",)
    late = step(ticket, report("ALR-1", revision=3))
    assert late.kind == "replay"
    recurrence = step(ticket, report("ALR-9"))
    assert recurrence.kind == "create" and recurrence.ticket.generation == 1
    assert recurrence.ticket.ticket_id == identity("acme", "payment-gateway", "fp-settle", 1)[0]
    assert recurrence.ticket.occurrences == 1


def test_remembered_ids_are_bounded_and_the_record_round_trips():
    ticket = opened(report("ALR-0"))
    for i in range(1, 150):
        ticket = step(ticket, report(f"ALR-{i}")).ticket
    assert ticket.occurrences == 150 and len(ticket.alert_ids) == 100 and ticket.alert_ids[-1] == "ALR-149"
    assert Ticket.from_dict(ticket.as_dict()) == ticket
    public = ticket.public()
    assert "op_ids" not in public and "idempotency_key" not in public and len(public["recent_alerts"]) == 10
