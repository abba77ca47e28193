"""Record schemas of the inbound telemetry (DESIGN §3), validated with pydantic.

Only ``tenant_id``, ``plugin_id`` and a timestamp are required; known fields are type-checked and
unknown fields are kept. Timestamps (RFC 3339 strings or epoch milliseconds) become epoch ms.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

# Epoch ms outside [2000-01-01, 2100-01-01) is almost always seconds or nanoseconds sent by mistake.
_MIN_MS = 946_684_800_000
_MAX_MS = 4_102_444_800_000


def to_epoch_ms(value: Any) -> int:
    """RFC 3339 string or epoch milliseconds (int/float) -> epoch ms; anything else is an error."""
    if isinstance(value, bool):
        raise ValueError("a timestamp must be epoch milliseconds or an RFC 3339 string, not a boolean")
    if isinstance(value, (int, float)):
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        if text.isdigit():
            ms = int(text)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("a timestamp must be epoch milliseconds or an RFC 3339 string")
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(
            f"timestamp {ms} is outside 2000..2100 in epoch milliseconds (seconds or nanoseconds sent?)"
        )
    return ms


def _code_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


EpochMs = Annotated[int, BeforeValidator(to_epoch_ms)]
Id = Annotated[str, Field(min_length=1, max_length=256)]
Text = str | None
Attributes = dict[str, Any] | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False, coerce_numbers_to_str=False)

    tenant_id: Id
    plugin_id: Id
    instance_id: Text = None
    host: Text = None
    attributes: Attributes = None


class ExceptionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Text = None
    message: Text = None
    stacktrace: Text = None


class RequestInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    method: Text = None
    url: Text = None
    headers: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    body: Any = None


class LogRecord(_Record):
    ts: EpochMs
    plugin_version: Text = None
    env: Text = None
    region: Text = None
    level: Text = None
    logger: Text = None
    message: Text = None
    trace_id: Text = None
    span_id: Text = None
    exception: ExceptionInfo | None = None
    request: RequestInfo | None = None


class SpanRecord(_Record):
    start_ts: EpochMs
    end_ts: EpochMs | None = None
    trace_id: Text = None
    span_id: Text = None
    parent_span_id: Text = None
    name: Text = None
    # OTLP sends codes as numbers or names; one column type downstream, so both become text.
    status: Annotated[str | None, BeforeValidator(_code_text)] = None
    kind: Annotated[str | None, BeforeValidator(_code_text)] = None


class MetricRecord(_Record):
    ts: EpochMs
    name: Text = None
    value: float | None = None
    unit: Text = None


SCHEMAS: dict[str, type[_Record]] = {
    "logs": LogRecord,
    "traces": SpanRecord,
    "metrics": MetricRecord,
}

# Aliases accepted for the timestamp field, so "timestamp" or "time" work like "ts".
_TS_ALIASES = ("timestamp", "time", "@timestamp")


class RecordError(ValueError):
    """A record failed validation; ``reason`` is a short code, the message says what to fix."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def validate(signal: str, data: Any) -> dict[str, Any]:
    """Validate one decoded record of ``signal``; returns a plain dict with epoch-ms timestamps."""
    if not isinstance(data, dict):
        raise RecordError("wrong_type", f"a {signal} record must be a JSON object, got {type(data).__name__}")
    schema = SCHEMAS[signal]
    time_field = "start_ts" if signal == "traces" else "ts"
    if time_field not in data:
        for alias in _TS_ALIASES:
            if alias in data:
                data = {**data, time_field: data[alias]}
                del data[alias]
                break
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        raise RecordError(_reason(exc), _describe(exc)) from None
    record = model.model_dump(exclude_none=True)
    if signal == "traces" and "end_ts" not in record:
        record["end_ts"] = record["start_ts"]
    return record


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False)
    if any(err["type"] == "missing" for err in errors):
        return "missing_field"
    return "wrong_type"


def _describe(exc: ValidationError) -> str:
    """Field paths and messages only: the offending values may be secrets, so they are never quoted."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
