"""Where a byte offset sits in compact JSON text, answered without parsing the whole document.

The engine masks an event as the text ``orjson.dumps`` writes: compact, UTF-8, escaping only
``"``, ``\\`` and control characters. In that text a quote is structural exactly when it is not
preceded by an escaping backslash, so most questions ("which key owns this value?", "where does
this string end?") are a ``find``/``rfind`` plus a backslash count. Only "is this offset inside a
string at all?" needs the whole prefix; ``Structure`` answers it by blanking escaped backslashes
and quotes (same length) once, lazily, and counting quotes at C speed.
"""

from __future__ import annotations

import re

_NUMBER_END = re.compile(rb"[^,}\]]*")
_BRACKETS = re.compile(rb'[\[\]{}"]')
WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
DIGITS = frozenset(b"0123456789")


def escaped(b: bytes, i: int) -> bool:
    """True if ``b[i]`` follows an escaping backslash (an odd run of backslashes)."""
    n = 0
    while i > 0 and b[i - 1] == 92:
        n += 1
        i -= 1
    return bool(n & 1)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def after_escape(b: bytes, s: int) -> bool:
    """``b[:s]`` ends with an escape sequence (``\n``, ``\u4e2d``), at any nesting depth: a
    boundary, as a newline or a CJK character would be once decoded."""
    if s >= 2 and b[s - 2] == 92 and b[s - 1] in b"nrtbf":
        return True
    return s >= 6 and b[s - 6] == 92 and b[s - 5] == 117 and all(c in _HEX for c in b[s - 4:s])


def clean_start(b: bytes, s: int) -> int:
    """Move a span start off an escape sequence (``\n`` + ``bob@x.io`` must start at ``b``)."""
    if s > 0 and b[s - 1] == 92:
        if b[s] == 117 and all(c in _HEX for c in b[s + 1:s + 5]):
            return s + 5
        if b[s] in b"nrtbf":
            return s + 1
    return s


def clean_end(b: bytes, e: int) -> int:
    """Move a span end off a dangling backslash so an escape is never cut in half."""
    if e > 0 and b[e - 1] == 92 and not escaped(b, e - 1):
        return e - 1
    return e


def prev_quote(b: bytes, pos: int) -> int:
    """Offset of the last structural quote before ``pos`` (-1 if none)."""
    q = b.rfind(b'"', 0, pos)
    while q > 0 and b[q - 1] == 92 and escaped(b, q):
        q = b.rfind(b'"', 0, q)
    return q


def next_quote(b: bytes, pos: int) -> int:
    """Offset of the first structural quote at or after ``pos`` (-1 if none)."""
    q = b.find(b'"', pos)
    while q > 0 and b[q - 1] == 92 and escaped(b, q):
        q = b.find(b'"', q + 1)
    return q


class Structure:
    """Structural facts about one compact JSON document (``b`` must be orjson's output)."""

    __slots__ = ("b", "_q")

    def __init__(self, b: bytes) -> None:
        self.b = b
        self._q: bytes | None = None

    @property
    def q(self) -> bytes:
        """``b`` with escaped backslashes and quotes blanked: only structural quotes remain."""
        if self._q is None:
            b = self.b
            self._q = b.replace(b"\\\\", b"__").replace(b'\\"', b"__") if 92 in b else b
        return self._q

    def in_string(self, pos: int) -> bool:
        b = self.b
        before = b[pos - 1] if pos > 0 else 0
        # Outside strings a value starts after one of :,[ - anything else means string content.
        if before not in b":,[" and before != 0:
            return True
        return bool(self.q.count(b'"', 0, pos) & 1)

    def in_string_exact(self, pos: int) -> bool:
        return bool(self.q.count(b'"', 0, pos) & 1)

    def literal(self, pos: int) -> tuple[int, int]:
        """Bounds (quotes included) of the string literal holding ``pos``."""
        return prev_quote(self.b, pos), next_quote(self.b, pos) + 1

    def key_before(self, value_start: int) -> bytes | None:
        """The key whose value starts at ``value_start`` (``"key":`` right before it)."""
        b = self.b
        if value_start < 3 or b[value_start - 1] != 58 or b[value_start - 2] != 34 or escaped(b, value_start - 2):
            return None
        return b[prev_quote(b, value_start - 2) + 1:value_start - 2]

    def key_of(self, pos: int) -> bytes | None:
        """The key owning the string literal or number at ``pos``, or None (array item, key)."""
        if self.in_string(pos):
            return self.key_before(prev_quote(self.b, pos))
        start = pos
        while start > 0 and self.b[start - 1] not in b":,[{":
            start -= 1
        return self.key_before(start)

    def value_end(self, i: int) -> int:
        """End of the JSON value starting at ``i`` (string, container, number or literal)."""
        b = self.b
        c = b[i]
        if c == 34:
            return next_quote(b, i + 1) + 1
        if c in (123, 91):
            q = self.q
            depth = 0
            pos = i
            while True:
                m = _BRACKETS.search(q, pos)
                if m is None:
                    return len(q)
                ch = q[m.start()]
                if ch == 34:
                    pos = q.find(b'"', m.start() + 1) + 1
                    continue
                depth += 1 if ch in (123, 91) else -1
                pos = m.end()
                if depth == 0:
                    return pos
        m = _NUMBER_END.match(b, i)
        return m.end() if m else i

    def key_start(self, value_start: int) -> int:
        """Offset of the opening quote of the key before ``value_start``."""
        return prev_quote(self.b, value_start - 2)

    def structural(self, i: int) -> bool:
        """``b[i]`` is a quote that opens or closes a string (not an escaped one)."""
        return self.b[i] == 34 and not escaped(self.b, i)
