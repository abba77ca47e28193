"""Evidence numbers (``EVD-YYYYMMDD-NNNNNN``), the evidence record and its ClickHouse table.

Numbers are unique across workers without a shared database: ``claim`` returns a globally unique,
increasing integer -- in the service, the offset a one-partition topic gives a produced message
(plus one, so numbers start at 1). The day is the UTC day the number was claimed; the number never
restarts, so it alone is unique and the day is only there for people reading it.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson

from plugwatch.evidence.store import StoredObject

_EVIDENCE_ID = re.compile(r"EVD-(\d{8})-(\d{6}|[1-9]\d{6,})")


def format_evidence_id(day: date, n: int) -> str:
    """``EVD-20261124-000042``: six digits zero-padded, more when ``n`` reaches a million."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"an evidence number is an int >= 0, got {n!r}")
    return f"EVD-{day:%Y%m%d}-{n:06d}"


def parse_evidence_id(evidence_id: str) -> tuple[date, int]:
    """(day, number) of an evidence id; ``ValueError`` when it is not one."""
    match = _EVIDENCE_ID.fullmatch(evidence_id) if isinstance(evidence_id, str) else None
    if match is None:
        raise ValueError(f"not an evidence id (EVD-YYYYMMDD-NNNNNN): {evidence_id!r}")
    try:
        day = datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"evidence id {evidence_id!r} has no valid date") from None
    return day, int(match.group(2))


class EvidenceNumbers:
    """Hands out evidence ids from ``claim`` (sync or async), dated by ``clock`` (epoch seconds, UTC)."""

    def __init__(self, claim: Callable[[], int | Awaitable[int]], clock: Callable[[], float] = time.time):
        self._claim = claim
        self._clock = clock

    async def next_id(self) -> str:
        n = self._claim()
        if inspect.isawaitable(n):
            n = await n
        day = datetime.fromtimestamp(self._clock(), UTC).date()
        return format_evidence_id(day, n)


def evidence_record(
    *,
    evidence_id: str,
    stored: StoredObject,
    tenant_id: str,
    plugin_id: str,
    suspension_id: str,
    reason: str,
    created_at: int,
    expires_at: int,
    counts: Mapping[str, int],
    created_by: str,
    severity: str = "",
) -> dict[str, Any]:
    """The record on ``plugin.evidence`` (times in epoch ms); ``evidence_row`` makes the ClickHouse row."""
    parse_evidence_id(evidence_id)
    if expires_at < created_at:
        raise ValueError(f"evidence {evidence_id} would expire ({expires_at}) before it was made ({created_at})")
    return {
        "evidence_id": evidence_id,
        "sha256": stored.sha256,
        "size": stored.size,
        "uri": stored.uri,
        "tenant_id": tenant_id,
        "plugin_id": plugin_id,
        "suspension_id": suspension_id,
        "severity": severity,
        "reason": reason,
        "created_at": created_at,
        "expires_at": expires_at,
        "counts": dict(counts),
        "created_by": created_by,
    }


def evidence_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """An ``evidence_record`` as a row of ``evidence`` (for ``ClickHouse.insert_rows``)."""
    return {
        **{k: record[k] for k in ("evidence_id", "sha256", "size", "uri", "tenant_id", "plugin_id",
                                  "suspension_id", "severity", "reason", "created_by")},
        "created_at": record["created_at"] / 1000,
        "expires_at": record["expires_at"] / 1000,
        "counts": orjson.dumps(record["counts"], option=orjson.OPT_SORT_KEYS).decode(),
        "record": orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode(),
    }


def evidence_sql(database: str) -> str:
    """One row per evidence bundle; a redelivered record collapses into its row; kept until expires_at."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.evidence (\n"
        "    evidence_id String,\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    suspension_id String,\n"
        "    severity LowCardinality(String),\n"
        "    reason String,\n"
        "    sha256 String,\n"
        "    size UInt64,\n"
        "    uri String,\n"
        "    counts String,\n"
        "    created_by String,\n"
        "    created_at DateTime64(3, 'UTC'),\n"
        "    expires_at DateTime64(3, 'UTC'),\n"
        "    record String CODEC(ZSTD(3))\n"
        ")\n"
        "ENGINE = ReplacingMergeTree\n"
        "ORDER BY (tenant_id, plugin_id, evidence_id)\n"
        "TTL toDateTime(expires_at)"
    )
