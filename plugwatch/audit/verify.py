"""``plugwatch audit verify``: the first modified, deleted or reordered audit row of every chain.

``verify_rows`` checks stored audit records (decoded ``audit_log.record`` values, or the lines of an
``audit.jsonl`` taken from ``plugin.audit``) chain by chain with ``plugwatch.audit.chain.verify_chain``
and says what the first broken row is:

- ``modified``: the row's hash does not match its contents, or another row replaced it;
- ``deleted``: a gap in seq, or a row that does not link to the row stored before it;
- ``reordered``: a row stored after a later one (the order of a file or topic), or a row that links
  to a row other than its predecessor.

Reading ClickHouse: chDB allows one process per data directory, so with a chDB worker running the
rows come through its ``POST /internal/sql``. That endpoint masks what it returns; the query also
asks ClickHouse for each record's SHA-256, so a record the masking changed on the way is reported as
unverifiable through the worker (stop the worker, or verify an ``audit.jsonl`` export) instead of
as tampering. A ClickHouse server, or chDB with no worker running, is read directly.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from plugwatch.audit.chain import (
    GENESIS_HASH,
    AuditRecord,
    audit_id_of,
    record_hash,
    verify_chain,
)

UNKNOWN_CHAIN = "?"
PAGE_ROWS = 5000


class AuditReadError(RuntimeError):
    """The audit rows could not be read (file, ClickHouse or worker); the message says why."""


@dataclass(frozen=True, slots=True)
class ChainProblem:
    chain: str
    seq: int | None
    audit_id: str | None
    what: str

    def __str__(self) -> str:
        seq = "?" if self.seq is None else self.seq
        return f"chain {self.chain} seq {seq} ({self.audit_id or 'no audit_id'}): {self.what}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int  # distinct records in the chains that verified
    chains: int
    problems: tuple[ChainProblem, ...]  # the first problem of each broken chain, by chain name

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"audit: {self.records} records in {self.chains} chains verified"
        return f"audit: {len(self.problems)} of {self.chains} chains broken"


def verify_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    anchors: Mapping[str, tuple[int, str]] | None = None,
    allow_aged_out: bool = False,
) -> VerifyReport:
    """Verify audit records (chains mixed, each chain in stored order) and name each chain's first problem.

    ``anchors`` are ``(seq, hash)`` of records known good before a chain's oldest stored row. With
    ``allow_aged_out`` a chain without an anchor may start after seq 1 (the retention TTL removed its
    oldest rows): its oldest row is trusted as the start, and everything after it is checked.
    """
    by_chain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        chain = row.get("chain") if isinstance(row, Mapping) else None
        by_chain[chain if isinstance(chain, str) else UNKNOWN_CHAIN].append(row)

    anchors = dict(anchors or {})
    records = 0
    problems = []
    for chain in sorted(by_chain):
        chain_rows = by_chain[chain]
        if chain not in anchors and allow_aged_out:
            start = _oldest(chain_rows)
            if start is not None and start[0] > 0:
                anchors[chain] = start
        problem = _first_problem(chain, chain_rows, anchors.get(chain))
        if problem is None:
            records += len({row["seq"] for row in chain_rows})
        else:
            problems.append(problem)
    return VerifyReport(records, len(by_chain), tuple(problems))


def _oldest(rows: list[Mapping[str, Any]]) -> tuple[int, str] | None:
    """(seq - 1, prev_hash) of the lowest seq: the anchor that trusts the oldest row as a start."""
    candidates = [r for r in rows if isinstance(r.get("seq"), int) and isinstance(r.get("prev_hash"), str)]
    if not candidates:
        return None
    first = min(candidates, key=lambda r: r["seq"])
    return first["seq"] - 1, first["prev_hash"]


def _first_problem(
    chain: str, rows: list[Mapping[str, Any]], anchor: tuple[int, str] | None
) -> ChainProblem | None:
    order = _order_problem(chain, rows)
    result = verify_chain(rows, anchors={chain: anchor} if anchor else None)
    link = None if result.ok else _explain(chain, rows, anchor, result.first_bad_seq, result.problem or "")
    found = [p for p in (link, order) if p is not None]
    if not found:
        return None
    return min(found, key=lambda p: -1 if p.seq is None else p.seq)  # the earliest row; a tie goes to link


def _order_problem(chain: str, rows: list[Mapping[str, Any]]) -> ChainProblem | None:
    """A row stored after a row with a higher seq (identical copies side by side are fine)."""
    highest = None
    for row in rows:
        seq = row.get("seq")
        if not isinstance(seq, int):
            continue
        if highest is not None and seq < highest:
            return ChainProblem(chain, seq, _audit_id(row), f"reordered: seq {seq} is stored after seq {highest}")
        highest = seq if highest is None else max(highest, seq)
    return None


def _explain(
    chain: str, rows: list[Mapping[str, Any]], anchor: tuple[int, str] | None, seq: int | None, problem: str
) -> ChainProblem:
    """verify_chain's first problem in a chain, said as modified / deleted / reordered."""
    if problem.startswith("malformed record"):
        row = next((r for r in rows if r.get("seq") == seq), {})
        return ChainProblem(chain, seq, _audit_id(row), f"modified: {problem}")
    if seq is None:
        return ChainProblem(chain, None, None, problem)
    parsed: dict[int, AuditRecord] = {}
    for row in rows:
        try:
            record = AuditRecord.from_dict(row)
        except ValueError:
            continue  # only after a duplicate seq, which verify_chain reports before parsing the rest
        parsed.setdefault(record.seq, record)
    record = parsed[seq]
    where = (chain, seq, record.audit_id)
    if problem.startswith("two different records"):
        return ChainProblem(*where, f"modified: two different records carry seq {seq}")
    if record_hash(record.as_dict()) != record.hash:
        return ChainProblem(*where, "modified: hash mismatch (the row's contents changed after it was written)")
    if record.audit_id != audit_id_of(chain, seq):
        return ChainProblem(*where, f"modified: audit_id {record.audit_id} belongs to another row")
    anchor_seq, anchor_hash = anchor or (0, GENESIS_HASH)
    before = [s for s in parsed if s < seq]
    previous = max(before) if before else anchor_seq
    previous_hash = parsed[previous].hash if before else anchor_hash
    if seq < anchor_seq + 1:
        return ChainProblem(*where, f"reordered: seq {seq} precedes the anchor at seq {anchor_seq}")
    if seq != previous + 1:
        gap = f"seq {previous + 1}" if seq == previous + 2 else f"seqs {previous + 1}..{seq - 1}"
        return ChainProblem(*where, f"deleted: {gap} missing before seq {seq}")
    if record.prev_hash != previous_hash:
        linked = next((r.seq for r in parsed.values() if r.hash == record.prev_hash and r.seq != previous), None)
        if linked is not None:
            return ChainProblem(*where, f"reordered: seq {seq} was chained after seq {linked}, not seq {previous}")
        return ChainProblem(*where, f"deleted: seq {seq} was not chained to the stored seq {previous} "
                                    f"(prev_hash mismatch: a row was deleted there, or seq {previous} replaced)")
    return ChainProblem(*where, problem)


def _audit_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("audit_id") if isinstance(row, Mapping) else None
    return value if isinstance(value, str) else None


# Reading the rows ------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Audit records from a JSON-lines file: one record per line as on ``plugin.audit``, or a replay
    line ``{"topic", "key", "value": <record>}``. A line that is not JSON is kept as a malformed row."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise AuditReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
            if isinstance(value, dict) and "chain" not in value and "value" in value:
                value = value["value"]
                if isinstance(value, str):
                    value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = None
        rows.append(value if isinstance(value, dict) else {"line": number})
    return rows


def verify_jsonl(path: str | Path, **options: Any) -> VerifyReport:
    return verify_rows(read_jsonl(path), **options)


def _select(database: str, chain: str | None, with_digest: bool, paged: bool) -> tuple[str, dict[str, Any]]:
    columns = "chain, seq, record" + (", lower(hex(SHA256(record)))" if with_digest else "")
    where, params = [], {}
    if chain is not None:
        where.append("chain = {chain:String}")
        params["chain"] = chain
    if paged:
        where.append("(chain, seq) > ({after_chain:String}, {after_seq:UInt64})")
    sql = f"SELECT {columns} FROM {database}.audit_log FINAL"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY chain, seq"
    if paged:
        sql += f" LIMIT {PAGE_ROWS}"
    return sql, params


def _decode(chain: Any, seq: Any, record: Any) -> dict[str, Any]:
    """A stored ``record`` column as the record; an undecodable one as a malformed row of its chain."""
    try:
        value = orjson.loads(record)
    except (orjson.JSONDecodeError, TypeError):
        value = None
    if isinstance(value, dict):
        return value
    return {"chain": str(chain), "seq": int(seq), "record": record}


async def load_audit_rows(clickhouse: Any, chain: str | None = None) -> list[dict[str, Any]]:
    """Every audit record in ``audit_log`` (``FINAL``, by chain and seq) through a
    ``plugwatch.sinks.clickhouse.ClickHouse``; ``chain`` limits them to one chain."""
    sql, params = _select(clickhouse.database, chain, with_digest=False, paged=False)
    _, rows = await clickhouse.query(sql, params or None, readonly=True)
    return [_decode(c, s, record) for c, s, record in rows]


async def load_audit_rows_via_worker(
    url: str, token: str, database: str, chain: str | None = None
) -> list[dict[str, Any]]:
    """The same rows through a running worker's ``POST /internal/sql`` (``url``), page by page.

    ``AuditReadError`` when the worker masked a record on the way (its SHA-256 from ClickHouse no
    longer matches): such a record cannot be verified through the worker.
    """
    import httpx

    sql, params = _select(database, chain, with_digest=True, paged=True)
    after: tuple[str, int] = ("", 0)
    records: list[dict[str, Any]] = []
    altered: list[str] = []
    async with httpx.AsyncClient(timeout=120) as client:
        while True:
            body = {"query": sql, "parameters": {**params, "after_chain": after[0], "after_seq": after[1]}}
            try:
                response = await client.post(url, content=orjson.dumps(body),
                                             headers={"Authorization": f"Bearer {token}"})
                reply = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AuditReadError(f"the worker at {url} did not answer: {exc}") from exc
            if response.status_code != 200:
                raise AuditReadError(f"the worker at {url} refused: {response.status_code} "
                                     f"{reply.get('error')}: {reply.get('message')}")
            page = reply["rows"]
            for row_chain, seq, record, digest in page:
                if not isinstance(record, str) or hashlib.sha256(record.encode()).hexdigest() != digest:
                    altered.append(f"{row_chain} seq {seq}")
                    continue
                records.append(_decode(row_chain, seq, record))
            if len(page) < PAGE_ROWS:
                break
            after = (str(page[-1][0]), int(page[-1][1]))
    if altered:
        raise AuditReadError(
            f"{len(altered)} audit records (first: {altered[0]}) were changed by the worker's masking on the way, "
            "so they cannot be verified through it: stop the worker and run this again (chDB is then read "
            "directly), or verify an export of plugin.audit with --file"
        )
    return records


async def load_from_settings(settings: Any, token: str, chain: str | None = None) -> list[dict[str, Any]]:
    """The audit rows of the configured ClickHouse: a server directly; chDB through the running
    worker when one answers (it holds the data directory), else directly."""
    from plugwatch.sinks.clickhouse import ClickHouse

    dsn = settings.resolved_clickhouse_dsn
    database = settings.clickhouse_database
    if dsn.startswith("chdb:"):
        import httpx

        url = f"http://{settings.web_host}:{settings.web_port}/internal/sql"
        try:
            return await load_audit_rows_via_worker(url, token, database, chain)
        except AuditReadError as exc:
            if not isinstance(exc.__cause__, httpx.ConnectError):
                raise
    clickhouse = ClickHouse(dsn, database)
    try:
        return await load_audit_rows(clickhouse, chain)
    except Exception as exc:
        raise AuditReadError(f"cannot read {database}.audit_log at {dsn}: {exc}") from exc
    finally:
        await clickhouse.close()
