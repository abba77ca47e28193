"""ClickHouse DDL (DESIGN §9), applied idempotently on start; the same SQL for chDB and a server.

Telemetry tables are ReplacingMergeTree ordered by a key that ends in ``event_id`` (the source
topic/partition/offset/index of the record), so a redelivered batch collapses into the rows it
already wrote; read with ``FINAL`` where exact counts matter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    signal: str
    # Columns filled straight from record fields of the same name.
    fields: tuple[str, ...]
    # Record fields holding epoch ms, sent to DateTime64(3) columns as seconds.
    time_fields: tuple[str, ...]
    # Record fields holding objects or arrays, stored as JSON strings.
    json_fields: tuple[str, ...]

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.fields + self.time_fields + self.json_fields)


TELEMETRY_TABLES: dict[str, Table] = {
    "logs": Table(
        "telemetry_logs",
        "logs",
        fields=(
            "event_id", "tenant_id", "plugin_id", "plugin_version", "instance_id", "host", "env",
            "region", "level", "logger", "message", "trace_id", "span_id", "masking_violation",
        ),
        time_fields=("ts", "broker_ts"),
        json_fields=("attributes", "exception", "request"),
    ),
    "traces": Table(
        "telemetry_spans",
        "traces",
        fields=(
            "event_id", "tenant_id", "plugin_id", "instance_id", "host", "trace_id", "span_id",
            "parent_span_id", "name", "status", "kind", "masking_violation",
        ),
        time_fields=("start_ts", "end_ts", "broker_ts"),
        json_fields=("attributes", "events"),
    ),
    "metrics": Table(
        "telemetry_metrics",
        "metrics",
        fields=(
            "event_id", "tenant_id", "plugin_id", "instance_id", "host", "name", "value", "unit",
            "masking_violation",
        ),
        time_fields=("ts", "broker_ts"),
        json_fields=("attributes",),
    ),
}

_COMMON = """
    tenant_id LowCardinality(String),
    plugin_id LowCardinality(String),
    instance_id String DEFAULT '',
    host String DEFAULT '',
    attributes String DEFAULT '{{}}' CODEC(ZSTD(3)),
    extra String DEFAULT '{{}}' CODEC(ZSTD(3)),
    broker_ts Nullable(DateTime64(3, 'UTC')),
    masking_violation Bool DEFAULT false,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
"""


def ddl(database: str, telemetry_ttl_days: int) -> list[str]:
    ttl = int(telemetry_ttl_days)
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"""
        CREATE TABLE IF NOT EXISTS {database}.telemetry_logs (
            event_id String,
            ts DateTime64(3, 'UTC'),
            plugin_version String DEFAULT '',
            env LowCardinality(String) DEFAULT '',
            region LowCardinality(String) DEFAULT '',
            level LowCardinality(String) DEFAULT '',
            logger String DEFAULT '',
            message String DEFAULT '' CODEC(ZSTD(3)),
            trace_id String DEFAULT '',
            span_id String DEFAULT '',
            exception String DEFAULT '' CODEC(ZSTD(3)),
            request String DEFAULT '' CODEC(ZSTD(3)),
            {_COMMON.format()}
        ) ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toDate(ts)
        ORDER BY (tenant_id, plugin_id, ts, event_id)
        TTL toDateTime(ts) + INTERVAL {ttl} DAY
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.telemetry_spans (
            event_id String,
            trace_id String DEFAULT '',
            span_id String DEFAULT '',
            parent_span_id String DEFAULT '',
            name String DEFAULT '',
            start_ts DateTime64(3, 'UTC'),
            end_ts DateTime64(3, 'UTC'),
            status LowCardinality(String) DEFAULT '',
            kind LowCardinality(String) DEFAULT '',
            events String DEFAULT '[]' CODEC(ZSTD(3)),
            {_COMMON.format()}
        ) ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toDate(start_ts)
        ORDER BY (tenant_id, plugin_id, start_ts, event_id)
        TTL toDateTime(start_ts) + INTERVAL {ttl} DAY
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.telemetry_metrics (
            event_id String,
            ts DateTime64(3, 'UTC'),
            name LowCardinality(String) DEFAULT '',
            value Nullable(Float64),
            unit LowCardinality(String) DEFAULT '',
            {_COMMON.format()}
        ) ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toDate(ts)
        ORDER BY (tenant_id, plugin_id, name, ts, event_id)
        TTL toDateTime(ts) + INTERVAL {ttl} DAY
        """,
    ]
