"""Report assembly (DESIGN §6): alert, telemetry, clock skew and coverage -> the report JSON.

The contract is ``plugwatch.debug.report/1`` (see ``model.REPORT_SCHEMA``). Pure: no Faust, aiokafka,
httpx or ClickHouse. The caller picks the telemetry by corrected time and masks the finished report;
this module shapes, deduplicates, orders and bounds it. A record it cannot use (missing fields, wrong
types) is skipped field by field, never fatal: a report about a misbehaving plugin must not fail on
the plugin's odd telemetry. The same input always gives the same report.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from statistics import median_low
from typing import Any

from plugwatch.reports.model import REPORT_SCHEMA, Alert, ReportInput, Telemetry
from plugwatch.reports.template import ReportTemplate

SIGNALS = ("logs", "traces", "metrics")

# OTLP severity texts carry a number (ERROR2, FATAL4); syslog, JUL and zap add their own names.
_ERROR_LEVEL = re.compile(
    r"(?:err|error|fatal|crit|critical|severe|alert|emerg|emergency|panic|dpanic)\d*", re.IGNORECASE
)
_OTLP_ERROR_SEVERITY = 17  # SeverityNumber ERROR..FATAL4 is 17..24
_ERROR_STATUSES = frozenset({"error", "status_code_error", "2"})
_MAX_DEPTH = 12
_INT64 = (-(2**63), 2**64 - 1)  # orjson refuses integers outside 64 bits


def report_window(alert: Alert, template: ReportTemplate) -> tuple[int, int]:
    """The report's corrected-time window, both ends inclusive: the alert's own window_s or the template's."""
    window_s = alert.window_s or template.window_s
    return alert.ts - window_s * 1000, alert.ts


# -- fingerprints ---------------------------------------------------------------------------------

_MASKED = re.compile(r"\[[A-Z][A-Z0-9_]*:[^\]\n]*\]")  # [MASKED:email:ab3x], [TOKEN:...]
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"\d+")
_PATH = re.compile(r"[^\s()\[\]\"'@,]*[/\\][^\s()\[\]\"'@,]*")
_LINE_COL = re.compile(r"(?::line \d+|(?::\d+){1,2}(?=\)|$))")

_PY_FRAME = re.compile(r'File "(?P<file>[^"]*)", line \d+(?:, in (?P<func>.+))?')
_CAUSE = re.compile(r"(?:Caused by|Suppressed):\s*(?P<type>[\w.$]+)")
_AT_FRAME = re.compile(r"at\s+(?P<rest>\S.*)")
_AT_JS_FIREFOX = re.compile(r"(?P<func>[^@\s]*)@(?P<loc>\S+?)(?::\d+){1,2}")
_GO_FUNC = re.compile(r"(?P<func>[\w.*()/\[\]{}$-]+\.[\w.*()/\[\]{}$-]+)\([^()]*\)")
_GO_FILE = re.compile(r"(?P<file>\S+\.go):\d+(?:\s+\+0x[0-9a-fA-F]+)?")
_GO_CREATED = re.compile(r"created by (?P<func>\S+)")
_EXC_LINE = re.compile(
    r'(?:Exception in thread "[^"]*"\s+)?'
    r"(?P<type>(?:[A-Za-z_$][\w$]*\.)*[\w$]*(?:Error|Exception|Exit|Interrupt|Warning|Fault|Failure))"
    r"(?::.*)?"
)
# In a Python traceback every unindented line but the headers is "Type: message".
_PY_EXC_LINE = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?::.*)?")
_CHAINED = re.compile(r"During handling of the above exception|The above exception was the direct cause")
_MAX_FRAMES = 100
# Only the top of a trace is read, and each line only so far: real frames are far shorter, and the
# bound keeps the patterns linear on hostile text.
_MAX_LINES = 400
_MAX_LINE_CHARS = 400


def fingerprint_stack(exc_type: str | None, stacktrace: str | None) -> str:
    """16 hex chars naming one bug: the exception type and its normalised frames.

    Line numbers, addresses, masked tokens, numbers, thread and goroutine ids and install paths are
    left out, and so is the exception message (it varies per request), so the same bug on three
    instances or two builds of one version gets one fingerprint. Java, .NET, Python, Go and
    JavaScript frames are recognised; a trace without recognisable frames is used whole, normalised.
    """
    parts = [_normalise(exc_type.strip()) if isinstance(exc_type, str) else ""]
    text = stacktrace if isinstance(stacktrace, str) else ""
    lines = [line[:_MAX_LINE_CHARS] for line in text.splitlines()[:_MAX_LINES]]
    frames = _frames(lines)
    if not frames:
        frames = [_normalise(line.strip()) for line in lines if line.strip()]
    parts.extend(_collapse(frames)[:_MAX_FRAMES])
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


def _frames(lines: list[str]) -> list[str]:
    is_go = any(".go:" in line for line in lines)
    is_python = any(line.startswith("Traceback (most recent call last)") for line in lines)
    frames = []
    for raw_line in lines:
        frame = _frame(raw_line.strip(), is_go)
        if frame is None and is_python and raw_line[:1].isalpha():
            frame = f"raised {m['type']}" if (m := _PY_EXC_LINE.fullmatch(raw_line.rstrip())) else None
        if frame is not None:
            frames.append(_normalise(frame))
    return frames


def _frame(line: str, is_go: bool) -> str | None:
    """One line of a stack trace as a frame token, or None for messages, source lines and headers."""
    if not line:
        return None
    if m := _PY_FRAME.fullmatch(line):
        return f"{_tail(m['file'])} in {m['func'] or '?'}"
    if m := _CAUSE.match(line):
        return f"caused by {m['type']}"
    if m := _AT_FRAME.fullmatch(line):
        return "at " + _PATH.sub(lambda p: _tail(p.group()), _LINE_COL.sub("", m["rest"]))
    if is_go:
        if m := _GO_FILE.fullmatch(line):
            return _tail(m["file"])
        if m := _GO_CREATED.match(line):
            return f"created by {m['func']}"
        if m := _GO_FUNC.fullmatch(line):
            return m["func"]
        if line.startswith("panic:"):
            return "panic"
    if m := _AT_JS_FIREFOX.fullmatch(line):
        return f"{m['func']}@{_tail(m['loc'])}"
    if _CHAINED.match(line):
        return "chained"
    if m := _EXC_LINE.fullmatch(line):
        return f"raised {m['type']}"
    return None


def _tail(path: str) -> str:
    """The last two path segments: install prefixes (/srv/instance-3/venv/...) differ per instance."""
    parts = [p for p in re.split(r"[/\\]", path) if p]
    return "/".join(parts[-2:])


def _normalise(text: str) -> str:
    text = _MASKED.sub("[MASKED]", text)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("0x?", text)
    text = _NUMBER.sub("#", text)
    return " ".join(text.split())


def _collapse(frames: list[str]) -> list[str]:
    """Consecutive repeats folded into one, so recursion depth does not change the fingerprint."""
    return [frame for i, frame in enumerate(frames) if i == 0 or frame != frames[i - 1]]


def _alert_fingerprint(alert: Alert) -> str:
    return hashlib.sha256(f"alert\x1f{alert.kind}\x1f{alert.plugin_id}".encode()).hexdigest()[:16]


# -- plain values -----------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _cut_lines(text: str, max_lines: int, max_chars: int) -> str:
    lines = text.splitlines()
    if len(lines) > max_lines:
        text = "\n".join(lines[:max_lines]) + f"\n…[truncated {len(lines) - max_lines} lines]"
    return _cut(text, max_chars)


def _plain(value: Any, limit: int, depth: int = 0) -> Any:
    """``value`` as JSON-safe plain types, strings cut to ``limit``; anything else becomes its text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _cut(value, limit)
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {str(k): _plain(v, limit, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_plain(v, limit, depth + 1) for v in value]
        if isinstance(value, (set, frozenset)):
            return sorted((_plain(v, limit, depth + 1) for v in value), key=repr)
    return _cut(str(value), limit)


def _short(value: Any, limit: int) -> str | None:
    """A text field cut to ``limit``, or None."""
    text = _text(value)
    return None if text is None else _cut(text, limit)


def _text(value: Any) -> str | None:
    """A non-empty string field; numbers become text (a version sent as 2.1), anything else None."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> int | float | None:
    """A finite number that fits JSON consumers (64-bit integers), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) < 1e300 else None
    return value if _INT64[0] <= value <= _INT64[1] else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


# -- reading records --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """One usable telemetry record; ``index`` keeps equal times in the caller's order."""

    index: int
    signal: str
    ts: int  # corrected
    raw_ts: int
    source: str
    record: dict[str, Any]
    attributes: dict[str, Any]

    @property
    def offset(self) -> int:
        return self.ts - self.raw_ts

    @property
    def trace_id(self) -> str | None:
        return _text(self.record.get("trace_id"))

    @property
    def instance(self) -> str | None:
        return _text(self.record.get("instance_id")) or _text(self.record.get("host"))


def _items(telemetry: Iterable[Telemetry]) -> list[_Item]:
    """The usable records sorted by corrected time; spans before logs at the same instant, so a
    span's own logs follow its start, and the caller's order otherwise."""
    items = []
    for index, t in enumerate(telemetry):
        ts, raw, record, source = t.corrected_ts, t.raw_ts, t.record, t.source
        if type(ts) is not int or type(raw) is not int:  # the common case skips the checks
            ts, raw = _int(ts), _int(raw)
        if t.signal not in SIGNALS or ts is None or raw is None or not isinstance(record, dict):
            continue
        if type(source) is not str or not source:
            source = _text(source) or "unknown"
        attributes = record.get("attributes")
        items.append(_Item(index, t.signal, ts, raw, source, record,
                           attributes if isinstance(attributes, dict) else {}))
    items.sort(key=lambda item: (item.ts, 0 if item.signal == "traces" else 1, item.index))
    return items


def _level(record: dict[str, Any]) -> str | None:
    return _text(record.get("level")) or _text(record.get("severity_text")) or _text(record.get("severity"))


def _is_error_log(record: dict[str, Any]) -> bool:
    level = _level(record)
    if level is not None and (_known_error_level if len(level) <= 64 else _error_level)(level):
        return True
    number = record.get("severity_number")
    if number is None:
        return False
    number = _int(number)
    return number is not None and number >= _OTLP_ERROR_SEVERITY


def _error_level(level: str) -> bool:
    """A level name that means an error."""
    return _ERROR_LEVEL.fullmatch(level.strip()) is not None


# A plugin uses a handful of level names, so each short one is matched once (only short ones are
# remembered: a level is whatever a record says).
_known_error_level = lru_cache(maxsize=1024)(_error_level)


def _span_status(record: dict[str, Any]) -> str | None:
    status = record.get("status")
    if isinstance(status, dict):  # {"code": 2, "message": ...} as some exporters send it
        status = status.get("code", status.get("status_code"))
    return _text(status)


def _is_error_span(record: dict[str, Any]) -> bool:
    status = _span_status(record)
    return status is not None and status.strip().lower() in _ERROR_STATUSES


@dataclass(frozen=True, slots=True)
class _Exception:
    type: str | None
    message: str | None
    stacktrace: str | None
    ts: int
    instance: str | None
    trace_id: str | None


def _log_exception(item: _Item) -> _Exception | None:
    exc = item.record.get("exception")
    if isinstance(exc, str):  # a bare stack trace
        exc = {"stacktrace": exc}
    if not isinstance(exc, dict):
        attributes = item.attributes
        if "exception.type" not in attributes and "exception.stacktrace" not in attributes:
            return None  # the common case: a message alone names no bug (see _exception)
        exc = {key: attributes.get(f"exception.{key}") for key in ("type", "message", "stacktrace")}
    return _exception(exc, item.ts, item)


def _span_exceptions(item: _Item) -> list[_Exception]:
    """OpenTelemetry's ``record_exception``: span events named "exception" with exception.* attributes."""
    events = item.record.get("events")
    if not isinstance(events, list):
        return []
    found = []
    for event in events:
        if not isinstance(event, dict) or event.get("name") != "exception":
            continue
        attributes = event.get("attributes")
        if not isinstance(attributes, dict):
            continue
        raw = _int(event.get("ts"))
        exc = {key: attributes.get(f"exception.{key}") for key in ("type", "message", "stacktrace")}
        found.append(_exception(exc, item.ts if raw is None else raw + item.offset, item))
    return [exc for exc in found if exc is not None]


def _exception(exc: dict[str, Any], ts: int, item: _Item) -> _Exception | None:
    exc_type, stacktrace = _text(exc.get("type")), _text(exc.get("stacktrace"))
    if exc_type is None and stacktrace is None:
        return None  # a message alone names no bug
    return _Exception(exc_type, _text(exc.get("message")), stacktrace, ts, item.instance, item.trace_id)


# -- sections ---------------------------------------------------------------------------------------


def _exceptions(items: list[_Item]) -> list[_Exception]:
    """Every exception in time order. One recorded both on a log and on its span counts once."""
    from_logs = [e for item in items if item.signal == "logs" if (e := _log_exception(item))]
    logged = {(e.trace_id, e.type) for e in from_logs if e.trace_id}
    from_spans = [e for item in items if item.signal == "traces" for e in _span_exceptions(item)
                  if not (e.trace_id and (e.trace_id, e.type) in logged)]
    return sorted(from_logs + from_spans, key=lambda e: e.ts)


def _stack_groups(exceptions: list[_Exception]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    fingerprints: dict[tuple[str | None, str | None], str] = {}  # one bug repeats the same text
    for exc in exceptions:
        fp = fingerprints.get((exc.type, exc.stacktrace))
        if fp is None:
            fp = fingerprints[(exc.type, exc.stacktrace)] = fingerprint_stack(exc.type, exc.stacktrace)
        group = groups.get(fp)
        if group is None:
            group = groups[fp] = {"fingerprint": fp, "type": exc.type, "message": exc.message,
                                  "stacktrace": exc.stacktrace, "count": 0, "first_ts": exc.ts,
                                  "last_ts": exc.ts, "instances": set()}
        group["count"] += 1
        group["last_ts"] = max(group["last_ts"], exc.ts)
        # The earliest occurrence speaks for the group; later ones fill what it lacked.
        for key in ("type", "message", "stacktrace"):
            if group[key] is None:
                group[key] = getattr(exc, key)
        if exc.instance:
            group["instances"].add(exc.instance)
    return list(groups.values())


def _dominant(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    return min(groups, key=lambda g: (-g["count"], g["first_ts"], g["fingerprint"]), default=None)


_STACK_ORDER = {
    "count_desc": lambda g: (-g["count"], g["first_ts"], g["fingerprint"]),
    "first_seen": lambda g: (g["first_ts"], g["fingerprint"]),
    "last_seen": lambda g: (-g["last_ts"], g["fingerprint"]),
}


def _stack_traces(groups: list[dict[str, Any]], template: ReportTemplate) -> tuple[list[dict[str, Any]], int]:
    limits = template.limits
    ordered = sorted(groups, key=_STACK_ORDER[template.ordering.stack_traces])
    kept = ordered[: limits.stack_traces]
    rows = []
    for group in kept:
        stacktrace = group["stacktrace"]
        rows.append({
            **group,
            "type": _short(group["type"], limits.message_chars),
            "message": _short(group["message"], limits.message_chars),
            "stacktrace": _cut_lines(stacktrace, limits.stacktrace_lines, limits.stacktrace_chars)
            if stacktrace else None,
            "instances": sorted(_cut(i, limits.message_chars) for i in group["instances"]),
        })
    return rows, len(ordered) - len(kept)


def _failing_traces(items: list[_Item], exceptions: list[_Exception]) -> dict[str, int]:
    """trace_id -> corrected time of its latest failure: error logs, exceptions, error spans."""
    latest: dict[str, int] = {}

    def mark(trace_id: str | None, ts: int) -> None:
        if trace_id:
            latest[trace_id] = max(ts, latest.get(trace_id, ts))

    for item in items:
        is_error = _is_error_log if item.signal == "logs" else _is_error_span if item.signal == "traces" else None
        if is_error is not None and is_error(item.record):
            mark(item.trace_id, item.ts)
    for exc in exceptions:
        mark(exc.trace_id, exc.ts)
    return latest


def _requests(items: list[_Item], failing: dict[str, int], template: ReportTemplate
              ) -> tuple[list[dict[str, Any]], int]:
    found = [item for item in items
             if item.signal == "logs" and isinstance(item.record.get("request"), dict)]
    order = template.ordering.requests
    if order == "oldest_first":
        found.sort(key=lambda item: (item.ts, item.index))
    elif order == "newest_first":
        found.sort(key=lambda item: (-item.ts, -item.index))
    else:
        found.sort(key=lambda item: (not _is_failing_request(item, failing), -item.ts, -item.index))
    kept = found[: template.limits.requests]
    return [_request(item, template) for item in kept], len(found) - len(kept)


def _is_failing_request(item: _Item, failing: dict[str, int]) -> bool:
    trace_id = item.trace_id
    return (_is_error_log(item.record) or _log_exception(item) is not None
            or (trace_id is not None and trace_id in failing))


def _request(item: _Item, template: ReportTemplate) -> dict[str, Any]:
    request, limit = item.record["request"], template.limits.message_chars
    headers, query = request.get("headers"), request.get("query")
    return {
        "ts": item.ts,
        "method": _short(request.get("method"), limit),
        "url": _short(request.get("url"), limit),
        "headers": _plain(headers, limit) if isinstance(headers, dict) else None,
        "query": _plain(query, limit) if isinstance(query, dict) else None,
        "body": _body(request.get("body"), template.limits.body_chars),
        "trace_id": _short(item.trace_id, limit),
        "level": _short(_level(item.record), limit),
        "instance_id": _short(item.instance, limit),
    }


def _body(body: Any, limit: int) -> Any:
    """Text bodies are cut; a structured body too long to show whole becomes its cut JSON text."""
    if body is None or isinstance(body, str):
        return _short(body, limit)
    plain = _plain(body, limit)
    text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    return plain if len(text) <= limit else _cut(text, limit)


def _traces(items: list[_Item], failing: dict[str, int], template: ReportTemplate
            ) -> tuple[list[dict[str, Any]], int, int]:
    """Failing traces, latest failure first, with their spans by corrected start."""
    limits = template.limits
    spans: dict[str, list[_Item]] = {}
    for item in items:
        if item.signal == "traces" and item.trace_id in failing:
            spans.setdefault(item.trace_id, []).append(item)
    ordered = sorted(failing, key=lambda trace_id: (-failing[trace_id], trace_id))
    rows, spans_left_out = [], 0
    for trace_id in ordered[: limits.traces]:
        own = spans.get(trace_id, [])
        kept = own
        if len(own) > limits.spans_per_trace:
            # Error spans first: they are why the trace is here.
            chosen = sorted(own, key=lambda s: (not _is_error_span(s.record), s.ts, s.index))
            kept = sorted(chosen[: limits.spans_per_trace], key=lambda s: (s.ts, s.index))
            spans_left_out += len(own) - len(kept)
        if any(_is_error_span(s.record) for s in own):
            status = "error"
        else:
            status = "ok" if own else "unknown"
        rows.append({"trace_id": _cut(trace_id, limits.message_chars), "status": status,
                     "spans": [_span(s, limits.message_chars) for s in kept]})
    return rows, len(ordered) - len(rows), spans_left_out


def _span(item: _Item, limit: int) -> dict[str, Any]:
    record = item.record
    end = _int(record.get("end_ts"))
    return {
        "span_id": _short(record.get("span_id"), limit),
        "parent_span_id": _short(record.get("parent_span_id"), limit),
        "name": _short(record.get("name"), limit),
        "start_ts": item.ts,
        "end_ts": None if end is None else end + item.offset,
        "raw_start_ts": item.raw_ts,
        "duration_ms": None if end is None else end - item.raw_ts,
        "status": _short(_span_status(record), limit),
        "source": _short(item.source, limit),
        "attributes": _plain(item.attributes, limit),
    }


def _metrics(items: list[_Item], template: ReportTemplate) -> tuple[dict[str, Any], int]:
    stats: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.signal != "metrics":
            continue
        name, value = _text(item.record.get("name")), _number(item.record.get("value"))
        if name is None or value is None:
            continue
        entry = stats.get(name)
        if entry is None:
            entry = stats[name] = {"min": value, "max": value, "sum": 0.0, "last": value, "count": 0, "unit": None}
        entry["min"], entry["max"] = min(entry["min"], value), max(entry["max"], value)
        entry["sum"] += value
        entry["count"] += 1
        entry["last"] = value  # items are in corrected-time order
        entry["unit"] = _text(item.record.get("unit")) or entry["unit"]
    names = sorted(stats)
    kept = names[: template.limits.metrics]
    limit = template.limits.message_chars
    summary = {}
    for name in kept:
        entry = stats[name]
        summary[_cut(name, limit)] = {
            "min": entry["min"], "max": entry["max"], "avg": _plain(entry["sum"] / entry["count"], limit),
            "last": entry["last"], "count": entry["count"],
            "unit": _short(entry["unit"], limit),
        }
    return summary, len(names) - len(kept)


def _timeline(items: list[_Item], alert_ts: int, template: ReportTemplate) -> tuple[list[dict[str, Any]], int]:
    limit = template.limits.message_chars
    chosen = [item for item in items if item.signal != "metrics"]
    left_out = max(0, len(chosen) - template.limits.timeline)
    if left_out:
        # Over the limit: the entries nearest the alert explain it best.
        by_distance = sorted(range(len(chosen)), key=lambda i: (abs(chosen[i].ts - alert_ts), i))
        chosen = [chosen[i] for i in sorted(by_distance[: template.limits.timeline])]
    rows = []
    for item in chosen:
        if item.signal == "traces":
            level, message = _span_status(item.record), item.record.get("name")
        else:
            level, message = _level(item.record), item.record.get("message")
        rows.append({"ts": item.ts, "raw_ts": item.raw_ts, "source": _cut(item.source, limit),
                     "signal": item.signal, "level": _short(level, limit), "message": _short(message, limit),
                     "trace_id": _short(item.trace_id, limit)})
    return rows, left_out


# Environment list <- the record fields and OpenTelemetry resource attributes it is read from.
_ENVIRONMENT_FIELDS = (("plugin_versions", "plugin_version"), ("instances", "instance_id"), ("hosts", "host"),
                       ("env", "env"), ("region", "region"), ("runtime", "runtime"))
_ENVIRONMENT_ATTRIBUTES = (("plugin_versions", "service.version"), ("instances", "service.instance.id"),
                           ("hosts", "host.name"), ("env", "deployment.environment.name"),
                           ("env", "deployment.environment"), ("region", "cloud.region"))


def _environment(items: list[_Item], template: ReportTemplate) -> dict[str, Any]:
    limit = template.limits.message_chars
    found: dict[str, set[Any]] = {key: set() for key, _ in _ENVIRONMENT_FIELDS}
    # One pass over the records per field (thousands of records, a handful of distinct values).
    records = [item.record for item in items]
    attributes = [item.attributes for item in items if item.attributes]
    for key, name in _ENVIRONMENT_FIELDS:
        found[key].update(_distinct(records, name))
    for key, name in _ENVIRONMENT_ATTRIBUTES:
        found[key].update(_distinct(attributes, name))
    found["runtime"].update({_runtime(attrs) for attrs in attributes
                             if "process.runtime.name" in attrs or "telemetry.sdk.language" in attrs})
    flags: dict[str, Any] = {}
    for item in items:  # in time order, so a flag evaluated twice shows its latest value
        record, attrs = item.record, item.attributes
        if "feature_flags" not in record and "feature_flags" not in attrs and "feature_flag.key" not in attrs:
            continue
        for source in (record.get("feature_flags"), attrs.get("feature_flags")):
            if isinstance(source, dict):
                for name, value in source.items():
                    flags[_cut(str(name), limit)] = _plain(value, limit)
        flag = _text(attrs.get("feature_flag.key"))
        if flag is not None:
            flags[_cut(flag, limit)] = _plain(_flag_value(attrs), limit)
    environment: dict[str, Any] = {
        key: sorted({_cut(text, limit) for value in values if (text := _text(value)) is not None})
        for key, values in found.items()
    }
    environment["feature_flags"] = dict(sorted(flags.items()))
    return environment


def _distinct(dicts: list[dict[str, Any]], name: str) -> set[Any]:
    """The distinct text and number values of ``name`` in ``dicts`` (of equal values, the first seen)."""
    try:
        values = {d.get(name) for d in dicts}
    except TypeError:  # an unhashable value (a list, an object): filter before collecting
        return {value for d in dicts if isinstance(value := d.get(name), (str, int, float))}
    return {value for value in values if isinstance(value, (str, int, float))}


def _runtime(attrs: dict[str, Any]) -> str | None:
    """``process.runtime.name``/``version`` ("CPython 3.11.4"), else the SDK language ("python 3.11.4")."""
    name = _text(attrs.get("process.runtime.name")) or _text(attrs.get("telemetry.sdk.language"))
    if name is None:
        return None
    version = _text(attrs.get("process.runtime.version"))
    return f"{name} {version}" if version else name


def _flag_value(attrs: dict[str, Any]) -> Any:
    # Semantic conventions moved the evaluated value: feature_flag.variant -> feature_flag.result.*
    for key in ("feature_flag.result.variant", "feature_flag.variant", "feature_flag.result.value",
                "feature_flag.value"):
        if attrs.get(key) is not None:
            return attrs[key]
    return None


def _clock_skew(items: list[_Item], skew: Any, known: Iterable[str]) -> list[dict[str, Any]]:
    """The estimator's rows for the sources in the telemetry or known to the plugin. A source and
    signal in the telemetry without a row gets one showing the offset the caller applied."""
    present = {(item.source, item.signal) for item in items}
    sources = {source for source, _ in present} | {s for s in known if isinstance(s, str)}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in skew if isinstance(skew, (list, tuple)) else ():
        if not isinstance(row, dict):
            continue
        source, signal = _text(row.get("source")), _text(row.get("signal"))
        if source not in sources or signal is None or (source, signal) in rows:
            continue
        confidence = _number(row.get("confidence"))
        entry = {"source": source, "signal": signal, "offset_ms": _int(row.get("offset_ms")) or 0,
                 "confidence": float(confidence) if confidence is not None else 0.0,
                 "samples": _int(row.get("samples")) or 0}
        if _text(row.get("basis")):
            entry["basis"] = _text(row.get("basis"))
        rows[(source, signal)] = entry
    # Offsets applied, gathered only for the pairs without a row (usually none: the estimator has them all).
    applied: dict[tuple[str, str], list[int]] = {pair: [] for pair in present - rows.keys()}
    if applied:
        for item in items:
            if (pair := (item.source, item.signal)) in applied:
                applied[pair].append(item.ts - item.raw_ts)
    for (source, signal), offsets in applied.items():
        offset = median_low(offsets)
        rows[(source, signal)] = {"source": source, "signal": signal, "offset_ms": offset, "confidence": 0.0,
                                  "samples": 0, "basis": "applied" if offset else "none"}
    order = {signal: i for i, signal in enumerate(SIGNALS)}
    return [rows[key] for key in sorted(rows, key=lambda k: (k[0], order.get(k[1], len(SIGNALS)), k[1]))]


# -- the report -------------------------------------------------------------------------------------


def build_report(inp: ReportInput, template: ReportTemplate) -> dict[str, Any]:
    """The report JSON (``plugwatch.debug.report/1``) for one revision; plain types, deterministic.

    A section the template leaves out is empty ([] or {}); what a limit cut is counted per section
    in ``completeness.truncated`` (``spans`` for spans cut from kept traces).
    """
    alert, limits, included = inp.alert, template.limits, template.includes
    items = _items(inp.telemetry)
    exceptions = _exceptions(items)
    groups = _stack_groups(exceptions)
    failing = _failing_traces(items, exceptions)
    dominant = _dominant(groups)

    environment = _environment(items if included("environment") else [], template)
    stack_traces, cut_stacks = _stack_traces(groups, template) if included("stack_traces") else ([], 0)
    requests, cut_requests = _requests(items, failing, template) if included("requests") else ([], 0)
    traces, cut_traces, cut_spans = _traces(items, failing, template) if included("traces") else ([], 0, 0)
    metrics, cut_metrics = _metrics(items, template) if included("metrics") else ({}, 0)
    timeline, cut_timeline = _timeline(items, alert.ts, template) if included("timeline") else ([], 0)
    coverage = inp.coverage
    clock_skew = _clock_skew(items, inp.skew, coverage.known_sources) if included("clock_skew") else []
    truncated = {"metrics": cut_metrics, "requests": cut_requests, "spans": cut_spans,
                 "stack_traces": cut_stacks, "timeline": cut_timeline, "traces": cut_traces}
    known = {source for source in coverage.known_sources if isinstance(source, str)}

    return {
        "schema": REPORT_SCHEMA,
        "report_id": inp.report_id,
        "alert_id": alert.alert_id,
        "tenant_id": alert.tenant_id,
        "plugin_id": alert.plugin_id,
        "owner": inp.owner,
        "revision": inp.revision,
        "generated_at": inp.generated_at,
        "generated_ms": inp.generated_ms,
        "alert": {"alert_id": alert.alert_id, "ts": alert.ts, "severity": alert.severity, "kind": alert.kind,
                  "summary": _cut(alert.summary, limits.message_chars), "instance_id": alert.instance_id},
        "fingerprint": dominant["fingerprint"] if dominant else _alert_fingerprint(alert),
        "window": {"from": inp.window_from, "to": inp.window_to},
        "environment": environment,
        "stack_traces": stack_traces,
        "requests": requests,
        "traces": traces,
        "metrics": metrics,
        "timeline": timeline,
        "clock_skew": clock_skew,
        "completeness": {
            "coverage": float(coverage.coverage),
            "fallback_used": bool(coverage.fallback_used),
            "missing_sources": sorted(known - {item.source for item in items}),
            "complete": bool(coverage.complete),
            "notes": [str(note) for note in coverage.notes],
            "truncated": {section: count for section, count in truncated.items() if count},
        },
        "links": inp.links.as_dict(),
        "counts": {signal: sum(1 for item in items if item.signal == signal) for signal in SIGNALS},
    }
