"""Notification channels: email over SMTP, a webhook, an SMS gateway and the console.

A channel makes ONE attempt per ``send``; the dispatcher retries. A failed attempt raises
``ChannelError`` whose ``retryable`` says whether another try could help (timeouts, refused
connections, 5xx, SMTP 4xx) or not (4xx, SMTP 5xx, a refused login). Error messages name the channel
and what went wrong, never a password, a token or a webhook URL's path and query (which often hold
a token): URLs are shown as ``scheme://host`` only.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)

USER_AGENT = "plugwatch-notify"
EXCERPT_CHARS = 200
SMS_MAX_CHARS = 300
# 7bit: a UTF-8 body goes out base64 or quoted-printable, so a server without 8BITMIME takes it too.
_EMAIL_POLICY = email.policy.SMTP.clone(cte_type="7bit")


class ChannelError(Exception):
    """One attempt on a channel failed; ``retryable`` says whether trying again could help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Message:
    """One rendered, masked notification for one channel."""

    kind: str
    tenant_id: str
    plugin_id: str
    subject: str
    body: str
    recipients: tuple[str, ...]  # addresses (email), phone numbers (sms), URLs (webhook), none (console)
    language: str
    event_id: str


class Channel(Protocol):
    name: str

    async def send(self, message: Message) -> None: ...


def display_url(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the path and query of a webhook often carry its token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme and parts.netloc else "(url)"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- email ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    sender: str = "plugwatch@localhost"
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None  # the environment variable holding the password
    timeout_s: float = 10.0
    ca_file: str | None = None  # CA bundle that signs the server's certificate (default: the system's)


class SmtpChannel:
    """Email through an SMTP server (stdlib ``smtplib`` on a worker thread), UTF-8 text body."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if username and not password:
            raise ValueError("smtp username is set but no password: set the password environment variable")
        self.host, self.port, self.sender = host, port, sender
        self.starttls = starttls
        self.timeout_s = timeout_s
        self._username = username
        self._password = password
        self._ssl_context = ssl_context

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage(policy=_EMAIL_POLICY)
        mail["Subject"] = message.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(message.recipients)
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        mail["X-Plugwatch-Event-Id"] = message.event_id
        mail["X-Plugwatch-Kind"] = message.kind
        mail["Content-Language"] = message.language
        mail.set_content(message.body, charset="utf-8")
        return mail

    async def send(self, message: Message) -> None:
        if not message.recipients:
            raise ChannelError("email channel: no recipients configured for this tenant (email.to)", retryable=False)
        mail = self.build(message)
        await asyncio.to_thread(self._send_sync, mail, list(message.recipients))

    def _send_sync(self, mail: EmailMessage, recipients: list[str]) -> None:
        where = f"smtp {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                smtp.send_message(mail, from_addr=self.sender, to_addrs=recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(
                f"{where}: login refused (code {exc.smtp_code}); check the username and the password "
                "environment variable", retryable=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"{where}: {_one_line(str(exc), EXCERPT_CHARS)} (starttls or login not offered "
                               "by the server: check channels.smtp)", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise ChannelError(f"{where}: all {len(exc.recipients)} recipient(s) refused (codes {codes})",
                               retryable=all(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error
            text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
            raise ChannelError(f"{where}: {type(exc).__name__} {exc.smtp_code} {_one_line(text, EXCERPT_CHARS)}",
                               retryable=400 <= exc.smtp_code < 500) from None
        except ssl.SSLCertVerificationError as exc:
            raise ChannelError(f"{where}: the server's TLS certificate is not trusted ({exc.verify_message}); "
                               "name its CA in channels.smtp.ca_file", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timed out, disconnected
            detail = _one_line(str(exc), EXCERPT_CHARS)
            cause = type(exc).__name__ + (f": {detail}" if detail else "")
            raise ChannelError(f"{where} unreachable: {cause}") from None


# -- HTTP (webhook, SMS gateway) -------------------------------------------------------------------


class _HttpChannel:
    name = "http"

    def __init__(self, *, timeout_s: float, headers: dict[str, str] | None,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT, **(headers or {})}, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        where = f"{self.name} POST {display_url(url)}"
        try:
            response = await self._client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException as exc:
            raise ChannelError(f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            detail = _one_line(str(exc).replace(url, display_url(url)), EXCERPT_CHARS)
            raise ChannelError(f"{where}: {type(exc).__name__}" + (f": {detail}" if detail else "")) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = _one_line(response.text, EXCERPT_CHARS) or "(empty body)"
        raise ChannelError(f"{where}: HTTP {status}: {excerpt}", retryable=status >= 500 or status in (408, 429))


@dataclass(frozen=True)
class WebhookSettings:
    url: str | None = None  # used for tenants that name no webhook.url of their own
    timeout_s: float = 5.0


class WebhookChannel(_HttpChannel):
    """POST the notification as JSON to the tenant's webhook URL(s) (else the default URL); 2xx is done."""

    name = "webhook"

    def __init__(self, url: str | None = None, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(timeout_s=timeout_s, headers=headers, transport=transport)
        self.url = url

    async def send(self, message: Message) -> None:
        urls = message.recipients or ((self.url,) if self.url else ())
        if not urls:
            raise ChannelError("webhook channel: no URL configured for this tenant (webhook.url)", retryable=False)
        payload = {
            "event_id": message.event_id,
            "kind": message.kind,
            "tenant_id": message.tenant_id,
            "plugin_id": message.plugin_id,
            "subject": message.subject,
            "body": message.body,
            "language": message.language,
        }
        for url in urls:  # the event id lets a receiver drop the copy a retry sends again
            await self._post(url, payload, {"X-Plugwatch-Event-Id": message.event_id})


@dataclass(frozen=True)
class SmsSettings:
    url: str | None = None  # the SMS gateway's send endpoint
    token_env: str | None = None  # the environment variable holding its bearer token
    timeout_s: float = 5.0
    max_chars: int = SMS_MAX_CHARS


class SmsChannel(_HttpChannel):
    """An SMS gateway behind a webhook: POST ``{to, text}`` with a bearer token; text cut to ``max_chars``."""

    name = "sms"

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 5.0,
                 max_chars: int = SMS_MAX_CHARS, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(timeout_s=timeout_s, headers=headers, transport=transport)
        self.url = url
        self.max_chars = max_chars

    def text(self, message: Message) -> str:
        body = "\n".join(line for line in message.body.splitlines() if line.strip())
        return _clip(f"{message.subject}\n{body}", self.max_chars)

    async def send(self, message: Message) -> None:
        if not message.recipients:
            raise ChannelError("sms channel: no phone numbers configured for this tenant (sms.to)", retryable=False)
        await self._post(self.url, {"to": list(message.recipients), "text": self.text(message)},
                         {"X-Plugwatch-Event-Id": message.event_id})


# -- console and stand-ins -------------------------------------------------------------------------


class ConsoleChannel:
    """One line per notification on ``stream`` (else the ``plugwatch.notify.console`` logger)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, logger: logging.Logger | None = None) -> None:
        self.stream = stream
        self.logger = logger or logging.getLogger("plugwatch.notify.console")

    @staticmethod
    def line(message: Message) -> str:
        return (f"notification {message.kind} tenant={message.tenant_id} plugin={message.plugin_id} "
                f"event={message.event_id} lang={message.language}: {_one_line(message.subject, 400)}")

    async def send(self, message: Message) -> None:
        line = self.line(message)
        if self.stream is None:
            self.logger.info("%s", line)
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a closed stream raises ValueError
            raise ChannelError(f"console channel: cannot write: {type(exc).__name__}: {exc}") from None


class UnavailableChannel:
    """Stands in for a channel that could not be built (say, its secret is not set): every send
    fails at once with the reason, so the failure is recorded and the other channels go out."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    async def send(self, message: Message) -> None:
        raise ChannelError(f"{self.name} channel: {self.reason}", retryable=False)


async def close_channels(channels: Sequence[Any]) -> None:
    """Close the channels that hold connections (the HTTP ones)."""
    for channel in channels:
        aclose = getattr(channel, "aclose", None)
        if aclose is not None:
            await aclose()
