"""Ingestion end to end on the real embedded broker and chDB: inbound topic -> masked topic + ClickHouse,
and every kind of bad input -> plugin.deadletter, without stopping the worker."""

from __future__ import annotations

import time

import orjson

from plugwatch.streams.otlp_build import (
    build_logs_request,
    build_metrics_request,
    build_traces_request,
    encode_otlp_json,
)

from .conftest import consume, produce

NOW = int(time.time() * 1000)
EMAIL = "li.wei@example.com"
CARD = "6228 4804 1234 5678 905"  # UnionPay, 19 digits, Luhn-valid
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsaXdlaSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PASSWORD = "Sup3rS3cretPw"
SECRETS = (EMAIL, "6228480412345678905", CARD, JWT, PASSWORD)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked: {text[:300]}"


def log_record(plugin: str, **fields):
    return {
        "ts": NOW,
        "tenant_id": "acme",
        "plugin_id": plugin,
        "instance_id": f"{plugin}-0",
        "host": "node-1",
        "level": "ERROR",
        "message": f"charge failed for {EMAIL} card {CARD}",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "request": {
            "method": "POST",
            "url": f"postgres://billing:{PASSWORD}@db:5432/pay",
            "headers": {"Authorization": f"Bearer {JWT}"},
            "body": {"password": PASSWORD},
        },
        **fields,
    }


def test_json_log_comes_out_masked_on_topic_and_in_clickhouse(worker, broker):
    produce(broker, worker.topics.logs, [(b"acme/billing", orjson.dumps(log_record("billing")))])

    [(key, masked)] = consume(broker, worker.topics.masked_logs, 1)
    assert key == b"acme/billing"
    assert (masked["tenant_id"], masked["plugin_id"], masked["ts"]) == ("acme", "billing", NOW)
    assert masked["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # ids stay readable
    assert_no_secret(orjson.dumps(masked).decode())

    rows = worker.wait_for_rows(
        "SELECT plugin_id, message, request, toUnixTimestamp64Milli(ts) FROM plugwatch.telemetry_logs FINAL", 1
    )
    [(plugin, message, request, ts)] = rows
    assert (plugin, int(ts)) == ("billing", NOW)
    assert "charge failed" in message
    assert_no_secret(message + request)


def test_otlp_protobuf_and_json_batches_of_each_signal(worker, broker):
    logs = [log_record("render", message=f"render #{i} for {EMAIL}") for i in range(3)]
    spans = [
        {"tenant_id": "acme", "plugin_id": "render", "instance_id": "render-0", "trace_id": "5b8efff798038103d269b633813fc60c",
         "span_id": f"{i + 1:016x}", "name": "GET /render", "start_ts": NOW, "end_ts": NOW + 40,
         "attributes": {"user.email": EMAIL}}
        for i in range(2)
    ]
    points = [{"tenant_id": "acme", "plugin_id": "render", "instance_id": "render-0", "ts": NOW, "name": "queue.depth", "value": 4.0}]
    produce(broker, worker.topics.logs, [(None, build_logs_request(logs).SerializeToString())])
    produce(broker, worker.topics.traces, [(None, encode_otlp_json(build_traces_request(spans)))])
    produce(broker, worker.topics.metrics, [(None, build_metrics_request(points).SerializeToString())])

    masked_logs = consume(broker, worker.topics.masked_logs, 3)
    masked_spans = consume(broker, worker.topics.masked_traces, 2)
    masked_points = consume(broker, worker.topics.masked_metrics, 1)
    assert {k for k, _ in masked_logs + masked_spans + masked_points} == {b"acme/render"}
    assert sorted(v["message"].split(" for ")[0] for _, v in masked_logs) == ["render #0", "render #1", "render #2"]
    assert {v["span_id"] for _, v in masked_spans} == {"0000000000000001", "0000000000000002"}
    assert masked_points[0][1]["value"] == 4.0
    assert_no_secret(orjson.dumps([v for _, v in masked_logs + masked_spans]).decode())

    assert worker.wait_for_rows("SELECT event_id FROM plugwatch.telemetry_logs FINAL", 3)
    spans_rows = worker.wait_for_rows(
        "SELECT span_id, toUnixTimestamp64Milli(end_ts) - toUnixTimestamp64Milli(start_ts), attributes "
        "FROM plugwatch.telemetry_spans FINAL ORDER BY span_id", 2
    )
    assert [(r[0], int(r[1])) for r in spans_rows] == [("0000000000000001", 40), ("0000000000000002", 40)]
    assert_no_secret(orjson.dumps(spans_rows).decode())
    [[name, value]] = worker.wait_for_rows("SELECT name, value FROM plugwatch.telemetry_metrics FINAL", 1)
    assert (name, value) == ("queue.depth", 4.0)
    assert 'plugwatch_ingest_records_total{encoding="otlp_proto",signal="logs"} 3.0' in worker.metrics()


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def test_each_kind_of_bad_input_lands_in_the_deadletter_topic(worker, broker):
    good = log_record("survivor")
    bad = {
        "not_json_or_otlp": f"plain text line with password={PASSWORD}".encode(),
        "missing_tenant": orjson.dumps({k: v for k, v in good.items() if k != "tenant_id"}),
        "missing_plugin": orjson.dumps({k: v for k, v in good.items() if k != "plugin_id"}),
        "missing_ts": orjson.dumps({k: v for k, v in good.items() if k != "ts"}),
        "wrong_types": orjson.dumps({**good, "message": ["not", "text"], "attributes": "x"}),
        "too_large": orjson.dumps({**good, "message": "x" * (1024 * 1024 + 10)}),
        "too_deep": orjson.dumps({**good, "attributes": nested(80)}),
        "invalid_utf8": b'{"tenant_id": "acme", "plugin_id": "p", "ts": 1, "message": "\xff\xfe ' + EMAIL.encode() + b'"}',
    }
    produce(broker, worker.topics.logs, [(None, value) for value in bad.values()])
    produce(broker, worker.topics.logs, [(b"acme/survivor", orjson.dumps(good))])

    letters = [v for _, v in consume(broker, worker.topics.deadletter, len(bad))]
    assert len(letters) == len(bad)
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == sorted(
        ["not_json_or_otlp", "missing_field", "missing_field", "missing_field", "wrong_type",
         "too_large", "too_deep", "invalid_utf8"]
    )
    for letter in letters:
        assert letter["source"]["topic"] == worker.topics.logs
        assert isinstance(letter["source"]["partition"], int) and isinstance(letter["source"]["offset"], int)
        assert letter["detail"]
        assert letter["size"] > 0
        assert_no_secret(orjson.dumps(letter).decode())
    details = " ".join(letter["detail"] for letter in letters)
    for field in ("tenant_id", "plugin_id", "ts"):
        assert field in details
    plain = next(letter for letter in letters if letter["reason"] == "not_json_or_otlp")
    assert "plain text line" in plain["excerpt"]  # a masked excerpt, not an empty one

    # The worker is still running and processed the good message sent after the bad ones.
    [(key, survivor)] = consume(broker, worker.topics.masked_logs, 1)
    assert (key, survivor["plugin_id"]) == (b"acme/survivor", "survivor")
    metrics = worker.metrics()
    assert f'plugwatch_deadletter_total{{reason="missing_field",topic="{worker.topics.logs}"}} 3.0' in metrics
    assert worker.http.get("/healthz").json()["status"] == "ok"


def test_sql_endpoint_needs_a_token_and_refuses_writes(worker):
    assert worker.http.post("/internal/sql", json={"query": "SELECT 1"}).status_code == 401
    bad = worker.http.post(
        "/internal/sql", json={"query": "SELECT 1"}, headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    from .conftest import TOKEN

    write = worker.http.post(
        "/internal/sql",
        json={"query": "DROP TABLE plugwatch.telemetry_logs"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert write.status_code == 400 and write.json()["error"] == "read_only"
    assert worker.sql("SELECT count() FROM plugwatch.telemetry_logs") == [[0]]


def test_metrics_report_lag_and_batch_sizes(worker, broker):
    produce(broker, worker.topics.metrics, [(b"acme/m", orjson.dumps(
        {"ts": NOW, "tenant_id": "acme", "plugin_id": "m", "name": "rss", "value": 1.0}))])
    consume(broker, worker.topics.masked_metrics, 1)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:  # the lag gauge is refreshed by a 5 s timer
        text = worker.metrics()
        if 'plugwatch_consumer_lag{partition="' in text:
            break
        time.sleep(0.5)
    assert f'topic="{worker.topics.metrics}"' in text.split("plugwatch_consumer_lag", 1)[1]
    assert 'plugwatch_ingest_batch_size_count{signal="metrics"}' in text
    assert f'plugwatch_ingest_messages_total{{topic="{worker.topics.metrics}"}} 1.0' in text
