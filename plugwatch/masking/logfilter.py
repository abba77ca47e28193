"""A logging filter that masks the service's own log records before any handler sees them."""

from __future__ import annotations

import logging

from plugwatch.masking.engine import MaskingEngine

_FORMATTER = logging.Formatter()


class MaskingFilter(logging.Filter):
    """Renders ``msg % args``, masks it and stores it back (``args`` cleared), and masks the
    exception and stack text, so every handler and formatter downstream gets masked text.

    Attach it to handlers (``handler.addFilter``): filters on a logger do not see records that
    propagate from child loggers. Fields passed through ``extra=`` are not touched.
    """

    def __init__(self, engine: MaskingEngine, name: str = "") -> None:
        super().__init__(name)
        self.engine = engine

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self.engine.mask_text
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not let the raw arguments through
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask(message)
        record.args = ()  # not None: some formatters (mode's) wrap None into (None,)
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True
