"""Realistic telemetry for benchmarks: ~500-byte log events over many tenants and plugins.

Message bodies come from ../shared/data/loghub/*.log when that directory exists (real system
logs), else from synthetic templates. About one event in five carries personal data or a secret.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from plugwatch.masking.corpus import loghub_lines

_SYNTHETIC = [
    "GET /api/v2/orders/{n} completed in {ms} ms status=200 cache=miss",
    "worker {n} picked job batch-{n} from queue plugin-jobs (attempt {k})",
    "connection pool stats: active={k} idle={n} waiting=0 max=64",
    "rendered template invoice.html for order {n} in {ms} ms",
    "retrying upstream call to inventory-service after timeout ({k}/3)",
    "flushed {n} metrics points to exporter in {ms} ms",
]
_SENSITIVE = [
    "password reset requested by {email}",
    "payment failed for card {card} amount=42.10 currency=CNY",
    "sms code sent to {phone}",
    "upstream auth header Authorization: Bearer {jwt}",
    "connecting to postgres://app:{secret}@db.internal:5432/plugins",
]
_LEVELS = ["INFO"] * 12 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
_REGIONS = ["cn-east-1", "cn-north-2", "eu-west-1", "us-east-1"]


def _luhn_card(rng: random.Random) -> str:
    digits = [6, 2] + [rng.randrange(10) for _ in range(13)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


class LogCorpus:
    def __init__(self, plugins: int = 500, tenants: int = 50, seed: int = 7):
        self.rng = random.Random(seed)
        self.keys = [(f"tenant-{i % tenants:03d}", f"plugin-{i:05d}") for i in range(plugins)]
        self.bodies = loghub_lines() or []
        self.source = "loghub" if self.bodies else "synthetic"

    def _message(self) -> str:
        rng = self.rng
        if rng.random() < 0.2:
            template = rng.choice(_SENSITIVE)
            return template.format(
                email=f"user{rng.randrange(10**6)}@example.com",
                card=_luhn_card(rng),
                phone=f"+86 138{rng.randrange(10**8):08d}",
                jwt="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                secret=f"s3cr3t{rng.randrange(10**6)}",
            )
        if self.bodies:
            return rng.choice(self.bodies)
        return rng.choice(_SYNTHETIC).format(n=rng.randrange(10**6), ms=rng.randrange(900), k=rng.randrange(5))

    def event(self, ts_ms: int | None = None) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        tenant, plugin = rng.choice(self.keys)
        instance = f"{plugin}-i{rng.randrange(3)}"
        record: dict[str, Any] = {
            "ts": ts_ms if ts_ms is not None else int(time.time() * 1000),
            "tenant_id": tenant,
            "plugin_id": plugin,
            "plugin_version": f"1.{rng.randrange(20)}.{rng.randrange(10)}",
            "instance_id": instance,
            "host": f"node-{rng.randrange(40):02d}.pool.internal",
            "env": "prod",
            "region": rng.choice(_REGIONS),
            "level": rng.choice(_LEVELS),
            "logger": "plugin.runtime",
            "message": self._message(),
            "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "span_id": f"{rng.getrandbits(64):016x}",
            "attributes": {"http.route": "/api/v2/orders/{id}", "runtime": "python3.11", "attempt": rng.randrange(3)},
        }
        return f"{tenant}/{plugin}", record

    def encoded(self, count: int) -> Iterator[tuple[bytes, bytes]]:
        now = int(time.time() * 1000)
        for i in range(count):
            key, record = self.event(now - (count - i))
            yield key.encode(), orjson.dumps(record)
