"""Table-driven detector cases: each secret is masked in free text, in a JSON string, in a JSON
body nested inside a JSON string and in a repr'd stack trace; near misses stay as they are."""

from __future__ import annotations

import json

import pytest

from plugwatch.masking import MaskingEngine

from masking_helpers import strings_of

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM_BODY = "MIIEowIBAAKCAQEAvOPd5VL1WcQmxVrlg7s4Uq3ZJ2fR9kT0yWm8aXcB1nE6pH"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\nZmFrZWtleWZha2VrZXlmYWtla2V5\n-----END RSA PRIVATE KEY-----"

# (case id, text, the part that must disappear, the token type that replaces it)
POSITIVES = [
    ("email", "reset link sent to zhang.san@example.com today", "zhang.san@example.com", "email"),
    ("email-cjk", "用户邮箱zhang.san@corp.example.com.cn验证失败", "zhang.san@corp.example.com.cn", "email"),
    ("mobile", "sms to 13800138000 failed", "13800138000", "phone"),
    ("mobile+86", "call +86 138 0013 8000 now", "138 0013 8000", "phone"),
    ("mobile-dashes", "tel 138-0013-8000.", "138-0013-8000", "phone"),
    ("mobile-0086", "intl 0086 13800138000", "13800138000", "phone"),
    ("mobile-cjk", "手机号13800138000绑定成功", "13800138000", "phone"),
    ("e164", "on-call +14155552671 paged", "4155552671", "phone"),
    ("e164-spaced", "desk +44 20 7946 0958 ext", "7946 0958", "phone"),
    ("cn-id-18", "身份证号 11010519491231002X 实名失败", "11010519491231002X", "cn_id"),
    ("cn-id-15", "legacy id 110105491231002 migrated", "110105491231002", "cn_id"),
    ("visa-spaced", "card 4111 1111 1111 1111 declined", "4111 1111 1111 1111", "card"),
    ("visa-dashed", "card 4111-1111-1111-1111 declined", "4111-1111-1111-1111", "card"),
    ("visa-plain", "pan=4111111111111111;", "4111111111111111", "card"),
    ("amex", "amex 378282246310005 ok", "378282246310005", "card"),
    ("unionpay-16", "银联卡 6239 8259 7919 0741 支付失败", "6239 8259 7919 0741", "card"),
    ("unionpay-19", "unionpay 6283378876232860125 declined", "6283378876232860125", "card"),
    ("iban-spaced", "payout to DE89 3704 0044 0532 0130 00 queued", "3704 0044 0532", "iban"),
    ("iban-compact", "IBAN GB82WEST12345698765432 rejected", "GB82WEST12345698765432", "iban"),
    # Found by Hypothesis: a digit after the IBAN's last group was taken as one more group.
    ("iban-then-digit", " ES7864542841036648562802 0", "ES7864542841036648562802", "iban"),
    ("iban-glued", "ref=GB82WEST12345698765432X", "GB82WEST12345698765432", "iban"),
    ("jwt", f"token expired: {JWT}", JWT, "jwt"),
    ("bearer", "Authorization: Bearer abc123def456ghi789 sent", "abc123def456ghi789", "authorization"),
    ("bearer-lower", "header bearer opaqueTok3n12345", "opaqueTok3n12345", "bearer"),
    ("basic", "upstream Basic dXNlcjpwYXNzd29yZA== rejected", "dXNlcjpwYXNzd29yZA==", "bearer"),
    ("dsn", "connect postgres://app:S3cret!x@db.internal:5432/plugins", "S3cret!x", "url_password"),
    ("dsn-mongo", "mongodb+srv://svc:pa55word@cluster0.example.net/db", "pa55word", "url_password"),
    ("dsn-redis", "cache redis://:hunter2xy@cache:6379/0 down", "hunter2xy", "url_password"),
    ("url-userinfo", "GET https://bob:pass123@example.com/x", "pass123", "url_password"),
    ("query-token", "GET /cb?access_token=abc123xyz789&page=2", "abc123xyz789", "token"),
    ("query-code", "redirect https://app.example.com/cb?code=Q9x8y7z6w5&state=1", "Q9x8y7z6w5", "secret"),
    ("query-key", "https://maps.example.com/geo?key=zz99yy88xx77&q=x", "zz99yy88xx77", "secret"),
    ("query-sig", "s3 https://b.s3.example.com/o?X-Amz-Signature=deadbeef1234abcd&X-Amz-Date=1", "deadbeef1234abcd", "secret"),
    ("pem", f"loaded key {PEM} ok", PEM_BODY, "private_key"),
    ("pem-truncated", f"dump: -----BEGIN PRIVATE KEY-----\n{PEM_BODY}", PEM_BODY, "private_key"),
    ("aws-id", "creds AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("aws-sts", "sts ASIAY34FZKBOKMUTVV7A issued", "ASIAY34FZKBOKMUTVV7A", "aws_access_key_id"),
    ("aws-secret", "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY loaded", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key"),
    ("github", "clone with ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 done", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "github_token"),
    ("github-oauth", "gho_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "gho_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "github_token"),
    ("github-pat", "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW!",
     "github_pat_11ABCDEFG0123456789_abcdefghij", "github_token"),
    ("slack", "post with xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012", "slack_token"),
    ("stripe", "charge via sk_live_4eC39HqLyjWDarjtT1zdp7dc failed", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
    ("stripe-rk", "rk_live_51H8abcDEF9ghiJKLmno0pqR", "rk_live_51H8abcDEF9ghiJKLmno0pqR", "stripe_key"),
    ("google", "maps AIzaSyA-1234567890abcdefghijklmnopqrs ok", "AIzaSyA-1234567890abcdefghijklmnopqrs", "google_api_key"),
    ("openai", "llm key sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90 returned 429", "Ab12Cd34Ef56Gh78Ij90", "openai_key"),
    ("openai-plain", "sk-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12", "sk-Ab12Cd34Ef56Gh78Ij90Kl12", "openai_key"),
    ("card-14-plain", "GET /v1/carts/31415926535892 200", "31415926535892", "card"),  # passes Luhn
    ("assign-eq", "login failed user=admin password=hunter2x next=/", "hunter2x", "password"),
    ("assign-colon", "passwd: Tr0ub4dor&3 rejected", "Tr0ub4dor&3", "password"),
    ("assign-json", 'config {"api_key": "abc123secretvalue", "region": "cn"}', "abc123secretvalue", "api_key"),
    ("assign-quoted", "db_password = 's3cr3t value'", "s3cr3t value", "password"),
    ("assign-nospace", "client_secret:xyz789abc", "xyz789abc", "secret"),
    ("assign-header", "X-Auth-Token: tok_abc123def", "tok_abc123def", "token"),
    ("assign-aws", "aws_secret_access_key=abcdEFGH1234ijkl", "abcdEFGH1234ijkl", "secret"),
    ("assign-cookie", "Cookie: session=abc123; theme=dark", "session=abc123", "cookie"),
    ("assign-pwd-hash", "password_hash: 5f4dcc3b5aa765d61d8327deb882cf99", "5f4dcc3b5aa765d61d8327deb882cf99", "password"),
]

NEAR_MISSES = [
    "ref 4111 1111 1111 1112 not a card (bad Luhn)",
    "GET /v1/carts/31415926535897 200",  # 14 plain digits from 3, no context word: a card's shape, bad Luhn
    "id 110105194912310021 has the wrong check digit",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "request 550e8400-e29b-41d4-a716-446655440000 done",
    "request 12345678-1234-1234-1234-123456789012 done",
    "upgraded plugin to 2.13.4 (was v2.13.4-rc.1)",
    "at 2024-05-01T12:00:00.123Z and 2024-05-01 12:00:00,123",
    "batch at 1714567890123 closed, ns 1714567890123456789",
    "deployed commit 3f9a2b7c1d4e5f60718293a4b5c6d7e8f9012345",
    "listening on 0.0.0.0:8443 and localhost:5432",
    "order 20240501123456 shipped",
    "订单号 4111111111111111 已发货",
    "took 12345 ms, 3000 retries, 192.168.10.254",
    "Failed password for invalid user admin from 173.234.31.186 port 38926 ssh2",
    "phone_verified=true token_count=42 input_tokens: 120 password_length=12",
    "author: Jane; the basic idea; bearer of bad news",
    "task-force-alpha-bravo-charlie and disk-usage-monitoring-daemon-01",
    "handle_will_sleep_auth_and_shield_windows: Reordering authw",
    "cache key=user:42 sort key: name",
    "http.status_code=502 exit code=1",
    "git@github.com:org/repo.git",  # is an email shape; checked separately below
]


def _contexts(text: str) -> dict[str, object]:
    return {
        "text": text,
        "json": {"message": text},
        "body": {"request": {"body": json.dumps({"note": text, "n": 1})}},
        "stack": {"exception": {"stacktrace": f"Traceback:\n  raise ValueError({text!r})\nValueError: {text}"}},
    }


@pytest.mark.parametrize(("case", "text", "secret", "kind"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_secret_masked_everywhere(engine: MaskingEngine, case: str, text: str, secret: str, kind: str) -> None:
    for where, value in _contexts(text).items():
        if where == "text":
            masked = engine.mask_text(value)
            assert secret not in masked, (where, masked)
            assert f"[MASKED:{kind}" in masked, (where, masked)
            continue
        masked, stats = engine.mask(value)
        assert not any(secret in s for s in strings_of(masked)), (where, masked)
        assert not any(json.dumps(secret)[1:-1] in s for s in strings_of(masked)), (where, masked)
        assert stats.violations == 0, (where, masked)
        assert stats.total > 0


@pytest.mark.parametrize("text", NEAR_MISSES[:-1])
def test_near_miss_stays(engine: MaskingEngine, text: str) -> None:
    assert engine.mask_text(text) == text
    value = {"message": text}
    masked, stats = engine.mask(value)
    assert masked == value and stats.total == 0 and not stats.flagged


def test_readable_keys_keep_numbers(engine: MaskingEngine) -> None:
    event = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "order_id": "4111111111111111",
             "start_ts": 1714567890123, "ts": "2024-05-01T12:00:00Z", "net.peer.port": 5432,
             "plugin_version": "2.3.1", "commit": "3f9a2b7c1d4e5f60718293a4b5c6d7e8f9012345"}
    assert engine.mask(event)[0] == event


def test_card_as_json_number_is_masked_as_string(engine: MaskingEngine) -> None:
    masked, _ = engine.mask({"amount": 42, "ref": 4111111111111111, "ts": 1714567890123})
    assert masked == {"amount": 42, "ref": "[MASKED:card:****1111]", "ts": 1714567890123}


def test_pem_with_escaped_newlines_in_repr(engine: MaskingEngine) -> None:
    text = repr(PEM)  # newlines written as backslash-n, as a repr'd string in a log line
    assert "\\n" in text
    for masked in (engine.mask_text(f"key={text}"), str(engine.mask({"m": f"loaded {text}"})[0])):
        assert PEM_BODY not in masked and "ZmFrZWtleWZha2VrZXlmYWtla2V5" not in masked


def test_email_beside_escape_sequences(engine: MaskingEngine) -> None:
    masked, stats = engine.mask({"m": "line one\nbob@example.com\tnext", "n": 'say "bob@example.com"'})
    assert masked == {"m": "line one\n[MASKED:email]\tnext", "n": 'say "[MASKED:email]"'}
    assert stats.counts["email"] == 2


def test_many_secrets_in_one_string(engine: MaskingEngine) -> None:
    text = " | ".join(p[1] for p in POSITIVES)
    masked = engine.mask_text(text)
    for _, _, secret, _ in POSITIVES:
        assert secret not in masked
