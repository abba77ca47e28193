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
