"""The masking rules file, loaded once: key rules, detector styles, AI-output policy, readability.

Key names are compared in a normalised form so ``X-Api-Key``, ``x_api_key``, ``xApiKey`` and
``XAPIKEY`` are the same name: camelCase is split, everything is lower-cased, separators and
purely numeric parts (``password_2``) are dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

STYLES = ("full", "partial", "hash")
AI_POLICIES = ("redact", "hash", "drop")

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "config" / "security" / "data_masking_rules.yaml"
RULES_ENV = "PLUGWATCH_MASKING_RULES"

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+|[^\x00-\x7f]+")


class RulesError(ValueError):
    """The rules file is missing or malformed; the message names the file and the field."""


def name_tokens(name: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _WORD.findall(name) if not t.isdigit())


def compact(name: str) -> str:
    return "".join(name_tokens(name))


@dataclass(frozen=True)
class KeyRule:
    """Values under a key with one of ``names`` are masked whole with ``style``."""

    type: str
    style: str
    names: frozenset[str]
    anywhere: frozenset[str] = frozenset()  # names that mark a key wherever they occur in it
    spellings: tuple[tuple[str, ...], ...] = ()  # the names as word tuples, for scan triggers
    anywhere_spellings: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class AiPolicy:
    key_prefixes: tuple[str, ...]
    fields: frozenset[str]
    field_spellings: tuple[tuple[str, ...], ...]
    metadata: tuple[str, ...]
    policy: str
    when: str


@dataclass
class Rules:
    key_rules: tuple[KeyRule, ...]
    text_rule: KeyRule
    benign_suffixes: frozenset[str]
    detector_styles: dict[str, str]
    query_params: frozenset[str]
    query_spellings: tuple[tuple[str, ...], ...]
    rest_of_line: frozenset[str]
    ai: AiPolicy
    readable_keys: frozenset[str]
    readable_last_tokens: frozenset[str]
    context_words: tuple[bytes, ...]
    source: str
    _key_cache: dict[bytes, KeyRule | None] = field(default_factory=dict, repr=False)
    _text_cache: dict[bytes, KeyRule | None] = field(default_factory=dict, repr=False)
    _ai_cache: dict[bytes, bool] = field(default_factory=dict, repr=False)
    _readable_cache: dict[bytes, bool] = field(default_factory=dict, repr=False)
    _rest_cache: dict[bytes, bool] = field(default_factory=dict, repr=False)

    # Matching; each is cached per raw name because telemetry repeats the same keys endlessly.

    def _match(self, rule: KeyRule, tokens: tuple[str, ...], joined: str) -> bool:
        for name in rule.names:
            if joined == name or (tokens and tokens[-1] == name):
                return True
            if (len(name) >= 5 or not name.isascii()) and joined.endswith(name):
                return True
            if name in rule.anywhere and name in tokens:
                after = tokens[tokens.index(name) + 1:]
                if not any(t in self.benign_suffixes for t in after):
                    return True
        return False

    def key_rule(self, raw: bytes) -> KeyRule | None:
        """The rule for a JSON/header/query key, or None."""
        try:
            return self._key_cache[raw]
        except KeyError:
            pass
        name = raw.decode("utf-8", "replace")
        tokens = name_tokens(name)
        joined = "".join(tokens)
        found = None
        # A key that is itself a mask token ("[MASKED:email]" from an earlier pass) names nothing.
        if not (tokens and tokens[-1] in self.benign_suffixes) and "[MASKED:" not in name:
            found = next((r for r in self.key_rules if self._match(r, tokens, joined)), None)
        if len(self._key_cache) < 100_000:
            self._key_cache[raw] = found
        return found

    def text_name_rule(self, raw: bytes) -> KeyRule | None:
        """The rule for ``name=value`` / ``name: value`` in free text: any key rule, or a name
        that says secret (password, token, key, ...)."""
        try:
            return self._text_cache[raw]
        except KeyError:
            pass
        found = self.key_rule(raw)
        if found is None:
            name = raw.decode("utf-8", "replace")
            tokens = name_tokens(name)
            if tokens and tokens[-1] not in self.benign_suffixes and self._match(self.text_rule, tokens, "".join(tokens)):
                found = self.text_rule
        if len(self._text_cache) < 100_000:
            self._text_cache[raw] = found
        return found

    def is_query_param(self, raw: bytes) -> bool:
        """Names that are credentials only as URL query parameters (``?code=``, ``&sig=``)."""
        return compact(raw.decode("utf-8", "replace")) in self.query_params

    def is_rest_of_line(self, raw: bytes) -> bool:
        """Names whose unquoted value runs to the end of the line (``Authorization: Bearer x``)."""
        try:
            return self._rest_cache[raw]
        except KeyError:
            pass
        found = compact(raw.decode("utf-8", "replace")) in self.rest_of_line
        if len(self._rest_cache) < 100_000:
            self._rest_cache[raw] = found
        return found

    def is_ai_key(self, raw: bytes) -> bool:
        try:
            return self._ai_cache[raw]
        except KeyError:
            pass
        name = raw.decode("utf-8", "replace").lower()
        found = (name.startswith(self.ai.key_prefixes) or compact(name) in self.ai.fields) and not (
            self.ai.when == "always" and name.startswith(self.ai.metadata))
        if len(self._ai_cache) < 100_000:
            self._ai_cache[raw] = found
        return found

    def is_readable_key(self, raw: bytes) -> bool:
        try:
            return self._readable_cache[raw]
        except KeyError:
            pass
        tokens = name_tokens(raw.decode("utf-8", "replace"))
        found = bool(tokens) and ("".join(tokens) in self.readable_keys or tokens[-1] in self.readable_last_tokens)
        if len(self._readable_cache) < 100_000:
            self._readable_cache[raw] = found
        return found

    def style(self, detector: str) -> str:
        return self.detector_styles.get(detector, "full")


def _fail(path: str, what: str) -> RulesError:
    return RulesError(f"{path}: {what}. Fix the rules file (see the comments at its top) or pass --rules.")


def _names(path: str, where: str, items: Any) -> frozenset[str]:
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise _fail(path, f"{where} must be a list of non-empty strings")
    return frozenset(compact(i) for i in items)


def _spellings(items: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(sorted({name_tokens(i) for i in items or [] if name_tokens(i)}))


def _style(path: str, where: str, value: Any) -> str:
    if value not in STYLES:
        raise _fail(path, f"{where} is {value!r}; use one of {', '.join(STYLES)}")
    return value


def parse_rules(doc: Any, source: str = "<rules>") -> Rules:
    if not isinstance(doc, dict):
        raise _fail(source, "the top level must be a mapping")
    key_rules = []
    for i, item in enumerate(doc.get("key_rules") or []):
        where = f"key_rules[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _fail(source, f"{where} needs a 'type' name")
        names = _names(source, f"{where}.keys", item.get("keys"))
        anywhere = _names(source, f"{where}.match_anywhere", item.get("match_anywhere", []))
        key_rules.append(KeyRule(item["type"], _style(source, f"{where}.style", item.get("style", "full")), names, anywhere,
                                 _spellings(item.get("keys")), _spellings(item.get("match_anywhere", []))))
    if not key_rules:
        raise _fail(source, "key_rules is empty")
    text = doc.get("text_assignments") or {}
    text_names = _names(source, "text_assignments.names", text.get("names", []))
    # In free text only match_anywhere names count in the middle of a name ("db_password_hash="
    # yes, "handle_auth_windows:" and "SessionTracker:" no); the others must end it.
    text_rule = KeyRule("secret", _style(source, "text_assignments.style", text.get("style", "full")), text_names,
                        _names(source, "text_assignments.match_anywhere", text.get("match_anywhere", [])),
                        _spellings(text.get("names", [])), _spellings(text.get("match_anywhere", [])))
    detectors = doc.get("detectors") or {}
    if not isinstance(detectors, dict):
        raise _fail(source, "detectors must be a mapping of detector name -> {style: ...}")
    styles = {name: _style(source, f"detectors.{name}.style", (conf or {}).get("style", "full")) for name, conf in detectors.items()}
    ai = doc.get("ai_output") or {}
    policy, when = ai.get("policy", "redact"), ai.get("when", "on_hit")
    if policy not in AI_POLICIES:
        raise _fail(source, f"ai_output.policy is {policy!r}; use one of {', '.join(AI_POLICIES)}")
    if when not in ("on_hit", "always"):
        raise _fail(source, f"ai_output.when is {when!r}; use on_hit or always")
    readable = doc.get("readable") or {}
    return Rules(
        key_rules=tuple(key_rules),
        text_rule=text_rule,
        benign_suffixes=_names(source, "benign_suffixes", doc.get("benign_suffixes", [])),
        detector_styles=styles,
        query_params=_names(source, "text_assignments.query_params", text.get("query_params", [])),
        query_spellings=_spellings(text.get("query_params", [])),
        rest_of_line=_names(source, "text_assignments.rest_of_line", text.get("rest_of_line", [])),
        ai=AiPolicy(
            key_prefixes=tuple(p.lower() for p in ai.get("key_prefixes", ["gen_ai."])),
            fields=_names(source, "ai_output.fields", ai.get("fields", [])),
            field_spellings=_spellings(ai.get("fields", [])),
            metadata=tuple(p.lower() for p in ai.get("metadata", [])),
            policy=policy,
            when=when,
        ),
        readable_keys=_names(source, "readable.keys", readable.get("keys", [])),
        readable_last_tokens=_names(source, "readable.key_suffixes", readable.get("key_suffixes", [])),
        context_words=tuple(w.lower().encode() for w in readable.get("context_words", [])),
        source=source,
    )


def rules_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get(RULES_ENV)
    return Path(env) if env else DEFAULT_RULES_PATH


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> Rules:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise _fail(path, f"is not valid YAML ({exc})") from exc
    return parse_rules(doc, path)


def load_rules(path: str | os.PathLike[str] | None = None) -> Rules:
    """Rules from ``path``, else $PLUGWATCH_MASKING_RULES, else the repository's rules file."""
    resolved = rules_path(path)
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError as exc:
        raise RulesError(
            f"masking rules file {resolved} cannot be read ({exc.strerror}); "
            f"pass --rules PATH or set {RULES_ENV}") from exc
    return _load_cached(str(resolved), mtime)
