"""Timers around the per-plugin windows: expiry, saving clock-skew estimates, the skew gauge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugwatch import metrics

if TYPE_CHECKING:
    from plugwatch.app import PlugwatchApp


def update_window_metrics(app: PlugwatchApp) -> None:
    stats = app.services.windows.stats()
    metrics.WINDOW_BYTES.set(stats["bytes"])
    metrics.WINDOW_ENTRIES.set(stats["entries"])
    metrics.WINDOW_KEYS.set(stats["keys"])
    metrics.CLOCK_SKEW.clear()
    for key, estimator in app.services.tail.skew.items():
        for row in estimator.table():
            if row["samples"]:
                metrics.CLOCK_SKEW.labels(key, row["source"], row["signal"]).set(row["offset_ms"])


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
