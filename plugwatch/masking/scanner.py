"""One pass over an event's bytes that reports every place worth a closer look.

A scanner holds a list of trigger patterns (id, regex, flags) and returns ``(id, start, end)``
for each place one matches; ``start`` is only meaningful for triggers flagged ``START`` (it costs
Hyperscan a little to track). Triggers are short and cheap; the code behind each id decides what was
really found. With Hyperscan (PyPI ``hyperscan``) all triggers run in one SIMD pass over the
bytes; without it each trigger runs as a Python ``re`` (same results, several times slower), so
the engine works wherever Python does.

Two speed-ups keep Hyperscan's results: ``PairScanner`` runs the masker's and the verifier's
triggers in one pass over the same bytes, and the one trigger Hyperscan is slow at
(``BASE64_40``) is left out of the database: Python lists its matches exactly, with C-speed
bytes methods. Compiled databases are shared by engines with the same rules.

Triggers must use syntax both engines share: no look-arounds, no back-references.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache

try:
    import hyperscan
except ImportError:  # pragma: no cover - exercised where the wheel is unavailable
    hyperscan = None

CASELESS = 1
START = 2
Trigger = tuple[int, bytes, int]  # (id, pattern, CASELESS | START)

# Exactly 40 base64 characters standing alone (an AWS secret key's shape). A bounded repeat of a
# wide class is the most expensive pattern for Hyperscan - as much as all other triggers together,
# and still ~3 us an 835-byte event as a bare presence flag - so it is not compiled at all:
# ``_base64_40_ends`` lists this pattern's matches exactly as Hyperscan would, in ~2 us.
BASE64_40 = rb"(?:^|[^A-Za-z0-9/+=]|\\[nrtbf]|\\u[0-9A-Fa-f]{4})[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)"
_B64_OR_PAD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+="
_RUNS = bytes(119 if c in _B64_OR_PAD else 32 for c in range(256))  # run characters -> "w", others -> " "
_W40 = b"w" * 40
_HEX = b"0123456789abcdefABCDEF"


def _base64_40_ends(data: bytes) -> list[int]:
    """End offsets of ``BASE64_40`` matches in ``data``, as Hyperscan reports them (``$`` also
    matches before a final newline)."""
    if len(data) < 40:
        return []
    runs = data.translate(_RUNS)
    i = runs.find(_W40)
    if i < 0:
        return []
    n = len(data)
    ends = []
    while i >= 0:
        j = runs.find(b" ", i + 40)
        if j < 0:
            j = n
        # The run [i, j) holds the 40 characters after a boundary: nothing, one character outside
        # the run alphabet, an escape \n ... \f (run 41 long) or \uXXXX (run 45 long).
        size = j - i
        if (size == 40 or (size == 41 and i and data[i - 1] == 92 and data[i] in b"nrtbf")
                or (size == 45 and i and data[i - 1] == 92 and data[i] == 117 and not data[i + 1:i + 5].translate(None, _HEX))) \
                and 61 not in data[j - 40:j]:
            if j == n:
                ends.append(n)
            else:
                ends.append(j + 1)
                if j == n - 1 and data[j] == 10:
                    ends.append(j)
        i = runs.find(_W40, j)
    return ends


# Runs of 11 or more digits (single spaces or dashes allowed between them) after a boundary: where
# a mobile, a card or a resident ID may be. A run from 1 can only be one written in groups, an
# 11-digit mobile, or a resident ID of 15 or 18 digits (17 and an X) -- ``validators.PLAIN_LENGTHS``,
# which both handlers apply to every run -- so plain runs of 12 to 14 digits from 1 that do not go
# on in a group (epoch milliseconds: half the digit runs of a report, one in each event) are left
# out here instead of being rejected one by one, at ~1 us a side. Branches for a run from 1: a
# separator among its first 11 digits (one branch per place of the first), 11 plain digits and no
# twelfth, 15 plain digits, 12 to 14 plain digits that go on after a separator.
def _digit_run(look_ahead: bool) -> bytes:
    """The trigger; ``look_ahead``: the ``re`` backend's form, which looks at what follows a run
    instead of taking it (``finditer``'s matches do not overlap, so a taken character could not
    start the next match; Hyperscan reports overlapping matches, and has no look-ahead)."""
    no_twelfth, goes_on = (rb"(?![0-9])", rb"(?=[ \-][0-9])") if look_ahead else (rb"(?:[^0-9]|$)", rb"[ \-][0-9]")
    from_one = [b"1" + rb"[0-9]" * j + rb"[ \-][0-9]" + rb"(?:[ \-]?[0-9])" * (9 - j) for j in range(10)]
    from_one += [rb"1[0-9]{10}" + no_twelfth, rb"1[0-9]{14}", rb"1[0-9]{11,13}" + goes_on]
    return (rb"(?:^|[^0-9A-Za-z_.+\-]|\\[nrtbf]|\\u[0-9A-Fa-f]{4})(?:[02-9](?:[ \-]?[0-9]){10}|"
            + b"|".join(from_one) + b")")


DIGIT_RUN = _digit_run(False)
# Patterns the ``re`` backend runs in an equivalent form of its own.
_RE_FORMS = {DIGIT_RUN: _digit_run(True)}

# Patterns listed by Python instead of Hyperscan: pattern -> function(data) -> end offsets.
_EXPANDERS = {BASE64_40: _base64_40_ends}


def _backend(use_hyperscan: bool | None) -> str:
    want = hyperscan is not None if use_hyperscan is None else use_hyperscan
    if want and hyperscan is None:
        raise RuntimeError("hyperscan was requested but is not installed: pip install hyperscan")
    return "hyperscan" if want else "re"


def _database(triggers: Sequence[Trigger]):
    return _compiled(tuple(triggers))


@lru_cache(maxsize=16)
def _compiled(triggers: tuple[Trigger, ...]):
    """Compiling is the slow part of building an engine (a fraction of a second per database);
    engines with the same rules share the read-only database (None: no pattern for Hyperscan).
    Patterns with an expander are not compiled; the scanners run the expander instead."""
    compiled = [(i, p, f) for i, p, f in triggers if p not in _EXPANDERS]
    if not compiled:
        return None
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[p for _, p, _ in compiled], ids=[i for i, _, _ in compiled], elements=len(compiled),
               flags=[(hyperscan.HS_FLAG_CASELESS if f & CASELESS else 0) | (hyperscan.HS_FLAG_SOM_LEFTMOST if f & START else 0)
                      for _, _, f in compiled])
    return db


class _Scratches:
    """One Hyperscan scratch per thread: scratch space must not be shared by concurrent scans."""

    def __init__(self, db) -> None:
        self._db = db
        self._local = threading.local()

    def get(self):
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        return scratch


class Scanner:
    """Finds trigger matches; ``scan`` returns a list of (trigger id, start, end)."""

    def __init__(self, triggers: Sequence[Trigger], use_hyperscan: bool | None = None) -> None:
        self.triggers = list(triggers)
        self.backend = _backend(use_hyperscan)
        if self.backend == "hyperscan":
            self._db = _database(self.triggers)
            self._scratches = _Scratches(self._db) if self._db is not None else None
            # (trigger id, expander) for the patterns Python lists instead of Hyperscan
            self._expand = tuple((i, _EXPANDERS[p]) for i, p, _ in self.triggers if p in _EXPANDERS)
        else:
            self._res = [(i, re.compile(_RE_FORMS.get(p, p), re.IGNORECASE if f & CASELESS else 0))
                         for i, p, f in self.triggers]

    def scan(self, data: bytes) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []
        if self.backend == "hyperscan":
            if self._db is not None:
                self._db.scan(data, match_event_handler=_collect, context=hits, scratch=self._scratches.get())
            for tid, expand in self._expand:
                hits.extend([(tid, 0, end) for end in expand(data)])
        else:
            for i, rx in self._res:
                hits.extend((i, m.start(), m.end()) for m in rx.finditer(data))
        return hits


def _collect(tid: int, start: int, end: int, _flags: int, hits: list[tuple[int, int, int]]) -> None:
    hits.append((tid, start, end))


class PairScanner:
    """Two scanners' triggers in one pass: ``scan`` returns each one's hits as its own ``scan``
    would (Hyperscan reports every pattern's matches independently of the others in a database).
    A pattern both scanners use (same text and flags) is compiled once and its hits go to both.
    One difference: where two of a side's patterns share an id but not a route, a match of both
    at one offset reaches that side twice; every reader treats a repeat like the first report.
    Lets the engine look at a buffer once when both would scan the same bytes."""

    def __init__(self, first: Scanner, second: Scanner) -> None:
        self.first, self.second = first, second
        self.backend = first.backend
        if self.backend == "hyperscan":
            # (pattern, flags, k-th use on that side) -> [id for first, id for second]
            slots: dict[tuple[bytes, int, int], list[int]] = {}
            for side, scanner in enumerate((first, second)):
                uses: dict[tuple[bytes, int], int] = {}
                for tid, pattern, flags in scanner.triggers:
                    k = uses[pattern, flags] = uses.get((pattern, flags), -1) + 1
                    slots.setdefault((pattern, flags, k), [-1, -1])[side] = tid
            # One database id per route, as patterns sharing an id share it in each scanner's
            # own database (Hyperscan reports an id once per offset).
            routes: dict[tuple[int, int], int] = {}
            patterns = [(routes.setdefault(tuple(slot), len(routes)), pattern, flags)
                        for (pattern, flags, _), slot in slots.items()]
            self._db = _database(patterns)
            self._routes = tuple(routes)
            self._scratches = _Scratches(self._db) if self._db is not None else None
            self._expand = tuple((self._routes[n], _EXPANDERS[pattern]) for n, pattern, _ in patterns
                                 if pattern in _EXPANDERS)

    def scan(self, data: bytes) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        if self.backend != "hyperscan":
            return self.first.scan(data), self.second.scan(data)
        first: list[tuple[int, int, int]] = []
        second: list[tuple[int, int, int]] = []
        if self._db is not None:
            self._db.scan(data, match_event_handler=_collect_pair, context=(first, second, self._routes),
                          scratch=self._scratches.get())
        for (a, b), expand in self._expand:
            for end in expand(data):
                if a >= 0:
                    first.append((a, 0, end))
                if b >= 0:
                    second.append((b, 0, end))
        return first, second


def _collect_pair(n: int, start: int, end: int, _flags: int, context) -> None:
    a, b = context[2][n]
    if a >= 0:
        context[0].append((a, start, end))
    if b >= 0:
        context[1].append((b, start, end))
