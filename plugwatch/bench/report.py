"""``plugwatch bench report``: alert -> report latency while the same worker ingests a steady load.

One embedded broker and one plugwatch worker (windows and reports on). Realistic log events for
``plugins`` keys are produced at ``rate`` events/s; after a warm-up, ``alerts`` alerts for plugins of
the load go to ``plugin.debug.alert`` at ``alert_rate``/s. A consumer on ``plugin.debug.report``
takes each alert's first revision. Latency is end to end: the alert's produce call to the report's
arrival at that consumer (the report's own ``generated_ms``, consumed -> written, is printed too).
The load figure is what the worker wrote to ClickHouse per second while the alerts were running.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from plugwatch.bench.corpus import LogCorpus
from plugwatch.bench.ingest import (
    PARTITIONS, http_counter, ingest_count, say, start_worker, stop_worker, wait_healthy, worker_env,
)
from plugwatch.embedded import EmbeddedBroker, free_port
from plugwatch.settings import Topics
from plugwatch.streams.topics import ensure_topics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


async def load(producer: AIOKafkaProducer, topic: str, corpus: LogCorpus, rate: float, stop: asyncio.Event) -> int:
    """Produce ``rate`` events/s in 50 ms ticks until ``stop``."""
    tick = 0.05
    sent = 0
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        if due > sent:
            pending = [await producer.send(topic, value, key=key) for key, value in corpus.encoded(due - sent)]
            await asyncio.gather(*pending)
            sent = due
        await asyncio.sleep(tick)
    return sent


async def collect_reports(consumer: AIOKafkaConsumer, produced_at: dict[str, float],
                          latencies: dict[str, tuple[float, int]], expected: int, timeout: float,
                          later: list[int] | None = None) -> None:
    """Fill ``latencies`` with each alert's first revision; ``later`` (one counter) counts the
    later revisions seen meanwhile (late data)."""
    deadline = time.monotonic() + timeout
    while len(latencies) < expected and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=100)
        arrived = time.perf_counter()
        for records in batches.values():
            for message in records:
                report = orjson.loads(message.value)
                alert_id = report.get("alert_id")
                if report.get("revision") == 1 and alert_id in produced_at and alert_id not in latencies:
                    latencies[alert_id] = ((arrived - produced_at[alert_id]) * 1000, report.get("generated_ms") or 0)
                elif later is not None and alert_id in produced_at:
                    later[0] += 1


async def drive(bootstrap: str, topics: Topics, port: int, *, alerts: int, alert_rate: float, rate: float,
                plugins: int, warmup_s: float) -> tuple[list[float], list[int], float]:
    corpus = LogCorpus(plugins=plugins, tenants=max(1, plugins // 20))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024)
    alert_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(topics.debug_report, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=10)
    await producer.start()
    await alert_producer.start()
    await consumer.start()
    await consumer.seek_to_end()
    written = http_counter(f"http://127.0.0.1:{port}/metrics", ingest_count)
    stop = asyncio.Event()
    loader = asyncio.ensure_future(load(producer, topics.logs, corpus, rate, stop))
    produced_at: dict[str, float] = {}
    latencies: dict[str, tuple[float, int]] = {}
    later = [0]
    try:
        await asyncio.sleep(warmup_s / 3)
        settled, settled_at = await asyncio.to_thread(written) or 0, time.monotonic()
        await asyncio.sleep(warmup_s - warmup_s / 3)
        warm = await asyncio.to_thread(written) or 0
        say(f"warm-up done: {warm:,} events written; before the alerts "
            f"{(warm - settled) / (time.monotonic() - settled_at):,.0f} events/s")
        collector = asyncio.ensure_future(collect_reports(consumer, produced_at, latencies, alerts, 120 + alerts / alert_rate,
                                                              later))
        done_before = await asyncio.to_thread(written) or 0
        phase_start = time.monotonic()
        rng = random.Random(11)
        for i in range(alerts):
            tenant, plugin = rng.choice(corpus.keys)
            alert = {"alert_id": f"BENCH-{i:04d}-{uuid.uuid4().hex[:6]}", "ts": int(time.time() * 1000),
                     "tenant_id": tenant, "plugin_id": plugin, "severity": "critical", "kind": "error_rate",
                     "summary": "error rate above 5 %", "window_s": 300}
            produced_at[alert["alert_id"]] = time.perf_counter()
            await alert_producer.send_and_wait(topics.alerts, orjson.dumps(alert), key=f"{tenant}/{plugin}".encode())
            if (i + 1) % 50 == 0:
                say(f"  {i + 1} alerts sent, {len(latencies)} reports back")
            await asyncio.sleep(1 / alert_rate)
        done_after = await asyncio.to_thread(written) or 0
        phase_s = time.monotonic() - phase_start
        await collector
    finally:
        stop.set()
        sent = await loader
        await consumer.stop()
        await alert_producer.stop()
        await producer.stop()
    say(f"load produced: {sent:,} events; late-data revisions seen while the alerts ran: {later[0]:,}")
    if len(latencies) < alerts:
        raise RuntimeError(f"only {len(latencies)} of {alerts} alerts got a report")
    return [v[0] for v in latencies.values()], [v[1] for v in latencies.values()], (done_after - done_before) / phase_s


def run(alerts: int = 200, alert_rate: float = 5.0, rate: float = 6000.0, plugins: int = 500, warmup_s: float = 15.0) -> str:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"plugwatch-bench-report-{run_id}-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    say(f"embedded broker {broker.url}; work dir {workdir}; load {rate:,.0f} events/s over {plugins} plugins")
    try:
        topics = Topics(**{name: f"bench.{run_id}.{value}" for name, value in Topics().model_dump().items()})
        asyncio.run(ensure_topics(broker.bootstrap_servers, topics.all_names(), PARTITIONS))
        port = free_port()
        env = worker_env(broker.url, topics, f"bench-report-{run_id}", workdir / "data", port, windows=True)
        proc = start_worker(["plugwatch", "worker", "-l", "warn", "--web-port", str(port)], env, workdir / "worker.log")
        try:
            wait_healthy(port, proc, workdir / "worker.log")
            e2e, generated, load_rate = asyncio.run(drive(
                broker.bootstrap_servers, topics, port, alerts=alerts, alert_rate=alert_rate, rate=rate,
                plugins=plugins, warmup_s=warmup_s,
            ))
        finally:
            stop_worker(proc)
    finally:
        broker.stop()
    say(f"generated_ms (alert consumed -> report written): p50 {percentile(generated, 50):.0f} ms; "
        f"p99 {percentile(generated, 99):.0f} ms; max {max(generated)} ms")
    say(f"end to end: max {max(e2e):.0f} ms over {len(e2e)} alerts")
    return f"report: p50 {percentile(e2e, 50):.0f} ms; p99 {percentile(e2e, 99):.0f} ms; load {load_rate:.0f} events/s"
