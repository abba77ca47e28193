"""OTLP/JSON export requests (already parsed by orjson) -> plugwatch records.

OTLP/JSON is the protobuf JSON mapping with lowerCamelCase keys, int64/fixed64 as strings, and two
deviations: trace/span ids are hex, and enums are integers (names are accepted too).
"""

from __future__ import annotations

from typing import Any, Callable

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugwatch.streams.anyvalue import attributes_from_json, id_from_json, value_from_json
from plugwatch.streams.otlp_records import (
    OtlpError,
    Signal,
    log_record,
    metric_stats,
    point_record,
    scope_context,
    span_event,
    span_record,
)

# Top-level key of each signal's OTLP/JSON request.
JSON_KEYS: dict[str, str] = {"logs": "resourceLogs", "traces": "resourceSpans", "metrics": "resourceMetrics"}


def _ns(value: Any) -> int:
    return int(value) if value else 0  # fixed64 is a JSON string in the protobuf JSON mapping


def _enum(value: Any, enum_type: Any) -> int:
    """An enum from OTLP/JSON: an integer (what the spec requires) or its name."""
    if not value:
        return 0
    if isinstance(value, int):
        return value
    try:
        return enum_type.Value(value)
    except ValueError:
        return int(value)


def _scope_json(
    resource: dict[str, Any], container: dict[str, Any], name_attribute: bool
) -> tuple[dict[str, Any], dict[str, Any], str]:
    scope = container.get("scope") or {}
    name = scope.get("name") or ""
    attributes = attributes_from_json(scope.get("attributes"))
    envelope, base = scope_context(resource, attributes, name, scope.get("version") or "", name_attribute)
    return envelope, base, name


def _logs_from_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for resource_logs in doc.get("resourceLogs") or ():
        resource = attributes_from_json((resource_logs.get("resource") or {}).get("attributes"))
        for scope_logs in resource_logs.get("scopeLogs") or ():
            envelope, base, logger = _scope_json(resource, scope_logs, False)
            for log in scope_logs.get("logRecords") or ():
                records.append(
                    log_record(
                        envelope,
                        base,
                        attributes_from_json(log.get("attributes")),
                        logger,
                        _ns(log.get("timeUnixNano")) or _ns(log.get("observedTimeUnixNano")),
                        _enum(log.get("severityNumber"), SeverityNumber),
                        log.get("severityText") or "",
                        value_from_json(log.get("body")),
                        id_from_json(log.get("traceId")),
                        id_from_json(log.get("spanId")),
                        log.get("eventName") or "",
                    )
                )
    return records


def _spans_from_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for resource_spans in doc.get("resourceSpans") or ():
        resource = attributes_from_json((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            envelope, base, _ = _scope_json(resource, scope_spans, True)
            for span in scope_spans.get("spans") or ():
                status = span.get("status") or {}
                events = [
                    span_event(
                        _ns(event.get("timeUnixNano")),
                        event.get("name") or "",
                        attributes_from_json(event.get("attributes")),
                    )
                    for event in span.get("events") or ()
                ]
                links = [
                    {
                        "trace_id": id_from_json(link.get("traceId")),
                        "span_id": id_from_json(link.get("spanId")),
                        "attributes": attributes_from_json(link.get("attributes")),
                    }
                    for link in span.get("links") or ()
                ]
                records.append(
                    span_record(
                        envelope,
                        base,
                        attributes_from_json(span.get("attributes")),
                        id_from_json(span.get("traceId")),
                        id_from_json(span.get("spanId")),
                        id_from_json(span.get("parentSpanId")),
                        span.get("name") or "",
                        _enum(span.get("kind"), Span.SpanKind),
                        _ns(span.get("startTimeUnixNano")),
                        _ns(span.get("endTimeUnixNano")),
                        _enum(status.get("code"), Status.StatusCode),
                        status.get("message") or "",
                        events,
                        links,
                    )
                )
    return records


_JSON_METRIC_KINDS = (
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
)


def _metrics_from_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for resource_metrics in doc.get("resourceMetrics") or ():
        resource = attributes_from_json((resource_metrics.get("resource") or {}).get("attributes"))
        for scope_metrics in resource_metrics.get("scopeMetrics") or ():
            envelope, base, _ = _scope_json(resource, scope_metrics, True)
            for metric in scope_metrics.get("metrics") or ():
                for key, kind in _JSON_METRIC_KINDS:
                    data = metric.get(key)
                    if data is not None:
                        break
                else:
                    continue
                temporality = _enum(data.get("aggregationTemporality"), AggregationTemporality)
                stats = metric_stats(kind, temporality, bool(data.get("isMonotonic")))
                for point in data.get("dataPoints") or ():
                    if kind == "gauge" or kind == "sum":
                        value = point.get("asDouble")
                        if value is not None:
                            value = float(value)
                        elif point.get("asInt") is not None:
                            value = int(point["asInt"])
                        point_stats = stats
                    elif kind == "summary":
                        value = float(point.get("sum") or 0.0)
                        quantiles = {
                            str(float(q.get("quantile") or 0.0)): float(q.get("value") or 0.0)
                            for q in point.get("quantileValues") or ()
                        }
                        count = _ns(point.get("count"))
                        point_stats = {**stats, "count": count, "sum": value, "quantiles": quantiles}
                    else:  # histogram, exponential_histogram
                        value = _ns(point.get("count"))
                        point_stats = {**stats, "count": value}
                        if point.get("sum") is not None:
                            value = point_stats["sum"] = float(point["sum"])
                        if point.get("min") is not None:
                            point_stats["min"] = float(point["min"])
                        if point.get("max") is not None:
                            point_stats["max"] = float(point["max"])
                    records.append(
                        point_record(
                            envelope,
                            base,
                            attributes_from_json(point.get("attributes")),
                            metric.get("name") or "",
                            metric.get("unit") or "",
                            _ns(point.get("timeUnixNano")),
                            value,
                            point_stats,
                        )
                    )
    return records


_JSON_DECODERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "logs": _logs_from_json,
    "traces": _spans_from_json,
    "metrics": _metrics_from_json,
}


def records_from_json(doc: dict[str, Any], signal: Signal) -> list[dict[str, Any]]:
    """Records of an OTLP/JSON export request already parsed into ``doc``."""
    try:
        return _JSON_DECODERS[signal](doc)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise OtlpError(
            "invalid_otlp",
            f"OTLP/JSON {JSON_KEYS[signal]} request has a malformed field ({exc!r}); "
            "check that the producer writes the OTLP/JSON encoding",
        ) from exc
