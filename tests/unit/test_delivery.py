"""When the worker's consumer hands a record to the conductor directly, and when it takes Faust's
interruptible path (``plugwatch.streams.delivery``)."""

from __future__ import annotations

import asyncio

from faust.types import TP

from plugwatch.app import PlugwatchApp
from plugwatch.settings import Settings
from plugwatch.streams import delivery


def test_the_worker_uses_the_direct_hand_over() -> None:
    app = PlugwatchApp(Settings())
    assert isinstance(app.consumer, delivery.Consumer)


def test_direct_only_while_nothing_would_make_the_callback_wait() -> None:
    async def scenario() -> list[bool]:
        app = PlugwatchApp(Settings())
        consumer = app.consumer
        tp = TP("telemetry.logs", 0)
        seen = [consumer._can_deliver_now(tp)]  # flow starts suspended until the first assignment
        app.flow_control.resume()
        seen.append(consumer._can_deliver_now(tp))  # no subscriber yet
        channel = app.topic("telemetry.logs")
        app.topics._tp_index[tp].add(channel)
        seen.append(consumer._can_deliver_now(tp))  # a subscriber with room
        for i in range(channel.queue.maxsize):
            channel.queue.put_nowait(i)
        seen.append(consumer._can_deliver_now(tp))  # its queue is full: put would wait
        channel.queue.get_nowait()
        seen.append(consumer._can_deliver_now(tp))
        consumer.suspend_flow.set()  # a rebalance began
        seen.append(consumer._can_deliver_now(tp))
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False, True, False]
