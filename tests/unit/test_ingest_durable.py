"""An ingest batch is acknowledged only once its masked copies are on the broker and its rows are
in ClickHouse; a batch the broker refused is sent again (``plugwatch.agents.ingest._durable``)."""

from __future__ import annotations

import asyncio

from plugwatch.agents.ingest import _durable


class Broker:
    """Stands in for the topic sink: keeps what it acknowledged, in order."""

    def __init__(self) -> None:
        self.acknowledged: list[tuple[str, list[tuple[bytes, bytes]]]] = []

    async def send_many(self, topic: str, items: list[tuple[bytes, bytes]]) -> int:
        self.acknowledged.append((topic, list(items)))
        return len(items)


def test_a_refused_batch_is_sent_again_before_the_batch_counts_as_durable() -> None:
    async def scenario() -> tuple[list, bool, bool]:
        loop = asyncio.get_running_loop()
        broker = Broker()
        items = [(b"acme/p1", b'{"event_id": "e1"}'), (b"acme/p1", b'{"event_id": "e2"}')]
        refused, accepted = loop.create_future(), loop.create_future()
        rows = loop.create_future()
        durable = asyncio.ensure_future(_durable(broker, [("telemetry.masked.logs", items, [refused]),
                                                       ("plugin.deadletter", [(b"k", b"v")], [accepted])], rows))
        refused.set_exception(ConnectionError("broker went away"))
        accepted.set_result(None)
        await asyncio.sleep(0.05)
        waiting_for_rows = not durable.done()
        rows.set_result(None)
        await durable
        return broker.acknowledged, waiting_for_rows, durable.done()

    acknowledged, waiting_for_rows, done = asyncio.run(scenario())
    assert acknowledged == [("telemetry.masked.logs", [(b"acme/p1", b'{"event_id": "e1"}'),
                                                       (b"acme/p1", b'{"event_id": "e2"}')])]
    assert waiting_for_rows and done
