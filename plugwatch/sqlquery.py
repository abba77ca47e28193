"""``plugwatch sql``: read-only queries on plugwatch's ClickHouse.

chDB allows one process per data directory and the running worker holds it, so the query goes
through the worker's ``POST /internal/sql`` when a worker answers; otherwise ClickHouse is opened
directly (chDB when no worker runs, or a server).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from plugwatch.settings import Settings


class SqlError(RuntimeError):
    pass


async def run_query(query: str, settings: Settings, token: str) -> tuple[list[str], list[list[Any]]]:
    url = f"http://{settings.web_host}:{settings.web_port}/internal/sql"
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                url, content=orjson.dumps({"query": query}), headers={"Authorization": f"Bearer {token}"}
            )
    except httpx.ConnectError:
        return await _query_directly(query, settings)
    except httpx.HTTPError as exc:
        raise SqlError(f"the worker at {url} did not answer: {exc}") from exc
    body = response.json()
    if response.status_code != 200:
        raise SqlError(f"{response.status_code} {body.get('error')}: {body.get('message')}")
    return body["columns"], body["rows"]


async def _query_directly(query: str, settings: Settings) -> tuple[list[str], list[list[Any]]]:
    from plugwatch.masking import load_engine
    from plugwatch.sinks.clickhouse import ClickHouse, ClickHouseError
    from plugwatch.web.views import _READ_ONLY

    if not _READ_ONLY.match(query):
        raise SqlError("only read-only statements (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)")
    clickhouse = ClickHouse(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    try:
        columns, rows = await clickhouse.query(query, readonly=True)
    except ClickHouseError as exc:
        raise SqlError(str(exc)) from exc
    except Exception as exc:
        raise SqlError(f"query failed: {exc}") from exc
    finally:
        await clickhouse.close()
    masked, _ = load_engine(settings).mask(orjson.loads(orjson.dumps(rows, default=str)))
    return columns, masked


def format_table(columns: list[str], rows: list[list[Any]], max_width: int = 80) -> str:
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        text = text.replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    table = [[str(c) for c in columns]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"({len(rows)} rows)"])
