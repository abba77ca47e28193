"""The Faust app and its wiring: settings -> app.conf, sinks chosen and started here.

``faust -A plugwatch.app worker`` and ``plugwatch worker`` run the same module-level ``app``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import faust
from faust import transport as faust_transport
from faust.transport.drivers import aiokafka as faust_aiokafka

from plugwatch import metrics
from plugwatch.agents.alert_feed import AlertFeed
from plugwatch.agents.reports import ReportService, chain_id
from plugwatch.agents.suspensions import SuspensionService
from plugwatch.agents.tickets import FixDesk, TicketDesk
from plugwatch.ingest import IngestPipeline, Source
from plugwatch.logs import install_log_masking
from plugwatch.masking import MaskingEngine
from plugwatch.settings import Settings, get_settings
from plugwatch.sinks.alerts import AlertStore
from plugwatch.sinks.audit import AuditLog
from plugwatch.sinks.buffer import InsertBuffer
from plugwatch.sinks.clickhouse import ClickHouse
from plugwatch.sinks.retry import retry_forever
from plugwatch.sinks.topics import TopicSink
from plugwatch.tables.keeper import SIGNALS
from plugwatch.tables.tail import MaskedTail
from plugwatch.tables.windows import WindowStore
from plugwatch.streams import delivery
from plugwatch.streams.topics import ensure_topics
from plugwatch.suspension.machine import SuspensionError

log = logging.getLogger("plugwatch")


class Services:
    """What agents and views share in one worker: the masking engine and the sinks."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # Every masking call of the worker -- ingest, SQL results, debug views -- counts its
        # verifier hits in debug_masking_violation_total.
        self.masker = MaskingEngine.from_file(
            settings.masking_rules_path,
            hmac_key=settings.masking_key.get_secret_value().encode(),
            on_violation=metrics.MASKING_VIOLATIONS.inc,
        )
        self.pipeline = IngestPipeline(
            self.masker,
            max_bytes=settings.ingest.max_message_bytes,
            excerpt_chars=settings.ingest.deadletter_excerpt_chars,
        )
        self.clickhouse = ClickHouse(
            settings.resolved_clickhouse_dsn, settings.clickhouse_database, settings.telemetry_ttl_days
        )
        self.topics = TopicSink(settings.bootstrap_servers, client_id=f"{settings.app_id}-sink")
        window = settings.window
        self.windows = WindowStore(
            window_ms=window.ms,
            per_key_max_entries=window.per_key_max_entries,
            per_key_max_bytes=int(window.per_key_max_mib * 2**20),
            budget_bytes=int(window.budget_mib * 2**20),
            clock=lambda: int(time.time() * 1000),
        )
        self.tail = MaskedTail(
            settings.bootstrap_servers,
            self.windows,
            {signal: settings.topics.masked(signal) for signal in SIGNALS},
            partitions=settings.topic_partitions,
            window_ms=window.ms,
            load_skew=self.clickhouse.load_skew,
        )
        self.telemetry_rows = InsertBuffer(
            self.clickhouse.insert_telemetry,
            max_rows=settings.ingest.clickhouse_batch_rows,
            max_delay_s=settings.ingest.clickhouse_batch_delay_s,
        )
        self.audit = AuditLog(chain_id(settings), topics=self.topics, topic=settings.topics.audit,
                              clickhouse=self.clickhouse, masker=self.masker)
        self.reports = ReportService(settings, masker=self.masker, tail=self.tail, clickhouse=self.clickhouse,
                                     topics=self.topics, audit=self.audit)
        self.alert_partitions = settings.topic_partitions  # the alert topic's real size, set at start
        self.alert_feed = AlertFeed(self)
        self.alerts = AlertStore(self.clickhouse, self.reports.now_ms)
        self.reports.on_written.append(("alert lifecycle to ClickHouse", self.alerts.reported))
        self.tickets: TicketDesk | None = None
        self.fixes: FixDesk | None = None
        if settings.tickets.enabled:
            self.tickets = TicketDesk(self, self.alerts)
            self.reports.on_written.append((f"ticket op to {settings.topics.ticket_outbox}", self.tickets.report_written))
            if settings.regression.enabled:
                self.fixes = FixDesk(self, self.alerts, self.tickets)
        self.suspensions: SuspensionService | None = SuspensionService(self) if settings.suspensions.enabled else None

    async def deadletter_record(self, record: Any, exc: Exception) -> None:
        """A record a desk could not handle (invalid, refused by a ticket system) -> dead letters."""
        reason = {"TicketRejected": "ticket_rejected", "UnknownAlert": "unknown_alert"}.get(type(exc).__name__, "invalid")
        if isinstance(exc, SuspensionError):
            reason = f"suspension_{exc.code}"
        await self.deadletter(reason, self.masker.mask_text(f"{type(exc).__name__}: {exc}")[:1000], record,
                              record.topic)

    async def deadletter(self, reason: str, detail: str, record: Any, kind: str) -> None:
        """One consumed record (raw bytes masked by the pipeline) to the dead-letter topic, retried."""
        letter = self.pipeline.deadletter(
            reason, detail, record.value, Source(record.topic, record.partition, record.offset, record.timestamp), kind,
        )
        topic = self.settings.topics.deadletter
        await retry_forever(f"produce to {topic}", lambda: self.topics.send_many(topic, [(letter.key, letter.value)]))

    async def start(self) -> None:
        await self.clickhouse.start()
        await self.topics.start()
        self.telemetry_rows.start()
        await self.audit.start()
        if self.settings.window.enabled:
            await self.tail.start()
        if self.settings.reports.enabled:
            self.reports.start()
            await self.alert_feed.start()
        if self.tickets is not None:
            await self.tickets.start()
        if self.fixes is not None:
            await self.fixes.start()
        if self.suspensions is not None:
            await self.suspensions.start()

    async def save_skew(self) -> None:
        rows: list[tuple[str, int, bytes, int]] = []
        # A few hundred snapshots at a time (~20 µs each), letting the event loop run in between;
        # keys made dirty meanwhile wait for the next save.
        remaining = len(self.tail.dirty)
        while remaining > 0 and (chunk := self.tail.take_dirty_snapshots(min(500, remaining))):
            rows.extend(chunk)
            remaining -= 500
            await asyncio.sleep(0)
        if rows:
            await self.clickhouse.save_skew(rows)

    async def stop(self) -> None:
        if self.suspensions is not None:
            await self.suspensions.stop()
        if self.fixes is not None:
            await self.fixes.stop()
        if self.tickets is not None:
            await self.tickets.stop()
        await self.alert_feed.stop()
        await self.reports.stop()
        await self.tail.stop()
        try:
            await self.save_skew()
        except Exception as exc:  # never block shutdown on it; the next owner replays the window
            log.warning("clock-skew state not saved at shutdown: %s", exc)
        await self.telemetry_rows.stop()
        await self.audit.stop()
        await self.topics.stop()
        await self.clickhouse.close()


# The cyclic garbage collector's thresholds in a worker. Measured with `bench window` (5,000
# plugins): at CPython's default (700, 10, 10) a full collection ran every ~2.5 s and took ~200 ms
# over ~300k tracked objects -- ~10 % of the event loop -- because enough of each batch's
# short-lived objects (records, events, futures) outlived two young collections to trigger it. With
# 20,000 they die before their first one: no full collection in a minute of load, 4,729 -> 5,636
# events/s. Young collections are rarer and take ~8 ms each; 100,000 measured no faster.
GC_THRESHOLDS = (20_000, 20, 10)


class PlugwatchApp(faust.App):
    services: Services

    def __init__(self, settings: Settings, **overrides: Any):
        self.settings = settings
        conf: dict[str, Any] = {
            "broker": settings.broker_url,
            "store": settings.table_store,
            "datadir": str(settings.data_dir / "faust"),
            "web_host": settings.web_host,
            "web_port": settings.web_port,
            "web_bind": settings.web_host,
            "topic_partitions": settings.topic_partitions,
            "topic_replication_factor": settings.topic_replication,
            "broker_session_timeout": settings.broker_session_timeout_s,
            "broker_heartbeat_interval": settings.broker_heartbeat_interval_s,
            "broker_rebalance_timeout": settings.broker_rebalance_timeout_s,
            "consumer_auto_offset_reset": "earliest",
            # Room for the consumer thread to keep fetching while an agent handles a batch.
            "stream_buffer_maxsize": 4 * settings.ingest.batch_size + 4096,
            "autodiscover": False,
            "web_enabled": True,
        }
        conf.update(overrides)
        super().__init__(settings.app_id, **conf)
        self.services = Services(settings)
        # (topic, partition) -> next offset to process, for the lag gauge.
        self.processed_offsets: dict[tuple[str, int], int] = {}
        self.on_partitions_assigned.connect(self._own_windows)

    def _new_transport(self) -> Any:
        """Faust's aiokafka transport, with the cheaper record hand-over of ``plugwatch.streams.delivery``."""
        cls = faust_transport.by_url(self.conf.broker_consumer[0])
        if cls is faust_aiokafka.Transport:
            cls = delivery.Transport
        return cls(self.conf.broker_consumer, self)

    async def _own_windows(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Own the windows of the plugins hashed to our inbound partitions (co-partitioned)."""
        # ``assigned`` is the whole new assignment (Faust rebalances eagerly). Asking the consumer
        # for it here would wait on the consumer thread that is running this very callback.
        inbound = {self.settings.topics.inbound(signal) for signal in SIGNALS}
        partitions = {tp.partition for tp in assigned if tp.topic in inbound}
        self.services.alerts.forget()
        # Not awaited here: the replay must not hold up the rebalance.
        asyncio.ensure_future(self.services.tail.assign(partitions))
        # Alerts on the same partition numbers: the worker that holds a plugin's window gets its alerts.
        asyncio.ensure_future(self.services.alert_feed.assign(partitions))

    async def on_first_start(self) -> None:
        gc.set_threshold(*GC_THRESHOLDS)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        await super().on_first_start()
        install_log_masking(self.services.masker)
        counts = await ensure_topics(
            self.settings.bootstrap_servers,
            self.settings.topics.all_names(),
            self.settings.topic_partitions,
            self.settings.topic_replication,
            compacted=self.settings.topics.compacted(),
        )
        await ensure_topics(self.settings.bootstrap_servers, [self.settings.topics.evidence_numbers], 1,
                            self.settings.topic_replication)
        # Keys map to partitions by the masked topics' real size (a pre-existing topic may differ).
        self.services.tail.partitions = counts[self.settings.topics.masked_logs]
        self.services.alert_partitions = counts[self.settings.topics.alerts]
        log.info("topics ready: %d topics", len(counts))

    async def on_start(self) -> None:
        await super().on_start()
        await self.services.start()

    async def on_started(self) -> None:
        await super().on_started()
        # What start-up made (modules, Faust's services, settings) lives as long as the process:
        # out of the collector's way, so its full passes walk only what the work creates.
        gc.freeze()

    async def on_shutdown(self) -> None:
        # After the agents have stopped: flush and close the sinks last.
        await super().on_shutdown()
        await self.services.stop()


def create_app(settings: Settings | None = None, **overrides: Any) -> PlugwatchApp:
    from plugwatch.agents.ingest import register_ingest_agents
    from plugwatch.agents.windows import register_window_timers
    from plugwatch.web.views import register_views

    settings = settings or get_settings()
    app = PlugwatchApp(settings, **overrides)
    register_ingest_agents(app)
    register_window_timers(app)
    register_views(app)
    return app


app = create_app()
