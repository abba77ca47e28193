"""The service's own log lines go through the masking engine, under Faust's (mode's) formatter."""

import io
import logging

from mode.utils.logging import DefaultFormatter

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
