"""Notification templates (every kind in en and zh-CN, fallbacks) and notifications.yaml loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugwatch.notify import KINDS, LANGUAGES, NotificationConfig, NotificationConfigError, render, resolve_language
from plugwatch.notify.channels import ConsoleChannel, Message, SmsChannel, UnavailableChannel
from plugwatch.notify.dispatch import build_channels, notification_id, notifications_sql

REPO = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")
CONTEXT = {
    "tenant_id": "acme",
    "plugin_id": "payment-gateway",
    "suspension_id": "SUS-20261124-000007",
    "mode": "force",
    "requester": "alice",
    "approvers": ["bob", "carol"],
    "reason": "error rate 42%",
    "severity": "critical",
    "status": "suspended",
    "elapsed_ms": 812,
    "evidence_id": "EVD-20261124-000042",
    "at": "2026-11-24T10:00:00.000+00:00",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_in_every_language(kind: str, language: str) -> None:
    subject, body = render(kind, language, CONTEXT)
    assert subject.startswith("[plugwatch] ") and "\n" not in subject
    assert "payment-gateway" in subject and "acme" in subject
    for value in ("SUS-20261124-000007", "EVD-20261124-000042", "bob, carol", "error rate 42%", "812"):
        assert value in body
    assert "None" not in body and "{{" not in body
    if language == "zh-CN":
        assert CJK.search(subject) and CJK.search(body)
    else:
        assert not CJK.search(subject + body)


def test_kinds_have_distinct_texts() -> None:
    for language in LANGUAGES:
        subjects = {render(kind, language, CONTEXT)[0] for kind in KINDS}
        assert len(subjects) == len(KINDS)


def test_chinese_wording() -> None:
    subject, body = render("plugin_suspended", "zh-CN", CONTEXT)
    assert "插件已暂停" in subject
    assert "模式：强制" in body and "严重级别：严重" in body and "审批人：bob, carol" in body
    assert "插件已锁定" in render("plugin_locked", "zh-CN", CONTEXT)[0]


def test_missing_fields_are_left_out() -> None:
    subject, body = render("plugin_resumed", "en", {"tenant_id": "acme", "plugin_id": "p1", "approvers": []})
    assert subject == "[plugwatch] Plugin p1 resumed (acme)"
    assert body == "Plugin p1 of tenant acme is resumed and accepts requests again.\n\nTenant: acme\nPlugin: p1\n"


def test_values_are_not_escaped_and_subject_is_one_line() -> None:
    subject, body = render("suspension_requested", "en",
                           {"tenant_id": "a&b", "plugin_id": "p<1>\nx", "reason": 'say "hi" & <go>'})
    assert subject == "[plugwatch] Suspension requested for plugin p<1> x (a&b)"
    assert 'Reason: say "hi" & <go>' in body


@pytest.mark.parametrize(("tag", "expected"), [
    ("en", "en"), ("zh-CN", "zh-CN"), ("zh_cn", "zh-CN"), ("ZH-cn", "zh-CN"), ("zh", "zh-CN"),
    ("zh-Hans", "zh-CN"), ("en-GB", "en"), ("fr", "en"), ("", "en"), (None, "en"),
])
def test_language_resolution(tag: str | None, expected: str) -> None:
    assert resolve_language(tag) == expected


def test_unknown_language_falls_back_to_english() -> None:
    assert render("plugin_suspended", "fr-FR", CONTEXT) == render("plugin_suspended", "en", CONTEXT)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="plugin_exploded"):
        render("plugin_exploded", "en", CONTEXT)


def test_sms_text_is_cut_to_the_limit() -> None:
    subject, body = render("plugin_locked", "zh-CN", {**CONTEXT, "reason": "很长的原因" * 200})
    message = Message("plugin_locked", "acme", "payment-gateway", subject, body, ("+8613800000000",), "zh-CN", "e1")
    text = SmsChannel("http://127.0.0.1:9/send", max_chars=300).text(message)
    assert len(text) == 300 and text.endswith("…") and text.startswith(subject)


def test_console_line_is_one_line() -> None:
    message = Message("plugin_suspended", "acme", "p1", "[plugwatch] x\ny", "body\nmore", (), "en", "e1")
    line = ConsoleChannel.line(message)
    assert "\n" not in line and "tenant=acme" in line and "event=e1" in line


# -- configuration ---------------------------------------------------------------------------------


def test_repository_config_loads() -> None:
    config = NotificationConfig.from_file(REPO / "config" / "plugins" / "notifications.yaml")
    acme = config.tenant("acme")
    assert acme.language == "zh-CN"
    assert acme.channels == ("console",)  # the embedded default; the recipients are there to switch on
    assert acme.recipients("email") and acme.recipients("webhook")[0].startswith("https://")
    assert config.tenant("someone-else").channels == ("console",)
    assert config.tenant("someone-else").language == "en"


def test_missing_file_means_console_in_english(tmp_path: Path) -> None:
    config = NotificationConfig.from_file(tmp_path / "absent.yaml")
    tenant = config.tenant("acme")
    assert (tenant.language, tenant.channels) == ("en", ("console",))
    assert set(build_channels(config)) == {"console"}


def test_tenant_without_default_entry_gets_console(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("tenants:\n  acme: {language: zh-CN, channels: [console]}\n")
    config = NotificationConfig.from_file(path)
    assert config.tenant("acme").language == "zh-CN"
    assert config.tenant("other") == config.tenant("*")
    assert config.tenant("other").channels == ("console",)


@pytest.mark.parametrize(("text", "message"), [
    ("tenants: [\n", "not valid YAML"),
    ("- a\n", r"\(top level\) must be a mapping"),
    ("tenant: {}\n", "unknown key.*tenant"),
    ("tenants:\n  acme: {channels: [pager]}\n", r"tenants\.acme\.channels names unknown channel\(s\) pager"),
    ("tenants:\n  acme: {channels: email}\n", "tenants.acme lists channel email but has no email.to"),
    ("tenants:\n  acme: {channels: [email], email: {to: [not-an-address]}}\n", "not email addresses"),
    ("tenants:\n  acme: {channels: [webhook]}\n", "has no webhook.url"),
    ("tenants:\n  acme: {channels: [webhook], webhook: {url: 'ftp://x/y'}}\n", "http:// or https://"),
    ("tenants:\n  acme: {channels: [sms], sms: {to: ['+1']}}\n", "channels.sms.url"),
    ("tenants:\n  acme: {channels: [sms]}\n", "has no sms.to"),
    ("tenants:\n  acme: {language: 7}\n", "tenants.acme.language must be a non-empty string"),
    ("tenants:\n  acme: {emial: {to: [a@b]}}\n", "tenants.acme has unknown key.*emial"),
    ("channels:\n  smtp: {port: 70000}\n", "channels.smtp.port must be a port number"),
    ("channels:\n  smtp: {port: '25'}\n", "channels.smtp.port must be a port number"),
    ("channels:\n  smtp: {from: plugwatch}\n", "channels.smtp.from must be an email address"),
    ("channels:\n  smtp: {username: bot}\n", "password_env is needed"),
    ("channels:\n  smtp: {password: hunter2}\n", "channels.smtp has unknown key.*password"),
    ("channels:\n  smtp: {starttls: 'yes'}\n", "channels.smtp.starttls must be true or false"),
    ("channels:\n  webhook: {timeout_s: 0}\n", "channels.webhook.timeout_s must be a positive number"),
    ("channels:\n  sms: {max_chars: 5}\n", "channels.sms.max_chars"),
    ("channels:\n  pager: {}\n", "channels has unknown key.*pager"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "notifications.yaml"
    path.write_text(text)
    with pytest.raises(NotificationConfigError, match=message) as raised:
        NotificationConfig.from_file(path)
    assert str(path) in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_webhook_url_errors_do_not_show_the_path() -> None:
    with pytest.raises(NotificationConfigError) as raised:
        NotificationConfig.from_dict({"channels": {"webhook": {"url": "ftp://h.example/secret-token"}}})
    assert "secret-token" not in str(raised.value)


def test_missing_secret_makes_an_unavailable_channel_not_a_crash() -> None:
    config = NotificationConfig.from_dict({
        "tenants": {"acme": {"channels": ["email", "sms"], "email": {"to": ["ops@acme.example"]},
                             "sms": {"to": ["+100"]}}},
        "channels": {"smtp": {"username": "bot", "password_env": "NOTIFY_TEST_PW"},
                     "sms": {"url": "http://127.0.0.1:9/send", "token_env": "NOTIFY_TEST_TOKEN"}},
    })
    channels = build_channels(config, environ={})
    assert isinstance(channels["email"], UnavailableChannel) and "NOTIFY_TEST_PW" in channels["email"].reason
    assert isinstance(channels["sms"], UnavailableChannel) and "NOTIFY_TEST_TOKEN" in channels["sms"].reason
    built = build_channels(config, environ={"NOTIFY_TEST_PW": "pw", "NOTIFY_TEST_TOKEN": "tok"})
    assert {name: type(c).__name__ for name, c in built.items()} == {
        "console": "ConsoleChannel", "email": "SmtpChannel", "sms": "SmsChannel"}


def test_notification_ids_and_ddl() -> None:
    assert notification_id("e1", "email") == notification_id("e1", "email")
    assert notification_id("e1", "email") != notification_id("e1", "sms")
    sql = notifications_sql("plugwatch")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS plugwatch.notifications")
    assert "ReplacingMergeTree" in sql and "ORDER BY (tenant_id, plugin_id, notification_id)" in sql
    assert "TTL toDateTime(ts) + INTERVAL 400 DAY" in sql
