"""The service's own log lines go through the masking engine, under Faust's (mode's) formatter."""

import io
import logging

from mode.utils.logging import DefaultFormatter

from faust.utils.terminal import SpinnerHandler

from plugwatch.logs import install_log_masking
from plugwatch.masking import MaskingEngine


def test_log_lines_are_masked_through_every_handler():
    engine = MaskingEngine.from_file()
    root = logging.getLogger()
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(s) for s in streams]
    handlers[0].setFormatter(DefaultFormatter("%(levelname)s %(message)s"))
    for handler in handlers:
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        install_log_masking(engine)
        install_log_masking(engine)  # idempotent: one filter per handler
        logging.getLogger("plugwatch.test").info(
            "login for %s with password=%s took 100%%", "li.wei@example.com", "hunter2pass"
        )
        logging.getLogger("plugwatch.test").info("no arguments, 100% literal")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)
    assert all(sum(1 for f in h.filters if type(f).__name__ == "MaskingFilter") == 1 for h in handlers)
    for stream in streams:
        text = stream.getvalue()
        assert "li.wei@example.com" not in text and "hunter2pass" not in text
        assert "[MASKED:" in text and "took 100%" in text and "no arguments, 100% literal" in text
        assert "Logging error" not in text


def test_faust_startup_spinner_no_longer_turns_debug_records_on():
    """As Faust's worker leaves it at -l warn: its handler at WARNING, a spinner handler and the
    root logger at DEBUG. Once masking is installed, a debug record is not even built."""
    engine = MaskingEngine.from_file()
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    spinner = SpinnerHandler(None, level=logging.DEBUG)
    old_level = root.level
    root.addHandler(handler)
    root.addHandler(spinner)
    root.setLevel(logging.DEBUG)
    try:
        install_log_masking(engine)
        assert spinner not in root.handlers and handler in root.handlers
        assert not logging.getLogger("aiokafka.producer").isEnabledFor(logging.DEBUG)
        logging.getLogger("plugwatch.test").warning("token=%s", "sk_live_" + "a" * 24)
    finally:
        root.removeHandler(handler)
        root.removeHandler(spinner)
        root.setLevel(old_level)
    assert root.level == old_level
    assert "sk_live_" not in stream.getvalue() and "[MASKED:" in stream.getvalue()
