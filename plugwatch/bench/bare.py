"""A bare Faust agent that only iterates events: the baseline of ``plugwatch bench ingest``.

Run as ``python -m plugwatch.bench.bare worker --web-port N`` with PLUGWATCH_BENCH_TOPIC,
PLUGWATCH_BENCH_APP and PLUGWATCH_BROKER_URL set (PLUGWATCH_BENCH_DATA_DIR: where Faust keeps its
data directory; the current directory when unset); ``GET /count`` answers how many events it saw.
"""

from __future__ import annotations

import os

import faust
from faust.web import Request, Response, View

app = faust.App(
    os.environ["PLUGWATCH_BENCH_APP"],
    broker=os.environ["PLUGWATCH_BROKER_URL"],
    store="memory://",
    consumer_auto_offset_reset="earliest",
    topic_partitions=int(os.environ.get("PLUGWATCH_TOPIC_PARTITIONS", "4")),
    autodiscover=False,
    datadir=os.path.join(os.environ.get("PLUGWATCH_BENCH_DATA_DIR", "."), "{conf.name}-data"),
)
source = app.topic(os.environ["PLUGWATCH_BENCH_TOPIC"], key_serializer="raw", value_serializer="raw")
seen = {"count": 0}


@app.agent(source)
async def bare(stream) -> None:  # noqa: ANN001 - Faust passes a StreamT
    async for _value in stream:
        seen["count"] += 1


@app.page("/count")
class Count(View):
    async def get(self, request: Request) -> Response:
        return self.json(seen)


if __name__ == "__main__":
    app.main()
