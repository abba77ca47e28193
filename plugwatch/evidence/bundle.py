"""Evidence bundles (DESIGN §7), pure: a gzip of JSON lines, the same bytes for the same snapshot.

Line 1 is the header (``schema``, ``evidence_id``, ``tenant_id``, ``plugin_id``, ``suspension_id``,
``created_at`` in epoch ms, ``counts`` per section, optionally ``severity`` and ``reason``); then one
line per item, ``{"section": <name>, ...item}``, sections by name, items in the caller's order (logs
stay in time order). Keys are sorted and gzip's timestamp is 0, so identical input gives identical
bytes and one SHA-256 -- the evidence store's address. (Another zlib build may compress differently;
the address is still the hash of the bytes actually stored.)

Items that are not objects, that carry a ``section`` key of their own or that are exactly
``{"item": ...}`` go in as ``{"section": <name>, "item": <item>}``, so every item reads back as it was.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

SCHEMA = "plugwatch.evidence/1"
REQUIRED_HEADER = ("evidence_id", "tenant_id", "plugin_id", "suspension_id", "created_at")
OPTIONAL_HEADER = ("severity", "reason")


class BundleError(ValueError):
    """A bundle that cannot be built or read; the message names what is wrong."""


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


def _line(section: str, item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping) and "section" not in item and set(item) != {"item"}:
        return {"section": section, **item}
    return {"section": section, "item": item}


def build_bundle(
    header: Mapping[str, Any],
    sections: Mapping[str, Sequence[Any]],
    *,
    mask: Callable[[Any], Any],
) -> bytes:
    """The gzip JSON-lines bundle of ``sections`` (name -> items) under ``header``.

    ``mask`` runs over every item and the header's ``reason`` even though the caller masked them
    already: evidence leaves the service, so one missed field must not leak. With the masking engine:
    ``mask=lambda value: engine.mask(value)[0]``.
    """
    missing = [k for k in REQUIRED_HEADER if header.get(k) in (None, "")]
    if missing:
        raise BundleError(f"evidence header lacks {', '.join(missing)}")
    unknown = sorted(set(header) - set(REQUIRED_HEADER) - set(OPTIONAL_HEADER) - {"schema", "counts"})
    if unknown:
        raise BundleError(f"evidence header has unknown fields {unknown}; allowed: "
                          f"{', '.join(REQUIRED_HEADER + OPTIONAL_HEADER)}")
    created_at = header["created_at"]
    if not isinstance(created_at, int) or isinstance(created_at, bool) or created_at < 0:
        raise BundleError(f"evidence created_at must be epoch milliseconds (int), got {created_at!r}")
    for name in sections:
        if not isinstance(name, str) or not name:
            raise BundleError(f"evidence section names must be non-empty strings, got {name!r}")

    names = sorted(sections)
    head: dict[str, Any] = {k: header[k] for k in REQUIRED_HEADER}
    head["schema"] = SCHEMA
    head["counts"] = {name: len(sections[name]) for name in names}
    if header.get("severity") is not None:
        head["severity"] = str(header["severity"])
    if header.get("reason") is not None:
        head["reason"] = mask(header["reason"])

    lines = [_dumps(head)]
    for name in names:
        lines.extend(_dumps(_line(name, mask(item))) for item in sections[name])
    return gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)


def read_bundle(data: bytes) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(header, section name -> items) of a bundle; ``BundleError`` when it is not a whole bundle."""
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"evidence bundle is not gzip: {exc}") from None
    raw_lines = [line for line in text.split(b"\n") if line]
    if not raw_lines:
        raise BundleError("evidence bundle is empty")
    try:
        header = orjson.loads(raw_lines[0])
        lines = [orjson.loads(line) for line in raw_lines[1:]]
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"evidence bundle has a line that is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise BundleError(f"evidence bundle header is not {SCHEMA}")
    counts = header.get("counts")
    if not isinstance(counts, dict):
        raise BundleError("evidence bundle header lacks counts")

    sections: dict[str, list[Any]] = {name: [] for name in counts}
    for number, line in enumerate(lines, start=2):
        if not isinstance(line, dict) or not isinstance(line.get("section"), str):
            raise BundleError(f"evidence bundle line {number} has no section")
        name = line.pop("section")
        if name not in sections:
            raise BundleError(f"evidence bundle line {number} is in section {name!r}, not in the header's counts")
        sections[name].append(line["item"] if set(line) == {"item"} else line)
    wrong = {n: (counts[n], len(items)) for n, items in sections.items() if counts[n] != len(items)}
    if wrong:
        detail = ", ".join(f"{n}: header {want}, found {got}" for n, (want, got) in sorted(wrong.items()))
        raise BundleError(f"evidence bundle is incomplete ({detail})")
    return header, sections
