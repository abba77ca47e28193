"""Notification channels against real servers: an aiosmtpd SMTP server, an aiohttp webhook receiver
and an aiohttp SMS gateway on 127.0.0.1, the real masking engine, and the records in real chDB.

No timing assertions: "the others are not held up" is shown by ordering (a retry's backoff that can
only end once the other channels have delivered), with a generous deadline only against deadlock.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from plugwatch.embedded import free_port
from plugwatch.masking import load_engine
from plugwatch.notify import Dispatcher, NotificationConfig, NotificationRecord, build_channels, notifications_sql
from plugwatch.sinks.clickhouse import ClickHouse

DEADLOCK_GUARD_S = 20  # only against a hang; never a measure of speed
SMS_TOKEN = "sms-token-" + "x" * 24
SMTP_PASSWORD = "smtp-pass-" + "y" * 24
CONTEXT = {"suspension_id": "SUS-20261124-000007", "mode": "force", "requester": "alice",
           "approvers": ["bob", "carol"], "severity": "critical", "status": "suspended", "elapsed_ms": 812,
           "evidence_id": "EVD-20261124-000042", "reason": "error rate above 40%"}


# -- servers ---------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: keeps every accepted message."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.original_content or e.content, policy=email.policy.default)
                for e in self.envelopes]


def password_check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"plugwatch" \
        and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@asynccontextmanager
async def smtp_server(**options: Any) -> AsyncIterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    await asyncio.to_thread(controller.start)
    try:
        yield inbox, port
    finally:
        await asyncio.to_thread(controller.stop)


@dataclass
class HttpReceiver:
    """An aiohttp server recording every POST; ``statuses`` are answered in order (then 200),
    ``stall`` makes every request wait until the server stops."""

    statuses: list[int] = field(default_factory=list)
    stall: bool = False
    answer_body: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "headers": dict(request.headers),
                              "json": json.loads(await request.text())})
        self.received.set()
        if self.stall:
            await self._release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=self.answer_body if status >= 300 else "ok")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HttpReceiver]:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.port = free_port()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            self._release.set()
            await runner.cleanup()


# -- helpers ---------------------------------------------------------------------------------------


def config(tenant: dict[str, Any], *, smtp_port: int = 9, sms_url: str | None = None,
           webhook_timeout_s: float = 2.0, smtp: dict[str, Any] | None = None) -> NotificationConfig:
    channels: dict[str, Any] = {
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "from": "plugwatch@platform.example", "timeout_s": 2,
                 **(smtp or {})},
        "webhook": {"timeout_s": webhook_timeout_s},
    }
    if sms_url:
        channels["sms"] = {"url": sms_url, "token_env": "PLUGWATCH_SMS_TOKEN", "timeout_s": 2}
    return NotificationConfig.from_dict({"tenants": {"acme": tenant}, "channels": channels})


@asynccontextmanager
async def dispatcher(cfg: NotificationConfig, *, stream: io.StringIO | None = None,
                     mask: Callable[[str], str] | None = None, sleep: Any = None,
                     environ: dict[str, str] | None = None) -> AsyncIterator[Dispatcher]:
    channels = build_channels(cfg, stream=stream, environ=environ or {"PLUGWATCH_SMS_TOKEN": SMS_TOKEN})
    engine = load_engine()
    options: dict[str, Any] = {"attempts": 3, "first_delay_s": 0.01}
    if sleep is not None:
        options["sleep"] = sleep
    result = Dispatcher(cfg, channels, mask or engine.mask_text, **options)
    try:
        yield result
    finally:
        await result.aclose()


def by_channel(records: list[NotificationRecord]) -> dict[str, NotificationRecord]:
    return {r.channel: r for r in records}


async def notify(d: Dispatcher, kind: str = "plugin_suspended", context: dict[str, Any] | None = None,
                 event_id: str = "evt-1") -> list[NotificationRecord]:
    async with asyncio.timeout(DEADLOCK_GUARD_S):
        return await d.notify(kind, "acme", "payment-gateway", context or CONTEXT, event_id)


# -- tests -----------------------------------------------------------------------------------------


async def test_every_channel_delivers_in_the_tenants_language() -> None:
    stream = io.StringIO()
    async with smtp_server() as (inbox, smtp_port), HttpReceiver().running() as hook, \
            HttpReceiver().running() as gateway:
        cfg = config({"language": "zh-CN", "channels": ["email", "webhook", "sms", "console"],
                      "email": {"to": ["ops@acme.example", "oncall@acme.example"]},
                      "webhook": {"url": hook.url("/hooks/plugwatch")}, "sms": {"to": ["+8613800000000"]}},
                     smtp_port=smtp_port, sms_url=gateway.url("/api/send"))
        async with dispatcher(cfg, stream=stream) as d:
            records = await notify(d)

    assert [r.channel for r in records] == ["email", "webhook", "sms", "console"]
    assert all(r.status == "sent" and r.attempts == 1 and r.error is None for r in records)
    assert {r.language for r in records} == {"zh-CN"}

    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ops@acme.example", "oncall@acme.example"]
    assert envelope.mail_from == "plugwatch@platform.example"
    [mail] = inbox.messages()
    assert "插件已暂停" in mail["subject"] and "payment-gateway" in mail["subject"]
    assert mail["to"] == "ops@acme.example, oncall@acme.example"
    assert mail["x-plugwatch-event-id"] == "evt-1"
    part = mail.get_body(("plain",))
    assert part.get_content_charset() == "utf-8"
    assert "已暂停，不再接受新请求" in part.get_content() and "证据编号：EVD-20261124-000042" in part.get_content()

    [call] = hook.requests
    assert call["path"] == "/hooks/plugwatch"
    payload = call["json"]
    assert set(payload) == {"event_id", "kind", "tenant_id", "plugin_id", "subject", "body", "language"}
    assert (payload["event_id"], payload["kind"], payload["tenant_id"], payload["plugin_id"], payload["language"]) \
        == ("evt-1", "plugin_suspended", "acme", "payment-gateway", "zh-CN")
    assert payload["subject"] == mail["subject"] and "审批人：bob, carol" in payload["body"]

    [sms] = gateway.requests
    assert sms["headers"]["Authorization"] == f"Bearer {SMS_TOKEN}"
    assert sms["json"]["to"] == ["+8613800000000"]
    assert sms["json"]["text"].startswith(mail["subject"]) and len(sms["json"]["text"]) <= 300

    [line] = stream.getvalue().splitlines()
    assert "tenant=acme" in line and "plugin=payment-gateway" in line and "插件已暂停" in line

    # Records carry no raw recipients and no webhook path (which may hold a token).
    email_record, webhook_record = by_channel(records)["email"], by_channel(records)["webhook"]
    assert "ops@acme.example" not in " ".join(email_record.recipients)
    assert len(email_record.recipients) == 2
    assert webhook_record.recipients == (f"http://127.0.0.1:{hook.port}",)


async def test_english_tenant_gets_english_email() -> None:
    async with smtp_server() as (inbox, smtp_port):
        cfg = config({"language": "en-US", "channels": ["email"], "email": {"to": ["ops@acme.example"]}},
                     smtp_port=smtp_port)
        async with dispatcher(cfg) as d:
            [record] = await notify(d, "plugin_locked")
    [mail] = inbox.messages()
    assert record.status == "sent" and record.language == "en"
    assert mail["subject"] == "[plugwatch] Plugin payment-gateway locked (acme)"
    assert "its entry is now blocked (locked)" in mail.get_body(("plain",)).get_content()


async def test_webhook_5xx_twice_then_ok_is_sent_on_the_third_attempt() -> None:
    sleeps: list[float] = []

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)

    async with HttpReceiver(statuses=[500, 503]).running() as hook:
        cfg = config({"channels": ["webhook"], "webhook": {"url": hook.url("/hook")}})
        async with dispatcher(cfg, sleep=record_sleep) as d:
            [record] = await notify(d)
    assert (record.channel, record.status, record.attempts, record.error) == ("webhook", "sent", 3, None)
    assert [r["json"]["event_id"] for r in hook.requests] == ["evt-1"] * 3
    assert sleeps == [0.01, 0.02]  # exponential backoff between the attempts


async def test_webhook_4xx_is_not_retried_and_its_error_is_masked() -> None:
    async with HttpReceiver(statuses=[400], answer_body="bad card 4111 1111 1111 1111 for bob@example.com") \
            .running() as hook:
        cfg = config({"channels": ["webhook"], "webhook": {"url": hook.url("/hook/secret-path-token")}})
        async with dispatcher(cfg) as d:
            [record] = await notify(d)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error is not None and "HTTP 400" in record.error
    for leaked in ("4111 1111 1111 1111", "bob@example.com", "secret-path-token"):
        assert leaked not in record.error
    assert len(hook.requests) == 1


async def test_smtp_down_fails_email_while_webhook_and_console_go_out() -> None:
    stream = io.StringIO()
    events: list[str] = []
    closed_port = free_port()  # nothing listens: connection refused

    async with HttpReceiver().running() as hook:
        async def gated_sleep(delay: float) -> None:
            # Only the email channel retries here. Its backoff can end only after the webhook was
            # delivered: were the channels sent one after another, email first, this would deadlock.
            events.append("email backoff")
            await hook.received.wait()
            events.append("email retry")

        cfg = config({"channels": ["email", "webhook", "console"], "email": {"to": ["ops@acme.example"]},
                      "webhook": {"url": hook.url("/hook")}}, smtp_port=closed_port)
        async with dispatcher(cfg, stream=stream, sleep=gated_sleep) as d:
            records = await notify(d)

    email_record, webhook_record, console_record = records
    assert (email_record.channel, email_record.status, email_record.attempts) == ("email", "failed", 3)
    assert email_record.error is not None and f"smtp 127.0.0.1:{closed_port} unreachable" in email_record.error
    assert "ConnectionRefusedError" in email_record.error
    assert (webhook_record.status, webhook_record.attempts, webhook_record.error) == ("sent", 1, None)
    assert (console_record.status, console_record.attempts) == ("sent", 1)
    assert len(hook.requests) == 1 and len(stream.getvalue().splitlines()) == 1
    assert events == ["email backoff", "email retry"] * 2


async def test_stalled_webhook_fails_after_its_retries_and_the_others_are_sent() -> None:
    stream = io.StringIO()
    async with smtp_server() as (inbox, smtp_port), HttpReceiver(stall=True).running() as hook:
        cfg = config({"channels": ["webhook", "email", "console"], "email": {"to": ["ops@acme.example"]},
                      "webhook": {"url": hook.url("/hook")}}, smtp_port=smtp_port, webhook_timeout_s=0.3)
        async with dispatcher(cfg, stream=stream) as d:
            records = by_channel(await notify(d))

    webhook_record = records["webhook"]
    assert (webhook_record.status, webhook_record.attempts) == ("failed", 3)
    assert webhook_record.error is not None and "no answer within 0.3 s" in webhook_record.error
    assert len(hook.requests) == 3
    assert (records["email"].status, records["email"].attempts) == ("sent", 1)
    assert (records["console"].status, records["console"].attempts) == ("sent", 1)
    assert len(inbox.envelopes) == 1 and len(stream.getvalue().splitlines()) == 1


async def test_personal_data_in_the_context_is_masked_everywhere() -> None:
    stream = io.StringIO()
    context = {**CONTEXT, "reason": "refund to bob.smith@example.com, card 4111 1111 1111 1111 declined",
               "requester": "carol@example.org"}
    raw = ("bob.smith@example.com", "4111 1111 1111 1111", "carol@example.org", "ops@acme.example", "+8613800000000")
    async with smtp_server() as (inbox, smtp_port), HttpReceiver().running() as hook, \
            HttpReceiver().running() as gateway:
        cfg = config({"language": "zh-CN", "channels": ["email", "webhook", "sms", "console"],
                      "email": {"to": ["ops@acme.example"]}, "webhook": {"url": hook.url("/hook")},
                      "sms": {"to": ["+8613800000000"]}}, smtp_port=smtp_port, sms_url=gateway.url("/send"))
        async with dispatcher(cfg, stream=stream) as d:
            records = await notify(d, "suspension_requested", context)

    assert all(r.status == "sent" for r in records)
    [mail] = inbox.messages()
    sent_texts = [
        str(mail["subject"]), mail.get_body(("plain",)).get_content(),
        json.dumps(hook.requests[0]["json"], ensure_ascii=False),
        json.dumps(gateway.requests[0]["json"]["text"], ensure_ascii=False),
        stream.getvalue(),
    ]
    body = sent_texts[1]
    assert "[MASKED:email]" in body and "[MASKED:card" in body and "原因：refund to" in body
    for text in sent_texts:
        for value in raw[:3]:
            assert value not in text
    for record in records:
        assert not any(value in json.dumps(record.as_row(), ensure_ascii=False) for value in raw)
    # The envelope still reaches the real recipient: only what is recorded or shown is masked.
    assert inbox.envelopes[0].rcpt_tos == ["ops@acme.example"]


async def test_smtp_login_with_the_password_from_the_environment() -> None:
    options = {"authenticator": password_check, "auth_require_tls": False}
    smtp = {"username": "plugwatch", "password_env": "PLUGWATCH_SMTP_PASSWORD"}
    async with smtp_server(**options) as (inbox, smtp_port):
        cfg = config({"channels": ["email"], "email": {"to": ["ops@acme.example"]}}, smtp_port=smtp_port, smtp=smtp)
        async with dispatcher(cfg, environ={"PLUGWATCH_SMTP_PASSWORD": SMTP_PASSWORD}) as d:
            [good] = await notify(d)
        async with dispatcher(cfg, environ={"PLUGWATCH_SMTP_PASSWORD": "wrong-" + SMTP_PASSWORD}) as d:
            [refused] = await notify(d, event_id="evt-2")
        async with dispatcher(cfg, environ={}) as d:
            [unset] = await notify(d, event_id="evt-3")
    assert (good.status, good.attempts) == ("sent", 1) and len(inbox.envelopes) == 1
    assert (refused.status, refused.attempts) == ("failed", 1)  # a refused login is not retried
    assert refused.error is not None and "login refused" in refused.error and SMTP_PASSWORD not in refused.error
    assert (unset.status, unset.attempts) == ("failed", 1)
    assert unset.error is not None and "environment variable PLUGWATCH_SMTP_PASSWORD" in unset.error


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl command line) and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


async def test_starttls_is_used_and_the_certificate_checked_against_the_configured_ca(certificate) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    tenant = {"channels": ["email"], "email": {"to": ["ops@acme.example"]}}
    async with smtp_server(tls_context=server_tls, require_starttls=True) as (inbox, smtp_port):
        trusted = config(tenant, smtp_port=smtp_port, smtp={"starttls": True, "ca_file": str(cert)})
        async with dispatcher(trusted) as d:
            [sent] = await notify(d)
        untrusted = config(tenant, smtp_port=smtp_port, smtp={"starttls": True})
        async with dispatcher(untrusted) as d:
            [unverified] = await notify(d, event_id="evt-2")
        plain = config(tenant, smtp_port=smtp_port)
        async with dispatcher(plain) as d:
            [refused] = await notify(d, event_id="evt-3")
    # The server takes mail only after STARTTLS: the one envelope came over TLS.
    assert (sent.status, sent.attempts) == ("sent", 1) and len(inbox.envelopes) == 1
    assert (unverified.status, unverified.attempts) == ("failed", 1)  # an untrusted certificate is not retried
    assert unverified.error is not None and "not trusted" in unverified.error and "ca_file" in unverified.error
    assert refused.status == "failed" and refused.error is not None and "530" in refused.error


async def test_records_insert_into_the_notifications_table(tmp_path: Path) -> None:
    async with HttpReceiver(statuses=[500] * 6).running() as hook:
        cfg = config({"channels": ["webhook", "console"], "webhook": {"url": hook.url("/hook")}})
        async with dispatcher(cfg, stream=io.StringIO()) as d:
            records = await notify(d) + await notify(d)  # a redelivered event: same ids, the newer row wins

    clickhouse = ClickHouse(f"chdb://{tmp_path / 'ch'}", "plugwatch")
    try:
        await clickhouse.start()
        await clickhouse.query(notifications_sql("plugwatch"))
        await clickhouse.query(notifications_sql("plugwatch"))  # idempotent
        await clickhouse.insert_rows("notifications", [r.as_row() for r in records])
        _, rows = await clickhouse.query(
            "SELECT channel, status, attempts, error IS NULL, length(recipients), toUnixTimestamp64Milli(ts) "
            "FROM plugwatch.notifications FINAL ORDER BY channel")
    finally:
        await clickhouse.close()
    ts = records[-1].ts
    assert rows == [["console", "sent", 1, True, 0, ts], ["webhook", "failed", 3, False, 1, ts]]


class Hanging:
    """A channel that ignores timeouts altogether: the dispatcher's per-attempt bound must stop it."""

    name = "webhook"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, message: Any) -> None:
        self.calls += 1
        await asyncio.Event().wait()


class Broken:
    name = "sms"

    async def send(self, message: Any) -> None:
        raise RuntimeError("bug in a channel")


async def test_hanging_broken_and_missing_channels_are_recorded_and_do_not_stop_the_console() -> None:
    stream = io.StringIO()
    cfg = NotificationConfig.from_dict({
        "tenants": {"acme": {"channels": ["webhook", "sms", "email", "console"],
                             "webhook": {"url": "http://127.0.0.1:9/hook"}, "sms": {"to": ["+100"]},
                             "email": {"to": ["ops@acme.example"]}}},
        "channels": {"sms": {"url": "http://127.0.0.1:9/send"}},
    })
    hanging = Hanging()
    channels = {**build_channels(cfg, stream=stream), "webhook": hanging, "sms": Broken()}
    del channels["email"]
    d = Dispatcher(cfg, channels, load_engine().mask_text, attempts=2, first_delay_s=0.01, attempt_timeout_s=0.3)
    async with asyncio.timeout(DEADLOCK_GUARD_S):
        records = by_channel(await d.notify("plugin_resumed", "acme", "payment-gateway", {}, "evt-9"))
    await d.aclose()
    assert (records["webhook"].status, records["webhook"].attempts, hanging.calls) == ("failed", 2, 2)
    assert records["webhook"].error == "webhook channel: no result within 0.3 s"
    assert (records["sms"].status, records["sms"].attempts) == ("failed", 2)
    assert records["sms"].error == "sms channel: RuntimeError: bug in a channel"
    assert (records["email"].status, records["email"].attempts) == ("failed", 0)
    assert (records["console"].status, records["console"].attempts) == ("sent", 1)
    assert "plugin=payment-gateway" in stream.getvalue()


async def test_unknown_kind_sends_nothing() -> None:
    stream = io.StringIO()
    cfg = NotificationConfig()
    d = Dispatcher(cfg, build_channels(cfg, stream=stream), load_engine().mask_text)
    with pytest.raises(ValueError, match="plugin_exploded"):
        await d.notify("plugin_exploded", "acme", "p1", {}, "evt-1")
    assert stream.getvalue() == ""
