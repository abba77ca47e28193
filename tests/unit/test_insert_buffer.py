"""Batching separate from transport: the insert buffer with a list-backed insert as the double."""

import asyncio

import pytest

from plugwatch.sinks.buffer import InsertBuffer


class ListInsert:
    """The transport double: records every insert, can fail the first ``failures`` calls."""

    def __init__(self, failures: int = 0):
        self.calls: list[tuple[str, list[bytes]]] = []
        self.failures = failures

    async def __call__(self, table, values):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse down")
        self.calls.append((table, list(values)))


def test_full_buffer_inserts_at_once_and_completes_the_callers():
    async def scenario():
        insert = ListInsert()
        buffer = InsertBuffer(insert, max_rows=3, max_delay_s=60)
        buffer.start()
        first = buffer.add("logs", [b"1", b"2"])
        second = buffer.add("traces", [b"3"])
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        await buffer.stop()
        return insert.calls

    assert asyncio.run(scenario()) == [("logs", [b"1", b"2"]), ("traces", [b"3"])]


def test_partial_buffer_waits_for_the_delay_only():
    async def scenario():
        insert = ListInsert()
        buffer = InsertBuffer(insert, max_rows=1000, max_delay_s=0.01)
        buffer.start()
        await asyncio.wait_for(buffer.add("logs", [b"a"]), 5)
        await buffer.stop()
        return insert.calls

    assert asyncio.run(scenario()) == [("logs", [b"a"])]


def test_a_failed_insert_is_retried_and_nothing_is_lost(monkeypatch):
    import plugwatch.sinks.buffer as module

    async def fast_retry(what, action):
        while True:
            try:
                return await action()
            except ConnectionError:
                await asyncio.sleep(0)

    monkeypatch.setattr(module, "retry_forever", fast_retry)

    async def scenario():
        insert = ListInsert(failures=2)
        buffer = InsertBuffer(insert, max_rows=1, max_delay_s=60)
        buffer.start()
        await asyncio.wait_for(buffer.add("logs", [b"x"]), 5)
        await buffer.stop()
        return insert.calls

    assert asyncio.run(scenario()) == [("logs", [b"x"])]


def test_stop_inserts_what_is_queued():
    async def scenario():
        insert = ListInsert()
        buffer = InsertBuffer(insert, max_rows=1000, max_delay_s=60)
        buffer.start()
        pending = buffer.add("logs", [b"late"])
        await asyncio.sleep(0)
        await buffer.stop()
        assert pending.done()
        return insert.calls

    assert asyncio.run(scenario()) == [("logs", [b"late"])]


@pytest.mark.parametrize("values", [[], ()])
def test_empty_add_is_done_immediately(values):
    async def scenario():
        buffer = InsertBuffer(ListInsert())
        return buffer.add("logs", values).done()

    assert asyncio.run(scenario())
