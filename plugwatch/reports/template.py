"""The report template (``config/plugins/debug/report_template.yaml``): sections, limits and orderings.

Pure data: the builder reads it, the HTML page follows ``sections`` for its order. A key left out of
the file takes the default below, which matches the shipped file; anything unknown is refused, so a
typo does not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SECTIONS = ("summary", "environment", "stack_traces", "requests", "traces", "metrics", "timeline", "clock_skew")
Section = Literal["summary", "environment", "stack_traces", "requests", "traces", "metrics", "timeline",
                  "clock_skew"]
Limit = Annotated[int, Field(gt=0, strict=True)]


class TemplateError(ValueError):
    """The template file is missing or malformed; the message names the file and the key."""


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stack_traces: Limit = 20
    stacktrace_lines: Limit = 80
    stacktrace_chars: Limit = 8000
    requests: Limit = 50
    traces: Limit = 20
    spans_per_trace: Limit = 200
    timeline: Limit = 500
    metrics: Limit = 100
    message_chars: Limit = 2000
    body_chars: Limit = 4000


class Ordering(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stack_traces: Literal["count_desc", "first_seen", "last_seen"] = "count_desc"
    requests: Literal["failing_first", "newest_first", "oldest_first"] = "failing_first"
    metrics: Literal["name"] = "name"


class ReportTemplate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    window_s: Annotated[int, Field(gt=0, le=86_400, strict=True)] = 300
    sections: tuple[Section, ...] = SECTIONS
    limits: Limits = Limits()
    ordering: Ordering = Ordering()

    @field_validator("sections")
    @classmethod
    def _distinct(cls, sections: tuple[str, ...]) -> tuple[str, ...]:
        if not sections:
            raise ValueError("list at least one section")
        repeated = sorted({s for s in sections if sections.count(s) > 1})
        if repeated:
            raise ValueError(f"each section may appear once; repeated: {', '.join(repeated)}")
        return sections

    @classmethod
    def default(cls) -> ReportTemplate:
        """The shipped template's values (config/plugins/debug/report_template.yaml)."""
        return cls()

    def includes(self, section: str) -> bool:
        return section in self.sections


def load_template(path: Path | str) -> ReportTemplate:
    """The template at ``path``; ``TemplateError`` naming the file and the bad key when it is not valid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the report template ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: the report template must be a mapping of keys "
                            f"(version, window_s, sections, limits, ordering), got {type(data).__name__}")
    try:
        return ReportTemplate.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors(include_url=False)[:10])
        raise TemplateError(f"{path}: {problems}") from None


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"]) or "template"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (known: {', '.join(_known(err['loc'][:-1]))})"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("literal_error", "greater_than", "less_than_equal", "int_type"):
        message += f" (got {err.get('input')!r})"
    return f"{loc}: {message}"


def _known(parent: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = ReportTemplate
    if parent and parent[0] == "limits":
        model = Limits
    elif parent and parent[0] == "ordering":
        model = Ordering
    return list(model.model_fields)
