"""Who is told what, how: ``config/plugins/notifications.yaml``, the channels built from it, and the
dispatcher that renders, masks and sends one suspension event to every channel of the tenant.

Channels go out concurrently, each with its own retry loop (exponential backoff) and a bound on each
attempt, so a channel that fails or hangs never delays or fails the others. ``notify`` returns one
``NotificationRecord`` per channel for the caller to insert into ClickHouse ``notifications``
(``notifications_sql``); the record's id is derived from (event id, channel), so a redelivered event
collapses into the row it already wrote (ReplacingMergeTree, newest wins).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from plugwatch.notify.channels import (
    Channel,
    ChannelError,
    ConsoleChannel,
    Message,
    SmsChannel,
    SmsSettings,
    SmtpChannel,
    SmtpSettings,
    UnavailableChannel,
    WebhookChannel,
    WebhookSettings,
    close_channels,
    display_url,
)
from plugwatch.notify.templates import DEFAULT_LANGUAGE, render, resolve_language

log = logging.getLogger(__name__)

CHANNEL_NAMES = ("email", "webhook", "sms", "console")
NOTIFICATIONS_TTL_DAYS = 400
ERROR_CHARS = 500
_ID_NAMESPACE = uuid.UUID("6f1c1c52-8a59-4d8e-9b7e-6b0f3c1d2a10")


class NotificationConfigError(ValueError):
    pass


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantNotifications:
    language: str = DEFAULT_LANGUAGE
    channels: tuple[str, ...] = ("console",)
    email_to: tuple[str, ...] = ()
    webhook_url: str | None = None
    sms_to: tuple[str, ...] = ()

    def recipients(self, channel: str) -> tuple[str, ...]:
        if channel == "email":
            return self.email_to
        if channel == "sms":
            return self.sms_to
        if channel == "webhook" and self.webhook_url:
            return (self.webhook_url,)
        return ()


@dataclass(frozen=True)
class ChannelSettings:
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)


@dataclass(frozen=True)
class NotificationConfig:
    tenants: Mapping[str, TenantNotifications] = field(default_factory=lambda: {"*": TenantNotifications()})
    channels: ChannelSettings = field(default_factory=ChannelSettings)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> NotificationConfig:
        """The notifications file; a missing file means every tenant gets the console, in English."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise NotificationConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data or {}, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "notifications config") -> NotificationConfig:
        """``NotificationConfigError`` naming the file and the key for anything malformed."""
        p = _Parser(source)
        top = p.mapping(data, "(top level)", ("tenants", "channels"))
        settings = p.channel_settings(top.get("channels"))
        tenants = {str(name): p.tenant(str(name), entry, settings)
                   for name, entry in p.mapping(top.get("tenants") or {}, "tenants").items()}
        tenants.setdefault("*", TenantNotifications())
        return cls(tenants, settings)

    def tenant(self, tenant_id: str) -> TenantNotifications:
        return self.tenants.get(tenant_id) or self.tenants.get("*") or TenantNotifications()

    def channels_in_use(self) -> tuple[str, ...]:
        used = {name for tenant in self.tenants.values() for name in tenant.channels}
        return tuple(name for name in CHANNEL_NAMES if name in used)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NotificationConfigError:
        return NotificationConfigError(f"{self.source}: {key} {problem}")

    def mapping(self, value: Any, key: str, known: tuple[str, ...] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        if known is not None:
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise self.fail(key, f"has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return value

    def text(self, value: Any, key: str, default: str | None = None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value.strip()

    def number(self, value: Any, key: str, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(key, f"must be a positive number, got {value!r}")
        return float(value)

    def flag(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(v.strip() for v in value)

    def url(self, value: Any, key: str) -> str | None:
        url = self.text(value, key)
        if url is not None and not url.startswith(("http://", "https://")):
            raise self.fail(key, f"must be an http:// or https:// URL, got {display_url(url)!r}")
        return url

    def channel_settings(self, value: Any) -> ChannelSettings:
        data = self.mapping(value, "channels", ("smtp", "webhook", "sms"))
        smtp = self.mapping(data.get("smtp"), "channels.smtp",
                            ("host", "port", "from", "starttls", "username", "password_env", "timeout_s", "ca_file"))
        port = smtp.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise self.fail("channels.smtp.port", f"must be a port number (1-65535), got {port!r}")
        sender = self.text(smtp.get("from"), "channels.smtp.from", SmtpSettings.sender)
        if "@" not in str(sender):
            raise self.fail("channels.smtp.from", f"must be an email address, got {sender!r}")
        username = self.text(smtp.get("username"), "channels.smtp.username")
        password_env = self.text(smtp.get("password_env"), "channels.smtp.password_env")
        if username and not password_env:
            raise self.fail("channels.smtp.password_env", "is needed with channels.smtp.username: name the "
                            "environment variable that holds the password (never the password itself)")
        webhook = self.mapping(data.get("webhook"), "channels.webhook", ("url", "timeout_s"))
        sms = self.mapping(data.get("sms"), "channels.sms", ("url", "token_env", "timeout_s", "max_chars"))
        max_chars = sms.get("max_chars", SmsSettings.max_chars)
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 20:
            raise self.fail("channels.sms.max_chars", f"must be a whole number of at least 20, got {max_chars!r}")
        return ChannelSettings(
            smtp=SmtpSettings(
                host=str(self.text(smtp.get("host"), "channels.smtp.host", SmtpSettings.host)),
                port=port,
                sender=str(sender),
                starttls=self.flag(smtp.get("starttls"), "channels.smtp.starttls"),
                username=username,
                password_env=password_env,
                timeout_s=self.number(smtp.get("timeout_s"), "channels.smtp.timeout_s", SmtpSettings.timeout_s),
                ca_file=self.text(smtp.get("ca_file"), "channels.smtp.ca_file"),
            ),
            webhook=WebhookSettings(
                url=self.url(webhook.get("url"), "channels.webhook.url"),
                timeout_s=self.number(webhook.get("timeout_s"), "channels.webhook.timeout_s",
                                      WebhookSettings.timeout_s),
            ),
            sms=SmsSettings(
                url=self.url(sms.get("url"), "channels.sms.url"),
                token_env=self.text(sms.get("token_env"), "channels.sms.token_env"),
                timeout_s=self.number(sms.get("timeout_s"), "channels.sms.timeout_s", SmsSettings.timeout_s),
                max_chars=max_chars,
            ),
        )

    def tenant(self, name: str, value: Any, settings: ChannelSettings) -> TenantNotifications:
        key = f"tenants.{name}"
        entry = self.mapping(value, key, ("language", "channels", "email", "webhook", "sms"))
        language = self.text(entry.get("language"), f"{key}.language", DEFAULT_LANGUAGE)
        channels = self.strings(entry.get("channels"), f"{key}.channels") or ("console",)
        unknown = [c for c in channels if c not in CHANNEL_NAMES]
        if unknown:
            raise self.fail(f"{key}.channels", f"names unknown channel(s) {', '.join(unknown)}; "
                            f"known: {', '.join(CHANNEL_NAMES)}")
        email_to = self.strings(self.mapping(entry.get("email"), f"{key}.email", ("to",)).get("to"), f"{key}.email.to")
        bad = [a for a in email_to if "@" not in a]
        if bad:
            raise self.fail(f"{key}.email.to", f"has {len(bad)} entry(ies) that are not email addresses")
        webhook_url = self.url(self.mapping(entry.get("webhook"), f"{key}.webhook", ("url",)).get("url"),
                               f"{key}.webhook.url")
        sms_to = self.strings(self.mapping(entry.get("sms"), f"{key}.sms", ("to",)).get("to"), f"{key}.sms.to")
        if "email" in channels and not email_to:
            raise self.fail(key, "lists channel email but has no email.to addresses")
        if "webhook" in channels and not (webhook_url or settings.webhook.url):
            raise self.fail(key, "lists channel webhook but has no webhook.url (and channels.webhook.url is unset)")
        if "sms" in channels and not sms_to:
            raise self.fail(key, "lists channel sms but has no sms.to phone numbers")
        if "sms" in channels and not settings.sms.url:
            raise self.fail(key, "lists channel sms but channels.sms.url (the SMS gateway) is unset")
        return TenantNotifications(str(language), tuple(dict.fromkeys(channels)), email_to, webhook_url, sms_to)


def build_channels(
    config: NotificationConfig,
    *,
    stream: TextIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Channel]:
    """A channel per name any tenant uses, plus the console. A channel whose secret is missing becomes
    an ``UnavailableChannel``: its sends fail (and are recorded) while the other channels work."""
    env = os.environ if environ is None else environ
    channels: dict[str, Channel] = {"console": ConsoleChannel(stream)}
    settings = config.channels
    for name in config.channels_in_use():
        if name == "email":
            smtp = settings.smtp
            password = env.get(smtp.password_env) if smtp.password_env else None
            if smtp.username and not password:
                reason = f"environment variable {smtp.password_env} (the SMTP password) is not set"
                channels[name] = _unavailable(name, reason)
                continue
            try:
                context = ssl.create_default_context(cafile=smtp.ca_file) if smtp.ca_file else None
            except (OSError, ssl.SSLError) as exc:
                channels[name] = _unavailable(name, f"channels.smtp.ca_file {smtp.ca_file}: {exc}")
                continue
            channels[name] = SmtpChannel(smtp.host, smtp.port, smtp.sender, starttls=smtp.starttls,
                                         username=smtp.username, password=password, timeout_s=smtp.timeout_s,
                                         ssl_context=context)
        elif name == "webhook":
            channels[name] = WebhookChannel(settings.webhook.url, timeout_s=settings.webhook.timeout_s,
                                            transport=transport)
        elif name == "sms":
            sms = settings.sms
            token = env.get(sms.token_env) if sms.token_env else None
            if sms.token_env and not token:
                reason = f"environment variable {sms.token_env} (the SMS gateway token) is not set"
                channels[name] = _unavailable(name, reason)
                continue
            assert sms.url is not None  # the loader refuses sms tenants without a gateway
            channels[name] = SmsChannel(sms.url, token=token, timeout_s=sms.timeout_s, max_chars=sms.max_chars,
                                        transport=transport)
    return channels


def _unavailable(name: str, reason: str) -> UnavailableChannel:
    log.warning("notification channel %s is unavailable: %s", name, reason)
    return UnavailableChannel(name, reason)


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationRecord:
    notification_id: str
    event_id: str
    ts: int  # epoch ms, when the notification was dispatched
    tenant_id: str
    plugin_id: str
    kind: str
    channel: str
    language: str
    recipients: tuple[str, ...]  # masked
    subject: str  # masked
    status: str  # sent | failed
    attempts: int
    error: str | None  # masked
    elapsed_ms: int

    def as_row(self) -> dict[str, Any]:
        """The row for ClickHouse ``notifications`` (JSONEachRow: ``ts`` in epoch seconds)."""
        return {
            "notification_id": self.notification_id,
            "event_id": self.event_id,
            "ts": self.ts / 1000,
            "tenant_id": self.tenant_id,
            "plugin_id": self.plugin_id,
            "kind": self.kind,
            "channel": self.channel,
            "language": self.language,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "elapsed_ms": self.elapsed_ms,
        }


def notification_id(event_id: str, channel: str) -> str:
    """Stable per (event, channel): a redelivered event replaces its earlier rows."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{event_id}\x00{channel}"))


def notifications_sql(database: str) -> str:
    """One row per (event, channel) notification (``NotificationRecord.as_row``); the newest wins."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.notifications (\n"
        "    notification_id String,\n"
        "    event_id String,\n"
        "    ts DateTime64(3, 'UTC'),\n"
        "    tenant_id LowCardinality(String),\n"
        "    plugin_id LowCardinality(String),\n"
        "    kind LowCardinality(String),\n"
        "    channel LowCardinality(String),\n"
        "    language LowCardinality(String),\n"
        "    recipients Array(String),\n"
        "    subject String,\n"
        "    status LowCardinality(String),\n"
        "    attempts UInt16,\n"
        "    error Nullable(String),\n"
        "    elapsed_ms UInt64,\n"
        "    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(inserted_at)\n"
        "PARTITION BY toYYYYMM(ts)\n"
        "ORDER BY (tenant_id, plugin_id, notification_id)\n"
        f"TTL toDateTime(ts) + INTERVAL {NOTIFICATIONS_TTL_DAYS} DAY"
    )


# -- dispatch --------------------------------------------------------------------------------------


class Dispatcher:
    """Renders an event in the tenant's language, masks it and sends it to each of the tenant's
    channels concurrently; ``notify`` never raises for a channel's failure, it records it."""

    def __init__(
        self,
        config: NotificationConfig,
        channels: Mapping[str, Channel],
        mask: Callable[[str], str],
        *,
        attempts: int = 3,
        first_delay_s: float = 0.5,
        max_delay_s: float = 10.0,
        attempt_timeout_s: float = 30.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"Dispatcher attempts must be at least 1, got {attempts}")
        self.config = config
        self.channels = dict(channels)
        self.mask = mask
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.attempt_timeout_s = attempt_timeout_s  # bounds a channel that ignores its own timeout
        self.sleep = sleep
        self.clock = clock

    async def notify(
        self, kind: str, tenant_id: str, plugin_id: str, context: Mapping[str, Any], event_id: str
    ) -> list[NotificationRecord]:
        """One record per channel of the tenant, in the configured order. ``ValueError`` for an
        unknown ``kind`` (nothing is sent)."""
        tenant = self.config.tenant(tenant_id)
        language = resolve_language(tenant.language)
        ts = int(self.clock() * 1000)
        values = {"at": dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat(timespec="milliseconds"),
                  **context, "tenant_id": tenant_id, "plugin_id": plugin_id}
        subject, body = render(kind, language, values)
        subject, body = self.mask(subject), self.mask(body)  # nothing unmasked leaves, whatever the channel
        deliveries = [
            self._deliver(name, Message(kind, tenant_id, plugin_id, subject, body, tenant.recipients(name),
                                        language, event_id), ts)
            for name in tenant.channels
        ]
        return list(await asyncio.gather(*deliveries))

    async def aclose(self) -> None:
        await close_channels(list(self.channels.values()))

    async def _deliver(self, name: str, message: Message, ts: int) -> NotificationRecord:
        started = time.perf_counter()
        channel = self.channels.get(name)
        attempts, error = 0, None
        if channel is None:
            error = f"{name} channel: none was built for it (see build_channels)"
        else:
            attempts, error = await self._attempt_all(channel, name, message)
        return NotificationRecord(
            notification_id=notification_id(message.event_id, name),
            event_id=message.event_id,
            ts=ts,
            tenant_id=message.tenant_id,
            plugin_id=message.plugin_id,
            kind=message.kind,
            channel=name,
            language=message.language,
            recipients=tuple(self.mask(display_url(r) if "://" in r else r) for r in message.recipients),
            subject=message.subject,
            status="failed" if error else "sent",
            attempts=attempts,
            error=_clip(self.mask(error), ERROR_CHARS) if error else None,
            elapsed_ms=int((time.perf_counter() - started) * 1000),
        )

    async def _attempt_all(self, channel: Channel, name: str, message: Message) -> tuple[int, str | None]:
        """(attempts made, last error or None)."""
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.wait_for(channel.send(message), self.attempt_timeout_s)
                return attempt, None
            except ChannelError as exc:
                error, retryable = str(exc), exc.retryable
            except TimeoutError:
                error, retryable = f"{name} channel: no result within {self.attempt_timeout_s:g} s", True
            except Exception as exc:  # noqa: BLE001 - a channel's bug must not take the others down
                error, retryable = f"{name} channel: {type(exc).__name__}: {exc}", True
            if not retryable or attempt == self.attempts:
                log.warning("notification %s via %s for %s/%s failed after %d attempt(s): %s", message.kind,
                            name, message.tenant_id, message.plugin_id, attempt, self.mask(error))
                return attempt, error
            delay = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
            log.info("notification %s via %s failed (%s); try %d of %d in %.2f s", message.kind, name,
                     self.mask(error), attempt + 1, self.attempts, delay)
            await self.sleep(delay)
        return self.attempts, error  # not reached: the loop returns on the last attempt


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
