"""MaskingEngine: mask any JSON-like value, verify the result, fail closed.

The fast path masks an event as its compact JSON text: ``orjson.dumps`` once, one trigger scan
over the bytes, handlers only where a trigger fired, one verifier scan over the output,
``orjson.loads`` back. While most events come out unchanged the two scans are one: the
verifier's triggers run in the masker's pass and are read only if the output is that very
buffer (see ``_mask_and_check``). Values orjson cannot serialise, or output that would not
parse, take the tree path: the same masker applied string by string. An exception in either
path drops the value (``MaskStats.dropped``) rather than pass anything through.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from plugwatch.masking.detectors import Masker
from plugwatch.masking.keys import _ENTROPY
from plugwatch.masking.rules import Rules, load_rules, rules_path
from plugwatch.masking.scanner import PairScanner
from plugwatch.masking.stats import MaskStats
from plugwatch.masking.structure import Structure
from plugwatch.masking.styles import Tokenizer
from plugwatch.masking.verifier import Verifier

KEY_ENV = "PLUGWATCH_MASKING_KEY"
DEV_KEY = b"plugwatch-dev-masking-key"  # the settings default; production sets masking_key
VIOLATION = "[MASKED:violation]"
_VIOLATION_JSON = b'"[MASKED:violation]"'
_BYTES_CAP = 262_144
# The shared scan costs a little more than the masker's alone and saves the verifier's scan only
# for unchanged buffers: worth it while more than about a third come out unchanged (measured on
# the bench and ingest corpora), so switch at one half, averaged over the last few dozen buffers.
_PAIR_ABOVE = 0.5
_PAIR_WEIGHT = 1 / 32
_COPY = object()


class MaskingEngine:
    """Compiled masking rules. Pure (no I/O after construction) and safe to share across threads.

    ``on_violation(n)`` is called with the number of values the verifier replaced in one call, so
    a caller can count ``debug_masking_violation_total`` without this package importing metrics.
    """

    def __init__(self, rules: Rules, hmac_key: bytes = DEV_KEY, on_violation: Callable[[int], None] | None = None,
                 use_hyperscan: bool | None = None) -> None:
        self.rules = rules
        self.tokens = Tokenizer(hmac_key if isinstance(hmac_key, bytes) else str(hmac_key).encode())
        self.masker = Masker(rules, self.tokens, use_hyperscan)
        self.verifier = Verifier(rules, self.masker.context, use_hyperscan)
        self.on_violation = on_violation
        self.backend = self.masker.scanner.backend
        self._pair: PairScanner | bool | None = None  # compiled on first use; False if it cannot be
        # Running share of buffers the masker left unchanged; decides whether one shared scan
        # pays (see _mask_and_check). Only speed depends on it, never the output.
        self._unchanged = 1.0 if self.backend == "hyperscan" else 0.0

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, hmac_key: bytes = DEV_KEY,
                  on_violation: Callable[[int], None] | None = None, use_hyperscan: bool | None = None) -> MaskingEngine:
        """Rules from ``path`` (None: $PLUGWATCH_MASKING_RULES, else config/security/data_masking_rules.yaml)."""
        return cls(load_rules(path), hmac_key, on_violation, use_hyperscan)

    # Public API ---------------------------------------------------------------------------------

    def mask(self, value: Any) -> tuple[Any, MaskStats]:
        """A masked deep copy of ``value`` (the input is never mutated) and what was found."""
        stats = MaskStats()
        try:
            if isinstance(value, (dict, list)):
                return self._masked_object(value, stats)[1], stats
            return self._tree(value, stats, False), stats
        except Exception:
            return self._drop(value, stats)

    def mask_json(self, value: dict[str, Any] | list[Any]) -> tuple[bytes, Any, MaskStats]:
        """``mask`` for a caller that writes the result as JSON: the masked value's compact JSON,
        the masked value, and what was found. When nothing was masked the value returned is
        ``value`` itself (not a copy: do not change it) and the JSON is ``orjson.dumps(value)``, so
        the common case costs no parse of the output and no second serialisation."""
        stats = MaskStats()
        try:
            out, masked = self._masked_object(value, stats, value)
            return (orjson.dumps(masked) if out is None else out), masked, stats
        except Exception:
            dropped, stats = self._drop(value, stats)
            return orjson.dumps(dropped), dropped, stats

    def mask_line(self, line: bytes) -> tuple[bytes, MaskStats]:
        """One JSON document (bytes) in, its masked compact JSON out. Raises ``ValueError`` when
        the input is not JSON; a masker failure yields ``b"{}"`` with ``stats.dropped`` set."""
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from exc
        stats = MaskStats()
        try:
            if not isinstance(value, (dict, list)):
                return orjson.dumps(self._tree(value, stats, False)), stats
            raw = orjson.dumps(value)
            out = self._masked_bytes(raw, stats)
            if out is not raw:
                try:
                    orjson.loads(out)
                except orjson.JSONDecodeError:
                    out = orjson.dumps(self._tree(value, stats, False))
            return out, stats
        except Exception:
            dropped, stats = self._drop(value, stats)
            return orjson.dumps(dropped), stats

    def mask_text(self, text: str) -> str:
        """One string through every detector (log lines, subprocess output, excerpts)."""
        try:
            return self._text(text, MaskStats(), False)
        except Exception:
            return "[MASKED:error]"

    def mask_bytes(self, raw: bytes, limit: int = 2048) -> str:
        """Dead-letter excerpt: decoded leniently, masked whole, then cut to ``limit`` characters
        (masking first, so a cut never splits a secret into an unrecognisable fragment)."""
        try:
            text = bytes(raw[:_BYTES_CAP * 4]).decode("utf-8", "replace")
            if len(text) > _BYTES_CAP:
                cut = max(text.rfind(ch, 0, _BYTES_CAP) for ch in ' \n"')
                text = text[:cut if cut > 0 else _BYTES_CAP]
            return self.mask_text(text)[:max(0, limit)]
        except Exception:
            return "[MASKED:error]"

    def mask_stats_text(self, text: str) -> tuple[str, MaskStats]:
        """``mask_text`` with its stats."""
        stats = MaskStats()
        try:
            return self._text(text, stats, False), stats
        except Exception:
            stats.dropped += 1
            return "[MASKED:error]", stats

    # Fast path ----------------------------------------------------------------------------------

    def _masked_bytes(self, raw: bytes, stats: MaskStats) -> bytes:
        out, bad = self._mask_and_check(raw, True, stats.counts, False)
        if bad:
            out = self._replace_violations(out, bad, stats)
        return out

    def _mask_and_check(self, raw: bytes, json_mode: bool, counts: dict[str, int], readable: bool) -> tuple[bytes, list[int]]:
        """Mask ``raw``, then verify the output. While most buffers come out unchanged (real
        traffic), the masker's and the verifier's triggers run in one scan of ``raw``, and the
        verifier reads its own hits from it only when the output *is* ``raw`` (nothing was
        masked, so those are the output's bytes); any other output gets its own verifier scan."""
        masker, verifier = self.masker, self.verifier
        if self._unchanged < _PAIR_ABOVE or not self._shared_scan():
            out = masker.run(raw, json_mode, counts, readable)
            bad = verifier.check(out, json_mode, readable)
        else:
            mhits, vhits = self._pair.scan(raw)
            out = masker.run(raw, json_mode, counts, readable, hits=mhits)
            bad = verifier.check(out, json_mode, readable, hits=vhits if out is raw else None)
        self._unchanged += ((out is raw) - self._unchanged) * _PAIR_WEIGHT
        return out, bad

    def _shared_scan(self) -> bool:
        if self._pair is None:
            try:
                self._pair = PairScanner(self.masker.scanner, self.verifier.scanner)
            except Exception:  # e.g. a database too large for Hyperscan: keep the two scans
                self._pair = False
        return self._pair is not False

    def _masked_object(self, value: dict[str, Any] | list[Any], stats: MaskStats,
                       unchanged: Any = _COPY) -> tuple[bytes | None, Any]:
        """The masked JSON of ``value`` and the masked value: ``unchanged`` when nothing was masked,
        unless that is ``_COPY`` (then a parsed copy). The JSON is None where the tree path masked
        it (values orjson cannot write, output that would not parse)."""
        try:
            raw = orjson.dumps(value)
        except TypeError:
            return None, self._tree(value, stats, False)
        out = self._masked_bytes(raw, stats)
        if out is raw and unchanged is not _COPY:
            return out, unchanged
        try:
            return out, orjson.loads(out)
        except orjson.JSONDecodeError:
            stats.add("fallback")
            return None, self._tree(orjson.loads(raw), stats, False)

    def _replace_violations(self, out: bytes, positions: list[int], stats: MaskStats) -> bytes:
        st = Structure(out)
        spans = set()
        for p in positions:
            if st.in_string_exact(p):
                spans.add(st.literal(p))
            else:
                s = p
                while s > 0 and out[s - 1] not in b":,[{":
                    s -= 1
                spans.add((s, st.value_end(s)))
        pieces, last = [], 0
        replaced = 0
        for s, e in sorted(spans):
            if s < last:
                continue
            pieces += [out[last:s], _VIOLATION_JSON]
            last = e
            replaced += 1
        pieces.append(out[last:])
        self._violated(stats, replaced)
        return b"".join(pieces)

    def _violated(self, stats: MaskStats, n: int) -> None:
        stats.violations += n
        stats.flagged_values += n
        stats.add("violation", n)
        if self.on_violation is not None:
            self.on_violation(n)

    # Tree path ----------------------------------------------------------------------------------

    def _text(self, text: str, stats: MaskStats, readable: bool) -> str:
        raw = text.encode("utf-8", "surrogatepass")
        out, bad = self._mask_and_check(raw, False, stats.counts, readable)
        if bad:
            self._violated(stats, 1)
            return VIOLATION
        return text if out is raw else out.decode("utf-8", "surrogatepass")

    def _tree(self, value: Any, stats: MaskStats, readable: bool) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._text(value, stats, readable)
        if isinstance(value, (int, float)):
            text = str(value)
            masked = self._text(text, stats, readable)
            return value if masked == text else masked
        if isinstance(value, dict):
            return self._tree_dict(value, stats)
        if isinstance(value, (list, tuple)):
            return [self._tree(x, stats, readable) for x in value]
        return self._text(str(value), stats, readable)

    def _tree_dict(self, value: dict, stats: MaskStats) -> dict:
        rules = self.rules
        out: dict[Any, Any] = {}
        for k, x in value.items():
            name = str(k).encode("utf-8", "surrogatepass")
            key = self._text(k, stats, False) if isinstance(k, str) else k
            rule = rules.key_rule(name)
            if rule is not None and not (x is None or isinstance(x, bool) or x == ""):
                out[key] = self.masker.mask_leaves(x, rule)
                stats.add(rule.type)
            elif rules.is_ai_key(name):
                inner = MaskStats()
                masked = self._tree(x, inner, False)
                hit = rules.ai.when == "always" or inner.total > 0 or _entropic(x)
                stats.merge(inner)
                if not hit:
                    out[key] = masked
                    continue
                stats.add("ai_output")
                if rules.ai.policy == "hash":
                    out[key] = self.tokens.hashed("ai_output", orjson.dumps(x, default=str)).decode()
                elif rules.ai.policy == "redact":
                    out[key] = "[MASKED:ai_output]"
            else:
                out[key] = self._tree(x, stats, rules.is_readable_key(name))
        return out

    def _drop(self, value: Any, stats: MaskStats) -> tuple[Any, MaskStats]:
        stats.dropped += 1
        stats.flagged_values += 1
        stats.add("dropped")
        if isinstance(value, dict):
            return {}, stats
        if isinstance(value, (list, tuple)):
            return [], stats
        return "[MASKED:error]", stats


def _entropic(value: Any) -> bool:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    for m in _ENTROPY.finditer(text.encode("utf-8", "surrogatepass")):
        tok = m.group()
        if any(48 <= c <= 57 for c in tok) and tok.lower() != tok and tok.upper() != tok:
            return True
    return False


@lru_cache(maxsize=8)
def _cached_engine(path: str, key: bytes, mtime_ns: int) -> MaskingEngine:
    return MaskingEngine.from_file(path, key)


def load_engine(settings_like: Any = None, *, path: str | os.PathLike[str] | None = None,
                key: bytes | str | None = None) -> MaskingEngine:
    """The engine for a settings object (``masking_rules_path``/``masking_rules``,
    ``masking_key``) or explicit ``path``/``key``; cached per (path, key, file mtime).
    Key fallback: $PLUGWATCH_MASKING_KEY, then the development key."""
    if settings_like is not None:
        if path is None:
            path = getattr(settings_like, "masking_rules_path", None) or getattr(settings_like, "masking_rules", None)
        if key is None:
            key = getattr(settings_like, "masking_key", None)
            if hasattr(key, "get_secret_value"):
                key = key.get_secret_value()
    if key is None or key == "" or key == b"":
        key = os.environ.get(KEY_ENV) or DEV_KEY
    key_bytes = key if isinstance(key, bytes) else str(key).encode()
    resolved = Path(rules_path(path))
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError:
        mtime = 0  # load_rules raises the readable error
    return _cached_engine(str(resolved), key_bytes, mtime)
