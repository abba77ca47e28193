"""Notification texts per suspension event kind and language (DESIGN §7), rendered with Jinja2.

One template file per language (``templates/messages.<language>.j2``) holds a ``<kind>_subject`` and a
``<kind>_body`` block for every kind, so a translator works through one file. These are plain-text
emails, SMS and webhook JSON fields, so autoescape is off; the dispatcher masks the rendered text
before it leaves. Pure: no I/O beyond reading the package's own templates.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2

KINDS = (
    "suspension_requested",
    "suspension_approved",
    "suspension_executing",
    "plugin_suspended",
    "suspension_failed",
    "plugin_locked",
    "resume_requested",
    "plugin_resumed",
    "suspension_rejected",
)
LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
# The fields the templates know; a missing one renders as no line at all rather than "None".
CONTEXT_FIELDS = (
    "tenant_id", "plugin_id", "suspension_id", "mode", "requester", "approvers", "reason",
    "severity", "status", "elapsed_ms", "evidence_id", "at",
)
SUBJECT_LIMIT = 200

_TEMPLATES = Path(__file__).parent / "templates"


def resolve_language(language: str | None) -> str:
    """The template language for a tenant's language tag: exact (any case, ``_`` or ``-``), else the
    same primary language (``zh``, ``zh-Hans`` -> ``zh-CN``), else English."""
    if not language or not isinstance(language, str):
        return DEFAULT_LANGUAGE
    tag = language.strip().replace("_", "-").lower()
    for known in LANGUAGES:
        if tag == known.lower():
            return known
    primary = tag.split("-", 1)[0]
    for known in LANGUAGES:
        if known.lower().split("-", 1)[0] == primary:
            return known
    return DEFAULT_LANGUAGE


def render(kind: str, language: str | None, context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of ``kind`` in ``language`` (unknown languages fall back to English).

    ``context`` carries the fields in ``CONTEXT_FIELDS``; absent or None ones are left out of the
    text. ``ValueError`` for a kind there is no template for. The subject is one line."""
    if kind not in KINDS:
        raise ValueError(f"no notification template for kind {kind!r}; known kinds: {', '.join(KINDS)}")
    template = _environment().get_template(f"messages.{resolve_language(language)}.j2")
    values = _values(context)
    subject = _block(template, f"{kind}_subject", values)
    body = _block(template, f"{kind}_body", values)
    return _one_line(subject, SUBJECT_LIMIT), body.strip() + "\n"


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=False,  # text, not HTML: escaping would put &amp; into emails and SMS
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the tests, not a page at 3 a.m.
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _block(template: jinja2.Template, name: str, values: dict[str, Any]) -> str:
    render_block = template.blocks.get(name)
    if render_block is None:
        raise ValueError(f"{template.name} has no block {name!r}: add it to the template")
    return "".join(render_block(template.new_context(values)))


def _values(context: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {name: None for name in CONTEXT_FIELDS}
    for name, value in context.items():
        values[name] = _text(value)
    return values


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        value = ", ".join(str(item) for item in value)
    return str(value) or None


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
