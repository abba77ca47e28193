"""Builders of OTLP requests from plain records, and the OTLP/JSON encoder, for tests and benchmarks."""

import base64

import orjson
import pytest

from plugwatch.streams.codecs import decode_message
from plugwatch.streams.otlp import (
    build_logs_request,
    build_metrics_request,
    build_traces_request,
    encode_otlp_json,
)

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def _resource_attributes(resource) -> dict:
    return {kv.key: kv.value.string_value for kv in resource.attributes}


def test_envelope_fields_become_resource_attributes():
    request = build_logs_request(
        [
            {
                "tenant_id": "t1",
                "plugin_id": "p1",
                "instance_id": "i-1",
                "host": "h1",
                "env": "prod",
                "plugin_version": "2.0.0",
                "region": "eu-west-1",
                "ts": 1,
            }
        ]
    )
    assert _resource_attributes(request.resource_logs[0].resource) == {
        "tenant.id": "t1",
        "plugin.id": "p1",
        "service.instance.id": "i-1",
        "host.name": "h1",
        "deployment.environment.name": "prod",
        "service.version": "2.0.0",
        "cloud.region": "eu-west-1",
    }


def test_records_are_grouped_by_resource_and_scope():
    records = [
        {"tenant_id": "t1", "plugin_id": "p1", "logger": "a", "ts": 1},
        {"tenant_id": "t1", "plugin_id": "p2", "logger": "a", "ts": 2},
        {"tenant_id": "t1", "plugin_id": "p1", "logger": "b", "ts": 3},
        {"tenant_id": "t1", "plugin_id": "p1", "logger": "a", "ts": 4},
    ]
    request = build_logs_request(records)
    assert len(request.resource_logs) == 2
    first = request.resource_logs[0]
    assert [scope.scope.name for scope in first.scope_logs] == ["a", "b"]
    assert [log.time_unix_nano // 1_000_000 for log in first.scope_logs[0].log_records] == [1, 4]


def test_missing_envelope_fields_are_not_invented():
    request = build_logs_request([{"ts": 1, "message": "x"}])
    assert len(request.resource_logs[0].resource.attributes) == 0


def test_log_fields():
    request = build_logs_request(
        [
            {
                "ts": "2025-11-24T16:00:00.123Z",
                "level": "warning",
                "message": "m",
                "trace_id": TRACE_ID,
                "span_id": SPAN_ID,
            }
        ]
    )
    log = request.resource_logs[0].scope_logs[0].log_records[0]
    assert log.time_unix_nano == log.observed_time_unix_nano == 1_764_000_000_123_000_000
    assert (log.severity_text, log.severity_number) == ("warning", 13)
    assert log.body.string_value == "m"
    assert (log.trace_id.hex(), log.span_id.hex()) == (TRACE_ID, SPAN_ID)


def test_naive_rfc3339_timestamp_is_utc():
    request = build_logs_request([{"ts": "2025-11-24T16:00:00.123"}])
    assert request.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano == 1_764_000_000_123_000_000


def test_ids_must_be_hex():
    with pytest.raises(ValueError, match="trace_id .* is not hex"):
        build_logs_request([{"ts": 1, "trace_id": "not-an-id"}])


def test_span_defaults_and_status_message():
    request = build_traces_request(
        [
            {
                "trace_id": TRACE_ID,
                "span_id": SPAN_ID,
                "start_ts": 1,
                "attributes": {"otel.status_description": "boom"},
                "status": "error",
            }
        ]
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == 1  # INTERNAL, what SDKs default to
    assert (span.status.code, span.status.message) == (2, "boom")
    assert len(span.attributes) == 0


def test_metric_types_and_sharing_one_metric_per_name():
    points = [
        {"tenant_id": "t1", "plugin_id": "p1", "ts": 1, "name": "req", "value": 1, "type": "sum"},
        {"tenant_id": "t1", "plugin_id": "p1", "ts": 2, "name": "req", "value": 2, "type": "sum"},
        {
            "tenant_id": "t1",
            "plugin_id": "p1",
            "ts": 2,
            "name": "lat",
            "value": 12.0,
            "type": "histogram",
            "attributes": {"count": 3},
        },
    ]
    request = build_metrics_request(points)
    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    assert [metric.name for metric in metrics] == ["req", "lat"]
    assert [point.as_int for point in metrics[0].sum.data_points] == [1, 2]
    assert metrics[0].sum.is_monotonic and metrics[0].sum.aggregation_temporality == 2
    assert (metrics[1].histogram.data_points[0].count, metrics[1].histogram.data_points[0].sum) == (3, 12.0)


def test_unknown_metric_type_is_refused():
    with pytest.raises(ValueError, match="cannot be built; use gauge, sum or histogram"):
        build_metrics_request([{"ts": 1, "name": "x", "value": 1, "type": "summary"}])


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_decoded_histograms_and_sums_build_back_to_the_same_records(encoding):
    points = [
        {
            "tenant_id": "t1",
            "plugin_id": "p1",
            "ts": 5,
            "name": "lat",
            "value": 12.0,
            "unit": "ms",
            "type": "histogram",
            "attributes": {"count": 3, "min": 1.0, "max": 9.0, "route": "/x"},
        },
        {
            "tenant_id": "t1",
            "plugin_id": "p1",
            "ts": 5,
            "name": "req",
            "value": 4,
            "type": "sum",
            "attributes": {"otel.metric.temporality": "DELTA", "otel.metric.monotonic": False},
        },
    ]
    request = build_metrics_request(points)
    raw = request.SerializeToString() if encoding == "otlp_proto" else encode_otlp_json(request)
    decoded, _ = decode_message(raw, "metrics")
    assert build_metrics_request(decoded) == request


def test_otlp_json_uses_hex_ids_integer_enums_and_string_int64():
    request = build_traces_request(
        [
            {
                "trace_id": TRACE_ID,
                "span_id": SPAN_ID,
                "parent_span_id": "eee19b7ec3c1b173",
                "start_ts": 1_764_000_000_123,
                "kind": "SERVER",
                "links": [{"trace_id": TRACE_ID, "span_id": SPAN_ID}],
            }
        ]
    )
    doc = orjson.loads(encode_otlp_json(request))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (TRACE_ID, SPAN_ID, "eee19b7ec3c1b173")
    assert span["links"][0]["traceId"] == TRACE_ID
    assert span["kind"] == 2
    assert span["startTimeUnixNano"] == "1764000000123000000"


def test_otlp_json_keeps_base64_for_bytes_values():
    request = build_logs_request([{"ts": 1, "attributes": {"blob": b"\x01\x02"}}])
    doc = orjson.loads(encode_otlp_json(request))
    value = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"][0]["value"]
    assert value == {"bytesValue": base64.b64encode(b"\x01\x02").decode()}
