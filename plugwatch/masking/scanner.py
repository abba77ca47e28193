"""One pass over an event's bytes that reports every place worth a closer look.

A scanner holds a list of trigger patterns (id, regex, flags) and returns ``(id, start, end)``
for each place one matches; ``start`` is only meaningful for triggers flagged ``START`` (it costs
Hyperscan a little to track). Triggers are short and cheap; the code behind each id decides what was
really found. With Hyperscan (PyPI ``hyperscan``) all triggers run in one SIMD pass over the
bytes; without it each trigger runs as a Python ``re`` (same results, several times slower), so
the engine works wherever Python does.

Triggers must use syntax both engines share: no look-arounds, no back-references.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

try:
    import hyperscan
except ImportError:  # pragma: no cover - exercised where the wheel is unavailable
    hyperscan = None

CASELESS = 1
START = 2
Trigger = tuple[int, bytes, int]  # (id, pattern, CASELESS | START)


class Scanner:
    """Finds trigger matches; ``scan`` returns a list of (trigger id, start, end)."""

    def __init__(self, triggers: Sequence[Trigger], use_hyperscan: bool | None = None) -> None:
        self.triggers = list(triggers)
        want = hyperscan is not None if use_hyperscan is None else use_hyperscan
        if want and hyperscan is None:
            raise RuntimeError("hyperscan was requested but is not installed: pip install hyperscan")
        self.backend = "hyperscan" if want else "re"
        if want:
            self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._db.compile(
                expressions=[p for _, p, _ in self.triggers],
                ids=[i for i, _, _ in self.triggers],
                elements=len(self.triggers),
                flags=[(hyperscan.HS_FLAG_CASELESS if f & CASELESS else 0) | (hyperscan.HS_FLAG_SOM_LEFTMOST if f & START else 0)
                       for _, _, f in self.triggers],
            )
            self._local = threading.local()
        else:
            self._res = [(i, re.compile(p, re.IGNORECASE if f & CASELESS else 0)) for i, p, f in self.triggers]

    def _scratch(self):
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            # One scratch per thread: Hyperscan scratch space must not be shared by concurrent scans.
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        return scratch

    def scan(self, data: bytes) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []
        if self.backend == "hyperscan":
            self._db.scan(data, match_event_handler=_collect, context=hits, scratch=self._scratch())
        else:
            for i, rx in self._res:
                hits.extend((i, m.start(), m.end()) for m in rx.finditer(data))
        return hits


def _collect(tid: int, start: int, end: int, _flags: int, hits: list[tuple[int, int, int]]) -> None:
    hits.append((tid, start, end))
