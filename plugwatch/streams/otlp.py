"""OTLP export requests -> plugwatch log, span and metric records.

The OpenTelemetry Collector's Kafka exporter writes one Export*ServiceRequest per message, as
protobuf (``otlp_proto``) or OTLP/JSON (``otlp_json``). Resource and record attributes are mapped to
the record envelope by semantic conventions; all other attributes are kept under ``attributes``.
Two walkers read the two wire forms (protobuf attribute access is several times faster than
converting to dicts first); both hand the same fields to the shared ``_log``/``_span``/``_point``.

Builders for the opposite direction (plain records -> requests, for tests and benchmarks) live in
``otlp_build`` and are re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import orjson
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugwatch.streams.anyvalue import (
    attributes_from_json,
    attributes_from_proto,
    id_from_json,
    value_from_json,
    value_from_proto,
)
from plugwatch.streams.otlp_build import (  # re-exported: tests and benchmarks produce OTLP through here
    build_logs_request,
    build_metrics_request,
    build_traces_request,
    encode_otlp_json,
)

Signal = Literal["logs", "traces", "metrics"]

# Top-level key of each signal's OTLP/JSON request.
JSON_KEYS: dict[str, str] = {"logs": "resourceLogs", "traces": "resourceSpans", "metrics": "resourceMetrics"}


class OtlpError(ValueError):
    """A message is not an acceptable OTLP request; ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Later entries win: the current ``deployment.environment.name`` beats the older key.
_ENVELOPE_KEYS = (
    ("tenant.id", "tenant_id"),
    ("plugin.id", "plugin_id"),
    ("service.instance.id", "instance_id"),
    ("host.name", "host"),
    ("deployment.environment", "env"),
    ("deployment.environment.name", "env"),
    ("service.version", "plugin_version"),
    ("cloud.region", "region"),
)
_MAPPED = frozenset(key for key, _ in _ENVELOPE_KEYS)
_EXCEPTION_KEYS = (("exception.type", "type"), ("exception.message", "message"), ("exception.stacktrace", "stacktrace"))
_EXCEPTION = frozenset(key for key, _ in _EXCEPTION_KEYS)
_REQUEST = frozenset({"http.request.method", "http.method", "url.full", "http.url", "url.path"})
_HEADER_PREFIX = "http.request.header."

_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUSES = ("UNSET", "OK", "ERROR")
_TEMPORALITIES = ("UNSPECIFIED", "DELTA", "CUMULATIVE")


def level_from_severity(number: int) -> str:
    """OTLP SeverityNumber (1-24, four per level) -> level name; "" when unspecified."""
    if number <= 0:
        return ""
    return _LEVELS[min((number - 1) // 4, len(_LEVELS) - 1)]


def _name(names: tuple[str, ...], number: int) -> str:
    return names[number] if 0 <= number < len(names) else names[0]


def _lift(attributes: dict[str, Any], record: dict[str, Any]) -> None:
    """Move the semantic-convention keys out of ``attributes`` into ``record``'s envelope fields."""
    if _MAPPED.isdisjoint(attributes):
        return
    for key, field in _ENVELOPE_KEYS:
        if key in attributes:
            value = attributes.pop(key)
            if value is not None:
                record[field] = value if isinstance(value, str) else str(value)


def _context(
    resource: dict[str, Any], scope: dict[str, Any], scope_name: str, scope_version: str, name_attribute: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Envelope fields and attributes shared by every record of one scope."""
    attributes = {**resource, **scope}
    if name_attribute and scope_name:
        attributes["otel.scope.name"] = scope_name
    if scope_version:
        attributes["otel.scope.version"] = scope_version
    envelope: dict[str, Any] = {}
    _lift(attributes, envelope)
    return envelope, attributes


def _merge(envelope: dict[str, Any], base: dict[str, Any], own: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh record and attribute dict; the record's own attributes win over resource and scope."""
    record = dict(envelope)
    attributes = dict(base)
    if own:
        _lift(own, record)
        attributes.update(own)
    return record, attributes


def _request(attributes: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {}
    method = attributes.pop("http.request.method", None)
    legacy = attributes.pop("http.method", None)
    if method or legacy:
        request["method"] = method or legacy
    url = attributes.pop("url.full", None)
    legacy = attributes.pop("http.url", None)
    if url or legacy:
        request["url"] = url or legacy
    elif "url.path" in attributes:
        query = attributes.pop("url.query", None)
        path = attributes.pop("url.path")
        request["url"] = f"{path}?{query}" if query else path
    headers = {}
    for key in [key for key in attributes if key.startswith(_HEADER_PREFIX)]:
        value = attributes.pop(key)
        # Semantic conventions record each header as an array of its values.
        headers[key[len(_HEADER_PREFIX) :]] = ", ".join(map(str, value)) if isinstance(value, list) else value
    if headers:
        request["headers"] = headers
    return request


def _log(
    envelope: dict[str, Any],
    base: dict[str, Any],
    own: dict[str, Any],
    logger: str,
    ts_ns: int,
    severity_number: int,
    severity_text: str,
    body: Any,
    trace_id: str,
    span_id: str,
    event_name: str,
) -> dict[str, Any]:
    record, attributes = _merge(envelope, base, own)
    if ts_ns:
        record["ts"] = ts_ns // 1_000_000
    level = severity_text or level_from_severity(severity_number)
    if level:
        record["level"] = level
    if logger:
        record["logger"] = logger
    if body is not None:
        record["message"] = body if isinstance(body, str) else orjson.dumps(body).decode()
    if trace_id:
        record["trace_id"] = trace_id
    if span_id:
        record["span_id"] = span_id
    if event_name:
        attributes["event.name"] = event_name
    if not _EXCEPTION.isdisjoint(attributes):
        record["exception"] = {field: attributes.pop(key) for key, field in _EXCEPTION_KEYS if key in attributes}
    if not _REQUEST.isdisjoint(attributes):
        request = _request(attributes)
        if request:
            record["request"] = request
    record["attributes"] = attributes
    return record


def _span(
    envelope: dict[str, Any],
    base: dict[str, Any],
    own: dict[str, Any],
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str,
    events: list[dict[str, Any]],
    links: list[dict[str, Any]],
) -> dict[str, Any]:
    record, attributes = _merge(envelope, base, own)
    if trace_id:
        record["trace_id"] = trace_id
    if span_id:
        record["span_id"] = span_id
    record["parent_span_id"] = parent_span_id or None
    record["name"] = name
    record["kind"] = _name(_SPAN_KINDS, kind)
    if start_ns:
        record["start_ts"] = start_ns // 1_000_000
    if end_ns:
        record["end_ts"] = end_ns // 1_000_000
    record["status"] = _name(_STATUSES, status_code)
    if status_message:
        attributes["otel.status_description"] = status_message
    if events:
        record["events"] = events
    if links:
        record["links"] = links
    record["attributes"] = attributes
    return record


def _event(ts_ns: int, name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"ts": ts_ns // 1_000_000} if ts_ns else {}
    event["name"] = name
    event["attributes"] = attributes
    return event


def _point(
    envelope: dict[str, Any],
    base: dict[str, Any],
    own: dict[str, Any],
    name: str,
    unit: str,
    ts_ns: int,
    value: Any,
    stats: dict[str, Any],
) -> dict[str, Any]:
    record, attributes = _merge(envelope, base, own)
    if ts_ns:
        record["ts"] = ts_ns // 1_000_000
    record["name"] = name
    if value is not None:
        record["value"] = value
    if unit:
        record["unit"] = unit
    attributes.update(stats)
    record["attributes"] = attributes
    return record


def _metric_stats(kind: str, temporality: int, monotonic: bool) -> dict[str, Any]:
    stats: dict[str, Any] = {"otel.metric.type": kind}
    if kind != "gauge" and kind != "summary":
        stats["otel.metric.temporality"] = _name(_TEMPORALITIES, temporality)
    if kind == "sum":
        stats["otel.metric.monotonic"] = monotonic
    return stats


# --- protobuf -------------------------------------------------------------------------------------


def _logs_from_proto(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    records = []
    for resource_logs in request.resource_logs:
        resource = attributes_from_proto(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            envelope, base = _context(resource, attributes_from_proto(scope.attributes), scope.name, scope.version, False)
            for log in scope_logs.log_records:
                records.append(
                    _log(
                        envelope,
                        base,
                        attributes_from_proto(log.attributes),
                        scope.name,
                        log.time_unix_nano or log.observed_time_unix_nano,
                        log.severity_number,
                        log.severity_text,
                        value_from_proto(log.body),
                        log.trace_id.hex(),
                        log.span_id.hex(),
                        log.event_name,
                    )
                )
    return records


def _spans_from_proto(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    records = []
    for resource_spans in request.resource_spans:
        resource = attributes_from_proto(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            envelope, base = _context(resource, attributes_from_proto(scope.attributes), scope.name, scope.version, True)
            for span in scope_spans.spans:
                events = [_event(e.time_unix_nano, e.name, attributes_from_proto(e.attributes)) for e in span.events]
                links = [
                    {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "attributes": attributes_from_proto(link.attributes)}
                    for link in span.links
                ]
                records.append(
                    _span(
                        envelope,
                        base,
                        attributes_from_proto(span.attributes),
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.name,
                        span.kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        span.status.code,
                        span.status.message,
                        events,
                        links,
                    )
                )
    return records


def _metrics_from_proto(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    records = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_from_proto(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            envelope, base = _context(resource, attributes_from_proto(scope.attributes), scope.name, scope.version, True)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                stats = _metric_stats(kind, getattr(data, "aggregation_temporality", 0), getattr(data, "is_monotonic", False))
                for point in data.data_points:
                    if kind == "gauge" or kind == "sum":
                        which = point.WhichOneof("value")
                        value = getattr(point, which) if which else None
                        point_stats = stats
                    elif kind == "summary":
                        value = point.sum
                        quantiles = {str(q.quantile): q.value for q in point.quantile_values}
                        point_stats = {**stats, "count": point.count, "sum": point.sum, "quantiles": quantiles}
                    else:  # histogram, exponential_histogram
                        value = point.count
                        point_stats = {**stats, "count": point.count}
                        if point.HasField("sum"):
                            value = point_stats["sum"] = point.sum
                        if point.HasField("min"):
                            point_stats["min"] = point.min
                        if point.HasField("max"):
                            point_stats["max"] = point.max
                    records.append(
                        _point(
                            envelope,
                            base,
                            attributes_from_proto(point.attributes),
                            metric.name,
                            metric.unit,
                            point.time_unix_nano,
                            value,
                            point_stats,
                        )
                    )
    return records


def _complete_log(record: dict[str, Any]) -> bool:
    return "ts" in record


def _complete_span(record: dict[str, Any]) -> bool:
    return len(record.get("trace_id", "")) == 32 and len(record.get("span_id", "")) == 16


def _complete_point(record: dict[str, Any]) -> bool:
    return bool(record["name"])


class _Layout:
    """Where the resources and scopes sit in one signal's request, and how its records decode."""

    def __init__(
        self,
        request: type,
        resources: str,
        scopes: str,
        decode: Callable[[Any], list[dict[str, Any]]],
        complete: Callable[[dict[str, Any]], bool],
    ) -> None:
        self.request, self.resources, self.scopes = request, resources, scopes
        self.decode, self.complete = decode, complete


_LAYOUTS: dict[str, _Layout] = {
    "logs": _Layout(ExportLogsServiceRequest, "resource_logs", "scope_logs", _logs_from_proto, _complete_log),
    "traces": _Layout(ExportTraceServiceRequest, "resource_spans", "scope_spans", _spans_from_proto, _complete_span),
    "metrics": _Layout(
        ExportMetricsServiceRequest, "resource_metrics", "scope_metrics", _metrics_from_proto, _complete_point
    ),
}


def decode_proto(raw: bytes, signal: Signal) -> list[dict[str, Any]]:
    """Records of ``raw`` read as ``signal``'s protobuf export request.

    Protobuf's wire format is loose enough that random bytes, text, or another signal's request
    can parse "successfully", so a parse alone proves little. Accepted is a request whose request,
    resource and scope containers hold no field unknown to OTLP, that has at least one record, and
    in which at least one record has what every real one has (a timestamp; trace and span ids; a
    metric name) - another signal's request read as this one fails exactly there. Unknown fields
    inside records are ignored: newer OTLP versions add record fields.
    """
    layout = _LAYOUTS[signal]
    name = layout.request.__name__
    request = layout.request()
    try:
        request.ParseFromString(raw)
    except _ProtoDecodeError as exc:
        if "depth" in str(exc).lower():
            raise OtlpError("too_deep", f"protobuf {name} nests deeper than the parser allows: {exc}") from exc
        raise OtlpError("not_json_or_otlp", f"neither JSON nor a protobuf {name}: {exc}") from exc
    resources = getattr(request, layout.resources)
    unknown = len(UnknownFieldSet(request)) > 0
    for resource in resources:
        unknown = unknown or len(UnknownFieldSet(resource)) > 0
        for scope in getattr(resource, layout.scopes):
            unknown = unknown or len(UnknownFieldSet(scope)) > 0
    if unknown:
        raise OtlpError("not_json_or_otlp", f"neither JSON nor a protobuf {name} (it has fields unknown to OTLP)")
    records = layout.decode(request)
    if not any(map(layout.complete, records)):
        raise OtlpError(
            "not_json_or_otlp",
            f"neither JSON nor a protobuf {name}: it parses, but "
            + ("holds no records" if not records else "no record has the fields every real one has"),
        )
    return records


def request_type(signal: Signal) -> type:
    """The protobuf export request class of ``signal``."""
    return _LAYOUTS[signal].request


# --- OTLP/JSON ------------------------------------------------------------------------------------


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


def _scope_json(resource: dict[str, Any], container: dict[str, Any], name_attribute: bool) -> tuple[dict, dict, str]:
    scope = container.get("scope") or {}
    name = scope.get("name") or ""
    envelope, base = _context(
        resource, attributes_from_json(scope.get("attributes")), name, scope.get("version") or "", name_attribute
    )
    return envelope, base, name


def _logs_from_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for resource_logs in doc.get("resourceLogs") or ():
        resource = attributes_from_json((resource_logs.get("resource") or {}).get("attributes"))
        for scope_logs in resource_logs.get("scopeLogs") or ():
            envelope, base, logger = _scope_json(resource, scope_logs, False)
            for log in scope_logs.get("logRecords") or ():
                records.append(
                    _log(
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
                    _event(_ns(e.get("timeUnixNano")), e.get("name") or "", attributes_from_json(e.get("attributes")))
                    for e in span.get("events") or ()
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
                    _span(
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
                stats = _metric_stats(
                    kind, _enum(data.get("aggregationTemporality"), AggregationTemporality), bool(data.get("isMonotonic"))
                )
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
                        point_stats = {**stats, "count": _ns(point.get("count")), "sum": value, "quantiles": quantiles}
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
                        _point(
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


__all__ = [
    "JSON_KEYS",
    "OtlpError",
    "Signal",
    "build_logs_request",
    "build_metrics_request",
    "build_traces_request",
    "encode_otlp_json",
    "decode_proto",
    "level_from_severity",
    "records_from_json",
    "request_type",
]
