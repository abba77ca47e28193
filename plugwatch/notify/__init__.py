"""Notifications of suspension events (DESIGN §7): email, webhook, SMS gateway and console, in the
tenant's language, masked before they leave, each channel retried on its own and recorded."""

from plugwatch.notify.channels import (
    Channel,
    ChannelError,
    ConsoleChannel,
    Message,
    SmsChannel,
    SmtpChannel,
    UnavailableChannel,
    WebhookChannel,
)
from plugwatch.notify.dispatch import (
    Dispatcher,
    NotificationConfig,
    NotificationConfigError,
    NotificationRecord,
    TenantNotifications,
    build_channels,
    notifications_sql,
)
from plugwatch.notify.templates import KINDS, LANGUAGES, render, resolve_language

__all__ = [
    "KINDS",
    "LANGUAGES",
    "Channel",
    "ChannelError",
    "ConsoleChannel",
    "Dispatcher",
    "Message",
    "NotificationConfig",
    "NotificationConfigError",
    "NotificationRecord",
    "SmsChannel",
    "SmtpChannel",
    "TenantNotifications",
    "UnavailableChannel",
    "WebhookChannel",
    "build_channels",
    "notifications_sql",
    "render",
    "resolve_language",
]
