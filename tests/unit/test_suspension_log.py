"""The plugin-keyed plumbing of the suspensions' one writer: partitions as the producer picks them,
the state topic's messages, and a replica that skips what it cannot read."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from plugwatch.agents.suspension_log import (
    StateReplica,
    plugin_key,
    reply_message,
    state_message,
)
from plugwatch.sinks.topics import partition_of


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_partition_of_is_the_partition_the_producer_picks(tenant, plugin, count):
    key = plugin_key(tenant, plugin)
    partitions = list(range(count))
    assert partition_of(key, count) == DefaultPartitioner()(key, partitions, partitions)


def test_a_state_message_is_keyed_by_plugin_and_suspension():
    record = {"suspension_id": "SUS-1a2b", "tenant_id": "acme", "plugin_id": "crm", "status": "requested"}
    key, value = state_message(record, 3)
    assert key == b"acme/crm|SUS-1a2b"
    assert orjson.loads(value) == {"type": "state", "record": record, "version": 3}


def test_a_reply_carries_the_view_or_the_error():
    key, value = reply_message("acme", "crm", "op1", view={"status": "executing"})
    assert key == b"acme/crm|reply"
    assert orjson.loads(value) == {"type": "reply", "op_id": "op1", "ok": True, "view": {"status": "executing"}}
    _, refused = reply_message("acme", "crm", "op2", code="self_approval", message="no self-approval")
    assert orjson.loads(refused) == {"type": "reply", "op_id": "op2", "ok": False, "code": "self_approval",
                                     "message": "no self-approval"}


def test_the_replica_hands_on_states_answers_waiting_calls_and_skips_unreadable_records():
    seen: list[tuple[dict, int]] = []
    replica = StateReplica("127.0.0.1:1", "state", lambda record, version: seen.append((record, version)))

    def message(offset: int, value: bytes) -> SimpleNamespace:
        return SimpleNamespace(topic="state", partition=0, offset=offset, value=value)

    async def run() -> dict:
        answer = replica.expect("op1")
        replica._read(message(0, b"not json"))
        replica._read(message(1, state_message({"suspension_id": "S-1", "tenant_id": "t", "plugin_id": "p"}, 1)[1]))
        replica._read(message(2, orjson.dumps({"type": "state", "record": {}})))  # no version: skipped
        replica._read(message(3, reply_message("t", "p", "someone-else", view={})[1]))
        replica._read(message(4, reply_message("t", "p", "op1", view={"status": "requested"})[1]))
        return await asyncio.wait_for(answer, 1)

    reply = asyncio.run(run())
    assert reply["view"] == {"status": "requested"}
    assert seen == [({"suspension_id": "S-1", "tenant_id": "t", "plugin_id": "p"}, 1)]
    assert replica.pending == {}
