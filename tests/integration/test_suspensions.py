"""Plugin suspension on the real broker and chDB, with ``plugwatch runtime-sim`` playing the plugin
runtime, a real SMTP server (aiosmtpd) and a real webhook server: wait success with evidence,
notifications and an audit trail that verifies; a wait timeout escalating to force and a failing
force ending locked (with the evidence store failing); dual-approval resume; 401/403 and tenant
isolation."""

from __future__ import annotations

import email
import email.policy
import gzip
import hashlib
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller

from plugwatch.embedded import free_port, stop_process
from plugwatch.sinks.topics import partition_of

from .conftest import PARTITIONS, TOKEN, Worker, consume, produce, wait_for

TOKENS = {"requester": "tok-requester", "sec": "tok-sec", "ops": "tok-ops", "other": "tok-other"}
EMAIL = "li.wei@example.com"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("people") / "access.yaml"
    roles = {"requester": ("[ops]", "['*']"), "sec": ("[security, auditor]", "['*']"), "ops": ("[ops]", "['*']"),
             "other": ("[developer, security]", "[globex]")}
    lines = ["principals:", "  - name: integration", f"    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}",
             "    roles: [auditor]", "    tenants: ['*']"]
    for name, token in TOKENS.items():
        role, tenants = roles[name]
        lines += [f"  - name: {name}", f"    token_sha256: {hashlib.sha256(token.encode()).hexdigest()}",
                  f"    roles: {role}", f"    tenants: {tenants}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


class Hooks(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.server.received.append(orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def channels(tmp_path: Path):
    """A real SMTP server and webhook server, and a notifications config naming them for tenant acme."""
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    hooks.received = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    config = tmp_path / "notifications.yaml"
    config.write_text(
        "tenants:\n"
        "  acme:\n    language: zh-CN\n    channels: [email, webhook, sms, console]\n"
        "    email: {to: [plugin-ops@acme.example]}\n    sms: {to: ['+8613800000000']}\n"
        f"    webhook: {{url: 'http://127.0.0.1:{hooks.server_port}/hook'}}\n"
        "  '*':\n    language: en\n    channels: [console]\n"
        f"channels:\n  smtp: {{host: 127.0.0.1, port: {smtp.port}, from: plugwatch@platform.example, timeout_s: 5}}\n"
        "  webhook: {timeout_s: 5}\n"
        f"  sms: {{url: 'http://127.0.0.1:{free_port()}/send', timeout_s: 2}}\n"  # the SMS gateway is down
    )
    yield config, mailbox, hooks
    smtp.stop()
    hooks.shutdown()


def start_sim(worker: Worker, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "plugwatch", "runtime-sim", "--delay-ms", "20", "--group",
         f"sim-{uuid.uuid4().hex[:8]}", *args],
        env=worker.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def plugin_state(worker: Worker, plugin: str, who: str = "sec") -> dict[str, Any]:
    response = worker.http.get(f"/api/plugins/{plugin}", params={"tenant_id": "acme"}, headers=auth(who))
    assert response.status_code == 200, response.text
    return response.json()


def ask_at_once(workers: list[Worker], plugin: str, requests: int) -> list[dict[str, Any]]:
    """``requests`` high-severity suspend requests for ``plugin`` sent at once, spread over ``workers``."""

    def ask(n: int) -> dict[str, Any]:
        with httpx.Client(base_url=str(workers[n % len(workers)].http.base_url), timeout=30) as client:
            response = client.post(f"/api/plugins/{plugin}/suspend", headers=auth("requester"),
                                   json={"tenant_id": "acme", "reason": f"finding {n}", "severity": "high"})
            assert response.status_code == 202, response.text
            return response.json()

    with ThreadPoolExecutor(requests) as pool:
        return list(pool.map(ask, range(requests)))


def errors_of(broker, worker: Worker, plugin: str) -> None:
    t = int(time.time() * 1000)
    logs = [{"tenant_id": "acme", "plugin_id": plugin, "plugin_version": "3.2.1", "instance_id": "pg-0", "ts": t - 1000 * i,
             "level": "ERROR", "message": f"card data logged for {EMAIL}", "feature_flags": {"new_client": True}}
            for i in range(5)]
    produce(broker, worker.topics.logs, [(f"acme/{plugin}".encode(), orjson.dumps(r)) for r in logs])
    wait_for(lambda: len(worker.get("/internal/debug/window", plugin=f"acme/{plugin}")["entries"]) >= 5, 60,
             "the plugin's logs in the window", worker)


def test_a_critical_risk_signal_suspends_in_wait_mode_with_evidence_notifications_and_a_verified_audit(
        broker, people, channels, tmp_path):
    config, mailbox, hooks = channels
    evidence_dir = tmp_path / "evidence"
    worker = Worker(broker, people, tmp_path, suspensions__notifications=str(config),
                    suspensions__evidence_dir=str(evidence_dir)).start()
    sim = start_sim(worker)
    try:
        errors_of(broker, worker, "pay")
        signal = {"signal_id": "RSK-1", "ts": int(time.time() * 1000), "tenant_id": "acme", "plugin_id": "pay",
                  "severity": "critical", "reason": "card data written to logs", "mode": "wait", "requester": "secscan"}
        produce(broker, worker.topics.risk_signals, [(b"acme/pay", orjson.dumps(signal))])
        state = wait_for(lambda: (s := plugin_state(worker, "pay"))["state"] == "suspended" and s, 60, "pay suspended",
                         worker)
        current = state["current"]
        assert current["status"] == "suspended" and current["mode"] == "wait" and current["requester"] == "secscan"
        assert current["elapsed"]["request_to_command_ms"] is not None

        (_, command), = consume(broker, worker.topics.suspend_command, 1)
        assert command["action"] == "suspend" and command["plugin_id"] == "pay" and command["tenant_id"] == "acme"
        assert command["requester"] == "secscan" and command["approvers"] and command["deadline"] > command["issued_at_ms"]
        (_, done), = consume(broker, worker.topics.suspend_completed, 1)
        assert done["suspension_id"] == current["suspension_id"] and done["status"] == "suspended"

        (_, evidence), = consume(broker, worker.topics.evidence, 1)
        assert evidence["evidence_id"].startswith("EVD-") and evidence["plugin_id"] == "pay"
        stored = next(evidence_dir.rglob(f"{evidence['sha256']}.jsonl.gz"))
        data = stored.read_bytes()
        assert hashlib.sha256(data).hexdigest() == evidence["sha256"] and evidence["counts"]["logs"] == 5
        assert EMAIL.encode() not in gzip.decompress(data)

        wait_for(lambda: len(mailbox.messages) >= 2 and len(hooks.received) >= 2, 60, "email and webhook", worker)
        message = email.message_from_bytes(mailbox.messages[-1].content, policy=email.policy.default)
        body = message.get_body().get_content()
        assert "pay" in body and "pay" in message["subject"] and EMAIL not in body
        assert any("暂停" in hook["subject"] for hook in hooks.received)
        rows = worker.wait_for_rows("SELECT channel, status FROM plugwatch.notifications FINAL "
                                    "WHERE plugin_id = 'pay' AND status = 'sent'", 4)
        assert {channel for channel, _ in rows} == {"email", "webhook", "console"}
        failed = worker.wait_for_rows("SELECT channel, attempts, error FROM plugwatch.notifications FINAL "
                                      "WHERE plugin_id = 'pay' AND status = 'failed'", 1)
        assert {channel for channel, _, _ in failed} == {"sms"} and all(attempts > 1 for _, attempts, _ in failed)

        record = worker.http.get(f"/api/evidence/{evidence['evidence_id']}", headers=auth("sec")).json()
        assert record["sha256"] == evidence["sha256"]
        download = worker.http.get(f"/api/evidence/{evidence['evidence_id']}.jsonl.gz", headers=auth("sec"))
        assert download.status_code == 200 and hashlib.sha256(download.content).hexdigest() == evidence["sha256"]
        assert worker.http.get(f"/api/evidence/{evidence['evidence_id']}", headers=auth("other")).status_code == 403
        again = worker.http.post("/api/plugins/pay/evidence", json={"tenant_id": "acme", "reason": "for the review"},
                                 headers=auth("sec"))
        assert again.status_code == 201 and again.json()["evidence_id"] != evidence["evidence_id"]

        audits = wait_for(lambda: (got := consume(broker, worker.topics.audit, 6)) and any(
            r["action"] == "evidence.download" for _, r in got) and got, 60, "the download audited", worker)
        actions = {record["action"] for _, record in audits}
        assert {"suspend.requested", "evidence.write", "notification.sent", "notification.failed",
                "evidence.download"} <= actions
        path = tmp_path / "audit.jsonl"
        records = [record for _, record in consume(broker, worker.topics.audit, len(audits))]
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        ok = subprocess.run([sys.executable, "-m", "plugwatch", "audit", "verify", "--file", str(path)],
                            capture_output=True, text=True, env=worker.env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        records[2]["details"] = {**records[2]["details"], "edited": True}
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        bad = subprocess.run([sys.executable, "-m", "plugwatch", "audit", "verify", "--file", str(path)],
                             capture_output=True, text=True, env=worker.env)
        assert bad.returncode == 1 and records[2]["audit_id"] in bad.stdout + bad.stderr
    finally:
        stop_process(sim)
        worker.stop()


def test_wait_timeout_escalates_to_force_and_a_failing_force_locks_while_evidence_storage_fails(
        broker, people, tmp_path):
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        "defaults: {default_mode: wait, wait_timeout_s: 1, force_timeout_s: 1, force_retries: 1, lock_on_failure: true}\n"
        "severities:\n"
        "  critical: {approvals: [{roles: [security], count: 1}], may_force: true, escalate_to_force: true}\n"
        "  high: {approvals: [{roles: [security], count: 1}], may_force: true, escalate_to_force: true}\n"
        "  medium: {approvals: [{roles: [security], count: 1}, {roles: [ops], count: 1}], may_force: true}\n"
        "  low: {approvals: [{roles: [security], count: 1}, {roles: [ops], count: 1}]}\n"
        "resume: {approvals: [{roles: [security, ops], count: 2}], timeout_s: 5, retries: 0}\n"
    )
    not_a_dir = tmp_path / "evidence-is-a-file"
    not_a_dir.write_text("the evidence store cannot write under a file")
    worker = Worker(broker, people, tmp_path, suspensions__policies=str(policies),
                    suspensions__evidence_dir=str(not_a_dir)).start()
    sim = start_sim(worker, "--silent", "suspend", "--failure-rate", "force_suspend=1")
    try:
        asked = worker.http.post("/api/plugins/crm/suspend", json={"tenant_id": "acme", "reason": "exfiltration",
                                                                  "severity": "high"}, headers=auth("requester"))
        assert asked.status_code == 202 and asked.json()["status"] == "requested", asked.text
        sid = asked.json()["suspension_id"]
        own = worker.http.post(f"/api/suspensions/{sid}/approve", headers=auth("requester"))
        assert own.status_code == 403 and own.json()["error"] in ("self_approval", "not_allowed")
        approved = worker.http.post(f"/api/suspensions/{sid}/approve", headers=auth("sec"))
        assert approved.status_code == 200 and approved.json()["status"] == "executing", approved.text

        locked = wait_for(lambda: (s := plugin_state(worker, "crm"))["state"] == "locked" and s, 90, "crm locked",
                          worker)
        actions = [c["action"] for c in locked["current"]["commands"]]
        assert actions == ["suspend", "force_suspend", "force_suspend", "lock"], actions
        alerts = consume(broker, worker.topics.alerts, 1)
        assert any(a["kind"] == "suspension_locked" and a["plugin_id"] == "crm" for _, a in alerts)
        assert "plugin_suspend_force_total 2.0" in worker.metrics()
        audits = wait_for(lambda: [r for _, r in consume(broker, worker.topics.audit, 1)
                                   if r["action"] == "evidence.failed"] or None, 90, "evidence failure audited", worker)
        assert audits[0]["plugin_id"] == "crm"
    finally:
        stop_process(sim)
        worker.stop()


def test_resume_needs_two_distinct_approvers_and_other_tenants_see_nothing(broker, people, tmp_path):
    worker = Worker(broker, people, tmp_path).start()
    sim = start_sim(worker)
    try:
        signal = {"signal_id": "RSK-2", "ts": int(time.time() * 1000), "tenant_id": "acme", "plugin_id": "wiki",
                  "severity": "critical", "reason": "malware", "mode": "wait", "requester": "secscan"}
        produce(broker, worker.topics.risk_signals, [(b"acme/wiki", orjson.dumps(signal))])
        wait_for(lambda: plugin_state(worker, "wiki")["state"] == "suspended", 60, "wiki suspended", worker)

        asked = worker.http.post("/api/plugins/wiki/resume", json={"tenant_id": "acme"}, headers=auth("requester"))
        assert asked.status_code == 202 and asked.json()["kind"] == "resume", asked.text
        rid = asked.json()["suspension_id"]
        first = worker.http.post(f"/api/suspensions/{rid}/approve", headers=auth("sec"))
        assert first.status_code == 200 and first.json()["status"] == "requested"
        again = worker.http.post(f"/api/suspensions/{rid}/approve", headers=auth("sec"))
        assert again.status_code in (403, 409)
        second = worker.http.post(f"/api/suspensions/{rid}/approve", headers=auth("ops"))
        assert second.status_code == 200 and second.json()["status"] == "executing", second.text
        wait_for(lambda: plugin_state(worker, "wiki")["state"] == "active", 60, "wiki resumed", worker)
        assert "plugin_resume_approval_duration_count 1.0" in worker.metrics()

        assert worker.http.get("/api/plugins/wiki", params={"tenant_id": "acme"}).status_code == 401
        assert worker.http.get("/api/plugins/wiki", params={"tenant_id": "acme"},
                               headers={"Authorization": "Bearer nope"}).status_code == 401
        assert worker.http.get("/api/plugins/wiki", params={"tenant_id": "acme"}, headers=auth("other")).status_code == 403
        assert worker.http.get(f"/api/suspensions/{rid}", headers=auth("other")).status_code == 403
        foreign = worker.http.post("/api/plugins/wiki/suspend", json={"tenant_id": "acme"}, headers=auth("other"))
        assert foreign.status_code == 403

        answers = ask_at_once([worker], "crm2", 10)
        assert len({a["suspension_id"] for a in answers}) == 1  # merged, not raced
        merged = worker.http.get(f"/api/suspensions/{answers[0]['suspension_id']}", headers=auth("sec")).json()
        assert len(merged["requests"]) == 10 and merged["status"] == "requested"
    finally:
        stop_process(sim)
        worker.stop()


def writer_share(worker: Worker) -> dict[str, Any]:
    return worker.http.get("/healthz").json()["suspensions"]


def test_two_workers_give_each_plugin_one_writer_and_the_survivor_carries_on(broker, people, tmp_path):
    """Requests for one plugin sent to two workers at once merge into one suspension; an approval
    taken by the worker that does not own the plugin is applied by the one that does; after the
    owner leaves, the other carries the plugin on from what it read of the state topic (each worker
    has a chDB of its own here, so nothing comes through ClickHouse)."""
    first = Worker(broker, people, tmp_path).start()
    second = Worker(broker, people, tmp_path, app_id=first.app_id, topics=first.topics)
    sim = None
    try:
        wait_for(lambda: writer_share(first)["joined"], 60, "the first worker's share of the ops", first)
        second.start()
        wait_for(lambda: (writer_share(second)["partitions"] and writer_share(first)["partitions"]
                          and sorted(writer_share(first)["partitions"] + writer_share(second)["partitions"])
                          == list(range(PARTITIONS))), 60, "the ops partitions split between the workers", second)
        owner, other = ((first, second) if partition_of(b"acme/crm3", PARTITIONS) in writer_share(first)["partitions"]
                        else (second, first))

        answers = ask_at_once([first, second], "crm3", 20)
        sid = answers[0]["suspension_id"]
        assert {a["suspension_id"] for a in answers} == {sid}  # merged, not raced, across workers
        for worker in (first, second):
            seen = worker.http.get(f"/api/suspensions/{sid}", headers=auth("sec")).json()
            assert len(seen["requests"]) == 20 and seen["status"] == "requested", seen

        sim = start_sim(first)
        approved = other.http.post(f"/api/suspensions/{sid}/approve", headers=auth("sec"))
        assert approved.status_code == 200 and approved.json()["status"] == "executing", approved.text
        for worker in (first, second):
            wait_for(lambda w=worker: plugin_state(w, "crm3")["state"] == "suspended", 60, "crm3 suspended", worker)

        owner.stop()  # leaves the group: the other worker takes the plugin's partition
        wait_for(lambda: PARTITIONS == len(writer_share(other)["partitions"]), 60, "every partition on the survivor",
                 other)
        asked = other.http.post("/api/plugins/crm3/resume", json={"tenant_id": "acme"}, headers=auth("requester"))
        assert asked.status_code == 202 and asked.json()["resumes"] == sid, asked.text
        rid = asked.json()["suspension_id"]
        for approver in ("sec", "ops"):
            decided = other.http.post(f"/api/suspensions/{rid}/approve", headers=auth(approver))
            assert decided.status_code == 200, decided.text
        wait_for(lambda: plugin_state(other, "crm3")["state"] == "active", 60, "crm3 resumed by the survivor", other)

        commands = [value for _, value in consume(broker, first.topics.suspend_command, 2)
                    if value["plugin_id"] == "crm3"]
        assert [c["action"] for c in commands] == ["suspend", "resume"]
    finally:
        if sim is not None:
            stop_process(sim)
        for worker in (first, second):
            if worker.proc is not None:
                worker.stop()


def test_evidence_numbers_never_repeat_when_the_broker_forgot_its_claims(broker, people, tmp_path):
    """A worker whose topics are new (as after the embedded broker restarted) but whose ClickHouse
    holds earlier evidence numbers on past them."""
    data_dir = str(tmp_path / "data")

    def snapshot(worker: Worker) -> str:
        made = worker.http.post("/api/plugins/pay/evidence", json={"tenant_id": "acme", "reason": "audit request"},
                                headers=auth("sec"))
        assert made.status_code == 201, made.text
        return made.json()["evidence_id"]

    before = Worker(broker, people, tmp_path, data_dir=data_dir).start()
    try:
        first = [snapshot(before) for _ in range(3)]
    finally:
        before.stop()
    after = Worker(broker, people, tmp_path, data_dir=data_dir).start()  # new topics: a fresh numbers topic
    try:
        later = snapshot(after)
    finally:
        after.stop()
    numbers = [int(evidence_id.rsplit("-", 1)[1]) for evidence_id in (*first, later)]
    assert numbers[:3] == sorted(numbers[:3]) and numbers[3] > max(numbers[:3]), numbers
