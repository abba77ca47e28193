"""Validation of decoded telemetry records (DESIGN §3)."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from plugwatch.bench.corpus import LogCorpus
from plugwatch.streams import records
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


# The fast path (plain Python, for the usual shapes) against the pydantic models it stands in for.

_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
              st.sampled_from(["", "a" * 256, "a" * 257, "1764000000123", "2025-11-24T16:00:00Z"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=3)),
    max_leaves=6,
)
_TIMES = st.one_of(st.just(1_764_000_000_000), st.just(1_764_000_000_000), st.integers(records._MIN_MS - 2, records._MIN_MS + 2),
                   st.integers(records._MAX_MS - 2, records._MAX_MS + 2), st.just(1_764_000_000_000.5))


def _mostly(right):
    """``right`` nine times in ten, anything else (a wrong type, a null) the tenth."""
    return st.one_of(st.sampled_from([False] * 9 + [True]), st.just(False)).flatmap(lambda odd: _ANY if odd else right)


def _record(kinds, required=()):
    """Records of a model's ``required`` fields and some of its others (``kinds``: name -> strategy),
    plus unknown ones."""
    return st.fixed_dictionaries(
        {n: _mostly(kinds[n]) for n in required},
        optional={**{n: _mostly(v) for n, v in kinds.items() if n not in required}, "extra": _ANY, "x": _ANY},
    )


_TEXTS = st.one_of(st.none(), st.text(max_size=4))
_MAPS = st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _ANY, max_size=3))
_NESTED = {
    "exception": _record({"type": _TEXTS, "message": _TEXTS, "stacktrace": _TEXTS}),
    "request": _record({"method": _TEXTS, "url": _TEXTS, "headers": _MAPS, "query": _MAPS, "body": _ANY}),
}
_SHAPES = {
    signal: _record({
        name: {records._ID: st.sampled_from(["t", "t", "t", "", "a" * 256, "a" * 257]), records._EPOCH: _TIMES, records._MAP: _MAPS,
               records._CODE: st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2)),
               records._FLOAT: st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False)),
               records._MODEL: _NESTED.get(name, _ANY)}.get(kind, _TEXTS)
        for name, kind, _, _ in records._FAST[signal]
    }, required=[name for name, _, required, _ in records._FAST[signal] if required])
    for signal in records.SCHEMAS
}


def _by_model(signal, data):
    try:
        return records.SCHEMAS[signal].model_validate(data).model_dump(exclude_none=True)
    except ValidationError:
        return None


@settings(max_examples=1500, deadline=None)
@given(data=st.data(), signal=st.sampled_from(sorted(records.SCHEMAS)))
def test_fast_path_returns_what_the_models_return(data, signal):
    record = data.draw(_SHAPES[signal])
    fast = records._fast(records._FAST[signal], record)
    if fast is not None:  # accepted: exactly the model's output, key order and number types included
        # (refused: the model decides, e.g. on a timestamp sent as a string)
        model = _by_model(signal, record)
        assert model is not None
        assert orjson.dumps(fast) == orjson.dumps(model)


def test_fast_path_takes_the_usual_records():
    corpus = LogCorpus(plugins=20, tenants=2)
    for _ in range(200):
        _, event = corpus.event()
        assert records._fast(records._FAST["logs"], event) is not None
    span = {"tenant_id": "t", "plugin_id": "p", "start_ts": 1_764_000_000_000, "end_ts": 1_764_000_000_100,
            "trace_id": "ab" * 16, "span_id": "cd" * 8, "status": 2, "attributes": {"http.method": "GET"}}
    metric = {"tenant_id": "t", "plugin_id": "p", "ts": 1_764_000_000_000, "name": "cpu", "value": 3, "unit": "%"}
    assert records._fast(records._FAST["traces"], span) == _by_model("traces", span)
    assert records._fast(records._FAST["metrics"], metric) == _by_model("metrics", metric)
