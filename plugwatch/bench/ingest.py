"""``plugwatch bench ingest``: the ingest path end to end vs a bare Faust agent vs raw aiokafka.

One embedded broker; N realistic log events produced once to a fresh topic; then, one at a time on
that same topic: a raw aiokafka consume, a bare Faust agent worker, and the plugwatch worker
(decode + validate + mask + masked topic + ClickHouse). Each worker's rate is taken the same way:
its event counter polled over HTTP, from the first event seen to the N-th (for plugwatch: the N-th
row inserted into ClickHouse, its last write).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from plugwatch.bench.corpus import LogCorpus
from plugwatch.embedded import EmbeddedBroker, die_with_parent, free_port
from plugwatch.settings import Topics
from plugwatch.streams.topics import ensure_topics

PARTITIONS = 4
POLL_S = 0.05


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def produce(bootstrap: str, topic: str, corpus: LogCorpus, events: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    size = 0
    try:
        pending = []
        for key, value in corpus.encoded(events):
            size += len(value)
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    say(f"produced {events} events ({size / events:.0f} bytes avg, bodies: {corpus.source}) "
        f"in {elapsed:.1f} s: {events / elapsed:,.0f}/s")
    return elapsed


async def raw_consume(bootstrap: str, topic: str, events: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    first = None
    deadline = time.monotonic() + 300
    try:
        while seen < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if records and first is None:
                    first = time.perf_counter()
                seen += len(records)
    finally:
        await consumer.stop()
    if first is None or seen < events:
        raise RuntimeError(f"raw consume saw {seen} of {events} events")
    return events / (time.perf_counter() - first)


def wait_for_count(
    count: Callable[[], int | None], events: int, proc: subprocess.Popen[bytes], label: str, timeout: float
) -> float:
    """Poll a worker's event counter; events/s from the first event seen to the last."""
    first = None
    last_report = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{label} worker exited with code {proc.returncode}")
        seen = count()
        now = time.perf_counter()
        if seen and first is None:
            first = now
        if seen is not None and seen >= events and first is not None:
            return events / (now - first)
        if time.monotonic() - last_report > 5:
            say(f"  {label}: {seen or 0}/{events}")
            last_report = time.monotonic()
        time.sleep(POLL_S)
    raise RuntimeError(f"{label} worker did not reach {events} events within {timeout:.0f} s")


def start_worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent, start_new_session=True,
        )


def worker_env(broker_url: str, topics: Topics, app_id: str, data_dir: Path, port: int, windows: bool) -> dict[str, str]:
    """Environment of a plugwatch worker process for a benchmark: its own group, topics and chDB."""
    return {
        **os.environ,
        "PLUGWATCH_BROKER_URL": broker_url,
        "PLUGWATCH_TOPIC_PARTITIONS": str(PARTITIONS),
        "PLUGWATCH_APP_ID": app_id,
        "PLUGWATCH_DATA_DIR": str(data_dir),
        "PLUGWATCH_WEB_PORT": str(port),
        "PLUGWATCH_WINDOW__ENABLED": "true" if windows else "false",
        **{f"PLUGWATCH_TOPICS__{name.upper()}": value for name, value in topics.model_dump().items()},
    }


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    health = http_counter(f"http://127.0.0.1:{port}/healthz", lambda r: r.status_code)
    deadline = time.monotonic() + timeout
    while health() != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not become healthy; see {log}")
        time.sleep(0.2)


def http_counter(url: str, parse: Callable[[httpx.Response], int]) -> Callable[[], int | None]:
    client = httpx.Client(timeout=2)

    def count() -> int | None:
        try:
            return parse(client.get(url))
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    return count


def ingest_count(response: httpx.Response) -> int:
    """Events through the whole path: counted when their ClickHouse insert (the last write) succeeded."""
    for line in response.text.splitlines():
        if line.startswith('plugwatch_clickhouse_rows_total{table="telemetry_logs"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def run(events: int = 100_000, plugins: int = 500) -> str:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"plugwatch-bench-{run_id}-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    say(f"embedded broker {broker.url}; work dir {workdir}")
    topic = f"bench.{run_id}.telemetry.logs"
    base_env = {
        **os.environ,
        "PLUGWATCH_BROKER_URL": broker.url,
        "PLUGWATCH_TOPIC_PARTITIONS": str(PARTITIONS),
    }
    try:
        topics = Topics(**{name: f"bench.{run_id}.{value}" for name, value in Topics().model_dump().items()})
        asyncio.run(ensure_topics(broker.bootstrap_servers, topics.all_names(), PARTITIONS))
        asyncio.run(produce(broker.bootstrap_servers, topic, LogCorpus(plugins=plugins), events))

        raw_rate = asyncio.run(raw_consume(broker.bootstrap_servers, topic, events))
        say(f"raw aiokafka consume: {raw_rate:,.0f} events/s")

        port = free_port()
        env = {**base_env, "PLUGWATCH_BENCH_TOPIC": topic, "PLUGWATCH_BENCH_APP": f"bench-bare-{run_id}",
               "PLUGWATCH_BENCH_DATA_DIR": str(workdir)}
        proc = start_worker(["plugwatch.bench.bare", "worker", "-l", "warn", "--web-port", str(port)],
                            env, workdir / "bare.log")
        try:
            count = http_counter(f"http://127.0.0.1:{port}/count", lambda r: int(r.json()["count"]))
            bare_rate = wait_for_count(count, events, proc, "bare agent", timeout=600)
        finally:
            stop_worker(proc)
        say(f"bare Faust agent: {bare_rate:,.0f} events/s")

        port = free_port()
        # The ingest path alone; `plugwatch bench window` measures it with the windows.
        env = worker_env(broker.url, topics, f"bench-ingest-{run_id}", workdir / "data", port, windows=False)
        proc = start_worker(["plugwatch", "worker", "-l", "warn", "--web-port", str(port)],
                            env, workdir / "ingest.log")
        try:
            count = http_counter(f"http://127.0.0.1:{port}/metrics", ingest_count)
            ingest_rate = wait_for_count(count, events, proc, "ingest", timeout=900)
            rows = clickhouse_rows(port)
        finally:
            stop_worker(proc)
        say(f"plugwatch ingest: {ingest_rate:,.0f} events/s; telemetry_logs rows (FINAL): {rows}")
        if rows != events:
            say(f"WARNING: ClickHouse holds {rows} rows for {events} events")
    finally:
        broker.stop()
    return (
        f"ingest: {ingest_rate:.0f} events/s; bare agent: {bare_rate:.0f} events/s; "
        f"raw consume: {raw_rate:.0f} events/s; ratio {ingest_rate / bare_rate:.2f}"
    )


def clickhouse_rows(port: int) -> int | None:
    from plugwatch.cli import DEV_TOKEN

    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/internal/sql",
            json={"query": "SELECT count() FROM plugwatch.telemetry_logs FINAL"},
            headers={"Authorization": f"Bearer {os.environ.get('PLUGWATCH_TOKEN', DEV_TOKEN)}"},
            timeout=30,
        )
        return int(response.json()["rows"][0][0])
    except (httpx.HTTPError, KeyError, ValueError, IndexError):
        return None
