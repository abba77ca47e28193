"""Where a byte offset sits in compact JSON text, answered without parsing the whole document.

The engine masks an event as the text ``orjson.dumps`` writes: compact, UTF-8, and escaping only
``"``, ``\\`` and control characters. In that text every structural quote is a ``"`` not preceded
by an escaping backslash; ``Structure`` blanks out escaped backslashes and quotes (same length) so
``bytes.count``/``find`` on quotes answer "inside a string?" and "which key?" at C speed. It is
built lazily, only for events where a finding needs the answer.
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


def clean_start(b: bytes, s: int) -> int:
    """Move a span start off an escape sequence (``\\n`` + ``bob@x.io`` must start at ``b``)."""
    if s > 0 and escaped(b, s):
        return s + 5 if b[s] == 117 else s + 1  # \uXXXX or a one-letter escape
    return s


def clean_end(b: bytes, e: int) -> int:
    """Move a span end off a dangling backslash so an escape is never cut in half."""
    if e > 0 and b[e - 1] == 92 and not escaped(b, e - 1):
        return e - 1
    return e


class Structure:
    """Structural facts about one compact JSON document."""

    __slots__ = ("b", "q")

    def __init__(self, b: bytes) -> None:
        self.b = b
        self.q = b.replace(b"\\\\", b"__").replace(b'\\"', b"__")

    def in_string(self, pos: int) -> bool:
        return bool(self.q.count(b'"', 0, pos) & 1)

    def literal(self, pos: int) -> tuple[int, int]:
        """Bounds (quotes included) of the string literal holding ``pos``."""
        start = self.q.rfind(b'"', 0, pos)
        return start, self.q.find(b'"', pos) + 1

    def key_before(self, value_start: int) -> bytes | None:
        """The key whose value starts at ``value_start`` (``"key":`` right before it)."""
        q = self.q
        if value_start < 3 or q[value_start - 1] != 58 or q[value_start - 2] != 34:
            return None
        start = q.rfind(b'"', 0, value_start - 2)
        return self.b[start + 1:value_start - 2]

    def key_of(self, pos: int) -> bytes | None:
        """The key owning the string literal or number at ``pos``, or None (array item, key)."""
        if self.in_string(pos):
            start = self.q.rfind(b'"', 0, pos)
        else:
            start = pos
            while start > 0 and self.q[start - 1] not in b":,[{":
                start -= 1
        return self.key_before(start)

    def value_end(self, i: int) -> int:
        """End of the JSON value starting at ``i`` (string, container, number or literal)."""
        q = self.q
        c = q[i]
        if c == 34:
            return q.find(b'"', i + 1) + 1
        if c in (123, 91):
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
        m = _NUMBER_END.match(q, i)
        return m.end() if m else i

    def key_start(self, value_start: int) -> int:
        """Offset of the opening quote of the key before ``value_start``."""
        return self.q.rfind(b'"', 0, value_start - 2)
