"""The ClickHouse sink on the real chDB engine: idempotent DDL, columns derived from the masked
JSON, redelivered rows collapsing by event_id, and concurrent row inserts grouped."""

import asyncio
import time

import orjson

from plugwatch.metrics import REGISTRY
from plugwatch.sinks.clickhouse import ClickHouse
from plugwatch.sinks.schema import TELEMETRY_MERGE_SETTINGS, TELEMETRY_TABLES

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


def test_concurrent_row_inserts_share_inserts_and_a_bad_row_fails_only_its_call(tmp_path):
    def alert(n: int, updated_at: object = None) -> dict:
        return {"alert_id": f"a-{n}", "tenant_id": "acme", "plugin_id": "p1", "status": "open", "fingerprint": "",
                "ticket_id": "", "updated_at": TS / 1000 if updated_at is None else updated_at, "version": 1,
                "state": "{}"}

    async def scenario():
        clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch")
        try:
            await clickhouse.start()
            before = inserts()
            await asyncio.gather(*(clickhouse.insert_rows("debug_alerts", [alert(n)]) for n in range(20)))
            grouped = inserts() - before
            calls = [clickhouse.insert_rows("debug_alerts", [alert(n)]) for n in range(20, 40)]
            calls.append(clickhouse.insert_rows("debug_alerts", [alert(99, updated_at="not a time")]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            rows = await clickhouse.query("SELECT alert_id FROM plugwatch.debug_alerts ORDER BY alert_id")
            return grouped, results, rows[1]
        finally:
            await clickhouse.close()

    def inserts() -> float:
        return REGISTRY.get_sample_value("plugwatch_clickhouse_insert_seconds_count", {"table": "debug_alerts"}) or 0

    grouped, results, rows = asyncio.run(scenario())
    assert 1 <= grouped < 20  # twenty calls at once, fewer inserts
    assert results[:20] == [None] * 20
    assert isinstance(results[20], Exception)  # the bad call alone failed, with ClickHouse's error
    assert sorted(row[0] for row in rows) == sorted(f"a-{n}" for n in range(40))


def test_alert_store_skips_repeats_without_reading_and_stays_right_when_another_worker_wrote(tmp_path):
    from plugwatch.sinks.alerts import AlertStore

    def report(fingerprint: str) -> dict:
        return {"alert_id": "A-1", "tenant_id": "acme", "plugin_id": "p1", "report_id": "RPT-1",
                "fingerprint": fingerprint}

    def queries() -> float:
        return REGISTRY.get_sample_value("plugwatch_clickhouse_busy_seconds_total", {"kind": "query"}) or 0

    async def scenario():
        clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch")
        try:
            await clickhouse.start()
            ours, other = AlertStore(clickhouse, lambda: TS), AlertStore(clickhouse, lambda: TS)
            first = await ours.reported(report("f1"))
            await other.ticketed("A-1", "TKT-1", "http://t/1")  # another worker's ticket desk
            before = queries()
            repeat = await ours.reported(report("f1"))  # revision 2: nothing to change
            read_for_repeat = queries() - before
            await ours.ticketed("A-1", "TKT-1", "http://t/1")  # ours last saw "reported": it reads
            moved = await ours.reported(report("f2"))  # a new fingerprint is written
            stored = await other.get("A-1")
            return first, repeat, read_for_repeat, moved, stored
        finally:
            await clickhouse.close()

    first, repeat, read_for_repeat, moved, stored = asyncio.run(scenario())
    assert first.status == "reported" and repeat == first
    assert read_for_repeat == 0
    assert stored.status == "ticketed" and stored.ticket_id == "TKT-1"  # the other worker's change kept
    assert stored.fingerprint == "f2" and moved == stored


def test_chdb_gives_freed_memory_back_after_inserts(tmp_path, monkeypatch):
    import plugwatch.sinks.clickhouse as sink

    monkeypatch.setattr(sink, "JEMALLOC_PURGE_INTERVAL_S", 0.0)  # purge after every insert

    async def scenario():
        clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch")
        try:
            await clickhouse.start()
            for n in range(3):
                await clickhouse.insert_telemetry("logs", [orjson.dumps(
                    {"event_id": f"t:0:{n}:{i}", "ts": TS, "tenant_id": "acme", "plugin_id": "p1", "level": "INFO",
                     "message": "x" * 200}) for i in range(1_000)])
            return await clickhouse.query("SELECT count() FROM plugwatch.telemetry_logs")
        finally:
            await clickhouse.close()

    before = REGISTRY.get_sample_value("plugwatch_clickhouse_purges_total") or 0
    rows = asyncio.run(scenario())
    assert rows[1] == [[3_000]]
    # chDB accepted SYSTEM JEMALLOC PURGE after each insert (a refusal is logged and not counted)
    assert (REGISTRY.get_sample_value("plugwatch_clickhouse_purges_total") or 0) - before == 3


def test_telemetry_tables_merge_column_by_column_also_when_created_before(tmp_path):
    """The merge settings are in the tables' DDL, and a table created without them (by an earlier
    version) gets them on start."""

    async def scenario() -> dict[str, str]:
        clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch", telemetry_ttl_days=7)
        try:
            await clickhouse.start()
            older = TELEMETRY_TABLES["metrics"].create_sql("plugwatch", 7).split("\nSETTINGS ")[0]
            await clickhouse._run(lambda: clickhouse._connect().command("DROP TABLE plugwatch.telemetry_metrics"))
            await clickhouse._run(lambda: clickhouse._connect().command(older))
            await clickhouse.start()
            shown = {}
            for table in TELEMETRY_TABLES.values():
                _, rows = await clickhouse.query(f"SHOW CREATE TABLE plugwatch.{table.name}")
                shown[table.name] = rows[0][0]
            return shown
        finally:
            await clickhouse.close()

    for name, create in asyncio.run(scenario()).items():
        for setting, value in TELEMETRY_MERGE_SETTINGS.items():
            assert f"{setting} = {value}" in create, (name, setting, create)
