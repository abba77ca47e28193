"""Validation of decoded telemetry records (DESIGN §3)."""

import pytest

from plugwatch.streams.records import RecordError, to_epoch_ms, validate

BASE = {"tenant_id": "t1", "plugin_id": "p1"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_764_000_000_123, 1_764_000_000_123),
        (1_764_000_000_123.9, 1_764_000_000_123),
        ("1764000000123", 1_764_000_000_123),
        ("2025-11-24T16:00:00.123Z", 1_764_000_000_123),
        ("2025-11-25T00:00:00.123+08:00", 1_764_000_000_123),
        ("2025-11-24T16:00:00.123", 1_764_000_000_123),  # no zone: UTC
    ],
)
def test_timestamps_become_epoch_ms(value, expected):
    assert to_epoch_ms(value) == expected


@pytest.mark.parametrize("value", [True, None, [], {}, "yesterday", "", 1_764_000_000, 1_764_000_000_123_000_000])
def test_bad_timestamps_are_refused_with_a_reason(value):
    with pytest.raises(ValueError):
        to_epoch_ms(value)


def test_log_keeps_unknown_fields_and_normalises_ts():
    record = validate("logs", {**BASE, "ts": "2025-11-24T16:00:00.123Z", "custom": {"a": 1}, "level": "ERROR"})
    assert record == {**BASE, "ts": 1_764_000_000_123, "custom": {"a": 1}, "level": "ERROR"}


def test_timestamp_aliases_are_accepted():
    assert validate("logs", {**BASE, "timestamp": 1_764_000_000_123})["ts"] == 1_764_000_000_123


def test_span_end_defaults_to_start():
    record = validate("traces", {**BASE, "start_ts": 1_764_000_000_000, "trace_id": "ab", "span_id": "cd"})
    assert record["end_ts"] == record["start_ts"] == 1_764_000_000_000


def test_metric_value_must_be_numeric():
    with pytest.raises(RecordError) as err:
        validate("metrics", {**BASE, "ts": 1_764_000_000_000, "name": "cpu", "value": "high"})
    assert err.value.reason == "wrong_type"
    assert "value" in str(err.value)


@pytest.mark.parametrize("missing", ["tenant_id", "plugin_id", "ts"])
def test_required_fields(missing):
    data = {**BASE, "ts": 1_764_000_000_000}
    del data[missing]
    with pytest.raises(RecordError) as err:
        validate("logs", data)
    assert err.value.reason == "missing_field"
    assert missing in str(err.value)


def test_wrong_types_are_named_without_quoting_values():
    with pytest.raises(RecordError) as err:
        validate("logs", {**BASE, "ts": 1_764_000_000_000, "message": {"password": "hunter2"}, "tenant_id": 7})
    assert err.value.reason == "wrong_type"
    assert "hunter2" not in str(err.value)
    assert "tenant_id" in str(err.value) and "message" in str(err.value)


def test_empty_ids_are_refused():
    with pytest.raises(RecordError):
        validate("logs", {"tenant_id": "", "plugin_id": "p", "ts": 1_764_000_000_000})


def test_non_object_is_refused():
    with pytest.raises(RecordError) as err:
        validate("logs", ["not", "a", "record"])
    assert err.value.reason == "wrong_type"
