"""A generated corpus of realistic events: every planted secret masked, readable values kept."""

from __future__ import annotations

import json

import orjson

from plugwatch.masking import MaskingEngine, MaskStats
from plugwatch.masking.corpus import CorpusGenerator

from masking_helpers import strings_of

EVENTS = 2500


def test_corpus_masked_and_readable(engine: MaskingEngine) -> None:
    corpus = CorpusGenerator(seed=11, use_loghub=False).events(EVENTS)
    kinds = {k for _, planted in corpus for k, _ in planted.secrets}
    assert len(corpus) >= 2000 and len(kinds) >= 18  # every secret type appears
    total = MaskStats()
    leaks, lost = [], []
    for event, planted in corpus:
        masked, stats = engine.mask(event)
        total += stats
        out = strings_of(masked)
        for kind, secret in planted.secrets:
            forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}
            if any(f in s for s in out for f in forms):
                leaks.append((kind, secret))
        given = strings_of(event)
        for value in planted.readable:
            if any(value in s for s in given) and not any(value in s for s in out):
                lost.append(value)
    assert leaks == []
    assert lost == []
    assert total.violations == 0 and total.dropped == 0
    assert total.total >= sum(len(p.secrets) for _, p in corpus)


def test_corpus_lines_round_trip_through_mask_line(engine: MaskingEngine) -> None:
    for event, _ in CorpusGenerator(seed=12, use_loghub=False).events(300):
        out, _ = engine.mask_line(orjson.dumps(event))
        assert orjson.loads(out) == engine.mask(event)[0]
