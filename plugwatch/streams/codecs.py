"""Decode one inbound telemetry message (a Kafka value) into plugwatch records.

Each telemetry topic accepts three forms: plugwatch JSON envelopes (one record object, or an array
of them), and OTLP/JSON or OTLP protobuf as the OpenTelemetry Collector's Kafka exporter writes
them. Envelope records come back as they are: timestamps and required fields are the caller's
validation, so an invalid record is dead-lettered there with its own reason. Here a whole message
is refused, with a ``DecodeError`` whose ``reason`` names the dead-letter cause.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from plugwatch.streams.otlp import JSON_KEYS, OtlpError, Signal, decode_proto, records_from_json

__all__ = ["MAX_BYTES", "MAX_DEPTH", "DecodeError", "Signal", "decode_message"]

MAX_BYTES = 1_048_576
MAX_DEPTH = 64  # nested JSON objects/arrays; deeper documents are refused, not walked

_LEADING_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_BOM = b"\xef\xbb\xbf"
_OTLP_JSON_KEYS = frozenset(JSON_KEYS.values())
_QUOTING_ESCAPE = re.compile(rb'\\[\\"]')  # an escaped backslash or quote; other escapes cannot hide a quote
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"{}[]')))
_TO_PARENS = bytes.maketrans(b"{[}]", b"(())")


class DecodeError(ValueError):
    """A message that cannot be decoded; ``reason`` is the machine code sent with the dead letter.

    Reasons: empty, too_large, invalid_utf8, invalid_json, too_deep, not_a_record, wrong_signal,
    invalid_otlp, not_json_or_otlp.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


def decode_message(
    raw: bytes, signal: Signal, *, max_bytes: int = MAX_BYTES
) -> tuple[list[dict[str, Any]], str]:
    """Records of one message of the ``signal`` topic and the encoding found.

    The encoding is ``json`` (plugwatch envelopes), ``otlp_json`` or ``otlp_proto``.
    Raises ``DecodeError`` when the message as a whole cannot be used.
    """
    if signal not in JSON_KEYS:
        raise ValueError(f"signal must be one of {sorted(JSON_KEYS)}, not {signal!r}")
    size = len(raw)
    if size > max_bytes:
        raise DecodeError(
            "too_large",
            f"message is {size} bytes, over the {max_bytes}-byte limit; "
            "send smaller batches (e.g. lower the Collector batch processor's send_batch_max_size)",
        )
    if raw[:1] == b"{":  # the common case first: one envelope record
        return _decode_json(raw, raw, signal)
    start = _LEADING_WHITESPACE.match(raw).end()
    if start == size:
        raise DecodeError(
            "empty", "message is empty or only whitespace; send one record, a record array or an OTLP request"
        )
    head = raw[start : start + 1]
    if head == b"{" or head == b"[":
        return _decode_json(raw, raw, signal)
    if head == b"\xef" and raw.startswith(_BOM, start):
        return _decode_json(raw, raw[start + len(_BOM) :], signal)
    return _decode_proto(raw, signal), "otlp_proto"


def _decode_json(raw: bytes, body: bytes, signal: Signal) -> tuple[list[dict[str, Any]], str]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # A protobuf request can also start with "{" or "[": its first byte is the tag 0x0A
        # (whitespace) and a length of 123 or 91 follows. So it gets its chance before the verdict.
        try:
            return _decode_proto(raw, signal), "otlp_proto"
        except DecodeError:
            pass
        raise _json_error(body, exc) from exc
    if _nesting_exceeds(body, MAX_DEPTH):
        raise _too_deep()
    if isinstance(doc, dict):
        key = JSON_KEYS[signal]
        if key in doc:
            try:
                return records_from_json(doc, signal), "otlp_json"
            except OtlpError as exc:
                raise DecodeError(exc.reason, str(exc)) from exc
        if not _OTLP_JSON_KEYS.isdisjoint(doc):
            other = next(name for name, other_key in JSON_KEYS.items() if other_key in doc)
            raise DecodeError(
                "wrong_signal",
                f"OTLP/JSON {other} request ({JSON_KEYS[other]}) on the {signal} topic; "
                f"send it to the {other} topic or fix the exporter's topic setting",
            )
        return [doc], "json"
    for index, item in enumerate(doc):
        if not isinstance(item, dict):
            raise DecodeError(
                "not_a_record",
                f"JSON array item {index} is a {type(item).__name__}, not a record object; "
                "send an array of record objects",
            )
    return doc, "json"


def _json_error(body: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    if "depth limit" in str(exc):
        return _too_deep()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return DecodeError(
            "invalid_utf8", f"JSON message is not valid UTF-8 at byte {bad.start}; encode JSON as UTF-8"
        )
    return DecodeError("invalid_json", f"message starts like JSON but does not parse: {exc}")


def _too_deep() -> DecodeError:
    return DecodeError(
        "too_deep", f"JSON nests objects/arrays deeper than {MAX_DEPTH} levels; flatten the record"
    )


def _nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether valid JSON ``body`` nests objects/arrays deeper than ``limit``.

    Only C-speed bytes operations: a Python walk of a 100-record batch costs more than parsing it.
    Escaped backslashes and quotes go first (one left-to-right pass, so every match starts at an
    escape); every quote left is then a string delimiter. Keeping only quotes and brackets turns a
    string without brackets into ``""``; strings with brackets are cut out. The brackets left
    become parentheses, and each ``replace(b"()", b"")`` removes exactly the innermost level
    (replace never rescans what it joined), so ``limit`` rounds empty the document if and only if
    it is at most ``limit`` deep.
    """
    if b"\\" in body:
        body = _QUOTING_ESCAPE.sub(b"", body)
    structure = body.translate(None, _NOT_STRUCTURE)
    quotes = structure.count(b'"')
    if len(structure) - quotes <= 2 * limit:
        return False  # too few brackets to open more than ``limit`` levels
    if structure.count(b'""') * 2 != quotes:
        # Some string holds a bracket: keep what lies between strings (even pieces of the split).
        structure = b"".join(structure.replace(b'""', b"").split(b'"')[::2])
    nesting = structure.translate(_TO_PARENS, b'"')
    for _ in range(limit):
        nesting = nesting.replace(b"()", b"")
        if not nesting:
            return False
    return True


def _decode_proto(raw: bytes, signal: Signal) -> list[dict[str, Any]]:
    try:
        return decode_proto(raw, signal)
    except OtlpError as exc:
        if exc.reason == "not_json_or_otlp":
            _refuse_other_signal(raw, signal)
        raise DecodeError(exc.reason, str(exc)) from exc


def _refuse_other_signal(raw: bytes, signal: Signal) -> None:
    """Name the mistake when a valid request of another signal arrived (only on the error path)."""
    for other in JSON_KEYS:
        if other == signal:
            continue
        try:
            decode_proto(raw, other)  # type: ignore[arg-type]
        except OtlpError:
            continue
        raise DecodeError(
            "wrong_signal",
            f"protobuf {other} request on the {signal} topic; "
            f"send it to the {other} topic or fix the exporter's topic setting",
        )
