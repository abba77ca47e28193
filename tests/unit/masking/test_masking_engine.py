"""Engine API: copies, styles, AI-output policy, verification, fail-closed behaviour."""

from __future__ import annotations

import copy
import datetime
import re

import orjson
import pytest
import yaml

from plugwatch.masking import MaskingEngine, MaskStats, load_engine
from plugwatch.masking.rules import DEFAULT_RULES_PATH

from conftest import TEST_KEY


def _engine_with(tmp_path, **changes) -> MaskingEngine:
    doc = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return MaskingEngine.from_file(path, hmac_key=TEST_KEY)


def test_input_is_never_mutated(engine: MaskingEngine) -> None:
    value = {"message": "mail bob@example.com", "attributes": {"password": "x", "list": ["13800138000"]}}
    before = copy.deepcopy(value)
    masked, _ = engine.mask(value)
    assert value == before
    assert masked is not value and masked["attributes"] is not value["attributes"]
    clean = {"a": [1, {"b": "c"}]}
    again, _ = engine.mask(clean)
    assert again == clean and again is not clean and again["a"] is not clean["a"]


def test_stats(engine: MaskingEngine) -> None:
    _, stats = engine.mask({"m": "bob@example.com and 13800138000", "password": "x"})
    assert stats.counts == {"email": 1, "phone": 1, "password": 1}
    assert stats.violations == 0 and not stats.flagged
    total = MaskStats()
    total += stats
    total.merge(stats)
    assert total.counts["email"] == 2 and total.total == 6


def test_scalars_and_text(engine: MaskingEngine) -> None:
    assert engine.mask("bob@example.com")[0] == "[MASKED:email]"
    assert engine.mask(4111111111111111)[0] == "[MASKED:card:****1111]"
    assert engine.mask(42)[0] == 42 and engine.mask(None)[0] is None and engine.mask(True)[0] is True
    assert engine.mask_text("no secrets here") == "no secrets here"


def test_styles(engine: MaskingEngine, tmp_path) -> None:
    assert engine.mask_text("card 4111 1111 1111 1111") == "card [MASKED:card:****1111]"
    assert engine.mask_text("call 138-0013-8000") == "call [MASKED:phone:****8000]"
    hashed = _engine_with(tmp_path, **{"detectors.email": {"style": "hash"}})
    one = hashed.mask_text("from bob@example.com")
    two = hashed.mask({"x": ["bob@example.com"]})[0]["x"][0]
    assert re.fullmatch(r"from \[MASKED:email:[a-z2-7]{16}\]", one)
    assert one.endswith(two)  # same value, same token, in any event
    assert hashed.mask_text("from alice@example.com") != one
    other_key = MaskingEngine(hashed.rules, hmac_key=b"another-key")
    assert other_key.mask_text("from bob@example.com") != one
    assert engine.mask({"session": "abc"})[0]["session"].startswith("[MASKED:session:")  # hash style in the rules


def test_ai_output_redacted_on_hit(engine: MaskingEngine) -> None:
    value = {"attributes": {
        "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 120,
        "gen_ai.completion": "Sure! Your key is AKIAIOSFODNN7EXAMPLE, keep it safe.",
        "gen_ai.prompt": "What is the weather?",
        "llm_output": "random looking Zx8kP2mQ9vR4tY7wL1nB5cH3jK6 token",
    }}
    masked, stats = engine.mask(value)
    attrs = masked["attributes"]
    assert attrs["gen_ai.completion"] == "[MASKED:ai_output]"
    assert attrs["llm_output"] == "[MASKED:ai_output]"  # no detector, but a random token: stricter policy
    assert attrs["gen_ai.prompt"] == "What is the weather?"
    assert attrs["gen_ai.usage.input_tokens"] == 120 and attrs["gen_ai.system"] == "openai"
    assert stats.counts["ai_output"] == 2


def test_ai_output_in_otlp_lists(engine: MaskingEngine) -> None:
    value = {"attributes": [{"key": "gen_ai.completion", "value": {"stringValue": "mail me at bob@example.com"}}]}
    masked, _ = engine.mask(value)
    assert masked["attributes"][0]["value"] == "[MASKED:ai_output]"


@pytest.mark.parametrize("policy", ["hash", "drop"])
def test_ai_output_policies(tmp_path, policy: str) -> None:
    eng = _engine_with(tmp_path, **{"ai_output.policy": policy})
    value = {"a": 1, "gen_ai.completion": "here: bob@example.com", "z": 2}
    masked, _ = eng.mask(value)
    if policy == "drop":
        assert masked == {"a": 1, "z": 2}
    else:
        assert re.fullmatch(r"\[MASKED:ai_output:[a-z2-7]{16}\]", masked["gen_ai.completion"])
        assert eng.mask(value)[0] == masked


def test_ai_output_always(tmp_path) -> None:
    eng = _engine_with(tmp_path, **{"ai_output.when": "always"})
    masked, _ = eng.mask({"gen_ai.completion": "harmless", "gen_ai.usage.output_tokens": 5, "gen_ai.request.model": "m"})
    assert masked == {"gen_ai.completion": "[MASKED:ai_output]", "gen_ai.usage.output_tokens": 5, "gen_ai.request.model": "m"}


def test_verifier_replaces_whole_value_when_masker_misses(engine: MaskingEngine, monkeypatch) -> None:
    seen = []
    eng = MaskingEngine(engine.rules, TEST_KEY, on_violation=seen.append)
    monkeypatch.setattr(eng.masker, "run", lambda b, *a, **k: b)  # a masker that finds nothing
    masked, stats = eng.mask({"m": "card 4111 1111 1111 1111 for order", "ok": "fine", "n": 4111111111111111})
    assert masked == {"m": "[MASKED:violation]", "ok": "fine", "n": "[MASKED:violation]"}
    assert stats.violations == 2 and stats.flagged and seen == [2]
    assert eng.mask_text("mail bob@example.com") == "[MASKED:violation]"
    out, line_stats = eng.mask_line(b'{"k":"AKIAIOSFODNN7EXAMPLE"}')
    assert orjson.loads(out) == {"k": "[MASKED:violation]"} and line_stats.violations == 1


def test_masker_error_fails_closed(engine: MaskingEngine, monkeypatch) -> None:
    eng = MaskingEngine(engine.rules, TEST_KEY)

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(eng.masker, "run", broken)
    masked, stats = eng.mask({"tenant_id": "t", "m": "anything"})
    assert masked == {} and stats.dropped == 1 and stats.flagged
    assert eng.mask(["x"])[0] == [] and eng.mask("x")[0] == "[MASKED:error]"
    assert eng.mask_text("x") == "[MASKED:error]"
    assert eng.mask_line(b'{"a":1}')[0] == b"{}"
    assert eng.mask_bytes(b"x") == "[MASKED:error]"


def test_values_orjson_cannot_write_take_the_tree_path(engine: MaskingEngine) -> None:
    value = {"raw": b"password=hunter2", 7: "13800138000", "when": datetime.date(2024, 5, 1), "t": ("bob@example.com",),
             "big": 2**70, "nested": {"token": "abc"}}
    masked, stats = engine.mask(value)
    assert masked["raw"] == "b'password=[MASKED:password]'"
    assert masked[7] == "[MASKED:phone:****8000]"
    assert masked["when"] == "2024-05-01" and masked["t"] == ["[MASKED:email]"]
    assert masked["big"] == 2**70 and masked["nested"] == {"token": "[MASKED:token]"}
    assert not stats.flagged


def test_mask_json_is_mask_written_as_json(engine: MaskingEngine, monkeypatch) -> None:
    clean = {"msg": "all fine", "n": 1, "nested": [{"ok": True}]}
    out, masked, stats = engine.mask_json(clean)
    assert masked is clean and out == orjson.dumps(clean) and stats.total == 0  # nothing masked: no copy
    secret = {"msg": "mail bob@example.com", "headers": {"Authorization": "Bearer abc.def"}, "n": 1}
    out, masked, stats = engine.mask_json(secret)
    assert masked == engine.mask(secret)[0] and out == orjson.dumps(masked) and masked is not secret
    assert secret["msg"] == "mail bob@example.com"  # the input is never changed
    odd = {"when": datetime.date(2024, 5, 1), "mail": "bob@example.com"}  # orjson cannot write it
    out, masked, _ = engine.mask_json(odd)
    assert masked == {"when": "2024-05-01", "mail": "[MASKED:email]"} and orjson.loads(out) == masked
    eng = MaskingEngine(engine.rules, TEST_KEY)
    monkeypatch.setattr(eng.masker, "run", lambda b, *a, **k: b)  # a masker that finds nothing
    out, masked, stats = eng.mask_json({"k": "AKIAIOSFODNN7EXAMPLE", "ok": 1})
    assert masked == {"k": "[MASKED:violation]", "ok": 1} and orjson.loads(out) == masked and stats.flagged
    monkeypatch.setattr(eng.masker, "run", lambda *a, **k: 1 / 0)  # fails closed
    out, masked, stats = eng.mask_json({"tenant_id": "t"})
    assert (out, masked) == (b"{}", {}) and stats.dropped == 1


def test_mask_line_output_is_compact_json(engine: MaskingEngine) -> None:
    out, stats = engine.mask_line(b'{ "msg" : "mail bob@example.com",\n "n": 1 }')
    assert out == b'{"msg":"mail [MASKED:email]","n":1}' and stats.counts == {"email": 1}
    with pytest.raises(ValueError, match="not valid JSON"):
        engine.mask_line(b'{"msg": ')


def test_mask_bytes(engine: MaskingEngine) -> None:
    raw = b"\xff\xfe garbage then password=hunter2 and bob@example.com " + b"x" * 5000
    out = engine.mask_bytes(raw, limit=80)
    assert len(out) == 80 and "hunter2" not in out and "bob@" not in out and "\ufffd" in out
    # a secret straddling the cut is masked before cutting, so no fragment of it survives
    cut = engine.mask_bytes(b"a" * 70 + b" 4111 1111 1111 1111", limit=80)
    assert "4111 1111" not in cut
    assert engine.mask_bytes(b"", limit=10) == ""


def test_load_engine_caches_per_path_and_key(monkeypatch) -> None:
    class Settings:
        masking_rules_path = DEFAULT_RULES_PATH

        class masking_key:  # noqa: N801 - mimics pydantic SecretStr
            @staticmethod
            def get_secret_value() -> str:
                return "settings-key"

    one = load_engine(Settings())
    assert load_engine(Settings()) is one
    assert load_engine(path=DEFAULT_RULES_PATH, key="settings-key") is one
    assert load_engine(path=DEFAULT_RULES_PATH, key="other") is not one


def test_backends_agree(engine: MaskingEngine, re_engine: MaskingEngine, hs_available: bool) -> None:
    from plugwatch.masking.corpus import CorpusGenerator

    if not hs_available:
        pytest.skip("hyperscan not installed: both fixtures use the re backend")
    assert engine.backend == "hyperscan" and re_engine.backend == "re"
    for event, _ in CorpusGenerator(seed=5, use_loghub=False).events(300):
        assert engine.mask(event)[0] == re_engine.mask(event)[0], event
