"""Replacement tokens: full, partial (last four digits) and keyed-hash styles.

Tokens never contain a quote, a backslash or a run of digits long enough for a detector, so a
token can replace bytes inside a JSON string and the verifier never mistakes a token for a leak.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from plugwatch.masking.validators import only_digits

TOKEN_PREFIX = b"[MASKED:"


class Tokenizer:
    def __init__(self, hmac_key: bytes) -> None:
        if not hmac_key:
            raise ValueError("the masking HMAC key is empty; set masking_key / PLUGWATCH_MASKING_KEY")
        self._key = hmac_key
        self._full: dict[str, bytes] = {}

    def full(self, kind: str) -> bytes:
        token = self._full.get(kind)
        if token is None:
            token = self._full[kind] = b"[MASKED:" + kind.encode() + b"]"
        return token

    def hashed(self, kind: str, value: bytes) -> bytes:
        """Same value -> same token in every event and process sharing the key; base32 letters
        and digits 2-7 only, so no detector fires on it."""
        digest = hmac.new(self._key, value, hashlib.sha256).digest()[:10]
        return b"[MASKED:" + kind.encode() + b":" + base64.b32encode(digest).lower() + b"]"

    def partial(self, kind: str, value: bytes) -> bytes:
        digits = only_digits(value)
        if len(digits) < 8:
            return self.full(kind)
        return b"[MASKED:" + kind.encode() + b":****" + digits[-4:] + b"]"

    def token(self, kind: str, style: str, value: bytes) -> bytes:
        if style == "full":
            return self.full(kind)
        if style == "partial":
            return self.partial(kind, value)
        return self.hashed(kind, value)
