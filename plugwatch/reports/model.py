"""What the report builder takes in: the alert, the plugin's telemetry and what is known of coverage.

Pure data (no Faust, aiokafka, httpx or ClickHouse imports): the agent and the HTTP view fill these
from the window keeper, ClickHouse and the clock; ``builder.build_report`` turns them into the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugwatch.streams.records import EpochMs, Id, RecordError

REPORT_SCHEMA = "plugwatch.debug.report/1"


class Alert(BaseModel):
    """An alert from monitoring (DESIGN §3): ``alert_id, ts, tenant_id, plugin_id, instance_id?,
    severity, kind, summary, window_s?``. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    alert_id: Id
    ts: EpochMs
    tenant_id: Id
    plugin_id: Id
    instance_id: str | None = None
    severity: str = "error"
    kind: str = "error"
    summary: str = ""
    window_s: int | None = Field(None, gt=0, le=86_400)

    @property
    def key(self) -> str:
        return f"{self.tenant_id}/{self.plugin_id}"


def parse_alert(data: Any) -> Alert:
    """A decoded alert -> ``Alert``; ``RecordError`` (reason, message without values) when invalid."""
    if not isinstance(data, dict):
        raise RecordError("wrong_type", f"an alert must be a JSON object, got {type(data).__name__}")
    try:
        return Alert.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        reason = "missing_field" if any(e["type"] == "missing" for e in errors) else "wrong_type"
        described = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'alert'}: {e['msg']}" for e in errors[:5])
        raise RecordError(reason, described) from None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One masked record of the plugin with its raw and clock-skew-corrected times (epoch ms).

    ``record`` is the masked record as on ``telemetry.masked.*``: a log, span (``start_ts``,
    ``end_ts``) or metric point; ``raw_ts`` is its own ``ts`` (``start_ts`` for spans).
    """

    signal: str  # "logs" | "traces" | "metrics"
    corrected_ts: int
    raw_ts: int
    source: str  # the clock that stamped it: instance_id, else host, else "unknown"
    record: dict[str, Any]


@dataclass(frozen=True)
class Coverage:
    """How much of the report window the telemetry covers, as the caller established it."""

    coverage: float = 1.0  # fraction of [from, to] for which the telemetry is known complete, 0..1
    fallback_used: bool = False  # ClickHouse filled (part of) the window
    complete: bool = True  # False: collection failed or left a gap; the report says what is missing
    notes: tuple[str, ...] = ()  # why incomplete, what was read instead
    known_sources: tuple[str, ...] = ()  # sources the plugin is known to have (skew estimator, alert)


@dataclass(frozen=True)
class Links:
    report_url: str | None = None
    export_url: str | None = None
    expires_at: int | None = None  # epoch ms of the export link's expiry
    ticket_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"report_url": self.report_url, "export_url": self.export_url,
                "expires_at": self.expires_at, "ticket_url": self.ticket_url}


@dataclass(frozen=True)
class ReportInput:
    """Everything one report (revision) is built from."""

    alert: Alert
    report_id: str
    revision: int
    window_from: int  # corrected epoch ms, inclusive
    window_to: int  # corrected epoch ms, inclusive
    telemetry: list[Telemetry]
    skew: list[dict[str, Any]]  # SkewEstimator.table() rows: source, signal, offset_ms, confidence, samples, basis
    generated_at: int  # epoch ms
    generated_ms: int | None  # alert consumed -> report written, once known
    owner: str | None = None
    coverage: Coverage = field(default_factory=Coverage)
    links: Links = field(default_factory=Links)
