"""A realistic debug report (schema ``plugwatch.debug.report/1``) for tests of its renderers.

Incomplete on purpose (a source missing, the fallback used, some timeline rows left out), so every
part of the page has something to show. Values that the masking engine would have replaced look masked.
"""

from __future__ import annotations

import copy
from typing import Any

T0 = 1_795_511_700_000  # 2026-11-24T09:15:00.000Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

_SAMPLE: dict[str, Any] = {
    "schema": "plugwatch.debug.report/1",
    "report_id": "RPT-20261124-000042",
    "alert_id": "ALR-7f3a91",
    "tenant_id": "tenant-acme",
    "plugin_id": "pay-gateway",
    "owner": "[MASKED:email]",
    "revision": 2,
    "generated_at": T0 + 95_210,
    "generated_ms": 1_840,
    "alert": {
        "alert_id": "ALR-7f3a91",
        "ts": T0 + 92_000,
        "severity": "critical",
        "kind": "error_rate",
        "summary": "pay-gateway error rate 38% over 60 s (threshold 5%)",
        "instance_id": "pay-gateway-7d9f-2",
    },
    "fingerprint": "9c1e44b0a7d2f3e1",
    "window": {"from": T0, "to": T0 + 92_000},
    "environment": {
        "plugin_versions": ["2.14.1", "2.15.0-rc1"],
        "instances": ["pay-gateway-7d9f-1", "pay-gateway-7d9f-2"],
        "hosts": ["node-eu-west-4a", "node-eu-west-4c"],
        "env": ["prod"],
        "region": ["eu-west-4"],
        "runtime": ["python 3.12.7", "aiohttp 3.10.5"],
        "feature_flags": {"new_checkout_flow": True, "retry_budget": 3, "card_vault": "v2"},
    },
    "stack_traces": [
        {
            "fingerprint": "9c1e44b0a7d2f3e1",
            "type": "CardVaultTimeout",
            "message": "vault lookup for [MASKED:card_number] timed out after 2000 ms",
            "stacktrace": (
                "Traceback (most recent call last):\n"
                '  File "/srv/plugin/pay_gateway/charge.py", line 88, in charge\n'
                "    token = await vault.lookup(card)\n"
                '  File "/srv/plugin/pay_gateway/vault.py", line 41, in lookup\n'
                "    raise CardVaultTimeout(f\"vault lookup for {card} timed out after {ms} ms\")\n"
                "pay_gateway.vault.CardVaultTimeout: vault lookup for [MASKED:card_number] timed out after 2000 ms"
            ),
            "count": 57,
            "first_ts": T0 + 31_120,
            "last_ts": T0 + 91_480,
            "instances": ["pay-gateway-7d9f-1", "pay-gateway-7d9f-2"],
        },
        {
            "fingerprint": "1b7d09e2c4a6f850",
            "type": "KeyError",
            "message": "'currency'",
            "stacktrace": (
                "Traceback (most recent call last):\n"
                '  File "/srv/plugin/pay_gateway/refund.py", line 19, in refund\n'
                '    amount = Money(body["amount"], body["currency"])\n'
                "KeyError: 'currency'"
            ),
            "count": 2,
            "first_ts": T0 + 48_002,
            "last_ts": T0 + 48_950,
            "instances": ["pay-gateway-7d9f-2"],
        },
    ],
    "requests": [
        {
            "ts": T0 + 91_400,
            "method": "POST",
            "url": "https://api.example.test/v1/charges?customer=[MASKED:customer_id]",
            "headers": {"authorization": "[MASKED:bearer_token]", "content-type": "application/json"},
            "query": {"customer": "[MASKED:customer_id]"},
            "body": {"amount": 1299, "currency": "EUR", "card": "[MASKED:card_number]", "email": "[MASKED:email]"},
            "trace_id": TRACE,
            "level": "error",
            "instance_id": "pay-gateway-7d9f-2",
        },
        {
            "ts": T0 + 48_002,
            "method": "POST",
            "url": "https://api.example.test/v1/refunds",
            "headers": {"authorization": "[MASKED:bearer_token]"},
            "query": None,
            "body": '{"amount": 500}',
            "trace_id": None,
            "level": "warn",
            "instance_id": "pay-gateway-7d9f-2",
        },
    ],
    "traces": [
        {
            "trace_id": TRACE,
            "status": "error",
            "spans": [
                {
                    "span_id": "a1", "parent_span_id": None, "name": "POST /v1/charges",
                    "start_ts": T0 + 89_400, "end_ts": T0 + 91_480, "raw_start_ts": T0 + 89_400,
                    "duration_ms": 2080, "status": "error", "source": "pay-gateway-7d9f-2",
                    "attributes": {"http.method": "POST", "http.status_code": 502},
                },
                {
                    "span_id": "b2", "parent_span_id": "a1", "name": "charge",
                    "start_ts": T0 + 89_410, "end_ts": T0 + 91_470, "raw_start_ts": T0 + 89_410,
                    "duration_ms": 2060, "status": "error", "source": "pay-gateway-7d9f-2",
                    "attributes": {"customer": "[MASKED:customer_id]"},
                },
                {
                    "span_id": "c3", "parent_span_id": "b2", "name": "vault.lookup",
                    "start_ts": T0 + 89_420, "end_ts": T0 + 91_450, "raw_start_ts": T0 + 90_620,
                    "duration_ms": 2030, "status": "error", "source": "card-vault-1",
                    "attributes": {"vault.region": "eu-west-4"},
                },
                {
                    "span_id": "d4", "parent_span_id": "a1", "name": "audit.write",
                    "start_ts": T0 + 91_471, "end_ts": T0 + 91_479, "raw_start_ts": T0 + 91_471,
                    "duration_ms": 8, "status": "ok", "source": "pay-gateway-7d9f-2",
                    "attributes": {},
                },
            ],
        }
    ],
    "metrics": {
        "http.server.duration": {"min": 12.0, "max": 2080.5, "avg": 611.25, "last": 2080.5, "count": 240, "unit": "ms"},
        "vault.pool.in_use": {"min": 3, "max": 64, "avg": 41.7, "last": 64, "count": 92, "unit": "{connections}"},
        "process.cpu.utilization": {"min": 0.12, "max": 0.97, "avg": 0.55, "last": 0.91, "count": 92, "unit": "1"},
    },
    "timeline": [
        {
            "ts": T0 + 31_120, "raw_ts": T0 + 31_120, "source": "pay-gateway-7d9f-1", "signal": "logs",
            "level": "error", "message": "vault lookup for [MASKED:card_number] timed out after 2000 ms",
            "trace_id": None,
        },
        {
            "ts": T0 + 48_002, "raw_ts": T0 + 48_002, "source": "pay-gateway-7d9f-2", "signal": "logs",
            "level": "warn", "message": "refund body without currency from [MASKED:email]", "trace_id": None,
        },
        {
            "ts": T0 + 89_420, "raw_ts": T0 + 90_620, "source": "card-vault-1", "signal": "traces",
            "level": "info", "message": "span vault.lookup started", "trace_id": TRACE,
        },
        {
            "ts": T0 + 91_480, "raw_ts": T0 + 91_480, "source": "pay-gateway-7d9f-2", "signal": "logs",
            "level": "error", "message": "charge failed: upstream 502 for customer [MASKED:customer_id]",
            "trace_id": TRACE,
        },
    ],
    "clock_skew": [
        {"source": "card-vault-1", "signal": "traces", "offset_ms": -1200, "confidence": 0.87, "samples": 143},
        {"source": "pay-gateway-7d9f-2", "signal": "logs", "offset_ms": 0, "confidence": 1.0, "samples": 512},
    ],
    "completeness": {
        "coverage": 0.82,
        "fallback_used": True,
        "missing_sources": ["card-vault-2"],
        "complete": False,
        "notes": [
            "card-vault-2 sent nothing in the window",
            "logs before 09:15:20 read from ClickHouse (worker restarted)",
        ],
        "truncated": {"timeline": 1210},
    },
    "links": {
        "report_url": "https://plugwatch.example.test/api/reports/RPT-20261124-000042",
        "export_url": (
            "/internal/debug/exports/eyJ0ZW5hbnRfaWQiOiJ0ZW5hbnQtYWNtZSJ9?expires=1795598100000&sig=" + "ab" * 32
        ),
        "expires_at": T0 + 86_400_000,
        "ticket_url": "https://tickets.example.test/browse/PLUG-1234",
    },
    "counts": {"logs": 1214, "traces": 37, "metrics": 424},
}


def sample_report() -> dict[str, Any]:
    """A fresh copy: tests may change it freely."""
    return copy.deepcopy(_SAMPLE)
