"""Timers around the per-plugin windows: expiry, saving clock-skew estimates, the skew gauge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugwatch import metrics

if TYPE_CHECKING:
    from plugwatch.app import PlugwatchApp


# Sources exported to the skew gauge, largest offsets first: one series per source with an estimate
# is what operators need, and an unbounded label set would make every scrape slower.
MAX_SKEW_SERIES = 500


def update_window_metrics(app: PlugwatchApp) -> None:
    stats = app.services.windows.stats()
    metrics.WINDOW_BYTES.set(stats["bytes"])
    metrics.WINDOW_HELD.set(stats["held_bytes"])
    metrics.WINDOW_ENTRIES.set(stats["entries"])
    metrics.WINDOW_KEYS.set(stats["keys"])
    offsets = sorted(app.services.tail.offsets(), key=lambda item: abs(item[3]), reverse=True)
    metrics.CLOCK_SKEW.clear()
    for key, source, signal, offset in offsets[:MAX_SKEW_SERIES]:
        metrics.CLOCK_SKEW.labels(key, source, signal).set(offset)


def register_window_timers(app: PlugwatchApp) -> None:
    services = app.services

    @app.timer(interval=1.0, name="plugwatch.windows.retime")
    async def _retime() -> None:
        services.tail.recorrect_moved()

    @app.timer(interval=5.0, name="plugwatch.windows.expire")
    async def _expire() -> None:
        services.windows.expire()
        update_window_metrics(app)

    @app.timer(interval=app.settings.window.skew_save_interval_s, name="plugwatch.windows.save_skew")
    async def _save_skew() -> None:
        await services.save_skew()
