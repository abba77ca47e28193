"""The masker: scan triggers, then confirm each candidate and record what replaces it.

One ``Masker.run`` masks one buffer: compact JSON text of a whole event (``json_mode``) or one
plain string. Triggers (see ``scanner``) say *where* to look; the handlers below say *what* is
there, with validators deciding. Findings become spans ``(start, end, token, kind)`` applied in
one pass at the end, outermost span winning, so the output keeps every byte that was not masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import orjson

from plugwatch.masking import validators as v
from plugwatch.masking.keys import KeyFindings
from plugwatch.masking.rules import KeyRule, Rules
from plugwatch.masking.scanner import Scanner
from plugwatch.masking.structure import ALNUM, DIGITS, WORD, Structure, after_escape, clean_end, clean_start
from plugwatch.masking.styles import Tokenizer
from plugwatch.masking.triggers import (_VENDOR_TOKENS, T_AI_KEY, T_ASSIGN, T_AUTH, T_AWS_ID, T_AWS_SECRET, T_DIGITS,
                                        T_EMAIL, T_IBAN, T_JWT, T_KV, T_PAIR, T_PEM, T_PLUS, T_QUERY, T_TOKEN, T_USERINFO,
                                        build_triggers)

_LOCAL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
_DOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*"
                     rb"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_PLUS_NUM = re.compile(rb"\+(?:[ \-.()]{0,2}[0-9]){8,15}")
_JWT = re.compile(rb"eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}(?:\.[A-Za-z0-9_\-]*){0,3}")
_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[^\"]{0,16384}?-----END [A-Z0-9 ]{0,40}"
                  rb"PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,.\-]*)")
_CRED = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_IBAN_RUN = re.compile(rb"[A-Z]{2}[0-9]{2}[A-Z0-9 ]*")
_RUN = re.compile(rb"[0-9]+(?:[ \-][0-9]+)*")  # digits with single separators; one-char repeats are fast in re
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _left_ok(b: bytes, s: int, word: frozenset[int] = ALNUM) -> bool:
    """Nothing word-like glued to the left of ``s`` (a JSON escape does not count)."""
    return s == 0 or b[s - 1] not in word or after_escape(b, s)


def _unescape(raw: bytes) -> bytes:
    try:
        return orjson.loads(b'"' + raw + b'"').encode()
    except orjson.JSONDecodeError:
        return raw


class _Event(KeyFindings):
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

    def readable_at(self, s: int, grouped: bool = False) -> bool:
        """A number here stays: readable key (trace_id, order_id, ...) or a context word right
        before it ("order 2024..."); a number written in card-like groups never counts as one."""
        if self.readable:
            return True
        m = self.m
        if not grouped and m.context.search(self.b[max(0, s - 28):s].lower()):
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
        domain = _DOMAIN.match(b, at + 1)
        if domain is None:
            return
        before = b[max(0, at - 64):at]
        local = len(before) - len(before.rstrip(_LOCAL_CHARS))  # up to 64 address characters before '@'
        if not local:
            return
        s = at - local
        if s > 0 and b[s - 1] == 58 and b.rfind(b"://", max(0, s - 200), s) >= 0:
            return  # scheme://user:password@host - the password is the url_password finding
        self.add(s, domain.end(), "email")

    def digits(self, m: int, e: int) -> None:
        b = self.b
        # The trigger starts at a boundary: none (start of text), one character, an escape (\n,
        # \u4e2d) or a lone backslash (C:\13800138000).
        s = (m if b[m] in DIGITS else m + 1 if b[m] != 92 else m + 6 if b[m + 1] == 117 else
             m + 2 if b[m + 1] in b"nrtbf" else m + 1)
        t = _RUN.match(b, s).end()
        run = b[s:t]
        if run.isdigit() and b[t:t + 1] not in (b"X", b"x") and not v.plain_run_possible(run):
            return  # 13 plain digits from 1 (an epoch timestamp), 14 from 3 failing Luhn (an order number)
        if -s in self.done:
            return
        self.done.add(-s)
        n = len(b)
        x = t + 1 if t < n and b[t] in b"Xx" and (t + 1 >= n or b[t + 1] not in WORD) else t
        left_ok = True  # the trigger only starts after a boundary
        right_ok = x >= n or (b[x] not in WORD and not (b[x] in b"-." and x + 1 < n and b[x + 1] in ALNUM))
        if left_ok and right_ok and self._number(s, x, run, b[t:x]):
            return
        # "retry 12 13800138000": the whole run is nothing, a space-separated part may be.
        if 32 not in run:
            return
        parts = run.split(b" ")
        sizes = [len(part) - part.count(b"-") for part in parts]
        if sum(sizes) - min(sizes[0], sizes[-1]) < 11:
            return  # every part leaves out the first or the last group: none holds 11 digits
        groups = []
        pos = s
        for part, size in zip(parts, sizes):
            groups.append((pos, pos + len(part), size))
            pos += len(part) + 1
        count = len(groups)
        i = 0
        while i < count:
            digits = 0
            spans = []
            for j in range(i, count):
                digits += groups[j][2]
                if digits in v.DIGIT_COUNTS and (i, j + 1) != (0, count) and (i or left_ok) and (j + 1 < count or right_ok):
                    spans.append(j + 1)
            for j in reversed(spans):
                gs, ge = groups[i][0], groups[j - 1][1]
                if self._number(gs, ge, b[gs:ge], b""):
                    i = j - 1
                    break
            i += 1

    def _number(self, s: int, t: int, run: bytes, tail: bytes) -> bool:
        digits = run.translate(None, b" -")
        if len(digits) not in v.DIGIT_COUNTS and (not tail or len(digits) < 11):
            return False
        grouped = len(digits) != len(run)
        groups = tuple(map(len, run.replace(b"-", b" ").split(b" "))) if grouped else (len(digits),)
        full = digits + tail
        kind = None
        if len(full) == 18 and v.cn_id_shaped(full[:17] + b"0"):
            if not v.cn_id_ok(full):
                return True  # a resident-ID shape with a wrong check character: a near miss, leave it
            kind = "cn_id" if v.id_grouping(groups[:-1] + (groups[-1] + len(tail),)) else None
        elif tail:
            return False
        elif len(full) == 15 and v.cn_id_shaped(full) and v.id_grouping(groups):
            kind = "cn_id"
        elif v.cn_mobile_ok(digits) and v.mobile_grouping(groups):
            kind = "phone"
        elif v.card_ok(digits, grouped) and (not grouped or v.card_grouping(groups)):
            kind = "card"
        if kind is None or self.readable_at(s, grouped):
            return kind is not None
        quoted = self.json and not grouped and not self.structure().in_string(s)
        self.add(s, t, kind, quoted=quoted)
        return True

    def plus(self, _s: int, e: int) -> None:
        b = self.b
        p = e - 2
        m = _PLUS_NUM.match(b, p)
        if m is None:
            return
        t = m.end()
        if t < len(b) and b[t] in ALNUM:
            # "+14155552671 1234567": more digits follow; the number ends at a separator.
            t = next((i for i in range(t - 1, p + 8, -1) if b[i] in b" -.()" and b[i - 1] in DIGITS), 0)
            if not t:
                return
        digits = b[p:t].translate(None, b"+ -.()")
        if v.cn_mobile_ok(digits) or v.e164_ok(digits):
            self.add(p, t, "phone")

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
        # The country fixes the length: the first that many letters and digits (spaces between
        # allowed) are the IBAN when they check out, whatever follows ("... 2802 0", "...2802X").
        found = _IBAN_RUN.match(b, s)
        if found is None:
            return
        length = v.IBAN_LENGTHS[b[s:s + 2].decode()]
        end, taken = s, 0
        for i in range(s, found.end()):
            if b[i] != 0x20:
                taken += 1
                if taken == length:
                    end = i + 1
                    break
        if taken == length and v.iban_ok(b[s:end].replace(b" ", b"")) and not self.readable_at(s):
            self.add(s, end, "iban")

    def token(self, e: int, n: int) -> None:
        _, length, full, kind = self.m.vendor[n]
        b = self.b
        s = e - length
        if not _left_ok(b, s):
            return
        m = full.match(b, s)
        if kind == "openai_key":
            # A key has 20+ characters with a digit or a capital; "sk-learn-..." prose does not.
            body = m.group()[3:]
            if len(body) < 20 or (body.translate(None, b"0123456789") == body and body.lower() == body):
                return
        self.add(s, clean_end(b, m.end()), kind)

    def output(self, counts: dict[str, int]) -> bytes:
        if self.ai:
            self.apply_ai()
        # Outermost first; equal spans from two detectors resolve by name, so the result does not
        # depend on the order the scanner reported them in.
        spans = sorted(self.spans, key=lambda x: (x[0], -x[1], x[3]))
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


def _vendor_token(ev: _Event, _s: int, e: int, n: int) -> None:
    ev.token(e, n)


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
        self.handlers: dict[int, Callable[[_Event, int, int], None]] = {
            T_EMAIL: _Event.email, T_DIGITS: _Event.digits, T_PLUS: _Event.plus, T_JWT: _Event.jwt,
            T_PEM: _Event.pem, T_AWS_ID: _Event.aws_id, T_AWS_SECRET: _Event.aws_secret, T_AUTH: _Event.auth,
            T_USERINFO: _Event.userinfo, T_IBAN: _Event.iban, T_ASSIGN: _Event.assign, T_KV: _Event.kv,
            T_PAIR: _Event.pair, T_AI_KEY: _Event.ai_key, T_QUERY: _Event.assign,
        }
        for n in range(len(_VENDOR_TOKENS)):
            self.handlers[T_TOKEN + n] = partial(_vendor_token, n=n)
        # Indexed by trigger id: the per-hit dispatch is the hottest loop in the masker.
        self._by_id = tuple(self.handlers[i] for i in range(max(self.handlers) + 1))

    def run(self, b: bytes, json_mode: bool, counts: dict[str, int], readable: bool = False,
            hits: list[tuple[int, int, int]] | None = None) -> bytes:
        """Masked copy of ``b`` (the same object when nothing was found). ``hits``: this
        masker's trigger matches in ``b`` when the caller already scanned it."""
        if hits is None:
            hits = self.scanner.scan(b)
        if not hits:
            return b
        ev = _Event(self, b, json_mode, readable)
        handlers = self._by_id
        for tid, start, end in hits:
            handlers[tid](ev, start, end)
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
