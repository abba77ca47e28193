"""Findings by name: JSON keys, ``{"key": NAME, "value": ...}`` lists, header pairs, and
``name=value`` / ``name: value`` / ``"name": "value"`` inside strings; plus the AI-output policy.

A mixin of the masker's per-event object (``detectors._Event``), kept apart because names and
values are a different problem from patterns inside text.
"""

from __future__ import annotations

import re

import orjson

from plugwatch.masking.rules import KeyRule
from plugwatch.masking.structure import escaped, next_quote

_UNQUOTED = re.compile(rb"[^\s&;,\"'\\)\]}>|<]+")
_REST_OF_LINE = re.compile(rb"[^\r\n\"\\]+")
_ENTROPY = re.compile(rb"[A-Za-z0-9_\-+/]{24,}")
# Characters of a name before ``=``/``:`` in free text: ASCII word characters, '.', '-' and any
# byte of a non-ASCII character.
_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-" + bytes(range(128, 256))


class KeyFindings:
    """Handlers for sensitive names; expects the attributes of ``detectors._Event``."""

    __slots__ = ()

    def assign(self, _s: int, e: int) -> None:
        if e in self.done:  # several name triggers can end on the same separator
            return
        self.done.add(e)
        b = self.b
        sep = e - 1
        if self.json and b[sep] == 58 and b[sep - 1] == 34 and not escaped(b, sep - 1):
            key = self.structure().key_before(e)
            rule = self.m.rules.key_rule(key) if key is not None else None
            if rule is not None:
                self.value(e, rule)
            return
        q = sep
        while q > 0 and b[q - 1] in b" \"'\\":
            q -= 1
        before = b[max(0, q - 64):q]
        ns = q - (len(before) - len(before.rstrip(_NAME_CHARS)))  # up to 64 name characters
        if ns < q and escaped(b, ns):
            ns += 1
        if ns >= q or b.startswith(b"//", e) or b.startswith(b"[MASKED:", ns - 8):
            return
        name = b[ns:q]
        rule = self.m.rules.text_name_rule(name)
        if rule is None and ns > 0 and b[ns - 1] in b"?&" and self.m.rules.is_query_param(name):
            rule = self.m.rules.text_rule
        if rule is not None:
            self.text_value(e, rule, name)

    def text_value(self, i: int, rule: KeyRule, name: bytes) -> None:
        b, n = self.b, len(self.b)
        while i < n and b[i] == 32:
            i += 1
        if b.startswith(b"\\t", i):
            i += 2
        if i >= n:
            return
        c = b[i]
        limit = next_quote(b, i) if self.json else -1
        if limit < 0:
            limit = n
        if c == 92:  # a quote escaped once or more: \" in JSON text, \\\" in JSON inside a JSON string
            j = i
            while j < n and b[j] == 92:
                j += 1
            if j >= n or b[j] not in b"\"'":
                return
            vs = j + 1
            ve = b.find(b[i:vs], vs, limit)
        elif c in b"\"'" and not (self.json and c == 34):
            vs = i + 1
            ve = b.find(bytes((c,)), vs, limit)
        elif c in b"{[\"":
            return
        else:
            vs = i
            rules = self.m.rules
            rest = rules.rest_of_line and rules.key_rule(name) is not None and rules.is_rest_of_line(name)
            rx = _REST_OF_LINE if rest else _UNQUOTED
            m = rx.match(b, i, limit)
            ve = m.end() if m else i
        if ve < 0:
            m = _UNQUOTED.match(b, vs, limit)
            ve = m.end() if m else vs
        if ve > vs and not b.startswith(b"[MASKED", vs):
            self.add(vs, ve, rule.type, rule.style)

    def value(self, i: int, rule: KeyRule) -> None:
        """Mask the JSON value at ``i`` under a sensitive key: a string or number whole, a
        container leaf by leaf (shape kept), booleans and null left alone."""
        b = self.b
        c = b[i]
        end = self.structure().value_end(i)
        if c == 34:
            if end - i > 2 and not b.startswith(b"[MASKED", i + 1):
                self.add(i + 1, end - 1, rule.type, rule.style)
        elif c in b"{[":
            masked = self.m.mask_leaves(orjson.loads(b[i:end]), rule)
            self.spans.append((i, end, orjson.dumps(masked), rule.type))
        elif c in b"-0123456789":
            self.add(i, end, rule.type, rule.style, quoted=True)

    def kv(self, _s: int, e: int) -> None:
        """{"key": NAME, "value": ...} attribute lists (OTLP JSON)."""
        b = self.b
        name_end = e - 10
        name_start = b.rfind(b'":"', 0, name_end) + 3
        if not self.json or escaped(b, name_end) or escaped(b, name_start - 1):
            return
        name = b[name_start:name_end]
        if self.m.rules.is_ai_key(name):
            self.ai.append((e, True))
            return
        rule = self.m.rules.key_rule(name)
        if rule is not None:
            self.value(e, rule)

    def pair(self, _s: int, e: int) -> None:
        """[["Authorization", "..."], ...] header lists."""
        b = self.b
        ns = b.rfind(b'["', 0, e) + 2
        rule = self.m.rules.key_rule(b[ns:e - 3])
        if rule is not None and self.json and not escaped(b, e - 1):
            self.value(e - 1, rule)

    def ai_key(self, _s: int, e: int) -> None:
        # Only remembered here; checked in apply_ai, where most values turn out short or clean.
        if self.json:
            self.ai.append((e, False))

    # Finishing.

    def _ai_hit(self, vs: int, ve: int) -> bool:
        if self.m.rules.ai.when == "always" or any(vs <= s < ve for s, _, _, _ in self.spans):
            return True
        if ve - vs < 26:  # too short to hold a random token
            return False
        for m in _ENTROPY.finditer(self.b, vs, ve):
            tok = m.group()
            if tok.lower() != tok and tok.upper() != tok and tok.translate(None, b"0123456789") != tok:
                return True
        return False

    def apply_ai(self) -> None:
        ai = self.m.rules.ai
        st = self.structure()
        b = self.b
        for vs, kv in self.ai:
            if b[vs] in b"tfn":  # true/false/null: nothing generated to police
                continue
            ve = st.value_end(vs)
            if not self._ai_hit(vs, ve):
                continue
            if not kv:
                key = st.key_before(vs)
                if key is None or escaped(b, vs - 2) or not self.m.rules.is_ai_key(key):
                    continue
            if ai.policy == "drop" and not kv:
                ds = st.key_start(vs)
                de = ve
                if b[de:de + 1] == b",":
                    de += 1
                elif b[ds - 1:ds] == b",":
                    ds -= 1
                self.spans.append((ds, de, b"", "ai_output"))
            elif ai.policy == "hash":
                raw = b[vs:ve]
                value = orjson.loads(raw)
                token = self.m.tokens.hashed("ai_output", value.encode() if isinstance(value, str) else raw)
                self.spans.append((vs, ve, b'"' + token + b'"', "ai_output"))
            else:
                self.spans.append((vs, ve, b'"' + self.m.tokens.full("ai_output") + b'"', "ai_output"))
