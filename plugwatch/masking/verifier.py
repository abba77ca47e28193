"""The post-mask verifier: an independent look at every masked output.

It shares the validators (what a card or an ID *is*) and the readability policy with the masker,
but finds candidates with its own triggers and reads them with its own code, so a bug in the
masker's extraction, overlap handling or span arithmetic shows up here as a violation instead of
a leak. ``Verifier.check`` returns offsets of values that still hold something sensitive; the
engine replaces each such value whole.
"""

from __future__ import annotations

import re

import orjson

from plugwatch.masking import validators as v
from plugwatch.masking.rules import Rules
from plugwatch.masking.scanner import BASE64_40, CASELESS, DIGIT_RUN, START, Scanner
from plugwatch.masking.structure import ALNUM, WORD, Structure, after_escape, escaped
from plugwatch.masking.triggers import _alternation

(V_EMAIL, V_NUMBER, V_PLUS, V_JWT, V_PEM, V_AWS_ID, V_VENDOR, V_OPENAI, V_AUTH, V_USERINFO, V_IBAN,
 V_AWS_SECRET, V_NAME, V_KV) = range(14)

_EMAIL_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_HOST = re.compile(rb"(?:[A-Za-z0-9\-]+\.)+([A-Za-z]{2,24})(?![A-Za-z0-9\-])")
_RUN = re.compile(rb"[0-9]+(?:[ \-][0-9]+)*")  # digits with single separators; one-char repeats are fast in re
_PHONE = re.compile(rb"\+[0-9 \-.()]*")
_TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+")
_IBAN_RUN = re.compile(rb"[A-Z]{2}[0-9]{2}[A-Z0-9 ]*")
_AFTER = re.compile(rb"(?: |\\t)*(\\*[\"'])?")
_SECRET_PREFIXES = (rb"gh[pousr]_[A-Za-z0-9]{30}", rb"github_pat_[A-Za-z0-9_]{20}", rb"xox[a-z]-[A-Za-z0-9\-]{8}",
                    rb"[sr]k_(?:live|test)_[A-Za-z0-9]{8}", rb"whsec_[A-Za-z0-9+/=]{16}", rb"AIza[0-9A-Za-z_\-]{30}")
_DIGIT = frozenset(b"0123456789")
_NAME_CHARS = bytes(_EMAIL_CHARS) + b"_" + bytes(range(128, 256))
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _name_triggers(rules: Rules) -> list[tuple[int, bytes, int]]:
    """Sensitive names followed by a separator; the value after it is read in Python (a check
    of the value inside the pattern would make Hyperscan several times slower)."""
    end = rb"[\\\"' ]*[:=]"
    words = {s for r in rules.key_rules for s in r.spellings} | set(rules.text_rule.spellings)
    short = sorted(s for s in words if len("".join(s)) < 4 and "".join(s).isascii())
    long = sorted(words - set(short))
    inner = sorted({s for r in rules.key_rules for s in r.anywhere_spellings} | set(rules.text_rule.anywhere_spellings))
    flags = CASELESS
    triggers = [(V_NAME, _alternation(long) + end, flags)]
    if short:
        triggers.append((V_NAME, rb"(?:^|[^A-Za-z0-9])" + _alternation(short) + end, flags))
    if inner:
        triggers.append((V_NAME, _alternation(inner) + rb"[A-Za-z0-9_.\-]*" + end, flags))
    if rules.query_spellings:
        triggers.append((V_NAME, rb"[?&]" + _alternation(list(rules.query_spellings)) + rb"=", flags))
    return triggers


class Verifier:
    def __init__(self, rules: Rules, context: re.Pattern[bytes], use_hyperscan: bool | None = None) -> None:
        self.rules = rules
        self.context = context
        triggers = _name_triggers(rules) + [
            (V_EMAIL, rb"[A-Za-z0-9._%+\-]@[A-Za-z0-9\-]+\.[A-Za-z]{2}", 0),
            (V_NUMBER, DIGIT_RUN, START),
            (V_PLUS, rb"(?:^|[^A-Za-z0-9/+=]|\\u[0-9A-Fa-f]{4})\+[1-9](?:[ \-.()]{0,2}[0-9]){7}", 0),
            (V_JWT, rb"eyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{4}", 0),
            (V_PEM, rb"PRIVATE KEY(?: BLOCK)?-----", 0),
            (V_AWS_ID, rb"A(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}", 0),
            (V_OPENAI, rb"sk-[A-Za-z0-9_\-]{16}", 0),
            (V_AUTH, rb"(?:bearer|basic)(?: |\\t)+[A-Za-z0-9\-._~+/]{8}", CASELESS),
            (V_USERINFO, rb"://[^\s/\"@\\?#\[\]]{0,128}:[^\s/\"@\\?#\[\]]{1,256}@", 0),
            # START only to match the masker's pattern exactly, so one shared scan serves both.
            (V_IBAN, rb"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}", START),
            (V_AWS_SECRET, BASE64_40, 0),
            (V_KV, rb"\"(?:key|name)\":\"[^\"\\]*\",\"value\":", CASELESS),
        ]
        triggers += [(V_VENDOR, p, 0) for p in _SECRET_PREFIXES]
        self.scanner = Scanner(triggers, use_hyperscan)
        self._vendor_res = [re.compile(p + rb"\Z") for p in _SECRET_PREFIXES]

    def check(self, b: bytes, json_mode: bool, readable: bool = False,
              hits: list[tuple[int, int, int]] | None = None) -> list[int]:
        """Offsets in ``b`` of findings that should have been masked (empty: clean). ``hits``:
        this verifier's own trigger matches in exactly these bytes, when already scanned."""
        if hits is None:
            hits = self.scanner.scan(b)
        if not hits:
            return []
        job = _Check(self, b, json_mode, readable)
        readers = _READERS
        bad = []
        for tid, start, end in hits:
            pos = readers[tid](job, start, end)
            if pos is not None:
                bad.append(pos)
        return bad


class _Check:
    __slots__ = ("vf", "b", "json", "readable", "_st")

    def __init__(self, vf: Verifier, b: bytes, json_mode: bool, readable: bool) -> None:
        self.vf = vf
        self.b = b
        self.json = json_mode
        self.readable = readable
        self._st: Structure | None = None

    @property
    def st(self) -> Structure:
        if self._st is None:
            self._st = Structure(self.b)
        return self._st

    def _glued(self, s: int) -> bool:
        """Something alphanumeric right before ``s`` that is not a JSON escape letter."""
        return s > 0 and self.b[s - 1] in ALNUM and not after_escape(self.b, s)

    def _exempt(self, s: int, grouped: bool = False) -> bool:
        if self.readable:
            return True
        if not grouped and self.vf.context.search(self.b[max(0, s - 28):s].lower()):
            return True
        if self.json:
            key = self.st.key_of(s)
            return key is not None and self.vf.rules.is_readable_key(key) and not self.vf.rules.is_ai_key(key)
        return False

    def run(self, tid: int, start: int, e: int) -> int | None:
        """Offset of a finding for one trigger match, or None."""
        return _READERS[tid](self, start, e)

    def _email(self, _start: int, e: int) -> int | None:
        b = self.b
        at = b.rfind(b"@", 0, e)
        if at > 0 and b[at - 1] in _EMAIL_CHARS and _HOST.match(b, at + 1):
            return at
        return None

    def _number_at(self, start: int, _e: int) -> int | None:
        return self._number(start)

    def _plus(self, _start: int, e: int) -> int | None:
        b = self.b
        s = b.rfind(b"+", 0, e)
        m = _PHONE.match(b, s)
        digits = bytes(c for c in m.group() if c in _DIGIT)
        t = m.end()
        while t > s and b[t - 1] not in _DIGIT:
            t -= 1
        if (t >= len(b) or b[t] not in ALNUM) and (v.cn_mobile_ok(digits) or v.e164_ok(digits)):
            return s
        return None

    def _jwt(self, _start: int, e: int) -> int | None:
        b = self.b
        s = b.rfind(b"eyJ", 0, e)
        if not self._glued(s) and b[s - 1:s] != b"." and v.jwt_ok(b[s:e]):
            return s
        return None

    def _pem(self, _start: int, e: int) -> int | None:
        return e - 1

    def _aws_id(self, _start: int, e: int) -> int | None:
        b = self.b
        if e < len(b) and b[e] in ALNUM:
            return None
        s = e - 20
        return None if self._glued(s) else s

    def _openai(self, _start: int, e: int) -> int | None:
        b = self.b
        s = e - 19
        m = _TOKEN.match(b, e) if e < len(b) else None
        body = b[s + 3:e] + (m.group() if m else b"")
        if len(body) < 20 or not any(c in _DIGIT or 65 <= c <= 90 for c in body) or (s > 0 and b[s - 1] in b"-_"):
            return None
        return None if self._glued(s) else s

    def _vendor(self, _start: int, e: int) -> int | None:
        b = self.b
        for rx in self.vf._vendor_res:
            m = rx.search(b, max(0, e - 41), e)
            if m is not None and not self._glued(m.start()):
                return m.start()
        return None

    def _auth(self, _start: int, e: int) -> int | None:
        b = self.b
        m = _TOKEN.match(b, e - 8)
        if m is not None and v.credential_token_ok(m.group() + b[m.end():m.end() + 2].strip(b"=")):
            return e - 8
        return None

    def _userinfo(self, _start: int, e: int) -> int | None:
        return e - 1

    def _iban_at(self, _start: int, e: int) -> int | None:
        return self._iban(e)

    def _aws_secret(self, _start: int, e: int) -> int | None:
        b = self.b
        s, t = (e - 40, e) if e == len(b) and b[e - 1] in _BASE64 else (e - 41, e - 1)
        if v.aws_secret_ok(b[s:t]) and not self._exempt(s):
            return s
        return None

    def _name_at(self, _start: int, e: int) -> int | None:
        return self._name(e)

    def _kv_at(self, _start: int, e: int) -> int | None:
        return self._kv(e)

    def _number(self, start: int) -> int | None:
        b = self.b
        # The trigger starts at a boundary: none (start of text), one character, an escape
        # (\n, \u4e2d) or a lone backslash (C:\13800138000).
        s = start + (0 if b[start] in _DIGIT else 1 if b[start] != 92 else 6 if b[start + 1] == 117 else
                     2 if b[start + 1] in b"nrtbf" else 1)
        m = _RUN.match(b, s)
        t = m.end()
        tail = b[t:t + 1] if b[t:t + 1] in (b"X", b"x") else b""
        n = len(b)
        run = b[s:t]
        if not tail and run.isdigit():
            # One run of plain digits: the run itself is the only candidate.
            if not v.plain_run_possible(run):
                return None  # no validator accepts it (timestamps, counters, order numbers)
            if b[s - 1:s] in (b".", b"+", b"-") or (s > 0 and b[s - 1] in WORD and not after_escape(b, s)):
                return None
            if t < n and (b[t] in WORD or (b[t] in b"-." and t + 1 < n and b[t + 1] in ALNUM)):
                return None
            return s if self._sensitive_number(run, b"") and not self._exempt(s) else None
        # Every space-separated stretch of the run with 11+ digits is a candidate, the whole run too.
        cuts = [s]
        space = b.find(b" ", s, t)
        while space >= 0:
            cuts.append(space + 1)
            space = b.find(b" ", space + 1, t)
        cuts.append(t + 1)
        for i in range(len(cuts) - 1):
            for j in range(len(cuts) - 1, i, -1):
                cs, ce = cuts[i], cuts[j] - 1
                text = b[cs:ce]
                digits = text.replace(b" ", b"").replace(b"-", b"")
                count = len(digits)
                if count < 11:
                    break
                end_tail = tail if ce == t else b""
                if (count != 17) if end_tail else (count not in v.DIGIT_COUNTS):
                    continue  # no ID, mobile or card has this many digits
                if cs == s and (b[cs - 1:cs] in (b".", b"+", b"-") or (cs > 0 and b[cs - 1] in WORD and not after_escape(b, cs))):
                    continue
                nxt = ce + len(end_tail)
                if nxt < n and (b[nxt] in WORD or (b[nxt] in b"-." and nxt + 1 < n and b[nxt + 1] in ALNUM)):
                    continue
                if self._sensitive_number(text, end_tail) and not self._exempt(cs, text != digits):
                    return cs
        return None

    @staticmethod
    def _sensitive_number(text: bytes, tail: bytes) -> bool:
        if text.isdigit():
            shape, digits = (len(text),), text
        else:
            parts = text.replace(b"-", b" ").split(b" ")
            shape = tuple(map(len, parts))
            digits = b"".join(parts)
        whole = digits + tail
        if len(whole) == 18 and whole[:17].isdigit() and v.cn_id_shaped(whole[:17] + b"0"):
            return v.cn_id_ok(whole) and v.id_grouping(shape[:-1] + (shape[-1] + len(tail),))
        if tail:
            return False
        if len(whole) == 15 and v.cn_id_shaped(whole) and v.id_grouping(shape):
            return True
        if v.cn_mobile_ok(digits) and v.mobile_grouping(shape):
            return True
        return v.card_ok(digits, len(shape) > 1) and (len(shape) == 1 or v.card_grouping(shape))

    def _iban(self, e: int) -> int | None:
        b = self.b
        s = max(0, e - 14)
        m = None
        for start in range(s, e - 11):
            if b[start:start + 2].isalpha() and b[start:start + 2].isupper() and b[start + 2:start + 4].isdigit():
                m = _IBAN_RUN.match(b, start)
                if m:
                    break
        if m is None or self._glued(m.start()):
            return None
        compact = m.group().replace(b" ", b"")
        length = v.IBAN_LENGTHS.get(compact[:2].decode())
        if length and len(compact) >= length and v.iban_ok(compact[:length]) and not self._exempt(m.start()):
            return m.start()
        return None

    def _name(self, e: int) -> int | None:
        """``name: value`` / ``"key": value`` with a sensitive name and a value that is not a token."""
        b = self.b
        rules = self.vf.rules
        if b.startswith(b'"[MASKED', e):
            return None  # the common case: a masked value right after the name
        if self.json and b[e - 1] == 58 and b[e - 2] == 34 and not escaped(b, e - 2):
            key = self.st.key_before(e)
            if key is None or rules.key_rule(key) is None:
                return None
            return self._json_value(e)
        m = _AFTER.match(b, e)
        after = m.end()
        if after >= len(b) or b.startswith(b"[MASKED", after) or b.startswith(b"//", e):
            return None
        q = e - 1
        while q > 0 and b[q - 1] in b" \"'\\":
            q -= 1
        window = b[max(0, q - 64):q]
        start = q - (len(window) - len(window.rstrip(_NAME_CHARS)))  # up to 64 name characters
        if escaped(b, start):
            start += 1
        name = b[start:q].strip(b".+%")
        if not name or b.startswith(b"[MASKED:", start - 8):
            return None
        if rules.text_name_rule(name) is None and not (start > 0 and b[start - 1] in b"?&" and rules.is_query_param(name)):
            return None
        c = b[after]
        delim = m.group(1)
        if delim and b.startswith(delim, after):
            return None  # empty quoted value
        if c in b"{[\r\n&;,)]}>|<\\" or (c == 34 and self.json and not delim):
            return None
        return after

    def _json_value(self, i: int) -> int | None:
        b = self.b
        c = b[i]
        if c == 34:
            return None if b.startswith(b'""', i) or b.startswith(b"[MASKED", i + 1) else i
        if c in b"{[":
            end = self.st.value_end(i)
            return None if _all_tokens(orjson.loads(b[i:end])) else i
        if c in b"-0123456789":
            return i
        return None

    def _kv(self, e: int) -> int | None:
        b = self.b
        if not self.json:
            return None
        name_end = e - 10
        name_start = b.rfind(b'":"', 0, name_end) + 3
        if escaped(b, name_end) or self.vf.rules.key_rule(b[name_start:name_end]) is None:
            return None
        return self._json_value(e)


_READERS = [None] * 14
for _tid, _reader in ((V_EMAIL, _Check._email), (V_NUMBER, _Check._number_at), (V_PLUS, _Check._plus),
                      (V_JWT, _Check._jwt), (V_PEM, _Check._pem), (V_AWS_ID, _Check._aws_id), (V_VENDOR, _Check._vendor),
                      (V_OPENAI, _Check._openai), (V_AUTH, _Check._auth), (V_USERINFO, _Check._userinfo),
                      (V_IBAN, _Check._iban_at), (V_AWS_SECRET, _Check._aws_secret), (V_NAME, _Check._name_at),
                      (V_KV, _Check._kv_at)):
    _READERS[_tid] = _reader


def _all_tokens(value) -> bool:
    if isinstance(value, dict):
        return all(_all_tokens(x) for x in value.values())
    if isinstance(value, list):
        return all(_all_tokens(x) for x in value)
    if isinstance(value, str):
        return not value or value.startswith("[MASKED:")
    return value is None or isinstance(value, bool)
