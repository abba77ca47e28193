"""Trigger patterns: where the masker looks. One Hyperscan (or ``re``) pass over an event finds
every place a detector might apply; ``detectors`` and ``keys`` decide what is really there.

Patterns must stay cheap for Hyperscan: literal-led, unbounded repeats rather than bounded ones,
and tails of a single character class (see the notes at each pattern).
"""

from __future__ import annotations

import re

from plugwatch.masking.rules import Rules
from plugwatch.masking.scanner import BASE64_40, CASELESS, DIGIT_RUN, START, Trigger

# Left boundaries below: start of data, a non-word byte, or a JSON escape (\n, \u4e2d, ...),
# which decodes to a newline or a CJK character and so separates words too.

(T_EMAIL, T_DIGITS, T_PLUS, T_JWT, T_PEM, T_AWS_ID, T_AWS_SECRET, T_AUTH, T_USERINFO, T_IBAN,
 T_ASSIGN, T_QUERY, T_KV, T_PAIR, T_AI_KEY, T_TOKEN) = range(16)

# Fixed-length prefixes of vendor tokens: (trigger, trigger length, full token, kind).
_VENDOR_TOKENS = [
    (rb"gh[pousr]_[A-Za-z0-9]{30}", 34, rb"gh[pousr]_[A-Za-z0-9]+", "github_token"),
    (rb"github_pat_[A-Za-z0-9_]{20}", 31, rb"github_pat_[A-Za-z0-9_]+", "github_token"),
    (rb"xox[a-z]-[A-Za-z0-9\-]{8}", 13, rb"xox[a-z]-[A-Za-z0-9\-]+", "slack_token"),
    (rb"[sr]k_(?:live|test)_[A-Za-z0-9]{8}", 16, rb"[sr]k_(?:live|test)_[A-Za-z0-9]+", "stripe_key"),
    (rb"whsec_[A-Za-z0-9+/=]{16}", 22, rb"whsec_[A-Za-z0-9+/=]+", "stripe_key"),
    (rb"AIza[0-9A-Za-z_\-]{30}", 34, rb"AIza[0-9A-Za-z_\-]+", "google_api_key"),
    (rb"sk-[A-Za-z0-9_\-]{16}", 19, rb"sk-[A-Za-z0-9_\-]+", "openai_key"),
]


def _alternation(spellings: list[tuple[str, ...]]) -> bytes:
    """Trigger text for names written any way: words joined by an optional separator."""
    parts = sorted({rb"[_\-. ]?".join(re.escape(w.encode()) for w in words) for words in spellings}, key=len, reverse=True)
    return b"(?:" + b"|".join(parts) + b")"


def _name_triggers(rules: Rules) -> list[Trigger]:
    """Sensitive names followed by a separator. Split three ways because Hyperscan is much
    faster on long literals: names that end a key ("db_password:"), short names that need a
    boundary before them ("pwd=" but not "lpwd="), and names that may be followed by more words
    ("password_hash:")."""
    names = [s for r in rules.key_rules for s in r.spellings] + list(rules.text_rule.spellings)
    long = sorted({s for s in names if len("".join(s)) >= 4 or not "".join(s).isascii()})
    short = sorted({s for s in names if s not in long})
    anywhere = sorted({s for r in rules.key_rules for s in r.anywhere_spellings} | set(rules.text_rule.anywhere_spellings))
    # The separator tail is one character class on purpose: richer tails (optional groups, \t
    # escapes, bounded repeats) make Hyperscan's scan of these names three times slower.
    end = rb"[\\\"' ]*[:=]"
    more = rb"[A-Za-z0-9_.\-]*" + end
    triggers = [(T_ASSIGN, _alternation(long) + end, CASELESS)]
    if short:
        triggers.append((T_ASSIGN, rb"(?:^|[^A-Za-z0-9])" + _alternation(short) + end, CASELESS))
    if anywhere:
        triggers.append((T_ASSIGN, _alternation(anywhere) + more, CASELESS))
    return triggers


def build_triggers(rules: Rules) -> list[Trigger]:
    names = [s for r in rules.key_rules for s in r.spellings] + list(rules.text_rule.spellings)
    stems = _alternation(names)
    triggers: list[Trigger] = [
        (T_EMAIL, rb"@[A-Za-z0-9]", 0),
        (T_DIGITS, DIGIT_RUN, START),
        (T_PLUS, rb"(?:^|[^A-Za-z0-9/+=]|\\u[0-9A-Fa-f]{4})\+[1-9]", 0),
        (T_JWT, rb"(?:^|[^A-Za-z0-9_.\-]|\\[nrtbf]|\\u[0-9A-Fa-f]{4})eyJ[A-Za-z0-9_\-]{4}", 0),
        (T_PEM, rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY", 0),
        (T_AWS_ID, rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}", 0),
        (T_AWS_SECRET, BASE64_40, 0),
        (T_AUTH, rb"(?:bearer|basic)(?: |\\t)+[A-Za-z0-9\-._~+/]", CASELESS),
        (T_USERINFO, rb"://[^\s/\"@\\?#\[\]]{0,128}:[^\s/\"@\\?#\[\]]{1,256}@", 0),
        # No boundary in the trigger (it triples the cost); the handler checks it.
        (T_IBAN, rb"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}", START),
        (T_KV, rb"\"(?:key|name)\":\"[^\"\\]*(?:" + stems + rb"|gen_ai\.)[^\"\\]*\",\"value\":", CASELESS),
        (T_PAIR, rb"\[\"[^\"\\]*" + stems + rb"[^\"\\]*\",\"", CASELESS),
        (T_AI_KEY, rb"\"gen_ai\.[A-Za-z0-9_.\-]*\":", CASELESS),
    ]
    triggers += _name_triggers(rules)
    if rules.query_spellings:
        triggers.append((T_QUERY, rb"[?&]" + _alternation(list(rules.query_spellings)) + rb"=", CASELESS))
    if rules.ai.field_spellings:
        ai_fields = _alternation(list(rules.ai.field_spellings))
        triggers.append((T_AI_KEY, rb"\"" + ai_fields + rb"\":", CASELESS))
    for n, (pattern, _, _, _) in enumerate(_VENDOR_TOKENS):
        triggers.append((T_TOKEN + n, pattern, 0))
    return triggers
