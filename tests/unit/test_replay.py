"""Replay-file lines for `plugwatch produce`."""

import io

import pytest

from plugwatch.replay import parse_line, read_replay


def test_object_value_is_sent_as_json():
    message = parse_line(b'{"topic": "telemetry.logs", "key": "t1/p1", "value": {"a": 1}}')
    assert (message.topic, message.key, message.value) == ("telemetry.logs", b"t1/p1", b'{"a":1}')


def test_string_value_is_sent_as_text_and_headers_kept():
    message = parse_line(b'{"topic": "x", "value": "plain line", "headers": {"h": "v"}}')
    assert message.value == b"plain line" and message.key is None and message.headers == [("h", b"v")]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "each line must be an object"),
        (b'{"value": 1}', 'missing "topic"'),
        (b'{"topic": "x"}', 'missing "value"'),
        (b'{"topic": "x", "value": 5}', '"value" must be'),
        (b'{"topic": "x", "key": 5, "value": {}}', '"key" must be'),
    ],
)
def test_bad_lines_say_what_is_wrong(line, error):
    with pytest.raises(ValueError, match=error):
        parse_line(line)


def test_reader_numbers_lines_and_skips_blank_ones():
    stream = io.BytesIO(b'{"topic": "a", "value": {}}\n\nbroken\n')
    entries = list(read_replay(stream))
    assert [n for n, _ in entries] == [1, 3]
    assert isinstance(entries[1][1], ValueError)


def test_shift_to_now_moves_every_time_by_one_delta():
    from plugwatch.replay import shift_to_now

    entries = [
        {"topic": "l", "value": {"ts": "2026-01-01T00:00:00Z", "nested": {"ts": 1767225600500}}},
        {"topic": "t", "value": {"start_ts": 1767225599000, "end_ts": 1767225601000}},
        {"topic": "o", "value": {"resourceLogs": [{"timeUnixNano": "1767225600000000000"}]}},
    ]
    shifted = shift_to_now(entries, now_ms=1767225601000 + 10_000)
    assert shifted[0]["value"]["ts"] == 1767225610000
    assert shifted[0]["value"]["nested"]["ts"] == 1767225610500
    assert (shifted[1]["value"]["start_ts"], shifted[1]["value"]["end_ts"]) == (1767225609000, 1767225611000)
    assert shifted[2]["value"]["resourceLogs"][0]["timeUnixNano"] == "1767225610000000000"


def test_reader_shifts_only_good_lines():
    stream = io.BytesIO(b'{"topic": "a", "value": {"ts": 1767225600000}}\nbroken\n')
    entries = read_replay(stream, now_ms=1767225700000)
    assert entries[0][1].value == b'{"ts":1767225700000}'
    assert isinstance(entries[1][1], ValueError)
