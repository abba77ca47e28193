"""Key rules: values under sensitive keys are masked whole, at any depth and in any spelling."""

from __future__ import annotations

import pytest

from plugwatch.masking import MaskingEngine

SENSITIVE = [
    "password", "Password", "PASSWORD", "user_password", "userPassword", "db-password", "password_2", "passwd", "pwd",
    "passphrase", "secret", "client_secret", "clientSecret", "token", "access_token", "accessToken", "refresh_token",
    "X-Auth-Token", "api_key", "apiKey", "apikey", "x-api-key", "X-API-KEY", "XApiKey", "authorization",
    "Authorization", "cookie", "Set-Cookie", "session", "sessionId", "JSESSIONID", "private_key", "privateKey",
    "credential", "credentials", "card", "card_number", "cardNumber", "credit_card", "cvv", "id_card", "idNumber",
    "id_number", "ssn", "phone", "mobile", "phoneNumber", "email", "userEmail", "e-mail", "iban", "password_hash",
    "aws_secret_access_key", "密码", "手机号", "身份证号", "银行卡",
]
READABLE = [
    "token_type", "password_length", "email_verified", "gen_ai.usage.input_tokens", "max_tokens", "key", "keyboard",
    "monkey", "author", "trace_id", "span_id", "description", "bypass", "session_timeout", "token_expires_at",
    "card_type", "phone_verified", "hotel", "mapping",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_key_masked(engine: MaskingEngine, key: str) -> None:
    value = {"outer": {"list": [{key: "plain-value-1"}]}, "headers": {key: "plain-value-2"}}
    masked, stats = engine.mask(value)
    assert masked["outer"]["list"][0][key].startswith("[MASKED:")
    assert masked["headers"][key].startswith("[MASKED:")
    assert stats.total >= 2 and not stats.flagged


@pytest.mark.parametrize("key", READABLE)
def test_benign_key_kept(engine: MaskingEngine, key: str) -> None:
    value = {"attributes": {key: "plain-value"}}
    assert engine.mask(value)[0] == value


def test_values_that_are_not_strings(engine: MaskingEngine) -> None:
    value = {"password": None, "token": True, "cvv": 123, "pin_ok": False, "secret": "", "phone": 13800138000}
    masked, _ = engine.mask(value)
    assert masked == {"password": None, "token": True, "cvv": "[MASKED:card]", "pin_ok": False, "secret": "",
                      "phone": "[MASKED:phone:****8000]"}


def test_container_under_sensitive_key_keeps_its_shape(engine: MaskingEngine) -> None:
    value = {"credentials": {"user": "bob", "pass": "x", "n": 3, "ok": True, "list": ["a", 1]}}
    masked, _ = engine.mask(value)
    assert masked == {"credentials": {"user": "[MASKED:credential]", "pass": "[MASKED:credential]", "n": "[MASKED:credential]",
                                      "ok": True, "list": ["[MASKED:credential]", "[MASKED:credential]"]}}


def test_otlp_attribute_lists(engine: MaskingEngine) -> None:
    value = {"attributes": [
        {"key": "db.password", "value": {"stringValue": "hunter2"}},
        {"key": "http.method", "value": {"stringValue": "GET"}},
        {"key": "service.name", "value": {"stringValue": "checkout"}},
    ]}
    masked, _ = engine.mask(value)
    assert masked["attributes"][0]["value"] == {"stringValue": "[MASKED:password]"}
    assert masked["attributes"][1:] == value["attributes"][1:]


def test_header_pair_lists(engine: MaskingEngine) -> None:
    value = {"headers": [["Authorization", "Token abc"], ["X-Api-Key", "k-123"], ["Accept", "text/html"]]}
    masked, _ = engine.mask(value)
    assert masked["headers"][0][1] == "[MASKED:authorization]"
    assert masked["headers"][1][1] == "[MASKED:api_key]"
    assert masked["headers"][2] == ["Accept", "text/html"]


def test_query_map_and_url(engine: MaskingEngine) -> None:
    value = {"url": "https://api.example.com/v1?page=2&access_token=abc123def456", "query": {"access_token": "abc123def456", "page": "2"}}
    masked, _ = engine.mask(value)
    assert masked["query"] == {"access_token": "[MASKED:token]", "page": "2"}
    assert masked["url"] == "https://api.example.com/v1?page=2&access_token=[MASKED:token]"


def test_authorization_header_value_to_end_of_line(engine: MaskingEngine) -> None:
    text = "GET / HTTP/1.1\r\nAuthorization: Digest username=bob, response=6629fae49393\r\nAccept: */*"
    masked = engine.mask_text(text)
    assert "6629fae49393" not in masked and "username=bob" not in masked
    assert masked.endswith("\r\nAccept: */*")


def test_sensitive_key_inside_escaped_json_body(engine: MaskingEngine) -> None:
    value = {"body": '{"password": "hunter2", "user": {"token": "t-1"}, "amount": 3}'}
    masked, _ = engine.mask(value)
    assert masked["body"] == '{"password": "[MASKED:password]", "user": {"token": "[MASKED:token]"}, "amount": 3}'
