"""Hash-chained audit records (DESIGN §7), pure: building them and verifying a stored chain.

Each writer keeps its own chain (``chain`` names it; one writer appends to one chain, so no two
processes race for the next ``seq``). A record's ``hash`` is the SHA-256 of the canonical JSON of all
its other fields, ``prev_hash`` included, so changing any field of any row, deleting a row or moving
one breaks the link from the next row. What a chain alone cannot show is the loss of its newest rows:
compare the head against one kept elsewhere (the writer's last published ``head``) for that.

Rows past the retention TTL disappear from the start of a chain; ``verify_chain`` takes the last
known record before them as an anchor.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
OUTCOMES = ("ok", "refused", "failed")

_CHAIN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HASH = re.compile(r"[0-9a-f]{64}")


def audit_id_of(chain: str, seq: int) -> str:
    return f"AUD-{chain}-{seq:09d}"


def canonical_json(value: Any) -> bytes:
    """Sorted keys at every depth, no spaces, UTF-8: the bytes that are hashed."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of every field of ``record`` except ``hash`` itself."""
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    chain: str
    seq: int
    audit_id: str
    ts: int
    action: str
    actor: str
    tenant_id: str | None
    plugin_id: str | None
    target: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The record as it goes on ``plugin.audit`` and into ``audit_log``."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"details": _json_copy(self.details)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """A record from the topic or ``audit_log``; ``ValueError`` naming the bad field.

        ``details`` may arrive as a JSON string (a ClickHouse String column). Other keys (columns the
        table adds) are ignored: they are not part of the record and not covered by its hash.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an audit record must be a mapping, got {type(data).__name__}")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"audit record lacks {', '.join(missing)}")
        values = {f.name: data[f.name] for f in fields(cls)}
        if isinstance(values["details"], (str, bytes)):
            try:
                values["details"] = orjson.loads(values["details"])
            except orjson.JSONDecodeError:
                raise ValueError("audit record details is not JSON") from None
        _check(values)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    chain: str | None = None


class AuditChain:
    """Appends records to one writer's chain; ``head`` is ``(seq, hash)`` of its last record.

    Give the stored head when a writer restarts, so its next record links to the last one written.
    """

    def __init__(self, chain: str, clock: Callable[[], int], head: tuple[int, str] | None = None):
        if not isinstance(chain, str) or not _CHAIN.fullmatch(chain):
            raise ValueError(f"audit chain name must match {_CHAIN.pattern}, got {chain!r}")
        seq, last_hash = head if head is not None else (0, GENESIS_HASH)
        if not isinstance(seq, int) or seq < 0 or not isinstance(last_hash, str) or not _HASH.fullmatch(last_hash):
            raise ValueError(f"audit chain head must be (seq >= 0, 64 hex digits), got {head!r}")
        self.chain = chain
        self._clock = clock
        self._head = (seq, last_hash)

    @property
    def head(self) -> tuple[int, str]:
        return self._head

    def append(
        self,
        action: str,
        actor: str,
        *,
        tenant_id: str | None,
        plugin_id: str | None,
        target: str | None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        last_seq, last_hash = self._head
        seq = last_seq + 1
        values: dict[str, Any] = {
            "chain": self.chain,
            "seq": seq,
            "audit_id": audit_id_of(self.chain, seq),
            "ts": int(self._clock()),
            "action": action,
            "actor": actor,
            "tenant_id": tenant_id,
            "plugin_id": plugin_id,
            "target": target,
            "outcome": outcome,
            "details": _json_copy(dict(details or {})),
            "prev_hash": last_hash,
        }
        values["hash"] = record_hash(values)
        _check(values)
        record = AuditRecord(**values)
        self._head = (seq, record.hash)
        return record


def verify_chain(
    records: Iterable[Mapping[str, Any]],
    *,
    anchors: Mapping[str, tuple[int, str]] | None = None,
) -> VerifyResult:
    """Check every chain among ``records`` (any order, chains mixed); the first problem found wins.

    A chain must start at seq 1 on the genesis hash, or right after its anchor ``(seq, hash)`` -- the
    last record known good before rows aged out. Identical copies of a record (at-least-once delivery
    before ClickHouse merged them) count once; two different records with one seq are tampering.
    """
    anchors = anchors or {}
    by_chain: dict[str, dict[int, AuditRecord]] = defaultdict(dict)
    checked = 0
    for data in records:
        try:
            record = AuditRecord.from_dict(data)
        except ValueError as exc:
            seq = data.get("seq") if isinstance(data, Mapping) else None
            chain = data.get("chain") if isinstance(data, Mapping) else None
            return VerifyResult(
                False, checked, seq if isinstance(seq, int) else None, f"malformed record: {exc}", _str_or_none(chain)
            )
        seen = by_chain[record.chain].get(record.seq)
        if seen is not None and seen != record:
            return VerifyResult(
                False, checked, record.seq, f"two different records carry seq {record.seq}", record.chain
            )
        by_chain[record.chain][record.seq] = record

    for chain in sorted(by_chain):
        expected_seq, expected_prev = anchors.get(chain, (0, GENESIS_HASH))
        expected_seq += 1
        for seq in sorted(by_chain[chain]):
            record = by_chain[chain][seq]
            problem = _link_problem(record, expected_seq, expected_prev)
            if problem:
                return VerifyResult(False, checked, record.seq, problem, chain)
            checked += 1
            expected_seq, expected_prev = record.seq + 1, record.hash
    return VerifyResult(True, checked)


def _link_problem(record: AuditRecord, expected_seq: int, expected_prev: str) -> str | None:
    if record_hash(record.as_dict()) != record.hash:
        return f"record {record.seq} was altered: its hash does not match its contents"
    if record.audit_id != audit_id_of(record.chain, record.seq):
        return f"record {record.seq} carries audit_id {record.audit_id!r}, not its own"
    if record.seq != expected_seq:
        if record.seq < expected_seq:
            return f"record {record.seq} precedes the anchor at seq {expected_seq - 1}"
        return f"seq gap: records {expected_seq}..{record.seq - 1} are missing (deleted?)"
    if record.prev_hash != expected_prev:
        previous = record.seq - 1
        return f"record {record.seq} does not link to record {previous} (prev_hash differs: rows moved or replaced)"
    return None


def _check(values: Mapping[str, Any]) -> None:
    """Types of a record's fields; ``ValueError`` naming the first bad one."""
    if not isinstance(values["chain"], str) or not _CHAIN.fullmatch(values["chain"]):
        raise ValueError(f"chain must match {_CHAIN.pattern}")
    for name in ("seq", "ts"):
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "seq" else 0):
            raise ValueError(f"{name} must be a positive int")
    for name in ("audit_id", "action", "actor"):
        if not isinstance(values[name], str) or not values[name]:
            raise ValueError(f"{name} must be a non-empty string")
    for name in ("tenant_id", "plugin_id", "target"):
        if values[name] is not None and not isinstance(values[name], str):
            raise ValueError(f"{name} must be a string or null")
    if values["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {values['outcome']!r}")
    if not isinstance(values["details"], dict):
        raise ValueError("details must be a JSON object")
    for name in ("prev_hash", "hash"):
        if not isinstance(values[name], str) or not _HASH.fullmatch(values[name]):
            raise ValueError(f"{name} must be 64 lowercase hex digits")


def _json_copy(details: dict[str, Any]) -> dict[str, Any]:
    """A detached copy in JSON's own types (tuples become lists), so a round trip hashes the same."""
    try:
        return orjson.loads(canonical_json(details))
    except TypeError as exc:
        raise ValueError(f"audit details must be JSON-safe (str keys, JSON values): {exc}") from None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
