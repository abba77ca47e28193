"""Rules loading, the logging filter and the bench summary line."""

from __future__ import annotations

import logging
import re

import pytest

from plugwatch.masking import MaskingEngine, MaskingFilter, RulesError, load_rules
from plugwatch.masking.bench import bench_mask
from plugwatch.masking.rules import DEFAULT_RULES_PATH, RULES_ENV, compact


def test_rules_file_loads_and_normalises_names() -> None:
    rules = load_rules()
    assert rules.source == str(DEFAULT_RULES_PATH)
    assert compact("X-Api-Key") == compact("x_api_key") == compact("xApiKey") == "xapikey"
    assert compact("password_2") == "password"


def test_rules_env_var(tmp_path, monkeypatch) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(RULES_ENV, str(path))
    assert load_rules().source == str(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "top level must be a mapping"),
    ("key_rules: []", "key_rules is empty"),
    ("key_rules: [{keys: [a]}]", "needs a 'type'"),
    ("key_rules: [{type: t, keys: [a], style: loud}]", "use one of full, partial, hash"),
    ("key_rules: [{type: t, keys: [a]}]\nai_output: {policy: shred}", "redact, hash, drop"),
    ("key_rules: [{type: t, keys: [a]}\n", "not valid YAML"),
])
def test_bad_rules_say_what_to_fix(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=re.escape(message)) as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_missing_rules_file(tmp_path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        MaskingEngine.from_file(tmp_path / "nope.yaml")


def test_logging_filter_masks_messages_args_and_tracebacks(engine: MaskingEngine) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("plugwatch.test.masking")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Keep()
    handler.addFilter(MaskingFilter(engine))
    logger.addHandler(handler)
    try:
        logger.warning("login for %s with password=%s", "bob@example.com", "hunter2x")
        try:
            raise ValueError("card 4111 1111 1111 1111 declined")
        except ValueError:
            logger.exception("charge failed for %s", "13800138000")
        logger.info("bad format %d", "not-a-number 13800138000")
    finally:
        logger.removeHandler(handler)
    first, second, third = records
    assert first.getMessage() == "login for [MASKED:email] with password=[MASKED:password]"
    assert second.getMessage() == "charge failed for [MASKED:phone:****8000]"
    assert "4111 1111" not in second.exc_text and "[MASKED:card:****1111]" in second.exc_text
    assert "13800138000" not in third.getMessage()
    assert "4111 1111" not in logging.Formatter().format(second)


def test_bench_summary_line(capsys) -> None:
    line = bench_mask(events=40, passes=1)
    assert re.fullmatch(r"mask: [0-9.]+ MB/s; [0-9]+ events/s; [0-9.]+x json round trip", line)
    printed = capsys.readouterr().out
    assert "0 planted secrets left" in printed and line not in printed
