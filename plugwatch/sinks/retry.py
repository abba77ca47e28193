"""Retrying sink writes: an outage pauses the work that needs the sink and loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def retry_forever(
    what: str, action: Callable[[], Awaitable[Any]], first_delay: float = 0.5, max_delay: float = 30.0
) -> Any:
    """Run ``action`` until it succeeds, backing off exponentially; cancellation stops it."""
    delay = first_delay
    while True:
        try:
            return await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
