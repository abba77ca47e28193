"""The OTLP/JSON examples of opentelemetry-proto (shared/data/otlp) decode into plugwatch records.

Every test runs on the payloads written out below, and again on the shared files when that
directory is present (on the written-out payloads when it is not), so the suite never depends on a
directory outside the repository.
"""

from pathlib import Path

import orjson
import pytest

from plugwatch.streams.codecs import decode_message

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "otlp"


def _kv(key, value):
    return {"key": key, "value": value}


_RESOURCE = {"attributes": [_kv("service.name", {"stringValue": "my.service"})]}
_SCOPE = {
    "name": "my.library",
    "version": "1.0.0",
    "attributes": [_kv("my.scope.attribute", {"stringValue": "some scope attribute"})],
}
_T = "1544712660300000000"

# Equivalents of logs.json, events.json, trace.json and metrics.json.
BUILT = {
    "logs": {
        "resourceLogs": [
            {
                "resource": _RESOURCE,
                "scopeLogs": [
                    {
                        "scope": _SCOPE,
                        "logRecords": [
                            {
                                "timeUnixNano": _T,
                                "observedTimeUnixNano": _T,
                                "severityNumber": 10,
                                "severityText": "Information",
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "body": {"stringValue": "Example log record"},
                                "attributes": [
                                    _kv("string.attribute", {"stringValue": "some string"}),
                                    _kv("boolean.attribute", {"boolValue": True}),
                                    _kv("int.attribute", {"intValue": "10"}),
                                    _kv("double.attribute", {"doubleValue": 637.704}),
                                    _kv(
                                        "array.attribute",
                                        {
                                            "arrayValue": {
                                                "values": [{"stringValue": "many"}, {"stringValue": "values"}]
                                            }
                                        },
                                    ),
                                    _kv(
                                        "map.attribute",
                                        {
                                            "kvlistValue": {
                                                "values": [_kv("some.map.key", {"stringValue": "some value"})]
                                            }
                                        },
                                    ),
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    },
    "events": {
        "resourceLogs": [
            {
                "resource": _RESOURCE,
                "scopeLogs": [
                    {
                        "scope": _SCOPE,
                        "logRecords": [
                            {
                                "eventName": "browser.page_view",
                                "timeUnixNano": _T,
                                "observedTimeUnixNano": _T,
                                "severityNumber": 9,
                                "severityText": "test severity text",
                                "attributes": [
                                    _kv("event.attribute", {"stringValue": "some event attribute"})
                                ],
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            _kv("type", {"intValue": "0"}),
                                            _kv(
                                                "url",
                                                {
                                                    "stringValue": "https://www.guidgenerator.com/online-guid-generator.aspx"
                                                },
                                            ),
                                            _kv("referrer", {"stringValue": "https://wwww.google.com"}),
                                            _kv("title", {"stringValue": "Free Online GUID Generator"}),
                                        ]
                                    }
                                },
                            }
                        ],
                    }
                ],
            }
        ]
    },
    "trace": {
        "resourceSpans": [
            {
                "resource": _RESOURCE,
                "scopeSpans": [
                    {
                        "scope": _SCOPE,
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "EEE19B7EC3C1B173",
                                "name": "I'm a server span",
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "kind": 2,
                                "attributes": [_kv("my.span.attr", {"stringValue": "some value"})],
                            }
                        ],
                    }
                ],
            }
        ]
    },
    "metrics": {
        "resourceMetrics": [
            {
                "resource": _RESOURCE,
                "scopeMetrics": [
                    {
                        "scope": _SCOPE,
                        "metrics": [
                            {
                                "name": "my.counter",
                                "unit": "1",
                                "description": "I am a Counter",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asDouble": 5,
                                            "startTimeUnixNano": _T,
                                            "timeUnixNano": _T,
                                            "attributes": [
                                                _kv("my.counter.attr", {"stringValue": "some value"})
                                            ],
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "my.gauge",
                                "unit": "1",
                                "description": "I am a Gauge",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "asDouble": 10,
                                            "timeUnixNano": _T,
                                            "attributes": [
                                                _kv("my.gauge.attr", {"stringValue": "some value"})
                                            ],
                                        }
                                    ]
                                },
                            },
                            {
                                "name": "my.histogram",
                                "unit": "1",
                                "description": "I am a Histogram",
                                "histogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "startTimeUnixNano": _T,
                                            "timeUnixNano": _T,
                                            "count": "2",
                                            "sum": 2,
                                            "bucketCounts": ["1", "1"],
                                            "explicitBounds": [1],
                                            "min": 0,
                                            "max": 2,
                                            "attributes": [
                                                _kv("my.histogram.attr", {"stringValue": "some value"})
                                            ],
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "my.exponential.histogram",
                                "unit": "1",
                                "description": "I am an Exponential Histogram",
                                "exponentialHistogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "startTimeUnixNano": _T,
                                            "timeUnixNano": _T,
                                            "count": "3",
                                            "sum": 10,
                                            "scale": 0,
                                            "zeroCount": "1",
                                            "positive": {"offset": 1, "bucketCounts": ["0", "2"]},
                                            "min": 0,
                                            "max": 5,
                                            "zeroThreshold": 0,
                                            "attributes": [
                                                _kv(
                                                    "my.exponential.histogram.attr",
                                                    {"stringValue": "some value"},
                                                )
                                            ],
                                        }
                                    ],
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    },
}
SIGNALS = {"logs": "logs", "events": "logs", "trace": "traces", "metrics": "metrics"}


@pytest.fixture(params=["built", "shared"])
def source(request) -> str:
    return request.param


def _example(name: str, source: str) -> bytes:
    path = SHARED / f"{name}.json"
    if source == "shared" and path.is_file():
        return path.read_bytes()
    return orjson.dumps(BUILT[name])


def _decode(name: str, source: str) -> list[dict]:
    records, encoding = decode_message(_example(name, source), SIGNALS[name])  # type: ignore[arg-type]
    assert encoding == "otlp_json"
    return records


def test_the_written_out_payloads_match_the_shared_files_when_present():
    for name in BUILT:
        path = SHARED / f"{name}.json"
        if path.is_file():
            assert orjson.loads(path.read_bytes()) == BUILT[name], f"{path} changed; update BUILT[{name!r}]"


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_examples_decode_without_tenant_or_plugin(name, source):
    records = _decode(name, source)
    assert records
    for record in records:
        # No plugin.id / tenant.id in the examples: left missing for the caller's validation.
        assert "tenant_id" not in record and "plugin_id" not in record
        assert record["attributes"]["service.name"] == "my.service"
        assert record["attributes"]["my.scope.attribute"] == "some scope attribute"
        assert record["attributes"]["otel.scope.version"] == "1.0.0"


def test_logs_example(source):
    (record,) = _decode("logs", source)
    assert record["ts"] == 1_544_712_660_300
    assert record["level"] == "Information"
    assert record["logger"] == "my.library"
    assert record["message"] == "Example log record"
    assert record["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert record["span_id"] == "eee19b7ec3c1b174"
    attributes = record["attributes"]
    assert attributes["string.attribute"] == "some string"
    assert attributes["boolean.attribute"] is True
    assert attributes["int.attribute"] == 10
    assert attributes["double.attribute"] == 637.704
    assert attributes["array.attribute"] == ["many", "values"]
    assert attributes["map.attribute"] == {"some.map.key": "some value"}


def test_events_example(source):
    (record,) = _decode("events", source)
    assert record["attributes"]["event.name"] == "browser.page_view"
    assert record["attributes"]["event.attribute"] == "some event attribute"
    assert orjson.loads(record["message"]) == {
        "type": 0,
        "url": "https://www.guidgenerator.com/online-guid-generator.aspx",
        "referrer": "https://wwww.google.com",
        "title": "Free Online GUID Generator",
    }
    assert "trace_id" not in record and "span_id" not in record


def test_trace_example(source):
    (span,) = _decode("trace", source)
    assert span["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert span["span_id"] == "eee19b7ec3c1b174"
    assert span["parent_span_id"] == "eee19b7ec3c1b173"
    assert span["name"] == "I'm a server span"
    assert span["kind"] == "SERVER"
    assert span["status"] == "UNSET"
    assert (span["start_ts"], span["end_ts"]) == (1_544_712_660_000, 1_544_712_661_000)
    assert span["attributes"]["my.span.attr"] == "some value"
    assert span["attributes"]["otel.scope.name"] == "my.library"


def test_metrics_example(source):
    points = {point["name"]: point for point in _decode("metrics", source)}
    assert set(points) == {"my.counter", "my.gauge", "my.histogram", "my.exponential.histogram"}
    for point in points.values():
        assert point["ts"] == 1_544_712_660_300 and point["unit"] == "1"
    counter = points["my.counter"]
    assert counter["value"] == 5.0
    assert counter["attributes"]["my.counter.attr"] == "some value"
    assert counter["attributes"]["otel.metric.type"] == "sum"
    assert counter["attributes"]["otel.metric.temporality"] == "DELTA"
    assert counter["attributes"]["otel.metric.monotonic"] is True
    assert points["my.gauge"]["value"] == 10.0
    histogram = points["my.histogram"]["attributes"]
    assert points["my.histogram"]["value"] == 2.0
    assert (histogram["count"], histogram["sum"], histogram["min"], histogram["max"]) == (2, 2.0, 0.0, 2.0)
    exponential = points["my.exponential.histogram"]
    assert exponential["value"] == 10.0
    assert exponential["attributes"]["count"] == 3
    assert exponential["attributes"]["otel.metric.type"] == "exponential_histogram"
