"""The ClickHouse sink on the real chDB engine: idempotent DDL, columns derived from the masked
JSON, and redelivered rows collapsing by event_id."""

import asyncio
import time

import orjson

from plugwatch.sinks.clickhouse import ClickHouse

TS = int(time.time() * 1000)  # within the TTL: ClickHouse drops expired rows on insert


def test_schema_columns_and_redelivery(tmp_path):
    async def scenario():
        clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch", telemetry_ttl_days=7)
        try:
            await clickhouse.start()
            await clickhouse.start()  # applying the DDL again changes nothing
            log = {"event_id": "t:0:1:0", "ts": TS, "tenant_id": "acme", "plugin_id": "p1", "level": "ERROR",
                   "message": "boom", "attributes": {"k": [1, 2]}, "request": {"method": "GET"},
                   "unknown_field": {"kept": True}, "broker_ts": TS + 7}
            span = {"event_id": "t:0:2:0", "start_ts": TS, "end_ts": TS + 40, "tenant_id": "acme", "plugin_id": "p1",
                    "trace_id": "ab" * 16, "span_id": "cd" * 8, "status": "ERROR", "kind": "SERVER"}
            point = {"event_id": "t:0:3:0", "ts": TS, "tenant_id": "acme", "plugin_id": "p1", "name": "cpu", "value": 0.5}
            for _ in range(2):  # at-least-once: the same batch delivered twice
                await clickhouse.insert_telemetry("logs", [orjson.dumps(log)])
                await clickhouse.insert_telemetry("traces", [orjson.dumps(span)])
                await clickhouse.insert_telemetry("metrics", [orjson.dumps(point)])
            logs = await clickhouse.query(
                "SELECT toUnixTimestamp64Milli(ts), tenant_id, level, message, attributes, request, "
                "toUnixTimestamp64Milli(broker_ts), JSONExtractRaw(raw, 'unknown_field') "
                "FROM plugwatch.telemetry_logs FINAL"
            )
            spans = await clickhouse.query(
                "SELECT toUnixTimestamp64Milli(end_ts) - toUnixTimestamp64Milli(start_ts), status, kind "
                "FROM plugwatch.telemetry_spans FINAL"
            )
            points = await clickhouse.query("SELECT name, value FROM plugwatch.telemetry_metrics FINAL")
            ttl = await clickhouse.query("SHOW CREATE TABLE plugwatch.telemetry_logs")
            return logs, spans, points, ttl
        finally:
            await clickhouse.close()

    logs, spans, points, ttl = asyncio.run(scenario())
    assert logs[1] == [[TS, "acme", "ERROR", "boom", '{"k":[1,2]}', '{"method":"GET"}', TS + 7, '{"kept":true}']]
    assert spans[1] == [[40, "ERROR", "SERVER"]]
    assert points[1] == [["cpu", 0.5]]
    assert "TTL toDateTime(ts) + toIntervalDay(7)" in ttl[1][0][0]
