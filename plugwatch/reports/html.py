"""The debug report as one self-contained HTML page, for a person opening it in a browser.

Pure (Jinja2 only): the HTTP view and the evidence store call ``render_report_html`` on the report JSON
(``plugwatch.debug.report/1``). The page has inline CSS, no scripts and no external resources, and a
Content-Security-Policy that forbids both, so a value that slipped past the masking engine and the
escaping still cannot run or phone home. Every field may be null or missing: the page then shows "—".
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

SECTIONS = ("summary", "environment", "stack_traces", "requests", "traces", "metrics", "timeline", "clock_skew")
SECTION_TITLES = {
    "summary": "Summary",
    "environment": "Environment",
    "stack_traces": "Stack traces",
    "requests": "Requests",
    "traces": "Failing traces",
    "metrics": "Metrics",
    "timeline": "Timeline",
    "clock_skew": "Clock skew",
}
ENVIRONMENT_KEYS = ("plugin_versions", "instances", "hosts", "env", "region", "runtime")
ERROR_LEVELS = frozenset({"error", "err", "fatal", "critical", "crit", "emergency", "emerg", "alert", "panic"})
WARN_LEVELS = frozenset({"warn", "warning"})
MAX_INDENT = 12
MISSING = "—"

_TEMPLATES = Path(__file__).parent / "templates"


def render_report_html(report: Mapping[str, Any], *, sections: Iterable[str] | None = None) -> str:
    """The report as an HTML page; ``sections`` picks and orders them (default: ``SECTIONS``)."""
    order = list(dict.fromkeys(SECTIONS if sections is None else sections))
    unknown = [name for name in order if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}: choose from {list(SECTIONS)}")
    return _environment().get_template("report.html.j2").render(**_view(_mapping(report), order))


def _view(report: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """What the template shows, every part coerced to its expected shape so nulls cannot break it."""
    alert = _mapping(report.get("alert"))
    completeness = _mapping(report.get("completeness"))
    traces = [_mapping(t) for t in _list(report.get("traces"))]
    metrics = _mapping(report.get("metrics"))
    environment = _mapping(report.get("environment"))
    flags = _mapping(environment.get("feature_flags"))
    plugin = report.get("plugin_id") or MISSING
    title = f"Debug report · {plugin} · alert {report.get('alert_id') or alert.get('alert_id') or MISSING}"
    title += f" · revision {report.get('revision') if report.get('revision') is not None else MISSING}"
    return {
        "title": title,
        "sections": order,
        "titles": SECTION_TITLES,
        "r": report,
        "alert": alert,
        "window": _mapping(report.get("window")),
        "environment": environment,
        "feature_flags": flags,
        "has_environment": bool(flags) or any(_entries(environment.get(key)) for key in ENVIRONMENT_KEYS),
        "stack_traces": [_mapping(s) for s in _list(report.get("stack_traces"))],
        "requests": [_mapping(q) for q in _list(report.get("requests"))],
        "traces": [{"trace": t, "rows": _span_rows(_list(t.get("spans")))} for t in traces],
        "metrics": sorted(((str(name), _mapping(m)) for name, m in metrics.items()), key=lambda item: item[0]),
        "timeline": [_mapping(e) for e in _list(report.get("timeline"))],
        "clock_skew": [_mapping(s) for s in _list(report.get("clock_skew"))],
        "completeness": completeness,
        "notes": _entries(completeness.get("notes")),
        "truncated": _mapping(completeness.get("truncated")),
        "links": _mapping(report.get("links")),
        "counts": _mapping(report.get("counts")),
    }


def _span_rows(spans: list[Any]) -> list[tuple[int, dict[str, Any]]]:
    """Spans as ``(depth, span)`` in tree order, children under their parent by start time.

    A span whose parent is not in the report (or that points at itself) is a root; spans caught in a
    parent cycle, which no root reaches, are listed at the end unindented.
    """
    spans = [s for s in spans if isinstance(s, Mapping)]
    ids = {_ident(s.get("span_id")) for s in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = defaultdict(list)
    roots = []
    for span in spans:
        parent = _ident(span.get("parent_span_id"))
        if parent is not None and parent in ids and parent != _ident(span.get("span_id")):
            children[parent].append(span)
        else:
            roots.append(span)

    def by_start(span: Mapping[str, Any]) -> tuple[float, str]:
        return (_sort_number(span.get("start_ts")), str(span.get("span_id")))

    rows: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()
    stack = [(0, s) for s in sorted(roots, key=by_start, reverse=True)]
    while stack:
        depth, span = stack.pop()
        if id(span) in seen:
            continue
        seen.add(id(span))
        rows.append((min(depth, MAX_INDENT), dict(span)))
        kids = children.get(_ident(span.get("span_id")), [])
        stack.extend((depth + 1, kid) for kid in sorted(kids, key=by_start, reverse=True))
    rows.extend((0, dict(s)) for s in spans if id(s) not in seen)
    return rows


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=format_epoch_ms,
        num=format_number,
        percent=format_percent,
        signed_ms=format_signed_ms,
        pretty=pretty_json,
        href=safe_href,
        level_class=level_class,
        text=text_or_missing,
        listing=format_list,
    )
    env.globals["offset_ms"] = offset_ms
    return env


def format_epoch_ms(value: Any) -> str:
    """Epoch milliseconds -> ``2026-11-24T09:15:01.480Z``; anything else shown as it is."""
    if _absent(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    try:
        moment = dt.datetime.fromtimestamp(int(value) // 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(value) % 1000:03d}Z"


def format_number(value: Any) -> str:
    if _absent(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def format_percent(value: Any) -> str:
    """A fraction 0..1 (confidence, coverage) as a percentage."""
    if _absent(value) or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING if _absent(value) else str(value)
    return f"{value * 100:.0f}%"


def format_signed_ms(value: Any) -> str:
    if _absent(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return MISSING if _absent(value) else str(value)
    return "0 ms" if value == 0 else f"{value:+.0f} ms"


def offset_ms(ts: Any, raw_ts: Any) -> int | float | None:
    """Corrected minus raw time: the clock-skew correction applied to one record."""
    numbers = [v for v in (ts, raw_ts) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ts - raw_ts if len(numbers) == 2 else None


def pretty_json(value: Any) -> str:
    """Indented JSON for headers, query, body and attributes; a string holding JSON is unfolded."""
    if _absent(value):
        return MISSING
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def safe_href(value: Any) -> str | None:
    """Only http(s) and site-relative links become clickable: a ``javascript:`` URL stays plain text."""
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("/") and not value.startswith("//"):
        return value
    try:
        scheme = urlsplit(value).scheme.lower()
    except ValueError:
        return None
    return value if scheme in ("http", "https") else None


def level_class(level: Any) -> str:
    name = str(level).lower() if not _absent(level) else ""
    if name in ERROR_LEVELS:
        return "lvl-error"
    return "lvl-warn" if name in WARN_LEVELS else ""


def text_or_missing(value: Any) -> Any:
    return MISSING if _absent(value) or value == "" else value


def format_list(value: Any) -> str:
    items = [str(item) for item in _entries(value) if not _absent(item)]
    return ", ".join(items) if items else MISSING


def _absent(value: Any) -> bool:
    return value is None or isinstance(value, jinja2.Undefined)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _entries(value: Any) -> list[Any]:
    """The non-empty items of a list; a lone string counts as one item (not as its characters)."""
    items = [value] if isinstance(value, str) else _list(value)
    return [item for item in items if item not in (None, "")]


def _ident(value: Any) -> str | None:
    return None if value is None else str(value)


def _sort_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.inf
