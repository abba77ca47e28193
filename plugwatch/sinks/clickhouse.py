"""ClickHouse through clickhouse-connect: a server (``http://host:8123``) or chDB (``chdb:///dir``).

chDB runs inside this process and allows one engine path per process, so one ``ClickHouse`` object
owns the client and runs every call on its own single thread (the event loop never blocks on it).
Inserts are batched: one JSONEachRow block per table per call, parsed by ClickHouse, not Python.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
import orjson

from plugwatch import metrics
from plugwatch.sinks.schema import TELEMETRY_TABLES, ddl

log = logging.getLogger(__name__)

# chDB's allocator (jemalloc, inside this process) keeps the pages an insert has freed for later
# reuse rather than giving them back: measured, ~110 MiB of RSS per 100,000 telemetry rows until
# purged, and a purge (~10 ms) gave back all of it. So the client thread purges at most this often
# after an insert. Never against a server: its memory is the server's business. Its own decay
# (5 s, fixed in chDB's build: MALLOC_CONF is not read) is too slow for ingest at ~7,000 rows/s:
# with a purge every 5 s jemalloc held 235 MiB resident for 62 MiB in use; every 1 s, 59-91 MiB.
JEMALLOC_PURGE_INTERVAL_S = 1.0


class ClickHouseError(RuntimeError):
    pass


def _settle(group: list[tuple[list[bytes], asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, done in group:
        if done.done():  # the caller went away (cancelled); its rows were inserted all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _timed(fn: Any, args: tuple[Any, ...]) -> Any:
    """``fn(*args)`` on the client's thread, its time counted as that thread's busy time."""
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        kind = _KIND.get(getattr(fn, "__name__", ""), "other")
        metrics.CLICKHOUSE_BUSY_SECONDS.labels(kind).inc(time.perf_counter() - started)


_KIND = {"_insert": "insert", "_query": "query"}


def _prepare_chdb_dir(dsn: str) -> None:
    """chDB wants its data directory to exist."""
    if dsn.startswith("chdb:"):
        path = urlparse(dsn).path
        if path and path != "/":
            Path(path).mkdir(parents=True, exist_ok=True)


class ClickHouse:
    def __init__(self, dsn: str, database: str = "plugwatch", telemetry_ttl_days: int = 30):
        self.dsn = dsn
        self.database = database
        self.telemetry_ttl_days = telemetry_ttl_days
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        # insert_rows calls waiting for the insert under way into their table: table -> [(rows, done)]
        self._grouped: dict[str, list[tuple[list[bytes], asyncio.Future[None]]]] = {}
        self._draining: set[str] = set()
        self._purged_at = time.monotonic()  # chDB only; None once a purge failed (not tried again)

    @property
    def is_chdb(self) -> bool:
        return self.dsn.startswith("chdb:")

    # All client calls run on the one executor thread. -----------------------------------------

    def _connect(self) -> Any:
        if self._client is None:
            try:
                _prepare_chdb_dir(self.dsn)
                self._client = clickhouse_connect.get_client(dsn=self.dsn)
            except Exception as exc:
                hint = (
                    " (chDB allows one process per data directory: is another plugwatch worker running"
                    " on it? Use `plugwatch sql` against the running worker instead)"
                    if self.is_chdb
                    else ""
                )
                raise ClickHouseError(f"cannot open ClickHouse at {self.dsn}: {exc}{hint}") from exc
        return self._client

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _timed, fn, args)

    def _apply_schema(self) -> None:
        client = self._connect()
        for statement in ddl(self.database, self.telemetry_ttl_days):
            client.command(statement)

    def _insert(self, table: str, block: bytes, fmt: str, columns: list[str] | None) -> None:
        self._connect().raw_insert(f"{self.database}.{table}", column_names=columns, insert_block=block, fmt=fmt)
        if self.is_chdb and self._purged_at is not None and time.monotonic() - self._purged_at >= JEMALLOC_PURGE_INTERVAL_S:
            self._purge()

    def _purge(self) -> None:
        """Give the pages chDB's allocator holds free back to the system (see JEMALLOC_PURGE_INTERVAL_S)."""
        try:
            self._connect().command("SYSTEM JEMALLOC PURGE")
        except Exception as exc:  # e.g. a chDB built without jemalloc: memory is then the allocator's own
            self._purged_at = None
            log.warning("chDB refused SYSTEM JEMALLOC PURGE (%s); freed memory stays with its allocator", exc)
            return
        self._purged_at = time.monotonic()
        metrics.CLICKHOUSE_PURGES.inc()

    def _query(self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any] | None) -> Any:
        result = self._connect().query(sql, parameters=parameters, settings=settings)
        return list(result.column_names), [list(row) for row in result.result_rows]

    def _ping(self) -> bool:
        return self._connect().command("SELECT 1") == 1

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # chDB writes its parts out on close

    # Public coroutine API ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._run(self._apply_schema)

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._ping))
        except Exception:
            return False

    async def _insert_block(self, table: str, rows: int, block: bytes, fmt: str, columns: list[str] | None) -> None:
        started = time.perf_counter()
        try:
            await self._run(self._insert, table, block, fmt, columns)
        except Exception:
            metrics.CLICKHOUSE_ERRORS.labels(table).inc()
            raise
        metrics.CLICKHOUSE_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
        metrics.CLICKHOUSE_ROWS.labels(table).inc(rows)

    async def insert_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Plain rows (column -> value) as JSONEachRow; returns once they are inserted.

        Calls for one table while an insert into it is under way are grouped: the next insert
        carries all of their rows. Each insert costs ClickHouse (chDB: ~20-30 ms on the one thread)
        about the same for one row as for a thousand, and under load -- a report revision, its
        alert record and its ticket each saving a row -- one insert per call kept the thread busy
        and the telemetry inserts waited behind them.
        """
        if not rows:
            return
        lines = [orjson.dumps(row, default=str) for row in rows]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grouped.setdefault(table, []).append((lines, done))
        if table not in self._draining:
            self._draining.add(table)
            asyncio.ensure_future(self._drain(table))
        await done

    async def _drain(self, table: str) -> None:
        try:
            while group := self._grouped.pop(table, None):
                try:
                    await self._insert_lines(table, [line for lines, _ in group for line in lines])
                except Exception as exc:
                    if len(group) == 1:
                        _settle(group, exc)
                        continue
                    # One caller's bad row must not fail the others: insert each call's rows alone.
                    for lines, done in group:
                        try:
                            await self._insert_lines(table, lines)
                        except Exception as alone:
                            _settle([(lines, done)], alone)
                        else:
                            _settle([(lines, done)], None)
                else:
                    _settle(group, None)
        finally:
            self._draining.discard(table)

    async def _insert_lines(self, table: str, lines: list[bytes]) -> None:
        await self._insert_block(table, len(lines), b"\n".join(lines), "JSONEachRow", None)

    async def insert_telemetry(self, signal: str, values: Sequence[bytes]) -> None:
        """Masked records as the JSON bytes already sent downstream; ClickHouse derives the columns."""
        if values:
            table = TELEMETRY_TABLES[signal].name
            await self._insert_block(table, len(values), b"\n".join(values), "JSONAsString", ["raw"])

    async def save_skew(self, rows: Sequence[tuple[str, int, bytes, int]]) -> None:
        """(plugin key, partition, estimator snapshot as JSON, updated_at ms) rows into ``skew_state``."""
        await self.insert_rows(
            "skew_state",
            [{"plugin_key": k, "partition": p, "snapshot": snap.decode(), "updated_at": at / 1000}
             for k, p, snap, at in rows],
        )

    async def load_skew(self, partitions: Sequence[int]) -> dict[str, dict[str, Any]]:
        """The latest saved estimator snapshot of every plugin key in ``partitions``."""
        if not partitions:
            return {}
        _, rows = await self.query(
            f"SELECT plugin_key, snapshot FROM {self.database}.skew_state FINAL "
            "WHERE partition IN {partitions:Array(UInt32)}",
            {"partitions": list(partitions)},
        )
        return {key: orjson.loads(snapshot) for key, snapshot in rows}

    async def insert_report(self, report: dict[str, Any]) -> None:
        """One report revision into ``debug_reports`` (the whole masked report as JSON in ``report``)."""
        completeness = report.get("completeness") or {}
        await self.insert_rows("debug_reports", [{
            "report_id": report["report_id"],
            "revision": report["revision"],
            "alert_id": report["alert_id"],
            "tenant_id": report["tenant_id"],
            "plugin_id": report["plugin_id"],
            "owner": report.get("owner") or "",
            "fingerprint": report.get("fingerprint") or "",
            "generated_at": report["generated_at"] / 1000,
            "generated_ms": report.get("generated_ms"),
            "complete": bool(completeness.get("complete", True)),
            "fallback_used": bool(completeness.get("fallback_used", False)),
            "coverage": float(completeness.get("coverage", 1.0)),
            "report": orjson.dumps(report).decode(),
        }])

    async def latest_report(self, report_id: str) -> dict[str, Any] | None:
        _, rows = await self.query(
            f"SELECT report FROM {self.database}.debug_reports FINAL WHERE report_id = {{id:String}} "
            "ORDER BY revision DESC LIMIT 1",
            {"id": report_id},
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def telemetry(
        self, signal: str, tenant_id: str, plugin_id: str, from_ms: int, to_ms: int, limit: int
    ) -> list[str]:
        """The masked records (raw JSON) of one plugin with their own time in [from_ms, to_ms]."""
        table = TELEMETRY_TABLES[signal]
        column = table.time_column
        _, rows = await self.query(
            f"SELECT raw FROM {self.database}.{table.name} FINAL "
            "WHERE tenant_id = {tenant:String} AND plugin_id = {plugin:String} "
            f"AND {column} BETWEEN fromUnixTimestamp64Milli({{lo:Int64}}) AND fromUnixTimestamp64Milli({{hi:Int64}}) "
            f"ORDER BY {column} LIMIT {int(limit)}",
            {"tenant": tenant_id, "plugin": plugin_id, "lo": from_ms, "hi": to_ms},
        )
        return [row[0] for row in rows]

    async def insert_audit(self, records: Sequence[dict[str, Any]]) -> None:
        await self.insert_rows("audit_log", [
            {**{k: r[k] for k in ("chain", "seq", "audit_id", "action", "actor", "tenant_id", "plugin_id",
                                  "target", "outcome", "prev_hash", "hash")},
             "ts": r["ts"] / 1000, "details": orjson.dumps(r.get("details") or {}).decode(),
             "record": orjson.dumps(r).decode()}
            for r in records
        ])

    async def audit_head(self, chain: str) -> tuple[int, str] | None:
        """(seq, hash) of a chain's last audit record, to continue it after a restart."""
        _, rows = await self.query(
            f"SELECT seq, hash FROM {self.database}.audit_log FINAL WHERE chain = {{chain:String}} "
            "ORDER BY seq DESC LIMIT 1",
            {"chain": chain},
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    # Tickets and alert lifecycles --------------------------------------------------------------

    async def save_ticket(self, ticket: dict[str, Any]) -> None:
        """A ticket version (``Ticket.as_dict()``); the highest ``version`` of a ticket wins."""
        await self.insert_rows("tickets", [{
            **{k: ticket[k] for k in ("ticket_id", "tenant_id", "plugin_id", "fingerprint", "generation", "system",
                                      "external_id", "url", "status", "severity", "owner", "occurrences", "version")},
            "updated_at": ticket["updated_ms"] / 1000,
            "state": orjson.dumps(ticket).decode(),
        }])

    async def latest_ticket(self, tenant_id: str, plugin_id: str, fingerprint: str) -> dict[str, Any] | None:
        """The newest generation of the fingerprint's ticket."""
        _, rows = await self.query(
            f"SELECT state FROM {self.database}.tickets FINAL WHERE tenant_id = {{t:String}} "
            "AND plugin_id = {p:String} AND fingerprint = {f:String} ORDER BY generation DESC LIMIT 1",
            {"t": tenant_id, "p": plugin_id, "f": fingerprint},
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        _, rows = await self.query(
            f"SELECT state FROM {self.database}.tickets FINAL WHERE ticket_id = {{id:String}} LIMIT 1",
            {"id": ticket_id},
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def tickets(
        self, *, tenants: Sequence[str] | None, plugin_id: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Tickets, newest first; ``tenants`` None means every tenant."""
        where, params = ["1"], {}
        if tenants is not None:
            where.append("tenant_id IN {tenants:Array(String)}")
            params["tenants"] = list(tenants)
        if plugin_id:
            where.append("plugin_id = {plugin:String}")
            params["plugin"] = plugin_id
        if status:
            where.append("status = {status:String}")
            params["status"] = status
        _, rows = await self.query(
            f"SELECT state FROM {self.database}.tickets FINAL WHERE {' AND '.join(where)} "
            f"ORDER BY updated_at DESC LIMIT {int(limit)}",
            params,
        )
        return [orjson.loads(row[0]) for row in rows]

    async def insert_ticket_comment(self, ticket_id: str, comment_id: str, at_ms: int, kind: str, body: str) -> None:
        await self.insert_rows("ticket_comments", [
            {"ticket_id": ticket_id, "comment_id": comment_id, "at": at_ms / 1000, "kind": kind, "body": body}])

    async def ticket_comments(self, ticket_id: str) -> list[dict[str, Any]]:
        _, rows = await self.query(
            f"SELECT comment_id, toUnixTimestamp64Milli(at), kind, body FROM {self.database}.ticket_comments FINAL "
            "WHERE ticket_id = {id:String} ORDER BY at, comment_id",
            {"id": ticket_id},
        )
        return [{"comment_id": c, "at": int(at), "kind": kind, "body": body} for c, at, kind, body in rows]

    async def save_alert(self, lifecycle: dict[str, Any], version: int) -> None:
        """An alert lifecycle version (``AlertLifecycle.as_dict()``)."""
        history = lifecycle.get("history") or []
        updated = history[-1]["at_ms"] if history else 0
        await self.insert_rows("debug_alerts", [{
            "alert_id": lifecycle["alert_id"], "tenant_id": lifecycle["tenant_id"], "plugin_id": lifecycle["plugin_id"],
            "status": lifecycle["status"], "fingerprint": lifecycle.get("fingerprint") or "",
            "ticket_id": lifecycle.get("ticket_id") or "", "updated_at": updated / 1000, "version": version,
            "state": orjson.dumps(lifecycle).decode(),
        }])

    async def alert(self, alert_id: str) -> tuple[dict[str, Any], int] | None:
        """(lifecycle, version) of an alert."""
        _, rows = await self.query(
            f"SELECT state, version FROM {self.database}.debug_alerts FINAL WHERE alert_id = {{id:String}} LIMIT 1",
            {"id": alert_id},
        )
        return (orjson.loads(rows[0][0]), int(rows[0][1])) if rows else None

    # Suspensions ---------------------------------------------------------------------------------

    @staticmethod
    def suspension_row(state: dict[str, Any], version: int, updated_ms: int) -> dict[str, Any]:
        """A ``suspensions`` row for ``insert_rows`` (the newest version of a record wins)."""
        return {
            "suspension_id": state["suspension_id"], "tenant_id": state["tenant_id"], "plugin_id": state["plugin_id"],
            "kind": state.get("kind") or "", "status": state.get("status") or "", "severity": state.get("severity") or "",
            "mode": state.get("mode") or "", "requester": state.get("requester") or "",
            "updated_at": updated_ms / 1000, "version": version, "state": orjson.dumps(state).decode(),
        }

    async def suspension(self, suspension_id: str) -> tuple[dict[str, Any], int] | None:
        _, rows = await self.query(
            f"SELECT state, version FROM {self.database}.suspensions FINAL WHERE suspension_id = {{id:String}} LIMIT 1",
            {"id": suspension_id},
        )
        return (orjson.loads(rows[0][0]), int(rows[0][1])) if rows else None

    async def suspensions_of(self, tenant_id: str, plugin_id: str, limit: int = 20) -> list[tuple[dict[str, Any], int]]:
        """The plugin's suspensions and resumes, newest first."""
        _, rows = await self.query(
            f"SELECT state, version FROM {self.database}.suspensions FINAL WHERE tenant_id = {{t:String}} "
            f"AND plugin_id = {{p:String}} ORDER BY updated_at DESC LIMIT {int(limit)}",
            {"t": tenant_id, "p": plugin_id},
        )
        return [(orjson.loads(state), int(version)) for state, version in rows]

    async def evidence(self, evidence_id: str) -> dict[str, Any] | None:
        _, rows = await self.query(
            f"SELECT record FROM {self.database}.evidence FINAL WHERE evidence_id = {{id:String}} LIMIT 1",
            {"id": evidence_id},
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def highest_evidence_number(self) -> int:
        """The highest NNNNNN of the stored evidence ids (0 when there is none)."""
        _, rows = await self.query(
            f"SELECT max(toUInt64OrZero(splitByChar('-', evidence_id)[3])) FROM {self.database}.evidence")
        return int(rows[0][0] or 0) if rows else 0

    async def latest_suspensions(self) -> list[tuple[dict[str, Any], int]]:
        """The latest suspension or resume of every plugin, to carry on after a restart."""
        _, rows = await self.query(
            f"SELECT state, version FROM {self.database}.suspensions FINAL "
            "ORDER BY updated_at DESC LIMIT 1 BY tenant_id, plugin_id",
        )
        return [(orjson.loads(state), int(version)) for state, version in rows]

    async def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        readonly: bool = False,
    ) -> tuple[list[str], list[list[Any]]]:
        # readonly=2: no writes, but the client may still send its own query settings.
        settings = {"readonly": 2} if readonly and not self.is_chdb else None
        return await self._run(self._query, sql, parameters, settings)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
