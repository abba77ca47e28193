"""Evidence: deterministic bundles, the content-addressed store, retention, numbers, retried writes."""

from __future__ import annotations

import gzip
import hashlib
import os
from datetime import date

import orjson
import pytest

from plugwatch.evidence import (
    SCHEMA,
    BundleError,
    DirectoryStore,
    EvidenceCorrupt,
    EvidenceNotFound,
    EvidenceNumbers,
    Retention,
    RetentionError,
    StoredObject,
    build_bundle,
    evidence_record,
    evidence_row,
    evidence_sql,
    format_evidence_id,
    parse_evidence_id,
    put_with_retry,
    read_bundle,
)
from plugwatch.evidence.store import DAY_MS

NOW = 1_795_000_000_000
HEADER = {"evidence_id": "EVD-20261124-000042", "tenant_id": "acme", "plugin_id": "pay",
          "suspension_id": "SUS-1", "created_at": NOW, "severity": "critical", "reason": "risk signal"}


def keep(value):
    return value


def sections():
    return {
        "logs": [{"ts": NOW - 2, "msg": "timeout", "level": "error"}, {"ts": NOW - 1, "msg": "retry"}],
        "config": [{"flags": {"b": True, "a": False}, "version": "1.4.2"}],
        "metrics": [],
        "odd": ["a plain line", {"section": "its own"}, {"item": 1}],
    }


def bundle(**changes):
    return build_bundle({**HEADER, **changes}, sections(), mask=keep)


# Bundles -----------------------------------------------------------------------------------------


def test_same_snapshot_same_bytes():
    reordered = {k: [dict(reversed(list(i.items()))) if isinstance(i, dict) else i for i in v]
                 for k, v in reversed(list(sections().items()))}
    assert bundle() == bundle() == build_bundle(HEADER, reordered, mask=keep)
    assert hashlib.sha256(bundle()).hexdigest() == hashlib.sha256(bundle()).hexdigest()
    assert bundle() != bundle(evidence_id="EVD-20261124-000043")


def test_round_trip():
    header, read = read_bundle(bundle())
    assert read == sections()
    assert header["schema"] == SCHEMA
    assert header["counts"] == {"config": 1, "logs": 2, "metrics": 0, "odd": 3}
    assert {k: header[k] for k in HEADER} == HEADER
    lines = gzip.decompress(bundle()).splitlines()
    assert orjson.loads(lines[1]) == {"section": "config", "flags": {"a": False, "b": True}, "version": "1.4.2"}


def test_mask_runs_over_every_item_and_the_reason():
    seen = []

    def mask(value):
        seen.append(value)
        return "[MASKED]" if value == "risk signal" else {**value, "masked": True} if isinstance(value, dict) else value

    header, read = read_bundle(build_bundle(HEADER, {"logs": [{"msg": "a@b.com"}]}, mask=mask))
    assert read == {"logs": [{"msg": "a@b.com", "masked": True}]}
    assert header["reason"] == "[MASKED]"
    assert len(seen) == 2


def test_bad_headers_and_bundles():
    with pytest.raises(BundleError, match="lacks suspension_id"):
        build_bundle({**HEADER, "suspension_id": ""}, {}, mask=keep)
    with pytest.raises(BundleError, match="unknown fields"):
        build_bundle({**HEADER, "secret": 1}, {}, mask=keep)
    with pytest.raises(BundleError, match="epoch milliseconds"):
        build_bundle({**HEADER, "created_at": "today"}, {}, mask=keep)
    with pytest.raises(BundleError, match="not gzip"):
        read_bundle(b"plain")
    cut = b"\n".join(gzip.decompress(bundle()).splitlines()[:-1])
    with pytest.raises(BundleError, match="incomplete"):
        read_bundle(gzip.compress(cut))


# The store ---------------------------------------------------------------------------------------


async def test_put_get_is_content_addressed(tmp_path):
    store = DirectoryStore(tmp_path)
    data = bundle()
    sha = hashlib.sha256(data).hexdigest()
    stored = await store.put(data)
    assert stored == StoredObject(sha, len(data), stored.uri)
    path = tmp_path / "sha256" / sha[:2] / sha[2:4] / f"{sha}.jsonl.gz"
    assert path.read_bytes() == data and stored.uri == path.resolve().as_uri()
    assert await store.get(sha) == data
    assert await store.put(data) == stored  # idempotent
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    assert await store.delete(sha) and not await store.delete(sha)
    with pytest.raises(EvidenceNotFound):
        await store.get(sha)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await store.get("../etc/passwd")


async def test_corruption_is_detected_and_repaired_by_a_new_put(tmp_path):
    store = DirectoryStore(tmp_path)
    data = bundle()
    stored = await store.put(data)
    path = store.path_of(stored.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    with pytest.raises(EvidenceCorrupt, match="altered"):
        await store.get(stored.sha256)
    await store.put(data)
    assert await store.get(stored.sha256) == data


async def test_expire_deletes_only_bundles_past_retention(tmp_path):
    store = DirectoryStore(tmp_path)
    retention = Retention()
    old_low = await store.put(bundle(severity="low", created_at=NOW - 181 * DAY_MS))
    old_critical = await store.put(bundle(severity="critical", created_at=NOW - 181 * DAY_MS))
    fresh = await store.put(bundle(severity="low", created_at=NOW - DAY_MS))
    assert await store.expire(NOW, retention) == [old_low.sha256]
    assert await store.expire(NOW + 220 * DAY_MS, retention) == sorted([old_critical.sha256, fresh.sha256])
    assert await store.expire(NOW, retention) == []
    assert await DirectoryStore(tmp_path / "none").expire(NOW, retention) == []


# Retention ---------------------------------------------------------------------------------------


def test_retention_from_the_shipped_file():
    retention = Retention.from_file("config/plugins/evidence_retention.yaml")
    assert retention.days_for("acme", "critical") == 400
    assert retention.days_for("acme", "HIGH") == 365
    assert retention.days_for("acme", "low") == 180
    assert retention.days_for(None, None) == 180


def test_retention_defaults_and_tenant_overrides(tmp_path):
    assert Retention.from_file(tmp_path / "missing.yaml").days_for("t", "critical") == 400
    path = tmp_path / "retention.yaml"
    path.write_text("default_days: 200\nseverity: {high: 370}\n"
                    "tenants:\n  acme: {default_days: 730, severity: {critical: 1095}}\n  beta: {severity: {low: 190}}\n")
    retention = Retention.from_file(path)
    assert retention.days_for("acme", "critical") == 1095
    assert retention.days_for("acme", "high") == 730
    assert retention.days_for("beta", "low") == 190
    assert retention.days_for("beta", "high") == 370
    assert retention.days_for("beta", "critical") == 400
    assert retention.days_for("other", "medium") == 200
    assert retention.expires_at("acme", "high", NOW) == NOW + 730 * DAY_MS


@pytest.mark.parametrize("text, message", [
    ("default_days: 90\n", "default_days is 90 days, below the 180-day minimum"),
    ("severity: {critical: 30}\n", "severity.critical is 30 days"),
    ("tenants: {acme: {default_days: ten}}\n", "tenants.acme.default_days must be a whole number"),
    ("tenants: {acme: {days: 200}}\n", "unknown field tenants.acme.days"),
    ("retention: 1\n", "unknown field retention"),
    ("[1, 2]\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_retention_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "retention.yaml"
    path.write_text(text)
    with pytest.raises(RetentionError, match=message.replace("[", r"\[").replace(".", r"\.")):
        Retention.from_file(path)


# Numbers and records -----------------------------------------------------------------------------


def test_evidence_ids():
    assert format_evidence_id(date(2026, 11, 24), 42) == "EVD-20261124-000042"
    assert format_evidence_id(date(2026, 11, 24), 1_234_567) == "EVD-20261124-1234567"
    assert parse_evidence_id("EVD-20261124-000042") == (date(2026, 11, 24), 42)
    assert parse_evidence_id("EVD-20261124-1234567") == (date(2026, 11, 24), 1_234_567)
    for bad in ("EVD-20261124-42", "EVD-20261324-000042", "EVD-20261124-0000042", "evd-20261124-000042", None):
        with pytest.raises(ValueError):
            parse_evidence_id(bad)
    with pytest.raises(ValueError):
        format_evidence_id(date(2026, 11, 24), -1)


async def test_evidence_numbers_from_sync_and_async_claims():
    counter = iter(range(41, 100))
    numbers = EvidenceNumbers(lambda: next(counter), clock=lambda: NOW / 1000)
    assert [await numbers.next_id(), await numbers.next_id()] == ["EVD-20261118-000041", "EVD-20261118-000042"]

    async def claim():
        return 7

    assert await EvidenceNumbers(claim, clock=lambda: NOW / 1000).next_id() == "EVD-20261118-000007"


def test_evidence_record_and_row():
    stored = StoredObject("ab" * 32, 123, "file:///var/evidence/x")
    record = evidence_record(
        evidence_id="EVD-20261124-000042", stored=stored, tenant_id="acme", plugin_id="pay", suspension_id="SUS-1",
        reason="risk signal", created_at=NOW, expires_at=NOW + 400 * DAY_MS, counts={"logs": 2},
        created_by="worker-1", severity="critical",
    )
    assert record["sha256"] == stored.sha256 and record["size"] == 123 and record["expires_at"] > NOW
    row = evidence_row(record)
    assert row["created_at"] == NOW / 1000 and orjson.loads(row["counts"]) == {"logs": 2}
    assert orjson.loads(row["record"]) == record
    sql = evidence_sql("plugwatch")
    assert "plugwatch.evidence" in sql and "ReplacingMergeTree" in sql
    assert "ORDER BY (tenant_id, plugin_id, evidence_id)" in sql and "TTL toDateTime(expires_at)" in sql
    with pytest.raises(ValueError):
        evidence_record(evidence_id="bad", stored=stored, tenant_id="a", plugin_id="p", suspension_id="s",
                        reason="", created_at=NOW, expires_at=NOW, counts={}, created_by="w")


# Retried writes ----------------------------------------------------------------------------------


class FlakyStore:
    def __init__(self, failures: int | None):
        self.failures = failures  # None: always fails
        self.calls = 0

    async def put(self, data):
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise OSError("disk full")
        return StoredObject(hashlib.sha256(data).hexdigest(), len(data), "mem://")


async def test_put_with_retry_recovers():
    store, delays, alerts = FlakyStore(2), [], []

    async def sleep(delay):
        delays.append(delay)

    async def on_failure(exc):
        alerts.append(exc)

    stored = await put_with_retry(store, b"x", attempts=5, first_delay_s=0.5, on_failure=on_failure, sleep=sleep)
    assert stored is not None and stored.size == 1
    assert store.calls == 3 and delays == [0.5, 1.0] and alerts == []


async def test_put_with_retry_gives_up_without_raising():
    store, delays, alerts = FlakyStore(None), [], []

    async def sleep(delay):
        delays.append(delay)

    async def on_failure(exc):
        alerts.append(exc)
        raise RuntimeError("the alert failed too")

    assert await put_with_retry(store, b"x", attempts=3, first_delay_s=1, on_failure=on_failure, sleep=sleep) is None
    assert store.calls == 3 and delays == [1, 2]
    assert len(alerts) == 1 and isinstance(alerts[0], OSError)
    assert await put_with_retry(FlakyStore(None), b"x", attempts=1, sleep=sleep) is None
