"""One writer per plugin for suspensions, however many workers run (DESIGN §7: concurrent requests
for one plugin merge, never race).

Every change of a suspension is an *op* on ``plugin.suspend.ops``, keyed ``tenant_id/plugin_id``:
an API request, approval or rejection, a risk signal, a runtime ack, a command's deadline. Only the
member of the ``<app_id>-suspend-ops`` group that holds the plugin's partition applies the plugin's
ops (``OpsMember``), in their order, a fetched batch at a time with plugins side by side, and it
commits a batch only after it wrote what the batch's ops made:

- each new version of a record to ``plugin.suspend.state``, in the partition of the same number,
  key ``tenant/plugin|<suspension_id>`` (compacted on Kafka: every record's latest version stays);
- then, for an op that an API call waits on, the answer (key ``tenant/plugin|reply``) in that same
  partition, after the records, so the worker that waits has read the records when the answer comes.

Every worker reads the whole state topic from its start (``StateReplica``): any worker answers reads
for any plugin and finds the plugin of a suspension id, and a partition's new owner applies nothing
before it has read that partition to its end -- which holds everything the previous owner wrote
before it let the partition go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from plugwatch.aio import cancel_and_wait
from plugwatch.streams.reading import fetch, stop_reader

log = logging.getLogger(__name__)

STATE, REPLY = "state", "reply"


def plugin_key(tenant_id: str, plugin_id: str) -> bytes:
    return f"{tenant_id}/{plugin_id}".encode()


def state_message(record: dict[str, Any], version: int) -> tuple[bytes, bytes]:
    """(key, value) of a record's version on the state topic."""
    key = plugin_key(record["tenant_id"], record["plugin_id"]) + b"|" + record["suspension_id"].encode()
    return key, orjson.dumps({"type": STATE, "record": record, "version": version})


def reply_message(tenant_id: str, plugin_id: str, op_id: str, *, view: dict[str, Any] | None = None,
                  code: str | None = None, message: str | None = None) -> tuple[bytes, bytes]:
    """(key, value) of the answer to op ``op_id``: the record's view, or an error code and message."""
    body: dict[str, Any] = {"type": REPLY, "op_id": op_id, "ok": code is None}
    if code is None:
        body["view"] = view
    else:
        body.update(code=code, message=message)
    return plugin_key(tenant_id, plugin_id) + b"|reply", orjson.dumps(body)


class StateReplica:
    """Every record of the state topic, read from its start by a consumer of no group."""

    def __init__(self, bootstrap_servers: str, topic: str, on_state: Callable[[dict[str, Any], int], None]):
        self.topic = topic
        self.on_state = on_state
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.positions: dict[int, int] = {}
        self.partitions: list[TopicPartition] = []
        self._config = dict(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()

    async def start(self) -> int:
        """Read the topic to its end; return its partition count."""
        consumer = AIOKafkaConsumer(**self._config)
        await consumer.start()
        self._consumer = consumer
        await consumer.topics()  # metadata
        numbers = consumer.partitions_for_topic(self.topic)
        if not numbers:
            raise RuntimeError(f"topic {self.topic} does not exist (it is created at the worker's start)")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(numbers)]
        consumer.assign(self.partitions)
        await consumer.seek_to_beginning(*self.partitions)
        self._task = asyncio.ensure_future(self._run())
        await self.caught_up()
        return len(self.partitions)

    async def stop(self) -> None:
        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        await stop_reader(task, consumer)
        for future in self.pending.values():
            future.cancel()

    def expect(self, op_id: str) -> asyncio.Future[dict[str, Any]]:
        """The answer to ``op_id`` once it is read (ask before the op is sent)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[op_id] = future
        return future

    def forget(self, op_id: str) -> None:
        self.pending.pop(op_id, None)

    async def caught_up(self, partitions: set[int] | None = None) -> None:
        """Return once everything written to ``partitions`` (all when None) before this call has
        been read."""
        consumer = self._consumer
        assert consumer is not None
        wanted = self.partitions if partitions is None else [TopicPartition(self.topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(wanted)
        while any(self.positions.get(tp.partition, 0) < end for tp, end in ends.items()):
            self._moved.clear()
            await self._moved.wait()

    async def read_to_end(self, partitions: set[int] | None, timeout_s: float) -> bool:
        """``caught_up`` within ``timeout_s``: False when the broker did not answer or the records
        did not come in time, or the replica is not reading (not started, or stopped)."""
        if self._consumer is None:
            return False
        try:
            await asyncio.wait_for(self.caught_up(partitions), timeout_s)
        except (asyncio.TimeoutError, KafkaError):
            return False
        return True

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await fetch(consumer, self.topic, timeout_ms=200, max_records=1000)
            for records in batches.values():
                for record in records:
                    self._read(record)
            for tp in self.partitions:  # known once fetched: no request
                self.positions[tp.partition] = await consumer.position(tp)
            self._moved.set()

    def _read(self, record: Any) -> None:
        try:
            value = orjson.loads(record.value or b"")
            if value.get("type") == STATE:
                self.on_state(value["record"], int(value["version"]))
            elif value.get("type") == REPLY:
                future = self.pending.pop(value.get("op_id"), None)
                if future is not None and not future.done():
                    future.set_result(value)
        except Exception as exc:  # our own topic: a record we cannot read is skipped, and said
            log.error("%s[%d]@%d unreadable, skipped: %s", record.topic, record.partition, record.offset, exc)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, member: OpsMember):
        self.member = member

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.member.batch:  # the batch in hand finishes and commits before the partitions go
            pass
        self.member.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.member.on_assigned({tp.partition for tp in assigned})  # before any op is fetched


class OpsMember:
    """The ``<app_id>-suspend-ops`` group member: applies the ops of the partitions it holds and
    commits each fetched batch after ``apply`` finished all of it (at least once: an op applied
    twice after a crash must change nothing the second time, which the state machine sees to)."""

    def __init__(self, settings: Any, topic: str, apply: Callable[[Any], Awaitable[None]], *,
                 on_assigned: Callable[[set[int]], Awaitable[None]], on_revoked: Callable[[set[int]], None]):
        self.topic = topic
        self.apply = apply
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.batch = asyncio.Lock()
        self._config = dict(
            bootstrap_servers=settings.bootstrap_servers, group_id=f"{settings.app_id}-suspend-ops",
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self._config)
        await consumer.start()
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        async with self.batch:  # never leave in the middle of a batch
            task, self._task = self._task, None
            await cancel_and_wait(task)
        consumer, self._consumer = self._consumer, None
        await stop_reader(None, consumer)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await fetch(consumer, self.topic, timeout_ms=500, max_records=500)
            if not batches:
                continue
            async with self.batch:
                held = consumer.assignment()
                in_order: dict[bytes | None, list[Any]] = {}
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batches.items():
                    if tp not in held or not records:
                        continue  # moved to another member meanwhile: it starts at our last commit
                    for record in records:
                        in_order.setdefault(record.key, []).append(record)
                    offsets[tp] = records[-1].offset + 1
                await asyncio.gather(*(self._apply_all(records) for records in in_order.values()))
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, KafkaError) as exc:
                    log.warning("%s: commit failed (%s); the next owner applies these ops again", self.topic, exc)

    async def _apply_all(self, records: list[Any]) -> None:
        for record in records:
            try:
                await self.apply(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s[%d]@%d: op failed", record.topic, record.partition, record.offset)
            self.applied += 1
