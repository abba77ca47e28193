"""The plugwatch record an OTLP log, span or metric point becomes; shared by both OTLP walkers.

Resource, scope and record attributes are merged (record wins), the semantic-convention keys are
lifted into the envelope fields, and everything else stays under ``attributes``. Only fields that
were sent are set: a missing tenant or plugin stays missing for the caller's validation.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

Signal = Literal["logs", "traces", "metrics"]


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
_EXCEPTION_KEYS = (
    ("exception.type", "type"),
    ("exception.message", "message"),
    ("exception.stacktrace", "stacktrace"),
)
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


def scope_context(
    resource: dict[str, Any], scope: dict[str, Any], scope_name: str, scope_version: str, name_attribute: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Envelope fields and attributes shared by every record of one scope."""
    attributes = {**resource, **scope}
    # Spans and points keep the scope as OpenTelemetry's non-OTLP exporters do; logs use ``logger``.
    if name_attribute and scope_name:
        attributes["otel.scope.name"] = scope_name
    if scope_version:
        attributes["otel.scope.version"] = scope_version
    envelope: dict[str, Any] = {}
    _lift(attributes, envelope)
    return envelope, attributes


def _merge(
    envelope: dict[str, Any], base: dict[str, Any], own: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
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


def log_record(
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
    """A log record. ``level`` is the severity text as sent, else derived from the number; a
    non-string body is JSON text; ``exception.*`` and HTTP request attributes move to
    ``exception{}`` and ``request{}``, where the masking and the reports look for them."""
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
        exception = {field: attributes.pop(key) for key, field in _EXCEPTION_KEYS if key in attributes}
        record["exception"] = exception
    if not _REQUEST.isdisjoint(attributes):
        request = _request(attributes)
        if request:
            record["request"] = request
    record["attributes"] = attributes
    return record


def span_record(
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
    """A span record. Kind and status become their names; the status message goes to the
    ``otel.status_description`` attribute, where OpenTelemetry's non-OTLP exporters put it."""
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


def span_event(ts_ns: int, name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """One entry of a span record's ``events``."""
    event: dict[str, Any] = {"ts": ts_ns // 1_000_000} if ts_ns else {}
    event["name"] = name
    event["attributes"] = attributes
    return event


def point_record(
    envelope: dict[str, Any],
    base: dict[str, Any],
    own: dict[str, Any],
    name: str,
    unit: str,
    ts_ns: int,
    value: Any,
    stats: dict[str, Any],
) -> dict[str, Any]:
    """A metric record for one data point; ``stats`` (type, count/sum/min/max...) win over point
    attributes of the same name, since they describe the value itself."""
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


def metric_stats(kind: str, temporality: int, monotonic: bool) -> dict[str, Any]:
    """Attributes every point of one metric carries: its type and, where it has them, temporality
    and monotonicity (a report must know whether a value is a running total)."""
    stats: dict[str, Any] = {"otel.metric.type": kind}
    if kind != "gauge" and kind != "summary":
        stats["otel.metric.temporality"] = _name(_TEMPORALITIES, temporality)
    if kind == "sum":
        stats["otel.metric.monotonic"] = monotonic
    return stats
