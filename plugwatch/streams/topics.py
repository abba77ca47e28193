"""Create every topic the service uses, explicitly and with the configured partition count, at start.

Brokers that auto-create topics on first use (Tansu makes 4 partitions) would otherwise pick the
count, and Faust refuses a table whose source and changelog partition counts differ.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


class TopicSetupError(RuntimeError):
    pass


async def ensure_topics(
    bootstrap_servers: str,
    names: list[str],
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
    compacted: list[str] | None = None,
) -> dict[str, int]:
    """Create missing topics (``compacted`` ones with ``cleanup.policy=compact``); return {topic:
    partition count}. Existing topics are left as they are."""
    compact = set(compacted or ())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            try:
                response = await admin.create_topics(
                    [NewTopic(n, partitions, replication, topic_configs={"cleanup.policy": "compact"} if n in compact else {})
                     for n in missing], timeout_ms=int(timeout * 1000)
                )
            except TopicAlreadyExistsError:
                response = None  # another worker won the race
            for topic, code, message in getattr(response, "topic_errors", []) or []:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise TopicSetupError(f"cannot create topic {topic!r}: error {code} {message or ''}")
        counts = await _partition_counts(admin, names, timeout)
    except KafkaError as exc:
        raise TopicSetupError(f"cannot set up topics on {bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()
    for name, count in counts.items():
        if count != partitions:
            log.warning(
                "topic %s has %d partitions, settings say %d; keyed state follows the topic's count",
                name, count, partitions,
            )
    return counts


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> dict[str, int]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topics(list(dict.fromkeys(names)))
        counts = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
        if len(counts) == len(set(names)) and all(counts.values()):
            return counts
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(set(names) - set(counts))
            raise TopicSetupError(f"topics not visible after {timeout:.0f} s: {missing}")
        await asyncio.sleep(0.2)
