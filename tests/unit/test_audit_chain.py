"""Hash-chained audit records: building a chain, and catching each kind of tampering."""

import hashlib
import random
from itertools import pairwise

import orjson
import pytest

from plugwatch.audit.chain import (
    GENESIS_HASH,
    AuditChain,
    AuditRecord,
    record_hash,
    verify_chain,
)

BASE = 1_795_000_000_000


class Clock:
    def __init__(self, now: int = BASE):
        self.now = now

    def __call__(self) -> int:
        self.now += 250
        return self.now


def build(n: int = 6, chain: str = "w1") -> list[dict]:
    audit = AuditChain(chain, Clock())
    actions = ["export.create", "export.download", "export.refused", "report.view"]
    return [
        audit.append(
            actions[i % len(actions)],
            "alice@ops",
            tenant_id="tenant-acme",
            plugin_id="pay-gateway",
            target=f"EXP-{i}",
            outcome="refused" if actions[i % len(actions)] == "export.refused" else "ok",
            details={"reason": "expired", "n": i, "nested": {"b": 1, "a": [1, 2]}},
        ).as_dict()
        for i in range(n)
    ]


def rehash(record: dict) -> dict:
    """What a careful forger does after editing a row: make its own hash match again."""
    return {**record, "hash": record_hash(record)}


def test_records_link_and_verify():
    records = build()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev_hash"] == GENESIS_HASH
    assert records[0]["audit_id"] == "AUD-w1-000000001"
    assert all(b["prev_hash"] == a["hash"] for a, b in pairwise(records))
    assert verify_chain(records).ok
    assert verify_chain(records).checked == 6


def test_hash_is_sha256_of_canonical_json_without_hash():
    record = build(1)[0]
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert b" " not in canonical.replace(b"alice@ops", b"")
    assert record["hash"] == hashlib.sha256(canonical).hexdigest()


def test_dict_round_trip_and_clickhouse_string_details():
    record = build(1)[0]
    assert AuditRecord.from_dict(record).as_dict() == record
    from_table = {**record, "details": orjson.dumps(record["details"]).decode(), "inserted_date": "2026-11-24"}
    assert AuditRecord.from_dict(from_table).as_dict() == record
    assert verify_chain([from_table]).ok


def test_head_resumes_a_chain_after_restart():
    first = AuditChain("w1", Clock())
    a = first.append("report.view", "bob", tenant_id="t", plugin_id="p", target="RPT-1")
    resumed = AuditChain("w1", Clock(), head=first.head)
    b = resumed.append("export.create", "bob", tenant_id="t", plugin_id="p", target="EXP-1")
    assert (b.seq, b.prev_hash) == (2, a.hash)
    assert verify_chain([a.as_dict(), b.as_dict()]).ok


def test_details_are_detached_and_json_safe():
    details = {"signals": ("logs", "traces")}
    audit = AuditChain("w1", Clock())
    record = audit.append("export.create", "u", tenant_id="t", plugin_id="p", target="x", details=details)
    details["signals"] = ("changed",)
    assert record.details == {"signals": ["logs", "traces"]}
    with pytest.raises(ValueError, match="JSON-safe"):
        audit.append("x.y", "u", tenant_id=None, plugin_id=None, target=None, details={"o": object()})
    with pytest.raises(ValueError, match="outcome"):
        audit.append("x.y", "u", tenant_id=None, plugin_id=None, target=None, outcome="maybe")
    assert audit.head == (1, record.hash)  # a refused append does not use up a seq


def test_shuffled_storage_order_is_not_tampering():
    records = build(8) + build(5, chain="w2")
    random.Random(7).shuffle(records)
    result = verify_chain(records)
    assert result.ok and result.checked == 13


def test_duplicate_delivery_counts_once():
    records = build()
    assert verify_chain(records + [dict(records[2])]).ok


@pytest.mark.parametrize("field, value", [("actor", "mallory"), ("outcome", "ok"), ("ts", BASE), ("target", None)])
def test_edited_field_detected(field, value):
    records = build()
    records[2] = {**records[2], field: value}
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq, result.chain) == (False, 3, "w1")
    assert "altered" in result.problem and result.checked == 2


def test_edited_nested_detail_detected():
    records = build()
    records[4] = {**records[4], "details": {**records[4]["details"], "reason": "manual"}}
    assert verify_chain(records).first_bad_seq == 5


def test_edited_and_rehashed_row_breaks_the_next_link():
    records = build()
    records[2] = rehash({**records[2], "outcome": "ok", "actor": "mallory"})
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "does not link" in result.problem


def test_deleted_row_detected():
    records = build()
    del records[3]
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "missing" in result.problem


def test_deleted_first_row_detected():
    result = verify_chain(build()[1:])
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "1..1 are missing" in result.problem


def test_deleted_row_with_renumbered_successors_detected():
    records = build()
    del records[3]
    for i in range(3, len(records)):
        records[i] = rehash({**records[i], "seq": i + 1, "audit_id": f"AUD-w1-{i + 1:09d}"})
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "does not link" in result.problem


def test_reordered_rows_detected():
    # swap the contents of rows 3 and 4, keeping the positions' seq and ids, hashes recomputed
    records = build()
    r3, r4 = records[2], records[3]
    records[2] = rehash({**r4, "seq": 3, "audit_id": r3["audit_id"], "prev_hash": r3["prev_hash"]})
    records[3] = rehash({**r3, "seq": 4, "audit_id": r4["audit_id"], "prev_hash": r4["prev_hash"]})
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_swapped_seq_numbers_detected():
    records = build()
    records[2], records[3] = {**records[2], "seq": 4}, {**records[3], "seq": 3}
    assert verify_chain(records).first_bad_seq == 3


def test_wrong_prev_hash_detected():
    records = build()
    records[1] = rehash({**records[1], "prev_hash": "f" * 64})
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "prev_hash" in result.problem


def test_wrong_genesis_detected():
    records = build()
    records[0] = rehash({**records[0], "prev_hash": "1" * 64})
    assert verify_chain(records).first_bad_seq == 1


def test_seq_gap_detected():
    records = build()
    records[5] = rehash({**records[5], "seq": 7, "audit_id": "AUD-w1-000000007"})
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 7)
    assert "6..6 are missing" in result.problem


def test_two_different_rows_with_one_seq_detected():
    records = build()
    records.append(rehash({**records[2], "actor": "mallory"}))
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "two different" in result.problem


def test_wrong_audit_id_detected():
    records = build()
    records[2] = rehash({**records[2], "audit_id": "AUD-w1-000000009"})
    assert "audit_id" in verify_chain(records).problem


def test_one_bad_chain_among_several_is_named():
    records = build(4, chain="w1") + build(4, chain="w2")
    records[6] = {**records[6], "actor": "mallory"}
    result = verify_chain(records)
    assert (result.ok, result.chain, result.first_bad_seq, result.checked) == (False, "w2", 3, 6)


def test_malformed_records_reported():
    records = build()
    del records[2]["hash"]
    result = verify_chain(records)
    assert not result.ok and result.first_bad_seq == 3 and "lacks hash" in result.problem
    assert not verify_chain([{**build(1)[0], "seq": "1"}]).ok
    assert not verify_chain(["not a record"]).ok


def test_anchor_lets_a_chain_start_after_rows_aged_out():
    records = build(8)
    anchor = (records[2]["seq"], records[2]["hash"])
    assert not verify_chain(records[3:]).ok
    assert verify_chain(records[3:], anchors={"w1": anchor}).ok
    assert not verify_chain(records[4:], anchors={"w1": anchor}).ok
    assert not verify_chain(records[3:], anchors={"w1": (3, "e" * 64)}).ok


def test_bad_chain_names_and_heads_rejected():
    for name in ("", "a b", "x" * 65, None):
        with pytest.raises(ValueError):
            AuditChain(name, Clock())
    with pytest.raises(ValueError):
        AuditChain("w1", Clock(), head=(3, "not-hex"))
