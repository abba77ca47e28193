"""The service's own log lines go through the masking engine."""

from __future__ import annotations

import logging

from faust.utils.terminal import SpinnerHandler

from plugwatch.masking import MaskingEngine, MaskingFilter


def install_log_masking(masker: MaskingEngine) -> None:
    """Mask the service's own log lines: a filter on every root handler sees every record."""
    root = logging.getLogger()
    drop_startup_spinner(root)
    log_filter = MaskingFilter(masker)
    for handler in root.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(log_filter)


def drop_startup_spinner(root: logging.Logger) -> None:
    """Faust's worker, at ``-l warn`` and above, sets the root logger to DEBUG and adds a handler
    that turns a terminal spinner on every record. Past start-up that means every library's debug
    record (aiokafka logs one per message sent) is built -- and masked -- for nothing: the spinner
    handler goes and the root logger is set back to the level its handlers emit."""
    spinners = [handler for handler in root.handlers if isinstance(handler, SpinnerHandler)]
    if not spinners:
        return
    for handler in spinners:
        root.removeHandler(handler)
    levels = [handler.level for handler in root.handlers if handler.level]  # Faust set its handler's
    root.setLevel(min(levels, default=logging.WARNING))
