"""Ingestion agents for telemetry.logs|traces|metrics: thin wiring around ``IngestPipeline``.

Each agent takes a batch of events, runs the pure pipeline, and writes the masked copies to
``telemetry.masked.*`` and ClickHouse and the rejects to ``plugin.deadletter`` -- all durable before
the batch is acknowledged, so offsets commit only after the outputs exist (at-least-once; the
ClickHouse tables collapse redelivered rows by ``event_id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from plugwatch import metrics
from plugwatch.agents.batching import consume_in_batches
from plugwatch.ingest import BatchOutcome, Source
from plugwatch.sinks.retry import retry_forever

if TYPE_CHECKING:
    from plugwatch.app import PlugwatchApp
    from plugwatch.sinks.topics import TopicSink

log = logging.getLogger(__name__)

SIGNALS = ("logs", "traces", "metrics")


def record_metrics(signal: str, topic: str, outcome: BatchOutcome) -> None:
    metrics.INGEST_MESSAGES.labels(topic).inc(outcome.messages)
    metrics.BATCH_SIZE.labels(signal).observe(outcome.messages)
    for encoding, count in outcome.encodings.items():
        metrics.INGEST_RECORDS.labels(signal, encoding).inc(count)
    for letter in outcome.deadletters:
        metrics.DEADLETTERS.labels(topic, letter.reason).inc()
    for detector, count in outcome.mask_stats.counts.items():
        metrics.MASKING_DETECTIONS.labels(detector).inc(count)


async def write_outcome(app: PlugwatchApp, signal: str, outcome: BatchOutcome) -> asyncio.Future[None]:
    """Hand the masked copies and dead letters to the producer and queue the ClickHouse rows.

    Returns a future that completes once all of them are durable -- the broker acknowledged the
    records (a batch it refused is sent again until it takes it) and the rows are inserted; the
    batch is acknowledged then. The agent goes on with its next batch meanwhile: waiting here for
    the broker's acknowledgements took over half of each batch's time under load.
    """
    services = app.services
    topics = app.settings.topics
    started = []
    for topic, items in (
        (topics.masked(signal), [(r.key.encode(), r.value) for r in outcome.records]),
        (topics.deadletter, [(d.key, d.value) for d in outcome.deadletters]),
    ):
        if items:
            _, pending = await retry_forever(
                f"produce to {topic}", lambda t=topic, i=items: services.topics.start_many(t, i))
            started.append((topic, items, pending))
    rows = services.telemetry_rows.add(signal, [r.value for r in outcome.records])
    return asyncio.ensure_future(_durable(services.topics, started, rows))


async def _durable(
    topics: TopicSink, started: list[tuple[str, list[Any], list[asyncio.Future[Any]]]], rows: asyncio.Future[None]
) -> None:
    for topic, items, pending in started:
        try:
            await asyncio.gather(*pending)
        except Exception as exc:
            log.warning("produce to %s failed (%s: %s); sending the batch again", topic, type(exc).__name__, exc)
            await retry_forever(f"produce to {topic}", lambda t=topic, i=items: topics.send_many(t, i))
    await rows


def make_ingest_agent(app: PlugwatchApp, signal: str) -> Callable[[Any], Awaitable[None]]:
    pipeline = app.services.pipeline
    batch_size = app.settings.ingest.batch_size
    within = app.settings.ingest.batch_within_s
    processed = app.processed_offsets

    async def handle(events: list[Any]) -> asyncio.Future[None]:
        outcome = BatchOutcome()
        topic = ""
        for event in events:
            message = event.message
            topic = message.topic
            processed[(topic, message.partition)] = message.offset + 1
            timestamp = message.timestamp
            source = Source(
                message.topic,
                message.partition,
                message.offset,
                int(timestamp * 1000) if timestamp else None,
            )
            pipeline.process(signal, event.value, source, outcome)
        durable = await write_outcome(app, signal, outcome)
        record_metrics(signal, topic, outcome)
        return durable

    async def ingest(stream: Any) -> None:
        await consume_in_batches(stream, handle, batch_size, within)

    ingest.__name__ = f"ingest_{signal}"
    ingest.__qualname__ = ingest.__name__
    return ingest


def update_lag(app: PlugwatchApp) -> None:
    """Consumer lag per assigned inbound partition: end offset minus the next offset to process."""
    inbound = {app.settings.topics.inbound(s) for s in SIGNALS}
    for tp in app.consumer.assignment():
        if tp.topic not in inbound:
            continue
        end = app.consumer.highwater(tp)
        if end is None:
            continue
        done = app.processed_offsets.get((tp.topic, tp.partition), 0)
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done))


def register_ingest_agents(app: PlugwatchApp) -> None:
    @app.timer(interval=5.0, name="plugwatch.ingest.lag")
    async def _lag() -> None:
        update_lag(app)

    for signal in SIGNALS:
        topic = app.topic(
            app.settings.topics.inbound(signal),
            key_serializer="raw",
            value_serializer="raw",
            partitions=app.settings.topic_partitions,
        )
        app.agent(topic, name=f"plugwatch.ingest.{signal}")(make_ingest_agent(app, signal))
