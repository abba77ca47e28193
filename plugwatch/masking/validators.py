"""Checks that turn a pattern candidate into a finding: checksums and structure, no regexes.

Both the masker and the post-mask verifier call these, so a candidate means the same thing to
both; the two find their candidates by different code. Inputs are ASCII bytes (the engine works on
UTF-8 bytes throughout) holding digits only unless a function says otherwise.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date

_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# GB 11643: weights of the first 17 digits; the remainder mod 11 indexes the check character.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = b"10X98765432"
# First two digits of a resident ID: the province-level division (GB/T 2260), plus 71/81/82/83
# for Taiwan, Hong Kong, Macau and the 2017 permits, 91 for overseas Chinese.
_ID_PROVINCES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
     50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
)

# Digit counts (no X after them) a number validator can accept: 11 (mobile), 13 (mobile with 86,
# card), 14-19 (card; 15 and 18 also resident IDs).
DIGIT_COUNTS = frozenset({11} | set(range(13, 20)))


def _plain_lengths() -> tuple[frozenset[int], ...]:
    by_first: list[set[int]] = [set() for _ in range(256)]
    by_first[ord("1")].add(11)
    by_first[ord("8")].add(13)
    for c in b"23456":
        by_first[c].update(range(13, 20))
    for c in {48 + p // 10 for p in _ID_PROVINCES}:
        by_first[c].update((15, 18))
    return tuple(frozenset(x) for x in by_first)


# Lengths of a plain digit run (no separator, no X after it) that can be a mainland mobile (11
# digits from 1, 13 from 86), a card (13-19 digits from 2-6) or a resident ID (15 or 18 digits from
# a province code), by first byte: the masker and the verifier skip every other run unread
# (timestamps, counters).
PLAIN_LENGTHS = _plain_lengths()
# Of those, the lengths only a card can have (13-19 digits from 2-6, but 15 and 18, which may be
# resident IDs), by first byte: such a run that fails Luhn is nothing (a 14-digit order number).
CARD_ONLY_LENGTHS = tuple(frozenset({13, 14, 16, 17, 19}) if 50 <= c <= 54 else frozenset() for c in range(256))


def plain_run_possible(run: bytes) -> bool:
    """Whether a plain digit run (no separator, no X after it) can be a mobile, a card or a resident
    ID: its length fits its first digit, and a length only a card has passes Luhn."""
    size, first = len(run), run[0]
    return size in PLAIN_LENGTHS[first] and (size not in CARD_ONLY_LENGTHS[first] or luhn_ok(run))

# ISO 13616 registry: country code -> total IBAN length.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # digit -> digit sum of twice it
_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)


def luhn_ok(digits: bytes) -> bool:
    """Luhn over ASCII digits, with C-level slicing and sums instead of a Python loop."""
    rev = digits[::-1]
    kept, doubled = rev[0::2], rev[1::2].translate(_DOUBLED)
    return (sum(kept) + sum(doubled) - 48 * len(rev)) % 10 == 0


def only_digits(value: bytes) -> bytes:
    return value.translate(None, _NOT_DIGITS)


_MOBILE_GROUPS = {(11,), (3, 4, 4), (3, 8), (7, 4)}
_ID_GROUPS = {(18,), (6, 8, 4), (15,), (6, 6, 3)}


def card_grouping(groups: tuple[int, ...]) -> bool:
    """How cards are written: 4-4-4-4(-3), Amex/Diners 4-6-5 / 4-6-4."""
    if groups in ((4, 6, 5), (4, 6, 4)):
        return True
    return len(groups) >= 4 and all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4


def mobile_grouping(groups: tuple[int, ...]) -> bool:
    """11 digits as 138 0013 8000, 138-00138000, 1380013 8000 or together; +86/0086 before."""
    if groups and groups[0] in (2, 4) and sum(groups) in (13, 15):
        groups = groups[1:]
    elif sum(groups) in (13, 15) and len(groups) == 1:
        return True
    return groups in _MOBILE_GROUPS


def id_grouping(groups: tuple[int, ...]) -> bool:
    return groups in _ID_GROUPS


def card_ok(digits: bytes, grouped: bool) -> bool:
    """13-19 digits passing Luhn. Ungrouped numbers must also start like an issued card
    (2-6: Mastercard 2-series, Amex/JCB/Diners, Visa, Mastercard/Maestro, Discover/UnionPay) so
    epoch timestamps (which start with 1) and long counters are not taken for cards; a number
    written in groups (4111 1111 ...) is a card whatever its first digit."""
    n = len(digits)
    return 13 <= n <= 19 and (grouped or 50 <= digits[0] <= 54) and luhn_ok(digits)


def _valid_date(year: int, month: int, day: int) -> bool:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def cn_id_shaped(digits: bytes) -> bool:
    """Province code and a real birth date where a resident ID carries them (18 or 15 digits)."""
    n = len(digits)
    if n not in (15, 18) or int(digits[:2]) not in _ID_PROVINCES:
        return False
    if n == 18:
        year = int(digits[6:10])
        return 1900 <= year <= 2099 and _valid_date(year, int(digits[10:12]), int(digits[12:14]))
    return _valid_date(1900 + int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))


def cn_id18_check_ok(value: bytes) -> bool:
    """The ISO 7064 Mod 11-2 check character of an 18-character resident ID (last may be X)."""
    total = 0
    for weight, ch in zip(_ID_WEIGHTS, value[:17]):
        total += weight * (ch - 48)
    return _ID_CHECK[total % 11] == (value[17] & 0xDF if value[17] > 57 else value[17])


def cn_id_ok(value: bytes) -> bool:
    """An 18-character ID with a valid check character, or a 15-digit legacy ID (no check)."""
    if len(value) == 18:
        return value[:17].isdigit() and cn_id_shaped(value[:17] + b"0") and cn_id18_check_ok(value)
    return len(value) == 15 and value.isdigit() and cn_id_shaped(value)


def cn_mobile_ok(digits: bytes) -> bool:
    """A mainland mobile number, optionally with the 86 country code in front."""
    if len(digits) == 13 and digits[:2] == b"86":
        digits = digits[2:]
    return len(digits) == 11 and digits[0] == 49 and 51 <= digits[1] <= 57


def e164_ok(digits: bytes) -> bool:
    """Digits after a '+': E.164 allows up to 15; fewer than 8 is a short code, not a number."""
    return 8 <= len(digits) <= 15 and digits[0] != 48


_BASE36 = {ord(ch): str(int(ch, 36)) for ch in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}  # A -> "10" ... Z -> "35"


def iban_ok(compact: bytes) -> bool:
    """Country length from the registry and ISO 7064 mod 97-10 == 1. ``compact``: no spaces."""
    text = compact.decode("ascii", "replace").upper()
    if IBAN_LENGTHS.get(text[:2]) != len(text) or not text[2:4].isdigit() or not text.isalnum():
        return False
    rearranged = text[4:] + text[:4]
    return int(rearranged.translate(_BASE36)) % 97 == 1


def jwt_ok(token: bytes) -> bool:
    """Header segment decodes (base64url) to a JSON object."""
    head = token.split(b".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return decoded.lstrip()[:1] == b"{"


def aws_secret_ok(value: bytes) -> bool:
    """40 base64 characters that look random: both cases and a digit or symbol, not hexadecimal
    (commit hashes), and not a path (lower-case word segments, as /bgl/apps/stability/ has)."""
    if len(value) != 40 or value.isalpha() or value.upper() == value or value.lower() == value:
        return False
    slashes = value.count(b"/")
    if slashes >= 2:
        segments = value.split(b"/")
        if not any(_camel_break(seg) for seg in segments):
            return False
        words = sum(1 for seg in segments if len(seg) >= 4 and seg.isalpha() and seg.islower())
        if words >= 2 and (slashes >= 3 or value.startswith(b"/")):
            return False
    return bool(value.translate(None, b"0123456789abcdefABCDEF"))


def _camel_break(segment: bytes) -> bool:
    return any(97 <= a <= 122 and 65 <= b <= 90 for a, b in zip(segment, segment[1:]))


def credential_token_ok(token: bytes) -> bool:
    """A bearer/basic credential rather than an English word after 'Bearer'/'Basic': at least
    8 characters, and a digit, symbol or mixed case unless it is long."""
    if len(token) < 8:
        return False
    if token.isalpha():
        return len(token) >= 20 or not (token.islower() or token.isupper() or token.istitle())
    return True
