"""How the engine scans: the shared masker+verifier pass, the Python expander behind the base64
trigger, and that neither changes what comes out."""

from __future__ import annotations

import functools
import random
import re

import orjson
import pytest

from plugwatch.masking import MaskingEngine
from plugwatch.masking.corpus import CorpusGenerator
from plugwatch.masking.rules import DEFAULT_RULES_PATH
from plugwatch.masking.scanner import BASE64_40, DIGIT_RUN, PairScanner, Scanner, _base64_40_ends, hyperscan
from plugwatch.masking.triggers import T_DIGITS

from conftest import TEST_KEY

needs_hyperscan = pytest.mark.skipif(hyperscan is None, reason="hyperscan not installed")

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SECRET40 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@functools.lru_cache(maxsize=1)
def _base64_40_database():
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[BASE64_40], ids=[0], elements=1, flags=[0])
    return db


def _hyperscan_ends(data: bytes) -> list[int]:
    db = _base64_40_database()
    ends: list[int] = []
    db.scan(data, match_event_handler=lambda _i, _s, e, _f, _c: ends.append(e))
    return sorted(ends)


def _tricky_buffers(n: int) -> list[bytes]:
    """Runs of 38-46 base64 characters next to escapes, '=', quotes and newlines."""
    rng = random.Random(7)
    pieces = [b"\\n", b"\\t", b"\\u00e9", b"\\u12G4", b"\\", b"\\\\n", b"=", b"==", b" ", b"\n", b'"', b"x", b"-"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.5:
                parts.append("".join(rng.choice(B64) for _ in range(rng.choice([38, 39, 40, 41, 44, 45, 46]))).encode())
            else:
                parts.append(rng.choice(pieces))
        out.append(b"".join(parts))
    return out


@needs_hyperscan
@pytest.mark.parametrize("data", [
    SECRET40.encode(), b"key " + SECRET40.encode() + b"\n", b"\\n" + SECRET40.encode(), b"\\u00e9" + SECRET40.encode() + b'"',
    b"x" + SECRET40.encode(), SECRET40.encode() + b"=", (SECRET40 + " " + SECRET40).encode(), b"",
])
def test_base64_expander_reports_what_hyperscan_reports(data: bytes) -> None:
    assert sorted(_base64_40_ends(data)) == _hyperscan_ends(data)


@needs_hyperscan
def test_base64_expander_on_random_buffers() -> None:
    for data in _tricky_buffers(3000):
        assert sorted(_base64_40_ends(data)) == _hyperscan_ends(data), data


@needs_hyperscan
def test_pair_scan_gives_each_side_its_own_hits(engine: MaskingEngine) -> None:
    pair = PairScanner(engine.masker.scanner, engine.verifier.scanner)
    buffers = [orjson.dumps(ev) for ev, _ in CorpusGenerator(seed=3, use_loghub=False).events(150)] + _tricky_buffers(200)
    for data in buffers:
        first, second = pair.scan(data)
        assert set(first) == set(engine.masker.scanner.scan(data))
        assert set(second) == set(engine.verifier.scanner.scan(data))


@needs_hyperscan
def test_output_does_not_depend_on_the_scanning_path(engine: MaskingEngine) -> None:
    shared, separate = MaskingEngine(engine.rules, TEST_KEY), MaskingEngine(engine.rules, TEST_KEY)
    for event, _ in CorpusGenerator(seed=9, use_loghub=False).events(200):
        shared._unchanged, separate._unchanged = 1.0, 0.0  # pin each engine to one path
        one, one_stats = shared.mask(event)
        two, two_stats = separate.mask(event)
        assert one == two and one_stats == two_stats
        line = orjson.dumps(event)
        shared._unchanged, separate._unchanged = 1.0, 0.0
        assert shared.mask_line(line) == separate.mask_line(line)


def test_engine_switches_to_the_shared_scan_on_clean_traffic(engine: MaskingEngine) -> None:
    eng = MaskingEngine(engine.rules, TEST_KEY)
    for _ in range(200):
        eng.mask({"m": "mail bob@example.com"})
    assert eng._unchanged < 0.5  # every buffer changed: separate scans
    for _ in range(200):
        eng.mask({"m": "nothing here", "n": 3})
    assert eng._unchanged > 0.5
    assert eng.mask({"m": "call 13800138000"})[0] == {"m": "call [MASKED:phone:****8000]"}


@pytest.mark.parametrize("path", ["shared", "separate"])
def test_verifier_still_checks_every_output(engine: MaskingEngine, monkeypatch, path: str) -> None:
    eng = MaskingEngine(engine.rules, TEST_KEY)
    eng._unchanged = 1.0 if path == "shared" else 0.0
    monkeypatch.setattr(eng.masker, "run", lambda b, *a, **k: b)  # a masker that finds nothing
    masked, stats = eng.mask({"m": "card 4111 1111 1111 1111", "k": "AKIAIOSFODNN7EXAMPLE", "ok": "fine"})
    assert masked == {"m": "[MASKED:violation]", "k": "[MASKED:violation]", "ok": "fine"} and stats.violations == 2


def test_numbers_after_a_backslash(engine: MaskingEngine) -> None:
    # A backslash that is not an escape is a boundary like any other character.
    assert engine.mask_text(r"C:\13800138000") == r"C:\[MASKED:phone:****8000]"
    assert engine.mask({"p": "C:\\110105491231002"})[0] == {"p": "C:\\[MASKED:cn_id]"}
    masked, stats = engine.mask({"p": "x \\7-5753482182568 y", "ok": 1})  # once crashed the masker
    assert masked["ok"] == 1 and not stats.dropped
    assert engine.mask_text("line one\\n13800138000") == "line one\\n[MASKED:phone:****8000]"


@needs_hyperscan
def test_engines_with_the_same_rules_share_compiled_databases(engine: MaskingEngine, tmp_path) -> None:
    again = MaskingEngine(engine.rules, b"another-key")
    assert again.masker.scanner._db is engine.masker.scanner._db
    assert again.verifier.scanner._db is engine.verifier.scanner._db
    changed = tmp_path / "rules.yaml"
    changed.write_text(DEFAULT_RULES_PATH.read_text(encoding="utf-8").replace("keys: [password,", "keys: [passcode, password,", 1),
                       encoding="utf-8")
    other = MaskingEngine.from_file(changed, TEST_KEY)
    assert other.masker.scanner._db is not engine.masker.scanner._db
    assert other.mask_text("passcode=hunter2x") == "passcode=[MASKED:password]"


def test_shared_scan_that_cannot_compile_falls_back(engine: MaskingEngine, monkeypatch) -> None:
    from plugwatch.masking import engine as engine_module

    def broken(*_a, **_k):
        raise RuntimeError("database too large")

    monkeypatch.setattr(engine_module, "PairScanner", broken)
    eng = MaskingEngine(engine.rules, TEST_KEY)
    for _ in range(3):
        masked, stats = eng.mask({"m": "nothing here", "p": "call 13800138000"})
        assert masked == {"m": "nothing here", "p": "call [MASKED:phone:****8000]"} and not stats.dropped
    assert eng._pair is False


# The digit-run trigger as it was before runs from 1 were narrowed: every run of 11+ digits.
BROAD_DIGIT_RUN = rb"(?:^|[^0-9A-Za-z_.+\-]|\\[nrtbf]|\\u[0-9A-Fa-f]{4})[0-9](?:[ \-]?[0-9]){10}"


def _broad_engine(rules, backend: bool | None) -> MaskingEngine:
    """An engine whose masker and verifier both trigger on every digit run, scanning separately."""
    eng = MaskingEngine(rules, TEST_KEY, use_hyperscan=backend)
    for side in (eng.masker, eng.verifier):
        triggers = [(i, BROAD_DIGIT_RUN if p == DIGIT_RUN else p, f) for i, p, f in side.scanner.triggers]
        side.scanner = Scanner(triggers, backend)
    eng._pair = False
    return eng


def _digit_texts(n: int) -> list[str]:
    """Digit runs from 1 (and some from other digits) of 9-20 digits, grouped or not, with X tails,
    next to separators, escapes, words, quotes and other digit runs."""
    rng = random.Random(13)
    ids = ["110101199003074258", "11010119900307425X", "110105491231002", "13800138000", "8613800138000"]
    around = [" ", "-", ".", "X", "x", "\n", "\\n", "\\u4e2d", ":", ",", '"', "a", "_", "+", "", " - ", "-1", " 1"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.25:
                parts.append(rng.choice(ids))
            else:
                size = rng.randint(9, 20)
                first = "1" if rng.random() < 0.7 else rng.choice("0123456789")
                digits = first + "".join(rng.choice("0123456789") for _ in range(size - 1))
                if rng.random() < 0.4:  # groups
                    cuts = sorted(rng.sample(range(1, size), rng.randint(1, 3)))
                    digits = "".join(c + (rng.choice(" -") if i + 1 in cuts else "") for i, c in enumerate(digits))
                parts.append(digits)
            parts.append(rng.choice(around))
        out.append("".join(parts))
    return out


@pytest.mark.parametrize("backend", [None, False], ids=["default", "re"])
def test_narrowed_digit_trigger_changes_no_outcome(engine: MaskingEngine, backend: bool | None) -> None:
    """Runs from 1 that no validator can accept are no longer triggered: every masked text, masked
    event and verifier verdict is what triggering on all runs gave."""
    narrow, broad = MaskingEngine(engine.rules, TEST_KEY, use_hyperscan=backend), _broad_engine(engine.rules, backend)
    texts = _digit_texts(3000)
    for text in texts:
        assert narrow.mask_text(text) == broad.mask_text(text), text
        raw = text.encode()
        # As sets: a run right before a final newline can be reported twice ($ matches at the end
        # and before that newline), and every reader treats a repeat like the first report.
        assert set(narrow.verifier.check(raw, False, False)) == set(broad.verifier.check(raw, False, False)), text
    leading = [re.match(r"[0-9]*", t).group()[:19] for t in texts[:1000]]  # JSON numbers of 0-19 digits
    events = [{"ts": 1764000000000 + i, "n": int(n or i), "message": t, "nested": [t, {"v": t}]}
              for i, (t, n) in enumerate(zip(texts, leading))]
    events += [ev for ev, _ in CorpusGenerator(seed=5, use_loghub=False).events(300)]
    for event in events:
        assert narrow.mask(event) == broad.mask(event), event


def test_epoch_milliseconds_do_not_trigger(engine: MaskingEngine) -> None:
    data = orjson.dumps({"ts": 1764000000000, "raw_ts": 1764000000123, "at": "at 1764000000000, 176400000012."})
    assert not [hit for hit in engine.masker.scanner.scan(data) if hit[0] == T_DIGITS]
    assert engine.mask_text("call 13800138000 or 138 0013 8000") == "call [MASKED:phone:****8000] or [MASKED:phone:****8000]"
