"""The evidence store (DESIGN §7): bundles kept by their SHA-256, how long they stay, and retried writes.

``DirectoryStore`` keeps ``<root>/sha256/ab/cd/<hex>.jsonl.gz``. A write goes to a temporary file
that is read back and hashed before ``os.replace`` puts it in place, so a reader never sees half a
bundle and a bundle on disk always matches its name; a read hashes again (``EvidenceCorrupt``).
Writing the same bytes twice is a no-op, which makes redelivered snapshot requests harmless.

A failed evidence write must never hold up a suspension: ``put_with_retry`` retries with backoff,
then hands the error to ``on_failure`` (the caller raises an alert) and returns None.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MIN_RETENTION_DAYS = 180
DEFAULT_SEVERITY_DAYS = {"critical": 400, "high": 365}
SUFFIX = ".jsonl.gz"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_MS = 3_600_000


class EvidenceCorrupt(Exception):
    """A stored bundle whose bytes no longer hash to its address."""


class EvidenceNotFound(LookupError):
    """No bundle under that address (never stored, expired or deleted)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    sha256: str
    size: int
    uri: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_address(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"an evidence address is 64 lowercase hex digits (SHA-256), got {sha256!r}")
    return sha256


# Retention ---------------------------------------------------------------------------------------


class RetentionError(ValueError):
    """evidence_retention.yaml is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Retention:
    """Days a bundle is kept, by tenant and severity (config/plugins/evidence_retention.yaml).

    Lookup: the tenant's days for the severity, else the tenant's ``default_days``, else the global
    days for the severity, else the global ``default_days``. Nothing may go below 180 days.
    """

    default_days: int = MIN_RETENTION_DAYS
    severity_days: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_DAYS))
    tenants: Mapping[str, tuple[int | None, Mapping[str, int]]] = field(default_factory=dict)

    def days_for(self, tenant_id: str | None, severity: str | None) -> int:
        sev = (severity or "").strip().lower()
        tenant_default, tenant_severity = self.tenants.get(tenant_id or "", (None, {}))
        if sev in tenant_severity:
            return tenant_severity[sev]
        if tenant_default is not None:
            return tenant_default
        return self.severity_days.get(sev, self.default_days)

    def expires_at(self, tenant_id: str | None, severity: str | None, created_at_ms: int) -> int:
        return created_at_ms + self.days_for(tenant_id, severity) * DAY_MS

    @property
    def longest_days(self) -> int:
        values = [self.default_days, *self.severity_days.values()]
        for tenant_default, tenant_severity in self.tenants.values():
            values.extend([tenant_default or 0, *tenant_severity.values()])
        return max(values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Retention:
        """The retention in ``path``; a missing or empty file gives the defaults (critical 400 days,
        high 365, everything else 180)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RetentionError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "evidence retention") -> Retention:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise RetentionError(f"{source}: expected a mapping with default_days, severity, tenants")
        _no_unknown(data, {"default_days", "severity", "tenants"}, source, "")
        default = _days(data.get("default_days", MIN_RETENTION_DAYS), source, "default_days")
        severity = {**DEFAULT_SEVERITY_DAYS, **_severity_map(data.get("severity"), source, "severity")}
        tenants_raw = data.get("tenants") or {}
        if not isinstance(tenants_raw, Mapping):
            raise RetentionError(f"{source}: tenants must map a tenant id to its overrides")
        tenants: dict[str, tuple[int | None, Mapping[str, int]]] = {}
        for tenant, entry in tenants_raw.items():
            where = f"tenants.{tenant}"
            if not isinstance(entry, Mapping):
                raise RetentionError(f"{source}: {where} must be a mapping with default_days and/or severity")
            _no_unknown(entry, {"default_days", "severity"}, source, f"{where}.")
            tenant_default = _days(entry["default_days"], source, f"{where}.default_days") \
                if entry.get("default_days") is not None else None
            tenants[str(tenant)] = (tenant_default, _severity_map(entry.get("severity"), source, f"{where}.severity"))
        return cls(default, severity, tenants)


def _no_unknown(data: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise RetentionError(f"{source}: unknown field {prefix}{unknown[0]} (allowed: {', '.join(sorted(allowed))})")


def _days(value: Any, source: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RetentionError(f"{source}: {where} must be a whole number of days, got {value!r}")
    if value < MIN_RETENTION_DAYS:
        raise RetentionError(f"{source}: {where} is {value} days, below the {MIN_RETENTION_DAYS}-day minimum")
    return value


def _severity_map(value: Any, source: str, where: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RetentionError(f"{source}: {where} must map a severity (critical, high, ...) to days")
    return {str(k).lower(): _days(v, source, f"{where}.{k}") for k, v in value.items()}


# Stores ------------------------------------------------------------------------------------------


class EvidenceStore(Protocol):
    async def put(self, data: bytes) -> StoredObject: ...

    async def get(self, sha256: str) -> bytes: ...

    async def delete(self, sha256: str) -> bool: ...

    async def expire(self, now_ms: int, retention: Retention) -> list[str]: ...


class DirectoryStore:
    """Bundles as files under ``root`` (the default store; one directory may serve many workers)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path_of(self, sha256: str) -> Path:
        _check_address(sha256)
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / f"{sha256}{SUFFIX}"

    async def put(self, data: bytes) -> StoredObject:
        return await asyncio.to_thread(self._put, bytes(data))

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self._get, sha256)

    async def delete(self, sha256: str) -> bool:
        """Remove a bundle; False when there was none."""
        return await asyncio.to_thread(self._delete, sha256)

    async def expire(self, now_ms: int, retention: Retention) -> list[str]:
        """Delete the bundles past their retention (tenant, severity and created_at from each
        bundle's header); returns their addresses. Bundles whose header cannot be read are kept
        for the longest retention configured, counted from the file's modification time."""
        return await asyncio.to_thread(self._expire, now_ms, retention)

    # Blocking parts, run in a thread. ----------------------------------------------------------

    def _stored(self, path: Path, sha256: str, size: int) -> StoredObject:
        return StoredObject(sha256, size, path.resolve().as_uri())

    def _put(self, data: bytes) -> StoredObject:
        sha256 = sha256_hex(data)
        path = self.path_of(sha256)
        try:
            if sha256_hex(path.read_bytes()) == sha256:
                return self._stored(path, sha256, len(data))
            log.error("evidence %s on disk does not match its address; writing it again", sha256)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=SUFFIX, dir=path.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            written = sha256_hex(temp.read_bytes())
            if written != sha256:
                raise OSError(f"evidence {sha256} read back as {written} from {temp}: the disk corrupted the write")
            os.chmod(temp, 0o444)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return self._stored(path, sha256, len(data))

    def _get(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EvidenceNotFound(f"no evidence bundle {sha256} in {self.root}") from None
        actual = sha256_hex(data)
        if actual != sha256:
            raise EvidenceCorrupt(f"evidence bundle {path} hashes to {actual}, not {sha256}: it was altered")
        return data

    def _delete(self, sha256: str) -> bool:
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def _expire(self, now_ms: int, retention: Retention) -> list[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return []
        expired = []
        for path in sorted(base.glob("*/*/*")):
            name = path.name
            if name.startswith(_TEMP_PREFIX):
                # Left by a write that crashed; a write in progress finishes within the hour.
                if now_ms - _mtime_ms(path) > _STALE_TEMP_MS:
                    path.unlink(missing_ok=True)
                continue
            if not name.endswith(SUFFIX):
                continue
            sha256 = name[: -len(SUFFIX)]
            if not _SHA256.fullmatch(sha256):
                continue
            header = _header_of(path)
            if header is None:
                expires = _mtime_ms(path) + retention.longest_days * DAY_MS
            else:
                expires = retention.expires_at(header.get("tenant_id"), header.get("severity"), header["created_at"])
            if expires <= now_ms and self._delete(sha256):
                expired.append(sha256)
        return expired


def _mtime_ms(path: Path) -> int:
    try:
        return int(path.stat().st_mtime * 1000)
    except FileNotFoundError:
        return int(time.time() * 1000)


def _header_of(path: Path) -> dict[str, Any] | None:
    """The first line of a bundle, without reading the rest; None when it is not a bundle header."""
    try:
        with gzip.open(path, "rb") as bundle:
            header = orjson.loads(bundle.readline(1 << 20))
    except (OSError, EOFError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    created_at = header.get("created_at")
    if not isinstance(created_at, int) or isinstance(created_at, bool):
        return None
    return header


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Retried writes ----------------------------------------------------------------------------------


async def put_with_retry(
    store: EvidenceStore,
    data: bytes,
    *,
    attempts: int = 5,
    first_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
    on_failure: Callable[[Exception], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> StoredObject | None:
    """``store.put(data)``, retried ``attempts`` times with doubling delays; None after the last
    failure, once ``on_failure(last error)`` has run. Never raises (except cancellation), so the
    suspension that asked for the evidence goes on whatever happens to the store."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    delay = first_delay_s
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await store.put(data)
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, the suspension goes on
            error = exc
            if attempt == attempts:
                break
            log.warning("evidence write failed (attempt %d of %d: %s: %s); retrying in %.1f s",
                        attempt, attempts, type(exc).__name__, exc, delay)
            await sleep(delay)
            delay = min(delay * 2, max_delay_s)
    assert error is not None
    log.error("evidence write failed %d times, giving up: %s: %s", attempts, type(error).__name__, error)
    if on_failure is not None:
        try:
            await on_failure(error)
        except Exception as exc:  # noqa: BLE001 - a failing alert must not fail the suspension either
            log.error("evidence write failure handler failed: %s: %s", type(exc).__name__, exc)
    return None
