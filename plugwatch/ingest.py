"""The ingest step as plain logic: raw message bytes -> validated, masked records or dead letters.

No Faust, aiokafka or ClickHouse here: the agents hand in the bytes and their source position and
take back what to write. Every value that leaves this module has been through the masking engine.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from plugwatch.masking import MaskingEngine, MaskStats
from plugwatch.streams.codecs import DecodeError, decode_message
from plugwatch.streams.records import RecordError, validate


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from; its position makes event ids stable under redelivery."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(slots=True)
class MaskedRecord:
    key: str  # tenant_id/plugin_id
    record: dict[str, Any]
    value: bytes  # the record as JSON, the exact bytes written downstream


@dataclass(slots=True)
class DeadLetter:
    reason: str
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class BatchOutcome:
    records: list[MaskedRecord] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    mask_stats: MaskStats = field(default_factory=MaskStats)
    encodings: Counter[str] = field(default_factory=Counter)  # records written, by wire encoding
    messages: int = 0


def plugin_key(record: dict[str, Any]) -> str:
    return f"{record['tenant_id']}/{record['plugin_id']}"


class IngestPipeline:
    def __init__(
        self,
        masker: MaskingEngine,
        *,
        max_bytes: int = 1_048_576,
        excerpt_chars: int = 1024,
        clock: Callable[[], float] = time.time,
    ):
        self.masker = masker
        self.max_bytes = max_bytes
        self.excerpt_chars = excerpt_chars
        self.clock = clock

    def process(self, signal: str, raw: bytes | None, source: Source, out: BatchOutcome) -> None:
        """Decode, validate and mask one message, appending to ``out``. Never raises."""
        out.messages += 1
        if raw is None:
            out.deadletters.append(self.deadletter("empty", "message has no value", raw, source, signal))
            return
        try:
            decoded, encoding = decode_message(raw, signal, max_bytes=self.max_bytes)
        except DecodeError as exc:
            out.deadletters.append(self.deadletter(exc.reason, str(exc), raw, source, signal))
            return
        except Exception as exc:  # a codec bug must not stop the partition
            out.deadletters.append(
                self.deadletter("decode_error", f"{type(exc).__name__} while decoding", raw, source, signal)
            )
            return
        if not decoded:
            out.deadletters.append(
                self.deadletter("empty", f"{encoding} message holds no records", raw, source, signal)
            )
            return
        for index, item in enumerate(decoded):
            try:
                record = validate(signal, item)
            except RecordError as exc:
                out.deadletters.append(
                    self.deadletter(exc.reason, str(exc), raw, source, signal, index, item, encoding)
                )
                continue
            record["event_id"] = f"{source.topic}:{source.partition}:{source.offset}:{index}"
            if source.timestamp_ms is not None:
                record["broker_ts"] = source.timestamp_ms
            try:
                value, masked, stats = self.masker.mask_json(record)
            except Exception as exc:  # fail closed: the record is not passed on unmasked
                out.deadletters.append(
                    self.deadletter("masking_error", type(exc).__name__, None, source, signal, index, None, encoding)
                )
                continue
            out.mask_stats += stats
            if stats.flagged:  # the masker changed it, so ``masked`` is its own copy
                masked["masking_violation"] = True
                value = orjson.dumps(masked)
            if not masked.get("tenant_id") or not masked.get("plugin_id"):
                out.deadletters.append(
                    self.deadletter("masking_error", "tenant_id or plugin_id was masked away", None, source, signal, index)
                )
                continue
            out.records.append(MaskedRecord(plugin_key(masked), masked, value))
            out.encodings[encoding] += 1

    def deadletter(
        self,
        reason: str,
        detail: str,
        raw: bytes | None,
        source: Source,
        signal: str,
        index: int | None = None,
        item: Any = None,
        encoding: str | None = None,
    ) -> DeadLetter:
        if item is not None:
            excerpt = self._excerpt(orjson.dumps(item, default=str))
        elif raw is not None:
            excerpt = self._excerpt(raw)
        else:
            excerpt = ""
        body: dict[str, Any] = {
            "reason": reason,
            "detail": self.masker.mask_text(detail),
            "signal": signal,
            "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
            "size": len(raw) if raw is not None else 0,
            "excerpt": excerpt,
            "ts": int(self.clock() * 1000),
        }
        if encoding is not None:
            body["encoding"] = encoding
        if index is not None:
            body["record_index"] = index
        return DeadLetter(reason, source.topic.encode(), orjson.dumps(body))

    def _excerpt(self, raw: bytes) -> str:
        try:
            return self.masker.mask_bytes(raw, limit=self.excerpt_chars)
        except Exception:  # the excerpt is a courtesy; never let it leak or crash
            return "[excerpt unavailable]"
