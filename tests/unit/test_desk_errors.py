"""Which failures of a ticket op or fix are final (dead-letter topic) and which wait and retry."""

import pytest

from plugwatch.agents.tickets import UnknownAlert, transient_as_retry
from plugwatch.sinks.clickhouse import ClickHouseError
from plugwatch.streams.ordered import Retry
from plugwatch.tickets.adapters import TicketRejected


@pytest.mark.parametrize("error", [ValueError("not a ticket op"), TicketRejected("jira: 400", status=400),
                                   UnknownAlert("ALR-1")])
async def test_bad_input_and_refusals_are_final(error):
    with pytest.raises(type(error)):
        async with transient_as_retry():
            raise error


@pytest.mark.parametrize("error", [ClickHouseError("chDB closed"), ConnectionError("broker gone"), Retry("down")])
async def test_an_unavailable_store_or_broker_is_retried(error):
    with pytest.raises(Retry):
        async with transient_as_retry():
            raise error
