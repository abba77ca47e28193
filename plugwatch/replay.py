"""Replay files: JSON lines of ``{"topic", "key", "value"[, "headers"]}`` published to the broker."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from plugwatch.settings import Settings
from plugwatch.sinks.topics import TopicSink
from plugwatch.streams.topics import TopicSetupError, ensure_topics


class ReplayError(RuntimeError):
    pass


@dataclass(frozen=True)
class ReplayMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class ProduceReport:
    sent: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _to_bytes(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (dict, list)):
        return orjson.dumps(value)
    raise ValueError(f"{what} must be an object, array, string or null, got {type(value).__name__}")


_TIME_FIELDS = ("ts", "start_ts", "end_ts")
_OTLP_NANO_FIELDS = ("timeUnixNano", "observedTimeUnixNano", "startTimeUnixNano", "endTimeUnixNano")


def _times_ms(value: Any) -> Iterator[int]:
    """Every timestamp in a value, as epoch ms: envelope fields and OTLP nanosecond fields."""
    from plugwatch.streams.records import to_epoch_ms

    if isinstance(value, dict):
        for name, item in value.items():
            if name in _TIME_FIELDS:
                try:
                    yield to_epoch_ms(item)
                except ValueError:
                    pass
            elif name in _OTLP_NANO_FIELDS and str(item).isdigit() and int(item) > 0:
                yield int(item) // 1_000_000
            else:
                yield from _times_ms(item)
    elif isinstance(value, list):
        for item in value:
            yield from _times_ms(item)


def _shifted(value: Any, delta_ms: int) -> Any:
    from plugwatch.streams.records import to_epoch_ms

    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if name in _TIME_FIELDS:
                try:
                    out[name] = to_epoch_ms(item) + delta_ms
                except ValueError:
                    out[name] = item
            elif name in _OTLP_NANO_FIELDS and str(item).isdigit() and int(item) > 0:
                out[name] = str(int(item) + delta_ms * 1_000_000)
            else:
                out[name] = _shifted(item, delta_ms)
        return out
    if isinstance(value, list):
        return [_shifted(item, delta_ms) for item in value]
    return value


def shift_to_now(entries: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Shift every timestamp of the entries' values by one delta so the newest one is ``now_ms``.

    Relative timing (skew between instances, order of events) is kept exactly.
    """
    newest = max((t for entry in entries for t in _times_ms(entry.get("value"))), default=None)
    if newest is None:
        return entries
    delta = now_ms - newest
    return [{**entry, "value": _shifted(entry.get("value"), delta)} for entry in entries]


def parse_entry(entry: Any) -> ReplayMessage:
    """One replay entry (a decoded line) -> message; ValueError says what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError('each line must be an object {"topic": ..., "key": ..., "value": ...}')
    topic = entry.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError('missing "topic"')
    if "value" not in entry:
        raise ValueError('missing "value"')
    key = entry.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError('"key" must be a string or null')
    headers = [(str(k), _to_bytes(v, f"header {k!r}") or b"") for k, v in (entry.get("headers") or {}).items()]
    return ReplayMessage(topic, key.encode() if key else None, _to_bytes(entry["value"], '"value"'), headers)


def parse_line(line: bytes) -> ReplayMessage:
    """One replay line -> message; ValueError says what is wrong with it."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return parse_entry(entry)


def read_replay(
    stream: IO[bytes], *, now_ms: int | None = None
) -> list[tuple[int, ReplayMessage | ValueError]]:
    """Numbered messages (or the error of each bad line); ``now_ms`` shifts times to end at now."""
    decoded: list[tuple[int, Any]] = []
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            decoded.append((line_no, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            decoded.append((line_no, ValueError(f"not JSON ({exc})")))
    if now_ms is not None:
        good = [(n, e) for n, e in decoded if isinstance(e, dict)]
        shifted = iter(shift_to_now([e for _, e in good], now_ms))
        decoded = [(n, next(shifted) if isinstance(e, dict) else e) for n, e in decoded]
    out: list[tuple[int, ReplayMessage | ValueError]] = []
    for line_no, entry in decoded:
        if isinstance(entry, ValueError):
            out.append((line_no, entry))
            continue
        try:
            out.append((line_no, parse_entry(entry)))
        except ValueError as exc:
            out.append((line_no, exc))
    return out


async def produce_file(
    path: str | Path, settings: Settings, *, create_topics: bool = True, now_ms: int | None = None
) -> ProduceReport:
    try:
        if str(path) == "-":
            entries = read_replay(sys.stdin.buffer, now_ms=now_ms)
        else:
            with open(path, "rb") as handle:
                entries = read_replay(handle, now_ms=now_ms)
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from exc
    report = ProduceReport()
    messages = []
    for line_no, item in entries:
        if isinstance(item, ValueError):
            report.errors.append((line_no, str(item)))
        else:
            messages.append(item)
    if create_topics:
        names = settings.topics.all_names() + sorted({m.topic for m in messages})
        try:
            await ensure_topics(settings.bootstrap_servers, names, settings.topic_partitions, settings.topic_replication)
        except TopicSetupError as exc:
            raise ReplayError(f"{exc} (is the broker running? `plugwatch up` or `make run`)") from exc
    sink = TopicSink(settings.bootstrap_servers, client_id=f"{settings.app_id}-replay")
    try:
        await sink.start()
    except Exception as exc:
        raise ReplayError(
            f"cannot reach the broker at {settings.bootstrap_servers}: {exc} (is it running? `make run`)"
        ) from exc
    try:
        pending = []
        for message in messages:
            pending.append(
                await sink.producer.send(message.topic, message.value, key=message.key, headers=message.headers or None)
            )
            report.per_topic[message.topic] += 1
        for future in pending:
            await future
        report.sent = len(pending)
    finally:
        await sink.stop()
    return report
