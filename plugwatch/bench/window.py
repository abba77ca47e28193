"""``plugwatch bench window``: ingest with per-plugin windows for many plugins -- rate and memory.

One embedded broker and one plugwatch worker. Realistic log events for ``plugins`` tenant/plugin
keys are produced as fast as the worker keeps up (at most ``max_lag`` events ahead of what it has
written to ClickHouse) for ``seconds``; the worker's RSS is sampled from /proc. A baseline phase
first runs the same load on a worker with windows switched off, so both rates come from one run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from plugwatch.bench.corpus import LogCorpus
from plugwatch.bench.ingest import (
    PARTITIONS,
    http_counter,
    ingest_count,
    say,
    start_worker,
    stop_worker,
    wait_healthy,
    worker_env,
)
from plugwatch.embedded import EmbeddedBroker, free_port
from plugwatch.settings import Topics
from plugwatch.streams.topics import ensure_topics


def rss_mib(pid: int) -> float:
    return memory_mib(pid)["VmRSS"]


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and its parts, RssAnon (the heap) and RssFile (mapped files: chDB's library is ~180 MiB)."""
    found = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name = line.split(":", 1)[0]
            if name in found:
                found[name] = int(line.split()[1]) / 1024
    return found


def gauge(text: str, name: str) -> float:
    """A gauge's value in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def drive(
    bootstrap: str, topic: str, corpus: LogCorpus, seconds: float, max_lag: int, port: int, pid: int, label: str
) -> tuple[float, list[tuple[float, float, float]]]:
    """Produce while the worker keeps up; returns (events/s written, [(t, rss MiB, window MiB counted,
    window MiB held)])."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    written = http_counter(f"http://127.0.0.1:{port}/metrics", ingest_count)
    metrics_text = http_counter(f"http://127.0.0.1:{port}/metrics", lambda r: r.text)  # type: ignore[arg-type,return-value]
    produced = 0
    samples: list[tuple[float, float, float, float]] = []
    first_done = None
    started = time.monotonic()
    next_sample = started
    try:
        while time.monotonic() - started < seconds:
            done = await asyncio.to_thread(written) or 0
            if first_done is None and done:
                first_done = (time.monotonic(), done)
            if produced - done < max_lag:
                pending = [await producer.send(topic, value, key=key) for key, value in corpus.encoded(5000)]
                await asyncio.gather(*pending)
                produced += len(pending)
            else:
                await asyncio.sleep(0.25)
            if time.monotonic() >= next_sample:
                text = await asyncio.to_thread(metrics_text) or ""
                memory = memory_mib(pid)
                sample = (time.monotonic() - started, memory["VmRSS"], gauge(str(text), "plugwatch_window_bytes") / 2**20,
                          gauge(str(text), "plugwatch_window_held_bytes") / 2**20)
                samples.append(sample)
                say(f"  {label} {sample[0]:5.0f} s: written {done:,} rss {sample[1]:.0f} MiB "
                    f"(anon {memory['RssAnon']:.0f}, files {memory['RssFile']:.0f}) "
                    f"window {sample[2]:.0f} MiB counted, {sample[3]:.0f} MiB held")
                next_sample += 10
        done = await asyncio.to_thread(written) or 0
    finally:
        await producer.stop()
    if first_done is None:
        raise RuntimeError(f"{label}: the worker wrote nothing")
    rate = (done - first_done[1]) / (time.monotonic() - first_done[0])
    return rate, samples


def run_phase(
    broker: EmbeddedBroker, workdir: Path, run_id: str, label: str, windows: bool, seconds: float,
    plugins: int, max_lag: int,
) -> tuple[float, list[tuple[float, float, float, float]]]:
    topics = Topics(**{name: f"bench.{run_id}.{label}.{value}" for name, value in Topics().model_dump().items()})
    asyncio.run(ensure_topics(broker.bootstrap_servers, topics.all_names(), PARTITIONS))
    port = free_port()
    env = worker_env(broker.url, topics, f"bench-{label}-{run_id}", workdir / label, port, windows)
    proc = start_worker(["plugwatch", "worker", "-l", "warn", "--web-port", str(port)], env, workdir / f"{label}.log")
    try:
        wait_healthy(port, proc, workdir / f"{label}.log")
        corpus = LogCorpus(plugins=plugins, tenants=max(1, plugins // 20))
        return asyncio.run(
            drive(broker.bootstrap_servers, topics.logs, corpus, seconds, max_lag, port, proc.pid, label)
        )
    finally:
        stop_worker(proc)


def run(seconds: float = 120, plugins: int = 5000, baseline_seconds: float = 60, max_lag: int = 50_000) -> str:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"plugwatch-bench-window-{run_id}-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    say(f"embedded broker {broker.url}; work dir {workdir}; {plugins} plugins")
    try:
        baseline = None
        if baseline_seconds > 0:
            baseline, _ = run_phase(broker, workdir, run_id, "nowindow", False, baseline_seconds, plugins, max_lag)
            say(f"without windows: {baseline:,.0f} events/s")
        rate, samples = run_phase(broker, workdir, run_id, "window", True, seconds, plugins, max_lag)
    finally:
        broker.stop()
    peak = max(s[1] for s in samples)
    last = samples[-1][1]
    say(f"with windows: {rate:,.0f} events/s; rss peak {peak:.0f} MiB, last {last:.0f} MiB; "
        f"window at the end: {samples[-1][2]:.0f} MiB counted, {samples[-1][3]:.0f} MiB held")
    if baseline:
        say(f"with/without windows: {rate / baseline:.2f}")
    return f"window: {rate:.0f} events/s; rss {peak:.0f} MiB; plugins {plugins}"
