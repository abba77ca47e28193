"""The pure ingest step: raw bytes -> masked records or dead letters, with a fixed clock."""

import orjson
import pytest

from plugwatch.ingest import BatchOutcome, IngestPipeline, Source
from plugwatch.masking import MaskingEngine
from plugwatch.streams.otlp import build_logs_request

NOW_S = 1_764_000_000.0
TS = 1_764_000_000_000


@pytest.fixture(scope="module")
def pipeline():
    return IngestPipeline(MaskingEngine.from_file(hmac_key=b"test"), excerpt_chars=200, clock=lambda: NOW_S)


def run(pipeline, signal, *values):
    out = BatchOutcome()
    for offset, value in enumerate(values):
        pipeline.process(signal, value, Source("telemetry.logs", 2, offset, TS + 5), out)
    return out


def test_valid_log_is_masked_keyed_and_given_a_stable_event_id(pipeline):
    record = {"ts": TS, "tenant_id": "acme", "plugin_id": "billing", "message": "mail li.wei@example.com",
              "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "custom": {"token": "abc123secret"}}
    out = run(pipeline, "logs", orjson.dumps(record))
    [masked] = out.records
    assert masked.key == "acme/billing"
    assert masked.record["event_id"] == "telemetry.logs:2:0:0"
    assert masked.record["broker_ts"] == TS + 5
    assert masked.record["trace_id"] == record["trace_id"]
    assert "li.wei@example.com" not in masked.value.decode() and "abc123secret" not in masked.value.decode()
    assert orjson.loads(masked.value) == masked.record
    assert out.encodings == {"json": 1} and not out.deadletters and out.messages == 1
    assert sum(out.mask_stats.counts.values()) >= 2


def test_otlp_batch_gives_one_record_per_log_with_index_in_event_id(pipeline):
    logs = [{"ts": TS + i, "tenant_id": "acme", "plugin_id": "render", "message": f"m{i}"} for i in range(3)]
    out = run(pipeline, "logs", build_logs_request(logs).SerializeToString())
    assert [r.record["event_id"] for r in out.records] == [f"telemetry.logs:2:0:{i}" for i in range(3)]
    assert out.encodings == {"otlp_proto": 3}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\x01garbage", "not_json_or_otlp"),
        (b'{"tenant_id": "a", "ts": 1764000000000}', "missing_field"),
        (b'{"tenant_id": "a", "plugin_id": "p", "ts": "soon"}', "wrong_type"),
        (b'{"tenant_id": "a", "plugin_id": "p", "ts": 1764000000000, "message": "\xff"}', "invalid_utf8"),
        (None, "empty"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_reason_and_position(pipeline, value, reason):
    out = run(pipeline, "logs", value)
    assert not out.records
    [letter] = out.deadletters
    body = orjson.loads(letter.value)
    assert letter.reason == body["reason"] == reason
    assert body["source"] == {"topic": "telemetry.logs", "partition": 2, "offset": 0}
    assert body["ts"] == int(NOW_S * 1000) and body["detail"]


def test_dead_letter_excerpt_and_detail_are_masked(pipeline):
    value = b'{"plugin_id": "p", "ts": 1764000000000, "message": "card 6228 4804 1234 5678 905 of li.wei@example.com"}'
    [letter] = run(pipeline, "logs", value).deadletters
    text = letter.value.decode()
    assert "6228 4804 1234 5678 905" not in text and "li.wei@example.com" not in text
    assert "tenant_id" in orjson.loads(text)["detail"]


def test_oversized_message_is_refused_before_parsing(pipeline):
    big = orjson.dumps({"tenant_id": "a", "plugin_id": "p", "ts": TS, "message": "x" * 1_100_000})
    [letter] = run(pipeline, "logs", big).deadletters
    assert letter.reason == "too_large" and orjson.loads(letter.value)["size"] == len(big)
    assert len(orjson.loads(letter.value)["excerpt"]) <= 200


def test_one_bad_record_in_an_array_does_not_drop_the_others(pipeline):
    batch = orjson.dumps([{"tenant_id": "a", "plugin_id": "p", "ts": TS}, {"tenant_id": "a", "ts": TS}])
    out = run(pipeline, "logs", batch)
    assert len(out.records) == 1 and [d.reason for d in out.deadletters] == ["missing_field"]
    assert orjson.loads(out.deadletters[0].value)["record_index"] == 1
