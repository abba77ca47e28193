"""Collecting a report's telemetry: window first, ClickHouse for the rest, and a report with a signed
download link when that fails too. The window keeper is the real one; ClickHouse is a stand-in that
either serves rows or fails the way a dead server does."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from plugwatch.agents.reports import ReportService, report_id_for
from plugwatch.masking import MaskingEngine
from plugwatch.reports.model import Alert
from plugwatch.settings import Settings
from plugwatch.tables.keeper import WindowKeeper
from plugwatch.tables.windows import WindowStore

NOW = int(time.time() * 1000)
WINDOW_MS = 900_000


class FakeClickHouse:
    def __init__(self, rows: dict[str, list[dict[str, Any]]] | None = None, error: Exception | None = None):
        self.rows = rows or {}
        self.error = error
        self.asked: list[tuple[str, int, int]] = []

    async def telemetry(self, signal, tenant_id, plugin_id, from_ms, to_ms, limit):
        self.asked.append((signal, from_ms, to_ms))
        if self.error is not None:
            raise self.error
        return [orjson.dumps(r).decode() for r in self.rows.get(signal, []) if from_ms <= r["ts"] <= to_ms]


class AuditTrail:
    def __init__(self):
        self.records: list[dict[str, Any]] = []

    async def record(self, action, actor, **fields):
        self.records.append({"action": action, "actor": actor, **fields})
        return self.records[-1]


def log(plugin: str, ts: int, event_id: str, **extra: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "plugin_id": plugin, "instance_id": "pg-0", "ts": ts, "event_id": event_id,
            "level": "ERROR", "message": "boom", **extra}


def make_keeper(held_since: int) -> WindowKeeper:
    store = WindowStore(window_ms=WINDOW_MS, clock=lambda: int(time.time() * 1000), started_ms=held_since)
    keeper = WindowKeeper(store, {"logs": "m.logs", "traces": "m.traces", "metrics": "m.metrics"},
                          partition_for=lambda key: 0, window_ms=WINDOW_MS)
    keeper.owned = {0}
    return keeper


@pytest.fixture
def keeper() -> WindowKeeper:
    return make_keeper(NOW - 600_000)  # holds everything of the look-back


def service(keeper: WindowKeeper, clickhouse: FakeClickHouse, audit: AuditTrail) -> ReportService:
    settings = Settings()
    masker = MaskingEngine.from_file(settings.masking_rules_path, hmac_key=b"k" * 32)
    return ReportService(settings, masker=masker, tail=keeper, clickhouse=clickhouse, topics=None, audit=audit)  # type: ignore[arg-type]


def alert(plugin: str, ts: int = NOW) -> Alert:
    return Alert(alert_id=f"A-{plugin}", ts=ts, tenant_id="acme", plugin_id=plugin, window_s=300)


async def build(svc: ReportService, a: Alert) -> dict[str, Any]:
    report, _ = await svc.build(a, report_id_for(a), (a.ts - 300_000, a.ts), NOW, 1, trigger="alert")
    return report


async def test_a_complete_window_needs_no_clickhouse(keeper):
    keeper.apply("logs", "acme/p", log("p", NOW - 1_000, "e1"), 100, 0)
    clickhouse = FakeClickHouse(error=ConnectionError("down"))
    report = await build(service(keeper, clickhouse, AuditTrail()), alert("p", NOW - 500))
    assert report["completeness"]["complete"] and not report["completeness"]["fallback_used"]
    assert report["counts"]["logs"] == 1 and clickhouse.asked == []
    assert report["links"]["export_url"] is None


async def test_what_the_window_never_held_comes_from_clickhouse_once():
    keeper = make_keeper(NOW - 60_000)  # the look-back starts 300 s before the alert
    keeper.apply("logs", "acme/p", log("p", NOW - 1_000, "e-held"), 100, 0)
    clickhouse = FakeClickHouse({"logs": [log("p", NOW - 200_000, "e-old"), log("p", NOW - 1_000, "e-held")]})
    report = await build(service(keeper, clickhouse, AuditTrail()), alert("p", NOW - 500))
    completeness = report["completeness"]
    assert completeness["fallback_used"] and completeness["complete"]
    assert report["counts"]["logs"] == 2  # the held record is not counted twice
    assert any("from ClickHouse" in note for note in completeness["notes"])
    assert [row[0] for row in clickhouse.asked] == ["logs", "traces", "metrics"]


async def test_a_failed_collection_still_gives_a_report_marked_incomplete_with_a_signed_link(keeper):
    keeper.owned = set()  # the plugin's partition went to another worker
    audit = AuditTrail()
    svc = service(keeper, FakeClickHouse(error=ConnectionError("refused by http://u:Sup3rS3cret@ch:8123")), audit)
    a = alert("p")
    report = await build(svc, a)
    completeness = report["completeness"]
    assert completeness["complete"] is False and completeness["coverage"] == 0
    assert any("ClickHouse failed" in note for note in completeness["notes"])
    assert "Sup3rS3cret" not in orjson.dumps(report).decode()
    links = report["links"]
    assert links["expires_at"] > NOW
    url = urlparse(links["export_url"])
    export_id = url.path.rsplit("/", 1)[1]
    query = parse_qs(url.query)
    spec = svc.signer.verify(export_id, query["expires"][0], query["sig"][0])
    assert (spec.tenant_id, spec.plugin_id) == ("acme", "p")
    assert spec.from_ms <= a.ts - 300_000 and spec.to_ms >= a.ts
    assert [r["action"] for r in audit.records] == ["export.create"]
