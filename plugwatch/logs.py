"""The service's own log lines go through the masking engine."""

from __future__ import annotations

import logging

from plugwatch.masking import MaskingEngine, MaskingFilter


def install_log_masking(masker: MaskingEngine) -> None:
    """Mask the service's own log lines: a filter on every root handler sees every record."""
    log_filter = MaskingFilter(masker)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(log_filter)
