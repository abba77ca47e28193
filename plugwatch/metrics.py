"""Prometheus metrics of the service, on one registry served at ``/metrics``.

Names follow DESIGN §8 (the platform's names, dots as underscores) and ``plugwatch_*`` for the rest.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created series double the output and say nothing a scrape needs
REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_MESSAGES = Counter(
    "plugwatch_ingest_messages_total",
    "Messages consumed from an inbound telemetry topic",
    ["topic"],
    registry=REGISTRY,
)
INGEST_RECORDS = Counter(
    "plugwatch_ingest_records_total",
    "Records decoded, validated, masked and written, by signal and wire encoding",
    ["signal", "encoding"],
    registry=REGISTRY,
)
DEADLETTERS = Counter(
    "plugwatch_deadletter_total",
    "Inputs sent to the dead-letter topic, by source topic and reason",
    ["topic", "reason"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "plugwatch_consumer_lag",
    "Messages between the committed offset and the end of an assigned partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "plugwatch_ingest_batch_size",
    "Messages per ingest batch",
    ["signal"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
CLICKHOUSE_ROWS = Counter(
    "plugwatch_clickhouse_rows_total", "Rows inserted into ClickHouse", ["table"], registry=REGISTRY
)
CLICKHOUSE_INSERT_SECONDS = Histogram(
    "plugwatch_clickhouse_insert_seconds",
    "Time of one batched ClickHouse insert",
    ["table"],
    registry=REGISTRY,
)
CLICKHOUSE_BUSY_SECONDS = Counter(
    "plugwatch_clickhouse_busy_seconds_total",
    "Time ClickHouse calls held the client's one thread, by kind (insert, query, other); "
    "its rate near 1 means calls queue",
    ["kind"],
    registry=REGISTRY,
)
CLICKHOUSE_ERRORS = Counter(
    "plugwatch_clickhouse_errors_total", "Failed ClickHouse inserts (retried)", ["table"], registry=REGISTRY
)
MASKING_DETECTIONS = Counter(
    "plugwatch_masking_detections_total",
    "Sensitive values masked, by detector or key rule",
    ["detector"],
    registry=REGISTRY,
)
MASKING_VIOLATIONS = Counter(
    "debug_masking_violation_total",
    "Values the post-mask verifier still found sensitive (replaced whole, never emitted)",
    registry=REGISTRY,
)


CLICKHOUSE_PURGES = Counter(
    "plugwatch_clickhouse_purges_total", "Times chDB's allocator gave the memory it kept free back to the system",
    registry=REGISTRY,
)

WINDOW_BYTES = Gauge(
    "plugwatch_window_bytes", "JSON bytes (plus per-entry overhead) of the records in the per-plugin windows: what the budget counts",
    registry=REGISTRY,
)
WINDOW_HELD = Gauge(
    "plugwatch_window_held_bytes", "Bytes the per-plugin windows' records take as held (compressed)", registry=REGISTRY
)
WINDOW_ENTRIES = Gauge("plugwatch_window_entries", "Records held in the per-plugin windows", registry=REGISTRY)
WINDOW_KEYS = Gauge("plugwatch_window_plugins", "Plugins with a window on this worker", registry=REGISTRY)
CLOCK_SKEW = Gauge(
    "plugwatch_clock_skew_offset_ms",
    "Estimated offset to add to a source's raw timestamps to reach the reference timeline",
    ["plugin", "source", "signal"],
    registry=REGISTRY,
)

DEBUG_REPORT_GENERATE_MS = Histogram(
    "debug_report_generate_ms",
    "Milliseconds from an alert consumed (or a report requested) to its report written",
    buckets=(10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2500, 5000, 10000, 60000),
    registry=REGISTRY,
)
DEBUG_REPORT_FAILURES = Counter(
    "debug_report_failure_total",
    "Reports that could not be built or written (the alert stays unacknowledged and is retried)",
    registry=REGISTRY,
)
DEBUG_REPORTS = Counter(
    "plugwatch_debug_reports_total",
    "Report revisions written, by trigger (alert, api, late_data) and completeness",
    ["trigger", "complete"],
    registry=REGISTRY,
)
ALERTS_REJECTED = Counter(
    "plugwatch_alerts_rejected_total", "Alerts sent to the dead-letter topic, by reason", ["reason"], registry=REGISTRY
)
EXPORTS = Counter(
    "plugwatch_debug_exports_total",
    "Export links issued and downloads served or refused, by action and outcome",
    ["action", "outcome"],
    registry=REGISTRY,
)
AUDIT_RECORDS = Counter(
    "plugwatch_audit_records_total", "Audit records written, by action", ["action"], registry=REGISTRY
)

TICKET_OPS = Counter(
    "plugwatch_ticket_ops_total",
    "Ticket ops applied, by op (report, comment, close) and outcome (create, new_alert, revision, replay, "
    "commented, closed, no_ticket, unavailable, rejected)",
    ["op", "outcome"],
    registry=REGISTRY,
)
TICKET_DELIVERY_DELAY = Histogram(
    "plugwatch_ticket_delivery_delay_seconds",
    "From an op entering the ticket outbox to the ticket system having it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
TICKET_OUTBOX_DELAY = Gauge(
    "debug_ticket_outbox_delay_seconds",
    "How long the ticket op waiting for an unavailable ticket system has waited (0 when none waits)",
    registry=REGISTRY,
)
REGRESSION_RUNS = Counter(
    "plugwatch_regression_runs_total", "Regression runs after a fix, by result (passed, failed)", ["result"],
    registry=REGISTRY,
)
TICKET_AUTOCLOSE_RATE = Gauge(
    "debug_ticket_autoclose_rate",
    "Share of finished regression runs on this worker that passed and closed their ticket and alert",
    registry=REGISTRY,
)

SUSPEND_RESPONSE_TIME = Histogram(
    "plugin_suspend_response_time",
    "Seconds from a suspension request to its outcome (suspended, locked, failed)",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
SUSPEND_SUCCESS_RATE = Gauge(
    "plugin_suspend_success_rate", "Share of finished suspensions on this worker that ended suspended",
    registry=REGISTRY,
)
SUSPEND_FORCE = Counter("plugin_suspend_force_total", "force_suspend commands sent", registry=REGISTRY)
RESUME_APPROVAL_DURATION = Histogram(
    "plugin_resume_approval_duration",
    "Seconds from a resume request to its last approval",
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
