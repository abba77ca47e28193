"""The masker: scan triggers, then confirm each candidate and record what replaces it.

One ``Masker.run`` masks one buffer: compact JSON text of a whole event (``json_mode``) or one
plain string. Triggers (see ``scanner``) say *where* to look; the handlers below say *what* is
there, with validators deciding. Findings become spans ``(start, end, token, kind)`` applied in
one pass at the end, outermost span winning, so the output keeps every byte that was not masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from plugwatch.masking import validators as v
from plugwatch.masking.rules import KeyRule, Rules, compact
from plugwatch.masking.scanner import CASELESS, START, Scanner, Trigger
from plugwatch.masking.structure import ALNUM, DIGITS, WORD, Structure, clean_end, clean_start, escaped, next_quote
from plugwatch.masking.styles import Tokenizer

# Left boundary shared by triggers: start of data, a non-word byte, or a JSON escape (\n, \t...).
_B = rb"(?:^|[^A-Za-z0-9_]|\\[nrtbf])"

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

_LOCAL = re.compile(rb"[A-Za-z0-9._%+\-]{1,64}\Z")
_DOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*"
                     rb"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_PLUS_NUM = re.compile(rb"\+(?:[ \-.()]{0,2}[0-9]){8,15}")
_JWT = re.compile(rb"eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}(?:\.[A-Za-z0-9_\-]*){0,3}")
_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[^\"]{0,16384}?-----END [A-Z0-9 ]{0,40}"
                  rb"PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,.\-]*)")
_CRED = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_IBAN = re.compile(rb"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?")
_UNQUOTED = re.compile(rb"[^\s&;,\"'\\)\]}>|<]+")
_REST_OF_LINE = re.compile(rb"[^\r\n\"\\]+")
_ENTROPY = re.compile(rb"[A-Za-z0-9_\-+/]{24,}")
_RUN = re.compile(rb"[0-9](?:[ \-]?[0-9])*")
_NAME = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


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
    anywhere = sorted({s for r in rules.key_rules for s in r.anywhere_spellings}
                      | {s for s in rules.text_rule.anywhere_spellings if len("".join(s)) >= 5})
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
        (T_DIGITS, rb"(?:^|[^0-9A-Za-z_.+\-]|\\[nrtbf])[0-9](?:[ \-]?[0-9]){10}", START),
        (T_PLUS, rb"(?:^|[^A-Za-z0-9/+=])\+[1-9]", 0),
        (T_JWT, rb"(?:^|[^A-Za-z0-9_.\-]|\\[nrtbf])eyJ[A-Za-z0-9_\-]{4}", 0),
        (T_PEM, rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY", 0),
        (T_AWS_ID, rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}", 0),
        (T_AWS_SECRET, rb"(?:^|[^A-Za-z0-9/+=]|\\[nrtbf])[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)", 0),
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


def _left_ok(b: bytes, s: int, word: frozenset[int] = ALNUM) -> bool:
    """Nothing word-like glued to the left of ``s`` (a JSON escape letter does not count)."""
    return s == 0 or b[s - 1] not in word or escaped(b, s - 1)


def _unescape(raw: bytes) -> bytes:
    try:
        return orjson.loads(b'"' + raw + b'"').encode()
    except orjson.JSONDecodeError:
        return raw


class _Event:
    """Findings for one buffer; created per call, discarded after."""

    __slots__ = ("m", "b", "json", "spans", "st", "ai", "readable", "done")

    def __init__(self, masker: Masker, b: bytes, json_mode: bool, readable: bool) -> None:
        self.m = masker
        self.b = b
        self.json = json_mode
        self.spans: list[tuple[int, int, bytes, str]] = []
        self.st: Structure | None = None
        self.ai: list[tuple[int, bool]] = []
        self.readable = readable
        self.done: set[int] = set()

    def structure(self) -> Structure:
        if self.st is None:
            self.st = Structure(self.b)
        return self.st

    def add(self, s: int, e: int, kind: str, style: str | None = None, quoted: bool = False) -> None:
        b = self.b
        if s > 0 and b[s - 1] == 92:
            s = clean_start(b, s)
        if b[e - 1] == 92:
            e = clean_end(b, e)
        if e <= s:
            return
        m = self.m
        style = style or m.styles.get(kind, "full")
        if style == "full":
            token = m.full_tokens.get(kind) or m.tokens.full(kind)
        else:
            value = b[s:e]
            if self.json and 92 in value:
                value = _unescape(value)
            token = m.tokens.token(kind, style, value)
        self.spans.append((s, e, b'"' + token + b'"' if quoted else token, kind))

    def readable_at(self, s: int) -> bool:
        """A number here stays: readable key (trace_id, order_id, ...) or a context word before it."""
        if self.readable:
            return True
        m = self.m
        if m.context.search(self.b[max(0, s - 28):s].lower()):
            return True
        if self.json:
            key = self.structure().key_of(s)
            if key is not None and m.rules.is_readable_key(key) and not m.rules.is_ai_key(key):
                return True
        return False

    # Handlers: each gets the end offset of its trigger match.

    def email(self, _s: int, e: int) -> None:
        b = self.b
        at = e - 2
        local = _LOCAL.search(b, max(0, at - 64), at)
        domain = _DOMAIN.match(b, at + 1)
        if local is None or domain is None:
            return
        s = local.start()
        if s > 0 and b[s - 1] == 58 and b.rfind(b"://", max(0, s - 200), s) >= 0:
            return  # scheme://user:password@host - the password is the url_password finding
        self.add(s, domain.end(), "email")

    def digits(self, m: int, e: int) -> None:
        b, n = self.b, len(self.b)
        s = m if b[m] in DIGITS else m + 2 if b[m] == 92 else m + 1
        if -s in self.done:
            return
        self.done.add(-s)
        t = _RUN.match(b, s).end()
        x = t + 1 if t < n and b[t] in b"Xx" and (t + 1 >= n or b[t + 1] not in WORD) else t
        left_ok = True  # the trigger only starts after a boundary
        right_ok = x >= n or (b[x] not in WORD and not (b[x] in b"-." and x + 1 < n and b[x + 1] in ALNUM))
        run = b[s:t]
        if left_ok and right_ok and self._number(s, x, run, b[t:x]):
            return
        # "retry 12 13800138000": the whole run is nothing, a space-separated part may be.
        groups = []
        pos = s
        for part in run.replace(b"-", b" ").split(b" "):
            groups.append((pos, pos + len(part)))
            pos += len(part) + 1
        if len(groups) < 2:
            return
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                gs, ge = groups[i][0], groups[j - 1][1]
                if (i, j) == (0, len(groups)) or (i == 0 and not left_ok) or (j == len(groups) and not right_ok):
                    continue
                if (i > 0 and b[gs - 1] != 32) or (j < len(groups) and b[ge] != 32):
                    continue
                if self._number(gs, ge, b[gs:ge], b""):
                    i = j - 1
                    break
            i += 1

    def _number(self, s: int, t: int, run: bytes, tail: bytes) -> bool:
        digits = run.translate(None, b" -")
        if len(digits) < 11:
            return False
        grouped = len(digits) != len(run)
        full = digits + tail
        kind = None
        if len(full) == 18 and v.cn_id_shaped(full[:17] + b"0"):
            if not v.cn_id_ok(full):
                return True  # a resident-ID shape with a wrong check character: a near miss, leave it
            kind = "cn_id"
        elif tail:
            return False
        elif len(full) == 15 and v.cn_id_shaped(full):
            kind = "cn_id"
        elif v.cn_mobile_ok(digits):
            kind = "phone"
        elif v.card_ok(digits, grouped):
            kind = "card"
        if kind is None or self.readable_at(s):
            return kind is not None
        quoted = self.json and not grouped and not self.structure().in_string(s)
        self.add(s, t, kind, quoted=quoted)
        return True

    def plus(self, _s: int, e: int) -> None:
        b = self.b
        p = e - 2
        m = _PLUS_NUM.match(b, p)
        if m is None or (m.end() < len(b) and b[m.end()] in ALNUM):
            return
        digits = m.group().translate(None, b"+ -.()")
        if v.cn_mobile_ok(digits) or v.e164_ok(digits):
            self.add(p, m.end(), "phone")

    def jwt(self, _s: int, e: int) -> None:
        m = _JWT.match(self.b, e - 7)
        if m is not None and v.jwt_ok(m.group()):
            self.add(e - 7, m.end(), "jwt")

    def pem(self, _s: int, e: int) -> None:
        s = self.b.rfind(b"-----BEGIN", max(0, e - 64), e)
        m = _PEM.match(self.b, s)
        if m is not None:
            self.add(s, m.end(), "private_key")

    def aws_id(self, _s: int, e: int) -> None:
        b = self.b
        s = e - 20
        if _left_ok(b, s) and (e >= len(b) or b[e] not in ALNUM):
            self.add(s, e, "aws_access_key_id")

    def aws_secret(self, _s: int, e: int) -> None:
        b = self.b
        s, t = (e - 40, e) if b[e - 1] in _B64 else (e - 41, e - 1)
        if v.aws_secret_ok(b[s:t]) and not self.readable_at(s):
            self.add(s, t, "aws_secret_key")

    def auth(self, _s: int, e: int) -> None:
        m = _CRED.match(self.b, e - 1)
        if m is not None and v.credential_token_ok(m.group()):
            self.add(e - 1, m.end(), "bearer")

    def userinfo(self, _s: int, e: int) -> None:
        b = self.b
        at = e - 1
        p = b.rfind(b"://", max(0, at - 400), at)
        colon = b.find(b":", p + 3, at) if p >= 0 else -1
        if colon >= 0 and not b.startswith(b"[MASKED", colon + 1):
            self.add(colon + 1, at, "url_password")

    def iban(self, s: int, e: int) -> None:
        b = self.b
        if not _left_ok(b, s) or b[s:s + 2].decode() not in v.IBAN_LENGTHS:
            return
        found = _IBAN.match(b, s)
        if found and (found.end() >= len(b) or b[found.end()] not in ALNUM) and v.iban_ok(found.group().replace(b" ", b"")):
            if not self.readable_at(s):
                self.add(s, found.end(), "iban")

    def token(self, e: int, n: int) -> None:
        _, length, full, kind = self.m.vendor[n]
        b = self.b
        s = e - length
        if not _left_ok(b, s):
            return
        m = full.match(b, s)
        if kind == "openai_key":
            body = m.group()[3:]
            if not (any(48 <= c <= 57 for c in body) and any(65 <= c <= 90 for c in body)):
                return
        self.add(s, clean_end(b, m.end()), kind)

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
        ns = q
        while ns > 0 and q - ns < 64 and (b[ns - 1] in _NAME or b[ns - 1] >= 128):
            ns -= 1
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
            rest = self.m.rules.rest_of_line
            rx = _REST_OF_LINE if rest and self.m.rules.key_rule(name) is not None and _compact_in(name, rest) else _UNQUOTED
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
        if self.json and not escaped(self.b, e - 2):
            key = self.structure().key_before(e)
            if key is not None and self.m.rules.is_ai_key(key):
                self.ai.append((e, False))

    # Finishing.

    def apply_ai(self) -> None:
        ai = self.m.rules.ai
        st = self.structure()
        b = self.b
        for vs, kv in self.ai:
            ve = st.value_end(vs)
            hit = ai.when == "always" or any(vs <= s < ve for s, _, _, _ in self.spans)
            if not hit:
                for m in _ENTROPY.finditer(b, vs, ve):
                    tok = m.group()
                    if any(48 <= c <= 57 for c in tok) and tok.lower() != tok and tok.upper() != tok:
                        hit = True
                        break
            if not hit:
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

    def output(self, counts: dict[str, int]) -> bytes:
        if self.ai:
            self.apply_ai()
        spans = sorted(self.spans, key=lambda x: (x[0], -x[1]))
        b = self.b
        pieces = []
        last = 0
        kept: list[list] = []
        for s, e, token, kind in spans:
            if s < last:
                if e > last:  # partial overlap: the earlier span grows to cover both
                    kept[-1][1] = e
                    last = e
                continue
            kept.append([s, e, token, kind])
            last = e
        last = 0
        for s, e, token, kind in kept:
            pieces.append(b[last:s])
            pieces.append(token)
            last = e
            counts[kind] = counts.get(kind, 0) + 1
        pieces.append(b[last:])
        return b"".join(pieces)


def _compact_in(name: bytes, names: frozenset[str]) -> bool:
    return compact(name.decode("utf-8", "replace")) in names


class Masker:
    """Compiled rules: triggers, handlers, tokens. Thread-safe; one per engine."""

    def __init__(self, rules: Rules, tokens: Tokenizer, use_hyperscan: bool | None = None) -> None:
        self.rules = rules
        self.tokens = tokens
        self.vendor = [(re.compile(p), n, re.compile(f), k) for p, n, f, k in _VENDOR_TOKENS]
        self.styles = dict(rules.detector_styles)
        self.full_tokens = {k: tokens.full(k) for k in self.styles}
        self.scanner = Scanner(build_triggers(rules), use_hyperscan)
        words = b"|".join(re.escape(w) for w in rules.context_words) or b"(?!)"
        # A context word right before the number: "order 2024...", "commit: 1234...", "订单号 ...".
        self.context = re.compile(b"(?:" + words + rb")[a-z_\-\x80-\xff]{0,12}[\s:=#/\"'.\\]{0,6}\Z")
        self.handlers: dict[int, Callable[[_Event, int], None]] = {
            T_EMAIL: _Event.email, T_DIGITS: _Event.digits, T_PLUS: _Event.plus, T_JWT: _Event.jwt,
            T_PEM: _Event.pem, T_AWS_ID: _Event.aws_id, T_AWS_SECRET: _Event.aws_secret, T_AUTH: _Event.auth,
            T_USERINFO: _Event.userinfo, T_IBAN: _Event.iban, T_ASSIGN: _Event.assign, T_KV: _Event.kv,
            T_PAIR: _Event.pair, T_AI_KEY: _Event.ai_key, T_QUERY: _Event.assign,
        }

    def run(self, b: bytes, json_mode: bool, counts: dict[str, int], readable: bool = False) -> bytes:
        """Masked copy of ``b`` (the same object when nothing was found)."""
        hits = self.scanner.scan(b)
        if not hits:
            return b
        ev = _Event(self, b, json_mode, readable)
        handlers = self.handlers
        for tid, start, end in hits:
            h = handlers.get(tid)
            if h is not None:
                h(ev, start, end)
            else:
                ev.token(end, tid - T_TOKEN)
        if not ev.spans and not ev.ai:
            return b
        return ev.output(counts)

    def mask_leaves(self, value, rule: KeyRule):
        """Every string and number inside a container under a sensitive key, shape kept."""
        if isinstance(value, dict):
            return {k: self.mask_leaves(x, rule) for k, x in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_leaves(x, rule) for x in value]
        if isinstance(value, str):
            if not value or value.startswith("[MASKED:"):
                return value
            return self.tokens.token(rule.type, rule.style, value.encode("utf-8", "surrogatepass")).decode()
        if value is None or isinstance(value, bool):
            return value
        return self.tokens.token(rule.type, rule.style, str(value).encode("utf-8", "surrogatepass")).decode()
