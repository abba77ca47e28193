"""Integration fixtures: the real embedded broker (once per run) and real plugwatch workers.

Each worker is a ``python -m plugwatch worker`` subprocess with its own app id (consumer group),
topic names, data directory (its own chDB) and web port. When the broker or a worker cannot start,
the tests FAIL: a skipped integration suite would be a silent green.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from plugwatch.embedded import EmbeddedBroker, die_with_parent, free_port, stop_process
from plugwatch.settings import Topics
from plugwatch.streams.topics import ensure_topics

PARTITIONS = 4
TOKEN = "integration-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    embedded = EmbeddedBroker(log_path=log)
    embedded.start()  # raises -> every test using it errors out, none is skipped
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def access_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("access") / "access.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path.write_text(
        "principals:\n"
        f"  - name: integration\n    token_sha256: {digest}\n"
        "    roles: [security, ops, auditor]\n    tenants: ['*']\n"
    )
    return path


def unique_topics() -> Topics:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return Topics(**{name: f"{prefix}.{value}" for name, value in Topics().model_dump().items()})


class Worker:
    """One plugwatch worker process and the ways a test talks to it."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        access_file: Path,
        workdir: Path,
        *,
        app_id: str | None = None,
        topics: Topics | None = None,
        **settings: str,
    ):
        """A worker of its own group and topics, or -- given ``app_id`` and ``topics`` -- a peer."""
        self.broker = broker
        self.topics = topics or unique_topics()
        self.app_id = app_id or f"it-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.workdir = workdir / f"w{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "worker.log"
        self.env = {
            **os.environ,
            "PLUGWATCH_APP_ID": self.app_id,
            "PLUGWATCH_BROKER_URL": broker.url,
            "PLUGWATCH_DATA_DIR": str(self.workdir / "data"),
            "PLUGWATCH_WEB_PORT": str(self.port),
            "PLUGWATCH_ACCESS_FILE": str(access_file),
            "PLUGWATCH_TOPIC_PARTITIONS": str(PARTITIONS),
            "PLUGWATCH_BROKER_SESSION_TIMEOUT_S": "6",
            "PLUGWATCH_BROKER_REBALANCE_TIMEOUT_S": "6",
            **{f"PLUGWATCH_TOPICS__{k.upper()}": v for k, v in self.topics.model_dump().items()},
            **{f"PLUGWATCH_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def start(self, timeout: float = 90) -> Worker:
        asyncio.run(
            ensure_topics(self.broker.bootstrap_servers, self.topics.all_names(), PARTITIONS,
                          compacted=self.topics.compacted())
        )
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plugwatch", "worker", "-l", "info", "--web-port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def sql(self, query: str) -> list[list[Any]]:
        response = self.http.post(
            "/internal/sql", json={"query": query}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return response.json()["rows"]

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def wait_for_rows(self, query: str, expected: int, timeout: float = 60) -> list[list[Any]]:
        """Poll until the query returns at least ``expected`` rows (the worker batches inserts)."""
        deadline = time.monotonic() + timeout
        rows: list[list[Any]] = []
        while time.monotonic() < deadline:
            rows = self.sql(query)
            if len(rows) >= expected:
                return rows
            time.sleep(0.25)
        raise AssertionError(f"{query!r} gave {len(rows)} rows, expected {expected}\n{self.log_tail()}")

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        return response.json()

    def kill(self) -> None:
        """kill -9: no leave-group, no flush, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)
        self.http.close()


@pytest.fixture
def worker(broker: EmbeddedBroker, access_file: Path, tmp_path: Path) -> Iterator[Worker]:
    started = Worker(broker, access_file, tmp_path).start()
    yield started
    started.stop()
    log = started.log_path.read_text(errors="replace")
    assert "--- Logging error ---" not in log, "the worker's own logging failed:\n" + started.log_tail()


def wait_for(check: Any, timeout: float, what: str, worker: Worker) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the worker's log tail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {str(last)[:500]}\n{worker.log_tail()}")


def produce(broker: EmbeddedBroker, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    async def _send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in messages]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(_send())


def consume(broker: EmbeddedBroker, topic: str, expected: int, timeout: float = 60) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Read a topic from the start until ``expected`` records arrived (fails after ``timeout``)."""

    async def _read() -> list[tuple[bytes | None, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=f"reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[tuple[bytes | None, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend((r.key, orjson.loads(r.value)) for r in records)
        finally:
            await consumer.stop()
        return out

    records = asyncio.run(_read())
    assert len(records) >= expected, f"{topic}: {len(records)} records, expected {expected}"
    return records
