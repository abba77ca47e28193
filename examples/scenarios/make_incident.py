#!/usr/bin/env python3
"""Writes ``incident.jsonl``, the default scenario of ``plugwatch demo`` (stdlib only, deterministic).

The incident: tenant ``acme``'s plugin ``payment-gateway`` 3.2.1 runs as three instances (pg-0, pg-1,
pg-2) on three hosts whose clocks are off (+2.5 s, -1.8 s, 0). The platform's API gateway
(``gateway-0``, the reference clock) calls the plugin for every payment: its root span is the parent
of the plugin's child span, and the plugin's logs carry the child span's ids, which is what the
clock-skew estimator learns each instance's offset from.

Five minutes of normal traffic, then the settlement database stops answering: every charge fails
with a ``ConnectionError`` wrapped in a ``PaymentGatewayError`` (the same bug on all three
instances, reached from different lines of the caller, with different messages), and the error
path logs the whole request: emails, Chinese mobile numbers, resident ID numbers, card numbers,
bearer tokens, a password in a DSN. The error metrics rise, monitoring sends ONE alert, and a
security scanner sends a critical risk signal ("card data written to logs"). Then the team submits
the fix (3.2.2), whose regression check passes: the ticket and the alert are closed.

The last error of pg-0 happened 2 s before the alert but its clock stamps it 0.5 s after: only
skew correction puts it inside the alert's window.

Usage: python examples/scenarios/make_incident.py [OUT]   (default: incident.jsonl beside this file)
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path

T0 = 1_795_510_800_000  # 2026-11-24T09:00:00Z; absolute times do not matter, the demo shifts them to now
TENANT, PLUGIN, VERSION = "acme", "payment-gateway", "3.2.1"
KEY = f"{TENANT}/{PLUGIN}"
ENV, REGION = "prod", "cn-east-1"
RUNTIME = {"process.runtime.name": "CPython", "process.runtime.version": "3.11.9"}  # OTel semantic conventions
FEATURE_FLAGS = {"new_settlement_client": True}
GATEWAY = ("gateway-0", "apigw-01.cn-east-1.internal")
# instance -> (host, clock offset in ms: its clock reads true time + this)
INSTANCES = {
    "pg-0": ("pay-node-a.cn-east-1.internal", 2500),
    "pg-1": ("pay-node-b.cn-east-1.internal", -1800),
    "pg-2": ("pay-node-c.cn-east-1.internal", 0),
}
NORMAL_MS, NORMAL_EVERY_MS = 300_000, 6_000
FAILURES, FAIL_EVERY_MS = 22, 2_000  # the last failing request (index 21) goes to pg-0
CONNECT_TIMEOUT_MS = 3_000
ALERT_ID = "ALR-20261124-0001"
SIGNAL_ID = "RSK-20261124-0001"
ALERT_AFTER_LAST_ERROR_MS = 2_000  # pg-0's last error: 2 s before the alert, stamped 0.5 s after it
SIGNAL_AFTER_ALERT_MS = 5_000
FIX_AFTER_ALERT_MS = 8_000  # the team ships 3.2.2 (settlement retried with backoff); its regression passes
FIX_VERSION, FIX_COMMIT = "3.2.2", "9f3c2e1d"
ROUTE = "/api/v1/payments"
DSN_PASSWORD = "S3ttle-Pr0d-2026"
DSN = f"postgresql://settle_svc:{DSN_PASSWORD}@db-settle-01.cn-east-1.internal:5432/settlement"
# The failing call is reached from three branches of handle_charge: same bug, different caller lines.
CALLER = {"card": 57, "unionpay": 63, "wallet": 71}
CAUSE = 'connection to server at "db-settle-01.cn-east-1.internal" (10.8.3.21), port 5432 failed: timeout expired'


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _resident_id(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * w for c, w in zip(body17, weights)) % 11]


def _b64(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _jwt(subject: str) -> str:
    header = _b64('{"alg":"HS256","typ":"JWT"}')
    claims = _b64(json.dumps({"sub": subject, "tenant": TENANT, "scope": "payments:write"}, separators=(",", ":")))
    return f"{header}.{claims}.{_b64('sig-' + subject)}"


def _spaced(digits: str) -> str:
    return " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


# Customers whose data ends up in the failing requests' logs. Every value is valid for its detector
# (Luhn-checked cards, Mod 11-2 resident IDs, Chinese mobiles).
CUSTOMERS = [
    {"name": "张伟", "email": "zhang.wei@example.cn", "mobile": "13812345678", "written_mobile": "+86 138 1234 5678",
     "id_number": _resident_id("11010519491231002"), "card": _luhn("411111111111111"), "method": "card"},
    {"name": "李娜", "email": "li.na@example.com", "mobile": "13912345670", "written_mobile": "139-1234-5670",
     "id_number": _resident_id("31011519880305123"), "card": _luhn("622848041234567890"), "method": "unionpay"},
    {"name": "王芳", "email": "wang.fang@example.org", "mobile": "18600217788", "written_mobile": "186 0021 7788",
     "id_number": _resident_id("44030619920718456"), "card": _luhn("550000000000000"), "method": "wallet"},
    {"name": "陈杰", "email": "chen.jie@corp.example", "mobile": "15021876543", "written_mobile": "+8615021876543",
     "id_number": _resident_id("32010619850912781"), "card": _luhn("621700123456789012"), "method": "unionpay"},
]
for _customer in CUSTOMERS:
    _customer["token"] = _jwt(_customer["email"].split("@")[0])

# Raw values of the scenario that must never leave plugwatch unmasked (the tests grep for them).
SENSITIVE = sorted(
    {c[k] for c in CUSTOMERS for k in ("email", "mobile", "written_mobile", "id_number", "card", "token")}
    | {_spaced(c["card"]) for c in CUSTOMERS}
    | {DSN_PASSWORD}
)


class _Ids:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def trace(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def span(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"


def _plugin(instance: str) -> dict:
    host, _ = INSTANCES[instance]
    return {"tenant_id": TENANT, "plugin_id": PLUGIN, "instance_id": instance, "host": host}


def _log(instance: str, true_ts: int, level: str, logger: str, message: str, trace_id: str, span_id: str,
         **extra: object) -> dict:
    host, skew = INSTANCES[instance]
    return {
        "ts": true_ts + skew, "tenant_id": TENANT, "plugin_id": PLUGIN, "plugin_version": VERSION,
        "instance_id": instance, "host": host, "env": ENV, "region": REGION, "level": level, "logger": logger,
        "message": message, "trace_id": trace_id, "span_id": span_id,
        "attributes": {**RUNTIME, "feature_flags": FEATURE_FLAGS, "http.route": ROUTE},
        **extra,
    }


def _gateway_span(trace_id: str, span_id: str, start: int, end: int, instance: str, status_code: int) -> dict:
    return {
        "trace_id": trace_id, "span_id": span_id, "name": f"POST {ROUTE}", "start_ts": start, "end_ts": end,
        "status": "OK" if status_code < 500 else "ERROR", "tenant_id": TENANT, "plugin_id": PLUGIN,
        "instance_id": GATEWAY[0], "host": GATEWAY[1],
        "attributes": {"http.method": "POST", "http.route": ROUTE, "http.status_code": status_code,
                       "upstream.instance": instance},
    }


def _plugin_span(trace_id: str, span_id: str, parent: str, start: int, end: int, instance: str, ok: bool,
                 order: str, method: str) -> dict:
    _, skew = INSTANCES[instance]
    attributes = {"order.id": order, "payment.method": method, "plugin.version": VERSION}
    if not ok:
        attributes |= {"exception.type": "payment_gateway.errors.PaymentGatewayError", "db.system": "postgresql"}
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": "payment_gateway.charge",
        "start_ts": start + skew, "end_ts": end + skew, "status": "OK" if ok else "ERROR",
        **_plugin(instance), "attributes": attributes,
    }


def _metrics(true_ts: int, instance: str, p95_ms: float, errors: int, rss_mib: float) -> list[tuple[int, dict]]:
    _, skew = INSTANCES[instance]
    base = {**_plugin(instance), "attributes": {"plugin_version": VERSION, "env": ENV, "region": REGION}}
    points = [("http.server.request.duration.p95", p95_ms, "ms"), ("http.server.errors", errors, "1"),
              ("process.memory.rss", rss_mib, "MiB")]
    return [(true_ts, {"ts": true_ts + skew, "name": n, "value": v, "unit": u, **base}) for n, v, u in points]


def _stacktrace(order: str, email: str, method: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/plugins/payment_gateway/settlement/pool.py", line 88, in connect\n'
        f'    return psycopg.connect("{DSN}", connect_timeout=3)\n'
        '  File "/usr/local/lib/python3.11/site-packages/psycopg/connection.py", line 119, in connect\n'
        "    raise last_ex.with_traceback(None)\n"
        f"ConnectionError: {CAUSE}\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        f'  File "/srv/plugins/payment_gateway/api/charge.py", line {CALLER[method]}, in handle_charge\n'
        "    receipt = await gateway.charge(order, card)\n"
        '  File "/srv/plugins/payment_gateway/gateway.py", line 142, in charge\n'
        "    conn = self.settlement.connect()\n"
        '  File "/srv/plugins/payment_gateway/settlement/pool.py", line 91, in connect\n'
        '    raise PaymentGatewayError(f"charge {order.id} failed: settlement unavailable for {order.email}") from exc\n'
        f"payment_gateway.errors.PaymentGatewayError: charge {order} failed: settlement unavailable for {email}"
    )


def _request(order: str, customer: dict, amount: str, request_id: str) -> dict:
    return {
        "method": "POST",
        "url": f"https://pay.acme.example{ROUTE}?order_id={order}&notify_mobile={customer['mobile']}",
        "headers": {"Authorization": f"Bearer {customer['token']}", "Content-Type": "application/json",
                    "X-Request-Id": request_id},
        "query": {"order_id": order, "notify_mobile": customer["mobile"]},
        "body": {
            "order_id": order, "amount": amount, "currency": "CNY", "method": customer["method"],
            "customer": {"name": customer["name"], "email": customer["email"],
                         "mobile": customer["written_mobile"], "id_number": customer["id_number"]},
            "card": {"number": _spaced(customer["card"]), "cvv": "737", "expiry": "09/28"},
        },
    }


def build() -> list[dict]:
    """The scenario's entries ``{"topic", "key", "value"}`` in the order they happened (true time)."""
    rng = random.Random(20261124)
    ids = _Ids(rng)
    timed: list[tuple[int, str, dict]] = []  # (true emission time, topic, value)
    names = list(INSTANCES)

    def emit(true_ts: int, topic: str, value: dict) -> None:
        timed.append((true_ts, topic, value))

    # Normal traffic: a payment every 6 s, round robin; logs near the start or the end of their span.
    for k in range(NORMAL_MS // NORMAL_EVERY_MS):
        instance = names[k % 3]
        customer = CUSTOMERS[k % len(CUSTOMERS)]
        order = f"ORD-2026112400{k + 1:03d}"
        trace_id, gw_id, span_id = ids.trace(), ids.span(), ids.span()
        g_start = T0 + k * NORMAL_EVERY_MS + rng.randint(0, 400)
        g_end = g_start + rng.randint(60, 180)
        c_start, c_end = g_start + rng.randint(3, 9), g_end - rng.randint(2, 6)
        if k % 2 == 0:
            log_ts = c_start + rng.randint(1, 3)
            message = f"authorizing payment order={order} amount={rng.randint(20, 900)}.00 CNY method={customer['method']}"
        else:
            log_ts = c_end - rng.randint(1, 3)
            message = f"payment captured order={order} settlement=STL-{k + 1:05d} in {c_end - c_start} ms"
            if k % 5 == 0:
                message += f"; receipt sent to {customer['email']}"
        emit(log_ts, "telemetry.logs", _log(instance, log_ts, "INFO", "payment_gateway.api.charge", message,
                                            trace_id, span_id))
        emit(c_end, "telemetry.traces", _plugin_span(trace_id, span_id, gw_id, c_start, c_end, instance, True,
                                                     order, customer["method"]))
        emit(g_end, "telemetry.traces", _gateway_span(trace_id, gw_id, g_start, g_end, instance, 200))

    # The settlement database stops answering: every charge times out after 3 s and fails.
    fail_start = T0 + NORMAL_MS
    last_error = 0
    for k in range(FAILURES):
        instance = names[k % 3]
        customer = CUSTOMERS[(k + 1) % len(CUSTOMERS)]
        order = f"ORD-2026112401{k + 1:03d}"
        trace_id, gw_id, span_id = ids.trace(), ids.span(), ids.span()
        g_start = fail_start + k * FAIL_EVERY_MS
        c_start = g_start + rng.randint(3, 9)
        c_end = c_start + CONNECT_TIMEOUT_MS + rng.randint(10, 25)
        g_end = c_end + rng.randint(4, 9)
        error_ts = c_end - rng.randint(2, 5)
        if k < 6:
            retry_ts = c_start + 1_000 + rng.randint(0, 5)
            emit(retry_ts, "telemetry.logs", _log(
                instance, retry_ts, "WARNING", "payment_gateway.settlement.pool",
                f"connect to {DSN} slow (1000 ms), retrying (attempt 2/3)", trace_id, span_id))
        amount = f"{rng.randint(20, 900)}.{rng.randint(0, 99):02d}"
        message = (f"charge {order} failed: settlement unavailable; request card={customer['card']} "
                   f"holder={customer['email']} mobile={customer['written_mobile']}")
        exception = {"type": "PaymentGatewayError",
                     "message": f"charge {order} failed: settlement unavailable for {customer['email']}",
                     "stacktrace": _stacktrace(order, customer["email"], customer["method"])}
        emit(error_ts, "telemetry.logs", _log(
            instance, error_ts, "ERROR", "payment_gateway.api.charge", message, trace_id, span_id,
            exception=exception, request=_request(order, customer, amount, f"req-{ids.span()}")))
        emit(c_end, "telemetry.traces", _plugin_span(trace_id, span_id, gw_id, c_start, c_end, instance, False,
                                                     order, customer["method"]))
        emit(g_end, "telemetry.traces", _gateway_span(trace_id, gw_id, g_start, g_end, instance, 502))
        last_error = error_ts
    alert_ts = last_error + ALERT_AFTER_LAST_ERROR_MS

    # Metrics every minute, then every 20 s once it fails, and one scrape after the alert.
    scrapes = [T0 + 30_000 + r * 60_000 for r in range(NORMAL_MS // 60_000)]
    failing = [fail_start + 15_000, fail_start + 35_000, alert_ts + 1_000]
    for true_ts in scrapes:
        for instance in names:
            for item in _metrics(true_ts, instance, rng.randint(95, 140), 0, 400 + rng.randint(2, 20)):
                emit(item[0], "telemetry.metrics", item[1])
    for n, true_ts in enumerate(failing):
        for instance in names:
            for item in _metrics(true_ts, instance, CONNECT_TIMEOUT_MS + rng.randint(10, 30), (2, 6, 8)[n],
                                 (455, 498, 531)[n] + rng.randint(0, 9)):
                emit(item[0], "telemetry.metrics", item[1])

    emit(alert_ts, "plugin.debug.alert", {
        "alert_id": ALERT_ID, "ts": alert_ts, "tenant_id": TENANT, "plugin_id": PLUGIN, "severity": "critical",
        "kind": "error_rate", "window_s": 300,
        "summary": f"{PLUGIN} error rate 100% over the last 60 s (threshold 5%) on pg-0, pg-1, pg-2",
    })
    emit(alert_ts + SIGNAL_AFTER_ALERT_MS, "plugin.risk.signal", {
        "signal_id": SIGNAL_ID, "ts": alert_ts + SIGNAL_AFTER_ALERT_MS, "tenant_id": TENANT, "plugin_id": PLUGIN,
        "severity": "critical", "reason": "card data written to logs", "mode": "wait", "requester": "secscan",
    })
    emit(alert_ts + FIX_AFTER_ALERT_MS, "plugin.fix.submitted", {
        "alert_id": ALERT_ID, "tenant_id": TENANT, "plugin_id": PLUGIN, "version": FIX_VERSION,
        "commit": FIX_COMMIT, "submitted_by": "payments-dev",
    })
    timed.sort(key=lambda item: item[0])  # stable: same-time entries keep their order
    return [{"topic": topic, "key": KEY, "value": value} for _, topic, value in timed]


def render() -> str:
    return "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in build())


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("incident.jsonl")
    text = render()
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main(sys.argv)
