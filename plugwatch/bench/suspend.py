"""``plugwatch bench suspend``: request -> command latency of concurrent suspension requests.

One embedded broker, one plugwatch worker and ``plugwatch runtime-sim`` (in this process). A policy
that approves every request at once is written for the run; ``requests`` suspension requests for
different plugins go to ``POST /api/plugins/{id}/suspend`` at the same moment. Latency is from each
request's send to its command's arrival at a consumer of ``plugin.suspend.command``; "completed"
counts the suspensions that reached ``suspended`` on ``plugin.suspend.completed``.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from plugwatch.bench.ingest import PARTITIONS, http_counter, say, start_worker, stop_worker, wait_healthy, worker_env
from plugwatch.bench.report import percentile
from plugwatch.embedded import EmbeddedBroker, free_port
from plugwatch.settings import Topics
from plugwatch.streams.topics import ensure_topics
from plugwatch.suspension.runtime_sim import SimBehaviour, run_sim

DEV_TOKEN = "plugwatch-dev-token"  # the shipped access file's local development principal
AUTO_APPROVE = """\
# bench: every request is approved at once (approvals: []), wait mode
defaults: {default_mode: wait, wait_timeout_s: 30, force_timeout_s: 15, force_retries: 2}
severities:
  critical: {approvals: [], may_force: true, escalate_to_force: true}
  high: {approvals: [], may_force: true, escalate_to_force: true}
  medium: {approvals: [], may_force: true, escalate_to_force: true}
  low: {approvals: []}
"""


async def drive(bootstrap: str, topics: Topics, port: int, requests: int, timeout_s: float) -> tuple[list[float], int]:
    commands = AIOKafkaConsumer(topics.suspend_command, topics.suspend_completed, bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await commands.start()
    stop = asyncio.Event()
    sim = asyncio.ensure_future(run_sim(bootstrap, topics.suspend_command, topics.suspend_ack,
                                        SimBehaviour(delay_ms=20), group_id=f"bench-sim-{uuid.uuid4().hex[:8]}",
                                        stop=stop))
    sent_at: dict[str, float] = {}
    command_at: dict[str, float] = {}
    completed: set[str] = set()
    plugins = [f"bench-plugin-{i:03d}" for i in range(requests)]

    async def read() -> None:
        while True:
            for tp, records in (await commands.getmany(timeout_ms=100)).items():
                now = time.monotonic()
                for record in records:
                    value = orjson.loads(record.value)
                    plugin = value.get("plugin_id")
                    if tp.topic == topics.suspend_command:
                        command_at.setdefault(plugin, now)
                    elif value.get("status") == "suspended":
                        completed.add(plugin)

    reader = asyncio.ensure_future(read())
    try:
        await asyncio.sleep(1.0)  # the reader is positioned before the first request
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {DEV_TOKEN}"}) as client:
            async def ask(plugin: str) -> None:
                sent_at[plugin] = time.monotonic()
                response = await client.post(f"/api/plugins/{plugin}/suspend",
                                             json={"tenant_id": "bench", "reason": "bench", "severity": "high"})
                if response.status_code != 202:
                    raise RuntimeError(f"{plugin}: {response.status_code} {response.text[:200]}")

            await asyncio.gather(*(ask(plugin) for plugin in plugins))
        deadline = time.monotonic() + timeout_s
        while (len(command_at) < requests or len(completed) < requests) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await sim
        await commands.stop()
    latencies = [(command_at[p] - sent_at[p]) * 1000 for p in plugins if p in command_at and p in sent_at]
    if len(latencies) < requests:
        raise RuntimeError(f"only {len(latencies)} of {requests} requests got a command within {timeout_s:.0f} s")
    return latencies, len(completed)


def wait_writer(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until the worker has joined the suspension ops group: requests sent before wait for that."""
    joined = http_counter(f"http://127.0.0.1:{port}/healthz", lambda r: int(r.json()["suspensions"]["joined"]))
    deadline = time.monotonic() + timeout
    while joined() != 1:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not join the suspension ops group; see {log}")
        time.sleep(0.2)


def run(requests: int = 100, timeout_s: float = 120.0) -> str:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"plugwatch-bench-suspend-{run_id}-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    say(f"embedded broker {broker.url}; work dir {workdir}; {requests} concurrent requests, auto-approve policy")
    try:
        topics = Topics(**{name: f"bench.{run_id}.{value}" for name, value in Topics().model_dump().items()})
        asyncio.run(ensure_topics(broker.bootstrap_servers, topics.all_names(), PARTITIONS))
        policies = workdir / "suspend_policies.yaml"
        policies.write_text(AUTO_APPROVE)
        port = free_port()
        env = worker_env(broker.url, topics, f"bench-suspend-{run_id}", workdir / "data", port, windows=True)
        env["PLUGWATCH_SUSPENSIONS__POLICIES"] = str(policies)
        proc = start_worker(["plugwatch", "worker", "-l", "warn", "--web-port", str(port)], env, workdir / "worker.log")
        try:
            wait_healthy(port, proc, workdir / "worker.log")
            wait_writer(port, proc, workdir / "worker.log")
            latencies, completed = asyncio.run(drive(broker.bootstrap_servers, topics, port, requests, timeout_s))
        finally:
            stop_worker(proc)
    finally:
        broker.stop()
    say(f"request -> command: p90 {percentile(latencies, 90):.0f} ms; max {max(latencies):.0f} ms; "
        f"{sum(v > 1000 for v in latencies)} over 1 s of {len(latencies)} requests")
    return f"suspend: p50 {percentile(latencies, 50):.0f} ms; p99 {percentile(latencies, 99):.0f} ms; completed {completed}/{requests}"
