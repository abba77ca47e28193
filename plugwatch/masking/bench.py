"""``plugwatch bench mask``: engine throughput against an orjson round trip of the same lines.

The corpus is the worst case for masking: every event carries at least one secret (see
``corpus``), with loghub lines as message bodies when ../shared/data/loghub exists. Both sides
run single-threaded in this process over the same JSON lines: the engine as the service's
ingest and the CLI use it (bytes in -> parse, mask, verify -> bytes out), orjson as
``dumps(loads(line))``. Each is timed over several passes and the best pass counts, because a
shared machine only ever adds time.
"""

from __future__ import annotations

import gc
import time

import orjson

from plugwatch.masking.corpus import CorpusGenerator
from plugwatch.masking.engine import MaskingEngine
from plugwatch.masking.stats import MaskStats

PASSES = 3


def _best(fn, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_mask(events: int = 20000, seed: int = 1, passes: int = PASSES, echo_summary: bool = False,
               engine: MaskingEngine | None = None) -> str:
    """Print progress and figures; return the summary line
    ``mask: <MB/s> MB/s; <events/s> events/s; <ratio>x json round trip`` (printed too when
    ``echo_summary``, so a caller that prints the return value does not print it twice)."""
    generator = CorpusGenerator(seed)
    source = "loghub + synthetic" if generator.bodies else "synthetic"
    corpus = generator.events(events)
    lines = [orjson.dumps(ev) for ev, _ in corpus]
    size = sum(len(line) for line in lines)
    engine = engine or MaskingEngine.from_file()
    print(f"corpus: {len(lines)} events, {size / 1e6:.2f} MB, {size / len(lines):.0f} B/event, "
          f"{sum(len(p.secrets) for _, p in corpus)} planted secrets, bodies: {source}")
    print(f"engine: scanner={engine.backend}, rules={engine.rules.source}")

    stats = MaskStats()
    leaks = 0
    for (_, planted), line in zip(corpus, lines):
        out, one = engine.mask_line(line)
        stats += one
        text = orjson.loads(out)
        flat = orjson.dumps(text).decode()
        leaks += sum(1 for _, secret in planted.secrets if orjson.dumps(secret).decode()[1:-1] in flat)
    print(f"check: {stats.total} findings, {stats.violations} verifier violations, {stats.dropped} dropped, "
          f"{leaks} planted secrets left in the output")

    def run_engine() -> None:
        mask_line = engine.mask_line
        for line in lines:
            mask_line(line)

    def run_json() -> None:
        loads, dumps = orjson.loads, orjson.dumps
        for line in lines:
            dumps(loads(line))

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        engine_s = _best(run_engine, passes)
        json_s = _best(run_json, passes)
    finally:
        if gc_was_enabled:
            gc.enable()
    mb = size / 1e6
    print(f"engine:     {engine_s:.3f} s  {mb / engine_s:.1f} MB/s  {len(lines) / engine_s:.0f} events/s  "
          f"{engine_s / len(lines) * 1e6:.1f} us/event (best of {passes})")
    print(f"orjson r/t: {json_s:.3f} s  {mb / json_s:.1f} MB/s  {len(lines) / json_s:.0f} events/s  "
          f"{json_s / len(lines) * 1e6:.2f} us/event (best of {passes})")
    summary = f"mask: {mb / engine_s:.1f} MB/s; {len(lines) / engine_s:.0f} events/s; {engine_s / json_s:.1f}x json round trip"
    if echo_summary:
        print(summary)
    return summary
