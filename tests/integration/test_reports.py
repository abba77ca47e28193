"""Diagnostic reports on the real broker and chDB: alert -> report (topic, ClickHouse, API, page),
clock-skew correction, late-data revisions, the ClickHouse fallback after a restart, export links."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson

from plugwatch.agents.reports import report_id_for
from plugwatch.audit.chain import verify_chain
from plugwatch.reports.model import Alert

from ..browser import render_in_chromium
from .conftest import wait_for, TOKEN, Worker, consume, produce

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMAIL = "li.wei@example.com"
CARD = "6228480412345678905"
PHONE = "13800138000"


def now_ms() -> int:
    return int(time.time() * 1000)


def report_of(worker: Worker, report_id: str, revision: int = 1) -> dict[str, Any] | None:
    response = worker.http.get(f"/internal/debug/reports/{report_id}", headers=AUTH)
    if response.status_code != 200:
        return None
    report = response.json()
    return report if report["revision"] >= revision else None


def error_log(plugin: str, instance: str, ts: int, line: int, **extra: Any) -> dict[str, Any]:
    trace = uuid.uuid4().hex
    return {
        "tenant_id": "acme", "plugin_id": plugin, "plugin_version": "3.2.1", "env": "prod", "region": "cn-east-1",
        "instance_id": instance, "host": f"host-{instance}", "ts": ts, "level": "ERROR", "logger": "pay",
        "message": f"charge failed for {EMAIL}", "trace_id": trace,
        "exception": {"type": "GatewayError", "message": f"card {CARD} refused",
                      "stacktrace": "Traceback (most recent call last):\n"
                                    f'  File "/srv/plugin/api.py", line {line}, in handle\n'
                                    '  File "/srv/plugin/pay.py", line 88, in charge\n'
                                    "GatewayError: refused"},
        "request": {"method": "POST", "url": "https://pay.example.com/v1/charge?order=1",
                    "headers": {"Authorization": "Bearer abc.def.ghi", "Content-Type": "application/json"},
                    "body": {"email": EMAIL, "phone": PHONE, "amount": "42.10"}},
        **extra,
    }


def send(broker, worker: Worker, signal: str, records: list[dict[str, Any]]) -> None:
    topic = {"logs": worker.topics.logs, "traces": worker.topics.traces, "metrics": worker.topics.metrics,
             "alerts": worker.topics.alerts}[signal]
    produce(broker, topic, [(f"{r['tenant_id']}/{r['plugin_id']}".encode(), orjson.dumps(r)) for r in records])


def wait_window(worker: Worker, key: str, entries: int) -> None:
    """Until the plugin's window holds ``entries`` records (so the report cannot be built before them)."""
    def held():
        return len(worker.get("/internal/debug/window", plugin=key)["entries"]) >= entries

    wait_for(held, 60, f"{entries} records in the window of {key}", worker)


def alert(plugin: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"alert_id": f"ALR-{uuid.uuid4().hex[:8]}", "ts": ts, "tenant_id": "acme", "plugin_id": plugin,
            "severity": "critical", "kind": "error_rate", "summary": f"errors on {plugin}", **extra}


def test_an_alert_gets_a_masked_report_on_the_topic_in_clickhouse_and_as_a_page(worker, broker, tmp_path):
    t = now_ms()
    logs = [error_log("pay", f"pg-{i}", t - 20_000 + i * 1000, line=40 + i) for i in range(3)]
    spans = [{"tenant_id": "acme", "plugin_id": "pay", "instance_id": "pg-0", "trace_id": logs[0]["trace_id"],
              "span_id": "00f067aa0ba902b7", "name": "POST /v1/charge", "start_ts": t - 20_100,
              "end_ts": t - 19_900, "status": "ERROR"}]
    metrics = [{"tenant_id": "acme", "plugin_id": "pay", "instance_id": "pg-0", "ts": t - 20_000 + i * 1000,
                "name": "http.server.errors", "value": float(i), "unit": "1"} for i in range(5)]
    send(broker, worker, "logs", logs)
    send(broker, worker, "traces", spans)
    send(broker, worker, "metrics", metrics)
    wait_window(worker, "acme/pay", 9)
    sent = alert("pay", t)
    send(broker, worker, "alerts", [sent])

    key, report = consume(broker, worker.topics.debug_report, 1)[0]
    assert key == b"acme/pay"
    assert report["alert_id"] == sent["alert_id"] and report["revision"] == 1
    assert report["report_id"] == report_id_for(Alert(**sent))
    assert report["window"] == {"from": t - 300_000, "to": t}
    assert isinstance(report["generated_ms"], int) and report["generated_ms"] >= 0
    (trace,) = report["stack_traces"]  # one bug from three instances, deduplicated
    assert trace["count"] == 3 and trace["instances"] == ["pg-0", "pg-1", "pg-2"]
    assert report["environment"]["plugin_versions"] == ["3.2.1"]
    assert report["metrics"]["http.server.errors"]["max"] == 4.0
    assert any(t["trace_id"] == logs[0]["trace_id"] for t in report["traces"])
    assert len(report["requests"]) == 3
    assert report["completeness"]["complete"] is True
    text = orjson.dumps(report).decode()
    for secret in (EMAIL, CARD, PHONE, "abc.def.ghi"):
        assert secret not in text

    rows = worker.wait_for_rows(
        f"SELECT report_id, revision, complete FROM plugwatch.debug_reports FINAL WHERE alert_id = '{sent['alert_id']}'", 1)
    assert rows == [[report["report_id"], 1, True]]
    assert worker.get(f"/internal/debug/reports/{report['report_id']}")["alert_id"] == sent["alert_id"]

    page = worker.http.get(f"/internal/debug/reports/{report['report_id']}.html", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert EMAIL not in page.text and CARD not in page.text
    path = tmp_path / "report.html"
    path.write_text(page.text)
    rendered = render_in_chromium(path)
    assert rendered.console_errors == [] and rendered.exit_code == 0
    assert "GatewayError" in rendered.dom and sent["alert_id"] in rendered.dom

    assert worker.http.get(f"/internal/debug/reports/{report['report_id']}").status_code == 401
    assert "debug_report_generate_ms_count 1.0" in worker.metrics()


def test_skew_correction_keeps_an_error_that_a_raw_time_window_would_drop(worker, broker):
    t = now_ms()
    key = "acme/skewed"
    spans, logs = [], []
    for i in range(40):  # worker-1's clock runs 3 s ahead of the spans' (the reference)
        start = t - 60_000 + i * 1000
        span_id = f"{i + 1:016x}"
        spans.append({"tenant_id": "acme", "plugin_id": "skewed", "instance_id": "api-0",
                      "trace_id": uuid.UUID(int=i + 1).hex, "span_id": span_id, "name": "GET /x",
                      "start_ts": start, "end_ts": start + 200})
        logs.append({"tenant_id": "acme", "plugin_id": "skewed", "instance_id": "worker-1", "ts": start + 100 + 3000,
                     "span_id": span_id, "trace_id": uuid.UUID(int=i + 1).hex, "level": "INFO", "message": f"step {i}"})
    send(broker, worker, "traces", spans)
    send(broker, worker, "logs", logs)

    def settled():
        rows = worker.get("/internal/debug/skew", plugin=key)["sources"]
        row = next((r for r in rows if r["source"] == "worker-1" and r["signal"] == "logs"), None)
        return row if row and row["samples"] >= 30 and abs(row["offset_ms"] + 3000) <= 50 else None

    wait_for(settled, 60, "worker-1's offset ≈ -3000 ms", worker)
    # Happened 1 s before the alert; worker-1 stamped it 2 s after: [t_alert - 300 s, t_alert] in raw
    # time would leave it out.
    t_alert = now_ms()
    late = error_log("skewed", "worker-1", t_alert + 2_000, line=7)
    send(broker, worker, "logs", [late])
    sent = alert("skewed", t_alert)
    send(broker, worker, "alerts", [sent])
    report_id = report_id_for(Alert(**sent))

    report = wait_for(lambda: report_of(worker, report_id), 60, "the report", worker)
    if not any(e["raw_ts"] == late["ts"] for e in report["timeline"]):  # built on grace before it arrived
        report = wait_for(lambda: report_of(worker, report_id, 2), 60, "the revision", worker)
    entry = next(e for e in report["timeline"] if e["raw_ts"] == late["ts"])
    assert entry["raw_ts"] > report["window"]["to"]  # a raw-time window drops it
    assert abs(entry["ts"] - (late["ts"] - 3000)) <= 50 and entry["ts"] <= report["window"]["to"]
    row = next(r for r in report["clock_skew"] if r["source"] == "worker-1" and r["signal"] == "logs")
    assert abs(row["offset_ms"] + 3000) <= 50
    assert report["stack_traces"][0]["instances"] == ["worker-1"]


def test_telemetry_arriving_after_the_report_makes_a_new_revision(worker, broker):
    t = now_ms()
    sent = alert("late", t)
    send(broker, worker, "alerts", [sent])  # nothing of the plugin yet: built after the grace
    report_id = report_id_for(Alert(**sent))
    first = wait_for(lambda: report_of(worker, report_id), 60, "revision 1", worker)
    assert first["counts"] == {"logs": 0, "traces": 0, "metrics": 0}

    send(broker, worker, "logs", [error_log("late", "pg-0", t - 2_000, line=9)])
    second = wait_for(lambda: report_of(worker, report_id, 2), 60, "revision 2", worker)
    assert second["counts"]["logs"] == 1 and second["stack_traces"][0]["count"] == 1
    assert second["trigger"] == "late_data"
    revisions = [r["revision"] for _, r in consume(broker, worker.topics.debug_report, 2)]
    assert revisions == [1, 2]


def test_after_a_restart_the_report_reads_what_the_window_lacks_from_clickhouse(broker, access_file, tmp_path):
    data_dir = str(tmp_path / "shared-data")
    settings = {"data_dir": data_dir, "window__minutes": "0.5"}  # the window holds 30 s
    first = Worker(broker, access_file, tmp_path, **settings).start()
    t = now_ms()
    old = [error_log("restarted", "pg-0", t - 120_000 + i * 1000, line=11) for i in range(5)]  # beyond the window
    recent = [error_log("restarted", "pg-1", t - 5_000, line=12)]
    try:
        send(broker, first, "logs", old + recent)
        first.wait_for_rows("SELECT event_id FROM plugwatch.telemetry_logs FINAL WHERE plugin_id = 'restarted'", 6)
    finally:
        first.stop()  # closes chDB, which writes its parts out

    second = Worker(broker, access_file, tmp_path, app_id=first.app_id, topics=first.topics, **settings).start()
    try:
        sent = alert("restarted", now_ms())
        send(broker, second, "alerts", [sent])
        report = wait_for(lambda: report_of(second, report_id_for(Alert(**sent))), 90, "the report", second)
        assert report["completeness"]["fallback_used"] is True
        assert any("ClickHouse" in note for note in report["completeness"]["notes"])
        assert report["counts"]["logs"] == 6  # five from ClickHouse, one from the window
        (trace,) = report["stack_traces"]
        assert trace["count"] == 6 and trace["instances"] == ["pg-0", "pg-1"]
    finally:
        second.stop()


def test_export_links_serve_until_they_expire_and_refuse_tampering_all_audited(worker, broker):
    t = now_ms()
    send(broker, worker, "logs", [error_log("exported", "pg-0", t - 1000 * i, line=3) for i in range(4)])
    worker.wait_for_rows("SELECT event_id FROM plugwatch.telemetry_logs FINAL WHERE plugin_id = 'exported'", 4)
    body = {"tenant_id": "acme", "plugin_id": "exported", "from": t - 60_000, "to": t + 1000}
    created = worker.http.post("/internal/debug/logs/export", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    link = created.json()
    assert link["expires_at"] > now_ms()

    download = worker.http.get(link["path"], headers=AUTH)
    assert download.status_code == 200
    lines = [orjson.loads(line) for line in download.content.splitlines()]
    assert len(lines) == 4 and {line["signal"] for line in lines} == {"logs"}
    assert EMAIL not in download.text and CARD not in download.text

    url = httpx.URL(link["path"])
    sig = url.params["sig"]
    forged = url.copy_set_param("sig", ("0" if sig[0] != "0" else "1") + sig[1:])
    assert worker.http.get(str(forged), headers=AUTH).status_code == 403
    later = url.copy_set_param("expires", str(int(url.params["expires"]) + 3_600_000))
    assert worker.http.get(str(later), headers=AUTH).status_code == 403
    assert worker.http.get(link["path"]).status_code == 401  # a signed link still needs a token

    short = worker.http.post("/internal/debug/logs/export", json={**body, "ttl_s": 1}, headers=AUTH).json()
    while now_ms() <= short["expires_at"]:
        time.sleep(0.2)
    expired = worker.http.get(short["path"], headers=AUTH)
    assert expired.status_code == 410 and expired.json()["error"] == "expired"

    rows = worker.wait_for_rows("SELECT record FROM plugwatch.audit_log FINAL ORDER BY chain, seq", 6)
    records = [orjson.loads(row[0]) for row in rows]
    actions = [(r["action"], r["outcome"]) for r in records]
    assert actions.count(("export.create", "ok")) == 2
    assert actions.count(("export.download", "ok")) == 1
    assert actions.count(("export.refused", "refused")) == 3
    assert verify_chain(records).ok
    tampered = [dict(r) for r in records]
    tampered[1]["actor"] = "someone-else"
    assert not verify_chain(tampered).ok
