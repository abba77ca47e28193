"""ClickHouse DDL (DESIGN §9), applied idempotently on start; the same SQL for chDB and a server.

Telemetry rows are inserted as the masked records' own JSON bytes (format JSONAsString into the
``raw`` column): the record is serialized once, for the masked topic, and ClickHouse fills the
typed columns from it in C++ (one JSON parse per row into a tuple; ClickHouse evaluates the shared
``JSONExtract`` once). ``raw`` keeps every field, unknown ones included.

Tables are ReplacingMergeTree ordered by a key that ends in ``event_id`` (the source
topic/partition/offset/index of the record), so a redelivered batch collapses into the rows it
already wrote; read with ``FINAL`` where exact counts matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugwatch.evidence.numbers import evidence_sql
from plugwatch.notify.dispatch import notifications_sql

# Column kinds: how a record field becomes a column.
TEXT = "String"
LOW = "LowCardinality(String)"
JSON = "json"  # object or array, kept as JSON text
TIME = "time"  # epoch ms -> DateTime64(3, 'UTC')
OPTIONAL_TIME = "optional_time"
FLOAT = "Nullable(Float64)"
BOOL = "Bool"

_EXTRACT_TYPE = {TEXT: "String", LOW: "String", JSON: "String", TIME: "Int64",
                 OPTIONAL_TIME: "Nullable(Int64)", FLOAT: "Nullable(Float64)", BOOL: "Bool"}
_COLUMN_TYPE = {TEXT: "String", LOW: "LowCardinality(String)", JSON: "String",
                TIME: "DateTime64(3, 'UTC')", OPTIONAL_TIME: "Nullable(DateTime64(3, 'UTC'))",
                FLOAT: "Nullable(Float64)", BOOL: "Bool"}


# Merges of the telemetry tables, column by column in small blocks. chDB merges inside the worker,
# and a default (horizontal) merge holds a block of every column of every part it merges: measured
# on ``bench window``'s records inserted at 7,000 rows/s for 60 s, merges took up to 177 MiB and
# chDB's allocator up to 305 MiB resident (p90 252); with these settings 44 MiB and 168 MiB (p90 138),
# inserts keeping up all the same. On a server the same settings only spare the server's memory.
TELEMETRY_MERGE_SETTINGS = {
    "vertical_merge_algorithm_min_rows_to_activate": 1,
    "vertical_merge_algorithm_min_columns_to_activate": 1,
    "merge_max_block_size": 2048,
    "merge_max_block_size_bytes": 2 * 1024 * 1024,
}
_MERGE_SETTINGS_SQL = ", ".join(f"{name} = {value}" for name, value in TELEMETRY_MERGE_SETTINGS.items())


@dataclass(frozen=True)
class TelemetryTable:
    name: str
    columns: tuple[tuple[str, str], ...]  # (record field, kind)
    time_column: str
    order_by: tuple[str, ...]

    def create_sql(self, database: str, ttl_days: int) -> str:
        record_type = "Tuple(" + ", ".join(f"{n} {_EXTRACT_TYPE[k]}" for n, k in self.columns) + ")"
        parsed = f"JSONExtract(raw, '{record_type}')"
        lines = ["raw String CODEC(ZSTD(3))"]
        for name, kind in self.columns:
            value = f"tupleElement({parsed}, '{name}')"
            if kind in (TIME, OPTIONAL_TIME):
                value = f"fromUnixTimestamp64Milli({value})"
            codec = " CODEC(ZSTD(3))" if kind == JSON or name == "message" else ""
            lines.append(f"{name} {_COLUMN_TYPE[kind]} DEFAULT {value}{codec}")
        lines.append("inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)")
        body = ",\n    ".join(lines)
        return (
            f"CREATE TABLE IF NOT EXISTS {database}.{self.name} (\n    {body}\n)\n"
            f"ENGINE = ReplacingMergeTree(inserted_at)\n"
            f"PARTITION BY toDate({self.time_column})\n"
            f"ORDER BY ({', '.join(self.order_by)})\n"
            f"TTL toDateTime({self.time_column}) + INTERVAL {int(ttl_days)} DAY\n"
            f"SETTINGS {_MERGE_SETTINGS_SQL}"
        )

    def merge_settings_sql(self, database: str) -> str:
        """The merge settings for a table created before they were part of its DDL."""
        return f"ALTER TABLE {database}.{self.name} MODIFY SETTING {_MERGE_SETTINGS_SQL}"


_SOURCE = (("tenant_id", LOW), ("plugin_id", LOW), ("instance_id", TEXT), ("host", TEXT))
_TAIL = (("attributes", JSON), ("broker_ts", OPTIONAL_TIME), ("masking_violation", BOOL))

TELEMETRY_TABLES: dict[str, TelemetryTable] = {
    "logs": TelemetryTable(
        "telemetry_logs",
        (("event_id", TEXT), ("ts", TIME), *_SOURCE, ("plugin_version", TEXT), ("env", LOW),
         ("region", LOW), ("level", LOW), ("logger", TEXT), ("message", TEXT), ("trace_id", TEXT),
         ("span_id", TEXT), ("exception", JSON), ("request", JSON), *_TAIL),
        "ts",
        ("tenant_id", "plugin_id", "ts", "event_id"),
    ),
    "traces": TelemetryTable(
        "telemetry_spans",
        (("event_id", TEXT), ("start_ts", TIME), ("end_ts", TIME), *_SOURCE, ("trace_id", TEXT),
         ("span_id", TEXT), ("parent_span_id", TEXT), ("name", TEXT), ("status", LOW), ("kind", LOW),
         ("events", JSON), *_TAIL),
        "start_ts",
        ("tenant_id", "plugin_id", "start_ts", "event_id"),
    ),
    "metrics": TelemetryTable(
        "telemetry_metrics",
        (("event_id", TEXT), ("ts", TIME), *_SOURCE, ("name", LOW), ("value", FLOAT), ("unit", LOW), *_TAIL),
        "ts",
        ("tenant_id", "plugin_id", "name", "ts", "event_id"),
    ),
}


def skew_state_sql(database: str) -> str:
    """Clock-skew estimates per plugin, saved periodically; a new owner of the plugin's partition loads them."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.skew_state (\n"
        "    plugin_key String,\n"
        "    partition UInt32,\n"
        "    snapshot String CODEC(ZSTD(3)),\n"
        "    updated_at DateTime64(3, 'UTC')\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(updated_at)\n"
        "ORDER BY (partition, plugin_key)\n"
        "TTL toDateTime(updated_at) + INTERVAL 7 DAY"
    )


def debug_reports_sql(database: str) -> str:
    """Every revision of every report; the latest revision of a report is the one with the highest number."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.debug_reports (\n"
        "    report_id String,\n"
        "    revision UInt32,\n"
        "    alert_id String,\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    owner String,\n"
        "    fingerprint String,\n"
        "    generated_at DateTime64(3, 'UTC'),\n"
        "    generated_ms Nullable(UInt32),\n"
        "    complete Bool,\n"
        "    fallback_used Bool,\n"
        "    coverage Float32,\n"
        "    report String CODEC(ZSTD(3)),\n"
        "    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(inserted_at)\n"
        "PARTITION BY toYYYYMM(generated_at)\n"
        "ORDER BY (tenant_id, plugin_id, report_id, revision)\n"
        f"TTL toDateTime(generated_at) + INTERVAL {REPORTS_TTL_DAYS} DAY"
    )


def audit_log_sql(database: str) -> str:
    """Hash-chained audit records (plugwatch.audit.chain): one chain per writer, ordered by seq."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.audit_log (\n"
        "    chain String,\n"
        "    seq UInt64,\n"
        "    audit_id String,\n"
        "    ts DateTime64(3, 'UTC'),\n"
        "    action LowCardinality(String),\n"
        "    actor String,\n"
        "    tenant_id String,\n"
        "    plugin_id String,\n"
        "    target String,\n"
        "    outcome LowCardinality(String),\n"
        "    details String,\n"
        "    prev_hash String,\n"
        "    hash String,\n"
        "    record String CODEC(ZSTD(3)),\n"
        "    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(inserted_at)\n"
        "PARTITION BY toYYYYMM(ts)\n"
        "ORDER BY (chain, seq)\n"
        f"TTL toDateTime(ts) + INTERVAL {AUDIT_TTL_DAYS} DAY"
    )


def tickets_sql(database: str) -> str:
    """One row per ticket version (plugwatch.tickets.model.Ticket as JSON in ``state``): the mapping
    (tenant, plugin, fingerprint, generation) -> ticket, and the ticket itself when the embedded
    ticket table is the ticket system. The newest version wins."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.tickets (\n"
        "    ticket_id String,\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    fingerprint String,\n"
        "    generation UInt32,\n"
        "    system LowCardinality(String),\n"
        "    external_id String,\n"
        "    url String,\n"
        "    status LowCardinality(String),\n"
        "    severity LowCardinality(String),\n"
        "    owner String,\n"
        "    occurrences UInt32,\n"
        "    updated_at DateTime64(3, 'UTC'),\n"
        "    version UInt64,\n"
        "    state String CODEC(ZSTD(3))\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(version)\n"
        "ORDER BY (tenant_id, plugin_id, fingerprint, generation)\n"
        f"TTL toDateTime(updated_at) + INTERVAL {REPORTS_TTL_DAYS} DAY"
    )


def ticket_comments_sql(database: str) -> str:
    """Comments plugwatch put on tickets (all systems), keyed by the op that made them."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.ticket_comments (\n"
        "    ticket_id String,\n"
        "    comment_id String,\n"
        "    at DateTime64(3, 'UTC'),\n"
        "    kind LowCardinality(String),\n"
        "    body String CODEC(ZSTD(3))\n"
        ")\n"
        "ENGINE = ReplacingMergeTree\n"
        "ORDER BY (ticket_id, comment_id)\n"
        f"TTL toDateTime(at) + INTERVAL {REPORTS_TTL_DAYS} DAY"
    )


def debug_alerts_sql(database: str) -> str:
    """Alert lifecycles (plugwatch.regression.alerts.AlertLifecycle as JSON in ``state``)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.debug_alerts (\n"
        "    alert_id String,\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    status LowCardinality(String),\n"
        "    fingerprint String,\n"
        "    ticket_id String,\n"
        "    updated_at DateTime64(3, 'UTC'),\n"
        "    version UInt64,\n"
        "    state String CODEC(ZSTD(3))\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(version)\n"
        "ORDER BY alert_id\n"
        f"TTL toDateTime(updated_at) + INTERVAL {REPORTS_TTL_DAYS} DAY"
    )


def suspensions_sql(database: str) -> str:
    """Suspension and resume requests (plugwatch.suspension.machine.Suspension as JSON in ``state``)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.suspensions (\n"
        "    suspension_id String,\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    kind LowCardinality(String),\n"
        "    status LowCardinality(String),\n"
        "    severity LowCardinality(String),\n"
        "    mode LowCardinality(String),\n"
        "    requester String,\n"
        "    updated_at DateTime64(3, 'UTC'),\n"
        "    version UInt64,\n"
        "    state String CODEC(ZSTD(3))\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(version)\n"
        "ORDER BY (tenant_id, plugin_id, suspension_id)\n"
        f"TTL toDateTime(updated_at) + INTERVAL {AUDIT_TTL_DAYS} DAY"
    )


# Reports stay as long as the audit trail that refers to them; both at least the 180 days asked.
REPORTS_TTL_DAYS = 400
AUDIT_TTL_DAYS = 400


def ddl(database: str, telemetry_ttl_days: int) -> list[str]:
    return (
        [f"CREATE DATABASE IF NOT EXISTS {database}"]
        + [table.create_sql(database, telemetry_ttl_days) for table in TELEMETRY_TABLES.values()]
        + [table.merge_settings_sql(database) for table in TELEMETRY_TABLES.values()]
        + [skew_state_sql(database), debug_reports_sql(database), audit_log_sql(database),
           tickets_sql(database), ticket_comments_sql(database), debug_alerts_sql(database),
           suspensions_sql(database), notifications_sql(database), evidence_sql(database)]
    )
