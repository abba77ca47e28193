"""OTLP on the inbound telemetry topics: decoding to plugwatch records, and building for tests.

The OpenTelemetry Collector's Kafka exporter writes one Export*ServiceRequest per message, as
protobuf (``otlp_proto``, read by ``otlp_proto``) or OTLP/JSON (``otlp_json``, read by
``otlp_json``); both walkers hand the same fields to ``otlp_records``, so a record does not depend
on the encoding it came in. ``otlp_build`` goes the other way, from plain records to requests, so
tests, benchmarks and integration runs can put realistic OTLP on the topics.
"""

from plugwatch.streams.otlp_build import (
    build_logs_request,
    build_metrics_request,
    build_traces_request,
    encode_otlp_json,
)
from plugwatch.streams.otlp_json import JSON_KEYS, records_from_json
from plugwatch.streams.otlp_proto import decode_proto, request_type
from plugwatch.streams.otlp_records import OtlpError, Signal, level_from_severity

__all__ = [
    "JSON_KEYS",
    "OtlpError",
    "Signal",
    "build_logs_request",
    "build_metrics_request",
    "build_traces_request",
    "decode_proto",
    "encode_otlp_json",
    "level_from_severity",
    "records_from_json",
    "request_type",
]
