"""Decoding inbound telemetry messages: detection of the three forms and every refusal reason."""

import random

import orjson
import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from plugwatch.streams.codecs import MAX_BYTES, DecodeError, decode_message
from plugwatch.streams.otlp import (
    build_logs_request,
    build_metrics_request,
    build_traces_request,
    encode_otlp_json,
)

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
RESOURCE = {"tenant_id": "t1", "plugin_id": "p1", "instance_id": "i-1", "host": "h1"}

LOGS = [
    {
        **RESOURCE,
        "ts": 1_764_000_000_123,
        "level": "ERROR",
        "logger": "plugin.main",
        "message": "payment failed",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "attributes": {
            "code.lineno": 42,
            "retry": False,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "ctx": {"k": "v"},
        },
    },
    {
        **RESOURCE,
        "plugin_id": "p2",
        "ts": 1_764_000_000_124,
        "level": "INFO",
        "message": "ok",
        "attributes": {},
    },
]
SPANS = [
    {
        **RESOURCE,
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "parent_span_id": None,
        "name": "GET /pay",
        "kind": "SERVER",
        "start_ts": 1_764_000_000_000,
        "end_ts": 1_764_000_000_250,
        "status": "ERROR",
        "attributes": {"http.response.status_code": 500, "otel.status_description": "upstream timeout"},
        "events": [{"ts": 1_764_000_000_100, "name": "retry", "attributes": {"attempt": 2}}],
    }
]
POINTS = [
    {
        **RESOURCE,
        "ts": 1_764_000_000_000,
        "name": "plugin.requests",
        "value": 7,
        "unit": "1",
        "attributes": {"route": "/pay", "otel.metric.type": "gauge"},
    },
    {
        **RESOURCE,
        "ts": 1_764_000_000_000,
        "name": "plugin.latency",
        "value": 1.5,
        "unit": "s",
        "attributes": {"otel.metric.type": "gauge"},
    },
]
BUILDERS = {
    "logs": (build_logs_request, LOGS),
    "traces": (build_traces_request, SPANS),
    "metrics": (build_metrics_request, POINTS),
}


def _logs_proto(records=LOGS) -> bytes:
    return build_logs_request(records).SerializeToString()


# --- the three forms -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["logs", "traces", "metrics"])
@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_each_signal_decodes_from_each_otlp_encoding(signal, encoding):
    build, records = BUILDERS[signal]
    request = build(records)
    raw = request.SerializeToString() if encoding == "otlp_proto" else encode_otlp_json(request)
    decoded, found = decode_message(raw, signal)
    assert found == encoding
    assert decoded == records


def test_envelope_record_is_returned_as_is():
    record = {
        "tenant_id": "t1",
        "plugin_id": "p1",
        "ts": "2025-11-24T16:00:00Z",
        "message": "hi",
        "x": {"y": [1]},
    }
    assert decode_message(orjson.dumps(record), "logs") == ([record], "json")


def test_envelope_array_is_flattened():
    records = [{"tenant_id": "t1", "plugin_id": "p1", "ts": i} for i in range(3)]
    assert decode_message(orjson.dumps(records), "metrics") == (records, "json")


def test_empty_envelope_array_is_no_records():
    assert decode_message(b"[]", "logs") == ([], "json")


def test_missing_tenant_in_envelope_stays_missing():
    (record,), _ = decode_message(b'{"plugin_id": "p1", "ts": 1}', "logs")
    assert "tenant_id" not in record


@pytest.mark.parametrize("prefix", [b" ", b"\n\t ", b"\r\n", b"\xef\xbb\xbf"])
def test_leading_whitespace_or_bom_before_json(prefix):
    assert decode_message(prefix + b'{"tenant_id": "t1"}', "logs") == ([{"tenant_id": "t1"}], "json")


def test_otlp_json_wins_over_envelope_for_an_object_with_the_signal_key():
    raw = encode_otlp_json(build_logs_request(LOGS[:1]))
    records, encoding = decode_message(raw, "logs")
    assert encoding == "otlp_json" and records[0]["tenant_id"] == "t1"


# --- protobuf that starts like JSON ----------------------------------------------------------------


def _proto_starting_with(byte: int) -> bytes:
    """A logs request whose first resource is ``byte`` bytes long, so the message starts b"\\n" + byte."""
    for pad in range(200):
        request = build_logs_request([{"ts": 1_764_000_000_000, "message": "x" * pad}])
        if request.resource_logs[0].ByteSize() == byte:
            raw = request.SerializeToString()
            assert raw[:2] == bytes([0x0A, byte])
            return raw
    raise AssertionError(f"no padding gives a resource of {byte} bytes")


@pytest.mark.parametrize("byte", [ord("{"), ord("["), ord(" ")])
def test_protobuf_whose_bytes_look_like_json_still_decodes(byte):
    records, encoding = decode_message(_proto_starting_with(byte), "logs")
    assert encoding == "otlp_proto"
    assert records[0]["message"].startswith("x")


# --- refusals ------------------------------------------------------------------------------------


def _reason(raw: bytes, signal="logs", **kwargs) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_message(raw, signal, **kwargs)
    assert str(caught.value)  # a human message, not only the code
    return caught.value.reason


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\r\t"])
def test_empty(raw):
    assert _reason(raw) == "empty"


def test_too_large_by_default_limit():
    raw = b'{"tenant_id": "' + b"a" * MAX_BYTES + b'"}'
    assert MAX_BYTES == 1_048_576
    assert _reason(raw) == "too_large"


def test_too_large_by_keyword_limit():
    raw = _logs_proto()
    assert _reason(raw, max_bytes=len(raw) - 1) == "too_large"
    assert decode_message(raw, "logs", max_bytes=len(raw))[1] == "otlp_proto"


def test_invalid_utf8():
    assert _reason(b'{"message": "caf\xe9"}') == "invalid_utf8"


@pytest.mark.parametrize("raw", [b'{"a": ', b"[1,]", b'{"a": 1} trailing', b"{'a': 1}"])
def test_invalid_json(raw):
    assert _reason(raw) == "invalid_json"


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


def test_depth_64_is_accepted_and_65_refused():
    assert len(decode_message(_nested(64), "logs")[0]) == 1
    assert len(decode_message(b"[" + _nested(63) + b"]", "logs")[0]) == 1
    assert _reason(_nested(65)) == "too_deep"
    assert _reason(b"[" + _nested(64) + b"]") == "too_deep"


def test_depth_far_beyond_the_parser_limit_is_too_deep():
    assert _reason(b"[" * 5000 + b"]" * 5000) == "too_deep"


@pytest.mark.parametrize(
    "inner",
    [
        b'"[[[{{{"',  # brackets inside a string do not nest
        b'"\\"[[["',  # nor after an escaped quote
        b'"\\\\", "x": "]]]"',  # an escaped backslash ends before the closing quote
        b'"\\u005c", "y": "[["',  # a unicode-escaped backslash escapes nothing
    ],
)
def test_brackets_in_strings_do_not_count_as_nesting(inner):
    body = b'{"s":' * 63 + b'{"v": ' + inner + b"}" + b"}" * 63
    assert decode_message(body, "logs")[1] == "json"


def test_a_string_cannot_hide_a_real_level():
    # "][" inside a string would pair with real brackets if strings were not cut out first.
    body = b"[" * 65 + b'"]["' + b"]" * 65
    assert _reason(body) == "too_deep"


def test_otlp_json_values_nested_too_deep_are_refused():
    value = {"stringValue": "x"}
    for _ in range(30):
        value = {"arrayValue": {"values": [value]}}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1", "body": value}]}]}]}
    assert _reason(orjson.dumps(doc)) == "too_deep"


def test_protobuf_values_nested_beyond_the_parser_limit_are_too_deep():
    request = build_logs_request(LOGS[1:])
    value = request.resource_logs[0].scope_logs[0].log_records[0].body
    for _ in range(60):
        value = value.array_value.values.add()
    value.string_value = "x"
    assert _reason(request.SerializeToString()) == "too_deep"


@pytest.mark.parametrize("raw", [b"[1, 2]", b'[{"a": 1}, "b"]', b"[[]]", b"[null]"])
def test_array_items_must_be_records(raw):
    assert _reason(raw) == "not_a_record"


@pytest.mark.parametrize(
    ("signal", "other"), [("logs", "traces"), ("traces", "metrics"), ("metrics", "logs")]
)
def test_otlp_of_another_signal_is_wrong_signal(signal, other):
    build, records = BUILDERS[other]
    request = build(records)
    assert _reason(encode_otlp_json(request), signal) == "wrong_signal"
    assert _reason(request.SerializeToString(), signal) == "wrong_signal"


@pytest.mark.parametrize(
    "doc",
    [
        {"resourceLogs": "not a list"},
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "yesterday"}]}]}]},
        {
            "resourceLogs": [
                {"scopeLogs": [{"logRecords": [{"attributes": [{"value": {"stringValue": "no key"}}]}]}]}
            ]
        },
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "SEVERITY_NUMBER_LOUD"}]}]}]},
    ],
)
def test_malformed_otlp_json_is_invalid_otlp(doc):
    assert _reason(orjson.dumps(doc)) == "invalid_otlp"


def test_otlp_json_without_records_is_no_records():
    assert decode_message(b'{"resourceLogs": []}', "logs") == ([], "otlp_json")


@pytest.mark.parametrize(
    "line",
    [
        b"2025-11-24T16:00:00Z ERROR payment failed for order 42",
        b"ERROR [main] java.lang.NullPointerException\n\tat com.example.Pay.run(Pay.java:42)",
        b"\nERROR something broke",
        b'"just a JSON string"',
        b"42",
        b"null",
        b"\x0a\x00",  # a logs request with one empty resource: parses, but no records
        b"\x0a\x02\x12\x00",  # one resource, one empty scope
    ],
)
def test_text_scalars_and_empty_requests_are_not_otlp(line):
    assert _reason(line) == "not_json_or_otlp"


@pytest.mark.parametrize("signal", ["logs", "traces", "metrics"])
def test_random_bytes_are_never_accepted(signal):
    rng = random.Random(20261124)
    for i in range(1500):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        if i % 3 == 0:
            raw = b"\x0a" + raw  # the first byte every export request starts with
        with pytest.raises(DecodeError) as caught:
            decode_message(raw, signal)
        assert caught.value.reason in {
            "not_json_or_otlp",
            "invalid_json",
            "invalid_utf8",
            "too_deep",
            "wrong_signal",
        }


def test_garbage_inside_a_valid_request_frame_is_refused():
    # Right framing, but the record bytes are text: the records lack every field a log has.
    record = b"hello, this is not a log record at all"
    scope = b"\x12" + bytes([len(record)]) + record
    resource = b"\x12" + bytes([len(scope)]) + scope
    raw = b"\x0a" + bytes([len(resource)]) + resource
    assert _reason(raw) == "not_json_or_otlp"


def test_unknown_field_in_the_request_container_is_refused():
    raw = _logs_proto() + b"\x98\x06\x01"  # field 99, varint 1
    assert _reason(raw) == "not_json_or_otlp"


def test_unknown_fields_inside_records_are_tolerated():
    # A newer OTLP version may add record fields; they must not dead-letter the whole batch.
    base = build_logs_request(LOGS[:1])
    log = base.resource_logs[0].scope_logs[0].log_records[0]
    newer = LogRecord.FromString(log.SerializeToString() + b"\x98\x06\x01")
    log.CopyFrom(newer)
    raw = base.SerializeToString()
    assert len(raw) == len(_logs_proto(LOGS[:1])) + 3
    records, encoding = decode_message(raw, "logs")
    assert encoding == "otlp_proto" and records == LOGS[:1]


def test_signal_must_be_known():
    with pytest.raises(ValueError, match="signal must be one of"):
        decode_message(b"{}", "events")  # type: ignore[arg-type]


def test_decode_error_carries_reason_and_message():
    error = DecodeError("empty", "message is empty")
    assert error.reason == "empty" and str(error) == "message is empty"
    assert isinstance(error, ValueError)
