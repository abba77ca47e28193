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


def parse_line(line: bytes) -> ReplayMessage:
    """One replay line -> message; ValueError says what is wrong with it."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
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


def read_replay(stream: IO[bytes]) -> Iterator[tuple[int, ReplayMessage | ValueError]]:
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield line_no, parse_line(line)
        except ValueError as exc:
            yield line_no, exc


async def produce_file(path: str | Path, settings: Settings, *, create_topics: bool = True) -> ProduceReport:
    if str(path) == "-":
        entries = list(read_replay(sys.stdin.buffer))
    else:
        try:
            with open(path, "rb") as handle:
                entries = list(read_replay(handle))
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
