"""Evidence snapshots (DESIGN §7): masked logs, config and flags, metrics and version info, bundled
(``bundle.py``), stored by SHA-256 (``store.py``) under an ``EVD-YYYYMMDD-NNNNNN`` number
(``numbers.py``), recorded on ``plugin.evidence`` and in ClickHouse ``evidence``.
"""

from plugwatch.evidence.bundle import SCHEMA, BundleError, build_bundle, read_bundle
from plugwatch.evidence.numbers import (
    EvidenceNumbers,
    evidence_record,
    evidence_row,
    evidence_sql,
    format_evidence_id,
    parse_evidence_id,
)
from plugwatch.evidence.store import (
    DirectoryStore,
    EvidenceCorrupt,
    EvidenceNotFound,
    EvidenceStore,
    Retention,
    RetentionError,
    StoredObject,
    put_with_retry,
)

__all__ = [
    "SCHEMA",
    "BundleError",
    "DirectoryStore",
    "EvidenceCorrupt",
    "EvidenceNotFound",
    "EvidenceNumbers",
    "EvidenceStore",
    "Retention",
    "RetentionError",
    "StoredObject",
    "build_bundle",
    "evidence_record",
    "evidence_row",
    "evidence_sql",
    "format_evidence_id",
    "parse_evidence_id",
    "put_with_retry",
    "read_bundle",
]
