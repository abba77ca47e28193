"""``plugwatch audit verify --file`` as a user runs it: exit 0 on an intact export, 1 naming the bad row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from plugwatch.audit.chain import AuditChain

REPO = Path(__file__).resolve().parents[2]


def write_export(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def records() -> list[dict]:
    now = iter(range(1_795_000_000_000, 1_795_000_100_000, 100))
    chains = [AuditChain(name, lambda: next(now)) for name in ("w1", "w2")]
    return [
        chains[i % 2].append("export.create", "alice@ops", tenant_id="acme", plugin_id="pay", target=f"EXP-{i}",
                             details={"n": i}).as_dict()
        for i in range(10)
    ]


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plugwatch", "audit", "verify", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


def test_an_intact_export_verifies(tmp_path):
    result = verify("--file", str(write_export(tmp_path / "audit.jsonl", records())))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "audit: 10 records in 2 chains verified"


def test_a_tampered_export_names_the_row(tmp_path):
    tampered = records()
    tampered[4] = {**tampered[4], "actor": "mallory"}  # w1 seq 3
    path = write_export(tmp_path / "audit.jsonl", tampered)
    result = verify("--file", str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["w1", "seq", "3", "AUD-w1-000000003"]
    assert "modified: hash mismatch" in lines[0]
    assert lines[-1] == "audit: 1 of 2 chains broken"

    only_w2 = verify("--file", str(path), "--chain", "w2")
    assert only_w2.returncode == 0 and "5 records in 1 chains" in only_w2.stdout
    assert verify("--file", str(path), "--chain", "w9").returncode == 1
