"""plugwatch audit verify: the first modified, deleted or reordered row of every chain."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from plugwatch.audit.chain import AuditChain, record_hash
from plugwatch.audit.verify import (
    load_audit_rows,
    read_jsonl,
    verify_jsonl,
    verify_rows,
)

BASE = 1_795_000_000_000


class Clock:
    """Advanced by hand: each reading is 250 ms after the last."""

    def __init__(self, now: int = BASE):
        self.now = now

    def __call__(self) -> int:
        self.now += 250
        return self.now


def build(n: int = 6, chain: str = "w1") -> list[dict]:
    audit = AuditChain(chain, Clock())
    return [
        audit.append("suspend.request", "alice@ops", tenant_id="acme", plugin_id="pay", target=f"SUS-{i}",
                     details={"n": i, "mode": "wait"}).as_dict()
        for i in range(n)
    ]


def only_problem(rows, **options):
    report = verify_rows(rows, **options)
    assert not report.ok
    assert len(report.problems) == 1
    return report.problems[0]


def test_an_intact_chain_verifies():
    report = verify_rows(build())
    assert report.ok
    assert (report.records, report.chains) == (6, 1)
    assert report.summary() == "audit: 6 records in 1 chains verified"


def test_identical_copies_count_once():
    rows = build()
    report = verify_rows(rows[:3] + [rows[2]] + rows[3:])
    assert report.ok and report.records == 6


def test_a_modified_row_is_named():
    rows = build()
    rows[2] = {**rows[2], "actor": "mallory"}
    problem = only_problem(rows)
    assert (problem.chain, problem.seq, problem.audit_id) == ("w1", 3, "AUD-w1-000000003")
    assert problem.what.startswith("modified: hash mismatch")


def test_a_modified_detail_is_named():
    rows = build()
    rows[2] = {**rows[2], "details": {**rows[2]["details"], "mode": "force"}}
    assert only_problem(rows).what.startswith("modified")


def test_a_deleted_row_is_named():
    rows = build()
    del rows[3]
    problem = only_problem(rows)
    assert (problem.seq, problem.audit_id) == (5, "AUD-w1-000000005")
    assert problem.what == "deleted: seq 4 missing before seq 5"


def test_several_deleted_rows():
    rows = build()
    del rows[1:4]
    assert only_problem(rows).what == "deleted: seqs 2..4 missing before seq 5"


def test_a_deleted_row_covered_by_renumbering_is_named():
    """A forger deletes row 4, renumbers the rest and fixes their own hashes: row 4 no longer links."""
    rows = build()
    del rows[3]
    for i in range(3, len(rows)):
        seq = i + 1
        rows[i] = {**rows[i], "seq": seq, "audit_id": f"AUD-w1-{seq:09d}"}
        rows[i]["hash"] = record_hash(rows[i])
    problem = only_problem(rows)
    assert problem.seq == 4
    assert problem.what.startswith("deleted: seq 4 was not chained to the stored seq 3")


def test_swapped_rows_are_named():
    rows = build()
    rows[1], rows[2] = rows[2], rows[1]
    problem = only_problem(rows)
    assert (problem.seq, problem.audit_id) == (2, "AUD-w1-000000002")
    assert problem.what == "reordered: seq 2 is stored after seq 3"


def test_swapped_rows_renumbered_are_named():
    """Rows 2 and 3 trade places and numbers, each with its own hash fixed: row 3 links to row 1."""
    rows = build()
    second, third = rows[1], rows[2]
    rows[1] = {**third, "seq": 2, "audit_id": "AUD-w1-000000002", "prev_hash": rows[0]["hash"]}
    rows[1]["hash"] = record_hash(rows[1])
    rows[2] = {**second, "seq": 3, "audit_id": "AUD-w1-000000003"}
    rows[2]["hash"] = record_hash(rows[2])
    problem = only_problem(rows)
    assert problem.seq == 3
    assert problem.what == "reordered: seq 3 was chained after seq 1, not seq 2"


def test_a_row_with_the_wrong_audit_id_is_modified():
    rows = build()
    rows[4] = {**rows[4], "audit_id": "AUD-w1-000000009"}
    rows[4]["hash"] = record_hash(rows[4])
    problem = only_problem(rows)
    assert problem.seq == 5 and problem.what.startswith("modified: audit_id")


def test_the_earliest_problem_wins():
    rows = build()
    rows[4] = {**rows[4], "actor": "mallory"}
    rows[1], rows[2] = rows[2], rows[1]
    assert only_problem(rows).seq == 2


def test_two_chains_are_checked_independently():
    first, second = build(5, "w1"), build(4, "w2")
    interleaved = [row for pair in zip(first, second) for row in pair] + first[4:]
    assert verify_rows(interleaved).ok
    assert verify_rows(interleaved).summary() == "audit: 9 records in 2 chains verified"

    second[1] = {**second[1], "outcome": "failed"}
    del first[2]
    report = verify_rows(first + second)
    assert not report.ok
    assert [(p.chain, p.seq, p.what.split(":")[0]) for p in report.problems] == [
        ("w1", 4, "deleted"), ("w2", 2, "modified")]
    assert report.summary() == "audit: 2 of 2 chains broken"


def test_a_chain_that_lost_its_oldest_rows():
    rows = build(8)[3:]
    assert only_problem(rows).what == "deleted: seqs 1..3 missing before seq 4"
    assert verify_rows(rows, allow_aged_out=True).ok
    assert verify_rows(rows, anchors={"w1": (3, build(8)[2]["hash"])}).ok
    rows[2] = {**rows[2], "actor": "mallory"}
    assert only_problem(rows, allow_aged_out=True).seq == 6


def test_malformed_rows():
    rows = build()
    rows[2] = {"chain": "w1", "seq": 3}
    problem = only_problem(rows)
    assert problem.seq == 3 and problem.what.startswith("modified: malformed record")


def test_jsonl_file(tmp_path):
    rows = build(4)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n\n")
    assert verify_jsonl(path).ok
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(b"\n".join(orjson.dumps({"topic": "plugin.audit", "key": None, "value": r}) for r in rows))
    assert verify_jsonl(replay).records == 4
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows[:2]) + b"\nnot json\n")
    assert read_jsonl(path)[-1] == {"line": 3}
    assert not verify_jsonl(path).ok


class FakeClickHouse:
    database = "plugwatch"

    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    async def query(self, sql, parameters=None, *, readonly=False):
        self.calls.append((sql, parameters, readonly))
        return ["chain", "seq", "record"], [[r["chain"], r["seq"], orjson.dumps(r).decode()] for r in self.rows]


def test_load_audit_rows_decodes_the_record_column():
    rows = build(3)
    clickhouse = FakeClickHouse(rows)
    loaded = asyncio.run(load_audit_rows(clickhouse, chain="w1"))
    assert loaded == rows
    sql, parameters, readonly = clickhouse.calls[0]
    assert "FROM plugwatch.audit_log FINAL" in sql and "ORDER BY chain, seq" in sql
    assert parameters == {"chain": "w1"} and readonly


@pytest.mark.parametrize("record", ["{not json", "[]"])
def test_an_undecodable_record_column_is_a_malformed_row(record):
    clickhouse = FakeClickHouse([])

    async def query(sql, parameters=None, *, readonly=False):
        return ["chain", "seq", "record"], [["w1", 1, record]]

    clickhouse.query = query
    loaded = asyncio.run(load_audit_rows(clickhouse))
    assert only_problem(loaded).seq == 1
