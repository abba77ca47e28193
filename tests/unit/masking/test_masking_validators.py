"""Checksums and shapes that decide whether a candidate is a finding."""

from __future__ import annotations

import pytest

from plugwatch.masking import validators as v


@pytest.mark.parametrize(("digits", "ok"), [
    (b"4111111111111111", True), (b"4111111111111112", False), (b"378282246310005", True),
    (b"6011111111111117", True), (b"5500000000000004", True), (b"6239825979190741", True),
    (b"6283378876232860125", True), (b"0000000000000", True), (b"1234567812345678", False),
])
def test_luhn(digits: bytes, ok: bool) -> None:
    assert v.luhn_ok(digits) is ok


@pytest.mark.parametrize(("digits", "grouped", "ok"), [
    (b"4111111111111111", False, True),
    (b"1714567890128", False, False),     # Luhn-valid epoch milliseconds: starts with 1, not a card
    (b"4111111111111112", False, False),  # bad Luhn
    (b"411111111111", False, False),      # 12 digits: too short
    (b"41111111111111111111", False, False),  # 20 digits: too long
    (b"9999999999999995", True, True),    # written in groups: a card whatever the first digit
    (b"9999999999999995", False, False),
])
def test_card(digits: bytes, grouped: bool, ok: bool) -> None:
    assert v.card_ok(digits, grouped) is (ok and v.luhn_ok(digits))


@pytest.mark.parametrize(("value", "ok"), [
    (b"11010519491231002X", True), (b"11010519491231002x", True),
    (b"110105194912310021", False),   # wrong check character
    (b"110105194913310028", False),   # month 13
    (b"990105194912310022", False),   # no such province
    (b"110105491231002", True),       # 15-digit legacy: region + YYMMDD
    (b"110105491331002", False),      # legacy with month 13
])
def test_cn_id(value: bytes, ok: bool) -> None:
    assert v.cn_id_ok(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    (b"DE89370400440532013000", True), (b"GB82WEST12345698765432", True), (b"NL91ABNA0417164300", True),
    (b"GB82WEST12345698765433", False), (b"DE8937040044053201300", False), (b"XX89370400440532013000", False),
])
def test_iban(value: bytes, ok: bool) -> None:
    assert v.iban_ok(value) is ok


@pytest.mark.parametrize(("digits", "mobile", "e164"), [
    (b"13800138000", True, True), (b"8613800138000", True, True), (b"12800138000", False, True),
    (b"1380013800", False, True), (b"1234567", False, False), (b"0123456789", False, False),
])
def test_phone(digits: bytes, mobile: bool, e164: bool) -> None:
    assert v.cn_mobile_ok(digits) is mobile
    assert v.e164_ok(digits) is e164


@pytest.mark.parametrize(("value", "ok"), [
    (b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", True),
    (b"3f9a2b7c1d4e5f60718293a4b5c6d7e8f9012345", False),   # lower-case hex: a commit
    (b"3F9A2B7C1D4E5F60718293A4B5C6D7E8F9012345", False),   # upper-case hex
    (b"src/main/java/com/Example/service/Handle", False),   # a path
    (b"abcdefghijABCDEFGHIJabcdefghijABCDEFGHIJ", False),   # letters only
])
def test_aws_secret(value: bytes, ok: bool) -> None:
    assert v.aws_secret_ok(value) is ok


def test_jwt_header_must_decode_to_an_object() -> None:
    assert v.jwt_ok(b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.sig")
    assert not v.jwt_ok(b"YWJj.eyJzdWIiOiIxIn0.sig")  # header decodes to "abc"


@pytest.mark.parametrize(("token", "ok"), [
    (b"abc123def456", True), (b"dXNlcjpwYXNzd29yZA==", True), (b"authentication", False),
    (b"Token", False), (b"of", False), (b"abcdefghijklmnopqrstuvwxyz", True),
])
def test_credential_token(token: bytes, ok: bool) -> None:
    assert v.credential_token_ok(token) is ok
