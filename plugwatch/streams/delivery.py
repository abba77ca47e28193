"""Faust's aiokafka transport with a cheaper hand-over of fetched records to the agents.

Faust (0.15) hands every fetched record to the conductor through
``Service.wait_first(callback(message), suspend_flow.wait())``: four tasks and an ``asyncio.wait``
per record, so each record costs a pass of the event loop. Alone that is most of the ~90 µs a bare
agent spends per event; under other work (report builds, the window tail, ClickHouse callbacks)
every one of those passes also runs whatever else is ready, and ingest fell from ~6,000 to
~3,300 events/s while alerts were served although the loop was a third idle (``bench report``).

The conductor's callback only suspends when it has to wait: flow stopped for a rebalance, the
producer buffer over its limit, a subscriber's queue full, or the subscription being changed. When
none of that holds (nearly always), this consumer awaits the callback directly -- it completes
without a pass of the loop -- and yields to the loop every ``yield_every`` records as Faust does.
Otherwise the record takes Faust's own interruptible path, unchanged. What is delivered, in which
order, and what is acknowledged are the same as Faust's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service


class Consumer(faust_aiokafka.Consumer):
    yield_every = 100

    def _can_deliver_now(self, tp: Any) -> bool:
        """The conductor's callback for ``tp`` will not have to wait (see the module's docstring)."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        conductor = app.topics
        if conductor._tp_to_callback_lock.locked():
            return False
        channels = conductor._tp_index.get(tp)
        return not channels or not any(channel.queue.full() for channel in channels)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by every worker
        # faust.transport.consumer.Consumer._drain_messages with the direct path added.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        can_deliver_now = self._can_deliver_now

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = self.yield_every
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            if can_deliver_now(tp):
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
