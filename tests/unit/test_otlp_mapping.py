"""OTLP -> plugwatch record mapping: semantic conventions, severities, ids, values, per signal.

Requests are built with the opentelemetry-proto classes and decoded from both encodings; the two
walkers (protobuf and OTLP/JSON) must agree on every record.
"""

import math

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugwatch.streams.anyvalue import set_attributes
from plugwatch.streams.codecs import DecodeError, decode_message
from plugwatch.streams.otlp import encode_otlp_json, level_from_severity

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
NS = 1_764_000_000_123_456_789  # -> 1_764_000_000_123 ms
RESOURCE = {
    "tenant.id": "t1",
    "plugin.id": "p1",
    "service.instance.id": "i-1",
    "host.name": "h1",
    "deployment.environment": "staging",
    "service.version": "1.2.3",
    "cloud.region": "cn-north-1",
    "service.name": "checkout-plugin",
    "process.runtime.name": "cpython",
}


def decode_both(request, signal) -> list[dict]:
    from_proto, encoding = decode_message(request.SerializeToString(), signal)
    assert encoding == "otlp_proto"
    from_json, encoding = decode_message(encode_otlp_json(request), signal)
    assert encoding == "otlp_json"
    assert _comparable(from_proto) == _comparable(from_json)
    return from_proto


def _comparable(records):
    # NaN != NaN: compare through JSON, where NaN becomes null.
    return orjson.loads(orjson.dumps(records))


def log_request(record_attributes=None, resource=RESOURCE, scope_attributes=None, **fields):
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    set_attributes(resource_logs.resource.attributes, resource)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "checkout.payments"
    scope_logs.scope.version = "0.9"
    set_attributes(scope_logs.scope.attributes, scope_attributes or {})
    log = scope_logs.log_records.add()
    log.time_unix_nano = NS
    for name, value in fields.items():
        setattr(log, name, value)
    set_attributes(log.attributes, record_attributes or {})
    return request, log


def one_log(request) -> dict:
    (record,) = decode_both(request, "logs")
    return record


# --- envelope mapping ----------------------------------------------------------------------------


def test_resource_semantic_conventions_become_envelope_fields():
    request, _ = log_request()
    record = one_log(request)
    assert {
        key: record[key]
        for key in ("tenant_id", "plugin_id", "instance_id", "host", "env", "plugin_version", "region")
    } == {
        "tenant_id": "t1",
        "plugin_id": "p1",
        "instance_id": "i-1",
        "host": "h1",
        "env": "staging",
        "plugin_version": "1.2.3",
        "region": "cn-north-1",
    }
    # service.name stays an attribute; mapped keys do not appear twice.
    assert record["attributes"] == {
        "service.name": "checkout-plugin",
        "process.runtime.name": "cpython",
        "otel.scope.version": "0.9",
    }


def test_record_attributes_override_resource_and_scope():
    request, _ = log_request(
        record_attributes={"tenant.id": "t2", "shared": "record"},
        scope_attributes={"plugin.id": "p-scope", "shared": "scope", "scope.only": 1},
        resource={**RESOURCE, "shared": "resource"},
    )
    record = one_log(request)
    assert record["tenant_id"] == "t2"
    assert record["plugin_id"] == "p-scope"
    assert record["attributes"]["shared"] == "record"
    assert record["attributes"]["scope.only"] == 1


def test_new_environment_key_wins_over_the_old_one():
    request, _ = log_request(resource={"deployment.environment": "old", "deployment.environment.name": "new"})
    assert one_log(request)["env"] == "new"


def test_non_string_ids_become_strings():
    request, _ = log_request(resource={"tenant.id": 42, "plugin.id": "p1"})
    assert one_log(request)["tenant_id"] == "42"


def test_missing_tenant_and_plugin_stay_missing():
    request, _ = log_request(resource={"service.name": "x"})
    record = one_log(request)
    assert "tenant_id" not in record and "plugin_id" not in record


# --- logs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "level"),
    [
        (0, ""),
        (1, "TRACE"),
        (4, "TRACE"),
        (5, "DEBUG"),
        (9, "INFO"),
        (12, "INFO"),
        (13, "WARN"),
        (17, "ERROR"),
        (20, "ERROR"),
        (21, "FATAL"),
        (24, "FATAL"),
    ],
)
def test_level_from_severity_number(number, level):
    assert level_from_severity(number) == level


def test_level_derived_from_severity_number_when_text_is_empty():
    request, _ = log_request(severity_number=17)
    assert one_log(request)["level"] == "ERROR"


def test_severity_text_is_kept_as_sent():
    request, _ = log_request(severity_number=17, severity_text="Error")
    assert one_log(request)["level"] == "Error"


def test_no_severity_means_no_level():
    request, _ = log_request()
    assert "level" not in one_log(request)


def test_timestamp_is_epoch_ms_with_observed_time_as_fallback():
    request, log = log_request()
    assert one_log(request)["ts"] == 1_764_000_000_123
    log.time_unix_nano = 0
    log.observed_time_unix_nano = NS + 5_000_000
    assert one_log(request)["ts"] == 1_764_000_000_128
    log.observed_time_unix_nano = 0
    with pytest.raises(DecodeError) as caught:  # protobuf in which no record has a time is not taken for logs
        decode_message(request.SerializeToString(), "logs")
    assert caught.value.reason == "not_json_or_otlp"
    assert "ts" not in decode_message(encode_otlp_json(request), "logs")[0][0]


def test_ids_are_lowercase_hex_and_empty_ids_are_omitted():
    request, _ = log_request(trace_id=TRACE, span_id=SPAN)
    record = one_log(request)
    assert (record["trace_id"], record["span_id"]) == (TRACE.hex(), SPAN.hex())
    request, _ = log_request()
    record = one_log(request)
    assert "trace_id" not in record and "span_id" not in record


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        ("5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174"),  # hex, upper case
        ("W47/95gDgQPSabYzgT/GDA==", "7uGbfsPBsXQ="),  # base64, as the generic protobuf JSON mapping writes
    ],
)
def test_otlp_json_ids_in_either_spelling(trace_id, span_id):
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {"logRecords": [{"timeUnixNano": str(NS), "traceId": trace_id, "spanId": span_id}]}
                ]
            }
        ]
    }
    (record,), _ = decode_message(orjson.dumps(doc), "logs")
    assert (record["trace_id"], record["span_id"]) == (TRACE.hex(), SPAN.hex())


def test_string_body_is_the_message():
    request, log = log_request()
    log.body.string_value = "payment failed"
    assert one_log(request)["message"] == "payment failed"


def test_structured_body_is_json_dumped():
    request, log = log_request()
    entry = log.body.kvlist_value.values.add()
    entry.key = "order"
    entry.value.int_value = 42
    assert orjson.loads(one_log(request)["message"]) == {"order": 42}


def test_missing_body_means_no_message():
    request, _ = log_request()
    assert "message" not in one_log(request)


def test_logger_is_the_scope_name():
    request, _ = log_request()
    assert one_log(request)["logger"] == "checkout.payments"


def test_exception_attributes_become_the_exception_field():
    request, _ = log_request(
        record_attributes={
            "exception.type": "ValueError",
            "exception.message": "bad card",
            "exception.stacktrace": 'Traceback (most recent call last):\n  File "pay.py"',
            "other": 1,
        }
    )
    record = one_log(request)
    assert record["exception"] == {
        "type": "ValueError",
        "message": "bad card",
        "stacktrace": 'Traceback (most recent call last):\n  File "pay.py"',
    }
    assert "exception.type" not in record["attributes"] and record["attributes"]["other"] == 1


def test_http_attributes_become_the_request_field():
    request, _ = log_request(
        record_attributes={
            "http.request.method": "POST",
            "url.full": "https://api.example.com/pay?x=1",
            "http.request.header.content-type": ["application/json"],
            "http.request.header.accept": ["a", "b"],
        }
    )
    record = one_log(request)
    assert record["request"] == {
        "method": "POST",
        "url": "https://api.example.com/pay?x=1",
        "headers": {"content-type": "application/json", "accept": "a, b"},
    }
    assert not any(key.startswith(("http.", "url.")) for key in record["attributes"])


def test_legacy_and_path_only_http_attributes():
    request, _ = log_request(record_attributes={"http.method": "GET", "http.url": "http://h/a"})
    assert one_log(request)["request"] == {"method": "GET", "url": "http://h/a"}
    request, _ = log_request(
        record_attributes={"http.request.method": "GET", "url.path": "/a", "url.query": "q=1"}
    )
    assert one_log(request)["request"] == {"method": "GET", "url": "/a?q=1"}


def test_attribute_values_of_every_kind_are_flattened():
    request, _ = log_request(
        record_attributes={
            "s": "text",
            "b": True,
            "i": -(2**63),
            "d": 0.25,
            "raw": b"\x00\xffab",
            "list": [1, "two", [3.0]],
            "map": {"inner": {"deep": False}, "empty": {}},
            "empty.list": [],
        }
    )
    attributes = one_log(request)["attributes"]
    assert attributes["s"] == "text"
    assert attributes["b"] is True
    assert attributes["i"] == -(2**63)
    assert attributes["d"] == 0.25
    assert attributes["raw"] == "AP9hYg=="  # bytes as base64
    assert attributes["list"] == [1, "two", [3.0]]
    assert attributes["map"] == {"inner": {"deep": False}, "empty": {}}
    assert attributes["empty.list"] == []


def test_special_doubles_survive_both_encodings():
    request, _ = log_request(record_attributes={"inf": math.inf, "nan": math.nan})
    attributes = one_log(request)["attributes"]
    assert attributes["inf"] == math.inf and math.isnan(attributes["nan"])


def test_unset_attribute_value_is_none():
    request, log = log_request()
    log.attributes.add().key = "unset"
    assert one_log(request)["attributes"]["unset"] is None


def test_event_name_becomes_an_attribute():
    request, _ = log_request(event_name="plugin.started")
    assert one_log(request)["attributes"]["event.name"] == "plugin.started"


def test_otlp_json_int64_as_numbers_and_enum_names_are_accepted():
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": NS,
                                "severityNumber": "SEVERITY_NUMBER_WARN",
                                "attributes": [{"key": "n", "value": {"intValue": 7}}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (record,), _ = decode_message(orjson.dumps(doc), "logs")
    assert record["ts"] == 1_764_000_000_123 and record["level"] == "WARN" and record["attributes"]["n"] == 7


# --- spans ---------------------------------------------------------------------------------------


def span_request(**fields):
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    set_attributes(resource_spans.resource.attributes, RESOURCE)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "checkout.http"
    span = scope_spans.spans.add()
    span.trace_id, span.span_id, span.name = TRACE, SPAN, "GET /pay"
    span.start_time_unix_nano, span.end_time_unix_nano = NS, NS + 250_000_000
    for name, value in fields.items():
        setattr(span, name, value)
    return request, span


def test_span_fields():
    request, span = span_request(parent_span_id=PARENT, kind=Span.SPAN_KIND_CLIENT)
    span.status.code = Status.STATUS_CODE_ERROR
    span.status.message = "upstream timeout"
    set_attributes(span.attributes, {"http.response.status_code": 504})
    (record,) = decode_both(request, "traces")
    assert record == {
        "tenant_id": "t1",
        "plugin_id": "p1",
        "instance_id": "i-1",
        "host": "h1",
        "env": "staging",
        "plugin_version": "1.2.3",
        "region": "cn-north-1",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "parent_span_id": PARENT.hex(),
        "name": "GET /pay",
        "kind": "CLIENT",
        "start_ts": 1_764_000_000_123,
        "end_ts": 1_764_000_000_373,
        "status": "ERROR",
        "attributes": {
            "service.name": "checkout-plugin",
            "process.runtime.name": "cpython",
            "otel.scope.name": "checkout.http",
            "http.response.status_code": 504,
            "otel.status_description": "upstream timeout",
        },
    }


def test_root_span_has_no_parent_and_unset_status():
    request, _ = span_request()
    (record,) = decode_both(request, "traces")
    assert record["parent_span_id"] is None
    assert record["status"] == "UNSET" and record["kind"] == "UNSPECIFIED"
    assert "otel.status_description" not in record["attributes"]


@pytest.mark.parametrize(
    ("kind", "name"), [(1, "INTERNAL"), (2, "SERVER"), (3, "CLIENT"), (4, "PRODUCER"), (5, "CONSUMER")]
)
def test_span_kinds(kind, name):
    request, _ = span_request(kind=kind)
    assert decode_both(request, "traces")[0]["kind"] == name


def test_span_events_and_links():
    request, span = span_request()
    event = span.events.add()
    event.time_unix_nano, event.name = NS + 100_000_000, "exception"
    set_attributes(event.attributes, {"exception.type": "TimeoutError"})
    link = span.links.add()
    link.trace_id, link.span_id = TRACE, PARENT
    set_attributes(link.attributes, {"reason": "retry"})
    (record,) = decode_both(request, "traces")
    assert record["events"] == [
        {"ts": 1_764_000_000_223, "name": "exception", "attributes": {"exception.type": "TimeoutError"}}
    ]
    assert record["links"] == [
        {"trace_id": TRACE.hex(), "span_id": PARENT.hex(), "attributes": {"reason": "retry"}}
    ]


def test_span_enum_names_in_otlp_json():
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "startTimeUnixNano": str(NS),
                                "kind": "SPAN_KIND_SERVER",
                                "status": {"code": "STATUS_CODE_OK"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (record,), _ = decode_message(orjson.dumps(doc), "traces")
    assert (record["kind"], record["status"]) == ("SERVER", "OK")


# --- metrics -------------------------------------------------------------------------------------


def metric_request(name="plugin.requests", unit="1"):
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    set_attributes(resource_metrics.resource.attributes, {"tenant.id": "t1", "plugin.id": "p1"})
    scope_metrics = resource_metrics.scope_metrics.add()
    metric = scope_metrics.metrics.add()
    metric.name, metric.unit = name, unit
    return request, metric


def test_gauge_points_one_record_each():
    request, metric = metric_request()
    for value, route in ((3, "/a"), (4.5, "/b")):
        point = metric.gauge.data_points.add()
        point.time_unix_nano = NS
        if isinstance(value, int):
            point.as_int = value
        else:
            point.as_double = value
        set_attributes(point.attributes, {"route": route})
    records = decode_both(request, "metrics")
    assert records == [
        {
            "tenant_id": "t1",
            "plugin_id": "p1",
            "ts": 1_764_000_000_123,
            "name": "plugin.requests",
            "value": value,
            "unit": "1",
            "attributes": {"route": route, "otel.metric.type": "gauge"},
        }
        for value, route in ((3, "/a"), (4.5, "/b"))
    ]
    assert isinstance(records[0]["value"], int) and isinstance(records[1]["value"], float)


def test_sum_carries_temporality_and_monotonicity():
    request, metric = metric_request()
    metric.sum.aggregation_temporality = 2
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add()
    point.time_unix_nano, point.as_int = NS, 10
    (record,) = decode_both(request, "metrics")
    assert record["value"] == 10
    assert record["attributes"] == {
        "otel.metric.type": "sum",
        "otel.metric.temporality": "CUMULATIVE",
        "otel.metric.monotonic": True,
    }


def test_histogram_value_is_the_sum_with_statistics_in_attributes():
    request, metric = metric_request("plugin.latency", "ms")
    point = metric.histogram.data_points.add()
    point.time_unix_nano, point.count, point.sum, point.min, point.max = NS, 4, 10.0, 1.0, 5.0
    point.bucket_counts.extend([1, 3])
    point.explicit_bounds.append(2.0)
    (record,) = decode_both(request, "metrics")
    assert record["value"] == 10.0
    assert {key: record["attributes"][key] for key in ("count", "sum", "min", "max")} == {
        "count": 4,
        "sum": 10.0,
        "min": 1.0,
        "max": 5.0,
    }


def test_histogram_without_sum_has_the_count_as_value():
    request, metric = metric_request()
    point = metric.exponential_histogram.data_points.add()
    point.time_unix_nano, point.count = NS, 7
    (record,) = decode_both(request, "metrics")
    assert record["value"] == 7
    assert (
        "sum" not in record["attributes"]
        and record["attributes"]["otel.metric.type"] == "exponential_histogram"
    )


def test_summary_value_is_the_sum_with_quantiles():
    request, metric = metric_request()
    point = metric.summary.data_points.add()
    point.time_unix_nano, point.count, point.sum = NS, 3, 9.0
    for quantile, value in ((0.5, 2.0), (0.99, 6.0)):
        entry = point.quantile_values.add()
        entry.quantile, entry.value = quantile, value
    (record,) = decode_both(request, "metrics")
    assert record["value"] == 9.0
    assert record["attributes"]["count"] == 3
    assert record["attributes"]["quantiles"] == {"0.5": 2.0, "0.99": 6.0}


def test_point_attributes_override_resource_ones():
    request, metric = metric_request()
    point = metric.gauge.data_points.add()
    point.time_unix_nano, point.as_double = NS, 1.0
    set_attributes(point.attributes, {"plugin.id": "p9"})
    assert decode_both(request, "metrics")[0]["plugin_id"] == "p9"
