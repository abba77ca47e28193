"""Plain plugwatch records -> OTLP export requests, as an instrumented plugin and the Collector send them.

For tests, benchmarks and integration runs that must put realistic OTLP on the telemetry topics.
Each builder is the inverse of the decoder in ``otlp``: decoding a built request gives the records
back (with ``ts`` as epoch milliseconds). Envelope fields become resource attributes; records that
share them share one resource, records that share a scope name share one scope.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugwatch.streams.anyvalue import set_attributes, set_value

_RESOURCE_FIELDS = (
    ("tenant_id", "tenant.id"),
    ("plugin_id", "plugin.id"),
    ("instance_id", "service.instance.id"),
    ("host", "host.name"),
    ("env", "deployment.environment.name"),
    ("plugin_version", "service.version"),
    ("region", "cloud.region"),
)
_SEVERITIES = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "FATAL": 21,
    "CRITICAL": 21,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ID_KEYS = ("traceId", "spanId", "parentSpanId")

# Keys the decoder adds to ``attributes`` from request structure; the builder turns them back.
_SCOPE_NAME = "otel.scope.name"
_STATUS_DESCRIPTION = "otel.status_description"
_METRIC_TYPE = "otel.metric.type"
_TEMPORALITY = "otel.metric.temporality"
_MONOTONIC = "otel.metric.monotonic"


def encode_otlp_json(request: Message) -> bytes:
    """``request`` in OTLP/JSON as the Collector's Kafka exporter writes it (``otlp_json``).

    That is the protobuf JSON mapping except that trace and span ids are hex, not base64, and enums
    are integers.
    """
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    _hex_ids(doc)
    return orjson.dumps(doc)


def _hex_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key in _ID_KEYS:
            if key in node:
                node[key] = base64.b64decode(node[key]).hex()
        for value in node.values():
            _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def _ns(ts: Any) -> int:
    """Epoch ms (int or float) or an RFC 3339 string -> epoch nanoseconds; None -> 0 (unset)."""
    if ts is None:
        return 0
    if isinstance(ts, str):
        moment = datetime.fromisoformat(ts)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)  # as the record validation reads it
        delta = moment - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return int(ts * 1_000_000)


def _id(value: str | None, field: str) -> bytes:
    if not value:
        return b""
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not hex; ids are written as lowercase hex strings") from None


def _grouped(
    records: Iterable[dict[str, Any]], scope_of: Callable[[dict[str, Any]], str]
) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        resource = tuple(record.get(field) for field, _ in _RESOURCE_FIELDS)
        groups.setdefault(resource, {}).setdefault(scope_of(record), []).append(record)
    return groups


def _fill_resource(resource: Any, key: tuple) -> None:
    for (_, attribute), value in zip(_RESOURCE_FIELDS, key):
        if value is not None:
            kv = resource.attributes.add()
            kv.key = attribute
            set_value(kv.value, value)


def _scope_attribute(record: dict[str, Any]) -> str:
    return (record.get("attributes") or {}).get(_SCOPE_NAME) or ""


def build_logs_request(records: list[dict[str, Any]]) -> ExportLogsServiceRequest:
    """An ExportLogsServiceRequest carrying plugwatch log ``records`` (``logger`` names the scope)."""
    request = ExportLogsServiceRequest()
    for resource_key, scopes in _grouped(records, lambda record: record.get("logger") or "").items():
        resource_logs = request.resource_logs.add()
        _fill_resource(resource_logs.resource, resource_key)
        for scope_name, items in scopes.items():
            scope_logs = resource_logs.scope_logs.add()
            scope_logs.scope.name = scope_name
            for record in items:
                log = scope_logs.log_records.add()
                log.time_unix_nano = log.observed_time_unix_nano = _ns(record.get("ts"))
                level = record.get("level")
                if level:
                    log.severity_text = level
                    log.severity_number = _SEVERITIES.get(level.upper(), 0)
                if record.get("message") is not None:
                    set_value(log.body, record["message"])
                log.trace_id = _id(record.get("trace_id"), "trace_id")
                log.span_id = _id(record.get("span_id"), "span_id")
                attributes = dict(record.get("attributes") or {})
                for field, value in (record.get("exception") or {}).items():
                    attributes[f"exception.{field}"] = value
                request_info = record.get("request") or {}
                if request_info.get("method"):
                    attributes["http.request.method"] = request_info["method"]
                if request_info.get("url"):
                    attributes["url.full"] = request_info["url"]
                for header, value in (request_info.get("headers") or {}).items():
                    attributes[f"http.request.header.{header.lower()}"] = [value]
                set_attributes(log.attributes, attributes)
    return request


def build_traces_request(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest carrying plugwatch span records.

    ``kind`` defaults to INTERNAL, ``status`` to UNSET; ``attributes["otel.status_description"]``
    becomes the status message and ``attributes["otel.scope.name"]`` the scope.
    """
    request = ExportTraceServiceRequest()
    for resource_key, scopes in _grouped(spans, _scope_attribute).items():
        resource_spans = request.resource_spans.add()
        _fill_resource(resource_spans.resource, resource_key)
        for scope_name, items in scopes.items():
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope_name
            for record in items:
                span = scope_spans.spans.add()
                span.trace_id = _id(record.get("trace_id"), "trace_id")
                span.span_id = _id(record.get("span_id"), "span_id")
                span.parent_span_id = _id(record.get("parent_span_id"), "parent_span_id")
                span.name = record.get("name") or ""
                kind = (record.get("kind") or "INTERNAL").upper()
                span.kind = Span.SpanKind.Value(f"SPAN_KIND_{kind}")
                span.start_time_unix_nano = _ns(record.get("start_ts"))
                span.end_time_unix_nano = _ns(record.get("end_ts"))
                status = (record.get("status") or "UNSET").upper()
                span.status.code = Status.StatusCode.Value(f"STATUS_CODE_{status}")
                attributes = dict(record.get("attributes") or {})
                attributes.pop(_SCOPE_NAME, None)
                description = attributes.pop(_STATUS_DESCRIPTION, None)
                if description:
                    span.status.message = str(description)
                set_attributes(span.attributes, attributes)
                for item in record.get("events") or ():
                    event = span.events.add()
                    event.time_unix_nano = _ns(item.get("ts"))
                    event.name = item.get("name") or ""
                    set_attributes(event.attributes, item.get("attributes") or {})
                for item in record.get("links") or ():
                    link = span.links.add()
                    link.trace_id = _id(item.get("trace_id"), "links[].trace_id")
                    link.span_id = _id(item.get("span_id"), "links[].span_id")
                    set_attributes(link.attributes, item.get("attributes") or {})
    return request


def _fill_number(point: Any, value: Any) -> None:
    if isinstance(value, bool) or isinstance(value, int):
        point.as_int = int(value)
    elif value is not None:
        point.as_double = float(value)


def build_metrics_request(points: list[dict[str, Any]]) -> ExportMetricsServiceRequest:
    """An ExportMetricsServiceRequest carrying plugwatch metric points.

    The metric type comes from ``type`` or ``attributes["otel.metric.type"]``: ``gauge`` (default),
    ``sum`` (monotonic and cumulative unless ``otel.metric.monotonic`` / ``otel.metric.temporality``
    say otherwise) or ``histogram`` (``value`` is the sum; ``count``/``min``/``max`` attributes).
    Points of the same name, unit and type share one metric.
    """
    request = ExportMetricsServiceRequest()
    for resource_key, scopes in _grouped(points, _scope_attribute).items():
        resource_metrics = request.resource_metrics.add()
        _fill_resource(resource_metrics.resource, resource_key)
        for scope_name, items in scopes.items():
            scope_metrics = resource_metrics.scope_metrics.add()
            scope_metrics.scope.name = scope_name
            metrics: dict[tuple, Any] = {}
            for record in items:
                attributes = dict(record.get("attributes") or {})
                attributes.pop(_SCOPE_NAME, None)
                declared = attributes.pop(_METRIC_TYPE, None)
                kind = record.get("type") or declared or "gauge"
                temporality = AggregationTemporality.Value(
                    f"AGGREGATION_TEMPORALITY_{attributes.pop(_TEMPORALITY, None) or 'CUMULATIVE'}"
                )
                monotonic = attributes.pop(_MONOTONIC, True)
                key = (record.get("name") or "", record.get("unit") or "", kind)
                metric = metrics.get(key)
                if metric is None:
                    metric = metrics[key] = scope_metrics.metrics.add()
                    metric.name, metric.unit = key[0], key[1]
                if kind == "gauge":
                    point = metric.gauge.data_points.add()
                    _fill_number(point, record.get("value"))
                elif kind == "sum":
                    metric.sum.aggregation_temporality = temporality
                    metric.sum.is_monotonic = bool(monotonic)
                    point = metric.sum.data_points.add()
                    _fill_number(point, record.get("value"))
                elif kind == "histogram":
                    metric.histogram.aggregation_temporality = temporality
                    point = metric.histogram.data_points.add()
                    point.count = int(attributes.pop("count", 1))
                    point.sum = float(attributes.pop("sum", record.get("value") or 0.0))
                    for bound in ("min", "max"):
                        if bound in attributes:
                            setattr(point, bound, float(attributes.pop(bound)))
                else:
                    raise ValueError(f"metric type {kind!r} cannot be built; use gauge, sum or histogram")
                point.time_unix_nano = point.start_time_unix_nano = _ns(record.get("ts"))
                set_attributes(point.attributes, attributes)
    return request
