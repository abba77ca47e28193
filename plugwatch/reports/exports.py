"""Signed, expiring export links (DESIGN §8): a plugin's masked telemetry over a time range, fetched later.

The link carries everything: the export id is the base64url of the spec's canonical JSON, and the
signature is an HMAC-SHA256 over ``export_id + "." + expires``. Any worker holding the same key can
serve it, also after a restart, with no table of issued exports to consult.

``verify`` checks the signature before it decodes anything, so an attacker's bytes never reach the JSON
parser, and refuses with ``ExportRefused("tampered" | "expired")``; the caller audits the refusal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

EXPORT_PATH = "/internal/debug/exports/"
SIGNALS = ("logs", "traces", "metrics")
MAX_EXPORT_ID_CHARS = 2048
MIN_TTL_S = 1
MAX_TTL_S = 7 * 24 * 3600
MIN_KEY_BYTES = 16

_SIG = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[1-9][0-9]{0,15}")  # canonical decimal only: "0123" or "+123" would sign the same
_EXPORT_ID = re.compile(r"[A-Za-z0-9_-]+")

Refusal = Literal["tampered", "expired"]


class ExportRefused(Exception):
    """An export link that must not be served; ``reason`` is ``"tampered"`` or ``"expired"``."""

    def __init__(self, reason: Refusal, message: str):
        super().__init__(f"export link refused ({reason}): {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """What an export hands out: one plugin's masked ``signals`` between ``from_ms`` and ``to_ms``."""

    tenant_id: str
    plugin_id: str
    from_ms: int
    to_ms: int
    signals: tuple[str, ...]
    created_by: str
    reason: str
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self) -> None:
        for name in ("tenant_id", "plugin_id", "created_by", "reason", "nonce"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"export {name} must be a non-empty string")
        for name in ("from_ms", "to_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"export {name} must be epoch milliseconds (an int >= 0)")
        if self.from_ms > self.to_ms:
            raise ValueError(f"export range is backwards: from_ms {self.from_ms} > to_ms {self.to_ms}")
        if not isinstance(self.signals, tuple) or not self.signals:
            raise ValueError(f"export signals must be a non-empty tuple of {SIGNALS}")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown or len(set(self.signals)) != len(self.signals):
            raise ValueError(f"export signals must be distinct names out of {SIGNALS}, got {self.signals!r}")

    def canonical_json(self) -> bytes:
        """Sorted keys, no spaces: the same spec always gives the same bytes, so the same export id."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> ExportSpec:
        """The inverse of ``canonical_json``; ``ValueError`` when the JSON is not a spec."""
        try:
            decoded: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"export id is not JSON: {exc}") from None
        if not isinstance(decoded, dict) or set(decoded) != set(cls.__dataclass_fields__):
            raise ValueError("export id is not an export spec (wrong or missing fields)")
        if not isinstance(decoded["signals"], list):
            raise ValueError("export signals must be a list")
        return cls(**{**decoded, "signals": tuple(decoded["signals"])})


@dataclass(frozen=True, slots=True)
class SignedExport:
    export_id: str
    expires_at: int
    sig: str
    path: str


class ExportSigner:
    """Issues and checks export links with one HMAC key; ``clock`` returns epoch milliseconds."""

    def __init__(self, key: bytes, clock: Callable[[], int]):
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the export signing key must be at least {MIN_KEY_BYTES} random bytes")
        self._key = key
        self._clock = clock

    def issue(self, spec: ExportSpec, ttl_s: int) -> SignedExport:
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"export ttl must be {MIN_TTL_S} s .. {MAX_TTL_S} s (7 days), got {ttl_s}")
        export_id = base64.urlsafe_b64encode(spec.canonical_json()).rstrip(b"=").decode("ascii")
        if len(export_id) > MAX_EXPORT_ID_CHARS:
            raise ValueError(
                f"export spec too large for a link ({len(export_id)} > {MAX_EXPORT_ID_CHARS} chars): shorten the reason"
            )
        expires_at = int(self._clock()) + int(ttl_s * 1000)
        sig = self._sign(export_id, str(expires_at))
        path = f"{EXPORT_PATH}{export_id}?expires={expires_at}&sig={sig}"
        return SignedExport(export_id=export_id, expires_at=expires_at, sig=sig, path=path)

    def verify(self, export_id: str, expires: int | str | None, sig: str | None) -> ExportSpec:
        """The spec of a genuine, unexpired link; otherwise ``ExportRefused`` (tampered before expired)."""
        if isinstance(expires, int) and not isinstance(expires, bool):
            expires = str(expires)
        if not isinstance(export_id, str) or not 0 < len(export_id) <= MAX_EXPORT_ID_CHARS:
            raise ExportRefused("tampered", "export id missing or too long")
        if not _EXPORT_ID.fullmatch(export_id):
            raise ExportRefused("tampered", "export id is not base64url")
        if not isinstance(expires, str) or not _EXPIRES.fullmatch(expires):
            raise ExportRefused("tampered", "expires is missing or not epoch milliseconds")
        if not isinstance(sig, str) or not _SIG.fullmatch(sig):
            raise ExportRefused("tampered", "signature missing or not 64 lowercase hex digits")
        if not hmac.compare_digest(self._sign(export_id, expires), sig):
            raise ExportRefused("tampered", "signature does not match")
        try:
            raw = base64.urlsafe_b64decode(export_id + "=" * (-len(export_id) % 4))
            spec = ExportSpec.from_json(raw)
        except (binascii.Error, ValueError, TypeError) as exc:
            # Signed by a holder of our key yet not a spec: treat as forged rather than trust it.
            raise ExportRefused("tampered", f"export id does not decode to a spec: {exc}") from None
        now = int(self._clock())
        if now >= int(expires):
            raise ExportRefused("expired", f"link expired {now - int(expires)} ms ago; ask for a new export")
        return spec

    def _sign(self, export_id: str, expires: str) -> str:
        message = f"{export_id}.{expires}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
