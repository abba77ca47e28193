"""Tickets and regression checks on the real broker and chDB (DESIGN §6 steps 4-5): one ticket per
error fingerprint through an alert storm and a worker restart, the outbox draining after a ticket
system outage (a real HTTP server playing the platform's generic ticket API), and fixes whose real
regression subprocess passes (ticket and alert closed) or fails (masked output on the ticket)."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from .conftest import TOKEN, Worker, consume, produce, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMAIL = "li.wei@example.com"
CARD = "6228480412345678905"


def now_ms() -> int:
    return int(time.time() * 1000)


def error_log(ts: int, instance: str, line: int) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "plugin_id": "payment-gateway", "plugin_version": "3.2.1", "instance_id": instance,
        "ts": ts, "level": "ERROR", "message": f"charge failed for {EMAIL}", "trace_id": uuid.uuid4().hex,
        "exception": {"type": "PaymentGatewayError", "message": f"card {CARD} refused",
                      "stacktrace": "Traceback (most recent call last):\n"
                                    f'  File "/srv/plugin/api.py", line {line}, in handle\n'
                                    '  File "/srv/plugin/settle.py", line 88, in settle\n'
                                    "PaymentGatewayError: settlement database unavailable"},
    }


def an_alert(ts: int) -> dict[str, Any]:
    return {"alert_id": f"ALR-{uuid.uuid4().hex[:10]}", "ts": ts, "tenant_id": "acme", "plugin_id": "payment-gateway",
            "severity": "critical", "kind": "error_rate", "summary": "errors on payment-gateway"}


def send(broker, topic: str, records: list[dict[str, Any]]) -> None:
    produce(broker, topic, [(f"{r['tenant_id']}/{r['plugin_id']}".encode(), orjson.dumps(r)) for r in records])


def incident(broker, worker: Worker) -> int:
    """Errors of payment-gateway in the worker's window; returns their time."""
    t = now_ms()
    send(broker, worker.topics.logs, [error_log(t - 10_000 + i * 1000, f"pg-{i}", 40 + i) for i in range(3)])
    wait_for(lambda: len(worker.get("/internal/debug/window", plugin="acme/payment-gateway")["entries"]) >= 3,
             60, "the errors in the window", worker)
    return t


def tickets(worker: Worker) -> list[dict[str, Any]]:
    return worker.get("/api/tickets", plugin="payment-gateway")["tickets"]


def ticket_with(worker: Worker, what: str, check) -> dict[str, Any]:
    def found():
        rows = tickets(worker)
        return rows[0] if len(rows) == 1 and check(rows[0]) else None

    return wait_for(found, 60, what, worker)


def alert_state(worker: Worker, alert_id: str) -> dict[str, Any] | None:
    response = worker.http.get(f"/internal/debug/alerts/{alert_id}", headers=AUTH)
    return response.json() if response.status_code == 200 else None


def test_a_storm_of_alerts_makes_one_ticket_also_across_a_restart(broker, access_file, tmp_path):
    data_dir = str(tmp_path / "data")
    worker = Worker(broker, access_file, tmp_path, data_dir=data_dir).start()
    try:
        t = incident(broker, worker)
        storm = [an_alert(t + i) for i in range(5)]
        send(broker, worker.topics.alerts, storm)
        ticket = ticket_with(worker, "one ticket counting 5 alerts", lambda row: row["occurrences"] == 5)
        assert ticket["status"] == "open" and ticket["system"] == "local"
        assert ticket["owner"] == "team-payments" and ticket["assignee"] == "payments-oncall"
        assert ticket["severity"] == "critical" and "plugin-payment-gateway" in ticket["labels"]
        assert ticket["url"].endswith(f"/api/tickets/{ticket['ticket_id']}")
        assert "PaymentGatewayError" in ticket["title"] and "#payments-oncall" in ticket["body"]
        text = orjson.dumps(ticket).decode()
        assert EMAIL not in text and CARD not in text
        report = worker.get(f"/internal/debug/reports/{ticket['report_id']}")
        assert report["fingerprint"] == ticket["fingerprint"]
        detail = worker.get(f"/api/tickets/{ticket['ticket_id']}")
        assert sum(1 for c in detail["comments"] if c["kind"] == "alert") == 4  # one per alert after the first
        for sent in storm:
            state = wait_for(lambda: (s := alert_state(worker, sent["alert_id"])) and s["status"] == "ticketed" and s,
                             60, f"alert {sent['alert_id']} ticketed", worker)
            assert state["ticket_id"] == ticket["ticket_id"]
    finally:
        worker.stop()

    again = Worker(broker, access_file, tmp_path, app_id=worker.app_id, topics=worker.topics, data_dir=data_dir).start()
    try:
        send(broker, again.topics.alerts, [an_alert(now_ms())])
        after = ticket_with(again, "the same ticket counting a 6th alert", lambda row: row["occurrences"] == 6)
        assert after["ticket_id"] == ticket["ticket_id"]
        rows = again.sql("SELECT count() FROM plugwatch.tickets FINAL")
        assert rows == [[1]]
    finally:
        again.stop()


def test_a_failed_regression_comments_masked_output_and_a_passing_one_closes_ticket_and_alert(worker, broker):
    t = incident(broker, worker)
    sent = an_alert(t)
    send(broker, worker.topics.alerts, [sent])
    alert_id = sent["alert_id"]
    wait_for(lambda: (s := alert_state(worker, alert_id)) and s["status"] == "ticketed", 60, "alert ticketed", worker)
    ticket = tickets(worker)[0]

    fixed = worker.http.post(f"/internal/debug/alerts/{alert_id}/fix", headers=AUTH,
                             json={"version": "3.2.1", "commit": "0a1b2c3d"})
    assert fixed.status_code == 202, fixed.text
    failed = wait_for(lambda: (s := alert_state(worker, alert_id)) and s["status"] == "failed" and s, 90,
                      "the regression of 3.2.1 to fail", worker)
    assert "FAIL" in failed["last_note"]

    def failure_comment():
        comments = worker.get(f"/api/tickets/{ticket['ticket_id']}")["comments"]
        return next((c for c in comments if c["kind"] == "comment"), None)

    comment = wait_for(failure_comment, 60, "the failure comment on the ticket", worker)
    assert "Regression checks failed" in comment["body"] and "AssertionError" in comment["body"]
    assert "hunter2" not in comment["body"]  # the check prints a DSN with a password
    assert tickets(worker)[0]["status"] == "open"

    assert worker.http.post(f"/internal/debug/alerts/{alert_id}/fix", headers=AUTH,
                            json={"version": "3.2.2", "commit": "4e5f6a7b"}).status_code == 202
    resolved = wait_for(lambda: (s := alert_state(worker, alert_id)) and s["status"] == "resolved" and s, 90,
                        "the alert resolved", worker)
    assert [h["status"] for h in resolved["history"]] == [
        "open", "reported", "ticketed", "regression_running", "failed", "regression_running", "resolved"]
    closed = ticket_with(worker, "the ticket closed", lambda row: row["status"] == "closed")
    assert closed["ticket_id"] == ticket["ticket_id"]
    (_, event), = consume(broker, worker.topics.alert_resolved, 1)
    assert event["alert_id"] == alert_id and event["ticket_id"] == ticket["ticket_id"]
    assert event["version"] == "3.2.2" and event["regression"]["passed"] is True
    assert "hunter2" not in orjson.dumps(event).decode()
    assert "debug_ticket_autoclose_rate 0.5" in worker.metrics()

    again = worker.http.post(f"/internal/debug/alerts/{alert_id}/fix", headers=AUTH, json={"version": "3.2.3"})
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert worker.http.post("/internal/debug/alerts/ALR-none/fix", headers=AUTH, json={}).status_code == 404
    assert worker.http.post(f"/internal/debug/alerts/{alert_id}/fix", json={}).status_code == 401


class GenericTicketApi(BaseHTTPRequestHandler):
    """The platform's generic ticket API (docs/tickets.md), answering 503 while ``down``."""

    server: Any

    def log_message(self, *args: Any) -> None:
        return None

    def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        data = orjson.dumps(body or {})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlparse(self.path)
        state["requests"].append(("GET", url.path))
        if state["down"]:
            return self._reply(503, {"error": "maintenance"})
        key = parse_qs(url.query).get("idempotency_key", [""])[0]
        found = state["by_key"].get(key)
        return self._reply(200, found) if found else self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        state = self.server.state
        body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        path = urlparse(self.path).path
        state["requests"].append(("POST", path))
        if state["down"]:
            return self._reply(503, {"error": "maintenance"})
        if path == "/internal/ticket/create":
            key = body["idempotency_key"]
            if key not in state["by_key"]:
                number = len(state["tickets"]) + 1
                state["tickets"][str(number)] = {**body, "status": "open", "comments": []}
                state["by_key"][key] = {"id": str(number), "url": f"http://tickets.example/{number}"}
            return self._reply(201, state["by_key"][key])
        ticket = state["tickets"].get(str(body.get("id")))
        if ticket is None:
            return self._reply(404, {"error": "no such ticket"})
        if path == "/internal/ticket/update":
            ticket.update({k: body[k] for k in ("title", "body", "occurrences") if k in body})
        elif path == "/internal/ticket/comment":
            ticket["comments"].append(body["body"])
        elif path == "/internal/ticket/close":
            ticket["status"] = "closed"
        return self._reply(200, {"id": body["id"]})


def test_ticket_work_waits_in_the_outbox_while_the_ticket_system_is_down_and_lands_once(broker, access_file, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), GenericTicketApi)
    server.state = {"down": True, "requests": [], "tickets": {}, "by_key": {}}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = Worker(broker, access_file, tmp_path, tickets__system="generic",
                    tickets__options__base_url=f"http://127.0.0.1:{server.server_port}",
                    tickets__attempts="2", tickets__first_delay_s="0.05").start()
    try:
        t = incident(broker, worker)
        first = an_alert(t)
        send(broker, worker.topics.alerts, [first])

        def waiting():
            delay = next((float(line.split()[-1]) for line in worker.metrics().splitlines()
                          if line.startswith("debug_ticket_outbox_delay_seconds ")), 0.0)
            return len(server.state["requests"]) >= 4 and delay > 0 and delay

        wait_for(waiting, 60, "ticket requests refused and the outbox delay visible", worker)
        send(broker, worker.topics.alerts, [an_alert(t + 1)])  # queues behind the first
        assert server.state["tickets"] == {}
        server.state["down"] = False

        def delivered():
            made = server.state["tickets"]
            ticket = next(iter(made.values()), {})
            # The second alert's op updates the ticket, then comments: two requests, awaited both.
            return len(made) == 1 and ticket.get("occurrences") == 2 and ticket.get("comments") and made

        made = wait_for(delivered, 90, "one ticket counting both alerts, with its comment", worker)
        (number, remote), = made.items()
        assert remote["tenant_id"] == "acme" and remote["owner"] == "team-payments"
        assert EMAIL not in orjson.dumps(remote).decode()
        assert len(remote["comments"]) == 1
        ours = ticket_with(worker, "the mapping to the generic ticket", lambda row: row["external_id"] == number)
        assert ours["system"] == "generic" and ours["url"] == f"http://tickets.example/{number}"
        wait_for(lambda: "debug_ticket_outbox_delay_seconds 0.0" in worker.metrics(), 30, "the outbox drained", worker)
    finally:
        worker.stop()
        server.shutdown()
