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


# The fast path: what ``schema.model_validate(data).model_dump(exclude_none=True)`` returns, for the
# shapes nearly every record has -- each field of the exact JSON type it is declared with,
# timestamps already epoch ms in range -- field by field in plain Python (3.2 instead of 5.7 us a
# log record; the model took ~5 % of a loaded worker's event loop). Any other shape returns None
# and goes through the model, which also words the errors. Every model field needs a kind here.
_TEXT, _ID, _EPOCH, _MAP, _CODE, _FLOAT, _ANY, _MODEL = range(8)
_INT64 = 2**63
_KINDS: dict[tuple[type[BaseModel], str], int] = {
    (_Record, "tenant_id"): _ID, (_Record, "plugin_id"): _ID, (_Record, "attributes"): _MAP,
    (LogRecord, "ts"): _EPOCH, (MetricRecord, "ts"): _EPOCH, (SpanRecord, "start_ts"): _EPOCH,
    (SpanRecord, "end_ts"): _EPOCH, (SpanRecord, "status"): _CODE, (SpanRecord, "kind"): _CODE,
    (MetricRecord, "value"): _FLOAT, (LogRecord, "exception"): _MODEL, (LogRecord, "request"): _MODEL,
    (RequestInfo, "headers"): _MAP, (RequestInfo, "query"): _MAP, (RequestInfo, "body"): _ANY,
}
_Fields = tuple[tuple[str, int, bool, Any], ...]  # (name, kind, required, the nested model's fields)


def _fields(model: type[BaseModel]) -> _Fields:
    """``model``'s fields in declaration order (the order ``model_dump`` writes them in)."""
    fields = []
    for name, info in model.model_fields.items():
        owner = next(base for base in model.__mro__ if name in getattr(base, "__annotations__", {}))
        kind = _KINDS.get((owner, name), _TEXT)
        if kind == _TEXT and info.annotation != Text:
            raise TypeError(f"{model.__name__}.{name} needs a kind in records._KINDS")
        nested = _fields(info.annotation.__args__[0]) if kind == _MODEL else None
        fields.append((name, kind, info.is_required(), nested))
    return tuple(fields)


_FAST = {signal: _fields(schema) for signal, schema in SCHEMAS.items()}


def _fast(fields: _Fields, data: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    get = data.get
    for name, kind, required, nested in fields:
        value = get(name)
        if value is None:  # absent or null: left out, as exclude_none does; the model refuses it if required
            if required:
                return None
            continue
        if kind == _TEXT:
            if type(value) is not str:
                return None
        elif kind == _ID:
            if type(value) is not str or not 0 < len(value) <= 256:
                return None
        elif kind == _EPOCH:
            if type(value) is not int or not _MIN_MS <= value < _MAX_MS:
                return None
        elif kind == _MAP:
            if type(value) is not dict or not all(type(k) is str for k in value):
                return None
            value = dict(value)
        elif kind == _MODEL:
            if type(value) is not dict:
                return None
            value = _fast(nested, value)
            if value is None:
                return None
        elif kind == _CODE:
            if type(value) is int:
                value = str(value)
            elif type(value) is not str:
                return None
        elif kind == _FLOAT:
            if type(value) is int and -_INT64 <= value < _INT64:
                value = float(value)
            elif type(value) is not float:
                return None
        out[name] = value
    if len(data) > len(out):  # unknown fields follow in their own order; null ones are left out
        for name, value in data.items():
            if value is not None and name not in out:
                out[name] = value
    return out


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
    record = _fast(_FAST[signal], data) if type(data) is dict else None
    if record is None:
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
